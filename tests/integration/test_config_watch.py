"""config_watch (issue 20, item 4b): a configuration file that changes is
applied as on SIGHUP, whether it is rewritten in place, replaced by an
atomic rename, or updated the way Kubernetes updates a mounted ConfigMap (a
swap of the "..data" symlink).  The log says which keys changed (old -> new
values, secrets named only) and which wait for a restart; a broken file is
refused and the old configuration stays."""

import os
import re
import shutil
import time

import pytest

import fixture as fx
from test_admin import ADMIN, USERS, show

SETTINGS = {"admin_users": ADMIN, "default_pool_size": 20}


def config_value(fleet, key):
    _, rows = show(fleet, "CONFIG")
    return {r["key"]: r["value"] for r in rows}[key]


def wait_config(fleet, key, value, timeout=15.0):
    """SHOW CONFIG shows key = value within `timeout` seconds."""
    deadline = time.monotonic() + timeout
    while True:
        got = config_value(fleet, key)
        if got == str(value):
            return
        if time.monotonic() > deadline:
            raise AssertionError("%s is %r, not %r, %.0f s after the change\n%s"
                                 % (key, got, value, timeout, fleet.log_tail()))
        time.sleep(0.2)


def edited(text, key, value):
    line = "%s = %s" % (key, value)
    pat = re.compile(r"^%s\s*=.*$" % re.escape(key), re.M)
    return pat.sub(line, text) if pat.search(text) else text.rstrip("\n") + "\n" + line + "\n"


def read_ini(fleet):
    with open(fleet.ini_path) as f:
        return f.read()


def write_in_place(fleet, text):
    with open(fleet.ini_path, "w") as f:  # truncate and write: the same inode
        f.write(text)


def write_by_rename(fleet, text):
    tmp = fleet.ini_path + ".tmp"
    with open(tmp, "w") as f:
        f.write(text)
    os.rename(tmp, fleet.ini_path)


class ConfigMapPgfleet(fx.Pgfleet):
    """pgfleet reading its file from a directory laid out as the kubelet
    mounts a ConfigMap: cm/..2026_<n>/pgfleet.ini, cm/..data -> ..2026_<n>,
    cm/pgfleet.ini -> ..data/pgfleet.ini."""

    generation = 0

    def _prepare(self):
        env = super()._prepare()
        self.cm = os.path.join(self.workdir, "cm")
        first = os.path.join(self.cm, "..2026_0")
        os.makedirs(first)
        shutil.move(self.ini_path, os.path.join(first, "pgfleet.ini"))
        os.symlink("..2026_0", os.path.join(self.cm, "..data"))
        os.symlink("..data/pgfleet.ini", os.path.join(self.cm, "pgfleet.ini"))
        self.ini_path = os.path.join(self.cm, "pgfleet.ini")
        return env


def write_configmap(fleet, text):
    """What the kubelet does: a new timestamped directory, a temporary
    symlink to it renamed over ..data (atomic), the old directory removed."""
    old = os.readlink(os.path.join(fleet.cm, "..data"))
    fleet.generation += 1
    new = "..2026_%d" % fleet.generation
    os.makedirs(os.path.join(fleet.cm, new))
    with open(os.path.join(fleet.cm, new, "pgfleet.ini"), "w") as f:
        f.write(text)
    tmp = os.path.join(fleet.cm, "..data_tmp")
    os.symlink(new, tmp)
    os.rename(tmp, os.path.join(fleet.cm, "..data"))
    shutil.rmtree(os.path.join(fleet.cm, old))


@pytest.fixture
def configmap_pgfleet():
    group = fx.PgfleetGroup()

    def start(**kw):
        p = ConfigMapPgfleet(**kw)
        group.instances.append(p)
        p.start()
        return p

    yield start
    problems = group.close()
    if problems:
        pytest.fail("\n".join(problems), pytrace=False)


def check_change_applied(fleet, write):
    """A runtime setting and a database entry change; both are applied and
    logged with their old and new values."""
    log_start = len(fleet.log_text())
    text = edited(read_ini(fleet), "default_pool_size", 7)
    text = edited(text, "query_wait_timeout", 33)
    write(fleet, text)
    wait_config(fleet, "default_pool_size", 7)
    wait_config(fleet, "query_wait_timeout", 33)
    fleet.wait_log(r'msg="config setting changed" key=default_pool_size old=20 new=7 applied=yes')
    log = fleet.log_text()[log_start:]
    assert "config file changed: reloading" in log
    assert 'msg="config reloaded"' in log
    # One burst, one reload (by worker 0; every worker logs "config reloaded").
    assert log.count("config file changed: reloading") == 1, log


def test_rewrite_in_place(service, pgfleet):
    fleet = pgfleet(settings=dict(SETTINGS), users=dict(USERS))
    check_change_applied(fleet, write_in_place)


def test_atomic_rename(service, pgfleet):
    fleet = pgfleet(settings=dict(SETTINGS), users=dict(USERS))
    check_change_applied(fleet, write_by_rename)


def test_configmap_symlink_swap(service, configmap_pgfleet):
    fleet = configmap_pgfleet(settings=dict(SETTINGS), users=dict(USERS))
    check_change_applied(fleet, write_configmap)
    # And again: the watch follows the new target, not the first one.
    text = edited(read_ini(fleet), "default_pool_size", 9)
    write_configmap(fleet, text)
    wait_config(fleet, "default_pool_size", 9)


def test_database_entry_change(service, pgfleet):
    fleet = pgfleet(settings=dict(SETTINGS), users=dict(USERS))
    with fleet.connect() as c:
        assert c.execute("SELECT 1").fetchone()[0] == 1
    text = read_ini(fleet).replace(
        "[databases]\n", "[databases]\nother = host=%s port=%d dbname=%s pool_size=3\n"
        % (fx.SVC_NAME, fx.PG_PORT, fx.APP_DB), 1)
    write_by_rename(fleet, text)
    fleet.wait_log(r'msg="config reloaded".*databases=other\(added\)')
    with fleet.connect(dbname="other") as c:
        assert c.execute("SELECT 1").fetchone()[0] == 1


def test_restart_setting_logged_not_applied(service, pgfleet):
    fleet = pgfleet(settings=dict(SETTINGS), users=dict(USERS))
    before = config_value(fleet, "listen_backlog")
    text = edited(read_ini(fleet), "listen_backlog", 77)
    text = edited(text, "default_pool_size", 5)
    write_in_place(fleet, text)
    wait_config(fleet, "default_pool_size", 5)
    fleet.wait_log(r'msg="config setting changed" key=listen_backlog old=%s new=77 '
                   r'applied="no, restart needed"' % before)
    fleet.wait_log(r'msg="config reload: restart needed for" settings=listen_backlog')
    assert config_value(fleet, "listen_backlog") == before


def test_secret_value_not_logged(service, pgfleet):
    fleet = pgfleet(settings=dict(SETTINGS, health_check_password="first-secret-pw"),
                    users=dict(USERS))
    write_in_place(fleet, edited(read_ini(fleet), "health_check_password", "second-secret-pw"))
    fleet.wait_log(r'msg="config setting changed" key=health_check_password '
                   r'old="\(not shown\)" new="\(not shown\)"')
    log = fleet.log_text()
    assert "first-secret-pw" not in log and "second-secret-pw" not in log


def test_broken_file_keeps_old_configuration(service, pgfleet):
    fleet = pgfleet(settings=dict(SETTINGS), users=dict(USERS))
    text = edited(read_ini(fleet), "pool_mode", "sesion")
    write_by_rename(fleet, text)
    line = [n for n, l in enumerate(text.splitlines(), 1) if l.startswith("pool_mode")][0]
    fleet.wait_log(r"msg=\"config error\" error=\"%s:%d: key 'pool_mode'"
                   % (re.escape(fleet.ini_path), line))
    fleet.wait_log(r'msg="config reload refused"')
    assert config_value(fleet, "pool_mode") == "transaction"
    with fleet.connect() as c:
        assert c.execute("SELECT 1").fetchone()[0] == 1
    # Refused once, not again on every tick.
    time.sleep(2.5)
    assert fleet.log_text().count("config reload refused") == fleet.workers
    # Fixed: applied.
    write_by_rename(fleet, edited(text, "pool_mode", "session"))
    wait_config(fleet, "pool_mode", "session")


def test_config_watch_off(service, pgfleet):
    fleet = pgfleet(settings=dict(SETTINGS, config_watch=0), users=dict(USERS))
    write_in_place(fleet, edited(read_ini(fleet), "default_pool_size", 6))
    time.sleep(3)
    assert config_value(fleet, "default_pool_size") == "20"
    assert "config file changed" not in fleet.log_text()
    fleet.reload()  # SIGHUP still works
    wait_config(fleet, "default_pool_size", 6)


def test_included_file_watched(service, pgfleet):
    fleet = pgfleet(settings=dict(SETTINGS), users=dict(USERS))
    inc = os.path.join(os.path.dirname(fleet.ini_path), "extra.ini")
    with open(inc, "w") as f:
        f.write("query_wait_timeout = 44\n")
    write_by_rename(fleet, read_ini(fleet) + "%include extra.ini\n")
    wait_config(fleet, "query_wait_timeout", 44)
    with open(inc, "w") as f:
        f.write("query_wait_timeout = 55\n")
    wait_config(fleet, "query_wait_timeout", 55)


def test_auth_file_watched(service, pgfleet):
    """A user added to auth_file logs in without a SIGHUP."""
    import psycopg
    fleet = pgfleet(settings=dict(SETTINGS), users=dict(USERS))
    # the new user logs in to PostgreSQL as the app user (user= in the entry)
    text = read_ini(fleet).replace(
        "[databases]\n", "[databases]\nviaapp = host=%s port=%d dbname=%s user=%s password=%s\n"
        % (fx.SVC_NAME, fx.PG_PORT, fx.APP_DB, fx.APP_USER, fx.APP_PASSWORD), 1)
    write_by_rename(fleet, text)
    fleet.wait_log(r'databases=viaapp\(added\)')
    with pytest.raises(psycopg.OperationalError):
        psycopg.connect(fleet.dsn(user="newcomer", password="newcomer-pw", dbname="viaapp"))
    with open(fleet.auth_file, "a") as f:
        f.write('"newcomer" "newcomer-pw"\n')

    def logs_in():
        try:
            with psycopg.connect(fleet.dsn(user="newcomer", password="newcomer-pw",
                                           dbname="viaapp")) as c:
                return c.execute("SELECT 1").fetchone()[0] == 1
        except psycopg.OperationalError:
            return False
    assert fx.wait_until(logs_in, 15), fleet.log_tail()
    fleet.wait_log(r'msg="config reloaded".*changed=users')
