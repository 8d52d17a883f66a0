/**
 * The ACME engine (RFC 8555, HTTP-01) behind `loadBalancer.tls.acme` and `tls renew`: one
 * certificate, shared by every balancer host, obtained and renewed from the operator's machine.
 * Nothing here speaks SSH: the caller hands in `publish` / `unpublish`, which put the key
 * authorization where every balancer serves `/.well-known/acme-challenge/<token>` and take it
 * away again.
 *
 * acme-client 5 does the protocol (JWS, nonces, account, order, CSR, finalize). Its HTTP goes
 * through one process-wide axios instance, so for the length of one `obtainCertificate` call
 * (an AsyncLocalStorage scope) every request it makes is sent by the adapter below instead of
 * axios' own: our https.Agent (with `caFile` as its trust, when given: no global TLS setting is
 * ever touched), a deadline per request and for the whole call, the caller's AbortSignal, and
 * bounded retries whose waits the signal cuts short. acme-client's own retry loop (sleeps of 5 s
 * and up, or as long as a 429's Retry-After, that nothing can cancel) and its status polling
 * (5 s to 30 s backoff) are therefore not used: this module polls itself, in short abortable
 * steps. acme-client's DNS/HTTP pre-check of the challenge (`verifyChallenge`, which `auto()`
 * skips with `skipChallengeVerification: true`) is never called either: it resolves names with
 * this machine's DNS, which is not what the CA sees (and hangs in the lab).
 *
 * Keys: the certificate key is ECDSA P-256 (prime256v1, PKCS#8 PEM), made fresh for every
 * issuance; a new account key is ECDSA P-256 as well. Neither ever reaches a message, a report
 * or an error.
 */
import { AsyncLocalStorage } from 'node:async_hooks';
import { setMaxListeners } from 'node:events';
import { X509Certificate, createPrivateKey, generateKeyPair } from 'node:crypto';
import { readFile } from 'node:fs/promises';
import http from 'node:http';
import https from 'node:https';
import { isIP } from 'node:net';
import { promisify } from 'node:util';
import type * as AcmeModule from 'acme-client';
import { CliError, ExitCode, InputError, errorMessage } from '../errors.js';

/** What `obtainCertificate` makes the certificate's key: say so wherever keys are described. */
export const CERTIFICATE_KEY_TYPE = 'ECDSA P-256';
/** The default bound on one whole issuance (every request, wait and challenge included). */
export const DEFAULT_ACME_TIMEOUT_MS = 120_000;
/** Renew when fewer days than this are left (`tls renew`). */
export const RENEW_BEFORE_DAYS = 30;

const DAY_MS = 86_400_000;
/** One HTTP request to the CA never takes longer than this (then it is retried, time allowing). */
const REQUEST_TIMEOUT_MS = 30_000;
/** Attempts per request on a dropped connection or a 5xx. */
const REQUEST_ATTEMPTS = 3;
/** Time `unpublish` gets per token, even after the run was stopped or timed out. */
const UNPUBLISH_TIMEOUT_MS = 15_000;
/** Largest answer read from the CA (a chain is a few KB). */
const MAX_BODY_BYTES = 4 * 1024 * 1024;

const generateKeyPairAsync = promisify(generateKeyPair);

// ---------------------------------------------------------------------------------------------
// Certificates on their own (no network)
// ---------------------------------------------------------------------------------------------

export interface CertificateInfo {
  notAfter: Date;
  notBefore: Date;
  /** DNS names and IP addresses of the subjectAltName extension, as written there. */
  subjectAltNames: string[];
  /** The issuer's distinguished name on one line: `C=US, O=Let's Encrypt, CN=R11`. */
  issuer: string;
  /**
   * Whether a TLS client asking for `name` would accept the certificate: wildcard-aware (one
   * label), case-insensitive, subjectAltName only (the subject CN is ignored, as browsers do).
   * `_`, an empty name, nginx's `.example.com` and `~regex` forms cover nothing.
   */
  covers(name: string): boolean;
  /** Whole days until notAfter (negative once expired), counted from `now`. */
  daysLeft(now?: Date): number;
}

/** Reads the first certificate of a PEM (a full chain's first is the leaf). */
export function certificateInfo(pem: string): CertificateInfo {
  const x509 = new X509Certificate(firstPemCertificate(pem));
  const notAfter = new Date(x509.validTo);
  const notBefore = new Date(x509.validFrom);
  const subjectAltNames = parseSubjectAltNames(x509.subjectAltName);
  const issuer = x509.issuer.split('\n').filter(Boolean).join(', ');
  return {
    notAfter,
    notBefore,
    subjectAltNames,
    issuer,
    covers: (name: string) => coversName(x509, name),
    daysLeft: (now: Date = new Date()) => Math.floor((notAfter.getTime() - now.getTime()) / DAY_MS),
  };
}

/**
 * Whether the certificate must be (re)obtained: there is none, it cannot be read, it does not
 * cover every domain, or fewer than `days` days are left. `reason` says which, in one line.
 */
export function needsRenewal(pem: string | undefined, domains: readonly string[], now: Date, days = RENEW_BEFORE_DAYS): { renew: boolean; reason: string } {
  if (pem === undefined || pem.trim() === '') return { renew: true, reason: 'there is no certificate yet' };
  let info: CertificateInfo;
  try {
    info = certificateInfo(pem);
  } catch (e) {
    return { renew: true, reason: `the stored certificate cannot be read (${oneLine(errorMessage(e))})` };
  }
  const missing = domains.filter((d) => !info.covers(d));
  if (missing.length > 0) {
    const covered = info.subjectAltNames.length > 0 ? info.subjectAltNames.join(', ') : 'no name';
    return { renew: true, reason: `the certificate does not cover ${missing.join(', ')} (it covers ${covered})` };
  }
  const leftMs = info.notAfter.getTime() - now.getTime();
  const until = isoDay(info.notAfter);
  if (leftMs <= 0) {
    const ago = Math.floor(-leftMs / DAY_MS);
    return { renew: true, reason: `the certificate expired on ${until} (${ago === 0 ? 'today' : `${plural(ago, 'day')} ago`})` };
  }
  const left = Math.floor(leftMs / DAY_MS);
  if (leftMs < days * DAY_MS) {
    return { renew: true, reason: `the certificate expires on ${until}, in ${plural(left, 'day')} (renewal is due under ${days})` };
  }
  return { renew: false, reason: `the certificate is valid until ${until} (${plural(left, 'day')} left) and covers ${domains.join(', ')}` };
}

function plural(n: number, word: string): string {
  return `${n} ${word}${n === 1 ? '' : 's'}`;
}

function isoDay(d: Date): string {
  return d.toISOString().slice(0, 10);
}

function firstPemCertificate(pem: string): string {
  const m = /-----BEGIN CERTIFICATE-----[\s\S]+?-----END CERTIFICATE-----/.exec(pem);
  if (!m) throw new Error('no PEM certificate in it');
  return m[0];
}

/** Every PEM certificate in a chain, in order. */
export function splitPemChain(pem: string): string[] {
  return [...pem.matchAll(/-----BEGIN CERTIFICATE-----[\s\S]+?-----END CERTIFICATE-----/g)].map((m) => `${m[0]}\n`);
}

/** `DNS:a, DNS:b, IP Address:10.0.0.1` → [a, b, 10.0.0.1]; other kinds (email, URI) left out. */
function parseSubjectAltNames(text: string | undefined): string[] {
  if (!text) return [];
  const out: string[] = [];
  // Node quotes an entry that holds a comma or a quote ("DNS:\"a,b\""); split outside quotes.
  for (const raw of text.match(/(?:[^,"]|"(?:[^"\\]|\\.)*")+/g) ?? []) {
    const entry = raw.trim();
    const unq = entry.startsWith('"') ? (JSON.parse(entry) as string) : entry;
    if (unq.startsWith('DNS:')) out.push(unq.slice(4));
    else if (unq.startsWith('IP Address:')) out.push(unq.slice('IP Address:'.length));
  }
  return out;
}

function coversName(x509: X509Certificate, raw: string): boolean {
  const name = raw.trim().replace(/\.$/, '');
  if (name === '' || name === '_' || name.startsWith('.') || name.startsWith('~')) return false;
  if (isIP(name)) return x509.checkIP(name) !== undefined;
  if (/[^A-Za-z0-9.*_-]/.test(name)) return false;
  // A wildcard server name is covered by the same wildcard only, never by one of its names.
  if (name.includes('*') && !/^\*\.[^*]+$/.test(name)) return false;
  return x509.checkHost(name, { subject: 'never', partialWildcards: false, multiLabelWildcards: false }) !== undefined;
}

// ---------------------------------------------------------------------------------------------
// Issuance
// ---------------------------------------------------------------------------------------------

export interface ObtainOptions {
  /** The CA's ACME directory, e.g. https://acme-v02.api.letsencrypt.org/directory. */
  directoryUrl: string;
  /** Account contact (expiry notices); empty: none. */
  email: string;
  /** PEM file of the CA(s) that signed the directory's HTTPS certificate, instead of Node's bundled roots; for private ACME servers. */
  caFile?: string | null;
  /** Names for the certificate, the first one its subject CN; HTTP-01 only (no wildcards, no IPs). */
  domains: string[];
  /** The account to reuse; absent: a new ECDSA P-256 key, returned as `accountKeyPem` (save it). */
  accountKeyPem?: string;
  /** Makes every balancer answer http://DOMAIN/.well-known/acme-challenge/TOKEN with `keyAuthorization`. */
  publish: (token: string, keyAuthorization: string) => Promise<void>;
  /** Takes it away again (called for every published token, whatever happened). */
  unpublish: (token: string) => Promise<void>;
  signal?: AbortSignal;
  /** Bound on the whole issuance; default 120 s. */
  timeoutMs?: number;
  /** Progress, one line at a time; never holds a key. */
  report?: (text: string) => void;
}

export interface ObtainedCertificate {
  /** Leaf first, then the intermediates, as the CA sent them (what nginx wants in ssl_certificate). */
  certificatePem: string;
  /** The certificate's private key: ECDSA P-256, PKCS#8 PEM. */
  keyPem: string;
  accountKeyPem: string;
  notAfter: Date;
  notBefore: Date;
  domains: string[];
}

/** A new ACME account key (ECDSA P-256, PKCS#8 PEM), for callers that save it before the first order. */
export async function newAccountKeyPem(): Promise<string> {
  return newEcKeyPem();
}

async function newEcKeyPem(): Promise<string> {
  const { privateKey } = await generateKeyPairAsync('ec', {
    namedCurve: 'prime256v1',
    publicKeyEncoding: { type: 'spki', format: 'pem' },
    privateKeyEncoding: { type: 'pkcs8', format: 'pem' },
  });
  return privateKey;
}

type Challenge = AcmeModule.Authorization['challenges'][number] & { type: 'http-01' };

type Step = 'directory' | 'account' | 'order' | 'publish' | 'challenge' | 'finalize' | 'download';

const STEP_TEXT: Record<Step, string> = {
  directory: 'reading the ACME directory',
  account: 'registering the ACME account',
  order: 'placing the order',
  publish: 'publishing the HTTP-01 challenge',
  challenge: 'HTTP-01 validation',
  finalize: 'finalizing the order',
  download: 'downloading the certificate',
};

interface Progress {
  step: Step;
  /** The domain the step is about, when it is about one. */
  domain?: string | undefined;
  token?: string | undefined;
}

/** Obtains one certificate for `domains` over HTTP-01. Every failure is a CliError naming the step and the domain. */
export async function obtainCertificate(opts: ObtainOptions): Promise<ObtainedCertificate> {
  const domains = normalizeDomains(opts.domains);
  const directoryUrl = checkDirectoryUrl(opts.directoryUrl);
  const email = checkEmail(opts.email);
  const ca = opts.caFile ? await readCaFile(opts.caFile) : undefined;
  const accountKeyPem = opts.accountKeyPem ?? (await newEcKeyPem());
  try {
    const k = createPrivateKey(accountKeyPem);
    if (k.asymmetricKeyType !== 'ec' && k.asymmetricKeyType !== 'rsa') throw new Error(`${k.asymmetricKeyType} keys are not ACME account keys`);
  } catch (e) {
    throw new InputError(`the ACME account key cannot be used: ${oneLine(errorMessage(e))}`, 'remove the stored account.key to register a new account');
  }
  const acme = await loadAcme();
  const timeoutMs = opts.timeoutMs ?? DEFAULT_ACME_TIMEOUT_MS;
  const report = (text: string): void => {
    try {
      opts.report?.(text);
    } catch {
      // progress is for people: it never fails an issuance
    }
  };

  const ctl = new AbortController();
  // Every request and wait in flight listens on it (a hundred names: a hundred authorizations).
  setMaxListeners(0, ctl.signal);
  const timer = setTimeout(() => ctl.abort(new AcmeTimeout(timeoutMs)), timeoutMs);
  const onAbort = (): void => ctl.abort(opts.signal?.reason ?? new Error('aborted'));
  if (opts.signal?.aborted) onAbort();
  else opts.signal?.addEventListener('abort', onAbort, { once: true });

  const scope: HttpScope = {
    signal: ctl.signal,
    deadline: Date.now() + timeoutMs,
    httpsAgent: new https.Agent({ keepAlive: true, ...(ca ? { ca } : {}) }),
    httpAgent: new http.Agent({ keepAlive: true }),
    lastProblem: undefined,
    last: undefined,
  };
  const progress: Progress = { step: 'directory' };
  try {
    return await httpScope.run(scope, () => issue(acme, { ...opts, domains, directoryUrl, email, accountKeyPem }, progress, ctl.signal, report));
  } catch (e) {
    throw explain(e, { progress, domains, directoryUrl, caFile: opts.caFile ?? undefined, scope, userSignal: opts.signal, timeoutMs });
  } finally {
    clearTimeout(timer);
    opts.signal?.removeEventListener('abort', onAbort);
    scope.httpsAgent.destroy();
    scope.httpAgent.destroy();
  }
}

async function issue(
  acme: typeof AcmeModule,
  opts: ObtainOptions & { domains: string[]; directoryUrl: string; email: string; accountKeyPem: string },
  progress: Progress,
  signal: AbortSignal,
  report: (text: string) => void,
): Promise<ObtainedCertificate> {
  const { domains } = opts;
  // acme-client's own backoff is never reached (we poll ourselves), but keep it short should it be.
  const client = new acme.Client({ directoryUrl: opts.directoryUrl, accountKey: opts.accountKeyPem, backoffAttempts: 1, backoffMin: 100, backoffMax: 100 });

  progress.step = 'directory';
  report(`ACME directory ${opts.directoryUrl}`);
  await readDirectory(opts.directoryUrl);

  progress.step = 'account';
  const account = await client.createAccount({ termsOfServiceAgreed: true, ...(opts.email ? { contact: [`mailto:${opts.email}`] } : {}) });
  if (account.status !== undefined && account.status !== 'valid') {
    throw new CliError(`ACME: the account is ${account.status}`, { hint: 'remove the stored account.key to register a new account, then run again' });
  }
  report(`ACME account ${client.getAccountUrl()}`);

  progress.step = 'order';
  let order = await client.createOrder({ identifiers: domains.map((value) => ({ type: 'dns', value })) });
  if (order.status === 'invalid') throw new CliError(`ACME: the CA created the order for ${domains.join(', ')} as invalid`, { hint: 'run again; if it persists, check the CA status page' });
  report(`order for ${domains.join(', ')}`);

  // HTTP-01 for every authorization still pending (a CA may reuse valid ones).
  const authorizations = await client.getAuthorizations(order);
  const todo: { domain: string; challenge: Challenge }[] = [];
  for (const authz of authorizations) {
    const domain = authz.identifier.value;
    progress.domain = domain;
    if (authz.status === 'valid') {
      report(`${domain}: already authorized`);
      continue;
    }
    if (authz.status !== 'pending') throw new CliError(`ACME: the CA's authorization for ${domain} is ${authz.status}`, { hint: 'run again for a new order' });
    const challenge = authz.challenges.find((c): c is Challenge => c.type === 'http-01');
    if (!challenge) {
      throw new CliError(`ACME: the CA offers no HTTP-01 challenge for ${domain} (only ${authz.challenges.map((c) => c.type).join(', ') || 'none'})`, {
        hint: 'a wildcard name needs DNS-01, which newapi-cluster does not do: name each host in loadBalancer.serverName',
      });
    }
    todo.push({ domain, challenge });
  }

  const published: string[] = [];
  try {
    for (const t of todo) {
      progress.step = 'publish';
      progress.domain = t.domain;
      progress.token = t.challenge.token;
      const keyAuthorization = await client.getChallengeKeyAuthorization(t.challenge);
      published.push(t.challenge.token);
      await untilAborted(opts.publish(t.challenge.token, keyAuthorization), signal);
      report(`${t.domain}: challenge ${t.challenge.token} published`);
    }
    for (const t of todo) {
      progress.step = 'challenge';
      progress.domain = t.domain;
      progress.token = t.challenge.token;
      await client.completeChallenge(t.challenge);
    }
    if (todo.length > 0) report(`waiting for the CA to validate ${todo.map((t) => t.domain).join(', ')}`);
    // Poll the authorizations until none is pending.
    progress.step = 'challenge';
    for (let delay = 100; ; delay = Math.min(delay * 2, 2_000)) {
      const now = await client.getAuthorizations(order);
      const failed = now.find((a) => a.status !== 'valid' && a.status !== 'pending');
      if (failed) throw challengeFailure(failed, todo);
      const pending = now.filter((a) => a.status === 'pending');
      if (pending.length === 0) break;
      progress.domain = pending[0]?.identifier.value;
      progress.token = todo.find((t) => t.domain === progress.domain)?.challenge.token;
      await sleep(delay, signal);
    }
    if (todo.length > 0) report(`validated ${todo.map((t) => t.domain).join(', ')}`);
  } finally {
    for (const token of published) {
      try {
        await untilTimeout(opts.unpublish(token), UNPUBLISH_TIMEOUT_MS);
      } catch (e) {
        report(`could not remove challenge ${token}: ${oneLine(errorMessage(e))}`);
      }
    }
  }
  progress.domain = undefined;
  progress.token = undefined;

  progress.step = 'finalize';
  const keyPem = await newEcKeyPem();
  const [, csr] = await acme.crypto.createCsr({ ...(domains[0]!.length <= 64 ? { commonName: domains[0] } : {}), altNames: [...domains] }, keyPem);
  order = await client.getOrder(order);
  if (order.status !== 'ready' && order.status !== 'valid') {
    throw new CliError(`ACME: the order for ${domains.join(', ')} is ${order.status} after validation`, { hint: 'run again for a new order' });
  }
  if (order.status === 'ready') order = await client.finalizeOrder(order, csr);
  report('order finalized, waiting for the certificate');
  for (let delay = 100; order.status !== 'valid'; delay = Math.min(delay * 2, 2_000)) {
    if (order.status === 'invalid') throw new CliError(`ACME: the CA refused to issue the certificate for ${domains.join(', ')}`, { hint: 'run again; if it persists, check the CA status page' });
    await sleep(delay, signal);
    order = await client.getOrder(order);
  }

  progress.step = 'download';
  const certificatePem = await client.getCertificate(order);
  if (typeof certificatePem !== 'string' || splitPemChain(certificatePem).length === 0) {
    throw new CliError(`ACME: the CA sent no PEM certificate for ${domains.join(', ')}`, { hint: 'run again; if it persists, check the CA status page' });
  }
  const leaf = new X509Certificate(splitPemChain(certificatePem)[0]!);
  if (!leaf.checkPrivateKey(createPrivateKey(keyPem))) throw new CliError(`ACME: the CA sent a certificate for another key (${domains.join(', ')})`, { hint: 'run again' });
  const info = certificateInfo(certificatePem);
  const uncovered = domains.filter((d) => !info.covers(d));
  if (uncovered.length > 0) throw new CliError(`ACME: the CA's certificate does not cover ${uncovered.join(', ')}`, { hint: 'run again' });
  report(`certificate for ${domains.join(', ')} from ${info.issuer}, valid until ${info.notAfter.toISOString()}`);
  return { certificatePem, keyPem, accountKeyPem: opts.accountKeyPem, notAfter: info.notAfter, notBefore: info.notBefore, domains };
}

/** GETs the directory through the same transport, and checks it is one (before acme-client, whose errors here are obscure). */
async function readDirectory(directoryUrl: string): Promise<void> {
  const scope = httpScope.getStore();
  if (!scope) throw new Error('readDirectory outside obtainCertificate');
  const answer = await send(scope, { url: directoryUrl, method: 'get', headers: { accept: 'application/json', 'user-agent': USER_AGENT } });
  const type = String(answer.headers['content-type'] ?? '').split(';')[0]!.trim();
  const problem = scope.lastProblem?.detail ? `: ${oneLine(scope.lastProblem.detail)}` : '';
  const notOne = (why: string): CliError =>
    new CliError(`ACME: ${directoryUrl} is not an ACME directory (HTTP ${answer.status}${type ? `, ${type}` : ''})${why}`, { hint: DIRECTORY_HINT });
  if (answer.status !== 200) throw notOne(problem);
  let dir: unknown;
  try {
    dir = JSON.parse(answer.data);
  } catch {
    throw notOne(': the answer is not JSON');
  }
  const missing = ['newNonce', 'newAccount', 'newOrder'].filter((k) => typeof (dir as Record<string, unknown> | null)?.[k] !== 'string');
  if (missing.length > 0) throw notOne(`: it has no ${missing.join(', ')}`);
}

const DIRECTORY_HINT = "check loadBalancer.tls.acme.directoryUrl: it is the CA's directory URL, e.g. https://acme-v02.api.letsencrypt.org/directory";
const USER_AGENT = 'newapi-cluster (acme-client)';

function challengeFailure(authz: AcmeModule.Authorization, todo: { domain: string; challenge: { token: string } }[]): CliError {
  const domain = authz.identifier.value;
  const challenge = authz.challenges.find((c): c is Challenge => c.type === 'http-01') as (Challenge & { error?: AcmeProblem }) | undefined;
  const token = challenge?.token ?? todo.find((t) => t.domain === domain)?.challenge.token ?? 'TOKEN';
  const problem = challenge?.error;
  const detail = problem?.detail ? oneLine(problem.detail) : `the authorization is ${authz.status}`;
  const url = `http://${domain}/.well-known/acme-challenge/${token}`;
  const kind = problemKind(problem?.type);
  let hint = `the CA could not fetch ${url}: is port 80 of every balancer reachable from the CA, and does ${domain} resolve to them?`;
  if (kind === 'dns') hint = `the CA could not resolve ${domain}: point its DNS (A/AAAA) at the balancers, then run again`;
  else if (kind === 'unauthorized' || kind === 'incorrectResponse') hint = `the CA fetched ${url} but got the wrong answer: does every balancer serve /.well-known/acme-challenge/ from the challenge folder, and does ${domain} resolve only to them?`;
  else if (kind === 'rateLimited') hint = rateLimitHint(problem);
  return new CliError(`ACME: the CA could not validate ${domain} (HTTP-01): ${detail}`, { hint });
}

// ---------------------------------------------------------------------------------------------
// Input
// ---------------------------------------------------------------------------------------------

const LABEL = /^[a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?$/;

/** Lower-cased, de-duplicated names that HTTP-01 can prove; anything else is bad input. */
export function normalizeDomains(domains: readonly string[]): string[] {
  const out: string[] = [];
  for (const raw of domains) {
    const d = raw.trim().toLowerCase().replace(/\.$/, '');
    if (d === '_' || d === '') {
      throw new InputError(`"${raw}" is not a domain name: a certificate needs real names`, 'set loadBalancer.serverName to the names clients use, e.g. api.example.com');
    }
    if (d.includes('*')) throw new InputError(`${d}: a wildcard name needs DNS-01, which newapi-cluster does not do`, 'name each host in loadBalancer.serverName');
    if (d.startsWith('~') || d.startsWith('.')) throw new InputError(`${d}: nginx name patterns cannot go in a certificate`, 'name each host in loadBalancer.serverName');
    if (isIP(d)) throw new InputError(`${d}: ACME certificates here are for domain names, not IP addresses`, 'give the balancers a DNS name and use it in loadBalancer.serverName');
    if (d.length > 253 || !d.includes('.') || !d.split('.').every((l) => LABEL.test(l))) {
      throw new InputError(`"${raw}" is not a domain name a CA will issue for`, 'use fully qualified names such as api.example.com');
    }
    if (!out.includes(d)) out.push(d);
  }
  if (out.length === 0) throw new InputError('no domain names to put in the certificate', 'set loadBalancer.serverName to the names clients use');
  if (out.length > 100) throw new InputError(`${out.length} domain names: a certificate holds at most 100`, 'split the names over several clusters');
  return out;
}

function checkDirectoryUrl(raw: string): string {
  let url: URL;
  try {
    url = new URL(raw);
  } catch {
    throw new InputError(`the ACME directory URL "${raw}" is not a URL`, 'set loadBalancer.tls.acme.directoryUrl, e.g. https://acme-v02.api.letsencrypt.org/directory');
  }
  if (url.protocol !== 'https:' && url.protocol !== 'http:') {
    throw new InputError(`the ACME directory URL ${raw} is not http(s)`, 'set loadBalancer.tls.acme.directoryUrl, e.g. https://acme-v02.api.letsencrypt.org/directory');
  }
  return url.href;
}

function checkEmail(raw: string): string {
  const email = raw.trim();
  if (email !== '' && !/^[^@\s]+@[^@\s]+\.[^@\s]+$/.test(email)) {
    throw new InputError(`the ACME contact "${email}" is not an e-mail address`, 'set loadBalancer.tls.acme.email, e.g. ops@example.com');
  }
  return email;
}

async function readCaFile(path: string): Promise<string> {
  let text: string;
  try {
    text = await readFile(path, 'utf8');
  } catch (e) {
    throw new InputError(`cannot read the ACME caFile ${path}: ${oneLine(errorMessage(e))}`, 'set loadBalancer.tls.acme.caFile to the PEM file of the CA that signed the directory\'s HTTPS certificate, or null for public CAs');
  }
  const certs = splitPemChain(text);
  try {
    if (certs.length === 0) throw new Error('no PEM certificate in it');
    for (const c of certs) new X509Certificate(c);
  } catch (e) {
    throw new InputError(`the ACME caFile ${path} is not a PEM certificate file: ${oneLine(errorMessage(e))}`, 'point loadBalancer.tls.acme.caFile at a PEM CA certificate');
  }
  return certs.join('');
}

async function loadAcme(): Promise<typeof AcmeModule> {
  const mod = (await import('acme-client')) as typeof AcmeModule & { default?: typeof AcmeModule };
  const acme = mod.Client ? mod : (mod.default as typeof AcmeModule);
  installAdapter(acme);
  return acme;
}

// ---------------------------------------------------------------------------------------------
// HTTP: acme-client's requests, sent our way for the length of one call
// ---------------------------------------------------------------------------------------------

/** An RFC 7807 problem document, as ACME servers send them. */
interface AcmeProblem {
  type?: string;
  detail?: string;
  status?: number;
}

interface HttpScope {
  signal: AbortSignal;
  deadline: number;
  httpsAgent: https.Agent;
  httpAgent: http.Agent;
  /** The problem document of the last answer, when it was one (cleared by a success). */
  lastProblem: (AcmeProblem & { retryAfter?: string }) | undefined;
  last: { method: string; url: string; status?: number } | undefined;
}

const httpScope = new AsyncLocalStorage<HttpScope>();
let adapterInstalled = false;

/**
 * Installs (once per process) a request interceptor on acme-client's axios instance that, inside
 * an `obtainCertificate` call only, replaces the transport with `send` below. axios still does the
 * rest (headers, JSON in and out). Outside such a call acme-client is left exactly as it was.
 */
function installAdapter(acme: typeof AcmeModule): void {
  if (adapterInstalled) return;
  adapterInstalled = true;
  acme.axios.interceptors.request.use((config) => {
    const scope = httpScope.getStore();
    if (scope) config.adapter = ((c: typeof config) => send(scope, c)) as unknown as typeof config.adapter;
    return config;
  });
}

/** A transport failure (no answer). It carries no `config`, so acme-client's retry interceptor passes it on untouched. */
class AcmeTransportError extends Error {
  constructor(
    readonly method: string,
    readonly url: string,
    readonly code: string | undefined,
    message: string,
  ) {
    super(message);
    this.name = 'AcmeTransportError';
  }
}

class AcmeTimeout extends Error {
  constructor(readonly ms: number) {
    super(`no certificate within ${Math.round(ms / 1000)} s`);
    this.name = 'AcmeTimeout';
  }
}

interface RawAnswer {
  status: number;
  statusText: string;
  headers: http.IncomingHttpHeaders;
  body: string;
}

interface AxiosishConfig {
  url?: string;
  baseURL?: string;
  method?: string;
  headers?: unknown;
  data?: unknown;
}

async function send<C extends AxiosishConfig>(scope: HttpScope, config: C): Promise<{ data: string; status: number; statusText: string; headers: http.IncomingHttpHeaders; config: C; request: object }> {
  const url = new URL(config.url ?? '', config.baseURL);
  const method = (config.method ?? 'get').toUpperCase();
  const headers = flattenHeaders(config.headers);
  const body = config.data === undefined || config.data === null ? undefined : Buffer.from(typeof config.data === 'string' || Buffer.isBuffer(config.data) ? config.data : JSON.stringify(config.data));
  if (body) headers['content-length'] = String(body.length);
  for (let attempt = 1; ; attempt++) {
    if (scope.signal.aborted) throw abortReason(scope.signal);
    scope.last = { method, url: url.href };
    let answer: RawAnswer;
    try {
      answer = await request(scope, url, method, headers, body);
    } catch (e) {
      if (scope.signal.aborted) throw abortReason(scope.signal);
      const code = (e as NodeJS.ErrnoException).code;
      const transient = code === 'ECONNRESET' || code === 'EPIPE' || code === 'ETIMEDOUT' || code === 'EAI_AGAIN' || code === 'REQUEST_TIMEOUT' || code === 'ECONNABORTED';
      if (transient && attempt < REQUEST_ATTEMPTS && scope.deadline - Date.now() > 1_000) {
        await sleep(500 * attempt, scope.signal);
        continue;
      }
      throw new AcmeTransportError(method, url.href, code, `${method} ${url.href}: ${oneLine(errorMessage(e))}`);
    }
    scope.last.status = answer.status;
    const type = String(answer.headers['content-type'] ?? '');
    if (type.startsWith('application/problem+json')) {
      let problem: AcmeProblem = {};
      try {
        problem = JSON.parse(answer.body) as AcmeProblem;
      } catch {
        // not JSON after all
      }
      scope.lastProblem = { ...problem, status: answer.status, ...(answer.headers['retry-after'] ? { retryAfter: String(answer.headers['retry-after']) } : {}) };
    } else if (answer.status < 400) {
      scope.lastProblem = undefined;
    }
    if ([500, 502, 503, 504].includes(answer.status) && attempt < REQUEST_ATTEMPTS) {
      const retryAfter = Number.parseInt(String(answer.headers['retry-after'] ?? ''), 10);
      const wait = Number.isFinite(retryAfter) && retryAfter > 0 ? retryAfter * 1000 : 1_000 * attempt;
      if (wait < scope.deadline - Date.now() - 1_000) {
        await sleep(wait, scope.signal);
        continue;
      }
    }
    return { data: answer.body, status: answer.status, statusText: answer.statusText, headers: answer.headers, config, request: {} };
  }
}

function request(scope: HttpScope, url: URL, method: string, headers: Record<string, string>, body: Buffer | undefined): Promise<RawAnswer> {
  const timeoutMs = REQUEST_TIMEOUT_MS;
  // When the whole issuance's deadline comes first, it ends this request (scope.signal): one
  // timer, so the error always says which bound was hit.
  const ownTimer = scope.deadline - Date.now() > REQUEST_TIMEOUT_MS;
  return new Promise<RawAnswer>((resolve, reject) => {
    const secure = url.protocol === 'https:';
    const req = (secure ? https : http).request(url, { method, headers, agent: secure ? scope.httpsAgent : scope.httpAgent });
    let done = false;
    const finish = (fn: () => void): void => {
      if (done) return;
      done = true;
      clearTimeout(timer);
      scope.signal.removeEventListener('abort', onAbort);
      fn();
    };
    const onAbort = (): void => {
      req.destroy();
      finish(() => reject(abortReason(scope.signal)));
    };
    const timer = ownTimer
      ? setTimeout(() => {
          const err: NodeJS.ErrnoException = new Error(`no answer within ${Math.round(timeoutMs / 1000)} s`);
          err.code = 'REQUEST_TIMEOUT';
          req.destroy(err);
        }, timeoutMs)
      : undefined;
    scope.signal.addEventListener('abort', onAbort, { once: true });
    req.on('error', (e) => finish(() => reject(e)));
    req.on('response', (res) => {
      const chunks: Buffer[] = [];
      let size = 0;
      res.on('data', (c: Buffer) => {
        size += c.length;
        if (size > MAX_BODY_BYTES) {
          req.destroy(new Error(`the answer is larger than ${MAX_BODY_BYTES} bytes`));
          return;
        }
        chunks.push(c);
      });
      res.on('error', (e) => finish(() => reject(e)));
      res.on('end', () =>
        finish(() => resolve({ status: res.statusCode ?? 0, statusText: res.statusMessage ?? '', headers: res.headers, body: Buffer.concat(chunks).toString('utf8') })),
      );
    });
    req.end(body);
  });
}

function flattenHeaders(raw: unknown): Record<string, string> {
  const obj = (raw && typeof (raw as { toJSON?: unknown }).toJSON === 'function' ? (raw as { toJSON(): unknown }).toJSON() : raw) as Record<string, unknown> | undefined;
  const out: Record<string, string> = {};
  for (const [k, v] of Object.entries(obj ?? {})) {
    if (v === undefined || v === null || v === false) continue;
    out[k.toLowerCase()] = Array.isArray(v) ? v.join(', ') : String(v);
  }
  return out;
}

// ---------------------------------------------------------------------------------------------
// Waiting
// ---------------------------------------------------------------------------------------------

function abortReason(signal: AbortSignal): Error {
  const r: unknown = signal.reason;
  return r instanceof Error ? r : new Error('aborted');
}

function sleep(ms: number, signal: AbortSignal): Promise<void> {
  if (signal.aborted) return Promise.reject(abortReason(signal));
  return new Promise((resolve, reject) => {
    const onAbort = (): void => {
      clearTimeout(t);
      reject(abortReason(signal));
    };
    const t = setTimeout(() => {
      signal.removeEventListener('abort', onAbort);
      resolve();
    }, ms);
    signal.addEventListener('abort', onAbort, { once: true });
  });
}

/** The caller's callback, given up on (not cancelled) when the run is stopped or out of time. */
function untilAborted<T>(p: Promise<T>, signal: AbortSignal): Promise<T> {
  if (signal.aborted) {
    p.catch(() => undefined);
    return Promise.reject(abortReason(signal));
  }
  return new Promise<T>((resolve, reject) => {
    const onAbort = (): void => reject(abortReason(signal));
    signal.addEventListener('abort', onAbort, { once: true });
    p.then(
      (v) => {
        signal.removeEventListener('abort', onAbort);
        resolve(v);
      },
      (e: unknown) => {
        signal.removeEventListener('abort', onAbort);
        reject(e instanceof Error ? e : new Error(String(e)));
      },
    );
  });
}

function untilTimeout<T>(p: Promise<T>, ms: number): Promise<T> {
  return new Promise<T>((resolve, reject) => {
    const t = setTimeout(() => reject(new Error(`no answer within ${ms / 1000} s`)), ms);
    p.then(
      (v) => {
        clearTimeout(t);
        resolve(v);
      },
      (e: unknown) => {
        clearTimeout(t);
        reject(e instanceof Error ? e : new Error(String(e)));
      },
    );
  });
}

// ---------------------------------------------------------------------------------------------
// Errors
// ---------------------------------------------------------------------------------------------

const TLS_TRUST_CODES = new Set([
  'SELF_SIGNED_CERT_IN_CHAIN',
  'DEPTH_ZERO_SELF_SIGNED_CERT',
  'UNABLE_TO_VERIFY_LEAF_SIGNATURE',
  'UNABLE_TO_GET_ISSUER_CERT',
  'UNABLE_TO_GET_ISSUER_CERT_LOCALLY',
  'CERT_UNTRUSTED',
  'CERT_SIGNATURE_FAILURE',
]);
const UNREACHABLE_CODES = new Set(['ECONNREFUSED', 'ENOTFOUND', 'EAI_AGAIN', 'EHOSTUNREACH', 'ENETUNREACH', 'ETIMEDOUT', 'ECONNRESET', 'REQUEST_TIMEOUT', 'EPROTO']);

/** `urn:ietf:params:acme:error:rateLimited` → `rateLimited`. */
function problemKind(type: string | undefined): string | undefined {
  return type?.replace(/^urn:ietf:params:acme:error:/, '');
}

function rateLimitHint(problem: (AcmeProblem & { retryAfter?: string }) | undefined): string {
  const after = problem?.retryAfter ? ` (the CA says retry after ${problem.retryAfter}${/^\d+$/.test(problem.retryAfter) ? ' s' : ''})` : '';
  return `the CA limits certificates, orders and failed validations per account and per name: wait${after} and run tls renew again; try new setups against the CA's staging directory first`;
}

interface ExplainContext {
  progress: Progress;
  domains: string[];
  directoryUrl: string;
  caFile: string | undefined;
  scope: HttpScope;
  userSignal: AbortSignal | undefined;
  timeoutMs: number;
}

function explain(e: unknown, ctx: ExplainContext): Error {
  const { progress, scope } = ctx;
  const names = progress.domain ?? ctx.domains.join(', ');
  const where = `${STEP_TEXT[progress.step]} for ${names}`;
  // Stopped by the caller (Ctrl-C): the caller's own reason, untouched.
  if (ctx.userSignal?.aborted) {
    const r: unknown = ctx.userSignal.reason;
    return r instanceof Error ? r : new CliError(`ACME: stopped while ${where}`, { exitCode: ExitCode.interrupted });
  }
  if (e instanceof AcmeTimeout || (scope.signal.aborted && scope.signal.reason instanceof AcmeTimeout)) {
    const origin = new URL(ctx.directoryUrl).origin;
    const hint =
      progress.step === 'publish'
        ? 'publishing the challenge to the balancers did not finish: check that every balancer answers over SSH'
        : progress.step === 'challenge'
          ? `the CA did not finish validating: is port 80 of every balancer reachable from the CA (http://${progress.domain ?? ctx.domains[0]}/.well-known/acme-challenge/${progress.token ?? 'TOKEN'})?`
          : `check that this machine reaches ${origin} quickly, then run again`;
    return new CliError(`ACME: no certificate within ${Math.round(ctx.timeoutMs / 1000)} s (stopped while ${where})`, { hint });
  }
  if (progress.step === 'publish' && !(e instanceof AcmeTransportError)) {
    // The caller's callback failed (an upload to a balancer): keep its hint, node and exit code.
    const cli = e instanceof CliError ? e : undefined;
    return new CliError(`ACME: could not publish the HTTP-01 challenge for ${names}: ${oneLine(errorMessage(e))}`, {
      exitCode: cli?.exitCode ?? ExitCode.failed,
      hint: cli?.hint ?? 'check that every balancer host answers over SSH and can write its challenge folder, then run again',
      ...(cli?.node ? { node: cli.node } : {}),
      cause: e,
    });
  }
  if (e instanceof CliError) return e;
  if (e instanceof AcmeTransportError) {
    const origin = new URL(e.url).origin;
    if (e.code && TLS_TRUST_CODES.has(e.code)) {
      return new CliError(`ACME: the HTTPS certificate of ${origin} is not trusted (${e.code}) while ${where}`, {
        hint: ctx.caFile
          ? `${ctx.caFile} did not sign it: set loadBalancer.tls.acme.caFile to the CA certificate of this ACME server`
          : 'for a private ACME server, set loadBalancer.tls.acme.caFile to the PEM of the CA that signed its HTTPS certificate',
      });
    }
    if (e.code === 'ERR_TLS_CERT_ALTNAME_INVALID' || e.code === 'CERT_HAS_EXPIRED' || e.code === 'CERT_NOT_YET_VALID') {
      return new CliError(`ACME: the HTTPS certificate of ${origin} is not valid for it (${e.code}) while ${where}`, {
        hint: 'check loadBalancer.tls.acme.directoryUrl: the host name must be one its certificate names',
      });
    }
    if (e.code && UNREACHABLE_CODES.has(e.code)) {
      return new CliError(`ACME: cannot reach ${origin} (${e.code}) while ${where}`, {
        hint: 'check loadBalancer.tls.acme.directoryUrl and that this machine can reach the CA (proxy, firewall, DNS)',
      });
    }
    return new CliError(`ACME: ${where} failed: ${e.message}`, { hint: 'check loadBalancer.tls.acme.directoryUrl and the network to the CA' });
  }

  const problem = scope.lastProblem;
  const kind = problemKind(problem?.type);
  const detail = oneLine(problem?.detail ?? errorMessage(e));
  const status = scope.last?.status;
  if (kind === 'rateLimited' || status === 429) {
    return new CliError(`ACME: rate limited while ${where}: ${detail}`, { hint: rateLimitHint(problem) });
  }
  if (progress.step === 'directory') {
    return new CliError(`ACME: ${ctx.directoryUrl} is not an ACME directory${status ? ` (HTTP ${status})` : ''}: ${detail}`, { hint: DIRECTORY_HINT });
  }
  if (kind === 'externalAccountRequired') {
    return new CliError(`ACME: the CA requires external account binding (${detail})`, { hint: 'use a CA that does not require EAB (e.g. Let\'s Encrypt); newapi-cluster does not support EAB' });
  }
  if (kind === 'invalidContact' || kind === 'unsupportedContact') {
    return new CliError(`ACME: the CA refuses the contact address: ${detail}`, { hint: 'set loadBalancer.tls.acme.email to an address at a real, public domain' });
  }
  if (kind === 'rejectedIdentifier' || kind === 'caa') {
    return new CliError(`ACME: the CA will not issue for ${names}: ${detail}`, {
      hint: kind === 'caa' ? 'the domain\'s CAA DNS record does not allow this CA: add it, or use another CA' : 'the CA does not issue for these names (reserved or blocked): check loadBalancer.serverName',
    });
  }
  if (kind === 'accountDoesNotExist' || (kind === 'unauthorized' && progress.step === 'account')) {
    return new CliError(`ACME: the CA does not know the stored account: ${detail}`, { hint: 'remove the stored account.key to register a new account, then run again' });
  }
  if (kind === 'badCSR' || kind === 'badPublicKey' || kind === 'badSignatureAlgorithm') {
    return new CliError(`ACME: the CA refused the certificate request for ${names}: ${detail}`, { hint: 'this CA may not accept ECDSA P-256 keys: report it, with the CA\'s name' });
  }
  const stepHint: Record<Step, string> = {
    directory: 'check loadBalancer.tls.acme.directoryUrl',
    account: 'check loadBalancer.tls.acme.email and directoryUrl, then run again',
    order: 'check loadBalancer.serverName (the names must be public DNS names), then run again',
    publish: 'check that every balancer host answers over SSH and can write its challenge folder, then run again',
    challenge: `is port 80 of every balancer reachable from the CA (http://${progress.domain ?? ctx.domains[0]}/.well-known/acme-challenge/${progress.token ?? 'TOKEN'})?`,
    finalize: 'run again; if it persists, check the CA status page',
    download: 'run again; if it persists, check the CA status page',
  };
  return new CliError(`ACME: ${where} failed${status && status >= 400 ? ` (HTTP ${status})` : ''}: ${detail}`, { hint: stepHint[progress.step], cause: e });
}

/** One line, no PEM block (a key must never reach a message), at most 300 characters. */
function oneLine(text: string): string {
  const flat = text.replace(/-----BEGIN [^-]+-----[\s\S]*?-----END [^-]+-----/g, '<PEM>').replace(/\s*\n\s*/g, ' ').trim();
  return flat.length > 300 ? `${flat.slice(0, 297)}...` : flat;
}
