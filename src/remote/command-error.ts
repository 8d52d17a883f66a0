/**
 * The failure of a remote command, worded the same way whichever executor ran it, so unit tests
 * on the recording executor see the messages users will see.
 */
import { CliError } from '../errors.js';
import type { SshTarget } from './types.js';

// A command line can be long (a whole compose file passed as an argument would be a bug, but a
// long `docker run`, not); messages stay one readable line.
const MAX_SHOWN = 300;

export function shownCommand(commandLine: string): string {
  const oneLine = commandLine.replace(/\s*\n\s*/g, ' ');
  return oneLine.length > MAX_SHOWN ? `${oneLine.slice(0, MAX_SHOWN)}…` : oneLine;
}

export function lastLine(text: string): string {
  const lines = text.split('\n').map((l) => l.trim()).filter((l) => l !== '');
  return lines.at(-1) ?? '';
}

/** `<label>: \`<command>\` exited with code N: <last stderr line>`. Stdin and environment never appear. */
export function commandFailedError(target: SshTarget, commandLine: string, code: number, stderr: string): CliError {
  const last = lastLine(stderr);
  const message = `${target.label}: \`${shownCommand(commandLine)}\` exited with code ${code}${last === '' ? '' : `: ${last}`}`;
  const hint = /sudo: (a terminal is required|a password is required)/.test(stderr)
    ? `give ${target.user} passwordless sudo on ${target.host} (NOPASSWD in sudoers), or connect as root`
    : `run the command by hand as ${target.user}@${target.host} to see its full output`;
  return new CliError(message, { node: target.label, hint });
}
