/**
 * An Executor seen through the run's policy: every call carries the run's abort signal, and once
 * the run is stopping (Ctrl-C, SIGTERM, SIGHUP) every call — new, or already in flight when the
 * stop came — gets a short deadline, so a host that went away cannot hold the run's wind-down for
 * more than a few seconds.
 */
import type { Duplex } from 'node:stream';
import { HostUnreachableError } from '../errors.js';
import type { Argv, ExecOptions, ExecResult, Executor, OpOptions } from './types.js';

export type CallKind = 'exec' | 'op';

export interface ExecutorPolicy {
  /** Aborts every call in flight (a hard quit). */
  signal(): AbortSignal | undefined;
  /** Aborted when the run starts stopping. */
  stop(): AbortSignal | undefined;
  /** How long any call may still take once the run is stopping. */
  stopCapMs(kind: CallKind): number;
}

/** How long a host has to answer `true` once the run is stopping, before its calls in flight are given up. */
const LIVENESS_MS = 2_000;

export function guarded(inner: Executor, policy: ExecutorPolicy): Executor {
  const label = inner.target.label;
  // Once stopping, a command still running (compose up, say) keeps its 30 s only if its host
  // still answers: a host that went silent gives every call in flight up within seconds.
  let liveness: Promise<boolean> | undefined;
  const alive = () =>
    (liveness ??= inner.exec(['true'], { timeoutMs: LIVENESS_MS, ...(policy.signal() ? { signal: policy.signal()! } : {}) }).then(
      () => true,
      (e: unknown) => !(e instanceof HostUnreachableError),
    ));
  const call = <T, O extends { signal?: AbortSignal; timeoutMs?: number }>(kind: CallKind, opts: O | undefined, run: (o: O) => Promise<T>): Promise<T> => {
    const o = { ...(opts ?? {}) } as O;
    const cap = policy.stopCapMs(kind);
    const stop = policy.stop();
    const late = new AbortController();
    let timer: ReturnType<typeof setTimeout> | undefined;
    const arm = () => {
      if (kind === 'exec') {
        void alive().then((ok) => {
          if (!ok) late.abort(new HostUnreachableError(`${label}: the host did not answer within ${LIVENESS_MS / 1000} s once the run was stopping`, { node: label, hint: 'check that the host is up and reachable, then run the command again' }));
        });
      }
      timer = setTimeout(
        () =>
          late.abort(
            new HostUnreachableError(`${label}: no answer within ${cap / 1000} s once the run was stopping`, {
              node: label,
              hint: 'the host stopped answering: check that it is up and reachable, then run the command again',
            }),
          ),
        cap,
      );
    };
    if (stop?.aborted) {
      const current = o.timeoutMs;
      o.timeoutMs = current === undefined || current <= 0 || !Number.isFinite(current) ? cap : Math.min(current, cap);
    } else {
      stop?.addEventListener('abort', arm, { once: true });
    }
    const signals = [o.signal, policy.signal(), late.signal].filter((s): s is AbortSignal => s !== undefined);
    o.signal = AbortSignal.any(signals);
    return run(o).finally(() => {
      clearTimeout(timer);
      stop?.removeEventListener('abort', arm);
    });
  };
  return {
    get target() {
      return inner.target;
    },
    exec: (argv: Argv, opts?: ExecOptions): Promise<ExecResult> => call('exec', opts, (o) => inner.exec(argv, o)),
    execWithInput: (argv: Argv, input: NodeJS.ReadableStream, opts?: ExecOptions): Promise<ExecResult> => call('exec', opts, (o) => inner.execWithInput(argv, input, o)),
    upload: (path: string, content: string | Buffer, mode: number, opts?: OpOptions): Promise<void> => call('op', opts, (o) => inner.upload(path, content, mode, o)),
    readFile: (path: string, opts?: OpOptions): Promise<Buffer | undefined> => call('op', opts, (o) => inner.readFile(path, o)),
    openTunnel: (host: string, port: number, opts?: OpOptions): Promise<Duplex> => call('op', opts, (o) => inner.openTunnel(host, port, o)),
    close: () => inner.close(),
  };
}
