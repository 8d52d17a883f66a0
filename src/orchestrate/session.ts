/**
 * One run against one cluster: the validated inventory, one executor per host (one SSH
 * connection each, in production), the clock, and the facts learnt about each host on the way.
 * Everything a session does to hosts goes through `on(node)` / `onBalancer()`, which carry the
 * run's signals and deadlines; unit tests hand it recording executors and a manual clock.
 */
import { randomUUID } from 'node:crypto';
import { setMaxListeners } from 'node:events';
import { hostname, userInfo } from 'node:os';
import { dirname } from 'node:path';
import { CliError, InterruptedError, errorMessage } from '../errors.js';
import type { RedisUrl } from '../inventory/dsn.js';
import { balancerHosts, type LoadedInventory } from '../inventory/load.js';
import type { Inventory, InventoryNode, SshOverrides } from '../inventory/schema.js';
import { compose as composeCmd, type ComposeFlavor } from '../remote/commands.js';
import { guarded } from '../remote/guarded.js';
import { loadSshConfig, resolveSshTarget, type ResolvedSshTarget, type SshConfigSource } from '../remote/ssh-config.js';
import type { Executor, SshTarget } from '../remote/types.js';
import { systemClock, type Clock } from './clock.js';
import type { Dialer } from '../probes/clients.js';
import type { LockStore } from './lock.js';
import type { RunEnv } from './run-env.js';

export const BALANCER = 'balancer';

export interface BalancerHost {
  /** `balancer`, or `balancer-1`, `balancer-2`… when there are several. */
  label: string;
  host: string;
  /** Its place in loadBalancer.hosts (keepalived's priority follows it). */
  index: number;
  ex: Executor;
}

/** Once a run is stopping, new remote calls get these deadlines: a vanished host costs seconds, not minutes. */
export const STOPPING_OP_TIMEOUT_MS = 3_000;
export const STOPPING_EXEC_TIMEOUT_MS = 30_000;

/** Nodes tried for the lock's Redis per attempt, and the time they get together (each connect is bounded at 5 s). */
export const LOCK_STORE_TRIES = 3;
export const LOCK_STORE_BUDGET_MS = 12_000;

/** The seams a session is built from. */
export interface SessionDeps {
  /** The executor for a host (pooled SSH in production). */
  connect(target: SshTarget): Executor;
  /** Closes every connection `connect` opened. */
  closeAll(): Promise<void>;
  /** The lock's store, reached through a node. */
  openLockStore(ex: Executor, url: RedisUrl): Promise<LockStore>;
  /** MySQL and Redis clients for the checks, reached through a node. */
  dial: Dialer;
  clock: Clock;
  operator: string;
}

export class Session {
  readonly inv: Inventory;
  readonly inventoryDir: string;
  readonly clock: Clock;
  /** Names this run in every audit line it writes, so `releases` can group them. */
  readonly runId = randomUUID().slice(0, 8);
  private readonly flavors = new Map<string, Promise<ComposeFlavor>>();
  private readonly executors = new Map<string, Executor>();
  private readonly hardAbort = new AbortController();
  private readonly resolved = new Map<string, ResolvedSshTarget>();

  constructor(
    readonly env: RunEnv,
    readonly loaded: LoadedInventory,
    readonly deps: SessionDeps,
    /** The operator's ssh config (~/.ssh/config), read once per run. */
    private readonly sshConfig?: SshConfigSource,
  ) {
    this.inv = loaded.inventory;
    this.inventoryDir = dirname(loaded.path);
    this.clock = deps.clock;
    // Every remote call in flight listens on these (a hundred hosts, a few calls each).
    setMaxListeners(0, this.hardAbort.signal);
  }

  static async open(env: RunEnv, loaded: LoadedInventory): Promise<Session> {
    const inv = loaded.inventory;
    const config = await loadSshConfig(inv.ssh.configFile, dirname(loaded.path));
    return new Session(env, loaded, await defaultDeps(env), config);
  }

  /** Opens a session for `fn` and closes every connection after it, whatever happens. */
  static async use<T>(env: RunEnv, loaded: LoadedInventory, fn: (session: Session) => Promise<T>): Promise<T> {
    const session = await Session.open(env, loaded);
    try {
      return await fn(session);
    } finally {
      await session.close();
    }
  }

  /** Aborted by the first Ctrl-C / SIGTERM / SIGHUP. */
  get stopping(): boolean {
    return this.env.signals.stop.aborted;
  }

  /** Aborts every remote call in flight: the step in hand is being abandoned. */
  abortAll(reason: Error): void {
    this.hardAbort.abort(reason);
  }

  get aborted(): AbortSignal {
    return this.hardAbort.signal;
  }

  get operator(): string {
    return this.deps.operator;
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

  node(name: string): InventoryNode | undefined {
    return this.inv.nodes.find((n) => n.name === name);
  }

  targetOf(node: InventoryNode): SshTarget {
    return this.target(node.name, node.host, node.ssh);
  }

  /** The balancer hosts: `balancer` when there is one, `balancer-1`, `balancer-2`… for a pair. */
  balancers(): BalancerHost[] {
    const hosts = balancerHosts(this.inv);
    return hosts.map((host, i) => {
      const label = hosts.length === 1 ? BALANCER : `${BALANCER}-${i + 1}`;
      return { label, host, index: i, ex: this.executor(this.target(label, host, this.inv.loadBalancer.ssh)) };
    });
  }

  on(node: InventoryNode): Executor {
    return this.executor(this.targetOf(node));
  }

  /** The first balancer host's executor (reads that need one look, like status). */
  onBalancer(): Executor | undefined {
    return this.balancers()[0]?.ex;
  }

  /**
   * The lock's store, through the first node that reaches Redis: master first, then the slaves;
   * `avoid` last. At most LOCK_STORE_TRIES nodes within LOCK_STORE_BUDGET_MS: when Redis is down,
   * every node fails alike, and a hundred nodes tried one after another would take minutes. With
   * `stop` (taking the lock, before anything changed), a stop signal ends the search before the next node.
   */
  async openLockStore(avoid: ReadonlySet<string> = new Set(), stop?: AbortSignal): Promise<LockStore> {
    const { parseRedisUrl } = await import('../inventory/dsn.js');
    const url = parseRedisUrl(this.inv.redis.url);
    const nodes = [this.master, ...this.slaves];
    const ordered = [...nodes.filter((n) => !avoid.has(n.name)), ...nodes.filter((n) => avoid.has(n.name))].slice(0, LOCK_STORE_TRIES);
    const deadline = this.clock.now() + LOCK_STORE_BUDGET_MS;
    const failures: string[] = [];
    for (const node of ordered) {
      if (stop?.aborted) throw new InterruptedError(`interrupted (${this.env.signals.received ?? 'SIGINT'}) before the lock was taken`, this.env.signals.received ?? 'SIGINT');
      if (failures.length > 0 && this.clock.now() >= deadline) break;
      try {
        return await this.deps.openLockStore(this.on(node), url);
      } catch (e) {
        failures.push(`${node.name}: ${errorMessage(e).replace(/\.$/, '')}`);
      }
    }
    throw new CliError(`cannot reach Redis for the cluster lock (tried ${failures.join('; ')})`, {
      hint: 'run newapi-cluster check to see which node cannot reach Redis',
    });
  }

  /** compose v2 plugin if the host has it, else v1 `docker-compose`; asked once per host. */
  composeFlavor(node: InventoryNode): Promise<ComposeFlavor> {
    let flavor = this.flavors.get(node.name);
    if (!flavor) {
      flavor = (async () => {
        const found = (await this.on(node).exec(composeCmd.detect(), { allowFailure: true, timeoutMs: 30_000 })).stdout.trim();
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
    await this.deps.closeAll();
  }

  private executor(target: SshTarget): Executor {
    const key = JSON.stringify(target);
    let ex = this.executors.get(key);
    if (!ex) {
      ex = guarded(this.deps.connect(target), {
        signal: () => this.hardAbort.signal,
        stop: () => this.env.signals.stop,
        stopCapMs: (kind) => (kind === 'exec' ? STOPPING_EXEC_TIMEOUT_MS : STOPPING_OP_TIMEOUT_MS),
      });
      this.executors.set(key, ex);
    }
    return ex;
  }

  /** Where each SSH setting of a host came from: the inventory, ~/.ssh/config, or a default. */
  sshSettingsOf(node: InventoryNode | BalancerHost): ResolvedSshTarget {
    return 'name' in node ? this.resolve(node.name, node.host, node.ssh) : this.resolve(node.label, node.host, this.inv.loadBalancer.ssh);
  }

  private target(label: string, host: string, overrides: SshOverrides | undefined): SshTarget {
    return this.resolve(label, host, overrides).target;
  }

  private resolve(label: string, host: string, overrides: SshOverrides | undefined): ResolvedSshTarget {
    const key = `${label}\0${host}`;
    let r = this.resolved.get(key);
    if (!r) {
      r = resolveSshTarget({
        label,
        host,
        global: this.inv.ssh,
        ...(overrides ? { node: overrides } : {}),
        inventoryDir: this.inventoryDir,
        ...(this.sshConfig ? { config: this.sshConfig } : {}),
      });
      this.resolved.set(key, r);
    }
    return r;
  }
}

export function currentOperator(): string {
  let user = 'unknown';
  try {
    user = userInfo().username;
  } catch {
    // no passwd entry (containers): keep "unknown"
  }
  return `${user}@${hostname()}`;
}

async function defaultDeps(env: RunEnv): Promise<SessionDeps> {
  const given = env.deps ?? {};
  let connect = given.connect;
  let closeAll = given.closeAll;
  if (!connect) {
    const { SshPool } = await import('../remote/ssh.js');
    const pool = new SshPool({
      acceptNewHostKeys: env.acceptNewHostKeys,
      askPassphrase: env.interactive ? askPassphrase : undefined,
    });
    connect = (t) => pool.getExecutor(t);
    closeAll = () => pool.closeAll();
  }
  return {
    connect,
    closeAll: closeAll ?? (async () => undefined),
    openLockStore:
      given.openLockStore ??
      (async (ex, url) => {
        const { openRedisLockStore } = await import('../probes/redis-lock-store.js');
        return openRedisLockStore(ex, url);
      }),
    dial: given.dial ?? (await import('../probes/clients.js')),
    clock: given.clock ?? systemClock,
    operator: given.operator ?? currentOperator(),
  };
}

async function askPassphrase(file: string): Promise<string> {
  const { password } = await import('@inquirer/prompts');
  return password({ message: `Passphrase for ${file}`, mask: '•' });
}
