/**
 * Inventory file → typed, validated Inventory. Pure apart from reading the two files; nothing
 * here touches the network, so `validate` and every command's first step change nothing.
 */
import { readFile, stat } from 'node:fs/promises';
import { basename, dirname, join, resolve } from 'node:path';
import { parseEnv } from 'node:util';
import { LineCounter, parseDocument, type Document } from 'yaml';
import { InputError } from '../errors.js';
import { parseDatabaseDsn, parseRedisUrl } from './dsn.js';
import { problemsFromIssues } from './format.js';
import { keysAt } from './keys.js';
import { lintInventory } from './lint.js';
import { error, formatProblem, warning, type Problem } from './problems.js';
import { inventorySchema, type Inventory } from './schema.js';
import { resolveVariables } from './variables.js';

export const SECRETS_FILE = '.newapi-cluster.env';

export interface LoadedInventory {
  inventory: Inventory;
  /** Absolute path of the inventory file. */
  path: string;
  /** The parsed YAML, comments and layout kept, for edits such as `scale add-node`. */
  document: Document;
  warnings: Problem[];
  /** Every secret value the inventory resolved to: output redacts them. */
  secretValues: string[];
  /** How ${VAR}s were resolved, to re-validate an edited copy the same way. */
  lookup: (name: string) => string | undefined;
}

export class InventoryError extends InputError {
  readonly problems: Problem[];
  readonly file: string;
  /** Values to redact before the problems are shown (a malformed DSN is still a secret). */
  readonly secretValues: string[];
  constructor(file: string, problems: Problem[], secretValues: string[] = []) {
    const errors = problems.filter((p) => p.severity === 'error');
    super(
      `${file}: ${errors.length} problem${errors.length === 1 ? '' : 's'}`,
      'fix the inventory and run newapi-cluster validate again',
    );
    this.name = 'InventoryError';
    this.problems = problems;
    this.file = file;
    this.secretValues = secretValues;
  }
}

export interface LoadOptions {
  env?: NodeJS.ProcessEnv;
}

export async function loadInventory(file: string, opts: LoadOptions = {}): Promise<LoadedInventory> {
  const path = resolve(file);
  let text: string;
  try {
    text = await readFile(path, 'utf8');
  } catch (e) {
    const code = (e as NodeJS.ErrnoException).code;
    throw new InputError(
      `${file}: ${code === 'ENOENT' ? 'no such file' : `cannot read (${code ?? 'error'})`}`,
      code === 'ENOENT' ? 'run newapi-cluster init to write one, or pass -i PATH' : 'check the file permissions',
    );
  }
  const env = opts.env ?? process.env;
  const secretsPath = join(dirname(path), SECRETS_FILE);
  const { values: fileVars, problems: fileProblems } = await readSecretsFile(secretsPath);
  return parseInventory(text, {
    file,
    path,
    // The environment wins over the file, so CI can inject secrets without writing them down.
    lookup: (name) => env[name] || fileVars[name],
    extraProblems: fileProblems,
  });
}

export function parseInventory(
  text: string,
  ctx: { file: string; path: string; lookup: (name: string) => string | undefined; extraProblems?: Problem[] },
): LoadedInventory {
  const lineCounter = new LineCounter();
  const document = parseDocument(text, { lineCounter, prettyErrors: false, uniqueKeys: true });
  if (document.errors.length > 0) {
    const problems = document.errors.map((e) => {
      const pos = lineCounter.linePos(e.pos[0]);
      return error(`line ${pos.line}, column ${pos.col}`, e.message.split('\n')[0] ?? e.message, 'fix the YAML syntax');
    });
    throw new InventoryError(ctx.file, problems);
  }
  const raw: unknown = document.toJS();
  if (raw === null || typeof raw !== 'object' || Array.isArray(raw)) {
    throw new InventoryError(ctx.file, [error('(top)', 'should be a mapping with cluster, database, redis, secrets and nodes', 'run newapi-cluster init for a starting point')]);
  }

  const resolved = resolveVariables(raw, ctx.lookup, SECRETS_FILE);
  const parsed = inventorySchema.safeParse(resolved.value);
  const schemaProblems = parsed.success
    ? []
    : problemsFromIssues(parsed.error.issues, resolved.value, (p) => keysAt(inventorySchema, p));
  const problems = dedupe([
    ...(ctx.extraProblems ?? []),
    ...resolved.problems,
    ...schemaProblems,
    ...lintInventory(resolved.value, resolved.fromVariables),
  ]);
  if (!parsed.success || problems.some((p) => p.severity === 'error')) {
    throw new InventoryError(ctx.file, problems, redactable(resolved.values));
  }
  return {
    inventory: parsed.data,
    path: ctx.path,
    document,
    warnings: problems.filter((p) => p.severity === 'warning'),
    secretValues: [...new Set([...collectSecrets(parsed.data), ...redactable(resolved.values)])],
    lookup: ctx.lookup,
  };
}

/** Keeps the first problem reported at each path+message (a value set from an unset variable is also "required"). */
function dedupe(problems: Problem[]): Problem[] {
  const seen = new Set<string>();
  const unsetPaths = new Set(problems.filter((p) => p.message.endsWith(' is not set')).map((p) => p.path));
  return problems.filter((p) => {
    if (unsetPaths.has(p.path) && !p.message.endsWith(' is not set')) return false;
    const key = formatProblem(p);
    if (seen.has(key)) return false;
    seen.add(key);
    return true;
  });
}

async function readSecretsFile(path: string): Promise<{ values: Record<string, string>; problems: Problem[] }> {
  let text: string;
  try {
    text = await readFile(path, 'utf8');
  } catch {
    return { values: {}, problems: [] };
  }
  const problems: Problem[] = [];
  const mode = (await stat(path)).mode & 0o777;
  if ((mode & 0o077) !== 0) {
    problems.push(warning(basename(path), `is readable by others (mode ${mode.toString(8).padStart(4, '0')})`, `chmod 600 ${path}`));
  }
  return { values: parseEnv(text) as Record<string, string>, problems };
}

/**
 * Values that came from ${VAR}s, as the redactor takes them: every one, whatever its key, except
 * those too short or too plain to redact without hiding ordinary words and numbers.
 */
function redactable(values: Iterable<string>): string[] {
  return [...values].filter((v) => v.length >= 4 && !/^(\d+|true|false|yes|no)$/i.test(v));
}

/** Whole values and the passwords inside DSNs/URLs: anything that must never be printed. */
export function collectSecrets(inv: Inventory): string[] {
  const out = new Set<string>([inv.secrets.sessionSecret, inv.secrets.cryptoSecret, inv.database.dsn, inv.redis.url]);
  for (const dsn of [inv.database.dsn, inv.database.logDsn]) {
    if (!dsn) continue;
    out.add(dsn);
    try {
      const p = parseDatabaseDsn(dsn).password;
      if (p) {
        out.add(p);
        out.add(encodeURIComponent(p));
      }
    } catch {
      // validated already
    }
  }
  try {
    const p = parseRedisUrl(inv.redis.url).password;
    if (p) {
      out.add(p);
      out.add(encodeURIComponent(p));
    }
  } catch {
    // validated already
  }
  for (const [key, value] of Object.entries(inv.cluster.env)) {
    if (/SECRET|PASSWORD|TOKEN|KEY|DSN/i.test(key)) out.add(value);
  }
  // Short values would redact ordinary words; secrets are validated to be long anyway.
  return [...out].filter((v) => v.length >= 4);
}

/** The balancer hosts, in order: `loadBalancer.hosts`, or the one `loadBalancer.host`; none with type none. */
export function balancerHosts(inv: Inventory): string[] {
  const lb = inv.loadBalancer;
  if (lb.type !== 'nginx') return [];
  return lb.hosts ?? (lb.host !== undefined ? [lb.host] : []);
}
