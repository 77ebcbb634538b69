"""A fleet of pgfleet instances (issue 20, items 1 and 2, SHOW PEERS).

Two and three pgfleet instances on their own loopback addresses, each with
`peers` naming one DNS name the fixture's dnsmasq answers with all of them
(as a headless Service with publishNotReadyAddresses would), POD_IP telling
each its own.  A CancelRequest sent to ANY instance ends the right query;
an unknown key does nothing and is forwarded at most once; a forged or
replayed peer message is refused and logged; an instance that stops is
noticed."""

import hashlib
import hmac
import os
import socket
import struct
import subprocess
import time

import psycopg
import pytest

import fixture as fx
from test_cancel_timeouts import RawClient, send_cancel

PEERS_NAME = "pgfleet-peers.pgfleet.svc.cluster.local"
SECRET = "peer-secret-for-tests-0123456789"
PEER_PORT = 6433
ADMIN, ADMIN_PW = "admin", "admin-pw"
SLEEP_SQL = "SELECT pg_sleep(10)"


def instance_addr(i):
    return "%s.%d" % (fx.NET_PREFIX, 201 + i)


def show_peers(fleet):
    conn = psycopg.connect(fleet.dsn(ADMIN, ADMIN_PW, "pgfleet"), autocommit=True)
    conn.prepare_threshold = None
    try:
        cur = conn.execute("SHOW PEERS")
        names = [d.name for d in cur.description]
        return [dict(zip(names, r)) for r in cur.fetchall()]
    finally:
        conn.close()


def live_view(fleet):
    return sorted((r["host"], r["state"], r["self"]) for r in show_peers(fleet))


def start_fleet(service, pgfleet, n, workers=None, secret=SECRET):
    """n instances that all see each other live (workers: None, the
    fixture's PGFLEET_FIXTURE_WORKERS)."""
    addrs = [instance_addr(i) for i in range(n)]
    service.set_name(PEERS_NAME, addrs)
    fleets = []
    # plain: RawClient answers a cleartext password request only
    settings = dict(peers=PEERS_NAME, peer_secret=secret, peer_port=PEER_PORT,
                    admin_users=ADMIN, auth_type="plain")
    if workers:
        settings["workers"] = workers
    for a in addrs:
        fleets.append(pgfleet(
            settings=settings,
            users={fx.APP_USER: fx.APP_PASSWORD, ADMIN: ADMIN_PW},
            env={"POD_IP": a}, host=a))
    for f in fleets:
        want = sorted((a, "live", "yes" if a == f.host else "no") for a in addrs)
        got = fx.wait_until(lambda f=f: live_view(f) == want, 10, step=0.2)
        assert got, "instance %s sees %s, want %s" % (f.host, live_view(f), want)
    return fleets


def cancels(fleet):
    """(forwarded, received) summed over fleet's SHOW PEERS rows."""
    rows = show_peers(fleet)
    return (sum(int(r["cancels_forwarded"]) for r in rows),
            sum(int(r["cancels_received"]) for r in rows))


def client_on_worker(holder, worker):
    """A raw client of holder served by `worker` (the low bits of its pid)."""
    for _ in range(64):
        c = RawClient(holder)
        if holder.workers == 1 or c.pid & 63 == worker:
            return c
        c.close()
    pytest.fail("no connection landed on worker %d" % worker)


def sleep_then_cancel(c, target):
    """pg_sleep(10) on raw client c, its key sent to target: seconds until
    the query ended and the SQLSTATE it ended with."""
    try:
        c.query(SLEEP_SQL)
        time.sleep(0.3)  # the query is on a server by now
        t0 = time.monotonic()
        assert send_cancel(target, c.pid, c.key) == b""
        err, status = c.result()
        return time.monotonic() - t0, (err or {}).get("C")
    finally:
        c.close()


# ---- cancel reaches the right pod -------------------------------------------------


@pytest.mark.parametrize("workers", [1, 2])
@pytest.mark.parametrize("n", [2, 3])
def test_a_cancel_sent_to_any_instance_ends_the_query(service, pgfleet, n, workers):
    fleets = start_fleet(service, pgfleet, n, workers=workers)
    for holder in fleets:
        for target in fleets:
            for worker in range(workers):  # a key of each worker
                elapsed, code = sleep_then_cancel(client_on_worker(holder, worker), target)
                assert code == "57014", (holder.host, target.host, code)
                assert elapsed < 2.5, (holder.host, target.host, elapsed)
    # Each cancel sent elsewhere was forwarded once and received once.
    forwarded = sum(cancels(f)[0] for f in fleets)
    received = sum(cancels(f)[1] for f in fleets)
    per_holder = (n - 1) * workers
    assert forwarded == received == n * per_holder


def test_unknown_keys_do_nothing_and_are_never_forwarded_twice(service, pgfleet):
    fleets = start_fleet(service, pgfleet, 3)
    victim = RawClient(fleets[0])
    try:
        victim.query("SELECT pg_sleep(1.5)")
        # Another instance's id, a key nobody has: one hop, then dropped.
        instance_bits = victim.pid & (0xFFFF << 6)
        for target in fleets[1:]:
            assert send_cancel(target, instance_bits | 5 << 22, victim.key ^ 0x5A5A) == b""
        # An instance id nobody has: not forwarded at all.
        ids = {int(r["peer_id"]) for r in show_peers(fleets[0])}
        nobody = next(i for i in range(1, 65536) if i not in ids)
        for target in fleets:
            assert send_cancel(target, nobody << 6 | 1 << 22, 12345) == b""
        err, status = victim.result()
        assert err is None and status == b"I", err  # the sleep ran to its end
    finally:
        victim.close()
    time.sleep(0.5)
    assert cancels(fleets[0]) == (0, 2)
    assert cancels(fleets[1]) == (1, 0)
    assert cancels(fleets[2]) == (1, 0)
    for f in fleets:
        assert "no live peer has this key" in f.log_text()


# ---- forged peer messages ----------------------------------------------------------


def peer_msg(secret, mtype, instance=4242, pid=0, key=0, ts=None, nonce=None, boot=77):
    body = b"PGFP" + bytes([1, mtype]) + struct.pack(
        ">HQQQII", instance, int((time.time() if ts is None else ts) * 1000),
        int.from_bytes(os.urandom(8), "big") if nonce is None else nonce, boot, pid, key)
    return body + hmac.new(secret.encode(), body, hashlib.sha256).digest()


def udp_exchange(addr, msg, wait=0.5):
    """Sends msg to addr's peer port from its own loopback address; the
    answers that came back within `wait` seconds."""
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    s.bind((fx.NET_PREFIX + ".250", 0))
    s.settimeout(wait)
    got = []
    try:
        s.sendto(msg, (addr, PEER_PORT))
        while True:
            got.append(s.recv(256))
    except socket.timeout:
        return got
    finally:
        s.close()


def refusals(fleet):
    return fleet.log_text().count("peer message refused")


def test_forged_and_replayed_peer_messages_are_refused_and_logged(service, pgfleet):
    fleets = start_fleet(service, pgfleet, 2)
    f0, f1 = fleets
    # A signed ping is answered (the test's secret is the fleet's).
    ok = peer_msg(SECRET, 1)
    assert len(udp_exchange(f0.host, ok)) == 1
    # The same datagram again: a replay.
    assert udp_exchange(f0.host, ok) == []
    f0.wait_log(r"peer message refused.*reason=replayed")
    # A cancel of a running query, signed with the wrong secret: refused,
    # the query runs on.
    victim = RawClient(f0)
    try:
        time.sleep(1.1)  # the refusal log line is rate-limited to one a second
        victim.query("SELECT pg_sleep(2)")
        time.sleep(0.3)
        assert udp_exchange(f0.host, peer_msg("not-the-secret-at-all", 3, pid=victim.pid,
                                              key=victim.key)) == []
        f0.wait_log(r"peer message refused.*reason=\"?bad signature")
        err, status = victim.result()
        assert err is None and status == b"I", err
    finally:
        victim.close()
    # Unsigned, stale, garbage: refused, never answered.
    time.sleep(1.1)
    assert udp_exchange(f1.host, peer_msg(SECRET, 1, ts=time.time() - 600)) == []
    f1.wait_log(r"peer message refused.*reason=\"?timestamp out of window")
    assert udp_exchange(f1.host, b"hello") == []
    assert udp_exchange(f1.host, ok[:-32] + bytes(32)) == []
    time.sleep(1.1)
    assert udp_exchange(f1.host, b"x" * 72) == []
    f1.wait_log(r"peer message refused.*reason=\"?not a pgfleet peer message")
    assert cancels(f0) == (0, 0)
    status, body = f0.http_get("/metrics")
    assert status == 200
    refused = [l for l in body.splitlines()
               if l.startswith("pgfleet_peer_messages_refused_total ")]
    assert refused and int(refused[0].split()[1]) >= 2
    for f in fleets:
        assert SECRET not in f.log_text() and "not-the-secret" not in f.log_text()


def test_an_instance_from_another_fleet_secret_is_never_live(service, pgfleet):
    addrs = [instance_addr(0), instance_addr(1)]
    service.set_name(PEERS_NAME, addrs)
    a = pgfleet(settings=dict(peers=PEERS_NAME, peer_secret=SECRET, peer_port=PEER_PORT,
                              admin_users=ADMIN),
                users={fx.APP_USER: fx.APP_PASSWORD, ADMIN: ADMIN_PW},
                env={"POD_IP": addrs[0]}, host=addrs[0])
    pgfleet(settings=dict(peers=PEERS_NAME, peer_secret=SECRET[::-1], peer_port=PEER_PORT),
            env={"POD_IP": addrs[1]}, host=addrs[1])
    a.wait_log(r"peer message refused.*reason=\"?bad signature")
    assert live_view(a) == [(addrs[0], "live", "yes"), (addrs[1], "down", "no")]
    with psycopg.connect(a.dsn(ADMIN, ADMIN_PW, "pgfleet"), autocommit=True) as conn:
        conn.prepare_threshold = None
        config = {r[0]: r[1] for r in conn.execute("SHOW CONFIG").fetchall()}
    assert config["peer_secret"] == "********" and config["peers"] == PEERS_NAME


# ---- liveness ------------------------------------------------------------------------


def test_an_instance_stopping_is_noticed(service, pgfleet):
    fleets = start_fleet(service, pgfleet, 3)
    gone = fleets[2]
    gone.stop()
    addrs = [instance_addr(i) for i in range(3)]
    want = sorted([(addrs[0], "live", "yes"), (addrs[1], "live", "no"),
                   (addrs[2], "down", "no")])
    assert fx.wait_until(lambda: live_view(fleets[0]) == want, 8, step=0.2), \
        live_view(fleets[0])
    fleets[0].wait_log(r"peer down.*peer=%s" % addrs[2].replace(".", r"\."))
    status, body = fleets[0].http_get("/metrics")
    assert "pgfleet_peers 2" in body.splitlines()
    assert 'pgfleet_peer_up{peer="%s",self="no"} 0' % addrs[2] in body
    # Out of DNS: forgotten.
    service.set_name(PEERS_NAME, addrs[:2])
    assert fx.wait_until(lambda: len(show_peers(fleets[1])) == 2, 8, step=0.2), \
        show_peers(fleets[1])
    fleets[1].wait_log(r"peer gone")


def test_without_peers_nothing_changes(service, pgfleet):
    fleet = pgfleet(settings=dict(admin_users=ADMIN),
                    users={fx.APP_USER: fx.APP_PASSWORD, ADMIN: ADMIN_PW})
    assert show_peers(fleet) == []
    status, body = fleet.http_get("/metrics")
    assert "pgfleet_peers 1" in body.splitlines()
    assert not [l for l in body.splitlines() if l.startswith("pgfleet_peer_messages_refused_total")]


# ---- configuration ------------------------------------------------------------------------


def check(tmp_path, **settings):
    ini = tmp_path / "pgfleet.ini"
    ini.write_text("[databases]\napp = host=%s dbname=app\n\n[pgfleet]\nauth_type = trust\n%s"
                   % (fx.SVC_NAME, "".join("%s = %s\n" % kv for kv in settings.items())))
    binary = os.environ.get("PGFLEET_BIN") or os.path.join(fx.REPO, "build", "pgfleet")
    return subprocess.run([binary, "--check", str(ini)], capture_output=True, text=True,
                          timeout=30)


def test_peers_need_a_secret(tmp_path):
    p = check(tmp_path, peers=PEERS_NAME)
    assert p.returncode == 1
    assert "pgfleet.ini:6: key 'peers': needs peer_secret" in p.stderr, p.stderr
    p = check(tmp_path, peers=PEERS_NAME, peer_secret="short")
    assert p.returncode == 1
    assert "pgfleet.ini:7: key 'peer_secret': must be at least 16 characters" in p.stderr
    assert "short" not in p.stderr.replace("peer_secret", "")
    p = check(tmp_path, peers=PEERS_NAME, peer_secret=SECRET, peer_port=0)
    assert p.returncode == 1 and "key 'peer_port'" in p.stderr
    p = check(tmp_path, peers=PEERS_NAME, peer_secret=SECRET)
    assert p.returncode == 0, p.stderr
