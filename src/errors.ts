/**
 * Every error the CLI shows on purpose is a CliError: one line saying what failed, where,
 * and a hint saying what to do next. The top level (cli/main.ts) picks the exit code from it
 * and prints a stack only under --verbose; anything else is labelled internal.
 */
export const ExitCode = {
  ok: 0,
  failed: 1,
  badInput: 2,
  locked: 3,
  /** SIGINT; SIGTERM and SIGHUP end a run the same way, with 143 and 129. */
  interrupted: 130,
  terminated: 143,
  hangup: 129,
} as const;
export type ExitCode = (typeof ExitCode)[keyof typeof ExitCode];

export class CliError extends Error {
  readonly exitCode: ExitCode;
  readonly hint: string | undefined;
  /** The node (or balancer) the failure happened on, when there is one. */
  readonly node: string | undefined;

  constructor(message: string, opts: { exitCode?: ExitCode; hint?: string; node?: string; cause?: unknown } = {}) {
    super(message, opts.cause === undefined ? undefined : { cause: opts.cause });
    this.name = 'CliError';
    this.exitCode = opts.exitCode ?? ExitCode.failed;
    this.hint = opts.hint;
    this.node = opts.node;
  }
}

/** Bad flags or a bad inventory: exit 2, and nothing on any host has changed. */
export class InputError extends CliError {
  constructor(message: string, hint?: string) {
    super(message, { exitCode: ExitCode.badInput, ...(hint === undefined ? {} : { hint }) });
    this.name = 'InputError';
  }
}

/** Another operator holds the cluster lock. */
export class LockedError extends CliError {
  constructor(message: string, hint?: string) {
    super(message, { exitCode: ExitCode.locked, ...(hint === undefined ? {} : { hint }) });
    this.name = 'LockedError';
  }
}

/** The lock was lost mid-run (expired, broken, or could not be confirmed): stop before the next change. */
export class LockLostError extends CliError {
  constructor(message: string, hint?: string) {
    super(message, { exitCode: ExitCode.locked, ...(hint === undefined ? {} : { hint }) });
    this.name = 'LockLostError';
  }
}

export type StopSignalName = 'SIGINT' | 'SIGTERM' | 'SIGHUP';

export const SIGNAL_EXIT: Record<StopSignalName, ExitCode> = { SIGINT: ExitCode.interrupted, SIGTERM: ExitCode.terminated, SIGHUP: ExitCode.hangup };

export class InterruptedError extends CliError {
  constructor(message = 'interrupted', signal: StopSignalName = 'SIGINT') {
    super(message, { exitCode: SIGNAL_EXIT[signal] });
    this.name = 'InterruptedError';
  }
}

/**
 * The host did not answer (connection refused, timed out, dropped): as opposed to a command that
 * ran and failed. A gate that sees only these gives up on the host as lost.
 */
export class HostUnreachableError extends CliError {
  constructor(message: string, opts: { node?: string; hint?: string; cause?: unknown } = {}) {
    super(message, opts);
    this.name = 'HostUnreachableError';
  }
}

export function errorMessage(err: unknown): string {
  return err instanceof Error ? err.message : String(err);
}
