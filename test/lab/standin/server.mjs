// Stand-in for the New API server (calciumion/new-api) used by the e2e lab.
//
// It behaves like New API wherever newapi-cluster depends on it:
//   - reads SQL_DSN (go-sql-driver form) and REDIS_CONN_STRING, exits 1 when either is unusable,
//     and "panics" (exit 1) unless the database charset is one New API accepts;
//   - only a master (NODE_TYPE != slave) runs "migrations", before it listens;
//   - a slave of a newer version on an older schema answers 500 to everything (issue #4144);
//   - GET /api/status -> {"success":true,"data":{"version":…,"start_time":…}};
//   - no graceful shutdown: SIGTERM/SIGINT end the process at once;
//   - POST /v1/chat/completions answers like an LLM gateway (JSON or an SSE stream).
// Lab-only knobs (environment): STANDIN_VERSION, STANDIN_UNHEALTHY=1, STANDIN_START_DELAY_MS,
// STANDIN_CHAT_DELAY_MS, STANDIN_STREAM_CHUNKS, STANDIN_STREAM_INTERVAL_MS.
import http from 'node:http';
import os from 'node:os';
import fs from 'node:fs';
import path from 'node:path';
import crypto from 'node:crypto';
import mysql from 'mysql2/promise';
import Redis from 'ioredis';

const processStart = Math.floor(Date.now() / 1000);
const VERSION = process.env.STANDIN_VERSION || 'v0.0.0';
const UNHEALTHY = process.env.STANDIN_UNHEALTHY === '1' || process.env.STANDIN_UNHEALTHY === 'true';
const IS_SLAVE = process.env.NODE_TYPE === 'slave';
const NODE_TYPE = IS_SLAVE ? 'slave' : 'master';
const PORT = Number.parseInt(process.env.PORT || '3000', 10) || 3000;
const HOSTNAME = os.hostname();
const intEnv = (name, dflt) => {
  const v = Number.parseInt(process.env[name] ?? '', 10);
  return Number.isFinite(v) && v >= 0 ? v : dflt;
};
const START_DELAY_MS = intEnv('STANDIN_START_DELAY_MS', 1500);
const CHAT_DELAY_MS = intEnv('STANDIN_CHAT_DELAY_MS', 50);
const STREAM_CHUNKS = Math.max(1, intEnv('STANDIN_STREAM_CHUNKS', 8));
const STREAM_INTERVAL_MS = intEnv('STANDIN_STREAM_INTERVAL_MS', 210);
const MIGRATE_MS = intEnv('STANDIN_MIGRATE_MS', 500);
const FRONTEND_BASE_URL = (process.env.FRONTEND_BASE_URL || '').replace(/\/+$/, '');

// ---- logging: stdout and, with --log-dir, a file ----
let logFile = null;
function ts() {
  const d = new Date();
  const p = (n) => String(n).padStart(2, '0');
  return `${d.getFullYear()}/${p(d.getMonth() + 1)}/${p(d.getDate())} - ${p(d.getHours())}:${p(d.getMinutes())}:${p(d.getSeconds())}`;
}
function log(line) {
  const s = `[${ts()}] ${line}\n`;
  process.stdout.write(s);
  if (logFile !== null) {
    try { fs.appendFileSync(logFile, s); } catch { /* ignore */ }
  }
}
function fatal(line) {
  log(`[FATAL] ${line}`);
  process.exit(1);
}
// ---- no graceful shutdown (node as PID 1 would ignore SIGTERM without a handler) ----
for (const sig of ['SIGTERM', 'SIGINT']) {
  process.on(sig, () => {
    log(`[SYS] received ${sig}, exiting immediately (no graceful shutdown)`);
    process.exit(sig === 'SIGTERM' ? 143 : 130);
  });
}

{
  const argv = process.argv.slice(2);
  for (let i = 0; i < argv.length; i++) {
    const a = argv[i];
    let dir = null;
    if (a === '--log-dir') dir = argv[++i];
    else if (a.startsWith('--log-dir=')) dir = a.slice('--log-dir='.length);
    else if (a === '--port') process.env.PORT = argv[++i];
    else if (a === '--version') { process.stdout.write(`${VERSION}\n`); process.exit(0); }
    if (dir) {
      try {
        fs.mkdirSync(dir, { recursive: true });
        const d = new Date();
        const stamp = d.toISOString().replace(/[-:T]/g, '').slice(0, 14);
        logFile = path.join(dir, `oneapi-${stamp}.log`);
        fs.appendFileSync(logFile, '');
      } catch (e) {
        log(`[WARN] cannot use log dir ${dir}: ${e.message}`);
        logFile = null;
      }
    }
  }
}

const sleep = (ms) => new Promise((r) => setTimeout(r, ms));

// ---- versions ----
function parseVersion(v) {
  const m = /^v?(\d+)(?:\.(\d+))?(?:\.(\d+))?(?:-([0-9A-Za-z.-]+))?/.exec(String(v || '').trim());
  if (!m) return null;
  return { nums: [Number(m[1]), Number(m[2] || 0), Number(m[3] || 0)], pre: m[4] || null };
}
/** semver-ish compare; unknown versions sort lowest */
function compareVersions(a, b) {
  const pa = parseVersion(a);
  const pb = parseVersion(b);
  if (!pa || !pb) return pa ? 1 : pb ? -1 : 0;
  for (let i = 0; i < 3; i++) if (pa.nums[i] !== pb.nums[i]) return pa.nums[i] < pb.nums[i] ? -1 : 1;
  if (pa.pre === pb.pre) return 0;
  if (pa.pre === null) return 1; // release > pre-release
  if (pb.pre === null) return -1;
  return pa.pre < pb.pre ? -1 : 1;
}

// ---- SQL_DSN (go-sql-driver/mysql form) ----
function parseDsn(dsn) {
  // user[:password]@tcp(host[:port])/dbname[?params]
  const at = dsn.lastIndexOf('@');
  if (at < 0) throw new Error('missing "@" in SQL_DSN');
  const cred = dsn.slice(0, at);
  const rest = dsn.slice(at + 1);
  const colon = cred.indexOf(':');
  const user = colon < 0 ? cred : cred.slice(0, colon);
  const password = colon < 0 ? '' : cred.slice(colon + 1);
  const m = /^(tcp|unix)?\(([^)]*)\)\/([^?]*)(?:\?(.*))?$/.exec(rest) || /^()()\/([^?]*)(?:\?(.*))?$/.exec(rest);
  if (!m) throw new Error('cannot parse address part of SQL_DSN (expected tcp(host:port)/db)');
  const proto = m[1] || 'tcp';
  const addr = m[2] || '127.0.0.1:3306';
  const database = decodeURIComponent(m[3] || '');
  const params = new URLSearchParams(m[4] || '');
  const out = { user, password, database, params };
  if (proto === 'unix') out.socketPath = addr;
  else {
    let host = addr;
    let port = 3306;
    const mm = /^\[?([^\]]*?)\]?(?::(\d+))?$/.exec(addr);
    if (mm) { host = mm[1] || '127.0.0.1'; port = mm[2] ? Number(mm[2]) : 3306; }
    out.host = host;
    out.port = port;
  }
  return out;
}

const ACCEPTED_CHARSETS = new Set(['utf8mb4', 'utf8', 'utf8mb3', 'gbk', 'big5', 'gb18030']);
let db = null; // mysql2 pool or null when SQL_DSN is unset (New API would use SQLite)
let memorySchema = null; // schema version when there is no MySQL

async function initDatabase() {
  const dsn = process.env.SQL_DSN || '';
  if (!dsn) {
    log('[SYS] SQL_DSN not set, using SQLite (stand-in: in-memory schema)');
    return;
  }
  if (/^postgres(ql)?:\/\//.test(dsn)) fatal('failed to initialize database: the lab stand-in supports MySQL DSNs only');
  let cfg;
  try { cfg = parseDsn(dsn); } catch (e) { fatal(`failed to initialize database: ${e.message}`); }
  log(`[SYS] using MySQL as database (${cfg.socketPath ? `unix(${cfg.socketPath})` : `tcp(${cfg.host}:${cfg.port})`}/${cfg.database})`);
  try {
    db = mysql.createPool({
      host: cfg.host, port: cfg.port, socketPath: cfg.socketPath,
      user: cfg.user, password: cfg.password, database: cfg.database || undefined,
      connectTimeout: 10000, connectionLimit: 4, enableKeepAlive: true,
    });
    const [rows] = await db.query('SELECT @@character_set_database AS cs, DATABASE() AS db');
    const cs = String(rows[0].cs || '').toLowerCase();
    if (!ACCEPTED_CHARSETS.has(cs)) {
      log(`panic: database charset is ${cs}, New API requires utf8mb4 (or utf8/gbk/big5/gb18030); ALTER DATABASE ${rows[0].db} CHARACTER SET utf8mb4`);
      process.exit(1);
    }
    log(`[SYS] database connected, charset ${cs}`);
  } catch (e) {
    fatal(`failed to initialize database: ${e.code ? `${e.code}: ` : ''}${e.message}`);
  }
}

async function initRedis() {
  const url = process.env.REDIS_CONN_STRING || '';
  if (!url) {
    log('[SYS] REDIS_CONN_STRING not set, Redis is not enabled');
    return;
  }
  log('[SYS] Redis is enabled');
  let client;
  let lastError = null;
  try {
    client = new Redis(url, {
      lazyConnect: true, connectTimeout: 5000, commandTimeout: 5000,
      maxRetriesPerRequest: 0, enableOfflineQueue: false, retryStrategy: () => null,
    });
    client.on('error', (e) => { lastError = e; });
    await Promise.race([
      (async () => { await client.connect(); await client.ping(); })(),
      sleep(5000).then(() => { throw new Error('context deadline exceeded (5s)'); }),
    ]);
    log('[SYS] Redis ping ok');
  } catch (e) {
    const why = e.message === 'Connection is closed.' && lastError ? lastError.message : e.message;
    fatal(`failed to initialize Redis: Redis ping test failed: ${why}`);
  } finally {
    try { client?.disconnect(); } catch { /* ignore */ }
  }
}

async function readSchemaVersion() {
  if (!db) return memorySchema;
  try {
    const [rows] = await db.query('SELECT version FROM standin_schema WHERE id = 1');
    return rows.length ? rows[0].version : null;
  } catch (e) {
    if (e.code === 'ER_NO_SUCH_TABLE') return null;
    throw e;
  }
}

async function migrate() {
  log(`[SYS] database migration started (version ${VERSION})`);
  await sleep(MIGRATE_MS);
  if (!db) {
    if (compareVersions(memorySchema, VERSION) < 0) memorySchema = VERSION;
  } else {
    await db.query('CREATE TABLE IF NOT EXISTS standin_schema (id INT PRIMARY KEY, version VARCHAR(64) NOT NULL)');
    const conn = await db.getConnection();
    try {
      await conn.beginTransaction();
      const [rows] = await conn.query('SELECT version FROM standin_schema WHERE id = 1 FOR UPDATE');
      const current = rows.length ? rows[0].version : null;
      if (current === null) await conn.query('INSERT INTO standin_schema (id, version) VALUES (1, ?)', [VERSION]);
      else if (compareVersions(current, VERSION) < 0) await conn.query('UPDATE standin_schema SET version = ? WHERE id = 1', [VERSION]);
      await conn.commit();
      log(`[SYS] schema ${current ?? '(none)'} -> ${compareVersions(current, VERSION) < 0 ? VERSION : current}`);
    } catch (e) {
      try { await conn.rollback(); } catch { /* ignore */ }
      throw e;
    } finally {
      conn.release();
    }
  }
  log('[SYS] database migrated');
}

// ---- slave schema gate (issue #4144) ----
let schemaTooOld = false;
let schemaSeen = null;
async function checkSchema() {
  try {
    schemaSeen = await readSchemaVersion();
    const old = compareVersions(schemaSeen, VERSION) < 0;
    if (old !== schemaTooOld) log(old ? `[ERR] schema ${schemaSeen ?? '(none)'} is older than ${VERSION}` : `[SYS] schema is now ${schemaSeen}`);
    schemaTooOld = old;
  } catch (e) {
    log(`[ERR] schema check failed: ${e.message}`);
  }
}

// ---- HTTP ----
const shortHash = (s) => (s ? crypto.createHash('sha256').update(s).digest('hex').slice(0, 16) : null);

function send(res, status, body, headers = {}) {
  const data = typeof body === 'string' ? body : JSON.stringify(body);
  res.writeHead(status, {
    'Content-Type': typeof body === 'string' ? 'text/html; charset=utf-8' : 'application/json; charset=utf-8',
    'Content-Length': Buffer.byteLength(data),
    ...headers,
  });
  res.end(data);
}

function readBody(req) {
  return new Promise((resolve, reject) => {
    const chunks = [];
    let size = 0;
    req.on('data', (c) => {
      size += c.length;
      if (size > 8 * 1024 * 1024) { reject(new Error('body too large')); req.destroy(); return; }
      chunks.push(c);
    });
    req.on('end', () => resolve(Buffer.concat(chunks).toString('utf8')));
    req.on('error', reject);
  });
}

async function chatCompletions(req, res) {
  let body;
  try { body = JSON.parse((await readBody(req)) || '{}'); } catch {
    send(res, 400, { error: { message: 'invalid JSON body', type: 'invalid_request_error' } });
    return;
  }
  const id = `chatcmpl-${crypto.randomBytes(12).toString('hex')}`;
  const created = Math.floor(Date.now() / 1000);
  const model = typeof body.model === 'string' && body.model ? body.model : 'standin';
  const words = ['Hello', ' from', ' the', ' New', ' API', ' stand-in', ` ${VERSION}`, ` on ${HOSTNAME}.`];
  const standin = { version: VERSION, host: HOSTNAME, node_type: NODE_TYPE };
  if (body.stream === true) {
    res.writeHead(200, {
      'Content-Type': 'text/event-stream',
      'Cache-Control': 'no-cache',
      Connection: 'keep-alive',
      'X-Accel-Buffering': 'no',
    });
    let closed = false;
    res.on('close', () => { closed = true; });
    for (let i = 0; i < STREAM_CHUNKS && !closed; i++) {
      const last = i === STREAM_CHUNKS - 1;
      const chunk = {
        id, object: 'chat.completion.chunk', created, model, system_fingerprint: VERSION, standin,
        choices: [{ index: 0, delta: i === 0 ? { role: 'assistant', content: words[i % words.length] } : { content: words[i % words.length] }, finish_reason: last ? 'stop' : null }],
      };
      res.write(`data: ${JSON.stringify(chunk)}\n\n`);
      if (!last) await sleep(STREAM_INTERVAL_MS);
    }
    if (!closed) res.end('data: [DONE]\n\n');
    return;
  }
  if (CHAT_DELAY_MS) await sleep(CHAT_DELAY_MS);
  send(res, 200, {
    id, object: 'chat.completion', created, model, system_fingerprint: VERSION, standin,
    choices: [{ index: 0, message: { role: 'assistant', content: words.join('') }, finish_reason: 'stop' }],
    usage: { prompt_tokens: 8, completion_tokens: words.length, total_tokens: 8 + words.length },
  });
}

async function handle(req, res) {
  res.setHeader('X-Standin-Host', HOSTNAME);
  res.setHeader('X-Standin-Version', VERSION);
  const url = new URL(req.url || '/', 'http://localhost');
  const p = url.pathname;
  if (UNHEALTHY) { send(res, 503, { success: false }); return; }
  if (schemaTooOld) {
    send(res, 500, { success: false, message: 'schema is older than this version (issue #4144)' });
    return;
  }
  if (req.method === 'GET' && p === '/api/status') {
    send(res, 200, {
      success: true, message: '',
      data: { version: VERSION, start_time: processStart, node_type: NODE_TYPE, system_name: 'New API (lab stand-in)' },
    });
    return;
  }
  if (req.method === 'GET' && p === '/api/standin') {
    // lab-only introspection: which secrets (by hash) and settings this process got
    send(res, 200, {
      success: true,
      data: {
        version: VERSION, node_type: NODE_TYPE, hostname: HOSTNAME, pid: process.pid, start_time: processStart,
        schema: schemaSeen,
        session_secret_sha256: shortHash(process.env.SESSION_SECRET),
        crypto_secret_sha256: shortHash(process.env.CRYPTO_SECRET),
        sql_dsn_sha256: shortHash(process.env.SQL_DSN),
        redis_conn_string_sha256: shortHash(process.env.REDIS_CONN_STRING),
        env_names: Object.keys(process.env).filter((k) => !k.startsWith('STANDIN_')).sort(),
      },
    });
    return;
  }
  if (req.method === 'POST' && (p === '/v1/chat/completions' || p === '/pg/chat/completions')) {
    await chatCompletions(req, res);
    return;
  }
  if (req.method === 'GET' && p === '/v1/models') {
    send(res, 200, { object: 'list', data: [{ id: 'standin', object: 'model', owned_by: 'newapi-lab' }] });
    return;
  }
  if (p.startsWith('/api/') || p.startsWith('/v1/') || p === '/api' || p === '/v1') {
    send(res, 404, { success: false, message: 'not found' });
    return;
  }
  // web UI routes: a slave with FRONTEND_BASE_URL redirects them (New API's NoRoute handler)
  if (IS_SLAVE && FRONTEND_BASE_URL) {
    res.writeHead(301, { Location: `${FRONTEND_BASE_URL}${req.url}`, 'Content-Length': 0 });
    res.end();
    return;
  }
  send(res, 200, `<!doctype html><title>New API</title><p>New API stand-in ${VERSION} (${NODE_TYPE}) on ${HOSTNAME}</p>\n`);
}

async function main() {
  log(`[SYS] New API ${VERSION} started (stand-in, ${NODE_TYPE}, host ${HOSTNAME}, pid ${process.pid})`);
  if (IS_SLAVE && FRONTEND_BASE_URL) log(`[SYS] FRONTEND_BASE_URL is set to ${FRONTEND_BASE_URL}, non-API routes redirect there`);
  if (!IS_SLAVE && FRONTEND_BASE_URL) log('[SYS] FRONTEND_BASE_URL is ignored on master node');
  await initDatabase();
  await initRedis();
  if (!UNHEALTHY) {
    if (!IS_SLAVE) {
      try { await migrate(); } catch (e) { fatal(`failed to migrate database: ${e.message}`); }
    } else {
      await checkSchema();
      setInterval(checkSchema, 1000).unref();
    }
  }
  if (START_DELAY_MS) await sleep(START_DELAY_MS);
  const server = http.createServer((req, res) => {
    const t0 = process.hrtime.bigint();
    res.on('finish', () => {
      const ms = Number(process.hrtime.bigint() - t0) / 1e6;
      const ip = (req.socket.remoteAddress || '').replace(/^::ffff:/, '');
      log(`[GIN] | ${res.statusCode} | ${ms.toFixed(3)}ms | ${ip} | ${req.method} "${req.url}"`);
    });
    handle(req, res).catch((e) => {
      log(`[ERR] ${req.method} ${req.url}: ${e.stack || e.message}`);
      if (!res.headersSent) send(res, 500, { success: false, message: 'internal error' });
      else res.destroy();
    });
  });
  // like Go's net/http defaults: no idle/request timeouts (avoids keep-alive races behind nginx)
  server.keepAliveTimeout = 0;
  server.requestTimeout = 0;
  server.headersTimeout = 0;
  server.on('error', (e) => fatal(`listen on :${PORT} failed: ${e.message}`));
  server.listen(PORT, '0.0.0.0', () => {
    log(`[SYS] server listening on :${PORT}${UNHEALTHY ? ' (unhealthy variant: every request gets 503)' : ''}`);
  });
}

main().catch((e) => fatal(e.stack || e.message));
