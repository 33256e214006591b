# Shared by the benchmark scripts: the binary, the bench data, the events
# table and timing helpers. Source it after `cd` to the repository root.

bin="${CARGO_TARGET_DIR:-target}/quick-release/lookout"
cargo build --profile quick-release --bin lookout

# bench_data DIR ROWS: the generator's 30 days of events as 8 Parquet files,
# made once per DIR.
bench_data() {
  if [ ! -f "$1/.complete" ]; then
    rm -rf "$1"
    python3 tests/data/gen_events.py --rows "$2" --files 8 --days 30 --seed 7 --out "$1" >/dev/null
    touch "$1/.complete"
  fi
}

# The generator's schema as a Lookout table.
events_table="CREATE TABLE events (ts TIMESTAMPTZ NOT NULL, model TEXT NOT NULL, model_version TEXT, segment TEXT,
  region TEXT, request_id TEXT, latency_ms DOUBLE PRECISION, ttft_ms DOUBLE PRECISION, prompt_tokens INT,
  completion_tokens INT, cost_usd DOUBLE PRECISION, status TEXT, feature_x DOUBLE PRECISION, feature_cat TEXT,
  score_relevance DOUBLE PRECISION, score_groundedness DOUBLE PRECISION, score_safety DOUBLE PRECISION,
  feedback SMALLINT)"

seconds() { date +%s.%N; }

# median_ms DB SQL: the median of 7 runs after a warm-up, in ms.
median_ms() {
  "$bin" sql --data "$1" --repeat 7 "$2" 2>&1 >/dev/null | sed -n 's/^time: median \([0-9.]*\) ms.*/\1/p'
}
