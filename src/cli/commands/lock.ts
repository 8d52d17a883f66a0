import type { Command } from 'commander';
import { InputError } from '../../errors.js';
import type { LockStore } from '../../orchestrate/lock.js';
import { inventoryPath, type CliContext } from '../context.js';
import { loadForCommand } from '../load.js';

export function registerLock(program: Command, getContext: () => CliContext): void {
  const lock = program.command('lock').description('show or break the cluster lock');
  const withStore = async (file: string | undefined, fn: (ctx: CliContext, store: LockStore, cluster: string) => Promise<void>) => {
    const ctx = getContext();
    const loaded = await loadForCommand(ctx, inventoryPath(ctx, file));
    const { Session } = await import('../../orchestrate/session.js');
    await Session.use(ctx, loaded, async (session) => {
      const store = await session.openLockStore();
      try {
        await fn(ctx, store, loaded.inventory.cluster.name);
      } finally {
        await store.close();
      }
    });
  };

  lock
    .command('status')
    .description('who holds the cluster lock, if anyone')
    .argument('[inventory]', 'inventory file')
    .action(async (file: string | undefined) => {
      await withStore(file, async (ctx, store, cluster) => {
        const { readLock, describeHolder } = await import('../../orchestrate/lock.js');
        const found = await readLock(store, cluster);
        const holder = found && { id: found.id, operator: found.operator, command: found.command, pid: found.pid, since: found.since, ttlMs: found.ttlMs };
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
      await withStore(file, async (ctx, store, cluster) => {
        const { readLock, describeHolder, lockKey } = await import('../../orchestrate/lock.js');
        const holder = await readLock(store, cluster);
        // Compare-and-delete on the very value shown: a lock that changed hands meanwhile is left alone.
        const released = holder ? await store.forceRelease(lockKey(cluster), holder.value) : false;
        const shown = holder && { id: holder.id, operator: holder.operator, command: holder.command, pid: holder.pid, since: holder.since };
        if (ctx.out.json) ctx.out.printJson({ cluster, released, holder: shown ?? null });
        else if (!holder) ctx.out.print(`cluster ${cluster} was not locked`);
        else if (released) ctx.out.print(`released the lock of ${describeHolder(holder)}`);
        else {
          ctx.out.print(`the lock of ${describeHolder(holder)} changed hands or expired while being released; nothing was released`);
          ctx.exitCode = 1;
        }
      });
    });
}
