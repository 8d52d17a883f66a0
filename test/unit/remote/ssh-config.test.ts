/**
 * ~/.ssh/config as OpenSSH reads it, under the inventory: every case writes a config into a
 * temporary home folder, resolves one host, and compares the whole target, the source of each
 * setting it names, and (for failures) the exact message and hint.
 */
import { mkdir, mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir, userInfo } from 'node:os';
import { join, resolve } from 'node:path';
import { afterAll, beforeAll, beforeEach, describe, expect, it, vi } from 'vitest';
import { CliError, ExitCode } from '../../../src/errors.js';
import type { SshOverrides, SshSettings } from '../../../src/inventory/schema.js';
import {
  describeSources,
  loadSshConfig,
  resolveSshTarget,
  type SettingSource,
  type SshSourceKey,
  type SshSources,
} from '../../../src/remote/ssh-config.js';
import type { SshTarget } from '../../../src/remote/types.js';

let home: string;
let invDir: string;
const ME = userInfo().username;

beforeAll(async () => {
  home = await mkdtemp(join(tmpdir(), 'newapi-ssh-config-'));
  invDir = join(home, 'cluster');
  await mkdir(join(home, '.ssh', 'config.d'), { recursive: true });
  await mkdir(invDir, { recursive: true });
  vi.stubEnv('HOME', home);
});

afterAll(async () => {
  vi.unstubAllEnvs();
  await rm(home, { recursive: true, force: true });
});

beforeEach(async () => {
  await rm(join(home, '.ssh', 'config'), { force: true });
  await rm(join(home, '.ssh', 'config.d'), { recursive: true, force: true });
  await mkdir(join(home, '.ssh', 'config.d'), { recursive: true });
});

/** `{HOME}` and `{INV}` in expectations stand for the temporary home and inventory folders. */
const fill = <T>(v: T): T => JSON.parse(JSON.stringify(v).replaceAll('{HOME}', home).replaceAll('{INV}', invDir).replaceAll('{ME}', ME)) as T;

const text = (...lines: string[]): string => `${lines.join('\n')}\n`;

interface Case {
  name: string;
  /** ~/.ssh/config; left out: there is none. */
  config?: string;
  /** Other files under ~/.ssh. */
  files?: Record<string, string>;
  host?: string;
  global?: SshSettings;
  node?: SshOverrides;
  env?: Record<string, string>;
  /** What differs from the defaults: n1, port 22, root, ~/.ssh/known_hosts, no sudo. */
  target?: Partial<SshTarget>;
  /** The sources that differ from "inventory host, everything else default". */
  sources?: Partial<SshSources>;
  describe?: string;
}

const CFG = (block: string): SettingSource => ({ from: 'ssh-config', detail: `~/.ssh/config ${block}` });
const INV = (detail: string): SettingSource => ({ from: 'inventory', detail });

const DEFAULT_SOURCES: SshSources = {
  host: { from: 'inventory' },
  user: { from: 'default' },
  port: { from: 'default' },
  identityFile: { from: 'default', detail: 'ssh-agent' },
  jumpHost: { from: 'default' },
  knownHostsFile: { from: 'default' },
  sudo: { from: 'default' },
};

async function resolveCase(c: Pick<Case, 'config' | 'files' | 'host' | 'global' | 'node' | 'env'>) {
  if (c.config !== undefined) await writeFile(join(home, '.ssh', 'config'), c.config);
  for (const [name, body] of Object.entries(c.files ?? {})) await writeFile(join(home, '.ssh', name), body);
  for (const [k, v] of Object.entries(c.env ?? {})) vi.stubEnv(k, v);
  const config = await loadSshConfig(c.global?.configFile, invDir);
  return resolveSshTarget({
    label: 'n1',
    host: c.host ?? 'n1',
    ...(c.global === undefined ? {} : { global: c.global }),
    ...(c.node === undefined ? {} : { node: c.node }),
    inventoryDir: invDir,
    ...(config === undefined ? {} : { config }),
  });
}

const cases: Case[] = [
  // --- nobody says anything ---
  { name: 'no ssh config: the built-in defaults', describe: '' },
  { name: 'an empty ssh config', config: '', describe: '' },
  { name: 'a config about other hosts only', config: text('Host other', '  User someone', '  Port 2222'), describe: '' },

  // --- host (HostName) ---
  {
    name: 'HostName makes the inventory host an alias',
    config: text('Host db1', '  HostName 10.0.0.21'),
    host: 'db1',
    target: { host: '10.0.0.21' },
    sources: { host: CFG('Host db1') },
    describe: 'host from ~/.ssh/config (Host db1)',
  },
  {
    name: 'HostName with %h',
    config: text('Host n*', '  HostName %h.prod.example.com'),
    target: { host: 'n1.prod.example.com' },
    sources: { host: CFG('Host n*') },
  },
  {
    name: 'keywords are case-insensitive',
    config: text('host n1', '  hostname 10.0.0.31', '  USER deploy', '  port 2201'),
    target: { host: '10.0.0.31', user: 'deploy', port: 2201 },
    sources: { host: CFG('host n1'), user: CFG('host n1'), port: CFG('host n1') },
    describe: 'host, user, port from ~/.ssh/config (host n1)',
  },

  // --- user ---
  { name: 'user: ssh config', config: text('Host n1', '  User deploy'), target: { user: 'deploy' }, sources: { user: CFG('Host n1') } },
  {
    name: 'user: the inventory ssh wins over the ssh config',
    config: text('Host n1', '  User deploy'),
    global: { user: 'ops' },
    target: { user: 'ops' },
    sources: { user: INV('ssh.user') },
    describe: '',
  },
  {
    name: 'user: the node override wins over both',
    config: text('Host n1', '  User deploy'),
    global: { user: 'ops' },
    node: { user: 'admin' },
    target: { user: 'admin' },
    sources: { user: INV('n1: ssh.user') },
  },

  // --- port ---
  { name: 'port: ssh config', config: text('Host n1', '  Port 2222'), target: { port: 2222 }, sources: { port: CFG('Host n1') } },
  { name: 'port: the inventory ssh wins', config: text('Host n1', '  Port 2222'), global: { port: 2200 }, target: { port: 2200 }, sources: { port: INV('ssh.port') } },
  { name: 'port: the node override wins', config: text('Host n1', '  Port 2222'), global: { port: 2200 }, node: { port: 2300 }, target: { port: 2300 }, sources: { port: INV('n1: ssh.port') } },

  // --- identityFile ---
  {
    name: 'identityFile: ssh config, ~ expanded',
    config: text('Host n1', '  IdentityFile ~/.ssh/id_n1'),
    target: { identityFile: '{HOME}/.ssh/id_n1' },
    sources: { identityFile: CFG('Host n1') },
  },
  {
    name: 'identityFile: tokens %d %u %r %h %n %p %%',
    config: text('Host n1', '  HostName 10.0.0.41', '  User deploy', '  IdentityFile %d/keys/%u-%r@%h-%n-%p-100%%'),
    target: { host: '10.0.0.41', user: 'deploy', identityFile: '{HOME}/keys/{ME}-deploy@10.0.0.41-n1-22-100%' },
    sources: { host: CFG('Host n1'), user: CFG('Host n1'), identityFile: CFG('Host n1') },
  },
  {
    name: 'identityFile: %r is the user the inventory decided',
    config: text('Host n1', '  User deploy', '  IdentityFile ~/.ssh/%r'),
    global: { user: 'ops' },
    target: { user: 'ops', identityFile: '{HOME}/.ssh/ops' },
    sources: { user: INV('ssh.user'), identityFile: CFG('Host n1') },
  },
  {
    name: 'identityFile: ${VAR} expanded',
    config: text('Host n1', '  IdentityFile ${KEYS_DIR}/n1'),
    env: { KEYS_DIR: '/srv/keys' },
    target: { identityFile: '/srv/keys/n1' },
    sources: { identityFile: CFG('Host n1') },
  },
  {
    name: 'identityFile: a relative path is relative to the current folder, as ssh opens it',
    config: text('Host n1', '  IdentityFile keys/id_n1'),
    target: { identityFile: resolve('keys/id_n1') },
    sources: { identityFile: CFG('Host n1') },
  },
  {
    name: 'identityFile: the first one, across blocks',
    config: text('Host n1', '  IdentityFile ~/.ssh/first', 'Host *', '  IdentityFile ~/.ssh/second'),
    target: { identityFile: '{HOME}/.ssh/first' },
    sources: { identityFile: CFG('Host n1') },
  },
  {
    name: 'identityFile: none is skipped, the next one is used',
    config: text('Host n1', '  IdentityFile none', 'Host *', '  IdentityFile ~/.ssh/second'),
    target: { identityFile: '{HOME}/.ssh/second' },
    sources: { identityFile: CFG('Host *') },
  },
  {
    name: 'identityFile: only none means the agent',
    config: text('Host n1', '  IdentityFile none'),
    sources: { identityFile: { from: 'ssh-config', detail: '~/.ssh/config Host n1: IdentityFile none, so ssh-agent' } },
    describe: 'identityFile from ~/.ssh/config (Host n1: IdentityFile none, so ssh-agent)',
  },
  {
    name: 'identityFile: the inventory ssh wins, relative to the inventory folder',
    config: text('Host n1', '  IdentityFile ~/.ssh/id_n1'),
    global: { identityFile: 'keys/deploy' },
    target: { identityFile: '{INV}/keys/deploy' },
    sources: { identityFile: INV('ssh.identityFile') },
  },
  {
    name: 'identityFile: the node override wins, ~ kept for the connection to expand',
    config: text('Host n1', '  IdentityFile ~/.ssh/id_n1'),
    global: { identityFile: 'keys/deploy' },
    node: { identityFile: '~/.ssh/special' },
    target: { identityFile: '~/.ssh/special' },
    sources: { identityFile: INV('n1: ssh.identityFile') },
  },

  // --- knownHostsFile ---
  {
    name: 'knownHostsFile: the first UserKnownHostsFile',
    config: text('Host n1', '  UserKnownHostsFile ~/.ssh/kh_%h ~/.ssh/kh2'),
    target: { knownHostsFile: '{HOME}/.ssh/kh_n1' },
    sources: { knownHostsFile: CFG('Host n1') },
  },
  {
    name: 'knownHostsFile: UserKnownHostsFile none is not honoured',
    config: text('Host n1', '  UserKnownHostsFile none'),
    sources: { knownHostsFile: { from: 'default', detail: '~/.ssh/config Host n1 says UserKnownHostsFile none, but host keys are always checked' } },
    describe: '',
  },
  {
    name: 'knownHostsFile: the inventory ssh wins',
    config: text('Host n1', '  UserKnownHostsFile ~/.ssh/kh'),
    global: { knownHostsFile: './known_hosts' },
    target: { knownHostsFile: '{INV}/known_hosts' },
    sources: { knownHostsFile: INV('ssh.knownHostsFile') },
  },
  {
    name: 'knownHostsFile: the node override wins',
    config: text('Host n1', '  UserKnownHostsFile ~/.ssh/kh'),
    global: { knownHostsFile: './known_hosts' },
    node: { knownHostsFile: '/etc/ssh/kh' },
    target: { knownHostsFile: '/etc/ssh/kh' },
    sources: { knownHostsFile: INV('n1: ssh.knownHostsFile') },
  },

  // --- jumpHost (ProxyJump) ---
  {
    name: 'jumpHost: one hop',
    config: text('Host n1', '  ProxyJump ops@bastion.example.com:2222'),
    target: { jumpHost: 'ops@bastion.example.com:2222' },
    sources: { jumpHost: CFG('Host n1') },
  },
  {
    name: 'jumpHost: an ssh:// URI',
    config: text('Host n1', '  ProxyJump ssh://ops@bastion.example.com:2222'),
    target: { jumpHost: 'ops@bastion.example.com:2222' },
    sources: { jumpHost: CFG('Host n1') },
  },
  {
    name: "jumpHost: the bastion's own HostName, User and Port, as ssh -J reads them",
    config: text('Host bastion', '  HostName 10.0.0.5', '  User ops', '  Port 2200', 'Host n*', '  ProxyJump bastion'),
    target: { jumpHost: 'ops@10.0.0.5:2200' },
    sources: { jumpHost: CFG('Host n*; bastion: HostName, User, Port from ~/.ssh/config Host bastion') },
    describe: 'jumpHost from ~/.ssh/config (Host n*; bastion: HostName, User, Port from ~/.ssh/config Host bastion)',
  },
  {
    name: 'jumpHost: what the hop says wins over the bastion block',
    config: text('Host bastion', '  HostName 10.0.0.5', '  User ops', '  Port 2200', 'Host n1', '  ProxyJump admin@bastion:22'),
    target: { jumpHost: 'admin@10.0.0.5:22' },
    sources: { jumpHost: CFG('Host n1; bastion: HostName from ~/.ssh/config Host bastion') },
  },
  {
    name: 'jumpHost: a Host * ProxyJump that also matches the bastion is not a second hop',
    config: text('Host bastion', '  HostName 10.0.0.5', 'Host *', '  ProxyJump bastion'),
    target: { jumpHost: '10.0.0.5' },
    sources: { jumpHost: CFG('Host *; bastion: HostName from ~/.ssh/config Host bastion') },
  },
  {
    name: 'jumpHost: ProxyJump none',
    config: text('Host n1', '  ProxyJump none'),
    sources: { jumpHost: CFG('Host n1') },
  },
  {
    name: 'jumpHost: an earlier none wins over a later Host *',
    config: text('Host n1', '  ProxyJump none', 'Host *', '  ProxyJump ops@bastion'),
    sources: { jumpHost: CFG('Host n1') },
  },
  {
    name: 'jumpHost: the inventory ssh wins over ProxyJump',
    config: text('Host n1', '  ProxyJump ops@bastion'),
    global: { jumpHost: 'admin@gate.example.com' },
    target: { jumpHost: 'admin@gate.example.com' },
    sources: { jumpHost: INV('ssh.jumpHost') },
  },
  {
    name: "jumpHost: the inventory's jump host is looked up in the ssh config too",
    config: text('Host gate', '  HostName 10.0.0.6', '  Port 2022'),
    global: { jumpHost: 'admin@gate' },
    target: { jumpHost: 'admin@10.0.0.6:2022' },
    sources: { jumpHost: INV('ssh.jumpHost; gate: HostName, Port from ~/.ssh/config Host gate') },
    describe: '',
  },
  {
    name: 'jumpHost: the node override wins',
    config: text('Host n1', '  ProxyJump ops@bastion'),
    global: { jumpHost: 'admin@gate.example.com' },
    node: { jumpHost: 'root@10.0.0.7' },
    target: { jumpHost: 'root@10.0.0.7' },
    sources: { jumpHost: INV('n1: ssh.jumpHost') },
  },

  // --- sudo: the inventory only ---
  { name: 'sudo: the inventory ssh', global: { sudo: true }, target: { sudo: true }, sources: { sudo: INV('ssh.sudo') } },
  { name: 'sudo: the node override', global: { sudo: true }, node: { sudo: false }, target: { sudo: false }, sources: { sudo: INV('n1: ssh.sudo') } },

  // --- patterns, order, blocks ---
  {
    name: 'first value wins: the specific block before Host *',
    config: text('Host n1', '  User first', 'Host *', '  User second', '  Port 2222'),
    target: { user: 'first', port: 2222 },
    sources: { user: CFG('Host n1'), port: CFG('Host *') },
    describe: 'user from ~/.ssh/config (Host n1); port from ~/.ssh/config (Host *)',
  },
  {
    name: 'first value wins: Host * first shadows a later specific block',
    config: text('Host *', '  User everyone', 'Host n1', '  User n1only'),
    target: { user: 'everyone' },
    sources: { user: CFG('Host *') },
  },
  {
    name: 'wildcard and negation: n* !n2 matches n1',
    config: text('Host n* !n2', '  User deploy'),
    target: { user: 'deploy' },
    sources: { user: CFG('Host n* !n2') },
  },
  {
    name: 'wildcard and negation: n* !n2 does not match n2',
    config: text('Host n* !n2', '  User deploy'),
    host: 'n2',
    target: { host: 'n2' },
  },
  {
    name: 'a negated pattern alone matches nothing',
    config: text('Host !n2', '  User deploy'),
  },
  {
    name: 'several patterns on one Host line',
    config: text('Host db1 n1 web1', '  Port 2022'),
    target: { port: 2022 },
    sources: { port: CFG('Host db1 n1 web1') },
  },
  {
    name: 'Host patterns are matched against the inventory host, not HostName',
    config: text('Host n1', '  HostName 10.0.0.51', 'Host 10.0.0.51', '  User byaddress'),
    target: { host: '10.0.0.51' },
    sources: { host: CFG('Host n1') },
  },
  {
    name: 'Match host is matched against HostName',
    config: text('Host n1', '  HostName 10.0.0.51', 'Match host 10.0.0.*', '  User byaddress'),
    target: { host: '10.0.0.51', user: 'byaddress' },
    sources: { host: CFG('Host n1'), user: CFG('Match host 10.0.0.*') },
  },
  {
    name: 'Match exec never matches (no commands run)',
    config: text('Match exec "true"', '  User fromexec'),
  },
  {
    name: 'CanonicalizeHostname is ignored (no DNS lookups)',
    config: text('Host n1', '  CanonicalizeHostname yes', '  CanonicalDomains example.com', '  User deploy', 'Match canonical', '  Port 2222'),
    target: { user: 'deploy' },
    sources: { user: CFG('Host n1') },
  },
  {
    name: 'settings before the first Host apply to every host',
    config: text('# defaults', 'User everywhere', '', 'Host other', '  User someone'),
    target: { user: 'everywhere' },
    sources: { user: CFG('line 2') },
    describe: 'user from ~/.ssh/config (line 2)',
  },
  {
    name: 'quoted values and = separators',
    config: text('Host n1', '  IdentityFile "~/.ssh/my key"', '  User=deploy'),
    target: { user: 'deploy', identityFile: '{HOME}/.ssh/my key' },
    sources: { user: CFG('Host n1'), identityFile: CFG('Host n1') },
  },
  {
    name: 'other keywords are ignored',
    config: text('Host n1', '  ForwardAgent yes', '  ProxyCommand ssh -W %h:%p gate', '  ServerAliveInterval 30', '  User deploy'),
    target: { user: 'deploy' },
    sources: { user: CFG('Host n1') },
  },

  // --- Include ---
  {
    name: 'Include: relative names from ~/.ssh, globs in lexical order, the included file named',
    config: text('Include config.d/*', 'Host *', '  User fallback'),
    files: { 'config.d/20-late': text('Host n1', '  Port 2020'), 'config.d/10-bastions': text('Host n1', '  HostName 10.0.0.61', '  Port 1010') },
    target: { host: '10.0.0.61', port: 1010, user: 'fallback' },
    sources: { host: { from: 'ssh-config', detail: '~/.ssh/config.d/10-bastions Host n1' }, port: { from: 'ssh-config', detail: '~/.ssh/config.d/10-bastions Host n1' }, user: CFG('Host *') },
    describe: 'host, port from ~/.ssh/config.d/10-bastions (Host n1); user from ~/.ssh/config (Host *)',
  },
  {
    name: 'Include: a file that does not exist is skipped',
    config: text('Include ~/.ssh/nothing-here', 'Host n1', '  User deploy'),
    target: { user: 'deploy' },
    sources: { user: CFG('Host n1') },
  },
  {
    name: 'Include inside a Host block applies under its condition',
    config: text('Host n1', '  Include config.d/keys'),
    files: { 'config.d/keys': text('User deploy', 'IdentityFile ~/.ssh/k') },
    target: { user: 'deploy', identityFile: '{HOME}/.ssh/k' },
    sources: { user: CFG('Host n1'), identityFile: CFG('Host n1') },
  },
  {
    name: 'Include inside a Host block that does not match',
    config: text('Host other', '  Include config.d/keys'),
    files: { 'config.d/keys': text('User deploy') },
  },
];

describe('resolveSshTarget: inventory > ~/.ssh/config > defaults', () => {
  it.each(cases)('$name', async (c) => {
    const { target, sources } = await resolveCase(c);
    expect(target).toEqual(
      fill({ label: 'n1', host: c.host ?? 'n1', port: 22, user: 'root', knownHostsFile: '~/.ssh/known_hosts', sudo: false, ...c.target }),
    );
    expect(sources).toEqual(fill({ ...DEFAULT_SOURCES, ...c.sources }));
    if (c.describe !== undefined) expect(describeSources(sources)).toBe(c.describe);
  });
});

interface Failure {
  name: string;
  config?: string;
  files?: Record<string, string>;
  global?: SshSettings;
  node?: SshOverrides;
  message: string;
  hint: string;
  exitCode?: ExitCode;
}

const CONFIG_HINT = 'fix it (see ssh_config(5)), or set ssh.configFile: false in the inventory to ignore the ssh config';

const failures: Failure[] = [
  {
    name: 'several ProxyJump hops',
    config: text('Host n1', '  ProxyJump ops@gate1,ops@gate2:2222'),
    message: 'n1: only one jump host is supported, but ~/.ssh/config Host n1 gives ProxyJump ops@gate1,ops@gate2:2222',
    hint: 'set ssh.jumpHost for n1 in the inventory (it wins over the ssh config) to a bastion that reaches n1 directly',
  },
  {
    name: "a bastion with a ProxyJump of its own is a second hop",
    config: text('Host gate2', '  ProxyJump gate1', 'Host n1', '  ProxyJump gate2'),
    message: 'n1: only one jump host is supported, but ~/.ssh/config Host gate2 gives jump host gate2 a ProxyJump gate1 of its own',
    hint: 'give gate2 ProxyJump none in the ssh config, or set ssh.jumpHost in the inventory to a bastion reachable directly',
  },
  {
    name: 'a ProxyJump that is not [user@]host[:port]',
    config: text('Host n1', '  ProxyJump ops@gate:99999'),
    message: 'n1: ~/.ssh/config Host n1 gives ProxyJump ops@gate:99999, which is not [user@]host[:port]',
    hint: 'e.g. ProxyJump ops@bastion.example.com:2222',
  },
  {
    name: 'a Port that is not a port',
    config: text('Host n*', '  Port ssh'),
    message: 'n1: ~/.ssh/config Host n* gives Port ssh, which is not a port number from 1 to 65535',
    hint: 'fix it there, or set ssh.port for n1 in the inventory',
  },
  {
    name: 'a token newapi-cluster does not expand',
    config: text('Host n1', '  IdentityFile ~/.ssh/%C'),
    message: 'n1: IdentityFile ~/.ssh/%C in ~/.ssh/config Host n1 uses %C, which newapi-cluster does not expand',
    hint: 'newapi-cluster expands ~, ${VAR} and %%, %d, %h, %n, %p, %r, %u; write the value out instead',
  },
  {
    name: 'an environment variable that is not set',
    config: text('Host n1', '  UserKnownHostsFile ${NEWAPI_TEST_UNSET}/kh'),
    message: 'n1: UserKnownHostsFile ${NEWAPI_TEST_UNSET}/kh in ~/.ssh/config Host n1 uses ${NEWAPI_TEST_UNSET}, which is not set',
    hint: 'set NEWAPI_TEST_UNSET, or write the value out',
  },
  {
    name: "another user's home folder",
    config: text('Host n1', '  IdentityFile ~alice/.ssh/id'),
    message: "n1: IdentityFile ~alice/.ssh/id in ~/.ssh/config Host n1 uses ~alice, another user's home folder",
    hint: 'write the path out in full',
  },
  {
    name: 'HostName with a token other than %h',
    config: text('Host n1', '  HostName %p.example.com'),
    message: 'n1: HostName %p.example.com in ~/.ssh/config Host n1 uses %p, which newapi-cluster does not expand',
    hint: 'HostName takes only %h and %%',
  },
  {
    name: 'an explicit configFile that does not exist',
    global: { configFile: './ssh_config' },
    message: 'ssh.configFile: ~/cluster/ssh_config does not exist',
    hint: 'fix the path, or leave ssh.configFile out to use ~/.ssh/config when there is one (false: use no ssh config)',
  },
  {
    name: 'an explicit ~/.ssh/config that does not exist',
    global: { configFile: '~/.ssh/config' },
    message: 'ssh.configFile: ~/.ssh/config does not exist',
    hint: 'fix the path, or leave ssh.configFile out to use ~/.ssh/config when there is one (false: use no ssh config)',
  },
  {
    name: 'an unclosed quote',
    config: text('# keys', 'Host n1', '  IdentityFile "~/.ssh/id', '  User deploy'),
    message: '~/.ssh/config line 3: a quote is not closed',
    hint: CONFIG_HINT,
  },
  {
    name: 'Match with a criterion and no value',
    config: text('Host n1', '  User deploy', 'Match host'),
    message: '~/.ssh/config line 3: Match host has no value',
    hint: CONFIG_HINT,
  },
  {
    name: 'a Host line without patterns',
    config: text('User deploy', 'Host', '  Port 22'),
    message: '~/.ssh/config line 2: Host has no value',
    hint: CONFIG_HINT,
  },
  {
    name: 'an empty quoted Host pattern',
    config: text('User deploy', '', 'Host ""', '  Port 22'),
    message: '~/.ssh/config line 3: Host has no value',
    hint: CONFIG_HINT,
  },
  {
    name: 'a keyword without a value at the end of the file',
    config: 'Host n1\n  Port 22\n  User',
    message: '~/.ssh/config line 3: User has no value',
    hint: CONFIG_HINT,
  },
  {
    name: 'a syntax error in an included file names that file',
    config: text('Include config.d/bad', 'Host n1', '  User deploy'),
    files: { 'config.d/bad': text('Host x', '  User "broken') },
    message: '~/.ssh/config.d/bad line 2: a quote is not closed',
    hint: CONFIG_HINT,
  },
  {
    name: 'an Include inside a block of a file with blocks of its own',
    config: text('Host n1', '  Include config.d/blocks'),
    files: { 'config.d/blocks': text('Host n*', '  User deploy') },
    message: '~/.ssh/config line 2: an Include inside a Host block reads a file with Host or Match blocks of its own, which newapi-cluster cannot follow',
    hint: 'move the Include above the first Host or Match line, or set ssh.configFile: false in the inventory',
  },
  {
    name: 'an Include loop',
    config: text('Include config.d/loop'),
    files: { 'config.d/loop': text('Include config.d/loop') },
    message: '~/.ssh/config.d/loop line 1: Includes nest more than 16 deep',
    hint: 'an included file probably includes itself; fix the Include lines',
  },
];

describe('resolveSshTarget and loadSshConfig: failures', () => {
  it.each(failures)('$name', async (f) => {
    const err = await resolveCase(f).then(
      () => undefined,
      (e: unknown) => e,
    );
    expect(err).toBeInstanceOf(CliError);
    const e = err as CliError;
    expect({ message: e.message, hint: e.hint, exitCode: e.exitCode }).toEqual({ message: f.message, hint: f.hint, exitCode: f.exitCode ?? ExitCode.badInput });
  });
});

describe('loadSshConfig', () => {
  const ALIAS = text('Host n1', '  HostName 10.0.0.71');

  it('reads ~/.ssh/config when ssh.configFile is left out, and ignores it when there is none', async () => {
    expect(await loadSshConfig(undefined, invDir)).toBeUndefined();
    await writeFile(join(home, '.ssh', 'config'), ALIAS);
    const source = await loadSshConfig(undefined, invDir);
    expect({ file: source?.file, path: source?.path }).toEqual({ file: '~/.ssh/config', path: join(home, '.ssh', 'config') });
  });

  it('ignores every ssh config with configFile: false', async () => {
    await writeFile(join(home, '.ssh', 'config'), ALIAS);
    expect(await loadSshConfig(false, invDir)).toBeUndefined();
    const { target, sources } = await resolveCase({ global: { configFile: false } });
    expect(target.host).toBe('n1');
    expect(sources.host).toEqual({ from: 'inventory' });
  });

  it('reads a relative configFile from the inventory folder, and ~ from the home folder', async () => {
    await writeFile(join(invDir, 'ssh_config'), ALIAS);
    const { target, sources } = await resolveCase({ global: { configFile: 'ssh_config' } });
    expect(target.host).toBe('10.0.0.71');
    expect(sources.host).toEqual({ from: 'ssh-config', detail: '~/cluster/ssh_config Host n1' });
    await writeFile(join(home, 'other_config'), ALIAS);
    expect((await loadSshConfig('~/other_config', invDir))?.path).toBe(join(home, 'other_config'));
  });

  it('shows a path outside the home folder as it is', async () => {
    const outside = await mkdtemp(join(tmpdir(), 'newapi-ssh-config-outside-'));
    try {
      await writeFile(join(outside, 'cfg'), 'Host n1\n  Port "22\n');
      await expect(loadSshConfig(join(outside, 'cfg'), invDir)).rejects.toThrow(`${join(outside, 'cfg')} line 2: a quote is not closed`);
    } finally {
      await rm(outside, { recursive: true, force: true });
    }
  });

  it('computes each host once per (host, user)', async () => {
    await writeFile(join(home, '.ssh', 'config'), ALIAS);
    const source = (await loadSshConfig(undefined, invDir))!;
    expect(source.lookup('n1')).toBe(source.lookup('n1'));
    expect(source.lookup('n1', 'ops')).not.toBe(source.lookup('n1'));
  });
});

describe('describeSources', () => {
  const all = (from: SettingSource['from']): SshSources =>
    Object.fromEntries((['host', 'user', 'port', 'identityFile', 'jumpHost', 'knownHostsFile', 'sudo'] as SshSourceKey[]).map((k) => [k, { from }])) as SshSources;

  it.each([
    ['everything from the inventory', all('inventory'), ''],
    ['everything by default', all('default'), ''],
    [
      'keys grouped by block, in key order',
      { ...all('inventory'), identityFile: CFG('Host n2*'), user: CFG('Host n2*'), port: CFG('Host *') },
      'user, identityFile from ~/.ssh/config (Host n2*); port from ~/.ssh/config (Host *)',
    ],
    ['a top-level line', { ...all('default'), user: CFG('line 4') }, 'user from ~/.ssh/config (line 4)'],
    ['a Match block', { ...all('default'), user: CFG('Match host 10.*') }, 'user from ~/.ssh/config (Match host 10.*)'],
  ] as [string, SshSources, string][])('%s', (_name, sources, expected) => {
    expect(describeSources(sources)).toBe(expected);
  });
});
