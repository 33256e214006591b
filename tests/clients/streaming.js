// Reads the table `big` through node-postgres's pg-cursor in batches and
// checks every row: its count and sums against the server's own, and each
// label against md5 of its number (tests/integration/streaming.rs watches
// the server's memory meanwhile).
//
// Usage: node streaming.js PORT

const crypto = require("crypto");
const { Client } = require("pg");
const Cursor = require("pg-cursor");

const FETCH = 1000;

async function main() {
  const port = Number(process.argv[2]);
  const client = new Client({ host: "127.0.0.1", port, user: "lookout", database: "lookout" });
  await client.connect();
  let rows = 0n;
  let total = 0n;
  let squares = 0n;
  await client.query("BEGIN");
  const cursor = client.query(new Cursor("SELECT n, label FROM big"));
  for (;;) {
    const batch = await cursor.read(FETCH);
    if (batch.length === 0) break;
    for (const row of batch) {
      const n = BigInt(row.n);
      const want = crypto.createHash("md5").update(String(row.n)).digest("hex").repeat(8);
      if (row.label !== want) throw new Error(`row ${row.n}: label ${row.label.slice(0, 40)}...`);
      rows += 1n;
      total += n;
      squares += n * n;
    }
  }
  await cursor.close();
  await client.query("COMMIT");
  const expected = await client.query(
    "SELECT count(*)::text AS c, sum(n)::text AS s, sum(n * n)::text AS q FROM big",
  );
  const { c, s, q } = expected.rows[0];
  if (String(rows) !== c || String(total) !== s || String(squares) !== q) {
    throw new Error(`read ${rows} ${total} ${squares}, the table holds ${c} ${s} ${q}`);
  }
  await client.end();
  console.log(`pg-cursor: ${rows} rows ok`);
}

main().catch((e) => {
  console.error(e);
  process.exit(1);
});
