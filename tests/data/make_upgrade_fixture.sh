#!/usr/bin/env bash
# Writes tests/data/upgrade-fixture/: a data directory as a released
# `lookout` binary leaves it, for tests/integration/upgrade.rs, which opens
# it with the binary under test. Run it with the binary of the release the
# fixture stands for (Delta publishing off, as before Delta logs existed):
#   tests/data/make_upgrade_fixture.sh path/to/old/lookout
set -euo pipefail
cd "$(dirname "$0")"
bin=$(realpath "$1")
work=$(mktemp -d)
trap 'kill $pid 2>/dev/null || true; rm -rf "$work"' EXIT
port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
printf '[storage]\ndelta_log = false\n' > "$work/lookout.toml"
LOOKOUT_LOG=warn "$bin" serve --config "$work/lookout.toml" --data "$work/data" \
  --listen "127.0.0.1:$port" &
pid=$!
for _ in $(seq 100); do
  pg_isready -q -h 127.0.0.1 -p "$port" && break
  sleep 0.2
done
psql -v ON_ERROR_STOP=1 -q -h 127.0.0.1 -p "$port" -U lookout lookout <<'SQL'
CREATE TABLE calls (ts TIMESTAMPTZ NOT NULL, model TEXT NOT NULL, request_id TEXT,
                    latency_ms DOUBLE PRECISION)
  WITH (time_column = 'ts', partition_column = 'model');
INSERT INTO calls SELECT TIMESTAMPTZ '2026-11-01 00:00:00+00' + i * INTERVAL '1 minute',
  'm' || (i % 3), 'r' || i, i FROM generate_series(1, 600) AS g(i);
CREATE ROLLUP calls_hourly ON calls GROUP BY model EVERY '1 hour'
  AS (count(*), sum(latency_ms) AS latency_sum);
DELETE FROM calls WHERE latency_ms <= 60;
CREATE TABLE feedback (ts TIMESTAMPTZ NOT NULL, request_id TEXT NOT NULL, source TEXT NOT NULL,
                       kind TEXT NOT NULL, value DOUBLE PRECISION, label TEXT, author TEXT,
                       deleted BOOLEAN)
  WITH (key = 'request_id, source, kind', version = 'ts', deleted = 'deleted');
INSERT INTO feedback (ts, request_id, source, kind, value, deleted) VALUES
  ('2026-11-01 01:00:00+00', 'r1', 'user', 'thumbs', 1, false),
  ('2026-11-01 02:00:00+00', 'r1', 'user', 'thumbs', -1, false),
  ('2026-11-01 01:00:00+00', 'r2', 'user', 'thumbs', 1, false);
CREATE TABLE traces (ts TIMESTAMPTZ NOT NULL, model TEXT NOT NULL, request_id TEXT, status TEXT);
ALTER TABLE traces SET SAMPLING (KEY request_id, RATE 0.5, KEEP WHEN status <> 'ok');
INSERT INTO traces SELECT TIMESTAMPTZ '2026-11-01 00:00:00+00' + i * INTERVAL '1 second', 'm',
  't' || i, CASE WHEN i % 10 = 0 THEN 'error' ELSE 'ok' END FROM generate_series(1, 100) AS g(i);
CREATE ALERT slow_calls EVERY '1 hour' SEVERITY P1 WHEN value > 500
  AS SELECT model, avg(latency_ms) AS value FROM calls
     WHERE ts >= now() - INTERVAL '1 hour' AND ts < now() GROUP BY model;
CREATE REVIEW QUEUE triage ON calls KEY request_id;
ENQUEUE INTO triage SELECT request_id FROM calls WHERE latency_ms > 590;
SQL
# A clean stop flushes every row: the fixture needs no WAL.
kill -TERM $pid
wait $pid
rm -rf upgrade-fixture
mkdir upgrade-fixture
cp -r "$work/data/data" upgrade-fixture/
echo "wrote $(find upgrade-fixture -type f | wc -l) files"
