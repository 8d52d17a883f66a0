/**
 * Test helpers for the end-to-end suites: the lab's facts, commands inside lab hosts, a clean
 * slate between suites, faults (a host losing its network, Redis crashing), and the CLI run as a
 * real process — every run checked for secrets, bounded in time, and killable by killClis().
 */
import { execFile, spawn, type ChildProcess } from 'node:child_process';
import { existsSync, mkdtempSync, readFileSync, writeFileSync } from 'node:fs';
import { request as httpRequest } from 'node:http';
import { isIPv4 } from 'node:net';
import { tmpdir } from 'node:os';
import { join, resolve } from 'node:path';
import { parseEnv, promisify } from 'node:util';

const execFileP = promisify(execFile);
export const ROOT = resolve(import.meta.dirname, '../..');
export const LAB_SH = join(ROOT, 'test/lab/lab.sh');
export const LAB_ENV_FILE = '/var/lib/newapi-lab/lab.env';
export const LB = '10.77.0.10';
/** The second balancer: nginx and keepalived installed but NOT started (the tool must start them). */
export const LB2 = '10.77.0.8';
/** The floating address reserved for tests (keepalived on lb/lb2; /24 on the lab bridge). */
export const VIP = '10.77.0.100';
export const BALANCER_HOSTS = { lb: LB, lb2: LB2 } as const;
export type BalancerHost = keyof typeof BALANCER_HOSTS;
export const NODE_HOSTS = { n1: '10.77.0.11', n2: '10.77.0.12', n3: '10.77.0.13', n4: '10.77.0.14', n5: '10.77.0.15', n6: '10.77.0.16' } as const;
export type LabHost = keyof typeof NODE_HOSTS | BalancerHost;
/** What pebble-challtestsrv answers for every name unless a test changes it (lb). */
export const ACME_DEFAULT_IP = LB;
/** The jump host (sshd only). n6 (BEHIND_BASTION_HOST) accepts SSH only from it. */
export const BASTION = '10.77.0.9';
export const BEHIND_BASTION_HOST = NODE_HOSTS.n6;
/** A non-root user with passwordless sudo; only SUDO_HOST's sshd lets it in. */
export const SUDO_USER = 'newapi-deploy';
export const SUDO_HOST = NODE_HOSTS.n5;
/** Every lab host, the bastion included (it has sshd and nothing else: no docker, no nginx). */
export type AnyLabHost = LabHost | 'bastion';
/** Default bound of one CLI run (below the e2e project's 300 s test timeout). */
export const CLI_TIMEOUT_MS = 240_000;
/** Default bound of a withFault body: the fault is undone before the test's own 300 s timeout. */
export const FAULT_BODY_TIMEOUT_MS = 270_000;

/** The lab's environment. A suite that needs the lab fails here, loudly, when it is not up. */
export function labEnv(): Record<string, string> {
  if (!existsSync(LAB_ENV_FILE)) {
    throw new Error(`the lab is not up (${LAB_ENV_FILE} is missing): run bash test/lab/lab.sh up`);
  }
  return parseEnv(readFileSync(LAB_ENV_FILE, 'utf8')) as Record<string, string>;
}

/** Values that must never appear in any output of any test (the lab's test TLS private keys included). */
export function labSecrets(env = labEnv()): string[] {
  return [env.SESSION_SECRET, env.CRYPTO_SECRET, env.MYSQL_PASSWORD, env.REDIS_PASSWORD, env.SQL_DSN, env.REDIS_CONN_STRING, ...tlsKeyLines(env)].filter((s): s is string => !!s && s.length >= 4);
}

/** A line from the middle of each test TLS private key: a key printed whole or in part shows up. */
function tlsKeyLines(env: Record<string, string>): string[] {
  const out: string[] = [];
  for (const file of [env.LAB_TLS_KEY_FILE, env.LAB_TLS_EXPIRED_KEY_FILE, env.LAB_TLS_OTHER_KEY_FILE]) {
    if (!file) continue;
    try {
      const body = readFileSync(file, 'utf8').split('\n').filter((l) => /^[A-Za-z0-9+/=]{64}$/.test(l));
      if (body.length > 2) out.push(body[Math.floor(body.length / 2)]!);
    } catch {
      // not readable here (lab down, or not root): nothing to look for
    }
  }
  return out;
}

export async function hostExec(host: AnyLabHost, script: string, opts: { timeoutMs?: number } = {}): Promise<string> {
  const { stdout } = await execFileP('bash', [LAB_SH, 'exec', host, '--', 'sh', '-c', script], {
    maxBuffer: 16 * 1024 * 1024,
    ...(opts.timeoutMs ? { timeout: opts.timeoutMs, killSignal: 'SIGKILL' as const } : {}),
  });
  return stdout;
}

/** Runs a lab.sh sub-command, bounded; its stderr is in the error when it fails. */
async function labSh(args: string[], timeoutMs: number): Promise<string> {
  try {
    const { stdout } = await execFileP('bash', [LAB_SH, ...args], { timeout: timeoutMs, killSignal: 'SIGKILL' });
    return stdout;
  } catch (e) {
    const err = e as { killed?: boolean; stderr?: string; message?: string };
    const why = err.killed ? `no answer within ${timeoutMs} ms` : (err.stderr?.trim() || err.message || String(e));
    throw new Error(`lab.sh ${args.join(' ')} failed: ${why}`);
  }
}

/** The host's veth goes down: the server loses its network (connections hang, as in real life). */
export async function linkDown(host: AnyLabHost): Promise<void> {
  await labSh(['link', host, 'down'], 10_000);
}

/** The host's veth comes back up. Safe to call when it is up already. */
export async function linkUp(host: AnyLabHost): Promise<void> {
  await labSh(['link', host, 'up'], 10_000);
}

/**
 * Redis crashes (SIGKILL; it runs with save '', so every key is lost) and comes back `seconds`
 * later with the same config. Resolves once it answers PING again.
 */
export async function restartRedis(seconds = 1): Promise<void> {
  await labSh(['redis-restart', String(seconds)], Math.ceil(seconds * 1000) + 25_000);
}

/** Redis crashes and stays down (every key is lost). Undo with startRedis(). */
export async function stopRedis(): Promise<void> {
  await labSh(['redis-stop'], 15_000);
}

/** Redis back up (same config, empty); resolves once it answers PING. A no-op when it is up. */
export async function startRedis(): Promise<void> {
  await labSh(['redis-start'], 20_000);
}

/**
 * Injects a fault, runs the body, and always undoes the fault in a finally: when the body
 * returns, throws, or runs past opts.timeoutMs (default FAULT_BODY_TIMEOUT_MS; the body is then
 * left running, its CLIs bounded by their own timeouts or killClis()). The undo never waits on a
 * CLI. When both the body and the undo fail, the error names both.
 */
export async function withFault<T>(inject: () => Promise<void>, undo: () => Promise<void>, body: () => Promise<T>, opts: { timeoutMs?: number } = {}): Promise<T> {
  const timeoutMs = opts.timeoutMs ?? FAULT_BODY_TIMEOUT_MS;
  let timer: NodeJS.Timeout | undefined;
  let failure: { error: unknown } | undefined;
  try {
    await inject();
    const bound = new Promise<never>((_, reject) => {
      timer = setTimeout(() => reject(new Error(`withFault: the body did not finish within ${timeoutMs} ms`)), timeoutMs);
    });
    return await Promise.race([body(), bound]);
  } catch (error) {
    failure = { error };
    throw error;
  } finally {
    clearTimeout(timer);
    try {
      await undo();
    } catch (undoError) {
      if (!failure) throw undoError;
      const msg = (e: unknown) => (e instanceof Error ? e.message : String(e));
      throw new AggregateError([failure.error, undoError], `${msg(failure.error)}\n(and undoing the fault failed too: ${msg(undoError)})`);
    }
  }
}

export async function labStatusUp(): Promise<void> {
  try {
    await execFileP('bash', [LAB_SH, 'status'], { timeout: 60_000, killSignal: 'SIGKILL' });
  } catch (e) {
    throw new Error(`the lab is not fully up: run bash test/lab/lab.sh up\n${(e as { stdout?: string }).stdout ?? ''}`);
  }
}

/**
 * Which balancer holds the vip (VIP): 'lb', 'lb2' or 'none'. Throws on a split brain (both hold it),
 * naming it. One look; poll with waitVipHolder().
 */
export async function vipHolder(): Promise<'lb' | 'lb2' | 'none'> {
  const out = (await labSh(['vip-holder'], 10_000)).trim();
  if (out === 'lb' || out === 'lb2' || out === 'none') return out;
  throw new Error(`lab.sh vip-holder printed ${JSON.stringify(out)}`);
}

/**
 * Polls vipHolder() (every 100 ms) until it is `want`; resolves with the milliseconds it took.
 * A split brain seen on the way is not an error (it can last an instant while the vip moves);
 * rejects past timeoutMs (default 15 s), naming the last holder seen.
 */
export async function waitVipHolder(want: 'lb' | 'lb2' | 'none', opts: { timeoutMs?: number } = {}): Promise<number> {
  const timeoutMs = opts.timeoutMs ?? 15_000;
  const t0 = Date.now();
  let last = '?';
  for (;;) {
    try {
      last = await vipHolder();
    } catch (e) {
      last = e instanceof Error && e.message.includes('split brain') ? 'both (split brain)' : `error: ${e instanceof Error ? e.message : String(e)}`;
    }
    if (last === want) return Date.now() - t0;
    if (Date.now() - t0 > timeoutMs) throw new Error(`the vip ${VIP} is not on ${want} after ${timeoutMs} ms (holder: ${last})`);
    await new Promise((r) => setTimeout(r, 100));
  }
}

/**
 * pebble-challtestsrv answers every DNS name with `ip` from now on, so pebble validates HTTP-01
 * on that address's port 80 (lb by default: ACME_DEFAULT_IP; resetLab() sets it back).
 */
export async function setAcmeDefaultIp(ip: string): Promise<void> {
  // challtestsrv takes any string, and then answers no name at all
  if (!isIPv4(ip)) throw new Error(`setAcmeDefaultIp: ${JSON.stringify(ip)} is not an IPv4 address`);
  const base = labEnv().LAB_CHALLTESTSRV ?? 'http://10.77.0.1:8055';
  const res = await fetch(`${base}/set-default-ipv4`, { method: 'POST', body: JSON.stringify({ ip }), signal: AbortSignal.timeout(10_000) });
  if (!res.ok) throw new Error(`pebble-challtestsrv refused set-default-ipv4 ${ip}: ${res.status} ${await res.text()}`);
}

/**
 * Every lab host back to a fresh server: no CLI of this process still running, every link up,
 * Redis answering, no containers, no /opt/new-api, no balancer file, no newapi-cluster:* key in
 * Redis, schema reset. Both balancers (lab.sh reset-balancers): keepalived stopped and
 * /etc/keepalived emptied on lb and lb2, the vip on no interface, conf.d and
 * /etc/nginx/newapi-cluster* removed, iptables rules commented newapi-cluster… removed,
 * /var/lib/newapi-cluster emptied, nginx stopped on lb2 and reloaded on lb; the ACME DNS answers lb.
 */
export async function resetLab(): Promise<void> {
  await killClis();
  // undo what a previous test may have left: a host without network, Redis stopped. When the
  // lab itself is not up, labStatusUp's error (run lab.sh up) is the one reported.
  await Promise.all([labSh(['link', 'all', 'up'], 10_000), labSh(['redis-start'], 20_000)]).catch(async (e: unknown) => {
    await labStatusUp();
    throw e;
  });
  const env = labEnv();
  const redis = ['-h', env.LAB_REDIS_HOST ?? '10.77.0.1', '-p', env.LAB_REDIS_PORT ?? '6379', '--no-auth-warning', '-a', env.REDIS_PASSWORD!];
  const delKeys = "local n = 0 for _, k in ipairs(redis.call('KEYS', ARGV[1])) do n = n + redis.call('DEL', k) end return n";
  const bounded = { timeout: 30_000, killSignal: 'SIGKILL' as const };
  // the status check (about a second) runs beside the clean-up; its error comes first
  const [status, ...cleanup] = await Promise.allSettled([
    labStatusUp(),
    ...(Object.keys(NODE_HOSTS) as LabHost[]).map((h) =>
      hostExec(h, 'ids=$(docker ps -aq); [ -z "$ids" ] || docker rm -f $ids >/dev/null; rm -rf /opt/new-api', { timeoutMs: 120_000 }),
    ),
    labSh(['reset-balancers'], 30_000),
    execFileP('mariadb', ['-S', env.MYSQL_ROOT_SOCKET!, '-u', 'root', '-e', 'DROP TABLE IF EXISTS newapi.standin_schema'], bounded),
    execFileP('redis-cli', [...redis, 'EVAL', delKeys, '0', 'newapi-cluster:*'], bounded),
  ]);
  for (const r of [status, ...cleanup]) if (r?.status === 'rejected') throw r.reason;
}

export interface CliResult {
  code: number;
  stdout: string;
  stderr: string;
}

export interface CliOptions {
  env?: Record<string, string>;
  cwd?: string;
  /** Past this the CLI is SIGKILLed and the result rejects (default CLI_TIMEOUT_MS). */
  timeoutMs?: number;
}

/** Every CLI child started here that has not exited yet. */
const liveClis = new Set<ChildProcess>();
// never leave a CLI behind when the test process ends
process.once('exit', () => {
  for (const child of liveClis) child.kill('SIGKILL');
});

/** SIGKILLs every CLI started by cli()/startCli() that is still running; resolves once they have exited (at most timeoutMs). */
export async function killClis(timeoutMs = 10_000): Promise<void> {
  await Promise.all(
    [...liveClis].map(
      (child) =>
        new Promise<void>((done) => {
          if (child.exitCode !== null || child.signalCode !== null) {
            liveClis.delete(child);
            return done();
          }
          const timer = setTimeout(done, timeoutMs);
          child.once('exit', () => {
            clearTimeout(timer);
            done();
          });
          child.kill('SIGKILL');
        }),
    ),
  );
}

/** Runs the built CLI as an operator would, with the lab's environment; asserts no secret leaked. */
export async function cli(args: string[], opts: CliOptions = {}): Promise<CliResult> {
  const child = startCli(args, opts);
  return child.result;
}

export function startCli(args: string[], opts: CliOptions = {}): { child: ChildProcess; result: Promise<CliResult>; output: () => string } {
  const env = { ...labEnv(), ...opts.env };
  const timeoutMs = opts.timeoutMs ?? CLI_TIMEOUT_MS;
  const command = `newapi-cluster ${args.join(' ')}`;
  const child = spawn(process.execPath, [join(ROOT, 'bin/newapi-cluster.js'), ...args], {
    cwd: opts.cwd ?? ROOT,
    env: { PATH: process.env.PATH ?? '/usr/bin:/bin', HOME: process.env.HOME ?? '/root', CI: 'true', ...env },
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  liveClis.add(child);
  let stdout = '';
  let stderr = '';
  let both = ''; // interleaved, for the tail shown on a timeout
  child.stdout!.setEncoding('utf8');
  child.stderr!.setEncoding('utf8');
  child.stdout!.on('data', (c: string) => ((stdout += c), (both += c)));
  child.stderr!.on('data', (c: string) => ((stderr += c), (both += c)));
  const secrets = labSecrets(env);
  const result = new Promise<CliResult>((resolveResult, rejectResult) => {
    let settled = false;
    let grace: NodeJS.Timeout | undefined;
    const settle = (fn: () => void) => {
      if (settled) return;
      settled = true;
      clearTimeout(timer);
      clearTimeout(grace);
      fn();
    };
    const timer = setTimeout(() => {
      child.kill('SIGKILL');
      let tail = both.split('\n').slice(-21).join('\n').trimEnd();
      const leaked = secrets.some((secret) => both.includes(secret));
      for (const secret of secrets) tail = tail.split(secret).join('[REDACTED]');
      settle(() =>
        rejectResult(
          new Error(
            `${command}: still running after ${timeoutMs} ms, killed (SIGKILL)${leaked ? '; and a secret appeared in its output' : ''}. ` +
              `Last 20 lines of its output:\n${tail || '(none)'}`,
          ),
        ),
      );
    }, timeoutMs);
    const finish = (code: number | null, signal: NodeJS.Signals | null) =>
      settle(() => {
        const r = { code: code ?? (signal ? 128 : 1), stdout, stderr };
        const leaked = secrets.some((secret) => r.stdout.includes(secret) || r.stderr.includes(secret));
        // Thrown, not returned: a leak fails the test whatever else it asserts.
        if (leaked) rejectResult(new Error(`a secret appeared in the output of ${command}`));
        // The bin's guard ended a run that something still held open (bin/newapi-cluster.js): a bug.
        else if (r.stderr.includes('still held open after the run ended')) rejectResult(new Error(`${command} did not end by itself: ${r.stderr.split('\n').find((l) => l.includes('still held open'))}`));
        else resolveResult(r);
      });
    child.on('exit', (code, signal) => {
      liveClis.delete(child);
      // 'close' follows once its pipes are drained; should anything else hold them, don't wait
      grace = setTimeout(() => finish(code, signal), 2_000);
    });
    child.on('close', (code, signal) => finish(code, signal));
    child.on('error', (error) => {
      liveClis.delete(child);
      settle(() => rejectResult(new Error(`${command}: ${error.message}`)));
    });
  });
  return { child, result, output: () => stdout + stderr };
}

/** A working copy of examples/lab/inventory.yaml in a temp dir, with text replacements. */
export function labInventory(edit: (text: string) => string = (t) => t): string {
  const dir = mkdtempSync(join(tmpdir(), 'newapi-e2e-'));
  const file = join(dir, 'inventory.yaml');
  writeFileSync(file, edit(readFileSync(join(ROOT, 'examples/lab/inventory.yaml'), 'utf8')));
  return file;
}

/** Which node answered each of n requests through the balancer. */
export async function hitBalancer(n: number, path = '/api/status'): Promise<{ hosts: Record<string, number>; versions: Record<string, number>; statuses: number[] }> {
  const hosts: Record<string, number> = {};
  const versions: Record<string, number> = {};
  const statuses: number[] = [];
  // One connection per request: what is measured is which node answers, and a kept-alive
  // connection an nginx reload just closed would only measure the client's reuse race.
  const once = () =>
    new Promise<{ status: number; headers: Record<string, string | string[] | undefined> }>((resolveOnce, rejectOnce) => {
      const req = httpRequest({ host: LB, port: 80, path, agent: false, timeout: 10_000 }, (res) => {
        res.resume();
        res.on('end', () => resolveOnce({ status: res.statusCode ?? 0, headers: res.headers }));
        res.on('error', rejectOnce);
      });
      req.on('timeout', () => req.destroy(new Error('no answer within 10 s')));
      req.on('error', rejectOnce);
      req.end();
    });
  for (let i = 0; i < n; i++) {
    const res = await once();
    statuses.push(res.status);
    const host = String(res.headers['x-standin-host'] ?? '?');
    hosts[host] = (hosts[host] ?? 0) + 1;
    const version = String(res.headers['x-standin-version'] ?? '?');
    versions[version] = (versions[version] ?? 0) + 1;
  }
  return { hosts, versions, statuses };
}

/** Container start times per lab host (to prove nothing restarted). */
export async function startTimes(hosts: LabHost[]): Promise<Record<string, string>> {
  const out: Record<string, string> = {};
  for (const h of hosts) out[h] = (await hostExec(h, "docker inspect --format '{{.State.StartedAt}}' lab-new-api 2>/dev/null || true")).trim();
  return out;
}

/** A fingerprint of everything the tool may touch on a host: files under /opt/new-api and nginx's conf.d, and containers. */
export async function hostFingerprint(host: LabHost): Promise<string> {
  return hostExec(
    host,
    "{ find /opt/new-api /etc/nginx/conf.d -path /opt/new-api/logs -prune -o -path /opt/new-api/data -prune -o -type f -print 2>/dev/null | sort | xargs -r sha256sum; find /opt/new-api -maxdepth 2 -printf '%p %m\\n' 2>/dev/null | sort; command -v docker >/dev/null && docker ps -aq --no-trunc | xargs -r docker inspect --format '{{.Id}} {{.Config.Image}} {{.State.StartedAt}}'; } 2>&1",
  );
}
