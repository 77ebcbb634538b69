"""The HTTP endpoint (issue 6): /metrics in the Prometheus text exposition
format, /healthz and /readyz, against real pods and real load (pgbench).

/metrics is parsed line by line the way a scraper would: every line is a
comment (# HELP / # TYPE) or a sample `name{labels} value`, every sample
belongs to a family whose TYPE came before it, a family's samples are
contiguous, and histograms are cumulative with _count equal to +Inf."""

import math
import os
import re
import subprocess
import time
import urllib.error
import urllib.request

import psycopg
import pytest

import fixture as fx

PG_BIN = fx.PG_BIN

# Health checks every second, DNS re-read every second: pgfleet notices a
# stopped pod within a few seconds.
SETTINGS = dict(health_check_period=1, health_check_timeout=1, dns_max_ttl=1,
                dns_nxdomain_ttl=1, server_login_retry=1, query_wait_timeout=5)

NAME_RE = re.compile(r"[a-zA-Z_:][a-zA-Z0-9_:]*")
LABEL_RE = re.compile(r'([a-zA-Z_][a-zA-Z0-9_]*)="((?:[^"\\\n]|\\[\\"n])*)"')
TYPES = {"counter", "gauge", "histogram", "summary", "untyped"}


class Sample:
    def __init__(self, name, labels, value):
        self.name, self.labels, self.value = name, labels, value

    def __repr__(self):
        return "%s%s %s" % (self.name, self.labels, self.value)


def _unescape(v):
    return re.sub(r"\\(.)", lambda m: {"n": "\n"}.get(m.group(1), m.group(1)), v)


def parse_labels(text, line):
    labels, pos = {}, 0
    while pos < len(text):
        m = LABEL_RE.match(text, pos)
        assert m, "bad label at %d in %r" % (pos, line)
        assert m.group(1) not in labels, "label repeated: %r" % line
        labels[m.group(1)] = _unescape(m.group(2))
        pos = m.end()
        if pos < len(text):
            assert text[pos] == ",", "expected ',' in %r" % line
            pos += 1
    return labels


def parse_value(v, line):
    if v in ("+Inf", "-Inf", "NaN"):
        return float(v.replace("Inf", "inf").replace("NaN", "nan"))
    assert re.fullmatch(r"-?[0-9]+(\.[0-9]*)?([eE][-+]?[0-9]+)?", v), "bad value %r" % line
    return float(v)


def family_of(name, types):
    if name in types:
        return name
    for suffix in ("_bucket", "_sum", "_count"):
        if name.endswith(suffix) and types.get(name[: -len(suffix)]) == "histogram":
            return name[: -len(suffix)]
    return None


def parse_metrics(body):
    """-> (types {family: type}, samples [Sample]); asserts the format."""
    assert body.endswith("\n"), "the exposition ends with a newline"
    types, helps, samples = {}, set(), []
    seen_done, current = set(), None
    for line in body.split("\n")[:-1]:
        assert line, "empty line in the exposition"
        if line.startswith("#"):
            m = re.fullmatch(r"# (HELP|TYPE) (\S+) (.+)", line)
            assert m, "bad comment line %r" % line
            kind, name, rest = m.groups()
            assert NAME_RE.fullmatch(name), line
            if kind == "HELP":
                assert name not in helps, "HELP twice for %s" % name
                helps.add(name)
            else:
                assert rest in TYPES, line
                assert name not in types, "TYPE twice for %s" % name
                types[name] = rest
            continue
        m = re.fullmatch(r"([a-zA-Z_:][a-zA-Z0-9_:]*)(?:\{(.*)\})? (\S+)", line)
        assert m, "bad sample line %r" % line
        name, labels, value = m.group(1), parse_labels(m.group(2) or "", line), m.group(3)
        fam = family_of(name, types)
        assert fam, "sample before (or without) its TYPE: %r" % line
        if fam != current:
            assert fam not in seen_done, "family %s is not contiguous" % fam
            if current:
                seen_done.add(current)
            current = fam
        samples.append(Sample(name, labels, parse_value(value, line)))
    for name in types:
        assert name in helps, "no HELP for %s" % name
    keys = [(s.name, tuple(sorted(s.labels.items()))) for s in samples]
    assert len(keys) == len(set(keys)), "a series appears twice"
    return types, samples


def series(samples, name, **labels):
    return [s for s in samples if s.name == name
            and all(s.labels.get(k) == v for k, v in labels.items())]


def check_histogram(samples, name, database):
    """Cumulative buckets in le order, +Inf last, _count == +Inf bucket;
    returns (count, sum)."""
    buckets = series(samples, name + "_bucket", database=database)
    assert buckets, "no %s_bucket for %s" % (name, database)
    les = [s.labels["le"] for s in buckets]
    assert les[-1] == "+Inf", les
    bounds = [float(le.replace("+Inf", "inf")) for le in les]
    assert bounds == sorted(bounds) and len(set(bounds)) == len(bounds), les
    values = [s.value for s in buckets]
    assert values == sorted(values), "%s buckets not cumulative: %s" % (name, values)
    (count,) = series(samples, name + "_count", database=database)
    (total,) = series(samples, name + "_sum", database=database)
    assert count.value == values[-1], (count, values[-1])
    assert total.value >= 0 and not math.isnan(total.value)
    return count.value, total.value


def scrape(fleet):
    status, body = fleet.http_get("/metrics")
    assert status == 200, body
    return parse_metrics(body)


def run_pgbench(fleet, *args, dbname=fx.APP_DB, timeout=120):
    env = dict(os.environ, PGPASSWORD=fx.APP_PASSWORD)
    for k in ("PGHOST", "PGPORT", "PGUSER", "PGDATABASE"):
        env.pop(k, None)
    argv = [os.path.join(PG_BIN, "pgbench"), "-n", "-h", fleet.host, "-p", str(fleet.port),
            "-U", fx.APP_USER] + list(args) + [dbname]
    p = subprocess.run(argv, env=env, capture_output=True, text=True, timeout=timeout)
    assert p.returncode == 0, p.stdout + p.stderr
    m = re.search(r"number of transactions actually processed: (\d+)", p.stdout)
    assert m, p.stdout
    return int(m.group(1))


wait_until = fx.wait_until


def entry(tsa=None, host=fx.SVC_NAME):
    s = "host=%s port=%d dbname=%s" % (host, fx.PG_PORT, fx.APP_DB)
    return s + (" target_session_attrs=" + tsa if tsa else "")


@pytest.fixture(scope="module")
def bench(service):
    service.pgbench_init(scale=1)
    return service


# ---- /metrics -----------------------------------------------------------------


def test_metrics_after_pgbench_one_series_per_replica(bench, pgfleet):
    fleet = pgfleet(settings=SETTINGS)
    assert fleet.wait_all_up(bench.addrs), fleet.log_tail()
    processed = run_pgbench(fleet, "-S", "-c", "6", "-j", "2", "-t", "200")
    types, samples = scrape(fleet)

    expected = {
        "pgfleet_client_connections": "gauge",
        "pgfleet_server_connections": "gauge",
        "pgfleet_transactions_total": "counter",
        "pgfleet_queries_total": "counter",
        "pgfleet_transaction_duration_seconds": "histogram",
        "pgfleet_wait_seconds": "histogram",
        "pgfleet_replica_up": "gauge",
        "pgfleet_replica_lag_seconds": "gauge",
        "pgfleet_dns_resolutions_total": "counter",
    }
    for name, typ in expected.items():
        assert types.get(name) == typ, (name, types.get(name))

    # One pgfleet_transactions_total per replica: the three pods.
    xacts = series(samples, "pgfleet_transactions_total", database="app")
    by_replica = {s.labels["replica"]: s.value for s in xacts}
    assert sorted(by_replica) == sorted("%s:%d" % (a, fx.PG_PORT) for a in bench.addrs), \
        by_replica
    assert all(v > 0 for v in by_replica.values()), by_replica
    assert sum(by_replica.values()) >= processed, (by_replica, processed)
    queries = {s.labels["replica"]: s.value
               for s in series(samples, "pgfleet_queries_total", database="app")}
    assert all(queries[r] >= by_replica[r] for r in by_replica), (queries, by_replica)

    count, total = check_histogram(samples, "pgfleet_transaction_duration_seconds", "app")
    assert count == sum(by_replica.values()) and total > 0, (count, by_replica)
    wcount, _ = check_histogram(samples, "pgfleet_wait_seconds", "app")
    assert wcount >= processed, (wcount, processed)

    for s in series(samples, "pgfleet_replica_up", database="app"):
        assert s.value == 1 and s.labels["role"] == "primary", s
    assert len(series(samples, "pgfleet_replica_lag_seconds", database="app")) == 3
    states = {s.labels["state"] for s in series(samples, "pgfleet_client_connections")}
    assert {"login", "waiting", "active", "idle"} <= states, states
    servers = series(samples, "pgfleet_server_connections", database="app")
    assert {s.labels["replica"] for s in servers} == set(by_replica)
    assert sum(s.value for s in servers) > 0, servers
    (ok,) = series(samples, "pgfleet_dns_resolutions_total", host=fx.SVC_NAME,
                   result="success")
    assert ok.value >= 1
    assert series(samples, "pgfleet_dns_resolutions_total", host=fx.SVC_NAME,
                  result="failure")

    # Counters only grow.
    run_pgbench(fleet, "-S", "-c", "2", "-t", "50")
    _, later = scrape(fleet)
    for s in series(later, "pgfleet_transactions_total", database="app"):
        assert s.value >= by_replica[s.labels["replica"]], s
    assert check_histogram(later, "pgfleet_transaction_duration_seconds", "app")[0] > count


def test_metrics_label_values_escaped(service, pgfleet):
    """A database name chosen by a client ("*" entry) with a quote, a
    backslash and a non-UTF-8 byte comes out escaped; the page still parses
    and /readyz ignores names a client made up."""
    fleet = pgfleet(settings=SETTINGS,
                    databases={"app": entry(), "*": "host=%s port=%d" % (fx.SVC_NAME,
                                                                         fx.PG_PORT)})
    odd = 'we"ird\\db'
    with pytest.raises(psycopg.OperationalError):
        psycopg.connect(host=fleet.host, port=fleet.port, user=fx.APP_USER,
                        password=fx.APP_PASSWORD, dbname=odd, connect_timeout=10).close()
    types, samples = scrape(fleet)
    dbs = {s.labels.get("database") for s in series(samples, "pgfleet_replica_up")}
    assert odd in dbs, dbs
    assert wait_until(lambda: fleet.http_get("/readyz")[0] == 200, 10), \
        fleet.http_get("/readyz")


def test_metrics_http_semantics(service, pgfleet):
    fleet = pgfleet(settings=SETTINGS)
    url = "http://%s:%d" % (fleet.host, fleet.http_port)
    with urllib.request.urlopen(url + "/metrics?x=1", timeout=5) as r:
        assert r.status == 200
        assert r.headers["Content-Type"].startswith("text/plain; version=0.0.4")
        parse_metrics(r.read().decode())
    assert fleet.http_get("/")[0] == 404
    assert fleet.http_get("/metricsx")[0] == 404
    req = urllib.request.Request(url + "/metrics", method="POST", data=b"x")
    with pytest.raises(urllib.error.HTTPError) as e:
        urllib.request.urlopen(req, timeout=5)
    assert e.value.code == 405 and "GET" in e.value.headers["Allow"]
    # HEAD of a ready pgfleet: its replicas' first health checks (a SCRAM
    # login each, per worker) can take longer than the requests above.
    assert wait_until(lambda: fleet.http_get("/readyz")[0] == 200, 10)
    req = urllib.request.Request(url + "/readyz", method="HEAD")
    with urllib.request.urlopen(req, timeout=5) as r:
        assert r.status == 200 and r.read() == b""


def test_http_listen_empty_is_off(service, pgfleet):
    fleet = pgfleet(settings=dict(SETTINGS, http_listen=""))
    assert fleet.http_port is None
    assert "http listening" not in fleet.log_text()
    with fleet.connect() as conn:
        assert conn.execute("SELECT 1").fetchone() == (1,)


def test_http_listen_busy_port_fails_start(service, pgfleet):
    first = pgfleet(settings=SETTINGS)
    with pytest.raises(fx.FixtureError, match="exited with status 2"):
        pgfleet(settings=dict(SETTINGS, http_listen="%s:%d" % (first.host, first.http_port)))


# ---- /healthz and /readyz --------------------------------------------------------


def test_healthz_and_readyz_ok(service, pgfleet):
    fleet = pgfleet(settings=SETTINGS)
    assert fleet.http_get("/healthz") == (200, "ok\n")
    assert wait_until(lambda: fleet.http_get("/readyz")[0] == 200, 10), \
        fleet.http_get("/readyz")


def test_readyz_when_every_pod_is_stopped(service, pgfleet):
    """Every server gone: the pod stays ready (listening, not draining: no
    database decides that); the database itself says why not."""
    fleet = pgfleet(settings=SETTINGS)
    assert wait_until(lambda: fleet.http_get("/readyz?database=app")[0] == 200, 10)
    for i in range(len(service.pods)):
        service.stop(i, "fast")
    status, body = wait_until(
        lambda: (lambda r: r if r[0] == 503 else None)(fleet.http_get("/readyz?database=app")),
        15) or fleet.http_get("/readyz?database=app")
    assert status == 503, body
    assert body.count("\n") == 1, "one line: %r" % body
    assert 'no replica of database "app" is up' in body, body
    assert "3 known" in body, body
    assert fleet.http_get("/readyz") == (200, "ready\n")
    # The process still serves its loop.
    assert fleet.http_get("/healthz")[0] == 200
    _, samples = scrape(fleet)
    assert [s.value for s in series(samples, "pgfleet_replica_up", database="app")] == [0] * 3

    for i in range(len(service.pods)):
        service.start_pod(i)
    assert wait_until(lambda: fleet.http_get("/readyz?database=app")[0] == 200, 15), \
        fleet.http_get("/readyz?database=app")


def test_readyz_read_write_database_without_a_primary(replicated, pgfleet):
    """Only standbys behind a read-write entry: that database is not
    ready, and the reason names the database, the role and what was found
    instead; the pod is (reads work)."""
    standbys = ",".join(replicated.pods[i].addr for i in replicated.standbys)
    fleet = pgfleet(settings=SETTINGS,
                    databases={"app_ro": entry("read-only"),
                               "app_rw": entry("read-write", host=standbys)})
    def not_ready():
        status, body = fleet.http_get("/readyz?database=app_rw")
        # Both standbys checked (a first answer may say "1 not checked yet").
        return (status, body) if status == 503 and "2 standby" in body else None
    got = wait_until(not_ready, 10)
    assert got, fleet.http_get("/readyz")
    status, body = got
    assert 'no replica of database "app_rw" is up for read-write' in body, body
    assert "2 standby" in body, body
    # app_ro's replicas are checked on their own schedule: wait for all three.
    def app_ro_roles():
        _, samples = scrape(fleet)
        roles = {s.labels["replica"]: s.labels["role"]
                 for s in series(samples, "pgfleet_replica_up", database="app_ro")}
        return None if "unknown" in roles.values() else (roles, samples)
    got = wait_until(app_ro_roles, 10)
    assert got, scrape(fleet)
    roles, samples = got
    assert sorted(roles.values()) == ["primary", "standby", "standby"], roles
    elig = {s.labels["replica"]: s.value
            for s in series(samples, "pgfleet_replica_eligible", database="app_rw")}
    assert list(elig.values()) == [0, 0], elig
    assert fleet.http_get("/readyz") == (200, "ready\n")


def test_readyz_read_write_ok_with_the_primary(replicated, pgfleet):
    fleet = pgfleet(settings=SETTINGS,
                    databases={"app_rw": entry("read-write"), "app_ro": entry("read-only")})
    assert wait_until(lambda: fleet.http_get("/readyz?database=app_rw")[0] == 200, 10), \
        fleet.http_get("/readyz?database=app_rw")
    # Stopping the primary leaves the read-write entry without a replica;
    # the pod stays ready (app_ro still serves).
    replicated.stop(replicated.primary, "fast")
    got = wait_until(lambda: (lambda r: r if r[0] == 503 else None)(
        fleet.http_get("/readyz?database=app_rw")), 15)
    assert got and 'database "app_rw"' in got[1] and "read-write" in got[1], got
    assert fleet.http_get("/readyz") == (200, "ready\n")
    assert fleet.http_get("/readyz?database=app_ro") == (200, "ready\n")


# ---- what a PgBouncer dashboard alerts on (issue 20) -------------------------


def test_metrics_clients_max_wait_pool_size_paused(service, pgfleet):
    """One server per replica (3): three clients in a transaction hold them
    all, a fourth waits.  pgfleet_clients counts 3 active and 1 waiting for
    app/app, pgfleet_pool_max_wait_seconds grows while it waits and is 0 once
    nobody waits; PAUSE shows as pgfleet_database_paused 1, RESUME as 0."""
    import threading
    from test_admin import ADMIN, USERS, admin_conn
    fleet = pgfleet(settings=dict(SETTINGS, default_pool_size=1, query_wait_timeout=30,
                                  admin_users=ADMIN), users=dict(USERS))
    assert fleet.wait_all_up(service.addrs), fleet.log_tail()
    holders = []
    for _ in range(3):
        c = fleet.connect(autocommit=False)
        c.prepare_threshold = None
        c.execute("SELECT 1")
        holders.append(c)
    done = []

    def waiter():
        with fleet.connect(autocommit=False) as c:
            c.prepare_threshold = None
            done.append(c.execute("SELECT 1").fetchone()[0])
            c.commit()

    t = threading.Thread(target=waiter, daemon=True)
    t.start()
    try:
        def waiting():
            _, samples = scrape(fleet)
            [w] = series(samples, "pgfleet_clients", database=fx.APP_DB, user=fx.APP_USER,
                         state="waiting") or [None]
            return samples if w and w.value == 1 else None
        assert wait_until(waiting, 10), scrape(fleet)
        time.sleep(0.3)
        _, samples = scrape(fleet)
        assert series(samples, "pgfleet_clients", database=fx.APP_DB, user=fx.APP_USER,
                      state="active")[0].value == 3
        [mw] = series(samples, "pgfleet_pool_max_wait_seconds", database=fx.APP_DB,
                      user=fx.APP_USER)
        assert mw.value > 0.2, mw
        [size] = series(samples, "pgfleet_database_pool_size", database=fx.APP_DB)
        assert size.value == 1
        [paused] = series(samples, "pgfleet_database_paused", database=fx.APP_DB)
        assert paused.value == 0
        [disabled] = series(samples, "pgfleet_database_disabled", database=fx.APP_DB)
        assert disabled.value == 0
    finally:
        for c in holders:
            c.commit()
            c.close()
        t.join(10)
    assert done == [1]
    _, samples = scrape(fleet)
    [mw] = series(samples, "pgfleet_pool_max_wait_seconds", database=fx.APP_DB,
                  user=fx.APP_USER)
    assert mw.value == 0
    assert series(samples, "pgfleet_clients", database=fx.APP_DB, user=fx.APP_USER,
                  state="waiting")[0].value == 0
    with admin_conn(fleet) as a:
        a.execute("PAUSE " + fx.APP_DB)
        _, samples = scrape(fleet)
        [paused] = series(samples, "pgfleet_database_paused", database=fx.APP_DB)
        assert paused.value == 1
        a.execute("RESUME " + fx.APP_DB)
    _, samples = scrape(fleet)
    [paused] = series(samples, "pgfleet_database_paused", database=fx.APP_DB)
    assert paused.value == 0
