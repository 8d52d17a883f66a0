/**
 * A balancer pair's floating address (loadBalancer.vip), held by keepalived on whichever
 * balancer is healthy: each host gets the same VRRP instance with its own priority (the first
 * listed is preferred), a health script that fails when nginx is not running there, and the other
 * hosts as unicast peers. keepalived is started where it is installed but not running, and told
 * to re-read its configuration where it runs.
 */
import { CliError } from '../errors.js';
import { keepalived as ka } from '../remote/commands.js';
import { NGINX_CHECK_SCRIPT, renderKeepalived, vrrpPaths } from '../render/render.js';
import type { TemplateSources } from '../render/templates.js';
import type { BalancerHost, Session } from './session.js';

const OURS = /^# Managed by newapi-cluster/;

/** Returns whether a configuration changed. */
export async function ensureVrrp(session: Session, templates: TemplateSources, report: (t: string) => void): Promise<boolean> {
  const inv = session.inv;
  const hosts = session.balancers();
  const vip = inv.loadBalancer.vip;
  if (hosts.length < 2 || !vip) return false;
  const paths = vrrpPaths(inv);

  // Where each host reaches the vip's network: the interface, its prefix length, its own address.
  const routes = await Promise.all(
    hosts.map(async (h) => {
      const state = (await h.ex.exec(ka.state(), { allowFailure: true, timeoutMs: 30_000 })).stdout.trim();
      if (state === 'missing') throw new CliError('keepalived is not installed: a balancer pair needs it to hold the vip', { node: h.label, hint: 'apt-get install keepalived on every balancer host' });
      const r = await h.ex.exec(ka.routeTo(vip), { allowFailure: true, timeoutMs: 30_000 });
      const [dev, prefix, self] = r.stdout.trim().split(' ');
      if (r.code !== 0 || !dev || !self) throw new CliError(`no interface of ${h.host} routes to the vip ${vip}`, { node: h.label, hint: 'the vip must be an address of the balancers\' own network; or set loadBalancer.vipInterface' });
      return { h, dev: inv.loadBalancer.vipInterface ?? dev, prefix: Number(prefix) || 24, self };
    }),
  );
  let changed = false;
  await Promise.all(
    routes.map(async ({ h, dev, prefix, self }) => {
      const file = renderKeepalived(inv, templates, { label: h.label, self, peers: routes.filter((r) => r.h !== h).map((r) => r.self), interface: dev, prefix, index: h.index });
      const [current, script] = await Promise.all([h.ex.readFile(paths.config), h.ex.readFile(paths.checkScript)]);
      const text = current?.toString('utf8');
      if (text !== undefined && text.trim() !== '' && !OURS.test(text)) {
        throw new CliError(`${paths.config} on ${h.host} was not written by newapi-cluster; it is left alone`, {
          node: h.label,
          hint: `move your own VRRP instances elsewhere (e.g. an include), or remove ${paths.config}, then deploy again`,
        });
      }
      const hostChanged = text !== file.content || script?.toString('utf8') !== NGINX_CHECK_SCRIPT;
      if (script?.toString('utf8') !== NGINX_CHECK_SCRIPT) await h.ex.upload(paths.checkScript, NGINX_CHECK_SCRIPT, 0o755);
      if (text !== file.content) await h.ex.upload(paths.config, file.content, 0o644);
      const running = (await h.ex.exec(ka.state(), { allowFailure: true, timeoutMs: 30_000 })).stdout.trim() === 'running';
      if (hostChanged || !running) {
        const r = await h.ex.exec(ka.startOrReload(), { timeoutMs: 60_000 });
        report(`${h.label}: keepalived ${r.stdout.trim() || 'started'}`);
        changed = true;
      }
    }),
  );
  return changed;
}

/** The balancer that holds the vip now, if any. */
export async function vipHolder(session: Session): Promise<BalancerHost | undefined> {
  const vip = session.inv.loadBalancer.vip;
  if (!vip) return undefined;
  for (const h of session.balancers()) {
    const r = await h.ex.exec(ka.holds(vip), { allowFailure: true, timeoutMs: 10_000 }).catch(() => undefined);
    if (r?.stdout.trim()) return h;
  }
  return undefined;
}
