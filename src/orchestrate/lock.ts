/**
 * The cluster lock: one key per cluster, taken atomically (SET NX PX), renewed while held,
 * released on exit. If its holder dies, the key expires and the cluster is free.
 *
 * A lock is only worth something if losing it is noticed. Renewal failures are seen and retried on
 * a fresh connection (another tunnel, another node); the lock counts as held only while a renewal
 * succeeded within its TTL. Orchestration calls `verify()` before every step that changes a host:
 * a lock that was lost, or that cannot be confirmed, stops the run there (exit 3).
 */
import { randomUUID } from 'node:crypto';
import { LockedError, LockLostError, errorMessage } from '../errors.js';
import type { Clock } from './clock.js';

export interface LockHolder {
  id: string;
  operator: string;
  command: string;
  pid: number;
  since: string;
}

export type RenewResult = 'renewed' | 'retaken' | 'lost';

/** Where the lock lives (Redis in production, memory in unit tests). Every method is atomic. */
export interface LockStore {
  /** Which node the store is reached through, for messages. */
  readonly where: string;
  /** Takes the key if free. */
  acquire(key: string, value: string, ttlMs: number): Promise<boolean>;
  /** Extends our own key; takes it back if it vanished without a tombstone (a restarted Redis); else lost. */
  renew(key: string, value: string, ttlMs: number): Promise<RenewResult>;
  read(key: string): Promise<{ value: string; ttlMs: number } | undefined>;
  /** Deletes the key only if it still holds `value`. */
  release(key: string, value: string): Promise<boolean>;
  /** Deletes the key only if it still holds `value`, and leaves a tombstone for that holder. */
  forceRelease(key: string, value: string): Promise<boolean>;
  close(): Promise<void>;
}

/**
 * Opens a store, trying the nodes in order; `avoid` names nodes that just failed (tried last).
 * `stop` is given only while taking the lock: a stop signal then ends the search.
 */
export type LockStoreOpener = (avoid?: ReadonlySet<string>, stop?: AbortSignal) => Promise<LockStore>;

export const LOCK_TTL_MS = 30_000;
export const LOCK_RENEW_MS = 10_000;
const RETRY_MS = 1_000;

export const lockKey = (cluster: string) => `newapi-cluster:${cluster}:lock`;

export function describeHolder(h: LockHolder, now = Date.now()): string {
  const age = Math.max(0, Math.round((now - Date.parse(h.since)) / 1000));
  return `${h.operator} (pid ${h.pid}) running "${h.command}" since ${h.since} (${age} s ago)`;
}

export function parseHolder(value: string): LockHolder {
  try {
    const h = JSON.parse(value) as Partial<LockHolder>;
    if (typeof h.operator === 'string' && typeof h.command === 'string') {
      return { id: String(h.id ?? ''), operator: h.operator, command: h.command, pid: Number(h.pid ?? 0), since: String(h.since ?? new Date(0).toISOString()) };
    }
  } catch {
    // not ours: shown as unknown below
  }
  return { id: value, operator: 'unknown', command: 'unknown', pid: 0, since: new Date(0).toISOString() };
}

export async function readLock(store: LockStore, cluster: string): Promise<(LockHolder & { ttlMs: number; value: string }) | undefined> {
  const r = await store.read(lockKey(cluster));
  return r && { ...parseHolder(r.value), ttlMs: r.ttlMs, value: r.value };
}

export interface LockOptions {
  open: LockStoreOpener;
  cluster: string;
  operator: string;
  command: string;
  clock: Clock;
  /** Said once when something noteworthy happens (retaken after a Redis restart, a renewal failed). */
  note?: (text: string) => void;
  /** Ends the search for a reachable Redis while the lock is being taken (Ctrl-C before any change). */
  stop?: AbortSignal;
}

export class ClusterLock {
  private store: LockStore;
  private confirmedAt: number;
  private lostError: LockLostError | undefined;
  private readonly stopRenewing = new AbortController();
  private renewing: Promise<void> | undefined;
  private busy: Promise<void> = Promise.resolve();
  private released = false;

  private constructor(
    private readonly opts: LockOptions,
    store: LockStore,
    private readonly value: string,
    readonly holder: LockHolder,
  ) {
    this.store = store;
    this.confirmedAt = opts.clock.now();
  }

  static async acquire(opts: LockOptions): Promise<ClusterLock> {
    const store = await opts.open(undefined, opts.stop);
    const holder: LockHolder = { id: randomUUID(), operator: opts.operator, command: opts.command, pid: process.pid, since: new Date(opts.clock.now()).toISOString() };
    const value = JSON.stringify(holder);
    let taken: boolean;
    try {
      taken = await store.acquire(lockKey(opts.cluster), value, LOCK_TTL_MS);
    } catch (e) {
      await store.close().catch(() => undefined);
      throw e;
    }
    if (!taken) {
      const current = await readLock(store, opts.cluster).catch(() => undefined);
      await store.close().catch(() => undefined);
      throw new LockedError(
        `cluster ${opts.cluster} is locked by ${current ? describeHolder(current, opts.clock.now()) : 'another operator'}`,
        `wait for it to finish; if that operation is dead, the lock expires within ${LOCK_TTL_MS / 1000} s, or run newapi-cluster lock release --force`,
      );
    }
    const lock = new ClusterLock(opts, store, value, holder);
    lock.renewing = lock.renewLoop();
    return lock;
  }

  private get key(): string {
    return lockKey(this.opts.cluster);
  }

  /** The error the run stops with, once the lock is known to be lost. */
  get lost(): LockLostError | undefined {
    return this.lostError;
  }

  /**
   * Confirms, with a round trip, that we still hold the lock (and extends it). Throws when it was
   * lost, or when it cannot be confirmed before its TTL since the last confirmation runs out.
   */
  async verify(): Promise<void> {
    if (this.released) throw new LockLostError(`the lock on cluster ${this.opts.cluster} was released: this run is quitting`, 'run newapi-cluster status to see where things stand');
    if (this.lostError) throw this.lostError;
    await this.confirm();
    if (this.lostError) throw this.lostError;
  }

  /** One renewal, retried on fresh connections until it succeeds or the TTL runs out. Serialised. */
  private confirm(): Promise<void> {
    const next = this.busy.then(() => this.confirmNow());
    this.busy = next.catch(() => undefined);
    return next;
  }

  private async confirmNow(): Promise<void> {
    const { clock } = this.opts;
    let failedOn: string | undefined;
    for (;;) {
      if (this.lostError || this.released) return;
      try {
        const r = await this.store.renew(this.key, this.value, LOCK_TTL_MS);
        if (r === 'lost') {
          const now = await readLock(this.store, this.opts.cluster).catch(() => undefined);
          this.lostError = new LockLostError(
            `the lock on cluster ${this.opts.cluster} was lost${now ? `: it is now held by ${describeHolder(now, clock.now())}` : ' (expired or force-released)'}`,
            'another operator may be working on the cluster: nothing more was changed; check newapi-cluster status before going on',
          );
          return;
        }
        if (r === 'retaken') this.opts.note?.(`the lock had vanished from Redis (restarted?); it was taken again`);
        this.confirmedAt = clock.now();
        if (failedOn) this.opts.note?.(`the lock is confirmed again (through ${this.store.where})`);
        return;
      } catch (e) {
        if (!failedOn) this.opts.note?.(`cannot renew the lock through ${this.store.where}: ${errorMessage(e)}; retrying`);
        failedOn = this.store.where;
      }
      if (clock.now() - this.confirmedAt >= LOCK_TTL_MS) {
        this.lostError = new LockLostError(
          `the lock on cluster ${this.opts.cluster} could not be confirmed for ${LOCK_TTL_MS / 1000} s (Redis unreachable from every node tried)`,
          'another operator could now take it: nothing more was changed; check Redis and newapi-cluster status before going on',
        );
        return;
      }
      await clock.sleep(RETRY_MS).catch(() => undefined);
      // A connection that failed is replaced: another tunnel, another node first.
      await this.reopen(failedOn);
    }
  }

  private async reopen(failed: string): Promise<void> {
    const old = this.store;
    try {
      this.store = await this.opts.open(new Set([failed]));
      await old.close().catch(() => undefined);
    } catch {
      // keep the old store: ioredis reconnects it by itself, and the next attempt retries
    }
  }

  private async renewLoop(): Promise<void> {
    const signal = this.stopRenewing.signal;
    while (!signal.aborted && !this.lostError) {
      try {
        await this.opts.clock.sleep(LOCK_RENEW_MS, signal);
      } catch {
        return;
      }
      await this.confirm().catch(() => undefined);
      const lost = this.lost;
      if (lost) this.opts.note?.(lost.message);
    }
  }

  /** Stops renewing and deletes the key if it is still ours. */
  async release(): Promise<void> {
    if (this.released) return;
    this.released = true;
    this.stopRenewing.abort();
    await this.renewing;
    try {
      if (!this.lostError) await this.store.release(this.key, this.value);
    } finally {
      await this.store.close().catch(() => undefined);
    }
  }

  /** For a hard quit: one attempt, bounded, never throwing. */
  async releaseWithin(ms: number): Promise<void> {
    await Promise.race([this.release().catch(() => undefined), new Promise((r) => setTimeout(r, ms).unref())]);
  }
}
