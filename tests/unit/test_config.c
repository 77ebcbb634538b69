/*
 * test_config.c: config.c, the settings table: defaults, parsing and
 * validating each value, the rules between settings, SET, and the settings
 * that are accepted but not implemented (refused or warned about).  Values
 * reach it through small ini files (config_fixture.h).
 */
#include "config_fixture.h"

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
	CHECK(cfg.max_client_params == 100 && cfg.max_client_param_size == 4096);

	/* every setting: the default's text survives parsing unchanged, and SET
	 * accepts the text SHOW CONFIG prints */
	size_t n = config_setting_count();
	CHECK(n == 120);
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
    {"server_reset_query = SELECT 1;SELECT 2#x", "server_reset_query", "SELECT 1;SELECT 2#x"},
    {"admin_users = a, b   # who may administer", "admin_users", "a, b"},
    {"unix_socket_dir = \"\"", "unix_socket_dir", ""},
    {"unix_socket_dir =", "unix_socket_dir", ""},
    {"unix_socket_mode = 0700", "unix_socket_mode", "0700"},
    {"unix_socket_group = postgres", "unix_socket_group", "postgres"},
    {"http_listen = [::1]:9999", "http_listen", "[::1]:9999"},
    {"http_listen =", "http_listen", ""},
    {"tcp_keepalive = 0", "tcp_keepalive", "0"},
    {"tcp_keepidle = 30", "tcp_keepidle", "30"},
    {"tcp_user_timeout = 2500", "tcp_user_timeout", "2500"},
    {"listen_backlog = 128", "listen_backlog", "128"},
    {"pkt_buf = 8192", "pkt_buf", "8192"},
    {"listen_addr = 127.0.0.1, ::1", "listen_addr", "127.0.0.1, ::1"},
    {"client_tls_ciphers = default", "listen_port", "6432"},
    {"client_tls_ciphers = fast", "client_tls_ciphers", "fast"},
    {"server_tls_ciphers = HIGH:!aNULL", "server_tls_ciphers", "HIGH:!aNULL"},
    {"client_tls13_ciphers = TLS_AES_256_GCM_SHA384", "client_tls13_ciphers",
     "TLS_AES_256_GCM_SHA384"},
    {"client_tls_protocols = tlsv1.2, tlsv1.3", "client_tls_protocols", "tlsv1.2, tlsv1.3"},
    {"client_tls_ecdhcurve = prime256v1", "client_tls_ecdhcurve", "prime256v1"},
    {"client_tls_dheparams = none", "client_tls_dheparams", "none"},
    {"; listen_port = 1", "listen_port", "6432"},
    {"# listen_port = 1", "listen_port", "6432"},
    {"[users]", "listen_port", "6432"},
    {"[peers]", "listen_port", "6432"},
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
    {"auth_type = hba", "@/pgfleet.ini:5: key 'auth_type': 'hba' needs auth_hba_file"},
    {"auth_type = cert",
     "@/pgfleet.ini:5: key 'auth_type': unsupported value 'cert' (trust, plain, md5, "
     "scram-sha-256, hba)"},
    {"load_balance = fastest",
     "@/pgfleet.ini:5: key 'load_balance': unknown value 'fastest' (least_conn, round_robin, "
     "random)"},
    {"log_format = xml", "@/pgfleet.ini:5: key 'log_format': unknown value 'xml' (text, json)"},
    {"server_tls_sslmode = always",
     "@/pgfleet.ini:5: key 'server_tls_sslmode': unknown value 'always' (disable, allow, prefer, "
     "require, verify-ca, verify-full)"},
    {"listen_addr = ", "@/pgfleet.ini:5: key 'listen_addr': must not be empty"},
    {"listen_addr = 127.0.0.1,,::1", "@/pgfleet.ini:5: key 'listen_addr': empty address in "
                                     "the list"},
    {"listen_addr = 127.0.0.1, ", "@/pgfleet.ini:5: key 'listen_addr': empty address in the "
                                  "list"},
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

/* Accepted but not implemented, CONFIG_UNIMPLEMENTED: a value other than the
 * default is refused with file:line:key; the default itself loads quietly. */
static const struct {
	const char *line;
	const char *message; /* NULL: loads, with no message and no warning */
} unimplemented_cases[] = {
    {"peer_id = 10", "@/pgfleet.ini:5: key 'peer_id': not implemented by "
                     "pgfleet yet; remove it or set it to 0 (its default)"},
    /* issue 18: implemented now */
    {"auth_user = pgbouncer", NULL},
    {"auth_query = SELECT p FROM f($1)", NULL},
    {"auth_dbname = postgres", NULL},
    {"max_user_client_connections = 3", "@/pgfleet.ini:5: key 'max_user_client_connections': "
                                        "not implemented by pgfleet yet; remove it or set it to "
                                        "0 (its default)"},
    {"MAX_USER_CLIENT_CONNECTIONS = lots", "@/pgfleet.ini:5: key 'MAX_USER_CLIENT_CONNECTIONS': "
                                           "not implemented by pgfleet yet; remove it or set it "
                                           "to 0 (its default)"},
    {"max_db_client_connections = 1", "@/pgfleet.ini:5: key 'max_db_client_connections': not "
                                      "implemented by pgfleet yet; remove it or set it to 0 "
                                      "(its default)"},
    {"server_tls_cert_file = /c.pem", "@/pgfleet.ini:5: key 'server_tls_cert_file': needs "
                                      "server_tls_key_file"},
    {"server_tls_key_file = /k.pem", "@/pgfleet.ini:5: key 'server_tls_key_file': needs "
                                     "server_tls_cert_file"},
    {"client_tls_ciphers = NO-SUCH-CIPHER", "@/pgfleet.ini:5: key 'client_tls_ciphers': "
                                            "OpenSSL does not accept 'NO-SUCH-CIPHER' as a "
                                            "cipher list"},
    {"server_tls13_ciphers = TLS_NOPE", "@/pgfleet.ini:5: key 'server_tls13_ciphers': OpenSSL "
                                        "does not accept 'TLS_NOPE' as TLS 1.3 cipher suites"},
    {"client_tls_ecdhcurve = nocurve", "@/pgfleet.ini:5: key 'client_tls_ecdhcurve': OpenSSL "
                                       "does not accept 'nocurve' as a curve list"},
    {"client_tls_dheparams = legacy", "@/pgfleet.ini:5: key 'client_tls_dheparams': 'legacy' "
                                      "(1024-bit DH) is refused: auto or none"},
    {"server_tls_protocols = tlsv1.4", "@/pgfleet.ini:5: key 'server_tls_protocols': unknown "
                                       "value 'tlsv1.4' (secure, tlsv1.2, tlsv1.3)"},
    {"syslog = 1", "@/pgfleet.ini:5: key 'syslog': not implemented by pgfleet yet; remove it or "
                   "set it to 0 (its default)"},
    {"scram_iterations = 10000", "@/pgfleet.ini:5: key 'scram_iterations': not implemented by "
                                 "pgfleet yet; remove it or set it to 4096 (its default)"},
    {"tcp_keepcnt = 128", "@/pgfleet.ini:5: key 'tcp_keepcnt': value '128' out of range "
                          "(0..127)"},
    {"disable_pqexec = on", "@/pgfleet.ini:5: key 'disable_pqexec': not implemented by pgfleet "
                            "yet; remove it or set it to 0 (its default)"},
    {"track_extra_parameters = search_path",
     "@/pgfleet.ini:5: key 'track_extra_parameters': not implemented by pgfleet yet; remove it "
     "or set it to IntervalStyle (its default)"},
    {"client_tls_protocols = tlsv1.0", "@/pgfleet.ini:5: key 'client_tls_protocols': "
                                       "'tlsv1.0': pgfleet speaks TLS 1.2 and 1.3 only (secure, "
                                       "tlsv1.2, tlsv1.3)"},
    {"user = postgres", "@/pgfleet.ini:5: key 'user': not implemented by pgfleet yet; remove it "
                        "(its default is empty)"},
    {"unix_socket_mode = 0789", "@/pgfleet.ini:5: key 'unix_socket_mode': expected an octal "
                                "mode such as 0777, got '0789'"},
    /* the default, however written, is no reason to refuse or warn */
    {"max_db_connections = 0", NULL},
    {"reserve_pool_size = 0", NULL},
    {"auth_user =", NULL},
    {"auth_query = \"SELECT usename, passwd FROM pg_shadow WHERE usename=$1\"", NULL},
    {"max_user_connections = 0", NULL},
    {"disable_pqexec = off", NULL},
    {"track_extra_parameters = intervalstyle", NULL},
    {"client_tls_protocols = secure", NULL},
    {"reserve_pool_timeout = 5s", NULL},
    {"tcp_keepalive = yes", NULL},
    {"logfile =", NULL},
    {"min_pool_size = 0", NULL},
};

static void test_unimplemented(void)
{
	struct config cfg_all;
	struct msgs m = {0};
	for (size_t i = 0; i < sizeof unimplemented_cases / sizeof unimplemented_cases[0]; i++) {
		struct config cfg;
		char text[1024];
		const char *want = unimplemented_cases[i].message;
		snprintf(text, sizeof text, BASE "%s\n", unimplemented_cases[i].line);
		bool ok = load_text(&cfg, &m, text, users_env);
		if (ok != !want)
			fprintf(stderr, "  case '%s'\n", unimplemented_cases[i].line);
		CHECK(ok == !want);
		if (want) {
			CHECK(m.n == 1);
			CHECK(msgs_has(&m, want));
			CHECK(cfg.dbs == NULL && cfg.warnings == NULL);
		} else {
			CHECK(m.n == 0);
			CHECK(cfg.n_warnings == 0);
			config_free(&cfg);
		}
	}
	/* all of them at once: one line each, and the load fails */
	CHECK(!load_text(&cfg_all, &m,
	                 BASE "peer_id = 10\nmax_db_client_connections = 5\ndisable_pqexec = 1\n",
	                 users_env));
	CHECK(m.n == 3);
	CHECK(msgs_contain(&m, "pgfleet.ini:5: key 'peer_id'"));
	CHECK(msgs_contain(&m, "pgfleet.ini:6: key 'max_db_client_connections'"));
	CHECK(msgs_contain(&m, "pgfleet.ini:7: key 'disable_pqexec'"));
	msgs_clear(&m);
}

/* Issue 18: every setting is implemented or refused; none is accepted with
 * a warning any more.  PgBouncer's knobs with no effect a client sees are
 * settings (SHOW CONFIG) and load silently. */
static void test_no_setting_is_only_warned(void)
{
	int warned = 0;
#define COUNT_WARN(name, type, def, decision, note) warned += strcmp(#decision, "WARN") == 0;
	CONFIG_UNIMPLEMENTED(COUNT_WARN)
	CONFIG_DB_UNIMPLEMENTED(COUNT_WARN)
#undef COUNT_WARN
	CHECK(warned == 0);
	struct config cfg;
	struct msgs m = {0};
	CHECK(load_text(&cfg, &m,
	                BASE "syslog_ident = bouncer\n"
	                     "job_name = nightly\n"
	                     "min_pool_size = 2\n"
	                     "tcp_keepalive = 1\n"
	                     "verbose = 1\n",
	                users_env));
	CHECK(m.n == 0);
	CHECK(cfg.n_warnings == 0);
	CHECK(cfg.min_pool_size == 2);
	CHECK_STR(cfg.job_name, "nightly");
	config_free(&cfg);
}

/* Every CONFIG_UNIMPLEMENTED name is accepted as a key; the ones also in
 * CONFIG_SETTINGS keep SHOW CONFIG's default. */
static void test_unimplemented_table(void)
{
#define CHECK_ROW(name, type, def, decision, note)                                                 \
	do {                                                                                       \
		CHECK(config_setting_known(#name));                                                \
		int i_ = config_setting_find(#name);                                               \
		if (i_ >= 0)                                                                       \
			CHECK_STR(config_setting_default((size_t)i_), def);                        \
	} while (0);
	CONFIG_UNIMPLEMENTED(CHECK_ROW)
#undef CHECK_ROW
	CHECK(!config_setting_known("max_db_connectionz"));
}

/* A [databases] entry's parameters: the same rule, named with the entry. */
static void test_unimplemented_db(void)
{
	struct config cfg;
	struct msgs m = {0};
	CHECK(!load_text(&cfg, &m,
	                 "[databases]\n"
	                 "a = host=db load_balance_hosts=disable password=topsecret\n"
	                 "b = host=db auth_user=pgb reserve_pool=0\n"
	                 "c = host=db client_encoding=UTF8 connect_query='SELECT 1'\n",
	                 users_env));
	CHECK(m.n == 3); /* auth_user is implemented (issue 18) */
	CHECK(msgs_has(&m, "@/pgfleet.ini:2: key 'a': load_balance_hosts: not implemented by "
	                   "pgfleet yet; remove it or set it to round-robin (its default)"));
	CHECK(msgs_has(&m, "@/pgfleet.ini:4: key 'c': client_encoding: not implemented by pgfleet "
	                   "yet; remove it"));
	CHECK(msgs_has(&m, "@/pgfleet.ini:4: key 'c': connect_query: not implemented by pgfleet "
	                   "yet; remove it"));
	CHECK(!msgs_contain(&m, "topsecret") && !msgs_contain(&m, "SELECT 1"));

	CHECK(load_text(&cfg, &m,
	                "[databases]\n"
	                "a = host=db min_pool_size=3 server_lifetime=60 max_db_connections=0\n",
	                users_env));
	CHECK(m.n == 0);
	CHECK(cfg.n_warnings == 0);
	/* issue 18: per-database limits and server_lifetime are implemented */
	CHECK(cfg.n_dbs == 1 && cfg.dbs[0].min_pool_size == 3 && cfg.dbs[0].max_db_connections == 0 &&
	      cfg.dbs[0].reserve_pool_size == -1 && cfg.dbs[0].server_lifetime == 60);
	config_free(&cfg);
	msgs_clear(&m);
}

/* auth_user / auth_query / auth_dbname per database (issue 18), as PgBouncer
 * takes them in a connect string; unset is NULL (the global ones apply). */
static void test_db_auth_keys(void)
{
	struct config cfg;
	struct msgs m = {0};
	CHECK(load_text(&cfg, &m,
	                "[pgfleet]\nauth_user = pgb\nauth_dbname = postgres\n"
	                "[databases]\n"
	                "a = host=db auth_user=lookup auth_dbname=authdb "
	                "auth_query='SELECT * FROM pgbouncer.user_lookup($1)'\n"
	                "b = host=db\n",
	                users_env));
	CHECK(m.n == 0);
	CHECK(cfg.n_dbs == 2);
	if (cfg.n_dbs == 2) {
		CHECK_STR(cfg.dbs[0].auth_user, "lookup");
		CHECK_STR(cfg.dbs[0].auth_dbname, "authdb");
		CHECK_STR(cfg.dbs[0].auth_query, "SELECT * FROM pgbouncer.user_lookup($1)");
		CHECK(!cfg.dbs[1].auth_user && !cfg.dbs[1].auth_query && !cfg.dbs[1].auth_dbname);
	}
	CHECK_STR(cfg.auth_user, "pgb");
	CHECK_STR(cfg.auth_dbname, "postgres");
	CHECK(cfg.auth_query_cache_ttl == 10.0 && cfg.auth_query_cache_size == 1000);
	CHECK(cfg.auth_query_timeout == 5.0 && cfg.auth_query_max_lookups == 16);
	config_free(&cfg);
	CHECK(!load_text(&cfg, &m, BASE "auth_query_cache_size = 0\n", users_env));
	CHECK(!load_text(&cfg, &m, BASE "auth_query_max_lookups = 100000\n", users_env));
	msgs_clear(&m);
}

/* SET (the admin console) refuses what the loader refuses. */
static void test_unimplemented_set(void)
{
	struct config cfg;
	struct msgs m = {0};
	char err[256];

	CHECK(load_text(&cfg, &m, BASE, users_env));
	CHECK(config_set(&cfg, "max_db_connections", "5", err, sizeof err)); /* issue 18 */
	CHECK(cfg.max_db_connections == 5);
	CHECK(config_set(&cfg, "min_pool_size", "2", err, sizeof err));
	CHECK(cfg.min_pool_size == 2);
	config_free(&cfg);
	msgs_clear(&m);
}

/* issue 18: logfile is opened by the loader (and by SET), so that a file
 * pgfleet cannot write is an error naming it; verbose is a setting; SET of
 * a PgBouncer key pgfleet does not implement takes its default only. */
static void test_logfile_verbose_and_pgbouncer_set(void)
{
	struct config cfg;
	struct msgs m = {0};
	char err[256];

	CHECK(!load_text(&cfg, &m, BASE "logfile = /nonexistent-pgfleet-dir/x.log\n", users_env));
	CHECK(msgs_has(&m, "@/pgfleet.ini:5: key 'logfile': cannot open "
	                   "'/nonexistent-pgfleet-dir/x.log': No such file or directory"));
	msgs_clear(&m);

	const char *log = write_file("log/pgfleet.log", "");
	char text[512];
	snprintf(text, sizeof text, BASE "logfile = %s\nverbose = 2\n", log);
	CHECK(load_text(&cfg, &m, text, users_env));
	CHECK(m.n == 0 && cfg.n_warnings == 0);
	CHECK_STR(cfg.logfile, log);
	CHECK(cfg.verbose == 2);
	CHECK(!config_set(&cfg, "logfile", "/nonexistent-pgfleet-dir/y.log", err, sizeof err));
	CHECK_STR(err, "cannot open '/nonexistent-pgfleet-dir/y.log': No such file or directory");
	CHECK_STR(cfg.logfile, log); /* kept */
	CHECK(config_set(&cfg, "logfile", "", err, sizeof err));
	CHECK(!config_set(&cfg, "verbose", "loud", err, sizeof err));
	CHECK(config_set(&cfg, "VERBOSE", "1", err, sizeof err) && cfg.verbose == 1);
	/* PgBouncer's keys that are no pgfleet setting: the default is a no-op */
	CHECK(config_set(&cfg, "log_stats", "0", err, sizeof err) && !cfg.log_stats);
	CHECK(config_set(&cfg, "peer_id", "0", err, sizeof err));
	CHECK(!config_set(&cfg, "peer_id", "3", err, sizeof err));
	CHECK_STR(err, "not implemented by pgfleet yet; remove it or set it to 0 (its default)");
	CHECK(!config_set(&cfg, "no_such_key", "1", err, sizeof err));
	CHECK_STR(err, "unknown setting 'no_such_key'");
	config_free(&cfg);
	msgs_clear(&m);
}

/* config_watch stats every file the load read: the main one, then each
 * %include, as opened (relative to the including file). */
static void test_files_read_are_listed(void)
{
	struct config cfg;
	struct msgs m = {0};
	write_file("inc/extra.ini", "default_pool_size = 7\n");
	CHECK(load_text(&cfg, &m, BASE "%include inc/extra.ini\n", users_env));
	CHECK(cfg.n_files == 2);
	if (cfg.n_files == 2) {
		CHECK(strstr(cfg.files[0], "/pgfleet.ini") != NULL);
		CHECK(strstr(cfg.files[1], "/inc/extra.ini") != NULL);
	}
	CHECK(cfg.default_pool_size == 7 && cfg.config_watch);
	config_free(&cfg);
	CHECK(cfg.files == NULL && cfg.n_files == 0);
	msgs_clear(&m);
}

static void run_all(void)
{
	RUN(test_defaults);
	RUN(test_good_values);
	RUN(test_bad_values);
	RUN(test_tls_rules);
	RUN(test_config_set);
	RUN(test_list_has);
	RUN(test_unimplemented);
	RUN(test_no_setting_is_only_warned);
	RUN(test_unimplemented_db);
	RUN(test_db_auth_keys);
	RUN(test_unimplemented_set);
	RUN(test_unimplemented_table);
	RUN(test_logfile_verbose_and_pgbouncer_set);
	RUN(test_files_read_are_listed);
}

int main(void)
{
	return fixture_main(run_all);
}
