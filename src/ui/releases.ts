import type { ReleaseHistory } from '../orchestrate/releases.js';
import type { PrintEnv } from './output.js';
import { table } from './table.js';

export function printReleases(env: PrintEnv, h: ReleaseHistory): void {
  const { out, style } = env;
  if (out.json) {
    out.printJson({ ok: h.unread.length === 0, releases: h.rows, unread: h.unread });
    return;
  }
  if (h.rows.length === 0) out.print('no operation recorded yet');
  else {
    const when = (at: string) => at.replace('T', ' ').replace(/\.\d+Z$/, 'Z');
    const versions = (r: ReleaseHistory['rows'][number]) => (r.from.length || r.to.length ? `${r.from.join(', ') || '-'} → ${r.to.join(', ') || '-'}` : '-');
    const result = (r: string) => (r === 'ok' ? style.green(r) : style.red(r));
    for (const line of table(['WHEN (UTC)', 'WHO', 'OPERATION', 'VERSIONS', 'RESULT', 'NODES'], h.rows.map((r) => [when(r.at), r.by, r.operation, versions(r), result(r.result), r.nodes.join(', ') || '-']))) out.print(line);
  }
  for (const u of h.unread) out.print(`${style.red('✖')} ${u.node}: audit log not read: ${u.error}`);
}
