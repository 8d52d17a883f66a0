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

  it('builds the migrate container run', () => {
    expect(
      docker.runDetached({
        name: 'prod-new-api-migrate',
        image: 'calciumion/new-api:v0.9.21',
        envFile: '/opt/new-api/.env',
        publish: '127.0.0.1:39300:3000',
        volumes: ['/opt/new-api/data:/data'],
        args: ['--log-dir', '/app/logs'],
      }),
    ).toEqual([
      'docker', 'run', '--detach', '--name', 'prod-new-api-migrate', '--env-file', '/opt/new-api/.env', '--publish', '127.0.0.1:39300:3000',
      '--volume', '/opt/new-api/data:/data', 'calciumion/new-api:v0.9.21', '--log-dir', '/app/logs',
    ]);
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
    expect(toCommandLine(files.layout('/opt/new api', '/opt/new api/.s', '/opt/new api/.s/previous'))).toBe(
      `sh -c 'mkdir -p -- "$1/data" "$1/logs" && mkdir -p -m 700 -- "$2" "$3"' sh '/opt/new api' '/opt/new api/.s' '/opt/new api/.s/previous'`,
    );
    expect(files.listening(39300)).toEqual(['sh', '-c', 'ss -Hltn "sport = :$1" 2>/dev/null | head -n 1', 'sh', '39300']);
  });
});
