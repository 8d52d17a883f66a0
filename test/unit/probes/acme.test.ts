/**
 * The ACME engine without a CA: certificateInfo / needsRenewal against certificates made here
 * with openssl (valid, expiring in 10 days, expired, another name, a wildcard, CN only), every
 * message verbatim; the input checks obtainCertificate makes before any network; its error
 * mapping and bounds against a fake ACME server (rate limit, a 503, one that never answers, a
 * page that is not a directory); and the operator-side store: folder and file modes, atomic
 * replacement, pairs that do not match, .gitignore. The issuance itself is tested against pebble
 * (test/e2e/acme-pebble.test.ts).
 */
import { execFileSync } from 'node:child_process';
import { X509Certificate } from 'node:crypto';
import { mkdir, mkdtemp, open as openFile, readdir, readFile, rm, stat, writeFile, chmod } from 'node:fs/promises';
import http from 'node:http';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it, vi } from 'vitest';
import { CliError, ExitCode, InputError } from '../../../src/errors.js';

// Every open() of the store is seen, to check a key's temporary file is 0600 from its creation.
const opened = vi.hoisted(() => [] as { path: string; flags: unknown; mode: unknown }[]);
vi.mock('node:fs/promises', async (importOriginal) => {
  const real = await importOriginal<typeof import('node:fs/promises')>();
  const open = (async (...args: Parameters<typeof real.open>) => {
    opened.push({ path: String(args[0]), flags: args[1], mode: args[2] });
    return real.open(...args);
  }) as typeof real.open;
  return { ...real, default: { ...real, open }, open };
});

const { certificateInfo, needsRenewal, normalizeDomains, obtainCertificate, splitPemChain } = await import('../../../src/probes/acme.js');
const { ACME_DIR, acmeStateDir, ensureAcmeIgnored, loadAcmeState, saveAcmeState, writeFileAtomic } = await import('../../../src/probes/acme-store.js');

const DAY = 86_400_000;
let dir: string;
const pem: Record<string, string> = {};
const key: Record<string, string> = {};

function openssl(args: string[]): void {
  execFileSync('openssl', args, { cwd: dir, stdio: 'pipe' });
}

/** A self-signed certificate (EC P-256) with these SANs, valid `days` days from now. */
async function selfSigned(name: string, days: number, san: string | null, cn = name): Promise<void> {
  openssl([
    'req', '-x509', '-newkey', 'ec', '-pkeyopt', 'ec_paramgen_curve:P-256', '-nodes',
    '-keyout', `${name}.key`, '-out', `${name}.pem`, '-days', String(days), '-subj', `/O=Test/CN=${cn}`,
    ...(san ? ['-addext', `subjectAltName=${san}`] : []),
  ]);
  pem[name] = await readFile(join(dir, `${name}.pem`), 'utf8');
  key[name] = await readFile(join(dir, `${name}.key`), 'utf8');
}

beforeAll(async () => {
  dir = await mkdtemp(join(tmpdir(), 'acme-unit-'));
  await selfSigned('valid', 90, 'DNS:api.example.com,DNS:www.example.com');
  await selfSigned('expiring', 10, 'DNS:api.example.com');
  await selfSigned('other', 90, 'DNS:other.example.org');
  await selfSigned('wildcard', 90, 'DNS:*.example.com,IP:10.0.0.1');
  await selfSigned('cnonly', 90, null, 'cn.example.com');
  // An expired one needs fixed dates: a tiny CA (openssl 3.0's req/x509 cannot date in the past).
  await writeFile(
    join(dir, 'ca.cnf'),
    [
      '[ ca ]', 'default_ca = CA_default', '[ CA_default ]', 'dir = .', 'database = index.txt', 'new_certs_dir = .', 'serial = serial',
      'certificate = ca.pem', 'private_key = ca.key', 'default_md = sha256', 'policy = policy_any', 'unique_subject = no',
      '[ policy_any ]', 'commonName = supplied', '[ ext ]', 'subjectAltName = DNS:old.example.com', '',
    ].join('\n'),
  );
  await writeFile(join(dir, 'index.txt'), '');
  await writeFile(join(dir, 'serial'), '01\n');
  openssl(['req', '-x509', '-newkey', 'ec', '-pkeyopt', 'ec_paramgen_curve:P-256', '-nodes', '-keyout', 'ca.key', '-out', 'ca.pem', '-days', '3650', '-subj', '/C=US/O=Test/CN=Test CA']);
  openssl(['req', '-newkey', 'ec', '-pkeyopt', 'ec_paramgen_curve:P-256', '-nodes', '-keyout', 'expired.key', '-out', 'expired.csr', '-subj', '/CN=old.example.com']);
  openssl(['ca', '-batch', '-config', 'ca.cnf', '-extensions', 'ext', '-in', 'expired.csr', '-out', 'expired.pem', '-startdate', '20200101000000Z', '-enddate', '20200301000000Z', '-notext']);
  pem.expired = await readFile(join(dir, 'expired.pem'), 'utf8');
  key.expired = await readFile(join(dir, 'expired.key'), 'utf8');
}, 60_000);

afterAll(async () => {
  await rm(dir, { recursive: true, force: true });
});

const day = (d: Date) => d.toISOString().slice(0, 10);

// ---------------------------------------------------------------------------------------------
// certificateInfo
// ---------------------------------------------------------------------------------------------

describe('certificateInfo', () => {
  it('reads validity, names and issuer as openssl does', () => {
    const info = certificateInfo(pem.valid!);
    const dates = execFileSync('openssl', ['x509', '-noout', '-startdate', '-enddate'], { input: pem.valid! }).toString();
    expect(info.notBefore.getTime()).toBe(Date.parse(/notBefore=(.*)/.exec(dates)![1]!));
    expect(info.notAfter.getTime()).toBe(Date.parse(/notAfter=(.*)/.exec(dates)![1]!));
    expect(info.notAfter.getTime() - info.notBefore.getTime()).toBe(90 * DAY);
    expect(info.subjectAltNames).toEqual(['api.example.com', 'www.example.com']);
    expect(info.issuer).toBe('O=Test, CN=valid');
    expect(certificateInfo(pem.expired!).issuer).toBe('C=US, O=Test, CN=Test CA');
    expect(certificateInfo(pem.wildcard!).subjectAltNames).toEqual(['*.example.com', '10.0.0.1']);
    expect(certificateInfo(pem.cnonly!).subjectAltNames).toEqual([]);
  });

  it('reads the leaf of a full chain', () => {
    const chain = `${pem.expired!}${readCa()}`;
    expect(splitPemChain(chain)).toHaveLength(2);
    expect(certificateInfo(chain).subjectAltNames).toEqual(['old.example.com']);
  });

  it('counts whole days left, negative once expired', () => {
    const v = certificateInfo(pem.valid!);
    expect(v.daysLeft(v.notBefore)).toBe(90);
    expect(v.daysLeft(new Date(v.notBefore.getTime() + 1))).toBe(89);
    expect(v.daysLeft()).toBeGreaterThanOrEqual(89);
    const e = certificateInfo(pem.expiring!);
    expect(e.daysLeft(e.notBefore)).toBe(10);
    expect(certificateInfo(pem.expired!).daysLeft(new Date('2020-03-11T00:00:00Z'))).toBe(-10);
    expect(certificateInfo(pem.expired!).daysLeft()).toBeLessThan(-365);
  });

  it('covers names as a TLS client matches them: SANs only, one-label wildcards, no CN, `_` nothing', () => {
    const v = certificateInfo(pem.valid!);
    expect(v.covers('api.example.com')).toBe(true);
    expect(v.covers('API.Example.COM')).toBe(true);
    expect(v.covers('api.example.com.')).toBe(true);
    expect(v.covers('www.example.com')).toBe(true);
    expect(v.covers('example.com')).toBe(false);
    expect(v.covers('_')).toBe(false);
    expect(v.covers('')).toBe(false);
    expect(v.covers('*.example.com')).toBe(false);
    expect(v.covers('.example.com')).toBe(false);
    expect(v.covers('~^api\\.')).toBe(false);

    const w = certificateInfo(pem.wildcard!);
    expect(w.covers('api.example.com')).toBe(true);
    expect(w.covers('x-1.example.com')).toBe(true);
    expect(w.covers('*.example.com')).toBe(true);
    expect(w.covers('example.com')).toBe(false);
    expect(w.covers('a.b.example.com')).toBe(false);
    expect(w.covers('a*.example.com')).toBe(false);
    expect(w.covers('10.0.0.1')).toBe(true);
    expect(w.covers('10.0.0.2')).toBe(false);
    expect(w.covers('_')).toBe(false);

    expect(certificateInfo(pem.cnonly!).covers('cn.example.com')).toBe(false);
    expect(certificateInfo(pem.other!).covers('api.example.com')).toBe(false);
  });

  it('refuses what is not a certificate', () => {
    expect(() => certificateInfo('hello')).toThrow('no PEM certificate in it');
    expect(() => certificateInfo(key.valid!)).toThrow('no PEM certificate in it');
  });
});

function readCa(): string {
  return execFileSync('cat', [join(dir, 'ca.pem')]).toString();
}

// ---------------------------------------------------------------------------------------------
// needsRenewal
// ---------------------------------------------------------------------------------------------

describe('needsRenewal', () => {
  const names = ['api.example.com', 'www.example.com'];

  it('no certificate, or one that cannot be read', () => {
    expect(needsRenewal(undefined, names, new Date())).toEqual({ renew: true, reason: 'there is no certificate yet' });
    expect(needsRenewal('  \n', names, new Date())).toEqual({ renew: true, reason: 'there is no certificate yet' });
    expect(needsRenewal('garbage', names, new Date())).toEqual({ renew: true, reason: 'the stored certificate cannot be read (no PEM certificate in it)' });
  });

  it('valid for 90 days and covering every name: not due', () => {
    const info = certificateInfo(pem.valid!);
    expect(needsRenewal(pem.valid!, names, info.notBefore)).toEqual({
      renew: false,
      reason: `the certificate is valid until ${day(info.notAfter)} (90 days left) and covers api.example.com, www.example.com`,
    });
    expect(needsRenewal(pem.valid!, ['www.example.com'], new Date(info.notAfter.getTime() - 30 * DAY))).toEqual({
      renew: false,
      reason: `the certificate is valid until ${day(info.notAfter)} (30 days left) and covers www.example.com`,
    });
    // A day less than 30 left: due.
    expect(needsRenewal(pem.valid!, names, new Date(info.notAfter.getTime() - 30 * DAY + 1))).toEqual({
      renew: true,
      reason: `the certificate expires on ${day(info.notAfter)}, in 29 days (renewal is due under 30)`,
    });
    // Another threshold.
    expect(needsRenewal(pem.valid!, names, info.notBefore, 100)).toEqual({
      renew: true,
      reason: `the certificate expires on ${day(info.notAfter)}, in 90 days (renewal is due under 100)`,
    });
  });

  it('expiring in 10 days: due', () => {
    const info = certificateInfo(pem.expiring!);
    expect(needsRenewal(pem.expiring!, ['api.example.com'], info.notBefore)).toEqual({
      renew: true,
      reason: `the certificate expires on ${day(info.notAfter)}, in 10 days (renewal is due under 30)`,
    });
    expect(needsRenewal(pem.expiring!, ['api.example.com'], new Date(info.notAfter.getTime() - DAY))).toEqual({
      renew: true,
      reason: `the certificate expires on ${day(info.notAfter)}, in 1 day (renewal is due under 30)`,
    });
    expect(needsRenewal(pem.expiring!, ['api.example.com'], new Date()).renew).toBe(true);
  });

  it('expired: due', () => {
    expect(needsRenewal(pem.expired!, ['old.example.com'], new Date('2020-03-11T00:00:00Z'))).toEqual({
      renew: true,
      reason: 'the certificate expired on 2020-03-01 (10 days ago)',
    });
    expect(needsRenewal(pem.expired!, ['old.example.com'], new Date('2020-03-02T06:00:00Z'))).toEqual({
      renew: true,
      reason: 'the certificate expired on 2020-03-01 (1 day ago)',
    });
    expect(needsRenewal(pem.expired!, ['old.example.com'], new Date('2020-03-01T00:00:00Z'))).toEqual({
      renew: true,
      reason: 'the certificate expired on 2020-03-01 (today)',
    });
    expect(needsRenewal(pem.expired!, ['old.example.com'], new Date('2020-02-20T00:00:00Z'))).toEqual({
      renew: true,
      reason: 'the certificate expires on 2020-03-01, in 10 days (renewal is due under 30)',
    });
  });

  it('another name: due, whatever its dates (a changed serverName)', () => {
    const info = certificateInfo(pem.other!);
    expect(needsRenewal(pem.other!, ['api.example.com'], info.notBefore)).toEqual({
      renew: true,
      reason: 'the certificate does not cover api.example.com (it covers other.example.org)',
    });
    expect(needsRenewal(pem.valid!, ['api.example.com', 'new.example.com', 'www.example.com', 'new2.example.com'], new Date())).toEqual({
      renew: true,
      reason: 'the certificate does not cover new.example.com, new2.example.com (it covers api.example.com, www.example.com)',
    });
    expect(needsRenewal(pem.cnonly!, ['cn.example.com'], new Date())).toEqual({
      renew: true,
      reason: 'the certificate does not cover cn.example.com (it covers no name)',
    });
    expect(needsRenewal(pem.valid!, ['_'], new Date())).toEqual({
      renew: true,
      reason: 'the certificate does not cover _ (it covers api.example.com, www.example.com)',
    });
  });

  it('wildcard: covers one label below it only', () => {
    const info = certificateInfo(pem.wildcard!);
    expect(needsRenewal(pem.wildcard!, ['api.example.com', 'www.example.com'], info.notBefore)).toEqual({
      renew: false,
      reason: `the certificate is valid until ${day(info.notAfter)} (90 days left) and covers api.example.com, www.example.com`,
    });
    expect(needsRenewal(pem.wildcard!, ['example.com', 'a.b.example.com'], info.notBefore)).toEqual({
      renew: true,
      reason: 'the certificate does not cover example.com, a.b.example.com (it covers *.example.com, 10.0.0.1)',
    });
  });
});

// ---------------------------------------------------------------------------------------------
// Input, before any network
// ---------------------------------------------------------------------------------------------

describe('obtainCertificate input', () => {
  const noop = async () => undefined;
  const base = { directoryUrl: 'https://acme.example.invalid/directory', email: 'ops@example.com', domains: ['api.example.com'], publish: noop, unpublish: noop };

  it('normalizes domains: lower case, no trailing dot, no duplicates', () => {
    expect(normalizeDomains(['API.example.com', 'api.example.com.', 'www.example.com'])).toEqual(['api.example.com', 'www.example.com']);
  });

  it.each([
    [['_'], '"_" is not a domain name: a certificate needs real names', 'set loadBalancer.serverName to the names clients use, e.g. api.example.com'],
    [['*.example.com'], '*.example.com: a wildcard name needs DNS-01, which newapi-cluster does not do', 'name each host in loadBalancer.serverName'],
    [['.example.com'], '.example.com: nginx name patterns cannot go in a certificate', 'name each host in loadBalancer.serverName'],
    [['~^api'], '~^api: nginx name patterns cannot go in a certificate', 'name each host in loadBalancer.serverName'],
    [['10.0.0.10'], '10.0.0.10: ACME certificates here are for domain names, not IP addresses', 'give the balancers a DNS name and use it in loadBalancer.serverName'],
    [['localhost'], '"localhost" is not a domain name a CA will issue for', 'use fully qualified names such as api.example.com'],
    [['api_x.example.com'], '"api_x.example.com" is not a domain name a CA will issue for', 'use fully qualified names such as api.example.com'],
    [[], 'no domain names to put in the certificate', 'set loadBalancer.serverName to the names clients use'],
  ])('refuses %j', (domains, message, hint) => {
    let err: unknown;
    try {
      normalizeDomains(domains);
    } catch (e) {
      err = e;
    }
    expect(err).toBeInstanceOf(InputError);
    expect((err as InputError).message).toBe(message);
    expect((err as InputError).hint).toBe(hint);
    expect((err as InputError).exitCode).toBe(ExitCode.badInput);
  });

  it('refuses a bad directory URL, e-mail, caFile or account key with exit 2', async () => {
    const fail = async (over: Record<string, unknown>) => (await obtainCertificate({ ...base, ...over }).catch((e: unknown) => e)) as InputError;
    let e = await fail({ directoryUrl: 'acme.example.com/directory' });
    expect([e.message, e.hint, e.exitCode]).toEqual([
      'the ACME directory URL "acme.example.com/directory" is not a URL',
      'set loadBalancer.tls.acme.directoryUrl, e.g. https://acme-v02.api.letsencrypt.org/directory',
      2,
    ]);
    e = await fail({ directoryUrl: 'ftp://acme.example.com/directory' });
    expect(e.message).toBe('the ACME directory URL ftp://acme.example.com/directory is not http(s)');
    e = await fail({ email: 'ops at example' });
    expect([e.message, e.hint]).toEqual(['the ACME contact "ops at example" is not an e-mail address', 'set loadBalancer.tls.acme.email, e.g. ops@example.com']);
    e = await fail({ caFile: join(dir, 'missing.pem') });
    expect(e.message).toBe(`cannot read the ACME caFile ${join(dir, 'missing.pem')}: ENOENT: no such file or directory, open '${join(dir, 'missing.pem')}'`);
    expect(e.exitCode).toBe(2);
    e = await fail({ caFile: join(dir, 'valid.key') });
    expect(e.message).toBe(`the ACME caFile ${join(dir, 'valid.key')} is not a PEM certificate file: no PEM certificate in it`);
    e = await fail({ accountKeyPem: 'not a key' });
    expect(e.message).toMatch(/^the ACME account key cannot be used: /);
    expect(e.message).not.toContain('not a key');
    expect(e.hint).toBe('remove the stored account.key to register a new account');
  });
});

// ---------------------------------------------------------------------------------------------
// A fake ACME server: error mapping and bounds
// ---------------------------------------------------------------------------------------------

describe('obtainCertificate against a fake ACME server', () => {
  let server: http.Server;
  let origin: string;
  let handle: (req: http.IncomingMessage, res: http.ServerResponse) => void;
  const seen: string[] = [];
  const closed: string[] = [];

  beforeAll(async () => {
    server = http.createServer((req, res) => {
      seen.push(`${req.method} ${req.url}`);
      req.on('close', () => closed.push(`${req.method} ${req.url}`));
      handle(req, res);
    });
    await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
    origin = `http://127.0.0.1:${(server.address() as { port: number }).port}`;
  });
  afterAll(async () => {
    server.closeAllConnections();
    await new Promise<void>((r) => server.close(() => r()));
  });

  const directory = () => ({ newNonce: `${origin}/nonce`, newAccount: `${origin}/acct`, newOrder: `${origin}/order` });
  const json = (res: http.ServerResponse, status: number, body: unknown, headers: Record<string, string> = {}) =>
    res.writeHead(status, { 'content-type': 'application/json', 'replay-nonce': `n${Math.random()}`, ...headers }).end(JSON.stringify(body));
  const opts = (over: Record<string, unknown> = {}) => ({
    directoryUrl: `${origin}/dir`,
    email: 'ops@example.com',
    domains: ['api.example.com'],
    publish: async () => undefined,
    unpublish: async () => undefined,
    timeoutMs: 5_000,
    ...over,
  });

  it('a rate limit fails at once (no wait for a Retry-After of an hour) with the CA\'s words and a hint', async () => {
    seen.length = 0;
    let dirAnswers = 0;
    handle = (req, res) => {
      if (req.url === '/dir') {
        // The first answer is a 503: retried after a second.
        if (dirAnswers++ === 0) return json(res, 503, { type: 'urn:ietf:params:acme:error:serverInternal', detail: 'busy' }, { 'content-type': 'application/problem+json' });
        return json(res, 200, directory());
      }
      if (req.url === '/nonce') return json(res, 200, {});
      if (req.url === '/acct') {
        req.resume();
        return json(res, 429, { type: 'urn:ietf:params:acme:error:rateLimited', detail: 'too many new registrations (10) from this IP\nin the last 3h' }, {
          'content-type': 'application/problem+json',
          'retry-after': '3600',
        });
      }
      json(res, 404, {});
    };
    const t0 = Date.now();
    const err = (await obtainCertificate(opts()).catch((e: unknown) => e)) as CliError;
    expect(Date.now() - t0).toBeLessThan(3_000);
    expect(err).toBeInstanceOf(CliError);
    expect(err.message).toBe('ACME: rate limited while registering the ACME account for api.example.com: too many new registrations (10) from this IP in the last 3h');
    expect(err.hint).toBe(
      "the CA limits certificates, orders and failed validations per account and per name: wait (the CA says retry after 3600 s) and run tls renew again; try new setups against the CA's staging directory first",
    );
    expect(err.exitCode).toBe(ExitCode.failed);
    expect(seen.filter((s) => s === 'GET /dir').length).toBe(3); // 503, ours, acme-client's
    expect(seen.filter((s) => s === 'POST /acct').length).toBe(1); // never retried
  });

  it('a CA that never answers: bounded by timeoutMs, and the connection is closed', async () => {
    closed.length = 0;
    handle = () => undefined; // holds the request forever
    const t0 = Date.now();
    const err = (await obtainCertificate(opts({ timeoutMs: 1_000 })).catch((e: unknown) => e)) as CliError;
    expect(Date.now() - t0).toBeLessThan(2_000);
    expect(err.message).toBe('ACME: no certificate within 1 s (stopped while reading the ACME directory for api.example.com)');
    expect(err.hint).toBe(`check that this machine reaches ${origin} quickly, then run again`);
    await new Promise((r) => setTimeout(r, 100));
    expect(closed).toContain('GET /dir');
  });

  it('the caller\'s signal ends it at once with the caller\'s reason', async () => {
    handle = () => undefined;
    const ctl = new AbortController();
    const reason = new CliError('interrupted', { exitCode: ExitCode.interrupted });
    setTimeout(() => ctl.abort(reason), 100);
    const t0 = Date.now();
    const err = await obtainCertificate(opts({ signal: ctl.signal })).catch((e: unknown) => e);
    expect(err).toBe(reason);
    expect(Date.now() - t0).toBeLessThan(1_000);
    const already = await obtainCertificate(opts({ signal: AbortSignal.abort(reason) })).catch((e: unknown) => e);
    expect(already).toBe(reason);
  });

  it('a page that is not a directory', async () => {
    handle = (_req, res) => res.writeHead(200, { 'content-type': 'text/html; charset=utf-8' }).end('<html>hello</html>');
    let err = (await obtainCertificate(opts()).catch((e: unknown) => e)) as CliError;
    expect(err.message).toBe(`ACME: ${origin}/dir is not an ACME directory (HTTP 200, text/html): the answer is not JSON`);
    expect(err.hint).toBe("check loadBalancer.tls.acme.directoryUrl: it is the CA's directory URL, e.g. https://acme-v02.api.letsencrypt.org/directory");
    handle = (_req, res) => json(res, 200, { meta: {} });
    err = (await obtainCertificate(opts()).catch((e: unknown) => e)) as CliError;
    expect(err.message).toBe(`ACME: ${origin}/dir is not an ACME directory (HTTP 200, application/json): it has no newNonce, newAccount, newOrder`);
  });

  it('a CA that rejects the order names the domain', async () => {
    handle = (req, res) => {
      req.resume();
      if (req.url === '/dir') return json(res, 200, directory());
      if (req.url === '/nonce') return json(res, 200, {});
      if (req.url === '/acct') return json(res, 201, { status: 'valid' }, { location: `${origin}/acct/1` });
      if (req.url === '/order') {
        return json(res, 400, { type: 'urn:ietf:params:acme:error:rejectedIdentifier', detail: 'Error creating new order :: Cannot issue for "api.example.com": blocked' }, { 'content-type': 'application/problem+json' });
      }
      json(res, 404, {});
    };
    const err = (await obtainCertificate(opts()).catch((e: unknown) => e)) as CliError;
    expect(err.message).toBe('ACME: the CA will not issue for api.example.com: Error creating new order :: Cannot issue for "api.example.com": blocked');
    expect(err.hint).toBe('the CA does not issue for these names (reserved or blocked): check loadBalancer.serverName');
  });

  it('acme-client outside obtainCertificate is left as it was (no adapter, no agent)', async () => {
    const acme = await import('acme-client');
    const mod = (acme as unknown as { default?: typeof acme }).default ?? acme;
    expect(mod.axios.defaults.adapter).toBe('http');
    expect(mod.axios.defaults.httpsAgent).toBeUndefined();
    expect(process.env.NODE_TLS_REJECT_UNAUTHORIZED).toBeUndefined();
  });
});

// ---------------------------------------------------------------------------------------------
// The store
// ---------------------------------------------------------------------------------------------

describe('acme store', () => {
  const mode = async (p: string) => (await stat(p)).mode & 0o777;
  let inv: string;

  beforeAll(async () => {
    inv = join(dir, 'inv');
    await mkdir(inv);
  });

  it('nothing stored yet', async () => {
    expect(await loadAcmeState(inv, 'prod')).toEqual({ dir: join(inv, ACME_DIR, 'prod'), problems: [] });
  });

  it('writes 0700 folders, 0600 keys (from their first byte), 0644 chain and meta; then reads it back', async () => {
    const old = process.umask(0);
    try {
      opened.length = 0;
      const out = await saveAcmeState(inv, 'prod', {
        accountKeyPem: key.other!,
        certificate: { certificatePem: pem.valid!, keyPem: key.valid!, domains: ['api.example.com', 'www.example.com'], directoryUrl: 'https://ca.example/dir', obtainedAt: new Date('2026-11-27T10:00:00Z') },
      });
      const d = join(inv, ACME_DIR, 'prod');
      expect(out).toEqual({
        dir: d,
        written: [join(d, 'account.key'), join(d, 'privkey.pem'), join(d, 'fullchain.pem'), join(d, 'meta.json')],
        gitignoreAdded: true,
      });
      expect(await mode(join(inv, ACME_DIR))).toBe(0o700);
      expect(await mode(d)).toBe(0o700);
      expect(await mode(join(d, 'account.key'))).toBe(0o600);
      expect(await mode(join(d, 'privkey.pem'))).toBe(0o600);
      expect(await mode(join(d, 'fullchain.pem'))).toBe(0o644);
      expect(await mode(join(d, 'meta.json'))).toBe(0o644);
      expect((await readdir(d)).sort()).toEqual(['account.key', 'fullchain.pem', 'meta.json', 'privkey.pem']);
      // Every temporary file was created exclusively and 0600, then renamed into place.
      const temps = opened.filter((o) => /\.tmp$/.test(o.path));
      expect(temps.map((t) => t.path.replace(/\.\d+\.[0-9a-f]{12}\.tmp$/, '').replace(`${d}/`, ''))).toEqual(['.account.key', '.privkey.pem', '.fullchain.pem', '.meta.json']);
      expect(temps.every((t) => t.flags === 'wx' && t.mode === 0o600)).toBe(true);
    } finally {
      process.umask(old);
    }

    const state = await loadAcmeState(inv, 'prod');
    const info = certificateInfo(pem.valid!);
    expect(state).toEqual({
      dir: join(inv, ACME_DIR, 'prod'),
      accountKeyPem: key.other,
      certificatePem: pem.valid,
      keyPem: key.valid,
      meta: {
        format: 1,
        cluster: 'prod',
        domains: ['api.example.com', 'www.example.com'],
        directoryUrl: 'https://ca.example/dir',
        notBefore: info.notBefore.toISOString(),
        notAfter: info.notAfter.toISOString(),
        obtainedAt: '2026-11-27T10:00:00.000Z',
        issuer: 'O=Test, CN=valid',
        keyType: 'ECDSA P-256',
      },
      problems: [],
    });
    const meta = await readFile(join(state.dir, 'meta.json'), 'utf8');
    expect(meta).not.toMatch(/PRIVATE|BEGIN/);
  });

  it('replaces files atomically: a new inode, and a reader of the old one still reads all of it', async () => {
    const d = acmeStateDir(inv, 'prod');
    const before = await stat(join(d, 'fullchain.pem'));
    const reader = await openFile(join(d, 'fullchain.pem'), 'r');
    try {
      await saveAcmeState(inv, 'prod', { certificate: { certificatePem: pem.wildcard!, keyPem: key.wildcard!, domains: ['api.example.com'], directoryUrl: 'https://ca.example/dir' } });
      const after = await stat(join(d, 'fullchain.pem'));
      expect(after.ino).not.toBe(before.ino);
      expect((await reader.readFile()).toString()).toBe(pem.valid);
    } finally {
      await reader.close();
    }
    expect(await readFile(join(d, 'fullchain.pem'), 'utf8')).toBe(pem.wildcard);
    expect(await readFile(join(d, 'privkey.pem'), 'utf8')).toBe(key.wildcard);
    // The account key was not part of this save: untouched.
    expect(await readFile(join(d, 'account.key'), 'utf8')).toBe(key.other);
  });

  it('a write that fails leaves the old file and no temporary file', async () => {
    const scratch = join(dir, 'atomic');
    await mkdir(scratch);
    await writeFile(join(scratch, 'keep.pem'), 'old\n');
    await mkdir(join(scratch, 'blocked.pem')); // renaming a file over a folder fails
    await expect(writeFileAtomic(join(scratch, 'blocked.pem'), 'new\n', 0o600)).rejects.toThrow(/^cannot write .*blocked\.pem: /);
    expect((await readdir(scratch)).sort()).toEqual(['blocked.pem', 'keep.pem']);
    await writeFileAtomic(join(scratch, 'keep.pem'), 'new\n', 0o600);
    expect(await readFile(join(scratch, 'keep.pem'), 'utf8')).toBe('new\n');
    expect((await readdir(scratch)).sort()).toEqual(['blocked.pem', 'keep.pem']);
  });

  it('tightens loose folders and key files on save, and says so on load', async () => {
    const d = acmeStateDir(inv, 'loose');
    await mkdir(d, { recursive: true });
    await chmod(join(inv, ACME_DIR), 0o755);
    await chmod(d, 0o777);
    await writeFile(join(d, 'account.key'), key.other!);
    await chmod(join(d, 'account.key'), 0o644);
    expect((await loadAcmeState(inv, 'loose')).problems).toEqual([`${join(d, 'account.key')} is mode 0644, readable by other users: the next save makes it 0600`]);
    await saveAcmeState(inv, 'loose', { accountKeyPem: key.other! });
    expect(await mode(join(inv, ACME_DIR))).toBe(0o700);
    expect(await mode(d)).toBe(0o700);
    expect(await mode(join(d, 'account.key'))).toBe(0o600);
    expect((await loadAcmeState(inv, 'loose')).problems).toEqual([]);
  });

  it('sets aside a certificate whose key is missing or another one, and a meta.json it cannot read', async () => {
    const d = acmeStateDir(inv, 'broken');
    await mkdir(d, { recursive: true });
    await writeFile(join(d, 'fullchain.pem'), pem.valid!);
    let state = await loadAcmeState(inv, 'broken');
    expect(state.certificatePem).toBeUndefined();
    expect(state.problems).toEqual([`${join(d, 'fullchain.pem')}: its private key privkey.pem is missing: set aside (the next renewal replaces it)`]);
    await writeFile(join(d, 'privkey.pem'), key.other!, { mode: 0o600 });
    await writeFile(join(d, 'meta.json'), '{"format":7}');
    state = await loadAcmeState(inv, 'broken');
    expect(state.certificatePem).toBeUndefined();
    expect(state.keyPem).toBeUndefined();
    expect(state.problems).toEqual([
      `${join(d, 'fullchain.pem')}: privkey.pem is not its private key: set aside (the next renewal replaces it)`,
      `${join(d, 'meta.json')}: not a meta.json this version writes: ignored`,
    ]);
    // needsRenewal then sees no certificate.
    expect(needsRenewal(state.certificatePem, ['api.example.com'], new Date())).toEqual({ renew: true, reason: 'there is no certificate yet' });
    // And a mismatched pair is never written.
    await expect(
      saveAcmeState(inv, 'broken', { certificate: { certificatePem: pem.valid!, keyPem: key.other!, domains: ['api.example.com'], directoryUrl: 'x' } }),
    ).rejects.toThrow('refusing to store the certificate for api.example.com: privkey.pem is not its private key');
  });

  it('refuses a cluster name that is not one (no path tricks)', () => {
    expect(() => acmeStateDir(inv, '../etc')).toThrow(InputError);
    expect(() => acmeStateDir(inv, 'Prod')).toThrow('"Prod" is not a cluster name');
  });

  it('git-ignores .newapi-cluster-acme/ once, beside whatever the .gitignore holds', async () => {
    const g = join(dir, 'gi');
    await mkdir(g);
    expect(await ensureAcmeIgnored(g)).toBe(true);
    expect(await readFile(join(g, '.gitignore'), 'utf8')).toBe('.newapi-cluster-acme/\n');
    expect(await ensureAcmeIgnored(g)).toBe(false);
    await writeFile(join(g, '.gitignore'), '.newapi-cluster.env\nbackups/');
    expect(await ensureAcmeIgnored(g)).toBe(true);
    expect(await readFile(join(g, '.gitignore'), 'utf8')).toBe('.newapi-cluster.env\nbackups/\n.newapi-cluster-acme/\n');
    await writeFile(join(g, '.gitignore'), '/.newapi-cluster-acme\n');
    expect(await ensureAcmeIgnored(g)).toBe(false);
    // saveAcmeState did it for the inventory above, once.
    expect(await readFile(join(inv, '.gitignore'), 'utf8')).toBe('.newapi-cluster-acme/\n');
  });

  it('the stored certificate is a valid X.509 pair', async () => {
    const state = await loadAcmeState(inv, 'prod');
    const cert = new X509Certificate(state.certificatePem!);
    expect(cert.subjectAltName).toContain('*.example.com');
  });
});
