#!/usr/bin/env bash
# The floor: what the least possible plain-ssh script costs for the jobs newapi-cluster does, on
# the lab's 3 nodes + nginx (bench/compare.ts times it against the tool, in the same run).
#
#   floor.sh noop   read every host's files, state and container in parallel (one ssh per host)
#   floor.sh first  first deploy: the master (pull, files, compose up, poll /api/status until
#                   healthy), then the slaves in parallel the same way, then the nginx upstream
#                   and a reload
#
# One SSH connection per host per run (ControlMaster), as the tool keeps. Files come from a
# rendered folder (`newapi-cluster render --out DIR`): FLOOR_RENDERED=DIR.
set -euo pipefail
. /var/lib/newapi-lab/lab.env
DIR=/opt/new-api
RENDERED="${FLOOR_RENDERED:?set FLOOR_RENDERED to a newapi-cluster render --out folder}"
IMAGE="${FLOOR_IMAGE:-$LAB_IMAGE_REPO:v0.9.20}"
CTL="$(mktemp -d)"
trap 'for s in "$CTL"/*; do [ -S "$s" ] && ssh -o ControlPath="$s" -O exit x 2>/dev/null; done; rm -rf "$CTL"' EXIT
sshc() { # sshc HOST CMD...
  local h="$1"; shift
  ssh -i "$LAB_SSH_KEY" -o UserKnownHostsFile="$LAB_KNOWN_HOSTS" -o StrictHostKeyChecking=yes -o BatchMode=yes \
    -o LogLevel=ERROR -o ControlMaster=auto -o ControlPath="$CTL/%h" -o ControlPersist=60 "root@$h" "$@"
}
NODES=(10.77.0.11 10.77.0.12 10.77.0.13)
NAMES=(master slave-1 slave-2)

case "${1:-}" in
  noop)
    for h in "${NODES[@]}"; do
      sshc "$h" "cat $DIR/docker-compose.yml $DIR/.env $DIR/.newapi-cluster/state.json; docker container inspect lab-new-api; docker image inspect --format '{{.Id}}' $IMAGE" >/dev/null &
    done
    sshc "$LAB_LB_HOST" "cat /etc/nginx/conf.d/new-api.conf" >/dev/null &
    wait
    ;;
  first)
    node_up() { # node_up INDEX
      local h="${NODES[$1]}" n="${NAMES[$1]}"
      sshc "$h" "docker pull -q $IMAGE >/dev/null && mkdir -p $DIR/data $DIR/logs"
      sshc "$h" "cat > $DIR/docker-compose.yml" <"$RENDERED/nodes/$n/docker-compose.yml"
      sshc "$h" "umask 077; cat > $DIR/.env" <"$RENDERED/nodes/$n/.env"
      sshc "$h" "docker-compose --project-name lab --project-directory $DIR --file $DIR/docker-compose.yml up --detach >/dev/null 2>&1"
      # Poll from the node itself every 100 ms until healthy, as the tool's gate does.
      sshc "$h" "until wget -q -O - http://127.0.0.1:3000/api/status 2>/dev/null | grep -q '\"success\": *true'; do sleep 0.1; done"
    }
    node_up 0
    node_up 1 & node_up 2 & wait
    sshc "$LAB_LB_HOST" "cat > /etc/nginx/conf.d/new-api.conf && nginx -t -q && nginx -s reload" <"$RENDERED/balancer/new-api.conf"
    ;;
  *) echo "usage: floor.sh noop|first" >&2; exit 2 ;;
esac
