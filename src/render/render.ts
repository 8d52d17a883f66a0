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
  /** The balancer answers every request with 503 and a JSON body (restore). */
  maintenance?: boolean;
  /**
   * Whether the balancers hold the certificate yet (default true). Before an ACME certificate
   * exists the HTTPS server cannot be configured: port 80 serves, and answers the challenges.
   */
  tlsReady?: boolean;
}

/** Where the balancers keep the certificate, its key, and the ACME challenge tokens. */
export function tlsPaths(inv: Inventory): { dir: string; certificate: string; key: string; acmeWebroot: string } {
  const dir = `/etc/nginx/newapi-cluster/${inv.cluster.name}`;
  return { dir, certificate: `${dir}/fullchain.pem`, key: `${dir}/privkey.pem`, acmeWebroot: `/var/lib/newapi-cluster/acme/${inv.cluster.name}` };
}

/** The port New API listens on inside its container (PORT); cluster.port publishes it. */
export const CONTAINER_PORT = 3000;

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

/**
 * The form of a `.env` value that compose v1 (docker-compose 1.29 with python-dotenv 0.21) and
 * compose v2 (compose-go's dotenv parser) both read back as exactly `value`; the rules of each
 * parser are spelled out in test/support/env-parsers.ts, and test/unit/render/env-format.test.ts
 * checks this against them and against the real docker-compose 1.29.
 *
 * - bare, when nothing in it is syntax to either parser (and `docker run --env-file` then reads
 *   it the same too);
 * - else `'…'`: neither unescapes anything in it, and compose v2 expands no `$` there. But python-
 *   dotenv reads `\\` as `\` and `\'` as `'` (compose-go keeps both backslashes), and both take
 *   a quote after a backslash as escaped;
 * - else `"…"` with `\` and `"` escaped, which both unescape alike. But compose v2 expands `$`
 *   before a letter, `_`, `$` or `{` there, where python-dotenv keeps it, and python-dotenv's
 *   regex runs on past a closing quote that follows a backslash;
 * - else bare after all: a value ending in a backslash can be written only bare.
 *
 * A value none of these carries is refused, through `refuse(reason, hint)`: by default an
 * InputError (templates fed by other code paths); checkEnvValue passes its own to report the
 * reason as a validation problem. Refused whatever the form: line breaks (a second variable),
 * NUL (no environment can hold it), lone UTF-16 surrogates (not writable as UTF-8), and `${…}`,
 * which python-dotenv replaces with a variable's value inside any quotes, with no escape.
 */
export function envValue(
  value: unknown,
  refuse: (reason: string, hint: string) => string = (reason, hint) => {
    throw new InputError(`an environment value ${reason}`, hint);
  },
): string {
  const text = String(value);
  if (/[\n\r]/.test(text)) return refuse('contains a line break', 'environment values must fit on one line');
  if (text.includes('\0')) return refuse('contains a NUL character, which no environment variable can hold', 'remove it');
  if (/[\uD800-\uDBFF](?![\uDC00-\uDFFF])|(?<![\uD800-\uDBFF])[\uDC00-\uDFFF]/.test(text)) return refuse('holds a lone UTF-16 surrogate, which cannot be written as UTF-8', 'fix the value');
  // python-dotenv 0.21 dotenv/variables.py: `${NAME}` or `${NAME:-default}`, in every form.
  if (/\$\{[^}:]*(?::-[^}]*)?\}/.test(text)) {
    return refuse('contains ${…}, which compose v1 replaces with a variable even inside quotes (a .env file has no escape for it)', 'choose a value without ${…}');
  }
  if (/^[A-Za-z0-9_./:@%+=,()?&-]*$/.test(text)) return text;

  // What compose v2 expands outside single quotes: $$, $name, ${ (its name class is [_a-z] under
  // Go's (?i), which folds in ſ and the Kelvin sign).
  const expands = /\$[A-Za-z_{$\u017f\u212a]/.test(text);
  const endsInBackslash = text.endsWith('\\');
  if (!text.includes("'") && !text.includes('\\\\') && !endsInBackslash) return `'${text}'`;
  if (!expands && !endsInBackslash) return `"${text.replace(/[\\"]/g, (c) => `\\${c}`)}"`;

  // Bare after all (only a value ending in a backslash, so not in a blank, gets here bare): a
  // blank first is skipped (Python's str.isspace and Go's unicode.IsSpace: the union), a blank
  // before # starts a comment, a quote first opens a quoted value, and compose v2 expands $.
  const space = '\\t\\n\\v\\f\\r\\x1c-\\x20\\x85\\xa0\\u1680\\u2000-\\u200a\\u2028\\u2029\\u202f\\u205f\\u3000';
  const bareProblem = new RegExp(`^[${space}]`).test(text)
    ? 'starts with a blank'
    : /^['"]/.test(text)
      ? 'starts with a quote'
      : new RegExp(`[${space}]#`).test(text)
        ? 'has # after a blank'
        : expands
          ? 'has $ before a letter, _, $ or {, which compose v2 expands'
          : undefined;
  if (bareProblem === undefined) return text;
  if (endsInBackslash) {
    return refuse(
      `ends with a backslash (\\), which compose v1 or v2 misreads before a closing quote, and ${bareProblem}, so it needs quotes`,
      'choose a value that does not end with a backslash',
    );
  }
  const other = text.includes("'") ? "a single quote (')" : 'two backslashes in a row (\\\\)';
  return refuse(
    `contains both ${other} and $ before a letter, _, $ or {: compose v2 expands such a $ unless the value is in single quotes, and ${
      text.includes("'") ? "single quotes cannot carry a single quote (older compose v2 keeps the backslash of \\')" : 'inside single quotes compose v1 reads \\\\ as one backslash'
    }`,
    'choose a value without one of the two',
  );
}

/** Compiled templates by their text: a run renders the same few templates many times. */
const compiled = new Map<string, Handlebars.TemplateDelegate>();

function compile(sources: TemplateSources, name: TemplateName): Handlebars.TemplateDelegate {
  const text = sources[name];
  let template = compiled.get(text);
  if (!template) {
    template = compileNew(text, name);
    compiled.set(text, template);
  }
  return template;
}

function compileNew(text: string, name: TemplateName): Handlebars.TemplateDelegate {
  const hb = Handlebars.create();
  hb.registerHelper('yaml', (v: unknown) => JSON.stringify(String(v)));
  hb.registerHelper('env', (v: unknown) => envValue(v));
  try {
    // compile() is lazy: parse now, so a syntax error is reported as one (not as a render failure).
    const ast = hb.parse(text);
    // noEscape: these are config files, not HTML; every value is quoted by a helper or validated.
    return hb.compile(ast, { noEscape: true, strict: true });
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
      publish: `${inv.cluster.port}:${CONTAINER_PORT}`,
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
  const tls = inv.loadBalancer.tls;
  const paths = tlsPaths(inv);
  const tlsReady = tls !== undefined && opts.tlsReady !== false;
  const context = {
    cluster: inv.cluster,
    upstream: `newapi_${inv.cluster.name.replace(/-/g, '_')}`,
    servers,
    master,
    webToMaster: inv.cluster.frontendBaseUrl !== undefined && master !== undefined,
    apiPrefixes: API_PREFIXES.join('|'),
    listen: inv.loadBalancer.listen,
    serverName: inv.loadBalancer.serverName,
    maintenance: opts.maintenance ?? false,
    tls: tlsReady ? { listen: tls.listen, certificatePath: paths.certificate, keyPath: paths.key } : null,
    redirectHttp: tlsReady && tls.redirectHttp,
    acmeWebroot: tls?.acme ? paths.acmeWebroot : null,
  };
  return { path: inv.loadBalancer.configPath, content: run(template, 'nginx', context), mode: 0o644, secret: false };
}

export interface VrrpHost {
  /** The balancer's label (balancer-1…) and its own address. */
  label: string;
  self: string;
  /** The other balancers' addresses. */
  peers: string[];
  interface: string;
  /** Prefix length of the vip on that interface (its own address's). */
  prefix: number;
  /** Its place in loadBalancer.hosts: the first is preferred. */
  index: number;
}

/** Where keepalived reads its configuration, and the script that tells it whether nginx runs. */
export function vrrpPaths(inv: Inventory): { config: string; checkScript: string } {
  return { config: '/etc/keepalived/keepalived.conf', checkScript: `/etc/keepalived/newapi-${inv.cluster.name}-nginx.sh` };
}

/** A VRRP router id from the cluster's name (1–255), so two clusters on one network differ. */
export function vrrpRouterId(cluster: string): number {
  let h = 0;
  for (const c of cluster) h = (h * 31 + c.charCodeAt(0)) >>> 0;
  return (h % 255) + 1;
}

/** keepalived's configuration for one balancer of a pair: the vip, its health script, its peers. */
export function renderKeepalived(inv: Inventory, sources: TemplateSources, host: VrrpHost): RenderedFile {
  const template = compile(sources, 'keepalived');
  const paths = vrrpPaths(inv);
  const context = {
    cluster: inv.cluster.name,
    routerName: inv.cluster.name.replace(/-/g, '_'),
    routerId: vrrpRouterId(inv.cluster.name),
    label: host.label,
    vip: inv.loadBalancer.vip,
    prefix: host.prefix,
    interface: host.interface,
    priority: 200 - host.index * 10,
    advertInterval: 0.5,
    self: host.self,
    peers: host.peers,
    checkScript: paths.checkScript,
  };
  return { path: paths.config, content: run(template, 'keepalived', context), mode: 0o644, secret: false };
}

/** keepalived's health script: fails when nginx is not running, so the vip moves to a balancer whose nginx is. */
export const NGINX_CHECK_SCRIPT = '#!/bin/sh\n# Managed by newapi-cluster: keepalived gives the vip up when nginx is not running here.\n[ -s /run/nginx.pid ] && kill -0 "$(cat /run/nginx.pid)" 2>/dev/null\n';
