import type { Command } from 'commander';
import { InputError } from '../../errors.js';
import { inventoryPath, type CliContext } from '../context.js';
import { loadForCommand } from '../load.js';

interface LogsOptions {
  node?: string[];
  since?: string;
  tail: string;
  follow: boolean;
}

export function registerLogs(program: Command, getContext: () => CliContext): void {
  program
    .command('logs')
    .description('container logs of many nodes, each line prefixed by its node')
    .argument('[inventory]', 'inventory file')
    .option('--node <names...>', 'only these nodes')
    .option('--since <time>', 'since a time or a duration (10m, 2h, 2026-11-26T10:00:00)')
    .option('--tail <n>', 'last N lines per node', '100')
    .option('-f, --follow', 'keep streaming until Ctrl-C', false)
    .action(async (file: string | undefined, opts: LogsOptions) => {
      if (!/^(\d+|all)$/.test(opts.tail)) throw new InputError(`--tail: "${opts.tail}" is not a number of lines`, 'e.g. --tail 200, or --tail all');
      if (opts.since !== undefined && !/^[0-9A-Za-z:.+-]+$/.test(opts.since)) throw new InputError(`--since: "${opts.since}" is not a time`, 'e.g. --since 10m or --since 2026-11-26T10:00:00');
      const ctx = getContext();
      const loaded = await loadForCommand(ctx, inventoryPath(ctx, file));
      const { runLogs } = await import('../../orchestrate/logs.js');
      await runLogs(ctx, loaded, opts);
    });
}
