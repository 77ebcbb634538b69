"""Cancel requests and timeouts (issue 4).

A CancelRequest carrying a client's BackendKeyData (pgfleet's own, one per
client) must reach the one backend, on the one replica, that runs that
client's query, and nothing else; the timeouts each close the client with a
clear ErrorResponse.  Real clients (psycopg, psql) against real pods; raw
sockets where a test needs the key itself or the exact error."""

import os
import re
import signal
import socket
import struct
import subprocess
import threading
import time

import psycopg
import pytest

import fixture as fx

PG_BIN = fx.PG_BIN
SLEEP_SQL = "SELECT pg_sleep(20)"


def connect(fleet, **kwargs):
    """psycopg through pgfleet, without automatic named prepared statements
    (they are the prepared-statement tests' business)."""
    conn = fleet.connect(**kwargs)
    conn.prepare_threshold = None
    return conn


def single_pod(i):
    return {"app": "host=%s port=%d dbname=app" % (fx.pod_addr(i), fx.PG_PORT)}


def activity(service, i, where):
    """pids on pod i of the app user's client backends matching `where`."""
    out = service.psql(i, "SELECT pid FROM pg_stat_activity WHERE usename = 'app' "
                          "AND backend_type = 'client backend' AND (%s)" % where,
                       dbname="postgres")
    return [int(x) for x in out.split()]


def find_sleeper(service, timeout=10.0):
    """(pod index, backend pid) of the one pg_sleep(20) running anywhere."""
    deadline = time.monotonic() + timeout
    while True:
        found = [(i, pid) for i in range(len(service.pods))
                 for pid in activity(service, i, "state = 'active' AND query LIKE '%s%%'" % SLEEP_SQL)]
        if found:
            assert len(found) == 1, found
            return found[0]
        assert time.monotonic() < deadline, "pg_sleep never showed up on any pod"
        time.sleep(0.1)


def no_sleeper_anywhere(service):
    return all(not activity(service, i, "state = 'active' AND query LIKE 'SELECT pg_sleep%'")
               for i in range(len(service.pods)))


def run_in_thread(fn, *args):
    """Runs fn(*args) in a thread; returns (thread, result dict with
    'error', 'value', 'elapsed')."""
    res = {}

    def body():
        t0 = time.monotonic()
        try:
            res["value"] = fn(*args)
        except Exception as e:  # noqa: BLE001 - the test inspects it
            res["error"] = e
        res["elapsed"] = time.monotonic() - t0

    t = threading.Thread(target=body, daemon=True)
    t.start()
    return t, res


# ---- raw protocol ------------------------------------------------------------


class RawClient:
    """A client on a raw socket (cleartext password), to see BackendKeyData
    and the exact ErrorResponse pgfleet sends."""

    def __init__(self, fleet, user=fx.APP_USER, password=fx.APP_PASSWORD, dbname=fx.APP_DB):
        self.fleet = fleet
        self.sock = socket.create_connection((fleet.host, fleet.port), timeout=30)
        self.buf = b""
        self.pid = self.key = None
        params = b"user\x00%s\x00database\x00%s\x00\x00" % (user.encode(), dbname.encode())
        self.sock.sendall(struct.pack("!II", 8 + len(params), 196608) + params)
        while True:
            t, body = self.read_msg()
            if t == b"R" and struct.unpack("!I", body[:4])[0] == 3:
                pw = password.encode() + b"\x00"
                self.sock.sendall(b"p" + struct.pack("!I", 4 + len(pw)) + pw)
            elif t == b"K":
                self.pid, self.key = struct.unpack("!II", body[:8])
            elif t == b"E":
                raise AssertionError("login failed: %r" % body)
            elif t == b"Z":
                break

    def read_msg(self):
        """(type, body); (None, None) at EOF."""
        while len(self.buf) < 5 or len(self.buf) < 1 + struct.unpack("!I", self.buf[1:5])[0]:
            try:
                chunk = self.sock.recv(65536)
            except ConnectionResetError:
                chunk = b""
            if not chunk:
                return None, None
            self.buf += chunk
        n = 1 + struct.unpack("!I", self.buf[1:5])[0]
        msg, self.buf = self.buf[:n], self.buf[n:]
        return msg[0:1], msg[5:]

    def query(self, sql):
        q = sql.encode() + b"\x00"
        self.sock.sendall(b"Q" + struct.pack("!I", 4 + len(q)) + q)

    def result(self):
        """Reads up to ReadyForQuery: (error fields or None, status byte);
        status None when the connection closed first."""
        err = None
        while True:
            t, body = self.read_msg()
            if t is None:
                return err, None
            if t == b"E":
                err = error_fields(body)
            if t == b"Z":
                return err, body[:1]

    def close(self):
        self.sock.close()


def error_fields(body):
    return {f[0:1].decode(): f[1:].decode() for f in body.split(b"\x00") if f}


def send_cancel(fleet, pid, key, ssl_request_first=False):
    """A CancelRequest on a new connection, the way libpq's PQcancel sends
    it; returns what pgfleet answered (nothing, since the protocol says so)."""
    s = socket.create_connection((fleet.host, fleet.port), timeout=10)
    try:
        if ssl_request_first:
            s.sendall(struct.pack("!II", 8, 80877103))
            assert s.recv(1) in (b"N",)
        s.sendall(struct.pack("!IIII", 16, 80877102, pid, key))
        got = b""
        while True:
            chunk = s.recv(1024)
            if not chunk:
                return got
            got += chunk
    finally:
        s.close()


# ---- cancel requests -----------------------------------------------------------


def test_psycopg_cancel_reaches_the_right_backend_while_others_run(service, pgfleet):
    """conn.cancel() of pg_sleep(20) returns QueryCanceled within seconds;
    clients on the other replicas keep running meanwhile; the cancel went to
    the pod and backend running the sleep, which is still alive after it."""
    fleet = pgfleet()
    victim = connect(fleet)
    victim.execute("SELECT 1")

    stop = threading.Event()
    done = {}  # pod address -> queries completed during the cancel
    errors = []

    def bystander():
        try:
            with connect(fleet) as conn:
                while not stop.is_set():
                    addr = conn.execute("SELECT host(inet_server_addr())").fetchone()[0]
                    done[addr] = done.get(addr, 0) + 1
        except Exception as e:  # noqa: BLE001
            errors.append(e)

    t, res = run_in_thread(victim.execute, SLEEP_SQL)
    pod, pid = find_sleeper(service)
    others = [threading.Thread(target=bystander, daemon=True) for _ in range(4)]
    for o in others:
        o.start()
    time.sleep(0.5)
    before = dict(done)
    started = time.monotonic()
    victim.cancel()
    t.join(10)
    took = time.monotonic() - started
    time.sleep(0.3)
    stop.set()
    for o in others:
        o.join(10)

    assert not t.is_alive()
    assert isinstance(res.get("error"), psycopg.errors.QueryCanceled), res
    assert res["error"].diag.sqlstate == "57014"
    assert took < 3, took
    assert not errors, errors  # nobody else's query was canceled
    during = {a: n - before.get(a, 0) for a, n in done.items()}
    assert sum(during.values()) > 0, during
    assert any(n > 0 for a, n in during.items() if a != fx.pod_addr(pod)), during
    # the sleep is gone everywhere, and its backend was canceled, not killed
    assert no_sleeper_anywhere(service)
    assert pid in activity(service, pod, "true")
    # the client goes on
    assert victim.execute("SELECT 7").fetchone() == (7,)
    victim.close()
    # logged once the server has closed the cancel connection
    fleet.wait_log(r'msg="cancel sent" .*replica=%s:5432' % re.escape(fx.pod_addr(pod)),
                   timeout=5)


def test_a_canceled_backend_goes_to_the_next_client_only_after_the_cancel(service, pgfleet):
    """PostgreSQL may signal a canceled backend twice (the backend, then its
    process group), the second time after the query ended.  With one server
    connection and clients queued for it, the backend goes straight to the
    next client when the canceled query ends; unless pgfleet holds it until
    the server has closed the cancel connection, that client's query can be
    the one the late signal cancels.  Many rounds give the race room; it
    needs the canceling process to be preempted between its two signals,
    so on an idle machine this passes without the hold too (a loaded
    workers = 2 run of the test above caught it)."""
    fleet = pgfleet(settings={"default_pool_size": 1},
                    databases={fx.APP_DB: "host=%s port=%d dbname=%s"
                               % (fx.pod_addr(0), fx.PG_PORT, fx.APP_DB)})
    victim = connect(fleet)
    queued = [connect(fleet) for _ in range(3)]
    errors = []

    def one_query(conn):
        try:
            assert conn.execute("SELECT 1").fetchone() == (1,)
        except Exception as e:  # noqa: BLE001
            errors.append(e)

    for _ in range(15):
        t, res = run_in_thread(victim.execute, SLEEP_SQL)
        find_sleeper(service)
        waiting = [threading.Thread(target=one_query, args=(c,)) for c in queued]
        for w in waiting:
            w.start()
        time.sleep(0.05)  # their queries wait for the one server connection
        victim.cancel()
        t.join(10)
        for w in waiting:
            w.join(10)
        assert isinstance(res.get("error"), psycopg.errors.QueryCanceled), res
        assert not errors, errors  # the cancel reached no one else
    for c in queued + [victim]:
        c.close()


def test_psql_cancel_inside_a_transaction(service, pgfleet):
    """psql's Ctrl-C (libpq PQcancel) of a query in a transaction block."""
    fleet = pgfleet()
    env = dict(os.environ, PGPASSWORD=fx.APP_PASSWORD, PGCONNECT_TIMEOUT="10")
    for k in ("PGHOST", "PGPORT", "PGUSER", "PGDATABASE"):
        env.pop(k, None)
    p = subprocess.Popen([os.path.join(PG_BIN, "psql"), "-X", "-A", "-t", "-h", fleet.host,
                          "-p", str(fleet.port), "-U", fx.APP_USER, "-d", fx.APP_DB],
                         stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                         env=env, text=True)
    p.stdin.write("BEGIN;\nSELECT txid_current() > 0;\n%s;\nSELECT 'after';\n" % SLEEP_SQL)
    p.stdin.flush()
    pod, pid = find_sleeper(service)
    # the transaction holds its server: the sleeper is in a transaction
    assert activity(service, pod, "pid = %d AND backend_xid IS NOT NULL" % pid) == [pid]
    started = time.monotonic()
    p.send_signal(signal.SIGINT)
    try:
        out, err = p.communicate(timeout=10)
    finally:
        if p.poll() is None:
            p.kill()
    assert time.monotonic() - started < 5
    assert "canceling statement due to user request" in err, (out, err)
    assert no_sleeper_anywhere(service)
    with connect(fleet) as conn:
        assert conn.execute("SELECT 1").fetchone() == (1,)


def test_psycopg_cancel_in_transaction_keeps_the_transaction(service, pgfleet):
    """After the cancel the client's transaction is still on the same
    backend (aborted, as PostgreSQL leaves it) and rolls back normally."""
    fleet = pgfleet()
    conn = connect(fleet, autocommit=False)
    pid = conn.execute("SELECT pg_backend_pid()").fetchone()[0]
    t, res = run_in_thread(conn.execute, SLEEP_SQL)
    pod, sleeper = find_sleeper(service)
    assert sleeper == pid
    conn.cancel()
    t.join(10)
    assert isinstance(res.get("error"), psycopg.errors.QueryCanceled), res
    with pytest.raises(psycopg.errors.InFailedSqlTransaction):
        conn.execute("SELECT 1")
    conn.rollback()
    assert conn.execute("SELECT 2").fetchone() == (2,)
    # Ended before the close: a client that leaves inside a transaction
    # takes its server connection with it, and SELECT 2 may have gone to
    # the very backend asserted on below.
    conn.rollback()
    conn.close()
    assert pid in activity(service, pod, "true")  # canceled, not killed


def test_cancel_with_a_wrong_key_does_nothing(service, pgfleet):
    fleet = pgfleet(settings={"auth_type": "plain"})
    c = RawClient(fleet)
    c.query("SELECT pg_sleep(2)")
    time.sleep(0.5)
    assert send_cancel(fleet, c.pid, c.key ^ 1) == b""
    assert send_cancel(fleet, c.pid ^ 1, c.key) == b""
    assert send_cancel(fleet, 12345, 67890) == b""
    err, status = c.result()
    assert err is None and status == b"I", err
    # the same client's right key does cancel: the harness is sound
    c.query(SLEEP_SQL)
    time.sleep(0.5)
    started = time.monotonic()
    send_cancel(fleet, c.pid, c.key)
    err, status = c.result()
    assert err and err["C"] == "57014" and status == b"I", err
    assert time.monotonic() - started < 3
    c.close()
    assert "no client has this key" in fleet.log_text()


def test_cancel_after_ssl_request(service, pgfleet):
    """A CancelRequest may follow an SSLRequest answered 'N' (libpq with
    sslmode=prefer does this)."""
    fleet = pgfleet(settings={"auth_type": "plain"})
    c = RawClient(fleet)
    c.query(SLEEP_SQL)
    time.sleep(0.5)
    send_cancel(fleet, c.pid, c.key, ssl_request_first=True)
    err, status = c.result()
    assert err and err["C"] == "57014", err
    c.close()


def test_cancel_for_an_idle_client_does_nothing(service, pgfleet):
    """A's cancel while A has nothing running is dropped, even though the
    server connection A used last now runs B's query."""
    fleet = pgfleet(settings={"auth_type": "plain", "default_pool_size": 1},
                    databases=single_pod(0))
    a = RawClient(fleet)
    a.query("SELECT pg_backend_pid()")
    assert a.result() == (None, b"I")
    b = RawClient(fleet)
    b.query("SELECT pg_sleep(2)")
    time.sleep(0.5)
    assert activity(service, 0, "state = 'active' AND query = 'SELECT pg_sleep(2)'")
    send_cancel(fleet, a.pid, a.key)
    err, status = b.result()
    assert err is None and status == b"I", err  # B's query was left alone
    a.query("SELECT 1")
    assert a.result() == (None, b"I")
    a.close()
    b.close()
    assert "nothing running" in fleet.log_text()


def test_cancel_of_a_closed_client_is_dropped(service, pgfleet):
    """A key dies with its client (the table forgets it on close)."""
    fleet = pgfleet(settings={"auth_type": "plain"})
    a = RawClient(fleet)
    pid, key = a.pid, a.key
    a.close()
    time.sleep(0.3)
    b = RawClient(fleet)
    b.query("SELECT pg_sleep(1)")
    time.sleep(0.3)
    send_cancel(fleet, pid, key)
    assert b.result() == (None, b"I")
    b.close()


# ---- timeouts ------------------------------------------------------------------


def test_query_timeout_cancels_and_the_pooler_keeps_serving(service, pgfleet):
    fleet = pgfleet(settings={"query_timeout": 1})
    conn = connect(fleet)
    started = time.monotonic()
    with pytest.raises(psycopg.errors.QueryCanceled) as e:
        conn.execute("SELECT pg_sleep(5)")
    assert e.value.diag.sqlstate == "57014"
    assert time.monotonic() - started < 4
    # the same client, and others, go on; short queries are not touched
    for _ in range(5):
        assert conn.execute("SELECT pg_sleep(0.1), 1").fetchone()[1] == 1
    with connect(fleet) as other:
        assert other.execute("SELECT 2").fetchone() == (2,)
    conn.close()
    assert no_sleeper_anywhere(service)
    assert "reason=query_timeout" in fleet.log_text()


def test_query_timeout_closes_the_server_when_the_cancel_does_not_help(service, pgfleet):
    """A pod hung mid-query never answers the cancel: a grace second later
    the client gets FATAL 57014 query_timeout and the others are served."""
    fleet = pgfleet(settings={"query_timeout": 1, "auth_type": "plain",
                              "server_connect_timeout": 1},
                    databases={"app": "host=%s,%s port=5432 dbname=app"
                               % (fx.pod_addr(0), fx.pod_addr(1))})
    c = RawClient(fleet)
    c.query("SELECT 1")
    c.result()
    c.query("SELECT host(inet_server_addr()), pg_sleep(0.5)")
    time.sleep(0.2)
    # whichever pod runs it hangs
    pod = next(i for i in (0, 1)
               if activity(service, i, "state = 'active' AND query LIKE '%pg_sleep(0.5)'"))
    service.hang(pod)
    started = time.monotonic()
    err, status = c.result()
    took = time.monotonic() - started
    assert status is None, "the connection should be closed"
    assert err and err["C"] == "57014" and err["M"] == "query_timeout", err
    assert err["S"] == "FATAL"
    assert took < 5, took
    with connect(fleet) as conn:
        for _ in range(5):
            assert conn.execute("SELECT host(inet_server_addr())").fetchone()[0] \
                != fx.pod_addr(pod)
    c.close()
    service.unhang(pod)


def test_client_idle_timeout(service, pgfleet):
    fleet = pgfleet(settings={"client_idle_timeout": 1, "auth_type": "plain"})
    # a client that keeps talking, or waits on a long query, stays
    busy = connect(fleet)
    for _ in range(6):
        busy.execute("SELECT 1")
        time.sleep(0.5)
    assert busy.execute("SELECT pg_sleep(2.5), 1").fetchone()[1] == 1
    # an idle one is closed, and told why
    idle = RawClient(fleet)
    started = time.monotonic()
    err, status = idle.result()
    assert status is None
    assert err == {"S": "FATAL", "V": "FATAL", "C": "08P01", "M": "client_idle_timeout"}, err
    assert 1 <= time.monotonic() - started < 4
    # what a psycopg user sees
    conn = connect(fleet)
    time.sleep(3)
    with pytest.raises(psycopg.OperationalError) as e:
        conn.execute("SELECT 1")
    assert "client_idle_timeout" in str(e.value)
    conn.close()
    busy.close()
    assert "client_idle_timeout" in fleet.log_text()


def test_idle_transaction_timeout(service, pgfleet):
    fleet = pgfleet(settings={"idle_transaction_timeout": 1, "auth_type": "plain"})
    # idle outside a transaction, or busy inside one: left alone
    outside = connect(fleet)
    outside.execute("SELECT 1")
    inside = connect(fleet, autocommit=False)
    assert inside.execute("SELECT pg_sleep(2.5), 1").fetchone()[1] == 1
    inside.commit()
    time.sleep(2.5)
    assert outside.execute("SELECT 1").fetchone() == (1,)
    # idle in BEGIN: closed with 25P03, and its server connection with it
    c = RawClient(fleet)
    c.query("BEGIN; SELECT pg_backend_pid(), host(inet_server_addr())")
    err, status = c.result()
    assert err is None and status == b"T"
    pid_rows = [i for i in range(3) if activity(service, i, "state = 'idle in transaction'")]
    assert len(pid_rows) == 1
    pod = pid_rows[0]
    (pid,) = activity(service, pod, "state = 'idle in transaction'")
    started = time.monotonic()
    err, status = c.result()
    assert status is None
    assert err["C"] == "25P03" and err["M"] == "idle_transaction_timeout", err
    assert 1 <= time.monotonic() - started < 4
    deadline = time.monotonic() + 5
    while pid in activity(service, pod, "true"):
        assert time.monotonic() < deadline, "the server connection was not closed"
        time.sleep(0.1)
    # a psycopg transaction left open
    conn = connect(fleet, autocommit=False)
    conn.execute("SELECT 1")
    time.sleep(3)
    with pytest.raises(psycopg.OperationalError) as e:
        conn.execute("SELECT 1")
    assert "idle_transaction_timeout" in str(e.value)
    conn.close()
    outside.close()
    inside.close()
    assert "idle_transaction_timeout" in fleet.log_text()


def app_backends(service):
    """The pool's server connections on each pod (not the health check's)."""
    return {i: activity(service, i, "datname = 'app' AND application_name <> 'pgfleet-health'")
            for i in range(3)}


def test_server_idle_timeout(service, pgfleet):
    fleet = pgfleet(settings={"server_idle_timeout": 1})
    conns = [connect(fleet, autocommit=False) for _ in range(6)]
    for c in conns:
        c.execute("SELECT 1")  # six transactions open at once: six servers
    for c in conns:
        c.commit()
    assert sum(len(v) for v in app_backends(service).values()) >= 6
    deadline = time.monotonic() + 6
    while any(app_backends(service).values()):
        assert time.monotonic() < deadline, app_backends(service)
        time.sleep(0.2)
    # clients still logged in just get new server connections
    for c in conns:
        c.execute("SELECT 1")
        c.commit()
        c.close()


def test_server_lifetime(service, pgfleet):
    """Old server connections are replaced between transactions; no client
    sees a failure."""
    fleet = pgfleet(settings={"server_lifetime": 1, "default_pool_size": 1},
                    databases=single_pod(0))
    pids = []
    with connect(fleet) as conn:
        deadline = time.monotonic() + 4.5
        while time.monotonic() < deadline:
            pids.append(conn.execute("SELECT pg_backend_pid()").fetchone()[0])
            time.sleep(0.05)
    distinct = list(dict.fromkeys(pids))
    assert len(distinct) >= 3, distinct
    # the old ones are gone from the pod
    time.sleep(2.5)
    alive = set(activity(service, 0, "datname = 'app'"))
    assert not alive & set(distinct[:-1]), (alive, distinct)


def test_server_connect_timeout_marks_a_hung_pod_down(service, pgfleet):
    """A pod that accepts TCP but never answers: its logins give up after
    server_connect_timeout, it is marked down, and the others serve."""
    service.hang(1)
    # Health checks off: the login itself must notice the hang (with checks on,
    # the hung pod never passes its first check and never gets a login).
    fleet = pgfleet(settings={"server_connect_timeout": 1, "server_login_retry": 30,
                              "health_check_period": 0})
    seen = {}
    errors = []

    def worker():
        try:
            with connect(fleet) as conn:
                for _ in range(10):
                    a = conn.execute("SELECT host(inet_server_addr())").fetchone()[0]
                    seen[a] = seen.get(a, 0) + 1
                    time.sleep(0.05)
        except Exception as e:  # noqa: BLE001
            errors.append(e)

    def batch():
        workers = [threading.Thread(target=worker, daemon=True) for _ in range(6)]
        for w in workers:
            w.start()
        for w in workers:
            w.join(30)

    started = time.monotonic()
    batch()
    assert time.monotonic() - started < 10
    fleet.wait_log(r'msg="replica down" db=app addr=%s:5432 .*server_connect_timeout'
                   % fx.pod_addr(1), timeout=5)
    batch()  # and once it is down
    assert not errors, errors
    assert sum(seen.values()) == 120
    assert fx.pod_addr(1) not in seen
    assert set(seen) == {fx.pod_addr(0), fx.pod_addr(2)}, seen
    service.unhang(1)


def test_client_login_timeout(service, pgfleet):
    fleet = pgfleet(settings={"client_login_timeout": 1, "auth_type": "plain"})
    silent = socket.create_connection((fleet.host, fleet.port), timeout=10)
    # one that starts but never answers the password request
    halfway = socket.create_connection((fleet.host, fleet.port), timeout=10)
    params = b"user\x00app\x00database\x00app\x00\x00"
    halfway.sendall(struct.pack("!II", 8 + len(params), 196608) + params)
    started = time.monotonic()
    for s in (silent, halfway):
        buf = b""
        while True:
            chunk = s.recv(65536)
            if not chunk:
                break
            buf += chunk
        assert b"C08P01\x00" in buf and b"Mclient_login_timeout\x00" in buf, buf
        s.close()
    assert 1 <= time.monotonic() - started < 4
    # a client that logs in in time is fine
    with connect(fleet) as conn:
        time.sleep(1.5)
        assert conn.execute("SELECT 1").fetchone() == (1,)
    assert "client_login_timeout" in fleet.log_text()
