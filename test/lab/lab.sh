#!/usr/bin/env bash
# newapi-cluster end-to-end lab: a balancer, a jump host and six servers on one machine.
#
#   lab.sh install          apt-get install the Debian packages the lab needs (only if missing)
#   lab.sh up               tear down leftovers, then build the whole lab (idempotent)
#   lab.sh down             tear everything down (keeps secrets, keys, registry, image cache)
#   lab.sh status           print what is up (exit 0 when everything is up, 1 otherwise)
#   lab.sh exec HOST -- CMD run CMD inside a lab host (network, mount and UTS namespace)
#   lab.sh env              print the path of lab.env (and its keys)
# Faults (fast, bounded, safe to repeat; they never wait on a running up/down):
#   lab.sh link HOST|all down|up   take a host's veth (vl-HOST) down or bring it back up
#   lab.sh redis-stop              kill the lab Redis (save '': every key is lost, as in a crash)
#   lab.sh redis-start             start it again with the same config; returns when it answers PING
#   lab.sh redis-restart [SECONDS] redis-stop, wait SECONDS (default 1), redis-start
#
# Hosts: lb 10.77.0.10 (nginx), n1..n6 10.77.0.11-16 (dockerd), bastion 10.77.0.9 (sshd only),
# each its own netns + mount ns with its own sshd. n6 accepts SSH only from the bastion; n5 also
# lets the sudo user newapi-deploy in. Shared services on the bridge address 10.77.0.1: MariaDB
# :3306, Redis :6379, registry :5000, plus the operator's dockerd on /var/run/docker.sock.
# Everything generated lives under /var/lib/newapi-lab. See README.md beside this file.
set -euo pipefail

STATE=/var/lib/newapi-lab
LAB_DIR="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
export PATH="/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin${PATH:+:$PATH}"

BR=br-lab
GW=10.77.0.1
HOSTS=(bastion lb n1 n2 n3 n4 n5 n6)
NODES=(n1 n2 n3 n4 n5 n6)
BASTION=bastion           # sshd only: the jump host
BEHIND_BASTION=n6         # its sshd answers only the bastion (iptables in its netns)
SUDO_USER_NAME=newapi-deploy   # a non-root SSH user with passwordless sudo ...
SUDO_HOST=n5                   # ... allowed in by this host's sshd only
SUDO_USER_TAG="newapi-cluster lab sudo user"   # its GECOS: down deletes only an account it made
SUDOERS_FILE=/etc/sudoers.d/newapi-lab
REGISTRY="$GW:5000"
IMAGE_REPO="$REGISTRY/calciumion/new-api"
IMAGE_TAGS=(v0.9.20 v0.9.21 v0.9.22 v0.9.23-unhealthy)
IMAGE_RECIPE=3            # bump to force a rebuild of the stand-in image
MARK=NEWAPI_LAB           # environment marker carried by every long-running lab process
OP_SOCK=/var/run/docker.sock
CG_PREFIX=newapi-lab      # cgroup parent of every lab dockerd: /newapi-lab-<host>, /newapi-lab-op

say() { printf '[lab %s] %s\n' "$(date +%T)" "$*" >&2; }
die() { say "ERROR: $*"; exit 1; }

host_ip() {
  case "$1" in
    lb) echo 10.77.0.10 ;;
    bastion) echo 10.77.0.9 ;;
    n[1-9]) echo "10.77.0.1${1#n}" ;;
    *) return 1 ;;
  esac
}
norm_host() { # lb | lab-lb | 10.77.0.10 | n1 | lab-n1 | 10.77.0.11 | bastion -> lb / n1 / bastion
  local a="${1#lab-}" h
  for h in "${HOSTS[@]}"; do
    if [[ "$a" == "$h" || "$a" == "$(host_ip "$h")" ]]; then echo "$h"; return 0; fi
  done
  return 1
}
hdir() { echo "$STATE/hosts/$1"; }

# ---------------------------------------------------------------- processes ----------
# pids whose environment holds NEWAPI_LAB=<value> (value may be a grep -E pattern)
marked_pids() {
  local pat="$1" f
  for f in $(grep -lzxE "$MARK=($pat)" /proc/[0-9]*/environ 2>/dev/null || true); do
    f="${f#/proc/}"; f="${f%/environ}"
    [[ "$f" == "$$" || "$f" == "${BASHPID:-}" ]] || echo "$f"
  done
}
# (no forks in these two: status and teardown call them for every pid, and forks are slow here)
pid_alive() { # the process exists and is not a zombie
  [[ -n "${1:-}" && -d "/proc/$1" ]] || return 1
  local k v
  { while read -r k v _; do [[ "$k" == State: ]] && { [[ "$v" != Z ]]; return; }; done <"/proc/$1/status"; } 2>/dev/null
  return 0
}
pid_marked() { grep -qzxE "$MARK=($2)" "/proc/$1/environ" 2>/dev/null; }
pidfile_pid() { local v=""; [[ -s "$1" ]] || return 1; read -r v <"$1" || [[ -n "$v" ]]; echo "${v//[!0-9]/}"; }

# the shared services' pids: by marker, by pid file, and by what listens on the bridge address
# (redis-server rewrites its process title over its environment, so the marker alone misses it)
svc_pids() {
  local f p
  {
    marked_pids 'svc:.*'
    for f in "$STATE/mysql/mysqld.pid" "$STATE/redis/redis.pid" "$STATE/registry/registry.pid" "$STATE/op/dockerd.pid"; do
      p="$(pidfile_pid "$f" 2>/dev/null || true)"
      if [[ -n "$p" ]] && pid_alive "$p"; then
        case "$(readlink "/proc/$p/exe" 2>/dev/null)" in
          */mariadbd | */redis-server | */docker-registry | */dockerd) echo "$p" ;;
        esac
      fi
    done
    ss -Hltnp "src $GW" 2>/dev/null | grep -o 'pid=[0-9]*' | cut -d= -f2
  } | sort -u | grep -vx "$$" || true
}
holder_pid() { # prints the pid of host $1's namespace holder, fails if it is not running
  local p
  p="$(pidfile_pid "$(hdir "$1")/holder.pid" 2>/dev/null)" || return 1
  [[ -n "$p" ]] && pid_alive "$p" && pid_marked "$p" "host:$1" && echo "$p"
}
in_host() { # in_host PID CMD... : run in that holder's network, mount and UTS namespaces
  local p="$1"; shift
  nsenter -t "$p" -n -m -u --wd=/ -- "$@"
}
# pids (other than ours) living in mount namespace $1 (e.g. "mnt:[4026532345]")
mntns_pids() {
  local ns="$1" f pat
  [[ -n "$ns" ]] || return 0
  pat="${ns//[/\\[}"; pat="${pat//]/\\]}"
  for f in $(find /proc/[0-9]*/ns/mnt -maxdepth 0 -lname "$pat" 2>/dev/null || true); do
    f="${f#/proc/}"; f="${f%/ns/mnt}"
    [[ "$f" == "$$" || "$f" == "${BASHPID:-}" ]] || echo "$f"
  done
}
cgroup_pids() { # processes inside the lab dockerds' container cgroups
  local f
  for f in /sys/fs/cgroup/*/"$CG_PREFIX"-*/ /sys/fs/cgroup/"$CG_PREFIX"-*/ /sys/fs/cgroup/unified/"$CG_PREFIX"-*/; do
    [[ -d "$f" ]] || continue
    find "$f" -name cgroup.procs -exec cat {} + 2>/dev/null || true
  done | sort -u
}
kill_wait() { # kill_wait SIGNAL SECONDS PID... : signal, then wait until gone
  local sig="$1" secs="$2" p i; shift 2
  [[ $# -gt 0 ]] || return 0
  kill "-$sig" "$@" 2>/dev/null || true
  for ((i = 0; i < secs * 10; i++)); do
    local left=0
    for p in "$@"; do pid_alive "$p" && left=1 && break; done
    [[ $left == 0 ]] && return 0
    sleep 0.1
  done
  return 1
}

# ---------------------------------------------------------------- install ------------
REQUIRED_PKGS=(docker.io docker-compose docker-registry openssh-server openssh-client nginx
  mariadb-server mariadb-client redis-server redis-tools iproute2 iptables busybox-static
  util-linux curl ca-certificates sudo)
cmd_install() {
  local missing=() p installed
  installed="$(dpkg-query -W -f='${Package} ${Status}\n' "${REQUIRED_PKGS[@]}" 2>/dev/null || true)"
  for p in "${REQUIRED_PKGS[@]}"; do
    grep -qx "$p install ok installed" <<<"$installed" || missing+=("$p")
  done
  if [[ ${#missing[@]} -gt 0 ]]; then
    say "installing: ${missing[*]}"
    apt-get update -qq
    # needrestart (if installed) must not restart services behind the lab's back
    DEBIAN_FRONTEND=noninteractive NEEDRESTART_SUSPEND=1 apt-get install -y -qq "${missing[@]}" >/dev/null
  fi
  command -v node >/dev/null || die "node (>= 20) is required (it is not installed by this script)"
  command -v npm >/dev/null || die "npm is required"
  [[ -x /bin/busybox ]] && grep -qx wget <<<"$(/bin/busybox --list)" || die "/bin/busybox (busybox-static) missing"
}

# ---------------------------------------------------------------- the sudo user ------
# /etc/passwd, /etc/sudoers.d and /home are the machine's, shared by every lab host; only n5's
# sshd lets the user in (AllowUsers). The account is made by up and deleted by down, unless it
# existed before the lab (its GECOS is not ours): then only our key line is added and removed.
sudo_user_ours() { [[ "$(getent passwd "$SUDO_USER_NAME" | cut -d: -f5)" == "$SUDO_USER_TAG" ]]; }
ensure_sudo_user() {
  local u="$SUDO_USER_NAME" home grp ak key pw tmp
  if ! getent passwd "$u" >/dev/null; then
    # no skeleton files: like /root, the home holds nothing but .ssh (no .bashrc to slow SSH down)
    useradd --comment "$SUDO_USER_TAG" --shell /bin/bash --home-dir "/home/$u" --no-create-home \
      --user-group "$u" || die "useradd $u failed"
  fi
  # sshd without PAM refuses a "locked" account, and useradd's password "!" means locked;
  # "*" matches no password either, but is not a lock
  pw="$(getent shadow "$u" | cut -d: -f2)"
  if [[ "$pw" == "!" || "$pw" == "!*" || "$pw" == "" ]]; then usermod -p '*' "$u"; fi
  home="$(getent passwd "$u" | cut -d: -f6)"; grp="$(id -gn "$u")"
  [[ -n "$home" && "$home" == /* ]] || die "user $u has no home directory"
  install -d -m 0755 -o "$u" -g "$grp" "$home"
  install -d -m 0700 -o "$u" -g "$grp" "$home/.ssh"
  ak="$home/.ssh/authorized_keys"; key="$(cut -d' ' -f1,2 "$STATE/ssh/id_ed25519.pub")"
  if sudo_user_ours; then
    install -m 0600 -o "$u" -g "$grp" "$STATE/ssh/id_ed25519.pub" "$ak"
  elif ! grep -qF "$key" "$ak" 2>/dev/null; then
    cat "$STATE/ssh/id_ed25519.pub" >>"$ak"; chown "$u:$grp" "$ak"; chmod 0600 "$ak"
  fi
  tmp="$(mktemp /etc/sudoers.d/.newapi-lab.XXXXXX)"
  printf '# newapi-cluster lab (lab.sh up); removed by lab.sh down\n%s ALL=(ALL) NOPASSWD:ALL\n' "$u" >"$tmp"
  chmod 0440 "$tmp"
  visudo -cqf "$tmp" >/dev/null || { rm -f "$tmp"; die "visudo rejects the lab's sudoers file"; }
  mv -f "$tmp" "$SUDOERS_FILE"
  visudo -cq >/dev/null || { rm -f "$SUDOERS_FILE"; die "visudo -c fails with $SUDOERS_FILE"; }
}
remove_sudo_user() {
  local u="$SUDO_USER_NAME" home key
  rm -f "$SUDOERS_FILE" /etc/sudoers.d/.newapi-lab.* 2>/dev/null || true
  getent passwd "$u" >/dev/null || return 0
  home="$(getent passwd "$u" | cut -d: -f6)"
  if sudo_user_ours; then
    userdel "$u" 2>/dev/null || userdel -f "$u" 2>/dev/null || say "could not delete user $u"
    if [[ "$home" == /home/"$u" ]]; then rm -rf "$home"; fi
  elif [[ -s "$STATE/ssh/id_ed25519.pub" && -f "$home/.ssh/authorized_keys" ]]; then
    key="$(cut -d' ' -f1,2 "$STATE/ssh/id_ed25519.pub")"
    grep -vF "$key" "$home/.ssh/authorized_keys" >"$home/.ssh/authorized_keys.lab" || true
    cat "$home/.ssh/authorized_keys.lab" >"$home/.ssh/authorized_keys"; rm -f "$home/.ssh/authorized_keys.lab"
  fi
}

# ---------------------------------------------------------------- teardown -----------
teardown() {
  local h p ns nss=() pids i
  # 1. the hosts: everything in their mount namespaces, and anything still carrying their marker
  for h in "${HOSTS[@]}"; do
    p="$(pidfile_pid "$(hdir "$h")/holder.pid" 2>/dev/null || true)"
    if [[ -n "$p" ]] && pid_alive "$p" && pid_marked "$p" "host:$h"; then
      nss+=("$(readlink "/proc/$p/ns/mnt")")
    fi
  done
  for p in $(marked_pids 'host:.*'); do
    ns="$(readlink "/proc/$p/ns/mnt" 2>/dev/null || true)"
    [[ -n "$ns" && "$ns" != "$(readlink /proc/$$/ns/mnt)" ]] && nss+=("$ns")
  done
  for i in 1 2 3 4 5 6 7 8 9 10; do
    pids="$( { for ns in "${nss[@]}"; do mntns_pids "$ns"; done; marked_pids 'host:.*'; } | sort -u)"
    [[ -z "$pids" ]] && break
    # shellcheck disable=SC2086
    kill -9 $pids 2>/dev/null || true
    sleep 0.2
  done

  # 2. shared services: the operator's dockerd and MariaDB stop cleanly (they keep data)
  local svc=() c
  # containers left in the operator's engine would each hold its shutdown for 10 s: kill them first
  if [[ -S "$OP_SOCK" ]] && c="$(timeout 5 env DOCKER_HOST="unix://$OP_SOCK" DOCKER_CONFIG="$STATE/op/docker-config" docker ps -q 2>/dev/null)" && [[ -n "$c" ]]; then
    # shellcheck disable=SC2086
    timeout 15 env DOCKER_HOST="unix://$OP_SOCK" DOCKER_CONFIG="$STATE/op/docker-config" docker kill $c >/dev/null 2>&1 || true
  fi
  for p in $(svc_pids); do svc+=("$p"); done
  if [[ ${#svc[@]} -gt 0 ]]; then
    kill_wait TERM 25 "${svc[@]}" || { say "some services did not stop in time, killing"; kill_wait KILL 5 "${svc[@]}" || true; }
  fi

  # 3. container processes of any lab dockerd (their shims are gone)
  for i in 1 2 3 4 5 6 7 8 9 10; do
    pids="$(cgroup_pids)"
    [[ -z "$pids" ]] && break
    # shellcheck disable=SC2086
    kill -9 $pids 2>/dev/null || true
    sleep 0.2
  done
  find /sys/fs/cgroup/ -mindepth 1 -maxdepth 3 -type d -name "$CG_PREFIX-*" 2>/dev/null |
    awk '{ print length($0) " " $0 }' | sort -rn | cut -d' ' -f2- | while read -r d; do
      find "$d" -depth -type d -exec rmdir {} \; 2>/dev/null || true
    done

  # 4. mounts the operator's dockerd may have left in the root namespace
  local m
  for m in $(awk -v s="$STATE/" 'index($5, s) == 1 { print $5 }' /proc/self/mountinfo | sort -r); do
    umount -l "$m" 2>/dev/null || true
  done

  # 5. network
  for h in "${HOSTS[@]}"; do
    ip link del "vl-$h" 2>/dev/null || true
    ip netns del "lab-$h" 2>/dev/null || true
  done
  ip link del "$BR" 2>/dev/null || true
  while iptables -w -D FORWARD -i "$BR" -o "$BR" -j ACCEPT 2>/dev/null; do :; done
  # the operator's dockerd leaves its docker0 bridge behind; drop it when no dockerd is left here
  if ip link show docker0 >/dev/null 2>&1; then
    local live=0
    for p in $(pgrep -x dockerd || true); do
      pid_alive "$p" && [[ "$(readlink "/proc/$p/ns/net")" == "$(readlink /proc/$$/ns/net)" ]] && live=1
    done
    [[ $live == 1 ]] || ip link del docker0 2>/dev/null || true
  fi
  rm -f "$STATE"/hosts/*/holder.pid "$STATE"/op/dockerd.pid "$STATE"/redis/redis.pid "$STATE"/registry/registry.pid 2>/dev/null || true

  # 6. the sudo user and its sudoers file (no lab process is left that could be running as it)
  remove_sudo_user
}

cmd_down() {
  say "tearing the lab down"
  teardown
  say "down"
}

# ---------------------------------------------------------------- generated once -----
gen_secret() { # gen_secret LENGTH: [A-Za-z0-9]
  local s=""
  while [[ ${#s} -lt $1 ]]; do s+="$(head -c 600 /dev/urandom | base64 -w0 | tr -dc 'A-Za-z0-9')"; done
  echo "${s:0:$1}"
}
ensure_once() {
  install -d -m 0755 "$STATE" "$STATE/hosts"
  install -d -m 0700 "$STATE/ssh"
  if [[ ! -s "$STATE/secrets.env" ]]; then
    umask 077
    {
      echo "MYSQL_PASSWORD=$(gen_secret 24)"
      echo "REDIS_PASSWORD=$(gen_secret 24)"
      echo "SESSION_SECRET=$(gen_secret 48)"
      echo "CRYPTO_SECRET=$(gen_secret 48)"
      echo "REGISTRY_HTTP_SECRET=$(gen_secret 32)"
    } >"$STATE/secrets.env.tmp"
    mv "$STATE/secrets.env.tmp" "$STATE/secrets.env"
    umask 022
  fi
  chmod 0600 "$STATE/secrets.env"
  # shellcheck disable=SC1091
  . "$STATE/secrets.env"
  if [[ ! -s "$STATE/ssh/id_ed25519" ]]; then
    rm -f "$STATE/ssh/id_ed25519" "$STATE/ssh/id_ed25519.pub"
    ssh-keygen -q -t ed25519 -N '' -C newapi-lab-operator -f "$STATE/ssh/id_ed25519"
  fi
  local h
  for h in "${HOSTS[@]}"; do
    install -d -m 0700 "$(hdir "$h")/ssh"
    if [[ ! -s "$(hdir "$h")/ssh/ssh_host_ed25519_key" ]]; then
      rm -f "$(hdir "$h")/ssh/ssh_host_ed25519_key"*
      ssh-keygen -q -t ed25519 -N '' -C "lab-$h" -f "$(hdir "$h")/ssh/ssh_host_ed25519_key"
    fi
  done
}

# ---------------------------------------------------------------- shared services ----
start_mariadb() {
  local m="$STATE/mysql" i
  install -d -m 0700 "$m"
  if [[ ! -d "$m/data/mysql" ]]; then
    rm -rf "$m/data"
    mariadb-install-db --no-defaults --user=root --datadir="$m/data" \
      --auth-root-authentication-method=socket --skip-test-db >"$m/install.log" 2>&1 ||
      { cat "$m/install.log" >&2; die "mariadb-install-db failed"; }
  fi
  rm -f "$m/mysqld.sock" "$m/mysqld.pid"
  env "$MARK=svc:mariadb" setsid /usr/sbin/mariadbd --no-defaults --user=root \
    --datadir="$m/data" --socket="$m/mysqld.sock" --pid-file="$m/mysqld.pid" \
    --bind-address="$GW" --port=3306 --skip-name-resolve --log-error="$m/error.log" \
    --character-set-server=utf8mb4 --collation-server=utf8mb4_general_ci \
    --max-connections=1000 --innodb-flush-log-at-trx-commit=2 \
    </dev/null >/dev/null 2>&1 &
  for ((i = 0; i < 300; i++)); do
    mariadb-admin --no-defaults -S "$m/mysqld.sock" -u root ping >/dev/null 2>&1 && break
    sleep 0.1
  done
  mariadb-admin --no-defaults -S "$m/mysqld.sock" -u root ping >/dev/null 2>&1 ||
    { tail -20 "$m/error.log" >&2; die "MariaDB did not start"; }
  # fresh databases on every up; the user and its password are kept
  mariadb --no-defaults -S "$m/mysqld.sock" -u root <<SQL
DROP DATABASE IF EXISTS newapi;
CREATE DATABASE newapi CHARACTER SET utf8mb4 COLLATE utf8mb4_unicode_ci;
DROP DATABASE IF EXISTS newapi_latin1;
CREATE DATABASE newapi_latin1 CHARACTER SET latin1 COLLATE latin1_swedish_ci;
CREATE USER IF NOT EXISTS 'newapi'@'%' IDENTIFIED BY '$MYSQL_PASSWORD';
ALTER USER 'newapi'@'%' IDENTIFIED BY '$MYSQL_PASSWORD';
GRANT ALL PRIVILEGES ON newapi.* TO 'newapi'@'%';
GRANT ALL PRIVILEGES ON newapi_latin1.* TO 'newapi'@'%';
FLUSH PRIVILEGES;
SQL
}

start_redis() {
  local r="$STATE/redis"
  install -d -m 0700 "$r"
  umask 077
  cat >"$r/redis.conf" <<EOF
bind $GW
port 6379
protected-mode yes
requirepass $REDIS_PASSWORD
save ""
appendonly no
dir $r
pidfile $r/redis.pid
logfile $r/redis.log
daemonize no
maxclients 10000
EOF
  umask 022
  launch_redis
}

# Redis helpers, shared by up and the fault sub-commands (which reuse redis.conf as it is)
redis_ping() {
  [[ "$(timeout 2 redis-cli -h "$GW" -p 6379 -a "${REDIS_PASSWORD:-}" --no-auth-warning ping 2>/dev/null)" == PONG ]]
}
redis_pids() { # the lab Redis: by pid file (checked to be redis-server) and by what listens on :6379
  local p
  {
    p="$(pidfile_pid "$STATE/redis/redis.pid" 2>/dev/null || true)"
    if [[ -n "$p" ]] && pid_alive "$p" && [[ "$(readlink "/proc/$p/exe" 2>/dev/null)" == */redis-server ]]; then echo "$p"; fi
    ss -Hltnp "src $GW:6379" 2>/dev/null | grep -o 'pid=[0-9]*' | cut -d= -f2
  } | sort -u | grep -vx "$$" || true
}
launch_redis() { # start redis-server on the existing redis.conf; return once it answers PING (10 s max)
  local r="$STATE/redis" me t
  rm -f "$r/redis.pid"
  env "$MARK=svc:redis" setsid redis-server "$r/redis.conf" </dev/null >/dev/null 2>&1 &
  me=$!
  t=$((SECONDS + 10))
  while ((SECONDS < t)); do
    pid_alive "$me" || break
    redis_ping && return 0
    sleep 0.1
  done
  tail -20 "$r/redis.log" >&2
  die "Redis did not start"
}

start_registry() {
  local g="$STATE/registry" i
  install -d -m 0700 "$g" "$g/data"
  cat >"$g/config.yml" <<EOF
version: 0.1
log:
  level: warn
  accesslog:
    disabled: true
storage:
  filesystem:
    rootdirectory: $g/data
  delete:
    enabled: true
  maintenance:
    uploadpurging:
      enabled: false
http:
  addr: $REGISTRY
  secret: $REGISTRY_HTTP_SECRET
EOF
  env "$MARK=svc:registry" setsid docker-registry serve "$g/config.yml" </dev/null >>"$g/registry.log" 2>&1 &
  local me=$!
  echo "$me" >"$g/registry.pid"
  for ((i = 0; i < 100; i++)); do
    pid_alive "$me" || break
    curl -fsS -o /dev/null "http://$REGISTRY/v2/" 2>/dev/null && return 0
    sleep 0.1
  done
  tail -20 "$g/registry.log" >&2
  die "registry did not start"
}

opdocker() { DOCKER_HOST="unix://$OP_SOCK" DOCKER_CONFIG="$STATE/op/docker-config" docker "$@"; }

start_opdocker() {
  local o="$STATE/op" i p
  install -d -m 0700 "$o" "$o/docker" "$o/docker-config"
  [[ -s "$o/docker-config/config.json" ]] || echo '{}' >"$o/docker-config/config.json"
  for p in $(pgrep -x dockerd || true); do
    if [[ "$(readlink "/proc/$p/ns/mnt")" == "$(readlink /proc/$$/ns/mnt)" ]] && ! pid_marked "$p" 'svc:.*'; then
      say "a dockerd that is not the lab's runs here (pid $p); trying to stop the docker service"
      { systemctl stop docker.socket docker.service || service docker stop; } >/dev/null 2>&1 || true
      kill_wait TERM 20 "$p" || die "a foreign dockerd (pid $p) holds $OP_SOCK; stop it first"
    fi
  done
  rm -f "$OP_SOCK" "$o/dockerd.pid"
  env "$MARK=svc:dockerd" setsid dockerd --host "unix://$OP_SOCK" --pidfile "$o/dockerd.pid" \
    --data-root "$o/docker" --bip 172.30.0.1/24 --insecure-registry "$REGISTRY" \
    --cgroup-parent "/$CG_PREFIX-op" --log-level warn </dev/null >>"$o/dockerd.log" 2>&1 &
  for ((i = 0; i < 300; i++)); do
    opdocker version >/dev/null 2>&1 && return 0
    sleep 0.1
  done
  tail -20 "$o/dockerd.log" >&2
  die "the operator's dockerd did not start"
}

# ---------------------------------------------------------------- lab hosts ----------
write_sshd_config() {
  local h="$1" d ip users=root
  d="$(hdir "$h")"; ip="$(host_ip "$h")"
  [[ "$h" == "$SUDO_HOST" ]] && users+=" $SUDO_USER_NAME"
  cat >"$d/sshd_config" <<EOF
# sshd of lab host $h ($ip), generated by lab.sh
Port 22
ListenAddress $ip
HostKey $d/ssh/ssh_host_ed25519_key
PidFile /run/sshd.pid
PermitRootLogin prohibit-password
AllowUsers $users
PubkeyAuthentication yes
PasswordAuthentication no
KbdInteractiveAuthentication no
UsePAM no
StrictModes yes
AuthorizedKeysFile .ssh/authorized_keys
PrintMotd no
PrintLastLog no
LogLevel INFO
AcceptEnv LANG LC_*
Subsystem sftp /usr/lib/openssh/sftp-server
EOF
}

start_host() {
  local h="$1" d ip n hp i
  d="$(hdir "$h")"; ip="$(host_ip "$h")"
  # a fresh server every time: wipe what the previous run left on it (host keys are kept)
  rm -rf "$d/run" "$d/opt" "$d/etc-nginx" "$d/root" "$d/tmp" "$d/docker" "$d/etc-docker" \
    "$d/log-nginx" "$d/lib-nginx" "$d/holder.pid"
  : >"$d/sshd.log"
  install -d -m 0755 "$d/run" "$d/run/sshd" "$d/run/lock" "$d/opt" "$d/etc-docker" "$d/log-nginx" "$d/lib-nginx"
  install -d -m 1777 "$d/tmp" "$d/run/shm"
  install -d -m 0710 "$d/docker"
  install -d -m 0700 "$d/root" "$d/root/.ssh"
  install -m 0600 "$STATE/ssh/id_ed25519.pub" "$d/root/.ssh/authorized_keys"
  cp -a /etc/nginx "$d/etc-nginx"
  # its own /etc/hosts that knows its own name, as on a Debian server: without it, sudo looks the
  # name up in DNS, which is out of reach here (20 s of timeouts per sudo, measured)
  { cat /etc/hosts; printf '127.0.1.1 lab-%s\n' "$h"; } >"$d/hosts"
  chmod 0644 "$d/hosts"
  rm -f "$d/etc-nginx/sites-enabled/"* "$d/etc-nginx/conf.d/"*
  write_sshd_config "$h"

  ip netns add "lab-$h"
  ip link add "vl-$h" type veth peer name eth0 netns "lab-$h"
  ip link set "vl-$h" master "$BR" up
  ip -n "lab-$h" link set lo up
  ip -n "lab-$h" addr add "$ip/24" dev eth0
  ip -n "lab-$h" link set eth0 up
  ip -n "lab-$h" route add default via "$GW"
  if [[ "$h" == "$BEHIND_BASTION" ]]; then
    # SSH only through the jump host; a direct attempt gets a TCP reset at once. Other ports
    # (3000 for the app, which the balancer must reach) stay open to everyone.
    nsenter --net="/run/netns/lab-$h" -- iptables -w -I INPUT 1 -p tcp --dport 22 \
      ! -s "$(host_ip "$BASTION")" -j REJECT --reject-with tcp-reset
  fi

  # the holder: owns the host's mount + UTS namespaces (and sits in its netns) for the lab's life
  env "$MARK=host:$h" setsid nsenter --net="/run/netns/lab-$h" -- \
    unshare --mount --uts --propagation private -- /bin/sh -ec "
      mount --bind '$d/run' /run
      mount --bind '$d/opt' /opt
      mount --bind '$d/root' /root
      mount --bind '$d/tmp' /tmp
      mount --bind '$d/etc-nginx' /etc/nginx
      mount --bind '$d/log-nginx' /var/log/nginx
      mount --bind '$d/lib-nginx' /var/lib/nginx
      mount --bind '$d/etc-docker' /etc/docker
      mount --bind '$d/docker' /var/lib/docker
      mount --bind '$d/hosts' /etc/hosts
      hostname 'lab-$h'
      echo \$\$ > '$d/holder.pid'
      exec sleep infinity" </dev/null >"$d/holder.log" 2>&1 &
  for ((i = 0; i < 100; i++)); do
    hp="$(holder_pid "$h" 2>/dev/null || true)"
    [[ -n "$hp" ]] && break
    sleep 0.05
  done
  [[ -n "$hp" ]] || { cat "$d/holder.log" >&2; die "host $h: namespace holder did not start"; }

  in_host "$hp" env "$MARK=host:$h" setsid /usr/sbin/sshd -D -f "$d/sshd_config" -E "$d/sshd.log" \
    </dev/null >/dev/null 2>&1 &
  if [[ "$h" == lb ]]; then
    in_host "$hp" env "$MARK=host:$h" setsid /usr/sbin/nginx </dev/null >"$d/nginx.out" 2>&1 ||
      { cat "$d/nginx.out" >&2; die "host $h: nginx did not start"; }
  elif [[ "$h" == "$BASTION" ]]; then
    : # the jump host runs sshd and nothing else
  else
    n="${h#n}"
    in_host "$hp" env "$MARK=host:$h" setsid /usr/sbin/dockerd --host unix:///run/docker.sock \
      --pidfile /run/docker.pid --bip "172.31.$n.1/24" --insecure-registry "$REGISTRY" \
      --cgroup-parent "/$CG_PREFIX-$h" --log-level warn </dev/null >>"$d/dockerd.log" 2>&1 &
  fi
  for ((i = 0; i < 100; i++)); do
    pid_alive "$(pidfile_pid "$d/run/sshd.pid" 2>/dev/null || true)" && break
    sleep 0.05
  done
  pid_alive "$(pidfile_pid "$d/run/sshd.pid" 2>/dev/null || true)" ||
    { tail -5 "$d/sshd.log" >&2; die "host $h: sshd did not start"; }
}

wait_host_docker() {
  local h="$1" d i
  d="$(hdir "$h")"
  for ((i = 0; i < 300; i++)); do
    DOCKER_HOST="unix://$d/run/docker.sock" DOCKER_CONFIG="$STATE/op/docker-config" docker version >/dev/null 2>&1 && return 0
    sleep 0.1
  done
  tail -20 "$d/dockerd.log" >&2
  die "host $h: dockerd did not start"
}

# ---------------------------------------------------------------- stand-in image -----
build_bundle() {
  local s="$LAB_DIR/standin" out="$STATE/image"
  install -d -m 0755 "$out"
  if [[ ! -x "$s/node_modules/.bin/esbuild" || "$s/package-lock.json" -nt "$s/node_modules/.package-lock.json" ]]; then
    say "npm ci in test/lab/standin"
    (cd "$s" && npm ci --no-audit --no-fund --loglevel=error >/dev/null)
  fi
  # run from the package folder: esbuild names bundled modules relative to the cwd, and the
  # bundle must be byte-identical wherever lab.sh is called from (the image layer is cached by hash)
  (cd "$s" && ./node_modules/.bin/esbuild server.mjs --bundle --platform=node --target=node20 \
    --format=cjs --log-level=warning --outfile="$out/server.cjs.new")
  mv "$out/server.cjs.new" "$out/server.cjs"
}

build_rootfs_tar() { # prints the short sha256 of the deterministic rootfs tarball
  local out="$STATE/image" node key r lib l
  node="$(readlink -f "$(command -v node)")"
  key="$(
    echo "recipe=$IMAGE_RECIPE"
    stat -c '%n %s %Y' "$node" /bin/busybox
    sha256sum "$out/server.cjs" | cut -d' ' -f1
    ldd "$node" | sed 's/ (0x[0-9a-f]*)$//'
  )"
  if [[ -s "$out/rootfs.tar" && -s "$out/rootfs.key" && "$(cat "$out/rootfs.key")" == "$key" && -s "$out/rootfs.sha" ]]; then
    cat "$out/rootfs.sha"; return 0
  fi
  r="$out/rootfs"
  rm -rf "$r"
  install -d "$r"/{bin,sbin,usr/bin,usr/sbin,usr/local/bin,etc,app,app/logs,data,root,proc,sys,dev,run,var}
  install -d -m 1777 "$r/tmp"
  cp "$node" "$r/usr/local/bin/node"
  for lib in $(ldd "$node" | awk '/=>/ { print $3 } !/=>/ && $1 ~ /^\// { print $1 }'); do
    install -d "$r$(dirname "$lib")"
    cp -L "$lib" "$r$lib"
  done
  cp /bin/busybox "$r/bin/busybox"
  for l in $(/bin/busybox --list-full); do
    [[ -e "$r/$l" ]] || ln -s /bin/busybox "$r/$l"
  done
  printf 'root:x:0:0:root:/root:/bin/sh\nnobody:x:65534:65534:nobody:/nonexistent:/bin/false\n' >"$r/etc/passwd"
  printf 'root:x:0:\nnogroup:x:65534:\n' >"$r/etc/group"
  printf 'hosts: files dns\n' >"$r/etc/nsswitch.conf"
  cp "$out/server.cjs" "$r/app/server.cjs"
  printf '#!/bin/sh\n# New API stand-in (newapi-cluster lab)\nexec /usr/local/bin/node /app/server.cjs "$@"\n' >"$r/new-api"
  chmod 0755 "$r/new-api"
  tar -C "$r" --sort=name --mtime=@0 --owner=0 --group=0 --numeric-owner -cf "$out/rootfs.tar.new" .
  mv "$out/rootfs.tar.new" "$out/rootfs.tar"
  rm -rf "$r"
  sha256sum "$out/rootfs.tar" | cut -c1-16 >"$out/rootfs.sha"
  echo "$key" >"$out/rootfs.key"
  cat "$out/rootfs.sha"
}

registry_has() { # registry_has TAG DIGEST-OF-LOCAL-IMAGE-CONFIG
  curl -fsS -o /dev/null -H 'Accept: application/vnd.docker.distribution.manifest.v2+json' \
    "http://$REGISTRY/v2/calciumion/new-api/manifests/$1" 2>/dev/null
}

build_image() {
  local sum base tag ver extra stamp want
  sum="$(build_rootfs_tar)"
  base="newapi-lab/standin-base:$sum"
  want="$sum ${IMAGE_TAGS[*]}"
  stamp="$STATE/image/pushed.stamp"
  if [[ -s "$stamp" && "$(cat "$stamp")" == "$want" ]] && opdocker image inspect "$base" >/dev/null 2>&1; then
    local ok=1
    for tag in "${IMAGE_TAGS[@]}"; do
      registry_has "$tag" && opdocker image inspect "$IMAGE_REPO:$tag" >/dev/null 2>&1 || { ok=0; break; }
    done
    if [[ $ok == 1 ]]; then say "stand-in image $sum already built and pushed"; return 0; fi
  fi
  if ! opdocker image inspect "$base" >/dev/null 2>&1; then
    say "importing stand-in base image $sum"
    opdocker import \
      --change 'ENV PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin' \
      --change 'ENV STANDIN_START_DELAY_MS=1500' \
      --change 'WORKDIR /data' \
      --change 'EXPOSE 3000' \
      --change 'ENTRYPOINT ["/new-api"]' \
      "$STATE/image/rootfs.tar" "$base" >/dev/null
  fi
  for tag in "${IMAGE_TAGS[@]}"; do
    ver="$tag"; extra=""
    [[ "$tag" == *-unhealthy ]] && extra=" STANDIN_UNHEALTHY=1"
    printf 'FROM %s\nENV STANDIN_VERSION=%s%s\nLABEL org.opencontainers.image.version=%s org.opencontainers.image.title="New API stand-in (newapi-cluster lab)"\n' \
      "$base" "$ver" "$extra" "$ver" |
      DOCKER_BUILDKIT=0 opdocker build -q -t "$IMAGE_REPO:$tag" - >/dev/null 2>"$STATE/image/build.err" ||
      { cat "$STATE/image/build.err" >&2; die "docker build of $tag failed"; }
    opdocker tag "$IMAGE_REPO:$tag" "calciumion/new-api:$tag"
  done
  say "pushing ${IMAGE_TAGS[*]} to $REGISTRY"
  opdocker push -q "$IMAGE_REPO:${IMAGE_TAGS[0]}" >/dev/null
  local pids=() p
  for tag in "${IMAGE_TAGS[@]:1}"; do
    opdocker push -q "$IMAGE_REPO:$tag" >/dev/null &
    pids+=($!)
  done
  for p in "${pids[@]}"; do wait "$p" || die "docker push failed"; done
  for tag in "${IMAGE_TAGS[@]}"; do registry_has "$tag" || die "registry lacks $tag after push"; done
  echo "$want" >"$stamp"
  # drop stand-in builds of earlier runs from the operator's engine
  local old
  opdocker image prune -f >/dev/null 2>&1 || true
  for old in $(opdocker images newapi-lab/standin-base --format '{{.Tag}}'); do
    [[ "$old" == "$sum" ]] || opdocker rmi "newapi-lab/standin-base:$old" >/dev/null 2>&1 || true
  done
  opdocker image prune -f >/dev/null 2>&1 || true
}

# ---------------------------------------------------------------- outputs ------------
write_outputs() {
  local h kh="$STATE/ssh/known_hosts" env="$STATE/lab.env" json="$STATE/lab.json"
  : >"$kh.new"
  for h in "${HOSTS[@]}"; do
    echo "$(host_ip "$h") $(cut -d' ' -f1,2 "$(hdir "$h")/ssh/ssh_host_ed25519_key.pub")" >>"$kh.new"
  done
  chmod 0644 "$kh.new"; mv "$kh.new" "$kh"
  # ssh(1) passes only -F (not -i or -o) to the connection it makes to a -J jump host, so the
  # lab's options live in a config file: ssh -F "$LAB_SSH_CONFIG" -J root@BASTION root@N6 CMD
  cat >"$STATE/ssh/config.new" <<EOF
# newapi-cluster lab, written by lab.sh up. Usage:
#   ssh -F $STATE/ssh/config root@10.77.0.11 docker ps
#   ssh -F $STATE/ssh/config -J root@$(host_ip "$BASTION") root@$(host_ip "$BEHIND_BASTION") docker ps
Host 10.77.0.*
  IdentityFile $STATE/ssh/id_ed25519
  IdentitiesOnly yes
  UserKnownHostsFile $kh
  GlobalKnownHostsFile /dev/null
  StrictHostKeyChecking yes
  BatchMode yes
  ConnectTimeout 5
  LogLevel ERROR
EOF
  chmod 0644 "$STATE/ssh/config.new"; mv "$STATE/ssh/config.new" "$STATE/ssh/config"

  local nodes_csv="" sql_dsn sql_dsn_l1 redis_url
  for h in "${NODES[@]}"; do nodes_csv+="${nodes_csv:+,}$(host_ip "$h")"; done
  sql_dsn="newapi:$MYSQL_PASSWORD@tcp($GW:3306)/newapi"
  sql_dsn_l1="newapi:$MYSQL_PASSWORD@tcp($GW:3306)/newapi_latin1"
  redis_url="redis://default:$REDIS_PASSWORD@$GW:6379"
  umask 077
  # values with shell metacharacters (the DSNs' parentheses) are single-quoted so the file can
  # be sourced by sh; dotenv parsers strip the quotes. lab.json has the same keys, unquoted.
  local -a kv=(
    "LAB_STATE=$STATE"
    "LAB_SH=$LAB_DIR/lab.sh"
    "LAB_GATEWAY=$GW"
    "LAB_LB_HOST=$(host_ip lb)"
    "LAB_NODE_HOSTS=$nodes_csv"
    "LAB_SSH_USER=root"
    "LAB_SSH_KEY=$STATE/ssh/id_ed25519"
    "LAB_KNOWN_HOSTS=$kh"
    "LAB_SSH_CONFIG=$STATE/ssh/config"
    "LAB_SUDO_USER=$SUDO_USER_NAME"
    "LAB_SUDO_HOST=$(host_ip "$SUDO_HOST")"
    "LAB_BASTION_HOST=$(host_ip "$BASTION")"
    "LAB_BEHIND_BASTION_HOST=$(host_ip "$BEHIND_BASTION")"
    "LAB_REGISTRY=$REGISTRY"
    "LAB_IMAGE_REPO=$IMAGE_REPO"
    "LAB_IMAGE_TAGS=$(IFS=,; echo "${IMAGE_TAGS[*]}")"
    "LAB_DOCKER_HOST=unix://$OP_SOCK"
    "LAB_MYSQL_HOST=$GW"
    "LAB_MYSQL_PORT=3306"
    "LAB_MYSQL_USER=newapi"
    "MYSQL_PASSWORD=$MYSQL_PASSWORD"
    "LAB_MYSQL_DATABASE=newapi"
    "LAB_MYSQL_DATABASE_LATIN1=newapi_latin1"
    "MYSQL_ROOT_SOCKET=$STATE/mysql/mysqld.sock"
    "SQL_DSN=$sql_dsn"
    "SQL_DSN_LATIN1=$sql_dsn_l1"
    "LAB_REDIS_HOST=$GW"
    "LAB_REDIS_PORT=6379"
    "REDIS_PASSWORD=$REDIS_PASSWORD"
    "REDIS_CONN_STRING=$redis_url"
    "SESSION_SECRET=$SESSION_SECRET"
    "CRYPTO_SECRET=$CRYPTO_SECRET"
  )
  {
    echo "# newapi-cluster lab, written by lab.sh up ($(date -u +%FT%TZ)); sourceable, dotenv-compatible"
    local line k v
    for line in "${kv[@]}"; do
      k="${line%%=*}"; v="${line#*=}"
      if [[ "$v" =~ ^[A-Za-z0-9_./:@,+=-]*$ ]]; then echo "$k=$v"; else echo "$k='$v'"; fi
    done
  } >"$env.new"
  {
    echo "{"
    local first=1
    for line in "${kv[@]}"; do
      k="${line%%=*}"; v="${line#*=}"
      [[ $first == 1 ]] || echo ","
      first=0
      printf '  "%s": "%s"' "$k" "$v"
    done
    echo; echo "}"
  } >"$json.new"
  umask 022
  chmod 0600 "$env.new" "$json.new"
  mv "$env.new" "$env"; mv "$json.new" "$json"
}

self_check() { # one SSH round trip per host, then clear the sshd logs (benchmarks count lines)
  local h pids=() p fail=0 cmd jump bast b6 sudo_ip
  bast="$(host_ip "$BASTION")"; b6="$(host_ip "$BEHIND_BASTION")"; sudo_ip="$(host_ip "$SUDO_HOST")"
  labssh() { ssh -F "$STATE/ssh/config" "$@"; }
  for h in "${HOSTS[@]}"; do
    jump=()
    if [[ "$h" == lb ]]; then cmd='nginx -t 2>&1 | grep -q "test is successful"'
    elif [[ "$h" == "$BASTION" ]]; then cmd='test "$(hostname)" = lab-'"$h"
    else cmd='docker info --format "{{.Name}}" | grep -qx lab-'"$h"' && docker-compose version --short >/dev/null'; fi
    [[ "$h" == "$BEHIND_BASTION" ]] && jump=(-J "root@$bast")
    labssh "${jump[@]}" "root@$(host_ip "$h")" "$cmd" &
    pids+=("$!:$h")
  done
  # the sudo user: in on its host, with passwordless sudo; refused everywhere else
  labssh "$SUDO_USER_NAME@$sudo_ip" 'sudo -n docker info --format "{{.Name}}" | grep -qx lab-'"$SUDO_HOST" &
  pids+=("$!:$SUDO_USER_NAME@$SUDO_HOST (sudo)")
  ( ! labssh "$SUDO_USER_NAME@$(host_ip n1)" true 2>/dev/null ) &
  pids+=("$!:$SUDO_USER_NAME@n1 (must be refused)")
  # the host behind the bastion: refused at once when reached directly
  ( ! timeout 3 ssh -F "$STATE/ssh/config" -o ConnectTimeout=2 "root@$b6" true 2>/dev/null ) &
  pids+=("$!:direct ssh to $BEHIND_BASTION (must be refused)")
  for p in "${pids[@]}"; do
    wait "${p%%:*}" || { say "self-check failed on ${p#*:}"; fail=1; }
  done
  [[ $fail == 0 ]] || die "self-check failed"
  for h in "${HOSTS[@]}"; do : >"$(hdir "$h")/sshd.log"; done
}

# ---------------------------------------------------------------- up -----------------
run_bg() { # run_bg NAME FUNC ARGS... : background job with its own log, collected by wait_bg
  local name="$1"; shift
  ( local t=$SECONDS; "$@"; echo "[$name done in $((SECONDS - t)) s]" >&2 ) >"$STATE/logs/$name.log" 2>&1 &
  BG_PIDS+=("$!:$name")
}
wait_bg() {
  local p fail=0
  for p in "${BG_PIDS[@]}"; do
    if ! wait "${p%%:*}"; then
      say "step ${p#*:} failed:"; sed 's/^/    /' "$STATE/logs/${p#*:}.log" >&2; fail=1
    fi
  done
  BG_PIDS=()
  [[ $fail == 0 ]] || die "lab up failed (logs in $STATE/logs)"
  if [[ -n "${LAB_VERBOSE:-}" ]]; then cat "$STATE"/logs/*.log >&2; fi
  [[ $fail == 0 ]] || die "lab up failed (logs in $STATE/logs)"
}

cmd_up() {
  local t0=$SECONDS h
  [[ $EUID == 0 ]] || die "run as root"
  cmd_install
  say "tearing down leftovers"
  teardown
  ensure_once
  ensure_sudo_user
  rm -rf "$STATE/logs"; install -d -m 0755 "$STATE/logs"
  install -d /var/lib/docker /etc/docker /var/log/nginx /var/lib/nginx

  # the bridge and the forwarding rule (the root dockerd sets FORWARD to DROP)
  ip link add "$BR" type bridge
  ip addr add "$GW/24" dev "$BR"
  ip link set "$BR" up
  iptables -w -C FORWARD -i "$BR" -o "$BR" -j ACCEPT 2>/dev/null || iptables -w -I FORWARD -i "$BR" -o "$BR" -j ACCEPT
  sysctl -qw net.ipv4.ip_forward=1

  BG_PIDS=()
  say "starting MariaDB, Redis, registry, operator dockerd and ${#HOSTS[@]} hosts"
  run_bg mariadb start_mariadb
  run_bg redis start_redis
  run_bg registry start_registry
  run_bg opdocker start_opdocker
  run_bg bundle build_bundle
  for h in "${HOSTS[@]}"; do run_bg "host-$h" start_host "$h"; done
  wait_bg
  # the root dockerd may have re-ordered FORWARD; make sure our rule is still there
  iptables -w -C FORWARD -i "$BR" -o "$BR" -j ACCEPT 2>/dev/null || iptables -w -I FORWARD -i "$BR" -o "$BR" -j ACCEPT

  run_bg image build_image
  for h in "${NODES[@]}"; do run_bg "docker-$h" wait_host_docker "$h"; done
  wait_bg
  write_outputs
  self_check
  say "lab up in $((SECONDS - t0)) s; environment: $STATE/lab.env"
}

# ---------------------------------------------------------------- status -------------
host_status() { # host_status HOST: prints its status line; fails when something is down
  local h="$1" d hp p line ok=0
  d="$(hdir "$h")"
  hp="$(holder_pid "$h" 2>/dev/null || true)"
  if [[ -z "$hp" ]]; then printf '%-11s %-12s %s\n' "lab-$h" "$(host_ip "$h")" DOWN; return 1; fi
  line="holder $hp"
  if link_is_up "$h"; then line+=", link up"; else line+=", link DOWN (vl-$h)"; ok=1; fi
  p="$(pidfile_pid "$d/run/sshd.pid" 2>/dev/null || true)"
  if pid_alive "$p"; then line+=", sshd $p"; else line+=", sshd DOWN"; ok=1; fi
  if [[ "$h" == "$BEHIND_BASTION" ]]; then
    if nsenter --net="/run/netns/lab-$h" -- iptables -w -C INPUT -p tcp --dport 22 ! -s "$(host_ip "$BASTION")" \
      -j REJECT --reject-with tcp-reset 2>/dev/null; then line+=" (only via $BASTION)"; else line+=" (firewall rule MISSING)"; ok=1; fi
  fi
  if [[ "$h" == "$SUDO_HOST" ]]; then line+=" (+$SUDO_USER_NAME)"; fi
  if [[ "$h" == lb ]]; then
    p="$(pidfile_pid "$d/run/nginx.pid" 2>/dev/null || true)"
    if pid_alive "$p"; then line+=", nginx $p"; else line+=", nginx DOWN"; ok=1; fi
  elif [[ "$h" != "$BASTION" ]]; then
    p="$(pidfile_pid "$d/run/docker.pid" 2>/dev/null || true)"
    if pid_alive "$p"; then
      line+=", dockerd $p, containers $(DOCKER_HOST="unix://$d/run/docker.sock" DOCKER_CONFIG="$STATE/op/docker-config" docker ps -q 2>/dev/null | wc -l)"
    else line+=", dockerd DOWN"; ok=1; fi
  fi
  printf '%-11s %-12s %s\n' "lab-$h" "$(host_ip "$h")" "$line"
  return $ok
}

cmd_status() {
  local ok=1 h p line tmp
  alive_word() { if pid_alive "${1:-}"; then echo "up, pid $1"; else echo DOWN; fi; }
  # the hosts are checked in parallel (a second saved; resetLab runs this before every suite)
  tmp="$(mktemp -d)"
  for h in "${HOSTS[@]}"; do
    ( r=0; host_status "$h" >"$tmp/$h" 2>/dev/null || r=1; echo "$r" >"$tmp/$h.rc" ) &
  done
  printf '%-11s %-12s %s\n' COMPONENT ADDRESS STATE
  # shellcheck disable=SC1091
  if [[ -r "$STATE/secrets.env" ]]; then . "$STATE/secrets.env"; fi
  if ip link show "$BR" >/dev/null 2>&1; then line=up; else line=DOWN; ok=0; fi
  printf '%-11s %-12s %s\n' bridge "$GW/24" "$line ($BR)"
  p="$(pidfile_pid "$STATE/mysql/mysqld.pid" 2>/dev/null || true)"
  pid_alive "$p" || ok=0
  printf '%-11s %-12s %s\n' mariadb "$GW:3306" "$(alive_word "$p")"
  p="$(redis_pids | head -1)"
  # (without the password, i.e. not root, a live process is all we can check)
  if [[ -n "$p" ]] && { [[ -z "${REDIS_PASSWORD:-}" ]] || redis_ping; }; then line="up, pid $p"; elif [[ -n "$p" ]]; then line="pid $p, not answering PING"; ok=0; else line=DOWN; ok=0; fi
  printf '%-11s %-12s %s\n' redis "$GW:6379" "$line"
  if curl -fsS -o /dev/null "http://$REGISTRY/v2/" 2>/dev/null; then
    line="up, tags: $(curl -fsS "http://$REGISTRY/v2/calciumion/new-api/tags/list" 2>/dev/null | tr -d '\n' || true)"
  else line=DOWN; ok=0; fi
  printf '%-11s %-12s %s\n' registry "$REGISTRY" "$line"
  p="$(pidfile_pid "$STATE/op/dockerd.pid" 2>/dev/null || true)"
  pid_alive "$p" || ok=0
  printf '%-11s %-12s %s\n' opdocker "$OP_SOCK" "$(alive_word "$p")"
  wait
  for h in "${HOSTS[@]}"; do
    cat "$tmp/$h"
    [[ "$(cat "$tmp/$h.rc" 2>/dev/null)" == 0 ]] || ok=0
  done
  rm -rf "$tmp"
  if getent passwd "$SUDO_USER_NAME" >/dev/null && [[ -f "$SUDOERS_FILE" ]]; then
    line="up, $SUDO_USER_NAME@$(host_ip "$SUDO_HOST"), $SUDOERS_FILE"
  else line="DOWN (user or $SUDOERS_FILE missing)"; ok=0; fi
  printf '%-11s %-12s %s\n' sudo-user "$(host_ip "$SUDO_HOST")" "$line"
  [[ -s "$STATE/lab.env" ]] && echo "env: $STATE/lab.env"
  [[ $ok == 1 ]]
}

cmd_exec() {
  [[ $# -ge 1 ]] || die "usage: lab.sh exec HOST [--] CMD..."
  local h hp
  h="$(norm_host "$1")" || die "unknown host '$1' (one of: ${HOSTS[*]})"
  shift
  [[ "${1:-}" == -- ]] && shift
  hp="$(holder_pid "$h")" || die "host $h is not up (run lab.sh up)"
  [[ $# -gt 0 ]] || set -- /bin/bash
  exec env -u DOCKER_HOST -u DOCKER_CONTEXT -u DOCKER_CONFIG HOME=/root \
    nsenter -t "$hp" -n -m -u --wd=/ -- "$@"
}

# ---------------------------------------------------------------- faults -------------
# Fast, bounded and safe to call twice; no lock, so they never wait on a running up or down.
link_is_up() { ip -o link show "vl-$1" 2>/dev/null | grep -q '<[^>]*\bUP\b[^>]*>'; }
cmd_link() {
  [[ $EUID == 0 ]] || die "run as root"
  [[ $# == 2 && ( "$2" == up || "$2" == down ) ]] || die "usage: lab.sh link HOST|all down|up"
  local hs=() h
  if [[ "$1" == all ]]; then hs=("${HOSTS[@]}")
  else h="$(norm_host "$1")" || die "unknown host '$1' (one of: ${HOSTS[*]}, all)"; hs=("$h"); fi
  for h in "${hs[@]}"; do
    ip link show "vl-$h" >/dev/null 2>&1 || die "host $h has no link vl-$h (run lab.sh up)"
    ip link set "vl-$h" "$2"
  done
}
redis_env() {
  [[ $EUID == 0 ]] || die "run as root"
  [[ -s "$STATE/secrets.env" && -s "$STATE/redis/redis.conf" ]] || die "the lab's Redis was never set up (run lab.sh up)"
  # shellcheck disable=SC1091
  . "$STATE/secrets.env"
}
cmd_redis_stop() { # SIGKILL, as in a crash; with save '' every key is gone
  local pids
  redis_env
  pids="$(redis_pids)"
  # shellcheck disable=SC2086
  [[ -z "$pids" ]] || kill_wait KILL 5 $pids || die "Redis (pid $pids) did not stop"
  rm -f "$STATE/redis/redis.pid"
}
cmd_redis_start() {
  redis_env
  ip link show "$BR" >/dev/null 2>&1 || die "the lab is not up (no $BR): run lab.sh up"
  redis_ping && return 0
  launch_redis
}
cmd_redis_restart() {
  local secs="${1:-1}"
  [[ "$secs" =~ ^[0-9]+(\.[0-9]+)?$ ]] || die "usage: lab.sh redis-restart [SECONDS]"
  cmd_redis_stop
  sleep "$secs"
  cmd_redis_start
}

usage() { awk 'NR > 1 && /^#/ { sub(/^# ?/, ""); print; next } NR > 1 { exit }' "${BASH_SOURCE[0]}"; }

# up and down never run at once: re-run under flock(1), which holds the lock itself (-o keeps the
# lock's descriptor away from this script, so the daemons it starts do not inherit the lock)
if [[ "${1:-}" == up || "${1:-}" == down ]] && [[ -z "${NEWAPI_LAB_LOCKED:-}" && $EUID == 0 ]]; then
  install -d -m 0755 "$STATE"
  NEWAPI_LAB_LOCKED=1 exec flock -o "$STATE/.lock" "$BASH" "${BASH_SOURCE[0]}" "$@"
fi
unset NEWAPI_LAB_LOCKED

case "${1:-}" in
  up) cmd_up ;;
  down) [[ $EUID == 0 ]] || die "run as root"; cmd_down ;;
  status) cmd_status ;;
  exec) shift; cmd_exec "$@" ;;
  install) cmd_install ;;
  link) shift; cmd_link "$@" ;;
  redis-stop) cmd_redis_stop ;;
  redis-start) cmd_redis_start ;;
  redis-restart) shift; cmd_redis_restart "$@" ;;
  env) echo "$STATE/lab.env"; [[ -s "$STATE/lab.env" ]] && grep -o '^[A-Z_0-9]*' "$STATE/lab.env" | sed 's/^/  /' ;;
  -h | --help | help) usage ;;
  *) usage >&2; exit 2 ;;
esac
