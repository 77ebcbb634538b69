// node-postgres (npm `pg`) through pgfleet with target_session_attrs = auto:
// each worker, on its own client connection, INSERTs a unique row
// (autocommit, unnamed extended-protocol query) and at once SELECTs it by id
// (autocommit, a named prepared statement), `iterations` times.  A read that
// does not find the row the same client just wrote is a miss.
//
// Run by tests/integration/test_routing.py:
//   node node_ryw.js '{"host": ..., "port": ..., "user": ..., "password": ...,
//                      "database": ..., "workers": 4, "iterations": 100,
//                      "base": 1000000, "app": "node"}'
// Prints one JSON object on stdout:
//   {"pairs": N, "missed": N, "misses": [...], "errors": [...], "pods": {"pod1": N, ...}}
'use strict';

const path = require('path');
const { Client } = require(path.join(__dirname, 'node_modules', 'pg'));

const cfg = JSON.parse(process.argv[2]);

const WRITE = 'INSERT INTO ryw_rows (id, app) VALUES ($1, $2)';
const READ = "SELECT s.setting AS pod, r.id FROM pg_settings s " +
  "LEFT JOIN ryw_rows r ON r.id = $1 WHERE s.name = 'cluster_name'";

async function main() {
  const result = { pairs: 0, missed: 0, misses: [], errors: [], pods: {} };

  async function worker(w) {
    const c = new Client({
      host: cfg.host,
      port: cfg.port,
      user: cfg.user,
      password: cfg.password,
      database: cfg.database,
      connectionTimeoutMillis: 20000,
      query_timeout: 30000,
    });
    await c.connect();
    try {
      for (let i = 0; i < cfg.iterations; i++) {
        const id = cfg.base + w * 100000 + i;
        await c.query(WRITE, [id, cfg.app]);
        const r = await c.query({ name: 'ryw_read', text: READ, values: [id] });
        const row = r.rows[0];
        result.pairs += 1;
        result.pods[row.pod] = (result.pods[row.pod] || 0) + 1;
        if (row.id === null || Number(row.id) !== id) {
          result.missed += 1;
          result.misses.push(`id ${id} not seen on ${row.pod}`);
        }
      }
    } finally {
      await c.end();
    }
  }

  const workers = [];
  for (let w = 0; w < cfg.workers; w++) {
    workers.push(worker(w).catch((e) => {
      result.errors.push(`worker ${w}: ${e.code || ''} ${e.message}`);
    }));
  }
  await Promise.all(workers);
  result.misses = result.misses.slice(0, 20);
  process.stdout.write(JSON.stringify(result) + '\n');
}

main().catch((e) => {
  process.stdout.write(JSON.stringify({ fatal: `${e.code || ''} ${e.message}` }) + '\n');
  process.exit(1);
});
