"""The admin console (issue 6): PgBouncer's SHOW commands with PgBouncer's
columns, read by psql --csv and psycopg, the commands that change what the
pooler does, and who may use it."""

import csv
import io
import os
import re
import subprocess
import threading
import time

import psycopg
import pytest

import fixture as fx

ADMIN, ADMIN_PW = "admin", "admin-secret"
STATS, STATS_PW = "watcher", "watcher-secret"
USERS = {fx.APP_USER: fx.APP_PASSWORD, ADMIN: ADMIN_PW, STATS: STATS_PW}
SETTINGS = {"admin_users": ADMIN, "stats_users": STATS}

# PgBouncer 1.25's columns, in its order (its src/admin.c and stats.c);
# pgfleet's own only after them.
SOCKET = ["type", "user", "database", "replication", "state", "addr", "port", "local_addr",
          "local_port", "connect_time", "request_time", "wait", "wait_us", "close_needed",
          "ptr", "link", "remote_pid", "tls", "application_name", "prepared_statements", "id"]
STATS_KINDS = ["server_assignment_count", "xact_count", "query_count"]
STATS_TOTALS_COLS = ["database"] + STATS_KINDS + [
    "bytes_received", "bytes_sent", "xact_time", "query_time", "wait_time",
    "client_parse_count", "server_parse_count", "bind_count", "client_connect_count"]
STATS_AVERAGES_COLS = ["database"] + STATS_KINDS + [
    "bytes_received", "bytes_sent", "xact_time", "query_time", "wait_time",
    "avg_client_parse_count", "avg_server_parse_count", "avg_bind_count",
    "client_connect_count"]
HEADERS = {
    "VERSION": ["version"],
    "CONFIG": ["key", "value", "default", "changeable"],
    "DATABASES": ["name", "host", "port", "database", "force_user", "pool_size",
                  "min_pool_size", "reserve_pool_size", "server_lifetime", "pool_mode",
                  "load_balance_hosts", "max_connections", "current_connections",
                  "max_client_connections", "current_client_connections", "paused",
                  "disabled", "reserve_pool", "fleet_share", "primaries"],
    "POOLS": ["database", "user", "cl_active", "cl_waiting", "cl_active_cancel_req",
              "cl_waiting_cancel_req", "sv_active", "sv_active_cancel", "sv_being_canceled",
              "sv_idle", "sv_used", "sv_tested", "sv_login", "maxwait", "maxwait_us",
              "pool_mode", "load_balance_hosts"],
    "CLIENTS": SOCKET,
    "SERVERS": SOCKET + ["replica", "role"],
    "STATS": ["database", "total_server_assignment_count", "total_xact_count",
              "total_query_count", "total_received", "total_sent", "total_xact_time",
              "total_query_time", "total_wait_time", "total_client_parse_count",
              "total_server_parse_count", "total_bind_count", "total_client_connect_count",
              "avg_server_assignment_count", "avg_xact_count", "avg_query_count", "avg_recv",
              "avg_sent", "avg_xact_time", "avg_query_time", "avg_wait_time",
              "avg_client_parse_count", "avg_server_parse_count", "avg_bind_count",
              "avg_client_connect_count"],
    "STATS_TOTALS": STATS_TOTALS_COLS,
    "STATS_AVERAGES": STATS_AVERAGES_COLS,
    "TOTALS": ["name", "value"],
    "USERS": ["name", "pool_size", "reserve_pool_size", "pool_mode", "max_user_connections",
              "current_connections", "max_user_client_connections",
              "current_client_connections", "fleet_share"],
    "DNS_HOSTS": ["hostname", "ttl", "addrs"],
    "DNS_ZONES": ["zonename", "serial", "count"],
    "LISTS": ["list", "items"],
    "MEM": ["name", "size", "used", "free", "memtotal"],
    "STATE": ["key", "value"],
    "PEERS": ["peer_id", "host", "port", "pool_size", "self", "state", "last_seen",
              "cancels_forwarded", "cancels_received"],
    "PEER_POOLS": ["peer_id", "cl_active_cancel_req", "cl_waiting_cancel_req",
                   "sv_active_cancel", "sv_login"],
    "SOCKETS": SOCKET + ["recv_pos", "pkt_pos", "pkt_remain", "send_pos", "send_remain",
                         "pkt_avail", "send_avail"],
    "ACTIVE_SOCKETS": SOCKET + ["recv_pos", "pkt_pos", "pkt_remain", "send_pos",
                                "send_remain", "pkt_avail", "send_avail"],
    "REPLICAS": ["database", "host", "addr", "port", "role", "state", "lag_s", "server_conns",
                 "active", "xacts", "queries", "avg_xact_us", "last_check", "last_error",
                 "timeline", "write_primary"],
}


def psql(fleet, sql, user=ADMIN, password=ADMIN_PW, dbname="pgfleet", csv_out=True):
    env = dict(os.environ, PGPASSWORD=password, PGCONNECT_TIMEOUT="10")
    for k in ("PGHOST", "PGPORT", "PGUSER", "PGDATABASE", "PGSERVICE"):
        env.pop(k, None)
    argv = [os.path.join(fx.PG_BIN, "psql"), "-X", "-v", "ON_ERROR_STOP=1",
            "-h", fleet.host, "-p", str(fleet.port), "-U", user, "-d", dbname, "-c", sql]
    if csv_out:
        argv.insert(2, "--csv")
    return subprocess.run(argv, env=env, capture_output=True, text=True, timeout=60)


def show(fleet, what, user=ADMIN, password=ADMIN_PW):
    """(header, rows as dicts) of SHOW <what>, through psql --csv."""
    p = psql(fleet, "SHOW " + what, user=user, password=password)
    assert p.returncode == 0, p.stderr
    rows = list(csv.reader(io.StringIO(p.stdout)))
    assert rows, "SHOW %s printed nothing" % what
    header = rows[0]
    return header, [dict(zip(header, r)) for r in rows[1:]]


def admin_conn(fleet, user=ADMIN, password=ADMIN_PW, dbname="pgfleet"):
    conn = psycopg.connect(fleet.dsn(user, password, dbname), autocommit=True)
    conn.prepare_threshold = None
    return conn


def app_conn(fleet, autocommit=True):
    conn = fleet.connect(autocommit=autocommit)
    conn.prepare_threshold = None
    return conn


@pytest.fixture
def fleet(service, pgfleet):
    return pgfleet(settings=dict(SETTINGS), users=dict(USERS))


# ---- SHOW ---------------------------------------------------------------------


def test_every_show_has_pgbouncers_header(fleet):
    app = app_conn(fleet)
    assert app.execute("SELECT 1").fetchone() == (1,)
    for what, expected in HEADERS.items():
        header, _ = show(fleet, what)
        assert header == expected, what
    # "pgbouncer" is accepted as the console's name too, and commands are
    # case-insensitive with an optional ';'.
    p = psql(fleet, "show version;", dbname="pgbouncer")
    assert p.returncode == 0, p.stderr
    assert p.stdout.splitlines()[0] == "version"
    # PgBouncer's format first ("PgBouncer 1.25.0"), pgfleet's after.
    assert re.fullmatch(r"PgBouncer 1\.25\.0 \(pgfleet \d+\.\d+\.\d+\S*\)",
                        p.stdout.splitlines()[1]), p.stdout
    p = psql(fleet, "SHOW HELP", csv_out=False)
    assert p.returncode == 0, p.stderr
    assert "SHOW HELP|CONFIG|DATABASES" in p.stderr and "REFRESH DNS" in p.stderr


def test_show_values(service, fleet):
    app = app_conn(fleet)
    for _ in range(30):
        app.execute("SELECT 1")
    _, dbs = show(fleet, "DATABASES")
    app_db = [d for d in dbs if d["name"] == fx.APP_DB][0]
    assert app_db["host"] == fx.SVC_NAME and app_db["port"] == "5432"
    assert app_db["pool_size"] == "20" and app_db["pool_mode"] == "transaction"
    assert app_db["paused"] == "0" and app_db["disabled"] == "0"

    _, config = show(fleet, "CONFIG")
    conf = {r["key"]: r for r in config}
    assert conf["default_pool_size"]["value"] == "20"
    assert conf["default_pool_size"]["changeable"] == "yes"
    assert conf["listen_port"]["changeable"] == "no"
    assert conf["admin_users"]["value"] == ADMIN

    _, clients = show(fleet, "CLIENTS")
    mine = [c for c in clients if c["database"] == fx.APP_DB]
    assert len(mine) == 1 and mine[0]["user"] == fx.APP_USER and mine[0]["type"] == "C"
    # PgBouncer 1.25: a logged-in client without a server connection is idle.
    assert mine[0]["state"] == "idle" and mine[0]["addr"] == "127.0.0.1"
    assert mine[0]["replication"] == "none" and int(mine[0]["id"]) >= 1
    assert any(c["database"] == "pgfleet" and c["user"] == ADMIN for c in clients)

    _, pools = show(fleet, "POOLS")
    pool = [p for p in pools if p["database"] == fx.APP_DB and p["user"] == fx.APP_USER][0]
    assert pool["cl_active"] == "1" and pool["cl_waiting"] == "0"
    assert int(pool["sv_idle"]) + int(pool["sv_active"]) >= 1

    _, totals = show(fleet, "STATS_TOTALS")
    t = [r for r in totals if r["database"] == fx.APP_DB][0]
    assert int(t["xact_count"]) >= 30 and int(t["query_count"]) >= 30
    assert int(t["bytes_received"]) > 0 and int(t["bytes_sent"]) > 0
    assert int(t["xact_time"]) > 0

    _, users = show(fleet, "USERS")
    assert {u["name"] for u in users} >= {fx.APP_USER, ADMIN, STATS}

    _, hosts = show(fleet, "DNS_HOSTS")
    h = [r for r in hosts if r["hostname"] == fx.SVC_NAME][0]
    assert sorted(h["addrs"].split(",")) == sorted(service.addrs)

    _, lists = show(fleet, "LISTS")
    items = {r["list"]: int(r["items"]) for r in lists}
    assert items["databases"] >= 1 and items["used_clients"] >= 2 and items["dns_names"] == 1

    _, mem = show(fleet, "MEM")
    assert {"client_cache", "server_cache", "iobuf_cache"} <= {r["name"] for r in mem}


def hold_transactions(fleet, n):
    """n clients, each inside an open transaction (so each holds a server)."""
    conns = []
    for _ in range(n):
        c = app_conn(fleet, autocommit=False)
        c.execute("SELECT 1")
        conns.append(c)
    return conns


def test_show_servers_lists_connections_on_every_pod(service, fleet):
    assert fleet.wait_all_up(service.addrs), fleet.log_tail()
    conns = hold_transactions(fleet, 6)
    try:
        header, servers = show(fleet, "SERVERS")
        assert header == HEADERS["SERVERS"]
        app_servers = [s for s in servers if s["database"] == fx.APP_DB]
        assert {s["addr"] for s in app_servers} == set(service.addrs)
        for s in app_servers:
            assert s["type"] == "S" and s["user"] == fx.APP_USER and s["port"] == "5432"
            assert s["replica"] == "%s:5432" % s["addr"]
            assert s["role"] == "primary"  # independent pods: each its own primary
            assert int(s["remote_pid"]) > 0
        assert sum(s["state"] == "active" for s in app_servers) == 6
        linked = {s["link"] for s in app_servers if s["state"] == "active"}
        _, clients = show(fleet, "CLIENTS")
        assert linked == {c["ptr"] for c in clients if c["database"] == fx.APP_DB}
    finally:
        for c in conns:
            c.rollback()
            c.close()


def test_show_replicas_counts_traffic_per_replica(service, fleet):
    conns = hold_transactions(fleet, 6)
    for c in conns:
        c.commit()
    for _ in range(20):
        for c in conns:
            c.execute("SELECT 1")
            c.commit()
    header, rows = show(fleet, "REPLICAS")
    assert header == HEADERS["REPLICAS"]
    rows = [r for r in rows if r["database"] == fx.APP_DB]
    assert sorted(r["addr"] for r in rows) == sorted(service.addrs)
    for r in rows:
        assert r["host"] == fx.SVC_NAME and r["port"] == "5432"
        assert r["state"] == "up" and r["role"] == "primary"
        assert float(r["lag_s"]) >= 0
        assert int(r["server_conns"]) >= 1 and int(r["active"]) == 0
        assert int(r["xacts"]) >= 1 and int(r["queries"]) >= int(r["xacts"])
        assert r["last_check"].endswith(" UTC") and r["last_error"] == ""
    assert sum(int(r["xacts"]) for r in rows) >= 126
    for c in conns:
        c.close()


# ---- who may use it -------------------------------------------------------------


def test_stats_user_may_show_but_not_change(fleet):
    header, _ = show(fleet, "POOLS", user=STATS, password=STATS_PW)
    assert header == HEADERS["POOLS"]
    for cmd in ("RELOAD", "PAUSE", "SET default_pool_size = 3", "SHUTDOWN"):
        p = psql(fleet, cmd, user=STATS, password=STATS_PW)
        assert p.returncode != 0 and "admin access needed" in p.stderr, (cmd, p.stderr)
    with admin_conn(fleet, STATS, STATS_PW) as conn:
        with pytest.raises(psycopg.errors.InsufficientPrivilege):
            conn.execute("RELOAD")
        assert conn.execute("SHOW VERSION").fetchone()[0].startswith("PgBouncer 1.25.0 (pgfleet ")
    _, config = show(fleet, "CONFIG")
    assert {r["key"]: r["value"] for r in config}["default_pool_size"] == "20"
    assert fleet.running


def test_other_users_are_refused(fleet):
    p = psql(fleet, "SHOW VERSION", user=fx.APP_USER, password=fx.APP_PASSWORD)
    assert p.returncode != 0
    assert "may not use the admin console" in p.stderr, p.stderr
    with pytest.raises(psycopg.OperationalError) as e:
        admin_conn(fleet, fx.APP_USER, fx.APP_PASSWORD)
    assert "may not use the admin console" in str(e.value)
    # a wrong password is refused before anything else
    p = psql(fleet, "SHOW VERSION", user=ADMIN, password="wrong")
    assert p.returncode != 0 and "password authentication failed" in p.stderr
    fleet.wait_log(r'msg="client refused".*user=app')
    # the pooler still serves
    assert app_conn(fleet).execute("SELECT 7").fetchone() == (7,)


def test_sql_and_bad_commands_get_errors_and_the_session_goes_on(fleet):
    with admin_conn(fleet) as conn:
        for sql, err in [("SELECT 1", psycopg.errors.SyntaxError),
                         ("", psycopg.errors.SyntaxError),
                         ("SHOW nothing_like_this", psycopg.errors.SyntaxError),
                         ("SHOW VERSION; SHOW POOLS", psycopg.errors.FeatureNotSupported),
                         # PgBouncer's words and SQLSTATE (08P01)
                         ("PAUSE no_such_db", psycopg.errors.ProtocolViolation),
                         ("SET default_pool_size = lots", psycopg.errors.InvalidParameterValue),
                         ("SET listen_port = 1", psycopg.errors.CantChangeRuntimeParam),
                         ("DISABLE", psycopg.errors.SyntaxError)]:
            with pytest.raises(err) as e:
                conn.execute(sql)
            if "lots" in sql:
                assert "default_pool_size" in str(e.value)
            assert conn.execute("SHOW VERSION").fetchone()[0].startswith("PgBouncer 1.25.0 (pgfleet ")
        # the extended protocol (a parameter forces it) is refused cleanly
        with pytest.raises(psycopg.errors.FeatureNotSupported):
            conn.execute("SHOW VERSION WHERE %s", [1])
        assert conn.execute("show lists;").fetchone()[0] == "databases"
        cur = conn.execute("SHOW STATS")
        assert [d.name for d in cur.description] == HEADERS["STATS"]
        assert cur.description[1].type_code == 1700  # numeric, as PgBouncer


def test_set_changes_a_setting(fleet):
    p = psql(fleet, "SET default_pool_size = 3")
    assert p.returncode == 0 and p.stdout.strip() == "SET", p.stderr
    p = psql(fleet, "set query_wait_timeout to '30'")
    assert p.returncode == 0, p.stderr
    _, config = show(fleet, "CONFIG")
    values = {r["key"]: r["value"] for r in config}
    assert values["default_pool_size"] == "3" and values["query_wait_timeout"] == "30"
    _, dbs = show(fleet, "DATABASES")
    assert [d for d in dbs if d["name"] == fx.APP_DB][0]["pool_size"] == "3"
    fleet.wait_log(r'msg="setting changed" key=default_pool_size')


# ---- commands ------------------------------------------------------------------


def run_in_thread(fn):
    box = {}

    def target():
        try:
            box["result"] = fn()
        except Exception as e:  # noqa: BLE001 (reported by the caller)
            box["error"] = e

    t = threading.Thread(target=target, daemon=True)
    t.start()
    return t, box


def test_pause_waits_for_transactions_and_resume_releases_clients(fleet):
    busy = app_conn(fleet, autocommit=False)
    busy.execute("SELECT 1")  # a transaction is open
    other = app_conn(fleet)
    assert other.execute("SELECT 1").fetchone() == (1,)
    admin = admin_conn(fleet)

    # PAUSE answers only once the open transaction has ended.
    t, box = run_in_thread(lambda: admin.execute("PAUSE " + fx.APP_DB).statusmessage)
    t.join(1.0)
    assert t.is_alive(), "PAUSE answered while a transaction was open"
    busy.commit()
    t.join(10)
    assert not t.is_alive() and box.get("result") == "PAUSE", box

    # A new transaction waits while paused ...
    t2, box2 = run_in_thread(lambda: other.execute("SELECT 42").fetchone())
    t2.join(1.0)
    assert t2.is_alive(), "a query ran while the database was paused"
    _, pools = show(fleet, "POOLS")
    pool = [p for p in pools if p["database"] == fx.APP_DB][0]
    assert pool["cl_waiting"] == "1"
    _, dbs = show(fleet, "DATABASES")
    assert [d for d in dbs if d["name"] == fx.APP_DB][0]["paused"] == "1"
    # ... and runs after RESUME.
    assert admin.execute("RESUME " + fx.APP_DB).statusmessage == "RESUME"
    t2.join(10)
    assert box2.get("result") == (42,), box2
    assert busy.execute("SELECT 2").fetchone() == (2,)
    for c in (busy, other, admin):
        c.close()


def test_kill_drops_clients_and_resume_lets_new_ones_in(fleet):
    victim = app_conn(fleet)
    assert victim.execute("SELECT 1").fetchone() == (1,)
    assert psql(fleet, "KILL " + fx.APP_DB).stdout.strip() == "KILL"
    with pytest.raises(psycopg.OperationalError):
        victim.execute("SELECT 1")
    _, servers = show(fleet, "SERVERS")
    assert not [s for s in servers if s["database"] == fx.APP_DB]
    # Killed means paused: a new client waits until RESUME.
    t, box = run_in_thread(lambda: app_conn(fleet).execute("SELECT 5").fetchone())
    t.join(1.0)
    assert t.is_alive()
    assert psql(fleet, "RESUME").stdout.strip() == "RESUME"
    t.join(10)
    assert box.get("result") == (5,), box


def test_disable_enable_reconnect_wait_close_refresh(fleet):
    app = app_conn(fleet)
    app.execute("SELECT 1")
    assert psql(fleet, "DISABLE " + fx.APP_DB).stdout.strip() == "DISABLE"
    with pytest.raises(psycopg.OperationalError) as e:
        app_conn(fleet)
    assert "disabled" in str(e.value)
    assert app.execute("SELECT 3").fetchone() == (3,)  # already connected: served
    assert psql(fleet, "ENABLE " + fx.APP_DB).stdout.strip() == "ENABLE"
    app_conn(fleet).close()

    _, before = show(fleet, "SERVERS")
    assert [s for s in before if s["database"] == fx.APP_DB]
    assert psql(fleet, "RECONNECT " + fx.APP_DB).stdout.strip() == "RECONNECT"
    assert psql(fleet, "WAIT_CLOSE " + fx.APP_DB).stdout.strip() == "WAIT_CLOSE"
    _, after = show(fleet, "SERVERS")
    old = {s["ptr"] for s in before}
    assert not old & {s["ptr"] for s in after}
    assert app.execute("SELECT 4").fetchone() == (4,)  # a new connection serves it
    assert psql(fleet, "REFRESH DNS").stdout.strip() == "REFRESH"


def test_shutdown_from_the_console(fleet):
    app = app_conn(fleet)
    app.execute("SELECT 1")
    p = psql(fleet, "SHUTDOWN")
    assert p.returncode == 0, p.stderr
    assert fleet.wait(timeout=20) == 0
    fleet.wait_log(r'msg="shutting down" reason="admin SHUTDOWN"')


def test_a_waiting_client_that_hangs_up_leaves_the_queue_at_once(service, pgfleet):
    """A client waiting for a server connection is still watched: when it
    goes away its place in line goes with it, before any server is free."""
    fleet = pgfleet(settings=dict(SETTINGS, default_pool_size=1, query_wait_timeout=60),
                    users=dict(USERS),
                    databases={fx.APP_DB: "host=%s port=5432 dbname=%s"
                               % (fx.pod_addr(0), fx.APP_DB)})

    def waiting():
        _, pools = show(fleet, "POOLS")
        return sum(int(p["cl_waiting"]) for p in pools if p["database"] == fx.APP_DB)

    busy = app_conn(fleet, autocommit=False)
    busy.execute("SELECT 1")  # holds the one server connection
    env = dict(os.environ, PGPASSWORD=fx.APP_PASSWORD)
    quitter = subprocess.Popen(
        [os.path.join(fx.PG_BIN, "psql"), "-X", "-h", fleet.host, "-p", str(fleet.port),
         "-U", fx.APP_USER, "-d", fx.APP_DB, "-c", "SELECT 1"],
        env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        assert fx.wait_until(lambda: waiting() == 1, 10), "the client never queued"
        quitter.kill()
        quitter.wait(10)
        assert fx.wait_until(lambda: waiting() == 0, 5), "a gone client still waits in line"
        assert busy.execute("SELECT 2").fetchone() == (2,)  # the transaction is untouched
        busy.commit()
        with app_conn(fleet) as after:
            assert after.execute("SELECT 3").fetchone() == (3,)
    finally:
        if quitter.poll() is None:
            quitter.kill()
            quitter.wait(10)
        busy.close()
