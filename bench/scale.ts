/**
 * "100 hosts, simulated" (run with `npx tsx bench/scale.ts`; needs root and the normal lab up for
 * its MariaDB and Redis: `bash test/lab/lab.sh up`). Builds the CLI (`npm run build`), brings up
 * the sim (`test/lab/sim.sh up 100`: light hosts, sshd + docker/docker-compose shims each) and,
 * for N = 10, 50 and 100 of those hosts, runs the built CLI (`node bin/newapi-cluster.js`):
 * validate, render, check, a first deploy, a no-op deploy, status and a rolling upgrade
 * (v0.9.20 → v0.9.21: migrate step, batches of 25 %, gates). Per run it measures wall time, CPU
 * (user + sys of the CLI process, from /usr/bin/time), peak RSS (same), and SSH connections per
 * host (the `Accepted publickey` lines each sim host's sshd logged during the run). It prints one
 * table per command and the growth time(100)/time(10), checks the targets (no-op deploy of 100
 * hosts within 2× of 10; peak RSS < 200 MB at 100; one SSH connection per host per run at every
 * N), and lists anything the shims did not model. Always ends with `sim.sh down`.
 *
 * Environment: SCALE_SIZES (default 10,50,100), SCALE_REPEAT (runs of validate, render, no-op
 * deploy and status per N; default 3, the median is shown), SCALE_CLI_ROOT (the checkout whose
 * bin/newapi-cluster.js is run; default this one), SCALE_NO_BUILD=1 (skip `npm run build`),
 * SCALE_KEEP_SIM=1 (leave the sim up at the end), SCALE_REDIS_DB (default 1, see below),
 * SCALE_TIMEOUT_S (bound of one CLI run; default 900).
 */
import { execFile, spawn } from 'node:child_process';
import { existsSync, mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { connect } from 'node:net';
import { loadavg, tmpdir } from 'node:os';
import { join, resolve } from 'node:path';
import { parseEnv, promisify } from 'node:util';

const execFileP = promisify(execFile);
const ROOT = resolve(import.meta.dirname, '..');
const CLI_ROOT = resolve(process.env.SCALE_CLI_ROOT ?? ROOT);
const SIM_SH = join(ROOT, 'test/lab/sim.sh');
const SIM_STATE = '/var/lib/newapi-sim';
const LAB_ENV_FILE = '/var/lib/newapi-lab/lab.env';
const SIZES = (process.env.SCALE_SIZES ?? '10,50,100').split(',').map((s) => Number(s.trim()));
const REPEAT = Number(process.env.SCALE_REPEAT ?? 3);
const TIMEOUT_MS = Number(process.env.SCALE_TIMEOUT_S ?? 900) * 1000;
const MAX = Math.max(...SIZES);
const FROM = 'v0.9.20';
const TO = 'v0.9.21';

if (SIZES.some((n) => !Number.isInteger(n) || n < 2 || n > 1000)) throw new Error(`SCALE_SIZES: each N must be an integer from 2 to 1000, got ${process.env.SCALE_SIZES}`);
if (process.getuid?.() !== 0) throw new Error('bench/scale.ts needs root (it runs test/lab/sim.sh)');

// ---------------------------------------------------------------- the lab --------------
if (!existsSync(LAB_ENV_FILE)) throw new Error(`the lab is not up (${LAB_ENV_FILE} is missing): run bash test/lab/lab.sh up`);
const lab = parseEnv(readFileSync(LAB_ENV_FILE, 'utf8')) as Record<string, string>;
for (const [host, port, what] of [
  [lab.LAB_MYSQL_HOST ?? '10.77.0.1', Number(lab.LAB_MYSQL_PORT ?? 3306), 'MariaDB'],
  [lab.LAB_REDIS_HOST ?? '10.77.0.1', Number(lab.LAB_REDIS_PORT ?? 6379), 'Redis'],
] as const) {
  await new Promise<void>((ok, fail) => {
    const s = connect({ host, port, timeout: 3000 }, () => (s.destroy(), ok()));
    s.on('error', (e) => fail(new Error(`the lab's ${what} (${host}:${port}) does not answer: ${e.message}; run bash test/lab/lab.sh up`)));
    s.on('timeout', () => (s.destroy(), fail(new Error(`the lab's ${what} (${host}:${port}) does not answer`))));
  });
}
// The sim cluster's keys (its lock) live in their own Redis database: the e2e suites that share the
// lab call resetLab(), which deletes every newapi-cluster:* key of database 0, and would take a
// bench run's lock from under it (exit 3). Same server, same credentials.
const REDIS_DB = process.env.SCALE_REDIS_DB ?? '1';
const redisUrl = REDIS_DB === '0' ? lab.REDIS_CONN_STRING! : `${lab.REDIS_CONN_STRING!.replace(/\/\d*$/, '')}/${REDIS_DB}`;
const cliEnv: Record<string, string> = {
  PATH: process.env.PATH ?? '/usr/bin:/bin',
  HOME: process.env.HOME ?? '/root',
  CI: 'true',
  NO_COLOR: '1',
  SQL_DSN: lab.SQL_DSN!,
  REDIS_CONN_STRING: redisUrl,
  SESSION_SECRET: lab.SESSION_SECRET!,
  CRYPTO_SECRET: lab.CRYPTO_SECRET!,
};
const secrets = [lab.SQL_DSN, lab.REDIS_CONN_STRING, lab.SESSION_SECRET, lab.CRYPTO_SECRET, lab.MYSQL_PASSWORD, lab.REDIS_PASSWORD].filter((s): s is string => !!s && s.length >= 4);
const imageRepo = lab.LAB_IMAGE_REPO ?? '10.77.0.1:5000/calciumion/new-api';

// ---------------------------------------------------------------- the sim --------------
const SIM_CPUACCT = '/sys/fs/cgroup/cpuacct/newapi-sim/cpuacct.usage';
/** CPU seconds used by every sim process so far (sim.sh puts them all in one cgroup). */
function simCpu(): number {
  try {
    return Number(readFileSync(SIM_CPUACCT, 'utf8')) / 1e9;
  } catch {
    return NaN;
  }
}
const simIp = (k: number) => `10.78.${1 + Math.floor((k - 1) / 250)}.${1 + ((k - 1) % 250)}`;
const simDir = (k: number) => `${SIM_STATE}/hosts/sim-${k}`;

async function simSh(args: string[], timeoutMs = 300_000): Promise<string> {
  try {
    const { stdout, stderr } = await execFileP('bash', [SIM_SH, ...args], { timeout: timeoutMs, killSignal: 'SIGKILL', maxBuffer: 16 << 20 });
    if (stderr.trim()) process.stderr.write(stderr);
    return stdout;
  } catch (e) {
    const err = e as { stderr?: string; message?: string; killed?: boolean };
    throw new Error(`sim.sh ${args.join(' ')} failed: ${err.killed ? `no answer within ${timeoutMs} ms` : (err.stderr?.trim() || err.message)}`);
  }
}

/** The sim's processes: count, summed RSS and PSS (MB). */
async function simMem(): Promise<{ procs: number; rssMb: number; pssMb: number; text: string }> {
  const text = await simSh(['mem'], 60_000);
  const total = text.split('\n').find((l) => l.startsWith('total'))?.trim().split(/\s+/) ?? [];
  return { procs: Number(total[1] ?? 0), rssMb: Number(total[2] ?? 0) / 1024, pssMb: Number(total[3] ?? 0) / 1024, text };
}

function countLines(path: string, needle?: string): number {
  let text: string;
  try {
    text = readFileSync(path, 'utf8');
  } catch {
    return 0;
  }
  let n = 0;
  for (const l of text.split('\n')) if (l && (needle === undefined || l.includes(needle))) n++;
  return n;
}
const accepted = (k: number) => countLines(`${simDir(k)}/sshd.log`, 'Accepted publickey');
const shimCalls = (k: number) => countLines(`${simDir(k)}/opt/sim/calls.log`);
function unmodelled(k: number): string[] {
  try {
    return readFileSync(`${simDir(k)}/opt/sim/unmodelled.log`, 'utf8').split('\n').filter(Boolean);
  } catch {
    return [];
  }
}

// ---------------------------------------------------------------- inventories ----------
const work = mkdtempSync(join(tmpdir(), 'newapi-scale-'));

function knownHosts(n: number): string {
  const file = join(work, `known_hosts-${n}`);
  const lines: string[] = [];
  for (let k = 1; k <= n; k++) {
    const [type, key] = readFileSync(`${simDir(k)}/ssh/ssh_host_ed25519_key.pub`, 'utf8').trim().split(/\s+/);
    lines.push(`${simIp(k)} ${type} ${key}`);
  }
  writeFileSync(file, `${lines.join('\n')}\n`);
  return file;
}

function writeInventory(n: number): string {
  const dir = join(work, `n${n}`);
  rmSync(dir, { recursive: true, force: true });
  mkdirSync(dir, { recursive: true });
  const nodes = Array.from({ length: n }, (_, i) =>
    i === 0 ? `  - { name: master, host: ${simIp(1)}, role: master }` : `  - { name: slave-${i}, host: ${simIp(i + 1)} }`,
  );
  const file = join(dir, 'inventory.yaml');
  writeFileSync(
    file,
    `# bench/scale.ts: ${n} sim hosts (test/lab/sim.sh)
cluster:
  name: sim
  image: ${imageRepo}:${FROM}
  port: 3000
  dir: /opt/new-api
  batchUpdate: { interval: 1 }
database:
  dsn: \${SQL_DSN}
redis:
  url: \${REDIS_CONN_STRING}
secrets:
  sessionSecret: \${SESSION_SECRET}
  cryptoSecret: \${CRYPTO_SECRET}
ssh:
  user: root
  identityFile: ${lab.LAB_SSH_KEY ?? '/var/lib/newapi-lab/ssh/id_ed25519'}
  knownHostsFile: ${knownHosts(n)}
  configFile: false
nodes:
${nodes.join('\n')}
loadBalancer: { type: none }
rollout: { maxParallel: 100, drainSeconds: 1, minReadySeconds: 0, healthTimeoutSeconds: 60, batchSize: "25%", backupBeforeMigrate: false }
`,
  );
  return file;
}

// ---------------------------------------------------------------- one CLI run -----------
interface Run {
  command: string;
  n: number;
  code: number;
  timedOut: boolean;
  wall: number;
  cpu: number;
  user: number;
  sys: number;
  rssMb: number;
  /** CPU seconds all sim hosts together spent during the run (on this machine's CPUs). */
  simCpu: number;
  /** What went wrong, in a few words (failed checks by name, unhealthy nodes). */
  note: string;
  /** SSH connections each host accepted during the run. */
  conns: number[];
  /** Shim calls (docker, docker-compose) each host got during the run. */
  calls: number[];
  stderrTail: string;
  leaked: boolean;
}

async function runCli(command: string, n: number, args: string[]): Promise<Run> {
  const before = Array.from({ length: n }, (_, i) => accepted(i + 1));
  const callsBefore = Array.from({ length: n }, (_, i) => shimCalls(i + 1));
  const timeFile = join(work, 'time.out');
  rmSync(timeFile, { force: true });
  const sim0 = simCpu();
  const t0 = performance.now();
  const child = spawn('/usr/bin/time', ['-f', '%e %U %S %M', '-o', timeFile, process.execPath, join(CLI_ROOT, 'bin/newapi-cluster.js'), ...args], {
    cwd: work,
    env: cliEnv,
    stdio: ['ignore', 'pipe', 'pipe'],
    detached: true, // its own process group: a hang is killed whole
  });
  let out = '';
  child.stdout.setEncoding('utf8').on('data', (c: string) => (out += c));
  child.stderr.setEncoding('utf8').on('data', (c: string) => (out += c));
  let timedOut = false;
  const timer = setTimeout(() => {
    timedOut = true;
    try {
      process.kill(-child.pid!, 'SIGKILL');
    } catch {
      // gone already
    }
  }, TIMEOUT_MS);
  const code = await new Promise<number>((done) => child.on('close', (c, sig) => done(c ?? (sig ? 128 : 1))));
  clearTimeout(timer);
  const wall = (performance.now() - t0) / 1000;
  const simSpent = simCpu() - sim0;
  // "Command exited with non-zero status N" comes first when the CLI fails
  const timeLine = existsSync(timeFile) ? readFileSync(timeFile, 'utf8').trim().split('\n').pop()! : '';
  const [, user, sys, maxKb] = timeLine.split(' ').map(Number);
  // sshd writes its log line when it accepts: give the last writes a moment
  await new Promise((r) => setTimeout(r, 200));
  const conns = Array.from({ length: n }, (_, i) => accepted(i + 1) - before[i]!);
  const calls = Array.from({ length: n }, (_, i) => shimCalls(i + 1) - callsBefore[i]!);
  const leaked = secrets.some((s) => out.includes(s));
  let tail = out.trimEnd().split('\n').slice(-15).join('\n');
  for (const s of secrets) tail = tail.split(s).join('[REDACTED]');
  return { command, n, code, timedOut, wall, cpu: (user ?? NaN) + (sys ?? NaN), user: user ?? NaN, sys: sys ?? NaN, rssMb: (maxKb ?? NaN) / 1024, simCpu: simSpent, note: code === 0 ? '' : failureNote(out), conns, calls, stderrTail: tail, leaked };
}

/** The failures of a run, counted: `check` rows (`NODE CHECK FAIL …`), unhealthy nodes of `status`, or the error line. */
function failureNote(out: string): string {
  const lines = out.split('\n');
  const failed = new Map<string, number>();
  for (const l of lines) {
    const m = /^\s*\S+\s+(\S+)\s+FAIL\b/.exec(l);
    if (m) failed.set(m[1]!, (failed.get(m[1]!) ?? 0) + 1);
  }
  if (failed.size) return `failed checks: ${[...failed].map(([c, k]) => `${c} ×${k}`).join(', ')}`;
  const unhealthy = lines.filter((l) => /^\s*\S+\s+(master|slave)\s+\S+\s+yes\s+.*\bunhealthy\b/.test(l)).length;
  if (unhealthy) return `${unhealthy} reachable node(s) reported unhealthy`;
  const pre = lines.find((l) => l.includes('pre-flight failed'));
  if (pre) {
    const kinds = new Map<string, number>();
    for (const m of pre.matchAll(/(?:^|; |: )(?:master|slave-\d+) (\S+): ([^;]*)/g)) {
      const k = `${m[1]} (${m[2]!.replace(/^.*: /, '').slice(0, 40)})`;
      kinds.set(k, (kinds.get(k) ?? 0) + 1);
    }
    return `pre-flight failed: ${[...kinds].map(([k, c]) => `${k} ×${c}`).join(', ') || pre.slice(0, 160)}`;
  }
  const err = [...lines].reverse().find((l) => /✖|error|failed/i.test(l));
  return (err ?? lines.filter(Boolean).at(-1) ?? '').trim().slice(0, 200);
}

// ---------------------------------------------------------------- the plan -------------
interface Step {
  name: string;
  args: (inv: string, n: number) => string[];
  repeat: number;
  /** Exit codes that are a success for this step. */
  ok: number[];
  /** SSH connections a host should see: 0 for offline commands, 1 otherwise. */
  wantConns: number;
  /**
   * When the run fails, run it again with rollout.maxParallel 25 (a row of its own): at 100 sim
   * hosts the pre-flight's probes of every node at once can outlast their budgets because the
   * sim's hosts share this machine's CPUs; the later steps need a deployed cluster.
   */
  fallback?: boolean;
}
const STEPS: Step[] = [
  { name: 'validate', args: (inv) => ['validate', inv], repeat: REPEAT, ok: [0], wantConns: 0 },
  { name: 'render', args: (inv, n) => ['render', inv, '--out', join(work, `render-${n}`)], repeat: REPEAT, ok: [0], wantConns: 0 },
  { name: 'check', args: (inv) => ['check', inv], repeat: 1, ok: [0], wantConns: 1, fallback: true },
  { name: 'deploy (first)', args: (inv) => ['deploy', inv], repeat: 1, ok: [0], wantConns: 1, fallback: true },
  { name: 'deploy (no-op)', args: (inv) => ['deploy', inv], repeat: REPEAT, ok: [0], wantConns: 1 },
  { name: 'status', args: (inv) => ['status', inv], repeat: REPEAT, ok: [0], wantConns: 1 },
  { name: `upgrade --rolling --to ${TO}`, args: (inv) => ['upgrade', inv, '--rolling', '--to', TO, '--yes'], repeat: 1, ok: [0], wantConns: 1, fallback: true },
  { name: 'status (after upgrade)', args: (inv) => ['status', inv], repeat: 1, ok: [0], wantConns: 1 },
];

const median = (xs: number[]) => {
  const s = [...xs].sort((a, b) => a - b);
  const m = Math.floor(s.length / 2);
  return s.length % 2 ? s[m]! : (s[m - 1]! + s[m]!) / 2;
};

const FALLBACK_PARALLEL = 25;
const fallbackName = (name: string) => `${name} [maxParallel ${FALLBACK_PARALLEL}]`;
/** A copy of the inventory as it is now, with rollout.maxParallel lowered. */
function fallbackInventory(inv: string): string {
  const file = inv.replace(/\.yaml$/, `-p${FALLBACK_PARALLEL}.yaml`);
  writeFileSync(file, readFileSync(inv, 'utf8').replace('maxParallel: 100,', `maxParallel: ${FALLBACK_PARALLEL},`));
  return file;
}
const results = new Map<string, Map<number, Run[]>>();
const problems: string[] = [];
const gaps = new Map<string, Set<string>>(); // unmodelled argv -> commands
const load = () => loadavg().map((l) => l.toFixed(2)).join(' ');
const simMems: string[] = [];

// ---------------------------------------------------------------- run it ---------------
console.log(`bench/scale.ts: N = ${SIZES.join(', ')}; ${REPEAT} runs of validate, render, no-op deploy and status; CLI ${CLI_ROOT}/bin/newapi-cluster.js; load average ${load()}`);
if (process.env.SCALE_NO_BUILD !== '1') {
  const t = performance.now();
  await execFileP('npm', ['run', '--silent', 'build'], { cwd: CLI_ROOT, maxBuffer: 16 << 20 });
  console.log(`npm run build: ${((performance.now() - t) / 1000).toFixed(1)} s`);
}
let t = performance.now();
await simSh(['up', String(MAX)], 600_000);
const upSeconds = (performance.now() - t) / 1000;
const idle = await simMem();
simMems.push(`after sim.sh up ${MAX} (${upSeconds.toFixed(1)} s): ${idle.procs} processes, RSS ${idle.rssMb.toFixed(1)} MB, PSS ${idle.pssMb.toFixed(1)} MB`);
console.log(simMems.at(-1));

try {
  for (const n of SIZES) {
    await simSh(['reset', String(MAX)]);
    const inv = writeInventory(n);
    console.log(`\n== N = ${n} (load average ${load()})`);
    for (const step of STEPS) {
      const record = (name: string, r: Run) => {
        const byN = results.get(name) ?? new Map<number, Run[]>();
        byN.set(n, [...(byN.get(n) ?? []), r]);
        results.set(name, byN);
        const minC = Math.min(...r.conns);
        const maxC = Math.max(...r.conns);
        console.log(
          `  ${name.padEnd(46)} exit ${r.code}${r.timedOut ? ' (KILLED: timeout)' : ''}  wall ${r.wall.toFixed(2)} s  cpu ${r.cpu.toFixed(2)} s  rss ${r.rssMb.toFixed(0)} MB  sim cpu ${r.simCpu.toFixed(1)} s  ssh/host ${minC === maxC ? minC : `${minC}-${maxC}`}  shim calls/host ${median(r.calls)}${r.note ? `  [${r.note}]` : ''}`,
        );
        if (!step.ok.includes(r.code)) problems.push(`${name}, N=${n}: exit ${r.code}${r.timedOut ? ` (killed after ${TIMEOUT_MS / 1000} s: a hang)` : ''}${r.note ? ` — ${r.note}` : ''}\n${r.stderrTail.replace(/^/gm, '      ')}`);
        if (r.leaked) problems.push(`${name}, N=${n}: a secret appeared in the CLI's output`);
        const off = r.conns.map((c, k) => [k + 1, c] as const).filter(([, c]) => c !== step.wantConns);
        if (off.length) problems.push(`${name}, N=${n}: ${off.length} host(s) saw a number of SSH connections other than ${step.wantConns}: ${off.slice(0, 10).map(([k, c]) => `sim-${k}=${c}`).join(' ')}${off.length > 10 ? ' …' : ''}`);
      };
      for (let i = 0; i < step.repeat; i++) {
        const r = await runCli(step.name, n, step.args(inv, n));
        record(step.name, r);
        if (step.fallback && !step.ok.includes(r.code)) {
          const alt = fallbackInventory(inv);
          const r2 = await runCli(fallbackName(step.name), n, step.args(alt, n));
          record(fallbackName(step.name), r2);
          // upgrade writes the new image into the inventory it was given: the main one follows
          if (r2.code === 0) writeFileSync(inv, readFileSync(inv, 'utf8').replace(/^(  image: .*):\S+$/m, `$1:${/^  image: .*:(\S+)$/m.exec(readFileSync(alt, 'utf8'))![1]}`));
        }
      }
      for (let k = 1; k <= n; k++) {
        for (const argv of unmodelled(k)) {
          const set = gaps.get(argv) ?? new Set<string>();
          set.add(`${step.name} (N=${n})`);
          gaps.set(argv, set);
        }
      }
      if (gaps.size) await execFileP('sh', ['-c', `rm -f ${SIM_STATE}/hosts/sim-*/opt/sim/unmodelled.log`]);
    }
    if (n === MAX) {
      const m = await simMem();
      simMems.push(`at N = ${n}, after the upgrade (${n} sim containers running): ${m.procs} processes, RSS ${m.rssMb.toFixed(1)} MB, PSS ${m.pssMb.toFixed(1)} MB`);
    }
  }
} finally {
  if (process.env.SCALE_KEEP_SIM === '1') console.log(`\n(sim left up: bash ${SIM_SH} down)`);
  else await simSh(['down'], 300_000).catch((e: unknown) => console.error(String(e)));
}

// ---------------------------------------------------------------- report ---------------
const f = (x: number, d = 2) => (Number.isFinite(x) ? x.toFixed(d) : '-');
console.log(`\n# Results (N = ${SIZES.join(', ')}; medians of ${REPEAT} runs where a command ran ${REPEAT} times; load average at the end ${load()})\n`);
const first = SIZES[0]!;
const last = SIZES.at(-1)!;
const growth = new Map<string, number>();
const rows = STEPS.flatMap((step) => [{ name: step.name, step }, ...(step.fallback ? [{ name: fallbackName(step.name), step }] : [])]);
for (const { name, step } of rows) {
  const byN = results.get(name);
  if (!byN) continue;
  console.log(`## ${name}${step.repeat > 1 ? ` (median of ${step.repeat})` : ''}\n`);
  console.log('| N | wall s | CPU s (user+sys) | peak RSS MB | sim CPU s | SSH conns/host (min–max) | shim calls/host | exit | what failed |');
  console.log('| ---: | ---: | ---: | ---: | ---: | :---: | ---: | :---: | --- |');
  for (const n of SIZES) {
    const runs = byN.get(n);
    if (!runs) continue;
    const conns = runs.flatMap((r) => r.conns);
    const minC = Math.min(...conns);
    const maxC = Math.max(...conns);
    console.log(
      `| ${n} | ${f(median(runs.map((r) => r.wall)))} | ${f(median(runs.map((r) => r.cpu)))} | ${f(Math.max(...runs.map((r) => r.rssMb)), 0)} | ${f(median(runs.map((r) => r.simCpu)), 1)} | ${minC === maxC ? minC : `${minC}–${maxC}`} | ${median(runs.map((r) => median(r.calls)))} | ${[...new Set(runs.map((r) => (r.timedOut ? 'killed' : String(r.code))))].join(',')} | ${[...new Set(runs.map((r) => r.note).filter(Boolean))].join('; ')} |`,
    );
  }
  const a = byN.get(first);
  const b = byN.get(last);
  if (a && b) {
    const g = median(b.map((r) => r.wall)) / median(a.map((r) => r.wall));
    const gc = median(b.map((r) => r.cpu)) / median(a.map((r) => r.cpu));
    const gs = median(b.map((r) => r.simCpu)) / median(a.map((r) => r.simCpu));
    growth.set(name, g);
    console.log(`\ngrowth time(${last})/time(${first}): wall ${f(g)}×, CLI CPU ${f(gc)}×${Number.isFinite(gs) && gs > 0 ? `, sim CPU ${f(gs)}×` : ''}\n`);
  } else console.log('');
}

console.log('## Targets\n');
const noop = results.get('deploy (no-op)');
if (noop?.get(first) && noop.get(last)) {
  const g = growth.get('deploy (no-op)')!;
  console.log(`- no-op deploy of ${last} hosts within 2× of ${first}: ${f(g)}× → ${g <= 2 ? 'MET' : 'NOT MET'}`);
}
const peak = Math.max(...[...results.values()].flatMap((byN) => byN.get(last) ?? []).map((r) => r.rssMb));
console.log(`- peak RSS under 200 MB at ${last} hosts: ${f(peak, 0)} MB (the highest of every command) → ${peak < 200 ? 'MET' : 'NOT MET'}`);
const connRuns = [...results.entries()].filter(([name]) => rows.find((r) => r.name === name)!.step.wantConns === 1).flatMap(([, byN]) => [...byN.values()].flat());
const bad = connRuns.filter((r) => r.conns.some((c) => c !== 1));
console.log(`- one SSH connection per host per run at every N: ${bad.length === 0 ? `MET (${connRuns.length} runs)` : `NOT MET in ${bad.length} of ${connRuns.length} runs: ${bad.map((r) => `${r.command} N=${r.n} (${Math.min(...r.conns)}–${Math.max(...r.conns)})`).join('; ')}`}`);
console.log(`\n## The sim\n\n${simMems.map((l) => `- ${l}`).join('\n')}`);
console.log(`\n## Unmodelled calls\n\n${gaps.size ? [...gaps].map(([argv, where]) => `- \`${argv}\` in ${[...where].join(', ')}`).join('\n') : '- none'}`);
console.log(`\n## Problems\n\n${problems.length ? problems.map((p) => `- ${p}`).join('\n') : '- none'}`);
rmSync(work, { recursive: true, force: true });
process.exitCode = problems.length || gaps.size ? 1 : 0;
