/**
 * deploy, status, dry-run and idempotency against the lab: real sshd, dockerd, registry,
 * MariaDB, Redis and nginx.
 */
import { execFile } from 'node:child_process';
import { readFileSync, writeFileSync } from 'node:fs';
import { promisify } from 'node:util';
import { beforeAll, describe, expect, it } from 'vitest';
import { cli, hitBalancer, hostExec, hostFingerprint, labEnv, labInventory, resetLab, startTimes, type LabHost } from '../support/lab.js';

const execFileP = promisify(execFile);

const CLUSTER_HOSTS: LabHost[] = ['n1', 'n2', 'n3'];

describe('deploy to the lab', () => {
  let inventory: string;

  beforeAll(async () => {
    await resetLab();
    inventory = labInventory();
  });

  it('deploys a master, two slaves and the balancer; every node answers through nginx', async () => {
    const r = await cli(['deploy', inventory]);
    expect(r.code, r.stderr).toBe(0);
    expect(r.stdout).toMatch(/deployed: 3 nodes changed, 0 unchanged, balancer reloaded/);
    // The master starts alone, before any slave (it runs the migrations): as the engines saw it.
    const started = await startTimes(CLUSTER_HOSTS);
    for (const slave of ['n2', 'n3'] as const) expect(Date.parse(started[slave]!), `${slave} started after the master`).toBeGreaterThan(Date.parse(started.n1!));
    expect(r.stderr).toMatch(/Start slave-1 on v0\.9\.20 once master is healthy: starting the prepared container/);

    const hits = await hitBalancer(30);
    expect(hits.statuses.every((s) => s === 200)).toBe(true);
    expect(Object.keys(hits.hosts).sort()).toEqual(['master', 'slave-1', 'slave-2']);
    expect(Object.keys(hits.versions)).toEqual(['v0.9.20']);
  });

  it('status --json agrees with what the balancer shows', async () => {
    const r = await cli(['status', '--json', inventory]);
    expect(r.code, r.stderr).toBe(0);
    const s = JSON.parse(r.stdout) as { nodes: { name: string; role: string; version: string; healthy: boolean; balancer: string; container: string; deployedImage: string }[]; lock: unknown };
    expect(s.nodes.map((n) => [n.name, n.role, n.version, n.healthy, n.balancer, n.container])).toEqual([
      ['master', 'master', 'v0.9.20', true, 'in', 'running'],
      ['slave-1', 'slave', 'v0.9.20', true, 'in', 'running'],
      ['slave-2', 'slave', 'v0.9.20', true, 'in', 'running'],
    ]);
    expect(s.nodes.every((n) => n.deployedImage.endsWith(':v0.9.20'))).toBe(true);
    expect(s.lock).toBeNull();
  });

  it('writes the remote layout: .env 0600, state, audit, NODE_TYPE only on slaves', async () => {
    const master = await hostExec('n1', 'stat -c "%a %n" /opt/new-api/.env /opt/new-api/docker-compose.yml /opt/new-api/.newapi-cluster; grep -c NODE_TYPE /opt/new-api/.env || true; cat /opt/new-api/.newapi-cluster/state.json; wc -l < /opt/new-api/.newapi-cluster/audit.log');
    expect(master).toMatch(/^600 \/opt\/new-api\/\.env$/m);
    expect(master).toMatch(/^644 \/opt\/new-api\/docker-compose\.yml$/m);
    expect(master).toMatch(/^700 \/opt\/new-api\/\.newapi-cluster$/m);
    expect(master).toMatch(/^0$/m); // no NODE_TYPE on the master
    expect(master).toContain('"image": "10.77.0.1:5000/calciumion/new-api:v0.9.20"');
    expect(await hostExec('n2', 'grep NODE_TYPE /opt/new-api/.env')).toBe('NODE_TYPE=slave\n');
    const conf = await hostExec('lb', 'cat /etc/nginx/conf.d/new-api.conf');
    expect(conf).toContain('proxy_buffering off;');
    expect(conf).toMatch(/server 10\.77\.0\.12:3000 weight=1/);
  });

  it('a second deploy with nothing changed restarts nothing', async () => {
    const before = await startTimes(CLUSTER_HOSTS);
    const fingerprints = await Promise.all([...CLUSTER_HOSTS, 'lb' as const].map(hostFingerprint));
    const r = await cli(['deploy', inventory]);
    expect(r.code, r.stderr).toBe(0);
    expect(r.stdout).toMatch(/nothing to do, 3 nodes and the balancer already match \(\d+\.\d s, no lock taken\)/);
    expect(await startTimes(CLUSTER_HOSTS)).toEqual(before);
    // Only the audit-free, state-free parts are compared: nothing at all was rewritten.
    expect(await Promise.all([...CLUSTER_HOSTS, 'lb' as const].map(hostFingerprint))).toEqual(fingerprints);
  });

  it('--dry-run shows the diff of a change, redacted, and leaves every host byte-identical', async () => {
    const edited = readFileSync(inventory, 'utf8').replace('{ name: slave-2, host: 10.77.0.13 }', '{ name: slave-2, host: 10.77.0.13, weight: 4 }').replace('timezone: UTC', 'timezone: Asia/Shanghai');
    writeFileSync(inventory, edited);
    const hosts: LabHost[] = [...CLUSTER_HOSTS, 'lb'];
    const before = await Promise.all(hosts.map(hostFingerprint));
    // A new session secret too: the diff must show that it changes, never what it is.
    const r = await cli(['deploy', '--dry-run', inventory], { env: { SESSION_SECRET: 'e2eRotatedSessionSecret0123456789abcdefXYZ' } });
    expect(r.code, r.stderr).toBe(0);
    expect(r.stdout).toContain('-TZ=UTC');
    expect(r.stdout).toContain('+TZ=Asia/Shanghai');
    expect(r.stdout).toMatch(/^-SESSION_SECRET=<secret #[0-9a-f]{8}>$/m);
    expect(r.stdout).toMatch(/^\+SESSION_SECRET=<secret #[0-9a-f]{8}>$/m);
    expect(r.stdout).toMatch(/\+\s+server 10\.77\.0\.13:3000 weight=4/);
    expect(r.stdout).toContain('would drain and recreate the container: .env changed');
    expect(r.stdout).toContain('dry run: nothing was changed');
    expect(await Promise.all(hosts.map(hostFingerprint))).toEqual(before);
  });

  it('applies that change by draining and recreating each node in turn', async () => {
    const r = await cli(['deploy', inventory]);
    expect(r.code, r.stderr).toBe(0);
    expect(r.stderr).toMatch(/Drain slave-1 from the balancer/);
    expect(r.stderr).toMatch(/Put master back in the balancer/);
    expect(await hostExec('n3', 'grep ^TZ= /opt/new-api/.env')).toBe('TZ=Asia/Shanghai\n');
    expect(await hostExec('lb', 'cat /etc/nginx/conf.d/new-api.conf')).toMatch(/server 10\.77\.0\.13:3000 weight=4 max_fails=3 fail_timeout=2s;/);
    // Each deploy that passed its gate is a release: the earlier one, with its files, is kept for rollback.
    expect(await hostExec('n2', 'cd /opt/new-api/.newapi-cluster/releases && ls | wc -l && grep -h ^TZ= */.env | sort')).toBe('2\nTZ=Asia/Shanghai\nTZ=UTC\n');
    expect(await hostExec('n2', 'stat -c %a /opt/new-api/.newapi-cluster/releases/*/.env | sort -u')).toBe('600\n');
  });

  it('logs prefixes every line with its node', async () => {
    const r = await cli(['logs', inventory, '--tail', '3']);
    expect(r.code, r.stderr).toBe(0);
    const prefixes = new Set(r.stdout.split('\n').filter(Boolean).map((l) => l.split('|')[0]!.trim()));
    expect([...prefixes].sort()).toEqual(['master', 'slave-1', 'slave-2']);
    const one = await cli(['logs', inventory, '--node', 'slave-2', '--tail', '2']);
    expect(one.stdout.split('\n').filter(Boolean).every((l) => l.startsWith('slave-2 |'))).toBe(true);
  });

  it('a lock left by a dead operator blocks with exit 3 until lock release --force', async () => {
    const env = labEnv();
    const holder = JSON.stringify({ id: 'x', operator: 'alice@laptop', command: 'upgrade --rolling --to v0.9.99', pid: 4242, since: new Date().toISOString() });
    await execFileP('redis-cli', ['-h', '10.77.0.1', '--no-auth-warning', '-a', env.REDIS_PASSWORD!, 'SET', 'newapi-cluster:lab:lock', holder, 'PX', '600000']);
    const status = await cli(['lock', 'status', inventory]);
    expect(status.stdout).toMatch(/^cluster lab is locked by alice@laptop \(pid 4242\) running "upgrade --rolling --to v0\.9\.99" since .* expires in \d+ s unless renewed$/m);
    // A deploy with nothing to do only looks, and takes no lock; one with work to do is blocked.
    const noop = await cli(['deploy', inventory]);
    expect(noop.code, noop.stderr).toBe(0);
    expect(noop.stdout).toMatch(/nothing to do, .*no lock taken/);
    const changed = inventory.replace(/\.yaml$/, '.paris.yaml');
    writeFileSync(changed, readFileSync(inventory, 'utf8').replace(/timezone: \S+/, 'timezone: Europe/Paris'));
    const blocked = await cli(['deploy', changed]);
    expect(blocked.code).toBe(3);
    expect(blocked.stderr).toContain('cluster lab is locked by alice@laptop (pid 4242) running "upgrade --rolling --to v0.9.99"');
    expect(await hostExec('n1', 'grep ^TZ= /opt/new-api/.env')).not.toBe('TZ=Europe/Paris\n');
    const noForce = await cli(['lock', 'release', inventory]);
    expect(noForce.code).toBe(2);
    const released = await cli(['lock', 'release', '--force', inventory]);
    expect(released.code).toBe(0);
    expect(released.stdout).toMatch(/^released the lock of alice@laptop/m);
    expect((await cli(['deploy', inventory])).code).toBe(0);
  });

  it('a deploy that changes the image runs the new version\'s migrations before any slave moves (issue #4144)', async () => {
    writeFileSync(inventory, readFileSync(inventory, 'utf8').replace('new-api:v0.9.20', 'new-api:v0.9.21'));
    const r = await cli(['deploy', inventory]);
    expect(r.code, r.stderr).toBe(0);
    const migrate = r.stderr.indexOf('Run the v0.9.21 migrations once on master');
    expect(migrate).toBeGreaterThan(-1);
    expect(migrate).toBeLessThan(r.stderr.indexOf('Drain slave-1'));
    const hits = await hitBalancer(12);
    expect(Object.keys(hits.versions)).toEqual(['v0.9.21']);
  });

  it('deploy --only an unknown node is bad input (exit 2) and touches nothing', async () => {
    const before = await hostFingerprint('n1');
    const r = await cli(['deploy', inventory, '--only', 'slave-1,nope']);
    expect(r.code).toBe(2);
    expect(r.stderr).toContain('--only: no node named "nope"');
    expect(await hostFingerprint('n1')).toBe(before);
  });
});
