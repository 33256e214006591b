// Parameters and transactions the way TypeScript services log LLM calls
// with node-postgres: typed parameters ($1 ... with Date, numbers, text,
// arrays), a transaction that commits, one that rolls back, and one an
// error aborts.
//
// Usage: node transactions.js PORT   (after `npm ci` in this directory)
'use strict';
const { Client } = require('pg');

function check(cond, what) {
  if (!cond) throw new Error(what);
}

async function main() {
  const config = { host: '127.0.0.1', port: Number(process.argv[2]), user: 'lookout', database: 'lookout' };
  const client = new Client(config);
  const other = new Client(config);
  await client.connect();
  await other.connect();
  await client.query('CREATE TABLE node_calls (ts TIMESTAMPTZ NOT NULL, model TEXT NOT NULL, latency_ms DOUBLE PRECISION, tokens BIGINT)');
  const insert = 'INSERT INTO node_calls VALUES ($1, $2, $3, $4)';
  const count = async (c, where = 'true') => Number((await c.query(`SELECT count(*) AS n FROM node_calls WHERE ${where}`)).rows[0].n);

  for (let i = 0; i < 10; i++) {
    const r = await client.query(insert, [new Date(Date.UTC(2026, 0, 1, 0, i)), 'm' + (i % 2), 10.5 * i, i]);
    check(r.rowCount === 1, `insert ${i}: rowCount ${r.rowCount}`);
  }
  const since = await client.query('SELECT count(*) AS n FROM node_calls WHERE ts >= $1 AND model = ANY($2)', [new Date(Date.UTC(2026, 0, 1, 0, 5)), ['m0', 'zz']]);
  check(Number(since.rows[0].n) === 2, `ts >= $1 AND model = ANY($2): ${since.rows[0].n}`);
  const named = { name: 'by-model', text: 'SELECT sum(tokens) AS s FROM node_calls WHERE model = $1' };
  for (let run = 0; run < 6; run++) {
    const r = await client.query({ ...named, values: ['m1'] });
    check(Number(r.rows[0].s) === 25, `named statement run ${run}: ${r.rows[0].s}`);
  }

  await client.query('BEGIN');
  await client.query(insert, [new Date(Date.UTC(2026, 0, 2)), 'tx', 1, 1]);
  await client.query("UPDATE node_calls SET tokens = tokens + 100 WHERE model = 'm0'");
  check(await count(client, "model = 'tx'") === 1, 'the transaction sees its insert');
  check(await count(other, "model = 'tx'") === 0, 'others do not');
  await client.query('COMMIT');
  check(await count(other, "model = 'tx'") === 1, 'committed');
  check(await count(other, 'tokens >= 100') === 5, 'the update is committed');

  await client.query('BEGIN');
  await client.query(insert, [new Date(Date.UTC(2026, 0, 3)), 'gone', 1, 1]);
  await client.query("DELETE FROM node_calls WHERE model = 'tx'");
  await client.query('ROLLBACK');
  check(await count(other, "model = 'gone'") === 0 && await count(other, "model = 'tx'") === 1, 'rollback');

  await client.query('BEGIN');
  await client.query(insert, [new Date(Date.UTC(2026, 0, 4)), 'aborted', 1, 1]);
  let failed = false;
  try {
    await client.query('SELECT 1 / 0');
  } catch (e) {
    failed = e.code === '22012';
  }
  check(failed, 'division by zero is 22012');
  let code = null;
  try {
    await client.query('SELECT 1');
  } catch (e) {
    code = e.code;
  }
  check(code === '25P02', `an aborted transaction refuses statements: ${code}`);
  await client.query('ROLLBACK');
  check(await count(other, "model = 'aborted'") === 0, 'the aborted transaction left nothing');

  await client.end();
  await other.end();
  console.log('node-postgres parameters and transactions: ok');
}

main().catch((e) => {
  console.error(e);
  process.exit(1);
});
