"""Batched socket I/O (src/batch.c): each loop pass reads its readable
sockets in one io_uring submission and sends what it wrote in another.

What a client must never notice: bytes lost, reordered or handed to the wrong
connection, a slow reader that makes pgfleet buffer without bound, or a
difference with batching off (io_uring = 0, or a kernel that refuses it).
What an operator can see: /metrics counts the submissions and the socket
calls they carried.
"""

import socket
import struct
import threading
import time

import pytest

from test_admin import SETTINGS as ADMIN_SETTINGS, USERS, show
from test_http import run_pgbench, scrape, series


@pytest.fixture(scope="module")
def bench(service):
    service.pgbench_init(scale=1)
    return service


def io_counters(fleet):
    _, samples = scrape(fleet)

    def one(name, **labels):
        (s,) = series(samples, name, **labels)
        return s.value

    return dict(
        enabled=one("pgfleet_io_uring_enabled"),
        recv_submits=one("pgfleet_io_uring_submissions_total", op="recv"),
        send_submits=one("pgfleet_io_uring_submissions_total", op="send"),
        recv_ops=one("pgfleet_io_uring_operations_total", op="recv"),
        send_ops=one("pgfleet_io_uring_operations_total", op="send"),
        short_sends=one("pgfleet_io_uring_short_sends_total"),
    )


def echo_worker(fleet, n, results, errors, k):
    """Each query carries this thread's own numbers back: a reply handed to
    the wrong client, cut or reordered shows up as a mismatch."""
    try:
        with fleet.connect() as conn:
            for i in range(n):
                size = (k * 131 + i * 17) % 3000
                row = conn.execute("SELECT %s::int, %s::int, repeat(chr(65 + %s), %s)",
                                   (k, i, k % 26, size)).fetchone()
                if row != (k, i, chr(65 + k % 26) * size):
                    errors.append((k, i, row[:2], len(row[2])))
                    return
            results[k] = n
    except Exception as e:  # reported by the test, not lost in a thread
        errors.append((k, repr(e)))


def run_echo_clients(fleet, clients=12, n=150):
    results, errors = {}, []
    threads = [threading.Thread(target=echo_worker, args=(fleet, n, results, errors, k))
               for k in range(clients)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(120)
    assert not errors, errors[:5]
    assert results == {k: n for k in range(clients)}, results


def test_batched_io_under_load_loses_nothing(bench, pgfleet):
    fleet = pgfleet(settings=dict(ADMIN_SETTINGS), users=dict(USERS))
    before = io_counters(fleet)
    # The kernel here has io_uring: every worker's loop uses a ring.
    assert before["enabled"] == fleet.workers, before

    processed = run_pgbench(fleet, "-S", "-c", "10", "-j", "2", "-t", "300")
    assert processed == 3000
    processed = run_pgbench(fleet, "-S", "-M", "extended", "-c", "10", "-j", "2",
                            "-t", "300")
    assert processed == 3000
    run_echo_clients(fleet)

    after = io_counters(fleet)
    # Ten busy clients keep several sockets ready in most loop passes: the
    # passes read and wrote them in batches of two or more per submission.
    for op in ("recv", "send"):
        submits = after[op + "_submits"] - before[op + "_submits"]
        ops = after[op + "_ops"] - before[op + "_ops"]
        assert submits > 0, (op, before, after)
        assert ops >= 2 * submits, (op, before, after)

    # Every transaction was counted on a replica.
    _, rows = show(fleet, "REPLICAS")
    assert sum(int(r["xacts"]) for r in rows) >= 6000 + 12 * 150, rows


def test_batching_off_serves_the_same(bench, pgfleet):
    fleet = pgfleet(settings=dict(ADMIN_SETTINGS, io_uring=0), users=dict(USERS))
    processed = run_pgbench(fleet, "-S", "-c", "10", "-j", "2", "-t", "200")
    assert processed == 2000
    run_echo_clients(fleet, clients=6, n=100)
    c = io_counters(fleet)
    assert c["enabled"] == 0, c
    assert c["recv_submits"] == c["send_submits"] == c["recv_ops"] == c["send_ops"] == 0, c
    _, config = show(fleet, "CONFIG")
    conf = {r["key"]: r for r in config}
    assert conf["io_uring"]["value"] == "0" and conf["io_uring"]["changeable"] == "no", conf



def test_io_uring_from_the_environment(bench, pgfleet):
    fleet = pgfleet(env={"PGFLEET_IO_URING": "0"})
    run_pgbench(fleet, "-S", "-c", "4", "-t", "50")
    assert io_counters(fleet)["enabled"] == 0


def pg_message(kind, body):
    return kind + struct.pack("!I", len(body) + 4) + body


def read_replies(s, want_ready, deadline):
    """Reads until want_ready ReadyForQuery messages; returns the DataRows'
    first two columns as (int, len(text)) and every message type seen."""
    buf, rows, kinds, ready = b"", [], [], 0
    while ready < want_ready:
        assert time.monotonic() < deadline, (ready, want_ready)
        try:
            chunk = s.recv(1 << 16)
        except TimeoutError:
            raise AssertionError("stalled after %d of %d replies" % (ready, want_ready))
        assert chunk, "pgfleet closed the connection after %d replies" % ready
        buf += chunk
        while len(buf) >= 5:
            kind, length = buf[:1], struct.unpack("!I", buf[1:5])[0]
            if len(buf) < 1 + length:
                break
            body, buf = buf[5:1 + length], buf[1 + length:]
            kinds.append(kind)
            if kind == b"D":
                (ncols,) = struct.unpack("!H", body[:2])
                pos, cols = 2, []
                for _ in range(ncols):
                    (n,) = struct.unpack("!i", body[pos:pos + 4])
                    cols.append(body[pos + 4:pos + 4 + n])
                    pos += 4 + n
                rows.append((int(cols[0]), len(cols[1])))
            elif kind == b"E":
                raise AssertionError("error reply: %r" % body)
            elif kind == b"Z":
                ready += 1
    return rows, kinds


@pytest.mark.parametrize("io_uring", [1, 0], ids=["batched", "plain"])
def test_slow_reader_gets_every_byte_in_order(bench, pgfleet, io_uring):
    """A client that sends queries one after another and reads nothing for
    a while: the replies fill the socket buffers, a write pgfleet deferred
    to the end of a pass meets a full socket (the rest waits for the
    socket's write event), back-pressure stops the server's reads, and the
    queries the client goes on sending reach the same server connection.
    When the client reads at last, every reply is there, whole, in order.
    (Before, the connection went back to the pool once the client had
    drained the first backed-up reply, with those later queries still
    unanswered on it: their replies were lost.)"""
    fleet = pgfleet(settings={"auth_type": "trust", "io_uring": io_uring})
    before = io_counters(fleet)

    s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    s.settimeout(60)
    s.connect((fleet.host, fleet.port))
    params = b"user\x00app\x00database\x00app\x00\x00"
    s.sendall(struct.pack("!II", 8 + len(params), 196608) + params)
    read_replies(s, 1, time.monotonic() + 30)

    # One query at a time, so each reply reaches pgfleet on its own and is
    # a deferred write (< 8 KiB); all of them are more than the socket
    # buffers hold (tcp_wmem lets a sender queue 4 MiB).
    n, size = 1500, 7000
    sent = []

    def send_queries():
        try:
            for i in range(n):
                s.sendall(pg_message(b"Q", ("SELECT %d, repeat('z', %d)" % (i, size)).encode()
                                     + b"\x00"))
                sent.append(i)
                time.sleep(0.001)
        except Exception as e:  # reported below
            sent.append(repr(e))

    sender = threading.Thread(target=send_queries)
    sender.start()
    # Others keep the loop busy meanwhile, so passes write many sockets.
    run_echo_clients(fleet, clients=6, n=100)
    time.sleep(1.5)  # the replies fill the socket buffers
    rows, _ = read_replies(s, n, time.monotonic() + 120)
    sender.join(60)
    assert not sender.is_alive() and sent == list(range(n)), sent[-3:]
    assert rows == [(i, size) for i in range(n)], rows[:3]
    s.sendall(pg_message(b"X", b""))
    s.close()

    after = io_counters(fleet)
    if io_uring:
        assert after["short_sends"] > before["short_sends"], (before, after)
    else:
        assert after["enabled"] == 0 and after["short_sends"] == 0, after


IO_URING_SYSCTL = "/proc/sys/kernel/io_uring_disabled"


def test_kernel_refusing_io_uring_falls_back(bench, pgfleet):
    """io_uring = 1 on a kernel that refuses rings (as a seccomp profile
    or kernel.io_uring_disabled does): pgfleet says so once per loop and
    serves with one system call per socket operation."""
    try:
        with open(IO_URING_SYSCTL) as f:
            saved = f.read().strip()
        with open(IO_URING_SYSCTL, "w") as f:
            f.write("2")  # no process may create a ring
    except OSError as e:
        pytest.skip("cannot set %s here: %s" % (IO_URING_SYSCTL, e))
    try:
        fleet = pgfleet()
    finally:
        with open(IO_URING_SYSCTL, "w") as f:  # rings made from now on work again
            f.write(saved)
    processed = run_pgbench(fleet, "-S", "-c", "8", "-j", "2", "-t", "200")
    assert processed == 1600
    run_echo_clients(fleet, clients=4, n=50)
    c = io_counters(fleet)
    assert c["enabled"] == 0 and c["recv_submits"] == c["send_submits"] == 0, c
    lines = [l for l in fleet.log_text().splitlines() if "io_uring unavailable" in l]
    assert len(lines) == fleet.workers, lines
    assert "level=info" in lines[0] and "error=" in lines[0], lines[0]
