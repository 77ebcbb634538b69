#!/usr/bin/env bash
# pgfleet's benchmark (issue 8): pgfleet vs PgBouncer vs direct PostgreSQL.
#
#   ./tests/bench/run.sh            # full run, < 20 minutes on 2 cores
#   ./tests/bench/run.sh --quick    # short runs, to check the set-up
#   ./tests/bench/run.sh --help     # every option (bench.py's)
#
# Installs what it needs from Debian, builds pgfleet with meson in its own
# build directory (build-bench, buildtype=release, with -g for callgrind's
# function names), raises the fd limit and hands over to bench.py, which
# starts the fixture, both poolers and the clients and stops them all by pid.
# Needs root (apt-get, PostgreSQL and PgBouncer as the postgres user).
set -euo pipefail

REPO="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
cd "$REPO"

for arg in "$@"; do
  case "$arg" in -h|--help) exec /usr/bin/python3 tests/bench/bench.py --help ;; esac
done

PACKAGES=(
  meson ninja-build pkg-config gcc libc6-dev
  libevent-dev libc-ares-dev libssl-dev libpq-dev liburing-dev
  postgresql-15 postgresql-client dnsmasq-base iproute2
  python3
  pgbouncer valgrind strace
  pgpool2   # --scenario replicated
)
missing=()
for p in "${PACKAGES[@]}"; do
  status=$(dpkg-query -W -f='${db:Status-Abbrev}' "$p" 2>/dev/null || true)
  [[ $status == ii* ]] || missing+=("$p")
done
if [ ${#missing[@]} -gt 0 ]; then
  as_root=()
  [ "$(id -u)" -eq 0 ] || as_root=(sudo env DEBIAN_FRONTEND=noninteractive)
  echo "bench: installing ${missing[*]}" >&2
  export DEBIAN_FRONTEND=noninteractive
  "${as_root[@]}" apt-get update -qq
  "${as_root[@]}" apt-get install -y -qq --no-install-recommends \
    -o Dpkg::Use-Pty=0 "${missing[@]}" >/dev/null
fi
# The Debian package enables a pgbouncer service on 127.0.0.1:6432; we run
# our own instance on the fixture network and never touch that one.  The
# same for pgpool2's service (127.0.0.1:5433): --scenario replicated runs
# its own pgpool-II.

BUILD="${PGFLEET_BENCH_BUILD:-build-bench}"
if [ ! -f "$BUILD/build.ninja" ]; then
  meson setup "$BUILD" --buildtype=release -Dc_args=-g >/dev/null
else
  meson configure "$BUILD" -Dbuildtype=release -Dc_args=-g >/dev/null
fi
if ! meson compile -C "$BUILD" pgfleet >"$BUILD/compile.log" 2>&1; then
  if [ -x "$BUILD/pgfleet" ]; then
    echo "bench: build failed (see $BUILD/compile.log); using the last good $BUILD/pgfleet" >&2
  else
    cat "$BUILD/compile.log" >&2
    exit 1
  fi
fi

# PostgreSQL's and the poolers' fd needs: 1000 pgbench clients, 10,000 idle.
ulimit -n "$(ulimit -Hn)"

export PGFLEET_FIXTURE_NET="${PGFLEET_FIXTURE_NET:-127.0.23}"
exec /usr/bin/python3 tests/bench/bench.py --pgfleet "$REPO/$BUILD/pgfleet" "$@"
