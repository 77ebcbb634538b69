"""Protocol-level named prepared statements in transaction mode: statements
follow their client across server connections and pods, are evicted and
re-prepared, and DEALLOCATE/DISCARD behave as on PostgreSQL."""

import os
import subprocess

import psycopg
import pytest

import fixture as fx


def pgbench(fleet, *args):
    env = dict(os.environ, PGPASSWORD=fx.APP_PASSWORD)
    p = subprocess.run([os.path.join(fx.PG_BIN, "pgbench"), "-n", "-h", fleet.host, "-p",
                        str(fleet.port), "-U", fx.APP_USER] + list(args) + [fx.APP_DB],
                       env=env, capture_output=True, text=True, timeout=120)
    assert p.returncode == 0, p.stdout + p.stderr
    assert "number of failed transactions: 0" in p.stdout, p.stdout
    return p.stdout


@pytest.fixture(scope="module")
def bench(service):
    service.pgbench_init(scale=1)
    return service


def connect(fleet, prepare_threshold=0):
    """psycopg through pgfleet; prepare_threshold=0 prepares every query."""
    return psycopg.connect(fleet.dsn(), autocommit=True, prepare_threshold=prepare_threshold)


def test_pgbench_prepared_select_more_clients_than_servers(bench, pgfleet):
    fleet = pgfleet(settings={"default_pool_size": 2})
    out = pgbench(fleet, "-M", "prepared", "-S", "-c", "20", "-j", "2", "-T", "4")
    assert "tps" in out


def test_pgbench_prepared_tpcb(bench, pgfleet):
    # pgbench 15 prepares with the synchronous PQprepare: one thread per
    # client, so a client waiting for a server never stalls another's
    # transaction (with -j < -c it would, whatever the pooler).
    fleet = pgfleet(settings={"default_pool_size": 2})
    pgbench(fleet, "-M", "prepared", "-c", "12", "-j", "12", "-T", "4")


def test_statements_follow_the_client_across_pods(service, pgfleet):
    fleet = pgfleet()
    # A pod takes transactions once its first health check passes, in each
    # worker: 60 quick statements can all run before that.
    assert fleet.wait_all_up(service.addrs), fleet.log_tail()
    with connect(fleet) as conn:
        seen = set()
        for i in range(60):
            row = conn.execute("SELECT host(inet_server_addr()), %s::int * 2", (i,)).fetchone()
            assert row[1] == 2 * i
            seen.add(row[0])
        assert seen == set(service.addrs)


def test_eviction_reprepares_transparently(service, pgfleet):
    fleet = pgfleet(settings={"max_prepared_statements": 3, "default_pool_size": 1},
                    databases={"app": "host=%s port=5432 dbname=app" % fx.pod_addr(0)})
    with connect(fleet) as conn:
        for round_ in range(3):
            for k in range(10):  # ten distinct statements through a 3-slot cache
                sql = "SELECT %%s::int + %d" % k
                assert conn.execute(sql, (round_,)).fetchone()[0] == round_ + k
        # one server connection: it never holds more than the cap
        n = conn.execute("SELECT count(*) FROM pg_prepared_statements").fetchone()[0]
        assert 1 <= n <= 3, n


def test_deallocate_by_name_and_all(service, pgfleet):
    fleet = pgfleet()
    with connect(fleet) as conn:
        # psycopg names its statements _pg3_N and DEALLOCATEs them by name
        # (over the extended protocol) when its cache overflows
        conn.prepared_max = 2
        for k in range(8):
            assert conn.execute("SELECT %%s::int + %d" % k, (1,)).fetchone()[0] == 1 + k
    with connect(fleet) as conn:
        for k in range(4):
            assert conn.execute("SELECT %%s::int * %d" % k, (2,)).fetchone()[0] == 2 * k
        # a simple-protocol DEALLOCATE of a name pgfleet renamed
        conn.pgconn.exec_(b"DEALLOCATE _pg3_0")
        conn.execute("DEALLOCATE ALL", prepare=False)
        assert conn.execute("SELECT %s::int", (5,), prepare=True).fetchone()[0] == 5
        conn.execute("DISCARD ALL", prepare=False)
        # (psycopg keeps its own cache across DISCARD ALL: use a new statement)
        assert conn.execute("SELECT %s::int - 1", (7,), prepare=True).fetchone()[0] == 6


def test_unknown_statement_name_errors_like_postgres(service, pgfleet):
    fleet = pgfleet()
    with fleet.connect() as conn:
        with pytest.raises(psycopg.errors.InvalidSqlStatementName):
            conn.execute("EXECUTE nope")  # SQL level, passed through
    # protocol level: a Bind for a name the client never parsed
    with fleet.connect() as conn:
        pg = conn.pgconn
        pg.send_query_prepared(b"never_parsed", [])
        res = pg.get_result()
        assert res.error_field(psycopg.pq.DiagnosticField.SQLSTATE) == b"26000"
        while pg.get_result() is not None:
            pass
        assert conn.execute("SELECT 1").fetchone() == (1,)


def test_error_in_a_prepared_pipeline_keeps_the_session_usable(service, pgfleet):
    fleet = pgfleet()
    with connect(fleet) as conn:
        with pytest.raises(psycopg.errors.DivisionByZero):
            with conn.pipeline():
                conn.execute("SELECT %s::int", (1,))
                conn.execute("SELECT 1 / %s::int", (0,))
                conn.execute("SELECT %s::int", (3,))
        for i in range(5):
            assert conn.execute("SELECT %s::int", (i,)).fetchone() == (i,)
            assert conn.execute("SELECT 1 / %s::int", (1,)).fetchone() == (1,)


def test_prepared_drop_all_statement(service, pgfleet):
    """A DEALLOCATE ALL that is itself a prepared statement (run on whatever
    server connection) drops the client's statements, as on PostgreSQL."""
    fleet = pgfleet()
    with connect(fleet) as conn:
        conn.prepared_max = 100
        assert conn.execute("SELECT %s::int", (1,)).fetchone() == (1,)
        conn.execute("DEALLOCATE ALL")
        for i in range(5):
            assert conn.execute("SELECT %s::int + 1", (i,)).fetchone() == (i + 1,)


def test_prepared_disabled_passes_names_through(service, pgfleet):
    fleet = pgfleet(settings={"max_prepared_statements": 0, "pool_mode": "session"})
    with connect(fleet) as conn:
        for i in range(10):
            assert conn.execute("SELECT %s::int", (i,)).fetchone() == (i,)
        names = conn.execute("SELECT name FROM pg_prepared_statements").fetchall()
        assert any(n[0].startswith("_pg3_") for n in names), names
