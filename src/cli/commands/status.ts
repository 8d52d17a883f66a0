import type { Command } from 'commander';
import { ExitCode } from '../../errors.js';
import { inventoryPath, type CliContext } from '../context.js';
import { loadForCommand } from '../load.js';

export function registerStatus(program: Command, getContext: () => CliContext): void {
  program
    .command('status')
    .description('per node: reachable, role, version, container, health, balancer state; and the lock')
    .argument('[inventory]', 'inventory file')
    .action(async (file: string | undefined) => {
      const ctx = getContext();
      const loaded = await loadForCommand(ctx, inventoryPath(ctx, file));
      const { Session } = await import('../../orchestrate/session.js');
      const { getClusterStatus } = await import('../../orchestrate/status.js');
      const { printStatus } = await import('../../ui/status.js');
      const status = await Session.use(ctx, loaded, getClusterStatus);
      printStatus(ctx, status);
      ctx.exitCode = status.nodes.some((n) => !n.reachable || !n.healthy) ? ExitCode.failed : ExitCode.ok;
    });
}
