-- Parameters as drivers bind them (psycopg, server-side binding): lists,
-- timestamps, numbers and text, in text and in binary. Compared with
-- PostgreSQL by tests/differential/run.py.
CREATE TABLE calls (ts TIMESTAMPTZ NOT NULL, model TEXT NOT NULL, latency_ms DOUBLE PRECISION, tokens BIGINT);
INSERT INTO calls VALUES ('2025-03-01 00:00:00+00', 'a', 10.5, 100), ('2025-03-01 01:00:00+00', 'b', 20, 200), ('2025-03-01 02:00:00+00', 'c', 30, 300), ('2025-03-02 00:00:00+00', 'a', 40, 400);
-- params: [["a", "c"]]
SELECT count(*) FROM calls WHERE model = ANY(%s);
-- params: [["a", "c"]]
-- binary
SELECT count(*) FROM calls WHERE model = ANY(%s);
-- params: [[100, 400, 5]]
SELECT model FROM calls WHERE tokens = ANY(%s) ORDER BY ts;
-- params: [[100, 400, 5]]
-- binary
SELECT model FROM calls WHERE tokens = ANY(%s) ORDER BY ts;
-- params: [[10.5, 30.0]]
SELECT model FROM calls WHERE latency_ms = ANY(%s) ORDER BY ts;
-- params: [["x", "y z", None]]
SELECT x FROM unnest(%s::text[]) AS x;
-- params: [["x", "y z"]]
-- binary
SELECT x FROM unnest(%s::text[]) AS x;
-- params: ["ts:2025-03-01T00:30:00+00:00"]
SELECT count(*) FROM calls WHERE ts > %s;
-- params: ["ts:2025-03-01T00:30:00+00:00"]
-- binary
SELECT count(*) FROM calls WHERE ts > %s;
-- params: ["ts:2025-03-01T00:00:00+00:00", "ts:2025-03-01T12:00:00+00:00"]
SELECT model FROM calls WHERE ts >= %s AND ts < %s ORDER BY ts;
-- params: ["date:2025-03-02"]
SELECT count(*) FROM calls WHERE ts >= %s;
-- params: ["a"]
SELECT count(*), sum(tokens) FROM calls WHERE model = %s;
-- params: ["a"]
-- binary
SELECT count(*), sum(tokens) FROM calls WHERE model = %s;
-- params: [15]
SELECT count(*) FROM calls WHERE latency_ms > %s;
-- params: [15.5]
-- binary
SELECT count(*) FROM calls WHERE latency_ms > %s;
-- params: [2]
SELECT model FROM calls ORDER BY ts LIMIT %s;
-- params: ["%a%"]
SELECT count(*) FROM calls WHERE model LIKE %s;
-- params: [None]
SELECT count(*) FROM calls WHERE model = %s;
-- params: ["ts:2025-03-03T00:00:00+00:00", "d", 1.5, 7]
INSERT INTO calls VALUES (%s, %s, %s, %s);
-- params: ["ts:2025-03-03T00:00:00+00:00", "e", 2.5, 8]
-- binary
INSERT INTO calls VALUES (%s, %s, %s, %s);
-- params: [99, "d"]
UPDATE calls SET tokens = %s WHERE model = %s;
-- params: [["e"]]
DELETE FROM calls WHERE model = ANY(%s);
SELECT model, tokens FROM calls ORDER BY ts, model;
-- params: ["ts:2025-03-04T00:00:00+00:00", "f", 3.5, 9]
INSERT INTO calls VALUES (%s, %s, %s, %s) RETURNING model, tokens * 2 AS doubled;
-- params: ["ts:2025-03-04T00:00:00+00:00", "g", 4.5, 10]
-- binary
INSERT INTO calls VALUES (%s, %s, %s, %s) RETURNING *;
-- params: [5, "f"]
UPDATE calls SET tokens = tokens + %s WHERE model = %s RETURNING model, tokens;
-- params: [False]
DELETE FROM calls WHERE %s RETURNING model;
-- params: [["f", "g"]]
-- binary
DELETE FROM calls WHERE model = ANY(%s) RETURNING model, tokens;
SELECT model, tokens FROM calls ORDER BY ts, model;
-- params: ["ts:2025-03-01T00:00:00+00:00"]
SELECT %s::timestamptz + interval '1 hour';
-- params: [3]
SELECT interval '1 hour' * %s;
-- params: ["hello", "héllo"]
SELECT upper(%s), length(%s::text);
