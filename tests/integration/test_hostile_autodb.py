"""Issue 15, item 2: databases a "*" entry creates.

A database from "*" is created only after its client authenticated, at most
max_auto_databases of them exist in the process (every worker together),
one without a client for autodb_idle_timeout goes with its pools, servers,
checks, replicas and metric series, and its health check logs in as the
user whose login created it, never as an unrelated auth_file user.
"""

import csv
import io
import os
import random
import socket
import string
import struct
import subprocess

import psycopg
import pytest

import fixture as fx

ADMIN, ADMIN_PW = "admin", "admin-secret"
# The first auth_file user: the old health check logged in as it to any
# name a client invented.  It has no role on the pods, so a login attempt
# as it shows in their logs as "first_user@<database>".
FIRST, FIRST_PW = "first_user", "first-secret"
USERS = {FIRST: FIRST_PW, fx.APP_USER: fx.APP_PASSWORD, ADMIN: ADMIN_PW}
WILDCARD = {"*": "host=%s port=%d" % (fx.SVC_NAME, fx.PG_PORT)}
BASE = {"admin_users": ADMIN, "health_check_period": 1, "auth_type": "plain"}


def fresh(prefix):
    """A database name no earlier test (nor pod log line) has used."""
    return prefix + "_" + "".join(random.choice(string.ascii_lowercase) for _ in range(10))


def show(fleet, what):
    env = dict(os.environ, PGPASSWORD=ADMIN_PW, PGCONNECT_TIMEOUT="10")
    for k in ("PGHOST", "PGPORT", "PGUSER", "PGDATABASE", "PGSERVICE"):
        env.pop(k, None)
    p = subprocess.run([os.path.join(fx.PG_BIN, "psql"), "-X", "--csv", "-v", "ON_ERROR_STOP=1",
                        "-h", fleet.host, "-p", str(fleet.port), "-U", ADMIN, "-d", "pgfleet",
                        "-c", "SHOW " + what],
                       env=env, capture_output=True, text=True, timeout=60)
    assert p.returncode == 0, p.stderr
    rows = list(csv.reader(io.StringIO(p.stdout)))
    return [dict(zip(rows[0], r)) for r in rows[1:]]


def db_names(fleet):
    return {r["name"] for r in show(fleet, "DATABASES")}


def replica_dbs(fleet):
    return {r["database"] for r in show(fleet, "REPLICAS")}


def raw_login(fleet, user, password, dbname):
    """A login over the raw protocol, answering cleartext or giving up at
    any other request: the SQLSTATE of the ErrorResponse, "" when logged
    in, "gave up" or "closed"."""
    return raw_error(fleet, user, password, dbname)[0]


def raw_error(fleet, user, password, dbname):
    """(SQLSTATE or "" / "gave up" / "closed", message) of a raw login."""
    s = socket.create_connection((fleet.host, fleet.port), timeout=10)
    try:
        params = b"user\x00%s\x00database\x00%s\x00\x00" % (user.encode(), dbname.encode())
        s.sendall(struct.pack("!II", 8 + len(params), 196608) + params)
        buf = b""
        while True:
            while len(buf) < 5 or len(buf) < 1 + struct.unpack("!I", buf[1:5])[0]:
                chunk = s.recv(65536)
                if not chunk:
                    return "closed", ""
                buf += chunk
            n = 1 + struct.unpack("!I", buf[1:5])[0]
            msg, buf = buf[:n], buf[n:]
            if msg[0:1] == b"R":
                code = struct.unpack("!I", msg[5:9])[0]
                if code == 3:
                    pw = password.encode() + b"\x00"
                    s.sendall(b"p" + struct.pack("!I", 4 + len(pw)) + pw)
                elif code != 0:
                    return "gave up", ""  # SCRAM/md5: an attacker without the password stops here
            elif msg[0:1] == b"E":
                fields = dict((f[0:1], f[1:]) for f in msg[5:].split(b"\x00") if f)
                return fields[b"C"].decode(), fields[b"M"].decode()
            elif msg[0:1] == b"Z":
                return "", ""
    finally:
        s.close()


def login_error(fleet, dbname, user=fx.APP_USER, password=fx.APP_PASSWORD):
    """(sqlstate, message) of a refused login (auth_type = plain), ("", "")
    if it logged in."""
    return raw_error(fleet, user, password, dbname)


def pod_logs(service):
    text = ""
    for i in range(len(service.addrs)):
        with open(service.pod(i).logfile, errors="replace") as f:
            text += f.read()
    return text


def wait_checked(fleet, service, dbname):
    """Every pod of dbname passed a health check in every worker that has it."""
    assert fx.wait_until(lambda: all(
        ('msg="replica up" db=%s addr=%s:%d ' % (dbname, a, fx.PG_PORT)) in fleet.log_text()
        for a in service.addrs), 30), fleet.log_tail()


# ---------------------------------------------------------------------------


@pytest.mark.parametrize("auth_type", ["plain", "scram-sha-256"])
def test_unauthenticated_startups_create_nothing(service, pgfleet, auth_type):
    """300 startup packets with fresh names from an unknown user or with a
    wrong password: no database, replica or health check is created, and no
    login for those names reaches PostgreSQL."""
    fleet = pgfleet(settings=dict(BASE, auth_type=auth_type), users=dict(USERS),
                    databases=dict(WILDCARD))
    before = db_names(fleet)
    names = [fresh("hostile") for _ in range(300)]
    for i, name in enumerate(names):
        user, pw = (("nobody%d" % i, "x") if i % 2 else (fx.APP_USER, "wrong"))
        got = raw_login(fleet, user, pw, name)
        assert got in (("28P01",) if auth_type == "plain" else ("gave up",)), (name, got)
    # A real login afterwards: its database's checks ran after anything the
    # 300 startups would have set off.
    good = fresh("postgres")  # the servers lack it: the server's own 3D000
    with pytest.raises(psycopg.OperationalError, match="does not exist"):
        fleet.connect(dbname=good)
    with fleet.connect(dbname="postgres") as conn:
        assert conn.execute("SELECT 1").fetchone() == (1,)
    wait_checked(fleet, service, "postgres")
    assert db_names(fleet) == before | {"postgres", good}
    assert not any(n in replica_dbs(fleet) for n in names)
    created = [l for l in fleet.log_text().splitlines() if "hostile_" in l and (
        "replica added" in l or "database created" in l or "health check" in l)]
    assert not created, created[:3]
    pods = pod_logs(service)
    assert not any("@" + n in pods for n in names)
    _, metrics = fleet.http_get("/metrics")
    assert "hostile_" not in metrics
    assert fleet.running


def test_max_auto_databases(service, pgfleet):
    """Up to max_auto_databases names from "*"; the next name gets 53400
    naming the setting (logged once, without query text); the others keep
    working.  Counted for the whole process, whatever the workers."""
    fleet = pgfleet(settings=dict(BASE, max_auto_databases=3), users=dict(USERS),
                    databases=dict(WILDCARD))
    held = []
    try:
        for name in ("postgres", "template1", "app"):
            # several connections each, so that with workers = N every
            # worker is likely to hold every name
            for _ in range(2 * fleet.workers):
                held.append(fleet.connect(dbname=name))
        over = fresh("over")
        for _ in range(2 * fleet.workers):
            sqlstate, msg = login_error(fleet, over)
            assert sqlstate == "53400", msg
            assert "max_auto_databases" in msg
        # a known name still logs in; those connected keep working
        assert login_error(fleet, "template1") == ("", "")
        for conn in held:
            assert conn.execute("SELECT current_database()").fetchone()[0] in (
                "postgres", "template1", "app")
        assert over not in db_names(fleet)
        refused = [l for l in fleet.log_text().splitlines()
                   if over in l and "max_auto_databases" in l]
        assert len(refused) == 2 * fleet.workers, refused  # one line per refused client
        # trust: every client "authenticates"; the cap is what holds
    finally:
        for conn in held:
            conn.close()


def test_max_auto_databases_with_trust(service, pgfleet):
    fleet = pgfleet(settings=dict(BASE, max_auto_databases=2, auth_type="trust"),
                    users=dict(USERS), databases=dict(WILDCARD))
    before = db_names(fleet)
    results = [raw_login(fleet, "nobody", "", fresh("trust")) for _ in range(50)]
    # the first two are created (the servers refuse the unknown role), the
    # rest refused by the cap
    assert results.count("53400") >= 48, results
    assert len(db_names(fleet) - before) <= 2


def test_autodb_idle_timeout(service, pgfleet):
    """An auto database without a client for autodb_idle_timeout goes from
    SHOW DATABASES, SHOW REPLICAS and /metrics; a new login makes it again;
    one with a connected client stays."""
    fleet = pgfleet(settings=dict(BASE, autodb_idle_timeout=2), users=dict(USERS),
                    databases=dict(WILDCARD))
    keep = fleet.connect(dbname="template1")
    try:
        with fleet.connect(dbname="postgres") as conn:
            assert conn.execute("SELECT 1").fetchone() == (1,)
        wait_checked(fleet, service, "postgres")
        assert "postgres" in replica_dbs(fleet)
        assert fx.wait_until(lambda: "postgres" not in db_names(fleet), 60), fleet.log_tail()
        assert fx.wait_until(lambda: "postgres" not in replica_dbs(fleet), 30)
        fleet.wait_every_worker('msg="database removed" db=postgres ')
        _, metrics = fleet.http_get("/metrics")
        assert 'database="postgres"' not in metrics
        # the connected client's database stays, and its client works
        assert "template1" in db_names(fleet)
        assert 'database="template1"' in metrics
        assert keep.execute("SELECT current_database()").fetchone()[0] == "template1"
        # a new login creates it again
        with fleet.connect(dbname="postgres") as conn:
            assert conn.execute("SELECT current_database()").fetchone()[0] == "postgres"
        assert "postgres" in db_names(fleet)
        assert "template1" in db_names(fleet)
        assert keep.execute("SELECT 1").fetchone() == (1,)
    finally:
        keep.close()
    assert fleet.running


def test_health_check_user_of_an_auto_database(service, pgfleet):
    """The check of a database from "*" logs in as the user whose login
    created it, never as the first auth_file user."""
    fleet = pgfleet(settings=dict(BASE), users=dict(USERS), databases=dict(WILDCARD))
    invented = fresh("invented")
    # an unknown user's made-up name: nothing is created, nothing checked
    assert raw_login(fleet, "nobody", "x", invented) == "28P01"
    with fleet.connect(dbname="postgres") as conn:
        wait_checked(fleet, service, "postgres")
        users = {r[0] for r in conn.execute(
            "SELECT usename FROM pg_stat_activity WHERE application_name = 'pgfleet-health' "
            "AND datname = 'postgres'").fetchall()}
        assert users == {fx.APP_USER}, users
    pods = pod_logs(service)
    assert "@" + invented not in pods
    assert FIRST + "@" not in pods
    assert not [l for l in fleet.log_text().splitlines()
                if invented in l and ("replica" in l or "health check" in l)]


def test_reload_keeps_auto_databases(service, pgfleet):
    """RELOAD with auto databases: they keep serving, an exact entry for one
    takes it out of the count, and the count holds after."""
    fleet = pgfleet(settings=dict(BASE, max_auto_databases=2), users=dict(USERS),
                    databases=dict(WILDCARD))
    a = fleet.connect(dbname="postgres")
    b = fleet.connect(dbname="template1")
    try:
        assert login_error(fleet, "app")[0] == "53400"
        # "postgres" gets its own entry: no longer from "*", room for one
        with open(fleet.ini_path) as f:
            ini = f.read()
        ini = ini.replace("[databases]\n", "[databases]\npostgres = host=%s port=%d\n"
                          % (fx.SVC_NAME, fx.PG_PORT))
        with open(fleet.ini_path, "w") as f:
            f.write(ini)
        fleet.reload()
        fleet.wait_every_worker('msg="config reloaded"')
        assert a.execute("SELECT current_database()").fetchone()[0] == "postgres"
        assert b.execute("SELECT current_database()").fetchone()[0] == "template1"
        assert login_error(fleet, "app") == ("", "")
        assert login_error(fleet, fresh("third"))[0] == "53400"
    finally:
        a.close()
        b.close()
    assert fleet.running
