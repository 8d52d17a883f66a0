/**
 * Every remote operation has a deadline: a host that stops answering must fail the operation in
 * hand within a bounded time, never hang it (and with it the run, the lock and the balancer).
 * ssh2 itself gives a handshake timeout and a keepalive, but nothing bounds an SFTP request, a
 * channel open or a wait for a free session on a connection whose peer went silent.
 */
import { HostUnreachableError } from '../errors.js';

export interface DeadlineOptions {
  /** The node or balancer, for messages. */
  label: string;
  /** What is being done, for messages: "read /opt/new-api/.env". */
  what: string;
  timeoutMs: number;
  signal?: AbortSignal | undefined;
  /** Settles when the connection the operation runs on closes: the operation fails at once. */
  closed?: Promise<unknown> | undefined;
  hint?: string;
}

/**
 * Runs `run` and settles with it, unless the deadline passes, the signal aborts or the connection
 * closes first. What `run` produces after that is handed to `onLate` (to close a channel that
 * opened too late), never lost.
 */
export function bounded<T>(opts: DeadlineOptions, run: () => Promise<T>, onLate?: (value: T) => void): Promise<T> {
  if (opts.signal?.aborted) return Promise.reject(abortReason(opts.signal));
  return new Promise<T>((resolve, reject) => {
    let settled = false;
    const settle = (fn: () => void): void => {
      if (settled) return;
      settled = true;
      clearTimeout(timer);
      opts.signal?.removeEventListener('abort', onAbort);
      fn();
    };
    const onAbort = (): void => settle(() => reject(abortReason(opts.signal!)));
    const timer =
      Number.isFinite(opts.timeoutMs) && opts.timeoutMs > 0
        ? setTimeout(
            () =>
              settle(() =>
                reject(
                  new HostUnreachableError(`${opts.label}: no answer within ${seconds(opts.timeoutMs)} to ${opts.what}`, {
                    node: opts.label,
                    hint: opts.hint ?? 'the host stopped answering: check that it is up and reachable, then run again',
                  }),
                ),
              ),
            opts.timeoutMs,
          )
        : undefined;
    opts.signal?.addEventListener('abort', onAbort, { once: true });
    opts.closed?.then(() =>
      settle(() =>
        reject(
          new HostUnreachableError(`${opts.label}: lost the connection while trying to ${opts.what}`, {
            node: opts.label,
            hint: 'check the network to the host and run again',
          }),
        ),
      ),
    );
    run().then(
      (value) => {
        if (settled) onLate?.(value);
        else settle(() => resolve(value));
      },
      (err: unknown) => settle(() => reject(err)),
    );
  });
}

export function abortReason(signal: AbortSignal): Error {
  const reason: unknown = signal.reason;
  return reason instanceof Error ? reason : new Error('aborted');
}

function seconds(ms: number): string {
  return ms % 1000 === 0 ? `${ms / 1000} s` : `${(ms / 1000).toFixed(1)} s`;
}
