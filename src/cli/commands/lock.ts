import type { Command } from 'commander';
import { InputError } from '../../errors.js';
import { inventoryPath, type CliContext } from '../context.js';
import { loadForCommand } from '../load.js';

export function registerLock(program: Command, getContext: () => CliContext): void {
  const lock = program.command('lock').description('show or break the cluster lock');
  const withRedis = async (file: string | undefined, fn: (ctx: CliContext, redis: import('ioredis').Redis, cluster: string) => Promise<void>) => {
    const ctx = getContext();
    const loaded = await loadForCommand(ctx, inventoryPath(ctx, file));
    const { Session } = await import('../../orchestrate/session.js');
    const { redisForSession } = await import('../../orchestrate/lock.js');
    await Session.use(ctx, loaded, async (session) => {
      const conn = await redisForSession(session);
      try {
        await fn(ctx, conn.redis, loaded.inventory.cluster.name);
      } finally {
        await conn.close();
      }
    });
  };

  lock
    .command('status')
    .description('who holds the cluster lock, if anyone')
    .argument('[inventory]', 'inventory file')
    .action(async (file: string | undefined) => {
      await withRedis(file, async (ctx, redis, cluster) => {
        const { readLock, describeHolder } = await import('../../orchestrate/lock.js');
        const holder = await readLock(redis, cluster);
        if (ctx.out.json) ctx.out.printJson({ cluster, locked: holder !== undefined, holder: holder ?? null });
        else ctx.out.print(holder ? `cluster ${cluster} is locked by ${describeHolder(holder)}; expires in ${Math.ceil(holder.ttlMs / 1000)} s unless renewed` : `cluster ${cluster} is not locked`);
      });
    });

  lock
    .command('release')
    .description('break the lock held by another operator (only when that operation is dead)')
    .argument('[inventory]', 'inventory file')
    .option('--force', 'required: you confirm the holder is no longer working on the cluster', false)
    .action(async (file: string | undefined, opts: { force: boolean }) => {
      if (!opts.force) throw new InputError('lock release needs --force', 'check with newapi-cluster lock status that the holder is really gone, then add --force');
      await withRedis(file, async (ctx, redis, cluster) => {
        const { readLock, describeHolder, lockKey } = await import('../../orchestrate/lock.js');
        const holder = await readLock(redis, cluster);
        if (holder) await redis.del(lockKey(cluster));
        if (ctx.out.json) ctx.out.printJson({ cluster, released: holder !== undefined, holder: holder ?? null });
        else ctx.out.print(holder ? `released the lock of ${describeHolder(holder)}` : `cluster ${cluster} was not locked`);
      });
    });
}
