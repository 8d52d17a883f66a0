/**
 * The edge operators run, against the lab: HTTPS on the balancer from certificate files and from
 * ACME (Debian's pebble), a balancer pair holding a floating address with keepalived (the second
 * balancer's nginx and keepalived started by the tool), upgrades through the vip and over HTTPS
 * with zero failed requests, the vip holder's link dropped, and hooks for an external balancer.
 */
import { execFileSync } from 'node:child_process';
import { mkdtempSync, readFileSync, writeFileSync } from 'node:fs';
import { request as httpRequest } from 'node:http';
import { request as httpsRequest } from 'node:https';
import { tmpdir } from 'node:os';
import { dirname, join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { LoadGenerator, type LoadReport } from '../support/load.js';
import { cli, hostExec, killClis, LB, labEnv, labInventory, linkDown, linkUp, resetLab, vipHolder, waitVipHolder, withFault } from '../support/lab.js';

function expectNoFailures(report: LoadReport, min = 20): void {
  expect(report.failures, JSON.stringify(report.failures.slice(0, 5))).toEqual([]);
  expect(report.sent).toBeGreaterThan(min);
}

/** One HTTPS GET with SNI, trusting `ca`. */
function httpsGet(host: string, servername: string, ca: string, path = '/api/status'): Promise<{ status: number; body: string; alpn?: string }> {
  return new Promise((resolve, reject) => {
    const req = httpsRequest({ host, port: 443, path, servername, ca, agent: false, timeout: 10_000 }, (res) => {
      let body = '';
      res.setEncoding('utf8');
      res.on('data', (c: string) => (body += c));
      res.on('end', () => resolve({ status: res.statusCode ?? 0, body }));
    });
    req.on('timeout', () => req.destroy(new Error('timeout')));
    req.on('error', reject);
    req.end();
  });
}

function httpGet(host: string, path = '/api/status', headers: Record<string, string> = {}): Promise<{ status: number; location?: string }> {
  return new Promise((resolve, reject) => {
    const req = httpRequest({ host, port: 80, path, headers, agent: false, timeout: 10_000 }, (res) => {
      res.resume();
      res.on('end', () => resolve({ status: res.statusCode ?? 0, ...(res.headers.location ? { location: res.headers.location } : {}) }));
    });
    req.on('timeout', () => req.destroy(new Error('timeout')));
    req.on('error', reject);
    req.end();
  });
}

/** A new certificate for the lab's TLS name, signed by the lab's CA (for "a changed certificate"). */
function freshCertificate(dir: string, name: string): { cert: string; key: string } {
  const ca = '/var/lib/newapi-lab/tls';
  const key = join(dir, 'new-key.pem');
  const csr = join(dir, 'new.csr');
  const cert = join(dir, 'new-cert.pem');
  const ext = join(dir, 'ext.cnf');
  writeFileSync(ext, `subjectAltName = DNS:${name}, IP:10.77.0.10, IP:10.77.0.8, IP:10.77.0.100\nextendedKeyUsage = serverAuth\n`);
  execFileSync('openssl', ['req', '-new', '-newkey', 'rsa:2048', '-nodes', '-subj', `/CN=${name}`, '-keyout', key, '-out', csr], { stdio: 'ignore' });
  execFileSync('openssl', ['x509', '-req', '-sha256', '-days', '400', '-in', csr, '-CA', `${ca}/ca.pem`, '-CAkey', `${ca}/ca.key`, '-set_serial', `0x${Date.now().toString(16)}`, '-extfile', ext, '-out', cert], { stdio: 'ignore' });
  return { cert, key };
}

describe('HTTPS on the balancer from certificate files', () => {
  let inventory: string;
  let env: Record<string, string>;
  let ca: string;

  beforeAll(async () => {
    await resetLab();
    env = labEnv();
    ca = readFileSync(env.LAB_TLS_CA_FILE!, 'utf8');
    inventory = labInventory((t) =>
      t.replace('  serverName: _\n', `  serverName: ${env.LAB_TLS_NAME}\n  tls: { certificateFile: ${env.LAB_TLS_CERT_FILE}, keyFile: ${env.LAB_TLS_KEY_FILE} }\n`),
    );
    const r = await cli(['deploy', inventory]);
    expect(r.code, r.stderr).toBe(0);
  });

  afterAll(async () => {
    await killClis();
  });

  it('serves HTTPS (TLS 1.2+, HTTP/2 offered), redirects HTTP with 308, keeps the key 0600 root', async () => {
    const s = await httpsGet(LB, env.LAB_TLS_NAME!, ca);
    expect(s.status).toBe(200);
    expect(JSON.parse(s.body)).toMatchObject({ success: true });
    const plain = await httpGet(LB, '/v1/models');
    expect(plain.status).toBe(308);
    expect(plain.location).toBe(`https://${LB}/v1/models`);
    expect(await hostExec('lb', 'stat -c "%a %U" /etc/nginx/newapi-cluster/lab/privkey.pem')).toBe('600 root\n');
    const conf = await hostExec('lb', 'cat /etc/nginx/conf.d/new-api.conf');
    expect(conf).toContain('listen 443 ssl http2;');
    expect(conf).toContain('ssl_protocols TLSv1.2 TLSv1.3;');
    expect(conf).toContain('proxy_buffering off;');
    // TLS 1.1 is refused.
    expect(() => execFileSync('openssl', ['s_client', '-connect', `${LB}:443`, '-servername', env.LAB_TLS_NAME!, '-tls1_1'], { input: '', stdio: ['pipe', 'ignore', 'ignore'], timeout: 10_000 })).toThrow();
  });

  it('check reports the certificate: its expiry and that it covers serverName', async () => {
    const r = await cli(['check', inventory]);
    expect(r.code, r.stdout).toBe(0);
    expect(r.stdout).toMatch(new RegExp(`^balancer\\s+tls\\s+ok\\s+expires \\d{4}-\\d\\d-\\d\\d \\(\\d+ days\\); covers ${env.LAB_TLS_NAME!.replace(/\./g, '\\.')}$`, 'm'));
  });

  it('a certificate that does not match its key, or expired, is bad input (exit 2) before any host changes', async () => {
    const mismatched = labInventory(() => readFileSync(inventory, 'utf8').replace(env.LAB_TLS_KEY_FILE!, env.LAB_TLS_OTHER_KEY_FILE!));
    const r = await cli(['deploy', mismatched]);
    expect(r.code).toBe(2);
    expect(r.stderr).toContain(`loadBalancer.tls.keyFile: ${env.LAB_TLS_OTHER_KEY_FILE} is not the private key of ${env.LAB_TLS_CERT_FILE}`);
    const expired = labInventory(() => readFileSync(inventory, 'utf8').replace(env.LAB_TLS_CERT_FILE!, env.LAB_TLS_EXPIRED_CERT_FILE!).replace(env.LAB_TLS_KEY_FILE!, env.LAB_TLS_EXPIRED_KEY_FILE!));
    const e = await cli(['deploy', expired]);
    expect(e.code).toBe(2);
    expect(e.stderr).toMatch(/loadBalancer\.tls\.certificateFile: .* expired on \d{4}-\d\d-\d\d/);
  });

  it('an upgrade over HTTPS with SSE streams loses nothing; a changed certificate reloads nginx without dropping streams', async () => {
    const load = new LoadGenerator({ host: LB, port: 443, workers: 6, maxDurationMs: 180_000, maxRequests: 20_000, pauseMs: 50, tls: { ca, servername: env.LAB_TLS_NAME! }, keepAlive: true });
    const r = await cli(['upgrade', '--rolling', '--to', 'v0.9.21', inventory]);
    expect(r.code, r.stderr).toBe(0);
    const dir = mkdtempSync(join(tmpdir(), 'newapi-cert-'));
    const fresh = freshCertificate(dir, env.LAB_TLS_NAME!);
    writeFileSync(inventory, readFileSync(inventory, 'utf8').replace(env.LAB_TLS_CERT_FILE!, fresh.cert).replace(env.LAB_TLS_KEY_FILE!, fresh.key));
    const d = await cli(['deploy', inventory]);
    const report = await load.stop();
    expect(d.code, d.stderr).toBe(0);
    expect(d.stderr).toMatch(/certificate uploaded to every balancer/);
    expectNoFailures(report);
    const served = execFileSync('openssl', ['s_client', '-connect', `${LB}:443`, '-servername', env.LAB_TLS_NAME!], { input: '', encoding: 'utf8', stdio: ['pipe', 'pipe', 'ignore'], timeout: 10_000 });
    const pem = /-----BEGIN CERTIFICATE-----[\s\S]*?-----END CERTIFICATE-----/.exec(served)?.[0];
    expect(pem?.replace(/\s/g, '')).toBe(/-----BEGIN CERTIFICATE-----[\s\S]*?-----END CERTIFICATE-----/.exec(readFileSync(fresh.cert, 'utf8'))?.[0].replace(/\s/g, ''));
  });
});

describe('HTTPS from ACME (pebble)', () => {
  let inventory: string;
  let env: Record<string, string>;

  beforeAll(async () => {
    await resetLab();
    env = labEnv();
    inventory = labInventory((t) =>
      t.replace('  serverName: _\n', `  serverName: ${env.LAB_TLS_NAME}\n  tls:\n    acme: { email: ops@lab.test, directoryUrl: "${env.LAB_ACME_DIRECTORY}", caFile: ${env.LAB_ACME_CA_FILE} }\n`),
    );
  });

  it('deploy obtains a certificate through the balancer\'s webroot and serves it; tls renew leaves a valid one alone; --force renews under load', async () => {
    const r = await cli(['deploy', inventory]);
    expect(r.code, r.stderr).toBe(0);
    expect(r.stderr).toMatch(/certificate obtained for /);
    const root = execFileSync('curl', ['-fsS', '--cacert', env.LAB_ACME_CA_FILE!, env.LAB_ACME_ROOTS_URL!], { encoding: 'utf8' });
    const s = await httpsGet(LB, env.LAB_TLS_NAME!, root);
    expect(s.status).toBe(200);
    expect(readFileSync(join(dirname(inventory), '.gitignore'), 'utf8')).toMatch(/\.newapi-cluster-acme/);

    const again = await cli(['tls', 'renew', inventory]);
    expect(again.code, again.stderr).toBe(0);
    expect(again.stdout).toContain('certificate not due: nothing changed');

    const load = new LoadGenerator({ host: LB, port: 443, workers: 4, maxDurationMs: 60_000, maxRequests: 5_000, pauseMs: 50, tls: { ca: root, servername: env.LAB_TLS_NAME! }, keepAlive: true });
    await new Promise((res) => setTimeout(res, 1_000));
    const forced = await cli(['tls', 'renew', '--force', inventory]);
    await new Promise((res) => setTimeout(res, 2_000));
    const report = await load.stop();
    expect(forced.code, forced.stderr).toBe(0);
    expect(forced.stdout).toContain('certificate renewed and uploaded to every balancer; nginx reloaded');
    expectNoFailures(report, 5);
  });
});

describe('a balancer pair with a floating address', () => {
  let inventory: string;
  let env: Record<string, string>;

  beforeAll(async () => {
    await resetLab();
    env = labEnv();
    inventory = labInventory((t) => t.replace('loadBalancer:\n  host: 10.77.0.10\n', `loadBalancer:\n  hosts: [10.77.0.10, ${env.LAB_LB2_HOST}]\n  vip: ${env.LAB_VIP}\n`));
  });

  afterAll(async () => {
    await linkUp('lb');
    await killClis();
  });

  it('deploy starts nginx on the second balancer and keepalived on both; the vip answers; status shows its holder', async () => {
    expect(await hostExec('lb2', '[ -s /run/nginx.pid ] && echo running || echo stopped')).toBe('stopped\n');
    const r = await cli(['deploy', inventory]);
    expect(r.code, r.stderr).toBe(0);
    expect(await hostExec('lb2', '[ -s /run/nginx.pid ] && kill -0 $(cat /run/nginx.pid) && echo running')).toBe('running\n');
    expect(await hostExec('lb', 'cat /etc/nginx/conf.d/new-api.conf')).toBe(await hostExec('lb2', 'cat /etc/nginx/conf.d/new-api.conf'));
    expect(await waitVipHolder('lb', { timeoutMs: 15_000 })).toBeLessThan(15_000);
    const res = await httpGet(env.LAB_VIP!);
    expect(res.status).toBe(200);
    const s = JSON.parse((await cli(['status', '--json', inventory])).stdout) as { vip: { address: string; holder: string } };
    expect(s.vip).toEqual({ address: env.LAB_VIP, holder: 'balancer-1' });
  });

  it('an upgrade through the vip, keep-alive clients, POST and SSE: zero failed requests, no nginx reload', async () => {
    // A reload replaces nginx's workers: the same workers before and after means no reload.
    const workers = async () => (await Promise.all((['lb', 'lb2'] as const).map((h) => hostExec(h, 'pgrep -P "$(cat /run/nginx.pid)" | sort')))).join('|');
    const before = await workers();
    const load = new LoadGenerator({ host: env.LAB_VIP!, port: 80, workers: 6, maxDurationMs: 180_000, maxRequests: 20_000, pauseMs: 20, keepAlive: true });
    const r = await cli(['upgrade', '--rolling', '--to', 'v0.9.21', inventory]);
    const report = await load.stop();
    expect(r.code, r.stderr).toBe(0);
    expectNoFailures(report);
    expect(await workers()).toBe(before);
    // Drains were firewall rules, now gone on both balancers.
    for (const h of ['lb', 'lb2'] as const) expect(await hostExec(h, 'iptables -S OUTPUT | grep -c newapi-cluster || true')).toBe('0\n');
  });

  it("the vip holder's link drops under load: the vip moves to the other balancer within seconds, and back when it returns", async () => {
    expect(await vipHolder()).toBe('lb');
    const load = new LoadGenerator({ host: env.LAB_VIP!, port: 80, workers: 6, maxDurationMs: 60_000, maxRequests: 20_000, pauseMs: 20 });
    await new Promise((r) => setTimeout(r, 1_000));
    const moved = await withFault(
      () => linkDown('lb'),
      () => linkUp('lb'),
      async () => waitVipHolder('lb2', { timeoutMs: 10_000 }),
    );
    // After the move, the vip answers again.
    const deadline = Date.now() + 10_000;
    let ok = false;
    while (!ok && Date.now() < deadline) ok = (await httpGet(env.LAB_VIP!).catch(() => ({ status: 0 }))).status === 200;
    // The load goes on through the new holder.
    await new Promise((r) => setTimeout(r, 5_000));
    const report = await load.stop();
    expect(ok).toBe(true);
    expect(moved).toBeLessThan(3_000);
    // Lost: only requests of the failover window (the bench reports how many); every later one succeeded.
    const lastFailure = Math.max(0, ...report.failures.map((f) => f.at));
    expect(report.ok).toBeGreaterThan(20);
    expect(report.failed).toBeLessThan(report.ok);
    expect(lastFailure).toBeLessThan(1_000 + moved + 3_000);
    expect(await waitVipHolder('lb', { timeoutMs: 15_000 })).toBeLessThan(15_000);
  });
});

describe('hooks for an external balancer', () => {
  it('calls the hooks for every node in rollout order with the node\'s facts and no secret', async () => {
    await resetLab();
    const env = labEnv();
    const dir = mkdtempSync(join(tmpdir(), 'newapi-hooks-'));
    const log = join(dir, 'calls.log');
    writeFileSync(join(dir, 'hook.sh'), `#!/bin/sh\necho "$NEWAPI_PHASE $NEWAPI_NODE $NEWAPI_HOST:$NEWAPI_PORT $NEWAPI_ROLE $NEWAPI_VERSION $NEWAPI_CLUSTER" >> ${log}\nenv >> ${log}.env\necho "told the cloud about $NEWAPI_NODE"\n`, { mode: 0o755 });
    const inventory = labInventory((t) =>
      t
        .replace(/loadBalancer:\n(  .*\n)+/, 'loadBalancer:\n  type: none\n')
        .replace('minReadySeconds: 1', `minReadySeconds: 1\n  hooks: { beforeDrain: ${dir}/hook.sh, afterReady: ${dir}/hook.sh, beforeUpgrade: ${dir}/hook.sh, afterUpgrade: ${dir}/hook.sh }`),
    );
    const d = await cli(['deploy', inventory]);
    expect(d.code, d.stderr).toBe(0);
    writeFileSync(log, '');
    const r = await cli(['upgrade', '--rolling', '--to', 'v0.9.21', inventory]);
    expect(r.code, r.stderr).toBe(0);
    expect(r.stderr).toContain('[beforeDrain] told the cloud about slave-1');
    const calls = readFileSync(log, 'utf8').trim().split('\n');
    const expected = ['slave-1 10.77.0.12:3000 slave', 'slave-2 10.77.0.13:3000 slave', 'master 10.77.0.11:3000 master'].flatMap((n) =>
      ['beforeDrain', 'beforeUpgrade', 'afterUpgrade', 'afterReady'].map((phase) => `${phase} ${n} v0.9.21 lab`),
    );
    expect(calls).toEqual(expected);
    const hookEnv = readFileSync(`${log}.env`, 'utf8');
    for (const secret of [env.SESSION_SECRET!, env.CRYPTO_SECRET!, env.MYSQL_PASSWORD!, env.REDIS_PASSWORD!]) expect(hookEnv).not.toContain(secret);

    // A beforeDrain that fails stops the run before that node is touched.
    writeFileSync(join(dir, 'hook.sh'), '#!/bin/sh\n[ "$NEWAPI_PHASE" = beforeDrain ] && { echo "cloud API said no" >&2; exit 7; }\nexit 0\n', { mode: 0o755 });
    const started = await hostExec('n2', "docker inspect --format '{{.State.StartedAt}}' lab-new-api");
    const f = await cli(['upgrade', '--rolling', '--to', 'v0.9.22', inventory]);
    expect(f.code).toBe(1);
    expect(f.stderr).toContain('slave-1: hook beforeDrain failed (exit 7): cloud API said no');
    expect(await hostExec('n2', "docker inspect --format '{{.State.StartedAt}}' lab-new-api")).toBe(started);
  });
});

