import type { LoadedInventory } from '../inventory/load.js';
import type { CliContext } from './context.js';

/**
 * Every command starts here: load and validate the inventory before any network, register its
 * secrets with the output redactor, and show warnings (which never fail a command).
 */
export async function loadForCommand(
  ctx: CliContext,
  file: string,
  opts: { showWarnings?: boolean } = {},
): Promise<LoadedInventory> {
  const { loadInventory, InventoryError } = await import('../inventory/load.js');
  let loaded: LoadedInventory;
  try {
    loaded = await loadInventory(file, { env: ctx.env });
  } catch (e) {
    // Redaction comes first: the problems may be about a value that came from a secret.
    if (e instanceof InventoryError) ctx.out.addSecrets(e.secretValues);
    throw e;
  }
  ctx.out.addSecrets(loaded.secretValues);
  if ((opts.showWarnings ?? true) && loaded.warnings.length > 0 && !ctx.out.json) {
    const { problemLines } = await import('../ui/problems.js');
    for (const line of problemLines(loaded.warnings, ctx.style)) ctx.out.note(line);
  }
  return loaded;
}
