/**
 * Test helpers for the end-to-end suites: the lab's facts, commands inside lab hosts, a clean
 * slate between suites, and the CLI run as a real process — every run checked for secrets.
 */
import { execFile, spawn, type ChildProcess } from 'node:child_process';
import { existsSync, mkdtempSync, readFileSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join, resolve } from 'node:path';
import { parseEnv, promisify } from 'node:util';

const execFileP = promisify(execFile);
export const ROOT = resolve(import.meta.dirname, '../..');
export const LAB_SH = join(ROOT, 'test/lab/lab.sh');
export const LAB_ENV_FILE = '/var/lib/newapi-lab/lab.env';
export const LB = '10.77.0.10';
export const NODE_HOSTS = { n1: '10.77.0.11', n2: '10.77.0.12', n3: '10.77.0.13', n4: '10.77.0.14', n5: '10.77.0.15', n6: '10.77.0.16' } as const;
export type LabHost = keyof typeof NODE_HOSTS | 'lb';

/** The lab's environment. A suite that needs the lab fails here, loudly, when it is not up. */
export function labEnv(): Record<string, string> {
  if (!existsSync(LAB_ENV_FILE)) {
    throw new Error(`the lab is not up (${LAB_ENV_FILE} is missing): run bash test/lab/lab.sh up`);
  }
  return parseEnv(readFileSync(LAB_ENV_FILE, 'utf8')) as Record<string, string>;
}

/** Values that must never appear in any output of any test. */
export function labSecrets(env = labEnv()): string[] {
  return [env.SESSION_SECRET, env.CRYPTO_SECRET, env.MYSQL_PASSWORD, env.REDIS_PASSWORD, env.SQL_DSN, env.REDIS_CONN_STRING].filter((s): s is string => !!s && s.length >= 4);
}

export async function hostExec(host: LabHost, script: string): Promise<string> {
  const { stdout } = await execFileP('bash', [LAB_SH, 'exec', host, '--', 'sh', '-c', script], { maxBuffer: 16 * 1024 * 1024 });
  return stdout;
}

export async function labStatusUp(): Promise<void> {
  try {
    await execFileP('bash', [LAB_SH, 'status']);
  } catch (e) {
    throw new Error(`the lab is not fully up: run bash test/lab/lab.sh up\n${(e as { stdout?: string }).stdout ?? ''}`);
  }
}

/** Every lab host back to a fresh server: no containers, no /opt/new-api, no balancer file, no lock, schema reset. */
export async function resetLab(): Promise<void> {
  await labStatusUp();
  const env = labEnv();
  await Promise.all(
    (Object.keys(NODE_HOSTS) as LabHost[]).map((h) =>
      hostExec(h, 'ids=$(docker ps -aq); [ -z "$ids" ] || docker rm -f $ids >/dev/null; rm -rf /opt/new-api'),
    ),
  );
  await hostExec('lb', 'rm -f /etc/nginx/conf.d/*.conf; nginx -s reload');
  await execFileP('mariadb', ['-S', env.MYSQL_ROOT_SOCKET!, '-u', 'root', '-e', 'DROP TABLE IF EXISTS newapi.standin_schema']);
  await execFileP('redis-cli', ['-h', env.LAB_REDIS_HOST ?? '10.77.0.1', '-p', env.LAB_REDIS_PORT ?? '6379', '--no-auth-warning', '-a', env.REDIS_PASSWORD!, 'DEL', 'newapi-cluster:lab:lock']);
}

export interface CliResult {
  code: number;
  stdout: string;
  stderr: string;
}

/** Runs the built CLI as an operator would, with the lab's environment; asserts no secret leaked. */
export async function cli(args: string[], opts: { env?: Record<string, string>; cwd?: string } = {}): Promise<CliResult> {
  const child = startCli(args, opts);
  return child.result;
}

export function startCli(args: string[], opts: { env?: Record<string, string>; cwd?: string } = {}): { child: ChildProcess; result: Promise<CliResult>; output: () => string } {
  const env = { ...labEnv(), ...opts.env };
  const child = spawn(process.execPath, [join(ROOT, 'bin/newapi-cluster.js'), ...args], {
    cwd: opts.cwd ?? ROOT,
    env: { PATH: process.env.PATH ?? '/usr/bin:/bin', HOME: process.env.HOME ?? '/root', CI: 'true', ...env },
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  let stdout = '';
  let stderr = '';
  child.stdout!.on('data', (c: Buffer) => (stdout += c.toString()));
  child.stderr!.on('data', (c: Buffer) => (stderr += c.toString()));
  const result = new Promise<CliResult>((resolveResult, rejectResult) => {
    child.on('close', (code, signal) => {
      const r = { code: code ?? (signal ? 128 : 1), stdout, stderr };
      const leaked = labSecrets(env).some((secret) => r.stdout.includes(secret) || r.stderr.includes(secret));
      // Thrown, not returned: a leak fails the test whatever else it asserts.
      if (leaked) rejectResult(new Error(`a secret appeared in the output of newapi-cluster ${args.join(' ')}`));
      else resolveResult(r);
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
  for (let i = 0; i < n; i++) {
    const res = await fetch(`http://${LB}${path}`, { signal: AbortSignal.timeout(10_000) });
    statuses.push(res.status);
    const host = res.headers.get('x-standin-host') ?? '?';
    hosts[host] = (hosts[host] ?? 0) + 1;
    const version = res.headers.get('x-standin-version') ?? '?';
    versions[version] = (versions[version] ?? 0) + 1;
    await res.arrayBuffer();
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
