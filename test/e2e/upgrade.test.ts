/**
 * Operating a live cluster under New API-like load (POST chat completions, half of them SSE
 * streams): rolling upgrades, the migrate step, a never-healthy version, rollback, two operators
 * at once, and Ctrl-C. Every request is counted; the bar is zero failed requests.
 */
import { readFileSync } from 'node:fs';
import { structuredPatch } from 'diff';
import { afterEach, beforeAll, describe, expect, it } from 'vitest';
import { LoadGenerator, type LoadReport } from '../support/load.js';
import { cli, hostExec, hostFingerprint, LB, labInventory, resetLab, startCli } from '../support/lab.js';

interface Status {
  nodes: { name: string; version?: string; healthy: boolean; balancer: string; image?: string }[];
  lock: unknown;
}

function startLoad(): LoadGenerator {
  return new LoadGenerator({ host: LB, port: 80, workers: 6, maxDurationMs: 240_000, maxRequests: 20_000, pauseMs: 50 });
}

async function status(inventory: string): Promise<Status> {
  const r = await cli(['status', '--json', inventory]);
  return JSON.parse(r.stdout) as Status;
}

function expectNoFailures(report: LoadReport): void {
  expect(report.failures, JSON.stringify(report.failures.slice(0, 5))).toEqual([]);
  expect(report.sent).toBeGreaterThan(30);
  expect(report.streams).toBeGreaterThan(15);
}

describe('rolling upgrade under load', () => {
  let inventory: string;
  let load: LoadGenerator | undefined;

  beforeAll(async () => {
    await resetLab();
    inventory = labInventory();
    const r = await cli(['deploy', inventory]);
    expect(r.code, r.stderr).toBe(0);
  });

  afterEach(async () => {
    await load?.stop();
    load = undefined;
  });

  it('upgrades v0.9.20 → v0.9.21 slave-first with zero failed requests', async () => {
    const original = readFileSync(inventory, 'utf8');
    load = startLoad();
    const r = await cli(['upgrade', '--rolling', '--to', 'v0.9.21', inventory]);
    const report = await load.stop();
    expect(r.code, r.stderr).toBe(0);
    expectNoFailures(report);
    // Both versions answered during the upgrade: traffic flowed throughout.
    expect(Object.keys(report.byVersion).sort()).toEqual(['v0.9.20', 'v0.9.21']);

    const order = ['Run the v0.9.21 migrations once on master', 'Drain slave-1', 'Drain slave-2', 'Drain master'].map((s) => r.stderr.indexOf(s));
    expect(order.every((i) => i >= 0)).toBe(true);
    expect([...order].sort((a, b) => a - b)).toEqual(order);

    const s = await status(inventory);
    expect(s.nodes.map((n) => [n.name, n.version, n.healthy, n.balancer])).toEqual([
      ['master', 'v0.9.21', true, 'in'],
      ['slave-1', 'v0.9.21', true, 'in'],
      ['slave-2', 'v0.9.21', true, 'in'],
    ]);
    // The inventory now names the version the cluster runs: one line changed, comments kept.
    const patch = structuredPatch('a', 'b', original, readFileSync(inventory, 'utf8'));
    expect(patch.hunks.flatMap((h) => h.lines.filter((l) => l.startsWith('+') || l.startsWith('-')))).toEqual([
      '-  image: 10.77.0.1:5000/calciumion/new-api:v0.9.20',
      '+  image: 10.77.0.1:5000/calciumion/new-api:v0.9.21',
    ]);
  });

  it('without the migrate step a newer slave meets the old schema (issue #4144): its batch is rolled back, zero failed requests', async () => {
    const noMigrate = labInventory((t) =>
      readFileSync(inventory, 'utf8').replace('minReadySeconds: 1', 'minReadySeconds: 1\n  migrateFirst: false').replace('healthTimeoutSeconds: 60', 'healthTimeoutSeconds: 12') || t,
    );
    load = startLoad();
    const r = await cli(['upgrade', '--rolling', '--to', 'v0.9.22', noMigrate]);
    const report = await load.stop();
    expect(r.code).toBe(1);
    expect(r.stderr).toMatch(/slave-1 failed its health gate: .*HTTP 500/);
    expect(r.stderr).toContain('Where things stand:');
    expectNoFailures(report);
    const s = await status(inventory);
    expect(s.nodes.map((n) => [n.name, n.version, n.balancer])).toEqual([
      ['master', 'v0.9.21', 'in'],
      ['slave-1', 'v0.9.21', 'in'],
      ['slave-2', 'v0.9.21', 'in'],
    ]);
  });

  it('with the migrate step the same upgrade succeeds', async () => {
    load = startLoad();
    const r = await cli(['upgrade', '--rolling', '--to', 'v0.9.22', inventory]);
    const report = await load.stop();
    expect(r.code, r.stderr).toBe(0);
    expectNoFailures(report);
    expect((await status(inventory)).nodes.map((n) => n.version)).toEqual(['v0.9.22', 'v0.9.22', 'v0.9.22']);
  });

  it('a version that never becomes healthy: the batch goes back, nobody is left out of the balancer, exit 1, zero failed requests', async () => {
    const quick = labInventory(() => readFileSync(inventory, 'utf8').replace('healthTimeoutSeconds: 60', 'healthTimeoutSeconds: 12'));
    load = startLoad();
    const r = await cli(['upgrade', '--rolling', '--to', 'v0.9.23-unhealthy', '--batch', '2', quick]);
    const report = await load.stop();
    expect(r.code).toBe(1);
    expectNoFailures(report);
    // The migrate step runs the new version first and it never becomes healthy: nothing moved.
    expect(r.stderr).toMatch(/the migrate step failed/);
    const s = await status(inventory);
    expect(s.nodes.map((n) => [n.name, n.version, n.balancer])).toEqual([
      ['master', 'v0.9.22', 'in'],
      ['slave-1', 'v0.9.22', 'in'],
      ['slave-2', 'v0.9.22', 'in'],
    ]);
  });

  it('a batch that fails its health gate is rolled back as a whole (migrate step off, so the slaves meet the bad version first)', async () => {
    const quick = labInventory(() =>
      readFileSync(inventory, 'utf8').replace('healthTimeoutSeconds: 60', 'healthTimeoutSeconds: 12').replace('minReadySeconds: 1', 'minReadySeconds: 1\n  migrateFirst: false'),
    );
    load = startLoad();
    const r = await cli(['upgrade', '--rolling', '--to', 'v0.9.23-unhealthy', '--batch', '2', quick]);
    const report = await load.stop();
    expect(r.code).toBe(1);
    expectNoFailures(report);
    expect(r.stderr).toMatch(/Roll back slave-1, slave-2/);
    expect(r.stderr).toMatch(/^ {2}slave-1\s+v0\.9\.22\s+in\s+returned to v0\.9\.22 \(/m);
    expect(r.stderr).toMatch(/^ {2}master\s+v0\.9\.22\s+in\s+not reached \(still on its previous version\)$/m);
    const s = await status(inventory);
    expect(s.nodes.map((n) => [n.name, n.version, n.balancer])).toEqual([
      ['master', 'v0.9.22', 'in'],
      ['slave-1', 'v0.9.22', 'in'],
      ['slave-2', 'v0.9.22', 'in'],
    ]);
  });

  it('rollback returns every node to its previous version, slave-first, with zero failed requests', async () => {
    load = startLoad();
    const r = await cli(['rollback', inventory]);
    const report = await load.stop();
    expect(r.code, r.stderr).toBe(0);
    expectNoFailures(report);
    expect(r.stderr.indexOf('Drain slave-1')).toBeLessThan(r.stderr.indexOf('Drain master'));
    expect((await status(inventory)).nodes.map((n) => n.version)).toEqual(['v0.9.21', 'v0.9.21', 'v0.9.21']);
    expect(readFileSync(inventory, 'utf8')).toContain('image: 10.77.0.1:5000/calciumion/new-api:v0.9.21');
  });

  it('--dry-run prints the schedule and changes nothing', async () => {
    const r = await cli(['upgrade', '--rolling', '--to', 'v0.9.22', '--batch', '50%', '--dry-run', inventory]);
    expect(r.code, r.stderr).toBe(0);
    expect(r.stdout).toContain('upgrade --rolling --to v0.9.22 — plan (dry run, nothing changed):');
    expect(r.stdout).toMatch(/batch 1: drain slave-1, wait/);
    expect(r.stdout).toMatch(/batch 2: drain slave-2, wait/);
    expect(r.stdout).toMatch(/batch 3: drain master, wait/);
    expect((await status(inventory)).nodes.map((n) => n.version)).toEqual(['v0.9.21', 'v0.9.21', 'v0.9.21']);
  });

  it('a second operator gets exit 3 naming the holder', async () => {
    const first = startCli(['upgrade', '--rolling', '--to', 'v0.9.22', inventory]);
    const deadline = Date.now() + 60_000;
    while (!/✔ Take the lock/.test(first.output()) && Date.now() < deadline) await new Promise((r) => setTimeout(r, 200));
    const second = await cli(['upgrade', '--rolling', '--to', 'v0.9.22', inventory]);
    expect(second.code).toBe(3);
    expect(second.stderr).toMatch(/cluster lab is locked by \S+@\S+ \(pid \d+\) running "upgrade --rolling --to v0\.9\.22" since/);
    expect(second.stderr).toMatch(/hint: wait for it to finish/);
    const lockStatus = await cli(['lock', 'status', '--json', inventory]);
    expect(JSON.parse(lockStatus.stdout)).toMatchObject({ locked: true, holder: { command: 'upgrade --rolling --to v0.9.22' } });
    const r = await first.result;
    expect(r.code, r.stderr).toBe(0);
    expect(JSON.parse((await cli(['lock', 'status', '--json', inventory])).stdout)).toMatchObject({ locked: false });
  });

  it('Ctrl-C in the middle of a batch: the node in hand is finished, every node is in the balancer, the lock is released, exit 130', async () => {
    load = startLoad();
    // The cluster runs v0.9.22 after the tests above: going to v0.9.21 is a downgrade, allowed on purpose.
    const run = startCli(['upgrade', '--rolling', '--allow-downgrade', '--to', 'v0.9.21', inventory]);
    const deadline = Date.now() + 90_000;
    while (!/Recreate slave-1 on/.test(run.output()) && Date.now() < deadline) await new Promise((r) => setTimeout(r, 100));
    run.child.kill('SIGINT');
    const r = await run.result;
    const report = await load.stop();
    expect(r.code).toBe(130);
    expect(r.stderr).toMatch(/interrupted \(SIGINT\): stopped after the step in hand/);
    expectNoFailures(report);
    const s = await status(inventory);
    expect(s.nodes.map((n) => n.balancer)).toEqual(['in', 'in', 'in']);
    expect(s.nodes.every((n) => n.healthy)).toBe(true);
    expect(s.lock).toBeNull();
    // slave-1 was finished; the others were not started.
    expect(s.nodes.map((n) => n.version)).toEqual(['v0.9.22', 'v0.9.21', 'v0.9.22']);
  });


  it('an older --to is refused (exit 2) before any host changes; --allow-downgrade is the way through', async () => {
    const before = await Promise.all((['n1', 'n2', 'n3', 'lb'] as const).map(hostFingerprint));
    const r = await cli(['upgrade', '--rolling', '--to', 'v0.9.20', inventory]);
    expect(r.code).toBe(2);
    expect(r.stderr).toMatch(/✖ --to v0\.9\.20 is older than v0\.9\.2[12] \(/);
    expect(r.stderr).toMatch(/hint: .*add --allow-downgrade/);
    expect(await Promise.all((['n1', 'n2', 'n3', 'lb'] as const).map(hostFingerprint))).toEqual(before);
  });

  it('rollback --to a release two back: every node returns to it, slave-first, zero failed requests', async () => {
    // Releases kept on each node by now (keepReleases 3): v0.9.21 and v0.9.22, and v0.9.20 from the first deploy.
    const releases = await hostExec('n2', 'ls /opt/new-api/.newapi-cluster/releases');
    expect(releases).toMatch(/-v0\.9\.20\n/);
    load = startLoad();
    const r = await cli(['rollback', '--to', 'v0.9.20', inventory]);
    const report = await load.stop();
    expect(r.code, r.stderr).toBe(0);
    expectNoFailures(report);
    expect((await status(inventory)).nodes.map((n) => [n.version, n.balancer])).toEqual([
      ['v0.9.20', 'in'],
      ['v0.9.20', 'in'],
      ['v0.9.20', 'in'],
    ]);
    expect(readFileSync(inventory, 'utf8')).toContain('image: 10.77.0.1:5000/calciumion/new-api:v0.9.20');
  });
});
