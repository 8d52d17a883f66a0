/**
 * Writing a node's files and recording what was deployed. The previous good files are kept in
 * .newapi-cluster/previous/ before they are replaced, so rollback has something to return to.
 */
import type { InventoryNode } from '../inventory/schema.js';
import { VERSION } from '../version.js';
import type { NodeFacts, NodePlan } from '../plan/plan.js';
import { parseState, sha256, statePaths, type NodeState } from '../plan/state.js';
import { compose, files } from '../remote/commands.js';
import type { NodeFiles } from '../render/render.js';
import type { Session } from './session.js';
import { getContainerState, getImageId } from '../probes/container.js';
import { containerName } from '../render/render.js';

export const TOOL_VERSION = `newapi-cluster ${VERSION}`;

export async function gatherFacts(session: Session, files_: NodeFiles, image: string): Promise<NodeFacts> {
  const ex = session.on(files_.node);
  const paths = statePaths(session.inv.cluster.dir);
  const [compose_, env, state, container, desiredImageId] = await Promise.all([
    ex.readFile(files_.compose.path),
    ex.readFile(files_.env.path),
    ex.readFile(paths.state),
    getContainerState(ex, containerName(session.inv)),
    getImageId(ex, image),
  ]);
  return {
    node: files_.node,
    files: { [files_.compose.path]: compose_?.toString('utf8'), [files_.env.path]: env?.toString('utf8') },
    state: parseState(state?.toString('utf8')),
    container,
    desiredImageId,
  };
}

export async function ensureLayout(session: Session, node: InventoryNode): Promise<void> {
  const dir = session.inv.cluster.dir;
  const paths = statePaths(dir);
  const ex = session.on(node);
  await ex.exec(files.layout(dir, paths.dir, paths.previous));
}

export async function writeNodeFiles(session: Session, plan: NodePlan): Promise<void> {
  const ex = session.on(plan.node);
  for (const change of plan.changes) await ex.upload(change.file.path, change.file.content, change.file.mode);
}

export async function composeUp(session: Session, node: InventoryNode, recreate: boolean): Promise<void> {
  const flavor = await session.composeFlavor(node);
  await session.on(node).exec(compose.up(flavor, session.project, session.inv.cluster.dir, { recreate }), { timeoutMs: 5 * 60_000 });
}

/**
 * Called once a node passed its health gate. The deploy it replaces becomes `previous/` (what
 * rollback returns to); a failed attempt never gets here, so it never overwrites `previous/`.
 */
/** The container exists with its final configuration, but does not run yet. */
export async function composeCreate(session: Session, node: InventoryNode): Promise<void> {
  const flavor = await session.composeFlavor(node);
  await session.on(node).exec(compose.create(flavor, session.project, session.inv.cluster.dir), { timeoutMs: 5 * 60_000 });
}

export async function recordState(session: Session, files_: NodeFiles, image: string, before: NodeFacts | undefined, operation: string): Promise<NodeState> {
  const ex = session.on(files_.node);
  const paths = statePaths(session.inv.cluster.dir);
  const previous = before?.state;
  const contents: Record<string, string> = { 'docker-compose.yml': files_.compose.content, '.env': files_.env.content };
  const replaced = before !== undefined && previous !== undefined && (previous.image !== image || [files_.compose, files_.env].some((f) => before.files[f.path] !== f.content));
  if (replaced) {
    for (const f of [files_.compose, files_.env]) {
      const old = before.files[f.path];
      if (old !== undefined) await ex.upload(`${paths.previous}/${f.path.split('/').pop()}`, old, 0o600);
    }
    await ex.upload(`${paths.previous}/state.json`, `${JSON.stringify(previous, null, 2)}\n`, 0o600);
  }
  const state: NodeState = {
    cluster: session.project,
    node: files_.node.name,
    role: files_.node.role,
    image,
    files: Object.fromEntries(Object.entries(contents).map(([name, content]) => [name, sha256(content)])),
    deployedAt: new Date().toISOString(),
    deployedBy: session.operator,
    ...(replaced && previous ? { previousImage: previous.image } : previous?.previousImage ? { previousImage: previous.previousImage } : {}),
    tool: TOOL_VERSION,
  };
  await ex.upload(paths.state, `${JSON.stringify(state, null, 2)}\n`, 0o600);
  await audit(session, files_.node, operation, `deployed ${image}`);
  return state;
}

/** One JSON line per operation and node: who, when, what. */
export async function audit(session: Session, node: InventoryNode, operation: string, result: string): Promise<void> {
  const line = JSON.stringify({ at: new Date().toISOString(), by: session.operator, operation, node: node.name, result });
  await session.on(node).exec(files.append(statePaths(session.inv.cluster.dir).audit), { stdin: `${line}\n` });
}
