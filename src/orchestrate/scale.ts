/**
 * `scale add-node` / `scale remove-node`. A new node is checked, deployed and health-gated
 * before the balancer sends it anything; a leaving node is drained before it stops. The
 * inventory is edited in place, its comments and layout kept, and validated in full (as edited)
 * before anything else happens.
 */
import { readFile } from 'node:fs/promises';
import { dirname } from 'node:path';
import { InputError } from '../errors.js';
import { addNode, removeNode, type NewNodeEntry } from '../inventory/edit.js';
import { parseInventory, type LoadedInventory } from '../inventory/load.js';
import { rolloutSteps, type Plan } from '../plan/steps.js';
import { renderCluster } from '../render/render.js';
import { loadTemplates } from '../render/templates.js';
import type { RunEnv } from './run-env.js';
import { runOperation } from './runner.js';
import { gatherWork } from './work.js';

/** The inventory as it would be with the edit: validated in full before anything else happens. */
function reparse(loaded: LoadedInventory, text: string): LoadedInventory {
  // The same variables the first load resolved: the edit adds none.
  return parseInventory(text, { file: loaded.path, path: loaded.path, lookup: loaded.lookup });
}

export async function runAddNode(env: RunEnv, loaded: LoadedInventory, entry: NewNodeEntry): Promise<void> {
  const edited = addNode(await readFile(loaded.path, 'utf8'), entry);
  const next = reparse(loaded, edited);
  const inv = next.inventory;
  const node = inv.nodes.find((n) => n.name === entry.name)!;
  const templates = await loadTemplates(inv.templates, dirname(loaded.path));
  const rendered = renderCluster(inv, templates);
  const command = `scale add-node ${node.name}`;
  await runOperation(env, next, {
    command,
    dryRun: false,
    templates,
    plan: async (session, progress, balancer): Promise<Plan> => {
      const work = await gatherWork(session, progress, balancer, rendered.nodes.filter((f) => f.node === node), () => inv.cluster.image);
      return {
        operation: command,
        verb: 'added',
        work,
        // The inventory names the node from the moment the balancer does, not before.
        steps: rolloutSteps({ work, batchSize: 1, balancer: true, admitStarted: false, inventory: { what: `add ${node.name}`, text: edited }, pullWithStart: inv.images.transfer === 'pull' }),
        warnings: [],
      };
    },
  });
}

export async function runRemoveNode(env: RunEnv, loaded: LoadedInventory, opts: { name: string; purge: boolean }): Promise<void> {
  const node = loaded.inventory.nodes.find((n) => n.name === opts.name);
  if (!node) throw new InputError(`no node named "${opts.name}" in the inventory`, `known nodes: ${loaded.inventory.nodes.map((n) => n.name).join(', ')}`);
  if (node.role === 'master') throw new InputError(`${opts.name} is the master and cannot be removed`, 'make another node the master first (edit the inventory, then deploy)');
  const edited = removeNode(await readFile(loaded.path, 'utf8'), opts.name);
  reparse(loaded, edited);
  const inv = loaded.inventory;
  const templates = await loadTemplates(inv.templates, dirname(loaded.path));
  const command = `scale remove-node ${opts.name}${opts.purge ? ' --purge' : ''}`;
  await runOperation(env, loaded, {
    command,
    dryRun: false,
    templates,
    plan: async (_session, _progress, balancer): Promise<Plan> => {
      await balancer.read();
      return {
        operation: command,
        verb: 'removed',
        work: [],
        steps: [
          { kind: 'remove', node, purge: opts.purge },
          { kind: 'inventory', what: `remove ${node.name}`, text: edited },
          { kind: 'balancer' },
        ],
        warnings: [],
      };
    },
  });
}
