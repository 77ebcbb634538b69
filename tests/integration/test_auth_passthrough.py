"""Issue 18 item 4: an auth_file holding only what pg_authid holds (SCRAM
secrets, md5 hashes) is enough to log in to the servers.  SCRAM
pass-through: a client's own proof gives pgfleet the ClientKey, and with
the secret's ServerKey it answers the server's SCRAM exchange itself,
provided the server stores the same secret (same salt and iterations)."""

import base64
import hashlib
import hmac
import os
import threading
import time

import psycopg
import pytest

import fixture as fx


def scram_secret(password, salt=None, iterations=4096):
    """PostgreSQL's pg_authid form of a SCRAM-SHA-256 verifier."""
    salt = salt if salt is not None else os.urandom(16)
    salted = hashlib.pbkdf2_hmac("sha256", password.encode(), salt, iterations)
    client_key = hmac.new(salted, b"Client Key", "sha256").digest()
    stored_key = hashlib.sha256(client_key).digest()
    server_key = hmac.new(salted, b"Server Key", "sha256").digest()
    b64 = lambda b: base64.b64encode(b).decode()  # noqa: E731
    return "SCRAM-SHA-256$%d:%s$%s:%s" % (iterations, b64(salt), b64(stored_key),
                                         b64(server_key))


def md5_secret(user, password):
    return "md5" + hashlib.md5((password + user).encode()).hexdigest()


def set_role(service, pods, user, secret):
    """The role user on the given pods, its stored password exactly
    `secret` (PostgreSQL takes a pre-hashed secret as is)."""
    for i in pods:
        service.psql(i, "DO $$BEGIN IF NOT EXISTS (SELECT FROM pg_roles WHERE rolname='%s') "
                        "THEN CREATE ROLE %s LOGIN; END IF; END$$; "
                        "ALTER ROLE %s PASSWORD '%s'; GRANT ALL ON SCHEMA public TO %s"
                        % (user, user, user, secret, user), dbname=fx.APP_DB)


def drop_role(service, pods, user):
    for i in pods:
        service.psql(i, "DROP OWNED BY %s; DROP ROLE IF EXISTS %s" % (user, user)
                     if service.psql(i, "SELECT 1 FROM pg_roles WHERE rolname='%s'" % user)
                     else "SELECT 1")


def server_addr(conn):
    return conn.execute("SELECT host(inet_server_addr())").fetchone()[0]


PASSWORD = "pass-through-secret"


def test_scram_secret_in_auth_file_logs_in_to_every_replica(service, pgfleet):
    user = "pt_scram"
    secret = scram_secret(PASSWORD)
    pods = range(len(service.addrs))
    set_role(service, pods, user, secret)
    try:
        fleet = pgfleet(users={user: secret}, settings={"default_pool_size": "4"})
        # several server connections at once: each a login with the keys
        # recovered from the first client's proof
        errors, seen = [], set()
        lock = threading.Lock()

        def worker():
            try:
                with fleet.connect(user=user, password=PASSWORD) as conn:
                    deadline = time.monotonic() + 10
                    n = 0
                    while n < 30 or (len(seen) < 3 and time.monotonic() < deadline):
                        n += 1
                        with conn.transaction():
                            a = server_addr(conn)
                            conn.execute("SELECT pg_sleep(0.005)")
                        with lock:
                            seen.add(a)
                    assert conn.execute("SELECT current_user").fetchone()[0] == user
            except Exception as e:  # noqa: BLE001
                errors.append(e)

        threads = [threading.Thread(target=worker) for _ in range(6)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(60)
        assert not errors, (errors, fleet.log_tail())
        assert seen == set(service.addrs), seen
        with pytest.raises(psycopg.OperationalError) as e:
            fleet.connect(user=user, password="wrong")
        assert "password authentication failed" in str(e.value)  # 28P01
        assert PASSWORD not in fleet.log_text()
    finally:
        drop_role(service, pods, user)


def test_scram_secret_with_another_salt_than_the_server_is_a_clear_error(service, pgfleet):
    user = "pt_salt"
    ours = scram_secret(PASSWORD)
    set_role(service, [0], user, scram_secret(PASSWORD))  # same password, another salt
    try:
        fleet = pgfleet(users={user: ours},
                        databases={"app": "host=%s port=5432 dbname=app" % service.addrs[0]})
        with pytest.raises(psycopg.OperationalError) as e:
            fleet.connect(user=user, password=PASSWORD)
        msg = str(e.value)
        assert "pass-through" in msg and '"%s"' % user in msg and "salt" in msg, msg
    finally:
        drop_role(service, [0], user)


def _hba_md5_for(service, pods, user):
    """Pods ask `user` for md5 (the fixture's pg_hba says scram-sha-256)."""
    saved = {}
    for i in pods:
        path = os.path.join(service.pods[i].datadir, "pg_hba.conf")
        with open(path) as f:
            saved[path] = f.read()
        with open(path, "w") as f:
            f.write("host all %s 127.0.0.0/8 md5\n" % user + saved[path])
        service.psql(i, "SELECT pg_reload_conf()")
    return saved


def _hba_restore(service, pods, saved):
    for path, text in saved.items():
        with open(path, "w") as f:
            f.write(text)
    for i in pods:
        service.psql(i, "SELECT pg_reload_conf()")


def test_md5_hash_in_auth_file_answers_an_md5_server(service, pgfleet):
    user = "pt_md5"
    secret = md5_secret(user, PASSWORD)
    pods = range(len(service.addrs))
    set_role(service, pods, user, secret)
    saved = _hba_md5_for(service, pods, user)
    try:
        fleet = pgfleet(users={user: secret}, settings={"auth_type": "md5"})
        seen = set()
        with fleet.connect(user=user, password=PASSWORD) as conn:
            deadline = time.monotonic() + 10  # a replica serves once its first check passed
            while seen != set(service.addrs) and time.monotonic() < deadline:
                seen.add(server_addr(conn))
        assert seen == set(service.addrs), seen
        with pytest.raises(psycopg.OperationalError) as e:
            fleet.connect(user=user, password="wrong")
        assert "password authentication failed" in str(e.value)  # 28P01
    finally:
        _hba_restore(service, pods, saved)
        drop_role(service, pods, user)


def test_md5_hash_towards_a_scram_server_names_user_and_reason(service, pgfleet):
    user = "pt_md5scram"
    set_role(service, [0], user, scram_secret(PASSWORD))
    try:
        fleet = pgfleet(users={user: md5_secret(user, PASSWORD)}, settings={"auth_type": "md5"},
                        databases={"app": "host=%s port=5432 dbname=app" % service.addrs[0]})
        with pytest.raises(psycopg.OperationalError) as e:
            fleet.connect(user=user, password=PASSWORD)
        msg = str(e.value)
        assert '"%s"' % user in msg and "md5 hash" in msg and "SCRAM" in msg, msg
    finally:
        drop_role(service, [0], user)


def test_scram_secret_and_a_cleartext_client(service, pgfleet):
    """auth_type = plain: the client's password itself gives the keys."""
    user = "pt_plain"
    secret = scram_secret(PASSWORD)
    set_role(service, [0], user, secret)
    try:
        fleet = pgfleet(users={user: secret}, settings={"auth_type": "plain"},
                        databases={"app": "host=%s port=5432 dbname=app" % service.addrs[0]})
        with fleet.connect(user=user, password=PASSWORD) as conn:
            assert conn.execute("SELECT current_user").fetchone()[0] == user
        with pytest.raises(psycopg.OperationalError) as e:
            fleet.connect(user=user, password="wrong")
        assert "password authentication failed" in str(e.value)
    finally:
        drop_role(service, [0], user)
