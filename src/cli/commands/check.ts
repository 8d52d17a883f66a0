import type { Command } from 'commander';
import { ExitCode } from '../../errors.js';
import { inventoryPath, type CliContext } from '../context.js';
import { loadForCommand } from '../load.js';

export function registerCheck(program: Command, getContext: () => CliContext): void {
  program
    .command('check')
    .description('pre-flight and connectivity report, from each node\'s point of view (read-only)')
    .argument('[inventory]', 'inventory file')
    .action(async (file: string | undefined) => {
      const ctx = getContext();
      const loaded = await loadForCommand(ctx, inventoryPath(ctx, file));
      const { Session } = await import('../../orchestrate/session.js');
      const { runChecks } = await import('../../orchestrate/check.js');
      const { printChecks } = await import('../../ui/checks.js');
      const results = await Session.use(ctx, loaded, runChecks);
      printChecks(ctx, results);
      ctx.exitCode = results.some((r) => r.status === 'fail') ? ExitCode.failed : ExitCode.ok;
    });
}
