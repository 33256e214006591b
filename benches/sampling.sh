#!/usr/bin/env bash
# Sampling at ingest on the bench data: what holding and deciding costs, how
# much smaller the kept table is, and how fast and how close weighted queries
# over the sample are to the same queries over every row: same data, same
# binary, same run.
#   benches/sampling.sh                    # 10M rows over 30 days
#   ROWS=2000000 benches/sampling.sh       # quicker
set -euo pipefail
cd "$(dirname "$0")/.."
rows="${ROWS:-10000000}"
work="${BENCH_WORK:-/tmp/lookout-bench}/sampling_$rows"
source benches/common.sh
data="$work/data"
bench_data "$data" "$rows"
rm -rf "$work/raw" "$work/sampled" "$work/answers"
mkdir -p "$work/answers"

table="$events_table"
policy="ALTER TABLE events SET SAMPLING (KEY request_id, SEGMENT BY (model, segment), RATE 0.02,
  MINIMUM 20 PER HOUR, KEEP WHEN status <> 'ok', KEEP WHEN feedback < 0, WINDOW '0 seconds')"


# Decisions run only when asked (DECIDE SAMPLING), so the import's time is
# the import's.
config="$work/lookout.toml"
mkdir -p "$work"
printf '[server]\nsampling_interval = "1 day"\n' > "$config"
export LOOKOUT_CONFIG="$config"

# Ingest: the same files into a plain table and into a sampled one (held),
# then one decision over everything held.
"$bin" sql --create --data "$work/raw" "$table" >/dev/null
t0=$(seconds); "$bin" import --data "$work/raw" events "$data"/*.parquet >/dev/null 2>&1; t1=$(seconds)
"$bin" sql --create --data "$work/sampled" "$table" >/dev/null
"$bin" sql --data "$work/sampled" "$policy" >/dev/null
t2=$(seconds); "$bin" import --data "$work/sampled" events "$data"/*.parquet >/dev/null 2>&1; t3=$(seconds)
t4=$(seconds)
"$bin" sql --data "$work/sampled" "SET lookout.now = '2030-01-01 00:00:00+00'; DECIDE SAMPLING ON events" >/dev/null
t5=$(seconds)

answer() { # db, name, sql
  "$bin" sql --data "$1" "COPY ($3) TO '$work/answers/$2.csv' WITH (FORMAT csv)" >/dev/null
}
declare -A raw=(
  [calls_per_model]="SELECT model, CAST(count(*) AS DOUBLE PRECISION) FROM events GROUP BY model ORDER BY model"
  [p99_per_model]="SELECT model, latency_quantile(latency_ms, 0.99) FROM events GROUP BY model ORDER BY model"
  [p50_per_model]="SELECT model, latency_quantile(latency_ms, 0.5) FROM events GROUP BY model ORDER BY model"
  [error_rate]="SELECT model, segment, avg(CASE WHEN status <> 'ok' THEN 1.0 ELSE 0.0 END) FROM events GROUP BY 1, 2 ORDER BY 1, 2"
  [psi_29d_vs_1d]="SELECT model, drift_psi(latency_ms, ts >= TIMESTAMPTZ '2025-01-30 00:00:00+00') FROM events GROUP BY model ORDER BY model"
)
declare -A sampled=(
  [calls_per_model]="SELECT model, sum(sample_weight) FROM events GROUP BY model ORDER BY model"
  [p99_per_model]="SELECT model, weighted_quantile(latency_ms, sample_weight, 0.99) FROM events GROUP BY model ORDER BY model"
  [p50_per_model]="SELECT model, weighted_quantile(latency_ms, sample_weight, 0.5) FROM events GROUP BY model ORDER BY model"
  [error_rate]="SELECT model, segment, sum(sample_weight) FILTER (WHERE status <> 'ok') / sum(sample_weight) FROM events GROUP BY 1, 2 ORDER BY 1, 2"
  [psi_29d_vs_1d]="SELECT model, weighted_drift_psi(latency_ms, ts >= TIMESTAMPTZ '2025-01-30 00:00:00+00', sample_weight) FROM events GROUP BY model ORDER BY model"
)

count() { "$bin" sql --data "$1" "$2" | sed -n '4p' | tr -d ' |'; }
out="$work/sampling.json"
{
  printf '{"rows": %s, "kept": %s, "dropped": %s,\n' "$rows" \
    "$(count "$work/sampled" "SELECT count(*) FROM events")" \
    "$(count "$work/sampled" "SELECT sum(dropped) FROM lookout.events_sampling")"
  printf ' "import_s": {"plain": %.2f, "sampled": %.2f}, "decide_s": %.2f,\n' \
    "$(echo "$t1 - $t0" | bc)" "$(echo "$t3 - $t2" | bc)" "$(echo "$t5 - $t4" | bc)"
  printf ' "queries_ms": {'
  sep=""
  for q in calls_per_model p50_per_model p99_per_model error_rate psi_29d_vs_1d; do
    answer "$work/raw" "${q}_raw" "${raw[$q]}"
    answer "$work/sampled" "${q}_sampled" "${sampled[$q]}"
    printf '%s"%s": {"raw": %s, "sampled": %s}' "$sep" "$q" \
      "$(median_ms "$work/raw" "${raw[$q]}")" "$(median_ms "$work/sampled" "${sampled[$q]}")"
    sep=", "
  done
  printf '}}\n'
} > "$out"
cat "$out"
python3 - "$out" "$work/answers" <<'PY'
import csv, json, sys
r = json.load(open(sys.argv[1]))
answers = sys.argv[2]
print(f"\n{r['rows']:,} rows over 30 days; kept {r['kept']:,} ({r['kept'] / r['rows']:.1%}), "
      f"dropped {r['dropped']:,}")
imp = r["import_s"]
print(f"import: {imp['plain']:.1f} s into a plain table, {imp['sampled']:.1f} s into the sampled "
      f"table's held area ({imp['sampled'] / imp['plain']:.2f}x); one decision over all of it: "
      f"{r['decide_s']:.1f} s")
print(f"{'query':<17}{'raw ms':>9}{'sample ms':>11}{'ratio':>7}  largest error of the estimate")
for q, t in r["queries_ms"].items():
    read = lambda side: [row for row in csv.reader(open(f"{answers}/{q}_{side}.csv"))]
    exact, estimate = read("raw"), read("sampled")
    pairs = [(float(x[-1]), float(e[-1])) for x, e in zip(exact, estimate)]
    if q.startswith("psi"):
        # PSI near 0 (no drift): relative errors mean nothing; show the
        # absolute difference and the largest value.
        worst = max(abs(e - x) for x, e in pairs)
        shown = f"{worst:.4f} absolute (raw PSI up to {max(x for x, _ in pairs):.4f})"
    else:
        worst = max(abs(e - x) / abs(x) for x, e in pairs)
        shown = f"{worst:.2%} relative"
    print(f"{q:<17}{t['raw']:>9.1f}{t['sampled']:>11.1f}{t['raw'] / t['sampled']:>6.1f}x  {shown}")
PY
