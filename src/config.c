/*
 * config.c: loading and validating pgfleet's configuration.
 *
 * Owns the PgBouncer-dialect ini reader (%include, inline comments, quoted
 * values), the environment overrides (PGFLEET_<NAME>, the edoburu/pgbouncer
 * names, DB_HOST/DB_USER), the auth_file reader and every check on a value.
 * Each problem goes to the caller's report callback as one line naming where
 * it came from.  Nothing here logs, exits or keeps global state, so the same
 * code serves start-up, `-t`, SIGHUP reload and the admin console's SET.
 *
 * The settings table comes from CONFIG_SETTINGS in config.h: the struct
 * fields, the parser, SHOW CONFIG's text and the environment names are all
 * generated from it, so a new setting is one line there and nothing here.
 */
#include "config.h"

#include <ctype.h>
#include <errno.h>
#include <limits.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/stat.h>

/* PgBouncer has no limit; ten levels is more than any real layout needs and
 * stops a runaway chain long before the stack or the fd table suffers. */
#define INCLUDE_DEPTH_MAX 10
/* ~31 years: every timeout stays representable in a struct timeval. */
#define TIME_MAX_SECONDS 1e9
/* Values echoed in messages are cut here: a 100 kB line should not become
 * a 100 kB error line. */
#define ECHO "%.100s"
#define ERRLEN 512

enum stype { T_STR, T_INT, T_BOOL, T_TIME, T_POOLMODE, T_AUTHTYPE, T_LB, T_LOGFMT, T_TLSMODE };

struct setting {
	const char *name;
	enum stype type;
	const char *def;
	size_t off; /* of the field in struct config */
};

enum setting_index {
#define CFG_INDEX(name, type, def) IDX_##name,
	CONFIG_SETTINGS(CFG_INDEX)
#undef CFG_INDEX
	    N_SETTINGS
};

static const struct setting settings[N_SETTINGS] = {
#define CFG_ROW(name, type, def)                                                                   \
	[IDX_##name] = {#name, T_##type, def, offsetof(struct config, name)},
    CONFIG_SETTINGS(CFG_ROW)
#undef CFG_ROW
};

static const char *const pool_mode_names[] = {
    [POOL_SESSION] = "session",
    [POOL_TRANSACTION] = "transaction",
    [POOL_STATEMENT] = "statement",
    NULL,
};
static const char *const auth_type_names[] = {
    [AUTH_TRUST] = "trust",
    [AUTH_PLAIN] = "plain",
    [AUTH_MD5] = "md5",
    [AUTH_SCRAM] = "scram-sha-256",
    NULL,
};
static const char *const lb_names[] = {
    [LB_LEAST_CONN] = "least_conn",
    [LB_ROUND_ROBIN] = "round_robin",
    [LB_RANDOM] = "random",
    NULL,
};
static const char *const logfmt_names[] = {
    [LOGFMT_TEXT] = "text",
    [LOGFMT_JSON] = "json",
    NULL,
};
static const char *const tls_names[] = {
    [TLS_DISABLE] = "disable",
    [TLS_ALLOW] = "allow",
    [TLS_PREFER] = "prefer",
    [TLS_REQUIRE] = "require",
    [TLS_VERIFY_CA] = "verify-ca",
    [TLS_VERIFY_FULL] = "verify-full",
    NULL,
};
static const char *const tsa_names[] = {
    [TSA_ANY] = "any",
    [TSA_READ_WRITE] = "read-write",
    [TSA_READ_ONLY] = "read-only",
    [TSA_PRIMARY] = "primary",
    [TSA_STANDBY] = "standby",
    [TSA_PREFER_STANDBY] = "prefer-standby",
    NULL,
};

/* PgBouncer auth types pgfleet does not implement: named, so the message can
 * say "unsupported" rather than "unknown". */
static const char *const auth_type_unsupported[] = {"hba",  "cert", "any", "pam",
                                                    "ldap", "peer", NULL};

/* Integers whose range is not the general 0..INT_MAX. */
static const struct {
	const char *name;
	long long min, max;
} int_ranges[] = {
    {"listen_port", 1, 65535},         {"max_client_conn", 1, INT_MAX},    {"workers", 1, 64},
    {"default_pool_size", 1, INT_MAX}, {"max_packet_size", 1024, INT_MAX},
    /* Per-client memory: a byte budget and a back-pressure mark are never off;
     * the mark stays far enough below 2 GiB (wbuf_need's limit) that what one
     * pass adds past it (at most a couple of 1 MB messages) always fits. */
    {"max_client_prepared_bytes", 1024, INT_MAX},
    {"max_client_output_buffer", 16384, 1024 * 1024 * 1024},
    /* 24 bytes a request: at most 384 MiB for one server connection */
    {"max_pipelined_requests", 64, 16 * 1024 * 1024},
    /* issue 15: server login bounds (scram.h's SCRAM_MAX_ITERATIONS is the parser's own cap) */
    {"server_login_max_bytes", 4096, INT_MAX},
    {"server_login_max_messages", 16, INT_MAX},
    {"server_scram_max_iterations", 1, 10000000},
    /* the largest text worth buffering whole (IOBUF_MAX_WHOLE) */
    {"max_inspected_query_size", 0, 1024 * 1024},
    /* issue 15: a cap, not a switch: 0 would mean a "*" entry that works
     * for nobody, "unlimited" would bring back the unbounded list. */
    {"max_auto_databases", 1, 1000000},
    /* issue 15 item 8: helper threads for health-check logins */
    {"health_check_max_logins", 1, 10000},
};

/*
 * [pgbouncer] keys pgfleet has no use for.  They are accepted silently so
 * that an existing pgbouncer.ini loads unchanged; anything else unknown is an
 * error, because a misspelt setting that is silently ignored is worse.
 */
static const char *const pgbouncer_ignored_keys[] = {
    "application_name_add_host",
    "auth_dbname",
    "auth_hba_file",
    "auth_ident_file",
    "cancel_wait_timeout",
    "client_tls13_ciphers",
    "client_tls_ciphers",
    "client_tls_dheparams",
    "client_tls_ecdhcurve",
    "client_tls_protocols",
    "conffile",
    "disable_pqexec",
    "ignore_startup_parameters",
    "dns_zone_check_period",
    "job_name",
    "listen_backlog",
    "log_pooler_errors",
    "log_stats",
    "logfile",
    "max_db_client_connections",
    "max_user_client_connections",
    "max_user_connections",
    "peer_id",
    "pidfile",
    "pkt_buf",
    "query_wait_notify",
    "reserve_pool_timeout",
    "resolv_conf",
    "sbuf_loopcnt",
    "server_check_delay",
    "server_check_query",
    "server_fast_close",
    "server_tls13_ciphers",
    "server_tls_cert_file",
    "server_tls_ciphers",
    "server_tls_key_file",
    "server_tls_protocols",
    "service_name",
    "suspend_timeout",
    "syslog",
    "syslog_facility",
    "syslog_ident",
    "tcp_defer_accept",
    "tcp_keepalive",
    "tcp_keepcnt",
    "tcp_keepidle",
    "tcp_keepintvl",
    "tcp_socket_buffer",
    "tcp_user_timeout",
    "track_extra_parameters",
    "unix_socket_group",
    "unix_socket_mode",
    "user",
    "verbose",
    NULL,
};

/* Per-database keys of PgBouncer that pgfleet accepts and ignores. */
static const char *const db_ignored_keys[] = {
    "application_name",          "auth_dbname",        "auth_query",    "auth_user",
    "client_encoding",           "connect_query",      "datestyle",     "load_balance_hosts",
    "max_db_client_connections", "max_db_connections", "min_pool_size", "reserve_pool",
    "reserve_pool_size",         "server_lifetime",    "timezone",      NULL,
};

/* The edoburu/pgbouncer image's names; PGFLEET_<NAME> wins over these. */
static const struct {
	const char *var;
	size_t idx;
} env_aliases[] = {
    {"POOL_MODE", IDX_pool_mode},
    {"SERVER_RESET_QUERY", IDX_server_reset_query},
    {"MAX_CLIENT_CONN", IDX_max_client_conn},
    {"DEFAULT_POOL_SIZE", IDX_default_pool_size},
    {"LISTEN_PORT", IDX_listen_port},
    {"AUTH_TYPE", IDX_auth_type},
    {"ADMIN_USERS", IDX_admin_users},
};

union value {
	char *s;
	long long i;
	bool b;
	double t;
	int e;
};

/* Where a setting's current value came from, for messages about it. */
struct origin {
	const char *file; /* NULL: not from a file */
	int line;
	const char *env; /* the variable's name, NULL: not from the environment */
};

enum section { SEC_NONE, SEC_DATABASES, SEC_PGFLEET, SEC_IGNORED, SEC_UNKNOWN };

struct loader {
	struct config *cfg;
	config_report_fn report;
	void *arg;
	int errors;
	const char *path; /* the main file as given, NULL: environment only */
	bool main_unreadable;
	bool empty_env_password; /* reported: "needs users" would say it again */
	struct origin origin[N_SETTINGS];
	char **names; /* file and variable names that origins point to */
	size_t n_names;
	char *open[INCLUDE_DEPTH_MAX + 1]; /* real paths of the files being read, main first */
	int depth;
	enum section section;
};

/* Out of memory while loading a few kilobytes of configuration is not
 * something to recover from (Redis' zmalloc takes the same view). */
static void *xrealloc(void *p, size_t n)
{
	void *q = realloc(p, n ? n : 1);
	if (!q) {
		fputs("pgfleet: out of memory while loading the configuration\n", stderr);
		abort();
	}
	return q;
}

static char *xstrdup(const char *s)
{
	size_t n = strlen(s) + 1;
	return memcpy(xrealloc(NULL, n), s, n);
}

static void free_secret(char *s)
{
	if (s) {
		explicit_bzero(s, strlen(s));
		free(s);
	}
}

static char *skip_ws(const char *s)
{
	while (isspace((unsigned char)*s))
		s++;
	return (char *)s;
}

static void rtrim(char *s)
{
	size_t n = strlen(s);
	while (n > 0 && isspace((unsigned char)s[n - 1]))
		s[--n] = '\0';
}

static char *trim(char *s)
{
	s = skip_ws(s);
	rtrim(s);
	return s;
}

static bool in_list(const char *const *list, const char *s)
{
	for (; *list; list++)
		if (strcasecmp(*list, s) == 0)
			return true;
	return false;
}

static int find_setting(const char *name)
{
	for (size_t i = 0; i < N_SETTINGS; i++)
		if (strcasecmp(settings[i].name, name) == 0)
			return (int)i;
	return -1;
}

static const char *const *enum_names(enum stype t)
{
	switch (t) {
	case T_POOLMODE:
		return pool_mode_names;
	case T_AUTHTYPE:
		return auth_type_names;
	case T_LB:
		return lb_names;
	case T_LOGFMT:
		return logfmt_names;
	case T_TLSMODE:
		return tls_names;
	default:
		return NULL;
	}
}

static void int_range(const char *name, long long *min, long long *max)
{
	*min = 0;
	*max = INT_MAX;
	for (size_t i = 0; i < sizeof int_ranges / sizeof int_ranges[0]; i++) {
		if (strcmp(int_ranges[i].name, name) == 0) {
			*min = int_ranges[i].min;
			*max = int_ranges[i].max;
		}
	}
}

/* ---- value parsers: each fills `err` with the reason when it fails ---- */

static bool parse_int(const char *s, long long min, long long max, long long *out, char *err,
                      size_t errlen)
{
	const char *p = s;
	if (*p == '-')
		p++;
	if (!*p)
		goto bad;
	for (; *p; p++)
		if (!isdigit((unsigned char)*p))
			goto bad;
	errno = 0;
	long long v = strtoll(s, NULL, 10);
	if (errno == ERANGE || v < min || v > max) {
		snprintf(err, errlen, "value '" ECHO "' out of range (%lld..%lld)", s, min, max);
		return false;
	}
	*out = v;
	return true;
bad:
	snprintf(err, errlen, "invalid integer '" ECHO "'", s);
	return false;
}

static bool parse_bool(const char *s, bool *out, char *err, size_t errlen)
{
	static const char *const yes[] = {"1", "yes", "on", "true", NULL};
	static const char *const no[] = {"0", "no", "off", "false", NULL};
	if (in_list(yes, s)) {
		*out = true;
		return true;
	}
	if (in_list(no, s)) {
		*out = false;
		return true;
	}
	snprintf(err, errlen, "invalid boolean '" ECHO "' (0/1, yes/no, on/off, true/false)", s);
	return false;
}

/* Seconds, fractions allowed, with an optional unit: "1.5", "250ms", "2 min". */
static bool parse_time(const char *s, double *out, char *err, size_t errlen)
{
	static const struct {
		const char *unit;
		double scale;
	} units[] = {{"", 1},     {"us", 1e-6}, {"ms", 1e-3}, {"s", 1},
	             {"min", 60}, {"h", 3600},  {"d", 86400}};
	const char *p = s;
	int digits = 0, dots = 0;

	if (*p == '-') {
		snprintf(err, errlen, "negative time '" ECHO "' (must be >= 0)", s);
		return false;
	}
	for (; isdigit((unsigned char)*p) || *p == '.'; p++) {
		if (*p == '.')
			dots++;
		else
			digits++;
	}
	if (digits == 0 || dots > 1)
		goto bad;
	/* an exponent, so that %.15g's "1e-06" from SHOW CONFIG reads back */
	if ((*p == 'e' || *p == 'E') &&
	    (isdigit((unsigned char)p[1]) ||
	     ((p[1] == '-' || p[1] == '+') && isdigit((unsigned char)p[2])))) {
		p += 2;
		while (isdigit((unsigned char)*p))
			p++;
	}
	/* only decimal text reaches strtod: no "inf", "nan" or hex */
	char *end;
	double v = strtod(s, &end);
	if (end != p)
		goto bad;
	const char *unit = skip_ws(p);
	for (size_t i = 0; i < sizeof units / sizeof units[0]; i++) {
		if (strcasecmp(unit, units[i].unit) == 0) {
			v *= units[i].scale;
			if (!(v <= TIME_MAX_SECONDS)) {
				snprintf(err, errlen, "time '" ECHO "' too large (at most %.0f s)",
				         s, TIME_MAX_SECONDS);
				return false;
			}
			*out = v;
			return true;
		}
	}
bad:
	snprintf(err, errlen,
	         "invalid time '" ECHO "' (seconds, or a number with unit ms, s, min, h)", s);
	return false;
}

static bool parse_enum(const char *const *names, const char *s, int *out, char *err, size_t errlen)
{
	for (int i = 0; names[i]; i++) {
		if (strcasecmp(names[i], s) == 0) {
			*out = i;
			return true;
		}
	}
	bool unsupported = names == auth_type_names && in_list(auth_type_unsupported, s);
	int n = snprintf(err, errlen, "%s value '" ECHO "' (",
	                 unsupported ? "unsupported" : "unknown", s);
	for (int i = 0; names[i] && n >= 0 && (size_t)n < errlen; i++)
		n += snprintf(err + n, errlen - (size_t)n, "%s%s", i ? ", " : "", names[i]);
	if (n >= 0 && (size_t)n < errlen)
		snprintf(err + n, errlen - (size_t)n, ")");
	return false;
}

/* A host= value: a name, an address, a comma list of those, or a socket
 * directory.  Only the shape is checked here; resolution is discovery.c's. */
static bool check_host(const char *h, char *err, size_t errlen)
{
	if (!*h) {
		snprintf(err, errlen, "empty host");
		return false;
	}
	const char *p = h;
	for (;;) {
		const char *end = strchr(p, ',');
		size_t n = end ? (size_t)(end - p) : strlen(p);
		if (n == 0) {
			snprintf(err, errlen, "empty name in host list '" ECHO "'", h);
			return false;
		}
		if (*p != '/') {
			for (size_t i = 0; i < n; i++) {
				unsigned char c = (unsigned char)p[i];
				if (!isalnum(c) && !strchr(".-_:[]%", c)) {
					snprintf(err, errlen,
					         "invalid character '%c' in host '" ECHO "'",
					         isprint(c) ? c : '?', h);
					return false;
				}
			}
		}
		if (!end)
			return true;
		p = end + 1;
	}
}

/* Checks a setting's text and converts it; STR values are copied. */
static bool parse_value(size_t idx, const char *text, union value *v, char *err, size_t errlen)
{
	const struct setting *st = &settings[idx];
	long long min, max;

	switch (st->type) {
	case T_STR:
		if (idx == IDX_listen_addr && !*text) {
			snprintf(err, errlen, "must not be empty");
			return false;
		}
		if (idx == IDX_http_listen && *text) {
			/* host:port, the host may be empty or a [v6] literal */
			const char *colon = strrchr(text, ':');
			long long port;
			char perr[ERRLEN];
			if (!colon || !parse_int(colon + 1, 1, 65535, &port, perr, sizeof perr)) {
				snprintf(err, errlen,
				         "expected host:port (empty = off), got '" ECHO "'", text);
				return false;
			}
		}
		v->s = xstrdup(text);
		return true;
	case T_INT:
		int_range(st->name, &min, &max);
		return parse_int(text, min, max, &v->i, err, errlen);
	case T_BOOL:
		return parse_bool(text, &v->b, err, errlen);
	case T_TIME:
		return parse_time(text, &v->t, err, errlen);
	case T_POOLMODE:
	case T_AUTHTYPE:
	case T_LB:
	case T_LOGFMT:
	case T_TLSMODE:
		return parse_enum(enum_names(st->type), text, &v->e, err, errlen);
	}
	abort();
}

/* Writes a parsed value into `cfg` without freeing what was there. */
static void put_value(struct config *cfg, size_t idx, const union value *v)
{
	void *field = (char *)cfg + settings[idx].off;
	switch (settings[idx].type) {
	case T_STR:
		*(char **)field = v->s;
		break;
	case T_INT:
		*(long long *)field = v->i;
		break;
	case T_BOOL:
		*(bool *)field = v->b;
		break;
	case T_TIME:
		*(double *)field = v->t;
		break;
	default:
		*(int *)field = v->e;
		break;
	}
}

static void store_value(struct config *cfg, size_t idx, const union value *v)
{
	if (settings[idx].type == T_STR) {
		char **field = (char **)((char *)cfg + settings[idx].off);
		free_secret(*field);
	}
	put_value(cfg, idx, v);
}

static void format_value(const struct config *cfg, size_t idx, char *buf, size_t len)
{
	const void *field = (const char *)cfg + settings[idx].off;
	const char *const *names;

	switch (settings[idx].type) {
	case T_STR:
		snprintf(buf, len, "%s", *(char *const *)field ? *(char *const *)field : "");
		break;
	case T_INT:
		snprintf(buf, len, "%lld", *(const long long *)field);
		break;
	case T_BOOL:
		snprintf(buf, len, "%s", *(const bool *)field ? "1" : "0");
		break;
	case T_TIME:
		/* %.15g: whole seconds print without an exponent, so the text
		 * SHOW CONFIG prints is accepted back by SET */
		snprintf(buf, len, "%.15g", *(const double *)field);
		break;
	default:
		names = enum_names(settings[idx].type);
		snprintf(buf, len, "%s", names[*(const int *)field]);
		break;
	}
}

static void set_defaults(struct config *cfg)
{
	char err[ERRLEN];
	for (size_t i = 0; i < N_SETTINGS; i++) {
		union value v;
		if (!parse_value(i, settings[i].def, &v, err, sizeof err)) {
			fprintf(stderr, "pgfleet: bad default for %s: %s\n", settings[i].name, err);
			abort(); /* config.h's table is wrong: cannot happen in a build that passed
			            its tests */
		}
		put_value(cfg, i, &v);
	}
}

/* ---- reporting ---- */

static void report(struct loader *l, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

static void report(struct loader *l, const char *fmt, ...)
{
	char small[ERRLEN];
	char *msg = small;
	va_list ap;

	l->errors++;
	va_start(ap, fmt);
	int n = vsnprintf(small, sizeof small, fmt, ap);
	va_end(ap);
	if (n < 0)
		return;
	if ((size_t)n >= sizeof small) {
		msg = xrealloc(NULL, (size_t)n + 1);
		va_start(ap, fmt);
		vsnprintf(msg, (size_t)n + 1, fmt, ap);
		va_end(ap);
	}
	/* one line, whatever an environment value contained */
	for (char *p = msg; *p; p++)
		if ((unsigned char)*p < 0x20 || *p == 0x7f)
			*p = '?';
	if (l->report)
		l->report(l->arg, msg);
	if (msg != small)
		free(msg);
}

/* A name that origins and db entries may point at until the load ends. */
static const char *keep_name(struct loader *l, const char *name)
{
	l->names = xrealloc(l->names, (l->n_names + 1) * sizeof *l->names);
	l->names[l->n_names] = xstrdup(name);
	return l->names[l->n_names++];
}

/* "where: key 'name': why", where being the place the value was set. */
static void report_setting(struct loader *l, size_t idx, const char *why)
{
	const struct origin *o = &l->origin[idx];
	if (o->env)
		report(l, "environment: %s: %s", o->env, why);
	else if (o->file)
		report(l, "%s:%d: key '%s': %s", o->file, o->line, settings[idx].name, why);
	else
		report(l, "%s: key '%s' (default): %s", l->path ? l->path : "environment",
		       settings[idx].name, why);
}

/*
 * Rules that tie settings together, shared by the loader and SET.  `emit` is
 * called once per broken rule with the setting to blame.
 */
typedef void (*emit_fn)(void *ctx, size_t idx, const char *why);

static void check_settings(const struct config *cfg, emit_fn emit, void *ctx)
{
	char why[ERRLEN];

	if (cfg->client_tls_sslmode != TLS_DISABLE) {
		const char *mode = tls_names[cfg->client_tls_sslmode];
		if (!*cfg->client_tls_cert_file) {
			snprintf(why, sizeof why, "'%s' needs client_tls_cert_file", mode);
			emit(ctx, IDX_client_tls_sslmode, why);
		}
		if (!*cfg->client_tls_key_file) {
			snprintf(why, sizeof why, "'%s' needs client_tls_key_file", mode);
			emit(ctx, IDX_client_tls_sslmode, why);
		}
	}
	if (cfg->auth_type != AUTH_TRUST && cfg->n_users == 0) {
		snprintf(why, sizeof why,
		         "'%s' needs users: set auth_file, or DB_USER with DB_PASSWORD",
		         auth_type_names[cfg->auth_type]);
		emit(ctx, IDX_auth_type, why);
	}
}

static void emit_report(void *ctx, size_t idx, const char *why)
{
	struct loader *l = ctx;
	if (idx == IDX_auth_type && l->empty_env_password && l->cfg->n_users == 0)
		return; /* one line for one mistake: the empty password said it */
	report_setting(ctx, idx, why);
}

/* ---- the ini reader ---- */

/*
 * Cuts an inline comment: ';' or '#' after whitespace, outside quotes.  In a
 * [databases] value the quotes are libpq's ('...' with backslash escapes);
 * elsewhere they are the ini's double quotes.
 */
static void cut_comment(char *s, bool libpq)
{
	bool quoted = false;
	for (char *p = s; *p; p++) {
		if (quoted) {
			if (libpq && *p == '\\' && p[1])
				p++;
			else if (*p == (libpq ? '\'' : '"'))
				quoted = false;
			continue;
		}
		if (*p == (libpq ? '\'' : '"'))
			quoted = true;
		else if ((*p == ';' || *p == '#') && (p == s || isspace((unsigned char)p[-1]))) {
			*p = '\0';
			return;
		}
	}
}

/* In place: `"text"` -> text, with "" standing for one quote.  On return
 * *pp points after the closing quote; NULL when the quote is not closed. */
static char *unquote(char **pp)
{
	char *s = *pp, *r = s + 1, *w = s;
	for (;;) {
		if (!*r)
			return NULL;
		if (*r == '"') {
			if (r[1] == '"') {
				*w++ = '"';
				r += 2;
				continue;
			}
			r++;
			break;
		}
		*w++ = *r++;
	}
	*w = '\0'; /* w < r: the rest of the line is untouched */
	*pp = r;
	return s;
}

/* The value part of `key = value`: comment cut, trimmed, unquoted. */
static char *clean_value(char *raw, bool libpq, const char **why)
{
	cut_comment(raw, libpq);
	char *v = trim(raw);
	if (*v != '"')
		return v;
	char *p = v;
	if (!unquote(&p)) {
		*why = "unterminated quoted value";
		return NULL;
	}
	if (*skip_ws(p)) {
		*why = "unexpected text after the closing quote";
		return NULL;
	}
	return v;
}

static void file_setting(struct loader *l, const char *file, int lineno, const char *key, char *raw)
{
	const char *why = NULL;
	char err[ERRLEN];
	union value v;

	int idx = find_setting(key);
	if (idx < 0) {
		if (!in_list(pgbouncer_ignored_keys, key))
			report(l, "%s:%d: key '%s': unknown setting", file, lineno, key);
		return;
	}
	char *text = clean_value(raw, false, &why);
	if (!text) {
		report(l, "%s:%d: key '%s': %s", file, lineno, key, why);
		return;
	}
	if (!parse_value((size_t)idx, text, &v, err, sizeof err)) {
		report(l, "%s:%d: key '%s': %s", file, lineno, key, err);
		return;
	}
	store_value(l->cfg, (size_t)idx, &v);
	l->origin[idx] = (struct origin){file, lineno, NULL};
}

static struct db_config *add_db(struct config *cfg, const char *name, const char *file, int line)
{
	cfg->dbs = xrealloc(cfg->dbs, (cfg->n_dbs + 1) * sizeof *cfg->dbs);
	struct db_config *db = &cfg->dbs[cfg->n_dbs++];
	*db = (struct db_config){
	    .name = xstrdup(name),
	    .port = 5432,
	    .pool_size = -1,
	    .pool_mode = -1,
	    .tsa = TSA_ANY,
	    .max_replica_lag = -1,
	    .file = xstrdup(file),
	    .line = line,
	};
	return db;
}

static void replace_str(char **field, const char *v, bool empty_is_null)
{
	free_secret(*field);
	*field = (empty_is_null && !*v) ? NULL : xstrdup(v);
}

/* One key=value of a database's connection string; false with `err`. */
static bool db_param(struct db_config *db, const char *key, const char *v, char *err, size_t errlen)
{
	char verr[ERRLEN / 2];
	long long n;
	double t;
	int e;

	if (strcasecmp(key, "host") == 0) {
		if (!check_host(v, verr, sizeof verr))
			goto bad;
		replace_str(&db->host, v, false);
	} else if (strcasecmp(key, "port") == 0) {
		if (!parse_int(v, 1, 65535, &n, verr, sizeof verr))
			goto bad;
		db->port = (int)n;
	} else if (strcasecmp(key, "dbname") == 0) {
		replace_str(&db->dbname, v, true);
	} else if (strcasecmp(key, "user") == 0) {
		replace_str(&db->user, v, true);
	} else if (strcasecmp(key, "password") == 0) {
		replace_str(&db->password, v, false);
	} else if (strcasecmp(key, "pool_size") == 0) {
		if (!parse_int(v, 1, INT_MAX, &n, verr, sizeof verr))
			goto bad;
		db->pool_size = (int)n;
	} else if (strcasecmp(key, "pool_mode") == 0) {
		if (!parse_enum(pool_mode_names, v, &e, verr, sizeof verr))
			goto bad;
		db->pool_mode = e;
	} else if (strcasecmp(key, "target_session_attrs") == 0) {
		if (!parse_enum(tsa_names, v, &e, verr, sizeof verr))
			goto bad;
		db->tsa = e;
	} else if (strcasecmp(key, "max_replica_lag") == 0) {
		if (!parse_time(v, &t, verr, sizeof verr))
			goto bad;
		db->max_replica_lag = t;
	} else if (!in_list(db_ignored_keys, key)) {
		snprintf(err, errlen, "unknown parameter '" ECHO "'", key);
		return false;
	}
	return true;
bad:
	snprintf(err, errlen, "%.64s: %s", key, verr);
	return false;
}

/*
 * `name = host=... port=... password='it''s'`: libpq's keyword/value syntax
 * (whitespace-separated, values in single quotes with \' and \\ escapes).
 * Every bad parameter is reported; the entry is kept so that later checks do
 * not pile "no databases" on top of the real problem.
 */
static void file_database(struct loader *l, const char *file, int lineno, const char *name,
                          char *raw)
{
	const char *why = NULL;
	char err[ERRLEN];
	struct config *cfg = l->cfg;

	for (size_t i = 0; i < cfg->n_dbs; i++) {
		if (strcmp(cfg->dbs[i].name, name) == 0) {
			report(l, "%s:%d: key '%s': duplicate database (first defined at %s:%d)",
			       file, lineno, name, cfg->dbs[i].file, cfg->dbs[i].line);
			return;
		}
	}
	char *p = clean_value(raw, true, &why);
	if (!p) {
		report(l, "%s:%d: key '%s': %s", file, lineno, name, why);
		return;
	}
	struct db_config *db = add_db(cfg, name, file, lineno);
	const char *prev = NULL; /* the last parameter name, never its value */
	bool saw_host = false;   /* a bad host= was reported already */

	for (;;) {
		p = skip_ws(p);
		if (!*p)
			break;
		char *key = p;
		while (*p && *p != '=' && !isspace((unsigned char)*p))
			p++;
		char *kend = p;
		p = skip_ws(p);
		if (*p != '=') {
			/* echo a word only when it cannot be a piece of a password */
			if (prev)
				report(
				    l,
				    "%s:%d: key '%s': text without '=' after parameter '%s' (quote "
				    "values that contain spaces)",
				    file, lineno, name, prev);
			else
				report(l, "%s:%d: key '%s': expected key=value, got '" ECHO "'",
				       file, lineno, name, key);
			return;
		}
		*kend = '\0';
		p = skip_ws(p + 1);
		if (!*key) {
			report(l, "%s:%d: key '%s': missing parameter name before '='", file,
			       lineno, name);
			return;
		}

		char *w = p, *val = p;
		if (*p == '\'') {
			val = w = ++p;
			for (;;) {
				if (!*p) {
					report(
					    l,
					    "%s:%d: key '%s': unterminated quoted value for '" ECHO
					    "'",
					    file, lineno, name, key);
					return;
				}
				if (*p == '\\' && p[1])
					p++;
				else if (*p == '\'') {
					p++;
					break;
				}
				*w++ = *p++;
			}
		} else {
			while (*p && !isspace((unsigned char)*p)) {
				if (*p == '\\' && p[1])
					p++;
				*w++ = *p++;
			}
		}
		if (w == p && *p) /* the terminator lands on the separator */
			p++;
		*w = '\0';

		if (!db_param(db, key, val, err, sizeof err))
			report(l, "%s:%d: key '%s': %s", file, lineno, name, err);
		saw_host |= strcasecmp(key, "host") == 0;
		prev = key;
	}
	if (!saw_host)
		report(l, "%s:%d: key '%s': host is required", file, lineno, name);
}

static void read_file(struct loader *l, const char *path, const char *from, int from_line);

static void include_file(struct loader *l, const char *file, int lineno, char *arg)
{
	const char *why = NULL;
	char *rel = clean_value(arg, false, &why);
	if (!rel) {
		report(l, "%s:%d: %%include: %s", file, lineno, why);
		return;
	}
	if (!*rel) {
		report(l, "%s:%d: %%include needs a file name", file, lineno);
		return;
	}
	if (l->depth > INCLUDE_DEPTH_MAX) { /* the main file plus ten levels */
		report(l, "%s:%d: %%include '%s': nested more than %d deep", file, lineno, rel,
		       INCLUDE_DEPTH_MAX);
		return;
	}
	/* relative to the including file's directory, as in PgBouncer */
	const char *slash = strrchr(file, '/');
	if (*rel == '/' || !slash) {
		read_file(l, rel, file, lineno);
		return;
	}
	size_t dirlen = (size_t)(slash - file) + 1;
	char *full = xrealloc(NULL, dirlen + strlen(rel) + 1);
	memcpy(full, file, dirlen);
	strcpy(full + dirlen, rel);
	read_file(l, full, file, lineno);
	free(full);
}

static void parse_line(struct loader *l, const char *file, int lineno, char *line)
{
	char *p = trim(line);

	if (!*p || *p == ';' || *p == '#')
		return;

	if (*p == '[') {
		char *close = strchr(p, ']');
		if (!close) {
			report(l, "%s:%d: unterminated section header", file, lineno);
			l->section = SEC_UNKNOWN;
			return;
		}
		char *rest = skip_ws(close + 1);
		if (*rest && *rest != ';' && *rest != '#')
			report(l, "%s:%d: unexpected text after section header", file, lineno);
		*close = '\0';
		char *name = trim(p + 1);
		if (strcasecmp(name, "databases") == 0)
			l->section = SEC_DATABASES;
		else if (strcasecmp(name, "pgfleet") == 0 || strcasecmp(name, "pgbouncer") == 0)
			l->section = SEC_PGFLEET;
		else if (strcasecmp(name, "users") == 0 || strcasecmp(name, "peers") == 0)
			l->section = SEC_IGNORED; /* PgBouncer's per-user and peer settings */
		else {
			report(l, "%s:%d: unknown section [" ECHO "]", file, lineno, name);
			l->section = SEC_UNKNOWN;
		}
		return;
	}

	if (*p == '%') {
		if (strncasecmp(p, "%include", 8) == 0 && (!p[8] || isspace((unsigned char)p[8]))) {
			include_file(l, file, lineno, p + 8);
			return;
		}
		char *end = p;
		while (*end && !isspace((unsigned char)*end))
			end++;
		*end = '\0';
		report(l, "%s:%d: unknown directive '" ECHO "'", file, lineno, p);
		return;
	}

	char *key, *raw;
	if (*p == '"') { /* a quoted name: [databases] allows any characters */
		char *q = p;
		key = unquote(&q);
		if (!key) {
			report(l, "%s:%d: unterminated quoted key", file, lineno);
			return;
		}
		q = skip_ws(q);
		if (*q != '=') {
			report(l, "%s:%d: key '" ECHO "': expected '=' after the name", file,
			       lineno, key);
			return;
		}
		raw = q + 1;
	} else {
		char *eq = strchr(p, '=');
		if (!eq) {
			report(l, "%s:%d: syntax error: expected 'key = value'", file, lineno);
			return;
		}
		*eq = '\0';
		key = trim(p);
		raw = eq + 1;
	}
	if (!*key) {
		report(l, "%s:%d: missing key before '='", file, lineno);
		return;
	}

	switch (l->section) {
	case SEC_NONE:
		report(l, "%s:%d: key '" ECHO "': not inside a section", file, lineno, key);
		break;
	case SEC_DATABASES:
		file_database(l, file, lineno, key, raw);
		break;
	case SEC_PGFLEET:
		file_setting(l, file, lineno, key, raw);
		break;
	case SEC_IGNORED:
	case SEC_UNKNOWN: /* already reported once at the header */
		break;
	}
}

/* Reads one file; `from` is the including file (NULL for the main one). */
static void read_file(struct loader *l, const char *path, const char *from, int from_line)
{
	FILE *f = fopen(path, "r");
	struct stat sb;

	if (f && fstat(fileno(f), &sb) == 0 && S_ISDIR(sb.st_mode)) {
		fclose(f);
		f = NULL;
		errno = EISDIR;
	}
	if (!f) {
		int e = errno;
		if (from)
			report(l, "%s:%d: %%include '%s': cannot read: %s", from, from_line, path,
			       strerror(e));
		else {
			report(l, "%s: cannot read: %s", path, strerror(e));
			l->main_unreadable = true;
		}
		return;
	}

	char *real = realpath(path, NULL);
	if (!real)
		real = xstrdup(path);
	for (int i = 0; i < l->depth; i++) {
		if (strcmp(l->open[i], real) == 0) {
			report(
			    l,
			    "%s:%d: %%include '%s': include loop (the file is already being read)",
			    from, from_line, path);
			free(real);
			fclose(f);
			return;
		}
	}
	l->open[l->depth++] = real;

	const char *name = keep_name(l, path);
	enum section saved = l->section;
	if (!from)
		l->section = SEC_NONE;
	char *line = NULL;
	size_t cap = 0;
	int lineno = 0;
	while (getline(&line, &cap, f) >= 0) {
		lineno++;
		parse_line(l, name, lineno, line);
	}
	if (ferror(f))
		report(l, "%s: cannot read: %s", name, strerror(errno));
	free(line);
	fclose(f);
	/* an included file's sections end with it */
	l->section = saved;
	free(l->open[--l->depth]);
}

/* ---- environment ---- */

static const char *env_get(char *const *envp, const char *name)
{
	size_t n = strlen(name);
	for (; envp && *envp; envp++)
		if (strncmp(*envp, name, n) == 0 && (*envp)[n] == '=')
			return *envp + n + 1;
	return NULL;
}

static void apply_env_settings(struct loader *l, char *const *envp)
{
	char err[ERRLEN];

	for (size_t i = 0; i < N_SETTINGS; i++) {
		size_t n = strlen(settings[i].name);
		char *var = xrealloc(NULL, n + sizeof "PGFLEET_");
		memcpy(var, "PGFLEET_", 8);
		for (size_t j = 0; j <= n; j++)
			var[8 + j] = (char)toupper((unsigned char)settings[i].name[j]);

		const char *used = var, *text = env_get(envp, var);
		for (size_t a = 0; !text && a < sizeof env_aliases / sizeof env_aliases[0]; a++) {
			if (env_aliases[a].idx == i) {
				used = env_aliases[a].var;
				text = env_get(envp, used);
			}
		}
		if (text) {
			union value v;
			if (parse_value(i, text, &v, err, sizeof err)) {
				store_value(l->cfg, i, &v);
				l->origin[i] = (struct origin){NULL, 0, keep_name(l, used)};
			} else {
				report(l, "environment: %s: %s", used, err);
			}
		}
		free(var);
	}
}

/* DB_HOST & co: the one [databases] entry of an environment-only setup. */
static void apply_env_database(struct loader *l, char *const *envp)
{
	const char *host = env_get(envp, "DB_HOST");
	const char *port = env_get(envp, "DB_PORT");
	const char *dbname = env_get(envp, "DB_NAME");
	char err[ERRLEN];
	long long n = 5432;

	if (l->cfg->n_dbs > 0 || !host || !*host)
		return;
	bool ok = true;
	if (!check_host(host, err, sizeof err)) {
		report(l, "environment: DB_HOST: %s", err);
		ok = false;
	}
	if (port && *port && !parse_int(port, 1, 65535, &n, err, sizeof err)) {
		report(l, "environment: DB_PORT: %s", err);
		ok = false;
	}
	if (!ok)
		return;
	bool any = !dbname || !*dbname;
	struct db_config *db = add_db(l->cfg, any ? "*" : dbname, "environment", 0);
	db->host = xstrdup(host);
	db->port = (int)n;
	db->dbname = any ? NULL : xstrdup(dbname);
}

static void add_user(struct config *cfg, const char *name, const char *password)
{
	for (size_t i = 0; i < cfg->n_users; i++) {
		if (strcmp(cfg->users[i].name, name) == 0) {
			free_secret(cfg->users[i].password);
			cfg->users[i].password = xstrdup(password);
			return;
		}
	}
	cfg->users = xrealloc(cfg->users, (cfg->n_users + 1) * sizeof *cfg->users);
	cfg->users[cfg->n_users++] = (struct user_entry){xstrdup(name), xstrdup(password)};
}

/* ---- auth_file ---- */

/* `"user" "password"`, PgBouncer's userlist.txt; anything after the
 * password is ignored as PgBouncer does.  Passwords never reach a message. */
static void parse_user_line(struct loader *l, const char *file, int lineno, char *line)
{
	char *p = trim(line);

	if (!*p || *p == ';' || *p == '#')
		return;
	if (*p != '"') {
		report(l, "%s:%d: expected a quoted user name (\"user\" \"password\")", file,
		       lineno);
		return;
	}
	char *name = unquote(&p);
	if (!name) {
		report(l, "%s:%d: unterminated quoted user name", file, lineno);
		return;
	}
	if (!*name) {
		report(l, "%s:%d: empty user name", file, lineno);
		return;
	}
	p = skip_ws(p);
	if (*p != '"') {
		report(l, "%s:%d: user '" ECHO "': expected a quoted password after the name", file,
		       lineno, name);
		return;
	}
	char *password = unquote(&p);
	if (!password) {
		report(l, "%s:%d: user '" ECHO "': unterminated quoted password", file, lineno,
		       name);
		return;
	}
	add_user(l->cfg, name, password);
}

static void read_auth_file(struct loader *l, const char *path)
{
	FILE *f = fopen(path, "r");
	struct stat sb;

	if (f && fstat(fileno(f), &sb) == 0 && S_ISDIR(sb.st_mode)) {
		fclose(f);
		f = NULL;
		errno = EISDIR;
	}
	if (!f) {
		report(l, "%s: cannot read: %s", path, strerror(errno));
		return;
	}
	char *line = NULL;
	size_t cap = 0;
	int lineno = 0;
	ssize_t n;
	while ((n = getline(&line, &cap, f)) >= 0) {
		lineno++;
		parse_user_line(l, path, lineno, line);
		explicit_bzero(line, (size_t)n);
	}
	if (ferror(f))
		report(l, "%s: cannot read: %s", path, strerror(errno));
	free(line);
	fclose(f);
}

static void apply_env_user(struct loader *l, char *const *envp)
{
	const char *user = env_get(envp, "DB_USER");
	const char *password = env_get(envp, "DB_PASSWORD");

	const char *which = "DB_PASSWORD";
	if (!password) {
		password = env_get(envp, "POSTGRES_PASSWORD");
		which = "POSTGRES_PASSWORD";
	}
	/* PostgreSQL and PgBouncer refuse an empty password at login: a set
	 * but empty variable is a missing Secret key, not a password. */
	if (password && !*password) {
		report(l, "environment: %s is set but empty: empty passwords are refused", which);
		l->empty_env_password = true;
		return;
	}
	if (user && *user && password)
		add_user(l->cfg, user, password);
}

/* ---- the public interface ---- */

bool config_load(struct config *cfg, const char *path, char *const *envp,
                 config_report_fn report_fn, void *arg)
{
	struct loader l = {.cfg = cfg, .report = report_fn, .arg = arg, .path = path};

	memset(cfg, 0, sizeof *cfg);
	set_defaults(cfg);

	if (path)
		read_file(&l, path, NULL, 0);
	apply_env_settings(&l, envp);
	apply_env_database(&l, envp);
	if (*cfg->auth_file)
		read_auth_file(&l, cfg->auth_file);
	apply_env_user(&l, envp);

	/* A file that could not be read explains everything that follows. */
	if (!l.main_unreadable) {
		if (cfg->n_dbs == 0)
			report(&l, "%s: no databases configured: set [databases] or DB_HOST",
			       path ? path : "environment");
		check_settings(cfg, emit_report, &l);
	}

	for (size_t i = 0; i < l.n_names; i++)
		free(l.names[i]);
	free(l.names);

	if (l.errors) {
		config_free(cfg);
		return false;
	}
	cfg->path = path ? xstrdup(path) : NULL;
	return true;
}

void config_free(struct config *cfg)
{
	if (!cfg)
		return;
	for (size_t i = 0; i < N_SETTINGS; i++)
		if (settings[i].type == T_STR)
			free_secret(*(char **)((char *)cfg + settings[i].off));
	for (size_t i = 0; i < cfg->n_dbs; i++) {
		struct db_config *db = &cfg->dbs[i];
		free(db->name);
		free(db->host);
		free(db->dbname);
		free(db->user);
		free_secret(db->password);
		free(db->file);
	}
	free(cfg->dbs);
	for (size_t i = 0; i < cfg->n_users; i++) {
		free(cfg->users[i].name);
		free_secret(cfg->users[i].password);
	}
	free(cfg->users);
	free(cfg->path);
	memset(cfg, 0, sizeof *cfg);
}

const struct db_config *config_find_db(const struct config *cfg, const char *name)
{
	const struct db_config *fallback = NULL;
	for (size_t i = 0; i < cfg->n_dbs; i++) {
		if (strcmp(cfg->dbs[i].name, name) == 0)
			return &cfg->dbs[i];
		if (strcmp(cfg->dbs[i].name, "*") == 0)
			fallback = &cfg->dbs[i];
	}
	return fallback;
}

const struct user_entry *config_find_user(const struct config *cfg, const char *name)
{
	for (size_t i = 0; i < cfg->n_users; i++)
		if (strcmp(cfg->users[i].name, name) == 0)
			return &cfg->users[i];
	return NULL;
}

bool config_list_has(const char *list, const char *user)
{
	if (!list || !user || !*user)
		return false;
	size_t n = strlen(user);
	const char *p = list;
	for (;;) {
		while (*p == ',' || isspace((unsigned char)*p))
			p++;
		if (!*p)
			return false;
		const char *start = p;
		while (*p && *p != ',' && !isspace((unsigned char)*p))
			p++;
		if ((size_t)(p - start) == n && memcmp(start, user, n) == 0)
			return true;
	}
}

size_t config_setting_count(void)
{
	return N_SETTINGS;
}

const char *config_setting_name(size_t i)
{
	return i < N_SETTINGS ? settings[i].name : NULL;
}

const char *config_setting_default(size_t i)
{
	return i < N_SETTINGS ? settings[i].def : NULL;
}

void config_setting_value(const struct config *cfg, size_t i, char *buf, size_t len)
{
	if (!len)
		return;
	if (i >= N_SETTINGS) {
		buf[0] = '\0';
		return;
	}
	format_value(cfg, i, buf, len);
}

struct set_ctx {
	char *err;
	size_t errlen;
	bool failed;
};

static void emit_first(void *ctx, size_t idx, const char *why)
{
	struct set_ctx *s = ctx;
	if (!s->failed && s->errlen)
		snprintf(s->err, s->errlen, "%s", why);
	s->failed = true;
}

bool config_set(struct config *cfg, const char *key, const char *value, char *err, size_t errlen)
{
	char scratch[ERRLEN];
	char *e = (err && errlen) ? err : scratch;
	size_t elen = (err && errlen) ? errlen : sizeof scratch;
	union value v;

	int idx = key ? find_setting(key) : -1;
	if (idx < 0) {
		snprintf(e, elen, "unknown setting '" ECHO "'", key ? key : "");
		return false;
	}
	if (!value)
		value = "";
	if (!parse_value((size_t)idx, value, &v, e, elen))
		return false;

	/* try the new value on a shallow copy: the rules that tie settings
	 * together must hold before anything is replaced */
	struct config tmp = *cfg;
	struct set_ctx sc = {e, elen, false};
	put_value(&tmp, (size_t)idx, &v);
	check_settings(&tmp, emit_first, &sc);
	if (sc.failed) {
		if (settings[idx].type == T_STR)
			free(v.s);
		return false;
	}
	store_value(cfg, (size_t)idx, &v);
	return true;
}

const char *config_pool_mode_name(int mode)
{
	if (mode < POOL_SESSION || mode > POOL_STATEMENT)
		return "unknown";
	return pool_mode_names[mode];
}

const char *config_tsa_name(int tsa)
{
	if (tsa < TSA_ANY || tsa > TSA_PREFER_STANDBY)
		return "unknown";
	return tsa_names[tsa];
}
