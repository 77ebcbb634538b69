"""The admin console as PgBouncer 1.25 has it (issue 18 item 6): the login
rule for the user `pgbouncer` on the Unix socket, `logfile` (and its
reopening for log rotation), `SET` of the settings PgBouncer changes at run
time, `KILL_CLIENT`, `KILL` of a database that does not exist, and the
queries prometheus-community/pgbouncer_exporter runs, parsed as it parses
them.  Each with psql and psycopg, failure paths too, and with workers = 2
where the answer is made of several workers' parts."""

import csv
import io
import os
import re
import signal
import subprocess
import tempfile
import time

import psycopg
import pytest

import fixture as fx
from test_admin import (ADMIN, ADMIN_PW, HEADERS, SETTINGS, STATS, STATS_PW, USERS,
                        admin_conn, app_conn, psql, show)

BINARY = os.environ.get("PGFLEET_BIN") or os.path.join(fx.REPO, "build", "pgfleet")


def columns(cur):
    return [d.name for d in cur.description]


def rows_by_name(cur):
    cols = columns(cur)
    return [dict(zip(cols, r)) for r in cur.fetchall()]


# ---- prometheus-community/pgbouncer_exporter ------------------------------------------

# What its collector.go reads, by column name (metricMaps, listsMap,
# configMap and queryVersion).  A column it reads that a SHOW lacks is a
# metric that silently disappears; the test asserts each is there.
EXPORTER_COLUMNS = {
    "databases": ["name", "host", "port", "database", "force_user", "pool_size",
                  "reserve_pool", "pool_mode", "max_connections", "current_connections",
                  "paused", "disabled"],
    "stats_totals": ["database", "query_count", "query_time", "bytes_received", "bytes_sent",
                     "wait_time", "xact_count", "xact_time", "client_parse_count",
                     "server_parse_count", "bind_count"],
    "pools": ["database", "user", "cl_active", "cl_active_cancel_req", "cl_waiting",
              "cl_waiting_cancel_req", "sv_active", "sv_active_cancel", "sv_being_canceled",
              "sv_idle", "sv_used", "sv_tested", "sv_login", "maxwait"],
}
# Of its labels, the ones it converts by type: text, int or NULL only.
EXPORTER_LABELS = {"databases": ["name", "host", "port", "database", "force_user", "pool_mode"],
                   "stats_totals": ["database"], "pools": ["database", "user"]}
EXPORTER_LISTS = ["databases", "users", "pools", "free_clients", "used_clients",
                  "login_clients", "free_servers", "used_servers", "dns_names", "dns_zones",
                  "dns_queries"]
EXPORTER_CONFIG = ["max_client_conn", "max_user_connections"]


def as_float(value):
    """The exporter's dbToFloat64: numbers, numeric text; NULL is NaN (ok)."""
    if value is None:
        return float("nan")
    return float(value)


def scrape_like_the_exporter(conn):
    """Runs the exporter's queries on one connection, in its order, and
    parses each answer the way collector.go does; returns the metrics."""
    metrics = {}
    # getDB: its ping is SHOW STATS.
    conn.execute("SHOW STATS").fetchall()
    # queryVersion: exactly one column named version; the value is a label.
    cur = conn.execute("SHOW VERSION;")
    assert columns(cur) == ["version"]
    [(version,)] = cur.fetchall()
    assert isinstance(version, str) and version
    metrics["version_info"] = version
    # queryShowLists: exactly two columns, items parsed as a float.
    cur = conn.execute("SHOW LISTS;")
    assert len(columns(cur)) == 2
    lists = {name: float(items) for name, items in cur.fetchall()}
    for name in EXPORTER_LISTS:
        assert name in lists, "SHOW LISTS has no %r row" % name
        metrics["lists_" + name] = lists[name]
    # queryShowConfig: 3 or 4 columns; the values it exports parse as floats.
    cur = conn.execute("SHOW CONFIG;")
    assert len(columns(cur)) in (3, 4)
    config = {r[0]: r[1] for r in cur.fetchall()}
    # It exports the keys that are there (a missing one is skipped, not an
    # error): each must parse as a number.  max_user_connections becomes a
    # row once it is a setting (issue 18 item 2, the limits).
    assert "max_client_conn" in config
    for key in EXPORTER_CONFIG:
        if key in config:
            metrics["config_" + key] = float(config[key])
    # queryNamespaceMapping: every mapped column by name.
    for namespace, wanted in EXPORTER_COLUMNS.items():
        cur = conn.execute("SHOW %s;" % namespace)
        cols = columns(cur)
        missing = [c for c in wanted if c not in cols]
        assert not missing, "SHOW %s lacks %s (has %s)" % (namespace, missing, cols)
        for row in rows_by_name(cur):
            for label in EXPORTER_LABELS[namespace]:
                assert row[label] is None or isinstance(row[label], (str, int)), (label, row)
            for c in wanted:
                if c not in EXPORTER_LABELS[namespace]:
                    v = as_float(row[c])
                    metrics.setdefault("%s_%s" % (namespace, c), []).append(v)
    return metrics


@pytest.mark.parametrize("workers", [1, 2])
def test_pgbouncer_exporter_queries_answered_with_every_column_it_reads(service, pgfleet,
                                                                        workers):
    fleet = pgfleet(settings=dict(SETTINGS, workers=workers), users=dict(USERS))
    apps = [app_conn(fleet) for _ in range(4)]
    for a in apps:
        a.execute("SELECT 1")
    # As the exporter connects: a stats user, lib/pq's simple protocol.
    with psycopg.connect(fleet.dsn(STATS, STATS_PW, "pgbouncer"), autocommit=True) as conn:
        conn.prepare_threshold = None
        m = scrape_like_the_exporter(conn)
    assert re.fullmatch(r"PgBouncer 1\.25\.0 \(pgfleet \S+\)", m["version_info"])
    assert m["lists_databases"] >= 1 and m["lists_used_clients"] >= 5
    assert m["config_max_client_conn"] == 1000
    assert sum(m["pools_cl_active"]) >= 4
    assert sum(m["stats_totals_xact_count"]) >= 4
    assert m["databases_reserve_pool"] and all(v == 0 for v in m["databases_reserve_pool"])
    # The same through psql --csv, by name.
    for what in ("STATS", "POOLS", "DATABASES", "LISTS", "CONFIG", "VERSION"):
        header, _ = show(fleet, what, user=STATS, password=STATS_PW)
        assert header == HEADERS[what], what
    for a in apps:
        a.close()


# ---- SHOW values of the newer columns -------------------------------------------------


@pytest.mark.parametrize("workers", [1, 2])
def test_newer_columns_hold_pgfleets_values(service, pgfleet, workers):
    fleet = pgfleet(settings=dict(SETTINGS, workers=workers), users=dict(USERS))
    busy = app_conn(fleet, autocommit=False)
    busy.execute("SELECT 1")  # holds a server connection
    apps = [app_conn(fleet) for _ in range(3)]
    for a in apps:
        for _ in range(5):
            a.execute("SELECT 1")
    with admin_conn(fleet) as admin:
        clients = rows_by_name(admin.execute("SHOW CLIENTS"))
        mine = [c for c in clients if c["database"] == fx.APP_DB]
        assert len(mine) == 4
        assert all(c["replication"] == "none" for c in mine)
        assert sorted(c["state"] for c in mine) == ["active", "idle", "idle", "idle"]
        ids = [c["id"] for c in clients]
        assert len(set(ids)) == len(ids) and all(i >= 1 for i in ids), ids
        servers = rows_by_name(admin.execute("SHOW SERVERS"))
        assert servers and all(s["id"] >= 1 for s in servers)
        assert not set(s["id"] for s in servers) & set(ids)
        [db] = [d for d in rows_by_name(admin.execute("SHOW DATABASES"))
                if d["name"] == fx.APP_DB]
        assert db["current_client_connections"] == 4
        assert db["current_connections"] >= 1
        assert db["server_lifetime"] == 3600 and db["load_balance_hosts"] is None
        assert db["max_client_connections"] == 0
        users = {u["name"]: u for u in rows_by_name(admin.execute("SHOW USERS"))}
        assert users[fx.APP_USER]["current_client_connections"] == 4
        assert users[fx.APP_USER]["current_connections"] >= 1
        assert users[fx.APP_USER]["pool_mode"] is None
        [st] = [s for s in rows_by_name(admin.execute("SHOW STATS")) if s["database"] == fx.APP_DB]
        # 15 finished transactions (busy's is still open), 16 assignments
        assert st["total_server_assignment_count"] >= 16 and st["total_xact_count"] >= 15
        assert st["total_bind_count"] == 0
        totals = dict(admin.execute("SHOW TOTALS").fetchall())
        assert list(totals)[0] == "total_server_assignment_count"
        assert totals["total_xact_count"] >= st["total_xact_count"]
        assert dict(admin.execute("SHOW STATE").fetchall()) == {
            "active": "yes", "paused": "no", "suspended": "no"}
        assert admin.execute("SHOW PEERS").fetchall() == []
        assert admin.execute("SHOW PEER_POOLS").fetchall() == []
        lists = dict(admin.execute("SHOW LISTS").fetchall())
        assert lists["peers"] == 0 and lists["peer_pools"] == 0
        # Nothing is in flight: ACTIVE_SOCKETS has SOCKETS' columns, fewer rows.
        cur = admin.execute("SHOW ACTIVE_SOCKETS")
        assert columns(cur) == HEADERS["ACTIVE_SOCKETS"]
        assert len(cur.fetchall()) < len(admin.execute("SHOW SOCKETS").fetchall())
        busy.commit()  # PAUSE waits for open transactions
        assert admin.execute("PAUSE").statusmessage == "PAUSE"
        assert dict(admin.execute("SHOW STATE").fetchall())["paused"] == "yes"
        assert admin.execute("RESUME").statusmessage == "RESUME"
    for c in apps + [busy]:
        c.close()


def test_show_fds_and_suspend_are_refused_by_name(fleet_single):
    with admin_conn(fleet_single) as admin:
        for cmd in ("SHOW FDS", "SUSPEND"):
            with pytest.raises(psycopg.errors.FeatureNotSupported) as e:
                admin.execute(cmd)
            assert "%s is not supported: pgfleet has no online restart" % cmd in str(e.value)
        p = psql(fleet_single, "SHOW HELP", csv_out=False)
        assert "FDS" not in p.stderr and "SUSPEND" not in p.stderr
        assert "KILL_CLIENT <client_id>" in p.stderr and "ACTIVE_SOCKETS" in p.stderr
        # PgBouncer's wording for a command it does not know.
        with pytest.raises(psycopg.errors.SyntaxError) as e:
            admin.execute("SHOW nothing_like_this")
        assert str(e.value).startswith("invalid command 'SHOW nothing_like_this', use SHOW HELP;")


def test_shutdown_wait_for_servers_is_the_drain_wait_for_clients_refused(fleet_single):
    fleet = fleet_single
    busy = app_conn(fleet, autocommit=False)
    busy.execute("SELECT 1")
    with admin_conn(fleet) as admin:
        with pytest.raises(psycopg.errors.FeatureNotSupported) as e:
            admin.execute("SHUTDOWN WAIT_FOR_CLIENTS")
        assert "SHUTDOWN WAIT_FOR_CLIENTS is not supported" in str(e.value)
        with pytest.raises(psycopg.errors.SyntaxError):
            admin.execute("SHUTDOWN NOW")
        assert fleet.running
        assert admin.execute("shutdown wait_for_servers").statusmessage == "SHUTDOWN"
    fleet.wait_log(r'msg="shutting down" reason="admin SHUTDOWN"')
    assert busy.execute("SELECT 2").fetchone() == (2,)  # the open transaction finishes
    busy.commit()
    assert fleet.wait(timeout=20) == 0


@pytest.fixture
def fleet_single(service, pgfleet):
    return pgfleet(settings=dict(SETTINGS), users=dict(USERS))


def test_session_parameters_drivers_set_are_answered_as_pgbouncer(fleet_single):
    """SET/SHOW of the session parameters drivers touch on connect: SET is
    ignored with a NOTICE, SHOW answers (stats_users too)."""
    with psycopg.connect(fleet_single.dsn(STATS, STATS_PW, "pgbouncer"),
                         autocommit=True) as conn:
        conn.prepare_threshold = None
        notices = []
        conn.add_notice_handler(lambda d: notices.append(d.message_primary))
        for sql in ("SET client_encoding = 'UTF8'", "SET DateStyle TO 'ISO'",
                    "set timezone = 'UTC'", "SET extra_float_digits = 3"):
            assert conn.execute(sql).statusmessage == "SET", sql
        assert notices == ["SET ignored"] * 4
        cur = conn.execute("SHOW client_encoding")
        assert columns(cur) == ["client_encoding"] and cur.fetchall() == [("UTF8",)]
        assert conn.execute("SHOW TimeZone").fetchall() == [("UTC",)]
        assert conn.execute("SHOW standard_conforming_strings").fetchall() == [("on",)]
        # any other SET is still the console's, admin_users only
        with pytest.raises(psycopg.errors.InsufficientPrivilege):
            conn.execute("SET verbose = 1")


# ---- KILL_CLIENT, KILL ------------------------------------------------------------------


@pytest.mark.parametrize("workers", [1, 2])
def test_kill_client_closes_the_client_and_its_server_connection(service, pgfleet, workers):
    fleet = pgfleet(settings=dict(SETTINGS, workers=workers), users=dict(USERS))
    victim = psycopg.connect(fleet.dsn(), autocommit=False, application_name="victim")
    victim.prepare_threshold = None
    victim.execute("SELECT 1")  # in a transaction: linked to a server connection
    bystanders = [app_conn(fleet) for _ in range(3)]
    for b in bystanders:
        b.execute("SELECT 1")
    admin = admin_conn(fleet)
    [row] = [c for c in rows_by_name(admin.execute("SHOW CLIENTS"))
             if c["application_name"] == "victim"]
    linked = [s for s in rows_by_name(admin.execute("SHOW SERVERS")) if s["link"] == row["ptr"]]
    assert len(linked) == 1
    assert admin.execute("KILL_CLIENT %d" % row["id"]).statusmessage == "KILL_CLIENT"
    with pytest.raises(psycopg.OperationalError) as e:
        victim.execute("SELECT 1")
    assert "admin forced disconnect" in str(e.value)
    assert not [c for c in rows_by_name(admin.execute("SHOW CLIENTS"))
                if c["application_name"] == "victim"]
    assert not [s for s in rows_by_name(admin.execute("SHOW SERVERS"))
                if s["id"] == linked[0]["id"]]
    for b in bystanders:  # the others go on
        assert b.execute("SELECT 2").fetchone() == (2,)
    fleet.wait_log(r'msg="admin KILL_CLIENT" client=\S+ user=%s by=%s' % (fx.APP_USER, ADMIN))

    # Failures, in PgBouncer's words; the session goes on after each.
    with pytest.raises(psycopg.errors.ProtocolViolation) as e:
        admin.execute("KILL_CLIENT %d" % row["id"])  # gone now
    assert str(e.value).startswith("client not found")
    for arg in ("abc", "", "12 13", "-1"):
        with pytest.raises(psycopg.errors.ProtocolViolation) as e:
            admin.execute("KILL_CLIENT " + arg)
        assert str(e.value).startswith("invalid client pointer supplied"), arg
    own = [c for c in rows_by_name(admin.execute("SHOW CLIENTS")) if c["database"] == "pgfleet"]
    with pytest.raises(psycopg.errors.SyntaxError) as e:
        admin.execute("KILL_CLIENT %d" % own[0]["id"])
    assert "cannot end the session that runs it" in str(e.value)
    admin.close()
    # A stats user may not.
    p = psql(fleet, "KILL_CLIENT 1", user=STATS, password=STATS_PW)
    assert p.returncode != 0 and "admin access needed" in p.stderr
    for b in bystanders:
        b.close()


def test_kill_of_an_unknown_database_and_kill_of_all(fleet_single):
    fleet = fleet_single
    p = psql(fleet, "KILL nosuchdb")
    assert p.returncode != 0
    assert "ERROR:  no such database: nosuchdb" in p.stderr, p.stderr
    with admin_conn(fleet) as admin:
        # PgBouncer 1.25 answers ERROR 08P01 "no such database: X": the same
        # words and SQLSTATE, so a driver raises the same exception class.
        for cmd in ('KILL "no such db"', "PAUSE nosuchdb", "RESUME nosuchdb",
                    "RECONNECT nosuchdb", "DISABLE nosuchdb", "WAIT_CLOSE nosuchdb"):
            with pytest.raises(psycopg.errors.ProtocolViolation) as e:
                admin.execute(cmd)
            assert e.value.sqlstate == "08P01"
            assert str(e.value).startswith("no such database: "), cmd
        victim = app_conn(fleet)
        victim.execute("SELECT 1")
        # KILL without a name: every database, never the console itself.
        assert admin.execute("KILL").statusmessage == "KILL"
        with pytest.raises(psycopg.OperationalError):
            victim.execute("SELECT 1")
        assert admin.execute("SHOW STATE").fetchall()[1] == ("paused", "yes")
        assert admin.execute("RESUME").statusmessage == "RESUME"
    with app_conn(fleet) as again:
        assert again.execute("SELECT 3").fetchone() == (3,)


# ---- SET ----------------------------------------------------------------------------------


@pytest.mark.parametrize("workers", [1, 2])
def test_set_of_runtime_settings_as_pgbouncer(service, pgfleet, workers):
    fleet = pgfleet(settings=dict(SETTINGS, workers=workers), users=dict(USERS))
    with admin_conn(fleet) as admin:
        config = {r[0]: r for r in admin.execute("SHOW CONFIG").fetchall()}
        assert config["verbose"][1:] == ("0", "0", "yes")
        assert config["logfile"][1:] == ("", "", "yes")
        # Every setting SHOW CONFIG calls changeable takes its own value back.
        for key, value, _, changeable in config.values():
            if changeable == "yes" and "password" not in key:
                assert admin.execute("SET %s = '%s'" % (key, value.replace("'", "''"))) \
                    .statusmessage == "SET", key
        assert admin.execute("SET verbose = 1").statusmessage == "SET"
        assert admin.execute("SET VERBOSE TO '2'").statusmessage == "SET"
        assert dict((r[0], r[1]) for r in admin.execute("SHOW CONFIG"))["verbose"] == "2"
        # debug lines appear once verbose says so
        app_conn(fleet).close()
        fleet.wait_log(r"level=(debug|trace) ")
        assert admin.execute("SET verbose = 0").statusmessage == "SET"
        # checked as the ini file checks it
        with pytest.raises(psycopg.errors.InvalidParameterValue) as e:
            admin.execute("SET verbose = banana")
        assert 'invalid value for "verbose"' in str(e.value)
        with pytest.raises(psycopg.errors.InvalidParameterValue):
            admin.execute("SET default_pool_size = 0")
        # restart settings refused naming them
        with pytest.raises(psycopg.errors.CantChangeRuntimeParam) as e:
            admin.execute("SET listen_port = 7000")
        assert 'setting "listen_port" cannot be changed while pgfleet runs' in str(e.value)
        # PgBouncer's keys pgfleet does not implement: their default is a no-op
        assert admin.execute("SET server_check_query = 'select 1'").statusmessage == "SET"
        with pytest.raises(psycopg.errors.FeatureNotSupported) as e:
            admin.execute("SET server_check_query = 'select 2'")
        assert str(e.value).startswith('setting "server_check_query": not implemented by '
                                       'pgfleet')
        # a knob with no effect on Linux is a setting: SET takes it
        assert admin.execute("SET log_stats = 0").statusmessage == "SET"
        with pytest.raises(psycopg.errors.FeatureNotSupported):
            admin.execute("SET peer_id = 4")
        with pytest.raises(psycopg.errors.UndefinedObject):
            admin.execute("SET no_such_setting = 1")
        # the session goes on
        assert admin.execute("SHOW VERSION").fetchone()[0].startswith("PgBouncer 1.25.0")
    p = psql(fleet, "SET verbose = 1", user=STATS, password=STATS_PW)
    assert p.returncode != 0 and "admin access needed" in p.stderr


# ---- logfile ---------------------------------------------------------------------------------


def log_lines(path):
    try:
        with open(path, errors="replace") as f:
            return f.read().splitlines()
    except FileNotFoundError:
        return []


@pytest.mark.parametrize("workers", [1, 2])
def test_logfile_gets_the_log_and_is_reopened_for_rotation(service, pgfleet, tmp_path, workers):
    logfile = str(tmp_path / "pgfleet.log")
    fleet = pgfleet(settings=dict(SETTINGS, workers=workers, logfile=logfile), users=dict(USERS))
    with app_conn(fleet) as app:
        app.execute("SELECT 1")
    assert fx.wait_until(lambda: any('msg="client login"' in l for l in log_lines(logfile)), 5)
    assert any('msg="pgfleet started"' in l for l in log_lines(logfile))
    # stderr keeps every line too
    assert 'msg="client login"' in fleet.log_text()

    # Rotation: move the file away, then RELOAD: new lines go to a new file.
    rotated = logfile + ".1"
    os.rename(logfile, rotated)
    assert psql(fleet, "RELOAD").stdout.strip() == "RELOAD"
    assert fx.wait_until(lambda: os.path.exists(logfile), 5)
    with app_conn(fleet, ) as app:
        app.execute("SELECT 1")
    assert fx.wait_until(lambda: any('msg="client login"' in l for l in log_lines(logfile)), 5)
    n_rotated = len(log_lines(rotated))
    # SIGHUP reopens it the same way.
    os.rename(logfile, rotated + "2")
    os.kill(fleet.pid, signal.SIGHUP)
    assert fx.wait_until(lambda: any('msg="config reloaded"' in l
                                     for l in log_lines(logfile)), 5)
    assert len(log_lines(rotated)) == n_rotated  # nothing more went to the old file

    with admin_conn(fleet) as admin:
        # SET logfile: a file that cannot be opened is refused naming it,
        # the old one kept.
        with pytest.raises(psycopg.errors.InvalidParameterValue) as e:
            admin.execute("SET logfile = '/nonexistent-pgfleet-dir/x.log'")
        assert "cannot open '/nonexistent-pgfleet-dir/x.log'" in str(e.value)
        other = str(tmp_path / "other.log")
        assert admin.execute("SET logfile = '%s'" % other).statusmessage == "SET"
        assert admin.execute("SET logfile = ''").statusmessage == "SET"
    assert any('msg="setting changed" key=logfile' in l for l in log_lines(other))


def test_a_logfile_that_cannot_be_opened_is_a_config_error(tmp_path):
    path = tmp_path / "pgfleet.ini"
    path.write_text("[databases]\napp = host=%s\n[pgfleet]\nauth_type = trust\n"
                    "listen_addr = 127.0.0.1\nlisten_port = %d\n"
                    "logfile = /nonexistent-pgfleet-dir/pgfleet.log\n"
                    % (fx.pod_addr(0), fx.free_port()))
    env = {k: v for k, v in os.environ.items() if not k.startswith("PGFLEET_")}
    for args in (["--check", str(path)], [str(path)]):
        p = subprocess.run([BINARY] + args, capture_output=True, text=True, env=env, timeout=20)
        assert p.returncode == 1, (args, p.stdout, p.stderr)
        assert p.stderr.strip() == ("%s:7: key 'logfile': cannot open "
                                    "'/nonexistent-pgfleet-dir/pgfleet.log': No such file or "
                                    "directory" % path), p.stderr


# ---- the user pgbouncer on the Unix socket ------------------------------------------------


def test_pgbouncer_user_on_the_unix_socket_needs_no_password(service, pgfleet):
    sockdir = tempfile.mkdtemp(prefix="pgfleet-sock-")
    try:
        fleet = pgfleet(settings=dict(SETTINGS, unix_socket_dir=sockdir), users=dict(USERS))
        env = {k: v for k, v in os.environ.items() if not k.startswith("PG")}
        base = [os.path.join(fx.PG_BIN, "psql"), "-X", "-v", "ON_ERROR_STOP=1", "-w",
                "-p", str(fleet.port)]
        # Unix socket, same OS user: in, with admin access, no password asked (-w).
        p = subprocess.run(base + ["-h", sockdir, "-U", "pgbouncer", "-d", "pgbouncer",
                                   "-c", "PAUSE", "-c", "RESUME", "-c", "SHOW VERSION"],
                           env=env, capture_output=True, text=True, timeout=30)
        assert p.returncode == 0, p.stderr
        assert "PgBouncer 1.25.0" in p.stdout
        fleet.wait_log(r'msg="admin login" client=\S+ user=pgbouncer access=admin '
                       r'auth=unix-socket-peer')
        with psycopg.connect(host=sockdir, port=fleet.port, user="pgbouncer",
                             dbname="pgfleet", autocommit=True) as conn:
            conn.prepare_threshold = None
            assert conn.execute("SET verbose = 0").statusmessage == "SET"
        # Over TCP the name gives nothing: a password is asked, and there is none.
        p = subprocess.run(base + ["-h", fleet.host, "-U", "pgbouncer", "-d", "pgbouncer",
                                   "-c", "SHOW VERSION"],
                           env=env, capture_output=True, text=True, timeout=30)
        assert p.returncode != 0 and "password" in p.stderr, p.stderr
        # Another user on the Unix socket logs in as usual.
        p = subprocess.run(base + ["-h", sockdir, "-U", ADMIN, "-d", "pgbouncer",
                                   "-c", "SHOW VERSION"],
                           env=env, capture_output=True, text=True, timeout=30)
        assert p.returncode != 0 and "password" in p.stderr, p.stderr
        p = subprocess.run(base + ["-h", sockdir, "-U", ADMIN, "-d", "pgbouncer",
                                   "-c", "SHOW VERSION"],
                           env=dict(env, PGPASSWORD=ADMIN_PW), capture_output=True, text=True,
                           timeout=30)
        assert p.returncode == 0, p.stderr
        # pgbouncer on the socket, but asking for a pooled database: no exception.
        p = subprocess.run(base + ["-h", sockdir, "-U", "pgbouncer", "-d", fx.APP_DB,
                                   "-c", "SELECT 1"],
                           env=env, capture_output=True, text=True, timeout=30)
        assert p.returncode != 0 and "password" in p.stderr, p.stderr
        fleet.stop()
    finally:
        subprocess.run(["rm", "-rf", sockdir])
