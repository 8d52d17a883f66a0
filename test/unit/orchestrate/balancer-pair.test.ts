/**
 * A balancer pair (loadBalancer.hosts: two, and a vip) against the in-memory lab: every drain and
 * undrain is applied to both hosts before the step goes on, a failure on one puts the other back,
 * a first deploy starts what is not running (nginx, keepalived) and writes keepalived's
 * configuration, a second deploy changes nothing, and status reads drains from the firewall
 * rules and says which balancer holds the vip.
 */
import { readFile, writeFile } from 'node:fs/promises';
import { afterEach, describe, expect, it } from 'vitest';
import { CliError, ExitCode } from '../../../src/errors.js';
import { runDeploy } from '../../../src/orchestrate/deploy.js';
import { Session } from '../../../src/orchestrate/session.js';
import { getClusterStatus } from '../../../src/orchestrate/status.js';
import { runUpgrade } from '../../../src/orchestrate/upgrade.js';
import { firewall } from '../../../src/remote/commands.js';
import { NGINX_CHECK_SCRIPT } from '../../../src/render/render.js';
import { IMAGE_V20, IMAGE_V21, isComposeStartingUp, isComposeUp, Lab, type FakeEvent, type LabOptions, type RunOutcome } from '../../support/fake-cluster.js';

const NODES = ['master', 'slave-1', 'slave-2'] as const;
const PAIR = ['balancer-1', 'balancer-2'] as const;
const B1 = '10.0.0.10';
const B2 = '10.0.0.20';
const VIP = '10.0.0.100';
const KEEPALIVED_CONF = '/etc/keepalived/keepalived.conf';
const CHECK_SCRIPT = '/etc/keepalived/newapi-prod-nginx.sh';

const labs: Lab[] = [];

afterEach(async () => {
  for (const lab of labs.splice(0)) {
    expect(lab.cluster.unmodelled, 'orchestration ran something the fake does not model').toEqual([]);
    await lab.cleanup();
  }
});

async function pairLab(opts: LabOptions = {}): Promise<Lab> {
  const lab = await Lab.create({ balancers: [B1, B2], vip: VIP, ...opts });
  labs.push(lab);
  return lab;
}

const deploy = (lab: Lab) => lab.run((env, loaded) => runDeploy(env, loaded, { dryRun: false, only: undefined }));
const upgrade = (lab: Lab, to: string, batch?: number) => lab.run((env, loaded) => runUpgrade(env, loaded, { to, batch, dryRun: false, allowDowngrade: false }));

function expectOk<T>(r: RunOutcome<T>): void {
  if (!r.ok) throw new Error(`the run failed: ${(r.error as Error)?.message}\n${r.stderr}`);
}

async function deployedPair(opts: LabOptions = {}): Promise<Lab> {
  const lab = await pairLab(opts);
  expectOk(await deploy(lab));
  return lab;
}

const lastSeq = (lab: Lab) => lab.cluster.events.at(-1)?.seq ?? 0;
const since = <E extends FakeEvent>(events: E[], mark: number) => events.filter((e) => e.seq > mark);
const onBalancers = (lab: Lab, mark: number) => since(lab.cluster.events, mark).filter((e) => (PAIR as readonly string[]).includes(e.host) && (e.kind === 'upload' || e.kind === 'firewall' || e.kind === 'nginx' || e.kind === 'keepalived'));

describe('a balancer pair: drains and undrains', { timeout: 30_000 }, () => {
  it('every drain and undrain is applied to both balancers before the step goes on; no file, no reload', async () => {
    const lab = await deployedPair();
    const c = lab.cluster;
    const mark = lastSeq(lab);
    expectOk(await upgrade(lab, 'v0.9.21'));

    expect(onBalancers(lab, mark).filter((e) => e.kind !== 'firewall'), 'no file, no reload on either balancer').toEqual([]);
    const order = ['slave-1', 'slave-2', 'master'];
    let previousBack = mark;
    for (const name of order) {
      const rules = since(c.firewallChanges(), mark).filter((e) => e.node === name);
      const drains = rules.filter((e) => e.op === 'drain');
      const backs = rules.filter((e) => e.op === 'undrain');
      expect(drains.map((e) => e.host).sort(), `${name} is drained on both`).toEqual([...PAIR]);
      expect(backs.map((e) => e.host).sort(), `${name} is put back on both`).toEqual([...PAIR]);
      const up = since(c.execs(name, isComposeStartingUp), mark);
      expect(up).toHaveLength(1);
      const recorded = since(c.events, mark).find((e) => e.host === name && e.kind === 'upload' && e.path === lab.node(name).paths.state)!;
      // Both drained before its container is touched; both put back after its gate, before the next batch drains.
      expect(Math.max(...drains.map((e) => e.seq))).toBeLessThan(up[0]!.seq);
      expect(Math.min(...drains.map((e) => e.seq))).toBeGreaterThan(previousBack);
      expect(Math.min(...backs.map((e) => e.seq))).toBeGreaterThan(recorded.seq);
      previousBack = Math.max(...backs.map((e) => e.seq));
      // Drained for drainSeconds on both before the recreate.
      expect(up[0]!.at - Math.max(...drains.map((e) => e.at))).toBeGreaterThanOrEqual(10_000);
    }
    for (const b of PAIR) {
      expect(lab.node(b).drainRules(), `${b}: no rule left`).toEqual([]);
      expect(c.places(b)).toEqual({ master: 'in', 'slave-1': 'in', 'slave-2': 'in' });
    }
    for (const name of NODES) expect(lab.node(name).container).toMatchObject({ image: IMAGE_V21 });
  });

  it('a pair where one balancer cannot use iptables: both files mark each batch down, and both reload', async () => {
    const lab = await pairLab();
    lab.node('balancer-2').iptables = false;
    expectOk(await deploy(lab));
    const c = lab.cluster;
    const mark = lastSeq(lab);
    expectOk(await upgrade(lab, 'v0.9.21'));
    const drained = (content: string) => NODES.filter((n) => c.placeIn(content, n) === 'drained');
    for (const b of PAIR) {
      expect(since(c.balancerPushes(b), mark).map((p) => drained(p.content)), `${b}: drained by its file`).toEqual([['slave-1'], [], ['slave-2'], [], ['master'], []]);
      expect(since(c.nginxEvents(b), mark).map((e) => e.op)).toEqual(Array(6).fill('reload'));
      expect(c.places(b)).toEqual({ master: 'in', 'slave-1': 'in', 'slave-2': 'in' });
    }
    expect(lab.node('balancer-1').drainRules(), 'no rule left where iptables works').toEqual([]);
    expect(c.execs('balancer-2', (a) => a.includes('iptables') && a.includes('-j'))).toEqual([]);
  });

  it('a drain that fails on the second balancer: the first is put back, the run fails naming that host, nothing is recreated', async () => {
    const lab = await deployedPair();
    const c = lab.cluster;
    lab.node('balancer-2').firewallFault = (op) => (op === 'drain' ? { code: 4, stderr: 'iptables: Resource temporarily unavailable.\n' } : undefined);
    const mark = lastSeq(lab);
    const r = await upgrade(lab, 'v0.9.21');

    expect(r.error).toBeInstanceOf(CliError);
    expect((r.error as CliError).exitCode).toBe(ExitCode.failed);
    expect((r.error as Error).message).toMatch(/^balancer-2: /);
    expect((r.error as Error).message).toContain('iptables: Resource temporarily unavailable.');
    expect((r.error as CliError).node).toBe('balancer-2');
    expect(since(c.execs(undefined, isComposeUp), mark), 'nothing recreated').toEqual([]);
    // balancer-1 had drained slave-1; it is put back.
    expect(since(c.firewallChanges('balancer-1'), mark).map((e) => `${e.op} ${e.node}`)).toEqual(['drain slave-1', 'undrain slave-1']);
    for (const b of PAIR) {
      expect(lab.node(b).drainRules(), `${b}: no rule left`).toEqual([]);
      expect(c.places(b)).toEqual({ master: 'in', 'slave-1': 'in', 'slave-2': 'in' });
    }
    expect(onBalancers(lab, mark).filter((e) => e.kind !== 'firewall')).toEqual([]);
    for (const name of NODES) expect(lab.node(name).container).toMatchObject({ image: IMAGE_V20, status: 'running' });
  });

  it('a batch of two whose second drain fails on the second balancer: no rule is left anywhere', async () => {
    const lab = await deployedPair();
    const c = lab.cluster;
    // balancer-2 takes slave-1's rule, then refuses slave-2's.
    lab.node('balancer-2').firewallFault = (op, node) => (op === 'drain' && node === 'slave-2' ? { code: 4, stderr: 'iptables: Resource temporarily unavailable.\n' } : undefined);
    const mark = lastSeq(lab);
    const r = await upgrade(lab, 'v0.9.21', 2);

    expect(r.error).toBeInstanceOf(CliError);
    expect((r.error as CliError).node).toBe('balancer-2');
    expect(since(c.execs(undefined, isComposeUp), mark), 'nothing recreated').toEqual([]);
    expect(lab.node('balancer-1').drainRules(), 'balancer-1: no rule left').toEqual([]);
    expect(lab.node('balancer-2').drainRules(), 'balancer-2: the rule it did take (slave-1) is removed too').toEqual([]);
    for (const b of PAIR) expect(c.places(b)).toEqual({ master: 'in', 'slave-1': 'in', 'slave-2': 'in' });
  });

  it('a file push that nginx -t rejects on one balancer: the other gets its previous file back, nothing reloads, the run fails', async () => {
    const lab = await deployedPair();
    const c = lab.cluster;
    const path = lab.loaded.inventory.loadBalancer.configPath;
    const before = lab.node('balancer-1').files.get(path);
    // A new weight changes the upstream: the deploy pushes a new file to both.
    const text = await readFile(lab.tmp.file, 'utf8');
    await writeFile(lab.tmp.file, text.replace(/(- name: slave-2\n\s+host: 10\.0\.0\.13)/, '$1\n    weight: 3'));
    await lab.reload();
    expect(lab.loaded.inventory.nodes.find((n) => n.name === 'slave-2')!.weight).toBe(3);
    const mark = lastSeq(lab);
    c.once(
      (e) => e.kind === 'upload' && e.host === 'balancer-2' && e.path === path && e.content.includes('weight=3'),
      () => lab.node('balancer-2').nginxTest.push({ code: 1, stderr: `nginx: [emerg] unknown directive "wieght" in ${path}:14\nnginx: configuration file /etc/nginx/nginx.conf test failed\n` }),
    );
    const r = await deploy(lab);

    expect(r.error).toBeInstanceOf(CliError);
    expect((r.error as CliError).exitCode).toBe(ExitCode.failed);
    expect((r.error as Error).message).toMatch(/^nginx -t rejected the new configuration\b.*unknown directive "wieght"/);
    expect((r.error as CliError).node).toBe('balancer-2');
    const pushes1 = since(c.balancerPushes('balancer-1'), mark);
    expect(pushes1.map((p) => p.content.includes('weight=3'))).toEqual([true, false]);
    expect(lab.node('balancer-1').files.get(path), 'balancer-1 has its previous file again').toBe(before);
    expect(since(c.nginxEvents(), mark), 'no balancer reloads').toEqual([]);
    expect(since(c.execs(undefined, isComposeUp), mark)).toEqual([]);
    expect(lab.node('balancer-1').activeConfig).toBe(before);
    expect(lab.node('balancer-2').activeConfig).toBe(before);
  });
});

describe('a balancer pair: first deploy, keepalived and the vip', { timeout: 30_000 }, () => {
  it('starts nginx where it is not running, writes keepalived on both (vip, peers, priorities, check script) and starts it; a second deploy changes neither', async () => {
    const lab = await pairLab();
    const c = lab.cluster;
    const b1 = lab.node('balancer-1');
    const b2 = lab.node('balancer-2');
    b2.nginxRunning = false;
    const r = await deploy(lab);
    expectOk(r);
    const path = lab.loaded.inventory.loadBalancer.configPath;

    // nginx: reloaded where it ran, started (once) where it did not, both on the final file.
    expect(b2.nginxStarts).toBe(1);
    expect(b2.nginxRunning).toBe(true);
    expect(c.nginxEvents('balancer-2')[0]!.op).toBe('start');
    expect(b1.nginxStarts).toBe(0);
    expect(b1.reloads).toBeGreaterThan(0);
    for (const b of [b1, b2]) {
      expect(b.files.get(path)).toBe(b1.files.get(path));
      expect(b.activeConfig, `${b.name} runs the final file`).toBe(b.files.get(path));
      expect(c.places(b.name)).toEqual({ master: 'in', 'slave-1': 'in', 'slave-2': 'in' });
    }

    // keepalived: the same instance on both, its own address, the other as peer, 200 then 190.
    const conf1 = b1.files.get(KEEPALIVED_CONF)!;
    const conf2 = b2.files.get(KEEPALIVED_CONF)!;
    for (const [conf, self, peer, priority] of [
      [conf1, B1, B2, 200],
      [conf2, B2, B1, 190],
    ] as const) {
      expect(conf).toMatch(/^# Managed by newapi-cluster/);
      expect(conf).toContain(`virtual_ipaddress {\n        ${VIP}/24 dev eth0\n    }`);
      expect(conf).toContain(`unicast_src_ip ${self}\n`);
      expect(conf).toContain(`unicast_peer {\n        ${peer}\n    }`);
      expect(conf).toMatch(new RegExp(`\\n\\s*priority ${priority}\\n`));
      expect(conf).toContain(`script "${CHECK_SCRIPT}"`);
      expect(conf).toContain('interface eth0\n');
    }
    expect(conf1.replace(/priority \d+/, '').replace(/unicast_src_ip \S+/, '').replace(/balancer-1/g, 'X').replace(/unicast_peer \{\n\s+\S+/, '')).toBe(
      conf2.replace(/priority \d+/, '').replace(/unicast_src_ip \S+/, '').replace(/balancer-2/g, 'X').replace(/unicast_peer \{\n\s+\S+/, ''),
    );
    for (const b of [b1, b2]) {
      expect(b.files.get(CHECK_SCRIPT)).toBe(NGINX_CHECK_SCRIPT);
      expect(b.modeOf(CHECK_SCRIPT), `${b.name}: the check script is 0755`).toBe(0o755);
      expect(b.modeOf(KEEPALIVED_CONF)).toBe(0o644);
      expect(b.keepalived).toBe('running');
      expect(b.keepalivedStarts).toBe(1);
      expect(b.keepalivedActive).toBe(b.files.get(KEEPALIVED_CONF));
      // keepalived is started once its files are there, and after nginx (its check script needs it).
      const started = c.events.find((e) => e.host === b.name && e.kind === 'keepalived')!;
      const wrote = c.events.filter((e) => e.host === b.name && e.kind === 'upload' && (e.path === KEEPALIVED_CONF || e.path === CHECK_SCRIPT));
      expect(wrote).toHaveLength(2);
      for (const w of wrote) expect(w.seq).toBeLessThan(started.seq);
    }
    expect(c.vipHolder()?.name, 'the first balancer holds the vip').toBe('balancer-1');

    const mark = lastSeq(lab);
    const again = await deploy(lab);
    expectOk(again);
    expect(onBalancers(lab, mark), 'a second deploy writes, reloads and starts nothing on the balancers').toEqual([]);
    for (const b of [b1, b2]) {
      expect(b.keepalivedStarts + b.keepalivedReloads).toBe(1);
    }
    expect(again.stdout).toMatch(/nothing to do, 3 nodes and the balancer already match/);
  });

  it('refuses to overwrite a keepalived.conf it did not write, before touching keepalived', async () => {
    const lab = await pairLab();
    const b2 = lab.node('balancer-2');
    b2.files.set(KEEPALIVED_CONF, 'vrrp_instance VI_1 {\n    state MASTER\n}\n');
    const r = await deploy(lab);
    expect(r.error).toBeInstanceOf(CliError);
    expect((r.error as Error).message).toBe(`${KEEPALIVED_CONF} on ${B2} was not written by newapi-cluster; it is left alone`);
    expect((r.error as CliError).node).toBe('balancer-2');
    expect(b2.files.get(KEEPALIVED_CONF)).toBe('vrrp_instance VI_1 {\n    state MASTER\n}\n');
    expect(b2.keepalivedStarts + b2.keepalivedReloads).toBe(0);
  });
});

describe('status on a balancer pair', { timeout: 30_000 }, () => {
  async function status(lab: Lab) {
    const t = lab.env();
    const session = new Session(t.env, lab.loaded, lab.deps());
    const r = await lab.drive(getClusterStatus(session));
    if (!r.ok) throw r.error;
    return r.value!;
  }

  it('reads drains from the firewall rules (a node with a rule is drained) and says which balancer holds the vip', async () => {
    const lab = await deployedPair();
    let s = await status(lab);
    expect(Object.fromEntries(s.nodes.map((n) => [n.name, n.balancer]))).toEqual({ master: 'in', 'slave-1': 'in', 'slave-2': 'in' });
    expect(s.vip).toEqual({ address: VIP, holder: 'balancer-1' });
    expect(s.balancer.hosts.map((h) => [h.label, h.host, h.reachable, h.holdsVip])).toEqual([
      ['balancer-1', B1, true, true],
      ['balancer-2', B2, true, false],
    ]);

    // A run stopped mid-batch left slave-2's rule on balancer-2 only; the file still lists it as in.
    lab.node('balancer-2').exec([...firewall.drain('prod', 'slave-2', '10.0.0.13', 3000)], undefined);
    expect(lab.node('balancer-2').drainRules()).toEqual(['slave-2']);
    // nginx stops on balancer-1: its check script fails and the vip moves to balancer-2.
    lab.node('balancer-1').nginxRunning = false;
    s = await status(lab);
    expect(Object.fromEntries(s.nodes.map((n) => [n.name, n.balancer]))).toEqual({ master: 'in', 'slave-1': 'in', 'slave-2': 'drained' });
    expect(s.vip).toEqual({ address: VIP, holder: 'balancer-2' });
    expect(s.balancer.hosts.map((h) => h.holdsVip)).toEqual([false, true]);
    // Reading changed nothing.
    expect(lab.node('balancer-2').drainRules()).toEqual(['slave-2']);
  });

  it('a single balancer: a rule in iptables -S form makes its node drained', async () => {
    const lab = await Lab.create();
    labs.push(lab);
    expectOk(await deploy(lab));
    lab.node('balancer').rules4.push('-A OUTPUT -d 10.0.0.12/32 -p tcp -m tcp --dport 3000 -m conntrack --ctstate NEW -m comment --comment "newapi-cluster:prod:drain:slave-1" -j REJECT --reject-with tcp-reset');
    // Another cluster's rule on the same balancer is not ours.
    lab.node('balancer').rules4.push('-A OUTPUT -d 10.0.0.13/32 -p tcp -m tcp --dport 3000 -m conntrack --ctstate NEW -m comment --comment "newapi-cluster:staging:drain:slave-2" -j REJECT --reject-with tcp-reset');
    const s = await status(lab);
    expect(Object.fromEntries(s.nodes.map((n) => [n.name, n.balancer]))).toEqual({ master: 'in', 'slave-1': 'drained', 'slave-2': 'in' });
    expect(s.vip).toBeUndefined();
    expect(s.balancer.hosts.map((h) => [h.label, h.holdsVip])).toEqual([['balancer', undefined]]);
  });
});
