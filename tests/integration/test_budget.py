"""One connection budget for the fleet (issue 20 item 3): max_db_connections
and max_user_connections hold for every pgfleet instance of a fleet
together; each holds its share of the live instances (limit / live, one more
for the first ranks by address), re-balanced as instances come and go, and
clients wait instead of failing.

The instances here are real peers: each listens on an address of its own
(the fixture's loopback network, .61, .62 ...) on the same ports, as pods do,
knows its address from POD_IP, and finds the others by a DNS name the
fixture's dnsmasq answers (`peers`, `peer_secret`: the peers module, issue 20
item 1).  The tests that start two instances pass once that module is in;
test_alone_* passes without it.

Counts are observed on the PostgreSQL servers and in SHOW DATABASES; no
assertion depends on the machine being fast."""

import os
import signal
import threading
import time

import psycopg

import fixture as fx
from test_admin import ADMIN, USERS, show
from test_limits import run_clients, settled_total, watch

PEERS_NAME = "pgfleet-peers.pgfleet.svc.cluster.local"
PEER_SECRET = "budget-peer-secret"
SETTINGS = {"admin_users": ADMIN, "query_wait_timeout": 120}
# How long the instances may take to see each other come and go: a DNS TTL
# (the fixture's is 1 s) and a peer check, with room for a slow machine.
SEE_EACH_OTHER = 30


def peer_addr(i):
    return "%s.%d" % (fx.NET_PREFIX, 61 + i)


def set_peer_records(service, ips):
    """Make the fixture's DNS answer PEERS_NAME with `ips` (the service's
    own records kept); the fixture's restore() drops them (dirty)."""
    service.dirty = True
    tmp = service.hosts_file + ".tmp"
    with open(tmp, "w") as f:
        for ip in service.records:
            f.write("%s %s\n" % (ip, service.name))
        for ip in ips:
            f.write("%s %s\n" % (ip, PEERS_NAME))
    os.chmod(tmp, 0o644)
    os.replace(tmp, service.hosts_file)
    os.kill(service.dns_pid, signal.SIGHUP)
    want = sorted(ips)
    deadline = time.monotonic() + 10
    while True:
        try:
            got = sorted(fx.resolve(PEERS_NAME, timeout=0.5))
        except fx.DnsError:
            got = []
        if got == want:
            return
        assert time.monotonic() < deadline, "DNS answers %s for peers, want %s" % (got, want)
        time.sleep(0.05)


class Fleet:
    """n pgfleet instances as peers, each on its own address, same ports."""

    def __init__(self, pgfleet, service, n, **settings):
        self.group = pgfleet.__self__  # the test's PgfleetGroup: it stops and checks them
        self.service = service
        self.port = fx.free_port(peer_addr(0))
        self.http_port = fx.free_port(peer_addr(0))
        self.settings = dict(SETTINGS)
        self.settings.update(settings)
        self.instances = [None] * n
        set_peer_records(service, [peer_addr(i) for i in range(n)])
        for i in range(n):
            self.start(i)

    def start(self, i):
        ip = peer_addr(i)
        s = dict(self.settings)
        s.update({"listen_addr": ip, "listen_port": self.port,
                  "http_listen": "%s:%d" % (ip, self.http_port),
                  "peers": PEERS_NAME, "peer_secret": PEER_SECRET})
        p = fx.Pgfleet(settings=s, users=dict(USERS), env={"POD_IP": ip})
        p.host = ip
        self.group.instances.append(p)
        p.start()
        p.http_port = self.http_port
        self.instances[i] = p
        return p

    def stop(self, i):
        """The instance goes as a pod does: SIGTERM, and out of DNS."""
        self.instances[i].stop()
        set_peer_records(self.service, [peer_addr(j) for j, p in enumerate(self.instances)
                                        if p is not None and p.running])


def app_row(p, what="DATABASES", key="name", name=fx.APP_DB):
    _, rows = show(p, what)
    return [r for r in rows if r[key] == name][0]


def wait_shares(instances, want, what="DATABASES", key="name", name=fx.APP_DB):
    """Waits until SHOW <what>'s fleet_share of each instance is want[i]."""
    deadline = time.monotonic() + SEE_EACH_OTHER
    while True:
        got = [app_row(p, what, key, name)["fleet_share"] for p in instances]
        if got == [str(w) for w in want]:
            return
        assert time.monotonic() < deadline, "fleet_share %s, want %s" % (got, want)
        time.sleep(0.2)


def current(p, limit=None):
    """SHOW DATABASES' current_connections of the app database, read up to
    three times when above `limit`: with workers = 2 it sums two answers
    taken a moment apart."""
    n = 0
    for _ in range(3):
        n = int(app_row(p)["current_connections"])
        if limit is None or n <= limit:
            return n
        time.sleep(0.05)
    return n


# ---- alone: the whole budget (passes without the peers module) -----------------


def test_alone_the_share_is_the_whole_limit(service, pgfleet):
    p = pgfleet(settings=dict(SETTINGS, max_db_connections=7, max_user_connections=5),
                users=dict(USERS))
    row = app_row(p)
    assert row["max_connections"] == "7" and row["fleet_share"] == "7", row
    assert app_row(p, "USERS", "name", fx.APP_USER)["fleet_share"] == "5"
    status, body = p.http_get("/metrics")
    assert status == 200
    assert 'pgfleet_database_connection_share{database="%s"} 7' % fx.APP_DB in body, body
    # no limit: no share (NULL), no series
    q = pgfleet(settings=dict(SETTINGS), users=dict(USERS))
    assert app_row(q)["fleet_share"] == ""
    assert "pgfleet_database_connection_share{" not in q.http_get("/metrics")[1]


# ---- two peers ------------------------------------------------------------------


def test_two_peers_split_the_limit_and_hold_it_under_load(service, pgfleet):
    """5 over 2 instances: 3 for the first (by address), 2 for the second;
    loaded together, their server connections never exceed 5 on the
    PostgreSQL servers, nor each its share, and every client is served."""
    f = Fleet(pgfleet, service, 2, default_pool_size=10, max_db_connections=5)
    a, b = f.instances
    wait_shares([a, b], [3, 2])
    status, body = a.http_get("/metrics")
    assert 'pgfleet_database_connection_share{database="%s"} 3' % fx.APP_DB in body
    assert a.wait_all_up(service.addrs) and b.wait_all_up(service.addrs)
    ta, errors_a, _ = run_clients(a, [fx.APP_DB] * 8)
    tb, errors_b, _ = run_clients(b, [fx.APP_DB] * 8)

    def check():
        n = settled_total(service, 5)
        assert n <= 5, n
        assert current(a, 3) <= 3 and current(b, 2) <= 2
        return n

    most = watch(ta + tb, check)
    assert not errors_a and not errors_b, errors_a + errors_b
    assert most >= 3  # the load did use the budget


def test_share_of_zero_waits_with_a_clear_reason(service, pgfleet):
    """A limit below the number of instances: the second gets 0; its client
    waits (no error for the share itself) until query_wait_timeout, whose
    error names the limit, the share and the fleet."""
    f = Fleet(pgfleet, service, 2, max_db_connections=1, query_wait_timeout=3)
    a, b = f.instances
    wait_shares([a, b], [1, 0])
    with a.connect() as conn:  # the first instance's share serves it
        conn.execute("SELECT 1")
    # (a first login learns the server's parameters from a server
    # connection: with a share of 0 the login itself waits)
    try:
        with b.connect() as conn:
            conn.execute("SELECT 1")
        raise AssertionError("an instance with a share of 0 opened a connection")
    except psycopg.Error as e:
        msg = str(e)
    assert "query_wait_timeout" in msg, msg
    assert ('max_db_connections (1, this instance\'s share 0 of 2 live pgfleet instances) '
            'reached for database "%s"' % fx.APP_DB) in msg, msg


def test_max_user_connections_is_shared_too(service, pgfleet):
    f = Fleet(pgfleet, service, 2, default_pool_size=10, max_user_connections=3)
    a, b = f.instances
    wait_shares([a, b], [2, 1], "USERS", "name", fx.APP_USER)
    assert a.wait_all_up(service.addrs) and b.wait_all_up(service.addrs)
    ta, errors_a, _ = run_clients(a, [fx.APP_DB] * 6)
    tb, errors_b, _ = run_clients(b, [fx.APP_DB] * 6)

    def check():
        n = settled_total(service, 3)
        assert n <= 3, n
        return n

    watch(ta + tb, check)
    assert not errors_a and not errors_b, errors_a + errors_b


def steady_load(p, clients, stop):
    """`clients` threads running short transactions on p until stop is set."""
    errors = []

    def client():
        try:
            with p.connect(autocommit=True) as c:
                c.prepare_threshold = None
                while not stop.is_set():
                    c.execute("SELECT pg_sleep(0.05)")
        except Exception as e:  # noqa: BLE001
            errors.append(repr(e))

    threads = [threading.Thread(target=client) for _ in range(clients)]
    for t in threads:
        t.start()
    return threads, errors


def wait_current(p, pred, what):
    deadline = time.monotonic() + SEE_EACH_OTHER
    while not pred(current(p)):
        assert time.monotonic() < deadline, "%s: current_connections %d" % (what, current(p))
        time.sleep(0.1)


def test_rebalance_when_a_peer_stops_and_comes_back(service, pgfleet):
    """4 over 2: 2 each.  The second stops: the first takes all 4 (within a
    DNS TTL and a peer check) and its waiting clients get them.  It comes
    back: the first gives 2 back (idle ones closed, busy ones as their
    transaction ends), so the sum returns to 4, and no client fails."""
    f = Fleet(pgfleet, service, 2, default_pool_size=10, max_db_connections=4)
    a, b = f.instances
    wait_shares([a, b], [2, 2])
    assert a.wait_all_up(service.addrs)
    stop = threading.Event()
    threads, errors = steady_load(a, 6, stop)
    try:
        wait_current(a, lambda n: n == 2, "the first instance uses its share")
        f.stop(1)
        wait_shares([a], [4])
        wait_current(a, lambda n: n == 4, "the whole budget once alone")
        b = f.start(1)
        set_peer_records(service, [peer_addr(0), peer_addr(1)])
        wait_shares([a, b], [2, 2])
        wait_current(a, lambda n: n <= 2, "back within its share under load")
        assert settled_total(service, 4) <= 4
        for _ in range(20):  # and it stays there
            assert current(a, 2) <= 2
            time.sleep(0.1)
    finally:
        stop.set()
        for t in threads:
            t.join(60)
    assert not errors, errors
