/**
 * One run against one cluster: the validated inventory, one SSH pool (one connection per host),
 * and the facts learnt about each host on the way. Commands that touch hosts open a session,
 * and close it in `finally`.
 */
import { hostname, userInfo } from 'node:os';
import { dirname, isAbsolute, resolve } from 'node:path';
import type { CliContext } from '../cli/context.js';
import { CliError } from '../errors.js';
import type { LoadedInventory } from '../inventory/load.js';
import type { Inventory, InventoryNode, SshOverrides } from '../inventory/schema.js';
import { compose as composeCmd, type ComposeFlavor } from '../remote/commands.js';
import type { SshPool } from '../remote/ssh.js';
import type { Executor, SshTarget } from '../remote/types.js';

export const BALANCER = 'balancer';

export class Session {
  readonly inv: Inventory;
  readonly inventoryDir: string;
  private readonly flavors = new Map<string, Promise<ComposeFlavor>>();

  constructor(
    readonly ctx: CliContext,
    readonly loaded: LoadedInventory,
    readonly pool: SshPool,
  ) {
    this.inv = loaded.inventory;
    this.inventoryDir = dirname(loaded.path);
  }

  static async open(ctx: CliContext, loaded: LoadedInventory): Promise<Session> {
    const { SshPool } = await import('../remote/ssh.js');
    const pool = new SshPool({
      acceptNewHostKeys: ctx.globals.acceptNewHostKeys,
      askPassphrase: ctx.interactive ? askPassphrase : undefined,
    });
    return new Session(ctx, loaded, pool);
  }

  /** Opens a session for `fn` and closes every connection after it, whatever happens. */
  static async use<T>(ctx: CliContext, loaded: LoadedInventory, fn: (session: Session) => Promise<T>): Promise<T> {
    const session = await Session.open(ctx, loaded);
    try {
      return await fn(session);
    } finally {
      await session.close();
    }
  }

  get operator(): string {
    let user = 'unknown';
    try {
      user = userInfo().username;
    } catch {
      // no passwd entry (containers): keep "unknown"
    }
    return `${user}@${hostname()}`;
  }

  get project(): string {
    return this.inv.cluster.name;
  }

  get master(): InventoryNode {
    return this.inv.nodes.find((n) => n.role === 'master') as InventoryNode;
  }

  get slaves(): InventoryNode[] {
    return this.inv.nodes.filter((n) => n.role === 'slave');
  }

  targetOf(node: InventoryNode): SshTarget {
    return this.target(node.name, node.host, node.ssh);
  }

  balancerTarget(): SshTarget | undefined {
    const lb = this.inv.loadBalancer;
    if (lb.type !== 'nginx' || lb.host === undefined) return undefined;
    return this.target(BALANCER, lb.host, lb.ssh);
  }

  on(node: InventoryNode): Executor {
    return this.pool.getExecutor(this.targetOf(node));
  }

  onBalancer(): Executor | undefined {
    const t = this.balancerTarget();
    return t && this.pool.getExecutor(t);
  }

  /** compose v2 plugin if the host has it, else v1 `docker-compose`; asked once per host. */
  composeFlavor(node: InventoryNode): Promise<ComposeFlavor> {
    let flavor = this.flavors.get(node.name);
    if (!flavor) {
      flavor = (async () => {
        const found = (await this.on(node).exec(composeCmd.detect(), { allowFailure: true })).stdout.trim();
        if (found === 'v2' || found === 'v1') return found;
        throw new CliError('neither `docker compose` nor `docker-compose` is installed', {
          node: node.name,
          hint: 'install the Docker compose plugin (docker-compose-plugin) or docker-compose',
        });
      })();
      flavor.catch(() => this.flavors.delete(node.name));
      this.flavors.set(node.name, flavor);
    }
    return flavor;
  }

  async close(): Promise<void> {
    await this.pool.closeAll();
  }

  private target(label: string, host: string, overrides: SshOverrides | undefined): SshTarget {
    const s = { ...this.inv.ssh, ...stripUndefined(overrides ?? {}) };
    const file = (p: string) => (p.startsWith('~') || isAbsolute(p) ? p : resolve(this.inventoryDir, p));
    return {
      label,
      host,
      port: s.port,
      user: s.user,
      knownHostsFile: file(s.knownHostsFile),
      sudo: s.sudo,
      ...(s.identityFile ? { identityFile: file(s.identityFile) } : {}),
      ...(s.jumpHost ? { jumpHost: s.jumpHost } : {}),
    };
  }
}

function stripUndefined<T extends object>(o: T): Partial<T> {
  return Object.fromEntries(Object.entries(o).filter(([, v]) => v !== undefined)) as Partial<T>;
}

async function askPassphrase(file: string): Promise<string> {
  const { password } = await import('@inquirer/prompts');
  return password({ message: `Passphrase for ${file}`, mask: '•' });
}
