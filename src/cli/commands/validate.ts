import type { Command } from 'commander';
import { ExitCode } from '../../errors.js';
import { inventoryPath, type CliContext } from '../context.js';
import { loadForCommand } from '../load.js';

export function registerValidate(program: Command, getContext: () => CliContext): void {
  program
    .command('validate')
    .description('check the inventory: schema, cross-field rules and warnings (no network)')
    .argument('[inventory]', 'inventory file')
    .action(async (file: string | undefined) => {
      const ctx = getContext();
      const loaded = await loadForCommand(ctx, inventoryPath(ctx, file), { showWarnings: false });
      const { out, style } = ctx;
      const { problemLines } = await import('../../ui/problems.js');
      if (out.json) {
        out.printJson({ ok: true, file: loaded.path, nodes: loaded.inventory.nodes.length, warnings: loaded.warnings });
        return;
      }
      const inv = loaded.inventory;
      out.print(`${style.green('✔')} ${file ?? inventoryPath(ctx, file)}: valid — cluster ${inv.cluster.name}, ${inv.nodes.length} node${inv.nodes.length === 1 ? '' : 's'}, ${inv.cluster.image}`);
      if (loaded.warnings.length > 0) {
        out.print(`${loaded.warnings.length} warning${loaded.warnings.length === 1 ? '' : 's'}:`);
        for (const line of problemLines(loaded.warnings, style)) out.print(line);
      }
      ctx.exitCode = ExitCode.ok;
    });
}
