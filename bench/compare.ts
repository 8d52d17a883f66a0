/**
 * This tool against the plain-ssh floor (bench/floor.sh), in one run, on the lab's 3 nodes +
 * nginx (run with `npx tsx bench/compare.ts`, lab up): a first deploy (images absent, so both
 * pull) and a no-op redeploy, ROUNDS rounds each (default 3), medians. Targets: no-op ≤ 1.2× the
 * floor, first deploy ≤ 1.1× the floor.
 */
import { execFile } from 'node:child_process';
import { mkdtempSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { promisify } from 'node:util';
import { cli, hostExec, labInventory, resetLab, ROOT } from '../test/support/lab.js';

const execFileP = promisify(execFile);
const ROUNDS = Number(process.env.ROUNDS ?? 3);
const inventory = labInventory();
const rendered = mkdtempSync(join(tmpdir(), 'floor-'));

const median = (xs: number[]) => [...xs].sort((a, b) => a - b)[Math.floor(xs.length / 2)]!;
const time = async (fn: () => Promise<unknown>) => {
  const t = performance.now();
  await fn();
  return (performance.now() - t) / 1000;
};
const fresh = async () => {
  await resetLab();
  await Promise.all((['n1', 'n2', 'n3'] as const).map((h) => hostExec(h, 'docker image ls -q | xargs -r docker image rm -f >/dev/null 2>&1; true')));
};
const tool = async (args: string[]) => {
  const r = await cli([...args, inventory], { timeoutMs: 300_000 });
  if (r.code !== 0) throw new Error(`${args.join(' ')}: ${r.stderr}`);
  return r;
};
const floor = (what: 'noop' | 'first') => execFileP('bash', [join(ROOT, 'bench/floor.sh'), what], { env: { ...process.env, FLOOR_RENDERED: rendered } });

await tool(['render', '--out', rendered]);
const first = { tool: [] as number[], floor: [] as number[] };
const noop = { tool: [] as number[], floor: [] as number[] };
for (let i = 0; i < ROUNDS; i++) {
  await fresh();
  first.floor.push(await time(() => floor('first')));
  await fresh();
  first.tool.push(await time(() => tool(['deploy'])));
  for (let j = 0; j < 3; j++) {
    noop.floor.push(await time(() => floor('noop')));
    noop.tool.push(await time(async () => {
      const r = await tool(['deploy']);
      if (!/nothing to do/.test(r.stdout)) throw new Error(`the redeploy was not a no-op:\n${r.stdout}`);
    }));
  }
}
const row = (name: string, m: { tool: number[]; floor: number[] }, target: number) => {
  const t = median(m.tool);
  const f = median(m.floor);
  console.log(`${name.padEnd(16)} newapi-cluster ${t.toFixed(2)} s (${m.tool.map((x) => x.toFixed(2)).join(', ')}) · plain ssh ${f.toFixed(2)} s (${m.floor.map((x) => x.toFixed(2)).join(', ')}) · ${(t / f).toFixed(2)}× (target ≤ ${target}×)`);
};
console.log(`3 nodes + nginx on the lab, medians of ${ROUNDS} first deploys and ${ROUNDS * 3} no-op redeploys, in one run:`);
row('first deploy', first, 1.1);
row('no-op redeploy', noop, 1.2);
