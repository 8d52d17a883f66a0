/**
 * The Executor that speaks SSH (ssh2), and the pool that keeps one connection per host per run.
 *
 * One connection per host matters twice: a run over fifty nodes would otherwise pay fifty
 * handshakes per step, and sshd's MaxStartups starts dropping new connections from one client
 * long before that. Everything a host needs (commands, SFTP, tunnels, hops through it) shares the
 * pooled connection.
 */
import { createPrivateKey, randomBytes } from 'node:crypto';
import { readFile as readLocalFile } from 'node:fs/promises';
import { createServer, type AddressInfo, type Socket } from 'node:net';
import { constants as osConstants, homedir } from 'node:os';
import { join, posix } from 'node:path';
import type { Duplex } from 'node:stream';
import ssh2 from 'ssh2';
import type { AuthMethod, ClientChannel, ConnectConfig, ParsedKey, SFTPWrapper } from 'ssh2';
import { CliError, HostUnreachableError, InputError, errorMessage } from '../errors.js';
import { commandFailedError, shownCommand } from './command-error.js';
import { bounded } from './deadline.js';
import {
  appendHostKey,
  checkHostKey,
  fingerprint,
  keyTypeOfBlob,
  knownHostName,
  knownKeyTypes,
  readKnownHosts,
  KnownHostsIndex,
  type KnownHostsEntry,
} from './known-hosts.js';
import { toCommandLine } from './quote.js';
import type { Argv, ExecOptions, ExecResult, Executor, OpOptions, SshTarget } from './types.js';

const { Client, utils } = ssh2;
type SshClient = InstanceType<typeof Client>;

export interface SshPoolOptions {
  /** Record keys of hosts not yet in known_hosts (never replaces a changed key). */
  acceptNewHostKeys?: boolean;
  /** Asked once per encrypted key file per run; without it an encrypted key is an error. */
  askPassphrase?: (file: string) => Promise<string>;
  /** Handshake timeout (ssh2 readyTimeout). Default 10 s. */
  connectTimeoutMs?: number;
  /** SSH-level keepalive: a long health wait is not cut by a NAT, and a host that drops is noticed within about 20 s (4 missed). Default 5 s. */
  keepaliveIntervalMs?: number;
  /** Default for ExecOptions.timeoutMs. Default 120 s. */
  execTimeoutMs?: number;
  /** Default deadline of an upload, a file read or a tunnel open. Default 30 s. */
  opTimeoutMs?: number;
  /** ssh-agent socket; default SSH_AUTH_SOCK. */
  agentSocket?: string;
  /** Output kept per stream of one command. Default 16 MiB. */
  maxOutputBytes?: number;
}

export interface PoolStats {
  /** Connections opened (attempted) per `user@host:port` during this run. */
  opened: Record<string, number>;
  /** Connections currently open or being opened. */
  open: number;
}

const DEFAULT_CONNECT_TIMEOUT_MS = 10_000;
const DEFAULT_KEEPALIVE_MS = 5_000;
const DEFAULT_EXEC_TIMEOUT_MS = 120_000;
const DEFAULT_OP_TIMEOUT_MS = 30_000;
const DEFAULT_MAX_OUTPUT = 16 * 1024 * 1024;
// OpenSSH's MaxSessions defaults to 10 session channels per connection; one is kept for SFTP.
const MAX_EXEC_SESSIONS = 9;

// ssh2's defaults, in its order; recorded key types are moved to the front (see preferredHostKeyAlgorithms).
const HOST_KEY_ALGORITHMS = [
  'ssh-ed25519',
  'ecdsa-sha2-nistp256',
  'ecdsa-sha2-nistp384',
  'ecdsa-sha2-nistp521',
  'rsa-sha2-512',
  'rsa-sha2-256',
  'ssh-rsa',
];

/** `~` and `~/…` to the home folder; inventories are shared between operators, so paths are written with `~`. */
export function expandHome(path: string): string {
  if (path === '~') return homedir();
  if (path.startsWith('~/')) return join(homedir(), path.slice(2));
  return path;
}

/** `user@host[:port]` (or `user@[v6addr]:port`); user defaults to the node's SSH user. */
export function parseJumpHost(spec: string, defaultUser: string): { user: string; host: string; port: number } {
  const m = /^(?:([^@\s]+)@)?(?:\[([^\]\s]+)\]|([^:@\s[\]]+))(?::(\d{1,5}))?$/.exec(spec.trim());
  const port = m?.[4] === undefined ? 22 : Number(m[4]);
  if (m === null || port < 1 || port > 65535) {
    throw new InputError(`ssh.jumpHost: expected user@host[:port], got "${spec}"`, 'for example: jumpHost: ops@bastion.example.com:2222');
  }
  return { user: m[1] ?? defaultUser, host: (m[2] ?? m[3])!, port };
}

/** Host key algorithms with the types already recorded for this host first, as OpenSSH orders them. */
export function preferredHostKeyAlgorithms(knownTypes: readonly string[]): string[] {
  const first = knownTypes.flatMap((type) =>
    type === 'ssh-rsa' ? ['rsa-sha2-512', 'rsa-sha2-256', 'ssh-rsa'] : HOST_KEY_ALGORITHMS.includes(type) ? [type] : [],
  );
  return [...new Set([...first, ...HOST_KEY_ALGORITHMS])];
}

/**
 * ssh2 signs each login with the key's PEM text, which OpenSSL parses again every time (about
 * 0.4 ms a host, 40 ms a run of a hundred). The key keeps its PEM in a property of its own, and
 * the signing call takes a parsed KeyObject as well: swap it in once. Should ssh2 ever store
 * the key otherwise, nothing is swapped and it signs as before.
 */
function withKeyObject(key: ParsedKey): ParsedKey {
  const pem = key.getPrivatePEM();
  const holder = Object.getOwnPropertySymbols(key).find((s) => (key as unknown as Record<symbol, unknown>)[s] === pem);
  if (typeof pem === 'string' && holder !== undefined) (key as unknown as Record<symbol, unknown>)[holder] = createPrivateKey(pem);
  return key;
}

function poolKey(target: Pick<SshTarget, 'user' | 'host' | 'port'>): string {
  return `${target.user}@${target.host}:${target.port}`;
}

function addressOf(target: SshTarget): string {
  return target.jumpHost === undefined ? poolKey(target) : `${poolKey(target)} via ${target.jumpHost}`;
}

class Semaphore {
  private free: number;
  private readonly waiting: (() => void)[] = [];
  constructor(size: number) {
    this.free = size;
  }
  /** Waits for a free slot; a signal that aborts meanwhile leaves the queue without taking one. */
  async acquire(signal?: AbortSignal): Promise<() => void> {
    if (this.free > 0) this.free--;
    else {
      await new Promise<void>((resolve, reject) => {
        const waiter = (): void => {
          signal?.removeEventListener('abort', onAbort);
          resolve();
        };
        const onAbort = (): void => {
          const i = this.waiting.indexOf(waiter);
          if (i >= 0) this.waiting.splice(i, 1);
          reject(signal?.reason instanceof Error ? signal.reason : new Error('aborted'));
        };
        if (signal?.aborted) return onAbort();
        signal?.addEventListener('abort', onAbort, { once: true });
        this.waiting.push(waiter);
      });
    }
    let released = false;
    return () => {
      if (released) return;
      released = true;
      const next = this.waiting.shift();
      if (next !== undefined) next();
      else this.free++;
    };
  }
}

/** One live, authenticated connection and what is shared over it. */
class Connection {
  closed = false;
  /** Settles when the connection closes: operations in flight on it fail at once. */
  readonly whenClosed: Promise<void>;
  readonly sessions = new Semaphore(MAX_EXEC_SESSIONS);
  private sftpSession: Promise<SFTPWrapper> | undefined;

  constructor(
    readonly client: SshClient,
    readonly target: SshTarget,
  ) {
    this.whenClosed = new Promise<void>((resolve) => {
      client.once('close', () => {
        this.closed = true;
        resolve();
      });
    });
  }

  /** One SFTP session per connection, opened on first use. */
  sftp(): Promise<SFTPWrapper> {
    this.sftpSession ??= new Promise<SFTPWrapper>((resolve, reject) => {
      this.client.sftp((err, sftp) => {
        if (err !== undefined && err !== null) {
          this.sftpSession = undefined;
          reject(
            new CliError(`${this.target.label}: cannot start SFTP on ${this.target.host}: ${err.message}`, {
              node: this.target.label,
              hint: 'enable the SFTP subsystem in the host\'s sshd_config ("Subsystem sftp internal-sftp")',
              cause: err,
            }),
          );
          return;
        }
        sftp.once('close', () => {
          this.sftpSession = undefined;
        });
        resolve(sftp);
      });
    });
    return this.sftpSession;
  }

  async end(): Promise<void> {
    if (this.closed) return;
    await new Promise<void>((resolve) => {
      // A host that answers closes at once; one that went silent is not waited for.
      const timer = setTimeout(() => {
        destroySocket(this.client);
        resolve();
      }, 500);
      this.client.once('close', () => {
        clearTimeout(timer);
        resolve();
      });
      this.client.end();
    });
  }
}

export class SshPool {
  private readonly connections = new Map<string, Promise<Connection>>();
  private readonly executors = new Map<string, SshExecutor>();
  private readonly keys = new Map<string, Promise<ParsedKey>>();
  private readonly knownHostsFiles = new Map<string, Promise<KnownHostsIndex>>();
  private readonly opened = new Map<string, number>();

  constructor(readonly options: SshPoolOptions = {}) {}

  /**
   * The executor for a target; connects lazily, on its first command. Two targets on one
   * `user@host:port` (the master and the balancer on one machine) get their own executors, so
   * messages carry the right label, over the one shared connection.
   */
  getExecutor(target: SshTarget): SshExecutor {
    const key = JSON.stringify([target.label, poolKey(target), target.sudo, target.jumpHost ?? null]);
    let executor = this.executors.get(key);
    if (executor === undefined) {
      executor = new SshExecutor(this, target);
      this.executors.set(key, executor);
    }
    return executor;
  }

  /** The pooled connection for a target; concurrent callers share one connect. */
  connection(target: SshTarget): Promise<Connection> {
    const key = poolKey(target);
    const existing = this.connections.get(key);
    if (existing !== undefined) return existing;
    const connecting = this.connect(target, () => {
      if (this.connections.get(key) === connecting) this.connections.delete(key);
    });
    this.connections.set(key, connecting);
    // A failed connect is forgotten, so a later attempt (after the operator fixed something) retries.
    connecting.catch(() => {
      if (this.connections.get(key) === connecting) this.connections.delete(key);
    });
    return connecting;
  }

  /** Closes the connection of one target, if open. */
  async closeConnection(target: SshTarget): Promise<void> {
    const key = poolKey(target);
    const connecting = this.connections.get(key);
    if (connecting === undefined) return;
    this.connections.delete(key);
    const conn = await connecting.catch(() => undefined);
    await conn?.end();
  }

  async closeAll(): Promise<void> {
    const all = [...this.connections.values()];
    this.connections.clear();
    // Hosts reached through a jump host close before it: their sockets run inside its connection.
    const conns = (await Promise.all(all.map((c) => c.catch(() => undefined)))).filter((c) => c !== undefined);
    await Promise.all(conns.filter((c) => c.target.jumpHost !== undefined).map((c) => c.end()));
    await Promise.all(conns.filter((c) => c.target.jumpHost === undefined).map((c) => c.end()));
  }

  stats(): PoolStats {
    return { opened: Object.fromEntries(this.opened), open: this.connections.size };
  }

  private async connect(target: SshTarget, onClose: () => void): Promise<Connection> {
    // Everything that can fail without the network (key file, passphrase, known_hosts) fails first.
    const auth = await this.authMethod(target);
    const knownHostsFile = expandHome(target.knownHostsFile);
    let entries: KnownHostsEntry[];
    try {
      entries = (await this.knownHosts(knownHostsFile)).forHost(target.host, target.port);
    } catch (err) {
      throw new CliError(`${target.label}: cannot read ${knownHostsFile}: ${errorMessage(err)}`, {
        node: target.label,
        hint: 'check ssh.knownHostsFile and its permissions',
        cause: err,
      });
    }

    let sock: Duplex | undefined;
    const jump = target.jumpHost === undefined ? undefined : parseJumpHost(target.jumpHost, target.user);
    // A host never hops through itself: jumpHost is usually an inventory-wide default, and the
    // bastion may itself be a node or the balancer (and waiting on its own pooled connection would hang).
    if (jump !== undefined && target.jumpHost !== undefined && poolKey(jump) !== poolKey(target)) {
      const jumpTarget: SshTarget = {
        label: `jump host ${poolKey(jump)}`,
        ...jump,
        knownHostsFile: target.knownHostsFile,
        sudo: false,
        ...(target.identityFile === undefined ? {} : { identityFile: target.identityFile }),
      };
      const jumpConn = await this.connection(jumpTarget);
      try {
        sock = await bounded(
          { label: target.label, what: `reach ${target.host}:${target.port} through the jump host`, timeoutMs: this.options.connectTimeoutMs ?? DEFAULT_CONNECT_TIMEOUT_MS, closed: jumpConn.whenClosed },
          () => forwardOut(jumpConn.client, target.host, target.port),
          (late) => late.destroy(),
        );
      } catch (err) {
        throw new HostUnreachableError(
          `${target.label}: jump host ${target.jumpHost} cannot reach ${target.host}:${target.port}: ${errorMessage(err)}`,
          {
            node: target.label,
            hint: `is ${target.host} up and sshd listening on port ${target.port}, as seen from the jump host? (its sshd must allow AllowTcpForwarding)`,
            cause: err,
          },
        );
      }
    }

    const key = poolKey(target);
    this.opened.set(key, (this.opened.get(key) ?? 0) + 1);

    const client = new Client();
    let hostKeyError: CliError | undefined;
    let acceptedKey: Buffer | undefined;
    // ssh2 takes any return value other than undefined as the synchronous verdict, so this must
    // not be an async function: a returned Promise would count as "accepted" for every key.
    const hostVerifier = (blob: Buffer, verify: (valid: boolean) => void): void => {
      // Re-keying shows the same key again; it was verified (and perhaps recorded) the first time.
      if (acceptedKey !== undefined) {
        verify(acceptedKey.equals(blob));
        return;
      }
      this.verifyHostKeyOrRefuse(target, knownHostsFile, entries, blob).then(
        () => {
          acceptedKey = Buffer.from(blob);
          verify(true);
        },
        (err: unknown) => {
          hostKeyError =
            err instanceof CliError
              ? err
              : new CliError(`${target.label}: cannot verify the host key: ${errorMessage(err)}`, { node: target.label, cause: err });
          verify(false);
        },
      );
    };

    const config: ConnectConfig = {
      host: target.host,
      port: target.port,
      username: target.user,
      readyTimeout: this.options.connectTimeoutMs ?? DEFAULT_CONNECT_TIMEOUT_MS,
      keepaliveInterval: this.options.keepaliveIntervalMs ?? DEFAULT_KEEPALIVE_MS,
      keepaliveCountMax: 4,
      hostVerifier,
      authHandler: [auth],
      algorithms: {
        serverHostKey: preferredHostKeyAlgorithms(
          knownKeyTypes(entries, target.host, target.port),
        ) as NonNullable<NonNullable<ConnectConfig['algorithms']>['serverHostKey']>,
      },
      ...(sock === undefined ? {} : { sock }),
    };

    return new Promise<Connection>((resolve, reject) => {
      let settled = false;
      const fail = (err: unknown): void => {
        if (settled) return;
        settled = true;
        destroySocket(client);
        reject(hostKeyError ?? connectError(target, err, this.options.connectTimeoutMs ?? DEFAULT_CONNECT_TIMEOUT_MS));
      };
      client.once('ready', () => {
        settled = true;
        // After the handshake, errors (a dropped link, a keepalive timeout) end in 'close', which
        // evicts the connection; the 'error' listener stays so ssh2's errors never go unhandled.
        client.once('close', () => {
          onClose();
          sock?.destroy();
        });
        resolve(new Connection(client, target));
      });
      client.on('error', fail);
      client.once('close', () => fail(new Error('the server closed the connection during the handshake')));
      try {
        client.connect(config);
        // Every exec is a few small packets each way: with Nagle's algorithm each waits for the
        // other side's delayed ACK (~40 ms per round trip here). Through a jump host the stream
        // is a channel of its connection, which has this set already.
        client.setNoDelay(true);
      } catch (err) {
        fail(err);
      }
    });
  }

  private async verifyHostKeyOrRefuse(
    target: SshTarget,
    file: string,
    entries: readonly KnownHostsEntry[],
    blob: Buffer,
  ): Promise<void> {
    const keyType = keyTypeOfBlob(blob);
    const keyBase64 = blob.toString('base64');
    const verdict = checkHostKey(entries, target.host, target.port, keyType, keyBase64);
    const name = knownHostName(target.host, target.port);
    const shown = `${keyType} ${fingerprint(blob)}`;
    switch (verdict.status) {
      case 'match':
        return;
      case 'unknown':
        if (this.options.acceptNewHostKeys === true) {
          await appendHostKey(file, target.host, target.port, keyType, keyBase64);
          this.knownHostsFiles.delete(file);
          return;
        }
        throw new CliError(`${target.label}: the host key of ${name} is unknown (${shown}); it is not in ${file}`, {
          node: target.label,
          hint:
            `compare the fingerprint with \`ssh-keygen -lf /etc/ssh/ssh_host_*_key.pub\` on the host, then record it with ` +
            `\`ssh-keyscan -p ${target.port} ${target.host} >> ${file}\` or run again with --accept-new-host-keys`,
        });
      case 'changed':
        throw new CliError(`${target.label}: the host key of ${name} changed (now ${shown}); it does not match line ${verdict.line} of ${file}`, {
          node: target.label,
          hint:
            `if the server was reinstalled, remove the old line ${verdict.line} of ${file} ` +
            `(ssh-keygen -R '${name}' -f ${file}); otherwise someone may be intercepting the connection`,
        });
      case 'revoked':
        throw new CliError(`${target.label}: the host key of ${name} (${shown}) is revoked on line ${verdict.line} of ${file}`, {
          node: target.label,
          hint: 'the server presents a key marked @revoked: do not connect until its host key is replaced',
        });
    }
  }

  private async authMethod(target: SshTarget): Promise<AuthMethod> {
    if (target.identityFile !== undefined && target.identityFile !== '') {
      return { type: 'publickey', username: target.user, key: await this.privateKey(expandHome(target.identityFile)) } as AuthMethod;
    }
    const agent = this.options.agentSocket ?? process.env['SSH_AUTH_SOCK'];
    if (agent === undefined || agent === '') {
      throw new CliError(
        `${target.label}: no SSH key to log in to ${target.host} with: ssh.identityFile is not set and no ssh-agent is running (SSH_AUTH_SOCK is empty)`,
        { node: target.label, hint: 'set ssh.identityFile in the inventory, or start ssh-agent and `ssh-add` your key' },
      );
    }
    return { type: 'agent', username: target.user, agent } as AuthMethod;
  }

  /** Reads and indexes a known_hosts file once per run (again after this run added a key to it). */
  private knownHosts(file: string): Promise<KnownHostsIndex> {
    let index = this.knownHostsFiles.get(file);
    if (index === undefined) {
      index = readKnownHosts(file).then((entries) => new KnownHostsIndex(entries));
      index.catch(() => this.knownHostsFiles.delete(file));
      this.knownHostsFiles.set(file, index);
    }
    return index;
  }

  /** Parses (and decrypts) a key file once per run, however many hosts use it. */
  private privateKey(file: string): Promise<ParsedKey> {
    let key = this.keys.get(file);
    if (key === undefined) {
      key = this.loadPrivateKey(file);
      this.keys.set(file, key);
    }
    return key;
  }

  private async loadPrivateKey(file: string): Promise<ParsedKey> {
    let data: Buffer;
    try {
      data = await readLocalFile(file);
    } catch (err) {
      throw new CliError(`cannot read the SSH key ${file}: ${(err as NodeJS.ErrnoException).code ?? errorMessage(err)}`, {
        hint: 'check ssh.identityFile: it names the private key file (not the .pub)',
        cause: err,
      });
    }
    let parsed = utils.parseKey(data);
    if (parsed instanceof Error && /no passphrase given/i.test(parsed.message)) {
      const ask = this.options.askPassphrase;
      if (ask === undefined) {
        throw new CliError(`the SSH key ${file} is encrypted, and no passphrase can be asked for here`, {
          hint: `load it into ssh-agent (\`ssh-add ${file}\`) and leave ssh.identityFile unset, or run in a terminal`,
        });
      }
      parsed = utils.parseKey(data, await ask(file));
      if (parsed instanceof Error) {
        throw new CliError(`cannot decrypt the SSH key ${file}: wrong passphrase?`, {
          hint: `check the passphrase with \`ssh-keygen -y -f ${file}\``,
        });
      }
    }
    if (parsed instanceof Error) {
      throw new CliError(`cannot use ${file} as an SSH private key: ${parsed.message}`, {
        hint: 'ssh.identityFile must name an OpenSSH, PEM or PuTTY private key (not the .pub)',
      });
    }
    // ssh2's types omit that a file with several keys parses to an array; OpenSSH files hold one.
    const key = (Array.isArray(parsed) ? parsed[0] : parsed) as ParsedKey;
    if (!key.isPrivateKey()) {
      throw new CliError(`${file} is a public key, not a private one`, {
        hint: 'ssh.identityFile must name the private key, without .pub',
      });
    }
    return withKeyObject(key);
  }
}

function connectError(target: SshTarget, err: unknown, timeoutMs: number): CliError {
  const address = addressOf(target);
  const e = err as { level?: string; code?: string; message?: string };
  const listening = `is the host up and is sshd listening on port ${target.port}?`;
  const opts = (hint: string) => ({ node: target.label, hint, cause: err });
  if (e.level === 'client-authentication') {
    return new CliError(
      `${target.label}: SSH login to ${address} was refused`,
      opts(`check ssh.user / ssh.identityFile / ssh-agent (\`ssh-add -l\`), and that the key is in ~${target.user}/.ssh/authorized_keys on ${target.host}`),
    );
  }
  if (e.level === 'client-timeout') {
    return new HostUnreachableError(`${target.label}: SSH connection to ${address} timed out after ${timeoutMs / 1000} s`, opts(`${listening} A firewall may be dropping the connection`));
  }
  switch (e.code) {
    case 'ECONNREFUSED':
      return new HostUnreachableError(`${target.label}: SSH connection to ${address} refused`, opts(listening));
    case 'ENOTFOUND':
    case 'EAI_AGAIN':
      return new CliError(`${target.label}: cannot resolve ${target.host}`, opts('check the host name in the inventory and your DNS'));
    case 'EHOSTUNREACH':
    case 'ENETUNREACH':
    case 'ETIMEDOUT':
    case 'ECONNRESET':
      return new HostUnreachableError(`${target.label}: cannot reach ${address} (${e.code})`, opts(listening));
    default:
      return new HostUnreachableError(`${target.label}: SSH connection to ${address} failed: ${e.message ?? String(err)}`, opts(listening));
  }
}

function forwardOut(client: SshClient, host: string, port: number): Promise<ClientChannel> {
  return new Promise((resolve, reject) => {
    client.forwardOut('127.0.0.1', 0, host, port, (err, channel) => {
      if (err !== undefined && err !== null) reject(err);
      else resolve(channel);
    });
  });
}

interface RawResult {
  code: number;
  stdout: Buffer;
  stderr: Buffer;
}

/** Keeps at most `cap` bytes: the head (stdout, which callers parse) or the tail (stderr, whose end explains a failure). */
class Collector {
  private chunks: Buffer[] = [];
  private size = 0;
  overflowed = false;
  constructor(
    private readonly cap: number,
    private readonly keep: 'head' | 'tail',
  ) {}
  push(chunk: Buffer): void {
    if (this.keep === 'head') {
      if (this.size + chunk.length > this.cap) {
        this.overflowed = true;
        return;
      }
    }
    this.chunks.push(chunk);
    this.size += chunk.length;
    while (this.keep === 'tail' && this.size > this.cap && this.chunks.length > 1) {
      this.size -= this.chunks.shift()!.length;
      this.overflowed = true;
    }
  }
  get buffer(): Buffer {
    return Buffer.concat(this.chunks);
  }
}

export class SshExecutor implements Executor {
  constructor(
    private readonly pool: SshPool,
    readonly target: SshTarget,
  ) {}

  /** Opens (or reuses) the connection; `check` calls this to prove a host is reachable. */
  async connect(): Promise<void> {
    await this.pool.connection(this.target);
  }

  async exec(argv: Argv, opts: ExecOptions = {}): Promise<ExecResult> {
    return asText(await this.run(argv, opts));
  }

  async execWithInput(argv: Argv, input: NodeJS.ReadableStream, opts: ExecOptions = {}): Promise<ExecResult> {
    return asText(await this.run(argv, opts, input));
  }

  async upload(path: string, content: string | Buffer, mode: number, opts: OpOptions = {}): Promise<void> {
    if (!path.startsWith('/')) throw new Error(`upload: the remote path must be absolute, got ${path}`);
    const conn = await this.connectWithin(opts);
    await this.bounded(conn, `write ${path}`, opts, (signal) => this.uploadOn(conn, path, Buffer.from(content), mode, signal));
  }

  private async uploadOn(conn: Connection, path: string, data: Buffer, mode: number, signal: AbortSignal): Promise<void> {
    const dir = posix.dirname(path);
    const name = posix.basename(path);
    const sftp = await conn.sftp();
    const suffix = randomBytes(6).toString('hex');
    const sibling = `${dir}/.${name}.tmp-${suffix}`;
    const exec = (argv: Argv, o: ExecOptions = {}) => this.exec(argv, { ...o, signal, timeoutMs: 30_000 });

    if (!this.target.sudo) {
      await exec(['mkdir', '-p', dir]);
      try {
        await sftpWrite(sftp, sibling, data, mode);
        await this.renameOver(sftp, sibling, path, signal);
      } catch (err) {
        await sftpUnlink(sftp, sibling);
        throw this.fileError('write', path, err);
      }
      return;
    }

    // SFTP runs as the login user, who cannot write where sudo is needed. The content goes to a
    // private (0600) file in /tmp first; `sudo install -m MODE` copies it beside the target as
    // root, and `mv` renames the copy over the target, so the switch stays atomic. The copy is
    // owner-only while it is being written (GNU install creates it 0600 and applies MODE last;
    // busybox copies the staged file's 0600), so no one else can read it before it has MODE.
    const staged = `/tmp/.newapi-cluster-${suffix}`;
    try {
      try {
        await sftpWrite(sftp, staged, data, 0o600);
      } catch (err) {
        throw this.fileError('write', staged, err);
      }
      await exec(['mkdir', '-p', dir]);
      try {
        await exec(['install', '-m', mode.toString(8).padStart(4, '0'), staged, sibling]);
        await exec(['mv', '-f', sibling, path]);
      } catch (err) {
        await this.exec(['rm', '-f', sibling], { allowFailure: true, timeoutMs: 10_000 }).catch(() => undefined);
        throw err;
      }
    } finally {
      await sftpUnlink(sftp, staged);
    }
  }

  async readFile(path: string, opts: OpOptions = {}): Promise<Buffer | undefined> {
    if (this.target.sudo) {
      const timeoutMs = opts.timeoutMs ?? this.pool.options.opTimeoutMs ?? DEFAULT_OP_TIMEOUT_MS;
      const o: ExecOptions = { allowFailure: true, timeoutMs, ...(opts.signal ? { signal: opts.signal } : {}) };
      const cat = await this.run(['cat', path], o);
      if (cat.code === 0) return cat.stdout;
      // Tell "missing" from "unreadable" without depending on the language of cat's message.
      const exists = await this.run(['test', '-e', path], o);
      if (exists.code !== 0) return undefined;
      throw commandFailedError(this.target, toCommandLine(['cat', path], { sudo: true }), cat.code, cat.stderr.toString('utf8'));
    }
    const conn = await this.connectWithin(opts);
    return this.bounded(conn, `read ${path}`, opts, async () => {
      const sftp = await conn.sftp();
      return new Promise<Buffer | undefined>((resolve, reject) => {
        sftp.readFile(path, (err: (Error & { code?: number }) | null | undefined, data: Buffer) => {
          if (err === undefined || err === null) resolve(data);
          else if (err.code === utils.sftp.STATUS_CODE.NO_SUCH_FILE) resolve(undefined);
          else reject(this.fileError('read', path, err));
        });
      });
    });
  }

  async openTunnel(host: string, port: number, opts: OpOptions = {}): Promise<Duplex> {
    const conn = await this.connectWithin(opts);
    try {
      return await this.bounded(conn, `open a tunnel to ${host}:${port}`, opts, () => forwardOut(conn.client, host, port), (late) => late.destroy());
    } catch (err) {
      if (err instanceof CliError) throw err;
      throw new CliError(`${this.target.label}: cannot open a tunnel from ${this.target.host} to ${host}:${port}: ${errorMessage(err)}`, {
        node: this.target.label,
        hint: `is something listening on ${host}:${port} as seen from ${this.target.host}? (its sshd must also allow AllowTcpForwarding)`,
        cause: err,
      });
    }
  }

  /**
   * The pooled connection, waited for no longer than the call's own deadline allows (a run that
   * is stopping gives every call a few seconds, and a reconnect to a vanished host would take more).
   */
  private connectWithin(opts: { timeoutMs?: number; signal?: AbortSignal }): Promise<Connection> {
    const connectMs = this.pool.options.connectTimeoutMs ?? DEFAULT_CONNECT_TIMEOUT_MS;
    const limit = opts.timeoutMs !== undefined && opts.timeoutMs > 0 && Number.isFinite(opts.timeoutMs) ? Math.min(opts.timeoutMs, connectMs + 5_000) : connectMs + 5_000;
    return bounded({ label: this.target.label, what: `connect to ${this.target.host}`, timeoutMs: limit, signal: opts.signal }, () => this.pool.connection(this.target));
  }

  /** An operation on `conn` under the call's deadline (default the pool's), its signal, and the connection's life. */
  private bounded<T>(conn: Connection, what: string, opts: OpOptions, run: (signal: AbortSignal) => Promise<T>, onLate?: (value: T) => void): Promise<T> {
    const controller = new AbortController();
    const timeoutMs = opts.timeoutMs ?? this.pool.options.opTimeoutMs ?? DEFAULT_OP_TIMEOUT_MS;
    return bounded(
      { label: this.target.label, what, timeoutMs, signal: opts.signal, closed: conn.whenClosed },
      () => run(controller.signal),
      onLate,
    ).finally(() => controller.abort(new Error('settled')));
  }

  async close(): Promise<void> {
    await this.pool.closeConnection(this.target);
  }

  private async renameOver(sftp: SFTPWrapper, from: string, to: string, signal: AbortSignal): Promise<void> {
    // SFTP v3's plain rename refuses to replace an existing file; OpenSSH's posix-rename
    // extension is rename(2), atomic and replacing. Servers without it get `mv -f`, also rename(2).
    try {
      await new Promise<void>((resolve, reject) => {
        sftp.ext_openssh_rename(from, to, (err) => (err === undefined || err === null ? resolve() : reject(err)));
      });
    } catch (err) {
      if (!/does not support/.test(errorMessage(err))) throw err;
      await this.exec(['mv', '-f', from, to], { signal, timeoutMs: 30_000 });
    }
  }

  private fileError(action: 'read' | 'write', path: string, err: unknown): CliError {
    if (err instanceof CliError) return err;
    return new CliError(`${this.target.label}: cannot ${action} ${path} on ${this.target.host}: ${errorMessage(err)}`, {
      node: this.target.label,
      hint:
        action === 'write'
          ? `check that ${this.target.user} may write to ${posix.dirname(path)} (or set ssh.sudo: true) and that the disk is not full`
          : `check that ${this.target.user} may read ${path} (or set ssh.sudo: true)`,
      cause: err,
    });
  }

  private async run(argv: Argv, opts: ExecOptions, input?: NodeJS.ReadableStream): Promise<RawResult> {
    const commandLine = toCommandLine(argv, { sudo: this.target.sudo });
    opts.signal?.throwIfAborted();
    const conn = await this.connectWithin(opts);
    const release = await this.bounded(conn, `start \`${shownCommand(commandLine)}\``, opts.signal ? { signal: opts.signal } : {}, (signal) => conn.sessions.acquire(signal), (late) => late());
    try {
      for (let attempt = 0; ; attempt++) {
        try {
          return await new Promise<RawResult>((resolve, reject) => {
            // Opening the session is bounded too: on a connection whose peer went silent, ssh2
            // would call back only when the keepalive gives up, ~20 s later.
            let answered = false;
            let gaveUp = false;
            const giveUp = (err: Error) => {
              if (answered || gaveUp) return;
              gaveUp = true;
              clearTimeout(timer);
              opts.signal?.removeEventListener('abort', onAbort);
              reject(err);
            };
            const openMs = opts.timeoutMs ?? this.pool.options.execTimeoutMs ?? DEFAULT_EXEC_TIMEOUT_MS;
            const timer =
              openMs > 0 && Number.isFinite(openMs)
                ? setTimeout(() => giveUp(new HostUnreachableError(`${this.target.label}: no answer within ${formatSeconds(openMs)} to start \`${shownCommand(commandLine)}\``, { node: this.target.label, hint: 'the host stopped answering: check that it is up and reachable, then run again' })), openMs)
                : undefined;
            const onAbort = () => giveUp(opts.signal?.reason instanceof Error ? opts.signal.reason : new Error('aborted'));
            opts.signal?.addEventListener('abort', onAbort, { once: true });
            void conn.whenClosed.then(() => giveUp(new HostUnreachableError(`${this.target.label}: lost the connection to ${this.target.host} while starting \`${shownCommand(commandLine)}\``, { node: this.target.label, hint: 'check the network to the host and run again' })));
            conn.client.exec(commandLine, (err, channel) => {
              if (gaveUp) {
                if (err === undefined || err === null) channel.close();
                return;
              }
              answered = true;
              clearTimeout(timer);
              opts.signal?.removeEventListener('abort', onAbort);
              if (err !== undefined && err !== null) reject(new ChannelOpenError(err));
              // Wired synchronously: ssh2 handles every packet of a read in one go, so the exit
              // status of a fast command can arrive before an awaiting caller would get to listen.
              else this.supervise(channel, commandLine, opts, input, resolve, reject);
            });
          });
        } catch (err) {
          if (!(err instanceof ChannelOpenError)) throw err;
          // sshd frees a finished session only after the close handshake, a moment after our side
          // sees it closed, so a busy connection can briefly meet MaxSessions: wait and try again.
          if (attempt < 6 && !conn.closed && opts.signal?.aborted !== true) {
            await new Promise((r) => setTimeout(r, 25 * 2 ** attempt));
            continue;
          }
          throw new (conn.closed ? HostUnreachableError : CliError)(`${this.target.label}: cannot start \`${shownCommand(commandLine)}\`: ${err.cause.message}`, {
            node: this.target.label,
            hint: conn.closed
              ? `the SSH connection to ${this.target.host} dropped; run again`
              : 'sshd refused a new session (MaxSessions in sshd_config?); run again',
            cause: err.cause,
          });
        }
      }
    } finally {
      release();
    }
  }

  private supervise(
    channel: ClientChannel,
    commandLine: string,
    opts: ExecOptions,
    input: NodeJS.ReadableStream | undefined,
    resolve: (result: RawResult) => void,
    reject: (err: unknown) => void,
  ): void {
    const cap = this.pool.options.maxOutputBytes ?? DEFAULT_MAX_OUTPUT;
    const stdout = new Collector(cap, 'head');
    const stderr = new Collector(cap, 'tail');
    const timeoutMs = opts.timeoutMs ?? this.pool.options.execTimeoutMs ?? DEFAULT_EXEC_TIMEOUT_MS;
    const label = this.target.label;
    const shown = shownCommand(commandLine);
    let exitCode: number | undefined;
    let settled = false;

    const stop = (): void => {
      killRemote(channel);
      channel.close();
    };
    const finish = (err: unknown, result?: RawResult): void => {
      if (settled) return;
      settled = true;
      clearTimeout(timer);
      opts.signal?.removeEventListener('abort', onAbort);
      if (input !== undefined) input.unpipe?.(channel);
      if (err !== undefined) reject(err);
      else resolve(result!);
    };
    const onAbort = (): void => {
      stop();
      const reason: unknown = opts.signal?.reason;
      finish(reason instanceof Error ? reason : new CliError(`${label}: \`${shown}\` was cancelled`, { node: label }));
    };
    const onTimeout = (): void => {
      stop();
      finish(
        new CliError(`${label}: \`${shown}\` timed out after ${formatSeconds(timeoutMs)}`, {
          node: label,
          hint: `the host may be overloaded, or the command is waiting for something; it may still be running on ${this.target.host}, check before running it again`,
        }),
      );
    };
    // 0 or Infinity: no timeout, for commands that follow output until cancelled (`logs -f`).
    const timer = timeoutMs > 0 && Number.isFinite(timeoutMs) ? setTimeout(onTimeout, timeoutMs) : undefined;

    channel.on('data', (chunk: Buffer) => {
      opts.onStdout?.(chunk);
      stdout.push(chunk);
      // A caller that streams has the output already; only one that relies on the buffer loses data.
      if (stdout.overflowed && opts.onStdout === undefined) {
        stop();
        finish(
          new CliError(`${label}: \`${shown}\` printed more than ${cap} bytes`, {
            node: label,
            hint: 'the output is too large to keep in memory; this is a bug in newapi-cluster, please report it',
          }),
        );
      }
    });
    channel.stderr.on('data', (chunk: Buffer) => {
      opts.onStderr?.(chunk);
      stderr.push(chunk);
    });
    channel.on('exit', (code: number | null, signal?: string) => {
      if (code !== null) exitCode = code;
      else {
        // ssh2 reports the signal as SIGKILL, SIGTERM…; a shell would report 128 + its number.
        const number = signal === undefined ? undefined : (osConstants.signals as Record<string, number>)[signal];
        exitCode = number === undefined ? 255 : 128 + number;
      }
    });
    channel.on('error', (err: Error) => finish(err));
    channel.on('close', () => {
      if (exitCode === undefined) {
        finish(
          new HostUnreachableError(`${label}: lost the connection to ${this.target.host} while running \`${shown}\``, {
            node: label,
            hint: 'check the network to the host and run again',
          }),
        );
        return;
      }
      const result = { code: exitCode, stdout: stdout.buffer, stderr: stderr.buffer };
      if (exitCode !== 0 && opts.allowFailure !== true) {
        finish(commandFailedError(this.target, commandLine, exitCode, result.stderr.toString('utf8')));
      } else {
        finish(undefined, result);
      }
    });

    if (opts.signal?.aborted === true) {
      onAbort();
      return;
    }
    opts.signal?.addEventListener('abort', onAbort, { once: true });

    if (input !== undefined) {
      input.once('error', (err: Error) => {
        stop();
        finish(new CliError(`${label}: the local input of \`${shown}\` failed: ${err.message}`, { node: label, cause: err }));
      });
      input.pipe(channel);
    } else if (opts.stdin !== undefined) {
      channel.end(opts.stdin);
    } else {
      // EOF at once, so a command that reads stdin does not wait for input that never comes.
      channel.end();
    }
  }
}

/**
 * Closes the client's socket for good. ssh2's own destroy() does nothing once end() has been
 * called (the socket is no longer writable): a connection to a host that went silent would then
 * stay half-closed, waiting for a FIN that never comes, and keep the process alive for minutes.
 */
function destroySocket(client: SshClient): void {
  const sock = (client as unknown as { _sock?: { destroy(): void } })._sock;
  if (sock) sock.destroy();
  else client.destroy();
}

class ChannelOpenError extends Error {
  constructor(override readonly cause: Error) {
    super(cause.message);
  }
}

/**
 * Asks sshd to KILL the remote command (delivered to the session's process group, OpenSSH 7.9+).
 * ssh2's public Channel.signal() stays silent once our side has sent EOF, which we do at once for
 * every command without input, so the request goes through ssh2's protocol object instead.
 * OpenSSH refuses signals for root logins (it runs them without privilege separation); there, and
 * on servers without signal support, only the closed channel remains: the command dies at its next
 * write (SIGPIPE), or runs on, which the timeout's hint says.
 */
function killRemote(channel: ClientChannel): void {
  const ch = channel as unknown as {
    type?: string;
    outgoing?: { id?: number; state?: string };
    _client?: { _protocol?: { signal?: (id: number, name: string) => void } };
  };
  const state = ch.outgoing?.state;
  if (ch.type !== 'session' || (state !== 'open' && state !== 'eof') || ch.outgoing?.id === undefined) return;
  try {
    ch._client?._protocol?.signal?.(ch.outgoing.id, 'KILL');
  } catch {
    // the connection may be going away; closing the channel still follows
  }
}

function asText(raw: RawResult): ExecResult {
  return { code: raw.code, stdout: raw.stdout.toString('utf8'), stderr: raw.stderr.toString('utf8') };
}

function formatSeconds(ms: number): string {
  return ms % 1000 === 0 ? `${ms / 1000} s` : `${(ms / 1000).toFixed(1)} s`;
}

/** Writes a new file: created owner-only, chmod'ed to MODE, and only then given its content. */
function sftpWrite(sftp: SFTPWrapper, path: string, data: Buffer, mode: number): Promise<void> {
  return new Promise<void>((resolve, reject) => {
    // 'wx': fail rather than write into something that already exists under our random name.
    sftp.open(path, 'wx', { mode: 0o600 }, (openErr, handle) => {
      if (openErr !== undefined && openErr !== null) return reject(openErr);
      const closeThen = (err?: Error | null): void => {
        sftp.close(handle, (closeErr) => {
          const first = err ?? closeErr;
          if (first !== undefined && first !== null) reject(first);
          else resolve();
        });
      };
      // The create mode is masked by sshd's umask; fchmod sets MODE exactly, before any content exists.
      sftp.fchmod(handle, mode, (chmodErr) => {
        if (chmodErr !== undefined && chmodErr !== null) return closeThen(chmodErr);
        if (data.length === 0) return closeThen();
        sftp.write(handle, data, 0, data.length, 0, (writeErr) => closeThen(writeErr));
      });
    });
  });
}

function sftpUnlink(sftp: SFTPWrapper, path: string): Promise<void> {
  return new Promise((resolve) => sftp.unlink(path, () => resolve()));
}

export interface TunnelServer {
  /** The local port on 127.0.0.1 that reaches host:port through the executor's host. */
  port: number;
  close(): Promise<void>;
}

/**
 * Opens a client on a tunnel; when that throws (a constructor, a refused login), the tunnel is
 * closed before the error goes on, because a listener left open keeps the process alive.
 */
export async function openOnTunnel<T>(tunnel: TunnelServer, open: (port: number) => Promise<T>): Promise<T> {
  try {
    return await open(tunnel.port);
  } catch (e) {
    await tunnel.close();
    throw e;
  }
}

/**
 * A local listener on 127.0.0.1 whose every connection is forwarded to host:port as seen from the
 * executor's host, so ordinary clients (mysql2, ioredis, http) can test services only the nodes reach.
 */
export async function tunnelServer(
  executor: Executor,
  host: string,
  port: number,
  onError?: (err: unknown) => void,
): Promise<TunnelServer> {
  const sockets = new Set<Socket>();
  // allowHalfOpen: a client that sends its request and then shuts down its writing side (FIN)
  // must still get the reply; without it Node would end our side as soon as the client's FIN arrives.
  const server = createServer({ allowHalfOpen: true }, (socket) => {
    sockets.add(socket);
    socket.once('close', () => sockets.delete(socket));
    socket.on('error', () => socket.destroy());
    // The socket starts paused, so bytes the client sends before the tunnel opens are kept.
    executor.openTunnel(host, port).then(
      (channel) => {
        if (socket.destroyed) {
          channel.destroy();
          return;
        }
        channel.on('error', (err: unknown) => {
          onError?.(err);
          socket.destroy();
        });
        socket.once('close', () => channel.destroy());
        channel.once('close', () => socket.end());
        socket.pipe(channel).pipe(socket);
      },
      (err: unknown) => {
        onError?.(err);
        socket.destroy();
      },
    );
  });
  await new Promise<void>((resolve, reject) => {
    server.once('error', reject);
    server.listen(0, '127.0.0.1', () => {
      server.off('error', reject);
      resolve();
    });
  });
  return {
    port: (server.address() as AddressInfo).port,
    close: async () => {
      for (const socket of sockets) socket.destroy();
      await new Promise<void>((resolve) => server.close(() => resolve()));
    },
  };
}
