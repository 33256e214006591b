"""Server-side cursors as Python drivers use them: psycopg 3 named cursors
(DECLARE, then Describe of the portal, then FETCH), with and without HOLD,
and SQLAlchemy's stream_results with pandas.read_sql(chunksize=...), which
run on them.

Usage: server_cursors.py PORT
"""

import sys

import pandas as pd
import psycopg
import sqlalchemy as sa

ROWS = 10_000


def check(cond, what):
    if not cond:
        raise AssertionError(what)


def main():
    port = int(sys.argv[1])
    dsn = f"host=127.0.0.1 port={port} user=lookout dbname=lookout"
    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute("CREATE TABLE streamed (ts TIMESTAMPTZ NOT NULL, n BIGINT, label TEXT)")
        conn.execute(
            f"INSERT INTO streamed SELECT now(), v, 'row ' || v FROM generate_series(1, {ROWS}) AS g(v)"
        )
    query = "SELECT n, label FROM streamed ORDER BY n"

    # Inside a transaction, as psycopg runs by default.
    with psycopg.connect(dsn) as conn:
        with conn.cursor(name="big") as cur:
            cur.itersize = 1000
            cur.execute(query)
            check([d.name for d in cur.description] == ["n", "label"], f"description {cur.description}")
            first = cur.fetchmany(3)
            check(first == [(1, "row 1"), (2, "row 2"), (3, "row 3")], f"first rows {first}")
            rest = list(cur)
            check(len(rest) == ROWS - 3 and rest[-1] == (ROWS, f"row {ROWS}"), f"{len(rest)} more rows")

    # WITH HOLD, in autocommit mode.
    with psycopg.connect(dsn, autocommit=True) as conn:
        with conn.cursor(name="Held Cursor", withhold=True) as cur:
            cur.execute(query)
            check(sum(1 for _ in cur) == ROWS, "held cursor rows")

    # SQLAlchemy + pandas in chunks.
    engine = sa.create_engine(f"postgresql+psycopg://lookout@127.0.0.1:{port}/lookout")
    with engine.connect().execution_options(stream_results=True, max_row_buffer=1000) as c:
        chunks = list(pd.read_sql(sa.text(query), c, chunksize=2500))
    check([len(x) for x in chunks] == [2500] * 4, f"chunks {[len(x) for x in chunks]}")
    check(int(chunks[-1]["n"].iloc[-1]) == ROWS, "last chunk")
    print("server-side cursors: ok")


if __name__ == "__main__":
    main()
