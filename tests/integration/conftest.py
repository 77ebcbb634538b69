"""pytest fixtures for pgfleet's integration tests.

Topologies (both on 127.0.0.2..4:5432, DNS on 127.0.0.53, so only one can
be up at a time; a session-level FleetManager tears one down to build the
other, and keeps a topology up from one module to the next while nobody asks
for the other):

  service     module-scoped: 3 independent PostgreSQL pods (HeadlessService)
  replicated  module-scoped: pod 0 primary, pods 1-2 streaming standbys

After every test that used one of them, the manager restores it (hung pods
woken, stopped pods started, added pods removed, DNS server and records back
as they were; a promoted replication set is rebuilt).

  pgfleet         function-scoped factory: pgfleet(settings=..., databases=...,
                  users=..., env=..., config_file=True) -> started fx.Pgfleet;
                  all stopped at the end of the test, which then fails if the
                  exit code was not 0 or a sanitizer reported anything.
  pgfleet_module  the same factory, module-scoped.

Module names: `fixture` is importable as `fx` (`import fixture as fx`).
"""

import os
import signal
import sys

import pytest

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import fixture as fx  # noqa: E402

TOPOLOGIES = {
    "independent": dict(pods=3, replication=False),
    "replication": dict(pods=3, replication=True),
}
# fixture name -> topology
TOPOLOGY_FIXTURES = {"service": "independent", "replicated": "replication"}


class FleetManager:
    """One HeadlessService object per topology, at most one started.  The
    objects persist across rebuilds, so references held by module-scoped
    fixtures stay valid."""

    def __init__(self, state_dir=fx.DEFAULT_STATE_DIR):
        self.services = {name: fx.HeadlessService(state_dir=state_dir, **kw)
                         for name, kw in TOPOLOGIES.items()}
        self.active = None

    def activate(self, topology):
        svc = self.services[topology]
        for name, other in self.services.items():
            if name != topology and other.started:
                other.close()
        if svc.started and svc.broken:
            svc.restore()  # rebuilds
        if not svc.started:
            svc.start()
        self.active = topology
        return svc

    def restore(self):
        if self.active is None:
            return
        svc = self.services[self.active]
        if not svc.started:
            return
        try:
            svc.restore()
        except BaseException:
            svc.close()  # the next test rebuilds it from scratch
            raise

    def close(self):
        for svc in self.services.values():
            svc.close()
        self.active = None


def _test_failed(request):
    node = request.node
    return any(getattr(getattr(node, "rep_" + when, None), "failed", False)
               for when in ("setup", "call"))


# ---------------------------------------------------------------------------
# hooks

def _sigterm(signum, frame):
    # meson test (timeout) and CI stop us with SIGTERM: turn it into an
    # interrupt so pytest runs every finalizer, which stops every pod by pid.
    raise KeyboardInterrupt("SIGTERM")


def pytest_configure(config):
    fx.become_subreaper()
    signal.signal(signal.SIGTERM, _sigterm)


# Modules whose outcome cannot depend on pgfleet's `workers`: the fixture's
# own tests, the manifests and image, the documents against the code, and
# the configuration file watch (one watcher, on worker 0; the reload it
# starts is SIGHUP's, which test_reload runs with workers = 2).
SAME_UNDER_WORKERS = {"test_fixture.py", "test_k8s.py", "test_docs.py",
                      "test_pgbouncer_compat.py", "test_config_watch.py"}

# Modules the sanitizer pass (PGFLEET_FIXTURE_SANITIZER_PASS=1, scripts/test.sh)
# leaves to the plain pass: they compare documents, manifests and the
# fixture with the code, and run no path of pgfleet's the other modules do
# not run too.
SAME_UNDER_SANITIZERS = {"test_fixture.py", "test_k8s.py", "test_docs.py",
                         "test_pgbouncer_compat.py"}


def pytest_collection_modifyitems(config, items):
    """The workers = N pass (PGFLEET_FIXTURE_WORKERS, scripts/test.sh) runs
    what can differ with workers: not the modules above, nor a test that
    sets `workers` itself (parametrized over 1 and 2, the plain pass ran
    both already).  The sanitizer pass leaves out SAME_UNDER_SANITIZERS."""
    workers = int(os.environ.get("PGFLEET_FIXTURE_WORKERS") or 1) > 1
    sanitizers = os.environ.get("PGFLEET_FIXTURE_SANITIZER_PASS") == "1"
    if not workers and not sanitizers:
        return
    keep, drop = [], []
    for item in items:
        params = getattr(getattr(item, "callspec", None), "params", {})
        module = os.path.basename(str(item.fspath))
        if (workers and (module in SAME_UNDER_WORKERS or "workers" in params)) or \
                (sanitizers and module in SAME_UNDER_SANITIZERS):
            drop.append(item)
        else:
            keep.append(item)
    if drop:
        config.hook.pytest_deselected(items=drop)
        items[:] = keep


@pytest.hookimpl(tryfirst=True, hookwrapper=True)
def pytest_runtest_makereport(item, call):
    outcome = yield
    rep = outcome.get_result()
    setattr(item, "rep_" + rep.when, rep)


# ---------------------------------------------------------------------------
# fixtures

@pytest.fixture(scope="session")
def fleet_manager():
    mgr = FleetManager()
    yield mgr
    mgr.close()


@pytest.fixture(scope="module")
def service(fleet_manager):
    """3 independent pods on 127.0.0.2-4:5432 behind fx.SVC_NAME."""
    return fleet_manager.activate("independent")


@pytest.fixture(scope="module")
def replicated(fleet_manager):
    """Primary on 127.0.0.2, streaming standbys on 127.0.0.3-4."""
    return fleet_manager.activate("replication")


@pytest.fixture(autouse=True)
def _fleet_guard(request):
    """Before a test: make sure the topology it uses is the one up (a module
    may mix both).  After it: restore that topology."""
    wanted = {TOPOLOGY_FIXTURES[f] for f in request.fixturenames
              if f in TOPOLOGY_FIXTURES}
    if len(wanted) > 1:
        pytest.fail("a test can use `service` or `replicated`, not both")
    if not wanted:
        yield
        return
    mgr = request.getfixturevalue("fleet_manager")
    mgr.activate(wanted.pop())
    yield
    mgr.restore()


@pytest.fixture
def pgfleet(request):
    """Factory: pgfleet(settings={...}, databases={...}, users={...},
    env={...}, config_file=True) -> a started fx.Pgfleet."""
    group = fx.PgfleetGroup()
    yield group.start
    problems = group.close(show_logs=_test_failed(request))
    if problems:
        pytest.fail("\n".join(problems), pytrace=False)


@pytest.fixture(scope="module")
def pgfleet_module():
    group = fx.PgfleetGroup()
    yield group.start
    problems = group.close()
    if problems:
        pytest.fail("\n".join(problems), pytrace=False)
