/**
 * A bounded load generator that sends New API-like traffic through the balancer and counts
 * every failure. Real traffic is POST (never retried by nginx once sent) and long SSE streams
 * (cut when a node stops), so that is what it sends: GET-only load hides failures.
 * Bounded in time and count, paced so a fast failure does not turn into a flood.
 */
import { Agent as HttpAgent, request } from 'node:http';
import { Agent as HttpsAgent, request as httpsRequest } from 'node:https';

export interface LoadOptions {
  host: string;
  port: number;
  workers: number;
  /** HTTPS, trusting this CA, with this SNI name (default: plain HTTP). */
  tls?: { ca: string; servername: string };
  /**
   * Reuse connections (keep-alive), as real clients do (urllib3, Node, Go: each checks that a
   * pooled connection is still open before reusing it). Default: one connection per request.
   */
  keepAlive?: boolean;
  /** Stops sending after this long (ms) even if not stopped by hand. */
  maxDurationMs: number;
  maxRequests: number;
  /** Pause between two requests of one worker. */
  pauseMs: number;
}

export interface Failure {
  at: number;
  kind: 'json' | 'stream';
  why: string;
}

export interface LoadReport {
  sent: number;
  ok: number;
  failed: number;
  streams: number;
  failures: Failure[];
  latenciesMs: number[];
  /** Node identity (X-Standin-Host) → requests answered. */
  byHost: Record<string, number>;
  /** Versions seen in answers. */
  byVersion: Record<string, number>;
  p50: number;
  p99: number;
}

export function percentile(sorted: number[], p: number): number {
  if (sorted.length === 0) return 0;
  return sorted[Math.min(sorted.length - 1, Math.floor((p / 100) * sorted.length))] ?? 0;
}

function once(o: LoadOptions, stream: boolean, agent: HttpAgent | HttpsAgent | false): Promise<{ ok: boolean; why?: string; host?: string; version?: string }> {
  return new Promise((resolve) => {
    const body = JSON.stringify({ model: 'gpt-4o-mini', stream, messages: [{ role: 'user', content: 'hello' }] });
    const timer = setTimeout(() => {
      req.destroy(new Error('timed out after 30 s'));
    }, 30_000);
    const options = {
      agent,
      host: o.host,
      port: o.port,
      path: '/v1/chat/completions',
      method: 'POST',
      headers: { 'content-type': 'application/json', 'content-length': Buffer.byteLength(body), authorization: 'Bearer sk-load' },
      ...(o.tls ? { ca: o.tls.ca, servername: o.tls.servername } : {}),
    };
    const req = (o.tls ? httpsRequest : request)(
      // By default one connection per request. With keepAlive, connections are reused: the test
      // of draining without closing client connections (an nginx reload closes idle ones, and a
      // POST sent on one at that instant fails without a retry).
      options,
      (res) => {
        let text = '';
        res.setEncoding('utf8');
        res.on('data', (c: string) => (text += c));
        res.on('error', (e) => {
          clearTimeout(timer);
          resolve({ ok: false, why: `response error: ${e.message}` });
        });
        res.on('end', () => {
          clearTimeout(timer);
          const host = String(res.headers['x-standin-host'] ?? '');
          const version = String(res.headers['x-standin-version'] ?? '');
          if (res.statusCode !== 200) return resolve({ ok: false, why: `HTTP ${res.statusCode}`, host });
          if (stream) {
            if (!text.trimEnd().endsWith('data: [DONE]')) return resolve({ ok: false, why: 'stream cut before data: [DONE]', host });
            return resolve({ ok: true, host, version });
          }
          try {
            JSON.parse(text);
            resolve({ ok: true, host, version });
          } catch {
            resolve({ ok: false, why: 'reply is not JSON', host });
          }
        });
      },
    );
    req.on('error', (e) => {
      clearTimeout(timer);
      resolve({ ok: false, why: `request error: ${e.message}` });
    });
    req.end(body);
  });
}

export class LoadGenerator {
  private stopped = false;
  private readonly done: Promise<void>;
  private readonly report: Omit<LoadReport, 'p50' | 'p99'> = { sent: 0, ok: 0, failed: 0, streams: 0, failures: [], latenciesMs: [], byHost: {}, byVersion: {} };
  private readonly started = Date.now();

  private readonly agent: HttpAgent | HttpsAgent | false;

  constructor(private readonly o: LoadOptions) {
    this.agent = o.keepAlive ? (o.tls ? new HttpsAgent({ keepAlive: true, maxSockets: o.workers, ca: o.tls.ca }) : new HttpAgent({ keepAlive: true, maxSockets: o.workers })) : false;
    this.done = Promise.all(Array.from({ length: o.workers }, (_, i) => this.worker(i))).then(() => undefined);
  }

  private async worker(i: number): Promise<void> {
    let n = 0;
    while (!this.stopped && Date.now() - this.started < this.o.maxDurationMs && this.report.sent < this.o.maxRequests) {
      const stream = (i + n++) % 2 === 0;
      this.report.sent++;
      if (stream) this.report.streams++;
      const t0 = Date.now();
      const r = await once(this.o, stream, this.agent);
      this.report.latenciesMs.push(Date.now() - t0);
      if (r.ok) {
        this.report.ok++;
        if (r.host) this.report.byHost[r.host] = (this.report.byHost[r.host] ?? 0) + 1;
        if (r.version) this.report.byVersion[r.version] = (this.report.byVersion[r.version] ?? 0) + 1;
      } else {
        this.report.failed++;
        this.report.failures.push({ at: Date.now() - this.started, kind: stream ? 'stream' : 'json', why: r.why ?? 'unknown' });
      }
      await new Promise((r2) => setTimeout(r2, this.o.pauseMs));
    }
  }

  async stop(): Promise<LoadReport> {
    this.stopped = true;
    await this.done;
    if (this.agent) this.agent.destroy();
    const sorted = [...this.report.latenciesMs].sort((a, b) => a - b);
    return { ...this.report, p50: percentile(sorted, 50), p99: percentile(sorted, 99) };
  }
}
