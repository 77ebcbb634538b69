"""A current pgbouncer.ini fed to pgfleet (issue 18 item 3): every setting of
PgBouncer 1.25's reference configuration (its etc/pgbouncer.ini and
doc/config.md), each with a value other than its PgBouncer default, is
either honoured (accepted without a word by `pgfleet --check`, and shown by
SHOW CONFIG of a running pgfleet with that value) or refused by `pgfleet
--check` with one line naming it; never accepted and ignored, and never
accepted with a mere warning (include/config.h has no WARN row left).  The
table PGBOUNCER_SETTINGS is the one place that says which.  Values naming
files ("{tmp}/...") are files the test writes (auth_file, auth_hba_file,
auth_ident_file) or may create (logfile, opened at load).

Also: conf/pgfleet.ini is the full reference (every setting with its
default, and valid as shipped and with every line uncommented), and
the README's PgBouncer table lists every key of the table with the same status."""

import os
import re
import subprocess

import psycopg

import fixture as fx
from test_docs import config_settings

BINARY = os.environ.get("PGFLEET_BIN") or os.path.join(fx.REPO, "build", "pgfleet")
REFERENCE = os.path.join(fx.REPO, "conf", "pgfleet.ini")
PGBOUNCER_MD = os.path.join(fx.REPO, "README.md")  # its "PgBouncer setting -> pgfleet" table

HONOURED, REFUSED = "honoured", "refused"

# key: (a value other than PgBouncer's default, what pgfleet does with it)
PGBOUNCER_SETTINGS = {
    # generic
    "logfile": ("{tmp}/pgbouncer.log", HONOURED),  # opened at load: must be writable
    "pidfile": ("/var/run/pgbouncer/pgbouncer.pid", HONOURED),
    "listen_addr": ("127.0.0.1", HONOURED),
    "listen_port": ("6543", HONOURED),
    "unix_socket_dir": ("/var/run/pgfleet-compat", HONOURED),
    "unix_socket_mode": ("0700", HONOURED),
    "unix_socket_group": ("postgres", HONOURED),
    "user": ("postgres", REFUSED),
    "pool_mode": ("session", HONOURED),
    "max_client_conn": ("500", HONOURED),
    "default_pool_size": ("7", HONOURED),
    "min_pool_size": ("2", HONOURED),
    "reserve_pool_size": ("3", HONOURED),
    "reserve_pool_timeout": ("2", HONOURED),
    "max_db_connections": ("9", HONOURED),
    "max_db_client_connections": ("50", REFUSED),
    "max_user_connections": ("8", HONOURED),
    "max_user_client_connections": ("40", REFUSED),
    "server_round_robin": ("1", HONOURED),
    "track_extra_parameters": ("search_path", REFUSED),
    "ignore_startup_parameters": ("extra_float_digits", HONOURED),
    "peer_id": ("3", REFUSED),
    "disable_pqexec": ("1", REFUSED),
    "application_name_add_host": ("1", REFUSED),
    "conffile": ("/etc/pgbouncer/pgbouncer.ini", HONOURED),
    "service_name": ("pgb", HONOURED),
    "job_name": ("pgb", HONOURED),
    "stats_period": ("30", HONOURED),
    "max_prepared_statements": ("100", HONOURED),
    "scram_iterations": ("8192", REFUSED),
    # authentication
    "auth_type": ("hba", HONOURED),  # its rules: auth_hba_file, read by --check
    "auth_hba_file": ("{tmp}/pg_hba.conf", HONOURED),
    "auth_ident_file": ("{tmp}/pg_ident.conf", HONOURED),
    "auth_file": ("{tmp}/userlist.txt", HONOURED),
    "auth_user": ("pgbouncer", HONOURED),  # its plaintext password is in auth_file
    "auth_query": ("SELECT usename, passwd FROM pgbouncer.user_lookup($1)", HONOURED),
    "auth_dbname": ("authdb", HONOURED),  # a [databases] entry
    "auth_ldap_options": ('ldapurl="ldap://127.0.0.1/dc=example,dc=net?uid?sub"', REFUSED),
    "auth_pam_confdir": ("/etc/pgbouncer/pam.d", REFUSED),
    # logging
    "syslog": ("1", REFUSED),
    "syslog_ident": ("pgb", HONOURED),
    "syslog_facility": ("local0", HONOURED),
    "log_connections": ("0", HONOURED),
    "log_disconnections": ("0", HONOURED),
    "log_pooler_errors": ("0", HONOURED),
    "log_stats": ("0", HONOURED),
    "verbose": ("1", HONOURED),
    # console access
    "admin_users": ("admin", HONOURED),
    "stats_users": ("watcher", HONOURED),
    # connection sanity checks, timeouts
    "server_reset_query": ("DEALLOCATE ALL", HONOURED),
    "server_reset_query_always": ("1", HONOURED),
    "server_check_delay": ("10", REFUSED),
    "server_check_query": ("select 2", REFUSED),
    "server_fast_close": ("1", REFUSED),
    "server_lifetime": ("1800", HONOURED),
    "server_idle_timeout": ("300", HONOURED),
    "server_connect_timeout": ("5", HONOURED),
    "server_login_retry": ("3", HONOURED),
    "client_login_timeout": ("30", HONOURED),
    "autodb_idle_timeout": ("600", HONOURED),
    "pool_idle_timeout": ("60", REFUSED),
    "dns_max_ttl": ("30", HONOURED),
    "dns_nxdomain_ttl": ("5", HONOURED),
    "dns_zone_check_period": ("60", HONOURED),
    "resolv_conf": ("/etc/pgbouncer/resolv.conf", REFUSED),
    "query_wait_notify": ("0", REFUSED),
    "login_notify_message": ("welcome to pgbouncer", REFUSED),
    # TLS
    "client_tls_sslmode": ("allow", HONOURED),
    "client_tls_key_file": ("/etc/pgbouncer/server.key", HONOURED),
    "client_tls_cert_file": ("/etc/pgbouncer/server.crt", HONOURED),
    "client_tls_ca_file": ("/etc/pgbouncer/root.crt", HONOURED),
    "client_tls_protocols": ("tlsv1.3", HONOURED),
    "client_tls_ciphers": ("HIGH:!aNULL", HONOURED),
    "client_tls13_ciphers": ("TLS_AES_256_GCM_SHA384", HONOURED),
    "client_tls_ecdhcurve": ("prime256v1", HONOURED),
    "client_tls_dheparams": ("none", HONOURED),
    "server_tls_sslmode": ("require", HONOURED),
    "server_tls_ca_file": ("/etc/pgbouncer/server-ca.crt", HONOURED),
    "server_tls_key_file": ("/etc/pgbouncer/client.key", HONOURED),
    "server_tls_cert_file": ("/etc/pgbouncer/client.crt", HONOURED),
    "server_tls_protocols": ("tlsv1.3", HONOURED),
    "server_tls_ciphers": ("HIGH:!aNULL", HONOURED),
    "server_tls13_ciphers": ("TLS_AES_256_GCM_SHA384", HONOURED),
    # dangerous timeouts
    "query_timeout": ("60", HONOURED),
    "query_wait_timeout": ("60", HONOURED),
    "cancel_wait_timeout": ("5", REFUSED),
    "client_idle_timeout": ("3600", HONOURED),
    "idle_transaction_timeout": ("600", HONOURED),
    "transaction_timeout": ("600", REFUSED),
    "suspend_timeout": ("20", REFUSED),
    # low-level network settings
    "pkt_buf": ("8192", HONOURED),
    "max_packet_size": ("1048576", HONOURED),
    "listen_backlog": ("256", HONOURED),
    "sbuf_loopcnt": ("10", HONOURED),
    "so_reuseport": ("1", HONOURED),
    "tcp_defer_accept": ("0", HONOURED),
    "tcp_socket_buffer": ("65536", HONOURED),
    "tcp_keepalive": ("0", HONOURED),
    "tcp_keepcnt": ("5", HONOURED),
    "tcp_keepidle": ("60", HONOURED),
    "tcp_keepintvl": ("10", HONOURED),
    "tcp_user_timeout": ("10000", HONOURED),
}

# Honoured keys a running test pgfleet cannot take as they are (the fixture
# owns the sockets and users; auth_type = hba would refuse the fixture's
# logins unless its rules were written for them (test_hba.py runs it); TLS
# needs real files: test_tls.py and test_socket_and_cert.py run those).
NOT_IN_RUN = {"pidfile", "unix_socket_mode", "unix_socket_group", "listen_addr", "listen_port",
              "unix_socket_dir", "auth_type", "auth_file",
              "admin_users", "client_tls_sslmode", "client_tls_key_file",
              "client_tls_cert_file", "client_tls_ca_file", "server_tls_sslmode",
              "server_tls_ca_file", "server_tls_key_file", "server_tls_cert_file"}

# The files the table's "{tmp}/..." values name.  auth_user's password is
# plaintext (pgfleet logs in with it to run auth_query); the hba rules use
# the ident map, so auth_ident_file is read too.
USERLIST = '"app" "app-secret"\n"pgbouncer" "pgbouncer-secret"\n'
HBA = ("# TYPE  DATABASE  USER  ADDRESS       METHOD\n"
       "local   all       all                 peer map=compat\n"
       "host    all       all   127.0.0.1/32  md5\n"
       "host    all       all   ::1/128       scram-sha-256\n")
IDENT = "# MAP   SYSTEM-USERNAME  DATABASE-USERNAME\ncompat  postgres         app\n"


def settings(tmp_path):
    """PGBOUNCER_SETTINGS with "{tmp}" made tmp_path, and the files it names
    written."""
    (tmp_path / "userlist.txt").write_text(USERLIST)
    (tmp_path / "pg_hba.conf").write_text(HBA)
    (tmp_path / "pg_ident.conf").write_text(IDENT)
    return {k: (v.replace("{tmp}", str(tmp_path)), s)
            for k, (v, s) in PGBOUNCER_SETTINGS.items()}


def check(path):
    env = {k: v for k, v in os.environ.items() if not k.startswith("PGFLEET_")}
    p = subprocess.run([BINARY, "--check", path], capture_output=True, text=True, env=env,
                       timeout=20)
    return p.returncode, p.stderr.strip().splitlines()


def pgbouncer_ini(tmp_path, statuses):
    """A pgbouncer.ini (PgBouncer's section name) with the keys of the given
    statuses; {key: line number}."""
    path = tmp_path / "pgbouncer.ini"
    lines = ["[databases]", "app = host=127.0.0.1 port=5432 dbname=app",
             "authdb = host=127.0.0.1 port=5432 dbname=postgres", "", "[pgbouncer]"]
    where = {}
    for key, (value, status) in settings(tmp_path).items():
        if status in statuses:
            lines.append("%s = %s" % (key, value))
            where[key] = len(lines)
    path.write_text("\n".join(lines) + "\n")
    return str(path), where


def named(lines, key):
    return [l for l in lines if "key '%s'" % key in l]


def test_every_pgbouncer_setting_is_honoured_or_refused(tmp_path):
    path, where = pgbouncer_ini(tmp_path, (HONOURED, REFUSED))
    rc, lines = check(path)
    assert rc == 1, lines
    problems = []
    for key, (value, status) in settings(tmp_path).items():
        got = named(lines, key)
        if status == REFUSED:
            want = "%s:%d: key '%s': " % (path, where[key], key)
            if not any(l.startswith(want) for l in got):
                problems.append("%s = %s: expected refused, got %r" % (key, value, got))
        elif got:
            problems.append("%s = %s: expected %s, got %r" % (key, value, status, got))
    assert not problems, "\n".join(problems + ["--check said:"] + lines)
    # one line per refused key, nothing else
    assert len(lines) == sum(1 for v in PGBOUNCER_SETTINGS.values() if v[1] == REFUSED), lines


def test_the_honoured_load_without_a_word(tmp_path):
    """No setting is accepted with a warning: the honoured ones load silently."""
    path, _ = pgbouncer_ini(tmp_path, (HONOURED,))
    rc, lines = check(path)
    assert rc == 0 and lines == [], lines


def test_honoured_settings_show_in_show_config(service, pgfleet, tmp_path):
    settings_ = {k: v for k, (v, s) in settings(tmp_path).items()
                 if s == HONOURED and k not in NOT_IN_RUN}
    settings_["admin_users"] = "admin"
    fleet = pgfleet(settings=settings_,
                    databases={fx.APP_DB: "host=%s port=%d dbname=%s"
                               % (fx.SVC_NAME, fx.PG_PORT, fx.APP_DB),
                               "authdb": "host=%s port=%d dbname=%s"
                               % (fx.SVC_NAME, fx.PG_PORT, fx.APP_DB)},
                    users={fx.APP_USER: fx.APP_PASSWORD, "admin": "admin-secret",
                           "pgbouncer": "pgbouncer-secret"})
    with psycopg.connect(fleet.dsn("admin", "admin-secret", "pgfleet"),
                         autocommit=True) as conn:
        conn.prepare_threshold = None
        shown = {r[0]: r[1] for r in conn.execute("SHOW CONFIG").fetchall()}
    wrong = {k: (v, shown.get(k)) for k, v in settings_.items() if shown.get(k) != v}
    assert not wrong, "key: (set, SHOW CONFIG): %r" % wrong
    # and it serves
    with fleet.connect() as conn:
        assert conn.execute("SELECT 1").fetchone() == (1,)
    # logfile: the log goes to the file too (log_connections is off here)
    with open(settings_["logfile"]) as f:
        assert "msg=listening" in f.read()


def test_database_and_user_parameters_load_without_a_word(tmp_path):
    """PgBouncer's per-database pool and auth_query parameters and the
    [users] section's max_user_connections are honoured (no line)."""
    ini = tmp_path / "pgbouncer.ini"
    ini.write_text(
        "[databases]\n"
        "app = host=127.0.0.1 port=5432 dbname=app min_pool_size=1 reserve_pool_size=2"
        " max_db_connections=5 server_lifetime=60 auth_user=pgbouncer"
        " auth_query='SELECT usename, passwd FROM pgbouncer.user_lookup($1)'"
        " auth_dbname=authdb\n"
        "app2 = host=127.0.0.1 dbname=app reserve_pool=2\n"
        "authdb = host=127.0.0.1 dbname=postgres\n"
        "[pgbouncer]\nauth_type = trust\n"
        "[users]\napp = max_user_connections=3\n")
    rc, lines = check(str(ini))
    assert rc == 0 and lines == [], lines


# ---- conf/pgfleet.ini, the reference ---------------------------------------------------


def reference_lines():
    out = {}
    section = None
    with open(REFERENCE) as f:
        for line in f:
            m = re.match(r"\s*\[(\w+)\]", line)
            if m:
                section = m.group(1)
                continue
            m = re.match(r"^;?(\w+)\s*=\s*(.*?)\s*$", line)
            if section == "pgfleet" and m:
                out.setdefault(m.group(1), (m.group(2), line.startswith(";")))
    return out


def test_reference_config_is_valid():
    rc, lines = check(REFERENCE)
    assert rc == 0 and lines == [], lines


def test_reference_config_lists_every_setting_with_its_default():
    ref = reference_lines()
    problems = []
    for name, _, default in config_settings():
        if name not in ref:
            problems.append("%s is not in conf/pgfleet.ini" % name)
        elif ref[name][1] and ref[name][0] != default:
            problems.append(";%s = %s in conf/pgfleet.ini, the default is %r"
                            % (name, ref[name][0], default))
    for name in set(ref) - {n for n, _, _ in config_settings()}:
        problems.append("conf/pgfleet.ini lists %s, which is no setting" % name)
    assert not problems, "\n".join(problems)


def test_reference_config_with_every_line_uncommented_is_valid(tmp_path):
    text = open(REFERENCE).read()
    text = re.sub(r"(?m)^;(\w+\s*=)", r"\1", text)
    path = tmp_path / "pgfleet.ini"
    path.write_text(text)
    (tmp_path / "userlist.txt").write_text(open(os.path.join(fx.REPO, "conf",
                                                             "userlist.txt")).read())
    rc, lines = check(str(path))
    assert rc == 0 and lines == [], lines


def test_example_userlist_logs_in(service, pgfleet):
    """conf/userlist.txt's entries work: its md5 line is admin-secret."""
    users = {}
    with open(os.path.join(fx.REPO, "conf", "userlist.txt")) as f:
        for line in f:
            m = re.match(r'"([^"]*)"\s+"([^"]*)"', line)
            if m:
                users[m.group(1)] = m.group(2)
    assert users["admin"].startswith("md5")
    fleet = pgfleet(settings={"admin_users": "admin", "auth_type": "md5"}, users=users)
    with psycopg.connect(fleet.dsn("admin", "admin-secret", "pgfleet"),
                         autocommit=True) as conn:
        conn.prepare_threshold = None
        assert conn.execute("SHOW VERSION").fetchone()


# ---- the README's PgBouncer table ---------------------------------------------------------------


def pgbouncer_md_rows():
    rows = {}
    with open(PGBOUNCER_MD) as f:
        inside = False
        for line in f:
            if line.startswith("### PgBouncer setting"):
                inside = True
                continue
            if not inside:
                continue
            if line.startswith("#") and "[pgbouncer]" not in line:
                break  # the [databases] parameters' table follows
            cells = [c.strip() for c in line.strip().strip("|").split("|")]
            m = re.fullmatch(r"`(\w+)`", cells[0]) if line.startswith("|") else None
            if m and len(cells) >= 2:
                rows[m.group(1)] = cells[1]
    return rows


def test_docs_pgbouncer_md_lists_every_key_with_its_status():
    rows = pgbouncer_md_rows()
    problems = []
    for key, (_, status) in PGBOUNCER_SETTINGS.items():
        cell = rows.get(key)
        if cell is None:
            problems.append("`%s` is not in the README's PgBouncer table" % key)
            continue
        word = cell.split()[0].strip("*").lower() if cell else ""
        ok = {HONOURED: ("same", "different"), REFUSED: ("refused",)}[status]
        if word not in ok:
            problems.append("`%s`: the README's PgBouncer table says %r, the table says %s"
                            % (key, cell, status))
    assert not problems, "\n".join(problems)


# ---- pidfile ------------------------------------------------------------------------


def test_pidfile_written_refused_when_live_replaced_when_stale(service, pgfleet, tmp_path):
    pidfile = tmp_path / "pgfleet.pid"
    fleet = pgfleet(settings={"pidfile": str(pidfile)})
    assert pidfile.read_text() == "%d\n" % fleet.pid
    # a second one with the same pidfile: refused while the first runs
    ini = tmp_path / "second.ini"
    ini.write_text("[databases]\napp = host=%s\n[pgfleet]\nauth_type = trust\n"
                   "listen_addr = 127.0.0.1\nlisten_port = %d\nhttp_listen =\npidfile = %s\n"
                   % (fx.pod_addr(0), fx.free_port(), pidfile))
    env = {k: v for k, v in os.environ.items() if not k.startswith("PGFLEET_")}
    p = subprocess.run([BINARY, str(ini)], capture_output=True, text=True, env=env, timeout=20)
    assert p.returncode == 2, p.stderr
    assert 'msg="pidfile names a running process"' in p.stderr and \
        "pid=%d" % fleet.pid in p.stderr, p.stderr
    assert pidfile.read_text() == "%d\n" % fleet.pid  # left alone
    assert fleet.stop() == 0
    assert not pidfile.exists()
    # a stale one (its process is gone) is replaced
    pidfile.write_text("%d\n" % fleet.pid)
    again = pgfleet(settings={"pidfile": str(pidfile)})
    assert pidfile.read_text() == "%d\n" % again.pid


def test_listen_addr_list(service, pgfleet):
    """listen_addr is a comma-separated list, as PgBouncer's."""
    second = fx.NET_PREFIX + ".250"
    fleet = pgfleet(settings={"listen_addr": "127.0.0.1, %s" % second})
    for host in ("127.0.0.1", second):
        with psycopg.connect(fleet.dsn(), host=host) as conn:
            assert conn.execute("SELECT 1").fetchone() == (1,)
    fleet.wait_log(r'msg=listening addr=%s:%d' % (re.escape(second), fleet.port))


def test_unix_socket_mode_and_group(service, pgfleet, tmp_path):
    import grp
    import stat
    sockdir = tmp_path / "sock"
    sockdir.mkdir()
    group = grp.getgrgid(os.getegid() if os.getegid() else 0).gr_name
    for name in ("postgres", "daemon", "nogroup"):
        try:
            group = grp.getgrnam(name).gr_name
            break
        except KeyError:
            pass
    fleet = pgfleet(settings={"unix_socket_dir": str(sockdir), "unix_socket_mode": "0770",
                              "unix_socket_group": group})
    st = os.stat(sockdir / (".s.PGSQL.%d" % fleet.port))
    assert stat.S_IMODE(st.st_mode) == 0o770
    assert grp.getgrgid(st.st_gid).gr_name == group


def test_unknown_unix_socket_group_stops_start_up(tmp_path):
    ini = tmp_path / "p.ini"
    ini.write_text("[databases]\napp = host=%s\n[pgfleet]\nauth_type = trust\n"
                   "listen_addr = 127.0.0.1\nlisten_port = %d\nhttp_listen =\n"
                   "unix_socket_dir = %s\nunix_socket_group = no-such-group-here\n"
                   % (fx.pod_addr(0), fx.free_port(), tmp_path))
    env = {k: v for k, v in os.environ.items() if not k.startswith("PGFLEET_")}
    p = subprocess.run([BINARY, str(ini)], capture_output=True, text=True, env=env, timeout=20)
    assert p.returncode != 0, p.stderr
    assert 'msg="cannot set unix socket group"' in p.stderr and "no such group" in p.stderr, \
        p.stderr
