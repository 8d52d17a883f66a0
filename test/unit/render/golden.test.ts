/**
 * The files each example inventory renders to, compared byte for byte with test/golden/.
 * After an intended change to a template, regenerate them and read the diff:
 *
 *   UPDATE_GOLDEN=1 npx vitest run --project unit test/unit/render/golden.test.ts
 */
import { existsSync, mkdirSync, readdirSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { mkdir, mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { dirname, join, relative } from 'node:path';
import { fileURLToPath } from 'node:url';
import { parseEnv } from 'node:util';
import { afterEach, describe, expect, it } from 'vitest';
import { parse as parseYaml } from 'yaml';
import { InputError } from '../../../src/errors.js';
import { parseInventory } from '../../../src/inventory/load.js';
import type { Inventory } from '../../../src/inventory/schema.js';
import { renderCluster, type ClusterFiles } from '../../../src/render/render.js';
import { loadTemplates } from '../../../src/render/templates.js';

/** Fixed, obviously fake values: changing one changes every golden .env. */
const GOLDEN_VARS: Record<string, string> = {
  SQL_DSN: 'newapi:golden-db-password@tcp(10.0.0.5:3306)/new-api?charset=utf8mb4&parseTime=true',
  LOG_SQL_DSN: 'postgres://newapi:golden-log-db-password@10.0.0.7:5432/new-api-log',
  REDIS_CONN_STRING: 'redis://default:golden-redis-password@10.0.0.6:6379/0',
  SESSION_SECRET: 'golden-session-secret-0123456789abcdefghij',
  CRYPTO_SECRET: 'golden-crypto-secret-0123456789abcdefghijk',
};

const root = fileURLToPath(new URL('../../../', import.meta.url));
const goldenRoot = join(root, 'test/golden');
const EXAMPLES = ['minimal', 'full', 'lab'] as const;
const UPDATE = process.env.UPDATE_GOLDEN === '1';

/** Every variable New API's server reads that the bundled env template may set (SPEC §1). */
const SERVER_VARIABLES = [
  'SQL_DSN',
  'LOG_SQL_DSN',
  'REDIS_CONN_STRING',
  'REDIS_POOL_SIZE',
  'SESSION_SECRET',
  'CRYPTO_SECRET',
  'NODE_TYPE',
  'SYNC_FREQUENCY',
  'BATCH_UPDATE_ENABLED',
  'BATCH_UPDATE_INTERVAL',
  'TZ',
  'FRONTEND_BASE_URL',
];

function loadExample(name: string, vars: Record<string, string> = GOLDEN_VARS): Inventory {
  const path = join(root, 'examples', name, 'inventory.yaml');
  return parseInventory(readFileSync(path, 'utf8'), { file: path, path, lookup: (v) => vars[v] }).inventory;
}

async function renderExample(name: string): Promise<{ inv: Inventory; files: ClusterFiles }> {
  const inv = loadExample(name);
  return { inv, files: renderCluster(inv, await loadTemplates(null, join(root, 'examples', name))) };
}

/** The golden layout: nodes/<node>/docker-compose.yml, nodes/<node>/.env, balancer.conf. */
function goldenFiles(files: ClusterFiles): Map<string, string> {
  const out = new Map<string, string>();
  for (const n of files.nodes) {
    out.set(`nodes/${n.node.name}/docker-compose.yml`, n.compose.content);
    out.set(`nodes/${n.node.name}/.env`, n.env.content);
  }
  out.set('balancer.conf', files.balancer.content);
  return out;
}

function listFiles(dir: string): string[] {
  if (!existsSync(dir)) return [];
  return readdirSync(dir, { recursive: true, withFileTypes: true })
    .filter((d) => d.isFile())
    .map((d) => relative(dir, join(d.parentPath, d.name)))
    .sort();
}

const envOf = (content: string) => parseEnv(content) as Record<string, string>;
const envKeys = (content: string) =>
  content
    .split('\n')
    .filter((l) => l !== '' && !l.startsWith('#'))
    .map((l) => l.slice(0, l.indexOf('=')));

describe.each(EXAMPLES)('golden files of examples/%s', (example) => {
  it('render byte for byte as committed in test/golden', async () => {
    const { files } = await renderExample(example);
    const expected = goldenFiles(files);
    const dir = join(goldenRoot, example);
    if (UPDATE) {
      rmSync(dir, { recursive: true, force: true });
      for (const [rel, content] of expected) {
        mkdirSync(dirname(join(dir, rel)), { recursive: true });
        writeFileSync(join(dir, rel), content);
      }
    }
    expect(listFiles(dir), `test/golden/${example} lists other files; run UPDATE_GOLDEN=1`).toEqual([...expected.keys()].sort());
    for (const [rel, content] of expected) {
      expect(readFileSync(join(dir, rel), 'utf8'), `test/golden/${example}/${rel} differs; review, then UPDATE_GOLDEN=1`).toBe(content);
    }
  });

  it('sets NODE_TYPE=slave on slaves only, and only variables New API reads', async () => {
    const { inv, files } = await renderExample(example);
    const allowed = new Set([...SERVER_VARIABLES, ...Object.keys(inv.cluster.env)]);
    for (const n of files.nodes) {
      const env = envOf(n.env.content);
      expect(env.NODE_TYPE, n.node.name).toBe(n.node.role === 'slave' ? 'slave' : undefined);
      const keys = envKeys(n.env.content);
      expect(keys.filter((k) => !allowed.has(k)), n.node.name).toEqual([]);
      expect(new Set(keys).size, 'no key twice').toBe(keys.length);
      for (const ignored of ['REDIS_PASSWORD', 'REDIS_MASTER_NAME', 'REDIS_CONN_POOL_SIZE', 'PORT']) expect(keys).not.toContain(ignored);
    }
    expect(files.nodes.filter((n) => n.node.role === 'master')).toHaveLength(1);
  });

  it('carries the resolved values, identical on every node', async () => {
    const { inv, files } = await renderExample(example);
    for (const n of files.nodes) {
      const env = envOf(n.env.content);
      expect(env.SQL_DSN).toBe(GOLDEN_VARS.SQL_DSN);
      expect(env.REDIS_CONN_STRING).toBe(GOLDEN_VARS.REDIS_CONN_STRING);
      expect(env.SESSION_SECRET).toBe(GOLDEN_VARS.SESSION_SECRET);
      expect(env.CRYPTO_SECRET).toBe(GOLDEN_VARS.CRYPTO_SECRET);
      expect(env.REDIS_POOL_SIZE).toBe(String(inv.redis.poolSize));
      expect(env.BATCH_UPDATE_INTERVAL).toBe(String(inv.cluster.batchUpdate.interval));
      // LOG_SQL_DSN is rendered only when the inventory sets database.logDsn (the variable
      // exists in every run here).
      expect(env.LOG_SQL_DSN).toBe(inv.database.logDsn === undefined ? undefined : GOLDEN_VARS.LOG_SQL_DSN);
      expect(env.FRONTEND_BASE_URL).toBe(inv.cluster.frontendBaseUrl);
      for (const [k, v] of Object.entries(inv.cluster.env)) expect(env[k]).toBe(v);
    }
  });

  it('gives a compose file that publishes the port and names the image and node', async () => {
    const { inv, files } = await renderExample(example);
    for (const n of files.nodes) {
      const doc = parseYaml(n.compose.content) as { services: Record<string, Record<string, unknown>> };
      const svc = doc.services['new-api']!;
      expect(svc.image).toBe(inv.cluster.image);
      expect(svc.container_name).toBe(`${inv.cluster.name}-new-api`);
      expect(svc.hostname).toBe(n.node.name);
      expect(svc.ports).toEqual([`${inv.cluster.port}:3000`]);
      expect(svc.env_file).toEqual(['.env']);
      expect(n.compose).toMatchObject({ path: `${inv.cluster.dir}/docker-compose.yml`, mode: 0o644, secret: false });
      expect(n.env).toMatchObject({ path: `${inv.cluster.dir}/.env`, mode: 0o600, secret: true });
      // Secrets live in .env only.
      for (const v of Object.values(GOLDEN_VARS)) expect(n.compose.content).not.toContain(v);
    }
  });

  it('gives a balancer with every node at its weight, streaming unbuffered', async () => {
    const { inv, files } = await renderExample(example);
    const conf = files.balancer.content;
    expect(files.balancer).toMatchObject({ path: inv.loadBalancer.configPath, mode: 0o644, secret: false });
    for (const n of inv.nodes) {
      expect(conf).toContain(`    server ${n.host}:${inv.cluster.port} weight=${n.weight} max_fails=3 fail_timeout=2s;  # ${n.name} (${n.role})\n`);
    }
    expect(conf).toContain('    proxy_buffering off;\n');
    expect(conf).toContain('    proxy_read_timeout 600s;\n');
    expect(conf).toContain(`    listen ${inv.loadBalancer.listen};\n    server_name ${inv.loadBalancer.serverName};\n`);
    expect(conf).not.toContain(' down');
    for (const v of Object.values(GOLDEN_VARS)) expect(conf).not.toContain(v);
  });
});

describe('FRONTEND_BASE_URL and the web routes', () => {
  it('sends web routes to the master only when it is set (examples/full)', async () => {
    const { files } = await renderExample('full');
    const conf = files.balancer.content;
    const web = /upstream newapi_prod_web \{\n([\s\S]*?)\n\}/.exec(conf)?.[1];
    expect(web).toBe('    server 10.0.0.11:3000;  # master');
    expect(conf).toContain('    location ~ ^/(api|v1|v1beta|dashboard|mj|mj-fast|mj-turbo|mj-relax|suno|pg|kling|jimeng)(/|$) {\n        proxy_pass http://newapi_prod;\n    }');
    expect(conf).toContain('    location / {\n        proxy_pass http://newapi_prod_web;\n    }');
  });

  it('sends everything to every node when it is not set (examples/minimal)', async () => {
    const { files } = await renderExample('minimal');
    const conf = files.balancer.content;
    expect(conf).not.toContain('_web');
    expect(conf).not.toContain('location ~');
    expect(conf).toContain('    location / {\n        proxy_pass http://newapi_prod;\n    }');
  });
});

describe('render options', () => {
  it('marks drained nodes down and leaves excluded nodes out', async () => {
    const inv = loadExample('full');
    const files = renderCluster(inv, await loadTemplates(null, root), { drained: new Set(['slave-1']), excluded: new Set(['slave-2']) });
    const servers = files.balancer.content.split('\n').filter((l) => l.trimStart().startsWith('server 10.'));
    expect(servers).toEqual([
      '    server 10.0.0.11:3000 weight=3 max_fails=3 fail_timeout=2s;  # master (master)',
      '    server 10.0.0.12:3000 weight=5 max_fails=3 fail_timeout=2s down;  # slave-1 (slave), drained',
      '    server 10.0.1.14:3000 weight=5 max_fails=3 fail_timeout=2s;  # slave-3 (slave)',
      '    server 10.0.0.11:3000;  # master',
    ]);
    // Node files are still rendered for every node.
    expect(files.nodes.map((n) => n.node.name)).toEqual(['master', 'slave-1', 'slave-2', 'slave-3']);
  });

  it('marks a drained master down in the web upstream too', async () => {
    const inv = loadExample('full');
    const files = renderCluster(inv, await loadTemplates(null, root), { drained: new Set(['master']) });
    expect(files.balancer.content).toContain('    server 10.0.0.11:3000 weight=3 max_fails=3 fail_timeout=2s down;  # master (master), drained\n');
    expect(files.balancer.content).toContain('    server 10.0.0.11:3000 down;  # master\n');
  });

  it('renders a per-node image mid-upgrade', async () => {
    const inv = loadExample('minimal');
    const files = renderCluster(inv, await loadTemplates(null, root), {
      imageOf: (n) => (n.name === 'slave-1' ? 'calciumion/new-api:v0.9.21' : inv.cluster.image),
    });
    const images = files.nodes.map((n) => (parseYaml(n.compose.content) as { services: { 'new-api': { image: string } } }).services['new-api'].image);
    expect(images).toEqual(['calciumion/new-api:v0.9.20', 'calciumion/new-api:v0.9.21', 'calciumion/new-api:v0.9.20']);
  });
});

describe('determinism', () => {
  it('renders byte-identical files twice over', async () => {
    const a = await renderExample('full');
    const b = await renderExample('full');
    expect(goldenFiles(b.files)).toEqual(goldenFiles(a.files));
  });

  it('sorts cluster.env keys, whatever their order in the inventory', async () => {
    const templates = await loadTemplates(null, root);
    const withEnv = (env: Record<string, string>): string => {
      const inv = loadExample('minimal');
      return renderCluster({ ...inv, cluster: { ...inv.cluster, env } }, templates).nodes[0]!.env.content;
    };
    const forward = withEnv({ ZED: '1', ALPHA: '2', MIDDLE: '3' });
    const backward = withEnv({ MIDDLE: '3', ALPHA: '2', ZED: '1' });
    expect(forward).toBe(backward);
    expect(envKeys(forward).slice(-3)).toEqual(['ALPHA', 'MIDDLE', 'ZED']);
  });
});

describe('templates: overrides', () => {
  let dir: string | undefined;
  afterEach(async () => {
    if (dir) await rm(dir, { recursive: true, force: true });
    dir = undefined;
  });

  async function withOverride(files: Record<string, string>): Promise<string> {
    dir = await mkdtemp(join(tmpdir(), 'newapi-cluster-templates-'));
    await mkdir(join(dir, 'templates'));
    for (const [name, text] of Object.entries(files)) await writeFile(join(dir, 'templates', name), text);
    return dir;
  }

  it('replaces only the overridden file (relative and absolute folder)', async () => {
    const base = await withOverride({ 'env.hbs': 'CUSTOM_NODE={{node.name}}\n{{#if isSlave}}NODE_TYPE=slave\n{{/if}}' });
    const inv = loadExample('minimal');
    const bundled = renderCluster(inv, await loadTemplates(null, root));
    for (const folder of ['templates', join(base, 'templates')]) {
      const files = renderCluster(inv, await loadTemplates(folder, base));
      expect(files.nodes.map((n) => n.env.content)).toEqual(['CUSTOM_NODE=master\n', 'CUSTOM_NODE=slave-1\nNODE_TYPE=slave\n', 'CUSTOM_NODE=slave-2\nNODE_TYPE=slave\n']);
      expect(files.nodes.map((n) => n.compose.content)).toEqual(bundled.nodes.map((n) => n.compose.content));
      expect(files.balancer.content).toBe(bundled.balancer.content);
    }
  });

  it('names the template that has a syntax error', async () => {
    const base = await withOverride({ 'env.hbs': 'SQL_DSN={{env database.dsn}}\n{{#if isSlave}}NODE_TYPE=slave\n' });
    const templates = await loadTemplates('templates', base);
    let err: unknown;
    try {
      renderCluster(loadExample('minimal'), templates);
    } catch (e) {
      err = e;
    }
    expect(err).toBeInstanceOf(InputError);
    expect((err as InputError).message).toMatch(/^templates: env does not compile: Parse error on line 3:/);
    expect((err as InputError).hint).toBe('fix the template or remove the override');
  });

  it('names the template that uses an unknown field', async () => {
    const base = await withOverride({ 'nginx.conf.hbs': 'upstream {{upstreem}} {}\n' });
    const templates = await loadTemplates('templates', base);
    expect(() => renderCluster(loadExample('minimal'), templates)).toThrow(/^templates: nginx failed to render: "upstreem" not defined/);
  });

  it('refuses a templates folder that does not exist', async () => {
    const base = await withOverride({});
    await expect(loadTemplates('tempaltes', base)).rejects.toThrow(`templates: ${join(base, 'tempaltes')} is not a folder`);
  });
});
