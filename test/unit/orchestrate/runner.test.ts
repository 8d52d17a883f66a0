/**
 * The runner and the rollout against the in-memory lab (test/support/fake-cluster.ts): whole
 * deploy, upgrade and rollback runs, in milliseconds, on a manual clock. Each test reads back what
 * the fake hosts saw: the order of container starts, the drain rules added and removed on the
 * balancer (iptables, as in production), the balancer files pushed and nginx reloads, the files,
 * state and releases left on each node, the lock's key. One block runs the same rollout on a
 * balancer without iptables, where a drain is the file marking the node down and a reload.
 */
import { readFile, writeFile } from 'node:fs/promises';
import { afterEach, describe, expect, it, vi } from 'vitest';
import { CliError, ExitCode, HostUnreachableError, InterruptedError, LockedError, LockLostError } from '../../../src/errors.js';
import { UNDRAIN_SETTLE_MS } from '../../../src/orchestrate/balancer.js';
import { runDeploy } from '../../../src/orchestrate/deploy.js';
import { IN_FLIGHT_POLL_MS } from '../../../src/orchestrate/steps.js';
import { docker } from '../../../src/remote/commands.js';
import { runAddNode, runRemoveNode } from '../../../src/orchestrate/scale.js';
import { lockKey } from '../../../src/orchestrate/lock.js';
import { LOCK_STORE_BUDGET_MS, LOCK_STORE_TRIES, STOPPING_EXEC_TIMEOUT_MS } from '../../../src/orchestrate/session.js';
import { runRollback, runUpgrade } from '../../../src/orchestrate/upgrade.js';
import { IMAGE_V20, IMAGE_V21, IMAGE_V22, isComposeStartingUp, isComposeUp, Lab, type FakeEvent, type LabOptions, type RunOutcome, type TestEnv } from '../../support/fake-cluster.js';


const NODES = ['master', 'slave-1', 'slave-2'] as const;
const KEY = lockKey('prod');

// Runs take manual hours in real milliseconds; only a starved machine (CI under load) makes one
// take seconds. The outcome does not depend on it: give them room rather than fail on the clock.
vi.setConfig({ testTimeout: 30_000 });

const labs: Lab[] = [];

afterEach(async () => {
  for (const lab of labs.splice(0)) {
    expect(lab.cluster.unmodelled, 'orchestration ran something the fake does not model').toEqual([]);
    await lab.cleanup();
  }
});

async function newLab(opts: LabOptions = {}): Promise<Lab> {
  const lab = await Lab.create(opts);
  labs.push(lab);
  return lab;
}

const deploy = (lab: Lab, t?: TestEnv) => lab.run((env, loaded) => runDeploy(env, loaded, { dryRun: false, only: undefined }), t);
const upgrade = (lab: Lab, to: string, t?: TestEnv) => lab.run((env, loaded) => runUpgrade(env, loaded, { to, batch: undefined, dryRun: false, allowDowngrade: false }), t);
const rollback = (lab: Lab, opts: { dryRun: boolean; to?: string }, t?: TestEnv) => lab.run((env, loaded) => runRollback(env, loaded, opts), t);

function expectOk<T>(r: RunOutcome<T>): void {
  if (!r.ok) throw new Error(`the run failed: ${(r.error as Error)?.message}\n${r.stderr}`);
}

/** A cluster deployed on v0.9.20, every node in the balancer. */
async function deployedLab(opts: LabOptions = {}): Promise<Lab> {
  const lab = await newLab(opts);
  expectOk(await deploy(lab));
  return lab;
}

const lastSeq = (lab: Lab) => lab.cluster.events.at(-1)?.seq ?? 0;
const since = <E extends FakeEvent>(events: E[], mark: number) => events.filter((e) => e.seq > mark);
const drainedIn = (lab: Lab, config: string) => NODES.filter((n) => lab.cluster.placeIn(config, n) === 'drained');
type FirewallEvent = Extract<FakeEvent, { kind: 'firewall' }>;

/**
 * The drained set after each change of the balancer's drain rules since `mark`: consecutive
 * changes of the same kind (a batch of two drained one rule after the other) count as one.
 */
function drainTimeline(lab: Lab, mark: number, host = 'balancer'): string[][] {
  const drained = new Set<string>();
  const out: string[][] = [];
  let last: FirewallEvent['op'] | undefined;
  for (const e of since(lab.cluster.firewallChanges(host), mark)) {
    if (e.op === 'drain') drained.add(e.node);
    else drained.delete(e.node);
    const now = NODES.filter((n) => drained.has(n));
    if (e.op === last) out[out.length - 1] = now;
    else out.push(now);
    last = e.op;
  }
  return out;
}

/** Every call after `mark` that changed what a balancer serves: a file, a drain rule, an nginx reload or start. */
const balancerChanges = (lab: Lab, mark: number) =>
  since(lab.cluster.events, mark).filter((e) => (e.kind === 'upload' && e.path === lab.loaded.inventory.loadBalancer.configPath) || e.kind === 'firewall' || e.kind === 'nginx');
const isUploadOf = (path: string) => (e: FakeEvent) => e.kind === 'upload' && e.path === path;
const composeFile = (lab: Lab) => `${lab.loaded.inventory.cluster.dir}/docker-compose.yml`;
const envFile = (lab: Lab) => `${lab.loaded.inventory.cluster.dir}/.env`;

/** The first drain rule of `node` added on the balancer after `mark`, and the first removal of it after that. */
function drainAndPutBack(lab: Lab, node: string, mark: number): { drain: FakeEvent; back: FakeEvent } {
  const changes = since(lab.cluster.firewallChanges('balancer'), mark).filter((e) => e.node === node);
  const drain = changes.find((e) => e.op === 'drain');
  const back = drain && changes.find((e) => e.seq > drain.seq && e.op === 'undrain');
  if (!drain || !back) throw new Error(`${node} was not drained and put back`);
  return { drain, back };
}

/** Once the balancer's drain rule of `node` is removed after being added (the batch's put-back). */
function onPutBack(lab: Lab, node: string, mark: number, fn: (e: FakeEvent) => void): void {
  let drained = false;
  const off = lab.cluster.onEvent((e) => {
    if (e.seq <= mark || e.kind !== 'firewall' || !e.changed || e.host !== 'balancer' || e.node !== node) return;
    if (e.op === 'drain') drained = true;
    else if (drained) {
      off();
      fn(e);
    }
  });
}

/** Once `node` runs compose up (starting its container) after `mark`. */
function onComposeUp(lab: Lab, node: string, mark: number, fn: (e: FakeEvent) => void): void {
  lab.cluster.once((e) => e.seq > mark && e.kind === 'exec' && e.host === node && isComposeStartingUp(e.argv), fn);
}

describe('deploy', () => {
  it('first deploy: the master starts alone, the slaves are prepared meanwhile and started the moment it passes its gate', async () => {
    const lab = await newLab();
    const r = await deploy(lab);
    expectOk(r);
    const c = lab.cluster;

    const starts = c.containerStarts();
    expect(starts.map((s) => s.host)).toHaveLength(3);
    expect(starts[0]!.host).toBe('master');
    expect(new Set(starts.slice(1).map((s) => s.host))).toEqual(new Set(['slave-1', 'slave-2']));

    const masterUp = c.execs('master', isComposeStartingUp);
    expect(masterUp).toHaveLength(1);
    // The master's gate: its last health probe (through its SSH connection, to its published port).
    const masterProbes = c.events.filter((e) => e.host === 'master' && e.kind === 'tunnel' && e.to.endsWith(`:${lab.loaded.inventory.cluster.port}`));
    expect(masterProbes.length).toBeGreaterThan(0);
    const masterGated = masterProbes.at(-1)!;
    const masterRecorded = c.events.find((e) => e.host === 'master' && isUploadOf(lab.node('master').paths.state)(e))!;
    expect(masterRecorded).toBeDefined();
    for (const slave of ['slave-1', 'slave-2']) {
      const prepared = c.execs(slave, (a) => isComposeUp(a) && a.includes('--no-start'));
      expect(prepared, `${slave} is prepared once`).toHaveLength(1);
      // Prepared (created, not started) while the master starts and is gated; started once it
      // passed, without waiting for the master to be recorded and put in the balancer.
      expect(prepared[0]!.seq).toBeLessThan(masterGated.seq);
      const started = starts.find((s) => s.host === slave)!;
      expect(started.seq).toBeGreaterThan(masterGated.seq);
      expect(started.seq).toBeLessThan(masterRecorded.seq);
      expect(c.execs(slave, isComposeStartingUp), `${slave} is started with docker start, not compose up`).toHaveLength(0);
      expect(c.execs(slave, (a) => a.join(' ') === 'docker start prod-new-api')).toHaveLength(1);
    }

    for (const name of NODES) {
      const h = lab.node(name);
      const state = h.state();
      expect(state, `${name} has state.json`).toBeDefined();
      expect(state!.image).toBe(IMAGE_V20);
      expect(state!.operation).toBe('deploy');
      expect(h.releaseIds()).toEqual([state!.release]);
      const folder = `${h.paths.releases}/${state!.release}`;
      expect(h.files.get(`${folder}/docker-compose.yml`)).toBe(h.files.get(composeFile(lab)));
      expect(h.files.get(`${folder}/.env`)).toBe(h.files.get(envFile(lab)));
      expect(JSON.parse(h.files.get(`${folder}/release.json`)!)).toEqual(state);
      const audit = h.auditLines();
      expect(audit).toHaveLength(1);
      expect(audit[0]).toMatchObject({ operation: 'deploy', node: name, to: IMAGE_V20, result: 'ok', by: 'tester@test' });
      expect(h.container).toMatchObject({ image: IMAGE_V20, status: 'running' });
    }

    expect(c.places()).toEqual({ master: 'in', 'slave-1': 'in', 'slave-2': 'in' });
    expect(c.balancer.files.get(lab.loaded.inventory.loadBalancer.configPath)).not.toMatch(/\sdown\s*;/);
    expect(c.balancer.reloads).toBeGreaterThan(0);
    expect(c.balancer.activeConfig, 'nginx runs the file pushed last').toBe(c.balancer.files.get(lab.loaded.inventory.loadBalancer.configPath));
    expect(c.firewallChanges(), 'nothing to drain on a first deploy').toEqual([]);
    expect(lab.store.peek(KEY), 'the lock is released').toBeUndefined();
    expect(r.stdout).toContain('deployed: 3 nodes changed');
  });

  it('a second deploy restarts nothing and pushes no balancer file', async () => {
    const lab = await deployedLab();
    const mark = lastSeq(lab);
    const opened = lab.store.opened.length;
    const r = await deploy(lab);
    expectOk(r);
    expect(lab.store.opened.length, 'nothing to do: the lock is not even taken').toBe(opened);
    expect(since(lab.cluster.execs(undefined, isComposeUp), mark)).toEqual([]);
    expect(since(lab.cluster.execs(undefined, (a) => a[0] === 'docker' && a[1] === 'start'), mark)).toEqual([]);
    expect(balancerChanges(lab, mark), 'no file, no drain rule, no reload').toEqual([]);
    expect(since(lab.cluster.containerStarts(), mark)).toEqual([]);
    for (const name of NODES) expect(lab.node(name).auditLines()).toHaveLength(1);
    // Only the run that changed something closed itself in the master's audit log.
    expect(lab.node('master').runLines()).toEqual([expect.objectContaining({ operation: 'deploy', result: 'ok', by: 'tester@test' })]);
    expect(r.stdout).toMatch(/nothing to do, 3 nodes and the balancer already match/);
  });

  it('refuses to start while another operator holds the lock, and changes nothing', async () => {
    const lab = await newLab();
    lab.store.acquireNow(KEY, JSON.stringify({ operator: 'other@elsewhere', command: 'upgrade', pid: 7, since: new Date(lab.clock.now()).toISOString() }), 30_000);
    const r = await deploy(lab);
    expect(r.error).toBeInstanceOf(LockedError);
    expect((r.error as CliError).exitCode).toBe(ExitCode.locked);
    expect((r.error as Error).message).toContain('other@elsewhere');
    expect(lab.cluster.events.filter((e) => e.kind === 'upload' || (e.kind === 'exec' && isComposeUp(e.argv)))).toEqual([]);
  });
});

describe('upgrade --to v0.9.21', () => {
  it('pulls everywhere, migrates on the master, then rolls the slaves one batch at a time and the master last', async () => {
    const lab = await deployedLab();
    const mark = lastSeq(lab);
    const reloads = lab.cluster.balancer.reloads;
    const r = await upgrade(lab, 'v0.9.21');
    expectOk(r);
    const c = lab.cluster;

    // One batch at a time: each rule change drains one node or puts it back; slaves first, the master last.
    expect(drainTimeline(lab, mark)).toEqual([['slave-1'], [], ['slave-2'], [], ['master'], []]);
    // A drain is an iptables rule on the balancer: no file is pushed and nginx never reloads.
    expect(since(c.balancerPushes(), mark), 'no balancer file during an upgrade').toEqual([]);
    expect(since(c.nginxEvents(), mark), 'no nginx reload during an upgrade').toEqual([]);
    expect(c.balancer.reloads).toBe(reloads);
    const firstDrain = since(c.firewallChanges(), mark)[0]!;
    expect(firstDrain).toMatchObject({
      host: 'balancer',
      op: 'drain',
      node: 'slave-1',
      rule: '-A OUTPUT -d 10.0.0.12/32 -p tcp -m tcp --dport 3000 -m conntrack --ctstate NEW -m comment --comment "newapi-cluster:prod:drain:slave-1" -j REJECT --reject-with tcp-reset',
    });
    expect(c.balancer.rules4, 'every rule is removed at the end').toEqual([]);
    // nginx skips a node whose connections it saw refused for fail_timeout: the next batch is
    // drained only once the one put back can serve again.
    const changes = since(c.firewallChanges(), mark);
    changes.forEach((e, i) => {
      const next = changes[i + 1];
      if (e.op === 'undrain' && next?.op === 'drain') expect(next.at - e.at, `${next.node} drained ${next.at - e.at} ms after ${e.node} was put back`).toBeGreaterThanOrEqual(UNDRAIN_SETTLE_MS);
    });

    for (const name of NODES) {
      const pulls = since(c.execs(name, (a) => a.join(' ') === `docker pull --quiet ${IMAGE_V21}`), mark);
      expect(pulls, `${name} pulls v0.9.21 once`).toHaveLength(1);
      expect(pulls[0]!.seq, `${name} pulls before anything is drained`).toBeLessThan(firstDrain.seq);
    }

    const migrate = since(c.execs(undefined, (a) => a.includes('run')), mark);
    expect(migrate.map((e) => e.host)).toEqual(['master']);
    expect(migrate[0]!.argv).toContain('127.0.0.1:39300:3000');
    expect(migrate[0]!.seq).toBeLessThan(firstDrain.seq);
    expect(lab.node('master').migrateContainer, 'the migrate container is removed').toBeUndefined();
    expect(c.schemaVersion).toBe('v0.9.21');
    const migrated = since(c.containerStarts(), mark).find((s) => s.name === 'prod-new-api-migrate')!;
    for (const s of since(c.containerStarts(), mark).filter((s) => s.name === 'prod-new-api')) expect(s.seq).toBeGreaterThan(migrated.seq);

    for (const name of NODES) {
      const { drain, back } = drainAndPutBack(lab, name, mark);
      const ups = since(c.execs(name, isComposeStartingUp), mark);
      expect(ups, `${name} is recreated once`).toHaveLength(1);
      expect(ups[0]!.argv).toContain('--force-recreate');
      const recorded = since(c.events, mark).find((e) => e.host === name && isUploadOf(lab.node(name).paths.state)(e))!;
      // drained (rule added) → recreated → gated (state is written only after the gate) → put back (rule removed)
      expect(drain.seq).toBeLessThan(ups[0]!.seq);
      expect(ups[0]!.seq).toBeLessThan(recorded.seq);
      expect(recorded.seq).toBeLessThan(back.seq);
      // The gate held for start (2 s) + minReadySeconds (5 s) before it went back.
      expect(back.at - ups[0]!.at).toBeGreaterThanOrEqual(7_000);
      // Drained for drainSeconds before its container was touched.
      expect(ups[0]!.at - drain.at).toBeGreaterThanOrEqual(10_000);
    }

    for (const name of NODES) {
      const h = lab.node(name);
      expect(h.container).toMatchObject({ image: IMAGE_V21, status: 'running' });
      expect(h.state()).toMatchObject({ image: IMAGE_V21, previousImage: IMAGE_V20, operation: 'upgrade --rolling --to v0.9.21' });
      expect(h.auditLines().map((l) => l.to)).toEqual([IMAGE_V20, IMAGE_V21]);
    }
    expect(c.places()).toEqual({ master: 'in', 'slave-1': 'in', 'slave-2': 'in' });
    const text = await readFile(lab.tmp.file, 'utf8');
    expect(text).toContain(`image: ${IMAGE_V21}`);
    expect(text).not.toContain(IMAGE_V20);
    expect(lab.store.peek(KEY)).toBeUndefined();
  });

  it('a version that never becomes healthy (migrateFirst: false): the batch returns to its previous version and is put back; nobody else moves', async () => {
    const lab = await deployedLab({ rollout: { migrateFirst: false } });
    lab.cluster.publish(IMAGE_V21, { health: 'never' });
    const s1 = lab.node('slave-1');
    const before = { compose: s1.files.get(composeFile(lab)), env: s1.files.get(envFile(lab)), state: s1.files.get(s1.paths.state) };
    const mark = lastSeq(lab);

    const r = await upgrade(lab, 'v0.9.21');

    expect(r.ok).toBe(false);
    expect(r.error).toBeInstanceOf(CliError);
    expect(r.error).not.toBeInstanceOf(InterruptedError);
    expect((r.error as CliError).exitCode).toBe(ExitCode.failed);
    expect((r.error as Error).message).toMatch(/^slave-1: not healthy after 30 s: HTTP 503; last log lines: /);
    expect((r.error as CliError).hint).toContain('returned to its previous version');

    // slave-1: recreated on v0.9.21, then back on v0.9.20 with its previous files.
    expect(since(lab.cluster.containerStarts(), mark).map((s) => `${s.host} ${s.image}`)).toEqual([`slave-1 ${IMAGE_V21}`, `slave-1 ${IMAGE_V20}`]);
    expect(s1.container).toMatchObject({ image: IMAGE_V20, status: 'running' });
    expect(s1.files.get(composeFile(lab))).toBe(before.compose);
    expect(s1.files.get(envFile(lab))).toBe(before.env);
    expect(s1.files.get(s1.paths.state), 'state.json still names the version that runs').toBe(before.state);
    expect(s1.auditLines().at(-1)).toMatchObject({ from: IMAGE_V21, to: IMAGE_V20, result: 'rolled back' });

    // Nobody else moved: no migrate, no drain, no recreate.
    expect(since(lab.cluster.execs(undefined, (a) => isComposeUp(a) || a.includes('run')), mark).every((e) => e.host === 'slave-1')).toBe(true);
    expect(drainTimeline(lab, mark)).toEqual([['slave-1'], []]);
    expect(since(lab.cluster.balancerPushes(), mark)).toEqual([]);
    for (const name of ['master', 'slave-2']) expect(lab.node(name).container).toMatchObject({ image: IMAGE_V20 });

    expect(lab.cluster.places()).toEqual({ master: 'in', 'slave-1': 'in', 'slave-2': 'in' });
    expect(r.stderr).toContain('Where things stand');
    expect(r.stderr).toMatch(/slave-1\s+v0\.9\.20\s+in\s+returned to v0\.9\.20/);
    expect(await readFile(lab.tmp.file, 'utf8'), 'the inventory is not edited').toContain(`image: ${IMAGE_V20}`);
    expect(lab.store.peek(KEY)).toBeUndefined();
  });

  it('a host lost right after its compose up: the run ends within healthTimeoutSeconds + 30 s, that node left out, the others in', async () => {
    const lab = await deployedLab();
    const mark = lastSeq(lab);
    let lostAt: number | undefined;
    onComposeUp(lab, 'slave-1', mark, () => {
      lab.node('slave-1').lose();
      lostAt = lab.clock.now();
    });

    const r = await upgrade(lab, 'v0.9.21');

    expect(lostAt).toBeDefined();
    expect(r.ok).toBe(false);
    expect(r.error).toBeInstanceOf(CliError);
    expect((r.error as CliError).exitCode).toBe(ExitCode.failed);
    expect((r.error as Error).message).toContain('does not answer');
    expect(r.at - lostAt!).toBeLessThanOrEqual((lab.loaded.inventory.rollout.healthTimeoutSeconds + 30) * 1000);
    expect(lab.cluster.places()['slave-1']).not.toBe('in');
    expect(lab.cluster.places()).toMatchObject({ master: 'in', 'slave-2': 'in' });
    expect(since(lab.cluster.execs(undefined, isComposeStartingUp), mark).map((e) => e.host)).toEqual(['slave-1']);
    expect(r.stderr).toContain('Where things stand');
    expect(r.stderr).toMatch(/slave-1\s+\S+\s+(DRAINED|OUT)\s+lost: /);
    expect(lab.store.peek(KEY), 'the lock is released').toBeUndefined();
  });
});

describe('a balancer without iptables (firewall.probe fails): drains mark the node down in the file', () => {
  const noFirewall = (opts: LabOptions = {}) => deployedLab({ ...opts, firewall: false });

  it('upgrade --to v0.9.21: each batch is marked down and put back by a pushed file and a reload', async () => {
    const lab = await noFirewall();
    const c = lab.cluster;
    const mark = lastSeq(lab);
    const reloads = c.balancer.reloads;
    const r = await upgrade(lab, 'v0.9.21');
    expectOk(r);

    const pushes = since(c.balancerPushes(), mark);
    expect(pushes.map((p) => drainedIn(lab, p.content))).toEqual([['slave-1'], [], ['slave-2'], [], ['master'], []]);
    expect(pushes[0]!.content).toMatch(/\n\s*server 10\.0\.0\.12:3000 [^;\n]* down;/);
    // Every push is tested, then nginx reloads with it.
    const reloadEvents = since(c.nginxEvents(), mark);
    expect(reloadEvents.map((e) => e.op)).toEqual(pushes.map(() => 'reload'));
    expect(c.balancer.reloads - reloads).toBe(6);
    pushes.forEach((p, i) => expect(p.seq).toBeLessThan(reloadEvents[i]!.seq));
    expect(c.firewallChanges(), 'no rule anywhere').toEqual([]);
    expect(c.execs('balancer', (a) => a[0] === 'sh' && a.includes('iptables')), 'no drain command is run').toEqual([]);

    for (const name of NODES) {
      const drain = pushes.find((p) => c.placeIn(p.content, name) === 'drained')!;
      const back = pushes.find((p) => p.seq > drain.seq && c.placeIn(p.content, name) === 'in')!;
      const ups = since(c.execs(name, isComposeStartingUp), mark);
      expect(ups, `${name} is recreated once`).toHaveLength(1);
      const recorded = since(c.events, mark).find((e) => e.host === name && isUploadOf(lab.node(name).paths.state)(e))!;
      expect(drain.seq).toBeLessThan(ups[0]!.seq);
      expect(ups[0]!.seq).toBeLessThan(recorded.seq);
      expect(recorded.seq).toBeLessThan(back.seq);
      expect(ups[0]!.at - drain.at).toBeGreaterThanOrEqual(10_000);
      expect(lab.node(name).container).toMatchObject({ image: IMAGE_V21, status: 'running' });
    }
    expect(c.places()).toEqual({ master: 'in', 'slave-1': 'in', 'slave-2': 'in' });
    expect(c.balancer.activeConfig).toBe(c.balancer.files.get(lab.loaded.inventory.loadBalancer.configPath));
  });

  it('nginx -t rejects the drain file: the previous file is back and nothing is recreated', async () => {
    const lab = await noFirewall();
    const path = lab.loaded.inventory.loadBalancer.configPath;
    const before = lab.cluster.balancer.files.get(path);
    const mark = lastSeq(lab);
    lab.cluster.once(
      (e) => e.seq > mark && e.kind === 'upload' && e.host === 'balancer' && drainedIn(lab, e.content).length > 0,
      () => lab.cluster.balancer.nginxTest.push({ code: 1, stderr: `nginx: [emerg] unexpected "}" in ${path}:12\n` }),
    );
    const reloads = lab.cluster.balancer.reloads;
    const r = await upgrade(lab, 'v0.9.21');
    expect(r.error).toBeInstanceOf(CliError);
    expect((r.error as Error).message).toMatch(/^nginx -t rejected the new configuration\b.*: nginx: \[emerg\] unexpected "}"/);
    expect((r.error as CliError).node).toBe('balancer');
    // The rejected file must not stay where the next reload (or the next run, which reads it back) would take it.
    expect(lab.cluster.balancer.files.get(path), 'the previous file is back on the balancer that rejected the new one').toBe(before);
    expect(lab.cluster.places()).toEqual({ master: 'in', 'slave-1': 'in', 'slave-2': 'in' });
    expect(lab.cluster.balancer.reloads).toBe(reloads);
    expect(since(lab.cluster.execs(undefined, isComposeUp), mark)).toEqual([]);
    for (const name of NODES) expect(lab.node(name).container).toMatchObject({ image: IMAGE_V20 });
  });

  it('SIGINT during the drain wait: the file puts the batch back without recreating it', async () => {
    const lab = await noFirewall();
    const mark = lastSeq(lab);
    const t = lab.env();
    lab.cluster.once(
      (e) => e.seq > mark && e.kind === 'upload' && e.host === 'balancer' && lab.cluster.placeIn(e.content, 'slave-1') === 'drained',
      () => void lab.clock.sleep(3_000).then(() => t.stop()),
    );
    const r = await upgrade(lab, 'v0.9.21', t);
    expect(r.error).toBeInstanceOf(InterruptedError);
    expect(since(lab.cluster.execs('slave-1', isComposeUp), mark)).toEqual([]);
    expect(since(lab.cluster.balancerPushes(), mark).map((p) => drainedIn(lab, p.content))).toEqual([['slave-1'], []]);
    expect(lab.cluster.places()).toEqual({ master: 'in', 'slave-1': 'in', 'slave-2': 'in' });
  });
});

describe('requests in flight on a drained node', () => {
  /** slave-1 serves a stream that goes on for `ms` after its drain rule is in (Infinity: never ends). */
  function streamOnSlave1(lab: Lab, mark: number, ms: number): { drainedAt: () => number } {
    let drainedAt = Number.POSITIVE_INFINITY;
    lab.cluster.once((e) => e.seq > mark && e.kind === 'firewall' && e.changed && e.op === 'drain' && e.node === 'slave-1', () => (drainedAt = lab.clock.now()));
    lab.node('slave-1').inFlight = () => (lab.clock.now() < drainedAt + ms ? 1 : 0);
    return { drainedAt: () => drainedAt };
  }

  it('the drain goes on past drainSeconds until the stream ends; then the node is recreated', async () => {
    const lab = await deployedLab();
    const mark = lastSeq(lab);
    const drainSeconds = lab.loaded.inventory.rollout.drainSeconds;
    const s = streamOnSlave1(lab, mark, drainSeconds * 1000 + 7_000);
    const r = await upgrade(lab, 'v0.9.21');
    expectOk(r);
    const up = since(lab.cluster.execs('slave-1', isComposeStartingUp), mark)[0]!;
    expect(up.at - s.drainedAt()).toBeGreaterThanOrEqual(drainSeconds * 1000 + 7_000);
    expect(up.at - s.drainedAt()).toBeLessThanOrEqual(drainSeconds * 1000 + 7_000 + IN_FLIGHT_POLL_MS);
    expect(r.stderr).toContain('Drain slave-1 from the balancer: waiting for requests in flight: 1 on slave-1');
    // slave-2 had nothing in flight: recreated right after drainSeconds
    const { drain } = drainAndPutBack(lab, 'slave-2', mark);
    const up2 = since(lab.cluster.execs('slave-2', isComposeStartingUp), mark)[0]!;
    expect(up2.at - drain.at).toBeLessThan(drainSeconds * 1000 + IN_FLIGHT_POLL_MS);
  });

  it('a stream that never ends holds the drain for drainTimeoutSeconds, no longer, and says so', async () => {
    const lab = await deployedLab({ rollout: { drainTimeoutSeconds: 40 } });
    const mark = lastSeq(lab);
    const s = streamOnSlave1(lab, mark, Number.POSITIVE_INFINITY);
    const r = await upgrade(lab, 'v0.9.21');
    expectOk(r);
    const up = since(lab.cluster.execs('slave-1', isComposeStartingUp), mark)[0]!;
    expect(up.at - s.drainedAt()).toBeGreaterThanOrEqual(40_000);
    expect(up.at - s.drainedAt()).toBeLessThanOrEqual(40_000 + IN_FLIGHT_POLL_MS);
    expect(r.stderr).toContain('requests still in flight after 40 s (rollout.drainTimeoutSeconds): 1 on slave-1; going on');
  });

  it('a stop while waiting for them puts the batch back without recreating it', async () => {
    const lab = await deployedLab();
    const mark = lastSeq(lab);
    const t = lab.env();
    const s = streamOnSlave1(lab, mark, Number.POSITIVE_INFINITY);
    let stopAt = 0;
    lab.cluster.once(
      (e) => e.seq > mark && e.kind === 'exec' && e.host === 'slave-1' && e.argv[2] === docker.inFlight('c', 1)[2],
      () => void lab.clock.sleep(30_000).then(() => ((stopAt = lab.clock.now()), t.stop())),
    );
    const r = await upgrade(lab, 'v0.9.21', t);
    expect(r.error).toBeInstanceOf(InterruptedError);
    expect(stopAt - s.drainedAt(), 'stopped while the stream still held the drain').toBeGreaterThan(lab.loaded.inventory.rollout.drainSeconds * 1000);
    expect(r.at - stopAt).toBeLessThanOrEqual(IN_FLIGHT_POLL_MS);
    expect(since(lab.cluster.execs('slave-1', isComposeUp), mark)).toEqual([]);
    expect(lab.cluster.places()).toEqual({ master: 'in', 'slave-1': 'in', 'slave-2': 'in' });
  });
});

describe('the lock during a run', () => {
  it('lost between two batches (force-released and taken by another operator): stops before the next batch drains anything', async () => {
    const lab = await deployedLab();
    const mark = lastSeq(lab);
    const other = JSON.stringify({ id: 'b', operator: 'other@elsewhere', command: 'deploy', pid: 9, since: new Date(lab.clock.now()).toISOString() });
    let lostSeq: number | undefined;
    onPutBack(lab, 'slave-1', mark, (e) => {
      const ours = lab.store.peek(KEY)!;
      expect(lab.store.forceReleaseNow(KEY, ours)).toBe(true);
      expect(lab.store.acquireNow(KEY, other, 30_000)).toBe(true);
      lostSeq = e.seq;
    });

    const r = await upgrade(lab, 'v0.9.21');

    expect(lostSeq).toBeDefined();
    expect(r.error).toBeInstanceOf(LockLostError);
    expect((r.error as CliError).exitCode).toBe(ExitCode.locked);
    expect((r.error as Error).message).toContain('other@elsewhere');
    expect(balancerChanges(lab, lostSeq!), 'no balancer file, rule or reload after the loss').toEqual([]);
    expect(since(lab.cluster.execs(undefined, isComposeUp), lostSeq!)).toEqual([]);
    expect(lab.node('slave-2').container).toMatchObject({ image: IMAGE_V20 });
    expect(lab.node('slave-1').container).toMatchObject({ image: IMAGE_V21 });
    expect(lab.store.peek(KEY), "the other operator's lock is not deleted").toBe(other);
    expect(r.stderr).toContain('Where things stand');
  });

  it('lost during a gate (another operator takes it): the batch is not pushed back in, nothing more changes', async () => {
    const lab = await deployedLab();
    const mark = lastSeq(lab);
    let lostSeq: number | undefined;
    onComposeUp(lab, 'slave-1', mark, (e) => {
      lostSeq = e.seq;
      lab.store.forceReleaseNow(KEY, lab.store.peek(KEY)!);
      lab.store.acquireNow(KEY, JSON.stringify({ operator: 'other@elsewhere', command: 'deploy' }), 30_000);
    });
    const r = await upgrade(lab, 'v0.9.21');
    expect(r.error).toBeInstanceOf(LockLostError);
    expect((r.error as CliError).exitCode).toBe(ExitCode.locked);
    expect(balancerChanges(lab, lostSeq!)).toEqual([]);
    expect(lab.cluster.places()).toEqual({ master: 'in', 'slave-1': 'drained', 'slave-2': 'in' });
    expect(lab.cluster.balancer.drainRules(), 'slave-1 is still refused by its rule').toEqual(['slave-1']);
    expect(since(lab.cluster.execs(undefined, isComposeUp), lostSeq!)).toEqual([]);
    expect(r.stderr).toMatch(/slave-1\s+v0\.9\.21\s+DRAINED\s+recreated/);
  });

  it('lost before the first step: nothing is pulled or changed', async () => {
    const lab = await deployedLab();
    const mark = lastSeq(lab);
    // The pre-flight's nginx -t is the last thing before the steps.
    lab.cluster.once(
      (e) => e.seq > mark && e.kind === 'exec' && e.host === 'balancer' && e.argv.join(' ') === 'nginx -t -q',
      () => {
        lab.store.forceReleaseNow(KEY, lab.store.peek(KEY)!);
        lab.store.acquireNow(KEY, JSON.stringify({ operator: 'other@elsewhere', command: 'deploy' }), 30_000);
      },
    );
    const r = await upgrade(lab, 'v0.9.21');
    expect(r.error).toBeInstanceOf(LockLostError);
    expect(since(lab.cluster.events, mark).filter((e) => e.kind === 'upload' || (e.kind === 'exec' && (e.argv[1] === 'pull' || isComposeUp(e.argv) || e.argv.includes('run'))))).toEqual([]);
  });

  it('the node the lock is reached through is lost: the lock moves to another node and the run goes on', async () => {
    const lab = await deployedLab();
    const mark = lastSeq(lab);
    const opened = lab.store.opened.length;
    onPutBack(lab, 'slave-1', mark, () => lab.node('master').lose());
    const r = await upgrade(lab, 'v0.9.21');
    // The master's own batch cannot succeed; the slaves' did, under a lock confirmed through slave-1.
    expect(r.error).toBeInstanceOf(CliError);
    expect(r.error).not.toBeInstanceOf(LockLostError);
    expect(lab.store.opened.slice(opened)).toEqual(['master', 'slave-1']);
    expect(r.stderr).toContain('cannot renew the lock through master');
    expect(r.stderr).toContain('the lock is confirmed again (through slave-1)');
    expect(lab.node('slave-2').container).toMatchObject({ image: IMAGE_V21 });
    expect(lab.cluster.places()).toMatchObject({ 'slave-1': 'in', 'slave-2': 'in' });
    expect(lab.cluster.places().master).not.toBe('in');
    expect(lab.store.peek(KEY), 'released through slave-1').toBeUndefined();
  });

  it('Redis unreachable from every node: the lock is looked for on LOCK_STORE_TRIES nodes, nothing changes, exit 1', async () => {
    const lab = await newLab({ inventory: (raw) => void raw.nodes.push({ name: 'slave-3', host: '10.0.0.14' }, { name: 'slave-4', host: '10.0.0.15' }) });
    lab.store.down();
    const r = await deploy(lab);
    expect(r.error).toBeInstanceOf(CliError);
    expect((r.error as CliError).exitCode).toBe(ExitCode.failed);
    expect((r.error as Error).message).toBe(
      `cannot reach Redis for the cluster lock (tried ${['master', 'slave-1', 'slave-2'].map((n) => `${n}: connect ECONNREFUSED 10.0.0.6:6379`).join('; ')})`,
    );
    expect(LOCK_STORE_TRIES).toBe(3);
    const redisTunnels = lab.cluster.events.filter((e) => e.kind === 'tunnel' && e.to.endsWith(':6379'));
    expect(redisTunnels.map((e) => e.host)).toEqual(['master', 'slave-1', 'slave-2']);
    expect(lab.cluster.events.filter((e) => e.kind === 'upload' || (e.kind === 'exec' && (e.argv[1] === 'pull' || isComposeUp(e.argv))))).toEqual([]);
  });

  it('finding the lock\'s Redis is bounded in time, and a stop signal ends it after the node in hand', async () => {
    const lab = await newLab({ inventory: (raw) => void raw.nodes.push({ name: 'slave-3', host: '10.0.0.14' }) });
    const tried: string[] = [];
    let firstTry = 0;
    // Each node's connect takes 7 s and fails (a Redis that drops packets).
    const slow = (t: TestEnv) => {
      t.env.deps!.openLockStore = async (ex) => {
        if (tried.length === 0) firstTry = lab.clock.now();
        tried.push(ex.target.label);
        await lab.clock.sleep(7_000);
        throw new Error('connect ETIMEDOUT');
      };
      return t;
    };
    const r = await deploy(lab, slow(lab.env()));
    expect((r.error as Error).message).toMatch(/^cannot reach Redis for the cluster lock \(tried master: connect ETIMEDOUT; slave-1: connect ETIMEDOUT\)$/);
    expect(tried).toEqual(['master', 'slave-1']);
    expect(r.at - firstTry).toBeGreaterThanOrEqual(LOCK_STORE_BUDGET_MS);
    expect(r.at - firstTry).toBeLessThan(LOCK_STORE_BUDGET_MS + 7_000);

    tried.length = 0;
    const t = slow(lab.env());
    let stopAt = 0;
    const opener = t.env.deps!.openLockStore!;
    t.env.deps!.openLockStore = (ex, url) => {
      if (tried.length === 0) void lab.clock.sleep(2_000).then(() => ((stopAt = lab.clock.now()), t.stop('SIGTERM')));
      return opener(ex, url);
    };
    const s = await deploy(lab, t);
    expect(s.error).toBeInstanceOf(InterruptedError);
    expect((s.error as CliError).exitCode).toBe(ExitCode.terminated);
    expect(tried).toEqual(['master']);
    expect(stopAt).toBeGreaterThan(0);
    expect(s.at - stopAt, 'ends when the node in hand has answered').toBeLessThanOrEqual(5_500);
  });

  it('a stop signal before the lock is taken: no Redis is even tried', async () => {
    const lab = await newLab();
    const t = lab.env();
    const tried: string[] = [];
    const opener = t.env.deps!.openLockStore!;
    t.env.deps!.openLockStore = (ex, url) => (tried.push(ex.target.label), opener(ex, url));
    t.stop('SIGINT');
    const r = await deploy(lab, t);
    expect(r.error).toBeInstanceOf(InterruptedError);
    expect((r.error as CliError).exitCode).toBe(ExitCode.interrupted);
    expect(tried).toEqual([]);
  });

  it('Redis down for less than the TTL: the run waits and goes on', async () => {
    const lab = await deployedLab();
    const mark = lastSeq(lab);
    let downAt: number | undefined;
    onPutBack(lab, 'slave-1', mark, () => {
      lab.store.down();
      downAt = lab.clock.now();
      void lab.clock.sleep(15_000).then(() => lab.store.up());
    });

    const r = await upgrade(lab, 'v0.9.21');

    expectOk(r);
    expect(downAt).toBeDefined();
    for (const name of NODES) expect(lab.node(name).container).toMatchObject({ image: IMAGE_V21 });
    expect(r.stderr).toContain('cannot renew the lock');
    expect(r.stderr).toContain('the lock is confirmed again');
    const { drain } = drainAndPutBack(lab, 'slave-2', mark);
    expect(drain.at - downAt!, 'slave-2 was drained only once the lock was confirmed again').toBeGreaterThanOrEqual(15_000);
    expect(lab.store.peek(KEY)).toBeUndefined();
  });

  it('Redis down for longer than the TTL: LockLostError at the next step, nothing more changed', async () => {
    const lab = await deployedLab();
    const mark = lastSeq(lab);
    let downAt: number | undefined;
    let downSeq: number | undefined;
    onPutBack(lab, 'slave-1', mark, (e) => {
      lab.store.down();
      downAt = lab.clock.now();
      downSeq = e.seq;
      void lab.clock.sleep(120_000).then(() => lab.store.up());
    });

    const r = await upgrade(lab, 'v0.9.21');

    expect(r.error).toBeInstanceOf(LockLostError);
    expect((r.error as CliError).exitCode).toBe(ExitCode.locked);
    expect((r.error as Error).message).toContain('could not be confirmed');
    expect(r.at - downAt!).toBeGreaterThanOrEqual(29_000);
    expect(r.at - downAt!).toBeLessThanOrEqual(32_000);
    expect(balancerChanges(lab, downSeq!)).toEqual([]);
    expect(since(lab.cluster.execs(undefined, isComposeUp), downSeq!)).toEqual([]);
    expect(lab.node('slave-2').container).toMatchObject({ image: IMAGE_V20 });
    expect(lab.cluster.places()).toEqual({ master: 'in', 'slave-1': 'in', 'slave-2': 'in' });
  });

  it('Redis restarted (every key gone): the lock is retaken and the run completes', async () => {
    const lab = await deployedLab();
    const mark = lastSeq(lab);
    onPutBack(lab, 'slave-1', mark, () => lab.store.wipe());

    const r = await upgrade(lab, 'v0.9.21');

    expectOk(r);
    expect(r.stderr).toContain('it was taken again');
    for (const name of NODES) expect(lab.node(name).container).toMatchObject({ image: IMAGE_V21 });
    expect(lab.store.peek(KEY), 'released at the end').toBeUndefined();
  });
});

describe('signals', () => {
  it.each([
    ['SIGINT', ExitCode.interrupted],
    ['SIGTERM', ExitCode.terminated],
    ['SIGHUP', ExitCode.hangup],
  ] as const)('%s during a batch drain wait: the batch goes back without being recreated (exit %i)', async (signal, code) => {
    const lab = await deployedLab();
    const mark = lastSeq(lab);
    const s1Started = lab.node('slave-1').container!.startedAt;
    const t = lab.env();
    lab.cluster.once(
      (e) => e.seq > mark && e.kind === 'firewall' && e.op === 'drain' && e.node === 'slave-1',
      () => void lab.clock.sleep(3_000).then(() => t.stop(signal)),
    );

    const r = await upgrade(lab, 'v0.9.21', t);

    expect(r.error).toBeInstanceOf(InterruptedError);
    expect((r.error as CliError).exitCode).toBe(code);
    expect(since(lab.cluster.execs('slave-1', isComposeUp), mark)).toEqual([]);
    expect(lab.node('slave-1').container).toMatchObject({ image: IMAGE_V20, startedAt: s1Started });
    expect(drainTimeline(lab, mark)).toEqual([['slave-1'], []]);
    expect(since(lab.cluster.balancerPushes(), mark)).toEqual([]);
    expect(lab.cluster.places()).toEqual({ master: 'in', 'slave-1': 'in', 'slave-2': 'in' });
    expect(lab.store.peek(KEY)).toBeUndefined();
  });

  it('stop during the gate: the batch finishes and is put back, no further batch starts', async () => {
    const lab = await deployedLab();
    const mark = lastSeq(lab);
    const t = lab.env();
    onComposeUp(lab, 'slave-1', mark, () => void lab.clock.sleep(1_000).then(() => t.stop()));

    const r = await upgrade(lab, 'v0.9.21', t);

    expect(r.error).toBeInstanceOf(InterruptedError);
    expect((r.error as CliError).exitCode).toBe(ExitCode.interrupted);
    expect(lab.node('slave-1').container).toMatchObject({ image: IMAGE_V21, status: 'running' });
    expect(lab.node('slave-1').state()).toMatchObject({ image: IMAGE_V21 });
    expect(drainTimeline(lab, mark)).toEqual([['slave-1'], []]);
    expect(since(lab.cluster.balancerPushes(), mark)).toEqual([]);
    expect(since(lab.cluster.execs(undefined, isComposeUp), mark).map((e) => e.host)).toEqual(['slave-1']);
    expect(lab.cluster.places()).toEqual({ master: 'in', 'slave-1': 'in', 'slave-2': 'in' });
    expect(r.stderr).toContain('Where things stand');
  });

  it('a hard quit (second signal) during a gate: the lock is released and nothing changes a host after it', async () => {
    const lab = await deployedLab();
    const mark = lastSeq(lab);
    const t = lab.env();
    let quitSeq: number | undefined;
    onComposeUp(lab, 'slave-1', mark, () => {
      void lab.clock.sleep(1_000).then(() => t.stop());
      void lab.clock.sleep(2_000).then(() => {
        quitSeq = lastSeq(lab);
        expect(t.hardQuit.size).toBe(1);
        for (const fn of t.hardQuit) void fn();
      });
    });

    const r = await upgrade(lab, 'v0.9.21', t);

    expect(quitSeq).toBeDefined();
    expect(r.ok).toBe(false);
    expect(lab.store.peek(KEY), 'released by the hard quit').toBeUndefined();
    // The gate in hand is abandoned (health.ts: "a hard quit aborts it"); with the lock gone, no host may change.
    const changes = since(lab.cluster.events, quitSeq!).filter((e) => e.kind === 'upload' || e.kind === 'firewall' || e.kind === 'nginx' || (e.kind === 'exec' && (isComposeUp(e.argv) || e.argv[0] === 'nginx')));
    expect(changes.map((e) => `${e.host} ${e.kind === 'upload' ? `upload ${e.path}` : e.kind}`)).toEqual([]);
  });

  it('stop while a host of the batch is lost: the run ends within 5 s of the stop', async () => {
    const lab = await deployedLab();
    const mark = lastSeq(lab);
    const t = lab.env();
    let stopAt: number | undefined;
    onComposeUp(lab, 'slave-1', mark, () => {
      lab.node('slave-1').lose();
      void lab.clock.sleep(10_000).then(() => {
        stopAt = lab.clock.now();
        t.stop();
      });
    });

    const r = await upgrade(lab, 'v0.9.21', t);

    expect(stopAt).toBeDefined();
    expect(r.error).toBeInstanceOf(InterruptedError);
    expect((r.error as CliError).exitCode).toBe(ExitCode.interrupted);
    expect(r.at - stopAt!).toBeLessThanOrEqual(5_000);
    expect(lab.cluster.places()['slave-1']).not.toBe('in');
    expect(lab.cluster.places()).toMatchObject({ master: 'in', 'slave-2': 'in' });
    expect(lab.store.peek(KEY)).toBeUndefined();
  });
});

describe('signals and lost hosts', () => {
  it('stop during the master\'s first start: the master finishes, the prepared slaves are not started; the next deploy starts them', async () => {
    const lab = await newLab();
    const t = lab.env();
    onComposeUp(lab, 'master', 0, () => void lab.clock.sleep(1_000).then(() => t.stop()));
    const r = await deploy(lab, t);
    expect(r.error).toBeInstanceOf(InterruptedError);
    expect((r.error as CliError).exitCode).toBe(ExitCode.interrupted);
    expect(lab.node('master').container).toMatchObject({ status: 'running' });
    for (const name of ['slave-1', 'slave-2']) expect(lab.node(name).container, name).toMatchObject({ status: 'created' });
    expect(lab.cluster.places()).toEqual({ master: 'in', 'slave-1': 'absent', 'slave-2': 'absent' });
    expect(r.stderr).toContain('Where things stand');

    expectOk(await deploy(lab));
    expect(lab.cluster.places()).toEqual({ master: 'in', 'slave-1': 'in', 'slave-2': 'in' });
    for (const name of NODES) expect(lab.node(name).container).toMatchObject({ status: 'running', image: IMAGE_V20 });
  });

  it('stop while a call to the lost host is in flight (its compose up): the run ends within seconds, not at that call\'s 5-minute deadline', async () => {
    const lab = await deployedLab();
    const t = lab.env();
    const s1 = lab.node('slave-1');
    let stopAt: number | undefined;
    s1.dropWhen = (argv) => isComposeStartingUp(argv);
    lab.cluster.once(
      (e) => e.kind === 'lost' && e.host === 'slave-1',
      () =>
        void lab.clock.sleep(10_000).then(() => {
          stopAt = lab.clock.now();
          t.stop();
        }),
    );

    const r = await upgrade(lab, 'v0.9.21', t);

    expect(stopAt).toBeDefined();
    expect(r.error).toBeInstanceOf(InterruptedError);
    // Once stopping, a vanished host is to cost seconds (STOPPING_EXEC_TIMEOUT_MS at most), not minutes.
    expect(r.at - stopAt!, `the run ended ${(r.at - stopAt!) / 1000} s after the stop`).toBeLessThanOrEqual(STOPPING_EXEC_TIMEOUT_MS + 5_000);
    expect(lab.cluster.places()).toMatchObject({ master: 'in', 'slave-2': 'in' });
  });
});

describe('releases', () => {
  it('after deploy then upgrade, rollback returns each node to the first release', async () => {
    const lab = await deployedLab();
    const first = Object.fromEntries(NODES.map((n) => [n, lab.node(n).state()!.release!]));
    expectOk(await upgrade(lab, 'v0.9.21'));
    await lab.reload();

    const plan = await rollback(lab, { dryRun: true }, lab.env({ json: true }));
    expectOk(plan);
    const json = JSON.parse(plan.stdout) as { warnings: string[]; nodes: { name: string; image: string; restart: boolean }[] };
    expect(json.warnings).toEqual([]);
    expect(json.nodes.map((n) => [n.name, n.image, n.restart])).toEqual(NODES.map((n) => [n, IMAGE_V20, true]));

    const mark = lastSeq(lab);
    expectOk(await rollback(lab, { dryRun: false }));
    for (const name of NODES) {
      const h = lab.node(name);
      expect(h.state()).toMatchObject({ image: IMAGE_V20, release: first[name] });
      expect(h.container).toMatchObject({ image: IMAGE_V20 });
      expect(h.files.get(composeFile(lab))).toBe(h.files.get(`${h.paths.releases}/${first[name]}/docker-compose.yml`));
    }
    expect(drainTimeline(lab, mark)).toEqual([['slave-1'], [], ['slave-2'], [], ['master'], []]);
    expect(since(lab.cluster.balancerPushes(), mark)).toEqual([]);
    expect(await readFile(lab.tmp.file, 'utf8')).toContain(`image: ${IMAGE_V20}`);
  });

  it('a release whose files do not match their recorded hashes is skipped with a warning', async () => {
    const lab = await deployedLab();
    const first = lab.node('slave-1').state()!.release!;
    expectOk(await upgrade(lab, 'v0.9.21'));
    await lab.reload();
    const s1 = lab.node('slave-1');
    const tampered = `${s1.paths.releases}/${first}/.env`;
    s1.files.set(tampered, `${s1.files.get(tampered)}EXTRA=1\n`);

    const plan = await rollback(lab, { dryRun: true }, lab.env({ json: true }));
    expectOk(plan);
    const json = JSON.parse(plan.stdout) as { warnings: string[]; nodes: { name: string }[] };
    expect(json.warnings).toEqual([`slave-1: the files of release ${first} do not match the hashes recorded with them: skipped`]);
    expect(json.nodes.map((n) => n.name)).toEqual(['master', 'slave-2']);
  });

  it('keepReleases prunes old release folders', async () => {
    const lab = await deployedLab({ rollout: { keepReleases: 2 } });
    const ids = [lab.node('slave-1').state()!.release!];
    expectOk(await upgrade(lab, 'v0.9.21'));
    ids.push(lab.node('slave-1').state()!.release!);
    await lab.reload();
    expectOk(await upgrade(lab, 'v0.9.22'));
    ids.push(lab.node('slave-1').state()!.release!);
    expect(new Set(ids).size).toBe(3);
    for (const name of NODES) {
      const h = lab.node(name);
      expect(h.releaseIds()).toHaveLength(2);
      expect(h.releaseIds()).toContain(h.state()!.release);
      expect(h.releaseIds().some((id) => id.endsWith('-v0.9.20')), `${name}: the oldest release is pruned`).toBe(false);
    }
    expect(lab.node('slave-1').releaseIds()).toEqual(ids.slice(1).sort());
  });

  it('keepReleases never prunes the release a node runs, even beyond the newest kept', async () => {
    const lab = await deployedLab({ rollout: { keepReleases: 3 } });
    expectOk(await upgrade(lab, 'v0.9.21'));
    await lab.reload();
    expectOk(await upgrade(lab, 'v0.9.22'));
    for (const name of NODES) expect(lab.node(name).releaseIds()).toHaveLength(3);
    const text = await readFile(lab.tmp.file, 'utf8');
    expect(text).toMatch(/keepReleases: 3/);
    await writeFile(lab.tmp.file, text.replace(/keepReleases: 3/, 'keepReleases: 1'));
    await lab.reload();

    expectOk(await rollback(lab, { dryRun: false, to: 'v0.9.20' }));
    for (const name of NODES) {
      const h = lab.node(name);
      const running = h.state()!.release!;
      expect(running).toMatch(/-v0\.9\.20$/);
      // keep 1: the newest (v0.9.22) stays, the running v0.9.20 is protected, v0.9.21 goes.
      expect(h.releaseIds().map((id) => id.replace(/^.*-/, ''))).toEqual(['v0.9.20', 'v0.9.22']);
      expect(h.releaseIds()).toContain(running);
    }
  });
});

describe('the look and the lock', () => {
  it('under the lock the hosts are read again: a node changed since the look restarts too, and is checked before it does', async () => {
    const lab = await deployedLab();
    const c = lab.cluster;
    c.host('slave-1').files.delete(envFile(lab));
    // Another hand changes slave-2 between the look (without the lock) and the lock.
    const acquire = lab.store.acquireNow.bind(lab.store);
    vi.spyOn(lab.store, 'acquireNow').mockImplementation((key, value, ttl) => {
      c.host('slave-2').files.delete(envFile(lab));
      return acquire(key, value, ttl);
    });
    const mark = lastSeq(lab);
    expectOk(await deploy(lab));
    const isDiskCheck = (a: string[]) => a.join(' ').includes('df -Pk');
    for (const node of ['slave-1', 'slave-2']) {
      const up = since(c.execs(node, isComposeStartingUp), mark);
      expect(up, `${node} is recreated`).toHaveLength(1);
      const checked = since(c.execs(node, isDiskCheck), mark);
      expect(checked.length, `${node} is checked`).toBeGreaterThan(0);
      expect(checked[0]!.seq, `${node} is checked before it restarts`).toBeLessThan(up[0]!.seq);
      expect(c.host(node).files.has(envFile(lab)), `${node} has its .env again`).toBe(true);
    }
    expect(since(c.execs('master', isComposeStartingUp), mark), 'the master is left alone').toHaveLength(0);
  });
});

describe('failures', () => {
  it('first deploy: a slave that never becomes healthy is stopped and left out; the others serve', async () => {
    const lab = await newLab();
    lab.node('slave-2').unhealthy.add(IMAGE_V20);
    const r = await deploy(lab);
    expect(r.error).toBeInstanceOf(CliError);
    expect((r.error as CliError).exitCode).toBe(ExitCode.failed);
    expect((r.error as Error).message).toMatch(/^slave-2 failed its health gate: not healthy after 30 s: HTTP 503/);
    expect(lab.cluster.places()).toEqual({ master: 'in', 'slave-1': 'in', 'slave-2': 'absent' });
    expect(lab.node('slave-2').container, 'stopped again (compose down)').toBeUndefined();
    expect(lab.node('slave-2').state()).toBeUndefined();
    expect(lab.node('slave-1').state()).toMatchObject({ image: IMAGE_V20 });
    expect(r.stderr).toMatch(/slave-2\s+\S+\s+OUT\s+failed: /);
    expect(lab.store.peek(KEY)).toBeUndefined();
  });

  it('first deploy: a master that never becomes healthy: the prepared slaves are never started, and the report says so', async () => {
    const lab = await newLab();
    lab.node('master').unhealthy.add(IMAGE_V20);
    const r = await deploy(lab);
    expect(r.error).toBeInstanceOf(CliError);
    expect((r.error as CliError).exitCode).toBe(ExitCode.failed);
    expect((r.error as Error).message).toMatch(/^master failed its health gate: not healthy after 30 s/);
    expect(lab.cluster.containerStarts().map((s) => s.host)).toEqual(['master']);
    for (const name of ['slave-1', 'slave-2']) {
      expect(lab.node(name).container, `${name} is prepared, never started`).toMatchObject({ status: 'created' });
      expect(lab.node(name).state()).toBeUndefined();
    }
    expect(lab.cluster.places()).toEqual({ master: 'absent', 'slave-1': 'absent', 'slave-2': 'absent' });
    expect(r.stderr).toMatch(/slave-1 +\S+ +OUT +not reached/);
    expect(r.stderr).toMatch(/Start slave-1 on \S+ once master is healthy: not started: master did not start/);
    expect(lab.store.peek(KEY)).toBeUndefined();
  });

  it('a batch of two is one unit: one node fails its gate, both return to the previous version', async () => {
    const lab = await deployedLab();
    lab.node('slave-2').unhealthy.add(IMAGE_V21);
    const mark = lastSeq(lab);
    const r = await lab.run((env, loaded) => runUpgrade(env, loaded, { to: 'v0.9.21', batch: 2, dryRun: false, allowDowngrade: false }));
    expect(r.error).toBeInstanceOf(CliError);
    expect((r.error as Error).message).toMatch(/^slave-2: /);
    expect(drainTimeline(lab, mark)).toEqual([['slave-1', 'slave-2'], []]);
    expect(since(lab.cluster.balancerPushes(), mark)).toEqual([]);
    for (const name of ['slave-1', 'slave-2']) {
      const h = lab.node(name);
      expect(h.container, name).toMatchObject({ image: IMAGE_V20, status: 'running' });
      expect(h.state(), `${name}: no state claims the version that was undone`).toMatchObject({ image: IMAGE_V20 });
      expect(h.auditLines().at(-1)).toMatchObject({ result: 'rolled back', to: IMAGE_V20 });
    }
    expect(since(lab.cluster.execs('master', isComposeUp), mark)).toEqual([]);
    expect(lab.cluster.places()).toEqual({ master: 'in', 'slave-1': 'in', 'slave-2': 'in' });
  });

  it('iptables refuses the drain rule: the batch is not touched and nothing is left drained', async () => {
    const lab = await deployedLab();
    const b = lab.cluster.balancer;
    b.firewallFault = (op, node) => (op === 'drain' && node === 'slave-1' ? { code: 4, stderr: 'iptables v1.8.9 (nf_tables): Could not fetch rule set generation id: Permission denied (you must be root)\n' } : undefined);
    const mark = lastSeq(lab);
    const r = await upgrade(lab, 'v0.9.21');
    expect(r.error).toBeInstanceOf(CliError);
    expect((r.error as CliError).exitCode).toBe(ExitCode.failed);
    expect((r.error as Error).message).toMatch(/^balancer: `.*` exited with code 4: iptables v1\.8\.9 \(nf_tables\): Could not fetch rule set generation id/);
    expect(since(lab.cluster.execs(undefined, isComposeUp), mark)).toEqual([]);
    expect(b.drainRules()).toEqual([]);
    expect(since(lab.cluster.balancerPushes(), mark)).toEqual([]);
    expect(lab.cluster.places()).toEqual({ master: 'in', 'slave-1': 'in', 'slave-2': 'in' });
    for (const name of NODES) expect(lab.node(name).container).toMatchObject({ image: IMAGE_V20 });
  });

  it('the new version fails in the migrate step: nothing is drained, the migrate container is kept for inspection', async () => {
    const lab = await deployedLab();
    lab.cluster.publish(IMAGE_V21, { health: 'never' });
    const mark = lastSeq(lab);
    const r = await upgrade(lab, 'v0.9.21');
    expect(r.error).toBeInstanceOf(CliError);
    expect((r.error as Error).message).toMatch(/^the migrate step failed: master failed its health gate/);
    expect((r.error as CliError).hint).toContain('nothing was upgraded');
    expect(balancerChanges(lab, mark)).toEqual([]);
    expect(since(lab.cluster.execs(undefined, isComposeUp), mark)).toEqual([]);
    expect(lab.node('master').migrateContainer).toMatchObject({ image: IMAGE_V21 });
    for (const name of NODES) expect(lab.node(name).container).toMatchObject({ image: IMAGE_V20, status: 'running' });

    // Once the image is fixed, the next run removes the leftover migrate container first.
    lab.cluster.publish(IMAGE_V21);
    expectOk(await upgrade(lab, 'v0.9.21'));
    expect(lab.node('master').migrateContainer).toBeUndefined();
    for (const name of NODES) expect(lab.node(name).container).toMatchObject({ image: IMAGE_V21 });
  });

  it('nodes deployed by hand and already right are only recorded', async () => {
    const lab = await deployedLab();
    for (const name of NODES) {
      const h = lab.node(name);
      for (const f of [...h.files.keys()]) if (f.startsWith(h.paths.dir)) h.files.delete(f);
    }
    const mark = lastSeq(lab);
    const r = await deploy(lab);
    expectOk(r);
    expect(since(lab.cluster.execs(undefined, isComposeUp), mark)).toEqual([]);
    expect(balancerChanges(lab, mark)).toEqual([]);
    for (const name of NODES) {
      expect(lab.node(name).state()).toMatchObject({ image: IMAGE_V20 });
      expect(lab.node(name).releaseIds()).toHaveLength(1);
      expect(r.stdout).toContain(`${name}: recorded on ${IMAGE_V20}`);
    }
  });

  it('an image that cannot be pulled on one node: nothing is drained, migrated or recreated', async () => {
    const lab = await deployedLab();
    lab.node('slave-2').pullable = new Set([IMAGE_V20]);
    const mark = lastSeq(lab);
    const r = await upgrade(lab, 'v0.9.21');
    expect(r.error).toBeInstanceOf(CliError);
    expect((r.error as Error).message).toMatch(/^cannot pull calciumion\/new-api:v0\.9\.21: .*manifest unknown/);
    expect((r.error as CliError).node).toBe('slave-2');
    expect(balancerChanges(lab, mark)).toEqual([]);
    expect(since(lab.cluster.execs(undefined, (a) => isComposeUp(a) || a.includes('run')), mark)).toEqual([]);
  });

  it('an admit push that nginx rejects: the node is stopped, and no later push lists it', async () => {
    const lab = await newLab();
    const c = lab.cluster;
    const path = lab.loaded.inventory.loadBalancer.configPath;
    let rejected: number | undefined;
    c.once(
      (e) => e.kind === 'upload' && e.host === 'balancer' && c.placeIn(e.content, 'slave-1') === 'in' && c.placeIn(e.content, 'slave-2') !== 'in',
      (e) => {
        rejected = e.seq;
        c.balancer.nginxTest.push({ code: 1, stderr: `nginx: [emerg] host not found in upstream in ${path}:9\n` });
      },
    );
    const r = await deploy(lab);
    expect(rejected).toBeDefined();
    expect(r.error).toBeInstanceOf(CliError);
    expect(r.stderr).toMatch(/slave-1\s+\S+\s+\S+\s+failed: nginx -t rejected/);
    expect(lab.node('slave-1').container, 'a node that never served is stopped again').toBeUndefined();
    for (const p of since(c.balancerPushes(), rejected!)) {
      expect(c.placeIn(p.content, 'slave-1'), `push #${p.seq} sends traffic to the stopped slave-1`).not.toBe('in');
    }
    expect(c.places()['slave-1']).not.toBe('in');
  });

  it('a master that does not answer: the first look (without the lock) fails naming it, within its deadline; no lock is taken, nothing changes', async () => {
    const lab = await deployedLab();
    const mark = lastSeq(lab);
    const opened = lab.store.opened.length;
    lab.node('master').lose();
    const r = await upgrade(lab, 'v0.9.21');
    expect(r.error).toBeInstanceOf(HostUnreachableError);
    expect((r.error as CliError).node).toBe('master');
    expect((r.error as Error).message).toMatch(/^could not read every host, nothing was changed: master: /);
    expect(r.at - r.startedAt, 'bounded by the look\'s deadline').toBeLessThanOrEqual(65_000);
    expect(lab.store.opened.length, 'the lock is not taken').toBe(opened);
    expect(lab.store.peek(KEY)).toBeUndefined();
    expect(since(lab.cluster.events, mark).filter((e) => e.kind === 'upload' || e.kind === 'firewall' || e.kind === 'nginx' || (e.kind === 'exec' && (isComposeUp(e.argv) || e.argv[1] === 'pull')))).toEqual([]);
    expect(r.stderr).not.toContain('Where things stand');
    expect(await readFile(lab.tmp.file, 'utf8')).toContain(`image: ${IMAGE_V20}`);
  });
});

describe('after a run that left a node out', () => {
  /** Upgrade with slave-1 lost right after its compose up, then the host comes back. */
  async function leftOut(): Promise<Lab> {
    const lab = await deployedLab();
    onComposeUp(lab, 'slave-1', lastSeq(lab), () => lab.node('slave-1').lose());
    const failed = await upgrade(lab, 'v0.9.21');
    expect(failed.ok).toBe(false);
    expect(lab.cluster.places()['slave-1']).not.toBe('in');
    lab.node('slave-1').restore();
    return lab;
  }

  it('running the upgrade again puts it back without recreating it, and the rest follows', async () => {
    const lab = await leftOut();
    const mark = lastSeq(lab);
    const r = await upgrade(lab, 'v0.9.21');
    expectOk(r);
    expect(since(lab.cluster.execs('slave-1', isComposeUp), mark)).toEqual([]);
    expect(lab.cluster.places()).toEqual({ master: 'in', 'slave-1': 'in', 'slave-2': 'in' });
    for (const name of NODES) expect(lab.node(name).container).toMatchObject({ image: IMAGE_V21 });
    expect(r.stdout).toContain('slave-1: readmitted');
  });

  it('the node put back records the version it runs (state.json, release, audit)', async () => {
    const lab = await leftOut();
    expectOk(await upgrade(lab, 'v0.9.21'));
    const s1 = lab.node('slave-1');
    expect(s1.container).toMatchObject({ image: IMAGE_V21 });
    expect(s1.state(), 'state.json names the version the node runs').toMatchObject({ image: IMAGE_V21 });
    expect(s1.auditLines().at(-1)).toMatchObject({ to: IMAGE_V21 });
  });

  it('so that a later rollback returns that node too', async () => {
    const lab = await leftOut();
    expectOk(await upgrade(lab, 'v0.9.21'));
    await lab.reload();
    const plan = await rollback(lab, { dryRun: true }, lab.env({ json: true }));
    expectOk(plan);
    const json = JSON.parse(plan.stdout) as { warnings: string[]; nodes: { name: string; image: string }[] };
    expect(json.warnings).toEqual([]);
    expect(json.nodes.map((n) => [n.name, n.image])).toEqual(NODES.map((n) => [n, IMAGE_V20]));
  });
});

describe('deploy of a new image, and scale', () => {
  it('a deploy that changes cluster.image runs the migrations first, then rolls the nodes', async () => {
    const lab = await deployedLab();
    const text = await readFile(lab.tmp.file, 'utf8');
    await writeFile(lab.tmp.file, text.replace(IMAGE_V20, IMAGE_V21));
    await lab.reload();
    const mark = lastSeq(lab);
    expectOk(await deploy(lab));
    expect(drainTimeline(lab, mark)).toEqual([['slave-1'], [], ['slave-2'], [], ['master'], []]);
    expect(since(lab.cluster.balancerPushes(), mark), 'the set of nodes did not change: no file').toEqual([]);
    expect(since(lab.cluster.nginxEvents(), mark)).toEqual([]);
    const migrate = since(lab.cluster.execs('master', (a) => a.includes('run')), mark);
    expect(migrate).toHaveLength(1);
    expect(migrate[0]!.seq).toBeLessThan(since(lab.cluster.firewallChanges(), mark)[0]!.seq);
    for (const name of NODES) expect(lab.node(name).state()).toMatchObject({ image: IMAGE_V21, operation: 'deploy' });
  });

  it('scale add-node: the node is deployed and gated before the balancer or the inventory name it', async () => {
    const lab = await deployedLab();
    const h = lab.cluster.addHost('slave-3', '10.0.0.14');
    const mark = lastSeq(lab);
    let inventoryAtStart: string | undefined;
    lab.cluster.once(
      (e) => e.kind === 'container-start' && e.host === 'slave-3',
      () => void readFile(lab.tmp.file, 'utf8').then((t) => (inventoryAtStart = t)),
    );
    const r = await lab.run((env, loaded) => runAddNode(env, loaded, { name: 'slave-3', host: '10.0.0.14' }));
    expectOk(r);
    await lab.reload();
    expect(inventoryAtStart).toBeDefined();
    expect(inventoryAtStart).not.toContain('slave-3');
    expect(await readFile(lab.tmp.file, 'utf8')).toContain('slave-3');
    const pushes = since(lab.cluster.balancerPushes(), mark);
    expect(pushes).toHaveLength(1);
    const started = lab.cluster.containerStarts().find((e) => e.host === 'slave-3')!;
    const recorded = h.calls().find(isUploadOf(h.paths.state))!;
    expect(started.seq).toBeLessThan(recorded.seq);
    expect(recorded.seq).toBeLessThan(pushes[0]!.seq);
    expect(lab.cluster.placeIn(pushes[0]!.content, 'slave-3')).toBe('in');
    expect(h.state()).toMatchObject({ image: IMAGE_V20, node: 'slave-3' });
    for (const name of NODES) expect(lab.cluster.placeIn(pushes[0]!.content, name)).toBe('in');
  });

  it('scale remove-node: drained, waited for, stopped, then left out of the balancer', async () => {
    const lab = await deployedLab();
    const mark = lastSeq(lab);
    const r = await lab.run((env, loaded) => runRemoveNode(env, loaded, { name: 'slave-2', purge: false }));
    expectOk(r);
    // Drained by a rule (no file), then left out of the file (reload), and only then its rule goes.
    const rules = since(lab.cluster.firewallChanges(), mark);
    expect(rules.map((e) => `${e.op} ${e.node}`)).toEqual(['drain slave-2', 'undrain slave-2']);
    const pushes = since(lab.cluster.balancerPushes(), mark);
    expect(pushes.map((p) => lab.cluster.placeIn(p.content, 'slave-2'))).toEqual(['absent']);
    const down = since(lab.cluster.execs('slave-2', (a) => a.includes('down')), mark);
    expect(down).toHaveLength(1);
    expect(down[0]!.at - rules[0]!.at).toBeGreaterThanOrEqual(10_000);
    expect(down[0]!.seq).toBeLessThan(pushes[0]!.seq);
    const reload = since(lab.cluster.nginxEvents(), mark);
    expect(reload.map((e) => e.op)).toEqual(['reload']);
    expect(pushes[0]!.seq).toBeLessThan(reload[0]!.seq);
    expect(reload[0]!.seq).toBeLessThan(rules[1]!.seq);
    expect(lab.cluster.balancer.drainRules()).toEqual([]);
    expect(lab.node('slave-2').container).toBeUndefined();
    expect(lab.node('slave-2').state(), 'its files stay without --purge').toBeDefined();
    expect(await readFile(lab.tmp.file, 'utf8')).not.toContain('slave-2');
  });
});
