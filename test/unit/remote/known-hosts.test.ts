import { execFileSync } from 'node:child_process';
import { createHmac } from 'node:crypto';
import { mkdtemp, readFile, rm, stat, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import {
  appendHostKey,
  checkHostKey,
  entryMatchesHost,
  fingerprint,
  keyTypeOfBlob,
  knownHostName,
  KnownHostsIndex,
  knownKeyTypes,
  parseKnownHosts,
  verifyHostKey,
} from '../../../src/remote/known-hosts.js';

let dir: string;
// Real keys, made by ssh-keygen, so fingerprints can be checked against its own output.
let keyA: { type: string; base64: string; fingerprint: string };
let keyB: { type: string; base64: string };
let rsa: { type: string; base64: string };

function makeKey(name: string, type: string): { type: string; base64: string; fingerprint: string } {
  const file = join(dir, name);
  execFileSync('ssh-keygen', ['-q', '-t', type, '-N', '', '-f', file]);
  const pub = execFileSync('cat', [`${file}.pub`], { encoding: 'utf8' }).trim().split(' ');
  const fp = execFileSync('ssh-keygen', ['-l', '-E', 'sha256', '-f', `${file}.pub`], { encoding: 'utf8' }).split(' ')[1]!;
  return { type: pub[0]!, base64: pub[1]!, fingerprint: fp };
}

beforeAll(async () => {
  dir = await mkdtemp(join(tmpdir(), 'newapi-known-hosts-'));
  keyA = makeKey('a', 'ed25519');
  keyB = makeKey('b', 'ed25519');
  rsa = makeKey('r', 'rsa');
});

afterAll(async () => {
  await rm(dir, { recursive: true, force: true });
});

describe('parseKnownHosts', () => {
  it('reads plain, marked and commented lines, skipping what OpenSSH skips', () => {
    const text = [
      '# comment',
      '',
      'web1,10.0.0.11 ssh-ed25519 AAAAkey1 ops@laptop',
      '   [db.internal]:2222 ecdsa-sha2-nistp256 AAAAkey2',
      '@revoked * ssh-rsa AAAAkey3',
      '@cert-authority *.example.com ssh-ed25519 AAAAca',
      '@unknown-marker host ssh-ed25519 AAAAx',
      'broken-line-without-key ssh-ed25519',
      'old-ssh1-host 1024 35 1234567',
      '|1|c2FsdA==|aGFzaA== ssh-ed25519 AAAAkey4',
    ].join('\n');
    expect(parseKnownHosts(text)).toEqual([
      { line: 3, hosts: 'web1,10.0.0.11', keyType: 'ssh-ed25519', key: 'AAAAkey1' },
      { line: 4, hosts: '[db.internal]:2222', keyType: 'ecdsa-sha2-nistp256', key: 'AAAAkey2' },
      { line: 5, marker: 'revoked', hosts: '*', keyType: 'ssh-rsa', key: 'AAAAkey3' },
      { line: 6, marker: 'cert-authority', hosts: '*.example.com', keyType: 'ssh-ed25519', key: 'AAAAca' },
      { line: 10, hosts: '|1|c2FsdA==|aGFzaA==', keyType: 'ssh-ed25519', key: 'AAAAkey4' },
    ]);
  });
});

describe('host matching', () => {
  const entry = (hosts: string) => ({ line: 1, hosts, keyType: 'ssh-ed25519', key: 'AAAA' });

  it.each([
    ['web1,10.0.0.11', 'web1', 22, true],
    ['web1,10.0.0.11', '10.0.0.11', 22, true],
    ['web1,10.0.0.11', 'web2', 22, false],
    ['WEB1', 'web1', 22, true],
    ['web1', 'WEB1', 22, true],
    ['web1', 'web1', 2222, false],
    ['[web1]:2222', 'web1', 2222, true],
    ['[web1]:2222', 'web1', 22, false],
    ['[web1]:22', 'web1', 22, false],
    ['*.example.com', 'api.example.com', 22, true],
    ['*.example.com', 'example.com', 22, false],
    ['10.0.0.?', '10.0.0.5', 22, true],
    ['10.0.0.?', '10.0.0.55', 22, false],
    ['*.example.com,!bad.example.com', 'bad.example.com', 22, false],
    ['*.example.com,!bad.example.com', 'good.example.com', 22, true],
    ['[*.example.com]:2222', 'api.example.com', 2222, true],
  ] as const)('%s matches %s:%i → %s', (hosts, host, port, expected) => {
    expect(entryMatchesHost(entry(hosts), host, port)).toBe(expected);
  });

  it('names non-22 ports as OpenSSH does', () => {
    expect(knownHostName('Web1', 22)).toBe('web1');
    expect(knownHostName('web1', 2222)).toBe('[web1]:2222');
  });
});

describe('KnownHostsIndex', () => {
  // Every host field of the matching table above, hashed lines and duplicates among them, on
  // lines of one file: the index must find exactly what testing each line finds, in file order.
  const fields = [
    'web1,10.0.0.11', 'WEB1', '[web1]:2222', '[web1]:22', '*.example.com', '10.0.0.?', '*.example.com,!bad.example.com',
    '[*.example.com]:2222', 'web1,web1', 'api.example.com', '|1|invalid|hash', '',
  ];
  const hashed = (name: string) => {
    const salt = Buffer.from('0123456789abcdefghij');
    return `|1|${salt.toString('base64')}|${createHmac('sha1', salt).update(name).digest('base64')}`;
  };
  const text = [...fields.map((f) => `${f || 'x'} ssh-ed25519 AAAA`), `${hashed('web1')} ssh-ed25519 BBBB`, `${hashed('[db]:2222')} ssh-rsa CCCC`, `@revoked web1 ssh-ed25519 DDDD`].join('\n');
  const entries = parseKnownHosts(text);
  const index = new KnownHostsIndex(entries);

  it.each([
    ['web1', 22], ['WEB1', 22], ['web1', 2222], ['10.0.0.11', 22], ['10.0.0.5', 22], ['api.example.com', 22], ['bad.example.com', 22],
    ['good.example.com', 22], ['api.example.com', 2222], ['db', 2222], ['db', 22], ['nowhere', 22],
  ] as const)('finds for %s:%i what line-by-line matching finds', (host, port) => {
    const expected = entries.filter((e) => entryMatchesHost(e, host, port)).map((e) => e.line);
    expect(index.forHost(host, port).map((e) => e.line)).toEqual(expected);
  });

  it('finds plain names without testing other lines', () => {
    expect(index.forHost('web1', 22).map((e) => e.key)).toEqual(['AAAA', 'AAAA', 'AAAA', 'BBBB', 'DDDD']);
  });
});

describe('checkHostKey', () => {
  it('matches, reports unknown, and names the line of a changed key', () => {
    const entries = parseKnownHosts(
      [`other ${keyB.type} ${keyB.base64}`, `web1,10.0.0.11 ${keyA.type} ${keyA.base64}`].join('\n'),
    );
    expect(checkHostKey(entries, 'web1', 22, keyA.type, keyA.base64)).toEqual({ status: 'match' });
    expect(checkHostKey(entries, 'web2', 22, keyA.type, keyA.base64)).toEqual({ status: 'unknown' });
    expect(checkHostKey(entries, '10.0.0.11', 22, keyB.type, keyB.base64)).toEqual({ status: 'changed', line: 2 });
  });

  it('accepts any of several keys recorded for a host', () => {
    const entries = parseKnownHosts(`web1 ${keyB.type} ${keyB.base64}\nweb1 ${keyA.type} ${keyA.base64}\n`);
    expect(checkHostKey(entries, 'web1', 22, keyA.type, keyA.base64)).toEqual({ status: 'match' });
  });

  it('treats a key of an unrecorded type from a recorded host as changed', () => {
    const entries = parseKnownHosts(`web1 ${rsa.type} ${rsa.base64}\n`);
    expect(checkHostKey(entries, 'web1', 22, keyA.type, keyA.base64)).toEqual({ status: 'changed', line: 1 });
    // …but not when the recorded type is one no connection could negotiate.
    const certOnly = parseKnownHosts(`web1 ssh-ed25519-cert-v01@openssh.com AAAAcert\n`);
    expect(checkHostKey(certOnly, 'web1', 22, keyA.type, keyA.base64)).toEqual({ status: 'unknown' });
  });

  it('refuses a revoked key even when the host also lists it', () => {
    const entries = parseKnownHosts(`web1 ${keyA.type} ${keyA.base64}\n@revoked * ${keyA.type} ${keyA.base64}\n`);
    expect(checkHostKey(entries, 'web1', 22, keyA.type, keyA.base64)).toEqual({ status: 'revoked', line: 2 });
  });

  it('ignores @cert-authority lines', () => {
    const entries = parseKnownHosts(`@cert-authority * ${keyB.type} ${keyB.base64}\n`);
    expect(checkHostKey(entries, 'web1', 22, keyA.type, keyA.base64)).toEqual({ status: 'unknown' });
  });

  it('reads [host]:2222 entries for non-standard ports only', () => {
    const entries = parseKnownHosts(`[web1]:2222 ${keyA.type} ${keyA.base64}\nweb1 ${keyB.type} ${keyB.base64}\n`);
    expect(checkHostKey(entries, 'web1', 2222, keyA.type, keyA.base64)).toEqual({ status: 'match' });
    expect(checkHostKey(entries, 'web1', 22, keyB.type, keyB.base64)).toEqual({ status: 'match' });
    expect(checkHostKey(entries, 'web1', 2222, keyB.type, keyB.base64)).toEqual({ status: 'changed', line: 1 });
  });

  it('lists recorded key types for algorithm ordering', () => {
    const entries = parseKnownHosts(`web1 ${rsa.type} ${rsa.base64}\nweb1 ${keyA.type} ${keyA.base64}\n`);
    expect(knownKeyTypes(entries, 'web1', 22)).toEqual(['ssh-rsa', 'ssh-ed25519']);
  });
});

describe('hashed entries from ssh-keygen -H', () => {
  it('verifies hosts hashed by the real ssh-keygen, including [host]:2222', async () => {
    const file = join(dir, 'known_hosts_to_hash');
    await writeFile(
      file,
      [
        `web1.example.com ${keyA.type} ${keyA.base64}`,
        `[db.example.com]:2222 ${keyB.type} ${keyB.base64}`,
        '',
      ].join('\n'),
    );
    execFileSync('ssh-keygen', ['-H', '-f', file], { stdio: 'ignore' });
    const text = await readFile(file, 'utf8');
    expect(text).not.toContain('example.com');
    expect(text.split('\n').filter((l) => l.startsWith('|1|'))).toHaveLength(2);

    expect(await verifyHostKey(file, 'web1.example.com', 22, keyA.type, keyA.base64)).toEqual({ status: 'match' });
    expect(await verifyHostKey(file, 'WEB1.example.com', 22, keyA.type, keyA.base64)).toEqual({ status: 'match' });
    expect(await verifyHostKey(file, 'db.example.com', 2222, keyB.type, keyB.base64)).toEqual({ status: 'match' });
    expect(await verifyHostKey(file, 'db.example.com', 22, keyB.type, keyB.base64)).toEqual({ status: 'unknown' });
    expect(await verifyHostKey(file, 'web1.example.com', 22, keyB.type, keyB.base64)).toEqual({ status: 'changed', line: 1 });
  });

  it('agrees with ssh-keygen -F on which hashed line names a host', async () => {
    const file = join(dir, 'known_hosts_lookup');
    await writeFile(file, `a.example ${keyA.type} ${keyA.base64}\n[b.example]:2222 ${keyB.type} ${keyB.base64}\n`);
    execFileSync('ssh-keygen', ['-H', '-f', file], { stdio: 'ignore' });
    const found = execFileSync('ssh-keygen', ['-F', '[b.example]:2222', '-f', file], { encoding: 'utf8' });
    const line = Number(/line (\d+)/.exec(found)?.[1]);
    const entries = parseKnownHosts(await readFile(file, 'utf8'));
    expect(entries.filter((e) => entryMatchesHost(e, 'b.example', 2222)).map((e) => e.line)).toEqual([line]);
  });
});

describe('verifyHostKey and appendHostKey', () => {
  it('treats a missing file as empty', async () => {
    expect(await verifyHostKey(join(dir, 'nope', 'known_hosts'), 'web1', 22, keyA.type, keyA.base64)).toEqual({
      status: 'unknown',
    });
  });

  it('creates the folder and a 0600 file, and appends readable lines', async () => {
    const file = join(dir, 'new', '.ssh', 'known_hosts');
    await Promise.all([
      appendHostKey(file, 'web1', 22, keyA.type, keyA.base64),
      appendHostKey(file, 'db', 2222, keyB.type, keyB.base64),
    ]);
    const text = await readFile(file, 'utf8');
    expect(text.split('\n').sort()).toEqual(
      ['', `[db]:2222 ${keyB.type} ${keyB.base64}`, `web1 ${keyA.type} ${keyA.base64}`].sort(),
    );
    expect((await stat(file)).mode & 0o777).toBe(0o600);
    expect((await stat(join(dir, 'new', '.ssh'))).mode & 0o777).toBe(0o700);
    expect(await verifyHostKey(file, 'db', 2222, keyB.type, keyB.base64)).toEqual({ status: 'match' });
    // ssh-keygen agrees the line is well-formed.
    expect(execFileSync('ssh-keygen', ['-F', '[db]:2222', '-f', file], { encoding: 'utf8' })).toContain(keyB.base64);
  });

  it('adds a newline before appending to a file that lacks one, and keeps its mode', async () => {
    const file = join(dir, 'no_newline');
    await writeFile(file, `web1 ${keyA.type} ${keyA.base64}`, { mode: 0o644 });
    await appendHostKey(file, 'web2', 22, keyB.type, keyB.base64);
    expect(await readFile(file, 'utf8')).toBe(`web1 ${keyA.type} ${keyA.base64}\nweb2 ${keyB.type} ${keyB.base64}\n`);
    expect((await stat(file)).mode & 0o777).toBe(0o644);
  });
});

describe('fingerprint and key type', () => {
  it('prints SHA256 fingerprints as ssh-keygen -l does', () => {
    expect(fingerprint(keyA.base64)).toBe(keyA.fingerprint);
    expect(fingerprint(Buffer.from(keyA.base64, 'base64'))).toBe(keyA.fingerprint);
  });

  it('reads the type from the key blob', () => {
    expect(keyTypeOfBlob(Buffer.from(keyA.base64, 'base64'))).toBe('ssh-ed25519');
    expect(keyTypeOfBlob(Buffer.from(rsa.base64, 'base64'))).toBe('ssh-rsa');
    expect(() => keyTypeOfBlob(Buffer.from([0, 0, 0, 9, 1]))).toThrow('host key blob is malformed');
  });
});
