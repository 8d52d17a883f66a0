/**
 * The nginx balancer hosts (one, or a pair behind a floating address), as a map of each node's
 * place: `in` (serving), `drained` (listed, but refused new connections) or `out` (not listed).
 *
 * Two mechanisms, so that client connections are left alone:
 *   - the upstream file lists the nodes that are `in` or `drained`; it changes — and nginx reloads
 *     — only when that set (or weights, TLS, maintenance) changes;
 *   - a drain is a firewall rule on each balancer host refusing its nginx's new connections to the
 *     node, so nginx moves each request to the next node before sending a byte; undrain removes it.
 *     No reload, so no kept-alive client connection is closed mid-request (a POST sent on one at
 *     that instant could not be retried). Where iptables cannot be used, the file marks the node
 *     `down` and nginx reloads instead.
 *
 * Every change is applied to every balancer host before the step goes on; if one fails, the
 * others are put back and the step fails. The map starts from what the hosts have (read under
 * the lock) and becomes what they have only when a push succeeds.
 */
import { CliError, errorMessage } from '../errors.js';
import type { Inventory } from '../inventory/schema.js';
import type { BalancerMembership } from '../plan/plan.js';
import { drainedNodes, files, firewall, nginx, parseNodeFacts } from '../remote/commands.js';
import { mapLimitSettled } from '../remote/limit.js';
import { sha256 } from '../plan/state.js';
import { hostPort, NGINX_CHECK_SCRIPT, renderCluster, renderKeepalived, tlsPaths, vrrpPaths, type RenderOptions } from '../render/render.js';
import type { TemplateSources } from '../render/templates.js';
import type { BalancerHost, Session } from './session.js';

export type Place = 'in' | 'drained' | 'out';

/**
 * nginx counts a drained node's refused connections as failures and skips it for fail_timeout
 * (2 s in the bundled template) after the last one: a node put back serves again only then. The
 * next drain waits that long, so two batches are never both out of nginx's choice at once.
 */
export const UNDRAIN_SETTLE_MS = 2_500;

/** Reads the rendered upstream back: is the node listed, and is it marked down? */
export function balancerStateOf(config: string | undefined, address: string): 'in' | 'drained' | 'absent' {
  if (config === undefined) return 'absent';
  const line = config.split('\n').find((l) => new RegExp(`^\\s*server\\s+${address.replace(/[.[\]]/g, '\\$&')}\\s`).test(l));
  if (!line) return 'absent';
  return /\sdown\s*;/.test(line) ? 'drained' : 'in';
}

interface HostState {
  host: BalancerHost;
  file: string | undefined;
  /** iptables can be used: drains are firewall rules. */
  firewall: boolean;
  drained: Set<string>;
  /** sha256 of the certificate and key it holds (`none` where absent). */
  tlsSums: [string, string];
  /** For a pair: keepalived's state, the sha256 of its config and health script, and the route to the vip. */
  vrrp?: { state: string; configSum: string; scriptSum: string; dev: string; prefix: number; self: string } | undefined;
}

export class Balancer {
  private hosts: HostState[] | undefined;
  private loading: Promise<HostState[]> | undefined;
  /** Where each node is on the balancers now (the last successful push, or what was read). */
  private readonly committed = new Map<string, Place>();
  /** Where the run wants each node; becomes `committed` only when a push succeeds. */
  private readonly places = new Map<string, Place>();
  /** How many times this run changed a balancer's file. */
  pushes = 0;
  /** Every request answered 503 with a JSON body (while a restore runs). */
  maintenance = false;
  private committedMaintenance = false;
  /** Whether the balancers hold the certificate the HTTPS server needs (set by the TLS step). */
  tlsReady = true;
  /** When a drain rule was last removed (clock time). */
  private lastUndrain = Number.NEGATIVE_INFINITY;

  /**
   * @param guard runs before every change: the lock is verified, so a run that lost it never
   *   changes the balancer another operator now owns.
   */
  constructor(
    private readonly session: Session,
    private readonly templates: TemplateSources,
    private readonly guard: () => Promise<void> = async () => undefined,
    private readonly inv: Inventory = session.inv,
  ) {}

  get enabled(): boolean {
    return this.session.balancers().length > 0;
  }

  /** The file the first balancer has now (undefined: none); read once. */
  async read(): Promise<string | undefined> {
    return (await this.load())[0]?.file;
  }

  private load(): Promise<HostState[]> {
    this.loading ??= (async () => {
      const hosts = await Promise.all(
        this.session.balancers().map(async (host): Promise<HostState> => {
          // One round trip: the file, the firewall and its rules, the certificate's presence.
          const paths = tlsPaths(this.inv);
          const vip = this.inv.loadBalancer.vip;
          const vrrpPaths_ = vrrpPaths(this.inv);
          const pair = this.session.balancers().length > 1 && vip !== undefined;
          const r = await host.ex.exec(
            files.balancerFacts(this.inv.loadBalancer.configPath, paths.certificate, paths.key, pair ? { config: vrrpPaths_.config, script: vrrpPaths_.checkScript, vip } : undefined),
            { timeoutMs: 60_000 },
          );
          const found = parseNodeFacts(r.stdout);
          const [cert = 'none', key = 'none'] = (found.tls ?? '').trim().split(' ');
          const v = found.vrrp?.trim().split(' ');
          return {
            host,
            file: found.file,
            firewall: found.firewall !== undefined,
            drained: drainedNodes(found.firewall ?? '', this.session.project),
            tlsSums: [cert, key],
            vrrp: v && v.length >= 6 ? { state: v[0]!, configSum: v[1]!, scriptSum: v[2]!, dev: v[3]!, prefix: Number(v[4]) || 24, self: v[5]! } : undefined,
          };
        }),
      );
      for (const n of this.inv.nodes) {
        const address = hostPort(n.host, this.inv.cluster.port);
        const listed = hosts.map((h) => balancerStateOf(h.file, address));
        const drained = listed.includes('drained') || hosts.some((h) => h.drained.has(n.name));
        const place: Place = listed.every((l) => l === 'absent') ? 'out' : drained ? 'drained' : 'in';
        this.committed.set(n.name, place);
      }
      this.revert();
      this.hosts = hosts;
      // The HTTPS server can be configured only where the certificate already is (see tls.ts).
      if (this.inv.loadBalancer.tls) this.tlsReady = hosts.every((h) => h.tlsSums[0] !== 'none' && h.tlsSums[1] !== 'none');
      return hosts;
    })();
    return this.loading;
  }

  /** Each node's membership as facts for planning. */
  async memberships(): Promise<Map<string, BalancerMembership>> {
    const out = new Map<string, BalancerMembership>();
    if (!this.enabled) {
      for (const n of this.inv.nodes) out.set(n.name, 'unmanaged');
      return out;
    }
    await this.load();
    for (const n of this.inv.nodes) {
      const p = this.place(n.name);
      out.set(n.name, p === 'out' ? 'absent' : p);
    }
    return out;
  }

  /** Where the node is on the balancers now. */
  place(name: string): Place {
    return this.committed.get(name) ?? 'out';
  }

  set(names: Iterable<string>, place: Place): void {
    for (const n of names) this.places.set(n, place);
  }

  /**
   * Whether the balancers differ from what a finished deploy leaves — the upstream file, the
   * certificate, keepalived — from the one look already taken (no other round trip). A no-op
   * deploy is one that finds this false and no node to move.
   */
  async needsWork(): Promise<string | undefined> {
    const hosts = await this.load();
    if (hosts.length === 0) return undefined;
    const inv = this.inv;
    let pair: { certificatePem: string; keyPem: string } | undefined;
    if (inv.loadBalancer.tls) {
      const { desiredCertificate } = await import('./tls.js');
      pair = await desiredCertificate(this.session);
      if (!pair) return 'the certificate must be obtained or renewed';
      const want: [string, string] = [sha256(pair.certificatePem), sha256(pair.keyPem)];
      const stale = hosts.find((h) => h.tlsSums[0] !== want[0] || h.tlsSums[1] !== want[1]);
      if (stale) return `${stale.host.label} lacks the current certificate`;
    }
    const final = renderCluster(inv, this.templates, { tlsReady: inv.loadBalancer.tls !== undefined }).balancer.content;
    const differs = hosts.find((h) => h.file !== final);
    if (differs) return `${differs.host.label}'s configuration differs`;
    if (hosts.length > 1 && inv.loadBalancer.vip) {
      const routes = hosts.map((h) => h.vrrp);
      if (routes.some((r) => r === undefined || r.dev === '-')) return 'the route to the vip is unknown on a balancer';
      for (const h of hosts) {
        const r = h.vrrp!;
        if (r.state !== 'running') return `keepalived is ${r.state} on ${h.host.label}`;
        const file = renderKeepalived(inv, this.templates, { label: h.host.label, self: r.self, peers: hosts.filter((o) => o !== h).map((o) => o.vrrp!.self), interface: inv.loadBalancer.vipInterface ?? r.dev, prefix: r.prefix, index: h.host.index });
        if (r.configSum !== sha256(file.content) || r.scriptSum !== sha256(NGINX_CHECK_SCRIPT)) return `keepalived's configuration differs on ${h.host.label}`;
      }
    }
    return undefined;
  }

  /** Whether every balancer host's file already serves ACME tokens over port 80. */
  async servesAcmeTokens(): Promise<boolean> {
    return (await this.load()).every((h) => h.file?.includes('/.well-known/acme-challenge/') ?? false);
  }

  /** Whether drains are firewall rules on every balancer host (else `down` and a reload). */
  get drainsByFirewall(): boolean {
    return (this.hosts ?? []).every((h) => h.firewall);
  }

  /** The file as the current map renders it. */
  render(extra: RenderOptions = {}): string {
    const place = (n: string) => this.places.get(n) ?? 'out';
    const drained = this.drainsByFirewall ? new Set<string>() : new Set([...this.places].filter(([, p]) => p === 'drained').map(([n]) => n));
    const excluded = new Set(this.inv.nodes.filter((n) => place(n.name) === 'out').map((n) => n.name));
    return renderCluster(this.inv, this.templates, { drained, excluded, maintenance: this.maintenance, tlsReady: this.tlsReady, ...extra }).balancer.content;
  }

  /** The file with every node in: what a finished run leaves. */
  renderFinal(): string {
    return renderCluster(this.inv, this.templates, { tlsReady: this.tlsReady }).balancer.content;
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

  /**
   * Makes every balancer host match the map: its file (nginx -t, reload) when the set of nodes
   * changed, then its drain rules. Returns whether a file changed. If any host fails, every
   * host goes back to what it had and the map to what the hosts have, and the error is thrown.
   * `reload` forces a reload even with an unchanged file (a renewed certificate).
   */
  async apply(opts: { reload?: boolean } = {}): Promise<boolean> {
    try {
      const changed = await this.push(opts.reload ?? false);
      this.commit();
      return changed;
    } catch (e) {
      this.revert();
      throw e;
    }
  }

  private async push(forceReload: boolean): Promise<boolean> {
    const hosts = await this.load();
    if (hosts.length === 0) return false;
    const next = this.render();
    const stale = hosts.filter((h) => h.file !== next);
    const wantDrained = new Set([...this.places].filter(([, p]) => p === 'drained').map(([n]) => n));
    const ruleChanges = hosts.filter((h) => h.firewall && !sameSet(h.drained, wantDrained));
    if (stale.length === 0 && ruleChanges.length === 0 && !forceReload) return false;
    await this.guard();

    // Drains first, then the file: a node leaving goes out of traffic before nginx reloads, and
    // one coming back is listed (reload) before its rule goes.
    const adding = (h: HostState) => [...wantDrained].filter((n) => !h.drained.has(n));
    const removing = (h: HostState) => [...h.drained].filter((n) => !wantDrained.has(n));
    const added = ruleChanges.map((h) => ({ h, add: adding(h) })).filter((x) => x.add.length > 0);
    const settle = this.lastUndrain + UNDRAIN_SETTLE_MS - this.session.clock.now();
    if (added.length > 0 && settle > 0) await this.session.clock.sleep(settle, this.session.aborted);
    await this.onEvery(
      added,
      async ({ h, add }) => this.rules(h, add, 'drain'),
      async ({ h, add }) => this.rules(h, add, 'undrain'),
      'drain',
    );
    try {
      await this.pushFile(hosts, stale, next, forceReload);
    } catch (e) {
      // The file did not change anywhere: the drains added for it go too.
      await mapLimitSettled(added, added.length || 1, ({ h, add }) => this.rules(h, add, 'undrain'));
      throw e;
    }
    await this.onEvery(
      ruleChanges.map((h) => ({ h, remove: removing(h) })).filter((x) => x.remove.length > 0),
      async ({ h, remove }) => this.rules(h, remove, 'undrain'),
      async ({ h, remove }) => this.rules(h, remove, 'drain'),
      'undrain',
    );
    return stale.length > 0;
  }

  private async pushFile(hosts: HostState[], stale: HostState[], next: string, forceReload: boolean): Promise<void> {
    const path = this.inv.loadBalancer.configPath;
    if (stale.length > 0) {
      await this.onEvery(
        stale,
        async (h) => {
          await h.host.ex.upload(path, next, 0o644);
          const test = await h.host.ex.exec(nginx.test(), { allowFailure: true, timeoutMs: 30_000 });
          if (test.code !== 0) {
            throw new CliError(`nginx -t rejected the new configuration: ${test.stderr.trim().split('\n').slice(-2).join(' ')}`, {
              node: h.host.label,
              hint: 'if you override nginx.conf.hbs, check it with newapi-cluster render; otherwise run nginx -t on the balancer',
            });
          }
        },
        async (h) => {
          if (h.file === undefined) await h.host.ex.exec(files.remove(path), { timeoutMs: 30_000 });
          else await h.host.ex.upload(path, h.file, 0o644);
        },
        'configuration',
      );
      for (const h of stale) h.file = next;
      this.pushes++;
    }
    if (stale.length > 0 || forceReload) {
      await this.onEvery(hosts, async (h) => void (await h.host.ex.exec(nginx.reloadOrStart(), { timeoutMs: 30_000 })), async () => undefined, 'reload');
    }
  }

  private async rules(h: HostState, nodes: string[], action: 'drain' | 'undrain'): Promise<void> {
    for (const name of nodes) {
      const node = this.inv.nodes.find((n) => n.name === name);
      if (!node) continue;
      await h.host.ex.exec(firewall[action](this.session.project, name, node.host, this.inv.cluster.port), { timeoutMs: 30_000 });
      if (action === 'drain') h.drained.add(name);
      else {
        h.drained.delete(name);
        this.lastUndrain = this.session.clock.now();
      }
    }
  }

  /**
   * Runs `change` on every item in parallel; if one fails, `undo` runs on every item — the failed
   * ones too, which may have done part of it (a file nginx -t rejected, the first of two rules).
   * Every undo is idempotent: it puts back what the host had.
   */
  private async onEvery<T extends HostState | { h: HostState }>(items: T[], change: (item: T) => Promise<void>, undo: (item: T) => Promise<void>, what: string): Promise<void> {
    if (items.length === 0) return;
    const settled = await mapLimitSettled(items, items.length, change);
    const failed = settled.map((s, i) => ({ s, item: items[i]! })).filter((x) => x.s.status === 'rejected');
    if (failed.length === 0) return;
    await mapLimitSettled(items, items.length, undo);
    const first = failed[0]!;
    const state: HostState = 'h' in first.item ? (first.item as { h: HostState }).h : (first.item as HostState);
    const label = state.host.label;
    const reason = (first.s as PromiseRejectedResult).reason;
    if (reason instanceof CliError) throw reason;
    throw new CliError(`${label}: the ${what} of the balancer failed: ${errorMessage(reason)}`, { node: label, hint: 'the other balancer hosts were put back as they were; check this host and run again' });
  }
}

function sameSet(a: ReadonlySet<string>, b: ReadonlySet<string>): boolean {
  return a.size === b.size && [...a].every((x) => b.has(x));
}
