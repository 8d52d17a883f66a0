/**
 * Inventory → the files each node and the balancer get. Pure: no disk, no network, and the
 * same inventory always gives byte-identical files.
 */
import Handlebars from 'handlebars';
import { InputError } from '../errors.js';
import type { Inventory, InventoryNode } from '../inventory/schema.js';
import type { TemplateName, TemplateSources } from './templates.js';

export interface RenderedFile {
  /** Absolute path on the host. */
  path: string;
  content: string;
  mode: number;
  /** Holds secrets: written 0600, redacted in diffs. */
  secret: boolean;
}

export interface NodeFiles {
  node: InventoryNode;
  compose: RenderedFile;
  env: RenderedFile;
}

export interface ClusterFiles {
  nodes: NodeFiles[];
  balancer: RenderedFile;
}

export interface RenderOptions {
  /** Nodes to mark `down` in the upstream (being drained). */
  drained?: ReadonlySet<string>;
  /** Nodes to leave out of the upstream entirely (being added or removed). */
  excluded?: ReadonlySet<string>;
  /** Image to render per node, where it differs from cluster.image (mid-upgrade). */
  imageOf?: (node: InventoryNode) => string;
}

/**
 * Routes New API serves itself. On a slave every other route is a 301 to FRONTEND_BASE_URL,
 * so when that is set only these may go to slaves; a prefix missing here only means its
 * requests are all served by the master.
 */
export const API_PREFIXES = ['api', 'v1', 'v1beta', 'dashboard', 'mj', 'mj-fast', 'mj-turbo', 'mj-relax', 'suno', 'pg', 'kling', 'jimeng'];

export function containerName(inv: Inventory): string {
  return `${inv.cluster.name}-new-api`;
}

export function hostPort(host: string, port: number): string {
  return host.includes(':') ? `[${host}]:${port}` : `${host}:${port}`;
}

/** The form both compose v1 (python-dotenv) and v2 (compose-go) read literally. */
export function envValue(value: unknown): string {
  const text = String(value);
  if (/[\n\r\0']/.test(text)) {
    // Validation rejects these first; this guards templates fed by other code paths.
    throw new InputError('an environment value contains a line break or a single quote', 'remove it from the inventory');
  }
  return /^[A-Za-z0-9_./:@%+=,()?&-]*$/.test(text) ? text : `'${text}'`;
}

function compile(sources: TemplateSources, name: TemplateName): Handlebars.TemplateDelegate {
  const hb = Handlebars.create();
  hb.registerHelper('yaml', (v: unknown) => JSON.stringify(String(v)));
  hb.registerHelper('env', (v: unknown) => envValue(v));
  try {
    // compile() is lazy: parse now, so a syntax error is reported as one (not as a render failure).
    hb.parse(sources[name]);
    // noEscape: these are config files, not HTML; every value is quoted by a helper or validated.
    return hb.compile(sources[name], { noEscape: true, strict: true });
  } catch (e) {
    throw new InputError(`templates: ${name} does not compile: ${(e as Error).message}`, 'fix the template or remove the override');
  }
}

function run(template: Handlebars.TemplateDelegate, name: TemplateName, context: object): string {
  try {
    return template(context);
  } catch (e) {
    throw new InputError(`templates: ${name} failed to render: ${(e as Error).message.split('\n')[0]}`, 'a template may use only the fields listed in README "Templates"');
  }
}

export function renderCluster(inv: Inventory, sources: TemplateSources, opts: RenderOptions = {}): ClusterFiles {
  const compose = compile(sources, 'compose');
  const env = compile(sources, 'env');
  const nginx = compile(sources, 'nginx');
  const dir = inv.cluster.dir;
  const extraEnv = Object.keys(inv.cluster.env)
    .sort()
    .map((key) => ({ key, value: inv.cluster.env[key] }));

  const nodes = inv.nodes.map((node): NodeFiles => {
    const context = {
      cluster: inv.cluster,
      database: inv.database,
      redis: inv.redis,
      secrets: inv.secrets,
      node,
      isSlave: node.role === 'slave',
      image: opts.imageOf?.(node) ?? inv.cluster.image,
      containerName: containerName(inv),
      publish: `${inv.cluster.port}:3000`,
      extraEnv,
    };
    return {
      node,
      compose: { path: `${dir}/docker-compose.yml`, content: run(compose, 'compose', context), mode: 0o644, secret: false },
      env: { path: `${dir}/.env`, content: run(env, 'env', context), mode: 0o600, secret: true },
    };
  });

  return { nodes, balancer: renderBalancer(inv, nginx, opts) };
}

function renderBalancer(inv: Inventory, template: Handlebars.TemplateDelegate, opts: RenderOptions): RenderedFile {
  const servers = inv.nodes
    .filter((n) => !opts.excluded?.has(n.name))
    .map((n) => ({
      name: n.name,
      role: n.role,
      isMaster: n.role === 'master',
      address: hostPort(n.host, inv.cluster.port),
      weight: n.weight,
      down: opts.drained?.has(n.name) ?? false,
    }));
  const master = servers.find((s) => s.isMaster);
  const context = {
    cluster: inv.cluster,
    upstream: `newapi_${inv.cluster.name.replace(/-/g, '_')}`,
    servers,
    master,
    webToMaster: inv.cluster.frontendBaseUrl !== undefined && master !== undefined,
    apiPrefixes: API_PREFIXES.join('|'),
    listen: inv.loadBalancer.listen,
    serverName: inv.loadBalancer.serverName,
  };
  return { path: inv.loadBalancer.configPath, content: run(template, 'nginx', context), mode: 0o644, secret: false };
}
