"""An error in an extended-protocol pipeline whose Sync comes later (issue 18,
item 7).  After an ErrorResponse the server ignores every message up to the
next Sync; so must pgfleet.  Before, messages the client sent after the
error but before its Sync were still handled by pgfleet as if the server
ran them: a Parse of a named statement was believed prepared on the server
(which never saw it), the next Bind of it then made pgfleet prepare another
statement in a hidden Parse that the server skipped too, and a reply pgfleet
waited for never came: the client hung (psycopg with prepare_threshold=0,
in pipeline mode, an error, then more queries before the Sync).

The raw test sends psycopg's exact message sequence; the psycopg test is the
real client that hung."""

import struct
import threading
import time

import psycopg
import pytest

import fixture as fx
from test_hostile_pipeline import SYNC, Raw, msg, parse


def bind(stmt, portal=""):
    return msg(b"B", portal.encode() + b"\0" + stmt.encode() + b"\0" +
               struct.pack("!HHHH", 0, 0, 1, 0))


def describe_portal(portal=""):
    return msg(b"D", b"P" + portal.encode() + b"\0")


def execute(portal=""):
    return msg(b"E", portal.encode() + b"\0" + struct.pack("!I", 0))


def run(stmt, sql=None):
    """psycopg's messages for one execute() of a prepared query: Parse the
    first time (sql given), then Bind, Describe, Execute."""
    return (parse(stmt, sql) if sql else b"") + bind(stmt) + describe_portal() + execute()


def kinds(raw):
    return [k for k, _ in raw.until_ready()]


@pytest.mark.parametrize("mode", ["session", "transaction"])
def test_error_then_more_messages_before_a_late_sync(service, pgfleet, mode):
    fleet = pgfleet(settings={"auth_type": "trust", "pool_mode": mode, "default_pool_size": 1})
    c = Raw(fleet)
    c.s.settimeout(20)
    for i in range(3):
        first = i == 0
        # SELECT 1 fine, SELECT 1/0 fails at Bind; then, later, more before the Sync.
        c.s.sendall(run("_pg3_0", "SELECT 1" if first else None) +
                    run("_pg3_1", "SELECT 1/0" if first else None))
        replies = [c.recv_msg()[0] for _ in range(5 if first else 4)]
        while replies[-1] != b"E":
            replies.append(c.recv_msg()[0])
        time.sleep(0.3)  # the Sync comes late: the error is at the client first
        c.s.sendall(run("_pg3_2", "SELECT 2" if first else None) + SYNC)
        replies += kinds(c)
        ok = [b"2", b"T", b"D", b"C"]
        assert replies == ([b"1"] + ok + [b"1", b"E", b"Z"] if first else ok + [b"E", b"Z"]), \
            (i, replies)
        # The statement parsed after the error does not exist: as directly,
        # its Bind fails (26000), and the session goes on.
        if first:
            c.s.sendall(run("_pg3_3", "SELECT 3") + SYNC)
            assert kinds(c) == [b"1", b"2", b"T", b"D", b"C", b"Z"]
        else:
            c.s.sendall(run("_pg3_3") + SYNC)
            assert kinds(c) == [b"2", b"T", b"D", b"C", b"Z"]
    c.s.sendall(bind("_pg3_2") + execute() + SYNC)
    got = c.until_ready()
    assert [k for k, _ in got] == [b"E", b"Z"]
    assert b"C26000" in got[0][1]
    c.close()


@pytest.mark.parametrize("workers", [1, 2])
@pytest.mark.parametrize("mode", ["session", "transaction"])
def test_psycopg_pipeline_with_an_error_and_prepared_statements(service, pgfleet, mode,
                                                                 workers):
    fleet = pgfleet(settings={"pool_mode": mode, "default_pool_size": 1, "workers": workers})
    steps = []

    def client():
        with psycopg.connect(fleet.dsn(fx.APP_USER, fx.APP_PASSWORD, fx.APP_DB),
                             autocommit=True, connect_timeout=10) as conn:
            conn.prepare_threshold = 0
            for i in range(4):
                try:
                    with conn.pipeline():
                        conn.execute("SELECT 1")
                        conn.execute("SELECT 1/0")
                        time.sleep(0.2)
                        conn.execute("SELECT 2")
                except psycopg.errors.DivisionByZero:
                    steps.append("error %d" % i)
                assert conn.execute("SELECT %s::int", [i]).fetchone() == (i,)
            steps.append("done")

    t = threading.Thread(target=client, daemon=True)
    t.start()
    t.join(60)
    assert steps == ["error 0", "error 1", "error 2", "error 3", "done"], steps
