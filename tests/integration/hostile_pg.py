#!/usr/bin/python3
"""A fake PostgreSQL server that misbehaves on purpose (issue 15).

pgfleet is pointed at it with a [databases] entry
(`host=<address> port=<HostilePg.port>`); it speaks just enough of protocol
3.0 to log a client in and answer simple queries, and then does whatever its
`behaviour` says to the connections pgfleet's pools open.  Health checks
(libpq, application_name=pgfleet-health, see src/health.c) get a normal
login and answer `pg_is_in_recovery()` as a primary, so the replica is up
and what a test sees comes from the attack, not from the check; pass
`attack_health=True` to attack them too.

Standard library only; one thread per connection; every connection and the
whole server end after `time_limit` seconds, so a test cannot hang on it.

    with HostilePg("127.0.1.60", behaviour="flood_params") as fake:
        ... databases={"hostile": fake.db_entry("hostile")} ...
        fake.wait_for("attack_started")

Behaviours (for the attacked connections):

  normal            log in, answer queries
  stall             answer SSLRequest (to tell health checks apart), never
                    answer the StartupMessage; with attack_health=True, never
                    answer anything at all
  stall_after_auth  AuthenticationOk and one ParameterStatus, then silence
  flood_params      AuthenticationOk, then ParameterStatus of `flood_size`
                    bytes each, without end
  flood_notices     the same with NoticeResponse
  raw_before_auth   send `raw` (bytes) in place of the authentication request,
                    then behave normally
  raw_after_auth    AuthenticationOk, then `raw`, then the rest of a normal
                    login
  raw_reply         log in normally, answer the first Query/Sync with `raw`
                    (then behave normally)

attack_limit: attack only the first N connections (None: all); the rest
behave normally.

auth: "ok" (AuthenticationOk at once) or "scram" (SCRAM-SHA-256 with
`iterations` and `salt`; salt None: a new random salt at every login).

Events (`events`, a list of (name, detail) tuples, and wait_for(name)):
  connected, health_login, normal_login, attack_started, scram_first_sent,
  scram_final_received, attack_ended, peer_closed.
"""

import base64
import hashlib
import hmac
import os
import socket
import struct
import threading
import time

BEHAVIOURS = ("normal", "stall", "stall_after_auth", "flood_params", "flood_notices",
              "raw_before_auth", "raw_after_auth", "raw_reply")

SSL_REQUEST = 80877103
GSS_REQUEST = 80877104
CANCEL_REQUEST = 80877102
PROTO_V3 = 196608


def msg(type_, body=b""):
    """One backend message: type byte, length, body."""
    return type_ + struct.pack("!I", len(body) + 4) + body


def cstr(s):
    return s.encode() + b"\0"


def auth(code, data=b""):
    return msg(b"R", struct.pack("!I", code) + data)


def parameter_status(name, value):
    return msg(b"S", cstr(name) + cstr(value))


def ready(status=b"I"):
    return msg(b"Z", status)


def error(sqlstate, message, severity="FATAL"):
    return msg(b"E", b"S" + cstr(severity) + b"V" + cstr(severity) + b"C" + cstr(sqlstate)
               + b"M" + cstr(message) + b"\0")


def notice(message):
    return msg(b"N", b"SNOTICE\0VNOTICE\0C00000\0M" + cstr(message) + b"\0")


def row_description(names):
    body = struct.pack("!H", len(names))
    for n in names:
        # name, table oid, column, type oid (text), typlen, typmod, format
        body += cstr(n) + struct.pack("!IhIhih", 0, 0, 25, -1, -1, 0)
    return msg(b"T", body)


def data_row(values):
    body = struct.pack("!H", len(values))
    for v in values:
        b = v.encode()
        body += struct.pack("!I", len(b)) + b
    return msg(b"D", body)


def command_complete(tag):
    return msg(b"C", cstr(tag))


class PeerClosed(Exception):
    pass


class _Conn:
    """One accepted connection: reads framed messages with a deadline."""

    def __init__(self, sock, deadline):
        self.sock = sock
        self.deadline = deadline
        self.buf = b""

    def _fill(self, n):
        while len(self.buf) < n:
            left = self.deadline - time.monotonic()
            if left <= 0:
                raise PeerClosed("time limit")
            self.sock.settimeout(min(left, 0.5))
            try:
                data = self.sock.recv(65536)
            except socket.timeout:
                continue
            except OSError as e:
                raise PeerClosed(str(e))
            if not data:
                raise PeerClosed("eof")
            self.buf += data

    def read_startup(self):
        self._fill(4)
        (n,) = struct.unpack("!I", self.buf[:4])
        if n < 8 or n > 10000:
            raise PeerClosed("bad startup length")
        self._fill(n)
        pkt, self.buf = self.buf[:n], self.buf[n:]
        return pkt[4:]

    def read_msg(self):
        self._fill(5)
        type_ = self.buf[:1]
        (n,) = struct.unpack("!I", self.buf[1:5])
        if n < 4 or n > 1 << 24:
            raise PeerClosed("bad message length")
        self._fill(n + 1)
        body, self.buf = self.buf[5:n + 1], self.buf[n + 1:]
        return type_, body

    def send(self, data):
        try:
            self.sock.sendall(data)
        except OSError as e:
            raise PeerClosed(str(e))

    def idle_until_closed(self):
        """Read and drop everything until the peer closes or time is up."""
        try:
            while True:
                self._fill(len(self.buf) + 1)
                self.buf = b""
        except PeerClosed:
            pass


class HostilePg:
    def __init__(self, host="127.0.0.1", port=0, behaviour="normal", auth="ok",
                 password="app-secret", iterations=4096, salt=None, flood_size=60000,
                 raw=b"", attack_health=False, attack_limit=None, time_limit=60.0):
        if behaviour not in BEHAVIOURS:
            raise ValueError("unknown behaviour %r" % behaviour)
        if auth not in ("ok", "scram"):
            raise ValueError("auth is 'ok' or 'scram'")
        self.host = host
        self.port = port
        self.behaviour = behaviour
        self.auth = auth
        self.password = password
        self.iterations = iterations
        self.salt = salt
        self.flood_size = flood_size
        self.raw = raw
        self.attack_health = attack_health
        self.attack_limit = attack_limit
        self._attacks = 0
        self.time_limit = time_limit
        self.events = []
        self.bytes_flooded = 0
        self._cond = threading.Condition()
        self._lsock = None
        self._threads = []
        self._conns = set()
        self._stopping = False
        self._started_at = None
        self._next_pid = 4242

    # ---- life cycle -------------------------------------------------------

    def start(self):
        s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        s.bind((self.host, self.port))
        s.listen(64)
        s.settimeout(0.2)
        self._lsock = s
        self.port = s.getsockname()[1]
        self._started_at = time.monotonic()
        t = threading.Thread(target=self._accept_loop, name="hostile-pg-accept", daemon=True)
        t.start()
        self._threads.append(t)
        return self

    def stop(self):
        self._stopping = True
        for c in list(self._conns):
            try:
                c.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
        for t in self._threads:
            t.join(timeout=5)
        if self._lsock:
            self._lsock.close()
            self._lsock = None

    def __enter__(self):
        return self.start()

    def __exit__(self, *exc):
        self.stop()

    def db_entry(self, dbname="hostile"):
        """The [databases] value that points pgfleet here."""
        return "host=%s port=%d dbname=%s" % (self.host, self.port, dbname)

    @property
    def addr(self):
        return "%s:%d" % (self.host, self.port)

    # ---- events -----------------------------------------------------------

    def _event(self, name, detail=""):
        with self._cond:
            self.events.append((name, detail))
            self._cond.notify_all()

    def count(self, name):
        with self._cond:
            return sum(1 for n, _ in self.events if n == name)

    def wait_for(self, name, timeout=15.0, at_least=1):
        """True once event `name` happened at_least times within timeout."""
        deadline = time.monotonic() + timeout
        with self._cond:
            while sum(1 for n, _ in self.events if n == name) < at_least:
                left = deadline - time.monotonic()
                if left <= 0:
                    return False
                self._cond.wait(left)
            return True

    # ---- serving ------------------------------------------------------------

    def _deadline(self):
        return self._started_at + self.time_limit

    def _accept_loop(self):
        while not self._stopping and time.monotonic() < self._deadline():
            try:
                sock, _ = self._lsock.accept()
            except socket.timeout:
                continue
            except OSError:
                return
            self._conns.add(sock)
            t = threading.Thread(target=self._serve, args=(sock,), name="hostile-pg-conn",
                                 daemon=True)
            t.start()
            self._threads.append(t)

    def _serve(self, sock):
        c = _Conn(sock, self._deadline())
        self._event("connected")
        try:
            self._serve_conn(c)
        except PeerClosed as e:
            self._event("peer_closed", str(e))
        finally:
            self._conns.discard(sock)
            try:
                sock.close()
            except OSError:
                pass

    def _serve_conn(self, c):
        if self.behaviour == "stall" and self.attack_health:
            self._event("attack_started", "stall")
            c.idle_until_closed()
            return
        # SSLRequest / GSSENCRequest: no (both libpq and pgfleet go on in clear)
        while True:
            body = c.read_startup()
            (code,) = struct.unpack("!I", body[:4])
            if code in (SSL_REQUEST, GSS_REQUEST):
                c.send(b"N")
                continue
            if code == CANCEL_REQUEST:
                return
            if code != PROTO_V3:
                c.send(error("08P01", "unsupported protocol"))
                return
            break
        params = {}
        parts = body[4:].split(b"\0")
        for k, v in zip(parts[0::2], parts[1::2]):
            if k:
                params[k.decode(errors="replace")] = v.decode(errors="replace")
        health = params.get("application_name") == "pgfleet-health"
        if health and not self.attack_health:
            self._event("health_login", params.get("user", ""))
            c.send(auth(0))
            self._finish_login(c, params)
            self._query_loop(c, None)
            return
        with self._cond:
            attacked = self.attack_limit is None or self._attacks < self.attack_limit
            self._attacks += attacked
        if not attacked:
            self._event("normal_login", params.get("user", ""))
            self._authenticate(c)
            self._finish_login(c, params)
            self._query_loop(c, None)
            return
        self._attack(c, params)

    def _attack(self, c, params):
        b = self.behaviour
        self._event("attack_started", b)
        if b == "stall":
            c.idle_until_closed()
            return
        if b == "raw_before_auth":
            c.send(self.raw)
            self._authenticate(c)
            self._finish_login(c, params)
            self._query_loop(c, None)
            return
        self._authenticate(c)
        if b == "stall_after_auth":
            c.send(parameter_status("server_version", "15.0"))
            c.idle_until_closed()
            return
        if b in ("flood_params", "flood_notices"):
            self._flood(c, b)
            return
        if b == "raw_after_auth":
            c.send(self.raw)
        self._finish_login(c, params)
        self._query_loop(c, self.raw if b == "raw_reply" else None)

    def _flood(self, c, b):
        n = 0
        pad = max(self.flood_size - 16, 1)
        while time.monotonic() < c.deadline and not self._stopping:
            if b == "flood_params":
                m = parameter_status("x_flood_%d" % (n % 1000), "v" * pad)
            else:
                m = notice("n" * pad)
            # Many at once: the point is volume, not syscalls.
            c.send(m * 16)
            self.bytes_flooded += len(m) * 16
            n += 16
        self._event("attack_ended", "%d messages" % n)

    def _authenticate(self, c):
        if self.auth == "ok":
            c.send(auth(0))
            return
        c.send(auth(10, b"SCRAM-SHA-256\0\0"))
        t, body = c.read_msg()
        if t != b"p":
            raise PeerClosed("expected SASLInitialResponse")
        mech_end = body.index(b"\0")
        (n,) = struct.unpack("!i", body[mech_end + 1:mech_end + 5])
        client_first = body[mech_end + 5:mech_end + 5 + n].decode()
        bare = client_first.split(",", 2)[2]
        cnonce = dict(a.split("=", 1) for a in bare.split(","))["r"]
        salt = self.salt if self.salt is not None else os.urandom(16)
        nonce = cnonce + base64.b64encode(os.urandom(18)).decode()
        server_first = "r=%s,s=%s,i=%d" % (nonce, base64.b64encode(salt).decode(),
                                           self.iterations)
        c.send(auth(11, server_first.encode()))
        self._event("scram_first_sent", str(self.iterations))
        t, body = c.read_msg()
        if t != b"p":
            raise PeerClosed("expected SASLResponse")
        self._event("scram_final_received")
        client_final = body.decode()
        without_proof, proof_b64 = client_final.rsplit(",p=", 1)
        salted = hashlib.pbkdf2_hmac("sha256", self.password.encode(), salt, self.iterations)
        client_key = hmac.new(salted, b"Client Key", hashlib.sha256).digest()
        stored_key = hashlib.sha256(client_key).digest()
        auth_msg = ",".join([bare, server_first, without_proof]).encode()
        client_sig = hmac.new(stored_key, auth_msg, hashlib.sha256).digest()
        proof = base64.b64decode(proof_b64)
        if bytes(a ^ b for a, b in zip(proof, client_sig)) != client_key:
            c.send(error("28P01", "password authentication failed"))
            raise PeerClosed("bad proof")
        server_key = hmac.new(salted, b"Server Key", hashlib.sha256).digest()
        server_sig = hmac.new(server_key, auth_msg, hashlib.sha256).digest()
        c.send(auth(12, b"v=" + base64.b64encode(server_sig)))
        c.send(auth(0))

    def _finish_login(self, c, params):
        self._next_pid += 1
        out = b"".join(parameter_status(k, v) for k, v in (
            ("server_version", "15.0"), ("server_encoding", "UTF8"),
            ("client_encoding", "UTF8"), ("DateStyle", "ISO, MDY"),
            ("IntervalStyle", "postgres"), ("TimeZone", "UTC"),
            ("integer_datetimes", "on"), ("standard_conforming_strings", "on"),
            ("is_superuser", "off"), ("in_hot_standby", "off"),
            ("application_name", params.get("application_name", "")),
            ("session_authorization", params.get("user", ""))))
        out += msg(b"K", struct.pack("!II", self._next_pid, 0x5eed))
        out += ready()
        c.send(out)

    def _answer_query(self, sql):
        s = sql.strip().rstrip(";").strip()
        if "pg_is_in_recovery" in s:  # health.c's check: a primary, no lag
            return (row_description(["pg_is_in_recovery", "lag"]) + data_row(["f", "0"])
                    + command_complete("SELECT 1"))
        if not s:
            return msg(b"I")
        word = s.split(None, 1)[0].upper()
        if word == "SELECT":
            return row_description(["?column?"]) + data_row(["1"]) + command_complete("SELECT 1")
        if word == "DISCARD":
            return command_complete("DISCARD ALL")
        return command_complete(word)

    def _query_loop(self, c, raw_reply):
        """Simple and (minimal) extended protocol until Terminate."""
        while True:
            t, body = c.read_msg()
            if t == b"X":
                return
            if t == b"Q":
                if raw_reply is not None:
                    c.send(raw_reply)
                    raw_reply = None
                    self._event("attack_ended", "raw reply")
                    continue
                c.send(self._answer_query(body.rstrip(b"\0").decode(errors="replace"))
                       + ready())
            elif t == b"P":
                c.send(msg(b"1"))
            elif t == b"B":
                c.send(msg(b"2"))
            elif t == b"D":
                c.send(msg(b"n"))
            elif t == b"E":
                c.send(command_complete("SELECT 0"))
            elif t == b"C":
                c.send(msg(b"3"))
            elif t == b"S":
                if raw_reply is not None:
                    c.send(raw_reply)
                    raw_reply = None
                    self._event("attack_ended", "raw reply")
                    continue
                c.send(ready())
            # 'H' (Flush) and anything else: nothing to say
