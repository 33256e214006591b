#!/usr/bin/env python3
"""The same database on local disk and on S3 (moto's S3 server on this
machine), in one run: `lookout import` rows/s, then Q1-Q7 over one
connection to a server on each (first run, and the median of the warm runs).

    python3 benches/bench_s3.py --bin target/quick-release/lookout \
        --data /tmp/lookout-bench/data/events_1m --queries tests/queries/postgres \
        --work /tmp/lookout-bench/s3 --out /tmp/lookout-bench/results/s3.json

moto is a Python server that keeps objects in memory: its latency is a
loopback's, its throughput a single Python process's. The S3 column shows
what the object-store path costs Lookout (requests, no local page cache),
not what AWS would.
"""
import argparse
import glob
import json
import os
import shutil
import statistics
import subprocess
import sys
import time
import urllib.request

from bench_lookout import free_port, serve, stop

RUNS = 5
BUCKET = "lookout-bench"


def start_moto():
    port = free_port()
    proc = subprocess.Popen([sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(port)],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    url = f"http://127.0.0.1:{port}"
    for _ in range(300):
        try:
            urllib.request.urlopen(urllib.request.Request(f"{url}/{BUCKET}", method="PUT"))
            return proc, url
        except OSError:
            time.sleep(0.1)
    raise SystemExit("moto did not start (pip install 'moto[server]')")


def run_env(endpoint):
    return {**os.environ, "LOOKOUT_LOG": "warn", "AWS_ACCESS_KEY_ID": "bench", "AWS_SECRET_ACCESS_KEY": "bench",
            "AWS_REGION": "us-east-1", "AWS_ENDPOINT": endpoint, "AWS_ALLOW_HTTP": "true"}


def measure(a, name, location, wal, files, env):
    """`wal` is the WAL directory of a database on S3 (a local one keeps
    its WAL inside)."""
    res = {"location": location}
    extra = ["--wal-dir", wal] if wal else []
    t = time.perf_counter()
    subprocess.run([a.bin, "import", "--create", "--data", location, *extra, "events", *files],
                   check=True, stdout=subprocess.DEVNULL, env=env)
    el = time.perf_counter() - t
    proc, con = serve(a.bin, location, free_port(), extra, env)
    try:
        rows = con.execute("SELECT count(*) FROM events").fetchone()[0]
        res["import"] = {"seconds": el, "rows": rows, "rows_per_s": rows / el}
        print(f"[{name}] import {rows:,} rows in {el:.2f}s ({rows / el / 1e6:.2f} M rows/s)", file=sys.stderr)
        res["queries"] = {}
        for path in sorted(glob.glob(os.path.join(a.queries, "*.sql"))):
            sql = open(path).read()
            times = []
            for _ in range(RUNS + 1):
                t = time.perf_counter()
                con.execute(sql).fetchall()
                times.append((time.perf_counter() - t) * 1000)
            q = os.path.basename(path)
            res["queries"][q] = {"first_ms": times[0], "median_ms": statistics.median(times[1:])}
            print(f"[{name}] {q}: first {times[0]:.1f} ms, median {statistics.median(times[1:]):.1f} ms",
                  file=sys.stderr)
    finally:
        con.close()
        stop(proc)
    return res


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
    moto, endpoint = start_moto()
    try:
        env = run_env(endpoint)
        res = {
            "started": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
            "local": measure(a, "local", os.path.join(a.work, "db"), None, files, env),
            "s3": measure(a, "s3 (moto)", f"s3://{BUCKET}/lookout", os.path.join(a.work, "wal-s3"), files, env),
        }
    finally:
        moto.terminate()
        moto.wait(timeout=60)
    os.makedirs(os.path.dirname(a.out), exist_ok=True)
    json.dump(res, open(a.out, "w"), indent=1)
    local, s3 = res["local"], res["s3"]
    print("| | local disk | S3 (moto) | S3 / local |")
    print("|---|---:|---:|---:|")
    li, si = local["import"]["rows_per_s"], s3["import"]["rows_per_s"]
    print(f"| import rows/s | {li:,.0f} | {si:,.0f} | {li / si:.2f}x slower |")
    for q in local["queries"]:
        for kind in ("first_ms", "median_ms"):
            lm, sm = local["queries"][q][kind], s3["queries"][q][kind]
            label = "first" if kind == "first_ms" else "warm median"
            print(f"| {q[:2].upper()} {label} ms | {lm:.1f} | {sm:.1f} | {sm / lm:.2f} |")


if __name__ == "__main__":
    main()
