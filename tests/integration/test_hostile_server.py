"""A hostile backend (issue 15, items 1, 7 and 8): a server that floods its
login, stalls, breaks the protocol's order or framing, or asks for a SCRAM
iteration count that would stall the event loop.  Whatever it does, pgfleet
stays up with bounded memory, the attacked login fails with the documented
log line and client error, and clients of a real database keep working.

The hostile server is hostile_pg.HostilePg on <fixture net>.60; the real
database is the `service` fixture's "app"."""

import os
import socket
import struct
import subprocess
import threading

import psycopg
import pytest

import fixture as fx
import hostile_pg as hp

HOSTILE_HOST = fx.NET_PREFIX + ".60"
RSS_BOUND_KB = 200 * 1024  # generous: pgfleet idles at ~10 MB


@pytest.fixture
def hostile():
    """Factory: hostile(behaviour, **kw) -> a started HostilePg, stopped at
    the end of the test."""
    fakes = []

    def start(behaviour, **kw):
        kw.setdefault("time_limit", 90)
        fake = hp.HostilePg(HOSTILE_HOST, behaviour=behaviour, **kw).start()
        fakes.append(fake)
        return fake
    yield start
    for f in fakes:
        f.stop()


def start_fleet(pgfleet, service, fake, **settings):
    """pgfleet with the real "app" and the fake "hostile" database, both
    passed their first health check."""
    # One health check at start, none during the test: a check that passes
    # would bring the replica straight back up, and the waiting client's
    # error would then not name the failed login.
    base = {"query_wait_timeout": 4, "health_check_period": 30}
    base.update(settings)
    fleet = pgfleet(settings=base, databases={
        fx.APP_DB: "host=%s port=%d dbname=%s" % (fx.SVC_NAME, fx.PG_PORT, fx.APP_DB),
        "hostile": fake.db_entry("hostile")})
    assert fleet.wait_all_up(service.addrs, timeout=20), fleet.log_tail()
    fleet.wait_log(r'msg="replica up" db=hostile addr=%s ' % fake.addr.replace(".", r"\."),
                   timeout=20)
    return fleet


def rss_kb(pid):
    with open("/proc/%d/status" % pid) as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    raise AssertionError("no VmRSS for pid %d" % pid)


def assert_unharmed(fleet):
    """Alive, small, /healthz answers, the real database serves."""
    assert fleet.running, fleet.log_tail()
    assert rss_kb(fleet.pid) < RSS_BOUND_KB
    status, _ = fleet.http_get("/healthz")
    assert status == 200
    with fleet.connect() as conn:
        conn.prepare_threshold = None
        assert conn.execute("SELECT 1").fetchone()[0] == 1


def attack(fleet, sql="SELECT 1"):
    """A client of the hostile database: the error it got (None if none)."""
    try:
        with fleet.connect(dbname="hostile") as conn:
            conn.prepare_threshold = None
            conn.execute(sql).fetchall()
    except psycopg.Error as e:
        return e
    return None


def psql_attack(fleet, sql="SELECT 1"):
    """The same through psql with VERBOSITY verbose: its stderr shows the
    SQLSTATE of the ErrorResponse pgfleet sent before it closed."""
    env = dict(os.environ, PGPASSWORD=fx.APP_PASSWORD, PGCONNECT_TIMEOUT="10")
    for k in ("PGHOST", "PGPORT", "PGUSER", "PGDATABASE", "PGSSLMODE"):
        env.pop(k, None)
    p = subprocess.run([os.path.join(fx.PG_BIN, "psql"), "-X", "-A", "-t",
                        "-v", "VERBOSITY=verbose", "-h", fleet.host, "-p", str(fleet.port),
                        "-U", fx.APP_USER, "-d", "hostile", "-c", sql],
                       env=env, capture_output=True, text=True, timeout=60)
    return p.returncode, p.stderr


def raw_login(fleet, dbname="hostile", timeout=30.0):
    """Logs in with a cleartext password (pgfleet with auth_type = plain) over
    a bare socket: the fields of the ErrorResponse pgfleet answers, by code
    ('C' SQLSTATE, 'M' message), or None when the login succeeded.  libpq
    keeps a login error's SQLSTATE to itself."""
    s = socket.create_connection((fleet.host, fleet.port), timeout=timeout)
    try:
        body = (struct.pack("!I", 196608) + b"user\0" + fx.APP_USER.encode() + b"\0"
                + b"database\0" + dbname.encode() + b"\0\0")
        s.sendall(struct.pack("!I", len(body) + 4) + body)
        buf = b""
        while True:
            while len(buf) < 5 or len(buf) < 1 + struct.unpack("!I", buf[1:5])[0]:
                data = s.recv(65536)
                if not data:
                    raise AssertionError("pgfleet closed without an ErrorResponse")
                buf += data
            n = struct.unpack("!I", buf[1:5])[0]
            t, payload, buf = buf[:1], buf[5:n + 1], buf[n + 1:]
            if t == b"R" and struct.unpack("!I", payload[:4])[0] == 3:
                pw = fx.APP_PASSWORD.encode() + b"\0"
                s.sendall(b"p" + struct.pack("!I", len(pw) + 4) + pw)
            elif t == b"E":
                return {chr(f[0]): f[1:].decode(errors="replace")
                        for f in payload.split(b"\0") if f}
            elif t == b"Z":
                return None
    finally:
        s.close()


def log_has(fleet, pattern, timeout=15.0):
    return fleet.wait_log(pattern, timeout=timeout)


# ---- item 1: the login is bounded -------------------------------------------

@pytest.mark.parametrize("behaviour,size,limit", [
    ("flood_params", 60000, r"server_login_max_bytes \(262144 bytes\)"),
    ("flood_notices", 60000, r"server_login_max_bytes \(262144 bytes\)"),
    ("flood_params", 20, r"server_login_max_messages \(1000 messages\)"),
])
def test_login_flood_is_bounded(service, pgfleet, hostile, behaviour, size, limit):
    fake = hostile(behaviour, flood_size=size)
    fleet = start_fleet(pgfleet, service, fake)
    err = attack(fleet)
    # The replica is marked down like any failed login; the waiting client
    # gets the usual query_wait_timeout naming the last error.
    assert err is not None
    assert "query_wait_timeout" in str(err) and "login exceeded" in str(err), str(err)
    log_has(fleet, r'msg="server closed" db=hostile replica=%s reason="login exceeded %s'
            % (fake.addr.replace(".", r"\."), limit))
    assert fake.wait_for("peer_closed")
    assert_unharmed(fleet)


@pytest.mark.parametrize("behaviour,step", [
    ("stall", "authentication not finished"),
    ("stall_after_auth", "no ReadyForQuery after AuthenticationOk"),
])
def test_login_stall_ends_at_server_connect_timeout(service, pgfleet, hostile, behaviour, step):
    fake = hostile(behaviour)
    fleet = start_fleet(pgfleet, service, fake, server_connect_timeout=2)
    err = attack(fleet)
    assert err is not None and "query_wait_timeout" in str(err), str(err)
    log_has(fleet, r'msg="server closed" db=hostile replica=%s reason="server_connect_timeout: %s"'
            % (fake.addr.replace(".", r"\."), step))
    assert_unharmed(fleet)


# ---- item 1 and 7: order and framing during login ----------------------------

LOGIN_VIOLATIONS = [
    ("raw_before_auth", hp.ready(), "message 'Z' before AuthenticationOk"),
    ("raw_before_auth", hp.parameter_status("a", "b"), "message 'S' before AuthenticationOk"),
    ("raw_before_auth", hp.msg(b"K", struct.pack("!II", 1, 2)),
     "message 'K' before AuthenticationOk"),
    ("raw_after_auth", hp.auth(0), "authentication request after AuthenticationOk"),
    ("raw_after_auth", hp.msg(b"v", struct.pack("!II", 196608, 0)),
     "NegotiateProtocolVersion"),
    ("raw_after_auth", hp.msg(b"K", b"\0\0\0\1"), "message 'K' of length 8 during login"),
    ("raw_after_auth", hp.msg(b"Z"), "message 'Z' of length 4 during login"),
    ("raw_after_auth", hp.ready(b"T"), "ReadyForQuery at login not idle"),
    ("raw_after_auth", hp.data_row(["x"]), "unexpected message 'D' during login"),
]


@pytest.mark.parametrize("behaviour,raw,reason", LOGIN_VIOLATIONS,
                         ids=[r for _, _, r in LOGIN_VIOLATIONS])
def test_login_protocol_violation_fails_the_login(service, pgfleet, hostile, behaviour, raw,
                                                  reason):
    fake = hostile(behaviour, raw=raw)
    fleet = start_fleet(pgfleet, service, fake)
    err = attack(fleet)
    assert err is not None and "query_wait_timeout" in str(err), str(err)
    assert "protocol violation" in str(err), str(err)
    log_has(fleet, r'msg="server closed" db=hostile replica=%s reason="protocol violation: [^"]*%s'
            % (fake.addr.replace(".", r"\."), reason))
    assert_unharmed(fleet)


# ---- item 7: fixed-size server messages after login --------------------------

REPLY_VIOLATIONS = [
    (hp.msg(b"Z"), "message 'Z' of length 4"),
    (hp.msg(b"Z", b"IX"), "message 'Z' of length 6"),
    (hp.ready(b"X"), "ReadyForQuery with an unknown status"),
    (hp.msg(b"1", b"x"), "message '1' of length 5"),
    (hp.msg(b"n", b"xyz"), "message 'n' of length 7"),
]


@pytest.mark.parametrize("raw,reason", REPLY_VIOLATIONS, ids=[r for _, r in REPLY_VIOLATIONS])
def test_malformed_reply_closes_the_server(service, pgfleet, hostile, raw, reason):
    fake = hostile("raw_reply", raw=raw, attack_limit=1)
    fleet = start_fleet(pgfleet, service, fake)
    rc, stderr = psql_attack(fleet)
    assert rc != 0
    assert "08006: server connection to replica %s lost: protocol violation: %s" \
        % (fake.addr, reason) in stderr, stderr
    log_has(fleet, r'msg="server closed" db=hostile replica=%s reason="protocol violation: %s"'
            % (fake.addr.replace(".", r"\."), reason))
    assert_unharmed(fleet)
    # The hostile database itself serves again with a new connection.
    assert attack(fleet) is None


# ---- item 8: SCRAM iteration count --------------------------------------------

def test_scram_login_to_fake_server_works(service, pgfleet, hostile):
    """The fake's SCRAM is right, and an ordinary count passes the cap."""
    fake = hostile("normal", auth="scram", iterations=4096)
    fleet = start_fleet(pgfleet, service, fake)
    assert attack(fleet) is None
    assert fake.count("scram_final_received") >= 1


def test_scram_iterations_beyond_cap_are_refused(service, pgfleet, hostile):
    # salt=None: a new salt at every login, so the key cache cannot help.
    fake = hostile("normal", auth="scram", iterations=10000000, salt=None)
    fleet = start_fleet(pgfleet, service, fake, auth_type="plain")
    results = []
    t = threading.Thread(target=lambda: results.append(raw_login(fleet)))
    t.start()
    try:
        assert fake.wait_for("scram_first_sent")
        # Right after the server asked: the event loop answers.
        status, _ = fleet.http_get("/healthz")
        assert status == 200
    finally:
        t.join(timeout=30)
    err = results[0]
    assert err is not None and err["C"] == "28000", err
    assert err["M"] == "server asks for SCRAM with 10000000 iterations, more than " \
        "server_scram_max_iterations (100000)", err
    log_has(fleet, r'msg="server SCRAM iteration count refused" db=hostile replica=%s '
            r'iterations=10000000 server_scram_max_iterations=100000'
            % fake.addr.replace(".", r"\."))
    # A second login (another salt) is refused the same way.
    err2 = attack(fleet)
    assert err2 is not None and "server_scram_max_iterations" in str(err2), str(err2)
    assert fake.count("scram_first_sent") >= 2
    # pgfleet never answered the server-first-message: no PBKDF2 ran.
    assert fake.count("scram_final_received") == 0
    assert_unharmed(fleet)


def test_scram_cap_is_a_setting(service, pgfleet, hostile):
    fake = hostile("normal", auth="scram", iterations=5000)
    fleet = start_fleet(pgfleet, service, fake, server_scram_max_iterations=4096,
                        auth_type="plain")
    err = raw_login(fleet)
    assert err is not None and err["C"] == "28000", err
    assert err["M"] == "server asks for SCRAM with 5000 iterations, more than " \
        "server_scram_max_iterations (4096)", err
    assert fake.count("scram_final_received") == 0
    assert_unharmed(fleet)
