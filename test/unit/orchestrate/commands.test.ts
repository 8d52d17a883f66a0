/**
 * The argv orchestration runs on hosts (src/remote/commands.ts), compared with literals as in
 * Kamal. They live here because orchestration is what builds them.
 */
import { describe, expect, it } from 'vitest';
import { compose, docker, files, nginx } from '../../../src/remote/commands.js';
import { toCommandLine } from '../../../src/remote/quote.js';

describe('compose', () => {
  it('builds up for the v2 plugin, recreating', () => {
    expect(compose.up('v2', 'prod', '/opt/new-api', { recreate: true })).toEqual([
      'docker', 'compose', '--project-name', 'prod', '--project-directory', '/opt/new-api', '--file', '/opt/new-api/docker-compose.yml',
      'up', '--detach', '--remove-orphans', '--force-recreate',
    ]);
  });

  it('builds up for v1 docker-compose, not recreating', () => {
    expect(compose.up('v1', 'lab', '/srv/new api', { recreate: false })).toEqual([
      'docker-compose', '--project-name', 'lab', '--project-directory', '/srv/new api', '--file', '/srv/new api/docker-compose.yml',
      'up', '--detach', '--remove-orphans',
    ]);
  });

  it('builds down and stop with a timeout', () => {
    expect(compose.down('v2', 'prod', '/opt/new-api').slice(-4)).toEqual(['down', '--remove-orphans', '--timeout', '10']);
    expect(compose.stop('v1', 'prod', '/opt/new-api')).toEqual([
      'docker-compose', '--project-name', 'prod', '--project-directory', '/opt/new-api', '--file', '/opt/new-api/docker-compose.yml', 'stop', '--timeout', '10',
    ]);
    expect(compose.detect()).toEqual(['sh', '-c', 'if docker compose version >/dev/null 2>&1; then echo v2; elif command -v docker-compose >/dev/null 2>&1; then echo v1; fi']);
  });
});

describe('docker', () => {
  it('builds logs with only the options given, the container last', () => {
    expect(docker.logs('prod-new-api', {})).toEqual(['docker', 'logs', 'prod-new-api']);
    expect(docker.logs('prod-new-api', { since: '10m', tail: '100', follow: true, timestamps: true })).toEqual([
      'docker', 'logs', '--since', '10m', '--tail', '100', '--follow', '--timestamps', 'prod-new-api',
    ]);
    expect(docker.logs('prod-new-api', { tail: '5', follow: false })).toEqual(['docker', 'logs', '--tail', '5', 'prod-new-api']);
  });

  it('builds the migrate container run: compose run of one service, on a loopback port only', () => {
    expect(compose.runOnce('v1', 'prod', '/opt/new-api', '/opt/new-api/.newapi-cluster/migrate.yml', { name: 'prod-new-api-migrate', publish: '127.0.0.1:39300:3000', service: 'new-api' })).toEqual([
      'docker-compose', '--project-name', 'prod', '--project-directory', '/opt/new-api', '--file', '/opt/new-api/.newapi-cluster/migrate.yml',
      'run', '--detach', '--no-deps', '--name', 'prod-new-api-migrate', '--publish', '127.0.0.1:39300:3000', 'new-api',
    ]);
    expect(compose.runOnce('v2', 'prod', '/opt/new-api', '/x.yml', { name: 'n', publish: 'p', service: 's' }).slice(0, 2)).toEqual(['docker', 'compose']);
  });

  it('builds image and container queries', () => {
    expect(docker.imageId('calciumion/new-api:v0.9.20')).toEqual(['docker', 'image', 'inspect', '--format', '{{.Id}}', 'calciumion/new-api:v0.9.20']);
    expect(docker.pull('m:5000/calciumion/new-api:v0.9.20')).toEqual(['docker', 'pull', '--quiet', 'm:5000/calciumion/new-api:v0.9.20']);
    expect(docker.publishing(3000)).toEqual(['docker', 'ps', '--all', '--filter', 'publish=3000', '--format', '{{.Names}}']);
    expect(nginx.test()).toEqual(['nginx', '-t', '-q']);
  });
});

describe('files', () => {
  it('appends stdin to a file passed as sh\'s own argument, never interpolated', () => {
    const path = "/opt/new api/.newapi-cluster/audit.log; rm -rf / '";
    expect(files.append(path)).toEqual(['sh', '-c', 'cat >> "$1"', 'sh', path]);
  });

  it('quotes the path once, as one word, for the remote shell', () => {
    expect(toCommandLine(files.append('/opt/new-api/.newapi-cluster/audit.log'))).toBe(`sh -c 'cat >> "$1"' sh /opt/new-api/.newapi-cluster/audit.log`);
    expect(toCommandLine(files.append('/opt/new api/audit.log'), { sudo: true })).toBe(`sudo -n -- sh -c 'cat >> "$1"' sh '/opt/new api/audit.log'`);
  });

  it('ends options before paths', () => {
    expect(files.remove('-rf', '/x')).toEqual(['rm', '-f', '--', '-rf', '/x']);
    expect(toCommandLine(files.layout('/opt/new api', '/opt/new api/.s', '/opt/new api/.s/releases'))).toBe(
      `sh -c 'mkdir -p -- "$1/data" "$1/logs" && mkdir -p -m 700 -- "$2" "$3"' sh '/opt/new api' '/opt/new api/.s' '/opt/new api/.s/releases'`,
    );
    expect(files.removeTree('/a', '/b c')).toEqual(['rm', '-rf', '--', '/a', '/b c']);
    expect(files.listening(39300)).toEqual(['sh', '-c', 'ss -Hltn "sport = :$1" 2>/dev/null | head -n 1', 'sh', '39300']);
  });
});

describe('files.purgeIfOurs, run by a real sh', () => {
  const run = async (argv: readonly string[]) => {
    const { spawnSync } = await import('node:child_process');
    return spawnSync(argv[0]!, argv.slice(1), { encoding: 'utf8' });
  };
  const folder = async (state: object | undefined) => {
    const { mkdtemp, mkdir, writeFile } = await import('node:fs/promises');
    const { tmpdir } = await import('node:os');
    const { join } = await import('node:path');
    const dir = await mkdtemp(join(tmpdir(), 'purge-'));
    await mkdir(join(dir, '.newapi-cluster'));
    if (state) await writeFile(join(dir, '.newapi-cluster/state.json'), `${JSON.stringify(state, null, 2)}\n`);
    return dir;
  };
  const exists = async (p: string) => (await import('node:fs/promises')).access(p).then(() => true, () => false);

  it('removes a folder whose state.json names this cluster', async () => {
    const dir = await folder({ cluster: 'lab', node: 'slave-3', image: 'x:v1', files: {} });
    const r = await run(files.purgeIfOurs(dir, 'lab'));
    expect([r.status, r.stderr]).toEqual([0, '']);
    expect(await exists(dir)).toBe(false);
  });

  it('keeps a folder of another cluster, or with no state.json, and says why (exit 3)', async () => {
    for (const state of [{ cluster: 'lab-2', image: 'x', files: {} }, undefined]) {
      const dir = await folder(state);
      const r = await run(files.purgeIfOurs(dir, 'lab'));
      expect(r.status).toBe(3);
      expect(r.stderr).toBe(`no state.json of cluster lab in ${dir}: not removed\n`);
      expect(await exists(dir)).toBe(true);
    }
  });
});
