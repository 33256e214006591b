#!/usr/bin/env bash
# Joining labels to predictions: 10M predictions (the bench events) and ~300k
# feedback rows (3 % of requests, a tenth of them corrected), latest version
# per (request, source, kind), with label coverage per model. Lookout against
# DuckDB on the same Parquet data in the same run.
#   benches/ground_truth.sh        # after benches/rollups.sh (reuses its data and database)
set -euo pipefail
cd "$(dirname "$0")/.."
rows="${ROWS:-10000000}"
work="${BENCH_WORK:-/tmp/lookout-bench}/rollups_$rows"
db="$work/raw"
bin=target/quick-release/lookout
if [ ! -d "$db" ]; then
  echo "no database at $db: run benches/rollups.sh first" >&2
  exit 1
fi
cargo build --profile quick-release --bin lookout

"$bin" sql --data "$db" "DROP TABLE IF EXISTS feedback" >/dev/null
"$bin" sql --data "$db" "CREATE TABLE feedback (ts TIMESTAMPTZ NOT NULL, request_id TEXT NOT NULL,
  source TEXT NOT NULL, kind TEXT NOT NULL, value DOUBLE PRECISION, label TEXT, author TEXT, deleted BOOLEAN)
  WITH (key = 'request_id, source, kind', version = 'ts', deleted = 'deleted', partition_column = 'none', bucket = '30 days')" >/dev/null
# Thumbs on 8/256 of requests; a tenth of those changed an hour later.
"$bin" sql --data "$db" "INSERT INTO feedback SELECT ts + INTERVAL '10 minutes', request_id, 'user', 'thumbs',
  CASE WHEN status <> 'ok' OR latency_ms > 3000 THEN -1 ELSE 1 END, NULL, 'end-user', false
  FROM events WHERE substr(md5(request_id), 1, 2) < '08'" >/dev/null
"$bin" sql --data "$db" "INSERT INTO feedback SELECT ts + INTERVAL '1 hour', request_id, 'user', 'thumbs', -value, NULL, 'end-user', false
  FROM feedback WHERE substr(md5(request_id), 3, 1) = 'a'" >/dev/null
labels=$("$bin" sql --data "$db" "SELECT count(*) FROM feedback" | sed -n '4p' | tr -d ' |')

query="SELECT e.model, count(*) AS predictions, count(f.value) AS labeled,
  count(f.value) * 1.0 / count(*) AS coverage,
  avg(CASE WHEN f.value > 0 THEN 1.0 WHEN f.value < 0 THEN 0.0 END) AS thumbs_up
FROM events e LEFT JOIN (SELECT request_id, value FROM feedback WHERE source = 'user' AND kind = 'thumbs') f
  ON f.request_id = e.request_id
GROUP BY e.model ORDER BY e.model"
lookout_ms=$("$bin" sql --data "$db" --repeat 5 "$query" 2>&1 >/dev/null | sed -n 's/^time: median \([0-9.]*\) ms.*/\1/p')
"$bin" sql --data "$db" "$query" > "$work/ground_truth_lookout.txt"

# DuckDB reads every stored version (Lookout's Parquet files) and picks the latest itself.
python3 - "$db" "$work" "$bin" "$lookout_ms" "$labels" <<'PY'
import json, statistics, subprocess, sys, time
import duckdb
db, work, bin_, lookout_ms, labels = sys.argv[1:6]
files = f"{db}/data/feedback/**/*.parquet"
events = f"{work}/data/*.parquet"
con = duckdb.connect()
con.execute("SET threads = 2")
q = f"""
WITH f AS (
  SELECT request_id, value FROM read_parquet('{files}')
  WHERE source = 'user' AND kind = 'thumbs'
  QUALIFY row_number() OVER (PARTITION BY request_id, source, kind ORDER BY ts DESC) = 1
      AND NOT coalesce(deleted, false))
SELECT e.model, count(*), count(f.value), count(f.value) * 1.0 / count(*),
       avg(CASE WHEN f.value > 0 THEN 1.0 WHEN f.value < 0 THEN 0.0 END)
FROM read_parquet('{events}') e LEFT JOIN f ON f.request_id = e.request_id
GROUP BY e.model ORDER BY e.model"""
versions = con.execute(f"SELECT count(*) FROM read_parquet('{files}')").fetchone()[0]
times = []
for _ in range(6):
    t = time.perf_counter()
    rows = con.execute(q).fetchall()
    times.append((time.perf_counter() - t) * 1000)
duck_ms = statistics.median(times[1:])
out = {"predictions": con.execute(f"SELECT count(*) FROM read_parquet('{events}')").fetchone()[0], "feedback_versions": versions,
       "labels_latest": int(labels), "lookout_ms": float(lookout_ms), "duckdb_ms": duck_ms,
       "duckdb_rows": [list(map(lambda v: round(v, 6) if isinstance(v, float) else v, r)) for r in rows]}
json.dump(out, open(f"{work}/ground_truth.json", "w"), indent=1)
print(json.dumps(out, indent=1))
print(f"\nlabel join with latest-version dedup: Lookout {float(lookout_ms):.0f} ms, DuckDB {duck_ms:.0f} ms "
      f"(Lookout / DuckDB = {float(lookout_ms) / duck_ms:.2f})")
PY
cat "$work/ground_truth_lookout.txt"
