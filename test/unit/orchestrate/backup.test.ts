/**
 * `backup`: names, the .gitignore entry, pruning (automatic backups only, by cluster, oldest
 * first), reading and verifying a backup (corrupted, truncated, mismatched files) — then whole
 * runs of runBackup against the lab's MariaDB, the master's SSH replaced by an executor whose
 * "tunnel" is a plain TCP connection: file and folder modes, the manifest's content, and no
 * secret anywhere. The runBackup part FAILS when the lab is down.
 */
import { execFileSync } from 'node:child_process';
import { createHash } from 'node:crypto';
import { existsSync, readFileSync } from 'node:fs';
import { mkdir, mkdtemp, readdir, readFile, rm, stat, truncate, writeFile } from 'node:fs/promises';
import { connect as netConnect } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { PassThrough, type Duplex } from 'node:stream';
import { parseEnv } from 'node:util';
import { gunzipSync, gzipSync } from 'node:zlib';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { CliError, ExitCode, InterruptedError } from '../../../src/errors.js';
import { loadInventory, type LoadedInventory } from '../../../src/inventory/load.js';
import {
  backupBaseName,
  backupPaths,
  ensureBackupsIgnored,
  pruneBackups,
  readManifest,
  runBackup,
  utcStamp,
  verifyBackup,
  versionOfImage,
  type BackupManifest,
} from '../../../src/orchestrate/backup.js';
import { ManualClock } from '../../../src/orchestrate/clock.js';
import { quietSignals, type RunEnv, type RunSignals } from '../../../src/orchestrate/run-env.js';
import { Session } from '../../../src/orchestrate/session.js';
import { RecordingExecutor, type Responder } from '../../../src/remote/recording.js';
import { Output } from '../../../src/ui/output.js';
import { makeStyle } from '../../../src/ui/style.js';
import { VERSION } from '../../../src/version.js';
import { baseInventory, FAKE, FAKE_VARS, SECRET_VALUES, writeInventoryDir, type TempInventory } from '../../fixtures/inventory.js';

const T0 = Date.UTC(2026, 10, 26, 10, 15, 0);

// ---------------------------------------------------------------------------------------------
// Names
// ---------------------------------------------------------------------------------------------

describe('backup names', () => {
  it('is <cluster>-<UTC time>-<version>', () => {
    expect(utcStamp(T0)).toBe('20261126T101500Z');
    expect(utcStamp(T0 + 999)).toBe('20261126T101500Z');
    expect(backupBaseName('prod', T0, 'v0.9.20')).toBe('prod-20261126T101500Z-v0.9.20');
    expect(backupBaseName('prod', T0, 'v0.9.20', 2)).toBe('prod-20261126T101500Z-v0.9.20-2');
  });

  it('takes the version from the image the master runs', () => {
    expect(versionOfImage('calciumion/new-api:v0.9.20')).toBe('v0.9.20');
    expect(versionOfImage('10.77.0.1:5000/calciumion/new-api:v0.9.21')).toBe('v0.9.21');
    expect(versionOfImage('calciumion/new-api:v0.9.22@sha256:0123abcd')).toBe('v0.9.22');
    expect(versionOfImage('calciumion/new-api')).toBe('latest');
    expect(versionOfImage('registry:5000/new-api')).toBe('latest');
    expect(versionOfImage('calciumion/new-api:v1.0.0+build')).toBe('v1.0.0_build');
    expect(versionOfImage(undefined)).toBe('unknown');
  });

  it('finds the manifest from the backup and the backup from the manifest', () => {
    expect(backupPaths('/b/prod-20261126T101500Z-v0.9.20.sql.gz')).toEqual({ path: '/b/prod-20261126T101500Z-v0.9.20.sql.gz', manifestPath: '/b/prod-20261126T101500Z-v0.9.20.json' });
    expect(backupPaths('/b/prod-20261126T101500Z-v0.9.20.json')).toEqual({ path: '/b/prod-20261126T101500Z-v0.9.20.sql.gz', manifestPath: '/b/prod-20261126T101500Z-v0.9.20.json' });
  });
});

describe('the .gitignore beside the inventory', () => {
  let dir: string;
  beforeAll(async () => {
    dir = await mkdtemp(join(tmpdir(), 'newapi-backup-gi-'));
  });
  afterAll(async () => {
    await rm(dir, { recursive: true, force: true });
  });

  it('gets backups/ once, after what it had', async () => {
    await writeFile(join(dir, '.gitignore'), '.newapi-cluster.env');
    expect(await ensureBackupsIgnored(dir, join(dir, 'backups'))).toBe(true);
    expect(await ensureBackupsIgnored(dir, join(dir, 'backups'))).toBe(false);
    expect(await readFile(join(dir, '.gitignore'), 'utf8')).toBe('.newapi-cluster.env\nbackups/\n');
    expect(await ensureBackupsIgnored(dir, join(dir, 'data', 'dumps'))).toBe(true);
    expect(await readFile(join(dir, '.gitignore'), 'utf8')).toBe('.newapi-cluster.env\nbackups/\ndata/dumps/\n');
  });

  it('accepts an entry already there in another form, and leaves folders elsewhere alone', async () => {
    await writeFile(join(dir, '.gitignore'), '/backups/\n');
    expect(await ensureBackupsIgnored(dir, join(dir, 'backups'))).toBe(false);
    expect(await ensureBackupsIgnored(dir, '/var/backups/newapi')).toBe(false);
    expect(await ensureBackupsIgnored(dir, dir)).toBe(false);
    expect(await readFile(join(dir, '.gitignore'), 'utf8')).toBe('/backups/\n');
  });
});

// ---------------------------------------------------------------------------------------------
// Pruning, reading, verifying (fixtures on disk)
// ---------------------------------------------------------------------------------------------

function manifestFor(file: string, body: Buffer, over: Partial<BackupManifest> = {}): BackupManifest {
  return {
    format: 1,
    file,
    cluster: 'prod',
    version: 'v0.9.20',
    image: 'calciumion/new-api:v0.9.20',
    createdAt: new Date(T0).toISOString(),
    database: { kind: 'mysql', server: '10.11.19-MariaDB' },
    tables: [{ name: 'channels', rows: 2 }],
    rows: 2,
    bytes: body.length,
    rawBytes: 100,
    sha256: createHash('sha256').update(body).digest('hex'),
    noLogs: false,
    automatic: false,
    durationMs: 10,
    dumpTool: 'mariadb-dump fake',
    tool: 'newapi-cluster test',
    ...over,
  };
}

/** Writes a backup pair the way runBackup names it; returns the .sql.gz path. */
async function writePair(dir: string, cluster: string, minutes: number, automatic: boolean, version = 'v0.9.20'): Promise<string> {
  const at = T0 + minutes * 60_000;
  const base = backupBaseName(cluster, at, version);
  const body = gzipSync(`-- ${base}\n`);
  await writeFile(join(dir, `${base}.sql.gz`), body, { mode: 0o600 });
  await writeFile(join(dir, `${base}.json`), JSON.stringify(manifestFor(`${base}.sql.gz`, body, { cluster, automatic, version, createdAt: new Date(at).toISOString() })), { mode: 0o600 });
  return join(dir, `${base}.sql.gz`);
}

describe('pruneBackups', () => {
  let dir: string;
  beforeAll(async () => {
    dir = await mkdtemp(join(tmpdir(), 'newapi-backup-prune-'));
  });
  afterAll(async () => {
    await rm(dir, { recursive: true, force: true });
  });

  it('removes the oldest automatic backups of that cluster beyond keep, never manual ones or another cluster\'s', async () => {
    const auto = [];
    // Written out of order: the age comes from the manifest, not from the order on disk.
    for (const m of [30, 10, 50, 20, 40]) auto.push({ m, path: await writePair(dir, 'prod', m, true) });
    const manual = [await writePair(dir, 'prod', 0, false), await writePair(dir, 'prod', 60, false)];
    const otherCluster = [await writePair(dir, 'staging', 1, true), await writePair(dir, 'staging', 2, true), await writePair(dir, 'prod-eu', 3, true)];
    // Something that is not one of our manifests is left alone.
    await writeFile(join(dir, 'prod-notes.json'), '{"cluster":"prod","automatic":true}');
    await writeFile(join(dir, 'prod-broken.json'), '{');

    const removed = await pruneBackups(dir, 'prod', 2);
    const oldest = auto.sort((a, b) => a.m - b.m).slice(0, 3).map((a) => a.path);
    expect(removed).toEqual(oldest.flatMap((p) => [p, p.replace(/\.sql\.gz$/, '.json')]));
    for (const p of oldest) {
      expect(existsSync(p)).toBe(false);
      expect(existsSync(p.replace(/\.sql\.gz$/, '.json'))).toBe(false);
    }
    for (const p of [...auto.slice(3).map((a) => a.path), ...manual, ...otherCluster]) expect(existsSync(p)).toBe(true);
    expect(existsSync(join(dir, 'prod-notes.json'))).toBe(true);
    expect(existsSync(join(dir, 'prod-broken.json'))).toBe(true);

    expect(await pruneBackups(dir, 'prod', 2)).toEqual([]);
    expect((await pruneBackups(dir, 'prod', 0)).length).toBe(4);
    for (const p of manual) expect(existsSync(p)).toBe(true);
    expect(await pruneBackups(join(dir, 'missing'), 'prod', 0)).toEqual([]);
  });
});

describe('readManifest and verifyBackup', () => {
  let dir: string;
  beforeAll(async () => {
    dir = await mkdtemp(join(tmpdir(), 'newapi-backup-verify-'));
  });
  afterAll(async () => {
    await rm(dir, { recursive: true, force: true });
  });

  async function fails(p: Promise<unknown>): Promise<CliError> {
    const e = await p.catch((x: unknown) => x);
    expect(e).toBeInstanceOf(CliError);
    expect((e as CliError).exitCode).toBe(ExitCode.badInput);
    expect((e as CliError).hint).toBeTruthy();
    return e as CliError;
  }

  it('passes an intact backup, named by either file', async () => {
    const path = await writePair(dir, 'prod', 1, false);
    expect((await verifyBackup(path)).file).toBe(path.split('/').pop());
    expect((await verifyBackup(path.replace(/\.sql\.gz$/, '.json'))).path).toBe(path);
    expect((await readManifest(path)).cluster).toBe('prod');
  });

  it('names the file and says what is wrong: corrupted, truncated, missing, not a manifest, another file\'s', async () => {
    const path = await writePair(dir, 'prod', 2, false);
    const body = await readFile(path);
    body[body.length - 5] = (body[body.length - 5] ?? 0) ^ 0xff;
    await writeFile(path, body);
    let e = await fails(verifyBackup(path));
    expect(e.message).toContain(path);
    expect(e.message).toMatch(/sha256 .* does not match its manifest/);

    await truncate(path, 3);
    e = await fails(verifyBackup(path));
    expect(e.message).toMatch(/3 bytes, but its manifest says \d+: the file is truncated/);

    const gone = await writePair(dir, 'prod', 3, false);
    await rm(gone);
    e = await fails(verifyBackup(gone));
    expect(e.message).toContain(`${gone}: missing`);

    const lonely = await writePair(dir, 'prod', 4, false);
    await rm(lonely.replace(/\.sql\.gz$/, '.json'));
    e = await fails(verifyBackup(lonely));
    expect(e.message).toMatch(/its manifest .*\.json is missing/);

    const bad = await writePair(dir, 'prod', 5, false);
    const badManifest = bad.replace(/\.sql\.gz$/, '.json');
    await writeFile(badManifest, '{"format":1,');
    e = await fails(readManifest(bad));
    expect(e.message).toContain(`${badManifest}: not valid JSON`);
    await writeFile(badManifest, JSON.stringify({ ...JSON.parse(readFileSync(join(dir, (await readdir(dir)).find((f) => f.endsWith('.json'))!), 'utf8')), sha256: 'nope' }));
    e = await fails(readManifest(bad));
    expect(e.message).toMatch(/not a newapi-cluster backup manifest \(sha256:/);

    const other = await writePair(dir, 'prod', 6, false);
    const otherManifest = other.replace(/\.sql\.gz$/, '.json');
    const m = JSON.parse(await readFile(otherManifest, 'utf8')) as BackupManifest;
    await writeFile(otherManifest, JSON.stringify({ ...m, file: 'prod-20200101T000000Z-v0.1.0.sql.gz' }));
    e = await fails(readManifest(other));
    expect(e.message).toMatch(/describes prod-20200101T000000Z-v0.1.0.sql.gz, not /);
  });
});

// ---------------------------------------------------------------------------------------------
// runBackup against the lab's MariaDB
// ---------------------------------------------------------------------------------------------

const LAB_ENV_FILE = '/var/lib/newapi-lab/lab.env';
const DB = 'newapi_backuptest';
const USER = 'newapi_backuptest';
const DSN = `${USER}:${FAKE.dbPassword}@tcp(10.77.0.1:3306)/${DB}?charset=utf8mb4&parseTime=true`;

function rootSql(sql: string): string {
  if (!existsSync(LAB_ENV_FILE)) throw new Error(`the lab is not up (${LAB_ENV_FILE} is missing): run bash test/lab/lab.sh up`);
  const env = parseEnv(readFileSync(LAB_ENV_FILE, 'utf8')) as Record<string, string>;
  try {
    return execFileSync('mariadb', ['-S', env.MYSQL_ROOT_SOCKET ?? '', '-u', 'root', '--batch', '--skip-column-names'], { input: sql, encoding: 'utf8', timeout: 20_000 });
  } catch (e) {
    throw new Error(`the lab's MariaDB does not answer as root over its socket (${(e as Error).message.split('\n')[0]}): run bash test/lab/lab.sh up`);
  }
}

/** The master: docker answers from `responder`; its "tunnel" is a plain TCP connection to the lab's MariaDB. */
class TunnelExecutor extends RecordingExecutor {
  override async openTunnel(host: string, port: number): Promise<Duplex> {
    const socket = netConnect(port, host);
    await new Promise<void>((resolve, reject) => {
      socket.once('connect', resolve);
      socket.once('error', reject);
    });
    return socket;
  }
}

const inspect = (image: string): Responder => (argv) =>
  argv.slice(0, 3).join(' ') === 'docker container inspect'
    ? { stdout: JSON.stringify([{ Image: 'sha256:1', Config: { Image: image }, State: { Status: 'running', Running: true } }]) }
    : undefined;
const noContainer: Responder = (argv) => (argv[0] === 'docker' ? { code: 1, stderr: 'Error: No such container' } : undefined);

interface Harness {
  env: RunEnv;
  clock: ManualClock;
  output: () => string;
  executor: TunnelExecutor;
}

function harness(responder: Responder, signals: RunSignals = quietSignals()): Harness {
  const chunks: Buffer[] = [];
  const sink = new PassThrough();
  sink.on('data', (c: Buffer) => chunks.push(c));
  const out = new Output({ json: false, verbose: false, color: false, plain: true, stdout: sink, stderr: sink });
  const clock = new ManualClock(T0);
  const executor = new TunnelExecutor({ responder, target: { label: 'master', host: '10.0.0.11' } });
  const env: RunEnv = {
    out,
    style: makeStyle(false),
    interactive: false,
    json: false,
    verbose: false,
    yes: true,
    acceptNewHostKeys: false,
    signals,
    deps: {
      connect: () => executor,
      closeAll: async () => undefined,
      openLockStore: async () => {
        throw new Error('a backup takes no lock');
      },
      clock,
      operator: 'tester@test',
    },
  };
  return { env, clock, executor, output: () => Buffer.concat(chunks).toString('utf8') };
}

function assertNoSecret(text: string): void {
  for (const s of [...SECRET_VALUES, DSN, FAKE_VARS.SQL_DSN!, FAKE_VARS.REDIS_CONN_STRING!]) expect(text).not.toContain(s);
}

describe('runBackup against the lab MariaDB', () => {
  let inv: TempInventory;
  let loaded: LoadedInventory;

  beforeAll(async () => {
    rootSql(`
      DROP DATABASE IF EXISTS ${DB};
      CREATE DATABASE ${DB} CHARACTER SET utf8mb4;
      DROP USER IF EXISTS '${USER}'@'%';
      CREATE USER '${USER}'@'%' IDENTIFIED BY '${FAKE.dbPassword}';
      GRANT ALL PRIVILEGES ON ${DB}.* TO '${USER}'@'%';
      USE ${DB};
      CREATE TABLE channels (id int PRIMARY KEY, name text);
      CREATE TABLE logs (id int PRIMARY KEY, content text);
      CREATE TABLE users (id int PRIMARY KEY, username varchar(64));
      INSERT INTO channels VALUES (1, 'one'), (2, 'two (2)'), (3, 'it''s three');
      INSERT INTO logs SELECT seq, CONCAT('log ', seq) FROM seq_1_to_10;
      INSERT INTO users VALUES (1, 'root'), (2, 'alice');
    `);
    const raw = baseInventory();
    raw.cluster.name = 'bt';
    raw.ssh = { configFile: false };
    inv = await writeInventoryDir(raw, { secrets: { ...FAKE_VARS, SQL_DSN: DSN } });
    loaded = await loadInventory(inv.file, { env: {} });
  }, 60_000);

  afterAll(async () => {
    await inv?.cleanup();
    if (existsSync(LAB_ENV_FILE)) rootSql(`DROP DATABASE IF EXISTS ${DB}; DROP USER IF EXISTS '${USER}'@'%';`);
  });

  it('writes <cluster>-<time>-<version>.sql.gz (0600) and its manifest (0600) into backups/ (0700, git-ignored), with no secret anywhere', async () => {
    const h = harness(inspect('calciumion/new-api:v0.9.20'));
    const b = await runBackup(h.env, loaded, { noLogs: false });

    const dir = join(inv.dir, 'backups');
    expect(b.path).toBe(join(dir, 'bt-20261126T101500Z-v0.9.20.sql.gz'));
    expect(b.manifestPath).toBe(join(dir, 'bt-20261126T101500Z-v0.9.20.json'));
    expect((await stat(dir)).mode & 0o777).toBe(0o700);
    expect((await stat(b.path)).mode & 0o777).toBe(0o600);
    expect((await stat(b.manifestPath)).mode & 0o777).toBe(0o600);
    expect(await readdir(dir)).toEqual(['bt-20261126T101500Z-v0.9.20.json', 'bt-20261126T101500Z-v0.9.20.sql.gz']);
    expect(await readFile(join(inv.dir, '.gitignore'), 'utf8')).toContain('backups/\n');

    const text = await readFile(b.manifestPath, 'utf8');
    const manifest = JSON.parse(text) as BackupManifest;
    const body = await readFile(b.path);
    expect(manifest).toEqual({
      format: 1,
      file: 'bt-20261126T101500Z-v0.9.20.sql.gz',
      cluster: 'bt',
      version: 'v0.9.20',
      image: 'calciumion/new-api:v0.9.20',
      createdAt: '2026-11-26T10:15:00.000Z',
      database: { kind: 'mysql', server: expect.stringMatching(/MariaDB/) },
      tables: [
        { name: 'channels', rows: 3 },
        { name: 'logs', rows: 10 },
        { name: 'users', rows: 2 },
      ],
      rows: 15,
      bytes: body.length,
      rawBytes: gunzipSync(body).length,
      sha256: createHash('sha256').update(body).digest('hex'),
      noLogs: false,
      automatic: false,
      durationMs: expect.any(Number),
      dumpTool: expect.stringMatching(/mariadb-dump|mysqldump/),
      tool: `newapi-cluster ${VERSION}`,
    });
    assertNoSecret(text);
    expect(text).not.toContain(USER);
    expect(text).not.toContain('10.77.0.1');
    assertNoSecret(h.output());
    assertNoSecret(gunzipSync(body).toString('utf8'));
    expect(gunzipSync(body).toString('utf8')).toContain('INSERT INTO `channels` VALUES');
    expect(h.output()).toMatch(/✔ Backup of database newapi_backuptest through master/);

    expect((await verifyBackup(b.path)).sha256).toBe(manifest.sha256);
    // It asked the master which image it runs, and opened nothing else.
    expect(h.executor.commands).toEqual([['docker', 'container', 'inspect', 'bt-new-api']]);
  }, 30_000);

  it('keeps the logs table\'s definition only with noLogs, and never overwrites a backup of the same second', async () => {
    const h = harness(inspect('calciumion/new-api:v0.9.20'));
    const b = await runBackup(h.env, loaded, { noLogs: true });
    expect(b.file).toBe('bt-20261126T101500Z-v0.9.20-2.sql.gz');
    expect(b.noLogs).toBe(true);
    expect(b.tables).toEqual([
      { name: 'channels', rows: 3 },
      { name: 'logs', rows: 0 },
      { name: 'users', rows: 2 },
    ]);
    expect(gunzipSync(await readFile(b.path)).toString('utf8')).toContain('CREATE TABLE `logs`');
    expect(h.output()).toContain('(logs: definition only)');
  }, 30_000);

  it('prunes only automatic backups, beyond keep, oldest first; a master without a container gives version unknown', async () => {
    const out = join(inv.dir, 'auto');
    const taken: string[] = [];
    for (let i = 0; i < 4; i++) {
      const h = harness(i === 3 ? noContainer : inspect(`calciumion/new-api:v0.9.2${i}`));
      await h.clock.advance(i * 60_000);
      const b = await runBackup(h.env, loaded, { noLogs: true, automatic: i !== 1, keep: 2, out });
      taken.push(b.file);
      if (i === 3) {
        expect(b.version).toBe('unknown');
        expect(b.image).toBeNull();
        expect(b.pruned.map((p) => p.split('/').pop())).toEqual([taken[0], taken[0]!.replace(/\.sql\.gz$/, '.json')]);
      }
    }
    expect(taken).toEqual([
      'bt-20261126T101500Z-v0.9.20.sql.gz',
      'bt-20261126T101600Z-v0.9.21.sql.gz',
      'bt-20261126T101700Z-v0.9.22.sql.gz',
      'bt-20261126T101800Z-unknown.sql.gz',
    ]);
    const left = (await readdir(out)).filter((f) => f.endsWith('.sql.gz')).sort();
    expect(left).toEqual([taken[1], taken[2], taken[3]]);
    expect(await readFile(join(inv.dir, '.gitignore'), 'utf8')).toContain('auto/\n');
  }, 60_000);

  it('runs inside a session it is given, and leaves nothing behind when the run is stopped', async () => {
    const h = harness(inspect('calciumion/new-api:v0.9.20'));
    const out = join(inv.dir, 'in-session');
    const b = await Session.use(h.env, loaded, (session) => runBackup(h.env, loaded, { noLogs: false, out, session }));
    expect(b.rows).toBe(15);

    const stop = new AbortController();
    stop.abort(new InterruptedError('interrupted (SIGINT)'));
    const stopped = harness(inspect('calciumion/new-api:v0.9.20'), { ...quietSignals(), stop: stop.signal });
    await stopped.clock.advance(3_600_000);
    const stoppedOut = join(inv.dir, 'stopped');
    await mkdir(stoppedOut, { mode: 0o700 });
    await expect(runBackup(stopped.env, loaded, { noLogs: false, out: stoppedOut })).rejects.toBeInstanceOf(InterruptedError);
    expect(await readdir(stoppedOut)).toEqual([]);
  }, 30_000);

  it('says so when an existing folder is open to others, and tightens the default one', async () => {
    const h = harness(inspect('calciumion/new-api:v0.9.20'));
    const open = join(inv.dir, 'shared');
    await mkdir(open, { mode: 0o755 });
    const { chmod } = await import('node:fs/promises');
    await chmod(open, 0o755);
    await runBackup(h.env, loaded, { noLogs: true, out: open });
    expect(h.output()).toMatch(/shared is mode 0755, open to other users: the backup file itself is 0600/);
    expect((await stat(open)).mode & 0o777).toBe(0o755);

    await chmod(join(inv.dir, 'backups'), 0o755);
    await runBackup(h.env, loaded, { noLogs: true });
    expect(h.output()).toMatch(/backups was mode 0755: made it 0700/);
    expect((await stat(join(inv.dir, 'backups'))).mode & 0o777).toBe(0o700);
  }, 30_000);
});
