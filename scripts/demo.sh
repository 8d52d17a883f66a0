#!/usr/bin/env bash
# The main job on a local default: set up this machine, bring up the lab (a balancer and six
# servers as network namespaces, with MariaDB, Redis and a registry), then deploy the example
# cluster (examples/lab: one master, two slaves, nginx) and show its status.
set -euo pipefail
cd "$(dirname "$0")/.."
bash test/lab/lab.sh install
npm ci --no-audit --no-fund --loglevel=error
npm run --silent build
bash test/lab/lab.sh up
set -a; . /var/lib/newapi-lab/lab.env; set +a
node bin/newapi-cluster.js validate examples/lab/inventory.yaml
node bin/newapi-cluster.js deploy examples/lab/inventory.yaml
node bin/newapi-cluster.js status examples/lab/inventory.yaml
echo
echo "The cluster answers through nginx at http://10.77.0.10/ — try:"
echo "  curl -s http://10.77.0.10/api/status"
echo "  set -a; . /var/lib/newapi-lab/lab.env; set +a"
echo "  cp examples/lab/inventory.yaml /tmp/lab.yaml   # upgrade writes the new version into the inventory"
echo "  node bin/newapi-cluster.js upgrade --rolling --to v0.9.21 /tmp/lab.yaml"
