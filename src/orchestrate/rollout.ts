/**
 * Replacing running nodes without failing a request: batches of nodes are drained from the
 * balancer (marked `down`, reloaded), left to finish in-flight work for drainSeconds (New API has
 * no graceful shutdown and keeps batched quota in memory for batchUpdate.interval), recreated,
 * health-gated, and only then put back. A batch that fails its gate is returned to its previous
 * files and version, gated again, and put back, and the rollout stops there.
 */
import { CliError, errorMessage } from '../errors.js';
import type { NodeFacts, NodePlan } from '../plan/plan.js';
import { compose, docker } from '../remote/commands.js';
import { containerName } from '../render/render.js';
import type { NodeFiles } from '../render/render.js';
import type { Progress } from '../ui/progress.js';
import type { Balancer } from './balancer.js';
import { sleep, waitHealthy } from './health.js';
import { audit, composeCreate, composeUp, ensureLayout, recordState, writeNodeFiles } from './node-files.js';
import type { Session } from './session.js';

export interface NodeWork {
  files: NodeFiles;
  facts: NodeFacts;
  plan: NodePlan;
}

export interface NodeOutcome {
  node: string;
  action: 'unchanged' | 'started' | 'recreated' | 'rolled-back' | 'failed';
  image: string;
  detail: string;
}

export interface RolloutState {
  /** Nodes currently left out of the balancer (not yet healthy, or failed). */
  excluded: Set<string>;
  outcomes: Map<string, NodeOutcome>;
  operation: string;
}

/** Splits slaves into batches: `batchSize` nodes, or a percentage of them (at least one). */
export function batchesOf<T>(items: readonly T[], batchSize: number | string): T[][] {
  const size =
    typeof batchSize === 'number' ? batchSize : Math.max(1, Math.floor((items.length * Number(batchSize.replace('%', ''))) / 100));
  const out: T[][] = [];
  for (let i = 0; i < items.length; i += size) out.push(items.slice(i, i + size));
  return out;
}

/**
 * Nodes that serve no traffic yet: start them and gate them; no draining needed. With `first`
 * (the master on a first deploy), `first` starts alone — New API migrates only on the master,
 * and a slave must not meet an unmigrated schema (issue #4144) — while the others get their
 * files and a created (not started) container, so they only have to start afterwards.
 */
export async function startNodes(session: Session, work: NodeWork[], progress: Progress, state: RolloutState, first: NodeWork[] = []): Promise<void> {
  const start = (w: NodeWork, prepared: boolean) => ({
    title: `Start ${w.plan.node.name} on ${w.plan.image}`,
    run: async (report: (t: string) => void) => {
      try {
        await replaceNode(session, w, report, prepared);
        await recordState(session, w.files, w.plan.image, w.facts, state.operation);
        state.outcomes.set(w.plan.node.name, { node: w.plan.node.name, action: 'started', image: w.plan.image, detail: w.plan.reasons.join(', ') });
        state.excluded.delete(w.plan.node.name);
      } catch (e) {
        state.outcomes.set(w.plan.node.name, { node: w.plan.node.name, action: 'failed', image: w.plan.image, detail: errorMessage(e) });
        throw e;
      }
    },
  });
  const concurrency = session.inv.rollout.maxParallel;
  const prepared = new Set<NodeWork>();
  if (first.length > 0) {
    await progress.phase(
      `Start ${first.map((w) => w.plan.node.name).join(', ')} first${work.length ? '; prepare the others' : ''}`,
      [
        ...first.map((w) => start(w, false)),
        ...work.map((w) => ({
          title: `Prepare ${w.plan.node.name}: files and container, not started`,
          run: async () => {
            await prepareNode(session, w);
            prepared.add(w);
          },
        })),
      ],
      { concurrency: Math.max(concurrency, first.length + 1) },
    );
  }
  await progress.phase(
    work.length === 1 ? `Start ${work[0]!.plan.node.name}` : `Start ${work.length} nodes`,
    work.map((w) => start(w, prepared.has(w))),
    { concurrency },
  );
}

/** Serving nodes, batch by batch, each drained first. Checks for Ctrl-C between batches only. */
export async function rollNodes(
  session: Session,
  balancer: Balancer,
  batches: NodeWork[][],
  progress: Progress,
  state: RolloutState,
  opts: { signal?: AbortSignal; beforeBatch?: () => void } = {},
): Promise<void> {
  const drainMs = session.inv.rollout.drainSeconds * 1000;
  for (const batch of batches) {
    opts.signal?.throwIfAborted();
    opts.beforeBatch?.();
    const names = batch.map((w) => w.plan.node.name);
    const label = names.join(', ');
    await progress.step(`Drain ${label} from the balancer`, async (report) => {
      if (!balancer.enabled) {
        report('no balancer managed (loadBalancer.type: none): take the nodes out by hand');
        return;
      }
      await balancer.push({ drained: new Set(names), excluded: state.excluded });
      report(`waiting ${session.inv.rollout.drainSeconds} s for in-flight requests`);
      await sleep(drainMs);
    });

    const failures: { work: NodeWork; error: unknown }[] = [];
    await progressPhase(progress, batch, failures, (w, report) => replaceNode(session, w, report));
    if (failures.length === 0) {
      // Recorded only once the whole batch passed: a batch that goes back leaves no node claiming the new version.
      for (const w of batch) {
        await recordState(session, w.files, w.plan.image, w.facts, state.operation);
        state.outcomes.set(w.plan.node.name, { node: w.plan.node.name, action: 'recreated', image: w.plan.image, detail: w.plan.reasons.join(', ') });
      }
    }

    if (failures.length > 0) {
      // Every node of the batch goes back, not only the failed ones: a batch is one unit.
      await progress.phase(
        `Roll back ${label}`,
        batch.map((w) => ({
          title: `Return ${w.plan.node.name} to ${w.facts.container.image ?? 'its previous files'}`,
          run: async (report) => {
            await restoreNode(session, w, report);
            const failed = failures.find((f) => f.work === w);
            state.outcomes.set(w.plan.node.name, {
              node: w.plan.node.name,
              action: 'rolled-back',
              image: w.facts.container.image ?? 'none',
              detail: failed ? errorMessage(failed.error) : 'rolled back with its batch',
            });
            await audit(session, w.plan.node, state.operation, `rolled back to ${w.facts.container.image ?? 'previous files'}`);
          },
        })),
        { concurrency: batch.length },
      ).catch((e: unknown) => {
        // A node that cannot even return stays out of the balancer; the report says so.
        for (const w of batch) {
          if (state.outcomes.get(w.plan.node.name)?.action !== 'rolled-back') {
            state.excluded.add(w.plan.node.name);
            state.outcomes.set(w.plan.node.name, { node: w.plan.node.name, action: 'failed', image: 'unknown', detail: `rollback failed: ${errorMessage(e)}` });
          }
        }
      });
    }

    await progress.step(`Put ${label} back in the balancer`, async () => {
      if (balancer.enabled) await balancer.push({ excluded: state.excluded });
    });
    if (failures.length > 0) {
      const first = failures[0]!;
      const stranded = names.filter((n) => state.excluded.has(n));
      throw new CliError(`${first.work.plan.node.name}: ${errorMessage(first.error).replace(/^[^:]+: /, '')}`, {
        node: first.work.plan.node.name,
        hint: stranded.length
          ? `${stranded.join(', ')} could not return to the previous version and ${stranded.length === 1 ? 'is' : 'are'} out of the balancer; see newapi-cluster status and logs`
          : `the batch (${label}) was returned to its previous version and is serving; fix the cause, then run the command again`,
      });
    }
  }
}

async function progressPhase(
  progress: Progress,
  batch: NodeWork[],
  failures: { work: NodeWork; error: unknown }[],
  run: (w: NodeWork, report: (t: string) => void) => Promise<void>,
): Promise<void> {
  await progress
    .phase(
      `Replace ${batch.map((w) => w.plan.node.name).join(', ')}`,
      batch.map((w) => ({
        title: `Recreate ${w.plan.node.name} on ${w.plan.image}`,
        run: async (report) => {
          try {
            await run(w, report);
          } catch (e) {
            failures.push({ work: w, error: e });
            throw e;
          }
        },
      })),
      { concurrency: batch.length },
    )
    .catch(() => undefined);
}

/** Files, container, health gate. */
async function replaceNode(session: Session, w: NodeWork, report: (t: string) => void, prepared = false): Promise<void> {
  if (prepared) {
    report('starting the prepared container');
    await session.on(w.plan.node).exec(docker.start(containerName(session.inv)));
  } else {
    await ensureLayout(session, w.plan.node);
    await writeNodeFiles(session, w.plan);
    report('recreating the container');
    await composeUp(session, w.plan.node, w.facts.container.exists);
  }
  await waitHealthy(session, w.plan.node, { image: w.plan.image, report });
}

async function prepareNode(session: Session, w: NodeWork): Promise<void> {
  await ensureLayout(session, w.plan.node);
  await writeNodeFiles(session, w.plan);
  await composeCreate(session, w.plan.node);
}

/** Back to what the node had before this run: its files and its container. */
export async function restoreNode(session: Session, w: NodeWork, report: (t: string) => void): Promise<void> {
  const ex = session.on(w.plan.node);
  const before = w.facts.files;
  const hadFiles = Object.values(before).every((c) => c !== undefined);
  if (!hadFiles || !w.facts.container.exists) {
    // Nothing ran here before: stop what this run started.
    report('stopping the new container');
    const flavor = await session.composeFlavor(w.plan.node);
    await ex.exec(compose.down(flavor, session.project, session.inv.cluster.dir), { allowFailure: true });
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
