/**
 * scale add-node and remove-node under load: the new node serves only once healthy, the
 * leaving node is drained first, and the inventory changes by exactly that entry.
 */
import { readFileSync } from 'node:fs';
import { structuredPatch } from 'diff';
import { beforeAll, describe, expect, it } from 'vitest';
import { LoadGenerator } from '../support/load.js';
import { cli, hitBalancer, hostExec, hostFingerprint, LB, labInventory, resetLab } from '../support/lab.js';

function changedLines(before: string, after: string): string[] {
  return structuredPatch('a', 'b', before, after).hunks.flatMap((h) => h.lines.filter((l) => l.startsWith('+') || l.startsWith('-')));
}

describe('scale under load', () => {
  let inventory: string;

  beforeAll(async () => {
    await resetLab();
    inventory = labInventory();
    const r = await cli(['deploy', inventory]);
    expect(r.code, r.stderr).toBe(0);
  });

  it('add-node: checks the host, deploys, gates, then adds it to the balancer; zero failed requests', async () => {
    const before = readFileSync(inventory, 'utf8');
    const load = new LoadGenerator({ host: LB, port: 80, workers: 6, maxDurationMs: 180_000, maxRequests: 20_000, pauseMs: 50 });
    const r = await cli(['scale', 'add-node', inventory, '--name', 'slave-3', '--host', '10.77.0.14', '--weight', '2']);
    const report = await load.stop();
    expect(r.code, r.stderr).toBe(0);
    expect(report.failures).toEqual([]);
    expect(report.sent).toBeGreaterThan(10);
    // Gated before the balancer knew it.
    const started = r.stderr.indexOf('✔   Start slave-3 on');
    expect(started).toBeGreaterThan(-1);
    expect(started).toBeLessThan(r.stderr.indexOf('Write the inventory: add slave-3'));
    expect(r.stderr.indexOf('Write the inventory: add slave-3')).toBeLessThan(r.stderr.indexOf('Update the balancer: nginx -t passed, reloaded'));
    expect(changedLines(before, readFileSync(inventory, 'utf8'))).toEqual(['+  - { name: slave-3, host: 10.77.0.14, weight: 2 }']);
    expect(await hostExec('lb', 'cat /etc/nginx/conf.d/new-api.conf')).toMatch(/server 10\.77\.0\.14:3000 weight=2 /);
    const hits = await hitBalancer(40);
    expect(Object.keys(hits.hosts).sort()).toEqual(['master', 'slave-1', 'slave-2', 'slave-3']);
  });

  it('add-node to a host that fails its checks: exit 1, inventory and hosts unchanged', async () => {
    const before = readFileSync(inventory, 'utf8');
    const lbBefore = await hostFingerprint('lb');
    const r = await cli(['scale', 'add-node', inventory, '--name', 'slave-4', '--host', '10.77.0.19']);
    expect(r.code).toBe(1);
    expect(r.stderr).toMatch(/could not read every host, nothing was changed: slave-4: cannot reach /);
    expect(readFileSync(inventory, 'utf8')).toBe(before);
    expect(await hostFingerprint('lb')).toBe(lbBefore);
  });

  it('add-node with a name already used is bad input: exit 2, nothing changed', async () => {
    const before = readFileSync(inventory, 'utf8');
    const r = await cli(['scale', 'add-node', inventory, '--name', 'slave-1', '--host', '10.77.0.15']);
    expect(r.code).toBe(2);
    expect(r.stderr).toContain('nodes/4/name: "slave-1" is already used by nodes/1');
    expect(readFileSync(inventory, 'utf8')).toBe(before);
  });

  it('remove-node refuses the master', async () => {
    const r = await cli(['scale', 'remove-node', inventory, '--name', 'master']);
    expect(r.code).toBe(2);
    expect(r.stderr).toContain('master is the master and cannot be removed');
  });

  it('remove-node --purge: drains first, stops, removes files and the entry; zero failed requests', async () => {
    const before = readFileSync(inventory, 'utf8');
    const load = new LoadGenerator({ host: LB, port: 80, workers: 6, maxDurationMs: 180_000, maxRequests: 20_000, pauseMs: 50 });
    const r = await cli(['scale', 'remove-node', inventory, '--name', 'slave-3', '--purge']);
    const report = await load.stop();
    expect(r.code, r.stderr).toBe(0);
    expect(report.failures).toEqual([]);
    expect(r.stderr.indexOf('Drain slave-3 from the balancer')).toBeLessThan(r.stderr.indexOf('Stop slave-3'));
    expect(changedLines(before, readFileSync(inventory, 'utf8'))).toEqual(['-  - { name: slave-3, host: 10.77.0.14, weight: 2 }']);
    expect(await hostExec('n4', 'docker ps -aq | wc -l; test -e /opt/new-api && echo present || echo gone')).toBe('0\ngone\n');
    expect(await hostExec('lb', 'cat /etc/nginx/conf.d/new-api.conf')).not.toContain('10.77.0.14');
    expect(readFileSync(inventory, 'utf8')).toBe(readFileSync(labInventory(), 'utf8'));
  });
});
