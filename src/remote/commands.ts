/**
 * Remote commands as data (argv arrays), in the manner of Kamal's commands/*. Nothing here
 * runs anything: orchestration decides where a command runs, and quote.ts quotes it once.
 * Tests compare these with literals.
 */
import type { Argv } from './types.js';

/** `docker compose` (v2 plugin) or `docker-compose` (v1, e.g. Debian 12's package). */
export type ComposeFlavor = 'v2' | 'v1';

export const docker = {
  serverVersion: (): Argv => ['docker', 'version', '--format', '{{.Server.Version}}'],
  imageId: (image: string): Argv => ['docker', 'image', 'inspect', '--format', '{{.Id}}', image],
  pull: (image: string): Argv => ['docker', 'pull', '--quiet', image],
  tag: (source: string, target: string): Argv => ['docker', 'tag', source, target],
  load: (): Argv => ['docker', 'load', '--quiet'],
  inspectContainer: (name: string): Argv => ['docker', 'container', 'inspect', name],
  remove: (name: string): Argv => ['docker', 'rm', '--force', name],
  start: (name: string): Argv => ['docker', 'start', name],
  logs: (name: string, o: { since?: string; tail?: string; follow?: boolean; timestamps?: boolean }): Argv => [
    'docker',
    'logs',
    ...(o.since ? ['--since', o.since] : []),
    ...(o.tail ? ['--tail', o.tail] : []),
    ...(o.follow ? ['--follow'] : []),
    ...(o.timestamps ? ['--timestamps'] : []),
    name,
  ],
  /** Tags of one repository the host has: `repo:tag` per line. */
  listImages: (repository: string): Argv => ['docker', 'image', 'ls', '--format', '{{.Repository}}:{{.Tag}}', repository],
  removeImages: (...refs: string[]): Argv => ['docker', 'image', 'rm', ...refs],
  /** Names of containers publishing a host port. */
  publishing: (port: number): Argv => ['docker', 'ps', '--all', '--filter', `publish=${port}`, '--format', '{{.Names}}'],
};

export const compose = {
  /**
   * Prints v2 or v1 in one round trip. v1 is found on the PATH rather than run: its Python
   * start-up costs about half a second, on every host, on every command.
   */
  detect: (): Argv => ['sh', '-c', 'if docker compose version >/dev/null 2>&1; then echo v2; elif command -v docker-compose >/dev/null 2>&1; then echo v1; fi'],
  base: (flavor: ComposeFlavor, project: string, dir: string): string[] => [
    ...(flavor === 'v2' ? ['docker', 'compose'] : ['docker-compose']),
    '--project-name',
    project,
    '--project-directory',
    dir,
    '--file',
    `${dir}/docker-compose.yml`,
  ],
  /** --force-recreate: only called when something changed, and then the container must restart. */
  up: (flavor: ComposeFlavor, project: string, dir: string, o: { recreate: boolean }): Argv => [
    ...compose.base(flavor, project, dir),
    'up',
    '--detach',
    '--remove-orphans',
    ...(o.recreate ? ['--force-recreate'] : []),
  ],
  /** Creates (or recreates) the container without starting it: `up --no-start` works in v1 and v2. */
  create: (flavor: ComposeFlavor, project: string, dir: string): Argv => [...compose.base(flavor, project, dir), 'up', '--no-start', '--force-recreate', '--remove-orphans'],
  stop: (flavor: ComposeFlavor, project: string, dir: string): Argv => [...compose.base(flavor, project, dir), 'stop', '--timeout', '10'],
  down: (flavor: ComposeFlavor, project: string, dir: string): Argv => [...compose.base(flavor, project, dir), 'down', '--remove-orphans', '--timeout', '10'],
  /**
   * The migrate step's one-off container: the service of `file` (the master's compose file,
   * rendered for the new image) run by compose itself, so its environment comes from the same
   * env_file parsed by the same parser as the real container's, byte for byte. `run` publishes
   * only what --publish names (a loopback port), and never the service's own ports.
   */
  runOnce: (flavor: ComposeFlavor, project: string, dir: string, file: string, o: { name: string; publish: string; service: string }): Argv => [
    ...(flavor === 'v2' ? ['docker', 'compose'] : ['docker-compose']),
    '--project-name',
    project,
    '--project-directory',
    dir,
    '--file',
    file,
    'run',
    '--detach',
    '--no-deps',
    '--name',
    o.name,
    '--publish',
    o.publish,
    o.service,
  ],
};

export const nginx = {
  version: (): Argv => ['nginx', '-v'],
  test: (): Argv => ['nginx', '-t', '-q'],
  reload: (): Argv => ['nginx', '-s', 'reload'],
};

export const files = {
  /** A node's folders in one round trip: data/ and logs/ for the server, the tool's own folders private. */
  layout: (dir: string, stateDir: string, releasesDir: string): Argv => [
    'sh',
    '-c',
    'mkdir -p -- "$1/data" "$1/logs" && mkdir -p -m 700 -- "$2" "$3"',
    'sh',
    dir,
    stateDir,
    releasesDir,
  ],
  /** Copies the node's deployed files into a new release folder (private), in one round trip. */
  snapshotRelease: (dir: string, releaseDir: string): Argv => [
    'sh',
    '-c',
    'mkdir -p -m 700 -- "$2" && cp -p -- "$1/docker-compose.yml" "$1/.env" "$2/"',
    'sh',
    dir,
    releaseDir,
  ],
  /** Every release's id and release.json: `=== ID` then the file. */
  listReleases: (releasesDir: string): Argv => [
    'sh',
    '-c',
    'for f in "$1"/*/release.json; do [ -f "$f" ] || continue; d=${f%/release.json}; echo "=== ${d##*/}"; cat -- "$f"; echo; done',
    'sh',
    releasesDir,
  ],
  /**
   * Removes a node's folder only if it is ours: its state.json names this cluster. An inventory
   * error (a cluster.dir that is a system folder) can then never become `rm -rf` of that folder.
   */
  purgeIfOurs: (dir: string, cluster: string): Argv => [
    'sh',
    '-c',
    'if [ -f "$1/.newapi-cluster/state.json" ] && grep -qF -- "$3" "$1/.newapi-cluster/state.json"; then rm -rf -- "$1"; else echo "no state.json of cluster $2 in $1: not removed" >&2; exit 3; fi',
    'sh',
    dir,
    cluster,
    // state.json is written with JSON.stringify(state, null, 2): this line names the cluster.
    `"cluster": ${JSON.stringify(cluster)}`,
  ],
  remove: (...paths: string[]): Argv => ['rm', '-f', '--', ...paths],
  removeTree: (...paths: string[]): Argv => ['rm', '-rf', '--', ...paths],
  /** Appends stdin to a file (the audit log); sh's own argument, never interpolated. */
  append: (path: string): Argv => ['sh', '-c', 'cat >> "$1"', 'sh', path],
  /** Free space of the nearest existing folder at or above `path`, in KiB. */
  freeKiB: (path: string): Argv => [
    'sh',
    '-c',
    'p="$1"; while [ ! -d "$p" ]; do p=$(dirname "$p"); done; df -Pk "$p" | awk \'NR==2 {print $4}\'',
    'sh',
    path,
  ],
  listening: (port: number): Argv => ['sh', '-c', 'ss -Hltn "sport = :$1" 2>/dev/null | head -n 1', 'sh', String(port)],
  epochSeconds: (): Argv => ['date', '+%s.%N'],
};
