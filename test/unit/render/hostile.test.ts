/**
 * Values that would be syntax somewhere downstream: a shell (compose interpolation, ssh), a
 * dotenv parser, YAML. Each is either carried through literally or rejected at validation.
 */
import { parseEnv } from 'node:util';
import { describe, expect, it } from 'vitest';
import { parse as parseYaml } from 'yaml';
import { InputError } from '../../../src/errors.js';
import { InventoryError, parseInventory, type LoadedInventory } from '../../../src/inventory/load.js';
import { formatProblem } from '../../../src/inventory/problems.js';
import { envValue, renderCluster } from '../../../src/render/render.js';
import { loadTemplates } from '../../../src/render/templates.js';
import { baseInventory, FAKE_VARS, toYaml, type RawInventory } from '../../fixtures/inventory.js';

const HOSTILE_VALUES = [
  '$(rm -rf /)',
  '`reboot`',
  '$HOME',
  '$$',
  'two  spaces and a tab\there',
  'a #not a comment',
  '#starts-with-hash',
  ' leading and trailing ',
  'double "quotes" inside',
  "it's a single quote",
  '"fully double-quoted"',
  '`backticks`',
  'back\\slash\\n not a newline',
  'semi;colon|pipe&amp>redirect<in',
  'glob * ? [a-z] ~user',
  'unicode: 日本語 ✓',
  'a=b=c',
  '',
  'p@ss:w/rd?x&y%z,(1)+',
];

function parse(inv: RawInventory, vars: Record<string, string> = FAKE_VARS): LoadedInventory {
  return parseInventory(toYaml(inv), { file: 'inv.yaml', path: '/srv/inv.yaml', lookup: (n) => vars[n] });
}

function rejected(inv: RawInventory, vars?: Record<string, string>): string[] {
  try {
    parse(inv, vars);
  } catch (e) {
    if (e instanceof InventoryError) return e.problems.filter((p) => p.severity === 'error').map(formatProblem);
    throw e;
  }
  return [];
}

describe('envValue', () => {
  it.each(HOSTILE_VALUES)('%j reads back unchanged with util.parseEnv', (value) => {
    const line = `KEY=${envValue(value)}\n`;
    expect(parseEnv(line)).toEqual({ KEY: value });
  });

  it.each(['$(id)', '`id`', '$HOME', 'a b', 'x #y', '#x', '"q"', 'a\\b'])('single-quotes %j', (value) => {
    expect(envValue(value)).toBe(`'${value}'`);
  });

  it.each([
    ["it's", `"it's"`],
    ['a\\\\b "q"', '"a\\\\\\\\b \\"q\\""'],
    ['\\', '\\'],
  ])('writes %j as %s (single quotes cannot hold it; see env-format.test.ts)', (value, form) => {
    expect(envValue(value)).toBe(form);
  });

  it.each(['plain', 'newapi:pw@tcp(10.0.0.5:3306)/new-api?charset=utf8mb4&parseTime=true', 'redis://default:pw@10.0.0.6:6379/0', '300', ''])(
    'leaves %j bare (nothing a dotenv parser would read as syntax)',
    (value) => {
      expect(envValue(value)).toBe(value);
    },
  );

  it.each(['a\nb', 'a\rb', 'a\0b', '${HOME}', "it's $HOME"])('refuses %j (validation rejects it first)', (value) => {
    expect(() => envValue(value)).toThrow(InputError);
  });
});

describe('a rendered .env reads back exactly as the inventory says', () => {
  it('for hostile cluster.env values and a hostile DSN password', async () => {
    const expected = Object.fromEntries(HOSTILE_VALUES.map((v, i) => [`HOSTILE_${i}`, v]));
    const inv = baseInventory();
    // In the inventory a literal ${ is written $${ (a bare ${ is a variable reference).
    inv.cluster.env = Object.fromEntries(Object.entries(expected).map(([k, v]) => [k, v.replaceAll('${', () => '$${')]));
    const dsn = 'newapi:pa$$w0rd #`x` $(y)@tcp(10.0.0.5:3306)/new-api';
    const { inventory } = parse(inv, { ...FAKE_VARS, SQL_DSN: dsn });
    expect(inventory.cluster.env).toEqual(expected);
    const files = renderCluster(inventory, await loadTemplates(null, '/'));
    for (const n of files.nodes) {
      const read = parseEnv(n.env.content) as Record<string, string>;
      expect(read.SQL_DSN).toBe(dsn);
      for (const [k, v] of Object.entries(expected)) expect(read[k], k).toBe(v);
      expect(read.SESSION_SECRET).toBe(FAKE_VARS.SESSION_SECRET);
    }
  });
});

describe('${…} inside hostile values', () => {
  it('resolves ${HOME} from the lookup, never from the shell, and $${ stays literal', () => {
    const inv = baseInventory();
    inv.cluster.env = { A: '${HOME}', B: '$${HOME', C: '$HOME' };
    const { inventory } = parse(inv, { ...FAKE_VARS, HOME: '/home/from-lookup' });
    expect(inventory.cluster.env).toEqual({ A: '/home/from-lookup', B: '${HOME', C: '$HOME' });
  });
});

describe('values that cannot be carried are rejected at validation', () => {
  const QUOTE_AND_DOLLAR =
    "contains both a single quote (') and $ before a letter, _, $ or {: compose v2 expands such a $ unless the value is in single quotes, and single quotes cannot carry a single quote (older compose v2 keeps the backslash of \\')";
  const V1_VARIABLE = 'contains ${…}, which compose v1 replaces with a variable even inside quotes (a .env file has no escape for it)';
  it.each([
    ['a newline in cluster.env', (i: RawInventory) => (i.cluster.env = { X: 'a\nNODE_TYPE=master' }), 'cluster/env/X: contains a line break'],
    ['a carriage return in cluster.env', (i: RawInventory) => (i.cluster.env = { X: 'a\rb' }), 'cluster/env/X: contains a line break'],
    ['a single quote and a $NAME in cluster.env', (i: RawInventory) => (i.cluster.env = { X: "it's $HOME" }), `cluster/env/X: ${QUOTE_AND_DOLLAR}`],
    ['${…} in cluster.env (written $${)', (i: RawInventory) => (i.cluster.env = { X: '$${HOME}' }), `cluster/env/X: ${V1_VARIABLE}`],
    ['a newline in the DSN', (i: RawInventory) => (i.database.dsn = 'newapi@tcp(h:3306)/db\nNODE_TYPE=master'), 'database/dsn: contains a line break'],
    ['a single quote and a $NAME in the DSN', (i: RawInventory) => (i.database.dsn = "newapi:it's$x@tcp(h:3306)/db"), `database/dsn: ${QUOTE_AND_DOLLAR}`],
    ['a key that is not a name', (i: RawInventory) => (i.cluster.env = { 'X=1\nNODE_TYPE': 'slave' }), 'cluster/env/X=1\nNODE_TYPE: is not a valid environment variable name'],
  ])('%s', (_name, mutate, line) => {
    const inv = baseInventory();
    mutate(inv);
    expect(rejected(inv)).toEqual([line]);
  });

  it.each([
    ['SESSION_SECRET', 'secrets/sessionSecret'],
    ['CRYPTO_SECRET', 'secrets/cryptoSecret'],
    ['REDIS_CONN_STRING', 'redis/url'],
  ])('a newline, or a quote with a $NAME, in %s (from the secrets file)', (variable, path) => {
    expect(rejected(baseInventory(), { ...FAKE_VARS, [variable]: `${FAKE_VARS[variable]}\nNODE_TYPE=master` })).toContain(`${path}: contains a line break`);
    expect(rejected(baseInventory(), { ...FAKE_VARS, [variable]: `${FAKE_VARS[variable]}'$x` })).toContain(`${path}: ${QUOTE_AND_DOLLAR}`);
  });
});

describe('hostile node names and hosts are rejected', () => {
  const names = ['$(id)', '`id`', 'a;b', 'a b', '../x', 'a/b', 'A', '-x', 'x\ny', "'x'", '"x"', ''];
  it.each(names)('name %j', (name) => {
    const inv = baseInventory();
    inv.nodes[1].name = name;
    expect(rejected(inv)).toEqual(['nodes/1/name: should match [a-z0-9][a-z0-9-]*']);
  });

  const hosts = ['$(rm -rf /)', '`id`', 'a;b', 'a&&b', 'a|b', 'a b', 'a\nb', '"a"', "'a'", '-oProxyCommand=id', 'user@host', 'host:22', 'a/b', ''];
  it.each(hosts)('host %j', (host) => {
    const inv = baseInventory();
    inv.nodes[1].host = host;
    expect(rejected(inv)).toEqual(['nodes/1/host: should be a host name or an IP address']);
  });

  it.each(['$(id)', 'a;b', 'prod_1', 'Prod'])('cluster name %j (it names the container and the upstream)', (name) => {
    const inv = baseInventory();
    inv.cluster.name = name;
    expect(rejected(inv)).toEqual(['cluster/name: should match [a-z0-9][a-z0-9-]*']);
  });
});

describe('compose values are JSON-quoted', () => {
  it('so YAML-special names and images read back as the same strings', async () => {
    const inv = baseInventory();
    inv.cluster.name = 'null';
    inv.cluster.image = `registry.example.com:5000/calciumion/new-api:v0.9.20@sha256:${'0'.repeat(64)}`;
    inv.cluster.port = 8080;
    inv.nodes = [
      { name: 'true', host: '10.0.0.11', role: 'master' },
      { name: 'no', host: '10.0.0.12' },
      { name: '1e3', host: '10.0.0.13' },
      { name: '0x1f', host: '10.0.0.14' },
      { name: '010', host: '10.0.0.15' },
      { name: 'null', host: 'fe80::1' },
    ];
    const { inventory } = parse(inv);
    const files = renderCluster(inventory, await loadTemplates(null, '/'));
    for (const n of files.nodes) {
      const svc = (parseYaml(n.compose.content, { version: '1.1' }) as { services: Record<string, Record<string, unknown>> }).services['new-api']!;
      expect(svc.image).toBe(inventory.cluster.image);
      expect(svc.container_name).toBe('null-new-api');
      expect(svc.hostname).toBe(n.node.name);
      expect(svc.ports).toEqual(['8080:3000']);
    }
    // An IPv6 node is bracketed in the upstream.
    expect(files.balancer.content).toContain('    server [fe80::1]:8080 weight=1');
  });
});
