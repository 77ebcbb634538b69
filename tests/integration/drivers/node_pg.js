// node-postgres (npm `pg`) through pgfleet: parameterised (unnamed) queries
// and named prepared statements ({name, text, values}: Parse'd once per
// client connection, then only Bind'd) from a pool of clients at once, in
// autocommit and inside transactions.
//
// Run by tests/integration/test_drivers.py:
//   node node_pg.js '{"host": ..., "port": ..., "user": ..., "password": ...,
//                     "database": ..., "clients": 10, "workers": 20,
//                     "iterations": 30}'
// Prints one JSON object on stdout.
'use strict';

const path = require('path');
const { Pool } = require(path.join(__dirname, 'node_modules', 'pg'));

const cfg = JSON.parse(process.argv[2]);

async function main() {
  const pool = new Pool({
    host: cfg.host,
    port: cfg.port,
    user: cfg.user,
    password: cfg.password,
    database: cfg.database,
    max: cfg.clients,
    connectionTimeoutMillis: 20000,
    query_timeout: 30000,
  });
  const result = { queries: 0, mismatches: [], errors: [], sum: 0, backends: [] };
  const backends = new Set();
  const check = (what, got, want) => {
    result.queries += 1;
    if (got !== want) result.mismatches.push(`${what}: got ${got}, want ${want}`);
  };

  async function worker(w) {
    for (let i = 0; i < cfg.iterations; i++) {
      const v = w * 1000 + i;
      // Named statements through pool.query: whichever pooled client runs it.
      let r = await pool.query({ name: 'q1', text: 'SELECT $1::int * 2 AS v', values: [v] });
      check('q1', r.rows[0].v, v * 2);
      result.sum += r.rows[0].v;
      // Unnamed extended-protocol query with parameters.
      r = await pool.query('SELECT $1::text || $2::text AS s', ['w' + w, String(i)]);
      check('concat', r.rows[0].s, 'w' + w + i);
      // A transaction on one checked-out client: named statements inside.
      const c = await pool.connect();
      let failed;
      try {
        await c.query('BEGIN');
        r = await c.query({ name: 'q2', text: 'SELECT $1::int + $2::int AS v', values: [v, 7] });
        check('q2', r.rows[0].v, v + 7);
        r = await c.query({ name: 'q1', text: 'SELECT $1::int * 2 AS v', values: [v + 1] });
        check('q1 in tx', r.rows[0].v, (v + 1) * 2);
        r = await c.query({
          name: 'where',
          text: "SELECT inet_server_addr()::text || ':' || pg_backend_pid() AS b",
        });
        backends.add(r.rows[0].b);
        await c.query('COMMIT');
      } catch (e) {
        failed = e;
        throw e;
      } finally {
        c.release(failed); // a broken client is destroyed, not pooled
      }
    }
  }

  const workers = [];
  for (let w = 0; w < cfg.workers; w++) {
    workers.push(worker(w).catch((e) => {
      result.errors.push(`worker ${w}: ${e.code || ''} ${e.message}`);
    }));
  }
  await Promise.all(workers);
  await pool.end();
  result.backends = [...backends].sort();
  result.mismatches = result.mismatches.slice(0, 20);
  process.stdout.write(JSON.stringify(result) + '\n');
}

main().catch((e) => {
  process.stdout.write(JSON.stringify({ fatal: `${e.code || ''} ${e.message}` }) + '\n');
  process.exit(1);
});
