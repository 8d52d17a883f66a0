/**
 * Where and how to reach a host: the inventory's `ssh:` keys, then the operator's ssh config
 * (~/.ssh/config, as OpenSSH reads it), then the built-in defaults. Operators keep bastions and
 * keys in their ssh config; the inventory wins wherever both say something.
 *
 * Pure except for reading the config file (and the files it Includes) in loadSshConfig.
 *
 * The `ssh-config` package parses the file and computes a host's settings (first value wins, Host
 * patterns with `*`, `?` and `!`, Match blocks). On top of it this module:
 *  - honours HostName (with %h), User, Port, IdentityFile (the first), ProxyJump (one hop, or none)
 *    and UserKnownHostsFile (the first); every other keyword is ignored;
 *  - expands ~, ${VAR} and the tokens %% %d %h %n %p %r %u in paths, as ssh does; a relative path
 *    stays relative to the current folder, as ssh leaves it (ssh_config(5) says nothing, and ssh.c
 *    opens the name as written);
 *  - follows Include (relative names are read from ~/.ssh, as ssh_config(5) says), which the
 *    package does not;
 *  - reads the jump host's own HostName, User and Port from the config, as `ssh -J` does;
 *  - never runs `Match exec` commands: such blocks never match here.
 */
import { readdir, readFile } from 'node:fs/promises';
import { homedir, userInfo } from 'node:os';
import { isAbsolute, join, resolve, sep } from 'node:path';
import SSHConfig, { LineType, type Directive, type Line, type Section } from 'ssh-config';
import { CliError, ExitCode, InputError } from '../errors.js';
import type { SshOverrides, SshSettings } from '../inventory/schema.js';
import type { SshTarget } from './types.js';

/** Read when `ssh.configFile` is left out, and only if it exists. */
export const DEFAULT_SSH_CONFIG = '~/.ssh/config';

/** What applies when neither the inventory nor the ssh config says anything. */
export const SSH_DEFAULTS = {
  user: 'root',
  port: 22,
  knownHostsFile: '~/.ssh/known_hosts',
  sudo: false,
} as const;

export const SSH_SOURCE_KEYS = ['host', 'user', 'port', 'identityFile', 'jumpHost', 'knownHostsFile', 'sudo'] as const;
export type SshSourceKey = (typeof SSH_SOURCE_KEYS)[number];

export interface SettingSource {
  from: 'inventory' | 'ssh-config' | 'default';
  /** Where the value came from, e.g. `~/.ssh/config Host prod-*`, `ssh.user`, `n2: ssh.port`. */
  detail?: string;
}
export type SshSources = Record<SshSourceKey, SettingSource>;

export interface ResolveSshTargetInput {
  /** Node name or "balancer": names the target in messages. */
  label: string;
  /** The inventory's `host`: an address, or an alias the ssh config knows (its HostName is used). */
  host: string;
  /** The inventory's top-level `ssh:` (no defaults filled in). */
  global?: SshSettings;
  /** The node's (or the balancer's) `ssh:` overrides. */
  node?: SshOverrides;
  /** Relative identityFile/knownHostsFile in the inventory are read from here. */
  inventoryDir: string;
  /** From loadSshConfig; absent: no ssh config. */
  config?: SshConfigSource;
}

export interface ResolvedSshTarget {
  target: SshTarget;
  sources: SshSources;
}

/** Include nesting OpenSSH allows (READCONF_MAX_DEPTH). */
const MAX_INCLUDE_DEPTH = 16;
const CONFIG_HINT = 'fix it (see ssh_config(5)), or set ssh.configFile: false in the inventory to ignore the ssh config';
const TOKENS_HINT = 'newapi-cluster expands ~, ${VAR} and %%, %d, %h, %n, %p, %r, %u';

/** One top-level line of the (Include-expanded) config: the file it is in and its line number. */
interface Origin {
  file: string;
  line: number;
}

/** A keyword's value as the config gives it for one host, and where from. */
interface Found {
  value: string | string[];
  /** e.g. `~/.ssh/config Host prod-*` */
  where: string;
}

/** One parsed ssh config (Includes followed). Load it once per run; lookups are cached per host. */
export class SshConfigSource {
  private readonly cache = new Map<string, HostSettings>();

  /** @internal use loadSshConfig */
  constructor(
    /** The file as shown in messages (home folder as ~). */
    readonly file: string,
    /** Its absolute path. */
    readonly path: string,
    private readonly config: SSHConfig,
    private readonly origins: WeakMap<Line, Origin>,
  ) {}

  /** The config's view of `host` (the name as given, before HostName); `user` is the one already decided, as `ssh -l`. */
  lookup(host: string, user?: string): HostSettings {
    const key = `${host}\0${user ?? ''}`;
    let settings = this.cache.get(key);
    if (settings === undefined) {
      settings = new HostSettings(this.config, this.origins, host, user);
      this.cache.set(key, settings);
    }
    return settings;
  }
}

/** What the config says for one host. Which block said it is worked out only when asked. */
class HostSettings {
  private readonly computed: Record<string, string | string[]>;
  private readonly prefixes: Record<string, string | string[]>[] = [];

  constructor(
    private readonly config: SSHConfig,
    private readonly origins: WeakMap<Line, Origin>,
    private readonly host: string,
    private readonly user: string | undefined,
  ) {
    this.computed = this.compute(config);
  }

  /** A keyword (lower case) as first given for this host; for a list keyword, the `index`th entry. */
  get(keyword: string, index = 0): Found | undefined {
    const value = this.computed[keyword];
    if (value === undefined) return undefined;
    return { value, where: this.where(keyword, index) };
  }

  private compute(config: SSHConfig): Record<string, string | string[]> {
    const query = this.user === undefined ? { Host: this.host } : { Host: this.host, User: this.user };
    // matchExec: false: no shell commands from the config run inside a deployment.
    return config.compute(query, { ignoreCase: true, matchExec: false });
  }

  /**
   * The block that gave the value: compute() does not say, so the config is computed again over
   * ever longer runs of its top-level lines; the first run that already gives the value ends at it.
   */
  private where(keyword: string, index: number): string {
    const want = this.computed[keyword];
    const same = (got: string | string[] | undefined): boolean =>
      Array.isArray(want) ? Array.isArray(got) && got.length > index && got[index] === want[index] : got === want;
    for (let i = 0; i < this.config.length; i++) {
      this.prefixes[i] ??= this.compute(this.config.slice(0, i + 1) as SSHConfig);
      if (same(this.prefixes[i]![keyword])) return describeLine(this.config[i]!, this.origins);
    }
    return describeLine(this.config[this.config.length - 1]!, this.origins);
  }
}

function describeLine(line: Line, origins: WeakMap<Line, Origin>): string {
  const origin = origins.get(line);
  const file = origin?.file ?? 'ssh config';
  if (line.type === LineType.DIRECTIVE && 'config' in line) return `${file} ${line.param} ${valueText(line.value)}`;
  return `${file} line ${origin?.line ?? '?'}`;
}

function valueText(value: Directive['value']): string {
  return typeof value === 'string' ? value : value.map((v) => v.val).join(' ');
}

/**
 * Reads and parses the ssh config: `path` from the inventory's `ssh.configFile`. Left out
 * (undefined): ~/.ssh/config, or nothing if it does not exist. false: no ssh config. A path that
 * was given explicitly must exist. `~` is the home folder; a relative path is read from the
 * inventory's folder.
 */
export async function loadSshConfig(path: string | false | undefined, inventoryDir: string): Promise<SshConfigSource | undefined> {
  if (path === false) return undefined;
  const explicit = path !== undefined;
  const abs = absolute(path ?? DEFAULT_SSH_CONFIG, inventoryDir);
  const file = shownPath(abs);
  let text: string;
  try {
    text = await readFile(abs, 'utf8');
  } catch (err) {
    const code = (err as NodeJS.ErrnoException).code;
    if (code === 'ENOENT' || code === 'ENOTDIR') {
      if (!explicit) return undefined;
      throw new InputError(
        `ssh.configFile: ${file} does not exist`,
        'fix the path, or leave ssh.configFile out to use ~/.ssh/config when there is one (false: use no ssh config)',
      );
    }
    throw new InputError(`ssh.configFile: cannot read ${file}: ${(err as Error).message}`, 'check the path and its permissions, or set ssh.configFile: false');
  }
  const origins = new WeakMap<Line, Origin>();
  const config = await parseConfig(text, file, origins, 0);
  return new SshConfigSource(file, abs, config, origins);
}

/** Parses one file and splices in the files it Includes; records where each top-level line is. */
async function parseConfig(text: string, file: string, origins: WeakMap<Line, Origin>, depth: number): Promise<SSHConfig> {
  let config: SSHConfig;
  try {
    config = SSHConfig.parse(text);
  } catch (err) {
    throw parseError(text, file, err);
  }
  const lines = numberLines(config);
  for (const [line, number] of lines) {
    if (line.type !== LineType.DIRECTIVE) continue;
    // The package reads a keyword without a value as one keyword running into the next line.
    if (/[\r\n]/.test(line.param)) {
      throw new InputError(`${file} line ${number}: ${line.param.split(/[\r\n]/)[0]} has no value`, CONFIG_HINT);
    }
    if (HONOURED.has(line.param.toLowerCase()) && valueText(line.value).trim() === '') {
      throw new InputError(`${file} line ${number}: ${line.param} has no value`, CONFIG_HINT);
    }
  }
  // The package follows CanonicalizeHostname by running nslookup; canonicalization is not honoured here.
  dropKeyword(config, 'canonicalizehostname');
  for (const line of config) origins.set(line, { file, line: lines.get(line) ?? 0 });

  // Include, at the top level: the included lines take its place, sections and all.
  for (let i = 0; i < config.length; i++) {
    const line = config[i]!;
    if (isInclude(line)) {
      const included = await include(line as Directive, file, lines.get(line)!, origins, depth);
      config.splice(i, 1, ...included);
      i += included.length - 1;
    } else if (line.type === LineType.DIRECTIVE && 'config' in line) {
      // Inside a Host or Match block, an Include applies under that block's condition. The package
      // has no nested blocks, so an included file may then hold settings only.
      const block = line.config;
      for (let j = 0; j < block.length; j++) {
        const inner = block[j]!;
        if (!isInclude(inner)) continue;
        const included = await include(inner as Directive, file, lines.get(inner)!, origins, depth);
        if (included.some((l) => l.type === LineType.DIRECTIVE && 'config' in l)) {
          throw new InputError(
            `${file} line ${lines.get(inner)}: an Include inside a ${line.param} block reads a file with Host or Match blocks of its own, which newapi-cluster cannot follow`,
            'move the Include above the first Host or Match line, or set ssh.configFile: false in the inventory',
          );
        }
        block.splice(j, 1, ...included);
        j += included.length - 1;
      }
    }
  }
  return config;
}

function dropKeyword(lines: Line[], keyword: string): void {
  for (let i = lines.length - 1; i >= 0; i--) {
    const line = lines[i]!;
    if (line.type !== LineType.DIRECTIVE) continue;
    if (line.param.toLowerCase() === keyword) lines.splice(i, 1);
    else if ('config' in line) dropKeyword((line as Section).config, keyword);
  }
}

const HONOURED = new Set(['host', 'match', 'hostname', 'user', 'port', 'identityfile', 'proxyjump', 'userknownhostsfile', 'include']);

function isInclude(line: Line): boolean {
  return line.type === LineType.DIRECTIVE && line.param.toLowerCase() === 'include';
}

/** The lines of the files an Include names: globs expanded in lexical order, relative names from ~/.ssh, missing files skipped. */
async function include(line: Directive, file: string, number: number, origins: WeakMap<Line, Origin>, depth: number): Promise<Line[]> {
  const at = `${file} line ${number}`;
  if (depth >= MAX_INCLUDE_DEPTH) {
    throw new InputError(`${at}: Includes nest more than ${MAX_INCLUDE_DEPTH} deep`, 'an included file probably includes itself; fix the Include lines');
  }
  const names = typeof line.value === 'string' ? [line.value] : line.value.map((v) => v.val);
  const out: Line[] = [];
  for (const name of names) {
    const expanded = expandPath(name, localTokens(), (problem, hint) => new InputError(`${at}: Include ${name} ${problem}`, hint));
    const pattern = isAbsolute(expanded) ? expanded : join(homedir(), '.ssh', expanded);
    for (const path of await globFiles(pattern)) {
      let text: string;
      try {
        text = await readFile(path, 'utf8');
      } catch (err) {
        const code = (err as NodeJS.ErrnoException).code;
        if (code === 'ENOENT' || code === 'ENOTDIR' || code === 'EISDIR') continue;
        throw new InputError(`${at}: cannot read ${shownPath(path)}: ${(err as Error).message}`, 'check its permissions, or remove the Include');
      }
      out.push(...(await parseConfig(text, shownPath(path), origins, depth + 1)));
    }
  }
  return out;
}

/** glob(3) for the patterns Include takes: `*`, `?` and `[...]` in any part of an absolute path; no match: nothing. */
async function globFiles(pattern: string): Promise<string[]> {
  const parts = pattern.split(sep).filter((p) => p !== '');
  let found: string[] = [sep];
  for (const part of parts) {
    if (!/[*?[]/.test(part)) {
      found = found.map((dir) => join(dir, part));
      continue;
    }
    const re = globRegExp(part);
    const next: string[] = [];
    for (const dir of found) {
      let entries: string[];
      try {
        entries = await readdir(dir);
      } catch {
        continue;
      }
      for (const entry of entries.sort()) if (re.test(entry)) next.push(join(dir, entry));
    }
    found = next;
  }
  return found;
}

function globRegExp(part: string): RegExp {
  let re = '';
  for (let i = 0; i < part.length; i++) {
    const c = part[i]!;
    if (c === '*') re += '[^/]*';
    else if (c === '?') re += '[^/]';
    else if (c === '[' && part.indexOf(']', i + 2) !== -1) {
      const end = part.indexOf(']', i + 2);
      const body = part.slice(i + 1, end);
      re += `[${body.startsWith('!') ? `^${body.slice(1)}` : body}]`.replace(/\\/g, '\\\\');
      i = end;
    } else re += c.replace(/[.+^${}()|\\\]]/g, '\\$&');
  }
  // As glob(3): a leading dot is matched only by a leading dot.
  return new RegExp(`^${part.startsWith('.') ? '' : '(?!\\.)'}${re}$`);
}

/** The 1-based line each parsed line starts on (blank lines and comments count). */
function numberLines(config: SSHConfig): Map<Line, number> {
  const numbers = new Map<Line, number>();
  let newlines = 0;
  const count = (s: string | undefined): number => (s === undefined ? 0 : s.split('\n').length - 1);
  const walk = (lines: readonly Line[]): void => {
    for (const line of lines) {
      newlines += count(line.before);
      numbers.set(line, newlines + 1);
      if (line.type === LineType.DIRECTIVE) newlines += count(line.param);
      newlines += count(line.after);
      if (line.type === LineType.DIRECTIVE && 'config' in line) walk((line as Section).config);
    }
  };
  walk(config);
  return numbers;
}

/** The package's parse errors carry no position: the first run of lines that fails to parse ends at the bad line. */
function parseError(text: string, file: string, err: unknown): InputError {
  const lines = text.split('\n');
  let number = lines.length;
  for (let n = 1; n <= lines.length; n++) {
    try {
      SSHConfig.parse(lines.slice(0, n).join('\n'));
    } catch {
      number = n;
      break;
    }
  }
  const message = err instanceof Error ? err.message : String(err);
  const reason = /^Unexpected line break/.test(message)
    ? 'a quote is not closed'
    : /^Missing value for match criteria/.test(message)
      ? message.replace(/^Missing value for match criteria (.*)$/, 'Match $1 has no value')
      : err instanceof TypeError
        ? `${(lines[number - 1] ?? '').trim().split(/[\s=]/)[0]} has no value`
        : message;
  return new InputError(`${file} line ${number}: ${reason}`, CONFIG_HINT);
}

// ---------------------------------------------------------------------------------------------

/** The target for one host, and where each of its settings came from. */
export function resolveSshTarget(input: ResolveSshTargetInput): ResolvedSshTarget {
  const { label, config } = input;
  const global = input.global ?? {};
  const node = input.node ?? {};
  const inInventory = <K extends keyof SshOverrides>(key: K): { value: NonNullable<SshOverrides[K]>; source: SettingSource } | undefined => {
    const own = node[key];
    if (own !== undefined && own !== null) return { value: own, source: { from: 'inventory', detail: `${label}: ssh.${key}` } };
    const all = global[key];
    if (all !== undefined && all !== null) return { value: all, source: { from: 'inventory', detail: `ssh.${key}` } };
    return undefined;
  };
  const fromConfig = (found: Found): SettingSource => ({ from: 'ssh-config', detail: found.where });
  const fail = (message: string, hint: string): CliError => new CliError(`${label}: ${message}`, { exitCode: ExitCode.badInput, node: label, hint });

  const invUser = inInventory('user');
  const cfg = config?.lookup(input.host, invUser?.value);

  // host: HostName (tokens %h and %%) makes the inventory's host an alias.
  let host = input.host;
  let hostSource: SettingSource = { from: 'inventory' };
  const hostName = cfg?.get('hostname');
  if (hostName !== undefined && first(hostName.value) !== '') {
    host = expandTokens(first(hostName.value), { h: input.host }, (problem) =>
      fail(`HostName ${first(hostName.value)} in ${hostName.where} ${problem}`, 'HostName takes only %h and %%'),
    );
    hostSource = fromConfig(hostName);
  }

  // port
  let port: number = SSH_DEFAULTS.port;
  let portSource: SettingSource = { from: 'default' };
  const invPort = inInventory('port');
  const cfgPort = invPort === undefined ? cfg?.get('port') : undefined;
  if (invPort !== undefined) {
    port = invPort.value;
    portSource = invPort.source;
  } else if (cfgPort !== undefined) {
    const text = first(cfgPort.value);
    const n = /^\d{1,5}$/.test(text) ? Number(text) : NaN;
    if (!(n >= 1 && n <= 65535)) {
      throw fail(`${cfgPort.where} gives Port ${text}, which is not a port number from 1 to 65535`, `fix it there, or set ssh.port for ${label} in the inventory`);
    }
    port = n;
    portSource = fromConfig(cfgPort);
  }

  const local = localTokens();
  const tokens = (user: string): Record<string, string> => ({ ...local, h: host, n: input.host, p: String(port), r: user });

  // user (the config's User may use tokens, except %r)
  let user: string = SSH_DEFAULTS.user;
  let userSource: SettingSource = { from: 'default' };
  const cfgUser = invUser === undefined ? cfg?.get('user') : undefined;
  if (invUser !== undefined) {
    user = invUser.value;
    userSource = invUser.source;
  } else if (cfgUser !== undefined && first(cfgUser.value) !== '') {
    const { r: _r, ...userTokens } = tokens('');
    user = expandValue(first(cfgUser.value), userTokens, (problem, hint) => fail(`User ${first(cfgUser.value)} in ${cfgUser.where} ${problem}`, hint));
    userSource = fromConfig(cfgUser);
  }

  const all = tokens(user);
  const inventoryFile = (p: string): string => (p.startsWith('~') || isAbsolute(p) ? p : resolve(input.inventoryDir, p));
  const configFile = (keyword: string, found: Found, raw: string): string =>
    resolve(expandPath(raw, all, (problem, hint) => fail(`${keyword} ${raw} in ${found.where} ${problem}`, hint)));

  // identityFile: the first one that is not `none`; only `none`: the agent.
  let identityFile: string | undefined;
  let identitySource: SettingSource = { from: 'default', detail: 'ssh-agent' };
  const invIdentity = inInventory('identityFile');
  if (invIdentity !== undefined) {
    identityFile = inventoryFile(invIdentity.value);
    identitySource = invIdentity.source;
  } else if (cfg !== undefined) {
    const list = cfg.get('identityfile');
    if (list !== undefined) {
      const names = Array.isArray(list.value) ? list.value : [list.value];
      const index = names.findIndex((n) => n.toLowerCase() !== 'none');
      const chosen = cfg.get('identityfile', index === -1 ? 0 : index)!;
      if (index === -1) {
        identitySource = { from: 'ssh-config', detail: `${chosen.where}: IdentityFile none, so ssh-agent` };
      } else {
        identityFile = configFile('IdentityFile', chosen, names[index]!);
        identitySource = fromConfig(chosen);
      }
    }
  }

  // knownHostsFile: the first UserKnownHostsFile; `none` cannot be honoured (host keys are always checked).
  let knownHostsFile: string = SSH_DEFAULTS.knownHostsFile;
  let knownHostsSource: SettingSource = { from: 'default' };
  const invKnown = inInventory('knownHostsFile');
  const cfgKnown = invKnown === undefined ? cfg?.get('userknownhostsfile') : undefined;
  if (invKnown !== undefined) {
    knownHostsFile = inventoryFile(invKnown.value);
    knownHostsSource = invKnown.source;
  } else if (cfgKnown !== undefined) {
    const raw = first(cfgKnown.value);
    if (raw.toLowerCase() === 'none') {
      knownHostsSource = { from: 'default', detail: `${cfgKnown.where} says UserKnownHostsFile none, but host keys are always checked` };
    } else {
      knownHostsFile = configFile('UserKnownHostsFile', cfgKnown, raw);
      knownHostsSource = fromConfig(cfgKnown);
    }
  }

  // jumpHost: one hop; `none` in the config: no jump host.
  let jumpHost: string | undefined;
  let jumpSource: SettingSource = { from: 'default' };
  const invJump = inInventory('jumpHost');
  const cfgJump = invJump === undefined ? cfg?.get('proxyjump') : undefined;
  if (invJump !== undefined) {
    jumpHost = invJump.value;
    jumpSource = invJump.source;
  } else if (cfgJump !== undefined) {
    const raw = first(cfgJump.value).trim();
    jumpSource = fromConfig(cfgJump);
    if (raw.toLowerCase() !== 'none') {
      if (raw.includes(',')) {
        throw fail(
          `only one jump host is supported, but ${cfgJump.where} gives ProxyJump ${raw}`,
          `set ssh.jumpHost for ${label} in the inventory (it wins over the ssh config) to a bastion that reaches ${host} directly`,
        );
      }
      jumpHost = expandTokens(raw, { h: host, n: input.host, p: String(port), r: user }, (problem) =>
        fail(`ProxyJump ${raw} in ${cfgJump.where} ${problem}`, 'ProxyJump takes only %h, %n, %p, %r and %%'),
      );
      if (parseHop(jumpHost) === undefined) {
        throw fail(`${cfgJump.where} gives ProxyJump ${raw}, which is not [user@]host[:port]`, 'e.g. ProxyJump ops@bastion.example.com:2222');
      }
    }
  }
  if (jumpHost !== undefined && config !== undefined) {
    const resolved = resolveJumpHost(jumpHost, config, (message, hint) => fail(message, hint));
    jumpHost = resolved.spec;
    if (resolved.via !== undefined) jumpSource = { ...jumpSource, detail: `${jumpSource.detail ?? 'ssh.jumpHost'}; ${resolved.via}` };
  }

  const sudo = inInventory('sudo');

  const target: SshTarget = {
    label,
    host,
    port,
    user,
    knownHostsFile,
    sudo: sudo?.value ?? SSH_DEFAULTS.sudo,
    ...(identityFile === undefined ? {} : { identityFile }),
    ...(jumpHost === undefined ? {} : { jumpHost }),
  };
  return {
    target,
    sources: {
      host: hostSource,
      user: userSource,
      port: portSource,
      identityFile: identitySource,
      jumpHost: jumpSource,
      knownHostsFile: knownHostsSource,
      sudo: sudo?.source ?? { from: 'default' },
    },
  };
}

/**
 * `ssh -J bastion` reaches the bastion with the bastion's own HostName, User and Port from the ssh
 * config; what the jump spec itself says wins. Returns the spec as ssh.ts reads it (`user@host[:port]`).
 */
function resolveJumpHost(
  spec: string,
  config: SshConfigSource,
  fail: (message: string, hint: string) => CliError,
): { spec: string; via?: string } {
  const hop = parseHop(spec);
  if (hop === undefined) {
    throw fail(`jump host ${spec} is not [user@]host[:port]`, 'e.g. ops@bastion.example.com:2222');
  }
  const settings = config.lookup(hop.host, hop.user);
  const used: string[] = [];
  const wheres = new Set<string>();
  let host = hop.host;
  const hostName = settings.get('hostname');
  if (hostName !== undefined && first(hostName.value) !== '') {
    host = expandTokens(first(hostName.value), { h: hop.host }, (problem) =>
      fail(`HostName ${first(hostName.value)} in ${hostName.where} ${problem}`, 'HostName takes only %h and %%'),
    );
    used.push('HostName');
    wheres.add(hostName.where);
  }
  let user = hop.user;
  const cfgUser = user === undefined ? settings.get('user') : undefined;
  if (cfgUser !== undefined && first(cfgUser.value) !== '') {
    user = first(cfgUser.value);
    used.push('User');
    wheres.add(cfgUser.where);
  }
  let port = hop.port;
  const cfgPort = port === undefined ? settings.get('port') : undefined;
  if (cfgPort !== undefined) {
    const n = /^\d{1,5}$/.test(first(cfgPort.value)) ? Number(first(cfgPort.value)) : NaN;
    if (!(n >= 1 && n <= 65535)) {
      throw fail(`${cfgPort.where} gives Port ${first(cfgPort.value)} for jump host ${hop.host}, which is not a port number from 1 to 65535`, 'fix it there');
    }
    port = n;
    used.push('Port');
    wheres.add(cfgPort.where);
  }
  // The bastion's own ProxyJump would make a second hop (one naming the bastion itself is ignored).
  const next = settings.get('proxyjump');
  if (next !== undefined && first(next.value).trim().toLowerCase() !== 'none') {
    const nextHop = parseHop(first(next.value).trim());
    if (nextHop === undefined || (nextHop.host !== hop.host && nextHop.host !== host)) {
      throw fail(
        `only one jump host is supported, but ${next.where} gives jump host ${hop.host} a ProxyJump ${first(next.value).trim()} of its own`,
        `give ${hop.host} ProxyJump none in the ssh config, or set ssh.jumpHost in the inventory to a bastion reachable directly`,
      );
    }
  }
  if (used.length === 0 && !/^ssh:\/\//i.test(spec)) return { spec };
  const shownHost = host.includes(':') ? `[${host}]` : host;
  const out = `${user === undefined ? '' : `${user}@`}${shownHost}${port === undefined ? '' : `:${port}`}`;
  if (used.length === 0) return { spec: out };
  return { spec: out, via: `${hop.host}: ${used.join(', ')} from ${[...wheres].join(', ')}` };
}

/** `[user@]host[:port]` or `ssh://[user@]host[:port]`; host may be `[v6]`. */
function parseHop(spec: string): { user?: string; host: string; port?: number } | undefined {
  const m = /^(?:ssh:\/\/)?(?:(\S+)@)?(?:\[([^\]\s]+)\]|([^:@\s[\]/]+))(?::(\d{1,5}))?\/?$/i.exec(spec);
  if (m === null) return undefined;
  const port = m[4] === undefined ? undefined : Number(m[4]);
  if (port !== undefined && (port < 1 || port > 65535)) return undefined;
  return { ...(m[1] === undefined ? {} : { user: m[1] }), host: (m[2] ?? m[3])!, ...(port === undefined ? {} : { port }) };
}

/** For `check`: the settings the ssh config gave, e.g. `user, identityFile from ~/.ssh/config (Host n2*)`; '' if none. */
export function describeSources(sources: SshSources): string {
  const groups = new Map<string, SshSourceKey[]>();
  for (const key of SSH_SOURCE_KEYS) {
    const source = sources[key];
    if (source?.from !== 'ssh-config') continue;
    const where = source.detail ?? 'ssh config';
    groups.set(where, [...(groups.get(where) ?? []), key]);
  }
  return [...groups]
    .map(([where, keys]) => {
      const m = /^(.*?) ((?:Host|Match) .*|line \d+.*)$/i.exec(where);
      return `${keys.join(', ')} from ${m === null ? where : `${m[1]} (${m[2]})`}`;
    })
    .join('; ');
}

// ---------------------------------------------------------------------------------------------

function first(value: string | string[]): string {
  return (Array.isArray(value) ? value[0] : value) ?? '';
}

function absolute(path: string, base: string): string {
  if (path === '~') return homedir();
  if (path.startsWith('~/')) return join(homedir(), path.slice(2));
  return resolve(base, path);
}

/** For messages: the home folder as ~. */
function shownPath(abs: string): string {
  const home = homedir();
  if (abs === home) return '~';
  return abs.startsWith(home + sep) ? `~/${abs.slice(home.length + 1)}` : abs;
}

function localTokens(): Record<string, string> {
  let name: string;
  try {
    name = userInfo().username;
  } catch {
    name = process.env['USER'] ?? process.env['LOGNAME'] ?? '';
  }
  return { d: homedir(), u: name };
}

type Problem = (problem: string, hint: string) => CliError;

/** A path as ssh expands it: a leading ~ first, then ${VAR} and %-tokens. */
function expandPath(raw: string, tokens: Record<string, string>, fail: Problem): string {
  let path = raw;
  if (path === '~' || path.startsWith('~/')) path = homedir() + path.slice(1);
  else if (path.startsWith('~')) {
    throw fail(`uses ${path.split('/')[0]}, another user's home folder`, 'write the path out in full');
  }
  return expandValue(path, tokens, fail);
}

function expandValue(raw: string, tokens: Record<string, string>, fail: Problem): string {
  const withVars = raw.replace(/\$\{([^}]*)\}/g, (_, name: string) => {
    const value = process.env[name];
    if (value === undefined) throw fail(`uses \${${name}}, which is not set`, `set ${name}, or write the value out`);
    return value;
  });
  return expandTokens(withVars, tokens, (problem) => fail(problem, `${TOKENS_HINT}; write the value out instead`));
}

function expandTokens(raw: string, tokens: Record<string, string>, fail: (problem: string) => CliError): string {
  return raw.replace(/%(.?)/g, (token, c: string) => {
    if (c === '%') return '%';
    const value = tokens[c];
    if (value === undefined) throw fail(c === '' ? 'ends in a lone %' : `uses ${token}, which newapi-cluster does not expand`);
    return value;
  });
}
