/*
 * config.h: the settings of SPEC.md, the [databases] entries and the users.
 *
 * config.c loads them from a PgBouncer-dialect ini file and the environment
 * (ConfigMap/Secret style), validates every value and reports each problem as
 * one line naming file, line and key.  It never touches sockets or pools: the
 * rest of pgfleet reads a finished `struct config` and, on reload, compares two.
 */
#ifndef PGFLEET_CONFIG_H
#define PGFLEET_CONFIG_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

enum pool_mode { POOL_SESSION, POOL_TRANSACTION, POOL_STATEMENT };
enum auth_type { AUTH_TRUST, AUTH_PLAIN, AUTH_MD5, AUTH_SCRAM };
/* libpq's target_session_attrs vocabulary */
enum tsa { TSA_ANY, TSA_READ_WRITE, TSA_READ_ONLY, TSA_PRIMARY, TSA_STANDBY, TSA_PREFER_STANDBY };
enum load_balance { LB_LEAST_CONN, LB_ROUND_ROBIN, LB_RANDOM };
enum log_format { LOGFMT_TEXT, LOGFMT_JSON };
enum tls_mode { TLS_DISABLE, TLS_ALLOW, TLS_PREFER, TLS_REQUIRE, TLS_VERIFY_CA, TLS_VERIFY_FULL };

/*
 * Every [pgfleet] setting, defined once: X(name, type, default).
 * Types: STR (char *, never NULL, "" when empty), INT (long long), BOOL,
 * TIME (double seconds), and the enums POOLMODE, AUTHTYPE, LB, LOGFMT, TLSMODE
 * (stored as int holding the enum value above).  The same table produces the
 * struct fields, the parser, SHOW CONFIG and PGFLEET_<NAME> overrides.
 */
#define CONFIG_SETTINGS(X)                                                                         \
	X(listen_addr, STR, "0.0.0.0")                                                             \
	X(listen_port, INT, "6432")                                                                \
	X(unix_socket_dir, STR, "")                                                                \
	X(max_client_conn, INT, "1000")                                                            \
	X(so_reuseport, BOOL, "0")                                                                 \
	X(workers, INT, "1")                                                                       \
	X(io_uring, BOOL, "1")                                                                     \
	X(pool_mode, POOLMODE, "transaction")                                                      \
	X(default_pool_size, INT, "20")                                                            \
	X(min_pool_size, INT, "0")                                                                 \
	X(reserve_pool_size, INT, "0")                                                             \
	X(max_db_connections, INT, "0")                                                            \
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
	X(ban_time, TIME, "30")                                                                    \
	X(dns_max_ttl, TIME, "15")                                                                 \
	X(dns_nxdomain_ttl, TIME, "15")                                                            \
	X(dns_servers, STR, "")                                                                    \
	X(auth_type, AUTHTYPE, "scram-sha-256")                                                    \
	X(auth_file, STR, "")                                                                      \
	X(auth_query, STR, "SELECT usename, passwd FROM pg_shadow WHERE usename=$1")              \
	X(auth_user, STR, "")                                                                      \
	X(admin_users, STR, "")                                                                    \
	X(stats_users, STR, "")                                                                    \
	X(client_tls_sslmode, TLSMODE, "disable")                                                  \
	X(client_tls_cert_file, STR, "")                                                           \
	X(client_tls_key_file, STR, "")                                                            \
	X(client_tls_ca_file, STR, "")                                                             \
	X(server_tls_sslmode, TLSMODE, "prefer")                                                   \
	X(server_tls_ca_file, STR, "")                                                             \
	X(http_listen, STR, "0.0.0.0:9930")                                                        \
	X(log_format, LOGFMT, "text")                                                              \
	X(log_connections, BOOL, "1")                                                              \
	X(log_disconnections, BOOL, "1")                                                           \
	X(stats_period, TIME, "60")                                                                \
	X(shutdown_timeout, TIME, "30")                                                            \
	/* Per-client memory (issue 15 item 6): named statements, and what pgfleet \
	 * queues for a client that does not read (back-pressure mark). */        \
	X(max_client_prepared_statements, INT, "2000")                                             \
	X(max_client_prepared_bytes, INT, "8388608")                                               \
	X(max_client_output_buffer, INT, "4194304")                                                \
	X(max_pipelined_requests, INT, "1048576")                                                  \
	/* issue 15: databases a "*" entry creates (database.c) */                                 \
	X(max_auto_databases, INT, "100")                                                          \
	X(autodb_idle_timeout, TIME, "3600")

#define CFG_CTYPE_STR char *
#define CFG_CTYPE_INT long long
#define CFG_CTYPE_BOOL bool
#define CFG_CTYPE_TIME double
#define CFG_CTYPE_POOLMODE int
#define CFG_CTYPE_AUTHTYPE int
#define CFG_CTYPE_LB int
#define CFG_CTYPE_LOGFMT int
#define CFG_CTYPE_TLSMODE int

/* One [databases] entry.  Optional values are NULL / -1 when not given. */
struct db_config {
	char *name;         /* "*" is the fallback for any other name */
	char *host;         /* as written: DNS name, address, comma list, or socket dir */
	int port;           /* default 5432 */
	char *dbname;       /* NULL: the client's database name */
	char *user;         /* NULL: the client's user */
	char *password;     /* NULL: the user's password from auth_file / environment */
	int pool_size;      /* -1: default_pool_size */
	int pool_mode;      /* -1: the global pool_mode */
	int tsa;            /* enum tsa, default TSA_ANY */
	double max_replica_lag; /* < 0: the global max_replica_lag */
	char *file;         /* where it was defined, for messages */
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
	char *path; /* the main config file, NULL when configured from the environment */
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
/* Is `user` listed in the comma/space separated list `list` (admin_users, stats_users)? */
bool config_list_has(const char *list, const char *user);

/* Settings by index, for SHOW CONFIG and SET: name, current value as text, default. */
size_t config_setting_count(void);
const char *config_setting_name(size_t i);
const char *config_setting_default(size_t i);
void config_setting_value(const struct config *cfg, size_t i, char *buf, size_t len);
/* SET key = value at run time: validates like the loader; false with `err` filled. */
bool config_set(struct config *cfg, const char *key, const char *value, char *err, size_t errlen)
	__attribute__((warn_unused_result));

/* Names for enum values ("transaction", "scram-sha-256", ...). */
const char *config_pool_mode_name(int mode);
const char *config_tsa_name(int tsa);

#endif
