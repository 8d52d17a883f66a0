/** `check` and deploy's pre-flight: every check, from each node's point of view. */
import { CliError } from '../errors.js';
import type { InventoryNode } from '../inventory/schema.js';
import type { Progress } from '../ui/progress.js';
import { mapLimit } from '../remote/limit.js';
import { describeSources } from '../remote/ssh-config.js';
import {
  checkBalancer,
  checkClock,
  checkCompose,
  checkDatabase,
  checkDatabaseSize,
  checkDisk,
  checkDocker,
  checkPort,
  checkRedis,
  checkSsh,
  deployedSecretsHash,
  secretsHash,
  type CheckResult,
} from '../probes/checks.js';
import type { BalancerHost, Session } from './session.js';

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
    const all = await Promise.all(
      session.balancers().map(async (b) => {
        const ssh = withSources(await checkSsh(b.label, b.ex), session, b);
        return ssh.status === 'ok' ? [ssh, ...(await checkBalancer(session, b))] : [ssh];
      }),
    );
    return all.flat();
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
  const ssh = withSources(await checkSsh(node.name, ex), session, node);
  if (ssh.status !== 'ok') return [ssh];
  // Everything after SSH is independent: one round trip's worth of waiting, not eight.
  const engine = (async () => {
    const docker = await checkDocker(node.name, ex);
    return docker.status === 'ok' ? [docker, await checkCompose(session, node), await checkPort(session, node)] : [docker];
  })();
  const [engineResults, disk, clock, db, redis, logDb, size] = await Promise.all([
    engine,
    checkDisk(node.name, ex, inv.cluster.dir),
    opts.preflight ? Promise.resolve(undefined) : checkClock(node.name, ex),
    checkDatabase(session.deps.dial, node, ex, inv.database.dsn, 'mysql'),
    checkRedis(session, node, ex),
    inv.database.logDsn ? checkDatabase(session.deps.dial, node, ex, inv.database.logDsn, 'log-db') : Promise.resolve(undefined),
    // The database is one for every node: its size is reported once, from the master.
    !opts.preflight && node.role === 'master' ? checkDatabaseSize(session.deps.dial, node, ex, inv.database.dsn) : Promise.resolve(undefined),
  ]);
  const results: CheckResult[] = [ssh, ...engineResults, disk];
  if (clock) results.push(clock);
  results.push(db);
  if (size) results.push(size);
  results.push(redis);
  if (logDb) results.push(logDb);
  return results;
}

/** The ssh check says which settings came from ~/.ssh/config, so a surprise there is visible. */
function withSources(result: CheckResult, session: Session, node: InventoryNode | BalancerHost): CheckResult {
  const from = describeSources(session.sshSettingsOf(node).sources);
  return from ? { ...result, detail: `${result.detail}; ${from}` } : result;
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

/** A run's pre-flight: the checks that would make it fail, on the nodes it will touch; aborts before any host changes. */
export async function preflight(session: Session, progress: Progress, nodes: InventoryNode[]): Promise<CheckResult[]> {
  let results: CheckResult[] = [];
  await progress.step('Run pre-flight checks', async (report) => {
    results = await runChecks(session, { preflight: true, nodes });
    const failed = results.filter((r) => r.status === 'fail');
    report(`${results.length - failed.length} of ${results.length} passed`);
    if (failed.length > 0) {
      const first = failed[0]!;
      throw new CliError(
        `pre-flight failed, nothing was changed: ${failed.map((f) => `${f.node} ${f.check}: ${f.detail}`).join('; ')}`,
        { hint: first.hint ?? 'run newapi-cluster check for the full report' },
      );
    }
  });
  return results;
}
