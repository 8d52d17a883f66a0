/**
 * `restore FILE`: put a verified backup back. The balancer answers 503 with a JSON body meanwhile
 * (clients see "maintenance", not a 502), every node stops (nothing writes to the database while
 * it is replaced), the database is restored, the nodes start on the version the backup was taken
 * from — the master first, alone, then the slaves, each health-gated — and the balancer opens
 * again. The downtime this caused is measured and printed.
 */
import { readFile } from 'node:fs/promises';
import { basename, dirname } from 'node:path';
import { InputError } from '../errors.js';
import { setScalar } from '../inventory/edit.js';
import type { LoadedInventory } from '../inventory/load.js';
import type { Plan } from '../plan/steps.js';
import { renderCluster } from '../render/render.js';
import { loadTemplates } from '../render/templates.js';
import { verifyBackup } from './backup.js';
import type { RunEnv } from './run-env.js';
import { runOperation } from './runner.js';
import { gatherWork } from './work.js';

export interface RestoreOptions {
  file: string;
  yes: boolean;
  dryRun: boolean;
}

export async function runRestore(env: RunEnv, loaded: LoadedInventory, opts: RestoreOptions): Promise<void> {
  const inv = loaded.inventory;
  // Everything that can be checked without a host is checked first: the file, its sha256, its cluster.
  const backup = await verifyBackup(opts.file);
  if (backup.cluster !== inv.cluster.name) {
    throw new InputError(`${basename(backup.path)} is a backup of cluster ${backup.cluster}, not ${inv.cluster.name}; nothing was changed`, 'restore a backup of this cluster, or use the inventory of the cluster it came from');
  }
  if (!backup.image) {
    throw new InputError(`${basename(backup.path)} does not say which version it was taken from; nothing was changed`, 'restore it by hand (gunzip -c FILE | mariadb DB), then deploy');
  }
  const image = backup.image;
  if (!opts.dryRun) await confirm(env, inv.cluster.name, opts.yes, backup.createdAt, backup.version);

  const templates = await loadTemplates(inv.templates, dirname(loaded.path));
  const rendered = renderCluster(inv, templates, { imageOf: () => image });
  const text = await readFile(loaded.path, 'utf8');
  const edited = image === inv.cluster.image ? undefined : setScalar(text, ['cluster', 'image'], image);
  const command = `restore ${basename(backup.path)}`;
  await runOperation(env, loaded, {
    command,
    dryRun: opts.dryRun,
    templates,
    plan: async (session, progress, balancer): Promise<Plan> => {
      const gathered = await gatherWork(session, progress, balancer, rendered.nodes, () => image);
      // Every node restarts on the backup's version, from a stopped container: none is serving.
      const work = gathered.map((w) => ({
        ...w,
        plan: { ...w.plan, restart: true, serving: false, readmit: false, reasons: [`the database is restored from a backup of ${backup.version}`] },
      }));
      const master = work.filter((w) => w.plan.node.role === 'master');
      const slaves = work.filter((w) => w.plan.node.role !== 'master');
      const pull = work.filter((w) => w.plan.pullImage);
      return {
        operation: command,
        verb: 'restored',
        work,
        steps: [
          ...(pull.length ? [{ kind: 'images' as const, work: pull }] : []),
          { kind: 'maintenance', on: true },
          { kind: 'stop', nodes: session.inv.nodes },
          { kind: 'restore', path: backup.path, file: basename(backup.path) },
          { kind: 'start', first: master, rest: slaves, admit: false },
          { kind: 'maintenance', on: false },
          ...(edited ? [{ kind: 'inventory' as const, what: `cluster.image → ${image}`, text: edited }] : []),
        ],
        warnings: edited === undefined && image !== inv.cluster.image ? [`cluster.image comes from a variable: set it to ${image} yourself, or the next deploy will move the cluster to another version`] : [],
      };
    },
  });
}

/** The operator types the cluster's name: a restore replaces the whole database. */
async function confirm(env: RunEnv, cluster: string, yes: boolean, createdAt: string, version: string): Promise<void> {
  if (yes) return;
  if (!env.interactive) throw new InputError('restore replaces the whole database: it needs --yes when no one can answer its question', `run it in a terminal, or add --yes`);
  const { input } = await import('@inquirer/prompts');
  const answer = await input({ message: `This replaces the database of cluster ${cluster} with the backup of ${createdAt} (${version}), and stops every node meanwhile. Type the cluster's name to go on:` });
  if (answer.trim() !== cluster) throw new InputError(`"${answer.trim()}" is not ${cluster}: nothing was changed`, 'type the cluster name exactly, or add --yes');
}
