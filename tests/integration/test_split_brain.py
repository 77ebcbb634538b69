"""Two primaries behind one name (issue 19 item 4) and readiness per
database (item 5), against real servers.

Without --replication the fixture is three independent servers, every one a
primary: a read-write database must send every write to one of them (the
lowest address, all on timeline 1), the same one after a RELOAD and in
every worker, while `any` keeps spreading.  With replication, a standby
promoted while the old primary stays up is a split brain: writes move to
the promoted one (its newer timeline) and never land on both.

/readyz is ready while listening and not draining, whatever the
databases; /readyz?database=NAME[&role=primary|standby] answers for one."""

import signal
import time

import psycopg
import pytest

import fixture as fx

PERIOD = 1   # health_check_period
TIMEOUT = 1  # health_check_timeout
ADMIN, ADMIN_PW = "admin", "admin-secret"
USERS = {fx.APP_USER: fx.APP_PASSWORD, ADMIN: ADMIN_PW}
SETTINGS = dict(health_check_period=PERIOD, health_check_timeout=TIMEOUT, dns_max_ttl=1,
                dns_nxdomain_ttl=1, server_login_retry=1, query_wait_timeout=5,
                admin_users=ADMIN)

wait_until = fx.wait_until


def entry(tsa=None, host=fx.SVC_NAME):
    s = "host=%s port=%d dbname=%s" % (host, fx.PG_PORT, fx.APP_DB)
    return s + (" target_session_attrs=" + tsa if tsa else "")


def start(pgfleet, databases):
    return pgfleet(settings=dict(SETTINGS), databases=databases, users=dict(USERS))


def connect(fleet, dbname):
    conn = fleet.connect(dbname=dbname)
    conn.prepare_threshold = None
    return conn


def admin_rows(fleet, what):
    with psycopg.connect(fleet.dsn(ADMIN, ADMIN_PW, "pgfleet"), autocommit=True) as conn:
        conn.prepare_threshold = None
        cur = conn.execute("SHOW " + what)
        names = [d.name for d in cur.description]
        return names, [dict(zip(names, r)) for r in cur.fetchall()]


def replicas_of(fleet, db):
    return {r["addr"]: r for r in admin_rows(fleet, "REPLICAS")[1] if r["database"] == db}


def primaries_metric(fleet, db):
    status, body = fleet.http_get("/metrics")
    assert status == 200
    key = 'pgfleet_database_primaries{database="%s"} ' % db
    for line in body.splitlines():
        if line.startswith(key):
            return int(line[len(key):])
    return None


def writes_land(fleet, dbname, conns=10, per_conn=5):
    """Where conns x per_conn transactions ran (fresh connections, so with
    workers = N they are spread over the workers)."""
    seen = []
    for _ in range(conns):
        with connect(fleet, dbname) as conn:
            for _ in range(per_conn):
                seen.append(conn.execute("SELECT host(inet_server_addr())").fetchone()[0])
    return seen


def log_count(fleet, text):
    return fleet.log_text().count(text)


# ---- independent servers: three primaries ---------------------------------------


@pytest.fixture
def table(service):
    """A table `split_brain` on every pod's app database."""
    for i in range(len(service.pods)):
        service.psql(i, "DROP TABLE IF EXISTS split_brain; "
                        "CREATE TABLE split_brain (tag text, n int)",
                     user=fx.APP_USER, password=fx.APP_PASSWORD)
    yield service
    for i in range(len(service.pods)):
        if service.pods[i].running:
            service.psql(i, "DROP TABLE IF EXISTS split_brain",
                         user=fx.APP_USER, password=fx.APP_PASSWORD)


def rows_on(svc, i, tag):
    return int(svc.psql(i, "SELECT count(*) FROM split_brain WHERE tag = '%s'" % tag,
                        user=fx.APP_USER, password=fx.APP_PASSWORD) or 0)


def insert(fleet, dbname, tag, conns=10, per_conn=5):
    for _ in range(conns):
        with connect(fleet, dbname) as conn:
            for n in range(per_conn):
                conn.execute("INSERT INTO split_brain VALUES (%s, %s)", (tag, n))


def test_three_primaries_one_takes_every_write(table, pgfleet):
    svc = table
    fleet = start(pgfleet, {"app_rw": entry("read-write"), "app": entry()})
    assert fleet.wait_all_up(svc.addrs, "app_rw", 10), fleet.log_tail()
    first = fx.pod_addr(0)  # the lowest address, all on timeline 1
    line = ('msg="several primaries (split brain)" db=app_rw primaries=3 '
            'write_primary=%s:%d timeline=1 ' % (first, fx.PG_PORT))
    assert wait_until(lambda: line in fleet.log_text(), 5), fleet.log_tail()
    others = ", ".join("%s:%d (timeline 1)" % (a, fx.PG_PORT) for a in svc.addrs[1:])
    assert 'others="%s"' % others in fleet.log_text(), fleet.log_tail()

    # 50 writes, in fresh connections (every worker): all on one server.
    insert(fleet, "app_rw", "before")
    assert [rows_on(svc, i, "before") for i in range(3)] == [50, 0, 0]
    assert set(writes_land(fleet, "app_rw", 4, 5)) == {first}
    # `any` still spreads over every primary.
    assert len(set(writes_land(fleet, "app", 3, 10))) > 1

    # SHOW REPLICAS, SHOW DATABASES, /metrics
    names, _ = admin_rows(fleet, "REPLICAS")
    assert names[-2:] == ["timeline", "write_primary"], names
    reps = replicas_of(fleet, "app_rw")
    assert {a: (r["timeline"], r["write_primary"]) for a, r in reps.items()} == {
        a: (1, "yes" if a == first else "no") for a in svc.addrs}, reps
    names, dbs = admin_rows(fleet, "DATABASES")
    assert names[-1] == "primaries", names
    assert {d["name"]: d["primaries"] for d in dbs} == {"app_rw": 3, "app": 3}
    assert primaries_metric(fleet, "app_rw") == 3

    # RELOAD changes nothing.
    fleet.reload()
    assert fleet.wait_every_worker('msg="config reloaded"', 5), fleet.log_tail()
    insert(fleet, "app_rw", "after")
    assert [rows_on(svc, i, "after") for i in range(3)] == [50, 0, 0]
    # Said once for the process, whatever the workers.
    time.sleep(2 * PERIOD)
    assert log_count(fleet, 'msg="several primaries (split brain)" db=app_rw') == 1, \
        fleet.log_text()


def test_write_primary_down_moves_writes_and_back_keeps_them(table, pgfleet):
    """The write primary stops: the next one (lowest address) takes the
    writes; it comes back with an equal timeline and does not take them
    back (kept while the chosen one stays up)."""
    svc = table
    fleet = start(pgfleet, {"app_rw": entry("read-write")})
    assert fleet.wait_all_up(svc.addrs, "app_rw", 10), fleet.log_tail()
    assert wait_until(lambda: "several primaries (split brain)" in fleet.log_text(), 5)
    assert set(writes_land(fleet, "app_rw", 2, 5)) == {svc.addrs[0]}
    svc.stop(0, "fast")
    second = svc.addrs[1]
    line = ('msg="write primary changed" db=app_rw write_primary=%s:%d timeline=1 '
            'from=%s:%d' % (second, fx.PG_PORT, svc.addrs[0], fx.PG_PORT))
    assert wait_until(lambda: line in fleet.log_text(), PERIOD + TIMEOUT + 3), fleet.log_tail()

    def only_second():
        try:
            return set(writes_land(fleet, "app_rw", 2, 5)) == {second}
        except psycopg.Error:
            return False
    assert wait_until(only_second, PERIOD + TIMEOUT + 3), fleet.log_tail()
    svc.start_pod(0)
    up = 'msg="replica up" db=app_rw addr=%s:%d' % (svc.addrs[0], fx.PG_PORT)
    assert fleet.wait_every_worker(up, 15), fleet.log_tail()
    insert(fleet, "app_rw", "back")
    assert [rows_on(svc, i, "back") for i in range(3)] == [0, 50, 0]
    assert replicas_of(fleet, "app_rw")[second]["write_primary"] == "yes"


# ---- replication: a promoted standby next to the old primary --------------------


def test_readyz_process_and_per_database(replicated, pgfleet):
    fleet = start(pgfleet, {"app_rw": entry("read-write"), "app_ro": entry("read-only"),
                            "app": entry()})
    assert fleet.wait_all_up(replicated.addrs, "app_rw", 10), fleet.log_tail()
    assert fleet.wait_all_up(replicated.addrs, "app_ro", 10), fleet.log_tail()
    primary = replicated.pods[replicated.primary].addr
    assert fleet.http_get("/readyz") == (200, "ready\n")
    assert fleet.http_get("/readyz?database=app_rw") == (200, "ready\n")
    assert fleet.http_get("/readyz?database=app_rw&role=primary") == \
        (200, "ready: primary %s:%d is up\n" % (primary, fx.PG_PORT))
    status, body = fleet.http_get("/readyz?database=app_ro&role=standby")
    assert status == 200 and body.startswith("ready: standby "), body
    # One primary: no split brain, primaries = 1.
    assert primaries_metric(fleet, "app_rw") == 1
    assert "split brain" not in fleet.log_text()

    # Errors: unknown database 404, bad role / parameter 400, one line each.
    for path, code, text in [
            ("/readyz?database=nosuch", 404, 'unknown database "nosuch"'),
            ("/readyz?database=app&role=leader", 400, "role must be primary or standby"),
            ("/readyz?role=primary", 400, "role needs database=NAME"),
            ("/readyz?database=app&x=1", 400, 'unknown parameter "x"')]:
        status, body = fleet.http_get(path)
        assert status == code and text in body and body.count("\n") == 1, (path, status, body)

    # The primary stops: the pod stays ready (reads still work), the
    # read-write database and role=primary say why not.
    replicated.stop(replicated.primary, "fast")
    down = 'msg="replica down" db=app_rw addr=%s:%d' % (primary, fx.PG_PORT)
    assert fleet.wait_every_worker(down, PERIOD + TIMEOUT + 3), fleet.log_tail()
    assert fleet.http_get("/readyz") == (200, "ready\n")
    status, body = fleet.http_get("/readyz?database=app_rw")
    assert status == 503 and 'no replica of database "app_rw" is up for read-write' in body, body
    status, body = fleet.http_get("/readyz?database=app_rw&role=primary")
    assert status == 503 and 'no primary of database "app_rw" is up' in body, body
    assert fleet.http_get("/readyz?database=app_ro") == (200, "ready\n")
    assert fleet.http_get("/readyz?database=app_ro&role=standby")[0] == 200
    with connect(fleet, "app_ro") as conn:
        assert conn.execute("SELECT pg_is_in_recovery()").fetchone() == (True,)

    # Draining: 503 for the process and for every database.
    busy = fleet.connect(dbname="app_ro", autocommit=False)
    busy.execute("SELECT 1")
    fleet.kill(signal.SIGTERM)
    assert wait_until(lambda: fleet.http_get("/readyz") == (503, "draining\n"), 2)
    assert fleet.http_get("/readyz?database=app_ro") == (503, "draining\n")
    busy.rollback()
    busy.close()


def test_promoted_standby_takes_the_writes_never_both(replicated, pgfleet):
    """Last in the module: a promotion makes the fixture rebuild."""
    svc = replicated
    fleet = start(pgfleet, {"app_rw": entry("read-write")})
    assert fleet.wait_all_up(svc.addrs, "app_rw", 10), fleet.log_tail()
    old = svc.primary
    new = svc.standbys[0]
    old_addr, new_addr = svc.pods[old].addr, svc.pods[new].addr
    svc.psql(old, "DROP TABLE IF EXISTS split_brain; CREATE TABLE split_brain (tag text, n int)",
             user=fx.APP_USER, password=fx.APP_PASSWORD)
    svc.wait_replayed()
    reps = replicas_of(fleet, "app_rw")
    assert reps[old_addr]["write_primary"] == "yes" and reps[old_addr]["timeline"] >= 1
    old_tl = reps[old_addr]["timeline"]

    svc.promote(new)  # the old primary stays up: two primaries
    line = ('msg="several primaries (split brain)" db=app_rw primaries=2 '
            'write_primary=%s:%d timeline=%d ' % (new_addr, fx.PG_PORT, old_tl + 1))
    assert wait_until(lambda: line in fleet.log_text(), 3 * PERIOD + TIMEOUT + 3), \
        fleet.log_tail()
    # Every worker has seen the promotion once "replica role changed" is
    # logged by each: from then on no write may reach the old primary.
    changed = ('msg="replica role changed" db=app_rw addr=%s:%d role=primary from=standby'
               % (new_addr, fx.PG_PORT))
    assert fleet.wait_every_worker(changed, 3 * PERIOD + TIMEOUT + 3), fleet.log_tail()
    insert(fleet, "app_rw", "after", conns=10, per_conn=5)
    on_new = rows_on(svc, new, "after")
    on_old = rows_on(svc, old, "after")
    assert (on_new, on_old) == (50, 0), (on_new, on_old)

    reps = replicas_of(fleet, "app_rw")
    assert reps[new_addr]["write_primary"] == "yes", reps
    assert reps[new_addr]["timeline"] == old_tl + 1, reps
    assert reps[old_addr]["write_primary"] == "no" and reps[old_addr]["timeline"] == old_tl
    assert primaries_metric(fleet, "app_rw") == 2
    assert fleet.http_get("/readyz?database=app_rw&role=primary") == \
        (200, "ready: primary %s:%d is up\n" % (new_addr, fx.PG_PORT))

    # The old primary goes away: the split brain is over, said once.
    svc.stop(old, "fast")
    over = ('msg="split brain over" db=app_rw primaries=1 write_primary=%s:%d'
            % (new_addr, fx.PG_PORT))
    assert wait_until(lambda: over in fleet.log_text(), PERIOD + TIMEOUT + 3), fleet.log_tail()
    time.sleep(PERIOD)
    assert log_count(fleet, 'msg="split brain over"') == 1
