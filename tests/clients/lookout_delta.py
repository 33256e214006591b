"""Reads a Lookout table's directory as a Delta table, as a team's
lakehouse would, with the Python `deltalake` package and with Polars.

  lookout_delta.py DIR COLUMN   JSON: rows, sum(COLUMN) and the Delta version
                                each reader sees, deletes applied

DIR is a directory or an s3:// URL; for the latter the `AWS_*` variables
(AWS_ENDPOINT among them) say where the bucket is.

Each reader's answer is reported separately, so a test can tell which one
disagrees with Lookout.
"""

import json
import os
import sys

import polars as pl
from deltalake import DeltaTable, QueryBuilder

from native_exit import exit_without_teardown


def storage_options(path):
    """For an s3:// table, the store the `AWS_*` variables point at (the
    tests' moto server); nothing for a local directory."""
    if not path.startswith("s3://"):
        return None
    return {
        "AWS_ENDPOINT_URL": os.environ["AWS_ENDPOINT"],
        "AWS_ACCESS_KEY_ID": os.environ["AWS_ACCESS_KEY_ID"],
        "AWS_SECRET_ACCESS_KEY": os.environ["AWS_SECRET_ACCESS_KEY"],
        "AWS_REGION": os.environ.get("AWS_REGION", "us-east-1"),
        "AWS_ALLOW_HTTP": "true",
    }


def read(path, column):
    options = storage_options(path)
    table = DeltaTable(path, storage_options=options)
    # deltalake's DataFusion reader applies deletion vectors; its pyarrow
    # dataset path refuses tables that have them.
    result = (
        QueryBuilder()
        .register("t", table)
        .execute(f'SELECT count(*) AS rows, sum("{column}") AS total FROM t')
        .read_all()
    )
    lazy = pl.scan_delta(path, storage_options=options).select(
        pl.len().alias("rows"), pl.col(column).sum().alias("total")
    )
    frame = lazy.collect()
    return {
        "version": table.version(),
        "deltalake": {
            "rows": int(result.column("rows")[0].as_py()),
            "sum": float(result.column("total")[0].as_py() or 0),
        },
        "polars": {"rows": int(frame["rows"][0]), "sum": float(frame["total"][0] or 0)},
    }


if __name__ == "__main__":
    print(json.dumps(read(sys.argv[1], sys.argv[2])))
    exit_without_teardown()
