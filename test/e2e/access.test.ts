/**
 * The ways operators reach real servers: a non-root user with passwordless sudo (the master, on
 * n5), and a host reachable only through a jump host (a slave on n6, behind the lab's bastion).
 * Deploy, check and upgrade go through both; ~/.ssh/config supplies the jump host for a third
 * inventory, and check says so.
 */
import { readFileSync, writeFileSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { beforeAll, describe, expect, it } from 'vitest';
import { cli, hostExec, labEnv, labInventory, resetLab } from '../support/lab.js';

interface Status {
  nodes: { name: string; version?: string; healthy: boolean; balancer: string; reachable: boolean }[];
}

describe('a sudo user on one host, a jump host in front of another', () => {
  let inventory: string;

  beforeAll(async () => {
    await resetLab();
    const env = labEnv();
    inventory = labInventory((t) =>
      t
        .replace('name: lab', 'name: edge')
        .replace(
          /nodes:\n(  - .*\n)+/,
          `nodes:\n  - { name: master, host: ${env.LAB_SUDO_HOST}, role: master, ssh: { user: ${env.LAB_SUDO_USER}, sudo: true } }\n  - { name: slave-1, host: ${env.LAB_BEHIND_BASTION_HOST}, ssh: { jumpHost: root@${env.LAB_BASTION_HOST} } }\n`,
        ),
    );
  });

  it('the host behind the bastion refuses a direct connection (the lab is what it claims)', async () => {
    const direct = inventory.replace(/inventory\.yaml$/, 'direct.yaml');
    const env = labEnv();
    writeFileSync(direct, readFileSync(inventory, 'utf8').replace(`, ssh: { jumpHost: root@${env.LAB_BASTION_HOST} }`, ''));
    const r = await cli(['check', '--json', direct], { timeoutMs: 60_000 });
    const checks = (JSON.parse(r.stdout) as { checks: { node: string; check: string; status: string }[] }).checks;
    expect(checks.find((c) => c.node === 'slave-1' && c.check === 'ssh')?.status).toBe('fail');
  });

  it('check passes through sudo and through the jump host', async () => {
    const r = await cli(['check', inventory], { timeoutMs: 60_000 });
    expect(r.code, r.stdout + r.stderr).toBe(0);
    expect(r.stdout).toMatch(/^master\s+ssh\s+ok\s+newapi-deploy@10\.77\.0\.15:22/m);
    expect(r.stdout).toMatch(/^slave-1\s+ssh\s+ok\s+root@10\.77\.0\.16:22/m);
  });

  it('deploys through both', async () => {
    const r = await cli(['deploy', inventory], { timeoutMs: 180_000 });
    expect(r.code, r.stderr).toBe(0);
    // Files written through sudo are root's, with the right modes.
    expect(await hostExec('n5', 'stat -c "%U %a" /opt/new-api/.env /opt/new-api/.newapi-cluster/state.json')).toBe('root 600\nroot 600\n');
    const s = JSON.parse((await cli(['status', '--json', inventory])).stdout) as Status;
    expect(s.nodes.map((n) => [n.name, n.reachable, n.healthy, n.balancer])).toEqual([
      ['master', true, true, 'in'],
      ['slave-1', true, true, 'in'],
    ]);
  });

  it('upgrades through both', async () => {
    const r = await cli(['upgrade', '--rolling', '--to', 'v0.9.21', inventory], { timeoutMs: 180_000 });
    expect(r.code, r.stderr).toBe(0);
    const s = JSON.parse((await cli(['status', '--json', inventory])).stdout) as Status;
    expect(s.nodes.map((n) => n.version)).toEqual(['v0.9.21', 'v0.9.21']);
  });

  it('takes the jump host from ~/.ssh/config, and check says where it came from', async () => {
    const env = labEnv();
    const dir = dirname(inventory);
    const config = join(dir, 'ssh_config');
    writeFileSync(config, `Host ${env.LAB_BEHIND_BASTION_HOST}\n  ProxyJump root@${env.LAB_BASTION_HOST}\n`);
    const viaConfig = join(dir, 'via-config.yaml');
    writeFileSync(
      viaConfig,
      readFileSync(inventory, 'utf8')
        .replace(`, ssh: { jumpHost: root@${env.LAB_BASTION_HOST} }`, '')
        .replace('ssh:\n  user: root\n', `ssh:\n  user: root\n  configFile: ${config}\n`),
    );
    const r = await cli(['check', viaConfig], { timeoutMs: 60_000 });
    expect(r.code, r.stdout + r.stderr).toBe(0);
    expect(r.stdout).toMatch(/^slave-1\s+ssh\s+ok\s+.*jumpHost from .*ssh_config/m);
  });
});
