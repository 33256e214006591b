#!/usr/bin/env bash
# Lookout against DuckDB and PostgreSQL on the bench workload, in one run.
#   benches/compare.sh                       # 10M rows
#   SCALE=1m benches/compare.sh              # quicker
# Needs the anchor scripts (ANCHORS, default ../shared/bench/anchors.sh), which
# generate the data and time DuckDB and PostgreSQL in $BENCH_WORK.
set -euo pipefail
cd "$(dirname "$0")/.."
scale="${SCALE:-10m}"
work="${BENCH_WORK:-/tmp/lookout-bench}"
anchors="${ANCHORS:-../shared/bench/anchors.sh}"
export BENCH_WORK="$work"

cargo build --profile quick-release --bin lookout

if [ "${SKIP_ANCHORS:-0}" != 1 ]; then
  SCALES="$scale" "$anchors"
fi
data="$work/data/events_$scale"
results="$work/results/$scale"
mkdir -p "$results"
"$work/.venv/bin/python" benches/bench_lookout.py --bin target/quick-release/lookout --data "$data" \
  --queries tests/queries/postgres --work "$work/lookout" --out "$results/lookout.json"
"$work/.venv/bin/python" benches/bench_library.py --bin target/quick-release/lookout --db "$work/lookout/db" \
  --queries tests/queries/postgres --out "$results/lookout_lib.json"
python3 benches/ratios.py "$results"
