/**
 * The top level: global flags, one sub-command per file in ./commands, and the single place
 * that turns errors into messages and exit codes. Heavy libraries are imported inside each
 * command's action, so `--help` and `validate` start fast.
 */
import { Command, CommanderError, Option } from 'commander';
import { CliError, ExitCode, InterruptedError } from '../errors.js';
import type { Problem } from '../inventory/problems.js';
import { Output } from '../ui/output.js';
import { problemLines } from '../ui/problems.js';
import { makeStyle } from '../ui/style.js';
import { VERSION } from '../version.js';
import { registerCommands } from './commands/index.js';
import type { CliContext, GlobalOptions } from './context.js';

export async function main(argv: string[], env: NodeJS.ProcessEnv = process.env): Promise<number> {
  const controller = new AbortController();
  let ctx: CliContext | undefined;
  const onSigint = () => {
    if (controller.signal.aborted) process.exit(ExitCode.interrupted);
    controller.abort(new InterruptedError());
    ctx?.out.note('Interrupted: finishing the step in hand, then stopping (Ctrl-C again to quit at once).');
  };
  process.on('SIGINT', onSigint);

  const program = new Command('newapi-cluster')
    .description('Provision and operate multi-node New API clusters from one inventory file.')
    .version(VERSION, '--version')
    .option('-i, --inventory <path>', 'inventory file (default ./inventory.yaml)')
    .option('--json', 'machine-readable output', false)
    .option('-y, --yes', 'answer yes to every prompt', false)
    .option('--verbose', 'more detail, and stack traces on errors', false)
    .option('--no-color', 'no colour (also NO_COLOR)')
    .addOption(new Option('--accept-new-host-keys', 'trust and record SSH host keys seen for the first time').default(false))
    .showHelpAfterError('(run with --help for usage)')
    .exitOverride()
    .configureOutput({
      writeOut: (s) => process.stdout.write(s),
      writeErr: (s) => process.stderr.write(s),
    });

  const getContext = (): CliContext => {
    if (ctx) return ctx;
    const g = program.opts<GlobalOptions>();
    const interactive = Boolean(process.stdin.isTTY && process.stderr.isTTY) && !env.CI;
    const color = g.color !== false && !env.NO_COLOR && Boolean(process.stderr.isTTY);
    const out = new Output({ json: g.json, verbose: g.verbose, color, plain: !interactive || g.json });
    ctx = {
      out,
      style: makeStyle(color),
      globals: { ...g, color },
      env,
      cwd: process.cwd(),
      interactive,
      signal: controller.signal,
    };
    return ctx;
  };

  registerCommands(program, getContext);

  try {
    await program.parseAsync(argv);
    if (controller.signal.aborted) return ExitCode.interrupted;
    return ctx?.exitCode ?? ExitCode.ok;
  } catch (err) {
    return reportError(err, getContext());
  } finally {
    process.off('SIGINT', onSigint);
  }
}

/** Maps an error to its exit code and prints it: one line, a hint, a stack only with --verbose. */
export function reportError(err: unknown, ctx: CliContext): number {
  const { out, style } = ctx;
  if (err instanceof CommanderError) {
    if (err.code === 'commander.helpDisplayed' || err.code === 'commander.version' || err.code === 'commander.help') {
      return ExitCode.ok;
    }
    // commander has already printed the message.
    return ExitCode.badInput;
  }
  if (err instanceof CliError) {
    if (out.json) {
      out.printJson({ ok: false, error: { message: err.message, hint: err.hint, node: err.node, exitCode: err.exitCode, ...extraJson(err) } });
    } else {
      out.note(`${style.red('✖')} ${err.node && !err.message.startsWith(err.node) ? `${err.node}: ` : ''}${err.message}`);
      for (const line of extraLines(err, ctx)) out.note(line);
      if (err.hint) out.note(style.dim(`  hint: ${err.hint}`));
      if (ctx.globals.verbose && err.stack) out.note(style.dim(err.stack));
    }
    return err.exitCode;
  }
  out.note(`${style.red('✖')} internal error: ${err instanceof Error ? err.message : String(err)}`);
  if (ctx.globals.verbose && err instanceof Error && err.stack) out.note(style.dim(err.stack));
  else out.note(style.dim('  hint: run again with --verbose for the stack trace, and report it as a bug'));
  return ExitCode.failed;
}

/** Inventory errors carry every problem found; they print under the one line. */
function problemsOf(err: CliError): Problem[] | undefined {
  const problems = (err as { problems?: unknown }).problems;
  return Array.isArray(problems) ? (problems as Problem[]) : undefined;
}

function extraLines(err: CliError, ctx: CliContext): string[] {
  const problems = problemsOf(err);
  return problems ? problemLines(problems, ctx.style) : [];
}

function extraJson(err: CliError): Record<string, unknown> {
  const problems = problemsOf(err);
  return problems ? { problems } : {};
}
