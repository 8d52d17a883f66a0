/** `status` reads the balancer config back: each node is in, drained (down) or absent. */
import { describe, expect, it } from 'vitest';
import { parseInventory } from '../../../src/inventory/load.js';
import type { Inventory } from '../../../src/inventory/schema.js';
import { balancerStateOf } from '../../../src/orchestrate/status.js';
import { hostPort, renderCluster } from '../../../src/render/render.js';
import { loadTemplates } from '../../../src/render/templates.js';
import { FAKE_VARS } from '../../fixtures/inventory.js';

const inventory = (nodes: string, extra = ''): Inventory =>
  parseInventory(
    `cluster:\n  name: prod\n  image: calciumion/new-api:v0.9.20\n${extra}database:\n  dsn: \${SQL_DSN}\nredis:\n  url: \${REDIS_CONN_STRING}\nsecrets:\n  sessionSecret: \${SESSION_SECRET}\n  cryptoSecret: \${CRYPTO_SECRET}\nnodes:\n${nodes}loadBalancer:\n  host: 10.0.0.10\n`,
    { file: 'inventory.yaml', path: '/tmp/inventory.yaml', lookup: (v) => FAKE_VARS[v] },
  ).inventory;

const IPV4 = '  - { name: master, host: 10.0.0.1, role: master }\n  - { name: slave-1, host: 10.0.0.11 }\n  - { name: slave-2, host: 10.0.0.12 }\n';
const IPV6 = '  - { name: master, host: "fd00::1", role: master }\n  - { name: slave-1, host: "fd00::11" }\n  - { name: slave-2, host: "2001:db8::12" }\n';

async function config(inv: Inventory, opts: { drained?: string[]; excluded?: string[] }): Promise<string> {
  const templates = await loadTemplates(null, '/tmp');
  return renderCluster(inv, templates, { drained: new Set(opts.drained ?? []), excluded: new Set(opts.excluded ?? []) }).balancer.content;
}

const states = (inv: Inventory, text: string | undefined) =>
  Object.fromEntries(inv.nodes.map((n) => [n.name, balancerStateOf(text, hostPort(n.host, inv.cluster.port))]));

describe('balancerStateOf', () => {
  it('reads in, drained and absent from a rendered config (IPv4)', async () => {
    const inv = inventory(IPV4);
    expect(states(inv, await config(inv, {}))).toEqual({ master: 'in', 'slave-1': 'in', 'slave-2': 'in' });
    expect(states(inv, await config(inv, { drained: ['slave-1'] }))).toEqual({ master: 'in', 'slave-1': 'drained', 'slave-2': 'in' });
    expect(states(inv, await config(inv, { drained: ['master'], excluded: ['slave-2'] }))).toEqual({ master: 'drained', 'slave-1': 'in', 'slave-2': 'absent' });
  });

  it('does not take 10.0.0.1 for 10.0.0.11', async () => {
    const inv = inventory(IPV4);
    const text = await config(inv, { excluded: ['master'], drained: ['slave-1'] });
    expect(balancerStateOf(text, '10.0.0.1:3000')).toBe('absent');
    expect(balancerStateOf(text, '10.0.0.11:3000')).toBe('drained');
    expect(balancerStateOf(text, '10.0.0.11:300')).toBe('absent');
  });

  it('reads bracketed IPv6 addresses', async () => {
    const inv = inventory(IPV6);
    const text = await config(inv, { drained: ['slave-1'], excluded: ['slave-2'] });
    expect(text).toContain('server [fd00::11]:3000 weight=1');
    expect(states(inv, text)).toEqual({ master: 'in', 'slave-1': 'drained', 'slave-2': 'absent' });
    expect(balancerStateOf(text, '[fd00::1]:3000')).toBe('in');
    expect(balancerStateOf(text, 'fd00::1:3000')).toBe('absent');
  });

  it('reads the main upstream, not the web-only one, when frontendBaseUrl is set', async () => {
    const inv = inventory(IPV4, '  frontendBaseUrl: https://console.example.com\n  port: 3001\n');
    const text = await config(inv, { drained: ['slave-2'] });
    expect(text).toContain('upstream newapi_prod_web {');
    expect(states(inv, text)).toEqual({ master: 'in', 'slave-1': 'in', 'slave-2': 'drained' });
    expect(balancerStateOf(text, '10.0.0.1:3000')).toBe('absent');
  });

  it('is absent when there is no config at all', () => {
    expect(balancerStateOf(undefined, '10.0.0.1:3000')).toBe('absent');
    expect(balancerStateOf('', '10.0.0.1:3000')).toBe('absent');
  });

  it('ignores commented-out server lines', () => {
    expect(balancerStateOf('upstream x {\n    # server 10.0.0.1:3000 weight=1;\n}\n', '10.0.0.1:3000')).toBe('absent');
  });
});
