/**
 * `backup`: a consistent, streamed, compressed dump of `database.dsn`, taken through the master's
 * SSH connection (a local listener forwarding to the database as the master sees it), written to
 * `backups/<cluster>-<UTC time>-<version>.sql.gz` beside the inventory (0600 from its first
 * byte, folder 0700, git-ignored), with `<same name>.json` beside it: what it holds, its sha256,
 * and never a secret. `upgrade` takes one before its migrate step (`automatic: true`), and only
 * those automatic backups are ever pruned. `restore` reads them back with `verifyBackup`.
 */
import { createHash } from 'node:crypto';
import { close as closeFd, createReadStream, createWriteStream, fsync, open as openFd } from 'node:fs';
import { appendFile, chmod, mkdir, open, readdir, readFile, rename, rm, stat } from 'node:fs/promises';
import { basename, dirname, join, relative, resolve, sep } from 'node:path';
import { pipeline } from 'node:stream/promises';
import { promisify } from 'node:util';
import { z } from 'zod';
import { CliError, ExitCode, errorMessage } from '../errors.js';
import { parseDatabaseDsn } from '../inventory/dsn.js';
import { parseImageRef } from '../inventory/image.js';
import type { LoadedInventory } from '../inventory/load.js';
import type { DumpProgress, DumpResult } from '../probes/mysql-dump.js';
import { containerName } from '../render/render.js';
import { VERSION } from '../version.js';
import type { RunEnv } from './run-env.js';
import type { Session } from './session.js';

/** The default folder, beside the inventory. */
export const BACKUPS_DIR = 'backups';
/** Automatic backups kept per cluster when the inventory does not say (`rollout.keepBackups`). */
export const DEFAULT_KEEP_BACKUPS = 5;
const MANIFEST_FORMAT = 1;

const manifestSchema = z.object({
  format: z.literal(MANIFEST_FORMAT),
  file: z.string().min(1),
  cluster: z.string().min(1),
  version: z.string().min(1),
  image: z.string().nullable(),
  createdAt: z.iso.datetime(),
  database: z.object({ kind: z.enum(['mysql', 'postgres']), server: z.string().nullable() }),
  tables: z.array(z.object({ name: z.string(), rows: z.number().int().nonnegative() })),
  rows: z.number().int().nonnegative(),
  bytes: z.number().int().nonnegative(),
  rawBytes: z.number().int().nonnegative(),
  sha256: z.string().regex(/^[0-9a-f]{64}$/),
  noLogs: z.boolean(),
  automatic: z.boolean(),
  durationMs: z.number().nonnegative(),
  dumpTool: z.string(),
  tool: z.string(),
});

/** What `<name>.json` holds. Never a secret, never the DSN. */
export type BackupManifest = z.infer<typeof manifestSchema>;

export interface BackupOptions {
  /** Folder for the backup (default: `backups/` beside the inventory). */
  out?: string;
  /** Keep the `logs` table's definition, not its rows. */
  noLogs: boolean;
  /** Taken by a run (upgrade) rather than by a person: only these are pruned. */
  automatic?: boolean;
  /** A run already in progress (upgrade): its connections are used, and it stays open. */
  session?: Session;
  /** Automatic backups of this cluster to keep (default `rollout.keepBackups`, else 5). */
  keep?: number;
}

/** The manifest, and where things are. */
export interface BackupOutcome extends BackupManifest {
  /** Absolute path of the `.sql.gz`. */
  path: string;
  /** Absolute path of the manifest. */
  manifestPath: string;
  /** Backups pruned after this one (automatic backups only), as absolute paths. */
  pruned: string[];
  /** The dump tool's runs, password-free (for --verbose). */
  commands: string[][];
  /** Things the operator should know (events not dumped for want of a privilege, say). */
  warnings: string[];
}

// ---------------------------------------------------------------------------------------------
// Names
// ---------------------------------------------------------------------------------------------

/** `20261126T101500Z`: UTC, to the second, sortable, no characters a file system minds. */
export function utcStamp(ms: number): string {
  return new Date(ms).toISOString().replace(/\.\d{3}Z$/, 'Z').replace(/[-:]/g, '');
}

/** The version part of a name: the image's tag (`latest` when it has none), `unknown` without an image; only [A-Za-z0-9._-]. */
export function versionOfImage(image: string | undefined): string {
  if (!image) return 'unknown';
  const tag = parseImageRef(image).tag ?? 'latest';
  return tag.replace(/[^A-Za-z0-9._-]/g, '_') || 'unknown';
}

/** `<cluster>-<UTC time>-<version>` (and `-2`, `-3` … should that name be taken). */
export function backupBaseName(cluster: string, ms: number, version: string, n = 1): string {
  return `${cluster}-${utcStamp(ms)}-${version}${n > 1 ? `-${n}` : ''}`;
}

/** The `.sql.gz` and manifest paths of a backup named by either one. */
export function backupPaths(file: string): { path: string; manifestPath: string } {
  const abs = resolve(file);
  if (abs.endsWith('.sql.gz')) return { path: abs, manifestPath: `${abs.slice(0, -'.sql.gz'.length)}.json` };
  if (abs.endsWith('.json')) return { path: `${abs.slice(0, -'.json'.length)}.sql.gz`, manifestPath: abs };
  return { path: abs, manifestPath: `${abs}.json` };
}

// ---------------------------------------------------------------------------------------------
// The folder
// ---------------------------------------------------------------------------------------------

/** Adds `<folder>/` to the .gitignore beside the inventory when the folder is under it; true if it had to. */
export async function ensureBackupsIgnored(inventoryDir: string, dir: string): Promise<boolean> {
  const rel = relative(inventoryDir, dir);
  if (rel === '' || rel.startsWith('..') || resolve(inventoryDir, rel) !== resolve(dir)) return false;
  const entry = rel.split(sep).join('/');
  const file = join(inventoryDir, '.gitignore');
  let text = '';
  try {
    text = await readFile(file, 'utf8');
  } catch {
    // no .gitignore yet
  }
  const accepted = new Set([entry, `${entry}/`, `/${entry}`, `/${entry}/`, `${entry}/*`, `/${entry}/*`, `${entry}/**`, `/${entry}/**`]);
  if (text.split(/\r?\n/).some((l) => accepted.has(l.trim()))) return false;
  await appendFile(file, `${text && !text.endsWith('\n') ? '\n' : ''}${entry}/\n`);
  return true;
}

/** Creates the folder 0700, or checks an existing one; says what it did, never silently. */
async function prepareDir(env: RunEnv, dir: string, isDefault: boolean): Promise<void> {
  let st;
  try {
    st = await stat(dir);
  } catch {
    st = undefined;
  }
  if (!st) {
    try {
      await mkdir(dir, { recursive: true, mode: 0o700 });
      await chmod(dir, 0o700);
    } catch (e) {
      throw new CliError(`cannot create the backup folder ${dir}: ${errorMessage(e)}`, { hint: 'choose another folder with --out' });
    }
    return;
  }
  if (!st.isDirectory()) throw new CliError(`${dir} is not a folder`, { exitCode: ExitCode.badInput, hint: 'choose a folder with --out' });
  const loose = st.mode & 0o077;
  if (loose === 0) return;
  const mode = (st.mode & 0o777).toString(8).padStart(4, '0');
  if (isDefault) {
    await chmod(dir, 0o700);
    env.out.note(`${dir} was mode ${mode}: made it 0700 (backups hold every user's data and keys)`);
  } else {
    env.out.note(`${dir} is mode ${mode}, open to other users: the backup file itself is 0600, but consider chmod 700 ${dir}`);
  }
}

async function exists(path: string): Promise<boolean> {
  try {
    await stat(path);
    return true;
  } catch {
    return false;
  }
}

// ---------------------------------------------------------------------------------------------
// Taking a backup
// ---------------------------------------------------------------------------------------------

/** 812 B, 3.4 KB, 12.5 MB, 1.20 GB (binary units, as du -h). */
export function formatBytes(n: number): string {
  if (n < 1024) return `${n} B`;
  if (n < 1024 * 1024) return `${(n / 1024).toFixed(1)} KB`;
  if (n < 1024 ** 3) return `${(n / 1024 ** 2).toFixed(1)} MB`;
  return `${(n / 1024 ** 3).toFixed(2)} GB`;
}
const mb = formatBytes;

function progressText(p: DumpProgress): string {
  const tables = p.tablesTotal !== undefined ? `${Math.min(p.tablesDone, p.tablesTotal)}/${p.tablesTotal}` : `${p.tablesDone}`;
  return `${mb(p.rawBytes)} of SQL → ${mb(p.bytes)} gzip · tables ${tables} · ${p.rows.toLocaleString('en-US')} rows${p.table ? ` · ${p.table}` : ''}`;
}

export async function runBackup(env: RunEnv, loaded: LoadedInventory, opts: BackupOptions): Promise<BackupOutcome> {
  const inv = loaded.inventory;
  const dsn = parseDatabaseDsn(inv.database.dsn);
  const engine = await import('../probes/mysql-dump.js');
  // The dump tool first: a missing one fails before any connection.
  await engine.findDumpTool(dsn.kind);

  const inventoryDir = dirname(loaded.path);
  const isDefault = opts.out === undefined;
  const dir = resolve(inventoryDir, opts.out ?? BACKUPS_DIR);
  await prepareDir(env, dir, isDefault);
  if (await ensureBackupsIgnored(inventoryDir, dir)) env.out.note(`added ${relative(inventoryDir, dir).split(sep).join('/')}/ to ${join(inventoryDir, '.gitignore')}`);

  const work = async (session: Session): Promise<BackupOutcome> => {
    const master = session.master;
    const ex = session.on(master);
    const { getContainerState } = await import('../probes/container.js');
    const container = await getContainerState(ex, containerName(inv));
    const image = container.exists ? (container.image ?? null) : null;
    const version = versionOfImage(image ?? undefined);
    const createdMs = session.clock.now();

    let base = backupBaseName(inv.cluster.name, createdMs, version);
    for (let n = 2; (await exists(join(dir, `${base}.sql.gz`))) || (await exists(join(dir, `${base}.json`))); n++) {
      base = backupBaseName(inv.cluster.name, createdMs, version, n);
    }
    const file = `${base}.sql.gz`;
    const path = join(dir, file);
    const manifestPath = join(dir, `${base}.json`);
    const partial = join(dir, `.${file}.partial`);

    const { tunnelServer } = await import('../remote/ssh.js');
    let tunnel: Awaited<ReturnType<typeof tunnelServer>>;
    try {
      tunnel = await tunnelServer(ex, dsn.host, dsn.port);
    } catch (e) {
      throw new CliError(`cannot reach the database through ${master.name}'s SSH connection: ${errorMessage(e)}`, { node: master.name, hint: 'run newapi-cluster check', cause: e });
    }

    const signal = AbortSignal.any([env.signals.stop, session.aborted]);
    const { makeProgress } = await import('../ui/progress.js');
    const progress = await makeProgress(env);
    const started = Date.now();
    let result: DumpResult | undefined;
    let fd: number | undefined;
    // A second Ctrl-C quits at once: the half-written file goes with it.
    const unregister = env.signals.onHardQuit(async () => {
      await rm(partial, { force: true });
    });
    try {
      // 0600 from the first byte: created with that mode, never widened (the umask can only narrow it).
      fd = await promisify(openFd)(partial, 'wx', 0o600);
      const outFd = fd;
      const title = `Backup of database ${dsn.database} through ${master.name}${opts.noLogs ? ' (logs: definition only)' : ''}`;
      await progress.step(title, async (report) => {
        const every = env.interactive && !env.json ? 250 : 2_000;
        let last = 0;
        result = await engine.dumpDatabase({ ...dsn, host: '127.0.0.1', port: tunnel.port }, createWriteStream('', { fd: outFd, autoClose: false, highWaterMark: 1 << 20 }), {
          skipDataOf: opts.noLogs ? ['logs'] : [],
          signal,
          onProgress: (p) => {
            const now = Date.now();
            if (now - last < every) return;
            last = now;
            report(progressText(p));
          },
        });
        const r = result;
        report(`${mb(r.rawBytes)} of SQL → ${mb(r.bytes)} gzip · ${r.tables.length} tables · ${r.rows.toLocaleString('en-US')} rows`);
      });
      await promisify(fsync)(fd);
      await promisify(closeFd)(fd);
      fd = undefined;
      await rename(partial, path);
    } catch (e) {
      if (fd !== undefined) await promisify(closeFd)(fd).catch(() => undefined);
      await rm(partial, { force: true }).catch(() => undefined);
      throw e instanceof CliError && e.node === undefined && !(e.name === 'InterruptedError')
        ? new CliError(e.message, { exitCode: e.exitCode, node: master.name, ...(e.hint ? { hint: e.hint } : {}), cause: e })
        : e;
    } finally {
      unregister();
      await tunnel.close();
    }
    const r = result as DumpResult;
    const manifest: BackupManifest = {
      format: MANIFEST_FORMAT,
      file,
      cluster: inv.cluster.name,
      version,
      image,
      createdAt: new Date(createdMs).toISOString(),
      database: { kind: r.kind, server: r.serverVersion ?? null },
      tables: r.tables,
      rows: r.rows,
      bytes: r.bytes,
      rawBytes: r.rawBytes,
      sha256: r.sha256,
      noLogs: opts.noLogs,
      automatic: opts.automatic === true,
      durationMs: Date.now() - started,
      dumpTool: r.tool,
      tool: `newapi-cluster ${VERSION}`,
    };
    await writeJsonAtomically(manifestPath, manifest);
    await syncDir(dir);
    for (const w of r.warnings) env.out.note(`warning: ${w}`);

    let pruned: string[] = [];
    if (opts.automatic) {
      const keep = opts.keep ?? inv.rollout.keepBackups ?? DEFAULT_KEEP_BACKUPS;
      pruned = await pruneBackups(dir, inv.cluster.name, keep);
    }
    return { ...manifest, path, manifestPath, pruned, commands: r.commands, warnings: r.warnings };
  };

  if (opts.session) return work(opts.session);
  const { Session } = await import('./session.js');
  return Session.use(env, loaded, work);
}

async function writeJsonAtomically(path: string, value: unknown): Promise<void> {
  const tmp = join(dirname(path), `.${basename(path)}.partial`);
  const fh = await open(tmp, 'w', 0o600);
  try {
    await fh.writeFile(`${JSON.stringify(value, null, 2)}\n`);
    await fh.sync();
  } finally {
    await fh.close();
  }
  await rename(tmp, path);
}

async function syncDir(dir: string): Promise<void> {
  try {
    const fh = await open(dir, 'r');
    try {
      await fh.sync();
    } finally {
      await fh.close();
    }
  } catch {
    // not every file system can sync a folder; the files themselves are synced
  }
}

// ---------------------------------------------------------------------------------------------
// Pruning
// ---------------------------------------------------------------------------------------------

/**
 * Removes the oldest AUTOMATIC backups of `cluster` in `dir` beyond `keep` (the `.sql.gz` and its
 * manifest). Manual backups, other clusters' backups and files whose manifest does not parse are
 * never touched. Returns the removed files.
 */
export async function pruneBackups(dir: string, cluster: string, keep: number): Promise<string[]> {
  let names: string[];
  try {
    names = await readdir(dir);
  } catch {
    return [];
  }
  const automatic: { manifestPath: string; path: string; createdAt: string; file: string }[] = [];
  for (const name of names) {
    if (!name.endsWith('.json') || name.startsWith('.')) continue;
    const manifestPath = join(dir, name);
    let m: BackupManifest;
    try {
      m = manifestSchema.parse(JSON.parse(await readFile(manifestPath, 'utf8')));
    } catch {
      continue;
    }
    if (m.cluster !== cluster || !m.automatic) continue;
    // The manifest names its own file; never follow it out of the folder.
    if (basename(m.file) !== m.file) continue;
    automatic.push({ manifestPath, path: join(dir, m.file), createdAt: m.createdAt, file: m.file });
  }
  automatic.sort((a, b) => a.createdAt.localeCompare(b.createdAt) || a.file.localeCompare(b.file));
  const excess = automatic.slice(0, Math.max(0, automatic.length - Math.max(0, Math.floor(keep))));
  const removed: string[] = [];
  for (const b of excess) {
    await rm(b.path, { force: true });
    await rm(b.manifestPath, { force: true });
    removed.push(b.path, b.manifestPath);
  }
  return removed;
}

// ---------------------------------------------------------------------------------------------
// Reading a backup back (restore)
// ---------------------------------------------------------------------------------------------

function badBackup(message: string, hint: string): CliError {
  return new CliError(message, { exitCode: ExitCode.badInput, hint });
}

/** The manifest of a backup, named by its `.sql.gz` or its `.json`; CliErrors name the file and what is wrong. */
export async function readManifest(file: string): Promise<BackupManifest & { path: string; manifestPath: string }> {
  const { path, manifestPath } = backupPaths(file);
  let text: string;
  try {
    text = await readFile(manifestPath, 'utf8');
  } catch (e) {
    const missing = (e as NodeJS.ErrnoException).code === 'ENOENT';
    throw badBackup(
      missing ? `${file}: its manifest ${basename(manifestPath)} is missing` : `${file}: cannot read its manifest ${manifestPath}: ${errorMessage(e)}`,
      missing ? 'a backup is the .sql.gz and the .json newapi-cluster wrote beside it; copy both' : 'check the file permissions',
    );
  }
  let json: unknown;
  try {
    json = JSON.parse(text);
  } catch (e) {
    throw badBackup(`${manifestPath}: not valid JSON (${errorMessage(e)})`, 'the manifest was changed or truncated; take a new backup');
  }
  const parsed = manifestSchema.safeParse(json);
  if (!parsed.success) {
    const issue = parsed.error.issues[0];
    const where = issue && issue.path.length > 0 ? issue.path.join('.') : 'the manifest';
    throw badBackup(`${manifestPath}: not a newapi-cluster backup manifest (${where}: ${issue?.message ?? 'invalid'})`, 'the manifest was changed, or comes from another tool');
  }
  const m = parsed.data;
  if (m.file !== basename(path)) {
    throw badBackup(`${manifestPath}: describes ${m.file}, not ${basename(path)}`, 'keep each backup with its own manifest, under the names newapi-cluster gave them');
  }
  return { ...m, path, manifestPath };
}

/** The manifest, once the `.sql.gz` is proved to be the very file it describes (size and sha256). */
export async function verifyBackup(file: string): Promise<BackupManifest & { path: string; manifestPath: string }> {
  const m = await readManifest(file);
  let size: number;
  try {
    size = (await stat(m.path)).size;
  } catch (e) {
    throw badBackup(`${m.path}: ${(e as NodeJS.ErrnoException).code === 'ENOENT' ? 'missing (only its manifest is here)' : errorMessage(e)}`, 'a backup is the .sql.gz and the .json newapi-cluster wrote beside it; copy both');
  }
  if (size !== m.bytes) {
    throw badBackup(`${m.path}: ${size} bytes, but its manifest says ${m.bytes}: the file is truncated or was changed`, 'copy the backup again from where it was taken, or use another one');
  }
  const hash = createHash('sha256');
  await pipeline(createReadStream(m.path), hash);
  const sha = hash.digest('hex');
  if (sha !== m.sha256) {
    throw badBackup(`${m.path}: sha256 ${sha.slice(0, 12)}… does not match its manifest (${m.sha256.slice(0, 12)}…): the file is corrupted or was changed`, 'copy the backup again from where it was taken, or use another one');
  }
  return m;
}
