/**
 * Per-file diffs for --dry-run. In a secret file (a node's .env) a line is hidden when its key
 * looks secret OR its value holds any value that came from a ${VAR} — a proxy URL with a password
 * under a harmless key is a secret too. A hidden value becomes a fingerprint keyed by a random
 * per-run key: within one run a changed secret shows as changed, and nothing printed can be
 * checked against a dictionary of guesses later.
 */
import { createHmac, randomBytes } from 'node:crypto';
import { createTwoFilesPatch } from 'diff';

/** Variables whose values are secret in a node's .env, whatever their value. */
const SECRET_KEY_RE = /SECRET|PASSWORD|PASSWD|TOKEN|KEY|DSN|CONN_STRING|CREDENTIAL|AUTH/i;

const RUN_KEY = randomBytes(32);

/** `<secret #a1b2c3d4>`: equal values give equal marks within this process, and nothing else. */
export function secretMark(value: string): string {
  return `<secret #${createHmac('sha256', RUN_KEY).update(value).digest('hex').slice(0, 8)}>`;
}

export function redactEnvFile(text: string, secrets: readonly string[] = []): string {
  const known = secrets.filter((s) => s.length >= 4);
  return text
    .split('\n')
    .map((line) => {
      const m = /^([A-Za-z_][A-Za-z0-9_]*)=(.*)$/.exec(line);
      if (!m) return line;
      const [, key = '', value = ''] = m;
      if (!SECRET_KEY_RE.test(key) && !known.some((s) => value.includes(s))) return line;
      return `${key}=${secretMark(value)}`;
    })
    .join('\n');
}

export function fileDiff(path: string, before: string | undefined, after: string, secret: boolean, secrets: readonly string[] = []): string {
  const show = (t: string) => (secret ? redactEnvFile(t, secrets) : t);
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
