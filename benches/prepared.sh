#!/usr/bin/env bash
# A Q6-like point query (latest 100 errors of one model in a 6-hour window)
# executed 1,000 times over one psycopg connection: as a statement prepared
# on the server (Parse once, then Bind/Execute, which takes a fresh snapshot
# each time) and as simple-query text (parsed and planned each time).
#   benches/prepared.sh                   # 1M rows over 30 days
#   ROWS=10000000 benches/prepared.sh
set -euo pipefail
cd "$(dirname "$0")/.."
rows="${ROWS:-1000000}"
work="${BENCH_WORK:-/tmp/lookout-bench}/prepared_$rows"
source benches/common.sh
data="$work/data"
bench_data "$data" "$rows"
rm -rf "$work/db"
"$bin" sql --create --data "$work/db" "$events_table" >/dev/null
"$bin" import --data "$work/db" events "$data"/*.parquet >/dev/null 2>&1
python3 - "$bin" "$work/db" <<'PY'
import socket, statistics, subprocess, sys, time
import psycopg

binary, data = sys.argv[1], sys.argv[2]
with socket.socket() as s:
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
server = subprocess.Popen([binary, "serve", "--data", data, "--listen", f"127.0.0.1:{port}"],
                          stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
try:
    for _ in range(200):
        try:
            conn = psycopg.connect(f"host=127.0.0.1 port={port} user=lookout dbname=lookout", autocommit=True)
            break
        except psycopg.OperationalError:
            time.sleep(0.1)
    end = conn.execute("SELECT max(ts) FROM events").fetchone()[0]
    model = conn.execute("SELECT model FROM events GROUP BY model ORDER BY count(*) DESC LIMIT 1").fetchone()[0]
    start = end.replace(minute=0, second=0, microsecond=0)
    start = start.replace(hour=start.hour - start.hour % 6)
    q = ("SELECT * FROM events WHERE model = %s AND ts >= %s AND ts < %s AND status <> 'ok' "
         "ORDER BY ts DESC, request_id LIMIT 100")
    params = (model, start.isoformat(), end.isoformat())

    def run(execute, n=1000):
        for _ in range(20):
            execute()
        times = []
        for _ in range(n):
            t = time.perf_counter()
            execute()
            times.append((time.perf_counter() - t) * 1000)
        return statistics.median(times), sum(times)

    prepared = conn.cursor()
    simple = psycopg.ClientCursor(conn)  # binds client-side: simple-query protocol
    rows_p = prepared.execute(q, params, prepare=True).fetchall()
    rows_s = simple.execute(q, params).fetchall()
    assert len(rows_p) == len(rows_s), (len(rows_p), len(rows_s))
    p_med, p_total = run(lambda: prepared.execute(q, params, prepare=True).fetchall())
    s_med, s_total = run(lambda: simple.execute(q, params).fetchall())
    print(f"rows returned per execution: {len(rows_p)}")
    print(f"prepared (Bind/Execute): median {p_med:.2f} ms, 1000 runs {p_total / 1000:.2f} s")
    print(f"simple query text:       median {s_med:.2f} ms, 1000 runs {s_total / 1000:.2f} s")
    print(f"prepared / simple: {p_med / s_med:.2f}")
finally:
    server.terminate()
    server.wait()
PY
