#!/usr/bin/env bash
# Evaluation cost of alert rules: N rules (default 1000) over the 10M-row bench
# events, each evaluated once at 2025-01-08 00:00 as the scheduler does it
# (query with now() fixed, state machine, one write per evaluation), against
# the same queries run bare in the same process.
#   benches/alerts.sh                  # uses $BENCH_WORK/lookout/db from compare.sh
#   RULES=200 benches/alerts.sh
set -euo pipefail
cd "$(dirname "$0")/.."
work="${BENCH_WORK:-/tmp/lookout-bench}"
db="${DB:-$work/lookout/db}"
rules="${RULES:-1000}"
if [ ! -d "$db" ]; then
  echo "no Lookout database at $db: run benches/compare.sh first (it imports the bench events)" >&2
  exit 1
fi
cargo build --profile quick-release --bin lookout
mkdir -p "$work/results/10m"
for concurrency in 1 2; do
  target/quick-release/lookout bench-alerts --data "$db" --rules "$rules" --concurrency "$concurrency" \
    2>/dev/null | tee "$work/results/10m/alerts_c$concurrency.json"
done
