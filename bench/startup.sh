#!/usr/bin/env bash
# Start-up cost of the CLI, measured against bare `node -e 0` on the same machine so the figure
# travels between machines: `--help` should cost at most 2× an empty node process (the CLI is one
# bundle, and heavy libraries are loaded inside each command's action), and `validate` shows the cost of loading
# the inventory, zod and yaml. Needs hyperfine; local only, no network.
set -euo pipefail
cd "$(dirname "$0")/.."

if ! command -v hyperfine >/dev/null 2>&1; then
  echo "bench/startup.sh needs hyperfine (apt-get install hyperfine, or cargo install hyperfine)" >&2
  exit 2
fi

npm run --silent build

# Obviously fake values: validate only parses them, nothing connects anywhere (not loopback,
# which validate refuses for a database the nodes' containers must reach).
export SQL_DSN='bench:fake-bench-password@tcp(10.0.0.5:3306)/bench'
export REDIS_CONN_STRING='redis://default:fake-bench-password@10.0.0.6:6379/0'
export SESSION_SECRET='fake-bench-session-secret-0123456789abcdefghij'
export CRYPTO_SECRET='fake-bench-crypto-secret-0123456789abcdefghijk'

out=$(mktemp -d)
trap 'rm -rf "$out"' EXIT

# --shell=none: time the processes themselves, not a shell around them. --command-name=NAME
# (with =): a name starting with -- would otherwise be read as an option.
if ! hyperfine --shell=none --warmup 3 --min-runs 20 --style basic --export-json "$out/startup.json" \
  --command-name='node -e 0' 'node -e 0' \
  --command-name='--help' 'node bin/newapi-cluster.js --help' \
  --command-name='validate' 'node bin/newapi-cluster.js validate examples/lab/inventory.yaml' \
  >"$out/hyperfine.log" 2>&1; then
  cat "$out/hyperfine.log" >&2
  exit 1
fi

node - "$out/startup.json" <<'EOF'
const { readFileSync } = require('node:fs');
const { results } = JSON.parse(readFileSync(process.argv[2], 'utf8'));
const byName = Object.fromEntries(results.map((r) => [r.command, r]));
const ms = (s) => (s * 1000).toFixed(1);
const base = byName['node -e 0'].mean;
console.log(`node ${process.version}, hyperfine, 3 warm-up runs each`);
for (const r of results) {
  console.log(`  ${r.command.padEnd(10)} mean ${ms(r.mean).padStart(6)} ms ± ${ms(r.stddev)} (min ${ms(r.min)}, max ${ms(r.max)}, ${r.times.length} runs)`);
}
const help = byName['--help'].mean / base;
const validate = byName['validate'].mean / base;
console.log(`ratio --help / node -e 0:   ${help.toFixed(2)}× (target ≤ 2×: ${help <= 2 ? 'met' : 'NOT met'})`);
console.log(`ratio validate / node -e 0: ${validate.toFixed(2)}×`);
EOF
