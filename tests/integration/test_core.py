"""The core proxy (issue 3): transaction pooling across every A record of the
headless service, with real clients (psql, pgbench, psycopg) against real
PostgreSQL pods, and what a client sees when something goes wrong."""

import itertools
import os
import socket
import struct
import subprocess
import threading
import time

import psycopg
import pytest

import fixture as fx

PG_BIN = fx.PG_BIN


def run_pgbench(fleet, *args, timeout=120, user=fx.APP_USER, password=fx.APP_PASSWORD):
    env = dict(os.environ, PGPASSWORD=password)
    for k in ("PGHOST", "PGPORT", "PGUSER", "PGDATABASE"):
        env.pop(k, None)
    argv = [os.path.join(PG_BIN, "pgbench"), "-n", "-h", fleet.host, "-p", str(fleet.port),
            "-U", user] + list(args) + [fx.APP_DB]
    p = subprocess.run(argv, env=env, capture_output=True, text=True, timeout=timeout)
    return p


def pgbench_ok(p):
    assert p.returncode == 0, p.stdout + p.stderr
    assert "number of failed transactions: 0" in p.stdout, p.stdout
    return p.stdout


def psql(fleet, sql, user=fx.APP_USER, password=fx.APP_PASSWORD, dbname=fx.APP_DB, check=True):
    env = dict(os.environ, PGPASSWORD=password, PGCONNECT_TIMEOUT="10")
    p = subprocess.run([os.path.join(PG_BIN, "psql"), "-X", "-A", "-t", "-v", "ON_ERROR_STOP=1",
                        "-h", fleet.host, "-p", str(fleet.port), "-U", user, "-d", dbname,
                        "-c", sql], env=env, capture_output=True, text=True, timeout=60)
    if check:
        assert p.returncode == 0, p.stderr
    return p


def connect(fleet, **kwargs):
    """A psycopg connection through pgfleet that never prepares statements on
    its own: these tests are about the core; psycopg's automatic named
    prepared statements are covered by the prepared-statement tests."""
    conn = fleet.connect(**kwargs)
    conn.prepare_threshold = None
    return conn


def server_addr(conn):
    return conn.execute("SELECT host(inet_server_addr())").fetchone()[0]


def pods_serving(conn, want, at_least=40, timeout=10.0):
    """The pods that served `at_least` one-at-a-time transactions on conn,
    and more until every pod in `want` has served one or timeout passes: a
    replica takes transactions only once its first health check (a SCRAM
    login, per worker) has passed, and 40 transactions can take less."""
    seen, n = set(), 0
    deadline = time.monotonic() + timeout
    while n < at_least or (seen != set(want) and time.monotonic() < deadline):
        seen.add(server_addr(conn))
        n += 1
    return seen


@pytest.fixture(scope="module")
def bench(service):
    service.pgbench_init(scale=1)
    return service


# ---- the happy path ---------------------------------------------------------


def test_psql_through_the_service_name(service, pgfleet):
    fleet = pgfleet()
    p = psql(fleet, "SELECT 40 + 2")
    assert p.stdout.strip() == "42"


def test_seed_case_load_spreads_over_every_pod(bench, pgfleet):
    """Three pods behind one name, 30 pgbench clients: each pod's own
    pg_stat_database.xact_commit grows by at least a fifth of the total."""
    fleet = pgfleet()
    before = bench.xact_commits()
    out = pgbench_ok(run_pgbench(fleet, "-S", "-c", "30", "-j", "2", "-T", "6"))
    time.sleep(1.5)  # backends report their counters about once a second
    after = bench.xact_commits()
    deltas = {a: after[a] - before[a] for a in after}
    total = sum(deltas.values())
    assert len(deltas) == 3
    assert total > 1000, (deltas, out)
    for addr, d in deltas.items():
        assert d >= total / 5, ("pod %s got %d of %d" % (addr, d, total), deltas)


@pytest.mark.parametrize("mode", ["simple", "extended"])
def test_pgbench_protocols_no_failures(bench, pgfleet, mode):
    fleet = pgfleet()
    pgbench_ok(run_pgbench(fleet, "-M", mode, "-c", "8", "-j", "2", "-T", "4"))


@pytest.mark.parametrize("policy", ["least_conn", "round_robin", "random"])
def test_load_balance_policies_use_every_pod(service, pgfleet, policy):
    """Even one client running one transaction at a time is spread."""
    fleet = pgfleet(settings={"load_balance": policy})
    with connect(fleet) as conn:
        seen = pods_serving(conn, service.addrs, at_least=60)
    assert seen == set(service.addrs), seen


def test_least_conn_sends_concurrent_transactions_to_idle_pods(service, pgfleet):
    fleet = pgfleet(settings={"load_balance": "least_conn"})
    assert fleet.wait_all_up(service.addrs), fleet.log_tail()
    conns = [connect(fleet, autocommit=False) for _ in range(3)]
    try:
        addrs = [server_addr(c) for c in conns]  # three open transactions
        assert sorted(addrs) == sorted(service.addrs), addrs
    finally:
        for c in conns:
            c.close()


def test_least_conn_equally_busy_pods_tie_to_the_one_freed_last(service, pgfleet):
    """Ties between busy pods go to the pod whose connection was freed last,
    so a steady load stays on the same warm backends (between idle pods the
    turn still rotates: the test above).  Six open transactions hold two
    per pod; one is ended on pod P, then one on pod Q, and the client freed
    last begins again: it must get Q back, not whichever the turn names."""
    fleet = pgfleet(settings={"load_balance": "least_conn"})
    conns = [connect(fleet, autocommit=True) for _ in range(6)]
    try:
        for c in conns:  # each client's worker has seen every pod up
            assert pods_serving(c, service.addrs, at_least=3) == set(service.addrs)
        for c in conns:
            c.autocommit = False
        on = [server_addr(c) for c in conns]  # six open transactions
        assert sorted(on) == sorted(service.addrs * 2), on
        for p, q in itertools.permutations(service.addrs, 2):
            cp, cq = on.index(p), on.index(q)
            conns[cp].commit()
            conns[cq].commit()  # q's connection is freed last; both pods have 1 busy
            on[cq] = server_addr(conns[cq])
            assert on[cq] == q, (p, q, on)
            on[cp] = server_addr(conns[cp])  # p, now the least busy
            assert on[cp] == p, (p, q, on)
    finally:
        for c in conns:
            c.close()


def test_transaction_stays_on_one_server(service, pgfleet):
    fleet = pgfleet()
    with connect(fleet, autocommit=False) as conn:
        with conn.transaction():
            first = conn.execute("SELECT pg_backend_pid(), host(inet_server_addr())").fetchone()
            for _ in range(20):
                again = conn.execute(
                    "SELECT pg_backend_pid(), host(inet_server_addr())").fetchone()
                assert again == first
            conn.execute("CREATE TEMP TABLE t_in_xact (x int) ON COMMIT DROP")
            conn.execute("INSERT INTO t_in_xact SELECT generate_series(1, 100)")
            assert conn.execute("SELECT count(*) FROM t_in_xact").fetchone()[0] == 100


def test_psycopg_extended_protocol_and_errors(service, pgfleet):
    fleet = pgfleet()
    with connect(fleet) as conn:
        row = conn.execute("SELECT %s::int + %s::int, %s::text", (1, 2, "x" * 5000)).fetchone()
        assert row == (3, "x" * 5000)
        with pytest.raises(psycopg.errors.DivisionByZero):
            conn.execute("SELECT 1 / %s::int", (0,))
        # the connection is still good after an error
        assert conn.execute("SELECT 1").fetchone() == (1,)
        # a failed transaction block rolls back and the session carries on
        conn.autocommit = False
        with pytest.raises(psycopg.errors.UndefinedTable):
            conn.execute("SELECT * FROM no_such_table")
        conn.rollback()
        assert conn.execute("SELECT 2").fetchone() == (2,)


def test_large_result_and_large_query_stream_through(service, pgfleet):
    fleet = pgfleet()
    with connect(fleet) as conn:
        rows = conn.execute("SELECT g, repeat('y', 1000) FROM generate_series(1, 20000) g")
        n = sum(1 for _ in rows)
        assert n == 20000
        big = "z" * (3 * 1024 * 1024)  # larger than any buffer: streamed
        assert conn.execute("SELECT length(%s)", (big,)).fetchone()[0] == len(big)


@pytest.mark.parametrize("round_robin", [0, 1])
def test_idle_server_connection_reuse_order(service, pgfleet, round_robin):
    """Most recently used first by default (a light load stays on a few warm
    backends, the rest age out); server_round_robin = 1 cycles through all."""
    fleet = pgfleet(settings={"default_pool_size": 3, "server_round_robin": round_robin},
                    databases={"app": "host=%s port=5432 dbname=app" % fx.pod_addr(0)})
    def on_worker0(**kw):  # workers = N: one worker's own idle list
        c = fleet.connect_on_worker(0, **kw)
        c.prepare_threshold = None
        return c
    conns = [on_worker0(autocommit=False) for _ in range(3)]
    try:
        pids = {c.execute("SELECT pg_backend_pid()").fetchone()[0] for c in conns}
        assert len(pids) == 3, pids  # three transactions open: three backends
        for c in conns:
            c.commit()
        with on_worker0(autocommit=True) as one:
            seen = [one.execute("SELECT pg_backend_pid()").fetchone()[0] for _ in range(6)]
    finally:
        for c in conns:
            c.close()
    assert set(seen) <= pids, (seen, pids)
    if round_robin:
        assert len(set(seen)) == 3, seen
        assert seen[:3] == seen[3:], seen  # in turn
    else:
        assert len(set(seen)) == 1, seen


def test_clients_share_parameter_sets(service, pgfleet):
    """Clients with the same settings hold one shared copy (SHOW MEM
    param_sets); a client's own SET makes its own, freed when it leaves
    (a server connection it last used may keep it until the next client)."""
    fleet = pgfleet(settings={"admin_users": fx.APP_USER})
    def param_sets():
        with fleet.connect(dbname="pgfleet", autocommit=True) as admin:
            rows = admin.execute("SHOW MEM").fetchall()
        return {r[0]: r[2] for r in rows}["param_sets"]
    # Server connections hold sets too (their defaults, what they were given).
    with connect(fleet, autocommit=True, application_name="same") as warm:
        warm.execute("SELECT 1")
    base = param_sets()
    conns = [connect(fleet, autocommit=True, application_name="same") for _ in range(30)]
    try:
        for c in conns:
            c.execute("SELECT 1")
        shared = param_sets()
        assert shared <= base + 2, (base, shared)  # not one per client
        conns[0].execute("SET application_name = 'mine'")
        assert conns[0].execute("SHOW application_name").fetchone()[0] == "mine"
        assert conns[1].execute("SHOW application_name").fetchone()[0] == "same"
        assert param_sets() == shared + 1
    finally:
        for c in conns:
            c.close()
    # The clients' own sets go with them; a server connection keeps the set
    # it last had (at most the one SET above is still held that way).
    assert fx.wait_until(lambda: param_sets() <= shared + 1, 5), (shared, param_sets())
    distinct = [connect(fleet, autocommit=True, application_name="own-%d" % i)
                for i in range(10)]
    try:
        assert param_sets() >= shared + 9  # (the SET above may be gone)
    finally:
        for c in distinct:
            c.close()
    assert fx.wait_until(lambda: param_sets() <= shared + 1, 5), (shared, param_sets())


def test_client_settings_never_leak_to_other_clients(service, pgfleet):
    """One server connection shared by two clients: each sees its own
    TimeZone, DateStyle and application_name."""
    fleet = pgfleet(settings={"default_pool_size": 1},
                    databases={"app": "host=%s port=5432 dbname=app" % fx.pod_addr(0)})
    a = connect(fleet, application_name="client-a")
    # Both on one worker (workers = N): pools are per worker.
    b = fleet.connect_on_worker(fleet.worker_of(a), application_name="client-b")
    b.prepare_threshold = None
    try:
        pid_a = a.execute("SELECT pg_backend_pid()").fetchone()[0]
        a.execute("SET TimeZone = 'Asia/Tokyo'")
        a.execute("SET DateStyle = 'German, DMY'")
        pid_b = b.execute("SELECT pg_backend_pid()").fetchone()[0]
        assert pid_a == pid_b  # the same server connection
        assert b.execute("SHOW TimeZone").fetchone()[0] != "Asia/Tokyo"
        assert b.execute("SHOW DateStyle").fetchone()[0] == "ISO, MDY"
        assert b.execute("SHOW application_name").fetchone()[0] == "client-b"
        assert a.execute("SHOW TimeZone").fetchone()[0] == "Asia/Tokyo"
        assert a.execute("SHOW DateStyle").fetchone()[0] == "German, DMY"
        assert a.execute("SHOW application_name").fetchone()[0] == "client-a"
    finally:
        a.close()
        b.close()


def test_settings_follow_each_client_as_the_server_changes_hands(service, pgfleet):
    """One server connection, clients with two sets of settings taking
    turns: a set the server was once found to satisfy is checked again after
    another client changed the server in between."""
    fleet = pgfleet(settings={"default_pool_size": 1},
                    databases={"app": "host=%s port=5432 dbname=app" % fx.pod_addr(0)})
    a1 = connect(fleet, autocommit=True, application_name="team-a")
    worker = fleet.worker_of(a1)
    a2 = fleet.connect_on_worker(worker, autocommit=True, application_name="team-a")
    b = fleet.connect_on_worker(worker, autocommit=True, application_name="team-b")
    try:
        for conn, tz in ((a1, "UTC"), (a2, "UTC"), (b, "Asia/Tokyo")):
            conn.prepare_threshold = None
            conn.execute("SET TimeZone = '%s'" % tz)
        pids = set()
        for _ in range(5):
            for conn, app, tz in ((a1, "team-a", "UTC"), (b, "team-b", "Asia/Tokyo"),
                                  (a2, "team-a", "UTC"), (a2, "team-a", "UTC")):
                row = conn.execute("SELECT pg_backend_pid(), current_setting('application_name'),"
                                   " current_setting('TimeZone')").fetchone()
                pids.add(row[0])
                assert row[1:] == (app, tz), (row, app, tz)
        assert len(pids) == 1  # every turn on the one server connection
    finally:
        for c in (a1, a2, b):
            c.close()


def test_startup_parameters_are_applied(service, pgfleet):
    fleet = pgfleet()
    with connect(fleet, application_name="startup-app") as conn:
        for _ in range(6):
            assert conn.execute("SHOW application_name").fetchone()[0] == "startup-app"
    env = dict(os.environ, PGPASSWORD=fx.APP_PASSWORD, PGTZ="America/New_York",
               PGDATESTYLE="SQL, DMY")
    p = subprocess.run([os.path.join(PG_BIN, "psql"), "-X", "-A", "-t", "-h", fleet.host,
                        "-p", str(fleet.port), "-U", fx.APP_USER, "-d", fx.APP_DB,
                        "-c", "SHOW TimeZone", "-c", "SHOW DateStyle"],
                       env=env, capture_output=True, text=True, timeout=30)
    assert p.returncode == 0, p.stderr
    assert p.stdout.split() == ["America/New_York", "SQL,", "DMY"], p.stdout


def test_session_mode_keeps_the_server(service, pgfleet):
    fleet = pgfleet(settings={"pool_mode": "session"})
    with connect(fleet) as conn:
        conn.execute("CREATE TEMP TABLE session_state (x int)")
        pid = conn.execute("SELECT pg_backend_pid()").fetchone()[0]
        for _ in range(10):
            conn.execute("INSERT INTO session_state VALUES (1)")
            assert conn.execute("SELECT pg_backend_pid()").fetchone()[0] == pid
        assert conn.execute("SELECT count(*) FROM session_state").fetchone()[0] == 10


def test_session_mode_reset_query_runs(service, pgfleet):
    fleet = pgfleet(settings={"pool_mode": "session", "default_pool_size": 1},
                    databases={"app": "host=%s port=5432 dbname=app" % fx.pod_addr(0)})
    with connect(fleet) as conn:
        conn.execute("CREATE TEMP TABLE gone_after_reset (x int)")
        conn.execute("SET work_mem = '7MB'")
        pid = conn.execute("SELECT pg_backend_pid()").fetchone()[0]
        worker = fleet.worker_of(conn)  # pools are per worker (workers = N)
    with fleet.connect_on_worker(worker) as conn:
        conn.prepare_threshold = None
        assert conn.execute("SELECT pg_backend_pid()").fetchone()[0] == pid
        assert conn.execute("SHOW work_mem").fetchone()[0] != "7MB"
        n = conn.execute("SELECT count(*) FROM pg_class WHERE relname = 'gone_after_reset'")
        assert n.fetchone()[0] == 0


def test_statement_mode_refuses_transaction_blocks(service, pgfleet):
    fleet = pgfleet(settings={"pool_mode": "statement"})
    with connect(fleet) as conn:
        assert conn.execute("SELECT 1").fetchone() == (1,)
    conn = connect(fleet)
    with pytest.raises(psycopg.OperationalError) as e:
        conn.execute("BEGIN")
        conn.execute("SELECT 1")
    assert "statement pooling mode" in str(e.value)
    conn.close()
    # the pooler still serves
    with connect(fleet) as conn:
        assert conn.execute("SELECT 1").fetchone() == (1,)


def test_host_list_and_literal_addresses(service, pgfleet):
    fleet = pgfleet(databases={"app": "host=%s,%s port=5432 dbname=app"
                               % (fx.pod_addr(1), fx.pod_addr(2))})
    with connect(fleet) as conn:
        seen = pods_serving(conn, {fx.pod_addr(1), fx.pod_addr(2)})
    assert seen == {fx.pod_addr(1), fx.pod_addr(2)}


def test_wildcard_database(service, pgfleet):
    fleet = pgfleet(databases={"*": "host=%s port=5432" % fx.SVC_NAME})
    with connect(fleet, dbname="app") as conn:
        assert conn.execute("SELECT current_database()").fetchone()[0] == "app"
    with connect(fleet, dbname="postgres") as conn:
        assert conn.execute("SELECT current_database()").fetchone()[0] == "postgres"


def test_wildcard_database_missing_on_the_servers(service, pgfleet):
    """A name the servers do not have: the server's own 3D000, at once, not
    a wait for query_wait_timeout."""
    fleet = pgfleet(settings={"auth_type": "plain", "query_wait_timeout": 60},
                    databases={"*": "host=%s port=5432" % fx.SVC_NAME})
    t0 = time.monotonic()
    assert login_sqlstate(fleet, fx.APP_USER, fx.APP_PASSWORD, "nosuchdb") == "3D000"
    assert time.monotonic() - t0 < 10
    assert login_sqlstate(fleet, fx.APP_USER, fx.APP_PASSWORD, fx.APP_DB) == ""


def test_configured_from_environment_only(service, pgfleet):
    """The ConfigMap/Secret way: DB_HOST, DB_USER, DB_PASSWORD, no file."""
    fleet = pgfleet(config_file=False, users={},
                    env={"DB_HOST": fx.SVC_NAME, "DB_USER": fx.APP_USER,
                         "DB_PASSWORD": fx.APP_PASSWORD})
    seen = set()
    with connect(fleet) as conn:
        # The wildcard entry makes the app pool at this first login, in
        # this connection's worker only; its pods take transactions once
        # their first health checks pass.
        assert fleet.wait_all_up(service.addrs, fx.APP_DB, workers=1), fleet.log_tail()
        for _ in range(30):
            seen.add(server_addr(conn))
    assert seen == set(service.addrs)


# ---- authentication ----------------------------------------------------------


@pytest.mark.parametrize("auth_type", ["scram-sha-256", "md5", "plain", "trust"])
def test_auth_types(service, pgfleet, auth_type):
    fleet = pgfleet(settings={"auth_type": auth_type})
    with connect(fleet) as conn:
        assert conn.execute("SELECT current_user").fetchone()[0] == fx.APP_USER
    if auth_type != "trust":
        with pytest.raises(psycopg.OperationalError) as e:
            connect(fleet, password="wrong")
        assert "password authentication failed" in str(e.value)


def login_sqlstate(fleet, user, password, dbname):
    """Logs in over the raw protocol (cleartext password) and returns the
    SQLSTATE of the ErrorResponse, or "" when the login succeeded."""
    s = socket.create_connection((fleet.host, fleet.port), timeout=10)
    params = b"user\x00%s\x00database\x00%s\x00\x00" % (user.encode(), dbname.encode())
    s.sendall(struct.pack("!II", 8 + len(params), 196608) + params)
    buf = b""
    while True:
        while len(buf) < 5 or len(buf) < 1 + struct.unpack("!I", buf[1:5])[0]:
            chunk = s.recv(65536)
            if not chunk:
                return "closed"
            buf += chunk
        n = 1 + struct.unpack("!I", buf[1:5])[0]
        msg, buf = buf[:n], buf[n:]
        if msg[0:1] == b"R" and struct.unpack("!I", msg[5:9])[0] == 3:
            pw = password.encode() + b"\x00"
            s.sendall(b"p" + struct.pack("!I", 4 + len(pw)) + pw)
        elif msg[0:1] == b"E":
            fields = dict((f[0:1], f[1:]) for f in msg[5:].split(b"\x00") if f)
            return fields[b"C"].decode()
        elif msg[0:1] == b"Z":
            return ""


def test_wrong_password_unknown_user_unknown_database(service, pgfleet):
    fleet = pgfleet(settings={"auth_type": "plain"})
    assert login_sqlstate(fleet, fx.APP_USER, fx.APP_PASSWORD, fx.APP_DB) == ""
    assert login_sqlstate(fleet, fx.APP_USER, "nope", fx.APP_DB) == "28P01"
    assert login_sqlstate(fleet, "nobody", "x", fx.APP_DB) == "28P01"
    assert login_sqlstate(fleet, fx.APP_USER, fx.APP_PASSWORD, "nosuchdb") == "3D000"
    # and what a user reads, through SCRAM
    fleet = pgfleet()
    p = psql(fleet, "SELECT 1", dbname="nosuchdb", check=False)
    assert 'database "nosuchdb" does not exist' in p.stderr
    p = psql(fleet, "SELECT 1", password="nope", check=False)
    assert 'password authentication failed for user "app"' in p.stderr


def test_md5_and_scram_secrets_in_auth_file(service, pgfleet):
    import hashlib
    md5 = "md5" + hashlib.md5((fx.APP_PASSWORD + fx.APP_USER).encode()).hexdigest()
    # md5 hash in auth_file: the client is asked for md5, the server login uses the hash
    # the pods want SCRAM, which an md5 hash cannot answer: the database
    # entry carries the password pgfleet logs in to them with
    fleet = pgfleet(users={fx.APP_USER: md5}, settings={"auth_type": "md5"},
                    databases={"app": "host=%s port=5432 dbname=app password=%s"
                               % (fx.SVC_NAME, fx.APP_PASSWORD)})
    with connect(fleet) as conn:
        assert conn.execute("SELECT 1").fetchone() == (1,)
    with pytest.raises(psycopg.OperationalError):
        connect(fleet, password="wrong")


# ---- failures: one bad client or replica never hurts the others ---------------


def raw_login(fleet):
    """A logged-in raw socket (trust auth) for sending malformed packets."""
    s = socket.create_connection((fleet.host, fleet.port), timeout=10)
    params = b"user\x00app\x00database\x00app\x00\x00"
    s.sendall(struct.pack("!II", 8 + len(params), 196608) + params)
    buf = b""
    while not buf.endswith(b"Z\x00\x00\x00\x05I"):
        chunk = s.recv(65536)
        assert chunk, buf
        buf += chunk
    return s


def read_error(s):
    buf = b""
    s.settimeout(10)
    while True:
        try:
            chunk = s.recv(65536)
        except ConnectionResetError:
            break
        if not chunk:
            break
        buf += chunk
    return buf


def test_malformed_and_oversized_packets_close_only_that_client(service, pgfleet):
    fleet = pgfleet(settings={"auth_type": "trust", "max_packet_size": 65536})
    bystander = connect(fleet)
    bystander.execute("SELECT 1")

    s = raw_login(fleet)  # a length below 4 is impossible
    s.sendall(b"Q\x00\x00\x00\x02")
    err = read_error(s)
    assert b"C08P01" in err and b"invalid message length" in err

    s = raw_login(fleet)  # larger than max_packet_size
    s.sendall(b"Q" + struct.pack("!I", 10_000_000))
    err = read_error(s)
    assert b"C08P01" in err

    s = raw_login(fleet)  # truncated: half a message, then gone
    s.sendall(b"Q\x00\x00\x01\x00SELECT")
    s.close()

    s = socket.create_connection((fleet.host, fleet.port), timeout=10)
    s.sendall(struct.pack("!II", 9999999, 196608))  # absurd startup length
    assert b"C08P01" in read_error(s)

    assert bystander.execute("SELECT 2").fetchone() == (2,)
    with connect(fleet) as conn:
        assert conn.execute("SELECT 3").fetchone() == (3,)
    bystander.close()
    assert "invalid message length" in fleet.log_text()


def test_client_disconnecting_mid_query(service, pgfleet):
    fleet = pgfleet()
    conn = connect(fleet)
    t = threading.Thread(target=lambda: _swallow(conn.execute, "SELECT pg_sleep(3)"))
    t.start()
    time.sleep(0.5)
    os.close(conn.pgconn.socket)  # vanish without a Terminate
    t.join(10)
    with connect(fleet) as other:
        for _ in range(10):
            assert other.execute("SELECT 1").fetchone() == (1,)


def _swallow(fn, *args):
    try:
        fn(*args)
    except Exception:
        pass


def test_replica_killed_mid_transaction(service, pgfleet):
    """The client whose transaction was on the killed pod gets an error with
    SQLSTATE 08006 (or the server's own); the others carry on."""
    fleet = pgfleet(databases={"app": "host=%s,%s port=5432 dbname=app" % (fx.pod_addr(0), fx.pod_addr(1))})
    victim = connect(fleet, autocommit=False)
    victim.execute("SELECT 1")
    addr = server_addr(victim)
    index = service.addrs.index(addr)
    errors = []

    def run():
        try:
            victim.execute("SELECT pg_sleep(10)")
        except psycopg.Error as e:
            errors.append(e)

    t = threading.Thread(target=run)
    t.start()
    time.sleep(0.5)
    service.stop(index, mode="immediate")
    t.join(15)
    assert not t.is_alive()
    assert errors, "the client on the killed pod got no error"
    e = errors[0]
    assert isinstance(e, psycopg.OperationalError)
    sqlstate = getattr(e.diag, "sqlstate", None)
    assert sqlstate in (None, "08006", "57P01", "57P02") or "lost" in str(e), (sqlstate, e)
    victim.close()
    # new transactions go to the surviving pod, none fails
    with connect(fleet) as conn:
        for _ in range(20):
            assert server_addr(conn) != addr
    out = pgbench_ok(run_pgbench(fleet, "-S", "-c", "4", "-T", "2"))
    assert "tps" in out


def test_refused_replica_is_skipped(bench, pgfleet):
    """A pod that refuses connections: logins and transactions go to the
    others at once, nothing fails."""
    service = bench
    service.stop(2, mode="fast")
    fleet = pgfleet()
    out = pgbench_ok(run_pgbench(fleet, "-S", "-c", "6", "-j", "2", "-T", "3"))
    assert "tps" in out
    assert "replica down" in fleet.log_text()


def test_query_wait_timeout(service, pgfleet):
    fleet = pgfleet(settings={"default_pool_size": 1, "query_wait_timeout": 1},
                    databases={"app": "host=%s port=5432 dbname=app" % fx.pod_addr(0)})
    holder = connect(fleet, autocommit=False)
    holder.execute("SELECT 1")  # holds the only server connection
    waiter = connect(fleet)
    started = time.monotonic()
    with pytest.raises(psycopg.OperationalError) as e:
        waiter.execute("SELECT 1")
    assert "query_wait_timeout" in str(e.value)
    assert time.monotonic() - started < 10
    holder.rollback()
    holder.close()
    with connect(fleet) as conn:
        assert conn.execute("SELECT 1").fetchone() == (1,)


def test_more_clients_than_server_connections(bench, pgfleet):
    fleet = pgfleet(settings={"default_pool_size": 2})
    pgbench_ok(run_pgbench(fleet, "-c", "40", "-j", "2", "-T", "3", "-S"))


def test_max_client_conn(service, pgfleet):
    fleet = pgfleet(settings={"max_client_conn": 2})
    a, b = connect(fleet), connect(fleet)
    with pytest.raises(psycopg.OperationalError) as e:
        connect(fleet)
    assert "max_client_conn" in str(e.value)
    a.close()
    time.sleep(0.2)
    with connect(fleet) as c:
        assert c.execute("SELECT 1").fetchone() == (1,)
    b.close()


def test_sigterm_exits_zero(service, pgfleet):
    fleet = pgfleet()
    with connect(fleet) as conn:
        conn.execute("SELECT 1")
    assert fleet.stop() == 0


# ---- command line ---------------------------------------------------------------


def test_check_flag(tmp_path):
    binary = os.environ.get("PGFLEET_BIN") or os.path.join(fx.REPO, "build", "pgfleet")
    good = tmp_path / "good.ini"
    good.write_text("[databases]\napp = host=%s\n" % fx.pod_addr(0) + "[pgfleet]\nauth_type = trust\n")
    p = subprocess.run([binary, "--check", str(good)], capture_output=True, text=True)
    assert p.returncode == 0, p.stderr
    bad = tmp_path / "bad.ini"
    bad.write_text("[databases]\napp = host=%s\n" % fx.pod_addr(0) + "[pgfleet]\nauth_type = trust\n"
                   "pool_mode = sesion\n")
    p = subprocess.run([binary, "-t", str(bad)], capture_output=True, text=True)
    assert p.returncode == 1
    assert "%s:5" % bad in p.stderr and "pool_mode" in p.stderr, p.stderr
    p = subprocess.run([binary, "--check", str(tmp_path / "missing.ini")],
                       capture_output=True, text=True)
    assert p.returncode == 1 and "missing.ini" in p.stderr
    assert len(p.stderr.strip().splitlines()) == 1
    p = subprocess.run([binary, "-V"], capture_output=True, text=True)
    assert p.returncode == 0 and p.stdout.startswith("pgfleet ")


def test_unix_socket_host(service, pgfleet):
    """host= may be a socket directory, as with libpq."""
    sockdir = service.pods[1].sockdir
    fleet = pgfleet(databases={"app": "host=%s port=5432 dbname=app" % sockdir})
    with connect(fleet) as conn:
        # over a Unix socket the server has no inet address
        assert conn.execute("SELECT inet_server_addr()").fetchone()[0] is None
        assert conn.execute("SELECT 5").fetchone() == (5,)


def test_shipped_example_config_is_valid(tmp_path):
    binary = os.environ.get("PGFLEET_BIN") or os.path.join(fx.REPO, "build", "pgfleet")
    users = tmp_path / "userlist.txt"
    users.write_text('"app" "app-secret"\n')
    env = dict(os.environ, PGFLEET_AUTH_FILE=str(users))
    p = subprocess.run([binary, "--check", os.path.join(fx.REPO, "conf", "pgfleet.ini")],
                       capture_output=True, text=True, env=env)
    assert p.returncode == 0, p.stderr
