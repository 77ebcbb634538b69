"""Issue 18 item 1: auth_user / auth_query / auth_dbname.  Users that are
not in auth_file are checked against the secret the server holds
(PgBouncer's default query on pg_shadow, run as auth_user), then logged in
to the servers by SCRAM pass-through or with the md5 hash."""

import time

import psycopg
import pytest

import fixture as fx
from test_auth_passthrough import (_hba_md5_for, _hba_restore, drop_role, md5_secret,
                                   scram_secret, server_addr, set_role)

PASSWORD = "looked-up-secret"
AUTH_USERS = {fx.SUPERUSER: fx.SUPERUSER_PASSWORD}  # auth_user's password from auth_file


def login_fails(fleet, user, password, **kw):
    with pytest.raises(psycopg.OperationalError) as e:
        fleet.connect(user=user, password=password, **kw)
    return str(e.value)


@pytest.fixture
def roles(service):
    made = []

    def make(user, secret, pods=None):
        pods = list(range(len(service.addrs))) if pods is None else pods
        set_role(service, pods, user, secret)
        made.append((user, pods))
    yield make
    for user, pods in made:
        drop_role(service, pods, user)


def test_scram_user_from_auth_query_on_every_replica(service, pgfleet, roles):
    roles("aq_scram", scram_secret(PASSWORD))
    fleet = pgfleet(users=AUTH_USERS, settings={"auth_user": fx.SUPERUSER})
    seen = set()
    conns = [fleet.connect(user="aq_scram", password=PASSWORD) for _ in range(3)]
    try:
        deadline = time.monotonic() + 10  # a replica serves once its first check passed
        while seen != set(service.addrs) and time.monotonic() < deadline:
            for c in conns:
                seen.add(server_addr(c))
        assert conns[0].execute("SELECT current_user").fetchone()[0] == "aq_scram"
    finally:
        for c in conns:
            c.close()
    assert seen == set(service.addrs), seen
    # wrong password and unknown user: the same answer (no user enumeration)
    wrong = login_fails(fleet, "aq_scram", "nope")
    unknown = login_fails(fleet, "aq_nobody", "nope")
    assert 'password authentication failed for user "aq_scram"' in wrong
    assert 'password authentication failed for user "aq_nobody"' in unknown
    log = fleet.log_text()
    assert PASSWORD not in log and "SCRAM-SHA-256$" not in log and "pg_shadow" not in log
    # health checks log in as auth_user: the looked-up user's secret is no use to libpq
    assert "health check cannot log in" not in log, log


def test_md5_user_from_auth_query(service, pgfleet, roles):
    user = "aq_md5"
    roles(user, md5_secret(user, PASSWORD))
    pods = range(len(service.addrs))
    saved = _hba_md5_for(service, pods, user)
    try:
        fleet = pgfleet(users=AUTH_USERS, settings={"auth_user": fx.SUPERUSER})
        seen = set()
        with fleet.connect(user=user, password=PASSWORD) as conn:
            deadline = time.monotonic() + 10  # a replica serves once its first check passed
            while seen != set(service.addrs) and time.monotonic() < deadline:
                seen.add(server_addr(conn))
        assert seen == set(service.addrs), seen
        assert "password authentication failed" in login_fails(fleet, user, "nope")
    finally:
        _hba_restore(service, pods, saved)


def test_per_database_auth_user_and_security_definer_function(service, pgfleet, roles):
    """auth_user/auth_query/auth_dbname in the [databases] connect string, and
    the SECURITY DEFINER function PgBouncer's docs show, owned by a superuser
    and called by an unprivileged auth_user."""
    roles("aq_fn", scram_secret(PASSWORD))
    roles("aq_lookup", scram_secret("lookup-pw"))
    for i in range(len(service.addrs)):
        service.psql(i, "CREATE OR REPLACE FUNCTION public.user_lookup(i_username text, "
                        "OUT uname text, OUT phash text) RETURNS record AS $$ BEGIN "
                        "SELECT usename, passwd FROM pg_catalog.pg_shadow "
                        "WHERE usename = i_username INTO uname, phash; RETURN; END; $$ "
                        "LANGUAGE plpgsql SECURITY DEFINER; "
                        "REVOKE ALL ON FUNCTION public.user_lookup(text) FROM public; "
                        "GRANT EXECUTE ON FUNCTION public.user_lookup(text) TO aq_lookup",
                     dbname="postgres")
    try:
        fleet = pgfleet(
            users={"aq_lookup": "lookup-pw"},
            databases={"app": "host=%s port=5432 dbname=app auth_user=aq_lookup "
                              "auth_dbname=authdb auth_query='SELECT * FROM "
                              "public.user_lookup($1)'" % fx.SVC_NAME,
                       "authdb": "host=%s port=5432 dbname=postgres" % fx.SVC_NAME})
        with fleet.connect(user="aq_fn", password=PASSWORD) as conn:
            assert conn.execute("SELECT current_user").fetchone()[0] == "aq_fn"
        assert "password authentication failed" in login_fails(fleet, "aq_fn", "nope")
    finally:
        for i in range(len(service.addrs)):
            service.psql(i, "DROP FUNCTION IF EXISTS public.user_lookup(text)",
                         dbname="postgres")


def test_lookup_failures_are_clear_errors_not_hangs(service, pgfleet, roles):
    roles("aq_fail", scram_secret(PASSWORD))
    # a broken query
    fleet = pgfleet(users=AUTH_USERS, settings={"auth_user": fx.SUPERUSER,
                                                "auth_query": "SELEC usename, passwd FROM x"})
    t0 = time.monotonic()
    msg = login_fails(fleet, "aq_fail", PASSWORD)
    assert time.monotonic() - t0 < 5
    assert "auth_query failed" in msg and "syntax error" in msg, msg
    # auth_user cannot log in
    fleet = pgfleet(users={fx.SUPERUSER: "wrong"}, settings={"auth_user": fx.SUPERUSER})
    t0 = time.monotonic()
    msg = login_fails(fleet, "aq_fail", PASSWORD)
    assert time.monotonic() - t0 < 5
    assert "cannot log in as auth_user" in msg, msg
    assert "auth_query lookup failed" in fleet.log_text()
    # users of auth_file are not looked up: their logins go on
    fleet = pgfleet(users=dict(AUTH_USERS, app=fx.APP_PASSWORD),
                    settings={"auth_user": fx.SUPERUSER, "auth_query": "SELEC 1"})
    with fleet.connect() as conn:
        assert conn.execute("SELECT 1").fetchone() == (1,)


def test_cache_ttl(service, pgfleet, roles):
    user = "aq_ttl"
    roles(user, scram_secret(PASSWORD))
    fleet = pgfleet(users=AUTH_USERS, settings={"auth_user": fx.SUPERUSER,
                                                "auth_query_cache_ttl": "2"})
    with fleet.connect(user=user, password=PASSWORD) as conn:
        conn.execute("SELECT 1")
    t_changed = time.monotonic()
    set_role(service, range(len(service.addrs)), user, scram_secret("new-password"))
    # within the TTL the cached secret still answers for the client
    if time.monotonic() - t_changed < 1.5:
        assert "password authentication failed" in login_fails(fleet, user, "new-password")
    time.sleep(max(0, 2.3 - (time.monotonic() - t_changed)))
    with fleet.connect(user=user, password="new-password") as conn:
        assert conn.execute("SELECT current_user").fetchone()[0] == user
    assert "password authentication failed" in login_fails(fleet, user, PASSWORD)


def test_lookup_timeout_on_a_hung_server(service, pgfleet, roles):
    roles("aq_hang", scram_secret(PASSWORD), pods=[0])
    fleet = pgfleet(users=AUTH_USERS,
                    settings={"auth_user": fx.SUPERUSER, "auth_query_timeout": "2",
                              "health_check_period": "60"},
                    databases={"app": "host=%s port=5432 dbname=app" % service.addrs[0]})
    service.hang(0)
    try:
        t0 = time.monotonic()
        msg = login_fails(fleet, "aq_hang", PASSWORD)
        took = time.monotonic() - t0
        assert took < 6, took
        assert "auth_query" in msg or "auth_user" in msg, msg
    finally:
        service.unhang(0)


def test_asyncpg_pool_logs_in_concurrently_through_one_lookup(service, pgfleet, roles):
    """Eight logins at once of one looked-up user (they share the lookup),
    then queries with parameters through several server connections."""
    import asyncio

    import asyncpg
    user = "aq_async"
    roles(user, scram_secret(PASSWORD))
    fleet = pgfleet(users=AUTH_USERS, settings={"auth_user": fx.SUPERUSER})

    async def main():
        pool = await asyncpg.create_pool(
            "postgresql://%s:%s@%s:%d/%s" % (user, PASSWORD, fleet.host, fleet.port, fx.APP_DB),
            min_size=8, max_size=8, command_timeout=30)
        try:
            async def worker(w):
                for i in range(20):
                    assert await pool.fetchval("SELECT $1::int * 2", w * 100 + i) == \
                        2 * (w * 100 + i)
            await asyncio.gather(*(worker(w) for w in range(8)))
            return await pool.fetchval("SELECT current_user")
        finally:
            pool.terminate()

    assert asyncio.run(asyncio.wait_for(main(), 60)) == user
    with pytest.raises(asyncpg.InvalidPasswordError):
        asyncio.run(asyncpg.connect(user="aq_async_nobody", password="x", host=fleet.host,
                                    port=fleet.port, database=fx.APP_DB))


def test_cache_size_bounds_the_cache(service, pgfleet, roles):
    """auth_query_cache_size = 1: a second user's answer pushes the first
    one's out.  Seen by breaking auth_query afterwards (SET on the console):
    the cached user still logs in, the pushed-out one needs a lookup."""
    roles("aq_one", scram_secret(PASSWORD))
    roles("aq_two", scram_secret(PASSWORD))
    fleet = pgfleet(users=AUTH_USERS, settings={"auth_user": fx.SUPERUSER,
                                                "auth_query_cache_size": "1",
                                                "auth_query_cache_ttl": "60",
                                                "admin_users": fx.SUPERUSER})
    for user in ("aq_one", "aq_two"):
        with fleet.connect(user=user, password=PASSWORD) as conn:
            conn.execute("SELECT 1")
    admin = psycopg.connect(fleet.dsn(fx.SUPERUSER, fx.SUPERUSER_PASSWORD, "pgfleet"),
                            autocommit=True)
    admin.prepare_threshold = None
    try:
        admin.execute("SET auth_query = 'SELEC broken'")
    finally:
        admin.close()
    with fleet.connect(user="aq_two", password=PASSWORD) as conn:
        conn.execute("SELECT 1")
    msg = login_fails(fleet, "aq_one", PASSWORD)
    assert "auth_query failed" in msg, msg
