#!/usr/bin/env bash
# Every test, on a fresh machine of this kind: install what the tests need, build, bring the lab
# up (real sshd, dockerd, registry, MariaDB, Redis, nginx), run the unit tests (a few use the
# lab's MariaDB), then the end-to-end tests against the lab, and print one closing line: "N passed, N failed".
set -euo pipefail
cd "$(dirname "$0")/.."

say() { printf '[test %s] %s\n' "$(date +%T)" "$*" >&2; }

if [[ $EUID -ne 0 ]]; then
  say "the lab needs root (network namespaces, dockerd, nginx): run as root"; exit 2
fi

say "install the lab's Debian packages (only those missing)"
bash test/lab/lab.sh install
say "install npm dependencies (npm ci)"
npm ci --no-audit --no-fund --loglevel=error
say "build and type-check"
npm run --silent build
npx tsc -p tsconfig.json --noEmit

results=$(mktemp -d)
trap 'rm -rf "$results"' EXIT
status=0

# The lab comes up first: a few unit files (the dump engine, runBackup) run against its MariaDB
# with a scratch database of their own, and fail loudly without it.
say "bring the lab up (tears down what a previous run left)"
bash test/lab/lab.sh up

say "unit tests"
npx vitest run --project unit --reporter=default --reporter=json --outputFile.json="$results/unit.json" || status=1

say "end-to-end tests against the lab"
npx vitest run --project e2e --reporter=default --reporter=json --outputFile.json="$results/e2e.json" || status=1

node scripts/summarize-tests.mjs "$results/unit.json" "$results/e2e.json" || status=1
exit $status
