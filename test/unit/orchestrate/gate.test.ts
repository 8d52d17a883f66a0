/**
 * The health gate (waitHealthy) against a fake node on a manual clock: /api/status answered by
 * the fake container, time moved by the driver.
 */
import { afterEach, describe, expect, it } from 'vitest';
import { CliError, HostUnreachableError } from '../../../src/errors.js';
import type { InventoryNode } from '../../../src/inventory/schema.js';
import { HostLostError, waitHealthy, type GateOptions } from '../../../src/orchestrate/health.js';
import { Session } from '../../../src/orchestrate/session.js';
import { IMAGE_V20, IMAGE_V21, Lab, type TestEnv } from '../../support/fake-cluster.js';

const labs: Lab[] = [];

afterEach(async () => {
  for (const lab of labs.splice(0)) {
    expect(lab.cluster.unmodelled).toEqual([]);
    await lab.cleanup();
  }
});

interface Gate {
  lab: Lab;
  t: TestEnv;
  session: Session;
  node: InventoryNode;
  /** Runs the gate on slave-1; `elapsed` is manual time from its start. */
  run(opts?: Partial<GateOptions>): Promise<{ ok: boolean; error?: unknown; elapsed: number; version?: string | undefined }>;
}

async function gate(rollout: Record<string, unknown> = {}): Promise<Gate> {
  const lab = await Lab.create({ rollout: { healthTimeoutSeconds: 30, minReadySeconds: 5, ...rollout } });
  labs.push(lab);
  const t = lab.env();
  const session = new Session(t.env, lab.loaded, lab.deps());
  const node = lab.loaded.inventory.nodes.find((n) => n.name === 'slave-1')!;
  lab.cluster.schemaVersion = 'v0.9.21';
  return {
    lab,
    t,
    session,
    node,
    run: async (opts = {}) => {
      const started = lab.clock.now();
      const r = await lab.drive(waitHealthy(session, node, { image: IMAGE_V20, ...opts }));
      return { ok: r.ok, error: r.error, elapsed: r.at - started, version: r.value?.version };
    },
  };
}

const SLAVE_ENV = 'NODE_TYPE=slave\n';

describe('waitHealthy', () => {
  it.each([
    [5, 7_000],
    [0, 2_000],
    [12, 14_000],
  ])('minReadySeconds %i: passes once healthy that long (start 2 s → %i ms)', async (minReadySeconds, at) => {
    const g = await gate({ minReadySeconds });
    g.lab.node('slave-1').runContainer(IMAGE_V20, { env: SLAVE_ENV });
    const r = await g.run();
    expect(r.ok).toBe(true);
    expect(r.version).toBe('v0.9.20');
    expect(r.elapsed).toBeGreaterThanOrEqual(at);
    expect(r.elapsed).toBeLessThan(at + 500);
  });

  it('counts only continuous health: a relapse starts minReadySeconds over', async () => {
    const g = await gate();
    g.lab.node('slave-1').runContainer(IMAGE_V20, { env: SLAVE_ENV });
    const b = g.lab.cluster.behaviour(IMAGE_V20);
    // Healthy from 2 s; 503 from 4 s to 5 s; healthy again after.
    void g.lab.clock.sleep(4_000).then(() => (b.health = 'never'));
    void g.lab.clock.sleep(5_000).then(() => (b.health = 'ok'));
    const r = await g.run();
    expect(r.ok).toBe(true);
    expect(r.elapsed).toBeGreaterThanOrEqual(10_000);
    expect(r.elapsed).toBeLessThan(10_500);
  });

  it('a container that exits fails the gate early, with its last log lines', async () => {
    const g = await gate();
    g.lab.cluster.publish(IMAGE_V21, { crashAfterMs: 1_000, crashLogs: ['[FATAL] failed to initialize Redis', 'panic: dial tcp 10.0.0.6:6379: connect: connection refused'] });
    g.lab.node('slave-1').runContainer(IMAGE_V21, { env: SLAVE_ENV, restart: 'no' });
    const r = await g.run({ image: IMAGE_V21 });
    expect(r.ok).toBe(false);
    expect(r.error).toBeInstanceOf(CliError);
    expect(r.error).not.toBeInstanceOf(HostUnreachableError);
    const message = (r.error as Error).message;
    expect(message).toMatch(/^slave-1 failed its health gate: the container is exited/);
    expect(message).toContain('last log lines: ');
    expect(message).toContain('panic: dial tcp 10.0.0.6:6379: connect: connection refused');
    // Long before healthTimeoutSeconds (30 s).
    expect(r.elapsed).toBeLessThan(5_000);
    expect((r.error as CliError).hint).toBe('newapi-cluster logs --node slave-1 --tail 100');
  });

  it('a crash loop (restart: always) fails the gate early, with the restart count and the last log lines', async () => {
    const g = await gate();
    g.lab.cluster.publish(IMAGE_V21, { crashAfterMs: 500, crashLogs: ['panic: Error 1045 (28000): Access denied for user'] });
    const h = g.lab.node('slave-1');
    h.runContainer(IMAGE_V21, { env: SLAVE_ENV });
    const r = await g.run({ image: IMAGE_V21 });
    expect(r.ok).toBe(false);
    const message = (r.error as Error).message;
    expect(message).toMatch(/^slave-1 failed its health gate: the container is \S+ \(restarted \d+ times\)/);
    expect(Number(/restarted (\d+) times/.exec(message)![1])).toBeGreaterThanOrEqual(3);
    expect(message).toContain('panic: Error 1045 (28000): Access denied for user');
    expect(r.elapsed).toBeLessThan(5_000);
  });

  it('a wrong version is reported as such', async () => {
    const g = await gate();
    g.lab.cluster.publish(IMAGE_V21, { version: 'v0.9.20' });
    g.lab.node('slave-1').runContainer(IMAGE_V21, { env: SLAVE_ENV });
    const r = await g.run({ image: IMAGE_V21 });
    expect(r.ok).toBe(false);
    expect((r.error as Error).message).toMatch(/^slave-1 failed its health gate: not healthy after 30 s: it answers version v0\.9\.20, not v0\.9\.21/);
    expect(r.elapsed).toBeGreaterThanOrEqual(30_000);
    expect(r.elapsed).toBeLessThan(31_000);
  });

  it('a slave that meets an unmigrated schema is not healthy (issue #4144)', async () => {
    const g = await gate({ healthTimeoutSeconds: 10 });
    g.lab.cluster.schemaVersion = 'v0.9.20';
    g.lab.node('slave-1').runContainer(IMAGE_V21, { env: SLAVE_ENV });
    const r = await g.run({ image: IMAGE_V21 });
    expect(r.ok).toBe(false);
    expect((r.error as Error).message).toContain('not healthy after 10 s: HTTP 500');
  });

  it('a silent host is declared lost at the timeout, without asking it for logs', async () => {
    const g = await gate();
    const h = g.lab.node('slave-1');
    h.runContainer(IMAGE_V20, { env: SLAVE_ENV });
    h.lose();
    const r = await g.run();
    expect(r.error).toBeInstanceOf(HostLostError);
    expect(r.elapsed).toBeGreaterThanOrEqual(30_000);
    expect(r.elapsed).toBeLessThanOrEqual(33_500);
    expect(h.calls().filter((e) => e.kind === 'unanswered' && e.what.includes('docker logs'))).toEqual([]);
  });

  it('a silent host while stopping throws HostLostError at once', async () => {
    const g = await gate();
    const h = g.lab.node('slave-1');
    h.runContainer(IMAGE_V20, { env: SLAVE_ENV });
    h.lose();
    g.t.stop();
    const r = await g.run();
    expect(r.error).toBeInstanceOf(HostLostError);
    expect((r.error as Error).message).toMatch(/^slave-1: the host does not answer/);
    // One probe (its 3 s deadline), no more.
    expect(r.elapsed).toBeLessThanOrEqual(3_000);
  });

  it('a host that falls silent mid-gate: a stop ends the gate within one probe', async () => {
    const g = await gate();
    const h = g.lab.node('slave-1');
    g.lab.cluster.publish(IMAGE_V21, { health: 'never' });
    h.runContainer(IMAGE_V21, { env: SLAVE_ENV });
    let stopAt = 0;
    void g.lab.clock.sleep(5_000).then(() => h.lose());
    void g.lab.clock.sleep(12_000).then(() => {
      stopAt = g.lab.clock.now();
      g.t.stop();
    });
    const started = g.lab.clock.now();
    const r = await g.run({ image: IMAGE_V21 });
    expect(r.error).toBeInstanceOf(HostLostError);
    expect(started + r.elapsed - stopAt).toBeLessThanOrEqual(3_000);
  });

  it('stopping gives a gate at most 20 s more', async () => {
    const g = await gate({ healthTimeoutSeconds: 120 });
    g.lab.cluster.publish(IMAGE_V21, { health: 'never' });
    g.lab.node('slave-1').runContainer(IMAGE_V21, { env: SLAVE_ENV });
    void g.lab.clock.sleep(10_000).then(() => g.t.stop());
    const r = await g.run({ image: IMAGE_V21 });
    expect(r.ok).toBe(false);
    expect(r.error).not.toBeInstanceOf(HostUnreachableError);
    expect(r.elapsed).toBeGreaterThanOrEqual(30_000);
    expect(r.elapsed).toBeLessThan(31_000);
  });

  it('a hard quit aborts the gate at once', async () => {
    const g = await gate();
    g.lab.node('slave-1').runContainer(IMAGE_V20, { env: SLAVE_ENV });
    const reason = new Error('hard quit');
    void g.lab.clock.sleep(3_000).then(() => g.session.abortAll(reason));
    const r = await g.run();
    expect(r.error).toBe(reason);
    expect(r.elapsed).toBe(3_000);
  });
});
