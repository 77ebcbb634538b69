/*
 * test_config_env.c: config_env.c, the environment as a source: PGFLEET_<NAME>,
 * the edoburu/pgbouncer image's names, DB_HOST & co, DB_USER/DB_PASSWORD.
 */
#include "config_fixture.h"

static void test_env_overrides(void)
{
	struct config cfg;
	struct msgs m = {0};
	const char *file = "[databases]\napp = host=db\n[pgfleet]\npool_mode = statement\n"
	                   "dns_max_ttl = 30\nlisten_port = 7000\n";
	char *env[] = {"PGFLEET_DNS_MAX_TTL=5",
	               "POOL_MODE=session",
	               "PGFLEET_BIN=/usr/bin/pgfleet", /* not a setting: ignored */
	               "SERVER_RESET_QUERY=",
	               "ADMIN_USERS=alice,bob",
	               "DB_USER=u",
	               "DB_PASSWORD=p",
	               NULL};
	CHECK(load_text(&cfg, &m, file, env));
	CHECK(cfg.dns_max_ttl == 5.0);
	CHECK(cfg.pool_mode == POOL_SESSION);
	CHECK(cfg.listen_port == 7000);
	CHECK_STR(cfg.server_reset_query, "");
	CHECK_STR(cfg.admin_users, "alice,bob");
	config_free(&cfg);

	/* PGFLEET_ wins over the edoburu name, whatever the order */
	char *env2[] = {"LISTEN_PORT=1111", "PGFLEET_LISTEN_PORT=2222", "DB_USER=u",
	                "DB_PASSWORD=p", NULL};
	char *env3[] = {"PGFLEET_LISTEN_PORT=2222", "LISTEN_PORT=1111", "DB_USER=u",
	                "DB_PASSWORD=p", NULL};
	CHECK(load_text(&cfg, &m, file, env2));
	CHECK(cfg.listen_port == 2222);
	config_free(&cfg);
	CHECK(load_text(&cfg, &m, file, env3));
	CHECK(cfg.listen_port == 2222);
	config_free(&cfg);

	char *bad[] = {"PGFLEET_WORKERS=0", "MAX_CLIENT_CONN=lots", "AUTH_TYPE=any",
	               "DB_USER=u",         "DB_PASSWORD=p",        NULL};
	CHECK(!load_text(&cfg, &m, file, bad));
	CHECK(m.n == 3);
	CHECK(msgs_has(&m, "environment: PGFLEET_WORKERS: value '0' out of range (1..64)"));
	CHECK(msgs_has(&m, "environment: MAX_CLIENT_CONN: invalid integer 'lots'"));
	CHECK(msgs_has(&m, "environment: AUTH_TYPE: unsupported value 'any' (trust, plain, md5, "
	                   "scram-sha-256, hba)"));

	/* a value breaking a rule is blamed on its variable */
	char *tls[] = {"PGFLEET_CLIENT_TLS_SSLMODE=require", "PGFLEET_CLIENT_TLS_CERT_FILE=/c.pem",
	               "DB_USER=u", "DB_PASSWORD=p", NULL};
	CHECK(!load_text(&cfg, &m, file, tls));
	CHECK(m.n == 1);
	CHECK(msgs_has(&m, "environment: PGFLEET_CLIENT_TLS_SSLMODE: 'require' needs "
	                   "client_tls_key_file"));
	msgs_clear(&m);
}

static void test_env_only(void)
{
	struct config cfg;
	struct msgs m = {0};

	char *env[] = {"DB_HOST=pg-svc.db.svc", "DB_USER=app", "DB_PASSWORD=secret",
	               "POSTGRES_PASSWORD=other", NULL};
	CHECK(config_load(&cfg, NULL, env, collect, &m));
	CHECK(cfg.n_dbs == 1);
	const struct db_config *db = config_find_db(&cfg, "whatever");
	CHECK(db && strcmp(db->name, "*") == 0);
	if (db) {
		CHECK_STR(db->host, "pg-svc.db.svc");
		CHECK(db->port == 5432);
		CHECK(db->dbname == NULL);
		CHECK_STR(db->file, "environment");
	}
	const struct user_entry *u = config_find_user(&cfg, "app");
	CHECK(u && strcmp(u->password, "secret") == 0);
	CHECK(config_find_user(&cfg, "nobody") == NULL);
	config_free(&cfg);

	char *env2[] = {"DB_HOST=10.0.0.1,10.0.0.2",
	                "DB_PORT=6543",
	                "DB_NAME=appdb",
	                "DB_USER=app",
	                "POSTGRES_PASSWORD=pgpw",
	                NULL};
	CHECK(config_load(&cfg, NULL, env2, collect, &m));
	db = config_find_db(&cfg, "appdb");
	CHECK(db && db->port == 6543 && db->dbname && strcmp(db->dbname, "appdb") == 0);
	CHECK(config_find_db(&cfg, "other") == NULL);
	u = config_find_user(&cfg, "app");
	CHECK(u && strcmp(u->password, "pgpw") == 0);
	config_free(&cfg);

	/* trust needs no users; DB_USER without a password adds none */
	char *env3[] = {"DB_HOST=db", "DB_USER=app", "AUTH_TYPE=trust", "DB_PORT=", NULL};
	CHECK(config_load(&cfg, NULL, env3, collect, &m));
	CHECK(cfg.n_users == 0 && cfg.n_dbs == 1 && cfg.dbs[0].port == 5432);
	config_free(&cfg);

	char *env4[] = {"DB_HOST=db", "DB_PORT=0", "AUTH_TYPE=trust", NULL};
	msgs_clear(&m);
	CHECK(!config_load(&cfg, NULL, env4, collect, &m));
	CHECK(msgs_has(&m, "environment: DB_PORT: value '0' out of range (1..65535)"));

	/* the file's [databases] win over DB_HOST */
	char *env5[] = {"DB_HOST=ignored", "DB_USER=u", "DB_PASSWORD=p", NULL};
	CHECK(load_text(&cfg, &m, "[databases]\napp = host=db\n", env5));
	CHECK(cfg.n_dbs == 1 && strcmp(cfg.dbs[0].host, "db") == 0);
	CHECK(cfg.path && strstr(cfg.path, "pgfleet.ini"));
	config_free(&cfg);

	/* an empty password is refused at login: an empty variable is an error,
	 * one line for it */
	char *env6[] = {"DB_HOST=db", "DB_USER=app", "DB_PASSWORD=", NULL};
	msgs_clear(&m);
	CHECK(!config_load(&cfg, NULL, env6, collect, &m));
	CHECK(m.n == 1);
	CHECK(msgs_has(&m, "environment: DB_PASSWORD is set but empty: empty passwords are "
	                   "refused"));
	char *env7[] = {"DB_HOST=db", "DB_USER=app", "POSTGRES_PASSWORD=", NULL};
	msgs_clear(&m);
	CHECK(!config_load(&cfg, NULL, env7, collect, &m));
	CHECK(m.n == 1);
	CHECK(msgs_has(&m, "environment: POSTGRES_PASSWORD is set but empty: empty passwords "
	                   "are refused"));

	/* nothing at all */
	char *none[] = {NULL};
	msgs_clear(&m);
	CHECK(!config_load(&cfg, NULL, none, collect, &m));
	CHECK(m.n == 2);
	CHECK(msgs_has(&m, "environment: no databases configured: set [databases] or DB_HOST"));
	CHECK(msgs_has(&m, "environment: key 'auth_type' (default): 'scram-sha-256' needs users: "
	                   "set auth_file, or DB_USER with DB_PASSWORD"));
	msgs_clear(&m);
	CHECK(!config_load(&cfg, NULL, NULL, collect, &m)); /* envp NULL = empty */
	CHECK(!load_text(&cfg, &m, "[pgfleet]\nauth_type = trust\n", NULL));
	CHECK(m.n == 1);
	CHECK(msgs_has(&m, "@/pgfleet.ini: no databases configured: set [databases] or DB_HOST"));
	msgs_clear(&m);
}

/* Settings pgfleet does not implement: refused from the environment as from
 * the file, naming the variable; the image's names count too. */
static void test_env_unimplemented(void)
{
	struct config cfg;
	struct msgs m = {0};

	char *env[] = {"DB_HOST=db",
	               "DB_USER=u",
	               "DB_PASSWORD=p",
	               "PGFLEET_MAX_DB_CONNECTIONS=10",
	               "RESERVE_POOL_SIZE=3",
	               "AUTH_USER=pgbouncer",
	               NULL};
	CHECK(!config_load(&cfg, NULL, env, collect, &m));
	CHECK(m.n == 3);
	CHECK(msgs_has(&m, "environment: PGFLEET_MAX_DB_CONNECTIONS: not implemented by pgfleet "
	                   "yet; remove it or set it to 0 (its default)"));
	CHECK(msgs_has(&m, "environment: RESERVE_POOL_SIZE: not implemented by pgfleet yet; remove "
	                   "it or set it to 0 (its default)"));
	CHECK(msgs_has(&m, "environment: AUTH_USER: not implemented by pgfleet yet; remove it (its "
	                   "default is empty)"));
	msgs_clear(&m);

	/* the defaults load; a partly implemented one is warned about */
	char *ok[] = {"DB_HOST=db",
	              "DB_USER=u",
	              "DB_PASSWORD=p",
	              "MAX_DB_CONNECTIONS=0",
	              "PGFLEET_MIN_POOL_SIZE=2",
	              NULL};
	CHECK(config_load(&cfg, NULL, ok, collect, &m));
	CHECK(m.n == 0);
	CHECK(cfg.n_warnings == 1);
	if (cfg.n_warnings == 1)
		CHECK_STR(cfg.warnings[0],
		          "environment: PGFLEET_MIN_POOL_SIZE: not implemented by "
		          "pgfleet, ignored (idle server connections are kept down "
		          "to it, none is opened in advance)");
	CHECK(cfg.min_pool_size == 2);
	config_free(&cfg);
	msgs_clear(&m);
}

static void run_all(void)
{
	RUN(test_env_overrides);
	RUN(test_env_only);
	RUN(test_env_unimplemented);
}

int main(void)
{
	return fixture_main(run_all);
}
