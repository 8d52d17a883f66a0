import type { Command } from 'commander';
import { inventoryPath, type CliContext } from '../context.js';
import { loadForCommand } from '../load.js';

export function registerReleases(program: Command, getContext: () => CliContext): void {
  program
    .command('releases')
    .description('every deploy, upgrade, rollback and restore, newest first, from the nodes\' audit logs')
    .argument('[inventory]', 'inventory file')
    .action(async (file: string | undefined) => {
      const ctx = getContext();
      const loaded = await loadForCommand(ctx, inventoryPath(ctx, file));
      const { Session } = await import('../../orchestrate/session.js');
      const { getReleaseHistory } = await import('../../orchestrate/releases.js');
      const { printReleases } = await import('../../ui/releases.js');
      const history = await Session.use(ctx, loaded, getReleaseHistory);
      printReleases(ctx, history);
      if (history.unread.length > 0) ctx.exitCode = 1;
    });
}
