#!/usr/bin/env python3
"""Reference answers: runs each query file with DuckDB over Parquet files and
prints {query file name: rows}, values in Postgres text form where it matters
(timestamps as 'YYYY-MM-DD HH:MM:SS+00'), so the Rust tests can compare."""
import datetime as dt
import json
import sys

import duckdb


def text(v):
    if v is None:
        return None
    if isinstance(v, dt.datetime):
        v = v.astimezone(dt.timezone.utc)
        s = v.strftime("%Y-%m-%d %H:%M:%S")
        if v.microsecond:
            s += ("." + f"{v.microsecond:06d}").rstrip("0")
        return s + "+00"
    if isinstance(v, (list, tuple)):
        return [text(x) for x in v]
    if isinstance(v, float):
        return repr(v)
    return str(v)


def main():
    parquet_glob, *query_files = sys.argv[1:]
    con = duckdb.connect()
    con.execute("SET TimeZone='UTC'")
    con.execute(f"CREATE VIEW events AS SELECT * FROM read_parquet('{parquet_glob}')")
    out = {}
    for path in query_files:
        sql = open(path).read()
        # The Postgres dialect files use percentile_cont(ARRAY[..]) and q[1]; DuckDB
        # takes the same syntax with list results.
        rows = con.execute(sql).fetchall()
        out[path.rsplit("/", 1)[-1]] = [[text(v) for v in row] for row in rows]
    json.dump(out, sys.stdout)


if __name__ == "__main__":
    main()
