"""Settings pgfleet accepts but does not implement (issue 16 item 5,
CONFIG_UNIMPLEMENTED in include/config.h): never silently ignored.  A value
other than the default is refused at start-up, by --check, by SIGHUP and
RELOAD (the old configuration kept, the error logged) and by SET, with one
line naming file, line and key (or the environment variable).  PgBouncer's
knobs that no client could notice load with a warning line."""

import os
import re
import subprocess

import psycopg
import pytest

import fixture as fx
from test_admin import ADMIN, ADMIN_PW, USERS, admin_conn, app_conn
from test_reload import config_value, ini_line, set_ini

SETTINGS = {"admin_users": ADMIN}
BINARY = os.environ.get("PGFLEET_BIN") or os.path.join(fx.REPO, "build", "pgfleet")
REFUSAL = "not implemented by pgfleet yet; remove it or set it to 0 (its default)"


def run(args, env=None, timeout=20):
    """pgfleet in the foreground; a configuration it accepts would make it
    serve until the timeout, which fails the test."""
    full = {k: v for k, v in os.environ.items() if not k.startswith("PGFLEET_")}
    full.update(env or {})
    return subprocess.run([BINARY] + args, capture_output=True, text=True, env=full,
                          timeout=timeout)


def ini(tmp_path, body):
    path = tmp_path / "pgfleet.ini"
    path.write_text("[databases]\napp = host=%s\n[pgfleet]\nauth_type = trust\n"
                    "listen_addr = 127.0.0.1\nlisten_port = %d\n%s"
                    % (fx.pod_addr(0), fx.free_port(), body))
    return str(path)


def test_start_refused_for_an_unimplemented_setting(tmp_path):
    path = ini(tmp_path, "peer_id = 10\n")
    p = run([path])
    assert p.returncode == 1, p.stdout + p.stderr
    assert p.stderr.strip() == "%s:7: key 'peer_id': %s" % (path, REFUSAL)
    # --check says the same
    p = run(["--check", path])
    assert p.returncode == 1
    assert p.stderr.strip() == "%s:7: key 'peer_id': %s" % (path, REFUSAL)


def test_start_refused_for_pgbouncer_limits_and_database_parameters(tmp_path):
    path = ini(tmp_path, "max_user_client_connections = 5\n")
    with open(path, "a") as f:
        # auth_user is implemented (issue 18): client_encoding is not
        f.write("[databases]\nother = host=%s client_encoding=UTF8 auth_user=pgbouncer\n"
                % fx.pod_addr(0))
    p = run([path])
    assert p.returncode == 1, p.stdout + p.stderr
    lines = p.stderr.strip().splitlines()
    assert "%s:7: key 'max_user_client_connections': %s" % (path, REFUSAL) in lines, lines
    assert ("%s:9: key 'other': client_encoding: not implemented by pgfleet yet; remove it"
            % path in lines), lines
    assert len(lines) == 2


def test_start_refused_for_an_unimplemented_environment_variable():
    env = {"DB_HOST": fx.pod_addr(0), "PGFLEET_AUTH_TYPE": "trust",
           "PGFLEET_LISTEN_ADDR": "127.0.0.1", "PGFLEET_LISTEN_PORT": str(fx.free_port()),
           "PGFLEET_HTTP_LISTEN": "", "PGFLEET_DISABLE_PQEXEC": "1"}
    p = run([], env=env)
    assert p.returncode == 1, p.stdout + p.stderr
    assert p.stderr.strip() == ("environment: PGFLEET_DISABLE_PQEXEC: not implemented by "
                                "pgfleet yet; remove it or set it to 0 (its default)")


def test_check_accepts_pgbouncer_knobs_without_a_warning(tmp_path):
    path = ini(tmp_path, "syslog_ident = bouncer\nmax_db_connections = 0\n")
    p = run(["--check", path])
    assert p.returncode == 0, p.stderr
    assert "warning" not in p.stderr, p.stderr


def test_pgbouncer_logging_knobs_are_settings_without_a_warning(service, pgfleet):
    """issue 18: no setting is accepted with a warning any more: PgBouncer's
    knobs that change nothing a client sees are settings (SHOW CONFIG)."""
    fleet = pgfleet(settings=dict(SETTINGS, syslog_ident="bouncer", job_name="nightly"),
                    users=dict(USERS))
    with app_conn(fleet) as conn:
        assert conn.execute("SELECT 1").fetchone() == (1,)
    # job_name (Windows only in PgBouncer too), syslog_ident: settings, no warning
    assert config_value(fleet, "job_name") == "nightly"
    assert config_value(fleet, "syslog_ident") == "bouncer"
    assert "config warning" not in fleet.log_text()


def test_sighup_and_reload_refuse_an_unimplemented_setting(service, pgfleet):
    fleet = pgfleet(settings=dict(SETTINGS), users=dict(USERS))
    app = app_conn(fleet)
    set_ini(fleet, "peer_id", 5)
    set_ini(fleet, "default_pool_size", 7)
    line = ini_line(fleet, "peer_id")
    want = (r"msg=\"config error\" error=\"%s:%d: key 'peer_id': not implemented "
            r"by pgfleet yet; remove it or set it to 0 \(its default\)\""
            % (re.escape(fleet.ini_path), line))
    fleet.reload()
    fleet.wait_log(r"(?s)SIGHUP.*" + want)
    fleet.wait_log(r'(?s)SIGHUP.*msg="config reload refused" errors=1')
    assert fleet.running
    # nothing half-applied: the old configuration is kept whole
    assert config_value(fleet, "default_pool_size") == "20"
    assert app.execute("SELECT 1").fetchone() == (1,)
    # RELOAD from the console: refused the same way, the reason in the error
    with admin_conn(fleet) as conn:
        with pytest.raises(psycopg.Error) as e:
            conn.execute("RELOAD")
        assert "1 error" in str(e.value) and "peer_id" in str(e.value)
        assert "not implemented" in str(e.value)
    # back to the default: the reload goes through
    set_ini(fleet, "peer_id", 0)
    with admin_conn(fleet) as conn:
        conn.execute("RELOAD")
    assert config_value(fleet, "default_pool_size") == "7"
    app.close()


def test_set_refuses_an_unimplemented_setting(service, pgfleet):
    fleet = pgfleet(settings=dict(SETTINGS), users=dict(USERS))
    with admin_conn(fleet) as conn:
        with pytest.raises(psycopg.Error) as e:
            conn.execute("SET peer_id = 3")
        assert "not implemented" in str(e.value)
        with pytest.raises(psycopg.Error) as e:
            conn.execute("SET server_fast_close = 1")
        assert "not implemented" in str(e.value)


def test_daemon_flag_is_refused_not_ignored(tmp_path):
    """PgBouncer's -d forks into the background; pgfleet does not, and a
    script that waits for the fork would hang: refused, saying why."""
    path = ini(tmp_path, "")
    for flag in ("-d", "--daemon"):
        p = run([flag, path])
        assert p.returncode == 1, p.stdout + p.stderr
        assert p.stderr.strip() == ("pgfleet: -d/--daemon is not supported: pgfleet runs in "
                                    "the foreground; start it from a supervisor (systemd, "
                                    "Kubernetes)")
