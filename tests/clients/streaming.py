"""Reads the table `big` through one streaming interface of a Python driver
and checks every row: its count and sums against the server's own, and each
label against md5 of its number. The test that runs this watches the
server's memory meanwhile (tests/integration/streaming.rs).

Usage: streaming.py PORT INTERFACE
INTERFACE: psycopg-text | psycopg-binary | psycopg-copy | pandas-chunks |
asyncpg-cursor
"""

import asyncio
import hashlib
import sys

QUERY = "SELECT n, label FROM big"
FETCH = 1000


class Tally:
    def __init__(self):
        self.rows = self.total = self.squares = 0

    def add(self, n, label):
        n = int(n)
        if label != hashlib.md5(str(n).encode()).hexdigest() * 8:
            raise AssertionError(f"row {n}: label {label[:40]}...")
        self.rows += 1
        self.total += n
        self.squares += n * n

    def as_tuple(self):
        return (self.rows, self.total, self.squares)


def expected(dsn):
    import psycopg

    with psycopg.connect(dsn, autocommit=True) as conn:
        row = conn.execute(
            "SELECT count(*), sum(n), sum(n * n) FROM big"
        ).fetchone()
    return (row[0], row[1], row[2])


def psycopg_cursor(dsn, binary):
    import psycopg

    tally = Tally()
    with psycopg.connect(dsn) as conn:
        with conn.cursor(name="big_rows", binary=binary) as cur:
            cur.itersize = FETCH
            cur.execute(QUERY)
            for n, label in cur:
                tally.add(n, label)
    return tally


def psycopg_copy(dsn):
    import psycopg

    tally = Tally()
    with psycopg.connect(dsn, autocommit=True) as conn:
        with conn.cursor().copy(f"COPY ({QUERY}) TO STDOUT") as copy:
            for n, label in copy.rows():
                tally.add(n, label)
    return tally


def pandas_chunks(port):
    import pandas as pd
    import sqlalchemy as sa

    tally = Tally()
    engine = sa.create_engine(f"postgresql+psycopg://lookout@127.0.0.1:{port}/lookout")
    with engine.connect().execution_options(stream_results=True, max_row_buffer=FETCH) as c:
        for chunk in pd.read_sql(sa.text(QUERY), c, chunksize=10 * FETCH):
            for n, label in zip(chunk["n"], chunk["label"]):
                tally.add(n, label)
    return tally


async def asyncpg_cursor(port):
    import asyncpg

    tally = Tally()
    conn = await asyncpg.connect(host="127.0.0.1", port=port, user="lookout", database="lookout")
    try:
        async with conn.transaction():
            async for record in conn.cursor(QUERY, prefetch=FETCH):
                tally.add(record["n"], record["label"])
    finally:
        await conn.close()
    return tally


def main():
    port, interface = int(sys.argv[1]), sys.argv[2]
    dsn = f"host=127.0.0.1 port={port} user=lookout dbname=lookout"
    if interface == "psycopg-text":
        tally = psycopg_cursor(dsn, binary=False)
    elif interface == "psycopg-binary":
        tally = psycopg_cursor(dsn, binary=True)
    elif interface == "psycopg-copy":
        tally = psycopg_copy(dsn)
    elif interface == "pandas-chunks":
        tally = pandas_chunks(port)
    elif interface == "asyncpg-cursor":
        tally = asyncio.run(asyncpg_cursor(port))
    else:
        raise SystemExit(f"unknown interface {interface}")
    rows, total, squares = expected(dsn)
    got = tally.as_tuple()
    if got != (rows, total, squares):
        raise AssertionError(f"{interface}: read {got}, the table holds {(rows, total, squares)}")
    print(f"{interface}: {rows} rows ok")


if __name__ == "__main__":
    main()
