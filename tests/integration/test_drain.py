"""Graceful shutdown (issue 6), as Kubernetes stops a pod: SIGTERM stops
accepting, /readyz turns 503 at once while the HTTP endpoint keeps
answering, a transaction in flight commits, idle clients get FATAL 57P01,
new logins are refused, and pgfleet exits 0 once nothing is open (or when
shutdown_timeout runs out).  A second SIGTERM exits at once."""

import signal
import socket
import struct
import threading
import time
import uuid

import psycopg
import pytest

import fixture as fx

SETTINGS = dict(health_check_period=1, health_check_timeout=1, dns_max_ttl=1)
ADMIN_SHUTDOWN = "57P01"
ADMIN_SHUTDOWN_TEXT = "terminating connection due to administrator command"


@pytest.fixture(scope="module")
def marks(service):
    """A table on every pod where a transaction leaves a token."""
    for i in range(len(service.pods)):
        service.psql(i, "CREATE TABLE IF NOT EXISTS drain_marks (token text); "
                        "GRANT ALL ON drain_marks TO %s" % fx.APP_USER)
    return service


def connect(fleet, **kw):
    conn = fleet.connect(**kw)
    conn.prepare_threshold = None
    return conn


def wait_until(pred, timeout, step=0.05):
    return fx.wait_until(pred, timeout, step)


def admin_shutdown(e):
    """Is e PostgreSQL's admin-shutdown error?  libpq keeps the SQLSTATE only
    when the error arrives before the connection's end is noticed; the text
    is there either way (as it is when PostgreSQL itself shuts down)."""
    return isinstance(e, psycopg.Error) and (
        e.sqlstate == ADMIN_SHUTDOWN or ADMIN_SHUTDOWN_TEXT in str(e))


def track_notices(conn):
    """An error that arrives while libpq is between queries goes to the
    notice handler (as when PostgreSQL itself shuts down): keep them."""
    notices = []
    conn.add_notice_handler(
        lambda d: notices.append((d.severity, d.sqlstate, d.message_primary)))
    return notices


def told_admin_shutdown(e, notices):
    return e is not None and (
        admin_shutdown(e) or ("FATAL", ADMIN_SHUTDOWN, ADMIN_SHUTDOWN_TEXT) in notices)


def error_of(fn):
    try:
        fn()
    except psycopg.Error as e:
        return e
    return None


def raw_idle_client(fleet):
    """Logged in over the raw protocol (cleartext password), idle."""
    s = socket.create_connection((fleet.host, fleet.port), timeout=10)
    params = b"user\x00%s\x00database\x00%s\x00\x00" % (fx.APP_USER.encode(),
                                                         fx.APP_DB.encode())
    s.sendall(struct.pack("!II", 8 + len(params), 196608) + params)
    for msg in messages(s):
        if msg[0:1] == b"R" and struct.unpack("!I", msg[5:9])[0] == 3:
            pw = fx.APP_PASSWORD.encode() + b"\x00"
            s.sendall(b"p" + struct.pack("!I", 4 + len(pw)) + pw)
        elif msg[0:1] == b"E":
            raise AssertionError("login failed: %r" % msg)
        elif msg[0:1] == b"Z":
            return s
    raise AssertionError("closed during login")


def messages(s):
    buf = b""
    while True:
        while len(buf) < 5 or len(buf) < 1 + struct.unpack("!I", buf[1:5])[0]:
            try:
                chunk = s.recv(65536)
            except ConnectionResetError:
                chunk = b""
            if not chunk:
                return
            buf += chunk
        n = 1 + struct.unpack("!I", buf[1:5])[0]
        msg, buf = buf[:n], buf[n:]
        yield msg


def error_fields(s):
    """The ErrorResponse that comes before the connection closes."""
    for msg in messages(s):
        if msg[0:1] == b"E":
            return {f[0:1].decode(): f[1:].decode() for f in msg[5:].split(b"\x00") if f}
    return None


class InThread:
    """Runs fn in a thread; .result / .error when done."""

    def __init__(self, fn):
        self.result = self.error = None
        self.thread = threading.Thread(target=self._run, args=(fn,), daemon=True)
        self.thread.start()

    def _run(self, fn):
        try:
            self.result = fn()
        except BaseException as e:  # noqa: B902 - reported by the test
            self.error = e

    def join(self, timeout):
        self.thread.join(timeout)
        assert not self.thread.is_alive(), "still running"
        return self


def test_sigterm_drains_open_transaction_and_refuses_the_rest(marks, pgfleet):
    fleet = pgfleet(settings=dict(SETTINGS, shutdown_timeout=20, auth_type="plain"))
    token = uuid.uuid4().hex
    raw = raw_idle_client(fleet)
    idle = connect(fleet)
    idle_notices = track_notices(idle)
    assert idle.execute("SELECT 1").fetchone() == (1,)
    busy = connect(fleet, autocommit=False)
    notices = track_notices(busy)
    pod = busy.execute("SELECT host(inet_server_addr())").fetchone()[0]
    busy.execute("INSERT INTO drain_marks VALUES (%s)", (token,))

    def finish():
        busy.execute("SELECT pg_sleep(2)")
        busy.commit()
        return time.monotonic()

    worker = InThread(finish)
    time.sleep(0.5)  # pg_sleep is running on the pod
    t0 = time.monotonic()
    fleet.kill(signal.SIGTERM)

    # /readyz says draining at once; the endpoint keeps answering.
    got = wait_until(lambda: fleet.http_get("/readyz") == (503, "draining\n"), 1.0)
    assert got, fleet.http_get("/readyz")
    assert fleet.http_get("/healthz")[0] == 200
    assert "pgfleet_draining 1\n" in fleet.http_get("/metrics")[1]

    # The idle client was told, with PostgreSQL's admin-shutdown error.
    fields = error_fields(raw)
    assert fields and fields["S"] == "FATAL" and fields["C"] == ADMIN_SHUTDOWN, fields
    assert fields["M"] == ADMIN_SHUTDOWN_TEXT, fields
    assert time.monotonic() - t0 < 1.5, "the idle client was not closed promptly"
    e = error_of(lambda: idle.execute("SELECT 1"))
    assert told_admin_shutdown(e, idle_notices), (e, idle_notices)

    # A new login is refused while the transaction still runs.
    with pytest.raises(psycopg.OperationalError):
        fleet.connect(connect_timeout=3).close()
    assert worker.thread.is_alive(), "the transaction ended too early"

    # The transaction in flight commits; then its client is closed too.
    worker.join(10)
    assert worker.error is None, worker.error
    assert worker.result - t0 >= 1.0
    e = error_of(lambda: busy.execute("SELECT 1"))
    assert told_admin_shutdown(e, notices), (e, notices)

    assert fleet.wait(timeout=10) == 0
    assert time.monotonic() - worker.result < 3, "exit did not follow the drain"
    idx = [p.addr for p in marks.pods].index(pod)
    assert marks.psql(idx, "SELECT count(*) FROM drain_marks WHERE token = '%s'" % token) == "1"
    log = fleet.log_text()
    assert 'msg="shutting down" reason=SIGTERM' in log
    assert "drained" in log
    idle.close()
    busy.close()
    raw.close()


def test_sigterm_with_nothing_open_exits_promptly(service, pgfleet):
    fleet = pgfleet(settings=SETTINGS)
    with connect(fleet) as conn:
        notices = track_notices(conn)
        conn.execute("SELECT 1")
        t0 = time.monotonic()
        fleet.kill(signal.SIGTERM)
        assert fleet.wait(timeout=5) == 0
        assert time.monotonic() - t0 < 2
        e = error_of(lambda: conn.execute("SELECT 1"))
        assert told_admin_shutdown(e, notices), (e, notices)


def test_second_sigterm_exits_at_once(service, pgfleet):
    fleet = pgfleet(settings=dict(SETTINGS, shutdown_timeout=60))
    busy = connect(fleet, autocommit=False)
    busy.execute("SELECT 1")
    worker = InThread(lambda: busy.execute("SELECT pg_sleep(30)"))
    time.sleep(0.5)
    fleet.kill(signal.SIGTERM)
    assert wait_until(lambda: fleet.http_get("/readyz")[0] == 503, 1.0)
    time.sleep(0.3)
    assert fleet.running, "the first SIGTERM must wait for the transaction"
    t0 = time.monotonic()
    fleet.kill(signal.SIGTERM)
    assert fleet.wait(timeout=5) == 0
    assert time.monotonic() - t0 < 2
    worker.join(5)
    assert isinstance(worker.error, psycopg.Error), worker.error
    assert "second signal" in fleet.log_text()
    busy.close()


def test_shutdown_timeout_bounds_the_drain(service, pgfleet):
    fleet = pgfleet(settings=dict(SETTINGS, shutdown_timeout=1))
    busy = connect(fleet, autocommit=False)
    busy.execute("SELECT 1")
    worker = InThread(lambda: busy.execute("SELECT pg_sleep(30)"))
    time.sleep(0.5)
    t0 = time.monotonic()
    fleet.kill(signal.SIGTERM)
    assert fleet.wait(timeout=10) == 0
    took = time.monotonic() - t0
    assert 0.8 <= took < 4, took
    worker.join(5)
    assert admin_shutdown(worker.error), worker.error
    assert "shutdown_timeout reached" in fleet.log_text()
    busy.close()


def test_sigint_is_the_same_as_sigterm(service, pgfleet):
    fleet = pgfleet(settings=SETTINGS)
    busy = connect(fleet, autocommit=False)
    busy.execute("SELECT 1")
    worker = InThread(lambda: (busy.execute("SELECT pg_sleep(1)"), busy.commit()))
    time.sleep(0.3)
    fleet.kill(signal.SIGINT)
    worker.join(10)
    assert worker.error is None, worker.error
    assert fleet.wait(timeout=5) == 0
    assert 'reason=SIGINT' in fleet.log_text()
    busy.close()
