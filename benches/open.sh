#!/usr/bin/env bash
# How long opening a store of many files takes: a table of FILES one-row
# Parquet files (one per model x hour), then the median of 5 runs of
# `lookout sql` (open, count, close) and of reading the table's Delta log
# with the Python `deltalake` package once a server has published it.
#   benches/open.sh               # 10,000 files
#   FILES=50000 benches/open.sh
# Needs the Python packages of tests/requirements.txt (deltalake).
set -euo pipefail
cd "$(dirname "$0")/.."
files="${FILES:-10000}"
work="${BENCH_WORK:-/tmp/lookout-bench}/open"
bin=target/quick-release/lookout
cargo build --profile quick-release --bin lookout
rm -rf "$work" && mkdir -p "$work"
db="$work/db"
export LOOKOUT_LOG=warn
hours=200
models=$(( files / hours ))
since() { awk -v a="$1" -v b="$EPOCHREALTIME" 'BEGIN { printf "%.3f\n", b - a }'; }
start=$EPOCHREALTIME
"$bin" sql --create --data "$db" "CREATE TABLE many (ts TIMESTAMPTZ NOT NULL, model TEXT, v DOUBLE PRECISION)
  WITH (bucket = '1 hour');
INSERT INTO many SELECT TIMESTAMPTZ '2025-01-01 00:00:00+00' + (i % $hours) * INTERVAL '1 hour',
  'm' || (i / $hours), i FROM generate_series(0, $(( models * hours - 1 ))) AS g(i)" > /dev/null
echo "created $(find "$db/data/many" -name '*.parquet' | wc -l) files in $(since "$start") s"

median() { sort -n | awk '{a[NR]=$1} END {print a[int((NR+1)/2)]}'; }
for _ in 1 2 3 4 5 6; do
  s=$EPOCHREALTIME
  "$bin" sql --data "$db" "SELECT count(*) FROM many" > /dev/null
  since "$s"
done | tail -n 5 | median | xargs printf 'lookout sql (open, count, close): median %.3f s\n'

# A server publishes the Delta log (stopped cleanly, it publishes before it exits).
port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
"$bin" serve --data "$db" --listen "127.0.0.1:$port" &
server=$!
for _ in $(seq 1 600); do
  [ -d "$db/data/many/_delta_log" ] && break
  sleep 0.1
done
sleep 2
kill -TERM "$server"
wait "$server" || true
python3 - "$db/data/many" <<'EOF'
import statistics, sys, time
from deltalake import DeltaTable
times = []
for _ in range(6):
    t = time.perf_counter()
    table = DeltaTable(sys.argv[1])
    n = len(table.file_uris())
    times.append(time.perf_counter() - t)
print(f"deltalake DeltaTable(...) with {n} files, version {table.version()}: "
      f"median {statistics.median(times[1:]):.3f} s")
EOF
