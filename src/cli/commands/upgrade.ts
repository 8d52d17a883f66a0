import type { Command } from 'commander';
import { InputError } from '../../errors.js';
import { inventoryPath, type CliContext } from '../context.js';
import { loadForCommand } from '../load.js';

export function registerUpgrade(program: Command, getContext: () => CliContext): void {
  program
    .command('upgrade')
    .description('zero-downtime rolling upgrade: migrations once, then slaves in batches, the master last')
    .argument('[inventory]', 'inventory file')
    .option('--rolling', 'required: nodes move batch by batch, drained first', false)
    .requiredOption('--to <version>', 'version to upgrade to, e.g. v0.9.21')
    .option('--batch <n|p%>', 'slaves per batch (default rollout.batchSize)')
    .option('--dry-run', 'print the schedule; change nothing', false)
    .option('--allow-downgrade', 'allow --to to name an older version than the cluster runs', false)
    .action(async (file: string | undefined, opts: { rolling: boolean; to: string; batch?: string; dryRun: boolean; allowDowngrade: boolean }) => {
      const { runUpgrade, parseBatch, verifyVersion } = await import('../../orchestrate/upgrade.js');
      if (!opts.rolling) throw new InputError('upgrade needs --rolling', 'only rolling upgrades are supported: newapi-cluster upgrade --rolling --to vX.Y.Z');
      verifyVersion(opts.to);
      const batch = parseBatch(opts.batch);
      const ctx = getContext();
      const loaded = await loadForCommand(ctx, inventoryPath(ctx, file));
      await runUpgrade(ctx, loaded, { to: opts.to, batch, dryRun: opts.dryRun, allowDowngrade: opts.allowDowngrade });
    });

  program
    .command('rollback')
    .description('return every node to its previous release (or a kept release of --to), slave-first')
    .argument('[inventory]', 'inventory file')
    .option('--to <version>', 'a release still kept on the nodes (see newapi-cluster releases)')
    .option('--dry-run', 'print the schedule; change nothing', false)
    .action(async (file: string | undefined, opts: { dryRun: boolean; to?: string }) => {
      const { runRollback, verifyVersion } = await import('../../orchestrate/upgrade.js');
      if (opts.to !== undefined) verifyVersion(opts.to);
      const ctx = getContext();
      const loaded = await loadForCommand(ctx, inventoryPath(ctx, file));
      await runRollback(ctx, loaded, opts);
    });
}
