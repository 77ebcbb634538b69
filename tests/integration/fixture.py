#!/usr/bin/python3
"""The local "headless service": real PostgreSQL pods behind real DNS.

A Kubernetes headless service answers one A record per pod, and every pod
listens on the same port.  This module reproduces that on loopback (see
shared/TESTING.md):

  * pods are PostgreSQL 15 clusters on 127.0.0.2, .3, .4 ... all on port 5432,
    either independent or one primary plus streaming standbys;
  * dnsmasq on 127.0.0.53:53 answers SVC_NAME with one A record per pod;
  * Pgfleet starts the proxy under test against them.

Every process started here is recorded by pid (with its start time, so a
reused pid is never mistaken for ours) in STATE_DIR/pids and stopped by pid:
by the owner's stop(), by an atexit hook, and, after a crash, by the next
fixture that starts with the same state directory.  Nothing this module did
not start is ever signalled.

Only the standard library and the PostgreSQL/dnsmasq binaries are needed;
psycopg is imported lazily by the connect() helpers.

CLI (used by scripts/demo.sh):
  fixture.py up [--pods N] [--replication] [--pgbench-scale S] [--state-dir D]
  fixture.py xacts [--dbname app] [--state-dir D]   # "addr xact_commit" lines
  fixture.py pgbench-init [--scale S] [--state-dir D]
  fixture.py status [--state-dir D]
  fixture.py down [--state-dir D]
"""

import argparse
import atexit
import contextlib
import errno
import fcntl
import ipaddress
import json
import os
import pwd
import random
import re
import shutil
import signal
import socket
import struct
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request

# --------------------------------------------------------------------------
# Constants shared with the tests, the demo and the README.

PG_BIN = os.environ.get("PGFLEET_PG_BIN", "/usr/lib/postgresql/15/bin")
PG_PORT = 5432
# Another engineer's run on the same machine can use another /24 of loopback
# (e.g. PGFLEET_FIXTURE_NET=127.0.1): pods then live on 127.0.1.2..., DNS on
# 127.0.1.53, state in /tmp/pgfleet-fixture-127.0.1.
NET_PREFIX = os.environ.get("PGFLEET_FIXTURE_NET", "127.0.0")
DNS_ADDR = NET_PREFIX + ".53"
DNS_PORT = 53
SVC_NAME = "postgresql-svc.postgres.svc.cluster.local"
SUPERUSER = "postgres"
SUPERUSER_PASSWORD = "postgres-secret"
APP_USER = "app"
APP_PASSWORD = "app-secret"
APP_DB = "app"
DEFAULT_STATE_DIR = ("/tmp/pgfleet-fixture" if NET_PREFIX == "127.0.0"
                     else "/tmp/pgfleet-fixture-" + NET_PREFIX)
REPO = os.path.dirname(os.path.dirname(os.path.dirname(
    os.path.abspath(__file__))))
MAX_PODS = 50  # .2 ... .51; .53 is the DNS server

# Environment variables the proxy reads (docs/configuration.md); never inherited by it.
_PROXY_ENV_NAMES = {"DB_HOST", "DB_PORT", "DB_NAME", "DB_USER", "DB_PASSWORD",
                    "POSTGRES_PASSWORD", "POOL_MODE", "SERVER_RESET_QUERY",
                    "MAX_CLIENT_CONN", "DEFAULT_POOL_SIZE", "LISTEN_PORT",
                    "AUTH_TYPE", "ADMIN_USERS"}
_SANITIZER_PATTERNS = re.compile(
    r"ERROR: AddressSanitizer|ERROR: LeakSanitizer|runtime error:|"
    r"SUMMARY: UndefinedBehaviorSanitizer|SUMMARY: AddressSanitizer")


class FixtureError(RuntimeError):
    pass


def wait_until(pred, timeout, step=0.1):
    """pred()'s first true value within timeout seconds, else its last one."""
    deadline = time.monotonic() + timeout
    while True:
        v = pred()
        if v or time.monotonic() >= deadline:
            return v
        time.sleep(step)


def pod_addr(index):
    """Address of pod `index` (0 -> 127.0.0.2)."""
    if not 0 <= index < MAX_PODS:
        raise FixtureError("pod index %d out of range" % index)
    return "%s.%d" % (NET_PREFIX, index + 2)


def _log(msg):
    if os.environ.get("PGFLEET_FIXTURE_QUIET") != "1":
        sys.stderr.write("[fixture] %s\n" % msg)
        sys.stderr.flush()


# --------------------------------------------------------------------------
# Processes by pid.  PID 1 on these machines does not reap orphans, so a dead
# postmaster or dnsmasq can linger as a zombie: a zombie counts as dead.

def _proc_stat(pid):
    try:
        with open("/proc/%d/stat" % pid) as f:
            data = f.read()
    except (OSError, ValueError):
        return None
    # Fields after "(comm)": state is field 3, ppid 4, starttime 22.
    return data[data.rindex(")") + 2:].split()


def proc_start_time(pid):
    """Start time (clock ticks since boot) of a live process, else None."""
    st = _proc_stat(pid)
    if st is None or st[0] in ("Z", "X"):
        return None
    return int(st[19])


def pid_alive(pid, start=None):
    st = proc_start_time(pid)
    return st is not None and (start is None or st == start)


def children_of(pid):
    kids = []
    for name in os.listdir("/proc"):
        if name.isdigit():
            st = _proc_stat(int(name))
            if st is not None and st[0] not in ("Z", "X") and int(st[1]) == pid:
                kids.append(int(name))
    return kids


def _signal(pid, sig):
    try:
        os.kill(pid, sig)
        return True
    except ProcessLookupError:
        return False


def wait_dead(pid, start=None, timeout=10.0):
    deadline = time.monotonic() + timeout
    while pid_alive(pid, start):
        if time.monotonic() > deadline:
            return False
        time.sleep(0.02)
    return True


def _reap(pid):
    # Only for daemons we started that are not subprocess.Popen children
    # (postmasters, dnsmasq): reaping a Popen child would steal the exit
    # status Popen.wait() reports (pgfleet's).
    try:
        os.waitpid(pid, os.WNOHANG)
    except ChildProcessError:
        pass


def reap_orphans(names=("postgres", "dnsmasq")):
    """Reap zombie children of ours with one of these names (by default
    postgres or dnsmasq: daemons that were reparented to us as subreaper,
    never a subprocess.Popen child: pg_ctl and the dnsmasq launcher are
    waited for synchronously)."""
    me = os.getpid()
    for name in os.listdir("/proc"):
        if not name.isdigit():
            continue
        try:
            with open("/proc/%s/stat" % name) as f:
                data = f.read()
        except OSError:
            continue
        comm = data[data.index("(") + 1:data.rindex(")")]
        st = data[data.rindex(")") + 2:].split()
        if st[0] == "Z" and int(st[1]) == me and comm in names:
            _reap(int(name))


def become_subreaper():
    """Make this process the reaper of the daemons it starts (postmasters
    detach from pg_ctl, dnsmasq forks): PID 1 on these machines does not
    reap orphans, so without this every stopped pod stays a zombie."""
    import ctypes
    PR_SET_CHILD_SUBREAPER = 36
    with contextlib.suppress(Exception):
        ctypes.CDLL(None, use_errno=True).prctl(PR_SET_CHILD_SUBREAPER, 1,
                                                0, 0, 0)


def stop_pid(pid, start, kind, timeout=10.0):
    """Stop one recorded process (and, for a postmaster, its children)."""
    if not pid_alive(pid, start):
        return
    kids = children_of(pid) if kind == "postgres" else []
    # A hung (SIGSTOPped) process would sit on a pending signal forever.
    for p in [pid] + kids:
        _signal(p, signal.SIGCONT)
    first = {"postgres": signal.SIGQUIT}.get(kind, signal.SIGTERM)
    _signal(pid, first)
    if not wait_dead(pid, start, timeout):
        _log("%s pid %d ignored signal %d; SIGKILL" % (kind, pid, first))
        for p in [pid] + kids:
            _signal(p, signal.SIGKILL)
        wait_dead(pid, start, 5.0)
    if kind in ("postgres", "dnsmasq"):
        _reap(pid)


# --------------------------------------------------------------------------
# The state directory: which pids and directories this fixture owns.

class StateDir:
    """STATE_DIR/pids holds "PID STARTTIME KIND LABEL" lines, STATE_DIR/dirs
    one directory per line.  Both are updated under an flock."""

    _cleaned = set()  # state dirs already purged of stale runs by this process

    def __init__(self, path=DEFAULT_STATE_DIR):
        self.path = os.path.abspath(path)
        os.makedirs(self.path, exist_ok=True)
        os.chmod(self.path, 0o755)  # the postgres user walks through it
        self.pids_file = os.path.join(self.path, "pids")
        self.dirs_file = os.path.join(self.path, "dirs")

    @contextlib.contextmanager
    def _locked(self):
        with open(os.path.join(self.path, "lock"), "a") as lk:
            fcntl.flock(lk, fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(lk, fcntl.LOCK_UN)

    @staticmethod
    def _read(path):
        try:
            with open(path) as f:
                return [line.rstrip("\n") for line in f if line.strip()]
        except FileNotFoundError:
            return []

    @staticmethod
    def _write(path, lines):
        tmp = path + ".tmp"
        with open(tmp, "w") as f:
            f.write("".join(line + "\n" for line in lines))
        os.replace(tmp, path)

    def pid_entries(self):
        out = []
        for line in self._read(self.pids_file):
            parts = line.split(" ", 3)
            try:
                out.append((int(parts[0]), int(parts[1]), parts[2],
                            parts[3] if len(parts) > 3 else ""))
            except (ValueError, IndexError):
                continue
        return out

    def dir_entries(self):
        return self._read(self.dirs_file)

    def record_pid(self, pid, kind, label=""):
        start = proc_start_time(pid)
        if start is None:
            raise FixtureError("%s pid %d died at once" % (kind, pid))
        with self._locked():
            lines = self._read(self.pids_file)
            lines.append("%d %d %s %s" % (pid, start, kind, label))
            self._write(self.pids_file, lines)
        return start

    def forget_pid(self, pid):
        with self._locked():
            lines = [l for l in self._read(self.pids_file)
                     if l.split(" ", 1)[0] != str(pid)]
            self._write(self.pids_file, lines)

    def record_dir(self, path):
        with self._locked():
            lines = self._read(self.dirs_file)
            lines.append(os.path.abspath(path))
            self._write(self.dirs_file, lines)

    def forget_dir(self, path):
        path = os.path.abspath(path)
        with self._locked():
            self._write(self.dirs_file,
                        [l for l in self._read(self.dirs_file) if l != path])

    def _owned(self, path):
        real = os.path.realpath(path)
        return real.startswith(os.path.realpath(self.path) + os.sep)

    def purge(self):
        """Stop every recorded process still alive and delete every recorded
        directory (all of them inside this state dir).  Returns what was
        stopped."""
        stopped = []
        with self._locked():
            entries = self.pid_entries()
            # dnsmasq and proxies first, postmasters last (standbys before
            # their primary does not matter with immediate shutdown).
            order = {"pgfleet": 0, "dnsmasq": 1, "postgres": 2}
            for pid, start, kind, label in sorted(
                    entries, key=lambda e: order.get(e[2], 3)):
                if pid_alive(pid, start):
                    stop_pid(pid, start, kind)
                    stopped.append("%s %s (pid %d)" % (kind, label, pid))
            self._write(self.pids_file, [])
            for d in self.dir_entries():
                if self._owned(d):
                    shutil.rmtree(d, ignore_errors=True)
            self._write(self.dirs_file, [])
        StateDir._cleaned.add(self.path)
        return stopped

    def purge_stale_once(self):
        """At the first start in this process: clean up a crashed run."""
        if self.path in StateDir._cleaned:
            return
        stopped = self.purge()
        if stopped:
            _log("stopped leftovers of an earlier run: " + ", ".join(stopped))


# Everything alive in this process, stopped at exit even if a test crashed.
_LIVE = []


def _stop_all_live():
    for obj in list(reversed(_LIVE)):
        try:
            obj.stop()
        except Exception as e:  # keep stopping the others
            _log("cleanup of %r failed: %s" % (obj, e))
    reap_orphans()


atexit.register(_stop_all_live)


# --------------------------------------------------------------------------
# Helpers for running things.

def _clean_env(extra=None):
    """Our environment without libpq and sanitizer variables: PGHOST or
    PGSSLMODE from the caller must not change what the helpers connect to,
    and the servers are not the program under test."""
    env = {k: v for k, v in os.environ.items()
           if not k.startswith("PG") and k not in
           ("ASAN_OPTIONS", "UBSAN_OPTIONS", "LSAN_OPTIONS",
            "MALLOC_PERTURB_", "LD_PRELOAD")}
    env.setdefault("LC_ALL", "C.UTF-8")
    if extra:
        env.update(extra)
    return env


def _as_postgres(argv):
    if os.geteuid() == 0:
        return ["runuser", "-u", "postgres", "--"] + argv
    return argv


def _run(argv, env=None, cwd=None, timeout=120, check=True, input=None):
    p = subprocess.run(argv, env=env or _clean_env(), cwd=cwd, input=input,
                       stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                       text=True, timeout=timeout)
    if check and p.returncode != 0:
        raise FixtureError("%s failed (exit %d):\n%s%s" % (
            " ".join(argv), p.returncode, p.stdout[-2000:], p.stderr[-4000:]))
    return p


def _chown_postgres(path):
    pw = pwd.getpwnam("postgres")
    os.chown(path, pw.pw_uid, pw.pw_gid)


def _sql_literal(s):
    return "'" + str(s).replace("'", "''") + "'"


def _port_in_use(addr, port, kind=socket.SOCK_STREAM):
    s = socket.socket(socket.AF_INET, kind)
    try:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        s.bind((addr, port))
        return False
    except OSError as e:
        if e.errno == errno.EADDRINUSE:
            return True
        raise
    finally:
        s.close()


def _who_listens(addr, port):
    try:
        p = subprocess.run(["ss", "-Hltunp", "src", "%s:%d" % (addr, port)],
                           stdout=subprocess.PIPE, stderr=subprocess.DEVNULL,
                           text=True, timeout=5)
        return p.stdout.strip() or "(ss shows nothing)"
    except (OSError, subprocess.SubprocessError):
        return "(ss not available)"


_ports_given = set()


def free_port(addr="127.0.0.1"):
    """A port nothing listens on, never one this process handed out before
    (a pgfleet's client port and HTTP port must differ)."""
    for _ in range(100):
        s = socket.socket()
        try:
            s.bind((addr, 0))
            port = s.getsockname()[1]
        finally:
            s.close()
        if port not in _ports_given:
            _ports_given.add(port)
            return port
    raise FixtureError("no free port left on %s" % addr)


def wait_port(addr, port, timeout=10.0, proc=None):
    """Wait until addr:port accepts TCP connections."""
    deadline = time.monotonic() + timeout
    while True:
        if proc is not None and proc.poll() is not None:
            return False
        try:
            with socket.create_connection((addr, port), timeout=0.5):
                return True
        except OSError:
            pass
        if time.monotonic() > deadline:
            return False
        time.sleep(0.05)


# --------------------------------------------------------------------------
# DNS: a tiny stub resolver, so waiting on dnsmasq needs no dig.

class DnsError(FixtureError):
    pass


def _skip_name(buf, off):
    while True:
        n = buf[off]
        if n == 0:
            return off + 1
        if n & 0xC0 == 0xC0:
            return off + 2
        off += 1 + n


def dns_query(name=SVC_NAME, qtype="A", server=DNS_ADDR, port=DNS_PORT,
              timeout=1.0):
    """Ask one DNS server once.  Returns (rcode, sorted addresses).
    rcode 0 NOERROR, 2 SERVFAIL, 3 NXDOMAIN, 5 REFUSED.  Raises DnsError on
    timeout or when nothing listens."""
    qt = {"A": 1, "AAAA": 28}[qtype]
    qid = random.randrange(65536)
    q = struct.pack(">HHHHHH", qid, 0x0100, 1, 0, 0, 0)
    for label in name.rstrip(".").split("."):
        q += bytes([len(label)]) + label.encode()
    q += b"\0" + struct.pack(">HH", qt, 1)
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    s.settimeout(timeout)
    try:
        s.connect((server, port))
        s.send(q)
        deadline = time.monotonic() + timeout
        while True:
            s.settimeout(max(0.01, deadline - time.monotonic()))
            buf = s.recv(4096)
            if len(buf) >= 12 and struct.unpack(">H", buf[:2])[0] == qid:
                break
    except socket.timeout:
        raise DnsError("no DNS answer from %s:%d" % (server, port))
    except OSError as e:
        raise DnsError("DNS %s:%d: %s" % (server, port, e))
    finally:
        s.close()
    _, flags, qd, an, _, _ = struct.unpack(">HHHHHH", buf[:12])
    off = 12
    for _ in range(qd):
        off = _skip_name(buf, off) + 4
    addrs = []
    for _ in range(an):
        off = _skip_name(buf, off)
        rtype, _cls, _ttl, rdlen = struct.unpack(">HHIH", buf[off:off + 10])
        off += 10
        rdata = buf[off:off + rdlen]
        off += rdlen
        if rtype == qt:
            addrs.append(str(ipaddress.ip_address(rdata)))
    return flags & 0xF, sorted(addrs)


def resolve(name=SVC_NAME, server=DNS_ADDR, timeout=1.0):
    """The A records of name (empty list for NXDOMAIN/no data)."""
    rcode, addrs = dns_query(name, "A", server, timeout=timeout)
    if rcode not in (0, 3):
        raise DnsError("DNS rcode %d for %s" % (rcode, name))
    return addrs


def _addr_key(a):
    return tuple(int(x) for x in a.split("."))


# --------------------------------------------------------------------------
# Pods and the service.

class Pod:
    """One PostgreSQL server: an address, a data dir and a postmaster."""

    def __init__(self, run_dir, index, standby=False):
        self.index = index
        self.addr = pod_addr(index)
        self.name = "pod%d" % index
        self.dir = os.path.join(run_dir, self.name)
        self.datadir = os.path.join(self.dir, "data")
        self.sockdir = os.path.join(self.dir, "sock")
        self.logfile = os.path.join(self.dir, "postgres.log")
        self.standby = standby
        self.pid = None
        self.start_time = None
        self.hung_pids = []

    @property
    def running(self):
        return self.pid is not None and pid_alive(self.pid, self.start_time)

    @property
    def hung(self):
        return bool(self.hung_pids)

    def __repr__(self):
        return "<Pod %s %s %s>" % (self.name, self.addr,
                                   "standby" if self.standby else "primary")

    def to_json(self):
        return {"index": self.index, "addr": self.addr, "dir": self.dir,
                "standby": self.standby}


class HeadlessService:
    """N PostgreSQL pods on 127.0.0.2.. port 5432 plus dnsmasq answering
    SVC_NAME with one A record per pod.

    replication=False: independent clusters, each with role `app` (password
    `app-secret`) owning database `app`.  replication=True: pod 0 is the
    primary, the others streaming standbys of it (`app` is replicated).
    The superuser is `postgres` / `postgres-secret` everywhere.

    A stopped object can be start()ed again: it rebuilds everything from
    scratch (fresh data dirs)."""

    def __init__(self, pods=3, replication=False, state_dir=DEFAULT_STATE_DIR,
                 name=SVC_NAME):
        if not 1 <= pods <= MAX_PODS:
            raise FixtureError("pods must be 1..%d" % MAX_PODS)
        self.baseline_pods = pods
        self.replication = replication
        self.name = name
        self.state = StateDir(state_dir)
        self.pods = []
        self.run_dir = None
        self.dns_pid = None
        self.dns_start_time = None
        self.dns_hung = False
        self.records = []
        self.extra_names = {}  # other names DNS answers: name -> [ip] (set_name)
        self.pgbench_scale = None
        self.started = False
        self.broken = False   # a promotion happened: only a rebuild restores
        self.dirty = False    # something restore() has to undo
        self._pwfile = None

    def __repr__(self):
        return "<HeadlessService %d pods%s>" % (
            len(self.pods), " replication" if self.replication else "")

    def __enter__(self):
        if not self.started:
            self.start()
        return self

    def __exit__(self, *exc):
        self.close()

    # ---- life cycle -------------------------------------------------------

    def start(self, i=None):
        """start(): build and start the service.  start(i): start pod i
        again (pg_ctl start -w), e.g. after stop(i)."""
        if i is not None:
            return self.start_pod(i)
        return self._start_service()

    def _start_service(self):
        if self.started:
            return self
        t0 = time.monotonic()
        self.state.purge_stale_once()
        self._check_free(range(self.baseline_pods))
        self.run_dir = tempfile.mkdtemp(prefix="run-", dir=self.state.path)
        self.state.record_dir(self.run_dir)
        os.chmod(self.run_dir, 0o755)
        _chown_postgres(self.run_dir)
        self.pods = []
        self.broken = False
        self.dirty = False
        self.pgbench_scale = None
        self.records = []
        self.started = True
        if self not in _LIVE:
            _LIVE.append(self)
        try:
            self._pwfile = os.path.join(self.run_dir, "pwfile")
            with open(self._pwfile, "w") as f:
                f.write(SUPERUSER_PASSWORD + "\n")
            os.chmod(self._pwfile, 0o600)
            _chown_postgres(self._pwfile)
            if self.replication:
                primary = self._new_pod(0)
                self._init_primary_like([primary])
                standbys = [self._new_pod(i, standby=True)
                            for i in range(1, self.baseline_pods)]
                self._basebackup(standbys, primary)
                self.wait_streaming()
            else:
                pods = [self._new_pod(i) for i in range(self.baseline_pods)]
                self._init_primary_like(pods)
            self.records = [p.addr for p in self.pods]
            self._write_hosts(self.records)
            self.dns_start()
            self.write_state_json()
        except BaseException:
            self.stop()
            raise
        _log("%r up in %.1fs (%s)" % (self, time.monotonic() - t0,
                                      " ".join(self.addrs)))
        return self

    def close(self):
        """Stop dnsmasq and every pod by pid; delete the data."""
        if self in _LIVE:
            _LIVE.remove(self)
        reap_orphans()
        if not self.started:
            return
        self.started = False
        self.dns_stop(_quiet=True)
        for pod in reversed(self.pods):
            self._kill_pod(pod)
        if self.run_dir:
            if os.environ.get("PGFLEET_FIXTURE_KEEP") == "1":
                _log("keeping %s (PGFLEET_FIXTURE_KEEP=1)" % self.run_dir)
            else:
                shutil.rmtree(self.run_dir, ignore_errors=True)
                self.state.forget_dir(self.run_dir)
        state_json = os.path.join(self.state.path, "service.json")
        with contextlib.suppress(FileNotFoundError):
            os.unlink(state_json)
        self.pods = []
        self.run_dir = None
        reap_orphans()

    def detach(self):
        """Leave everything running after this process exits (CLI `up`)."""
        if self in _LIVE:
            _LIVE.remove(self)

    def write_state_json(self):
        data = {"replication": self.replication, "run_dir": self.run_dir,
                "name": self.name, "dns": "%s:%d" % (DNS_ADDR, DNS_PORT),
                "pods": [p.to_json() for p in self.pods]}
        path = os.path.join(self.state.path, "service.json")
        with open(path + ".tmp", "w") as f:
            json.dump(data, f, indent=1)
        os.replace(path + ".tmp", path)

    @classmethod
    def attach(cls, state_dir=DEFAULT_STATE_DIR):
        """An object for a service another process (CLI `up`) started:
        enough for queries, xact_commit() and pgbench_init(); stopping it is
        `fixture.py down`'s job."""
        path = os.path.join(state_dir, "service.json")
        try:
            with open(path) as f:
                data = json.load(f)
        except FileNotFoundError:
            raise FixtureError("no service is up (no %s)" % path)
        svc = cls(len(data["pods"]), data["replication"], state_dir,
                  data["name"])
        svc.run_dir = data["run_dir"]
        for pj in data["pods"]:
            pod = Pod(svc.run_dir, pj["index"], pj["standby"])
            pod.pid, pod.start_time = svc._read_postmaster_pid(pod)
            svc.pods.append(pod)
        svc.records = [p.addr for p in svc.pods]
        return svc

    def _check_free(self, indexes):
        for i in indexes:
            a = pod_addr(i)
            if _port_in_use(a, PG_PORT):
                raise FixtureError(
                    "%s:%d is in use by a process this fixture did not start;"
                    " stop it first: %s" % (a, PG_PORT, _who_listens(a, PG_PORT)))

    # ---- pods -------------------------------------------------------------

    @property
    def addrs(self):
        return [p.addr for p in self.pods]

    def pod(self, i):
        return self.pods[i]

    @property
    def primary(self):
        """Index of the first pod not in recovery (replication set), else 0."""
        for p in self.pods:
            if not p.standby:
                return p.index
        raise FixtureError("no primary")

    @property
    def standbys(self):
        return [p.index for p in self.pods if p.standby]

    def _new_pod(self, index, standby=False):
        pod = Pod(self.run_dir, index, standby)
        os.makedirs(pod.sockdir, exist_ok=True)
        for d in (pod.dir, pod.sockdir):
            os.chmod(d, 0o755)
            _chown_postgres(d)
        self.pods.append(pod)
        return pod

    def _conf_lines(self, pod):
        return [
            "# pgfleet test fixture",
            "listen_addresses = '%s'" % pod.addr,
            "port = %d" % PG_PORT,
            "unix_socket_directories = '%s'" % pod.sockdir,
            "cluster_name = '%s'" % pod.name,
            "max_connections = 200",
            "shared_buffers = 32MB",
            "fsync = off",
            "synchronous_commit = off",
            "full_page_writes = off",
            "wal_level = replica",
            "max_wal_senders = 20",
            "wal_keep_size = 256MB",
            "hot_standby = on",
            "wal_receiver_status_interval = 1s",
            "wal_retrieve_retry_interval = 1s",
            "log_line_prefix = '%m [%p] %q%u@%d '",
            "log_connections = on",
            "log_disconnections = on",
            "password_encryption = 'scram-sha-256'",
        ]

    def _append_conf(self, pod, lines, fname="postgresql.conf"):
        path = os.path.join(pod.datadir, fname)
        with open(path, "a") as f:
            f.write("\n" + "\n".join(lines) + "\n")

    def _write_hba(self, pod):
        path = os.path.join(pod.datadir, "pg_hba.conf")
        with open(path, "w") as f:
            f.write(
                "# pgfleet test fixture\n"
                "local   all          all                  scram-sha-256\n"
                "host    all          all   127.0.0.0/8    scram-sha-256\n"
                "host    all          all   ::1/128        scram-sha-256\n"
                "host    replication  all   127.0.0.0/8    scram-sha-256\n")
        _chown_postgres(path)

    def _init_primary_like(self, pods):
        """initdb + configure + start + create app role/db, in parallel."""
        procs = []
        for pod in pods:
            argv = _as_postgres([
                os.path.join(PG_BIN, "initdb"), "-D", pod.datadir,
                "-U", SUPERUSER, "-A", "scram-sha-256",
                "--pwfile=" + self._pwfile, "-E", "UTF8", "--locale=C",
                "--no-sync", "--no-instructions"])
            log = open(os.path.join(pod.dir, "initdb.log"), "w")
            procs.append((pod, log, subprocess.Popen(
                argv, env=_clean_env(), cwd=self.run_dir, stdout=log,
                stderr=subprocess.STDOUT)))
        for pod, log, p in procs:
            rc = p.wait(timeout=120)
            log.close()
            if rc != 0:
                with open(log.name) as f:
                    raise FixtureError("initdb for %s failed:\n%s"
                                       % (pod.name, f.read()[-3000:]))
        for pod in pods:
            self._append_conf(pod, self._conf_lines(pod))
            self._write_hba(pod)
            self._pg_ctl_start(pod)
        for pod in pods:
            self.psql(pod.index, "CREATE ROLE %s LOGIN PASSWORD %s"
                      % (APP_USER, _sql_literal(APP_PASSWORD)),
                      dbname="postgres")
            self.psql(pod.index, "CREATE DATABASE %s OWNER %s"
                      % (APP_DB, APP_USER), dbname="postgres")

    def _basebackup(self, standbys, primary):
        env = _clean_env({"PGPASSWORD": SUPERUSER_PASSWORD})
        procs = []
        for pod in standbys:
            argv = _as_postgres([
                os.path.join(PG_BIN, "pg_basebackup"), "-h", primary.addr,
                "-p", str(PG_PORT), "-U", SUPERUSER, "-D", pod.datadir,
                "-R", "-X", "stream", "-c", "fast", "--no-sync"])
            log = open(os.path.join(pod.dir, "basebackup.log"), "w")
            procs.append((pod, log, subprocess.Popen(
                argv, env=env, cwd=self.run_dir, stdout=log,
                stderr=subprocess.STDOUT)))
        for pod, log, p in procs:
            rc = p.wait(timeout=180)
            log.close()
            if rc != 0:
                with open(log.name) as f:
                    raise FixtureError("pg_basebackup for %s failed:\n%s"
                                       % (pod.name, f.read()[-3000:]))
        for pod in standbys:
            self._append_conf(pod, self._conf_lines(pod))
            # postgresql.auto.conf is read last: its primary_conninfo (from
            # -R) is the one to override, with our application_name.
            self._append_conf(pod, [
                "primary_conninfo = 'host=%s port=%d user=%s password=%s "
                "application_name=%s'" % (primary.addr, PG_PORT, SUPERUSER,
                                          SUPERUSER_PASSWORD, pod.name)],
                fname="postgresql.auto.conf")
            self._write_hba(pod)
            self._pg_ctl_start(pod)

    def _read_postmaster_pid(self, pod):
        try:
            with open(os.path.join(pod.datadir, "postmaster.pid")) as f:
                pid = int(f.readline())
        except (OSError, ValueError):
            return None, None
        st = proc_start_time(pid)
        return (pid, st) if st is not None else (None, None)

    def _pg_ctl_start(self, pod):
        self._remove_stale_pidfile(pod)
        _run(_as_postgres([os.path.join(PG_BIN, "pg_ctl"), "-D", pod.datadir,
                           "-l", pod.logfile, "-w", "-t", "60", "start"]),
             cwd=self.run_dir, timeout=90, check=False)
        pid, st = self._read_postmaster_pid(pod)
        if pid is None:
            tail = ""
            with contextlib.suppress(OSError):
                with open(pod.logfile) as f:
                    tail = f.read()[-3000:]
            raise FixtureError("%s (%s) did not start:\n%s"
                               % (pod.name, pod.addr, tail))
        pod.pid = pid
        pod.start_time = self.state.record_pid(pid, "postgres", pod.name)
        pod.hung_pids = []

    def _remove_stale_pidfile(self, pod):
        # After a SIGKILL the postmaster leaves postmaster.pid behind, and its
        # zombie would make the next postmaster think it still runs.
        path = os.path.join(pod.datadir, "postmaster.pid")
        if os.path.exists(path) and self._read_postmaster_pid(pod)[0] is None:
            os.unlink(path)

    def _kill_pod(self, pod):
        if pod.pid is not None:
            stop_pid(pod.pid, pod.start_time, "postgres")
            self.state.forget_pid(pod.pid)
        pod.pid = None
        pod.hung_pids = []

    def stop(self, i=None, mode="fast", timeout=60):
        """stop(): stop the whole service (= close()).  stop(i, mode): stop pod i like
        `pg_ctl -m mode stop` (smart|fast|immediate), by signal to its
        postmaster pid; mode='kill' SIGKILLs the postmaster and its children
        (a crashed pod)."""
        if i is None:
            return self.close()
        pod = self.pods[i]
        if not pod.running:
            return
        self.dirty = True
        pid, start = pod.pid, pod.start_time
        kids = children_of(pid)
        if mode == "kill":
            for p in [pid] + kids:
                _signal(p, signal.SIGKILL)
            wait_dead(pid, start, 10)
        else:
            sig = {"smart": signal.SIGTERM, "fast": signal.SIGINT,
                   "immediate": signal.SIGQUIT}[mode]
            _signal(pid, sig)
            for p in [pid] + kids:  # a hung pod must wake up to obey
                _signal(p, signal.SIGCONT)
            if not wait_dead(pid, start, timeout):
                raise FixtureError("%s did not stop (%s) within %ss"
                                   % (pod.name, mode, timeout))
        # Children of an immediately stopped postmaster may outlive it a bit.
        for p in kids:
            wait_dead(p, None, 5)
        _reap(pid)
        self.state.forget_pid(pid)
        pod.pid = None
        pod.hung_pids = []

    def start_pod(self, i):
        """Start pod i again (pg_ctl start -w)."""
        pod = self.pods[i]
        if pod.running:
            return
        self.dirty = True
        self._pg_ctl_start(pod)

    def hang(self, i):
        """SIGSTOP the postmaster of pod i and all its children: the kernel
        still accepts TCP connections, nothing answers."""
        pod = self.pods[i]
        if not pod.running:
            raise FixtureError("%s is not running" % pod.name)
        if pod.hung:
            return
        self.dirty = True
        _signal(pod.pid, signal.SIGSTOP)  # first, so it forks no more
        kids = children_of(pod.pid)
        for p in kids:
            _signal(p, signal.SIGSTOP)
        pod.hung_pids = [pod.pid] + kids

    def unhang(self, i):
        pod = self.pods[i]
        for p in reversed(pod.hung_pids):
            _signal(p, signal.SIGCONT)
        if pod.pid is not None:
            for p in [pod.pid] + children_of(pod.pid):
                _signal(p, signal.SIGCONT)
        pod.hung_pids = []

    def promote(self, i, timeout=60):
        pod = self.pods[i]
        if not pod.standby:
            raise FixtureError("%s is not a standby" % pod.name)
        self.dirty = True
        self.broken = True
        out = self.psql(i, "SELECT pg_promote(true, %d)" % timeout,
                        dbname="postgres")
        if out != "t":
            raise FixtureError("pg_promote on %s returned %r" % (pod.name, out))
        pod.standby = False

    def add_pod(self, dns=True):
        """A new pod on the next address (a new standby of the current
        primary for the replication set); added to DNS unless dns=False.
        Returns its index."""
        i = len(self.pods)
        self._check_free([i])
        self.dirty = True
        if self.replication:
            pod = self._new_pod(i, standby=True)
            self._basebackup([pod], self.pods[self.primary])
            self.wait_streaming()
        else:
            pod = self._new_pod(i)
            self._init_primary_like([pod])
            if self.pgbench_scale:
                self._pgbench_init([pod], self.pgbench_scale)
        self.write_state_json()
        if dns:
            self.set_records(self.records + [pod.addr])
        return i

    def remove_pod(self, dns=True):
        """Scale down: drop the last pod from DNS, stop it, delete it."""
        if len(self.pods) <= 1:
            raise FixtureError("cannot remove the last pod")
        self.dirty = True
        pod = self.pods[-1]
        if dns and pod.addr in self.records:
            self.set_records([a for a in self.records if a != pod.addr])
        self._kill_pod(pod)
        shutil.rmtree(pod.dir, ignore_errors=True)
        self.pods.pop()
        self.write_state_json()

    def restore(self):
        """Undo what a test did: wake hung pods, start stopped ones, drop
        added pods, restart DNS, restore the records.  A promoted set cannot
        be restored in place: it is rebuilt (new data dirs)."""
        if not self.started:
            return
        reap_orphans()
        if self.broken:
            _log("rebuilding %r after a promotion" % self)
            self.close()
            self._start_service()
            return
        if not self.dirty and self.dns_running and all(
                p.running and not p.hung for p in self.pods):
            return
        self.dns_unhang()
        if not self.dns_running:
            self.dns_start()
        while len(self.pods) > self.baseline_pods:
            self.remove_pod(dns=False)
        for pod in self.pods:
            if pod.hung:
                self.unhang(pod.index)
            if not pod.running:
                self._pg_ctl_start(pod)
        if self.replication:
            for i in self.standbys:  # undo pause_replay()
                if self.psql(i, "SELECT pg_is_wal_replay_paused()",
                             dbname="postgres") == "t":
                    self.resume_replay(i)
            self.wait_streaming()
        baseline = [p.addr for p in self.pods]
        self.extra_names = {}
        if sorted(self.records) != sorted(baseline) or self.dirty:
            self.set_records(baseline)
        self.dirty = False

    # ---- queries ------------------------------------------------------------

    def dsn(self, i, dbname=APP_DB, user=APP_USER, password=APP_PASSWORD,
            **params):
        """libpq connection string straight to pod i."""
        kv = {"host": self.pods[i].addr, "port": PG_PORT, "dbname": dbname,
              "user": user, "password": password, "connect_timeout": 10}
        kv.update(params)
        return " ".join("%s=%s" % (k, v) for k, v in kv.items())

    def connect(self, i, dbname=APP_DB, user=APP_USER, password=APP_PASSWORD,
                autocommit=True, **params):
        import psycopg
        return psycopg.connect(self.dsn(i, dbname, user, password, **params),
                               autocommit=autocommit)

    def psql(self, i, sql, dbname=APP_DB, user=SUPERUSER, password=None,
             timeout=60):
        """Run sql with psql on pod i (as the superuser by default); returns
        stdout, unaligned and tuples-only, stripped."""
        if password is None:
            password = SUPERUSER_PASSWORD if user == SUPERUSER else APP_PASSWORD
        env = _clean_env({"PGPASSWORD": password, "PGCONNECT_TIMEOUT": "10"})
        p = _run([os.path.join(PG_BIN, "psql"), "-X", "-q", "-A", "-t",
                  "-v", "ON_ERROR_STOP=1", "-h", self.pods[i].addr,
                  "-p", str(PG_PORT), "-U", user, "-d", dbname, "-c", sql],
                 env=env, timeout=timeout)
        return p.stdout.strip()

    def is_in_recovery(self, i):
        return self.psql(i, "SELECT pg_is_in_recovery()",
                         dbname="postgres") == "t"

    def xact_commit(self, i, dbname=APP_DB):
        """pg_stat_database.xact_commit of dbname on pod i, read directly
        (over the `postgres` database, so the read itself is not counted).
        Backends flush these counters up to ~1 s after a transaction ends."""
        out = self.psql(i, "SELECT xact_commit FROM pg_stat_database "
                           "WHERE datname = %s" % _sql_literal(dbname),
                        dbname="postgres")
        return int(out or 0)

    def xact_commits(self, dbname=APP_DB):
        """{addr: xact_commit} for every running pod."""
        return {p.addr: self.xact_commit(p.index, dbname)
                for p in self.pods if p.running and not p.hung}

    def pgbench_init(self, scale=1):
        """pgbench -i -s scale of `app` on every pod (primary only for the
        replication set, then wait for the standbys to replay it)."""
        if self.replication:
            self._pgbench_init([self.pods[self.primary]], scale)
            self.wait_replayed()
        else:
            self._pgbench_init(self.pods, scale)
        self.pgbench_scale = scale

    def _pgbench_init(self, pods, scale):
        env = _clean_env({"PGPASSWORD": APP_PASSWORD})
        procs = [(pod, subprocess.Popen(
            [os.path.join(PG_BIN, "pgbench"), "-i", "-q", "-s", str(scale),
             "-h", pod.addr, "-p", str(PG_PORT), "-U", APP_USER, APP_DB],
            env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
            text=True)) for pod in pods]
        for pod, p in procs:
            out, _ = p.communicate(timeout=300)
            if p.returncode != 0:
                raise FixtureError("pgbench -i on %s failed:\n%s"
                                   % (pod.name, out[-3000:]))

    def pause_replay(self, i):
        """Stop WAL replay on standby i, so it lags behind the primary."""
        self.dirty = True
        self.psql(i, "SELECT pg_wal_replay_pause()", dbname="postgres")

    def resume_replay(self, i):
        self.psql(i, "SELECT pg_wal_replay_resume()", dbname="postgres")

    def wait_streaming(self, timeout=60):
        """Wait until every running standby streams from the primary."""
        if not self.replication:
            return
        primary = self.primary
        want = {p.name for p in self.pods
                if p.standby and p.running and not p.hung}
        deadline = time.monotonic() + timeout
        while True:
            have = set()
            if self.pods[primary].running:
                out = self.psql(primary, "SELECT application_name FROM "
                                "pg_stat_replication WHERE state = 'streaming'",
                                dbname="postgres")
                have = set(out.split())
            if want <= have:
                return
            if time.monotonic() > deadline:
                raise FixtureError("standbys %s not streaming (have %s)"
                                   % (sorted(want - have), sorted(have)))
            time.sleep(0.1)

    def wait_replayed(self, timeout=60):
        """Wait until every running standby has replayed the primary's
        current WAL position."""
        if not self.replication:
            return
        # The pods commit asynchronously: the last commits may still be in
        # the primary's WAL buffers, past pg_current_wal_lsn().  A commit
        # with synchronous_commit on flushes everything before it, so the
        # position read after it covers every earlier commit.
        env = _clean_env({"PGPASSWORD": SUPERUSER_PASSWORD, "PGCONNECT_TIMEOUT": "10"})
        p = _run([os.path.join(PG_BIN, "psql"), "-X", "-q", "-A", "-t",
                  "-v", "ON_ERROR_STOP=1", "-h", self.pods[self.primary].addr,
                  "-p", str(PG_PORT), "-U", SUPERUSER, "-d", "postgres", "-f", "-"],
                 env=env, timeout=60,
                 input="SET synchronous_commit = on;\nSELECT txid_current();\n"
                       "SELECT pg_current_wal_lsn();\n")
        lsn = p.stdout.split()[-1]
        deadline = time.monotonic() + timeout
        for i in self.standbys:
            if not self.pods[i].running or self.pods[i].hung:
                continue
            while self.psql(i, "SELECT pg_last_wal_replay_lsn() >= '%s'"
                            % lsn, dbname="postgres") != "t":
                if time.monotonic() > deadline:
                    raise FixtureError("%s did not replay up to %s"
                                       % (self.pods[i].name, lsn))
                time.sleep(0.05)

    # ---- DNS ----------------------------------------------------------------

    @property
    def hosts_file(self):
        return os.path.join(self.run_dir, "hosts")

    def _write_hosts(self, ips):
        tmp = self.hosts_file + ".tmp"
        with open(tmp, "w") as f:
            for ip in ips:
                f.write("%s %s\n" % (ip, self.name))
            for name, addrs in self.extra_names.items():
                for ip in addrs:
                    f.write("%s %s\n" % (ip, name))
        os.chmod(tmp, 0o644)  # dnsmasq re-reads it as `nobody` on SIGHUP
        os.replace(tmp, self.hosts_file)

    @property
    def dns_running(self):
        return self.dns_pid is not None and pid_alive(self.dns_pid,
                                                      self.dns_start_time)

    def dns_start(self, timeout=10):
        """Start dnsmasq on DNS_ADDR:53 (as TESTING.md says, plus
        --local=/cluster.local/ so that, like CoreDNS, a missing name is
        NXDOMAIN and an AAAA query for a known name is NOERROR/no data,
        instead of REFUSED for want of an upstream)."""
        if self.dns_running:
            return
        self.dirty = True
        if _port_in_use(DNS_ADDR, DNS_PORT, socket.SOCK_DGRAM):
            raise FixtureError("%s:%d/udp is in use by a process this fixture"
                               " did not start: %s" % (
                                   DNS_ADDR, DNS_PORT,
                                   _who_listens(DNS_ADDR, DNS_PORT)))
        if not os.path.exists(self.hosts_file):
            self._write_hosts(self.records)
        pidfile = os.path.join(self.run_dir, "dnsmasq.pid")
        with contextlib.suppress(FileNotFoundError):
            os.unlink(pidfile)
        # dnsmasq binds before it forks, so a failure to listen is its exit
        # status; the daemon writes the pid file before the parent exits.
        _run(["dnsmasq", "--port=%d" % DNS_PORT, "--listen-address=" + DNS_ADDR,
              "--bind-interfaces", "--no-resolv", "--no-hosts",
              "--addn-hosts=" + self.hosts_file, "--local-ttl=1",
              "--local=/cluster.local/", "--pid-file=" + pidfile],
             timeout=30)
        deadline = time.monotonic() + timeout
        pid = None
        while pid is None:
            with contextlib.suppress(OSError, ValueError):
                with open(pidfile) as f:
                    pid = int(f.read().strip())
            if pid is None:
                if time.monotonic() > deadline:
                    raise FixtureError("dnsmasq wrote no pid file")
                time.sleep(0.02)
        self.dns_pid = pid
        self.dns_start_time = self.state.record_pid(pid, "dnsmasq", DNS_ADDR)
        self.dns_hung = False
        self._wait_records(self.records, timeout)

    def dns_stop(self, _quiet=False):
        """Stop dnsmasq: queries to DNS_ADDR get ICMP port unreachable."""
        if self.dns_pid is None:
            return
        if not _quiet:
            self.dirty = True
        stop_pid(self.dns_pid, self.dns_start_time, "dnsmasq", 10)
        self.state.forget_pid(self.dns_pid)
        self.dns_pid = None
        self.dns_hung = False

    def dns_hang(self):
        """SIGSTOP dnsmasq: queries time out instead of being refused."""
        if not self.dns_running:
            raise FixtureError("dnsmasq is not running")
        self.dirty = True
        _signal(self.dns_pid, signal.SIGSTOP)
        self.dns_hung = True

    def dns_unhang(self):
        if self.dns_pid is not None and self.dns_hung:
            _signal(self.dns_pid, signal.SIGCONT)
        self.dns_hung = False

    def resolve(self, timeout=1.0):
        """Sorted A records of the service as DNS answers them now."""
        return resolve(self.name, timeout=timeout)

    def set_records(self, ips, timeout=10):
        """Make DNS answer exactly `ips` (any addresses, in any order; [] for
        NXDOMAIN), then wait until it does (when dnsmasq runs)."""
        ips = list(dict.fromkeys(ips))
        self.dirty = True
        self.records = ips
        self._write_hosts(ips)
        if self.dns_running and not self.dns_hung:
            _signal(self.dns_pid, signal.SIGHUP)
            self._wait_records(ips, timeout)

    def set_name(self, name, ips, timeout=10):
        """Make DNS also answer `name` with exactly `ips` ([] drops it), e.g.
        the headless Service of pgfleet peers; restore() forgets it."""
        self.dirty = True
        if ips:
            self.extra_names[name] = list(dict.fromkeys(ips))
        else:
            self.extra_names.pop(name, None)
        self._write_hosts(self.records)
        if self.dns_running and not self.dns_hung:
            _signal(self.dns_pid, signal.SIGHUP)
            want = sorted(ips, key=_addr_key)
            if not wait_until(lambda: sorted(resolve(name, timeout=0.5),
                                             key=_addr_key) == want, timeout, step=0.02):
                raise FixtureError("DNS does not answer %s with %s" % (name, want))

    def _wait_records(self, ips, timeout):
        want = sorted(ips, key=_addr_key)
        deadline = time.monotonic() + timeout
        last = None
        while True:
            try:
                last = sorted(self.resolve(timeout=0.5), key=_addr_key)
                if last == want:
                    return
            except DnsError as e:
                last = str(e)
            if time.monotonic() > deadline:
                raise FixtureError("DNS answers %s, want %s" % (last, want))
            time.sleep(0.02)


# --------------------------------------------------------------------------
# The proxy under test.

def _ini_value(v):
    if isinstance(v, bool):
        return "1" if v else "0"
    if isinstance(v, dict):
        return " ".join("%s=%s" % (k, _ini_value(x)) for k, x in v.items())
    return str(v)


class Pgfleet:
    """One pgfleet process on 127.0.0.1:<free port>.

    settings: [pgfleet] keys (None as a value drops a default key);
    databases: [databases] entries, name -> connection string or dict
      (default: app = host=SVC_NAME port=5432 dbname=app);
    users: {user: password} written to an auth_file (default: app/app-secret
      with a config file, none without; pass {} for none);
    env: extra environment (e.g. DB_HOST...);
    config_file=False: no ini file at all, everything through the
      environment (settings become PGFLEET_<KEY> variables).
    The binary is $PGFLEET_BIN, else <repo>/build/pgfleet.  Its stdout and
    stderr go to .log_path."""

    def __init__(self, settings=None, databases=None, users=None, env=None,
                 config_file=True, args=(), binary=None,
                 state_dir=DEFAULT_STATE_DIR, host="127.0.0.1"):
        self.settings = dict(settings or {})
        self.databases = databases
        if users is None:  # env-only mode: DB_USER/DB_PASSWORD log in
            users = {APP_USER: APP_PASSWORD} if config_file else {}
        self.users = users
        self.extra_env = dict(env or {})
        self.config_file = config_file
        self.args = list(args)
        self.binary = (binary or os.environ.get("PGFLEET_BIN")
                       or os.path.join(REPO, "build", "pgfleet"))
        self.state = StateDir(state_dir)
        self.host = host  # listen_addr and http_listen's address
        self.port = None
        self.http_port = None
        self.proc = None
        self.returncode = None
        self.start_time = None
        self.workdir = None
        self.ini_path = None
        self.auth_file = None
        self.log_path = None
        self.expected_exit = 0   # what the pytest fixture checks at teardown
        self.workers = 1         # event loops (workers = N), known once started

    def __repr__(self):
        return "<Pgfleet pid=%s port=%s>" % (self.pid, self.port)

    def __enter__(self):
        if self.proc is None:
            self.start()
        return self

    def __exit__(self, *exc):
        self.stop()

    @property
    def pid(self):
        return self.proc.pid if self.proc else None

    @property
    def running(self):
        return self.proc is not None and self.proc.poll() is None

    def _prepare(self):
        self.workdir = tempfile.mkdtemp(prefix="pgfleet-", dir=self.state.path)
        self.state.record_dir(self.workdir)
        self.log_path = os.path.join(self.workdir, "pgfleet.log")
        self.port = int(self.settings.get("listen_port") or free_port())
        self.http_port = free_port()
        base = {"listen_addr": self.host, "listen_port": self.port,
                "http_listen": "%s:%d" % (self.host, self.http_port),
                "dns_servers": DNS_ADDR}
        if self.users:
            self.auth_file = os.path.join(self.workdir, "userlist.txt")
            with open(self.auth_file, "w") as f:
                for u, pw in self.users.items():
                    f.write('"%s" "%s"\n' % (u.replace('"', '""'),
                                             pw.replace('"', '""')))
            os.chmod(self.auth_file, 0o600)
            base["auth_file"] = self.auth_file
        # PGFLEET_FIXTURE_WORKERS=N runs every pgfleet with workers = N
        # (the whole suite, threaded), unless the test sets workers itself.
        fixture_workers = os.environ.get("PGFLEET_FIXTURE_WORKERS")
        if fixture_workers and "workers" not in self.settings:
            base["workers"] = int(fixture_workers)
        settings = dict(base)
        settings.update(self.settings)
        settings = {k: v for k, v in settings.items() if v is not None}
        self.workers = int(settings.get("workers", 1))
        if "http_listen" in settings and settings["http_listen"] in ("", None):
            self.http_port = None
        env = {k: v for k, v in os.environ.items()
               if not k.startswith("PGFLEET_") and k not in _PROXY_ENV_NAMES}
        if self.config_file:
            dbs = self.databases
            if dbs is None:
                dbs = {APP_DB: "host=%s port=%d dbname=%s"
                       % (SVC_NAME, PG_PORT, APP_DB)}
            self.ini_path = os.path.join(self.workdir, "pgfleet.ini")
            with open(self.ini_path, "w") as f:
                f.write("[databases]\n")
                for name, val in dbs.items():
                    f.write("%s = %s\n" % (name, _ini_value(val)))
                f.write("\n[pgfleet]\n")
                for k, v in settings.items():
                    f.write("%s = %s\n" % (k, _ini_value(v)))
        else:
            if self.databases:
                raise FixtureError("databases need a config file; use DB_* "
                                   "in env with config_file=False")
            for k, v in settings.items():
                env["PGFLEET_" + k.upper()] = _ini_value(v)
        env.update({k: str(v) for k, v in self.extra_env.items()})
        return env

    def start(self, timeout=10.0):
        if not os.access(self.binary, os.X_OK):
            raise FixtureError("pgfleet binary %s not found (set PGFLEET_BIN "
                               "or build with meson)" % self.binary)
        env = self._prepare()
        argv = [self.binary] + self.args
        if self.ini_path:
            argv.append(self.ini_path)
        log_start = len(self.log_text())  # this start's lines come after
        log = open(self.log_path, "ab")
        self.proc = subprocess.Popen(argv, env=env, cwd=self.workdir,
                                     stdin=subprocess.DEVNULL, stdout=log,
                                     stderr=subprocess.STDOUT,
                                     start_new_session=True)
        log.close()
        self.returncode = None
        _LIVE.append(self)
        try:
            self.start_time = self.state.record_pid(self.proc.pid, "pgfleet",
                                                    str(self.port))
        except FixtureError:
            self.start_time = None
        if not wait_port(self.host, self.port, timeout, self.proc):
            rc = self.proc.poll()
            if rc is None:
                self.stop()
                why = "is not listening on %s:%d after %ss" % (
                    self.host, self.port, timeout)
            else:
                self.stop()
                why = "exited with status %d" % rc
            raise FixtureError("pgfleet %s; log tail:\n%s"
                               % (why, self.log_tail()))
        if self.workers > 1:
            self._wait_every_worker_listening(log_start, timeout)
        return self

    def _wait_every_worker_listening(self, log_start, timeout):
        """The port answers as soon as one worker listens; the others open
        theirs (and set up their loops) a moment later. A test that changes
        the machine around start (a sysctl, say) must not undo it before the
        last worker has looked, so wait for each worker's line."""
        addr = "%s:%d" % (self.host, self.port)

        def every_worker_or_exited():
            if self.proc.poll() is not None:
                return True
            lines = self.log_text()[log_start:].splitlines()
            return sum(1 for l in lines if addr in l and (
                "msg=listening " in l or '"msg":"listening"' in l)) >= self.workers
        wait_until(every_worker_or_exited, timeout, step=0.01)

    def stop(self, timeout=10.0, sig=signal.SIGTERM):
        """SIGTERM (graceful), SIGKILL after timeout; returns the exit code
        (negative: killed by that signal)."""
        if self in _LIVE:
            _LIVE.remove(self)
        if self.proc is None:
            return self.returncode
        if self.proc.poll() is None:
            _signal(self.proc.pid, signal.SIGCONT)
            _signal(self.proc.pid, sig)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                _log("pgfleet pid %d did not exit in %ss; SIGKILL"
                     % (self.proc.pid, timeout))
                self.proc.kill()
                self.proc.wait()
        if self.returncode is None:
            self.returncode = self.proc.returncode
            self.state.forget_pid(self.proc.pid)
        return self.returncode

    def kill(self, sig=signal.SIGKILL):
        _signal(self.proc.pid, sig)

    def wait(self, timeout=None):
        """Wait for the process to exit by itself; returns the exit code."""
        rc = self.proc.wait(timeout)
        if self.returncode is None:
            self.returncode = rc
            self.state.forget_pid(self.proc.pid)
            if self in _LIVE:
                _LIVE.remove(self)
        return rc

    def reload(self):
        _signal(self.proc.pid, signal.SIGHUP)

    def cleanup(self):
        """stop() and delete the work dir (ini, auth file, log)."""
        self.stop()
        if self.workdir and os.environ.get("PGFLEET_FIXTURE_KEEP") != "1":
            shutil.rmtree(self.workdir, ignore_errors=True)
            self.state.forget_dir(self.workdir)

    # ---- looking at it ------------------------------------------------------

    def log_text(self):
        try:
            with open(self.log_path, errors="replace") as f:
                return f.read()
        except (OSError, TypeError):
            return ""

    def log_tail(self, lines=40):
        return "\n".join(self.log_text().splitlines()[-lines:])

    def wait_all_up(self, addrs, db="app", timeout=10.0, workers=None):
        """Every replica at addrs has passed its first health check for db
        in every worker (each event loop checks its own replicas and logs
        its own "replica up" line), or in `workers` of them where only those
        have the pool (a wildcard entry's pool is made at a worker's first
        login for it); False if not within timeout."""
        return self._wait_logged(['msg="replica up" db=%s addr=%s:%d ' % (db, a, PG_PORT)
                                  for a in addrs], timeout, workers)

    def wait_every_worker(self, text, timeout=10.0):
        """`text` logged at least once per worker: each event loop keeps its
        own view of the replicas (health, lag, DNS) and logs its changes, so
        a test that routes next must wait for all of them.  False if not
        within timeout."""
        return self._wait_logged([text], timeout)

    def _wait_logged(self, texts, timeout, workers=None):
        """Each of texts logged at least once per worker (or `workers` times)."""
        need = self.workers if workers is None else workers

        def logged():
            log = self.log_text()
            return all(log.count(t) >= need for t in texts)
        return wait_until(logged, timeout)

    def wait_log(self, pattern, timeout=10.0):
        """Wait until regex `pattern` matches the log; returns the match."""
        rx = re.compile(pattern)
        deadline = time.monotonic() + timeout
        while True:
            m = rx.search(self.log_text())
            if m:
                return m
            if time.monotonic() > deadline:
                raise FixtureError("%r not in pgfleet log; tail:\n%s"
                                   % (pattern, self.log_tail()))
            time.sleep(0.05)

    def sanitizer_reports(self):
        """Lines of ASan/UBSan/LSan reports in the log."""
        return [l for l in self.log_text().splitlines()
                if _SANITIZER_PATTERNS.search(l)]

    def dsn(self, user=APP_USER, password=APP_PASSWORD, dbname=APP_DB,
            **params):
        kv = {"host": self.host, "port": self.port, "dbname": dbname,
              "user": user}
        if password is not None:
            kv["password"] = password
        kv.setdefault("connect_timeout", 10)
        kv.update(params)
        return " ".join("%s=%s" % (k, v) for k, v in kv.items())

    def connect(self, user=APP_USER, password=APP_PASSWORD, dbname=APP_DB,
                autocommit=True, **params):
        import psycopg
        return psycopg.connect(self.dsn(user, password, dbname, **params),
                               autocommit=autocommit)

    def worker_of(self, conn):
        """Which worker (workers = N) serves conn: pgfleet puts it in the low
        bits of the BackendKeyData pid.  Always 0 with one worker."""
        return conn.info.backend_pid & 63 if self.workers > 1 else 0

    def connect_on_worker(self, worker, tries=64, **kw):
        """A connection the kernel happened to give to `worker` (the others
        it gave elsewhere are closed)."""
        for _ in range(tries):
            conn = self.connect(**kw)
            if self.worker_of(conn) == worker:
                return conn
            conn.close()
        raise FixtureError("no connection landed on worker %d" % worker)

    def http_get(self, path="/metrics", timeout=5.0):
        """(status, body) from the HTTP endpoint."""
        if not self.http_port:
            raise FixtureError("http_listen is off")
        url = "http://%s:%d%s" % (self.host, self.http_port, path)
        try:
            with urllib.request.urlopen(url, timeout=timeout) as r:
                return r.status, r.read().decode(errors="replace")
        except urllib.error.HTTPError as e:
            return e.code, e.read().decode(errors="replace")


class PgfleetGroup:
    """Starts fx.Pgfleet instances and checks them when it closes."""

    def __init__(self):
        self.instances = []

    def start(self, settings=None, databases=None, users=None, env=None,
              config_file=True, args=(), timeout=10.0, **kw):
        p = Pgfleet(settings=settings, databases=databases, users=users,
                       env=env, config_file=config_file, args=args, **kw)
        self.instances.append(p)
        p.start(timeout=timeout)
        return p

    __call__ = start

    def close(self, show_logs=False):
        """Stop all; return a list of problems (bad exit, sanitizer)."""
        problems = []
        for p in self.instances:
            was_running = p.running
            rc = p.stop()
            bad = []
            if was_running and p.expected_exit is not None \
                    and rc != p.expected_exit:
                bad.append("pgfleet (port %s) exited with %s on SIGTERM, "
                           "expected %s" % (p.port, rc, p.expected_exit))
            reports = p.sanitizer_reports()
            if reports:
                bad.append("sanitizer reports in pgfleet (port %s) log:\n  %s"
                           % (p.port, "\n  ".join(reports[:20])))
            if bad or show_logs:
                print("\n---- pgfleet port %s log (%s) tail ----\n%s"
                      % (p.port, p.log_path, p.log_tail(80)))
            problems += bad
            p.cleanup()
        self.instances = []
        return problems


# --------------------------------------------------------------------------
# CLI

def _cli(argv=None):
    ap = argparse.ArgumentParser(prog="fixture.py",
                                 description="pgfleet's local headless service")
    ap.add_argument("--state-dir", default=DEFAULT_STATE_DIR)
    sub = ap.add_subparsers(dest="cmd", required=True)
    up = sub.add_parser("up", help="start pods + dnsmasq and leave them up")
    up.add_argument("--pods", type=int, default=3)
    up.add_argument("--replication", action="store_true")
    up.add_argument("--pgbench-scale", type=int, default=0,
                    help="also pgbench -i -s N the app database")
    sub.add_parser("down", help="stop everything `up` started, by pid")
    sub.add_parser("status", help="show recorded processes")
    xa = sub.add_parser("xacts", help="print 'addr xact_commit' per pod")
    xa.add_argument("--dbname", default=APP_DB)
    pi = sub.add_parser("pgbench-init", help="pgbench -i the app database")
    pi.add_argument("--scale", type=int, default=1)
    # argparse wants options before the subcommand; accept them after too.
    argv = list(sys.argv[1:] if argv is None else argv)
    if "--state-dir" in argv[1:]:
        k = argv.index("--state-dir")
        argv = argv[k:k + 2] + argv[:k] + argv[k + 2:]
    a = ap.parse_args(argv)
    state = StateDir(a.state_dir)

    if a.cmd == "up":
        svc = HeadlessService(a.pods, a.replication, a.state_dir)
        svc.start()
        if a.pgbench_scale:
            svc.pgbench_init(a.pgbench_scale)
        svc.detach()
        print("service %s -> %s (DNS %s:%d)" % (
            svc.name, " ".join(svc.addrs), DNS_ADDR, DNS_PORT))
        for p in svc.pods:
            print("  %s %s:%d %s pid %d data %s" % (
                p.name, p.addr, PG_PORT,
                "standby" if p.standby else "primary", p.pid, p.datadir))
        print("users: %s/%s (db %s), %s/%s; stop with: %s down --state-dir %s"
              % (APP_USER, APP_PASSWORD, APP_DB, SUPERUSER,
                 SUPERUSER_PASSWORD, sys.argv[0], a.state_dir))
    elif a.cmd == "down":
        stopped = state.purge()
        with contextlib.suppress(FileNotFoundError):
            os.unlink(os.path.join(state.path, "service.json"))
        print("stopped: %s" % (", ".join(stopped) or "nothing"))
    elif a.cmd == "status":
        for pid, start, kind, label in state.pid_entries():
            print("%-8s %-10s pid %-7d %s" % (
                kind, label, pid,
                "alive" if pid_alive(pid, start) else "gone"))
    elif a.cmd == "xacts":
        svc = HeadlessService.attach(a.state_dir)
        for p in svc.pods:
            print("%s %d" % (p.addr, svc.xact_commit(p.index, a.dbname)))
    elif a.cmd == "pgbench-init":
        svc = HeadlessService.attach(a.state_dir)
        svc.pgbench_init(a.scale)
    return 0


if __name__ == "__main__":
    try:
        sys.exit(_cli())
    except FixtureError as e:
        sys.stderr.write("fixture: %s\n" % e)
        sys.exit(1)
