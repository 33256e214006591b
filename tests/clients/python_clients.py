"""Drives a running Lookout with real Python clients: psycopg 3 (text and
binary, server-side prepared statements, executemany, COPY), asyncpg (binary
throughout), SQLAlchemy 2's inspector and pandas.read_sql.

Usage: python_clients.py PORT ROWS
The server holds `events` (ROWS bench rows) and an empty table
`client_notes (ts timestamptz, model text, value double precision, ok boolean)`.
Each client connects, introspects, queries the bench data, inserts, and goes on
after a failing statement. Exits non-zero on the first wrong answer.
"""

import asyncio
import datetime as dt
import io
import sys
from decimal import Decimal

import asyncpg
import pandas as pd
import psycopg
import sqlalchemy as sa

UTC = dt.timezone.utc
T0 = dt.datetime(2025, 1, 1, tzinfo=UTC)


def check(cond, what):
    if not cond:
        raise AssertionError(what)


def per_model_sql():
    return "SELECT model, count(*) AS n FROM events GROUP BY model ORDER BY model"


def psycopg_client(port, rows, binary):
    name = f"psycopg {'binary' if binary else 'text'}"
    dsn = f"host=127.0.0.1 port={port} user=lookout dbname=lookout application_name=pytest"
    # Default (non-autocommit) mode: psycopg wraps statements in BEGIN/COMMIT.
    with psycopg.connect(dsn) as conn:
        check(conn.info.server_version >= 160000, f"{name}: server_version {conn.info.server_version}")
        check(conn.info.parameter_status("client_encoding") == "UTF8", f"{name}: client_encoding")
        cur = conn.cursor(binary=binary)

        # Grafana's pgx pings with a comment-only query: an empty query response.
        check(cur.execute("-- ping").pgresult.status == psycopg.pq.ExecStatus.EMPTY_QUERY, f"{name}: ping")

        cur.execute("SELECT version()")
        check(cur.fetchone()[0].startswith("PostgreSQL 16"), f"{name}: version()")

        cur.execute(per_model_sql())
        counts = cur.fetchall()
        check(sum(n for _, n in counts) == rows, f"{name}: per-model counts sum to {rows}: {counts}")
        check(all(isinstance(n, int) for _, n in counts), f"{name}: count is int")

        # Typed values in both formats.
        cur.execute(
            "SELECT ts, latency_ms, prompt_tokens, status, feedback, latency_ms > 100 AS slow "
            "FROM events ORDER BY ts, request_id LIMIT 5"
        )
        first = cur.fetchall()
        check(len(first) == 5, f"{name}: 5 rows")
        ts, lat, tokens, status, feedback, slow = first[0]
        check(isinstance(ts, dt.datetime) and ts.tzinfo is not None, f"{name}: ts is tz-aware: {ts!r}")
        check(isinstance(lat, float), f"{name}: latency float")
        check(isinstance(tokens, int), f"{name}: tokens int")
        check(isinstance(status, str), f"{name}: status str")
        check(isinstance(slow, bool) and slow == (lat > 100), f"{name}: bool")

        cur.execute(
            "SELECT CAST(12.25 AS NUMERIC(10,2)), INTERVAL '1 day 2 hours 3.5 seconds', "
            "DATE '2025-01-02', CAST('ab' AS BYTEA), ARRAY[1, 2, 3], ARRAY['x', 'y']"
        )
        num, iv, day, raw, ints, texts = cur.fetchone()
        check(num == Decimal("12.25"), f"{name}: numeric {num!r}")
        check(iv == dt.timedelta(days=1, hours=2, seconds=3.5), f"{name}: interval {iv!r}")
        check(day == dt.date(2025, 1, 2), f"{name}: date {day!r}")
        check(bytes(raw) == b"ab", f"{name}: bytea {raw!r}")
        check(ints == [1, 2, 3], f"{name}: int array {ints!r}")
        check(texts == ["x", "y"], f"{name}: text array {texts!r}")

        # Parameters: a timestamptz, a text and a float, server-side prepared.
        model = counts[0][0]
        for _ in range(3):
            cur.execute(
                "SELECT count(*) FROM events WHERE model = %s AND ts >= %s AND latency_ms >= %s",
                (model, T0, 0.0),
                prepare=True,
            )
            check(cur.fetchone()[0] == counts[0][1], f"{name}: prepared count for {model}")

        # executemany and COPY into the notes table.
        tag = "b" if binary else "t"
        notes = [(T0 + dt.timedelta(minutes=i), f"{tag}-many", float(i), i % 2 == 0) for i in range(20)]
        cur.executemany(
            "INSERT INTO client_notes (ts, model, value, ok) VALUES (%s, %s, %s, %s)", notes
        )
        with cur.copy("COPY client_notes (ts, model, value, ok) FROM STDIN") as copy:
            for i in range(30):
                copy.write_row((T0 + dt.timedelta(hours=i), f"{tag}-copy", i * 0.5, True))
        conn.commit()
        cur.execute(
            "SELECT model, count(*), sum(value) FROM client_notes WHERE model LIKE %s "
            "GROUP BY model ORDER BY model",
            (f"{tag}-%",),
        )
        check(
            cur.fetchall() == [(f"{tag}-copy", 30, 217.5), (f"{tag}-many", 20, 190.0)],
            f"{name}: inserted rows",
        )
        out = io.BytesIO()
        with cur.copy("COPY (SELECT model FROM client_notes WHERE model = 'nothing') TO STDOUT") as copy:
            for block in copy:
                out.write(block)
        check(out.getvalue() == b"", f"{name}: COPY TO of no rows")

        # A failing statement: the right SQLSTATE, and the session goes on.
        try:
            cur.execute("SELECT * FROM no_such_table")
            check(False, f"{name}: missing table must fail")
        except psycopg.errors.UndefinedTable:
            conn.rollback()
        try:
            cur.execute("SELECT 1/0")
            cur.fetchall()
            check(False, f"{name}: division by zero must fail")
        except psycopg.errors.DivisionByZero:
            conn.rollback()
        cur.execute("SELECT count(*) FROM events")
        check(cur.fetchone()[0] == rows, f"{name}: session works after errors")


async def asyncpg_client(port, rows):
    conn = await asyncpg.connect(host="127.0.0.1", port=port, user="lookout", database="lookout")
    try:
        check(conn.get_server_version().major == 16, "asyncpg: server version")
        tables = await conn.fetch(
            "SELECT table_name, column_name, data_type FROM information_schema.columns "
            "WHERE table_schema = $1 AND table_name = $2 ORDER BY ordinal_position",
            "public",
            "events",
        )
        check(
            [tuple(r) for r in tables[:2]]
            == [("events", "ts", "timestamp with time zone"), ("events", "model", "text")],
            f"asyncpg: introspection {tables[:2]}",
        )
        counts = await conn.fetch(per_model_sql())
        check(sum(r["n"] for r in counts) == rows, "asyncpg: counts")

        row = await conn.fetchrow(
            "SELECT ts, latency_ms, prompt_tokens, status, latency_ms > 100 AS slow, "
            "CAST(3.5 AS NUMERIC(5,1)) AS num, INTERVAL '90 minutes' AS iv, DATE '2025-03-04' AS d, "
            "ARRAY[1.5, 2.5] AS fa FROM events ORDER BY ts, request_id LIMIT 1"
        )
        check(row["ts"].tzinfo is not None, "asyncpg: tz-aware ts")
        check(isinstance(row["latency_ms"], float), "asyncpg: float")
        check(isinstance(row["prompt_tokens"], int), "asyncpg: int")
        check(row["slow"] == (row["latency_ms"] > 100), "asyncpg: bool")
        check(row["num"] == Decimal("3.5"), f"asyncpg: numeric {row['num']!r}")
        check(row["iv"] == dt.timedelta(minutes=90), f"asyncpg: interval {row['iv']!r}")
        check(row["d"] == dt.date(2025, 3, 4), "asyncpg: date")
        check(row["fa"] == [1.5, 2.5], "asyncpg: float array")

        model = counts[0]["model"]
        n = await conn.fetchval(
            "SELECT count(*) FROM events WHERE model = $1 AND ts >= $2", model, T0
        )
        check(n == counts[0]["n"], "asyncpg: timestamptz parameter")
        stmt = await conn.prepare("SELECT count(*) FROM events WHERE latency_ms > $1")
        check(await stmt.fetchval(0.0) <= rows, "asyncpg: prepared statement")

        await conn.executemany(
            "INSERT INTO client_notes (ts, model, value, ok) VALUES ($1, $2, $3, $4)",
            [(T0 + dt.timedelta(seconds=i), "asyncpg", float(i), False) for i in range(10)],
        )
        total = await conn.fetchval(
            "SELECT sum(value) FROM client_notes WHERE model = $1 AND NOT ok", "asyncpg"
        )
        check(total == 45.0, f"asyncpg: inserted sum {total}")

        try:
            await conn.fetch("SELECT nope FROM events")
            check(False, "asyncpg: unknown column must fail")
        except asyncpg.exceptions.UndefinedColumnError:
            pass
        check(await conn.fetchval("SELECT 41 + 1") == 42, "asyncpg: session works after error")
    finally:
        await conn.close()


def sqlalchemy_client(port, rows):
    engine = sa.create_engine(f"postgresql+psycopg://lookout@127.0.0.1:{port}/lookout")
    insp = sa.inspect(engine)
    schemas = insp.get_schema_names()
    check("public" in schemas and "lookout" in schemas, f"sqlalchemy: schemas {schemas}")
    tables = insp.get_table_names()
    check({"events", "client_notes"} <= set(tables), f"sqlalchemy: tables {tables}")
    check(insp.has_table("events") and not insp.has_table("nope"), "sqlalchemy: has_table")
    columns = {c["name"]: c for c in insp.get_columns("events")}
    check(list(columns)[:3] == ["ts", "model", "model_version"], f"sqlalchemy: column order {list(columns)}")
    check(isinstance(columns["ts"]["type"], sa.TIMESTAMP) and columns["ts"]["type"].timezone,
          f"sqlalchemy: ts type {columns['ts']['type']!r}")
    check(isinstance(columns["latency_ms"]["type"], sa.Float), f"sqlalchemy: latency type {columns['latency_ms']['type']!r}")
    check(isinstance(columns["prompt_tokens"]["type"], sa.Integer), "sqlalchemy: int type")
    check(isinstance(columns["model"]["type"], sa.Text), f"sqlalchemy: text type {columns['model']['type']!r}")
    check(insp.get_pk_constraint("events")["constrained_columns"] == [], "sqlalchemy: no primary key")
    check(insp.get_foreign_keys("events") == [], "sqlalchemy: no foreign keys")
    check(insp.get_indexes("events") == [], "sqlalchemy: no indexes")
    check("alerts" in insp.get_view_names(schema="lookout"), "sqlalchemy: lookout views")

    df = pd.read_sql(per_model_sql(), engine)
    check(int(df["n"].sum()) == rows, "pandas: counts")
    df = pd.read_sql(
        sa.text("SELECT ts, latency_ms FROM events WHERE ts < :t ORDER BY ts LIMIT 10"),
        engine,
        params={"t": T0 + dt.timedelta(days=1)},
    )
    check(len(df) == 10 and str(df["ts"].dtype).startswith("datetime64"), f"pandas: {df.dtypes}")
    with engine.begin() as conn:
        conn.execute(
            sa.text("INSERT INTO client_notes (ts, model, value, ok) VALUES (:ts, 'sqlalchemy', 1.0, true)"),
            {"ts": T0},
        )
    check(
        pd.read_sql("SELECT count(*) AS n FROM client_notes WHERE model = 'sqlalchemy'", engine)["n"][0] == 1,
        "sqlalchemy: insert",
    )
    engine.dispose()


def main():
    port, rows = int(sys.argv[1]), int(sys.argv[2])
    psycopg_client(port, rows, binary=False)
    psycopg_client(port, rows, binary=True)
    asyncio.run(asyncpg_client(port, rows))
    sqlalchemy_client(port, rows)
    print("all python clients ok")


if __name__ == "__main__":
    main()
