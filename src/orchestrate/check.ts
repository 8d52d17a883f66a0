/** `check` and deploy's pre-flight: every check, from each node's point of view. */
import type { InventoryNode } from '../inventory/schema.js';
import { mapLimit } from '../remote/limit.js';
import {
  checkBalancer,
  checkClock,
  checkCompose,
  checkDatabase,
  checkDisk,
  checkDocker,
  checkPort,
  checkRedis,
  checkSsh,
  deployedSecretsHash,
  secretsHash,
  type CheckResult,
} from '../probes/checks.js';
import { BALANCER, type Session } from './session.js';

export interface CheckOptions {
  /** Deploy's pre-flight: only what would make a deploy fail (no clock, no secrets comparison). */
  preflight?: boolean;
  /** Only these nodes (deploy --only). */
  nodes?: InventoryNode[];
}

export async function runChecks(session: Session, opts: CheckOptions = {}): Promise<CheckResult[]> {
  const inv = session.inv;
  const nodes = opts.nodes ?? inv.nodes;
  const balancer = async (): Promise<CheckResult[]> => {
    const lb = session.onBalancer();
    if (!lb) return [];
    const ssh = await checkSsh(BALANCER, lb);
    return ssh.status === 'ok' ? [ssh, ...(await checkBalancer(lb))] : [ssh];
  };
  const [perNode, lbResults] = await Promise.all([mapLimit(nodes, inv.rollout.maxParallel, async (node) => checkNode(session, node, opts)), balancer()]);
  const results = perNode.flat();
  if (!opts.preflight) results.push(...(await compareSecrets(session, nodes, results)));
  results.push(...lbResults);
  return results;
}

async function checkNode(session: Session, node: InventoryNode, opts: CheckOptions): Promise<CheckResult[]> {
  const inv = session.inv;
  const ex = session.on(node);
  const ssh = await checkSsh(node.name, ex);
  if (ssh.status !== 'ok') return [ssh];
  // Everything after SSH is independent: one round trip's worth of waiting, not eight.
  const engine = (async () => {
    const docker = await checkDocker(node.name, ex);
    return docker.status === 'ok' ? [docker, await checkCompose(session, node), await checkPort(session, node)] : [docker];
  })();
  const [engineResults, disk, clock, db, redis, logDb] = await Promise.all([
    engine,
    checkDisk(node.name, ex, inv.cluster.dir),
    opts.preflight ? Promise.resolve(undefined) : checkClock(node.name, ex),
    checkDatabase(node, ex, inv.database.dsn, 'mysql'),
    checkRedis(session, node, ex),
    inv.database.logDsn ? checkDatabase(node, ex, inv.database.logDsn, 'log-db') : Promise.resolve(undefined),
  ]);
  const results: CheckResult[] = [ssh, ...engineResults, disk];
  if (clock) results.push(clock);
  results.push(db, redis);
  if (logDb) results.push(logDb);
  return results;
}

/** Every deployed node must hold the inventory's secrets, or logins and cache keys break between nodes. */
async function compareSecrets(session: Session, nodes: InventoryNode[], results: CheckResult[]): Promise<CheckResult[]> {
  const reachable = nodes.filter((n) => results.some((r) => r.node === n.name && r.check === 'ssh' && r.status === 'ok'));
  const expected = secretsHash(session.inv.secrets.sessionSecret, session.inv.secrets.cryptoSecret);
  const hashes = await mapLimit(reachable, session.inv.rollout.maxParallel, async (n) => ({ node: n, hash: await deployedSecretsHash(session, n).catch(() => undefined) }));
  const deployed = hashes.filter((h) => h.hash !== undefined);
  return deployed.map(({ node, hash }): CheckResult => {
    if (hash === expected) return { node: node.name, check: 'secrets', status: 'ok', detail: `match the inventory (sha256 ${hash})` };
    const same = deployed.filter((d) => d.hash === hash && d.node !== node).map((d) => d.node.name);
    return {
      node: node.name,
      check: 'secrets',
      status: 'fail',
      detail: `SESSION_SECRET/CRYPTO_SECRET differ from the inventory (sha256 ${hash}, expected ${expected})${same.length ? `; same as ${same.join(', ')}` : ''}`,
      hint: 'run newapi-cluster deploy to make every node use the inventory\'s secrets (users must log in again)',
    };
  });
}
