-- NULL ordering, aggregates over NULLs and empty input, text of numbers,
-- repeated output names. Compared with PostgreSQL by tests/differential/run.py.
CREATE TABLE o (ts TIMESTAMPTZ NOT NULL, k TEXT, v DOUBLE PRECISION);
INSERT INTO o VALUES ('2025-01-01 00:00:00+00', 'a', 1), ('2025-01-01 00:01:00+00', NULL, 2), ('2025-01-01 00:02:00+00', 'b', NULL), ('2025-01-01 00:03:00+00', 'B', 3);
SELECT k FROM o ORDER BY k;
SELECT k FROM o ORDER BY k DESC;
SELECT v FROM o ORDER BY v;
SELECT v FROM o ORDER BY v DESC;
SELECT k, v FROM o ORDER BY v NULLS FIRST, k;
SELECT count(*), count(k), count(v), sum(v), avg(v), min(k), max(k) FROM o;
SELECT sum(v) FROM o WHERE false;
SELECT count(*) FROM o WHERE false;
SELECT max(v) FROM o WHERE false;
SELECT k, count(*) FROM o GROUP BY k ORDER BY k NULLS FIRST;
SELECT upper(k) AS u, count(*) FROM o GROUP BY upper(k) ORDER BY u;
SELECT k || '-' || v FROM o ORDER BY ts;
SELECT concat(k, v) FROM o ORDER BY ts;
SELECT coalesce(k, 'none'), coalesce(v, -1) FROM o ORDER BY ts;
SELECT ts::date, ts::time FROM o ORDER BY o.ts LIMIT 1;
SELECT v::text, v::int, v AS "V", V, k AS Kind FROM o ORDER BY o.ts;
SELECT extract(epoch FROM ts)::bigint FROM o ORDER BY ts;
SELECT to_char(ts, 'HH24:MI') FROM o ORDER BY ts;
SELECT date_trunc('minute', ts) + interval '30 seconds' FROM o ORDER BY 1 LIMIT 2;
SELECT v::text, v::int, v::bigint FROM o ORDER BY ts;
SELECT 'x' || NULL, NULL || 'x';
SELECT length(NULL::text), upper(NULL);
SELECT CASE WHEN v > 1 THEN 'big' END FROM o ORDER BY ts;
SELECT v / 2, v * 2, -v FROM o ORDER BY ts;
SELECT round(v::numeric / 3, 2) FROM o ORDER BY ts;
SELECT k FROM o WHERE k IN (SELECT k FROM o WHERE v > 1) ORDER BY k;
SELECT k FROM o WHERE k NOT IN (SELECT k FROM o WHERE v > 2);
SELECT DISTINCT ON (k) k, v FROM o ORDER BY k, v;
SELECT string_agg(k, ',') FROM o;
SELECT string_agg(k, ',' ORDER BY ts) FROM o;
SELECT array_agg(v ORDER BY ts) FROM o;
SELECT k, row_number() OVER (ORDER BY ts DESC) FROM o ORDER BY ts;
SELECT v, sum(v) OVER (ORDER BY ts) FROM o ORDER BY ts;
SELECT lower(k) = 'b', count(*) FROM o GROUP BY 1 ORDER BY 1;
-- A condition guards the one to its right, as PostgreSQL evaluates AND and
-- OR from the left: no division by zero, no logarithm of zero.
SELECT count(*) FROM (VALUES (0.0::float8, 1.0::float8), (2.0, 4.0), (NULL, 1.0)) t(d, n) WHERE d <> 0 AND n / d > 1;
SELECT count(*) FROM (VALUES (0, 1), (2, 4)) t(d, n) WHERE d <> 0 AND n / d > 1;
SELECT count(*) FROM (VALUES (0, 1), (2, 4)) t(d, n) WHERE d = 0 OR n % d = 0;
SELECT x, x > 0 AND ln(x) > 0 AS positive_log FROM (VALUES (0.0::float8), (2.0), (NULL)) t(x) ORDER BY x NULLS LAST;
SELECT count(*) FROM (VALUES (0.0::float8), (2.0)) t(x) WHERE x > 0 AND ln(x) > 0 AND x < 10;
SELECT count(*) FROM (VALUES (0.0::float8, 1.0::float8)) t(d, n) WHERE n > 0 AND n / d > 1;
-- IS [NOT] DISTINCT FROM binds tighter than NOT, AND and OR, looser than
-- comparisons.
SELECT true IS DISTINCT FROM false AND false, false IS NOT DISTINCT FROM false OR true AND false;
SELECT k, v FROM o WHERE k IS DISTINCT FROM 'a' AND v IS NOT DISTINCT FROM 2 ORDER BY ts;
SELECT count(*) FROM o WHERE k IS NOT DISTINCT FROM 'b' OR v IS DISTINCT FROM NULL AND v > 2;
SELECT k, NOT k IS DISTINCT FROM 'a', k = 'b' IS NOT DISTINCT FROM true FROM o ORDER BY ts;
-- A unary minus binds tighter than ^ (and than * and +).
SELECT -2 ^ 2, - 3 ^ 2 * 2, -(2) ^ 3, -2::float8 ^ 2, 2 - -2 ^ 2, -v ^ 2 FROM o ORDER BY ts;
