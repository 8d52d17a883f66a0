/**
 * What orchestration needs from the outside world, and nothing of the CLI's own shape: where to
 * write, whether a person is watching, the signals that stop a run, and the seams (SSH, the lock's
 * store, time) that unit tests replace.
 */
import { setMaxListeners } from 'node:events';
import type { ChalkInstance } from 'chalk';
import type { StopSignalName } from '../errors.js';
import type { Output } from '../ui/output.js';
import type { SessionDeps } from './session.js';

export interface RunSignals {
  /** Aborted by the first SIGINT, SIGTERM or SIGHUP: finish or undo the step in hand, then stop. */
  readonly stop: AbortSignal;
  /** The signal that stopped the run, if one did. */
  readonly received: StopSignalName | undefined;
  /**
   * Registers work for a hard quit (a second signal): it gets about a second, then the process
   * exits. Returns the function that unregisters it.
   */
  onHardQuit(fn: () => Promise<void>): () => void;
}

export interface RunEnv {
  out: Output;
  style: ChalkInstance;
  /** A person at a terminal: prompts and the live task list are allowed. */
  interactive: boolean;
  json: boolean;
  verbose: boolean;
  yes: boolean;
  acceptNewHostKeys: boolean;
  signals: RunSignals;
  /** Replaces SSH, the lock store or the clock (unit tests). */
  deps?: Partial<SessionDeps>;
}

/** Signals that never fire: for runs no person can stop (benchmarks, some tests). */
export function quietSignals(): RunSignals {
  const stop = new AbortController().signal;
  // Every remote call in flight listens to it (see cli/main.ts).
  setMaxListeners(0, stop);
  return { stop, received: undefined, onHardQuit: () => () => undefined };
}
