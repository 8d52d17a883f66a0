import type { PrintEnv } from './output.js';
import type { CheckResult } from '../probes/checks.js';
import { table } from './table.js';

export function printChecks(ctx: PrintEnv, results: CheckResult[]): void {
  const { out, style } = ctx;
  const failed = results.filter((r) => r.status === 'fail');
  if (out.json) {
    out.printJson({ ok: failed.length === 0, checks: results });
    return;
  }
  const mark = (s: CheckResult['status']) =>
    s === 'ok' ? style.green('ok') : s === 'warn' ? style.yellow('warn') : s === 'fail' ? style.red('FAIL') : style.dim('skip');
  for (const line of table(['NODE', 'CHECK', 'RESULT', 'DETAIL'], results.map((r) => [r.node, r.check, mark(r.status), r.detail]))) out.print(line);
  const warned = results.filter((r) => r.status === 'warn');
  for (const r of [...failed, ...warned]) out.print(`${r.status === 'fail' ? style.red('✖') : style.yellow('!')} ${r.node} ${r.check}: ${r.hint ?? ''}`);
  out.print(failed.length === 0 ? `${style.green('✔')} all ${results.length} checks passed${warned.length ? ` (${warned.length} warnings)` : ''}` : `${style.red('✖')} ${failed.length} of ${results.length} checks failed`);
}
