/**
 * `upgrade --rolling --to V` and `rollback`: every node moves slave-first, batch by batch, each
 * drained, recreated, gated and put back; the master last. A batch that fails is returned to
 * its previous version and the run stops, the cluster serving throughout.
 */
import { dirname } from 'node:path';
import type { CliContext } from '../cli/context.js';
import { CliError, InputError, InterruptedError, errorMessage } from '../errors.js';
import { parseImageRef, withTag } from '../inventory/image.js';
import type { LoadedInventory } from '../inventory/load.js';
import type { Inventory } from '../inventory/schema.js';
import { planNode } from '../plan/plan.js';
import { parseState, statePaths } from '../plan/state.js';
import { mapLimit } from '../remote/limit.js';
import { renderCluster, type NodeFiles } from '../render/render.js';
import { loadTemplates } from '../render/templates.js';
import { makeProgress, type Progress } from '../ui/progress.js';
import { Balancer } from './balancer.js';
import { ensureImages, plan, preflight, printSummary } from './deploy.js';
import { setInventoryImage } from './inventory-edit.js';
import { ClusterLock } from './lock.js';
import { runMigrations } from './migrate.js';
import { gatherFacts } from './node-files.js';
import { batchesOf, rollNodes, type NodeWork, type RolloutState } from './rollout.js';
import { Session } from './session.js';

export interface UpgradeOptions {
  to: string;
  batch: number | string | undefined;
  dryRun: boolean;
}

const VERSION_RE = /^v?\d+\.\d+(\.\d+)?([.-][A-Za-z0-9.-]+)?$/;

export function parseBatch(value: string | undefined): number | string | undefined {
  if (value === undefined) return undefined;
  if (/^([1-9][0-9]?|100)%$/.test(value)) return value;
  const n = Number(value);
  if (Number.isInteger(n) && n >= 1) return n;
  throw new InputError(`--batch: "${value}" is not a number of nodes or a percentage`, 'e.g. --batch 2 or --batch 25%');
}

export function verifyVersion(to: string): void {
  if (!VERSION_RE.test(to)) throw new InputError(`--to: "${to}" is not a version`, 'name the version to upgrade to, e.g. --to v0.9.21 (not latest)');
}

export async function runUpgrade(ctx: CliContext, loaded: LoadedInventory, opts: UpgradeOptions): Promise<void> {
  const inv = withRollout(loaded.inventory, opts.batch);
  const image = withTag(inv.cluster.image, opts.to);
  const templates = await loadTemplates(inv.templates, dirname(loaded.path));
  const rendered = renderCluster(inv, templates, { imageOf: () => image });
  await runRolling(ctx, { ...loaded, inventory: inv }, {
    operation: `upgrade --rolling --to ${opts.to}`,
    dryRun: opts.dryRun,
    migrateImage: inv.rollout.migrateFirst ? image : undefined,
    templates,
    makeWork: async (session, progress) => ({ work: await plan(session, progress, rendered, inv.nodes, image), finalImage: image }),
  });
}

export async function runRollback(ctx: CliContext, loaded: LoadedInventory, opts: { dryRun: boolean }): Promise<void> {
  const inv = loaded.inventory;
  const templates = await loadTemplates(inv.templates, dirname(loaded.path));
  await runRolling(ctx, loaded, {
    operation: 'rollback',
    dryRun: opts.dryRun,
    migrateImage: undefined,
    templates,
    makeWork: async (session, progress) => {
      let work: NodeWork[] = [];
      await progress.step('Read the previous deploy of each node', async () => {
        work = await mapLimit(inv.nodes, inv.rollout.maxParallel, (node) => previousWork(session, node));
      });
      // The inventory can name one image only: it is updated when every node returns to the same one.
      const images = new Set(work.map((w) => w.plan.image));
      return { work, finalImage: images.size === 1 ? [...images][0] : undefined };
    },
  });
}

/** The node's previous good files (kept by the last deploy) as the files to roll to. */
async function previousWork(session: Session, node: Inventory['nodes'][number]): Promise<NodeWork> {
  const ex = session.on(node);
  const dir = session.inv.cluster.dir;
  const paths = statePaths(dir);
  const [compose, env, stateText] = await Promise.all([
    ex.readFile(`${paths.previous}/docker-compose.yml`),
    ex.readFile(`${paths.previous}/.env`),
    ex.readFile(`${paths.previous}/state.json`),
  ]);
  const previous = parseState(stateText?.toString('utf8'));
  if (!compose || !env || !previous) {
    throw new CliError(`${node.name} has no previous deploy to return to`, { node: node.name, hint: 'rollback needs a node deployed at least twice by newapi-cluster' });
  }
  const files: NodeFiles = {
    node,
    compose: { path: `${dir}/docker-compose.yml`, content: compose.toString('utf8'), mode: 0o644, secret: false },
    env: { path: `${dir}/.env`, content: env.toString('utf8'), mode: 0o600, secret: true },
  };
  const facts = await gatherFacts(session, files, previous.image);
  return { files, facts, plan: planNode(files, facts, previous.image) };
}

interface RollingSpec {
  operation: string;
  dryRun: boolean;
  /** Run this image once in master mode before any slave moves. */
  migrateImage: string | undefined;
  templates: Awaited<ReturnType<typeof loadTemplates>>;
  /** The nodes' work, and the image written into the inventory's cluster.image on success. */
  makeWork: (session: Session, progress: Progress) => Promise<{ work: NodeWork[]; finalImage: string | undefined }>;
}

async function runRolling(ctx: CliContext, loaded: LoadedInventory, spec: RollingSpec): Promise<void> {
  const inv = loaded.inventory;
  const session = await Session.open(ctx, loaded);
  const progress = await makeProgress(ctx);
  let lock: ClusterLock | undefined;
  const state: RolloutState = { excluded: new Set(), outcomes: new Map(), operation: spec.operation };
  try {
    if (!spec.dryRun) {
      await progress.step(`Take the lock on cluster ${inv.cluster.name}`, async () => {
        lock = await ClusterLock.acquire(session, spec.operation);
      });
    }
    await preflight(session, progress, inv.nodes);
    const { work, finalImage } = await spec.makeWork(session, progress);
    const moving = work.filter((w) => w.plan.restart);
    const slaves = moving.filter((w) => w.plan.node.role !== 'master');
    const master = moving.filter((w) => w.plan.node.role === 'master');
    const batches = [...batchesOf(slaves, inv.rollout.batchSize), ...(master.length ? [master] : [])];
    for (const w of work) {
      if (!w.plan.restart) state.outcomes.set(w.plan.node.name, { node: w.plan.node.name, action: 'unchanged', image: w.plan.image, detail: 'already there' });
    }

    if (spec.dryRun) {
      printSchedule(ctx, spec, work, batches);
      return;
    }
    if (moving.length === 0) {
      ctx.out.print(`${ctx.style.green('✔')} every node already runs ${finalImage ?? 'the target'}; nothing to do`);
      await updateInventory(ctx, loaded, finalImage);
      return;
    }
    await ensureImages(session, progress, moving);
    lock!.verify();
    ctx.signal.throwIfAborted();
    const migrateImage = spec.migrateImage;
    if (migrateImage) {
      await progress.step(`Run the ${parseImageRef(migrateImage).tag ?? migrateImage} migrations once on ${session.master.name}`, (report) => runMigrations(session, migrateImage, report));
    }
    const balancer = new Balancer(session, spec.templates);
    await rollNodes(session, balancer, batches, progress, state, { signal: ctx.signal, beforeBatch: () => lock!.verify() });
    await updateInventory(ctx, loaded, finalImage);
    printSummary(ctx, state.outcomes, undefined, spec.operation.split(' ')[0] === 'rollback' ? 'rolled back' : 'upgraded');
  } catch (e) {
    if (state.outcomes.size > 0) reportWhereThingsStand(ctx, state, inv);
    if (ctx.signal.aborted && !(e instanceof CliError && e.exitCode !== 130)) {
      throw new InterruptedError(`interrupted: ${spec.operation} stopped between batches; every node is in the balancer`);
    }
    throw e;
  } finally {
    await lock?.release().catch(() => undefined);
    await session.close();
  }
}

function withRollout(inv: Inventory, batch: number | string | undefined): Inventory {
  return batch === undefined ? inv : { ...inv, rollout: { ...inv.rollout, batchSize: batch } };
}

function printSchedule(ctx: CliContext, spec: RollingSpec, work: NodeWork[], batches: NodeWork[][]): void {
  const { out } = ctx;
  const steps: string[] = [];
  const needImage = work.filter((w) => w.plan.restart && w.plan.pullImage).map((w) => w.plan.node.name);
  if (needImage.length) steps.push(`make the image present on ${needImage.join(', ')} (in parallel)`);
  if (spec.migrateImage && batches.length) steps.push(`run ${spec.migrateImage} once in master mode on the master (migrations), loopback only`);
  batches.forEach((b, i) => steps.push(`batch ${i + 1}: drain ${b.map((w) => w.plan.node.name).join(', ')}, wait, recreate on ${b[0]?.plan.image}, health-gate, put back`));
  if (out.json) {
    out.printJson({ ok: true, dryRun: true, operation: spec.operation, steps, batches: batches.map((b) => b.map((w) => w.plan.node.name)) });
    return;
  }
  out.print(`${spec.operation} — schedule (dry run, nothing changed):`);
  steps.forEach((s, i) => out.print(`  ${i + 1}. ${s}`));
  for (const w of work.filter((x) => !x.plan.restart)) out.print(`  ${w.plan.node.name}: already on ${w.plan.image}, untouched`);
}

function reportWhereThingsStand(ctx: CliContext, state: RolloutState, inv: Inventory): void {
  const rows = inv.nodes.map((n) => {
    const o = state.outcomes.get(n.name);
    return `  ${n.name}: ${o ? `${o.action}${o.image ? ` (${o.image})` : ''}` : 'not reached (still on its previous version)'}${state.excluded.has(n.name) ? ' — OUT of the balancer' : ''}`;
  });
  if (ctx.out.json) return;
  ctx.out.note('Where things stand:');
  for (const r of rows) ctx.out.note(r);
}

async function updateInventory(ctx: CliContext, loaded: LoadedInventory, image: string | undefined): Promise<void> {
  if (!image || image === loaded.inventory.cluster.image) return;
  try {
    const changed = await setInventoryImage(loaded, image);
    if (changed) ctx.out.log(`updated cluster.image in ${loaded.path} to ${image}`);
    else ctx.out.note(`cluster.image comes from a variable: set it to ${image} yourself, or the next deploy will move the cluster back`);
  } catch (e) {
    ctx.out.note(`could not update ${loaded.path}: ${errorMessage(e)} — set cluster.image to ${image} by hand`);
  }
}
