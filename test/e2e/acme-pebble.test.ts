/**
 * The ACME engine against a real ACME server: Debian's `pebble` (Let's Encrypt's test CA) and
 * `pebble-challtestsrv` (its DNS: every name resolves to 127.0.0.1), started here on random free
 * ports of 127.0.0.1, with their own HTTPS certificate made by openssl. It does not use the lab.
 * Pebble's HTTP-01 validations come to an HTTP server of this test that serves what `publish`
 * stored. pebble is installed with apt-get if missing; if that fails, the suite FAILS (never skips).
 */
import { execFileSync, spawn, type ChildProcess } from 'node:child_process';
import { X509Certificate, createPrivateKey } from 'node:crypto';
import { createSocket } from 'node:dgram';
import { existsSync } from 'node:fs';
import { mkdir, mkdtemp, readFile, readdir, rm, stat, writeFile } from 'node:fs/promises';
import http from 'node:http';
import https from 'node:https';
import { createServer, connect } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, beforeEach, describe, expect, it } from 'vitest';
import { CliError } from '../../src/errors.js';
import { loadAcmeState, saveAcmeState } from '../../src/probes/acme-store.js';
import { certificateInfo, needsRenewal, obtainCertificate, splitPemChain, type ObtainOptions } from '../../src/probes/acme.js';

const PEBBLE = '/usr/bin/pebble';
const CHALLTESTSRV = '/usr/bin/pebble-challtestsrv';

// ---------------------------------------------------------------------------------------------
// The servers
// ---------------------------------------------------------------------------------------------

function ensurePebble(): void {
  if (existsSync(PEBBLE) && existsSync(CHALLTESTSRV)) return;
  const env = { ...process.env, DEBIAN_FRONTEND: 'noninteractive', NEEDRESTART_SUSPEND: '1' };
  const attempt = (args: string[]): string => {
    try {
      execFileSync('apt-get', args, { env, stdio: 'pipe', timeout: 240_000 });
      return '';
    } catch (e) {
      const err = e as { stderr?: Buffer; message: string };
      return (err.stderr?.toString() || err.message).trim().split('\n').slice(-3).join(' | ');
    }
  };
  let why = attempt(['install', '-y', '-qq', 'pebble']);
  if (why) {
    attempt(['update', '-qq']);
    why = attempt(['install', '-y', '-qq', 'pebble']);
  }
  if (!existsSync(PEBBLE) || !existsSync(CHALLTESTSRV)) {
    throw new Error(
      `the ACME integration test needs Debian's pebble (${PEBBLE}, ${CHALLTESTSRV}) and could not install it: apt-get install -y pebble failed: ${why || 'no binaries after install'}. ` +
        'Install it (as root: apt-get install -y pebble) and run again.',
    );
  }
}

/** A TCP port of 127.0.0.1 that is free now (and, for DNS, free over UDP too). */
async function freePort(udpToo = false): Promise<number> {
  for (;;) {
    const port = await new Promise<number>((resolve, reject) => {
      const s = createServer();
      s.once('error', reject);
      s.listen(0, '127.0.0.1', () => {
        const p = (s.address() as { port: number }).port;
        s.close(() => resolve(p));
      });
    });
    if (!udpToo) return port;
    const ok = await new Promise<boolean>((resolve) => {
      const u = createSocket('udp4');
      u.once('error', () => resolve(false));
      u.bind(port, '127.0.0.1', () => u.close(() => resolve(true)));
    });
    if (ok) return port;
  }
}

function openssl(args: string[], cwd: string): void {
  execFileSync('openssl', args, { cwd, stdio: 'pipe' });
}

/** A CA and, signed by it, a certificate for 127.0.0.1 (pebble's HTTPS listeners). */
function makeCa(dir: string, name: string): void {
  openssl(['req', '-x509', '-newkey', 'ec', '-pkeyopt', 'ec_paramgen_curve:P-256', '-nodes', '-keyout', `${name}-ca.key`, '-out', `${name}-ca.pem`, '-days', '2', '-subj', `/CN=${name} test CA`], dir);
}

async function makeServerCert(dir: string, ca: string): Promise<void> {
  await writeFile(join(dir, 'ext.cnf'), 'subjectAltName=IP:127.0.0.1\nbasicConstraints=critical,CA:FALSE\nextendedKeyUsage=serverAuth\nkeyUsage=critical,digitalSignature\n');
  openssl(['req', '-newkey', 'ec', '-pkeyopt', 'ec_paramgen_curve:P-256', '-nodes', '-keyout', 'pebble.key', '-out', 'pebble.csr', '-subj', '/CN=127.0.0.1'], dir);
  openssl(['x509', '-req', '-in', 'pebble.csr', '-CA', `${ca}-ca.pem`, '-CAkey', `${ca}-ca.key`, '-CAcreateserial', '-days', '2', '-out', 'pebble.pem', '-extfile', 'ext.cnf'], dir);
}

interface Started {
  child: ChildProcess;
  output: () => string;
}

function start(cmd: string, args: string[], env: NodeJS.ProcessEnv = {}): Started {
  const child = spawn(cmd, args, { env: { ...process.env, ...env }, stdio: ['ignore', 'pipe', 'pipe'] });
  let out = '';
  const keep = (d: Buffer): void => {
    out = (out + d.toString()).slice(-4000);
  };
  child.stdout?.on('data', keep);
  child.stderr?.on('data', keep);
  child.on('error', (e) => keep(Buffer.from(`spawn error: ${e.message}\n`)));
  return { child, output: () => out };
}

async function stop(s: Started | undefined): Promise<void> {
  const child = s?.child;
  if (!child || child.exitCode !== null || child.signalCode !== null) return;
  const exited = new Promise<void>((resolve) => child.once('exit', () => resolve()));
  child.kill('SIGTERM');
  const t = setTimeout(() => child.kill('SIGKILL'), 3_000);
  await exited;
  clearTimeout(t);
}

function get(url: string, ca?: string): Promise<{ status: number; body: string }> {
  return new Promise((resolve, reject) => {
    const mod = url.startsWith('https:') ? https : http;
    const req = mod.get(url, { ...(ca ? { ca } : {}), timeout: 2_000 }, (res) => {
      const chunks: Buffer[] = [];
      res.on('data', (c: Buffer) => chunks.push(c));
      res.on('end', () => resolve({ status: res.statusCode ?? 0, body: Buffer.concat(chunks).toString() }));
      res.on('error', reject);
    });
    req.on('timeout', () => req.destroy(new Error('timeout')));
    req.on('error', reject);
  });
}

function tcpOpen(port: number): Promise<boolean> {
  return new Promise((resolve) => {
    const s = connect(port, '127.0.0.1');
    s.once('connect', () => {
      s.destroy();
      resolve(true);
    });
    s.once('error', () => resolve(false));
  });
}

async function waitFor(what: string, s: Started, ok: () => Promise<boolean>, ms = 8_000): Promise<void> {
  const until = Date.now() + ms;
  while (Date.now() < until) {
    if (s.child.exitCode !== null) throw new Error(`${what} exited (${s.child.exitCode}) at start: ${s.output()}`);
    if (await ok().catch(() => false)) return;
    await new Promise((r) => setTimeout(r, 50));
  }
  throw new Error(`${what} did not come up within ${ms} ms: ${s.output()}`);
}

// ---------------------------------------------------------------------------------------------
// The suite
// ---------------------------------------------------------------------------------------------

describe('ACME against pebble', () => {
  let dir: string;
  let pebble: Started | undefined;
  let challtestsrv: Started | undefined;
  let challengeServer: http.Server | undefined;
  let directoryUrl: string;
  let acmePort: number;
  /** pebble's httpPort: where the CA fetches HTTP-01 tokens (port 80 of a real balancer). */
  let httpPort: number;
  let managementPort: number;
  let caFile: string;
  let caPem: string;
  /** What publish stored, served at /.well-known/acme-challenge/<token>. */
  const served = new Map<string, string>();
  const calls: string[] = [];
  /** Requests the CA made to the challenge server. */
  const fetched: string[] = [];

  const base = (over: Partial<ObtainOptions> = {}): ObtainOptions => ({
    directoryUrl,
    email: 'ops@example.com',
    caFile,
    domains: ['api.test.local'],
    publish: async (token, keyAuthorization) => {
      calls.push(`publish ${token}`);
      served.set(token, keyAuthorization);
    },
    unpublish: async (token) => {
      calls.push(`unpublish ${token}`);
      served.delete(token);
    },
    timeoutMs: 20_000,
    ...over,
  });

  /** Why the servers could not be started: every test then FAILS with it (a failed beforeAll alone would only skip them). */
  let setupError: unknown;

  beforeAll(async () => {
    try {
      await setUp();
    } catch (e) {
      setupError = e;
    }
  }, 300_000);

  beforeEach(() => {
    if (setupError) throw setupError;
  });

  async function setUp(): Promise<void> {
    ensurePebble();
    dir = await mkdtemp(join(tmpdir(), 'acme-pebble-'));
    makeCa(dir, 'pebble');
    makeCa(dir, 'other');
    await makeServerCert(dir, 'pebble');
    caFile = join(dir, 'pebble-ca.pem');
    caPem = await readFile(caFile, 'utf8');

    // The balancer stand-in: answers HTTP-01 validations from what publish stored.
    httpPort = await freePort();
    challengeServer = http.createServer((req, res) => {
      fetched.push(`${req.headers.host ?? ''}${req.url ?? ''}`);
      const m = /^\/\.well-known\/acme-challenge\/([A-Za-z0-9_-]+)$/.exec(req.url ?? '');
      const body = m ? served.get(m[1]!) : undefined;
      if (body === undefined) {
        res.writeHead(404, { 'content-type': 'text/plain' }).end('not found\n');
        return;
      }
      res.writeHead(200, { 'content-type': 'application/octet-stream' }).end(body);
    });
    await new Promise<void>((resolve) => challengeServer!.listen(httpPort, '127.0.0.1', resolve));

    const dnsPort = await freePort(true);
    const challManagementPort = await freePort();
    challtestsrv = start(CHALLTESTSRV, [
      '-defaultIPv4', '127.0.0.1',
      '-defaultIPv6', '',
      '-dns01', `127.0.0.1:${dnsPort}`,
      '-http01', '',
      '-https01', '',
      '-tlsalpn01', '',
      '-management', `127.0.0.1:${challManagementPort}`,
    ]);
    await waitFor('pebble-challtestsrv', challtestsrv, () => tcpOpen(challManagementPort));

    acmePort = await freePort();
    managementPort = await freePort();
    const tlsPort = await freePort();
    const config = {
      pebble: {
        listenAddress: `127.0.0.1:${acmePort}`,
        managementListenAddress: `127.0.0.1:${managementPort}`,
        certificate: join(dir, 'pebble.pem'),
        privateKey: join(dir, 'pebble.key'),
        httpPort,
        tlsPort,
        ocspResponderURL: '',
        externalAccountBindingRequired: false,
      },
    };
    await writeFile(join(dir, 'pebble.json'), JSON.stringify(config, null, 2));
    pebble = start(PEBBLE, ['-config', join(dir, 'pebble.json'), '-dnsserver', `127.0.0.1:${dnsPort}`], { PEBBLE_VA_NOSLEEP: '1' });
    directoryUrl = `https://127.0.0.1:${acmePort}/dir`;
    await waitFor('pebble', pebble, async () => (await get(directoryUrl, caPem)).status === 200);
  }

  afterAll(async () => {
    await Promise.allSettled([stop(pebble), stop(challtestsrv), new Promise<void>((r) => (challengeServer ? challengeServer.close(() => r()) : r()))]);
    if (dir) await rm(dir, { recursive: true, force: true });
  });

  let first: Awaited<ReturnType<typeof obtainCertificate>>;
  const firstReport: string[] = [];

  it('obtains a certificate for api.test.local that chains to pebble\'s root and covers the name', async () => {
    const t0 = performance.now();
    first = await obtainCertificate(base({ report: (t) => firstReport.push(t) }));
    const ms = performance.now() - t0;
    console.log(`pebble issuance (new account): ${ms.toFixed(0)} ms`);

    expect(first.domains).toEqual(['api.test.local']);
    const info = certificateInfo(first.certificatePem);
    expect(info.covers('api.test.local')).toBe(true);
    expect(info.covers('other.test.local')).toBe(false);
    expect(info.subjectAltNames).toEqual(['api.test.local']);
    expect(first.notAfter.getTime()).toBe(info.notAfter.getTime());
    expect(first.notAfter.getTime()).toBeGreaterThan(Date.now() + 30 * 86_400_000);
    expect(first.notBefore.getTime()).toBeLessThanOrEqual(Date.now() + 60_000);

    // The chain: leaf ← intermediate(s) ← pebble's root (served by its management listener).
    const root = await get(`https://127.0.0.1:${managementPort}/roots/0`, caPem);
    expect(root.status).toBe(200);
    const chain = [...splitPemChain(first.certificatePem), ...splitPemChain(root.body)].map((p) => new X509Certificate(p));
    expect(chain.length).toBeGreaterThanOrEqual(3);
    for (let i = 0; i + 1 < chain.length; i++) {
      expect(chain[i]!.checkIssued(chain[i + 1]!), `certificate ${i} is issued by ${i + 1}`).toBe(true);
      expect(chain[i]!.verify(chain[i + 1]!.publicKey), `certificate ${i} is signed by ${i + 1}`).toBe(true);
    }
    const rootCert = chain[chain.length - 1]!;
    expect(rootCert.verify(rootCert.publicKey)).toBe(true); // self-signed root
    const verified = execFileSync('openssl', ['verify', '-CAfile', await writeTemp('root.pem', root.body), '-untrusted', await writeTemp('chain.pem', first.certificatePem), await writeTemp('leaf.pem', splitPemChain(first.certificatePem)[0]!)]);
    expect(verified.toString()).toMatch(/leaf\.pem: OK$/m);

    // The key: ECDSA P-256, the certificate's own.
    const key = createPrivateKey(first.keyPem);
    expect(key.asymmetricKeyType).toBe('ec');
    expect(key.asymmetricKeyDetails?.namedCurve).toBe('prime256v1');
    expect(chain[0]!.checkPrivateKey(key)).toBe(true);
    expect(createPrivateKey(first.accountKeyPem).asymmetricKeyDetails?.namedCurve).toBe('prime256v1');

    // The challenge was served, fetched by the CA, and taken away.
    expect(fetched.some((f) => /^api\.test\.local(:\d+)?\/\.well-known\/acme-challenge\//.test(f))).toBe(true);
    expect(calls.filter((c) => c.startsWith('publish')).length).toBeGreaterThanOrEqual(1);
    expect(calls.filter((c) => c.startsWith('unpublish')).length).toBe(calls.filter((c) => c.startsWith('publish')).length);
    expect(served.size).toBe(0);

    // Progress never holds a key.
    expect(firstReport.join('\n')).not.toMatch(/PRIVATE KEY|BEGIN/);
    expect(firstReport.some((l) => l.startsWith('ACME account https://127.0.0.1:'))).toBe(true);
  });

  it('obtains again reusing the account key: same account, new certificate and key', async () => {
    const report: string[] = [];
    const t0 = performance.now();
    const again = await obtainCertificate(base({ accountKeyPem: first.accountKeyPem, report: (t) => report.push(t), domains: ['API.test.local', 'api.test.local'] }));
    // pebble reuses a valid authorization half of the time (PEBBLE_AUTHZREUSE): then nothing is published.
    const reusedAuthz = report.includes('api.test.local: already authorized');
    console.log(`pebble issuance (reused account${reusedAuthz ? ', reused authorization' : ''}): ${(performance.now() - t0).toFixed(0)} ms`);
    expect(again.accountKeyPem).toBe(first.accountKeyPem);
    const account = (r: string[]) => r.find((l) => l.startsWith('ACME account '));
    expect(account(report)).toBe(account(firstReport));
    expect(again.domains).toEqual(['api.test.local']);
    expect(again.keyPem).not.toBe(first.keyPem);
    expect(again.certificatePem).not.toBe(first.certificatePem);
    expect(certificateInfo(again.certificatePem).covers('api.test.local')).toBe(true);
    expect(served.size).toBe(0);
  });

  it('stores what it obtained, and needsRenewal agrees it is not due', async () => {
    const inv = join(dir, 'inventory');
    await rm(inv, { recursive: true, force: true });
    await mkdir(inv);
    const saved = await saveAcmeState(inv, 'prod', {
      accountKeyPem: first.accountKeyPem,
      certificate: { certificatePem: first.certificatePem, keyPem: first.keyPem, domains: first.domains, directoryUrl },
    });
    expect(saved.gitignoreAdded).toBe(true);
    const state = await loadAcmeState(inv, 'prod');
    expect(state.problems).toEqual([]);
    expect(state.certificatePem).toBe(first.certificatePem);
    expect(state.meta?.domains).toEqual(['api.test.local']);
    expect(state.meta?.directoryUrl).toBe(directoryUrl);
    expect(state.meta?.keyType).toBe('ECDSA P-256');
    expect(needsRenewal(state.certificatePem, ['api.test.local'], new Date()).renew).toBe(false);
    expect(needsRenewal(state.certificatePem, ['api.test.local', 'www.test.local'], new Date())).toEqual({
      renew: true,
      reason: 'the certificate does not cover www.test.local (it covers api.test.local)',
    });
    expect((await stat(join(state.dir, 'privkey.pem'))).mode & 0o777).toBe(0o600);
    expect(await readdir(state.dir)).toEqual(['account.key', 'fullchain.pem', 'meta.json', 'privkey.pem']);
  });

  it('a challenge the CA cannot fetch fails naming the domain and the URL, and is still unpublished', async () => {
    const published: string[] = [];
    const unpublished: string[] = [];
    const err = await obtainCertificate(
      base({
        domains: ['broken.test.local'],
        publish: async (token) => {
          published.push(token); // but never served: the CA gets a 404
        },
        unpublish: async (token) => {
          unpublished.push(token);
        },
      }),
    ).catch((e: unknown) => e);
    expect(err).toBeInstanceOf(CliError);
    const e = err as CliError;
    expect(published).toHaveLength(1);
    expect(unpublished).toEqual(published);
    expect(e.message).toBe(
      `ACME: the CA could not validate broken.test.local (HTTP-01): Non-200 status code from HTTP: http://broken.test.local:${httpPort}/.well-known/acme-challenge/${published[0]} returned 404`,
    );
    expect(e.message).not.toContain('\n');
    expect(e.hint).toBe(
      `the CA fetched http://broken.test.local/.well-known/acme-challenge/${published[0]} but got the wrong answer: does every balancer serve /.well-known/acme-challenge/ from the challenge folder, and does broken.test.local resolve only to them?`,
    );
  });

  it('a balancer the CA cannot connect to: the hint asks whether port 80 is reachable', async () => {
    // Nothing listens on pebble's httpPort for the length of this test.
    await new Promise<void>((r) => challengeServer!.close(() => r()));
    let token = '';
    try {
      const err = (await obtainCertificate(
        base({
          domains: ['down.test.local'],
          publish: async (t) => {
            token = t;
          },
          unpublish: async () => undefined,
        }),
      ).catch((e: unknown) => e)) as CliError;
      expect(err).toBeInstanceOf(CliError);
      expect(err.message).toBe(
        `ACME: the CA could not validate down.test.local (HTTP-01): Get "http://down.test.local:${httpPort}/.well-known/acme-challenge/${token}": dial tcp 127.0.0.1:${httpPort}: connect: connection refused`,
      );
      expect(err.hint).toBe(`the CA could not fetch http://down.test.local/.well-known/acme-challenge/${token}: is port 80 of every balancer reachable from the CA, and does down.test.local resolve to them?`);
    } finally {
      await new Promise<void>((resolve) => challengeServer!.listen(httpPort, '127.0.0.1', resolve));
    }
  });

  it('a challenge served with the wrong content is refused by the CA', async () => {
    let token = '';
    let keyAuthorization = '';
    const err = (await obtainCertificate(
      base({
        domains: ['wrong.test.local'],
        publish: async (t, k) => {
          token = t;
          keyAuthorization = k;
          served.set(t, `${t}.not-the-thumbprint`);
        },
      }),
    ).catch((e: unknown) => e)) as CliError;
    expect(err).toBeInstanceOf(CliError);
    expect(err.message).toBe(
      `ACME: the CA could not validate wrong.test.local (HTTP-01): The key authorization file from the server did not match this challenge "${keyAuthorization}" != "${token}.not-the-thumbprint"`,
    );
    expect(err.hint).toBe(
      `the CA fetched http://wrong.test.local/.well-known/acme-challenge/${token} but got the wrong answer: does every balancer serve /.well-known/acme-challenge/ from the challenge folder, and does wrong.test.local resolve only to them?`,
    );
    expect(served.size).toBe(0);
  });

  it('the directory\'s HTTPS is trusted only through caFile: without it, or with another CA, it names the server and the fix', async () => {
    const without = (await obtainCertificate(base({ caFile: null })).catch((e: unknown) => e)) as CliError;
    expect(without).toBeInstanceOf(CliError);
    expect(without.message).toMatch(new RegExp(`^ACME: the HTTPS certificate of https://127\\.0\\.0\\.1:${acmePort} is not trusted \\([A-Z_]+\\) while reading the ACME directory for api\\.test\\.local$`));
    expect(without.hint).toBe('for a private ACME server, set loadBalancer.tls.acme.caFile to the PEM of the CA that signed its HTTPS certificate');

    const other = join(dir, 'other-ca.pem');
    const wrong = (await obtainCertificate(base({ caFile: other })).catch((e: unknown) => e)) as CliError;
    expect(wrong.message).toMatch(/is not trusted \([A-Z_]+\) while reading the ACME directory/);
    expect(wrong.hint).toBe(`${other} did not sign it: set loadBalancer.tls.acme.caFile to the CA certificate of this ACME server`);
    // Nothing global was changed to get there.
    expect(process.env.NODE_TLS_REJECT_UNAUTHORIZED).toBeUndefined();
  });

  it('a wrong directory URL or port says so', async () => {
    const notFound = (await obtainCertificate(base({ directoryUrl: `https://127.0.0.1:${acmePort}/nope` })).catch((e: unknown) => e)) as CliError;
    expect(notFound).toBeInstanceOf(CliError);
    expect(notFound.message).toBe(`ACME: https://127.0.0.1:${acmePort}/nope is not an ACME directory (HTTP 404, text/plain)`);
    expect(notFound.hint).toBe("check loadBalancer.tls.acme.directoryUrl: it is the CA's directory URL, e.g. https://acme-v02.api.letsencrypt.org/directory");

    const closed = await freePort();
    const refused = (await obtainCertificate(base({ directoryUrl: `https://127.0.0.1:${closed}/dir` })).catch((e: unknown) => e)) as CliError;
    expect(refused.message).toBe(`ACME: cannot reach https://127.0.0.1:${closed} (ECONNREFUSED) while reading the ACME directory for api.test.local`);
    expect(refused.hint).toBe('check loadBalancer.tls.acme.directoryUrl and that this machine can reach the CA (proxy, firewall, DNS)');
  });

  it('is bounded: a publish that hangs ends at timeoutMs, and the caller\'s signal stops it at once; tokens are unpublished', async () => {
    const unpublished: string[] = [];
    const t0 = Date.now();
    const timedOut = (await obtainCertificate(
      base({
        timeoutMs: 2_000,
        publish: () => new Promise<void>(() => undefined),
        unpublish: async (t) => {
          unpublished.push(t);
        },
      }),
    ).catch((e: unknown) => e)) as CliError;
    expect(Date.now() - t0).toBeLessThan(3_500);
    expect(timedOut.message).toBe('ACME: no certificate within 2 s (stopped while publishing the HTTP-01 challenge for api.test.local)');
    expect(timedOut.hint).toBe('publishing the challenge to the balancers did not finish: check that every balancer answers over SSH');
    expect(unpublished).toHaveLength(1);

    const ctl = new AbortController();
    const reason = new CliError('interrupted');
    const t1 = Date.now();
    const stopped = await obtainCertificate(
      base({
        signal: ctl.signal,
        publish: async () => {
          setTimeout(() => ctl.abort(reason), 50);
          await new Promise<void>(() => undefined);
        },
      }),
    ).catch((e: unknown) => e);
    expect(stopped).toBe(reason);
    expect(Date.now() - t1).toBeLessThan(2_000);
  });

  async function writeTemp(name: string, text: string): Promise<string> {
    const p = join(dir, name);
    await writeFile(p, text);
    return p;
  }
});
