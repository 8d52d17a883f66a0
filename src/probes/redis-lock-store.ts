/**
 * The cluster lock's store: Redis, reached through a node's SSH connection (a local listener
 * forwarding to Redis as that node sees it). The only code that knows the lock lives in Redis;
 * orchestrate/lock.ts sees the LockStore interface.
 *
 * Every change is one Lua script, so it is atomic: renew only our own value, delete only our own
 * value, and a force-release leaves a tombstone so the broken holder cannot quietly take the lock
 * back (while a lock lost to a Redis restart, which leaves no tombstone, can be).
 */
import type { RedisUrl } from '../inventory/dsn.js';
import type { LockStore, RenewResult } from '../orchestrate/lock.js';
import type { Executor } from '../remote/types.js';
import { connectRedisVia } from './clients.js';

const RENEW_LUA = `
local v = redis.call('get', KEYS[1])
if v == ARGV[1] then redis.call('pexpire', KEYS[1], ARGV[2]) return 1 end
if v == false and redis.call('get', KEYS[2]) ~= ARGV[1] then
  redis.call('set', KEYS[1], ARGV[1], 'PX', ARGV[2])
  return 2
end
return 0`;
const RELEASE_LUA = `if redis.call('get', KEYS[1]) == ARGV[1] then return redis.call('del', KEYS[1]) else return 0 end`;
const FORCE_LUA = `
if redis.call('get', KEYS[1]) == ARGV[1] then
  redis.call('del', KEYS[1])
  redis.call('set', KEYS[2], ARGV[1], 'PX', ARGV[2])
  return 1
end
return 0`;
/** How long a force-released holder is kept from taking the lock back. */
const TOMBSTONE_MS = 3_600_000;
const COMMAND_TIMEOUT_MS = 3_000;

const tombstoneKey = (key: string) => `${key}:revoked`;

export async function openRedisLockStore(ex: Executor, url: RedisUrl, timeoutMs = 5_000): Promise<LockStore> {
  // A dropped tunnel or a restarted Redis is reconnected (a new tunnel connection each time);
  // meanwhile commands fail at once rather than queue, and the lock decides what to do.
  const { redis, close } = await connectRedisVia(ex, url, { connectTimeoutMs: timeoutMs, commandTimeoutMs: COMMAND_TIMEOUT_MS, retryStrategy: (times) => Math.min(100 * times, 1_000) });
  const text = (v: unknown) => (v === null || v === undefined ? undefined : String(v));
  return {
    where: ex.target.label,
    acquire: async (key, value, ttlMs) => (await redis.set(key, value, 'PX', ttlMs, 'NX')) === 'OK',
    renew: async (key, value, ttlMs) => {
      const r = Number(await redis.eval(RENEW_LUA, 2, key, tombstoneKey(key), value, String(ttlMs)));
      return (r === 1 ? 'renewed' : r === 2 ? 'retaken' : 'lost') satisfies RenewResult;
    },
    read: async (key) => {
      const [value, ttl] = await Promise.all([redis.get(key), redis.pttl(key)]);
      const v = text(value);
      return v === undefined ? undefined : { value: v, ttlMs: ttl };
    },
    release: async (key, value) => Number(await redis.eval(RELEASE_LUA, 1, key, value)) === 1,
    forceRelease: async (key, value) => Number(await redis.eval(FORCE_LUA, 2, key, tombstoneKey(key), value, String(TOMBSTONE_MS))) === 1,
    close,
  };
}
