import type { PrintEnv } from './output.js';
import { describeHolder } from '../orchestrate/lock.js';
import type { ClusterStatus } from '../orchestrate/status.js';
import { table } from './table.js';

export function printStatus(ctx: PrintEnv, s: ClusterStatus): void {
  const { out, style } = ctx;
  if (out.json) {
    out.printJson(s);
    return;
  }
  const rows = s.nodes.map((n) => [
    n.name,
    n.role,
    n.host,
    n.reachable ? style.green('yes') : style.red('no'),
    n.container ?? '-',
    n.version ?? '-',
    n.healthy ? style.green('healthy') : style.red('unhealthy'),
    n.balancer === 'in' ? style.green('in') : n.balancer === 'drained' ? style.yellow('drained') : n.balancer,
  ]);
  for (const line of table(['NODE', 'ROLE', 'HOST', 'SSH', 'CONTAINER', 'VERSION', 'HEALTH', 'BALANCER'], rows)) out.print(line);
  for (const n of s.nodes.filter((x) => x.error)) out.print(`${style.red('✖')} ${n.name}: ${n.error}`);
  if (s.balancer.error) out.print(`${style.red('✖')} balancer: ${s.balancer.error}`);
  for (const h of s.balancer.hosts.filter((x) => !x.reachable)) out.print(`${style.red('✖')} ${h.label} (${h.host}): ${h.error ?? 'unreachable'}`);
  if (s.vip) out.print(`vip ${s.vip.address}: ${s.vip.holder ? `held by ${s.vip.holder} (${s.balancer.hosts.find((h) => h.label === s.vip!.holder)?.host ?? '?'})` : style.red('held by no balancer')}`);
  out.print(`lock: ${s.lock === null ? 'free' : s.lock === 'unknown' ? 'unknown (Redis not reachable)' : `held by ${describeHolder(s.lock)}`}`);
}
