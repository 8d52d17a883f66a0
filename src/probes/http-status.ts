/**
 * GET /api/status on a node, as the node itself sees it (127.0.0.1 through the SSH connection),
 * so a firewall between the operator and the node does not matter.
 */
import { request, type RequestOptions } from 'node:http';
import type { Duplex } from 'node:stream';
import { HostUnreachableError } from '../errors.js';
import type { Executor } from '../remote/types.js';

export interface StatusAnswer {
  /** HTTP status, or undefined when no answer came (refused, reset, timed out). */
  httpStatus: number | undefined;
  success: boolean;
  version: string | undefined;
  startTime: number | undefined;
  /** Why it is not healthy, in a few words. */
  problem: string | undefined;
  /** The host itself did not answer (SSH down, dropped, or silent): not the same as a server still starting. */
  unreachable: boolean;
  headers: Record<string, string | string[] | undefined>;
}

export async function getStatus(executor: Executor, port: number, timeoutMs = 5000): Promise<StatusAnswer> {
  let unreachable = false;
  let tunnelOpened = false;
  const none = (problem: string): StatusAnswer => ({ httpStatus: undefined, success: false, version: undefined, startTime: undefined, problem, headers: {}, unreachable });
  return new Promise<StatusAnswer>((resolveAnswer) => {
    let done = false;
    const finish = (a: StatusAnswer) => {
      if (!done) {
        done = true;
        clearTimeout(timer);
        resolveAnswer(a);
      }
    };
    const timer = setTimeout(() => {
      // No answer at all within the time, not even a refusal: the host, not the server, is silent.
      if (!tunnelOpened) unreachable = true;
      req.destroy();
      finish(none(`no answer within ${timeoutMs / 1000} s`));
    }, timeoutMs);
    const req = request(
      {
        host: '127.0.0.1',
        port,
        path: '/api/status',
        method: 'GET',
        headers: { Connection: 'close' },
        createConnection: (_opts: unknown, oncreate: (err: Error | null, socket: Duplex) => void) => {
          executor.openTunnel('127.0.0.1', port, { timeoutMs }).then(
            (s) => {
              tunnelOpened = true;
              oncreate(null, s);
            },
            (e: Error) => {
              if (e instanceof HostUnreachableError) unreachable = true;
              oncreate(e, undefined as unknown as Duplex);
            },
          );
          return undefined;
        },
      } as unknown as RequestOptions,
      (res) => {
        const chunks: Buffer[] = [];
        res.on('data', (c: Buffer) => chunks.push(c));
        res.on('error', () => finish(none('the answer was cut off')));
        res.on('end', () => {
          const body = Buffer.concat(chunks).toString('utf8');
          let json: { success?: unknown; data?: { version?: unknown; start_time?: unknown } } | undefined;
          try {
            json = JSON.parse(body) as typeof json;
          } catch {
            json = undefined;
          }
          const success = json?.success === true;
          const version = typeof json?.data?.version === 'string' ? json.data.version : undefined;
          finish({
            httpStatus: res.statusCode,
            success,
            version,
            startTime: typeof json?.data?.start_time === 'number' ? json.data.start_time : undefined,
            problem:
              res.statusCode !== 200
                ? `HTTP ${res.statusCode}`
                : json === undefined
                  ? 'the answer is not JSON'
                  : !success
                    ? 'success is not true'
                    : undefined,
            headers: res.headers,
            unreachable: false,
          });
        });
      },
    );
    req.on('error', (e) => finish(none(shortNetError(e))));
    req.end();
  });
}

function shortNetError(e: Error & { code?: string }): string {
  if (e instanceof HostUnreachableError) return `the host does not answer (${e.message.replace(/^[^:]+: /, '')})`;
  if (e.code === 'ECONNRESET' || /reset|closed/i.test(e.message)) return 'the connection was closed without an answer';
  if (/refused|Connection refused|open failed/i.test(e.message)) return 'connection refused (nothing listens yet)';
  return e.message.split('\n')[0] ?? 'no answer';
}
