import { execFileSync, spawn } from 'node:child_process';
import { mkdtemp, readFile, rm, stat, writeFile } from 'node:fs/promises';
import { connect, createServer, type Server } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { Readable } from 'node:stream';
import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest';
import { CliError } from '../../../src/errors.js';
import { SshPool, parseJumpHost, preferredHostKeyAlgorithms, tunnelServer } from '../../../src/remote/ssh.js';
import type { SshTarget } from '../../../src/remote/types.js';
import { freePort, startSshd, type Sshd } from './sshd-fixture.js';

let sshd: Sshd;
let work: string;
let knownHosts: string;
const pools: SshPool[] = [];

beforeAll(async () => {
  sshd = await startSshd();
  work = await mkdtemp(join(tmpdir(), 'newapi-ssh-test-'));
  knownHosts = join(work, 'known_hosts');
  await writeFile(
    knownHosts,
    `[127.0.0.1]:${sshd.port} ${sshd.hostPublicKey}\n[localhost]:${sshd.port} ${sshd.hostPublicKey}\n`,
  );
}, 30_000);

afterAll(async () => {
  await sshd?.stop();
  if (work !== undefined) await rm(work, { recursive: true, force: true });
});

afterEach(async () => {
  await Promise.all(pools.splice(0).map((p) => p.closeAll()));
});

function newPool(opts: ConstructorParameters<typeof SshPool>[0] = {}): SshPool {
  const pool = new SshPool({ connectTimeoutMs: 5_000, ...opts });
  pools.push(pool);
  return pool;
}

function target(overrides: Partial<SshTarget> = {}): SshTarget {
  return {
    label: 'node-1',
    host: '127.0.0.1',
    port: sshd.port,
    user: sshd.user,
    identityFile: sshd.clientKey,
    knownHostsFile: knownHosts,
    sudo: false,
    ...overrides,
  };
}

async function rejection(promise: Promise<unknown>): Promise<CliError> {
  const err = await promise.then(
    () => undefined,
    (e: unknown) => e,
  );
  expect(err).toBeInstanceOf(CliError);
  return err as CliError;
}

describe('SshExecutor.exec', () => {
  it('round-trips hostile arguments byte for byte', async () => {
    const hostile = [
      '$(rm -rf /)',
      '`touch /tmp/pwned`',
      "it's",
      '"double"',
      "'; echo injected; '",
      'line1\nline2',
      '  spaced  out  ',
      '',
      '*',
      '~',
      '#not a comment',
      'a;b&&c||d|e',
      '\\back\\slash',
      '$HOME ${PATH}',
      '!event',
      '>redirect <in',
      'ünïcødé ✓',
      '-n',
    ];
    const ex = newPool().getExecutor(target());
    const result = await ex.exec(['printf', '%s\\n', ...hostile]);
    expect(result).toEqual({ code: 0, stdout: hostile.map((a) => `${a}\n`).join(''), stderr: expect.any(String) });
  });

  it('throws on a non-zero exit with the command and the last stderr line', async () => {
    const ex = newPool().getExecutor(target());
    const err = await rejection(ex.exec(['sh', '-c', 'echo first >&2; echo oops >&2; exit 3']));
    expect(err.message).toBe("node-1: `sh -c 'echo first >&2; echo oops >&2; exit 3'` exited with code 3: oops");
    expect(err.node).toBe('node-1');
    expect(err.hint).toBe(`run the command by hand as ${sshd.user}@127.0.0.1 to see its full output`);
  });

  it('returns a non-zero exit under allowFailure', async () => {
    const ex = newPool().getExecutor(target());
    const result = await ex.exec(['sh', '-c', 'echo out; exit 7'], { allowFailure: true });
    expect(result.code).toBe(7);
    expect(result.stdout).toBe('out\n');
  });

  it('writes stdin and streams output to callbacks', async () => {
    const ex = newPool().getExecutor(target());
    const chunks: Buffer[] = [];
    const errChunks: Buffer[] = [];
    const result = await ex.exec(['sh', '-c', 'cat; echo warn >&2'], {
      stdin: 'the secret stays out of messages\n',
      onStdout: (c) => chunks.push(c),
      onStderr: (c) => errChunks.push(c),
    });
    expect(result.stdout).toBe('the secret stays out of messages\n');
    expect(Buffer.concat(chunks).toString()).toBe('the secret stays out of messages\n');
    expect(Buffer.concat(errChunks).toString()).toContain('warn\n');
  });

  it('closes stdin at once when there is none, so readers do not hang', async () => {
    const ex = newPool().getExecutor(target());
    expect((await ex.exec(['cat'], { timeoutMs: 5_000 })).stdout).toBe('');
  });

  it('times out promptly, asks sshd to kill the command, and names host and command', async () => {
    const ex = newPool().getExecutor(target());
    const marker = `${Math.floor(Math.random() * 1e6) + 1000}.5`;
    const started = Date.now();
    const err = await rejection(ex.exec(['sleep', marker], { timeoutMs: 500 }));
    expect(Date.now() - started).toBeLessThan(3_000);
    expect(err.message).toBe(`node-1: \`sleep ${marker}\` timed out after 0.5 s`);
    expect(err.hint).toContain('it may still be running on 127.0.0.1');
    // The KILL request reached sshd. It kills the command for non-root users; for root, OpenSSH
    // refuses signals ("requires privilege separation"), which is why the hint warns.
    await expect.poll(() => sshd.log(), { timeout: 3_000 }).toMatch(/req signal/);
    if (sshd.user !== 'root') await expect.poll(() => processCount(`sleep ${marker}`), { timeout: 3_000 }).toBe(0);
    else for (const pid of processIds(`sleep ${marker}`)) process.kill(pid, 'SIGKILL'); // the orphan we started
  });

  it('runs without a timeout when timeoutMs is 0', async () => {
    const ex = newPool({ execTimeoutMs: 1 }).getExecutor(target());
    expect((await ex.exec(['sh', '-c', 'sleep 0.2; echo done'], { timeoutMs: 0 })).stdout).toBe('done\n');
  });

  it('refuses to buffer more output than the cap, unless the caller streams it', async () => {
    const ex = newPool({ maxOutputBytes: 1000 }).getExecutor(target());
    const err = await rejection(ex.exec(['head', '-c', '5000', '/dev/zero']));
    expect(err.message).toBe('node-1: `head -c 5000 /dev/zero` printed more than 1000 bytes');
    let streamed = 0;
    const result = await ex.exec(['head', '-c', '5000', '/dev/zero'], { onStdout: (c) => (streamed += c.length) });
    expect(streamed).toBe(5000);
    expect(result.stdout.length).toBeLessThanOrEqual(1000);
  });

  it('stops on an AbortSignal', async () => {
    const ex = newPool().getExecutor(target());
    const controller = new AbortController();
    const marker = `${Math.floor(Math.random() * 1e6) + 1000}.25`;
    setTimeout(() => controller.abort(new Error('operator pressed Ctrl-C')), 200);
    await expect(ex.exec(['sleep', marker], { signal: controller.signal })).rejects.toThrow('operator pressed Ctrl-C');
    await expect.poll(() => sshd.log(), { timeout: 3_000 }).toMatch(/req signal/);
    for (const pid of processIds(`sleep ${marker}`)) process.kill(pid, 'SIGKILL'); // root sessions ignore the KILL request
  });

  it('goes through `sudo -n --` for sudo targets', async () => {
    const ex = newPool().getExecutor(target({ sudo: true }));
    const result = await ex.exec(['printf', '%s', 'as root']);
    expect(result.stdout).toBe('as root');
    expect(await readFile(sshd.sudoLog, 'utf8')).toContain('-n -- printf %s as root\n');
  });
});

describe('SshPool', () => {
  it('reuses one connection for 20 concurrent execs', async () => {
    const pool = newPool();
    const ex = pool.getExecutor(target());
    const results = await Promise.all(Array.from({ length: 20 }, (_, i) => ex.exec(['echo', String(i)])));
    expect(results.map((r) => r.stdout)).toEqual(Array.from({ length: 20 }, (_, i) => `${i}\n`));
    expect(pool.stats()).toEqual({ opened: { [`${sshd.user}@127.0.0.1:${sshd.port}`]: 1 }, open: 1 });
    expect(pool.getExecutor(target())).toBe(ex);
  });

  it('gives two labels on one host their own executor over one connection', async () => {
    const pool = newPool();
    const master = pool.getExecutor(target({ label: 'master' }));
    const balancer = pool.getExecutor(target({ label: 'balancer' }));
    expect(balancer).not.toBe(master);
    await master.exec(['true']);
    const err = await rejection(balancer.exec(['false']));
    expect(err.message).toBe('balancer: `false` exited with code 1');
    expect(pool.stats().opened).toEqual({ [`${sshd.user}@127.0.0.1:${sshd.port}`]: 1 });
  });

  it('hops through a jump host, verifying both host keys, and pools the bastion', async () => {
    const pool = newPool();
    const viaJump = target({ label: 'slave-1', host: 'localhost', jumpHost: `${sshd.user}@127.0.0.1:${sshd.port}` });
    const ex = pool.getExecutor(viaJump);
    expect((await ex.exec(['echo', 'hop'])).stdout).toBe('hop\n');
    await ex.upload(join(sshd.dir, 'via-jump.txt'), 'through the bastion', 0o644);
    expect(await readFile(join(sshd.dir, 'via-jump.txt'), 'utf8')).toBe('through the bastion');
    // The bastion is a host of the run too: using it directly reuses the pooled connection.
    await pool.getExecutor(target({ label: 'balancer' })).exec(['true']);
    expect(pool.stats().opened).toEqual({
      [`${sshd.user}@127.0.0.1:${sshd.port}`]: 1,
      [`${sshd.user}@localhost:${sshd.port}`]: 1,
    });
  });

  it("refuses a jump host whose key is unknown, naming the jump host", async () => {
    const onlyLocalhost = join(work, 'known_hosts_localhost_only');
    await writeFile(onlyLocalhost, `[localhost]:${sshd.port} ${sshd.hostPublicKey}\n`);
    const ex = newPool().getExecutor(
      target({ host: 'localhost', jumpHost: `${sshd.user}@127.0.0.1:${sshd.port}`, knownHostsFile: onlyLocalhost }),
    );
    const err = await rejection(ex.exec(['true']));
    expect(err.message).toBe(
      `jump host ${sshd.user}@127.0.0.1:${sshd.port}: the host key of [127.0.0.1]:${sshd.port} is unknown ` +
        `(${sshd.hostKeyType} ${sshd.hostFingerprint}); it is not in ${onlyLocalhost}`,
    );
  });

  it('does not hop through itself when a host is its own jump host', async () => {
    const pool = newPool();
    const ex = pool.getExecutor(target({ jumpHost: `${sshd.user}@127.0.0.1:${sshd.port}` }));
    expect((await ex.exec(['echo', 'direct'])).stdout).toBe('direct\n');
    expect(pool.stats().opened).toEqual({ [`${sshd.user}@127.0.0.1:${sshd.port}`]: 1 });
  });

  it('reconnects after close', async () => {
    const pool = newPool();
    const ex = pool.getExecutor(target());
    await ex.exec(['true']);
    await ex.close();
    expect(pool.stats().open).toBe(0);
    await ex.exec(['true']);
    expect(pool.stats().opened[`${sshd.user}@127.0.0.1:${sshd.port}`]).toBe(2);
  });
});

describe('host keys', () => {
  it('refuses an unknown host key with the fingerprint and a hint', async () => {
    const empty = join(work, 'known_hosts_empty');
    await writeFile(empty, '');
    const err = await rejection(newPool().getExecutor(target({ knownHostsFile: empty })).exec(['true']));
    expect(err.message).toBe(
      `node-1: the host key of [127.0.0.1]:${sshd.port} is unknown (${sshd.hostKeyType} ${sshd.hostFingerprint}); it is not in ${empty}`,
    );
    expect(err.hint).toBe(
      'compare the fingerprint with `ssh-keygen -lf /etc/ssh/ssh_host_*_key.pub` on the host, then record it with ' +
        `\`ssh-keyscan -p ${sshd.port} 127.0.0.1 >> ${empty}\` or run again with --accept-new-host-keys`,
    );
  });

  it('refuses a changed host key, naming the line to remove', async () => {
    const other = (await readFile(join(sshd.dir, 'stranger.pub'), 'utf8')).split(' ').slice(0, 2).join(' ');
    const changed = join(work, 'known_hosts_changed');
    await writeFile(changed, `# a comment\n[127.0.0.1]:${sshd.port} ${other}\n`);
    const err = await rejection(
      newPool({ acceptNewHostKeys: true }).getExecutor(target({ knownHostsFile: changed })).exec(['true']),
    );
    expect(err.message).toBe(
      `node-1: the host key of [127.0.0.1]:${sshd.port} changed (now ${sshd.hostKeyType} ${sshd.hostFingerprint}); ` +
        `it does not match line 2 of ${changed}`,
    );
    expect(err.hint).toBe(
      `if the server was reinstalled, remove the old line 2 of ${changed} ` +
        `(ssh-keygen -R '[127.0.0.1]:${sshd.port}' -f ${changed}); otherwise someone may be intercepting the connection`,
    );
    // acceptNewHostKeys never replaces a changed key.
    expect(await readFile(changed, 'utf8')).toBe(`# a comment\n[127.0.0.1]:${sshd.port} ${other}\n`);
  });

  it('refuses a key marked @revoked', async () => {
    const revoked = join(work, 'known_hosts_revoked');
    await writeFile(revoked, `[127.0.0.1]:${sshd.port} ${sshd.hostPublicKey}\n@revoked * ${sshd.hostPublicKey}\n`);
    const err = await rejection(newPool().getExecutor(target({ knownHostsFile: revoked })).exec(['true']));
    expect(err.message).toBe(
      `node-1: the host key of [127.0.0.1]:${sshd.port} (${sshd.hostKeyType} ${sshd.hostFingerprint}) is revoked on line 2 of ${revoked}`,
    );
  });

  it('records a new host key with acceptNewHostKeys, creating the file 0600', async () => {
    const file = join(work, 'fresh', '.ssh', 'known_hosts');
    const pool = newPool({ acceptNewHostKeys: true });
    await pool.getExecutor(target({ knownHostsFile: file })).exec(['true']);
    expect(await readFile(file, 'utf8')).toBe(`[127.0.0.1]:${sshd.port} ${sshd.hostKeyType} ${sshd.hostKeyBase64}\n`);
    expect((await stat(file)).mode & 0o777).toBe(0o600);
    // Recorded, it now verifies without the option.
    await newPool().getExecutor(target({ knownHostsFile: file })).exec(['true']);
  });

  it('verifies against hashed entries written by ssh-keyscan -H', async () => {
    const hashed = join(work, 'known_hosts_hashed');
    const scanned = execFileSync('ssh-keyscan', ['-H', '-t', 'ed25519', '-p', String(sshd.port), '127.0.0.1'], {
      encoding: 'utf8',
      stdio: ['ignore', 'pipe', 'ignore'],
    });
    expect(scanned).toMatch(/^\|1\|/);
    await writeFile(hashed, scanned);
    expect((await newPool().getExecutor(target({ knownHostsFile: hashed })).exec(['echo', 'ok'])).stdout).toBe('ok\n');
  });

  it('orders recorded key types first', () => {
    expect(preferredHostKeyAlgorithms(['ssh-rsa']).slice(0, 4)).toEqual(['rsa-sha2-512', 'rsa-sha2-256', 'ssh-rsa', 'ssh-ed25519']);
    expect(preferredHostKeyAlgorithms(['ecdsa-sha2-nistp256'])[0]).toBe('ecdsa-sha2-nistp256');
  });
});

describe('authentication and connection errors', () => {
  it('says which host refused the login and what to check', async () => {
    const err = await rejection(newPool().getExecutor(target({ identityFile: sshd.strangerKey })).exec(['true']));
    expect(err.message).toBe(`node-1: SSH login to ${sshd.user}@127.0.0.1:${sshd.port} was refused`);
    expect(err.hint).toContain('check ssh.user / ssh.identityFile / ssh-agent');
  });

  it('says when nothing listens', async () => {
    const closedPort = await freePort();
    const err = await rejection(newPool().getExecutor(target({ port: closedPort })).exec(['true']));
    expect(err.message).toBe(`node-1: SSH connection to ${sshd.user}@127.0.0.1:${closedPort} refused`);
    expect(err.hint).toBe(`is the host up and is sshd listening on port ${closedPort}?`);
  });

  it('asks for the passphrase of an encrypted key once per run', async () => {
    const asked: string[] = [];
    const pool = newPool({
      askPassphrase: async (file) => {
        asked.push(file);
        return sshd.passphrase;
      },
    });
    await Promise.all([
      pool.getExecutor(target({ identityFile: sshd.encryptedKey })).exec(['true']),
      pool.getExecutor(target({ host: 'localhost', identityFile: sshd.encryptedKey })).exec(['true']),
    ]);
    expect(asked).toEqual([sshd.encryptedKey]);
  });

  it('fails with a hint when an encrypted key cannot be unlocked here', async () => {
    const err = await rejection(newPool().getExecutor(target({ identityFile: sshd.encryptedKey })).exec(['true']));
    expect(err.message).toBe(`the SSH key ${sshd.encryptedKey} is encrypted, and no passphrase can be asked for here`);
    expect(err.hint).toContain(`ssh-add ${sshd.encryptedKey}`);
  });

  it('rejects a wrong passphrase', async () => {
    const pool = newPool({ askPassphrase: async () => 'wrong' });
    const err = await rejection(pool.getExecutor(target({ identityFile: sshd.encryptedKey })).exec(['true']));
    expect(err.message).toBe(`cannot decrypt the SSH key ${sshd.encryptedKey}: wrong passphrase?`);
  });

  it('logs in with ssh-agent when no identity file is set', async () => {
    const socket = join(work, 'agent.sock');
    const agent = spawn('ssh-agent', ['-D', '-a', socket], { stdio: 'ignore' });
    try {
      await expect.poll(() => stat(socket).then(() => true, () => false), { timeout: 5_000 }).toBe(true);
      execFileSync('ssh-add', [sshd.clientKey], { env: { ...process.env, SSH_AUTH_SOCK: socket }, stdio: 'ignore' });
      const ex = newPool({ agentSocket: socket }).getExecutor(target({ identityFile: undefined }));
      expect((await ex.exec(['echo', 'agent'])).stdout).toBe('agent\n');
    } finally {
      agent.kill();
    }
  });

  it('fails clearly with neither a key file nor an agent', async () => {
    const err = await rejection(newPool({ agentSocket: '' }).getExecutor(target({ identityFile: undefined })).exec(['true']));
    expect(err.message).toBe(
      `node-1: no SSH key to log in to 127.0.0.1 with: ssh.identityFile is not set and no ssh-agent is running (SSH_AUTH_SOCK is empty)`,
    );
  });

  it('parses jump host specs', () => {
    expect(parseJumpHost('ops@bastion.example.com', 'root')).toEqual({ user: 'ops', host: 'bastion.example.com', port: 22 });
    expect(parseJumpHost('bastion:2222', 'root')).toEqual({ user: 'root', host: 'bastion', port: 2222 });
    expect(parseJumpHost('ops@[fd00::1]:2200', 'root')).toEqual({ user: 'ops', host: 'fd00::1', port: 2200 });
    expect(() => parseJumpHost('ops@bastion:99999', 'root')).toThrow('ssh.jumpHost: expected user@host[:port], got "ops@bastion:99999"');
  });
});

describe('files', () => {
  it('uploads atomically with the requested mode, creating parent folders', async () => {
    const ex = newPool().getExecutor(target());
    const dir = join(sshd.dir, 'opt', 'new-api');
    const path = join(dir, '.env');
    await ex.upload(path, 'SESSION_SECRET=s3cr3t\n', 0o600);
    expect((await ex.exec(['stat', '-c', '%a', path])).stdout).toBe('600\n');
    expect(await readFile(path, 'utf8')).toBe('SESSION_SECRET=s3cr3t\n');
    // Replacing an existing file works (plain SFTP rename would refuse) and leaves no temporary file.
    await ex.upload(path, Buffer.from('SESSION_SECRET=rotated\n'), 0o640);
    expect((await ex.exec(['stat', '-c', '%a', path])).stdout).toBe('640\n');
    expect(await readFile(path, 'utf8')).toBe('SESSION_SECRET=rotated\n');
    expect((await ex.exec(['ls', '-A', dir])).stdout).toBe('.env\n');
  });

  it('uploads an empty file and a large one', async () => {
    const ex = newPool().getExecutor(target());
    const big = Buffer.alloc(3 * 1024 * 1024 + 17, 'x');
    await ex.upload(join(sshd.dir, 'empty'), '', 0o644);
    await ex.upload(join(sshd.dir, 'big'), big, 0o644);
    expect((await readFile(join(sshd.dir, 'empty'))).length).toBe(0);
    expect((await readFile(join(sshd.dir, 'big'))).equals(big)).toBe(true);
  });

  it('reads a file, and undefined for a missing one', async () => {
    const ex = newPool().getExecutor(target());
    await writeFile(join(sshd.dir, 'state.json'), '{"version":"v1"}');
    expect((await ex.readFile(join(sshd.dir, 'state.json')))?.toString()).toBe('{"version":"v1"}');
    expect(await ex.readFile(join(sshd.dir, 'no', 'such', 'file'))).toBeUndefined();
  });

  it('uploads and reads through sudo, staging in /tmp', async () => {
    const ex = newPool().getExecutor(target({ sudo: true }));
    const path = join(sshd.dir, 'sudo', 'etc', 'new-api.conf');
    await ex.upload(path, 'upstream new_api {}\n', 0o600);
    expect(await readFile(path, 'utf8')).toBe('upstream new_api {}\n');
    expect((await stat(path)).mode & 0o777).toBe(0o600);
    const log = await readFile(sshd.sudoLog, 'utf8');
    expect(log).toMatch(/-n -- install -m 0600 \/tmp\/\.newapi-cluster-[0-9a-f]+ \S+\/sudo\/etc\/\.new-api\.conf\.tmp-[0-9a-f]+\n/);
    expect(log).toMatch(/-n -- mv -f \S+\/\.new-api\.conf\.tmp-[0-9a-f]+ \S+\/sudo\/etc\/new-api\.conf\n/);
    expect((await ex.readFile(path))?.toString()).toBe('upstream new_api {}\n');
    expect(await ex.readFile(join(sshd.dir, 'sudo', 'missing'))).toBeUndefined();
    expect((await ex.exec(['ls', '-A', join(sshd.dir, 'sudo', 'etc')])).stdout).toBe('new-api.conf\n');
  });

  it('streams a local input into a remote command', async () => {
    const ex = newPool().getExecutor(target());
    const parts = Array.from({ length: 100 }, (_, i) => `chunk ${i}\n`);
    const result = await ex.execWithInput(['wc', '-l'], Readable.from(parts));
    expect(result.stdout.trim()).toBe('100');
  });
});

describe('tunnels', () => {
  let echo: Server;
  let echoPort: number;

  beforeAll(async () => {
    echo = createServer((socket) => socket.pipe(socket));
    await new Promise<void>((resolve) => echo.listen(0, '127.0.0.1', resolve));
    echoPort = (echo.address() as { port: number }).port;
  });
  afterAll(async () => {
    await new Promise((resolve) => echo.close(resolve));
  });

  it('opens a direct-tcpip tunnel through the host', async () => {
    const channel = await newPool().getExecutor(target()).openTunnel('127.0.0.1', echoPort);
    const reply = new Promise<string>((resolve) => channel.once('data', (d: Buffer) => resolve(d.toString())));
    channel.write('ping');
    expect(await reply).toBe('ping');
    channel.end();
  });

  it('serves a local port that forwards every connection', async () => {
    const pool = newPool();
    const server = await tunnelServer(pool.getExecutor(target()), '127.0.0.1', echoPort);
    try {
      const replies = await Promise.all(
        ['one', 'two', 'three'].map(
          (word) =>
            new Promise<string>((resolve, reject) => {
              const socket = connect(server.port, '127.0.0.1', () => socket.end(word));
              let got = '';
              socket.on('data', (d: Buffer) => (got += d.toString()));
              socket.on('end', () => resolve(got));
              socket.on('error', reject);
            }),
        ),
      );
      expect(replies).toEqual(['one', 'two', 'three']);
      expect(pool.stats().opened).toEqual({ [`${sshd.user}@127.0.0.1:${sshd.port}`]: 1 });
    } finally {
      await server.close();
    }
  });

  it('names the far end when a tunnel cannot open', async () => {
    const closedPort = await freePort();
    const err = await rejection(newPool().getExecutor(target()).openTunnel('127.0.0.1', closedPort));
    expect(err.message).toMatch(new RegExp(`^node-1: cannot open a tunnel from 127\\.0\\.0\\.1 to 127\\.0\\.0\\.1:${closedPort}: `));
  });
});

function processIds(pattern: string): number[] {
  try {
    return execFileSync('pgrep', ['-f', pattern], { encoding: 'utf8' }).trim().split('\n').map(Number);
  } catch {
    return []; // pgrep exits 1 when nothing matches
  }
}

function processCount(pattern: string): number {
  return processIds(pattern).length;
}
