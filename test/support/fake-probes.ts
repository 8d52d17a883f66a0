/**
 * In-memory stand-ins for src/probes/clients.ts (MySQL and Redis reached through a node's SSH
 * connection), for unit tests that run the pre-flight checks against the fake cluster.
 *
 * The pre-flight's database clients come from SessionDeps.dial; the fake cluster's deps hand it
 * these. Each client first opens a tunnel through the node's executor to the service's address, so a
 * lost host fails the check the way a silent SSH connection would.
 */
import type { DatabaseDsn, RedisUrl } from '../../src/inventory/dsn.js';
import type { Executor } from '../../src/remote/types.js';

async function reach(ex: Executor, host: string, port: number): Promise<void> {
  const channel = await ex.openTunnel(host, port, { timeoutMs: 5_000 });
  channel.destroy();
}

export const fakeProbeClients = {
  async openMysqlVia(ex: Executor, dsn: DatabaseDsn) {
    await reach(ex, dsn.host, dsn.port);
    const db = {
      query: async (sql: string) => {
        if (sql.startsWith('SELECT DEFAULT_CHARACTER_SET_NAME')) return [[{ cs: 'utf8mb4' }], []];
        if (sql.startsWith('SHOW GRANTS')) return [[{ [`Grants for ${dsn.user}@%`]: `GRANT ALL PRIVILEGES ON \`${dsn.database}\`.* TO \`${dsn.user}\`@\`%\`` }], []];
        throw new Error(`fake MySQL: no answer modelled for ${sql}`);
      },
      end: async () => undefined,
      destroy: () => undefined,
    };
    return { db, close: async () => undefined };
  },
  async openRedisVia(ex: Executor, url: RedisUrl) {
    await reach(ex, url.host, url.port);
    const redis = {
      ping: async () => 'PONG',
      info: async () => '# Server\r\nredis_version:7.2.4\r\n',
      config: async () => ['maxclients', '10000'],
    };
    return { redis, close: async () => undefined };
  },
};
