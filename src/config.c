/*
 * config.c: the settings table and everything about a value.
 *
 * Owns the settings table generated from CONFIG_SETTINGS (names, types,
 * defaults, ranges), parsing and validating each value, the rules that tie
 * settings together, [databases] entry parameters, the list of settings that
 * are accepted but not implemented (CONFIG_UNIMPLEMENTED: refused or warned
 * about, never silently ignored), the struct config lifecycle (load, free,
 * look-ups, SHOW CONFIG text, SET) and the loader the sources feed.
 *
 * The sources are modules of their own: config_ini.c (the ini dialect),
 * config_env.c (environment variables), authfile.c (auth_file).  config_load
 * runs them in order; each hands values here with where they came from.
 *
 * Must not: log, exit or keep global state (the same code serves start-up,
 * `-t`, SIGHUP reload and the admin console's SET), know the ini syntax or
 * variable names (the sources' business), echo a secret in a message.
 */
#include "config.h"

#include <ctype.h>
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <unistd.h>

#include <openssl/err.h>
#include <openssl/ssl.h>

#include "authfile.h"
#include "config_env.h"
#include "config_ini.h"
#include "hba.h"

/* ~31 years: every timeout stays representable in a struct timeval. */
#define TIME_MAX_SECONDS 1e9
/* Values echoed in messages are cut here: a 100 kB line should not become
 * a 100 kB error line. */
#define ECHO "%.100s"
#define ERRLEN 512
#define ARRAY_LEN(a) (sizeof(a) / sizeof((a)[0]))
enum stype { T_STR, T_INT, T_BOOL, T_TIME, T_POOLMODE, T_AUTHTYPE, T_LB, T_LOGFMT, T_TLSMODE,
	     T_SSTATE, T_TSA };

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
    [AUTH_HBA] = "hba",
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
static const char *const sstate_names[] = {
    [SSTATE_PIN] = "pin",
    [SSTATE_ERROR] = "error",
    [SSTATE_WARN] = "warn",
    NULL,
};
static const char *const tsa_names[] = {
    [TSA_ANY] = "any",
    [TSA_READ_WRITE] = "read-write",
    [TSA_READ_ONLY] = "read-only",
    [TSA_PRIMARY] = "primary",
    [TSA_STANDBY] = "standby",
    [TSA_PREFER_STANDBY] = "prefer-standby",
    [TSA_AUTO] = "auto",
    NULL,
};

/* PgBouncer auth types pgfleet does not implement: named, so the message can
 * say "unsupported" rather than "unknown". */
static const char *const auth_type_unsupported[] = {"cert", "any",  "pam",
                                                    "ldap", "peer", NULL};

/* Integers whose range is not the general 0..INT_MAX. */
static const struct {
	const char *name;
	long long min, max;
} int_ranges[] = {
    {"listen_port", 1, 65535},
    {"max_client_conn", 1, INT_MAX},
    {"workers", 1, 64},
    {"default_pool_size", 1, INT_MAX},
    {"max_packet_size", 1024, INT_MAX},
    /* Per-client memory: a byte budget and a back-pressure mark are never off;
     * the mark stays far enough below 2 GiB (wbuf_need's limit) that what one
     * pass adds past it (at most a couple of 1 MB messages) always fits. */
    {"max_client_prepared_bytes", 1024, INT_MAX},
    /* issue 17: params.h's hard ceilings */
    {"max_client_params", 1, 4096},
    {"max_client_param_size", 64, 1024 * 1024},
    {"max_client_output_buffer", 16384, 1024 * 1024 * 1024},
    /* 24 bytes a request: at most 384 MiB for one server connection */
    {"max_pipelined_requests", 64, 16 * 1024 * 1024},
    /* issue 15: server login bounds (scram.h's SCRAM_MAX_ITERATIONS is the parser's own cap) */
    {"server_login_max_bytes", 4096, INT_MAX},
    {"server_login_max_messages", 16, INT_MAX},
    {"server_scram_max_iterations", 1, 10000000},
    /* the largest text worth buffering whole (IOBUF_MAX_WHOLE) */
    {"max_inspected_query_size", 0, 1024 * 1024},
    /* issue 19: per worker; 0 = every statement parsed */
    {"route_cache_size", 0, 1000000},
    /* issue 19: a read kept whole for a re-run (IOBUF_MAX_WHOLE); 0 = no re-runs */
    {"read_retry_max_bytes", 0, 1024 * 1024},
    /* issue 15: a cap, not a switch: 0 would mean a "*" entry that works
     * for nobody, "unlimited" would bring back the unbounded list. */
    {"max_auto_databases", 1, 1000000},
    /* issue 15 item 8: helper threads for health-check logins */
    {"health_check_max_logins", 1, 10000},
    /* issue 18: what Linux accepts for each socket option (tcp(7)); 0 = the kernel's */
    {"tcp_keepidle", 0, 32767},
    {"tcp_keepintvl", 0, 32767},
    {"tcp_keepcnt", 0, 127},
    {"listen_backlog", 1, 65535},
    /* issue 18: auth_query's cache and helper threads */
    {"auth_query_cache_size", 1, 1000000},
    {"auth_query_max_lookups", 1, 1000},
    /* issue 20: the peers' UDP port */
    {"peer_port", 1, 65535},
};

/* ---- accepted but not implemented (CONFIG_UNIMPLEMENTED in config.h) ---- */

enum unimpl_decision { REFUSE, WARN };

struct unimplemented {
	const char *name;
	enum stype type; /* T_STR, T_INT, T_BOOL or T_TIME: how values compare */
	const char *def; /* NULL: any value counts as set */
	enum unimpl_decision decision;
	const char *note; /* what pgfleet does instead, or NULL */
};

static const struct unimplemented unimplemented[] = {
#define UNIMPL_ROW(name, type, def, decision, note) {#name, T_##type, def, decision, note},
    CONFIG_UNIMPLEMENTED(UNIMPL_ROW)};
static const struct unimplemented db_unimplemented[] = {CONFIG_DB_UNIMPLEMENTED(UNIMPL_ROW)
#undef UNIMPL_ROW
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

struct config_loader {
	struct config *cfg;
	config_report_fn report;
	void *arg;
	int errors;
	const char *path; /* the main file as given, NULL: environment only */
	bool main_unreadable;
	bool empty_env_password; /* reported: "needs users" would say it again */
	bool bad_database_url;   /* reported: "no databases" would say it again */
	struct origin origin[N_SETTINGS];
	char **names; /* file and variable names that origins point to */
	size_t n_names;
};

void *config_xrealloc(void *p, size_t n)
{
	void *q = realloc(p, n ? n : 1);
	if (!q) {
		fputs("pgfleet: out of memory while loading the configuration\n", stderr);
		abort();
	}
	return q;
}

char *config_xstrdup(const char *s)
{
	size_t n = strlen(s) + 1;
	return memcpy(config_xrealloc(NULL, n), s, n);
}

void config_free_secret(char *s)
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

static bool in_list(const char *const *list, const char *s)
{
	for (; *list; list++)
		if (strcasecmp(*list, s) == 0)
			return true;
	return false;
}

int config_setting_find(const char *name)
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
	case T_SSTATE:
		return sstate_names;
	case T_TSA:
		return tsa_names;
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

/*
 * PgBouncer's TLS knobs, checked here so that a mistake is a file:line error
 * at --check and RELOAD, not a failed start-up: tls.c applies them.
 * Protocols: PgBouncer's words; pgfleet never speaks below TLS 1.2, so the
 * words that would enable 1.0/1.1 are refused.  Cipher lists and curves:
 * whatever this OpenSSL accepts.
 */
static bool check_tls_value(size_t idx, const char *text, char *err, size_t errlen)
{
	if (idx == IDX_client_tls_protocols || idx == IDX_server_tls_protocols) {
		char buf[128];
		bool any = false;
		snprintf(buf, sizeof buf, "%s", text);
		for (char *save = NULL, *w = strtok_r(buf, ", \t", &save); w;
		     w = strtok_r(NULL, ", \t", &save)) {
			if (strcasecmp(w, "secure") == 0 || strcasecmp(w, "tlsv1.2") == 0 ||
			    strcasecmp(w, "tlsv1.3") == 0) {
				any = true;
				continue;
			}
			if (strcasecmp(w, "all") == 0 || strcasecmp(w, "legacy") == 0 ||
			    strcasecmp(w, "tlsv1.0") == 0 || strcasecmp(w, "tlsv1.1") == 0)
				snprintf(err, errlen,
				         "'" ECHO "': pgfleet speaks TLS 1.2 and 1.3 only "
				         "(secure, tlsv1.2, tlsv1.3)", w);
			else
				snprintf(err, errlen,
				         "unknown value '" ECHO "' (secure, tlsv1.2, tlsv1.3)", w);
			return false;
		}
		if (!any)
			snprintf(err, errlen, "no protocol (secure, tlsv1.2, tlsv1.3)");
		return any;
	}
	if (idx == IDX_client_tls_dheparams) {
		if (strcasecmp(text, "auto") == 0 || strcasecmp(text, "none") == 0)
			return true;
		snprintf(err, errlen,
		         strcasecmp(text, "legacy") == 0
		             ? "'legacy' (1024-bit DH) is refused: auto or none"
		             : "unknown value '" ECHO "' (auto, none)",
		         text);
		return false;
	}
	bool ciphers = idx == IDX_client_tls_ciphers || idx == IDX_server_tls_ciphers;
	bool suites = idx == IDX_client_tls13_ciphers || idx == IDX_server_tls13_ciphers;
	bool curve = idx == IDX_client_tls_ecdhcurve;
	if ((ciphers && in_list((const char *const[]){"default", "secure", "fast", "normal",
	                                              "all", NULL},
	                        text)) ||
	    (suites && !*text) || (curve && strcasecmp(text, "auto") == 0))
		return true;
	if (!ciphers && !suites && !curve)
		return true;
	SSL_CTX *ctx = SSL_CTX_new(TLS_method());
	if (!ctx) {
		snprintf(err, errlen, "cannot check: OpenSSL failed");
		return false;
	}
	int ok = ciphers  ? SSL_CTX_set_cipher_list(ctx, text)
	         : suites ? SSL_CTX_set_ciphersuites(ctx, text)
	                  : SSL_CTX_set1_groups_list(ctx, text);
	SSL_CTX_free(ctx);
	ERR_clear_error();
	if (ok != 1) {
		snprintf(err, errlen, "OpenSSL does not accept '" ECHO "' as %s", text,
		         ciphers  ? "a cipher list"
		         : suites ? "TLS 1.3 cipher suites"
		                  : "a curve list");
		return false;
	}
	return true;
}

/* Checks a setting's text and converts it; STR values are copied. */
static bool parse_value(size_t idx, const char *text, union value *v, char *err, size_t errlen)
{
	const struct setting *st = &settings[idx];
	long long min, max;

	switch (st->type) {
	case T_STR:
		if (idx == IDX_listen_addr) {
			/* a comma-separated list, as PgBouncer's; no empty entry */
			const char *p = text;
			for (;;) {
				const char *comma = strchr(p, ',');
				const char *end = comma ? comma : p + strlen(p);
				while (p < end && isspace((unsigned char)*p))
					p++;
				if (p == end) {
					snprintf(err, errlen, *text ? "empty address in the list"
					                            : "must not be empty");
					return false;
				}
				if (!comma)
					break;
				p = comma + 1;
			}
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
		if (!check_tls_value(idx, text, err, errlen))
			return false;
		if (idx == IDX_unix_socket_mode &&
		    (!*text || strlen(text) > 4 || strspn(text, "01234567") != strlen(text))) {
			snprintf(err, errlen, "expected an octal mode such as 0777, got '" ECHO "'",
			         text);
			return false;
		}
		v->s = config_xstrdup(text);
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
	case T_SSTATE:
	case T_TSA:
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
		config_free_secret(*field);
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

/* One line, whatever an environment value contained; NULL on a format error. */
static char *format_line(char *small, size_t smallsz, const char *fmt, va_list ap)
	__attribute__((format(printf, 3, 0)));
static char *format_line(char *small, size_t smallsz, const char *fmt, va_list ap)
{
	va_list again;
	va_copy(again, ap);
	int n = vsnprintf(small, smallsz, fmt, ap);
	char *msg = small;
	if (n >= 0 && (size_t)n >= smallsz) {
		msg = config_xrealloc(NULL, (size_t)n + 1);
		vsnprintf(msg, (size_t)n + 1, fmt, again);
	}
	va_end(again);
	if (n < 0)
		return NULL;
	for (char *p = msg; *p; p++)
		if ((unsigned char)*p < 0x20 || *p == 0x7f)
			*p = '?';
	return msg;
}

void config_loader_report(struct config_loader *l, const char *fmt, ...)
{
	char small[ERRLEN];
	va_list ap;

	l->errors++;
	va_start(ap, fmt);
	char *msg = format_line(small, sizeof small, fmt, ap);
	va_end(ap);
	if (!msg)
		return;
	if (l->report)
		l->report(l->arg, msg);
	if (msg != small)
		free(msg);
}

void config_loader_warn(struct config_loader *l, const char *fmt, ...)
{
	char small[ERRLEN];
	va_list ap;

	va_start(ap, fmt);
	char *msg = format_line(small, sizeof small, fmt, ap);
	va_end(ap);
	if (!msg)
		return;
	struct config *cfg = l->cfg;
	cfg->warnings =
	    config_xrealloc(cfg->warnings, (cfg->n_warnings + 1) * sizeof *cfg->warnings);
	cfg->warnings[cfg->n_warnings++] = msg == small ? config_xstrdup(small) : msg;
}

struct config *config_loader_config(struct config_loader *l)
{
	return l->cfg;
}

void config_loader_set_unreadable(struct config_loader *l)
{
	l->main_unreadable = true;
}

void config_loader_set_empty_password(struct config_loader *l)
{
	l->empty_env_password = true;
}

void config_loader_set_bad_database_url(struct config_loader *l)
{
	l->bad_database_url = true;
}

/* A name that origins and db entries may point at until the load ends. */
const char *config_loader_keep_name(struct config_loader *l, const char *name)
{
	l->names = config_xrealloc(l->names, (l->n_names + 1) * sizeof *l->names);
	l->names[l->n_names] = config_xstrdup(name);
	return l->names[l->n_names++];
}

void config_loader_note_file(struct config_loader *l, const char *path)
{
	struct config *cfg = l->cfg;
	cfg->files = config_xrealloc(cfg->files, (cfg->n_files + 1) * sizeof *cfg->files);
	cfg->files[cfg->n_files++] = config_xstrdup(path);
}

/* "where: key 'name': why", where being the place the value was set. */
static void report_setting(struct config_loader *l, size_t idx, const char *why)
{
	const struct origin *o = &l->origin[idx];
	if (o->env)
		config_loader_report(l, "environment: %s: %s", o->env, why);
	else if (o->file)
		config_loader_report(l, "%s:%d: key '%s': %s", o->file, o->line, settings[idx].name,
		                     why);
	else
		config_loader_report(l, "%s: key '%s' (default): %s",
		                     l->path ? l->path : "environment", settings[idx].name, why);
}

/*
 * Rules that tie settings together, shared by the loader and SET.  `emit` is
 * called once per broken rule with the setting to blame.
 */
typedef void (*emit_fn)(void *ctx, size_t idx, const char *why);

static void check_settings(const struct config *cfg, emit_fn emit, void *ctx)
{
	char why[ERRLEN];

	if (*cfg->logfile) {
		/* Opened (created) now, so that a file pgfleet cannot write is a
		 * configuration error naming it, not a log that never appears. */
		int fd = open(cfg->logfile, O_WRONLY | O_APPEND | O_CREAT | O_CLOEXEC | O_NOCTTY, 0640);
		if (fd < 0) {
			snprintf(why, sizeof why, "cannot open '" ECHO "': %s", cfg->logfile,
			         strerror(errno));
			emit(ctx, IDX_logfile, why);
		} else {
			close(fd);
		}
	}

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
	/* a client certificate needs its key, and the key its certificate */
	if (*cfg->server_tls_cert_file && !*cfg->server_tls_key_file)
		emit(ctx, IDX_server_tls_cert_file, "needs server_tls_key_file");
	if (*cfg->server_tls_key_file && !*cfg->server_tls_cert_file)
		emit(ctx, IDX_server_tls_key_file, "needs server_tls_cert_file");
	if (cfg->auth_type == AUTH_HBA && !*cfg->auth_hba_file)
		emit(ctx, IDX_auth_type, "'hba' needs auth_hba_file");
	/* hba: the file may say trust for everyone; md5 and the others
	 * refuse a user nobody listed, as they would anyway. */
	if (cfg->auth_type != AUTH_TRUST && cfg->auth_type != AUTH_HBA && cfg->n_users == 0) {
		snprintf(why, sizeof why,
		         "'%s' needs users: set auth_file, or DB_USER with DB_PASSWORD",
		         auth_type_names[cfg->auth_type]);
		emit(ctx, IDX_auth_type, why);
	}
	/* issue 20: a peer message is believed only when signed with the
	 * shared secret: peers without one would take anybody's word. */
	if (*cfg->peers) {
		if (!config_check_host(cfg->peers, why, sizeof why))
			emit(ctx, IDX_peers, why);
		if (!*cfg->peer_secret)
			emit(ctx, IDX_peers, "needs peer_secret (PGFLEET_PEER_SECRET): peer messages are "
			                     "signed with it");
		else if (strlen(cfg->peer_secret) < 16)
			emit(ctx, IDX_peer_secret, "must be at least 16 characters long");
	}
}

static void emit_report(void *ctx, size_t idx, const char *why)
{
	struct config_loader *l = ctx;
	if (idx == IDX_auth_type && l->empty_env_password && l->cfg->n_users == 0)
		return; /* one line for one mistake: the empty password said it */
	report_setting(ctx, idx, why);
}

/* ---- accepted but not implemented ---- */

static const struct unimplemented *find_unimplemented(const struct unimplemented *list, size_t n,
                                                      const char *name)
{
	for (size_t i = 0; i < n; i++)
		if (strcasecmp(list[i].name, name) == 0)
			return &list[i];
	return NULL;
}

#define UNIMPL(name) find_unimplemented(unimplemented, ARRAY_LEN(unimplemented), name)
#define DB_UNIMPL(name) find_unimplemented(db_unimplemented, ARRAY_LEN(db_unimplemented), name)

/* Is `text` the entry's default?  A value that does not parse is not. */
static bool unimpl_is_default(const struct unimplemented *u, const char *text)
{
	char err[ERRLEN];
	long long a, b;
	bool x, y;
	double s, t;

	if (!u->def)
		return false;
	switch (u->type) {
	case T_INT:
		return parse_int(text, LLONG_MIN, LLONG_MAX, &a, err, sizeof err) &&
		       parse_int(u->def, LLONG_MIN, LLONG_MAX, &b, err, sizeof err) && a == b;
	case T_BOOL:
		return parse_bool(text, &x, err, sizeof err) &&
		       parse_bool(u->def, &y, err, sizeof err) && x == y;
	case T_TIME:
		return parse_time(text, &s, err, sizeof err) &&
		       parse_time(u->def, &t, err, sizeof err) && s == t;
	default:
		return strcasecmp(text, u->def) == 0;
	}
}

/* Is setting `idx`'s value in `cfg` its default? */
static bool setting_is_default(const struct config *cfg, size_t idx)
{
	char now[ERRLEN], def[ERRLEN], err[ERRLEN];
	union value v;
	struct config tmp;

	memset(&tmp, 0, sizeof tmp);
	if (!parse_value(idx, settings[idx].def, &v, err, sizeof err))
		return false;
	put_value(&tmp, idx, &v);
	format_value(&tmp, idx, def, sizeof def);
	if (settings[idx].type == T_STR)
		free(v.s);
	format_value(cfg, idx, now, sizeof now);
	return strcmp(now, def) == 0;
}

/* "not implemented by pgfleet yet; remove it or set it to 0 (its default)" */
static void refusal(const struct unimplemented *u, char *buf, size_t len)
{
	if (!u->def)
		snprintf(buf, len, "not implemented by pgfleet yet; remove it");
	else if (!*u->def)
		snprintf(buf, len,
		         "not implemented by pgfleet yet; remove it (its default is empty)");
	else
		snprintf(buf, len,
		         "not implemented by pgfleet yet; remove it or set it to %s (its "
		         "default)",
		         u->def);
}

/* "not implemented by pgfleet, ignored (pgfleet logs to stderr)" */
static void warning(const struct unimplemented *u, char *buf, size_t len)
{
	snprintf(buf, len, "not implemented by pgfleet, ignored%s%s%s", u->note ? " (" : "",
	         u->note ? u->note : "", u->note ? ")" : "");
}

/* The CONFIG_SETTINGS entries of CONFIG_UNIMPLEMENTED, once every source
 * has spoken: named where their value came from. */
static void check_unimplemented(struct config_loader *l)
{
	char why[ERRLEN];

	for (size_t i = 0; i < N_SETTINGS; i++) {
		const struct unimplemented *u = UNIMPL(settings[i].name);
		if (!u || setting_is_default(l->cfg, i))
			continue;
		if (u->decision == REFUSE) {
			refusal(u, why, sizeof why);
			report_setting(l, i, why);
			continue;
		}
		warning(u, why, sizeof why);
		const struct origin *o = &l->origin[i];
		if (o->env)
			config_loader_warn(l, "environment: %s: %s", o->env, why);
		else
			config_loader_warn(l, "%s:%d: key '%s': %s", o->file ? o->file : "?",
			                   o->line, settings[i].name, why);
	}
}

bool config_setting_known(const char *name)
{
	return config_setting_find(name) >= 0 || UNIMPL(name) != NULL;
}

size_t config_key_count(void)
{
	return N_SETTINGS + ARRAY_LEN(unimplemented);
}

const char *config_key_name(size_t i)
{
	if (i < N_SETTINGS)
		return settings[i].name;
	i -= N_SETTINGS;
	if (i >= ARRAY_LEN(unimplemented) || config_setting_find(unimplemented[i].name) >= 0)
		return NULL;
	return unimplemented[i].name;
}

void config_loader_set_env_key(struct config_loader *l, const char *name, const char *var,
                               const char *text)
{
	char err[ERRLEN];
	int idx = config_setting_find(name);
	if (idx >= 0) {
		config_loader_set_env(l, (size_t)idx, var, text);
		return;
	}
	/* PgBouncer's own, not a setting: judged now, nothing is stored */
	const struct unimplemented *u = UNIMPL(name);
	if (!u || unimpl_is_default(u, text))
		return;
	if (u->decision == REFUSE) {
		refusal(u, err, sizeof err);
		config_loader_report(l, "environment: %s: %s", var, err);
	} else {
		warning(u, err, sizeof err);
		config_loader_warn(l, "environment: %s: %s", var, err);
	}
}

void config_loader_set_file(struct config_loader *l, const char *key, const char *text,
                            const char *file, int lineno)
{
	char err[ERRLEN];
	union value v;

	int idx = config_setting_find(key);
	if (idx < 0) {
		/* PgBouncer's own: judged now, nothing is stored */
		const struct unimplemented *u = UNIMPL(key);
		if (!u) {
			config_loader_report(l, "%s:%d: key '%s': unknown setting", file, lineno,
			                     key);
			return;
		}
		if (unimpl_is_default(u, text))
			return;
		if (u->decision == REFUSE) {
			refusal(u, err, sizeof err);
			config_loader_report(l, "%s:%d: key '%s': %s", file, lineno, key, err);
		} else {
			warning(u, err, sizeof err);
			config_loader_warn(l, "%s:%d: key '%s': %s", file, lineno, key, err);
		}
		return;
	}
	if (!parse_value((size_t)idx, text, &v, err, sizeof err)) {
		config_loader_report(l, "%s:%d: key '%s': %s", file, lineno, key, err);
		return;
	}
	/* A relative auth_file is next to the file that names it, as %include
	 * is: conf/pgfleet.ini's "auth_file = userlist.txt" works from any
	 * directory (PgBouncer would look in its working directory). */
	const char *slash = strrchr(file, '/');
	if (idx == IDX_auth_file && *v.s && v.s[0] != '/' && slash) {
		size_t dir = (size_t)(slash - file) + 1, n = strlen(v.s) + 1;
		char *joined = config_xrealloc(NULL, dir + n);
		memcpy(joined, file, dir);
		memcpy(joined + dir, v.s, n);
		free(v.s);
		v.s = joined;
	}
	store_value(l->cfg, (size_t)idx, &v);
	l->origin[idx] = (struct origin){file, lineno, NULL};
}

void config_loader_set_env(struct config_loader *l, size_t idx, const char *var, const char *text)
{
	char err[ERRLEN];
	union value v;

	if (idx >= N_SETTINGS)
		return;
	if (parse_value(idx, text, &v, err, sizeof err)) {
		store_value(l->cfg, idx, &v);
		l->origin[idx] = (struct origin){NULL, 0, config_loader_keep_name(l, var)};
	} else {
		config_loader_report(l, "environment: %s: %s", var, err);
	}
}

/* ---- [databases] entries ---- */

struct db_config *config_db_add(struct config *cfg, const char *name, const char *file, int line)
{
	cfg->dbs = config_xrealloc(cfg->dbs, (cfg->n_dbs + 1) * sizeof *cfg->dbs);
	struct db_config *db = &cfg->dbs[cfg->n_dbs++];
	*db = (struct db_config){
	    .name = config_xstrdup(name),
	    .port = 5432,
	    .pool_size = -1,
	    .pool_mode = -1,
	    .tsa = -1,
	    .max_replica_lag = -1,
	    .min_pool_size = -1,
	    .reserve_pool_size = -1,
	    .max_db_connections = -1,
	    .server_lifetime = -1,
	    .file = config_xstrdup(file),
	    .line = line,
	};
	return db;
}

static void replace_str(char **field, const char *v, bool empty_is_null)
{
	config_free_secret(*field);
	*field = (empty_is_null && !*v) ? NULL : config_xstrdup(v);
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
	} else if (strcasecmp(key, "auth_user") == 0) {
		replace_str(&db->auth_user, v, true);
	} else if (strcasecmp(key, "auth_query") == 0) {
		replace_str(&db->auth_query, v, true);
	} else if (strcasecmp(key, "auth_dbname") == 0) {
		replace_str(&db->auth_dbname, v, true);
	} else if (strcasecmp(key, "pool_size") == 0) {
		if (!parse_int(v, 1, INT_MAX, &n, verr, sizeof verr))
			goto bad;
		db->pool_size = (int)n;
	} else if (strcasecmp(key, "min_pool_size") == 0) {
		if (!parse_int(v, 0, INT_MAX, &n, verr, sizeof verr))
			goto bad;
		db->min_pool_size = (int)n;
	} else if (strcasecmp(key, "reserve_pool_size") == 0 || strcasecmp(key, "reserve_pool") == 0) {
		/* reserve_pool: PgBouncer's older name, still accepted by it */
		if (!parse_int(v, 0, INT_MAX, &n, verr, sizeof verr))
			goto bad;
		db->reserve_pool_size = (int)n;
	} else if (strcasecmp(key, "max_db_connections") == 0) {
		if (!parse_int(v, 0, INT_MAX, &n, verr, sizeof verr))
			goto bad;
		db->max_db_connections = (int)n;
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
	} else if (strcasecmp(key, "server_lifetime") == 0) {
		if (!parse_time(v, &t, verr, sizeof verr))
			goto bad;
		db->server_lifetime = t;
	} else {
		snprintf(err, errlen, "unknown parameter '" ECHO "'", key);
		return false;
	}
	return true;
bad:
	snprintf(err, errlen, "%.64s: %s", key, verr);
	return false;
}

void config_db_set_param(struct config_loader *l, struct db_config *db, const char *key,
                         const char *value, const char *file, int lineno)
{
	char err[ERRLEN];
	const struct unimplemented *u = DB_UNIMPL(key);

	if (!u) {
		if (!db_param(db, key, value, err, sizeof err))
			config_loader_report(l, "%s:%d: key '%s': %s", file, lineno, db->name, err);
		return;
	}
	if (unimpl_is_default(u, value))
		return;
	/* the parameter's name, never its value: it may sit next to a password */
	if (u->decision == REFUSE) {
		refusal(u, err, sizeof err);
		config_loader_report(l, "%s:%d: key '%s': %s: %s", file, lineno, db->name, u->name,
		                     err);
	} else {
		warning(u, err, sizeof err);
		config_loader_warn(l, "%s:%d: key '%s': %s: %s", file, lineno, db->name, u->name,
		                   err);
	}
}

/* ---- [users] entries ---- */

struct user_config *config_user_cfg_add(struct config_loader *l, const char *name,
                                        const char *file, int line)
{
	struct config *cfg = l->cfg;
	for (size_t i = 0; i < cfg->n_user_cfgs; i++) {
		if (strcmp(cfg->user_cfgs[i].name, name) == 0) {
			config_loader_report(l, "%s:%d: key '%s': duplicate user (first defined at %s:%d)",
			                     file, line, name, cfg->user_cfgs[i].file,
			                     cfg->user_cfgs[i].line);
			return NULL;
		}
	}
	cfg->user_cfgs =
	    config_xrealloc(cfg->user_cfgs, (cfg->n_user_cfgs + 1) * sizeof *cfg->user_cfgs);
	struct user_config *u = &cfg->user_cfgs[cfg->n_user_cfgs++];
	*u = (struct user_config){
	    .name = config_xstrdup(name),
	    .max_user_connections = -1,
	    .file = config_xstrdup(file),
	    .line = line,
	};
	return u;
}

/* PgBouncer's other [users] keys: refused by name, never ignored. */
static const char *const user_unimplemented[] = {
    "pool_mode", "pool_size", "reserve_pool_size", "max_user_client_connections", NULL};

void config_user_set_param(struct config_loader *l, struct user_config *u, const char *key,
                           const char *value, const char *file, int line)
{
	char verr[ERRLEN / 2];
	long long n;
	if (strcasecmp(key, "max_user_connections") == 0) {
		if (!parse_int(value, 0, INT_MAX, &n, verr, sizeof verr))
			config_loader_report(l, "%s:%d: key '%s': max_user_connections: %s", file, line,
			                     u->name, verr);
		else
			u->max_user_connections = (int)n;
	} else if (in_list(user_unimplemented, key)) {
		config_loader_report(l, "%s:%d: key '%s': %s: not implemented by pgfleet yet in "
		                        "[users]; remove it",
		                     file, line, u->name, key);
	} else {
		config_loader_report(l, "%s:%d: key '%s': unknown parameter '" ECHO "'", file, line,
		                     u->name, key);
	}
}

const struct user_config *config_find_user_cfg(const struct config *cfg, const char *name)
{
	for (size_t i = 0; i < cfg->n_user_cfgs; i++)
		if (strcmp(cfg->user_cfgs[i].name, name) == 0)
			return &cfg->user_cfgs[i];
	return NULL;
}

void config_user_add(struct config *cfg, const char *name, const char *password)
{
	for (size_t i = 0; i < cfg->n_users; i++) {
		if (strcmp(cfg->users[i].name, name) == 0) {
			config_free_secret(cfg->users[i].password);
			cfg->users[i].password = config_xstrdup(password);
			return;
		}
	}
	cfg->users = config_xrealloc(cfg->users, (cfg->n_users + 1) * sizeof *cfg->users);
	cfg->users[cfg->n_users++] =
	    (struct user_entry){config_xstrdup(name), config_xstrdup(password)};
}

bool config_parse_int(const char *s, long long min, long long max, long long *out, char *err,
                      size_t errlen)
{
	return parse_int(s, min, max, out, err, errlen);
}

bool config_check_host(const char *h, char *err, size_t errlen)
{
	return check_host(h, err, errlen);
}

static void hba_report(void *arg, const char *line)
{
	config_loader_report(arg, "%s", line);
}

/* auth_hba_file into cfg->hba, and what its records need from the other
 * settings: cert needs client certificates, which only verify-ca and
 * verify-full ask for. */
static void load_hba(struct config_loader *l)
{
	struct config *cfg = l->cfg;
	const char *file;
	int line;

	cfg->hba = hba_load(cfg->auth_hba_file, cfg->auth_ident_file, hba_report, l);
	/* As PostgreSQL: a record that could never match is an error, not a
	 * record silently skipped. */
	if (cfg->hba && cfg->client_tls_sslmode == TLS_DISABLE &&
	    hba_find_hostssl(cfg->hba, &file, &line))
		config_loader_report(l,
		                     "%s:%d: hostssl record cannot match because client_tls_sslmode "
		                     "is disable",
		                     file, line);
	else if (cfg->hba && cfg->client_tls_sslmode < TLS_VERIFY_CA &&
	         hba_find_method(cfg->hba, HBA_CERT, &file, &line))
		config_loader_report(l,
		                     "%s:%d: method 'cert' needs client_tls_sslmode verify-ca or "
		                     "verify-full (client certificates are not asked for otherwise)",
		                     file, line);
}

/* ---- the public interface ---- */

bool config_load(struct config *cfg, const char *path, char *const *envp,
                 config_report_fn report_fn, void *arg)
{
	struct config_loader l = {.cfg = cfg, .report = report_fn, .arg = arg, .path = path};

	memset(cfg, 0, sizeof *cfg);
	set_defaults(cfg);

	/* the order of precedence: the file, then the environment over it */
	if (path)
		config_ini_read(&l, path);
	config_env_apply_settings(&l, envp);
	config_env_apply_database(&l, envp);
	if (*cfg->auth_file)
		authfile_read(&l, cfg->auth_file);
	config_env_apply_user(&l, envp);
	/* As PgBouncer: auth_hba_file is read only for auth_type = hba. */
	if (cfg->auth_type == AUTH_HBA && *cfg->auth_hba_file)
		load_hba(&l);

	/* A file that could not be read explains everything that follows. */
	if (!l.main_unreadable) {
		if (cfg->n_dbs == 0 && !l.bad_database_url)
			config_loader_report(
			    &l, "%s: no databases configured: set [databases] or DB_HOST",
			    path ? path : "environment");
		check_settings(cfg, emit_report, &l);
		check_unimplemented(&l);
	}

	for (size_t i = 0; i < l.n_names; i++)
		free(l.names[i]);
	free(l.names);

	if (l.errors) {
		config_free(cfg);
		return false;
	}
	cfg->path = path ? config_xstrdup(path) : NULL;
	return true;
}

void config_free(struct config *cfg)
{
	if (!cfg)
		return;
	for (size_t i = 0; i < N_SETTINGS; i++)
		if (settings[i].type == T_STR)
			config_free_secret(*(char **)((char *)cfg + settings[i].off));
	for (size_t i = 0; i < cfg->n_dbs; i++) {
		struct db_config *db = &cfg->dbs[i];
		free(db->name);
		free(db->host);
		free(db->dbname);
		free(db->user);
		config_free_secret(db->password);
		free(db->auth_user);
		free(db->auth_query);
		free(db->auth_dbname);
		free(db->file);
	}
	free(cfg->dbs);
	for (size_t i = 0; i < cfg->n_users; i++) {
		free(cfg->users[i].name);
		config_free_secret(cfg->users[i].password);
	}
	free(cfg->users);
	for (size_t i = 0; i < cfg->n_user_cfgs; i++) {
		free(cfg->user_cfgs[i].name);
		free(cfg->user_cfgs[i].file);
	}
	free(cfg->user_cfgs);
	for (size_t i = 0; i < cfg->n_warnings; i++)
		free(cfg->warnings[i]);
	free(cfg->warnings);
	free(cfg->path);
	for (size_t i = 0; i < cfg->n_files; i++)
		free(cfg->files[i]);
	free(cfg->files);
	hba_free(cfg->hba);
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

/* Is name a member of a comma/space-separated list (fold: in any case)? */
static bool list_has(const char *list, const char *name, bool fold)
{
	if (!list || !name || !*name)
		return false;
	size_t n = strlen(name);
	const char *p = list;
	for (;;) {
		while (*p == ',' || isspace((unsigned char)*p))
			p++;
		if (!*p)
			return false;
		const char *start = p;
		while (*p && *p != ',' && !isspace((unsigned char)*p))
			p++;
		if ((size_t)(p - start) == n &&
		    (fold ? strncasecmp(start, name, n) : memcmp(start, name, n)) == 0)
			return true;
	}
}

bool config_list_has(const char *list, const char *user)
{
	return list_has(list, user, false);
}

bool config_list_has_nocase(const char *list, const char *name)
{
	return list_has(list, name, true);
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

	int idx = key ? config_setting_find(key) : -1;
	if (!value)
		value = "";
	if (idx < 0) {
		/* PgBouncer's own that pgfleet does not implement: its default
		 * changes nothing and is taken, anything else is refused. */
		const struct unimplemented *u = key ? UNIMPL(key) : NULL;
		if (u && unimpl_is_default(u, value))
			return true;
		if (u && u->decision == REFUSE)
			refusal(u, e, elen);
		else if (u)
			snprintf(e, elen, "not implemented by pgfleet%s%s%s", u->note ? " (" : "",
			         u->note ? u->note : "", u->note ? ")" : "");
		else
			snprintf(e, elen, "unknown setting '" ECHO "'", key ? key : "");
		return false;
	}
	if (!parse_value((size_t)idx, value, &v, e, elen))
		return false;

	/* try the new value on a shallow copy: the rules that tie settings
	 * together must hold before anything is replaced */
	struct config tmp = *cfg;
	struct set_ctx sc = {e, elen, false};
	put_value(&tmp, (size_t)idx, &v);
	const struct unimplemented *u = UNIMPL(settings[idx].name);
	if (u && u->decision == REFUSE && !setting_is_default(&tmp, (size_t)idx)) {
		refusal(u, e, elen);
		sc.failed = true;
	}
	if (!sc.failed)
		check_settings(&tmp, emit_first, &sc);
	if (!sc.failed && tmp.auth_type == AUTH_HBA && !tmp.hba) {
		snprintf(e, elen,
		         "auth_type 'hba': set it and auth_hba_file in the file, then RELOAD (the "
		         "rules are read by a load)");
		sc.failed = true;
	}
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
	if (tsa < TSA_ANY || tsa > TSA_AUTO)
		return "unknown";
	return tsa_names[tsa];
}
