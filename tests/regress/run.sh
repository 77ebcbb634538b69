#!/usr/bin/env bash
# PostgreSQL 15's own regression suite, directly and through pgfleet in
# session and transaction mode: see tests/regress/README.
#   tests/regress/run.sh [direct] [session] [transaction] [--check] [--out DIR]
# Uses $PGFLEET_FIXTURE_NET (server on <net>.60:5432) and $PGFLEET_BIN.
set -euo pipefail
exec /usr/bin/python3 "$(dirname "$0")/regress.py" "$@"
