/*
 * hba.c: auth_hba_file (pg_hba.conf syntax), read into rules and matched at
 * login.  The syntax is PostgreSQL's (doc "The pg_hba.conf File"); what is
 * supported is what PgBouncer supports, minus what pgfleet cannot honour,
 * which is refused with file and line instead of being skipped: a record
 * that silently never matches would move clients to the next record, and
 * that record may be more permissive.
 *
 * A logical line is a physical line plus the lines its trailing
 * backslashes join on (even inside quotes or comments, as PostgreSQL).
 * Fields are separated by blanks; a field is a comma list of tokens; a
 * token in double quotes is a plain name (`"all"` is the database named
 * all), `""` inside quotes is one quote; `#` outside quotes starts a comment.
 */
#include "hba.h"

#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/un.h>

/* Names echoed in messages are cut here. */
#define ECHO "%.100s"
/* @file inside @file inside ...: PostgreSQL's own limit. */
#define HBA_MAX_DEPTH 10

enum conn_type { CT_LOCAL, CT_HOST, CT_HOSTSSL, CT_HOSTNOSSL };

/* A database or user list entry: a name, or one of the keywords. */
enum name_kind { NK_NAME, NK_ALL, NK_SAMEUSER, NK_REPLICATION };

struct name {
	enum name_kind kind;
	char *text; /* NK_NAME only */
};

struct name_list {
	struct name *v;
	size_t n;
};

struct rule {
	enum conn_type type;
	struct name_list dbs, users;
	bool addr_all; /* `all`, or a local record (no address) */
	int family;    /* AF_INET / AF_INET6 */
	uint8_t addr[16], mask[16];
	enum hba_method method;
	char *map;        /* map=: a user name map of auth_ident_file, or NULL */
	const char *file; /* hba->files[] */
	int line;
};

/* One auth_ident_file line: MAP SYSTEM-USERNAME DATABASE-USERNAME. */
struct ident {
	char *map, *system_user, *user; /* user NULL: `all` */
};

struct passwd_entry {
	unsigned long uid;
	char *name;
};

const char *hba_passwd_file = "/etc/passwd";

struct hba {
	struct rule *rules;
	size_t n_rules;
	struct passwd_entry *users; /* uid -> name, for peer; the file's order */
	size_t n_users;
	struct ident *idents; /* auth_ident_file, in its order */
	size_t n_idents;
	char **files; /* the names rules point at: the main file and @files */
	size_t n_files;
	uint64_t digest; /* FNV-1a of every line read, @files included */
};

/* A token as read: its text, and whether any of it was quoted. */
struct token {
	char *text;
	bool quoted;
};

struct field {
	struct token *v;
	size_t n;
};

struct loader {
	struct hba *h;
	hba_report_fn report;
	void *arg;
	int errors;
};

static void *xrealloc(void *p, size_t n)
{
	void *q = realloc(p, n ? n : 1);
	if (!q)
		abort(); /* a few kB of rules: running out here is fatal anyway */
	return q;
}

static char *xstrdup(const char *s)
{
	size_t n = strlen(s) + 1;
	return memcpy(xrealloc(NULL, n), s, n);
}

static void report(struct loader *l, const char *file, int line, const char *fmt, ...)
    __attribute__((format(printf, 4, 5)));

static void report(struct loader *l, const char *file, int line, const char *fmt, ...)
{
	char why[512], msg[700];
	va_list ap;
	va_start(ap, fmt);
	vsnprintf(why, sizeof why, fmt, ap);
	va_end(ap);
	if (line > 0)
		snprintf(msg, sizeof msg, "%s:%d: %s", file, line, why);
	else
		snprintf(msg, sizeof msg, "%s: %s", file, why);
	/* one line: a control character in an echoed name would split it */
	for (char *p = msg; *p; p++)
		if ((unsigned char)*p < 0x20 || *p == 0x7f)
			*p = '?';
	l->errors++;
	if (l->report)
		l->report(l->arg, msg);
}

static void digest_add(struct hba *h, const char *text, size_t n)
{
	uint64_t d = h->digest;
	for (size_t i = 0; i < n; i++)
		d = (d ^ (uint8_t)text[i]) * 1099511628211ULL;
	/* a line boundary counts, so "ab","c" differs from "a","bc" */
	h->digest = (d ^ 0x0a) * 1099511628211ULL;
}

static const char *keep_file(struct hba *h, const char *name)
{
	for (size_t i = 0; i < h->n_files; i++)
		if (strcmp(h->files[i], name) == 0)
			return h->files[i];
	h->files = xrealloc(h->files, (h->n_files + 1) * sizeof *h->files);
	h->files[h->n_files] = xstrdup(name);
	return h->files[h->n_files++];
}

static void field_free(struct field *f)
{
	for (size_t i = 0; i < f->n; i++)
		free(f->v[i].text);
	free(f->v);
	f->v = NULL;
	f->n = 0;
}

static void field_add(struct field *f, char *text, bool quoted)
{
	f->v = xrealloc(f->v, (f->n + 1) * sizeof *f->v);
	f->v[f->n++] = (struct token){text, quoted};
}

static bool is_blank(char c)
{
	return c == ' ' || c == '\t' || c == '\r' || c == '\n' || c == '\f' || c == '\v';
}

/*
 * The next field of a logical line at *p: false at the end of the line (or
 * at a comment).  A problem (unterminated quote, empty list element) is
 * reported, *bad set, and the rest of the line dropped.
 */
static bool next_field(struct loader *l, const char *file, int line, const char **p,
                       struct field *f, bool *bad)
{
	const char *s = *p;
	while (is_blank(*s))
		s++;
	if (!*s || *s == '#') {
		*p = s + strlen(s);
		return false;
	}
	for (;;) {
		size_t cap = strlen(s) + 1, n = 0;
		char *buf = xrealloc(NULL, cap);
		bool quoted = false, in_quote = false;
		while (*s) {
			char c = *s;
			if (c == '"') {
				if (in_quote && s[1] == '"') {
					buf[n++] = '"';
					s += 2;
					continue;
				}
				in_quote = !in_quote;
				quoted = true;
				s++;
				continue;
			}
			if (!in_quote && (is_blank(c) || c == ',' || c == '#'))
				break;
			buf[n++] = c;
			s++;
		}
		buf[n] = 0;
		if (in_quote) {
			report(l, file, line, "unterminated quoted string");
			free(buf);
			*bad = true;
			*p = s;
			return true;
		}
		if (!n && !quoted) {
			report(l, file, line, "empty element in a comma-separated list");
			free(buf);
			*bad = true;
			*p = s + strlen(s);
			return true;
		}
		field_add(f, buf, quoted);
		if (*s != ',')
			break;
		s++; /* a list goes on after the comma, blanks allowed */
		while (is_blank(*s))
			s++;
		if (!*s || *s == '#') {
			report(l, file, line, "comma-separated list ends with a comma");
			*bad = true;
			break;
		}
	}
	*p = s;
	return true;
}

/* A token that is exactly the unquoted keyword `kw`. */
static bool is_kw(const struct token *t, const char *kw)
{
	return !t->quoted && strcmp(t->text, kw) == 0;
}

static void name_add(struct name_list *nl, enum name_kind kind, const char *text)
{
	nl->v = xrealloc(nl->v, (nl->n + 1) * sizeof *nl->v);
	nl->v[nl->n++] = (struct name){kind, kind == NK_NAME ? xstrdup(text) : NULL};
}

static void name_list_free(struct name_list *nl)
{
	for (size_t i = 0; i < nl->n; i++)
		free(nl->v[i].text);
	free(nl->v);
}

/* The path of `@name` as written in `from`: relative to from's directory. */
static char *include_path(const char *from, const char *name)
{
	if (name[0] == '/')
		return xstrdup(name);
	const char *slash = strrchr(from, '/');
	size_t dir = slash ? (size_t)(slash - from) + 1 : 0;
	char *out = xrealloc(NULL, dir + strlen(name) + 1);
	memcpy(out, from, dir);
	strcpy(out + dir, name);
	return out;
}

static void add_names(struct loader *l, const char *file, int line, const struct field *f,
                      bool users, struct name_list *out, int depth, bool *bad);

/* `@name`: the names in that file (blanks, commas and lines separate them;
 * `#` comments), as if written in place of it. */
static void add_include(struct loader *l, const char *file, int line, const char *name, bool users,
                        struct name_list *out, int depth, bool *bad)
{
	if (!*name) {
		report(l, file, line, "'@' without a file name");
		*bad = true;
		return;
	}
	if (depth >= HBA_MAX_DEPTH) {
		report(l, file, line, "@" ECHO ": @file includes nested deeper than %d", name,
		       HBA_MAX_DEPTH);
		*bad = true;
		return;
	}
	char *path = include_path(file, name);
	FILE *fp = fopen(path, "r");
	struct stat sb;
	if (fp && fstat(fileno(fp), &sb) == 0 && S_ISDIR(sb.st_mode)) {
		fclose(fp);
		fp = NULL;
		errno = EISDIR;
	}
	if (!fp) {
		report(l, file, line, "cannot read @" ECHO " (" ECHO "): %s", name, path,
		       strerror(errno));
		*bad = true;
		free(path);
		return;
	}
	const char *inc = keep_file(l->h, path);
	free(path);
	char *buf = NULL;
	size_t cap = 0;
	int lineno = 0;
	ssize_t got;
	while ((got = getline(&buf, &cap, fp)) >= 0) {
		lineno++;
		digest_add(l->h, buf, (size_t)got);
		const char *p = buf;
		struct field f = {0};
		bool fbad = false;
		while (!fbad && next_field(l, inc, lineno, &p, &f, &fbad)) {
			if (!fbad)
				add_names(l, inc, lineno, &f, users, out, depth + 1, bad);
			field_free(&f);
		}
		field_free(&f);
		*bad = *bad || fbad;
	}
	free(buf);
	fclose(fp);
}

/* A database (users false) or user (users true) field into `out`. */
static void add_names(struct loader *l, const char *file, int line, const struct field *f,
                      bool users, struct name_list *out, int depth, bool *bad)
{
	for (size_t i = 0; i < f->n; i++) {
		const struct token *t = &f->v[i];
		if (!t->quoted && t->text[0] == '@') {
			add_include(l, file, line, t->text + 1, users, out, depth, bad);
		} else if (is_kw(t, "all")) {
			name_add(out, NK_ALL, NULL);
		} else if (!users && is_kw(t, "sameuser")) {
			name_add(out, NK_SAMEUSER, NULL);
		} else if (!users && is_kw(t, "replication")) {
			name_add(out, NK_REPLICATION, NULL);
		} else if (!users && (is_kw(t, "samerole") || is_kw(t, "samegroup"))) {
			report(l, file, line,
			       "database '%s' is not supported (pgfleet does not know role "
			       "membership)",
			       t->text);
			*bad = true;
		} else if (users && !t->quoted && t->text[0] == '+') {
			report(l, file, line,
			       "user group '" ECHO "' is not supported (pgfleet does not know role "
			       "membership): list the users",
			       t->text);
			*bad = true;
		} else if (!*t->text) {
			report(l, file, line, "empty %s name", users ? "user" : "database");
			*bad = true;
		} else {
			name_add(out, NK_NAME, t->text);
		}
	}
}

/* One address, v4 or v6, into 16 bytes (v4 in the first 4). */
static int parse_ip(const char *s, uint8_t out[16])
{
	memset(out, 0, 16);
	if (inet_pton(AF_INET, s, out) == 1)
		return AF_INET;
	if (inet_pton(AF_INET6, s, out) == 1)
		return AF_INET6;
	return 0;
}

static void prefix_mask(int family, unsigned bits, uint8_t mask[16])
{
	memset(mask, 0, 16);
	unsigned total = family == AF_INET ? 32 : 128;
	for (unsigned i = 0; i < total && i < bits; i++)
		mask[i / 8] |= (uint8_t)(0x80u >> (i % 8));
}

/* The address field (and a mask field after a bare address): false after
 * reporting.  *p is past the address field on entry, past the mask on exit. */
static bool parse_address(struct loader *l, const char *file, int line, const struct field *f,
                          const char **p, struct rule *r)
{
	if (f->n != 1) {
		report(l, file, line, "an address field holds one address, not a list");
		return false;
	}
	const struct token *t = &f->v[0];
	if (is_kw(t, "all")) {
		r->addr_all = true;
		return true;
	}
	if (is_kw(t, "samehost") || is_kw(t, "samenet")) {
		report(l, file, line,
		       "address '%s' is not supported (as PgBouncer): use an address or CIDR",
		       t->text);
		return false;
	}
	char text[128];
	snprintf(text, sizeof text, "%s", t->text);
	char *slash = strchr(text, '/');
	if (slash)
		*slash = 0;
	int family = strlen(t->text) < sizeof text ? parse_ip(text, r->addr) : 0;
	if (!family) {
		report(l, file, line,
		       "address '" ECHO "': host names are not supported (pgfleet does not "
		       "look up client names): use an address or CIDR",
		       t->text);
		return false;
	}
	r->family = family;
	unsigned max = family == AF_INET ? 32 : 128;
	if (slash) {
		const char *b = slash + 1;
		char *end;
		errno = 0;
		unsigned long bits = strtoul(b, &end, 10);
		if (!*b || *end || errno || bits > max || *b == '-' || *b == '+' || is_blank(*b)) {
			report(l, file, line, "address '" ECHO "': invalid CIDR mask length",
			       t->text);
			return false;
		}
		prefix_mask(family, (unsigned)bits, r->mask);
		return true;
	}
	/* address + mask, two fields */
	struct field mf = {0};
	bool bad = false;
	if (!next_field(l, file, line, p, &mf, &bad)) {
		report(l, file, line,
		       "address '" ECHO "' needs a mask: write it in CIDR form (addr/bits) or "
		       "follow it with a mask",
		       t->text);
		return false;
	}
	bool ok = !bad;
	if (ok && (mf.n != 1 || parse_ip(mf.v[0].text, r->mask) != family)) {
		report(l, file, line, "invalid IP mask '" ECHO "' for address '" ECHO "'",
		       mf.v[0].text, t->text);
		ok = false;
	}
	field_free(&mf);
	return ok;
}

static const struct {
	const char *name;
	enum hba_method method;
} methods[] = {
    {"trust", HBA_TRUST}, {"reject", HBA_REJECT},       {"password", HBA_PASSWORD},
    {"md5", HBA_MD5},     {"scram-sha-256", HBA_SCRAM}, {"cert", HBA_CERT},
    {"peer", HBA_PEER},
};

/* PostgreSQL's other methods: named so the message says "not supported". */
static const char *const unsupported_methods[] = {
    "ident", "gss", "sspi", "pam", "ldap", "radius", "bsd", "oauth", NULL,
};

const char *hba_method_name(enum hba_method m)
{
	for (size_t i = 0; i < sizeof methods / sizeof methods[0]; i++)
		if (methods[i].method == m)
			return methods[i].name;
	return "no match";
}

static bool parse_method(struct loader *l, const char *file, int line, const struct field *f,
                         struct rule *r)
{
	if (f->n != 1 || f->v[0].quoted) {
		report(l, file, line, "the authentication method is one unquoted word");
		return false;
	}
	const char *m = f->v[0].text;
	for (size_t i = 0; i < sizeof methods / sizeof methods[0]; i++) {
		if (strcmp(methods[i].name, m) == 0) {
			r->method = methods[i].method;
			return true;
		}
	}
	for (size_t i = 0; unsupported_methods[i]; i++) {
		if (strcmp(unsupported_methods[i], m) == 0) {
			report(l, file, line,
			       "authentication method '%s' is not supported by pgfleet (trust, "
			       "reject, md5, scram-sha-256, password, cert, peer)",
			       m);
			return false;
		}
	}
	report(l, file, line, "unknown authentication method '" ECHO "'", m);
	return false;
}

static const struct {
	const char *name;
	enum conn_type type;
} conn_types[] = {
    {"local", CT_LOCAL},
    {"host", CT_HOST},
    {"hostssl", CT_HOSTSSL},
    {"hostnossl", CT_HOSTNOSSL},
};

/* One logical line: a rule appended to l->h, or reports. */
static void parse_record(struct loader *l, const char *file, int line, const char *text)
{
	const char *p = text;
	struct field f = {0};
	bool bad = false;
	struct rule r = {.file = file, .line = line};

	if (!next_field(l, file, line, &p, &f, &bad))
		return; /* blank or comment */
	if (bad)
		goto out;
	if (f.n != 1 || f.v[0].quoted) {
		report(l, file, line, "the record type is one unquoted word");
		goto out;
	}
	const char *type = f.v[0].text;
	bool known = false;
	for (size_t i = 0; i < sizeof conn_types / sizeof conn_types[0]; i++) {
		if (strcmp(conn_types[i].name, type) == 0) {
			r.type = conn_types[i].type;
			known = true;
		}
	}
	if (!known) {
		if (strcmp(type, "hostgssenc") == 0 || strcmp(type, "hostnogssenc") == 0)
			report(
			    l, file, line,
			    "record type '%s' is not supported (pgfleet has no GSSAPI encryption)",
			    type);
		else if (strncmp(type, "include", 7) == 0)
			report(l, file, line, "'" ECHO "' is not supported (as PgBouncer)", type);
		else
			report(l, file, line,
			       "unknown record type '" ECHO "' (local, host, hostssl, hostnossl)",
			       type);
		goto out;
	}
	static const char *const what[] = {"database", "user"};
	for (int i = 0; i < 2; i++) {
		field_free(&f);
		if (!next_field(l, file, line, &p, &f, &bad)) {
			report(l, file, line, "end of line before the %s field", what[i]);
			goto out;
		}
		if (bad)
			goto out;
		add_names(l, file, line, &f, i == 1, i ? &r.users : &r.dbs, 0, &bad);
		if (bad)
			goto out;
	}
	if (r.type == CT_LOCAL) {
		r.addr_all = true;
	} else {
		field_free(&f);
		if (!next_field(l, file, line, &p, &f, &bad)) {
			report(l, file, line, "end of line before the address field");
			goto out;
		}
		if (bad || !parse_address(l, file, line, &f, &p, &r))
			goto out;
	}
	field_free(&f);
	if (!next_field(l, file, line, &p, &f, &bad)) {
		report(l, file, line, "end of line before the authentication method");
		goto out;
	}
	if (bad || !parse_method(l, file, line, &f, &r))
		goto out;
	if (r.method == HBA_CERT && r.type != CT_HOSTSSL) {
		report(l, file, line, "method 'cert' is only for hostssl records");
		goto out;
	}
	if (r.method == HBA_PEER && r.type != CT_LOCAL) {
		report(l, file, line, "method 'peer' is only for local records");
		goto out;
	}
	/* Options: name=value fields after the method. */
	field_free(&f);
	while (next_field(l, file, line, &p, &f, &bad)) {
		if (bad)
			goto out;
		char opt[64];
		snprintf(opt, sizeof opt, "%s", f.v[0].text);
		char *eq = strchr(opt, '=');
		if (eq)
			*eq = 0;
		if (strcmp(opt, "map") != 0) {
			report(l, file, line, "option '" ECHO "' is not supported", opt);
			goto out;
		}
		const char *value = strchr(f.v[0].text, '=');
		if (r.method != HBA_PEER && r.method != HBA_CERT) {
			report(l, file, line, "option 'map' is only for peer and cert");
			goto out;
		}
		if (f.n != 1 || !value || !value[1]) {
			report(l, file, line, "option 'map' needs one map name (map=NAME)");
			goto out;
		}
		if (r.map) {
			report(l, file, line, "option 'map' given twice");
			goto out;
		}
		r.map = xstrdup(value + 1);
		field_free(&f);
	}
	field_free(&f);
	l->h->rules = xrealloc(l->h->rules, (l->h->n_rules + 1) * sizeof *l->h->rules);
	l->h->rules[l->h->n_rules++] = r;
	return;
out:
	field_free(&f);
	name_list_free(&r.dbs);
	name_list_free(&r.users);
	free(r.map);
}

/* One logical line of auth_ident_file. */
static void parse_ident(struct loader *l, const char *file, int line, const char *text)
{
	const char *p = text;
	struct field f[4];
	int n = 0;
	bool bad = false;
	memset(f, 0, sizeof f);
	while (n < 4 && next_field(l, file, line, &p, &f[n], &bad) && !bad)
		n++;
	if (bad || n == 0)
		goto out;
	if (!f[0].v[0].quoted && strncmp(f[0].v[0].text, "include", 7) == 0) {
		report(l, file, line, "'" ECHO "' is not supported (as PgBouncer)", f[0].v[0].text);
		goto out;
	}
	if (n != 3 || f[0].n != 1 || f[1].n != 1 || f[2].n != 1) {
		report(l, file, line,
		       "expected one map name, one system user name and one database user name");
		goto out;
	}
	const struct token *sys = &f[1].v[0], *user = &f[2].v[0];
	if ((!sys->quoted && sys->text[0] == '/') || (!user->quoted && user->text[0] == '/')) {
		report(l, file, line, "regular expressions are not supported (as PgBouncer)");
		goto out;
	}
	if (!user->quoted && user->text[0] == '+') {
		report(l, file, line,
		       "user group '" ECHO "' is not supported (pgfleet does not know role "
		       "membership): list the users",
		       user->text);
		goto out;
	}
	if (!*f[0].v[0].text || !*sys->text || !*user->text) {
		report(l, file, line, "empty name");
		goto out;
	}
	struct hba *h = l->h;
	h->idents = xrealloc(h->idents, (h->n_idents + 1) * sizeof *h->idents);
	h->idents[h->n_idents++] = (struct ident){xstrdup(f[0].v[0].text), xstrdup(sys->text),
	                                          is_kw(user, "all") ? NULL : xstrdup(user->text)};
out:
	for (int i = 0; i < 4; i++)
		field_free(&f[i]);
}

/* hba_passwd_file's "name:password:uid:..." lines, for peer; the first
 * line of a uid wins, as getpwuid() answers. */
static void load_passwd(struct loader *l, const char *file, int line)
{
	FILE *fp = fopen(hba_passwd_file, "r");
	if (!fp) {
		report(l, file, line, "method 'peer' needs %s: cannot read: %s", hba_passwd_file,
		       strerror(errno));
		return;
	}
	struct hba *h = l->h;
	char *buf = NULL;
	size_t cap = 0;
	while (getline(&buf, &cap, fp) >= 0) {
		char *name = buf, *c1 = strchr(buf, ':');
		char *c2 = c1 ? strchr(c1 + 1, ':') : NULL;
		if (!c2 || c1 == name || *name == '+' || *name == '-' || *name == '#')
			continue; /* not an entry, or NIS compat syntax */
		char *end;
		errno = 0;
		unsigned long uid = strtoul(c2 + 1, &end, 10);
		if (errno || end == c2 + 1 || *end != ':')
			continue;
		*c1 = 0;
		h->users = xrealloc(h->users, (h->n_users + 1) * sizeof *h->users);
		h->users[h->n_users++] = (struct passwd_entry){uid, xstrdup(name)};
	}
	free(buf);
	fclose(fp);
}

const char *hba_peer_user(const struct hba *h, unsigned long uid)
{
	for (size_t i = 0; h && i < h->n_users; i++)
		if (h->users[i].uid == uid)
			return h->users[i].name;
	return NULL;
}

typedef void (*line_fn)(struct loader *l, const char *file, int line, const char *text);

/* Every logical line of `path` to fn: false when the file cannot be read
 * (reported). */
static bool read_lines(struct loader *l, const char *path, line_fn fn)
{
	struct hba *h = l->h;
	FILE *fp = fopen(path, "r");
	struct stat sb;
	if (fp && fstat(fileno(fp), &sb) == 0 && S_ISDIR(sb.st_mode)) {
		fclose(fp);
		fp = NULL;
		errno = EISDIR;
	}
	if (!fp) {
		report(l, path, 0, "cannot read: %s", strerror(errno));
		return false;
	}
	const char *file = keep_file(h, path);
	char *buf = NULL, *logical = NULL;
	size_t cap = 0, len = 0;
	int lineno = 0, first = 0;
	ssize_t n;
	while ((n = getline(&buf, &cap, fp)) >= 0) {
		lineno++;
		digest_add(h, buf, (size_t)n);
		if (!len)
			first = lineno;
		while (n > 0 && (buf[n - 1] == '\n' || buf[n - 1] == '\r'))
			buf[--n] = 0;
		bool more = n > 0 && buf[n - 1] == '\\';
		if (more)
			buf[--n] = 0;
		logical = xrealloc(logical, len + (size_t)n + 1);
		memcpy(logical + len, buf, (size_t)n + 1);
		len += (size_t)n;
		if (more)
			continue;
		fn(l, file, first, logical);
		len = 0;
	}
	if (len) /* a backslash on the last line: the record ends with the file */
		fn(l, file, first, logical);
	bool ok = !ferror(fp);
	if (!ok)
		report(l, path, 0, "cannot read: %s", strerror(errno));
	free(buf);
	free(logical);
	fclose(fp);
	return ok;
}

struct hba *hba_load(const char *path, const char *ident_path, hba_report_fn report_fn, void *arg)
{
	struct hba *h = calloc(1, sizeof *h);
	if (!h)
		abort();
	h->digest = 14695981039346656037ULL;
	struct loader l = {h, report_fn, arg, 0};
	if (!read_lines(&l, path, parse_record)) {
		hba_free(h);
		return NULL;
	}
	if (!l.errors && !h->n_rules)
		report(&l, path, 0, "no records: every client would be refused");
	if (ident_path && *ident_path)
		read_lines(&l, ident_path, parse_ident);
	/* every map= names a map the ident file has */
	for (size_t i = 0; i < h->n_rules; i++) {
		const struct rule *r = &h->rules[i];
		bool found = false;
		for (size_t j = 0; r->map && j < h->n_idents && !found; j++)
			found = strcmp(h->idents[j].map, r->map) == 0;
		if (!r->map || found)
			continue;
		if (!ident_path || !*ident_path)
			report(&l, r->file, r->line, "option 'map' needs auth_ident_file");
		else
			report(&l, r->file, r->line, "map '" ECHO "' is not in %s", r->map,
			       ident_path);
	}
	const char *peer_file;
	int peer_line;
	if (!l.errors && hba_find_method(h, HBA_PEER, &peer_file, &peer_line))
		load_passwd(&l, peer_file, peer_line);
	if (l.errors) {
		hba_free(h);
		return NULL;
	}
	return h;
}

void hba_free(struct hba *h)
{
	if (!h)
		return;
	for (size_t i = 0; i < h->n_rules; i++) {
		name_list_free(&h->rules[i].dbs);
		name_list_free(&h->rules[i].users);
		free(h->rules[i].map);
	}
	for (size_t i = 0; i < h->n_idents; i++) {
		free(h->idents[i].map);
		free(h->idents[i].system_user);
		free(h->idents[i].user);
	}
	free(h->idents);
	free(h->rules);
	for (size_t i = 0; i < h->n_users; i++)
		free(h->users[i].name);
	free(h->users);
	for (size_t i = 0; i < h->n_files; i++)
		free(h->files[i]);
	free(h->files);
	free(h);
}

static bool names_match(const struct name_list *nl, const char *name, const char *user)
{
	for (size_t i = 0; i < nl->n; i++) {
		switch (nl->v[i].kind) {
		case NK_ALL:
			return true;
		case NK_SAMEUSER:
			if (strcmp(name, user) == 0)
				return true;
			break;
		case NK_REPLICATION:
			break; /* pgfleet refuses replication connections before this */
		case NK_NAME:
			if (strcmp(nl->v[i].text, name) == 0)
				return true;
			break;
		}
	}
	return false;
}

static bool addr_match(const struct rule *r, const struct sockaddr *sa)
{
	if (r->addr_all)
		return true;
	uint8_t a[16] = {0};
	int family = sa->sa_family;
	if (family == AF_INET) {
		memcpy(a, &((const struct sockaddr_in *)(const void *)sa)->sin_addr, 4);
	} else if (family == AF_INET6) {
		const uint8_t *b =
		    ((const struct sockaddr_in6 *)(const void *)sa)->sin6_addr.s6_addr;
		static const uint8_t v4mapped[12] = {0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xff};
		if (r->family == AF_INET && memcmp(b, v4mapped, 12) == 0) {
			/* an IPv4 client on a dual-stack socket is an IPv4 client */
			family = AF_INET;
			memcpy(a, b + 12, 4);
		} else {
			memcpy(a, b, 16);
		}
	} else {
		return false;
	}
	if (family != r->family)
		return false;
	size_t n = family == AF_INET ? 4 : 16;
	for (size_t i = 0; i < n; i++)
		if ((a[i] & r->mask[i]) != (r->addr[i] & r->mask[i]))
			return false;
	return true;
}

struct hba_decision hba_match(const struct hba *h, const struct hba_request *req)
{
	struct hba_decision d = {HBA_NO_MATCH, NULL, 0, NULL};
	bool local = req->addr->sa_family == AF_UNIX;
	for (size_t i = 0; h && i < h->n_rules; i++) {
		const struct rule *r = &h->rules[i];
		switch (r->type) {
		case CT_LOCAL:
			if (!local)
				continue;
			break;
		case CT_HOST:
			if (local)
				continue;
			break;
		case CT_HOSTSSL:
			if (local || !req->tls)
				continue;
			break;
		case CT_HOSTNOSSL:
			if (local || req->tls)
				continue;
			break;
		}
		if (!local && !addr_match(r, req->addr))
			continue;
		if (!names_match(&r->dbs, req->database, req->user) ||
		    !names_match(&r->users, req->user, req->user))
			continue;
		d.method = r->method;
		d.file = r->file;
		d.line = r->line;
		d.map = r->map;
		return d;
	}
	return d;
}

bool hba_find_method(const struct hba *h, enum hba_method m, const char **file, int *line)
{
	for (size_t i = 0; h && i < h->n_rules; i++) {
		if (h->rules[i].method == m) {
			*file = h->rules[i].file;
			*line = h->rules[i].line;
			return true;
		}
	}
	return false;
}

bool hba_find_hostssl(const struct hba *h, const char **file, int *line)
{
	for (size_t i = 0; h && i < h->n_rules; i++) {
		if (h->rules[i].type == CT_HOSTSSL) {
			*file = h->rules[i].file;
			*line = h->rules[i].line;
			return true;
		}
	}
	return false;
}

bool hba_same(const struct hba *a, const struct hba *b)
{
	if (!a || !b)
		return a == b;
	return a->digest == b->digest;
}

bool hba_map_allows(const struct hba *h, const char *map, const char *system_user, const char *user)
{
	for (size_t i = 0; h && i < h->n_idents; i++) {
		const struct ident *e = &h->idents[i];
		if (strcmp(e->map, map) == 0 && strcmp(e->system_user, system_user) == 0 &&
		    (!e->user || strcmp(e->user, user) == 0))
			return true;
	}
	return false;
}
