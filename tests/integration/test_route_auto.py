"""target_session_attrs = auto (issue 19): each transaction goes where its
first statement can run: reads to a standby, the rest to the primary.  The
lead's smoke tests of the routing core; test_routing.py has the real-client
suites (write-then-read, retries, split brain)."""

import os

import psycopg
import pytest

import fixture as fx

SETTINGS = dict(health_check_period=1, health_check_timeout=1, dns_max_ttl=1,
                dns_nxdomain_ttl=1, server_login_retry=1, query_wait_timeout=5)


def entry(tsa):
    return "host=%s port=%d dbname=%s target_session_attrs=%s" % (
        fx.SVC_NAME, fx.PG_PORT, fx.APP_DB, tsa)


@pytest.fixture
def auto(pgfleet, replicated):
    """read_your_writes off: these tests look at where each statement goes
    by its class; after a statement that is no read (a SET, a DDL) a client
    with read_your_writes on reads from the primary until a standby has
    replayed the primary's WAL position (the fixture commits asynchronously:
    up to 200 ms)."""
    fleet = pgfleet(settings=dict(SETTINGS, read_your_writes=0),
                    databases={"app": entry("auto")})
    assert fleet.wait_all_up(replicated.addrs, "app", 10), fleet.log_tail()
    return fleet


def where(conn, sql="SELECT pg_is_in_recovery()"):
    return conn.execute(sql).fetchone()[0]


def test_reads_go_to_standbys_writes_to_the_primary(auto, replicated):
    with auto.connect(dbname="app", autocommit=True) as conn:
        seen = {conn.execute("SELECT host(inet_server_addr())").fetchone()[0]
                for _ in range(20)}
        primary = replicated.pod(replicated.primary).addr
        assert primary not in seen and len(seen) == 2, seen
        assert all(where(conn) for _ in range(10))
        # a write, a hint, a plain BEGIN block: the primary
        conn.execute("CREATE TABLE IF NOT EXISTS route_t (id int)")
        conn.execute("INSERT INTO route_t VALUES (1)")
        assert where(conn, "/* pgfleet:primary */ SELECT pg_is_in_recovery()") is False
        with conn.transaction():
            assert where(conn) is False
        conn.execute("DROP TABLE route_t")


def test_set_route_is_answered_by_pgfleet(auto):
    with auto.connect(dbname="app", autocommit=True) as conn:
        conn.execute("SET pgfleet.route = primary")
        assert all(where(conn) is False for _ in range(5))
        conn.execute("RESET pgfleet.route")
        assert all(where(conn) for _ in range(5))
        with pytest.raises(psycopg.errors.InvalidParameterValue):
            conn.execute("SET pgfleet.route = sideways")
        conn.execute("SET pgfleet.route = primary")
        conn.execute("RESET ALL")  # resets pgfleet.route too, as any setting
        assert all(where(conn) for _ in range(5))
        conn.execute("SET pgfleet.route TO 'standby'")
        assert all(where(conn) for _ in range(5))
        conn.execute("SET pgfleet.route = DEFAULT")
        # pgfleet answered: the server never saw the name
        assert conn.execute("SELECT current_setting('pgfleet.route', true)").fetchone()[0] is None


def test_show_route_is_answered_by_pgfleet(auto):
    """SHOW pgfleet.route says the session's value, over both protocols,
    with results in text or binary, inside a block, and prepared under a
    name past psycopg's threshold; no server sees it (a hint sends the text
    on, as any hinted statement, and the server knows no such setting)."""
    def show(cur):
        cur.execute("SHOW pgfleet.route")
        assert cur.statusmessage == "SHOW"
        assert [d.name for d in cur.description] == ["pgfleet.route"]
        return cur.fetchone()[0]

    with auto.connect(dbname="app", autocommit=True) as conn:
        simple = psycopg.ClientCursor(conn)   # a simple Query
        text = conn.cursor()                  # Parse/Bind/Describe/Execute/Sync
        binary = conn.cursor(binary=True)     # ... results in binary
        for cur in (simple, text, binary):
            assert show(cur) == "auto"
            assert cur.pgresult.fformat(0) == (1 if cur is binary else 0)
        conn.execute("SET pgfleet.route = primary")
        assert [show(c) for c in (simple, text, binary)] == ["primary"] * 3
        conn.execute("SET pgfleet.route TO standby")
        with conn.transaction():  # answered in turn on a linked server
            assert [show(c) for c in (simple, text, binary)] == ["standby"] * 3
            assert conn.execute("SELECT 1").fetchone()[0] == 1
            simple.execute("SET pgfleet.route = primary")  # a simple Query in the block
            assert simple.statusmessage == "SET"
            assert [show(c) for c in (simple, text, binary)] == ["primary"] * 3
        conn.execute("RESET ALL")
        assert show(simple) == "auto"
        # psycopg prepares the text after five runs: a named statement
        for i in range(8):
            conn.execute("SET pgfleet.route = primary" if i % 2 else "RESET pgfleet.route")
            got = conn.execute("SHOW pgfleet.route").fetchone()[0]
            assert got == ("primary" if i % 2 else "auto"), i
        # a server knows no such setting (it would say 42704): pgfleet answered
        with pytest.raises(psycopg.errors.UndefinedObject):
            conn.execute("/* pgfleet:primary */ SHOW pgfleet.route")


def test_show_route_portals_over_the_wire(pgfleet, replicated):
    """The messages themselves: a Describe of SHOW pgfleet.route's statement
    and of its portal bound with binary results (format 1 in the column),
    its row and tag; a named portal is refused (0A000) and the batch
    skipped to its Sync, the session unharmed."""
    import struct
    from test_hostile_pipeline import Raw, msg, parse, error_fields, SYNC

    fleet = pgfleet(settings=dict(SETTINGS, auth_type="trust"),
                    databases={"app": entry("auto")})
    assert fleet.wait_all_up(replicated.addrs, "app", 10), fleet.log_tail()

    def bind(portal, stmt, result_format):
        return msg(b"B", portal + b"\0" + stmt + b"\0" + struct.pack("!HH", 0, 0) +
                   struct.pack("!HH", 1, result_format))

    def column_format(body):
        (n,) = struct.unpack("!H", body[:2])
        assert n == 1
        name, rest = body[2:].split(b"\0", 1)
        assert name == b"pgfleet.route"
        (oid,) = struct.unpack("!I", rest[6:10])
        assert oid == 25  # text
        return struct.unpack("!H", rest[16:18])[0]

    raw = Raw(fleet, dbname="app")
    try:
        raw.s.sendall(parse("", "SET pgfleet.route = standby") + bind(b"", b"", 0) +
                      msg(b"E", b"\0" + struct.pack("!I", 0)) + SYNC)
        assert [k for k, _ in raw.until_ready()] == [b"1", b"2", b"C", b"Z"]
        raw.s.sendall(parse("", "SHOW pgfleet.route") + msg(b"D", b"S\0") +
                      bind(b"", b"", 1) + msg(b"D", b"P\0") +
                      msg(b"E", b"\0" + struct.pack("!I", 0)) + SYNC)
        got = raw.until_ready()
        assert [k for k, _ in got] == [b"1", b"t", b"T", b"2", b"T", b"D", b"C", b"Z"], got
        assert column_format(got[2][1]) == 0 and column_format(got[4][1]) == 1
        assert got[5][1] == struct.pack("!HI", 1, 7) + b"standby"
        assert got[6][1] == b"SHOW\0"
        raw.s.sendall(parse("", "SHOW pgfleet.route") + bind(b"p1", b"", 0) +
                      msg(b"E", b"p1\0" + struct.pack("!I", 0)) + SYNC)
        got = raw.until_ready()
        assert [k for k, _ in got] == [b"1", b"E", b"Z"], got
        err = error_fields(got[1][1])
        assert err["C"] == "0A000" and "SHOW pgfleet.route" in err["M"], err
        raw.s.sendall(msg(b"Q", b"SHOW pgfleet.route\0"))
        got = raw.until_ready()
        assert [k for k, _ in got] == [b"T", b"D", b"C", b"Z"], got
        assert column_format(got[0][1]) == 0 and got[1][1].endswith(b"standby")
    finally:
        raw.close()


def test_begin_read_only_runs_on_a_standby(auto):
    with auto.connect(dbname="app", autocommit=True) as conn:
        conn.execute("BEGIN READ ONLY")
        assert where(conn)
        conn.execute("COMMIT")
        conn.execute("BEGIN")
        assert where(conn) is False
        conn.execute("COMMIT")


def test_pipeline_write_after_read_reaches_the_primary(pgfleet, replicated):
    # read_your_writes off: this client writes, and its next reads are to
    # show where routing sends them, not where its writes have replayed.
    fleet = pgfleet(settings=dict(SETTINGS, read_your_writes=0),
                    databases={"app": entry("auto")})
    assert fleet.wait_all_up(replicated.addrs, "app", 10), fleet.log_tail()
    with fleet.connect(dbname="app", autocommit=True) as setup:
        setup.execute("CREATE TABLE IF NOT EXISTS route_p (id int)")
    replicated.wait_replayed()
    with fleet.connect(dbname="app", autocommit=True) as conn:
        # One Sync: one implicit transaction, which writes: the primary.
        with conn.pipeline():
            c1 = conn.execute("SELECT pg_is_in_recovery()", prepare=False)
            c2 = conn.execute("INSERT INTO route_p VALUES (%s) RETURNING pg_is_in_recovery()", (1,))
        assert c1.fetchone()[0] is False
        assert c2.fetchone()[0] is False
        # A Sync between: two transactions, a read then a write.
        for _ in range(20):
            with conn.pipeline() as p:
                c1 = conn.execute("SELECT pg_is_in_recovery()", prepare=False)
                p.sync()
                c2 = conn.execute("INSERT INTO route_p VALUES (%s) RETURNING pg_is_in_recovery()", (2,))
                p.sync()
                c3 = conn.execute("SELECT pg_is_in_recovery()", prepare=False)
            assert c1.fetchone()[0] is True
            assert c2.fetchone()[0] is False
            c3.fetchone()
        conn.execute("DROP TABLE route_p")


def test_set_route_over_the_extended_protocol(auto):
    with auto.connect(dbname="app", autocommit=True) as conn:
        cur = conn.cursor(binary=True)  # Parse/Bind/Describe/Execute/Sync
        cur.execute("SET pgfleet.route = primary")
        assert cur.statusmessage == "SET"
        assert all(where(conn) is False for _ in range(5))
        cur.execute("SET pgfleet.route TO standby")
        with pytest.raises(psycopg.errors.InvalidParameterValue):
            cur.execute("SET pgfleet.route = nowhere")
        assert all(where(conn) for _ in range(5))
        cur.execute("RESET pgfleet.route")
        assert cur.statusmessage == "RESET"
        # Inside a transaction block: answered in turn, the block goes on.
        with conn.transaction():
            cur.execute("SET pgfleet.route = primary")
            assert cur.execute("SELECT 1").fetchone()[0] == 1
        assert all(where(conn) is False for _ in range(3))


def test_read_your_writes_with_a_paused_standby(replicated, pgfleet):
    """Each row a client writes is there when it reads it back at once,
    through one database name, while one standby does not replay."""
    auto = pgfleet(settings=dict(SETTINGS), databases={"app": entry("auto")})
    assert auto.wait_all_up(replicated.addrs, "app", 10), auto.log_tail()
    stale = replicated.standbys[0]
    # The fixture commits asynchronously (WAL reaches the standbys when the
    # WAL writer wakes, every 200 ms); production commits wait for the flush,
    # and replication lag is then a millisecond or less.
    primary = replicated.primary
    replicated.psql(primary, "ALTER SYSTEM SET synchronous_commit = on")
    replicated.psql(primary, "SELECT pg_reload_conf()")
    with auto.connect(dbname="app", autocommit=True) as conn:
        conn.execute("CREATE TABLE IF NOT EXISTS ryw (id int primary key)")
        replicated.pause_replay(stale)
        try:
            on_standby = 0
            for i in range(300):
                conn.execute("INSERT INTO ryw VALUES (%s)" % i)
                row = conn.execute("SELECT id, pg_is_in_recovery() FROM ryw WHERE id = %d" % i
                                   ).fetchone()
                assert row is not None and row[0] == i, i
                on_standby += row[1]
        finally:
            replicated.resume_replay(stale)
            replicated.psql(primary, "ALTER SYSTEM RESET synchronous_commit")
            replicated.psql(primary, "SELECT pg_reload_conf()")
        conn.execute("DROP TABLE ryw")
    print("reads after a write served by a standby: %d of 300" % on_standby)
    if os.environ.get("DBG"):
        print(auto.log_text()[-3000:])


def test_read_your_writes_off_reads_a_stale_standby(pgfleet, replicated):
    """With read_your_writes = 0 a read may land on a standby that has not
    replayed the write (what the setting is there to prevent)."""
    s = dict(SETTINGS, read_your_writes=0)
    stale = replicated.standbys[0]
    # the primary and the one standby that will not replay: every read
    # goes to that standby
    addrs = [replicated.pod(replicated.primary).addr, replicated.pod(stale).addr]
    fleet = pgfleet(settings=s, databases={"app": "host=%s port=%d dbname=%s "
                                           "target_session_attrs=auto"
                                           % (",".join(addrs), fx.PG_PORT, fx.APP_DB)})
    assert fleet.wait_all_up(addrs, "app", 10), fleet.log_tail()
    with fleet.connect(dbname="app", autocommit=True) as conn:
        conn.execute("CREATE TABLE IF NOT EXISTS ryw_off (id int primary key)")
        # the table itself must reach the standby before its replay stops
        # (the fixture commits asynchronously: wait for it, not for a position)
        assert fx.wait_until(lambda: replicated.psql(
            stale, "SELECT to_regclass('ryw_off') IS NOT NULL") == "t", 10)
        replicated.pause_replay(stale)
        try:
            misses = 0
            for i in range(50):
                conn.execute("INSERT INTO ryw_off VALUES (%s)" % i)
                misses += conn.execute("SELECT id FROM ryw_off WHERE id = %d" % i).fetchone() is None
        finally:
            replicated.resume_replay(stale)
        conn.execute("DROP TABLE ryw_off")
    assert misses > 0


def test_set_route_and_reset_all_past_the_prepare_threshold(auto):
    """psycopg prepares a text it ran five times: SET pgfleet.route and
    RESET ALL then come as named statements, and still act."""
    with auto.connect(dbname="app", autocommit=True) as conn:
        for i in range(10):
            conn.execute("SET pgfleet.route = primary")
            assert [where(conn) for _ in range(3)] == [False] * 3, i
            conn.execute("RESET ALL")
            assert [where(conn) for _ in range(3)] == [True] * 3, i
