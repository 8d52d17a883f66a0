/**
 * Dry-run diffs of secret files: which variables change is visible (a mark per value, keyed by a
 * random per-run key, so it cannot be checked against guesses), the values never are — whether
 * the key looks secret or only the value came from a ${VAR}.
 */
import { createHash } from 'node:crypto';
import { describe, expect, it } from 'vitest';
import { fileDiff, redactEnvFile, secretMark } from '../../../src/plan/diff.js';

const OLD = {
  session: 'fake-old-session-secret-0123456789abcdefghij',
  crypto: 'fake-old-crypto-secret-0123456789abcdefghijk',
  dsn: 'newapi:fake-old-db-password@tcp(10.0.0.5:3306)/new-api',
  logDsn: 'postgres://newapi:fake-old-log-password@10.0.0.7:5432/log',
  redis: 'redis://default:fake-old-redis-password@10.0.0.6:6379/0',
};
const NEW_SESSION = 'fake-new-session-secret-9876543210zyxwvutsrq';

const envFile = (s: typeof OLD, extra = '') =>
  [
    '# Managed by newapi-cluster: node slave-1 (slave) of cluster prod. Mode 0600: it holds secrets.',
    `SQL_DSN='${s.dsn}'`,
    `LOG_SQL_DSN=${s.logDsn}`,
    `REDIS_CONN_STRING=${s.redis}`,
    'REDIS_POOL_SIZE=10',
    `SESSION_SECRET=${s.session}`,
    `CRYPTO_SECRET=${s.crypto}`,
    'NODE_TYPE=slave',
    'SYNC_FREQUENCY=60',
    `TZ=Asia/Shanghai${extra}`,
    '',
  ].join('\n');

const fingerprint = (value: string) => secretMark(value);

describe('redactEnvFile', () => {
  const text = envFile(OLD);
  const redacted = redactEnvFile(text);

  it('hides the value of every secret variable', () => {
    for (const value of Object.values(OLD)) expect(redacted).not.toContain(value);
    const secretLines = redacted.split('\n').filter((l) => /^(SESSION_SECRET|CRYPTO_SECRET|SQL_DSN|REDIS_CONN_STRING|LOG_SQL_DSN)=/.test(l));
    expect(secretLines).toEqual([
      `SQL_DSN=${fingerprint(`'${OLD.dsn}'`)}`,
      `LOG_SQL_DSN=${fingerprint(OLD.logDsn)}`,
      `REDIS_CONN_STRING=${fingerprint(OLD.redis)}`,
      `SESSION_SECRET=${fingerprint(OLD.session)}`,
      `CRYPTO_SECRET=${fingerprint(OLD.crypto)}`,
    ]);
  });

  it('keeps every other line as it was', () => {
    const keep = (t: string) => t.split('\n').filter((l) => !/^(SESSION_SECRET|CRYPTO_SECRET|SQL_DSN|REDIS_CONN_STRING|LOG_SQL_DSN)=/.test(l));
    expect(keep(redacted)).toEqual(keep(text));
    expect(redacted).toContain('REDIS_POOL_SIZE=10\n');
    expect(redacted).toContain('NODE_TYPE=slave\n');
    expect(redacted).toContain('TZ=Asia/Shanghai\n');
    expect(redacted.split('\n')[0]).toBe(text.split('\n')[0]);
  });

  it('gives a changed secret a different fingerprint, an unchanged one the same', () => {
    const after = redactEnvFile(envFile({ ...OLD, session: NEW_SESSION }));
    const line = (t: string, key: string) => t.split('\n').find((l) => l.startsWith(`${key}=`));
    expect(line(after, 'SESSION_SECRET')).not.toBe(line(redacted, 'SESSION_SECRET'));
    expect(line(after, 'CRYPTO_SECRET')).toBe(line(redacted, 'CRYPTO_SECRET'));
  });
});

describe('fileDiff', () => {
  it('shows which secret changed in a secret file, and no secret value', () => {
    const before = envFile(OLD);
    const after = envFile({ ...OLD, session: NEW_SESSION }, '');
    const diff = fileDiff('/opt/new-api/.env', before, after, true);
    for (const value of [...Object.values(OLD), NEW_SESSION]) expect(diff).not.toContain(value);
    const changed = diff.split('\n').filter((l) => /^[-+][A-Z]/.test(l));
    expect(changed).toEqual([`-SESSION_SECRET=${fingerprint(OLD.session)}`, `+SESSION_SECRET=${fingerprint(NEW_SESSION)}`]);
    expect(diff).toContain('--- /opt/new-api/.env (on host)');
    expect(diff).toContain('+++ /opt/new-api/.env (rendered)');
  });

  it('redacts a whole new secret file (first deploy) too', () => {
    const diff = fileDiff('/opt/new-api/.env', undefined, envFile(OLD), true);
    for (const value of Object.values(OLD)) expect(diff).not.toContain(value);
    expect(diff).toContain('--- /dev/null');
    expect(diff).toContain(`+SESSION_SECRET=${fingerprint(OLD.session)}`);
    expect(diff).toContain('+NODE_TYPE=slave');
  });

  it('shows a file that is not secret as it is', () => {
    const diff = fileDiff('/opt/new-api/docker-compose.yml', 'image: a:v1\n', 'image: a:v2\n', false);
    expect(diff).toContain('-image: a:v1');
    expect(diff).toContain('+image: a:v2');
  });
});

describe('secretMark', () => {
  it('is the same for equal values and differs for others, within a run', () => {
    expect(secretMark('a-secret-value')).toBe(secretMark('a-secret-value'));
    expect(secretMark('a-secret-value')).not.toBe(secretMark('another-value'));
    expect(secretMark('a-secret-value')).toMatch(/^<secret #[0-9a-f]{8}>$/);
  });

  it('is not an unsalted hash of the value (a dictionary of guesses cannot match it)', () => {
    for (const algo of ['sha256', 'sha1', 'md5']) {
      const plain = createHash(algo).update('a-secret-value').digest('hex');
      expect(secretMark('a-secret-value')).not.toContain(plain.slice(0, 8));
    }
  });
});

describe('redaction by value', () => {
  const proxy = 'http://ops:Pr0xyPassw0rd@proxy.internal:3128';

  it('hides a line whose key looks harmless when its value holds a value from a ${VAR}', () => {
    const text = `HTTPS_PROXY=${proxy}\nERROR_LOG_ENABLED=true\n`;
    const redacted = redactEnvFile(text, ['Pr0xyPassw0rd']);
    expect(redacted).not.toContain('Pr0xyPassw0rd');
    expect(redacted).toContain(`HTTPS_PROXY=${secretMark(proxy)}`);
    expect(redacted).toContain('ERROR_LOG_ENABLED=true');
  });

  it('hides it in a quoted value too', () => {
    const redacted = redactEnvFile(`HTTPS_PROXY='${proxy} x'\n`, [proxy]);
    expect(redacted).not.toContain(proxy);
  });

  it('passes the secrets through fileDiff', () => {
    const diff = fileDiff('/opt/new-api/.env', undefined, `HTTPS_PROXY=${proxy}\n`, true, [proxy]);
    expect(diff).not.toContain('Pr0xyPassw0rd');
  });
});
