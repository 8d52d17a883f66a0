/** The keys a mapping may have at a given path of the schema, for "did you mean" hints. */
import type { z } from 'zod';

type AnySchema = z.core.$ZodType;

function unwrap(schema: AnySchema): AnySchema {
  let cur = schema;
  for (let i = 0; i < 10; i++) {
    const def = cur._zod.def as unknown as Record<string, unknown>;
    if (def.innerType) cur = def.innerType as AnySchema;
    else if (def.type === 'pipe' && def.in) cur = def.in as AnySchema;
    else break;
  }
  return cur;
}

export function keysAt(root: AnySchema, path: readonly PropertyKey[]): string[] {
  let cur: AnySchema | undefined = unwrap(root);
  for (const seg of path) {
    if (!cur) return [];
    const def = cur._zod.def as unknown as Record<string, unknown>;
    if (def.type === 'object') cur = (def.shape as Record<string, AnySchema>)[String(seg)];
    else if (def.type === 'array') cur = def.element as AnySchema;
    else if (def.type === 'record') cur = def.valueType as AnySchema;
    else return [];
    cur = cur ? unwrap(cur) : undefined;
  }
  if (!cur) return [];
  const def = cur._zod.def as unknown as Record<string, unknown>;
  return def.type === 'object' ? Object.keys(def.shape as object) : [];
}
