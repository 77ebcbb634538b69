"""Statement-level read/write routing (issue 19): one database entry with
target_session_attrs = auto on the streaming-replication fixture (pod 0
primary, pods 1-2 standbys behind one DNS name), driven by real clients.

  - a client that writes then reads its own row never misses it, even with a
    standby whose replay is paused (read-your-writes), for psycopg (simple
    and extended/binary), asyncpg (prepared statements), node-postgres and
    pgjdbc (prepareThreshold default and 1);
  - reads spread over the standbys, writes only on the primary;
  - a writing function hidden in a SELECT succeeds (25006 from the standby,
    re-run on the primary);
  - a standby killed under pgbench -S, or under one slow read, costs no
    client an error;
  - hints and SET pgfleet.route; READ ONLY transactions on a standby, plain
    transactions and multi-statement strings on the primary;
  - with target_session_attrs = any nothing is parsed;
  - three independent primaries behind one name: writes land on one only.

Where a statement ran is read from the server that ran it: WHERE_SQL reads
cluster_name (pod0, pod1, ...) through the pg_settings view, a text that
calls no function, so any classifier must take it for a read.
"""

import asyncio
import itertools
import json
import os
import re
import select
import shutil
import subprocess
import threading
import time

import psycopg
import psycopg.errors
import pytest
from psycopg import pq

import fixture as fx
from test_drivers import DRIVERS, PGJDBC_JAR, guarded

PG_BIN = fx.PG_BIN
PERIOD = 1       # health_check_period
TIMEOUT = 1      # health_check_timeout

SETTINGS = dict(health_check_period=PERIOD, health_check_timeout=TIMEOUT,
                dns_max_ttl=1, dns_nxdomain_ttl=1, ban_time=2,
                server_login_retry=1, query_wait_timeout=5)

WHERE_SQL = "SELECT setting FROM pg_settings WHERE name = 'cluster_name'"
RYW_READ = ("SELECT s.setting, r.id FROM pg_settings s LEFT JOIN ryw_rows r "
            "ON r.id = %s WHERE s.name = 'cluster_name'")

# Write-then-read: workers per client app and iterations per worker.
RYW_WORKERS = 4
# (scripts/test.sh's workers = 2 and sanitizer passes run fewer: the plain
# pass runs the thousands)
RYW_ITERATIONS = int(os.environ.get("PGFLEET_FIXTURE_ROUTING_ITERATIONS") or 400)
# Share of each app's reads that a standby served (printed at the end).
SHARES = {}


def entry(tsa="auto", host=fx.SVC_NAME, **extra):
    s = "host=%s port=%d dbname=%s" % (host, fx.PG_PORT, fx.APP_DB)
    if tsa:
        s += " target_session_attrs=" + tsa
    for k, v in extra.items():
        s += " %s=%s" % (k, v)
    return s


ADMIN, ADMIN_PW = "admin", "admin-secret"
USERS = {fx.APP_USER: fx.APP_PASSWORD, ADMIN: ADMIN_PW}


def start(pgfleet, svc, tsa="auto", settings=None, **extra):
    """pgfleet with one database, `app`, over the whole service, and an
    admin console user; every pod has passed its first health check in
    every worker."""
    s = dict(SETTINGS, admin_users=ADMIN)
    s.update(settings or {})
    fleet = pgfleet(settings=s, databases={"app": entry(tsa, **extra)}, users=dict(USERS))
    assert fleet.wait_all_up(svc.addrs, "app", 10), fleet.log_tail()
    return fleet


def names(svc):
    """(primary's cluster_name, {standbys' cluster_names})."""
    return ("pod%d" % svc.primary, {"pod%d" % i for i in svc.standbys})


def where(conn, sql=WHERE_SQL, params=None, **kw):
    return conn.execute(sql, params, **kw).fetchone()[0]


def psql_as_app(svc, i, sql):
    return svc.psql(i, sql, user=fx.APP_USER)


def server_log_count(svc, i, text):
    with open(svc.pods[i].logfile, errors="replace") as f:
        return f.read().count(text)


@pytest.fixture(scope="module")
def rw(replicated):
    """The replicated set with pgbench's tables (scale 1), ryw_rows (the
    write-then-read rows), fn_rows and a view whose every read INSERTs into
    fn_rows through a plpgsql function, all owned by `app` and replayed by
    both standbys.  Database app commits with synchronous_commit = on (the
    fixture's servers have it off): a commit's WAL is sent to the standbys
    at once, not at the WAL writer's next round, so that reads right after
    a write can find a standby that has it, and read-your-writes is put to
    the test on standbys, not only by falling back to the primary."""
    replicated.pgbench_init(scale=1)
    replicated.psql(replicated.primary, "ALTER DATABASE app SET synchronous_commit = on")
    psql_as_app(replicated, replicated.primary, """
        DROP VIEW IF EXISTS fn_writer;
        DROP FUNCTION IF EXISTS ryw_write(text), ryw_where();
        DROP TABLE IF EXISTS ryw_rows, fn_rows;
        CREATE TABLE ryw_rows (id int PRIMARY KEY, app text NOT NULL);
        CREATE TABLE fn_rows (id serial PRIMARY KEY, t text NOT NULL);
        CREATE FUNCTION ryw_write(t text) RETURNS int LANGUAGE plpgsql AS $$
        DECLARE
            n int;
        BEGIN
            INSERT INTO fn_rows (t) VALUES (t) RETURNING id INTO n;
            RETURN n;
        END $$;
        CREATE VIEW fn_writer AS SELECT ryw_write('view') AS id;
        CREATE FUNCTION ryw_where() RETURNS text LANGUAGE sql STABLE AS
            $$ SELECT setting FROM pg_settings WHERE name = 'cluster_name' $$;
    """)
    replicated.wait_replayed()
    yield replicated
    if replicated.started and not replicated.broken:
        replicated.psql(replicated.primary, "ALTER DATABASE app RESET synchronous_commit")
        psql_as_app(replicated, replicated.primary, """
            DROP VIEW IF EXISTS fn_writer;
            DROP FUNCTION IF EXISTS ryw_write(text), ryw_where();
            DROP TABLE IF EXISTS ryw_rows, fn_rows;
        """)


def fn_rows(svc, t):
    return int(psql_as_app(svc, svc.primary,
                           "SELECT count(*) FROM fn_rows WHERE t = '%s'" % t))


# ---------------------------------------------------------------------------
# 1. write, then read the row just written, through one database name


class LagInjector:
    """While active: replay paused on one standby, then the other, `hold`
    seconds each, never both at once, so that most of the time one standby
    is stale (the writes keep coming) while it still passes its health
    checks (max_replica_lag is 0: lag alone does not exclude it)."""

    def __init__(self, svc, hold=0.7, gap=0.15):
        self.svc, self.hold, self.gap = svc, hold, gap
        self.stop = threading.Event()
        self.pauses = 0
        self.error = None
        self.thread = threading.Thread(target=self._run, daemon=True)

    def _run(self):
        k = 0
        try:
            while not self.stop.is_set():
                s = self.svc.standbys[k % len(self.svc.standbys)]
                self.svc.pause_replay(s)
                self.pauses += 1
                try:
                    self.stop.wait(self.hold)
                finally:
                    self.svc.resume_replay(s)
                self.stop.wait(self.gap)
                k += 1
        except Exception as e:  # reported by the test
            self.error = e

    def __enter__(self):
        self.thread.start()
        return self

    def __exit__(self, *exc):
        self.stop.set()
        self.thread.join(30)


def check_ryw(app, res, svc, pairs=RYW_WORKERS * RYW_ITERATIONS):
    assert "fatal" not in res, res
    assert res["errors"] == [], res
    assert res["pairs"] == pairs, res
    assert res["missed"] == 0, res
    assert sum(res["pods"].values()) == res["pairs"], res
    primary, standbys = names(svc)
    assert set(res["pods"]) <= standbys | {primary}, res
    on_standby = sum(n for p, n in res["pods"].items() if p in standbys)
    SHARES[app] = (on_standby, res["pairs"])
    print("\n%s: %d of %d reads right after a write served by a standby (%s)"
          % (app, on_standby, res["pairs"], res["pods"]))


def run_ryw(svc, pgfleet, app, body):
    """body(fleet, base) -> result dict, run while LagInjector works."""
    fleet = start(pgfleet, svc)
    base = 1000000 * (1 + sorted(RYW_APPS).index(app))
    t0 = time.monotonic()
    with LagInjector(svc) as lag:
        res = body(fleet, base)
    took = time.monotonic() - t0
    assert lag.error is None, lag.error
    assert lag.pauses >= 1
    print("\n%s: %.1fs, %d replay pauses" % (app, took, lag.pauses))
    check_ryw(app, res, svc)


def ryw_threads(fleet, body, setup=None):
    """RYW_WORKERS threads, each on its own psycopg connection (after the
    statement `setup`, if any), run body(conn, w, seen); seen(id_, pod, got)
    counts one read of row id_ that ran on pod and found id `got`.  The
    result dict of the driver apps."""
    res = {"pairs": 0, "missed": 0, "misses": [], "errors": [], "pods": {}}
    lock = threading.Lock()

    def seen(id_, pod, got):
        with lock:
            res["pairs"] += 1
            res["pods"][pod] = res["pods"].get(pod, 0) + 1
            if got != id_:
                res["missed"] += 1
                res["misses"].append("id %d not seen on %s" % (id_, pod))

    def worker(w):
        try:
            with guarded(fleet, 60) as conn:
                if setup:
                    conn.execute(setup)
                body(conn, w, seen)
        except Exception as e:
            with lock:
                res["errors"].append("worker %d: %r" % (w, e))

    threads = [threading.Thread(target=worker, args=(w,), daemon=True)
               for w in range(RYW_WORKERS)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(90)
    assert not any(t.is_alive() for t in threads), "a psycopg worker hung"
    return res


def ryw_psycopg(fleet, base, binary, setup=None):
    def body(conn, w, seen):
        for i in range(RYW_ITERATIONS):
            id_ = base + w * 100000 + i
            if binary:
                conn.execute("INSERT INTO ryw_rows (id, app) VALUES (%s, %s)",
                             [id_, "psycopg"], binary=True)
                seen(id_, *conn.execute(RYW_READ, [id_], binary=True).fetchone())
            else:
                conn.execute("INSERT INTO ryw_rows (id, app) VALUES (%d, 'psycopg')" % id_)
                seen(id_, *conn.execute(RYW_READ % id_).fetchone())
    return ryw_threads(fleet, body, setup)


def ryw_asyncpg(fleet, base):
    import asyncpg
    res = {"pairs": 0, "missed": 0, "misses": [], "errors": [], "pods": {}}
    read = RYW_READ.replace("%s", "$1")
    dsn = "postgresql://%s:%s@%s:%d/%s" % (fx.APP_USER, fx.APP_PASSWORD,
                                           fleet.host, fleet.port, fx.APP_DB)

    async def worker(w):
        conn = await asyncpg.connect(dsn, command_timeout=30)
        try:
            for i in range(RYW_ITERATIONS):
                id_ = base + w * 100000 + i
                await conn.execute("INSERT INTO ryw_rows (id, app) VALUES ($1, $2)",
                                   id_, "asyncpg")
                pod, got = await conn.fetchrow(read, id_)
                res["pairs"] += 1
                res["pods"][pod] = res["pods"].get(pod, 0) + 1
                if got != id_:
                    res["missed"] += 1
                    res["misses"].append("id %d not seen on %s" % (id_, pod))
        except Exception as e:
            res["errors"].append("worker %d: %r" % (w, e))
        finally:
            conn.terminate()

    async def main():
        await asyncio.gather(*(worker(w) for w in range(RYW_WORKERS)))

    asyncio.run(asyncio.wait_for(main(), 90))
    return res


def ryw_node(fleet, base):
    node = shutil.which("node")
    assert node, "node is not installed (scripts/install-deps.sh)"
    assert os.path.isfile(os.path.join(DRIVERS, "node_modules", "pg", "package.json")), \
        "npm pg missing: run scripts/install-deps.sh"
    cfg = {"host": fleet.host, "port": fleet.port, "user": fx.APP_USER,
           "password": fx.APP_PASSWORD, "database": fx.APP_DB,
           "workers": RYW_WORKERS, "iterations": RYW_ITERATIONS, "base": base,
           "app": "node"}
    p = subprocess.run([node, os.path.join(DRIVERS, "node_ryw.js"), json.dumps(cfg)],
                       capture_output=True, text=True, timeout=90)
    assert p.stdout.strip(), p.stderr[-3000:]
    return json.loads(p.stdout.strip().splitlines()[-1])


@pytest.fixture(scope="module")
def jdbc_classes(tmp_path_factory):
    javac = shutil.which("javac")
    assert javac and shutil.which("java"), "no JDK (scripts/install-deps.sh)"
    assert os.path.isfile(PGJDBC_JAR), \
        "%s missing: apt-get install libpostgresql-jdbc-java" % PGJDBC_JAR
    out = tmp_path_factory.mktemp("jdbc")
    subprocess.run([javac, "-d", str(out), "-cp", PGJDBC_JAR,
                    os.path.join(DRIVERS, "PgjdbcRyw.java"),
                    os.path.join(DRIVERS, "PgjdbcPrepared.java")],
                   check=True, capture_output=True, timeout=120)
    return "%s:%s" % (out, PGJDBC_JAR)


def ryw_jdbc(fleet, base, classpath, threshold):
    url = "jdbc:postgresql://%s:%d/%s" % (fleet.host, fleet.port, fx.APP_DB)
    p = subprocess.run([shutil.which("java"), "-cp", classpath, "PgjdbcRyw", url,
                        fx.APP_USER, fx.APP_PASSWORD, str(RYW_WORKERS),
                        str(RYW_ITERATIONS), str(base), threshold],
                       capture_output=True, text=True, timeout=90)
    assert p.returncode == 0, p.stdout[-2000:] + p.stderr[-3000:]
    res = json.loads(p.stdout.strip().splitlines()[-1])
    # Both statements ran often enough to be server-prepared (named).
    assert res["server_prepared"] == 2 * RYW_WORKERS, res
    return res


RYW_APPS = ["psycopg-simple", "psycopg-binary", "asyncpg", "node-postgres",
            "pgjdbc-threshold-default", "pgjdbc-threshold-1"]


@pytest.mark.parametrize("app", RYW_APPS)
def test_a_client_reads_its_own_writes(rw, pgfleet, app, request):
    """INSERT a unique row, then at once SELECT it by id, both in
    autocommit, from RYW_WORKERS connections at once: never a miss, while
    one standby at a time has its replay paused."""
    if app.startswith("pgjdbc"):
        classpath = request.getfixturevalue("jdbc_classes")
        threshold = "1" if app.endswith("-1") else "default"
        body = lambda fleet, base: ryw_jdbc(fleet, base, classpath, threshold)  # noqa: E731
    else:
        body = {"psycopg-simple": lambda f, b: ryw_psycopg(f, b, binary=False),
                "psycopg-binary": lambda f, b: ryw_psycopg(f, b, binary=True),
                "asyncpg": ryw_asyncpg,
                "node-postgres": ryw_node}[app]
    run_ryw(rw, pgfleet, app, body)


# ---------------------------------------------------------------------------
# 2. reads spread over the standbys, writes only on the primary


def admin_show(fleet, what):
    """SHOW `what` on the admin console: a list of dicts."""
    with psycopg.connect(fleet.dsn(dbname="pgfleet", user=ADMIN, password=ADMIN_PW),
                         autocommit=True) as conn:
        conn.prepare_threshold = None
        cur = conn.execute("SHOW " + what)
        cols = [d.name for d in cur.description]
        return [dict(zip(cols, row)) for row in cur.fetchall()]


def replica_counters(fleet):
    """{addr: xacts} of database app from SHOW REPLICAS (summed over rows:
    one per worker or not)."""
    out = {}
    for r in admin_show(fleet, "REPLICAS"):
        if r["database"] == "app":
            out[r["addr"]] = out.get(r["addr"], 0) + int(r["xacts"])
    return out


def test_reads_spread_over_the_standbys_writes_stay_on_the_primary(rw, pgfleet):
    fleet = start(pgfleet, rw)
    primary, standbys = names(rw)
    readers, reads, writes = 4, 60, 120
    seen, wrote, errors = [], [], []
    lock = threading.Lock()
    before = replica_counters(fleet)

    def reader():
        try:
            with guarded(fleet, 60) as conn:
                for k in range(reads):
                    # Simple and extended protocol, alternately.
                    pod = where(conn) if k % 2 else where(
                        conn, WHERE_SQL + " AND %s::int >= 0", [k], binary=True)
                    with lock:
                        seen.append(pod)
        except Exception as e:
            errors.append(repr(e))

    def writer():
        try:
            with guarded(fleet, 60) as conn:
                for k in range(writes):
                    pod = where(conn, "INSERT INTO ryw_rows (id, app) VALUES (%d, 'spread') "
                                "RETURNING (%s)" % (9000000 + k, WHERE_SQL))
                    with lock:
                        wrote.append(pod)
        except Exception as e:
            errors.append(repr(e))

    threads = [threading.Thread(target=reader, daemon=True) for _ in range(readers)]
    threads.append(threading.Thread(target=writer, daemon=True))
    for t in threads:
        t.start()
    for t in threads:
        t.join(90)
    assert not errors, errors
    assert len(seen) == readers * reads and len(wrote) == writes
    assert set(wrote) == {primary}, wrote
    # Clients that never wrote read from the standbys only, from both.
    counts = {p: seen.count(p) for p in set(seen)}
    assert set(counts) == standbys, counts
    assert min(counts.values()) >= 0.05 * len(seen), counts  # least_conn: uneven, never one
    # pgfleet's own counters agree: the standbys' transactions are the reads.
    p_addr = fx.pod_addr(rw.primary)
    s_addrs = [fx.pod_addr(i) for i in rw.standbys]
    delta = {}

    def counted():
        after = replica_counters(fleet)
        delta.update({a: after.get(a, 0) - before.get(a, 0) for a in after})
        # (a prepared statement's own Parse/Sync counts as one more)
        return (len(seen) <= sum(delta.get(a, 0) for a in s_addrs) <= len(seen) + 2 * readers
                and delta.get(p_addr) == writes)
    assert fx.wait_until(counted, 5), delta


@pytest.mark.parametrize("commit", ["async", "sync"])
def test_share_of_reads_after_a_write_on_a_standby_without_lag(rw, pgfleet, commit):
    """No replay paused: replication lag is milliseconds.  No miss; the
    share of reads right after a write that a standby served is printed
    (the issue asks for it to be measured).  "async": the session sets
    synchronous_commit = off, the fixture servers' own setting: a commit's
    WAL leaves the primary at the WAL writer's next round (wal_writer_delay,
    200 ms), so a read a millisecond later rarely finds a standby that has
    it.  "sync": the database's synchronous_commit = on (see rw)."""
    fleet = start(pgfleet, rw)
    setup = "SET synchronous_commit = off" if commit == "async" else None
    res = ryw_psycopg(fleet, 7000000 + (500000 if setup else 0), binary=False, setup=setup)
    check_ryw("psycopg-simple, no lag, %s commit" % commit, res, rw)


def test_two_writes_back_to_back_then_a_read(rw, pgfleet):
    """INSERT a, INSERT b (sent as soon as a's ReadyForQuery arrives),
    then SELECT b: the read must see b, the client's last write, not only
    a.  (The second write may reach pgfleet while the first one's WAL
    position is still being read on the primary connection.)"""
    fleet = start(pgfleet, rw)

    def body(conn, w, seen):
        for i in range(RYW_ITERATIONS):
            a = 9100000 + w * 10000 + 2 * i
            conn.execute("INSERT INTO ryw_rows (id, app) VALUES (%d, 'a')" % a)
            conn.execute("INSERT INTO ryw_rows (id, app) VALUES (%d, 'b')" % (a + 1))
            seen(a + 1, *conn.execute(RYW_READ % (a + 1)).fetchone())
    res = ryw_threads(fleet, body)
    check_ryw("two writes then a read", res, rw)


def test_a_write_in_an_explicit_transaction_then_a_read(rw, pgfleet):
    """BEGIN; INSERT; INSERT; COMMIT, then the read in autocommit: the WAL
    position is the one after COMMIT."""
    fleet = start(pgfleet, rw)

    def body(conn, w, seen):
        for i in range(RYW_ITERATIONS // 2):
            a = 9200000 + w * 10000 + 2 * i
            with conn.transaction():
                conn.execute("INSERT INTO ryw_rows (id, app) VALUES (%d, 'tx')" % a)
                conn.execute("INSERT INTO ryw_rows (id, app) VALUES (%s, 'tx')", [a + 1])
            seen(a + 1, *conn.execute(RYW_READ % (a + 1)).fetchone())
    check_ryw("explicit transaction then a read", ryw_threads(fleet, body), rw,
              pairs=RYW_WORKERS * (RYW_ITERATIONS // 2))


def test_read_your_writes_off_sends_every_read_to_a_standby(rw, pgfleet):
    """read_your_writes = off: the reads after a write are reads like any
    other (standbys only, while they are up); what they see is the
    standby's business."""
    fleet = start(pgfleet, rw, settings=dict(read_your_writes="off"))
    primary, standbys = names(rw)
    with guarded(fleet, 60) as conn:
        for k in range(100):
            assert where(conn, "INSERT INTO ryw_rows (id, app) VALUES (%d, 'off') "
                         "RETURNING (%s)" % (9600000 + k, WHERE_SQL)) == primary
            assert where(conn, RYW_READ % (9600000 + k)) in standbys


def test_auto_from_the_environment(rw, pgfleet):
    """The ConfigMap way: DB_HOST/DB_USER/DB_PASSWORD and
    PGFLEET_TARGET_SESSION_ATTRS=auto, no file."""
    fleet = pgfleet(config_file=False, users={}, settings=dict(SETTINGS),
                    env={"DB_HOST": fx.SVC_NAME, "DB_USER": fx.APP_USER,
                         "DB_PASSWORD": fx.APP_PASSWORD,
                         "PGFLEET_TARGET_SESSION_ATTRS": "auto"})
    primary, standbys = names(rw)
    with guarded(fleet, 60) as conn:
        # The wildcard entry makes its pool at this first login: reads take
        # the primary until a standby's first check has passed.
        assert fx.wait_until(lambda: where(conn) in standbys, 10), fleet.log_tail()
        assert fx.wait_until(lambda: {where(conn) for _ in range(10)} == standbys, 10)
        for k in range(20):
            assert where(conn, "INSERT INTO ryw_rows (id, app) VALUES (%d, 'env') "
                         "RETURNING (%s)" % (9500000 + k, WHERE_SQL)) == primary
            assert where(conn, RYW_READ % (9500000 + k)) in standbys | {primary}
            assert conn.execute(RYW_READ % (9500000 + k)).fetchone()[1] == 9500000 + k


# ---------------------------------------------------------------------------
# 3. a writing function in a SELECT: 25006 on the standby, re-run on the primary


READ_ONLY_ERR = "cannot execute INSERT in a read-only transaction"


def test_a_function_that_writes_called_in_a_select_succeeds(rw, pgfleet):
    """`SELECT id FROM fn_writer` parses as a plain read of a relation (the
    view calls ryw_write(), which INSERTs): a standby refuses it with 25006,
    pgfleet runs it again on the primary, the client sees the id.  Each
    call on a fresh connection (one that never wrote, so read-your-writes
    does not send it to the primary anyway); simple, extended/binary and
    asyncpg's prepared statements.  A direct call of the user function is
    classified for the primary and works too."""
    import asyncpg
    fleet = start(pgfleet, rw)
    refused0 = sum(server_log_count(rw, i, READ_ONLY_ERR) for i in rw.standbys)
    ids = []
    for k in range(6):
        with guarded(fleet, 30) as conn:
            if k % 2:
                ids.append(where(conn, "SELECT id FROM fn_writer WHERE %s::int >= 0", [k],
                                 binary=True))
            else:
                ids.append(where(conn, "SELECT id FROM fn_writer"))
    dsn = "postgresql://%s:%s@%s:%d/%s" % (fx.APP_USER, fx.APP_PASSWORD,
                                           fleet.host, fleet.port, fx.APP_DB)

    async def via_asyncpg():
        for _ in range(3):
            conn = await asyncpg.connect(dsn, command_timeout=20)
            try:
                ids.append(await conn.fetchval("SELECT id FROM fn_writer"))
                stmt = await conn.prepare("SELECT id + $1::int FROM fn_writer")
                ids.append(await stmt.fetchval(0))
            finally:
                conn.terminate()

    asyncio.run(asyncio.wait_for(via_asyncpg(), 60))
    assert all(isinstance(i, int) and i > 0 for i in ids), ids
    assert len(set(ids)) == len(ids) == 12, ids
    # Each ran (and wrote) exactly once, on the primary.
    assert fn_rows(rw, "view") == 12
    refused = sum(server_log_count(rw, i, READ_ONLY_ERR) for i in rw.standbys) - refused0
    print("\nstandbys refused %d of 12 view reads with 25006" % refused)
    assert refused >= 1, "no view read was tried on a standby first"
    # The user function called directly: never a standby's business.
    with guarded(fleet, 30) as conn:
        for _ in range(3):
            assert where(conn, "SELECT ryw_write('direct')") > 0
    assert fn_rows(rw, "direct") == 3
    # The client's own READ ONLY transaction is not re-run: its error is its.
    with guarded(fleet, 30) as conn:
        conn.execute("BEGIN READ ONLY")
        with pytest.raises(psycopg.errors.ReadOnlySqlTransaction):
            conn.execute("SELECT id FROM fn_writer")
        conn.execute("ROLLBACK")
        assert where(conn, "SELECT 1") == 1


# ---------------------------------------------------------------------------
# 4. a standby dies under reads: no client sees it


def pgbench(fleet, *args, timeout=60):
    env = {k: v for k, v in os.environ.items() if not k.startswith("PG")}
    env["PGPASSWORD"] = fx.APP_PASSWORD
    argv = [os.path.join(PG_BIN, "pgbench"), "-n", "-h", fleet.host, "-p",
            str(fleet.port), "-U", fx.APP_USER] + list(args) + [fx.APP_DB]
    return subprocess.Popen(argv, env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)


# A read of a few milliseconds (an index range of 20000 rows), so that
# several are in flight on the standby when it dies.
RANGE_SCRIPT = """\\set aid random(1, 100000 * :scale)
SELECT count(abalance) FROM pgbench_accounts WHERE aid BETWEEN :aid AND :aid + 20000;
"""


@pytest.mark.parametrize("load", ["select-only", "range-prepared"])
def test_a_standby_killed_under_pgbench_s_fails_no_client(rw, pgfleet, load, tmp_path):
    """pgbench -S (one SELECT per transaction, a read; simple protocol),
    or a script of one heavier read (prepared), with 8 clients for 10 s;
    after 3 s a standby stops (immediate: its backends die at once,
    mid-query for some).  pgbench 15 aborts a client on any error (exit
    status 2, "aborted"): every transaction must succeed."""
    fleet = start(pgfleet, rw)
    victim = rw.standbys[-1]
    if load == "select-only":
        args = ["-S"]
    else:
        script = tmp_path / "range.sql"
        script.write_text(RANGE_SCRIPT)
        args = ["-f", str(script), "-M", "prepared"]
    p = pgbench(fleet, *args, "-c", "8", "-j", "2", "-T", "10")
    try:
        time.sleep(3)
        assert p.poll() is None, p.communicate()
        served = replica_counters(fleet).get(fx.pod_addr(victim), 0)
        assert served > 100, served  # the victim had its share of the load
        rw.stop(victim, "immediate")
        out, err = p.communicate(timeout=40)
    finally:
        if p.poll() is None:
            p.kill()
            p.communicate()
    assert p.returncode == 0, out[-2000:] + err[-3000:]
    assert "aborted" not in out + err, out + err
    assert "number of failed transactions: 0" in out, out
    m = re.search(r"number of transactions actually processed: (\d+)", out)
    assert m and int(m.group(1)) > 100, out
    lost = fleet.log_text().count("server connection to replica %s:%d lost"
                                  % (fx.pod_addr(victim), fx.PG_PORT))
    print("\npgbench %s: %s transactions, %d clients closed for a lost server"
          % (load, m.group(1), lost))


SLOW_READ = ("SELECT count(*) FROM pgbench_accounts a, pgbench_tellers t, "
             "pgbench_tellers t2, (VALUES (1), (2), (3)) v (x)")
SLOW_ROWS = 100000 * 10 * 10 * 3


def test_a_read_whose_standby_dies_mid_query_is_run_again(rw, pgfleet):
    """A read with no reply yet (a count over 30 million rows) whose
    standby is stopped under it: the client gets the full answer from
    another replica, no error.  Simple protocol, extended (the unnamed
    statement), and a named prepared statement (Parse earlier, then
    Bind/Execute/Sync: BindComplete is the server's first reply)."""
    fleet = start(pgfleet, rw)
    for how in ("simple", "extended", "prepared"):
        got, errors = [], []

        def run():
            try:
                with guarded(fleet, 60) as conn:
                    if how == "prepared":
                        conn.execute("SELECT 1 FROM pgbench_tellers LIMIT 1", prepare=True)
                        got.append(conn.execute(SLOW_READ + " WHERE %s::int > 0", [1],
                                                prepare=True).fetchone()[0])
                    else:
                        got.append(conn.execute(SLOW_READ,
                                                binary=how == "extended").fetchone()[0])
            except Exception as e:
                errors.append("%s: %r" % (how, e))

        t = threading.Thread(target=run, daemon=True)
        t.start()
        running_on = None
        deadline = time.monotonic() + 10
        probe = ("SELECT count(*) FROM pg_stat_activity WHERE state = 'active' AND "
                 "position('pgbench_tellers' || ' t2' in query) > 0")
        while running_on is None and time.monotonic() < deadline and t.is_alive():
            for i in rw.standbys:
                if rw.pods[i].running and rw.psql(i, probe) != "0":
                    running_on = i
            time.sleep(0.05)
        assert running_on is not None, "the slow read never ran on a standby"
        rw.stop(running_on, "immediate")
        t.join(60)
        assert not t.is_alive()
        assert errors == [] and got == [SLOW_ROWS], (errors, got)
        # Back up (and seen up by every worker) for the next round.  A
        # worker's check may or may not have caught the stop before the
        # restart: up again means each of its "replica down" lines has been
        # followed by a "replica up" (and each worker logged its first).
        addr = "%s:%d" % (fx.pod_addr(running_on), fx.PG_PORT)
        rw.start_pod(running_on)
        rw.wait_streaming()

        def seen_up():
            log = fleet.log_text()
            downs = len(re.findall(r'msg="replica down" db=app addr=%s .*from=up'
                                   % re.escape(addr), log))
            return log.count('msg="replica up" db=app addr=%s ' % addr) >= fleet.workers + downs
        assert fx.wait_until(seen_up, 3 * PERIOD + TIMEOUT + 5), fleet.log_tail()


STREAM_READ = ("SELECT a.aid FROM pgbench_accounts a, pgbench_tellers t, "
               "pgbench_tellers t2, (VALUES (1), (2), (3)) v (x) "
               "WHERE (a.aid + t.tid + t2.tid + v.x) % 1000 = 0")
STREAM_ROWS = sum(1 for t in range(1, 11) for t2 in range(1, 11) for x in (1, 2, 3)
                  for a in range(1000 - (t + t2 + x) % 1000, 100001, 1000) if a >= 1)


def test_a_read_that_already_answered_is_not_run_again(rw, pgfleet):
    """Rows of a read have reached the client when its standby dies: the
    client gets an error (a re-run would send rows twice), never a silent
    retry."""
    fleet = start(pgfleet, rw)
    probe = ("SELECT count(*) FROM pg_stat_activity WHERE state = 'active' "
             "AND position('VALUES (1), (2)' || ', (3)' in query) > 0")
    with guarded(fleet, 60) as conn:
        rows = 0
        with pytest.raises(psycopg.Error) as ei:
            for _ in conn.cursor().stream(STREAM_READ):
                rows += 1
                if rows == 1:
                    running = [i for i in rw.standbys if rw.psql(i, probe) != "0"]
                    assert len(running) == 1, running
                    rw.stop(running[0], "immediate")
        assert 0 < rows < STREAM_ROWS, rows
        print("\nread after %d rows: %s %r" % (rows, ei.value.sqlstate, str(ei.value)))


def test_a_write_whose_primary_dies_is_not_run_again(rw, pgfleet):
    """A statement that may write (a data-modifying CTE) whose primary dies
    under it: an error to the client, never a re-run elsewhere."""
    fleet = start(pgfleet, rw)
    errors, got = [], []
    sql = ("WITH w AS (INSERT INTO fn_rows (t) VALUES ('slow') RETURNING id) "
           "SELECT count(*) FROM w, " + SLOW_READ.split(" FROM ", 1)[1])

    def run():
        try:
            with guarded(fleet, 60) as conn:
                got.append(where(conn, sql))
        except psycopg.Error as e:
            errors.append(e)

    t = threading.Thread(target=run, daemon=True)
    t.start()
    probe = ("SELECT count(*) FROM pg_stat_activity WHERE state = 'active' AND "
             "position('VALUES (' || '''slow''' in query) > 0")
    assert fx.wait_until(lambda: rw.psql(rw.primary, probe) != "0", 10), \
        "the write never ran on the primary"
    rw.stop(rw.primary, "immediate")
    t.join(60)
    assert not t.is_alive()
    assert got == [] and len(errors) == 1, (got, errors)
    print("\nwrite: %s %r" % (errors[0].sqlstate, str(errors[0])))


# ---------------------------------------------------------------------------
# 6. hints and SET pgfleet.route


def test_hints_send_one_statement_where_they_say(rw, pgfleet):
    """Separate clients: a statement sent to the primary by a hint may
    have written (the parser was not asked), so read-your-writes keeps the
    same client's next reads, standby hint or not, off a standby that has
    not replayed the primary's position."""
    fleet = start(pgfleet, rw)
    with guarded(fleet, 30) as conn:
        for k in range(6):
            assert where(conn, "/* pgfleet:standby */ SELECT pg_is_in_recovery()") is True
            assert where(conn, "/* pgfleet:standby */ SELECT pg_is_in_recovery() "
                         "AND %s::int > 0", [k + 1], binary=True) is True
        # Any case, no space after the comment.
        assert where(conn, "/* pgfleet:STANDBY */" + WHERE_SQL) in names(rw)[1]
    with guarded(fleet, 30) as conn:
        for k in range(6):
            assert where(conn, "/* pgfleet:primary */ SELECT pg_is_in_recovery()") is False
            assert where(conn, "/* pgfleet:primary */ SELECT pg_is_in_recovery() "
                         "AND %s::int > 0", [k + 1], binary=True) is False
        # Spaces inside the comment, any case.
        assert where(conn, "/*  PGFLEET:Primary  */ " + WHERE_SQL) == names(rw)[0]


def server_connections_with_route(svc):
    """Server backends (on any pod) whose last query mentions pgfleet.route."""
    probe = ("SELECT count(*) FROM pg_stat_activity WHERE pid <> pg_backend_pid() "
             "AND position('pgfleet' || '.route' in query) > 0")
    return sum(int(svc.psql(i, probe, dbname="postgres")) for i in range(len(svc.pods)))


def back_on_standbys(conn, standbys, timeout=5):
    """After statements on the primary, read-your-writes may keep a
    client's reads on the primary until a standby is known to have
    replayed the primary's position then (route = primary counts every
    statement as one that may have written): the reads come back to the
    standbys within `timeout`, then stay there."""
    seen = []

    def on_standby():
        seen.append(where(conn))
        return seen[-1] in standbys
    assert fx.wait_until(on_standby, timeout), "%d reads, all on %s" % (len(seen), set(seen))
    return {where(conn) for _ in range(5)} <= standbys


def test_set_pgfleet_route_is_pgfleets_own(rw, pgfleet):
    fleet = start(pgfleet, rw)
    primary, standbys = names(rw)
    with guarded(fleet, 60) as conn:
        assert where(conn) in standbys
        conn.execute("SET pgfleet.route TO 'standby'")
        assert {where(conn) for _ in range(10)} <= standbys
        # Even what the parser sends to the primary (a user function).
        assert where(conn, "SELECT ryw_where()") in standbys
        cur = conn.execute("SET pgfleet.route = 'primary'")
        assert cur.statusmessage == "SET"
        assert server_connections_with_route(rw) == 0
        assert {where(conn) for _ in range(10)} == {primary}
        assert {where(conn, WHERE_SQL + " AND %s::int > 0", [1], binary=True)
                for _ in range(5)} == {primary}
        # Never sent to a server: no server session has it.
        assert where(conn, "SELECT current_setting('pgfleet.route', true)") is None
        with pytest.raises(psycopg.errors.InvalidParameterValue) as ei:
            conn.execute("SET pgfleet.route = bogus")
        assert ei.value.sqlstate == "22023"
        assert "pgfleet.route" in str(ei.value)
        # The session goes on, the setting unchanged.
        assert where(conn, "SELECT pg_is_in_recovery()") is False
        cur = conn.execute("RESET pgfleet.route")
        assert cur.statusmessage == "RESET"
        # Back to the parser's choice.
        assert back_on_standbys(conn, standbys)
        assert where(conn, "/* pgfleet:primary */ SELECT pg_is_in_recovery()") is False
        conn.execute("SET pgfleet.route TO 'primary'", binary=True)  # extended protocol
        assert {where(conn) for _ in range(5)} == {primary}
        conn.execute("SET pgfleet.route TO DEFAULT")
        assert back_on_standbys(conn, standbys)
        with pytest.raises(psycopg.Error):
            conn.execute("SET LOCAL pgfleet.route = 'primary'")
        assert server_connections_with_route(rw) == 0
        assert where(conn, "SELECT 1") == 1


def test_set_pgfleet_route_primary_unquoted(rw, pgfleet):
    """The issue's own words, `SET pgfleet.route = primary`: PRIMARY is a
    reserved word in PostgreSQL's grammar (PostgreSQL itself answers a
    syntax error for `SET x.y = primary`), so pgfleet must take it before,
    or without, the parser."""
    fleet = start(pgfleet, rw)
    primary, standbys = names(rw)
    with guarded(fleet, 30) as conn:
        conn.execute("SET pgfleet.route = primary")
        assert {where(conn) for _ in range(5)} == {primary}
        conn.execute("SET pgfleet.route = standby")
        assert back_on_standbys(conn, standbys)
        conn.execute("SET pgfleet.route = auto")
        conn.execute("SET pgfleet.route TO primary")
        assert {where(conn) for _ in range(5)} == {primary}
        conn.execute("RESET pgfleet.route")


def test_set_pgfleet_route_from_asyncpg(rw, pgfleet):
    import asyncpg
    fleet = start(pgfleet, rw)
    primary, standbys = names(rw)
    dsn = "postgresql://%s:%s@%s:%d/%s" % (fx.APP_USER, fx.APP_PASSWORD,
                                           fleet.host, fleet.port, fx.APP_DB)

    async def main():
        conn = await asyncpg.connect(dsn, command_timeout=20)
        try:
            first = await conn.fetchval(WHERE_SQL)
            await conn.execute("SET pgfleet.route = 'primary'")
            on_primary = {await conn.fetchval(WHERE_SQL) for _ in range(5)}
            shown = [await conn.fetchval("SHOW pgfleet.route")]  # binary results
            await conn.execute("SET pgfleet.route = standby")
            on_standby = {await conn.fetchval(WHERE_SQL) for _ in range(5)}
            shown.append(await conn.fetchval("SHOW pgfleet.route"))
            assert shown == ["primary", "standby"], shown
            return first, on_primary, on_standby
        finally:
            conn.terminate()

    first, on_primary, on_standby = asyncio.run(asyncio.wait_for(main(), 30))
    assert first in standbys
    assert on_primary == {primary}
    assert on_standby <= standbys


# ---------------------------------------------------------------------------
# 7. transactions and multi-statement strings


READ_ONLY_BEGINS = ["BEGIN READ ONLY", "START TRANSACTION READ ONLY",
                    "begin transaction isolation level repeatable read, read only",
                    "BEGIN; SET TRANSACTION READ ONLY"]


def test_read_only_transactions_run_on_a_standby(rw, pgfleet):
    fleet = start(pgfleet, rw)
    primary, standbys = names(rw)
    with guarded(fleet, 60) as conn:
        for begin in READ_ONLY_BEGINS[:3]:
            for _ in range(3):
                conn.execute(begin)
                a = where(conn)
                b = where(conn, WHERE_SQL + " AND %s::int > 0", [1], binary=True)
                assert where(conn, "SELECT pg_is_in_recovery()") is True, begin
                conn.execute("COMMIT")
                assert a == b and a in standbys, (begin, a, b)
        conn.execute("BEGIN READ ONLY", binary=True)  # extended protocol
        assert where(conn) in standbys
        conn.execute("COMMIT")
    # psycopg's own: read_only = True makes it send BEGIN READ ONLY.
    with guarded(fleet, 30, autocommit=False) as conn:
        conn.read_only = True
        for _ in range(3):
            with conn.transaction():
                assert where(conn) in standbys
                assert where(conn, "SELECT pg_is_in_recovery()") is True


def test_other_statement_forms(rw, pgfleet):
    """SHOW is a read; EXPLAIN ANALYZE of a write runs it on the primary
    (no standby refuses it first); asyncpg's read-only transaction
    (BEGIN READ ONLY through its prepared-statement path) on a standby."""
    import asyncpg
    fleet = start(pgfleet, rw)
    primary, standbys = names(rw)
    refused0 = sum(server_log_count(rw, i, READ_ONLY_ERR) for i in rw.standbys)
    with guarded(fleet, 30) as conn:
        assert {where(conn, "SHOW cluster_name") for _ in range(6)} <= standbys
        for k in range(3):
            conn.execute("EXPLAIN ANALYZE INSERT INTO ryw_rows (id, app) VALUES (%d, 'explain')"
                         % (9300000 + k))
    refused = sum(server_log_count(rw, i, READ_ONLY_ERR) for i in rw.standbys)
    assert refused == refused0
    assert psql_as_app(rw, rw.primary,
                       "SELECT count(*) FROM ryw_rows WHERE app = 'explain'") == "3"
    dsn = "postgresql://%s:%s@%s:%d/%s" % (fx.APP_USER, fx.APP_PASSWORD,
                                           fleet.host, fleet.port, fx.APP_DB)

    async def main():
        conn = await asyncpg.connect(dsn, command_timeout=20)
        try:
            out = set()
            for _ in range(3):
                async with conn.transaction(readonly=True):
                    out.add(await conn.fetchval(WHERE_SQL))
                    out.add(await conn.fetchval(WHERE_SQL + " AND $1::int > 0", 1))
            return out
        finally:
            conn.terminate()

    assert asyncio.run(asyncio.wait_for(main(), 30)) <= standbys


def test_plain_transactions_and_multi_statements_run_on_the_primary(rw, pgfleet):
    fleet = start(pgfleet, rw)
    primary, standbys = names(rw)
    with guarded(fleet, 60) as conn:
        for _ in range(3):
            conn.execute("BEGIN")
            assert where(conn) == primary
            assert where(conn, "SELECT pg_is_in_recovery()") is False
            conn.execute("COMMIT")
        # SET TRANSACTION READ ONLY after a plain BEGIN: the primary (the
        # transaction was routed at BEGIN), and it is read only there.
        conn.execute(READ_ONLY_BEGINS[3])
        assert where(conn) == primary
        conn.execute("COMMIT")
        for sql in ["SELECT 1; " + WHERE_SQL, WHERE_SQL + "; SELECT 1"]:
            cur = conn.cursor()
            cur.execute(sql)
            pods = []
            while True:
                pods += [r[0] for r in cur.fetchall()]
                if not cur.nextset():
                    break
            assert primary in pods and not set(pods) & standbys, (sql, pods)
    with guarded(fleet, 30, autocommit=False) as conn:  # psycopg sends BEGIN
        for _ in range(3):
            with conn.transaction():
                assert where(conn) == primary
        conn.commit()


def test_pipelined_reads_and_writes(rw, pgfleet):
    """psycopg's pipeline mode: reads and writes sent without waiting, one
    Sync at the end of each round.  A batch with a write runs on the
    primary whole (the read after the write sees it)."""
    fleet = start(pgfleet, rw)
    primary, standbys = names(rw)
    with guarded(fleet, 60) as conn:
        for rnd in range(10):
            id_ = 9700000 + rnd
            with conn.pipeline():
                c1 = conn.execute(WHERE_SQL + " AND %s::int >= 0", [rnd])
                c2 = conn.execute("INSERT INTO ryw_rows (id, app) VALUES (%s, 'pipe') "
                                  "RETURNING (" + WHERE_SQL + ")", [id_])
                c3 = conn.execute(RYW_READ, [id_])
            assert c2.fetchone()[0] == primary
            pod, got = c3.fetchone()
            assert got == id_, (pod, got)
            assert c1.fetchone()[0] == primary  # one batch, one server


def test_pipelined_reads_take_a_standby(rw, pgfleet):
    """psycopg's pipeline mode, a client that never writes: each batch of
    five reads runs on one standby.  (At prepare_threshold, psycopg Parses
    its named statement in the batch that first Binds it.)"""
    fleet = start(pgfleet, rw)
    standbys = names(rw)[1]
    with guarded(fleet, 60) as conn:
        seen = set()
        for rnd in range(10):
            with conn.pipeline():
                curs = [conn.execute(WHERE_SQL + " AND %s::int >= 0", [k]) for k in range(5)]
            pods = {c.fetchone()[0] for c in curs}
            assert len(pods) == 1, pods
            seen |= pods
        assert seen <= standbys, seen


def libpq_batch(conn, steps):
    """steps (functions of the PGconn) sent in pipeline mode, then one
    Sync: the first column of each row set."""
    pg = conn.pgconn
    pg.enter_pipeline_mode()
    for step in steps:
        step(pg)
    pg.pipeline_sync()
    while pg.flush():
        select.select([], [pg.socket], [], 5)
    out = []
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        if pg.is_busy():
            select.select([pg.socket], [], [], 1)
            pg.consume_input()
            continue
        r = pg.get_result()
        if r is None:
            continue
        if r.status == pq.ExecStatus.TUPLES_OK:
            out.append(r.get_value(0, 0).decode())
        elif r.status == pq.ExecStatus.PIPELINE_SYNC:
            break
        elif r.status != pq.ExecStatus.COMMAND_OK:
            out.append("error: %s" % r.error_message.decode(errors="replace"))
    else:
        raise AssertionError("no answer to the batch within 20 s")
    pg.exit_pipeline_mode()
    return out


def test_a_named_statement_parsed_and_used_in_one_batch_is_a_read(rw, pgfleet):
    """Parse(name) Bind(name) Execute Sync in one batch: what pgjdbc sends at
    its prepareThreshold-th execution, node-postgres at a named query's
    first use, psycopg's pipeline at prepare_threshold.  The statement's
    class comes from the Parse in the same batch: a standby."""
    fleet = start(pgfleet, rw)
    primary, standbys = names(rw)
    text = WHERE_SQL.encode() + b" AND $1::int >= 0"
    with guarded(fleet, 60) as conn:
        for k in range(4):
            name = b"s%d" % k
            got = libpq_batch(conn, [lambda pg: pg.send_prepare(name, text),
                                     lambda pg: pg.send_query_prepared(name, [b"1"])])
            assert len(got) == 1 and got[0] in standbys, got
            got = libpq_batch(conn, [lambda pg: pg.send_query_prepared(name, [b"1"])])
            assert len(got) == 1 and got[0] in standbys, got


def test_session_pooling_with_auto_sends_sessions_to_the_primary(rw, pgfleet):
    fleet = start(pgfleet, rw, settings=dict(pool_mode="session"))
    primary, standbys = names(rw)
    with guarded(fleet, 30) as conn:
        assert {where(conn) for _ in range(10)} == {primary}
        assert where(conn, "INSERT INTO ryw_rows (id, app) VALUES (9800000, 'session') "
                     "RETURNING (" + WHERE_SQL + ")") == primary


def test_a_cancel_reaches_the_standby_running_the_read(rw, pgfleet):
    """A long read on a standby, cancelled by the client (CancelRequest):
    57014 at once, and the connection goes on."""
    fleet = start(pgfleet, rw)
    with guarded(fleet, 60) as conn:
        timer = threading.Timer(0.5, conn.cancel)
        t0 = time.monotonic()
        timer.start()
        try:
            with pytest.raises(psycopg.errors.QueryCanceled):
                conn.execute(SLOW_READ + ", (VALUES (1), (2), (3)) w (y)")
        finally:
            timer.cancel()
        took = time.monotonic() - t0
        assert took < 3, took
        assert where(conn, "SELECT 1") == 1


def test_a_small_route_cache_never_mixes_classes(rw, pgfleet):
    """route_cache_size = 4 with 40 texts going round: entries are evicted
    and replaced all the time, a read's class never goes to a write's text
    or back: the writes never meet a standby (no 25006 there) and a client
    that only reads stays on the standbys."""
    fleet = start(pgfleet, rw, settings=dict(route_cache_size=4, workers=1))
    primary, standbys = names(rw)
    refused0 = sum(server_log_count(rw, i, "read-only transaction") for i in rw.standbys)
    with guarded(fleet, 60) as reader, guarded(fleet, 60) as writer:
        for rnd in range(5):
            for k in range(20):
                id_ = 9900000 + k
                assert where(writer, "INSERT INTO ryw_rows (id, app) VALUES (%d, 'cache') "
                             "ON CONFLICT (id) DO UPDATE SET app = 'cache' RETURNING (%s)"
                             % (id_, WHERE_SQL)) == primary
                assert where(reader, WHERE_SQL + " AND %d >= 0" % k) in standbys
    refused = sum(server_log_count(rw, i, "read-only transaction") for i in rw.standbys)
    assert refused == refused0


def test_the_cache_never_merges_names_that_differ_in_digits(rw, pgfleet):
    """The class cache keys a text by its skeleton (number literals as 0):
    digits inside a name are part of the name.  md5() is a safe built-in;
    md6(), a user function that writes, must go to the primary at once (no
    25006 from a standby first), before and after md5() was cached."""
    psql_as_app(rw, rw.primary, """
        CREATE OR REPLACE FUNCTION md6(t text) RETURNS int LANGUAGE sql AS
            $$ INSERT INTO fn_rows (t) VALUES ('md6') RETURNING id $$;""")
    rw.wait_replayed()
    try:
        fleet = start(pgfleet, rw, settings=dict(workers=1))
        refused0 = sum(server_log_count(rw, i, READ_ONLY_ERR) for i in rw.standbys)
        with guarded(fleet, 30) as conn:
            for k in range(3):
                assert where(conn, "SELECT md5('a%d')" % k) is not None
                assert where(conn, "SELECT md6('a%d')" % k) > 0
                assert where(conn, "SELECT md5('b')") is not None
                assert where(conn, "SELECT md6('b')") > 0
                assert where(conn, 'SELECT "md5"(\'c\')') is not None
                assert where(conn, 'SELECT "md6"(\'c\')') > 0
        refused = sum(server_log_count(rw, i, READ_ONLY_ERR) for i in rw.standbys)
        assert refused == refused0, "md6() was tried on a standby %d times" % (refused - refused0)
        assert fn_rows(rw, "md6") == 9
    finally:
        psql_as_app(rw, rw.primary, "DROP FUNCTION IF EXISTS md6(text)")


# ---------------------------------------------------------------------------
# 8. target_session_attrs = any: the parser is never called


def route_parses(fleet):
    """pgfleet_route_parses_total summed over its label sets, or None if
    /metrics has no such family."""
    status, body = fleet.http_get("/metrics")
    assert status == 200, body[:500]
    total, found = 0, False
    for line in body.splitlines():
        m = re.match(r"(pgfleet_route_parses_total)(\{[^}]*\})? (\S+)$", line)
        if m:
            found = True
            total += float(m.group(3))
    return int(total) if found else None


TRAFFIC_IDS = itertools.count(8000000)


def some_traffic(fleet, n=40):
    with guarded(fleet, 60) as conn:
        for k in range(n):
            where(conn)
            where(conn, WHERE_SQL + " AND %s::int >= 0", [k], binary=True)
            where(conn, "SELECT %d" % next(TRAFFIC_IDS))
            conn.execute("BEGIN READ ONLY")
            where(conn, "SELECT 1")
            conn.execute("COMMIT")


def test_with_any_nothing_is_parsed(rw, pgfleet):
    fleet = start(pgfleet, rw, tsa="any")
    some_traffic(fleet)
    parses = route_parses(fleet)
    assert parses is not None, \
        "no pgfleet_route_parses_total in /metrics: the parse counter is missing"
    assert parses == 0, parses


def test_with_auto_a_repeated_text_is_parsed_once(rw, pgfleet):
    """The same texts again and again: the class comes from the cache
    (route_cache_size), so parses stay at most one per text and worker."""
    fleet = start(pgfleet, rw)
    some_traffic(fleet, n=60)
    parses = route_parses(fleet)
    assert parses is not None, \
        "no pgfleet_route_parses_total in /metrics: the parse counter is missing"
    # Distinct texts in some_traffic: 2 reads, 60 SELECTs of a literal,
    # BEGIN READ ONLY, SELECT 1, COMMIT.
    distinct = 2 + 60 + 3
    assert 0 < parses <= distinct * fleet.workers, parses


# ---------------------------------------------------------------------------
# 5. three independent primaries behind one name (last: another topology)


@pytest.fixture
def sb_rows(service):
    for i in range(len(service.pods)):
        psql_as_app(service, i, "DROP TABLE IF EXISTS sb_rows; "
                    "CREATE TABLE sb_rows (id int PRIMARY KEY, pod text)")
    yield
    if service.started:
        for i in range(len(service.pods)):
            if service.pods[i].running:
                psql_as_app(service, i, "DROP TABLE IF EXISTS sb_rows")


@pytest.mark.parametrize("tsa", ["auto", "read-write"])
def test_two_primaries_never_both_take_writes(service, pgfleet, sb_rows, tsa):
    """Every pod is a primary.  Inserts from several clients, each on
    fresh connections now and then, over two phases a few health checks
    apart: every row on one pod, the same one throughout; with auto a
    client's read of its own row never misses (reads go where writes do
    when there is no standby)."""
    fleet = start(pgfleet, service, tsa=tsa)
    errors, landed, missed = [], [], []
    lock = threading.Lock()

    def client(c, phase):
        try:
            for batch in range(5):
                with guarded(fleet, 60) as conn:
                    for k in range(10):
                        id_ = phase * 100000 + c * 1000 + batch * 10 + k
                        pod = where(conn, "INSERT INTO sb_rows VALUES (%d, (%s)) "
                                    "RETURNING pod" % (id_, WHERE_SQL))
                        got = where(conn, "SELECT count(*) FROM sb_rows WHERE id = %d" % id_)
                        with lock:
                            landed.append(pod)
                            if got != 1:
                                missed.append(id_)
        except Exception as e:
            errors.append(repr(e))

    for phase in (1, 2):
        threads = [threading.Thread(target=client, args=(c, phase), daemon=True)
                   for c in range(4)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(90)
        assert not errors, errors
        if phase == 1:
            time.sleep(2 * PERIOD + TIMEOUT)
    counts = [int(psql_as_app(service, i, "SELECT count(*) FROM sb_rows"))
              for i in range(len(service.pods))]
    assert sorted(counts) == [0, 0, 400], (counts, fleet.log_tail())
    assert len(set(landed)) == 1, set(landed)
    assert missed == [], missed[:20]
    # The one that took them: the same timeline everywhere, so the lowest
    # address, as SHOW REPLICAS says; the split brain is said once.
    assert landed[0] == "pod0", landed[0]
    writers = {r["addr"] for r in admin_show(fleet, "REPLICAS")
               if r["database"] == "app" and r["write_primary"] == "yes"}
    assert writers == {fx.pod_addr(0)}, writers
    dbs = [r for r in admin_show(fleet, "DATABASES") if r["name"] == "app"]
    assert [int(r["primaries"]) for r in dbs] == [3], dbs
    assert fleet.log_text().count('msg="several primaries (split brain)" db=app') == 1, \
        fleet.log_tail()
    status, body = fleet.http_get("/metrics")
    assert 'pgfleet_database_primaries{database="app"} 3' in body, \
        [l for l in body.splitlines() if "primaries" in l]
