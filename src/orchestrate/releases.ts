/**
 * `releases`: every deploy, upgrade, rollback and restore, newest first, merged from the audit
 * logs of every node — when, who, from which version to which, and how it ended. Read-only.
 */
import { parseImageRef } from '../inventory/image.js';
import { statePaths } from '../plan/state.js';
import { mapLimitSettled } from '../remote/limit.js';
import type { AuditEntry } from './node-files.js';
import type { Session } from './session.js';

export interface ReleaseRow {
  at: string;
  by: string;
  operation: string;
  from: string[];
  to: string[];
  result: string;
  /** Nodes that reached the new version in this run. */
  nodes: string[];
  run?: string;
}

export interface ReleaseHistory {
  rows: ReleaseRow[];
  /** Nodes whose log could not be read. */
  unread: { node: string; error: string }[];
}

const tag = (image: string | undefined) => (image ? (parseImageRef(image).tag ?? image) : undefined);

/** Groups audit lines into runs: by run id; older lines without one, by who and what within ten minutes. */
export function groupRuns(entries: readonly AuditEntry[]): ReleaseRow[] {
  const groups = new Map<string, AuditEntry[]>();
  const sorted = [...entries].sort((a, b) => a.at.localeCompare(b.at));
  let legacyKey = '';
  let legacyAt = 0;
  for (const e of sorted) {
    let key: string;
    if (e.run) key = `run:${e.run}`;
    else {
      const t = Date.parse(e.at);
      const same = legacyKey.startsWith(`legacy:${e.by}|${e.operation}|`) && t - legacyAt < 10 * 60_000;
      if (!same) legacyKey = `legacy:${e.by}|${e.operation}|${e.at}`;
      legacyAt = t;
      key = legacyKey;
    }
    const list = groups.get(key) ?? [];
    list.push(e);
    groups.set(key, list);
  }
  const rows: ReleaseRow[] = [];
  for (const list of groups.values()) {
    const first = list[0]!;
    const nodeLines = list.filter((e) => e.node !== '*');
    const closing = list.find((e) => e.node === '*');
    const oks = nodeLines.filter((e) => e.result === 'ok');
    const rolledBack = nodeLines.some((e) => e.result === 'rolled back');
    const uniq = (xs: (string | undefined)[]) => [...new Set(xs.filter((x): x is string => x !== undefined))];
    rows.push({
      at: first.at,
      by: first.by,
      operation: first.operation,
      from: uniq(oks.map((e) => tag(e.from))),
      to: uniq([...oks.map((e) => tag(e.to)), ...(closing?.to && oks.length === 0 ? [tag(closing.to)] : [])]),
      result: closing?.result ?? (rolledBack ? 'failed (rolled back)' : oks.length > 0 ? 'ok' : (nodeLines[0]?.result ?? 'unknown')),
      nodes: uniq(oks.map((e) => e.node)).sort(),
      ...(first.run ? { run: first.run } : {}),
    });
  }
  return rows.sort((a, b) => b.at.localeCompare(a.at));
}

export function parseAuditLog(text: string): AuditEntry[] {
  const out: AuditEntry[] = [];
  for (const line of text.split('\n')) {
    if (!line.trim()) continue;
    try {
      const e = JSON.parse(line) as Partial<AuditEntry>;
      if (typeof e.at === 'string' && typeof e.operation === 'string' && typeof e.node === 'string' && typeof e.result === 'string') out.push(e as AuditEntry);
    } catch {
      // a torn line (a write cut short) is skipped
    }
  }
  return out;
}

export async function getReleaseHistory(session: Session): Promise<ReleaseHistory> {
  const nodes = session.inv.nodes;
  const path = statePaths(session.inv.cluster.dir).audit;
  const settled = await mapLimitSettled(nodes, session.inv.rollout.maxParallel, async (n) => parseAuditLog((await session.on(n).readFile(path))?.toString('utf8') ?? ''));
  const entries: AuditEntry[] = [];
  const unread: ReleaseHistory['unread'] = [];
  settled.forEach((s, i) => {
    if (s.status === 'fulfilled') entries.push(...s.value);
    else unread.push({ node: nodes[i]!.name, error: s.reason instanceof Error ? s.reason.message : String(s.reason) });
  });
  // Only operations that move versions; scale and stray lines are history too, kept as they are.
  return { rows: groupRuns(entries), unread };
}
