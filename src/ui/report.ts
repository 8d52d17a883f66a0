/**
 * What a run prints about itself: the plan (--dry-run), the summary of a run that ended well, and
 * "Where things stand" for one that did not: every node, its version, its place in the balancer,
 * and what happened to it.
 */
import type { Inventory } from '../inventory/schema.js';
import { parseImageRef } from '../inventory/image.js';
import { fileDiff } from '../plan/diff.js';
import { isNoop } from '../plan/plan.js';
import { describeStep, type Plan } from '../plan/steps.js';
import type { Place } from '../orchestrate/balancer.js';
import type { RunState } from '../orchestrate/steps.js';
import type { PrintEnv } from './output.js';
import { table } from './table.js';

const tag = (image: string | undefined) => (image ? (parseImageRef(image).tag ?? image) : '-');

export function printPlan(env: PrintEnv, plan: Plan, inv: Inventory, secrets: readonly string[]): void {
  const { out, style } = env;
  const opts = { drainSeconds: inv.rollout.drainSeconds, transfer: inv.images.transfer };
  let batch = 0;
  const steps = plan.steps.map((s) => (s.kind === 'batch' ? `batch ${++batch}: ` : '') + describeStep(s, opts));
  const balancerChanged = plan.balancer !== undefined && plan.balancer.before !== plan.balancer.after;
  const noop = isNoop(plan.work.map((w) => w.plan), balancerChanged) && plan.steps.length === 0;
  if (out.json) {
    out.printJson({
      ok: true,
      dryRun: true,
      operation: plan.operation,
      steps,
      warnings: plan.warnings,
      nodes: plan.work.map((w) => ({
        name: w.plan.node.name,
        image: w.plan.image,
        restart: w.plan.restart,
        readmit: w.plan.readmit,
        reasons: w.plan.reasons,
        pullImage: w.plan.pullImage,
        changedFiles: w.plan.changes.map((c) => c.file.path),
        diffs: w.plan.changes.map((c) => fileDiff(c.file.path, c.before, c.file.content, c.file.secret, secrets)),
      })),
      ...(plan.balancer
        ? { balancer: { changed: balancerChanged, diff: balancerChanged ? fileDiff(plan.balancer.path, plan.balancer.before, plan.balancer.after, false) : undefined } }
        : {}),
    });
    return;
  }
  for (const w of plan.warnings) out.print(`${style.yellow('!')} ${w}`);
  out.print(`${plan.operation} — plan (dry run, nothing changed):`);
  if (steps.length === 0) out.print('  nothing to do');
  steps.forEach((s, i) => out.print(`  ${i + 1}. ${s}`));
  for (const w of plan.work) {
    const p = w.plan;
    out.print(style.bold(`${p.node.name} (${p.node.host})`));
    if (!p.restart && !p.readmit && p.changes.length === 0) out.print(`  no change (${tag(p.image)})`);
    if (p.pullImage && p.restart) out.print(`  would make ${p.image} present (${inv.images.transfer})`);
    if (p.restart) out.print(`  would ${p.serving ? 'drain and recreate' : 'start'} the container: ${p.reasons.join(', ')}`);
    if (p.readmit) out.print('  would health-gate it and put it back in the balancer (an earlier run left it out)');
    for (const c of p.changes) out.print(fileDiff(c.file.path, c.before, c.file.content, c.file.secret, secrets).trimEnd());
  }
  if (plan.balancer) {
    out.print(style.bold(`balancer (${inv.loadBalancer.host ?? '-'})`));
    out.print(balancerChanged ? fileDiff(plan.balancer.path, plan.balancer.before, plan.balancer.after, false).trimEnd() : '  no change');
  }
  out.print(noop ? `${style.green('✔')} dry run: nothing to change` : 'dry run: nothing was changed');
}

export function printSummary(env: PrintEnv, plan: Plan, state: RunState): void {
  const { out, style } = env;
  const list = [
    ...plan.work.map((w) => state.outcomes.get(w.plan.node.name) ?? { node: w.plan.node.name, action: 'unchanged' as const, image: w.plan.image, detail: 'up to date' }),
    ...[...state.outcomes.values()].filter((o) => !plan.work.some((w) => w.plan.node.name === o.node)),
  ];
  if (out.json) {
    out.printJson({ ok: true, operation: plan.operation, nodes: list, ...(state.balancerChanged === undefined ? {} : { balancer: { changed: state.balancerChanged } }), notes: state.notes });
    return;
  }
  if (list.length === 0) {
    for (const n of state.notes) out.print(`  ${n}`);
    out.print(`${style.green('✔')} ${plan.operation}: done`);
    return;
  }
  for (const o of list) out.print(`  ${o.node}: ${o.action}${o.action === 'unchanged' ? '' : `${o.image ? ` on ${o.image}` : ''} (${o.detail})`}`);
  const changed = list.filter((o) => o.action !== 'unchanged').length;
  const balancer = state.balancerChanged === undefined ? '' : `, balancer ${state.balancerChanged ? 'reloaded' : 'unchanged'}`;
  for (const n of state.notes) out.print(`  ${n}`);
  out.print(`${style.green('✔')} ${plan.verb}: ${changed} node${changed === 1 ? '' : 's'} changed, ${list.length - changed} unchanged${balancer}`);
}

export interface StandingNode {
  name: string;
  /** The image it runs, as far as the run knows. */
  image: string | undefined;
  place: Place | 'unmanaged';
  happened: string;
}

/** Every node of the inventory: its version, whether it serves, and what this run did to it. */
export function standing(inv: Inventory, plan: Plan | undefined, state: RunState, placeOf: (name: string) => Place | 'unmanaged'): StandingNode[] {
  return inv.nodes.map((n) => {
    const o = state.outcomes.get(n.name);
    const w = plan?.work.find((x) => x.plan.node.name === n.name);
    const before = w?.facts.container.image;
    const happened = o
      ? o.action === 'lost'
        ? `lost: ${o.detail}`
        : o.action === 'failed'
          ? `failed: ${o.detail}`
          : o.action === 'rolled-back'
            ? `returned to ${tag(o.image)} (${o.detail})`
            : o.action
      : w && (w.plan.restart || w.plan.readmit)
        ? 'not reached (still on its previous version)'
        : 'unchanged';
    return { name: n.name, image: o ? (o.image ?? (o.action === 'lost' ? undefined : before)) : before, place: placeOf(n.name), happened };
  });
}

export function printWhereThingsStand(env: PrintEnv, rows: StandingNode[], state: RunState): void {
  const { out, style } = env;
  if (out.json) return;
  out.note('Where things stand:');
  const place = (p: StandingNode['place']) => (p === 'in' ? style.green('in') : p === 'unmanaged' ? 'unmanaged' : style.yellow(p === 'drained' ? 'DRAINED' : 'OUT'));
  for (const line of table(['NODE', 'VERSION', 'BALANCER', 'WHAT HAPPENED'], rows.map((r) => [r.name, tag(r.image), place(r.place), r.happened]))) out.note(`  ${line}`);
  for (const n of state.notes) out.note(`  ${n}`);
}

/** A run that found nothing to do (one look at every host, no lock taken). */
export function printNothingToDo(env: PrintEnv, plan: Plan, seconds: number, locked = false): void {
  const { out, style } = env;
  if (out.json) {
    out.printJson({ ok: true, operation: plan.operation, nothingToDo: true, seconds: Number(seconds.toFixed(2)), lockTaken: locked, nodes: plan.work.map((w) => ({ node: w.plan.node.name, action: 'unchanged', image: w.plan.image })), warnings: plan.warnings });
    return;
  }
  for (const w of plan.warnings) out.print(`${style.yellow('!')} ${w}`);
  for (const w of plan.work) out.print(`  ${w.plan.node.name}: unchanged`);
  out.print(`${style.green('✔')} ${plan.operation}: nothing to do, ${plan.work.length} node${plan.work.length === 1 ? '' : 's'}${plan.balancer ? ' and the balancer' : ''} already match (${seconds.toFixed(1)} s${locked ? ': another run had done it meanwhile' : ', no lock taken'})`);
}
