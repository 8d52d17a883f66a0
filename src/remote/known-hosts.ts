/**
 * OpenSSH known_hosts: parse, look up, append.
 *
 * Hand-written because no well-kept npm package does this: the registry has no maintained
 * known_hosts parser (sshpk parses keys and fingerprints, not known_hosts files; the few small
 * packages that do read known_hosts ignore hashed entries, `[host]:port` or `@revoked`, each of
 * which would make verification unsound). The format is small and fixed (sshd(8) "SSH_KNOWN_HOSTS
 * FILE FORMAT"); the lookup rules below follow OpenSSH's hostfile.c and match.c.
 */
import { createHash, createHmac, timingSafeEqual } from 'node:crypto';
import { appendFile, chmod, mkdir, readFile } from 'node:fs/promises';
import { dirname } from 'node:path';

export type KnownHostsMarker = 'revoked' | 'cert-authority';

export interface KnownHostsEntry {
  /** 1-based line number in the file, for messages ("remove line 12 of ~/.ssh/known_hosts"). */
  line: number;
  marker?: KnownHostsMarker;
  /** The host field as written: a comma list of patterns, or one `|1|salt|hash`. */
  hosts: string;
  keyType: string;
  /** The public key blob, base64, as written. */
  key: string;
}

export type HostKeyVerdict =
  | { status: 'match' }
  | { status: 'unknown' }
  | { status: 'changed'; line: number }
  | { status: 'revoked'; line: number };

/**
 * Key types ssh2 can negotiate as host keys. A host recorded only with types outside this list
 * (certificates, sk-* keys) is treated as not recorded at all, since no connection could ever
 * match it.
 */
export const NEGOTIABLE_KEY_TYPES = [
  'ssh-ed25519',
  'ecdsa-sha2-nistp256',
  'ecdsa-sha2-nistp384',
  'ecdsa-sha2-nistp521',
  'ssh-rsa',
] as const;

/** The name OpenSSH looks a host up by: `host` on port 22, `[host]:port` on any other. */
export function knownHostName(host: string, port: number): string {
  const lower = host.toLowerCase();
  return port === 22 ? lower : `[${lower}]:${port}`;
}

export function parseKnownHosts(text: string): KnownHostsEntry[] {
  const entries: KnownHostsEntry[] = [];
  const lines = text.split('\n');
  for (let i = 0; i < lines.length; i++) {
    const raw = lines[i]!.trim();
    if (raw === '' || raw.startsWith('#')) continue;
    const fields = raw.split(/\s+/);
    let marker: KnownHostsMarker | undefined;
    if (fields[0]!.startsWith('@')) {
      const name = fields.shift()!;
      if (name === '@revoked') marker = 'revoked';
      else if (name === '@cert-authority') marker = 'cert-authority';
      else continue; // OpenSSH skips lines with unknown markers
    }
    const [hosts, keyType, key] = fields;
    // Malformed lines and old SSH-1 entries (`host bits exponent modulus`) are skipped, as OpenSSH does.
    if (hosts === undefined || keyType === undefined || key === undefined || /^\d+$/.test(keyType)) continue;
    entries.push({ line: i + 1, ...(marker === undefined ? {} : { marker }), hosts, keyType, key });
  }
  return entries;
}

/**
 * A parsed file, indexed by the host names its lines list plainly, so a run that connects to a
 * hundred hosts does not scan every line for each of them. Hashed, wildcard and negated fields
 * are still tested one by one (a hash can only be checked against a given name).
 */
export class KnownHostsIndex {
  private readonly byName = new Map<string, KnownHostsEntry[]>();
  private readonly patterned: KnownHostsEntry[] = [];

  constructor(readonly entries: readonly KnownHostsEntry[]) {
    for (const entry of entries) {
      if (entry.hosts.startsWith('|') || /[*?!]/.test(entry.hosts)) {
        this.patterned.push(entry);
        continue;
      }
      for (const name of new Set(entry.hosts.toLowerCase().split(',').filter((n) => n !== ''))) {
        const list = this.byName.get(name);
        if (list) list.push(entry);
        else this.byName.set(name, [entry]);
      }
    }
  }

  /** The entries whose host field names this host, in file order (what checkHostKey and knownKeyTypes need to see). */
  forHost(host: string, port: number): KnownHostsEntry[] {
    const plain = this.byName.get(knownHostName(host, port)) ?? [];
    const matched = this.patterned.filter((e) => entryMatchesHost(e, host, port));
    return matched.length === 0 ? plain : [...plain, ...matched].sort((a, b) => a.line - b.line);
  }
}

/** Does the entry's host field name this host? Handles hashed fields, wildcards and `!negation`. */
export function entryMatchesHost(entry: KnownHostsEntry, host: string, port: number): boolean {
  const name = knownHostName(host, port);
  if (entry.hosts.startsWith('|')) return hashedFieldMatches(entry.hosts, name);
  let matched = false;
  for (const pattern of entry.hosts.split(',')) {
    if (pattern === '') continue;
    const negated = pattern.startsWith('!');
    if (!wildcardMatch(name, (negated ? pattern.slice(1) : pattern).toLowerCase())) continue;
    // A matching negated pattern rules the line out whatever else matches.
    if (negated) return false;
    matched = true;
  }
  return matched;
}

/** Pure lookup over parsed entries; see verifyHostKey. */
export function checkHostKey(
  entries: readonly KnownHostsEntry[],
  host: string,
  port: number,
  keyType: string,
  keyBase64: string,
): HostKeyVerdict {
  const forHost = entries.filter((e) => e.marker !== 'cert-authority' && entryMatchesHost(e, host, port));
  const revoked = forHost.find((e) => e.marker === 'revoked' && sameKey(e.key, keyBase64));
  if (revoked !== undefined) return { status: 'revoked', line: revoked.line };

  const plain = forHost.filter((e) => e.marker === undefined);
  if (plain.some((e) => e.keyType === keyType && sameKey(e.key, keyBase64))) return { status: 'match' };
  const sameType = plain.find((e) => e.keyType === keyType);
  if (sameType !== undefined) return { status: 'changed', line: sameType.line };
  // The host is recorded, but with a key of another type. The client always offers the recorded
  // types first (see preferredHostKeyAlgorithms in ssh.ts), so a server that now answers with a
  // different type has lost its old key, or is not the server we know: stricter than OpenSSH's
  // accept-new, which would record it, because that lets an interceptor pick a type we lack.
  const otherType = plain.find((e) => (NEGOTIABLE_KEY_TYPES as readonly string[]).includes(e.keyType));
  if (otherType !== undefined) return { status: 'changed', line: otherType.line };
  return { status: 'unknown' };
}

/** Key types recorded for this host, in file order, for ordering host key algorithms. */
export function knownKeyTypes(entries: readonly KnownHostsEntry[], host: string, port: number): string[] {
  const types = entries
    .filter((e) => e.marker === undefined && entryMatchesHost(e, host, port))
    .map((e) => e.keyType);
  return [...new Set(types)];
}

/** Reads and parses a known_hosts file; a missing file is an empty one. */
export async function readKnownHosts(file: string): Promise<KnownHostsEntry[]> {
  try {
    return parseKnownHosts(await readFile(file, 'utf8'));
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === 'ENOENT') return [];
    throw err;
  }
}

/** Looks the presented host key up in a known_hosts file. */
export async function verifyHostKey(
  file: string,
  host: string,
  port: number,
  keyType: string,
  keyBase64: string,
): Promise<HostKeyVerdict> {
  return checkHostKey(await readKnownHosts(file), host, port, keyType, keyBase64);
}

// Appends from concurrent connections (many new hosts at once) are serialised per file, so the
// "does the file end with a newline" check and the append cannot interleave.
const appendQueues = new Map<string, Promise<void>>();

/** Records a host key (plain, not hashed, so an operator can read and prune it). Creates the file 0600. */
export async function appendHostKey(
  file: string,
  host: string,
  port: number,
  keyType: string,
  keyBase64: string,
): Promise<void> {
  const previous = appendQueues.get(file) ?? Promise.resolve();
  const next = previous.catch(() => undefined).then(() => appendNow(file, host, port, keyType, keyBase64));
  appendQueues.set(file, next);
  try {
    await next;
  } finally {
    if (appendQueues.get(file) === next) appendQueues.delete(file);
  }
}

async function appendNow(file: string, host: string, port: number, keyType: string, keyBase64: string): Promise<void> {
  // ~/.ssh must not be group- or world-writable for OpenSSH to trust it, hence 0700 when we create it.
  await mkdir(dirname(file), { recursive: true, mode: 0o700 });
  let prefix = '';
  let created = false;
  try {
    const current = await readFile(file);
    if (current.length > 0 && current[current.length - 1] !== 0x0a) prefix = '\n';
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code !== 'ENOENT') throw err;
    created = true;
  }
  await appendFile(file, `${prefix}${knownHostName(host, port)} ${keyType} ${keyBase64}\n`, { mode: 0o600 });
  // appendFile's mode is masked by the umask; a file we created is made exactly 0600, and one the
  // operator already had keeps the mode they chose.
  if (created) await chmod(file, 0o600);
}

/** `SHA256:…` as `ssh-keygen -l` and OpenSSH's prompts print it, from the key blob. */
export function fingerprint(key: Buffer | string): string {
  const blob = typeof key === 'string' ? Buffer.from(key, 'base64') : key;
  return `SHA256:${createHash('sha256').update(blob).digest('base64').replace(/=+$/, '')}`;
}

/** The key type an SSH public key blob names in its first field (`ssh-ed25519`, `ssh-rsa`, …). */
export function keyTypeOfBlob(blob: Buffer): string {
  if (blob.length < 4) throw new Error('host key blob is too short');
  const len = blob.readUInt32BE(0);
  if (len === 0 || 4 + len > blob.length) throw new Error('host key blob is malformed');
  return blob.subarray(4, 4 + len).toString('latin1');
}

function sameKey(a: string, b: string): boolean {
  // Compare the decoded blobs: the same key may be written with or without trailing padding.
  return Buffer.from(a, 'base64').equals(Buffer.from(b, 'base64'));
}

function hashedFieldMatches(field: string, name: string): boolean {
  // `|1|base64(salt)|base64(HMAC-SHA1(salt, name))`; 1 is the only hash type OpenSSH has defined.
  const parts = field.split('|');
  if (parts.length !== 4 || parts[1] !== '1') return false;
  const salt = Buffer.from(parts[2]!, 'base64');
  const expected = Buffer.from(parts[3]!, 'base64');
  const actual = createHmac('sha1', salt).update(name).digest();
  return expected.length === actual.length && timingSafeEqual(expected, actual);
}

/** OpenSSH's match_pattern: `*` any run of characters, `?` exactly one. */
function wildcardMatch(text: string, pattern: string): boolean {
  let t = 0;
  let p = 0;
  let starP = -1;
  let starT = 0;
  while (t < text.length) {
    if (p < pattern.length && (pattern[p] === '?' || pattern[p] === text[t])) {
      t++;
      p++;
    } else if (p < pattern.length && pattern[p] === '*') {
      starP = p++;
      starT = t;
    } else if (starP !== -1) {
      p = starP + 1;
      t = ++starT;
    } else {
      return false;
    }
  }
  while (p < pattern.length && pattern[p] === '*') p++;
  return p === pattern.length;
}
