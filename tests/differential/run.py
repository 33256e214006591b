"""Runs SQL scripts on PostgreSQL and on Lookout and compares the answers.

Usage: run.py PG_DSN LOOKOUT_DSN FILE.sql

A script is a list of statements, each ending with `;` at the end of a line.
Every statement runs on both servers (autocommit, so BEGIN/COMMIT in the
script make the blocks) and must give the same answer: the same rows (in
order when the statement orders them, as a multiset otherwise) under the
same column names, the same row count for writes, or errors of the same SQLSTATE class. A comment line
right before a statement may say:

    -- unsupported: <why>   Lookout must refuse it with 0A000 (documented in
                            docs/sql.md); PostgreSQL's answer is not compared.
    -- unordered            compare as a multiset even with ORDER BY (ties).
    -- params: <literal>    run with these parameters (a Python literal list,
                            `%s` placeholders), bound server-side by psycopg.
    -- binary               ask for binary parameters and results.
    -- copy: <literal>      the statement is a COPY ... FROM STDIN; send it
                            these bytes (a Python bytes or str literal).

Prints one line per disagreement and a summary; exits 1 if any statement
disagrees.
"""

import ast
import datetime
import decimal
import math
import re
import sys

import psycopg


def statements(text):
    """(directives, statement) pairs of a script."""
    directives, lines = [], []
    for line in text.splitlines():
        stripped = line.strip()
        if not lines and stripped.startswith("--"):
            directives.append(stripped[2:].strip())
            continue
        if not lines and not stripped:
            continue
        lines.append(line)
        if stripped.endswith(";"):
            yield directives, "\n".join(lines).strip().rstrip(";")
            directives, lines = [], []
    if lines:
        yield directives, "\n".join(lines).strip().rstrip(";")


def norm(value):
    """A value in a form both servers' answers compare equal in."""
    if value is None:
        return None
    if isinstance(value, bool):
        return value
    if isinstance(value, (int, float, decimal.Decimal)):
        f = float(value)
        if math.isnan(f):
            return "NaN"
        if math.isinf(f):
            return "Infinity" if f > 0 else "-Infinity"
        if f == int(f) and abs(f) < 2**53:
            return int(f)
        return float(f"{f:.9g}")
    if isinstance(value, datetime.datetime):
        if value.tzinfo is not None:
            value = value.astimezone(datetime.timezone.utc).replace(tzinfo=None)
        return value.isoformat()
    if isinstance(value, (datetime.date, datetime.time)):
        return value.isoformat()
    if isinstance(value, datetime.timedelta):
        return value.total_seconds()
    if isinstance(value, (list, tuple)):
        return tuple(norm(v) for v in value)
    if isinstance(value, (bytes, bytearray, memoryview)):
        return bytes(value).hex()
    if isinstance(value, dict):
        return tuple(sorted((k, norm(v)) for k, v in value.items()))
    return str(value)


def eval_value(p):
    """Parameters: `"ts:<iso>"` is a datetime, `"date:<iso>"` a date."""
    if isinstance(p, str) and p.startswith("ts:"):
        return datetime.datetime.fromisoformat(p[3:])
    if isinstance(p, str) and p.startswith("date:"):
        return datetime.date.fromisoformat(p[5:])
    if isinstance(p, list):
        return [eval_value(v) for v in p]
    return p


def sort_key(row):
    return tuple((v is None, repr(v)) for v in row)


def answer(conn, sql, params=None, binary=False, copy_data=None):
    """('rows', rows) | ('count', n) | ('error', sqlstate, message)."""
    if copy_data is not None:
        try:
            cur = conn.cursor()
            with cur.copy(sql) as copy:
                copy.write(copy_data)
            return ("count", cur.rowcount)
        except psycopg.Error as e:
            return ("error", e.sqlstate or "?", str(e).splitlines()[0] if str(e) else "")
    try:
        cur = conn.cursor(binary=binary).execute(sql, params)
    except psycopg.Error as e:
        return ("error", e.sqlstate or "?", str(e).splitlines()[0] if str(e) else "")
    if cur.description is None:
        return ("count", cur.rowcount if cur.rowcount is not None else -1)
    names = tuple(d.name for d in cur.description)
    return ("rows", [tuple(norm(v) for v in row) for row in cur.fetchall()], names)


ORDERED = re.compile(r"\border\s+by\b[^()]*$", re.IGNORECASE | re.DOTALL)


def agree(sql, directives, pg, lo):
    if pg[0] == "error" or lo[0] == "error":
        return pg[0] == lo[0] and pg[1][:2] == lo[1][:2]
    if pg[0] != lo[0]:
        return False
    if pg[0] == "count":
        return pg[1] == lo[1]
    if pg[2] != lo[2]:
        return False
    ordered = ORDERED.search(sql) and "unordered" not in directives
    if ordered:
        return pg[1] == lo[1]
    return sorted(pg[1], key=sort_key) == sorted(lo[1], key=sort_key)


def show(result):
    if result[0] == "rows":
        rows = result[1]
        text = repr(result[2]) + " " + repr(rows[:5]) + (f" ... ({len(rows)} rows)" if len(rows) > 5 else "")
        return text[:400]
    return repr(result)[:400]


def main():
    pg_dsn, lookout_dsn, path = sys.argv[1:4]
    pg = psycopg.connect(pg_dsn, autocommit=True)
    lo = psycopg.connect(lookout_dsn, autocommit=True)
    pg.execute("SET TIME ZONE 'UTC'")
    total = agreed = refused = 0
    failures = []
    with open(path) as f:
        script = f.read()
    for directives, sql in statements(script):
        total += 1
        unsupported = [d for d in directives if d.startswith("unsupported")]
        params = next(
            (ast.literal_eval(d.split(":", 1)[1].strip()) for d in directives if d.startswith("params:")),
            None,
        )
        binary = "binary" in directives
        copy_data = next(
            (ast.literal_eval(d.split(":", 1)[1].strip()) for d in directives if d.startswith("copy:")),
            None,
        )
        if params is not None:
            params = [eval_value(p) for p in params]
        lo_answer = answer(lo, sql, params, binary, copy_data)
        if unsupported:
            if lo_answer[0] == "error" and lo_answer[1] == "0A000":
                refused += 1
                # Keep PostgreSQL's session in step (a refused BEGIN, say).
                answer(pg, sql, copy_data=copy_data)
            else:
                failures.append((sql, "(0A000 expected)", lo_answer))
            continue
        pg_answer = answer(pg, sql, params, binary, copy_data)
        if agree(sql, directives, pg_answer, lo_answer):
            agreed += 1
        else:
            failures.append((sql, pg_answer, lo_answer))
    for sql, pg_answer, lo_answer in failures:
        print(f"DIFFERS: {sql}")
        print(f"  postgres: {show(pg_answer) if not isinstance(pg_answer, str) else pg_answer}")
        print(f"  lookout:  {show(lo_answer)}")
    print(f"{path}: {agreed} of {total} statements agree with PostgreSQL, {refused} refused with 0A000 as documented, {len(failures)} differ")
    sys.exit(1 if failures else 0)


if __name__ == "__main__":
    main()
