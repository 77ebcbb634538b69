"""Logging as docs/logging.md says (issue 6): one line per event on stderr, logfmt
for log_format=text and JSON for log_format=json with the same keys, and
never a password, a secret or query text, whatever clients send.

The same session runs once per format, with -v so that debug lines are
checked too: logins (good and bad passwords), queries with recognisable
text, a failing query, an unknown database, a prepared statement, the
shutdown."""

import json
import re
import uuid

import psycopg
import pytest

import fixture as fx

LEVELS = {"error", "warn", "info", "debug", "trace"}
TS_RE = re.compile(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z")
# logfmt: key=value, the value bare (no space, quote, '=' or backslash) or
# quoted with \" \\ \n \uXXXX escapes.
PAIR_RE = re.compile(r'([A-Za-z_][A-Za-z0-9_]*)=(?:"((?:[^"\\]|\\["\\n]|\\u[0-9a-f]{4})*)"'
                     r'|([^\s"=\\]+))(?: |$)')


def parse_logfmt(line):
    pairs, pos = [], 0
    while pos < len(line):
        m = PAIR_RE.match(line, pos)
        assert m, "not logfmt at %d: %r" % (pos, line)
        pairs.append((m.group(1), m.group(2) if m.group(3) is None else m.group(3)))
        pos = m.end()
    return pairs


def parse_json(line):
    obj = json.loads(line, object_pairs_hook=list)
    assert isinstance(obj, list), line
    for k, v in obj:
        assert isinstance(v, str), "non-string value in %r" % line
    return obj


def check_lines(text, fmt):
    """Every line is one event in the format; returns {msg: set(keys)}."""
    assert text.endswith("\n")
    keys_by_msg = {}
    for line in text.split("\n")[:-1]:
        pairs = parse_json(line) if fmt == "json" else parse_logfmt(line)
        names = [k for k, _ in pairs]
        assert names[:3] == ["ts", "level", "msg"], line
        assert len(set(names)) == len(names), "a key twice: %r" % line
        d = dict(pairs)
        assert TS_RE.fullmatch(d["ts"]), line
        assert d["level"] in LEVELS, line
        keys_by_msg.setdefault(d["msg"], set()).update(names)
    return keys_by_msg


def session(fleet, secrets):
    """Things a client does that must not leave their text in the log."""
    query_text, wrong_password, odd_db = secrets
    with fleet.connect() as conn:
        conn.prepare_threshold = None
        assert conn.execute("SELECT %s::text", (query_text,)).fetchone() == (query_text,)
        conn.execute("SELECT '%s-literal'" % query_text)
        with pytest.raises(psycopg.errors.DivisionByZero):
            conn.execute("SELECT 1/0 AS \"%s\"" % query_text)
        conn.execute("SELECT '%s-prepared' WHERE %%s" % query_text, (True,), prepare=True)
    with pytest.raises(psycopg.OperationalError):
        fleet.connect(password=wrong_password).close()
    with pytest.raises(psycopg.OperationalError):
        psycopg.connect(host=fleet.host, port=fleet.port, user=fx.APP_USER,
                        password=fx.APP_PASSWORD, dbname=odd_db, connect_timeout=10).close()


@pytest.mark.parametrize("fmt", ["text", "json"])
def test_every_line_parses_and_no_secret_is_logged(service, pgfleet, fmt):
    token = uuid.uuid4().hex
    secrets = ("query-text-" + token, "wrong-pass-" + token, 'odd "db\n' + token[:8])
    fleet = pgfleet(settings={"log_format": fmt, "health_check_period": 1}, args=("-v",))
    session(fleet, secrets)
    assert fleet.stop() == 0
    text = fleet.log_text()
    keys = check_lines(text, fmt)
    for msg in ("pgfleet started", "client login", "client closed", "shutting down",
                "replica added", "replica up", "pgfleet stopped"):
        assert msg in keys, (msg, sorted(keys))
    assert "client refused" in keys or any("refused" in m for m in keys), sorted(keys)
    for secret in (fx.APP_PASSWORD, fx.SUPERUSER_PASSWORD, secrets[0], secrets[1]):
        assert secret not in text, "%r in the log" % secret
    assert "1/0" not in text and "prepared' WHERE" not in text


def test_text_and_json_have_the_same_keys(service, pgfleet):
    seen = {}
    for fmt in ("text", "json"):
        token = uuid.uuid4().hex
        fleet = pgfleet(settings={"log_format": fmt, "health_check_period": 1}, args=("-v",))
        session(fleet, ("q-" + token, "p-" + token, "nodb" + token[:8]))
        assert fleet.stop() == 0
        seen[fmt] = check_lines(fleet.log_text(), fmt)
    common = set(seen["text"]) & set(seen["json"])
    assert len(common) >= 8, common
    for msg in common:
        assert seen["text"][msg] == seen["json"][msg], (msg, seen["text"][msg],
                                                         seen["json"][msg])
