/**
 * Per-file diffs for --dry-run. Secret files show which variables change, never their values:
 * each secret value is replaced by a short fingerprint, so a changed secret is still visible.
 */
import { createTwoFilesPatch } from 'diff';
import { sha256 } from './state.js';

/** Variables whose values are secret in a node's .env. */
const SECRET_KEY_RE = /SECRET|PASSWORD|TOKEN|KEY|DSN|CONN_STRING/i;

export function redactEnvFile(text: string): string {
  return text
    .split('\n')
    .map((line) => {
      const m = /^([A-Za-z_][A-Za-z0-9_]*)=(.*)$/.exec(line);
      if (!m || !SECRET_KEY_RE.test(m[1] ?? '')) return line;
      return `${m[1]}=<secret sha256:${sha256(m[2] ?? '').slice(0, 8)}>`;
    })
    .join('\n');
}

export function fileDiff(path: string, before: string | undefined, after: string, secret: boolean): string {
  const show = (t: string) => (secret ? redactEnvFile(t) : t);
  return createTwoFilesPatch(
    before === undefined ? '/dev/null' : `${path} (on host)`,
    `${path} (rendered)`,
    before === undefined ? '' : show(before),
    show(after),
    undefined,
    undefined,
    { context: 3 },
  );
}
