"""Issue 17, item 2: a pooled client's session in transaction (and
statement) pooling mode.

Session state that cannot follow a client across server connections
(temporary tables, PREPARE by SQL, cursors WITH HOLD, LISTEN, session-level
advisory locks, SET ROLE / SET SESSION AUTHORIZATION) pins the client to its
server connection until it leaves, with one NOTICE naming the feature
(transaction_session_state = pin, the default), is refused with 0A000
naming the feature and pointing to pool_mode = session (error), or runs
with one NOTICE per feature and session (warn); with pin and error no other
client ever finds it.

With default_pool_size 1 every client of a test shares one PostgreSQL
backend: whatever one leaves there, the next one would see."""

import asyncio
import os
import subprocess

import psycopg
import pytest

import fixture as fx

FEATURE_NOT_SUPPORTED = "0A000"


def one_pod(pgfleet, **settings):
    s = {"default_pool_size": 1}
    s.update(settings)
    db = "host=%s port=5432 dbname=app" % fx.pod_addr(0)
    if "db_pool_mode" in s:
        db += " pool_mode=%s" % s.pop("db_pool_mode")
    return pgfleet(settings=s, databases={"app": db})


def simple(conn, sql):
    """A simple-protocol Query: (sqlstate, primary message) of its error, or
    (None, None)."""
    res = conn.pgconn.exec_(sql.encode())
    if res.status == psycopg.pq.ExecStatus.FATAL_ERROR:
        return (res.error_field(psycopg.pq.DiagnosticField.SQLSTATE).decode(),
                res.error_field(psycopg.pq.DiagnosticField.MESSAGE_PRIMARY).decode())
    return None, None


def other_client(fleet, conn):
    """Another client on the same pool (the same worker with workers = N)."""
    return fleet.connect_on_worker(fleet.worker_of(conn))


# (statement, feature named in the message, what another client would see
# on the shared backend had it run: a query returning a count)
REFUSED = [
    ("CREATE TEMP TABLE st_t1(a int)", "temporary tables",
     "SELECT count(*) FROM pg_class WHERE relpersistence = 't'"),
    ("CREATE TEMPORARY VIEW st_v1 AS SELECT 1", "temporary tables",
     "SELECT count(*) FROM pg_class WHERE relpersistence = 't'"),
    ("CREATE TABLE pg_temp.st_t2(a int)", "temporary tables",
     "SELECT count(*) FROM pg_class WHERE relpersistence = 't'"),
    ("SELECT 1 AS a INTO TEMP st_t3", "temporary tables",
     "SELECT count(*) FROM pg_class WHERE relpersistence = 't'"),
    ("CREATE TEMP SEQUENCE st_s1", "temporary tables",
     "SELECT count(*) FROM pg_class WHERE relpersistence = 't'"),
    ("PREPARE st_p1 AS SELECT 1", "PREPARE",
     "SELECT count(*) FROM pg_prepared_statements WHERE name = 'st_p1'"),
    ("DECLARE st_c1 CURSOR WITH HOLD FOR SELECT 1", "cursors WITH HOLD",
     "SELECT count(*) FROM pg_cursors"),
    ("LISTEN st_channel", "LISTEN", "SELECT count(*) FROM pg_listening_channels()"),
    ("SELECT pg_advisory_lock(4217)", "session-level advisory locks",
     "SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' AND pid = pg_backend_pid()"),
    ("select PG_TRY_ADVISORY_LOCK_SHARED(4218)", "session-level advisory locks",
     "SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' AND pid = pg_backend_pid()"),
    ("SET ROLE %s" % fx.APP_USER, "SET ROLE and SET SESSION AUTHORIZATION",
     "SELECT count(*) FROM pg_settings WHERE name = 'role' AND setting <> 'none'"),
    ("SET SESSION AUTHORIZATION %s" % fx.APP_USER, "SET ROLE and SET SESSION AUTHORIZATION",
     "SELECT 0"),
]


@pytest.mark.parametrize("sql,feature,probe", REFUSED, ids=[r[0][:40] for r in REFUSED])
def test_session_state_refused_in_transaction_mode(service, pgfleet, sql, feature, probe):
    fleet = one_pod(pgfleet, transaction_session_state="error")
    with fleet.connect() as a:
        state, msg = simple(a, sql)
        assert state == FEATURE_NOT_SUPPORTED, (state, msg)
        assert msg.startswith(feature + " cannot follow a client"), msg
        assert "transaction pooling mode" in msg and "pool_mode = session" in msg, msg
        # refused every time, and the session goes on
        assert simple(a, sql)[0] == FEATURE_NOT_SUPPORTED
        assert a.execute("SELECT 7").fetchone()[0] == 7
        with other_client(fleet, a) as b:
            assert b.execute(probe).fetchone()[0] == 0
    assert fleet.wait_log("session state refused in a pooled session")


@pytest.mark.parametrize("sql,feature,probe", REFUSED, ids=[r[0][:40] for r in REFUSED])
def test_session_state_pins_the_client(service, pgfleet, sql, feature, probe):
    """The default: the state works for its client, as on a direct
    connection, across its transactions; nobody else sees it, neither while
    the client holds the connection nor after it left (DISCARD ALL)."""
    # pg_class lists every session's temporary relations: look at this
    # backend's own.
    probe = probe.replace("relpersistence = 't'",
                          "relpersistence = 't' AND relnamespace = pg_my_temp_schema()")
    probe = probe.replace("FROM pg_settings WHERE name = 'role' AND setting <> 'none'",
                          "WHERE current_setting('role') <> 'none'")
    fleet = one_pod(pgfleet, default_pool_size=2)
    notices = []
    with fleet.connect() as a:
        a.add_notice_handler(lambda d: notices.append((d.sqlstate, d.message_primary or "")))
        assert simple(a, sql) == (None, None)
        told = [m for _, m in notices if "keep this client on its server connection" in m]
        assert len(told) == 1 and told[0].startswith(feature), notices
        pid = a.execute("SELECT pg_backend_pid()").fetchone()[0]
        worker = fleet.worker_of(a)
        for _ in range(3):  # every later transaction runs on the same backend
            assert a.execute("SELECT pg_backend_pid()").fetchone()[0] == pid
        if probe != "SELECT 0":
            assert a.execute(probe).fetchone()[0] >= 1, probe
        with other_client(fleet, a) as b:
            assert b.execute("SELECT pg_backend_pid()").fetchone()[0] != pid
            assert b.execute(probe).fetchone()[0] == 0
        assert simple(a, sql)[0] in (None, "42P07", "42P05", "42P03", "42710")  # told once only
        assert len([m for _, m in notices if "keep this client" in m]) == 1
    assert fleet.wait_log("client pinned to its server connection")
    # Both connections busy at once: the pinned one came back reset.
    with fleet.connect_on_worker(worker, autocommit=False) as b, \
            fleet.connect_on_worker(worker, autocommit=False) as c:
        pids = {b.execute("SELECT pg_backend_pid()").fetchone()[0],
                c.execute("SELECT pg_backend_pid()").fetchone()[0]}
        assert pid in pids
        for conn in (b, c):
            assert conn.execute(probe).fetchone()[0] == 0
            assert conn.execute("SELECT count(*) FROM pg_class WHERE relpersistence = 't' "
                                "AND relnamespace = pg_my_temp_schema()").fetchone()[0] == 0


def test_pinned_session_without_reset_query_is_closed(service, pgfleet):
    fleet = one_pod(pgfleet, default_pool_size=2, server_reset_query="")
    with fleet.connect() as a:
        a.execute("CREATE TEMP TABLE st_pin(a int)")
        pid = a.execute("SELECT pg_backend_pid()").fetchone()[0]
        worker = fleet.worker_of(a)
    # Closed, not reset (logged at debug level): a new backend, no temp table.
    with fleet.connect_on_worker(worker, autocommit=False) as b, \
            fleet.connect_on_worker(worker, autocommit=False) as c:
        for conn in (b, c):
            assert conn.execute("SELECT pg_backend_pid()").fetchone()[0] != pid
            assert conn.execute("SELECT count(*) FROM pg_class WHERE relpersistence = 't' "
                                "AND relnamespace = pg_my_temp_schema()").fetchone()[0] == 0


def test_refusal_fails_the_transaction_block(service, pgfleet):
    fleet = one_pod(pgfleet, transaction_session_state="error")
    with fleet.connect() as a:
        assert simple(a, "BEGIN") == (None, None)
        assert simple(a, "CREATE TABLE st_keep(a int)") == (None, None)
        assert simple(a, "LISTEN st_x")[0] == FEATURE_NOT_SUPPORTED
        # as after any failed statement: the block is aborted
        assert simple(a, "SELECT 1")[0] == "25P02"
        assert simple(a, "COMMIT") == (None, None)  # ROLLBACK
        assert a.execute("SELECT to_regclass('st_keep') IS NULL").fetchone()[0]


def test_multi_statement_text_refused_whole(service, pgfleet):
    fleet = one_pod(pgfleet, transaction_session_state="error")
    with fleet.connect() as a:
        state, msg = simple(a, "CREATE TABLE st_multi(a int); SELECT pg_advisory_lock(1)")
        assert state == FEATURE_NOT_SUPPORTED and "advisory" in msg, msg
        assert a.execute("SELECT to_regclass('st_multi') IS NULL").fetchone()[0]


def test_what_stays_in_the_transaction_is_allowed(service, pgfleet):
    fleet = one_pod(pgfleet)
    with fleet.connect(autocommit=False) as a:
        a.execute("CREATE TEMP TABLE st_drop(a int) ON COMMIT DROP")
        a.execute("INSERT INTO st_drop VALUES (1)")
        a.execute("SELECT pg_advisory_xact_lock(77)")
        a.execute("SET LOCAL ROLE %s" % fx.APP_USER)
        cur = a.cursor("st_plain")  # DECLARE without HOLD
        cur.execute("SELECT generate_series(1, 3)")
        assert [r[0] for r in cur.fetchall()] == [1, 2, 3]
        cur.close()
        a.execute("SELECT pg_advisory_unlock_all()")
        a.commit()
        a.execute("SELECT pg_notify('st_chan', 'x')")  # NOTIFY is fine
        a.execute("UNLISTEN *")
        a.commit()
        with other_client(fleet, a) as b:
            assert b.execute("SELECT count(*) FROM pg_class WHERE relpersistence = 't'"
                             ).fetchone()[0] == 0


def test_extended_protocol_refused(service, pgfleet):
    """psycopg with parameters: Parse/Bind/Execute; a prepared one too."""
    fleet = one_pod(pgfleet, transaction_session_state="error")
    with psycopg.connect(fleet.dsn(), autocommit=True, prepare_threshold=0) as a:
        with pytest.raises(psycopg.errors.FeatureNotSupported) as e:
            a.execute("SELECT pg_advisory_lock(%s)", [4219])
        assert "session-level advisory locks" in str(e.value)
        with pytest.raises(psycopg.errors.FeatureNotSupported):
            a.execute("SELECT pg_try_advisory_lock(%s)", [4219], prepare=True)
        assert a.execute("SELECT %s::int + 1", [1]).fetchone()[0] == 2
        with other_client(fleet, a) as b:
            assert b.execute("SELECT count(*) FROM pg_locks WHERE locktype = 'advisory'"
                             ).fetchone()[0] == 0


def test_warn_mode_runs_it_with_one_notice(service, pgfleet):
    fleet = one_pod(pgfleet, transaction_session_state="warn")
    notices = []
    with fleet.connect() as a:
        # a Diagnostic is only valid inside the handler
        a.add_notice_handler(lambda d: notices.append(
            (d.sqlstate, d.message_primary, d.severity_nonlocalized)))
        a.execute("LISTEN st_warn")
        a.execute("LISTEN st_warn2")
        a.execute("PREPARE st_wp AS SELECT 1")
        a.execute("DEALLOCATE st_wp")
        a.execute("UNLISTEN *")
    mine = [n[:2] for n in notices]
    assert len(mine) == 2, mine
    assert mine[0][0] == FEATURE_NOT_SUPPORTED and mine[0][1].startswith("LISTEN cannot"), mine
    assert mine[1][1].startswith("PREPARE cannot"), mine
    assert all(n[2] == "NOTICE" for n in notices)
    assert fleet.wait_log("session state kept on a pooled connection")


def test_session_mode_keeps_everything(service, pgfleet):
    fleet = one_pod(pgfleet, pool_mode="session")
    with fleet.connect() as a:
        a.execute("CREATE TEMP TABLE st_sess(a int)")
        a.execute("LISTEN st_sess")
        a.execute("PREPARE st_sp AS SELECT 1")
        assert a.execute("EXECUTE st_sp").fetchone()[0] == 1
        a.execute("SELECT pg_advisory_lock(5)")


def test_statement_mode_names_its_mode(service, pgfleet):
    fleet = one_pod(pgfleet, db_pool_mode="statement", transaction_session_state="error")
    with fleet.connect() as a:
        state, msg = simple(a, "CREATE TEMP TABLE st_stmt(a int)")
        assert state == FEATURE_NOT_SUPPORTED, msg
        assert "statement pooling mode" in msg, msg


def test_psql_sees_the_error(service, pgfleet):
    fleet = one_pod(pgfleet, transaction_session_state="error")
    env = dict(os.environ, PGPASSWORD=fx.APP_PASSWORD)
    p = subprocess.run(["psql", "-X", "-v", "ON_ERROR_STOP=1", "-h", fleet.host, "-p",
                        str(fleet.port), "-U", fx.APP_USER, "-d", fx.APP_DB, "-c",
                        "CREATE TEMP TABLE st_psql(a int)"],
                       env=env, capture_output=True, text=True, timeout=30)
    assert p.returncode != 0
    assert "temporary tables cannot follow a client" in p.stderr, p.stderr
    assert "pool_mode = session" in p.stderr


def test_asyncpg_listener_refused(service, pgfleet):
    asyncpg = pytest.importorskip("asyncpg")
    fleet = one_pod(pgfleet, transaction_session_state="error")
    dsn = "postgresql://%s:%s@%s:%d/%s" % (fx.APP_USER, fx.APP_PASSWORD, fleet.host,
                                           fleet.port, fx.APP_DB)

    async def run():
        conn = await asyncpg.connect(dsn)
        try:
            with pytest.raises(asyncpg.exceptions.FeatureNotSupportedError) as e:
                await conn.add_listener("st_async", lambda *a: None)
            assert "LISTEN cannot follow a client" in str(e.value)
            with pytest.raises(asyncpg.exceptions.FeatureNotSupportedError):
                await conn.execute("CREATE TEMP TABLE st_async(a int)")
            assert await conn.fetchval("SELECT $1::int * 3", 5) == 15
        finally:
            await conn.close()

    asyncio.run(run())


def test_prepare_in_a_transaction_block_lasts_the_block(service, pgfleet):
    """PREPARE inside a block runs (told once) and is gone when the block
    ends, before another client could EXECUTE it."""
    fleet = one_pod(pgfleet, transaction_session_state="error")
    notices = []
    with fleet.connect() as a:
        a.add_notice_handler(lambda d: notices.append((d.sqlstate, d.message_primary)))
        for _ in range(2):
            assert simple(a, "BEGIN") == (None, None)
            assert simple(a, "PREPARE st_blk(int) AS SELECT $1 * 2") == (None, None)
            assert a.pgconn.exec_(b"EXECUTE st_blk(21)").get_value(0, 0) == b"42"
            assert simple(a, "COMMIT") == (None, None)
            assert simple(a, "EXECUTE st_blk(1)")[0] == "26000"
        with other_client(fleet, a) as b:
            assert b.execute("SELECT count(*) FROM pg_prepared_statements").fetchone()[0] == 0
        # outside a block: refused
        assert simple(a, "PREPARE st_out AS SELECT 1")[0] == FEATURE_NOT_SUPPORTED
    assert len(notices) == 1, notices
    assert notices[0][0] == FEATURE_NOT_SUPPORTED
    assert notices[0][1].startswith("PREPARE in a transaction block lasts"), notices


# ---------------------------------------------------------------------------
# SET tracking: a session-level setting stays the client's, whichever server
# connection its next transaction lands on.  With one server connection the
# two clients of each test take turns on the same backend: each must see
# its own settings, never the other's.


def show(conn, name):
    return conn.execute("SELECT current_setting(%s)", [name]).fetchone()[0]


def pair(fleet):
    a = fleet.connect()
    b = other_client(fleet, a)
    pid = a.execute("SELECT pg_backend_pid()").fetchone()[0]
    assert b.execute("SELECT pg_backend_pid()").fetchone()[0] == pid  # one backend
    return a, b


DEFAULTS = {"search_path": '"$user", public', "statement_timeout": "0",
            "intervalstyle": "postgres", "work_mem": "4MB"}


def test_set_values_follow_the_client(service, pgfleet):
    fleet = one_pod(pgfleet)
    a, b = pair(fleet)
    with a, b:
        a.execute("SET search_path = pg_catalog, \"My Schema\"")
        a.execute("SET SESSION statement_timeout TO '5s'")
        simple(a, "SET intervalstyle = postgres_verbose")
        a.execute("SET work_mem = 8192")
        for _ in range(3):
            for name, value in DEFAULTS.items():
                assert show(b, name) == value, name
            assert show(a, "search_path") == 'pg_catalog, "My Schema"'
            assert show(a, "statement_timeout") == "5s"
            assert show(a, "intervalstyle") == "postgres_verbose"
            assert show(a, "work_mem") == "8MB"
            assert a.pgconn.exec_(b"SELECT interval '1 day'").get_value(0, 0) == b"@ 1 day"
            assert b.pgconn.exec_(b"SELECT interval '1 day'").get_value(0, 0) == b"1 day"
        # b's own settings do not leak to a either
        b.execute("SET statement_timeout = '9s'")
        assert show(a, "statement_timeout") == "5s"
        assert show(b, "statement_timeout") == "9s"


def test_reset_and_reset_all(service, pgfleet):
    fleet = one_pod(pgfleet)
    a, b = pair(fleet)
    with a, b:
        a.execute("SET statement_timeout = '5s'")
        a.execute("SET work_mem = '8MB'")
        b.execute("SET work_mem = '16MB'")
        a.execute("RESET statement_timeout")
        assert show(a, "statement_timeout") == "0"
        assert show(a, "work_mem") == "8MB"
        a.execute("SET statement_timeout TO DEFAULT")
        a.execute("SET statement_timeout = '6s'")
        simple(a, "RESET ALL")
        assert show(a, "statement_timeout") == "0"
        assert show(a, "work_mem") == "4MB"
        assert show(b, "work_mem") == "16MB"


def test_reset_returns_to_the_startup_value(service, pgfleet):
    fleet = one_pod(pgfleet)
    with fleet.connect(application_name="st_start") as a:
        b = other_client(fleet, a)
        with b:
            a.execute("SET application_name = 'st_changed'")
            assert show(b, "application_name") != "st_changed"
            assert show(a, "application_name") == "st_changed"
            a.execute("RESET application_name")
            b.execute("SELECT 1")
            assert show(a, "application_name") == "st_start"


def test_set_local_and_rolled_back_sets_are_not_kept(service, pgfleet):
    fleet = one_pod(pgfleet)
    a, b = pair(fleet)
    with a, b:
        for sql in (["BEGIN", "SET LOCAL statement_timeout = '7s'", "COMMIT"],
                    ["BEGIN", "SET statement_timeout = '7s'", "ROLLBACK"],
                    ["BEGIN", "SET statement_timeout = '7s'", "SELECT 1/0", "COMMIT"],
                    ["BEGIN", "SELECT set_config('statement_timeout', '7s', true)",
                     "COMMIT"],
                    ["SET statement_timeout = 'not a time'"]):
            for q in sql:
                simple(a, q)
            b.execute("SET statement_timeout = '3s'")
            assert show(a, "statement_timeout") == "0", sql
            b.execute("RESET statement_timeout")
        # inside a block that commits: kept
        simple(a, "BEGIN")
        simple(a, "SET statement_timeout = '8s'")
        simple(a, "SAVEPOINT sp")
        simple(a, "SET statement_timeout = '9s'")
        simple(a, "ROLLBACK TO SAVEPOINT sp")
        simple(a, "COMMIT")
        b.execute("SET statement_timeout = '3s'")
        assert show(a, "statement_timeout") == "8s"
        assert show(b, "statement_timeout") == "3s"


def test_set_config_and_custom_parameters(service, pgfleet):
    fleet = one_pod(pgfleet)
    a, b = pair(fleet)
    with a, b:
        a.execute("SELECT set_config('search_path', 'pg_catalog', false)")
        a.execute("SELECT set_config('MyApp.Tenant', %s, false)", ["t-42"])
        simple(a, "SET myapp.owner = 'alice'")
        assert b.execute("SELECT current_setting('myapp.tenant', true)").fetchone()[0] in (
            None, "")
        assert show(b, "search_path") == DEFAULTS["search_path"]
        assert show(a, "search_path") == "pg_catalog"
        assert show(a, "myapp.tenant") == "t-42"
        assert show(a, "myapp.owner") == "alice"
        simple(a, "RESET myapp.owner")
        b.execute("SELECT 1")
        assert a.execute("SELECT current_setting('myapp.owner', true)").fetchone()[0] in (
            None, "")
        assert show(a, "myapp.tenant") == "t-42"


def test_prepared_set_config_is_followed(service, pgfleet):
    """A named statement that sets a parameter, run again and again."""
    fleet = one_pod(pgfleet)
    a = psycopg.connect(fleet.dsn(), autocommit=True, prepare_threshold=0)
    b = other_client(fleet, a)
    with a, b:
        for i in range(3):
            a.execute("SELECT set_config('statement_timeout', %s, false)", ["%ds" % (i + 1)])
            b.execute("SET statement_timeout = '59s'")
            assert show(a, "statement_timeout") == "%ds" % (i + 1)


def test_asyncpg_set_follows_the_client(service, pgfleet):
    asyncpg = pytest.importorskip("asyncpg")
    fleet = one_pod(pgfleet)
    dsn = "postgresql://%s:%s@%s:%d/%s" % (fx.APP_USER, fx.APP_PASSWORD, fleet.host,
                                           fleet.port, fx.APP_DB)

    async def run():
        a = await asyncpg.connect(dsn)
        b = await asyncpg.connect(dsn)
        try:
            await a.execute("SET search_path TO pg_catalog")
            await a.execute("SET statement_timeout = 4000")
            await b.execute("SET statement_timeout = 2000")
            for _ in range(3):
                assert await a.fetchval("SHOW search_path") == "pg_catalog"
                assert await a.fetchval("SHOW statement_timeout") == "4s"
                assert await b.fetchval("SHOW statement_timeout") == "2s"
                assert await b.fetchval("SHOW search_path") == DEFAULTS["search_path"]
            async with a.transaction():
                await a.execute("SET statement_timeout = 1000")
                raise_it = True
            assert raise_it
            try:
                async with a.transaction():
                    await a.execute("SET statement_timeout = 1500")
                    raise RuntimeError("roll back")
            except RuntimeError:
                pass
            assert await b.fetchval("SHOW statement_timeout") == "2s"
            assert await a.fetchval("SHOW statement_timeout") == "1s"
        finally:
            await a.close()
            await b.close()

    asyncio.run(run())


def test_psql_settings_while_another_client_runs(service, pgfleet):
    import threading
    fleet = one_pod(pgfleet)
    stop = threading.Event()
    seen = []

    def other():
        with fleet.connect() as b:
            while not stop.is_set():
                b.execute("SET statement_timeout = '9s'")
                seen.append(show(b, "statement_timeout"))

    t = threading.Thread(target=other)
    t.start()
    try:
        env = dict(os.environ, PGPASSWORD=fx.APP_PASSWORD)
        p = subprocess.run(["psql", "-X", "-A", "-t", "-h", fleet.host, "-p", str(fleet.port),
                            "-U", fx.APP_USER, "-d", fx.APP_DB,
                            "-c", "SET statement_timeout = '3s'",
                            "-c", "SELECT pg_sleep(0.3)",
                            "-c", "SHOW statement_timeout",
                            "-c", "SELECT pg_sleep(0.3)",
                            "-c", "SHOW statement_timeout"],
                           env=env, capture_output=True, text=True, timeout=60)
    finally:
        stop.set()
        t.join()
    assert p.returncode == 0, p.stderr
    lines = [l for l in p.stdout.splitlines() if l.strip()]
    assert lines == ["SET", "3s", "3s"], lines
    assert seen and set(seen) == {"9s"}, set(seen)


NODE_SCRIPT = r"""
const path = require('path');
const { Client } = require(path.join(process.argv[1], 'node_modules', 'pg'));
const cfg = JSON.parse(process.argv[2]);
(async () => {
  const a = new Client(cfg), b = new Client(cfg);
  await a.connect(); await b.connect();
  const out = [];
  await a.query("SET statement_timeout = '4s'");
  await a.query('SET search_path TO pg_catalog');
  await b.query("SET statement_timeout = '2s'");
  for (let i = 0; i < 3; i++) {
    out.push((await a.query('SHOW statement_timeout')).rows[0].statement_timeout);
    out.push((await b.query({text: 'SELECT current_setting($1) AS v',
                             values: ['statement_timeout']})).rows[0].v);
    out.push((await a.query('SHOW search_path')).rows[0].search_path);
  }
  await a.end(); await b.end();
  console.log(JSON.stringify(out));
})().catch((e) => { console.error(e.message); process.exit(1); });
"""


def test_node_postgres_set_follows_the_client(service, pgfleet):
    import json
    import shutil
    node = shutil.which("node")
    drivers = os.path.join(os.path.dirname(os.path.abspath(__file__)), "drivers")
    if not node or not os.path.isdir(os.path.join(drivers, "node_modules", "pg")):
        pytest.skip("node-postgres not installed (scripts/install-deps.sh)")
    fleet = one_pod(pgfleet)
    cfg = {"host": fleet.host, "port": fleet.port, "user": fx.APP_USER,
           "password": fx.APP_PASSWORD, "database": fx.APP_DB}
    p = subprocess.run([node, "-e", NODE_SCRIPT, drivers, json.dumps(cfg)],
                       capture_output=True, text=True, timeout=60)
    assert p.returncode == 0, p.stderr
    assert json.loads(p.stdout) == ["4s", "2s", "pg_catalog"] * 3


def test_reset_in_the_same_transaction_sees_the_startup_value(service, pgfleet):
    """psql-style simple queries: RESET gives back the startup value at once,
    and the driver is told (ParameterStatus)."""
    fleet = one_pod(pgfleet)
    with fleet.connect(application_name="st_start2") as a:
        with other_client(fleet, a) as b:
            b.execute("SET application_name = 'st_other'")
            simple(a, "BEGIN")
            simple(a, "SET application_name = 'st_changed'")
            simple(a, "SET statement_timeout = '4s'")
            simple(a, "RESET application_name")
            assert a.pgconn.exec_(b"SHOW application_name").get_value(0, 0) == b"st_start2"
            assert a.pgconn.parameter_status(b"application_name") == b"st_start2"
            simple(a, "SET application_name = 'st_again'")
            simple(a, "RESET ALL")
            assert a.pgconn.exec_(b"SHOW application_name").get_value(0, 0) == b"st_start2"
            assert a.pgconn.exec_(b"SHOW statement_timeout").get_value(0, 0) == b"0"
            simple(a, "COMMIT")
            assert show(b, "application_name") == "st_other"
            assert show(a, "application_name") == "st_start2"
            assert a.pgconn.parameter_status(b"application_name") == b"st_start2"
            # rolled back: the value before the block
            simple(a, "SET application_name = 'st_before'")
            simple(a, "BEGIN")
            simple(a, "RESET application_name")
            simple(a, "ROLLBACK")
            b.execute("SELECT 1")
            assert show(a, "application_name") == "st_before"


def test_startup_options_survive_set_and_reset(service, pgfleet):
    """options (-c): the startup values; SET over them, RESET back to them,
    in the same transaction (simple Query) and in the next (any protocol),
    while another client uses the same backend."""
    fleet = one_pod(pgfleet)
    opts = "'-c statement_timeout=5s -c search_path=pg_catalog'"  # quoted in the DSN
    with fleet.connect(options=opts) as a:
        with other_client(fleet, a) as b:
            assert show(a, "statement_timeout") == "5s"
            a.execute("SET statement_timeout = '1s'")
            a.execute("SET search_path = public")
            b.execute("SET statement_timeout = '2s'")
            assert show(a, "statement_timeout") == "1s"
            assert show(a, "search_path") == "public"
            simple(a, "BEGIN")
            simple(a, "RESET statement_timeout")
            assert a.pgconn.exec_(b"SHOW statement_timeout").get_value(0, 0) == b"5s"
            simple(a, "COMMIT")
            a.execute("RESET search_path")  # extended protocol
            assert show(b, "statement_timeout") == "2s"
            assert show(a, "search_path") == "pg_catalog"
            assert show(a, "statement_timeout") == "5s"
            a.execute("SET statement_timeout = '3s'")
            simple(a, "RESET ALL")
            assert show(a, "statement_timeout") == "5s"
            assert show(b, "statement_timeout") == "2s"
