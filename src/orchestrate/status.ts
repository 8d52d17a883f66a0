/** `status`: what each node runs and whether the balancer sends it traffic. Read-only. */
import { errorMessage } from '../errors.js';
import type { InventoryNode } from '../inventory/schema.js';
import { parseState, statePaths } from '../plan/state.js';
import { getContainerState } from '../probes/container.js';
import { getStatus } from '../probes/http-status.js';
import { mapLimit } from '../remote/limit.js';
import { containerName, hostPort } from '../render/render.js';
import { balancerStateOf } from './balancer.js';
import { readLock, type LockHolder } from './lock.js';
import type { Session } from './session.js';

export type BalancerState = 'in' | 'drained' | 'absent' | 'unknown' | 'unmanaged';

export interface NodeStatus {
  name: string;
  host: string;
  role: string;
  reachable: boolean;
  error?: string;
  container?: string;
  image?: string;
  version?: string;
  healthy: boolean;
  deployedImage?: string;
  deployedAt?: string;
  deployedBy?: string;
  balancer: BalancerState;
}

export interface ClusterStatus {
  cluster: string;
  nodes: NodeStatus[];
  balancer: { reachable: boolean; error?: string };
  lock: (LockHolder & { ttlMs: number }) | null | 'unknown';
}

export { balancerStateOf };

export async function getClusterStatus(session: Session): Promise<ClusterStatus> {
  const inv = session.inv;
  let config: string | undefined;
  const balancer: ClusterStatus['balancer'] = { reachable: false };
  const lb = session.onBalancer();
  if (lb) {
    try {
      config = (await lb.readFile(inv.loadBalancer.configPath))?.toString('utf8');
      balancer.reachable = true;
    } catch (e) {
      balancer.error = errorMessage(e);
    }
  }
  const nodes = await mapLimit(inv.nodes, inv.rollout.maxParallel, (n) => nodeStatus(session, n, lb ? (balancer.reachable ? config : null) : undefined));
  let lock: ClusterStatus['lock'] = 'unknown';
  try {
    const store = await session.openLockStore();
    try {
      const found = await readLock(store, inv.cluster.name);
      lock = found ? { id: found.id, operator: found.operator, command: found.command, pid: found.pid, since: found.since, ttlMs: found.ttlMs } : null;
    } finally {
      await store.close();
    }
  } catch {
    lock = 'unknown';
  }
  return { cluster: inv.cluster.name, nodes, balancer, lock };
}

async function nodeStatus(session: Session, node: InventoryNode, config: string | null | undefined): Promise<NodeStatus> {
  const inv = session.inv;
  const base: NodeStatus = {
    name: node.name,
    host: node.host,
    role: node.role,
    reachable: false,
    healthy: false,
    balancer: config === undefined ? 'unmanaged' : config === null ? 'unknown' : balancerStateOf(config, hostPort(node.host, inv.cluster.port)),
  };
  const ex = session.on(node);
  try {
    const [container, answer, stateText] = await Promise.all([
      getContainerState(ex, containerName(inv)),
      getStatus(ex, inv.cluster.port, 3000),
      ex.readFile(statePaths(inv.cluster.dir).state),
    ]);
    const state = parseState(stateText?.toString('utf8'));
    return {
      ...base,
      reachable: true,
      container: container.exists ? container.status : 'absent',
      ...(container.image ? { image: container.image } : {}),
      ...(answer.version ? { version: answer.version } : {}),
      healthy: answer.success,
      ...(state ? { deployedImage: state.image, deployedAt: state.deployedAt, deployedBy: state.deployedBy } : {}),
    };
  } catch (e) {
    return { ...base, error: errorMessage(e) };
  }
}
