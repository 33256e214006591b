#!/usr/bin/env python3
"""Lookout side of the comparison: import, Parquet COPY, COPY FROM STDIN (CSV over psql,
and psycopg write_row in text and binary)
and the monitoring queries over one persistent connection, timed the way the
anchor scripts time DuckDB and PostgreSQL (client wall time, warm-up + median).

    python3 benches/bench_lookout.py --bin target/quick-release/lookout \
        --data /tmp/lookout-bench/data/events_10m --queries tests/queries/postgres \
        --work /tmp/lookout-bench/lookout --out /tmp/lookout-bench/results/10m/lookout.json
"""
import argparse
import glob
import json
import os
import shutil
import socket
import statistics
import subprocess
import sys
import time

import duckdb
import psycopg

RUNS = 5
# The bench events' columns: name, SQL type, and the type psycopg's binary
# COPY is told to send.
INGEST_COLUMNS = [
    ("ts", "TIMESTAMPTZ NOT NULL", "timestamptz"), ("model", "TEXT NOT NULL", "text"),
    ("model_version", "TEXT", "text"), ("segment", "TEXT", "text"), ("region", "TEXT", "text"),
    ("request_id", "TEXT", "text"), ("latency_ms", "DOUBLE PRECISION", "float8"),
    ("ttft_ms", "DOUBLE PRECISION", "float8"), ("prompt_tokens", "INT", "int4"),
    ("completion_tokens", "INT", "int4"), ("cost_usd", "DOUBLE PRECISION", "float8"),
    ("status", "TEXT", "text"), ("feature_x", "DOUBLE PRECISION", "float8"),
    ("feature_cat", "TEXT", "text"), ("score_relevance", "DOUBLE PRECISION", "float8"),
    ("score_groundedness", "DOUBLE PRECISION", "float8"),
    ("score_safety", "DOUBLE PRECISION", "float8"), ("feedback", "SMALLINT", "int2"),
]
INGEST_DDL = "CREATE TABLE events_ingest (" + ", ".join(f"{n} {t}" for n, t, _ in INGEST_COLUMNS) + ")"


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def serve(binary, data_dir, port, extra=(), env=None):
    """A server on `data_dir` (with `extra` arguments and environment) and
    an autocommit connection to it."""
    proc = subprocess.Popen([binary, "serve", "--data", data_dir, *extra, "--listen", f"127.0.0.1:{port}"],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                            env={**(env or os.environ), "LOOKOUT_LOG": "warn"})
    for _ in range(600):
        try:
            return proc, psycopg.connect(f"host=127.0.0.1 port={port} user=lookout dbname=lookout", autocommit=True)
        except psycopg.OperationalError:
            time.sleep(0.1)
    raise SystemExit("server did not start")


def stop(proc):
    proc.terminate()
    proc.wait(timeout=120)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--bin", required=True)
    ap.add_argument("--data", required=True, help="directory with events_*.parquet")
    ap.add_argument("--queries", required=True)
    ap.add_argument("--work", required=True)
    ap.add_argument("--out", required=True)
    a = ap.parse_args()
    files = sorted(glob.glob(os.path.join(os.path.abspath(a.data), "*.parquet")))
    shutil.rmtree(a.work, ignore_errors=True)
    os.makedirs(a.work)
    res = {"system": "lookout", "started": time.strftime("%Y-%m-%dT%H:%M:%S%z")}

    # 1. `lookout import` (the CLI, a fresh data directory).
    db_dir = os.path.join(a.work, "db")
    t = time.perf_counter()
    subprocess.run([a.bin, "import", "--create", "--data", db_dir, "events", *files], check=True,
                   stdout=subprocess.DEVNULL, env={**os.environ, "LOOKOUT_LOG": "warn"})
    el = time.perf_counter() - t
    rows = duckdb.connect().execute(f"SELECT count(*) FROM read_parquet({files!r})").fetchone()[0]
    res["import"] = {"seconds": el, "rows": rows, "rows_per_s": rows / el}
    print(f"[lookout] import {rows:,} rows in {el:.2f}s ({rows / el / 1e6:.2f} M rows/s)", file=sys.stderr)

    # 2. Queries over one persistent connection.
    port = free_port()
    proc, con = serve(a.bin, db_dir, port)
    try:
        measure_server(a, files, rows, res, con, port)
    finally:
        con.close()
        stop(proc)
    os.makedirs(os.path.dirname(a.out), exist_ok=True)
    json.dump(res, open(a.out, "w"), indent=1)


def measure_server(a, files, rows, res, con, port):
    res["queries"] = {}
    for path in sorted(glob.glob(os.path.join(a.queries, "*.sql"))):
        sql = open(path).read()
        times, n = [], 0
        for run in range(RUNS + 1):
            t = time.perf_counter()
            n = len(con.execute(sql).fetchall())
            el = time.perf_counter() - t
            if run:
                times.append(el * 1000)
        name = os.path.basename(path)
        res["queries"][name] = {"median_ms": statistics.median(times), "runs_ms": times, "rows": n}
        print(f"[lookout server] {name}: median {statistics.median(times):.1f} ms, {n} rows", file=sys.stderr)

    # 3. Parquet COPY through the server into a new table.
    t = time.perf_counter()
    for f in files:
        con.execute(f"COPY events_copy FROM '{f}' WITH (FORMAT parquet)")
    el = time.perf_counter() - t
    res["parquet_copy"] = {"seconds": el, "rows": rows, "rows_per_s": rows / el}
    print(f"[lookout] parquet COPY {rows / el / 1e6:.2f} M rows/s", file=sys.stderr)

    # 4. COPY FROM STDIN of 1M CSV rows with psql's \copy, as the PostgreSQL anchor does.
    csv = os.path.join(a.work, "ingest_1m.csv")
    c = duckdb.connect()
    c.execute("SET TimeZone = 'UTC'")
    c.execute(f"COPY (SELECT * FROM read_parquet({files!r}) LIMIT 1000000) TO '{csv}' (FORMAT csv, HEADER false)")
    times = []
    for rep in range(3):
        con.execute("DROP TABLE IF EXISTS events_ingest")
        con.execute(INGEST_DDL)
        cmd = ["psql", "-X", "-q", "-v", "ON_ERROR_STOP=1", "-h", "127.0.0.1", "-p", str(port), "-U", "lookout",
               "-d", "lookout", "-c", f"\\copy events_ingest FROM '{csv}' WITH (FORMAT csv)"]
        t = time.perf_counter()
        subprocess.run(cmd, check=True)
        times.append(time.perf_counter() - t)
    n = con.execute("SELECT count(*) FROM events_ingest").fetchone()[0]
    med = statistics.median(times)
    res["copy_stdin_csv"] = {"median_s": med, "rows": n, "rows_per_s": n / med}
    print(f"[lookout] COPY FROM STDIN csv {n / med:,.0f} rows/s", file=sys.stderr)

    # 5. The same rows through psycopg's copy.write_row, text and binary (the
    # client's own formatting is inside the time, as a loader would see it).
    tuples = c.execute(f"SELECT * FROM read_parquet({files!r}) LIMIT 1000000").fetchall()
    for fmt in ("text", "binary"):
        con.execute("DROP TABLE IF EXISTS events_ingest")
        con.execute(INGEST_DDL)
        t = time.perf_counter()
        with con.cursor() as cur:
            with cur.copy(f"COPY events_ingest FROM STDIN WITH (FORMAT {fmt})") as cp:
                if fmt == "binary":
                    cp.set_types([t for _, _, t in INGEST_COLUMNS])
                for row in tuples:
                    cp.write_row(row)
        el = time.perf_counter() - t
        n = con.execute("SELECT count(*) FROM events_ingest").fetchone()[0]
        res[f"copy_write_row_{fmt}"] = {"seconds": el, "rows": n, "rows_per_s": n / el}
        print(f"[lookout] psycopg write_row {fmt} {n / el:,.0f} rows/s", file=sys.stderr)


if __name__ == "__main__":
    main()
