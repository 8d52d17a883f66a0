/**
 * The checks of `check` (SPEC §4), each read-only and each run from the point of view of the
 * node it is about. A check never throws: it returns ok / warn / fail with a one-line hint.
 */
import { createHash } from 'node:crypto';
import { parseEnv } from 'node:util';
import { errorMessage } from '../errors.js';
import { parseDatabaseDsn, parseRedisUrl, type DatabaseDsn } from '../inventory/dsn.js';
import type { InventoryNode } from '../inventory/schema.js';
import { X509Certificate } from 'node:crypto';
import { balancerHosts } from '../inventory/load.js';
import { docker, files, firewall, keepalived, nginx } from '../remote/commands.js';
import type { Executor } from '../remote/types.js';
import { containerName, tlsPaths } from '../render/render.js';
import type { BalancerHost, Session } from '../orchestrate/session.js';
import type { Dialer } from './clients.js';

export type CheckStatus = 'ok' | 'warn' | 'fail' | 'skip';

export interface CheckResult {
  node: string;
  check: string;
  status: CheckStatus;
  detail: string;
  hint?: string;
}

/** New API's MySQL start-up panics unless the database charset is one of these. */
export const ACCEPTED_CHARSETS = ['utf8mb4', 'utf8', 'utf8mb3', 'gbk', 'big5', 'gb18030'];
const MIN_FREE_KIB = 2 * 1024 * 1024;
const MAX_CLOCK_OFFSET_S = 2;

const ok = (node: string, check: string, detail: string): CheckResult => ({ node, check, status: 'ok', detail });
const fail = (node: string, check: string, detail: string, hint: string): CheckResult => ({ node, check, status: 'fail', detail, hint });
const warn = (node: string, check: string, detail: string, hint: string): CheckResult => ({ node, check, status: 'warn', detail, hint });

/** SSH: reachable, authenticated, host key verified (the pool refuses otherwise). */
export async function checkSsh(label: string, ex: Executor): Promise<CheckResult> {
  try {
    await ex.exec(['true'], { timeoutMs: 15_000 });
    return ok(label, 'ssh', `${ex.target.user}@${ex.target.host}:${ex.target.port}, host key verified`);
  } catch (e) {
    const hint = (e as { hint?: string }).hint ?? 'is the host up and is sshd listening?';
    return fail(label, 'ssh', errorMessage(e).replace(/^[^:]+: /, ''), hint);
  }
}

export async function checkDocker(node: string, ex: Executor): Promise<CheckResult> {
  const r = await ex.exec(docker.serverVersion(), { allowFailure: true });
  if (r.code !== 0) {
    return fail(node, 'docker', r.stderr.trim().split('\n').pop() || 'docker is not available', 'install Docker and start it (systemctl enable --now docker); the SSH user must be able to run docker');
  }
  return ok(node, 'docker', `engine ${r.stdout.trim()}`);
}

export async function checkCompose(session: Session, node: InventoryNode): Promise<CheckResult> {
  try {
    const flavor = await session.composeFlavor(node);
    return ok(node.name, 'compose', flavor === 'v2' ? 'docker compose (v2 plugin)' : 'docker-compose (v1)');
  } catch (e) {
    return fail(node.name, 'compose', errorMessage(e), 'install the compose plugin (docker-compose-plugin) or docker-compose');
  }
}

export async function checkDisk(node: string, ex: Executor, dir: string): Promise<CheckResult> {
  const r = await ex.exec(files.freeKiB(dir), { allowFailure: true });
  const kib = Number(r.stdout.trim());
  if (r.code !== 0 || !Number.isFinite(kib)) return warn(node, 'disk', 'could not read free space', `check df -h ${dir} by hand`);
  const gib = (kib / 1024 / 1024).toFixed(1);
  if (kib < MIN_FREE_KIB) return fail(node, 'disk', `${gib} GiB free under ${dir}`, 'free at least 2 GiB: images and logs need room');
  return ok(node, 'disk', `${gib} GiB free under ${dir}`);
}

export async function checkPort(session: Session, node: InventoryNode): Promise<CheckResult> {
  const ex = session.on(node);
  const port = session.inv.cluster.port;
  const owners = (await ex.exec(docker.publishing(port), { allowFailure: true })).stdout.split('\n').filter(Boolean);
  const ours = containerName(session.inv);
  if (owners.includes(ours)) return ok(node.name, 'port', `${port} is published by ${ours}`);
  if (owners.length > 0) return fail(node.name, 'port', `${port} is published by container ${owners[0]}`, `stop that container or change cluster.port`);
  const listener = (await ex.exec(files.listening(port), { allowFailure: true })).stdout.trim();
  if (listener) return fail(node.name, 'port', `${port} is already in use on the host`, `find the process with: ss -ltnp 'sport = :${port}'`);
  return ok(node.name, 'port', `${port} is free`);
}

export async function checkClock(node: string, ex: Executor): Promise<CheckResult> {
  const before = Date.now();
  const r = await ex.exec(files.epochSeconds(), { allowFailure: true });
  const after = Date.now();
  const remote = Number(r.stdout.trim()) * 1000;
  if (r.code !== 0 || !Number.isFinite(remote)) return warn(node, 'clock', 'could not read the clock', 'check that date works on the host');
  const offset = (remote - (before + after) / 2) / 1000;
  const text = `offset ${offset >= 0 ? '+' : ''}${offset.toFixed(2)} s`;
  if (Math.abs(offset) > MAX_CLOCK_OFFSET_S) return warn(node, 'clock', text, 'enable time sync (chrony or systemd-timesyncd): tokens and logs use the clock');
  return ok(node, 'clock', text);
}

export async function checkDatabase(dial: Dialer, node: InventoryNode, ex: Executor, dsnText: string, label: 'mysql' | 'log-db'): Promise<CheckResult> {
  let dsn: DatabaseDsn;
  try {
    dsn = parseDatabaseDsn(dsnText);
  } catch {
    return fail(node.name, label, 'the DSN does not parse', 'run newapi-cluster validate');
  }
  const where = `${dsn.host}:${dsn.port}/${dsn.database}`;
  if (dsn.kind === 'postgres') {
    return warn(node.name, label, `PostgreSQL at ${dsn.host}:${dsn.port} is not probed`, 'check the connection from the node by hand (psql)');
  }
  let conn: Awaited<ReturnType<Dialer['openMysqlVia']>> | undefined;
  try {
    conn = await dial.openMysqlVia(ex, dsn);
  } catch (e) {
    return databaseFailure(node.name, label, where, e);
  }
  try {
    const [rows] = await conn.db.query('SELECT DEFAULT_CHARACTER_SET_NAME AS cs FROM information_schema.SCHEMATA WHERE SCHEMA_NAME = ?', [dsn.database]);
    const charset = (rows as { cs?: string }[])[0]?.cs;
    if (!charset) return fail(node.name, label, `database ${dsn.database} does not exist`, `CREATE DATABASE \`${dsn.database}\` CHARACTER SET utf8mb4`);
    if (!ACCEPTED_CHARSETS.includes(charset.toLowerCase())) {
      return fail(node.name, label, `database ${dsn.database} uses charset ${charset}; New API panics at start-up`, `ALTER DATABASE \`${dsn.database}\` CHARACTER SET utf8mb4 COLLATE utf8mb4_unicode_ci`);
    }
    if (label === 'mysql' && node.role === 'master') {
      const missing = await missingMigrationPrivileges(conn.db, dsn.database);
      if (missing.length > 0) {
        return fail(node.name, label, `${where}: ${charset}, but the user lacks ${missing.join(', ')} needed for migrations`, `GRANT ALL PRIVILEGES ON \`${dsn.database}\`.* TO the user`);
      }
    }
    return ok(node.name, label, `${where}, ${charset}${node.role === 'master' && label === 'mysql' ? ', migration privileges' : ''}`);
  } catch (e) {
    return databaseFailure(node.name, label, where, e);
  } finally {
    await conn.close();
  }
}

/** Below this, a large logs table is not worth a warning. */
const LOGS_WARN_BYTES = 64 * 1024 * 1024;

/** The database's size and its three largest tables; a warning when New API's logs table dominates (new-api #5342). */
export async function checkDatabaseSize(dial: Dialer, node: InventoryNode, ex: Executor, dsnText: string): Promise<CheckResult | undefined> {
  let dsn: DatabaseDsn;
  try {
    dsn = parseDatabaseDsn(dsnText);
  } catch {
    return undefined;
  }
  if (dsn.kind !== 'mysql') return undefined;
  let conn: Awaited<ReturnType<Dialer['openMysqlVia']>> | undefined;
  try {
    conn = await dial.openMysqlVia(ex, dsn);
    const [rows] = await conn.db.query(
      'SELECT TABLE_NAME AS name, COALESCE(DATA_LENGTH, 0) + COALESCE(INDEX_LENGTH, 0) AS bytes FROM information_schema.TABLES WHERE TABLE_SCHEMA = ? ORDER BY bytes DESC',
      [dsn.database],
    );
    const tables = (rows as { name: string; bytes: number | string }[]).map((r) => ({ name: r.name, bytes: Number(r.bytes) }));
    return sizeResult(node.name, tables);
  } catch (e) {
    return warn(node.name, 'db-size', `could not read the table sizes: ${errorMessage(e).split('\n')[0]}`, 'the user may lack access to information_schema');
  } finally {
    await conn?.close();
  }
}

export function sizeResult(node: string, tables: { name: string; bytes: number }[]): CheckResult {
  const total = tables.reduce((a, t) => a + t.bytes, 0);
  const top = [...tables].sort((a, b) => b.bytes - a.bytes).slice(0, 3);
  const detail = `${human(total)} in ${tables.length} tables${top.length ? `; largest: ${top.map((t) => `${t.name} ${human(t.bytes)}`).join(', ')}` : ''}`;
  const logs = tables.find((t) => t.name === 'logs')?.bytes ?? 0;
  if (logs >= LOGS_WARN_BYTES && logs * 2 >= total) {
    return warn(node, 'db-size', `${detail} (logs is ${Math.round((logs / total) * 100)} %)`, 'move request logs to their own database (database.logDsn, LOG_SQL_DSN), and take backups with --no-logs');
  }
  return ok(node, 'db-size', detail);
}

function human(bytes: number): string {
  if (bytes < 1024 * 1024) return `${(bytes / 1024).toFixed(0)} KB`;
  if (bytes < 1024 ** 3) return `${(bytes / 1024 / 1024).toFixed(1)} MB`;
  return `${(bytes / 1024 ** 3).toFixed(2)} GB`;
}

const MIGRATION_PRIVILEGES = ['CREATE', 'ALTER', 'INDEX', 'DROP', 'SELECT', 'INSERT', 'UPDATE', 'DELETE'];

async function missingMigrationPrivileges(db: Pick<import('mysql2/promise').Connection, 'query'>, database: string): Promise<string[]> {
  const [rows] = await db.query('SHOW GRANTS FOR CURRENT_USER()');
  const grants = (rows as Record<string, string>[]).map((r) => Object.values(r)[0] ?? '');
  const have = new Set<string>();
  const escaped = database.replace(/[.*+?^${}()|[\]\\]/g, '\\$&').replace(/_/g, '(\\\\_|_)');
  const onDb = new RegExp(`^GRANT (.+) ON (\\*|\`${escaped}\`)\\.\\* TO`, 'i');
  for (const g of grants) {
    const m = onDb.exec(g);
    if (!m) continue;
    const privs = (m[1] ?? '').toUpperCase();
    if (privs.includes('ALL PRIVILEGES')) return [];
    for (const p of privs.split(',').map((s) => s.trim())) have.add(p);
  }
  return MIGRATION_PRIVILEGES.filter((p) => !have.has(p));
}

function databaseFailure(node: string, label: string, where: string, e: unknown): CheckResult {
  const err = e as { code?: string; message?: string };
  switch (err.code) {
    case 'ER_ACCESS_DENIED_ERROR':
      return fail(node, label, `${where}: access denied for the DSN's user`, 'check the user and password in SQL_DSN');
    case 'ER_BAD_DB_ERROR':
      return fail(node, label, `${where}: the database does not exist`, 'create it with CHARACTER SET utf8mb4');
    case 'ER_DBACCESS_DENIED_ERROR':
      return fail(node, label, `${where}: the user may not use this database`, 'GRANT ALL PRIVILEGES ON the database TO the user');
    default:
      return fail(node, label, `${where}: ${(err.message ?? String(e)).split('\n')[0]}`, 'is the database up, and may this node reach it (firewall, bind-address)?');
  }
}

export async function checkRedis(session: Session, node: InventoryNode, ex: Executor): Promise<CheckResult> {
  const url = parseRedisUrl(session.inv.redis.url);
  const where = `${url.host}:${url.port}/${url.db}`;
  let conn: Awaited<ReturnType<Dialer['openRedisVia']>> | undefined;
  try {
    conn = await session.deps.dial.openRedisVia(ex, url);
    const pong = await conn.redis.ping();
    if (pong !== 'PONG') return fail(node.name, 'redis', `${where}: PING answered ${pong}`, 'is this a Redis server?');
    const info = await conn.redis.info('server');
    const version = /redis_version:(\S+)/.exec(info)?.[1] ?? 'unknown';
    const needed = session.inv.nodes.length * session.inv.redis.poolSize;
    let maxclients: number | undefined;
    try {
      const cfg = (await conn.redis.config('GET', 'maxclients')) as string[];
      maxclients = Number(cfg[1]);
    } catch {
      maxclients = undefined; // CONFIG is often disabled on managed Redis
    }
    const detail = `${where}, PONG, version ${version}${maxclients ? `, maxclients ${maxclients}` : ''}`;
    if (maxclients !== undefined && Number.isFinite(maxclients) && maxclients < needed) {
      return fail(node.name, 'redis', `${detail} < ${session.inv.nodes.length} nodes × poolSize ${session.inv.redis.poolSize}`, `raise maxclients to at least ${needed} or lower redis.poolSize`);
    }
    return ok(node.name, 'redis', detail);
  } catch (e) {
    const message = errorMessage(e);
    if (/NOAUTH|WRONGPASS|invalid password|AUTH/i.test(message)) {
      return fail(node.name, 'redis', `${where}: authentication failed`, 'check the password in REDIS_CONN_STRING (redis://default:PASSWORD@host:6379)');
    }
    return fail(node.name, 'redis', `${where}: ${message.split('\n')[0]}`, 'is Redis up, bound to an address this node reaches, and not firewalled?');
  } finally {
    await conn?.close();
  }
}

/** Hash of the secrets a deployed node has, to compare nodes without showing a secret. */
export async function deployedSecretsHash(session: Session, node: InventoryNode): Promise<string | undefined> {
  const content = await session.on(node).readFile(`${session.inv.cluster.dir}/.env`);
  if (!content) return undefined;
  const env = parseEnv(content.toString('utf8'));
  return secretsHash(env.SESSION_SECRET, env.CRYPTO_SECRET);
}

export function secretsHash(session: string | undefined, crypto: string | undefined): string {
  return createHash('sha256').update(`${session ?? ''}\0${crypto ?? ''}`).digest('hex').slice(0, 12);
}

/** A balancer host: nginx, its configuration test, the firewall drains use, keepalived for a pair, the certificate. */
export async function checkBalancer(session: Session, b: BalancerHost): Promise<CheckResult[]> {
  const { ex, label } = b;
  const inv = session.inv;
  const v = await ex.exec(nginx.version(), { allowFailure: true });
  if (v.code !== 0) return [fail(label, 'nginx', 'nginx is not installed', 'apt-get install nginx (or set loadBalancer.type: none)')];
  const version = /nginx\/(\S+)/.exec(v.stderr + v.stdout)?.[1] ?? 'unknown';
  const [t, fw, ka, cert] = await Promise.all([
    ex.exec(nginx.test(), { allowFailure: true }),
    ex.exec(firewall.probe(), { allowFailure: true }),
    balancerHosts(inv).length > 1 ? ex.exec(keepalived.state(), { allowFailure: true }) : Promise.resolve(undefined),
    inv.loadBalancer.tls ? ex.readFile(tlsPaths(inv).certificate).catch(() => undefined) : Promise.resolve(undefined),
  ]);
  const out: CheckResult[] = [ok(label, 'nginx', `nginx ${version}`)];
  out.push(t.code !== 0 ? fail(label, 'nginx -t', t.stderr.trim().split('\n').slice(-1)[0] ?? 'failed', 'fix the nginx configuration before deploying') : ok(label, 'nginx -t', 'configuration test passed'));
  out.push(
    fw.stdout.trim() === 'ok'
      ? ok(label, 'firewall', 'iptables: nodes are drained without reloading nginx')
      : warn(label, 'firewall', 'iptables cannot be used here: a drain marks the node down and reloads nginx', 'install iptables and connect as root (or with sudo) so drains leave client connections alone'),
  );
  if (ka) {
    const state = ka.stdout.trim();
    out.push(state === 'missing' ? fail(label, 'keepalived', 'keepalived is not installed (a balancer pair needs it for the vip)', 'apt-get install keepalived') : ok(label, 'keepalived', `keepalived ${state}`));
  }
  if (inv.loadBalancer.tls) out.push(certificateCheck(label, cert?.toString('utf8'), inv.loadBalancer.serverName, new Date()));
  return out;
}

/** The certificate a balancer serves: present, not expired, not expiring within 30 days, covering every server name. */
export function certificateCheck(label: string, pem: string | undefined, serverName: string, now: Date): CheckResult {
  if (pem === undefined) return warn(label, 'tls', 'no certificate on this balancer yet', 'newapi-cluster deploy uploads (or obtains) it');
  let cert: X509Certificate;
  try {
    cert = new X509Certificate(pem);
  } catch {
    return fail(label, 'tls', 'the certificate file does not parse', 'newapi-cluster deploy uploads it again');
  }
  const notAfter = new Date(cert.validTo);
  const days = Math.floor((notAfter.getTime() - now.getTime()) / 86_400_000);
  const names = serverName.split(' ').filter((n) => n !== '_' && n !== '');
  const uncovered = names.filter((n) => !(/^[\d.]+$/.test(n) || n.includes(':') ? cert.checkIP(n) : cert.checkHost(n)));
  const detail = `expires ${notAfter.toISOString().slice(0, 10)} (${days} days)${names.length ? `; covers ${uncovered.length ? names.filter((n) => !uncovered.includes(n)).join(', ') || 'none of the names' : names.join(', ')}` : ''}`;
  if (days < 0) return fail(label, 'tls', `the certificate expired on ${notAfter.toISOString().slice(0, 10)}`, 'renew it (newapi-cluster tls renew with acme, or new files and a deploy)');
  if (uncovered.length) return fail(label, 'tls', `${detail}; not ${uncovered.join(', ')}`, 'the certificate must cover every loadBalancer.serverName');
  if (days < 30) return warn(label, 'tls', detail, 'renew it: newapi-cluster tls renew (acme), or new files and a deploy');
  return ok(label, 'tls', detail);
}
