import type { Command } from 'commander';
import { resolve } from 'node:path';
import { inventoryPath, type CliContext } from '../context.js';
import { loadForCommand } from '../load.js';

export function registerRestore(program: Command, getContext: () => CliContext): void {
  program
    .command('restore')
    .description('restore a verified backup: balancer in maintenance (503), nodes stopped, database restored, nodes started on the backup\'s version')
    .argument('<file>', 'the backup (.sql.gz) or its manifest (.json)')
    .argument('[inventory]', 'inventory file')
    .option('--dry-run', 'verify the backup and print the plan; change nothing', false)
    .action(async (file: string, inventory: string | undefined, opts: { dryRun: boolean }) => {
      const ctx = getContext();
      const loaded = await loadForCommand(ctx, inventoryPath(ctx, inventory));
      const { runRestore } = await import('../../orchestrate/restore.js');
      await runRestore(ctx, loaded, { file: resolve(ctx.cwd, file), yes: ctx.globals.yes, dryRun: opts.dryRun });
    });
}
