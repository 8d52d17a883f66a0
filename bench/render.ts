/**
 * Rendering cost on a large cluster: a 200-node inventory (master, 199 slaves, frontendBaseUrl,
 * extra environment) parsed, validated and rendered in memory, then the whole
 * `render --out` command on the same file. Target: under 1000 ms for parse + render.
 *
 *   npm run build && npx tsx bench/render.ts
 *
 * Local only: fake secrets, a temporary folder, no network.
 */
import { execFileSync } from 'node:child_process';
import { existsSync, mkdtempSync, readdirSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { performance } from 'node:perf_hooks';
import { parseInventory } from '../src/inventory/load.js';
import { renderCluster } from '../src/render/render.js';
import { loadTemplates } from '../src/render/templates.js';

const NODES = 200;
const WARMUP = 3;
const ITERATIONS = 20;
const CLI_RUNS = 5;
const TARGET_MS = 1000;

/** Obviously fake values: nothing connects anywhere. */
const VARS: Record<string, string> = {
  SQL_DSN: 'bench:fake-bench-password@tcp(10.0.0.5:3306)/new-api?charset=utf8mb4&parseTime=true',
  LOG_SQL_DSN: 'postgres://bench:fake-bench-log-password@10.0.0.7:5432/new-api-log',
  REDIS_CONN_STRING: 'redis://default:fake-bench-redis-password@10.0.0.6:6379/0',
  SESSION_SECRET: 'fake-bench-session-secret-0123456789abcdefghij',
  CRYPTO_SECRET: 'fake-bench-crypto-secret-0123456789abcdefghijk',
};

function inventoryText(count: number): string {
  const nodes = Array.from({ length: count }, (_, i) =>
    i === 0
      ? '  - { name: master, host: 10.1.0.1, role: master, weight: 3 }'
      : `  - { name: slave-${i}, host: 10.1.${Math.floor(i / 250)}.${(i % 250) + 1}, weight: ${(i % 5) + 1} }`,
  );
  return `# ${count}-node benchmark inventory
cluster:
  name: bench
  image: calciumion/new-api:v0.9.20
  timezone: Asia/Shanghai
  frontendBaseUrl: https://console.example.com
  batchUpdate: { enabled: true, interval: 5 }
  env:
    ERROR_LOG_ENABLED: "true"
    STREAMING_TIMEOUT: 300
database:
  dsn: \${SQL_DSN}
  logDsn: \${LOG_SQL_DSN}
redis:
  url: \${REDIS_CONN_STRING}
  poolSize: 20
secrets:
  sessionSecret: \${SESSION_SECRET}
  cryptoSecret: \${CRYPTO_SECRET}
nodes:
${nodes.join('\n')}
loadBalancer:
  host: 10.1.255.10
  serverName: api.example.com
rollout:
  batchSize: "10%"
`;
}

const stats = (samples: number[]) => ({
  mean: samples.reduce((a, b) => a + b, 0) / samples.length,
  min: Math.min(...samples),
  max: Math.max(...samples),
});
const fmt = (ms: number) => `${ms.toFixed(1)} ms`;

async function main(): Promise<void> {
  const root = fileURLToPath(new URL('../', import.meta.url));
  const text = inventoryText(NODES);
  const templates = await loadTemplates(null, root);
  const lookup = (name: string) => VARS[name];

  const once = (): number => {
    const t0 = performance.now();
    const { inventory } = parseInventory(text, { file: 'inventory.yaml', path: join(root, 'inventory.yaml'), lookup });
    const files = renderCluster(inventory, templates);
    const elapsed = performance.now() - t0;
    if (files.nodes.length !== NODES) throw new Error(`rendered ${files.nodes.length} nodes, expected ${NODES}`);
    return elapsed;
  };
  for (let i = 0; i < WARMUP; i++) once();
  const inMemory = stats(Array.from({ length: ITERATIONS }, once));
  console.log(`node ${process.version}, ${NODES} nodes, ${(text.length / 1024).toFixed(1)} KiB of YAML`);
  console.log(
    `parseInventory + renderCluster: mean ${fmt(inMemory.mean)}, max ${fmt(inMemory.max)} over ${ITERATIONS} runs after ${WARMUP} warm-up (target < ${TARGET_MS} ms: ${inMemory.max < TARGET_MS ? 'met' : 'NOT met'})`,
  );

  const bin = join(root, 'bin/newapi-cluster.js');
  if (!existsSync(join(root, 'dist/cli.js'))) {
    console.log('render --out: skipped, dist/ is missing (run npm run build first)');
    return;
  }
  const dir = mkdtempSync(join(tmpdir(), 'newapi-cluster-bench-'));
  try {
    const file = join(dir, 'inventory.yaml');
    writeFileSync(file, text);
    const env = { ...process.env, ...VARS, NO_COLOR: '1' };
    const runs: number[] = [];
    for (let i = 0; i < CLI_RUNS; i++) {
      const out = join(dir, `out-${i}`);
      const t0 = performance.now();
      execFileSync(process.execPath, [bin, 'render', '--out', out, file], { env, stdio: 'ignore' });
      runs.push(performance.now() - t0);
      const written = readdirSync(join(out, 'nodes')).length;
      if (written !== NODES) throw new Error(`render --out wrote ${written} node folders, expected ${NODES}`);
    }
    const cli = stats(runs);
    console.log(`render --out (whole CLI process, ${NODES * 2 + 1} files): mean ${fmt(cli.mean)}, min ${fmt(cli.min)}, max ${fmt(cli.max)} over ${CLI_RUNS} runs`);
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
}

await main();
