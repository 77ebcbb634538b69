#!/usr/bin/env bash
# The main job on the embedded default: pgfleet in front of a 3-pod
# headless service, configured only from the environment (what a Kubernetes
# ConfigMap + Secret give the container), load from pgbench, and where the
# transactions went, per pod, from each server's own pg_stat_database.
#
# Everything it starts (3 PostgreSQL servers on 127.0.0.2-4:5432, dnsmasq on
# 127.0.0.53:53, pgfleet on 127.0.0.1:6432) is stopped by pid on exit, also
# on failure or Ctrl-C.
set -euo pipefail
cd "$(dirname "$0")/.."

PY=/usr/bin/python3
FIXTURE=tests/integration/fixture.py
PG_BIN=/usr/lib/postgresql/15/bin
STATE_DIR=/tmp/pgfleet-fixture     # the fixture's default: leftovers of a
                                   # crashed test run or demo are cleaned up
PORT=6432
CLIENTS=30
SECONDS_OF_LOAD=10

PGFLEET_PID=
PGFLEET_LOG=
WORK=$(mktemp -d /tmp/pgfleet-demo.XXXXXX)

cleanup() {
  local rc=$?
  trap - EXIT INT TERM
  if [ -n "$PGFLEET_PID" ] && kill -0 "$PGFLEET_PID" 2>/dev/null; then
    kill -TERM "$PGFLEET_PID" 2>/dev/null || true
    for _ in $(seq 100); do
      kill -0 "$PGFLEET_PID" 2>/dev/null || break
      sleep 0.1
    done
    kill -KILL "$PGFLEET_PID" 2>/dev/null || true
    wait "$PGFLEET_PID" 2>/dev/null || true
  fi
  PGFLEET_FIXTURE_QUIET=1 "$PY" "$FIXTURE" down --state-dir "$STATE_DIR" \
    >/dev/null 2>&1 || true
  if [ "$rc" -ne 0 ] && [ -n "$PGFLEET_LOG" ] && [ -s "$PGFLEET_LOG" ]; then
    echo "---- pgfleet log (last 30 lines) ----" >&2
    tail -n 30 "$PGFLEET_LOG" >&2
  fi
  rm -rf "$WORK"
  exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

say() { printf '\n==> %s\n' "$*"; }

say "dependencies"
./scripts/install-deps.sh

say "build"
if [ ! -f build/build.ninja ]; then
  meson setup build
fi
meson compile -C build

if (exec 3<>"/dev/tcp/127.0.0.1/$PORT") 2>/dev/null; then
  echo "something already listens on 127.0.0.1:$PORT; stop it first" >&2
  exit 1
fi

say "headless service: 3 PostgreSQL pods + DNS"
"$PY" "$FIXTURE" up --pods 3 --state-dir "$STATE_DIR"

say "pgbench -i on every pod"
"$PY" "$FIXTURE" pgbench-init --scale 1 --state-dir "$STATE_DIR"

say "pgfleet, configured from the environment only (no config file)"
PGFLEET_LOG="$WORK/pgfleet.log"
env DB_HOST=postgresql-svc.postgres.svc.cluster.local \
    DB_USER=app \
    DB_PASSWORD=app-secret \
    AUTH_TYPE=scram-sha-256 \
    LISTEN_PORT=$PORT \
    PGFLEET_LISTEN_ADDR=127.0.0.1 \
    PGFLEET_DNS_SERVERS=127.0.0.53 \
    build/pgfleet >"$PGFLEET_LOG" 2>&1 &
PGFLEET_PID=$!
echo "pgfleet pid $PGFLEET_PID, log $PGFLEET_LOG"

# Ready when a query goes through it (listening alone is not enough: replicas
# take traffic only after their first health check).
export PGPASSWORD=app-secret
ready=
for _ in $(seq 150); do
  if ! kill -0 "$PGFLEET_PID" 2>/dev/null; then
    wait "$PGFLEET_PID" || echo "pgfleet exited with status $?" >&2
    PGFLEET_PID=
    exit 1
  fi
  if "$PG_BIN/psql" -X -q -A -t -h 127.0.0.1 -p "$PORT" -U app -d app \
       -c 'SELECT 1' >/dev/null 2>&1; then
    ready=1
    break
  fi
  sleep 0.2
done
if [ -z "$ready" ]; then
  echo "pgfleet did not serve a query within 30 s" >&2
  exit 1
fi
sleep 1

"$PY" "$FIXTURE" xacts --state-dir "$STATE_DIR" >"$WORK/before"

say "pgbench -S -c $CLIENTS -j 2 -T $SECONDS_OF_LOAD through pgfleet (127.0.0.1:$PORT)"
set +e
"$PG_BIN/pgbench" -S -c "$CLIENTS" -j 2 -T "$SECONDS_OF_LOAD" \
  -h 127.0.0.1 -p "$PORT" -U app app 2>&1 | tee "$WORK/pgbench.out"
PGBENCH_RC=${PIPESTATUS[0]}
set -e

sleep 2   # backends publish pg_stat_database counters up to ~1 s late
"$PY" "$FIXTURE" xacts --state-dir "$STATE_DIR" >"$WORK/after"

say "transactions per pod (pg_stat_database.xact_commit of db app, during the run)"
echo
awk '
  NR == FNR { before[$1] = $2; next }
  { addr[++n] = $1; d[n] = $2 - before[$1]; total += d[n] }
  END {
    print "| pod | transactions committed | share |"
    print "|---|---:|---:|"
    for (i = 1; i <= n; i++)
      printf "| %s:5432 | %d | %.1f %% |\n", addr[i], d[i],
             total ? 100 * d[i] / total : 0
    printf "| **total** | **%d** | 100 %% |\n", total
  }' "$WORK/before" "$WORK/after"
echo
tps=$(grep -E '^tps' "$WORK/pgbench.out" | head -n 1 || true)
[ -n "$tps" ] && echo "pgbench: $tps"

if [ "$PGBENCH_RC" -ne 0 ]; then
  echo "pgbench failed (exit $PGBENCH_RC)" >&2
  exit "$PGBENCH_RC"
fi
