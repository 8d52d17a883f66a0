import type { Command } from 'commander';
import { InputError } from '../../errors.js';
import type { InitOptions } from '../../orchestrate/init.js';
import type { CliContext } from '../context.js';

/** The flags as commander gives them: the node count still text. */
type InitFlags = Omit<InitOptions, 'nodes'> & { nodes?: string };

export function registerInit(program: Command, getContext: () => CliContext): void {
  program
    .command('init')
    .description('write a starting inventory and a secrets file with strong generated secrets')
    .option('-o, --output <file>', 'inventory file to write', 'inventory.yaml')
    .option('--nodes <n>', 'number of nodes, master included (default 3)')
    .option('--name <name>', 'cluster name')
    .option('--image <image>', 'New API image with a version tag')
    .option('--hosts <list>', 'comma-separated node addresses, master first')
    .option('--balancer <host>', 'host running nginx (leave out for type: none)')
    .option('--server-name <name>', 'nginx server_name', '_')
    .option('--ssh-user <user>', 'SSH user', 'root')
    .option('--identity-file <path>', 'SSH private key (default: ssh-agent)')
    .option('--force', 'overwrite existing files without asking (with --yes)')
    .action(async (opts: InitFlags) => {
      const { runInit } = await import('../../orchestrate/init.js');
      await runInit(getContext(), {
        ...opts,
        nodes: opts.nodes === undefined ? undefined : parseCount(opts.nodes),
      });
    });
}

function parseCount(value: string): number {
  const n = Number(value);
  if (!Number.isInteger(n) || n < 1 || n > 1000) {
    throw new InputError(`--nodes: "${value}" is not a number of nodes`, 'e.g. --nodes 3 (one master and two slaves)');
  }
  return n;
}
