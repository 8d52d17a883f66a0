/**
 * A real OpenSSH server on 127.0.0.1 for the SSH executor's tests: its own host key, an
 * authorized_keys file in a temporary folder, and a stand-in `sudo` on its PATH. A real sshd
 * (rather than ssh2's Server) means SFTP, posix-rename, direct-tcpip and signals behave as on
 * the hosts the tool deploys to. A missing sshd fails the suite: these tests never skip.
 */
import { spawn, execFileSync, type ChildProcess } from 'node:child_process';
import { existsSync, readFileSync } from 'node:fs';
import { chmod, mkdir, mkdtemp, readFile, rm, writeFile } from 'node:fs/promises';
import { connect, createServer } from 'node:net';
import { tmpdir, userInfo } from 'node:os';
import { join } from 'node:path';

const SSHD = '/usr/sbin/sshd';

export interface Sshd {
  dir: string;
  port: number;
  user: string;
  /** Authorized client key, unencrypted. */
  clientKey: string;
  /** Authorized client key, encrypted with `passphrase`. */
  encryptedKey: string;
  passphrase: string;
  /** A key that is not authorized. */
  strangerKey: string;
  /** The server's host key, public part: `ssh-ed25519 AAAA…`. */
  hostPublicKey: string;
  hostKeyType: string;
  hostKeyBase64: string;
  /** What `ssh-keygen -lf` prints for the host key: SHA256:… */
  hostFingerprint: string;
  /** sshd's own log (LogLevel DEBUG1), to prove requests reached it. */
  log(): string;
  /** Appended to by the stand-in sudo: one line of arguments per call. */
  sudoLog: string;
  stop(): Promise<void>;
}

function sh(file: string, args: string[]): string {
  return execFileSync(file, args, { encoding: 'utf8', stdio: ['ignore', 'pipe', 'pipe'] });
}

export async function freePort(): Promise<number> {
  return new Promise((resolve, reject) => {
    const server = createServer();
    server.once('error', reject);
    server.listen(0, '127.0.0.1', () => {
      const { port } = server.address() as { port: number };
      server.close(() => resolve(port));
    });
  });
}

export async function startSshd(): Promise<Sshd> {
  if (!existsSync(SSHD)) {
    throw new Error(`${SSHD} is missing: install openssh-server (apt-get install openssh-server) to run the SSH tests`);
  }
  const dir = await mkdtemp(join(tmpdir(), 'newapi-sshd-'));
  const user = userInfo().username;
  const keygen = (file: string, type: string, passphrase = ''): void => {
    sh('ssh-keygen', ['-q', '-t', type, '-N', passphrase, '-C', 'newapi-cluster-test', '-f', file]);
  };
  keygen(join(dir, 'host_ed25519'), 'ed25519');
  keygen(join(dir, 'client'), 'ed25519');
  keygen(join(dir, 'client_encrypted'), 'ed25519', 'correct horse');
  keygen(join(dir, 'stranger'), 'ed25519');
  const authorized = [
    await readFile(join(dir, 'client.pub'), 'utf8'),
    await readFile(join(dir, 'client_encrypted.pub'), 'utf8'),
  ].join('');
  await writeFile(join(dir, 'authorized_keys'), authorized, { mode: 0o600 });

  // sudo is not installed on the test machine, and running as root would make it a no-op anyway:
  // a stand-in that logs its arguments proves the executor goes through `sudo -n --`.
  const bin = join(dir, 'bin');
  await mkdir(bin);
  const sudoLog = join(dir, 'sudo.log');
  await writeFile(
    join(bin, 'sudo'),
    `#!/bin/sh\nprintf '%s\\n' "$*" >> '${sudoLog}'\n[ "$1" = -n ] && shift\n[ "$1" = -- ] && shift\nexec "$@"\n`,
  );
  await chmod(join(bin, 'sudo'), 0o755);

  // sshd refuses to start without its privilege-separation folder.
  await mkdir('/run/sshd', { recursive: true, mode: 0o755 }).catch(() => undefined);

  const port = await freePort();
  const config = join(dir, 'sshd_config');
  await writeFile(
    config,
    [
      `Port ${port}`,
      'ListenAddress 127.0.0.1',
      `HostKey ${join(dir, 'host_ed25519')}`,
      `AuthorizedKeysFile ${join(dir, 'authorized_keys')}`,
      `PidFile ${join(dir, 'sshd.pid')}`,
      'StrictModes no',
      'UsePAM no',
      'PasswordAuthentication no',
      'KbdInteractiveAuthentication no',
      'PubkeyAuthentication yes',
      'PermitRootLogin prohibit-password',
      'AllowTcpForwarding yes',
      'MaxStartups 100',
      'Subsystem sftp internal-sftp',
      // bash sources ~/.bashrc for commands run by sshd when it is a top-level shell (SHLVL < 2);
      // a heavy .bashrc (pyenv init takes over a second) would then slow every command down.
      `SetEnv PATH=${bin}:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin SHLVL=1`,
      'LogLevel DEBUG1',
      '',
    ].join('\n'),
  );

  // -E, not -e: logging to stderr at DEBUG1 leaks debug lines into the sessions' stderr.
  const logFile = join(dir, 'sshd.log');
  const proc: ChildProcess = spawn(SSHD, ['-D', '-E', logFile, '-f', config], { stdio: ['ignore', 'ignore', 'pipe'] });
  let startupErrors = '';
  proc.stderr?.on('data', (chunk: Buffer) => {
    startupErrors += chunk.toString();
  });
  const log = (): string => {
    try {
      return readFileSync(logFile, 'utf8');
    } catch {
      return '';
    }
  };
  let exited: number | null | undefined;
  proc.once('exit', (code) => {
    exited = code;
  });
  await waitForBanner(port, () => (exited === undefined ? undefined : `sshd exited with code ${exited}: ${startupErrors.trim()} ${log().trim()}`));

  const hostPublicKey = (await readFile(join(dir, 'host_ed25519.pub'), 'utf8')).trim();
  const [hostKeyType, hostKeyBase64] = hostPublicKey.split(' ') as [string, string];
  const hostFingerprint = sh('ssh-keygen', ['-l', '-E', 'sha256', '-f', join(dir, 'host_ed25519.pub')]).split(' ')[1]!;

  return {
    dir,
    port,
    user,
    clientKey: join(dir, 'client'),
    encryptedKey: join(dir, 'client_encrypted'),
    passphrase: 'correct horse',
    strangerKey: join(dir, 'stranger'),
    hostPublicKey,
    hostKeyType,
    hostKeyBase64,
    hostFingerprint,
    sudoLog,
    log,
    stop: async () => {
      if (exited === undefined) {
        const gone = new Promise((resolve) => proc.once('exit', resolve));
        proc.kill('SIGTERM');
        await gone;
      }
      await rm(dir, { recursive: true, force: true });
    },
  };
}

/** Waits until the port answers with an SSH banner; fails with sshd's own log if it died. */
async function waitForBanner(port: number, died: () => string | undefined): Promise<void> {
  const deadline = Date.now() + 10_000;
  for (;;) {
    const why = died();
    if (why !== undefined) throw new Error(why);
    const banner = await new Promise<string | undefined>((resolve) => {
      const socket = connect(port, '127.0.0.1');
      socket.setTimeout(1_000);
      socket.once('data', (d) => {
        socket.destroy();
        resolve(d.toString());
      });
      socket.once('error', () => resolve(undefined));
      socket.once('timeout', () => {
        socket.destroy();
        resolve(undefined);
      });
    });
    if (banner?.startsWith('SSH-') === true) return;
    if (Date.now() > deadline) throw new Error(`sshd did not answer on 127.0.0.1:${port} within 10 s`);
    await new Promise((r) => setTimeout(r, 100));
  }
}
