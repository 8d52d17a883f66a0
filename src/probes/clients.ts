/**
 * Database and Redis clients that reach the services as a given node sees them: each
 * connection goes through that node's SSH connection (a local listener forwarding to the
 * service), so a database only the nodes can reach is still tested — and used for the lock.
 */
import type { DatabaseDsn, RedisUrl } from '../inventory/dsn.js';
import type { Executor } from '../remote/types.js';
import type { Redis } from 'ioredis';
import type { Connection } from 'mysql2/promise';

export interface Closable {
  close(): Promise<void>;
}

/** How checks reach MySQL and Redis from a node: through its SSH connection (a seam unit tests replace). */
export interface Dialer {
  openMysqlVia(ex: Executor, dsn: DatabaseDsn): Promise<{ db: Pick<Connection, 'query'> } & Closable>;
  openRedisVia(ex: Executor, url: RedisUrl): Promise<{ redis: Pick<Redis, 'ping' | 'info' | 'config'> } & Closable>;
}

export async function openRedisVia(ex: Executor, url: RedisUrl, timeoutMs = 5000): Promise<{ redis: Redis } & Closable> {
  return connectRedisVia(ex, url, { connectTimeoutMs: timeoutMs, commandTimeoutMs: timeoutMs, retryStrategy: () => null });
}

/**
 * An ioredis client on a tunnel through the node's SSH connection, connected; commands fail at once
 * rather than queue while it is not. `retryStrategy` decides whether (and when) a dropped
 * connection is made again: each time a new connection through the tunnel.
 */
export async function connectRedisVia(
  ex: Executor,
  url: RedisUrl,
  opts: { connectTimeoutMs: number; commandTimeoutMs: number; retryStrategy: (times: number) => number | null },
): Promise<{ redis: Redis } & Closable> {
  const { openOnTunnel, tunnelServer } = await import('../remote/ssh.js');
  // .default: the package is CommonJS, and a bundled dynamic import of it has only a default export.
  const { Redis } = (await import('ioredis')).default;
  const tunnel = await tunnelServer(ex, url.host, url.port);
  const redis = await openOnTunnel(tunnel, async (port) => {
    const client = new Redis({
      host: '127.0.0.1',
      port,
      ...(url.username ? { username: url.username } : {}),
      ...(url.password ? { password: url.password } : {}),
      db: url.db,
      ...(url.tls ? { tls: { servername: url.host } } : {}),
      lazyConnect: true,
      connectTimeout: opts.connectTimeoutMs,
      commandTimeout: opts.commandTimeoutMs,
      maxRetriesPerRequest: 0,
      enableOfflineQueue: false,
      retryStrategy: opts.retryStrategy,
    });
    // ioredis reports connection errors as events too; the awaited command carries them.
    client.on('error', () => undefined);
    await client.connect().catch((e: unknown) => {
      client.disconnect();
      throw e;
    });
    return client;
  });
  return {
    redis,
    close: async () => {
      redis.disconnect();
      await tunnel.close();
    },
  };
}

export async function openMysqlVia(ex: Executor, dsn: DatabaseDsn, timeoutMs = 5000): Promise<{ db: Connection } & Closable> {
  const { openOnTunnel, tunnelServer } = await import('../remote/ssh.js');
  // .default: the package is CommonJS, and a bundled dynamic import of it has only a default export.
  const mysql = (await import('mysql2/promise')).default;
  const tunnel = await tunnelServer(ex, dsn.host, dsn.port);
  const db = await openOnTunnel(tunnel, (port) =>
    mysql.createConnection({
      host: '127.0.0.1',
      port,
      user: dsn.user,
      password: dsn.password,
      database: dsn.database,
      connectTimeout: timeoutMs,
    }),
  );
  db.on('error', () => undefined);
  return {
    db,
    close: async () => {
      await db.end().catch(() => db.destroy());
      await tunnel.close();
    },
  };
}
