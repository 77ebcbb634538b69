"""The test fixture, tested: real PostgreSQL pods, real dnsmasq, by pid.

If these fail, no other integration test means anything."""

import os
import shutil
import signal
import subprocess
import sys
import tempfile
import textwrap
import time

import psycopg
import pytest

import fixture as fx

FIXTURE_PY = os.path.join(os.path.dirname(os.path.abspath(__file__)),
                          "fixture.py")


def _eventually(fn, timeout=10.0, interval=0.05):
    deadline = time.monotonic() + timeout
    while True:
        try:
            v = fn()
            if v:
                return v
        except Exception:
            if time.monotonic() > deadline:
                raise
        if time.monotonic() > deadline:
            raise AssertionError("condition not met in %ss" % timeout)
        time.sleep(interval)


def _who_am_i(dsn):
    with psycopg.connect(dsn, autocommit=True) as c:
        return c.execute("SELECT host(inet_server_addr()), current_user, "
                         "current_database()").fetchone()


# ---------------------------------------------------------------------------
# independent pods

def test_dns_has_one_a_record_per_pod(service):
    assert service.addrs == [fx.pod_addr(i) for i in range(3)]
    assert fx.resolve() == sorted(service.addrs)
    rcode, aaaa = fx.dns_query(fx.SVC_NAME, "AAAA")
    assert (rcode, aaaa) == (0, [])          # NOERROR, no data, like CoreDNS
    rcode, _ = fx.dns_query("nope.postgres.svc.cluster.local")
    assert rcode == 3                        # NXDOMAIN
    if shutil.which("dig"):
        out = subprocess.run(["dig", "@" + fx.DNS_ADDR, "+short",
                              fx.SVC_NAME], capture_output=True, text=True,
                             check=True).stdout.split()
        assert sorted(out) == sorted(service.addrs)


def test_each_pod_accepts_app_user(service):
    for i, addr in enumerate(service.addrs):
        assert _who_am_i(service.dsn(i)) == (addr, "app", "app")
        assert service.pod(i).running and not service.pod(i).standby
    with pytest.raises(psycopg.OperationalError, match="password"):
        psycopg.connect(service.dsn(0, password="wrong"))
    # the superuser has its password too
    assert service.psql(1, "SELECT current_user") == "postgres"


def test_set_records_changes_dns(service):
    a = service.addrs
    service.set_records([a[0]])
    assert fx.resolve() == [a[0]]
    service.set_records([a[2], a[0]])
    assert fx.resolve() == sorted([a[0], a[2]])
    service.set_records(["10.1.2.3"] + a)
    assert fx.resolve() == sorted(["10.1.2.3"] + a)
    service.set_records([])
    assert fx.dns_query()[0] == 3            # scaled to zero: NXDOMAIN


def test_records_restored_after_test(service):
    assert fx.resolve() == sorted(service.addrs)


def test_dns_server_down_and_back(service):
    service.dns_stop()
    with pytest.raises(fx.DnsError):
        fx.resolve(timeout=0.5)
    service.dns_start()
    assert fx.resolve() == sorted(service.addrs)
    service.dns_hang()
    with pytest.raises(fx.DnsError, match="no DNS answer"):
        fx.resolve(timeout=0.5)
    service.dns_unhang()
    assert _eventually(lambda: fx.resolve() == sorted(service.addrs))


def test_hang_and_unhang(service):
    service.hang(1)
    t0 = time.monotonic()
    with pytest.raises(psycopg.OperationalError):
        psycopg.connect(service.dsn(1, connect_timeout=2))
    assert time.monotonic() - t0 < 10
    # the others are not affected
    assert _who_am_i(service.dsn(0))[0] == service.addrs[0]
    service.unhang(1)
    assert _who_am_i(service.dsn(1))[0] == service.addrs[1]


def test_hung_pod_woken_by_restore_part1(service):
    service.hang(2)
    service.dns_stop()


def test_hung_pod_woken_by_restore_part2(service):
    assert not service.pod(2).hung
    assert _who_am_i(service.dsn(2, connect_timeout=3))[0] == service.addrs[2]
    assert fx.resolve() == sorted(service.addrs)


@pytest.mark.parametrize("mode", ["immediate", "fast", "kill"])
def test_stop_and_start_pod(service, mode):
    old_pid = service.pod(2).pid
    service.stop(2, mode=mode)
    assert not service.pod(2).running
    assert not fx.pid_alive(old_pid)
    with pytest.raises(psycopg.OperationalError):
        psycopg.connect(service.dsn(2, connect_timeout=2))
    service.start(2)
    assert service.pod(2).running and service.pod(2).pid != old_pid
    assert _who_am_i(service.dsn(2))[0] == service.addrs[2]


def test_stopped_pod_started_by_restore_part1(service):
    service.stop(0, mode="immediate")


def test_stopped_pod_started_by_restore_part2(service):
    assert service.pod(0).running
    assert _who_am_i(service.dsn(0))[0] == service.addrs[0]


def test_pgbench_tables_and_xact_commit(service):
    service.pgbench_init(scale=1)
    for i in range(len(service.addrs)):
        with service.connect(i) as c:
            n = c.execute("SELECT count(*) FROM pgbench_accounts").fetchone()
            assert n == (100000,)
    before = [service.xact_commit(i) for i in range(3)]
    with service.connect(1) as c:
        for _ in range(25):
            c.execute("SELECT abalance FROM pgbench_accounts WHERE aid = 1")
    # backends publish their counters up to ~1 s after a transaction
    _eventually(lambda: service.xact_commit(1) >= before[1] + 25)
    assert service.xact_commits()[service.addrs[1]] >= before[1] + 25


def test_add_and_remove_pod(service):
    i = service.add_pod()
    assert i == 3
    new = service.pod(i).addr
    assert fx.resolve() == sorted(service.addrs) and new in fx.resolve()
    assert _who_am_i(service.dsn(i)) == (new, "app", "app")
    service.remove_pod()
    assert fx.resolve() == sorted(service.addrs) and len(service.addrs) == 3


def test_added_pod_removed_by_restore_part1(service):
    service.add_pod(dns=False)
    assert len(service.addrs) == 4 and len(fx.resolve()) == 3


def test_added_pod_removed_by_restore_part2(service):
    assert len(service.addrs) == 3
    assert not fx._port_in_use(fx.pod_addr(3), fx.PG_PORT)


# ---------------------------------------------------------------------------
# streaming replication

def test_replication_roles(replicated):
    assert replicated.primary == 0
    assert replicated.standbys == [1, 2]
    assert [replicated.is_in_recovery(i) for i in range(3)] == \
        [False, True, True]
    assert fx.resolve() == sorted(replicated.addrs)
    for i, addr in enumerate(replicated.addrs):
        assert _who_am_i(replicated.dsn(i)) == (addr, "app", "app")


def test_row_written_on_primary_reaches_standbys(replicated):
    with replicated.connect(0) as c:
        c.execute("CREATE TABLE IF NOT EXISTS fixture_t (v text)")
        c.execute("INSERT INTO fixture_t VALUES ('hello')")
    for i in replicated.standbys:
        with replicated.connect(i) as c:
            _eventually(lambda: c.execute(
                "SELECT count(*) FROM fixture_t WHERE v = 'hello'"
            ).fetchone()[0] >= 1)
            with pytest.raises(psycopg.errors.ReadOnlySqlTransaction):
                c.execute("INSERT INTO fixture_t VALUES ('no')")


def test_replication_pgbench_init_and_lag(replicated):
    replicated.pgbench_init(scale=1)
    with replicated.connect(2) as c:
        assert c.execute("SELECT count(*) FROM pgbench_branches"
                         ).fetchone() == (1,)
    replicated.pause_replay(1)
    with replicated.connect(0) as c:
        c.execute("UPDATE pgbench_branches SET bbalance = 42")
    with replicated.connect(2) as c:
        _eventually(lambda: c.execute(
            "SELECT bbalance FROM pgbench_branches").fetchone() == (42,))
    with replicated.connect(1) as c:  # paused: still the old value
        assert c.execute("SELECT bbalance FROM pgbench_branches"
                         ).fetchone() != (42,)


def test_replay_resumed_by_restore(replicated):
    replicated.wait_replayed()
    with replicated.connect(1) as c:
        assert c.execute("SELECT bbalance FROM pgbench_branches"
                         ).fetchone() == (42,)


def test_replication_hang_and_stop(replicated):
    replicated.hang(1)
    with pytest.raises(psycopg.OperationalError):
        psycopg.connect(replicated.dsn(1, connect_timeout=2))
    replicated.stop(0, mode="immediate")
    with pytest.raises(psycopg.OperationalError):
        psycopg.connect(replicated.dsn(0, connect_timeout=2))
    assert replicated.is_in_recovery(2)


def test_replication_restored_after_hang_and_stop(replicated):
    assert [replicated.is_in_recovery(i) for i in range(3)] == \
        [False, True, True]
    replicated.wait_streaming(timeout=5)


def test_add_standby(replicated):
    i = replicated.add_pod()
    assert replicated.pod(i).standby and replicated.is_in_recovery(i)
    assert replicated.pod(i).addr in fx.resolve()
    replicated.wait_streaming(timeout=5)


def test_promote(replicated):
    replicated.promote(1)
    assert not replicated.is_in_recovery(1)
    with replicated.connect(1) as c:
        c.execute("CREATE TABLE promoted_t (v int)")
    assert replicated.broken


def test_promoted_set_rebuilt(replicated):
    assert not replicated.broken
    assert [replicated.is_in_recovery(i) for i in range(3)] == \
        [False, True, True]
    with replicated.connect(1) as c:
        assert c.execute("SELECT to_regclass('promoted_t')").fetchone() \
            == (None,)


def test_switch_back_to_independent(service, fleet_manager):
    assert not fleet_manager.services["replication"].started
    assert [service.is_in_recovery(i) for i in range(3)] == [False] * 3


# ---------------------------------------------------------------------------
# processes by pid

def test_purge_kills_only_recorded_live_pids():
    d = tempfile.mkdtemp(prefix="statetest-", dir="/tmp")
    try:
        st = fx.StateDir(d)
        mine = subprocess.Popen(["sleep", "60"])
        foreign = subprocess.Popen(["sleep", "60"])
        st.record_pid(mine.pid, "pgfleet", "mine")
        # an entry whose pid now belongs to another process (wrong start
        # time) must not be signalled
        with open(st.pids_file, "a") as f:
            f.write("%d %d pgfleet reused\n"
                    % (foreign.pid, fx.proc_start_time(foreign.pid) - 7))
        sub = os.path.join(d, "run-x")
        os.mkdir(sub)
        st.record_dir(sub)
        stopped = st.purge()
        assert mine.wait(timeout=10) == -signal.SIGTERM
        assert foreign.poll() is None
        assert len(stopped) == 1 and not os.path.exists(sub)
        assert st.pid_entries() == [] and st.dir_entries() == []
    finally:
        for p in (mine, foreign):
            p.kill()
            p.wait()
        shutil.rmtree(d, ignore_errors=True)


def test_cli_up_and_down(fleet_manager):
    fleet_manager.close()  # the CLI needs the addresses
    d = tempfile.mkdtemp(prefix="pgfleet-cli-", dir="/tmp")
    env = dict(os.environ, PGFLEET_FIXTURE_QUIET="1")
    try:
        up = subprocess.run([sys.executable, FIXTURE_PY, "up", "--pods", "2",
                             "--state-dir", d], env=env, capture_output=True,
                            text=True, timeout=120)
        assert up.returncode == 0, up.stderr
        assert "127.0.0.3" in up.stdout or fx.NET_PREFIX != "127.0.0"
        pids = fx.StateDir(d).pid_entries()
        assert sorted(k for _, _, k, _ in pids) == \
            ["dnsmasq", "postgres", "postgres"]
        assert all(fx.pid_alive(p, s) for p, s, _, _ in pids)
        assert fx.resolve() == [fx.pod_addr(0), fx.pod_addr(1)]
        x = subprocess.run([sys.executable, FIXTURE_PY, "xacts",
                            "--state-dir", d], env=env, capture_output=True,
                           text=True, check=True, timeout=60)
        lines = [ln.split() for ln in x.stdout.splitlines()]
        assert [ln[0] for ln in lines] == [fx.pod_addr(0), fx.pod_addr(1)]
        down = subprocess.run([sys.executable, FIXTURE_PY, "down",
                               "--state-dir", d], env=env,
                              capture_output=True, text=True, timeout=60)
        assert down.returncode == 0, down.stderr
        assert not any(fx.pid_alive(p, s) for p, s, _, _ in pids)
        for p, _, _, _ in pids:
            fx._reap(p)  # we are their subreaper
        assert not fx._port_in_use(fx.pod_addr(0), fx.PG_PORT)
        assert not fx._port_in_use(fx.DNS_ADDR, 53, fx.socket.SOCK_DGRAM)
        assert sorted(os.listdir(d)) == ["dirs", "lock", "pids"]
    finally:
        subprocess.run([sys.executable, FIXTURE_PY, "down", "--state-dir", d],
                       env=env, capture_output=True, timeout=60)
        shutil.rmtree(d, ignore_errors=True)


# ---------------------------------------------------------------------------
# the Pgfleet launcher, against a stand-in binary (the proxy is tested by the
# other modules): config file, environment, log, signals, exit codes.

FAKE = textwrap.dedent("""\
    #!/usr/bin/python3
    import configparser, os, signal, socket, sys
    args = [a for a in sys.argv[1:] if not a.startswith("-")]
    if args:
        cp = configparser.ConfigParser(delimiters=("=",))
        cp.read(args[0])
        s = cp["pgfleet"]
        addr, port = s["listen_addr"], int(s["listen_port"])
        workers = int(s.get("workers", "1"))
        print("config", args[0], "dbs", sorted(cp["databases"]), flush=True)
    else:
        addr = os.environ["PGFLEET_LISTEN_ADDR"]
        port = int(os.environ["PGFLEET_LISTEN_PORT"])
        workers = int(os.environ.get("PGFLEET_WORKERS", "1"))
    print("env", sorted(k for k in os.environ
                        if k.startswith(("PGFLEET_", "DB_")))
          , flush=True)
    if os.environ.get("FAKE_FAIL"):
        print("error: bad configuration", flush=True)
        sys.exit(1)
    if os.environ.get("FAKE_ASAN"):
        print("==1==ERROR: AddressSanitizer: heap-use-after-free", flush=True)
    signal.signal(signal.SIGTERM, lambda *a: sys.exit(0))
    signal.signal(signal.SIGHUP, lambda *a: print("reloading", flush=True))
    sock = socket.socket()
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind((addr, port))
    sock.listen()
    print("listening", addr, port, flush=True)
    for _ in range(workers):  # as pgfleet does, once per event loop
        print("msg=listening addr=%s:%d" % (addr, port), flush=True)
    while True:
        signal.pause()
    """)


@pytest.fixture
def fake_bin(tmp_path):
    p = tmp_path / "fake-pgfleet"
    p.write_text(FAKE)
    p.chmod(0o755)
    return str(p)


def test_launcher_with_config_file(fake_bin, monkeypatch):
    monkeypatch.setenv("PGFLEET_BIN", fake_bin)
    monkeypatch.setenv("DB_HOST", "leaked-from-outside")
    p = fx.Pgfleet(settings={"pool_mode": "session", "dns_servers": None},
                   databases={"app": "host=%s dbname=app" % fx.SVC_NAME,
                              "app_ro": {"host": fx.SVC_NAME, "dbname": "app",
                                         "target_session_attrs":
                                         "prefer-standby"}},
                   users={"app": "app-secret", "x": 'q"uote'})
    try:
        p.start()
        assert p.binary == fake_bin and p.port and p.http_port
        ini = open(p.ini_path).read()
        assert "[databases]\napp = host=%s dbname=app\n" % fx.SVC_NAME in ini
        assert "app_ro = host=%s dbname=app target_session_attrs=" \
            "prefer-standby\n" % fx.SVC_NAME in ini
        assert "listen_addr = 127.0.0.1\nlisten_port = %d\n" % p.port in ini
        assert "http_listen = 127.0.0.1:%d\n" % p.http_port in ini
        assert "pool_mode = session\n" in ini
        assert "dns_servers" not in ini
        assert open(p.auth_file).read() == \
            '"app" "app-secret"\n"x" "q""uote"\n'
        assert "auth_file = %s\n" % p.auth_file in ini
        p.wait_log("listening 127.0.0.1 %d" % p.port)
        assert "env []" in p.log_text()      # no PGFLEET_BIN, no DB_HOST
        p.reload()
        p.wait_log("reloading")
        assert p.dsn() == ("host=127.0.0.1 port=%d dbname=app user=app "
                           "password=app-secret connect_timeout=10" % p.port)
        assert p.stop() == 0
        assert not fx.pid_alive(p.pid)
        assert p.pid not in [e[0] for e in p.state.pid_entries()]
    finally:
        p.cleanup()
    assert not os.path.exists(p.workdir)


def test_launcher_environment_only(fake_bin, pgfleet):
    p = pgfleet(config_file=False, binary=fake_bin,
                env={"DB_HOST": fx.SVC_NAME, "DB_USER": "app",
                     "DB_PASSWORD": "app-secret",
                     "AUTH_TYPE": "scram-sha-256"})
    assert p.ini_path is None
    p.wait_log("listening 127.0.0.1 %d" % p.port)
    env_line = p.wait_log(r"env \[.*\]").group(0)
    for k in ("DB_HOST", "DB_PASSWORD", "DB_USER", "PGFLEET_DNS_SERVERS",
              "PGFLEET_HTTP_LISTEN", "PGFLEET_LISTEN_ADDR",
              "PGFLEET_LISTEN_PORT"):
        assert "'%s'" % k in env_line
    assert "PGFLEET_BIN" not in env_line and "AUTH_FILE" not in env_line


def test_launcher_reports_early_exit(fake_bin):
    p = fx.Pgfleet(binary=fake_bin, env={"FAKE_FAIL": "1"})
    with pytest.raises(fx.FixtureError, match=r"(?s)exited with status 1.*"
                                              r"bad configuration"):
        p.start()
    assert p.returncode == 1
    p.cleanup()


def test_launcher_finds_sanitizer_reports(fake_bin):
    group = fx.PgfleetGroup()
    group.start(binary=fake_bin, env={"FAKE_ASAN": "1"})
    problems = group.close()
    assert len(problems) == 1 and "AddressSanitizer" in problems[0]


def test_launcher_sigkill_after_timeout(tmp_path):
    stubborn = tmp_path / "stubborn"
    stubborn.write_text(FAKE.replace(
        "lambda *a: sys.exit(0)", "signal.SIG_IGN"))
    stubborn.chmod(0o755)
    p = fx.Pgfleet(binary=str(stubborn)).start()
    t0 = time.monotonic()
    assert p.stop(timeout=1) == -signal.SIGKILL
    assert time.monotonic() - t0 < 5
    p.cleanup()
