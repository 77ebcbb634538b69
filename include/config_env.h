/*
 * config_env.h: the environment as a configuration source.
 *
 * Contract: applied after the ini file, so a variable wins over the file.
 * PGFLEET_<NAME> (every setting, upper case) wins over the edoburu/pgbouncer
 * image's name for the same setting.  DB_HOST (with DB_PORT, DB_NAME) makes
 * the one database only when the file defined none; DB_USER with DB_PASSWORD
 * (or POSTGRES_PASSWORD) adds one user after auth_file.  A problem is one
 * "environment: VARIABLE: why" error.
 *
 * Must not: call getenv (only the `envp` given), echo a password.
 */
#ifndef PGFLEET_CONFIG_ENV_H
#define PGFLEET_CONFIG_ENV_H

struct config_loader;

/* PGFLEET_<NAME> and the image's names, for every setting. */
void config_env_apply_settings(struct config_loader *l, char *const *envp);
/* DB_HOST, DB_PORT, DB_NAME. */
void config_env_apply_database(struct config_loader *l, char *const *envp);
/* DB_USER, DB_PASSWORD / POSTGRES_PASSWORD. */
void config_env_apply_user(struct config_loader *l, char *const *envp);

/* The value of `name` in `envp`, or NULL. */
const char *config_env_get(char *const *envp, const char *name);

#endif
