#!/usr/bin/python3
"""pgfleet against PgBouncer and direct PostgreSQL (issue 8's benchmark).

Run through ./tests/bench/run.sh, which installs the packages and builds
pgfleet in build-bench first; see tests/bench/README.md.

One run:
  1. the fixture's three independent pods + dnsmasq (PGFLEET_FIXTURE_NET,
     127.0.23 by default), max_connections raised for the direct runs, and
     `pgbench -i` on every pod;
  2. pgfleet (workers = 1, default_pool_size = P per replica) and PgBouncer
     (pool_size = 3 x P, resolv_conf -> the fixture's dnsmasq) against the
     same headless name, both alive for the whole run;
  3. rounds of `pgbench -S` at each client count and protocol, the targets
     alternated inside each round (A B C, then B C A, ...);
  4. fresh pooler processes with 1,000 and 10,000 idle logged-in clients:
     RSS from /proc/PID/status;
  5. each pooler under `valgrind --tool=callgrind`: instructions per
     transaction, as the difference of two fixed-size pgbench runs (so the
     logins cancel out), and under `strace -c`: syscalls per transaction.

Every process started here is stopped by its pid at the end, also on an error
or a signal: the fixture's state directory records them, so even a killed
run is cleaned up by the next one.
"""

import argparse
import base64
import hashlib
import hmac
import json
import math
import os
import re
import resource
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(os.path.dirname(HERE))
CLK_TCK = os.sysconf("SC_CLK_TCK")


def parse_args(argv=None):
    ap = argparse.ArgumentParser(
        prog="tests/bench/run.sh",
        description="pgfleet vs PgBouncer vs direct PostgreSQL: pgbench -S "
                    "throughput, latency and CPU; RSS with idle clients; "
                    "callgrind instructions per transaction.")
    ap.add_argument("--quick", action="store_true",
                    help="short runs to check the set-up (1 round of 3 s, "
                         "RSS at 200/1000 clients, small callgrind runs)")
    ap.add_argument("--rounds", type=int, help="rounds per cell [3; quick 1]")
    ap.add_argument("--duration", type=float,
                    help="seconds per pgbench run [10; quick 3]")
    ap.add_argument("--scenario", default="independent",
                    choices=("independent", "replicated"),
                    help="independent: three independent pods (every "
                         "phase below); replicated: a primary and two "
                         "streaming standbys, pgfleet target_session_attrs "
                         "= auto against = any, pgpool-II and PgBouncer on "
                         "the primary (see README) [independent]")
    ap.add_argument("--clients",
                    help="pgbench client counts [10,100,1000; replicated "
                         "10,50]")
    ap.add_argument("--modes",
                    help="pgbench -M protocols [simple,extended; replicated "
                         "simple,prepared]")
    ap.add_argument("--targets",
                    help="what to run pgbench against: pgfleet, pgbouncer "
                         "(its defaults: idle servers reused LIFO), "
                         "pgbouncer-rr (server_round_robin = 1, what its "
                         "documentation advises when the address is a "
                         "round-robin DNS name), direct "
                         "[pgfleet,pgbouncer,pgbouncer-rr,direct]; "
                         "replicated: pgfleet-auto, pgfleet-any, pgfleet-rw "
                         "(target_session_attrs = auto / any / read-write), "
                         "pgpool, pgbouncer-primary "
                         "[pgfleet-auto,pgfleet-any,pgpool,pgbouncer-primary]")
    ap.add_argument("--raw-clients", type=int, default=10,
                    help="replicated: clients of the read-after-write runs "
                         "(0: none) [10]")
    ap.add_argument("--jobs", type=int, default=2,
                    help="pgbench threads (-j) through a pooler [2]")
    ap.add_argument("--pool-size", type=int, default=20,
                    help="pgfleet default_pool_size per replica; PgBouncer "
                         "gets 3x this [20, pgfleet's default]")
    ap.add_argument("--rss-clients", help="idle client counts for the RSS "
                    "table [1000,10000; quick 200,1000]")
    ap.add_argument("--callgrind-xacts", type=int,
                    help="transactions per client of the long callgrind run "
                         "(the short one is a sixth of it) [1500; quick 300]")
    ap.add_argument("--skip", default="",
                    help="comma list of phases to skip: throughput,rate,"
                         "rss,callgrind,strace")
    ap.add_argument("--rate", type=int, default=5000,
                    help="transactions per second of the fixed-rate runs "
                         "(pgbench -R) [5000]")
    ap.add_argument("--net", default=os.environ.get("PGFLEET_FIXTURE_NET",
                                                    "127.0.23"),
                    help="fixture network (PGFLEET_FIXTURE_NET) [127.0.23]")
    ap.add_argument("--pgfleet", default=os.path.join(REPO, "build-bench",
                                                      "pgfleet"),
                    help="pgfleet binary [build-bench/pgfleet]")
    ap.add_argument("--pgfleet-set", action="append", default=[],
                    metavar="KEY=VALUE", help="extra pgfleet setting "
                    "(repeatable), e.g. load_balance=round_robin")
    ap.add_argument("--pgbouncer-set", action="append", default=[],
                    metavar="KEY=VALUE", help="extra PgBouncer setting "
                    "(repeatable), e.g. server_round_robin=1")
    ap.add_argument("--out", help="also write the tables (markdown) here")
    ap.add_argument("--workdir", help="keep logs, pgbench logs, callgrind "
                    "files here [a new /tmp/pgfleet-bench-* directory]")
    a = ap.parse_args(argv)
    q = a.quick
    a.rounds = a.rounds or (1 if q else 3)
    a.duration = a.duration or (3.0 if q else 10.0)
    rep = a.scenario == "replicated"
    a.clients = [int(x) for x in (a.clients or (
        "10,50" if rep else "10,100,1000")).split(",") if x]
    a.modes = [x for x in (a.modes or (
        "simple,prepared" if rep else "simple,extended")).split(",") if x]
    a.targets = [x for x in (a.targets or (
        "pgfleet-auto,pgfleet-any,pgpool,pgbouncer-primary" if rep else
        "pgfleet,pgbouncer,pgbouncer-rr,direct")).split(",") if x]
    a.rss_clients = [int(x) for x in (a.rss_clients or (
        "200,1000" if q else "1000,10000")).split(",")]
    a.callgrind_xacts = a.callgrind_xacts or (300 if q else 1500)
    a.skip = set(x for x in a.skip.split(",") if x)
    return a


ARGS = parse_args()
# The fixture reads its network at import time.
os.environ["PGFLEET_FIXTURE_NET"] = ARGS.net
os.environ.setdefault("PGFLEET_FIXTURE_QUIET", "1")
sys.path.insert(0, os.path.join(REPO, "tests", "integration"))
import fixture as fx  # noqa: E402

LISTEN = ARGS.net + ".1"          # both poolers listen here
PGBENCH = os.path.join(fx.PG_BIN, "pgbench")
TARGET_NAMES = {"pgfleet": "pgfleet", "pgbouncer": "PgBouncer",
                "pgbouncer-rr": "PgBouncer rr",
                "direct": "direct",
                # the replicated scenario
                "pgfleet-auto": "pgfleet auto", "pgfleet-any": "pgfleet any",
                "pgfleet-rw": "pgfleet read-write", "pgpool": "pgpool-II",
                "pgbouncer-primary": "PgBouncer primary"}


LOG_FILE = None


def log(msg):
    line = "[bench %s] %s\n" % (time.strftime("%H:%M:%S"), msg)
    sys.stderr.write(line)
    sys.stderr.flush()
    if LOG_FILE:
        with open(LOG_FILE, "a") as f:
            f.write(line)


# --------------------------------------------------------------------------
# Processes: everything we start, stopped by pid.

_CHILDREN = []   # Popen objects of short-lived helpers (pgbench, clients)


def _stop_popen(p, sig=signal.SIGTERM, timeout=10):
    if p.poll() is None:
        try:
            os.kill(p.pid, sig)
            p.wait(timeout)
        except ProcessLookupError:
            pass
        except subprocess.TimeoutExpired:
            os.kill(p.pid, signal.SIGKILL)
            p.wait()
    if p in _CHILDREN:
        _CHILDREN.remove(p)


def _on_signal(signum, frame):
    raise KeyboardInterrupt("signal %d" % signum)


def proc_stat(pid):
    """(comm, the fields after it) of /proc/PID/stat: fields[0] is the
    state, [11] and [12] utime and stime, [19] the start time."""
    with open("/proc/%d/stat" % pid) as f:
        data = f.read()
    return (data[data.index("(") + 1:data.rindex(")")],
            data[data.rindex(")") + 2:].split())


def proc_cpu_ticks(pid, fields=None):
    """utime + stime of pid (or of its proc_stat fields), in clock ticks."""
    st = fields if fields is not None else proc_stat(pid)[1]
    return int(st[11]) + int(st[12])


def machine_busy_ticks():
    """Every CPU's non-idle time (user, nice, system, irq, softirq, steal:
    all processes and the kernel's packet work), in clock ticks."""
    with open("/proc/stat") as f:
        v = [int(x) for x in f.readline().split()[1:]]
    return v[0] + v[1] + v[2] + v[5] + v[6] + v[7]


def proc_rss_kib(pid):
    with open("/proc/%d/status" % pid) as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    return 0


class BenchService(fx.HeadlessService):
    """The fixture's service with room for the direct runs' backends."""

    max_connections = 1200

    app_secret = None

    def share_app_secret(self):
        """One SCRAM secret (same salt) for `app` on every pod, so that
        PgBouncer's SCRAM pass-through works against any of them."""
        self.app_secret = scram_secret(fx.APP_PASSWORD)
        # A standby is read-only: the primary's role replicates to it.
        for pod in (self.pods[:1] if self.replication else self.pods):
            self.psql(pod.index, "ALTER ROLE %s PASSWORD %s" % (
                fx.APP_USER, fx._sql_literal(self.app_secret)),
                dbname="postgres")

    def _conf_lines(self, pod):
        # Later lines win in postgresql.conf.
        return super()._conf_lines(pod) + [
            "max_connections = %d" % self.max_connections,
            "log_connections = off", "log_disconnections = off"]


# --------------------------------------------------------------------------
# The poolers.

class Fleet:
    name = "pgfleet"

    def __init__(self, workdir, valgrind=None, name="pgfleet",
                 target_session_attrs=None):
        self.name = name
        databases = None
        if target_session_attrs:
            databases = {fx.APP_DB: "host=%s port=%d dbname=%s "
                         "target_session_attrs=%s" % (
                             fx.SVC_NAME, fx.PG_PORT, fx.APP_DB,
                             target_session_attrs)}
        settings = {"listen_addr": LISTEN, "workers": 1,
                    "default_pool_size": ARGS.pool_size,
                    "max_client_conn": 12000, "pool_mode": "transaction",
                    "log_connections": 0, "log_disconnections": 0}
        settings.update(kv.split("=", 1) for kv in ARGS.pgfleet_set)
        binary, args = ARGS.pgfleet, []
        if valgrind:
            binary, args = "/usr/bin/valgrind", valgrind + [ARGS.pgfleet]
        self.p = fx.Pgfleet(settings=settings, databases=databases,
                            binary=binary, args=args,
                            state_dir=fx.DEFAULT_STATE_DIR)
        self.p.host = LISTEN
        self.valgrind = bool(valgrind)

    def start(self):
        self.p.start(timeout=120 if self.valgrind else 15)
        deadline = time.monotonic() + (120 if self.valgrind else 30)
        while True:   # the app database has a replica checked and up
            try:
                if self.p.http_get("/readyz?database=" + fx.APP_DB, timeout=5)[0] == 200:
                    break
            except OSError:
                pass
            if time.monotonic() > deadline:
                raise fx.FixtureError("pgfleet not ready:\n" + self.p.log_tail())
            time.sleep(0.2)
        return self

    @property
    def pid(self):
        return self.p.pid

    @property
    def port(self):
        return self.p.port

    def alive(self):
        return self.p.running

    def stop(self):
        rc = self.p.stop(timeout=60 if self.valgrind else 15)
        if rc not in (0, None):
            log("pgfleet exited with %s; log tail:\n%s" % (rc, self.p.log_tail()))
        return rc

    def log_tail(self):
        return self.p.log_tail()


def scram_secret(password, iterations=4096):
    """PostgreSQL's SCRAM-SHA-256 verifier for `password`."""
    salt = os.urandom(16)
    salted = hashlib.pbkdf2_hmac("sha256", password.encode(), salt,
                                 iterations)
    client_key = hmac.new(salted, b"Client Key", hashlib.sha256).digest()
    stored = hashlib.sha256(client_key).digest()
    server = hmac.new(salted, b"Server Key", hashlib.sha256).digest()
    b64 = lambda b: base64.b64encode(b).decode()  # noqa: E731
    return "SCRAM-SHA-256$%d:%s$%s:%s" % (iterations, b64(salt), b64(stored),
                                          b64(server))


class Daemon:
    """A pooler that refuses to run as root (PgBouncer, pgpool-II): run as
    the postgres user from its own directory in the fixture's state
    directory, started by exec (Popen(user=...)), so the pid we record is
    its own.  Subclasses set `kind` and `logs` (its log files)."""

    kind = None
    logs = ("stdout.log",)
    valgrind = None

    def _make_dir(self):
        self.state = fx.StateDir(fx.DEFAULT_STATE_DIR)
        self.dir = tempfile.mkdtemp(prefix=self.kind + "-",
                                    dir=self.state.path)
        self.state.record_dir(self.dir)
        os.chmod(self.dir, 0o755)
        fx._chown_postgres(self.dir)
        self.port = fx.free_port(LISTEN)
        self.proc = None
        self.start_time = None

    def _write_files(self, files):
        for name, text in files.items():
            path = os.path.join(self.dir, name)
            with open(path, "w") as f:
                f.write(text)
            os.chmod(path, 0o600)
            fx._chown_postgres(path)

    def _spawn(self, argv, timeout):
        out = open(os.path.join(self.dir, "stdout.log"), "ab")
        self.proc = subprocess.Popen(argv, cwd=self.dir, user="postgres",
                                     group="postgres", extra_groups=[],
                                     stdin=subprocess.DEVNULL, stdout=out,
                                     stderr=subprocess.STDOUT,
                                     start_new_session=True)
        out.close()
        self.start_time = self.state.record_pid(self.proc.pid, self.kind,
                                                str(self.port))
        if not fx.wait_port(LISTEN, self.port, timeout, self.proc):
            self.stop()
            raise fx.FixtureError("%s did not start:\n%s"
                                  % (self.kind, self.log_tail()))
        return self

    @property
    def pid(self):
        return self.proc.pid if self.proc else None

    def alive(self):
        return self.proc is not None and self.proc.poll() is None

    def _terminate(self, sig, timeout):
        if self.proc is None:
            return None
        if self.proc.poll() is None:
            os.kill(self.proc.pid, sig)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.state.forget_pid(self.proc.pid)
        return self.proc.returncode

    def stop(self):
        # SIGTERM: PgBouncer's immediate shutdown
        return self._terminate(signal.SIGTERM, 60 if self.valgrind else 15)

    def cleanup(self):
        self.stop()
        shutil.rmtree(self.dir, ignore_errors=True)
        self.state.forget_dir(self.dir)

    def log_tail(self, n=30):
        text = ""
        for name in self.logs:
            try:
                with open(os.path.join(self.dir, name), errors="replace") as f:
                    text += f.read()
            except OSError:
                pass
        return "\n".join(text.splitlines()[-n:])


class Bouncer(Daemon):
    """PgBouncer from Debian, as the postgres user (it refuses root).
    `settings`: more pgbouncer.ini lines (KEY=VALUE), after --pgbouncer-set;
    db_host: the address its database entry names [the headless name]."""

    name = kind = "pgbouncer"
    logs = ("pgbouncer.log", "stdout.log")

    def __init__(self, workdir, valgrind=None, name="pgbouncer", settings=(),
                 db_host=fx.SVC_NAME):
        self.name = name
        self._make_dir()
        self.valgrind = valgrind
        files = {
            "resolv.conf": "nameserver %s\n" % fx.DNS_ADDR,
            # The pods' own SCRAM secret, not the password: with a
            # plaintext entry PgBouncer runs PBKDF2 (4096 rounds) at every
            # client login, and 1,000 pgbench logins take 10+ s.  With the
            # secret it verifies clients cheaply and logs in to the servers
            # with the client's SCRAM keys (pass-through), which is how
            # PgBouncer is deployed.  pgfleet gets the plaintext password
            # (it needs it for the servers) and derives the secret once.
            "userlist.txt": '"%s" "%s"\n' % (fx.APP_USER, svc.app_secret),
            "pgbouncer.ini": "\n".join([
                "[databases]",
                "%s = host=%s port=%d dbname=%s" % (fx.APP_DB, db_host,
                                                    fx.PG_PORT, fx.APP_DB),
                "[pgbouncer]",
                "listen_addr = %s" % LISTEN,
                "listen_port = %d" % self.port,
                "unix_socket_dir =",
                "auth_type = scram-sha-256",
                "auth_file = %s/userlist.txt" % self.dir,
                "pool_mode = transaction",
                # pgfleet's pool is per replica: the same total server
                # connections over the three pods.
                "default_pool_size = %d" % (3 * ARGS.pool_size),
                "max_client_conn = 12000",
                "resolv_conf = %s/resolv.conf" % self.dir,
                "dns_max_ttl = 15",
                "logfile = %s/pgbouncer.log" % self.dir,
                "log_connections = 0",
                "log_disconnections = 0",
                "server_tls_sslmode = disable"] + [
                    "%s = %s" % tuple(kv.split("=", 1))
                    for kv in list(ARGS.pgbouncer_set) + list(settings)]
                + [""])}
        self._write_files(files)
        self.log_path = os.path.join(self.dir, "pgbouncer.log")

    def start(self):
        argv = ["/usr/sbin/pgbouncer", os.path.join(self.dir, "pgbouncer.ini")]
        if self.valgrind:
            argv = ["/usr/bin/valgrind"] + self.valgrind + argv
        return self._spawn(argv, 120 if self.valgrind else 15)


# --------------------------------------------------------------------------
# pgbench

def pgbench_env():
    return fx._clean_env({"PGPASSWORD": fx.APP_PASSWORD,
                          "PGSSLMODE": "disable", "PGGSSENCMODE": "disable",
                          "PGCONNECT_TIMEOUT": "60"})


def pgbench_argv(host, port, clients, jobs, mode, extra):
    # -S: the built-in read-only script, unless extra names a script (-f).
    builtin = [] if "-f" in extra else ["-S"]
    return [PGBENCH, "-n"] + builtin + ["-M", mode, "-c", str(clients),
            "-j", str(jobs), "-h", host, "-p", str(port), "-U", fx.APP_USER
            ] + extra + [fx.APP_DB]


# The processes whose CPU is summed by name: the pods' postmasters and
# backends, and the load generator.
GROUPS = ("postgres", "pgbench")


class CpuSampler(threading.Thread):
    """(wall time, utime+stime ticks of one pid, the machine's busy ticks)
    every 0.1 s; pid None: the machine only.  Every second also the summed
    ticks of every process named in GROUPS (a /proc scan, so less often),
    and those of the `postgres` processes split by pod (their titles start
    with the pod's cluster_name, "postgres: pod1: ...")."""

    def __init__(self, pid, ticks=None):
        super().__init__(daemon=True)
        self.pid, self.samples, self.halt = pid, [], threading.Event()
        # ticks(): the pooler's CPU ticks when it is more than one process
        # (pgpool-II's children); default utime + stime of pid.
        self.ticks = ticks
        self.group_samples, self.pod_samples, self._pods = [], [], {}

    def _pod(self, pid, started):
        """The pod a `postgres` process serves, from its title. Remembered
        by (pid, start time): this machine's pid_max is 32768 and a run
        forks tens of thousands of backends, so a pid alone comes back as
        another process. A backend not yet retitled is looked at again."""
        key = (pid, started)
        pod = self._pods.get(key)
        if pod is None:
            with open("/proc/%d/cmdline" % pid, "rb") as f:
                m = re.match(rb"postgres: (pod\d+): ", f.read())
            if m:
                pod = self._pods[key] = m.group(1).decode()
        return pod

    def _group_ticks(self):
        sums, pods = dict.fromkeys(GROUPS, 0), {}
        for name in os.listdir("/proc"):
            if not name.isdigit():
                continue
            pid = int(name)
            try:
                comm, st = proc_stat(pid)
                if comm not in sums:
                    continue
                ticks = proc_cpu_ticks(pid, st)
                sums[comm] += ticks
                if comm == "postgres":
                    pod = self._pod(pid, int(st[19]))
                    if pod:
                        pods[pod] = pods.get(pod, 0) + ticks
            except (OSError, ValueError, IndexError):
                continue    # gone between the listing and the read
        return sums, pods

    def run(self):
        n = 0
        while not self.halt.is_set():
            try:
                own = (self.ticks() if self.ticks else
                       proc_cpu_ticks(self.pid) if self.pid else 0)
                self.samples.append((time.time(), own, machine_busy_ticks()))
            except OSError:
                return
            if n % 10 == 0:
                g, pods = self._group_ticks()
                now = time.time()
                self.group_samples.append((now,) + tuple(g[k] for k in GROUPS))
                self.pod_samples.append((now, pods))
            n += 1
            self.halt.wait(0.1)

    def ticks_at(self, t, col=1):
        s = self.samples
        if not s:
            return None
        if t <= s[0][0]:
            return s[0][col]
        for a, b in zip(s, s[1:]):
            if a[0] <= t <= b[0]:
                return a[col] + (b[col] - a[col]) * (t - a[0]) / max(b[0] - a[0], 1e-9)
        return s[-1][col]


def _percentile(sorted_vals, p):
    if not sorted_vals:
        return float("nan")
    k = min(len(sorted_vals) - 1, max(0, int(round(p / 100.0 *
                                                    (len(sorted_vals) - 1)))))
    return sorted_vals[k]


# Seconds each (target, clients) took to log its clients in, as pgbench
# reported it ("initial connection time"), learnt run by run.
LOGIN_SECONDS = {}


def run_seconds(target, duration, clients):
    """pgbench's -T counts from before its logins, and 1,000 SCRAM logins can
    take many seconds (PBKDF2 in libpq, and in PgBouncer for a plaintext
    auth_file; a fork per backend for direct): add the time they took last
    time (a generous guess the first time), so every run has about `duration`
    seconds of steady state, which is all that is measured."""
    login = LOGIN_SECONDS.get((target, clients), 0.012 * clients)
    return int(round(duration + 1.3 * login + (1 if clients >= 100 else 0)))


def run_load(target, pooler, clients, mode, duration, rundir, extra=(),
             probe=None):
    """One measured pgbench -S run (extra: more pgbench options); returns a
    dict of results.  A run that ended before its logins did (no
    transaction) is run again, longer.  probe: an object whose
    prepare(secs) is called before pgbench starts (secs: its -T),
    start(target, secs) once it runs, stop() when it ended, and
    result(ends) adds to the results (ends: the end times of the run's
    transactions)."""
    for attempt in range(3):
        res = _run_load(target, pooler, clients, mode, duration, rundir,
                        list(extra), probe)
        if res["errors"] != ["login"] * len(res["errors"]) or not res["errors"]:
            return res
        LOGIN_SECONDS[(target, clients)] = 2 * LOGIN_SECONDS.get(
            (target, clients), 0.012 * clients)
        log("%s c=%d: pgbench was still logging in when -T ran out; again "
            "with -T %d" % (target, clients,
                            run_seconds(target, duration, clients)))
    return res


def _run_load(target, pooler, clients, mode, duration, rundir, extra,
              probe=None):
    os.makedirs(rundir, exist_ok=True)
    if target == "direct":
        # One pgbench per pod, the clients split over them: the same three
        # servers the poolers spread over, each backend a client.
        pods = svc.addrs
        split = [clients // len(pods) + (1 if i < clients % len(pods) else 0)
                 for i in range(len(pods))]
        runs = [(addr, fx.PG_PORT, n, 1) for addr, n in zip(pods, split) if n]
    else:
        runs = [(LISTEN, pooler.port, clients, min(ARGS.jobs, clients))]
    sampler = CpuSampler(pooler.pid if pooler else None,
                         getattr(pooler, "cpu_ticks", None))
    procs = []
    if probe:
        probe.prepare(run_seconds(target, duration, clients))
    if sampler:
        sampler.start()
    try:
        for i, (host, port, n, jobs) in enumerate(runs):
            argv = pgbench_argv(host, port, n, jobs, mode,
                                ["-T", str(run_seconds(target, duration,
                                                       clients)),
                                 "--log",
                                 "--log-prefix=%s/x%d" % (rundir, i)] + extra)
            out = open(os.path.join(rundir, "pgbench%d.out" % i), "w")
            p = subprocess.Popen(argv, env=pgbench_env(), cwd=rundir,
                                 stdout=out, stderr=subprocess.STDOUT,
                                 text=True)
            out.close()
            _CHILDREN.append(p)
            procs.append(p)
        if probe:
            probe.start(target, run_seconds(target, duration, clients))
        for p in procs:
            try:
                p.wait(run_seconds(target, duration, clients) + 240)
            except subprocess.TimeoutExpired:
                log("pgbench pid %d overran; stopping it" % p.pid)
            _stop_popen(p)
    finally:
        for p in procs:
            _stop_popen(p)
        if probe:
            probe.stop()
        if sampler:
            sampler.halt.set()
            sampler.join()
    tps, errors, logins = 0.0, [], 0.0
    for i, p in enumerate(procs):
        with open(os.path.join(rundir, "pgbench%d.out" % i)) as f:
            text = f.read()
        m = re.search(r"^tps = ([0-9.]+) \(without initial", text, re.M)
        c = re.search(r"^initial connection time = ([0-9.]+) ms", text, re.M)
        if c:
            logins = max(logins, float(c.group(1)) / 1000.0)
        if m:
            tps += float(m.group(1))
        elif re.search(r"actually processed: 0$", text, re.M) and \
                p.returncode == 0:
            errors.append("login")
        else:
            errors.append("no tps")
        failed = re.search(r"number of failed transactions: (\d+)", text)
        if p.returncode != 0 or (failed and int(failed.group(1))):
            errors.append("pgbench exit %s: %s" % (
                p.returncode, " | ".join(l for l in text.splitlines()
                                         if "error" in l.lower()
                                         or "abort" in l.lower())[:300]))
    if logins and not errors:
        LOGIN_SECONDS[(target, clients)] = max(
            logins, LOGIN_SECONDS.get((target, clients), 0) * 0.7)
    lat, ends = [], []
    for name in os.listdir(rundir):
        if not name.startswith("x"):
            continue
        with open(os.path.join(rundir, name)) as f:
            for line in f:
                fl = line.split()
                if len(fl) >= 6:
                    lat.append(int(fl[2]))
                    ends.append(int(fl[4]) + int(fl[5]) / 1e6)
    if probe and not errors:
        res_probe = probe.result(ends)
    else:
        res_probe = {}
    # Keep the disk tidy: the logs are big and parsed now.
    for name in os.listdir(rundir):
        if name.startswith("x"):
            os.unlink(os.path.join(rundir, name))
    lat.sort()
    res = {"target": target, "clients": clients, "mode": mode,
           "tps": tps if not errors else None, "xacts": len(lat),
           "p50_ms": _percentile(lat, 50) / 1000.0 if lat else None,
           "p99_ms": _percentile(lat, 99) / 1000.0 if lat else None,
           "errors": errors, "cpu_per_100k": None}
    res.update(res_probe)
    if sampler and ends:
        # Steady state only: from after every client is logged in (pgbench
        # starts its transactions once all connections are up) to before
        # they disconnect.
        t0, t1 = min(ends) + 0.5, max(ends) - 0.3
        n = sum(1 for t in ends if t0 <= t <= t1)
        c0, c1 = sampler.ticks_at(t0), sampler.ticks_at(t1)
        m0, m1 = sampler.ticks_at(t0, 2), sampler.ticks_at(t1, 2)
        if n > 0 and c0 is not None and t1 > t0:
            if pooler:
                res["cpu_per_100k"] = (c1 - c0) / CLK_TCK / n * 1e5
                res["cpu_util"] = (c1 - c0) / CLK_TCK / (t1 - t0)
                if m1 > m0:
                    res["pooler_share"] = (c1 - c0) / float(m1 - m0)
            # The whole machine: pgbench, the pods, the pooler, the kernel.
            res["machine_per_100k"] = (m1 - m0) / CLK_TCK / n * 1e5
            res["machine_busy"] = (m1 - m0) / CLK_TCK / (t1 - t0) / (os.cpu_count() or 1)
            # The groups over the whole seconds sampled inside the window
            # (a process that ends takes its ticks with it, so never past
            # the window's end).
            gs = [x for x in sampler.group_samples if t0 <= x[0] <= t1]
            ng = sum(1 for t in ends if gs and gs[0][0] <= t <= gs[-1][0])
            if len(gs) >= 2 and ng > 0:
                for i, g in enumerate(GROUPS):
                    res["%s_per_100k" % g] = (
                        gs[-1][1 + i] - gs[0][1 + i]) / CLK_TCK / ng * 1e5
            # How the work spread over the pods: each pod's share of the
            # pods' CPU over the same seconds (a backend that starts or
            # ends inside the window adds or takes away all its CPU time;
            # the poolers' and the direct runs' backends outlive it).
            ps = [x for x in sampler.pod_samples if t0 <= x[0] <= t1]
            if len(ps) >= 2:
                first, last = ps[0][1], ps[-1][1]
                used = {k: v - first.get(k, 0) for k, v in last.items()}
                total = sum(used.values())
                if total > 0:
                    res["pod_share"] = {k: v / float(total)
                                        for k, v in sorted(used.items())}
    return res


def pgbench_fixed(host, port, clients, xacts, mode, cwd):
    """pgbench -t: returns (exit code, output)."""
    argv = pgbench_argv(host, port, clients, 1, mode, ["-t", str(xacts)])
    p = subprocess.Popen(argv, env=pgbench_env(), cwd=cwd, text=True,
                         stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    _CHILDREN.append(p)
    try:
        out, _ = p.communicate(timeout=900)
    finally:
        _stop_popen(p)
    return p.returncode, out


def require_ok(rc, out, what):
    if rc != 0 or "number of failed transactions: 0" not in out:
        raise RuntimeError("%s failed (exit %s):\n%s" % (what, rc, out[-2000:]))


# --------------------------------------------------------------------------
# Phases

def alternate(targets, poolers, workdir, tag, extra=()):
    """Every (clients, mode) cell for each target, rounds of A B C then
    B C A ..., so the noise of a shared machine hits all targets alike."""
    results = []
    cells = [(c, m) for c in ARGS.clients for m in ARGS.modes]
    for r in range(ARGS.rounds):
        order = targets[r % len(targets):] + targets[:r % len(targets)]
        for clients, mode in cells:
            for t in order:
                pooler = poolers.get(t)
                if pooler is not None and not pooler.alive():
                    raise RuntimeError("%s died; log tail:\n%s"
                                       % (t, pooler.log_tail()))
                rundir = os.path.join(workdir, "runs", "%s%d-%s-%d-%s"
                                      % (tag, r, t, clients, mode))
                res = run_load(t, pooler, clients, mode, ARGS.duration,
                               rundir, extra)
                res["round"] = r
                results.append(res)
                log("%s round %d %-9s c=%-4d %-8s tps=%8s p50=%sms "
                    "p99=%sms cpu/100k=%s%s" % (
                        tag, r, t, clients, mode, _f(res["tps"], "%.0f"),
                        _f(res["p50_ms"], "%.2f"), _f(res["p99_ms"], "%.2f"),
                        "%.2fs" % res["cpu_per_100k"]
                        if res["cpu_per_100k"] is not None else "-",
                        "  ERRORS: %s" % res["errors"] if res["errors"] else ""))
    return results


def phase_throughput(poolers, workdir):
    """pgbench flat out through each pooler and direct."""
    return alternate(list(ARGS.targets), poolers, workdir, "max")


def phase_rate(poolers, workdir):
    """The two poolers at the same fixed rate (pgbench -R).  At a rate the
    machine carries with room to spare both poolers see the same traffic,
    so their CPU per transaction and the latency they add compare like for
    like; flat out, each pooler's cost also moves with how busy the machine
    happens to be."""
    return alternate([t for t in ("pgfleet", "pgbouncer") if t in poolers],
                     poolers, workdir, "rate", ["-R", str(ARGS.rate)])


def server_spread():
    """Server connections per pod by application/client address (a check
    that both poolers spread over the three pods)."""
    out = {}
    for pod in svc.pods:
        rows = svc.psql(pod.index, "SELECT count(*) FROM pg_stat_activity "
                        "WHERE datname = 'app' AND backend_type = "
                        "'client backend'", dbname="postgres")
        out[pod.addr] = int(rows or 0)
    return out


def phase_rss(workdir):
    rows = []
    for cls in (Fleet, Bouncer):
        pooler = cls(workdir)
        try:
            pooler.start()
            rc, out = pgbench_fixed(LISTEN, pooler.port, 1, 10, "simple",
                                    workdir)
            require_ok(rc, out, "%s warm-up" % pooler.name)
            time.sleep(0.5)
            row = {"pooler": pooler.name, "rss0": proc_rss_kib(pooler.pid)}
            argv = [sys.executable, os.path.join(HERE, "idle_clients.py"),
                    "--host", LISTEN, "--port", str(pooler.port),
                    "--counts", ",".join(map(str, ARGS.rss_clients)),
                    "--src-net", ARGS.net]
            cl = subprocess.Popen(argv, stdin=subprocess.PIPE,
                                  stdout=subprocess.PIPE, text=True,
                                  env=fx._clean_env())
            _CHILDREN.append(cl)
            t0 = time.monotonic()
            try:
                for n in ARGS.rss_clients:
                    line = cl.stdout.readline()
                    if not line.startswith("READY"):
                        raise RuntimeError("idle clients: %r" % line)
                    time.sleep(1.0)   # let the pooler settle
                    ok = int(re.search(r"ok=(\d+)", line).group(1))
                    failed = int(re.search(r"failed=(\d+)", line).group(1))
                    row[n] = {"rss": proc_rss_kib(pooler.pid), "ok": ok,
                              "failed": failed,
                              "err": line.split(None, 4)[4].strip()
                              if failed else ""}
                    log("%s: %d idle clients (failed %d) in %.0fs, RSS %d KiB"
                        % (pooler.name, ok, failed, time.monotonic() - t0,
                           row[n]["rss"]))
                    if not pooler.alive():
                        raise RuntimeError("%s died" % pooler.name)
                    cl.stdin.write("next\n")
                    cl.stdin.flush()
                cl.wait(60)
            finally:
                _stop_popen(cl)
            rows.append(row)
        finally:
            pooler.stop()
            if isinstance(pooler, Bouncer):
                pooler.cleanup()
            else:
                pooler.p.cleanup()
    return rows


def _callgrind_total(path):
    with open(path) as f:
        for line in f:
            if line.startswith(("summary:", "totals:")):
                return int(line.split()[1])
    raise RuntimeError("no totals in %s" % path)


def _newest_dump(prefix, before):
    d = os.path.dirname(prefix)
    files = [os.path.join(d, n) for n in os.listdir(d)
             if os.path.join(d, n).startswith(prefix)]
    new = [f for f in files if f not in before]
    if not new:
        raise RuntimeError("callgrind wrote no dump under %s*" % prefix)
    return max(new, key=os.path.getmtime)


CALLGRIND_PAIRS = 2


def callgrind_control(pooler, flag):
    """callgrind_control -z|-d PID, as the pooler's own user: vgdb talks to
    valgrind through FIFOs in /tmp, which the kernel's protected_fifos does
    not let even root open when another user owns them.  On a timeout the
    whole process group (callgrind_control and its vgdb) is stopped."""
    kw = {"user": "postgres", "group": "postgres", "extra_groups": []} \
        if isinstance(pooler, Bouncer) else {}
    p = subprocess.Popen(["callgrind_control", flag, str(pooler.pid)],
                         stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                         text=True, start_new_session=True, **kw)
    _CHILDREN.append(p)
    try:
        _, err = p.communicate(timeout=60)
    except subprocess.TimeoutExpired:
        os.killpg(p.pid, signal.SIGKILL)
        p.wait()
        raise RuntimeError("callgrind_control %s %d hung" % (flag, pooler.pid))
    finally:
        if p in _CHILDREN:
            _CHILDREN.remove(p)
    if p.returncode != 0:
        raise RuntimeError("callgrind_control %s failed: %s" % (flag, err))


def phase_callgrind(workdir, makers=None):
    """Ir per transaction: (Ir(long run) - Ir(short run)) / extra xacts,
    each run its own callgrind dump (callgrind_control -z / -d), 10 clients
    (so logins and pool fill-up cancel out).  makers: (name, make(workdir,
    valgrind argv)) of each pooler [pgfleet, then PgBouncer]."""
    if makers is None:
        makers = [("pgfleet", Fleet), ("pgbouncer", Bouncer)]
    cgdir = os.path.join(workdir, "callgrind")
    os.makedirs(cgdir, exist_ok=True)
    os.chmod(cgdir, 0o777)   # PgBouncer runs as postgres
    clients = 10
    long_x = ARGS.callgrind_xacts
    short_x = max(1, long_x // 6)
    rows = []
    for name, make in makers:
        prefix = os.path.join(cgdir, "%s.out" % name)
        vg = ["--tool=callgrind", "--callgrind-out-file=%s.%%p" % prefix,
              "--dump-instr=no", "--collect-jumps=no",
              # every dump self-contained, for callgrind_annotate
              "--compress-strings=no", "--compress-pos=no"]
        pooler = make(workdir, vg)
        try:
            pooler.start()
            for mode in ARGS.modes:
                # Warm-up long enough for the pool to grow to `clients`
                # server connections: a server login (SCRAM) inside a
                # measured run would cost millions of instructions.
                rc, out = pgbench_fixed(LISTEN, pooler.port, clients,
                                        2 * short_x, mode, cgdir)
                require_ok(rc, out, "callgrind warm-up")
                irs = []
                for x in (short_x, long_x) * CALLGRIND_PAIRS:
                    callgrind_control(pooler, "-z")
                    t0 = time.monotonic()
                    rc, out = pgbench_fixed(LISTEN, pooler.port, clients, x,
                                            mode, cgdir)
                    require_ok(rc, out, "callgrind run")
                    secs = time.monotonic() - t0
                    before = set(os.path.join(cgdir, n)
                                 for n in os.listdir(cgdir))
                    callgrind_control(pooler, "-d")
                    dump = None
                    for _ in range(100):
                        try:
                            dump = _newest_dump(prefix, before)
                            break
                        except RuntimeError:
                            time.sleep(0.1)
                    if dump is None:
                        raise RuntimeError("no callgrind dump")
                    time.sleep(0.3)   # the dump is written at once; be sure
                    irs.append((_callgrind_total(dump), dump, secs))
                extra = clients * (long_x - short_x)
                pairs = [(irs[i + 1][0] - irs[i][0]) / float(extra)
                         for i in range(0, len(irs), 2)]
                per = statistics.median(pairs)
                keep = os.path.join(cgdir, "%s-%s.callgrind" % (name, mode))
                os.replace(irs[-1][1], keep)
                for _, f, _ in irs[:-1]:
                    os.unlink(f)
                rows.append({"pooler": name, "mode": mode,
                             "ir_per_xact": per, "pairs": pairs, "dump": keep,
                             "xacts": extra})
                log("callgrind %s %s: %.0f Ir/xact (pairs: %s; %.1fs per "
                    "long run)" % (name, mode, per,
                                   ", ".join("%.0f" % x for x in pairs),
                                   irs[-1][2]))
                if max(pairs) - min(pairs) > 0.05 * abs(per):
                    log("warning: callgrind pairs differ by more than 5%")
        finally:
            pooler.stop()
            if isinstance(pooler, Bouncer):
                pooler.cleanup()
            else:
                pooler.p.cleanup()
    return rows


def phase_strace(poolers, workdir):
    """Syscalls per transaction with `strace -c` attached to the running
    pooler for a fixed pgbench -t run (already-warm pools): 10 clients, and
    100, more than the 60 server connections, so most transactions wait
    for one."""
    rows = []
    runs = [(10, 200 if ARGS.quick else 1000), (100, 20 if ARGS.quick else 100)]
    for (name, (clients, xacts)) in [(n, r) for r in runs
                                     for n in ("pgfleet", "pgbouncer")]:
        pooler = poolers.get(name)
        if pooler is None:
            continue
        for mode in ARGS.modes:
            outf = os.path.join(workdir, "strace-%s-%s-c%d.txt" % (name, mode, clients))
            st = subprocess.Popen(["strace", "-c", "-f", "-o", outf, "-p",
                                   str(pooler.pid)],
                                  stdout=subprocess.DEVNULL,
                                  stderr=subprocess.DEVNULL)
            _CHILDREN.append(st)
            try:
                time.sleep(1.0)   # attached
                rc, out = pgbench_fixed(LISTEN, pooler.port, clients, xacts,
                                        mode, workdir)
                require_ok(rc, out, "strace run")
            finally:
                _stop_popen(st, signal.SIGINT)
            calls = {}
            with open(outf) as f:
                for line in f:
                    fl = line.split()
                    if len(fl) >= 5 and re.match(r"^[0-9.]+$", fl[0]) \
                            and fl[-1] != "total":
                        calls[fl[-1]] = int(fl[3])
            n = clients * xacts
            total = sum(calls.values())
            top = sorted(calls.items(), key=lambda kv: -kv[1])[:5]
            rows.append({"pooler": name, "mode": mode, "clients": clients,
                         "per_xact": total / float(n),
                         "top": ", ".join("%s %.2f" % (k, v / float(n))
                                          for k, v in top)})
            log("strace %s %s c=%d: %.2f syscalls/xact (%s)" % (
                name, mode, clients, total / float(n), rows[-1]["top"]))
    return rows


# --------------------------------------------------------------------------
# Report

def _med(vals):
    vals = [v for v in vals if v is not None]
    return statistics.median(vals) if vals else None


def _f(v, fmt):
    return "—" if v is None else fmt % v


def cell_runs(results, t, c, m):
    """The runs of target t at c clients and protocol m, by round."""
    return sorted((r for r in results if r["target"] == t and
                   r["clients"] == c and r["mode"] == m),
                  key=lambda r: r["round"])


def cell_median(results, t, c, m, key):
    """Median over the rounds of one cell's `key`, None if no run has it."""
    vals = [r.get(key) for r in cell_runs(results, t, c, m)]
    vals = [v for v in vals if v is not None]
    return _med(vals) if vals else None


def paired_ratios(results, c, m, key="tps"):
    """pgfleet/PgBouncer `key` of each round (the two ran back to back, so a
    drift of the machine's speed between rounds cancels out)."""
    by = {}
    for r in results:
        if r["clients"] == c and r["mode"] == m and r.get(key):
            by.setdefault(r["round"], {})[r["target"]] = r[key]
    return [v["pgfleet"] / v["pgbouncer"] for _, v in sorted(by.items())
            if "pgfleet" in v and "pgbouncer" in v]


def median_interval(vals, want=0.90):
    """A distribution-free interval for the median of vals: the k-th
    smallest to the k-th largest, k as large as keeps the chance that the
    true median lies inside at least `want` (a value falls either side of the
    median with even odds, so the count below it is binomial(n, 1/2)).
    Returns (low, high, coverage), or None if n is too small for `want`."""
    xs, n = sorted(vals), len(vals)
    best, tail = None, 0.0
    for k in range(1, n // 2 + 1):
        tail += math.comb(n, k - 1) / 2.0 ** n   # P(at most k-1 below)
        cover = 1 - 2 * tail
        if cover < want:
            break
        best = (xs[k - 1], xs[n - k], cover)
    return best


def cell_table(out, cols, row):
    """A markdown table with a row per (clients, mode) cell: row(c, m)
    gives the cells after those two."""
    out.append("| clients | mode | " + " | ".join(cols) + " |")
    out.append("|" + "---|" * (2 + len(cols)))
    for c in ARGS.clients:
        for m in ARGS.modes:
            out.append("| %d | %s | %s |" % (c, m, " | ".join(row(c, m))))
    out.append("")


def report_rate(rate):
    out = ["At a fixed rate: pgbench -S -R %d, %d round(s) of %gs per cell, "
           "pgfleet and PgBouncer alternated; median of rounds.  Pooler CPU "
           "and the machine's busy CPU per 100k transactions; the "
           "pgfleet/PgBouncer CPU ratio of each round, and its median."
           % (ARGS.rate, ARGS.rounds, ARGS.duration), ""]
    out.append("| clients | mode | tps pgfleet / PgBouncer | CPU s/100k "
               "pgfleet | CPU s/100k PgBouncer | CPU pgfleet/PgBouncer "
               "(rounds; median) | machine CPU s/100k pgfleet / PgBouncer "
               "| p50/p99 ms pgfleet | p50/p99 ms PgBouncer |")
    out.append("|" + "---|" * 9)
    for c in ARGS.clients:
        for m in ARGS.modes:
            if not (cell_runs(rate, "pgfleet", c, m) and
                    cell_runs(rate, "pgbouncer", c, m)):
                continue

            def med(t, k):
                return cell_median(rate, t, c, m, k)
            pairs = paired_ratios(rate, c, m, "cpu_per_100k")
            lat = {t: "%s / %s" % (_f(med(t, "p50_ms"), "%.2f"),
                                   _f(med(t, "p99_ms"), "%.2f"))
                   for t in ("pgfleet", "pgbouncer")}
            out.append("| %d | %s | %s / %s | %s | %s | %s | %s / %s | %s | %s |" % (
                c, m, _f(med("pgfleet", "tps"), "%.0f"),
                _f(med("pgbouncer", "tps"), "%.0f"),
                _f(med("pgfleet", "cpu_per_100k"), "%.2f"),
                _f(med("pgbouncer", "cpu_per_100k"), "%.2f"),
                ("%s; %.2f" % (" ".join("%.2f" % x for x in pairs),
                               _med(pairs))) if pairs else "—",
                _f(med("pgfleet", "machine_per_100k"), "%.2f"),
                _f(med("pgbouncer", "machine_per_100k"), "%.2f"),
                lat["pgfleet"], lat["pgbouncer"]))
    out.append("")
    return out


def report(results, rate, rss, cg, strace, meta):
    out = []
    fleet_set = dict(kv.split("=", 1) for kv in ARGS.pgfleet_set)
    out.append("pgbench -S, %d round(s) of %gs per cell, median of rounds; "
               "pgfleet workers=%s default_pool_size=%d (x3 replicas), "
               "PgBouncer default_pool_size=%d%s; direct = one pgbench per "
               "pod, clients split over the 3 pods." % (
                   ARGS.rounds, ARGS.duration, fleet_set.get("workers", "1"),
                   ARGS.pool_size, 3 * ARGS.pool_size,
                   " (PgBouncer rr: the same with server_round_robin = 1)"
                   if "pgbouncer-rr" in ARGS.targets else ""))
    extra = ["pgfleet " + kv for kv in ARGS.pgfleet_set] + \
        ["PgBouncer " + kv for kv in ARGS.pgbouncer_set]
    if extra:
        out.append("Extra settings: " + ", ".join(extra) + ".")
    out.append("")
    if results:
        targets = list(ARGS.targets)
        others = [t for t in targets if t != "pgfleet"]
        poolers = [t for t in targets if t != "direct"]
        names = TARGET_NAMES

        def med(t, c, m, k):
            return cell_median(results, t, c, m, k)

        def ratio(a, b):
            return a / b if a is not None and b else None

        def tpscell(t, c, m):
            s = _f(med(t, c, m, "tps"), "%.0f")
            err = sum(1 for r in cell_runs(results, t, c, m) if r["errors"])
            return s + (" (errors in %d run(s))" % err if err else "")

        def lat(t, c, m):
            if med(t, c, m, "p50_ms") is None:
                return "—"
            return "%.2f / %.2f" % (med(t, c, m, "p50_ms"), med(t, c, m, "p99_ms"))
        if "pgfleet" in targets:
            cell_table(out, ["tps %s" % names[t] for t in targets] +
                       ["pgfleet/%s" % names[t] for t in others],
                       lambda c, m: [tpscell(t, c, m) for t in targets] +
                       [_f(ratio(med("pgfleet", c, m, "tps"),
                                 med(t, c, m, "tps")), "%.2f") for t in others])
            cell_table(out, ["p50/p99 ms %s" % names[t] for t in targets] +
                       ["CPU s/100k xact %s" % names[t] for t in poolers] +
                       ["CPU pgfleet/%s" % names[t] for t in others if t in poolers],
                       lambda c, m: [lat(t, c, m) for t in targets] +
                       [_f(med(t, c, m, "cpu_per_100k"), "%.2f") for t in poolers] +
                       [_f(ratio(med("pgfleet", c, m, "cpu_per_100k"),
                                 med(t, c, m, "cpu_per_100k")), "%.2f")
                        for t in others if t in poolers])
        out.append("tps per round (%s):" % " / ".join(names[t] for t in targets))
        out.append("")
        for c in ARGS.clients:
            for m in ARGS.modes:
                parts = []
                for t in ARGS.targets:
                    rs = cell_runs(results, t, c, m)
                    parts.append(" ".join(_f(r["tps"], "%.0f") for r in rs))
                line = "- c=%d %s: %s" % (c, m, " / ".join(parts))
                pairs = paired_ratios(results, c, m)
                if pairs:
                    line += "; pgfleet/PgBouncer round by round: %s (median %.2f" % (
                        " ".join("%.2f" % x for x in pairs), _med(pairs))
                    line += "; pgfleet ahead in %d of %d" % (
                        sum(1 for x in pairs if x > 1.0), len(pairs))
                    iv = median_interval(pairs)
                    if iv:
                        line += "; %.0f %% interval of the median %.2f–%.2f" % (
                            100 * iv[2], iv[0], iv[1])
                    line += ")"
                out.append(line)
        out.append("")
        out.append("Where the CPU goes (median of rounds): the whole machine's busy CPU "
                   "seconds per 100k transactions (every process and the kernel's "
                   "packet work, from /proc/stat), how busy the machine was, and the "
                   "pooler's own share of that busy time.")
        out.append("")
        def pct(v, fmt):
            return _f(None if v is None else 100 * v, fmt)
        cell_table(out, ["machine CPU s/100k %s" % names[t] for t in targets] +
                   ["busy %% %s" % names[t] for t in targets] +
                   ["pooler share %s" % names[t] for t in poolers],
                   lambda c, m: [_f(med(t, c, m, "machine_per_100k"), "%.2f")
                                 for t in targets] +
                   [pct(med(t, c, m, "machine_busy"), "%.0f") for t in targets] +
                   [pct(med(t, c, m, "pooler_share"), "%.0f %%") for t in poolers])
        out.append("How the transactions spread over the pods: each pod's share "
                   "of the pods' CPU, largest first (%, median of rounds of "
                   "the largest, the second, ...; which pod is which may "
                   "change between rounds). "
                   "The three pods share this machine's caches, so the more "
                   "evenly a target spreads, the more the pods' working sets "
                   "compete for them and the more CPU a transaction costs "
                   "the pods (on a real cluster each pod has its own node).")
        out.append("")

        def spread(t, c, m):
            runs = [sorted(r["pod_share"].values(), reverse=True)
                    for r in cell_runs(results, t, c, m) if r.get("pod_share")]
            n = max((len(x) for x in runs), default=0)
            return " / ".join("%.0f" % (100 * _med([x[i] if i < len(x) else 0.0
                                                    for x in runs]))
                              for i in range(n)) if n else "—"
        cell_table(out, [names[t] for t in targets],
                   lambda c, m: [spread(t, c, m) for t in targets])
        out.append("Who spends it (median of rounds, CPU s/100k transactions): "
                   "the pooler / every `postgres` process of the pods / "
                   "pgbench / the rest (the machine's busy time less those: "
                   "packet work the kernel does outside any process's "
                   "account, and everything else on the machine).")
        out.append("")

        def who(t, c, m):
            rs = [r for r in cell_runs(results, t, c, m)
                  if r.get("postgres_per_100k") is not None]
            if not rs:
                return "—"
            own = [r.get("cpu_per_100k") or 0.0 for r in rs]
            pg = [r["postgres_per_100k"] for r in rs]
            bench = [r["pgbench_per_100k"] for r in rs]
            rest = [r["machine_per_100k"] - a - b - d for r, a, b, d
                    in zip(rs, own, pg, bench)]
            return "%s / %.2f / %.2f / %.2f" % (
                "—" if t == "direct" else "%.2f" % _med(own),
                _med(pg), _med(bench), _med(rest))
        cell_table(out, [names[t] for t in targets],
                   lambda c, m: [who(t, c, m) for t in targets])
    if rate:
        out.extend(report_rate(rate))
    if rss:
        counts = ARGS.rss_clients
        out.append("| pooler | RSS, no client (KiB) | " + " | ".join(
            "RSS, %s idle clients (KiB)" % format(n, ",") for n in counts)
            + " | KiB per idle client |")
        out.append("|" + "---|" * (3 + len(counts)))
        for row in rss:
            cells = []
            for n in counts:
                e = row.get(n)
                if e is None:
                    cells.append("—")
                    continue
                s = "%d" % e["rss"]
                if e["failed"]:
                    s += " (%d logged in, %d failed: %s)" % (
                        e["ok"], e["failed"], e["err"][:80])
                cells.append(s)
            hi = row.get(counts[-1])
            per = ((hi["rss"] - row["rss0"]) / float(hi["ok"])
                   if hi and hi["ok"] else None)
            out.append("| %s | %d | %s | %s |" % (
                TARGET_NAMES[row["pooler"]], row["rss0"], " | ".join(cells),
                _f(per, "%.1f")))
        out.append("")
    if cg or strace:
        out.append("| pooler | mode | callgrind Ir per transaction"
                   " | syscalls per transaction, 10 clients (top 5 per xact)"
                   " | syscalls per transaction, 100 clients (top 5 per xact) |")
        out.append("|---|---|---|---|---|")
        for name in ("pgfleet", "pgbouncer"):
            for m in ARGS.modes:
                c = next((r for r in cg if r["pooler"] == name and
                          r["mode"] == m), None)
                cells = []
                for n in (10, 100):
                    s = next((r for r in strace if r["pooler"] == name and
                              r["mode"] == m and r["clients"] == n), None)
                    cells.append("%.2f (%s)" % (s["per_xact"], s["top"]) if s else "—")
                out.append("| %s | %s | %s | %s |" % (
                    TARGET_NAMES[name], m,
                    _f(c and c["ir_per_xact"], "%.0f"), " | ".join(cells)))
        if cg:
            out.append("")
            out.append("callgrind: pgbench -S -c 10 -t %d minus -t %d "
                       "(%d transactions), median of %d pairs, pooler under "
                       "valgrind; the dumps are in %s." % (ARGS.callgrind_xacts,
                                       max(1, ARGS.callgrind_xacts // 6),
                                       cg[0]["xacts"], CALLGRIND_PAIRS,
                                       os.path.dirname(cg[0]["dump"])))
        out.append("")
    return "\n".join(out)


# --------------------------------------------------------------------------

svc = None


def main():
    global svc, LOG_FILE
    signal.signal(signal.SIGTERM, _on_signal)
    signal.signal(signal.SIGHUP, _on_signal)
    hard = resource.getrlimit(resource.RLIMIT_NOFILE)[1]
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    if hard < 12000:
        log("warning: fd hard limit is %d; 10,000 idle clients need more" % hard)
    if not os.access(ARGS.pgfleet, os.X_OK):
        sys.exit("no pgfleet binary at %s (run ./tests/bench/run.sh)"
                 % ARGS.pgfleet)
    if ARGS.scenario == "replicated":
        import replicated   # tests/bench/replicated.py
        return replicated.main(sys.modules[__name__])
    workdir = ARGS.workdir or tempfile.mkdtemp(prefix="pgfleet-bench-",
                                               dir="/tmp")
    os.makedirs(workdir, exist_ok=True)
    os.chmod(workdir, 0o755)
    LOG_FILE = os.path.join(workdir, "bench.log")
    log("work dir %s; fixture net %s; fd limit %d" % (workdir, ARGS.net, hard))
    t_start = time.monotonic()
    poolers = {}
    results, rate, rss, cg, strace = [], [], [], [], []
    try:
        svc = BenchService(pods=3)
        svc.start()
        svc.share_app_secret()
        svc.pgbench_init(1)
        log("fixture up: %s" % " ".join(svc.addrs))
        need_main = not {"throughput", "rate", "strace"} <= ARGS.skip
        if need_main:
            if "pgfleet" in ARGS.targets:
                poolers["pgfleet"] = Fleet(workdir).start()
            if "pgbouncer" in ARGS.targets:
                poolers["pgbouncer"] = Bouncer(workdir).start()
            if "pgbouncer-rr" in ARGS.targets:
                # PgBouncer's documentation: reuse servers round-robin when
                # a round-robin system (TCP, DNS or a host list) is behind
                # the address, "thus achieving uniform load".
                poolers["pgbouncer-rr"] = Bouncer(
                    workdir, name="pgbouncer-rr",
                    settings=["server_round_robin=1"]).start()
            # Fill every pool before measuring; show where each pooler's
            # server connections went.
            for name, p in poolers.items():
                before = server_spread()
                rc, out = pgbench_fixed(LISTEN, p.port, 3 * ARGS.pool_size,
                                        200, "simple", workdir)
                require_ok(rc, out, "%s warm-up" % name)
                after = server_spread()
                log("%s: server connections per pod after warm-up: %s" % (
                    name, " ".join("%s=%d" % (k, after[k] - before.get(k, 0))
                                   for k in sorted(after))))
        if "throughput" not in ARGS.skip:
            results = phase_throughput(poolers, workdir)
        if "rate" not in ARGS.skip:
            rate = phase_rate(poolers, workdir)
        if "strace" not in ARGS.skip:
            strace = phase_strace(poolers, workdir)
        for name in list(poolers):
            poolers.pop(name).stop()
        if "rss" not in ARGS.skip:
            rss = phase_rss(workdir)
        if "callgrind" not in ARGS.skip:
            cg = phase_callgrind(workdir)
    except KeyboardInterrupt as e:
        log("interrupted (%s): stopping everything" % (e or "SIGINT"))
        raise SystemExit(130)
    finally:
        for p in list(_CHILDREN):
            _stop_popen(p)
        for name, p in poolers.items():
            try:
                p.stop()
            except Exception as e:
                log("stopping %s: %s" % (name, e))
        for p in poolers.values():
            if isinstance(p, Bouncer):
                p.cleanup()
            else:
                p.p.cleanup()
        if svc is not None:
            svc.close()
        with open(os.path.join(workdir, "results.json"), "w") as f:
            json.dump({"throughput": results, "rate": rate, "rss": [
                {str(k): v for k, v in r.items()} for r in rss],
                "callgrind": cg, "strace": strace}, f, indent=1)
    meta = {"elapsed": time.monotonic() - t_start}
    text = report(results, rate, rss, cg, strace, meta)
    print(text)
    if ARGS.out:
        with open(ARGS.out, "w") as f:
            f.write(text + "\n")
    log("done in %.0fs; raw results in %s/results.json"
        % (meta["elapsed"], workdir))
    return 0


if __name__ == "__main__":
    sys.exit(main())
