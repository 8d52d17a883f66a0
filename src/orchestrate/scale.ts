/**
 * `scale add-node` / `scale remove-node`. A new node is checked, deployed and health-gated
 * before the balancer sends it anything; a leaving node is drained before it stops. The
 * inventory is edited in place, its comments and layout kept.
 */
import { readFile } from 'node:fs/promises';
import { dirname } from 'node:path';
import type { CliContext } from '../cli/context.js';
import { CliError, InputError } from '../errors.js';
import { addNode, removeNode, type NewNodeEntry } from '../inventory/edit.js';
import { parseInventory, type LoadedInventory } from '../inventory/load.js';
import { compose, files } from '../remote/commands.js';
import { renderCluster } from '../render/render.js';
import { loadTemplates } from '../render/templates.js';
import { makeProgress } from '../ui/progress.js';
import { Balancer } from './balancer.js';
import { ensureImages, plan, preflight, printSummary } from './deploy.js';
import { sleep } from './health.js';
import { writeInventoryText } from './inventory-edit.js';
import { ClusterLock } from './lock.js';
import { audit } from './node-files.js';
import { startNodes, type RolloutState } from './rollout.js';
import { Session } from './session.js';

/** The inventory as it would be with the edit: validated in full before anything else happens. */
function reparse(loaded: LoadedInventory, text: string): LoadedInventory {
  // The same variables the first load resolved: the edit adds none.
  return parseInventory(text, { file: loaded.path, path: loaded.path, lookup: loaded.lookup });
}

export async function runAddNode(ctx: CliContext, loaded: LoadedInventory, entry: NewNodeEntry): Promise<void> {
  const original = await readFile(loaded.path, 'utf8');
  const edited = addNode(original, entry);
  const next = reparse(loaded, edited);
  const inv = next.inventory;
  const node = inv.nodes.find((n) => n.name === entry.name)!;
  const templates = await loadTemplates(inv.templates, dirname(loaded.path));
  const rendered = renderCluster(inv, templates);

  const session = await Session.open(ctx, next);
  const progress = await makeProgress(ctx);
  let lock: ClusterLock | undefined;
  const state: RolloutState = { excluded: new Set([node.name]), outcomes: new Map(), operation: `scale add-node ${node.name}` };
  try {
    await progress.step(`Take the lock on cluster ${inv.cluster.name}`, async () => {
      lock = await ClusterLock.acquire(session, state.operation);
    });
    await preflight(session, progress, [node]);
    const work = await plan(session, progress, rendered, [node]);
    await ensureImages(session, progress, work);
    lock!.verify();
    await startNodes(session, work, progress, state);
    lock!.verify();
    // The inventory names the node from the moment the balancer does.
    await writeInventoryText(loaded.path, edited);
    const balancer = new Balancer(session, templates);
    await progress.step(`Add ${node.name} to the balancer`, async (report) => {
      report((await balancer.push({})) ? 'nginx -t passed, reloaded' : 'unchanged');
    });
    printSummary(ctx, state.outcomes, true, 'added');
  } finally {
    await lock?.release().catch(() => undefined);
    await session.close();
  }
}

export async function runRemoveNode(ctx: CliContext, loaded: LoadedInventory, opts: { name: string; purge: boolean }): Promise<void> {
  const node = loaded.inventory.nodes.find((n) => n.name === opts.name);
  if (!node) throw new InputError(`no node named "${opts.name}" in the inventory`, `known nodes: ${loaded.inventory.nodes.map((n) => n.name).join(', ')}`);
  if (node.role === 'master') throw new InputError(`${opts.name} is the master and cannot be removed`, 'make another node the master first (edit the inventory, then deploy)');
  const original = await readFile(loaded.path, 'utf8');
  const edited = removeNode(original, opts.name);
  const next = reparse(loaded, edited);

  const inv = loaded.inventory;
  const templates = await loadTemplates(inv.templates, dirname(loaded.path));
  const session = await Session.open(ctx, loaded);
  const progress = await makeProgress(ctx);
  let lock: ClusterLock | undefined;
  try {
    await progress.step(`Take the lock on cluster ${inv.cluster.name}`, async () => {
      lock = await ClusterLock.acquire(session, `scale remove-node ${opts.name}${opts.purge ? ' --purge' : ''}`);
    });
    const balancer = new Balancer(session, templates);
    await progress.step(`Drain ${node.name} from the balancer`, async (report) => {
      if (!balancer.enabled) return report('no balancer managed: take the node out by hand');
      await balancer.push({ drained: new Set([node.name]) });
      report(`waiting ${inv.rollout.drainSeconds} s for in-flight requests`);
      await sleep(inv.rollout.drainSeconds * 1000);
    });
    lock!.verify();
    const ex = session.on(node);
    await progress.step(`Stop ${node.name}`, async () => {
      const flavor = await session.composeFlavor(node);
      const down = await ex.exec(compose.down(flavor, session.project, inv.cluster.dir), { allowFailure: true, timeoutMs: 120_000 });
      if (down.code !== 0 && !/no such file|not found|No such/i.test(down.stderr)) {
        throw new CliError(`could not stop the container: ${down.stderr.trim().split('\n').pop()}`, { node: node.name, hint: 'the node is drained but still running; stop it by hand or run the command again' });
      }
      await audit(session, node, `scale remove-node ${node.name}`, 'stopped and removed from the cluster').catch(() => undefined);
      if (opts.purge) await ex.exec(files.removeTree(inv.cluster.dir));
    });
    await writeInventoryText(loaded.path, edited);
    const after = new Balancer(new Session(ctx, next, session.pool), templates);
    await progress.step(`Remove ${node.name} from the balancer`, async (report) => {
      report((await after.push({})) ? 'nginx -t passed, reloaded' : 'unchanged');
    });
    if (ctx.out.json) ctx.out.printJson({ ok: true, removed: node.name, purged: opts.purge });
    else ctx.out.print(`${ctx.style.green('✔')} removed ${node.name}${opts.purge ? ` and its files under ${inv.cluster.dir}` : ` (its files stay under ${inv.cluster.dir}; --purge removes them)`}`);
  } finally {
    await lock?.release().catch(() => undefined);
    await session.close();
  }
}
