import type { Command } from 'commander';
import { inventoryPath, type CliContext } from '../context.js';
import { loadForCommand } from '../load.js';

export function registerPrune(program: Command, getContext: () => CliContext): void {
  program
    .command('prune')
    .description('remove releases and images older than rollout.keepReleases (never the running or a kept one)')
    .argument('[inventory]', 'inventory file')
    .option('--dry-run', 'print what would go; change nothing', false)
    .action(async (file: string | undefined, opts: { dryRun: boolean }) => {
      const ctx = getContext();
      const loaded = await loadForCommand(ctx, inventoryPath(ctx, file));
      const { runPrune } = await import('../../orchestrate/prune.js');
      await runPrune(ctx, loaded, opts);
    });
}
