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
  /**
   * Connections established to the server's port inside the container's network namespace
   * (requests in flight, SSE streams; read from /proc, so it holds with or without docker-proxy);
   * `0` when the container does not run, `-` when it cannot be told.
   */
  inFlight: (container: string, port: number): Argv => [
    'sh',
    '-c',
    [
      'pid=$(docker inspect --format "{{.State.Pid}}" "$1" 2>/dev/null) || { echo -; exit 0; }',
      '[ "$pid" -gt 0 ] 2>/dev/null || { echo 0; exit 0; }',
      'cat "/proc/$pid/net/tcp" "/proc/$pid/net/tcp6" 2>/dev/null | awk -v p="$(printf \':%04X\' "$2")" \'$4 == "01" && substr($2, length($2) - 4) == p { n++ } END { print n + 0 }\'',
    ].join('; '),
    'sh',
    container,
    String(port),
  ],
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
  /**
   * Makes nginx use its configuration: a graceful reload where it runs, a start where it is
   * installed but not running (with systemd when the host has it, else directly: containers, the
   * lab). Prints `reloaded` or `started`. `nginx -s reload` only sends a signal: the command
   * returns once the reload is applied, at most 5 s later, so that what follows meets the new
   * configuration: the master runs workers it did not run before (it opened the new listening
   * sockets and read the new certificate first), and none of the old ones still takes
   * connections (each is gone, or "worker process is shutting down" while it finishes its streams).
   */
  reloadOrStart: (): Argv => [
    'sh',
    '-c',
    [
      'if [ -s /run/nginx.pid ] && kill -0 "$(cat /run/nginx.pid)" 2>/dev/null; then',
      '  m=$(cat /run/nginx.pid); before=$(pgrep -P "$m" 2>/dev/null | tr "\\n" " ")',
      '  nginx -s reload || exit 1',
      '  i=0; while command -v pgrep >/dev/null 2>&1 && [ $i -lt 100 ]; do',
      '    new=0; for p in $(pgrep -P "$m"); do case " $before " in *" $p "*) ;; *) new=1 ;; esac; done',
      '    old=0; for p in $before; do case "$(tr "\\0" " " 2>/dev/null < "/proc/$p/cmdline")" in *"shutting down"*) ;; *"worker process"*) old=1 ;; esac; done',
      '    [ $new = 1 ] && [ $old = 0 ] && break',
      '    i=$((i + 1)); sleep 0.05',
      '  done; echo reloaded',
      'elif [ -d /run/systemd/system ]; then systemctl start nginx && echo started; else nginx && echo started; fi',
    ].join('\n'),
  ],
};

/**
 * Shell fragments that both a single command and a one-round-trip facts script run, so that the
 * two always test the same thing the same way.
 */
const SH = {
  /** Succeeds when iptables is installed and may be used here. */
  iptablesUsable: 'command -v iptables >/dev/null 2>&1 && iptables -w -S OUTPUT >/dev/null 2>&1',
  /** Sets `st` to keepalived's state: missing, running or stopped. */
  keepalivedState:
    'if ! command -v keepalived >/dev/null 2>&1; then st=missing; elif [ -s /run/keepalived.pid ] && kill -0 "$(cat /run/keepalived.pid)" 2>/dev/null; then st=running; else st=stopped; fi',
  /** Sets `dev` to the interface that routes to address `$1`, and `own` to that interface's first address of family `$2` (inet, inet6), with its prefix. */
  routeTo: (address: string, family: string) =>
    [
      `dev=$(ip -o route get "${address}" 2>/dev/null | awk '{ for (i = 1; i < NF; i++) if ($i == "dev") { print $(i + 1); exit } }')`,
      `own=$([ -n "$dev" ] && ip -o addr show dev "$dev" 2>/dev/null | awk -v fam="${family}" '$3 == fam { print $4; exit }')`,
    ].join('; '),
};

/** The address family `ip` names an address by. */
const familyOf = (address: string) => (address.includes(':') ? 'inet6' : 'inet');

/**
 * The drain of a node: the balancer host refuses its own nginx's NEW connections to the node
 * (a reset, at once), so nginx moves each request to the next node before sending a byte, while
 * requests and streams already under way finish. No nginx reload, so no client connection of the
 * balancer is ever closed by it. Each rule carries a comment naming the cluster and the node.
 */
export const firewall = {
  /** Prints `ok` when iptables can be used here (installed, and allowed). */
  probe: (): Argv => ['sh', '-c', `${SH.iptablesUsable} && echo ok; exit 0`],
  rule: (cluster: string, node: string, address: string, port: number): string[] => [
    'OUTPUT',
    '-p',
    'tcp',
    '-d',
    address,
    '--dport',
    String(port),
    '-m',
    'conntrack',
    '--ctstate',
    'NEW',
    '-m',
    'comment',
    '--comment',
    drainComment(cluster, node),
    '-j',
    'REJECT',
    '--reject-with',
    'tcp-reset',
  ],
  /** Adds the rule unless it is there already. */
  drain: (cluster: string, node: string, address: string, port: number): Argv => {
    const tool = address.includes(':') ? 'ip6tables' : 'iptables';
    const rule = firewall.rule(cluster, node, address, port);
    return ['sh', '-c', 't="$1"; shift; "$t" -w -C "$@" 2>/dev/null || "$t" -w -I "$@"', 'sh', tool, ...rule];
  },
  /** Removes every copy of the rule; fine when there is none. */
  undrain: (cluster: string, node: string, address: string, port: number): Argv => {
    const tool = address.includes(':') ? 'ip6tables' : 'iptables';
    const rule = firewall.rule(cluster, node, address, port);
    return ['sh', '-c', 't="$1"; shift; while "$t" -w -D "$@" 2>/dev/null; do :; done; exit 0', 'sh', tool, ...rule];
  },
};

export const drainComment = (cluster: string, node: string) => `newapi-cluster:${cluster}:drain:${node}`;

/** Nodes drained on a balancer host, from its OUTPUT rules (`iptables -S`, in `files.balancerFacts`). */
export function drainedNodes(listing: string, cluster: string): Set<string> {
  const out = new Set<string>();
  const re = new RegExp(`--comment "?newapi-cluster:${cluster.replace(/[.*+?^${}()|[\]\\-]/g, '\\$&')}:drain:([a-z0-9-]+)"?`);
  for (const line of listing.split('\n')) {
    const m = re.exec(line);
    if (m?.[1]) out.add(m[1]);
  }
  return out;
}

export const keepalived = {
  /** Prints `missing`, `running` or `stopped`. */
  state: (): Argv => ['sh', '-c', `${SH.keepalivedState}; echo "$st"`],
  /** Starts it (systemd when the host has it), or makes a running one re-read its configuration. */
  startOrReload: (): Argv => [
    'sh',
    '-c',
    'if [ -s /run/keepalived.pid ] && kill -0 "$(cat /run/keepalived.pid)" 2>/dev/null; then kill -HUP "$(cat /run/keepalived.pid)" && echo reloaded; elif [ -d /run/systemd/system ]; then systemctl restart keepalived && echo started; else keepalived -f /etc/keepalived/keepalived.conf -p /run/keepalived.pid -r /run/keepalived_vrrp.pid && echo started; fi',
  ],
  /** The interface that routes to an address, then the prefix length and the address of that interface's own address. */
  routeTo: (address: string): Argv => ['sh', '-c', `${SH.routeTo('$1', '$2')}; [ -n "$dev" ] || exit 3; echo "$dev \${own#*/} \${own%/*}"`, 'sh', address, familyOf(address)],
  /** Prints the interface holding the address, or nothing. */
  holds: (address: string): Argv => ['sh', '-c', 'ip -o addr show 2>/dev/null | awk -v a="$1" \'{ split($4, p, "/"); if (p[1] == a) { print $2; exit } }\'', 'sh', address],
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
  /**
   * Everything a plan needs from a node, in one round trip: its two files and state.json, the
   * container, and the id of the image it should run — each section one line, `NAME BASE64`
   * (`-` when absent), so any content survives. Parsed by `parseNodeFacts`.
   */
  nodeFacts: (dir: string, container: string, image: string): Argv => [
    'sh',
    '-c',
    [
      'cd "$1" 2>/dev/null || cd /',
      'for f in docker-compose.yml .env .newapi-cluster/state.json; do if [ -f "$1/$f" ]; then printf "%s " "$f"; base64 -w0 < "$1/$f"; echo; else echo "$f -"; fi; done',
      'printf "container "; c=$(docker container inspect "$2" 2>/dev/null) && printf "%s" "$c" | base64 -w0 || printf -- "-"; echo',
      'printf "image "; i=$(docker image inspect --format "{{.Id}}" "$3" 2>/dev/null) && printf "%s" "$i" | base64 -w0 || printf -- "-"; echo',
    ].join('; '),
    'sh',
    dir,
    container,
    image,
  ],
  /**
   * What the balancer step needs from a balancer host, in one round trip: its upstream file,
   * whether iptables can be used and its OUTPUT rules (both families), the sha256 of the
   * certificate and key it holds, and — for a pair — keepalived's state, its configuration and
   * health script, and the route to the vip (interface, prefix, own address). Sections as in
   * `nodeFacts`; a no-op deploy needs nothing more from a balancer.
   */
  balancerFacts: (configPath: string, certificate: string, key: string, vrrp?: { config: string; script: string; vip: string }): Argv => [
    'sh',
    '-c',
    [
      'sum() { if [ -s "$1" ]; then sha256sum < "$1" | cut -c1-64; else echo none; fi; }',
      'if [ -f "$1" ]; then printf "file "; base64 -w0 < "$1"; echo; else echo "file -"; fi',
      `if ${SH.iptablesUsable}; then printf "firewall "; { iptables -w -S OUTPUT; command -v ip6tables >/dev/null 2>&1 && ip6tables -w -S OUTPUT 2>/dev/null; } | base64 -w0; echo; else echo "firewall -"; fi`,
      'printf "tls "; echo "$(sum "$2") $(sum "$3")" | base64 -w0; echo',
      '[ -n "$4" ] || exit 0',
      SH.keepalivedState,
      SH.routeTo('$6', '$7'),
      'printf "vrrp "; echo "$st $(sum "$4") $(sum "$5") ${dev:--} ${own#*/} ${own%/*}" | base64 -w0; echo',
    ].join('; '),
    'sh',
    configPath,
    certificate,
    key,
    vrrp?.config ?? '',
    vrrp?.script ?? '',
    vrrp?.vip ?? '',
    vrrp ? familyOf(vrrp.vip) : '',
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
  /** A folder only its owner can enter (where a private key goes). */
  privateDir: (path: string): Argv => ['mkdir', '-p', '-m', '700', '--', path],
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

/** `files.nodeFacts`' output: section name → content (undefined when absent). */
export function parseNodeFacts(stdout: string): Record<string, string | undefined> {
  const out: Record<string, string | undefined> = {};
  for (const line of stdout.split('\n')) {
    const i = line.indexOf(' ');
    if (i <= 0) continue;
    const name = line.slice(0, i);
    const value = line.slice(i + 1).trim();
    out[name] = value === '-' ? undefined : Buffer.from(value, 'base64').toString('utf8');
  }
  return out;
}
