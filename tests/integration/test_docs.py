"""The reference in docs/ is the interface contract (issue 16 item 6); this
keeps it true.

Nothing here lists a setting, a command, a column, a metric, an option or a
variable: the names come from the code (include/config.h's CONFIG_SETTINGS,
the environment names in src/config*.c and src/authfile.c, getenv() calls,
log_*() call sites, error sites) and from one running pgfleet (SHOW HELP,
each SHOW's RowDescription, SHOW CONFIG, a /metrics scrape, --help).  Each
is compared with the tables in docs/*.md both ways, and a failure lists
exactly what is undocumented, documented but gone, or different.

The docs' format (docs/README.md): Markdown tables whose first header cell
names the kind of row (`setting`, `variable`, `option`, `command`,
`column`, `metric`, `message`, `SQLSTATE`), the name in backticks in the
first cell; a SHOW's `column` table follows its `### SHOW <NAME>` heading.
"""

import glob
import os
import re
import subprocess

import psycopg
import pytest

import fixture as fx

DOCS_DIR = os.path.join(fx.REPO, "docs")
SRC_DIR = os.path.join(fx.REPO, "src")
CONFIG_H = os.path.join(fx.REPO, "include", "config.h")

ADMIN, ADMIN_PW = "admin", "admin-secret"
STATS, STATS_PW = "watcher", "watcher-secret"
def _binary():
    return os.environ.get("PGFLEET_BIN") or os.path.join(fx.REPO, "build", "pgfleet")


# PostgreSQL type OIDs the console sends, by the names the docs use.
TYPE_NAMES = {25: "text", 23: "int4", 20: "int8", 1700: "numeric"}


# ---- reading the docs -----------------------------------------------------------


def _split_row(line):
    """The cells of a Markdown table row; a '|' inside backticks is text."""
    cells, cur, code = [], "", False
    body = line.strip()
    if body.startswith("|"):
        body = body[1:]
    if body.endswith("|"):
        body = body[:-1]
    for ch in body:
        if ch == "`":
            code = not code
        if ch == "|" and not code:
            cells.append(cur.strip())
            cur = ""
        else:
            cur += ch
    cells.append(cur.strip())
    return cells


class Table:
    def __init__(self, path, heading, header):
        self.path, self.heading, self.header, self.rows = path, heading, header, []

    @property
    def kind(self):
        return self.header[0].strip("` ").lower()

    def where(self):
        return "%s (%s)" % (os.path.relpath(self.path, fx.REPO), self.heading or "top")


def doc_tables():
    """Every table of docs/*.md, with the heading it stands under."""
    out = []
    for path in sorted(glob.glob(os.path.join(DOCS_DIR, "*.md"))):
        heading, table, fenced = "", None, False
        with open(path, encoding="utf-8") as f:
            lines = f.read().splitlines()
        for i, line in enumerate(lines):
            if line.startswith("```"):
                fenced = not fenced
            if fenced:
                continue
            if line.startswith("#"):
                heading = line.lstrip("#").strip()
            if not line.startswith("|"):
                table = None
                continue
            cells = _split_row(line)
            if table is None:
                table = Table(path, heading, cells)
                out.append(table)
            elif all(re.fullmatch(r":?-+:?", c) for c in cells if c):
                continue  # the separator row
            else:
                table.rows.append(cells)
    return out


def cell_name(cell):
    """The name a row stands for: its first `code` span, else the text."""
    m = re.search(r"`([^`]*)`", cell)
    return m.group(1) if m else cell.strip()


def cell_codes(cell):
    return re.findall(r"`([^`]*)`", cell)


def rows_of(kind):
    """{name: (cells, table)} of every table of that kind; a name listed
    twice is a problem of its own (returned second)."""
    found, dup = {}, []
    for t in doc_tables():
        if t.kind != kind:
            continue
        for r in t.rows:
            name = cell_name(r[0])
            if name in found:
                dup.append("%s `%s` documented twice: %s and %s"
                           % (kind, name, found[name][1].where(), t.where()))
            found[name] = (r, t)
    return found, dup


def col(table, row, name):
    """A row's cell under header `name` (None: no such column)."""
    for i, h in enumerate(table.header):
        if h.strip().lower() == name and i < len(row):
            return row[i]
    return None


def compare(what, source, code, docs, problems):
    """Both ways: what `source` (the code, a live answer) has that the docs
    lack, and what the docs have that it lacks."""
    for n in sorted(set(code) - set(docs)):
        problems.append("%s `%s` is in %s but not documented in docs/" % (what, n, source))
    for n in sorted(set(docs) - set(code)):
        problems.append("%s `%s` is documented in docs/ but not in %s" % (what, n, source))


def check(problems):
    assert not problems, "docs/ and the code disagree:\n  " + "\n  ".join(problems)


# ---- reading the code -------------------------------------------------------------


def c_scan(text):
    """(text with comments blanked out, same length and lines; [(pos, value)]
    of its string literals, adjacent ones joined as C joins them).  Character
    literals such as '"' are skipped, so they never start a string."""
    out, strings, i, n = [], [], 0, len(text)
    last_end = None
    while i < n:
        if text.startswith("/*", i) or text.startswith("//", i):
            if text[i + 1] == "*":
                j = text.find("*/", i + 2)
                j = n if j < 0 else j + 2
            else:
                j = text.find("\n", i)
                j = n if j < 0 else j
            out.append(re.sub(r"[^\n]", " ", text[i:j]))
            i = j
            continue
        c = text[i]
        if c in "\"'":
            j = i + 1
            while j < n and text[j] != c and text[j] != "\n":
                j += 2 if text[j] == "\\" else 1
            j = min(j + 1, n)
            out.append(text[i:j])
            if c == '"':
                value = _unescape_c(text[i + 1:j - 1])
                if last_end is not None and text[last_end:i].strip() == "":
                    strings[-1] = (strings[-1][0], strings[-1][1] + value)
                else:
                    strings.append((i, value))
                last_end = j
            i = j
            continue
        out.append(c)
        i += 1
    return "".join(out), strings


def _unescape_c(body):
    simple = {"n": "\n", "t": "\t", "r": "\r", "\\": "\\", '"': '"', "'": "'", "0": "\0"}
    return re.sub(r"\\(.)", lambda m: simple.get(m.group(1), m.group(1)), body)


def strip_c_comments(text):
    return c_scan(text)[0]


def c_strings(text):
    return [v for _, v in c_scan(text)[1]]


def config_settings():
    """[(name, type, default)] from CONFIG_SETTINGS(X) in include/config.h,
    in the header's order (extra X() arguments, if any, are ignored)."""
    with open(CONFIG_H) as f:
        raw = f.read()
    clean, strings = c_scan(raw)
    m = re.search(r"#define\s+CONFIG_SETTINGS\(X\)", clean)
    assert m, "include/config.h has no CONFIG_SETTINGS(X)"
    end = m.end()
    while True:  # the macro goes on while lines end in a backslash
        nl = clean.find("\n", end)
        if nl < 0 or not raw[end:nl].rstrip().endswith("\\"):
            end = len(clean) if nl < 0 else nl
            break
        end = nl + 1
    at = dict(strings)
    out = []
    for x in re.finditer(r"\bX\(\s*(\w+)\s*,\s*(\w+)\s*,\s*\"", clean[m.end():end]):
        out.append((x.group(1), x.group(2), at.get(m.end() + x.end() - 1)))
    assert out, "no X(name, type, \"default\") rows in CONFIG_SETTINGS"
    return out


def c_sources(pattern="*.c"):
    return sorted(glob.glob(os.path.join(SRC_DIR, pattern)))


def read(path):
    with open(path, errors="replace") as f:
        return f.read()


def env_names_in_code():
    """Environment variable names the code reads: upper-case string literals
    in the configuration's sources (config*.c, authfile.c, env*.c: the env
    table, DB_HOST & co), names passed to getenv() anywhere; a name ending
    in '_' (or '_%s') is a prefix, documented as PREFIX<SETTING>."""
    names = set()
    files = set(c_sources("config*.c") + c_sources("authfile*.c") + c_sources("auth_file*.c")
                + c_sources("env*.c"))
    for path in files:
        for lit in c_strings(read(path)):
            if re.fullmatch(r"[A-Z][A-Z0-9_]*_[A-Z0-9_]*(%s)?", lit):
                names.add(lit[:-2] if lit.endswith("%s") else lit)
    for path in c_sources():
        names.update(re.findall(r'\b(?:secure_)?getenv\s*\(\s*"([^"]+)"',
                                strip_c_comments(read(path))))
    return names


def _call_args(text, start):
    """Top-level arguments of the call whose '(' is just before `start`."""
    args, cur, depth, i = [], "", 1, start
    while i < len(text) and depth:
        ch = text[i]
        if ch == '"' or ch == "'":
            m = re.compile(r"%s(?:[^%s\\]|\\.)*%s" % (ch, ch, ch)).match(text, i)
            cur += m.group(0)
            i = m.end()
            continue
        if ch in "([{":
            depth += 1
        elif ch in ")]}":
            depth -= 1
            if not depth:
                break
        if ch == "," and depth == 1:
            args.append(cur)
            cur = ""
        else:
            cur += ch
        i += 1
    args.append(cur)
    return args


def log_calls_in_code():
    """{message: (first "file:line", set of keys)} of every
    log_error/warn/info/debug/trace(msg, key, value, ...) and
    log_kv(level, msg, ...) whose message is written literally (each branch
    of a ?: too); keys are the literal ones, every other argument."""
    out = {}
    for path in c_sources():
        text = strip_c_comments(read(path))
        for m in re.finditer(r"\blog_(error|warn|info|debug|trace|kv)\s*\(", text):
            args = _call_args(text, m.end())
            first = 1 if m.group(1) == "kv" else 0
            if len(args) <= first:
                continue
            keys = {k for a in args[first + 1::2] for k in c_strings(a)}
            for msg in c_strings(args[first]):
                line = text.count("\n", 0, m.start()) + 1
                where, known = out.get(msg, ("%s:%d" % (os.path.basename(path), line), set()))
                out[msg] = (where, known | keys)
    return out


def string_literals_in_code():
    lits = set()
    for path in c_sources():
        lits.update(c_strings(read(path)))
    return lits


_ERROR_CALL = re.compile(
    r"\b(?:client_close|admin_error|proto_error|refuse_parse|fail_waiting_clients|"
    r"refuse_socket)\s*\(")


def sqlstates_in_code():
    """SQLSTATEs pgfleet sends: 5-character codes at its error sites."""
    out = {}
    for path in c_sources():
        text = strip_c_comments(read(path))
        spots = []
        for m in _ERROR_CALL.finditer(text):
            spots += [(m.start(), a) for a in _call_args(text, m.end())]
        spots += [(m.start(), m.group(0)) for m in re.finditer(
            r"\bsqlstate\s*=\s*\"[0-9A-Z]{5}\"|#define\s+\w*SQLSTATE\w*\s+\"[0-9A-Z]{5}\"",
            text)]
        for pos, s in spots:
            for code in c_strings(s):
                if not re.fullmatch(r"[0-9A-Z]{5}", code):
                    continue
                if code != "00000" and re.search(r"\d", code):
                    out.setdefault(code, "%s:%d" % (os.path.basename(path),
                                                   text.count("\n", 0, pos) + 1))
    return out


# ---- the running pgfleet -------------------------------------------------------------


@pytest.fixture(scope="module")
def fleet(service, pgfleet_module):
    p = pgfleet_module(settings={"admin_users": ADMIN, "stats_users": STATS},
                       users={fx.APP_USER: fx.APP_PASSWORD, ADMIN: ADMIN_PW,
                              STATS: STATS_PW})
    # Some traffic, so that every per-replica family has series.
    assert p.wait_all_up(service.addrs, timeout=20), p.log_tail()
    with p.connect() as c:
        for _ in range(6):
            c.execute("SELECT 1").fetchone()
    return p


@pytest.fixture(scope="module")
def admin(fleet):
    conn = psycopg.connect(fleet.dsn(ADMIN, ADMIN_PW, "pgfleet"), autocommit=True)
    conn.prepare_threshold = None
    yield conn
    conn.close()


def live_help(admin):
    """SHOW HELP's NOTICE detail, as commands: SHOW X|Y -> SHOW X, SHOW Y;
    `PAUSE [<db>]` -> PAUSE; `REFRESH DNS` -> REFRESH DNS."""
    notices = []

    def keep(d):  # a Diagnostic is only valid inside the callback
        notices.append("\n".join(x for x in (d.message_primary, d.message_detail) if x))

    admin.add_notice_handler(keep)
    try:
        admin.execute("SHOW HELP")
    finally:
        admin.remove_notice_handler(keep)
    assert notices, "SHOW HELP sent no NOTICE"
    commands = []
    for line in "\n".join(notices).splitlines():
        words = re.match(r"\s*((?:[A-Z][A-Z_|]*\b\s*)+)", line)
        if not words:
            continue
        words = words.group(1).split()
        if words[0] == "SHOW" and len(words) > 1:
            commands += ["SHOW " + w for w in words[1].split("|") if w]
        elif "|" not in words[0]:
            commands.append(" ".join(words))
    assert commands, "no commands in SHOW HELP: %r" % notices
    return commands


def doc_command_name(cell):
    """`SET key = value` -> SET; `PAUSE [db]` -> PAUSE; `REFRESH DNS` -> REFRESH DNS."""
    words = []
    for w in cell_name(cell).split():
        if not re.fullmatch(r"[A-Z][A-Z_]*", w):
            break
        words.append(w)
    return " ".join(words)


def scrape(fleet):
    status, body = fleet.http_get("/metrics")
    assert status == 200, body
    types, helps, labels = {}, {}, {}
    for line in body.splitlines():
        m = re.match(r"# (HELP|TYPE) (\S+) (.*)", line)
        if m:
            (helps if m.group(1) == "HELP" else types)[m.group(2)] = m.group(3)
            continue
        if not line or line.startswith("#"):
            continue
        m = re.match(r"([a-zA-Z_:][a-zA-Z0-9_:]*)(\{.*\})? ", line)
        assert m, "unparsable sample %r" % line
        name = m.group(1)
        fam = name
        for suffix in ("_bucket", "_sum", "_count"):
            if name not in types and name.endswith(suffix) \
                    and types.get(name[:-len(suffix)]) == "histogram":
                fam = name[:-len(suffix)]
        keys = set(re.findall(r'([a-zA-Z_][a-zA-Z0-9_]*)="', m.group(2) or ""))
        if fam != name:
            keys.discard("le")
        labels.setdefault(fam, set()).update(keys)
    return types, helps, labels


# ---- (a) settings -----------------------------------------------------------------------


def test_settings_documented_with_the_codes_defaults(fleet, admin):
    problems = []
    code = {n: d for n, _, d in config_settings()}
    docs, dup = rows_of("setting")
    problems += dup
    compare("setting", "include/config.h CONFIG_SETTINGS", code, docs, problems)
    live = {r[0]: r for r in admin.execute("SHOW CONFIG").fetchall()}
    # the same list, unless the binary is not built from this tree
    for n in sorted(set(live) ^ set(code)):
        problems.append("setting `%s` is in %s but not in %s (stale build?)"
                        % (n, *(("SHOW CONFIG", "include/config.h") if n in live
                                else ("include/config.h", "SHOW CONFIG"))))
    for name, (row, table) in sorted(docs.items()):
        cell = col(table, row, "default")
        if cell is None:
            problems.append("%s: no `default` column" % table.where())
            continue
        codes = cell_codes(cell)
        doc_default = "" if codes and codes[0] == '""' else (codes[0] if codes else cell)
        if name in code and doc_default != code[name]:
            problems.append("setting `%s`: docs say default `%s`, include/config.h says `%s`"
                            % (name, doc_default, code[name]))
        if name in live and live[name][2] != code.get(name, live[name][2]):
            problems.append("setting `%s`: SHOW CONFIG's default `%s` is not the header's `%s`"
                            % (name, live[name][2], code.get(name)))
        changeable = (col(table, row, "changeable") or "").strip("` ")
        if name in live and (changeable == "yes") != (live[name][3] == "yes"):
            problems.append("setting `%s`: docs say changeable `%s`, SHOW CONFIG says `%s`"
                            % (name, changeable, live[name][3]))
    check(problems)


# ---- (b) admin commands and SHOW columns --------------------------------------------------


def test_admin_commands_documented(admin):
    problems = []
    live = live_help(admin)
    docs = {}
    for t in doc_tables():
        if t.kind == "command":
            for r in t.rows:
                name = doc_command_name(r[0])
                if name in docs:
                    problems.append("command `%s` documented twice" % name)
                docs[name] = (r, t)
                who = col(t, r, "who")
                if who is not None and not re.search(r"\badmin\b", who):
                    problems.append("command `%s`: `who` must name admin (admin_users may "
                                    "run everything), got %r" % (name, who))
    compare("admin command", "the live SHOW HELP", live, docs, problems)
    check(problems)


def test_who_may_run_each_command_as_documented(fleet, admin):
    """A stats_users user runs what the `who` column gives `stats`, and
    gets 42501 for the rest (refused before anything runs, so probing the
    admin-only commands changes nothing)."""
    problems = []
    live = set(live_help(admin))
    stats = psycopg.connect(fleet.dsn(STATS, STATS_PW, "pgfleet"), autocommit=True)
    try:
        for t in doc_tables():
            if t.kind != "command":
                continue
            for r in t.rows:
                name = doc_command_name(r[0])
                who = col(t, r, "who")
                if name not in live or who is None:
                    continue
                may = bool(re.search(r"\bstats\b", who))
                # required arguments get a value; optional ones are left out
                args = re.sub(r"\[[^\]]*\]", "", cell_name(r[0])[len(name):]).split()
                cmd = " ".join([name] + ["app" if a == "db" else "log_connections"
                                         if a == "key" else "1" if a == "value" else a
                                         for a in args])
                try:
                    stats.execute(cmd)
                    state = None
                except psycopg.Error as e:
                    state = e.sqlstate
                if may and state == "42501":
                    problems.append("`%s`: docs say stats_users may run it, pgfleet refuses "
                                    "with 42501" % cmd)
                elif not may and state != "42501":
                    problems.append("`%s`: docs say admin_users only, a stats_users user got "
                                    "%s" % (cmd, state or "no error"))
    finally:
        stats.close()
    check(problems)


def test_show_columns_documented_in_order(admin):
    problems = []
    shows = [c for c in live_help(admin) if c.startswith("SHOW ")]
    documented = {}
    for t in doc_tables():
        m = re.fullmatch(r"(SHOW [A-Z_]+)", t.heading)
        if m and t.kind == "column":
            documented[m.group(1)] = [(cell_name(r[0]), (col(t, r, "type") or "").strip("` "))
                                      for r in t.rows]
    headings = {t.heading for t in doc_tables() if re.fullmatch(r"SHOW [A-Z_]+", t.heading)}
    with open(os.path.join(DOCS_DIR, "admin.md")) as f:
        headings |= set(re.findall(r"^#+\s*(SHOW [A-Z_]+)\s*$", f.read(), re.M))
    for cmd in sorted(headings - set(shows)):
        problems.append("`### %s` is documented but SHOW HELP has no such command" % cmd)
    for cmd in shows:
        cur = admin.execute(cmd)
        live = [(d.name, TYPE_NAMES.get(d.type_code, str(d.type_code)))
                for d in (cur.description or [])]
        doc = documented.get(cmd, [])
        if live and cmd not in documented:
            problems.append("%s: no `### %s` section with a `column` table in docs/admin.md; "
                            "live columns: %s" % (cmd, cmd, ", ".join("%s %s" % c for c in live)))
            continue
        if [n for n, _ in live] != [n for n, _ in doc]:
            problems.append("%s: live columns %s, documented %s (missing: %s; extra: %s)"
                            % (cmd, [n for n, _ in live], [n for n, _ in doc],
                               sorted(set(n for n, _ in live) - set(n for n, _ in doc)),
                               sorted(set(n for n, _ in doc) - set(n for n, _ in live))))
            continue
        for (name, ltype), (_, dtype) in zip(live, doc):
            if ltype != dtype:
                problems.append("%s column `%s`: live type %s, documented %s"
                                % (cmd, name, ltype, dtype or "(none)"))
    check(problems)


def section_text(heading):
    """The text under `### <heading>` in docs/admin.md, up to the next heading."""
    with open(os.path.join(DOCS_DIR, "admin.md")) as f:
        text = f.read()
    m = re.search(r"^#+\s*%s\s*$(.*?)(?=^#)" % re.escape(heading), text + "\n#", re.M | re.S)
    return m.group(1) if m else ""


def test_show_lists_and_mem_rows_documented(admin):
    """SHOW LISTS and SHOW MEM have fixed rows (PgBouncer's names): the
    documented `Rows:` list equals the live first column, in order."""
    problems = []
    for cmd in ("SHOW LISTS", "SHOW MEM"):
        live = [r[0] for r in admin.execute(cmd).fetchall()]
        m = re.search(r"Rows:(.*?)(?:\n\n|$)", section_text(cmd), re.S)
        doc = cell_codes(m.group(1)) if m else []
        if live != doc:
            problems.append("%s: live rows %s, documented `Rows:` %s" % (cmd, live, doc))
    check(problems)


def test_http_paths_answer_as_documented(fleet):
    """Each documented path answers its documented status (the fixture's
    replicas are up, so /readyz is ready), any other path 404."""
    problems = []
    rows, dup = rows_of("path")
    problems += dup
    assert rows, "docs/ has no `path` table"
    for name, (row, table) in sorted(rows.items()):
        statuses = [int(x) for x in re.findall(r"\b\d{3}\b", col(table, row, "status") or "")]
        path = name if name.startswith("/") else "/no-such-path"
        status, body = fleet.http_get(path)
        if status not in statuses:
            problems.append("GET %s: status %d, documented %s" % (path, status, statuses))
    status, body = fleet.http_get("/healthz")
    if body != "ok\n":
        problems.append("GET /healthz: body %r, documented `ok`" % body)
    ok = fx.wait_until(lambda: fleet.http_get("/readyz") == (200, "ready\n"), 10)
    if not ok:
        problems.append("GET /readyz with every replica up: %r, documented 200 `ready`"
                        % (fleet.http_get("/readyz"),))
    check(problems)


# ---- (c) metrics -------------------------------------------------------------------------


def test_metric_families_documented(fleet):
    problems = []
    types, helps, labels = scrape(fleet)
    docs, dup = rows_of("metric")
    problems += dup
    compare("metric family", "a live /metrics scrape", types, docs, problems)
    for name, (row, table) in sorted(docs.items()):
        if name not in types:
            continue
        dtype = (col(table, row, "type") or "").strip("` ")
        if dtype != types[name]:
            problems.append("metric `%s`: live type %s, documented %s" % (name, types[name], dtype))
        dhelp = col(table, row, "help")
        if dhelp is not None and dhelp != helps.get(name):
            problems.append("metric `%s`: live help %r, documented %r"
                            % (name, helps.get(name), dhelp))
        # label names: the code spans outside parentheses (those list values)
        dlabels = set(cell_codes(re.sub(r"\([^)]*\)", "", col(table, row, "labels") or "")))
        if labels.get(name) and labels[name] != dlabels:
            problems.append("metric `%s`: live labels %s, documented %s"
                            % (name, sorted(labels[name]), sorted(dlabels)))
    check(problems)


# ---- (d) command line ------------------------------------------------------------------


def test_command_line_options_documented():
    p = subprocess.run([_binary(), "--help"], capture_output=True, text=True, timeout=10)
    assert p.returncode == 0, p.stderr
    live = set()
    for line in p.stdout.splitlines():
        m = re.match(r"\s+(-[A-Za-z0-9](?:,\s*--[\w-]+)?|--[\w-]+)\s", line)
        if m:
            live.update(re.findall(r"--?[\w-]+", m.group(1)))
    assert live, "no options in pgfleet --help:\n" + p.stdout
    docs = set()
    for t in doc_tables():
        if t.kind == "option":
            for r in t.rows:
                docs.update(c for c in cell_codes(r[0]) if c.startswith("-"))
    problems = []
    compare("command-line option", "pgfleet --help", live, docs, problems)
    check(problems)


# ---- (e) environment variables ------------------------------------------------------------


def test_environment_variables_documented():
    code = env_names_in_code()
    assert code, "found no environment variable names in src/"
    docs_rows, dup = rows_of("variable")
    problems = list(dup)
    # PGFLEET_<SETTING> stands for the prefix PGFLEET_
    docs = {re.sub(r"<[A-Z_]+>$", "", n) for n in docs_rows}
    compare("environment variable", "what src/ reads", code, docs, problems)
    check(problems)


# ---- log events and SQLSTATEs ----------------------------------------------------------


def test_log_messages_documented():
    code = log_calls_in_code()
    assert code, "found no log_*() call sites in src/"
    docs, dup = rows_of("message")
    problems = list(dup)
    for msg in sorted(set(code) - set(docs)):
        problems.append("log message `%s` (%s) is not documented in docs/logging.md"
                        % (msg, code[msg][0]))
    lits = string_literals_in_code()
    for msg in sorted(set(docs) - lits):
        problems.append("log message `%s` is documented but no string in src/ says it" % msg)
    # Keys: every key a call site passes is documented for its message (a
    # wrapper such as cancel.c's may add keys the call sites do not show).
    for msg, (where, keys) in sorted(code.items()):
        if msg not in docs:
            continue
        row, table = docs[msg]
        documented = set(cell_codes(col(table, row, "keys") or ""))
        for k in sorted(keys - documented):
            problems.append("log message `%s` (%s): key `%s` is not documented"
                            % (msg, where, k))
    check(problems)


def test_sqlstates_documented():
    code = sqlstates_in_code()
    assert code, "found no error sites in src/"
    docs, dup = rows_of("sqlstate")
    problems = list(dup)
    for s in sorted(set(code) - set(docs)):
        problems.append("SQLSTATE `%s` (sent at %s) is not documented in docs/errors.md"
                        % (s, code[s]))
    lits = string_literals_in_code()
    for s in sorted(set(docs) - lits):
        problems.append("SQLSTATE `%s` is documented but appears nowhere in src/" % s)
    check(problems)


# ---- documented values against the loader (pgfleet --check) ------------------------------


def _check_accepts(tmp_path, setting_line="", db_params="", n=[0]):
    """Does `pgfleet --check` accept a valid base configuration plus one
    `[pgfleet]` line or some extra `[databases]` parameters?"""
    n[0] += 1
    ini = tmp_path / ("c%d.ini" % n[0])
    ini.write_text("[databases]\napp = host=127.0.0.1 port=5432 dbname=app %s\n\n"
                   "[pgfleet]\nclient_tls_cert_file = /nonexistent.crt\n"
                   "client_tls_key_file = /nonexistent.key\n%s\n" % (db_params, setting_line))
    env = {k: v for k, v in os.environ.items()
           if not k.startswith(("PGFLEET_", "DB_", "POSTGRES_")) and k not in (
               "POOL_MODE", "SERVER_RESET_QUERY", "MAX_CLIENT_CONN", "DEFAULT_POOL_SIZE",
               "LISTEN_PORT", "AUTH_TYPE", "ADMIN_USERS")}
    # users exist, so that every auth_type is valid
    env.update(DB_USER="u", DB_PASSWORD="p")
    p = subprocess.run([_binary(), "--check", str(ini)], env=env, capture_output=True,
                       text=True, timeout=10)
    return p.returncode == 0, (p.stdout + p.stderr).strip()


def _int_range(allowed):
    m = re.search(r"integer\s+(-?\d+)\s*(?:…|\.\.\.?)\s*(-?\d+)", allowed)
    return (int(m.group(1)), int(m.group(2))) if m else None


def test_documented_values_are_what_the_loader_accepts(tmp_path):
    """Each setting's `allowed` cell against the loader: an integer range's
    bounds are accepted and one past them refused, every listed value of an
    enumeration is accepted and another word refused, the value types
    accept what the docs say, a setting documented as "only `V`" accepts V
    and refuses another value; every documented [databases] parameter is
    accepted.  (Other text settings are not probed.)"""
    ok, out = _check_accepts(tmp_path)
    assert ok, "the base configuration is not valid:\n" + out
    types = {n: t for n, t, _ in config_settings()}
    docs, _ = rows_of("setting")
    problems = []

    def expect(name, value, accepted):
        got, out = _check_accepts(tmp_path, "%s = %s" % (name, value))
        if got != accepted:
            problems.append("setting `%s = %s`: docs say it is %s, pgfleet --check %s it%s"
                            % (name, value, "allowed" if accepted else "refused",
                               "accepts" if got else "refuses",
                               (": " + out.splitlines()[0]) if out and not got else ""))

    for name, (row, table) in sorted(docs.items()):
        allowed = col(table, row, "allowed") or ""
        kind = types.get(name)
        if kind is None:
            continue  # reported by the settings test
        only = re.match(r"only `([^`]*)`", allowed)
        if only:
            # a setting accepted at one value only (not implemented)
            value = "" if only.group(1) == '""' else only.group(1)
            expect(name, value if value else '""', True)
            other = {"INT": "1" if value != "1" else "2", "BOOL": "0" if value == "1" else "1",
                     "TIME": "1" if value != "1" else "2"}.get(kind, "x" + value)
            expect(name, other, False)
        elif kind == "INT":
            r = _int_range(allowed)
            if not r:
                problems.append("setting `%s`: `allowed` should say `integer MIN … MAX`, "
                                "got %r" % (name, allowed))
                continue
            for v, ok in ((r[0], True), (r[1], True), (r[0] - 1, False), (r[1] + 1, False)):
                expect(name, v, ok)
        elif kind == "BOOL":
            if allowed != "boolean":
                problems.append("setting `%s`: `allowed` should be `boolean`, got %r"
                                % (name, allowed))
            for v in ("1", "0", "yes", "no", "on", "off", "true", "false"):
                expect(name, v, True)
            expect(name, "maybe", False)
        elif kind == "TIME":
            if allowed != "time":
                problems.append("setting `%s`: `allowed` should be `time`, got %r"
                                % (name, allowed))
            for v in ("0", "1.5", "250ms", "2 min", "1h", "1d", "100us"):
                expect(name, v, True)
            expect(name, "-1", False)
            expect(name, "soon", False)
        elif kind != "STR":
            values = cell_codes(allowed)
            if not values:
                problems.append("setting `%s`: `allowed` lists no values" % name)
            for v in values:
                expect(name, v, True)
            expect(name, "no-such-value", False)
    params, _ = rows_of("parameter")
    for name, (row, table) in sorted(params.items()):
        allowed = col(table, row, "allowed") or ""
        r = _int_range(allowed)
        value = str(r[0]) if r else "1" if allowed.strip() == "time" else \
            (cell_codes(allowed) or ["x"])[0]
        got, out = _check_accepts(tmp_path, db_params="%s=%s" % (name, value))
        if not got:
            problems.append("[databases] parameter `%s=%s` is documented but pgfleet --check "
                            "refuses it: %s" % (name, value, out.splitlines()[0] if out else ""))
    got, _ = _check_accepts(tmp_path, db_params="no_such_parameter=1")
    assert not got, "pgfleet --check accepts an unknown [databases] parameter"
    check(problems)
