/**
 * rollout.hooks against the in-memory lab with `loadBalancer: { type: none }`: real `sh` scripts
 * run on this machine around each node's move (beforeDrain → beforeUpgrade → afterUpgrade →
 * afterReady), in rollout order, with the node's facts in NEWAPI_* and no secret in their
 * environment; a failing hook stops the run before its node is touched; a hook is bounded by
 * rollout.hookTimeoutSeconds (real time, kept at 1 s).
 */
import { readFile, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { afterEach, beforeEach, describe, expect, it, vi } from 'vitest';
import { CliError, ExitCode } from '../../../src/errors.js';
import { runDeploy } from '../../../src/orchestrate/deploy.js';
import { runUpgrade } from '../../../src/orchestrate/upgrade.js';
import { FAKE, FAKE_VARS, SECRET_VALUES } from '../../fixtures/inventory.js';
import { IMAGE_V20, IMAGE_V21, isComposeStartingUp, isComposeUp, Lab, type FakeEvent, type RunOutcome } from '../../support/fake-cluster.js';

// Hooks run for real (sh): the manual clock must stand still while one runs, until its process
// has ended and its output is read, which the clock's driver cannot see by itself.
vi.mock('../../../src/orchestrate/hooks.js', async (importOriginal) => {
  const real = await importOriginal<typeof import('../../../src/orchestrate/hooks.js')>();
  const { trackRealWork } = await import('../../support/fake-cluster.js');
  return { ...real, runHook: (...args: Parameters<typeof real.runHook>) => trackRealWork(real.runHook(...args)) };
});

const NODES = ['master', 'slave-1', 'slave-2'] as const;
const PHASES = ['beforeDrain', 'beforeUpgrade', 'afterUpgrade', 'afterReady'] as const;

/**
 * Appends "$NEWAPI_PHASE $NEWAPI_NODE $NEWAPI_VERSION" to calls.log and dumps its environment
 * (env -0: values may hold line breaks) to env-PHASE-NODE; fails or sleeps where FAIL / SLOW say.
 */
const HOOK = `#!/bin/sh
echo "$NEWAPI_PHASE $NEWAPI_NODE $NEWAPI_VERSION" >> calls.log
env -0 > "env-$NEWAPI_PHASE-$NEWAPI_NODE"
if [ "$NEWAPI_PHASE $NEWAPI_NODE" = "$(cat fail 2>/dev/null)" ]; then
  echo "registering with the load balancer"
  echo "lb api: 503 Service Unavailable" >&2
  exit 7
fi
exit 0
`;

const labs: Lab[] = [];
const savedEnv = { ...process.env };

beforeEach(() => {
  // The operator's shell holds the secrets too (as CI would): none may reach a hook.
  Object.assign(process.env, FAKE_VARS, {
    LOG_SQL_DSN: FAKE_VARS.LOG_SQL_DSN,
    // Innocent names, secret values.
    APP_DATABASE: `mysql://newapi:${FAKE.dbPassword}@10.0.0.5/new-api`,
    CACHE_URL: FAKE_VARS.REDIS_CONN_STRING,
    // Secret names whatever the value.
    LB_API_TOKEN: 'lb-token-value-123456',
    CLOUD_PASSWORD: 'cloud-password-value-123456',
    // Spoofed facts.
    NEWAPI_NODE: 'spoofed',
    HOOK_TEST_VISIBLE: 'visible-value',
  });
});

afterEach(async () => {
  for (const k of Object.keys(process.env)) if (!(k in savedEnv)) delete process.env[k];
  Object.assign(process.env, savedEnv);
  for (const lab of labs.splice(0)) {
    expect(lab.cluster.unmodelled, 'orchestration ran something the fake does not model').toEqual([]);
    await lab.cleanup();
  }
});

type Phase = (typeof PHASES)[number];

/** No balancer managed, every hook the script above (or `commands`; null: none). */
async function hookLab(rollout: Record<string, unknown> = {}, commands: Partial<Record<Phase, string | null>> = {}): Promise<Lab> {
  const hooks = Object.fromEntries(PHASES.map((p) => [p, commands[p] === undefined ? 'sh ./hook.sh' : commands[p]]));
  const lab = await Lab.create({
    rollout: { hooks, ...rollout },
    inventory: (raw) => {
      raw.loadBalancer = { type: 'none' };
    },
  });
  labs.push(lab);
  await writeFile(join(lab.tmp.dir, 'hook.sh'), HOOK, { mode: 0o755 });
  return lab;
}

/** Sets one hook in the inventory file (as an operator would between runs) and reads it again. */
async function setHook(lab: Lab, phase: Phase, command: string): Promise<void> {
  const text = await readFile(lab.tmp.file, 'utf8');
  expect(text).toContain(`${phase}: null`);
  await writeFile(lab.tmp.file, text.replace(`${phase}: null`, `${phase}: ${JSON.stringify(command)}`));
  await lab.reload();
  expect(lab.loaded.inventory.rollout.hooks[phase]).toBe(command);
}

const NO_HOOKS = { beforeDrain: null, beforeUpgrade: null, afterUpgrade: null, afterReady: null };

const deploy = (lab: Lab) => lab.run((env, loaded) => runDeploy(env, loaded, { dryRun: false, only: undefined }));
const upgrade = (lab: Lab, to: string) => lab.run((env, loaded) => runUpgrade(env, loaded, { to, batch: undefined, dryRun: false, allowDowngrade: false }));

function expectOk<T>(r: RunOutcome<T>): void {
  if (!r.ok) throw new Error(`the run failed: ${(r.error as Error)?.message}\n${r.stderr}`);
}

const lastSeq = (lab: Lab) => lab.cluster.events.at(-1)?.seq ?? 0;
const since = <E extends FakeEvent>(events: E[], mark: number) => events.filter((e) => e.seq > mark);
const calls = async (lab: Lab) => (await readFile(join(lab.tmp.dir, 'calls.log'), 'utf8').catch(() => '')).split('\n').filter(Boolean);
const resetCalls = (lab: Lab) => writeFile(join(lab.tmp.dir, 'calls.log'), '');
const envOf = async (lab: Lab, phase: string, node: string) =>
  Object.fromEntries(
    (await readFile(join(lab.tmp.dir, `env-${phase}-${node}`), 'utf8'))
      .split('\0')
      .filter(Boolean)
      .map((l) => [l.slice(0, l.indexOf('=')), l.slice(l.indexOf('=') + 1)]),
  );

// Every hook is a real process: under a loaded machine a run of a dozen takes seconds.
describe('rollout.hooks with an external balancer (type: none)', { timeout: 30_000 }, () => {
  it('an upgrade calls every hook in rollout order: each slave, then the master, with its NEWAPI_* facts', async () => {
    const lab = await hookLab();
    expectOk(await deploy(lab));
    await resetCalls(lab);
    const mark = lastSeq(lab);
    expectOk(await upgrade(lab, 'v0.9.21'));

    expect(await calls(lab)).toEqual(['slave-1', 'slave-2', 'master'].flatMap((n) => PHASES.map((p) => `${p} ${n} v0.9.21`)));
    // Each hook brackets the step it names: beforeUpgrade before the recreate, afterUpgrade after the gate.
    for (const name of NODES) {
      expect(since(lab.cluster.execs(name, isComposeStartingUp), mark)).toHaveLength(1);
      expect(lab.node(name).container).toMatchObject({ image: IMAGE_V21 });
    }
    const env = await envOf(lab, 'afterReady', 'slave-2');
    expect(env).toMatchObject({
      NEWAPI_CLUSTER: 'prod',
      NEWAPI_NODE: 'slave-2',
      NEWAPI_HOST: '10.0.0.13',
      NEWAPI_PORT: '3000',
      NEWAPI_ROLE: 'slave',
      NEWAPI_VERSION: 'v0.9.21',
      NEWAPI_PHASE: 'afterReady',
      HOOK_TEST_VISIBLE: 'visible-value',
    });
    expect((await envOf(lab, 'beforeDrain', 'master')).NEWAPI_ROLE).toBe('master');
  });

  it('a first deploy calls beforeUpgrade, afterUpgrade and afterReady once per node', async () => {
    const lab = await hookLab();
    expectOk(await deploy(lab));
    const got = await calls(lab);
    for (const name of NODES) {
      expect(got.filter((l) => l.endsWith(` ${name} v0.9.20`)).map((l) => l.split(' ')[0]), name).toEqual(['beforeUpgrade', 'afterUpgrade', 'afterReady']);
    }
  });

  it('no secret of the inventory reaches a hook\'s environment, whatever the variable is called', async () => {
    const lab = await hookLab();
    expectOk(await deploy(lab));
    expectOk(await upgrade(lab, 'v0.9.21'));
    const secrets = [...SECRET_VALUES, ...Object.values(FAKE_VARS), ...lab.loaded.secretValues, 'lb-token-value-123456', 'cloud-password-value-123456'];
    for (const phase of PHASES) {
      for (const node of NODES) {
        const text = await readFile(join(lab.tmp.dir, `env-${phase}-${node}`), 'utf8');
        for (const s of secrets) expect(text.includes(s), `${phase} ${node}: the environment holds a secret (${s.slice(0, 12)}…)`).toBe(false);
        const env = await envOf(lab, phase, node);
        for (const k of ['SQL_DSN', 'LOG_SQL_DSN', 'REDIS_CONN_STRING', 'SESSION_SECRET', 'CRYPTO_SECRET', 'APP_DATABASE', 'CACHE_URL', 'LB_API_TOKEN', 'CLOUD_PASSWORD']) expect(env, `${phase} ${node}`).not.toHaveProperty(k);
        expect(env.NEWAPI_NODE, 'NEWAPI_* come from the tool, not the operator\'s shell').toBe(node);
        expect(env.HOOK_TEST_VISIBLE).toBe('visible-value');
      }
    }
  });

  it('a failing beforeDrain stops the run before its node is touched (exit 1, the hook named)', async () => {
    const lab = await hookLab();
    expectOk(await deploy(lab));
    await resetCalls(lab);
    await writeFile(join(lab.tmp.dir, 'fail'), 'beforeDrain slave-2\n');
    const mark = lastSeq(lab);
    const r = await upgrade(lab, 'v0.9.21');

    expect(r.error).toBeInstanceOf(CliError);
    expect((r.error as CliError).exitCode).toBe(ExitCode.failed);
    expect((r.error as Error).message).toBe('slave-2: hook beforeDrain failed (exit 7): lb api: 503 Service Unavailable');
    expect((r.error as CliError).node).toBe('slave-2');
    expect(await calls(lab)).toEqual([...PHASES.map((p) => `${p} slave-1 v0.9.21`), 'beforeDrain slave-2 v0.9.21']);
    expect(since(lab.cluster.execs(undefined, isComposeUp), mark).map((e) => e.host), 'only slave-1 was recreated').toEqual(['slave-1']);
    expect(lab.node('slave-2').container).toMatchObject({ image: IMAGE_V20, status: 'running' });
    expect(lab.node('master').container).toMatchObject({ image: IMAGE_V20, status: 'running' });
    expect(lab.node('slave-2').state()).toMatchObject({ image: IMAGE_V20 });
    // The hook's output is shown as it ran.
    expect(r.stderr).toContain('[beforeDrain] registering with the load balancer');
  });

  it('a hook that runs past rollout.hookTimeoutSeconds fails with the timeout message; its node is not recreated', async () => {
    const lab = await hookLab({ hookTimeoutSeconds: 1 }, NO_HOOKS);
    expectOk(await deploy(lab));
    // exec: the shell becomes the sleep, so the timeout's SIGTERM ends the hook itself.
    await setHook(lab, 'beforeUpgrade', 'exec sleep 30');
    const mark = lastSeq(lab);
    const started = performance.now();
    const r = await upgrade(lab, 'v0.9.21');
    const took = performance.now() - started;

    expect(r.error).toBeInstanceOf(CliError);
    expect((r.error as CliError).exitCode).toBe(ExitCode.failed);
    expect((r.error as Error).message).toBe('slave-1: hook beforeUpgrade did not finish within 1 s');
    expect((r.error as CliError).hint).toBe('rollout.hookTimeoutSeconds is 1; make the hook faster or raise it');
    expect(took, 'bounded by the timeout, not by the hook').toBeLessThan(4_000);
    expect(since(lab.cluster.execs(undefined, isComposeUp), mark)).toEqual([]);
    expect(lab.node('slave-1').container).toMatchObject({ image: IMAGE_V20, status: 'running' });
  });

  it('the timeout bounds a hook whose shell is waiting on a command (the command keeps the hook\'s output open)', async () => {
    const lab = await hookLab({ hookTimeoutSeconds: 1 }, NO_HOOKS);
    expectOk(await deploy(lab));
    // sh forks the sleep and waits: the timeout kills sh, the sleep lives on holding sh's stdout.
    await setHook(lab, 'beforeUpgrade', 'sleep 4');
    const started = performance.now();
    const r = await upgrade(lab, 'v0.9.21');
    const took = performance.now() - started;
    expect((r.error as Error)?.message).toBe('slave-1: hook beforeUpgrade did not finish within 1 s');
    // timeout (1 s) + forceKillAfterDelay (2 s), and some slack: not the 4 s of the script's sleep.
    expect(took, `the hook held the run ${Math.round(took)} ms`).toBeLessThan(3_500);
  });

  it('a hook that exits 0 at once, leaving a process in the background, lets the run go on', async () => {
    const lab = await hookLab({ hookTimeoutSeconds: 1 }, NO_HOOKS);
    expectOk(await deploy(lab));
    // Only the master's afterReady starts something in the background (a log shipper, say).
    await setHook(lab, 'afterReady', 'if [ "$NEWAPI_NODE" = master ]; then sleep 4 & fi; echo registered');
    const started = performance.now();
    const r = await upgrade(lab, 'v0.9.21');
    const took = performance.now() - started;
    expectOk(r);
    expect(took, `the hook held the run ${Math.round(took)} ms`).toBeLessThan(3_500);
  });
});
