/**
 * Where the ACME account and the cluster's certificate live on the operator's machine:
 * `.newapi-cluster-acme/<cluster>/` beside the inventory (folders 0700, git-ignored), holding
 *
 *   account.key    the ACME account's private key      0600
 *   privkey.pem    the certificate's private key       0600
 *   fullchain.pem  the certificate, leaf first         0644
 *   meta.json      domains, directory URL, validity, when obtained (no secret)   0644
 *
 * Every file is written atomically: a temporary file in the same folder, created with its final
 * mode (so a key is 0600 from its first byte), synced, then renamed over the old one. A
 * certificate and its key cannot be renamed together: the key goes first, and `loadAcmeState`
 * sets a certificate aside when its key is missing or is not its own, so an interrupted save
 * costs at most one extra renewal, never a balancer with a mismatched pair.
 */
import { X509Certificate, createPrivateKey, randomBytes } from 'node:crypto';
import { appendFile, chmod, mkdir, open, readFile, rename, rm, stat } from 'node:fs/promises';
import { basename, dirname, join } from 'node:path';
import { InputError, errorMessage } from '../errors.js';
import { CERTIFICATE_KEY_TYPE, certificateInfo } from './acme.js';

/** The folder beside the inventory. */
export const ACME_DIR = '.newapi-cluster-acme';
export const ACCOUNT_KEY_FILE = 'account.key';
export const PRIVATE_KEY_FILE = 'privkey.pem';
export const FULLCHAIN_FILE = 'fullchain.pem';
export const META_FILE = 'meta.json';
const META_FORMAT = 1;

const CLUSTER_NAME = /^[a-z0-9][a-z0-9-]*$/;

/** What meta.json holds. Never a key. */
export interface AcmeMeta {
  format: typeof META_FORMAT;
  cluster: string;
  domains: string[];
  directoryUrl: string;
  /** ISO times. */
  notBefore: string;
  notAfter: string;
  obtainedAt: string;
  issuer: string;
  keyType: string;
}

export interface AcmeState {
  /** Absolute path of `.newapi-cluster-acme/<cluster>`. */
  dir: string;
  accountKeyPem?: string;
  /** Present only together with `keyPem`, and only when the key is the certificate's own. */
  certificatePem?: string;
  keyPem?: string;
  meta?: AcmeMeta;
  /** What was found wrong and set aside (one line each); the next renewal repairs it. */
  problems: string[];
}

export interface AcmeStateUpdate {
  accountKeyPem?: string;
  certificate?: {
    certificatePem: string;
    keyPem: string;
    domains: string[];
    directoryUrl: string;
    obtainedAt?: Date;
  };
}

export interface SaveOutcome {
  dir: string;
  /** Absolute paths written, in order. */
  written: string[];
  /** True when `.newapi-cluster-acme/` had to be added to the .gitignore beside the inventory. */
  gitignoreAdded: boolean;
}

/** `.newapi-cluster-acme/<cluster>` beside the inventory. */
export function acmeStateDir(inventoryDir: string, cluster: string): string {
  if (!CLUSTER_NAME.test(cluster)) throw new InputError(`"${cluster}" is not a cluster name`, 'cluster.name is lower-case letters, digits and dashes');
  return join(inventoryDir, ACME_DIR, cluster);
}

/** Reads what is stored for `cluster` (nothing yet: only `dir` and no problems). */
export async function loadAcmeState(inventoryDir: string, cluster: string): Promise<AcmeState> {
  const dir = acmeStateDir(inventoryDir, cluster);
  const state: AcmeState = { dir, problems: [] };
  const accountKeyPem = await readIfExists(join(dir, ACCOUNT_KEY_FILE));
  const keyPem = await readIfExists(join(dir, PRIVATE_KEY_FILE));
  const certificatePem = await readIfExists(join(dir, FULLCHAIN_FILE));
  const metaText = await readIfExists(join(dir, META_FILE));

  if (accountKeyPem !== undefined) {
    try {
      createPrivateKey(accountKeyPem);
      state.accountKeyPem = accountKeyPem;
    } catch {
      state.problems.push(`${join(dir, ACCOUNT_KEY_FILE)} is not a private key: set aside (a new account will be registered)`);
    }
  }

  if (certificatePem !== undefined) {
    const pair = checkPair(certificatePem, keyPem);
    if (pair === undefined) {
      state.certificatePem = certificatePem;
      state.keyPem = keyPem;
    } else {
      state.problems.push(`${join(dir, FULLCHAIN_FILE)}: ${pair}: set aside (the next renewal replaces it)`);
    }
  }

  if (metaText !== undefined) {
    const meta = parseMeta(metaText);
    if (typeof meta === 'string') state.problems.push(`${join(dir, META_FILE)}: ${meta}`);
    else state.meta = meta;
  }

  for (const [file, want] of [
    [ACCOUNT_KEY_FILE, 0o600],
    [PRIVATE_KEY_FILE, 0o600],
  ] as const) {
    const mode = await modeOf(join(dir, file));
    if (mode !== undefined && (mode & 0o077) !== 0) {
      state.problems.push(`${join(dir, file)} is mode ${octal(mode)}, readable by other users: the next save makes it ${octal(want)}`);
    }
  }
  return state;
}

/**
 * Writes the account key and/or a new certificate with its key and meta.json, creating the
 * folders (0700) and git-ignoring `.newapi-cluster-acme/` beside the inventory.
 */
export async function saveAcmeState(inventoryDir: string, cluster: string, update: AcmeStateUpdate): Promise<SaveOutcome> {
  const dir = acmeStateDir(inventoryDir, cluster);
  const written: string[] = [];
  const cert = update.certificate;
  let meta: AcmeMeta | undefined;
  if (cert) {
    const pair = checkPair(cert.certificatePem, cert.keyPem);
    if (pair !== undefined) throw new Error(`refusing to store the certificate for ${cert.domains.join(', ')}: ${pair}`);
    const info = certificateInfo(cert.certificatePem);
    meta = {
      format: META_FORMAT,
      cluster,
      domains: [...cert.domains],
      directoryUrl: cert.directoryUrl,
      notBefore: info.notBefore.toISOString(),
      notAfter: info.notAfter.toISOString(),
      obtainedAt: (cert.obtainedAt ?? new Date()).toISOString(),
      issuer: info.issuer,
      keyType: CERTIFICATE_KEY_TYPE,
    };
  }

  await makePrivateDir(join(inventoryDir, ACME_DIR));
  await makePrivateDir(dir);
  const gitignoreAdded = await ensureAcmeIgnored(inventoryDir);

  if (update.accountKeyPem !== undefined) {
    await writeFileAtomic(join(dir, ACCOUNT_KEY_FILE), update.accountKeyPem, 0o600);
    written.push(join(dir, ACCOUNT_KEY_FILE));
  }
  if (cert && meta) {
    await writeFileAtomic(join(dir, PRIVATE_KEY_FILE), cert.keyPem, 0o600);
    written.push(join(dir, PRIVATE_KEY_FILE));
    await writeFileAtomic(join(dir, FULLCHAIN_FILE), cert.certificatePem, 0o644);
    written.push(join(dir, FULLCHAIN_FILE));
    await writeFileAtomic(join(dir, META_FILE), `${JSON.stringify(meta, null, 2)}\n`, 0o644);
    written.push(join(dir, META_FILE));
  }
  return { dir, written, gitignoreAdded };
}

/** Adds `.newapi-cluster-acme/` to the .gitignore beside the inventory if no line names it; true if it had to. */
export async function ensureAcmeIgnored(inventoryDir: string): Promise<boolean> {
  const file = join(inventoryDir, '.gitignore');
  let text = '';
  try {
    text = await readFile(file, 'utf8');
  } catch {
    // no .gitignore yet
  }
  const accepted = new Set([ACME_DIR, `${ACME_DIR}/`, `/${ACME_DIR}`, `/${ACME_DIR}/`, `${ACME_DIR}/*`, `/${ACME_DIR}/*`, `${ACME_DIR}/**`, `/${ACME_DIR}/**`]);
  if (text.split(/\r?\n/).some((l) => accepted.has(l.trim()))) return false;
  await appendFile(file, `${text && !text.endsWith('\n') ? '\n' : ''}${ACME_DIR}/\n`);
  return true;
}

/**
 * Replaces `path` atomically: a temporary file beside it, created with `mode` (never wider, even
 * for an instant), written and synced, then renamed over `path`. On failure the old file is left
 * as it was and the temporary one removed.
 */
export async function writeFileAtomic(path: string, content: string | Buffer, mode: number): Promise<void> {
  const tmp = join(dirname(path), `.${basename(path)}.${process.pid}.${randomBytes(6).toString('hex')}.tmp`);
  let fh;
  try {
    fh = await open(tmp, 'wx', mode & 0o600);
  } catch (e) {
    throw new Error(`cannot write ${path}: ${errorMessage(e)}`, { cause: e });
  }
  try {
    try {
      await fh.writeFile(content);
      await fh.chmod(mode);
      await fh.sync();
    } finally {
      await fh.close();
    }
    await rename(tmp, path);
  } catch (e) {
    await rm(tmp, { force: true });
    throw new Error(`cannot write ${path}: ${errorMessage(e)}`, { cause: e });
  }
  // The rename itself, made durable (best effort: not every file system lets a folder be synced).
  try {
    const d = await open(dirname(path), 'r');
    try {
      await d.sync();
    } finally {
      await d.close();
    }
  } catch {
    // ignore
  }
}

/** Why `keyPem` cannot serve `certificatePem` (undefined: it can). */
function checkPair(certificatePem: string, keyPem: string | undefined): string | undefined {
  let leaf: X509Certificate;
  try {
    const first = /-----BEGIN CERTIFICATE-----[\s\S]+?-----END CERTIFICATE-----/.exec(certificatePem);
    if (!first) return 'no PEM certificate in it';
    leaf = new X509Certificate(first[0]);
  } catch (e) {
    return `not a readable certificate (${errorMessage(e).split('\n')[0]})`;
  }
  if (keyPem === undefined) return `its private key ${PRIVATE_KEY_FILE} is missing`;
  try {
    if (!leaf.checkPrivateKey(createPrivateKey(keyPem))) return `${PRIVATE_KEY_FILE} is not its private key`;
  } catch {
    return `${PRIVATE_KEY_FILE} is not a readable private key`;
  }
  return undefined;
}

function parseMeta(text: string): AcmeMeta | string {
  let raw: unknown;
  try {
    raw = JSON.parse(text);
  } catch {
    return 'not JSON: ignored';
  }
  const m = raw as Partial<AcmeMeta>;
  const isDate = (v: unknown): v is string => typeof v === 'string' && !Number.isNaN(Date.parse(v));
  if (
    typeof m !== 'object' ||
    m === null ||
    m.format !== META_FORMAT ||
    typeof m.cluster !== 'string' ||
    !Array.isArray(m.domains) ||
    !m.domains.every((d) => typeof d === 'string') ||
    typeof m.directoryUrl !== 'string' ||
    !isDate(m.notBefore) ||
    !isDate(m.notAfter) ||
    !isDate(m.obtainedAt) ||
    typeof m.issuer !== 'string' ||
    typeof m.keyType !== 'string'
  ) {
    return 'not a meta.json this version writes: ignored';
  }
  return m as AcmeMeta;
}

async function makePrivateDir(dir: string): Promise<void> {
  await mkdir(dir, { recursive: true, mode: 0o700 });
  const st = await stat(dir);
  if (!st.isDirectory()) throw new Error(`${dir} is not a folder`);
  if ((st.mode & 0o777) !== 0o700) await chmod(dir, 0o700);
}

async function readIfExists(path: string): Promise<string | undefined> {
  try {
    return await readFile(path, 'utf8');
  } catch (e) {
    if ((e as NodeJS.ErrnoException).code === 'ENOENT') return undefined;
    throw e;
  }
}

async function modeOf(path: string): Promise<number | undefined> {
  try {
    return (await stat(path)).mode & 0o777;
  } catch {
    return undefined;
  }
}

function octal(mode: number): string {
  return mode.toString(8).padStart(4, '0');
}
