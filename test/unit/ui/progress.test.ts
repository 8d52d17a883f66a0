import { Writable } from 'node:stream';
import { Chalk } from 'chalk';
import { afterEach, beforeEach, describe, expect, it, vi } from 'vitest';
import { Output } from '../../../src/ui/output.js';
import { makeProgress, QUIET_MS, type Progress } from '../../../src/ui/progress.js';

/** Plain progress (not a terminal) writing into an array, on a fake clock from 12:00:00. */
async function plain(verbose = false): Promise<{ progress: Progress; lines: string[] }> {
  const lines: string[] = [];
  const sink = new Writable({
    write(chunk: Buffer, _enc, cb) {
      lines.push(...chunk.toString('utf8').split('\n').filter(Boolean));
      cb();
    },
  });
  const out = new Output({ json: false, verbose, color: false, plain: true, stdout: sink, stderr: sink });
  return { progress: await makeProgress({ out, style: new Chalk({ level: 0 }), interactive: false }), lines };
}
const at = (ms: number) => `2026-12-01 12:00:${String(Math.floor(ms / 1000)).padStart(2, '0')}Z`;

beforeEach(() => {
  vi.useFakeTimers();
  vi.setSystemTime(new Date('2026-12-01T12:00:00.000Z'));
});
afterEach(() => {
  vi.useRealTimers();
});

describe('plain progress (CI logs)', () => {
  it('a task that ends quickly is one line, its last message on it', async () => {
    const { progress, lines } = await plain();
    await progress.step('Run pre-flight checks', async (report) => {
      await vi.advanceTimersByTimeAsync(200);
      report('25 of 25 passed');
    });
    expect(lines).toEqual([`${at(0)} ✔ Run pre-flight checks: 25 of 25 passed (0.2 s)`]);
  });

  it('prints the start line of a task silent for QUIET_MS, stamped when it started', async () => {
    const { progress, lines } = await plain();
    await progress.step('Take the lock on cluster prod', async () => {
      await vi.advanceTimersByTimeAsync(QUIET_MS + 2_000);
    });
    expect(lines).toEqual([`${at(0)} Take the lock on cluster prod …`, `${at(QUIET_MS + 2_000)} ✔ Take the lock on cluster prod (${((QUIET_MS + 2_000) / 1000).toFixed(1)} s)`]);
  });

  it('prints each new message once, a held one when the next comes or after QUIET_MS, with the time it was said', async () => {
    const { progress, lines } = await plain();
    await progress.step('Start master', async (report) => {
      report('pulling');
      await vi.advanceTimersByTimeAsync(300);
      report('pulled');
      await vi.advanceTimersByTimeAsync(100);
      report('waiting: connection refused');
      await vi.advanceTimersByTimeAsync(500);
      report('waiting: connection refused');
      await vi.advanceTimersByTimeAsync(2_600);
      report('healthy (v0.9.20)');
      await vi.advanceTimersByTimeAsync(500);
    });
    expect(lines).toEqual([
      `${at(0)}   Start master: pulling`,
      `${at(300)}   Start master: pulled`,
      // held, and printed once it had stood for QUIET_MS, with the time it was first said
      `${at(400)}   Start master: waiting: connection refused`,
      `${at(4000)} ✔ Start master: healthy (v0.9.20) (4.0 s)`,
    ]);
  });

  it('a failing task prints what it last said, then the error', async () => {
    const { progress, lines } = await plain();
    const run = progress.step('Start slave-1', async (report) => {
      report('waiting: HTTP 503');
      await vi.advanceTimersByTimeAsync(200);
      throw new Error('slave-1 failed its health gate');
    });
    await expect(run).rejects.toThrow('slave-1 failed its health gate');
    expect(lines).toEqual([`${at(0)}   Start slave-1: waiting: HTTP 503`, `${at(0)} ✖ Start slave-1: slave-1 failed its health gate`]);
  });

  it('phases print their title, then their tasks the same way', async () => {
    const { progress, lines } = await plain();
    let go = (): void => undefined;
    const both = new Promise<void>((resolve) => (go = resolve));
    const running = progress.phase(
      'Start 2 nodes',
      ['slave-1', 'slave-2'].map((n) => ({
        title: `Start ${n}`,
        run: async (report) => {
          report('starting');
          await both;
          report('healthy');
        },
      })),
      { concurrency: 2 },
    );
    await vi.advanceTimersByTimeAsync(QUIET_MS + 500);
    go();
    await running;
    expect(lines).toEqual([
      `${at(0)} Start 2 nodes`,
      `${at(0)}     Start slave-1: starting`,
      `${at(0)}     Start slave-2: starting`,
      `${at(QUIET_MS + 500)} ✔   Start slave-1: healthy (${((QUIET_MS + 500) / 1000).toFixed(1)} s)`,
      `${at(QUIET_MS + 500)} ✔   Start slave-2: healthy (${((QUIET_MS + 500) / 1000).toFixed(1)} s)`,
    ]);
  });

  it('--verbose prints every start, every message, repeats included, and every end', async () => {
    const { progress, lines } = await plain(true);
    await progress.step('Start master', async (report) => {
      report('waiting');
      report('waiting');
      await vi.advanceTimersByTimeAsync(100);
    });
    expect(lines).toEqual([`${at(0)} Start master …`, `${at(0)}   Start master: waiting`, `${at(0)}   Start master: waiting`, `${at(0)} ✔ Start master (0.1 s)`]);
  });
});
