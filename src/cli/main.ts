/**
 * The top level: global flags, one sub-command per file in ./commands, and the single place
 * that turns errors into messages and exit codes. Heavy libraries are imported inside each
 * command's action, so `--help` and `validate` start fast.
 */
import { setMaxListeners } from 'node:events';
import { Command, CommanderError, Option } from 'commander';
import { CliError, ExitCode, InterruptedError, SIGNAL_EXIT, type StopSignalName } from '../errors.js';
import type { Problem } from '../inventory/problems.js';
import { Output } from '../ui/output.js';
import { problemLines } from '../ui/problems.js';
import { makeStyle } from '../ui/style.js';
import { VERSION } from '../version.js';
import { registerCommands } from './commands/index.js';
import type { RunEnv } from '../orchestrate/run-env.js';
import type { CliContext, GlobalOptions } from './context.js';

const STOP_SIGNALS: StopSignalName[] = ['SIGINT', 'SIGTERM', 'SIGHUP'];

export interface MainOptions {
  /** Replaces SSH, the lock store or the clock (unit tests). */
  deps?: RunEnv['deps'];
}

export async function main(argv: string[], env: NodeJS.ProcessEnv = process.env, mainOpts: MainOptions = {}): Promise<number> {
  const stop = new AbortController();
  setMaxListeners(0, stop.signal);
  let received: StopSignalName | undefined;
  const hardQuit = new Set<() => Promise<void>>();
  let ctx: CliContext | undefined;
  // SIGINT (Ctrl-C), SIGTERM (a supervisor) and SIGHUP (the operator's SSH session dropped) all
  // end a run the same way: the step in hand is finished or undone, then the run stops. A second
  // one quits at once, giving the lock one second to be released.
  const onSignal = (signal: StopSignalName) => {
    if (stop.signal.aborted) {
      ctx?.out.note(`${signal} again: quitting now (the lock gets one second to be released).`);
      const cleanups = Promise.all([...hardQuit].map((fn) => fn().catch(() => undefined)));
      void Promise.race([cleanups, new Promise((r) => setTimeout(r, 1_500))]).then(() => process.exit(SIGNAL_EXIT[received ?? signal]));
      return;
    }
    received = signal;
    stop.abort(new InterruptedError(`interrupted (${signal})`, signal));
    ctx?.out.note(`Interrupted (${signal}): finishing or undoing the step in hand, then stopping (${signal === 'SIGINT' ? 'Ctrl-C' : 'the signal'} again to quit at once).`);
  };
  const handlers = STOP_SIGNALS.map((signal) => [signal, () => onSignal(signal)] as const);
  for (const [signal, handler] of handlers) process.on(signal, handler);
  // With SIGHUP the terminal may be gone: a failed write must not end the run before it stops cleanly.
  const ignore = () => undefined;
  process.stdout.on('error', ignore);
  process.stderr.on('error', ignore);

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
      json: g.json,
      verbose: g.verbose,
      yes: g.yes,
      acceptNewHostKeys: g.acceptNewHostKeys,
      signals: {
        stop: stop.signal,
        get received() {
          return received;
        },
        onHardQuit: (fn) => {
          hardQuit.add(fn);
          return () => hardQuit.delete(fn);
        },
      },
      ...(mainOpts.deps ? { deps: mainOpts.deps } : {}),
    };
    return ctx;
  };

  registerCommands(program, getContext);

  try {
    await program.parseAsync(argv);
    if (received) return SIGNAL_EXIT[received];
    return ctx?.exitCode ?? ExitCode.ok;
  } catch (err) {
    return reportError(err, getContext());
  } finally {
    for (const [signal, handler] of handlers) process.off(signal, handler);
    process.stdout.off('error', ignore);
    process.stderr.off('error', ignore);
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
  if (err instanceof Error && err.name === 'ExitPromptError') return ExitCode.interrupted;
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
