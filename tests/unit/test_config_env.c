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
	               "PGFLEET_DISABLE_PQEXEC=1",
	               NULL};
	CHECK(!config_load(&cfg, NULL, env, collect, &m));
	CHECK(m.n == 1);
	CHECK(msgs_has(&m, "environment: PGFLEET_DISABLE_PQEXEC: not implemented by pgfleet yet; "
	                   "remove it or set it to 0 (its default)"));
	msgs_clear(&m);

	/* issue 18: the limits, under the image's names and pgfleet's */
	char *ok[] = {"DB_HOST=db",
	              "DB_USER=u",
	              "DB_PASSWORD=p",
	              "MAX_DB_CONNECTIONS=4",
	              "PGFLEET_MIN_POOL_SIZE=2",
	              "RESERVE_POOL_SIZE=3",
	              NULL};
	CHECK(config_load(&cfg, NULL, ok, collect, &m));
	CHECK(m.n == 0);
	CHECK(cfg.n_warnings == 0);
	CHECK(cfg.min_pool_size == 2 && cfg.max_db_connections == 4 && cfg.reserve_pool_size == 3);
	config_free(&cfg);
	msgs_clear(&m);
}

/* issue 18: every variable of the edoburu/pgbouncer image is read under its
 * bare name (or refused naming why), a bad value names the variable, and a
 * PGFLEET_ name that is no setting is an error. */
static void test_env_image_names(void)
{
	struct config cfg;
	struct msgs m = {0};

	char *env[] = {"DB_HOST=db", "DB_USER=u", "DB_PASSWORD=p", "SERVER_IDLE_TIMEOUT=30",
	               "QUERY_WAIT_TIMEOUT=7", "STATS_USERS=watcher", "TCP_KEEPIDLE=45",
	               "LISTEN_ADDR=127.0.0.1", "MAX_PREPARED_STATEMENTS=50", "PKT_BUF=8192",
	               "LOG_STATS=0", "PGFLEET_BIN=/usr/bin/pgfleet", "PGFLEET_FIXTURE_NET=127.0.9",
	               "PGFLEET_REGRESS=1", "PGFLEET_IMAGE_TESTS=1", "LOGFILE=", NULL};
	CHECK(config_load(&cfg, NULL, env, collect, &m));
	CHECK(m.n == 0);
	CHECK(cfg.server_idle_timeout == 30.0 && cfg.query_wait_timeout == 7.0);
	CHECK_STR(cfg.stats_users, "watcher");
	CHECK(cfg.tcp_keepidle == 45 && cfg.max_prepared_statements == 50);
	CHECK_STR(cfg.listen_addr, "127.0.0.1");
	CHECK(cfg.pkt_buf == 8192 && !cfg.log_stats);
	config_free(&cfg);

	char *bad[] = {"DB_HOST=db",
	               "DB_USER=u",
	               "DB_PASSWORD=p",
	               "SERVER_IDLE_TIMEOUT=banana",
	               "PGFLEET_DEFALT_POOL_SIZE=3",
	               "PGFLEET_listen_port=1",
	               "POOL_SIZE=30",
	               "CLIENT_ENCODING=UTF8",
	               "SERVER_TLS_PROTOCOLS=all",
	               "PGFLEET_PEER_ID=2",
	               NULL};
	CHECK(!config_load(&cfg, NULL, bad, collect, &m));
	CHECK(m.n == 7);
	CHECK(msgs_has(&m, "environment: SERVER_IDLE_TIMEOUT: invalid time 'banana' (seconds, or "
	                   "a number with unit ms, s, min, h)"));
	CHECK(msgs_has(&m, "environment: PGFLEET_DEFALT_POOL_SIZE: unknown setting"));
	CHECK(msgs_has(&m, "environment: PGFLEET_listen_port: unknown setting"));
	CHECK(msgs_has(&m, "environment: POOL_SIZE: not a setting; use PGFLEET_DEFAULT_POOL_SIZE "
	                   "(or DEFAULT_POOL_SIZE)"));
	CHECK(msgs_has(&m, "environment: CLIENT_ENCODING: the [databases] parameter "
	                   "client_encoding is not implemented by pgfleet yet; remove it"));
	CHECK(msgs_has(&m, "environment: SERVER_TLS_PROTOCOLS: 'all': pgfleet speaks TLS 1.2 and "
	                   "1.3 only (secure, tlsv1.2, tlsv1.3)"));
	CHECK(msgs_has(&m, "environment: PGFLEET_PEER_ID: not implemented by pgfleet yet; remove "
	                   "it or set it to 0 (its default)"));
	msgs_clear(&m);
}

/* DATABASE_URL is DB_HOST & co in one; DATABASE_URLS one database per URL. */
static void test_env_database_urls(void)
{
	struct config cfg;
	struct msgs m = {0};

	char *one[] = {"DATABASE_URL=postgres://bob:p%40ss%3Aw@db.example.com:6543/app", NULL};
	CHECK(config_load(&cfg, NULL, one, collect, &m));
	CHECK(m.n == 0 && cfg.n_dbs == 1);
	const struct db_config *db = config_find_db(&cfg, "app");
	CHECK(db && db->port == 6543 && strcmp(db->host, "db.example.com") == 0);
	CHECK(db && db->dbname && strcmp(db->dbname, "app") == 0);
	const struct user_entry *u = config_find_user(&cfg, "bob");
	CHECK(u && strcmp(u->password, "p@ss:w") == 0);
	config_free(&cfg);

	/* no /dbname: any database name, as DB_HOST without DB_NAME */
	char *any[] = {"DATABASE_URL=postgresql://bob:pw@[::1]", NULL};
	CHECK(config_load(&cfg, NULL, any, collect, &m));
	CHECK(cfg.n_dbs == 1 && strcmp(cfg.dbs[0].name, "*") == 0 && cfg.dbs[0].port == 5432);
	CHECK_STR(cfg.dbs[0].host, "::1");
	config_free(&cfg);

	char *many[] = {"DATABASE_URLS=postgres://a:pa@db1:5432/base,postgres://b:pb@db2:5433/paid,"
	                "postgres://c:pc@db3/free",
	                NULL};
	CHECK(config_load(&cfg, NULL, many, collect, &m));
	CHECK(m.n == 0 && cfg.n_dbs == 3 && cfg.n_users == 3);
	db = config_find_db(&cfg, "free");
	CHECK(db && db->port == 5432 && strcmp(db->host, "db3") == 0);
	db = config_find_db(&cfg, "paid");
	CHECK(db && db->port == 5433);
	u = config_find_user(&cfg, "c");
	CHECK(u && strcmp(u->password, "pc") == 0);
	config_free(&cfg);

	/* mistakes name the variable and never echo the URL (it holds a password) */
	char *bad1[] = {"DATABASE_URL=postgres://bob:secret@db/app", "DB_HOST=other", NULL};
	CHECK(!config_load(&cfg, NULL, bad1, collect, &m));
	CHECK(msgs_has(&m, "environment: DATABASE_URL: DB_HOST is set too: use one of them"));
	CHECK(!msgs_contain(&m, "secret"));
	msgs_clear(&m);
	char *bad2[] = {"DATABASE_URLS=postgres://a:secret@db1/x,postgres://b:secret@db2", NULL};
	CHECK(!config_load(&cfg, NULL, bad2, collect, &m));
	CHECK(msgs_has(&m, "environment: DATABASE_URLS: each URL needs a /dbname"));
	CHECK(!msgs_contain(&m, "secret"));
	msgs_clear(&m);
	char *bad3[] = {"DATABASE_URL=mysql://a:secret@db/x", "AUTH_TYPE=trust", NULL};
	CHECK(!config_load(&cfg, NULL, bad3, collect, &m));
	/* ('@' is msgs_has's temp directory: compared as a substring) */
	CHECK(msgs_contain(&m, "environment: DATABASE_URL: expected "
	                       "postgres://user:password@host:port/dbname"));
	msgs_clear(&m);
	char *bad4[] = {"DATABASE_URL=postgres://a:secret@db:99999/x", "AUTH_TYPE=trust", NULL};
	CHECK(!config_load(&cfg, NULL, bad4, collect, &m));
	CHECK(msgs_has(&m, "environment: DATABASE_URL: port: value '99999' out of range "
	                   "(1..65535)"));
	CHECK(!msgs_contain(&m, "secret"));
	msgs_clear(&m);
	char *bad5[] = {"DATABASE_URL=postgres://a:bad%zz@db/x", "AUTH_TYPE=trust", NULL};
	CHECK(!config_load(&cfg, NULL, bad5, collect, &m));
	CHECK(msgs_has(&m, "environment: DATABASE_URL: bad %-escape in the user or password"));
	msgs_clear(&m);
}

/* Malformed URLs: an error line each, never a crash or a read past the end
 * (run under ASan). */
static void test_env_database_url_garbage(void)
{
	static const char *const urls[] = {
	    "postgres://", "postgres://@", "postgres://:@h", "postgres://u:p@[", "postgres://u:p@[::1",
	    "postgres://u:p@[::1]x", "postgres://h:", "postgres://h:abc", "postgres://h:1234567",
	    "postgres://h/%", "postgres://h/%4", "postgres://h/%00", "postgres://u%:p@h/d",
	    "postgres://u:p%@h/d", "postgres://h/db?sslmode=require", "postgres://a@b@c/d",
	    "postgres://h h/d", "postgres:/h/d", "POSTGRESQL://h/d", "postgres://u:p@h:5432/",
	};
	struct config cfg;
	struct msgs m = {0};
	for (size_t i = 0; i < sizeof urls / sizeof urls[0]; i++) {
		char one[256], many[256];
		snprintf(one, sizeof one, "DATABASE_URL=%s", urls[i]);
		snprintf(many, sizeof many, "DATABASE_URLS=%s,%s,", urls[i], urls[i]);
		char *e1[] = {one, "AUTH_TYPE=trust", NULL};
		char *e2[] = {many, "AUTH_TYPE=trust", NULL};
		if (config_load(&cfg, NULL, e1, collect, &m))
			config_free(&cfg);
		if (config_load(&cfg, NULL, e2, collect, &m))
			config_free(&cfg);
		msgs_clear(&m);
	}
	/* the valid ones among them load */
	char *ok[] = {"DATABASE_URL=POSTGRESQL://h/d", "AUTH_TYPE=trust", NULL};
	CHECK(config_load(&cfg, NULL, ok, collect, &m));
	config_free(&cfg);
	char *bad[] = {"DATABASE_URL=postgres://h:1234567/d", "AUTH_TYPE=trust", NULL};
	CHECK(!config_load(&cfg, NULL, bad, collect, &m));
	msgs_clear(&m);
}

static void run_all(void)
{
	RUN(test_env_overrides);
	RUN(test_env_only);
	RUN(test_env_unimplemented);
	RUN(test_env_image_names);
	RUN(test_env_database_urls);
	RUN(test_env_database_url_garbage);
}

int main(void)
{
	return fixture_main(run_all);
}
