import type { Command } from 'commander';
import { inventoryPath, type CliContext } from '../context.js';
import { loadForCommand } from '../load.js';

export function registerRender(program: Command, getContext: () => CliContext): void {
  program
    .command('render')
    .description('write what each node and the balancer would get, locally, for review')
    .argument('[inventory]', 'inventory file')
    .option('--out <dir>', 'output folder', 'rendered')
    .action(async (file: string | undefined, opts: { out: string }) => {
      const ctx = getContext();
      const loaded = await loadForCommand(ctx, inventoryPath(ctx, file));
      const { writeRendered } = await import('../../render/write-local.js');
      const written = await writeRendered(loaded, opts.out);
      if (ctx.out.json) {
        ctx.out.printJson({ ok: true, out: opts.out, files: written });
        return;
      }
      for (const f of written) ctx.out.print(`${f.mode === 0o600 ? '🔒' : '  '} ${f.path}`);
      ctx.out.print(`${ctx.style.green('✔')} ${written.length} files in ${opts.out}/ (.env files are mode 0600: they hold secrets)`);
    });
}
