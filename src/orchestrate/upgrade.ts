/**
 * `upgrade --rolling --to V` and `rollback [--to V]`: every node moves slave-first, batch by
 * batch, each drained, recreated, gated and put back; the master last. A batch that fails is
 * returned to its previous version and the run stops, the cluster serving throughout.
 */
import { readFile } from 'node:fs/promises';
import { dirname } from 'node:path';
import { InputError } from '../errors.js';
import { setScalar } from '../inventory/edit.js';
import { parseImageRef, withTag } from '../inventory/image.js';
import type { LoadedInventory } from '../inventory/load.js';
import type { Inventory, InventoryNode } from '../inventory/schema.js';
import { compareVersions } from '../inventory/version.js';
import { planNode, type NodeWork } from '../plan/plan.js';
import { filesMatch, parseState, statePaths, type Release } from '../plan/state.js';
import { rolloutSteps, type Plan } from '../plan/steps.js';
import { mapLimit } from '../remote/limit.js';
import { renderCluster, type NodeFiles } from '../render/render.js';
import { loadTemplates } from '../render/templates.js';
import { gatherFacts, readReleaseFiles, readReleases } from './node-files.js';
import type { RunEnv } from './run-env.js';
import { runOperation } from './runner.js';
import type { Session } from './session.js';
import { gatherWork } from './work.js';

export interface UpgradeOptions {
  to: string;
  batch: number | string | undefined;
  dryRun: boolean;
  allowDowngrade: boolean;
}

const VERSION_RE = /^v?\d+\.\d+(\.\d+)?([.-][A-Za-z0-9.-]+)?$/;

export function parseBatch(value: string | undefined): number | string | undefined {
  if (value === undefined) return undefined;
  if (/^([1-9][0-9]?|100)%$/.test(value)) return value;
  const n = Number(value);
  if (Number.isInteger(n) && n >= 1) return n;
  throw new InputError(`--batch: "${value}" is not a number of nodes or a percentage`, 'e.g. --batch 2 or --batch 25%');
}

export function verifyVersion(to: string, flag = '--to'): void {
  if (!VERSION_RE.test(to)) throw new InputError(`${flag}: "${to}" is not a version`, `name the version, e.g. ${flag} v0.9.21 (not latest)`);
}

/** An older version is a downgrade against a schema the newer one migrated: only on purpose. */
export function verifyNotDowngrade(to: string, from: string | undefined, where: string, allow: boolean): void {
  if (allow) return;
  const cmp = compareVersions(to, from);
  if (cmp !== undefined && cmp < 0) {
    throw new InputError(
      `--to ${to} is older than ${from} (${where}): a downgrade runs an older New API against a schema a newer one migrated`,
      `if that is what you want (a backup restored, or the release notes say it is safe), add --allow-downgrade; to undo an upgrade, newapi-cluster rollback returns to the kept release`,
    );
  }
}

/** The inventory with cluster.image set to `image`, as text; undefined when cluster.image is a ${VAR}. */
async function inventoryWithImage(loaded: LoadedInventory, image: string): Promise<string | undefined> {
  return setScalar(await readFile(loaded.path, 'utf8'), ['cluster', 'image'], image);
}

function imageEdit(loaded: LoadedInventory, text: string | undefined, image: string | undefined): { inventory?: { what: string; text: string }; warnings: string[] } {
  if (!image || image === loaded.inventory.cluster.image) return { warnings: [] };
  if (text === undefined) return { warnings: [`cluster.image comes from a variable: set it to ${image} yourself, or the next deploy will move the cluster back`] };
  return { inventory: { what: `cluster.image → ${image}`, text }, warnings: [] };
}

export async function runUpgrade(env: RunEnv, loaded: LoadedInventory, opts: UpgradeOptions): Promise<void> {
  const inv = withRollout(loaded.inventory, opts.batch);
  const image = withTag(inv.cluster.image, opts.to);
  // No network before this: the inventory's own version already tells most downgrades.
  verifyNotDowngrade(opts.to, parseImageRef(inv.cluster.image).tag, 'cluster.image in the inventory', opts.allowDowngrade);
  const templates = await loadTemplates(inv.templates, dirname(loaded.path));
  const rendered = renderCluster(inv, templates, { imageOf: () => image });
  const edit = imageEdit(loaded, await inventoryWithImage(loaded, image), image);
  const command = `upgrade --rolling --to ${opts.to}${opts.allowDowngrade ? ' --allow-downgrade' : ''}`;
  await runOperation(env, { ...loaded, inventory: inv }, {
    command,
    dryRun: opts.dryRun,
    templates,
    plan: async (session, progress, balancer): Promise<Plan> => {
      const work = await gatherWork(session, progress, balancer, rendered.nodes, () => image);
      for (const w of work) {
        const running = w.facts.container.image;
        if (running) verifyNotDowngrade(opts.to, parseImageRef(running).tag, `${w.plan.node.name} runs it`, opts.allowDowngrade);
      }
      const masterFiles = rendered.nodes.find((f) => f.node.role === 'master')!;
      return {
        operation: command,
        verb: 'upgraded',
        work,
        steps: rolloutSteps({
          work,
          batchSize: inv.rollout.batchSize,
          migrate: inv.rollout.migrateFirst ? { image, files: masterFiles, backup: inv.rollout.backupBeforeMigrate } : undefined,
          balancer: false,
          inventory: edit.inventory,
          prune: true,
        }),
        warnings: edit.warnings,
      };
    },
  });
}

export interface RollbackOptions {
  dryRun: boolean;
  to?: string | undefined;
}

export async function runRollback(env: RunEnv, loaded: LoadedInventory, opts: RollbackOptions): Promise<void> {
  const inv = loaded.inventory;
  const templates = await loadTemplates(inv.templates, dirname(loaded.path));
  const command = `rollback${opts.to ? ` --to ${opts.to}` : ''}`;
  const text = await readFile(loaded.path, 'utf8');
  await runOperation(env, loaded, {
    command,
    dryRun: opts.dryRun,
    templates,
    plan: async (session, progress, balancer): Promise<Plan> => {
      const warnings: string[] = [];
      let found: (NodeWork | undefined)[] = [];
      await progress.step(opts.to ? `Find the ${opts.to} release on each node` : 'Find the previous release on each node', async () => {
        const memberships = await balancer.memberships();
        found = await mapLimit(inv.nodes, inv.rollout.maxParallel, async (node) => {
          const target = await releaseToReturnTo(session, node, opts.to, warnings);
          if (!target) return undefined;
          const facts = await gatherFacts(session, target.files, target.release.state.image, memberships.get(node.name));
          return { files: target.files, facts, plan: planNode(target.files, facts, target.release.state.image) };
        });
      });
      const work = found.filter((w): w is NodeWork => w !== undefined);
      if (work.length === 0) {
        throw new InputError(
          opts.to ? `no node keeps a release of ${opts.to}` : 'no node has an earlier release to return to',
          opts.to ? 'see the kept releases with newapi-cluster releases' : 'rollback needs a node deployed at least twice by newapi-cluster',
        );
      }
      // The inventory can name one image only: it is updated when every node returns to the same one.
      const images = new Set(work.map((w) => w.plan.image));
      const finalImage = images.size === 1 && work.length === inv.nodes.length ? [...images][0] : undefined;
      const edit = imageEdit(loaded, finalImage ? setScalar(text, ['cluster', 'image'], finalImage) : undefined, finalImage);
      return {
        operation: command,
        verb: 'rolled back',
        work,
        steps: rolloutSteps({ work, batchSize: inv.rollout.batchSize, balancer: false, inventory: edit.inventory }),
        warnings: [...warnings, ...edit.warnings],
      };
    },
  });
}

/**
 * The release a node returns to: the one before the release it runs (rollback), or the newest
 * kept release of a version (rollback --to). Its files must still match the hashes recorded
 * beside them; a node without a usable release is skipped with a warning, not a reason to refuse
 * the whole rollback.
 */
async function releaseToReturnTo(session: Session, node: InventoryNode, to: string | undefined, warnings: string[]): Promise<{ release: Release; files: NodeFiles } | undefined> {
  const releases = await readReleases(session, node);
  const current = parseState((await session.on(node).readFile(statePaths(session.inv.cluster.dir).state))?.toString('utf8'));
  let release: Release | undefined;
  if (to) {
    release = releases.find((r) => parseImageRef(r.state.image).tag === to || compareVersions(parseImageRef(r.state.image).tag, to) === 0);
    if (!release) {
      warnings.push(`${node.name} keeps no release of ${to}: skipped`);
      return undefined;
    }
  } else {
    // The release after the running one in the list (newest first); a state written before
    // releases existed names none: then the newest release whose files are not the running ones.
    const i = current?.release ? releases.findIndex((r) => r.id === current.release) : -1;
    release = i >= 0 ? releases[i + 1] : releases.find((r) => !current || r.state.files['.env'] !== current.files['.env'] || r.state.image !== current.image || r.state.files['docker-compose.yml'] !== current.files['docker-compose.yml']);
    if (!release) {
      warnings.push(`${node.name} has no earlier release to return to: skipped`);
      return undefined;
    }
  }
  const contents = await readReleaseFiles(session, node, release);
  if (!filesMatch(release.state, contents)) {
    warnings.push(`${node.name}: the files of release ${release.id} do not match the hashes recorded with them: skipped`);
    return undefined;
  }
  const dir = session.inv.cluster.dir;
  return {
    release,
    files: {
      node,
      compose: { path: `${dir}/docker-compose.yml`, content: contents['docker-compose.yml']!, mode: 0o644, secret: false },
      env: { path: `${dir}/.env`, content: contents['.env']!, mode: 0o600, secret: true },
    },
  };
}

function withRollout(inv: Inventory, batch: number | string | undefined): Inventory {
  return batch === undefined ? inv : { ...inv, rollout: { ...inv.rollout, batchSize: batch } };
}
