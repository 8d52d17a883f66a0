/**
 * The edge, measured on the lab (run with `npx tsx bench/edge.ts`, lab up):
 *   1. ten rolling upgrades in a row through a balancer pair's vip, under keep-alive clients
 *      sending POST and SSE: requests sent and lost per upgrade (target: 0 lost over ten);
 *   2. the vip holder's link dropped under load, 3 rounds: seconds until the other balancer holds
 *      the vip and until the vip answers again, and the requests lost (target: moved ≤ 3 s);
 *   3. TLS handshake + first SSE byte through the balancer vs plain HTTP, new connection each time.
 * ROUNDS=n changes the number of upgrades (default 10).
 */
import { readFileSync } from 'node:fs';
import { request as httpRequest, type IncomingMessage } from 'node:http';
import { request as httpsRequest } from 'node:https';
import { LoadGenerator, percentile } from '../test/support/load.js';
import { cli, killClis, LB, labEnv, labInventory, linkDown, linkUp, resetLab, vipHolder, waitVipHolder } from '../test/support/lab.js';

const env = labEnv();
const UPGRADES = Number(process.env.ROUNDS ?? 10);
const must = async (args: string[], inventory: string) => {
  const r = await cli([...args, inventory], { timeoutMs: 300_000 });
  if (r.code !== 0) throw new Error(`${args.join(' ')} failed:\n${r.stderr}`);
  return r;
};

// 1. Ten upgrades through the vip under keep-alive load.
await resetLab();
const pair = labInventory((t) => t.replace('loadBalancer:\n  host: 10.77.0.10\n', `loadBalancer:\n  hosts: [10.77.0.10, ${env.LAB_LB2_HOST}]\n  vip: ${env.LAB_VIP}\n`));
await must(['deploy'], pair);
await waitVipHolder('lb', { timeoutMs: 20_000 });
const rows: { to: string; seconds: number; sent: number; streams: number; failed: number }[] = [];
for (let i = 0; i < UPGRADES; i++) {
  const to = readFileSync(pair, 'utf8').includes(':v0.9.21') ? 'v0.9.22' : 'v0.9.21';
  const load = new LoadGenerator({ host: env.LAB_VIP!, port: 80, workers: 6, maxDurationMs: 300_000, maxRequests: 100_000, pauseMs: 20, keepAlive: true });
  const t0 = performance.now();
  await must(['upgrade', '--rolling', '--allow-downgrade', '--to', to], pair);
  const seconds = (performance.now() - t0) / 1000;
  const report = await load.stop();
  rows.push({ to, seconds, sent: report.sent, streams: report.streams, failed: report.failed });
  if (report.failed) console.log(`  upgrade ${i + 1} failures: ${JSON.stringify(report.failures.slice(0, 3))}`);
}
console.log(`\n${UPGRADES} rolling upgrades of 3 nodes through the vip of a balancer pair, keep-alive clients (6), POST + SSE:`);
for (const [i, r] of rows.entries()) console.log(`  ${String(i + 1).padStart(2)}. → ${r.to}: ${r.seconds.toFixed(1)} s, ${r.sent} requests (${r.streams} SSE), lost ${r.failed}`);
const lost = rows.reduce((a, r) => a + r.failed, 0);
console.log(`  total: ${rows.reduce((a, r) => a + r.sent, 0)} requests, lost ${lost} (target: 0)`);

// 2. The vip holder's link dropped under load.
console.log('\nthe vip holder loses its link under load (plain HTTP through the vip, 6 workers, one connection per request):');
for (let round = 1; round <= 3; round++) {
  const holder = await vipHolder();
  if (holder === 'none') throw new Error('nobody holds the vip');
  const other = holder === 'lb' ? 'lb2' : 'lb';
  const load = new LoadGenerator({ host: env.LAB_VIP!, port: 80, workers: 6, maxDurationMs: 60_000, maxRequests: 100_000, pauseMs: 20 });
  await new Promise((r) => setTimeout(r, 2_000));
  const t0 = performance.now();
  let moved = NaN;
  let answers = NaN;
  try {
    await linkDown(holder);
    moved = (await waitVipHolder(other, { timeoutMs: 15_000 })) / 1000;
    for (;;) {
      const ok = await new Promise<boolean>((resolve) => {
        const req = httpRequest({ host: env.LAB_VIP!, port: 80, path: '/api/status', agent: false, timeout: 1_000 }, (res) => {
          res.resume();
          resolve(res.statusCode === 200);
        });
        req.on('error', () => resolve(false));
        req.on('timeout', () => req.destroy());
        req.end();
      });
      if (ok) break;
      if (performance.now() - t0 > 20_000) break;
    }
    answers = (performance.now() - t0) / 1000;
    await new Promise((r) => setTimeout(r, 3_000));
  } finally {
    await linkUp(holder);
  }
  const report = await load.stop();
  console.log(`  round ${round}: ${holder} down → ${other} holds the vip after ${moved.toFixed(2)} s, the vip answers after ${answers.toFixed(2)} s; ${report.sent} requests, lost ${report.failed}`);
  await waitVipHolder('lb', { timeoutMs: 20_000 }).catch(() => undefined);
  await new Promise((r) => setTimeout(r, 2_000));
}
await killClis();

// 3. TLS handshake + first SSE byte vs plain HTTP.
await resetLab();
const tls = labInventory((t) => t.replace('  serverName: _\n', `  serverName: ${env.LAB_TLS_NAME}\n  tls: { certificateFile: ${env.LAB_TLS_CERT_FILE}, keyFile: ${env.LAB_TLS_KEY_FILE}, redirectHttp: false }\n`));
await must(['deploy'], tls);
const ca = readFileSync(env.LAB_TLS_CA_FILE!, 'utf8');
const firstByte = (secure: boolean) =>
  new Promise<number>((resolve, reject) => {
    const body = JSON.stringify({ model: 'x', stream: true, messages: [{ role: 'user', content: 'hi' }] });
    const t0 = performance.now();
    const options = { host: LB, port: secure ? 443 : 80, path: '/v1/chat/completions', method: 'POST', agent: false as const, headers: { 'content-type': 'application/json', 'content-length': Buffer.byteLength(body) }, ...(secure ? { ca, servername: env.LAB_TLS_NAME! } : {}) };
    const onResponse = (res: IncomingMessage) => {
      res.once('data', () => {
        resolve(performance.now() - t0);
        res.destroy();
      });
      res.on('error', () => undefined);
    };
    const req = secure ? httpsRequest(options, onResponse) : httpRequest(options, onResponse);
    req.on('error', reject);
    req.end(body);
  });
for (const secure of [false, true]) await firstByte(secure); // warm-up
const samples: Record<'http' | 'https', number[]> = { http: [], https: [] };
for (let i = 0; i < 100; i++) {
  samples.http.push(await firstByte(false));
  samples.https.push(await firstByte(true));
}
console.log('\nfirst SSE byte through the balancer, a new connection each time (100 each, interleaved):');
for (const k of ['http', 'https'] as const) {
  const s = [...samples[k]].sort((a, b) => a - b);
  console.log(`  ${k.padEnd(5)}: p50 ${percentile(s, 50).toFixed(1)} ms, p99 ${percentile(s, 99).toFixed(1)} ms`);
}
const p50 = (k: 'http' | 'https') => percentile([...samples[k]].sort((a, b) => a - b), 50);
console.log(`  TLS handshake cost at p50: +${(p50('https') - p50('http')).toFixed(1)} ms`);
