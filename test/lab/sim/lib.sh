# Shared by the sim's docker and docker-compose shims (POSIX sh; sourced, never run).
#
# A sim host has no engine: its "containers" are state files under /opt/sim/containers (one per
# container, sh-sourceable c_* variables), its "images" files under /opt/sim/images (the name is
# the reference with / written as %, the content the image id), and a "running" container is a
# busybox httpd on the container's published port serving /opt/sim/www/PORT/api/status, a file
# that says {"success":true,"data":{"version":TAG}}. Stopping it kills the httpd (connection
# refused, as with a stopped container). Every call is appended to /opt/sim/calls.log as
# `RC ARGV` (one line, arguments quoted where needed); a call this sim does not model also goes
# to /opt/sim/unmodelled.log and fails with exit 97 and the argv on stderr.
#
# The hot paths (inspect, version, ps) fork nothing: builtins only. /opt is the host's own (a bind
# mount per sim host), so all of this is per host.

SIM=/opt/sim
SIM_C=$SIM/containers
SIM_IMG=$SIM/images
SIM_WWW=$SIM/www
SIM_LOGS=$SIM/logs
SIM_ENGINE_VERSION=20.10.24+dfsg1
SIM_UNMODELLED_RC=97

# REPLY <- $1 quoted for a log line (single quotes only where needed; no fork)
sim_quote() {
  case $1 in
    '') REPLY="''" ;;
    *[!A-Za-z0-9_./:=@%+,{}-]*)
      _r=$1 _o=
      while :; do
        case $_r in
          *\'*) _o="$_o${_r%%\'*}'\\''"; _r=${_r#*\'} ;;
          *) _o="$_o$_r"; break ;;
        esac
      done
      REPLY="'$_o'" ;;
    *) REPLY=$1 ;;
  esac
}

# sim_begin TOOL ARGS...: remembers the argv as one line; the call is logged at exit with its rc
sim_begin() {
  SIM_TOOL=$1
  SIM_LINE=$1
  shift
  for _a in "$@"; do sim_quote "$_a"; SIM_LINE="$SIM_LINE $REPLY"; done
  [ -d "$SIM" ] || mkdir -p "$SIM"
  trap 'sim_end $?' EXIT
}
sim_end() {
  printf '%s %s\n' "$1" "$SIM_LINE" >>"$SIM/calls.log" 2>/dev/null
}

sim_unmodelled() {
  printf '%s\n' "$SIM_LINE" >>"$SIM/unmodelled.log" 2>/dev/null
  printf 'newapi-sim: %s shim: not modelled: %s\n' "$SIM_TOOL" "$SIM_LINE" >&2
  exit $SIM_UNMODELLED_RC
}

sim_die() { # sim_die RC MESSAGE: what the real tool would print, on stderr
  printf '%s\n' "$2" >&2
  exit "$1"
}

sim_now() { date -u +%Y-%m-%dT%H:%M:%S.%NZ; }

# ---- images -------------------------------------------------------------------------
# REPLY <- the file name of an image reference (/ -> %)
sim_image_file() {
  _r=$1 _o=
  while :; do
    case $_r in
      */*) _o="$_o${_r%%/*}%"; _r=${_r#*/} ;;
      *) _o="$_o$_r"; break ;;
    esac
  done
  REPLY=$SIM_IMG/$_o
}
# REPLY <- the reference of an image file name (% -> /)
sim_image_ref() {
  _r=${1##*/} _o=
  while :; do
    case $_r in
      *%*) _o="$_o${_r%%\%*}/"; _r=${_r#*%} ;;
      *) _o="$_o$_r"; break ;;
    esac
  done
  REPLY=$_o
}
# a bare name means :latest, as docker reads it
sim_normalize_ref() {
  case ${1##*/} in
    *:*) REPLY=$1 ;;
    *) REPLY=$1:latest ;;
  esac
}
# REPLY <- the image id when the host has it; fails otherwise
sim_image_id() {
  sim_normalize_ref "$1"
  sim_image_file "$REPLY"
  [ -f "$REPLY" ] || return 1
  read -r REPLY <"$REPLY" || [ -n "$REPLY" ]
}
# what the registry has: the lab registry's repository and tags (sim.sh writes the list)
sim_registry_has() {
  sim_normalize_ref "$1"
  _want=$REPLY
  [ -f "$SIM/registry.list" ] || return 1
  while IFS= read -r _l; do [ "$_l" = "$_want" ] && return 0; done <"$SIM/registry.list"
  return 1
}
# "pulls" an image: instant; the id is derived from the reference (tags differ, as their configs do)
sim_pull() {
  sim_normalize_ref "$1"
  _ref=$REPLY
  sim_registry_has "$_ref" || return 1
  sim_image_file "$_ref"
  _f=$REPLY
  [ -d "$SIM_IMG" ] || mkdir -p "$SIM_IMG"
  _id=$(printf '%s' "$_ref" | sha256sum)
  printf 'sha256:%s\n' "${_id%% *}" >"$_f"
}

# ---- containers ---------------------------------------------------------------------
# sim_load NAME: sets the c_* variables; fails when there is no such container. A "running"
# container whose httpd died reads as exited, as docker would report a crashed process.
sim_load() {
  c_name= c_id= c_image= c_image_id= c_status= c_started= c_finished= c_created= c_restarts=0
  c_port= c_bind= c_pid= c_project= c_service= c_hash= c_exit=0 c_oneoff=
  case $1 in '' | */* | .*) return 1 ;; esac
  [ -f "$SIM_C/$1" ] || return 1
  . "$SIM_C/$1"
  if [ "$c_status" = running ] && ! kill -0 "$c_pid" 2>/dev/null; then
    c_status=exited c_exit=1
  fi
  return 0
}
sim_save() {
  [ -d "$SIM_C" ] || mkdir -p "$SIM_C"
  {
    printf "c_name='%s'\nc_id='%s'\nc_image='%s'\nc_image_id='%s'\nc_status='%s'\n" "$c_name" "$c_id" "$c_image" "$c_image_id" "$c_status"
    printf "c_started='%s'\nc_finished='%s'\nc_created='%s'\nc_restarts='%s'\nc_port='%s'\nc_bind='%s'\n" "$c_started" "$c_finished" "$c_created" "$c_restarts" "$c_port" "$c_bind"
    printf "c_pid='%s'\nc_project='%s'\nc_service='%s'\nc_hash='%s'\nc_exit='%s'\nc_oneoff='%s'\n" "$c_pid" "$c_project" "$c_service" "$c_hash" "$c_exit" "$c_oneoff"
  } >"$SIM_C/.$c_name.tmp"
  mv -f "$SIM_C/.$c_name.tmp" "$SIM_C/$c_name"
}
sim_log_line() { # sim_log_line NAME TEXT: the container's log (docker logs)
  [ -d "$SIM_LOGS" ] || mkdir -p "$SIM_LOGS"
  printf '%s\n' "$2" >>"$SIM_LOGS/$1.log"
}
# sim_create NAME IMAGE PORT BIND PROJECT SERVICE HASH ONEOFF: a created, not started, container
sim_create() {
  c_name=$1 c_image=$2 c_port=$3 c_bind=$4 c_project=$5 c_service=$6 c_hash=$7 c_oneoff=$8
  sim_image_id "$c_image" || return 1
  c_image_id=$REPLY
  c_id=$(printf '%s %s' "$c_name" "$(sim_now)" | sha256sum)
  c_id=${c_id%% *}
  c_status=created c_started=0001-01-01T00:00:00Z c_finished=0001-01-01T00:00:00Z c_restarts=0 c_pid= c_exit=0
  c_created=$(sim_now)
  [ -d "$SIM_LOGS" ] || mkdir -p "$SIM_LOGS"
  : >"$SIM_LOGS/$c_name.log"
  sim_save
}
# the version /api/status reports: the image's tag
sim_tag() {
  case ${1##*/} in
    *:*) REPLY=${1##*:} ;;
    *) REPLY=latest ;;
  esac
}
sim_start() { # the loaded container starts: its httpd listens, /api/status answers
  [ "$c_status" = running ] && return 0
  _w=$SIM_WWW/$c_port
  [ -d "$_w/api" ] || mkdir -p "$_w/api"
  sim_tag "$c_image"
  _now=$(sim_now)
  case $REPLY in
    # the stand-in's never-healthy tag: 503 {"success":false} there; here success:false
    *-unhealthy) printf '{"success":false,"message":"sim: unhealthy tag"}\n' >"$_w/api/status" ;;
    *) printf '{"success":true,"data":{"version":"%s","start_time":%s,"sim_container":"%s"}}\n' "$REPLY" "$(date +%s)" "$c_name" >"$_w/api/status" ;;
  esac
  busybox httpd -f -p "${c_bind:-0.0.0.0}:$c_port" -h "$_w" </dev/null >/dev/null 2>&1 &
  c_pid=$!
  c_status=running c_started=$_now c_exit=0
  sim_save
  sim_log_line "$c_name" "$_now [SYS] New API $REPLY started (sim, httpd pid $c_pid on ${c_bind:-0.0.0.0}:$c_port)"
}
sim_stop() { # the loaded container stops: its httpd is killed, /api/status is gone
  if [ -n "$c_pid" ] && kill -0 "$c_pid" 2>/dev/null; then
    kill "$c_pid" 2>/dev/null
    # gone before we answer, as docker stop returns once the process has exited
    _i=0
    while kill -0 "$c_pid" 2>/dev/null && [ $_i -lt 50 ]; do sleep 0.02; _i=$((_i + 1)); done
  fi
  [ -n "$c_port" ] && rm -f "$SIM_WWW/$c_port/api/status"
  if [ "$c_status" = running ]; then
    c_status=exited c_exit=143 c_finished=$(sim_now)
    sim_log_line "$c_name" "$c_finished [SYS] received SIGTERM, exiting (sim)"
  fi
  c_pid=
  sim_save
}
sim_remove() { # the loaded container is removed
  sim_stop
  rm -f "$SIM_C/$c_name" "$SIM_LOGS/$c_name.log"
}
# sim_each_container: CONTAINERS <- every container name
sim_list() {
  CONTAINERS=
  for _f in "$SIM_C"/*; do
    [ -f "$_f" ] || continue
    CONTAINERS="$CONTAINERS ${_f##*/}"
  done
}
