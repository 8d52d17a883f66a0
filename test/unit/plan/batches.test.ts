/** Slaves split into rollout batches: a number of nodes, or a percentage of them (never zero). */
import { describe, expect, it } from 'vitest';
import { batchesOf } from '../../../src/plan/steps.js';

const slaves = (n: number) => Array.from({ length: n }, (_, i) => `slave-${i + 1}`);

describe('batchesOf', () => {
  it.each([
    [1, 3, [['slave-1'], ['slave-2'], ['slave-3']]],
    [2, 5, [['slave-1', 'slave-2'], ['slave-3', 'slave-4'], ['slave-5']]],
    [2, 4, [['slave-1', 'slave-2'], ['slave-3', 'slave-4']]],
    [10, 3, [['slave-1', 'slave-2', 'slave-3']]],
    ['25%', 4, [['slave-1'], ['slave-2'], ['slave-3'], ['slave-4']]],
    ['25%', 7, [['slave-1'], ['slave-2'], ['slave-3'], ['slave-4'], ['slave-5'], ['slave-6'], ['slave-7']]],
    ['50%', 4, [['slave-1', 'slave-2'], ['slave-3', 'slave-4']]],
    ['50%', 5, [['slave-1', 'slave-2'], ['slave-3', 'slave-4'], ['slave-5']]],
    ['50%', 7, [['slave-1', 'slave-2', 'slave-3'], ['slave-4', 'slave-5', 'slave-6'], ['slave-7']]],
    ['100%', 3, [['slave-1', 'slave-2', 'slave-3']]],
    ['50%', 1, [['slave-1']]],
    ['25%', 3, [['slave-1'], ['slave-2'], ['slave-3']]],
  ] as const)('batch %s of %i slaves', (size, count, expected) => {
    expect(batchesOf(slaves(count), size)).toEqual(expected);
  });

  // Every batch size on every slave count from 0 to 7: the sizes implied by the rule, in order, none empty.
  const sizes: (number | string)[] = [1, 2, '25%', '50%', '100%'];
  for (const size of sizes) {
    it(`batch ${size}: keeps order, never an empty batch, on 0..7 slaves`, () => {
      for (let n = 0; n <= 7; n++) {
        const items = slaves(n);
        const batches = batchesOf(items, size);
        const per = typeof size === 'number' ? size : Math.max(1, Math.floor((n * parseInt(size, 10)) / 100));
        expect(batches.flat()).toEqual(items);
        expect(batches.length).toBe(Math.ceil(n / per));
        for (const b of batches) expect(b.length).toBeGreaterThanOrEqual(1);
        for (const b of batches.slice(0, -1)) expect(b.length).toBe(per);
      }
    });
  }

  it('gives no batch for no slaves', () => {
    expect(batchesOf([], 1)).toEqual([]);
    expect(batchesOf([], '100%')).toEqual([]);
  });
});
