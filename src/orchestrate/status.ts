/** `status`: what each node runs and whether the balancer sends it traffic. Read-only. */
import { errorMessage } from '../errors.js';
import type { InventoryNode } from '../inventory/schema.js';
import { parseState, statePaths } from '../plan/state.js';
import { getContainerState } from '../probes/container.js';
import { getStatus } from '../probes/http-status.js';
import { mapLimit } from '../remote/limit.js';
import { keepalived } from '../remote/commands.js';
import { containerName } from '../render/render.js';
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
  balancer: { reachable: boolean; error?: string; hosts: { label: string; host: string; reachable: boolean; error?: string; holdsVip?: boolean }[] };
  /** With a balancer pair: the floating address and the host holding it (null: nobody). */
  vip?: { address: string; holder: string | null };
  lock: (LockHolder & { ttlMs: number }) | null | 'unknown';
}

export { balancerStateOf };

export async function getClusterStatus(session: Session): Promise<ClusterStatus> {
  const inv = session.inv;
  const hosts = session.balancers();
  const balancer: ClusterStatus['balancer'] = { reachable: false, hosts: [] };
  let places: Map<string, BalancerState> | undefined;
  if (hosts.length > 0) {
    // The same reading as a run's: the upstream file, and the drain rules, of every balancer.
    const { Balancer } = await import('./balancer.js');
    const { loadTemplates } = await import('../render/templates.js');
    const { dirname } = await import('node:path');
    const b = new Balancer(session, await loadTemplates(inv.templates, dirname(session.loaded.path)));
    try {
      const m = await b.memberships();
      places = new Map([...m].map(([n, p]) => [n, p === 'unmanaged' ? 'unmanaged' : p]));
      balancer.reachable = true;
    } catch (e) {
      balancer.error = errorMessage(e);
    }
  }
  const vip = inv.loadBalancer.vip;
  const [nodes, hostStates] = await Promise.all([
    mapLimit(inv.nodes, inv.rollout.maxParallel, (n) => nodeStatus(session, n, hosts.length === 0 ? 'unmanaged' : (places?.get(n.name) ?? 'unknown'))),
    Promise.all(
      hosts.map(async (h): Promise<ClusterStatus['balancer']['hosts'][number]> => {
        try {
          const held = vip ? (await h.ex.exec(keepalived.holds(vip), { allowFailure: true, timeoutMs: 10_000 })).stdout.trim() !== '' : undefined;
          return { label: h.label, host: h.host, reachable: true, ...(held === undefined ? {} : { holdsVip: held }) };
        } catch (e) {
          return { label: h.label, host: h.host, reachable: false, error: errorMessage(e) };
        }
      }),
    ),
  ]);
  balancer.hosts = hostStates;
  const out: Omit<ClusterStatus, 'lock'> = {
    cluster: inv.cluster.name,
    nodes,
    balancer,
    ...(vip && hosts.length > 1 ? { vip: { address: vip, holder: hostStates.find((h) => h.holdsVip)?.label ?? null } } : {}),
  };
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
  return { ...out, lock };
}

async function nodeStatus(session: Session, node: InventoryNode, place: BalancerState): Promise<NodeStatus> {
  const inv = session.inv;
  const base: NodeStatus = {
    name: node.name,
    host: node.host,
    role: node.role,
    reachable: false,
    healthy: false,
    balancer: place,
  };
  const ex = session.on(node);
  try {
    const [container, stateText] = await Promise.all([getContainerState(ex, containerName(inv)), ex.readFile(statePaths(inv.cluster.dir).state)]);
    // Asked once the connection is up: its 3 s are the server's, not the SSH handshake's (a
    // hundred handshakes at once can take longer than that).
    const answer = await getStatus(ex, inv.cluster.port, 3000);
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
