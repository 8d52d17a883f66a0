import { Readable } from 'node:stream';
import { describe, expect, it } from 'vitest';
import { CliError } from '../../../src/errors.js';
import { RecordingExecutor } from '../../../src/remote/recording.js';

describe('RecordingExecutor', () => {
  it('records commands and uploads as data', async () => {
    const ex = new RecordingExecutor({ target: { label: 'slave-1' } });
    await ex.exec(['docker', 'compose', 'up', '-d']);
    await ex.upload('/opt/new-api/.env', 'A=1\n', 0o600);
    await ex.exec(['redis-cli'], { stdin: 'AUTH x\n' });
    expect(ex.calls).toEqual([
      { kind: 'exec', argv: ['docker', 'compose', 'up', '-d'] },
      { kind: 'upload', path: '/opt/new-api/.env', mode: 0o600, content: 'A=1\n' },
      { kind: 'exec', argv: ['redis-cli'], stdin: 'AUTH x\n' },
    ]);
    expect(ex.commands).toEqual([['docker', 'compose', 'up', '-d'], ['redis-cli']]);
  });

  it('answers from the responder, defaulting to success with no output', async () => {
    const ex = new RecordingExecutor({
      responder: (argv) => (argv[0] === 'docker' ? { stdout: 'Docker version 27.0.1\n' } : undefined),
    });
    expect(await ex.exec(['docker', '--version'])).toEqual({ code: 0, stdout: 'Docker version 27.0.1\n', stderr: '' });
    expect(await ex.exec(['true'])).toEqual({ code: 0, stdout: '', stderr: '' });
  });

  it('fails a non-zero exit with the same message as the SSH executor', async () => {
    const ex = new RecordingExecutor({
      target: { label: 'master', sudo: true },
      responder: () => ({ code: 1, stderr: 'warming up\nnginx: configuration file test failed\n' }),
    });
    const err = await ex.exec(['nginx', '-t']).catch((e: unknown) => e);
    expect(err).toBeInstanceOf(CliError);
    expect((err as CliError).message).toBe('master: `sudo -n -- nginx -t` exited with code 1: nginx: configuration file test failed');
    expect((err as CliError).node).toBe('master');
    expect(await ex.exec(['nginx', '-t'], { allowFailure: true })).toMatchObject({ code: 1 });
  });

  it('serves reads from seeded files and from uploads', async () => {
    const ex = new RecordingExecutor({ files: { '/opt/new-api/.newapi-cluster/state.json': '{"version":"v1"}' } });
    expect((await ex.readFile('/opt/new-api/.newapi-cluster/state.json'))?.toString()).toBe('{"version":"v1"}');
    expect(await ex.readFile('/nope')).toBeUndefined();
    await ex.upload('/opt/new-api/docker-compose.yml', Buffer.from('services: {}\n'), 0o644);
    expect((await ex.readFile('/opt/new-api/docker-compose.yml'))?.toString()).toBe('services: {}\n');
  });

  it('drains streamed input and records the command', async () => {
    const ex = new RecordingExecutor();
    await ex.execWithInput(['docker', 'load'], Readable.from(['image bytes']));
    expect(ex.calls).toEqual([{ kind: 'exec', argv: ['docker', 'load'], streamedInput: true }]);
  });

  it('refuses tunnels', async () => {
    await expect(new RecordingExecutor().openTunnel('db', 3306)).rejects.toThrow('test: cannot open a tunnel to db:3306 without a connection');
  });

  it('applies the quoting checks', async () => {
    await expect(new RecordingExecutor().exec(['echo', 'a\0b'])).rejects.toThrow('NUL byte');
  });
});
