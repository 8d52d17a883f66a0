import type { Command } from 'commander';
import { resolve } from 'node:path';
import { inventoryPath, type CliContext } from '../context.js';
import { loadForCommand } from '../load.js';

export function registerBackup(program: Command, getContext: () => CliContext): void {
  program
    .command('backup')
    .description("consistent, streamed, compressed dump of the database through the master's SSH; a manifest beside it")
    .argument('[inventory]', 'inventory file')
    .option('--out <dir>', 'folder for the backup (default: backups/ beside the inventory)')
    .option('--no-logs', "keep the logs table's definition but not its rows (it can hold tens of GB)")
    .action(async (file: string | undefined, opts: { out?: string; logs: boolean }) => {
      const ctx = getContext();
      const loaded = await loadForCommand(ctx, inventoryPath(ctx, file));
      const { runBackup, formatBytes } = await import('../../orchestrate/backup.js');
      const started = Date.now();
      const b = await runBackup(ctx, loaded, { ...(opts.out !== undefined ? { out: resolve(ctx.cwd, opts.out) } : {}), noLogs: opts.logs === false });
      if (ctx.out.json) {
        const { pruned: _pruned, commands: _commands, ...manifest } = b;
        ctx.out.printJson(manifest);
        return;
      }
      const { relative } = await import('node:path');
      const rel = (p: string) => {
        const r = relative(ctx.cwd, p);
        return r && !r.startsWith('..') ? r : p;
      };
      const seconds = Math.max(0.001, (Date.now() - started) / 1000);
      const dumpSeconds = Math.max(0.001, b.durationMs / 1000);
      const logs = b.tables.find((t) => t.name === 'logs');
      ctx.out.print(`${ctx.style.green('✔')} ${rel(b.path)}`);
      ctx.out.print(`  size      ${formatBytes(b.bytes)} gzip (${formatBytes(b.rawBytes)} of SQL)`);
      ctx.out.print(`  tables    ${b.tables.length}${b.noLogs && logs ? ' (logs: definition only, --no-logs)' : ''}`);
      ctx.out.print(`  rows      ${b.rows.toLocaleString('en-US')}`);
      ctx.out.print(`  version   ${b.version}${b.image ? ` (${b.image})` : ' (no container on the master)'}`);
      ctx.out.print(`  took      ${seconds.toFixed(1)} s (the dump ${dumpSeconds.toFixed(1)} s: ${(b.rawBytes / 1024 / 1024 / dumpSeconds).toFixed(1)} MB/s of SQL)`);
      ctx.out.print(`  manifest  ${rel(b.manifestPath)} (sha256 ${b.sha256.slice(0, 16)}…)`);
      if (ctx.verbose) for (const c of b.commands) ctx.out.print(ctx.style.dim(`  ran: ${c.join(' ')}`));
    });
}
