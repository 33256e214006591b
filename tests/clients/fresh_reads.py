"""Every execution of a statement a driver prepared on the server sees the
data of that moment: psycopg 3 with its default threshold (prepares on the
fifth run) and with prepare_threshold=0 (at once), and asyncpg (prepares and
caches every query).

Usage: fresh_reads.py PORT
One connection writes 500-row batches into a fresh table; after each, every
reader runs the same count and must see every batch, then none of the deleted
ones. Exits non-zero on the first stale answer.
"""

import asyncio
import sys

import asyncpg
import psycopg

BATCHES = 8
ROWS = 500


def check(cond, what):
    if not cond:
        raise AssertionError(what)


def main():
    port = int(sys.argv[1])
    dsn = f"host=127.0.0.1 port={port} user=lookout dbname=lookout"
    writer = psycopg.connect(dsn, autocommit=True)
    writer.execute("CREATE TABLE fresh (ts TIMESTAMPTZ NOT NULL, batch BIGINT, v BIGINT)")

    readers = {}
    for name, threshold in [("psycopg default", 5), ("psycopg prepare_threshold=0", 0)]:
        conn = psycopg.connect(dsn, autocommit=True)
        conn.prepare_threshold = threshold
        readers[name] = conn

    loop = asyncio.new_event_loop()
    apg = loop.run_until_complete(asyncpg.connect(host="127.0.0.1", port=port, user="lookout", database="lookout"))

    def read_all():
        seen = {}
        for name, conn in readers.items():
            seen[name] = conn.execute("SELECT count(*) FROM fresh WHERE batch >= %s", (0,)).fetchone()[0]
        seen["asyncpg"] = loop.run_until_complete(apg.fetchval("SELECT count(*) FROM fresh WHERE batch >= $1", 0))
        return seen

    for batch in range(1, BATCHES + 1):
        writer.execute(
            "INSERT INTO fresh SELECT now(), %s, v FROM generate_series(1, 500) AS g(v)", (batch,)
        )
        for name, n in read_all().items():
            check(n == batch * ROWS, f"{name}: after batch {batch} saw {n} rows, not {batch * ROWS}")
        # Several runs per batch, so psycopg's default threshold is crossed.
        for _ in range(2):
            read_all()

    writer.execute("DELETE FROM fresh WHERE batch <= 3")
    for name, n in read_all().items():
        check(n == (BATCHES - 3) * ROWS, f"{name}: after the delete saw {n} rows")
    loop.run_until_complete(apg.close())
    print("fresh reads: ok")


if __name__ == "__main__":
    main()
