"""Hostile clients (issue 15, items 4, 5 and 9, max_packet_size, what the
HTTP port shows): a client that opens sockets and never speaks, a flood of
connections past max_client_conn or past the file-descriptor limit, empty
passwords, user-name enumeration through the SCRAM salt, an oversized message
length.  Each test checks what the attacker is told, that pgfleet stays
alive and cheap (CPU read from /proc/PID/stat, a bound and not a timing),
that the log is not flooded, and that a normal client still gets in.

The raw-protocol client below speaks just enough of the protocol (startup,
cleartext, md5 and SCRAM-SHA-256 as a client) to do what libpq refuses to:
libpq never sends an empty password."""

import base64
import hashlib
import hmac
import os
import resource
import select
import socket
import struct
import subprocess
import time

import psycopg
import pytest

import fixture as fx

# Health checks every second: a pod checked while pgfleet had no descriptor
# left is seen up again a second after they are back.
FAST = dict(health_check_period=1, health_check_timeout=1, server_login_retry=1)


# ---- a raw protocol client --------------------------------------------------


class Raw:
    """One connection, messages read whole with a deadline."""

    def __init__(self, fleet, timeout=10.0):
        self.sock = socket.create_connection((fleet.host, fleet.port), timeout=timeout)
        self.buf = b""
        self.timeout = timeout

    def close(self):
        self.sock.close()

    def send(self, data):
        self.sock.sendall(data)

    def msg(self, typ, body=b""):
        self.send(typ + struct.pack("!I", len(body) + 4) + body)

    def startup(self, user, database=fx.APP_DB):
        body = struct.pack("!I", 196608)
        for k, v in (("user", user), ("database", database)):
            body += k.encode() + b"\0" + v.encode() + b"\0"
        body += b"\0"
        self.send(struct.pack("!I", len(body) + 4) + body)

    def _fill(self, n):
        deadline = time.monotonic() + self.timeout
        while len(self.buf) < n:
            left = deadline - time.monotonic()
            if left <= 0:
                raise TimeoutError("no answer from pgfleet")
            r, _, _ = select.select([self.sock], [], [], left)
            if not r:
                continue
            chunk = self.sock.recv(65536)
            if not chunk:
                raise EOFError("pgfleet closed the connection")
            self.buf += chunk

    def read(self):
        """(type, body) of the next message."""
        self._fill(5)
        typ, n = self.buf[:1], struct.unpack("!I", self.buf[1:5])[0]
        self._fill(1 + n)
        body, self.buf = self.buf[5:1 + n], self.buf[1 + n:]
        return typ, body

    def auth_request(self):
        """The next Authentication message's (code, data), or raises the error."""
        typ, body = self.read()
        if typ == b"E":
            raise PgError(body)
        assert typ == b"R", (typ, body)
        return struct.unpack("!I", body[:4])[0], body[4:]

    def until_ready(self):
        """Reads to ReadyForQuery; raises an ErrorResponse met on the way."""
        while True:
            typ, body = self.read()
            if typ == b"E":
                raise PgError(body)
            if typ == b"Z":
                return


class PgError(Exception):
    def __init__(self, body):
        self.fields = {}
        for part in body.split(b"\0"):
            if part:
                self.fields[part[:1].decode()] = part[1:].decode(errors="replace")
        super().__init__("%s %s" % (self.sqlstate, self.message))

    @property
    def sqlstate(self):
        return self.fields.get("C")

    @property
    def message(self):
        return self.fields.get("M")


def error_of(fn):
    """The ErrorResponse fn raised (fails if it raised none)."""
    try:
        fn()
    except PgError as e:
        return e
    raise AssertionError("no ErrorResponse")


def md5_hex(b):
    return hashlib.md5(b).hexdigest()


def scram_first(raw):
    """Starts SCRAM after AuthenticationSASL: (client nonce, server-first text)."""
    nonce = base64.b64encode(os.urandom(18)).decode()
    first_bare = "n=,r=" + nonce
    data = ("n,," + first_bare).encode()
    raw.msg(b"p", b"SCRAM-SHA-256\0" + struct.pack("!I", len(data)) + data)
    code, sf = raw.auth_request()
    assert code == 11, code  # SASLContinue
    return first_bare, sf.decode()


def scram_attrs(text):
    return dict(kv.split("=", 1) for kv in text.split(","))


def login(fleet, user, password, method, database=fx.APP_DB):
    """Logs in with `method` (the one pgfleet must ask for) and `password`
    sent as is, even empty.  Returns the Raw connection, ready for a query;
    raises PgError when refused."""
    raw = Raw(fleet)
    try:
        raw.startup(user, database)
        code, data = raw.auth_request()
        if method == "plain":
            assert code == 3, code
            raw.msg(b"p", password.encode() + b"\0")
        elif method == "md5":
            assert code == 5, code
            inner = md5_hex(password.encode() + user.encode())
            raw.msg(b"p", ("md5" + md5_hex(inner.encode() + data[:4])).encode() + b"\0")
        else:
            assert code == 10 and b"SCRAM-SHA-256" in data, (code, data)
            first_bare, server_first = scram_first(raw)
            a = scram_attrs(server_first)
            salted = hashlib.pbkdf2_hmac("sha256", password.encode(),
                                         base64.b64decode(a["s"]), int(a["i"]))
            client_key = hmac.new(salted, b"Client Key", "sha256").digest()
            stored = hashlib.sha256(client_key).digest()
            final_bare = "c=biws,r=" + a["r"]
            auth_msg = ",".join([first_bare, server_first, final_bare]).encode()
            sig = hmac.new(stored, auth_msg, "sha256").digest()
            proof = bytes(x ^ y for x, y in zip(client_key, sig))
            raw.msg(b"p", (final_bare + ",p=" + base64.b64encode(proof).decode()).encode())
            code, _ = raw.auth_request()
            assert code == 12, code  # SASLFinal
        code, _ = raw.auth_request()
        assert code == 0, code
        raw.until_ready()
        return raw
    except BaseException:
        raw.close()
        raise


def scram_salt(fleet, user):
    """(salt bytes, iterations) pgfleet shows `user` in its server-first."""
    raw = Raw(fleet)
    try:
        raw.startup(user)
        code, data = raw.auth_request()
        assert code == 10, code
        _, server_first = scram_first(raw)
        a = scram_attrs(server_first)
        return base64.b64decode(a["s"]), int(a["i"])
    finally:
        raw.close()


# ---- process measurements ----------------------------------------------------


def cpu_seconds(pid):
    """utime + stime of the whole process (every thread), in seconds."""
    with open("/proc/%d/stat" % pid) as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def open_fds(pid):
    return len(os.listdir("/proc/%d/fd" % pid))


def clients_held(fleet):
    """pgfleet's client connections in every state, from /metrics."""
    _, text = fleet.http_get("/metrics")
    return sum(float(l.rsplit(None, 1)[1]) for l in text.splitlines()
               if l.startswith("pgfleet_client_connections{"))


def hold_idle_sockets(fleet, n):
    """n idle sockets, once pgfleet holds no other client (a connection
    closed a moment ago counts until pgfleet has seen it go) and until it
    holds all n."""
    assert fx.wait_until(lambda: clients_held(fleet) == 0, 10)
    socks = idle_sockets(fleet, n)
    assert fx.wait_until(lambda: clients_held(fleet) == n, 10), clients_held(fleet)
    return socks


def log_lines(fleet, word, since=0):
    return [l for l in fleet.log_text()[since:].splitlines() if word in l]


def idle_sockets(fleet, n):
    """n TCP connections that never send a byte."""
    socks = []
    for _ in range(n):
        s = socket.socket()
        s.settimeout(10)
        s.connect((fleet.host, fleet.port))
        socks.append(s)
    return socks


def refusal(sock, timeout=10.0):
    """The ErrorResponse pgfleet sends a socket it will not serve (nothing
    sent by the client), or None if it says nothing within timeout."""
    sock.settimeout(timeout)
    data = b""
    try:
        while True:
            chunk = sock.recv(4096)
            if not chunk:
                break
            data += chunk
    except socket.timeout:
        return None
    except ConnectionResetError:
        pass
    if len(data) < 5 or data[:1] != b"E":
        return None
    return PgError(data[5:1 + struct.unpack("!I", data[1:5])[0]])


def first_answer(sock, timeout):
    """The first whole message pgfleet sends sock: (type, body), or
    (None, data) when none comes within timeout or the socket closes."""
    sock.settimeout(timeout)
    data = b""
    deadline = time.monotonic() + timeout
    try:
        while time.monotonic() < deadline:
            if len(data) >= 5 and len(data) >= 1 + struct.unpack("!I", data[1:5])[0]:
                n = struct.unpack("!I", data[1:5])[0]
                return data[:1], data[5:1 + n]
            sock.settimeout(max(0.1, deadline - time.monotonic()))
            chunk = sock.recv(4096)
            if not chunk:
                break
            data += chunk
    except (socket.timeout, ConnectionResetError):
        pass
    return None, data


def first_refusal(fleet, extra, timeout=10.0, startup=True):
    """Opens up to `extra` more sockets, each sending a startup packet
    (startup=False: nothing), until pgfleet refuses one (with workers = N a
    worker may not yet have accepted its share of the earlier ones when the
    next arrives); returns (error, sockets opened)."""
    opened = []
    for _ in range(extra):
        s = idle_sockets(fleet, 1)[0]
        opened.append(s)
        if startup:
            body = struct.pack("!I", 196608) + b"user\0app\0database\0app\0\0"
            s.sendall(struct.pack("!I", len(body) + 4) + body)
        err = refusal(s, timeout=1.0)
        if err:
            return err, opened
    # A loaded machine (workers = N, a backlog being refused one pause at a
    # time) may answer later: still an answer, not a hang.
    deadline = time.monotonic() + timeout
    for s in opened:
        err = refusal(s, timeout=max(0.1, deadline - time.monotonic()))
        if err:
            return err, opened
    return None, opened


def close_all(socks):
    for s in socks:
        s.close()


def connect_eventually(fleet, timeout=20.0, **kw):
    """A normal psycopg client, retried while pgfleet frees what the
    attack held (sockets closed a moment ago, a health check to pass)."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            conn = fleet.connect(**kw)
            conn.prepare_threshold = None
            return conn
        except psycopg.OperationalError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.2)


# ---- item 4: idle sockets, max_client_conn, EMFILE ---------------------------


def test_idle_sockets_past_max_client_conn_are_refused_cheaply(service, pgfleet):
    """20 sockets that never send a startup packet fill max_client_conn = 20:
    the next connections are told 53300 (after their startup packet, as
    PostgreSQL does: a raw socket, psql and psycopg alike; a socket that
    sends nothing within CLIENT_REFUSE_TIMEOUT, or one past the refusal
    slots, at once), pgfleet's CPU stays low with them all open, the
    refusals are logged a line at a time and not one per connection, and
    once the idle sockets go a normal client gets in."""
    fleet = pgfleet(settings=dict(FAST, max_client_conn=20))
    with connect_eventually(fleet) as conn:  # the pool is up before the attack
        assert conn.execute("SELECT 1").fetchone() == (1,)
    log_start = len(fleet.log_text())
    idle = hold_idle_sockets(fleet, 20)
    try:
        err, extra = first_refusal(fleet, 20)
        idle += extra
        assert err is not None, "a socket past max_client_conn was left hanging"
        assert err.sqlstate == "53300", err
        assert "max_client_conn" in err.message, err

        # A burst of 200 more: each refused, none left hanging.
        burst = idle_sockets(fleet, 200)
        try:
            errors = [refusal(s) for s in burst]
        finally:
            close_all(burst)
        assert all(e is not None and e.sqlstate == "53300" for e in errors), \
            [e for e in errors if e is None or e.sqlstate != "53300"][:3]

        with pytest.raises(psycopg.OperationalError, match="max_client_conn"):
            fleet.connect()
        env = dict(os.environ, PGPASSWORD=fx.APP_PASSWORD, PGCONNECT_TIMEOUT="10")
        p = subprocess.run([os.path.join(fx.PG_BIN, "psql"), "-X", "-h", fleet.host, "-p",
                            str(fleet.port), "-U", fx.APP_USER, "-d", fx.APP_DB, "-c",
                            "SELECT 1"], env=env, capture_output=True, text=True, timeout=30)
        assert p.returncode != 0 and "max_client_conn" in p.stderr, p.stderr

        before = cpu_seconds(fleet.pid)
        time.sleep(2)
        used = cpu_seconds(fleet.pid) - before
        assert used < 0.5, "pgfleet used %.2f CPU-seconds in 2 s with idle sockets" % used
        assert fleet.running
    finally:
        close_all(idle)
    lines = log_lines(fleet, "accept", log_start) + log_lines(fleet, "refus", log_start)
    assert len(lines) < 20, "log flooded: %d lines, e.g. %s" % (len(lines), lines[:3])
    with connect_eventually(fleet) as conn:
        assert conn.execute("SELECT 2").fetchone() == (2,)


def test_idle_socket_is_closed_by_client_login_timeout(service, pgfleet):
    """A socket that never sends its startup packet holds a slot only until
    client_login_timeout, then is told so and closed."""
    fleet = pgfleet(settings=dict(client_login_timeout=1))
    [s] = idle_sockets(fleet, 1)
    try:
        err = refusal(s, timeout=15)
    finally:
        s.close()
    assert err is not None and err.sqlstate == "08P01", err
    assert "client_login_timeout" in err.message, err


def test_out_of_file_descriptors_neither_spins_nor_hangs(service, pgfleet):
    """pgfleet's descriptor limit lowered (prlimit) to what it has open plus
    a few: more connections than it can hold are refused with 53300 instead
    of being left in the accept queue, accept4's EMFILE does not make the
    loop spin (CPU stays low, a handful of log lines), the HTTP port does not
    spin either, and once the sockets go everything works again."""
    fleet = pgfleet(settings=dict(FAST))
    with connect_eventually(fleet) as conn:
        assert conn.execute("SELECT 1").fetchone() == (1,)
    assert fleet.http_get("/healthz")[0] == 200
    pid = fleet.pid
    old_limit = resource.prlimit(pid, resource.RLIMIT_NOFILE)
    limit = open_fds(pid) + 16
    resource.prlimit(pid, resource.RLIMIT_NOFILE, (limit, old_limit[1]))
    log_start = len(fleet.log_text())
    t_start = time.monotonic()
    idle, http_socks, extra, kind = [], [], [], b"-"
    try:
        idle = idle_sockets(fleet, 40)  # more than the 16 descriptors left
        # Refusals are sent as the connections come: 2 s for all of them
        # (with workers = N some may wait in the accept queue instead).
        deadline = time.monotonic() + 2
        refused = [e for e in (refusal(s, timeout=max(0.05, deadline - time.monotonic()))
                               for s in idle[16:]) if e]
        assert refused, "no connection past the descriptor limit was told why"
        assert all(e.sqlstate == "53300" for e in refused), refused
        assert "too many clients" in refused[0].message, refused[0]

        # The HTTP port, out of descriptors too: its connections wait.
        for _ in range(3):
            h = socket.socket()
            h.settimeout(5)
            h.connect((fleet.host, fleet.http_port))
            h.sendall(b"GET /healthz HTTP/1.0\r\n\r\n")
            http_socks.append(h)
        # And one more pgfleet client: refused too, not left hanging.  With
        # workers = N the descriptor table is shared: another worker may be
        # served in the room a worker's spare descriptor left (it is then
        # asked for its password), or take that room first, so that the
        # client waits in the accept queue until a descriptor frees (below).
        extra = idle_sockets(fleet, 1)
        body = struct.pack("!I", 196608) + b"user\0app\0database\0app\0\0"
        extra[0].sendall(struct.pack("!I", len(body) + 4) + body)
        kind, payload = first_answer(extra[0], timeout=10)
        if kind == b"E":
            err = PgError(payload)
            assert err.sqlstate == "53300", err
        else:
            assert fleet.workers > 1 and kind in (b"R", None), (kind, payload)
        if kind is not None:
            idle += extra

        before = cpu_seconds(pid)
        time.sleep(2)
        used = cpu_seconds(pid) - before
        assert used < 0.5, "pgfleet used %.2f CPU-seconds in 2 s at the fd limit" % used
        assert fleet.running
    finally:
        close_all(idle)
        close_all(http_socks)
    if kind is None:
        # workers = N, the client left waiting at the limit: served as soon
        # as descriptors free, never lost.
        kind, payload = first_answer(extra[0], timeout=10)
        assert kind in (b"R", b"E"), (kind, payload)
    close_all(extra)
    lines = log_lines(fleet, "accept", log_start) + log_lines(fleet, "refus", log_start)
    # Each worker logs each kind (refusals, accept pauses, the HTTP port) at
    # most once a second however many sockets it refuses; how long the test
    # stays at the limit depends on the machine's load.
    allowed = 10 + 3 * fleet.workers * int(time.monotonic() - t_start + 1)
    assert len(lines) < allowed, "log flooded: %d lines (%d allowed), e.g. %s" % (
        len(lines), allowed, lines[:3])
    # With workers = N the other workers' refusals free descriptors of the
    # shared table, so worker 0's HTTP accepts may succeed in between.
    assert fleet.workers > 1 or log_lines(fleet, "http accept failed", log_start), \
        "the HTTP port was not tried"
    with connect_eventually(fleet) as conn:
        assert conn.execute("SELECT 3").fetchone() == (3,)
    fx.wait_until(lambda: fleet.http_get("/healthz")[0] == 200, 10)
    resource.prlimit(pid, resource.RLIMIT_NOFILE, old_limit)


# ---- item 5: empty passwords --------------------------------------------------

EMPTY_USERS = {fx.APP_USER: fx.APP_PASSWORD, "empty": "", "adminempty": "",
               "md5empty": "md5" + md5_hex(b"" + b"md5empty")}


@pytest.mark.parametrize("auth_type,method", [("plain", "plain"), ("md5", "md5"),
                                              ("scram-sha-256", "scram")])
def test_empty_passwords_never_log_in(service, pgfleet, auth_type, method):
    """`"empty" ""` in auth_file (and a stored md5 of the empty password)
    is refused whatever the client sends, as PostgreSQL and PgBouncer do,
    for a pooled database and for the admin console, with the words of a
    wrong password; the log says why.  The same raw client logs in with a
    real password, so the refusals are not the client's fault."""
    fleet = pgfleet(settings=dict(auth_type=auth_type, admin_users="adminempty"),
                    users=EMPTY_USERS)
    raw = login(fleet, fx.APP_USER, fx.APP_PASSWORD, method)
    raw.close()
    cases = [("empty", fx.APP_DB), ("adminempty", "pgfleet")]
    if method != "scram":  # an md5 secret is asked for md5 under scram too
        cases.append(("md5empty", fx.APP_DB))
    for user, db in cases:
        err = error_of(lambda: login(fleet, user, "", method, database=db))
        assert err.sqlstate == "28P01", (user, err)
        assert err.message == 'password authentication failed for user "%s"' % user, err
    assert log_lines(fleet, "password is empty"), fleet.log_tail()


@pytest.mark.parametrize("var", ["DB_PASSWORD", "POSTGRES_PASSWORD"])
def test_check_rejects_an_empty_db_password(var):
    env = {k: v for k, v in os.environ.items()
           if not k.startswith(("PGFLEET_", "DB_", "POSTGRES_"))}
    env.update({"DB_HOST": "db.example", "DB_USER": "app", var: ""})
    p = subprocess.run([fx.Pgfleet().binary, "--check"], env=env, capture_output=True,
                       text=True, timeout=30)
    assert p.returncode == 1, (p.stdout, p.stderr)
    lines = p.stderr.strip().splitlines()
    assert len(lines) == 1, lines
    assert var in lines[0] and "empty" in lines[0], lines


# ---- item 9: user names cannot be enumerated -------------------------------------


def test_scram_salt_of_an_unknown_user_is_stable_and_looks_like_a_known_one(service,
                                                                             pgfleet):
    """PostgreSQL's mock authentication: an unknown user is shown a salt
    derived from its name, the same on every attempt, of the same length and
    iteration count as a known user's; the exchange ends in the words of a
    wrong password."""
    fleet = pgfleet()
    known = [scram_salt(fleet, fx.APP_USER) for _ in range(3)]
    unknown = [scram_salt(fleet, "nobody") for _ in range(3)]
    other = scram_salt(fleet, "nobody-else")
    assert len(set(known)) == 1, known
    assert len(set(unknown)) == 1, unknown
    (ks, ki), (us, ui) = known[0], unknown[0]
    assert len(ks) == len(us) == 16 and ki == ui == 4096, (known[0], unknown[0])
    assert us != ks and other[0] != us
    wrong = error_of(lambda: login(fleet, fx.APP_USER, "wrong", "scram"))
    nobody = error_of(lambda: login(fleet, "nobody", "wrong", "scram"))
    assert wrong.sqlstate == nobody.sqlstate == "28P01"
    assert nobody.message == wrong.message.replace(fx.APP_USER, "nobody")


@pytest.mark.parametrize("auth_type,method", [("plain", "plain"), ("md5", "md5")])
def test_unknown_user_is_asked_and_refused_like_a_known_one(service, pgfleet, auth_type,
                                                            method):
    fleet = pgfleet(settings=dict(auth_type=auth_type))
    wrong = error_of(lambda: login(fleet, fx.APP_USER, "wrong", method))
    nobody = error_of(lambda: login(fleet, "nobody", "wrong", method))
    assert wrong.sqlstate == nobody.sqlstate == "28P01"
    assert nobody.message == wrong.message.replace(fx.APP_USER, "nobody")


# ---- max_packet_size ---------------------------------------------------------


def test_message_longer_than_max_packet_size_is_refused(service, pgfleet):
    """The default is PostgreSQL's own limit, 1 GB - 1: a Query announcing
    1 GB is refused at once with 08P01 naming the length, instead of being
    streamed to a server that would drop the connection without a word."""
    fleet = pgfleet()
    raw = login(fleet, fx.APP_USER, fx.APP_PASSWORD, "scram")
    try:
        raw.send(b"Q" + struct.pack("!I", 1 << 30) + b"SELECT 1")
        typ, body = raw.read()
        assert typ == b"E", (typ, body)
        err = PgError(body)
        assert err.sqlstate == "08P01", err
        assert "1073741824" in err.message, err
    finally:
        raw.close()
    assert fleet.running
    with connect_eventually(fleet) as conn:
        assert conn.execute("SELECT 1").fetchone() == (1,)


def test_max_packet_size_range_is_checked(tmp_path):
    ini = tmp_path / "pgfleet.ini"
    ini.write_text("[databases]\napp = host=db\n[pgfleet]\nauth_type = trust\n"
                   "max_packet_size = 1023\n")
    p = subprocess.run([fx.Pgfleet().binary, "--check", str(ini)], capture_output=True,
                       text=True, timeout=30)
    assert p.returncode == 1
    assert "max_packet_size" in p.stderr and "1024..2147483647" in p.stderr, p.stderr


# ---- what the HTTP port and the admin console show ---------------------------------


def test_metrics_and_show_name_databases_but_no_secret_or_query(service, pgfleet):
    """/metrics is for a scraper inside the cluster: it names databases,
    users and replica addresses (so bind http_listen to the pod and fence
    port 9930 with a NetworkPolicy), but never a password, a SCRAM secret or
    the text of a query; neither does any SHOW command.  /healthz and
    /readyz stay open: they say only up or not."""
    secret_marker = "q-text-7d41c"
    fleet = pgfleet(settings=dict(admin_users="admin", health_check_password="hc-pw-93b2"),
                    users={fx.APP_USER: fx.APP_PASSWORD, "admin": "admin-pw-5e1"})
    with connect_eventually(fleet) as conn:
        conn.execute("SELECT '%s'" % secret_marker).fetchone()
        conn.execute("SELECT pg_sleep(0)").fetchone()
    status, metrics = fleet.http_get("/metrics")
    assert status == 200
    shows = []
    with psycopg.connect(fleet.dsn(user="admin", password="admin-pw-5e1", dbname="pgfleet"),
                         autocommit=True) as admin:
        for what in ("DATABASES", "POOLS", "CLIENTS", "SERVERS", "CONFIG", "USERS",
                     "REPLICAS", "SOCKETS", "DNS_HOSTS", "LISTS", "MEM"):
            shows.append(repr(admin.execute("SHOW " + what).fetchall()))
    everything = [metrics] + shows
    for text in everything:
        for secret in (fx.APP_PASSWORD, "admin-pw-5e1", "hc-pw-93b2", secret_marker,
                       "SCRAM-SHA-256$"):
            assert secret not in text, (secret, text[:400])
    assert '="%s"' % fx.APP_DB in metrics, metrics[:800]  # a database label
    for path in ("/healthz", "/readyz"):
        assert fleet.http_get(path)[0] in (200, 503)


def test_k8s_network_policy_fences_the_http_port_only():
    """k8s/pgfleet's NetworkPolicy: 6432 from any pod, 9930 (/metrics) only
    from a selected namespace; it selects pgfleet's pods."""
    import yaml
    k8s = os.path.join(fx.REPO, "k8s", "pgfleet")
    with open(os.path.join(k8s, "networkpolicy.yaml")) as f:
        [np] = [d for d in yaml.safe_load_all(f) if d]
    with open(os.path.join(k8s, "deployment.yaml")) as f:
        [dep] = [d for d in yaml.safe_load_all(f) if d]
    pod_labels = dep["spec"]["template"]["metadata"]["labels"]
    sel = np["spec"]["podSelector"]["matchLabels"]
    assert all(pod_labels.get(k) == v for k, v in sel.items())
    rules = {r["ports"][0]["port"]: r["from"] for r in np["spec"]["ingress"]}
    assert rules[6432] == [{"namespaceSelector": {}}]
    assert rules[9930] and all(f.get("namespaceSelector", {}).get("matchLabels")
                               for f in rules[9930]), rules[9930]
