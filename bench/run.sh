#!/usr/bin/env bash
# Every benchmark, figures printed. The lab ones need root and bring the lab up first.
set -euo pipefail
cd "$(dirname "$0")/.."
command -v hyperfine >/dev/null || { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq hyperfine >/dev/null; }
npm run --silent build
bash bench/startup.sh
npx tsx bench/render.ts
bash test/lab/lab.sh up
npx tsx bench/deploy.ts
npx tsx bench/upgrade.ts
npx tsx bench/faults.ts
npx tsx bench/backup.ts
npx tsx bench/edge.ts
npx tsx bench/compare.ts
npx tsx bench/scale.ts
