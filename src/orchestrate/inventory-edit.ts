/** Writing edits back to the inventory file: atomically (temporary file, then rename). */
import { readFile, rename, stat, writeFile } from 'node:fs/promises';
import type { LoadedInventory } from '../inventory/load.js';
import { setScalar } from '../inventory/edit.js';

export async function writeInventoryText(path: string, text: string): Promise<void> {
  const mode = (await stat(path)).mode & 0o777;
  const tmp = `${path}.tmp-${process.pid}`;
  await writeFile(tmp, text, { mode });
  await rename(tmp, path);
}

/** true if written; false when cluster.image is a ${VAR} (the operator's to change). */
export async function setInventoryImage(loaded: LoadedInventory, image: string): Promise<boolean> {
  const text = await readFile(loaded.path, 'utf8');
  const next = setScalar(text, ['cluster', 'image'], image);
  if (next === undefined) return false;
  if (next !== text) await writeInventoryText(loaded.path, next);
  return true;
}
