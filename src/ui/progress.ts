/**
 * Progress of an operation, as phases of tasks: a live listr2 task list on a terminal, plain
 * timestamped lines otherwise (pipes, CI, --json). Orchestration only calls `phase`; it never
 * knows which one it talks to.
 */
import type { ChalkInstance } from 'chalk';
import { mapLimitSettled } from '../remote/limit.js';
import type { Output } from './output.js';

/** What progress needs to know: where to write, and whether a person watches a terminal. */
export interface ProgressEnv {
  out: Output;
  style: ChalkInstance;
  interactive: boolean;
}

export interface PhaseTask {
  title: string;
  run: (report: (text: string) => void) => Promise<void>;
}

export interface PhaseOptions {
  /** Tasks run at once (default 1: in order). */
  concurrency?: number;
}

export interface Progress {
  /** Runs every task; rejects with the first failure once no task is still running. */
  phase(title: string, tasks: PhaseTask[], opts?: PhaseOptions): Promise<void>;
  /** A single step with no sub-tasks. */
  step(title: string, run: (report: (text: string) => void) => Promise<void>): Promise<void>;
  info(text: string): void;
}

export async function makeProgress(ctx: ProgressEnv): Promise<Progress> {
  if (ctx.out.json) return new JsonProgress(ctx);
  // A terminal nobody gave a width (a bare pty) gets plain lines: a task list would wrap every character.
  if (ctx.interactive && (process.stderr.columns ?? 0) > 0) return new ListrProgress(ctx);
  return new PlainProgress(ctx);
}

/** How long a plain-text task may stay silent before its start line is printed, or hold back its latest message. */
export const QUIET_MS = 2_000;

/**
 * Lines for CI logs, about one per thing that happened. A task prints what it says when it says
 * something new (a message repeated is printed once); its last message goes on its end line, with
 * the time it took, when the task ends within QUIET_MS of it. Its start line ("title …") is
 * printed only when it has said nothing for QUIET_MS, so a task that finishes quickly is one line.
 * A message held back that long is printed then, with the time it was said. --verbose prints
 * every start, every message (repeats included) and every end at once.
 */
class PlainProgress implements Progress {
  constructor(private readonly ctx: ProgressEnv) {}

  info(text: string): void {
    this.ctx.out.log(text);
  }

  async step(title: string, run: PhaseTask['run']): Promise<void> {
    const { out, style } = this.ctx;
    const started = new Date();
    const seconds = () => `${((Date.now() - started.getTime()) / 1000).toFixed(1)} s`;
    let last: string | undefined;
    let held: { text: string; at: Date } | undefined;
    let spoken = false;
    let timer: NodeJS.Timeout | undefined;
    const flush = () => {
      if (held) out.log(`  ${title}: ${held.text}`, held.at);
      held = undefined;
    };
    const arm = () => {
      clearTimeout(timer);
      timer = setTimeout(() => {
        if (held) flush();
        else if (!spoken) out.log(`${title} …`, started);
        spoken = true;
      }, QUIET_MS);
      timer.unref();
    };
    if (out.verbose) out.log(`${title} …`);
    else arm();
    try {
      await run((text) => {
        if (out.verbose) {
          out.log(`  ${title}: ${text}`);
          return;
        }
        if (text === last) return;
        last = text;
        flush();
        held = { text, at: new Date() };
        spoken = true;
        arm();
      });
    } catch (e) {
      clearTimeout(timer);
      flush();
      out.log(`${style.red('✖')} ${title}: ${e instanceof Error ? e.message : String(e)}`);
      throw e;
    }
    clearTimeout(timer);
    out.log(`${style.green('✔')} ${title}${held ? `: ${held.text}` : ''} (${seconds()})`);
  }

  async phase(title: string, tasks: PhaseTask[], opts: PhaseOptions = {}): Promise<void> {
    if (tasks.length === 0) return;
    this.ctx.out.log(`${title}`);
    const settled = await mapLimitSettled(tasks, opts.concurrency ?? 1, (t) => this.step(`  ${t.title}`, t.run));
    const failed = settled.find((s): s is PromiseRejectedResult => s.status === 'rejected');
    if (failed) throw failed.reason;
  }
}

class ListrProgress implements Progress {
  constructor(private readonly ctx: ProgressEnv) {}

  info(text: string): void {
    this.ctx.out.note(text);
  }

  async step(title: string, run: PhaseTask['run']): Promise<void> {
    await this.runListr([{ title, run }], 1);
  }

  async phase(title: string, tasks: PhaseTask[], opts: PhaseOptions = {}): Promise<void> {
    if (tasks.length === 0) return;
    this.ctx.out.note(this.ctx.style.bold(title));
    await this.runListr(tasks, opts.concurrency ?? 1);
  }

  private async runListr(tasks: PhaseTask[], concurrency: number): Promise<void> {
    const { Listr } = await import('listr2');
    const errors: unknown[] = [];
    const out = this.ctx.out;
    const list = new Listr(
      tasks.map((t) => ({
        title: t.title,
        task: async (_: unknown, task: { output: string }) => {
          try {
            await t.run((text) => {
              task.output = out.redact(text);
            });
          } catch (e) {
            errors.push(e);
            // listr shows this message beside the task; ours are secret-free, the redactor makes sure.
            throw new Error(out.redact(e instanceof Error ? e.message : String(e)));
          }
        },
      })),
      {
        concurrent: concurrency > 1 ? concurrency : false,
        exitOnError: false,
        collectErrors: false,
        rendererOptions: { collapseErrors: false, showErrorMessage: true },
      },
    );
    await list.run().catch(() => undefined);
    if (errors.length > 0) throw errors[0];
  }
}

/**
 * --json: one JSON object per line on stderr for programs that drive the tool — `start`,
 * `progress` (when what a task says changes), `done` and `fail`, each with the task's title and
 * the time — while stdout carries the command's result document.
 */
class JsonProgress implements Progress {
  constructor(private readonly ctx: ProgressEnv) {}

  private emit(event: Record<string, unknown>): void {
    this.ctx.out.note(JSON.stringify({ at: new Date().toISOString(), ...event }));
  }

  info(text: string): void {
    this.emit({ event: 'info', text });
  }

  async step(title: string, run: PhaseTask['run'], phase?: string): Promise<void> {
    this.emit({ event: 'start', task: title, ...(phase ? { phase } : {}) });
    const started = Date.now();
    let last: string | undefined;
    try {
      await run((text) => {
        if (text === last && !this.ctx.out.verbose) return;
        last = text;
        this.emit({ event: 'progress', task: title, text });
      });
    } catch (e) {
      this.emit({ event: 'fail', task: title, error: e instanceof Error ? e.message : String(e), seconds: (Date.now() - started) / 1000 });
      throw e;
    }
    this.emit({ event: 'done', task: title, seconds: (Date.now() - started) / 1000 });
  }

  async phase(title: string, tasks: PhaseTask[], opts: PhaseOptions = {}): Promise<void> {
    if (tasks.length === 0) return;
    this.emit({ event: 'phase', task: title, tasks: tasks.map((t) => t.title) });
    const settled = await mapLimitSettled(tasks, opts.concurrency ?? 1, (t) => this.step(t.title, t.run, title));
    const failed = settled.find((s): s is PromiseRejectedResult => s.status === 'rejected');
    if (failed) throw failed.reason;
  }
}
