/**
 * Inventory edits (upgrade's cluster.image, scale add-node / remove-node) change exactly the
 * edited entry: comments, layout and every other byte stay, so the operator's diff is one entry.
 */
import { readFileSync } from 'node:fs';
import { fileURLToPath } from 'node:url';
import { structuredPatch } from 'diff';
import { describe, expect, it } from 'vitest';
import { InputError } from '../../../src/errors.js';
import { addNode, removeNode, setScalar, type NewNodeEntry } from '../../../src/inventory/edit.js';
import { parseInventory } from '../../../src/inventory/load.js';
import { FAKE_VARS } from '../../fixtures/inventory.js';

const example = (name: string) => readFileSync(fileURLToPath(new URL(`../../../examples/${name}/inventory.yaml`, import.meta.url)), 'utf8');
const MINIMAL = example('minimal');
const FULL = example('full');

/** The edit as a zero-context patch: one hunk, and its lines. */
function hunkOf(before: string, after: string): { oldStart: number; lines: string[] } {
  const patch = structuredPatch('a', 'b', before, after, undefined, undefined, { context: 0 });
  expect(patch.hunks).toHaveLength(1);
  const [hunk] = patch.hunks;
  return { oldStart: hunk!.oldStart, lines: hunk!.lines };
}

const parse = (text: string) => parseInventory(text, { file: 'inventory.yaml', path: '/tmp/inventory.yaml', lookup: (v) => FAKE_VARS[v] }).inventory;

describe('setScalar', () => {
  const text = [
    '# production cluster',
    'cluster:',
    '  name: prod            # names the compose project',
    '  image: calciumion/new-api:v0.9.20   # pinned: never :latest',
    '  port: 3000',
    '',
    'nodes:',
    '  - { name: master, host: 10.0.0.11, role: master }',
    '',
  ].join('\n');

  it('replaces only the value, keeping comments and every other byte', () => {
    expect(setScalar(text, ['cluster', 'image'], 'calciumion/new-api:v0.9.21')).toBe(
      [
        '# production cluster',
        'cluster:',
        '  name: prod            # names the compose project',
        '  image: calciumion/new-api:v0.9.21   # pinned: never :latest',
        '  port: 3000',
        '',
        'nodes:',
        '  - { name: master, host: 10.0.0.11, role: master }',
        '',
      ].join('\n'),
    );
  });

  it('replaces a quoted value, and quotes a value YAML would read as something else', () => {
    const quoted = 'cluster:\n  image: "calciumion/new-api:v0.9.20"  # c\n';
    expect(setScalar(quoted, ['cluster', 'image'], '10.77.0.1:5000/calciumion/new-api:v0.9.21')).toBe('cluster:\n  image: 10.77.0.1:5000/calciumion/new-api:v0.9.21  # c\n');
    expect(setScalar(quoted, ['cluster', 'image'], 'true')).toBe('cluster:\n  image: "true"  # c\n');
  });

  it('refuses a ${VAR} value: it is the operator\'s to change', () => {
    const withVar = 'cluster:\n  image: ${NEWAPI_IMAGE}   # set by CI\n';
    expect(setScalar(withVar, ['cluster', 'image'], 'calciumion/new-api:v0.9.21')).toBeUndefined();
    expect(setScalar('cluster:\n  image: registry/${TAG}\n', ['cluster', 'image'], 'x:v1')).toBeUndefined();
  });

  it('throws when the path is not a scalar', () => {
    expect(() => setScalar(text, ['cluster', 'nope'], 'x')).toThrow('cluster/nope is not a value in the inventory');
    expect(() => setScalar(text, ['cluster'], 'x')).toThrow('cluster is not a value in the inventory');
  });
});

describe('addNode', () => {
  const entry: NewNodeEntry = { name: 'slave-9', host: '10.0.0.19', weight: 4, ssh: { user: 'deploy', port: 2201 } };

  it('adds one flow entry after the last one of a flow-style list (examples/minimal)', () => {
    const after = addNode(MINIMAL, entry);
    const hunk = hunkOf(MINIMAL, after);
    expect(hunk.lines).toEqual(['+  - { name: slave-9, host: 10.0.0.19, weight: 4, ssh: { user: deploy, port: 2201 } }']);
    expect(after).toContain('  - { name: slave-2, host: 10.0.0.13 }\n  - { name: slave-9,');
    expect(parse(after).nodes.at(-1)).toEqual({ name: 'slave-9', host: '10.0.0.19', role: 'slave', weight: 4, ssh: { user: 'deploy', port: 2201 } });
  });

  it('adds one block entry when the last entry is block style (examples/full mixes both)', () => {
    const after = addNode(FULL, entry);
    const hunk = hunkOf(FULL, after);
    expect(hunk.lines).toEqual(['+  - name: slave-9', '+    host: 10.0.0.19', '+    weight: 4', '+    ssh: { user: deploy, port: 2201 }']);
    // Right after slave-3's last line, its trailing comment kept on it.
    expect(after).toContain('    ssh: { port: 2222 }               # any ssh key can be overridden per node\n  - name: slave-9\n');
    const inv = parse(after);
    expect(inv.nodes.map((n) => n.name)).toEqual(['master', 'slave-1', 'slave-2', 'slave-3', 'slave-9']);
    expect(inv.nodes.at(-1)).toEqual({ name: 'slave-9', host: '10.0.0.19', role: 'slave', weight: 4, ssh: { user: 'deploy', port: 2201 } });
  });

  it('leaves out what was not given', () => {
    const hunk = hunkOf(MINIMAL, addNode(MINIMAL, { name: 'slave-3', host: 'node-3.example.com' }));
    expect(hunk.lines).toEqual(['+  - { name: slave-3, host: node-3.example.com }']);
  });

  it('writes values YAML would read as numbers or booleans quoted, so they stay text', () => {
    const after = addNode(MINIMAL, { name: '1e5', host: 'on' });
    expect(hunkOf(MINIMAL, after).lines).toEqual(['+  - { name: "1e5", host: "on" }']);
    const node = parse(addNode(MINIMAL, { name: '1e5', host: '10.0.0.20' })).nodes.at(-1);
    expect(node?.name).toBe('1e5');
  });

  it('adds before comments and blank lines that follow the list, not after them', () => {
    const text = 'nodes:\n  - name: master\n    host: 10.0.0.11\n    role: master\n\n# the balancer\nloadBalancer:\n  type: none\n';
    expect(addNode(text, { name: 'slave-1', host: '10.0.0.12' })).toBe(
      'nodes:\n  - name: master\n    host: 10.0.0.11\n    role: master\n  - name: slave-1\n    host: 10.0.0.12\n\n# the balancer\nloadBalancer:\n  type: none\n',
    );
  });

  it('follows the list\'s own indentation', () => {
    const text = 'nodes:\n- name: master\n  host: 10.0.0.11\n  role: master\nloadBalancer:\n  type: none\n';
    expect(addNode(text, { name: 'slave-1', host: '10.0.0.12', weight: 2 })).toBe(
      'nodes:\n- name: master\n  host: 10.0.0.11\n  role: master\n- name: slave-1\n  host: 10.0.0.12\n  weight: 2\nloadBalancer:\n  type: none\n',
    );
  });

  it('refuses a one-line flow list ([ … ]), which has no line per entry', () => {
    const text = 'nodes: [{ name: master, host: 10.0.0.11, role: master }]\nloadBalancer: { type: none }\n';
    expect(() => addNode(text, { name: 'slave-1', host: '10.0.0.12' })).toThrow(InputError);
    expect(() => removeNode(text, 'master')).toThrow('nodes is written as a flow list ([ … ])');
  });
});

describe('removeNode', () => {
  it('removes exactly the line of a flow entry', () => {
    const after = removeNode(MINIMAL, 'slave-1');
    const hunk = hunkOf(MINIMAL, after);
    expect(hunk.lines).toEqual(['-  - { name: slave-1, host: 10.0.0.12 }']);
    expect(MINIMAL.split('\n')[hunk.oldStart - 1]).toBe('  - { name: slave-1, host: 10.0.0.12 }');
  });

  it('removes exactly the lines of a block entry, its trailing comment included', () => {
    const after = removeNode(FULL, 'slave-3');
    expect(hunkOf(FULL, after).lines).toEqual([
      '-  - name: slave-3',
      '-    host: 10.0.1.14',
      '-    weight: 5',
      '-    ssh: { port: 2222 }               # any ssh key can be overridden per node',
    ]);
    expect(parse(after).nodes.map((n) => n.name)).toEqual(['master', 'slave-1', 'slave-2']);
  });

  it('removes a flow entry from a mixed list and nothing else', () => {
    expect(hunkOf(FULL, removeNode(FULL, 'slave-2')).lines).toEqual(['-  - { name: slave-2, host: 10.0.0.13, weight: 5 }']);
  });

  it('keeps the comment above the next key even after a commented-out line of the entry', () => {
    const text = 'nodes:\n  - { name: master, host: 10.0.0.11, role: master }\n  - name: slave-1\n    host: 10.0.0.12\n    # weight: 5\n\n# the balancer\nloadBalancer:\n  type: none\n';
    const after = removeNode(text, 'slave-1');
    expect(after).not.toContain('slave-1');
    expect(after).not.toContain('10.0.0.12');
    expect(after).toContain('\n# the balancer\nloadBalancer:\n  type: none\n');
    expect(after.startsWith('nodes:\n  - { name: master, host: 10.0.0.11, role: master }\n')).toBe(true);
  });

  it('keeps comments and blank lines that follow the last entry', () => {
    const text = 'nodes:\n  - { name: master, host: 10.0.0.11, role: master }\n  - name: slave-1\n    host: 10.0.0.12\n  # slave-2 comes back in May\n\n# the balancer\nloadBalancer:\n  type: none\n';
    expect(removeNode(text, 'slave-1')).toBe('nodes:\n  - { name: master, host: 10.0.0.11, role: master }\n  # slave-2 comes back in May\n\n# the balancer\nloadBalancer:\n  type: none\n');
  });

  it('throws for a name not in the list', () => {
    expect(() => removeNode(MINIMAL, 'slave-7')).toThrow('no node named slave-7');
  });
});

describe('add then remove', () => {
  it.each([
    ['examples/minimal', MINIMAL],
    ['examples/full', FULL],
    ['examples/lab', example('lab')],
  ])('gives back %s byte for byte', (_name, text) => {
    const added = addNode(text, { name: 'slave-9', host: '10.0.0.19', weight: 2, ssh: { port: 2201 } });
    expect(added).not.toBe(text);
    expect(removeNode(added, 'slave-9')).toBe(text);
  });
});
