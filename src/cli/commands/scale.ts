import type { Command } from 'commander';
import { InputError } from '../../errors.js';
import { HOST_RE, NAME_RE } from '../../inventory/patterns.js';
import { inventoryPath, type CliContext } from '../context.js';
import { loadForCommand } from '../load.js';

interface AddOptions {
  name?: string;
  host?: string;
  weight?: string;
  sshUser?: string;
  sshPort?: string;
}

export function registerScale(program: Command, getContext: () => CliContext): void {
  const scale = program.command('scale').description('add or remove slave nodes');

  scale
    .command('add-node')
    .description('add a slave: check it, deploy it, health-gate it, then add it to the balancer')
    .argument('[inventory]', 'inventory file')
    .option('--name <name>', 'node name')
    .option('--host <host>', 'address the operator reaches it at')
    .option('--weight <n>', 'balancer weight')
    .option('--ssh-user <user>', 'SSH user, when not the default')
    .option('--ssh-port <port>', 'SSH port, when not the default')
    .action(async (file: string | undefined, opts: AddOptions) => {
      const ctx = getContext();
      const answers = await completeAnswers(ctx, opts);
      const loaded = await loadForCommand(ctx, inventoryPath(ctx, file));
      const { runAddNode } = await import('../../orchestrate/scale.js');
      await runAddNode(ctx, loaded, answers);
    });

  scale
    .command('remove-node')
    .description('drain a slave from the balancer, stop it, and remove it from the inventory')
    .argument('[inventory]', 'inventory file')
    .requiredOption('--name <name>', 'node name')
    .option('--purge', `also remove its files (cluster.dir) from the host`, false)
    .action(async (file: string | undefined, opts: { name: string; purge: boolean }) => {
      const ctx = getContext();
      const loaded = await loadForCommand(ctx, inventoryPath(ctx, file));
      const { runRemoveNode } = await import('../../orchestrate/scale.js');
      await runRemoveNode(ctx, loaded, opts);
    });
}

async function completeAnswers(ctx: CliContext, opts: AddOptions) {
  let { name, host } = opts;
  if ((!name || !host) && ctx.interactive && !ctx.globals.yes) {
    const { input } = await import('@inquirer/prompts');
    name ??= await input({ message: 'Name of the new slave', validate: (v) => NAME_RE.test(v) || 'lower-case letters, digits and dashes' });
    host ??= await input({ message: 'Its address', validate: (v) => HOST_RE.test(v) || 'a host name or an IP address' });
  }
  if (!name) throw new InputError('scale add-node needs --name', 'e.g. --name slave-3 --host 10.0.0.14');
  if (!host) throw new InputError('scale add-node needs --host', 'e.g. --name slave-3 --host 10.0.0.14');
  const int = (flag: string, v: string | undefined, min: number, max: number) => {
    if (v === undefined) return undefined;
    const n = Number(v);
    if (!Number.isInteger(n) || n < min || n > max) throw new InputError(`${flag}: "${v}" should be a whole number from ${min} to ${max}`, `e.g. ${flag} ${min === 1 && max === 65535 ? 22 : 5}`);
    return n;
  };
  const weight = int('--weight', opts.weight, 1, 1000);
  const port = int('--ssh-port', opts.sshPort, 1, 65535);
  const ssh = { ...(opts.sshUser ? { user: opts.sshUser } : {}), ...(port ? { port } : {}) };
  return { name, host, ...(weight ? { weight } : {}), ...(Object.keys(ssh).length ? { ssh } : {}) };
}
