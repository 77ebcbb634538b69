"""workers = 2: two event loops in one process behind one SO_REUSEPORT port.
Connections spread over both; the admin console and /metrics show the whole
process; pool_size holds process-wide; a cancel reaches its query whichever
worker the cancel connection lands on; SIGHUP and SIGTERM reach every
worker."""

import os
import signal
import socket
import threading
import time

import psycopg
import pytest

import fixture as fx
from test_admin import ADMIN, ADMIN_PW, USERS, show

SETTINGS = {"admin_users": ADMIN, "workers": 2}


def start(pgfleet, **settings):
    s = dict(SETTINGS)
    s.update(settings)
    return pgfleet(settings=s, users=dict(USERS))


def connect(fleet, **kw):
    conn = fleet.connect(**kw)
    conn.prepare_threshold = None
    return conn


def worker_of_pid(pid):
    return pid & 63  # the low bits of a BackendKeyData pid name the worker


def threads_of(pid):
    return len(os.listdir("/proc/%d/task" % pid))


def test_two_workers_take_connections(service, pgfleet):
    fleet = start(pgfleet)
    assert threads_of(fleet.pid) >= 2
    conns = [connect(fleet) for _ in range(24)]
    try:
        workers = {worker_of_pid(c.pgconn.backend_pid) for c in conns}
        assert workers == {0, 1}, workers  # the kernel spread them
        for c in conns:
            assert c.execute("SELECT 1").fetchone() == (1,)
        # The console shows every worker's clients, whichever it landed on.
        for _ in range(4):
            _, rows = show(fleet, "CLIENTS")
            apps = [r for r in rows if r["user"] == fx.APP_USER]
            assert len(apps) == 24, rows
            _, pools = show(fleet, "POOLS")
            row = [p for p in pools if p["database"] == fx.APP_DB and p["user"] == fx.APP_USER]
            assert len(row) == 1 and int(row[0]["cl_active"]) == 24, pools
        status, body = fleet.http_get("/metrics")
        assert status == 200
        assert body.count("# TYPE pgfleet_client_connections gauge") == 1
        idle = [l for l in body.splitlines()
                if l.startswith('pgfleet_client_connections{state="idle"}')]
        assert len(idle) == 1 and float(idle[0].split()[-1]) == 24, idle
    finally:
        for c in conns:
            c.close()


def backends(service, i, cond):
    return int(service.psql(i, "SELECT count(*) FROM pg_stat_activity WHERE usename = '%s' "
                               "AND application_name <> 'pgfleet-health' %s"
                            % (fx.APP_USER, cond)))


def test_pool_limit_holds_across_workers(service, pgfleet):
    fleet = start(pgfleet, default_pool_size=2, query_wait_timeout=60)
    stop = threading.Event()
    errors, done = [], [0]
    lock = threading.Lock()

    def client():
        try:
            with connect(fleet) as c:
                while not stop.is_set():
                    c.execute("SELECT pg_sleep(0.01)")
                    with lock:
                        done[0] += 1
        except Exception as e:  # noqa: BLE001
            errors.append(repr(e))

    threads = [threading.Thread(target=client) for _ in range(16)]
    for t in threads:
        t.start()
    try:
        deadline = time.time() + 6
        while time.time() < deadline:
            # SHOW SERVERS merges two workers' answers taken a moment apart,
            # so a connection one worker just gave back can be listed next
            # to the one the other opened in its place.  The pods are the
            # atomic view: there, at most pool_size backends serve the app
            # user per pod, beyond one just told to exit (gone within ms).
            _, rows = show(fleet, "SERVERS")
            per = {}
            for r in rows:
                per[r["replica"]] = per.get(r["replica"], 0) + 1
            for k, v in per.items():
                assert v <= 4, (k, v, rows)  # never more than both workers' limit
            for i, pod in enumerate(service.addrs):
                over = 0
                for _ in range(3):
                    n = backends(service, i, "")
                    if n <= 2:
                        break
                    over += 1
                    time.sleep(0.05)
                assert over < 3, (pod, n)
                # Busy backends are never more than pool_size, even for a moment.
                assert backends(service, i, "AND state = 'active'") <= 2, pod
            time.sleep(0.2)
    finally:
        stop.set()
        for t in threads:
            t.join(30)
    assert not errors, errors
    assert done[0] > 100


def test_cancel_reaches_the_query_from_either_worker(service, pgfleet):
    fleet = start(pgfleet)
    for i in range(12):
        with connect(fleet) as c:
            t0 = time.time()
            timer = threading.Timer(0.3, c.cancel)
            timer.start()
            with pytest.raises(psycopg.errors.QueryCanceled):
                c.execute("SELECT pg_sleep(20)")
            timer.join()
            assert time.time() - t0 < 10
            assert c.execute("SELECT 1").fetchone() == (1,)
    # "cancel sent" is logged once the server has closed the cancel
    # connection, which can be a moment after the client saw its error.
    def logged():
        log = fleet.log_text()
        return "another worker" in log or log.count("cancel sent") >= 12
    assert fx.wait_until(logged, 5), fleet.log_tail()


def test_sighup_reaches_every_worker(service, pgfleet):
    fleet = start(pgfleet)
    conns = [connect(fleet) for _ in range(16)]
    try:
        with open(fleet.ini_path) as f:
            text = f.read()
        with open(fleet.ini_path, "w") as f:
            f.write(text.replace("[pgfleet]\n", "[pgfleet]\ndefault_pool_size = 7\n"))
        fleet.reload()
        fx.wait_until(lambda: fleet.log_text().count("config reloaded") >= 2, 10)
        _, rows = show(fleet, "DATABASES")
        app = [r for r in rows if r["name"] == fx.APP_DB]
        assert app and app[0]["pool_size"] == "7", rows
        for c in conns:
            assert c.execute("SELECT 1").fetchone() == (1,)
    finally:
        for c in conns:
            c.close()


def test_sigterm_drains_every_worker(service, pgfleet):
    fleet = start(pgfleet)
    conns = [connect(fleet, autocommit=False) for _ in range(12)]
    assert {worker_of_pid(c.pgconn.backend_pid) for c in conns} == {0, 1}
    for c in conns:
        c.execute("SELECT 1")  # a transaction open on each
    fleet.kill(signal.SIGTERM)
    time.sleep(0.5)
    assert fleet.running  # transactions still open on both workers
    for c in conns:
        c.commit()
    assert fleet.wait(15) == 0
    log = fleet.log_text()
    assert log.count("drained: no transaction left open") == 2, log


def test_admin_commands_reach_every_worker(service, pgfleet):
    fleet = start(pgfleet)
    conns = [connect(fleet) for _ in range(12)]
    try:
        with psycopg.connect(fleet.dsn(ADMIN, ADMIN_PW, "pgfleet"), autocommit=True) as a:
            a.prepare_threshold = None
            a.execute("SET default_pool_size = 3")
            a.execute("PAUSE")
            _, rows = show(fleet, "DATABASES")
            app = [r for r in rows if r["name"] == fx.APP_DB]
            assert app[0]["pool_size"] == "3" and app[0]["paused"] == "1", rows
            a.execute("RESUME")
        for c in conns:
            assert c.execute("SELECT 1").fetchone() == (1,)
    finally:
        for c in conns:
            c.close()


def test_metrics_survive_scrapers_that_hang_up(service, pgfleet):
    fleet = start(pgfleet)
    for _ in range(50):
        s = socket.create_connection((fleet.host, fleet.http_port), timeout=5)
        s.sendall(b"GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n")
        s.close()  # before every worker has answered
    status, body = fleet.http_get("/metrics")
    assert status == 200 and "pgfleet_uptime_seconds" in body
    assert fleet.running
