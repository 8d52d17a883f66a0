/**
 * `deploy`: converge the cluster to the inventory. Gather facts → plan → (dry run stops here)
 * → images everywhere first → nodes that serve nothing yet (the master alone first, so its
 * migrations run before any slave starts) → serving nodes rolled with draining → balancer →
 * summary. Nothing changed means nothing restarted.
 */
import { dirname } from 'node:path';
import type { CliContext } from '../cli/context.js';
import { CliError, InputError } from '../errors.js';
import type { LoadedInventory } from '../inventory/load.js';
import type { InventoryNode } from '../inventory/schema.js';
import { fileDiff } from '../plan/diff.js';
import { isNoop, planNode } from '../plan/plan.js';
import type { CheckResult } from '../probes/checks.js';
import { mapLimit } from '../remote/limit.js';
import { containerName, renderCluster, type ClusterFiles } from '../render/render.js';
import { getContainerState } from '../probes/container.js';
import { loadTemplates, type TemplateSources } from '../render/templates.js';
import { makeProgress, type Progress } from '../ui/progress.js';
import { Balancer } from './balancer.js';
import { runChecks } from './check.js';
import { ensureImage } from './images.js';
import { ClusterLock } from './lock.js';
import { runMigrations } from './migrate.js';
import { gatherFacts, recordState } from './node-files.js';
import { batchesOf, rollNodes, startNodes, type NodeOutcome, type NodeWork, type RolloutState } from './rollout.js';
import { Session } from './session.js';

export interface DeployOptions {
  dryRun: boolean;
  only: string[] | undefined;
}

export async function runDeploy(ctx: CliContext, loaded: LoadedInventory, opts: DeployOptions): Promise<void> {
  const inv = loaded.inventory;
  const targets = selectNodes(inv.nodes, opts.only);
  const templates = await loadTemplates(inv.templates, dirname(loaded.path));
  const rendered = renderCluster(inv, templates);

  const session = await Session.open(ctx, loaded);
  const progress = await makeProgress(ctx);
  let lock: ClusterLock | undefined;
  try {
    if (!opts.dryRun) {
      await progress.step(`Take the lock on cluster ${inv.cluster.name}`, async () => {
        lock = await ClusterLock.acquire(session, commandLine('deploy', opts));
      });
    }
    // Both only read: facts are gathered while the checks run, and used only if they pass.
    const planned = plan(session, progress, rendered, targets);
    planned.catch(() => undefined);
    await preflight(session, progress, targets);
    const work = await planned;
    const balancer = new Balancer(session, templates);
    if (opts.dryRun) {
      await printPlan(ctx, session, work, balancer);
      return;
    }
    const outcomes = await apply(session, progress, work, balancer, lock!, ctx.signal);
    printSummary(ctx, outcomes.outcomes, outcomes.balancerChanged);
    if (!balancer.enabled && !ctx.out.json) {
      // loadBalancer.type: none — the operator runs the balancer; this is what it should hold.
      ctx.out.print(`\n# nginx upstream for cluster ${inv.cluster.name} (loadBalancer.type: none, not pushed):`);
      ctx.out.print(balancer.render());
    }
  } finally {
    await lock?.release().catch(() => undefined);
    await session.close();
  }
}

/** `--only a b`, `--only a,b` or both. */
export function selectNodes(nodes: InventoryNode[], onlyArgs: string[] | undefined): InventoryNode[] {
  const only = onlyArgs?.flatMap((a) => a.split(',')).filter(Boolean);
  if (!only || only.length === 0) return nodes;
  const unknown = only.filter((n) => !nodes.some((node) => node.name === n));
  if (unknown.length > 0) {
    throw new InputError(`--only: no node named ${unknown.map((n) => `"${n}"`).join(', ')}`, `known nodes: ${nodes.map((n) => n.name).join(', ')}`);
  }
  return nodes.filter((n) => only.includes(n.name));
}

function commandLine(name: string, opts: DeployOptions): string {
  return [name, ...(opts.only?.length ? ['--only', ...opts.only] : [])].join(' ');
}

/** Aborts before any host changes when a check fails. */
export async function preflight(session: Session, progress: Progress, nodes: InventoryNode[]): Promise<CheckResult[]> {
  let results: CheckResult[] = [];
  await progress.step('Run pre-flight checks', async (report) => {
    results = await runChecks(session, { preflight: true, nodes });
    const failed = results.filter((r) => r.status === 'fail');
    report(`${results.length - failed.length} of ${results.length} passed`);
    if (failed.length > 0) {
      const first = failed[0]!;
      throw new CliError(
        `pre-flight failed, nothing was changed: ${failed.map((f) => `${f.node} ${f.check}: ${f.detail}`).join('; ')}`,
        { hint: first.hint ?? 'run newapi-cluster check for the full report' },
      );
    }
  });
  return results;
}

export async function plan(
  session: Session,
  progress: Progress,
  rendered: ClusterFiles,
  targets: InventoryNode[],
  image = session.inv.cluster.image,
): Promise<NodeWork[]> {
  let work: NodeWork[] = [];
  await progress.step('Compare rendered files with each host', async () => {
    const files = rendered.nodes.filter((f) => targets.includes(f.node));
    work = await mapLimit(files, session.inv.rollout.maxParallel, async (f) => {
      const facts = await gatherFacts(session, f, image);
      return { files: f, facts, plan: planNode(f, facts, image) };
    });
  });
  return work;
}

export async function ensureImages(session: Session, progress: Progress, work: NodeWork[]): Promise<void> {
  await progress.phase(
    'Make the image present on every node',
    work
      .filter((w) => w.plan.pullImage && w.plan.restart)
      .map((w) => ({
        title: `Make ${w.plan.image} present on ${w.plan.node.name}`,
        run: async (report) => {
          report(await ensureImage(session, w.plan.node, w.plan.image, report));
        },
      })),
    { concurrency: session.inv.rollout.maxParallel },
  );
}

async function apply(
  session: Session,
  progress: Progress,
  work: NodeWork[],
  balancer: Balancer,
  lock: ClusterLock,
  signal: AbortSignal,
): Promise<{ outcomes: Map<string, NodeOutcome>; balancerChanged: boolean }> {
  const inv = session.inv;
  const state: RolloutState = {
    excluded: new Set(work.filter((w) => !w.plan.serving).map((w) => w.plan.node.name)),
    outcomes: new Map(),
    operation: 'deploy',
  };
  for (const w of work) {
    if (!w.plan.restart) state.outcomes.set(w.plan.node.name, { node: w.plan.node.name, action: 'unchanged', image: w.plan.image, detail: 'up to date' });
  }

  await ensureImages(session, progress, work);
  lock.verify();

  // New API runs migrations only on the master, at start-up: a slave must never start on a
  // version whose migrations have not run (issue #4144). A running master on another image
  // means a new version is coming: run its migrations first, as upgrade does.
  const masterWork = work.find((w) => w.plan.node.role === 'master');
  const masterContainer = masterWork?.facts.container ?? (await getContainerState(session.on(session.master), containerName(inv)));
  const image = inv.cluster.image;
  if (masterContainer.running && masterContainer.image !== image && inv.rollout.migrateFirst && work.some((w) => w.plan.restart)) {
    await progress.step(`Run the ${image} migrations once on ${session.master.name}`, (report) => runMigrations(session, image, report));
  }
  const fresh = work.filter((w) => w.plan.restart && !w.plan.serving);
  const freshMaster = fresh.filter((w) => w.plan.node.role === 'master');
  const freshSlaves = fresh.filter((w) => w.plan.node.role !== 'master');
  await startNodes(session, freshSlaves, progress, state, freshMaster);
  lock.verify();

  const serving = work.filter((w) => w.plan.restart && w.plan.serving);
  const slaves = serving.filter((w) => w.plan.node.role !== 'master');
  const master = serving.filter((w) => w.plan.node.role === 'master');
  const batches = [...batchesOf(slaves, inv.rollout.batchSize), ...(master.length ? [master] : [])];
  if (batches.length > 0) await rollNodes(session, balancer, batches, progress, state, { signal, beforeBatch: () => lock.verify() });

  // A node that was already right but never recorded (deployed by hand, say) gets its state.
  const unrecorded = work.filter((w) => !w.plan.restart && w.facts.state === undefined);
  await mapLimit(unrecorded, inv.rollout.maxParallel, (w) => recordState(session, w.files, w.plan.image, undefined, 'deploy'));

  let balancerChanged = false;
  if (balancer.enabled) {
    await progress.step('Update the balancer', async (report) => {
      balancerChanged = await balancer.push({ excluded: state.excluded });
      report(balancerChanged ? 'nginx -t passed, reloaded' : 'unchanged');
    });
  }
  return { outcomes: state.outcomes, balancerChanged };
}

async function printPlan(ctx: CliContext, session: Session, work: NodeWork[], balancer: Balancer): Promise<void> {
  const { out, style } = ctx;
  const current = await balancer.read();
  const next = balancer.render();
  const balancerChanged = balancer.enabled && current !== next;
  if (out.json) {
    out.printJson({
      ok: true,
      dryRun: true,
      nodes: work.map((w) => ({
        name: w.plan.node.name,
        restart: w.plan.restart,
        reasons: w.plan.reasons,
        pullImage: w.plan.pullImage,
        changedFiles: w.plan.changes.map((c) => c.file.path),
        diffs: w.plan.changes.map((c) => fileDiff(c.file.path, c.before, c.file.content, c.file.secret)),
      })),
      balancer: { changed: balancerChanged, diff: balancerChanged ? fileDiff(session.inv.loadBalancer.configPath, current, next, false) : undefined },
    });
    return;
  }
  for (const w of work) {
    const p = w.plan;
    out.print(style.bold(`${p.node.name} (${p.node.host})`));
    if (!p.restart && p.changes.length === 0) out.print('  no change');
    if (p.pullImage && p.restart) out.print(`  would make ${p.image} present (${session.inv.images.transfer})`);
    if (p.restart) out.print(`  would ${p.serving ? 'drain and recreate' : 'start'} the container: ${p.reasons.join(', ')}`);
    for (const c of p.changes) out.print(fileDiff(c.file.path, c.before, c.file.content, c.file.secret).trimEnd());
  }
  if (balancer.enabled) {
    out.print(style.bold(`balancer (${session.inv.loadBalancer.host})`));
    out.print(balancerChanged ? fileDiff(session.inv.loadBalancer.configPath, current, next, false).trimEnd() : '  no change');
  } else {
    out.print(style.bold('balancer: not managed (loadBalancer.type: none); the upstream would be:'));
    out.print(next);
  }
  out.print(isNoop(work.map((w) => w.plan), balancerChanged) ? `${style.green('✔')} dry run: nothing to change` : `dry run: nothing was changed`);
}

export function printSummary(ctx: CliContext, outcomes: Map<string, NodeOutcome>, balancerChanged: boolean | undefined, verb = 'deployed'): void {
  const { out, style } = ctx;
  const list = [...outcomes.values()];
  if (out.json) {
    out.printJson({ ok: true, nodes: list, ...(balancerChanged === undefined ? {} : { balancer: { changed: balancerChanged } }) });
    return;
  }
  for (const o of list) out.print(`  ${o.node}: ${o.action}${o.action === 'unchanged' ? '' : ` on ${o.image} (${o.detail})`}`);
  const changed = list.filter((o) => o.action !== 'unchanged').length;
  const balancer = balancerChanged === undefined ? '' : `, balancer ${balancerChanged ? 'reloaded' : 'unchanged'}`;
  out.print(`${style.green('✔')} ${verb}: ${changed} node${changed === 1 ? '' : 's'} changed, ${list.length - changed} unchanged${balancer}`);
}
