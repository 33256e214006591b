#!/usr/bin/env python3
"""Prints Lookout's figures as ratios against DuckDB and PostgreSQL measured in
the same run (results/<scale>/{duckdb,postgres,ingest,lookout,lookout_lib}.json)."""
import json
import os
import sys


def load(path):
    return json.load(open(path)) if os.path.exists(path) else {}


def key(name):
    return name[:-4] if name.endswith(".sql") else name


def main():
    d = sys.argv[1]
    duck, pg, ing = load(f"{d}/duckdb.json"), load(f"{d}/postgres.json"), load(f"{d}/ingest.json")
    lk, lib = load(f"{d}/lookout.json"), load(f"{d}/lookout_lib.json")
    print("| Measure | Lookout | Peer (same run) | Ratio | Target |")
    print("|---|---:|---:|---:|---|")
    di = duck.get("import", {}).get("rows_per_s")
    if di and "import" in lk:
        v = lk["import"]["rows_per_s"]
        print(f"| `lookout import` rows/s vs DuckDB CREATE TABLE AS | {v:,.0f} | {di:,.0f} | {v / di:.2f} | >= 1.0 |")
    if di and "parquet_copy" in lk:
        v = lk["parquet_copy"]["rows_per_s"]
        print(f"| Parquet COPY rows/s vs DuckDB import | {v:,.0f} | {di:,.0f} | {v / di:.2f} | >= 1.0 |")
    pc = ing.get("pg_copy_stdin_no_index", {}).get("rows_per_s")
    if pc and "copy_stdin_csv" in lk:
        v = lk["copy_stdin_csv"]["rows_per_s"]
        print(f"| COPY FROM STDIN csv rows/s vs PostgreSQL \\copy (no index) | {v:,.0f} | {pc:,.0f} | {v / pc:.2f} | >= 1.0 |")
    dq = {key(k): v for k, v in duck.get("queries", {}).items()}
    for source, label in ((lib, "library"), (lk.get("queries", {}), "server")):
        for name, m in sorted(source.items()):
            native = dq.get(key(name), {}).get("native")
            if not native:
                continue
            peer = native["median_s"] * 1000
            print(f"| {key(name)} via {label} (ms) vs DuckDB native | {m['median_ms']:.1f} | {peer:.1f} | "
                  f"{m['median_ms'] / peer:.2f} | <= 1.0 |")


if __name__ == "__main__":
    main()
