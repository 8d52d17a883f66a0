/**
 * `prune`, and the housekeeping after a successful deploy or upgrade: on each node, release
 * folders and images of the cluster's repository older than rollout.keepReleases go. Never the
 * running release or image, never one a kept release names (Kamal users lost their rollback
 * images to pruning: kamal #270, #403, #1922), never an image of another repository.
 */
import { parseImageRef } from '../inventory/image.js';
import type { InventoryNode } from '../inventory/schema.js';
import { parseState, releasesToPrune, statePaths } from '../plan/state.js';
import { getContainerState } from '../probes/container.js';
import { docker, files } from '../remote/commands.js';
import { containerName } from '../render/render.js';
import { dirname } from 'node:path';
import type { LoadedInventory } from '../inventory/load.js';
import type { Plan } from '../plan/steps.js';
import { mapLimit } from '../remote/limit.js';
import { loadTemplates } from '../render/templates.js';
import { readReleases } from './node-files.js';
import type { RunEnv } from './run-env.js';
import { runOperation } from './runner.js';
import type { Session } from './session.js';

export interface Pruned {
  releases: string[];
  images: string[];
}

/** What a node would lose: pure, from its releases, what it runs, and the images it has. */
export function pruneChoice(input: {
  releases: { id: string; image: string }[];
  current: string | undefined;
  running: string | undefined;
  keep: number;
  images: string[];
  /** Images that must stay whatever the releases say (the inventory's, the target of the run). */
  pinned: string[];
}): Pruned {
  const ordered = [...input.releases].sort((a, b) => (a.id < b.id ? 1 : a.id > b.id ? -1 : 0));
  const stale = releasesToPrune(ordered, input.keep, new Set(input.current ? [input.current] : [])).filter((r) => r.id !== 'previous');
  const staleIds = new Set(stale.map((r) => r.id));
  const kept = new Set([...ordered.filter((r) => !staleIds.has(r.id)).map((r) => r.image), ...(input.running ? [input.running] : []), ...input.pinned]);
  const images = input.images.filter((ref) => !ref.endsWith(':<none>') && !kept.has(ref));
  return { releases: stale.map((r) => r.id), images };
}

export async function pruneNode(session: Session, node: InventoryNode, opts: { dryRun?: boolean } = {}): Promise<Pruned> {
  const ex = session.on(node);
  const dir = session.inv.cluster.dir;
  const paths = statePaths(dir);
  const [releases, stateText, container] = await Promise.all([readReleases(session, node), ex.readFile(paths.state), getContainerState(ex, containerName(session.inv))]);
  const current = parseState(stateText?.toString('utf8'))?.release;
  const repository = parseImageRef(session.inv.cluster.image).repository;
  const listed = await ex.exec(docker.listImages(repository), { allowFailure: true, timeoutMs: 60_000 });
  const choice = pruneChoice({
    releases: releases.map((r) => ({ id: r.id, image: r.state.image })),
    current,
    running: container.image,
    keep: session.inv.rollout.keepReleases,
    images: listed.code === 0 ? listed.stdout.split('\n').map((l) => l.trim()).filter(Boolean) : [],
    pinned: [session.inv.cluster.image],
  });
  if (opts.dryRun) return choice;
  if (choice.releases.length > 0) await ex.exec(files.removeTree(...choice.releases.map((id) => `${paths.releases}/${id}`)), { timeoutMs: 60_000 });
  const removed: string[] = [];
  // One at a time: an image still used by some container is refused by docker, and the rest go on.
  for (const ref of choice.images) {
    const r = await ex.exec(docker.removeImages(ref), { allowFailure: true, timeoutMs: 120_000 });
    if (r.code === 0) removed.push(ref);
  }
  return { releases: choice.releases, images: removed };
}

/** `prune`: under the lock, every node; --dry-run lists what would go. */
export async function runPrune(env: RunEnv, loaded: LoadedInventory, opts: { dryRun: boolean }): Promise<void> {
  const inv = loaded.inventory;
  if (opts.dryRun) {
    const { Session } = await import('./session.js');
    const chosen = await Session.use(env, loaded, (session) => mapLimit(inv.nodes, inv.rollout.maxParallel, (n) => pruneNode(session, n, { dryRun: true })));
    if (env.out.json) env.out.printJson({ ok: true, dryRun: true, nodes: inv.nodes.map((n, i) => ({ node: n.name, ...chosen[i] })) });
    else inv.nodes.forEach((n, i) => env.out.print(`${n.name}: would remove ${describe(chosen[i]!)}`));
    return;
  }
  const templates = await loadTemplates(inv.templates, dirname(loaded.path));
  await runOperation(env, loaded, {
    command: 'prune',
    dryRun: false,
    templates,
    plan: async (): Promise<Plan> => ({ operation: 'prune', verb: 'pruned', work: [], steps: [{ kind: 'prune', nodes: inv.nodes }], warnings: [] }),
  });
}

function describe(p: Pruned): string {
  return `${p.releases.length ? `releases ${p.releases.join(', ')}` : 'no release'}; ${p.images.length ? `images ${p.images.join(', ')}` : 'no image'}`;
}
