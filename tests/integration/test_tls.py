"""TLS on both sides (issue 4): clients to pgfleet (client_tls_sslmode) and
pgfleet to the replicas (server_tls_sslmode), with a CA, server and client
certificates made in the test with the openssl command line, real libpq
clients (psycopg, openssl s_client) and real PostgreSQL pods with ssl = on."""

import contextlib
import os
import re
import shutil
import socket
import struct
import subprocess
import time

import psycopg
import pytest

import fixture as fx

SSL_REQUEST = struct.pack("!II", 8, 80877103)
GSSENC_REQUEST = struct.pack("!II", 8, 80877104)


# ---- certificates -------------------------------------------------------------


def _openssl(*args, cwd):
    p = subprocess.run(["openssl"] + list(args), cwd=cwd, capture_output=True, text=True,
                       timeout=60)
    assert p.returncode == 0, "openssl %s: %s" % (" ".join(args), p.stderr)
    return p


def _issue(d, name, subject, ext_lines):
    """An EC key and a certificate for it signed by the test CA in d."""
    _openssl("req", "-new", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1",
             "-nodes", "-keyout", name + ".key", "-out", name + ".csr", "-subj", subject, cwd=d)
    with open(os.path.join(d, name + ".ext"), "w") as f:
        f.write("\n".join(ext_lines) + "\n")
    _openssl("x509", "-req", "-in", name + ".csr", "-CA", "ca.crt", "-CAkey", "ca.key",
             "-CAcreateserial", "-days", "2", "-sha256", "-extfile", name + ".ext",
             "-out", name + ".crt", cwd=d)
    os.chmod(os.path.join(d, name + ".key"), 0o600)
    return os.path.join(d, name + ".crt"), os.path.join(d, name + ".key")


class Certs:
    """A self-signed CA; pgfleet's certificate (SAN IP:127.0.0.1,
    DNS:localhost); the pods' certificate (SAN DNS:<service name> and the IP
    of pod 0 only); a client certificate for user app; and a second CA that
    signed nothing of the above."""

    def __init__(self, d):
        self.dir = str(d)
        _openssl("req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1",
                 "-nodes", "-keyout", "ca.key", "-out", "ca.crt", "-days", "2",
                 "-subj", "/CN=pgfleet test CA",
                 "-addext", "basicConstraints=critical,CA:TRUE",
                 "-addext", "keyUsage=critical,keyCertSign,cRLSign", cwd=self.dir)
        self.ca = os.path.join(self.dir, "ca.crt")
        self.server_crt, self.server_key = _issue(
            self.dir, "pgfleet", "/CN=127.0.0.1",
            ["basicConstraints=CA:FALSE", "keyUsage=digitalSignature,keyEncipherment",
             "extendedKeyUsage=serverAuth", "subjectAltName=IP:127.0.0.1,DNS:localhost"])
        self.pod_crt, self.pod_key = _issue(
            self.dir, "pod", "/CN=" + fx.SVC_NAME,
            ["basicConstraints=CA:FALSE", "keyUsage=digitalSignature,keyEncipherment",
             "extendedKeyUsage=serverAuth",
             "subjectAltName=DNS:%s,IP:%s" % (fx.SVC_NAME, fx.pod_addr(0))])
        self.client_crt, self.client_key = _issue(
            self.dir, "client", "/CN=" + fx.APP_USER,
            ["basicConstraints=CA:FALSE", "keyUsage=digitalSignature",
             "extendedKeyUsage=clientAuth"])
        other = os.path.join(self.dir, "other")
        os.mkdir(other)
        _openssl("req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1",
                 "-nodes", "-keyout", "ca.key", "-out", "ca.crt", "-days", "2",
                 "-subj", "/CN=some other CA", cwd=other)
        self.other_ca = os.path.join(other, "ca.crt")
        # A client certificate file that does not exist: libpq then sends none
        # (and never falls back to ~/.postgresql/postgresql.crt).
        self.no_cert = os.path.join(self.dir, "absent.crt")

    def client_settings(self, mode="require", **extra):
        s = {"client_tls_sslmode": mode, "client_tls_cert_file": self.server_crt,
             "client_tls_key_file": self.server_key}
        s.update(extra)
        return s


@pytest.fixture(scope="module")
def certs(tmp_path_factory):
    return Certs(tmp_path_factory.mktemp("tls"))


# ---- helpers ------------------------------------------------------------------


def connect(fleet, **params):
    conn = fleet.connect(**params)
    conn.prepare_threshold = None
    return conn


def recv_exactly(s, n):
    buf = b""
    while len(buf) < n:
        chunk = s.recv(n - len(buf))
        if not chunk:
            break
        buf += chunk
    return buf


def recv_all(s, timeout=5.0):
    s.settimeout(timeout)
    buf = b""
    try:
        while True:
            chunk = s.recv(65536)
            if not chunk:
                break
            buf += chunk
    except (socket.timeout, ConnectionResetError):
        pass
    return buf


def error_fields(data):
    """The fields of the ErrorResponse at the start of data, by code."""
    assert data[:1] == b"E", data[:40]
    (length,) = struct.unpack("!I", data[1:5])
    fields = {}
    for part in data[5:1 + length].split(b"\0"):
        if part:
            fields[chr(part[0])] = part[1:].decode()
    return fields


def startup_packet(user=fx.APP_USER, dbname=fx.APP_DB):
    body = struct.pack("!I", 196608)
    for k, v in (("user", user), ("database", dbname)):
        body += k.encode() + b"\0" + v.encode() + b"\0"
    body += b"\0"
    return struct.pack("!I", len(body) + 4) + body


@contextlib.contextmanager
def pods_with_ssl(service, certs, pods):
    """ssl = on (reloaded) on the given pods with the pods' certificate;
    turned off again afterwards, whatever happens."""
    pods = list(pods)
    try:
        for i in pods:
            datadir = service.pods[i].datadir
            for src, dst in ((certs.pod_crt, "server.crt"), (certs.pod_key, "server.key")):
                path = os.path.join(datadir, dst)
                shutil.copyfile(src, path)
                fx._chown_postgres(path)
                os.chmod(path, 0o600)
            service.psql(i, "ALTER SYSTEM SET ssl = on", dbname="postgres")
            service.psql(i, "SELECT pg_reload_conf()", dbname="postgres")
        for i in pods:
            # A reload is asynchronous: wait until the pod answers with TLS.
            deadline = time.monotonic() + 15
            while True:
                try:
                    with service.connect(i, sslmode="require") as c:
                        assert c.info.pgconn.ssl_in_use
                    break
                except psycopg.OperationalError:
                    if time.monotonic() > deadline:
                        raise
                    time.sleep(0.2)
        yield
    finally:
        for i in pods:
            try:
                service.psql(i, "ALTER SYSTEM RESET ssl", dbname="postgres")
                service.psql(i, "SELECT pg_reload_conf()", dbname="postgres")
            except Exception as e:  # noqa: BLE001 - keep turning the others off
                print("could not turn ssl off on pod %d: %s" % (i, e))
        for i in pods:
            deadline = time.monotonic() + 15
            while time.monotonic() < deadline:
                try:
                    with service.connect(i, sslmode="require"):
                        pass
                    time.sleep(0.2)
                except psycopg.OperationalError:
                    break


def fleet_backends_ssl(service, i):
    """{ssl(bool): count} of pgfleet's server connections (user app, database
    app) on pod i, from the pod's own pg_stat_ssl."""
    out = service.psql(
        i, "SELECT s.ssl, count(*) FROM pg_stat_ssl s JOIN pg_stat_activity a USING (pid) "
           "WHERE a.usename = 'app' AND a.datname = 'app' "
           "AND a.backend_type = 'client backend' GROUP BY 1", dbname="postgres")
    res = {}
    for line in out.splitlines():
        ssl, n = line.split("|")
        res[ssl == "t"] = int(n)
    return res


def spread_queries(fleet, n_conns=6, **params):
    """Several clients, each holding a transaction at once, so that every
    replica gets a server connection; returns the set of server addresses."""
    conns = [connect(fleet, **params) for _ in range(n_conns)]
    addrs = set()
    try:
        for c in conns:
            c.execute("BEGIN")
            addrs.add(c.execute("SELECT host(inet_server_addr())").fetchone()[0])
        for c in conns:
            c.execute("COMMIT")
    finally:
        for c in conns:
            c.close()
    return addrs


# ---- clients to pgfleet ----------------------------------------------------------


def test_require_client_gets_tls(service, pgfleet, certs):
    fleet = pgfleet(settings=certs.client_settings("require"))
    with connect(fleet, sslmode="require") as conn:
        assert conn.info.pgconn.ssl_in_use
        assert conn.execute("SELECT 1").fetchone()[0] == 1
    # prefer (libpq's default) also ends up on TLS
    with connect(fleet, sslmode="prefer") as conn:
        assert conn.info.pgconn.ssl_in_use
        assert conn.execute("SELECT 2").fetchone()[0] == 2


def test_verify_full_client_with_the_ca(service, pgfleet, certs):
    fleet = pgfleet(settings=certs.client_settings("prefer"))
    with connect(fleet, sslmode="verify-full", sslrootcert=certs.ca) as conn:
        assert conn.info.pgconn.ssl_in_use
        assert conn.execute("SELECT 'verified'").fetchone()[0] == "verified"
    # A client trusting another CA refuses pgfleet's certificate.
    with pytest.raises(psycopg.OperationalError, match="certificate verify failed"):
        connect(fleet, sslmode="verify-full", sslrootcert=certs.other_ca)
    # prefer still lets plaintext clients in.
    with connect(fleet, sslmode="disable") as conn:
        assert not conn.info.pgconn.ssl_in_use
        assert conn.execute("SELECT 3").fetchone()[0] == 3


def test_plaintext_client_refused_when_tls_required(service, pgfleet, certs):
    fleet = pgfleet(settings=certs.client_settings("require"))
    with pytest.raises(psycopg.OperationalError, match="SSL required"):
        connect(fleet, sslmode="disable")
    # The same on the wire: a FATAL ErrorResponse with SQLSTATE 28000.
    with socket.create_connection((fleet.host, fleet.port), timeout=5) as s:
        s.sendall(startup_packet())
        fields = error_fields(recv_all(s))
        assert fields.get("S") == "FATAL" and fields.get("C") == "28000", fields
        assert fields.get("M") == "SSL required", fields
    # The pooler still serves TLS clients.
    with connect(fleet, sslmode="require") as conn:
        assert conn.execute("SELECT 1").fetchone()[0] == 1


def test_tls_disabled_answers_n(service, pgfleet, certs):
    fleet = pgfleet()  # client_tls_sslmode = disable (the default)
    with socket.create_connection((fleet.host, fleet.port), timeout=5) as s:
        s.sendall(SSL_REQUEST)
        assert recv_exactly(s, 1) == b"N"
    with pytest.raises(psycopg.OperationalError, match="does not support SSL"):
        connect(fleet, sslmode="require")
    with connect(fleet, sslmode="prefer") as conn:
        assert not conn.info.pgconn.ssl_in_use
        assert conn.execute("SELECT 1").fetchone()[0] == 1


def test_ssl_request_answered_s_and_gssenc_n(service, pgfleet, certs):
    fleet = pgfleet(settings=certs.client_settings("require"))
    with socket.create_connection((fleet.host, fleet.port), timeout=5) as s:
        s.sendall(SSL_REQUEST)
        assert recv_exactly(s, 1) == b"S"
    with socket.create_connection((fleet.host, fleet.port), timeout=5) as s:
        s.sendall(GSSENC_REQUEST)
        assert recv_exactly(s, 1) == b"N"
        # then SSLRequest on the same connection, as libpq does
        s.sendall(SSL_REQUEST)
        assert recv_exactly(s, 1) == b"S"
    # gssencmode=prefer (libpq's default when built with GSS) falls through to TLS
    with connect(fleet, sslmode="require", gssencmode="prefer") as conn:
        assert conn.info.pgconn.ssl_in_use


def test_plaintext_after_s_is_refused(service, pgfleet, certs):
    fleet = pgfleet(settings=certs.client_settings("require"))
    # A StartupMessage where the TLS ClientHello should be: the handshake
    # fails and the connection is closed, without a plaintext reply.
    with socket.create_connection((fleet.host, fleet.port), timeout=5) as s:
        s.sendall(SSL_REQUEST)
        assert recv_exactly(s, 1) == b"S"
        s.sendall(startup_packet())
        data = recv_all(s)
        assert data == b"" or data[0] == 0x15, data[:40]  # nothing, or a TLS alert
    # Bytes sent behind the SSLRequest, before the 'S': refused in plaintext.
    with socket.create_connection((fleet.host, fleet.port), timeout=5) as s:
        s.sendall(SSL_REQUEST + startup_packet())
        fields = error_fields(recv_all(s))
        assert fields.get("C") == "08P01", fields
        assert "unencrypted data after SSL request" in fields.get("M", ""), fields
    fleet.wait_log(r"client TLS handshake failed")
    with connect(fleet, sslmode="require") as conn:
        assert conn.execute("SELECT 1").fetchone()[0] == 1


@pytest.mark.parametrize("mode", ["verify-ca", "verify-full"])
def test_client_certificate_required(service, pgfleet, certs, mode):
    fleet = pgfleet(settings=certs.client_settings(mode, client_tls_ca_file=certs.ca))
    with pytest.raises(psycopg.OperationalError):
        connect(fleet, sslmode="require", sslcert=certs.no_cert)
    with pytest.raises(psycopg.OperationalError, match="SSL required"):
        connect(fleet, sslmode="disable")
    with connect(fleet, sslmode="verify-full", sslrootcert=certs.ca, sslcert=certs.client_crt,
                 sslkey=certs.client_key) as conn:
        assert conn.info.pgconn.ssl_in_use
        assert conn.execute("SELECT 1").fetchone()[0] == 1
    fleet.wait_log(r"client TLS handshake failed.*certificate")


def _s_client(fleet, *args):
    return subprocess.run(
        ["openssl", "s_client", "-connect", "%s:%d" % (fleet.host, fleet.port),
         "-starttls", "postgres"] + list(args),
        input="", capture_output=True, text=True, timeout=30)


def test_tls_1_1_refused(service, pgfleet, certs):
    probe = subprocess.run(["openssl", "s_client", "-help"], capture_output=True, text=True)
    if "-tls1_1" not in probe.stderr + probe.stdout:
        pytest.skip("this openssl s_client has no -tls1_1")
    fleet = pgfleet(settings=certs.client_settings("require"))
    ok = _s_client(fleet, "-tls1_2")
    assert ok.returncode == 0 and re.search(r"TLSv1\.2", ok.stdout), ok.stdout + ok.stderr
    # SECLEVEL=0 so that it is pgfleet, not this client, that refuses.
    old = _s_client(fleet, "-tls1_1", "-cipher", "DEFAULT@SECLEVEL=0")
    out = old.stdout + old.stderr
    if "no protocols available" in out:
        pytest.skip("this openssl cannot offer TLS 1.1 at all")
    assert old.returncode != 0, out
    assert re.search(r"protocol version|unsupported protocol|wrong version", out), out
    fleet.wait_log(r"client TLS handshake failed.*(unsupported protocol|version)")


def test_missing_cert_file_exits_2(certs, tmp_path):
    missing = str(tmp_path / "nope" / "server.crt")
    for settings, named in (
            (certs.client_settings("require", client_tls_cert_file=missing), missing),
            (certs.client_settings("require", client_tls_key_file=missing), missing),
            (certs.client_settings("verify-ca", client_tls_ca_file=missing), missing),
            ({"server_tls_sslmode": "verify-ca", "server_tls_ca_file": missing}, missing),
            # a key that is not the certificate's
            (certs.client_settings("require", client_tls_key_file=certs.client_key),
             certs.client_key)):
        p = fx.Pgfleet(settings=settings)
        try:
            with pytest.raises(fx.FixtureError):
                p.start(timeout=5)
            assert p.returncode == 2, p.log_text()
            errors = [l for l in p.log_text().splitlines() if "level=error" in l]
            assert len(errors) == 1 and named in errors[0], p.log_text()
        finally:
            p.cleanup()


def test_large_messages_both_ways_over_tls(service, pgfleet, certs):
    """Results and requests far larger than a TLS record and a buffer, with
    TLS on both sides: exercises SSL_pending and the ciphertext queue."""
    with pods_with_ssl(service, certs, range(len(service.pods))):
        fleet = pgfleet(settings=certs.client_settings("require", server_tls_sslmode="require"))
        with connect(fleet, sslmode="require") as conn:
            row = conn.execute(
                "SELECT string_agg(md5(i::text), '') FROM generate_series(1, 200000) i"
            ).fetchone()[0]
            assert len(row) == 32 * 200000
            big = "y" * (3 * 1024 * 1024 + 17)
            assert conn.execute("SELECT length(%s::text)", (big,)).fetchone()[0] == len(big)
            rows = conn.execute("SELECT i, repeat('z', 100) FROM generate_series(1, 50000) i"
                                ).fetchall()
            assert len(rows) == 50000 and rows[-1][0] == 50000
            for i in range(50):
                assert conn.execute("SELECT %s::int", (i,)).fetchone()[0] == i


# ---- pgfleet to the replicas -------------------------------------------------------


def test_server_tls_require_uses_tls(service, pgfleet, certs):
    with pods_with_ssl(service, certs, range(len(service.pods))):
        fleet = pgfleet(settings={"server_tls_sslmode": "require"})
        assert fleet.wait_all_up(service.addrs), fleet.log_tail()
        addrs = spread_queries(fleet)
        assert addrs == {p.addr for p in service.pods}
        for i in range(len(service.pods)):
            seen = fleet_backends_ssl(service, i)
            assert seen.get(True, 0) >= 1 and not seen.get(False), (i, seen)


def test_server_tls_prefer_falls_back_to_plaintext(service, pgfleet, certs):
    with pods_with_ssl(service, certs, [0]):
        fleet = pgfleet()  # server_tls_sslmode = prefer (the default)
        assert fleet.wait_all_up(service.addrs), fleet.log_tail()
        addrs = spread_queries(fleet)
        assert addrs == {p.addr for p in service.pods}
        seen = fleet_backends_ssl(service, 0)
        assert seen.get(True, 0) >= 1 and not seen.get(False), seen
        for i in range(1, len(service.pods)):
            seen = fleet_backends_ssl(service, i)
            assert seen.get(False, 0) >= 1 and not seen.get(True), (i, seen)


def test_server_tls_require_marks_plaintext_pod_down(service, pgfleet, certs):
    last = len(service.pods) - 1
    with pods_with_ssl(service, certs, range(last)):
        fleet = pgfleet(settings={"server_tls_sslmode": "require"})
        addrs = set()
        for _ in range(4):
            addrs |= spread_queries(fleet)
        assert addrs == {p.addr for p in service.pods[:last]}
        fleet.wait_log(r'replica down.*addr=%s:5432.*SSL was required'
                       % re.escape(service.pods[last].addr))
        assert fleet_backends_ssl(service, last) == {}
        for i in range(last):
            seen = fleet_backends_ssl(service, i)
            assert seen.get(True, 0) >= 1 and not seen.get(False), (i, seen)


def test_server_tls_verify_full(service, pgfleet, certs):
    """verify-full checks the DNS name for a replica found through DNS and
    the address for a literal one (the pods' certificate names the service
    and pod 0's address only)."""
    pod0, pod1 = service.pods[0].addr, service.pods[1].addr
    with pods_with_ssl(service, certs, range(len(service.pods))):
        fleet = pgfleet(
            settings={"server_tls_sslmode": "verify-full", "server_tls_ca_file": certs.ca,
                      "query_wait_timeout": 3},
            databases={
                fx.APP_DB: "host=%s port=%d dbname=%s" % (fx.SVC_NAME, fx.PG_PORT, fx.APP_DB),
                "lit0": "host=%s port=%d dbname=%s" % (pod0, fx.PG_PORT, fx.APP_DB),
                "lit1": "host=%s port=%d dbname=%s" % (pod1, fx.PG_PORT, fx.APP_DB),
            })
        assert fleet.wait_all_up(service.addrs), fleet.log_tail()
        assert spread_queries(fleet) == {p.addr for p in service.pods}
        with connect(fleet, dbname="lit0") as conn:
            assert conn.execute("SELECT host(inet_server_addr())").fetchone()[0] == pod0
        with pytest.raises(psycopg.Error):
            with connect(fleet, dbname="lit1") as conn:
                conn.execute("SELECT 1")
        fleet.wait_log(r"replica down.*addr=%s:5432.*"
                       r"(mismatch|certificate verify failed|server certificate for)"
                       % re.escape(pod1))
        for i in range(len(service.pods)):
            seen = fleet_backends_ssl(service, i)
            assert not seen.get(False), (i, seen)


def test_server_tls_verify_ca_with_another_ca_fails(service, pgfleet, certs):
    with pods_with_ssl(service, certs, [0]):
        fleet = pgfleet(
            settings={"server_tls_sslmode": "verify-ca", "server_tls_ca_file": certs.other_ca,
                      "query_wait_timeout": 3},
            databases={"lit0": "host=%s port=%d dbname=%s"
                       % (service.pods[0].addr, fx.PG_PORT, fx.APP_DB)})
        with pytest.raises(psycopg.Error):
            with connect(fleet, dbname="lit0") as conn:
                conn.execute("SELECT 1")
        fleet.wait_log(r"replica down.*certificate verify failed")


def test_tls_on_both_sides_with_many_clients(service, pgfleet, certs):
    with pods_with_ssl(service, certs, range(len(service.pods))):
        fleet = pgfleet(settings=certs.client_settings(
            "require", server_tls_sslmode="require", default_pool_size=3))
        conns = [connect(fleet, sslmode="require") for _ in range(20)]
        try:
            for round_ in range(5):
                for i, c in enumerate(conns):
                    assert c.execute("SELECT %s::int + %s::int", (i, round_)).fetchone()[0] \
                        == i + round_
        finally:
            for c in conns:
                c.close()
