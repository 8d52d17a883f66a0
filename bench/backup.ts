/**
 * Backup engine figures on the lab's MariaDB (run with `npx tsx bench/backup.ts`; the lab must be
 * up): a ~200 MB New API-like database (channels, tokens, users, and a logs table with realistic
 * text) is built in a scratch database, then, in one run:
 *   - this engine's dump (dumpMysql: mariadb-dump → row counter → gzip → file), compiled to
 *     JavaScript and run in a child Node process, so its peak RSS (process.resourceUsage().maxRSS)
 *     is the engine's alone;
 *   - `mariadb-dump … | gzip > file`, the same flags, as a shell pipeline;
 *   - this engine's restore (restoreMysql: gunzip → mariadb) of the engine's file, in a child;
 *   - `gunzip -c file | mariadb`, as a shell pipeline, of the same file.
 * Dumps run three times each, alternating, after a warm-up; restores once each. Targets: the engine's
 * dump within 1.5× of the pipeline's time, the engine's Node process under 150 MB RSS. The
 * scratch databases and user are dropped at the end, whatever happens.
 *
 *   --rows N   log rows (default 440000: about 200 MB of SQL)
 */
import { execFileSync, spawn } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { existsSync, readFileSync, writeFileSync } from 'node:fs';
import { mkdtemp, readFile, rm, stat, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { parseEnv } from 'node:util';
import { optionFileValue, type DbTarget } from '../src/probes/mysql-dump.js';

const LAB_ENV_FILE = '/var/lib/newapi-lab/lab.env';
const SRC = 'newapi_bench';
const DST = 'newapi_bench_restore';
const USER = 'newapi_bench';
const HOST = '10.77.0.1';
const PORT = 3306;
const FLAGS = ['--single-transaction', '--quick', '--routines', '--triggers', '--events', '--hex-blob', '--default-character-set=utf8mb4', '--no-tablespaces', '--max-allowed-packet=1G'];

// ---------------------------------------------------------------------------------------------
// The engine in a child: compiled to plain JavaScript (as in the package) and run by plain Node,
// one operation per process, so its time and peak RSS (process.resourceUsage().maxRSS) are the
// engine's alone, without tsx's loader.
// ---------------------------------------------------------------------------------------------

interface ChildRequest {
  op: 'dump' | 'restore';
  target: DbTarget;
  file: string;
}
interface ChildReport {
  seconds: number;
  maxRssMb: number;
  rawBytes: number;
  bytes: number;
  rows?: number;
}

const ROOT = fileURLToPath(new URL('..', import.meta.url));
/** Under node_modules, so the compiled engine resolves mysql2 as the package does. */
const ENGINE_DIR = join(ROOT, 'node_modules', '.cache', 'newapi-bench-backup');

const CHILD_JS = `
import { createReadStream, createWriteStream, statSync } from 'node:fs';
import { createGunzip } from 'node:zlib';
import { dumpMysql, restoreMysql } from './probes/mysql-dump.js';
let text = '';
for await (const d of process.stdin) text += d;
const req = JSON.parse(text);
const t0 = performance.now();
let report;
if (req.op === 'dump') {
  const r = await dumpMysql(req.target, createWriteStream(req.file, { mode: 0o600 }));
  report = { seconds: (performance.now() - t0) / 1000, rawBytes: r.rawBytes, bytes: r.bytes, rows: r.rows };
} else {
  const r = await restoreMysql(req.target, createReadStream(req.file).pipe(createGunzip()));
  report = { seconds: (performance.now() - t0) / 1000, rawBytes: r.bytes, bytes: statSync(req.file).size };
}
report.maxRssMb = process.resourceUsage().maxRSS / 1024;
process.stdout.write(JSON.stringify(report));
`;

function compileEngine(): void {
  execFileSync(join(ROOT, 'node_modules', '.bin', 'tsc'), ['--outDir', ENGINE_DIR, '--rootDir', join(ROOT, 'src'), '--module', 'NodeNext', '--moduleResolution', 'NodeNext', '--target', 'ES2022', '--skipLibCheck', '--types', 'node', '--resolveJsonModule', join(ROOT, 'src/probes/mysql-dump.ts')], { stdio: 'inherit' });
  writeFileSync(join(ENGINE_DIR, 'child.mjs'), CHILD_JS);
  writeFileSync(join(ENGINE_DIR, 'package.json'), '{"type":"module"}\n');
}

function runChild(req: ChildRequest): Promise<ChildReport> {
  return new Promise((resolve, reject) => {
    const p = spawn(process.execPath, [join(ENGINE_DIR, 'child.mjs')], { stdio: ['pipe', 'pipe', 'inherit'] });
    let out = '';
    p.stdout.on('data', (d) => (out += d));
    p.once('error', reject);
    p.once('close', (code) => (code === 0 ? resolve(JSON.parse(out) as ChildReport) : reject(new Error(`engine ${req.op} exited ${code}`))));
    p.stdin.end(JSON.stringify(req));
  });
}

// ---------------------------------------------------------------------------------------------
// The lab, the data, the baselines
// ---------------------------------------------------------------------------------------------

function rootSql(sql: string): string {
  if (!existsSync(LAB_ENV_FILE)) throw new Error(`the lab is not up (${LAB_ENV_FILE} is missing): run bash test/lab/lab.sh up`);
  const env = parseEnv(readFileSync(LAB_ENV_FILE, 'utf8')) as Record<string, string>;
  return execFileSync('mariadb', ['-S', env.MYSQL_ROOT_SOCKET ?? '', '-u', 'root', '--batch', '--skip-column-names'], { input: sql, encoding: 'utf8', maxBuffer: 64 << 20 });
}

/** New API-like tables; logs carry the text New API writes (Chinese ratios text, JSON `other`). */
function buildSql(logRows: number): string {
  return `
    USE ${SRC};
    CREATE TABLE channels (id bigint NOT NULL AUTO_INCREMENT PRIMARY KEY, type bigint DEFAULT 0, \`key\` text NOT NULL, openai_organization text, test_model text, status bigint DEFAULT 1, name varchar(191), weight bigint unsigned DEFAULT 0, created_time bigint, test_time bigint, response_time bigint, base_url varchar(191) DEFAULT '', other text, balance double, balance_updated_time bigint, models text, \`group\` varchar(64) DEFAULT 'default', used_quota bigint DEFAULT 0, model_mapping text, status_code_mapping varchar(1024) DEFAULT '', priority bigint DEFAULT 0, auto_ban bigint DEFAULT 1, other_info text, tag varchar(191), setting text, param_override text, KEY idx_channels_name (name), KEY idx_channels_tag (tag));
    CREATE TABLE users (id bigint NOT NULL AUTO_INCREMENT PRIMARY KEY, username varchar(191) UNIQUE, password longtext NOT NULL, display_name varchar(191), role bigint DEFAULT 1, status bigint DEFAULT 1, email varchar(191), github_id varchar(191), oidc_id varchar(191), wechat_id varchar(191), telegram_id varchar(191), access_token char(32), quota bigint DEFAULT 0, used_quota bigint DEFAULT 0, request_count bigint DEFAULT 0, \`group\` varchar(64) DEFAULT 'default', aff_code varchar(32), aff_count bigint DEFAULT 0, aff_quota bigint DEFAULT 0, aff_history_quota bigint DEFAULT 0, inviter_id bigint, deleted_at datetime(3), linux_do_id varchar(191), setting text, remark varchar(255), stripe_customer varchar(64), KEY idx_users_deleted_at (deleted_at));
    CREATE TABLE tokens (id bigint NOT NULL AUTO_INCREMENT PRIMARY KEY, user_id bigint, \`key\` char(48), status bigint DEFAULT 1, name varchar(191), created_time bigint, accessed_time bigint, expired_time bigint DEFAULT -1, remain_quota bigint DEFAULT 0, unlimited_quota tinyint(1), model_limits_enabled tinyint(1), model_limits varchar(1024) DEFAULT '', allow_ips text, used_quota bigint DEFAULT 0, \`group\` varchar(191) DEFAULT '', deleted_at datetime(3), UNIQUE KEY idx_tokens_key (\`key\`), KEY idx_tokens_user_id (user_id));
    CREATE TABLE logs (id bigint NOT NULL AUTO_INCREMENT PRIMARY KEY, user_id bigint, created_at bigint, type bigint, content text, username varchar(191) DEFAULT '', token_name varchar(191) DEFAULT '', model_name varchar(191) DEFAULT '', quota bigint DEFAULT 0, prompt_tokens bigint DEFAULT 0, completion_tokens bigint DEFAULT 0, use_time bigint DEFAULT 0, is_stream tinyint(1), channel_id bigint, channel_name text, token_id bigint DEFAULT 0, \`group\` varchar(191), ip varchar(191) DEFAULT '', other text, KEY idx_created_at_id (id, created_at), KEY idx_logs_user_id (user_id), KEY idx_logs_model_name (model_name));
    INSERT INTO channels (type, \`key\`, test_model, name, weight, created_time, base_url, other, balance, models, model_mapping, priority, setting)
      SELECT 1 + seq % 40, CONCAT('sk-', MD5(seq), MD5(seq * 7)), 'gpt-4o-mini', CONCAT('channel-', seq, ' (主力)'), seq % 10, 1764000000 + seq, CONCAT('https://api-', seq, '.example.com'), '', seq * 1.5,
        'gpt-4o,gpt-4o-mini,o3-mini,claude-3-5-sonnet-20241022,claude-3-7-sonnet-20250219,gemini-2.0-flash,deepseek-chat,deepseek-reasoner,qwen-max',
        '{"gpt-4":"gpt-4o","claude-3-sonnet":"claude-3-5-sonnet-20241022"}', seq % 3, '{"force_format":false,"proxy":""}'
      FROM seq_1_to_200;
    INSERT INTO users (username, password, display_name, role, email, access_token, quota, used_quota, request_count, aff_code, setting)
      SELECT CONCAT('user', seq), CONCAT('$2a$10$', TO_BASE64(UNHEX(MD5(seq))), 'abcdefghij'), CONCAT('用户 ', seq, ' O''Brien'), IF(seq = 1, 100, 1), CONCAT('user', seq, '@example.com'), LEFT(MD5(seq * 3), 32),
        seq * 1000, seq * 10, seq * 3, LEFT(MD5(seq * 5), 4), IF(seq % 4 = 0, '{"notify_type":"email","quota_warning_threshold":500000}', NULL)
      FROM seq_1_to_20000;
    INSERT INTO tokens (user_id, \`key\`, name, created_time, accessed_time, remain_quota, unlimited_quota, model_limits, \`group\`)
      SELECT 1 + seq % 20000, CONCAT(MD5(seq), LEFT(SHA1(seq), 16)), CONCAT('token-', seq), 1764000000 + seq, 1764100000 + seq, 500000 - seq % 1000, seq % 2, IF(seq % 5 = 0, 'gpt-4o,claude-3-5-sonnet-20241022', ''), IF(seq % 3 = 0, 'vip', 'default')
      FROM seq_1_to_50000;
    INSERT INTO logs (user_id, created_at, type, content, username, token_name, model_name, quota, prompt_tokens, completion_tokens, use_time, is_stream, channel_id, channel_name, token_id, \`group\`, ip, other)
      SELECT 1 + seq % 20000, 1764000000 + seq, 2,
        CONCAT('模型倍率 ', ROUND(1 + (seq % 37) / 10, 2), '，补全倍率 ', 1 + seq % 4, '，分组倍率 1，用时 ', seq % 60, ' 秒 (', ELT(1 + seq % 4, 'ok', 'retry', 'it''s ok', 'stream'), ')'),
        CONCAT('user', 1 + seq % 20000), CONCAT('token-', 1 + seq % 50000),
        ELT(1 + seq % 9, 'gpt-4o', 'gpt-4o-mini', 'o3-mini', 'claude-3-5-sonnet-20241022', 'claude-3-7-sonnet-20250219', 'gemini-2.0-flash', 'deepseek-chat', 'deepseek-reasoner', 'qwen-max'),
        seq % 5000, 100 + seq % 4000, 20 + seq % 2000, seq % 60, seq % 2, 1 + seq % 200, CONCAT('channel-', 1 + seq % 200), 1 + seq % 50000, IF(seq % 3 = 0, 'vip', 'default'),
        CONCAT('10.', seq % 256, '.', (seq DIV 256) % 256, '.', seq % 200),
        CONCAT('{"admin_info":{"use_channel":["', 1 + seq % 200, '"]},"cache_ratio":0.1,"completion_ratio":', 1 + seq % 4, ',"frt":', seq % 3000, ',"group_ratio":1,"model_price":-1,"model_ratio":', ROUND(1 + (seq % 37) / 10, 2), ',"request_id":"', MD5(seq), '","user_group_ratio":-1}')
      FROM seq_1_to_${logRows};
  `;
}

function timedShell(script: string, env: NodeJS.ProcessEnv): { seconds: number; rssMb: number[] } {
  const t0 = performance.now();
  execFileSync('bash', ['-o', 'pipefail', '-c', script], { env, stdio: ['ignore', 'inherit', 'inherit'] });
  return { seconds: (performance.now() - t0) / 1000, rssMb: [] };
}

const MB = 1024 * 1024;

async function main(): Promise<void> {
  const rowsArg = process.argv.indexOf('--rows');
  const logRows = rowsArg > 0 ? Number(process.argv[rowsArg + 1]) : 440_000;
  const password = `bench-${randomBytes(12).toString('hex')}#"'`;
  const dir = await mkdtemp(join(tmpdir(), 'newapi-bench-backup-'));
  const cnf = join(dir, 'client.cnf');
  await writeFile(cnf, `[client]\npassword=${optionFileValue(password)}\n`, { mode: 0o600 });
  const target = (database: string): DbTarget => ({ kind: 'mysql', host: HOST, port: PORT, user: USER, password, database });
  const shellEnv = { ...process.env, CNF: cnf, DIR: dir };
  const conn = `--defaults-file="$CNF" --host=${HOST} --port=${PORT} --user=${USER} --protocol=TCP`;
  try {
    console.log('compiling the engine to JavaScript …');
    compileEngine();
    console.log(`building ${SRC}: 200 channels, 20,000 users, 50,000 tokens, ${logRows.toLocaleString('en-US')} logs …`);
    const b0 = performance.now();
    rootSql(`
      DROP DATABASE IF EXISTS ${SRC}; DROP DATABASE IF EXISTS ${DST};
      CREATE DATABASE ${SRC} CHARACTER SET utf8mb4; CREATE DATABASE ${DST} CHARACTER SET utf8mb4;
      DROP USER IF EXISTS '${USER}'@'%';
      CREATE USER '${USER}'@'%' IDENTIFIED BY '${password.replace(/\\/g, '\\\\').replace(/'/g, "''")}';
      GRANT ALL PRIVILEGES ON ${SRC}.* TO '${USER}'@'%'; GRANT ALL PRIVILEGES ON ${DST}.* TO '${USER}'@'%';
    `);
    rootSql(buildSql(logRows));
    rootSql(`USE ${SRC}; ANALYZE TABLE channels, users, tokens, logs;`);
    const size = rootSql(`SELECT ROUND(SUM(data_length + index_length) / 1048576) FROM information_schema.TABLES WHERE table_schema = '${SRC}'`).trim();
    console.log(`built in ${((performance.now() - b0) / 1000).toFixed(1)} s (${size} MB on disk in InnoDB)`);

    const engineFile = join(dir, 'engine.sql.gz');
    const baseFile = join(dir, 'baseline.sql.gz');
    const baselineDump = `mariadb-dump ${conn} ${FLAGS.join(' ')} ${SRC} | gzip > "$DIR/baseline.sql.gz"`;

    console.log('warm-up dump …');
    timedShell(baselineDump, shellEnv);

    const engineDumps: ChildReport[] = [];
    const baseDumps: number[] = [];
    for (let round = 0; round < 3; round++) {
      baseDumps.push(timedShell(baselineDump, shellEnv).seconds);
      engineDumps.push(await runChild({ op: 'dump', target: target(SRC), file: engineFile }));
      console.log(`  round ${round + 1}: mariadb-dump | gzip ${baseDumps.at(-1)!.toFixed(2)} s, engine ${engineDumps.at(-1)!.seconds.toFixed(2)} s`);
    }
    const raw = engineDumps[0]!.rawBytes;
    const engineGz = (await stat(engineFile)).size;
    const baseGz = (await stat(baseFile)).size;
    // Peak RSS of the baseline's processes, for the record (GNU time, KiB).
    const rssScript = `/usr/bin/time -f %M -o "$DIR/rss.dump" mariadb-dump ${conn} ${FLAGS.join(' ')} ${SRC} | /usr/bin/time -f %M -o "$DIR/rss.gzip" gzip > /dev/null`;
    timedShell(rssScript, shellEnv);
    const dumpToolRss = Number((await readFile(join(dir, 'rss.dump'), 'utf8')).trim()) / 1024;
    const gzipRss = Number((await readFile(join(dir, 'rss.gzip'), 'utf8')).trim()) / 1024;

    console.log('restores …');
    const engineRestore = await runChild({ op: 'restore', target: target(DST), file: engineFile });
    const baseRestore = timedShell(`gunzip -c "$DIR/engine.sql.gz" | mariadb ${conn} ${DST}`, shellEnv).seconds;

    const mean = (xs: number[]) => xs.reduce((a, b) => a + b, 0) / xs.length;
    const eDump = mean(engineDumps.map((r) => r.seconds));
    const bDump = mean(baseDumps);
    const rows: [string, number, string, string, string][] = [
      ['engine dump (dumpMysql)', eDump, `${(raw / MB / eDump).toFixed(1)}`, `${Math.max(...engineDumps.map((r) => r.maxRssMb)).toFixed(0)} MB (Node)`, `${(eDump / bDump).toFixed(2)}×`],
      ['mariadb-dump | gzip', bDump, `${(raw / MB / bDump).toFixed(1)}`, `${dumpToolRss.toFixed(0)} + ${gzipRss.toFixed(0)} MB`, '1.00×'],
      ['engine restore (restoreMysql)', engineRestore.seconds, `${(raw / MB / engineRestore.seconds).toFixed(1)}`, `${engineRestore.maxRssMb.toFixed(0)} MB (Node)`, `${(engineRestore.seconds / baseRestore).toFixed(2)}×`],
      ['gunzip | mariadb', baseRestore, `${(raw / MB / baseRestore).toFixed(1)}`, '—', '1.00×'],
    ];
    console.log('');
    console.log(`SQL ${(raw / MB).toFixed(1)} MB, ${engineDumps[0]!.rows?.toLocaleString('en-US')} rows; gzip: engine ${(engineGz / MB).toFixed(1)} MB, pipeline ${(baseGz / MB).toFixed(1)} MB`);
    console.log(`${'what'.padEnd(32)}${'seconds'.padStart(9)}${'MB/s'.padStart(8)}  ${'peak RSS'.padEnd(22)}${'vs the pipeline'.padStart(16)}`);
    for (const [what, s, rate, rss, ratio] of rows) console.log(`${what.padEnd(32)}${s.toFixed(2).padStart(9)}${rate.padStart(8)}  ${rss.padEnd(22)}${ratio.padStart(16)}`);
    console.log('');
    const rss = Math.max(...engineDumps.map((r) => r.maxRssMb), engineRestore.maxRssMb);
    console.log(`target: engine dump within 1.5× of mariadb-dump | gzip: ${(eDump / bDump).toFixed(2)}× ${eDump / bDump <= 1.5 ? 'met' : 'NOT met'}; Node peak RSS under 150 MB: ${rss.toFixed(0)} MB ${rss < 150 ? 'met' : 'NOT met'}`);
    console.log('(engine times are measured inside its Node process (compiled JavaScript, plain node), without Node start-up; the dump tool and gzip processes of the pipeline are the same programs the engine runs or replaces)');
  } finally {
    rootSql(`DROP DATABASE IF EXISTS ${SRC}; DROP DATABASE IF EXISTS ${DST}; DROP USER IF EXISTS '${USER}'@'%';`);
    await rm(dir, { recursive: true, force: true });
    await rm(ENGINE_DIR, { recursive: true, force: true });
  }
}

await main();
