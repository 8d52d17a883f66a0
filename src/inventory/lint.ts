/**
 * Rules that relate several fields, and warnings. They read the resolved document defensively,
 * so they run even when the schema found problems elsewhere: the operator sees every problem
 * of the file at once.
 */
import { envValue } from '../render/render.js';
import { DsnError, parseDatabaseDsn, parseRedisUrl } from './dsn.js';
import { isVersionTag, parseImageRef } from './image.js';
import { error, warning, type Problem } from './problems.js';

type Doc = Record<string, unknown>;

const obj = (v: unknown): Doc => (v !== null && typeof v === 'object' && !Array.isArray(v) ? (v as Doc) : {});
const str = (v: unknown): string | undefined => (typeof v === 'string' ? v : undefined);
const num = (v: unknown, fallback: number): number => (typeof v === 'number' ? v : fallback);

/** Variables New API's server sets from its own fields, or does not read at all (SPEC §1). */
const MANAGED_ENV: Record<string, string> = {
  SQL_DSN: 'database.dsn',
  LOG_SQL_DSN: 'database.logDsn',
  REDIS_CONN_STRING: 'redis.url',
  REDIS_POOL_SIZE: 'redis.poolSize',
  SESSION_SECRET: 'secrets.sessionSecret',
  CRYPTO_SECRET: 'secrets.cryptoSecret',
  NODE_TYPE: 'nodes[].role',
  SYNC_FREQUENCY: 'cluster.syncFrequency',
  BATCH_UPDATE_ENABLED: 'cluster.batchUpdate.enabled',
  BATCH_UPDATE_INTERVAL: 'cluster.batchUpdate.interval',
  TZ: 'cluster.timezone',
  FRONTEND_BASE_URL: 'cluster.frontendBaseUrl',
  PORT: 'cluster.port (the container always listens on 3000)',
};
const IGNORED_BY_NEW_API = ['REDIS_PASSWORD', 'REDIS_MASTER_NAME', 'REDIS_CONN_POOL_SIZE'];

export function lintInventory(doc: unknown, fromVariables: ReadonlySet<string>): Problem[] {
  const root = obj(doc);
  const cluster = obj(root.cluster);
  const database = obj(root.database);
  const redis = obj(root.redis);
  const secrets = obj(root.secrets);
  const lb = obj(root.loadBalancer);
  const rollout = obj(root.rollout);
  const nodes = Array.isArray(root.nodes) ? root.nodes.map(obj) : [];
  const out: Problem[] = [];

  // Exactly one master: New API treats any node without NODE_TYPE=slave as a master, and two
  // masters would both run migrations and both run the periodic jobs.
  const masters = nodes.map((n, i) => ({ n, i })).filter(({ n }) => n.role === 'master');
  if (Array.isArray(root.nodes) && nodes.length > 0 && masters.length === 0) {
    out.push(error('nodes', 'no node has role: master', 'set role: master on exactly one node'));
  }
  for (const { i } of masters.slice(1)) {
    out.push(error(`nodes/${i}/role`, `a second master (nodes/${masters[0]?.i} is the master)`, 'a cluster has exactly one master; make this node a slave'));
  }

  const firstIndex = (key: 'name' | 'host') => {
    const seen = new Map<string, number>();
    nodes.forEach((n, i) => {
      const v = str(n[key]);
      if (v === undefined) return;
      const k = key === 'host' ? v.toLowerCase() : v;
      const prev = seen.get(k);
      if (prev === undefined) seen.set(k, i);
      else out.push(error(`nodes/${i}/${key}`, `"${v}" is already used by nodes/${prev}`, key === 'name' ? 'give every node its own name' : 'one node per host: every node publishes cluster.port'));
    });
  };
  firstIndex('name');
  firstIndex('host');

  const lbType = str(lb.type) ?? 'nginx';
  const lbHosts = [...(str(lb.host) ? [str(lb.host)!] : []), ...(Array.isArray(lb.hosts) ? lb.hosts.map(str).filter((h): h is string => h !== undefined) : [])];
  if (lbType === 'nginx' && root.loadBalancer !== undefined && lbHosts.length === 0) {
    out.push(error('loadBalancer/host', 'required when type is nginx', 'the host that runs nginx (or hosts: [a, b] for a pair), or set type: none to print the upstream instead'));
  }
  if (lb.host !== undefined && lb.hosts !== undefined) {
    out.push(error('loadBalancer/host', 'cannot be used with loadBalancer.hosts', 'list every balancer under hosts: [a, b] and remove host'));
  }
  if (root.loadBalancer === undefined) {
    out.push(error('loadBalancer', 'required', 'add loadBalancer: { host: …, serverName: … }, or loadBalancer: { type: none }'));
  }
  const seenLb = new Map<string, number>();
  lbHosts.forEach((h, i) => {
    const prev = seenLb.get(h.toLowerCase());
    if (prev !== undefined) out.push(error(`loadBalancer/hosts/${i}`, `"${h}" is already listed (loadBalancer/hosts/${prev})`, 'list each balancer host once'));
    else seenLb.set(h.toLowerCase(), i);
  });
  const vip = str(lb.vip);
  if (lbType === 'nginx' && lbHosts.length >= 2 && vip === undefined) {
    out.push(error('loadBalancer/vip', 'required with two or more balancer hosts', 'the floating address keepalived moves to a healthy balancer, and clients use, e.g. vip: 10.0.0.100'));
  }
  if (vip !== undefined && lbType === 'nginx' && lbHosts.length === 1) {
    out.push(warning('loadBalancer/vip', 'with one balancer host, nothing can take the address over', 'add a second host under loadBalancer.hosts, or remove vip'));
  }
  if (vip !== undefined && [...lbHosts, ...nodes.map((n) => str(n.host) ?? '')].some((h) => h.toLowerCase() === vip.toLowerCase())) {
    out.push(error('loadBalancer/vip', `${vip} is already a host's own address`, 'the vip must be a free address on the balancers\' network'));
  }
  const clusterPort = num(cluster.port, 3000);
  const listen = num(lb.listen, 80);
  nodes.forEach((n, i) => {
    const nodeHost = str(n.host)?.toLowerCase();
    if (lbType === 'nginx' && nodeHost !== undefined && lbHosts.some((h) => h.toLowerCase() === nodeHost) && listen === clusterPort) {
      out.push(error('loadBalancer/listen', `${listen} is also cluster.port on ${nodeHost} (nodes/${i})`, 'use another port for nginx or for the nodes'));
    }
  });

  const tls = obj(lb.tls);
  if (lb.tls !== undefined) {
    const files = tls.certificateFile !== undefined || tls.keyFile !== undefined;
    if (lbType !== 'nginx') out.push(error('loadBalancer/tls', 'needs a balancer managed by newapi-cluster (type: nginx)', 'terminate TLS in your own balancer, or set type: nginx'));
    if (files && tls.acme !== undefined) out.push(error('loadBalancer/tls', 'has both certificate files and acme', 'choose one: your own certificateFile and keyFile, or acme to have the tool obtain one'));
    else if (!files && tls.acme === undefined) out.push(error('loadBalancer/tls', 'needs certificateFile and keyFile, or acme', 'e.g. tls: { certificateFile: certs/fullchain.pem, keyFile: certs/privkey.pem }'));
    else if (files && (tls.certificateFile === undefined || tls.keyFile === undefined)) {
      out.push(error(`loadBalancer/tls/${tls.certificateFile === undefined ? 'certificateFile' : 'keyFile'}`, 'required with the other one', 'a certificate file and its private key file go together'));
    }
    if (tls.acme !== undefined) {
      const names = (str(lb.serverName) ?? '_').split(' ');
      if (names.some((n) => n === '_' || n.includes('*') || n.startsWith('~') || n.startsWith('.'))) {
        out.push(error('loadBalancer/serverName', 'must list the exact names to certify when tls.acme is set (no _, no wildcards)', 'e.g. serverName: api.example.com'));
      }
    }
    if (num(tls.listen, 443) === listen) out.push(error('loadBalancer/tls/listen', `${listen} is also loadBalancer.listen`, 'HTTPS and HTTP need their own ports (443 and 80)'));
  }

  // The server holds quota in memory for one batch interval; draining for less loses it.
  const batch = obj(cluster.batchUpdate);
  const interval = num(batch.interval, 5);
  const drain = num(rollout.drainSeconds, 10);
  if (drain < interval) {
    out.push(error('rollout/drainSeconds', `${drain} is below cluster.batchUpdate.interval (${interval})`, 'a node keeps unsaved quota in memory for one batch interval: drain at least that long'));
  }
  const drainTimeout = num(rollout.drainTimeoutSeconds, 120);
  if (drainTimeout < drain) {
    out.push(error('rollout/drainTimeoutSeconds', `${drainTimeout} is below rollout.drainSeconds (${drain})`, 'the longest wait for requests in flight includes the shortest drain: e.g. drainSeconds 10, drainTimeoutSeconds 120'));
  }

  // A gate that must hold longer than it may wait can never pass.
  const minReady = num(rollout.minReadySeconds, 5);
  const healthTimeout = num(rollout.healthTimeoutSeconds, 120);
  if (minReady >= healthTimeout) {
    out.push(error('rollout/minReadySeconds', `${minReady} is not below rollout.healthTimeoutSeconds (${healthTimeout}), so no health gate could ever pass`, `lower minReadySeconds or raise healthTimeoutSeconds (e.g. 5 and 120)`));
  }

  const dir = str(cluster.dir);
  if (dir !== undefined && isSystemFolder(dir)) {
    out.push(error('cluster/dir', `${dir} is a system folder: the tool writes there, and remove-node --purge would delete it`, 'use a folder of its own, e.g. /opt/new-api'));
  }

  // The bundled compose file puts each node on a bridge network: inside the container, 127.0.0.1
  // is the container itself, not the host (check's tunnels would pass, the server would not).
  const bundledTemplates = root.templates === undefined || root.templates === null;
  const loopback = (host: string | undefined, path: string, what: string) => {
    if (host === undefined || !isLoopback(host)) return;
    const message = `${what} is on ${host}, which inside a node's container is the container itself`;
    const hint = 'write the address the nodes reach it at (e.g. the host\'s LAN address); with your own compose template on network_mode: host, loopback works';
    out.push(bundledTemplates ? error(path, message, hint) : warning(path, message, hint));
  };

  const dsn = str(database.dsn);
  if (dsn) checkDsn(out, 'database/dsn', dsn, fromVariables);
  for (const [path, value, what] of [['database/dsn', dsn, 'the database'], ['database/logDsn', str(database.logDsn), 'the log database']] as const) {
    if (!value) continue;
    try {
      loopback(parseDatabaseDsn(value).host, path, what);
    } catch {
      // reported by checkDsn
    }
  }
  const redisText = str(redis.url);
  if (redisText) {
    try {
      loopback(parseRedisUrl(redisText).host, 'redis/url', 'Redis');
    } catch {
      // reported below
    }
  }
  const logDsn = str(database.logDsn);
  if (logDsn) checkDsn(out, 'database/logDsn', logDsn, fromVariables);

  const redisUrl = str(redis.url);
  if (redisUrl) {
    try {
      const parsed = parseRedisUrl(redisUrl);
      if (parsed.password && !fromVariables.has('redis/url')) {
        out.push(clearText('redis/url', 'REDIS_CONN_STRING'));
      }
    } catch (e) {
      out.push(error('redis/url', e instanceof DsnError ? e.message : 'is not a Redis URL', 'e.g. redis://default:password@10.0.0.5:6379/0'));
    }
    checkEnvValue(out, 'redis/url', redisUrl);
  }

  for (const key of ['sessionSecret', 'cryptoSecret'] as const) {
    const value = str(secrets[key]);
    const path = `secrets/${key}`;
    if (value === undefined) continue;
    checkEnvValue(out, path, value);
    if (!fromVariables.has(path)) out.push(clearText(path, key === 'sessionSecret' ? 'SESSION_SECRET' : 'CRYPTO_SECRET'));
    if (value.length >= 32 && new Set(value).size < 10) {
      out.push(warning(path, 'is weak (fewer than 10 different characters)', 'generate one: openssl rand -hex 32'));
    }
  }

  const image = str(cluster.image);
  if (image) {
    const { tag, digest } = parseImageRef(image);
    if (digest === undefined && (tag === undefined || tag === 'latest')) {
      out.push(warning('cluster/image', `${tag === undefined ? 'has no tag, so Docker uses :latest' : 'uses :latest'}, which New API re-points at every release, release candidates included`, 'name a version, e.g. calciumion/new-api:v0.9.20'));
    } else if (digest === undefined && !isVersionTag(tag)) {
      out.push(warning('cluster/image', `tag "${tag}" is not a version, so health checks cannot confirm what runs`, 'name a version, e.g. :v0.9.20'));
    }
  }

  const mirror = str(obj(root.images).registryMirror);
  if (image && mirror && parseImageRef(image).digest !== undefined) {
    out.push(error('images/registryMirror', 'cannot be used with an image pinned by digest', 'pin the image by tag, or pull it without a mirror'));
  }

  const frontend = str(cluster.frontendBaseUrl);
  const serverNames = (str(lb.serverName) ?? '_').split(' ');
  if (frontend) {
    checkEnvValue(out, 'cluster/frontendBaseUrl', frontend);
    let frontendHost: string | undefined;
    try {
      frontendHost = new URL(frontend).hostname;
    } catch {
      frontendHost = undefined;
    }
    if (frontendHost && serverNames.includes(frontendHost)) {
      out.push(warning('cluster/frontendBaseUrl', `points at the balancer's own server name (${frontendHost})`, 'slaves 301-redirect every web route there; the rendered nginx config sends web routes to the master only, so keep it that way if you edit the config by hand'));
    }
  }

  const env = obj(cluster.env);
  for (const key of Object.keys(env)) {
    const path = `cluster/env/${key}`;
    if (!/^[A-Za-z_][A-Za-z0-9_]*$/.test(key)) {
      out.push(error(path, 'is not a valid environment variable name', 'use letters, digits and _, not starting with a digit'));
    } else if (MANAGED_ENV[key]) {
      out.push(error(path, `is set by newapi-cluster from ${MANAGED_ENV[key]}`, `remove it from cluster.env and set ${MANAGED_ENV[key]} instead`));
    } else if (IGNORED_BY_NEW_API.includes(key)) {
      out.push(error(path, 'is not read by New API', key === 'REDIS_PASSWORD' ? 'put the password in redis.url: redis://default:PASSWORD@host:6379' : 'remove it'));
    }
    const value = env[key];
    if (typeof value === 'string') checkEnvValue(out, path, value);
  }

  return out;
}

function checkDsn(out: Problem[], path: string, dsn: string, fromVariables: ReadonlySet<string>): void {
  try {
    const parsed = parseDatabaseDsn(dsn);
    if (parsed.password && !fromVariables.has(path)) {
      out.push(clearText(path, path.endsWith('logDsn') ? 'LOG_SQL_DSN' : 'SQL_DSN'));
    }
  } catch (e) {
    out.push(error(path, e instanceof DsnError ? e.message : 'is not a DSN', 'MySQL: user:password@tcp(host:3306)/new-api — PostgreSQL: postgres://user:password@host:5432/new-api'));
  }
  checkEnvValue(out, path, dsn);
}

/**
 * Values end up as lines of the node's .env file, read by both compose v1 (python-dotenv) and
 * v2 (compose-go). envValue() picks the form both read back exactly, and names the reason when
 * there is none: a line break would smuggle in a second variable, compose v1 expands ${…} inside
 * any quotes, and a few mixes (a quote or \\ with $NAME, a final backslash with what needs
 * quotes) have no form both read alike. The reason never quotes the value, which may be a secret.
 */
export function checkEnvValue(out: Problem[], path: string, value: string): void {
  envValue(value, (reason, hint) => {
    out.push(error(path, reason, hint));
    return '';
  });
}

function clearText(path: string, variable: string) {
  return warning(path, 'holds a secret written in clear in the inventory', `move it to .newapi-cluster.env as ${variable}=… and write \${${variable}} here`);
}

/** Folders the system owns: a node's working folder there would be written into, and purged. */
const SYSTEM_FOLDERS = ['/bin', '/boot', '/dev', '/etc', '/home', '/lib', '/lib32', '/lib64', '/libx32', '/media', '/mnt', '/opt', '/proc', '/root', '/run', '/sbin', '/srv', '/sys', '/tmp', '/usr', '/var', '/snap'];
const SYSTEM_TREES = ['/bin', '/boot', '/dev', '/etc', '/lib', '/lib32', '/lib64', '/libx32', '/proc', '/run', '/sbin', '/sys', '/usr/bin', '/usr/sbin', '/usr/lib', '/usr/include', '/usr/share', '/var/lib/docker', '/var/lib/containerd', '/var/lib/mysql', '/var/lib/dpkg', '/var/lib/apt', '/var/log', '/var/cache', '/var/spool', '/var/run'];

export function isSystemFolder(dir: string): boolean {
  const d = dir.replace(/\/+$/, '') || '/';
  if (d === '/' || SYSTEM_FOLDERS.includes(d) || ['/usr/local', '/var/lib', '/var/log', '/var/cache', '/var/tmp', '/var/opt'].includes(d)) return true;
  // /home/alice is someone's home; /home/alice/new-api is fine.
  if (/^\/home\/[^/]+$/.test(d)) return true;
  return SYSTEM_TREES.some((t) => d === t || d.startsWith(`${t}/`));
}

export function isLoopback(host: string): boolean {
  const h = host.toLowerCase().replace(/^\[|\]$/g, '');
  return h === 'localhost' || h.endsWith('.localhost') || /^127\./.test(h) || h === '::1' || h === '0:0:0:0:0:0:0:1' || h === '0.0.0.0';
}
