#!/usr/bin/env bash
# 30-day monitoring queries read from a rollup against the same queries over
# the raw rows, and what maintaining the rollup costs at ingest: same data,
# same binary, same run.
#   benches/rollups.sh                    # 10M rows over 30 days
#   ROWS=2000000 benches/rollups.sh       # quicker
set -euo pipefail
cd "$(dirname "$0")/.."
rows="${ROWS:-10000000}"
work="${BENCH_WORK:-/tmp/lookout-bench}/rollups_$rows"
source benches/common.sh
data="$work/data"
bench_data "$data" "$rows"
rm -rf "$work/raw" "$work/rolled"

# A drill-down rollup (model x version x segment, hourly) and a dashboard
# rollup (model, hourly): the fewer rows a bucket-group gets, the less a
# rollup saves.
rollup="CREATE ROLLUP events_hourly ON events GROUP BY model, model_version, segment EVERY '1 hour'
  AS (count(*), quantile_sketch(latency_ms), score_state(score_groundedness, 0.7),
      sum(CASE WHEN status <> 'ok' THEN 1 ELSE 0 END) AS errors)"
model_rollup="CREATE ROLLUP model_hourly ON events GROUP BY model EVERY '1 hour'
  AS (count(*), quantile_sketch(latency_ms), score_state(score_groundedness, 0.7),
      sum(CASE WHEN status <> 'ok' THEN 1 ELSE 0 END) AS errors)"
table="$events_table"


# Ingest: the same files into a table without and with the rollup.
"$bin" sql --create --data "$work/raw" "$table" >/dev/null
t0=$(seconds); "$bin" import --data "$work/raw" events "$data"/*.parquet >/dev/null 2>&1; t1=$(seconds)
"$bin" sql --create --data "$work/rolled" "$table" >/dev/null
"$bin" sql --data "$work/rolled" "$rollup" >/dev/null
"$bin" sql --data "$work/rolled" "$model_rollup" >/dev/null
t2=$(seconds); "$bin" import --data "$work/rolled" events "$data"/*.parquet >/dev/null 2>&1; t3=$(seconds)
# Backfill: CREATE ROLLUP over rows already loaded.
t4=$(seconds); "$bin" sql --data "$work/raw" "$rollup" >/dev/null; t5=$(seconds)
"$bin" sql --data "$work/raw" "DROP ROLLUP events_hourly" >/dev/null

declare -A raw=(
  [p99_30d]="SELECT model, latency_quantile(latency_ms, 0.99) FROM events WHERE ts >= TIMESTAMPTZ '2025-01-01 00:00:00+00' GROUP BY model ORDER BY model"
  [p99_hourly_30d]="SELECT model, date_bin(INTERVAL '1 hour', ts) AS h, latency_quantile(latency_ms, 0.99) FROM events WHERE ts >= TIMESTAMPTZ '2025-01-01 00:00:00+00' GROUP BY 1, 2 ORDER BY 1, 2"
  [psi_29d_vs_1d]="SELECT model, drift_psi(latency_ms, ts >= TIMESTAMPTZ '2025-01-30 00:00:00+00') FROM events GROUP BY model ORDER BY model"
  [error_rate_30d]="SELECT model, segment, avg(CASE WHEN status <> 'ok' THEN 1.0 ELSE 0.0 END) FROM events GROUP BY 1, 2 ORDER BY 1, 2"
  [pass_rate_30d]="SELECT model, score_pass_rate(score_groundedness, 0.7) FROM events GROUP BY model ORDER BY model"
)
declare -A rolled=(
  [p99_30d]="SELECT model, sketch_quantile(sketch_merge(latency_ms_sketch), 0.99) FROM events_hourly WHERE bucket >= TIMESTAMPTZ '2025-01-01 00:00:00+00' GROUP BY model ORDER BY model"
  [p99_hourly_30d]="SELECT model, bucket, sketch_quantile(sketch_merge(latency_ms_sketch), 0.99) FROM events_hourly WHERE bucket >= TIMESTAMPTZ '2025-01-01 00:00:00+00' GROUP BY 1, 2 ORDER BY 1, 2"
  [psi_29d_vs_1d]="SELECT b.model, sketch_psi(b.s, c.s) FROM (SELECT model, sketch_merge(latency_ms_sketch) AS s FROM events_hourly WHERE bucket < TIMESTAMPTZ '2025-01-30 00:00:00+00' GROUP BY model) b JOIN (SELECT model, sketch_merge(latency_ms_sketch) AS s FROM events_hourly WHERE bucket >= TIMESTAMPTZ '2025-01-30 00:00:00+00' GROUP BY model) c ON b.model = c.model ORDER BY 1"
  [error_rate_30d]="SELECT model, segment, sum(errors) / sum(count) FROM events_hourly GROUP BY 1, 2 ORDER BY 1, 2"
  [pass_rate_30d]="SELECT model, score_state_pass_rate(score_merge(score_groundedness_state)) FROM events_hourly GROUP BY model ORDER BY model"
)

# A single-row INSERT (a service logging one call at a time): fresh tables
# without and with the drill-down rollup; each run is one durable write.
insert="INSERT INTO events (ts, model, model_version, segment, latency_ms, status, score_groundedness)
  VALUES (now(), 'support-bot', 'v1', 'web', 420, 'ok', 0.8)"
rm -rf "$work/insert_plain" "$work/insert_rolled"
"$bin" sql --create --data "$work/insert_plain" "$table" >/dev/null
"$bin" sql --create --data "$work/insert_rolled" "$table" >/dev/null
"$bin" sql --data "$work/insert_rolled" "$rollup" >/dev/null
insert_plain=$(median_ms "$work/insert_plain" "$insert")
insert_rolled=$(median_ms "$work/insert_rolled" "$insert")

out="$work/rollups.json"
{
  printf '{"rows": %s, "rollup_rows": %s, "model_rollup_rows": %s,\n' "$rows" \
    "$("$bin" sql --data "$work/rolled" "SELECT count(*) FROM events_hourly" | sed -n '4p' | tr -d ' |')" \
    "$("$bin" sql --data "$work/rolled" "SELECT count(*) FROM model_hourly" | sed -n '4p' | tr -d ' |')"
  printf ' "import_s": {"plain": %.2f, "with_rollup": %.2f}, "backfill_s": %.2f,\n' \
    "$(echo "$t1 - $t0" | bc)" "$(echo "$t3 - $t2" | bc)" "$(echo "$t5 - $t4" | bc)"
  printf ' "insert_ms": {"plain": %s, "with_rollup": %s},\n' "$insert_plain" "$insert_rolled"
  printf ' "queries_ms": {'
  sep=""
  for q in p99_30d p99_hourly_30d psi_29d_vs_1d error_rate_30d pass_rate_30d; do
    r=$(median_ms "$work/raw" "${raw[$q]}")
    u=$(median_ms "$work/rolled" "${rolled[$q]}")
    m=null
    if [ "$q" != error_rate_30d ]; then
      m=$(median_ms "$work/rolled" "${rolled[$q]//events_hourly/model_hourly}")
    fi
    printf '%s"%s": {"raw": %s, "rollup": %s, "model_rollup": %s}' "$sep" "$q" "$r" "$u" "$m"
    sep=", "
  done
  printf '}}\n'
} > "$out"
cat "$out"
python3 - "$out" <<'PY'
import json, sys
r = json.load(open(sys.argv[1]))
print(f"\n{r['rows']:,} rows over 30 days; rollups: {r['rollup_rows']:,} rows (model x version x segment, hourly), "
      f"{r['model_rollup_rows']:,} rows (model, hourly)")
imp = r["import_s"]
print(f"import: {imp['plain']:.1f} s plain, {imp['with_rollup']:.1f} s with both rollups "
      f"({imp['with_rollup'] / imp['plain']:.2f}x); CREATE ROLLUP backfill: {r['backfill_s']:.1f} s")
ins = r["insert_ms"]
print(f"single-row INSERT: {ins['plain']:.2f} ms plain, {ins['with_rollup']:.2f} ms with the rollup")
print(f"{'query':<18}{'raw ms':>9}{'drill-down ms':>15}{'ratio':>7}{'model ms':>10}{'ratio':>8}")
for q, t in r["queries_ms"].items():
    m = t["model_rollup"]
    tail = f"{m:>10.1f}{t['raw'] / m:>7.1f}x" if m else f"{'-':>10}{'-':>8}"
    print(f"{q:<18}{t['raw']:>9.1f}{t['rollup']:>15.1f}{t['raw'] / t['rollup']:>6.1f}x{tail}")
PY
