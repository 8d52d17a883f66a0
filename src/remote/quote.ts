/**
 * The one place where values are quoted for a remote shell. sshd hands the command string to
 * the login user's shell (`$SHELL -c "…"`), so every argv element must reach it as one literal
 * word. We assume a POSIX login shell (sh, bash, dash, zsh, ksh); csh and fish quote differently
 * and are not supported as login shells of the deploy user.
 */
import { InputError } from '../errors.js';
import type { Argv } from './types.js';

// Only characters that no POSIX shell treats specially anywhere in a word stay bare; `~` is
// left out (tilde expansion at the start of a word), and so are `#`, `!`, `*`, `?`, `[`, `{`.
const SAFE_WORD = /^[A-Za-z0-9_./=:@%+,-]+$/;

/** Quotes one argument so a POSIX shell reads it back byte for byte. */
export function quoteArg(value: string): string {
  verifyNoNul(value);
  if (SAFE_WORD.test(value)) return value;
  // Inside single quotes nothing is special except the closing quote, which cannot be escaped:
  // close the quote, emit an escaped quote, reopen.
  return `'${value.replaceAll("'", `'\\''`)}'`;
}

export interface CommandLineOptions {
  /** Prefix `sudo -n --`: -n fails at once instead of waiting for a password nobody can type. */
  sudo?: boolean;
}

/** Joins an argv into the single string an SSH exec request carries. */
export function toCommandLine(argv: Argv, opts: CommandLineOptions = {}): string {
  const [command] = argv;
  if (command === undefined || command === '') {
    throw new Error('toCommandLine: the command (argv[0]) is empty');
  }
  // argv[0] is always a program name written in our own code. A `NAME=value` first word would be
  // read as a variable assignment by the shell, and as an environment setting by sudo (even after
  // `--`), so it is a programming error rather than something to quote.
  if (command.includes('=')) {
    throw new Error('toCommandLine: the command (argv[0]) must be a program name, not an assignment');
  }
  const words = argv.map(quoteArg);
  return (opts.sudo === true ? ['sudo', '-n', '--', ...words] : words).join(' ');
}

function verifyNoNul(value: string): void {
  // A shell command line is a C string: a NUL would silently cut the command short. The value
  // itself is left out of the message because it may be a secret.
  if (value.includes('\0')) {
    throw new InputError(
      'a value passed to a remote command contains a NUL byte, which no remote shell can carry',
      'remove the NUL character from the inventory or secrets value',
    );
  }
}
