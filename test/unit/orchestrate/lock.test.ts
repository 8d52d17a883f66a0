/**
 * ClusterLock over the in-memory store (the Lua semantics of the Redis store), on a manual clock:
 * renewal, a store that goes away and comes back, a restarted Redis, compare-and-delete release,
 * and `lock release --force` run through the CLI.
 */
import { afterEach, describe, expect, it, vi } from 'vitest';
import { main } from '../../../src/cli/main.js';
import { ExitCode, LockedError, LockLostError } from '../../../src/errors.js';
import { ClusterLock, LOCK_TTL_MS, lockKey, parseHolder, type LockOptions } from '../../../src/orchestrate/lock.js';
import { drive, DrivenClock, Lab, MemoryLockStore, TOMBSTONE_MS } from '../../support/fake-cluster.js';

const KEY = lockKey('prod');

let locks: ClusterLock[] = [];
afterEach(async () => {
  for (const l of locks.splice(0)) await l.releaseWithin(100);
});

function setup() {
  const clock = new DrivenClock();
  const store = new MemoryLockStore(clock);
  const notes: string[] = [];
  const opts = (over: Partial<LockOptions> = {}): LockOptions => ({
    open: async () => {
      if (!store.reachable) throw new Error('connect ECONNREFUSED');
      return store.handle('master');
    },
    cluster: 'prod',
    operator: 'alice@laptop',
    command: 'upgrade --rolling --to v0.9.21',
    clock,
    note: (t) => notes.push(t),
    ...over,
  });
  const acquire = async (over: Partial<LockOptions> = {}) => {
    const l = await ClusterLock.acquire(opts(over));
    locks.push(l);
    return l;
  };
  return { clock, store, notes, opts, acquire, run: <T>(p: Promise<T>) => drive(clock, undefined, p) };
}

describe('MemoryLockStore', () => {
  it('has the semantics of the Lua scripts', () => {
    const clock = new DrivenClock();
    const s = new MemoryLockStore(clock);
    expect(s.acquireNow(KEY, 'a', 30_000)).toBe(true);
    expect(s.acquireNow(KEY, 'b', 30_000)).toBe(false);
    expect(s.renewNow(KEY, 'a', 30_000)).toBe('renewed');
    expect(s.renewNow(KEY, 'b', 30_000)).toBe('lost');
    expect(s.releaseNow(KEY, 'b')).toBe(false);
    expect(s.peek(KEY)).toBe('a');
    s.wipe();
    expect(s.renewNow(KEY, 'a', 30_000)).toBe('retaken');
    expect(s.forceReleaseNow(KEY, 'b')).toBe(false);
    expect(s.forceReleaseNow(KEY, 'a')).toBe(true);
    expect(s.peek(KEY)).toBeUndefined();
    expect(s.renewNow(KEY, 'a', 30_000)).toBe('lost');
    expect(s.acquireNow(KEY, 'c', 30_000)).toBe(true);
    s.down();
    expect(() => s.readNow(KEY)).toThrow();
    s.up();
    expect(s.readNow(KEY)).toEqual({ value: 'c', ttlMs: 30_000 });
  });

  it('lets keys and tombstones expire on the manual clock', async () => {
    const clock = new DrivenClock();
    const s = new MemoryLockStore(clock);
    s.acquireNow(KEY, 'a', 30_000);
    s.forceReleaseNow(KEY, 'a');
    await clock.advance(TOMBSTONE_MS);
    expect(s.renewNow(KEY, 'a', 30_000)).toBe('retaken');
    await clock.advance(30_000);
    expect(s.peek(KEY)).toBeUndefined();
  });
});

describe('ClusterLock', () => {
  it('is exclusive: a second operator gets LockedError naming the holder', async () => {
    const { acquire } = setup();
    await acquire();
    const err = await acquire({ operator: 'bob@desk', command: 'deploy' }).catch((e: unknown) => e);
    expect(err).toBeInstanceOf(LockedError);
    expect((err as LockedError).exitCode).toBe(ExitCode.locked);
    expect((err as Error).message).toContain('alice@laptop');
    expect((err as Error).message).toContain('"upgrade --rolling --to v0.9.21"');
  });

  it('is renewed while held: it outlives its TTL many times over', async () => {
    const { acquire, clock, store } = setup();
    const lock = await acquire();
    await clock.advance(5 * LOCK_TTL_MS);
    expect(parseHolder(store.peek(KEY)!).operator).toBe('alice@laptop');
    await expect(lock.verify()).resolves.toBeUndefined();
    await lock.release();
    expect(store.peek(KEY)).toBeUndefined();
  });

  it('survives a store that is down for less than the TTL', async () => {
    const { acquire, clock, store, notes, run } = setup();
    const lock = await acquire();
    store.down();
    void clock.sleep(20_000).then(() => store.up());
    const started = clock.now();
    const r = await run(lock.verify());
    expect(r.ok).toBe(true);
    expect(r.at - started).toBeGreaterThanOrEqual(20_000);
    expect(r.at - started).toBeLessThan(LOCK_TTL_MS);
    expect(notes.some((n) => n.startsWith('cannot renew the lock through master'))).toBe(true);
    expect(notes.some((n) => n.startsWith('the lock is confirmed again'))).toBe(true);
    expect(store.peek(KEY)).toBe(JSON.stringify(lock.holder));
  });

  it('is lost when it cannot be confirmed for its TTL', async () => {
    const { acquire, clock, store, run } = setup();
    const lock = await acquire();
    store.down();
    void clock.sleep(10 * LOCK_TTL_MS).then(() => store.up());
    const started = clock.now();
    const r = await run(lock.verify());
    expect(r.error).toBeInstanceOf(LockLostError);
    expect((r.error as LockLostError).exitCode).toBe(ExitCode.locked);
    expect(r.at - started).toBeGreaterThanOrEqual(LOCK_TTL_MS);
    expect(r.at - started).toBeLessThanOrEqual(LOCK_TTL_MS + 1_000);
    // Stays lost, whatever the store says later.
    store.up();
    await expect(lock.verify()).rejects.toBe(r.error);
  });

  it('is taken again after a Redis restart (no tombstone)', async () => {
    const { acquire, store, notes, run } = setup();
    const lock = await acquire();
    store.wipe();
    const r = await run(lock.verify());
    expect(r.ok).toBe(true);
    expect(notes).toContain('the lock had vanished from Redis (restarted?); it was taken again');
    expect(store.peek(KEY)).toBe(JSON.stringify(lock.holder));
  });

  it('is lost to another operator who took it: verify names them', async () => {
    const { acquire, store } = setup();
    const lock = await acquire();
    const mine = store.peek(KEY)!;
    store.forceReleaseNow(KEY, mine);
    store.acquireNow(KEY, JSON.stringify({ id: 'b', operator: 'bob@desk', command: 'deploy', pid: 2, since: new Date().toISOString() }), LOCK_TTL_MS);
    const err = await lock.verify().catch((e: unknown) => e);
    expect(err).toBeInstanceOf(LockLostError);
    expect((err as Error).message).toContain('bob@desk');
  });

  it('release is compare-and-delete: a lock that expired and was taken by someone else is left alone', async () => {
    const { clock, store, opts } = setup();
    // The holder's process is paused (its own clock does not move, so it never renews) while time passes for Redis.
    const paused = new DrivenClock(clock.now());
    const a = await ClusterLock.acquire(opts({ clock: paused }));
    await clock.advance(LOCK_TTL_MS + 1);
    expect(store.peek(KEY)).toBeUndefined();
    const b = await ClusterLock.acquire(opts({ operator: 'bob@desk', command: 'deploy' }));
    locks.push(b);
    await a.release();
    expect(parseHolder(store.peek(KEY)!).operator).toBe('bob@desk');
    await b.release();
    expect(store.peek(KEY)).toBeUndefined();
  });

  it('releases only once, and stops renewing', async () => {
    const { acquire, clock, store } = setup();
    const lock = await acquire();
    await lock.release();
    await lock.release();
    const renewals = store.calls.filter((c) => c.op === 'renew').length;
    await clock.advance(3 * LOCK_TTL_MS);
    expect(store.calls.filter((c) => c.op === 'renew').length).toBe(renewals);
    expect(store.closed).toBe(1);
  });
});

describe('newapi-cluster lock release --force', () => {
  const labs: Lab[] = [];
  afterEach(async () => {
    for (const l of labs.splice(0)) await l.cleanup();
  });

  async function cli(lab: Lab, args: string[]): Promise<{ code: number; stdout: string }> {
    const out: string[] = [];
    const write = ((chunk: unknown, ...rest: unknown[]) => {
      out.push(String(chunk));
      (rest.find((r) => typeof r === 'function') as (() => void) | undefined)?.();
      return true;
    }) as typeof process.stdout.write;
    const o = vi.spyOn(process.stdout, 'write').mockImplementation(write);
    const e = vi.spyOn(process.stderr, 'write').mockImplementation(write);
    try {
      const code = await main(['node', 'newapi-cluster', ...args, lab.tmp.file], { NO_COLOR: '1' }, { deps: lab.deps('bob@desk') });
      return { code, stdout: out.join('') };
    } finally {
      o.mockRestore();
      e.mockRestore();
    }
  }

  it('leaves a tombstone: the old holder cannot take the lock back', async () => {
    const lab = await Lab.create();
    labs.push(lab);
    const notes: string[] = [];
    const held = await ClusterLock.acquire({ open: async () => lab.store.handle('master'), cluster: 'prod', operator: 'alice@laptop', command: 'deploy', clock: lab.clock, note: (t) => notes.push(t) });
    locks.push(held);

    const r = await cli(lab, ['lock', 'release', '--force']);
    expect(r.code).toBe(0);
    expect(r.stdout).toContain('released the lock of alice@laptop');
    expect(lab.store.peek(KEY)).toBeUndefined();

    const err = await held.verify().catch((e: unknown) => e);
    expect(err).toBeInstanceOf(LockLostError);
    expect((err as Error).message).toContain('expired or force-released');
    expect(lab.store.peek(KEY), 'not taken back').toBeUndefined();
    expect(notes.filter((n) => n.includes('taken again'))).toEqual([]);
  });

  it('without a tombstone (a restarted Redis) the same holder does take it back', async () => {
    const lab = await Lab.create();
    labs.push(lab);
    const held = await ClusterLock.acquire({ open: async () => lab.store.handle('master'), cluster: 'prod', operator: 'alice@laptop', command: 'deploy', clock: lab.clock });
    locks.push(held);
    lab.store.wipe();
    await expect(held.verify()).resolves.toBeUndefined();
    expect(parseHolder(lab.store.peek(KEY)!).operator).toBe('alice@laptop');
  });

  it('needs --force, and says so when nothing is locked', async () => {
    const lab = await Lab.create();
    labs.push(lab);
    expect((await cli(lab, ['lock', 'release'])).code).toBe(ExitCode.badInput);
    const r = await cli(lab, ['lock', 'release', '--force']);
    expect(r.code).toBe(0);
    expect(r.stdout).toContain('cluster prod was not locked');
  });
});
