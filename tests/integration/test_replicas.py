"""Replica awareness (issue 5): health checks, roles, read/write routing, lag,
live DNS and failover, on the streaming-replication fixture (pod 0 primary,
pods 1-2 standbys behind one DNS name).

Health checks run every second and give up after one, DNS is re-read every
second: each test waits for what pgfleet should notice, with a bound that
follows from those settings."""

import os
import subprocess
import threading
import time

import psycopg
import pytest

import fixture as fx

PG_BIN = fx.PG_BIN
PERIOD = 1       # health_check_period
TIMEOUT = 1      # health_check_timeout
DNS_TTL = 1      # dns_max_ttl

SETTINGS = dict(health_check_period=PERIOD, health_check_timeout=TIMEOUT,
                dns_max_ttl=DNS_TTL, dns_nxdomain_ttl=1, ban_time=2,
                server_login_retry=1, query_wait_timeout=5)


def entry(tsa=None, host=fx.SVC_NAME, **extra):
    s = "host=%s port=%d dbname=%s" % (host, fx.PG_PORT, fx.APP_DB)
    if tsa:
        s += " target_session_attrs=" + tsa
    for k, v in extra.items():
        s += " %s=%s" % (k, v)
    return s


DATABASES = {"app": entry(), "app_rw": entry("read-write"),
             "app_ro": entry("prefer-standby")}


def start(pgfleet, settings=None, databases=None):
    s = dict(SETTINGS)
    s.update(settings or {})
    return pgfleet(settings=s, databases=databases or DATABASES)


def connect(fleet, dbname, **kw):
    conn = fleet.connect(dbname=dbname, **kw)
    conn.prepare_threshold = None
    return conn


def server_addr(conn):
    return conn.execute("SELECT host(inet_server_addr())").fetchone()[0]


def addrs_seen(fleet, dbname, n=30):
    """Where n transactions (one client, one after another) ran."""
    with connect(fleet, dbname) as conn:
        return [server_addr(conn) for _ in range(n)]


wait_until = fx.wait_until


def pgbench(fleet, dbname, *args, timeout=120):
    env = dict(os.environ, PGPASSWORD=fx.APP_PASSWORD)
    for k in ("PGHOST", "PGPORT", "PGUSER", "PGDATABASE"):
        env.pop(k, None)
    argv = [os.path.join(PG_BIN, "pgbench"), "-n", "-h", fleet.host, "-p",
            str(fleet.port), "-U", fx.APP_USER] + list(args) + [dbname]
    return subprocess.run(argv, env=env, capture_output=True, text=True,
                          timeout=timeout)


def wait_all_up(fleet, svc, timeout=10, db="app"):
    """Every pod's first check passed for db in every worker."""
    assert fleet.wait_all_up(svc.addrs, db, timeout), fleet.log_tail()


@pytest.fixture(scope="module")
def bench(replicated):
    replicated.pgbench_init(scale=1)
    return replicated


class Load:
    """Threads running one-statement transactions through pgfleet; a failed
    transaction is recorded with its time, and the thread reconnects."""

    def __init__(self, fleet, dbname, threads=6, sql="SELECT host(inet_server_addr())"):
        self.fleet, self.dbname, self.sql = fleet, dbname, sql
        self.stop = threading.Event()
        self.ok = []       # (time, addr)
        self.errors = []   # (time, message)
        self.lock = threading.Lock()
        self.threads = [threading.Thread(target=self._run, daemon=True)
                        for _ in range(threads)]

    def _run(self):
        conn = None
        while not self.stop.is_set():
            try:
                if conn is None:
                    conn = connect(self.fleet, self.dbname)
                row = conn.execute(self.sql).fetchone()
                with self.lock:
                    self.ok.append((time.monotonic(), row[0] if row else None))
            except psycopg.Error as e:
                with self.lock:
                    self.errors.append((time.monotonic(), str(e).strip()))
                if conn is not None:
                    conn.close()
                conn = None
                time.sleep(0.05)
        if conn is not None:
            conn.close()

    def __enter__(self):
        for t in self.threads:
            t.start()
        return self

    def __exit__(self, *exc):
        self.stop.set()
        for t in self.threads:
            t.join(30)

    def ok_since(self, t0):
        with self.lock:
            return [a for (t, a) in self.ok if t >= t0]


# ---- routing by role ----------------------------------------------------------


def test_new_replicas_wait_for_their_first_check(replicated, pgfleet):
    fleet = start(pgfleet)
    wait_all_up(fleet, replicated)
    log = fleet.log_text()
    for a in replicated.addrs:
        assert 'msg="replica up" db=app addr=%s:%d from=new' % (a, fx.PG_PORT) in log
    primary = fx.pod_addr(replicated.primary)
    assert ('msg="replica role changed" db=app addr=%s:%d role=primary'
            % (primary, fx.PG_PORT)) in log


def test_writes_through_read_write_never_reach_a_standby(bench, pgfleet):
    fleet = start(pgfleet)
    p = pgbench(fleet, "app_rw", "-c", "8", "-j", "2", "-T", "5")
    assert p.returncode == 0, p.stdout + p.stderr
    assert "number of failed transactions: 0" in p.stdout, p.stdout
    # Every server connection of app_rw went to the primary.
    with connect(fleet, "app_rw") as conn:
        assert server_addr(conn) == fx.pod_addr(bench.primary)
    assert set(addrs_seen(fleet, "app_rw", 20)) == {fx.pod_addr(bench.primary)}


def test_reads_through_prefer_standby_land_on_the_standbys(replicated, pgfleet):
    fleet = start(pgfleet)
    wait_all_up(fleet, replicated, db="app_ro")
    standbys = {fx.pod_addr(i) for i in replicated.standbys}
    seen = addrs_seen(fleet, "app_ro", 40)
    assert set(seen) == standbys, seen
    # With no standby up, prefer-standby falls back to the primary.
    for i in replicated.standbys:
        replicated.stop(i, "fast")
    primary = fx.pod_addr(replicated.primary)

    def on_primary():
        try:
            return set(addrs_seen(fleet, "app_ro", 5)) == {primary}
        except psycopg.Error:
            return False
    assert wait_until(on_primary, 3 * PERIOD + TIMEOUT + 3), fleet.log_tail()


def test_no_replica_for_the_target_names_the_reason(replicated, pgfleet):
    primary = fx.pod_addr(replicated.primary)
    fleet = start(pgfleet, settings=dict(query_wait_timeout=2),
                  databases={"app": entry(), "app_sb": entry("standby", host=primary)})
    wait_until(lambda: "msg=\"replica up\" db=app_sb" in fleet.log_text(), 5)
    t0 = time.monotonic()
    with pytest.raises(psycopg.Error) as ei:
        with connect(fleet, "app_sb") as conn:
            conn.execute("SELECT 1")
    waited = time.monotonic() - t0
    msg = str(ei.value)
    assert 'no replica of database "app_sb" is up for standby (1 known: 1 primary)' in msg, msg
    assert 1.5 <= waited < 10, waited


def test_a_lagging_standby_gets_no_reads(bench, pgfleet):
    fleet = start(pgfleet, settings=dict(max_replica_lag=1))
    wait_all_up(fleet, bench, db="app_ro")
    s1, s2 = (fx.pod_addr(i) for i in bench.standbys)
    assert set(addrs_seen(fleet, "app_ro", 20)) == {s1, s2}
    bench.pause_replay(bench.standbys[0])
    # WAL the paused standby receives and cannot replay.
    bench.psql(bench.primary, "UPDATE pgbench_branches SET bbalance = bbalance + 1")
    assert fleet.wait_every_worker('msg="replica lagging" db=app_ro addr=%s' % s1,
                                   2 + 2 * PERIOD + TIMEOUT), fleet.log_tail()
    assert set(addrs_seen(fleet, "app_ro", 20)) == {s2}
    bench.resume_replay(bench.standbys[0])
    assert wait_until(lambda: 'msg="replica caught up" db=app_ro addr=%s' % s1
                      in fleet.log_text(), 3 * PERIOD + TIMEOUT), fleet.log_tail()
    assert wait_until(lambda: s1 in addrs_seen(fleet, "app_ro", 10), 3)


# ---- live DNS ------------------------------------------------------------------


def test_a_pod_added_to_dns_takes_reads(replicated, pgfleet):
    fleet = start(pgfleet)
    wait_all_up(fleet, replicated)
    i = replicated.add_pod()  # a new standby, then its A record
    t0 = time.monotonic()
    new = fx.pod_addr(i)
    assert wait_until(lambda: new in addrs_seen(fleet, "app_ro", 6),
                      DNS_TTL + PERIOD + 2), fleet.log_tail()
    took = time.monotonic() - t0
    assert took <= DNS_TTL + PERIOD + 2, took
    assert 'msg="replica added" db=app_ro addr=%s:%d' % (new, fx.PG_PORT) in fleet.log_text()


def test_a_failing_resolver_keeps_the_last_good_answer(replicated, pgfleet):
    """A resolver blip is never a failover: the replicas stay, traffic goes
    on over all of them, and the failure is logged."""
    fleet = start(pgfleet)
    wait_all_up(fleet, replicated)
    replicated.dns_stop()
    try:
        assert wait_until(lambda: 'msg="dns lookup failed" host=%s' % fx.SVC_NAME
                          in fleet.log_text(), 20), fleet.log_tail()
        assert 'kept="last good answer"' in fleet.log_text()
        assert set(addrs_seen(fleet, "app", 12)) == set(replicated.addrs)
    finally:
        replicated.dns_start()
    assert "replica draining" not in fleet.log_text()


def test_sighup_re_resolves_at_once(replicated, pgfleet):
    """With the next lookup a minute away (a failed lookup waits
    dns_nxdomain_ttl), SIGHUP makes pgfleet see a new pod at once."""
    fleet = start(pgfleet, settings={"dns_nxdomain_ttl": 60})
    wait_all_up(fleet, replicated)
    replicated.dns_stop()
    assert wait_until(lambda: 'msg="dns lookup failed"' in fleet.log_text(), 20)
    i = replicated.add_pod(dns=False)
    new = fx.pod_addr(i)
    replicated.dns_start()
    replicated.set_records(replicated.records + [new])
    time.sleep(1)
    assert new not in addrs_seen(fleet, "app_ro", 6)  # not yet: no lookup due
    fleet.reload()
    assert wait_until(lambda: new in addrs_seen(fleet, "app_ro", 6), PERIOD + 3), \
        fleet.log_tail()


def test_a_pod_removed_from_dns_then_stopped_fails_nothing(bench, pgfleet):
    fleet = start(pgfleet)
    wait_all_up(fleet, bench)
    gone = bench.standbys[-1]
    gone_addr = fx.pod_addr(gone)
    with Load(fleet, "app") as load:
        time.sleep(1)
        bench.set_records([a for a in bench.records if a != gone_addr])
        removed = 'msg="replica removed" db=app addr=%s:%d' % (gone_addr, fx.PG_PORT)
        assert fleet.wait_every_worker(removed, DNS_TTL + 5), fleet.log_tail()
        bench.stop(gone, "fast")
        t_stop = time.monotonic()
        time.sleep(1.5)
    assert load.errors == [], load.errors
    after = load.ok_since(t_stop)
    assert after and gone_addr not in after
    assert 'msg="replica draining" db=app addr=%s' % gone_addr in fleet.log_text()


# ---- failures ------------------------------------------------------------------


def start_with_a_victim(pgfleet, replicated):
    """pgfleet with every pod up; the last standby is the one to fail, the
    first one the survivor (addresses)."""
    fleet = start(pgfleet)
    wait_all_up(fleet, replicated)
    victim = replicated.standbys[-1]
    return fleet, victim, fx.pod_addr(victim), fx.pod_addr(replicated.standbys[0])


def test_a_standby_killed_mid_load_hurts_only_its_transactions(replicated, pgfleet):
    fleet, victim, victim_addr, survivor = start_with_a_victim(pgfleet, replicated)
    threads = 6
    with Load(fleet, "app_ro", threads=threads) as load:
        time.sleep(1.5)
        assert victim_addr in load.ok_since(0)
        replicated.stop(victim, "immediate")
        t_kill = time.monotonic()
        time.sleep(2 * PERIOD + TIMEOUT + 1)
    # At most the transactions in flight on the victim (one per client), and
    # only right after the kill; the rest went on, on the other standby.
    assert len(load.errors) <= threads, load.errors
    assert all(t - t_kill < PERIOD + TIMEOUT for (t, _) in load.errors), load.errors
    late = load.ok_since(t_kill + PERIOD + TIMEOUT)
    assert len(late) > 20 and set(late) == {survivor}, set(late)
    assert wait_until(lambda: 'msg="replica down" db=app_ro addr=%s' % victim_addr
                      in fleet.log_text(), 1)


def test_a_hung_replica_is_marked_down_after_the_check_timeout(replicated, pgfleet):
    fleet, victim, victim_addr, survivor = start_with_a_victim(pgfleet, replicated)
    assert set(addrs_seen(fleet, "app_ro", 10)) == {victim_addr, survivor}
    replicated.hang(victim)
    t0 = time.monotonic()
    line = ('msg="replica down" db=app_ro addr=%s:%d from=up '
            'reason="health check timed out after %ds"' % (victim_addr, fx.PG_PORT, TIMEOUT))
    assert fleet.wait_every_worker(line, PERIOD + TIMEOUT + 1.5), fleet.log_tail()
    assert time.monotonic() - t0 >= TIMEOUT * 0.9
    # The others serve, promptly.
    t1 = time.monotonic()
    assert set(addrs_seen(fleet, "app_ro", 10)) == {survivor}
    assert set(addrs_seen(fleet, "app", 10)) <= {survivor, fx.pod_addr(replicated.primary)}
    assert time.monotonic() - t1 < 5


def test_failover_writes_go_to_the_promoted_standby(bench, pgfleet):
    """Last: a promotion makes the fixture rebuild the replication set."""
    fleet = start(pgfleet, settings=dict(query_wait_timeout=2))
    wait_all_up(fleet, bench)
    write = "UPDATE pgbench_branches SET bbalance = bbalance + 1 WHERE bid = 1 RETURNING host(inet_server_addr())"
    with connect(fleet, "app_rw") as conn:
        assert conn.execute(write).fetchone()[0] == fx.pod_addr(0)
    old, new = bench.primary, bench.standbys[0]
    bench.stop(old, "immediate")
    down = 'msg="replica down" db=app_rw addr=%s' % fx.pod_addr(old)
    assert fleet.wait_every_worker(down, PERIOD + TIMEOUT + 2), fleet.log_tail()
    # No primary: a writer waits query_wait_timeout and is told why.
    with pytest.raises(psycopg.Error) as ei:
        with connect(fleet, "app_rw") as conn:
            conn.execute(write)
    assert 'no replica of database "app_rw" is up for read-write' in str(ei.value), str(ei.value)
    bench.promote(new)
    t0 = time.monotonic()

    def write_ok():
        try:
            with connect(fleet, "app_rw") as conn:
                return conn.execute(write).fetchone()[0]
        except psycopg.Error:
            return None
    where = wait_until(write_ok, 3 * PERIOD + TIMEOUT + 2)
    assert where == fx.pod_addr(new), fleet.log_tail()
    assert time.monotonic() - t0 < 3 * PERIOD + TIMEOUT + 2
    assert ('msg="replica role changed" db=app_rw addr=%s:%d role=primary from=standby'
            % (fx.pod_addr(new), fx.PG_PORT)) in fleet.log_text()
