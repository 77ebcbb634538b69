"""PostgreSQL 15's own regression suite through pgfleet in session mode.

Runs tests/regress/regress.py (a fresh server on $PGFLEET_FIXTURE_NET.60,
pgfleet in front, pg_regress with the serial schedule) and requires the
failing tests to be exactly tests/regress/expected_failures_session.txt:
a new failure fails this test, and so does a test that starts passing,
so the list only ever shrinks on purpose (remove the line in the same
commit as the fix).

Opt-in: it takes minutes and needs the suite's sources (apt-get source, see
tests/regress/README); set PGFLEET_REGRESS=1 to run it.  PGFLEET_REGRESS_MODES
(space-separated, default "session") adds "transaction" against
expected_failures_transaction.txt.
"""

import json
import os
import signal
import subprocess
import sys

import pytest

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import fixture as fx  # noqa: E402

REGRESS = os.path.join(fx.REPO, "tests", "regress", "regress.py")
OUT = os.path.join(fx.REPO, "build", "regress")
MODES = os.environ.get("PGFLEET_REGRESS_MODES", "session").split()

pytestmark = pytest.mark.skipif(
    os.environ.get("PGFLEET_REGRESS") != "1",
    reason="PostgreSQL's regression suite: set PGFLEET_REGRESS=1 "
           "(tests/regress/README)")


def _run_suite(mode, timeout):
    # A subprocess with its own state directory: nothing it starts touches
    # the fixture's pods.  On an interrupt it gets SIGTERM, on which it
    # stops its server, pgfleet and pg_regress by pid before exiting.
    p = subprocess.Popen([sys.executable, REGRESS, mode, "--out", OUT],
                         stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                         text=True)
    try:
        out, _ = p.communicate(timeout=timeout)
    except BaseException:
        p.send_signal(signal.SIGTERM)
        try:
            p.wait(timeout=60)
        except subprocess.TimeoutExpired:
            p.kill()
            p.wait()
        raise
    return p.returncode, out


def _expected(mode):
    path = os.path.join(fx.REPO, "tests", "regress",
                        "expected_failures_%s.txt" % mode)
    with open(path) as f:
        return path, {line.split("#")[0].strip() for line in f
                      if line.split("#")[0].strip()}


@pytest.mark.parametrize("mode", MODES)
def test_regression_suite(mode):
    timeout = int(os.environ.get("PGFLEET_REGRESS_TIMEOUT", "1200"))
    rc, out = _run_suite(mode, timeout + 300)
    print(out)
    try:
        with open(os.path.join(OUT, mode, "result.json")) as f:
            result = json.load(f)
    except (OSError, ValueError):
        pytest.fail("regress.py wrote no result (exit %s):\n%s"
                    % (rc, out[-4000:]), pytrace=False)
    assert result["status"] == "ran", out[-4000:]
    assert not result.get("sanitizer_reports"), result["sanitizer_reports"]
    assert result["tests"] >= 200, "pg_regress ran only %d tests" \
        % result["tests"]
    path, want = _expected(mode)
    got = set(result["failed_tests"])
    new = sorted(got - want)
    fixed = sorted(want - got)
    assert not new and not fixed, (
        "%s mode: new failures %s (see %s/%s/diffs/); now passing, remove "
        "from %s: %s" % (mode, new, OUT, mode, os.path.relpath(path), fixed))
