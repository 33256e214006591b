-- Float arrays (embeddings) and real values: literals in PostgreSQL's text
-- form, ARRAY[...], casts, NULL elements and how they print. Compared with
-- PostgreSQL by tests/differential/run.py.
CREATE TABLE emb (ts TIMESTAMPTZ NOT NULL, e REAL[], d DOUBLE PRECISION[], r REAL);
INSERT INTO emb VALUES ('2025-03-01 00:00:00+00', '{0.1,0.2,0.3}', '{0.1,0.2,0.3}', 0.1);
INSERT INTO emb VALUES ('2025-03-01 00:01:00+00', ARRAY[1.5, -2, 1e-7], ARRAY[1.5, -2, 1e-7], 1234567);
INSERT INTO emb VALUES ('2025-03-01 00:02:00+00', '{1,NULL,3}', '{1e20,NULL}', 123456.7);
INSERT INTO emb (ts, e) VALUES ('2025-03-01 00:03:00+00', CAST('{4.25,5}' AS REAL[]));
INSERT INTO emb (ts, d) VALUES ('2025-03-01 00:04:00+00', '{}');
SELECT e, d, r FROM emb ORDER BY ts;
SELECT count(*) FROM emb WHERE e IS NULL;
