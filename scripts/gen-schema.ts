/**
 * Writes schema/inventory.schema.json from the zod schema, so editors can complete and check
 * inventories. A unit test fails when the committed file is stale: run `npm run schema`.
 */
import { writeFileSync } from 'node:fs';
import { fileURLToPath } from 'node:url';
import { inventoryJsonSchema } from '../src/inventory/json-schema.js';

const target = fileURLToPath(new URL('../schema/inventory.schema.json', import.meta.url));
writeFileSync(target, `${JSON.stringify(inventoryJsonSchema(), null, 2)}\n`);
console.log(`wrote ${target}`);
