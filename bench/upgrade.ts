/**
 * A rolling upgrade of the 3-node lab under New API-like load (run with `npx tsx bench/upgrade.ts`):
 * requests sent and failed, p50/p99 latency through the balancer (target: 0 failed), and the time
 * each node spends out of the balancer — drain → recreate → healthy → back — against
 * drainSeconds + the image's own start time (target: within 2 s).
 */
import { LoadGenerator } from '../test/support/load.js';
import { cli, hostExec, LB, labInventory, resetLab } from '../test/support/lab.js';

await resetLab();
const inventory = labInventory();
const deploy = await cli(['deploy', inventory]);
if (deploy.code !== 0) throw new Error(`deploy failed:\n${deploy.stderr}`);

const load = new LoadGenerator({ host: LB, port: 80, workers: 6, maxDurationMs: 240_000, maxRequests: 50_000, pauseMs: 50 });
const t0 = performance.now();
// --json: the progress as events on stderr, each with its time to the millisecond.
const r = await cli(['upgrade', '--json', '--rolling', '--to', 'v0.9.21', inventory]);
const elapsed = (performance.now() - t0) / 1000;
const report = await load.stop();
if (r.code !== 0) throw new Error(`upgrade failed:\n${r.stderr}`);

interface ProgressEvent {
  at: string;
  event: string;
  task?: string;
  seconds?: number;
}
const events: ProgressEvent[] = r.stderr
  .split('\n')
  .filter((l) => l.startsWith('{'))
  .map((l) => JSON.parse(l) as ProgressEvent);
/** When the first event of this kind for this task happened (ms), and the event. */
const find = (event: string, task: RegExp, text?: RegExp) => events.find((e) => e.event === event && e.task !== undefined && task.test(e.task) && (!text || text.test((e as { text?: string }).text ?? '')));
const at = (event: string, task: RegExp, text?: RegExp): number | undefined => {
  const e = find(event, task, text);
  return e ? Date.parse(e.at) : undefined;
};
const drainSeconds = 2; // examples/lab/inventory.yaml
// The image's own start time, measured on a node of the lab: container restart → /api/status healthy.
const startSeconds = Number(
  (
    await hostExec(
      'n3',
      's=$(date +%s%N); docker restart -t 0 lab-new-api >/dev/null; until wget -q -O - http://127.0.0.1:3000/api/status 2>/dev/null | grep -q \'"success":true\'; do sleep 0.05; done; echo $(( ($(date +%s%N) - s) / 1000000 ))',
    )
  ).trim(),
) / 1000;
console.log(`the image's own start time (docker restart → healthy, on n3): ${startSeconds.toFixed(1)} s`);
console.log(`rolling upgrade v0.9.20 → v0.9.21 of 3 nodes: ${elapsed.toFixed(1)} s`);
console.log(`requests through the balancer: sent ${report.sent} (${report.streams} SSE streams), failed ${report.failed}, p50 ${report.p50} ms, p99 ${report.p99} ms (target: 0 failed)`);
for (const f of report.failures.slice(0, 5)) console.log(`  failed: ${JSON.stringify(f)}`);
// A node leaves when its drain rule is in (the drain step then says it waits) and is back when
// its put-back is done. (A drain may first wait for the node put back before it to settle.)
for (const node of ['slave-1', 'slave-2', 'master']) {
  const out = at('progress', new RegExp(`^Drain ${node} from the balancer$`), /^waiting \d+ s for in-flight requests$/);
  const back = at('done', new RegExp(`^Put ${node} back in the balancer$`));
  const recreateSeconds = find('done', new RegExp(`^Recreate ${node} on `))?.seconds ?? NaN;
  if (out !== undefined && back !== undefined) {
    const outSeconds = (back - out) / 1000;
    const over = outSeconds - (drainSeconds + startSeconds);
    console.log(`${node}: out of the balancer ${outSeconds.toFixed(1)} s = drain ${drainSeconds} s + recreate and gate ${recreateSeconds.toFixed(1)} s + the rest; ${over.toFixed(1)} s over drainSeconds + start time (target ≤ 2 s)`);
  } else console.log(`${node}: its drain or put-back was not found in the progress events`);
}
