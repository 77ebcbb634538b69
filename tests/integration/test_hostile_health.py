"""A hostile replica against health checks (issue 15, item 8): a server that
answers the health check's login with SCRAM at 10,000,000 iterations (a new
salt each time, so nothing can be cached).  libpq computes that PBKDF2 inside
PQconnectPoll, which takes seconds of CPU; health.c runs health-check logins
on a helper thread, so the event loop keeps serving the real database and
/healthz meanwhile, and pgfleet still stops at once (exit 0, no sanitizer
report) while such a login is stuck.

"While the PBKDF2 runs" is observed through the fake's events, not clocks:
libpq sends its SCRAM client-final-message only once the PBKDF2 is done, so
as long as the fake has not received it (`scram_final_received`), the
health check's login is still computing.

The hostile server is hostile_pg.HostilePg on <fixture net>.61; the real
database is the `service` fixture's "app"."""

import threading

import psycopg

import fixture as fx
import hostile_pg as hp

HOSTILE_HOST = fx.NET_PREFIX + ".61"
ITERATIONS = 10000000


def hostile_server():
    """Not listening yet: pgfleet starts with the real database up and the
    hostile replica refusing connections; the attack begins once
    start_attack() opens the port (on a loop that PBKDF2 stalls, even the
    real replicas' first checks would otherwise wait for it)."""
    # salt=None: a new salt at every login.  The password is the one the
    # health check logs in with (the app user's), so the login would even
    # succeed, after the PBKDF2.
    return hp.HostilePg(HOSTILE_HOST, port=fx.free_port(HOSTILE_HOST), behaviour="normal",
                        auth="scram", iterations=ITERATIONS, salt=None, attack_health=True,
                        password=fx.APP_PASSWORD, time_limit=120)


def start_fleet(pgfleet, service, fake, **settings):
    """pgfleet with the real "app" and the hostile "hostile" database; the
    real one up; then the hostile server starts and its health check login
    gets the SCRAM challenge."""
    base = {"health_check_period": 1, "health_check_timeout": 3}
    base.update(settings)
    fleet = pgfleet(settings=base, databases={
        fx.APP_DB: "host=%s port=%d dbname=%s" % (fx.SVC_NAME, fx.PG_PORT, fx.APP_DB),
        "hostile": fake.db_entry("hostile")})
    assert fleet.wait_all_up(service.addrs, timeout=30), fleet.log_tail()
    fake.start()
    # The health check's login got the 10,000,000-iteration challenge.
    assert fake.wait_for("scram_first_sent", timeout=30), fleet.log_tail()
    return fleet


def in_pbkdf2(fake, finals_before):
    """The health check's login has the server-first-message and has not
    answered it yet: its PBKDF2 is running."""
    return fake.count("scram_final_received") == finals_before


def test_scram_health_login_does_not_stall_the_loop(service, pgfleet):
    fake = hostile_server()
    try:
        fleet = start_fleet(pgfleet, service, fake)
        finals = fake.count("scram_final_received")
        assert in_pbkdf2(fake, finals)
        # A client of the real database is served while that PBKDF2 runs:
        # on a loop stuck in it, this query would only complete after libpq
        # had sent the client-final-message.
        with fleet.connect(connect_timeout=60) as conn:
            conn.prepare_threshold = None
            assert conn.execute("SELECT 41 + 1").fetchone()[0] == 42
            served_during = in_pbkdf2(fake, finals)
            status, body = fleet.http_get("/healthz")
            healthz_during = in_pbkdf2(fake, finals)
            assert status == 200, body
            assert served_during, "the query waited for the health check's PBKDF2"
            assert healthz_during, "/healthz waited for the health check's PBKDF2"
            # And keeps being served, query after query, while checks of the
            # hostile replica go on (time out, are refused, start again).
            for i in range(20):
                assert conn.execute("SELECT %s::int", (i,)).fetchone()[0] == i
                status, _ = fleet.http_get("/healthz")
                assert status == 200
        # The hostile replica does not pass its check within
        # health_check_timeout: it is down, not up.
        fleet.wait_log(r'msg="replica (down|banned)" db=hostile addr=%s '
                       % fake.addr.replace(".", r"\."), timeout=30)
        assert fleet.running, fleet.log_tail()
    finally:
        fake.stop()


def test_stuck_login_is_not_started_twice(service, pgfleet):
    """One stuck login per replica: the checks that come due meanwhile fail
    at once instead of starting another thread (and another PBKDF2)."""
    fake = hostile_server()
    try:
        fleet = start_fleet(pgfleet, service, fake)
        fleet.wait_log(r'health check: the previous login is still running after 3s',
                       timeout=30)
        # Still the one login per worker (each worker checks its replicas).
        assert fake.count("scram_first_sent") <= fleet.workers or \
            fake.count("scram_final_received") > 0
        with fleet.connect() as conn:
            assert conn.execute("SELECT 1").fetchone()[0] == 1
    finally:
        fake.stop()


def test_sigterm_while_health_login_is_stuck(service, pgfleet):
    fake = hostile_server()
    try:
        fleet = start_fleet(pgfleet, service, fake)
        finals = fake.count("scram_final_received")
        results = []

        def client():
            try:
                with fleet.connect() as conn:
                    results.append(conn.execute("SELECT 1").fetchone()[0])
            except psycopg.Error as e:
                results.append(e)
        t = threading.Thread(target=client)
        t.start()
        t.join(timeout=60)
        assert results == [1], results
        assert in_pbkdf2(fake, finals)
        rc = fleet.stop(timeout=30)
        assert rc == 0, fleet.log_tail()
        # pgfleet ended while the login thread was still in its PBKDF2: the
        # stop did not wait for it (a loop stuck in it could not have
        # stopped before answering the server).
        assert in_pbkdf2(fake, finals), "pgfleet stopped only after the PBKDF2"
        assert fleet.sanitizer_reports() == [], fleet.sanitizer_reports()
    finally:
        fake.stop()


def test_logins_in_flight_are_capped(service, pgfleet):
    """health_check_max_logins bounds the login threads of the whole
    process: with the one slot held by a stuck login, another replica's
    fresh login is deferred to the next period (logged, naming the setting;
    that replica's state is left as it is) instead of starting another
    thread; checks over kept connections go on."""
    fake = hostile_server()
    try:
        fleet = pgfleet(settings={"health_check_period": 1, "health_check_timeout": 3,
                                  "health_check_max_logins": 1}, databases={
            fx.APP_DB: "host=%s port=%d dbname=%s" % (fx.SVC_NAME, fx.PG_PORT, fx.APP_DB),
            "hostile": fake.db_entry("hostile"), "hostile2": fake.db_entry("hostile2")})
        # One login at a time is still enough for the real replicas.
        assert fleet.wait_all_up(service.addrs, timeout=30), fleet.log_tail()
        fake.start()
        assert fake.wait_for("scram_first_sent", timeout=30), fleet.log_tail()
        fleet.wait_log(r'msg="health check deferred: health_check_max_logins reached" '
                       r'db=hostile2? addr=%s health_check_max_logins=1'
                       % fake.addr.replace(".", r"\."), timeout=30)
        # Only one of the two hostile replicas got a thread (per process).
        finals = fake.count("scram_final_received")
        assert fake.count("scram_first_sent") == 1 or finals > 0
        with fleet.connect() as conn:
            for i in range(5):
                assert conn.execute("SELECT %s::int", (i,)).fetchone()[0] == i
    finally:
        fake.stop()


def test_replica_forgotten_while_its_login_is_stuck(service, pgfleet):
    """A reload moves the hostile database to another address while its
    health check's login thread is in the PBKDF2: the old replica is freed
    at once, the thread keeps only its own copy of what it needs and cleans
    up when libpq returns."""
    fake = hostile_server()
    try:
        # A draining replica is reaped when a server connection is freed:
        # idle app servers are closed after a second.
        fleet = start_fleet(pgfleet, service, fake, server_idle_timeout=1)
        finals = fake.count("scram_final_received")
        with open(fleet.ini_path) as f:
            text = f.read()
        elsewhere = "host=%s port=%d dbname=hostile" % (HOSTILE_HOST,
                                                       fx.free_port(HOSTILE_HOST))
        assert fake.db_entry("hostile") in text
        with open(fleet.ini_path, "w") as f:
            f.write(text.replace(fake.db_entry("hostile"), elsewhere))
        fleet.reload()
        fleet.wait_log(r'msg="replica draining" db=hostile addr=%s'
                       % fake.addr.replace(".", r"\."), timeout=30)
        with fleet.connect() as conn:
            assert conn.execute("SELECT 6").fetchone()[0] == 6
        fleet.wait_log(r'msg="replica removed" db=hostile addr=%s'
                       % fake.addr.replace(".", r"\."), timeout=30)
        assert in_pbkdf2(fake, finals), "the login ended before the replica was removed"
        with fleet.connect() as conn:
            assert conn.execute("SELECT 7").fetchone()[0] == 7
        # The orphaned thread finishes its PBKDF2, answers, and goes away.
        assert fake.wait_for("scram_final_received", timeout=110, at_least=finals + 1)
        assert fake.wait_for("peer_closed", timeout=30)
        with fleet.connect() as conn:
            assert conn.execute("SELECT 8").fetchone()[0] == 8
        assert fleet.running, fleet.log_tail()
    finally:
        fake.stop()
