/**
 * rollout.hooks: commands run on the operator's machine around each node's move, for balancers
 * the tool does not manage (a cloud load balancer's CLI, a CDN's API): beforeDrain → [drain] →
 * beforeUpgrade → [recreate, gate] → afterUpgrade → [put back] → afterReady. Each runs by `sh -c`
 * in the inventory's folder, with the node's facts in NEWAPI_* variables and never a secret in its
 * environment, its output shown line by line, bounded by rollout.hookTimeoutSeconds. A non-zero
 * exit fails the step.
 */
import { spawn } from 'node:child_process';
import { createInterface } from 'node:readline';
import { CliError } from '../errors.js';
import { parseImageRef } from '../inventory/image.js';
import type { HookName, InventoryNode } from '../inventory/schema.js';
import type { Session } from './session.js';

/** Variables a hook must never inherit, whatever their value. */
const SECRET_NAMES = /^(SQL_DSN|LOG_SQL_DSN|REDIS_CONN_STRING|SESSION_SECRET|CRYPTO_SECRET)$|SECRET|PASSWORD|PASSWD|TOKEN|CREDENTIAL/i;

/** The hook's environment: this process's, without any secret, plus the node's facts. */
export function hookEnv(session: Session, name: HookName, node: InventoryNode, image: string, base: NodeJS.ProcessEnv = process.env): Record<string, string> {
  const secrets = session.loaded.secretValues;
  const env: Record<string, string> = {};
  for (const [k, v] of Object.entries(base)) {
    if (v === undefined || SECRET_NAMES.test(k) || k.startsWith('NEWAPI_') || secrets.some((s) => v.includes(s))) continue;
    env[k] = v;
  }
  return {
    ...env,
    NEWAPI_CLUSTER: session.project,
    NEWAPI_NODE: node.name,
    NEWAPI_HOST: node.host,
    NEWAPI_PORT: String(session.inv.cluster.port),
    NEWAPI_ROLE: node.role,
    NEWAPI_VERSION: parseImageRef(image).tag ?? image,
    NEWAPI_PHASE: name,
  };
}

/** How long output still in the pipes is read once the hook exited (a background process may hold them open). */
const DRAIN_OUTPUT_MS = 200;
/** After SIGTERM to the hook's process group, SIGKILL this much later. */
const KILL_AFTER_MS = 2_000;

export async function runHook(session: Session, name: HookName, node: InventoryNode, image: string, report: (text: string) => void): Promise<void> {
  const command = session.inv.rollout.hooks[name];
  if (!command) return;
  const seconds = session.inv.rollout.hookTimeoutSeconds;
  report(`hook ${name}: ${command}`);
  // Its own process group, so a timeout or a stop ends everything the hook started, not only sh.
  const child = spawn('sh', ['-c', command], { cwd: session.inventoryDir, env: hookEnv(session, name, node, image), stdio: ['ignore', 'pipe', 'pipe'], detached: true });
  let last = '';
  const ended = [child.stdout, child.stderr].map((stream) => {
    const lines = createInterface({ input: stream, crlfDelay: Infinity });
    lines.on('line', (text) => {
      if (text.trim() === '') return;
      last = text;
      report(`[${name}] ${text}`);
    });
    return new Promise<void>((resolve) => lines.once('close', resolve));
  });
  const killGroup = (signal: NodeJS.Signals) => {
    try {
      if (child.pid !== undefined) process.kill(-child.pid, signal);
    } catch {
      // Already gone.
    }
  };
  const result = await new Promise<{ code: number | null; signal: NodeJS.Signals | null; why?: 'timeout' | 'stopped'; error?: Error }>((resolve) => {
    let why: 'timeout' | 'stopped' | undefined;
    let killer: NodeJS.Timeout | undefined;
    const stop = (reason: 'timeout' | 'stopped') => {
      why ??= reason;
      killGroup('SIGTERM');
      killer ??= setTimeout(() => killGroup('SIGKILL'), KILL_AFTER_MS);
    };
    const timer = setTimeout(() => stop('timeout'), seconds * 1000);
    const onAbort = () => stop('stopped');
    if (session.aborted.aborted) onAbort();
    else session.aborted.addEventListener('abort', onAbort, { once: true });
    const done = (r: { code: number | null; signal: NodeJS.Signals | null; error?: Error }) => {
      clearTimeout(timer);
      if (killer) clearTimeout(killer);
      session.aborted.removeEventListener('abort', onAbort);
      resolve(why ? { ...r, why } : r);
    };
    child.once('error', (error) => done({ code: null, signal: null, error }));
    child.once('exit', (code, signal) => done({ code, signal }));
  });
  // The hook has ended: read what is left of its output briefly, then let go of the pipes, which
  // a process it left in the background may keep open for as long as it runs.
  await Promise.race([Promise.all(ended), new Promise((r) => setTimeout(r, DRAIN_OUTPUT_MS).unref())]);
  child.stdout.destroy();
  child.stderr.destroy();

  if (result.why === 'timeout') throw new CliError(`${node.name}: hook ${name} did not finish within ${seconds} s`, { node: node.name, hint: `rollout.hookTimeoutSeconds is ${seconds}; make the hook faster or raise it` });
  if (result.why === 'stopped') throw new CliError(`${node.name}: hook ${name} was stopped`, { node: node.name });
  if (result.error) throw new CliError(`${node.name}: hook ${name} could not be started: ${result.error.message}`, { node: node.name });
  if (result.code !== 0) {
    throw new CliError(`${node.name}: hook ${name} failed (exit ${result.code ?? result.signal})${last ? `: ${last}` : ''}`, {
      node: node.name,
      hint: `run it by hand with the same NEWAPI_* variables (NEWAPI_NODE=${node.name} NEWAPI_PHASE=${name} …) to see why`,
    });
  }
}
