"""Transactions and list parameters the way Python code uses them.

Usage: transactions.py PORT

- psycopg 3 (not autocommit, its default): rows written in a transaction are
  seen by it and not by others until commit; rollback discards inserts,
  deletes and updates; an error aborts the transaction (25P02 until
  rollback); a connection closed inside a transaction leaves nothing.
- SQLAlchemy: a session that fails rolls back.
- Lists as parameters: `= ANY(%s)` and `unnest(%s::text[])` with text and
  binary parameters (psycopg), and asyncpg's typed arrays.
- asyncpg: `async with conn.transaction()` commits, and rolls back on an
  exception.
"""

import asyncio
import sys

import asyncpg
import psycopg
import sqlalchemy
from sqlalchemy.orm import Session


def check(cond, what):
    if not cond:
        raise AssertionError(what)


def count(conn, where="true"):
    return conn.execute(f"SELECT count(*) FROM tx WHERE {where}").fetchone()[0]


def main():
    port = int(sys.argv[1])
    dsn = f"host=127.0.0.1 port={port} user=lookout dbname=lookout"
    other = psycopg.connect(dsn, autocommit=True)
    other.execute("CREATE TABLE tx (ts TIMESTAMPTZ NOT NULL, model TEXT, v BIGINT)")
    other.execute(
        "INSERT INTO tx VALUES ('2026-01-01 00:00:00+00', 'a', 1), ('2026-01-01 00:01:00+00', 'b', 2)"
    )

    conn = psycopg.connect(dsn)
    conn.execute("INSERT INTO tx VALUES ('2026-01-01 00:02:00+00', 'c', 3)")
    check(count(conn) == 3, "the transaction sees its insert")
    check(count(other) == 2, "others do not")
    conn.execute("DELETE FROM tx WHERE model = 'a'")
    conn.execute("UPDATE tx SET v = 20 WHERE model = 'b'")
    check(count(conn) == 2 and count(conn, "v = 20") == 1, "it sees its delete and update")
    check(count(other, "v = 20") == 0, "others see neither")
    conn.rollback()
    check(count(other) == 2 and count(other, "v = 20") == 0, "rollback discarded all three")

    conn.execute("INSERT INTO tx VALUES ('2026-01-01 00:03:00+00', 'd', 4)")
    conn.execute("UPDATE tx SET v = v * 10 WHERE model = 'b'")
    conn.commit()
    check(count(other) == 3 and count(other, "v = 20") == 1, "commit made both visible")

    conn.execute("INSERT INTO tx VALUES ('2026-01-01 00:04:00+00', 'e', 5)")
    try:
        conn.execute("SELECT 1 / 0")
        check(False, "division by zero fails")
    except psycopg.errors.DivisionByZero:
        pass
    try:
        conn.execute("SELECT 1")
        check(False, "an aborted transaction refuses statements")
    except psycopg.errors.InFailedSqlTransaction:
        pass
    conn.rollback()
    check(count(other, "model = 'e'") == 0, "the aborted transaction left nothing")

    conn.execute("INSERT INTO tx VALUES ('2026-01-01 00:05:00+00', 'f', 6)")
    conn.close()
    check(count(other, "model = 'f'") == 0, "a connection closed inside a transaction left nothing")

    try:
        conn = psycopg.connect(dsn)
        conn.execute("CREATE TABLE not_here (ts TIMESTAMPTZ)")
        check(False, "DDL inside a transaction is refused")
    except psycopg.errors.FeatureNotSupported:
        conn.rollback()
    conn.close()

    # SQLAlchemy: the session rolls back when a statement fails.
    engine = sqlalchemy.create_engine(f"postgresql+psycopg://lookout@127.0.0.1:{port}/lookout")
    with Session(engine) as session:
        session.execute(sqlalchemy.text("INSERT INTO tx VALUES ('2026-01-01 00:06:00+00', 'g', 7)"))
        try:
            session.execute(sqlalchemy.text("SELECT v / 0 FROM tx"))
            check(False, "the failing statement fails")
        except sqlalchemy.exc.DataError:
            session.rollback()
    with Session(engine) as session:
        session.execute(sqlalchemy.text("INSERT INTO tx VALUES ('2026-01-01 00:07:00+00', 'h', 8)"))
        session.commit()
    check(count(other, "model = 'g'") == 0 and count(other, "model = 'h'") == 1, "SQLAlchemy sessions")
    engine.dispose()

    # Lists as parameters, in text and in binary.
    for binary in (False, True):
        cur = other.cursor(binary=binary)
        n = cur.execute("SELECT count(*) FROM tx WHERE model = ANY(%s)", [["b", "d", "zz"]]).fetchone()[0]
        check(n == 2, f"= ANY(list) binary={binary}: {n}")
        n = cur.execute("SELECT count(*) FROM tx WHERE v = ANY(%s)", [[20, 4]]).fetchone()[0]
        check(n == 2, f"= ANY(int list) binary={binary}: {n}")
        got = [r[0] for r in cur.execute("SELECT x FROM unnest(%s::text[]) AS x", [["p", "q r", None]])]
        check(got == ["p", "q r", None], f"unnest(list) binary={binary}: {got}")

    asyncio.run(async_part(port))
    print("transactions and list parameters: ok")


async def async_part(port):
    conn = await asyncpg.connect(host="127.0.0.1", port=port, user="lookout", database="lookout")
    n = await conn.fetchval("SELECT count(*) FROM tx WHERE model = ANY($1::text[])", ["b", "d"])
    check(n == 2, f"asyncpg ANY(text[]): {n}")
    async with conn.transaction():
        await conn.execute("INSERT INTO tx VALUES ('2026-01-01 00:08:00+00', 'i', 9)")
    try:
        async with conn.transaction():
            await conn.execute("INSERT INTO tx VALUES ('2026-01-01 00:09:00+00', 'j', 10)")
            raise RuntimeError("give up")
    except RuntimeError:
        pass
    i = await conn.fetchval("SELECT count(*) FROM tx WHERE model = 'i'")
    j = await conn.fetchval("SELECT count(*) FROM tx WHERE model = 'j'")
    check((i, j) == (1, 0), f"asyncpg transactions: {(i, j)}")
    await conn.close()


if __name__ == "__main__":
    main()
