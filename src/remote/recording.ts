/**
 * An Executor that touches no host: it records what would run, as data, and answers from a
 * responder and an in-memory file map. Unit tests of orchestration assert on `calls`; --dry-run
 * uses it to show what a deploy would do.
 */
import type { Duplex } from 'node:stream';
import { CliError } from '../errors.js';
import { commandFailedError } from './command-error.js';
import { toCommandLine } from './quote.js';
import type { Argv, ExecOptions, ExecResult, Executor, SshTarget } from './types.js';

export type RecordedCall =
  | { kind: 'exec'; argv: string[]; stdin?: string | Buffer; streamedInput?: true }
  | { kind: 'upload'; path: string; mode: number; content: string | Buffer };

/** Answers a command; undefined means "exit 0, no output". A partial result fills the rest with those defaults. */
export type Responder = (argv: string[]) => Partial<ExecResult> | undefined;

export interface RecordingExecutorOptions {
  target?: Partial<SshTarget>;
  responder?: Responder;
  /** Files the host already has, by absolute path. */
  files?: Record<string, string | Buffer>;
}

const DEFAULT_TARGET: SshTarget = {
  label: 'test',
  host: '127.0.0.1',
  port: 22,
  user: 'root',
  knownHostsFile: '~/.ssh/known_hosts',
  sudo: false,
};

export class RecordingExecutor implements Executor {
  readonly target: SshTarget;
  readonly calls: RecordedCall[] = [];
  /** The host's files as uploads leave them. */
  readonly files = new Map<string, Buffer>();
  private readonly responder: Responder;

  constructor(opts: RecordingExecutorOptions = {}) {
    this.target = { ...DEFAULT_TARGET, ...opts.target };
    this.responder = opts.responder ?? (() => undefined);
    for (const [path, content] of Object.entries(opts.files ?? {})) this.files.set(path, Buffer.from(content));
  }

  /** Only the commands, for compact assertions. */
  get commands(): string[][] {
    return this.calls.filter((c) => c.kind === 'exec').map((c) => c.argv);
  }

  async exec(argv: Argv, opts: ExecOptions = {}): Promise<ExecResult> {
    opts.signal?.throwIfAborted();
    const call: RecordedCall = { kind: 'exec', argv: [...argv] };
    if (opts.stdin !== undefined) call.stdin = opts.stdin;
    this.calls.push(call);
    return this.answer(argv, opts);
  }

  async execWithInput(argv: Argv, input: NodeJS.ReadableStream, opts: ExecOptions = {}): Promise<ExecResult> {
    opts.signal?.throwIfAborted();
    this.calls.push({ kind: 'exec', argv: [...argv], streamedInput: true });
    // Drain the input so a producer piping into it (e.g. `docker save`) is not left blocked.
    await new Promise<void>((resolve, reject) => {
      input.on('error', reject);
      input.on('end', resolve);
      input.resume();
    });
    return this.answer(argv, opts);
  }

  async upload(path: string, content: string | Buffer, mode: number): Promise<void> {
    this.calls.push({ kind: 'upload', path, mode, content });
    this.files.set(path, Buffer.from(content));
  }

  async readFile(path: string): Promise<Buffer | undefined> {
    return this.files.get(path);
  }

  async openTunnel(host: string, port: number): Promise<Duplex> {
    throw new CliError(`${this.target.label}: cannot open a tunnel to ${host}:${port} without a connection`, {
      node: this.target.label,
      hint: 'tunnels need a real SSH connection; this step cannot run under --dry-run',
    });
  }

  async close(): Promise<void> {}

  private answer(argv: Argv, opts: ExecOptions): ExecResult {
    // Building the command line also applies quote.ts's checks (NUL bytes, argv[0]), as the SSH executor would.
    const commandLine = toCommandLine(argv, { sudo: this.target.sudo });
    const partial = this.responder([...argv]) ?? {};
    const result: ExecResult = { code: partial.code ?? 0, stdout: partial.stdout ?? '', stderr: partial.stderr ?? '' };
    if (result.stdout !== '') opts.onStdout?.(Buffer.from(result.stdout));
    if (result.stderr !== '') opts.onStderr?.(Buffer.from(result.stderr));
    if (result.code !== 0 && opts.allowFailure !== true) {
      throw commandFailedError(this.target, commandLine, result.code, result.stderr);
    }
    return result;
  }
}
