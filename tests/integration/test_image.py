"""The image (issue 20 item 6), built and run for real with podman.

Opt-in: PGFLEET_IMAGE_TESTS=1 (scripts/test.sh sets it when podman is
installed, and `PGFLEET_IMAGE_TESTS=1 scripts/test.sh` installs podman, runc
and debootstrap first).  Without it every test here is skipped, saying so;
with it, a missing podman is a failure, not a skip.

  * the base: scripts/image-base.sh debootstraps Debian bookworm (minbase,
    slimmed) and imports it as debian:bookworm-slim and debian:bookworm, the
    Dockerfile's FROM images: no registry.  The tarball is cached under
    $PGFLEET_IMAGE_CACHE (/var/cache/pgfleet-image), so only the first run
    pays the debootstrap;
  * the Dockerfile is built with `podman build --pull=never --network=host`;
    the image is under 40 MB compressed, its binary is stripped, it holds no
    docs/man pages/translations, and it runs as uid 10001;
  * the container runs as that user with a read-only root file system and no
    tmpfs at all (`--read-only --read-only-tmpfs=false`), no capabilities, and
    the Deployment's environment (k8s/pgfleet: DB_HOST = the service name,
    DB_USER, DB_PASSWORD from the Secret) plus what a test host must change
    (test_k8s.HOST_OVERRIDES: listen on free 127.0.0.1 ports, resolve through
    the fixture's DNS server); with --network=host it reaches the local
    three-pod service: 30 transactions reach every pod, /readyz answers 200,
    the image's HEALTHCHECK passes inside the container;
  * SIGTERM (what `podman stop` and the kubelet send) drains: a transaction in
    flight commits, a new login is refused, /readyz says 503, the container
    exits 0 well within shutdown_timeout.

Every container and image the module creates is removed by name or id at
its end, also when a test fails; the base images and the cached tarball
stay (they are the cache).  PGFLEET_IMAGE_KEEP=1 keeps the built image
(localhost/pgfleet:test-...) to look into it; PGFLEET_IMAGE_KEEP_LAYERS=1
keeps only the build stage's untagged layers (podman build's cache: a rerun
with unchanged sources then builds in seconds; `podman image prune` removes
them).  Removing a new layer also lets podman drop untagged parents of it
that an earlier build left.
"""

import gzip
import os
import shutil
import subprocess
import tempfile
import threading
import time
import urllib.error
import urllib.request
import uuid

import psycopg
import pytest

import fixture as fx
import test_k8s as k8s

pytestmark = pytest.mark.skipif(
    os.environ.get("PGFLEET_IMAGE_TESTS") != "1",
    reason="image tests are opt-in: PGFLEET_IMAGE_TESTS=1 (needs podman, runc, "
           "debootstrap: scripts/install-deps.sh --image)")

PODMAN = "podman"
# crun fails on this kind of kernel (limits, cgroups v1): runc, and limits
# the runtime can set.
RUN_OPTS = ["--runtime", "runc", "--ulimit", "nofile=4096:4096",
            "--ulimit", "nproc=4096:4096", "--network=host"]
COMPRESSED_LIMIT = 40 * 1000 * 1000
UID = 10001


def podman(*args, timeout=120, check=True, **kw):
    p = subprocess.run([PODMAN] + list(args), capture_output=True, text=True,
                       timeout=timeout, **kw)
    if check and p.returncode != 0:
        raise AssertionError("podman %s: exit %d\n%s%s" % (
            " ".join(args[:3]), p.returncode, p.stdout[-3000:], p.stderr[-3000:]))
    return p


def image_ids():
    return set(podman("images", "-a", "-q", "--no-trunc").stdout.split())


class Built:
    """The image this module built, and what to remove at the end."""

    def __init__(self):
        self.tag = "localhost/pgfleet:test-%s" % uuid.uuid4().hex[:12]
        self.containers = []
        self.before = set()
        self.base_seconds = self.build_seconds = None

    def container_name(self):
        name = "pgfleet-test-%s" % uuid.uuid4().hex[:12]
        self.containers.append(name)
        return name

    def remove_containers(self):
        for name in self.containers:
            podman("rm", "-f", "-t", "0", "--ignore", name, check=False, timeout=60)
        self.containers = []

    def remove_images(self):
        if os.environ.get("PGFLEET_IMAGE_KEEP") == "1":
            return
        podman("rmi", "-f", "--ignore", self.tag, check=False, timeout=120)
        if os.environ.get("PGFLEET_IMAGE_KEEP_LAYERS") == "1":
            return  # the build stage's layers stay: podman build's cache
        # The build stage's layers are not parents of the final image: remove
        # by id every image that was not there before the build, in passes
        # (a parent goes only once its children are gone).
        left = image_ids() - self.before
        while left:
            for iid in sorted(left):
                podman("rmi", "--ignore", iid, check=False, timeout=120)
            now = image_ids() & left
            if now == left:
                break
            left = now


@pytest.fixture(scope="module")
def image():
    if shutil.which(PODMAN) is None:
        pytest.fail("PGFLEET_IMAGE_TESTS=1 but podman is not installed "
                    "(scripts/install-deps.sh --image)", pytrace=False)
    built = Built()
    try:
        t0 = time.monotonic()
        p = subprocess.run([os.path.join(fx.REPO, "scripts", "image-base.sh")],
                           capture_output=True, text=True, timeout=900)
        built.base_seconds = time.monotonic() - t0
        assert p.returncode == 0, "scripts/image-base.sh:\n" + p.stdout + p.stderr
        built.before = image_ids()
        t0 = time.monotonic()
        p = podman("build", "--pull=never", "--network=host", "--format", "docker",
                   "-t", built.tag, "-f", os.path.join(fx.REPO, "Dockerfile"), fx.REPO,
                   timeout=1200, check=False)
        built.build_seconds = time.monotonic() - t0
        assert p.returncode == 0, "podman build:\n%s%s" % (p.stdout[-5000:], p.stderr[-5000:])
        yield built
    finally:
        built.remove_containers()
        built.remove_images()


# ---------------------------------------------------------------------------
# What is in the image


def test_image_is_small_stripped_and_non_root(image):
    [info] = podman_json("image", "inspect", image.tag)
    assert info["Config"]["User"] == "%d:%d" % (UID, UID)
    assert info["Config"]["Entrypoint"] == ["/usr/local/bin/pgfleet"]
    assert not info["Config"].get("Cmd")
    health = info.get("Healthcheck") or info["Config"].get("Healthcheck") or {}
    assert "/healthz" in " ".join(health.get("Test", [])), info
    # compressed as a registry stores it (gzip, default level): the goal is
    # under 40 MB
    save = subprocess.Popen([PODMAN, "save", image.tag], stdout=subprocess.PIPE)
    counter = _Count()
    with gzip.GzipFile(fileobj=counter, mode="wb", compresslevel=6) as gz:
        shutil.copyfileobj(save.stdout, gz, 1 << 20)
    assert save.wait(timeout=300) == 0
    print("\nimage %s: %d bytes uncompressed, %d bytes gzip -6; base ready in %.1f s, "
          "built in %.1f s" % (image.tag, info["Size"], counter.n, image.base_seconds,
                               image.build_seconds))
    assert counter.n < COMPRESSED_LIMIT, "image is %d bytes compressed" % counter.n

    work = tempfile.mkdtemp(prefix="pgfleet-image-")
    name = image.container_name()
    try:
        podman("create", "--name", name, image.tag)
        binary = os.path.join(work, "pgfleet")
        podman("cp", "%s:/usr/local/bin/pgfleet" % name, binary)
        p = subprocess.run(["readelf", "-S", "-W", binary], capture_output=True,
                           text=True, check=True)
        assert ".symtab" not in p.stdout, "the binary in the image is not stripped"
    finally:
        podman("rm", "-f", name, check=False)
        shutil.rmtree(work, ignore_errors=True)
    # only what the runtime needs: no docs but copyright files, no man pages,
    # no translations, no apt lists; the default user is the pgfleet user
    p = podman("run", "--rm", *RUN_OPTS, "--read-only", "--entrypoint", "bash", image.tag,
               "-c", "id -u; id -g; find /usr/share/doc -type f ! -name copyright; "
                     "find /usr/share/man /usr/share/locale /usr/share/info "
                     "/var/lib/apt/lists -type f 2>/dev/null; true")
    lines = p.stdout.split()
    assert lines[:2] == [str(UID), str(UID)], p.stdout
    assert lines[2:] == [], "files the runtime does not need: %s" % lines[2:20]


class _Count:
    n = 0

    def write(self, b):
        self.n += len(b)
        return len(b)

    def flush(self):
        pass


def podman_json(*args):
    import json
    return json.loads(podman(*args).stdout)


# ---------------------------------------------------------------------------
# The container against the local service


def http_get(port, path, timeout=3.0):
    try:
        with urllib.request.urlopen("http://127.0.0.1:%d%s" % (port, path),
                                    timeout=timeout) as r:
            return r.status, r.read().decode(errors="replace")
    except urllib.error.HTTPError as e:
        return e.code, e.read().decode(errors="replace")
    except OSError:
        return None, ""


class Container:
    """pgfleet in the image, as the Deployment's pod runs it: its
    environment from k8s/pgfleet, the image's user, read-only root."""

    def __init__(self, image, service):
        self.env = k8s.container_env(k8s.render(""), "Deployment", "pgfleet", "pgfleet")
        assert self.env["DB_HOST"] == fx.SVC_NAME
        self.port, self.http_port = fx.free_port(), fx.free_port()
        overrides = {"PGFLEET_LISTEN_ADDR": "127.0.0.1",
                     "PGFLEET_LISTEN_PORT": str(self.port),
                     "PGFLEET_HTTP_LISTEN": "127.0.0.1:%d" % self.http_port,
                     "PGFLEET_DNS_SERVERS": fx.DNS_ADDR}
        assert set(overrides) == set(k8s.HOST_OVERRIDES)
        # A pod of a fleet (PGFLEET_PEERS) knows its own address from the
        # downward API: here one of the fixture's loopback addresses, which
        # the peers' name resolves to (a fleet of one), as in test_k8s.
        if "POD_IP" in self.env:
            overrides["POD_IP"] = k8s.TEST_POD_IP
            if self.env.get("PGFLEET_PEERS"):
                service.set_name(self.env["PGFLEET_PEERS"], [k8s.TEST_POD_IP])
        self.env.update(overrides)
        self.name = image.container_name()
        self.image = image
        self.service = service

    def start(self):
        # the password goes through a file, not the command line (ps)
        fd, path = tempfile.mkstemp(prefix="pgfleet-image-env-")
        try:
            with os.fdopen(fd, "w") as f:
                for k, v in self.env.items():
                    assert "\n" not in v
                    f.write("%s=%s\n" % (k, v))
            podman("run", "-d", "--name", self.name, *RUN_OPTS,
                   "--read-only", "--read-only-tmpfs=false", "--health-interval=disable",
                   "--cap-drop=ALL", "--security-opt", "no-new-privileges",
                   "--env-file", path, self.image.tag)
        finally:
            os.unlink(path)
        ok = fx.wait_until(lambda: http_get(self.http_port, "/readyz")[0] == 200 or
                           not self.running(), 30)
        assert ok and self.running(), self.logs()

    def running(self):
        p = podman("inspect", "--format", "{{.State.Running}}", self.name, check=False)
        return p.stdout.strip() == "true"

    def logs(self):
        p = podman("logs", self.name, check=False)
        return p.stdout + p.stderr

    def connect(self, **kw):
        conn = psycopg.connect(host="127.0.0.1", port=self.port, dbname=fx.APP_DB,
                               user=self.env["DB_USER"], password=self.env["DB_PASSWORD"],
                               connect_timeout=kw.pop("connect_timeout", 10), **kw)
        conn.prepare_threshold = None
        return conn

    def served_by(self, n):
        seen = []
        for _ in range(n):
            with self.connect(autocommit=True) as conn:
                seen.append(conn.execute("SELECT host(inet_server_addr())").fetchone()[0])
        return seen


def test_container_read_only_non_root_serves_every_pod_and_drains(image, service):
    c = Container(image, service)
    c.start()
    # the process is the image's user, seen from the host
    pid = int(podman("inspect", "--format", "{{.State.Pid}}", c.name).stdout)
    with open("/proc/%d/status" % pid) as f:
        uids = [line.split()[1:] for line in f if line.startswith(("Uid:", "Gid:"))]
    assert uids == [[str(UID)] * 4] * 2, uids
    assert c.env["PGFLEET_DNS_SERVERS"] == fx.DNS_ADDR

    # Each pod is used once its first health check passed: 30 connections,
    # each one transaction, reach all three (a few tries while they come up).
    rows = []
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        rows = c.served_by(30)
        if set(rows) == set(service.addrs):
            break
        time.sleep(0.5)
    assert set(rows) == set(service.addrs), (rows, c.logs())
    assert http_get(c.http_port, "/readyz")[0] == 200
    assert http_get(c.http_port, "/healthz")[0] == 200
    # the image's HEALTHCHECK command, run inside the container
    hc = podman("healthcheck", "run", c.name, check=False, timeout=30)
    assert hc.returncode == 0, hc.stdout + hc.stderr

    # SIGTERM while a transaction runs: it commits, new logins are refused,
    # the container exits 0 soon after, well within shutdown_timeout.
    timeout = float(c.env.get("PGFLEET_SHUTDOWN_TIMEOUT") or k8s.config_default("shutdown_timeout"))
    busy = c.connect(autocommit=False)
    pod, xid = busy.execute("SELECT host(inet_server_addr()), txid_current()").fetchone()
    result = {}

    def finish():
        try:
            busy.execute("SELECT pg_sleep(2)")
            busy.commit()
            result["done"] = time.monotonic()
        except BaseException as e:  # noqa: B902 - reported below
            result["error"] = e

    worker = threading.Thread(target=finish, daemon=True)
    worker.start()
    time.sleep(0.5)
    t0 = time.monotonic()
    podman("kill", "--signal", "TERM", c.name)
    assert fx.wait_until(lambda: http_get(c.http_port, "/readyz")[0] == 503, 2), \
        http_get(c.http_port, "/readyz")
    with pytest.raises(psycopg.OperationalError):
        c.connect(connect_timeout=3).close()
    assert worker.is_alive(), "the transaction ended too early: %r" % result
    worker.join(15)
    assert "error" not in result and "done" in result, result
    busy.close()
    w = podman("wait", c.name, timeout=timeout + 15)
    exited = time.monotonic()
    assert w.stdout.strip() == "0", w.stdout + c.logs()
    assert exited - t0 < timeout, "exit took %.1f s (shutdown_timeout %s)" % (exited - t0, timeout)
    idx = service.addrs.index(pod)
    assert service.psql(idx, "SELECT txid_status(%d)" % xid) == "committed"
    log = c.logs()
    assert 'msg="shutting down" reason=SIGTERM' in log, log
    assert "drained" in log, log
    assert c.env["DB_PASSWORD"] not in log
