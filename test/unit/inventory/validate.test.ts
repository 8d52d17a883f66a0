/**
 * Every inventory rule, as a table: a valid base inventory, one mutation, and the exact problem
 * lines (`formatProblem`) and hints the operator reads. A list, not a subset: an extra problem
 * fails the test as surely as a missing one.
 */
import { chmod, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { afterEach, describe, expect, it } from 'vitest';
import { ExitCode, InputError } from '../../../src/errors.js';
import { collectSecrets, InventoryError, loadInventory, parseInventory, SECRETS_FILE, type LoadedInventory } from '../../../src/inventory/load.js';
import { formatProblem, type Problem } from '../../../src/inventory/problems.js';
import { baseInventory, FAKE, FAKE_VARS, toYaml, writeInventoryDir, type RawInventory, type TempInventory } from '../../fixtures/inventory.js';

type Expected = [severity: Problem['severity'], line: string, hint: string | undefined];
const E = (line: string, hint?: string): Expected => ['error', line, hint];
const W = (line: string, hint?: string): Expected => ['warning', line, hint];

const PORT_HINT = 'write a whole number';
const HOST_MSG = 'should be a host name or an IP address';
const HOST_HINT = "write the address the operator's machine reaches the host at, e.g. 10.0.0.12";
const NAME_MSG = 'should match [a-z0-9][a-z0-9-]*';
const NAME_HINT = 'use lower-case letters, digits and dashes, starting with a letter or digit';
const DSN_HINT = 'MySQL: user:password@tcp(host:3306)/new-api — PostgreSQL: postgres://user:password@host:5432/new-api';
const REDIS_HINT = 'e.g. redis://default:password@10.0.0.5:6379/0';
const SECRET_HINT = 'generate one: openssl rand -hex 32 (or run newapi-cluster init)';
const YAML_HINT = 'fix the YAML syntax';
const TOP_MSG = '(top): should be a mapping with cluster, database, redis, secrets and nodes';
const TOP_HINT = 'run newapi-cluster init for a starting point';
const LATEST_HINT = 'name a version, e.g. calciumion/new-api:v0.9.20';
const clearHint = (v: string) => `move it to .newapi-cluster.env as ${v}=… and write \${${v}} here`;
const CLEAR = 'holds a secret written in clear in the inventory';
const unsetHint = (v: string) => `export ${v}=… or add ${v}=… to .newapi-cluster.env`;
const LINE_BREAK: [string, string] = ['contains a line break', 'environment values must fit on one line'];
const QUOTE_AND_DOLLAR: [string, string] = [
  "contains both a single quote (') and $ before a letter, _, $ or {: compose v2 expands such a $ unless the value is in single quotes, and single quotes cannot carry a single quote (older compose v2 keeps the backslash of \\')",
  'choose a value without one of the two',
];
const V1_VARIABLE: [string, string] = ['contains ${…}, which compose v1 replaces with a variable even inside quotes (a .env file has no escape for it)', 'choose a value without ${…}'];

function parse(inv: RawInventory | string, vars: Record<string, string | undefined> = FAKE_VARS): LoadedInventory {
  return parseInventory(typeof inv === 'string' ? inv : toYaml(inv), {
    file: 'inv.yaml',
    path: '/srv/cluster/inv.yaml',
    lookup: (name) => vars[name],
  });
}

function problemsOf(fn: () => unknown): InventoryError {
  try {
    fn();
  } catch (e) {
    if (e instanceof InventoryError) return e;
    throw e;
  }
  throw new Error('expected an InventoryError, but the inventory was accepted');
}

const shape = (problems: readonly Problem[]): Expected[] => problems.map((p) => [p.severity, formatProblem(p), p.hint]);

function mutated(mutate: (inv: RawInventory) => void): RawInventory {
  const inv = baseInventory();
  mutate(inv);
  return inv;
}

interface BadCase {
  name: string;
  mutate?: (inv: RawInventory) => void;
  /** Raw YAML instead of a mutated base. */
  text?: string;
  vars?: Record<string, string | undefined>;
  problems: Expected[];
}

const badCases: BadCase[] = [
  // required fields
  { name: 'cluster/name missing', mutate: (i) => delete i.cluster.name, problems: [E('cluster/name: required')] },
  { name: 'cluster/image missing', mutate: (i) => delete i.cluster.image, problems: [E('cluster/image: required')] },
  { name: 'cluster missing', mutate: (i) => delete i.cluster, problems: [E('cluster: required')] },
  { name: 'nodes/2/host missing', mutate: (i) => delete i.nodes[2].host, problems: [E('nodes/2/host: required')] },
  { name: 'nodes/1/name missing', mutate: (i) => delete i.nodes[1].name, problems: [E('nodes/1/name: required')] },
  { name: 'database missing', mutate: (i) => delete i.database, problems: [E('database: required')] },
  { name: 'database/dsn missing', mutate: (i) => (i.database = {}), problems: [E('database/dsn: required')] },
  { name: 'database/dsn empty', mutate: (i) => (i.database.dsn = ''), problems: [E('database/dsn: required', 'e.g. ${SQL_DSN}, set in .newapi-cluster.env')] },
  { name: 'redis missing', mutate: (i) => delete i.redis, problems: [E('redis: required')] },
  { name: 'redis/url empty', mutate: (i) => (i.redis.url = ''), problems: [E('redis/url: required', 'e.g. ${REDIS_CONN_STRING}, set in .newapi-cluster.env')] },
  { name: 'secrets missing', mutate: (i) => delete i.secrets, problems: [E('secrets: required')] },
  { name: 'secrets/sessionSecret missing', mutate: (i) => delete i.secrets.sessionSecret, problems: [E('secrets/sessionSecret: required')] },
  { name: 'nodes missing', mutate: (i) => delete i.nodes, problems: [E('nodes: required')] },
  {
    name: 'nodes empty',
    mutate: (i) => (i.nodes = []),
    problems: [E('nodes: should list at least one node', 'add the master: - { name: master, host: 10.0.0.11, role: master }')],
  },
  { name: 'nodes a mapping', mutate: (i) => (i.nodes = { master: '10.0.0.11' }), problems: [E('nodes: should be a list, not a mapping')] },
  { name: 'cluster a string', mutate: (i) => (i.cluster = 'prod'), problems: [E('cluster: should be a mapping, not a string')] },

  // unknown keys
  { name: 'cluster/prot (typo)', mutate: (i) => (i.cluster.prot = 3000), problems: [E('cluster/prot: unknown key', 'did you mean "port"?')] },
  { name: 'top-level typo', mutate: (i) => (i.loadBalancr = i.loadBalancer), problems: [E('loadBalancr: unknown key', 'did you mean "loadBalancer"?')] },
  { name: 'node key typo', mutate: (i) => (i.nodes[1].wieght = 2), problems: [E('nodes/1/wieght: unknown key', 'did you mean "weight"?')] },
  { name: 'snake_case ssh key', mutate: (i) => (i.ssh = { identity_file: '~/.ssh/id' }), problems: [E('ssh/identity_file: unknown key', 'did you mean "identityFile"?')] },
  {
    name: 'far-off unknown key',
    mutate: (i) => (i.cluster.zzzzqqqq = 1),
    problems: [E('cluster/zzzzqqqq: unknown key', 'known keys here: name, image, port, dir, timezone, frontendBaseUrl, syncFrequency, batchUpdate, env')],
  },

  // exactly one master
  { name: 'no master', mutate: (i) => delete i.nodes[0].role, problems: [E('nodes: no node has role: master', 'set role: master on exactly one node')] },
  {
    name: 'two masters',
    mutate: (i) => (i.nodes[2].role = 'master'),
    problems: [E('nodes/2/role: a second master (nodes/0 is the master)', 'a cluster has exactly one master; make this node a slave')],
  },
  { name: 'role neither master nor slave', mutate: (i) => (i.nodes[1].role = 'primary'), problems: [E('nodes/1/role: should be master or slave', 'leave it out for a slave')] },

  // duplicates
  { name: 'duplicate node name', mutate: (i) => (i.nodes[2].name = 'slave-1'), problems: [E('nodes/2/name: "slave-1" is already used by nodes/1', 'give every node its own name')] },
  {
    name: 'duplicate host',
    mutate: (i) => (i.nodes[2].host = '10.0.0.12'),
    problems: [E('nodes/2/host: "10.0.0.12" is already used by nodes/1', 'one node per host: every node publishes cluster.port')],
  },
  {
    name: 'duplicate host, different case',
    mutate: (i) => {
      i.nodes[1].host = 'node-a.example.com';
      i.nodes[2].host = 'NODE-A.example.com';
    },
    problems: [E('nodes/2/host: "NODE-A.example.com" is already used by nodes/1', 'one node per host: every node publishes cluster.port')],
  },

  // names
  { name: 'node name with upper case and _', mutate: (i) => (i.nodes[1].name = 'Slave_1'), problems: [E(`nodes/1/name: ${NAME_MSG}`, NAME_HINT)] },
  { name: 'node name ../etc', mutate: (i) => (i.nodes[1].name = '../etc'), problems: [E(`nodes/1/name: ${NAME_MSG}`, NAME_HINT)] },
  { name: 'node name $(id)', mutate: (i) => (i.nodes[1].name = '$(id)'), problems: [E(`nodes/1/name: ${NAME_MSG}`, NAME_HINT)] },
  { name: 'cluster name starting with -', mutate: (i) => (i.cluster.name = '-prod'), problems: [E(`cluster/name: ${NAME_MSG}`, NAME_HINT)] },

  // hosts: nothing a shell or a config file could read as syntax
  ...['$(rm -rf /)', 'a;b', 'a\nb', '"a"', "'a'", '`id`', 'a b', '-oProxyCommand=x', 'a..b'].map(
    (host): BadCase => ({ name: `host ${JSON.stringify(host)}`, mutate: (i) => (i.nodes[1].host = host), problems: [E(`nodes/1/host: ${HOST_MSG}`, HOST_HINT)] }),
  ),
  { name: 'balancer host a;b', mutate: (i) => (i.loadBalancer.host = 'lb;reboot'), problems: [E(`loadBalancer/host: ${HOST_MSG}`, HOST_HINT)] },

  // ports and numbers
  ...[0, 65536, 70000, -1, 3.5].map(
    (port): BadCase => ({ name: `cluster/port ${port}`, mutate: (i) => (i.cluster.port = port), problems: [E('cluster/port: should be a port number from 1 to 65535', PORT_HINT)] }),
  ),
  { name: 'cluster/port a string', mutate: (i) => (i.cluster.port = '3000'), problems: [E('cluster/port: should be a number, not a string')] },
  { name: 'ssh/port 0', mutate: (i) => (i.ssh = { port: 0 }), problems: [E('ssh/port: should be a port number from 1 to 65535', PORT_HINT)] },
  { name: 'node ssh/port 0', mutate: (i) => (i.nodes[1].ssh = { port: 0 }), problems: [E('nodes/1/ssh/port: should be a port number from 1 to 65535', PORT_HINT)] },
  {
    name: 'ssh/configFile true',
    mutate: (i) => (i.ssh = { configFile: true }),
    problems: [E('ssh/configFile: should be a file path or false', 'e.g. ~/.ssh/config, or false to ignore any ssh config')],
  },
  { name: 'ssh/configFile with a line break', mutate: (i) => (i.ssh = { configFile: 'a\nb' }), problems: [E('ssh/configFile: should be a file path on one line', 'remove the line break')] },
  { name: 'node ssh/configFile (top level only)', mutate: (i) => (i.nodes[1].ssh = { configFile: false }), problems: [E('nodes/1/ssh/configFile: unknown key', 'known keys here: user, port, identityFile, knownHostsFile, jumpHost, sudo')] },
  { name: 'loadBalancer/listen 65536', mutate: (i) => (i.loadBalancer.listen = 65536), problems: [E('loadBalancer/listen: should be a port number from 1 to 65535', PORT_HINT)] },
  {
    name: 'balancer listen = cluster.port on a node host',
    mutate: (i) => {
      i.loadBalancer.host = '10.0.0.11';
      i.loadBalancer.listen = 3000;
    },
    problems: [E('loadBalancer/listen: 3000 is also cluster.port on 10.0.0.11 (nodes/0)', 'use another port for nginx or for the nodes')],
  },
  { name: 'weight 0', mutate: (i) => (i.nodes[1].weight = 0), problems: [E('nodes/1/weight: should be at least 1 weight unit', 'write a positive whole number')] },
  { name: 'weight 1.5', mutate: (i) => (i.nodes[1].weight = 1.5), problems: [E('nodes/1/weight: should be a whole number of weight units', 'drop the fraction')] },
  { name: 'syncFrequency 0', mutate: (i) => (i.cluster.syncFrequency = 0), problems: [E('cluster/syncFrequency: should be at least 1 second', 'write a positive whole number')] },
  { name: 'redis/poolSize 1.5', mutate: (i) => (i.redis.poolSize = 1.5), problems: [E('redis/poolSize: should be a whole number of connections', 'drop the fraction')] },
  { name: 'minReadySeconds -1', mutate: (i) => (i.rollout = { minReadySeconds: -1 }), problems: [E('rollout/minReadySeconds: should not be negative', 'write 0 or more seconds')] },

  // rollout
  { name: 'batchSize 0', mutate: (i) => (i.rollout = { batchSize: 0 }), problems: [E('rollout/batchSize: should be at least 1 node', 'write a positive whole number')] },
  ...['150%', '0%', 'all'].map(
    (batchSize): BadCase => ({
      name: `batchSize ${batchSize}`,
      mutate: (i) => (i.rollout = { batchSize }),
      problems: [E('rollout/batchSize: should be a number of nodes or a percentage from 1% to 100%', 'e.g. 1 or "25%"')],
    }),
  ),
  { name: 'batchSize true', mutate: (i) => (i.rollout = { batchSize: true }), problems: [E('rollout/batchSize: should be a number of nodes or a percentage', 'e.g. 1 or "25%"')] },
  {
    name: 'drainSeconds below batchUpdate.interval',
    mutate: (i) => {
      i.cluster.batchUpdate = { enabled: true, interval: 5 };
      i.rollout = { drainSeconds: 3 };
    },
    problems: [E('rollout/drainSeconds: 3 is below cluster.batchUpdate.interval (5)', 'a node keeps unsaved quota in memory for one batch interval: drain at least that long')],
  },
  {
    name: 'drainTimeoutSeconds below drainSeconds',
    mutate: (i) => (i.rollout = { drainSeconds: 30, drainTimeoutSeconds: 20 }),
    problems: [E('rollout/drainTimeoutSeconds: 20 is below rollout.drainSeconds (30)', 'the longest wait for requests in flight includes the shortest drain: e.g. drainSeconds 10, drainTimeoutSeconds 120')],
  },

  // cluster fields
  { name: 'dir with a space', mutate: (i) => (i.cluster.dir = '/opt/new api'), problems: [E('cluster/dir: should be an absolute folder path', 'e.g. /opt/new-api (letters, digits, . _ - and /)')] },
  { name: 'dir with ..', mutate: (i) => (i.cluster.dir = '/opt/../etc'), problems: [E('cluster/dir: should be a folder of its own', 'e.g. /opt/new-api')] },
  { name: 'image not a reference', mutate: (i) => (i.cluster.image = 'CalciumIon/New-API:v0.9.20'), problems: [E('cluster/image: should be an image reference', 'e.g. calciumion/new-api:v0.9.20')] },
  { name: 'frontendBaseUrl not http(s)', mutate: (i) => (i.cluster.frontendBaseUrl = 'ftp://files.example.com'), problems: [E('cluster/frontendBaseUrl: should be an http(s) URL', 'e.g. https://api.example.com')] },
  { name: 'frontendBaseUrl with a line break', mutate: (i) => (i.cluster.frontendBaseUrl = 'https://console.example.com/a\nb'), problems: [E(`cluster/frontendBaseUrl: ${LINE_BREAK[0]}`, LINE_BREAK[1])] },

  // DSNs: MySQL form
  { name: 'MySQL DSN without tcp()', mutate: (i) => (i.database.dsn = 'newapi:pw@10.0.0.5:3306/new-api'), problems: [E('database/dsn: expected the MySQL form user:password@tcp(host:3306)/database', DSN_HINT)] },
  { name: 'MySQL DSN without database', mutate: (i) => (i.database.dsn = '${SQL_USER}@tcp(10.0.0.5:3306)/'), vars: { ...FAKE_VARS, SQL_USER: 'newapi' }, problems: [E('database/dsn: the MySQL DSN names no database (…@tcp(host:3306)/database)', DSN_HINT)] },
  { name: 'MySQL DSN without user', mutate: (i) => (i.database.dsn = ':pw@tcp(10.0.0.5:3306)/new-api'), problems: [E('database/dsn: the MySQL DSN has no user (user:password@tcp(host:3306)/database)', DSN_HINT)] },
  { name: 'MySQL DSN with a bad port', mutate: (i) => (i.database.dsn = 'newapi:pw@tcp(10.0.0.5:99999)/new-api'), problems: [E('database/dsn: the port inside tcp(…) is not a port number from 1 to 65535', DSN_HINT)] },
  { name: 'MySQL DSN with an empty tcp()', mutate: (i) => (i.database.dsn = 'newapi:pw@tcp()/new-api'), problems: [E('database/dsn: the DSN has no host inside tcp(…)', DSN_HINT)] },
  // DSNs: PostgreSQL form
  { name: 'postgres DSN without host', mutate: (i) => (i.database.dsn = 'postgres:///new-api'), problems: [E('database/dsn: the PostgreSQL DSN has no host', DSN_HINT)] },
  { name: 'postgres DSN without database', mutate: (i) => (i.database.dsn = 'postgres://newapi@10.0.0.5:5432/'), problems: [E('database/dsn: the PostgreSQL DSN names no database (postgres://…/database)', DSN_HINT)] },
  { name: 'postgres DSN with a bad port', mutate: (i) => (i.database.dsn = 'postgres://newapi@10.0.0.5:99999/new-api'), problems: [E('database/dsn: expected postgres://user:password@host:5432/database', DSN_HINT)] },
  { name: 'logDsn not a DSN', mutate: (i) => (i.database.logDsn = 'sqlite:///tmp/log.db'), problems: [E('database/logDsn: expected the MySQL form user:password@tcp(host:3306)/database', DSN_HINT)] },
  { name: 'DSN with a line break', mutate: (i) => (i.database.dsn = 'newapi@tcp(10.0.0.5:3306)/new-api\nNODE_TYPE=master'), problems: [E(`database/dsn: ${LINE_BREAK[0]}`, LINE_BREAK[1])] },

  // Redis URL
  { name: 'Redis URL with http scheme', mutate: (i) => (i.redis.url = 'http://10.0.0.6:6379'), problems: [E('redis/url: expected redis://[user]:password@host:6379[/db]', REDIS_HINT)] },
  { name: 'Redis URL not a URL', mutate: (i) => (i.redis.url = '10.0.0.6:6379'), problems: [E('redis/url: expected redis://[user]:password@host:6379[/db]', REDIS_HINT)] },
  { name: 'Redis URL without host', mutate: (i) => (i.redis.url = 'redis://'), problems: [E('redis/url: the Redis URL has no host', REDIS_HINT)] },
  { name: 'Redis URL with a non-numeric db', mutate: (i) => (i.redis.url = 'redis://10.0.0.6:6379/cache'), problems: [E('redis/url: the Redis database (after host:port/) is not a number', REDIS_HINT)] },
  {
    name: 'Redis URL with a single quote and a $NAME (from a variable)',
    mutate: (i) => (i.redis.url = '${REDIS_CONN_STRING}'),
    vars: { ...FAKE_VARS, REDIS_CONN_STRING: "redis://default:it's-$a-password@10.0.0.6:6379/0" },
    problems: [E(`redis/url: ${QUOTE_AND_DOLLAR[0]}`, QUOTE_AND_DOLLAR[1])],
  },

  // secrets
  {
    name: 'secret is random_string',
    mutate: (i) => (i.secrets.sessionSecret = 'random_string'),
    problems: [E('secrets/sessionSecret: is the literal "random_string", which New API refuses to start with', SECRET_HINT), W(`secrets/sessionSecret: ${CLEAR}`, clearHint('SESSION_SECRET'))],
  },
  {
    name: 'secret too short',
    mutate: (i) => (i.secrets.cryptoSecret = 'short-secret'),
    problems: [E('secrets/cryptoSecret: should be at least 32 characters', SECRET_HINT), W(`secrets/cryptoSecret: ${CLEAR}`, clearHint('CRYPTO_SECRET'))],
  },
  {
    name: 'secret too short, from a variable (no clear-text warning)',
    vars: { ...FAKE_VARS, CRYPTO_SECRET: 'short-secret' },
    problems: [E('secrets/cryptoSecret: should be at least 32 characters', SECRET_HINT)],
  },
  {
    name: 'secret with a single quote and a $NAME (from the secrets file)',
    vars: { ...FAKE_VARS, SESSION_SECRET: `${FAKE.sessionSecret}'$x` },
    problems: [E(`secrets/sessionSecret: ${QUOTE_AND_DOLLAR[0]}`, QUOTE_AND_DOLLAR[1])],
  },
  {
    name: 'secret with ${…} (from the secrets file)',
    vars: { ...FAKE_VARS, CRYPTO_SECRET: `${FAKE.cryptoSecret}\${x}` },
    problems: [E(`secrets/cryptoSecret: ${V1_VARIABLE[0]}`, V1_VARIABLE[1])],
  },
  {
    name: 'secret with a line break (from the secrets file)',
    vars: { ...FAKE_VARS, CRYPTO_SECRET: `${FAKE.cryptoSecret}\nNODE_TYPE=master` },
    problems: [E(`secrets/cryptoSecret: ${LINE_BREAK[0]}`, LINE_BREAK[1])],
  },

  // ${VAR}
  {
    name: 'unset variable names the variable, the field and the secrets file',
    mutate: (i) => (i.database.logDsn = '${LOG_SQL_DSN}'),
    vars: { ...FAKE_VARS, LOG_SQL_DSN: undefined },
    problems: [E('database/logDsn: ${LOG_SQL_DSN} is not set', unsetHint('LOG_SQL_DSN'))],
  },
  {
    name: 'unset required variable: only "not set", not also "required"',
    vars: { ...FAKE_VARS, SQL_DSN: undefined },
    problems: [E('database/dsn: ${SQL_DSN} is not set', unsetHint('SQL_DSN'))],
  },
  {
    name: 'unset secret variable: only "not set", not also "too short"',
    vars: { ...FAKE_VARS, SESSION_SECRET: undefined },
    problems: [E('secrets/sessionSecret: ${SESSION_SECRET} is not set', unsetHint('SESSION_SECRET'))],
  },
  {
    name: 'empty variable counts as unset',
    vars: { ...FAKE_VARS, REDIS_CONN_STRING: '' },
    problems: [E('redis/url: ${REDIS_CONN_STRING} is not set', unsetHint('REDIS_CONN_STRING'))],
  },
  {
    name: 'two unset variables in one field',
    mutate: (i) => (i.database.dsn = '${DB_USER}:${DB_PASS}@tcp(10.0.0.5:3306)/new-api'),
    problems: [E('database/dsn: ${DB_USER} is not set', unsetHint('DB_USER')), E('database/dsn: ${DB_PASS} is not set', unsetHint('DB_PASS'))],
  },
  {
    name: 'invalid reference ${1X}',
    mutate: (i) => (i.cluster.env = { GREETING: 'hello ${1X}' }),
    problems: [E('cluster/env/GREETING: "${1X}" is not a valid variable reference', 'write ${NAME} with letters, digits and _')],
  },
  {
    name: 'invalid reference ${}',
    mutate: (i) => (i.database.logDsn = '${}'),
    problems: [E('database/logDsn: "${}" is not a valid variable reference', 'write ${NAME} with letters, digits and _')],
  },

  // cluster.env
  {
    name: 'env key managed by newapi-cluster (SQL_DSN)',
    mutate: (i) => (i.cluster.env = { SQL_DSN: 'x' }),
    problems: [E('cluster/env/SQL_DSN: is set by newapi-cluster from database.dsn', 'remove it from cluster.env and set database.dsn instead')],
  },
  {
    name: 'env keys managed by newapi-cluster (NODE_TYPE, PORT)',
    mutate: (i) => (i.cluster.env = { NODE_TYPE: 'slave', PORT: 3001 }),
    problems: [
      E('cluster/env/NODE_TYPE: is set by newapi-cluster from nodes[].role', 'remove it from cluster.env and set nodes[].role instead'),
      E(
        'cluster/env/PORT: is set by newapi-cluster from cluster.port (the container always listens on 3000)',
        'remove it from cluster.env and set cluster.port (the container always listens on 3000) instead',
      ),
    ],
  },
  {
    name: 'env key New API ignores (REDIS_PASSWORD)',
    mutate: (i) => (i.cluster.env = { REDIS_PASSWORD: 'x' }),
    problems: [E('cluster/env/REDIS_PASSWORD: is not read by New API', 'put the password in redis.url: redis://default:PASSWORD@host:6379')],
  },
  {
    name: 'env key New API ignores (REDIS_CONN_POOL_SIZE)',
    mutate: (i) => (i.cluster.env = { REDIS_CONN_POOL_SIZE: 5 }),
    problems: [E('cluster/env/REDIS_CONN_POOL_SIZE: is not read by New API', 'remove it')],
  },
  { name: 'env value with a newline', mutate: (i) => (i.cluster.env = { BANNER: 'a\nNODE_TYPE=master' }), problems: [E(`cluster/env/BANNER: ${LINE_BREAK[0]}`, LINE_BREAK[1])] },
  { name: 'env value with a single quote and a $NAME', mutate: (i) => (i.cluster.env = { BANNER: "it's $HOME" }), problems: [E(`cluster/env/BANNER: ${QUOTE_AND_DOLLAR[0]}`, QUOTE_AND_DOLLAR[1])] },
  { name: 'env value with ${…} (written $${ in the inventory)', mutate: (i) => (i.cluster.env = { TEMPLATE: '$${HOME}' }), problems: [E(`cluster/env/TEMPLATE: ${V1_VARIABLE[0]}`, V1_VARIABLE[1])] },
  {
    name: 'env key not a variable name',
    mutate: (i) => (i.cluster.env = { 'A=B': 'x' }),
    problems: [E('cluster/env/A=B: is not a valid environment variable name', 'use letters, digits and _, not starting with a digit')],
  },
  { name: 'env value null', mutate: (i) => (i.cluster.env = { BANNER: null }), problems: [E('cluster/env/BANNER: should be a text value', 'quote it: "value"')] },

  // load balancer
  {
    name: 'loadBalancer missing',
    mutate: (i) => delete i.loadBalancer,
    problems: [E('loadBalancer: required', 'add loadBalancer: { host: …, serverName: … }, or loadBalancer: { type: none }')],
  },
  {
    name: 'loadBalancer/host missing with type nginx',
    mutate: (i) => (i.loadBalancer = { type: 'nginx', serverName: 'api.example.com' }),
    problems: [E('loadBalancer/host: required when type is nginx', 'the host that runs nginx (or hosts: [a, b] for a pair), or set type: none to print the upstream instead')],
  },
  {
    name: 'loadBalancer with host and hosts',
    mutate: (i) => (i.loadBalancer = { host: '10.0.0.10', hosts: ['10.0.0.9'] }),
    problems: [
      E('loadBalancer/host: cannot be used with loadBalancer.hosts', 'list every balancer under hosts: [a, b] and remove host'),
      E('loadBalancer/vip: required with two or more balancer hosts', 'the floating address keepalived moves to a healthy balancer, and clients use, e.g. vip: 10.0.0.100'),
    ],
  },
  {
    name: 'a balancer pair without a vip',
    mutate: (i) => (i.loadBalancer = { hosts: ['10.0.0.10', '10.0.0.9'] }),
    problems: [E('loadBalancer/vip: required with two or more balancer hosts', 'the floating address keepalived moves to a healthy balancer, and clients use, e.g. vip: 10.0.0.100')],
  },
  {
    name: 'a balancer listed twice',
    mutate: (i) => (i.loadBalancer = { hosts: ['10.0.0.10', '10.0.0.10'], vip: '10.0.0.100' }),
    problems: [E('loadBalancer/hosts/1: "10.0.0.10" is already listed (loadBalancer/hosts/0)', 'list each balancer host once')],
  },
  {
    name: 'a vip that is a node\'s address',
    mutate: (i) => (i.loadBalancer = { hosts: ['10.0.0.10', '10.0.0.9'], vip: '10.0.0.12' }),
    problems: [E("loadBalancer/vip: 10.0.0.12 is already a host's own address", "the vip must be a free address on the balancers' network")],
  },
  {
    name: 'a vip that is not an address',
    mutate: (i) => (i.loadBalancer = { hosts: ['10.0.0.10', '10.0.0.9'], vip: 'api.example.com' }),
    problems: [E('loadBalancer/vip: should be an IP address', 'the floating address clients use, e.g. 10.0.0.100')],
  },
  {
    name: 'tls with neither files nor acme',
    mutate: (i) => (i.loadBalancer = { host: '10.0.0.10', tls: {} }),
    problems: [E('loadBalancer/tls: needs certificateFile and keyFile, or acme', 'e.g. tls: { certificateFile: certs/fullchain.pem, keyFile: certs/privkey.pem }')],
  },
  {
    name: 'tls with both files and acme',
    mutate: (i) => (i.loadBalancer = { host: '10.0.0.10', serverName: 'api.example.com', tls: { certificateFile: 'c.pem', keyFile: 'k.pem', acme: { email: 'ops@example.com', directoryUrl: 'https://ca.example.com/dir' } } }),
    problems: [E('loadBalancer/tls: has both certificate files and acme', 'choose one: your own certificateFile and keyFile, or acme to have the tool obtain one')],
  },
  {
    name: 'a certificate file without its key',
    mutate: (i) => (i.loadBalancer = { host: '10.0.0.10', tls: { certificateFile: 'c.pem' } }),
    problems: [E('loadBalancer/tls/keyFile: required with the other one', 'a certificate file and its private key file go together')],
  },
  {
    name: 'acme for the catch-all server name',
    mutate: (i) => (i.loadBalancer = { host: '10.0.0.10', serverName: '_', tls: { acme: { email: 'ops@example.com', directoryUrl: 'https://ca.example.com/dir' } } }),
    problems: [E('loadBalancer/serverName: must list the exact names to certify when tls.acme is set (no _, no wildcards)', 'e.g. serverName: api.example.com')],
  },
  {
    name: 'acme with an http directory',
    mutate: (i) => (i.loadBalancer = { host: '10.0.0.10', serverName: 'api.example.com', tls: { acme: { email: 'ops@example.com', directoryUrl: 'http://ca.example.com/dir' } } }),
    problems: [E("loadBalancer/tls/acme/directoryUrl: should be the https URL of the CA's ACME directory", 'e.g. https://acme-v02.api.letsencrypt.org/directory')],
  },
  {
    name: 'tls on the http port',
    mutate: (i) => (i.loadBalancer = { host: '10.0.0.10', tls: { certificateFile: 'c.pem', keyFile: 'k.pem', listen: 80 } }),
    problems: [E('loadBalancer/tls/listen: 80 is also loadBalancer.listen', 'HTTPS and HTTP need their own ports (443 and 80)')],
  },
  {
    name: 'a hook on two lines',
    mutate: (i) => (i.rollout = { hooks: { beforeDrain: './out.sh\nrm -rf /' } }),
    problems: [E('rollout/hooks/beforeDrain: should be a command on one line', 'e.g. ./hooks/lb-out.sh')],
  },
  {
    name: 'an unknown hook',
    mutate: (i) => (i.rollout = { hooks: { afterDrain: './x.sh' } }),
    problems: [E('rollout/hooks/afterDrain: unknown key', 'known keys here: beforeDrain, afterReady, beforeUpgrade, afterUpgrade')],
  },
  { name: 'loadBalancer/type haproxy', mutate: (i) => (i.loadBalancer.type = 'haproxy'), problems: [E('loadBalancer/type: should be nginx or none', 'none prints the upstream instead of pushing it')] },
  {
    name: 'loadBalancer/serverName with ;',
    mutate: (i) => (i.loadBalancer.serverName = 'api.example.com; return 200'),
    problems: [E('loadBalancer/serverName: should be nginx server names separated by spaces', 'e.g. api.example.com or _')],
  },
  {
    name: 'loadBalancer/configPath not .conf',
    mutate: (i) => (i.loadBalancer.configPath = '/etc/nginx/new-api.txt'),
    problems: [E('loadBalancer/configPath: should be an absolute path ending in .conf', 'e.g. /etc/nginx/conf.d/new-api.conf')],
  },

  // ssh and images
  { name: 'ssh/user with ;', mutate: (i) => (i.ssh = { user: 'root; reboot' }), problems: [E('ssh/user: should be a user name', 'e.g. root or deploy')] },
  { name: 'ssh/jumpHost with ;', mutate: (i) => (i.ssh = { jumpHost: 'ops@bastion;id' }), problems: [E('ssh/jumpHost: should be user@host[:port]', 'e.g. ops@bastion.example.com')] },
  {
    name: 'images transfer and mirror',
    mutate: (i) => (i.images = { transfer: 'rsync', registryMirror: 'http://mirror' }),
    problems: [E('images/transfer: should be pull or ssh', 'ssh streams the image from this machine'), E('images/registryMirror: should be a registry address', 'e.g. mirror.example.com:5000')],
  },

  // YAML itself
  { name: 'YAML syntax error', text: 'cluster:\n  name: prod\n  image: [unclosed\n', problems: [E('line 4, column 1: Flow sequence in block collection must be sufficiently indented and end with a ]', YAML_HINT)] },
  { name: 'YAML unclosed quote', text: 'cluster:\n  name: "prod\n', problems: [E('line 3, column 1: Missing closing "quote', YAML_HINT)] },
  { name: 'YAML tab indentation', text: 'cluster:\n\tname: prod\n', problems: [E('line 2, column 1: Tabs are not allowed as indentation', YAML_HINT)] },
  { name: 'duplicate YAML key', text: 'cluster:\n  name: a\n  name: b\n', problems: [E('line 3, column 3: Map keys must be unique', YAML_HINT)] },
  { name: 'top level a list', text: '- cluster\n- nodes\n', problems: [E(TOP_MSG, TOP_HINT)] },
  { name: 'top level a scalar', text: 'prod\n', problems: [E(TOP_MSG, TOP_HINT)] },
  { name: 'empty file', text: '', problems: [E(TOP_MSG, TOP_HINT)] },
];

describe('parseInventory rejects', () => {
  it.each(badCases.map((c) => [c.name, c] as const))('%s', (_name, c) => {
    const err = problemsOf(() => parse(c.text ?? mutated(c.mutate ?? (() => {})), c.vars));
    expect(shape(err.problems)).toEqual(c.problems);
    const errors = c.problems.filter(([s]) => s === 'error').length;
    expect(err.message).toBe(`inv.yaml: ${errors} problem${errors === 1 ? '' : 's'}`);
    expect(err.hint).toBe('fix the inventory and run newapi-cluster validate again');
    expect(err).toBeInstanceOf(InputError);
    expect(err.exitCode).toBe(ExitCode.badInput);
  });
});

describe('parseInventory reports every problem at once', () => {
  it('gives all 5 problems of a file with 5 distinct problems', () => {
    const inv = mutated((i) => {
      delete i.cluster.name;
      i.cluster.prot = 3000;
      i.nodes[1].weight = 0;
      i.nodes[2].role = 'master';
      i.cluster.env = { SQL_DSN: 'x' };
    });
    const err = problemsOf(() => parse(inv));
    expect(err.message).toBe('inv.yaml: 5 problems');
    expect(shape(err.problems)).toEqual([
      E('cluster/name: required'),
      E('cluster/prot: unknown key', 'did you mean "port"?'),
      E('nodes/1/weight: should be at least 1 weight unit', 'write a positive whole number'),
      E('nodes/2/role: a second master (nodes/0 is the master)', 'a cluster has exactly one master; make this node a slave'),
      E('cluster/env/SQL_DSN: is set by newapi-cluster from database.dsn', 'remove it from cluster.env and set database.dsn instead'),
    ]);
  });

  it('reports schema, variable and cross-field problems together', () => {
    const inv = mutated((i) => {
      i.nodes[1].host = 'a;b';
      i.database.logDsn = '${MISSING_LOG_DSN}';
      i.rollout = { drainSeconds: 1 };
    });
    const err = problemsOf(() => parse(inv));
    expect(err.problems.map(formatProblem)).toEqual([
      'database/logDsn: ${MISSING_LOG_DSN} is not set',
      `nodes/1/host: ${HOST_MSG}`,
      'rollout/drainSeconds: 1 is below cluster.batchUpdate.interval (5)',
    ]);
  });
});

describe('parseInventory accepts', () => {
  const goodCases: [string, (i: RawInventory) => void][] = [
    ['the base inventory', () => {}],
    ['batchSize "25%"', (i) => (i.rollout = { batchSize: '25%' })],
    ['batchSize "100%"', (i) => (i.rollout = { batchSize: '100%' })],
    ['an IPv6 host', (i) => (i.nodes[1].host = 'fe80::1')],
    ['loadBalancer type none without host', (i) => (i.loadBalancer = { type: 'none' })],
    ['a PostgreSQL DSN from a variable', (i) => (i.database.dsn = '${LOG_SQL_DSN}')],
    ['$${ as a literal ${', (i) => (i.cluster.env = { TEMPLATE: '$${HOME' })],
    ['a single quote in cluster.env', (i) => (i.cluster.env = { BANNER: "it's" })],
    ['numbers and booleans in cluster.env', (i) => (i.cluster.env = { STREAMING_TIMEOUT: 300, ERROR_LOG_ENABLED: true })],
    ['drainSeconds equal to the interval', (i) => (i.rollout = { drainSeconds: 5 })],
    ['ssh.configFile false', (i) => (i.ssh = { configFile: false })],
    ['ssh.configFile a path', (i) => (i.ssh = { configFile: './ssh_config', user: 'deploy' })],
    ['an image pinned by digest', (i) => (i.cluster.image = `calciumion/new-api@sha256:${'a'.repeat(64)}`)],
    ['a release-candidate tag', (i) => (i.cluster.image = 'calciumion/new-api:v0.9.21-rc.1')],
  ];
  it.each(goodCases)('%s, with no warning', (_name, mutate) => {
    const loaded = parse(mutated(mutate));
    expect(shape(loaded.warnings)).toEqual([]);
    expect(loaded.path).toBe('/srv/cluster/inv.yaml');
  });

  it('applies the defaults and resolves variables', () => {
    const { inventory } = parse(baseInventory());
    expect(inventory.cluster).toEqual({
      name: 'prod',
      image: 'calciumion/new-api:v0.9.20',
      port: 3000,
      dir: '/opt/new-api',
      timezone: 'UTC',
      syncFrequency: 60,
      batchUpdate: { enabled: false, interval: 5 },
      env: {},
    });
    expect(inventory.nodes.map((n) => [n.name, n.role, n.weight])).toEqual([
      ['master', 'master', 1],
      ['slave-1', 'slave', 1],
      ['slave-2', 'slave', 1],
    ]);
    expect(inventory.database.dsn).toBe(FAKE_VARS.SQL_DSN);
    expect(inventory.secrets).toEqual({ sessionSecret: FAKE.sessionSecret, cryptoSecret: FAKE.cryptoSecret });
    // No ssh defaults here: remote/ssh-config.ts applies them after the ssh config.
    expect(inventory.ssh).toEqual({});
    expect(inventory.rollout).toEqual({ batchSize: 1, drainSeconds: 10, drainTimeoutSeconds: 120, healthTimeoutSeconds: 120, minReadySeconds: 5, migrateFirst: true, maxParallel: 10, keepReleases: 3, backupBeforeMigrate: true, keepBackups: 5, hooks: { beforeDrain: null, afterReady: null, beforeUpgrade: null, afterUpgrade: null }, hookTimeoutSeconds: 60 });
    expect(inventory.loadBalancer).toEqual({ type: 'nginx', host: '10.0.0.10', listen: 80, serverName: 'api.example.com', configPath: '/etc/nginx/conf.d/new-api.conf' });
  });

  it('reads $${ as a literal ${ and turns env scalars into text', () => {
    const { inventory } = parse(mutated((i) => (i.cluster.env = { TEMPLATE: '$${HOME', STREAMING_TIMEOUT: 300, ERROR_LOG_ENABLED: true })));
    expect(inventory.cluster.env).toEqual({ TEMPLATE: '${HOME', STREAMING_TIMEOUT: '300', ERROR_LOG_ENABLED: 'true' });
  });
});

describe('warnings (the inventory is still accepted)', () => {
  const warningCases: [string, (i: RawInventory) => void, Expected[]][] = [
    [
      ':latest',
      (i) => (i.cluster.image = 'calciumion/new-api:latest'),
      [W('cluster/image: uses :latest, which New API re-points at every release, release candidates included', LATEST_HINT)],
    ],
    [
      'no tag',
      (i) => (i.cluster.image = 'calciumion/new-api'),
      [W('cluster/image: has no tag, so Docker uses :latest, which New API re-points at every release, release candidates included', LATEST_HINT)],
    ],
    [
      'no tag behind a registry with a port',
      (i) => (i.cluster.image = '10.77.0.1:5000/calciumion/new-api'),
      [W('cluster/image: has no tag, so Docker uses :latest, which New API re-points at every release, release candidates included', LATEST_HINT)],
    ],
    [
      'a tag that is not a version',
      (i) => (i.cluster.image = 'calciumion/new-api:stable'),
      [W('cluster/image: tag "stable" is not a version, so health checks cannot confirm what runs', 'name a version, e.g. :v0.9.20')],
    ],
    [
      'frontendBaseUrl equal to the balancer server name',
      (i) => (i.cluster.frontendBaseUrl = 'https://api.example.com'),
      [
        W(
          "cluster/frontendBaseUrl: points at the balancer's own server name (api.example.com)",
          'slaves 301-redirect every web route there; the rendered nginx config sends web routes to the master only, so keep it that way if you edit the config by hand',
        ),
      ],
    ],
    [
      'secrets, DSN password and Redis password in clear',
      (i) => {
        i.secrets.sessionSecret = FAKE.sessionSecret;
        i.secrets.cryptoSecret = FAKE.cryptoSecret;
        i.database.dsn = FAKE_VARS.SQL_DSN;
        i.database.logDsn = FAKE_VARS.LOG_SQL_DSN;
        i.redis.url = FAKE_VARS.REDIS_CONN_STRING;
      },
      [
        W(`database/dsn: ${CLEAR}`, clearHint('SQL_DSN')),
        W(`database/logDsn: ${CLEAR}`, clearHint('LOG_SQL_DSN')),
        W(`redis/url: ${CLEAR}`, clearHint('REDIS_CONN_STRING')),
        W(`secrets/sessionSecret: ${CLEAR}`, clearHint('SESSION_SECRET')),
        W(`secrets/cryptoSecret: ${CLEAR}`, clearHint('CRYPTO_SECRET')),
      ],
    ],
    [
      'a weak secret from a variable (no clear-text warning)',
      (i) => (i.secrets.cryptoSecret = '${WEAK_SECRET}'),
      [W('secrets/cryptoSecret: is weak (fewer than 10 different characters)', 'generate one: openssl rand -hex 32')],
    ],
  ];
  it.each(warningCases)('%s', (_name, mutate, expected) => {
    const loaded = parse(mutated(mutate), { ...FAKE_VARS, WEAK_SECRET: 'ab'.repeat(20) });
    expect(shape(loaded.warnings)).toEqual(expected);
  });

  it('does not warn about clear text when DSN and URL have no password', () => {
    const loaded = parse(
      mutated((i) => {
        i.database.dsn = 'newapi@tcp(10.0.0.5:3306)/new-api';
        i.redis.url = 'redis://10.0.0.6:6379/0';
      }),
    );
    expect(loaded.warnings).toEqual([]);
  });

  it('does not warn about clear text when the secret is partly a variable', () => {
    const loaded = parse(mutated((i) => (i.database.dsn = 'newapi:${DB_PASSWORD}@tcp(10.0.0.5:3306)/new-api')), { ...FAKE_VARS, DB_PASSWORD: FAKE.dbPassword });
    expect(loaded.warnings).toEqual([]);
    expect(loaded.inventory.database.dsn).toBe(`newapi:${FAKE.dbPassword}@tcp(10.0.0.5:3306)/new-api`);
  });
});

describe('problem messages never echo a secret', () => {
  it.each([
    ['a MySQL DSN with a bad port', (i: RawInventory) => (i.database.dsn = `newapi:${FAKE.dbPassword}@tcp(10.0.0.5:99999)/new-api`)],
    ['a MySQL DSN with no database', (i: RawInventory) => (i.database.dsn = `newapi:${FAKE.dbPassword}@tcp(10.0.0.5:3306)/`)],
    ['a postgres DSN with a bad port', (i: RawInventory) => (i.database.dsn = `postgres://newapi:${FAKE.dbPassword}@10.0.0.5:99999/db`)],
    ['a Redis URL with a bad database', (i: RawInventory) => (i.redis.url = `redis://default:${FAKE.redisPassword}@10.0.0.6:6379/x`)],
    ['a Redis URL with a bad port', (i: RawInventory) => (i.redis.url = `redis://default:${FAKE.redisPassword}@10.0.0.6:99999`)],
    ['a secret with a quote and a $NAME', (i: RawInventory) => (i.secrets.sessionSecret = `${FAKE.sessionSecret}'$x`)],
    ['a secret with ${…}', (i: RawInventory) => (i.secrets.sessionSecret = `${FAKE.sessionSecret}$\${x}`)],
    ['a secret with a line break', (i: RawInventory) => (i.secrets.cryptoSecret = `${FAKE.cryptoSecret}\nX=1`)],
  ])('%s', (_name, mutate) => {
    const err = problemsOf(() => parse(mutated(mutate)));
    const text = JSON.stringify(err.problems) + err.message;
    expect(err.problems.some((p) => p.severity === 'error')).toBe(true);
    for (const secret of Object.values(FAKE)) expect(text).not.toContain(secret);
  });
});

describe('collectSecrets', () => {
  it('includes the secrets, the whole DSNs and URL, and the passwords inside them', () => {
    const inv = mutated((i) => {
      i.database.logDsn = '${LOG_SQL_DSN}';
      i.cluster.env = { OPENAI_API_KEY: 'sk-fake-key-for-tests', SHORT_TOKEN: 'abc', ERROR_LOG_ENABLED: 'true-but-long' };
    });
    const secrets = parse(inv).secretValues;
    for (const value of [...Object.values(FAKE), FAKE_VARS.SQL_DSN, FAKE_VARS.LOG_SQL_DSN, FAKE_VARS.REDIS_CONN_STRING, 'sk-fake-key-for-tests']) {
      expect(secrets).toContain(value);
    }
    // Short values would redact ordinary words; non-secret keys are not secrets.
    expect(secrets).not.toContain('abc');
    expect(secrets).not.toContain('true-but-long');
  });

  it('includes a percent-encoded password both decoded and encoded', () => {
    const { inventory } = parse(mutated((i) => (i.database.dsn = 'postgres://newapi:p%40ss%2Fw0rd-fake@10.0.0.5:5432/new-api')));
    const secrets = collectSecrets(inventory);
    expect(secrets).toContain('p@ss/w0rd-fake');
    expect(secrets).toContain(encodeURIComponent('p@ss/w0rd-fake'));
  });

  it('includes a MySQL password that holds @ and :', () => {
    const { inventory } = parse(mutated((i) => (i.database.dsn = 'newapi:fake:p@ss@word@tcp(10.0.0.5:3306)/new-api')));
    expect(collectSecrets(inventory)).toContain('fake:p@ss@word');
  });
});

describe('loadInventory', () => {
  let tmp: TempInventory | undefined;
  afterEach(async () => {
    await tmp?.cleanup();
    tmp = undefined;
  });

  it('resolves variables from the secrets file beside the inventory', async () => {
    tmp = await writeInventoryDir(baseInventory());
    const loaded = await loadInventory(tmp.file, { env: {} });
    expect(loaded.inventory.secrets.sessionSecret).toBe(FAKE.sessionSecret);
    expect(loaded.inventory.redis.url).toBe(FAKE_VARS.REDIS_CONN_STRING);
    expect(loaded.warnings).toEqual([]);
    expect(loaded.path).toBe(tmp.file);
  });

  it('lets the process environment win over the secrets file', async () => {
    tmp = await writeInventoryDir(baseInventory());
    const fromEnv = 'env-session-secret-abcdefghijklmnopqrstuvwxyz0123';
    const loaded = await loadInventory(tmp.file, { env: { SESSION_SECRET: fromEnv } });
    expect(loaded.inventory.secrets.sessionSecret).toBe(fromEnv);
    expect(loaded.inventory.secrets.cryptoSecret).toBe(FAKE.cryptoSecret);
    expect(loaded.secretValues).toContain(fromEnv);
  });

  it('falls through to the secrets file when the environment value is empty', async () => {
    tmp = await writeInventoryDir(baseInventory());
    const loaded = await loadInventory(tmp.file, { env: { SESSION_SECRET: '' } });
    expect(loaded.inventory.secrets.sessionSecret).toBe(FAKE.sessionSecret);
  });

  it('works from the environment alone, with no secrets file', async () => {
    tmp = await writeInventoryDir(baseInventory(), { secrets: null });
    const loaded = await loadInventory(tmp.file, { env: { ...FAKE_VARS } });
    expect(loaded.inventory.database.dsn).toBe(FAKE_VARS.SQL_DSN);
  });

  it('reports a variable set nowhere', async () => {
    const { SESSION_SECRET: _omit, ...rest } = FAKE_VARS;
    tmp = await writeInventoryDir(baseInventory(), { secrets: rest });
    const err = await loadInventory(tmp.file, { env: {} }).then(
      () => undefined,
      (e: unknown) => e,
    );
    expect(err).toBeInstanceOf(InventoryError);
    expect(shape((err as InventoryError).problems)).toEqual([E('secrets/sessionSecret: ${SESSION_SECRET} is not set', unsetHint('SESSION_SECRET'))]);
  });

  it('warns when the secrets file is readable by others (mode 0644)', async () => {
    tmp = await writeInventoryDir(baseInventory(), { secretsMode: 0o644 });
    const loaded = await loadInventory(tmp.file, { env: {} });
    expect(shape(loaded.warnings)).toEqual([W(`${SECRETS_FILE}: is readable by others (mode 0644)`, `chmod 600 ${tmp.secretsFile}`)]);
  });

  it('does not warn about a secrets file of mode 0600, nor 0400', async () => {
    tmp = await writeInventoryDir(baseInventory());
    await chmod(tmp.secretsFile, 0o400);
    expect((await loadInventory(tmp.file, { env: {} })).warnings).toEqual([]);
  });

  it('keeps the secrets-file warning next to the inventory errors', async () => {
    tmp = await writeInventoryDir(mutated((i) => delete i.cluster.name), { secretsMode: 0o640 });
    const err = (await loadInventory(tmp.file, { env: {} }).catch((e: unknown) => e)) as InventoryError;
    expect(shape(err.problems)).toEqual([W(`${SECRETS_FILE}: is readable by others (mode 0640)`, `chmod 600 ${tmp.secretsFile}`), E('cluster/name: required')]);
    expect(err.message).toBe(`${tmp.file}: 1 problem`);
  });

  it('says so when the inventory file does not exist', async () => {
    tmp = await writeInventoryDir(baseInventory());
    const missing = join(tmp.dir, 'nope.yaml');
    const err = (await loadInventory(missing).catch((e: unknown) => e)) as InputError;
    expect(err).toBeInstanceOf(InputError);
    expect(err.message).toBe(`${missing}: no such file`);
    expect(err.hint).toBe('run newapi-cluster init to write one, or pass -i PATH');
  });

  it('keeps the YAML document (comments included) for later edits', async () => {
    tmp = await writeInventoryDir(baseInventory());
    await writeFile(tmp.file, `# keep me\n${toYaml(baseInventory())}`);
    const loaded = await loadInventory(tmp.file, { env: {} });
    expect(loaded.document.toString()).toContain('# keep me');
  });
});
