/*
 * config_env.c: the environment as a configuration source (ConfigMap and
 * Secret style, no file needed).
 *
 * Owns the variable names: PGFLEET_<NAME> for every setting, the
 * edoburu/pgbouncer image's names (POOL_MODE, ...; PGFLEET_<NAME> wins), the
 * one database of DB_HOST/DB_PORT/DB_NAME and the one user of
 * DB_USER/DB_PASSWORD (or POSTGRES_PASSWORD).  A message names the variable.
 *
 * Must not: judge a setting's value (config.c does), read anything but the
 * `envp` given (never getenv: tests and reload pass their own), or echo a
 * password.
 */
#include "config_env.h"

#include <ctype.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "config.h"

#define ERRLEN 512

/*
 * The edoburu/pgbouncer image's variables for settings: its entrypoint writes
 * `name = $NAME`, so the variable is the key upper-cased.  Every key of that
 * entrypoint is here, implemented or not: a variable for a key pgfleet does
 * not implement is refused (or warned about) like the key in a file, never
 * ignored.  PGFLEET_<NAME> wins over these.  (Lower case: the variable names
 * are made from them.)
 */
static const char *const image_keys[] = {
    "listen_addr", "listen_port", "unix_socket_dir", "auth_file", "auth_hba_file", "auth_type",
    "auth_user", "auth_query", "auth_dbname", "pool_mode", "max_client_conn", "default_pool_size",
    "min_pool_size", "reserve_pool_size", "reserve_pool_timeout", "max_db_connections",
    "max_user_connections", "server_round_robin", "ignore_startup_parameters", "disable_pqexec",
    "application_name_add_host", "max_prepared_statements", "log_connections",
    "log_disconnections", "log_pooler_errors", "log_stats", "stats_period", "verbose",
    "admin_users", "stats_users", "logfile", "server_reset_query", "server_reset_query_always",
    "server_check_delay", "server_check_query", "server_lifetime", "server_idle_timeout",
    "server_connect_timeout", "server_login_retry", "client_login_timeout",
    "autodb_idle_timeout", "dns_max_ttl", "dns_nxdomain_ttl", "client_tls_sslmode",
    "client_tls_key_file", "client_tls_cert_file", "client_tls_ca_file", "client_tls_protocols",
    "client_tls_ciphers", "client_tls_ecdhcurve", "client_tls_dheparams", "server_tls_sslmode",
    "server_tls_ca_file", "server_tls_key_file", "server_tls_cert_file", "server_tls_protocols",
    "server_tls_ciphers", "query_timeout", "query_wait_timeout", "client_idle_timeout",
    "idle_transaction_timeout", "pkt_buf", "max_packet_size", "listen_backlog", "sbuf_loopcnt",
    "suspend_timeout", "tcp_defer_accept", "tcp_keepalive", "tcp_keepcnt", "tcp_keepidle",
    "tcp_keepintvl", "tcp_user_timeout", NULL,
};

/* The image's variables that name no pgfleet key, and why each is refused. */
static const struct {
	const char *var;
	const char *why;
} image_refused[] = {
    {"CLIENT_ENCODING", "the [databases] parameter client_encoding is not implemented by pgfleet "
                        "yet; remove it"},
    {"TIMEZONE", "the [databases] parameter timezone is not implemented by pgfleet yet; remove it"},
    {"POOL_SIZE", "not a setting; use PGFLEET_DEFAULT_POOL_SIZE (or DEFAULT_POOL_SIZE)"},
};

/* PGFLEET_ variables of pgfleet's own scripts and tests (PGFLEET_BIN,
 * PGFLEET_FIXTURE_NET, ...): not settings, left alone.  A prefix ends in '_'. */
static const char *const tool_names[] = {"bin", "pg_bin", "fixture_", "regress", "bench_",
                                         "drivers_", "fuzz_", "image_", NULL};

const char *config_env_get(char *const *envp, const char *name)
{
	size_t n = strlen(name);
	for (; envp && *envp; envp++)
		if (strncmp(*envp, name, n) == 0 && (*envp)[n] == '=')
			return *envp + n + 1;
	return NULL;
}

static bool image_key(const char *name)
{
	for (size_t i = 0; image_keys[i]; i++)
		if (strcmp(image_keys[i], name) == 0)
			return true;
	return false;
}

static char *upper_var(const char *prefix, const char *name)
{
	size_t p = strlen(prefix), n = strlen(name);
	char *var = config_xrealloc(NULL, p + n + 1);
	memcpy(var, prefix, p);
	for (size_t j = 0; j <= n; j++)
		var[p + j] = (char)toupper((unsigned char)name[j]);
	return var;
}

static bool tool_variable(const char *rest)
{
	for (size_t i = 0; tool_names[i]; i++) {
		size_t n = strlen(tool_names[i]);
		bool prefix = tool_names[i][n - 1] == '_' || strcmp(tool_names[i], "regress") == 0;
		if (strncasecmp(rest, tool_names[i], n) == 0 && (prefix || rest[n] == '\0'))
			return true;
	}
	return false;
}

/* A PGFLEET_ variable that names no key is a typo until shown otherwise. */
static void check_unknown_pgfleet(struct config_loader *l, char *const *envp)
{
	for (; envp && *envp; envp++) {
		if (strncmp(*envp, "PGFLEET_", 8) != 0)
			continue;
		const char *rest = *envp + 8, *eq = strchr(rest, '=');
		size_t n = eq ? (size_t)(eq - rest) : strlen(rest);
		char name[128];
		if (n == 0 || n >= sizeof name)
			goto unknown;
		for (size_t i = 0; i < n; i++) {
			if (islower((unsigned char)rest[i]))
				goto unknown; /* PGFLEET_listen_port is not read */
			name[i] = (char)tolower((unsigned char)rest[i]);
		}
		name[n] = '\0';
		if (config_setting_known(name) || tool_variable(name))
			continue;
	unknown:
		config_loader_report(l, "environment: PGFLEET_%.*s: unknown setting",
		                     (int)(n > 100 ? 100 : n), rest);
	}
}

void config_env_apply_settings(struct config_loader *l, char *const *envp)
{
	for (size_t i = 0; i < config_key_count(); i++) {
		const char *name = config_key_name(i);
		if (!name)
			continue;
		char *var = upper_var("PGFLEET_", name);
		char *bare = image_key(name) ? upper_var("", name) : NULL;
		const char *used = var, *text = config_env_get(envp, var);
		if (!text && bare) {
			used = bare;
			text = config_env_get(envp, bare);
		}
		if (text)
			config_loader_set_env_key(l, name, used, text);
		free(var);
		free(bare);
	}
	for (size_t i = 0; i < sizeof image_refused / sizeof image_refused[0]; i++)
		if (config_env_get(envp, image_refused[i].var))
			config_loader_report(l, "environment: %s: %s", image_refused[i].var,
			                     image_refused[i].why);
	check_unknown_pgfleet(l, envp);
}

/* One postgres:// URL of DATABASE_URL / DATABASE_URLS, decoded. */
struct db_url {
	char *user, *password, *host, *dbname; /* NULL when absent */
	long long port;
};

static void url_free(struct db_url *u)
{
	free(u->user);
	config_free_secret(u->password);
	free(u->host);
	free(u->dbname);
	memset(u, 0, sizeof *u);
}

static int hexval(int c)
{
	return isdigit(c) ? c - '0' : isxdigit(c) ? tolower(c) - 'a' + 10 : -1;
}

/* `n` bytes of `p`, %XX decoded (passwords with '@' or ':' are written so);
 * NULL when a % is not followed by two hex digits or decodes to NUL. */
static char *url_decode(const char *p, size_t n)
{
	char *out = config_xrealloc(NULL, n + 1), *w = out;
	for (size_t i = 0; i < n; i++) {
		if (p[i] != '%') {
			*w++ = p[i];
			continue;
		}
		int hi = i + 1 < n ? hexval((unsigned char)p[i + 1]) : -1;
		int lo = i + 2 < n ? hexval((unsigned char)p[i + 2]) : -1;
		if (hi < 0 || lo < 0 || (hi == 0 && lo == 0)) {
			*w = '\0'; /* config_free_secret wipes up to the NUL */
			config_free_secret(out);
			return NULL;
		}
		*w++ = (char)(hi * 16 + lo);
		i += 2;
	}
	*w = '\0';
	return out;
}

/* postgres[ql]://[user[:password]@]host[:port][/dbname]: false with `err`,
 * which never quotes the URL (it holds a password). */
static bool url_parse(const char *url, size_t len, struct db_url *u, char *err, size_t errlen)
{
	static const char *const schemes[] = {"postgres://", "postgresql://", NULL};
	const char *p = NULL, *end = url + len;
	memset(u, 0, sizeof *u);
	u->port = 5432;
	for (size_t i = 0; schemes[i]; i++) {
		size_t n = strlen(schemes[i]);
		if (len >= n && strncasecmp(url, schemes[i], n) == 0)
			p = url + n;
	}
	if (!p) {
		snprintf(err, errlen, "expected postgres://user:password@host:port/dbname");
		return false;
	}
	const char *slash = memchr(p, '/', (size_t)(end - p));
	const char *auth_end = slash ? slash : end;
	if (memchr(p, '?', (size_t)(end - p))) {
		snprintf(err, errlen, "URL parameters (?...) are not supported");
		return false;
	}
	/* the last '@' ends the user part: a password may hold an undecoded '@' */
	const char *at = NULL;
	for (const char *q = p; q < auth_end; q++)
		if (*q == '@')
			at = q;
	const char *hp = p;
	if (at) {
		const char *colon = memchr(p, ':', (size_t)(at - p));
		u->user = url_decode(p, (size_t)((colon ? colon : at) - p));
		if (colon)
			u->password = url_decode(colon + 1, (size_t)(at - colon - 1));
		if (!u->user || (colon && !u->password)) {
			snprintf(err, errlen, "bad %%-escape in the user or password");
			url_free(u);
			return false;
		}
		hp = at + 1;
	}
	const char *host_end = auth_end, *port = NULL;
	if (*hp == '[') {
		const char *close = memchr(hp, ']', (size_t)(auth_end - hp));
		if (!close) {
			snprintf(err, errlen, "unterminated [ in the host");
			url_free(u);
			return false;
		}
		u->host = url_decode(hp + 1, (size_t)(close - hp - 1));
		if (close + 1 < auth_end && close[1] == ':')
			port = close + 2;
		else if (close + 1 != auth_end) {
			snprintf(err, errlen, "unexpected text after the host");
			url_free(u);
			return false;
		}
	} else {
		const char *colon = memchr(hp, ':', (size_t)(auth_end - hp));
		if (colon) {
			host_end = colon;
			port = colon + 1;
		}
		u->host = url_decode(hp, (size_t)(host_end - hp));
	}
	char perr[128];
	if (!u->host || !config_check_host(u->host, perr, sizeof perr)) {
		snprintf(err, errlen, "bad host: %s", u->host ? perr : "bad %-escape");
		url_free(u);
		return false;
	}
	if (port) {
		char digits[16];
		size_t n = (size_t)(auth_end - port);
		if (n == 0 || n >= sizeof digits) {
			snprintf(err, errlen, "bad port");
			url_free(u);
			return false;
		}
		memcpy(digits, port, n);
		digits[n] = '\0';
		if (!config_parse_int(digits, 1, 65535, &u->port, perr, sizeof perr)) {
			snprintf(err, errlen, "port: %s", perr);
			url_free(u);
			return false;
		}
	}
	if (slash && slash + 1 < end) {
		u->dbname = url_decode(slash + 1, (size_t)(end - slash - 1));
		if (!u->dbname) {
			snprintf(err, errlen, "bad %%-escape in the database name");
			url_free(u);
			return false;
		}
	}
	return true;
}

/* The variables DATABASE_URL stands for: setting both is ambiguous. */
static const char *const url_parts[] = {"DB_HOST", "DB_PORT", "DB_NAME", "DB_USER",
                                        "DB_PASSWORD", NULL};

/* DATABASE_URL (one database, as DB_HOST & co) and DATABASE_URLS (a comma
 * list: one database per URL, named by its dbname): `fn` gets each URL. */
static bool each_url(struct config_loader *l, char *const *envp, bool report,
                     void (*fn)(struct config_loader *, const struct db_url *, bool list))
{
	const char *one = config_env_get(envp, "DATABASE_URL");
	const char *many = config_env_get(envp, "DATABASE_URLS");
	char err[256];
	bool ok = true;

	if (one && *one && many && *many) {
		if (report)
			config_loader_report(l, "environment: DATABASE_URL: DATABASE_URLS is set "
			                        "too: use one of them");
		return false;
	}
	const char *var = (one && *one) ? "DATABASE_URL" : "DATABASE_URLS";
	const char *list = (one && *one) ? one : many;
	if (!list || !*list)
		return true;
	for (size_t i = 0; report && url_parts[i]; i++) {
		if (config_env_get(envp, url_parts[i])) {
			config_loader_report(l, "environment: %s: %s is set too: use one of them",
			                     var, url_parts[i]);
			ok = false;
		}
	}
	if (!ok)
		return false;
	bool is_list = list == many;
	for (const char *p = list;;) {
		const char *comma = is_list ? strchr(p, ',') : NULL;
		size_t n = comma ? (size_t)(comma - p) : strlen(p);
		struct db_url u;
		if (!url_parse(p, n, &u, err, sizeof err)) {
			if (report)
				config_loader_report(l, "environment: %s: %s", var, err);
			ok = false;
		} else if (is_list && !u.dbname) {
			if (report)
				config_loader_report(l, "environment: %s: each URL needs a /dbname",
				                     var);
			ok = false;
			url_free(&u);
		} else {
			fn(l, &u, is_list);
			url_free(&u);
		}
		if (!comma)
			break;
		p = comma + 1;
	}
	return ok;
}

static void url_database(struct config_loader *l, const struct db_url *u, bool list)
{
	struct config *cfg = config_loader_config(l);
	const char *name = u->dbname ? u->dbname : "*";
	for (size_t i = 0; i < cfg->n_dbs; i++) {
		if (strcmp(cfg->dbs[i].name, name) == 0) {
			config_loader_report(l, "environment: DATABASE_URL%s: database '%.64s' "
			                        "twice", list ? "S" : "", name);
			return;
		}
	}
	struct db_config *db = config_db_add(cfg, name, "environment", 0);
	db->host = config_xstrdup(u->host);
	db->port = (int)u->port;
	db->dbname = u->dbname ? config_xstrdup(u->dbname) : NULL;
}

static void url_ignore(struct config_loader *l, const struct db_url *u, bool list)
{
	(void)l, (void)u, (void)list;
}

static void url_user(struct config_loader *l, const struct db_url *u, bool list)
{
	(void)list;
	/* as DB_USER with DB_PASSWORD: an empty password never logs in */
	if (u->user && *u->user && u->password && *u->password)
		config_user_add(config_loader_config(l), u->user, u->password);
}

/* DB_HOST & co: the one [databases] entry of an environment-only setup. */
void config_env_apply_database(struct config_loader *l, char *const *envp)
{
	const char *host = config_env_get(envp, "DB_HOST");
	const char *port = config_env_get(envp, "DB_PORT");
	const char *dbname = config_env_get(envp, "DB_NAME");
	char err[ERRLEN];
	long long n = 5432;

	if (config_loader_config(l)->n_dbs > 0) {
		/* the file's [databases] win; the URLs are still checked */
		(void)each_url(l, envp, true, url_ignore);
		return;
	}
	if (!each_url(l, envp, true, url_database)) {
		config_loader_set_bad_database_url(l);
		return;
	}
	if (!host || !*host)
		return;
	bool ok = true;
	if (!config_check_host(host, err, sizeof err)) {
		config_loader_report(l, "environment: DB_HOST: %s", err);
		ok = false;
	}
	if (port && *port && !config_parse_int(port, 1, 65535, &n, err, sizeof err)) {
		config_loader_report(l, "environment: DB_PORT: %s", err);
		ok = false;
	}
	if (!ok)
		return;
	bool any = !dbname || !*dbname;
	struct db_config *db =
	    config_db_add(config_loader_config(l), any ? "*" : dbname, "environment", 0);
	db->host = config_xstrdup(host);
	db->port = (int)n;
	db->dbname = any ? NULL : config_xstrdup(dbname);
}

void config_env_apply_user(struct config_loader *l, char *const *envp)
{
	const char *user = config_env_get(envp, "DB_USER");
	const char *password = config_env_get(envp, "DB_PASSWORD");

	(void)each_url(l, envp, false, url_user);
	const char *which = "DB_PASSWORD";
	if (!password) {
		password = config_env_get(envp, "POSTGRES_PASSWORD");
		which = "POSTGRES_PASSWORD";
	}
	/* PostgreSQL and PgBouncer refuse an empty password at login: a set
	 * but empty variable is a missing Secret key, not a password. */
	if (password && !*password) {
		config_loader_report(
		    l, "environment: %s is set but empty: empty passwords are refused", which);
		config_loader_set_empty_password(l);
		return;
	}
	if (user && *user && password)
		config_user_add(config_loader_config(l), user, password);
}
