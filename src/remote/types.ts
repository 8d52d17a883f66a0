/**
 * The seam for every remote effect. Orchestration talks to hosts only through `Executor`;
 * the SSH implementation (ssh.ts) is the one that speaks to real hosts, and the recording one
 * (recording.ts) serves unit tests and --dry-run.
 */
import type { Duplex } from 'node:stream';

/** Where and how to reach one host; resolved from the inventory's `ssh:` defaults and per-node overrides. */
export interface SshTarget {
  /** Label used in messages: a node name, or "balancer". */
  label: string;
  host: string;
  port: number;
  user: string;
  /** Private key file; absent → ssh-agent (SSH_AUTH_SOCK). */
  identityFile?: string;
  knownHostsFile: string;
  /** `user@host[:port]` of a bastion to hop through. */
  jumpHost?: string;
  /** Run commands through `sudo -n` (non-root users). */
  sudo: boolean;
}

/** A command as an argv array; it is quoted for the remote shell in exactly one place (remote/quote.ts). */
export type Argv = readonly string[];

export interface ExecOptions {
  /** Fails the command (and asks sshd to kill it) after this many ms; default 120 s; 0 or Infinity: never (for `logs -f`). */
  timeoutMs?: number;
  /** Written to the command's stdin, then stdin is closed. */
  stdin?: string | Buffer;
  /** Do not throw on a non-zero exit; return it. */
  allowFailure?: boolean;
  /** Receives output as it arrives (for `logs -f`). */
  onStdout?: (chunk: Buffer) => void;
  onStderr?: (chunk: Buffer) => void;
  signal?: AbortSignal;
}

/** For file transfers and tunnels: a deadline (default: the pool's) and a cancel signal. */
export interface OpOptions {
  timeoutMs?: number;
  signal?: AbortSignal;
}

export interface ExecResult {
  code: number;
  stdout: string;
  stderr: string;
}

export interface Executor {
  readonly target: SshTarget;
  exec(argv: Argv, opts?: ExecOptions): Promise<ExecResult>;
  /** Atomic write: temporary file in the same folder, chmod, then rename over the target. Creates parent folders. */
  upload(path: string, content: string | Buffer, mode: number, opts?: OpOptions): Promise<void>;
  /** Reads a remote file; undefined if it does not exist. */
  readFile(path: string, opts?: OpOptions): Promise<Buffer | undefined>;
  /** A TCP connection to host:port as seen from this host (ssh direct-tcpip). */
  openTunnel(host: string, port: number, opts?: OpOptions): Promise<Duplex>;
  /** Streams a local readable into a remote command's stdin (e.g. `docker save | ssh docker load`). */
  execWithInput(argv: Argv, input: NodeJS.ReadableStream, opts?: ExecOptions): Promise<ExecResult>;
  close(): Promise<void>;
}
