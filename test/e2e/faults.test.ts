/**
 * Faults under New API-like load (POST chat completions, half of them SSE streams), each injected
 * into a real upgrade and each undone in a `finally` that never waits for the CLI: a host that
 * vanishes, Redis restarting, the lock stolen by a second operator, SIGTERM and SIGHUP mid-batch,
 * Ctrl-C with a host gone. The bar: the run ends within its bound, the cluster keeps serving with
 * zero failed requests, and the operator is told where things stand.
 */
import { readFileSync } from 'node:fs';
import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest';
import { LoadGenerator, type LoadReport } from '../support/load.js';
import { cli, hostExec, killClis, LB, labInventory, linkDown, linkUp, resetLab, restartRedis, startCli, withFault } from '../support/lab.js';

interface Status {
  nodes: { name: string; version?: string; healthy: boolean; balancer: string }[];
  lock: unknown;
}

const HEALTH_TIMEOUT_S = 12;

function startLoad(): LoadGenerator {
  return new LoadGenerator({ host: LB, port: 80, workers: 6, maxDurationMs: 180_000, maxRequests: 20_000, pauseMs: 50 });
}

async function status(inventory: string): Promise<Status> {
  const r = await cli(['status', '--json', inventory], { timeoutMs: 60_000 });
  return JSON.parse(r.stdout) as Status;
}

function expectNoFailures(report: LoadReport): void {
  expect(report.failures, JSON.stringify(report.failures.slice(0, 5))).toEqual([]);
  expect(report.sent).toBeGreaterThan(20);
  expect(report.streams).toBeGreaterThan(10);
}

async function waitFor(output: () => string, pattern: RegExp, ms: number): Promise<void> {
  const deadline = Date.now() + ms;
  while (!pattern.test(output()) && Date.now() < deadline) await new Promise((r) => setTimeout(r, 100));
  if (!pattern.test(output())) throw new Error(`never saw ${pattern} in:\n${output().split('\n').slice(-20).join('\n')}`);
}

describe('faults during an upgrade under load', () => {
  let inventory: string;
  let load: LoadGenerator | undefined;
  // The cluster alternates between two versions, one upgrade per test (the downgrade half of it
  // is allowed on purpose: what is tested is the fault, not the version order).
  const flip = () => (readFileSync(inventory, 'utf8').includes(':v0.9.21') ? 'v0.9.22' : 'v0.9.21');
  // --verbose: each task's start line is printed the moment it starts (plain output holds back
  // the start line of a task that ends quickly), so a fault lands exactly where a test means it.
  const upgrade = (timeoutMs: number) => startCli(['upgrade', '--verbose', '--rolling', '--allow-downgrade', '--to', flip(), inventory], { timeoutMs });

  beforeAll(async () => {
    await resetLab();
    inventory = labInventory((t) => t.replace('healthTimeoutSeconds: 60', `healthTimeoutSeconds: ${HEALTH_TIMEOUT_S}`));
    const r = await cli(['deploy', inventory]);
    expect(r.code, r.stderr).toBe(0);
  });

  afterEach(async () => {
    await load?.stop();
    load = undefined;
    await killClis();
    // Whatever a test left (a node out of the balancer), the next starts from a serving cluster:
    // a deploy repairs the balancer and resumes what was interrupted.
    const repair = await cli(['deploy', inventory], { timeoutMs: 150_000 });
    expect(repair.code, repair.stderr).toBe(0);
  });

  afterAll(async () => {
    await linkUp('n3');
    await killClis();
  });

  it('a host that vanishes mid-upgrade is declared lost within healthTimeoutSeconds + 30 s; the rest keeps serving; exit 1', { timeout: 150_000 }, async () => {
    load = startLoad();
    const run = upgrade(120_000);
    await waitFor(run.output, /Recreate slave-2 on/, 90_000);
    const r = await withFault(
      () => linkDown('n3'),
      () => linkUp('n3'),
      async () => {
        const lostAt = Date.now();
        const result = await run.result;
        const seconds = (Date.now() - lostAt) / 1000;
        expect(seconds).toBeLessThan(HEALTH_TIMEOUT_S + 30);
        return result;
      },
    );
    const report = await load.stop();
    expect(r.code).toBe(1);
    expectNoFailures(report);
    expect(r.stderr).toMatch(/Where things stand:/);
    expect(r.stderr).toMatch(/slave-2\s+\S+\s+OUT\s+lost: /);
    expect(r.stderr).toMatch(/master\s+\S+\s+in\s+not reached \(still on its previous version\)/);
    expect(await hostExec('lb', 'cat /etc/nginx/conf.d/new-api.conf')).not.toContain('10.77.0.13');
    const s = await status(inventory);
    expect(s.nodes.find((n) => n.name === 'master')?.balancer).toBe('in');
    expect(s.lock).toBeNull();
  });

  it('Redis restarting mid-upgrade: the lock is taken again and the upgrade completes, zero failed requests', { timeout: 150_000 }, async () => {
    load = startLoad();
    const run = upgrade(120_000);
    await waitFor(run.output, /Drain slave-1 from the balancer/, 90_000);
    // Redis loses every key (save ''): the lock with them.
    await restartRedis(1);
    const r = await run.result;
    const report = await load.stop();
    expectNoFailures(report);
    // Either the lock came back and the run finished, or it stopped safely before touching another node.
    if (r.code === 0) {
      expect(r.stderr).toMatch(/taken again|confirmed again/);
      expect((await status(inventory)).nodes.every((n) => n.balancer === 'in' && n.healthy)).toBe(true);
    } else {
      expect(r.code).toBe(3);
      expect(r.stderr).toMatch(/Where things stand:/);
    }
  });

  it('the lock force-released and taken by a second operator mid-upgrade: the first stops (exit 3), the second completes', { timeout: 200_000 }, async () => {
    load = startLoad();
    const to = flip();
    const first = startCli(['upgrade', '--verbose', '--rolling', '--allow-downgrade', '--to', to, inventory], { timeoutMs: 150_000 });
    await waitFor(first.output, /Recreate slave-1 on/, 90_000);
    const broken = await cli(['lock', 'release', '--force', inventory], { timeoutMs: 30_000 });
    expect(broken.code, broken.stderr).toBe(0);
    expect(broken.stdout).toMatch(/^released the lock of \S+ \(pid \d+\) running "upgrade --rolling --to/m);
    const second = startCli(['upgrade', '--verbose', '--rolling', '--allow-downgrade', '--to', to, inventory], { timeoutMs: 150_000 });
    const [a, b] = await Promise.all([first.result, second.result]);
    const report = await load.stop();
    expect(a.code, a.stderr).toBe(3);
    expect(a.stderr).toMatch(/the lock on cluster lab was lost/);
    expect(b.code, b.stderr).toBe(0);
    expectNoFailures(report);
    const s = await status(inventory);
    expect(s.nodes.map((n) => [n.version, n.balancer])).toEqual([
      [to, 'in'],
      [to, 'in'],
      [to, 'in'],
    ]);
    expect(s.lock).toBeNull();
  });

  for (const [signal, code] of [
    ['SIGTERM', 143],
    ['SIGHUP', 129],
  ] as const) {
    it(`${signal} mid-batch: the batch is finished, every node is in the balancer, the lock is released, exit ${code}`, { timeout: 150_000 }, async () => {
      load = startLoad();
      const run = upgrade(120_000);
      await waitFor(run.output, /Recreate slave-1 on/, 90_000);
      const sentAt = Date.now();
      run.child.kill(signal);
      const r = await run.result;
      const took = (Date.now() - sentAt) / 1000;
      const report = await load.stop();
      expect(r.code, r.stderr).toBe(code);
      expect(took).toBeLessThan(HEALTH_TIMEOUT_S + 10);
      expect(r.stderr).toMatch(new RegExp(`interrupted \\(${signal}\\)`));
      expectNoFailures(report);
      const s = await status(inventory);
      expect(s.nodes.map((n) => n.balancer)).toEqual(['in', 'in', 'in']);
      expect(s.nodes.every((n) => n.healthy)).toBe(true);
      expect(s.lock).toBeNull();
    });
  }

  it('Ctrl-C with a host gone ends the run within seconds; the healthy nodes serve', { timeout: 150_000 }, async () => {
    load = startLoad();
    const run = upgrade(120_000);
    await waitFor(run.output, /Recreate slave-2 on/, 90_000);
    const r = await withFault(
      () => linkDown('n3'),
      () => linkUp('n3'),
      async () => {
        await new Promise((res) => setTimeout(res, 1_000));
        const sentAt = Date.now();
        run.child.kill('SIGINT');
        const result = await run.result;
        expect((Date.now() - sentAt) / 1000).toBeLessThan(8);
        return result;
      },
    );
    const report = await load.stop();
    expect(r.code).toBe(130);
    expectNoFailures(report);
    expect(r.stderr).toMatch(/slave-2\s+\S+\s+OUT\s+lost: /);
    expect((await status(inventory)).lock).toBeNull();
  });
});
