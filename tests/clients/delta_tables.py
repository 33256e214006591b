"""Writes and reads Delta tables with the Python `deltalake` package, the
other side of Lookout's external Delta tables.

  delta_tables.py create DIR   a partitioned table, two appends, a delete
  delta_tables.py append DIR   one more commit
  delta_tables.py answers DIR  JSON: what deltalake itself reads there

Rows are deterministic so the test can compare exact sums.
"""

import json
import sys
from datetime import datetime, timedelta, timezone

import pyarrow as pa
from deltalake import DeltaTable, write_deltalake

from native_exit import exit_without_teardown

SCHEMA = pa.schema(
    [
        ("ts", pa.timestamp("us", tz="UTC")),
        ("model", pa.string()),
        ("latency_ms", pa.float64()),
        ("tokens", pa.int64()),
        ("ok", pa.bool_()),
    ]
)


def rows(start, n):
    base = datetime(2025, 3, 1, tzinfo=timezone.utc)
    return pa.table(
        {
            "ts": [base + timedelta(minutes=i) for i in range(start, start + n)],
            "model": [("m-a", "m-b", "m-c")[i % 3] for i in range(start, start + n)],
            "latency_ms": [float(i % 97) + 0.25 for i in range(start, start + n)],
            "tokens": [None if i % 11 == 0 else i for i in range(start, start + n)],
            "ok": [i % 7 != 0 for i in range(start, start + n)],
        },
        schema=SCHEMA,
    )


def answers(path):
    table = DeltaTable(path).to_pyarrow_table()
    models = {}
    for model, latency in zip(
        table.column("model").to_pylist(), table.column("latency_ms").to_pylist()
    ):
        count, total = models.get(model, (0, 0.0))
        models[model] = (count + 1, total + latency)
    tokens = [t for t in table.column("tokens").to_pylist() if t is not None]
    return {
        "version": DeltaTable(path).version(),
        "rows": table.num_rows,
        "latency_sum": sum(table.column("latency_ms").to_pylist()),
        "tokens_sum": sum(tokens),
        "tokens_nulls": table.num_rows - len(tokens),
        "not_ok": table.column("ok").to_pylist().count(False),
        "models": {m: {"rows": c, "latency_sum": s} for m, (c, s) in sorted(models.items())},
    }


def main():
    command, path = sys.argv[1], sys.argv[2]
    if command == "create":
        write_deltalake(path, rows(0, 500), partition_by=["model"])
        write_deltalake(path, rows(500, 300), mode="append", partition_by=["model"])
        # Rewrites the files holding matching rows (remove + add actions).
        DeltaTable(path).delete("latency_ms > 90")
    elif command == "append":
        write_deltalake(path, rows(800, 200), mode="append", partition_by=["model"])
    elif command == "answers":
        print(json.dumps(answers(path)))
    else:
        raise SystemExit(f"unknown command {command}")


if __name__ == "__main__":
    main()
    exit_without_teardown()
