"""Reads that survive (issue 19 items 1 and 3), target_session_attrs = auto
on the replicated fixture: a read a standby refuses as a write (25006) is
re-run on the primary, a read whose standby connection breaks before any
reply reached the client is re-run elsewhere; anything else fails as
before, never silently run twice."""

import asyncio
import os
import re
import subprocess
import threading
import time

import psycopg
import pytest

import fixture as fx

SETTINGS = dict(health_check_period=1, health_check_timeout=1, dns_max_ttl=1,
                dns_nxdomain_ttl=1, server_login_retry=1, query_wait_timeout=10)

# The hint makes the call a read whatever the classifier thinks of user
# functions: the standby refuses it, the primary runs it.
WRITE_READ = "/* pgfleet:standby */ SELECT retry_insert(%s)"


def entry(tsa):
    return "host=%s port=%d dbname=%s target_session_attrs=%s" % (
        fx.SVC_NAME, fx.PG_PORT, fx.APP_DB, tsa)


@pytest.fixture
def auto(pgfleet, replicated):
    fleet = pgfleet(settings=dict(SETTINGS), databases={"app": entry("auto")})
    assert fleet.wait_all_up(replicated.addrs, "app", 10), fleet.log_tail()
    return fleet


@pytest.fixture
def auto_no_ryw(pgfleet, replicated):
    """read_your_writes = 0: a read right after the re-run write still goes
    to a standby (with it on, the primary may take it: no 25006 then)."""
    fleet = pgfleet(settings=dict(SETTINGS, read_your_writes=0),
                    databases={"app": entry("auto")})
    assert fleet.wait_all_up(replicated.addrs, "app", 10), fleet.log_tail()
    return fleet


def retries(fleet, reason):
    status, body = fleet.http_get("/metrics")
    assert status == 200
    m = re.search(r'^pgfleet_read_retries_total\{reason="%s"\} (\d+)$' % reason, body, re.M)
    return int(m.group(1)) if m else 0


@pytest.fixture
def writer(replicated):
    """A table and a plpgsql function that writes to it, on the primary
    (replayed by the standbys before the test goes on)."""
    with replicated.connect(replicated.primary) as conn:
        conn.execute("DROP TABLE IF EXISTS retry_t")
        conn.execute("CREATE TABLE retry_t (v int)")
        conn.execute("""CREATE OR REPLACE FUNCTION retry_insert(x int) RETURNS int
                        LANGUAGE plpgsql AS $$
                        BEGIN INSERT INTO retry_t VALUES (x); RETURN x * 10; END $$""")
    # replayed by every standby (the commit itself, whatever WAL is flushed)
    deadline = time.time() + 30
    for i in replicated.standbys:
        while replicated.psql(i, "SELECT to_regclass('retry_t') IS NOT NULL AND "
                                 "to_regprocedure('retry_insert(int)') IS NOT NULL") != "t":
            assert time.time() < deadline, "standby %d did not replay the set-up" % i
            time.sleep(0.05)
    yield
    with replicated.connect(replicated.primary) as conn:
        conn.execute("DROP TABLE IF EXISTS retry_t")
        conn.execute("DROP FUNCTION IF EXISTS retry_insert(int)")


def primary_rows(replicated):
    with replicated.connect(replicated.primary) as conn:
        return sorted(r[0] for r in conn.execute("SELECT v FROM retry_t").fetchall())


def test_writing_function_in_a_read_runs_on_the_primary(auto_no_ryw, replicated, writer):
    auto = auto_no_ryw
    before = retries(auto, "read_only")
    with auto.connect(dbname="app") as conn:
        # the standby refuses it: on a direct connection the error shows
        with replicated.connect(replicated.standbys[0]) as direct:
            with pytest.raises(psycopg.errors.ReadOnlySqlTransaction):
                direct.execute("SELECT retry_insert(0)")
        # simple protocol (client-side binding)
        cur = psycopg.ClientCursor(conn)
        assert cur.execute(WRITE_READ % 1).fetchone()[0] == 10
        # extended protocol, text and binary results, unnamed statement
        assert conn.execute(WRITE_READ, (2,), prepare=False).fetchone()[0] == 20
        bcur = conn.cursor(binary=True)
        assert bcur.execute(WRITE_READ, (3,), prepare=False).fetchone()[0] == 30
        # the connection goes on (its next reads wait for a standby that has
        # replayed the function's write: read-your-writes, else the primary)
        assert conn.execute("SELECT 1").fetchone()[0] == 1
    assert primary_rows(replicated) == [1, 2, 3]
    assert retries(auto, "read_only") - before == 3
    assert "read re-run" in auto.log_text()


def test_writing_function_with_asyncpg_prepared_statements(auto_no_ryw, replicated, writer):
    auto = auto_no_ryw
    asyncpg = pytest.importorskip("asyncpg")

    async def run():
        conn = await asyncpg.connect(host=auto.host, port=auto.port, user=fx.APP_USER,
                                     password=fx.APP_PASSWORD, database="app")
        try:
            stmt = await conn.prepare("/* pgfleet:standby */ SELECT retry_insert($1)")
            got = [await stmt.fetchval(i) for i in (4, 5)]
            got.append(await conn.fetchval("/* pgfleet:standby */ SELECT retry_insert($1)", 6))
            return got
        finally:
            await conn.close()

    before = retries(auto, "read_only")
    assert asyncio.run(run()) == [40, 50, 60]
    assert primary_rows(replicated) == [4, 5, 6]
    assert retries(auto, "read_only") - before == 3


def test_writing_function_with_read_your_writes(auto, replicated, writer):
    """The re-run on the primary is a write: the client's next reads see it."""
    before = retries(auto, "read_only")
    with auto.connect(dbname="app") as conn:
        for i in range(1, 6):
            assert conn.execute(WRITE_READ, (i,), prepare=False).fetchone()[0] == 10 * i
            assert conn.execute("SELECT count(*) FROM retry_t").fetchone()[0] == i
    assert primary_rows(replicated) == [1, 2, 3, 4, 5]
    assert retries(auto, "read_only") - before >= 1


def test_a_real_error_is_not_retried(auto, replicated, writer):
    before = retries(auto, "read_only")
    with auto.connect(dbname="app") as conn:
        with pytest.raises(psycopg.errors.DivisionByZero):
            conn.execute("SELECT 1 / 0")
        # a read-only block: the standby refuses the write inside it, and
        # that is the answer (the block asked for read-only)
        conn.execute("BEGIN READ ONLY")
        with pytest.raises(psycopg.errors.ReadOnlySqlTransaction):
            conn.execute("SELECT retry_insert(7)")
        conn.execute("ROLLBACK")
    assert retries(auto, "read_only") == before
    assert primary_rows(replicated) == []


def standby_pid_of(replicated, text):
    """(pod index, pid) of the standby backend running a query containing text."""
    deadline = time.time() + 10
    while time.time() < deadline:
        for i in replicated.standbys:
            out = replicated.psql(i, "SELECT pid FROM pg_stat_activity WHERE query LIKE "
                                     "'%%%s%%' AND pid <> pg_backend_pid()" % text)
            if out.strip():
                return i, int(out.split()[0])
        time.sleep(0.05)
    raise AssertionError("no standby runs %r" % text)


def test_read_survives_its_backend_terminated(auto, replicated):
    """FATAL 57P01 then the close, before any reply: re-run elsewhere."""
    before = retries(auto, "server_lost")
    with auto.connect(dbname="app") as conn:
        result = {}

        def run():
            try:
                result["v"] = conn.execute(
                    "SELECT 42, pg_sleep(1.5) /* retry_victim */").fetchone()[0]
            except psycopg.Error as e:
                result["e"] = e

        t = threading.Thread(target=run)
        t.start()
        i, pid = standby_pid_of(replicated, "retry_victim")
        replicated.psql(i, "SELECT pg_terminate_backend(%d)" % pid)
        t.join(20)
        assert result == {"v": 42}, result
    assert retries(auto, "server_lost") - before >= 1


@pytest.mark.parametrize("cursor", ["extended", "simple"])
def test_rows_held_until_the_read_is_over(auto, replicated, cursor):
    """A backend that dies in the middle of its reply flushes the rows it
    had built with its FATAL (an immediate shutdown does the same with its
    WARNING): they were held back, the client saw nothing, and the read is
    re-run elsewhere.  The victim standby's backend terminates itself after
    its second row; every run returns all three rows."""
    victim = fx.pod_addr(replicated.standbys[0])
    sql = ("/* pgfleet:standby */ SELECT x, CASE WHEN x = 2 AND inet_server_addr() = "
           "'%s' THEN pg_terminate_backend(pg_backend_pid()) END "
           "FROM generate_series(1, 3) x" % victim)
    before = retries(auto, "server_lost")
    factory = psycopg.ClientCursor if cursor == "simple" else psycopg.Cursor
    runs = 0
    with auto.connect(dbname="app") as conn:
        conn.cursor_factory = factory
        conn.prepare_threshold = None  # a named Parse is never re-run
        # load_balance spreads the runs: enough of them land on the victim.
        while runs < 60 and retries(auto, "server_lost") - before < 3:
            rows = conn.execute(sql).fetchall()
            assert [r[0] for r in rows] == [1, 2, 3], rows
            runs += 1
    assert retries(auto, "server_lost") - before >= 3, (runs, auto.log_tail())


def test_a_read_that_streamed_rows_fails(auto, replicated):
    """Rows already reached the client: the error, never a second run."""
    before = retries(auto, "server_lost")
    with auto.connect(dbname="app") as conn:
        got = {}

        def run_plain():
            try:
                cur = conn.execute("SELECT repeat('x', 2000), pg_sleep(0.002) "
                                   "FROM generate_series(1, 5000) /* retry_stream */")
                got["rows"] = len(cur.fetchall())
            except psycopg.Error as e:
                got["e"] = e

        t = threading.Thread(target=run_plain)
        t.start()
        i, pid = standby_pid_of(replicated, "retry_stream")
        time.sleep(1.0)  # rows flow meanwhile
        replicated.psql(i, "SELECT pg_terminate_backend(%d)" % pid)
        t.join(30)
        assert "e" in got, got
    assert retries(auto, "server_lost") == before


def test_a_write_on_a_dying_primary_fails(auto, replicated, writer):
    before = retries(auto, "server_lost") + retries(auto, "read_only")
    with auto.connect(dbname="app") as conn:
        got = {}

        def run():
            try:
                conn.execute("INSERT INTO retry_t SELECT 8 FROM pg_sleep(1.5) /* retry_w */")
                got["ok"] = True
            except psycopg.Error as e:
                got["e"] = e

        t = threading.Thread(target=run)
        t.start()
        deadline = time.time() + 10
        pid = ""
        while not pid and time.time() < deadline:
            pid = replicated.psql(replicated.primary,
                                  "SELECT pid FROM pg_stat_activity WHERE query LIKE "
                                  "'%retry_w%' AND pid <> pg_backend_pid()").strip()
        replicated.psql(replicated.primary, "SELECT pg_terminate_backend(%s)" % pid.split()[0])
        t.join(20)
        assert isinstance(got.get("e"), psycopg.OperationalError), got
    assert primary_rows(replicated) == []
    assert retries(auto, "server_lost") + retries(auto, "read_only") == before


def run_pgbench(fleet, *args):
    env = dict(os.environ, PGPASSWORD=fx.APP_PASSWORD)
    for k in ("PGHOST", "PGPORT", "PGUSER", "PGDATABASE"):
        env.pop(k, None)
    argv = [os.path.join(fx.PG_BIN, "pgbench"), "-n", "-h", fleet.host, "-p", str(fleet.port),
            "-U", fx.APP_USER] + list(args) + ["app"]
    return subprocess.Popen(argv, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True)


@pytest.mark.parametrize("mode", ["simple", "prepared"])
def test_standby_killed_under_read_load(auto, replicated, mode):
    """pg_ctl -m immediate of a standby under pgbench -S -c 8 (simple
    queries, or named prepared statements: Bind/Execute/Sync) and a psycopg
    loop: no client sees an error."""
    replicated.pgbench_init(scale=1)
    before = retries(auto, "server_lost")
    bench = run_pgbench(auto, "-S", "-M", mode, "-c", "8", "-T", "10")
    errors, loops = [], [0]
    stop = threading.Event()

    def loop():
        try:
            with auto.connect(dbname="app") as conn:
                while not stop.is_set():
                    conn.execute("SELECT count(*), pg_sleep(0.01) FROM pgbench_branches",
                                 prepare=False).fetchone()
                    loops[0] += 1
        except psycopg.Error as e:
            errors.append(e)

    slow = {}

    def slow_read():
        try:
            with auto.connect(dbname="app") as conn:
                slow["v"] = conn.execute("SELECT 7, pg_sleep(2) /* retry_kill */").fetchone()[0]
        except psycopg.Error as e:
            slow["e"] = e

    t = threading.Thread(target=loop)
    t.start()
    time.sleep(3)
    s = threading.Thread(target=slow_read)
    s.start()
    # the standby that runs the slow read dies under it
    victim, _ = standby_pid_of(replicated, "retry_kill")
    replicated.stop(victim, mode="immediate")
    time.sleep(3)
    stop.set()
    t.join(20)
    s.join(20)
    assert slow == {"v": 7}, slow
    out, err = bench.communicate(timeout=60)
    assert bench.returncode == 0, out + err
    assert "number of failed transactions: 0" in out, out
    assert not errors, errors
    assert loops[0] > 10
    assert retries(auto, "server_lost") - before >= 1, "\n".join(
        l for l in auto.log_text().splitlines() if "client login" not in l)[-3000:]
    assert not auto.sanitizer_reports()
