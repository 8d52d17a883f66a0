import type { Command } from 'commander';
import { InputError } from '../../errors.js';
import { inventoryPath, type CliContext } from '../context.js';
import { loadForCommand } from '../load.js';

export function registerTls(program: Command, getContext: () => CliContext): void {
  const tls = program.command('tls').description("the balancers' certificate");
  tls
    .command('renew')
    .description('renew the ACME certificate when it expires within 30 days (for a cron job), upload it, reload nginx')
    .argument('[inventory]', 'inventory file')
    .option('--force', 'obtain a new certificate even if the current one is not due', false)
    .action(async (file: string | undefined, opts: { force: boolean }) => {
      const ctx = getContext();
      const loaded = await loadForCommand(ctx, inventoryPath(ctx, file));
      const t = loaded.inventory.loadBalancer.tls;
      if (!t?.acme) throw new InputError('tls renew needs loadBalancer.tls.acme', t ? 'with certificate files, renew them yourself, then run newapi-cluster deploy' : 'set loadBalancer.tls first');
      const { dirname } = await import('node:path');
      const { loadTemplates } = await import('../../render/templates.js');
      const { runOperation } = await import('../../orchestrate/runner.js');
      await runOperation(ctx, loaded, {
        command: `tls renew${opts.force ? ' --force' : ''}`,
        dryRun: false,
        templates: await loadTemplates(loaded.inventory.templates, dirname(loaded.path)),
        plan: async () => ({ operation: 'tls renew', verb: 'renewed', work: [], steps: [{ kind: 'tls', force: opts.force }], warnings: [] }),
      });
    });
}
