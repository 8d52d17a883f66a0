/**
 * The built CLI under a pseudo-terminal, as an operator at a terminal runs it: util-linux
 * `script` gives it a pty (so it draws its task list and asks its questions), and the test
 * answers each prompt once it appears. Bounded: past `timeoutMs` the whole process group is
 * killed and the run rejects with what the terminal showed last.
 */
import { spawn } from 'node:child_process';
import { join } from 'node:path';
import { ROOT } from './lab.js';

export interface PtyResult {
  code: number;
  /** What the terminal showed, escape sequences removed, carriage returns as line ends. */
  screen: string;
}

/** Removes ANSI escape sequences (colours, cursor moves, line erases). */
export function stripAnsi(text: string): string {
  // eslint-disable-next-line no-control-regex
  return text.replace(/\x1b\[[0-9;?]*[ -/]*[@-~]|\x1b\][^\x07]*\x07|\x1b[()][A-Z0-9]|\x1b[=>]/g, '');
}

export async function runInPty(
  args: string[],
  opts: { env: Record<string, string>; cwd?: string; answers?: [RegExp, string][]; timeoutMs: number; columns?: number },
): Promise<PtyResult> {
  const quote = (s: string) => `'${s.replace(/'/g, `'\\''`)}'`;
  const command = [process.execPath, join(ROOT, 'bin/newapi-cluster.js'), ...args].map(quote).join(' ');
  const env: Record<string, string> = { PATH: process.env.PATH ?? '/usr/bin:/bin', HOME: process.env.HOME ?? '/root', TERM: 'xterm-256color', ...opts.env };
  delete env.CI; // a terminal, not CI
  // stty gives the pty a size: a terminal with no width gets plain lines (see ui/progress.ts).
  const child = spawn('script', ['-qfec', `stty cols ${opts.columns ?? 120} rows 40; exec ${command}`, '/dev/null'], {
    cwd: opts.cwd ?? ROOT,
    env,
    stdio: ['pipe', 'pipe', 'pipe'],
    detached: true,
  });
  let raw = '';
  const answers = [...(opts.answers ?? [])];
  let seenUpTo = 0;
  const onData = (chunk: Buffer) => {
    raw += chunk.toString('utf8');
    // Each prompt is answered once, in order, the first time it appears after the previous answer.
    const screen = stripAnsi(raw);
    const next = answers[0];
    if (next && next[0].test(screen.slice(seenUpTo))) {
      answers.shift();
      seenUpTo = screen.length;
      child.stdin!.write(`${next[1]}\r`);
    }
  };
  child.stdout!.on('data', onData);
  child.stderr!.on('data', onData);
  try {
    return await new Promise<PtyResult>((resolve, reject) => {
      const timer = setTimeout(() => {
        const tail = stripAnsi(raw).replace(/\r/g, '\n').split('\n').filter((l) => l.trim()).slice(-15).join('\n');
        reject(new Error(`newapi-cluster ${args.join(' ')} under a pty: still running after ${opts.timeoutMs} ms${answers.length ? `, waiting for ${answers[0]![0]}` : ''}. Last lines:\n${tail}`));
      }, opts.timeoutMs);
      child.on('error', (e) => (clearTimeout(timer), reject(e)));
      child.on('close', (code, signal) => {
        clearTimeout(timer);
        resolve({ code: code ?? (signal ? 128 : 1), screen: stripAnsi(raw).replace(/\r\n?/g, '\n') });
      });
    });
  } finally {
    try {
      process.kill(-child.pid!, 'SIGKILL');
    } catch {
      // the group has exited
    }
  }
}
