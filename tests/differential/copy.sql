-- COPY FROM STDIN as PostgreSQL parses it: every escape of the text
-- format, CSV quoting, NULL markers, and the errors (22P04 bad data, 22021
-- NUL or invalid UTF-8, 22P02 bad numbers). A refused COPY stores nothing.
-- Compared with PostgreSQL by tests/differential/run.py (the data follows
-- `-- copy:` as a Python literal).
CREATE TABLE c (ts TIMESTAMPTZ NOT NULL, id INT, s TEXT);
-- copy: '2025-01-01 00:00:00+00\t1\tplain\n2025-01-01 00:00:01+00\t2\t\\101\\102C\n2025-01-01 00:00:02+00\t3\t\\x41\\x4a\\x4\n2025-01-01 00:00:03+00\t4\ta\\tb\\nc\\rd\\\\e\n2025-01-01 00:00:04+00\t5\t\\N\n2025-01-01 00:00:05+00\t6\t\\b\\f\\v\n2025-01-01 00:00:06+00\t7\tx\\qy\\\tz\n2025-01-01 00:00:07+00\t8\t\\7\\77\\1234\n'
COPY c FROM STDIN;
SELECT id, s, length(s) FROM c ORDER BY id;
-- copy: '2025-01-02 00:00:00+00\t10\t\\000\n'
COPY c FROM STDIN;
-- copy: b'2025-01-02 00:00:00+00\t11\t\xff\xfe\n'
COPY c FROM STDIN;
-- copy: '2025-01-02 00:00:00+00\t12\ttoo\tmany\n'
COPY c FROM STDIN;
-- copy: '2025-01-02 00:00:00+00\t13\n'
COPY c FROM STDIN;
-- copy: '2025-01-02 00:00:00+00\tnot a number\tx\n'
COPY c FROM STDIN;
-- copy: '2025-01-02 00:00:00+00\t14\tok\n2025-01-02 00:00:01+00\t15\t\\000\n'
COPY c FROM STDIN;
SELECT count(*) FROM c WHERE id >= 10;
-- copy: '2025-01-03 00:00:00+00|20|pipe\\|d\n2025-01-03 00:00:01+00|21|NULL\n2025-01-03 00:00:02+00|22|\n'
COPY c FROM STDIN WITH (DELIMITER '|', NULL 'NULL');
SELECT id, s, s IS NULL FROM c WHERE id >= 20 ORDER BY id;
-- copy: 'ts,id,s\n2025-01-04 00:00:00+00,30,"quoted, comma"\n2025-01-04 00:00:01+00,31,"say ""hi"""\n2025-01-04 00:00:02+00,32,\n2025-01-04 00:00:03+00,33,""\n2025-01-04 00:00:04+00,34,"two\nlines"\n2025-01-04 00:00:05+00,35,back\\slash\n'
COPY c FROM STDIN WITH (FORMAT csv, HEADER true);
SELECT id, s, s IS NULL FROM c WHERE id >= 30 ORDER BY id;
-- copy: '2025-01-05 00:00:00+00,40,"never closed\n'
COPY c FROM STDIN WITH (FORMAT csv);
-- copy: '2025-01-05 00:00:00+00,41,a,b\n'
COPY c FROM STDIN WITH (FORMAT csv);
-- copy: '2025-01-05 00:00:00+00;42;semi\n2025-01-05 00:00:01+00;43;\n2025-01-05 00:00:02+00;44;-\n'
COPY c FROM STDIN WITH (FORMAT csv, DELIMITER ';', NULL '-');
SELECT id, s, s IS NULL FROM c WHERE id >= 40 ORDER BY id;
-- copy: '2025-01-06 00:00:00+00,50,\'single\'\n2025-01-06 00:00:01+00,51,\'a,b\'\n'
COPY c FROM STDIN WITH (FORMAT csv, QUOTE '''');
SELECT id, s FROM c WHERE id >= 50 ORDER BY id;
-- copy: '2025-01-07 00:00:00+00\t60\tend\n\\.\n'
COPY c FROM STDIN;
SELECT id, s FROM c WHERE id >= 60 ORDER BY id;
SELECT count(*) FROM c;
-- Fractions past the microsecond round as PostgreSQL rounds them (to the
-- nearest microsecond of the parsed double, a whole second carried).
-- copy: '2025-01-08 00:00:00.1234567+00\t70\tr\n2025-01-08 00:00:00.9999996+00\t71\tr\n2025-01-08 00:00:00.12345649+00\t72\tr\n2025-01-08 00:00:00.0000005+00\t73\tr\n2025-01-08T00:00:00.4999995Z\t74\tr\n2025-01-08 00:00:00.7654321 UTC\t75\tr\n2025-01-08 23:59:59.99999999+00\t76\tr\n'
COPY c FROM STDIN;
SELECT id, ts FROM c WHERE id >= 70 ORDER BY id;
-- copy: 'ts,id,s\n2025-01-09 00:00:00.0000015+00,80,csv\n'
COPY c FROM STDIN WITH (FORMAT csv, HEADER true);
SELECT id, ts FROM c WHERE id >= 80 ORDER BY id;
