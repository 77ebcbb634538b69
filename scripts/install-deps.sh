#!/usr/bin/env bash
# Install what pgfleet's build, demo and tests need on Debian 12.
# Idempotent: when every package is already installed it returns at once,
# without touching apt, and npm is not run once node_modules/pg (and
# tests/k8s/node_modules/kubernetes-models) is there.
#   --image (or PGFLEET_IMAGE_TESTS=1): also what building and running the
#   image needs (tests/integration/test_image.py, scripts/image-base.sh).
set -euo pipefail

image=0
[ "${PGFLEET_IMAGE_TESTS:-}" = 1 ] && image=1
for a in "$@"; do
  case $a in
    --image) image=1 ;;
    *) echo "install-deps: unknown option $a (--image)" >&2; exit 2 ;;
  esac
done

PACKAGES=(
  # build
  meson ninja-build pkg-config gcc libc6-dev
  libevent-dev libc-ares-dev libssl-dev libpq-dev
  liburing-dev         # io_uring batching of socket calls (src/batch.c)
  libpg-query-dev      # PostgreSQL's parser for the SQL look (src/sqlinspect.c), linked statically
  # the local headless service (tests/integration/fixture.py)
  postgresql-15        # servers, initdb, pg_ctl, pg_basebackup, pgbench
  postgresql-client    # psql
  dnsmasq-base         # the cluster DNS on 127.0.0.53
  dnsutils             # dig
  iproute2             # ss, in the fixture's error messages
  # clients and test runner
  python3 python3-pytest python3-psycopg python3-asyncpg
  python3-yaml         # tests/integration/test_k8s.py reads k8s/
  libpostgresql-jdbc-java   # pgjdbc: /usr/share/java/postgresql.jar
  # benchmarks
  valgrind
  pgpool2              # pgpool-II, tests/bench/run.sh --scenario replicated
  # the libFuzzer harnesses (tests/fuzz, meson -Dfuzz=true)
  clang libfuzzer-14-dev
)
# Node.js/npm (node-postgres tests) and a JDK (pgjdbc tests) often come with
# the machine image: take Debian's only when the command is missing.
# The image, built and run with no registry and no Docker engine: podman
# (its `podman build` is buildah's code, no separate buildah needed), runc
# (crun fails on these kernels' limits), debootstrap for the base image.
# About 90 MB installed: only when asked.
if [ $image -eq 1 ]; then
  PACKAGES+=(podman runc debootstrap)
fi
command -v node >/dev/null 2>&1 || PACKAGES+=(nodejs)
command -v npm >/dev/null 2>&1 || PACKAGES+=(npm)
command -v javac >/dev/null 2>&1 || PACKAGES+=(default-jdk-headless)

# node-postgres for tests/integration/test_drivers.py, from the checked-in
# package.json + package-lock.json; skipped (no network) once installed.
install_node_drivers() {
  local dir
  dir="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)/tests/integration/drivers"
  [ -f "$dir/node_modules/pg/package.json" ] && return 0
  echo "install-deps: npm ci in $dir" >&2
  npm ci --prefix "$dir" --no-audit --no-fund --loglevel=error >/dev/null
}

# kubernetes-models and yaml for the offline schema check of k8s/
# (tests/k8s/validate.mjs, run by tests/integration/test_k8s.py), the same
# way: from the checked-in lock file, skipped once installed.
install_node_k8s() {
  local dir
  dir="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)/tests/k8s"
  [ -f "$dir/node_modules/kubernetes-models/package.json" ] &&
    [ -f "$dir/node_modules/yaml/package.json" ] && return 0
  echo "install-deps: npm ci in $dir" >&2
  npm ci --prefix "$dir" --no-audit --no-fund --loglevel=error >/dev/null
}

missing=()
for p in "${PACKAGES[@]}"; do
  status=$(dpkg-query -W -f='${db:Status-Abbrev}' "$p" 2>/dev/null || true)
  [[ $status == ii* ]] || missing+=("$p")
done

if [ ${#missing[@]} -eq 0 ]; then
  install_node_drivers
  install_node_k8s
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
install_node_drivers
install_node_k8s
echo "install-deps: done" >&2
