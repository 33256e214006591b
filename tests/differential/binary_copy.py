"""Binary COPY FROM STDIN sent by psycopg to PostgreSQL and to Lookout.

psycopg's `copy.write_row` in binary mode (with `set_types`, as its docs
ask) writes PostgreSQL's binary COPY format; pgjdbc's bulk loaders write
the same. Each scenario loads rows into both servers and compares what a
SELECT returns, or the SQLSTATE of the refusal and that nothing was stored.

Usage: binary_copy.py "<postgres dsn>" "<lookout dsn>"
"""

import datetime as dt
import struct
import sys

import psycopg
from psycopg.types.json import Jsonb

COLUMNS = "ts TIMESTAMPTZ NOT NULL, model TEXT, n BIGINT, i INT, s SMALLINT, x DOUBLE PRECISION, r REAL, ok BOOLEAN, d DATE, raw BYTEA"
TYPES = ["timestamptz", "text", "int8", "int4", "int2", "float8", "float4", "bool", "date", "bytea"]
T0 = dt.datetime(2025, 1, 6, 12, 0, tzinfo=dt.timezone.utc)


def rows(count):
    for k in range(count):
        yield (
            T0 + dt.timedelta(seconds=k * 37, microseconds=k),
            None if k % 11 == 0 else f"m-{k % 5} é\t\\\"'",
            None if k % 13 == 0 else k * 1_000_003 - 2**40,
            -k,
            k % 300 - 150,
            None if k % 7 == 0 else k / 3.0,
            k * 0.25,
            None if k % 5 == 0 else k % 2 == 0,
            dt.date(1999, 12, 30) + dt.timedelta(days=k),
            None if k % 3 == 0 else bytes([k % 256, 0, 255]),
        )


def copy_into(conn, table, columns, send):
    """Creates `table`, runs a binary COPY into it with `send(copy)`; the
    SQLSTATE if refused."""
    cur = conn.cursor()
    cur.execute(f"DROP TABLE IF EXISTS {table}")
    cur.execute(f"CREATE TABLE {table} ({columns})")
    try:
        with cur.copy(f"COPY {table} FROM STDIN WITH (FORMAT binary)") as copy:
            send(copy)
        return None
    except psycopg.Error as e:
        return e.sqlstate


def load(conn, table, data, types=TYPES, columns=COLUMNS):
    """Loads `data` with psycopg's binary `write_row`."""
    def send(copy):
        copy.set_types(types)
        for row in data:
            copy.write_row(row)
    return copy_into(conn, table, columns, send)


def raw_load(conn, table, payload):
    """Loads hand-made binary COPY bytes."""
    return copy_into(conn, table, "ts TIMESTAMPTZ NOT NULL, n BIGINT", lambda copy: copy.write(payload))


def contents(conn, table, columns="*"):
    cur = conn.cursor()
    cur.execute(f"SELECT {columns} FROM {table} ORDER BY ts")
    return cur.fetchall()


HEADER = b"PGCOPY\n\xff\r\n\x00" + struct.pack(">ii", 0, 0)


def tuple_of(*fields):
    out = struct.pack(">h", len(fields))
    for f in fields:
        out += struct.pack(">i", -1) if f is None else struct.pack(">i", len(f)) + f
    return out


TS = struct.pack(">q", 789_000_000_000_000)
TRAILER = struct.pack(">h", -1)

RAW = {
    "two rows, no trailer": HEADER + tuple_of(TS, struct.pack(">q", 1)) + tuple_of(TS, None),
    "bad signature": b"PGCOPY\nXX" + HEADER[9:] + TRAILER,
    "a bigint field of four bytes": HEADER + tuple_of(TS, struct.pack(">i", 1)) + TRAILER,
    "a bigint field of nine bytes": HEADER + tuple_of(TS, struct.pack(">qb", 1, 0)) + TRAILER,
    "a timestamptz field of zero bytes": HEADER + tuple_of(b"", None) + TRAILER,
    "three fields for two columns": HEADER + tuple_of(TS, None, None) + TRAILER,
    "NULL into NOT NULL": HEADER + tuple_of(None, None) + TRAILER,
    "data after the trailer": HEADER + TRAILER + b"\x00",
    "a truncated tuple": HEADER + tuple_of(TS, struct.pack(">q", 1))[:-3],
}


def main():
    postgres = psycopg.connect(sys.argv[1], autocommit=True)
    lookout = psycopg.connect(sys.argv[2], autocommit=True)
    failed = 0
    total = 0

    def compare(name, want, got):
        nonlocal failed, total
        total += 1
        if want != got:
            failed += 1
            print(f"DIFFER {name}:\n  postgres: {want!r}\n  lookout:  {got!r}")

    data = list(rows(2000))
    compare("load 2,000 typed rows", load(postgres, "bin_rows", data), load(lookout, "bin_rows", data))
    compare("the loaded rows", contents(postgres, "bin_rows"), contents(lookout, "bin_rows"))

    # psycopg dumps a Python int as the type set for the column; a column
    # typed int8 on the client but int4 on the server is a wrong-size field.
    wrong = list(TYPES)
    wrong[3] = "int8"
    compare(
        "an int8 field into an int column",
        load(postgres, "bin_wrong", data[:3], types=wrong),
        load(lookout, "bin_wrong", data[:3], types=wrong),
    )
    compare("nothing stored after the refusal", contents(postgres, "bin_wrong"), contents(lookout, "bin_wrong"))
    nul = [(T0, b"a\x00b", None, None, None, None, None, None, None, None)]
    compare(
        "text with a NUL byte",
        load(postgres, "bin_nul", nul, types=["timestamptz", "bytea"] + TYPES[2:]),
        load(lookout, "bin_nul", nul, types=["timestamptz", "bytea"] + TYPES[2:]),
    )
    docs = [(T0 + dt.timedelta(seconds=k), Jsonb(doc)) for k, doc in enumerate(
        [{"b": 1, "a": [1, 2.5, None]}, "text", 3, {"nested": {"é": True}}, None]
    )]
    jsonb = dict(types=["timestamptz", "jsonb"], columns="ts TIMESTAMPTZ NOT NULL, j JSONB")
    compare("jsonb documents", load(postgres, "bin_json", docs, **jsonb), load(lookout, "bin_json", docs, **jsonb))
    compare("the documents", contents(postgres, "bin_json", "ts, j::text"), contents(lookout, "bin_json", "ts, j::text"))
    # Embeddings: float4[] and float8[] in PostgreSQL's binary array format,
    # NULL arrays and NULL elements; values a real holds exactly or not.
    vectors = [
        (T0 + dt.timedelta(seconds=k), [k * 0.1, -1.25, 3.0 + k], [k / 3.0, 2.0 ** -k, None if k % 4 == 0 else k])
        for k in range(40)
    ] + [(T0 + dt.timedelta(days=1), None, [])]
    arrays = dict(types=["timestamptz", "float4[]", "float8[]"], columns="ts TIMESTAMPTZ NOT NULL, e REAL[], d DOUBLE PRECISION[]")
    compare("float arrays", load(postgres, "bin_arrays", vectors, **arrays), load(lookout, "bin_arrays", vectors, **arrays))
    compare("the arrays", contents(postgres, "bin_arrays"), contents(lookout, "bin_arrays"))
    compare("the arrays as text", contents(postgres, "bin_arrays", "ts, e::text"), contents(lookout, "bin_arrays", "ts, e::text"))
    for name, payload in RAW.items():
        table = "bin_raw"
        compare(name, raw_load(postgres, table, payload), raw_load(lookout, table, payload))
        compare(f"{name}: rows stored", contents(postgres, table), contents(lookout, table))

    print(f"binary copy: {total - failed} of {total} comparisons agree")
    sys.exit(1 if failed else 0)


if __name__ == "__main__":
    main()
