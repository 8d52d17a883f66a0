/**
 * The cluster lock: one Redis key per cluster, taken with SET NX PX, renewed while held, and
 * released on exit or Ctrl-C. If its holder dies, the key expires (TTL) and the cluster is free.
 * Redis is reached through a node's SSH connection, like every other service.
 */
import { randomUUID } from 'node:crypto';
import { CliError, LockedError } from '../errors.js';
import { parseRedisUrl } from '../inventory/dsn.js';
import { openRedisVia, type Closable } from '../probes/clients.js';
import type { Redis } from 'ioredis';
import type { Session } from './session.js';

export interface LockHolder {
  id: string;
  operator: string;
  command: string;
  pid: number;
  since: string;
}

const TTL_MS = 30_000;
const RENEW_MS = 10_000;

const RENEW_LUA = `if redis.call('get', KEYS[1]) == ARGV[1] then return redis.call('pexpire', KEYS[1], ARGV[2]) else return 0 end`;
const RELEASE_LUA = `if redis.call('get', KEYS[1]) == ARGV[1] then return redis.call('del', KEYS[1]) else return 0 end`;

export const lockKey = (cluster: string) => `newapi-cluster:${cluster}:lock`;

/** Connects to Redis through the first node that answers, master first. */
export async function redisForSession(session: Session): Promise<{ redis: Redis } & Closable> {
  const url = parseRedisUrl(session.inv.redis.url);
  const nodes = [session.master, ...session.slaves];
  let lastError: unknown;
  for (const node of nodes) {
    try {
      return await openRedisVia(session.on(node), url);
    } catch (e) {
      lastError = e;
    }
  }
  throw new CliError(`cannot reach Redis through any node to take the cluster lock: ${lastError instanceof Error ? lastError.message : String(lastError)}`, {
    hint: 'run newapi-cluster check to see which node cannot reach Redis',
  });
}

export function describeHolder(h: LockHolder, now = Date.now()): string {
  const age = Math.max(0, Math.round((now - Date.parse(h.since)) / 1000));
  return `${h.operator} (pid ${h.pid}) running "${h.command}" since ${h.since} (${age} s ago)`;
}

export async function readLock(redis: Redis, cluster: string): Promise<(LockHolder & { ttlMs: number }) | undefined> {
  const [value, ttl] = await Promise.all([redis.get(lockKey(cluster)), redis.pttl(lockKey(cluster))]);
  if (!value) return undefined;
  try {
    return { ...(JSON.parse(value) as LockHolder), ttlMs: ttl };
  } catch {
    return { id: value, operator: 'unknown', command: 'unknown', pid: 0, since: new Date(0).toISOString(), ttlMs: ttl };
  }
}

export class ClusterLock {
  private timer: NodeJS.Timeout | undefined;
  private lostError: CliError | undefined;

  private constructor(
    private readonly conn: { redis: Redis } & Closable,
    private readonly cluster: string,
    private readonly value: string,
    readonly holder: LockHolder,
  ) {}

  static async acquire(session: Session, command: string): Promise<ClusterLock> {
    const conn = await redisForSession(session);
    const holder: LockHolder = { id: randomUUID(), operator: session.operator, command, pid: process.pid, since: new Date().toISOString() };
    const value = JSON.stringify(holder);
    const key = lockKey(session.project);
    let ok: string | null;
    try {
      ok = await conn.redis.set(key, value, 'PX', TTL_MS, 'NX');
    } catch (e) {
      await conn.close();
      throw e;
    }
    if (ok !== 'OK') {
      const current = await readLock(conn.redis, session.project).catch(() => undefined);
      await conn.close();
      throw new LockedError(
        `cluster ${session.project} is locked by ${current ? describeHolder(current) : 'another operator'}`,
        `wait for it to finish; if that operation is dead, the lock expires within ${TTL_MS / 1000} s, or run newapi-cluster lock release --force`,
      );
    }
    const lock = new ClusterLock(conn, session.project, value, holder);
    lock.timer = setInterval(() => void lock.renew(), RENEW_MS);
    lock.timer.unref();
    return lock;
  }

  /** Throws if the lock was lost (expired or broken by `lock release --force`): stop changing hosts. */
  verify(): void {
    if (this.lostError) throw this.lostError;
  }

  private async renew(): Promise<void> {
    try {
      const r = await this.conn.redis.eval(RENEW_LUA, 1, lockKey(this.cluster), this.value, String(TTL_MS));
      if (r !== 1) {
        this.lostError = new CliError(`the lock on cluster ${this.cluster} was lost (expired or force-released)`, {
          hint: 'another operator may be working on the cluster: run newapi-cluster status before going on',
        });
      }
    } catch {
      // A missed renewal is retried at the next tick; the TTL leaves two more chances.
    }
  }

  async release(): Promise<void> {
    if (this.timer) clearInterval(this.timer);
    try {
      await this.conn.redis.eval(RELEASE_LUA, 1, lockKey(this.cluster), this.value);
    } finally {
      await this.conn.close();
    }
  }
}
