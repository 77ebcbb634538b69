"""Startup parameters (issue 17, items 1, 3 and 4): `options` (-c name=value,
--name=value) and any GUC sent as a startup parameter apply to the client's
session in every pool mode, following the client from one server
connection to the next; what pgfleet cannot honour refuses the login with
an error naming it (unless ignore_startup_parameters drops it); RESET
returns the client's own startup value; new clients are greeted with the
newest login's role/database defaults, refreshed by RECONNECT and RELOAD.

Real clients: psql (PGOPTIONS), psycopg (options=), asyncpg
(server_settings=), node-postgres (options, statement_timeout) and pgjdbc
(options, currentSchema)."""

import asyncio
import json
import os
import shutil
import subprocess

import psycopg
import pytest

import fixture as fx

PG_BIN = fx.PG_BIN
HERE = os.path.dirname(os.path.abspath(__file__))
DRIVERS = os.path.join(HERE, "drivers")
PGJDBC_JAR = "/usr/share/java/postgresql.jar"
MODES = ["session", "transaction"]


def one_pod(pgfleet, mode, pool_size=1, **settings):
    """pgfleet in `mode` on pod 0 alone with `pool_size` server connections:
    clients take turns on the same backends."""
    s = {"pool_mode": mode, "default_pool_size": pool_size}
    s.update(settings)
    return pgfleet(settings=s,
                   databases={"app": "host=%s port=5432 dbname=app" % fx.pod_addr(0)})


def psql(fleet, sql, pgoptions=None, check=True, extra_env=None):
    env = dict(os.environ, PGPASSWORD=fx.APP_PASSWORD, PGCONNECT_TIMEOUT="10")
    env.pop("PGOPTIONS", None)
    if pgoptions is not None:
        env["PGOPTIONS"] = pgoptions
    env.update(extra_env or {})
    argv = [os.path.join(PG_BIN, "psql"), "-X", "-A", "-t", "-v", "ON_ERROR_STOP=1",
            "-h", fleet.host, "-p", str(fleet.port), "-U", fx.APP_USER, "-d", fx.APP_DB]
    for s in ([sql] if isinstance(sql, str) else sql):
        argv += ["-c", s]
    p = subprocess.run(argv, env=env, capture_output=True, text=True, timeout=60)
    if check:
        assert p.returncode == 0, p.stderr
    return p


def connect(fleet, **kw):
    conn = psycopg.connect(fleet.dsn(fx.APP_USER, fx.APP_PASSWORD, fx.APP_DB), autocommit=True,
                           **kw)
    conn.prepare_threshold = None
    return conn


def show(conn, name):
    return conn.execute("SELECT current_setting(%s)", (name,)).fetchone()[0]


# ---- psql and PGOPTIONS --------------------------------------------------------


@pytest.mark.parametrize("mode", MODES)
def test_pgoptions_intervalstyle(service, pgfleet, mode):
    """The issue's first example: direct, postgres_verbose; through pgfleet
    it was postgres."""
    fleet = one_pod(pgfleet, mode)
    p = psql(fleet, ["SHOW intervalstyle", "SELECT interval '1 day 2 hours'"],
             pgoptions="-c intervalstyle=postgres_verbose")
    assert p.stdout.split("\n")[:2] == ["postgres_verbose", "@ 1 day 2 hours"], p.stdout
    # A client without options on the same server connection: the default.
    p = psql(fleet, "SHOW intervalstyle")
    assert p.stdout.strip() == "postgres", p.stdout


@pytest.mark.parametrize("mode", MODES)
def test_pgoptions_search_path_and_statement_timeout(service, pgfleet, mode):
    fleet = one_pod(pgfleet, mode)
    # psql's own application_name startup parameter wins over options, as
    # PostgreSQL applies the startup packet's parameters after options.
    p = psql(fleet, ["SHOW search_path", "SHOW statement_timeout", "SHOW lock_timeout",
                     "SHOW DateStyle", "SHOW application_name",
                     "SELECT current_schemas(false)::text"],
             pgoptions=r"-c search_path=s17,public -c statement_timeout=1234 "
                       r"--lock-timeout=2s -cdatestyle=SQL,\ DMY -c application_name=opt")
    assert p.stdout.split("\n")[:6] == ["s17, public", "1234ms", "2s", "SQL, DMY", "psql",
                                        "{public}"], p.stdout
    # The statement timeout is real: a longer query is cancelled by it.
    p = psql(fleet, "SELECT pg_sleep(3)", pgoptions="-c statement_timeout=300", check=False)
    assert p.returncode != 0 and "statement timeout" in p.stderr, p.stderr
    p = psql(fleet, ["SHOW search_path", "SHOW statement_timeout"])
    assert p.stdout.split("\n")[:2] == ['"$user", public', "0"], p.stdout


@pytest.mark.parametrize("mode", MODES)
def test_settings_follow_clients_interleaving_on_one_server(service, pgfleet, mode):
    """pool_size 1: in transaction mode four clients with different startup
    settings take turns on one backend, each seeing its own values on every
    turn; in session mode each client keeps its backend and its values."""
    fleet = one_pod(pgfleet, mode, pool_size=1 if mode == "transaction" else 4)
    want = [
        {"search_path": "a17", "statement_timeout": "11s", "intervalstyle": "iso_8601",
         "extra_float_digits": "2"},
        {"search_path": "b17, public", "statement_timeout": "22s",
         "intervalstyle": "sql_standard", "extra_float_digits": "0"},
        {"search_path": "c17", "statement_timeout": "0", "intervalstyle": "postgres",
         "extra_float_digits": "1"},
        {},  # none: the server's defaults
    ]
    defaults = {"search_path": '"$user", public', "statement_timeout": "0",
                "intervalstyle": "postgres", "extra_float_digits": "1"}
    conns = []
    try:
        worker = None
        for w in want:
            opts = " ".join("-c %s=%s" % (k, v.replace(" ", "\\ ")) for k, v in w.items())
            kw = {"options": opts} if opts else {}
            for _ in range(64):  # all on one worker (workers = N): pools are per worker
                c = connect(fleet, **kw)
                if worker is None:
                    worker = fleet.worker_of(c)
                if fleet.worker_of(c) == worker:
                    break
                c.close()
            conns.append(c)
        pids = set()
        for _ in range(4):
            for c, w in zip(conns, want):
                row = c.execute("SELECT pg_backend_pid(), current_setting('search_path'), "
                                "current_setting('statement_timeout'), "
                                "current_setting('intervalstyle'), "
                                "current_setting('extra_float_digits')").fetchone()
                pids.add(row[0])
                exp = dict(defaults, **w)
                assert row[1:] == (exp["search_path"], exp["statement_timeout"],
                                   exp["intervalstyle"], exp["extra_float_digits"]), (row, w)
        assert len(pids) == (1 if mode == "transaction" else 4), pids
    finally:
        for c in conns:
            c.close()


# ---- RESET returns the client's startup value (item 4) ---------------------------


@pytest.mark.parametrize("mode", MODES)
def test_reset_returns_the_startup_value(service, pgfleet, mode):
    fleet = one_pod(pgfleet, mode, pool_size=2)
    with connect(fleet, options="-c datestyle=SQL,\\ DMY -c intervalstyle=iso_8601") as conn:
        assert show(conn, "DateStyle") == "SQL, DMY"
        conn.execute("SET datestyle = 'German, DMY'")
        conn.execute("SET intervalstyle = 'postgres'")
        assert show(conn, "DateStyle") == "German, DMY"
        conn.execute("RESET datestyle")
        assert show(conn, "DateStyle") == "SQL, DMY"
        assert conn.info.parameter_status("DateStyle") == "SQL, DMY"
        conn.execute("RESET ALL")
        assert show(conn, "DateStyle") == "SQL, DMY"
        assert show(conn, "IntervalStyle") == "iso_8601"
        assert conn.info.parameter_status("IntervalStyle") == "iso_8601"
        # An explicit SET to the server's default value is not a RESET.
        conn.execute("SET intervalstyle = 'postgres'")
        assert show(conn, "IntervalStyle") == "postgres"
        assert conn.info.parameter_status("IntervalStyle") == "postgres"
        assert show(conn, "IntervalStyle") == "postgres"
        # (A RESET from here sends no ParameterStatus, the server's value
        # not changing: that one needs the statement read, issue 17 item 2.)
        conn.execute("SET intervalstyle = 'sql_standard'")
        conn.execute("SET intervalstyle TO DEFAULT")
        assert show(conn, "IntervalStyle") == "iso_8601"
        # A RESET inside a transaction block that rolls back: undone.
        conn.execute("SET datestyle = 'German, DMY'")
        conn.execute("BEGIN")
        conn.execute("RESET datestyle")
        assert show(conn, "DateStyle") == "SQL, DMY"
        conn.execute("ROLLBACK")
        assert show(conn, "DateStyle") == "German, DMY"
        conn.execute("RESET datestyle")
        # another client on the same backends meanwhile: its own defaults
        with connect(fleet) as other:
            assert show(other, "DateStyle") == "ISO, MDY"
        for _ in range(3):
            assert show(conn, "DateStyle") == "SQL, DMY"


def extended(conn, sql):
    """sql over the extended protocol (binary results need it), as pgjdbc
    sends everything; the first column of its first row, if any."""
    cur = conn.cursor(binary=True)
    cur.execute(sql)
    return cur.fetchone()[0] if cur.description else None


@pytest.mark.parametrize("mode", MODES)
def test_reset_over_the_extended_protocol_returns_the_startup_value(service, pgfleet, mode):
    """RESET in a Parse/Bind/Execute: the startup value comes back at once,
    in the same transaction (undone with it), not only from the next one."""
    fleet = one_pod(pgfleet, mode, pool_size=2)
    with connect(fleet, options="-c datestyle=SQL,\\ DMY -c intervalstyle=iso_8601") as conn:
        conn.execute("SET datestyle = 'German, DMY'")
        conn.execute("BEGIN")
        extended(conn, "RESET datestyle")
        assert extended(conn, "SHOW datestyle") == "SQL, DMY"
        assert show(conn, "DateStyle") == "SQL, DMY"
        conn.execute("ROLLBACK")
        assert show(conn, "DateStyle") == "German, DMY"
        conn.execute("SET intervalstyle = 'postgres'")
        conn.execute("BEGIN")
        extended(conn, "RESET ALL")
        assert extended(conn, "SHOW datestyle") == "SQL, DMY"
        assert extended(conn, "SHOW intervalstyle") == "iso_8601"
        conn.execute("COMMIT")
        assert conn.info.parameter_status("DateStyle") == "SQL, DMY"
        assert conn.info.parameter_status("IntervalStyle") == "iso_8601"
        # a pipeline: the RESET and what follows it before the Sync
        conn.execute("SET datestyle = 'German, DMY'")
        with conn.pipeline():
            c1 = conn.cursor(binary=True)
            c1.execute("RESET datestyle")
            c2 = conn.cursor(binary=True)
            c2.execute("SHOW datestyle")
        assert c2.fetchone()[0] == "SQL, DMY"
        # a name without a startup value: the default, nothing hidden to do
        conn.execute("SET timezone = 'Asia/Tokyo'")
        extended(conn, "RESET timezone")
        assert show(conn, "TimeZone") == "Etc/UTC"
        # another client on the same backends meanwhile: its own defaults
        with connect(fleet) as other:
            assert show(other, "DateStyle") == "ISO, MDY"
        for _ in range(3):
            assert show(conn, "DateStyle") == "SQL, DMY"
    # a failed transaction: the RESET fails, so does nothing pgfleet adds
    with connect(fleet, options="-c datestyle=SQL,\\ DMY") as conn:
        conn.execute("BEGIN")
        with pytest.raises(psycopg.errors.DivisionByZero):
            conn.execute("SELECT 1/0")
        with pytest.raises(psycopg.errors.InFailedSqlTransaction):
            extended(conn, "RESET datestyle")
        conn.execute("ROLLBACK")
        assert show(conn, "DateStyle") == "SQL, DMY"


@pytest.mark.parametrize("mode", MODES)
def test_reset_from_the_default_value_returns_the_startup_value(service, pgfleet, mode):
    """pg_regress's date test: the session's value is the server's default
    when the client RESETs, so the server reports no change; the startup
    value must still come back (psql, PGDATESTYLE as pg_regress sets it)."""
    fleet = one_pod(pgfleet, mode, pool_size=2)
    p = psql(fleet, ["SET datestyle TO iso", "SET datestyle TO mdy", "SHOW datestyle",
                     "RESET datestyle", "SHOW datestyle", "SELECT 1"],
             extra_env={"PGDATESTYLE": "Postgres, MDY"})
    shown = [l for l in p.stdout.splitlines() if l not in ("SET", "RESET", "")]
    assert shown == ["ISO, MDY", "Postgres, MDY", "1"], p.stdout


# ---- other drivers ----------------------------------------------------------------


@pytest.mark.parametrize("mode", MODES)
def test_asyncpg_server_settings(service, pgfleet, mode):
    import asyncpg
    fleet = one_pod(pgfleet, mode, pool_size=1 if mode == "transaction" else 2)
    dsn = "postgresql://%s:%s@%s:%d/%s" % (fx.APP_USER, fx.APP_PASSWORD, fleet.host,
                                           fleet.port, fx.APP_DB)

    async def run():
        a = await asyncpg.connect(dsn, server_settings={"search_path": "x17",
                                                        "statement_timeout": "1500",
                                                        "application_name": "apg-a"},
                                  statement_cache_size=0)
        b = await asyncpg.connect(dsn, server_settings={"application_name": "apg-b"},
                                  statement_cache_size=0)
        try:
            out = []
            for _ in range(3):
                out.append(await a.fetchrow("SELECT current_setting('search_path') sp, "
                                            "current_setting('statement_timeout') st, "
                                            "current_setting('application_name') an"))
                out.append(await b.fetchrow("SELECT current_setting('search_path') sp, "
                                            "current_setting('statement_timeout') st, "
                                            "current_setting('application_name') an"))
            return [tuple(r) for r in out]
        finally:
            await a.close()
            await b.close()

    rows = asyncio.run(run())
    for i, r in enumerate(rows):
        if i % 2 == 0:
            assert r == ("x17", "1500ms", "apg-a"), rows
        else:
            assert r == ('"$user", public', "0", "apg-b"), rows


NODE_SCRIPT = r"""
const path = require('path');
const { Client } = require(path.join(process.argv[2], 'node_modules', 'pg'));
const cfg = JSON.parse(process.argv[3]);
async function main() {
  const a = new Client(Object.assign({}, cfg.conn, {
    options: '-c search_path=n17 -c intervalstyle=sql_standard',
    statement_timeout: 2500, application_name: 'node-a' }));
  const b = new Client(Object.assign({}, cfg.conn, { application_name: 'node-b' }));
  await a.connect(); await b.connect();
  const q = "SELECT current_setting('search_path') AS sp, " +
            "current_setting('statement_timeout') AS st, " +
            "current_setting('intervalstyle') AS iv, current_setting('application_name') AS an";
  const rows = [];
  for (let i = 0; i < 3; i++) {
    rows.push((await a.query(q)).rows[0]);
    rows.push((await b.query(q)).rows[0]);
  }
  await a.end(); await b.end();
  console.log(JSON.stringify(rows));
}
main().catch((e) => { console.log(JSON.stringify({ fatal: String(e) })); process.exit(1); });
"""


@pytest.mark.parametrize("mode", MODES)
def test_node_postgres_options_and_statement_timeout(service, pgfleet, mode, tmp_path):
    node = shutil.which("node")
    assert node, "node is not installed (scripts/install-deps.sh)"
    assert os.path.isfile(os.path.join(DRIVERS, "node_modules", "pg", "package.json")), \
        "npm pg missing: run scripts/install-deps.sh"
    fleet = one_pod(pgfleet, mode, pool_size=1 if mode == "transaction" else 2)
    script = tmp_path / "node_opts.js"
    script.write_text(NODE_SCRIPT)
    cfg = {"conn": {"host": fleet.host, "port": fleet.port, "user": fx.APP_USER,
                    "password": fx.APP_PASSWORD, "database": fx.APP_DB}}
    p = subprocess.run([node, str(script), DRIVERS, json.dumps(cfg)], capture_output=True,
                       text=True, timeout=45)
    assert p.returncode == 0, p.stdout + p.stderr[-3000:]
    rows = json.loads(p.stdout.strip().splitlines()[-1])
    for i, r in enumerate(rows):
        if i % 2 == 0:
            assert r == {"sp": "n17", "st": "2500ms", "iv": "sql_standard", "an": "node-a"}, rows
        else:
            assert r == {"sp": '"$user", public', "st": "0", "iv": "postgres",
                         "an": "node-b"}, rows


JAVA_SOURCE = r"""
import java.sql.*;
import java.util.Properties;
public class PgjdbcOptions {
    public static void main(String[] a) throws Exception {
        Properties pa = new Properties();
        pa.setProperty("user", a[1]); pa.setProperty("password", a[2]);
        pa.setProperty("options", "-c statement_timeout=3500 -c intervalstyle=iso_8601");
        pa.setProperty("currentSchema", "j17");
        pa.setProperty("ApplicationName", "jdbc-a");
        Properties pb = new Properties();
        pb.setProperty("user", a[1]); pb.setProperty("password", a[2]);
        pb.setProperty("ApplicationName", "jdbc-b");
        try (Connection ca = DriverManager.getConnection(a[0], pa);
             Connection cb = DriverManager.getConnection(a[0], pb)) {
            StringBuilder out = new StringBuilder("[");
            String q = "SELECT current_setting('search_path'), current_setting('statement_timeout'),"
                     + " current_setting('intervalstyle'), current_setting('application_name')";
            for (int i = 0; i < 3; i++) {
                for (Connection c : new Connection[] {ca, cb}) {
                    try (Statement st = c.createStatement(); ResultSet rs = st.executeQuery(q)) {
                        rs.next();
                        if (out.length() > 1) out.append(",");
                        out.append("[\"").append(rs.getString(1).replace("\"", "\\\"")).append("\",\"")
                           .append(rs.getString(2)).append("\",\"").append(rs.getString(3))
                           .append("\",\"").append(rs.getString(4)).append("\"]");
                    }
                }
            }
            // RESET inside a transaction (pgjdbc sends everything with the
            // extended protocol): the startup value, at once
            ca.setAutoCommit(false);
            try (Statement st = ca.createStatement()) {
                st.execute("SET intervalstyle = 'postgres'");
                st.execute("RESET intervalstyle");
                try (ResultSet rs = st.executeQuery("SELECT current_setting('intervalstyle')")) {
                    rs.next();
                    out.append(",[\"reset\",\"").append(rs.getString(1)).append("\"]");
                }
            }
            ca.commit();
            System.out.println(out.append("]"));
        }
    }
}
"""


def test_pgjdbc_options_and_current_schema(service, pgfleet, tmp_path):
    """pgjdbc's options and currentSchema; a RESET in a transaction gives
    the startup value back at once (pgjdbc uses the extended protocol)."""
    javac, java = shutil.which("javac"), shutil.which("java")
    assert javac and java, "no JDK (scripts/install-deps.sh)"
    assert os.path.isfile(PGJDBC_JAR), \
        "%s missing: apt-get install libpostgresql-jdbc-java" % PGJDBC_JAR
    src = tmp_path / "PgjdbcOptions.java"
    src.write_text(JAVA_SOURCE)
    subprocess.run([javac, "-d", str(tmp_path), "-cp", PGJDBC_JAR, str(src)], check=True,
                   capture_output=True, timeout=120)
    fleet = one_pod(pgfleet, "transaction", pool_size=1)
    url = "jdbc:postgresql://%s:%d/%s" % (fleet.host, fleet.port, fx.APP_DB)
    p = subprocess.run([java, "-cp", "%s:%s" % (tmp_path, PGJDBC_JAR), "PgjdbcOptions", url,
                        fx.APP_USER, fx.APP_PASSWORD], capture_output=True, text=True,
                       timeout=60)
    assert p.returncode == 0, p.stdout[-2000:] + p.stderr[-3000:]
    rows = json.loads(p.stdout.strip().splitlines()[-1])
    assert rows.pop() == ["reset", "iso_8601"], rows
    for i, r in enumerate(rows):
        if i % 2 == 0:
            assert r == ["j17", "3500ms", "iso_8601", "jdbc-a"], rows
        else:
            assert r == ['"$user", public', "0", "postgres", "jdbc-b"], rows


# ---- what cannot be honoured is refused, naming it ----------------------------------


def login_error(fleet, options=None, **settings):
    """The error a login gets (asyncpg: it shows a login error's SQLSTATE)."""
    import asyncpg
    if options is not None:
        settings["options"] = options
    dsn = "postgresql://%s:%s@%s:%d/%s" % (fx.APP_USER, fx.APP_PASSWORD, fleet.host,
                                           fleet.port, fx.APP_DB)

    async def run():
        c = await asyncpg.connect(dsn, server_settings=settings)
        await c.close()
    with pytest.raises(asyncpg.PostgresError) as e:
        asyncio.run(run())
    return e.value


@pytest.mark.parametrize("mode", MODES)
def test_unknown_or_bad_setting_refuses_the_login(service, pgfleet, mode):
    fleet = one_pod(pgfleet, mode, pool_size=2)
    for _ in range(2):  # the second time too: a refused set is never cached
        e = login_error(fleet, options="-c nosuch_guc17=1")
        assert e.sqlstate == "42704", e
        assert 'unrecognized configuration parameter "nosuch_guc17"' in str(e), e
    e = login_error(fleet, options="-c statement_timeout=soon")
    assert e.sqlstate == "22023" and "statement_timeout" in str(e), e
    p = psql(fleet, "SELECT 1", pgoptions="-c nosuch_guc17=1", check=False)
    assert p.returncode != 0 and "nosuch_guc17" in p.stderr, p.stderr
    # an options switch pgfleet does not take
    e = login_error(fleet, options="-B 100")
    assert e.sqlstate == "0A000" and '"-B"' in str(e), e
    e = login_error(fleet, options="-c statement_timeout")
    assert e.sqlstate == "42601" and "statement_timeout" in str(e), e
    # the pooler still serves, and the good settings still work
    with connect(fleet, options="-c statement_timeout=4s") as conn:
        assert show(conn, "statement_timeout") == "4s"
    fleet.wait_log(r'msg="client closed".*reason="unrecognized configuration parameter')


def test_ignore_startup_parameters_drops_them(service, pgfleet):
    fleet = one_pod(pgfleet, "transaction", pool_size=2,
                    ignore_startup_parameters="nosuch_guc17, Extra_Float_Digits")
    with connect(fleet, options="-c nosuch_guc17=1 -c extra_float_digits=3 "
                                "-c intervalstyle=iso_8601") as conn:
        assert show(conn, "extra_float_digits") == "1"  # dropped: the default
        assert show(conn, "intervalstyle") == "iso_8601"  # the rest still applies
    import asyncpg
    dsn = "postgresql://%s:%s@%s:%d/%s" % (fx.APP_USER, fx.APP_PASSWORD, fleet.host,
                                           fleet.port, fx.APP_DB)

    async def run():
        c = await asyncpg.connect(dsn, server_settings={"nosuch_guc17": "x"})
        try:
            return await c.fetchval("SELECT 1")
        finally:
            await c.close()
    assert asyncio.run(run()) == 1
    # `options` itself: the whole parameter dropped, switches unread.
    fleet2 = one_pod(pgfleet, "transaction", ignore_startup_parameters="options")
    p = psql(fleet2, "SHOW intervalstyle", pgoptions="-B 100 -c intervalstyle=iso_8601")
    assert p.stdout.strip() == "postgres", p.stdout


def test_over_limit_count_and_length_are_refused(service, pgfleet):
    fleet = one_pod(pgfleet, "transaction", max_client_params=3, max_client_param_size=64)
    e = login_error(fleet, options=" ".join("-c x17.p%d=1" % i for i in range(5)))
    assert e.sqlstate == "53400", e
    assert "too many startup parameters" in str(e) and "max_client_params" in str(e), e
    e = login_error(fleet, options="-c search_path=" + "s" * 80)
    assert e.sqlstate == "54000", e
    assert '"search_path" is too long' in str(e) and "max_client_param_size" in str(e), e
    with connect(fleet, options="-c search_path=" + "s" * 60) as conn:
        assert show(conn, "search_path") == "s" * 60  # at the limit: taken whole


# ---- role defaults are not frozen (item 3) -----------------------------------------


def app_backends(service):
    """Backend pids of the app user's sessions on pod 0 (pgfleet's server
    connections), the health check's excluded."""
    out = service.psql(0, "SELECT pid FROM pg_stat_activity WHERE usename = '%s' "
                          "AND datname = 'app' AND pid <> pg_backend_pid() "
                          "AND application_name = ''" % fx.APP_USER)
    return set(int(x) for x in out.split())


def wait_for_greeting(fleet, value, in_a_row, deadline_s=20):
    """RELOAD refreshes the defaults with a fresh login per pool (each
    worker's), in the background: new clients see them once it is done."""
    import time
    end = time.monotonic() + deadline_s
    seen, run = None, 0
    while time.monotonic() < end:
        with connect(fleet) as conn:
            seen = conn.info.parameter_status("IntervalStyle")
        run = run + 1 if seen == value else 0
        if run == in_a_row:
            return
        time.sleep(0.05)
    raise AssertionError("new clients still greeted with IntervalStyle=%s" % seen)


@pytest.mark.parametrize("command", ["RECONNECT app", "RELOAD"])
@pytest.mark.parametrize("workers", [1, 2])
def test_alter_role_then_reconnect_reaches_new_clients(service, pgfleet, workers, command):
    fleet = pgfleet(settings={"pool_mode": "transaction", "default_pool_size": 2,
                              "workers": workers, "admin_users": fx.APP_USER},
                    databases={"app": "host=%s port=5432 dbname=app" % fx.pod_addr(0)})
    with connect(fleet) as conn:
        assert conn.info.parameter_status("IntervalStyle") == "postgres"
    service.psql(0, "ALTER ROLE %s SET intervalstyle = 'sql_standard'" % fx.APP_USER)
    try:
        with psycopg.connect(fleet.dsn(fx.APP_USER, fx.APP_PASSWORD, "pgfleet"),
                             autocommit=True) as admin:
            admin.execute(command)
        if command == "RELOAD":
            wait_for_greeting(fleet, "sql_standard", in_a_row=4 * workers)
        for _ in range(2 * workers):  # every worker's clients
            with connect(fleet) as conn:
                assert conn.info.parameter_status("IntervalStyle") == "sql_standard"
                assert show(conn, "intervalstyle") == "sql_standard"
        # The client's own value still wins over the role's default.
        with connect(fleet, options="-c intervalstyle=iso_8601") as conn:
            assert conn.info.parameter_status("IntervalStyle") == "iso_8601"
            assert show(conn, "intervalstyle") == "iso_8601"
            conn.execute("RESET intervalstyle")
            assert show(conn, "intervalstyle") == "iso_8601"
    finally:
        service.psql(0, "ALTER ROLE %s RESET intervalstyle" % fx.APP_USER)


def test_reload_with_unchanged_defaults_keeps_server_connections(service, pgfleet):
    """RELOAD costs one fresh login per pool: connections whose defaults are
    still the role's stay, a busy one is never taken from its client.  One
    worker: with N, each worker probes its own pools, and room for the
    probes is shared, so which backends stay is not this exact set."""
    fleet = pgfleet(settings={"pool_mode": "transaction", "default_pool_size": 3,
                              "admin_users": fx.APP_USER, "workers": 1},
                    databases={"app": "host=%s port=5432 dbname=app" % fx.pod_addr(0)})
    busy = connect(fleet)
    idle = connect(fleet)
    try:
        busy.execute("BEGIN")
        busy_pid = busy.execute("SELECT pg_backend_pid()").fetchone()[0]
        idle.execute("SELECT 1")
        before = app_backends(service)
        assert busy_pid in before and len(before) == 2
        with psycopg.connect(fleet.dsn(fx.APP_USER, fx.APP_PASSWORD, "pgfleet"),
                             autocommit=True) as admin:
            admin.execute("RELOAD")
        import time
        end = time.monotonic() + 20
        while len(app_backends(service)) < 3 and time.monotonic() < end:
            time.sleep(0.1)
        after = app_backends(service)
        assert before < after and len(after) == 3, (before, after)  # the fresh login
        assert busy.execute("SELECT pg_backend_pid()").fetchone()[0] == busy_pid
        busy.execute("COMMIT")
        time.sleep(0.5)
        assert app_backends(service) == after  # nothing retired: same defaults
    finally:
        busy.close()
        idle.close()
