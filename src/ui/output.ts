/**
 * The one way text leaves the process. Every line passes the redactor, so a secret that slips
 * into an error message from a library (a DSN in a driver error, say) is still never shown.
 */
import type { Writable } from 'node:stream';

export interface OutputOptions {
  json: boolean;
  verbose: boolean;
  color: boolean;
  /** Timestamped plain lines instead of a live task list (not a terminal, or CI). */
  plain: boolean;
  stdout?: Writable;
  stderr?: Writable;
}

export const REDACTED = '••••••';

export class Output {
  readonly json: boolean;
  readonly verbose: boolean;
  readonly color: boolean;
  readonly plain: boolean;
  readonly stdout: Writable;
  readonly stderr: Writable;
  private secrets: string[] = [];

  constructor(opts: OutputOptions) {
    this.json = opts.json;
    this.verbose = opts.verbose;
    this.color = opts.color;
    this.plain = opts.plain;
    this.stdout = opts.stdout ?? process.stdout;
    this.stderr = opts.stderr ?? process.stderr;
  }

  addSecrets(values: Iterable<string>): void {
    const all = new Set([...this.secrets, ...values]);
    // Longest first, so a password inside a DSN does not break the DSN's own redaction.
    this.secrets = [...all].filter((v) => v.length > 0).sort((a, b) => b.length - a.length);
  }

  redact(text: string): string {
    let out = text;
    for (const s of this.secrets) if (out.includes(s)) out = out.split(s).join(REDACTED);
    return out;
  }

  /** Results: stdout. */
  print(text = ''): void {
    this.stdout.write(`${this.redact(text)}\n`);
  }

  /** Progress, warnings, errors: stderr, so stdout stays parseable. */
  note(text: string): void {
    this.stderr.write(`${this.redact(text)}\n`);
  }

  /** A progress line for non-terminal output: timestamped (with when it happened, if that was earlier). */
  log(text: string, at: Date = new Date()): void {
    if (this.json) return;
    const stamp = at.toISOString().replace('T', ' ').replace(/\.\d+Z$/, 'Z');
    this.note(`${stamp} ${text}`);
  }

  printJson(value: unknown): void {
    this.stdout.write(`${this.redact(JSON.stringify(value, null, 2))}\n`);
  }
}

/** What printers need: where to write and how to style it. */
export interface PrintEnv {
  out: Output;
  style: import('chalk').ChalkInstance;
}
