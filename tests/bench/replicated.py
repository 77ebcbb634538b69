"""The replicated scenario of tests/bench (issue 19): `run.sh --scenario
replicated`.

One primary and two streaming standbys (the fixture's replication set) on
the bench's network, and behind one database name:

  - pgfleet, target_session_attrs = auto (reads to the standbys, the rest
    and reads after a write that a standby has not replayed yet to the
    primary);
  - pgfleet, target_session_attrs = any (every transaction to any replica:
    the reference for auto's CPU budget, 15 %);
  - pgfleet, target_session_attrs = read-write (optional: the primary only);
  - pgpool-II (Debian pgpool2) in streaming-replication mode with load
    balancing, the peer that routes reads today;
  - PgBouncer pointed at the primary only.

Measured, the targets alternated inside each round as bench.py does:
pgbench -S (simple and -M prepared): tps, latency, the pooler's CPU seconds
per 100k transactions (pgpool-II: its main process and every child) and the
share of the transactions the standbys served (pg_stat_database deltas read
while the load runs); then a read-after-write script (INSERT, then SELECT
of that row, two transactions) for the share of those reads that a standby
served and how many did not see their row; then callgrind instructions per
transaction of pgfleet auto and any.

Imported by bench.py's main() (so `__main__` is bench.py, whole): uses its
helpers and ARGS, and sets its `svc` global.
"""

import os
import json
import signal
import tempfile
import threading
import time

import psycopg

import __main__ as b   # bench.py
fx = b.fx

FLEET_ATTRS = {"pgfleet-auto": "auto", "pgfleet-any": "any",
               "pgfleet-rw": "read-write"}
# The read-after-write runs: targets that route writes to the primary and
# may send reads elsewhere (any would send INSERTs to a standby; PgBouncer
# on the primary and read-write serve every read on the primary).
RAW_TARGETS = ("pgfleet-auto", "pgpool")

RAW_SCRIPT = """\
INSERT INTO bench_rw (client) VALUES (:client_id) RETURNING id \\gset
SELECT count(*) AS seen FROM bench_rw WHERE id = :id \\gset
\\if :seen = 0
INSERT INTO bench_rw_miss (id) VALUES (:id);
\\endif
"""


# --------------------------------------------------------------------------
# pgpool-II

class Pgpool(b.Daemon):
    """pgpool-II from Debian (pgpool2 4.3) as the postgres user, in
    streaming-replication mode over the three pods, load balancing on.

    Clients authenticate with SCRAM (pool_hba.conf); pool_passwd holds the
    app user's plaintext password, which pgpool-II needs to log in to each
    backend with SCRAM.  It forks num_init_children processes, each serving
    one client at a time with its own cached connection to every backend
    (connection_cache, max_pool = 1): num_init_children is the largest
    client count of the run, or pgbench's extra clients would never get in.
    Its CPU is the main process's and every child's (cpu_ticks)."""

    name = kind = "pgpool"

    def __init__(self, workdir, children):
        self._make_dir()
        self.pcp_port = fx.free_port(b.LISTEN)
        self._kids, self._kids_at = [], 0.0
        conf = [
            "backend_clustering_mode = 'streaming_replication'",
            "listen_addresses = '%s'" % b.LISTEN,
            "port = %d" % self.port,
            "socket_dir = '%s'" % self.dir,
            "pcp_listen_addresses = ''",
            "pcp_port = %d" % self.pcp_port,
            "pcp_socket_dir = '%s'" % self.dir,
            "wd_ipc_socket_dir = '%s'" % self.dir,
            "pid_file_name = '%s/pgpool.pid'" % self.dir,
            "logdir = '%s'" % self.dir,
            "log_destination = 'stderr'",
            "log_min_messages = warning",
            "log_connections = off",
            "log_statement = off",
            "log_per_node_statement = off",
            "enable_pool_hba = on",
            "pool_passwd = 'pool_passwd'",
            "ssl = off",
            "num_init_children = %d" % children,
            "max_pool = 1",
            "child_life_time = 0",
            "child_max_connections = 0",
            "connection_life_time = 0",
            "client_idle_limit = 0",
            "connection_cache = on",
            "load_balance_mode = on",
            # pgpool-II's defaults, written out: the load-balance node is
            # chosen per session; after a write inside an explicit
            # transaction its reads stay on the primary.
            "statement_level_load_balance = off",
            "disable_load_balance_on_write = 'transaction'",
            "sr_check_period = 10",
            "sr_check_user = '%s'" % fx.SUPERUSER,
            "sr_check_password = '%s'" % fx.SUPERUSER_PASSWORD,
            "sr_check_database = 'postgres'",
            "health_check_period = 0",
            "failover_on_backend_error = off",
            "memory_cache_enabled = off",
            "use_watchdog = off",
        ]
        for i, pod in enumerate(b.svc.pods):
            conf += ["backend_hostname%d = '%s'" % (i, pod.addr),
                     "backend_port%d = %d" % (i, fx.PG_PORT),
                     "backend_weight%d = 1" % i,
                     "backend_flag%d = 'ALLOW_TO_FAILOVER'" % i,
                     "backend_application_name%d = 'pgpool-%s'" % (i, pod.name)]
        files = {
            "pgpool.conf": "\n".join(conf) + "\n",
            "pool_hba.conf": "host all all 127.0.0.0/8 scram-sha-256\n",
            "pool_passwd": "%s:%s\n" % (fx.APP_USER, fx.APP_PASSWORD),
            "pcp.conf": "",
        }
        self._write_files(files)

    def start(self):
        argv = ["/usr/sbin/pgpool", "-n", "-D",
                "-f", os.path.join(self.dir, "pgpool.conf"),
                "-F", os.path.join(self.dir, "pcp.conf"),
                "-a", os.path.join(self.dir, "pool_hba.conf")]
        return self._spawn(argv, 30)

    def children(self):
        return fx.children_of(self.proc.pid) if self.proc else []

    def cpu_ticks(self):
        """utime + stime of the main process, of its live children, and of
        the children it reaped (cutime + cstime).  The child list is read
        again once a second (a /proc scan)."""
        now = time.monotonic()
        if now - self._kids_at > 1.0:
            self._kids, self._kids_at = self.children(), now
        st = b.proc_stat(self.proc.pid)[1]
        total = sum(int(x) for x in st[11:15])
        for pid in self._kids:
            try:
                total += b.proc_cpu_ticks(pid)
            except (OSError, ValueError, IndexError):
                pass   # exited: its ticks are in the parent's cutime now
        return total

    def stop(self):
        kids = []
        for pid in self.children():
            started = fx.proc_start_time(pid)
            if started is not None:
                kids.append((pid, started))
        rc = self._terminate(signal.SIGINT, 20)   # fast shutdown
        for pid, started in kids:   # children that outlived a killed parent
            if fx.pid_alive(pid, started):
                try:
                    os.kill(pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass
        return rc


# --------------------------------------------------------------------------
# Where the transactions went

class StandbyProbe:
    """Reads each pod's xact_commit + xact_rollback of the app database
    twice while pgbench runs (after the logins, and a second before the
    end), over one connection per pod to the `postgres` database (its own
    transactions are not counted in `app`).  A busy backend flushes its
    counters at most once a second, so both reads lag by about the same;
    the counts between them are compared with the transactions pgbench
    logged between the same two instants.

    But a backend that goes idle less than a second after its last flush
    (every pooled server connection when a run ends) flushes the rest 10 s
    later (PostgreSQL 15's PGSTAT_IDLE_INTERVAL): the previous run's last
    transactions would land in this run's window.  So when `active`,
    prepare() waits until the first read comes 11 s after the previous
    run ended; runs with the probe inactive only record when they ended.

    stmts: server transactions per pgbench transaction (1 for -S, 2 for
    the read-after-write script).  baseline: {addr: per second} of the
    poolers' own queries (health checks and the like) with every pooler
    idle, subtracted."""

    def __init__(self, stmts=1):
        self.stmts = stmts
        self.conns = {}
        for pod in b.svc.pods:
            self.conns[pod.addr] = psycopg.connect(
                host=pod.addr, port=fx.PG_PORT, dbname="postgres",
                user=fx.SUPERUSER, password=fx.SUPERUSER_PASSWORD,
                autocommit=True, sslmode="disable", gssencmode="disable")
        self.standbys = {b.svc.pods[i].addr for i in b.svc.standbys}
        self.baseline = {}
        self.active = True
        self.last_end = 0.0
        self._thread = None
        self._halt = threading.Event()
        self.reads = []
        self.target = None

    def read(self):
        out = {}
        for addr, c in self.conns.items():
            row = c.execute("SELECT xact_commit + xact_rollback FROM "
                            "pg_stat_database WHERE datname = %s",
                            (fx.APP_DB,)).fetchone()
            out[addr] = int(row[0] or 0)
        return time.time(), out

    def measure_baseline(self, secs=5.0):
        """The counters' growth with every pooler idle: their own queries."""
        time.sleep(11.0)   # the warm-ups' last counters flushed
        t0, a = self.read()
        time.sleep(secs)
        t1, c = self.read()
        self.baseline = {k: (c[k] - a[k]) / (t1 - t0) for k in a}
        self.last_end = time.monotonic() - 20
        b.log("with every pooler idle: %s xact/s per pod" % (
            " ".join("%s=%.1f" % (k, v) for k, v in
                     sorted(self.baseline.items()))))

    @staticmethod
    def _lead(secs):
        """Seconds from pgbench's start to the first read: after the
        logins (run_seconds' allowance for them) and a second more."""
        return max(1.5, secs - b.ARGS.duration + 1.0)

    def prepare(self, secs):
        if self.active:
            wait = self.last_end + 11.0 - self._lead(secs) - time.monotonic()
            if wait > 0:
                time.sleep(wait)

    def start(self, target, secs):
        self.target, self.reads = target, []
        if not self.active:
            return
        self._halt.clear()
        t_start = time.monotonic()
        lead = self._lead(secs)

        def run():
            if self._halt.wait(lead):
                return
            self.reads.append(self.read())
            left = t_start + secs - 1.0 - time.monotonic()
            if self._halt.wait(max(0.5, left)):
                return
            self.reads.append(self.read())
        self._thread = threading.Thread(target=run, daemon=True)
        self._thread.start()

    def stop(self):
        self.last_end = time.monotonic()
        if self._thread:
            self._halt.set()
            self._thread.join()
            self._thread = None

    def result(self, ends):
        if len(self.reads) < 2:
            return {}
        (t0, a), (t1, c) = self.reads
        self.reads = []
        base = self.baseline
        d = {k: max(0.0, c[k] - a[k] - base.get(k, 0.0) * (t1 - t0))
             for k in a}
        total = sum(d.values())
        n = sum(1 for t in ends if t0 <= t <= t1)
        if total <= 0:
            return {}
        standby = sum(v for k, v in d.items() if k in self.standbys)
        return {"standby_share": standby / total,
                "pod_xacts": d,
                # the server transactions counted per pgbench statement:
                # about 1.0 when the counters saw exactly pgbench's work
                "accounted": total / float(n * self.stmts) if n else None}

    def close(self):
        for c in self.conns.values():
            c.close()


# --------------------------------------------------------------------------
# Phases

def make_pooler(target, workdir, valgrind=None):
    if target in FLEET_ATTRS:
        return b.Fleet(workdir, valgrind=valgrind, name=target,
                       target_session_attrs=FLEET_ATTRS[target])
    if target == "pgpool":
        return Pgpool(workdir, max(b.ARGS.clients + [b.ARGS.raw_clients]))
    if target == "pgbouncer-primary":
        # The same server connections as pgfleet's ceiling (3 x pool),
        # all on the primary.
        return b.Bouncer(workdir, valgrind=valgrind, name=target,
                         db_host=b.svc.pods[b.svc.primary].addr)
    raise SystemExit("unknown target for --scenario replicated: %s "
                     "(pgfleet-auto, pgfleet-any, pgfleet-rw, pgpool, "
                     "pgbouncer-primary)" % target)


def stop_pooler(p):
    try:
        p.stop()
    finally:
        if isinstance(p, b.Fleet):
            p.p.cleanup()
        else:
            p.cleanup()


ROUTE_METRICS = {"pgfleet_route_parses_total": "parses",
                 "pgfleet_route_cache_hits_total": "cache hits",
                 "pgfleet_routed_reads_total": "routed reads",
                 "pgfleet_routed_writes_total": "routed writes"}


def route_metrics(poolers):
    """{target: {name: total}} of each pgfleet's routing counters (summed
    over their labels): with auto off the parser must never run."""
    out = {}
    for t, p in poolers.items():
        if t not in FLEET_ATTRS:
            continue
        try:
            status, body = p.p.http_get("/metrics")
        except OSError as e:
            b.log("%s: /metrics: %s" % (t, e))
            continue
        sums = dict.fromkeys(ROUTE_METRICS.values(), 0)
        for line in body.splitlines():
            name = line.split("{", 1)[0].split(" ", 1)[0]
            if name in ROUTE_METRICS:
                sums[ROUTE_METRICS[name]] += int(float(line.rsplit(" ", 1)[1]))
        out[t] = sums
        b.log("%s: %s" % (t, ", ".join("%s %d" % kv for kv in sums.items())))
    return out


PER_REPLICA = {"pgfleet_routed_reads_total": "reads",
               "pgfleet_read_your_writes_probes_total": "probes"}


def routed_by_replica(pooler):
    """{"reads" | "probes": {replica address: count}} from a pgfleet's
    /metrics: where auto sent its reads, exactly (the pods' counters also
    count read-your-writes' own WAL-position queries)."""
    out = {k: {} for k in PER_REPLICA.values()}
    try:
        body = pooler.p.http_get("/metrics")[1]
    except OSError:
        return out
    for line in body.splitlines():
        name = line.split("{", 1)[0]
        if name not in PER_REPLICA or 'replica="' not in line:
            continue
        replica = line.split('replica="', 1)[1].split('"', 1)[0]
        addr = replica.rsplit(":", 1)[0]
        d = out[PER_REPLICA[name]]
        d[addr] = d.get(addr, 0) + int(float(line.rsplit(" ", 1)[1]))
    return out


def routed_delta(before, after):
    """(standbys' share of the reads, probes per read) between two
    routed_by_replica() snapshots."""
    standbys = {b.svc.pods[i].addr for i in b.svc.standbys}

    def d(kind, addr):
        return after[kind].get(addr, 0) - before[kind].get(addr, 0)
    addrs = set(after["reads"]) | set(after["probes"])
    reads = sum(d("reads", a) for a in addrs)
    if reads <= 0:
        return None, None
    on_standbys = sum(d("reads", a) for a in addrs if a in standbys)
    return (on_standbys / float(reads),
            sum(d("probes", a) for a in addrs) / float(reads))


def skipped(t, mode):
    """PgBouncer 1.18 cannot pool protocol-level prepared statements in
    transaction mode (max_prepared_statements came in 1.21): pgbench -M
    prepared fails with 'prepared statement "P_0" already exists'."""
    return t.startswith("pgbouncer") and mode == "prepared"


def phase_throughput(poolers, workdir, probe):
    """pgbench -S flat out, the targets alternated in each round (A B C D,
    then B C D A, ...).  Where the transactions went is read in the first
    round only: each of its runs waits for the previous one's counters
    (StandbyProbe)."""
    A = b.ARGS
    results = []
    cells = [(c, m) for c in A.clients for m in A.modes]
    targets = list(A.targets)
    for r in range(A.rounds):
        probe.active = r == 0
        order = targets[r % len(targets):] + targets[:r % len(targets)]
        for clients, mode in cells:
            for t in order:
                if skipped(t, mode):
                    continue
                pooler = poolers[t]
                if not pooler.alive():
                    raise RuntimeError("%s died; log tail:\n%s"
                                       % (t, pooler.log_tail()))
                rundir = os.path.join(workdir, "runs", "max%d-%s-%d-%s"
                                      % (r, t, clients, mode))
                res = b.run_load(t, pooler, clients, mode, A.duration,
                                 rundir, (), probe)
                res["round"] = r
                results.append(res)
                b.log("max round %d %-17s c=%-3d %-8s tps=%7s p50=%sms "
                      "p99=%sms cpu/100k=%s standbys=%s counted=%s%s" % (
                          r, t, clients, mode, b._f(res["tps"], "%.0f"),
                          b._f(res["p50_ms"], "%.2f"),
                          b._f(res["p99_ms"], "%.2f"),
                          b._f(res["cpu_per_100k"], "%.2fs"),
                          b._f(None if res.get("standby_share") is None
                               else 100 * res["standby_share"], "%.1f%%"),
                          b._f(res.get("accounted"), "%.2f"),
                          "  ERRORS: %s" % res["errors"]
                          if res["errors"] else ""))
    probe.active = True
    return results


def phase_raw(poolers, workdir, probe):
    """INSERT, then SELECT the row just inserted, two transactions per
    pgbench transaction; a SELECT that does not see its row inserts its id
    into bench_rw_miss (on the primary).  Returns one result per run with
    the share of the SELECTs a standby served and the misses."""
    targets = [t for t in b.ARGS.targets if t in RAW_TARGETS and t in poolers]
    if not targets or b.ARGS.raw_clients <= 0:
        return []
    script = os.path.join(workdir, "read_after_write.sql")
    with open(script, "w") as f:
        f.write(RAW_SCRIPT)
    os.chmod(script, 0o644)
    primary = b.svc.primary
    results = []
    c = b.ARGS.raw_clients
    for r in range(b.ARGS.rounds):
        order = targets[r % len(targets):] + targets[:r % len(targets)]
        for t in order:
            pooler = poolers[t]
            if not pooler.alive():
                raise RuntimeError("%s died; log tail:\n%s"
                                   % (t, pooler.log_tail()))
            misses0 = int(b.svc.psql(primary, "SELECT count(*) FROM "
                                     "bench_rw_miss"))
            fleet = isinstance(pooler, b.Fleet)
            routed0 = routed_by_replica(pooler) if fleet else None
            rundir = os.path.join(workdir, "runs", "raw%d-%s" % (r, t))
            res = b.run_load(t, pooler, c, "simple", b.ARGS.duration, rundir,
                             ["-f", script], probe)
            time.sleep(0.2)
            misses = int(b.svc.psql(primary, "SELECT count(*) FROM "
                                    "bench_rw_miss")) - misses0
            # Per SELECT, an INSERT and (on a miss) an INSERT into
            # bench_rw_miss, all on the primary: the SELECTs are
            # total / (2 + miss rate) of the counted transactions.
            rate = misses / float(res["xacts"]) if res["xacts"] else 0.0
            share = res.get("standby_share")
            res.update({"round": r, "misses": misses,
                        "select_standby_share": None if share is None
                        else min(1.0, share * (2 + rate))})
            if fleet:
                # pgfleet's read-your-writes asks the primary its WAL
                # position after each write, and a standby its replay
                # position before a read: the pods count those too.  Its
                # own counters say exactly where the reads went (the
                # whole run, not the window).
                share, probes = routed_delta(routed0,
                                             routed_by_replica(pooler))
                res.update({"select_standby_share": share,
                            "probes_per_read": probes})
            results.append(res)
            b.log("raw round %d %-17s c=%d tps=%s selects on standbys=%s "
                  "probes/read=%s misses=%d cpu/100k=%s%s" % (
                      r, t, c, b._f(res["tps"], "%.0f"),
                      b._f(None if res["select_standby_share"] is None
                           else 100 * res["select_standby_share"], "%.1f%%"),
                      b._f(res.get("probes_per_read"), "%.2f"), misses, b._f(res["cpu_per_100k"], "%.2fs"),
                      "  ERRORS: %s" % res["errors"] if res["errors"] else ""))
    return results


def main(bench):
    assert bench is b
    A = b.ARGS
    if A.callgrind_xacts == 1500:   # the independent scenario's default
        A.callgrind_xacts = 600
    b.CALLGRIND_PAIRS = 3   # a server login in one pair cannot move the median
    workdir = A.workdir or tempfile.mkdtemp(prefix="pgfleet-bench-rep-",
                                            dir="/tmp")
    os.makedirs(workdir, exist_ok=True)
    os.chmod(workdir, 0o755)
    b.LOG_FILE = os.path.join(workdir, "bench.log")
    b.log("replicated scenario; work dir %s; fixture net %s; targets %s"
          % (workdir, A.net, ",".join(A.targets)))
    t_start = time.monotonic()
    poolers, probe = {}, None
    results, raw, cg, metrics = [], [], [], {}
    try:
        svc = b.svc = b.BenchService(pods=3, replication=True)
        svc.start()
        svc.share_app_secret()
        svc.pgbench_init(1)
        svc.psql(svc.primary, "CREATE TABLE bench_rw (id bigserial PRIMARY "
                 "KEY, client int NOT NULL); CREATE TABLE bench_rw_miss "
                 "(id bigint NOT NULL)", user=fx.APP_USER)
        svc.wait_replayed()
        b.log("fixture up: primary %s, standbys %s" % (
            svc.pods[svc.primary].addr,
            " ".join(svc.pods[i].addr for i in svc.standbys)))
        if not {"throughput", "raw"} <= A.skip:
            for t in A.targets:
                poolers[t] = make_pooler(t, workdir).start()
            probe = StandbyProbe()
            for t, p in poolers.items():
                rc, out = b.pgbench_fixed(b.LISTEN, p.port, max(A.clients),
                                          200, "simple", workdir)
                b.require_ok(rc, out, "%s warm-up" % t)
            probe.measure_baseline()
        if "throughput" not in A.skip:
            results = phase_throughput(poolers, workdir, probe)
            metrics = route_metrics(poolers)
        if "raw" not in A.skip and probe:
            probe.stmts = 2
            raw = phase_raw(poolers, workdir, probe)
        for t in list(poolers):
            stop_pooler(poolers.pop(t))
        if "callgrind" not in A.skip:
            fleets = [t for t in A.targets if t in FLEET_ATTRS]
            cg = b.phase_callgrind(workdir, [
                (t, lambda w, vg, t=t: make_pooler(t, w, vg))
                for t in fleets])
    except KeyboardInterrupt as e:
        b.log("interrupted (%s): stopping everything" % (e or "SIGINT"))
        raise SystemExit(130)
    finally:
        for p in list(b._CHILDREN):
            b._stop_popen(p)
        if probe:
            probe.close()
        for t, p in poolers.items():
            try:
                stop_pooler(p)
            except Exception as e:
                b.log("stopping %s: %s" % (t, e))
        if b.svc is not None:
            b.svc.close()
        with open(os.path.join(workdir, "results.json"), "w") as f:
            json.dump({"throughput": results, "raw": raw, "callgrind": cg,
                       "route_metrics": metrics}, f, indent=1)
    text = report(results, raw, cg, metrics)
    print(text)
    if A.out:
        with open(A.out, "w") as f:
            f.write(text + "\n")
    b.log("done in %.0fs; raw results in %s/results.json"
          % (time.monotonic() - t_start, workdir))
    return 0


# --------------------------------------------------------------------------
# Report

def paired(results, c, m, t, ref, key):
    """t/ref `key` of each round (the two ran in the same round)."""
    by = {}
    for r in results:
        if r["clients"] == c and r["mode"] == m and r.get(key):
            by.setdefault(r["round"], {})[r["target"]] = r[key]
    return [v[t] / v[ref] for _, v in sorted(by.items())
            if t in v and ref in v]


def report(results, raw, cg, metrics=None):
    A = b.ARGS
    N = b.TARGET_NAMES
    f = b._f
    out = []
    fleet_set = dict(kv.split("=", 1) for kv in A.pgfleet_set)
    out.append(
        "Replicated fixture (a primary and 2 streaming standbys). pgbench -S, "
        "%d round(s) of %gs per cell, targets alternated in each round, "
        "median of rounds. pgfleet workers=%s default_pool_size=%d per "
        "replica; pgpool-II num_init_children=%d, max_pool=1, "
        "load_balance_mode=on; PgBouncer on the primary, "
        "default_pool_size=%d." % (
            A.rounds, A.duration, fleet_set.get("workers", "1"), A.pool_size,
            max(A.clients + [A.raw_clients]), 3 * A.pool_size))
    extra = ["pgfleet " + kv for kv in A.pgfleet_set]
    if extra:
        out.append("Extra settings: " + ", ".join(extra) + ".")
    out.append("")
    ref = "pgfleet-any" if "pgfleet-any" in A.targets else None
    if results:
        def med(t, c, m, k):
            return b.cell_median(results, t, c, m, k)

        def pct(v):
            return f(None if v is None else 100 * v, "%.0f %%")
        cols = ["target", "tps", "p50/p99 ms", "CPU s/100k xact"]
        if ref:
            cols.append("CPU / pgfleet any (rounds; median)")
        cols += ["served by standbys (round 1)", "counted / pgbench"]
        for c in A.clients:
            for m in A.modes:
                out.append("%d clients, %s:" % (c, m))
                out.append("")
                out.append("| " + " | ".join(cols) + " |")
                out.append("|" + "---|" * len(cols))
                for t in A.targets:
                    if skipped(t, m):
                        out.append("| %s | not run: PgBouncer 1.18 has no "
                                   "protocol-level prepared statements in "
                                   "transaction mode |%s" % (
                                       N.get(t, t), " |" * (len(cols) - 2)))
                        continue
                    errs = sum(1 for r in b.cell_runs(results, t, c, m)
                               if r["errors"])
                    row = [N.get(t, t),
                           f(med(t, c, m, "tps"), "%.0f") +
                           (" (errors in %d run(s))" % errs if errs else ""),
                           "%s / %s" % (f(med(t, c, m, "p50_ms"), "%.2f"),
                                        f(med(t, c, m, "p99_ms"), "%.2f")),
                           f(med(t, c, m, "cpu_per_100k"), "%.2f")]
                    if ref:
                        pr = paired(results, c, m, t, ref, "cpu_per_100k")
                        row.append("%s; %.2f" % (" ".join(
                            "%.2f" % x for x in pr), b._med(pr))
                            if pr and t != ref else "—")
                    row += [pct(med(t, c, m, "standby_share")),
                            f(med(t, c, m, "accounted"), "%.2f")]
                    out.append("| " + " | ".join(row) + " |")
                out.append("")
        out.append("tps per round (%s):" % " / ".join(N.get(t, t)
                                                        for t in A.targets))
        out.append("")
        for c in A.clients:
            for m in A.modes:
                out.append("- c=%d %s: %s" % (c, m, " / ".join(
                    " ".join(f(r["tps"], "%.0f")
                             for r in b.cell_runs(results, t, c, m)) or "—"
                    for t in A.targets)))
        out.append("")
        if ref and "pgfleet-auto" in A.targets:
            out.append("Budget: pgfleet auto's CPU per transaction within "
                       "15 % of any's (median of the round-by-round "
                       "ratios):")
            out.append("")
            for c in A.clients:
                for m in A.modes:
                    pr = paired(results, c, m, "pgfleet-auto", ref,
                                "cpu_per_100k")
                    if not pr:
                        continue
                    x = b._med(pr)
                    iv = b.median_interval(pr)
                    out.append("- c=%d %s: %+.0f %% (%s)%s" % (
                        c, m, 100 * (x - 1), "within" if x <= 1.15
                        else "OVER", "; %.0f %% interval of the median "
                        "%.2f–%.2f" % (100 * iv[2], iv[0], iv[1])
                        if iv else ""))
            out.append("")
    if metrics:
        out.append("pgfleet's routing counters after the pgbench -S runs "
                   "(/metrics, the warm-up included):")
        out.append("")
        for t, sums in metrics.items():
            out.append("- %s: %s" % (N.get(t, t), ", ".join(
                "%s %d" % kv for kv in sums.items())))
        out.append("")
    if raw:
        out.append("Read after write: pgbench -f (INSERT a row, then SELECT "
                   "it by id: two transactions), %d clients, simple "
                   "protocol, %d round(s) of %gs, median of rounds. "
                   "\"SELECTs on standbys\": the standbys' share of the "
                   "SELECTs; \"misses\": SELECTs that did not see the row "
                   "just inserted (all rounds)." % (
                       A.raw_clients, A.rounds, A.duration))
        out.append("")
        out.append("pgfleet's share is from its own counters (/metrics: "
                   "reads routed per replica, the whole run), since the "
                   "pods' counters also count read-your-writes' WAL "
                   "position queries (one on the primary after each "
                   "write, and the replay positions asked of a standby, "
                   "\"probes\"); pgpool-II's from the pods' counters.")
        out.append("")
        out.append("| target | tps | CPU s/100k xact | SELECTs on standbys "
                   "| probes per SELECT | misses / SELECTs |")
        out.append("|---|---|---|---|---|---|")
        for t in [t for t in A.targets if t in RAW_TARGETS]:
            rs = [r for r in raw if r["target"] == t]
            if not rs:
                continue
            share = b._med([r.get("select_standby_share") for r in rs])
            out.append("| %s | %s | %s | %s | %s | %d / %d |" % (
                N.get(t, t), f(b._med([r["tps"] for r in rs]), "%.0f"),
                f(b._med([r["cpu_per_100k"] for r in rs]), "%.2f"),
                f(None if share is None else 100 * share, "%.1f %%"),
                f(b._med([r.get("probes_per_read") for r in rs]), "%.2f"),
                sum(r["misses"] for r in rs), sum(r["xacts"] for r in rs)))
        out.append("")
    if cg:
        out.append("| pgfleet | mode | callgrind Ir per transaction |")
        out.append("|---|---|---|")
        for r in cg:
            out.append("| %s | %s | %.0f |" % (N.get(r["pooler"], r["pooler"]),
                                              r["mode"], r["ir_per_xact"]))
        out.append("")
        by = {(r["pooler"], r["mode"]): r["ir_per_xact"] for r in cg}
        for m in A.modes:
            x, y = by.get(("pgfleet-auto", m)), by.get(("pgfleet-any", m))
            if x and y:
                out.append("- %s: auto / any = %.3f (%+.1f %%; budget 15 %%)"
                           % (m, x / y, 100 * (x / y - 1)))
        out.append("")
        out.append("callgrind: pgbench -S -c 10 -t %d minus -t %d (%d "
                   "transactions), median of %d pairs, pgfleet under "
                   "valgrind on the replicated fixture; the dumps are in %s."
                   % (A.callgrind_xacts, max(1, A.callgrind_xacts // 6),
                      cg[0]["xacts"], b.CALLGRIND_PAIRS,
                      os.path.dirname(cg[0]["dump"])))
        out.append("")
    return "\n".join(out)

