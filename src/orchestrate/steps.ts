/**
 * Running the steps of a plan (plan/steps.ts builds them). Each function does one kind of step
 * and keeps the run's ledger (`RunState`) exact, so that whatever happens the report can say
 * where every node stands.
 *
 * Replacing serving nodes without failing a request: a batch is drained from the balancer, left
 * to finish in-flight work for drainSeconds (New API has no graceful shutdown and keeps batched
 * quota in memory for batchUpdate.interval), recreated, health-gated, and only then put back. A
 * batch that fails its gate is returned to its previous files and version, gated again, and put
 * back; a node whose host stopped answering stays out of the balancer.
 */
import { CliError, HostUnreachableError, InterruptedError, errorMessage } from '../errors.js';
import { parseImageRef } from '../inventory/image.js';
import type { HookName, InventoryNode } from '../inventory/schema.js';
import type { NodeWork } from '../plan/plan.js';
import { parseState, sha256, statePaths } from '../plan/state.js';
import type { Step } from '../plan/steps.js';
import { compose, docker, files } from '../remote/commands.js';
import { mapLimit } from '../remote/limit.js';
import { CONTAINER_PORT, containerName } from '../render/render.js';
import type { TemplateSources } from '../render/templates.js';
import type { Progress } from '../ui/progress.js';
import type { Balancer } from './balancer.js';
import { ensureImage, transferImage } from './images.js';
import { waitHealthy } from './health.js';
import { runHook } from './hooks.js';
import { ensureVrrp } from './keepalived.js';
import { ensureCertificate } from './tls.js';
import { writeInventoryText } from './inventory-edit.js';
import { runMigrations } from './migrate.js';
import { audit, composeCreate, composeUp, ensureLayout, recordState, writeNodeFiles } from './node-files.js';
import type { Session } from './session.js';

export type NodeAction = 'unchanged' | 'started' | 'recreated' | 'readmitted' | 'recorded' | 'rolled-back' | 'failed' | 'lost' | 'removed' | 'drained' | 'stopped';

export interface NodeOutcome {
  node: string;
  action: NodeAction;
  /** The image the node runs now, as far as this run knows. */
  image: string | undefined;
  detail: string;
}

/** The run's ledger: what happened to each node, and who this run keeps out of the balancer. */
export interface RunState {
  operation: string;
  outcomes: Map<string, NodeOutcome>;
  /** Nodes left out of the balancer on purpose: not healthy, failed, lost, removed. */
  excluded: Set<string>;
  /** Whether any step changed a host yet. */
  changed: boolean;
  /** Things the report must say (a backup to restore, say). */
  notes: string[];
  /** Set by the final balancer step. */
  balancerChanged?: boolean;
  /** The backup taken before the migrations, as shown to the operator. */
  backup?: string;
  /** When the balancer went into maintenance (restore). */
  downSince?: number;
  /** Nodes whose afterReady hook already ran in this run. */
  ready?: Set<string>;
}

export interface StepContext {
  session: Session;
  templates: TemplateSources;
  progress: Progress;
  balancer: Balancer;
  state: RunState;
  /** Aborted on the first stop signal: steps that can still be undone cheaply undo and stop. */
  stop: AbortSignal;
}

export async function runStep(cx: StepContext, step: Step): Promise<void> {
  switch (step.kind) {
    case 'images':
      return ensureImages(cx, step.work);
    case 'backup':
      return backupBeforeMigrate(cx, step.image);
    case 'migrate':
      cx.state.changed = true;
      return cx.progress.step(`Run the ${tagOf(step.image)} migrations once on ${cx.session.master.name}`, (report) => runMigrations(cx.session, step.files, step.image, report));
    case 'start':
      return startNodes(cx, step.first, step.rest, step.admit);
    case 'batch':
      return rollBatch(cx, step.work);
    case 'readmit':
      return readmit(cx, step.work, step.admit);
    case 'record':
      return cx.progress.step(`Record the deployed state of ${names(step.work)}`, async () => {
        await mapLimit(step.work, cx.session.inv.rollout.maxParallel, async (w) => {
          await recordState(cx.session, w.files, w.plan.image, w.facts, cx.state.operation);
          setOutcome(cx, w.plan.node, 'recorded', w.plan.image, 'already right; state recorded');
        });
      });
    case 'balancer':
      return updateBalancer(cx);
    case 'remove':
      return removeNode(cx, step.node, step.purge);
    case 'inventory':
      return cx.progress.step(`Write the inventory: ${step.what}`, () => writeInventoryText(cx.session.loaded.path, step.text));
    case 'maintenance':
      return maintenance(cx, step.on);
    case 'stop':
      return stopNodes(cx, step.nodes);
    case 'restore':
      return restoreDatabaseStep(cx, step.path, step.file);
    case 'prune':
      return pruneStep(cx, step.nodes);
    case 'tls':
      return cx.progress.step('Renew the certificate of the balancers', async (report) => {
        if (await ensureCertificate(cx.session, cx.balancer, report, { force: step.force })) {
          cx.state.changed = true;
          cx.state.notes.push('certificate renewed and uploaded to every balancer; nginx reloaded');
        } else cx.state.notes.push('certificate not due: nothing changed');
      });
    default:
      return unreachable(step);
  }
}

function unreachable(step: never): never {
  throw new Error(`no executor for step ${JSON.stringify(step)}`);
}

const names = (work: readonly NodeWork[]) => work.map((w) => w.plan.node.name).join(', ');
/** Titles name the version; the repository is the inventory's (and the messages name the whole image). */
const tagOf = (image: string) => parseImageRef(image).tag ?? image;

function setOutcome(cx: StepContext, node: InventoryNode, action: NodeAction, image: string | undefined, detail: string): void {
  cx.state.outcomes.set(node.name, { node: node.name, action, image, detail });
}

async function ensureImages(cx: StepContext, work: NodeWork[]): Promise<void> {
  const { session } = cx;
  // Over SSH, each image leaves this machine once, streamed to every node that needs it.
  const transfers = new Map<string, ReturnType<typeof transferImage>>();
  const shared = (image: string) => {
    let t = transfers.get(image);
    if (!t) {
      t = transferImage(session, work.filter((w) => w.plan.image === image).map((w) => w.plan.node), image);
      transfers.set(image, t);
    }
    return t;
  };
  await cx.progress.phase(
    'Make the image present on every node',
    work.map((w) => ({
      title: `Make ${w.plan.image} present on ${w.plan.node.name}`,
      run: async (report) => {
        if (session.inv.images.transfer !== 'ssh') {
          report(await ensureImage(session, w.plan.node, w.plan.image, report));
          return;
        }
        report(`streaming ${w.plan.image} from this machine`);
        const r = (await shared(w.plan.image)).get(w.plan.node.name);
        if (r instanceof Error) throw r;
        report(r ?? 'transferred');
      },
    })),
    { concurrency: session.inv.rollout.maxParallel },
  );
}

/**
 * Nodes that serve no traffic yet: start them and gate them; no draining needed. `first` (the
 * master on a first deploy) starts alone — New API migrates only on the master, and a slave must
 * not meet an unmigrated schema (issue #4144) — while the others get their files and a created,
 * not started, container, so they only have to start afterwards.
 */
async function startNodes(cx: StepContext, first: NodeWork[], rest: NodeWork[], admit: boolean): Promise<void> {
  const { session, progress, state } = cx;
  state.changed = true;
  // New API migrates on the master at start-up, before it listens (issue #4144): the other nodes
  // are prepared meanwhile (image, files, container created) and start the moment the master
  // passes its health gate, while it is still being recorded and put in the balancer.
  let firstHealthy = (): void => undefined;
  let firstFailed = (_e: unknown): void => undefined;
  const firstUp =
    first.length === 0
      ? Promise.resolve()
      : new Promise<void>((resolve, reject) => {
          let pending = first.length;
          firstHealthy = () => {
            if (--pending === 0) resolve();
          };
          firstFailed = reject;
        });
  firstUp.catch(() => undefined);

  const start = (w: NodeWork, role: 'first' | 'rest') => ({
    title: `Start ${w.plan.node.name} on ${tagOf(w.plan.image)}${role === 'rest' && first.length > 0 ? ` once ${names(first)} is healthy` : ''}`,
    run: async (report: (t: string) => void) => {
      const node = w.plan.node;
      const prepared = role === 'rest' && first.length > 0;
      if (prepared) {
        // Preparing changes nothing that serves; a failure here is the node's own (below).
        try {
          if (w.plan.pullImage) report(await ensureImage(session, node, w.plan.image, report));
          await ensureLayout(session, node);
          await writeNodeFiles(session, w.plan);
          await composeCreate(session, node);
        } catch (e) {
          state.excluded.add(node.name);
          setOutcome(cx, node, e instanceof HostUnreachableError ? 'lost' : 'failed', w.facts.container.image, errorMessage(e));
          throw e;
        }
        report(`prepared; waiting for ${names(first)} to pass its health gate`);
        await firstUp.catch((e: unknown) => {
          throw new CliError(`not started: ${names(first)} did not start (${errorMessage(e)})`, { node: node.name });
        });
        if (cx.stop.aborted) throw new InterruptedError('stopped before starting it');
      }
      try {
        await runHook(session, 'beforeUpgrade', node, w.plan.image, report);
        if (!prepared && w.plan.pullImage) report(await ensureImage(session, node, w.plan.image, report));
        await replaceNode(session, w, report, prepared);
        if (role === 'first') firstHealthy();
        await runHook(session, 'afterUpgrade', node, w.plan.image, report);
        await recordState(session, w.files, w.plan.image, w.facts, state.operation);
        setOutcome(cx, node, 'started', w.plan.image, w.plan.reasons.join(', '));
        state.excluded.delete(node.name);
        if (admit && cx.balancer.enabled) {
          cx.balancer.set([node.name], 'in');
          await cx.balancer.apply();
        }
        if (admit) {
          await runHook(session, 'afterReady', node, w.plan.image, report);
          (state.ready ??= new Set()).add(node.name);
        }
      } catch (e) {
        if (role === 'first') firstFailed(e);
        state.excluded.add(node.name);
        setOutcome(cx, node, e instanceof HostUnreachableError ? 'lost' : 'failed', w.facts.container.image, errorMessage(e));
        // A node that never served is stopped again rather than left crash-looping (its host permitting).
        if (!(e instanceof HostUnreachableError) && !w.facts.container.exists) await stopContainer(session, node).catch(() => undefined);
        throw e;
      }
    },
  });
  for (const w of [...first, ...rest]) state.excluded.add(w.plan.node.name);
  const title =
    first.length === 0
      ? rest.length === 1
        ? `Start ${rest[0]!.plan.node.name}`
        : `Start ${rest.length} nodes`
      : rest.length === 0
        ? `Start ${names(first)}`
        : `Start ${names(first)}; prepare the others and start them once it is healthy`;
  // The nodes started first always run, beside up to maxParallel of the others.
  await progress.phase(title, [...first.map((w) => start(w, 'first')), ...rest.map((w) => start(w, 'rest'))], {
    concurrency: Math.max(session.inv.rollout.maxParallel, first.length + 1),
  });
}

/** Files, container, health gate. */
async function replaceNode(session: Session, w: NodeWork, report: (t: string) => void, prepared = false): Promise<void> {
  if (prepared) {
    report('starting the prepared container');
    await session.on(w.plan.node).exec(docker.start(containerName(session.inv)), { timeoutMs: 120_000 });
  } else {
    await ensureLayout(session, w.plan.node);
    await writeNodeFiles(session, w.plan);
    report('recreating the container');
    await composeUp(session, w.plan.node, w.facts.container.exists);
  }
  await waitHealthy(session, w.plan.node, { image: w.plan.image, report });
}

/** How often a drained node is asked whether requests are still in flight on it. */
export const IN_FLIGHT_POLL_MS = 250;

/**
 * After drainSeconds, a node drained from the managed balancers may still be answering requests it
 * took before: New API has no graceful shutdown, and an SSE stream of a chat completion can last
 * minutes. So the drain goes on until no connection to the server's port is established on any of
 * the nodes (nginx keeps none idle to them), at most until rollout.drainTimeoutSeconds after it
 * began. A node that cannot be asked (a host that stopped answering) counts as having none: the
 * step that follows finds out what is wrong with it. (With loadBalancer.type none, whatever balances
 * may hold idle connections open, so there drainSeconds alone is waited.)
 */
async function waitInFlight(session: Session, nodes: InventoryNode[], drainedAt: number, report: (text: string) => void, signal: AbortSignal): Promise<void> {
  const deadline = drainedAt + session.inv.rollout.drainTimeoutSeconds * 1000;
  const command = docker.inFlight(containerName(session.inv), CONTAINER_PORT);
  for (;;) {
    const counts = await Promise.all(
      nodes.map(async (n) => {
        const r = await session.on(n).exec(command, { allowFailure: true, timeoutMs: 10_000 }).catch(() => undefined);
        const count = Number(r?.stdout.trim());
        return Number.isInteger(count) && count > 0 ? count : 0;
      }),
    );
    const busy = nodes.map((n, i) => `${counts[i]} on ${n.name}`).filter((_, i) => counts[i]! > 0);
    if (busy.length === 0) return;
    if (session.clock.now() >= deadline) {
      report(`requests still in flight after ${session.inv.rollout.drainTimeoutSeconds} s (rollout.drainTimeoutSeconds): ${busy.join(', ')}; going on`);
      return;
    }
    report(`waiting for requests in flight: ${busy.join(', ')}`);
    await session.clock.sleep(IN_FLIGHT_POLL_MS, signal);
  }
}

async function stopContainer(session: Session, node: InventoryNode): Promise<void> {
  const flavor = await session.composeFlavor(node);
  await session.on(node).exec(compose.down(flavor, session.project, session.inv.cluster.dir), { allowFailure: true, timeoutMs: 120_000 });
}

/** Serving nodes, drained first; the batch is one unit: all of it moves, or all of it goes back. */
async function rollBatch(cx: StepContext, batch: NodeWork[]): Promise<void> {
  const { session, progress, balancer, state } = cx;
  const nodes = batch.map((w) => w.plan.node);
  const label = nodes.map((n) => n.name).join(', ');
  const drainSeconds = session.inv.rollout.drainSeconds;

  // A hook that takes the batch out of an external balancer runs before anything is touched.
  await hooks(cx, 'beforeDrain', batch);
  let stoppedWhileDraining = false;
  await progress.step(`Drain ${label} from the balancer`, async (report) => {
    if (!balancer.enabled) {
      report(session.inv.rollout.hooks.beforeDrain ? 'no balancer managed: the beforeDrain hook took the nodes out' : 'no balancer managed (loadBalancer.type: none): take the nodes out by hand, or set rollout.hooks');
      state.changed = true;
      await session.clock.sleep(drainSeconds * 1000, session.aborted);
      return;
    }
    balancer.set(nodes.map((n) => n.name), 'drained');
    state.changed = true;
    await balancer.apply();
    const drainedAt = session.clock.now();
    report(`waiting ${drainSeconds} s for in-flight requests`);
    try {
      const signal = AbortSignal.any([cx.stop, session.aborted]);
      await session.clock.sleep(drainSeconds * 1000, signal);
      await waitInFlight(session, nodes, drainedAt, report, signal);
    } catch {
      // Stopped while nothing but the balancer changed: undoing is putting the batch back.
      stoppedWhileDraining = true;
    }
  });
  if (stoppedWhileDraining) {
    await putBack(cx, nodes, label);
    throw new InterruptedError(`stopped before ${label} ${nodes.length === 1 ? 'was' : 'were'} recreated; ${nodes.length === 1 ? 'it is' : 'they are'} back in the balancer`);
  }

  try {
    await hooks(cx, 'beforeUpgrade', batch);
  } catch (e) {
    await putBack(cx, nodes, label);
    throw e;
  }
  const failures: { work: NodeWork; error: unknown }[] = [];
  await progress
    .phase(
      `Replace ${label}`,
      batch.map((w) => ({
        title: `Recreate ${w.plan.node.name} on ${tagOf(w.plan.image)}`,
        run: async (report) => {
          try {
            await replaceNode(session, w, report);
          } catch (e) {
            failures.push({ work: w, error: e });
            throw e;
          }
        },
      })),
      { concurrency: batch.length },
    )
    .catch(() => undefined);

  if (failures.length === 0) {
    await hooks(cx, 'afterUpgrade', batch).catch((e: unknown) => {
      // The hook's failure fails the batch: it goes back like one that failed its gate.
      failures.push({ work: batch[0]!, error: e });
    });
  }
  if (failures.length === 0) {
    // Recorded only once the whole batch passed: a batch that goes back leaves no node claiming the new version.
    for (const w of batch) {
      await recordState(session, w.files, w.plan.image, w.facts, state.operation);
      setOutcome(cx, w.plan.node, 'recreated', w.plan.image, w.plan.reasons.join(', '));
    }
  } else {
    await returnBatch(cx, batch, failures);
  }

  await putBack(cx, nodes.filter((n) => !state.excluded.has(n.name)), label, nodes.filter((n) => state.excluded.has(n.name)));
  if (failures.length === 0) await hooks(cx, 'afterReady', batch);
  else await hooks(cx, 'afterReady', batch.filter((w) => !state.excluded.has(w.plan.node.name))).catch(() => undefined);
  if (failures.length > 0) {
    const first = failures[0]!;
    const stranded = nodes.filter((n) => state.excluded.has(n.name)).map((n) => n.name);
    const lost = nodes.filter((n) => state.outcomes.get(n.name)?.action === 'lost').map((n) => n.name);
    throw new CliError(`${first.work.plan.node.name}: ${errorMessage(first.error).replace(/^[^:]+: /, '')}`, {
      node: first.work.plan.node.name,
      hint: stranded.length
        ? `${stranded.join(', ')} ${stranded.length === 1 ? 'is' : 'are'} out of the balancer${lost.length ? ` (${lost.join(', ')}: the host does not answer)` : ' (could not return to the previous version)'}; the other nodes keep serving. Once the host is back, run the command again; see newapi-cluster status`
        : `the batch (${label}) was returned to its previous version and is serving; fix the cause, then run the command again`,
    });
  }
}

/** Every node of a failed batch goes back to what it had before this run, unless its host is gone. */
async function returnBatch(cx: StepContext, batch: NodeWork[], failures: { work: NodeWork; error: unknown }[]): Promise<void> {
  const { session, progress, state } = cx;
  const label = names(batch);
  await progress
    .phase(
      `Roll back ${label}`,
      batch.map((w) => ({
        title: `Return ${w.plan.node.name} to ${w.facts.container.image ?? 'its previous files'}`,
        run: async (report) => {
          const node = w.plan.node;
          const failed = failures.find((f) => f.work === w);
          if (failed && failed.error instanceof HostUnreachableError) {
            state.excluded.add(node.name);
            setOutcome(cx, node, 'lost', undefined, errorMessage(failed.error));
            report('the host does not answer: left out of the balancer');
            return;
          }
          try {
            await restoreNode(session, w, report);
            setOutcome(cx, node, 'rolled-back', w.facts.container.image, failed ? errorMessage(failed.error) : 'rolled back with its batch');
            await audit(session, node, state.operation, { from: w.plan.image, to: w.facts.container.image, result: 'rolled back' }).catch(() => undefined);
          } catch (e) {
            state.excluded.add(node.name);
            setOutcome(cx, node, e instanceof HostUnreachableError ? 'lost' : 'failed', undefined, `could not return to the previous version: ${errorMessage(e)}`);
            throw e;
          }
        },
      })),
      { concurrency: batch.length },
    )
    .catch(() => undefined);
}

/** Back to what the node had before this run: its files and its container. */
async function restoreNode(session: Session, w: NodeWork, report: (t: string) => void): Promise<void> {
  const ex = session.on(w.plan.node);
  const before = w.facts.files;
  const hadFiles = Object.values(before).every((c) => c !== undefined);
  if (!hadFiles || !w.facts.container.exists) {
    report('stopping the new container');
    await stopContainer(session, w.plan.node);
    return;
  }
  for (const file of [w.files.compose, w.files.env]) {
    const content = before[file.path];
    if (content !== undefined) await ex.upload(file.path, content, file.mode);
  }
  report('recreating the container on its previous files');
  await composeUp(session, w.plan.node, true);
  await waitHealthy(session, w.plan.node, { image: w.facts.container.image ?? w.plan.image, report });
}

/** Healthy nodes back in; nodes that cannot serve (failed, lost) out of the upstream altogether. */
async function putBack(cx: StepContext, nodes: InventoryNode[], label: string, out: InventoryNode[] = []): Promise<void> {
  await cx.progress.step(`Put ${label} back in the balancer`, async (report) => {
    if (!cx.balancer.enabled) return;
    cx.balancer.set(nodes.map((n) => n.name), 'in');
    cx.balancer.set(out.map((n) => n.name), 'out');
    await cx.balancer.apply();
    if (out.length > 0) report(`${out.map((n) => n.name).join(', ')} left out`);
  });
}

/** Nodes an earlier run left out, right as they are: gate them, then put them back. */
async function readmit(cx: StepContext, work: NodeWork[], admit: boolean): Promise<void> {
  cx.state.changed = true;
  await cx.progress.phase(
    `Put back ${names(work)} (left out of the balancer by an earlier run)`,
    work.map((w) => ({
      title: `Health-gate ${w.plan.node.name} and put it back`,
      run: async (report) => {
        const node = w.plan.node;
        try {
          await waitHealthy(cx.session, node, { image: w.facts.container.image ?? w.plan.image, report });
        } catch (e) {
          cx.state.excluded.add(node.name);
          setOutcome(cx, node, e instanceof HostUnreachableError ? 'lost' : 'failed', w.facts.container.image, errorMessage(e));
          throw e;
        }
        // An earlier run may have recreated it and stopped before recording it (a lost lock, a
        // stop): what it runs now is recorded, so releases and rollback see it.
        if (!recorded(w)) await recordState(cx.session, w.files, w.plan.image, w.facts, cx.state.operation);
        if (admit && cx.balancer.enabled) {
          cx.balancer.set([node.name], 'in');
          await cx.balancer.apply();
        }
        setOutcome(cx, node, 'readmitted', w.facts.container.image, 'healthy; back in the balancer');
      },
    })),
    { concurrency: cx.session.inv.rollout.maxParallel },
  );
}

async function updateBalancer(cx: StepContext): Promise<void> {
  const { balancer, session, state } = cx;
  if (!balancer.enabled) {
    // An external balancer: nodes added without admission (add-node) go in through the hook.
    for (const o of [...state.outcomes.values()].filter((x) => x.action === 'started' && !state.ready?.has(x.node))) {
      const node = session.node(o.node);
      if (node) await cx.progress.step(`Run the afterReady hook for ${node.name}`, (report) => runHook(session, 'afterReady', node, o.image ?? session.inv.cluster.image, report));
    }
    return;
  }
  await cx.progress.step('Update the balancer', async (report) => {
    // Only nodes this run gated go in; a node an earlier run left out stays out unless this run proved it healthy.
    const gated = session.inv.nodes.filter((n) => ['started', 'readmitted', 'recreated'].includes(state.outcomes.get(n.name)?.action ?? '') && !state.excluded.has(n.name));
    balancer.set(
      gated.map((n) => n.name),
      'in',
    );
    balancer.set(state.excluded, 'out');
    const pushes = balancer.pushes;
    // The certificate goes up before any file that names it (ensureCertificate then pushes the
    // map): a balancer that lost it gets it back, and no other ever runs a file without HTTPS.
    const certificate = session.inv.loadBalancer.tls ? await ensureCertificate(session, balancer, report) : false;
    await balancer.apply();
    const changed = balancer.pushes > pushes || certificate;
    if (await ensureVrrp(session, cx.templates, report)) state.changed = true;
    // Nodes admitted as they passed their gates already changed it during this run.
    state.balancerChanged = balancer.pushes > 0 || certificate;
    if (changed) state.changed = true;
    report(changed ? 'nginx -t passed, reloaded' : 'unchanged');
  });
}

/** A hook for every node of a batch, in rollout order, inside a step of its own. */
async function hooks(cx: StepContext, name: HookName, batch: NodeWork[]): Promise<void> {
  if (!cx.session.inv.rollout.hooks[name] || batch.length === 0) return;
  for (const w of batch) {
    await cx.progress.step(`Run the ${name} hook for ${w.plan.node.name}`, (report) => runHook(cx.session, name, w.plan.node, w.plan.image, report));
  }
}

async function removeNode(cx: StepContext, node: InventoryNode, purge: boolean): Promise<void> {
  const { session, progress, balancer, state } = cx;
  const inv = session.inv;
  if (purge) await verifyOurs(session, node);
  await progress.step(`Run the beforeDrain hook for ${node.name}`, (report) => runHook(session, 'beforeDrain', node, inv.cluster.image, report));
  state.changed = true;
  await progress.step(`Drain ${node.name} from the balancer`, async (report) => {
    if (!balancer.enabled) return report('no balancer managed: take the node out by hand');
    balancer.set([node.name], 'drained');
    await balancer.apply();
    const drainedAt = session.clock.now();
    report(`waiting ${inv.rollout.drainSeconds} s for in-flight requests`);
    await session.clock.sleep(inv.rollout.drainSeconds * 1000, session.aborted);
    await waitInFlight(session, [node], drainedAt, report, session.aborted);
  });
  setOutcome(cx, node, 'drained', undefined, 'drained, still running');
  const ex = session.on(node);
  await progress.step(`Stop ${node.name}`, async () => {
    const flavor = await session.composeFlavor(node);
    const down = await ex.exec(compose.down(flavor, session.project, inv.cluster.dir), { allowFailure: true, timeoutMs: 120_000 });
    if (down.code !== 0 && !/no such file|not found|No such/i.test(down.stderr)) {
      throw new CliError(`could not stop the container: ${down.stderr.trim().split('\n').pop()}`, { node: node.name, hint: 'the node is drained but still running; stop it by hand or run the command again' });
    }
    state.excluded.add(node.name);
    setOutcome(cx, node, 'removed', undefined, purge ? `stopped; ${inv.cluster.dir} removed` : `stopped; its files stay under ${inv.cluster.dir} (--purge removes them)`);
    await audit(session, node, state.operation, { result: 'stopped and removed from the cluster' }).catch(() => undefined);
    if (purge) {
      const r = await ex.exec(files.purgeIfOurs(inv.cluster.dir, session.project), { allowFailure: true, timeoutMs: 120_000 });
      if (r.code !== 0) {
        throw new CliError(`did not remove ${inv.cluster.dir}: ${r.stderr.trim().split('\n').pop()}`, {
          node: node.name,
          hint: `the node is stopped; ${inv.cluster.dir} holds no state.json of cluster ${session.project}, so it was left alone: remove it by hand if it is really ours`,
        });
      }
    }
  });
}

/** --purge removes cluster.dir only where our state.json says this cluster deployed: checked before anything moves. */
async function verifyOurs(session: Session, node: InventoryNode): Promise<void> {
  const dir = session.inv.cluster.dir;
  const state = parseState((await session.on(node).readFile(statePaths(dir).state))?.toString('utf8'));
  if (state?.cluster !== session.project) {
    throw new CliError(`--purge: ${dir} on ${node.name} holds no state.json of cluster ${session.project}; nothing was changed`, {
      node: node.name,
      hint: `remove the node without --purge, then check ${dir} on the host by hand`,
    });
  }
}

/** Whether state.json already records exactly what the node runs. */
function recorded(w: NodeWork): boolean {
  const state = w.facts.state;
  if (!state || state.image !== w.plan.image) return false;
  return [w.files.compose, w.files.env].every((f) => state.files[f.path.split('/').pop()!] === sha256(f.content));
}

/** A backup right before the migrations: named in the report, and how to restore it. */
async function backupBeforeMigrate(cx: StepContext, image: string): Promise<void> {
  const { runBackup } = await import('./backup.js');
  const { relative } = await import('node:path');
  const b = await runBackup(cx.session.env, cx.session.loaded, { noLogs: false, automatic: true, session: cx.session });
  const shown = relative(process.cwd(), b.path) || b.path;
  cx.state.backup = shown;
  cx.state.notes.push(`database backup taken before the ${tagOf(image)} migrations: ${shown} (to return to it: newapi-cluster restore ${shown})`);
}

/** Maintenance: the balancer answers 503 with a JSON body; off: every started node goes back in. */
async function maintenance(cx: StepContext, on: boolean): Promise<void> {
  const { balancer, session, state } = cx;
  await cx.progress.step(on ? 'Put the balancer in maintenance (503 with a JSON body)' : 'Re-open the balancer', async (report) => {
    if (!balancer.enabled) {
      report('no balancer managed (loadBalancer.type: none): requests fail while the nodes are stopped');
      return;
    }
    state.changed = true;
    if (on) {
      balancer.maintenance = true;
      await balancer.apply();
      state.downSince = session.clock.now();
      return;
    }
    balancer.maintenance = false;
    balancer.set(
      session.inv.nodes.filter((n) => !state.excluded.has(n.name)).map((n) => n.name),
      'in',
    );
    await balancer.apply();
    if (state.downSince !== undefined) {
      const seconds = (session.clock.now() - state.downSince) / 1000;
      state.notes.push(`downtime: ${seconds.toFixed(1)} s (the balancer answered 503 with a JSON body meanwhile)`);
      report(`open again after ${seconds.toFixed(1)} s`);
    }
  });
}

async function stopNodes(cx: StepContext, nodes: InventoryNode[]): Promise<void> {
  const { session, state } = cx;
  state.changed = true;
  await cx.progress.phase(
    `Stop ${nodes.map((n) => n.name).join(', ')}`,
    nodes.map((node) => ({
      title: `Stop ${node.name}`,
      run: async () => {
        const flavor = await session.composeFlavor(node);
        await session.on(node).exec(compose.stop(flavor, session.project, session.inv.cluster.dir), { timeoutMs: 120_000 });
        state.excluded.add(node.name);
        setOutcome(cx, node, 'stopped', undefined, 'stopped for the restore');
      },
    })),
    { concurrency: session.inv.rollout.maxParallel },
  );
}

async function restoreDatabaseStep(cx: StepContext, path: string, file: string): Promise<void> {
  const { session } = cx;
  const { parseDatabaseDsn } = await import('../inventory/dsn.js');
  const { restoreDatabase } = await import('../probes/mysql-dump.js');
  const { tunnelServer } = await import('../remote/ssh.js');
  const { createReadStream } = await import('node:fs');
  const { createGunzip } = await import('node:zlib');
  const dsn = parseDatabaseDsn(session.inv.database.dsn);
  await cx.progress.step(`Restore the database from ${file}`, async (report) => {
    const tunnel = await tunnelServer(session.on(session.master), dsn.host, dsn.port);
    try {
      let last = 0;
      await restoreDatabase({ ...dsn, host: '127.0.0.1', port: tunnel.port }, createReadStream(path).pipe(createGunzip()), {
        signal: session.aborted,
        onProgress: ({ bytes }) => {
          if (session.clock.now() - last < 2_000) return;
          last = session.clock.now();
          report(`${(bytes / 1e6).toFixed(1)} MB of SQL loaded`);
        },
      });
    } finally {
      await tunnel.close();
    }
  });
}

/** Releases and images older than rollout.keepReleases; never the running one, never one still kept. */
async function pruneStep(cx: StepContext, nodes: InventoryNode[]): Promise<void> {
  const { pruneNode } = await import('./prune.js');
  await cx.progress.step('Remove old releases and images', async (report) => {
    const results = await mapLimit(nodes, cx.session.inv.rollout.maxParallel, (n) => pruneNode(cx.session, n).catch(() => ({ releases: [], images: [] })));
    const releases = results.reduce((a, r) => a + r.releases.length, 0);
    const images = results.reduce((a, r) => a + r.images.length, 0);
    report(`${releases} release folder${releases === 1 ? '' : 's'} and ${images} image${images === 1 ? '' : 's'} removed`);
  });
}
