import type { RunEnv } from '../orchestrate/run-env.js';

export interface GlobalOptions {
  inventory?: string;
  json: boolean;
  yes: boolean;
  verbose: boolean;
  color: boolean;
  acceptNewHostKeys: boolean;
}

/**
 * What every command gets from the top level; commands never read process.* themselves. It is a
 * RunEnv, so it is what orchestration gets too — orchestration knows only the RunEnv part.
 */
export interface CliContext extends RunEnv {
  globals: GlobalOptions;
  env: NodeJS.ProcessEnv;
  cwd: string;
  /** Set by a command that finished but reports failure (a check failed): 1, not an exception. */
  exitCode?: number;
}

export const DEFAULT_INVENTORY = 'inventory.yaml';

/** The inventory named by the positional argument, else -i/--inventory, else ./inventory.yaml. */
export function inventoryPath(ctx: CliContext, positional: string | undefined): string {
  return positional ?? ctx.globals.inventory ?? DEFAULT_INVENTORY;
}
