"""Issue 18 item 2: PgBouncer's tcp_* settings on the sockets pgfleet
accepts and opens (seen by `ss` in the running process), and the client
certificate pgfleet shows the servers (server_tls_cert_file /
server_tls_key_file), against real PostgreSQL pods whose pg_hba.conf
authenticates the user by its certificate alone (`hostssl ... cert`)."""

import contextlib
import os
import re
import shutil
import subprocess
import time

import psycopg
import pytest

import fixture as fx
from test_tls import certs, pods_with_ssl, spread_queries  # noqa: F401 (certs: a fixture)


# ---- tcp_* -------------------------------------------------------------------------


def pgfleet_sockets(fleet):
    """[(local, peer, timer)] of the established TCP sockets of pgfleet's
    process, from `ss -tnoep` (timer: 'keepalive,43sec,0', or '')."""
    p = subprocess.run(["ss", "-Htnop", "state", "established"], capture_output=True,
                       text=True, timeout=10)
    assert p.returncode == 0, p.stderr
    out = []
    for line in p.stdout.splitlines():
        if "pid=%d," % fleet.pid not in line:
            continue
        f = line.split()
        timer = re.search(r"timer:\(([^)]*)\)", line)
        out.append((f[2], f[3], timer.group(1) if timer else ""))
    return out


def keepalive_seconds(timer):
    m = re.match(r"keepalive,(?:(\d+)min)?([\d.]+)(ms|sec)?", timer)
    if not m:
        return None
    secs = float(m.group(2)) / (1000 if m.group(3) == "ms" else 1)
    return secs + 60 * int(m.group(1) or 0)


def wait_sockets(fleet, want, timeout=10):
    deadline = time.monotonic() + timeout
    while True:
        socks = pgfleet_sockets(fleet)
        if want(socks) or time.monotonic() > deadline:
            return socks
        time.sleep(0.2)


def test_tcp_keepidle_on_client_and_server_sockets(service, pgfleet):
    fleet = pgfleet(settings={"tcp_keepidle": 44, "tcp_keepintvl": 5, "tcp_keepcnt": 3,
                              "stats_users": fx.APP_USER,
                              "tcp_user_timeout": 30000})
    with fleet.connect() as conn:
        assert conn.execute("SELECT 1").fetchone() == (1,)
        client_side = ":%d" % fleet.port
        pod = ":%d" % fx.PG_PORT

        def ready(socks):
            return (any(l.endswith(client_side) and keepalive_seconds(t) for l, _, t in socks)
                    and any(p.endswith(pod) and keepalive_seconds(t) for _, p, t in socks))

        socks = wait_sockets(fleet, ready)
        clients = [t for l, _, t in socks if l.endswith(client_side)]
        servers = [t for _, p, t in socks if p.endswith(pod)]
        assert clients and servers, socks
        # the kernel's own first probe would come after 7200 s
        for t in [t for t in clients + servers if t.startswith("keepalive")]:
            assert 0 < keepalive_seconds(t) <= 44, socks
        assert any(keepalive_seconds(t) for t in clients), socks
        assert any(keepalive_seconds(t) for t in servers), socks
    # SHOW CONFIG shows what was set
    with psycopg.connect(fleet.dsn(fx.APP_USER, fx.APP_PASSWORD, "pgfleet"),
                         autocommit=True) as admin:
        admin.prepare_threshold = None
        rows = {r[0]: r[1] for r in admin.execute("SHOW CONFIG").fetchall()}
    assert (rows["tcp_keepidle"], rows["tcp_keepintvl"], rows["tcp_keepcnt"],
            rows["tcp_user_timeout"], rows["tcp_keepalive"]) == ("44", "5", "3", "30000", "1")


def test_tcp_keepalive_off(service, pgfleet):
    fleet = pgfleet(settings={"tcp_keepalive": 0, "tcp_keepidle": 44})
    with fleet.connect() as conn:
        assert conn.execute("SELECT 1").fetchone() == (1,)
        socks = wait_sockets(fleet, lambda s: any(l.endswith(":%d" % fleet.port)
                                                  for l, _, _ in s))
        mine = [t for l, p, t in socks
                if l.endswith(":%d" % fleet.port) or p.endswith(":%d" % fx.PG_PORT)]
        assert mine, socks
        assert not any(t.startswith("keepalive") for t in mine), socks


def test_bad_tcp_values_are_refused(tmp_path):
    ini = tmp_path / "p.ini"
    ini.write_text("[databases]\napp = host=127.0.0.1\n[pgfleet]\nauth_type = trust\n"
                   "tcp_keepcnt = 500\ntcp_keepidle = soon\n")
    env = {k: v for k, v in os.environ.items() if not k.startswith("PGFLEET_")}
    binary = os.environ.get("PGFLEET_BIN") or os.path.join(fx.REPO, "build", "pgfleet")
    p = subprocess.run([binary, "--check", str(ini)], capture_output=True, text=True, env=env,
                       timeout=20)
    assert p.returncode == 1
    assert p.stderr.strip().splitlines() == [
        "%s:5: key 'tcp_keepcnt': value '500' out of range (0..127)" % ini,
        "%s:6: key 'tcp_keepidle': invalid integer 'soon'" % ini]


# ---- server_tls_cert_file / server_tls_key_file ---------------------------------------


CERT_HBA = "hostssl all %s 127.0.0.0/8 cert\n" % fx.APP_USER


@contextlib.contextmanager
def pods_with_cert_auth(service, certs, pods):
    """On top of pods_with_ssl: the pods trust the test CA for client
    certificates, and user app logs in over TLS by its certificate alone
    (CN=app), never by password."""
    pods = list(pods)
    with pods_with_ssl(service, certs, pods):
        try:
            for i in pods:
                datadir = service.pods[i].datadir
                path = os.path.join(datadir, "root.crt")
                shutil.copyfile(certs.ca, path)
                fx._chown_postgres(path)
                hba = os.path.join(datadir, "pg_hba.conf")
                with open(hba) as f:
                    text = f.read()
                with open(hba, "w") as f:
                    f.write(CERT_HBA + text)
                service.psql(i, "ALTER SYSTEM SET ssl_ca_file = 'root.crt'", dbname="postgres")
                service.psql(i, "SELECT pg_reload_conf()", dbname="postgres")
            time.sleep(1)  # the reload is asynchronous
            yield
        finally:
            for i in pods:
                try:
                    hba = os.path.join(service.pods[i].datadir, "pg_hba.conf")
                    with open(hba) as f:
                        text = f.read()
                    with open(hba, "w") as f:
                        f.write(text.replace(CERT_HBA, "", 1))
                    service.psql(i, "ALTER SYSTEM RESET ssl_ca_file", dbname="postgres")
                    service.psql(i, "SELECT pg_reload_conf()", dbname="postgres")
                except Exception as e:  # noqa: BLE001 - keep restoring the others
                    print("could not restore pod %d: %s" % (i, e))


def backend_client_dns(service, i):
    """The client certificates (subject DNs) of pgfleet's server connections
    (user app, database app) on pod i, from the pod's pg_stat_ssl."""
    out = service.psql(
        i, "SELECT coalesce(s.client_dn, '-') FROM pg_stat_ssl s JOIN pg_stat_activity a "
           "USING (pid) WHERE a.usename = 'app' AND a.datname = 'app' "
           "AND a.backend_type = 'client backend' AND a.application_name <> 'pgfleet-health'",
        dbname="postgres")
    return [l for l in out.splitlines() if l]


def test_server_sees_pgfleets_client_certificate(service, pgfleet, certs):
    n = len(service.pods)
    with pods_with_cert_auth(service, certs, range(n)):
        fleet = pgfleet(settings={"server_tls_sslmode": "require",
                                  "server_tls_cert_file": certs.client_crt,
                                  "server_tls_key_file": certs.client_key})
        # health checks (libpq) show the same certificate
        assert fleet.wait_all_up(service.addrs), fleet.log_tail()
        assert spread_queries(fleet) == {p.addr for p in service.pods}
        for i in range(n):
            dns = backend_client_dns(service, i)
            assert dns and all(d == "/CN=%s" % fx.APP_USER for d in dns), (i, dns)


def test_without_the_certificate_the_server_refuses(service, pgfleet, certs):
    with pods_with_cert_auth(service, certs, range(len(service.pods))):
        fleet = pgfleet(settings={"server_tls_sslmode": "require", "query_wait_timeout": 3})
        with pytest.raises(psycopg.Error):
            with fleet.connect() as conn:
                conn.execute("SELECT 1")
        fleet.wait_log(r"replica down.*certificate")


def test_certificate_without_key_is_refused(tmp_path, certs):
    ini = tmp_path / "p.ini"
    ini.write_text("[databases]\napp = host=127.0.0.1\n[pgfleet]\nauth_type = trust\n"
                   "server_tls_cert_file = %s\n" % certs.client_crt)
    env = {k: v for k, v in os.environ.items() if not k.startswith("PGFLEET_")}
    binary = os.environ.get("PGFLEET_BIN") or os.path.join(fx.REPO, "build", "pgfleet")
    p = subprocess.run([binary, "--check", str(ini)], capture_output=True, text=True, env=env,
                       timeout=20)
    assert p.returncode == 1
    assert p.stderr.strip() == "%s:5: key 'server_tls_cert_file': needs server_tls_key_file" % ini


# ---- PgBouncer's TLS knobs ---------------------------------------------------------------


def s_client(fleet, *args):
    p = subprocess.run(["openssl", "s_client", "-connect", "%s:%d" % (fleet.host, fleet.port),
                        "-starttls", "postgres"] + list(args),
                       input="", capture_output=True, text=True, timeout=30)
    return p.returncode, p.stdout + p.stderr


def test_client_tls_protocols_and_ciphers(service, pgfleet, certs):
    fleet = pgfleet(settings=certs.client_settings("require", client_tls_protocols="tlsv1.3"))
    rc, out = s_client(fleet)
    assert rc == 0 and re.search(r"Protocol\s*:\s*TLSv1\.3|TLSv1\.3,", out), out
    rc, out = s_client(fleet, "-tls1_2")
    assert rc != 0, out

    cipher = "ECDHE-ECDSA-AES128-GCM-SHA256"  # the certificates' keys are EC
    fleet = pgfleet(settings=certs.client_settings("require", client_tls_protocols="tlsv1.2",
                                                   client_tls_ciphers=cipher))
    rc, out = s_client(fleet)
    assert rc == 0 and re.search(r"Cipher\s*(is|:)\s*%s" % cipher, out), out
    rc, out = s_client(fleet, "-cipher", "ECDHE-ECDSA-AES256-GCM-SHA384")
    assert rc != 0, out
    with fleet.connect(sslmode="require") as conn:  # and libpq gets in
        assert conn.execute("SELECT 1").fetchone() == (1,)


def test_server_tls_protocols(service, pgfleet, certs):
    with pods_with_ssl(service, certs, range(len(service.pods))):
        fleet = pgfleet(settings={"server_tls_sslmode": "require",
                                  "server_tls_protocols": "tlsv1.2"})
        assert fleet.wait_all_up(service.addrs), fleet.log_tail()
        spread_queries(fleet)
        for i in range(len(service.pods)):
            out = service.psql(
                i, "SELECT DISTINCT s.version FROM pg_stat_ssl s JOIN pg_stat_activity a "
                   "USING (pid) WHERE a.usename = 'app' AND a.datname = 'app' "
                   "AND a.backend_type = 'client backend'", dbname="postgres")
            assert out.splitlines() == ["TLSv1.2"], (i, out)


def test_tls_knobs_checked_by_check(tmp_path):
    ini = tmp_path / "p.ini"
    ini.write_text("[databases]\napp = host=127.0.0.1\n[pgbouncer]\nauth_type = trust\n"
                   "client_tls_protocols = all\nserver_tls_ciphers = NOT-A-CIPHER\n")
    env = {k: v for k, v in os.environ.items() if not k.startswith("PGFLEET_")}
    binary = os.environ.get("PGFLEET_BIN") or os.path.join(fx.REPO, "build", "pgfleet")
    p = subprocess.run([binary, "--check", str(ini)], capture_output=True, text=True, env=env,
                       timeout=20)
    assert p.returncode == 1
    assert p.stderr.strip().splitlines() == [
        "%s:5: key 'client_tls_protocols': 'all': pgfleet speaks TLS 1.2 and 1.3 only "
        "(secure, tlsv1.2, tlsv1.3)" % ini,
        "%s:6: key 'server_tls_ciphers': OpenSSL does not accept 'NOT-A-CIPHER' as a cipher "
        "list" % ini]
