import { z } from 'zod';
import { inventorySchema } from './schema.js';

/** The JSON Schema editors use; `${VAR}` strings are allowed wherever a string is. */
export function inventoryJsonSchema(): Record<string, unknown> {
  const schema = z.toJSONSchema(inventorySchema, { io: 'input', unrepresentable: 'any' }) as Record<string, unknown>;
  return {
    ...schema,
    $id: 'https://github.com/newapi-cluster/newapi-cluster/schema/inventory.schema.json',
    title: 'newapi-cluster inventory',
    description: 'One New API cluster: a master and slaves sharing MySQL and Redis behind nginx. String values may hold ${VAR} references, resolved from the environment or .newapi-cluster.env.',
  };
}
