/**
 * The pure parts of the data commands: the release history merged from audit lines, what prune
 * keeps, and the database-size check's verdict.
 */
import { describe, expect, it } from 'vitest';
import type { AuditEntry } from '../../../src/orchestrate/node-files.js';
import { pruneChoice } from '../../../src/orchestrate/prune.js';
import { groupRuns, parseAuditLog } from '../../../src/orchestrate/releases.js';
import { sizeResult } from '../../../src/probes/checks.js';

const IMG = (v: string) => `calciumion/new-api:${v}`;
const line = (e: Partial<AuditEntry>): AuditEntry => ({ at: '2026-11-26T10:00:00.000Z', by: 'ops@laptop', operation: 'deploy', node: 'master', result: 'ok', ...e });

describe('groupRuns (releases)', () => {
  it('one row per run, newest first, with versions, result and the nodes that moved', () => {
    const rows = groupRuns([
      line({ run: 'a1', node: 'master', to: IMG('v0.9.20') }),
      line({ run: 'a1', node: 'slave-1', to: IMG('v0.9.20'), at: '2026-11-26T10:00:05.000Z' }),
      line({ run: 'a1', node: '*', result: 'ok', to: IMG('v0.9.20'), at: '2026-11-26T10:00:06.000Z' }),
      line({ run: 'b2', operation: 'upgrade --rolling --to v0.9.21', node: 'slave-1', from: IMG('v0.9.20'), to: IMG('v0.9.21'), at: '2026-11-27T09:00:00.000Z' }),
      line({ run: 'b2', operation: 'upgrade --rolling --to v0.9.21', node: 'master', from: IMG('v0.9.20'), to: IMG('v0.9.21'), at: '2026-11-27T09:00:09.000Z' }),
      line({ run: 'b2', operation: 'upgrade --rolling --to v0.9.21', node: '*', result: 'ok', at: '2026-11-27T09:00:10.000Z' }),
      line({ run: 'c3', operation: 'upgrade --rolling --to v0.9.23', node: 'slave-1', from: IMG('v0.9.23'), to: IMG('v0.9.21'), result: 'rolled back', at: '2026-11-28T09:00:00.000Z' }),
      line({ run: 'c3', operation: 'upgrade --rolling --to v0.9.23', node: '*', result: 'failed: slave-1 failed its health gate', at: '2026-11-28T09:00:30.000Z' }),
    ]);
    expect(rows.map((r) => [r.operation, r.from, r.to, r.result, r.nodes])).toEqual([
      ['upgrade --rolling --to v0.9.23', [], [], 'failed: slave-1 failed its health gate', []],
      ['upgrade --rolling --to v0.9.21', ['v0.9.20'], ['v0.9.21'], 'ok', ['master', 'slave-1']],
      ['deploy', [], ['v0.9.20'], 'ok', ['master', 'slave-1']],
    ]);
  });

  it('groups lines written before runs had ids by who and what, within ten minutes', () => {
    const rows = groupRuns([
      line({ node: 'master', to: IMG('v0.9.20') }),
      line({ node: 'slave-1', to: IMG('v0.9.20'), at: '2026-11-26T10:03:00.000Z' }),
      line({ node: 'master', to: IMG('v0.9.20'), at: '2026-11-26T11:00:00.000Z' }),
      line({ node: 'slave-1', result: 'rolled back', operation: 'upgrade --rolling --to v0.9.21', at: '2026-11-26T11:01:00.000Z' }),
    ]);
    expect(rows.map((r) => [r.at, r.operation, r.result, r.nodes])).toEqual([
      ['2026-11-26T11:01:00.000Z', 'upgrade --rolling --to v0.9.21', 'failed (rolled back)', []],
      ['2026-11-26T11:00:00.000Z', 'deploy', 'ok', ['master']],
      ['2026-11-26T10:00:00.000Z', 'deploy', 'ok', ['master', 'slave-1']],
    ]);
  });

  it('skips torn and foreign lines of an audit log', () => {
    const text = `${JSON.stringify(line({}))}\n{"at":"2026-11-26T10\n\nnot json\n${JSON.stringify({ hello: 1 })}\n`;
    expect(parseAuditLog(text)).toEqual([line({})]);
  });
});

describe('pruneChoice', () => {
  const releases = ['20261101T000000Z-v0.9.18', '20261102T000000Z-v0.9.19', '20261103T000000Z-v0.9.20', '20261104T000000Z-v0.9.21'].map((id) => ({ id, image: IMG(id.split('-')[1]!) }));

  it('keeps the newest keepReleases and the running one; removes only images no kept release names', () => {
    const p = pruneChoice({
      releases,
      current: '20261104T000000Z-v0.9.21',
      running: IMG('v0.9.21'),
      keep: 2,
      images: [IMG('v0.9.18'), IMG('v0.9.19'), IMG('v0.9.20'), IMG('v0.9.21'), IMG('<none>')],
      pinned: [IMG('v0.9.21')],
    });
    expect(p).toEqual({ releases: ['20261102T000000Z-v0.9.19', '20261101T000000Z-v0.9.18'], images: [IMG('v0.9.18'), IMG('v0.9.19')] });
  });

  it('never removes the running release, however old, nor a pinned image', () => {
    const p = pruneChoice({ releases, current: '20261101T000000Z-v0.9.18', running: IMG('v0.9.18'), keep: 1, images: [IMG('v0.9.18'), IMG('v0.9.19'), IMG('v0.9.22')], pinned: [IMG('v0.9.22')] });
    expect(p.releases).toEqual(['20261103T000000Z-v0.9.20', '20261102T000000Z-v0.9.19']);
    expect(p.images).toEqual([IMG('v0.9.19')]);
  });

  it('leaves the legacy previous/ slot alone', () => {
    const p = pruneChoice({ releases: [{ id: 'previous', image: IMG('v0.9.1') }, ...releases], current: undefined, running: undefined, keep: 1, images: [], pinned: [] });
    expect(p.releases).not.toContain('previous');
  });
});

describe('sizeResult (check: database size)', () => {
  const MB = 1024 * 1024;
  it('reports the size and the three largest tables', () => {
    expect(sizeResult('master', [{ name: 'channels', bytes: 2 * MB }, { name: 'logs', bytes: 10 * MB }, { name: 'tokens', bytes: MB / 2 }, { name: 'users', bytes: 1024 }])).toEqual({
      node: 'master',
      check: 'db-size',
      status: 'ok',
      detail: '12.5 MB in 4 tables; largest: logs 10.0 MB, channels 2.0 MB, tokens 512 KB',
    });
  });

  it('warns, with a hint, when the logs table dominates a database of some size', () => {
    const r = sizeResult('master', [{ name: 'logs', bytes: 900 * MB }, { name: 'channels', bytes: 100 * MB }]);
    expect(r.status).toBe('warn');
    expect(r.detail).toBe('1000.0 MB in 2 tables; largest: logs 900.0 MB, channels 100.0 MB (logs is 90 %)');
    expect(r.hint).toBe('move request logs to their own database (database.logDsn, LOG_SQL_DSN), and take backups with --no-logs');
  });
});
