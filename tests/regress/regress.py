#!/usr/bin/python3
"""PostgreSQL's own regression suite, run directly and through pgfleet.

A pooler is judged by what an application cannot tell apart from a direct
connection, and PostgreSQL's regression suite is the most thorough such
application there is.  This script runs the suite of the *installed* server
(Debian's postgresql-15 source package, same version) in installcheck style:

  direct       pg_regress -> PostgreSQL
  session      pg_regress -> pgfleet (pool_mode = session) -> PostgreSQL
  transaction  pg_regress -> pgfleet (pool_mode = transaction) -> PostgreSQL

Every mode gets a fresh cluster (initdb, trust authentication) on
$PGFLEET_FIXTURE_NET.60:5432 and, except `direct`, a pgfleet with a `*`
database entry and auth_type = trust in front of it.  The serial schedule
is used (parallel_schedule with --max-connections=1, what `make
installcheck` does): one client at a time, so a failure is the pooler's and
not a race between tests.

Per mode it prints the number of tests, passed, failed and the failed
tests (a test whose output differs only by the one NOTICE pgfleet sends
when session state pins a client to its server connection is listed apart,
not as failed), and keeps pg_regress's output in OUT/<mode>/ (regression.diffs,
regression.out, results/) plus result.json.  With --check the failures of
each mode are compared with tests/regress/expected_failures_<mode>.txt and
any difference (a new failure, or a test that now passes) fails the run.

Everything it starts (postmaster, pgfleet, pg_regress) is recorded by pid in
its own state directory and stopped by pid on exit, also after an error, a
timeout or SIGTERM/SIGINT; a crashed earlier run is cleaned up at start.

Needs root (apt-get, and the server runs as the `postgres` user) or, as
another user, everything already installed and fetched.

Exit status: 0 all modes ran (and, with --check, matched their lists);
1 a --check mismatch; 2 setup or infrastructure failure (timeout included).
"""

import argparse
import contextlib
import glob
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(os.path.dirname(HERE))
sys.path.insert(0, os.path.join(REPO, "tests", "integration"))
import fixture as fx  # noqa: E402

MODES = ("direct", "session", "transaction")
SERVER_PKG = "postgresql-15"
DEV_PKG = "postgresql-server-dev-15"
PG_BIN = fx.PG_BIN
PG_CONFIG = os.path.join(PG_BIN, "pg_config")
# pg_regress comes with postgresql-client-15 (its pgxs directory).
PG_REGRESS = "/usr/lib/postgresql/15/lib/pgxs/src/test/regress/pg_regress"
CACHE = os.environ.get("PGFLEET_REGRESS_CACHE", "/var/cache/pgfleet/regress-src")
DEB_SRC_FILE = "/etc/apt/sources.list.d/pgfleet-deb-src.sources"
# The fixture's pods use .2 ... .51 and its DNS .53: .60 is ours alone, so
# this can run next to the integration suite on the same fixture network.
SERVER_ADDR = fx.NET_PREFIX + ".60"
SERVER_PORT = 5432
STATE_DIR = "/tmp/pgfleet-regress-" + fx.NET_PREFIX
SUPERUSER = "postgres"


class SetupError(RuntimeError):
    pass


def log(msg):
    sys.stderr.write("[regress] %s\n" % msg)
    sys.stderr.flush()


def run(argv, timeout=600, check=True, cwd=None, env=None):
    p = subprocess.run(argv, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                       text=True, timeout=timeout, cwd=cwd,
                       env=env or fx._clean_env())
    if check and p.returncode != 0:
        raise SetupError("%s failed (exit %d):\n%s"
                         % (" ".join(argv), p.returncode, p.stdout[-3000:]))
    return p


def as_root(argv):
    if os.geteuid() == 0:
        return argv
    return ["sudo", "env", "DEBIAN_FRONTEND=noninteractive"] + argv


def apt(argv, timeout=900):
    env = fx._clean_env({"DEBIAN_FRONTEND": "noninteractive"})
    # Other apt users on the machine: wait for the lock instead of failing.
    return run(as_root(["apt-get", "-o", "DPkg::Lock::Timeout=300"] + argv),
               timeout=timeout, env=env)


# --------------------------------------------------------------------------
# The suite's sources and its C libraries.

def installed_version(pkg):
    p = run(["dpkg-query", "-W", "-f=${db:Status-Abbrev} ${Version}", pkg],
            check=False)
    parts = p.stdout.split()
    if p.returncode != 0 or len(parts) < 2 or not parts[0].startswith("ii"):
        return None
    return parts[1]


def ensure_packages(version):
    want = {"dpkg-dev": None, "gcc": None, DEV_PKG: version}
    missing = []
    for pkg, ver in want.items():
        have = installed_version(pkg)
        if have is None or (ver is not None and have != ver):
            missing.append(pkg if ver is None else "%s=%s" % (pkg, ver))
    if not missing:
        return
    log("installing %s" % " ".join(missing))
    apt(["update", "-qq"])
    # The server headers must be the server's own version (regress.so is
    # loaded into it), even when the archive has a newer one.
    apt(["install", "-y", "-qq", "--no-install-recommends",
         "--allow-downgrades", "-o", "Dpkg::Use-Pty=0"] + missing)


def source_available(version):
    p = run(["apt-cache", "showsrc", "--only-source", SERVER_PKG], check=False)
    return ("Version: %s\n" % version) in p.stdout


def have_deb_src_entry():
    files = glob.glob("/etc/apt/sources.list") + \
        glob.glob("/etc/apt/sources.list.d/*.list") + \
        glob.glob("/etc/apt/sources.list.d/*.sources")
    for path in files:
        with contextlib.suppress(OSError):
            with open(path) as f:
                for line in f:
                    line = line.strip()
                    if line.startswith("deb-src ") or (
                            line.startswith("Types:") and "deb-src" in line):
                        return True
    return False


def ensure_deb_src(version):
    if source_available(version):
        return
    if not have_deb_src_entry():
        # Debian 12 keeps its sources in deb822 form (debian.sources); the
        # deb-src twin of the main archive and of the security archive.
        log("adding %s" % DEB_SRC_FILE)
        text = ("# Added by pgfleet's tests/regress: PostgreSQL's regression "
                "suite comes from\n# the source package of the installed "
                "server (apt-get source).\n")
        for uri, suites in (("http://deb.debian.org/debian",
                             "bookworm bookworm-updates"),
                            ("http://deb.debian.org/debian-security",
                             "bookworm-security")):
            text += ("\nTypes: deb-src\nURIs: %s\nSuites: %s\n"
                     "Components: main\nSigned-By: "
                     "/usr/share/keyrings/debian-archive-keyring.gpg\n"
                     % (uri, suites))
        p = subprocess.run(as_root(["tee", DEB_SRC_FILE]), input=text,
                           text=True, stdout=subprocess.DEVNULL)
        if p.returncode != 0:
            raise SetupError("cannot write %s" % DEB_SRC_FILE)
    apt(["update", "-qq"])
    if not source_available(version):
        raise SetupError("apt has no source package %s=%s (the installed "
                         "server's version); is a deb-src entry for its "
                         "suite configured?" % (SERVER_PKG, version))


def source_tree(version):
    """The unpacked source tree of postgresql-15=version, fetched once."""
    upstream = version.split("-")[0]
    tree = os.path.join(CACHE, "%s-%s" % (SERVER_PKG, upstream))
    marker = os.path.join(tree, ".pgfleet-complete-" + version)
    if os.path.exists(marker):
        return tree
    ensure_packages(version)
    ensure_deb_src(version)
    if os.path.exists(tree):
        shutil.rmtree(tree)  # an interrupted fetch or another version
    os.makedirs(CACHE, exist_ok=True)
    # apt's sandbox user reads the directory it downloads into.
    os.chmod(CACHE, 0o755)
    log("apt-get source %s=%s into %s" % (SERVER_PKG, version, CACHE))
    p = subprocess.run(as_root(["apt-get", "source", "-q", "--only-source",
                                "%s=%s" % (SERVER_PKG, version)]),
                       cwd=CACHE, stdout=subprocess.PIPE,
                       stderr=subprocess.STDOUT, text=True, timeout=900,
                       env=fx._clean_env())
    if p.returncode != 0 or not os.path.isdir(tree):
        raise SetupError("apt-get source failed:\n%s" % p.stdout[-3000:])
    open(marker, "w").close()
    return tree


def build_libs(tree, version):
    """regress.so (src/test/regress/regress.c) and contrib/spi's refint.so
    and autoinc.so: the C functions the suite creates with --dlpath."""
    ensure_packages(version)
    libdir = os.path.join(CACHE, "lib-" + version)
    os.makedirs(libdir, exist_ok=True)
    inc = run([PG_CONFIG, "--includedir-server"]).stdout.strip()
    # contrib/spi/Makefile builds refint with REFINT_VERBOSE: the expected
    # output of the triggers test has its NOTICEs.
    for src, flags in (("src/test/regress/regress.c", []),
                       ("contrib/spi/refint.c", ["-DREFINT_VERBOSE"]),
                       ("contrib/spi/autoinc.c", [])):
        out = os.path.join(libdir,
                           os.path.basename(src)[:-2] + ".so")
        if os.path.exists(out):
            continue
        log("building %s" % out)
        run(["gcc", "-O2", "-fPIC", "-shared", "-I" + inc] + flags +
            ["-o", out + ".tmp", os.path.join(tree, src)])
        os.replace(out + ".tmp", out)
    return libdir


# --------------------------------------------------------------------------
# The server and pgfleet.

def _as_postgres(argv):
    return fx._as_postgres(argv)


def _chown(path):
    if os.geteuid() == 0:
        fx._chown_postgres(path)


class Server:
    """A fresh PostgreSQL 15 cluster on SERVER_ADDR:5432, trust auth."""

    def __init__(self, state):
        self.state = state
        self.dir = None
        self.pid = None
        self.start_time = None

    def start(self):
        if fx._port_in_use(SERVER_ADDR, SERVER_PORT):
            raise SetupError("%s:%d is in use: %s" % (
                SERVER_ADDR, SERVER_PORT,
                fx._who_listens(SERVER_ADDR, SERVER_PORT)))
        self.dir = tempfile.mkdtemp(prefix="server-", dir=self.state.path)
        self.state.record_dir(self.dir)
        os.chmod(self.dir, 0o755)
        _chown(self.dir)
        data = os.path.join(self.dir, "data")
        sock = os.path.join(self.dir, "sock")
        os.makedirs(sock)
        _chown(sock)
        fx._run(_as_postgres([
            os.path.join(PG_BIN, "initdb"), "-D", data, "-U", SUPERUSER,
            "-A", "trust", "-E", "UTF8", "--locale=C", "--no-sync",
            "--no-instructions"]), cwd=self.dir, timeout=120)
        with open(os.path.join(data, "postgresql.conf"), "a") as f:
            f.write("\n# pgfleet tests/regress\n"
                    "listen_addresses = '%s'\nport = %d\n"
                    "unix_socket_directories = '%s'\n"
                    "max_connections = 100\nfsync = off\n"
                    "synchronous_commit = off\nfull_page_writes = off\n"
                    "log_line_prefix = '%%m [%%p] %%q%%u@%%d '\n"
                    % (SERVER_ADDR, SERVER_PORT, sock))
        hba = os.path.join(data, "pg_hba.conf")
        with open(hba, "w") as f:
            f.write("local all all trust\n"
                    "host  all all 127.0.0.0/8 trust\n")
        _chown(hba)
        logfile = os.path.join(self.dir, "postgresql.log")
        fx._run(_as_postgres([os.path.join(PG_BIN, "pg_ctl"), "-D", data,
                              "-l", logfile, "-w", "-t", "60", "start"]),
                cwd=self.dir, timeout=90, check=False)
        try:
            with open(os.path.join(data, "postmaster.pid")) as f:
                self.pid = int(f.readline())
        except (OSError, ValueError):
            tail = ""
            with contextlib.suppress(OSError):
                with open(logfile) as f:
                    tail = f.read()[-3000:]
            raise SetupError("the server did not start:\n" + tail)
        self.start_time = self.state.record_pid(self.pid, "postgres",
                                                "regress")
        fx._LIVE.append(self)
        return self

    def stop(self):
        if self in fx._LIVE:
            fx._LIVE.remove(self)
        if self.pid is not None:
            fx.stop_pid(self.pid, self.start_time, "postgres", timeout=30)
            self.state.forget_pid(self.pid)
            self.pid = None
        fx.reap_orphans()

    def remove(self, keep_log_in=None):
        if self.dir is None:
            return
        if keep_log_in:
            with contextlib.suppress(OSError):
                shutil.copy(os.path.join(self.dir, "postgresql.log"),
                            keep_log_in)
        shutil.rmtree(self.dir, ignore_errors=True)
        self.state.forget_dir(self.dir)
        self.dir = None


def start_pgfleet(mode, state, binary):
    p = fx.Pgfleet(
        settings={"pool_mode": mode, "auth_type": "trust",
                  # the suite's longest statements take seconds, not minutes
                  "query_wait_timeout": 300},
        databases={"*": "host=%s port=%d" % (SERVER_ADDR, SERVER_PORT)},
        users={}, binary=binary, state_dir=state.path)
    p.start(timeout=20)
    return p


# --------------------------------------------------------------------------
# pg_regress and its results.

RESULT_RE = re.compile(
    r"^(?:test\s+|\s+)?(\S+)\s+\.\.\.\s+(ok|FAILED|failed \(ignored\))\b")


def parse_results(text):
    """[(test, status)] from pg_regress's output, in schedule order."""
    out = []
    for line in text.splitlines():
        m = RESULT_RE.match(line)
        if m:
            out.append((m.group(1), m.group(2)))
    return out


def split_diffs(path):
    """{test: its part of regression.diffs}."""
    parts = {}
    try:
        with open(path, errors="replace") as f:
            text = f.read()
    except FileNotFoundError:
        return parts
    for chunk in re.split(r"(?m)^(?=diff )", text):
        m = re.match(r"diff .*/expected/(\S+?)(?:_\d+)?\.out ", chunk)
        if m:
            parts[m.group(1)] = parts.get(m.group(1), "") + chunk
    return parts


# The NOTICE pgfleet sends once when session state pins a client to its
# server connection (transaction_session_state = pin): a line PostgreSQL
# itself never prints, so a test's output differs by it alone.
PIN_NOTICE = "keep this client on its server connection until it disconnects"


def notice_only(diff):
    """Does a test's diff consist of nothing but pgfleet's pin NOTICE?"""
    changed = [l for l in diff.splitlines()
               if l[:1] in "+-" and not l.startswith(("+++", "---"))]
    return bool(changed) and all(l.startswith("+NOTICE:") and PIN_NOTICE in l
                                 for l in changed)


def reap_group_orphans():
    """Reap the psql that a killed pg_regress left behind: as subreaper we
    inherit it, and PID 1 here does not reap."""
    time.sleep(0.2)
    fx.reap_orphans(("psql", "pg_regress", "runuser", "sh"))


def run_mode(mode, args, tree, libdir, state):
    outdir = os.path.join(args.out, mode)
    shutil.rmtree(outdir, ignore_errors=True)
    os.makedirs(outdir)
    # The server writes into results/ (COPY TO, lo_export), and pg_regress
    # runs as the server's user: both own the output directory.
    _chown(outdir)
    regress_dir = os.path.join(tree, "src", "test", "regress")
    t0 = time.monotonic()
    server = Server(state)
    proxy = None
    proc = None
    result = {"mode": mode, "status": "error"}
    try:
        server.start()
        host, port = SERVER_ADDR, SERVER_PORT
        if mode != "direct":
            proxy = start_pgfleet(mode, state, args.pgfleet)
            host, port = proxy.host, proxy.port
        argv = [PG_REGRESS, "--inputdir=" + regress_dir,
                "--outputdir=" + outdir, "--bindir=" + PG_BIN,
                "--dlpath=" + libdir, "--host=" + host,
                "--port=%d" % port, "--user=" + SUPERUSER,
                "--max-concurrent-tests=20"]
        if args.tests:
            argv += args.tests
        else:
            argv += ["--schedule=" + os.path.join(regress_dir,
                                                  "parallel_schedule"),
                     "--max-connections=1"]
        log("%s: pg_regress via %s:%d (timeout %ds)"
            % (mode, host, port, args.timeout))
        t_suite = time.monotonic()
        with open(os.path.join(outdir, "pg_regress.log"), "w") as logf:
            proc = subprocess.Popen(_as_postgres(argv), cwd=outdir,
                                    env=fx._clean_env(), stdout=logf,
                                    stderr=subprocess.STDOUT,
                                    start_new_session=True)
            state.record_pid(proc.pid, "pg_regress", mode)
            try:
                rc = proc.wait(timeout=args.timeout)
            except BaseException:
                # A timeout or a signal: pg_regress and the psql it runs
                # are their own process group (start_new_session).
                rc = None
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(proc.pid, signal.SIGKILL)
                proc.wait()
                reap_group_orphans()
                if sys.exc_info()[0] is not subprocess.TimeoutExpired:
                    raise
            finally:
                state.forget_pid(proc.pid)
        suite_seconds = time.monotonic() - t_suite
        with open(os.path.join(outdir, "pg_regress.log")) as f:
            out = f.read()
        tests = parse_results(out)
        failed = [t for t, s in tests if s == "FAILED"]
        result.update({
            "status": "timeout" if rc is None else "ran",
            "pg_regress_exit": rc,
            "tests": len(tests),
            "passed": sum(1 for _, s in tests if s == "ok"),
            "failed": len(failed),
            "ignored": [t for t, s in tests if s.startswith("failed (")],
            "failed_tests": failed,
            "suite_seconds": round(suite_seconds, 1),
        })
        if not tests:
            result["status"] = "error"
            result["error"] = "pg_regress ran no test:\n" + out[-3000:]
        diffs = split_diffs(os.path.join(outdir, "regression.diffs"))
        # A failure whose only difference is pgfleet's pin NOTICE is
        # counted apart: everything the test asked for came out right.
        noticed = sorted(t for t in failed if t in diffs and notice_only(diffs[t]))
        result["notice_only"] = noticed
        result["failed_tests"] = [t for t in failed if t not in noticed]
        result["failed"] = len(result["failed_tests"])
        if diffs:
            ddir = os.path.join(outdir, "diffs")
            os.makedirs(ddir, exist_ok=True)
            for t, d in diffs.items():
                with open(os.path.join(ddir, t + ".diff"), "w") as f:
                    f.write(d)
    except (SetupError, fx.FixtureError, OSError,
            subprocess.SubprocessError) as e:
        result["error"] = str(e)
    finally:
        if proxy is not None:
            with contextlib.suppress(Exception):
                proxy.stop()
                shutil.copy(proxy.log_path,
                            os.path.join(outdir, "pgfleet.log"))
                reports = proxy.sanitizer_reports()
                if reports:
                    result["sanitizer_reports"] = reports[:20]
            with contextlib.suppress(Exception):
                proxy.cleanup()
        server.stop()
        server.remove(keep_log_in=outdir)
        result["mode_seconds"] = round(time.monotonic() - t0, 1)
        with open(os.path.join(outdir, "result.json"), "w") as f:
            json.dump(result, f, indent=1)
            f.write("\n")
    return result


def expected_failures(mode):
    path = os.path.join(HERE, "expected_failures_%s.txt" % mode)
    try:
        with open(path) as f:
            return path, sorted({line.split("#")[0].strip() for line in f
                                 if line.split("#")[0].strip()})
    except FileNotFoundError:
        return path, None


def report(result):
    mode = result["mode"]
    if result["status"] == "error":
        print("%-12s ERROR after %.0fs: %s" % (mode, result["mode_seconds"],
                                               result.get("error")))
        return
    print("%-12s %d tests, %d passed, %d failed%s  (suite %.0fs, mode %.0fs)"
          % (mode, result["tests"], result["passed"], result["failed"],
             " TIMEOUT" if result["status"] == "timeout" else "",
             result["suite_seconds"], result["mode_seconds"]))
    if result["failed_tests"]:
        print("    failed: " + " ".join(result["failed_tests"]))
    if result.get("notice_only"):
        print("    %d more differ only by pgfleet's pin NOTICE (not counted as failed): %s"
              % (len(result["notice_only"]), " ".join(result["notice_only"])))
    if result.get("sanitizer_reports"):
        print("    sanitizer reports in pgfleet.log")


def main(argv=None):
    ap = argparse.ArgumentParser(
        description="PostgreSQL 15's regression suite, directly and "
                    "through pgfleet")
    ap.add_argument("modes", nargs="*", default=list(MODES),
                    help="any of %s (default: all)" % ", ".join(MODES))
    ap.add_argument("--out", default=os.path.join(REPO, "build", "regress"),
                    help="output directory (default: build/regress)")
    ap.add_argument("--timeout", type=int, default=int(
        os.environ.get("PGFLEET_REGRESS_TIMEOUT", "1200")),
        help="seconds per mode for pg_regress (default 1200)")
    ap.add_argument("--pgfleet", default=os.environ.get("PGFLEET_BIN") or
                    os.path.join(REPO, "build", "pgfleet"))
    ap.add_argument("--check", action="store_true",
                    help="fail unless each mode's failures are exactly "
                    "tests/regress/expected_failures_<mode>.txt")
    ap.add_argument("--tests", nargs="+", metavar="TEST",
                    help="run these tests instead of the schedule")
    ap.add_argument("--setup-only", action="store_true",
                    help="fetch the sources and build the libraries only")
    args = ap.parse_args(argv)
    for m in args.modes:
        if m not in MODES:
            ap.error("unknown mode %r" % m)
    args.out = os.path.abspath(args.out)

    # SIGTERM/SIGINT unwind through the finally blocks that stop everything.
    def on_signal(signum, frame):
        raise SystemExit(128 + signum)
    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    fx.become_subreaper()

    try:
        version = installed_version(SERVER_PKG)
        if version is None:
            raise SetupError("%s is not installed (scripts/install-deps.sh)"
                             % SERVER_PKG)
        tree = source_tree(version)
        libdir = build_libs(tree, version)
        if args.setup_only:
            print("sources: %s\nlibraries: %s" % (tree, libdir))
            return 0
        if any(m != "direct" for m in args.modes) and \
                not os.access(args.pgfleet, os.X_OK):
            raise SetupError("pgfleet binary %s not found (build with meson "
                             "or set PGFLEET_BIN)" % args.pgfleet)
    except (SetupError, subprocess.SubprocessError, OSError) as e:
        print("regress: setup failed: %s" % e, file=sys.stderr)
        return 2

    state = fx.StateDir(STATE_DIR)
    state.purge_stale_once()
    os.makedirs(args.out, exist_ok=True)
    os.chmod(args.out, 0o755)
    rc = 0
    results = []
    for mode in args.modes:
        r = run_mode(mode, args, tree, libdir, state)
        results.append(r)
        report(r)
        sys.stdout.flush()
        if r["status"] != "ran" or r.get("sanitizer_reports"):
            rc = 2
            continue
        if args.check and not args.tests:
            path, want = expected_failures(mode)
            if want is None:
                print("    no %s: nothing to check" % os.path.relpath(path))
                continue
            got = sorted(set(r["failed_tests"]))
            new = sorted(set(got) - set(want))
            fixed = sorted(set(want) - set(got))
            if new or fixed:
                rc = max(rc, 1)
                if new:
                    print("    NEW failures (not in %s): %s"
                          % (os.path.basename(path), " ".join(new)))
                if fixed:
                    print("    now PASSING (remove from %s): %s"
                          % (os.path.basename(path), " ".join(fixed)))
            else:
                print("    failures as expected (%s)" % os.path.basename(path))
    with open(os.path.join(args.out, "summary.json"), "w") as f:
        json.dump(results, f, indent=1)
        f.write("\n")
    print("output: %s/<mode>/ (regression.diffs, diffs/<test>.diff, "
          "pg_regress.log, pgfleet.log, postgresql.log)" % args.out)
    return rc


if __name__ == "__main__":
    sys.exit(main())
