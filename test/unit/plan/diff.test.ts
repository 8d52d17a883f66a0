/**
 * Dry-run diffs of secret files: which variables change is visible (a fingerprint per value),
 * the values never are.
 */
import { describe, expect, it } from 'vitest';
import { fileDiff, redactEnvFile } from '../../../src/plan/diff.js';
import { sha256 } from '../../../src/plan/state.js';

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

const fingerprint = (value: string) => `<secret sha256:${sha256(value).slice(0, 8)}>`;

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
