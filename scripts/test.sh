#!/usr/bin/env bash
# All the tests: the layer check (scripts/check-layers.py), unit and
# integration suites on a normal build, the integration suite again with
# workers = 2, PostgreSQL's regression suite through pgfleet (session mode;
# PGFLEET_REGRESS_MODES="session transaction" for more), then unit and
# integration on an
# AddressSanitizer + UndefinedBehaviorSanitizer build, then the libFuzzer
# harnesses (tests/fuzz) for a bounded time each on a clang sanitizer build,
# then the image (meson suite `container`, tests/integration/test_image.py):
#   PGFLEET_IMAGE_TESTS=1  install podman, runc, debootstrap and run it;
#   PGFLEET_IMAGE_TESTS=0  never;
#   unset                  run it when podman is installed, except in CI
#                          (CI set, as CI services do): there it costs 2 to
#                          6 minutes of a 40-minute budget, so CI opts in.
#                          install-deps.sh installs podman only when asked.
# Runs every step even after a failure, prints a summary, exits non-zero if
# anything failed.
set -uo pipefail
cd "$(dirname "$0")/.." || exit 1

./scripts/install-deps.sh || { echo "test.sh: installing dependencies failed" >&2; exit 1; }

# Decided here, then taken out of the environment: the integration passes
# below (plain, workers = 2, sanitizers) never build the image; only the
# `container` step does, once.
image_tests=${PGFLEET_IMAGE_TESTS:-}
unset PGFLEET_IMAGE_TESTS
if [ -z "$image_tests" ]; then
  if [ -n "${CI:-}" ]; then image_tests=ci
  elif command -v podman >/dev/null 2>&1; then image_tests=1
  else image_tests=no-podman
  fi
fi

failures=()
summary=()

setup_and_build() {   # DIR [meson options...]
  local dir=$1
  shift
  if [ -d "$dir/meson-private" ]; then
    meson setup --reconfigure "$dir" "$@" || meson setup --wipe "$dir" "$@" || return 1
  else
    meson setup "$dir" "$@" || return 1
  fi
  meson compile -C "$dir"
}

pytest_summary() {    # DIR: the closing "N passed ..." line of pytest's output
  local log=$1/meson-logs/testlog.txt
  [ -f "$log" ] || return 0
  grep -E '^=+ .*([0-9]+ (passed|failed|error)|no tests ran).* in [0-9.]+s' "$log" | tail -n 1
}

run_step() {          # NAME COMMAND...
  local name=$1
  shift
  printf '\n==> %s\n' "$name"
  if "$@"; then
    summary+=("ok      $name")
  else
    summary+=("FAILED  $name")
    failures+=("$name")
  fi
}

suites() {            # LABEL DIR
  local label=$1 dir=$2
  run_step "unit tests$label" meson test -C "$dir" --suite unit --print-errorlogs
  run_step "integration tests$label" \
    meson test -C "$dir" --suite integration --print-errorlogs --verbose
  local line
  line=$(pytest_summary "$dir")
  [ -n "$line" ] && summary+=("        pytest$label: $line")
}

printf '\n==> build\n'
if setup_and_build build; then
  summary+=("ok      build")
  # No module calls up a layer (also in the unit suite; here by name).
  run_step "layers" /usr/bin/python3 scripts/check-layers.py --build build
  suites "" build
  # The same suite again with every pgfleet running two event loops
  # (workers = 2): threading must change nothing a client can see.
  # (test_routing.py's write-then-read loops run 100 iterations per client
  # thread here and under the sanitizers, 400 in the plain pass)
  run_step "integration tests (workers = 2)" \
    env PGFLEET_FIXTURE_WORKERS=2 PGFLEET_FIXTURE_ROUTING_ITERATIONS=100 \
    meson test -C build --suite integration --print-errorlogs --verbose
  line=$(pytest_summary build)
  [ -n "$line" ] && summary+=("        pytest (workers = 2): $line")
  # PostgreSQL's own regression suite through pgfleet (tests/regress/README;
  # session mode takes about 70 s, transaction mode about 4 min): each mode's
  # failures must be exactly tests/regress/expected_failures_<mode>.txt.
  # shellcheck disable=SC2086
  run_step "PostgreSQL regression suite (${PGFLEET_REGRESS_MODES:-session})" \
    tests/regress/run.sh ${PGFLEET_REGRESS_MODES:-session} --check
else
  summary+=("FAILED  build")
  failures+=("build")
fi

export ASAN_OPTIONS=detect_leaks=1:abort_on_error=1
export UBSAN_OPTIONS=print_stacktrace=1:halt_on_error=1
printf '\n==> build (sanitizers)\n'
if setup_and_build build-asan -Db_sanitize=address,undefined -Db_lundef=false; then
  summary+=("ok      build (sanitizers)")
  # (the modules that check documents and manifests ran in the plain pass:
  # conftest.py's SAME_UNDER_SANITIZERS)
  export PGFLEET_FIXTURE_SANITIZER_PASS=1 PGFLEET_FIXTURE_ROUTING_ITERATIONS=100
  suites " (sanitizers)" build-asan
  unset PGFLEET_FIXTURE_SANITIZER_PASS PGFLEET_FIXTURE_ROUTING_ITERATIONS
else
  summary+=("FAILED  build (sanitizers)")
  failures+=("build (sanitizers)")
fi

# The fuzzers: each harness for FUZZ_SECONDS (default 30) on a scratch copy
# of its corpus, so new inputs never land in the repository.  A crash, a
# leak, a sanitizer report or an input slower than 10 s fails the step; the
# offending input is kept and its path printed.
FUZZ_HARNESSES=(startup extended server sqlroute)
run_fuzzers() {       # DIR
  local dir=$1 h rc=0 work
  work=$(mktemp -d /tmp/pgfleet-fuzz-ci.XXXXXX) || return 1
  for h in "${FUZZ_HARNESSES[@]}"; do
    mkdir -p "$work/$h"
    cp tests/fuzz/corpus/"$h"/* "$work/$h/" || { rc=1; continue; }
    printf -- '--> fuzz_%s (%ss)\n' "$h" "${FUZZ_SECONDS:-30}"
    if "$dir/tests/fuzz/fuzz_$h" -max_total_time="${FUZZ_SECONDS:-30}" -timeout=10 \
        -rss_limit_mb=2048 -print_final_stats=1 -artifact_prefix="$work/$h-" \
        "$work/$h" >"$work/$h.log" 2>&1; then
      grep -E '^stat::number_of_executed_units' "$work/$h.log"
    else
      tail -n 80 "$work/$h.log"
      echo "fuzz_$h failed: log and input in $work" >&2
      rc=1
    fi
  done
  [ $rc -eq 0 ] && rm -rf "$work"
  return $rc
}

printf '\n==> build (fuzzers)\n'
if ! command -v clang >/dev/null 2>&1; then
  # install-deps.sh installs clang; without it this step cannot run.
  summary+=("FAILED  build (fuzzers): clang not found")
  failures+=("build (fuzzers)")
elif CC=clang setup_and_build build-fuzz -Dfuzz=true -Db_sanitize=address,undefined \
    -Db_lundef=false; then
  summary+=("ok      build (fuzzers)")
  run_step "fuzzers" run_fuzzers build-fuzz
else
  summary+=("FAILED  build (fuzzers)")
  failures+=("build (fuzzers)")
fi

# The image: built with podman from a debootstrapped Debian base (cached
# under /var/cache/pgfleet-image) and run read-only against the local
# service.  About 2 minutes cold on an idle machine (debootstrap 35 s, build
# 40 s, the run 40 s), 1.5 with the base cached (the test removes what it
# built, so the build is never cached); 4 to 6 minutes on a loaded one.
case $image_tests in
  1)
    if [ -d build/meson-private ]; then
      run_step "image (podman)" env PGFLEET_IMAGE_TESTS=1 \
        meson test -C build --suite container --print-errorlogs --verbose
    else
      summary+=("FAILED  image (podman): no build")
      failures+=("image (podman)")
    fi
    ;;
  no-podman)
    summary+=("skipped image (podman): podman not installed (PGFLEET_IMAGE_TESTS=1 installs it)") ;;
  ci)
    summary+=("skipped image (podman): off by default in CI (PGFLEET_IMAGE_TESTS=1 runs it)") ;;
  *)
    summary+=("skipped image (podman): PGFLEET_IMAGE_TESTS=$image_tests") ;;
esac

printf '\n==> summary\n'
printf '%s\n' "${summary[@]}"
if [ ${#failures[@]} -ne 0 ]; then
  printf '\n%d step(s) failed: %s\n' "${#failures[@]}" "$(IFS=,; echo "${failures[*]}")"
  exit 1
fi
echo
echo "all tests passed"
