#!/usr/bin/env bash
# Every benchmark, figures printed. The lab ones need root and bring the lab up first.
set -euo pipefail
cd "$(dirname "$0")/.."
bash bench/startup.sh
npx tsx bench/render.ts
bash test/lab/lab.sh up
npx tsx bench/deploy.ts
npx tsx bench/upgrade.ts
