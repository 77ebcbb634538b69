"""Real, unmodified drivers through pgfleet in transaction pooling mode
(issue 4): pgbench -M prepared, asyncpg, psycopg 3 (prepared statements,
COPY, pipeline mode), node-postgres and pgjdbc.  The pools are kept small
(default_pool_size=2 per replica, 3 replicas) and the clients many, so a
client's next transaction usually runs on another server connection, often
on another replica: a named prepared statement has to follow its client.

PGFLEET_DRIVERS_POOL_MODE=session runs the same tests in session mode (with
one server connection per client), to check the tests themselves against
behaviour that needs no statement tracking in the pooler.
"""

import asyncio
import contextlib
import hashlib
import json
import os
import shutil
import socket
import subprocess
import threading
import time

import psycopg
import psycopg.errors
import pytest
from psycopg import pq

import fixture as fx

PG_BIN = fx.PG_BIN
HERE = os.path.dirname(os.path.abspath(__file__))
DRIVERS = os.path.join(HERE, "drivers")
PGJDBC_JAR = "/usr/share/java/postgresql.jar"
POOL_MODE = os.environ.get("PGFLEET_DRIVERS_POOL_MODE", "transaction")


def start(pgfleet, pool_size=2, **settings):
    """pgfleet in POOL_MODE with `pool_size` server connections per replica
    (in session mode: enough for one per client)."""
    s = {"pool_mode": POOL_MODE, "default_pool_size": pool_size}
    if POOL_MODE == "session":
        s["default_pool_size"] = max(pool_size, 40)
    s.update(settings)
    return pgfleet(settings=s)


@pytest.fixture(scope="module")
def bench(service):
    service.pgbench_init(scale=1)
    return service


def run_pgbench(fleet, *args, timeout=45):
    env = {k: v for k, v in os.environ.items() if not k.startswith("PG")}
    env["PGPASSWORD"] = fx.APP_PASSWORD
    argv = [os.path.join(PG_BIN, "pgbench"), "-n", "-h", fleet.host,
            "-p", str(fleet.port), "-U", fx.APP_USER] + list(args) + [fx.APP_DB]
    p = subprocess.run(argv, env=env, capture_output=True, text=True,
                       timeout=timeout)
    assert p.returncode == 0, p.stdout[-3000:] + p.stderr[-3000:]
    assert "number of failed transactions: 0" in p.stdout, p.stdout
    return p.stdout


class Hung(AssertionError):
    pass


@contextlib.contextmanager
def guarded(fleet, seconds=30, **kw):
    """fleet.connect(), and if the block has not finished after `seconds`
    (psycopg has no client-side timeout: a pooler that stops answering
    would hang the suite), shut the client's socket down so the blocked
    call returns, and fail with Hung."""
    conn = fleet.connect(**kw)
    fired = threading.Event()

    def fire():
        fired.set()
        with contextlib.suppress(OSError):
            s = socket.socket(fileno=os.dup(conn.fileno()))
            try:
                s.shutdown(socket.SHUT_RDWR)
            finally:
                s.close()

    timer = threading.Timer(seconds, fire)
    timer.daemon = True
    timer.start()
    try:
        with conn:
            yield conn
    except Exception as e:
        if fired.is_set():
            raise Hung("no answer from pgfleet within %ds (%r)"
                       % (seconds, e)) from e
        raise
    finally:
        timer.cancel()
    if fired.is_set():
        raise Hung("no answer from pgfleet within %ds" % seconds)


def sqlstate_of(res):
    return (res.error_field(pq.DiagnosticField.SQLSTATE) or b"").decode()


# ---------------------------------------------------------------------------
# pgbench -M prepared

def test_pgbench_prepared_more_clients_than_servers(bench, pgfleet):
    """20 clients on 6 server connections, every query a named prepared
    statement that each client Parses once and Binds ever after."""
    fleet = start(pgfleet, pool_size=2)
    out = run_pgbench(fleet, "-M", "prepared", "-S", "-c", "20", "-j", "2",
                      "-T", "5")
    assert "number of transactions actually processed" in out


def test_pgbench_prepared_tpcb(bench, pgfleet):
    """The default TPC-B-like script (BEGIN, 3 UPDATEs, SELECT, INSERT, END),
    all prepared, more clients than server connections.

    One thread per client: pgbench 15 prepares each command the first time
    it runs it with a blocking PQprepare(), which stalls every other client
    of that thread, including those holding a server connection in an open
    transaction (a pooler that needs a server to answer that Parse would
    then wait for ever with -j < -c)."""
    fleet = start(pgfleet, pool_size=2)
    run_pgbench(fleet, "-M", "prepared", "-c", "10", "-j", "10", "-T", "4")


# ---------------------------------------------------------------------------
# asyncpg: named prepared statements on every query

def asyncpg_dsn(fleet):
    return "postgresql://%s:%s@%s:%d/%s" % (
        fx.APP_USER, fx.APP_PASSWORD, fleet.host, fleet.port, fx.APP_DB)


def test_asyncpg_pool_of_20_fetches_with_parameters(bench, pgfleet):
    import asyncpg
    fleet = start(pgfleet, pool_size=2)

    async def main():
        pool = await asyncpg.create_pool(asyncpg_dsn(fleet), min_size=20,
                                         max_size=20, command_timeout=30)
        where = set()

        async def worker(w):
            for i in range(40):
                a, b = w * 1000 + i, i * 7
                assert await pool.fetchval("SELECT $1::int + $2::int", a, b) \
                    == a + b
                aid = 1 + (w * 40 + i) * 97 % 100000
                row = await pool.fetchrow(
                    "SELECT aid, bid FROM pgbench_accounts WHERE aid = $1",
                    aid)
                assert (row["aid"], row["bid"]) == (aid, 1)
                if i % 10 == 0:
                    where.add(await pool.fetchval(
                        "SELECT host(inet_server_addr())"))

        try:
            await asyncio.gather(*(worker(w) for w in range(40)))
        finally:
            pool.terminate()
        return where

    where = asyncio.run(asyncio.wait_for(main(), 45))
    if POOL_MODE == "transaction":
        assert len(where) == 3, where


def test_asyncpg_prepare_reused_across_transactions(service, pgfleet):
    """conn.prepare() once, then the statement used in 60 transactions,
    each of which may land on another server connection or replica."""
    import asyncpg
    fleet = start(pgfleet, pool_size=2)
    # every pod up in every worker, or the first transactions have one
    assert fleet.wait_all_up(service.addrs), fleet.log_tail()

    async def main():
        conns = []
        try:
            for _ in range(5):
                conns.append(await asyncpg.connect(asyncpg_dsn(fleet)))
            conn, others = conns[0], conns[1:]
            stmt = await conn.prepare(
                "SELECT $1::int * 10, host(inet_server_addr()), "
                "pg_backend_pid()")
            stop = asyncio.Event()

            async def noise(c):  # keep other server connections busy
                while not stop.is_set():
                    await c.execute("SELECT pg_sleep(0.005)")

            tasks = [asyncio.ensure_future(noise(c)) for c in others]
            servers = set()
            try:
                for i in range(60):
                    if i % 2:
                        async with conn.transaction():
                            v, host, pid = await stmt.fetchrow(i)
                            assert await stmt.fetchval(i + 1) == (i + 1) * 10
                    else:
                        v, host, pid = await stmt.fetchrow(i)
                    assert v == i * 10
                    servers.add((host, pid))
            finally:
                stop.set()
                await asyncio.gather(*tasks, return_exceptions=True)
            return servers
        finally:
            for c in conns:
                c.terminate()

    servers = asyncio.run(asyncio.wait_for(main(), 45))
    if POOL_MODE == "transaction":
        assert len({h for h, _ in servers}) >= 2, servers


def test_asyncpg_same_statement_from_many_clients(service, pgfleet):
    """20 clients prepare the same query text (one statement per text on
    each server connection, shared), while asyncpg's own statement names
    (__asyncpg_stmt_N__) collide across clients for different texts.

    asyncpg's prepare() is Parse/Describe/Flush with no Sync: the client
    keeps its server connection until its next Sync (the first fetch), so
    each client uses a statement as soon as it has prepared it."""
    import asyncpg
    fleet = start(pgfleet, pool_size=2)

    async def main():
        conns = []
        try:
            for _ in range(20):
                conns.append(await asyncpg.connect(asyncpg_dsn(fleet)))

            async def worker(k):
                c = conns[k]
                # Client k's first statement is its own text, so the same
                # asyncpg name means another query on every client; the
                # second has the same text everywhere.
                own = await c.prepare("SELECT $1::int + %d" % k)
                assert await own.fetchval(0) == k
                shared = await c.prepare("SELECT $1::int - 1")
                assert await shared.fetchval(0) == -1
                for i in range(30):
                    assert await own.fetchval(i) == i + k
                    assert await shared.fetchval(i) == i - 1
                    assert await c.fetchval("SELECT $1::text || 'x'",
                                            str(i)) == "%dx" % i

            await asyncio.gather(*(worker(k) for k in range(20)))
        finally:
            for c in conns:
                c.terminate()

    asyncio.run(asyncio.wait_for(main(), 45))


# ---------------------------------------------------------------------------
# psycopg 3

def test_psycopg_every_query_prepared(service, pgfleet):
    """prepare_threshold=0: 25 different queries, each Parse'd once per client
    and then only Bind'd, with parameters, in autocommit and in transactions,
    from 10 threads on 6 server connections."""
    fleet = start(pgfleet, pool_size=2)
    queries = ["SELECT %%s::int * %d + %d" % (k + 1, k) for k in range(25)]
    errors = []

    def worker(w):
        try:
            with guarded(fleet) as conn:
                conn.prepare_threshold = 0
                for rnd in range(6):
                    in_tx = rnd % 2 == 1
                    ctx = (conn.transaction() if in_tx
                           else contextlib.nullcontext())
                    with ctx:
                        for k, q in enumerate(queries):
                            v = w * 100 + rnd
                            got = conn.execute(q, [v]).fetchone()[0]
                            assert got == v * (k + 1) + k, (q, v, got)
                        got = conn.execute("SELECT %s::text || %s::text",
                                           ["a", str(w)]).fetchone()[0]
                        assert got == "a%d" % w
        except Exception as e:  # reported by the main thread
            errors.append("worker %d: %r" % (w, e))

    threads = [threading.Thread(target=worker, args=(w,), daemon=True)
               for w in range(10)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert not errors, "\n".join(errors)
    assert not any(t.is_alive() for t in threads), "a worker hung"


COPY_ROWS = 100000


@pytest.fixture
def copy_table(service):
    """copy_target (id int primary key, s text) on every pod, empty."""
    for i in range(len(service.pods)):
        with service.connect(i) as conn:
            conn.execute("DROP TABLE IF EXISTS copy_target")
            conn.execute("CREATE TABLE copy_target (id int PRIMARY KEY, s text)")
    yield "copy_target"
    for i in range(len(service.pods)):
        with service.connect(i) as conn:
            conn.execute("DROP TABLE IF EXISTS copy_target")


def copy_counts(service):
    counts = []
    for i in range(len(service.pods)):
        with service.connect(i) as conn:
            counts.append(conn.execute(
                "SELECT count(*), coalesce(sum(id), 0) FROM copy_target"
            ).fetchone())
    return counts


def test_psycopg_copy_from_stdin_100k_rows(service, pgfleet, copy_table):
    """COPY FROM STDIN in autocommit: one statement, one server connection
    held for the whole copy, so every row lands on one pod."""
    fleet = start(pgfleet, pool_size=2)
    with guarded(fleet) as conn:
        with conn.cursor() as cur:
            with cur.copy("COPY copy_target (id, s) FROM STDIN") as copy:
                for i in range(1, COPY_ROWS + 1):
                    copy.write_row((i, "row %d" % i))
            assert cur.rowcount == COPY_ROWS
        # In one transaction, the count is read where the rows went.
        with conn.transaction():
            conn.execute("CREATE TEMP TABLE copy_tmp (id int, s text) "
                         "ON COMMIT DROP")
            with conn.cursor().copy("COPY copy_tmp FROM STDIN") as copy:
                for i in range(1, COPY_ROWS + 1):
                    copy.write(b"%d\tt%d\n" % (i, i))
            n, s, last = conn.execute(
                "SELECT count(*), sum(id), max(s) FROM copy_tmp").fetchone()
            assert (n, s, last) == (COPY_ROWS, COPY_ROWS * (COPY_ROWS + 1) // 2,
                                    "t99999")
    counts = copy_counts(service)
    full = [c for c in counts if c[0]]
    assert full == [(COPY_ROWS, COPY_ROWS * (COPY_ROWS + 1) // 2)], counts


def test_psycopg_copy_to_stdout_100k_rows(service, pgfleet):
    fleet = start(pgfleet, pool_size=2)
    with guarded(fleet) as conn, conn.cursor() as cur:
        n = 0
        with cur.copy("COPY (SELECT g, md5(g::text) FROM "
                      "generate_series(1, %d) g) TO STDOUT" % COPY_ROWS) as copy:
            for row in copy.rows():
                n += 1
                assert int(row[0]) == n
                if n % 9973 == 0:
                    assert row[1] == hashlib.md5(str(n).encode()).hexdigest()
        assert n == COPY_ROWS
        # The raw stream, block by block: every number, once.
        data = bytearray()
        with cur.copy("COPY (SELECT g FROM generate_series(1, %d) g) "
                      "TO STDOUT" % COPY_ROWS) as copy:
            for block in copy:
                data += block
        assert sum(int(x) for x in data.split()) == \
            COPY_ROWS * (COPY_ROWS + 1) // 2
        # The connection is back to normal afterwards.
        assert conn.execute("SELECT 42").fetchone()[0] == 42


def test_psycopg_copy_errors_mid_copy(service, pgfleet, copy_table):
    """A bad row half way through: the client gets the server's error and
    the connection stays usable; the same for a CopyFail from the client."""
    fleet = start(pgfleet, pool_size=2)
    with guarded(fleet) as conn:
        conn.prepare_threshold = None
        with pytest.raises(psycopg.errors.InvalidTextRepresentation) as ei:
            with conn.cursor().copy("COPY copy_target FROM STDIN") as copy:
                for i in range(1, 50001):
                    copy.write(b"%d\tok\n" % i)
                copy.write(b"not-a-number\tbad\n")
                for i in range(50001, 60001):
                    copy.write(b"%d\tok\n" % i)
        assert ei.value.sqlstate == "22P02"
        assert "not-a-number" in str(ei.value)
        assert conn.execute("SELECT 1 + 1").fetchone()[0] == 2

        class Abort(Exception):
            pass

        # psycopg sends CopyFail; the server's answer is raised (3.1).
        with pytest.raises(psycopg.errors.QueryCanceled,
                           match="COPY from stdin failed"):
            with conn.cursor().copy("COPY copy_target FROM STDIN") as copy:
                copy.write(b"1\tok\n")
                raise Abort()
        assert conn.execute("SELECT 2 + 2").fetchone()[0] == 4
        # And a good copy afterwards.
        with conn.cursor().copy("COPY copy_target FROM STDIN") as copy:
            for i in range(1, 101):
                copy.write(b"%d\tok\n" % i)
    assert sorted(c[0] for c in copy_counts(service)) == [0, 0, 100]


@pytest.mark.parametrize("prepare_threshold", [None, 0],
                         ids=["unnamed", "prepared"])
def test_psycopg_pipeline_mode(service, pgfleet, prepare_threshold):
    fleet = start(pgfleet, pool_size=2)
    with guarded(fleet) as conn:
        conn.prepare_threshold = prepare_threshold
        for rnd in range(3):
            curs = []
            with conn.pipeline():
                for i in range(200):
                    curs.append((i, conn.execute(
                        "SELECT %s::int * %s::int, %s::text",
                        [i, rnd + 2, "r%d" % i])))
                    if i % 50 == 49:
                        conn.execute("SELECT pg_sleep(0)")
            for i, cur in curs:
                assert cur.fetchone() == (i * (rnd + 2), "r%d" % i)
        # A pipeline inside a transaction, with a server-side error at the
        # end: the earlier results are there, the error is raised.
        with pytest.raises(psycopg.errors.DivisionByZero):
            with conn.transaction(), conn.pipeline():
                c1 = conn.execute("SELECT %s::int + 1", [41])
                conn.execute("SELECT 1 / %s::int", [0])
        assert c1.fetchone() == (42,)
        assert conn.execute("SELECT %s::int", [7]).fetchone() == (7,)


# ---------------------------------------------------------------------------
# DEALLOCATE ALL / DISCARD ALL, SQL-level PREPARE

def _deallocate_scenario(conn, reset_sql):
    """Protocol-level statements by name through libpq, then the client's
    DEALLOCATE ALL or DISCARD ALL: what PostgreSQL answers at each step."""
    pg = conn.pgconn
    steps = []

    def run(what, res):
        if res.status in (pq.ExecStatus.TUPLES_OK, pq.ExecStatus.COMMAND_OK):
            steps.append((what, "ok",
                          [res.get_value(r, 0) for r in range(res.ntuples)]))
        else:
            msg = (res.error_field(pq.DiagnosticField.MESSAGE_PRIMARY)
                   or b"").decode()
            steps.append((what, sqlstate_of(res), msg))

    run("prepare s1", pg.prepare(b"s1", b"SELECT $1::int * 2"))
    run("prepare s2", pg.prepare(b"s2", b"SELECT $1::text || '!'"))
    for i in range(3):
        run("exec s1", pg.exec_prepared(b"s1", [b"%d" % i]))
        run("exec s2", pg.exec_prepared(b"s2", [b"x%d" % i]))
    run("describe s2", pg.describe_prepared(b"s2"))
    run("prepare s1 twice", pg.prepare(b"s1", b"SELECT 1"))
    run("begin", pg.exec_(b"BEGIN"))
    run("exec s1 in tx", pg.exec_prepared(b"s1", [b"21"]))
    run("commit", pg.exec_(b"COMMIT"))
    run(reset_sql, pg.exec_(reset_sql.encode()))
    run("exec s1 after", pg.exec_prepared(b"s1", [b"5"]))
    run("describe s2 after", pg.describe_prepared(b"s2"))
    run("prepare s1 again", pg.prepare(b"s1", b"SELECT $1::int * 3"))
    for i in range(3):
        run("exec new s1", pg.exec_prepared(b"s1", [b"%d" % i]))
    run("exec s2 after", pg.exec_prepared(b"s2", [b"y"]))
    return steps


@pytest.mark.parametrize("reset_sql", ["DEALLOCATE ALL", "DISCARD ALL"])
def test_deallocate_all_and_discard_all(service, pgfleet, reset_sql):
    fleet = start(pgfleet, pool_size=2)
    with service.connect(0) as direct:
        want = _deallocate_scenario(direct, reset_sql)
    # What PostgreSQL itself says, so the comparison below means something.
    assert ("prepare s1 twice", "42P05",
            'prepared statement "s1" already exists') in want, want
    assert ("exec s1 after", "26000", 'prepared statement "s1" does not exist') \
        in want, want
    assert want[-1] == ("exec s2 after", "26000",
                        'prepared statement "s2" does not exist'), want
    with guarded(fleet) as conn:
        assert _deallocate_scenario(conn, reset_sql) == want
        # psycopg's own prepared statements after that.
        for i in range(6):
            assert conn.execute("SELECT %s::int + 100", [i],
                                prepare=True).fetchone()[0] == i + 100
        conn.execute(reset_sql)
        assert conn.execute("SELECT %s::int - 100", [1],
                            prepare=True).fetchone()[0] == -99


def test_psycopg_prepare_true_after_deallocate_all(service, pgfleet):
    """psycopg 3.1 does not notice a client's DEALLOCATE ALL: binding a
    statement it had prepared before fails exactly as on PostgreSQL (26000,
    and psycopg keeps the stale name), while queries it prepares after the
    DEALLOCATE ALL work."""
    def scenario(conn):
        out = []

        def step(query, arg):
            try:
                out.append(conn.execute(query, [arg],
                                        prepare=True).fetchone()[0])
            except psycopg.errors.InvalidSqlStatementName as e:
                out.append(e.sqlstate)

        for i in range(3):
            step("SELECT %s::int * 7", i)
            step("SELECT %s::text || 'a'", str(i))
        conn.execute("DEALLOCATE ALL")
        step("SELECT %s::int * 7", 10)
        for i in range(3):
            step("SELECT %s::int * 9", i)
            step("SELECT %s::text || 'b'", str(i))
        step("SELECT %s::text || 'a'", "z")
        conn.execute("DISCARD ALL")
        for i in range(3):
            step("SELECT %s::int * 11", i)
        step("SELECT %s::int * 9", 1)
        return out

    fleet = start(pgfleet, pool_size=2)
    with service.connect(0) as direct:
        want = scenario(direct)
    assert want == [0, "0a", 7, "1a", 14, "2a", "26000",
                    0, "0b", 9, "1b", 18, "2b", "26000",
                    0, 11, 22, "26000"], want
    with guarded(fleet) as conn:
        assert scenario(conn) == want


def test_sql_prepare_execute_inside_one_transaction(service, pgfleet):
    """SQL-level PREPARE/EXECUTE/DEALLOCATE are PostgreSQL's own: they work
    inside one transaction (session-level use in transaction mode is a
    documented limitation and not tested here)."""
    fleet = start(pgfleet, pool_size=2)
    with guarded(fleet) as conn:
        conn.prepare_threshold = None
        for rnd in range(10):
            with conn.transaction():
                conn.execute("PREPARE sqlp (int, text) AS "
                             "SELECT $1 * 5, $2 || '?'")
                for i in range(3):
                    assert conn.execute("EXECUTE sqlp (%d, 'r%d')" % (i, rnd)
                                        ).fetchone() == (i * 5, "r%d?" % rnd)
                conn.execute("DEALLOCATE sqlp")
        with pytest.raises(psycopg.errors.InvalidSqlStatementName):
            with conn.transaction():
                conn.execute("PREPARE sqlq AS SELECT 1")
                conn.execute("DEALLOCATE sqlq")
                conn.execute("EXECUTE sqlq")
        assert conn.execute("SELECT 3").fetchone() == (3,)


# ---------------------------------------------------------------------------
# node-postgres and pgjdbc

def test_node_postgres_pool_named_statements(bench, pgfleet):
    node = shutil.which("node")
    assert node, "node is not installed (scripts/install-deps.sh)"
    assert os.path.isfile(os.path.join(DRIVERS, "node_modules", "pg",
                                       "package.json")), \
        "npm pg missing: run scripts/install-deps.sh"
    fleet = start(pgfleet, pool_size=2)
    workers, iterations = 20, 25
    cfg = {"host": fleet.host, "port": fleet.port, "user": fx.APP_USER,
           "password": fx.APP_PASSWORD, "database": fx.APP_DB,
           "clients": 10, "workers": workers, "iterations": iterations}
    p = subprocess.run([node, os.path.join(DRIVERS, "node_pg.js"),
                        json.dumps(cfg)], capture_output=True, text=True,
                       timeout=45)
    assert p.stdout.strip(), p.stderr[-3000:]
    res = json.loads(p.stdout.strip().splitlines()[-1])
    assert "fatal" not in res, res
    assert res["errors"] == [], res
    assert res["mismatches"] == [], res
    assert res["queries"] == workers * iterations * 4
    assert res["sum"] == sum((w * 1000 + i) * 2 for w in range(workers)
                             for i in range(iterations))
    assert p.returncode == 0, p.stderr[-3000:]
    if POOL_MODE == "transaction":
        assert len({b.split(":")[0] for b in res["backends"]}) == 3, res


def test_pgjdbc_server_side_prepared_statements(service, pgfleet, tmp_path):
    javac, java = shutil.which("javac"), shutil.which("java")
    assert javac and java, "no JDK (scripts/install-deps.sh)"
    assert os.path.isfile(PGJDBC_JAR), \
        "%s missing: apt-get install libpostgresql-jdbc-java" % PGJDBC_JAR
    cp = "%s:%s" % (tmp_path, PGJDBC_JAR)
    subprocess.run([javac, "-d", str(tmp_path), "-cp", PGJDBC_JAR,
                    os.path.join(DRIVERS, "PgjdbcPrepared.java")],
                   check=True, capture_output=True, timeout=120)
    fleet = start(pgfleet, pool_size=2)
    url = "jdbc:postgresql://%s:%d/%s" % (fleet.host, fleet.port, fx.APP_DB)
    connections, transactions = 8, 12
    p = subprocess.run([java, "-cp", cp, "PgjdbcPrepared", url, fx.APP_USER,
                        fx.APP_PASSWORD, str(connections), str(transactions)],
                       capture_output=True, text=True, timeout=45)
    assert p.returncode == 0, p.stdout[-2000:] + p.stderr[-3000:]
    res = json.loads(p.stdout.strip().splitlines()[-1])
    assert res["errors"] == [], res
    assert res["mismatches"] == [], res
    assert res["queries"] == connections * transactions * 17
    assert res["sum"] == sum(3 * (w * 100000 + t * 100 + k)
                             for w in range(connections)
                             for t in range(transactions) for k in range(8))
    # Every statement was used > prepareThreshold times: server-prepared.
    assert res["server_prepared"] == connections * 3, res
    if POOL_MODE == "transaction":
        assert res["backends"] > 2, res


# ---------------------------------------------------------------------------
# LISTEN/NOTIFY (session mode)

def test_listen_notify_in_session_mode(service, pgfleet):
    """Both clients on one pod (notifications stay inside one PostgreSQL):
    the listener gets the notification and its payload."""
    fleet = pgfleet(settings={"pool_mode": "session", "default_pool_size": 5},
                    databases={"app": "host=%s port=%d dbname=%s" % (
                        fx.pod_addr(0), fx.PG_PORT, fx.APP_DB)})
    got = []
    with guarded(fleet) as listener, guarded(fleet) as sender:
        listener.add_notify_handler(got.append)
        listener.execute("LISTEN pgfleet_chan")
        sender.execute("NOTIFY pgfleet_chan, 'hello'")
        sender.execute("SELECT pg_notify('pgfleet_chan', 'again')")
        deadline = time.monotonic() + 10
        while len(got) < 2 and time.monotonic() < deadline:
            listener.execute("SELECT 1")  # reads what arrived meanwhile
            time.sleep(0.05)
        assert [(n.channel, n.payload) for n in got] == [
            ("pgfleet_chan", "hello"), ("pgfleet_chan", "again")]
        sender_pid = sender.execute("SELECT pg_backend_pid()").fetchone()[0]
        assert got[0].pid == sender_pid
        # Nothing from a channel it does not listen to.
        sender.execute("NOTIFY other_chan")
        listener.execute("UNLISTEN *")
        sender.execute("NOTIFY pgfleet_chan, 'late'")
        listener.execute("SELECT pg_sleep(0.2)")
        assert len(got) == 2
