/**
 * An in-memory model of the lab, for unit tests of the runner, the rollout, the health gate and
 * the lock: no root, no network, no SSH, no docker. In the manner of Kamal's and pyinfra's tests,
 * orchestration runs unchanged against it and the tests read back what it did.
 *
 * - FakeHost: one per node and one per balancer host (`balancer`, or `balancer-1`, `balancer-2`…
 *   for loadBalancer.hosts, as session.ts labels them). Files (absolute path → content, and
 *   mode), images present, the cluster's container and the migrate container, and every call
 *   made on it. A balancer host also has nginx (running or not; `nginx -t` fails on a
 *   certificate the configuration names and the host lacks), iptables (the OUTPUT rules of each
 *   family, listed as `iptables -S` prints them; `firewall.probe` says ok unless `iptables` is
 *   false) and keepalived (missing, stopped or running; the configuration it runs).
 * - The vip of a balancer pair is held by the balancer whose running keepalived has the highest
 *   priority among those whose check script passes (the script is there and nginx runs).
 * - FakeExecutor: answers exactly the argv of src/remote/commands.ts. Anything else is recorded
 *   in `cluster.unmodelled` and fails the call, so a test notices orchestration running something
 *   the fake does not model.
 * - openTunnel('127.0.0.1', port) reaches a running container publishing that port: an in-memory
 *   HTTP/1.1 server for GET /api/status, answering like New API once the image's start time has
 *   passed on the manual clock.
 * - host.lose(): from then on every call settles as the SSH layer would for a silent host: with
 *   HostUnreachableError at its deadline on the MANUAL clock, or at once with the abort reason.
 * - MemoryLockStore: the Lua semantics of src/probes/redis-lock-store.ts, TTLs on the manual clock.
 * - DrivenClock + drive(): a ManualClock that knows its sleepers, and a driver that moves time to
 *   the next sleeper only when the fake cluster is idle (no call or tunnel in flight, no file I/O
 *   pending, no child process running or real work tracked by trackRealWork — a rollout hook —,
 *   a few event-loop turns without activity), so runs are deterministic.
 */
import { setMaxListeners } from 'node:events';
import { createHash } from 'node:crypto';
import { Duplex, PassThrough, Writable } from 'node:stream';
import { parse as parseYaml } from 'yaml';
import { HostUnreachableError, InterruptedError, type StopSignalName } from '../../src/errors.js';
import { parseDatabaseDsn, parseRedisUrl } from '../../src/inventory/dsn.js';
import { parseImageRef } from '../../src/inventory/image.js';
import { balancerHosts, loadInventory, type LoadedInventory } from '../../src/inventory/load.js';
import type { Inventory } from '../../src/inventory/schema.js';
import { compareVersions } from '../../src/inventory/version.js';
import { balancerStateOf } from '../../src/orchestrate/balancer.js';
import { ManualClock } from '../../src/orchestrate/clock.js';
import type { LockStore, RenewResult } from '../../src/orchestrate/lock.js';
import type { RunEnv, RunSignals } from '../../src/orchestrate/run-env.js';
import type { SessionDeps } from '../../src/orchestrate/session.js';
import type { Dialer } from '../../src/probes/clients.js';
import { fakeProbeClients } from './fake-probes.js';
import { parseState, statePaths, type NodeState } from '../../src/plan/state.js';
import { commandFailedError } from '../../src/remote/command-error.js';
import { compose, docker as dockerCmds, files as fileCmds, firewall as fwCmds, keepalived as kaCmds, nginx as nginxCmds } from '../../src/remote/commands.js';
import { abortReason } from '../../src/remote/deadline.js';
import { toCommandLine } from '../../src/remote/quote.js';
import type { Argv, ExecOptions, ExecResult, Executor, OpOptions, SshTarget } from '../../src/remote/types.js';
import { hostPort } from '../../src/render/render.js';
import { Output } from '../../src/ui/output.js';
import { makeStyle } from '../../src/ui/style.js';
import { baseInventory, writeInventoryDir, type RawInventory, type TempInventory } from '../fixtures/inventory.js';

// ---------------------------------------------------------------------------------------------
// Time
// ---------------------------------------------------------------------------------------------

/** A ManualClock that knows when its sleepers wake, so a driver can move time to the next one. */
export class DrivenClock extends ManualClock {
  private readonly wakes: number[] = [];
  /** Bumped on every sleep: code that reaches a sleep is making progress. */
  sleeps = 0;

  override sleep(ms: number, signal?: AbortSignal): Promise<void> {
    const at = this.now() + Math.max(0, ms);
    const p = super.sleep(ms, signal);
    if (signal?.aborted) return p;
    this.sleeps++;
    this.wakes.push(at);
    const done = (): void => {
      const i = this.wakes.indexOf(at);
      if (i >= 0) this.wakes.splice(i, 1);
    };
    p.then(done, done);
    return p;
  }

  /** The earliest wake-up time of a sleeper, if any. */
  nextWake(): number | undefined {
    return this.wakes.length === 0 ? undefined : Math.min(...this.wakes);
  }

  get sleeping(): number {
    return this.wakes.length;
  }
}

const QUIET_TURNS = 8;
const turn = () => new Promise<void>((r) => setImmediate(r));

/**
 * Real work in flight that the driver cannot see in the event loop's resources: a test that lets
 * the code under test run real processes (rollout hooks, through execa) wraps each in
 * trackRealWork, so manual time stands still until the process and its output are done.
 */
let realWorkInFlight = 0;

export function trackRealWork<P extends PromiseLike<unknown>>(p: P): P {
  realWorkInFlight++;
  const done = (): void => {
    realWorkInFlight--;
  };
  p.then(done, done);
  return p;
}

/** Real work the manual clock must wait for: file I/O, child processes, and work tracked by trackRealWork. */
function realWorkPending(): boolean {
  return realWorkInFlight > 0 || process.getActiveResourcesInfo().some((r) => r.startsWith('FSReq') || r === 'FileHandle' || r === 'FileHandleCloseReq' || r === 'ProcessWrap');
}

export interface Settled<T> {
  ok: boolean;
  value?: T;
  error?: unknown;
  /** Manual time when it settled. */
  at: number;
}

/**
 * Runs `promise` to its end, moving the manual clock to the next sleeper whenever nothing else can
 * happen: no fake call or tunnel in flight, no file I/O pending, and QUIET_TURNS event-loop turns
 * without any activity. Time never moves while real work is under way.
 */
export async function drive<T>(clock: DrivenClock, cluster: { busy: number; activity: number } | undefined, promise: Promise<T>, opts: { maxManualMs?: number } = {}): Promise<Settled<T>> {
  let settled: Settled<T> | undefined;
  promise.then(
    (value) => (settled = { ok: true, value, at: clock.now() }),
    (error: unknown) => (settled = { ok: false, error, at: clock.now() }),
  );
  const started = clock.now();
  const limit = opts.maxManualMs ?? 6 * 3_600_000;
  let quiet = 0;
  let seen = -1;
  while (!settled) {
    await turn();
    const activity = (cluster?.activity ?? 0) + clock.sleeps;
    if ((cluster?.busy ?? 0) > 0 || activity !== seen || realWorkPending()) {
      seen = activity;
      quiet = 0;
      continue;
    }
    if (++quiet < QUIET_TURNS) continue;
    const next = clock.nextWake();
    if (next === undefined) continue;
    if (next - started > limit) throw new Error(`drive: the run is still going after ${limit / 1000} s of manual time`);
    await clock.advance(Math.max(0, next - clock.now()));
    quiet = 0;
  }
  return settled;
}

// ---------------------------------------------------------------------------------------------
// The lock's store
// ---------------------------------------------------------------------------------------------

/** How long a force-released holder is kept from taking the lock back (redis-lock-store.ts). */
export const TOMBSTONE_MS = 3_600_000;
const tombstoneKey = (key: string) => `${key}:revoked`;
const COMMAND_TIMEOUT_MS = 3_000;

/**
 * Redis as the lock sees it, shared by every operator of a test. Each change is atomic, with the
 * semantics of the Lua scripts in src/probes/redis-lock-store.ts; TTLs run on the manual clock.
 */
export class MemoryLockStore {
  private readonly keys = new Map<string, { value: string; expiresAt: number }>();
  private isDown = false;
  /** Every handle opened, by the node it was reached through. */
  readonly opened: string[] = [];
  closed = 0;
  /** Every call made on the store, for assertions. */
  readonly calls: { at: number; op: string; ok: boolean }[] = [];

  constructor(private readonly clock: { now(): number; sleep(ms: number, signal?: AbortSignal): Promise<void> }) {}

  private live(key: string): { value: string; expiresAt: number } | undefined {
    const e = this.keys.get(key);
    if (e && e.expiresAt <= this.clock.now()) {
      this.keys.delete(key);
      return undefined;
    }
    return e;
  }

  private set(key: string, value: string, ttlMs: number): void {
    this.keys.set(key, { value, expiresAt: this.clock.now() + ttlMs });
  }

  private guard(op: string): void {
    this.calls.push({ at: this.clock.now(), op, ok: !this.isDown });
    if (this.isDown) throw new Error('Connection is closed.');
  }

  /** SET key value PX ttl NX */
  acquireNow(key: string, value: string, ttlMs: number): boolean {
    this.guard('acquire');
    if (this.live(key)) return false;
    this.set(key, value, ttlMs);
    return true;
  }

  /** RENEW_LUA */
  renewNow(key: string, value: string, ttlMs: number): RenewResult {
    this.guard('renew');
    const v = this.live(key);
    if (v?.value === value) {
      v.expiresAt = this.clock.now() + ttlMs;
      return 'renewed';
    }
    if (v === undefined && this.live(tombstoneKey(key))?.value !== value) {
      this.set(key, value, ttlMs);
      return 'retaken';
    }
    return 'lost';
  }

  readNow(key: string): { value: string; ttlMs: number } | undefined {
    this.guard('read');
    const v = this.live(key);
    return v && { value: v.value, ttlMs: v.expiresAt - this.clock.now() };
  }

  /** RELEASE_LUA: compare and delete. */
  releaseNow(key: string, value: string): boolean {
    this.guard('release');
    if (this.live(key)?.value !== value) return false;
    this.keys.delete(key);
    return true;
  }

  /** FORCE_LUA: compare and delete, and a tombstone for that holder. */
  forceReleaseNow(key: string, value: string): boolean {
    this.guard('forceRelease');
    if (this.live(key)?.value !== value) return false;
    this.keys.delete(key);
    this.set(tombstoneKey(key), value, TOMBSTONE_MS);
    return true;
  }

  /** What the key holds now, without counting as a call (for assertions). */
  peek(key: string): string | undefined {
    return this.live(key)?.value;
  }

  /** A Redis restart: every key gone. */
  wipe(): void {
    this.keys.clear();
  }

  /** Unreachable: every call rejects until up(). */
  down(): void {
    this.isDown = true;
  }

  up(): void {
    this.isDown = false;
  }

  get reachable(): boolean {
    return !this.isDown;
  }

  /**
   * A connection to the store, as openRedisLockStore returns one. `via` is the host it tunnels
   * through: once that host is lost, each command fails after ioredis' commandTimeout (3 s).
   */
  handle(where: string, via?: { readonly lost: boolean }): LockStore {
    this.opened.push(where);
    const call = <T>(fn: () => T): Promise<T> => {
      if (via?.lost) return this.clock.sleep(COMMAND_TIMEOUT_MS).then(() => Promise.reject(new Error('Command timed out')));
      try {
        return Promise.resolve(fn());
      } catch (e) {
        return Promise.reject(e);
      }
    };
    return {
      where,
      acquire: (key, value, ttlMs) => call(() => this.acquireNow(key, value, ttlMs)),
      renew: (key, value, ttlMs) => call(() => this.renewNow(key, value, ttlMs)),
      read: (key) => call(() => this.readNow(key)),
      release: (key, value) => call(() => this.releaseNow(key, value)),
      forceRelease: (key, value) => call(() => this.forceReleaseNow(key, value)),
      close: async () => {
        this.closed++;
      },
    };
  }
}

// ---------------------------------------------------------------------------------------------
// Images and containers
// ---------------------------------------------------------------------------------------------

export interface ImageBehaviour {
  id: string;
  /** What /api/status reports (default: the tag). */
  version: string | undefined;
  /** Time from start to listening, on the manual clock. */
  startMs: number;
  /** never: always 503 {"success":false}. */
  health: 'ok' | 'never';
  /** The container exits this long after it starts. */
  crashAfterMs: number | undefined;
  /** A slave answers 500 while the schema a master-mode start recorded is older than its version (issue #4144). */
  checksSchema: boolean;
  /** Lines the container logs when it starts. */
  logs: string[];
  /** Lines logged when it crashes. */
  crashLogs: string[];
}

export interface FakeContainer {
  name: string;
  image: string;
  imageId: string;
  /** The .env it was created with. */
  env: string;
  /** Host ports it publishes (to its port 3000). */
  ports: number[];
  status: 'created' | 'running' | 'restarting' | 'exited';
  startedAt: number | undefined;
  /** The compose file's `restart:` (the bundled template says always). */
  restartPolicy: 'always' | 'no';
  /** While restarting: when docker starts it again. */
  restartAt?: number;
  restartCount: number;
  logs: string[];
  /** Started without NODE_TYPE=slave: it migrated the schema. */
  masterMode: boolean;
}

export interface HttpAnswer {
  status: number;
  body: string;
}

const isSlaveEnv = (env: string) => /^NODE_TYPE=slave$/m.test(env);
const imageIdOf = (ref: string) => `sha256:${createHash('sha256').update(ref).digest('hex')}`;
const tagOf = (ref: string) => parseImageRef(ref).tag;

// ---------------------------------------------------------------------------------------------
// Events
// ---------------------------------------------------------------------------------------------

export type FakeEvent =
  | { seq: number; at: number; host: string; kind: 'exec'; argv: string[]; code: number; stdin?: string }
  | { seq: number; at: number; host: string; kind: 'upload'; path: string; content: string; mode: number }
  | { seq: number; at: number; host: string; kind: 'read'; path: string }
  | { seq: number; at: number; host: string; kind: 'tunnel'; to: string; answered: boolean }
  | { seq: number; at: number; host: string; kind: 'container-start'; name: string; image: string }
  | { seq: number; at: number; host: string; kind: 'lost' | 'restored' }
  | { seq: number; at: number; host: string; kind: 'unanswered'; what: string }
  /** A drain rule added (`changed`: it was not there yet) or removed (`changed`: there was at least one copy). */
  | { seq: number; at: number; host: string; kind: 'firewall'; op: 'drain' | 'undrain'; node: string; rule: string; changed: boolean }
  /** nginx started, or made to re-read its configuration (a graceful reload). */
  | { seq: number; at: number; host: string; kind: 'nginx'; op: 'start' | 'reload' }
  /** keepalived started, or made to re-read its configuration (HUP). */
  | { seq: number; at: number; host: string; kind: 'keepalived'; op: 'start' | 'reload' };

type EventBody = FakeEvent extends infer E ? (E extends FakeEvent ? Omit<E, 'seq' | 'at' | 'host'> : never) : never;

// ---------------------------------------------------------------------------------------------
// The cluster
// ---------------------------------------------------------------------------------------------

export class FakeCluster {
  readonly hosts = new Map<string, FakeHost>();
  /** What a registry serves (every host can pull these unless its own `pullable` says otherwise). */
  readonly registry = new Set<string>();
  readonly images = new Map<string, ImageBehaviour>();
  /** The shared database's schema version, as the last master-mode start left it. */
  schemaVersion: string | undefined;
  readonly events: FakeEvent[] = [];
  /** Calls and tunnels in flight (not counting calls hanging on a lost host: those wait on the clock). */
  busy = 0;
  activity = 0;
  /** Argv and calls the fake does not model: a test asserts this stays empty. */
  readonly unmodelled: string[] = [];
  /** Addresses reachable from every node (the database, Redis). */
  readonly services = new Set<string>();
  private readonly hooks = new Set<(e: FakeEvent) => void>();
  private seq = 0;

  constructor(
    public inv: Inventory,
    readonly clock: DrivenClock,
  ) {
    for (const n of inv.nodes) this.addHost(n.name, n.host);
    const lbs = balancerHosts(inv);
    lbs.forEach((address, i) => this.addHost(lbs.length === 1 ? 'balancer' : `balancer-${i + 1}`, address));
    const db = parseDatabaseDsn(inv.database.dsn);
    const redis = parseRedisUrl(inv.redis.url);
    this.services.add(`${db.host}:${db.port}`);
    this.services.add(`${redis.host}:${redis.port}`);
  }

  addHost(name: string, address: string): FakeHost {
    const h = new FakeHost(this, name, address);
    this.hosts.set(name, h);
    return h;
  }

  /** By node name, or 'balancer' (one balancer host), 'balancer-1', 'balancer-2'… (loadBalancer.hosts). */
  host(name: string): FakeHost {
    const h = this.hosts.get(name);
    if (!h) throw new Error(`fake cluster: no host ${name}`);
    return h;
  }

  byAddress(address: string): FakeHost | undefined {
    return [...this.hosts.values()].find((h) => h.address === address);
  }

  /** The (first) balancer host. */
  get balancer(): FakeHost {
    const b = this.balancers[0];
    if (!b) throw new Error('fake cluster: no balancer host');
    return b;
  }

  /** Every balancer host, in loadBalancer.hosts order. */
  get balancers(): FakeHost[] {
    return [...this.hosts.values()].filter((h) => h.isBalancer);
  }

  /**
   * The balancer holding the vip, as keepalived would settle it: among the hosts whose keepalived
   * runs a configuration with the vip and whose check script passes (the script is there,
   * executable, and nginx runs), the one with the highest priority.
   */
  vipHolder(): FakeHost | undefined {
    const vip = this.inv.loadBalancer.vip;
    if (!vip) return undefined;
    let best: { h: FakeHost; priority: number } | undefined;
    for (const h of this.balancers) {
      const conf = h.keepalivedActive;
      if (h.keepalived !== 'running' || h.lost || conf === undefined || !conf.includes(`${vip}/`)) continue;
      const script = /^\s*script\s+"([^"]+)"/m.exec(conf)?.[1];
      const scriptOk = script !== undefined && h.files.has(script) && ((h.modes.get(script) ?? 0) & 0o111) !== 0 && h.nginxRunning;
      const priority = Number(/^\s*priority\s+(\d+)/m.exec(conf)?.[1] ?? NaN);
      if (!scriptOk || !Number.isFinite(priority)) continue;
      if (!best || priority > best.priority) best = { h, priority };
    }
    return best?.h;
  }

  get containerName(): string {
    return `${this.inv.cluster.name}-new-api`;
  }

  get migrateName(): string {
    return `${this.containerName}-migrate`;
  }

  /** Publishes an image in the registry, with how its containers behave. */
  publish(ref: string, behaviour: Partial<ImageBehaviour> = {}): ImageBehaviour {
    const b: ImageBehaviour = {
      id: imageIdOf(ref),
      version: tagOf(ref),
      startMs: 2_000,
      health: 'ok',
      crashAfterMs: undefined,
      checksSchema: true,
      logs: [`[SYS] New API ${tagOf(ref) ?? 'latest'} started`],
      crashLogs: ['panic: dial tcp 10.0.0.6:6379: connect: connection refused'],
      ...behaviour,
    };
    this.images.set(ref, b);
    this.registry.add(ref);
    return b;
  }

  behaviour(ref: string): ImageBehaviour {
    return this.images.get(ref) ?? this.publish(ref);
  }

  onEvent(fn: (e: FakeEvent) => void): () => void {
    this.hooks.add(fn);
    return () => this.hooks.delete(fn);
  }

  /** Calls `fn` once, on the first event that matches. */
  once(match: (e: FakeEvent) => boolean, fn: (e: FakeEvent) => void): void {
    const off = this.onEvent((e) => {
      if (!match(e)) return;
      off();
      fn(e);
    });
  }

  record(host: FakeHost, body: EventBody): FakeEvent {
    const e = { seq: ++this.seq, at: this.clock.now(), host: host.name, ...body } as FakeEvent;
    this.events.push(e);
    this.activity++;
    for (const h of [...this.hooks]) h(e);
    return e;
  }

  unmodel(host: FakeHost, what: string): Error {
    const text = `${host.name}: the fake cluster does not model ${what}`;
    this.unmodelled.push(text);
    return new Error(text);
  }

  executor(target: SshTarget): Executor {
    const h = this.byAddress(target.host);
    if (!h) throw new Error(`fake cluster: nobody at ${target.host}`);
    return new FakeExecutor(h, target);
  }

  // --- reading back ---

  execs(host?: string, match: (argv: string[]) => boolean = () => true): Extract<FakeEvent, { kind: 'exec' }>[] {
    return this.events.filter((e): e is Extract<FakeEvent, { kind: 'exec' }> => e.kind === 'exec' && (host === undefined || e.host === host) && match(e.argv));
  }

  /** Every balancer configuration pushed (uploads to loadBalancer.configPath) on a balancer host (default: the first). */
  balancerPushes(host: string = this.balancer.name): Extract<FakeEvent, { kind: 'upload' }>[] {
    return this.events.filter((e): e is Extract<FakeEvent, { kind: 'upload' }> => e.kind === 'upload' && e.host === host && e.path === this.inv.loadBalancer.configPath);
  }

  /** Every drain rule added or removed (on one balancer host, or on any). */
  firewallChanges(host?: string): Extract<FakeEvent, { kind: 'firewall' }>[] {
    return this.events.filter((e): e is Extract<FakeEvent, { kind: 'firewall' }> => e.kind === 'firewall' && e.changed && (host === undefined || e.host === host));
  }

  /** nginx reloads and starts (on one balancer host, or on any). */
  nginxEvents(host?: string): Extract<FakeEvent, { kind: 'nginx' }>[] {
    return this.events.filter((e): e is Extract<FakeEvent, { kind: 'nginx' }> => e.kind === 'nginx' && (host === undefined || e.host === host));
  }

  /** A node's place in a balancer configuration. */
  placeIn(config: string | undefined, node: string): 'in' | 'drained' | 'absent' {
    const n = this.inv.nodes.find((x) => x.name === node);
    if (!n) throw new Error(`no node ${node}`);
    return balancerStateOf(config, hostPort(n.host, this.inv.cluster.port));
  }

  /**
   * Each node's place on a balancer host (default: the first) as its nginx sees it: absent when
   * its current file does not list the node, drained when the file marks it down or a drain rule
   * of this cluster refuses it, else in.
   */
  places(host: string = this.balancer.name): Record<string, 'in' | 'drained' | 'absent'> {
    const h = this.host(host);
    const config = h.files.get(this.inv.loadBalancer.configPath);
    const rules = h.drainRules();
    return Object.fromEntries(
      this.inv.nodes.map((n) => {
        const p = this.placeIn(config, n.name);
        return [n.name, p === 'in' && rules.includes(n.name) ? 'drained' : p];
      }),
    );
  }

  containerStarts(): Extract<FakeEvent, { kind: 'container-start' }>[] {
    return this.events.filter((e): e is Extract<FakeEvent, { kind: 'container-start' }> => e.kind === 'container-start');
  }
}

export const isComposeUp = (argv: readonly string[]) => (argv[0] === 'docker-compose' || (argv[0] === 'docker' && argv[1] === 'compose')) && argv.includes('up');
export const isComposeStartingUp = (argv: readonly string[]) => isComposeUp(argv) && !argv.includes('--no-start');

// ---------------------------------------------------------------------------------------------
// A host
// ---------------------------------------------------------------------------------------------

const SCRIPTS = {
  layout: fileCmds.layout('a', 'b', 'c')[2],
  snapshot: fileCmds.snapshotRelease('a', 'b')[2],
  listReleases: fileCmds.listReleases('a')[2],
  purge: fileCmds.purgeIfOurs('a', 'b')[2],
  append: fileCmds.append('a')[2],
  freeKiB: fileCmds.freeKiB('a')[2],
  listening: fileCmds.listening(1)[2],
  detect: compose.detect()[2],
  nodeFacts: fileCmds.nodeFacts('a', 'b', 'c')[2],
  balancerFacts: fileCmds.balancerFacts('a', 'b', 'c')[2],
  fwProbe: fwCmds.probe()[2],
  fwDrain: fwCmds.drain('c', 'n', '10.0.0.1', 1)[2],
  fwUndrain: fwCmds.undrain('c', 'n', '10.0.0.1', 1)[2],
  reloadOrStart: nginxCmds.reloadOrStart()[2],
  kaState: kaCmds.state()[2],
  kaStartOrReload: kaCmds.startOrReload()[2],
  kaRouteTo: kaCmds.routeTo('10.0.0.1')[2],
  kaHolds: kaCmds.holds('10.0.0.1')[2],
  inFlight: dockerCmds.inFlight('c', 1)[2],
};
/** Scripts run with no arguments of their own (`sh -c SCRIPT`). */
const BARE_SCRIPTS = new Set([SCRIPTS.detect, SCRIPTS.fwProbe, SCRIPTS.reloadOrStart, SCRIPTS.kaState, SCRIPTS.kaStartOrReload]);

/** Where keepalived reads its configuration (render.ts vrrpPaths). */
const KEEPALIVED_CONF = '/etc/keepalived/keepalived.conf';

/** IPv4 `a` within `b`/prefix. */
function sameNetwork(a: string, b: string, prefix: number): boolean {
  const num = (ip: string) => ip.split('.').reduce((n, o) => n * 256 + Number(o), 0);
  if (!/^\d+(\.\d+){3}$/.test(a) || !/^\d+(\.\d+){3}$/.test(b)) return false;
  const size = 2 ** (32 - prefix);
  return Math.floor(num(a) / size) === Math.floor(num(b) / size);
}

const DEFAULT_OP_MS = 30_000;
const DEFAULT_EXEC_MS = 120_000;

type Answer = Partial<ExecResult>;

export class FakeHost {
  readonly files = new Map<string, string>();
  readonly dirs = new Set<string>(['/']);
  /** Images present: reference → id. */
  readonly images = new Map<string, string>();
  /** Images its registry can pull; undefined: the cluster's registry. */
  pullable: Set<string> | undefined;
  readonly containers = new Map<string, FakeContainer>();
  lost = false;
  /** The host vanishes when it is asked to run a matching command: that call is left in flight, unanswered. */
  dropWhen: ((argv: readonly string[]) => boolean) | undefined;
  /** Images whose containers answer 503 on this host (a node-specific fault: its .env, its network). */
  readonly unhealthy = new Set<string>();
  /** Connections established to its running container's port (requests in flight), as docker.inFlight counts them. */
  inFlight: () => number = () => 0;
  /** Each file's mode, as the last upload set it. */
  readonly modes = new Map<string, number>();
  /** Folders made with `mkdir -m`: their mode. */
  readonly dirModes = new Map<string, number>();
  /** A balancer host: `balancer`, or `balancer-N`. */
  readonly isBalancer: boolean;
  /** Balancer: `nginx -t` answers these in turn (then its own verdict); reloads; configs active after each reload. */
  readonly nginxTest: { code: number; stderr: string }[] = [];
  nginxTests = 0;
  /** Graceful reloads (`nginx -s reload`, or reloadOrStart on a running nginx). */
  reloads = 0;
  /** Starts by reloadOrStart of an nginx that was not running. */
  nginxStarts = 0;
  /** Whether nginx runs (its pid file names a live process). */
  nginxRunning: boolean;
  /** The configuration nginx runs: the file as it was at its last start or reload. */
  activeConfig: string | undefined;
  /** Every configuration written to loadBalancer.configPath, in order. */
  readonly configHistory: string[] = [];
  readonly hasNginx: boolean;
  /** iptables installed and usable (firewall.probe prints ok). */
  iptables: boolean;
  /** OUTPUT rules, in `iptables -S` form, first rule first (IPv4, IPv6). */
  readonly rules4: string[] = [];
  readonly rules6: string[] = [];
  /** A fault for one drain or undrain (its answer instead of iptables'), or undefined to run it. */
  firewallFault: ((op: 'drain' | 'undrain', node: string) => { code: number; stderr: string } | undefined) | undefined;
  keepalived: 'missing' | 'stopped' | 'running';
  /** The configuration keepalived runs (read at its last start or reload). */
  keepalivedActive: string | undefined;
  keepalivedStarts = 0;
  keepalivedReloads = 0;
  /** Its network, as `ip route get` / `ip addr` show it: the interface and prefix length of its own address. */
  network = { dev: 'eth0', prefix: 24 };

  constructor(
    readonly cluster: FakeCluster,
    readonly name: string,
    readonly address: string,
  ) {
    this.isBalancer = name === 'balancer' || /^balancer-\d+$/.test(name);
    this.hasNginx = this.isBalancer;
    this.nginxRunning = this.isBalancer;
    this.iptables = this.isBalancer;
    this.keepalived = this.isBalancer ? 'stopped' : 'missing';
  }

  /** `iptables -S OUTPUT` then `ip6tables -S OUTPUT`, as they print them. */
  iptablesListing(): string {
    const family = (rules: string[]) => ['-P OUTPUT ACCEPT', ...rules].map((l) => `${l}\n`).join('');
    return family(this.rules4) + family(this.rules6);
  }

  /** Nodes of this cluster a drain rule refuses here (read from the rules' comments). */
  drainRules(): string[] {
    const prefix = `newapi-cluster:${this.inv.cluster.name}:drain:`;
    const out: string[] = [];
    for (const line of [...this.rules4, ...this.rules6]) {
      const m = /--comment "([^"]*)"/.exec(line);
      if (m?.[1]?.startsWith(prefix)) out.push(m[1].slice(prefix.length));
    }
    return out;
  }

  /** Mode of a file (undefined: no such file). */
  modeOf(path: string): number | undefined {
    return this.files.has(path) ? this.modes.get(path) : undefined;
  }

  private get clock(): DrivenClock {
    return this.cluster.clock;
  }

  private get inv(): Inventory {
    return this.cluster.inv;
  }

  // --- faults ---

  /** From now on the host answers nothing: calls settle at their deadline (manual clock) or on abort. */
  lose(): void {
    if (this.lost) return;
    this.lost = true;
    for (const t of this.tunnels) t.destroy(new Error('connection lost'));
    this.cluster.record(this, { kind: 'lost' });
  }

  restore(): void {
    this.lost = false;
    this.cluster.record(this, { kind: 'restored' });
  }

  // --- reading back ---

  get container(): FakeContainer | undefined {
    return this.refresh(this.containers.get(this.cluster.containerName));
  }

  get migrateContainer(): FakeContainer | undefined {
    return this.refresh(this.containers.get(this.cluster.migrateName));
  }

  get paths() {
    return statePaths(this.inv.cluster.dir);
  }

  state(): NodeState | undefined {
    return parseState(this.files.get(this.paths.state));
  }

  /** This node's own audit lines (not the lines that close a run, which the master also holds). */
  auditLines(): Record<string, unknown>[] {
    return this.allAuditLines().filter((l) => l.node !== '*');
  }

  /** The lines that close a run (`node: '*'`, on the master): how each whole operation ended. */
  runLines(): Record<string, unknown>[] {
    return this.allAuditLines().filter((l) => l.node === '*');
  }

  private allAuditLines(): Record<string, unknown>[] {
    return (this.files.get(this.paths.audit) ?? '')
      .split('\n')
      .filter(Boolean)
      .map((l) => JSON.parse(l) as Record<string, unknown>);
  }

  releaseIds(): string[] {
    const prefix = `${this.paths.releases}/`;
    return [...new Set([...this.files.keys()].filter((p) => p.startsWith(prefix)).map((p) => p.slice(prefix.length).split('/')[0]!))].sort();
  }

  calls(): FakeEvent[] {
    return this.cluster.events.filter((e) => e.host === this.name);
  }

  // --- set-up helpers ---

  /** Puts a running container of `image` on the host, started now (tests of the gate). */
  runContainer(image: string, opts: { env?: string; name?: string; port?: number; restart?: 'always' | 'no' } = {}): FakeContainer {
    const b = this.cluster.behaviour(image);
    this.images.set(image, b.id);
    const c = this.newContainer(opts.name ?? this.cluster.containerName, image, opts.env ?? '', [opts.port ?? this.inv.cluster.port], opts.restart ?? 'always');
    this.containers.set(c.name, c);
    this.start(c);
    return c;
  }

  // --- the SSH layer ---

  private readonly tunnels = new Set<Duplex>();

  /**
   * One remote call: a round trip, then `fn`; or, on a lost host, no answer until the deadline
   * (manual clock) or the abort signal.
   */
  async call<T>(what: string, opts: { timeoutMs?: number | undefined; signal?: AbortSignal | undefined }, defaultMs: number, fn: () => T): Promise<T> {
    const signal = opts.signal;
    if (signal?.aborted) throw abortReason(signal);
    const started = this.clock.now();
    this.cluster.activity++;
    if (this.lost) return this.hang(what, opts, defaultMs, started);
    this.cluster.busy++;
    try {
      await turn();
    } finally {
      this.cluster.busy--;
    }
    if (this.lost) return this.hang(what, opts, defaultMs, started);
    if (signal?.aborted) throw abortReason(signal);
    this.cluster.activity++;
    return fn();
  }

  private hang(what: string, opts: { timeoutMs?: number | undefined; signal?: AbortSignal | undefined }, defaultMs: number, started: number): Promise<never> {
    const timeoutMs = opts.timeoutMs ?? defaultMs;
    const signal = opts.signal;
    this.cluster.record(this, { kind: 'unanswered', what });
    return new Promise<never>((_, reject) => {
      if (!(Number.isFinite(timeoutMs) && timeoutMs > 0)) {
        signal?.addEventListener('abort', () => reject(abortReason(signal)), { once: true });
        return;
      }
      const remaining = Math.max(0, started + timeoutMs - this.clock.now());
      this.clock.sleep(remaining, signal).then(
        () =>
          reject(
            new HostUnreachableError(`${this.name}: no answer within ${timeoutMs / 1000} s to ${what}`, {
              node: this.name,
              hint: 'the host stopped answering: check that it is up and reachable, then run again',
            }),
          ),
        (e: unknown) => reject(e),
      );
    });
  }

  upload(path: string, content: string | Buffer, mode = 0o644): void {
    const text = Buffer.isBuffer(content) ? content.toString('utf8') : content;
    this.addParents(path);
    this.files.set(path, text);
    this.modes.set(path, mode);
    if (this.hasNginx && path === this.inv.loadBalancer.configPath) this.configHistory.push(text);
    this.cluster.record(this, { kind: 'upload', path, content: text, mode });
  }

  readFile(path: string): Buffer | undefined {
    this.cluster.record(this, { kind: 'read', path });
    const c = this.files.get(path);
    return c === undefined ? undefined : Buffer.from(c);
  }

  openTunnel(host: string, port: number): Duplex {
    const to = `${host}:${port}`;
    if (this.cluster.services.has(to)) {
      this.cluster.record(this, { kind: 'tunnel', to, answered: true });
      return new PassThrough();
    }
    if (host !== '127.0.0.1') throw this.cluster.unmodel(this, `a tunnel to ${to}`);
    const c = [...this.containers.values()].map((x) => this.refresh(x)!).find((x) => x.status === 'running' && x.ports.includes(port));
    const b = c && this.cluster.behaviour(c.image);
    const listening = c !== undefined && b !== undefined && this.clock.now() >= (c.startedAt ?? 0) + b.startMs;
    this.cluster.record(this, { kind: 'tunnel', to, answered: listening });
    // As ssh2 reports a direct-tcpip channel nobody accepts.
    if (!listening) throw new Error(`(SSH) Channel open failure: Connection refused (127.0.0.1:${port} on ${this.name})`);
    const answer = (): HttpAnswer => this.statusAnswer(c);
    const d = httpDuplex(answer);
    this.tunnels.add(d);
    this.cluster.busy++;
    d.once('close', () => {
      this.tunnels.delete(d);
      this.cluster.busy--;
      this.cluster.activity++;
    });
    return d;
  }

  /** /api/status as New API answers it. */
  private statusAnswer(c: FakeContainer): HttpAnswer {
    const b = this.cluster.behaviour(c.image);
    if (b.health === 'never' || this.unhealthy.has(c.image)) return { status: 503, body: JSON.stringify({ success: false, message: 'service unavailable' }) };
    const schema = this.cluster.schemaVersion;
    if (b.checksSchema && !c.masterMode && (schema === undefined || (compareVersions(schema, b.version) ?? 0) < 0)) {
      return { status: 500, body: JSON.stringify({ success: false, message: `database schema ${schema ?? 'missing'} is older than ${b.version}` }) };
    }
    return { status: 200, body: JSON.stringify({ success: true, message: '', data: { version: b.version, start_time: Math.floor((c.startedAt ?? 0) / 1000) } }) };
  }

  exec(argv: string[], stdin: string | undefined): Answer {
    const r = this.run(argv, stdin);
    this.cluster.record(this, { kind: 'exec', argv, code: r.code ?? 0, ...(stdin === undefined ? {} : { stdin }) });
    return r;
  }

  // --- commands ---

  private run(argv: string[], stdin: string | undefined): Answer {
    const [cmd, ...args] = argv;
    const unmodelled = () => {
      throw this.cluster.unmodel(this, `argv ${JSON.stringify(argv)}`);
    };
    switch (cmd) {
      case 'true':
        return {};
      case 'test':
        return this.test(args) ?? unmodelled();
      case 'mkdir':
        return this.mkdir(args) ?? unmodelled();
      case 'date':
        return args[0] === '+%s.%N' ? { stdout: `${(this.clock.now() / 1000).toFixed(9)}\n` } : unmodelled();
      case 'rm':
        return this.rm(args) ?? unmodelled();
      case 'nginx':
        return this.nginx(args) ?? unmodelled();
      case 'docker':
        if (args[0] === 'compose') return this.compose(args.slice(1)) ?? unmodelled();
        return this.docker(args) ?? unmodelled();
      case 'docker-compose':
        return this.compose(args) ?? unmodelled();
      case 'sh':
        return this.script(args, stdin) ?? unmodelled();
      default:
        return unmodelled();
    }
  }

  private rm(args: string[]): Answer | undefined {
    const [flag, dashes, ...paths] = args;
    if (dashes !== '--' || (flag !== '-f' && flag !== '-rf')) return undefined;
    for (const p of paths) {
      this.files.delete(p);
      if (flag === '-rf') this.removeTree(p);
    }
    return {};
  }

  private removeTree(p: string): void {
    for (const f of [...this.files.keys()]) if (f.startsWith(`${p}/`)) this.files.delete(f);
    for (const d of [...this.dirs]) if (d === p || d.startsWith(`${p}/`)) this.dirs.delete(d);
  }

  /** `test -s A -a -s B …`: every file there and not empty. */
  private test(args: string[]): Answer | undefined {
    const paths: string[] = [];
    for (let i = 0; i < args.length; i += 3) {
      if (args[i] !== '-s' || args[i + 1] === undefined || (i + 2 < args.length && args[i + 2] !== '-a')) return undefined;
      paths.push(args[i + 1]!);
    }
    if (paths.length === 0) return undefined;
    return paths.every((p) => (this.files.get(p) ?? '') !== '') ? {} : { code: 1 };
  }

  /** `mkdir -p -m MODE -- DIR…` (files.privateDir). */
  private mkdir(args: string[]): Answer | undefined {
    if (args[0] !== '-p' || args[1] !== '-m' || !/^[0-7]{3,4}$/.test(args[2] ?? '') || args[3] !== '--' || args.length < 5) return undefined;
    for (const d of args.slice(4)) {
      // As mkdir does: -m applies to the last folder only, and only when it makes it.
      if (!this.dirs.has(d)) this.dirModes.set(d, parseInt(args[2]!, 8));
      this.mkdirs(d);
    }
    return {};
  }

  private nginx(args: string[]): Answer | undefined {
    if (!this.hasNginx) return { code: 127, stderr: 'sh: 1: nginx: not found\n' };
    const a = args.join(' ');
    if (a === '-v') return { stderr: 'nginx version: nginx/1.24.0\n' };
    if (a === '-t -q') {
      this.nginxTests++;
      return this.nginxTest.shift() ?? this.nginxVerdict();
    }
    if (a === '-s reload') {
      if (!this.nginxRunning) return { code: 1, stderr: 'nginx: [error] invalid PID number "" in "/run/nginx.pid"\n' };
      this.reloadNginx();
      return {};
    }
    return undefined;
  }

  /** nginx -t's own verdict on the configuration: every certificate and key it names must be there. */
  private nginxVerdict(): Answer {
    const config = this.files.get(this.inv.loadBalancer.configPath) ?? '';
    for (const m of config.matchAll(/^\s*ssl_certificate(_key)?\s+([^;\s]+);/gm)) {
      const path = m[2]!;
      if ((this.files.get(path) ?? '') === '') {
        const what = m[1] ? 'certificate key' : 'certificate';
        return { code: 1, stderr: `nginx: [emerg] cannot load ${what} "${path}": BIO_new_file() failed (SSL: error:80000002:system library::No such file or directory:calling fopen(${path}, r))\nnginx: configuration file /etc/nginx/nginx.conf test failed\n` };
      }
    }
    return {};
  }

  private reloadNginx(): void {
    this.reloads++;
    this.activeConfig = this.files.get(this.inv.loadBalancer.configPath);
    this.cluster.record(this, { kind: 'nginx', op: 'reload' });
  }

  /** nginx.reloadOrStart: a graceful reload where nginx runs, else a start. */
  private reloadOrStart(): Answer {
    if (!this.hasNginx) return { code: 127, stderr: 'sh: 1: nginx: not found\n' };
    if (this.nginxRunning) {
      this.reloadNginx();
      return { stdout: 'reloaded\n' };
    }
    const verdict = this.nginxVerdict();
    if (verdict.code) return verdict;
    this.nginxRunning = true;
    this.nginxStarts++;
    this.activeConfig = this.files.get(this.inv.loadBalancer.configPath);
    this.cluster.record(this, { kind: 'nginx', op: 'start' });
    return { stdout: 'started\n' };
  }

  /**
   * firewall.drain / firewall.undrain: `sh -c SCRIPT sh TOOL OUTPUT <rule…>`. The rule is parsed
   * as iptables does and kept in its `-S` form; a drain inserts it unless it is there (-C), an
   * undrain deletes every copy (-D until it fails).
   */
  private firewallChange(op: 'drain' | 'undrain', p: string[]): Answer | undefined {
    const [tool, chain, ...spec] = p;
    if ((tool !== 'iptables' && tool !== 'ip6tables') || chain !== 'OUTPUT') return undefined;
    const o: Record<string, string> = {};
    const matches: string[] = [];
    for (let i = 0; i < spec.length; i += 2) {
      const [k, v] = [spec[i]!, spec[i + 1]];
      if (v === undefined) return undefined;
      if (k === '-m') matches.push(v);
      else if (['-p', '-d', '--dport', '--ctstate', '--comment', '-j', '--reject-with'].includes(k)) o[k] = v;
      else return undefined;
    }
    if (o['-p'] !== 'tcp' || matches.join() !== 'conntrack,comment' || o['--ctstate'] !== 'NEW' || o['-j'] !== 'REJECT' || o['--reject-with'] !== 'tcp-reset' || !o['--dport'] || !o['-d'] || !o['--comment']) return undefined;
    const v6 = tool === 'ip6tables';
    if (!this.iptables) return { code: 127, stderr: `sh: 1: ${tool}: not found\n` };
    if (o['-d'].includes(':') !== v6) return { code: 2, stderr: `${tool} v1.8.9 (nf_tables): host/network \`${o['-d']}' not found\nTry \`${tool} -h' or '${tool} --help' for more information.\n` };
    const node = /:drain:([^:]+)$/.exec(o['--comment'])?.[1] ?? o['--comment'];
    const fault = this.firewallFault?.(op, node);
    if (fault) return fault;
    const rule = `-A OUTPUT -d ${o['-d']}/${v6 ? 128 : 32} -p tcp -m tcp --dport ${o['--dport']} -m conntrack --ctstate NEW -m comment --comment "${o['--comment']}" -j REJECT --reject-with tcp-reset`;
    const rules = v6 ? this.rules6 : this.rules4;
    let changed = false;
    if (op === 'drain') {
      if (!rules.includes(rule)) {
        rules.unshift(rule);
        changed = true;
      }
    } else {
      for (let i = rules.indexOf(rule); i >= 0; i = rules.indexOf(rule)) {
        rules.splice(i, 1);
        changed = true;
      }
    }
    this.cluster.record(this, { kind: 'firewall', op, node, rule, changed });
    return {};
  }

  /** keepalived.startOrReload: HUP where it runs, else a start (which needs its configuration). */
  private keepalivedStartOrReload(): Answer {
    if (this.keepalived === 'missing') return { code: 127, stderr: 'sh: 1: keepalived: not found\n' };
    const conf = this.files.get(KEEPALIVED_CONF);
    if (this.keepalived === 'running') {
      this.keepalivedReloads++;
      this.keepalivedActive = conf;
      this.cluster.record(this, { kind: 'keepalived', op: 'reload' });
      return { stdout: 'reloaded\n' };
    }
    if (conf === undefined) return { code: 1, stderr: `Job for keepalived.service failed: Configuration file '${KEEPALIVED_CONF}' is not a regular non-executable file\n` };
    this.keepalived = 'running';
    this.keepalivedStarts++;
    this.keepalivedActive = conf;
    this.cluster.record(this, { kind: 'keepalived', op: 'start' });
    return { stdout: 'started\n' };
  }

  private docker(args: string[]): Answer | undefined {
    const a = args.join(' ');
    const last = args.at(-1) ?? '';
    if (a === 'version --format {{.Server.Version}}') return { stdout: '24.0.7\n' };
    if (args[0] === 'image' && args[1] === 'inspect' && args[2] === '--format' && args[3] === '{{.Id}}' && args.length === 5) {
      const id = this.images.get(last);
      return id ? { stdout: `${id}\n` } : { code: 1, stderr: `Error: No such image: ${last}\n` };
    }
    if (args[0] === 'pull' && args[1] === '--quiet' && args.length === 3) {
      if (!(this.pullable ?? this.cluster.registry).has(last)) return { code: 1, stderr: `Error response from daemon: manifest for ${last} not found: manifest unknown: manifest unknown\n` };
      this.images.set(last, this.cluster.behaviour(last).id);
      return { stdout: `docker.io/${last}\n` };
    }
    if (args[0] === 'image' && args[1] === 'ls' && args[2] === '--format' && args[3] === '{{.Repository}}:{{.Tag}}' && args.length === 5) {
      const refs = [...this.images.keys()].filter((ref) => ref.slice(0, ref.lastIndexOf(':')) === last);
      return { stdout: refs.map((r) => `${r}\n`).join('') };
    }
    if (args[0] === 'image' && args[1] === 'rm' && args.length >= 3) {
      const inUse = [...this.containers.values()].map((c) => c?.image);
      for (const ref of args.slice(2)) {
        if (inUse.includes(ref)) return { code: 1, stderr: `Error response from daemon: conflict: unable to remove repository reference "${ref}" (must force) - container is using its referenced image\n` };
        this.images.delete(ref);
      }
      return { stdout: args.slice(2).map((r) => `Untagged: ${r}\n`).join('') };
    }
    if (args[0] === 'tag' && args.length === 3) {
      const id = this.images.get(args[1]!);
      if (!id) return { code: 1, stderr: `Error response from daemon: No such image: ${args[1]}\n` };
      this.images.set(args[2]!, id);
      return {};
    }
    if (args[0] === 'container' && args[1] === 'inspect' && args.length === 3) {
      const c = this.refresh(this.containers.get(last));
      if (!c) return { code: 1, stdout: '[]\n', stderr: `Error: No such container: ${last}\n` };
      return { stdout: `${JSON.stringify([this.inspect(c)], null, 4)}\n` };
    }
    if (args[0] === 'rm' && args[1] === '--force' && args.length === 3) {
      if (!this.containers.delete(last)) return { code: 1, stderr: `Error response from daemon: No such container: ${last}\n` };
      return { stdout: `${last}\n` };
    }
    if (args[0] === 'start' && args.length === 2) {
      const c = this.refresh(this.containers.get(last));
      if (!c) return { code: 1, stderr: `Error response from daemon: No such container: ${last}\nError: failed to start containers: ${last}\n` };
      const conflict = this.portConflict(c);
      if (conflict) return conflict;
      if (c.status !== 'running') this.start(c);
      return { stdout: `${last}\n` };
    }
    if (args[0] === 'logs') {
      let i = 1;
      let tail: number | undefined;
      while (args[i]?.startsWith('--')) {
        if (args[i] === '--tail') {
          tail = Number(args[i + 1]);
          i += 2;
        } else if (args[i] === '--timestamps') i++;
        else return undefined;
      }
      if (i !== args.length - 1) return undefined;
      const c = this.refresh(this.containers.get(last));
      if (!c) return { code: 1, stderr: `Error response from daemon: No such container: ${last}\n` };
      const lines = tail === undefined ? c.logs : c.logs.slice(-tail);
      return { stdout: lines.map((l) => `${l}\n`).join('') };
    }
    if (args[0] === 'ps' && args[1] === '--all' && args[2] === '--filter' && args[3]?.startsWith('publish=') && args[4] === '--format' && args[5] === '{{.Names}}' && args.length === 6) {
      const port = Number(args[3].slice('publish='.length));
      return { stdout: [...this.containers.values()].filter((c) => c.ports.includes(port)).map((c) => `${c.name}\n`).join('') };
    }
    return undefined;
  }

  private inspect(c: FakeContainer): object {
    const iso = (t: number | undefined) => (t === undefined ? '0001-01-01T00:00:00Z' : new Date(t).toISOString());
    return {
      Id: createHash('sha256').update(`${this.name}/${c.name}/${c.startedAt ?? 'created'}`).digest('hex'),
      Created: iso(c.startedAt),
      Path: '/one-api',
      Args: ['--log-dir', '/app/logs'],
      State: {
        Status: c.status,
        // As docker reports a container in its restart back-off: running, and restarting.
        Running: c.status === 'running' || c.status === 'restarting',
        Paused: false,
        Restarting: c.status === 'restarting',
        OOMKilled: false,
        Dead: false,
        Pid: c.status === 'running' ? 4242 : 0,
        ExitCode: c.status === 'exited' ? 2 : 0,
        Error: '',
        StartedAt: iso(c.startedAt),
        FinishedAt: '0001-01-01T00:00:00Z',
      },
      Image: c.imageId,
      Name: `/${c.name}`,
      RestartCount: c.restartCount,
      Config: { Hostname: this.name, Image: c.image, Env: c.env.split('\n').filter((l) => /^[A-Z_]+=/.test(l)) },
      HostConfig: { PortBindings: { '3000/tcp': c.ports.map((p) => ({ HostIp: '', HostPort: String(p) })) } },
    };
  }

  private compose(args: string[]): Answer | undefined {
    const o: Record<string, string> = {};
    let i = 0;
    while (args[i] === '--project-name' || args[i] === '--project-directory' || args[i] === '--file') {
      o[args[i]!] = args[i + 1]!;
      i += 2;
    }
    const project = o['--project-name'];
    const dir = o['--project-directory'];
    const file = o['--file'];
    if (project !== this.inv.cluster.name || dir !== this.inv.cluster.dir || file === undefined) return undefined;
    const sub = args[i];
    const flags = args.slice(i + 1);
    const has = (f: string) => flags.includes(f);
    if (sub === 'up') {
      const known = ['--detach', '--remove-orphans', '--force-recreate', '--no-start'];
      if (flags.some((f) => !known.includes(f)) || file !== `${dir}/docker-compose.yml`) return undefined;
      return this.composeUp(file, { recreate: has('--force-recreate'), start: !has('--no-start') });
    }
    if (sub === 'down') {
      if (flags.join(' ') !== '--remove-orphans --timeout 10') return undefined;
      this.containers.delete(this.cluster.containerName);
      return {};
    }
    if (sub === 'stop') {
      if (flags.join(' ') !== '--timeout 10') return undefined;
      const c = this.containers.get(this.cluster.containerName);
      if (c) c.status = 'exited';
      return {};
    }
    if (sub === 'run') {
      // run --detach --no-deps --name NAME --publish 127.0.0.1:PORT:3000 SERVICE
      if (flags[0] !== '--detach' || flags[1] !== '--no-deps' || flags[2] !== '--name' || flags[4] !== '--publish' || flags.length !== 7) return undefined;
      const name = flags[3]!;
      const m = /^127\.0\.0\.1:(\d+):3000$/.exec(flags[5]!);
      if (!m) return undefined;
      const spec = this.readCompose(file);
      if ('code' in spec) return spec;
      if (flags[6] !== spec.service) return { code: 1, stderr: `ERROR: No such service: ${flags[6]}\n` };
      if (this.containers.has(name)) return { code: 1, stderr: `ERROR: Cannot create container for service ${spec.service}: Conflict. The container name "/${name}" is already in use\n` };
      const env = this.files.get(`${dir}/.env`);
      if (env === undefined) return { code: 1, stderr: `ERROR: Couldn't find env file: ${dir}/.env\n` };
      const pulled = this.ensureImage(spec.image);
      if (pulled) return pulled;
      // `compose run` ignores the service's restart policy.
      const c = this.newContainer(name, spec.image, env, [Number(m[1])], 'no');
      const conflict = this.portConflict(c);
      if (conflict) return conflict;
      this.containers.set(name, c);
      this.start(c);
      return { stdout: `${name}\n` };
    }
    return undefined;
  }

  private readCompose(file: string): { image: string; service: string; port: number; name: string; restart: 'always' | 'no' } | { code: number; stderr: string } {
    const text = this.files.get(file);
    if (text === undefined) return { code: 1, stderr: `ERROR: .FileNotFoundError: [Errno 2] No such file or directory: '${file}'\n` };
    const doc = parseYaml(text) as { services?: Record<string, { image?: string; container_name?: string; ports?: string[]; restart?: string }> };
    const [service, def] = Object.entries(doc.services ?? {})[0] ?? [];
    if (!service || !def?.image) throw this.cluster.unmodel(this, `a compose file without a service image (${file})`);
    const port = Number(/^(\d+):3000$/.exec(def.ports?.[0] ?? '')?.[1] ?? NaN);
    return { image: def.image, service, port, name: def.container_name ?? `${this.inv.cluster.name}_${service}_1`, restart: def.restart === 'always' ? 'always' : 'no' };
  }

  private composeUp(file: string, o: { recreate: boolean; start: boolean }): Answer {
    const spec = this.readCompose(file);
    if ('code' in spec) return spec;
    const env = this.files.get(`${this.inv.cluster.dir}/.env`);
    if (env === undefined) return { code: 1, stderr: `ERROR: Couldn't find env file: ${this.inv.cluster.dir}/.env\n` };
    const pulled = this.ensureImage(spec.image);
    if (pulled) return pulled;
    const existing = this.refresh(this.containers.get(spec.name));
    const same = existing !== undefined && existing.image === spec.image && existing.imageId === this.images.get(spec.image) && existing.env === env && existing.ports.join() === String(spec.port);
    if (existing && same && !o.recreate && o.start) {
      if (existing.status !== 'running') this.start(existing);
      return { stderr: `${spec.name} is up-to-date\n` };
    }
    const c = this.newContainer(spec.name, spec.image, env, [spec.port], spec.restart);
    this.containers.delete(spec.name);
    if (o.start) {
      const conflict = this.portConflict(c);
      if (conflict) return conflict;
    }
    this.containers.set(spec.name, c);
    if (o.start) this.start(c);
    return { stderr: `${existing ? 'Recreating' : 'Creating'} ${spec.name} ... done\n` };
  }

  /** compose pulls a missing image by itself. */
  private ensureImage(ref: string): Answer | undefined {
    if (this.images.has(ref)) return undefined;
    if (!(this.pullable ?? this.cluster.registry).has(ref)) return { code: 1, stderr: `ERROR: pull access denied for ${parseImageRef(ref).repository}, repository does not exist\n` };
    this.images.set(ref, this.cluster.behaviour(ref).id);
    return undefined;
  }

  private portConflict(c: FakeContainer): Answer | undefined {
    const other = [...this.containers.values()].find((x) => x.name !== c.name && x.status === 'running' && x.ports.some((p) => c.ports.includes(p)));
    return other ? { code: 1, stderr: `Error response from daemon: driver failed programming external connectivity: Bind for 0.0.0.0:${c.ports[0]} failed: port is already allocated\n` } : undefined;
  }

  private newContainer(name: string, image: string, env: string, ports: number[], restartPolicy: 'always' | 'no'): FakeContainer {
    return { name, image, imageId: this.images.get(image) ?? this.cluster.behaviour(image).id, env, ports, status: 'created', startedAt: undefined, restartPolicy, restartCount: 0, logs: [], masterMode: !isSlaveEnv(env) };
  }

  private start(c: FakeContainer): void {
    const b = this.cluster.behaviour(c.image);
    c.status = 'running';
    c.startedAt = this.clock.now();
    c.logs.push(...b.logs);
    // A master-mode start migrates the shared schema up to its version.
    if (c.masterMode && b.version && (this.cluster.schemaVersion === undefined || (compareVersions(this.cluster.schemaVersion, b.version) ?? 0) < 0)) {
      this.cluster.schemaVersion = b.version;
    }
    this.cluster.record(this, { kind: 'container-start', name: c.name, image: c.image });
  }

  /**
   * Applies what time did to a container: a crash, and with `restart: always` docker starting it
   * again after its back-off (100 ms, doubling, at most a minute), RestartCount counting.
   */
  private refresh(c: FakeContainer | undefined): FakeContainer | undefined {
    if (!c) return c;
    const b = this.cluster.behaviour(c.image);
    const now = this.clock.now();
    for (;;) {
      if (c.status === 'restarting' && c.restartAt !== undefined && now >= c.restartAt) {
        c.status = 'running';
        c.startedAt = c.restartAt;
        c.restartAt = undefined;
        c.restartCount++;
        c.logs.push(...b.logs);
        continue;
      }
      if (c.status !== 'running' || b.crashAfterMs === undefined || now < (c.startedAt ?? 0) + b.crashAfterMs) return c;
      const crashedAt = (c.startedAt ?? 0) + b.crashAfterMs;
      c.logs.push(...b.crashLogs);
      if (c.restartPolicy === 'always') {
        c.status = 'restarting';
        c.restartAt = crashedAt + Math.min(100 * 2 ** c.restartCount, 60_000);
      } else {
        c.status = 'exited';
        return c;
      }
    }
  }

  private script(args: string[], stdin: string | undefined): Answer | undefined {
    if (args[0] !== '-c') return undefined;
    const script = args[1]!;
    const p = args.slice(3);
    if (BARE_SCRIPTS.has(script) ? args.length !== 2 : args[2] !== 'sh') return undefined;
    switch (script) {
      case SCRIPTS.detect:
        return { stdout: 'v1\n' };
      case SCRIPTS.fwProbe:
        return { stdout: this.iptables ? 'ok\n' : '' };
      case SCRIPTS.balancerFacts: {
        // The upstream file; the OUTPUT rules when iptables can be used; the sha256 of the
        // certificate and the key (`none`: absent or empty); with a vip: keepalived's state, the
        // sums of its configuration and check script, the interface routing to the vip and that
        // interface's own address.
        const [config, cert, key, kaConf, kaScript, vip, family] = p as [string, string, string, string, string, string, string];
        if (p.length !== 7 || (kaConf !== '' && family !== (vip.includes(':') ? 'inet6' : 'inet'))) return undefined;
        const b64 = (text: string) => Buffer.from(text).toString('base64');
        const sum = (path: string) => {
          const text = this.files.get(path);
          return text ? createHash('sha256').update(text).digest('hex') : 'none';
        };
        const file = this.files.get(config);
        const lines = [`file ${file === undefined ? '-' : b64(file)}`, `firewall ${this.iptables ? b64(this.iptablesListing()) : '-'}`, `tls ${b64(`${sum(cert)} ${sum(key)}\n`)}`];
        if (kaConf !== '') {
          const routed = sameNetwork(vip, this.address, this.network.prefix);
          const [dev, own] = routed ? [this.network.dev, `${this.address}/${this.network.prefix}`] : ['', ''];
          const ownPrefix = own.includes('/') ? own.slice(own.indexOf('/') + 1) : own;
          const ownAddress = own.includes('/') ? own.slice(0, own.lastIndexOf('/')) : own;
          lines.push(`vrrp ${b64(`${this.keepalived} ${sum(kaConf)} ${sum(kaScript)} ${dev || '-'} ${ownPrefix} ${ownAddress}\n`)}`);
        }
        return { stdout: lines.map((l) => `${l}\n`).join('') };
      }
      case SCRIPTS.fwDrain:
        return this.firewallChange('drain', p);
      case SCRIPTS.fwUndrain:
        return this.firewallChange('undrain', p);
      case SCRIPTS.reloadOrStart:
        return this.reloadOrStart();
      case SCRIPTS.kaState:
        return { stdout: `${this.keepalived}\n` };
      case SCRIPTS.kaStartOrReload:
        return this.keepalivedStartOrReload();
      case SCRIPTS.kaRouteTo: {
        const [address, family] = p;
        if (p.length !== 2 || family !== (address?.includes(':') ? 'inet6' : 'inet')) return undefined;
        // `ip route get` names the interface of the host's own network; anything else goes via a gateway we do not model.
        return sameNetwork(address!, this.address, this.network.prefix) ? { stdout: `${this.network.dev} ${this.network.prefix} ${this.address}\n` } : { code: 3 };
      }
      case SCRIPTS.inFlight: {
        const [name, port] = p;
        if (p.length !== 2 || port !== '3000') return undefined;
        return { stdout: `${this.containers.get(name!)?.status === 'running' ? this.inFlight() : 0}\n` };
      }
      case SCRIPTS.kaHolds: {
        const [address] = p;
        if (p.length !== 1) return undefined;
        return { stdout: address === this.inv.loadBalancer.vip && this.cluster.vipHolder() === this ? `${this.network.dev}\n` : '' };
      }
      case SCRIPTS.layout: {
        const [dir, stateDir, releasesDir] = p as [string, string, string];
        for (const d of [`${dir}/data`, `${dir}/logs`, stateDir, releasesDir]) this.mkdirs(d);
        return {};
      }
      case SCRIPTS.snapshot: {
        const [dir, releaseDir] = p as [string, string];
        for (const f of ['docker-compose.yml', '.env']) {
          if (!this.files.has(`${dir}/${f}`)) return { code: 1, stderr: `cp: cannot stat '${dir}/${f}': No such file or directory\n` };
        }
        this.mkdirs(releaseDir);
        for (const f of ['docker-compose.yml', '.env']) this.files.set(`${releaseDir}/${f}`, this.files.get(`${dir}/${f}`)!);
        return {};
      }
      case SCRIPTS.listReleases: {
        const [releasesDir] = p as [string];
        const prefix = `${releasesDir}/`;
        const ids = [...this.files.keys()]
          .filter((f) => f.startsWith(prefix) && /^[^/]+\/release\.json$/.test(f.slice(prefix.length)))
          .map((f) => f.slice(prefix.length, -'/release.json'.length))
          .sort((a, b) => (Buffer.from(a) < Buffer.from(b) ? -1 : 1));
        return { stdout: ids.map((id) => `=== ${id}\n${this.files.get(`${prefix}${id}/release.json`)}\n`).join('') };
      }
      case SCRIPTS.purge: {
        const [dir, cluster] = p as [string, string];
        const state = this.files.get(`${dir}/.newapi-cluster/state.json`);
        if (state === undefined || !state.includes(`"cluster": "${cluster}"`)) return { code: 3, stderr: `no state.json of cluster ${cluster} in ${dir}: not removed\n` };
        this.removeTree(dir);
        return {};
      }
      case SCRIPTS.append: {
        const [path] = p as [string];
        const parent = path.slice(0, path.lastIndexOf('/')) || '/';
        if (!this.dirs.has(parent)) return { code: 2, stderr: `sh: 1: cannot create ${path}: Directory nonexistent\n` };
        this.files.set(path, (this.files.get(path) ?? '') + (stdin ?? ''));
        return {};
      }
      case SCRIPTS.nodeFacts: {
        // Each file, the container's inspect and the image's id, base64 on one line each, `-` when absent.
        const [dir, name, image] = p as [string, string, string];
        if (p.length !== 3) return undefined;
        const b64 = (text: string) => Buffer.from(text).toString('base64');
        const lines = ['docker-compose.yml', '.env', '.newapi-cluster/state.json'].map((f) => {
          const text = this.files.get(`${dir}/${f}`);
          return `${f} ${text === undefined ? '-' : b64(text)}`;
        });
        const c = this.refresh(this.containers.get(name));
        lines.push(`container ${c ? b64(JSON.stringify([this.inspect(c)], null, 4)) : '-'}`);
        const id = this.images.get(image);
        lines.push(`image ${id ? b64(id) : '-'}`);
        return { stdout: lines.map((l) => `${l}\n`).join('') };
      }
      case SCRIPTS.freeKiB:
        return { stdout: '104857600\n' };
      case SCRIPTS.listening: {
        const port = Number(p[0]);
        const busy = [...this.containers.values()].some((c) => this.refresh(c)!.status === 'running' && c.ports.includes(port));
        return { stdout: busy ? `LISTEN 0      4096         0.0.0.0:${port}      0.0.0.0:*\n` : '' };
      }
      default:
        return undefined;
    }
  }

  private mkdirs(dir: string): void {
    const parts = dir.split('/').filter(Boolean);
    for (let i = 1; i <= parts.length; i++) this.dirs.add(`/${parts.slice(0, i).join('/')}`);
  }

  private addParents(path: string): void {
    this.mkdirs(path.slice(0, path.lastIndexOf('/')));
  }
}

/** A socket that answers one HTTP/1.1 request, then closes. */
function httpDuplex(answer: () => HttpAnswer): Duplex {
  let request = '';
  let answered = false;
  const reasons: Record<number, string> = { 200: 'OK', 404: 'Not Found', 500: 'Internal Server Error', 503: 'Service Unavailable' };
  const d: Duplex = new Duplex({
    read() {},
    write(chunk: Buffer, _enc, cb) {
      request += chunk.toString('latin1');
      if (!answered && request.includes('\r\n\r\n')) {
        answered = true;
        const [method, path] = (request.split('\r\n')[0] ?? '').split(' ');
        const a = method === 'GET' && path === '/api/status' ? answer() : { status: 404, body: '{"success":false,"message":"not found"}' };
        const body = Buffer.from(a.body);
        setImmediate(() => {
          if (d.destroyed) return;
          d.push(`HTTP/1.1 ${a.status} ${reasons[a.status] ?? 'Status'}\r\nContent-Type: application/json; charset=utf-8\r\nContent-Length: ${body.length}\r\nConnection: close\r\n\r\n`);
          d.push(body);
          d.push(null);
        });
      }
      cb();
    },
  });
  return d;
}

// ---------------------------------------------------------------------------------------------
// The executor
// ---------------------------------------------------------------------------------------------

export class FakeExecutor implements Executor {
  constructor(
    readonly host: FakeHost,
    readonly target: SshTarget,
  ) {}

  async exec(argv: Argv, opts: ExecOptions = {}): Promise<ExecResult> {
    const commandLine = toCommandLine(argv, { sudo: this.target.sudo });
    const stdin = opts.stdin === undefined ? undefined : Buffer.isBuffer(opts.stdin) ? opts.stdin.toString('utf8') : opts.stdin;
    if (this.host.dropWhen?.(argv)) {
      this.host.dropWhen = undefined;
      this.host.lose();
    }
    const partial = await this.host.call(`run \`${commandLine.slice(0, 80)}\``, opts, DEFAULT_EXEC_MS, () => this.host.exec([...argv], stdin));
    const result: ExecResult = { code: partial.code ?? 0, stdout: partial.stdout ?? '', stderr: partial.stderr ?? '' };
    if (result.stdout !== '') opts.onStdout?.(Buffer.from(result.stdout));
    if (result.stderr !== '') opts.onStderr?.(Buffer.from(result.stderr));
    if (result.code !== 0 && opts.allowFailure !== true) throw commandFailedError(this.target, commandLine, result.code, result.stderr);
    return result;
  }

  async execWithInput(argv: Argv, _input: NodeJS.ReadableStream, _opts: ExecOptions = {}): Promise<ExecResult> {
    throw this.host.cluster.unmodel(this.host, `execWithInput ${JSON.stringify(argv)}`);
  }

  upload(path: string, content: string | Buffer, mode: number, opts: OpOptions = {}): Promise<void> {
    return this.host.call(`write ${path}`, opts, DEFAULT_OP_MS, () => this.host.upload(path, content, mode));
  }

  readFile(path: string, opts: OpOptions = {}): Promise<Buffer | undefined> {
    return this.host.call(`read ${path}`, opts, DEFAULT_OP_MS, () => this.host.readFile(path));
  }

  openTunnel(host: string, port: number, opts: OpOptions = {}): Promise<Duplex> {
    return this.host.call(`open a tunnel to ${host}:${port}`, opts, DEFAULT_OP_MS, () => this.host.openTunnel(host, port));
  }

  async close(): Promise<void> {}
}

// ---------------------------------------------------------------------------------------------
// The run's environment
// ---------------------------------------------------------------------------------------------

export interface TestEnv {
  env: RunEnv;
  /** Stops the run as the first Ctrl-C (or `signal`) would. */
  stop(signal?: StopSignalName): void;
  stdout(): string;
  stderr(): string;
  hardQuit: Set<() => Promise<void>>;
}

function collector(): { stream: Writable; text: () => string } {
  const parts: string[] = [];
  return {
    stream: new Writable({
      write(chunk: Buffer | string, _enc, cb) {
        parts.push(typeof chunk === 'string' ? chunk : chunk.toString('utf8'));
        cb();
      },
    }),
    text: () => parts.join(''),
  };
}

export function makeTestEnv(deps: Partial<SessionDeps>, opts: { json?: boolean; secrets?: readonly string[] } = {}): TestEnv {
  const out = collector();
  const err = collector();
  const output = new Output({ json: opts.json ?? false, verbose: false, color: false, plain: true, stdout: out.stream, stderr: err.stream });
  if (opts.secrets) output.addSecrets(opts.secrets);
  const controller = new AbortController();
  setMaxListeners(0, controller.signal); // as cli/main.ts does: every call in flight listens to it
  let received: StopSignalName | undefined;
  const hardQuit = new Set<() => Promise<void>>();
  const signals: RunSignals = {
    stop: controller.signal,
    get received() {
      return received;
    },
    onHardQuit: (fn) => {
      hardQuit.add(fn);
      return () => hardQuit.delete(fn);
    },
  };
  return {
    env: { out: output, style: makeStyle(false), interactive: false, json: opts.json ?? false, verbose: false, yes: true, acceptNewHostKeys: false, signals, deps },
    stop: (signal = 'SIGINT') => {
      if (controller.signal.aborted) return;
      received = signal;
      controller.abort(new InterruptedError(`interrupted (${signal})`, signal));
    },
    stdout: out.text,
    stderr: err.text,
    hardQuit,
  };
}

// ---------------------------------------------------------------------------------------------
// The lab: an inventory on disk, the fake cluster, the lock store, the clock
// ---------------------------------------------------------------------------------------------

export const IMAGE_V20 = 'calciumion/new-api:v0.9.20';
export const IMAGE_V21 = 'calciumion/new-api:v0.9.21';
export const IMAGE_V22 = 'calciumion/new-api:v0.9.22';

export interface LabOptions {
  /** Edits the raw inventory before it is written. */
  inventory?: (raw: RawInventory) => void;
  rollout?: Record<string, unknown>;
  /**
   * Several balancer hosts (loadBalancer.hosts instead of host), labelled balancer-1, balancer-2…;
   * with two or more, `vip` (default 10.0.0.100) is their floating address.
   */
  balancers?: string[];
  vip?: string;
  /** Whether the balancer hosts can use iptables (default true, as in production): false, drains mark the node down in the file. */
  firewall?: boolean;
}

export interface RunOutcome<T> extends Settled<T> {
  stdout: string;
  stderr: string;
  startedAt: number;
  t: TestEnv;
}

export class Lab {
  private constructor(
    readonly tmp: TempInventory,
    public loaded: LoadedInventory,
    readonly clock: DrivenClock,
    readonly cluster: FakeCluster,
    readonly store: MemoryLockStore,
  ) {}

  static async create(opts: LabOptions = {}): Promise<Lab> {
    const raw = baseInventory();
    raw.ssh = { configFile: false };
    // Backups have their own tests (they need a real dump tool and database).
    raw.rollout = { healthTimeoutSeconds: 30, backupBeforeMigrate: false, ...opts.rollout };
    if (opts.balancers) {
      const { host: _single, ...lb } = raw.loadBalancer as Record<string, unknown>;
      raw.loadBalancer = { ...lb, hosts: opts.balancers, ...(opts.balancers.length > 1 || opts.vip ? { vip: opts.vip ?? '10.0.0.100' } : {}) };
    }
    opts.inventory?.(raw);
    const tmp = await writeInventoryDir(raw);
    const loaded = await loadInventory(tmp.file, { env: {} });
    const clock = new DrivenClock();
    const cluster = new FakeCluster(loaded.inventory, clock);
    for (const ref of [IMAGE_V20, IMAGE_V21, IMAGE_V22]) cluster.publish(ref);
    for (const b of cluster.balancers) b.iptables = opts.firewall ?? true;
    return new Lab(tmp, loaded, clock, cluster, new MemoryLockStore(clock));
  }

  /** Reads the inventory file again (after a command edited it). */
  async reload(): Promise<LoadedInventory> {
    this.loaded = await loadInventory(this.tmp.file, { env: {} });
    this.cluster.inv = this.loaded.inventory;
    return this.loaded;
  }

  deps(operator = 'tester@test'): SessionDeps {
    return {
      connect: (target) => this.cluster.executor(target),
      closeAll: async () => undefined,
      openLockStore: async (ex, url) => {
        // The real store tunnels to Redis through the node, then connects.
        (await ex.openTunnel(url.host, url.port, { timeoutMs: 5_000 })).destroy();
        if (!this.store.reachable) throw new Error(`connect ECONNREFUSED ${url.host}:${url.port}`);
        return this.store.handle(ex.target.label, this.cluster.host(ex.target.label));
      },
      dial: fakeProbeClients as unknown as Dialer,
      clock: this.clock,
      operator,
    };
  }

  env(opts: { json?: boolean } = {}): TestEnv {
    return makeTestEnv(this.deps(), { ...opts, secrets: this.loaded.secretValues });
  }

  /** Runs `fn` with a fresh environment, driving the manual clock until it settles. */
  async run<T>(fn: (env: RunEnv, loaded: LoadedInventory) => Promise<T>, t: TestEnv = this.env()): Promise<RunOutcome<T>> {
    const startedAt = this.clock.now();
    const settled = await drive(this.clock, this.cluster, fn(t.env, this.loaded)).catch((e: unknown) => {
      // A run that never ends: say where it stood, so that a rare hang can be read from one failure.
      const tail = (text: string) => text.trimEnd().split('\n').slice(-25).join('\n');
      const events = this.cluster.events.slice(-15).map((e) => JSON.stringify(e).slice(0, 200)).join('\n');
      throw new Error(`${(e as Error).message}\n--- its output, last lines:\n${tail(t.stderr())}\n--- the last fake events:\n${events}`, { cause: e });
    });
    return { ...settled, stdout: t.stdout(), stderr: t.stderr(), startedAt, t };
  }

  drive<T>(promise: Promise<T>): Promise<Settled<T>> {
    return drive(this.clock, this.cluster, promise);
  }

  node(name: string): FakeHost {
    return this.cluster.host(name);
  }

  async cleanup(): Promise<void> {
    await this.tmp.cleanup();
  }
}
