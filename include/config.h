/*
 * config.h: the settings (docs/configuration.md), the [databases] entries and the users.
 *
 * config.c owns the settings table, defaults, value parsing and validation and
 * the struct's lifecycle; the sources feed it: config_ini.c (the ini file),
 * config_env.c (the environment, ConfigMap/Secret style) and authfile.c (the
 * auth_file).  Every problem is reported as one line naming file, line and key
 * (or the variable).  Nothing here touches sockets or pools: the rest of
 * pgfleet reads a finished `struct config` and, on reload, compares two.
 */
#ifndef PGFLEET_CONFIG_H
#define PGFLEET_CONFIG_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

enum pool_mode { POOL_SESSION, POOL_TRANSACTION, POOL_STATEMENT };
/* AUTH_HBA: the method comes from auth_hba_file, per client (hba.h) */
enum auth_type { AUTH_TRUST, AUTH_PLAIN, AUTH_MD5, AUTH_SCRAM, AUTH_HBA };
/* libpq's target_session_attrs vocabulary */
enum tsa { TSA_ANY, TSA_READ_WRITE, TSA_READ_ONLY, TSA_PRIMARY, TSA_STANDBY, TSA_PREFER_STANDBY,
	   /* pgfleet's own (issue 19): each transaction by its first statement */
	   TSA_AUTO };
enum load_balance { LB_LEAST_CONN, LB_ROUND_ROBIN, LB_RANDOM };
enum log_format { LOGFMT_TEXT, LOGFMT_JSON };
enum tls_mode { TLS_DISABLE, TLS_ALLOW, TLS_PREFER, TLS_REQUIRE, TLS_VERIFY_CA, TLS_VERIFY_FULL };
/* transaction_session_state: what a pooled client's session state gets */
enum session_state_mode { SSTATE_PIN, SSTATE_ERROR, SSTATE_WARN };

/*
 * Every [pgfleet] setting, defined once: X(name, type, default).
 * Types: STR (char *, never NULL, "" when empty), INT (long long), BOOL,
 * TIME (double seconds), and the enums POOLMODE, AUTHTYPE, LB, LOGFMT, TLSMODE, SSTATE
 * (stored as int holding the enum value above).  The same table produces the
 * struct fields, the parser, SHOW CONFIG and PGFLEET_<NAME> overrides.
 */
#define CONFIG_SETTINGS(X)                                                                         \
	X(listen_addr, STR, "0.0.0.0")                                                             \
	X(listen_port, INT, "6432")                                                                \
	X(unix_socket_dir, STR, "")                                                                \
	X(unix_socket_mode, STR, "0777")                                                           \
	X(unix_socket_group, STR, "")                                                              \
	X(max_client_conn, INT, "1000")                                                            \
	X(so_reuseport, BOOL, "0")                                                                 \
	X(workers, INT, "1")                                                                       \
	X(io_uring, BOOL, "1")                                                                     \
	X(pool_mode, POOLMODE, "transaction")                                                      \
	X(default_pool_size, INT, "20")                                                            \
	X(min_pool_size, INT, "0")                                                                 \
	X(reserve_pool_size, INT, "0")                                                             \
	X(reserve_pool_timeout, TIME, "5")                                                         \
	X(max_db_connections, INT, "0")                                                            \
	X(max_user_connections, INT, "0")                                                          \
	X(server_reset_query, STR, "DISCARD ALL")                                                  \
	X(server_reset_query_always, BOOL, "0")                                                    \
	X(server_lifetime, TIME, "3600")                                                           \
	X(server_idle_timeout, TIME, "600")                                                        \
	X(server_round_robin, BOOL, "0")                                                           \
	X(server_connect_timeout, TIME, "15")                                                      \
	X(server_login_retry, TIME, "15")                                                          \
	/* issue 15: what a server may send before its login completes */                          \
	X(server_login_max_bytes, INT, "262144")                                                   \
	X(server_login_max_messages, INT, "1000")                                                  \
	X(server_scram_max_iterations, INT, "100000")                                              \
	X(query_timeout, TIME, "0")                                                                \
	X(query_wait_timeout, TIME, "120")                                                         \
	X(client_idle_timeout, TIME, "0")                                                          \
	X(client_login_timeout, TIME, "60")                                                        \
	X(idle_transaction_timeout, TIME, "0")                                                     \
	X(max_prepared_statements, INT, "200")                                                     \
	/* issue 17: session state that cannot follow a client (client.c) */                       \
	X(transaction_session_state, SSTATE, "pin")                                                \
	/* prepared statements against hostile clients (sqlinspect.c) */                           \
	X(max_inspected_query_size, INT, "8192")                                                   \
	/* hardening (issue 15): PostgreSQL's PQ_LARGE_MESSAGE_LIMIT, 1 GB - 1 */               \
	X(max_packet_size, INT, "1073741823")                                                      \
	X(load_balance, LB, "least_conn")                                                          \
	X(health_check_period, TIME, "5")                                                          \
	X(health_check_timeout, TIME, "3")                                                         \
	X(health_check_user, STR, "")                                                              \
	X(health_check_password, STR, "")                                                          \
	/* issue 15 item 8: health-check logins run on helper threads, at most this many */        \
	X(health_check_max_logins, INT, "100")                                                     \
	X(max_replica_lag, TIME, "0")                                                              \
	/* issue 19: statement-level read/write routing */                                         \
	X(target_session_attrs, TSA, "any")                                                        \
	X(read_your_writes, BOOL, "1")                                                             \
	X(read_your_writes_wait, TIME, "0.01")                                                     \
	X(route_cache_size, INT, "1000")                                                           \
	/* issue 19 items 1 and 3: a read's messages kept to re-run it elsewhere */                \
	X(read_retry_max_bytes, INT, "65536")                                                      \
	X(ban_time, TIME, "30")                                                                    \
	X(dns_max_ttl, TIME, "15")                                                                 \
	X(dns_nxdomain_ttl, TIME, "15")                                                            \
	X(dns_servers, STR, "")                                                                    \
	X(auth_type, AUTHTYPE, "scram-sha-256")                                                    \
	X(auth_file, STR, "")                                                                      \
	X(auth_hba_file, STR, "")                                                                  \
	X(auth_ident_file, STR, "")                                                                \
	X(auth_query, STR, "SELECT usename, passwd FROM pg_shadow WHERE usename=$1")              \
	X(auth_user, STR, "")                                                                      \
	X(auth_dbname, STR, "")                                                                    \
	X(auth_query_cache_ttl, TIME, "10")                                                        \
	X(auth_query_cache_size, INT, "1000")                                                      \
	X(auth_query_timeout, TIME, "5")                                                           \
	X(auth_query_max_lookups, INT, "16")                                                       \
	X(admin_users, STR, "")                                                                    \
	X(stats_users, STR, "")                                                                    \
	X(client_tls_sslmode, TLSMODE, "disable")                                                  \
	X(client_tls_cert_file, STR, "")                                                           \
	X(client_tls_key_file, STR, "")                                                            \
	X(client_tls_ca_file, STR, "")                                                             \
	X(server_tls_sslmode, TLSMODE, "prefer")                                                   \
	X(server_tls_ca_file, STR, "")                                                             \
	/* issue 18: the client certificate pgfleet shows the replicas (tls.c) */                 \
	X(server_tls_cert_file, STR, "")                                                           \
	X(server_tls_key_file, STR, "")                                                            \
	/* issue 18: PgBouncer's TLS knobs, both sides (tls.c; config.c checks them) */           \
	X(client_tls_protocols, STR, "secure")                                                     \
	X(client_tls_ciphers, STR, "default")                                                      \
	X(client_tls13_ciphers, STR, "")                                                           \
	X(client_tls_ecdhcurve, STR, "auto")                                                       \
	X(client_tls_dheparams, STR, "auto")                                                       \
	X(server_tls_protocols, STR, "secure")                                                     \
	X(server_tls_ciphers, STR, "default")                                                      \
	X(server_tls13_ciphers, STR, "")                                                           \
	X(http_listen, STR, "0.0.0.0:9930")                                                        \
	X(log_format, LOGFMT, "text")                                                              \
	X(log_connections, BOOL, "1")                                                              \
	X(log_disconnections, BOOL, "1")                                                           \
	/* issue 18: PgBouncer's; the log also goes to this file (log.c) */                        \
	X(logfile, STR, "")                                                                        \
	X(verbose, INT, "0")                                                                       \
	X(stats_period, TIME, "60")                                                                \
	X(shutdown_timeout, TIME, "30")                                                            \
	/* Per-client memory (issue 15 item 6): named statements, and what pgfleet \
	 * queues for a client that does not read (back-pressure mark). */        \
	X(max_client_prepared_statements, INT, "2000")                                             \
	X(max_client_prepared_bytes, INT, "8388608")                                               \
	/* issue 17: a client's settings (startup parameters, options, SET) */                    \
	X(max_client_params, INT, "100")                                                           \
	X(max_client_param_size, INT, "4096")                                                      \
	X(ignore_startup_parameters, STR, "")                                                      \
	X(max_client_output_buffer, INT, "4194304")                                                \
	X(max_pipelined_requests, INT, "1048576")                                                  \
	/* issue 15: databases a "*" entry creates (database.c) */                                 \
	X(max_auto_databases, INT, "100")                                                          \
	X(autodb_idle_timeout, TIME, "3600")                                                       \
	/* issue 18: PgBouncer's socket options, on client and server sockets (conn.c) */         \
	X(tcp_keepalive, BOOL, "1")                                                                \
	X(tcp_keepcnt, INT, "0")                                                                   \
	X(tcp_keepidle, INT, "0")                                                                  \
	X(tcp_keepintvl, INT, "0")                                                                 \
	X(tcp_user_timeout, INT, "0")                                                              \
	X(tcp_socket_buffer, INT, "0")                                                             \
	X(listen_backlog, INT, "1024")                                                             \
	X(pidfile, STR, "")                                                                        \
	/* issue 18: PgBouncer's knobs whose effect no client can see: accepted, shown by        \
	 * SHOW CONFIG, and docs/configuration.md says why each changes nothing */               \
	X(tcp_defer_accept, INT, "1")                                                              \
	X(pkt_buf, INT, "4096")                                                                    \
	X(sbuf_loopcnt, INT, "5")                                                                  \
	X(log_stats, BOOL, "1")                                                                    \
	X(log_pooler_errors, BOOL, "1")                                                            \
	X(syslog_facility, STR, "daemon")                                                          \
	X(syslog_ident, STR, "pgbouncer")                                                          \
	X(dns_zone_check_period, TIME, "0")                                                        \
	X(conffile, STR, "")                                                                       \
	X(service_name, STR, "")                                                                   \
	X(job_name, STR, "")                                                                       \
	X(config_watch, BOOL, "1")                                                                 \
	/* issue 20: the fleet of pgfleet instances (peers.c): a headless Service's name, \
	 * the shared secret peer messages are signed with, their UDP port */                  \
	X(peers, STR, "")                                                                          \
	X(peer_secret, STR, "")                                                                    \
	X(peer_port, INT, "6433")

/*
 * Settings pgfleet accepts but does not implement, in one place: issue 18
 * (and whoever implements one later) deletes the line.  Never silently
 * ignored: X(name, type, default, decision, note).
 *   REFUSE: a value other than the default stops the load (start-up, -t,
 *           RELOAD/SIGHUP, SET) with "where: key 'name': not implemented...".
 *   WARN:   accepted with a warning naming it: only while issue 18's work
 *           on it is in progress (no new WARN row: a knob whose effect no
 *           client can see becomes a documented no-op setting in
 *           CONFIG_SETTINGS instead, shown by SHOW CONFIG).
 * A PgBouncer 1.25 key in neither list is "unknown setting";
 * tests/integration/test_pgbouncer_compat.py keeps the three in step.
 * `type` (STR, INT, BOOL, TIME) says how a value is compared with `default`;
 * for a name that is also in CONFIG_SETTINGS the two must agree.  `note`
 * (or NULL) says what pgfleet does instead; it ends the warning line.
 */
#define CONFIG_UNIMPLEMENTED(X)                                                                    \
	/* in CONFIG_SETTINGS (SHOW CONFIG lists them) */                                         \
	/* PgBouncer's, not in CONFIG_SETTINGS: limits and behaviour clients see */               \
	X(disable_pqexec, BOOL, "0", REFUSE, NULL)                                                 \
	X(max_db_client_connections, INT, "0", REFUSE, NULL)                                       \
	X(max_user_client_connections, INT, "0", REFUSE, NULL)                                     \
	X(peer_id, INT, "0", REFUSE, NULL)                                                         \
	X(resolv_conf, STR, "", REFUSE, NULL)                                                      \
	X(track_extra_parameters, STR, "IntervalStyle", REFUSE, NULL)                              \
	X(user, STR, "", REFUSE, NULL)                                                             \
	/* issue 18: PgBouncer's knobs pgfleet does not honour: a value other than        \
	 * the default would change what a client, a DBA or an operator sees */            \
	X(application_name_add_host, BOOL, "0", REFUSE, NULL)                                      \
	X(auth_ldap_options, STR, "", REFUSE, NULL)                                                \
	X(auth_pam_confdir, STR, "", REFUSE, NULL)                                                 \
	X(cancel_wait_timeout, TIME, "10", REFUSE, NULL)                                           \
	X(login_notify_message, STR, "", REFUSE, NULL)                                             \
	X(pool_idle_timeout, TIME, "0", REFUSE, NULL)                                              \
	X(query_wait_notify, TIME, "5", REFUSE, NULL)                                              \
	X(scram_iterations, INT, "4096", REFUSE, NULL)                                             \
	X(server_check_delay, TIME, "30", REFUSE, NULL)                                            \
	X(server_check_query, STR, "select 1", REFUSE, NULL)                                       \
	X(server_fast_close, BOOL, "0", REFUSE, NULL)                                              \
	X(suspend_timeout, TIME, "10", REFUSE, NULL)                                               \
	X(syslog, BOOL, "0", REFUSE, NULL)                                                         \
	X(transaction_timeout, TIME, "0", REFUSE, NULL)

/*
 * The same for a [databases] entry's parameters.  A NULL default means any
 * value counts as set (the parameter has no "off" value).
 */
#define CONFIG_DB_UNIMPLEMENTED(X)                                                                 \
	X(application_name, STR, NULL, REFUSE, NULL)                                               \
	X(client_encoding, STR, NULL, REFUSE, NULL)                                                \
	X(connect_query, STR, NULL, REFUSE, NULL)                                                  \
	X(datestyle, STR, NULL, REFUSE, NULL)                                                      \
	X(timezone, STR, NULL, REFUSE, NULL)                                                       \
	X(load_balance_hosts, STR, "round-robin", REFUSE, NULL)                                    \
	X(max_db_client_connections, INT, "0", REFUSE, NULL)                                       \
	X(query_wait_timeout, TIME, NULL, REFUSE, NULL)

#define CFG_CTYPE_STR char *
#define CFG_CTYPE_INT long long
#define CFG_CTYPE_BOOL bool
#define CFG_CTYPE_TIME double
#define CFG_CTYPE_POOLMODE int
#define CFG_CTYPE_AUTHTYPE int
#define CFG_CTYPE_LB int
#define CFG_CTYPE_TSA int
#define CFG_CTYPE_LOGFMT int
#define CFG_CTYPE_TLSMODE int
#define CFG_CTYPE_SSTATE int

/* One [databases] entry.  Optional values are NULL / -1 when not given. */
struct db_config {
	char *name;         /* "*" is the fallback for any other name */
	char *host;         /* as written: DNS name, address, comma list, or socket dir */
	int port;           /* default 5432 */
	char *dbname;       /* NULL: the client's database name */
	char *user;         /* NULL: the client's user */
	char *password;     /* NULL: the user's password from auth_file / environment */
	char *auth_user;    /* NULL: the global auth_user */
	char *auth_query;   /* NULL: the global auth_query */
	char *auth_dbname;  /* NULL: the global auth_dbname */
	int pool_size;      /* -1: default_pool_size */
	int pool_mode;      /* -1: the global pool_mode */
	int tsa;            /* enum tsa, -1: the global target_session_attrs */
	double max_replica_lag; /* < 0: the global max_replica_lag */
	int min_pool_size;      /* -1: the global min_pool_size */
	int reserve_pool_size;  /* -1: the global reserve_pool_size ("reserve_pool" too) */
	int max_db_connections; /* -1: the global max_db_connections */
	double server_lifetime; /* < 0: the global server_lifetime */
	char *file;         /* where it was defined, for messages */
	int line;
};

/* One [users] entry: PgBouncer's per-user settings.  -1 when not given. */
struct user_config {
	char *name;
	int max_user_connections; /* -1: the global max_user_connections */
	char *file;               /* where it was defined, for messages */
	int line;
};

/* One auth_file line (or DB_USER/DB_PASSWORD): password is plaintext,
 * "md5<32 hex>" or "SCRAM-SHA-256$<iter>:<salt>$<StoredKey>:<ServerKey>". */
struct user_entry {
	char *name;
	char *password;
};

struct config {
#define CFG_FIELD(name, type, def) CFG_CTYPE_##type name;
	CONFIG_SETTINGS(CFG_FIELD)
#undef CFG_FIELD
	struct db_config *dbs;
	size_t n_dbs;
	struct user_entry *users;
	size_t n_users;
	struct user_config *user_cfgs; /* [users] */
	size_t n_user_cfgs;
	/* auth_type = hba: the rules read from auth_hba_file and the user name
	 * maps of auth_ident_file (read-only; NULL
	 * for any other auth_type).  RELOAD reads the file again. */
	struct hba *hba;
	char *path; /* the main config file, NULL when configured from the environment */
	/* Every ini file read, as opened: the main one, then each %include
	 * (config_watch stats them to notice a change). */
	char **files;
	size_t n_files;
	/* One line each, "where: key 'name': not implemented by pgfleet, ignored
	 * (...)": the WARN entries of CONFIG_UNIMPLEMENTED that were set.  The
	 * caller logs them (config.c never logs). */
	char **warnings;
	size_t n_warnings;
};

/* Called once per problem with a complete one-line message, e.g.
 * "/etc/pgfleet/pgfleet.ini:12: key 'pool_mode': unknown value 'sesion'". */
typedef void (*config_report_fn)(void *arg, const char *line);

/*
 * Load `path` (NULL: environment only) with the environment `envp` applied on
 * top, then the auth_file.  Returns true when valid; otherwise every problem
 * went to `report` and `cfg` is left freed/zeroed.
 */
bool config_load(struct config *cfg, const char *path, char *const *envp, config_report_fn report,
		 void *arg) __attribute__((warn_unused_result));
void config_free(struct config *cfg);

/* The entry for a client's database name: exact name first, then "*", else NULL. */
const struct db_config *config_find_db(const struct config *cfg, const char *name);
/* The user entry, or NULL. */
const struct user_entry *config_find_user(const struct config *cfg, const char *name);
/* The [users] entry, or NULL. */
const struct user_config *config_find_user_cfg(const struct config *cfg, const char *name);
/* Is `user` listed in the comma/space separated list `list` (admin_users, stats_users)? */
bool config_list_has(const char *list, const char *user);
/* The same in any case (ignore_startup_parameters: GUC names). */
bool config_list_has_nocase(const char *list, const char *name);

/* Settings by index, for SHOW CONFIG and SET: name, current value as text, default. */
size_t config_setting_count(void);
const char *config_setting_name(size_t i);
const char *config_setting_default(size_t i);
void config_setting_value(const struct config *cfg, size_t i, char *buf, size_t len);
/* SET key = value at run time: validates like the loader; false with `err` filled.
 * A CONFIG_UNIMPLEMENTED key that is no setting: true for its default (nothing
 * is stored), false otherwise. */
bool config_set(struct config *cfg, const char *key, const char *value, char *err, size_t errlen)
	__attribute__((warn_unused_result));

/* Names for enum values ("transaction", "scram-sha-256", ...). */
const char *config_pool_mode_name(int mode);
const char *config_tsa_name(int tsa);

/*
 * ---- For the configuration's sources only: config_ini.c, config_env.c,
 * authfile.c.  A source reads its text and hands each value to the loader,
 * which parses, validates, stores it and remembers where it came from; every
 * problem becomes one report line.  A source must not write `struct config`
 * fields itself except through these functions (databases and users are
 * added here, then filled by config_db_set_param / as given).
 */
struct config_loader; /* one config_load in progress */

struct config *config_loader_config(struct config_loader *l);
/* One error line (control characters become '?'); the load will fail. */
void config_loader_report(struct config_loader *l, const char *fmt, ...)
	__attribute__((format(printf, 2, 3)));
/* One warning line, kept in cfg->warnings; the load does not fail. */
void config_loader_warn(struct config_loader *l, const char *fmt, ...)
	__attribute__((format(printf, 2, 3)));
/* A copy of `name` that lives until the load ends (origins point at it). */
const char *config_loader_keep_name(struct config_loader *l, const char *name);
/* An ini file was read (the main one or an %include): kept in cfg->files. */
void config_loader_note_file(struct config_loader *l, const char *path);
/* The main file could not be read: later "no databases" lines would only repeat it. */
void config_loader_set_unreadable(struct config_loader *l);
/* An empty DB_PASSWORD was reported: "auth_type needs users" would repeat it. */
void config_loader_set_empty_password(struct config_loader *l);
/* DATABASE_URL(S) was reported as wrong: "no databases" would repeat it. */
void config_loader_set_bad_database_url(struct config_loader *l);

/* The setting's index, or -1 (case-insensitive, as PgBouncer). */
int config_setting_find(const char *name);
/* Is `name` a key pgfleet accepts: a setting or a CONFIG_UNIMPLEMENTED entry? */
bool config_setting_known(const char *name);
/* `key = text` from file:line ([pgfleet]/[pgbouncer]); `file` must live until
 * the load ends (config_loader_keep_name). */
void config_loader_set_file(struct config_loader *l, const char *key, const char *text,
			    const char *file, int line);
/* Every key a source may name, by index: the settings, then the
 * CONFIG_UNIMPLEMENTED entries that are not settings (NULL for the others). */
size_t config_key_count(void);
const char *config_key_name(size_t i);
/* Key `name` (a setting or a CONFIG_UNIMPLEMENTED entry) from variable `var`:
 * stored, or refused/warned about like the same line in a file. */
void config_loader_set_env_key(struct config_loader *l, const char *name, const char *var,
			       const char *text);
/* Setting `idx` from environment variable `var`. */
void config_loader_set_env(struct config_loader *l, size_t idx, const char *var, const char *text);

/* A new [databases] entry with every optional field unset. */
struct db_config *config_db_add(struct config *cfg, const char *name, const char *file, int line);
/* One key=value of an entry defined at file:line; reports what is wrong,
 * refused or warned with the entry's name. */
void config_db_set_param(struct config_loader *l, struct db_config *db, const char *key,
			 const char *value, const char *file, int line);
/* A new [users] entry (NULL, reported, when the name is defined already),
 * and one key=value of it. */
struct user_config *config_user_cfg_add(struct config_loader *l, const char *name,
					const char *file, int line);
void config_user_set_param(struct config_loader *l, struct user_config *u, const char *key,
			   const char *value, const char *file, int line);
/* Adds a user or replaces its password (the last definition wins). */
void config_user_add(struct config *cfg, const char *name, const char *password);

/* Checks shared with the sources; false with the reason in `err`. */
bool config_parse_int(const char *s, long long min, long long max, long long *out, char *err,
		      size_t errlen) __attribute__((warn_unused_result));
bool config_check_host(const char *h, char *err, size_t errlen) __attribute__((warn_unused_result));

/* Allocation that aborts on failure (a few kB of configuration). */
void *config_xrealloc(void *p, size_t n);
char *config_xstrdup(const char *s);
/* Overwrites, then frees, a string that may hold a secret. */
void config_free_secret(char *s);

#endif
