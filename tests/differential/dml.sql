-- Writes and transaction blocks: INSERT, UPDATE, DELETE, TRUNCATE,
-- BEGIN/COMMIT/ROLLBACK, savepoints and aborted blocks. Compared with
-- PostgreSQL by tests/differential/run.py.
CREATE TABLE calls (ts TIMESTAMPTZ NOT NULL, model TEXT NOT NULL, latency_ms DOUBLE PRECISION, status TEXT);
INSERT INTO calls VALUES ('2025-03-01 00:00:00+00', 'a', 10, 'ok'), ('2025-03-01 00:01:00+00', 'b', 20, 'ok'), ('2025-03-01 00:02:00+00', 'a', 30, 'error');
INSERT INTO calls (ts, model) VALUES ('2025-03-01 00:03:00+00', 'c');
INSERT INTO calls SELECT ts + interval '1 hour', model, latency_ms * 2, status FROM calls;
SELECT count(*) FROM calls;
SELECT model, latency_ms, status FROM calls ORDER BY ts;
UPDATE calls SET status = 'timeout' WHERE latency_ms > 50;
SELECT status, count(*) FROM calls GROUP BY status ORDER BY status NULLS LAST;
UPDATE calls SET latency_ms = latency_ms + 1, status = upper(status) WHERE model = 'a';
SELECT model, latency_ms, status FROM calls ORDER BY ts;
UPDATE calls SET latency_ms = NULL WHERE model = 'nobody';
UPDATE calls SET latency_ms = 0;
SELECT sum(latency_ms) FROM calls;
DELETE FROM calls WHERE model = 'c';
DELETE FROM calls WHERE status IS NULL;
SELECT count(*) FROM calls;
BEGIN;
INSERT INTO calls VALUES ('2025-03-02 00:00:00+00', 'd', 1, 'ok');
SELECT count(*) FROM calls WHERE model = 'd';
DELETE FROM calls WHERE model = 'a';
SELECT model, count(*) FROM calls GROUP BY model ORDER BY model;
UPDATE calls SET status = 'seen' WHERE model = 'd';
SELECT model, status FROM calls WHERE model = 'd';
ROLLBACK;
SELECT model, count(*) FROM calls GROUP BY model ORDER BY model;
SELECT count(*) FROM calls WHERE status = 'seen';
BEGIN;
INSERT INTO calls VALUES ('2025-03-02 00:00:00+00', 'e', 5, 'ok');
UPDATE calls SET latency_ms = 7 WHERE model = 'e';
DELETE FROM calls WHERE model = 'b';
COMMIT;
SELECT model, latency_ms FROM calls ORDER BY ts, model;
BEGIN;
INSERT INTO calls VALUES ('2025-03-03 00:00:00+00', 'f', 1, 'ok');
SELECT 1 / 0;
SELECT count(*) FROM calls;
INSERT INTO calls VALUES ('2025-03-03 00:00:00+00', 'g', 1, 'ok');
COMMIT;
SELECT count(*) FROM calls WHERE model IN ('f', 'g');
BEGIN;
INSERT INTO calls VALUES ('2025-03-04 00:00:00+00', 'h', 1, 'ok');
SAVEPOINT one;
INSERT INTO calls VALUES ('2025-03-04 00:00:00+00', 'i', 1, 'ok');
SELECT model FROM calls WHERE model IN ('h', 'i') ORDER BY model;
ROLLBACK TO SAVEPOINT one;
SELECT model FROM calls WHERE model IN ('h', 'i') ORDER BY model;
SAVEPOINT two;
SELECT 1 / 0;
ROLLBACK TO two;
INSERT INTO calls VALUES ('2025-03-04 00:00:00+00', 'j', 1, 'ok');
RELEASE SAVEPOINT two;
COMMIT;
SELECT model FROM calls WHERE model IN ('h', 'i', 'j') ORDER BY model;
ROLLBACK TO SAVEPOINT nowhere;
BEGIN;
RELEASE SAVEPOINT nowhere;
ROLLBACK;
COMMIT;
ROLLBACK;
BEGIN;
TRUNCATE calls;
SELECT count(*) FROM calls;
ROLLBACK;
SELECT count(*) FROM calls;
BEGIN;
-- unsupported: DDL inside a transaction block
CREATE TABLE more_calls (ts TIMESTAMPTZ NOT NULL);
ROLLBACK;
BEGIN;
INSERT INTO calls VALUES ('2025-03-05 00:00:00+00', 'k', 1, 'ok');
DELETE FROM calls WHERE model = 'k';
INSERT INTO calls VALUES ('2025-03-05 00:00:00+00', 'k', 2, 'ok');
UPDATE calls SET latency_ms = latency_ms * 10 WHERE model = 'k';
SELECT model, latency_ms FROM calls WHERE model = 'k';
COMMIT;
SELECT model, latency_ms FROM calls WHERE model = 'k';
START TRANSACTION;
DELETE FROM calls;
SELECT count(*) FROM calls;
COMMIT;
SELECT count(*) FROM calls;
INSERT INTO calls VALUES ('2025-03-06 00:00:00+00', 'l', 1, 'ok');
TRUNCATE calls;
SELECT count(*) FROM calls;
INSERT INTO calls VALUES (NULL, 'm', 1, 'ok');
INSERT INTO calls VALUES ('2025-03-06 00:00:00+00', NULL, 1, 'ok');
INSERT INTO calls VALUES ('2025-03-06 00:00:00+00', 'n', 'fast', 'ok');
INSERT INTO calls (ts, model, nope) VALUES ('2025-03-06 00:00:00+00', 'o', 1);
INSERT INTO nowhere VALUES (1);
UPDATE calls SET nope = 1;
UPDATE calls SET model = NULL;
SELECT count(*) FROM calls;
INSERT INTO calls VALUES ('2025-03-08 00:00:00+00', 'r', 5, 'ok'), ('2025-03-08 00:01:00+00', 's', 50, 'error');
CREATE VIEW slow_calls AS SELECT model, latency_ms FROM calls WHERE latency_ms > 10;
SELECT * FROM slow_calls ORDER BY model;
CREATE VIEW calls_per_status (s, n) AS SELECT status, count(*) FROM calls GROUP BY status;
SELECT s, n FROM calls_per_status ORDER BY s;
INSERT INTO calls VALUES ('2025-03-08 00:02:00+00', 't', 70, 'ok');
SELECT * FROM slow_calls ORDER BY model;
SELECT c.model, v.n FROM calls c JOIN calls_per_status v ON c.status = v.s ORDER BY c.model;
CREATE VIEW slow_calls AS SELECT 1;
CREATE OR REPLACE VIEW slow_calls AS SELECT model, latency_ms FROM calls WHERE latency_ms > 60;
SELECT * FROM slow_calls;
SELECT table_name FROM information_schema.views WHERE table_schema = 'public' ORDER BY table_name;
SELECT table_name, table_type FROM information_schema.tables WHERE table_schema = 'public' ORDER BY table_name;
CREATE VIEW broken AS SELECT nope FROM calls;
DROP VIEW calls_per_status;
DROP VIEW calls_per_status;
DROP VIEW IF EXISTS calls_per_status;
SELECT * FROM calls_per_status;
-- unsupported: RETURNING
INSERT INTO calls VALUES ('2025-03-07 00:00:00+00', 'p', 1, 'ok') RETURNING model;
-- unsupported: RETURNING
UPDATE calls SET latency_ms = 2 RETURNING model;
-- unsupported: RETURNING
DELETE FROM calls RETURNING model;
-- unsupported: ON CONFLICT
INSERT INTO calls VALUES ('2025-03-07 00:00:00+00', 'q', 1, 'ok') ON CONFLICT DO NOTHING;
-- unsupported: UPDATE ... FROM
UPDATE calls SET latency_ms = c2.latency_ms FROM calls c2 WHERE calls.model = c2.model;
-- unsupported: COMMENT ON
COMMENT ON TABLE calls IS 'LLM calls';
-- unsupported: json values
SELECT '{"a": 1}'::jsonb -> 'a';
-- unsupported: TABLESAMPLE
SELECT count(*) FROM calls TABLESAMPLE BERNOULLI (50);
