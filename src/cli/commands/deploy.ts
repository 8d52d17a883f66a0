import type { Command } from 'commander';
import { inventoryPath, type CliContext } from '../context.js';
import { loadForCommand } from '../load.js';

export function registerDeploy(program: Command, getContext: () => CliContext): void {
  program
    .command('deploy')
    .description('converge the cluster to the inventory (only what changed restarts)')
    .argument('[inventory]', 'inventory file')
    .option('--dry-run', 'show per-file diffs and what would restart; change nothing', false)
    .option('--only <nodes...>', 'only these nodes (the balancer is still updated)')
    .action(async (file: string | undefined, opts: { dryRun: boolean; only?: string[] }) => {
      const ctx = getContext();
      const loaded = await loadForCommand(ctx, inventoryPath(ctx, file));
      const { runDeploy } = await import('../../orchestrate/deploy.js');
      const { selectNodes } = await import('../../orchestrate/work.js');
      selectNodes(loaded.inventory.nodes, opts.only); // bad names are bad input: exit 2 before any network
      await runDeploy(ctx, loaded, { dryRun: opts.dryRun, only: opts.only });
    });
}
