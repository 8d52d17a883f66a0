/**
 * images.transfer: ssh — for servers that cannot reach a registry: the image is streamed from
 * the operator's own Docker engine (`docker save`) into the node's (`docker load`) over the run's
 * one SSH connection. Also a cluster with loadBalancer.type: none (the upstream is printed).
 */
import { beforeAll, describe, expect, it } from 'vitest';
import { cli, hostExec, labInventory, resetLab } from '../support/lab.js';

describe('images.transfer: ssh', () => {
  let inventory: string;

  beforeAll(async () => {
    await resetLab();
    await hostExec('n5', 'docker image rm -f calciumion/new-api:v0.9.20 >/dev/null 2>&1 || true');
    inventory = labInventory((t) =>
      t
        .replace('name: lab', 'name: solo')
        .replace('10.77.0.1:5000/calciumion/new-api:v0.9.20', 'calciumion/new-api:v0.9.20')
        .replace(/nodes:\n(  - .*\n)+/, 'nodes:\n  - { name: master, host: 10.77.0.15, role: master }\n')
        .replace(/loadBalancer:\n(  .*\n)+/, 'loadBalancer:\n  type: none\nimages:\n  transfer: ssh\n'),
    );
  });

  it('streams the image from this machine and deploys with it; prints the upstream for type none', async () => {
    expect(await hostExec('n5', 'docker image inspect calciumion/new-api:v0.9.20 >/dev/null 2>&1 && echo present || echo absent')).toBe('absent\n');
    const r = await cli(['deploy', inventory]);
    expect(r.code, r.stderr).toBe(0);
    expect(r.stderr).toMatch(/Make calciumion\/new-api:v0\.9\.20 present on master: transferred/);
    expect(await hostExec('n5', "docker inspect --format '{{.Config.Image}} {{.State.Running}}' solo-new-api")).toBe('calciumion/new-api:v0.9.20 true\n');
    expect(r.stdout).toContain('# nginx upstream for cluster solo (loadBalancer.type: none, not pushed):');
    expect(r.stdout).toMatch(/upstream newapi_solo \{\n\s+server 10\.77\.0\.15:3000 weight=1/);
    const status = JSON.parse((await cli(['status', '--json', inventory])).stdout) as { nodes: { version: string; balancer: string }[] };
    expect(status.nodes.map((n) => [n.version, n.balancer])).toEqual([['v0.9.20', 'unmanaged']]);
  });
});
