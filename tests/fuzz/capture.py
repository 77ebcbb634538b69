#!/usr/bin/python3
"""Seeds the fuzz corpora (tests/fuzz/corpus/<harness>/) from real traffic.

Real clients (psql, psycopg with the extended protocol and a pipeline,
asyncpg, pgbench -M extended/prepared) talk to a real PostgreSQL through a
small TCP relay that records every recv() of each direction.  Each recorded
connection is then cut into inputs for the three harnesses (driver.h gives
the format: a variant byte, then chunks separated by FUZZ_SEP):

  startup   what the client sent, from its first byte, one chunk per recv;
  extended  what the client sent after logging in (StartupMessage and
            password messages dropped), one chunk per recv;
  server    the server's login replies (its authentication exchange replaced
            by AuthenticationOk: the harness's client logs in over trust),
            then alternately the client's requests and the server's replies.

Run it with a PostgreSQL from the test fixture (sslmode=disable, so the
bytes are plaintext):

  PGFLEET_FIXTURE_NET=127.0.6 /usr/bin/python3 tests/integration/fixture.py up --pods 1
  PGFLEET_FIXTURE_NET=127.0.6 /usr/bin/python3 tests/fuzz/capture.py
  PGFLEET_FIXTURE_NET=127.0.6 /usr/bin/python3 tests/integration/fixture.py down

It replaces the files it wrote before (names start with "real-") and leaves
any other corpus file (regressions) alone.
"""

import asyncio
import os
import select
import socket
import struct
import subprocess
import sys
import tempfile
import threading

HERE = os.path.dirname(os.path.abspath(__file__))
NET = os.environ.get("PGFLEET_FIXTURE_NET", "127.0.0")
PG_HOST, PG_PORT = NET + ".2", 5432
USER, PASSWORD, DB = "app", "app-secret", "app"
SEP = b"\n--8<--\n"
MAX_CHUNKS = 60       # the harnesses split into at most 64
MAX_INPUT = 16 * 1024 # keeps the corpus small and each run fast


class Relay:
    """127.0.0.1:<ephemeral> -> PostgreSQL; records [(dir, bytes)] per
    connection, dir 'c' (client to server) or 's'."""

    def __init__(self):
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(16)
        self.port = self.sock.getsockname()[1]
        self.conns = []
        self.lock = threading.Lock()
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self):
        while True:
            try:
                c, _ = self.sock.accept()
            except OSError:
                return
            rec = []
            with self.lock:
                self.conns.append(rec)
            threading.Thread(target=self._pipe, args=(c, rec), daemon=True).start()

    def _pipe(self, c, rec):
        s = socket.create_connection((PG_HOST, PG_PORT))
        peer = {c: s, s: c}
        while True:
            r, _, _ = select.select([c, s], [], [], 30)
            if not r:
                break
            done = False
            for fd in r:
                data = fd.recv(65536)
                if not data:
                    done = True
                    break
                rec.append(("c" if fd is c else "s", data))
                peer[fd].sendall(data)
            if done:
                break
        c.close()
        s.close()

    def take(self):
        with self.lock:
            conns, self.conns = self.conns, []
        return conns


def dsn(port):
    return ("host=127.0.0.1 port=%d user=%s password=%s dbname=%s sslmode=disable"
            " gssencmode=disable" % (port, USER, PASSWORD, DB))


# ---- the clients ------------------------------------------------------------

def run_psql(port):
    env = dict(os.environ, PGPASSWORD=PASSWORD)
    for sql in ["SELECT 1",
                "BEGIN; CREATE TEMP TABLE t(a int, b text); INSERT INTO t VALUES (1, 'x');"
                " SELECT * FROM t; COMMIT",
                "PREPARE p(int) AS SELECT $1 + 1; EXECUTE p(41); DEALLOCATE p; DISCARD ALL",
                "SELECT 1/0",
                "SET application_name = 'fuzz'; SHOW application_name"]:
        subprocess.run(["psql", "-X", "-q", dsn(port), "-c", sql], env=env,
                       stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, timeout=30)
    # COPY both ways.
    subprocess.run(["psql", "-X", "-q", dsn(port)], env=env, timeout=30,
                   input=b"CREATE TEMP TABLE c(a int);\nCOPY c FROM STDIN;\n1\n2\n\\.\n"
                         b"COPY c TO STDOUT;\n",
                   stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


def run_psycopg(port):
    import psycopg
    with psycopg.connect(dsn(port), autocommit=True) as conn:
        conn.execute("SELECT %s::int + %s", (1, 2)).fetchall()
        conn.execute("SELECT %s::text", ("hello",), prepare=True).fetchall()
        conn.execute("SELECT %s::text", ("again",), prepare=True).fetchall()
        conn.execute("SELECT %s", (None,)).fetchall()
    with psycopg.connect(dsn(port), autocommit=True, prepare_threshold=0) as conn:
        for i in range(3):
            conn.execute("SELECT %s::int * 2", (i,)).fetchall()
        conn.execute("DEALLOCATE ALL")
        try:
            conn.execute("SELECT %s::int / 0", (1,))
        except psycopg.Error:
            pass
    with psycopg.connect(dsn(port)) as conn:  # a transaction
        with conn.cursor() as cur:
            cur.execute("CREATE TEMP TABLE p(a int, b text)")
            cur.executemany("INSERT INTO p VALUES (%s, %s)", [(1, "a"), (2, "b"), (3, "c")])
            cur.execute("SELECT * FROM p WHERE a > %s", (1,))
            cur.fetchall()
        conn.commit()
    with psycopg.connect(dsn(port), autocommit=True) as conn:
        with conn.pipeline():
            for i in range(4):
                conn.execute("SELECT %s::int", (i,))
            conn.execute("SELECT pg_sleep(0)")
    with psycopg.connect(dsn(port), autocommit=True) as conn:
        with conn.cursor(name="srv") as cur:  # server-side cursor: portals, partial Execute
            conn.execute("BEGIN")
            cur.itersize = 2
            cur.execute("SELECT generate_series(1, 5)")
            cur.fetchall()
            conn.execute("COMMIT")


def run_asyncpg(port):
    import asyncpg

    async def go():
        conn = await asyncpg.connect(host="127.0.0.1", port=port, user=USER,
                                     password=PASSWORD, database=DB, ssl=False)
        await conn.fetch("SELECT $1::int + 1", 41)
        stmt = await conn.prepare("SELECT $1::text || 'x'")
        await stmt.fetch("a")
        await conn.executemany("SELECT $1::int", [(1,), (2,)])
        async with conn.transaction():
            await conn.execute("CREATE TEMP TABLE a(x int)")
            await conn.copy_records_to_table("a", records=[(1,), (2,)])
        try:
            await conn.fetch("SELECT $1::int / 0", 1)
        except asyncpg.PostgresError:
            pass
        await conn.close()
    asyncio.run(go())


def run_pgbench(port):
    env = dict(os.environ, PGPASSWORD=PASSWORD)
    with tempfile.NamedTemporaryFile("w", suffix=".sql", delete=False) as f:
        f.write("\\set x random(1, 100)\nSELECT :x::int + 1;\nBEGIN;\nSELECT :x;\nEND;\n")
        script = f.name
    try:
        for mode in ("extended", "prepared"):
            subprocess.run(["pgbench", "-n", "-M", mode, "-c", "1", "-t", "3", "-f", script,
                            dsn(port)], env=env, stdout=subprocess.DEVNULL,
                           stderr=subprocess.DEVNULL, timeout=60)
    finally:
        os.unlink(script)


# ---- cutting recordings into inputs ------------------------------------------

def messages(data, startup=False):
    """Splits a byte stream into whole messages (a startup-phase message has
    no type byte).  A trailing partial message is dropped."""
    out, pos = [], 0
    while True:
        if startup:
            if len(data) - pos < 4:
                break
            n = struct.unpack("!I", data[pos:pos + 4])[0]
            if n < 8 or len(data) - pos < n:
                break
            out.append(data[pos:pos + n])
            pos += n
            code = struct.unpack("!I", out[-1][4:8])[0]
            if code != 80877103 and code != 80877104:  # SSLRequest/GSSENCRequest
                startup = False
            continue
        if len(data) - pos < 5:
            break
        n = struct.unpack("!I", data[pos + 1:pos + 5])[0]
        if len(data) - pos < n + 1:
            break
        out.append(data[pos:pos + n + 1])
        pos += n + 1
    return out


def join(variant, chunks):
    chunks = [c for c in chunks if c][:MAX_CHUNKS]
    blob = bytes([variant]) + SEP.join(chunks)
    return blob[:MAX_INPUT]


def cut(rec, variant):
    client = [d for w, d in rec if w == "c"]
    allc = b"".join(client)
    inputs = {}
    # startup: the client's own bytes as sent; SCRAM variant, as the server asked.
    inputs["startup"] = join((variant & ~3) | 3, client)

    # The client's messages after its login, and where each recv ended.
    cmsgs = messages(allc, startup=True)
    login = [m for m in cmsgs if (m[:1] == b"p") or m[:1] not in b"PBDECSQFXHdcf"]
    after = [m for m in cmsgs if m not in login]
    if not after:
        return inputs
    inputs["extended"] = join(variant & ~3, regroup(rec, "c", skip=len(b"".join(login))))
    # startup over trust: the same session without its password messages, so
    # the login succeeds and the rest is forwarded.
    pw_free = [m for m in cmsgs if m[:1] != b"p"]
    inputs["startup-trust"] = join(variant & ~3, pw_free)

    # server: login replies with AuthenticationOk in place of the exchange,
    # then requests and replies in turn.
    allsv = b"".join(d for w, d in rec if w == "s")
    smsgs = messages(allsv)
    first = b""
    n = 0
    for m in smsgs:
        n += len(m)
        if m[:1] == b"R":
            continue
        first += m
        if m[:1] == b"Z":
            break
    first = b"R" + struct.pack("!II", 8, 0) + first
    turns = [first]
    c_skip = len(b"".join(login))
    s_skip = n
    cur_dir, cur = None, b""
    for w, d in rec:
        if w == "c":
            take = d[c_skip:] if c_skip else d
            c_skip = max(0, c_skip - len(d))
        else:
            take = d[s_skip:] if s_skip else d
            s_skip = max(0, s_skip - len(d))
        if not take:
            continue
        if w != cur_dir and cur:
            turns.append(cur)
            cur = b""
        if w != cur_dir and not turns_expect(turns, w):
            turns.append(b"")  # keep the alternation: server, client, server...
        cur_dir = w
        cur += take
    if cur:
        turns.append(cur)
    inputs["server"] = join(variant & ~3, turns)
    # The same login with the server's real SCRAM exchange left in: pgfleet
    # answers with its own nonce, so it fails at the server-first-message,
    # past the SASL parsing.
    real_login = b""
    for m in smsgs:
        real_login += m
        if m[:1] == b"Z":
            break
    inputs["server-auth"] = join(variant & ~3, [real_login])
    return inputs


def turns_expect(turns, w):
    """Is direction w the one whose turn comes next? (even: server)"""
    return (len(turns) % 2 == 0) == (w == "s")


def regroup(rec, want, skip):
    """The recv chunks of one direction, the first `skip` bytes dropped."""
    out = []
    for w, d in rec:
        if w != want:
            continue
        if skip >= len(d):
            skip -= len(d)
            continue
        out.append(d[skip:])
        skip = 0
    return out


def main():
    relay = Relay()
    recordings = []
    for name, fn in [("psql", run_psql), ("psycopg", run_psycopg),
                     ("asyncpg", run_asyncpg), ("pgbench", run_pgbench)]:
        fn(relay.port)
        import time
        time.sleep(0.5)  # the relay threads see the last close
        for i, rec in enumerate(relay.take()):
            recordings.append(("%s-%d" % (name, i), rec))
    # Variant bytes (driver.h): transaction mode by default, some in session
    # and statement mode, some with a statement cache of 1 or none.
    variants = [0x04, 0x00, 0x08, 0x24, 0x14]
    written = 0
    for h in ("startup", "extended", "server"):
        d = os.path.join(HERE, "corpus", h)
        os.makedirs(d, exist_ok=True)
        for f in os.listdir(d):
            if f.startswith("real-"):
                os.unlink(os.path.join(d, f))
    for k, (name, rec) in enumerate(recordings):
        if not rec:
            continue
        for key, blob in cut(rec, variants[k % len(variants)]).items():
            h, _, suffix = key.partition("-")
            if suffix and not name.endswith("-0"):
                continue  # the extra cuts once per client program is enough
            fname = "real-" + name + ("-" + suffix if suffix else "")
            with open(os.path.join(HERE, "corpus", h, fname), "wb") as f:
                f.write(blob)
            written += 1
    print("capture: %d connections, %d corpus files" % (len(recordings), written))


if __name__ == "__main__":
    sys.exit(main())
