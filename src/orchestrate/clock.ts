/**
 * Time, as a seam: the health gate, the lock's renewal and the drain wait read it through this,
 * so their unit tests run a whole rollout's timing in milliseconds with a manual clock.
 */
import { abortReason } from '../remote/deadline.js';

export interface Clock {
  now(): number;
  /** Resolves after `ms`, or rejects with the signal's reason as soon as it aborts. */
  sleep(ms: number, signal?: AbortSignal): Promise<void>;
}

export const systemClock: Clock = {
  now: () => Date.now(),
  sleep: (ms, signal) =>
    new Promise<void>((resolve, reject) => {
      if (signal?.aborted) return reject(abortReason(signal));
      const onAbort = (): void => {
        clearTimeout(timer);
        reject(abortReason(signal!));
      };
      const timer = setTimeout(() => {
        signal?.removeEventListener('abort', onAbort);
        resolve();
      }, ms);
      signal?.addEventListener('abort', onAbort, { once: true });
    }),
};

/**
 * A clock that moves only when told to, for unit tests: `sleep` resolves when `advance` passes
 * its wake-up time. `autoAdvance` moves time forward by itself whenever every sleeper waits, so
 * a test can run an orchestration to its end without stepping it by hand.
 */
export class ManualClock implements Clock {
  private time: number;
  private sleepers: { at: number; resolve: () => void; reject: (e: Error) => void; signal?: AbortSignal; onAbort?: () => void }[] = [];
  private auto: ReturnType<typeof setInterval> | undefined;

  constructor(start = Date.UTC(2026, 10, 26, 12, 0, 0)) {
    this.time = start;
  }

  now(): number {
    return this.time;
  }

  sleep(ms: number, signal?: AbortSignal): Promise<void> {
    if (signal?.aborted) return Promise.reject(abortReason(signal));
    return new Promise<void>((resolve, reject) => {
      const sleeper: ManualClock['sleepers'][number] = { at: this.time + Math.max(0, ms), resolve, reject };
      if (signal) {
        sleeper.signal = signal;
        sleeper.onAbort = () => {
          this.sleepers = this.sleepers.filter((s) => s !== sleeper);
          reject(abortReason(signal));
        };
        signal.addEventListener('abort', sleeper.onAbort, { once: true });
      }
      this.sleepers.push(sleeper);
    });
  }

  /** Moves time forward, waking every sleeper whose time has come, in order. */
  async advance(ms: number): Promise<void> {
    const target = this.time + ms;
    for (;;) {
      const next = this.sleepers.filter((s) => s.at <= target).sort((a, b) => a.at - b.at)[0];
      if (!next) break;
      this.time = Math.max(this.time, next.at);
      this.sleepers = this.sleepers.filter((s) => s !== next);
      if (next.signal && next.onAbort) next.signal.removeEventListener('abort', next.onAbort);
      next.resolve();
      // Let the woken code run up to its next sleep before waking the one after.
      await flush();
    }
    this.time = target;
  }

  /** Advances to the earliest sleeper again and again (on real timers) until stopped. */
  startAutoAdvance(): () => void {
    this.auto = setInterval(() => {
      const next = [...this.sleepers].sort((a, b) => a.at - b.at)[0];
      if (next) void this.advance(next.at - this.time);
    }, 1);
    return () => clearInterval(this.auto);
  }
}

async function flush(): Promise<void> {
  for (let i = 0; i < 5; i++) await new Promise<void>((r) => setImmediate(r));
}
