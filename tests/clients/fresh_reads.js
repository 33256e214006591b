// Every execution of a named statement node-postgres prepared on the server
// sees the data of that moment.
//
// Usage: node fresh_reads.js PORT   (after `npm ci` in this directory)
'use strict';
const { Client } = require('pg');

function check(cond, what) {
  if (!cond) throw new Error(what);
}

async function main() {
  const config = { host: '127.0.0.1', port: Number(process.argv[2]), user: 'lookout', database: 'lookout' };
  const writer = new Client(config);
  const reader = new Client(config);
  await writer.connect();
  await reader.connect();
  await writer.query('CREATE TABLE fresh_node (ts TIMESTAMPTZ NOT NULL, batch BIGINT, v BIGINT)');
  // A named statement: parsed once on the server, then only bound and executed.
  const count = async () => {
    const r = await reader.query({ name: 'fresh-count', text: 'SELECT count(*) AS n FROM fresh_node WHERE batch >= $1', values: [0] });
    return Number(r.rows[0].n);
  };
  for (let batch = 1; batch <= 8; batch++) {
    await writer.query(`INSERT INTO fresh_node SELECT now(), ${batch}, v FROM generate_series(1, 500) AS g(v)`);
    for (let run = 0; run < 3; run++) {
      const n = await count();
      check(n === 500 * batch, `node-postgres: after batch ${batch} saw ${n}`);
    }
  }
  await writer.query('DELETE FROM fresh_node WHERE batch <= 3');
  const n = await count();
  check(n === 2500, `node-postgres: after the delete saw ${n}`);
  await writer.end();
  await reader.end();
  console.log('node-postgres fresh reads ok');
}

main().catch((e) => {
  console.error(e);
  process.exit(1);
});
