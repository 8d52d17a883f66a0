#!/usr/bin/env bash
# newapi-cluster "100 hosts, simulated": N light hosts for scale benchmarks (bench/scale.ts).
#
#   sim.sh up N          tear down leftovers, then build N sim hosts sim-1..sim-N (idempotent)
#   sim.sh down          stop every sim host, delete their namespaces, the bridge and the rules
#   sim.sh status        what is up, and the memory the sim takes (exit 0 when everything is up)
#   sim.sh reset [N]     every sim host (or sim-1..N) back to fresh: no containers, no images,
#                        no /opt/new-api, empty calls.log (sshd logs are kept: benches count deltas)
#   sim.sh exec sim-K [--] CMD   run CMD inside a sim host (its network, mount and UTS namespaces)
#   sim.sh mem           the sim's processes: count, total RSS and PSS (kB), per kind; its CPU time
#
# Each sim host is a network namespace sim-K on the bridge br-sim (10.78.0.1/16 in the root
# namespace), address 10.78.(1 + (K-1)/250).(1 + (K-1)%250): sim-1 is 10.78.1.1, sim-100 is
# 10.78.1.100. It has its own mount namespace (its own /run, /opt, /root, /tmp), its own sshd
# (the lab's client key, its own host key, AllowUsers root, LogLevel INFO to its own log) and on
# its PATH, ahead of /usr/bin, the `docker` and `docker-compose` shims of test/lab/sim/bin: no
# engine, no node process; a "running container" is a busybox httpd. The sshd is the only
# process a sim host keeps (it holds the mount namespace); the httpds come and go with the
# containers. MariaDB and Redis are the normal lab's, on 10.77.0.1 (lab.sh up first): the root
# namespace routes between br-sim and br-lab. Every sim process is in the cgroup newapi-sim (v1
# cpu + cpuacct): the N hosts together weigh like one ordinary process (SIM_CPU_SHARES, 1024)
# against the CLI under test, and cpuacct.usage says how much CPU the hosts' side of a run took.
#
# The sshds are made cheaper per connection, because all N of them share this machine's CPUs
# with the CLI being measured, which real hosts do not: no re-exec of sshd per connection (-r),
# and the ECDH P-256 key exchange, which OpenSSH hands to OpenSSL, instead of its own reference
# curve25519 code. Host and client keys stay ed25519, as on most servers. Measured here, one
# handshake costs the sim 12.6 ms of CPU as Debian ships sshd, 7.2 ms so configured (the CLI's
# side, about 4 ms, is the same either way).
#
# Everything lives under /var/lib/newapi-sim; lab.sh never touches it, and this never touches
# the lab's hosts (only reads /var/lib/newapi-lab/lab.env and its client key).
set -euo pipefail

STATE=/var/lib/newapi-sim
LAB_STATE=/var/lib/newapi-lab
SIM_DIR="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)/sim"
export PATH="/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin${PATH:+:$PATH}"

BR=br-sim
GW=10.78.0.1
NET_PREFIX=16
LAB_BR=br-lab
LAB_GW=10.77.0.1
MARK=NEWAPI_SIM            # environment marker given to every sim sshd (for people: sshd overwrites it)
RULE_TAG=newapi-sim        # comment on the iptables rules this script adds
MAX_HOSTS=1000
PARALLEL=16                # hosts set up at once
CG=newapi-sim              # cgroup (v1: cpu, cpuacct) of every sim process: its weight, its CPU time
CG_CONTROLLERS=(cpu cpuacct)
# CPU weight of the whole sim against any other process (cgroup v1 cpu.shares; a process outside
# it weighs 1024): the sim's hosts share this machine's CPUs with the CLI being measured, which
# real hosts do not. Default 1024: one process's worth for all N hosts together. See README.
SIM_CPU_SHARES="${SIM_CPU_SHARES:-1024}"

say() { printf '[sim %s] %s\n' "$(date +%T)" "$*" >&2; }
die() { say "ERROR: $*"; exit 1; }

host_ip() { local k="$1"; echo "10.78.$((1 + (k - 1) / 250)).$((1 + (k - 1) % 250))"; }
hdir() { echo "$STATE/hosts/sim-$1"; }
# sim-K | K | 10.78.x.y -> K
norm_host() {
  local a="${1#sim-}" k
  if [[ "$a" =~ ^[0-9]+$ ]] && ((a >= 1 && a <= MAX_HOSTS)); then echo "$a"; return 0; fi
  if [[ "$1" =~ ^10\.78\.([0-9]+)\.([0-9]+)$ ]]; then
    k=$(((BASH_REMATCH[1] - 1) * 250 + BASH_REMATCH[2]))
    ((k >= 1 && k <= MAX_HOSTS)) && [[ "$(host_ip "$k")" == "$1" ]] && { echo "$k"; return 0; }
  fi
  return 1
}
# the hosts that exist (have a folder), in order
known_hosts_list() {
  local d
  for d in "$STATE"/hosts/sim-*; do [[ -d "$d" ]] && echo "${d##*/sim-}"; done | sort -n
}
hosts_n() { [[ -s "$STATE/n" ]] && cat "$STATE/n" || echo 0; }

pidfile_pid() { local v=""; [[ -s "$1" ]] || return 1; read -r v <"$1" || [[ -n "$v" ]]; echo "${v//[!0-9]/}"; }
pid_alive() {
  [[ -n "${1:-}" && -d "/proc/$1" ]] || return 1
  local k v
  { while read -r k v _; do [[ "$k" == State: ]] && { [[ "$v" != Z ]]; return; }; done <"/proc/$1/status"; } 2>/dev/null
  return 0
}
# the sshd of sim-K (it holds the host's mount namespace); fails when it is not running. (sshd
# rewrites its process title over its environment, so an environment marker cannot find it:
# it is the pid in its pid file, running /usr/sbin/sshd, inside the host's network namespace.)
holder_pid() {
  local p
  p="$(pidfile_pid "$(hdir "$1")/run/sshd.pid" 2>/dev/null)" || return 1
  [[ -n "$p" ]] && pid_alive "$p" && [[ "$(readlink "/proc/$p/exe" 2>/dev/null)" == /usr/sbin/sshd ]] &&
    [[ "/proc/$p/ns/net" -ef "/run/netns/sim-$1" ]] && echo "$p"
}
# every process of the sim, as "PID NS" lines: whatever lives in a sim host's network namespace
# (its sshd, sshd's per-connection children, the shells they run, the httpds) or in the mount
# namespace of a sim sshd (in case its netns is already gone)
sim_pids() {
  local nss f p
  nss="$(
    for f in /run/netns/sim-*; do [[ -e "$f" ]] && stat -L -c 'net:[%i]' "$f" 2>/dev/null; done
    for f in "$STATE"/hosts/sim-*/run/sshd.pid; do
      p="$(pidfile_pid "$f" 2>/dev/null)" || continue
      [[ -n "$p" && "$(readlink "/proc/$p/exe" 2>/dev/null)" == /usr/sbin/sshd ]] && readlink "/proc/$p/ns/mnt" 2>/dev/null
    done | sort -u
  )" || true
  if [[ -z "$nss" ]]; then
    # (no namespace left to look for: whatever is still in the sim's cgroup)
    [[ -r "$(cg_dir cpu)/cgroup.procs" ]] && awk '{ print $1, "cgroup" }' "$(cg_dir cpu)/cgroup.procs"
    return 0
  fi
  find /proc/[0-9]*/ns/net /proc/[0-9]*/ns/mnt -maxdepth 0 -printf '%p %l\n' 2>/dev/null |
    awk -v nss="$nss" -v me="$$" 'BEGIN { n = split(nss, a, "\n"); for (i = 1; i <= n; i++) s[a[i]] = 1 }
      { split($1, p, "/"); if (($2 in s) && p[3] != me && !(p[3] in seen)) { seen[p[3]] = 1; print p[3], $2 } }' || true
}
kill_wait() { # kill_wait SIGNAL SECONDS PID...
  local sig="$1" secs="$2" p i left; shift 2
  [[ $# -gt 0 ]] || return 0
  kill "-$sig" "$@" 2>/dev/null || true
  for ((i = 0; i < secs * 10; i++)); do
    left=0
    for p in "$@"; do pid_alive "$p" && left=1 && break; done
    [[ $left == 0 ]] && return 0
    sleep 0.1
  done
  return 1
}

# ---------------------------------------------------------------- cgroup -------------
cg_dir() { echo "/sys/fs/cgroup/$1/$CG"; }
cg_setup() {
  local c
  for c in "${CG_CONTROLLERS[@]}"; do
    [[ -d "/sys/fs/cgroup/$c" ]] || die "cgroup v1 controller $c is not mounted at /sys/fs/cgroup/$c"
    install -d "$(cg_dir "$c")"
  done
  echo "$SIM_CPU_SHARES" >"$(cg_dir cpu)/cpu.shares"
  echo 0 >"$(cg_dir cpuacct)/cpuacct.usage"
}
cg_join() { # cg_join PID: the process (and what it starts later) into the sim's cgroups
  local c
  for c in "${CG_CONTROLLERS[@]}"; do echo "$1" >"$(cg_dir "$c")/cgroup.procs"; done
}
cg_remove() {
  local c
  for c in "${CG_CONTROLLERS[@]}"; do [[ -d "$(cg_dir "$c")" ]] && rmdir "$(cg_dir "$c")" 2>/dev/null || true; done
}

# ---------------------------------------------------------------- teardown -----------
ipt_rules() { # the FORWARD rules this script adds
  echo "-i $BR -o $BR"
  echo "-i $BR -o $LAB_BR"
  echo "-i $LAB_BR -o $BR"
}
teardown() {
  local i pids r
  for i in 1 2 3 4 5 6 7 8 9 10; do
    pids="$(sim_pids | cut -d' ' -f1 || true)"
    [[ -z "$pids" ]] && break
    # shellcheck disable=SC2086
    kill -9 $pids 2>/dev/null || true
    sleep 0.2
  done
  [[ -z "$(sim_pids)" ]] || say "some sim processes survived SIGKILL"
  # one ip(8) process for all of it (forks are slow here): the namespaces, then any root end of
  # a veth left over (a half-made host; the others go with their namespaces)
  ip netns list 2>/dev/null | awk '$1 ~ /^sim-[0-9]+$/ { print "netns del " $1 }' | ip -force -batch - 2>/dev/null || true
  ip -o link show 2>/dev/null | awk -F': ' '{ split($2, a, "@"); if (a[1] ~ /^vs-[0-9]+$/) print "link del " a[1] }' |
    ip -force -batch - 2>/dev/null || true
  ip link del "$BR" 2>/dev/null || true
  cg_remove
  while read -r r; do
    # shellcheck disable=SC2086
    while iptables -w -D FORWARD $r -m comment --comment "$RULE_TAG" -j ACCEPT 2>/dev/null; do :; done
  done < <(ipt_rules)
  rm -f "$STATE/n" "$STATE/sim.env"
}

# ---------------------------------------------------------------- up -----------------
write_sshd_config() {
  local k="$1" d ip
  d="$(hdir "$k")"; ip="$(host_ip "$k")"
  cat >"$d/sshd_config" <<EOF
# sshd of sim host sim-$k ($ip), generated by sim.sh
Port 22
ListenAddress $ip
HostKey $d/ssh/ssh_host_ed25519_key
# a key exchange OpenSSH leaves to OpenSSL (see the note on CPU above)
KexAlgorithms ecdh-sha2-nistp256
PidFile /run/sshd.pid
PermitRootLogin prohibit-password
AllowUsers root
PubkeyAuthentication yes
PasswordAuthentication no
KbdInteractiveAuthentication no
UsePAM no
StrictModes yes
AuthorizedKeysFile .ssh/authorized_keys
PrintMotd no
PrintLastLog no
LogLevel INFO
# the shims first: docker and docker-compose are test/lab/sim/bin's
SetEnv PATH=$SIM_DIR/bin:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin
Subsystem sftp /usr/lib/openssh/sftp-server
EOF
}

start_host() {
  local k="$1" d ip i hp
  d="$(hdir "$k")"; ip="$(host_ip "$k")"
  # a fresh host every time (its host key is kept)
  rm -rf "$d/run" "$d/opt" "$d/root" "$d/tmp"
  : >"$d/sshd.log"
  install -d -m 0755 "$d/run" "$d/run/sshd" "$d/opt" "$d/opt/sim"
  install -d -m 1777 "$d/tmp"
  install -d -m 0700 "$d/root" "$d/root/.ssh"
  install -m 0600 "$LAB_STATE/ssh/id_ed25519.pub" "$d/root/.ssh/authorized_keys"
  cp "$STATE/registry.list" "$d/opt/sim/registry.list"
  : >"$d/opt/sim/calls.log"
  write_sshd_config "$k"

  # (the namespace and its veth were made for all hosts at once by make_links)
  ip -n "sim-$k" -batch - <<EOF
link set lo up
addr add $ip/$NET_PREFIX dev eth0
link set eth0 up
route add default via $GW
EOF

  # sshd holds the host's mount + UTS namespaces (no separate holder: one process per host)
  env "$MARK=host:sim-$k" setsid nsenter --net="/run/netns/sim-$k" -- \
    unshare --mount --uts --propagation private -- /bin/sh -ec "
      mount --bind '$d/run' /run
      mount --bind '$d/opt' /opt
      mount --bind '$d/root' /root
      mount --bind '$d/tmp' /tmp
      hostname 'sim-$k'
      exec /usr/sbin/sshd -r -D -f '$d/sshd_config' -E '$d/sshd.log'" </dev/null >"$d/start.log" 2>&1 &
  for ((i = 0; i < 200; i++)); do
    hp="$(holder_pid "$k" 2>/dev/null || true)"
    [[ -n "$hp" ]] && { cg_join "$hp"; return 0; }
    sleep 0.05
  done
  cat "$d/start.log" >&2; tail -5 "$d/sshd.log" >&2
  die "sim-$k: sshd did not start"
}

make_links() { # make_links N: every namespace and veth in one ip(8) process
  local k
  for ((k = 1; k <= $1; k++)); do
    echo "netns add sim-$k"
    echo "link add vs-$k type veth peer name eth0 netns sim-$k"
    echo "link set vs-$k master $BR up"
  done | ip -batch -
}

ensure_keys() { # ensure_keys N: a host key per host, made once and kept
  local k d pids=()
  for ((k = 1; k <= $1; k++)); do
    d="$(hdir "$k")"
    install -d -m 0700 "$d/ssh"
    if [[ ! -s "$d/ssh/ssh_host_ed25519_key" || ! -s "$d/ssh/ssh_host_ed25519_key.pub" ]]; then
      rm -f "$d/ssh/ssh_host_ed25519_key"*
      ssh-keygen -q -t ed25519 -N '' -C "sim-$k" -f "$d/ssh/ssh_host_ed25519_key" &
      pids+=("$!")
    fi
  done
  [[ ${#pids[@]} == 0 ]] || wait "${pids[@]}"
}

write_outputs() { # known_hosts and sim.env
  local n="$1" k kh="$STATE/known_hosts" hosts=""
  for ((k = 1; k <= n; k++)); do
    echo "$(host_ip "$k") $(cut -d' ' -f1,2 "$(hdir "$k")/ssh/ssh_host_ed25519_key.pub")"
    hosts+="${hosts:+,}$(host_ip "$k")"
  done >"$kh.new"
  chmod 0644 "$kh.new"; mv "$kh.new" "$kh"
  cat >"$STATE/sim.env.new" <<EOF
# newapi-cluster sim, written by sim.sh up ($(date -u +%FT%TZ))
SIM_STATE=$STATE
SIM_SH=$SIM_DIR/../sim.sh
SIM_N=$n
SIM_GATEWAY=$GW
SIM_HOSTS=$hosts
SIM_KNOWN_HOSTS=$kh
SIM_SSH_KEY=$LAB_STATE/ssh/id_ed25519
EOF
  mv "$STATE/sim.env.new" "$STATE/sim.env"
}

cmd_up() {
  local n="${1:-}" k t0=$SECONDS pids=() p fail=0
  [[ $EUID == 0 ]] || die "run as root"
  [[ "$n" =~ ^[0-9]+$ ]] && ((n >= 1 && n <= MAX_HOSTS)) || die "usage: sim.sh up N (1..$MAX_HOSTS)"
  [[ -s "$LAB_STATE/ssh/id_ed25519" && -s "$LAB_STATE/lab.env" ]] || die "the lab's client key or lab.env is missing: run bash test/lab/lab.sh up first"
  ip link show "$LAB_BR" >/dev/null 2>&1 || die "the lab is not up (no $LAB_BR): run bash test/lab/lab.sh up first"
  [[ -x /bin/busybox ]] && /bin/busybox --list | grep -x httpd >/dev/null || die "/bin/busybox with httpd is needed (busybox-static)"
  say "tearing down leftovers"
  teardown
  install -d -m 0755 "$STATE" "$STATE/hosts"
  # what the shims' registry serves: the lab registry's repository and tags
  (
    # shellcheck disable=SC1091
    . "$LAB_STATE/lab.env"
    IFS=, read -r -a tags <<<"${LAB_IMAGE_TAGS:?}"
    for t in "${tags[@]}"; do echo "${LAB_IMAGE_REPO:?}:$t"; done
  ) >"$STATE/registry.list"
  ensure_keys "$n"

  cg_setup
  ip link add "$BR" type bridge
  ip addr add "$GW/$NET_PREFIX" dev "$BR"
  ip link set "$BR" up
  sysctl -qw net.ipv4.ip_forward=1
  local r
  while read -r r; do
    # shellcheck disable=SC2086
    iptables -w -C FORWARD $r -m comment --comment "$RULE_TAG" -j ACCEPT 2>/dev/null ||
      iptables -w -I FORWARD $r -m comment --comment "$RULE_TAG" -j ACCEPT
  done < <(ipt_rules)

  say "starting $n sim hosts ($PARALLEL at a time)"
  make_links "$n"
  for ((k = 1; k <= n; k++)); do
    start_host "$k" >"$STATE/hosts/sim-$k.up.log" 2>&1 &
    pids+=("$!:$k")
    if ((${#pids[@]} >= PARALLEL)); then
      for p in "${pids[@]}"; do wait "${p%%:*}" || { say "sim-${p#*:} failed: $(tail -3 "$STATE/hosts/sim-${p#*:}.up.log")"; fail=1; }; done
      pids=()
    fi
  done
  for p in "${pids[@]}"; do wait "${p%%:*}" || { say "sim-${p#*:} failed: $(tail -3 "$STATE/hosts/sim-${p#*:}.up.log")"; fail=1; }; done
  [[ $fail == 0 ]] || die "sim up failed"
  rm -f "$STATE"/hosts/sim-*.up.log
  echo "$n" >"$STATE/n"
  write_outputs "$n"
  say "$n sshds started in $((SECONDS - t0)) s; checking each host (SSH, shims, MariaDB and Redis reachable)"
  check_hosts "$n"
  # benches count Accepted publickey lines: start from empty logs
  for ((k = 1; k <= n; k++)); do : >"$(hdir "$k")/sshd.log"; : >"$(hdir "$k")/opt/sim/calls.log"; done
  say "$n sim hosts up in $((SECONDS - t0)) s; $(mem_line)"
  say "environment: $STATE/sim.env"
}

# every host: one SSH round trip, in which its shims answer (compose is v1) and the lab's MariaDB
# and Redis answer on 10.77.0.1 (routed by the root namespace between br-sim and br-lab)
check_hosts() {
  local n="$1" k bad
  bad="$(for ((k = 1; k <= n; k++)); do echo "$k $(host_ip "$k")"; done | xargs -P 16 -L 1 bash -c '
    k="$1"; ip="$2"
    r="$(ssh -i '"$LAB_STATE"'/ssh/id_ed25519 -o IdentitiesOnly=yes -o UserKnownHostsFile='"$STATE"'/known_hosts \
      -o GlobalKnownHostsFile=/dev/null -o StrictHostKeyChecking=yes -o BatchMode=yes -o ConnectTimeout=20 -o LogLevel=ERROR \
      "root@$ip" "hostname; command -v docker; docker version --format {{.Server.Version}}; if docker compose version >/dev/null 2>&1; then echo v2; elif command -v docker-compose >/dev/null 2>&1; then echo v1; fi;
        for p in 3306 6379; do timeout 5 bash -c \"exec 3<>/dev/tcp/'"$LAB_GW"'/\$p\" && echo \$p; done" 2>&1 | tr "\n" " ")"
    want="sim-$k '"$SIM_DIR"'/bin/docker 20.10.24+dfsg1 v1 3306 6379 "
    [ "$r" = "$want" ] || echo "sim-$k ($ip): answered \"$r\", want \"$want\""
  ' _ 2>&1 || true)"
  [[ -z "$bad" ]] || { echo "$bad" | head -10 >&2; die "self-check failed on $(echo "$bad" | wc -l) host(s)"; }
  # and the shims log what they ran
  grep -q 'docker version --format' "$(hdir 1)/opt/sim/calls.log" || die "sim-1: the docker shim logged nothing"
}

# ---------------------------------------------------------------- reset ----------------
reset_host() {
  local k="$1" d p
  d="$(hdir "$k")"
  # the "containers": busybox httpds in this host's network namespace
  if [[ -e "/run/netns/sim-$k" ]]; then
    for p in $(pgrep -x busybox 2>/dev/null || true); do
      [[ "/proc/$p/ns/net" -ef "/run/netns/sim-$k" ]] && kill -9 "$p" 2>/dev/null || true
    done
  fi
  rm -rf "$d/opt/new-api" "$d/opt/sim/containers" "$d/opt/sim/images" "$d/opt/sim/www" "$d/opt/sim/logs" \
    "$d/opt/sim/unmodelled.log"
  find "$d/opt" -mindepth 1 -maxdepth 1 ! -name sim -exec rm -rf {} + 2>/dev/null || true
  find "$d/tmp" -mindepth 1 -maxdepth 1 -exec rm -rf {} + 2>/dev/null || true
  : >"$d/opt/sim/calls.log"
}
cmd_reset() {
  [[ $EUID == 0 ]] || die "run as root"
  local n="${1:-$(hosts_n)}" k
  [[ "$n" =~ ^[0-9]+$ ]] || die "usage: sim.sh reset [N]"
  for ((k = 1; k <= n; k++)); do [[ -d "$(hdir "$k")" ]] && reset_host "$k"; done
  return 0
}

# ---------------------------------------------------------------- status, mem ----------
mem_report() { # "KIND COUNT RSS_KB PSS_KB" per kind of process, then "total ..."
  local pid ns comm rss pss
  while read -r pid ns; do
    comm="$(cat "/proc/$pid/comm" 2>/dev/null)" || continue
    rss="$(awk '/^VmRSS:/ { print $2 }' "/proc/$pid/status" 2>/dev/null)"
    pss="$(awk '/^Pss:/ { print $2; exit }' "/proc/$pid/smaps_rollup" 2>/dev/null)"
    echo "$comm ${rss:-0} ${pss:-0}"
  done < <(sim_pids) | awk '{ c[$1]++; r[$1] += $2; p[$1] += $3; tc++; tr += $2; tp += $3 }
    END { for (k in c) printf "%s %d %d %d\n", k, c[k], r[k], p[k]; printf "total %d %d %d\n", tc, tr, tp }'
}
mem_line() {
  local t
  t="$(mem_report | awk '$1 == "total"')"
  # shellcheck disable=SC2086
  set -- $t
  printf '%s processes, RSS %.1f MB, PSS %.1f MB' "${2:-0}" "$(echo "${3:-0} / 1024" | bc -l)" "$(echo "${4:-0} / 1024" | bc -l)"
}
cmd_mem() {
  [[ $EUID == 0 ]] || die "run as root"
  printf '%-12s %6s %10s %10s\n' KIND PROCS RSS_KB PSS_KB
  mem_report | sort -k1,1 | awk '$1 != "total" { printf "%-12s %6d %10d %10d\n", $1, $2, $3, $4 }'
  mem_report | awk '$1 == "total" { printf "%-12s %6d %10d %10d\n", $1, $2, $3, $4 }'
}
cmd_status() {
  [[ $EUID == 0 ]] || die "run as root"
  local n k ok=1 up=0 down=() line r
  n="$(hosts_n)"
  if ip link show "$BR" >/dev/null 2>&1; then line=up; else line=DOWN; ok=0; fi
  printf '%-10s %-14s %s\n' bridge "$GW/$NET_PREFIX" "$line ($BR)"
  line=""
  while read -r r; do
    # shellcheck disable=SC2086
    iptables -w -C FORWARD $r -m comment --comment "$RULE_TAG" -j ACCEPT 2>/dev/null || { line+=" missing: $r;"; ok=0; }
  done < <(ipt_rules)
  printf '%-10s %-14s %s\n' forward FORWARD "${line:-accept br-sim<->br-sim, br-sim<->br-lab}"
  if [[ "$(sysctl -n net.ipv4.ip_forward)" != 1 ]]; then printf '%-10s %-14s %s\n' ip_forward '' OFF; ok=0; fi
  for ((k = 1; k <= n; k++)); do
    if holder_pid "$k" >/dev/null && [[ -e "/run/netns/sim-$k" ]]; then up=$((up + 1)); else down+=("sim-$k"); ok=0; fi
  done
  [[ "$n" -gt 0 ]] || ok=0
  printf '%-10s %-14s %s\n' hosts "$(host_ip 1)-" "$up of $n up (sshd)${down[*]:+; DOWN: ${down[*]:0:20}}"
  if [[ "$n" -gt 0 ]]; then
    line="$(find "$STATE"/hosts/sim-*/opt/sim/containers -type f ! -name '.*' 2>/dev/null | wc -l || true) containers, $(cat "$STATE"/hosts/sim-*/opt/sim/unmodelled.log 2>/dev/null | wc -l || true) unmodelled calls"
    printf '%-10s %-14s %s\n' state '' "$line"
    printf '%-10s %-14s %s\n' memory '' "$(mem_line)"
  fi
  [[ -s "$STATE/sim.env" ]] && echo "env: $STATE/sim.env"
  [[ $ok == 1 ]]
}

cmd_exec() {
  [[ $# -ge 1 ]] || die "usage: sim.sh exec sim-K [--] CMD..."
  local k hp
  k="$(norm_host "$1")" || die "unknown sim host '$1'"
  shift
  [[ "${1:-}" == -- ]] && shift
  hp="$(holder_pid "$k")" || die "sim-$k is not up (run sim.sh up N)"
  [[ $# -gt 0 ]] || set -- /bin/bash
  exec env HOME=/root PATH="$SIM_DIR/bin:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin" \
    nsenter -t "$hp" -n -m -u --wd=/ -- "$@"
}

usage() { awk 'NR > 1 && /^#/ { sub(/^# ?/, ""); print; next } NR > 1 { exit }' "${BASH_SOURCE[0]}"; }

# up, down and reset never run at once
if [[ "${1:-}" == up || "${1:-}" == down || "${1:-}" == reset ]] && [[ -z "${NEWAPI_SIM_LOCKED:-}" && $EUID == 0 ]]; then
  install -d -m 0755 "$STATE"
  NEWAPI_SIM_LOCKED=1 exec flock -o "$STATE/.lock" "$BASH" "${BASH_SOURCE[0]}" "$@"
fi
unset NEWAPI_SIM_LOCKED

case "${1:-}" in
  up) shift; cmd_up "$@" ;;
  down) [[ $EUID == 0 ]] || die "run as root"; say "tearing the sim down"; teardown; say "down" ;;
  status) cmd_status ;;
  reset) shift; cmd_reset "$@" ;;
  exec) shift; cmd_exec "$@" ;;
  mem) cmd_mem ;;
  -h | --help | help) usage ;;
  *) usage >&2; exit 2 ;;
esac
