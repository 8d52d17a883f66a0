/**
 * The health gate: a node passes when /api/status answers 200 with success:true and, when the
 * image tag names a version, that version — continuously for rollout.minReadySeconds. New API
 * has no deeper health endpoint (/api/status does not touch the database), so a node that
 * crashes at start-up (Redis or MySQL unreachable) is caught by watching the container too.
 *
 * Bounded three ways: healthTimeoutSeconds; a run that is stopping (Ctrl-C) gives the gate at
 * most STOP_GRACE_MS more and gives up at once on a host that does not answer at all; and a hard
 * quit aborts it.
 */
import { CliError, HostUnreachableError } from '../errors.js';
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

export function versionMatches(reported: string | undefined, want: string | undefined): boolean {
  return want === undefined || (reported !== undefined && normalizeVersion(reported) === normalizeVersion(want));
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
}

/**
 * Every 100 ms while a start is young (New API takes seconds: its readiness is caught within
 * 100 ms), then backing off for a start that drags on (250 ms after 10 s, 1 s after a minute).
 */
export function pollInterval(waitedMs: number): number {
  return waitedMs < 10_000 ? 100 : waitedMs < 60_000 ? 250 : 1_000;
}
const POLL_TIMEOUT_MS = 3_000;
/** Once the run is stopping, a gate gets at most this much longer. */
export const STOP_GRACE_MS = 20_000;

/** The gate failed because the host stopped answering: the node cannot be restored either. */
export class HostLostError extends HostUnreachableError {
  constructor(node: string, why: string) {
    super(`${node}: the host does not answer (${why}); declared lost`, {
      node,
      hint: `check the host and its network; once it is back, run the command again (or newapi-cluster status to see where things stand)`,
    });
    this.name = 'HostLostError';
  }
}

export async function waitHealthy(session: Session, node: InventoryNode, opts: GateOptions): Promise<StatusAnswer> {
  const { inv, clock } = session;
  const ex = session.on(node);
  const port = opts.port ?? inv.cluster.port;
  const container = opts.container ?? containerName(inv);
  const want = expectedVersion(opts.image);
  const timeoutMs = (opts.timeoutSeconds ?? inv.rollout.healthTimeoutSeconds) * 1000;
  const minReadyMs = (opts.minReadySeconds ?? inv.rollout.minReadySeconds) * 1000;
  const started = clock.now();
  let deadline = started + timeoutMs;
  let stopNoted = false;
  let readySince: number | undefined;
  let last: StatusAnswer | undefined;
  let polls = 0;
  let unreachableSince: number | undefined;
  // Progress prints a message once however often it repeats (--verbose: every poll).
  const say = (text: string) => opts.report?.(text);

  while (clock.now() < deadline) {
    session.aborted.throwIfAborted();
    if (session.stopping && !stopNoted) {
      stopNoted = true;
      deadline = Math.min(deadline, clock.now() + STOP_GRACE_MS);
      // Stopping: waiting for a host that was already silent would hold the whole run's wind-down.
      if (last?.unreachable) throw new HostLostError(node.name, last.problem ?? 'no answer');
    }
    last = await getStatus(ex, port, POLL_TIMEOUT_MS);
    if (last.unreachable) {
      unreachableSince ??= clock.now();
      // Stopping: waiting for a silent host would hold the whole run's wind-down.
      if (session.stopping) throw new HostLostError(node.name, last.problem ?? 'no answer');
    } else {
      unreachableSince = undefined;
    }
    if (last.success && versionMatches(last.version, want)) {
      readySince ??= clock.now();
      const held = clock.now() - readySince;
      if (held >= minReadyMs) return last;
      say(`healthy (${last.version ?? 'version unknown'}); holding for ${minReadyMs / 1000} s`);
    } else {
      readySince = undefined;
      say(last.success ? `answers ${last.version ?? 'no version'}, waiting for ${want}` : `waiting: ${last.problem ?? 'not healthy'}`);
      // Every few polls, look at the container: a crash loop will not heal by waiting.
      if (!last.unreachable && ++polls % 20 === 0) {
        const state = await getContainerState(ex, container);
        if (!state.exists || state.status === 'exited' || state.status === 'dead' || state.restartCount >= 3) {
          throw await gateError(session, node, ex, container, `the container is ${state.exists ? `${state.status} (restarted ${state.restartCount} times)` : 'gone'}`);
        }
      }
    }
    await clock.sleep(pollInterval(clock.now() - started), session.aborted);
  }
  // A host silent for the whole time is lost; asking it for logs would only wait again.
  if (unreachableSince !== undefined && last?.unreachable) throw new HostLostError(node.name, last.problem ?? 'no answer');
  const why = last?.success ? `it answers version ${last.version}, not ${want}` : (last?.problem ?? 'no answer');
  const waited = Math.round((clock.now() - started) / 1000);
  throw await gateError(session, node, ex, container, `not healthy after ${waited} s: ${why}`);
}

async function gateError(session: Session, node: InventoryNode, ex: Executor, container: string, what: string): Promise<CliError> {
  const logs = await ex.exec(docker.logs(container, { tail: '5' }), { allowFailure: true, timeoutMs: 5_000 }).catch(() => undefined);
  const tail = `${logs?.stdout ?? ''}${logs?.stderr ?? ''}`.trim().split('\n').filter(Boolean).slice(-3);
  return new CliError(`${node.name} failed its health gate: ${what}${tail.length ? `; last log lines: ${tail.join(' | ')}` : ''}`, {
    node: node.name,
    hint: `newapi-cluster logs --node ${node.name} --tail 100`,
  });
}
