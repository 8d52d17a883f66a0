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
      const { describeHolder } = await import('../../orchestrate/lock.js');
      const { table } = await import('../../ui/table.js');
      const session = await Session.open(ctx, loaded);
      try {
        const s = await getClusterStatus(session);
        const { out, style } = ctx;
        if (out.json) {
          out.printJson(s);
        } else {
          const rows = s.nodes.map((n) => [
            n.name,
            n.role,
            n.host,
            n.reachable ? style.green('yes') : style.red('no'),
            n.container ?? '-',
            n.version ?? '-',
            n.healthy ? style.green('healthy') : style.red('unhealthy'),
            n.balancer === 'in' ? style.green('in') : n.balancer === 'drained' ? style.yellow('drained') : n.balancer,
          ]);
          for (const line of table(['NODE', 'ROLE', 'HOST', 'SSH', 'CONTAINER', 'VERSION', 'HEALTH', 'BALANCER'], rows)) out.print(line);
          for (const n of s.nodes.filter((x) => x.error)) out.print(`${style.red('✖')} ${n.name}: ${n.error}`);
          out.print(`lock: ${s.lock === null ? 'free' : s.lock === 'unknown' ? 'unknown (Redis not reachable)' : `held by ${describeHolder(s.lock)}`}`);
        }
        const bad = s.nodes.some((n) => !n.reachable || !n.healthy);
        ctx.exitCode = bad ? ExitCode.failed : ExitCode.ok;
      } finally {
        await session.close();
      }
    });
}
