/**
 * The health gate: a node passes when /api/status answers 200 with success:true and, when the
 * image tag names a version, that version — continuously for rollout.minReadySeconds. New API
 * has no deeper health endpoint (/api/status does not touch the database), so a node that
 * crashes at start-up (Redis or MySQL unreachable) is caught by watching the container too.
 */
import { CliError } from '../errors.js';
import { isVersionTag, parseImageRef } from '../inventory/image.js';
import type { InventoryNode } from '../inventory/schema.js';
import { getContainerState } from '../probes/container.js';
import { getStatus, type StatusAnswer } from '../probes/http-status.js';
import { docker } from '../remote/commands.js';
import type { Executor } from '../remote/types.js';
import { containerName } from '../render/render.js';
import type { Session } from './session.js';

export const normalizeVersion = (v: string) => v.replace(/^v/, '');

/** The version /api/status must report for this image, when its tag names one. */
export function expectedVersion(image: string): string | undefined {
  const { tag } = parseImageRef(image);
  return isVersionTag(tag) ? tag : undefined;
}

export interface GateOptions {
  image: string;
  /** Port on the node's loopback to probe (default cluster.port). */
  port?: number;
  /** Container to watch for crashes (default the cluster's). */
  container?: string;
  timeoutSeconds?: number;
  minReadySeconds?: number;
  report?: (text: string) => void;
  signal?: AbortSignal;
}

const POLL_MS = 250;

export async function waitHealthy(session: Session, node: InventoryNode, opts: GateOptions): Promise<StatusAnswer> {
  const inv = session.inv;
  const ex = session.on(node);
  const port = opts.port ?? inv.cluster.port;
  const container = opts.container ?? containerName(inv);
  const want = expectedVersion(opts.image);
  const timeoutMs = (opts.timeoutSeconds ?? inv.rollout.healthTimeoutSeconds) * 1000;
  const minReadyMs = (opts.minReadySeconds ?? inv.rollout.minReadySeconds) * 1000;
  const started = Date.now();
  let readySince: number | undefined;
  let last: StatusAnswer | undefined;
  let polls = 0;

  while (Date.now() - started < timeoutMs) {
    if (opts.signal?.aborted) throw opts.signal.reason;
    last = await getStatus(ex, port, 3000);
    const versionOk = want === undefined || (last.version !== undefined && normalizeVersion(last.version) === normalizeVersion(want));
    if (last.success && versionOk) {
      readySince ??= Date.now();
      const held = Date.now() - readySince;
      if (held >= minReadyMs) return last;
      opts.report?.(`healthy (${last.version ?? 'version unknown'}), holding ${Math.ceil((minReadyMs - held) / 1000)} s more`);
    } else {
      readySince = undefined;
      opts.report?.(last.success ? `answers ${last.version ?? 'no version'}, waiting for ${want}` : `waiting: ${last.problem ?? 'not healthy'}`);
      // Every few polls, look at the container: a crash loop will not heal by waiting.
      if (++polls % 12 === 0) {
        const state = await getContainerState(ex, container);
        if (!state.exists || state.status === 'exited' || state.status === 'dead' || state.restartCount >= 3) {
          throw await gateError(session, node, ex, container, `the container is ${state.exists ? `${state.status} (restarted ${state.restartCount} times)` : 'gone'}`);
        }
      }
    }
    await sleep(POLL_MS, opts.signal);
  }
  const why = last?.success ? `it answers version ${last.version}, not ${want}` : (last?.problem ?? 'no answer');
  throw await gateError(session, node, ex, container, `not healthy after ${Math.round(timeoutMs / 1000)} s: ${why}`);
}

async function gateError(session: Session, node: InventoryNode, ex: Executor, container: string, what: string): Promise<CliError> {
  const logs = await ex.exec(docker.logs(container, { tail: '5' }), { allowFailure: true, timeoutMs: 10_000 }).catch(() => undefined);
  const tail = `${logs?.stdout ?? ''}${logs?.stderr ?? ''}`.trim().split('\n').filter(Boolean).slice(-3);
  return new CliError(`${node.name} failed its health gate: ${what}${tail.length ? `; last log lines: ${tail.join(' | ')}` : ''}`, {
    node: node.name,
    hint: `newapi-cluster logs --node ${node.name} --tail 100`,
  });
}

export function sleep(ms: number, signal?: AbortSignal): Promise<void> {
  return new Promise((resolve, reject) => {
    if (signal?.aborted) return reject(signal.reason);
    const t = setTimeout(() => {
      signal?.removeEventListener('abort', onAbort);
      resolve();
    }, ms);
    const onAbort = () => {
      clearTimeout(t);
      reject(signal?.reason);
    };
    signal?.addEventListener('abort', onAbort, { once: true });
  });
}
