#!/usr/bin/env bash
# newapi-cluster end-to-end lab: two balancers, a jump host and six servers on one machine.
#
#   lab.sh install          apt-get install the Debian packages the lab needs (only if missing)
#   lab.sh up               tear down leftovers, then build the whole lab (idempotent)
#   lab.sh down             tear everything down (keeps secrets, keys, TLS files, registry, image cache)
#   lab.sh status           print what is up (exit 0 when everything is up, 1 otherwise)
#   lab.sh exec HOST -- CMD run CMD inside a lab host (network, mount and UTS namespace)
#   lab.sh env              print the path of lab.env (and its keys)
#   lab.sh vip-holder       print which balancer holds the vip 10.77.0.100: lb, lb2 or none
#                           (both: printed with exit 1, a split brain)
#   lab.sh reset-balancers  lb and lb2 back to fresh (keepalived stopped, vip dropped, nginx files
#                           and firewall rules of newapi-cluster removed, nginx stopped on lb2 and
#                           reloaded on lb); the ACME DNS answers back to lb. Used by resetLab().
#   lab.sh vrrp-check       prove VRRP works here: keepalived on lb and lb2 elect a holder of the
#                           vip, it moves when the holder's link goes down, and back; then all undone
# Faults (fast, bounded, safe to repeat; they never wait on a running up/down):
#   lab.sh link HOST|all down|up   take a host's veth (vl-HOST) down or bring it back up
#   lab.sh redis-stop              kill the lab Redis (save '': every key is lost, as in a crash)
#   lab.sh redis-start             start it again with the same config; returns when it answers PING
#   lab.sh redis-restart [SECONDS] redis-stop, wait SECONDS (default 1), redis-start
#
# Hosts: lb 10.77.0.10 (nginx running), lb2 10.77.0.8 (nginx and keepalived installed, NOT
# started), n1..n6 10.77.0.11-16 (dockerd), bastion 10.77.0.9 (sshd only), each its own netns +
# mount ns with its own sshd. The vip 10.77.0.100 is reserved for keepalived on lb/lb2 (the tool
# under test starts it; up does not). n6 accepts SSH only from the bastion; n5 also lets the sudo
# user newapi-deploy in. Shared services on the bridge address 10.77.0.1: MariaDB :3306, Redis
# :6379, registry :5000, pebble (ACME) :14000/:15000 with pebble-challtestsrv (DNS :8053,
# management :8055), plus the operator's dockerd on /var/run/docker.sock.
# Everything generated lives under /var/lib/newapi-lab. See README.md beside this file.
set -euo pipefail

STATE=/var/lib/newapi-lab
LAB_DIR="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
export PATH="/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin${PATH:+:$PATH}"

BR=br-lab
GW=10.77.0.1
HOSTS=(bastion lb lb2 n1 n2 n3 n4 n5 n6)
NODES=(n1 n2 n3 n4 n5 n6)
BALANCERS=(lb lb2)        # lb runs nginx from the start; lb2 has it installed, not started
VIP=10.77.0.100           # the floating address reserved for tests (keepalived on lb/lb2)
ACME_DEFAULT_IP=10.77.0.10     # pebble-challtestsrv answers every name with this (lb) ...
ACME_DIR="$STATE/acme"         # ... pebble's own CA and listener certificate, config, logs
TLS_DIR="$STATE/tls"           # test certificates for "TLS from files" (generated once, kept)
TLS_NAME=api.lab.test
TLS_OTHER_NAME=other.lab.test
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
    lb2) echo 10.77.0.8 ;;
    bastion) echo 10.77.0.9 ;;
    n[1-9]) echo "10.77.0.1${1#n}" ;;
    *) return 1 ;;
  esac
}
is_balancer() { [[ "$1" == lb || "$1" == lb2 ]]; }
norm_host() { # lb | lab-lb | 10.77.0.10 | lb2 | n1 | lab-n1 | 10.77.0.11 | bastion -> lb / lb2 / n1 / bastion
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
    for f in "$STATE/mysql/mysqld.pid" "$STATE/redis/redis.pid" "$STATE/registry/registry.pid" "$STATE/op/dockerd.pid" \
      "$ACME_DIR/pebble.pid" "$ACME_DIR/challtestsrv.pid"; do
      p="$(pidfile_pid "$f" 2>/dev/null || true)"
      if [[ -n "$p" ]] && pid_alive "$p"; then
        case "$(readlink "/proc/$p/exe" 2>/dev/null)" in
          */mariadbd | */redis-server | */docker-registry | */dockerd | */pebble | */pebble-challtestsrv) echo "$p" ;;
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
# pids named COMM (exactly) whose network namespace is host $1's. There is no pid namespace in
# the lab: pkill inside a host would hit every host, so processes are told apart by their netns.
# (-ef compares device and inode: one nsfs inode per namespace; no fork per pid)
netns_pids() {
  local p
  [[ -e "/run/netns/lab-$1" ]] || return 0
  for p in $(pgrep -x "$2" 2>/dev/null || true); do
    [[ "/proc/$p/ns/net" -ef "/run/netns/lab-$1" ]] && echo "$p"
  done
  return 0
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
  util-linux curl ca-certificates sudo keepalived pebble openssl postgresql)
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
  # 0. the scale sim (test/lab/sim.sh) routes through br-lab: it goes first when a run left it up
  if [[ -d /var/lib/newapi-sim || -n "$(ip netns list 2>/dev/null | grep -m1 '^sim-')" ]]; then
    bash "$(dirname "${BASH_SOURCE[0]}")/sim.sh" down >&2 || say "the scale sim did not tear down cleanly"
  fi
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
  # the mount point up made for the hosts' own /var/lib/newapi-cluster (kept if anything is in it)
  rmdir /var/lib/newapi-cluster 2>/dev/null || true
  rm -f "$STATE"/hosts/*/holder.pid "$STATE"/op/dockerd.pid "$STATE"/redis/redis.pid "$STATE"/registry/registry.pid \
    "$ACME_DIR"/pebble.pid "$ACME_DIR"/challtestsrv.pid 2>/dev/null || true

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
  ensure_acme_tls
  ensure_test_tls
}

# --- certificates (openssl; RSA 2048 everywhere, so `openssl rsa -modulus` checks work too) ---
# tls_cnf FILE CN SAN: one config for the CA, the leaves and `openssl ca` (the expired leaf)
tls_cnf() {
  cat >"$1" <<EOF
[req]
distinguished_name = dn
prompt = no
[dn]
CN = $2
[ca_ext]
basicConstraints = critical, CA:TRUE
keyUsage = critical, keyCertSign, cRLSign
subjectKeyIdentifier = hash
[leaf_ext]
basicConstraints = critical, CA:FALSE
keyUsage = critical, digitalSignature, keyEncipherment
extendedKeyUsage = serverAuth
subjectKeyIdentifier = hash
authorityKeyIdentifier = keyid
subjectAltName = ${3:-DNS:unused.invalid}
[ca]
default_ca = lab_ca
[lab_ca]
database = $(dirname "$1")/index.txt
new_certs_dir = $(dirname "$1")
serial = $(dirname "$1")/serial
default_md = sha256
policy = lab_policy
unique_subject = no
copy_extensions = none
[lab_policy]
commonName = supplied
EOF
}
tls_ca() { # tls_ca DIR CN: DIR/ca.pem + DIR/ca.key, 10 years
  local w; w="$(mktemp -d)"
  tls_cnf "$w/cnf" "$2"
  openssl req -x509 -new -newkey rsa:2048 -nodes -sha256 -days 3650 -config "$w/cnf" -extensions ca_ext \
    -keyout "$1/ca.key.new" -out "$1/ca.pem.new" 2>"$w/err" || { cat "$w/err" >&2; rm -rf "$w"; die "openssl: CA $2"; }
  chmod 0600 "$1/ca.key.new"; chmod 0644 "$1/ca.pem.new"
  mv "$1/ca.key.new" "$1/ca.key"; mv "$1/ca.pem.new" "$1/ca.pem"
  rm -rf "$w"
}
# tls_leaf CADIR CERT KEY CN SAN DAYS|expired: a server certificate signed by CADIR's CA (no
# intermediate); "expired" makes one valid only in 2020 (openssl 3.0's x509 cannot backdate; ca can)
tls_leaf() {
  local ca="$1" cert="$2" key="$3" cn="$4" san="$5" days="$6" w
  w="$(mktemp -d)"
  tls_cnf "$w/cnf" "$cn" "$san"
  openssl req -new -newkey rsa:2048 -nodes -config "$w/cnf" -keyout "$w/key" -out "$w/csr" 2>"$w/err" ||
    { cat "$w/err" >&2; rm -rf "$w"; die "openssl: key for $cn"; }
  if [[ "$days" == expired ]]; then
    : >"$w/index.txt"; openssl rand -hex 16 >"$w/serial"
    openssl ca -batch -notext -config "$w/cnf" -cert "$ca/ca.pem" -keyfile "$ca/ca.key" -extensions leaf_ext \
      -startdate 20200101000000Z -enddate 20201231000000Z -in "$w/csr" -out "$w/crt" 2>"$w/err" ||
      { cat "$w/err" >&2; rm -rf "$w"; die "openssl: expired certificate for $cn"; }
  else
    openssl x509 -req -sha256 -days "$days" -in "$w/csr" -CA "$ca/ca.pem" -CAkey "$ca/ca.key" \
      -set_serial "0x$(openssl rand -hex 16)" -extfile "$w/cnf" -extensions leaf_ext -out "$w/crt" 2>"$w/err" ||
      { cat "$w/err" >&2; rm -rf "$w"; die "openssl: certificate for $cn"; }
  fi
  install -m 0600 "$w/key" "$key"; install -m 0644 "$w/crt" "$cert"
  rm -rf "$w"
}
# a set is made again only when its recipe changed, a file is missing, or it expires within 30 days
tls_fresh() { # tls_fresh DIR RECIPE FILE... ; the certificates given must be valid for 30 more days
  local d="$1" recipe="$2" f; shift 2
  [[ -s "$d/recipe" && "$(cat "$d/recipe")" == "$recipe" ]] || return 1
  for f in "$@"; do
    [[ -s "$d/$f" ]] || return 1
    [[ "$f" == expired-* ]] || ! grep -q 'BEGIN CERTIFICATE' "$d/$f" ||
      openssl x509 -checkend 2592000 -noout -in "$d/$f" >/dev/null 2>&1 || return 1
  done
}
# pebble's own HTTPS listener (directory :14000, management :15000): a CA the ACME client trusts
ensure_acme_tls() {
  local a="$ACME_DIR" recipe="1 IP:$GW"
  install -d -m 0755 "$a"
  tls_fresh "$a" "$recipe" ca.pem ca.key listener.pem listener.key && return 0
  say "generating pebble's listener CA and certificate (SAN IP:$GW)"
  tls_ca "$a" "newapi-cluster lab: pebble listener CA"
  tls_leaf "$a" "$a/listener.pem" "$a/listener.key" "pebble.lab.test" "IP:$GW" 3650
  echo "$recipe" >"$a/recipe"
}
# TLS from files: a CA, a certificate for the balancer names (825 days), an expired one with the
# same names, and a valid one for another name
ensure_test_tls() {
  local t="$TLS_DIR" san recipe
  san="DNS:$TLS_NAME, IP:$(host_ip lb), IP:$(host_ip lb2), IP:$VIP"
  recipe="1 $san / $TLS_OTHER_NAME"
  install -d -m 0755 "$t"
  tls_fresh "$t" "$recipe" ca.pem ca.key cert.pem key.pem expired-cert.pem expired-key.pem other-cert.pem other-key.pem && return 0
  say "generating the test TLS files ($san)"
  tls_ca "$t" "newapi-cluster lab: test CA"
  tls_leaf "$t" "$t/cert.pem" "$t/key.pem" "$TLS_NAME" "$san" 825
  tls_leaf "$t" "$t/expired-cert.pem" "$t/expired-key.pem" "$TLS_NAME" "$san" expired
  tls_leaf "$t" "$t/other-cert.pem" "$t/other-key.pem" "$TLS_OTHER_NAME" "DNS:$TLS_OTHER_NAME" 825
  echo "$recipe" >"$t/recipe"
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

# ACME: pebble (directory https://GW:14000/dir, management https://GW:15000) validates HTTP-01
# on port 80 of whatever pebble-challtestsrv's DNS (GW:8053) answers: every name -> lb by
# default; POST {"ip":…} to http://GW:8055/set-default-ipv4 to point names at lb2 or the vip.
# No AAAA answers (-defaultIPv6 ""), so validation never tries ::1 in the root namespace first.
acme_curl() { curl -fsS --max-time "${ACME_CURL_TIMEOUT:-2}" --cacert "$ACME_DIR/ca.pem" "$@"; }
challtestsrv_set_default() { # challtestsrv_set_default IP
  curl -fsS --max-time 5 -o /dev/null -X POST -d "{\"ip\":\"$1\"}" "http://$GW:8055/set-default-ipv4"
}
start_acme() {
  local a="$ACME_DIR" i me
  cat >"$a/pebble.json" <<EOF
{
  "pebble": {
    "listenAddress": "$GW:14000",
    "managementListenAddress": "$GW:15000",
    "certificate": "$a/listener.pem",
    "privateKey": "$a/listener.key",
    "httpPort": 80,
    "tlsPort": 443,
    "ocspResponderURL": "",
    "externalAccountBindingRequired": false
  }
}
EOF
  (cd "$a" && exec env "$MARK=svc:challtestsrv" setsid pebble-challtestsrv -defaultIPv4 "$ACME_DEFAULT_IP" \
    -defaultIPv6 "" -dns01 "$GW:8053" -http01 "" -https01 "" -tlsalpn01 "" -management "$GW:8055" \
    </dev/null >"$a/challtestsrv.log" 2>&1) &
  me=$!; echo "$me" >"$a/challtestsrv.pid"
  for ((i = 0; i < 100; i++)); do
    pid_alive "$me" || break
    challtestsrv_set_default "$ACME_DEFAULT_IP" 2>/dev/null && break
    sleep 0.1
  done
  challtestsrv_set_default "$ACME_DEFAULT_IP" || { tail -20 "$a/challtestsrv.log" >&2; die "pebble-challtestsrv did not start"; }
  (cd "$a" && exec env "$MARK=svc:pebble" PEBBLE_VA_NOSLEEP=1 setsid pebble -config "$a/pebble.json" \
    -dnsserver "$GW:8053" </dev/null >"$a/pebble.log" 2>&1) &
  me=$!; echo "$me" >"$a/pebble.pid"
  for ((i = 0; i < 100; i++)); do
    pid_alive "$me" || break
    acme_curl -o /dev/null "https://$GW:14000/dir" 2>/dev/null && break
    sleep 0.1
  done
  acme_curl -o /dev/null "https://$GW:14000/dir" && acme_curl -o /dev/null "https://$GW:15000/roots/0" ||
    { tail -20 "$a/pebble.log" >&2; die "pebble did not start"; }
}

# ---------------------------------------------------------------- lab hosts ----------
write_sshd_config() {
  local h="$1" d ip users=root listen
  d="$(hdir "$h")"; ip="$(host_ip "$h")"; listen="$ip"
  [[ "$h" == "$SUDO_HOST" ]] && users+=" $SUDO_USER_NAME"
  # a balancer's sshd answers on the vip too while it holds it (all of its own netns' addresses)
  if is_balancer "$h"; then listen=0.0.0.0; fi
  cat >"$d/sshd_config" <<EOF
# sshd of lab host $h ($ip), generated by lab.sh
Port 22
ListenAddress $listen
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
    "$d/log-nginx" "$d/lib-nginx" "$d/etc-keepalived" "$d/lib-newapi-cluster" "$d/holder.pid" "$d/nginx.out"
  : >"$d/sshd.log"
  install -d -m 0755 "$d/run" "$d/run/sshd" "$d/run/lock" "$d/opt" "$d/etc-docker" "$d/log-nginx" "$d/lib-nginx" \
    "$d/etc-keepalived" "$d/lib-newapi-cluster"
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
      mount --bind '$d/etc-keepalived' /etc/keepalived
      mount --bind '$d/lib-newapi-cluster' /var/lib/newapi-cluster
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
  elif [[ "$h" == lb2 ]]; then
    : # nginx and keepalived installed (the machine's binaries), neither started: the tool must
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
  # the vip: either balancer may answer on it, so both keys (ssh accepts a host when any line matches)
  for h in "${BALANCERS[@]}"; do
    echo "$VIP $(cut -d' ' -f1,2 "$(hdir "$h")/ssh/ssh_host_ed25519_key.pub")" >>"$kh.new"
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

  local nodes_csv="" lbs_csv="" sql_dsn sql_dsn_l1 redis_url
  for h in "${NODES[@]}"; do nodes_csv+="${nodes_csv:+,}$(host_ip "$h")"; done
  for h in "${BALANCERS[@]}"; do lbs_csv+="${lbs_csv:+,}$(host_ip "$h")"; done
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
    "LAB_LB2_HOST=$(host_ip lb2)"
    "LAB_BALANCER_HOSTS=$lbs_csv"
    "LAB_VIP=$VIP"
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
    "LAB_ACME_DIRECTORY=https://$GW:14000/dir"
    "LAB_ACME_CA_FILE=$ACME_DIR/ca.pem"
    "LAB_ACME_ROOTS_URL=https://$GW:15000/roots/0"
    "LAB_CHALLTESTSRV=http://$GW:8055"
    "LAB_ACME_DEFAULT_IP=$ACME_DEFAULT_IP"
    "LAB_TLS_NAME=$TLS_NAME"
    "LAB_TLS_CA_FILE=$TLS_DIR/ca.pem"
    "LAB_TLS_CERT_FILE=$TLS_DIR/cert.pem"
    "LAB_TLS_KEY_FILE=$TLS_DIR/key.pem"
    "LAB_TLS_EXPIRED_CERT_FILE=$TLS_DIR/expired-cert.pem"
    "LAB_TLS_EXPIRED_KEY_FILE=$TLS_DIR/expired-key.pem"
    "LAB_TLS_OTHER_NAME=$TLS_OTHER_NAME"
    "LAB_TLS_OTHER_CERT_FILE=$TLS_DIR/other-cert.pem"
    "LAB_TLS_OTHER_KEY_FILE=$TLS_DIR/other-key.pem"
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
  # both balancers: their own empty /etc/keepalived, their own /var/lib/newapi-cluster, keepalived
  # installed and not running, the vip on neither; lb2: nginx installed, config valid, not running
  local lbcmd='test "$(hostname)" = lab-$H && nginx -t 2>&1 | grep -q "test is successful" && command -v keepalived >/dev/null && [ -z "$(ls -A /etc/keepalived)" ] && [ -d /var/lib/newapi-cluster ] && [ -z "$(ls -A /var/lib/newapi-cluster)" ] && ! [ -s /run/keepalived.pid ] && ! ip -o addr show | grep -q " inet '"$VIP"'/"'
  for h in "${HOSTS[@]}"; do
    jump=()
    if [[ "$h" == lb ]]; then cmd="${lbcmd//\$H/$h}"' && kill -0 "$(cat /run/nginx.pid)"'
    # (nginx -t leaves an empty /run/nginx.pid behind: removed, so lb2 stays as up made it)
    elif [[ "$h" == lb2 ]]; then cmd="${lbcmd//\$H/$h}"' && ! [ -s /run/nginx.pid ] && rm -f /run/nginx.pid'
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
  # ACME: the directory over HTTPS with the lab's CA file; the issued chain's root; the DNS answers
  ( acme_curl "https://$GW:14000/dir" | grep -q newAccount && acme_curl -o /dev/null "https://$GW:15000/roots/0" ) &
  pids+=("$!:pebble (https://$GW:14000/dir with --cacert $ACME_DIR/ca.pem)")
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
  install -d /var/lib/docker /etc/docker /var/log/nginx /var/lib/nginx /etc/keepalived /var/lib/newapi-cluster

  # the bridge and the forwarding rule (the root dockerd sets FORWARD to DROP)
  ip link add "$BR" type bridge
  ip addr add "$GW/24" dev "$BR"
  ip link set "$BR" up
  iptables -w -C FORWARD -i "$BR" -o "$BR" -j ACCEPT 2>/dev/null || iptables -w -I FORWARD -i "$BR" -o "$BR" -j ACCEPT
  sysctl -qw net.ipv4.ip_forward=1

  BG_PIDS=()
  say "starting MariaDB, Redis, registry, pebble, operator dockerd and ${#HOSTS[@]} hosts"
  run_bg mariadb start_mariadb
  run_bg redis start_redis
  run_bg registry start_registry
  run_bg opdocker start_opdocker
  run_bg bundle build_bundle
  run_bg acme start_acme
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
  if is_balancer "$h"; then
    p="$(pidfile_pid "$d/run/nginx.pid" 2>/dev/null || true)"
    if pid_alive "$p"; then line+=", nginx $p"
    elif [[ "$h" == lb2 ]]; then line+=", nginx installed, not started"
    else line+=", nginx DOWN"; ok=1; fi
    # keepalived is the tool's to start: only shown, never a failure (its default pid file; a
    # keepalived started with another -p is not seen here, but reset-balancers finds it by netns)
    p="$(pidfile_pid "$d/run/keepalived.pid" 2>/dev/null || true)"
    if pid_alive "$p" && [[ "/proc/$p/exe" -ef /usr/sbin/keepalived ]]; then line+=", keepalived $p"; else line+=", keepalived not running"; fi
  elif [[ "$h" != "$BASTION" ]]; then
    p="$(pidfile_pid "$d/run/docker.pid" 2>/dev/null || true)"
    if pid_alive "$p"; then
      line+=", dockerd $p, containers $(DOCKER_HOST="unix://$d/run/docker.sock" DOCKER_CONFIG="$STATE/op/docker-config" docker ps -q 2>/dev/null | wc -l)"
    else line+=", dockerd DOWN"; ok=1; fi
  fi
  printf '%-11s %-12s %s\n' "lab-$h" "$(host_ip "$h")" "$line"
  return $ok
}

acme_status() { # the pebble and challtestsrv lines; fails when either is down
  local p line ok=0
  p="$(pidfile_pid "$ACME_DIR/pebble.pid" 2>/dev/null || true)"
  if pid_alive "$p" && acme_curl -o /dev/null "https://$GW:14000/dir" 2>/dev/null; then line="up, pid $p, https://$GW:14000/dir"
  elif pid_alive "$p"; then line="pid $p, https://$GW:14000/dir not answering"; ok=1; else line=DOWN; ok=1; fi
  printf '%-11s %-12s %s\n' pebble "$GW:14000" "$line"
  p="$(pidfile_pid "$ACME_DIR/challtestsrv.pid" 2>/dev/null || true)"
  if pid_alive "$p" && curl -s --max-time 2 -o /dev/null "http://$GW:8055/" 2>/dev/null; then line="up, pid $p, DNS $GW:8053"
  elif pid_alive "$p"; then line="pid $p, management not answering"; ok=1; else line=DOWN; ok=1; fi
  printf '%-11s %-12s %s\n' challtestsrv "$GW:8055" "$line"
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
  ( r=0; acme_status >"$tmp/acme" 2>/dev/null || r=1; echo "$r" >"$tmp/acme.rc" ) &
  # the vip belongs to the tool under test: where it is is shown, never a failure
  ( if [[ $EUID == 0 ]]; then line="held by $(vip_holder 2>/dev/null || true)"; else line="? (root can tell)"; fi
    printf '%-11s %-12s %s\n' vip "$VIP" "$line" >"$tmp/vip" ) &
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
  for h in acme "${HOSTS[@]}"; do
    cat "$tmp/$h"
    [[ "$(cat "$tmp/$h.rc" 2>/dev/null)" == 0 ]] || ok=0
  done
  cat "$tmp/vip"
  rm -rf "$tmp"
  # (presence only: up makes them again when they expire within 30 days)
  line="present ($TLS_NAME, $TLS_OTHER_NAME, expired)"
  for p in ca.pem cert.pem key.pem expired-cert.pem expired-key.pem other-cert.pem other-key.pem; do
    [[ -s "$TLS_DIR/$p" ]] || { line="MISSING $p (run lab.sh up)"; ok=0; }
  done
  printf '%-11s %-12s %s\n' tls-files "$TLS_DIR" "$line"
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

# ---------------------------------------------------------------- balancers, vip ----
vip_holder() { # prints lb, lb2 or none; prints both and fails on a split brain
  local h held=()
  for h in "${BALANCERS[@]}"; do
    [[ -n "$(ip -n "lab-$h" -o -4 addr show to "$VIP/32" 2>/dev/null)" ]] && held+=("$h")
  done
  case ${#held[@]} in
    0) echo none ;;
    1) echo "${held[0]}" ;;
    *) echo both; return 1 ;;
  esac
}
cmd_vip_holder() {
  [[ $EUID == 0 ]] || die "run as root"
  local h
  h="$(vip_holder)" || { echo both; die "$VIP is on both lb and lb2 (split brain)"; }
  echo "$h"
}
vip_drop() { # vip_drop HOST: the vip off every interface of the host
  local dev cidr
  while read -r _ dev _ cidr _; do
    ip -n "lab-$1" addr del "$cidr" dev "${dev%%@*}" 2>/dev/null || true
  done < <(ip -n "lab-$1" -o -4 addr show to "$VIP/32" 2>/dev/null)
}
stop_netns_procs() { # stop_netns_procs HOST COMM: every COMM in the host's netns, TERM (3 s) then KILL
  local pids
  pids="$(netns_pids "$1" "$2")"
  [[ -n "$pids" ]] || return 0
  # shellcheck disable=SC2086
  kill_wait TERM 3 $pids || kill_wait KILL 2 $pids || { say "$2 on $1 (pids $pids) did not stop"; return 1; }
}
ipt_clean() { # ipt_clean HOST: drop every iptables/ip6tables rule whose comment starts with newapi-cluster
  local t dump
  for t in iptables ip6tables; do
    dump="$(nsenter --net="/run/netns/lab-$1" -- "$t-save" 2>/dev/null)" || continue
    [[ "$dump" == *"--comment newapi-cluster"* || "$dump" == *'--comment "newapi-cluster'* ]] || continue
    grep -vE -- '^-A .*--comment "?newapi-cluster' <<<"$dump" | nsenter --net="/run/netns/lab-$1" -- "$t-restore" -w 5 ||
      { say "$t-restore failed on $1"; return 1; }
  done
}
reset_balancer() { # one balancer back to what up made (see cmd_reset_balancers)
  local h="$1" d hp p left
  d="$(hdir "$h")"
  hp="$(holder_pid "$h")" || die "host $h is not up (run lab.sh up)"
  # keepalived first: on SIGTERM it drops the vip itself and tells the peer (priority 0)
  stop_netns_procs "$h" keepalived
  vip_drop "$h"
  # (forks are slow on a busy machine: rm and install only when there is something to do)
  shopt -s nullglob dotglob
  left=("$d"/run/keepalived*.pid "$d"/run/vrrp.pid "$d"/run/checkers.pid "$d"/run/bfd.pid "$d"/etc-nginx/newapi-cluster*
    "$d"/etc-keepalived/* "$d"/lib-newapi-cluster/* "$d"/etc-nginx/conf.d/*)
  shopt -u nullglob dotglob
  [[ ${#left[@]} == 0 ]] || rm -rf "${left[@]}"
  [[ -d "$d/etc-nginx/conf.d" ]] || install -d -m 0755 "$d/etc-nginx/conf.d"
  ipt_clean "$h"
  if [[ "$h" == lb2 ]]; then
    stop_netns_procs "$h" nginx
    rm -f "$d/run/nginx.pid"
  else
    p="$(pidfile_pid "$d/run/nginx.pid" 2>/dev/null || true)"
    if pid_alive "$p"; then
      in_host "$hp" nginx -s reload >"$d/nginx.out" 2>&1 || { cat "$d/nginx.out" >&2; die "host $h: nginx -s reload failed"; }
    else
      stop_netns_procs "$h" nginx
      in_host "$hp" env "$MARK=host:$h" setsid /usr/sbin/nginx </dev/null >"$d/nginx.out" 2>&1 ||
        { cat "$d/nginx.out" >&2; die "host $h: nginx did not start"; }
    fi
  fi
}
# lb and lb2 as up made them: keepalived stopped on both, /etc/keepalived and
# /var/lib/newapi-cluster emptied, the vip on none of their interfaces, iptables rules with a
# newapi-cluster… comment gone, conf.d and /etc/nginx/newapi-cluster* removed, nginx stopped on
# lb2 and reloaded (or started) on lb; pebble-challtestsrv answers every name with lb again.
cmd_reset_balancers() {
  [[ $EUID == 0 ]] || die "run as root"
  local h p pids=() fail=0
  for h in "${BALANCERS[@]}"; do
    reset_balancer "$h" &
    pids+=("$!:$h")
  done
  challtestsrv_set_default "$ACME_DEFAULT_IP" || { say "pebble-challtestsrv did not take the default address back"; fail=1; }
  for p in "${pids[@]}"; do wait "${p%%:*}" || { say "reset of ${p#*:} failed"; fail=1; }; done
  [[ $fail == 0 ]]
}

# VRRP between two network namespaces, proved once: keepalived on lb (priority 150) and lb2 (100),
# both state BACKUP, advert_int 1. Refuses to run while keepalived runs on either (a test is using
# them); undoes everything it did, even when interrupted.
VRRP_CHECK_PIDS=()
vrrp_check_cleanup() {
  local h
  if [[ ${#VRRP_CHECK_PIDS[@]} -gt 0 ]]; then kill_wait TERM 5 "${VRRP_CHECK_PIDS[@]}" || kill_wait KILL 2 "${VRRP_CHECK_PIDS[@]}" || true; fi
  for h in "${BALANCERS[@]}"; do
    ip link set "vl-$h" up 2>/dev/null || true
    rm -f "$(hdir "$h")/etc-keepalived/lab-vrrp-check.conf" "$(hdir "$h")"/run/lab-vrrp-check*.pid
    vip_drop "$h"
  done
}
now_ms() { echo $(($(date +%s%N) / 1000000)); }
wait_vip() { # wait_vip WANT SECONDS: prints the ms it took; fails past SECONDS
  local want="$1" t0 h
  t0="$(now_ms)"
  while (($(now_ms) - t0 < $2 * 1000)); do
    h="$(vip_holder 2>/dev/null || true)"
    [[ "$h" == "$want" ]] && { echo $(($(now_ms) - t0)); return 0; }
    sleep 0.05
  done
  say "the vip did not move to $want within $2 s (holder: $h)"; return 1
}
vip_answers() { # vip_answers HOST: the root namespace reaches HOST's sshd on the vip; prints the ms it took
  local t0 out mac want
  t0="$(now_ms)"
  want="$(ip -n "lab-$1" -o link show eth0 | grep -o 'link/ether [0-9a-f:]*' | cut -d' ' -f2)"
  while (($(now_ms) - t0 < 10000)); do
    out="$(ssh -F "$STATE/ssh/config" -o ConnectTimeout=1 "root@$VIP" hostname 2>/dev/null || true)"
    mac="$(ip neigh show "$VIP" dev "$BR" | grep -o 'lladdr [0-9a-f:]*' | cut -d' ' -f2)"
    if [[ "$out" == "lab-$1" && "$mac" == "$want" ]]; then echo $(($(now_ms) - t0)); return 0; fi
    sleep 0.1
  done
  say "ssh root@$VIP answered '${out:-nothing}' (ARP: ${mac:-none}), not lab-$1 ($want)"; return 1
}
cmd_vrrp_check() {
  [[ $EUID == 0 ]] || die "run as root"
  local h hp d prio ms
  for h in "${BALANCERS[@]}"; do
    holder_pid "$h" >/dev/null || die "host $h is not up (run lab.sh up)"
    link_is_up "$h" || die "the link of $h is down"
    [[ -z "$(netns_pids "$h" keepalived)" ]] || die "keepalived runs on $h already (a test is using it): not touching it"
  done
  [[ "$(vip_holder 2>/dev/null)" == none ]] || die "$VIP is held already"
  trap vrrp_check_cleanup EXIT
  install -d -m 0755 "$STATE/logs"
  for h in "${BALANCERS[@]}"; do
    d="$(hdir "$h")"; hp="$(holder_pid "$h")"
    if [[ "$h" == lb ]]; then prio=150; else prio=100; fi
    cat >"$d/etc-keepalived/lab-vrrp-check.conf" <<EOF
global_defs {
  router_id lab-$h-check
}
vrrp_instance LAB_CHECK {
  state BACKUP
  interface eth0
  virtual_router_id 77
  priority $prio
  advert_int 1
  virtual_ipaddress {
    $VIP/24 dev eth0
  }
}
EOF
    # nsenter itself (not the in_host function) so that $! is keepalived's own pid (nsenter, env
    # and setsid each exec the next)
    nsenter -t "$hp" -n -m -u --wd=/ -- env "$MARK=host:$h" setsid keepalived -f /etc/keepalived/lab-vrrp-check.conf \
      -p /run/lab-vrrp-check.pid -r /run/lab-vrrp-check-vrrp.pid -n -l -D </dev/null >"$STATE/logs/vrrp-check-$h.log" 2>&1 &
    VRRP_CHECK_PIDS+=("$!")
  done
  ms="$(wait_vip lb 15)" || die "no holder elected (logs: $STATE/logs/vrrp-check-*.log)"
  say "elected: lb holds $VIP after $ms ms (both started as BACKUP)"
  ms="$(vip_answers lb)" || die "the root namespace does not reach the vip on lb"
  say "reached from the root namespace (ssh root@$VIP -> lab-lb, ARP -> lb's MAC) after $ms ms"
  ip link set vl-lb down
  ms="$(wait_vip lb2 15)" || die "the vip did not move to lb2"
  say "lb's link down: lb2 holds $VIP after $ms ms (lb dropped it)"
  ms="$(vip_answers lb2)" || die "the root namespace does not reach the vip on lb2 (gratuitous ARP?)"
  say "reached on lb2 after another $ms ms (ARP updated)"
  ip link set vl-lb up
  ms="$(wait_vip lb 15)" || die "the vip did not come back to lb"
  say "lb's link up: lb holds $VIP again after $ms ms (preemption)"
  ms="$(vip_answers lb)" || die "the root namespace does not reach the vip back on lb"
  say "reached on lb after another $ms ms"
  vrrp_check_cleanup; VRRP_CHECK_PIDS=()
  trap - EXIT
  [[ "$(vip_holder 2>/dev/null)" == none ]] || die "the vip is still held after keepalived stopped"
  say "vrrp-check passed; keepalived stopped on lb and lb2, configs removed"
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
  vip-holder) cmd_vip_holder ;;
  reset-balancers) cmd_reset_balancers ;;
  vrrp-check) cmd_vrrp_check ;;
  env) echo "$STATE/lab.env"; [[ -s "$STATE/lab.env" ]] && grep -o '^[A-Z_0-9]*' "$STATE/lab.env" | sed 's/^/  /' ;;
  -h | --help | help) usage ;;
  *) usage >&2; exit 2 ;;
esac
