"""Bounded per-client memory (issue 15, item 6): a client cannot make pgfleet
hold an unbounded amount of memory for it.

  * named prepared statements: at most max_client_prepared_statements per
    client and max_client_prepared_bytes of them; past either the Parse gets
    ErrorResponse 53400 naming the setting, in turn, and the session goes on;
  * what pgfleet queues for a client that does not read (its own replies to
    Parse/Close it answers itself, forwarded results, admin console output)
    stays below max_client_output_buffer: past it pgfleet stops reading that
    client until its socket has taken the queue (back-pressure).

These attacks need raw protocol messages (struct), which no driver sends.
Memory is read from /proc/<pgfleet pid>/status: VmHWM (the peak resident
set) against VmRSS before the attack, so no timing is assumed.
"""

import os
import socket
import struct
import threading
import time

import psycopg

import fixture as fx

ADMIN = "admin"
# Under ASan, freed blocks wait in a 256 MB quarantine and count as resident:
# a small one keeps the peak about pgfleet's own buffers (no effect without
# ASan).
MEASURE_ENV = {"ASAN_OPTIONS": ":".join(
    o for o in (os.environ.get("ASAN_OPTIONS", ""), "quarantine_size_mb=4") if o)}


def status_kb(fleet, field):
    with open("/proc/%d/status" % fleet.pid) as f:
        for line in f:
            if line.startswith(field + ":"):
                return int(line.split()[1])
    raise AssertionError("no %s for pid %d" % (field, fleet.pid))


def msg(kind, body=b""):
    return kind + struct.pack("!I", len(body) + 4) + body


def parse(name, sql):
    return msg(b"P", name.encode() + b"\0" + sql.encode() + b"\0" + struct.pack("!H", 0))


def close_stmt(name):
    return msg(b"C", b"S" + name.encode() + b"\0")


SYNC = msg(b"S")


class Raw:
    """One protocol-3 connection over a plain socket (auth_type = trust)."""

    def __init__(self, fleet, dbname=fx.APP_DB, user=fx.APP_USER, rcvbuf=None):
        self.s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        if rcvbuf:
            self.s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, rcvbuf)
        self.s.settimeout(120)
        self.s.connect((fleet.host, fleet.port))
        self.buf = b""
        params = b"user\0" + user.encode() + b"\0database\0" + dbname.encode() + b"\0\0"
        self.s.sendall(struct.pack("!II", 8 + len(params), 196608) + params)
        kinds = [k for k, _ in self.until_ready()]
        assert b"E" not in kinds, kinds

    def recv_msg(self):
        while True:
            if len(self.buf) >= 5:
                (n,) = struct.unpack("!I", self.buf[1:5])
                if len(self.buf) >= 1 + n:
                    kind, body = self.buf[:1], self.buf[5:1 + n]
                    self.buf = self.buf[1 + n:]
                    return kind, body
            chunk = self.s.recv(1 << 20)
            assert chunk, "pgfleet closed the connection"
            self.buf += chunk

    def until_ready(self):
        out = []
        while True:
            kind, body = self.recv_msg()
            out.append((kind, body))
            if kind == b"Z":
                return out

    def close(self):
        try:
            self.s.sendall(msg(b"X"))
        except OSError:
            pass
        self.s.close()


def error_fields(body):
    fields = {}
    for part in body.split(b"\0"):
        if part:
            fields[part[:1].decode()] = part[1:].decode()
    return fields


def send_in_thread(sock, chunks):
    """Sends the chunks from a thread; returns (thread, progress list)."""
    progress = []

    def run():
        try:
            for c in chunks:
                sock.sendall(c)
                progress.append(len(c))
        except Exception as e:  # reported by the test
            progress.append(repr(e))

    t = threading.Thread(target=run, daemon=True)
    t.start()
    return t, progress


def wait_stalled_or_done(thread, progress, quiet=1.0, timeout=120):
    """Until the sender finished, or made no progress for `quiet` seconds
    (pgfleet stopped reading it).  Not an assertion: only when to look."""
    deadline = time.monotonic() + timeout
    last, since = -1, time.monotonic()
    while thread.is_alive() and time.monotonic() < deadline:
        n = len(progress)
        if n != last:
            last, since = n, time.monotonic()
        elif time.monotonic() - since > quiet:
            return
        time.sleep(0.1)


def other_client_works(fleet, dbname):
    with psycopg.connect(fleet.dsn(dbname=dbname), autocommit=True, connect_timeout=20) as conn:
        assert conn.execute("SELECT 41 + 1").fetchone() == (42,)


def two_dbs():
    """The attacker's database has one server connection (so the statement
    it prepared first is on the server it pipelines to); the bystander's is
    another pool on the same PostgreSQL."""
    pod = fx.pod_addr(0)
    return {"app": "host=%s port=5432 dbname=app pool_size=1" % pod,
            "bystander": "host=%s port=5432 dbname=app" % pod}


def test_pipelined_parse_close_without_reading_is_bounded(service, pgfleet):
    """Parse/Close pairs pgfleet answers itself (the statement is already on
    the server), pipelined without a Sync by a client that never reads:
    before, every ParseComplete/CloseComplete piled up in the client's out
    queue (10 bytes a pair, 30 MB for 3 million pairs, 2 GiB -> abort).
    Now pgfleet stops reading the client at max_client_output_buffer; when
    the client reads at last, every reply is there, in order."""
    limit = 64 * 1024
    fleet = pgfleet(settings={"auth_type": "trust", "max_client_output_buffer": limit},
                    databases=two_dbs(), env=MEASURE_ENV)
    attacker = Raw(fleet, rcvbuf=4096)
    attacker.s.sendall(parse("warm", "SELECT 1") + SYNC)
    assert [k for k, _ in attacker.until_ready()] == [b"1", b"Z"]
    other_client_works(fleet, "bystander")
    rss_before = status_kb(fleet, "VmRSS")

    pairs, per_chunk = 3_000_000, 50_000
    chunks = []
    for base in range(0, pairs, per_chunk):
        chunks.append(b"".join(parse("s%d" % i, "SELECT 1") + close_stmt("s%d" % i)
                               for i in range(base, base + per_chunk)))
    chunks.append(SYNC)
    sender, progress = send_in_thread(attacker.s, chunks)
    wait_stalled_or_done(sender, progress)
    assert fleet.running, fleet.log_tail()
    other_client_works(fleet, "bystander")  # the loop serves others meanwhile

    # The attacker reads at last: every reply, in order, then ReadyForQuery.
    expected = (msg(b"1") + msg(b"3")) * pairs + msg(b"Z", b"I")
    got = bytearray(attacker.buf)
    while len(got) < len(expected):
        chunk = attacker.s.recv(1 << 20)
        assert chunk, "closed after %d of %d bytes" % (len(got), len(expected))
        got += chunk
    sender.join(60)
    assert not sender.is_alive() and all(isinstance(p, int) for p in progress), progress[-2:]
    assert bytes(got) == expected
    peak = status_kb(fleet, "VmHWM")
    print("peak RSS growth: %d kB" % (peak - rss_before))
    # The attack's bytes went through; pgfleet held at most ~limit for it.
    assert peak - rss_before < 16 * 1024, (rss_before, peak)
    attacker.s.sendall(parse("after", "SELECT 2") + close_stmt("after") + SYNC)
    assert [k for k, _ in attacker.until_ready()] == [b"1", b"3", b"Z"]
    attacker.close()
    assert fleet.running


def test_statement_count_cap(service, pgfleet):
    """40,000 named statements of 2 KB from one client: before, all were
    kept (RSS 11 -> 93 MB).  Now the 2001st and later get 53400 naming
    max_client_prepared_statements (default 2000), each in turn, and the
    session goes on: a Close makes room again."""
    fleet = pgfleet(settings={"auth_type": "trust"}, databases=two_dbs(), env=MEASURE_ENV)
    c = Raw(fleet)
    rss_before = status_kb(fleet, "VmRSS")
    filler = "x" * 2000
    total, batch, ok, refused = 40_000, 1000, 0, []
    for base in range(0, total, batch):
        c.s.sendall(b"".join(parse("st%d" % i, "SELECT %d, '%s'" % (i, filler)) + SYNC
                             for i in range(base, base + batch)))
        for i in range(base, base + batch):
            replies = c.until_ready()
            kinds = [k for k, _ in replies]
            if kinds == [b"1", b"Z"]:
                assert not refused, "statement %d accepted after a refusal" % i
                ok += 1
            else:
                assert kinds == [b"E", b"Z"], kinds
                refused.append(error_fields(replies[0][1]))
    assert ok == 2000, ok
    assert len(refused) == total - 2000
    first = refused[0]
    assert first["C"] == "53400" and first["S"] == "ERROR", first
    assert "max_client_prepared_statements" in first["M"] and '"st2000"' in first["M"], first
    peak = status_kb(fleet, "VmHWM")
    print("peak RSS growth: %d kB" % (peak - rss_before))
    # 2000 x 2 KB kept, not 40,000 x 2 KB.
    assert peak - rss_before < 40 * 1024, (rss_before, peak)

    # The session goes on: statements work, a Close makes room for one more.
    bind_exec = (msg(b"B", b"\0st7\0" + struct.pack("!HHH", 0, 0, 0))
                 + msg(b"E", b"\0" + struct.pack("!I", 0)))
    c.s.sendall(bind_exec + SYNC)
    replies = c.until_ready()
    assert [k for k, _ in replies] == [b"2", b"D", b"C", b"Z"], replies
    c.s.sendall(parse("fresh", "SELECT 'fresh'") + SYNC)
    assert [k for k, _ in c.until_ready()] == [b"E", b"Z"]
    c.s.sendall(close_stmt("st0") + parse("fresh", "SELECT 'fresh'") + SYNC)
    assert [k for k, _ in c.until_ready()] == [b"3", b"1", b"Z"]
    c.close()


def test_statement_byte_cap(service, pgfleet):
    """Large statement texts: max_client_prepared_bytes bounds a client's
    statements whatever their count (2000 x 1 MB would be 2 GB)."""
    fleet = pgfleet(settings={"auth_type": "trust", "max_client_prepared_bytes": 3_000_000},
                    databases=two_dbs(), env=MEASURE_ENV)
    c = Raw(fleet)
    big = "x" * 900_000
    for i in range(3):
        c.s.sendall(parse("big%d" % i, "SELECT %d, '%s'" % (i, big)) + SYNC)
        assert [k for k, _ in c.until_ready()] == [b"1", b"Z"], i
    c.s.sendall(parse("big3", "SELECT 3, '%s'" % big) + parse("small", "SELECT 1") + SYNC)
    replies = c.until_ready()
    assert [k for k, _ in replies] == [b"E", b"Z"], replies  # "small" skipped up to Sync
    err = error_fields(replies[0][1])
    assert err["C"] == "53400" and "max_client_prepared_bytes" in err["M"], err
    c.s.sendall(close_stmt("big0") + parse("big3", "SELECT 3, '%s'" % big) + SYNC)
    assert [k for k, _ in c.until_ready()] == [b"3", b"1", b"Z"]
    c.close()


def test_result_not_read_is_bounded(service, pgfleet):
    """Forwarded results to a client that does not read: pgfleet stops
    reading the server (back-pressure) instead of buffering the result."""
    fleet = pgfleet(settings={"auth_type": "trust"}, databases=two_dbs(), env=MEASURE_ENV)
    c = Raw(fleet, rcvbuf=4096)
    rss_before = status_kb(fleet, "VmRSS")
    rows, width, queries = 50_000, 1000, 2
    q = msg(b"Q", ("SELECT repeat('y', %d) FROM generate_series(1, %d)"
                   % (width, rows)).encode() + b"\0")
    c.s.sendall(q * queries)
    # The backend is blocked writing to pgfleet: the result is waiting.
    with service.connect(0) as pg:
        assert fx.wait_until(lambda: pg.execute(
            "SELECT count(*) FROM pg_stat_activity WHERE wait_event = 'ClientWrite'"
            " AND query LIKE 'SELECT repeat%'").fetchone()[0] == 1, 60)
    other_client_works(fleet, "bystander")
    peak = status_kb(fleet, "VmHWM")
    print("peak RSS growth: %d kB" % (peak - rss_before))
    assert peak - rss_before < 16 * 1024, (rss_before, peak)
    n_rows = 0
    for _ in range(queries):
        for kind, body in c.until_ready():
            assert kind != b"E", body
            n_rows += kind == b"D"
    assert n_rows == rows * queries
    c.close()


def test_admin_console_that_does_not_read_is_bounded(service, pgfleet):
    """SHOW CLIENTS with many clients to a console that does not read: the
    console handles one command at a time and reads nothing while a reply
    waits (bounded by construction: one reply, max_client_conn rows)."""
    fleet = pgfleet(settings={"auth_type": "trust", "admin_users": ADMIN},
                    users={fx.APP_USER: fx.APP_PASSWORD, ADMIN: "x"}, databases=two_dbs(),
                    env=MEASURE_ENV)
    idle = [Raw(fleet, dbname="bystander") for _ in range(300)]
    console = Raw(fleet, dbname="pgbouncer", user=ADMIN, rcvbuf=4096)
    rss_before = status_kb(fleet, "VmRSS")
    n = 2_000
    sender, progress = send_in_thread(console.s, [msg(b"Q", b"SHOW CLIENTS;\0")] * n)
    wait_stalled_or_done(sender, progress)
    other_client_works(fleet, "bystander")
    peak = status_kb(fleet, "VmHWM")
    print("peak RSS growth: %d kB" % (peak - rss_before))
    # One SHOW CLIENTS of 300 rows is ~100 KB; 2,000 of them would be 200 MB.
    assert peak - rss_before < 16 * 1024, (rss_before, peak)
    for _ in range(n):
        kinds = [k for k, _ in console.until_ready()]
        assert kinds[-2:] == [b"C", b"Z"] and kinds.count(b"D") >= 300, kinds[:3]
    sender.join(60)
    assert not sender.is_alive()
    console.close()
    for c in idle:
        c.close()


def test_pipeline_longer_than_the_request_queue_is_refused(service, pgfleet):
    """Faked replies wait behind a request the server has not answered (no
    Sync: PostgreSQL holds its ParseComplete), so the request queue holds
    them all.  Past max_pipelined_requests (1,048,576, 24 MiB) the client
    is closed with 54000 before the request that did not fit is forwarded;
    pgfleet stays up and serves others."""
    fleet = pgfleet(settings={"auth_type": "trust"}, databases=two_dbs(), env=MEASURE_ENV)
    attacker = Raw(fleet, rcvbuf=4096)
    attacker.s.sendall(parse("warm", "SELECT 1") + SYNC)
    assert [k for k, _ in attacker.until_ready()] == [b"1", b"Z"]
    rss_before = status_kb(fleet, "VmRSS")
    chunks = [parse("head", "SELECT 2")]  # a real Parse: its reply waits for a Sync
    for base in range(0, 600_000, 50_000):
        chunks.append(b"".join(parse("s%d" % i, "SELECT 1") + close_stmt("s%d" % i)
                               for i in range(base, base + 50_000)))
    sender, progress = send_in_thread(attacker.s, chunks)
    fleet.wait_log(r"too many requests pipelined before a Sync \(more than 1048576: max_pipelined_requests\)", 120)
    sender.join(60)
    assert fleet.running
    try:
        kind, body = attacker.recv_msg()
        assert kind == b"E" and error_fields(body)["C"] == "54000", (kind, body)
    except ConnectionResetError:
        pass  # unread requests make the kernel reset the closed socket
    attacker.s.close()
    other_client_works(fleet, "bystander")
    peak = status_kb(fleet, "VmHWM")
    print("peak RSS growth: %d kB" % (peak - rss_before))
    # The ring at its largest (24 MiB) and the one it grew from, at most.
    assert peak - rss_before < 48 * 1024, (rss_before, peak)


def test_max_pipelined_requests_is_a_setting(service, pgfleet):
    """The request queue's limit is max_pipelined_requests: with 1000, the
    1001st request before a Sync closes the client with 54000 naming the
    setting, and a pipeline under it still gets every reply."""
    fleet = pgfleet(settings={"auth_type": "trust", "max_pipelined_requests": 1000},
                    databases=two_dbs())
    ok = Raw(fleet)
    # 450 Parse+Close pairs and the Sync: 901 requests, all answered.
    ok.s.sendall(b"".join(parse("k%d" % i, "SELECT 1") + close_stmt("k%d" % i)
                          for i in range(450)) + SYNC)
    kinds = [k for k, _ in ok.until_ready()]
    assert kinds == [b"1", b"3"] * 450 + [b"Z"], kinds[-5:]
    ok.s.close()
    attacker = Raw(fleet)
    attacker.s.sendall(parse("head", "SELECT 2") + b"".join(
        parse("s%d" % i, "SELECT 1") + close_stmt("s%d" % i) for i in range(600)))
    fleet.wait_log(r"too many requests pipelined before a Sync "
                   r"\(more than 1000: max_pipelined_requests\)", 60)
    try:
        while True:
            kind, body = attacker.recv_msg()
            if kind == b"E":
                assert error_fields(body)["C"] == "54000", body
                break
    except ConnectionResetError:
        pass  # unread requests make the kernel reset the closed socket
    attacker.s.close()
    assert fleet.running
    other_client_works(fleet, "bystander")


def test_repeated_encryption_requests_are_refused(service, pgfleet):
    """An SSLRequest answered 'N' may be followed by a GSSENCRequest, as on
    PostgreSQL; an endless stream of them (one 'N' queued each for a client
    that never reads) is refused."""
    fleet = pgfleet(settings={"auth_type": "trust"}, databases=two_dbs(), env=MEASURE_ENV)
    s = socket.create_connection((fleet.host, fleet.port), timeout=30)
    ssl_request = struct.pack("!II", 8, 80877103)
    s.sendall(ssl_request * 3)
    data = b""
    while True:
        chunk = s.recv(4096)
        if not chunk:
            break
        data += chunk
    assert data[:2] == b"NN" and data[2:3] == b"E", data
    assert error_fields(data[7:])["C"] == "08P01", data
    s.close()
    other_client_works(fleet, "bystander")


def test_hidden_parses_of_big_statements_are_back_pressured(service, pgfleet):
    """Describes of big statements the server connection lacks (one
    statement per connection here, so each evicts the last): each makes
    pgfleet queue a hidden Parse of the whole text for the server.  Before,
    one pass over a buffer of small Describes queued them all at once
    (200 x 900 KB);
    now the server's out queue is flushed at max_client_output_buffer and
    the client is not read while it cannot be."""
    fleet = pgfleet(settings={"auth_type": "trust", "max_prepared_statements": 1},
                    databases=two_dbs(), env=MEASURE_ENV)
    c = Raw(fleet)
    big = "z" * 900_000
    n_stmts, n_binds = 4, 200
    c.s.sendall(b"".join(parse("big%d" % i, "SELECT %d, length('%s')" % (i, big))
                         for i in range(n_stmts)) + SYNC)
    assert [k for k, _ in c.until_ready()] == [b"1"] * n_stmts + [b"Z"]
    rss_before = status_kb(fleet, "VmRSS")
    # Describe: consumed whole by pgfleet (a Bind's parameters stream after
    # it, which flushed the queue before the next one even before).
    c.s.sendall(b"".join(msg(b"D", b"Sbig%d\0" % (i % n_stmts)) for i in range(n_binds))
                + SYNC)
    replies = c.until_ready()
    kinds = [k for k, _ in replies]
    assert kinds == [b"t", b"T"] * n_binds + [b"Z"], kinds[:4]
    c.s.sendall(msg(b"B", b"\0big1\0" + struct.pack("!HHH", 0, 0, 0))
                + msg(b"E", b"\0" + struct.pack("!I", 0)) + SYNC)
    rows = [b for k, b in c.until_ready() if k == b"D"]
    assert len(rows) == 1 and rows[0].endswith(b"900000"), rows
    peak = status_kb(fleet, "VmHWM")
    print("peak RSS growth: %d kB" % (peak - rss_before))
    assert peak - rss_before < 32 * 1024, (rss_before, peak)
    c.close()
