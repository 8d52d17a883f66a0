/**
 * A node's files: what it has (facts), writing what it should have, and recording a deploy that
 * passed its gate as a release (state.json, releases/<id>/, one audit line).
 */
import type { InventoryNode } from '../inventory/schema.js';
import type { BalancerMembership, NodeFacts, NodePlan } from '../plan/plan.js';
import { MANAGED_FILES, parseReleaseListing, parseState, releaseId, releasesToPrune, sha256, statePaths, type NodeState, type Release } from '../plan/state.js';
import { parseContainerInspect } from '../probes/container.js';
import { getStatus } from '../probes/http-status.js';
import { compose, files, parseNodeFacts } from '../remote/commands.js';
import type { NodeFiles } from '../render/render.js';
import { containerName } from '../render/render.js';
import { VERSION } from '../version.js';
import { expectedVersion, versionMatches } from './health.js';
import type { Session } from './session.js';

export const TOOL_VERSION = `newapi-cluster ${VERSION}`;

export async function gatherFacts(session: Session, files_: NodeFiles, image: string, balancer: BalancerMembership = 'unmanaged'): Promise<NodeFacts> {
  const ex = session.on(files_.node);
  // One round trip: what a plan needs is read in one command (a no-op deploy costs one look).
  const r = await ex.exec(files.nodeFacts(session.inv.cluster.dir, containerName(session.inv), image), { timeoutMs: 60_000 });
  const found = parseNodeFacts(r.stdout);
  const container = parseContainerInspect(found.container);
  const facts: NodeFacts = {
    node: files_.node,
    files: { [files_.compose.path]: found['docker-compose.yml'], [files_.env.path]: found['.env'] },
    state: parseState(found['.newapi-cluster/state.json']),
    container,
    desiredImageId: found.image?.trim() || undefined,
    balancer,
  };
  // Only a node the balancer leaves out is asked whether it is healthy: may it simply go back in?
  if (container.running && (balancer === 'drained' || balancer === 'absent')) {
    const answer = await getStatus(ex, session.inv.cluster.port, 3000);
    const want = container.image ? expectedVersion(container.image) : undefined;
    facts.healthy = answer.success && versionMatches(answer.version, want);
  }
  return facts;
}

export async function ensureLayout(session: Session, node: InventoryNode): Promise<void> {
  const dir = session.inv.cluster.dir;
  const paths = statePaths(dir);
  await session.on(node).exec(files.layout(dir, paths.dir, paths.releases), { timeoutMs: 30_000 });
}

export async function writeNodeFiles(session: Session, plan: NodePlan): Promise<void> {
  const ex = session.on(plan.node);
  for (const change of plan.changes) await ex.upload(change.file.path, change.file.content, change.file.mode);
}

export async function composeUp(session: Session, node: InventoryNode, recreate: boolean): Promise<void> {
  const flavor = await session.composeFlavor(node);
  await session.on(node).exec(compose.up(flavor, session.project, session.inv.cluster.dir, { recreate }), { timeoutMs: 5 * 60_000 });
}

/** The container exists with its final configuration, but does not run yet. */
export async function composeCreate(session: Session, node: InventoryNode): Promise<void> {
  const flavor = await session.composeFlavor(node);
  await session.on(node).exec(compose.create(flavor, session.project, session.inv.cluster.dir), { timeoutMs: 5 * 60_000 });
}

/**
 * Called once a node passed its health gate: its files become a release, state.json points at it,
 * the audit log gets a line, and releases beyond rollout.keepReleases are removed.
 */
export async function recordState(session: Session, files_: NodeFiles, image: string, before: NodeFacts | undefined, operation: string): Promise<NodeState> {
  const node = files_.node;
  const ex = session.on(node);
  const dir = session.inv.cluster.dir;
  const paths = statePaths(dir);
  const now = new Date(session.clock.now());
  const previous = before?.state;
  const hashes = { 'docker-compose.yml': sha256(files_.compose.content), '.env': sha256(files_.env.content) };
  // Returning to a kept release (rollback) points at it again rather than copying it: it keeps its place.
  const releases = await readReleases(session, node);
  const same = releases.find((r) => r.id !== 'previous' && r.state.image === image && MANAGED_FILES.every((f) => r.state.files[f] === hashes[f]));
  const id = same?.id ?? releaseId(now, image);
  const state: NodeState = {
    cluster: session.project,
    node: node.name,
    role: node.role,
    image,
    files: hashes,
    deployedAt: now.toISOString(),
    deployedBy: session.operator,
    operation,
    release: id,
    ...(previous && previous.image !== image ? { previousImage: previous.image } : previous?.previousImage ? { previousImage: previous.previousImage } : {}),
    tool: TOOL_VERSION,
  };
  const json = `${JSON.stringify(state, null, 2)}\n`;
  if (!same) {
    await ex.exec(files.snapshotRelease(dir, `${paths.releases}/${id}`), { timeoutMs: 30_000 });
    await ex.upload(`${paths.releases}/${id}/release.json`, json, 0o600);
  }
  await ex.upload(paths.state, json, 0o600);
  await audit(session, node, operation, { from: previous?.image, to: image, result: 'ok' });
  await pruneReleases(session, node, [...(same ? [] : [{ id, state }]), ...releases], id).catch(() => undefined);
  return state;
}

export interface AuditEntry {
  at: string;
  by: string;
  /** The run that wrote it (absent in lines written before runs had ids). */
  run?: string;
  operation: string;
  /** A node's name, or `*` for the line that closes a run (on the master). */
  node: string;
  from?: string | undefined;
  to?: string | undefined;
  result: string;
}

/** One JSON line per operation and node: who, when, from which version to which, and how it ended. */
export async function audit(session: Session, node: InventoryNode, operation: string, what: { from?: string | undefined; to?: string | undefined; result: string }, name = node.name): Promise<void> {
  const entry: AuditEntry = { at: new Date(session.clock.now()).toISOString(), by: session.operator, run: session.runId, operation, node: name, ...what };
  await session.on(node).exec(files.append(statePaths(session.inv.cluster.dir).audit), { stdin: `${JSON.stringify(entry)}\n`, timeoutMs: 30_000 });
}

/** The line that closes a run, on the master: how the whole operation ended. */
export async function auditRun(session: Session, operation: string, result: string, to?: string): Promise<void> {
  await audit(session, session.master, operation, { result, ...(to ? { to } : {}) }, '*');
}

/** The node's releases, newest first; the legacy previous/ slot is read as a release called "previous". */
export async function readReleases(session: Session, node: InventoryNode): Promise<Release[]> {
  const ex = session.on(node);
  const paths = statePaths(session.inv.cluster.dir);
  const listing = await ex.exec(files.listReleases(paths.releases), { allowFailure: true, timeoutMs: 30_000 });
  const releases = parseReleaseListing(listing.stdout);
  if (releases.length > 0) return releases;
  const legacy = parseState((await ex.readFile(`${paths.legacyPrevious}/state.json`))?.toString('utf8'));
  return legacy ? [{ id: 'previous', state: legacy }] : [];
}

/** A release's files, read back; undefined when a file is missing. */
export async function readReleaseFiles(session: Session, node: InventoryNode, release: Release): Promise<Record<string, string | undefined>> {
  const ex = session.on(node);
  const paths = statePaths(session.inv.cluster.dir);
  const folder = release.id === 'previous' ? paths.legacyPrevious : `${paths.releases}/${release.id}`;
  const contents = await Promise.all(MANAGED_FILES.map((name) => ex.readFile(`${folder}/${name}`)));
  return Object.fromEntries(MANAGED_FILES.map((name, i) => [name, contents[i]?.toString('utf8')]));
}

async function pruneReleases(session: Session, node: InventoryNode, releases: Release[], current: string): Promise<void> {
  releases.sort((a, b) => (a.id < b.id ? 1 : a.id > b.id ? -1 : 0));
  const keep = session.inv.rollout.keepReleases;
  const paths = statePaths(session.inv.cluster.dir);
  const stale = releasesToPrune(releases, keep, new Set([current])).filter((r) => r.id !== 'previous');
  if (stale.length === 0) return;
  await session.on(node).exec(files.removeTree(...stale.map((r) => `${paths.releases}/${r.id}`)), { timeoutMs: 30_000 });
}
