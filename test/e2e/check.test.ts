/**
 * check names the failing item and node, from each node's point of view; and a deploy whose
 * pre-flight fails changes no host.
 */
import { execFile } from 'node:child_process';
import { copyFileSync, readFileSync, writeFileSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { promisify } from 'node:util';
import { beforeAll, describe, expect, it } from 'vitest';
import { cli, hostExec, hostFingerprint, labEnv, labInventory, resetLab, type LabHost } from '../support/lab.js';

const execFileP = promisify(execFile);

interface Check {
  node: string;
  check: string;
  status: string;
  detail: string;
  hint?: string;
}

async function checks(inventory: string, env: Record<string, string> = {}): Promise<{ code: number; failed: Check[]; all: Check[] }> {
  const r = await cli(['check', '--json', inventory], { env });
  const parsed = JSON.parse(r.stdout) as { checks: Check[] };
  return { code: r.code, all: parsed.checks, failed: parsed.checks.filter((c) => c.status === 'fail') };
}

describe('check against the lab', () => {
  let inventory: string;

  beforeAll(async () => {
    await resetLab();
    inventory = labInventory();
  });

  it('passes on a healthy lab, with a table for people', async () => {
    const r = await cli(['check', inventory]);
    expect(r.code, r.stdout + r.stderr).toBe(0);
    expect(r.stdout).toMatch(/^slave-2\s+redis\s+ok\s+10\.77\.0\.1:6379\/0, PONG, version/m);
    expect(r.stdout).toMatch(/^master\s+mysql\s+ok\s+10\.77\.0\.1:3306\/newapi, utf8mb4, migration privileges$/m);
    expect(r.stdout).toMatch(/^balancer\s+nginx -t\s+ok/m);
    expect(r.stdout).toMatch(/all \d+ checks passed/);
  });

  it('names redis on every node when Redis does not answer', async () => {
    const env = labEnv();
    const pid = readFileSync(join(env.LAB_STATE ?? '/var/lib/newapi-lab', 'redis/redis.pid'), 'utf8').trim();
    await execFileP('kill', ['-STOP', pid]);
    let result: Awaited<ReturnType<typeof checks>>;
    try {
      result = await checks(inventory);
    } finally {
      await execFileP('kill', ['-CONT', pid]);
    }
    expect(result.code).toBe(1);
    expect(result.failed.map((c) => `${c.node} ${c.check}`)).toEqual(['master redis', 'slave-1 redis', 'slave-2 redis']);
    expect(result.failed[0]?.hint).toMatch(/is Redis up/);
  });

  it('names mysql on every node when the database password is wrong', async () => {
    const env = labEnv();
    const wrong = env.SQL_DSN!.replace(`:${env.MYSQL_PASSWORD}@`, ':WrongPassword123@');
    const result = await checks(inventory, { SQL_DSN: wrong });
    expect(result.code).toBe(1);
    expect(result.failed.map((c) => `${c.node} ${c.check}: ${c.detail}`)).toEqual([
      "master mysql: 10.77.0.1:3306/newapi: access denied for the DSN's user",
      "slave-1 mysql: 10.77.0.1:3306/newapi: access denied for the DSN's user",
      "slave-2 mysql: 10.77.0.1:3306/newapi: access denied for the DSN's user",
    ]);
    expect(result.failed[0]?.hint).toBe('check the user and password in SQL_DSN');
  });

  it('refuses a latin1 database, which New API panics on', async () => {
    const env = labEnv();
    const result = await checks(inventory, { SQL_DSN: env.SQL_DSN_LATIN1! });
    expect(result.code).toBe(1);
    expect(result.failed.map((c) => c.node)).toEqual(['master', 'slave-1', 'slave-2']);
    expect(result.failed[0]?.detail).toBe('database newapi_latin1 uses charset latin1; New API panics at start-up');
    expect(result.failed[0]?.hint).toContain('CHARACTER SET utf8mb4');
  });

  it("names the node whose deployed secrets differ, without showing them", async () => {
    const deploy = await cli(['deploy', inventory]);
    expect(deploy.code, deploy.stderr).toBe(0);
    await hostExec('n3', "sed -i 's/^SESSION_SECRET=.*/SESSION_SECRET=someOtherSecretValueThatIsLongEnough0123/' /opt/new-api/.env");
    const result = await checks(inventory);
    expect(result.code).toBe(1);
    expect(result.failed.map((c) => `${c.node} ${c.check}`)).toEqual(['slave-2 secrets']);
    expect(result.failed[0]?.detail).toMatch(/^SESSION_SECRET\/CRYPTO_SECRET differ from the inventory \(sha256 [0-9a-f]{12}, expected [0-9a-f]{12}\)$/);
    expect(JSON.stringify(result.all)).not.toContain('someOtherSecretValueThatIsLongEnough0123');
    expect(result.all.filter((c) => c.check === 'secrets' && c.status === 'ok').map((c) => c.node)).toEqual(['master', 'slave-1']);

    // deploy puts the inventory's secrets back (it sees slave-2's .env differ).
    const fix = await cli(['deploy', inventory]);
    expect(fix.code, fix.stderr).toBe(0);
    expect(fix.stdout).toMatch(/slave-2: recreated/);
    expect((await checks(inventory)).failed).toEqual([]);
  });

  describe('host keys', () => {
    let keyed: string;
    beforeAll(() => {
      keyed = labInventory((t) => t.replace('/var/lib/newapi-lab/ssh/known_hosts', 'known_hosts'));
      const env = labEnv();
      const known = readFileSync(env.LAB_KNOWN_HOSTS!, 'utf8').split('\n');
      // slave-1's line now carries the balancer's key: to the tool, slave-1's key changed.
      const lbKey = known.find((l) => l.startsWith('10.77.0.10 '))!.split(' ').slice(1).join(' ');
      const edited = known.map((l) => (l.startsWith('10.77.0.12 ') ? `10.77.0.12 ${lbKey}` : l));
      writeFileSync(join(dirname(keyed), 'known_hosts'), edited.join('\n'));
    });

    it('refuses a changed host key and names the node', async () => {
      const result = await checks(keyed);
      expect(result.code).toBe(1);
      expect(result.failed.map((c) => `${c.node} ${c.check}`)).toEqual(['slave-1 ssh']);
      expect(result.failed[0]?.detail).toMatch(/host key .*changed/i);
    });

    it('a deploy with a changed host key stops before any host changes', async () => {
      const hosts: LabHost[] = ['n1', 'n2', 'n3', 'lb'];
      const before = await Promise.all(hosts.map(hostFingerprint));
      const edited = labInventory((t) => t.replace('/var/lib/newapi-lab/ssh/known_hosts', join(dirname(keyed), 'known_hosts')).replace('timezone: UTC', 'timezone: Europe/Paris'));
      const r = await cli(['deploy', edited]);
      expect(r.code).toBe(1);
      expect(r.stderr).toMatch(/could not read every host, nothing was changed: slave-1: .*host key/i);
      expect(await Promise.all(hosts.map(hostFingerprint))).toEqual(before);
    });

    it('--accept-new-host-keys records an unknown key but never a changed one', async () => {
      const fresh = labInventory((t) => t.replace('/var/lib/newapi-lab/ssh/known_hosts', 'known_hosts'));
      const file = join(dirname(fresh), 'known_hosts');
      copyFileSync(join(dirname(keyed), 'known_hosts'), file);
      writeFileSync(file, readFileSync(file, 'utf8').split('\n').filter((l) => !l.startsWith('10.77.0.13 ')).join('\n'));
      const refused = await checks(fresh);
      expect(refused.failed.map((c) => `${c.node} ${c.check}`)).toEqual(['slave-1 ssh', 'slave-2 ssh']);
      const accepted = await cli(['check', '--json', '--accept-new-host-keys', fresh]);
      const failed = (JSON.parse(accepted.stdout) as { checks: Check[] }).checks.filter((c) => c.status === 'fail');
      expect(failed.map((c) => `${c.node} ${c.check}`)).toEqual(['slave-1 ssh']);
      expect(readFileSync(file, 'utf8')).toMatch(/^10\.77\.0\.13 ssh-ed25519 /m);
    });
  });

  describe('a host that is down', () => {
    it('stops the deploy before any host changes, naming the node', async () => {
      const down = labInventory((t) => t.replace('{ name: slave-2, host: 10.77.0.13 }', '{ name: slave-2, host: 10.77.0.13 }\n  - { name: slave-3, host: 10.77.0.19 }').replace('timezone: UTC', 'timezone: Europe/Paris'));
      const hosts: LabHost[] = ['n1', 'n2', 'n3', 'lb'];
      const before = await Promise.all(hosts.map(hostFingerprint));
      const r = await cli(['deploy', down]);
      expect(r.code).toBe(1);
      expect(r.stderr).toMatch(/could not read every host, nothing was changed: slave-3: cannot reach /);
      expect(r.stderr).toMatch(/hint: /);
      expect(await Promise.all(hosts.map(hostFingerprint))).toEqual(before);
    });
  });
});
