/** `init`: gather answers (prompts on a terminal, flags otherwise), then write the two files. */
import { access, appendFile, chmod, readFile, writeFile } from 'node:fs/promises';
import { dirname, join, relative, resolve } from 'node:path';
import type { CliContext } from '../cli/context.js';
import { InputError } from '../errors.js';
import { SECRETS_FILE } from '../inventory/load.js';
import { scaffoldInventory, scaffoldSecrets, type ScaffoldAnswers } from '../inventory/scaffold.js';
import { isVersionTag } from '../inventory/image.js';
import { HOST_RE, NAME_RE } from '../inventory/patterns.js';
import { compareVersions, toSemver } from '../inventory/version.js';

export interface InitOptions {
  output: string;
  nodes: number | undefined;
  name?: string;
  image?: string;
  hosts?: string;
  balancer?: string;
  serverName?: string;
  sshUser?: string;
  identityFile?: string;
  force?: boolean;
}

const REPOSITORY = 'calciumion/new-api';
/** Docker Hub's tag list of New API; NEWAPI_CLUSTER_TAGS_URL replaces it (a mirror, tests). */
const TAGS_URL = `https://hub.docker.com/v2/repositories/${REPOSITORY}/tags?page_size=100&ordering=last_updated`;

/**
 * The newest release the registry lists (no release candidates), or undefined when it cannot be
 * asked within a few seconds. A default that will only age (a version written here) is worse
 * than none.
 */
export async function newestRelease(url: string, timeoutMs = 3_000): Promise<string | undefined> {
  try {
    const res = await fetch(url, { signal: AbortSignal.timeout(timeoutMs), headers: { accept: 'application/json' } });
    if (!res.ok) return undefined;
    const body = (await res.json()) as { results?: { name?: unknown }[] };
    const tags = (body.results ?? []).map((r) => r.name).filter((n): n is string => typeof n === 'string' && isVersionTag(n) && toSemver(n)?.prerelease.length === 0);
    return tags.sort((a, b) => compareVersions(b, a) ?? 0)[0];
  } catch {
    return undefined;
  }
}

/** Documentation addresses (RFC 5737): obviously placeholders, never someone's real server. */
const placeholderHost = (i: number) => `192.0.2.${11 + i}`;

export async function runInit(ctx: CliContext, opts: InitOptions): Promise<void> {
  const inventoryFile = resolve(ctx.cwd, opts.output);
  const secretsFile = join(dirname(inventoryFile), SECRETS_FILE);
  const prompting = ctx.interactive && !ctx.globals.yes;

  if (!prompting && !ctx.globals.yes) {
    throw new InputError('init needs a terminal to ask its questions', 'pass --yes with flags (--name, --hosts, --balancer …) to run without prompts');
  }

  const newest = opts.image ? undefined : await newestRelease(ctx.env.NEWAPI_CLUSTER_TAGS_URL ?? TAGS_URL);
  const defaultImage = newest ? `${REPOSITORY}:${newest}` : undefined;
  const answers = prompting ? await ask(ctx, opts, defaultImage) : fromFlags(opts, ctx.env, defaultImage);
  verifyAnswers(answers);

  if (await exists(inventoryFile)) {
    const overwrite = opts.force === true || (prompting && (await confirmOverwrite(inventoryFile)));
    if (!overwrite) {
      throw new InputError(`${opts.output} already exists; nothing was written`, 'pass --force to overwrite it, or choose another file with --output');
    }
  }
  await writeFile(inventoryFile, scaffoldInventory(answers), { mode: 0o644 });

  // Existing secrets are what the running cluster uses: replacing them would log every user out
  // and make encrypted cache keys unreadable, so an existing secrets file is always kept.
  const keptSecrets = await exists(secretsFile);
  if (!keptSecrets) {
    await writeFile(secretsFile, scaffoldSecrets(answers), { mode: 0o600 });
    await chmod(secretsFile, 0o600);
  }
  const ignored = await ensureGitIgnored(dirname(inventoryFile));

  const rel = (p: string) => relative(ctx.cwd, p) || p;
  if (ctx.out.json) {
    ctx.out.printJson({ ok: true, inventory: rel(inventoryFile), secrets: rel(secretsFile), secretsKept: keptSecrets, gitignore: ignored });
    return;
  }
  const ok = ctx.style.green('✔');
  ctx.out.print(`${ok} wrote ${rel(inventoryFile)}`);
  ctx.out.print(keptSecrets ? `${ok} kept the existing ${rel(secretsFile)} (its secrets are what the cluster uses)` : `${ok} wrote ${rel(secretsFile)} (mode 0600) with new SESSION_SECRET and CRYPTO_SECRET`);
  if (ignored) ctx.out.print(`${ok} added ${SECRETS_FILE} to .gitignore`);
  const missing = [!answers.sqlDsn && 'SQL_DSN', !answers.redisUrl && 'REDIS_CONN_STRING'].filter(Boolean);
  if (!keptSecrets && missing.length > 0) ctx.out.print(`next: set ${missing.join(' and ')} in ${rel(secretsFile)}, then run newapi-cluster validate`);
  else ctx.out.print('next: newapi-cluster validate, then newapi-cluster check');
}

function fromFlags(opts: InitOptions, env: NodeJS.ProcessEnv, defaultImage: string | undefined): ScaffoldAnswers {
  const hosts = opts.hosts ? opts.hosts.split(',').map((h) => h.trim()).filter(Boolean) : [];
  const count = opts.nodes ?? (hosts.length || 3);
  if (hosts.length > 0 && opts.nodes !== undefined && hosts.length !== opts.nodes) {
    throw new InputError(`--hosts names ${hosts.length} hosts but --nodes is ${opts.nodes}`, 'give one address per node, master first');
  }
  while (hosts.length < count) hosts.push(placeholderHost(hosts.length));
  return {
    name: opts.name ?? 'prod',
    image: opts.image ?? defaultImage ?? noImage(),
    hosts,
    balancerHost: opts.balancer,
    serverName: opts.serverName ?? '_',
    sshUser: opts.sshUser ?? 'root',
    identityFile: opts.identityFile,
    // Connection strings carry passwords: they come from the environment, never from flags
    // (which land in shell history and process lists).
    sqlDsn: env.SQL_DSN || undefined,
    redisUrl: env.REDIS_CONN_STRING || undefined,
  };
}

function noImage(): never {
  throw new InputError('--image: the registry could not be asked for the newest New API version', `name the image and its version: --image ${REPOSITORY}:vX.Y.Z`);
}

async function ask(ctx: CliContext, opts: InitOptions, defaultImage: string | undefined): Promise<ScaffoldAnswers> {
  const { input, number, password } = await import('@inquirer/prompts');
  const name = await input({ message: 'Cluster name', default: opts.name ?? 'prod', validate: (v) => NAME_RE.test(v) || 'lower-case letters, digits and dashes' });
  const suggested = opts.image ?? defaultImage;
  const image = await input({
    message: suggested ? 'New API image (with a version tag)' : `New API image (with a version tag, e.g. ${REPOSITORY}:vX.Y.Z; the registry could not be asked for the newest)`,
    ...(suggested ? { default: suggested } : {}),
    validate: (v) => /:[^/]+$/.test(v.trim()) || 'name a version tag',
  });
  const count = (await number({ message: 'How many nodes, master included?', default: opts.nodes ?? 3, min: 1, max: 1000, required: true })) ?? 3;
  const flagHosts = opts.hosts?.split(',') ?? [];
  const hosts: string[] = [];
  for (let i = 0; i < count; i++) {
    hosts.push(
      await input({
        message: i === 0 ? 'Address of the master' : `Address of slave-${i}`,
        default: flagHosts[i] ?? placeholderHost(i),
        validate: (v) => HOST_RE.test(v) || 'a host name or an IP address',
      }),
    );
  }
  const balancer = await input({ message: 'Host running nginx (empty: print the upstream instead)', default: opts.balancer ?? '' });
  const serverName = await input({ message: 'nginx server_name', default: opts.serverName ?? '_' });
  const sshUser = await input({ message: 'SSH user', default: opts.sshUser ?? 'root' });
  const identityFile = await input({ message: 'SSH private key (empty: ssh-agent)', default: opts.identityFile ?? '~/.ssh/id_ed25519' });
  const sqlDsn = await password({ message: 'SQL_DSN (user:password@tcp(host:3306)/db; empty: fill in later)', mask: '•' });
  const redisUrl = await password({ message: 'REDIS_CONN_STRING (redis://default:password@host:6379; empty: later)', mask: '•' });
  return {
    name,
    image,
    hosts,
    balancerHost: balancer || undefined,
    serverName,
    sshUser,
    identityFile: identityFile || undefined,
    sqlDsn: sqlDsn || ctx.env.SQL_DSN || undefined,
    redisUrl: redisUrl || ctx.env.REDIS_CONN_STRING || undefined,
  };
}

/** The answers are written into YAML unquoted: only values that cannot be read as syntax pass. */
function verifyAnswers(a: ScaffoldAnswers): void {
  if (!NAME_RE.test(a.name)) throw new InputError(`--name: "${a.name}" should match [a-z0-9][a-z0-9-]*`, 'use lower-case letters, digits and dashes');
  if (!/^[a-z0-9][a-z0-9._/:@-]*$/i.test(a.image)) throw new InputError(`--image: "${a.image}" is not an image reference`, 'e.g. calciumion/new-api:v0.9.20');
  for (const h of [...a.hosts, ...(a.balancerHost ? [a.balancerHost] : [])]) {
    if (!HOST_RE.test(h)) throw new InputError(`--hosts: "${h}" is not a host name or an IP address`, 'e.g. --hosts 10.0.0.11,10.0.0.12');
  }
  if (new Set(a.hosts).size !== a.hosts.length) throw new InputError('--hosts: an address appears twice', 'one node per host');
  if (!/^[A-Za-z0-9.*_ -]+$/.test(a.serverName)) throw new InputError(`--server-name: "${a.serverName}" is not an nginx server name`, 'e.g. api.example.com');
  if (!/^[a-z_][a-z0-9_.-]*$/i.test(a.sshUser)) throw new InputError(`--ssh-user: "${a.sshUser}" is not a user name`, 'e.g. root or deploy');
  if (a.identityFile !== undefined && !/^[A-Za-z0-9~._/+-]+$/.test(a.identityFile)) {
    throw new InputError(`--identity-file: "${a.identityFile}" is not a plain file path`, 'e.g. ~/.ssh/id_ed25519');
  }
}

async function confirmOverwrite(file: string): Promise<boolean> {
  const { confirm } = await import('@inquirer/prompts');
  return confirm({ message: `${file} exists. Overwrite it?`, default: false });
}

async function exists(path: string): Promise<boolean> {
  try {
    await access(path);
    return true;
  } catch {
    return false;
  }
}

/** Adds the secrets file to the .gitignore beside the inventory; true if it had to. */
async function ensureGitIgnored(dir: string): Promise<boolean> {
  const file = join(dir, '.gitignore');
  let text = '';
  try {
    text = await readFile(file, 'utf8');
  } catch {
    // no .gitignore yet
  }
  if (text.split(/\r?\n/).some((l) => l.trim() === SECRETS_FILE || l.trim() === `/${SECRETS_FILE}`)) return false;
  await appendFile(file, `${text && !text.endsWith('\n') ? '\n' : ''}${SECRETS_FILE}\n`);
  return true;
}
