#!/usr/bin/env bash
# Install what pgfleet's build, demo and tests need on Debian 12.
# Idempotent: when every package is already installed it returns at once,
# without touching apt.
set -euo pipefail

PACKAGES=(
  # build
  meson ninja-build pkg-config gcc libc6-dev
  libevent-dev libc-ares-dev libssl-dev libpq-dev
  # the local headless service (tests/integration/fixture.py)
  postgresql-15        # servers, initdb, pg_ctl, pg_basebackup, pgbench
  postgresql-client    # psql
  dnsmasq-base         # the cluster DNS on 127.0.0.53
  dnsutils             # dig
  iproute2             # ss, in the fixture's error messages
  # clients and test runner
  python3 python3-pytest python3-psycopg python3-asyncpg
  # benchmarks
  valgrind
)

missing=()
for p in "${PACKAGES[@]}"; do
  status=$(dpkg-query -W -f='${db:Status-Abbrev}' "$p" 2>/dev/null || true)
  [[ $status == ii* ]] || missing+=("$p")
done

if [ ${#missing[@]} -eq 0 ]; then
  exit 0
fi

as_root=()
if [ "$(id -u)" -ne 0 ]; then
  as_root=(sudo env DEBIAN_FRONTEND=noninteractive)
fi

echo "install-deps: installing ${missing[*]}" >&2
export DEBIAN_FRONTEND=noninteractive
"${as_root[@]}" apt-get update -qq
"${as_root[@]}" apt-get install -y -qq --no-install-recommends \
  -o Dpkg::Use-Pty=0 "${missing[@]}" >/dev/null
echo "install-deps: done" >&2
