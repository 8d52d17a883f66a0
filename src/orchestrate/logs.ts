/** `logs`: `docker logs` of every chosen node at once, each line prefixed by its node. */
import type { RunEnv } from './run-env.js';
import type { LoadedInventory } from '../inventory/load.js';
import { docker } from '../remote/commands.js';
import { mapLimitSettled } from '../remote/limit.js';
import { containerName } from '../render/render.js';
import { selectNodes } from './work.js';
import { Session } from './session.js';

export async function runLogs(
  ctx: RunEnv,
  loaded: LoadedInventory,
  opts: { node?: string[]; since?: string; tail: string; follow: boolean },
): Promise<void> {
  const nodes = selectNodes(loaded.inventory.nodes, opts.node);
  const width = Math.max(...nodes.map((n) => n.name.length));
  const colors = [ctx.style.cyan, ctx.style.magenta, ctx.style.yellow, ctx.style.blue, ctx.style.green];
  await Session.use(ctx, loaded, async (session) => {
    const settled = await mapLimitSettled(nodes, nodes.length, async (node, i) => {
      const prefix = (colors[i % colors.length] ?? ctx.style.white)(`${node.name.padEnd(width)} |`);
      const lineSplitter = () => {
        let rest = '';
        return {
          push: (chunk: Buffer) => {
            const text = rest + chunk.toString('utf8');
            const lines = text.split('\n');
            rest = lines.pop() ?? '';
            for (const line of lines) ctx.out.print(`${prefix} ${line}`);
          },
          flush: () => {
            if (rest) ctx.out.print(`${prefix} ${rest}`);
            rest = '';
          },
        };
      };
      const stdout = lineSplitter();
      const stderr = lineSplitter();
      try {
        await session.on(node).exec(docker.logs(containerName(loaded.inventory), { ...(opts.since ? { since: opts.since } : {}), tail: opts.tail, follow: opts.follow }), {
          onStdout: stdout.push,
          onStderr: stderr.push,
          signal: ctx.signals.stop,
          timeoutMs: opts.follow ? 2 ** 31 - 1 : 120_000,
          allowFailure: true,
        });
      } finally {
        stdout.flush();
        stderr.flush();
      }
    });
    for (const [i, s] of settled.entries()) {
      if (s.status === 'rejected' && !ctx.signals.stop.aborted) ctx.out.note(`${ctx.style.red('✖')} ${nodes[i]?.name}: ${s.reason instanceof Error ? s.reason.message : String(s.reason)}`);
    }
  });
}
