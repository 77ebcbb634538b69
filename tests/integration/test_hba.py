"""auth_type = hba (issue 18 item 5): auth_hba_file in pg_hba.conf syntax
picks each client's authentication method, by how it connects (TCP, the
Unix socket, TLS), its address, database and user; the first matching
record decides, no match is refused with PostgreSQL's words.  RELOAD and
SIGHUP read the file again; a file that does not parse is refused whole and
the old rules stay.

Real clients (psycopg/libpq) log in; a raw StartupMessage shows which
authentication request pgfleet answers with (md5, cleartext or SASL), which
libpq does not tell."""

import os
import socket
import struct
import subprocess
import time

import psycopg
import pytest

import fixture as fx
from test_admin import ADMIN, ADMIN_PW, admin_conn

USERS = {fx.APP_USER: fx.APP_PASSWORD, ADMIN: ADMIN_PW}
APP_DB = "host=%s port=%d dbname=%s" % (fx.SVC_NAME, fx.PG_PORT, fx.APP_DB)
# Three pgfleet database names for the same PostgreSQL database: per-database rules.
DATABASES = {"app": APP_DB, "app_md5": APP_DB, "app_pw": APP_DB}

AUTH_OK, AUTH_CLEARTEXT, AUTH_MD5, AUTH_SASL = 0, 3, 5, 10


def _recvn(s, n):
    buf = b""
    while len(buf) < n:
        chunk = s.recv(n - len(buf))
        if not chunk:
            raise ConnectionError("closed after %d of %d bytes" % (len(buf), n))
        buf += chunk
    return buf


def auth_request(fleet, user, dbname, unix=None):
    """The first answer to a StartupMessage: the authentication request's
    code, or ("E", sqlstate, message)."""
    if unix:
        s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        s.settimeout(5)
        s.connect(unix)
    else:
        s = socket.create_connection((fleet.host, fleet.port), timeout=5)
    try:
        body = (struct.pack("!I", 196608) + b"user\0" + user.encode() + b"\0database\0"
                + dbname.encode() + b"\0\0")
        s.sendall(struct.pack("!I", len(body) + 4) + body)
        kind = _recvn(s, 1)
        n = struct.unpack("!I", _recvn(s, 4))[0]
        payload = _recvn(s, n - 4)
    finally:
        s.close()
    if kind == b"R":
        return struct.unpack("!I", payload[:4])[0]
    assert kind == b"E", kind
    fields = {f[:1]: f[1:].decode() for f in payload.split(b"\0") if f}
    return ("E", fields[b"C"], fields[b"M"])


def start(pgfleet, tmp_path, hba_text, settings=None, databases=None):
    hba = tmp_path / "pg_hba.conf"
    hba.write_text(hba_text)
    s = {"auth_type": "hba", "auth_hba_file": str(hba), "admin_users": ADMIN}
    s.update(settings or {})
    fleet = pgfleet(settings=s, users=dict(USERS), databases=databases or DATABASES)
    fleet.hba_path = str(hba)
    return fleet


def login(fleet, user=fx.APP_USER, password=fx.APP_PASSWORD, dbname="app", **kw):
    """One query through a real client; the error if the login fails."""
    try:
        with fleet.connect(user=user, password=password, dbname=dbname, **kw) as c:
            return c.execute("SELECT 1").fetchone()[0]
    except psycopg.OperationalError as e:
        return e


def refused(err, sqlstate, text):
    assert isinstance(err, psycopg.OperationalError), err
    assert text in str(err), str(err)
    if err.sqlstate is not None:  # libpq keeps the FATAL's fields
        assert err.sqlstate == sqlstate, (err.sqlstate, str(err))
    return True


def wait_reloaded(fleet, before, timeout=10):
    """Every worker logged one more "config reloaded" or "config reload
    refused" than `before` (the count before the reload)."""
    def done():
        log = fleet.log_text()
        return (log.count('msg="config reloaded"') + log.count('msg="config reload refused"')
                >= before + fleet.workers)
    assert fx.wait_until(done, timeout), fleet.log_tail()


def reload_count(fleet):
    log = fleet.log_text()
    return log.count('msg="config reloaded"') + log.count('msg="config reload refused"')


# ---- the methods ---------------------------------------------------------------------


def test_trust_reject_and_no_match(service, pgfleet, tmp_path):
    fleet = start(pgfleet, tmp_path,
                  "# TYPE  DATABASE  USER    ADDRESS        METHOD\n"
                  "host    app       ghost   127.0.0.1/32   reject\n"
                  "host    app       app     127.0.0.1/32   trust\n"
                  "host    pgfleet   admin   127.0.0.1/32   reject\n")
    # trust: any password, or none
    assert login(fleet, password="wrong") == 1
    assert login(fleet, password=None) == 1
    assert auth_request(fleet, "app", "app") == AUTH_OK
    # reject, as PostgreSQL words it
    assert refused(login(fleet, user="ghost"), "28000",
                   'pg_hba.conf rejects connection for host "127.0.0.1", user "ghost", '
                   'database "app", no encryption')
    assert auth_request(fleet, "ghost", "app") == (
        "E", "28000", 'pg_hba.conf rejects connection for host "127.0.0.1", user "ghost", '
        'database "app", no encryption')
    assert refused(login(fleet, user=ADMIN, password=ADMIN_PW, dbname="pgfleet"), "28000",
                   'pg_hba.conf rejects connection for host "127.0.0.1", user "admin", '
                   'database "pgfleet"')
    # no record matches: refused
    assert auth_request(fleet, "nobody", "app") == (
        "E", "28000", 'no pg_hba.conf entry for host "127.0.0.1", user "nobody", '
        'database "app", no encryption')
    assert refused(login(fleet, dbname="app_md5"), "28000",
                   'no pg_hba.conf entry for host "127.0.0.1", user "app", '
                   'database "app_md5", no encryption')
    # the log names the record (never a password)
    fleet.wait_log(r'msg="login refused by auth_hba_file" client=127\.0\.0\.1:\d+ user=ghost '
                   r'db=app rule=%s:2' % fleet.hba_path)
    fleet.wait_log(r'msg="login refused by auth_hba_file" .*user=nobody db=app rule=none')
    assert fx.APP_PASSWORD not in fleet.log_text()


def test_password_methods_per_database_and_user(service, pgfleet, tmp_path):
    fleet = start(pgfleet, tmp_path,
                  "host app_md5 all            127.0.0.1/32 md5\n"
                  "host app_pw  all            127.0.0.1/32 password\n"
                  "host app     app            127.0.0.1/32 scram-sha-256\n"
                  "host pgfleet admin          127.0.0.1/32 md5\n"
                  "host all     all            0.0.0.0/0    reject\n")
    assert auth_request(fleet, "app", "app_md5") == AUTH_MD5
    assert auth_request(fleet, "app", "app_pw") == AUTH_CLEARTEXT
    assert auth_request(fleet, "app", "app") == AUTH_SASL
    assert auth_request(fleet, "admin", "pgfleet") == AUTH_MD5
    # the same user, another database: the last record
    assert auth_request(fleet, "admin", "app")[:2] == ("E", "28000")
    # real clients: the right password logs in, a wrong one does not
    for db in ("app_md5", "app_pw", "app"):
        assert login(fleet, dbname=db) == 1, db
        assert refused(login(fleet, dbname=db, password="wrong"), "28P01",
                       'password authentication failed for user "app"'), db
    with admin_conn(fleet) as a:
        assert a.execute("SHOW VERSION").fetchone()
    assert refused(login(fleet, user=ADMIN, password="wrong", dbname="pgfleet"), "28P01",
                   'password authentication failed for user "admin"')


def test_unix_socket_local_records(service, pgfleet, tmp_path):
    sockdir = tempfile_dir(tmp_path)
    fleet = start(pgfleet, tmp_path,
                  "local all app trust\n"
                  "local all all reject\n"
                  "host  all all 127.0.0.1/32 scram-sha-256\n",
                  settings={"unix_socket_dir": sockdir})
    path = os.path.join(sockdir, ".s.PGSQL.%d" % fleet.port)
    assert fx.wait_until(lambda: os.path.exists(path), 10)
    # over the socket: local records; over TCP: host records
    assert login(fleet, host=sockdir, password="wrong") == 1
    assert auth_request(fleet, "app", "app", unix=path) == AUTH_OK
    assert auth_request(fleet, "admin", "pgfleet", unix=path) == (
        "E", "28000", 'pg_hba.conf rejects connection for host "[local]", user "admin", '
        'database "pgfleet", no encryption')
    assert auth_request(fleet, "app", "app") == AUTH_SASL
    assert login(fleet) == 1
    assert refused(login(fleet, password="wrong"), "28P01", "password authentication failed")


def test_peer_on_the_unix_socket(service, pgfleet, tmp_path):
    """peer: the OS user at the other end of the socket (SO_PEERCRED) must
    have the name the client logs in with (from /etc/passwd, read at load).
    The admin console needs no server, so the OS user can log in to it."""
    import pwd
    me = pwd.getpwuid(os.getuid()).pw_name
    sockdir = tempfile_dir(tmp_path)
    fleet = start(pgfleet, tmp_path,
                  "local pgfleet all peer\n"
                  "local all     all reject\n",
                  settings={"unix_socket_dir": sockdir, "admin_users": "%s,%s" % (ADMIN, me)})
    path = os.path.join(sockdir, ".s.PGSQL.%d" % fleet.port)
    assert fx.wait_until(lambda: os.path.exists(path), 10)
    assert auth_request(fleet, me, "pgfleet", unix=path) == AUTH_OK
    with psycopg.connect(fleet.dsn(me, None, "pgfleet", host=sockdir), autocommit=True) as c:
        assert c.execute("SHOW VERSION").fetchone()
    other = ADMIN if me != ADMIN else fx.APP_USER
    assert auth_request(fleet, other, "pgfleet", unix=path) == (
        "E", "28000", 'peer authentication failed for user "%s"' % other)
    fleet.wait_log(r'msg="login refused by auth_hba_file" .*user=%s db=pgfleet rule=%s:1'
                   % (other, fleet.hba_path))


def test_peer_and_cert_with_a_user_name_map(service, pgfleet, tmp_path):
    """map= with auth_ident_file: the OS user (peer) or the certificate's
    CommonName (cert) may log in as the users its map lists."""
    import pwd
    from test_tls import Certs
    me = pwd.getpwuid(os.getuid()).pw_name
    certs = Certs(tmp_path)
    ident = tmp_path / "pg_ident.conf"
    ident.write_text("# MAP   SYSTEM-USER   DATABASE-USER\n"
                     "local   %s            admin\n"
                     "certs   app           admin\n" % me)
    sockdir = tempfile_dir(tmp_path)
    fleet = start(pgfleet, tmp_path,
                  "local   pgfleet all peer map=local\n"
                  "hostssl pgfleet all 127.0.0.1/32 cert map=certs\n"
                  "hostssl all     all 127.0.0.1/32 cert\n",
                  settings={"unix_socket_dir": sockdir, "auth_ident_file": str(ident),
                            "client_tls_sslmode": "verify-ca",
                            "client_tls_cert_file": certs.server_crt,
                            "client_tls_key_file": certs.server_key,
                            "client_tls_ca_file": certs.ca})
    path = os.path.join(sockdir, ".s.PGSQL.%d" % fleet.port)
    assert fx.wait_until(lambda: os.path.exists(path), 10)
    # peer: the OS user may be admin (the map says so), not app
    with psycopg.connect(fleet.dsn(ADMIN, None, "pgfleet", host=sockdir),
                         autocommit=True) as c:
        assert c.execute("SHOW VERSION").fetchone()
    if me != fx.APP_USER:
        assert auth_request(fleet, fx.APP_USER, "pgfleet", unix=path) == (
            "E", "28000", 'peer authentication failed for user "app"')
    # cert: app's certificate may be admin on the console, and app elsewhere
    tls = dict(sslmode="require", sslcert=certs.client_crt, sslkey=certs.client_key)
    with psycopg.connect(fleet.dsn(ADMIN, None, "pgfleet", **tls), autocommit=True) as c:
        assert c.execute("SHOW VERSION").fetchone()
    assert login(fleet, password=None, **tls) == 1
    assert refused(login(fleet, user=ADMIN, password=None, dbname="app", **tls), "28000",
                   'certificate authentication failed for user "admin"')


def tempfile_dir(tmp_path):
    """A short directory for the socket (sun_path holds 107 bytes)."""
    import tempfile
    d = tempfile.mkdtemp(prefix="hba-", dir="/tmp")
    os.chmod(d, 0o755)
    return d


# ---- reload ---------------------------------------------------------------------------


def test_reload_reads_the_file_again(service, pgfleet, tmp_path):
    fleet = start(pgfleet, tmp_path,
                  "host pgfleet admin 127.0.0.1/32 md5\n"
                  "host app    app   127.0.0.1/32 reject\n")
    assert refused(login(fleet), "28000", "pg_hba.conf rejects connection")
    # RELOAD from the console (the file changed, not the ini)
    with open(fleet.hba_path, "w") as f:
        f.write("host pgfleet admin 127.0.0.1/32 md5\n"
                "host app    app   127.0.0.1/32 trust\n")
    before = reload_count(fleet)
    with admin_conn(fleet) as a:
        a.execute("RELOAD")
    wait_reloaded(fleet, before)
    fleet.wait_log(r'msg="config reloaded" .*changed=auth_hba_file ')
    assert login(fleet, password="wrong") == 1
    # SIGHUP
    with open(fleet.hba_path, "w") as f:
        f.write("host pgfleet admin 127.0.0.1/32 md5\n"
                "host app    app   127.0.0.1/32 md5\n")
    before = reload_count(fleet)
    fleet.reload()
    wait_reloaded(fleet, before)
    assert auth_request(fleet, "app", "app") == AUTH_MD5
    assert login(fleet) == 1
    assert refused(login(fleet, password="wrong"), "28P01", "password authentication failed")


def test_broken_file_on_reload_keeps_the_old_rules(service, pgfleet, tmp_path):
    fleet = start(pgfleet, tmp_path,
                  "host pgfleet admin 127.0.0.1/32 md5\n"
                  "host app    app   127.0.0.1/32 trust\n")
    with open(fleet.hba_path, "w") as f:
        f.write("host pgfleet admin 127.0.0.1/32 md5\n"
                "host app    app   127.0.0.1/32 reject\n"
                "host all    all   db.example.com   trust\n")
    before = reload_count(fleet)
    with admin_conn(fleet) as a:
        with pytest.raises(psycopg.Error) as e:
            a.execute("RELOAD")
    assert "RELOAD failed" in str(e.value)
    assert "%s:3: address 'db.example.com': host names are not supported" % fleet.hba_path \
        in str(e.value)
    wait_reloaded(fleet, before)
    fleet.wait_log(r'msg="config error" error="%s:3: address \'db\.example\.com\'' %
                   fleet.hba_path)
    # the old rules: trust, not the new file's reject
    assert login(fleet, password="wrong") == 1
    # a file that vanished: the same
    os.unlink(fleet.hba_path)
    before = reload_count(fleet)
    fleet.reload()
    wait_reloaded(fleet, before)
    fleet.wait_log(r'msg="config error" error="%s: cannot read: No such file or directory"'
                   % fleet.hba_path)
    assert login(fleet, password="wrong") == 1
    # SET cannot change the file (a load reads it)
    with admin_conn(fleet) as a:
        with pytest.raises(psycopg.Error):
            a.execute("SET auth_hba_file = '/etc/passwd'")


# ---- --check --------------------------------------------------------------------------


def _check(tmp_path, hba_text, extra=""):
    (tmp_path / "hba.conf").write_text(hba_text)
    ini = tmp_path / "c.ini"
    ini.write_text("[databases]\napp = host=127.0.0.1 dbname=app\n\n[pgfleet]\n"
                   "auth_type = hba\nauth_hba_file = %s\n%s" % (tmp_path / "hba.conf", extra))
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PGFLEET_", "DB_"))}
    binary = os.environ.get("PGFLEET_BIN") or os.path.join(fx.REPO, "build", "pgfleet")
    p = subprocess.run([binary, "--check", str(ini)], env=env, capture_output=True, text=True,
                       timeout=10)
    return p.returncode, p.stdout + p.stderr


def test_check_names_file_and_line(tmp_path):
    rc, out = _check(tmp_path, "local all all trust\nhost all all 10.0.0.0/8 md5\n")
    assert rc == 0, out
    rc, out = _check(tmp_path, "local all all trust\n"
                               "host all +staff all md5\n"
                               "hostgssenc all all all md5\n"
                               "host all all 127.0.0.1/32 peer\n")
    assert rc == 1, out
    hba = tmp_path / "hba.conf"
    assert "%s:2: user group '+staff' is not supported" % hba in out
    assert "%s:3: record type 'hostgssenc' is not supported" % hba in out
    assert "%s:4: method 'peer' is only for local records" % hba in out
    rc, out = _check(tmp_path, "local all all peer map=m\n")
    assert rc == 1 and "%s:1: option 'map' needs auth_ident_file" % hba in out, out
    (tmp_path / "ident.conf").write_text("m root root\nm /^(.*)$ \\1\n")
    rc, out = _check(tmp_path, "local all all peer map=m\n",
                     "auth_ident_file = %s\n" % (tmp_path / "ident.conf"))
    assert rc == 1, out
    assert "%s:2: regular expressions are not supported" % (tmp_path / "ident.conf") in out
    tls = ("client_tls_sslmode = require\nclient_tls_cert_file = /x.crt\n"
           "client_tls_key_file = /x.key\n")
    rc, out = _check(tmp_path, "hostssl all all all cert\n", tls)
    assert rc == 1 and "%s:1: method 'cert' needs client_tls_sslmode verify-ca" % hba in out
    rc, out = _check(tmp_path, "local all all trust\nhostssl all all all md5\n")
    assert rc == 1, out
    assert "%s:2: hostssl record cannot match because client_tls_sslmode is disable" % hba \
        in out
    rc, out = _check(tmp_path, "local all all trust\nhostssl all all all md5\n", tls)
    assert rc == 0, out


# ---- cert -----------------------------------------------------------------------------


def test_cert_method(service, pgfleet, tmp_path):
    from test_tls import Certs
    certs = Certs(tmp_path)
    fleet = start(pgfleet, tmp_path,
                  "hostssl all app   127.0.0.1/32 cert\n"
                  "hostssl all admin 127.0.0.1/32 cert\n",
                  settings={"client_tls_sslmode": "verify-ca",
                            "client_tls_cert_file": certs.server_crt,
                            "client_tls_key_file": certs.server_key,
                            "client_tls_ca_file": certs.ca})
    tls = dict(sslmode="require", sslcert=certs.client_crt, sslkey=certs.client_key)
    # the certificate's CommonName is the user: no password asked
    assert login(fleet, password=None, **tls) == 1
    # another user with app's certificate
    assert refused(login(fleet, user=ADMIN, password=None, dbname="pgfleet", **tls), "28000",
                   'certificate authentication failed for user "admin"')
    # no record for this user: PostgreSQL's words, over TLS
    assert refused(login(fleet, user="nobody", password=None, **tls), "28000",
                   'no pg_hba.conf entry for host "127.0.0.1", user "nobody", database "app", '
                   'SSL encryption')
