/**
 * The JSON Schema shipped for editors is generated from the zod schema; the committed copy must
 * not drift from it, and the example inventories must satisfy it.
 */
import { readFileSync } from 'node:fs';
import { fileURLToPath } from 'node:url';
import { describe, expect, it } from 'vitest';
import { parse } from 'yaml';
import { inventoryJsonSchema } from '../../../src/inventory/json-schema.js';

const root = fileURLToPath(new URL('../../../', import.meta.url));
const committedText = readFileSync(`${root}schema/inventory.schema.json`, 'utf8');
const EXAMPLES = ['minimal', 'full', 'lab'];

type Schema = Record<string, unknown>;

/**
 * Just enough of JSON Schema for the keywords our schema uses: type, properties, required,
 * additionalProperties, items, minItems, anyOf, enum, pattern, minimum/maximum, minLength.
 * Returns the paths that fail. `${VAR}` strings stand in for any string, as in editors.
 */
function check(schema: Schema, value: unknown, path = ''): string[] {
  const at = path || '(top)';
  if (Array.isArray(schema.anyOf)) {
    const ok = (schema.anyOf as Schema[]).some((s) => check(s, value, path).length === 0);
    return ok ? [] : [`${at}: matches no alternative`];
  }
  if (Array.isArray(schema.enum) && !schema.enum.includes(value)) return [`${at}: not one of ${JSON.stringify(schema.enum)}`];
  const types = schema.type === undefined ? [] : Array.isArray(schema.type) ? (schema.type as string[]) : [schema.type as string];
  if (types.length > 0 && !types.some((t) => isType(t, value))) return [`${at}: not ${types.join('|')}`];
  const out: string[] = [];
  if (typeof value === 'string') {
    if (typeof schema.minLength === 'number' && value.length < schema.minLength) out.push(`${at}: too short`);
    if (typeof schema.pattern === 'string' && !value.includes('${') && !new RegExp(schema.pattern).test(value)) out.push(`${at}: does not match ${schema.pattern}`);
  }
  if (typeof value === 'number') {
    if (typeof schema.minimum === 'number' && value < schema.minimum) out.push(`${at}: below minimum`);
    if (typeof schema.maximum === 'number' && value > schema.maximum) out.push(`${at}: above maximum`);
  }
  if (Array.isArray(value)) {
    if (typeof schema.minItems === 'number' && value.length < schema.minItems) out.push(`${at}: too few items`);
    if (schema.items) value.forEach((v, i) => out.push(...check(schema.items as Schema, v, `${path}/${i}`)));
  }
  if (value !== null && typeof value === 'object' && !Array.isArray(value)) {
    const props = (schema.properties ?? {}) as Record<string, Schema>;
    for (const key of (schema.required ?? []) as string[]) if (!(key in value)) out.push(`${path}/${key}: required`);
    for (const [key, v] of Object.entries(value)) {
      const sub = props[key] ?? (typeof schema.additionalProperties === 'object' ? (schema.additionalProperties as Schema) : undefined);
      if (sub) out.push(...check(sub, v, `${path}/${key}`));
      else if (schema.additionalProperties === false) out.push(`${path}/${key}: not allowed`);
    }
  }
  return out;
}

function isType(type: string, v: unknown): boolean {
  switch (type) {
    case 'object':
      return v !== null && typeof v === 'object' && !Array.isArray(v);
    case 'array':
      return Array.isArray(v);
    case 'integer':
      return Number.isInteger(v);
    case 'null':
      return v === null;
    default:
      return typeof v === type;
  }
}

describe('schema/inventory.schema.json', () => {
  it('is what inventoryJsonSchema() generates (else: stale: run npm run schema)', () => {
    const expected = `${JSON.stringify(inventoryJsonSchema(), null, 2)}\n`;
    expect(committedText, 'stale: run npm run schema').toBe(expected);
  });

  it('describes every top-level section and requires the essential ones', () => {
    const schema = JSON.parse(committedText) as Schema;
    expect(Object.keys(schema.properties as object)).toEqual(['cluster', 'database', 'redis', 'secrets', 'ssh', 'nodes', 'loadBalancer', 'rollout', 'images', 'templates']);
    expect(schema.required).toEqual(['cluster', 'database', 'redis', 'secrets', 'nodes']);
    expect(schema.additionalProperties).toBe(false);
    expect(schema.$id).toMatch(/inventory\.schema\.json$/);
  });

  it.each(EXAMPLES)('examples/%s/inventory.yaml satisfies it', (name) => {
    const schema = JSON.parse(committedText) as Schema;
    const doc: unknown = parse(readFileSync(`${root}examples/${name}/inventory.yaml`, 'utf8'));
    const top = Object.keys(doc as object);
    expect(top.every((k) => k in (schema.properties as object))).toBe(true);
    expect(check(schema, doc)).toEqual([]);
  });

  it('the structural check does find an unknown key, a missing section and a bad port', () => {
    const schema = JSON.parse(committedText) as Schema;
    const doc = parse(readFileSync(`${root}examples/minimal/inventory.yaml`, 'utf8')) as Record<string, Record<string, unknown>>;
    delete doc.redis;
    (doc.cluster as Record<string, unknown>).prot = 3000;
    (doc.nodes as unknown as Record<string, unknown>[])[1]!.weight = 0;
    expect(check(schema, doc)).toEqual(['/redis: required', '/cluster/prot: not allowed', '/nodes/1/weight: below minimum']);
  });
});
