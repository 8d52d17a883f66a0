/**
 * Deploy figures on the lab (run with `npx tsx bench/deploy.ts`; the lab must be up):
 *   - first deploy of 1 node vs 6 nodes (target: 6 within 1.5× of 1),
 *   - a no-op redeploy of the 3-node lab (target under 2 s), over several runs,
 *   - SSH connections opened per host per run, counted from each host's sshd log (target 1).
 */
import { readFileSync } from 'node:fs';
import { cli, labInventory, resetLab } from '../test/support/lab.js';

const NODES = ['10.77.0.11', '10.77.0.12', '10.77.0.13', '10.77.0.14', '10.77.0.15', '10.77.0.16'];
const SSHD_LOG = (host: string) => `/var/lib/newapi-lab/hosts/${host}/sshd.log`;
const HOST_NAMES: Record<string, string> = { '10.77.0.10': 'lb', '10.77.0.11': 'n1', '10.77.0.12': 'n2', '10.77.0.13': 'n3', '10.77.0.14': 'n4', '10.77.0.15': 'n5', '10.77.0.16': 'n6' };

// n6 accepts SSH only from the lab's bastion (test/lab/lab.sh): it is reached through it.
const BASTION = '10.77.0.9';
const reach = (h: string) => (h === '10.77.0.16' ? `, ssh: { jumpHost: root@${BASTION} }` : '');

function inventoryWith(count: number): string {
  return labInventory((t) => {
    const nodes = NODES.slice(0, count).map((h, i) => (i === 0 ? `  - { name: master, host: ${h}, role: master }` : `  - { name: slave-${i}, host: ${h}${reach(h)} }`));
    return t.replace(/nodes:\n(  - .*\n)+/, `nodes:\n${nodes.join('\n')}\n`);
  });
}

async function timed(args: string[]): Promise<number> {
  const t0 = performance.now();
  const r = await cli(args);
  if (r.code !== 0) throw new Error(`newapi-cluster ${args.join(' ')} failed (${r.code}):\n${r.stderr.slice(-2000)}`);
  return (performance.now() - t0) / 1000;
}

function accepted(host: string): number {
  try {
    return readFileSync(SSHD_LOG(HOST_NAMES[host]!), 'utf8').split('\n').filter((l) => l.includes('Accepted publickey')).length;
  } catch {
    return 0;
  }
}

const mean = (xs: number[]) => xs.reduce((a, b) => a + b, 0) / xs.length;

await resetLab();
const one = await timed(['deploy', inventoryWith(1)]);
await resetLab();
const six = await timed(['deploy', inventoryWith(6)]);
console.log(`first deploy, 1 node + balancer:  ${one.toFixed(1)} s`);
console.log(`first deploy, 6 nodes + balancer: ${six.toFixed(1)} s  (ratio ${(six / one).toFixed(2)}×, target ≤ 1.5×)`);

await resetLab();
const three = inventoryWith(3);
await timed(['deploy', three]);
const noop: number[] = [];
let perHost: Record<string, number> = {};
for (let i = 0; i < 5; i++) {
  const before = Object.fromEntries(['10.77.0.10', ...NODES.slice(0, 3)].map((h) => [h, accepted(h)]));
  noop.push(await timed(['deploy', three]));
  perHost = Object.fromEntries(Object.entries(before).map(([h, n]) => [HOST_NAMES[h]!, accepted(h) - n]));
}
console.log(`no-op redeploy, 3 nodes: mean ${mean(noop).toFixed(2)} s, min ${Math.min(...noop).toFixed(2)} s, max ${Math.max(...noop).toFixed(2)} s over ${noop.length} runs (target < 2 s)`);
console.log(`SSH connections opened per host in one deploy run (from sshd logs): ${Object.entries(perHost).map(([h, n]) => `${h}=${n}`).join(' ')} (target 1 each)`);
