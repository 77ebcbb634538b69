/*
 * test_config_ini.c: config_ini.c, the ini dialect: sections, comments and
 * quotes, %include, [databases] entries in libpq's syntax, and the
 * "file:line: key 'k': why" of each problem.
 */
#include "config_fixture.h"

/* Four lines, so that a case's own line is line 5. */
#define BASE "[databases]\napp = host=db\n[pgfleet]\nlisten_addr = 127.0.0.1\n"

static void test_outside_section(void)
{
	struct config cfg;
	struct msgs m = {0};
	CHECK(!load_text(&cfg, &m, "listen_port = 1\n" BASE, users_env));
	CHECK(msgs_has(&m, "@/pgfleet.ini:1: key 'listen_port': not inside a section"));
	msgs_clear(&m);
}

static void test_long_line(void)
{
	struct config cfg;
	struct msgs m = {0};
	size_t n = 100000;
	char *text = malloc(n + 256);
	int k = snprintf(text, 256, BASE "server_reset_query = ");
	memset(text + k, 'x', n);
	strcpy(text + k + n, "\nlisten_port = 7000\n");
	CHECK(load_text(&cfg, &m, text, users_env));
	CHECK(cfg.server_reset_query && strlen(cfg.server_reset_query) == n);
	CHECK(cfg.listen_port == 7000);
	config_free(&cfg);
	free(text);
	msgs_clear(&m);
}

static void test_include(void)
{
	struct config cfg;
	struct msgs m = {0};

	write_file("sub/dbs.ini", "app = host=db\n");
	write_file("sub/settings.ini", "listen_port = 7777\n%include more.ini\n");
	write_file("sub/more.ini", "workers = 4\n");
	write_file("sub/switch.ini", "[pgfleet]\nworkers = 2\n");
	CHECK(load_text(&cfg, &m,
	                "[databases]\n%include sub/dbs.ini\n%include sub/switch.ini\n"
	                "other = host=o\n[pgfleet]\n%include sub/settings.ini  ; with a comment\n",
	                users_env));
	CHECK(cfg.n_dbs == 2);
	const struct db_config *db = config_find_db(&cfg, "app");
	CHECK(db != NULL);
	if (db) {
		char *want = expand("@/sub/dbs.ini");
		CHECK_STR(db->file, want);
		CHECK(db->line == 1);
		free(want);
	}
	/* the included file's [pgfleet] ended with it: "other" is a database */
	CHECK(config_find_db(&cfg, "other") != NULL);
	CHECK(cfg.listen_port == 7777);
	CHECK(cfg.workers == 4);
	config_free(&cfg);

	/* a loop is found, not followed */
	write_file("loop-b.ini", "%include loop-a.ini\n");
	const char *a = write_file("loop-a.ini", BASE "%include loop-b.ini\n");
	msgs_clear(&m);
	CHECK(!config_load(&cfg, a, users_env, collect, &m));
	CHECK(m.n == 1);
	CHECK(msgs_has(&m, "@/loop-b.ini:1: %include '@/loop-a.ini': include loop (the file is "
	                   "already being read)"));

	/* a missing include names the including line */
	CHECK(!load_text(&cfg, &m, BASE "%include nope.ini\n", users_env));
	CHECK(msgs_has(&m, "@/pgfleet.ini:5: %include '@/nope.ini': cannot read: No such file or "
	                   "directory"));

	/* the main file and ten levels of %include work; an eleventh does not */
	char name[64], text[128];
	for (int i = 1; i <= 11; i++) {
		snprintf(name, sizeof name, "deep/d%d.ini", i);
		snprintf(text, sizeof text, "%%include d%d.ini\n", i + 1);
		write_file(name, i == 10 ? "workers = 3\n" : text);
	}
	CHECK(load_text(&cfg, &m, BASE "%include deep/d1.ini\n", users_env));
	CHECK(cfg.workers == 3);
	config_free(&cfg);
	write_file("deep/d10.ini", "%include d11.ini\n");
	write_file("deep/d11.ini", "workers = 3\n");
	CHECK(!load_text(&cfg, &m, BASE "%include deep/d1.ini\n", users_env));
	CHECK(msgs_has(&m, "@/deep/d10.ini:1: %include 'd11.ini': nested more than 10 deep"));
	msgs_clear(&m);
}

static void test_pgbouncer_alias(void)
{
	struct config cfg;
	struct msgs m = {0};
	CHECK(load_text(&cfg, &m,
	                "[databases]\napp = host=db\n[pgbouncer]\nlisten_port = 6000\n"
	                "syslog_ident = pgb\n"
	                "job_name = nightly\n"
	                "[users]\n[PgFleet]\nworkers = 2\n",
	                users_env));
	CHECK(cfg.listen_port == 6000);
	CHECK(cfg.workers == 2);
	/* PgBouncer's logging knobs load: the syslog name and job_name (no
	 * effect on Linux) as settings, no warning */
	CHECK(m.n == 0 && cfg.n_warnings == 0);
	CHECK_STR(cfg.syslog_ident, "pgb");
	config_free(&cfg);
	msgs_clear(&m);
}

static void test_databases(void)
{
	struct config cfg;
	struct msgs m = {0};
	CHECK(load_text(&cfg, &m,
	                "[databases]\n"
	                "app = host=a.example,b.example port=5433 dbname=appdb user=bob "
	                "password='it\\'s a \\\\secret ; #' pool_size=7 pool_mode=session "
	                "target_session_attrs=read-write max_replica_lag=2.5\n"
	                "\"my db\" = host=/var/run/postgresql\n"
	                "ro = host = 10.0.0.1 target_session_attrs=prefer-standby reserve_pool=0 "
	                "max_db_connections=0\n"
	                "* = host=fallback   ; any other database name\n",
	                users_env));
	CHECK(cfg.n_dbs == 4);
	const struct db_config *db = config_find_db(&cfg, "app");
	CHECK(db && strcmp(db->name, "app") == 0);
	if (db) {
		CHECK_STR(db->host, "a.example,b.example");
		CHECK(db->port == 5433);
		CHECK_STR(db->dbname, "appdb");
		CHECK_STR(db->user, "bob");
		CHECK_STR(db->password, "it's a \\secret ; #");
		CHECK(db->pool_size == 7);
		CHECK(db->pool_mode == POOL_SESSION);
		CHECK(db->tsa == TSA_READ_WRITE);
		CHECK(db->max_replica_lag == 2.5);
		CHECK(db->line == 2);
	}
	db = config_find_db(&cfg, "my db");
	CHECK(db && strcmp(db->host, "/var/run/postgresql") == 0);
	if (db) {
		CHECK(db->port == 5432 && db->pool_size == -1 && db->pool_mode == -1);
		CHECK(db->tsa == -1 && db->max_replica_lag < 0); /* -1: the global setting's */
		CHECK(db->dbname == NULL && db->user == NULL && db->password == NULL);
	}
	db = config_find_db(&cfg, "ro");
	CHECK(db && db->tsa == TSA_PREFER_STANDBY && strcmp(db->host, "10.0.0.1") == 0);
	db = config_find_db(&cfg, "anything-else");
	CHECK(db && strcmp(db->name, "*") == 0 && strcmp(db->host, "fallback") == 0);
	config_free(&cfg);

	/* every target_session_attrs value, and its name back */
	static const char *const tsa[] = {"any",     "read-write", "read-only",
	                                  "primary", "standby",    "prefer-standby", "auto"};
	for (int i = 0; i < 7; i++) {
		char text[256];
		snprintf(text, sizeof text, "[databases]\nx = host=h target_session_attrs=%s\n",
		         tsa[i]);
		CHECK(load_text(&cfg, &m, text, users_env));
		CHECK(cfg.n_dbs == 1 && cfg.dbs[0].tsa == i);
		CHECK_STR(config_tsa_name(cfg.dbs[0].tsa), tsa[i]);
		config_free(&cfg);
	}
	CHECK_STR(config_tsa_name(99), "unknown");
	CHECK_STR(config_pool_mode_name(POOL_STATEMENT), "statement");
	CHECK_STR(config_pool_mode_name(-1), "unknown");
	msgs_clear(&m);
}

/* One file with many problems: each is reported, on its own line. */
static void test_many_errors(void)
{
	struct config cfg;
	struct msgs m = {0};
	CHECK(!load_text(&cfg, &m,
	                 "[databases]\n"
	                 "app = host=db\n"
	                 "bad = host=x target_session_attrs=writable\n"
	                 "nohost = port=5432\n"
	                 "app = host=dup\n"
	                 "q = host=x password='topsecret\n"
	                 "u = host=x frob=1 port=0\n"
	                 "w = host=x password=top secret\n"
	                 "h = host=a,,b\n"
	                 "[pgfleet]\n"
	                 "pool_mode = sesion\n"
	                 "listen_port = 0\n",
	                 users_env));
	CHECK(m.n == 10);
	for (size_t i = 0; m.n != 10 && i < m.n; i++)
		fprintf(stderr, "  got: %s\n", m.line[i]);
	CHECK(msgs_has(&m, "@/pgfleet.ini:3: key 'bad': target_session_attrs: unknown value "
	                   "'writable' (any, read-write, read-only, primary, standby, "
	                   "prefer-standby, auto)"));
	CHECK(msgs_has(&m, "@/pgfleet.ini:4: key 'nohost': host is required"));
	CHECK(msgs_has(&m, "@/pgfleet.ini:5: key 'app': duplicate database (first defined at "
	                   "@/pgfleet.ini:2)"));
	CHECK(msgs_has(&m, "@/pgfleet.ini:6: key 'q': unterminated quoted value for 'password'"));
	CHECK(msgs_has(&m, "@/pgfleet.ini:7: key 'u': unknown parameter 'frob'"));
	CHECK(msgs_has(&m, "@/pgfleet.ini:7: key 'u': port: value '0' out of range (1..65535)"));
	CHECK(msgs_has(&m, "@/pgfleet.ini:8: key 'w': text without '=' after parameter 'password' "
	                   "(quote values that contain spaces)"));
	CHECK(msgs_has(&m, "@/pgfleet.ini:9: key 'h': host: empty name in host list 'a,,b'"));
	CHECK(msgs_has(&m, "@/pgfleet.ini:11: key 'pool_mode': unknown value 'sesion' (session, "
	                   "transaction, statement)"));
	CHECK(msgs_has(&m, "@/pgfleet.ini:12: key 'listen_port': value '0' out of range "
	                   "(1..65535)"));
	CHECK(!msgs_contain(&m, "topsecret") && !msgs_contain(&m, "secret "));
	msgs_clear(&m);
}

static void test_missing_file(void)
{
	struct config cfg;
	struct msgs m = {0};
	char *path = expand("@/does-not-exist.ini");
	CHECK(!config_load(&cfg, path, users_env, collect, &m));
	CHECK(m.n == 1);
	CHECK(msgs_has(&m, "@/does-not-exist.ini: cannot read: No such file or directory"));
	CHECK(cfg.dbs == NULL && cfg.path == NULL && cfg.listen_addr == NULL);
	free(path);
	msgs_clear(&m);
	CHECK(!config_load(&cfg, tmpdir, users_env, collect, &m));
	CHECK(m.n == 1 && msgs_contain(&m, "cannot read: Is a directory"));
	msgs_clear(&m);
}

/* [users] (per-user settings) and [peers]: an empty section loads, an entry
 * would be ignored, so it is refused. */
static void test_users_peers(void)
{
	struct config cfg;
	struct msgs m = {0};
	CHECK(load_text(&cfg, &m, BASE "[users]\n; nobody\n[peers]\n", users_env));
	config_free(&cfg);
	CHECK(!load_text(&cfg, &m,
	                 BASE "[users]\nbob = pool_mode=session\n[peers]\n1 = host=/tmp/pgb1\n",
	                 users_env));
	CHECK(m.n == 2);
	CHECK(msgs_has(&m, "@/pgfleet.ini:6: key 'bob': pool_mode: not implemented by pgfleet yet "
	                   "in [users]; remove it"));
	CHECK(msgs_has(&m, "@/pgfleet.ini:8: key '1': [peers] entries are not supported: pgfleet "
	                   "finds its peers in DNS (the peers setting); remove the entry"));
	msgs_clear(&m);

	/* issue 18: [users] max_user_connections */
	CHECK(load_text(&cfg, &m,
	                BASE "[users]\nbob = max_user_connections=3 ; a comment\n"
	                     "alice = max_user_connections = 0\n",
	                users_env));
	CHECK(m.n == 0);
	const struct user_config *u = config_find_user_cfg(&cfg, "bob");
	CHECK(u && u->max_user_connections == 3);
	u = config_find_user_cfg(&cfg, "alice");
	CHECK(u && u->max_user_connections == 0);
	CHECK(config_find_user_cfg(&cfg, "carol") == NULL);
	config_free(&cfg);
	CHECK(!load_text(&cfg, &m,
	                 BASE "[users]\nbob = max_user_connections=x\nbob = max_user_connections=1\n"
	                      "eve = colour=blue\n",
	                 users_env));
	CHECK(m.n == 3);
	CHECK(msgs_has(&m, "@/pgfleet.ini:6: key 'bob': max_user_connections: invalid integer 'x'"));
	CHECK(msgs_contain(&m, "pgfleet.ini:7: key 'bob': duplicate user (first defined at "));
	CHECK(msgs_has(&m, "@/pgfleet.ini:8: key 'eve': unknown parameter 'colour'"));
	msgs_clear(&m);
}

static void run_all(void)
{
	RUN(test_outside_section);
	RUN(test_long_line);
	RUN(test_include);
	RUN(test_pgbouncer_alias);
	RUN(test_databases);
	RUN(test_many_errors);
	RUN(test_missing_file);
	RUN(test_users_peers);
}

int main(void)
{
	return fixture_main(run_all);
}
