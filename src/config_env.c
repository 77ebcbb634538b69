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
#include <stdlib.h>
#include <string.h>

#include "config.h"

#define ERRLEN 512

/* The edoburu/pgbouncer image's names; PGFLEET_<NAME> wins over these.  The
 * ones of settings pgfleet does not implement are here too, so that setting
 * them is refused or warned about rather than ignored. */
static const struct {
	const char *var;
	const char *setting;
} env_aliases[] = {
    {"POOL_MODE", "pool_mode"},
    {"SERVER_RESET_QUERY", "server_reset_query"},
    {"MAX_CLIENT_CONN", "max_client_conn"},
    {"DEFAULT_POOL_SIZE", "default_pool_size"},
    {"LISTEN_PORT", "listen_port"},
    {"AUTH_TYPE", "auth_type"},
    {"ADMIN_USERS", "admin_users"},
    {"MIN_POOL_SIZE", "min_pool_size"},
    {"RESERVE_POOL_SIZE", "reserve_pool_size"},
    {"MAX_DB_CONNECTIONS", "max_db_connections"},
    {"AUTH_QUERY", "auth_query"},
    {"AUTH_USER", "auth_user"},
};

const char *config_env_get(char *const *envp, const char *name)
{
	size_t n = strlen(name);
	for (; envp && *envp; envp++)
		if (strncmp(*envp, name, n) == 0 && (*envp)[n] == '=')
			return *envp + n + 1;
	return NULL;
}

void config_env_apply_settings(struct config_loader *l, char *const *envp)
{
	for (size_t i = 0; i < config_setting_count(); i++) {
		const char *name = config_setting_name(i);
		size_t n = strlen(name);
		char *var = config_xrealloc(NULL, n + sizeof "PGFLEET_");
		memcpy(var, "PGFLEET_", 8);
		for (size_t j = 0; j <= n; j++)
			var[8 + j] = (char)toupper((unsigned char)name[j]);

		const char *used = var, *text = config_env_get(envp, var);
		for (size_t a = 0; !text && a < sizeof env_aliases / sizeof env_aliases[0]; a++) {
			if (strcmp(env_aliases[a].setting, name) == 0) {
				used = env_aliases[a].var;
				text = config_env_get(envp, used);
			}
		}
		if (text)
			config_loader_set_env(l, i, used, text);
		free(var);
	}
}

/* DB_HOST & co: the one [databases] entry of an environment-only setup. */
void config_env_apply_database(struct config_loader *l, char *const *envp)
{
	const char *host = config_env_get(envp, "DB_HOST");
	const char *port = config_env_get(envp, "DB_PORT");
	const char *dbname = config_env_get(envp, "DB_NAME");
	char err[ERRLEN];
	long long n = 5432;

	if (config_loader_config(l)->n_dbs > 0 || !host || !*host)
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
