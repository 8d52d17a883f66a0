/**
 * Any password survives: a database user, a Redis ACL user and both secrets made of `! * $ space
 * # @ =` go through deploy, upgrade (whose migrate step runs its own container) and rollback, and
 * every container — the migrate one included — gets them byte for byte. None of them is ever shown.
 */
import { createHash } from 'node:crypto';
import { execFile } from 'node:child_process';
import { promisify } from 'node:util';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { cli, hostExec, labEnv, labInventory, resetLab, type CliResult, type LabHost } from '../support/lab.js';

const execFileP = promisify(execFile);

const PASSWORD = 'p@ss w0rd!*$x#=Z $HOME end';
const SESSION = 'sess!on *secret* with $pace #hash @at =eq 0123456789';
const CRYPTO = 'crypto = "quoted" & #1 !bang *star $dollar @ 0123456789';
const HOSTS: LabHost[] = ['n1', 'n2', 'n3'];

const short = (s: string) => createHash('sha256').update(s).digest('hex').slice(0, 16);

describe('passwords and secrets with ! * $ space # @ =', () => {
  let inventory: string;
  let env: Record<string, string>;

  beforeAll(async () => {
    await resetLab();
    const lab = labEnv();
    const sql = (q: string) => execFileP('mariadb', ['-S', lab.MYSQL_ROOT_SOCKET!, '-u', 'root', '-e', q]);
    const literal = PASSWORD.replace(/\\/g, '\\\\').replace(/'/g, "\\'");
    await sql(`DROP USER IF EXISTS 'hostile'@'%'; CREATE USER 'hostile'@'%' IDENTIFIED BY '${literal}'; GRANT ALL PRIVILEGES ON newapi.* TO 'hostile'@'%'; FLUSH PRIVILEGES;`);
    await execFileP('redis-cli', ['-h', lab.LAB_REDIS_HOST ?? '10.77.0.1', '--no-auth-warning', '-a', lab.REDIS_PASSWORD!, 'ACL', 'SETUSER', 'hostile', 'reset', 'on', `>${PASSWORD}`, '~*', '&*', '+@all']);
    env = {
      SQL_DSN: `hostile:${PASSWORD}@tcp(10.77.0.1:3306)/newapi`,
      REDIS_CONN_STRING: `redis://hostile:${encodeURIComponent(PASSWORD)}@10.77.0.1:6379/0`,
      SESSION_SECRET: SESSION,
      CRYPTO_SECRET: CRYPTO,
    };
    inventory = labInventory();
  });

  afterAll(async () => {
    const lab = labEnv();
    await execFileP('mariadb', ['-S', lab.MYSQL_ROOT_SOCKET!, '-u', 'root', '-e', "DROP USER IF EXISTS 'hostile'@'%'"]).catch(() => undefined);
    await execFileP('redis-cli', ['-h', lab.LAB_REDIS_HOST ?? '10.77.0.1', '--no-auth-warning', '-a', lab.REDIS_PASSWORD!, 'ACL', 'DELUSER', 'hostile']).catch(() => undefined);
  });

  const run = async (args: string[]): Promise<CliResult> => {
    const r = await cli(args, { env, timeoutMs: 200_000 });
    for (const value of [PASSWORD, encodeURIComponent(PASSWORD), SESSION, CRYPTO, env.SQL_DSN!, env.REDIS_CONN_STRING!]) {
      expect(r.stdout + r.stderr, `a secret reached the output of ${args.join(' ')}`).not.toContain(value);
    }
    return r;
  };

  /** What each node's container received, by hash. */
  const received = async (host: LabHost, container = 'lab-new-api') =>
    JSON.parse(await hostExec(host, `docker exec ${container} wget -q -O - http://127.0.0.1:3000/api/standin`)) as {
      data: { version: string; session_secret_sha256: string; crypto_secret_sha256: string; sql_dsn_sha256: string; redis_conn_string_sha256: string };
    };

  const expectExact = async (version: string) => {
    for (const host of HOSTS) {
      const { data } = await received(host);
      expect([host, data.version, data.session_secret_sha256, data.crypto_secret_sha256, data.sql_dsn_sha256, data.redis_conn_string_sha256]).toEqual([
        host,
        version,
        short(SESSION),
        short(CRYPTO),
        short(env.SQL_DSN!),
        short(env.REDIS_CONN_STRING!),
      ]);
    }
  };

  it('validate accepts them and deploy gives every container exactly these values', async () => {
    expect((await run(['validate', inventory])).code).toBe(0);
    const r = await run(['deploy', inventory]);
    expect(r.code, r.stderr).toBe(0);
    await expectExact('v0.9.20');
  });

  it('check logs in to MySQL and Redis with them from every node', async () => {
    const r = await run(['check', '--json', inventory]);
    expect(r.code, r.stdout).toBe(0);
    const checks = (JSON.parse(r.stdout) as { checks: { node: string; check: string; status: string }[] }).checks;
    expect(checks.filter((c) => c.check === 'mysql' || c.check === 'redis').every((c) => c.status === 'ok')).toBe(true);
  });

  it('upgrade: the migrate container gets the same environment (it migrates with these credentials), then every node moves', async () => {
    const r = await run(['upgrade', '--rolling', '--to', 'v0.9.21', inventory]);
    expect(r.code, r.stderr).toBe(0);
    expect(r.stderr).toContain('Run the v0.9.21 migrations once on master');
    await expectExact('v0.9.21');
  });

  it('rollback returns every node to v0.9.20 with the same values', async () => {
    const r = await run(['rollback', inventory]);
    expect(r.code, r.stderr).toBe(0);
    await expectExact('v0.9.20');
  });

  it('a deploy --dry-run after a secret changes shows that it changed, never what it is', async () => {
    const r = await cli(['deploy', '--dry-run', inventory], { env: { ...env, CRYPTO_SECRET: `${CRYPTO} rotated` } });
    expect(r.code, r.stderr).toBe(0);
    expect(r.stdout).toMatch(/^-CRYPTO_SECRET=<secret #[0-9a-f]{8}>$/m);
    expect(r.stdout).toMatch(/^\+CRYPTO_SECRET=<secret #[0-9a-f]{8}>$/m);
    expect(r.stdout + r.stderr).not.toContain(CRYPTO);
    expect(r.stdout + r.stderr).not.toContain(PASSWORD);
  });
});
