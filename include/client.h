/*
 * client.h: the client side's state machine: startup, authentication, then
 * forwarding queries to the linked server connection.
 */
#ifndef PGFLEET_CLIENT_H
#define PGFLEET_CLIENT_H

#include <netinet/in.h>
#include <stdbool.h>
#include <stdint.h>
#include <sys/socket.h>

#include "authquery.h"
#include "conn.h"
#include "database.h"
#include "params.h"
#include "sqlroute.h"

struct pool_group;
struct server;
struct scram_server;
struct client_stmts;
struct admin_session;

enum client_state {
	CLIENT_LOGIN,    /* fleet.login_clients: startup and authentication */
	CLIENT_WAITING,  /* group->waiting: needs a server connection */
	CLIENT_ACTIVE,   /* group->active: logged in, linked or between transactions */
	CLIENT_JUSTFREE, /* fleet.justfree_clients: closed, freed next loop pass [transient] */
};

enum client_login_step {
	LOGIN_STARTUP,     /* waiting for StartupMessage / SSLRequest */
	LOGIN_TLS_HANDSHAKE, /* answered SSLRequest with 'S': TLS handshake, then LOGIN_STARTUP */
	LOGIN_PASSWORD,    /* sent AuthenticationCleartextPassword */
	LOGIN_MD5,         /* sent AuthenticationMD5Password */
	LOGIN_SASL_INIT,   /* sent AuthenticationSASL */
	LOGIN_SASL_FINAL,  /* sent AuthenticationSASLContinue */
	LOGIN_WELCOME,     /* authenticated, waiting for the server parameters */
	LOGIN_AUTH_QUERY,  /* waiting for auth_query's answer (authquery.c), before any auth request */
};

struct client {
	struct list node; /* the list of its state */
	struct conn io;
	enum client_state state;
	enum client_login_step login_step;
	struct database *db;
	struct pool_group *group;
	struct server *link;
	/* Interned (intern.h), "" until the StartupMessage names them. */
	const char *user;
	const char *dbname;
	/* References to interned, read-only sets (params.h), never NULL:
	 * params_startup, what its StartupMessage asked for (fixed at login:
	 * what RESET returns to); params, what its session should have now
	 * (change it with param_set_store()/param_set_reset()). */
	const struct param_set *params_startup;
	const struct param_set *params;
	uint32_t cancel_pid, cancel_key;
	uint64_t id;             /* fleet_next_id(): SHOW CLIENTS, KILL_CLIENT */
	struct list cancel_node; /* cancel.c's table of clients by (cancel_pid, cancel_key) */
	struct scram_server *scram; /* during login only */
	/* auth_query (a user not in auth_file): the secret the server holds,
	 * during login only, and the lookup it waits for. */
	char *aq_secret;
	struct user_entry aq_user;
	struct authquery_wait aq_wait;
	struct client_stmts *stmts; /* named prepared statements, by the client's names */
	struct admin_session *admin; /* NULL: not an admin console client (admin.c) */
	uint8_t md5_salt[4];
	union {
		struct sockaddr sa;
		struct sockaddr_in in;
		struct sockaddr_in6 in6;
	} addr; /* AF_UNIX: the family only (the peer has no name) */
	char addr_str[64];
	double connect_time, wait_start;
	double request_time; /* the last bytes from the client */
	double idle_since;   /* timeouts: its last bytes, or the end of its last transaction */
	bool welcome_pending; /* logged in, waits for one server to learn parameters */
	bool params_checking; /* ... and for its startup settings to be tried */
	bool skip_to_sync;    /* after an error pgfleet raised: drop messages up to Sync */
	uint8_t encryption_requests; /* SSLRequest/GSSENCRequest answered 'N' */
	uint32_t discard_remain; /* bytes of a dropped message still to come */
	bool over_limit; /* accepted past max_client_conn: only to be told so */
	/* Session state (SQLI_SESSION_FLAGS) this client was already told
	 * about, or that was logged for it: once each per session. */
	uint16_t state_told;
	/* Transaction and statement pooling: a statement of this turn may have
	 * changed a session setting (SET, RESET, set_config(): sqlinspect's
	 * SQLI_SET), so the settings are read back from the server when the
	 * turn ends (server.c) and become the client's current set. */
	bool params_changed;
	/* Transaction and statement pooling: the client made session state
	 * that cannot move (transaction_session_state = pin), so it keeps its
	 * server connection until it leaves, as in session pooling. */
	bool pinned;
	/* The custom (dotted) parameter names this client ever set, which
	 * PostgreSQL lists nowhere: "a.b\0c.d\0", custom_names_len bytes
	 * (malloc'd; at most CLIENT_CUSTOM_NAMES_MAX). */
	char *custom_names;
	uint32_t custom_names_len;
	/* The last Parse text in which sqlinspect found nothing, and what it
	 * watched for (client.c): drivers send the same unnamed Parse for
	 * every execution, which is then compared, not looked at again.
	 * NULL until the first; one buffer of CLIENT_CLEAN_PARSE_MAX bytes. */
	char *clean_parse;
	uint32_t clean_parse_len;
	/* A RESET over the extended protocol (see on_execute): the startup
	 * values it resets, to be given back, for the unnamed statement, then
	 * for the unnamed portal bound from it (references; NULL when the
	 * statement is no such RESET). */
	const struct param_set *reset_stmt, *reset_portal;
	uint8_t clean_parse_watch;
	/* target_session_attrs = auto (issue 19): what the transaction under
	 * way needs of a replica (set as it starts, kept while it waits), the
	 * session's SET pgfleet.route (enum sqlroute_pref), whether this link
	 * serves a classified read, whether a Query or Sync went out on it
	 * since (the next statement may start a new transaction), and whether
	 * a statement that is no read waits for the read's replies. */
	struct route_need need;
	uint8_t route_pref;
	bool xact_read;
	bool route_boundary;
	bool route_hold;
	bool route_seen; /* the Query at hand was classified already */
	/* SET/SHOW pgfleet.route over the extended protocol (route_extended):
	 * the unnamed statement is one (route_ext_answer: what it says); the
	 * unnamed portal is bound from one (route_portal_answer, its results
	 * in binary when route_portal_binary). */
	uint8_t route_ext;
	bool route_portal;
	bool route_portal_binary;
	bool route_named; /* it prepared one under a name (route_parse_named) */
	struct sqlroute_answer route_ext_answer;
	struct sqlroute_answer route_portal_answer;
	/* Read-your-writes: the primary's WAL position after this client's
	 * last transaction that may have written; its reads need a standby
	 * that has replayed it (0: none). */
	uint64_t ryw_lsn;
	/* The transaction under way may write: its WAL position is asked for
	 * when it ends (server.c turn_end). */
	bool lsn_wanted;
	/* Its turn is over but pgfleet's query after it (learn_send, the WAL
	 * position) still runs on the link: a new message waits (route_hold). */
	bool turn_finishing;
	/* A read linked to a standby whose replay position is not known to
	 * reach ryw_lsn: this position is asked for first (probe_sent), and
	 * the read goes on there or, when it is behind, elsewhere (no_probe:
	 * then it is routed by what is known, without asking again). */
	uint64_t ryw_probe;
	bool probe_sent, no_probe;
	double probe_start; /* when the first probe of this read went out */
	/* Reads that survive (issue 19 items 1 and 3; client.c, "read
	 * retries"): a copy of the messages of the classified read this link
	 * serves, kept while nothing of its reply has reached the client (the
	 * server's replies are held back meanwhile: server.c); NULL when the
	 * link cannot be re-run.  retries: re-runs of this transaction so far;
	 * retry_seen: route_seen as the transaction started; retry_sent: its
	 * last message (Query or Sync) went out; retry_refused: the server
	 * answered 25006 (a write on a standby). */
	struct iobuf *retry_msgs;
	uint8_t retries;
	bool retry_seen;
	bool retry_sent;
	bool retry_refused;
};

#define CLIENT_CLEAN_PARSE_MAX 512

#define CLIENT_CUSTOM_NAMES_MAX 4096

/*
 * A connection past max_client_conn is accepted anyway, into one of
 * CLIENT_REFUSE_SLOTS slots, so that it can be told 53300 after its startup
 * packet as PostgreSQL does (libpq shows nothing but "error response during
 * SSL exchange" for an error sent before it: it no longer trusts one), and
 * so that a CancelRequest still works at the limit.  It has
 * CLIENT_REFUSE_TIMEOUT seconds to send its startup packet.  Past the slots,
 * or out of descriptors, the error is sent at once and the socket closed.
 */
#define CLIENT_REFUSE_SLOTS 64
#define CLIENT_REFUSE_TIMEOUT 5.0
#define CLIENT_REFUSE_MESSAGE "no more connections allowed (max_client_conn)"

/* A new socket; over_limit: accepted past max_client_conn, to be refused. */
void client_accept(int fd, const struct sockaddr *sa, socklen_t salen, bool over_limit);
void client_set_state(struct client *c, enum client_state st);
/* The one teardown path: sends an ErrorResponse when sqlstate is given, logs
 * one line with the reason, and frees at the next loop pass. */
void client_close(struct client *c, const char *sqlstate, const char *fmt, ...)
	__attribute__((format(printf, 3, 4)));
/*
 * Read retries.  While c->retry_msgs is set, the linked server's replies
 * are held back (server.c parses them but forwards none) until one commits
 * the read (client_retry_holds says which may wait); then
 * client_retry_forget drops the copy and forwarding goes on as usual.
 * client_read_retry re-runs the read, c already unlinked from `from`
 * (released after its ReadyForQuery, or closed): lost, its connection
 * broke (the read goes to another replica, not `from`); else `from`
 * refused it as a write, 25006 (it goes to the primary).
 * Must not: be called with any byte of the reply forwarded.
 */
void client_retry_forget(struct client *c);
/* May this reply wait, unforwarded, while the read is retryable?  Sets
 * retry_refused on a 25006 error. */
bool client_retry_holds(struct client *c, uint8_t type, const uint8_t *body, uint32_t len);
/* A broken server connection of c's: is the read worth re-running? */
bool client_retry_lost_ok(const struct client *c, const struct replica *from);
void client_read_retry(struct client *c, const struct replica *from, bool lost);
/* The pool linked a server to c (c was waiting): resume its messages. */
void client_linked(struct client *c);
/* The login check of c's startup settings ended: sqlstate NULL when the
 * server took them, else the server's error (c is refused with it). */
void client_params_checked(struct client *c, const char *sqlstate, const char *message);
/* The server linked to c finished the transaction and went back. */
void client_unlinked(struct client *c);
/* The server side has bytes for c: resume forwarding when c can take them. */
void client_resume(struct client *c);
void client_free_list(void);
void client_janitor(double now);

/*
 * The admin console (a front end, above this layer) takes the clients that
 * name one of its databases: client.c asks it through these, registered
 * once at start-up (wiring.c).  Without a console no name is the console's.
 * login_start: true when the client is to be asked for its password.
 * login_trusted: true when the console admits the client without one
 * (PgBouncer's rule for the user "pgbouncer" on the Unix socket).
 * gone: a console client closes.
 */
struct client_console {
	bool (*is_console)(const char *dbname);
	bool (*login_start)(struct client *c);
	bool (*login_trusted)(struct client *c);
	void (*login_done)(struct client *c);
	void (*process)(struct client *c);
	void (*gone)(struct client *c);
};
void client_set_console(const struct client_console *console);
/* A login refused at max_client_conn: counted, and logged now and then,
 * by whoever registered (the listener), not a line each. */
void client_on_refusal(void (*fn)(const char *why));

/* The pool mode c's turns follow: its database's, or session once c is
 * pinned to its server connection. */
static inline int client_pool_mode(const struct client *c)
{
	return c->pinned ? POOL_SESSION : c->db->pool_mode;
}

#endif
