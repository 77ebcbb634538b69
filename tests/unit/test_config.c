/*
 * test_config.c: config.c against files written to a private temp directory.
 *
 * Expected messages are written with '@' standing for that directory, so each
 * case states the exact "file:line: key 'k': why" a user would see.
 */
#include "harness.h"

#include "config.h"

#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

static char tmpdir[] = "/tmp/pgfleet-test-config-XXXXXX";
static char *created[64];
static size_t n_created;

struct msgs {
	char *line[64];
	size_t n;
};

static void collect(void *arg, const char *line)
{
	struct msgs *m = arg;
	if (m->n < sizeof m->line / sizeof m->line[0])
		m->line[m->n++] = strdup(line);
}

static void msgs_clear(struct msgs *m)
{
	for (size_t i = 0; i < m->n; i++)
		free(m->line[i]);
	m->n = 0;
}

/* '@' -> the temp directory */
static char *expand(const char *pattern)
{
	size_t n = strlen(pattern) + 1;
	for (const char *p = pattern; *p; p++)
		if (*p == '@')
			n += strlen(tmpdir);
	char *out = malloc(n), *w = out;
	for (const char *p = pattern; *p; p++) {
		if (*p == '@') {
			strcpy(w, tmpdir);
			w += strlen(tmpdir);
		} else {
			*w++ = *p;
		}
	}
	*w = '\0';
	return out;
}

static bool msgs_has(const struct msgs *m, const char *pattern)
{
	char *want = expand(pattern);
	bool found = false;
	for (size_t i = 0; i < m->n && !found; i++)
		found = strcmp(m->line[i], want) == 0;
	if (!found) {
		fprintf(stderr, "  missing message: %s\n", want);
		for (size_t i = 0; i < m->n; i++)
			fprintf(stderr, "  got: %s\n", m->line[i]);
	}
	free(want);
	return found;
}

static bool msgs_contain(const struct msgs *m, const char *needle)
{
	for (size_t i = 0; i < m->n; i++)
		if (strstr(m->line[i], needle))
			return true;
	return false;
}

static void remember(const char *path)
{
	for (size_t i = 0; i < n_created; i++)
		if (strcmp(created[i], path) == 0)
			return;
	if (n_created < sizeof created / sizeof created[0])
		created[n_created++] = strdup(path);
}

/* Writes `text` to @/name (sub directories made as needed); returns the path,
 * owned by the created list. */
static const char *write_file(const char *name, const char *text)
{
	char rel[512];
	snprintf(rel, sizeof rel, "@/%s", name);
	char *path = expand(rel);
	for (char *slash = strchr(path + strlen(tmpdir) + 1, '/'); slash;
	     slash = strchr(slash + 1, '/')) {
		*slash = '\0';
		if (mkdir(path, 0700) == 0)
			remember(path);
		*slash = '/';
	}
	FILE *f = fopen(path, "w");
	if (f) {
		fputs(text, f);
		fclose(f);
	}
	remember(path);
	free(path);
	for (size_t i = 0; i < n_created; i++) {
		const char *c = created[i];
		if (strlen(c) > strlen(tmpdir) && strcmp(c + strlen(tmpdir) + 1, name) == 0)
			return c;
	}
	return NULL;
}

static void cleanup_files(void)
{
	/* children were remembered after their directories: remove backwards */
	for (size_t i = n_created; i-- > 0;) {
		if (unlink(created[i]) != 0)
			rmdir(created[i]);
		free(created[i]);
	}
	rmdir(tmpdir);
}

static char *users_env[] = {"DB_USER=u", "DB_PASSWORD=p", NULL};

static bool load_text(struct config *cfg, struct msgs *m, const char *text, char **env)
{
	const char *path = write_file("pgfleet.ini", text);
	msgs_clear(m);
	return config_load(cfg, path, env, collect, m);
}

static int setting_index(const char *name)
{
	for (size_t i = 0; i < config_setting_count(); i++)
		if (strcmp(config_setting_name(i), name) == 0)
			return (int)i;
	return -1;
}

static void value_of(const struct config *cfg, const char *name, char *buf, size_t len)
{
	int i = setting_index(name);
	if (i < 0)
		snprintf(buf, len, "(no such setting %s)", name);
	else
		config_setting_value(cfg, (size_t)i, buf, len);
}

/* Four lines, so that a case's own line is line 5. */
#define BASE "[databases]\napp = host=db\n[pgfleet]\nlisten_addr = 127.0.0.1\n"

static void test_defaults(void)
{
	struct config cfg;
	struct msgs m = {0};
	char *env[] = {"DB_HOST=db", "DB_USER=u", "DB_PASSWORD=p", NULL};
	char buf[256];

	CHECK(config_load(&cfg, NULL, env, collect, &m));
	CHECK(m.n == 0);
	CHECK(cfg.path == NULL);
	CHECK_STR(cfg.listen_addr, "0.0.0.0");
	CHECK(cfg.listen_port == 6432);
	CHECK_STR(cfg.unix_socket_dir, "");
	CHECK(cfg.pool_mode == POOL_TRANSACTION);
	CHECK(cfg.auth_type == AUTH_SCRAM);
	CHECK(cfg.load_balance == LB_LEAST_CONN);
	CHECK(cfg.server_tls_sslmode == TLS_PREFER);
	CHECK(cfg.client_tls_sslmode == TLS_DISABLE);
	CHECK(cfg.log_format == LOGFMT_TEXT);
	CHECK(cfg.log_connections == true);
	CHECK(cfg.so_reuseport == false);
	CHECK(cfg.io_uring == true);
	CHECK(cfg.server_round_robin == false);
	CHECK(cfg.dns_max_ttl == 15.0);
	CHECK(cfg.max_packet_size == 1073741823LL);
	CHECK_STR(cfg.server_reset_query, "DISCARD ALL");

	/* every setting: the default's text survives parsing unchanged, and SET
	 * accepts the text SHOW CONFIG prints */
	size_t n = config_setting_count();
	CHECK(n == 65);
	CHECK(config_setting_name(n) == NULL);
	CHECK(config_setting_default(n) == NULL);
	int mismatches = 0, set_failures = 0;
	for (size_t i = 0; i < n; i++) {
		char err[256];
		config_setting_value(&cfg, i, buf, sizeof buf);
		if (strcmp(buf, config_setting_default(i)) != 0) {
			fprintf(stderr, "  %s: value '%s' != default '%s'\n",
			        config_setting_name(i), buf, config_setting_default(i));
			mismatches++;
		}
		char copy[256];
		snprintf(copy, sizeof copy, "%s", buf);
		if (!config_set(&cfg, config_setting_name(i), copy, err, sizeof err)) {
			fprintf(stderr, "  SET %s = '%s': %s\n", config_setting_name(i), copy, err);
			set_failures++;
		}
		config_setting_value(&cfg, i, buf, sizeof buf);
		if (strcmp(buf, copy) != 0)
			set_failures++;
	}
	CHECK(mismatches == 0);
	CHECK(set_failures == 0);
	config_setting_value(&cfg, n, buf, sizeof buf);
	CHECK_STR(buf, "");
	config_free(&cfg);
	CHECK(cfg.listen_addr == NULL && cfg.dbs == NULL && cfg.n_dbs == 0);
	config_free(&cfg); /* twice is harmless */
	msgs_clear(&m);
}

static const struct {
	const char *line;
	const char *setting;
	const char *value;
} good_cases[] = {
    {"listen_port = 7000", "listen_port", "7000"},
    {"LISTEN_PORT = 7001", "listen_port", "7001"},
    {"listen_port = 7002\r", "listen_port", "7002"},
    {"  listen_port=7003  ", "listen_port", "7003"},
    {"workers = 64", "workers", "64"},
    {"max_packet_size = 1024", "max_packet_size", "1024"},
    {"min_pool_size = 0", "min_pool_size", "0"},
    {"so_reuseport = yes", "so_reuseport", "1"},
    {"so_reuseport = ON", "so_reuseport", "1"},
    {"so_reuseport = true", "so_reuseport", "1"},
    {"log_connections = off", "log_connections", "0"},
    {"log_connections = no", "log_connections", "0"},
    {"log_connections = 0", "log_connections", "0"},
    {"server_lifetime = 1.5", "server_lifetime", "1.5"},
    {"server_lifetime = 250ms", "server_lifetime", "0.25"},
    {"server_lifetime = 2min", "server_lifetime", "120"},
    {"server_lifetime = 1 h", "server_lifetime", "3600"},
    {"server_lifetime = 10s", "server_lifetime", "10"},
    {"server_lifetime = 0", "server_lifetime", "0"},
    {"server_lifetime = 1us", "server_lifetime", "1e-06"},
    {"server_lifetime = 1e-06", "server_lifetime", "1e-06"},
    {"server_lifetime = .5", "server_lifetime", "0.5"},
    {"pool_mode = Session", "pool_mode", "session"},
    {"pool_mode = statement", "pool_mode", "statement"},
    {"auth_type = md5", "auth_type", "md5"},
    {"auth_type = plain", "auth_type", "plain"},
    {"auth_type = scram-sha-256        ; scram-sha-256 | md5", "auth_type", "scram-sha-256"},
    {"load_balance = round_robin", "load_balance", "round_robin"},
    {"log_format = json", "log_format", "json"},
    {"server_tls_sslmode = verify-full", "server_tls_sslmode", "verify-full"},
    {"server_reset_query = DISCARD ALL ; comment", "server_reset_query", "DISCARD ALL"},
    {"server_reset_query = \"DISCARD ALL ; SELECT 1\"  ; comment", "server_reset_query",
     "DISCARD ALL ; SELECT 1"},
    {"server_reset_query = \"say \"\"hi\"\"\"", "server_reset_query", "say \"hi\""},
    {"auth_query = SELECT 1;SELECT 2#x", "auth_query", "SELECT 1;SELECT 2#x"},
    {"admin_users = a, b   # who may administer", "admin_users", "a, b"},
    {"unix_socket_dir = \"\"", "unix_socket_dir", ""},
    {"unix_socket_dir =", "unix_socket_dir", ""},
    {"http_listen = [::1]:9999", "http_listen", "[::1]:9999"},
    {"http_listen =", "http_listen", ""},
    {"logfile = /var/log/pgbouncer.log", "listen_port", "6432"},
    {"tcp_keepalive = 1", "listen_port", "6432"},
    {"client_tls_ciphers = fast", "listen_port", "6432"},
    {"; listen_port = 1", "listen_port", "6432"},
    {"# listen_port = 1", "listen_port", "6432"},
    {"[users]\nbob = pool_mode=session", "listen_port", "6432"},
};

static void test_good_values(void)
{
	struct msgs m = {0};
	for (size_t i = 0; i < sizeof good_cases / sizeof good_cases[0]; i++) {
		struct config cfg;
		char text[1024], buf[256];
		snprintf(text, sizeof text, BASE "%s\n", good_cases[i].line);
		bool ok = load_text(&cfg, &m, text, users_env);
		if (!ok)
			fprintf(stderr, "  case '%s': %s\n", good_cases[i].line,
			        m.n ? m.line[0] : "");
		CHECK(ok);
		value_of(&cfg, good_cases[i].setting, buf, sizeof buf);
		CHECK_STR(buf, good_cases[i].value);
		config_free(&cfg);
	}
	msgs_clear(&m);
}

static const struct {
	const char *line;
	const char *message;
} bad_cases[] = {
    {"listen_port = 0", "@/pgfleet.ini:5: key 'listen_port': value '0' out of range (1..65535)"},
    {"listen_port = 65536",
     "@/pgfleet.ini:5: key 'listen_port': value '65536' out of range (1..65535)"},
    {"listen_port = 12ab", "@/pgfleet.ini:5: key 'listen_port': invalid integer '12ab'"},
    {"listen_port = 99999999999999999999999",
     "@/pgfleet.ini:5: key 'listen_port': value '99999999999999999999999' out of range "
     "(1..65535)"},
    {"workers = 65", "@/pgfleet.ini:5: key 'workers': value '65' out of range (1..64)"},
    {"workers = 0", "@/pgfleet.ini:5: key 'workers': value '0' out of range (1..64)"},
    {"max_packet_size = 1000",
     "@/pgfleet.ini:5: key 'max_packet_size': value '1000' out of range (1024..2147483647)"},
    {"min_pool_size = -1",
     "@/pgfleet.ini:5: key 'min_pool_size': value '-1' out of range (0..2147483647)"},
    {"default_pool_size =", "@/pgfleet.ini:5: key 'default_pool_size': invalid integer ''"},
    {"so_reuseport = maybe",
     "@/pgfleet.ini:5: key 'so_reuseport': invalid boolean 'maybe' (0/1, yes/no, on/off, "
     "true/false)"},
    {"dns_max_ttl = -5", "@/pgfleet.ini:5: key 'dns_max_ttl': negative time '-5' (must be >= 0)"},
    {"dns_max_ttl = 5 weeks",
     "@/pgfleet.ini:5: key 'dns_max_ttl': invalid time '5 weeks' (seconds, or a number with unit "
     "ms, s, min, h)"},
    {"dns_max_ttl = 1.2.3",
     "@/pgfleet.ini:5: key 'dns_max_ttl': invalid time '1.2.3' (seconds, or a number with unit "
     "ms, s, min, h)"},
    {"dns_max_ttl = inf",
     "@/pgfleet.ini:5: key 'dns_max_ttl': invalid time 'inf' (seconds, or a number with unit "
     "ms, s, min, h)"},
    {"dns_max_ttl = 0x10",
     "@/pgfleet.ini:5: key 'dns_max_ttl': invalid time '0x10' (seconds, or a number with unit "
     "ms, s, min, h)"},
    {"dns_max_ttl = 5e",
     "@/pgfleet.ini:5: key 'dns_max_ttl': invalid time '5e' (seconds, or a number with unit "
     "ms, s, min, h)"},
    {"dns_max_ttl = 2000000000",
     "@/pgfleet.ini:5: key 'dns_max_ttl': time '2000000000' too large (at most 1000000000 s)"},
    {"pool_mode = sesion",
     "@/pgfleet.ini:5: key 'pool_mode': unknown value 'sesion' (session, transaction, "
     "statement)"},
    {"auth_type = hba",
     "@/pgfleet.ini:5: key 'auth_type': unsupported value 'hba' (trust, plain, md5, "
     "scram-sha-256)"},
    {"auth_type = cert",
     "@/pgfleet.ini:5: key 'auth_type': unsupported value 'cert' (trust, plain, md5, "
     "scram-sha-256)"},
    {"load_balance = fastest",
     "@/pgfleet.ini:5: key 'load_balance': unknown value 'fastest' (least_conn, round_robin, "
     "random)"},
    {"log_format = xml", "@/pgfleet.ini:5: key 'log_format': unknown value 'xml' (text, json)"},
    {"server_tls_sslmode = always",
     "@/pgfleet.ini:5: key 'server_tls_sslmode': unknown value 'always' (disable, allow, prefer, "
     "require, verify-ca, verify-full)"},
    {"listen_addr = ", "@/pgfleet.ini:5: key 'listen_addr': must not be empty"},
    {"http_listen = localhost",
     "@/pgfleet.ini:5: key 'http_listen': expected host:port (empty = off), got 'localhost'"},
    {"bogus_key = 1", "@/pgfleet.ini:5: key 'bogus_key': unknown setting"},
    {"listen_port = \"6432", "@/pgfleet.ini:5: key 'listen_port': unterminated quoted value"},
    {"listen_port = \"6432\" 1",
     "@/pgfleet.ini:5: key 'listen_port': unexpected text after the closing quote"},
    {"= 5", "@/pgfleet.ini:5: missing key before '='"},
    {"just words", "@/pgfleet.ini:5: syntax error: expected 'key = value'"},
    {"[nope]\nx = 1", "@/pgfleet.ini:5: unknown section [nope]"},
    {"[databases", "@/pgfleet.ini:5: unterminated section header"},
    {"%frobnicate x", "@/pgfleet.ini:5: unknown directive '%frobnicate'"},
    {"%include", "@/pgfleet.ini:5: %include needs a file name"},
};

static void test_bad_values(void)
{
	struct msgs m = {0};
	for (size_t i = 0; i < sizeof bad_cases / sizeof bad_cases[0]; i++) {
		struct config cfg;
		char text[1024];
		snprintf(text, sizeof text, BASE "%s\n", bad_cases[i].line);
		CHECK(!load_text(&cfg, &m, text, users_env));
		CHECK(m.n == 1);
		CHECK(msgs_has(&m, bad_cases[i].message));
		CHECK(cfg.dbs == NULL && cfg.listen_addr == NULL); /* freed on failure */
	}
	msgs_clear(&m);
}

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
	                "logfile = /var/log/pgbouncer.log\npidfile = /run/pgbouncer.pid\n"
	                "user = postgres\nignore_startup_parameters = extra_float_digits\n"
	                "[users]\nbob = pool_mode=session\n[PgFleet]\nworkers = 2\n",
	                users_env));
	CHECK(cfg.listen_port == 6000);
	CHECK(cfg.workers == 2);
	config_free(&cfg);
	msgs_clear(&m);
}

static void test_databases(void)
{
	struct config cfg;
	struct msgs m = {0};
	CHECK(load_text(
	    &cfg, &m,
	    "[databases]\n"
	    "app = host=a.example,b.example port=5433 dbname=appdb user=bob "
	    "password='it\\'s a \\\\secret ; #' pool_size=7 pool_mode=session "
	    "target_session_attrs=read-write max_replica_lag=2.5\n"
	    "\"my db\" = host=/var/run/postgresql\n"
	    "ro = host = 10.0.0.1 target_session_attrs=prefer-standby client_encoding=UTF8 "
	    "auth_user=x\n"
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
		CHECK(db->tsa == TSA_ANY && db->max_replica_lag < 0);
		CHECK(db->dbname == NULL && db->user == NULL && db->password == NULL);
	}
	db = config_find_db(&cfg, "ro");
	CHECK(db && db->tsa == TSA_PREFER_STANDBY && strcmp(db->host, "10.0.0.1") == 0);
	db = config_find_db(&cfg, "anything-else");
	CHECK(db && strcmp(db->name, "*") == 0 && strcmp(db->host, "fallback") == 0);
	config_free(&cfg);

	/* every target_session_attrs value, and its name back */
	static const char *const tsa[] = {"any",     "read-write", "read-only",
	                                  "primary", "standby",    "prefer-standby"};
	for (int i = 0; i < 6; i++) {
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
	                   "prefer-standby)"));
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
	                   "scram-sha-256)"));

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

static void test_auth_file(void)
{
	struct config cfg;
	struct msgs m = {0};

	write_file("users.txt", "; comment\n# comment\n\n"
	                        "\"alice\" \"md5abc\"\n"
	                        "  \"bob\"  \"pa\"\"ss word\"  \n"
	                        "\"carol\"   \"SCRAM-SHA-256$4096:c2FsdA==$a:b\"  extra ignored\n");
	char *env[] = {"DB_USER=alice", "DB_PASSWORD=envpw", NULL};
	char *line = expand(BASE "auth_file = @/users.txt\n");
	CHECK(load_text(&cfg, &m, line, env));
	CHECK(cfg.n_users == 3);
	const struct user_entry *u = config_find_user(&cfg, "bob");
	CHECK(u && strcmp(u->password, "pa\"ss word") == 0);
	u = config_find_user(&cfg, "carol");
	CHECK(u && strcmp(u->password, "SCRAM-SHA-256$4096:c2FsdA==$a:b") == 0);
	u = config_find_user(&cfg, "alice");
	CHECK(u && strcmp(u->password, "envpw") == 0); /* the environment wins */
	config_free(&cfg);
	free(line);

	/* PGFLEET_AUTH_FILE is read after the environment is applied */
	char *penv = expand("PGFLEET_AUTH_FILE=@/users.txt");
	char *env2[] = {penv, NULL};
	CHECK(load_text(&cfg, &m, "[databases]\napp = host=db\n", env2));
	CHECK(cfg.n_users == 3 && config_find_user(&cfg, "alice") != NULL);
	config_free(&cfg);
	free(penv);

	write_file("bad-users.txt", "\"dave\" \"x\"\n"
	                            "eve \"pw\"\n"
	                            "\"frank\" topsecret\n"
	                            "\"gina\" \"unterminated-secret\n"
	                            "\"\" \"x\"\n"
	                            "\"hank\n");
	line = expand("[databases]\napp = host=db\n[pgfleet]\nauth_file = @/bad-users.txt\n");
	CHECK(!load_text(&cfg, &m, line, NULL));
	free(line);
	CHECK(m.n == 5);
	CHECK(msgs_has(&m, "@/bad-users.txt:2: expected a quoted user name (\"user\" "
	                   "\"password\")"));
	CHECK(msgs_has(&m, "@/bad-users.txt:3: user 'frank': expected a quoted password after the "
	                   "name"));
	CHECK(msgs_has(&m, "@/bad-users.txt:4: user 'gina': unterminated quoted password"));
	CHECK(msgs_has(&m, "@/bad-users.txt:5: empty user name"));
	CHECK(msgs_has(&m, "@/bad-users.txt:6: unterminated quoted user name"));
	CHECK(!msgs_contain(&m, "secret"));

	line = expand("[databases]\napp = host=db\n[pgfleet]\nauth_file = @/nope.txt\n");
	CHECK(!load_text(&cfg, &m, line, NULL));
	free(line);
	CHECK(msgs_has(&m, "@/nope.txt: cannot read: No such file or directory"));

	/* not trust, and no users from anywhere */
	CHECK(
	    !load_text(&cfg, &m, "[databases]\napp = host=db\n[pgfleet]\nauth_type = md5\n", NULL));
	CHECK(m.n == 1);
	CHECK(msgs_has(&m, "@/pgfleet.ini:4: key 'auth_type': 'md5' needs users: set auth_file, or "
	                   "DB_USER with DB_PASSWORD"));
	msgs_clear(&m);
}

static void test_tls_rules(void)
{
	struct config cfg;
	struct msgs m = {0};
	CHECK(!load_text(&cfg, &m, BASE "client_tls_sslmode = require\n", users_env));
	CHECK(m.n == 2);
	CHECK(msgs_has(&m, "@/pgfleet.ini:5: key 'client_tls_sslmode': 'require' needs "
	                   "client_tls_cert_file"));
	CHECK(msgs_has(&m, "@/pgfleet.ini:5: key 'client_tls_sslmode': 'require' needs "
	                   "client_tls_key_file"));
	CHECK(load_text(&cfg, &m,
	                BASE "client_tls_sslmode = verify-full\nclient_tls_cert_file = /c.pem\n"
	                     "client_tls_key_file = /k.pem\n",
	                users_env));
	CHECK(cfg.client_tls_sslmode == TLS_VERIFY_FULL);
	config_free(&cfg);
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

static void test_config_set(void)
{
	struct config cfg;
	struct msgs m = {0};
	char err[256], buf[256];

	CHECK(load_text(&cfg, &m, BASE "auth_type = trust\n", NULL));
	CHECK(config_set(&cfg, "pool_mode", "session", err, sizeof err));
	CHECK(cfg.pool_mode == POOL_SESSION);
	CHECK(!config_set(&cfg, "pool_mode", "sesion", err, sizeof err));
	CHECK_STR(err, "unknown value 'sesion' (session, transaction, statement)");
	CHECK(cfg.pool_mode == POOL_SESSION);
	CHECK(config_set(&cfg, "Server_Reset_Query", "RESET ALL", err, sizeof err));
	CHECK_STR(cfg.server_reset_query, "RESET ALL");
	CHECK(config_set(&cfg, "query_timeout", "2min", err, sizeof err));
	value_of(&cfg, "query_timeout", buf, sizeof buf);
	CHECK_STR(buf, "120");
	CHECK(!config_set(&cfg, "no_such_thing", "1", err, sizeof err));
	CHECK_STR(err, "unknown setting 'no_such_thing'");
	CHECK(!config_set(&cfg, "listen_addr", "", err, sizeof err));
	CHECK_STR(err, "must not be empty");
	CHECK_STR(cfg.listen_addr, "127.0.0.1");
	/* the rules that tie settings together hold for SET too */
	CHECK(!config_set(&cfg, "client_tls_sslmode", "require", err, sizeof err));
	CHECK_STR(err, "'require' needs client_tls_cert_file");
	CHECK(cfg.client_tls_sslmode == TLS_DISABLE);
	CHECK(!config_set(&cfg, "auth_type", "md5", err, sizeof err));
	CHECK(cfg.auth_type == AUTH_TRUST);
	CHECK(config_set(&cfg, "client_tls_cert_file", "/c.pem", err, sizeof err));
	CHECK(config_set(&cfg, "client_tls_key_file", "/k.pem", err, sizeof err));
	CHECK(config_set(&cfg, "client_tls_sslmode", "require", err, sizeof err));
	CHECK(!config_set(&cfg, "client_tls_key_file", "", err, sizeof err));
	CHECK_STR(cfg.client_tls_key_file, "/k.pem");
	CHECK(!config_set(&cfg, "workers", "100", NULL, 0)); /* no room for a reason: fine */
	config_free(&cfg);
	msgs_clear(&m);
}

static const struct {
	const char *list, *user;
	bool want;
} list_cases[] = {
    {"alice,bob", "bob", true},
    {"alice, bob", "bob", true},
    {" alice  bob ", "alice", true},
    {"alice,,bob,", "bob", true},
    {"alice,bob", "bo", false},
    {"alice,bob", "Bob", false},
    {"alice,bob", "alice,bob", false},
    {"*", "alice", false},
    {"*", "*", true},
    {"", "alice", false},
    {NULL, "alice", false},
    {"alice", "", false},
};

static void test_list_has(void)
{
	for (size_t i = 0; i < sizeof list_cases / sizeof list_cases[0]; i++) {
		bool got = config_list_has(list_cases[i].list, list_cases[i].user);
		if (got != list_cases[i].want)
			fprintf(stderr, "  list '%s' user '%s'\n",
			        list_cases[i].list ? list_cases[i].list : "(null)",
			        list_cases[i].user);
		CHECK(got == list_cases[i].want);
	}
}

int main(void)
{
	if (!mkdtemp(tmpdir)) {
		perror("mkdtemp");
		return 1;
	}
	RUN(test_defaults);
	RUN(test_good_values);
	RUN(test_bad_values);
	RUN(test_outside_section);
	RUN(test_long_line);
	RUN(test_include);
	RUN(test_pgbouncer_alias);
	RUN(test_databases);
	RUN(test_many_errors);
	RUN(test_env_overrides);
	RUN(test_env_only);
	RUN(test_auth_file);
	RUN(test_tls_rules);
	RUN(test_missing_file);
	RUN(test_config_set);
	RUN(test_list_has);
	cleanup_files();
	return harness_finish();
}
