/**
 * How fast a run ends when things go wrong (run with `npx tsx bench/faults.ts`, lab up), each
 * during a rolling upgrade of the 3-node lab under load, 3 rounds each:
 *   - a host vanishes (its link goes down) while its node is being recreated: seconds from the
 *     loss until the run has declared it lost and ended (target ≤ healthTimeoutSeconds + 30 s);
 *   - the same, then Ctrl-C one second later: seconds from Ctrl-C to exit (target ≤ 5 s);
 *   - Ctrl-C mid-batch with every host fine: seconds from Ctrl-C to exit (the batch is finished).
 * Requests failed through the balancer are counted throughout (target 0).
 */
import { readFileSync } from 'node:fs';
import { LoadGenerator } from '../test/support/load.js';
import { cli, killClis, LB, labInventory, linkDown, linkUp, resetLab, startCli } from '../test/support/lab.js';

const HEALTH_TIMEOUT_S = 12;
const ROUNDS = Number(process.env.ROUNDS ?? 3);

await resetLab();
const inventory = labInventory((t) => t.replace('healthTimeoutSeconds: 60', `healthTimeoutSeconds: ${HEALTH_TIMEOUT_S}`));
const must = async (args: string[]) => {
  const r = await cli(args, { timeoutMs: 200_000 });
  if (r.code !== 0) throw new Error(`${args.join(' ')} failed:\n${r.stderr}`);
};
await must(['deploy', inventory]);
const nextVersion = () => (readFileSync(inventory, 'utf8').includes(':v0.9.21') ? 'v0.9.22' : 'v0.9.21');

async function waitFor(output: () => string, pattern: RegExp): Promise<void> {
  const deadline = Date.now() + 90_000;
  while (!pattern.test(output())) {
    if (Date.now() > deadline) throw new Error(`never saw ${pattern}`);
    await new Promise((r) => setTimeout(r, 50));
  }
}

interface Row {
  scenario: string;
  seconds: number[];
  codes: number[];
  failed: number;
  sent: number;
}

async function scenario(name: string, body: (run: ReturnType<typeof startCli>) => Promise<number>): Promise<Row> {
  const row: Row = { scenario: name, seconds: [], codes: [], failed: 0, sent: 0 };
  for (let i = 0; i < ROUNDS; i++) {
    const load = new LoadGenerator({ host: LB, port: 80, workers: 6, maxDurationMs: 180_000, maxRequests: 50_000, pauseMs: 50 });
    const run = startCli(['upgrade', '--verbose', '--rolling', '--allow-downgrade', '--to', nextVersion(), inventory], { timeoutMs: 150_000 });
    try {
      row.seconds.push(await body(run));
      row.codes.push((await run.result).code);
    } finally {
      await linkUp('n3');
      const report = await load.stop();
      row.failed += report.failed;
      row.sent += report.sent;
      await killClis();
      await must(['deploy', inventory]);
    }
  }
  return row;
}

const rows: Row[] = [];
rows.push(
  await scenario('host lost mid-recreate → run ended', async (run) => {
    await waitFor(run.output, /Recreate slave-2 on/);
    await linkDown('n3');
    const t = performance.now();
    await run.result;
    return (performance.now() - t) / 1000;
  }),
);
rows.push(
  await scenario('host lost, then Ctrl-C → exit', async (run) => {
    await waitFor(run.output, /Recreate slave-2 on/);
    await linkDown('n3');
    await new Promise((r) => setTimeout(r, 1_000));
    const t = performance.now();
    run.child.kill('SIGINT');
    await run.result;
    return (performance.now() - t) / 1000;
  }),
);
rows.push(
  await scenario('Ctrl-C mid-batch, hosts fine → exit', async (run) => {
    await waitFor(run.output, /Recreate slave-1 on/);
    const t = performance.now();
    run.child.kill('SIGINT');
    await run.result;
    return (performance.now() - t) / 1000;
  }),
);

const fmt = (xs: number[]) => xs.map((x) => x.toFixed(1)).join(' / ');
console.log(`faults during a rolling upgrade of 3 nodes under load, ${ROUNDS} rounds each (healthTimeoutSeconds ${HEALTH_TIMEOUT_S})`);
for (const r of rows) {
  console.log(`${r.scenario.padEnd(40)} ${fmt(r.seconds)} s (max ${Math.max(...r.seconds).toFixed(1)}); exit codes ${r.codes.join(', ')}; requests ${r.sent}, failed ${r.failed}`);
}
console.log(`targets: host declared lost ≤ ${HEALTH_TIMEOUT_S + 30} s; Ctrl-C with a host gone ≤ 5 s; 0 failed requests`);
