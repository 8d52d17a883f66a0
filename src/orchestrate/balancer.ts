/**
 * The nginx balancer, as a map of each node's place in it: `in` (serving), `drained` (listed but
 * marked down) or `out` (not listed). It starts from the file the balancer has (read under the
 * lock), steps change places, and `apply` renders the map, pushes it only if it changed, proves it
 * with `nginx -t` (restoring the previous file if it fails) and reloads. Reload is graceful:
 * in-flight requests and streams finish on the old workers.
 */
import { CliError } from '../errors.js';
import type { Inventory } from '../inventory/schema.js';
import type { BalancerMembership } from '../plan/plan.js';
import { files, nginx } from '../remote/commands.js';
import { hostPort, renderCluster, type RenderOptions } from '../render/render.js';
import type { TemplateSources } from '../render/templates.js';
import { BALANCER, type Session } from './session.js';

export type Place = 'in' | 'drained' | 'out';

/** Reads the rendered upstream back: is the node listed, and is it marked down? */
export function balancerStateOf(config: string | undefined, address: string): 'in' | 'drained' | 'absent' {
  if (config === undefined) return 'absent';
  const line = config.split('\n').find((l) => new RegExp(`^\\s*server\\s+${address.replace(/[.[\]]/g, '\\$&')}\\s`).test(l));
  if (!line) return 'absent';
  return /\sdown\s*;/.test(line) ? 'drained' : 'in';
}

export class Balancer {
  private current: string | undefined;
  private loaded = false;
  /** Where each node is in the file the balancer has (what the last successful push, or the file read, says). */
  private readonly committed = new Map<string, Place>();
  /** Where the run wants each node; becomes `committed` only when a push succeeds. */
  private readonly places = new Map<string, Place>();
  /** How many times this run changed the balancer's file. */
  pushes = 0;
  /** Every request answered 503 with a JSON body (while a restore runs). */
  maintenance = false;
  private committedMaintenance = false;

  /**
   * @param guard runs before every push: the lock is verified, so a run that lost it never
   *   changes the balancer another operator now owns.
   */
  constructor(
    private readonly session: Session,
    private readonly templates: TemplateSources,
    private readonly guard: () => Promise<void> = async () => undefined,
    private readonly inv: Inventory = session.inv,
  ) {}

  get enabled(): boolean {
    return this.session.balancerTarget() !== undefined;
  }

  /** The file the balancer has now (undefined: none); read once. */
  async read(): Promise<string | undefined> {
    const ex = this.session.onBalancer();
    if (!ex) return undefined;
    if (!this.loaded) {
      this.current = (await ex.readFile(this.inv.loadBalancer.configPath))?.toString('utf8');
      this.loaded = true;
      for (const n of this.inv.nodes) {
        const s = balancerStateOf(this.current, hostPort(n.host, this.inv.cluster.port));
        this.committed.set(n.name, s === 'absent' ? 'out' : s);
      }
      this.revert();
    }
    return this.current;
  }

  /** Each node's membership as facts for planning. */
  async memberships(): Promise<Map<string, BalancerMembership>> {
    const out = new Map<string, BalancerMembership>();
    if (!this.enabled) {
      for (const n of this.inv.nodes) out.set(n.name, 'unmanaged');
      return out;
    }
    await this.read();
    for (const n of this.inv.nodes) {
      const p = this.place(n.name);
      out.set(n.name, p === 'out' ? 'absent' : p);
    }
    return out;
  }

  /** Where the node is in the balancer's file now. */
  place(name: string): Place {
    return this.committed.get(name) ?? 'out';
  }

  private commit(): void {
    for (const [n, p] of this.places) this.committed.set(n, p);
    this.committedMaintenance = this.maintenance;
  }

  private revert(): void {
    this.maintenance = this.committedMaintenance;
    this.places.clear();
    for (const [n, p] of this.committed) this.places.set(n, p);
  }

  set(names: Iterable<string>, place: Place): void {
    for (const n of names) this.places.set(n, place);
  }

  /** The file as the current map renders it. */
  render(extra: RenderOptions = {}): string {
    const drained = new Set([...this.places].filter(([, p]) => p === 'drained').map(([n]) => n));
    const excluded = new Set(this.inv.nodes.filter((n) => (this.places.get(n.name) ?? 'out') === 'out').map((n) => n.name));
    return renderCluster(this.inv, this.templates, { drained, excluded, maintenance: this.maintenance, ...extra }).balancer.content;
  }

  /** The file with every node in: what a finished run leaves. */
  renderFinal(): string {
    return renderCluster(this.inv, this.templates).balancer.content;
  }

  /**
   * Pushes the map if it changed; returns whether the file changed. If the push fails (a lost
   * lock, nginx -t), the map goes back to what the file says, so the next push and the report
   * never claim a place the balancer does not have.
   */
  async apply(): Promise<boolean> {
    try {
      return await this.push();
    } catch (e) {
      this.revert();
      throw e;
    }
  }

  private async push(): Promise<boolean> {
    const ex = this.session.onBalancer();
    if (!ex) return false;
    const previous = await this.read();
    const next = this.render();
    if (next === previous) {
      this.commit();
      return false;
    }
    await this.guard();
    const path = this.inv.loadBalancer.configPath;
    await ex.upload(path, next, 0o644);
    const test = await ex.exec(nginx.test(), { allowFailure: true, timeoutMs: 30_000 });
    if (test.code !== 0) {
      if (previous === undefined) await ex.exec(files.remove(path), { timeoutMs: 30_000 });
      else await ex.upload(path, previous, 0o644);
      throw new CliError(`nginx -t rejected the new configuration (the previous file is back): ${test.stderr.trim().split('\n').slice(-2).join(' ')}`, {
        node: BALANCER,
        hint: 'if you override nginx.conf.hbs, check it with newapi-cluster render; otherwise run nginx -t on the balancer',
      });
    }
    // From here the file is the new one, whether or not the reload succeeds.
    this.current = next;
    this.commit();
    this.pushes++;
    await ex.exec(nginx.reload(), { timeoutMs: 30_000 });
    return true;
  }
}
