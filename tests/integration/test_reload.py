"""RELOAD and SIGHUP (issue 6): a new configuration takes effect without
dropping clients; a bad one is refused with its errors logged and the old
one kept."""

import re
import threading

import psycopg
import pytest

import fixture as fx
from test_admin import ADMIN, ADMIN_PW, USERS, admin_conn, app_conn, psql, show

SETTINGS = {"admin_users": ADMIN}


def set_ini(fleet, key, value):
    """Sets (or adds) `key = value` in the running pgfleet's ini file."""
    with open(fleet.ini_path) as f:
        text = f.read()
    line = "%s = %s" % (key, value)
    pat = re.compile(r"^%s\s*=.*$" % re.escape(key), re.M)
    text = pat.sub(line, text) if pat.search(text) else text.rstrip("\n") + "\n" + line + "\n"
    with open(fleet.ini_path, "w") as f:
        f.write(text)


def set_databases(fleet, entries):
    with open(fleet.ini_path) as f:
        text = f.read()
    rest = text[text.index("[pgfleet]"):]
    dbs = "".join("%s = %s\n" % kv for kv in entries.items())
    with open(fleet.ini_path, "w") as f:
        f.write("[databases]\n" + dbs + "\n" + rest)


def ini_line(fleet, key):
    with open(fleet.ini_path) as f:
        for n, line in enumerate(f, 1):
            if line.split("=")[0].strip() == key:
                return n
    raise AssertionError(key)


def config_value(fleet, key):
    _, rows = show(fleet, "CONFIG")
    return {r["key"]: r["value"] for r in rows}[key]


def app_pool(fleet):
    _, pools = show(fleet, "POOLS")
    return [p for p in pools if p["database"] == fx.APP_DB and p["user"] == fx.APP_USER][0]


def test_reload_default_pool_size_with_clients_connected(service, pgfleet):
    """2 connections per replica, 3 replicas: 6 transactions run, 2 wait.
    After RELOAD with default_pool_size = 4 the waiting two get servers; the
    six connected clients keep theirs and commit."""
    fleet = pgfleet(settings=dict(SETTINGS, default_pool_size=2, query_wait_timeout=60),
                    users=dict(USERS))
    holders = []
    for _ in range(6):
        c = app_conn(fleet, autocommit=False)
        c.execute("SELECT pg_backend_pid()")
        holders.append(c)
    results = []

    def waiter():
        with app_conn(fleet, autocommit=False) as c:
            results.append(c.execute("SELECT 1").fetchone()[0])
            c.commit()

    threads = [threading.Thread(target=waiter, daemon=True) for _ in range(2)]
    for t in threads:
        t.start()
    deadline = 50
    while app_pool(fleet)["cl_waiting"] != "2" and deadline:
        threading.Event().wait(0.1)
        deadline -= 1
    pool = app_pool(fleet)
    assert pool["cl_waiting"] == "2" and pool["sv_active"] == "6", pool
    assert results == []

    set_ini(fleet, "default_pool_size", 4)
    p = psql(fleet, "RELOAD")
    assert p.returncode == 0 and p.stdout.strip() == "RELOAD", p.stderr
    for t in threads:
        t.join(10)
    assert results == [1, 1]
    fleet.wait_log(r'msg="config reloaded".*changed=default_pool_size')

    assert config_value(fleet, "default_pool_size") == "4"
    _, dbs = show(fleet, "DATABASES")
    assert [d for d in dbs if d["name"] == fx.APP_DB][0]["pool_size"] == "4"
    pool = app_pool(fleet)
    assert pool["cl_active"] == "6" and pool["cl_waiting"] == "0"
    assert int(pool["sv_active"]) == 6 and int(pool["sv_active"]) + int(pool["sv_idle"]) == 8
    _, servers = show(fleet, "SERVERS")
    per_pod = {}
    for s in servers:
        per_pod[s["addr"]] = per_pod.get(s["addr"], 0) + 1
    assert max(per_pod.values()) <= 4 and sum(per_pod.values()) == 8
    # the six clients that held servers through the reload still have them
    for c in holders:
        assert c.execute("SELECT 1").fetchone() == (1,)
        c.commit()
        c.close()


def test_bad_reload_keeps_the_old_configuration(service, pgfleet):
    fleet = pgfleet(settings=dict(SETTINGS), users=dict(USERS))
    app = app_conn(fleet)
    set_ini(fleet, "pool_mode", "sesion")
    set_ini(fleet, "default_pool_size", 7)
    line = ini_line(fleet, "pool_mode")
    with admin_conn(fleet) as conn:
        with pytest.raises(psycopg.Error) as e:
            conn.execute("RELOAD")
        assert "1 error" in str(e.value) and "pool_mode" in str(e.value)
        assert conn.execute("SHOW VERSION").fetchone()  # the session goes on
    fleet.wait_log(r"msg=\"config error\" error=\"%s:%d: key 'pool_mode'"
                   % (re.escape(fleet.ini_path), line))
    fleet.wait_log(r'msg="config reload refused" errors=1')
    assert config_value(fleet, "pool_mode") == "transaction"
    assert config_value(fleet, "default_pool_size") == "20"  # nothing half-applied
    assert app.execute("SELECT 1").fetchone() == (1,)
    # SIGHUP with the same file: refused the same way
    fleet.reload()
    fleet.wait_log(r"(?s)SIGHUP.*config reload refused")
    assert fleet.running


def test_sighup_reloads_and_names_what_changed(service, pgfleet):
    fleet = pgfleet(settings=dict(SETTINGS, health_check_password="first-secret"),
                    users=dict(USERS))
    app = app_conn(fleet)
    set_ini(fleet, "query_wait_timeout", 33)
    set_ini(fleet, "health_check_password", "second-secret")
    set_ini(fleet, "listen_port", fleet.port + 1)  # needs a restart
    fleet.reload()
    m = fleet.wait_log(r'msg="config reloaded".*')
    line = m.group(0)
    assert "query_wait_timeout" in line and "health_check_password" in line
    assert "secret" not in line.replace("health_check_password", "")
    assert "second-secret" not in fleet.log_text()
    fleet.wait_log(r'restart needed for" settings=listen_port')
    assert config_value(fleet, "query_wait_timeout") == "33"
    assert config_value(fleet, "listen_port") == str(fleet.port)
    assert app.execute("SELECT 1").fetchone() == (1,)


def test_reload_adds_and_removes_databases(service, pgfleet):
    entry = "host=%s port=5432 dbname=%s" % (fx.SVC_NAME, fx.APP_DB)
    fleet = pgfleet(settings=dict(SETTINGS), users=dict(USERS))
    old = app_conn(fleet)
    set_databases(fleet, {"app2": entry})
    assert psql(fleet, "RELOAD").returncode == 0
    fleet.wait_log(r'msg="config reloaded".*databases="?app\(removed\),app2\(added\)')
    with fleet.connect(dbname="app2") as c:
        assert c.execute("SELECT current_database()").fetchone() == (fx.APP_DB,)
    # the removed database takes no new clients; the connected one goes on
    with pytest.raises(psycopg.OperationalError) as e:
        fleet.connect()
    assert "does not exist" in str(e.value)
    assert old.execute("SELECT 8").fetchone() == (8,)
    _, dbs = show(fleet, "DATABASES")
    assert {d["name"]: d["disabled"] for d in dbs} == {"app": "1", "app2": "0"}
    # and it comes back
    set_databases(fleet, {"app": entry, "app2": entry})
    assert psql(fleet, "RELOAD").returncode == 0
    with fleet.connect() as c:
        assert c.execute("SELECT 9").fetchone() == (9,)


def test_reload_from_the_environment(service, pgfleet):
    fleet = pgfleet(config_file=False, users={},
                    settings={"admin_users": fx.APP_USER},
                    env={"DB_HOST": fx.SVC_NAME, "DB_USER": fx.APP_USER,
                         "DB_PASSWORD": fx.APP_PASSWORD, "DB_NAME": fx.APP_DB})
    p = psql(fleet, "RELOAD", user=fx.APP_USER, password=fx.APP_PASSWORD)
    assert p.returncode == 0, p.stderr
    fleet.wait_log(r'msg="config reloaded" config=environment changed=none')
    fleet.reload()
    fleet.wait_log(r'(?s)SIGHUP.*config reloaded" config=environment')
    assert app_conn(fleet).execute("SELECT 1").fetchone() == (1,)
