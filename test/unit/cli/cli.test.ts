/**
 * The CLI run in-process through main(), stdout and stderr captured. Every run also checks that
 * no secret value (the fake secrets, DSN and Redis passwords, and secrets `init` generated)
 * appears in either stream — including error paths where a secret would naturally show.
 */
import { mkdir, mkdtemp, readdir, readFile, rm, stat, writeFile } from 'node:fs/promises';
import { createServer, type Server } from 'node:http';
import type { AddressInfo } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { parseEnv } from 'node:util';
import { afterAll, afterEach, beforeAll, beforeEach, describe, expect, it, vi } from 'vitest';
import { main } from '../../../src/cli/main.js';
import { SECRETS_FILE } from '../../../src/inventory/load.js';
import { formatProblem, type Problem } from '../../../src/inventory/problems.js';
import { REDACTED } from '../../../src/ui/output.js';
import { baseInventory, dotenv, FAKE, FAKE_VARS, SECRET_VALUES, toYaml, writeInventoryDir, type RawInventory, type TempInventory } from '../../fixtures/inventory.js';

interface Run {
  code: number;
  stdout: string;
  stderr: string;
}

/** Secrets generated during a test (by init), checked in every later run too. */
let generated: string[] = [];

const text = (chunk: unknown): string => (typeof chunk === 'string' ? chunk : Buffer.from(chunk as Uint8Array).toString('utf8'));

/** Where init asks for New API's tags in these tests: a local stand-in for Docker Hub (set in describe('init')). */
let tagsUrl: string | undefined;

async function cli(args: string[], env: NodeJS.ProcessEnv = {}): Promise<Run> {
  const out: string[] = [];
  const err: string[] = [];
  const capture = (into: string[]) =>
    ((chunk: unknown, ...rest: unknown[]) => {
      into.push(text(chunk));
      const cb = rest.find((r) => typeof r === 'function') as (() => void) | undefined;
      cb?.();
      return true;
    }) as typeof process.stdout.write;
  const o = vi.spyOn(process.stdout, 'write').mockImplementation(capture(out));
  const e = vi.spyOn(process.stderr, 'write').mockImplementation(capture(err));
  let code: number;
  try {
    code = await main(['node', 'newapi-cluster', ...args], { NO_COLOR: '1', ...(tagsUrl ? { NEWAPI_CLUSTER_TAGS_URL: tagsUrl } : {}), ...env });
  } finally {
    o.mockRestore();
    e.mockRestore();
  }
  const run = { code, stdout: out.join(''), stderr: err.join('') };
  expectNoSecrets(run);
  return run;
}

function expectNoSecrets(run: Run): void {
  for (const secret of [...SECRET_VALUES, ...generated]) {
    expect(run.stdout, 'a secret reached stdout').not.toContain(secret);
    expect(run.stderr, 'a secret reached stderr').not.toContain(secret);
  }
}

let tmp: TempInventory | undefined;
const dirs: string[] = [];
async function tempDir(): Promise<string> {
  const d = await mkdtemp(join(tmpdir(), 'newapi-cluster-cli-'));
  dirs.push(d);
  return d;
}
async function inventoryDir(inv: RawInventory | string, opts?: Parameters<typeof writeInventoryDir>[1]): Promise<TempInventory> {
  tmp = await writeInventoryDir(inv, opts);
  dirs.push(tmp.dir);
  return tmp;
}
const modeOf = async (p: string) => (await stat(p)).mode & 0o777;

beforeEach(() => {
  generated = [];
});
afterEach(async () => {
  for (const d of dirs.splice(0)) await rm(d, { recursive: true, force: true });
  tmp = undefined;
});

describe('validate', () => {
  it('accepts a good inventory: exit 0 and the ✔ line', async () => {
    const t = await inventoryDir(baseInventory());
    const run = await cli(['validate', t.file]);
    expect(run).toEqual({ code: 0, stdout: `✔ ${t.file}: valid — cluster prod, 3 nodes, calciumion/new-api:v0.9.20\n`, stderr: '' });
  });

  it('takes the inventory from -i as well', async () => {
    const t = await inventoryDir(baseInventory());
    const run = await cli(['-i', t.file, 'validate']);
    expect(run.code).toBe(0);
    expect(run.stdout).toBe(`✔ ${t.file}: valid — cluster prod, 3 nodes, calciumion/new-api:v0.9.20\n`);
  });

  it('prints warnings, and still exits 0', async () => {
    const inv = baseInventory();
    inv.cluster.image = 'calciumion/new-api:latest';
    const t = await inventoryDir(inv);
    const run = await cli(['validate', t.file]);
    expect(run.code).toBe(0);
    expect(run.stdout).toBe(
      [
        `✔ ${t.file}: valid — cluster prod, 3 nodes, calciumion/new-api:latest`,
        '1 warning:',
        '  ! cluster/image: uses :latest, which New API re-points at every release, release candidates included',
        '      hint: name a version, e.g. calciumion/new-api:v0.9.20',
        '',
      ].join('\n'),
    );
  });

  it('--json reports ok, the node count and the warnings', async () => {
    const t = await inventoryDir(baseInventory(), { secretsMode: 0o644 });
    const run = await cli(['--json', 'validate', t.file]);
    expect(run.code).toBe(0);
    expect(JSON.parse(run.stdout)).toEqual({
      ok: true,
      file: t.file,
      nodes: 3,
      warnings: [{ severity: 'warning', path: SECRETS_FILE, message: 'is readable by others (mode 0644)', hint: `chmod 600 ${t.secretsFile}` }],
    });
  });

  it('rejects a bad inventory: exit 2, every problem on stderr with its hint', async () => {
    const inv = baseInventory();
    inv.cluster.prot = 3000;
    delete inv.nodes[2].host;
    const t = await inventoryDir(inv);
    const run = await cli(['validate', t.file]);
    expect(run.code).toBe(2);
    expect(run.stdout).toBe('');
    expect(run.stderr).toBe(
      [
        `✖ ${t.file}: 2 problems`,
        '  ✖ cluster/prot: unknown key',
        '      hint: did you mean "port"?',
        '  ✖ nodes/2/host: required',
        '  hint: fix the inventory and run newapi-cluster validate again',
        '',
      ].join('\n'),
    );
  });

  it('--json gives the problems on stdout', async () => {
    const inv = baseInventory();
    inv.nodes[1].weight = 0;
    const t = await inventoryDir(inv);
    const run = await cli(['--json', 'validate', t.file]);
    expect(run.code).toBe(2);
    expect(JSON.parse(run.stdout)).toEqual({
      ok: false,
      error: {
        message: `${t.file}: 1 problem`,
        hint: 'fix the inventory and run newapi-cluster validate again',
        exitCode: 2,
        problems: [{ severity: 'error', path: 'nodes/1/weight', message: 'should be at least 1 weight unit', hint: 'write a positive whole number' }],
      },
    });
    expect(run.stderr).toBe('');
  });

  it('says what to do when the file does not exist', async () => {
    const d = await tempDir();
    const run = await cli(['validate', join(d, 'inventory.yaml')]);
    expect(run.code).toBe(2);
    expect(run.stderr).toBe(`✖ ${join(d, 'inventory.yaml')}: no such file\n  hint: run newapi-cluster init to write one, or pass -i PATH\n`);
  });
});

describe('usage errors', () => {
  it('an unknown command exits 2', async () => {
    const run = await cli(['frobnicate']);
    expect(run.code).toBe(2);
    expect(run.stderr).toContain("error: unknown command 'frobnicate'");
    expect(run.stdout).toBe('');
  });

  it('an unknown flag exits 2', async () => {
    const run = await cli(['validate', '--bogus']);
    expect(run.code).toBe(2);
    expect(run.stderr).toContain("error: unknown option '--bogus'");
  });

  it('an unknown global flag exits 2', async () => {
    const run = await cli(['--colour', 'validate']);
    expect(run.code).toBe(2);
    expect(run.stderr).toContain("unknown option '--colour'");
  });

  it('--version prints the version and exits 0', async () => {
    const run = await cli(['--version']);
    expect(run).toEqual({ code: 0, stdout: '0.1.0\n', stderr: '' });
  });

  it('a bad --nodes exits 2 with a hint', async () => {
    const d = await tempDir();
    const run = await cli(['--yes', 'init', '--nodes', '0', '--output', join(d, 'inventory.yaml')]);
    expect(run.code).toBe(2);
    expect(run.stderr).toBe('✖ --nodes: "0" is not a number of nodes\n  hint: e.g. --nodes 3 (one master and two slaves)\n');
    expect(await readdir(d)).toEqual([]);
  });
});

describe('render --out', () => {
  it('writes .env files 0600 and the rest 0644, and names them on stdout', async () => {
    const t = await inventoryDir(baseInventory());
    const out = join(t.dir, 'rendered');
    const run = await cli(['render', t.file, '--out', out]);
    expect(run.code).toBe(0);
    expect(run.stderr).toBe('');
    for (const node of ['master', 'slave-1', 'slave-2']) {
      expect(await modeOf(join(out, 'nodes', node, '.env'))).toBe(0o600);
      expect(await modeOf(join(out, 'nodes', node, 'docker-compose.yml'))).toBe(0o644);
      expect(run.stdout).toContain(`🔒 ${join(out, 'nodes', node, '.env')}\n`);
      expect(run.stdout).toContain(`   ${join(out, 'nodes', node, 'docker-compose.yml')}\n`);
    }
    expect(await modeOf(join(out, 'balancer', 'new-api.conf'))).toBe(0o644);
    expect(run.stdout).toContain(`✔ 7 files in ${out}/ (.env files are mode 0600: they hold secrets)\n`);
    // The secrets are in the files, and only there.
    const env = parseEnv(await readFile(join(out, 'nodes', 'slave-1', '.env'), 'utf8'));
    expect(env).toMatchObject({ SESSION_SECRET: FAKE.sessionSecret, SQL_DSN: FAKE_VARS.SQL_DSN, NODE_TYPE: 'slave' });
    expect(await readFile(join(out, 'nodes', 'slave-1', 'docker-compose.yml'), 'utf8')).not.toContain(FAKE.sessionSecret);
  });

  it('tightens an existing world-readable .env to 0600', async () => {
    const t = await inventoryDir(baseInventory());
    const out = join(t.dir, 'rendered');
    await mkdir(join(out, 'nodes', 'master'), { recursive: true });
    await writeFile(join(out, 'nodes', 'master', '.env'), 'old\n', { mode: 0o644 });
    expect((await cli(['render', t.file, '--out', out])).code).toBe(0);
    expect(await modeOf(join(out, 'nodes', 'master', '.env'))).toBe(0o600);
  });

  it('--json lists the files with their modes', async () => {
    const t = await inventoryDir(baseInventory());
    const out = join(t.dir, 'r');
    const run = await cli(['--json', 'render', t.file, '--out', out]);
    expect(run.code).toBe(0);
    const json = JSON.parse(run.stdout) as { ok: boolean; files: { path: string; mode: number }[] };
    expect(json.ok).toBe(true);
    expect(json.files).toContainEqual({ path: join(out, 'nodes', 'master', '.env'), mode: 0o600 });
    expect(json.files).toContainEqual({ path: join(out, 'balancer', 'new-api.conf'), mode: 0o644 });
    expect(json.files).toHaveLength(7);
  });

  it('redacts a secret that a template error would print', async () => {
    const inv = baseInventory();
    inv.templates = 'templates';
    const t = await inventoryDir(inv);
    await mkdir(join(t.dir, 'templates'));
    await writeFile(join(t.dir, 'templates', 'env.hbs'), 'SESSION_SECRET={{secrets.sessionSecret.first}}\n');
    const run = await cli(['render', t.file, '--out', join(t.dir, 'out')]);
    expect(run.code).toBe(2);
    // The template engine's message quotes the value it looked into: the session secret.
    expect(run.stderr).toMatch(/^✖ templates: env failed to render: .*/);
    expect(run.stderr.split('\n')[0]).toContain(REDACTED);
  });
});

describe('init', () => {
  const hostsFlags = ['--hosts', '10.0.0.11,10.0.0.12,10.0.0.13', '--balancer', '10.0.0.10'];
  let tags: Server;

  beforeAll(async () => {
    // Docker Hub's answer, shortened: the newest release is v0.9.25 (not the release candidate, not latest).
    tags = createServer((_req, res) => {
      res.setHeader('content-type', 'application/json');
      res.end(JSON.stringify({ results: ['latest', 'v0.10.0-rc.1', 'v0.9.25', 'v0.9.20', 'nightly', 'v0.9.3'].map((name) => ({ name })) }));
    });
    await new Promise<void>((r) => tags.listen(0, '127.0.0.1', () => r()));
    tagsUrl = `http://127.0.0.1:${(tags.address() as AddressInfo).port}/v2/repositories/calciumion/new-api/tags`;
  });

  afterAll(async () => {
    tagsUrl = undefined;
    await new Promise((r) => tags.close(r));
  });

  it('offers the newest release the registry lists; without an answer, --yes needs --image (exit 2)', async () => {
    const d = await tempDir();
    const file = join(d, 'inventory.yaml');
    const run = await cli(['init', '--yes', ...hostsFlags, '--output', file]);
    expect(run.code, run.stderr).toBe(0);
    expect(await readFile(file, 'utf8')).toMatch(/^ {2}image: calciumion\/new-api:v0\.9\.25 /m);
    await readSecrets(d, run);

    const d2 = await tempDir();
    const offline = await cli(['init', '--yes', ...hostsFlags, '--output', join(d2, 'inventory.yaml')], { NEWAPI_CLUSTER_TAGS_URL: 'http://127.0.0.1:9/unreachable' });
    expect(offline.code).toBe(2);
    expect(offline.stderr).toBe('✖ --image: the registry could not be asked for the newest New API version\n  hint: name the image and its version: --image calciumion/new-api:vX.Y.Z\n');
    const named = await cli(['init', '--yes', '--image', 'calciumion/new-api:v0.9.21', ...hostsFlags, '--output', join(d2, 'inventory.yaml')], { NEWAPI_CLUSTER_TAGS_URL: 'http://127.0.0.1:9/unreachable' });
    expect(named.code, named.stderr).toBe(0);
    await readSecrets(d2, named);
  });

  /** Reads the secrets init generated; checks that the runs so far did not show them. */
  async function readSecrets(dir: string, ...runs: Run[]): Promise<Record<string, string>> {
    const values = parseEnv(await readFile(join(dir, SECRETS_FILE), 'utf8')) as Record<string, string>;
    generated.push(...[values.SESSION_SECRET, values.CRYPTO_SECRET].filter((v): v is string => v !== undefined));
    for (const run of runs) expectNoSecrets(run);
    return values;
  }

  it('--yes writes the inventory and a 0600 secrets file with strong secrets, and git-ignores it', async () => {
    const d = await tempDir();
    const file = join(d, 'inventory.yaml');
    const run = await cli(['init', '--yes', ...hostsFlags, '--output', file]);
    expect(run.code).toBe(0);
    expect(run.stderr).toBe('');
    expect(run.stdout).toMatch(/^✔ wrote .*inventory\.yaml\n✔ wrote .*\.newapi-cluster\.env \(mode 0600\) with new SESSION_SECRET and CRYPTO_SECRET\n✔ added \.newapi-cluster\.env to \.gitignore\nnext: set SQL_DSN and REDIS_CONN_STRING in .*\.newapi-cluster\.env, then run newapi-cluster validate\n$/);
    expect(await modeOf(join(d, SECRETS_FILE))).toBe(0o600);
    expect(await modeOf(file)).toBe(0o644);
    const secrets = await readSecrets(d, run);
    expect(secrets.SESSION_SECRET).toMatch(/^[A-Za-z0-9]{48}$/);
    expect(secrets.CRYPTO_SECRET).toMatch(/^[A-Za-z0-9]{48}$/);
    expect(secrets.SESSION_SECRET).not.toBe(secrets.CRYPTO_SECRET);
    expect(await readFile(join(d, '.gitignore'), 'utf8')).toBe(`${SECRETS_FILE}\n`);
    // Secrets never go into the inventory itself.
    const inventory = await readFile(file, 'utf8');
    expect(inventory).not.toContain(secrets.SESSION_SECRET);
    expect(inventory).toContain('  - { name: slave-2, host: 10.0.0.13, role: slave, weight: 1 }');

    // What init wrote is a valid inventory once the connection strings are set.
    const check = await cli(['validate', file], { SQL_DSN: FAKE_VARS.SQL_DSN, REDIS_CONN_STRING: FAKE_VARS.REDIS_CONN_STRING });
    expect(check.code).toBe(0);
    expect(check.stdout).toBe(`✔ ${file}: valid — cluster prod, 3 nodes, calciumion/new-api:v0.9.25\n`);
  });

  it('puts SQL_DSN and REDIS_CONN_STRING from the environment in the secrets file, not on screen', async () => {
    const d = await tempDir();
    const run = await cli(['init', '--yes', ...hostsFlags, '--output', join(d, 'inventory.yaml')], {
      SQL_DSN: FAKE_VARS.SQL_DSN,
      REDIS_CONN_STRING: FAKE_VARS.REDIS_CONN_STRING,
    });
    expect(run.code).toBe(0);
    expect(run.stdout).toContain('next: newapi-cluster validate, then newapi-cluster check\n');
    const secrets = await readSecrets(d, run);
    expect(secrets.SQL_DSN).toBe(FAKE_VARS.SQL_DSN);
    expect(secrets.REDIS_CONN_STRING).toBe(FAKE_VARS.REDIS_CONN_STRING);
  });

  it('refuses to overwrite without --force: exit 2, file unchanged', async () => {
    const d = await tempDir();
    const file = join(d, 'inventory.yaml');
    const first = await cli(['init', '--yes', ...hostsFlags, '--output', file]);
    expect(first.code).toBe(0);
    await readSecrets(d, first);
    const before = await readFile(file, 'utf8');
    const run = await cli(['init', '--yes', '--name', 'other', ...hostsFlags, '--output', file]);
    expect(run.code).toBe(2);
    expect(run.stdout).toBe('');
    expect(run.stderr).toBe(`✖ ${file} already exists; nothing was written\n  hint: pass --force to overwrite it, or choose another file with --output\n`);
    expect(await readFile(file, 'utf8')).toBe(before);
  });

  it('with --force rewrites the inventory but keeps the secrets file, and adds to .gitignore once', async () => {
    const d = await tempDir();
    const file = join(d, 'inventory.yaml');
    const first = await cli(['init', '--yes', ...hostsFlags, '--output', file]);
    expect(first.code).toBe(0);
    const secretsBefore = await readFile(join(d, SECRETS_FILE), 'utf8');
    await readSecrets(d, first);
    const run = await cli(['init', '--yes', '--force', '--name', 'other', ...hostsFlags, '--output', file]);
    expect(run.code).toBe(0);
    expect(run.stdout).toMatch(/✔ kept the existing .*\.newapi-cluster\.env \(its secrets are what the cluster uses\)\n/);
    expect(run.stdout).not.toContain('.gitignore');
    expect(await readFile(file, 'utf8')).toContain('  name: other\n');
    expect(await readFile(join(d, SECRETS_FILE), 'utf8')).toBe(secretsBefore);
    expect(await readFile(join(d, '.gitignore'), 'utf8')).toBe(`${SECRETS_FILE}\n`);
  });

  it('never overwrites an existing secrets file, even for a new inventory', async () => {
    const d = await tempDir();
    const existing = dotenv({ SESSION_SECRET: FAKE.sessionSecret, CRYPTO_SECRET: FAKE.cryptoSecret });
    await writeFile(join(d, SECRETS_FILE), existing, { mode: 0o600 });
    const run = await cli(['init', '--yes', ...hostsFlags, '--output', join(d, 'inventory.yaml')]);
    expect(run.code).toBe(0);
    expect(run.stdout).toContain('kept the existing');
    expect(await readFile(join(d, SECRETS_FILE), 'utf8')).toBe(existing);
  });

  it('appends to an existing .gitignore that lacks a final newline, and leaves one that has the entry', async () => {
    const d = await tempDir();
    await writeFile(join(d, '.gitignore'), 'node_modules');
    const first = await cli(['init', '--yes', ...hostsFlags, '--output', join(d, 'inventory.yaml')]);
    expect(first.code).toBe(0);
    await readSecrets(d, first);
    expect(await readFile(join(d, '.gitignore'), 'utf8')).toBe(`node_modules\n${SECRETS_FILE}\n`);

    const d2 = await tempDir();
    await writeFile(join(d2, '.gitignore'), `/${SECRETS_FILE}\n`);
    const run = await cli(['init', '--yes', ...hostsFlags, '--output', join(d2, 'inventory.yaml')]);
    await readSecrets(d2, run);
    expect(run.stdout).not.toContain('.gitignore');
    expect(await readFile(join(d2, '.gitignore'), 'utf8')).toBe(`/${SECRETS_FILE}\n`);
  });

  it('--json reports what it wrote', async () => {
    const d = await tempDir();
    const run = await cli(['--json', '--yes', 'init', ...hostsFlags, '--output', join(d, 'inventory.yaml')]);
    await readSecrets(d, run);
    expect(run.code).toBe(0);
    expect(JSON.parse(run.stdout)).toMatchObject({ ok: true, secretsKept: false, gitignore: true });
  });

  it('with no terminal and no --yes: exit 2, nothing written', async () => {
    const d = await tempDir();
    const run = await cli(['init', ...hostsFlags, '--output', join(d, 'inventory.yaml')], { CI: '1' });
    expect(run.code).toBe(2);
    expect(run.stderr).toBe('✖ init needs a terminal to ask its questions\n  hint: pass --yes with flags (--name, --hosts, --balancer …) to run without prompts\n');
    expect(await readdir(d)).toEqual([]);
  });

  it('refuses a host that is not a host name, before writing anything', async () => {
    const d = await tempDir();
    const run = await cli(['init', '--yes', '--hosts', '10.0.0.11,$(reboot)', '--output', join(d, 'inventory.yaml')]);
    expect(run.code).toBe(2);
    expect(run.stderr).toBe('✖ --hosts: "$(reboot)" is not a host name or an IP address\n  hint: e.g. --hosts 10.0.0.11,10.0.0.12\n');
    expect(await readdir(d)).toEqual([]);
  });

  it('refuses --hosts and --nodes that disagree', async () => {
    const d = await tempDir();
    const run = await cli(['init', '--yes', '--nodes', '2', ...hostsFlags, '--output', join(d, 'inventory.yaml')]);
    expect(run.code).toBe(2);
    expect(run.stderr).toBe('✖ --hosts names 3 hosts but --nodes is 2\n  hint: give one address per node, master first\n');
  });
});

describe('secrets never reach the output', () => {
  it('the check itself catches a secret in either stream', () => {
    for (const secret of SECRET_VALUES) {
      expect(() => expectNoSecrets({ code: 0, stdout: `x ${secret} y`, stderr: '' })).toThrow('a secret reached stdout');
      expect(() => expectNoSecrets({ code: 0, stdout: '', stderr: secret })).toThrow('a secret reached stderr');
    }
  });

  it('a DSN with a bad port: the message quotes no part of the DSN', async () => {
    const t = await inventoryDir(baseInventory(), {
      secrets: { ...FAKE_VARS, SQL_DSN: `newapi:${FAKE.dbPassword}@tcp(10.0.0.5:99999)/new-api` },
    });
    for (const args of [['validate', t.file], ['--json', 'validate', t.file], ['--verbose', 'validate', t.file], ['render', t.file, '--out', join(t.dir, 'out')]]) {
      const run = await cli(args);
      expect(run.code).toBe(2);
      const shown = args[0] === '--json' ? (JSON.parse(run.stdout).error.problems as Problem[]).map(formatProblem).join('\n') : run.stderr;
      expect(shown).toContain('database/dsn: the port inside tcp(…) is not a port number from 1 to 65535');
    }
  });

  it('a Redis URL with a bad database, and a postgres DSN that does not parse', async () => {
    const t = await inventoryDir(baseInventory(), {
      secrets: {
        ...FAKE_VARS,
        REDIS_CONN_STRING: `redis://default:${FAKE.redisPassword}@10.0.0.6:6379/zero`,
        SQL_DSN: `postgres://newapi:${FAKE.dbPassword}@10.0.0.5:5432x/new-api`,
      },
    });
    const run = await cli(['validate', t.file]);
    expect(run.code).toBe(2);
    expect(run.stderr).toContain('  ✖ redis/url: the Redis database (after host:port/) is not a number\n');
    expect(run.stderr).toContain('  ✖ database/dsn: expected postgres://user:password@host:5432/database\n');
  });

  it('secrets with a quote or a line break are refused without being shown', async () => {
    const t = await inventoryDir(baseInventory());
    // Double quotes: node's parseEnv reads the single quote inside literally.
    const { SESSION_SECRET: _omit, ...rest } = FAKE_VARS;
    await writeFile(t.secretsFile, `${dotenv(rest)}SESSION_SECRET="${FAKE.sessionSecret}'$x"\n`);
    const quote = await cli(['validate', t.file]);
    expect(quote.code).toBe(2);
    expect(quote.stderr).toContain(
      "  ✖ secrets/sessionSecret: contains both a single quote (') and $ before a letter, _, $ or {: compose v2 expands such a $ unless the value is in single quotes, and single quotes cannot carry a single quote (older compose v2 keeps the backslash of \\')\n",
    );
    // In double quotes parseEnv turns \n into a line break.
    await writeFile(t.secretsFile, `${dotenv(rest)}SESSION_SECRET="${FAKE.sessionSecret}\\nNODE_TYPE=master"\n`);
    const lineBreak = await cli(['validate', t.file]);
    expect(lineBreak.code).toBe(2);
    expect(lineBreak.stderr).toContain('  ✖ secrets/sessionSecret: contains a line break\n');
  });

  it('a YAML syntax error in an inventory that holds secrets in clear', async () => {
    const inv = `cluster:\n  name: prod\n  image: calciumion/new-api:v0.9.20\nsecrets:\n  sessionSecret: ${FAKE.sessionSecret}\n  cryptoSecret: "${FAKE.cryptoSecret}\ndatabase: { dsn: "${FAKE_VARS.SQL_DSN}" }\n`;
    const t = await inventoryDir(inv, { secrets: null });
    for (const args of [['validate', t.file], ['--json', 'validate', t.file]]) {
      const run = await cli(args);
      expect(run.code).toBe(2);
      expect(run.stdout + run.stderr).toContain('line ');
    }
  });

  it('a valid inventory with secrets in clear: warnings without the values', async () => {
    const inv = baseInventory();
    inv.secrets = { sessionSecret: FAKE.sessionSecret, cryptoSecret: FAKE.cryptoSecret };
    inv.database.dsn = FAKE_VARS.SQL_DSN;
    inv.redis.url = FAKE_VARS.REDIS_CONN_STRING;
    const t = await inventoryDir(inv, { secrets: null });
    const run = await cli(['validate', t.file]);
    expect(run.code).toBe(0);
    expect(run.stdout).toContain('4 warnings:\n');
    expect(run.stdout).toContain('  ! secrets/sessionSecret: holds a secret written in clear in the inventory\n');
    const json = await cli(['--json', 'validate', t.file]);
    expect(JSON.parse(json.stdout).warnings).toHaveLength(4);
  });

  it('an unset variable next to set ones', async () => {
    const { CRYPTO_SECRET: _omit, ...rest } = FAKE_VARS;
    const t = await inventoryDir(baseInventory(), { secrets: rest });
    const run = await cli(['--verbose', 'validate', t.file]);
    expect(run.code).toBe(2);
    expect(run.stderr).toContain('  ✖ secrets/cryptoSecret: ${CRYPTO_SECRET} is not set\n      hint: export CRYPTO_SECRET=… or add CRYPTO_SECRET=… to .newapi-cluster.env\n');
  });
});
