import type { ChalkInstance } from 'chalk';
import type { Output } from '../ui/output.js';

export interface GlobalOptions {
  inventory?: string;
  json: boolean;
  yes: boolean;
  verbose: boolean;
  color: boolean;
  acceptNewHostKeys: boolean;
}

/** What every command gets from the top level; commands never read process.* themselves. */
export interface CliContext {
  out: Output;
  style: ChalkInstance;
  globals: GlobalOptions;
  env: NodeJS.ProcessEnv;
  cwd: string;
  /** stdin and stderr are terminals: prompts and the live task list are allowed. */
  interactive: boolean;
  /** Aborted on the first Ctrl-C; long operations finish or undo the step in hand, then stop. */
  signal: AbortSignal;
  /** Set by a command that finished but reports failure (a check failed): 1, not an exception. */
  exitCode?: number;
}

export const DEFAULT_INVENTORY = 'inventory.yaml';

/** The inventory named by the positional argument, else -i/--inventory, else ./inventory.yaml. */
export function inventoryPath(ctx: CliContext, positional: string | undefined): string {
  return positional ?? ctx.globals.inventory ?? DEFAULT_INVENTORY;
}
