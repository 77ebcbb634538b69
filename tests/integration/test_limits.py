"""Limits that work (issue 18 item 2): max_db_connections and
max_user_connections hold over every replica and worker (counted on the
PostgreSQL servers themselves), clients beyond them wait and all succeed;
the reserve pool opens only after reserve_pool_timeout; min_pool_size keeps
idle connections warm per replica and refills them; server_reset_query
runs on release in session mode, and in transaction mode only with
server_reset_query_always.

Run with PGFLEET_FIXTURE_WORKERS=2 too: every limit is process-wide.
No assertion depends on the machine being fast: counts are observed,
durations only bounded from below (a wait cannot end early)."""

import threading
import time

import psycopg

import fixture as fx
from test_admin import ADMIN, USERS, admin_conn, show

SETTINGS = {"admin_users": ADMIN, "query_wait_timeout": 120}


def start(pgfleet, databases=None, **settings):
    s = dict(SETTINGS)
    s.update(settings)
    return pgfleet(settings=s, databases=databases, users=dict(USERS))


def backends(service, i, cond=""):
    """Backends of the app user on pod i (pgfleet's server connections; its
    health checks excluded)."""
    return int(service.psql(i, "SELECT count(*) FROM pg_stat_activity WHERE usename = '%s' "
                               "AND application_name <> 'pgfleet-health' %s"
                            % (fx.APP_USER, cond)))


def total_backends(service, cond=""):
    return sum(backends(service, i, cond) for i in range(len(service.addrs)))


def settled_total(service, limit, cond=""):
    """The app user's backends over every pod, read up to three times: a
    backend pgfleet just closed (to give its room to another pool or
    worker) exits a few milliseconds later, and the pods are read one after
    the other, so one reading may catch it beside its successor."""
    n = 0
    for _ in range(3):
        n = total_backends(service, cond)
        if n <= limit:
            return n
        time.sleep(0.05)
    return n


def settled_servers(fleet, limit, database=None):
    """SHOW SERVERS' rows (of one database), read up to three times: with
    workers = 2 it merges two answers taken a moment apart."""
    n = 0
    for _ in range(3):
        _, rows = show(fleet, "SERVERS")
        n = len([r for r in rows if database is None or r["database"] == database])
        if n <= limit:
            return n
        time.sleep(0.05)
    return n


def run_clients(fleet, specs, queries=3, sleep=0.2):
    """One thread per (dbname) in specs: connects, runs `queries` sleeps,
    disconnects.  Returns (threads, errors, done)."""
    errors, done = [], []
    lock = threading.Lock()

    def client(dbname):
        try:
            with fleet.connect(dbname=dbname, autocommit=True) as c:
                c.prepare_threshold = None
                for _ in range(queries):
                    c.execute("SELECT pg_sleep(%s)" % sleep)
            with lock:
                done.append(dbname)
        except Exception as e:  # noqa: BLE001
            errors.append(repr(e))

    threads = [threading.Thread(target=client, args=(d,)) for d in specs]
    for t in threads:
        t.start()
    return threads, errors, done


def watch(threads, check):
    """Calls check() until every thread has ended; returns the largest value
    it returned."""
    most = 0
    while any(t.is_alive() for t in threads):
        most = max(most, check())
        time.sleep(0.05)
    for t in threads:
        t.join(120)
    return most


def two_dbs():
    entry = "host=%s port=%d dbname=%s" % (fx.SVC_NAME, fx.PG_PORT, fx.APP_DB)
    return {fx.APP_DB: entry, "app2": entry}


# ---- max_db_connections --------------------------------------------------------


def test_max_db_connections_holds_over_replicas_and_workers(service, pgfleet):
    # 3 replicas x pool size 5 would allow 15; the database allows 4.
    fleet = start(pgfleet, default_pool_size=5, max_db_connections=4)
    assert fleet.wait_all_up(service.addrs)
    threads, errors, done = run_clients(fleet, [fx.APP_DB] * 12)

    def check():
        n = settled_total(service, 4)
        assert n <= 4, n
        assert settled_total(service, 4, "AND state = 'active'") <= 4
        s = settled_servers(fleet, 4)
        assert s <= 4, s
        return n

    most = watch(threads, check)
    assert not errors, errors
    assert len(done) == 12
    assert most >= 2, most  # it did use several connections
    _, rows = show(fleet, "DATABASES")
    app = [r for r in rows if r["name"] == fx.APP_DB][0]
    assert app["max_connections"] == "4"
    assert int(app["current_connections"]) <= 4


def test_max_db_connections_per_database_and_set_at_run_time(service, pgfleet):
    dbs = {fx.APP_DB: "host=%s port=%d dbname=%s max_db_connections=2"
           % (fx.SVC_NAME, fx.PG_PORT, fx.APP_DB)}
    fleet = start(pgfleet, databases=dbs, default_pool_size=5, max_db_connections=10)
    assert fleet.wait_all_up(service.addrs)
    threads, errors, done = run_clients(fleet, [fx.APP_DB] * 8)

    def check():
        n = settled_total(service, 2)
        assert n <= 2, n
        return n

    watch(threads, check)
    assert not errors, errors
    _, rows = show(fleet, "DATABASES")
    app = [r for r in rows if r["name"] == fx.APP_DB][0]
    assert app["max_connections"] == "2"  # the entry's, not the global 10
    with admin_conn(fleet) as conn:
        conn.execute("SET max_db_connections = 3")
        rows = conn.execute("SHOW CONFIG").fetchall()
        dbs = conn.execute("SHOW DATABASES")
        names = [d.name for d in dbs.description]
        app = [dict(zip(names, r)) for r in dbs.fetchall() if r[0] == fx.APP_DB][0]
    assert app["max_connections"] == 2  # still the entry's
    conf = {r[0]: r[1] for r in rows}
    assert conf["max_db_connections"] == "3"
    assert conf["max_user_connections"] == "0"
    assert conf["reserve_pool_timeout"] == "5"


def test_max_db_connections_waiting_client_gets_a_clear_timeout(service, pgfleet):
    dbs = {fx.APP_DB: "host=%s port=%d dbname=%s" % (fx.pod_addr(0), fx.PG_PORT, fx.APP_DB)}
    fleet = start(pgfleet, databases=dbs, max_db_connections=1, query_wait_timeout=2,
                  workers=1)
    holder = fleet.connect(autocommit=False)
    holder.execute("SELECT 1")  # an open transaction holds the only connection
    try:
        other = fleet.connect(autocommit=True)
        try:
            other.execute("SELECT 1")
            raise AssertionError("the second client got a connection")
        except psycopg.Error as e:
            assert "query_wait_timeout" in str(e) and "max_db_connections (1)" in str(e), e
        finally:
            other.close()
    finally:
        holder.close()


# ---- max_user_connections ------------------------------------------------------


def test_max_user_connections_over_two_databases(service, pgfleet):
    fleet = start(pgfleet, databases=two_dbs(), default_pool_size=5, max_user_connections=3)
    assert fleet.wait_all_up(service.addrs)
    threads, errors, done = run_clients(fleet, [fx.APP_DB, "app2"] * 5)

    def check():
        n = settled_total(service, 3)
        assert n <= 3, n
        assert settled_total(service, 3, "AND state = 'active'") <= 3
        return n

    most = watch(threads, check)
    assert not errors, errors
    assert sorted(set(done)) == [fx.APP_DB, "app2"] and len(done) == 10
    assert most >= 2, most


def test_idle_connection_of_another_database_makes_room(service, pgfleet):
    fleet = start(pgfleet, databases=two_dbs(), default_pool_size=5, max_user_connections=1,
                  workers=1)
    with fleet.connect(dbname=fx.APP_DB, autocommit=True) as a:
        a.execute("SELECT 1")  # its server connection stays idle in app's pool
    assert settled_total(service, 1) == 1
    with fleet.connect(dbname="app2", autocommit=True) as b:
        assert b.execute("SELECT 1").fetchone() == (1,)  # app's idle one was closed for it
    assert settled_total(service, 1) <= 1


# ---- reserve pool ------------------------------------------------------------------


def test_reserve_pool_only_after_the_timeout(service, pgfleet):
    dbs = {fx.APP_DB: "host=%s port=%d dbname=%s" % (fx.pod_addr(0), fx.PG_PORT, fx.APP_DB)}
    fleet = start(pgfleet, databases=dbs, default_pool_size=2, reserve_pool_size=1,
                  reserve_pool_timeout=2)
    holders = [fleet.connect(autocommit=True) for _ in range(2)]
    started = threading.Event()

    def hold(c):
        started.set()
        try:
            c.execute("SELECT pg_sleep(60)")
        except psycopg.Error:
            pass  # canceled at the end

    hts = [threading.Thread(target=hold, args=(c,)) for c in holders]
    for t in hts:
        t.start()
    assert fx.wait_until(lambda: backends(service, 0, "AND state = 'active'") == 2, 20)
    third = fleet.connect(autocommit=True)
    result = {}

    def wait_third():
        t0 = time.monotonic()
        result["row"] = third.execute("SELECT 7").fetchone()
        result["waited"] = time.monotonic() - t0

    t3 = threading.Thread(target=wait_third)
    t3.start()
    try:
        # While the waiting client has waited less than the timeout, the
        # pool stays at its size (SHOW POOLS: the wait and the servers in
        # one snapshot).
        while t3.is_alive():
            _, pools = show(fleet, "POOLS")
            row = [p for p in pools if p["database"] == fx.APP_DB and p["user"] == fx.APP_USER]
            if row and int(row[0]["cl_waiting"]) and int(row[0]["maxwait"]) < 1:
                r = row[0]
                assert int(r["sv_active"]) + int(r["sv_idle"]) + int(r["sv_login"]) <= 2, r
            time.sleep(0.05)
        t3.join(60)
        assert result.get("row") == (7,)
        assert result["waited"] >= 1.5  # only after reserve_pool_timeout
        assert backends(service, 0) == 3  # the reserve connection, beside the two busy
        fleet.wait_log(r'msg="reserve pool used" db=app user=app replica=%s:' % fx.pod_addr(0))
    finally:
        for c in holders:
            c.cancel()
        for t in hts:
            t.join(30)
        for c in holders + [third]:
            c.close()


# ---- min_pool_size -----------------------------------------------------------------


def test_min_pool_size_warms_every_replica_and_refills(service, pgfleet):
    fleet = start(pgfleet, default_pool_size=5, min_pool_size=2)
    assert fleet.wait_all_up(service.addrs)
    with fleet.connect(autocommit=True) as c:
        c.execute("SELECT 1")  # the pool exists once a client came
    pods = range(len(service.addrs))
    assert fx.wait_until(lambda: all(backends(service, i) == 2 for i in pods), 30), \
        [backends(service, i) for i in pods]
    # Counted over every worker: no more than min_pool_size per replica.
    for _ in range(5):
        assert all(backends(service, i) == 2 for i in pods)
        time.sleep(0.2)
    _, rows = show(fleet, "DATABASES")
    assert [r for r in rows if r["name"] == fx.APP_DB][0]["min_pool_size"] == "2"
    before = service.psql(0, "SELECT string_agg(pid::text, ',' ORDER BY pid) FROM "
                             "pg_stat_activity WHERE usename = '%s' AND application_name <> "
                             "'pgfleet-health'" % fx.APP_USER)
    service.psql(0, "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE "
                    "usename = '%s' AND application_name <> 'pgfleet-health'" % fx.APP_USER)

    def refilled():
        now = service.psql(0, "SELECT string_agg(pid::text, ',' ORDER BY pid) FROM "
                              "pg_stat_activity WHERE usename = '%s' AND application_name <> "
                              "'pgfleet-health'" % fx.APP_USER)
        return backends(service, 0) == 2 and not set(now.split(",")) & set(before.split(","))

    assert fx.wait_until(refilled, 30)


def test_min_pool_size_waits_for_a_passing_health_check(service, pgfleet):
    # pod 2 hangs: its first check cannot pass, so no warm connection goes
    # there; the others are warmed.
    service.hang(2)
    fleet = start(pgfleet, default_pool_size=5, min_pool_size=1, health_check_timeout=1)
    assert fleet.wait_all_up(service.addrs[:2])
    with fleet.connect(autocommit=True) as c:
        c.execute("SELECT 1")
    assert fx.wait_until(lambda: backends(service, 0) == 1 and backends(service, 1) == 1, 30)
    time.sleep(1.5)  # two more janitor passes
    _, rows = show(fleet, "SERVERS")
    assert not [r for r in rows if r["addr"] == service.addrs[2]], rows


# ---- server_reset_query ------------------------------------------------------------

RESET_COUNTER = ("SELECT set_config('pgfleet.resets', (coalesce(nullif(current_setting("
                 "'pgfleet.resets', true), ''), '0')::int + 1)::text, false)")


def resets(conn):
    v = conn.execute("SELECT current_setting('pgfleet.resets', true)").fetchone()[0]
    return int(v) if v else 0


def one_pod_db(mode):
    return {fx.APP_DB: "host=%s port=%d dbname=%s pool_size=1 pool_mode=%s"
            % (fx.pod_addr(0), fx.PG_PORT, fx.APP_DB, mode)}


def test_server_reset_query_in_transaction_mode_only_when_always(service, pgfleet):
    fleet = start(pgfleet, databases=one_pod_db("transaction"), server_reset_query=RESET_COUNTER,
                  server_reset_query_always=0, workers=1)
    with fleet.connect(autocommit=True) as c:
        c.prepare_threshold = None
        first = resets(c)
        for _ in range(3):
            assert resets(c) == first  # released after each, never reset
    with admin_conn(fleet) as conn:
        conn.execute("SET server_reset_query_always = 1")
    with fleet.connect(autocommit=True) as c:
        c.prepare_threshold = None
        a = resets(c)
        b = resets(c)
        assert b == a + 1  # reset when released after each transaction


def test_server_reset_query_in_session_mode(service, pgfleet):
    fleet = start(pgfleet, databases=one_pod_db("session"), server_reset_query=RESET_COUNTER,
                  workers=1)
    with fleet.connect(autocommit=True) as c:
        c.prepare_threshold = None
        first = resets(c)
        assert resets(c) == first  # the session keeps its connection
    with fleet.connect(autocommit=True) as c:
        c.prepare_threshold = None
        assert resets(c) == first + 1  # reset when the session released it


def test_users_section_limit_changes_on_reload(service, pgfleet):
    fleet = start(pgfleet, databases=two_dbs(), default_pool_size=5, max_user_connections=10)
    assert fleet.wait_all_up(service.addrs)
    with open(fleet.ini_path, "a") as f:
        f.write("\n[users]\n%s = max_user_connections=2\n" % fx.APP_USER)
    with admin_conn(fleet) as conn:
        conn.execute("RELOAD")
    # every worker has the new configuration before the clients start
    assert fx.wait_until(lambda: fleet.log_text().count("config reloaded") >= fleet.workers, 10)
    threads, errors, done = run_clients(fleet, [fx.APP_DB, "app2"] * 4)

    def check():
        n = settled_total(service, 2)
        assert n <= 2, n
        return n

    watch(threads, check)
    assert not errors, errors
    assert len(done) == 8
