/**
 * Database dumps and restores with the database's own tools, run on the operator's machine
 * against a database reached at 127.0.0.1:PORT (in production, a tunnel through the master's
 * SSH connection: see orchestrate/backup.ts).
 *
 * Dump: `mariadb-dump`/`mysqldump` (or `pg_dump`) stdout → a counter that reads the SQL as it
 * passes (tables from CREATE TABLE, rows from the extended INSERTs, or COPY lines) → gzip → a
 * hash → the caller's Writable. Every stage is a stream with back-pressure, so memory stays flat
 * whatever the size of the database. One transaction (`--single-transaction`; pg_dump always
 * uses one snapshot) makes the dump consistent without locking New API out.
 *
 * Restore: the database is emptied (tables, views, sequences, routines, events) and the dump
 * streamed into `mariadb`/`mysql` (or `psql`), all in one client session.
 *
 * The password never reaches argv or the environment: it goes into a temporary option file
 * (MySQL: `--defaults-file`, PostgreSQL: `PGPASSFILE`, which holds only the file's path), mode
 * 0600 inside a 0700 folder, deleted in a finally.
 */
import { spawn } from 'node:child_process';
import { createHash, type Hash } from 'node:crypto';
import { constants as fsConstants, rmSync } from 'node:fs';
import { access, mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { delimiter as PATH_DELIMITER, join } from 'node:path';
import { Readable, Transform, type TransformCallback, type Writable } from 'node:stream';
import { pipeline } from 'node:stream/promises';
import { createGzip } from 'node:zlib';
import { CliError, errorMessage } from '../errors.js';
import type { DatabaseDsn } from '../inventory/dsn.js';

// ---------------------------------------------------------------------------------------------
// Types
// ---------------------------------------------------------------------------------------------

/** Where the database is, as the operator's machine reaches it (a local tunnel port, usually). */
export type DbTarget = Omit<DatabaseDsn, 'params'> & { params?: Record<string, string> };

export interface TableCount {
  name: string;
  rows: number;
}

export interface DumpProgress {
  /** Bytes of SQL the dump tool has written so far. */
  rawBytes: number;
  /** Compressed bytes written to the caller's Writable so far. */
  bytes: number;
  /** Tables whose definition and data are complete in the dump. */
  tablesDone: number;
  /** Base tables in the database when the dump began (MySQL only; the probe counts them). */
  tablesTotal: number | undefined;
  /** The table being dumped. */
  table: string | undefined;
  rows: number;
}

export interface DumpOptions {
  /** Tables whose definition is dumped but not their rows (`--no-logs`: ['logs']). */
  skipDataOf?: readonly string[];
  /** Aborting it kills the dump tool; the dump rejects with the signal's reason. */
  signal?: AbortSignal;
  /** Called as data flows (once per chunk, about every 64 KiB): throttle on your side. */
  onProgress?: (p: DumpProgress) => void;
  /** gzip level, 1–9 (default 6, as `gzip`). */
  gzipLevel?: number;
  /** Where to look for the tools (default: $PATH). */
  searchPath?: string;
  /**
   * How `skipDataOf` works with MySQL tools: `auto` uses `--ignore-table-data` when the dump tool
   * has it (MariaDB's), else two passes; `two-pass` always uses two passes (tests).
   */
  skipDataStrategy?: 'auto' | 'two-pass';
}

export interface DumpResult {
  kind: DatabaseDsn['kind'];
  /** The dump tool's own version line, e.g. `mariadb-dump  Ver 10.19 Distrib 10.11.19-MariaDB, …`. */
  tool: string;
  serverVersion: string | undefined;
  tables: TableCount[];
  rows: number;
  rawBytes: number;
  /** Compressed bytes written to the caller's Writable. */
  bytes: number;
  /** sha256 of the compressed bytes, hex. */
  sha256: string;
  /** Tables whose rows were left out on purpose (and that exist). */
  skippedData: string[];
  /** Things the operator should know (events skipped for want of a privilege, say). */
  warnings: string[];
  /** Each dump tool run, password-free (the option file appears as a placeholder). */
  commands: string[][];
}

export interface RestoreProgress {
  /** Bytes of SQL streamed into the client so far. */
  bytes: number;
}

export interface RestoreOptions {
  /** Aborting it kills the client; the restore rejects with the signal's reason. */
  signal?: AbortSignal;
  onProgress?: (p: RestoreProgress) => void;
  searchPath?: string;
}

export interface RestoreResult {
  /** The client's own version line. */
  tool: string;
  /** Bytes of SQL streamed into the client (the dump, without the emptying statements). */
  bytes: number;
  /** Objects dropped before the restore, by kind (MySQL; PostgreSQL drops them inside its DO block). */
  dropped?: { tables: number; views: number; routines: number; events: number; sequences: number };
  commands: string[][];
}

export interface DbTool {
  /** The name found on the path (`mariadb-dump`, `mysqldump`, `mariadb`, `mysql`, `pg_dump`, `psql`). */
  name: string;
  path: string;
  flavor: 'mariadb' | 'mysql' | 'postgres';
  /** The first line of `--version`. */
  version: string;
  /** Long options its `--help` lists (without the dashes). */
  options: ReadonlySet<string>;
}

// ---------------------------------------------------------------------------------------------
// Finding the tools
// ---------------------------------------------------------------------------------------------

const MYSQL_TOOLS_HINT =
  'install the MariaDB client tools on this machine: apt-get install mariadb-client (Debian/Ubuntu; or default-mysql-client), dnf install mariadb, brew install mariadb';
const PG_TOOLS_HINT =
  'install the PostgreSQL client tools on this machine, of a major version at least the server\'s: apt-get install postgresql-client, dnf install postgresql, brew install libpq';

const toolCache = new Map<string, Promise<DbTool>>();

async function which(names: readonly string[], searchPath: string): Promise<{ name: string; path: string } | undefined> {
  const dirs = searchPath.split(PATH_DELIMITER).filter(Boolean);
  for (const name of names) {
    for (const dir of dirs) {
      const path = join(dir, name);
      try {
        await access(path, fsConstants.X_OK);
        return { name, path };
      } catch {
        // not here
      }
    }
  }
  return undefined;
}

/** Runs a tool briefly (its --version or --help) and returns what it printed. Bounded: 10 s. */
function runBrief(path: string, args: string[]): Promise<{ code: number | null; stdout: string; stderr: string }> {
  return new Promise((resolve, reject) => {
    const child = spawn(path, args, { stdio: ['ignore', 'pipe', 'pipe'], env: childEnv(), timeout: 10_000, killSignal: 'SIGKILL' });
    const out: Buffer[] = [];
    const err: Buffer[] = [];
    child.stdout.on('data', (d: Buffer) => out.push(d));
    child.stderr.on('data', (d: Buffer) => err.push(d));
    child.once('error', reject);
    child.once('close', (code) => resolve({ code, stdout: Buffer.concat(out).toString('utf8'), stderr: Buffer.concat(err).toString('utf8') }));
  });
}

async function describeTool(found: { name: string; path: string }, kind: DatabaseDsn['kind']): Promise<DbTool> {
  const key = found.path;
  let cached = toolCache.get(key);
  if (!cached) {
    cached = (async () => {
      // --no-defaults first: the operator's option files must not change what --help says.
      const versionArgs = kind === 'mysql' ? ['--no-defaults', '--version'] : ['--version'];
      const helpArgs = kind === 'mysql' ? ['--no-defaults', '--help'] : ['--help'];
      const [v, h] = await Promise.all([runBrief(found.path, versionArgs), runBrief(found.path, helpArgs)]);
      const version = ((v.stdout.trim() || v.stderr.trim()).split('\n')[0]?.trim() || found.name).replace(/^\S*\//, '');
      const options = new Set<string>();
      for (const m of `${h.stdout}\n${h.stderr}`.matchAll(/(?:^|[\s,])--([a-z][a-z0-9_-]*)/g)) options.add((m[1] ?? '').replace(/_/g, '-'));
      const flavor: DbTool['flavor'] = kind === 'postgres' ? 'postgres' : /mariadb/i.test(version) || found.name.startsWith('mariadb') ? 'mariadb' : 'mysql';
      return { ...found, flavor, version, options };
    })();
    cached.catch(() => toolCache.delete(key));
    toolCache.set(key, cached);
  }
  return cached;
}

/** `mariadb-dump`, else `mysqldump`; a CliError with an install hint when neither exists. */
export async function findMysqlDumpTool(searchPath = process.env.PATH ?? ''): Promise<DbTool> {
  const found = await which(['mariadb-dump', 'mysqldump'], searchPath);
  if (!found) throw new CliError('no MySQL dump tool on this machine: neither mariadb-dump nor mysqldump is on the PATH', { hint: MYSQL_TOOLS_HINT });
  return describeTool(found, 'mysql');
}

/** `mariadb`, else `mysql`; a CliError with an install hint when neither exists. */
export async function findMysqlClient(searchPath = process.env.PATH ?? ''): Promise<DbTool> {
  const found = await which(['mariadb', 'mysql'], searchPath);
  if (!found) throw new CliError('no MySQL client on this machine: neither mariadb nor mysql is on the PATH', { hint: MYSQL_TOOLS_HINT });
  return describeTool(found, 'mysql');
}

export async function pgDumpAvailable(searchPath = process.env.PATH ?? ''): Promise<boolean> {
  return (await which(['pg_dump'], searchPath)) !== undefined;
}

async function findPgTool(name: 'pg_dump' | 'psql', searchPath: string): Promise<DbTool> {
  const found = await which([name], searchPath);
  if (!found) {
    throw new CliError(`${name} is not installed: ${name === 'pg_dump' ? 'backups' : 'restores'} of a PostgreSQL database need it on this machine`, { hint: PG_TOOLS_HINT });
  }
  return describeTool(found, 'postgres');
}

/** The dump tool for this kind of database; a CliError with an install hint when it is missing. */
export async function findDumpTool(kind: DatabaseDsn['kind'], searchPath = process.env.PATH ?? ''): Promise<DbTool> {
  return kind === 'postgres' ? findPgTool('pg_dump', searchPath) : findMysqlDumpTool(searchPath);
}

/** The tools a dump and a later restore of this kind of database would use; throws when one is missing. */
export async function findDumpTools(kind: DatabaseDsn['kind'], searchPath = process.env.PATH ?? ''): Promise<{ dump: DbTool; client: DbTool }> {
  if (kind === 'postgres') return { dump: await findPgTool('pg_dump', searchPath), client: await findPgTool('psql', searchPath) };
  return { dump: await findMysqlDumpTool(searchPath), client: await findMysqlClient(searchPath) };
}

// ---------------------------------------------------------------------------------------------
// Credentials: option files, never argv or the environment
// ---------------------------------------------------------------------------------------------

/** The environment of a child: ours, minus what could point the tools elsewhere or carry a password. */
function childEnv(extra: Record<string, string> = {}): NodeJS.ProcessEnv {
  const env: NodeJS.ProcessEnv = {};
  for (const [k, v] of Object.entries(process.env)) {
    if (/^(MYSQL_|MARIADB_|PG)/.test(k) || k === 'LIBMYSQL_PLUGINS' || k === 'MYSQL_PWD') continue;
    env[k] = v;
  }
  return { ...env, ...extra };
}

/**
 * A value for a MySQL/MariaDB option file, read back verbatim by both (mysys `my_default.c`):
 * double-quoted, so `#`, `'`, `;` and blanks at either end stay part of it, with `\` `"` and the
 * control characters the parser knows escaped.
 */
export function optionFileValue(value: string): string {
  const escaped = value.replace(/[\\"\n\r\t\b]/g, (c) => ({ '\\': '\\\\', '"': '\\"', '\n': '\\n', '\r': '\\r', '\t': '\\t', '\b': '\\b' })[c] ?? c);
  return `"${escaped}"`;
}

/** One line of a PostgreSQL password file matching any host, port, database and user. */
export function pgPassLine(password: string): string {
  return `*:*:*:*:${password.replace(/[\\:]/g, (c) => `\\${c}`)}\n`;
}

/**
 * Runs `fn` with a 0600 file (in a fresh 0700 folder) holding the password, then deletes both,
 * whatever happens.
 */
async function withSecretFile<T>(name: string, content: string, fn: (file: string) => Promise<T>): Promise<T> {
  const dir = await mkdtemp(join(tmpdir(), 'newapi-cluster-db-'));
  liveSecretDirs.add(dir);
  if (!exitHookInstalled) {
    exitHookInstalled = true;
    process.once('exit', removeLiveSecretDirs);
  }
  try {
    const file = join(dir, name);
    await writeFile(file, content, { mode: 0o600, flag: 'wx' });
    return await fn(file);
  } finally {
    await rm(dir, { recursive: true, force: true });
    liveSecretDirs.delete(dir);
  }
}

/** Folders holding a password right now: removed at exit too, should the process quit mid-run (a second Ctrl-C). */
const liveSecretDirs = new Set<string>();
let exitHookInstalled = false;

function removeLiveSecretDirs(): void {
  for (const dir of liveSecretDirs) {
    try {
      rmSync(dir, { recursive: true, force: true });
    } catch {
      // nothing more can be done while exiting
    }
  }
}

function mysqlOptionFile(t: DbTarget): string {
  return `# written by newapi-cluster for one run; deleted when it ends\n[client]\npassword=${optionFileValue(t.password)}\n`;
}

const OPTION_FILE_PLACEHOLDER = '<option file: 0600, deleted after the run>';

/** argv for reports: the option file's path (random, but meaningless) replaced by a placeholder. */
function shown(args: readonly string[], secretFile: string): string[] {
  return args.map((a) => a.split(secretFile).join(OPTION_FILE_PLACEHOLDER));
}

// ---------------------------------------------------------------------------------------------
// Running a tool
// ---------------------------------------------------------------------------------------------

/** The last lines of a tool's stderr, bounded. */
class StderrTail {
  private text = '';
  push(chunk: Buffer): void {
    this.text = (this.text + chunk.toString('utf8')).slice(-16_384);
  }
  /** The most telling line: the last one that reads like an error, else the last one. */
  lastLine(): string {
    const lines = this.text.split(/\r?\n/).map((l) => l.trim()).filter(Boolean);
    const errors = lines.filter((l) => /error|denied|can't|cannot|unknown|failed|fatal|lost|refused|couldn't|got |no such|does not exist/i.test(l) && !/^warning/i.test(l));
    return errors.at(-1) ?? lines.at(-1) ?? '';
  }
}

function hintFor(line: string, kind: DatabaseDsn['kind']): string {
  if (/access denied|password authentication failed|authentication/i.test(line)) {
    return 'check the user and password of database.dsn; newapi-cluster check tests the login from each node';
  }
  if (/ECONNREFUSED|ETIMEDOUT|ECONNRESET|can't connect|could not connect|connection refused|lost connection|timed out|timeout|server has gone away|connection to server/i.test(line)) {
    return 'the database did not answer through the tunnel; newapi-cluster check tests it from the master';
  }
  if (/server version mismatch|aborting because of server version/i.test(line)) return PG_TOOLS_HINT;
  if (/insufficient privileges to SHOW CREATE|SHOW_ROUTINE/i.test(line)) {
    return 'a stored routine belongs to another definer: grant the user SELECT on mysql.proc (MariaDB) or SHOW_ROUTINE (MySQL 8.0.20+), or drop the routine';
  }
  if (/unknown (variable|option)|unrecognized option/i.test(line)) {
    return kind === 'mysql' ? `this dump tool is too old for an option the backup needs; ${MYSQL_TOOLS_HINT}` : PG_TOOLS_HINT;
  }
  return 'run newapi-cluster check to test the database from the master, and again with --verbose for details';
}

function toolError(tool: DbTool, code: number | null, signal: NodeJS.Signals | null, tail: StderrTail, secret: string): CliError {
  const line = redactIn(tail.lastLine(), secret);
  const how = code !== null ? `exit ${code}` : `killed by ${signal ?? 'a signal'}`;
  return new CliError(`${tool.name} failed (${how})${line ? `: ${line}` : ''}`, { hint: hintFor(line, tool.flavor === 'postgres' ? 'postgres' : 'mysql') });
}

function redactIn(text: string, secret: string): string {
  return secret.length >= 1 ? text.split(secret).join('••••••') : text;
}

/**
 * Ends a child: SIGTERM, then SIGKILL if it has not gone within 2 s. Once it has exited, its pipes
 * are closed too, so nothing it may have left behind can hold the run open.
 */
function kill(child: ReturnType<typeof spawn>): void {
  if (child.exitCode !== null || child.signalCode !== null) return;
  child.once('exit', () => {
    child.stdin?.destroy();
    child.stdout?.destroy();
    child.stderr?.destroy();
  });
  child.kill('SIGTERM');
  const t = setTimeout(() => {
    if (child.exitCode === null && child.signalCode === null) child.kill('SIGKILL');
  }, 2_000);
  t.unref();
}

function abortError(signal: AbortSignal): Error {
  const r: unknown = signal.reason;
  return r instanceof Error ? r : new CliError('the dump was stopped');
}

/**
 * One dump tool run: its stdout goes into `dest` (not ended: a second pass may follow).
 * Resolves once it exited 0 and its output was handed to `dest`.
 */
function runDumpPass(tool: DbTool, args: string[], env: NodeJS.ProcessEnv, dest: Writable, signal: AbortSignal, secret: string): Promise<void> {
  return new Promise<void>((resolve, reject) => {
    if (signal.aborted) return reject(abortError(signal));
    const child = spawn(tool.path, args, { stdio: ['ignore', 'pipe', 'pipe'], env });
    const tail = new StderrTail();
    child.stderr.on('data', (d: Buffer) => tail.push(d));
    const onAbort = (): void => kill(child);
    signal.addEventListener('abort', onAbort, { once: true });
    let spawnError: Error | undefined;
    child.once('error', (e) => {
      spawnError = e;
    });
    child.stdout.pipe(dest, { end: false });
    child.once('close', (code, sig) => {
      signal.removeEventListener('abort', onAbort);
      child.stdout.unpipe(dest);
      if (signal.aborted) return reject(abortError(signal));
      if (spawnError) return reject(new CliError(`${tool.name} could not be started: ${spawnError.message}`, { hint: MYSQL_TOOLS_HINT }));
      if (code !== 0) return reject(toolError(tool, code, sig, tail, secret));
      resolve();
    });
  });
}

/** Links an outer signal (optional) to a controller of our own, which a failing stage can abort too. */
function linkedController(outer: AbortSignal | undefined): { ac: AbortController; unlink: () => void } {
  const ac = new AbortController();
  if (!outer) return { ac, unlink: () => undefined };
  const onAbort = (): void => ac.abort(outer.reason);
  if (outer.aborted) onAbort();
  else outer.addEventListener('abort', onAbort, { once: true });
  return { ac, unlink: () => outer.removeEventListener('abort', onAbort) };
}

// ---------------------------------------------------------------------------------------------
// Counting what passes: the scanners
// ---------------------------------------------------------------------------------------------

export interface DumpScanner {
  push(chunk: Buffer): void;
  end(): void;
  readonly rows: number;
  /** The table being dumped. */
  readonly current: string | undefined;
  readonly tablesDone: number;
  /** Every table the dump defines, in dump order, with its rows. */
  tables(): TableCount[];
}

const SQ = 0x27; // '
const DQ = 0x22; // "
const BT = 0x60; // `
const BSL = 0x5c; // \
const LP = 0x28; // (
const RP = 0x29; // )
const NL = 0x0a;
const DASH = 0x2d;
const HASH = 0x23;
const SLASH = 0x2f;
const STAR = 0x2a;
const DOT = 0x2e;

const ST_START = 0;
const ST_HEAD = 1;
const ST_BODY = 2;
const ST_VALUES = 3;
const ST_COLS = 4;
const ST_DELIM_LINE = 5;
const ST_LINE_COMMENT = 6;
const ST_BLOCK_COMMENT = 7;

const HEAD_MAX = 1024;
const IDENT = '`((?:[^`]|``)+)`';
const INSERT_VALUES_RE = new RegExp(`^(?:INSERT|REPLACE)\\s+(?:(?:LOW_PRIORITY|DELAYED|HIGH_PRIORITY|IGNORE)\\s+)*INTO\\s+${IDENT}\\s*(?:\\(\\)\\s*)?VALUES\\s*$`, 'i');
const INSERT_COLS_RE = new RegExp(`^(?:INSERT|REPLACE)\\s+(?:(?:LOW_PRIORITY|DELAYED|HIGH_PRIORITY|IGNORE)\\s+)*INTO\\s+${IDENT}\\s*$`, 'i');
const CREATE_TABLE_RE = new RegExp(`^CREATE\\s+(?:OR\\s+REPLACE\\s+)?TABLE\\s+(?:IF\\s+NOT\\s+EXISTS\\s+)?${IDENT}\\s*$`, 'i');
const INTERESTING_HEAD_RE = /^(?:INSERT|REPLACE|CREATE)\s/i;

/** A backtick-quoted name collected byte by byte (latin1) back to its text. */
function identFrom(latin1: string): string {
  return Buffer.from(latin1.replace(/``/g, '`'), 'latin1').toString('utf8');
}

/**
 * Reads a mysqldump / mariadb-dump stream as it passes, exactly: statements are split on the
 * current delimiter (`DELIMITER ;;` blocks included) outside quotes and comments; a statement
 * that starts `INSERT INTO \`t\` VALUES` counts one row per top-level `(`, with strings ('…',
 * "…" with backslash escapes, `…` with doubled backticks) skipped whatever they hold; a
 * statement that starts `CREATE TABLE \`t\`` defines a table. Chunk boundaries can fall anywhere.
 */
export class MysqlDumpScanner implements DumpScanner {
  rows = 0;
  private state = ST_START;
  /** Where a comment returns to. */
  private after = ST_START;
  private quote = 0;
  private escape = false;
  private star = false;
  private depth = 0;
  private head = '';
  private delimText = '';
  private delim: number[] = [0x3b];
  private dm = 0;
  private carry: Buffer | undefined;
  private ended = false;
  private insertTable: string | undefined;
  private insertRows = 0;
  private readonly names: string[] = [];
  private readonly rowsOf = new Map<string, number>();
  private lastTable: string | undefined;

  get current(): string | undefined {
    return this.lastTable;
  }

  get tablesDone(): number {
    return this.ended ? this.names.length : Math.max(0, this.names.length - 1);
  }

  tables(): TableCount[] {
    const seen = new Set(this.names);
    const extra = [...this.rowsOf.keys()].filter((n) => !seen.has(n));
    return [...this.names, ...extra].map((name) => ({ name, rows: this.rowsOf.get(name) ?? 0 }));
  }

  push(chunk: Buffer): void {
    let buf = chunk;
    if (this.carry) {
      buf = Buffer.concat([this.carry, chunk]);
      this.carry = undefined;
    }
    this.scan(buf);
  }

  end(): void {
    this.ended = true;
    if (this.carry) {
      const rest = this.carry;
      this.carry = undefined;
      this.scan(rest);
    }
    this.endStatement();
  }

  private scan(buf: Buffer): void {
    const n = buf.length;
    let i = 0;
    while (i < n) {
      switch (this.state) {
        case ST_VALUES:
          i = this.scanValues(buf, i, n);
          break;
        case ST_LINE_COMMENT: {
          const j = buf.indexOf(NL, i);
          if (j < 0) return;
          i = j + 1;
          this.leaveComment();
          break;
        }
        case ST_BLOCK_COMMENT: {
          for (; i < n; i++) {
            const c = buf[i] as number;
            if (this.star && c === SLASH) {
              i++;
              this.leaveComment();
              break;
            }
            this.star = c === STAR;
          }
          break;
        }
        case ST_DELIM_LINE: {
          const j = buf.indexOf(NL, i);
          const end = j < 0 ? n : j;
          this.delimText += buf.toString('latin1', i, end);
          if (j < 0) return;
          i = j + 1;
          const d = this.delimText.trim().split(/\s+/)[0] ?? '';
          if (d) this.delim = [...Buffer.from(d, 'latin1')];
          this.delimText = '';
          this.resetStatement();
          break;
        }
        default:
          i = this.scanGeneral(buf, i, n);
      }
    }
  }

  /** START, HEAD, BODY, COLS: byte by byte; returns where it stopped (n, or at a carry). */
  private scanGeneral(buf: Buffer, i: number, n: number): number {
    for (; i < n; i++) {
      const c = buf[i] as number;
      if (this.quote !== 0) {
        if (this.state === ST_HEAD) this.addHead(c);
        if (this.escape) this.escape = false;
        else if (c === BSL && this.quote !== BT) this.escape = true;
        else if (c === this.quote) this.quote = 0;
        continue;
      }
      // Comments: `-- ` (two dashes and a blank or control character), `#`, `/* … */`.
      if (c === DASH || c === SLASH) {
        // The bytes that decide it may be in the next chunk: keep this one for then.
        const undecided = i + 1 >= n || (c === DASH && buf[i + 1] === DASH && i + 2 >= n);
        if (undecided && !this.ended) {
          this.carry = Buffer.from(buf.subarray(i));
          return n;
        }
        if (c === DASH && buf[i + 1] === DASH && (i + 2 >= n || (buf[i + 2] as number) <= 0x20)) {
          this.enterComment(ST_LINE_COMMENT);
          return i + 2;
        }
        if (c === SLASH && buf[i + 1] === STAR) {
          this.enterComment(ST_BLOCK_COMMENT);
          return i + 2;
        }
      } else if (c === HASH) {
        this.enterComment(ST_LINE_COMMENT);
        return i + 1;
      }
      // The delimiter ends the statement.
      if (c === this.delim[this.dm]) {
        this.dm++;
        if (this.dm === this.delim.length) {
          this.endStatement();
          return i + 1;
        }
      } else {
        this.dm = c === this.delim[0] ? 1 : 0;
      }
      switch (this.state) {
        case ST_START:
          if (c <= 0x20) continue;
          this.state = ST_HEAD;
          this.head = '';
        // falls through
        case ST_HEAD:
          if (c === LP) {
            this.decideHead();
            if (this.state !== ST_HEAD) return i + 1;
            continue;
          }
          if (c === SQ || c === DQ || c === BT) this.quote = c;
          this.addHead(c);
          if (this.state !== ST_HEAD) return i + 1;
          continue;
        case ST_COLS:
          if (c === SQ || c === DQ || c === BT) this.quote = c;
          else if (c === RP) {
            this.head += '()';
            this.state = ST_HEAD;
            return i + 1;
          }
          continue;
        default: // ST_BODY
          if (c === SQ || c === DQ || c === BT) this.quote = c;
      }
    }
    return n;
  }

  private addHead(c: number): void {
    this.head += String.fromCharCode(c);
    const len = this.head.length;
    if (len === 10 && this.quote === 0) {
      if (/^DELIMITER\s/i.test(this.head)) {
        this.state = ST_DELIM_LINE;
        this.delimText = '';
        return;
      }
      if (!INTERESTING_HEAD_RE.test(this.head)) this.state = ST_BODY;
    } else if (len > HEAD_MAX) {
      this.state = ST_BODY;
    }
  }

  /** At the first `(` of a statement: an INSERT's first row, its column list, a CREATE TABLE, or nothing of interest. */
  private decideHead(): void {
    const head = this.head;
    let m = INSERT_VALUES_RE.exec(head);
    if (m) {
      this.startInsert(identFrom(m[1] ?? ''));
      this.state = ST_VALUES;
      this.depth = 1;
      this.rows++;
      this.insertRows++;
      return;
    }
    if (INSERT_COLS_RE.test(head)) {
      this.state = ST_COLS;
      return;
    }
    m = CREATE_TABLE_RE.exec(head);
    if (m) {
      const name = identFrom(m[1] ?? '');
      this.names.push(name);
      this.lastTable = name;
      this.state = ST_BODY;
      return;
    }
    this.state = ST_BODY;
  }

  private startInsert(table: string): void {
    this.insertTable = table;
    this.insertRows = 0;
    this.lastTable = table;
  }

  /** Inside an INSERT's VALUES: one row per top-level `(`. The hot loop. */
  private scanValues(buf: Buffer, i: number, n: number): number {
    let quote = this.quote;
    let escape = this.escape;
    let depth = this.depth;
    let rows = 0;
    const d0 = this.delim[0] as number;
    const single = this.delim.length === 1;
    for (; i < n; i++) {
      const c = buf[i] as number;
      if (quote !== 0) {
        if (escape) escape = false;
        else if (c === BSL) escape = quote !== BT;
        else if (c === quote) quote = 0;
        continue;
      }
      if (c === LP) {
        if (depth === 0) rows++;
        depth++;
      } else if (c === RP) {
        depth--;
      } else if (c === SQ || c === DQ || c === BT) {
        quote = c;
      } else if (depth === 0) {
        if (single) {
          if (c === d0) {
            this.quote = 0;
            this.escape = false;
            this.depth = 0;
            this.rows += rows;
            this.insertRows += rows;
            this.endStatement();
            return i + 1;
          }
        } else if (c === this.delim[this.dm]) {
          this.dm++;
          if (this.dm === this.delim.length) {
            this.quote = 0;
            this.escape = false;
            this.depth = 0;
            this.rows += rows;
            this.insertRows += rows;
            this.endStatement();
            return i + 1;
          }
        } else {
          this.dm = c === d0 ? 1 : 0;
        }
      }
    }
    this.quote = quote;
    this.escape = escape;
    this.depth = depth;
    this.rows += rows;
    this.insertRows += rows;
    return n;
  }

  private enterComment(kind: number): void {
    // Back to where it was; inside a statement's head, a comment separates words as a blank would.
    this.after = this.state;
    this.state = kind;
    this.star = false;
    this.dm = 0;
  }

  private leaveComment(): void {
    this.state = this.after;
    if (this.state === ST_HEAD) this.head += ' ';
  }

  private endStatement(): void {
    if (this.insertTable !== undefined) {
      this.rowsOf.set(this.insertTable, (this.rowsOf.get(this.insertTable) ?? 0) + this.insertRows);
      this.insertTable = undefined;
      this.insertRows = 0;
    }
    this.resetStatement();
  }

  private resetStatement(): void {
    this.state = ST_START;
    this.head = '';
    this.quote = 0;
    this.escape = false;
    this.depth = 0;
    this.dm = 0;
  }
}

/**
 * Reads pg_dump's plain format as it passes: `CREATE TABLE schema.name (` defines a table; each
 * line between `COPY schema.name (…) FROM stdin;` and `\.` is one row (pg_dump escapes line
 * breaks inside values, so a row is always one line).
 */
export class PgDumpScanner implements DumpScanner {
  private doneRows = 0;
  serverVersion: string | undefined;
  private line: Buffer[] = [];
  private lineLen = 0;
  private copyTable: string | undefined;
  private copyRows = 0;
  private ended = false;

  get rows(): number {
    return this.doneRows + this.copyRows;
  }
  private readonly names: string[] = [];
  private readonly rowsOf = new Map<string, number>();
  private lastTable: string | undefined;

  get current(): string | undefined {
    return this.lastTable;
  }

  get tablesDone(): number {
    return this.ended ? this.names.length : Math.max(0, this.names.length - 1);
  }

  tables(): TableCount[] {
    const seen = new Set(this.names);
    const extra = [...this.rowsOf.keys()].filter((n) => !seen.has(n));
    return [...this.names, ...extra].map((name) => ({ name, rows: this.rowsOf.get(name) ?? 0 }));
  }

  push(chunk: Buffer): void {
    let i = 0;
    const n = chunk.length;
    while (i < n) {
      const j = chunk.indexOf(NL, i);
      if (j >= 0 && this.lineLen === 0 && this.copyTable !== undefined) {
        // The hot path: a whole row line inside COPY … FROM stdin.
        if (j - i === 2 && chunk[i] === BSL && chunk[i + 1] === DOT) this.endCopy();
        else this.copyRows++;
        i = j + 1;
        continue;
      }
      const end = j < 0 ? n : j;
      // Only a line's beginning matters: keep at most 4 KiB of it.
      if (this.lineLen < 4096) {
        const take = Math.min(end, i + 4096 - this.lineLen);
        if (take > i) this.line.push(Buffer.from(chunk.subarray(i, take)));
      }
      this.lineLen += end - i;
      if (j < 0) return;
      this.endLine();
      i = j + 1;
    }
  }

  end(): void {
    if (this.lineLen > 0) this.endLine();
    if (this.copyTable !== undefined) this.endCopy();
    this.ended = true;
  }

  private endCopy(): void {
    if (this.copyTable === undefined) return;
    this.doneRows += this.copyRows;
    this.rowsOf.set(this.copyTable, (this.rowsOf.get(this.copyTable) ?? 0) + this.copyRows);
    this.copyTable = undefined;
    this.copyRows = 0;
  }

  private endLine(): void {
    const head = Buffer.concat(this.line);
    this.line = [];
    const len = this.lineLen;
    this.lineLen = 0;
    if (this.copyTable !== undefined) {
      if (len === 2 && head[0] === BSL && head[1] === DOT) this.endCopy();
      else this.copyRows++;
      return;
    }
    const text = head.toString('utf8');
    let m = /^CREATE (?:UNLOGGED )?TABLE (?:IF NOT EXISTS )?(.+?) \($/.exec(text);
    if (m) {
      const name = pgName(m[1] ?? '');
      this.names.push(name);
      this.lastTable = name;
      return;
    }
    m = /^COPY (.+?)(?: \(.*\))? FROM stdin;$/.exec(text);
    if (m) {
      this.copyTable = pgName(m[1] ?? '');
      this.copyRows = 0;
      this.lastTable = this.copyTable;
      return;
    }
    m = /^-- Dumped from database version (.+)$/.exec(text);
    if (m) this.serverVersion = m[1];
  }
}

/** `public.logs` → `logs`; `"My Table"` → `My Table`; another schema keeps its prefix. */
function pgName(qualified: string): string {
  const parts: string[] = [];
  const re = /"((?:[^"]|"")*)"|([^."]+)/g;
  for (const m of qualified.matchAll(re)) parts.push(m[1] !== undefined ? m[1].replace(/""/g, '"') : (m[2] ?? ''));
  if (parts.length === 2 && parts[0] === 'public') return parts[1] ?? qualified;
  return parts.join('.');
}

/** A pass-through that feeds a scanner and counts raw bytes. */
class ScanStream extends Transform {
  rawBytes = 0;
  constructor(
    private readonly scanner: DumpScanner,
    private readonly onChunk: () => void,
  ) {
    super({ highWaterMark: 1 << 20 });
  }
  override _transform(chunk: Buffer, _enc: BufferEncoding, cb: TransformCallback): void {
    try {
      this.scanner.push(chunk);
    } catch (e) {
      cb(e as Error);
      return;
    }
    this.rawBytes += chunk.length;
    this.onChunk();
    cb(null, chunk);
  }
  override _flush(cb: TransformCallback): void {
    this.scanner.end();
    cb();
  }
}

/** A pass-through that hashes and counts what reaches the caller's Writable. */
class HashStream extends Transform {
  bytes = 0;
  readonly hash: Hash = createHash('sha256');
  override _transform(chunk: Buffer, _enc: BufferEncoding, cb: TransformCallback): void {
    this.hash.update(chunk);
    this.bytes += chunk.length;
    cb(null, chunk);
  }
}

// ---------------------------------------------------------------------------------------------
// MySQL / MariaDB
// ---------------------------------------------------------------------------------------------

interface MysqlProbe {
  version: string;
  baseTables: string[];
  canDumpEvents: boolean;
}

/** TLS as the DSN asks (`tls=true|skip-verify|preferred`); the name through a tunnel is 127.0.0.1, so certificates are not verified. */
function mysqlTls(t: DbTarget): 'required' | 'preferred' | undefined {
  const tls = t.params?.tls?.toLowerCase();
  if (!tls || tls === 'false') return undefined;
  if (tls === 'preferred') return 'preferred';
  return 'required';
}

function ident(name: string): string {
  return `\`${name.replace(/`/g, '``')}\``;
}

async function mysqlConnect(t: DbTarget): Promise<import('mysql2/promise').Connection> {
  // .default: the package is CommonJS, and a bundled dynamic import of it has only a default export.
  const mysql = (await import('mysql2/promise')).default;
  try {
    const tls = mysqlTls(t);
    const db = await mysql.createConnection({
      host: t.host,
      port: t.port,
      user: t.user,
      password: t.password,
      database: t.database,
      connectTimeout: 15_000,
      ...(tls === 'required' ? { ssl: { rejectUnauthorized: false } } : {}),
    });
    db.on('error', () => undefined);
    return db;
  } catch (e) {
    const msg = redactIn(errorMessage(e), t.password);
    throw new CliError(`cannot log in to database ${t.database} as ${t.user}: ${msg}`, { hint: hintFor(msg, 'mysql'), cause: e });
  }
}

async function probeMysql(t: DbTarget): Promise<MysqlProbe> {
  const db = await mysqlConnect(t);
  try {
    const [[row]] = (await db.query('SELECT VERSION() AS v')) as unknown as [[{ v: string }]];
    const [tables] = (await db.query("SELECT TABLE_NAME AS name FROM information_schema.TABLES WHERE TABLE_SCHEMA = DATABASE() AND TABLE_TYPE IN ('BASE TABLE', 'SYSTEM VERSIONED')")) as unknown as [{ name: string }[]];
    let canDumpEvents = true;
    try {
      await db.query('SHOW EVENTS');
    } catch {
      canDumpEvents = false;
    }
    return { version: row?.v ?? 'unknown', baseTables: tables.map((r) => r.name), canDumpEvents };
  } finally {
    await db.end().catch(() => db.destroy());
  }
}

/** The options every dump pass shares. */
function mysqlBaseArgs(tool: DbTool, t: DbTarget, optionFile: string): string[] {
  const args = [
    // Must come first. Only this file is read, so an operator's ~/.my.cnf (a [client] password
    // of its own, say) cannot change which password is used.
    `--defaults-file=${optionFile}`,
    `--host=${t.host}`,
    `--port=${t.port}`,
    `--user=${t.user}`,
    '--protocol=TCP',
    '--single-transaction',
    '--quick',
    '--triggers',
    '--hex-blob',
    '--default-character-set=utf8mb4',
    '--no-tablespaces',
    '--max-allowed-packet=1G',
  ];
  if (tool.flavor === 'mysql') {
    // MySQL's mysqldump: never write SET @@GLOBAL.GTID_PURGED (restoring into the server the dump
    // came from would fail), and never read histograms (information_schema.COLUMN_STATISTICS does
    // not exist on MariaDB or MySQL 5.7). Both options are no-ops where they do not apply.
    if (tool.options.has('set-gtid-purged')) args.push('--set-gtid-purged=OFF');
    if (tool.options.has('column-statistics')) args.push('--column-statistics=0');
  }
  const tls = mysqlTls(t);
  if (tls === 'required') args.push(tool.flavor === 'mysql' && tool.options.has('ssl-mode') ? '--ssl-mode=REQUIRED' : '--ssl');
  if (tls === 'preferred' && tool.flavor === 'mysql' && tool.options.has('ssl-mode')) args.push('--ssl-mode=PREFERRED');
  return args;
}

function checkDatabaseName(t: DbTarget): void {
  if (t.database.startsWith('-')) throw new CliError(`the database name ${t.database} starts with "-": the dump tools would read it as an option`, { hint: 'rename the database' });
}

/** A consistent, streamed, gzip-compressed dump of a MySQL/MariaDB database into `out` (which is ended). */
export async function dumpMysql(t: DbTarget, out: Writable, opts: DumpOptions = {}): Promise<DumpResult> {
  checkDatabaseName(t);
  // The tool's options and the server's facts, at once.
  const [tool, probe] = await Promise.all([findMysqlDumpTool(opts.searchPath), probeMysql(t)]);
  const warnings: string[] = [];
  const skip = [...new Set(opts.skipDataOf ?? [])];
  const existingSkip = skip.filter((s) => probe.baseTables.includes(s));
  const singlePass = (opts.skipDataStrategy ?? 'auto') === 'auto' && tool.options.has('ignore-table-data');
  if (!probe.canDumpEvents) warnings.push(`events were not dumped: ${t.user} lacks the EVENT privilege on ${t.database} (New API uses none)`);

  const scanner = new MysqlDumpScanner();
  return withSecretFile('client.cnf', mysqlOptionFile(t), async (optionFile) => {
    const base = mysqlBaseArgs(tool, t, optionFile);
    const data = ['--routines', ...(probe.canDumpEvents ? ['--events'] : [])];
    const passes: string[][] = [];
    if (existingSkip.length === 0) {
      passes.push([...base, ...data, t.database]);
    } else if (singlePass) {
      // MariaDB's tool: one pass, one transaction; those tables keep their definition only.
      passes.push([...base, ...data, ...existingSkip.map((s) => `--ignore-table-data=${t.database}.${s}`), t.database]);
    } else {
      // MySQL's mysqldump has no --ignore-table-data: the skipped tables' definitions first (so a
      // view over them can be created later in the dump), then everything else in one transaction.
      passes.push([...base, '--no-data', t.database, ...existingSkip]);
      passes.push([...base, ...data, ...existingSkip.map((s) => `--ignore-table=${t.database}.${s}`), t.database]);
    }
    const result = await runDump(tool, passes, childEnv(), scanner, out, { ...opts, tablesTotal: probe.baseTables.length }, t.password);
    return {
      kind: 'mysql',
      tool: tool.version,
      serverVersion: probe.version,
      ...result,
      skippedData: existingSkip,
      warnings,
      commands: passes.map((a) => [tool.name, ...shown(a, optionFile)]),
    };
  });
}

/** Runs the passes into scanner → gzip → hash → out. */
async function runDump(
  tool: DbTool,
  passes: string[][],
  env: NodeJS.ProcessEnv,
  scanner: DumpScanner,
  out: Writable,
  opts: DumpOptions & { tablesTotal: number | undefined },
  secret: string,
): Promise<{ tables: TableCount[]; rows: number; rawBytes: number; bytes: number; sha256: string }> {
  const { ac, unlink } = linkedController(opts.signal);
  const hash = new HashStream();
  const scan = new ScanStream(scanner, () =>
    opts.onProgress?.({ rawBytes: scan.rawBytes, bytes: hash.bytes, tablesDone: scanner.tablesDone, tablesTotal: opts.tablesTotal, table: scanner.current, rows: scanner.rows }),
  );
  const gzip = createGzip({ level: opts.gzipLevel ?? 6, chunkSize: 64 * 1024 });
  let sinkError: unknown;
  let stopping = false;
  const sink = pipeline(scan, gzip, hash, out).catch((e: unknown) => {
    if (!stopping) sinkError = e;
    // The file (or whatever `out` is) failed: stop the dump tool.
    if (!ac.signal.aborted) ac.abort(e instanceof Error ? e : new Error(String(e)));
    throw e;
  });
  sink.catch(() => undefined);
  try {
    for (const args of passes) await runDumpPass(tool, args, env, scan, ac.signal, secret);
    scan.end();
    await sink;
  } catch (e) {
    stopping = true;
    if (!scan.destroyed) scan.destroy(e instanceof Error ? e : new Error(String(e)));
    await sink.catch(() => undefined);
    throw sinkError !== undefined && !(opts.signal?.aborted ?? false) ? wrapSinkError(sinkError) : e;
  } finally {
    unlink();
  }
  opts.onProgress?.({ rawBytes: scan.rawBytes, bytes: hash.bytes, tablesDone: scanner.tablesDone, tablesTotal: opts.tablesTotal, table: undefined, rows: scanner.rows });
  return { tables: scanner.tables(), rows: scanner.rows, rawBytes: scan.rawBytes, bytes: hash.bytes, sha256: hash.hash.digest('hex') };
}

function wrapSinkError(e: unknown): Error {
  if (e instanceof CliError) return e;
  return new CliError(`writing the backup failed: ${errorMessage(e)}`, { hint: 'check the free space and permissions of the backup folder', cause: e });
}

/** Statements that empty a MySQL database: every view, table, sequence, routine and event. */
async function mysqlEmptyingSql(t: DbTarget): Promise<{ sql: string; dropped: NonNullable<RestoreResult['dropped']> }> {
  const db = await mysqlConnect(t);
  try {
    const [tables] = (await db.query('SELECT TABLE_NAME AS name, TABLE_TYPE AS type FROM information_schema.TABLES WHERE TABLE_SCHEMA = DATABASE() ORDER BY TABLE_NAME')) as unknown as [{ name: string; type: string }[]];
    const [routines] = (await db.query("SELECT ROUTINE_NAME AS name, ROUTINE_TYPE AS type FROM information_schema.ROUTINES WHERE ROUTINE_SCHEMA = DATABASE() AND ROUTINE_TYPE IN ('PROCEDURE', 'FUNCTION') ORDER BY ROUTINE_NAME")) as unknown as [{ name: string; type: string }[]];
    let events: { name: string }[] = [];
    try {
      [events] = (await db.query('SELECT EVENT_NAME AS name FROM information_schema.EVENTS WHERE EVENT_SCHEMA = DATABASE() ORDER BY EVENT_NAME')) as unknown as [{ name: string }[]];
    } catch {
      // no EVENT privilege: there is nothing we could drop either
    }
    const lines = ['-- newapi-cluster: empty the database, in the same session as the restore', 'SET FOREIGN_KEY_CHECKS=0;'];
    const views = tables.filter((r) => r.type === 'VIEW');
    const sequences = tables.filter((r) => r.type === 'SEQUENCE');
    const base = tables.filter((r) => r.type !== 'VIEW' && r.type !== 'SEQUENCE');
    for (const v of views) lines.push(`DROP VIEW IF EXISTS ${ident(v.name)};`);
    for (const b of base) lines.push(`DROP TABLE IF EXISTS ${ident(b.name)};`);
    for (const s of sequences) lines.push(`DROP SEQUENCE IF EXISTS ${ident(s.name)};`);
    for (const r of routines) lines.push(`DROP ${r.type === 'FUNCTION' ? 'FUNCTION' : 'PROCEDURE'} IF EXISTS ${ident(r.name)};`);
    for (const e of events) lines.push(`DROP EVENT IF EXISTS ${ident(e.name)};`);
    return {
      sql: `${lines.join('\n')}\n`,
      dropped: { tables: base.length, views: views.length, routines: routines.length, events: events.length, sequences: sequences.length },
    };
  } finally {
    await db.end().catch(() => db.destroy());
  }
}

/** Counts bytes and, for MySQL's own client, drops MariaDB's sandbox line (which only MariaDB's client understands). */
class RestoreFeed extends Transform {
  bytes = 0;
  private first = true;
  private pending: Buffer | undefined;
  constructor(
    private readonly stripSandbox: boolean,
    private readonly onBytes: (n: number) => void,
    /** Sent after the last byte of the input (PostgreSQL's COMMIT). */
    private readonly suffix = '',
  ) {
    super({ highWaterMark: 1 << 20 });
  }
  override _transform(chunk: Buffer, _enc: BufferEncoding, cb: TransformCallback): void {
    this.bytes += chunk.length;
    this.onBytes(this.bytes);
    if (this.first && this.stripSandbox) {
      const buf = this.pending ? Buffer.concat([this.pending, chunk]) : chunk;
      const nl = buf.indexOf(NL);
      if (nl < 0 && buf.length < 256) {
        this.pending = buf;
        cb();
        return;
      }
      this.first = false;
      this.pending = undefined;
      const firstLine = buf.toString('latin1', 0, nl < 0 ? buf.length : nl);
      cb(null, /^\/\*M!999999\\- enable the sandbox mode \*\/\s*$/.test(firstLine) ? buf.subarray(nl + 1) : buf);
      return;
    }
    this.first = false;
    cb(null, chunk);
  }
  override _flush(cb: TransformCallback): void {
    if (this.pending) this.push(this.pending);
    cb(null, this.suffix ? Buffer.from(this.suffix) : undefined);
  }
}

/**
 * Runs a client with `prefix` and then `input` on its stdin. Resolves once it exited 0; a client
 * that fails is reported with its last stderr line (its own error wins over the broken pipe).
 */
function runClient(
  tool: DbTool,
  args: string[],
  env: NodeJS.ProcessEnv,
  prefix: string,
  input: Readable,
  feed: RestoreFeed,
  signal: AbortSignal | undefined,
  secret: string,
): Promise<void> {
  return new Promise<void>((resolve, reject) => {
    if (signal?.aborted) return reject(abortError(signal));
    const child = spawn(tool.path, args, { stdio: ['pipe', 'ignore', 'pipe'], env });
    const tail = new StderrTail();
    child.stderr.on('data', (d: Buffer) => tail.push(d));
    const onAbort = (): void => {
      input.unpipe();
      kill(child);
    };
    signal?.addEventListener('abort', onAbort, { once: true });
    let spawnError: Error | undefined;
    child.once('error', (e) => {
      spawnError = e;
    });
    child.stdin.on('error', () => undefined); // EPIPE when the client stops early: its exit says why
    // Once it has exited, nothing more can be fed: close its stdin so 'close' (all pipes done) comes.
    child.once('exit', () => {
      if (!child.stdin.writableFinished) child.stdin.destroy();
    });
    let feedError: unknown;
    const feeding = (async () => {
      child.stdin.write(prefix);
      await pipeline(input, feed, child.stdin);
    })().catch((e: unknown) => {
      feedError = e;
      // The input broke (a corrupt gzip, say): the client must not see a clean end of input.
      kill(child);
    });
    child.once('close', (code, sig) => {
      signal?.removeEventListener('abort', onAbort);
      // The client is gone: whatever is still being fed has nowhere to go.
      if (!feed.writableFinished) feed.destroy(new CliError(`${tool.name} stopped before reading the whole backup`));
      void feeding.then(() => {
        if (signal?.aborted) return reject(abortError(signal));
        if (spawnError) return reject(new CliError(`${tool.name} could not be started: ${spawnError.message}`, { hint: MYSQL_TOOLS_HINT }));
        if (code !== 0 && tail.lastLine()) return reject(toolError(tool, code, sig, tail, secret));
        if (feedError !== undefined) {
          return reject(feedError instanceof CliError ? feedError : new CliError(`reading the backup failed: ${errorMessage(feedError)}`, { hint: 'check the file with sha256sum against its manifest', cause: feedError }));
        }
        if (code !== 0) return reject(toolError(tool, code, sig, tail, secret));
        resolve();
      });
    });
  });
}

/**
 * Empties the MySQL/MariaDB database (tables, views, sequences, routines, events, foreign key
 * checks off) and streams `input` (an uncompressed dump) into `mariadb`/`mysql`, in one session.
 */
export async function restoreMysql(t: DbTarget, input: Readable, opts: RestoreOptions = {}): Promise<RestoreResult> {
  checkDatabaseName(t);
  const tool = await findMysqlClient(opts.searchPath);
  opts.signal?.throwIfAborted();
  const emptying = await mysqlEmptyingSql(t);
  return withSecretFile('client.cnf', mysqlOptionFile(t), async (optionFile) => {
    const args = [
      `--defaults-file=${optionFile}`,
      `--host=${t.host}`,
      `--port=${t.port}`,
      `--user=${t.user}`,
      '--protocol=TCP',
      '--default-character-set=utf8mb4',
      '--max-allowed-packet=1G',
      '--batch',
    ];
    const tls = mysqlTls(t);
    if (tls === 'required') args.push(tool.flavor === 'mysql' && tool.options.has('ssl-mode') ? '--ssl-mode=REQUIRED' : '--ssl');
    args.push(t.database);
    const feed = new RestoreFeed(tool.flavor === 'mysql', (bytes) => opts.onProgress?.({ bytes }));
    await runClient(tool, args, childEnv(), emptying.sql, input, feed, opts.signal, t.password);
    return { tool: tool.version, bytes: feed.bytes, dropped: emptying.dropped, commands: [[tool.name, ...shown(args, optionFile)]] };
  });
}

// ---------------------------------------------------------------------------------------------
// PostgreSQL
// ---------------------------------------------------------------------------------------------

function pgEnv(t: DbTarget, passFile: string): NodeJS.ProcessEnv {
  return childEnv({
    PGPASSFILE: passFile,
    PGCONNECT_TIMEOUT: '15',
    PGAPPNAME: 'newapi-cluster',
    ...(t.params?.sslmode ? { PGSSLMODE: t.params.sslmode } : {}),
  });
}

function pgConnArgs(t: DbTarget): string[] {
  return [`--host=${t.host}`, `--port=${t.port}`, `--username=${t.user}`, '--no-password'];
}

/** `--dbname` as a conninfo string, so a database name holding `=` or `postgres://` stays a name. */
function pgDbname(name: string): string {
  return `--dbname=dbname='${name.replace(/[\\']/g, (c) => `\\${c}`)}'`;
}

/** `"name"`: a pg_dump pattern that matches exactly this table name, in any schema. */
function pgExactPattern(name: string): string {
  return `"${name.replace(/"/g, '""')}"`;
}

/** A consistent (one snapshot), streamed, gzip-compressed `pg_dump --format=plain` into `out` (which is ended). */
export async function dumpPostgres(t: DbTarget, out: Writable, opts: DumpOptions = {}): Promise<DumpResult> {
  checkDatabaseName(t);
  const tool = await findPgTool('pg_dump', opts.searchPath ?? process.env.PATH ?? '');
  const skip = [...new Set(opts.skipDataOf ?? [])];
  const scanner = new PgDumpScanner();
  return withSecretFile('pgpass', pgPassLine(t.password), async (passFile) => {
    const args = [...pgConnArgs(t), '--format=plain', '--no-owner', '--no-privileges', ...skip.map((s) => `--exclude-table-data=${pgExactPattern(s)}`), pgDbname(t.database)];
    const result = await runDump(tool, [args], pgEnv(t, passFile), scanner, out, { ...opts, tablesTotal: undefined }, t.password);
    const defined = new Set(result.tables.map((x) => x.name));
    return {
      kind: 'postgres',
      tool: tool.version,
      serverVersion: scanner.serverVersion,
      ...result,
      skippedData: skip.filter((s) => defined.has(s)),
      warnings: [],
      commands: [[tool.name, ...args]],
    };
  });
}

/** Drops, in the restore's own transaction, every table, view, sequence, routine and type the user owns outside the system schemas. */
const PG_EMPTYING_SQL = `-- newapi-cluster: empty the database, in the same transaction as the restore
DO $newapi_cluster$
DECLARE r record;
BEGIN
  FOR r IN
    SELECT c.relkind, n.nspname, c.relname FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
    WHERE c.relkind IN ('r', 'p', 'v', 'm', 'S', 'f')
      AND n.nspname NOT IN ('pg_catalog', 'information_schema') AND n.nspname NOT LIKE 'pg\\_%'
      AND pg_has_role(c.relowner, 'USAGE')
      AND NOT EXISTS (SELECT 1 FROM pg_depend d WHERE d.classid = 'pg_class'::regclass AND d.objid = c.oid AND d.deptype = 'e')
    ORDER BY c.relkind DESC
  LOOP
    EXECUTE format('DROP %s IF EXISTS %I.%I CASCADE',
      CASE r.relkind WHEN 'v' THEN 'VIEW' WHEN 'm' THEN 'MATERIALIZED VIEW' WHEN 'S' THEN 'SEQUENCE' WHEN 'f' THEN 'FOREIGN TABLE' ELSE 'TABLE' END,
      r.nspname, r.relname);
  END LOOP;
  FOR r IN
    SELECT p.oid::regprocedure AS sig, p.prokind FROM pg_proc p JOIN pg_namespace n ON n.oid = p.pronamespace
    WHERE n.nspname NOT IN ('pg_catalog', 'information_schema') AND n.nspname NOT LIKE 'pg\\_%'
      AND pg_has_role(p.proowner, 'USAGE')
      AND NOT EXISTS (SELECT 1 FROM pg_depend d WHERE d.classid = 'pg_proc'::regclass AND d.objid = p.oid AND d.deptype = 'e')
  LOOP
    EXECUTE format('DROP %s IF EXISTS %s CASCADE', CASE r.prokind WHEN 'p' THEN 'PROCEDURE' WHEN 'a' THEN 'AGGREGATE' ELSE 'FUNCTION' END, r.sig);
  END LOOP;
  FOR r IN
    SELECT t.oid::regtype AS name, t.typtype FROM pg_type t JOIN pg_namespace n ON n.oid = t.typnamespace
    WHERE t.typtype IN ('e', 'd', 'r', 'm') AND n.nspname NOT IN ('pg_catalog', 'information_schema') AND n.nspname NOT LIKE 'pg\\_%'
      AND pg_has_role(t.typowner, 'USAGE')
      AND NOT EXISTS (SELECT 1 FROM pg_depend d WHERE d.classid = 'pg_type'::regclass AND d.objid = t.oid AND d.deptype = 'e')
  LOOP
    EXECUTE format('DROP %s IF EXISTS %s CASCADE', CASE r.typtype WHEN 'd' THEN 'DOMAIN' ELSE 'TYPE' END, r.name);
  END LOOP;
END
$newapi_cluster$;
`;

/** Empties the PostgreSQL database and streams `input` (an uncompressed plain dump) into `psql`, all in one transaction. */
export async function restorePostgres(t: DbTarget, input: Readable, opts: RestoreOptions = {}): Promise<RestoreResult> {
  checkDatabaseName(t);
  const tool = await findPgTool('psql', opts.searchPath ?? process.env.PATH ?? '');
  opts.signal?.throwIfAborted();
  return withSecretFile('pgpass', pgPassLine(t.password), async (passFile) => {
    const args = [...pgConnArgs(t), '--no-psqlrc', '--quiet', '--set=ON_ERROR_STOP=1', pgDbname(t.database)];
    const feed = new RestoreFeed(false, (bytes) => opts.onProgress?.({ bytes }), '\nCOMMIT;\n');
    await runClient(tool, args, pgEnv(t, passFile), `BEGIN;\n${PG_EMPTYING_SQL}`, input, feed, opts.signal, t.password);
    return { tool: tool.version, bytes: feed.bytes, commands: [[tool.name, ...args]] };
  });
}

// ---------------------------------------------------------------------------------------------
// Either kind
// ---------------------------------------------------------------------------------------------

export function dumpDatabase(t: DbTarget, out: Writable, opts: DumpOptions = {}): Promise<DumpResult> {
  return t.kind === 'postgres' ? dumpPostgres(t, out, opts) : dumpMysql(t, out, opts);
}

export function restoreDatabase(t: DbTarget, input: Readable, opts: RestoreOptions = {}): Promise<RestoreResult> {
  return t.kind === 'postgres' ? restorePostgres(t, input, opts) : restoreMysql(t, input, opts);
}
