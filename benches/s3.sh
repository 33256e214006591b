#!/usr/bin/env bash
# The same bench database on local disk and on S3 (moto's server, started
# here), in one run: import rows/s and Q1-Q7.
#   benches/s3.sh                 # 1M rows
#   SCALE=10m benches/s3.sh
# Needs the Python packages of tests/requirements.txt (moto[server], psycopg,
# duckdb) and the bench generator (GEN, default ../shared/bench/gen_events.py).
set -euo pipefail
cd "$(dirname "$0")/.."
scale="${SCALE:-1m}"
work="${BENCH_WORK:-/tmp/lookout-bench}"
gen="${GEN:-../shared/bench/gen_events.py}"
case "$scale" in
  *m) rows=$(( ${scale%m} * 1000000 )) ;;
  *) rows="$scale" ;;
esac
data="$work/data/events_$scale"
if [ ! -f "$data/_meta.json" ]; then
  python3 "$gen" --rows "$rows" --files 14 --out "$data" --seed 42
fi
cargo build --profile quick-release --bin lookout
python3 benches/bench_s3.py --bin target/quick-release/lookout --data "$data" \
  --queries tests/queries/postgres --work "$work/s3" --out "$work/results/$scale/s3.json"
