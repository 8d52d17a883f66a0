/**
 * The one owner of a run that changes hosts. Commands only build plans (deploy.ts, upgrade.ts,
 * scale.ts); this opens the session, takes and keeps the lock, gathers facts and runs the
 * pre-flight side by side, prints the plan for --dry-run, and otherwise runs the plan's steps in
 * order — the lock verified before each, a stop signal honoured between them — and closes with a
 * summary, or with "Where things stand" when the run failed or was stopped. The lock is released
 * and every connection closed whatever happens; a hard quit still tries a one-second release.
 */
import { CliError, ExitCode, HostUnreachableError, InterruptedError, LockLostError, errorMessage } from '../errors.js';
import type { LoadedInventory } from '../inventory/load.js';
import { changesHosts, type Plan } from '../plan/steps.js';
import { mapLimit } from '../remote/limit.js';
import type { TemplateSources } from '../render/templates.js';
import { makeProgress, type Progress } from '../ui/progress.js';
import { printNothingToDo, printPlan, printSummary, printWhereThingsStand, standing } from '../ui/report.js';
import { Balancer } from './balancer.js';
import { auditRun } from './node-files.js';
import { preflight } from './check.js';
import { ClusterLock } from './lock.js';
import type { RunEnv } from './run-env.js';
import { Session } from './session.js';
import { runStep, type RunState } from './steps.js';

/** Progress that says nothing: for the second, identical look under the lock. */
const QUIET: Progress = {
  phase: async (_title, tasks, opts) => {
    await mapLimit(tasks, opts?.concurrency ?? 1, (t) => t.run(() => undefined));
  },
  step: async (_title, run) => run(() => undefined),
  info: () => undefined,
};

export interface OperationSpec {
  /** The command as the lock, the audit log and the report name it. */
  command: string;
  dryRun: boolean;
  templates: TemplateSources;
  /** Read-only: gather facts from the hosts and build the plan. */
  plan: (session: Session, progress: Progress, balancer: Balancer) => Promise<Plan>;
}

export async function runOperation(env: RunEnv, loaded: LoadedInventory, spec: OperationSpec): Promise<RunState> {
  const session = await Session.open(env, loaded);
  const progress = await makeProgress(env);
  const state: RunState = { operation: spec.command, outcomes: new Map(), excluded: new Set(), changed: false, notes: [] };
  const stop = env.signals.stop;
  let lock: ClusterLock | undefined;
  let plan: Plan | undefined;
  let balancer: Balancer | undefined;
  let unhook: (() => void) | undefined;
  try {
    const started = session.clock.now();
    // One look at every host (one round trip each), without the lock: a run with nothing to do
    // stops here — no lock, no tunnels, no checks. Operators run deploy from CI on every merge.
    const look = await spec.plan(session, progress, new Balancer(session, spec.templates)).catch((e: unknown) => {
      throw beforeAnyChange(e);
    });
    if (spec.dryRun) {
      printPlan(env, look, session.inv, loaded.secretValues);
      return state;
    }
    if (look.steps.length === 0) {
      plan = look;
      printNothingToDo(env, look, (session.clock.now() - started) / 1000);
      return state;
    }
    await progress.step(`Take the lock on cluster ${session.project}`, async () => {
      lock = await ClusterLock.acquire({
        open: (avoid, signal) => session.openLockStore(avoid, signal),
        stop,
        cluster: session.project,
        operator: session.operator,
        command: spec.command,
        clock: session.clock,
        note: (text) => progress.info(text),
      });
    });
    const held = lock!;
    // A hard quit: every call in flight is abandoned, nothing more changes, the lock gets one second.
    unhook = env.signals.onHardQuit(() => {
      session.abortAll(new InterruptedError('quitting at once (second signal)', env.signals.received ?? 'SIGINT'));
      return held.releaseWithin(1_000);
    });
    balancer = new Balancer(session, spec.templates, () => held.verify());
    const b = balancer;

    // Under the lock the hosts are read again (another operator may have changed them since the
    // look), and only what the plan will rely on is checked: the nodes it (re)starts — Docker,
    // compose, disk, database and Redis from each — and the balancer. Both only read, so the
    // checks of what the look found run while the hosts are read again; a node the second read
    // adds is checked after it.
    const restartingIn = (p: Plan) => p.work.filter((w) => w.plan.restart).map((w) => w.plan.node);
    const checked = restartingIn(look);
    const reread = spec.plan(session, QUIET, b);
    reread.catch(() => undefined);
    if (checked.length > 0 || b.enabled) await preflight(session, progress, checked);
    plan = await reread;
    if (plan.steps.length === 0) {
      printNothingToDo(env, plan, (session.clock.now() - started) / 1000, true);
      return state;
    }
    const unchecked = restartingIn(plan).filter((n) => !checked.includes(n));
    if (unchecked.length > 0) await preflight(session, progress, unchecked);
    for (const w of plan.warnings) progress.info(`! ${w}`);

    const cx = { session, progress, balancer: b, state, stop, templates: spec.templates };
    for (const step of plan.steps) {
      if (stop.aborted) throw stopped(env, state);
      if (changesHosts(step)) await held.verify();
      await runStep(cx, step);
    }
    if (stop.aborted && state.changed) progress.info('stop requested after the last step: the run had finished');
    if (state.changed) await closeRun(session, spec.command, 'ok', plan);
    printSummary(env, plan, state);
    return state;
  } catch (e) {
    const error = classify(env, state, e);
    if (state.changed) {
      const result = error instanceof InterruptedError ? 'interrupted' : error instanceof LockLostError ? 'stopped: lock lost' : `failed: ${errorMessage(error).slice(0, 200)}`;
      await closeRun(session, spec.command, result, plan);
    }
    if (lock && (state.changed || error instanceof InterruptedError || error instanceof LockLostError)) {
      const b = balancer;
      const rows = standing(session.inv, plan, state, (name) => (b?.enabled ? b.place(name) : 'unmanaged'));
      printWhereThingsStand(env, rows, state);
    }
    throw error;
  } finally {
    unhook?.();
    if (lock) await lock.releaseWithin(5_000);
    await session.close();
  }
}

/** The audit line that says how the run ended; best effort, bounded, never failing the run. */
async function closeRun(session: Session, command: string, result: string, plan: Plan | undefined): Promise<void> {
  const images = new Set(plan?.work.filter((w) => w.plan.restart).map((w) => w.plan.image));
  const to = images.size === 1 ? [...images][0] : undefined;
  await Promise.race([auditRun(session, command, result, to).catch(() => undefined), new Promise((r) => setTimeout(r, session.stopping ? 2_000 : 5_000).unref())]);
}

function stopped(env: RunEnv, state: RunState): InterruptedError {
  const signal = env.signals.received ?? 'SIGINT';
  return new InterruptedError(
    state.changed
      ? `interrupted (${signal}): stopped after the step in hand; every healthy node is in the balancer`
      : `interrupted (${signal}) before anything was changed`,
    signal,
  );
}

/** A host that could not be read (down, a changed key) fails the look: the operator is told nothing changed. */
function beforeAnyChange(e: unknown): unknown {
  if (!(e instanceof CliError) || e.exitCode !== ExitCode.failed) return e;
  const message = `could not read every host, nothing was changed: ${e.message}`;
  const opts = { ...(e.hint ? { hint: e.hint } : {}), ...(e.node ? { node: e.node } : {}), cause: e };
  return e instanceof HostUnreachableError ? new HostUnreachableError(message, opts) : new CliError(message, opts);
}

/** A failure that happened because the run was stopping is reported as the stop it is. */
function classify(env: RunEnv, state: RunState, e: unknown): unknown {
  if (!env.signals.stop.aborted) return e;
  if (e instanceof LockLostError) return e;
  if (e instanceof InterruptedError) {
    const signal = env.signals.received ?? 'SIGINT';
    return e.exitCode === ExitCode.interrupted && signal !== 'SIGINT' ? new InterruptedError(e.message, signal) : e;
  }
  const signal = env.signals.received ?? 'SIGINT';
  const base = stopped(env, state);
  return new InterruptedError(`${base.message.replace(/; every healthy node is in the balancer$/, '')}: ${errorMessage(e)}`, signal);
}

