-- json and jsonb: columns, casts, the operators and the functions
-- monitoring queries use on LLM call metadata. Compared with PostgreSQL by
-- tests/differential/run.py; `::text` casts compare the exact text.
CREATE TABLE calls (ts TIMESTAMPTZ NOT NULL, model TEXT NOT NULL, meta JSONB, raw JSON);
INSERT INTO calls VALUES ('2025-03-01 00:00:00+00', 'a', '{"user": "u1", "tokens": {"in": 120, "out": 30}, "tags": ["rag", "prod"], "score": 0.75}', '{"b": 1,  "a": [1, 2]}');
INSERT INTO calls VALUES ('2025-03-01 00:01:00+00', 'b', '{"tags":["prod"],"user":"u2","tokens":{"in":80,"out":12},"score":1.50e0,"user":"u3"}', '[{"x": null}, "two", 3.0]');
INSERT INTO calls VALUES ('2025-03-01 00:02:00+00', 'a', '{"user": "u1", "tokens": {"in": 5, "out": 2}, "tags": [], "error": {"code": 429}}', 'null');
INSERT INTO calls VALUES ('2025-03-01 00:03:00+00', 'c', NULL, NULL);
INSERT INTO calls VALUES ('2025-03-01 00:04:00+00', 'c', '[1, "a", {"k": true}]', '"just text"');
SELECT model, meta::text, raw::text FROM calls ORDER BY ts;
SELECT model, meta, raw FROM calls ORDER BY ts;
SELECT meta -> 'user', meta ->> 'user' FROM calls ORDER BY ts;
SELECT (meta -> 'tokens')::text, meta -> 'tokens' ->> 'in' FROM calls ORDER BY ts;
SELECT meta #> '{tokens,out}', meta #>> '{tags,0}', meta #>> '{error,code}' FROM calls ORDER BY ts;
SELECT raw -> 'a', raw -> 1, raw ->> 1, raw -> -1, (raw -> 0)::text FROM calls ORDER BY ts;
SELECT meta -> 1, meta ->> 2, meta -> 'missing' FROM calls ORDER BY ts;
SELECT model, meta @> '{"user": "u1"}' FROM calls ORDER BY ts;
SELECT model, meta @> '{"tags": ["prod"]}', '{"tags": ["prod"]}' <@ meta FROM calls ORDER BY ts;
SELECT model, meta ? 'error', meta ?| ARRAY['error', 'score'], meta ?& ARRAY['user', 'score'] FROM calls ORDER BY ts;
SELECT model, jsonb_typeof(meta), jsonb_typeof(meta -> 'tags'), json_typeof(raw) FROM calls ORDER BY ts;
SELECT model, jsonb_array_length(meta -> 'tags') FROM calls WHERE meta ? 'tags' ORDER BY ts;
SELECT meta ->> 'user' AS u, count(*), sum((meta -> 'tokens' ->> 'in')::int) FROM calls WHERE meta ? 'user' GROUP BY 1 ORDER BY 1;
SELECT avg((meta ->> 'score')::double precision) FROM calls;
SELECT count(*) FROM calls WHERE meta -> 'tokens' ->> 'in' = '80';
SELECT count(*) FROM calls WHERE meta = '{"user": "u3", "tags": ["prod"], "tokens": {"out": 12, "in": 80}, "score": 1.50}';
SELECT jsonb_extract_path(meta, 'tokens', 'in'), jsonb_extract_path_text(meta, 'tags', '1') FROM calls ORDER BY ts;
SELECT jsonb_array_elements_text(meta -> 'tags') AS tag FROM calls WHERE model = 'a' ORDER BY 1;
SELECT model, jsonb_array_elements(meta -> 'tags') FROM calls WHERE model = 'b';
SELECT jsonb_object_keys(meta) AS k FROM calls WHERE model = 'b' ORDER BY 1;
SELECT '{"b": 1, "a": 2, "aa": 3, "a": 4}'::jsonb::text;
SELECT '{"b": 1, "a": 2}'::json::text;
SELECT '[1.50e1, 1e2, -0, 0.10, 1E-2, 12e-1]'::jsonb::text;
SELECT '"\u00e9\n\"x\"\\"'::jsonb::text, '"\u00e9"'::jsonb ->> 0;
SELECT jsonb '{"z": [true, false, null]}' -> 'z' -> 0;
SELECT '{"a": {"b": {"c": [10, 20]}}}'::jsonb #> '{a,b,c,1}';
SELECT '{"a": 1}'::jsonb || '{"b": 2}'::jsonb, '[1]'::jsonb || '[2, 3]'::jsonb, '[1]'::jsonb || '2'::jsonb;
SELECT '{"a": 1, "b": 2}'::jsonb || '{"a": 3}'::jsonb;
SELECT jsonb_build_object('model', 'gpt', 'tokens', 12, 'ok', true, 'none', NULL, 'score', 0.5);
SELECT json_build_object('b', 1, 'a', 'x')::text, jsonb_build_object('b', 1, 'a', 'x')::text;
SELECT jsonb_build_array(1, 'two', NULL, false), json_build_array(1, 'two')::text;
SELECT jsonb_build_object('at', TIMESTAMPTZ '2025-03-01 10:00:00+00', 'day', DATE '2025-03-01');
SELECT jsonb_build_object('meta', meta -> 'tokens', 'model', model) FROM calls WHERE model = 'b';
SELECT to_jsonb('text'::text), to_jsonb(42), to_jsonb(1.5::double precision), to_jsonb(true);
SELECT to_json('a "quoted" word'::text)::text;
SELECT '[1, 2, [3]]'::jsonb @> '[[3]]', '[1, 2]'::jsonb @> '1', '{"a": [1, 2]}'::jsonb @> '{"a": 1}';
SELECT '{"n": 1.0}'::jsonb @> '{"n": 1}', '"a"'::jsonb ? 'a', '["a", "b"]'::jsonb ? 'b';
SELECT jsonb_typeof('1.5'), jsonb_typeof('"s"'), jsonb_typeof('null'), jsonb_typeof('{}');
SELECT * FROM jsonb_array_elements('[1, "x", {"y": 2}]');
SELECT * FROM jsonb_array_elements_text('["a", null, 3]') AS e;
SELECT * FROM jsonb_object_keys('{"b": 1, "a": 2}');
SELECT '{"a":1'::jsonb;
SELECT '{"a": 01}'::jsonb;
SELECT '[1, 2,]'::json;
SELECT '"\u0000"'::jsonb;
SELECT jsonb_array_length('{"a": 1}');
INSERT INTO calls VALUES ('2025-03-01 00:05:00+00', 'd', '{not json}', NULL);
INSERT INTO calls VALUES ('2025-03-01 00:05:00+00', 'd', NULL, '[1, 2');
SELECT count(*) FROM calls;
UPDATE calls SET meta = '{"user": "u9",  "edited": true}' WHERE model = 'c';
SELECT model, meta::text FROM calls WHERE model = 'c' ORDER BY ts;
-- params: ['{"k": [1, 2], "a": "b"}', '{"k": [1, 2], "a": "b"}']
SELECT %s::jsonb ->> 'a', (%s::jsonb -> 'k')::text;
SELECT model, json_agg(meta ->> 'user'), jsonb_agg(meta -> 'tokens') FROM calls WHERE model = 'b' GROUP BY model;
SELECT jsonb_object_agg(to_char(ts, 'HH24:MI'), meta -> 'tokens' -> 'in') FROM calls WHERE meta ? 'tokens';
SELECT json_object_agg(to_char(ts, 'HH24:MI'), model)::text FROM calls WHERE model = 'b';
-- unsupported: ORDER BY inside a JSON aggregate
SELECT json_agg(v ORDER BY v DESC)::text FROM generate_series(1, 5) AS g(v);
SELECT jsonb_agg(v) FROM generate_series(1, 3) AS g(v) WHERE v > 5;
SELECT jsonb_object_agg(NULL::text, 1);
-- unsupported: ordering by jsonb (text order is not jsonb order)
SELECT meta -> 'tokens' -> 'in' FROM calls ORDER BY meta -> 'tokens' -> 'in';
-- unsupported: comparing jsonb values
SELECT count(*) FROM calls WHERE meta -> 'score' > '1';
SELECT model FROM calls ORDER BY (meta -> 'tokens' ->> 'in')::int NULLS FIRST, ts;
-- params: ['{"tokens": {"out": 30, "in": 120}, "user": "u1", "tags": ["rag", "prod"], "score": 0.75}']
SELECT model FROM calls WHERE meta = %s ORDER BY ts;
-- params: ['{"tokens": {"out": 30, "in": 120}, "user": "u1", "tags": ["rag", "prod"], "score": 0.75}']
-- binary
SELECT model, meta FROM calls WHERE %s <> meta ORDER BY ts;
-- params: ['not json']
SELECT model FROM calls WHERE meta = %s;
SELECT '{"a": 1.0, "b": [1, 2]}'::jsonb = '{"b": [1, 2.00], "a": 1}'::jsonb AS same, '[1, 2]'::jsonb = '[2, 1]'::jsonb AS reordered, '1e2'::jsonb <> '100'::jsonb AS differ;
SELECT model FROM calls WHERE meta = '{"score": 0.750, "tags": ["rag", "prod"], "user": "u1", "tokens": {"in": 120.0, "out": 30}}' ORDER BY ts;
SELECT a.model, b.model FROM calls a JOIN calls b ON a.meta = b.meta ORDER BY a.ts, b.ts;
SELECT model, meta -> 'score' = '1.5' AS score_is_1_5 FROM calls ORDER BY ts;
SELECT 'calls'::regclass, 'public.calls'::regclass, 'jsonb'::regtype;
SELECT column_name, data_type, udt_name, is_nullable FROM information_schema.columns WHERE table_name = 'calls' ORDER BY ordinal_position;
SELECT * FROM jsonb_each('{"b": 1, "a": {"x": true}}') ORDER BY key;
SELECT * FROM jsonb_each_text('{"b": null, "a": "x", "c": 1.50}') ORDER BY key;
SELECT key, value FROM json_each('{"a": 1, "a": 2, "b": null}');
SELECT key, value FROM json_each_text('{"a": "x", "b": [1, 2]}') ORDER BY key;
SELECT k, v FROM jsonb_each_text('{"a": 1}') AS kv(k, v);
SELECT k FROM jsonb_object_keys('{"a": 1, "b": 2}') AS k ORDER BY k;
SELECT e.value FROM jsonb_array_elements_text('[1, "two", null]') AS e;
SELECT pg_typeof(value) FROM jsonb_each('{"a": 1}');
SELECT model, key, value FROM calls, jsonb_each_text(calls.meta) ORDER BY ts, key;
SELECT c.model, kv.key, kv.value FROM calls c, jsonb_each(c.meta) AS kv WHERE kv.key <> 'tokens' ORDER BY c.ts, kv.key;
SELECT x.model, e.key FROM calls AS x CROSS JOIN LATERAL jsonb_each_text(x.meta) AS e WHERE e.value IS NOT NULL ORDER BY x.ts, e.key;
SELECT kv.key, count(*) FROM calls, jsonb_each_text(meta) kv GROUP BY kv.key ORDER BY kv.key;
SELECT model, t FROM calls, jsonb_array_elements_text(calls.meta -> 'tags') AS t ORDER BY ts, t;
SELECT model, k FROM calls c, jsonb_object_keys(c.meta) AS k ORDER BY c.ts, k;
SELECT count(*) FROM calls, json_each(calls.raw);
SELECT * FROM jsonb_each('1');
SELECT * FROM jsonb_each_text('[1]');
