/*
 * server.h: the server side's state machine: connect, log in with whatever
 * the server asks (SCRAM, md5, cleartext), then carry one client's
 * transactions and go back to the pool.
 */
#ifndef PGFLEET_SERVER_H
#define PGFLEET_SERVER_H

#include <stdbool.h>
#include <stdint.h>

#include "conn.h"
#include "list.h"
#include "params.h"

struct pool;
struct client;
struct scram_client;
struct pstmt;
struct server_stmts;

enum server_state {
	SERVER_LOGIN,    /* pool->login: connecting and logging in */
	SERVER_IDLE,     /* pool->idle: ready for a client */
	SERVER_ACTIVE,   /* pool->active: linked to a client */
	SERVER_JUSTFREE, /* fleet.justfree_servers: closed, freed next pass [transient] */
};

/* What a request sent to the server expects back, in order (the protocol
 * answers requests in the order they were sent). */
enum req_kind {
	REQ_QUERY,    /* Query or FunctionCall: ends at ReadyForQuery */
	REQ_SYNC,     /* ends at ReadyForQuery */
	REQ_PARSE,    /* ParseComplete */
	REQ_BIND,     /* BindComplete */
	REQ_DESCRIBE, /* RowDescription or NoData */
	REQ_EXECUTE,  /* CommandComplete, EmptyQueryResponse or PortalSuspended */
	REQ_CLOSE,    /* CloseComplete */
	REQ_DEALLOC,  /* a DEALLOCATE pgfleet answers itself */
	REQ_ERROR,    /* an ErrorResponse pgfleet answers itself (then skip to Sync) */
	REQ_NOTICE,   /* a NoticeResponse pgfleet sends the client, in turn */
	REQ_LEARN,    /* a hidden simple Query of SET tracking: reading the
			 session's settings back, or giving back startup values
			 after a RESET; the client's turn may end at its
			 ReadyForQuery */
	REQ_LSN,      /* a hidden simple Query of read-your-writes: the primary's
			 WAL position after a write, or a standby's replay
			 position before a read that needs one; ends at
			 ReadyForQuery */
	REQ_ROUTE,    /* SET/RESET pgfleet.route, which pgfleet answers itself
			 (note: the tag, or with sqlstate the error), then
			 ReadyForQuery */
};

enum req_action {
	REQ_PASS, /* the client asked: its replies go to the client */
	REQ_HIDE, /* pgfleet asked (SET, reset, hidden Parse/Close): replies consumed */
	REQ_FAKE, /* not sent: pgfleet answers the client itself, in turn */
};

struct request {
	/* PARSE: the statement it prepares; BIND, DESCRIBE: the statement it
	 * names under pgfleet's name (a reference) */
	struct pstmt *ps;
	char *note;       /* ERROR: the message (owned) */
	uint8_t kind, action;
	char sqlstate[6]; /* ERROR: its SQLSTATE */
};

#define SERVER_QUEUE_MIN 32
/* A ring grown past this is freed when the connection goes back to the pool:
 * one client's long pipeline does not stay with the connection. */
#define SERVER_QUEUE_KEEP 1024

enum server_login_step {
	SLOGIN_CONNECTING, /* TCP connect in progress */
	SLOGIN_SSL_REQUEST,   /* SSLRequest sent, waiting for 'S' or 'N' */
	SLOGIN_TLS_HANDSHAKE, /* 'S': TLS handshake, then the StartupMessage */
	SLOGIN_STARTUP,    /* StartupMessage sent, answering auth requests */
	SLOGIN_PARAMS,     /* authenticated, collecting ParameterStatus until ReadyForQuery */
};

struct server {
	struct list node; /* the list of its state */
	struct conn io;
	enum server_state state;
	enum server_login_step login_step;
	struct pool *pool;
	struct client *link;
	uint32_t backend_pid, backend_key;
	uint64_t id;      /* fleet_next_id(): SHOW SERVERS */
	int expect_rfq;   /* ReadyForQuery messages owed to the linked client */
	/* Requests sent (or answered by pgfleet) whose replies are still to come. */
	struct request *queue; /* a ring of q_cap entries, grown on demand */
	uint32_t q_cap, q_head, q_len; /* q_cap: a power of two */
	uint32_t q_fakes;              /* REQ_FAKE requests in the queue */
	bool overflow;
	struct server_stmts *stmts; /* prepared statements this connection has */
	/* SQL ran that may have changed prepared statements unseen (a DO block,
	 * CALL, ...): before another client gets the connection, every
	 * statement on it is dropped (a hidden DEALLOCATE ALL). */
	bool stmts_untrusted;
	char xact_status; /* from the last ReadyForQuery: 'I', 'T' or 'E' */
	bool release_pending; /* back to the pool once the client has every byte */
	bool close_needed;    /* close instead of going back to the pool */
	bool pinned;          /* a pinned client's session: reset before reuse, or closed */
	bool lost;            /* closing because the connection broke (server_lost) */
	bool params_check;    /* the hidden SET is a login's check (server_check_params) */
	bool reset_check;     /* a setting went back to its default: a RESET? (ask_reset) */
	bool reset_asking;    /* ... asked: its ParameterStatus goes to the client */
	char check_sqlstate[6];
	char check_message[256]; /* the server's error to it, "" for none */
	bool login_failed_by_user; /* the server refused the user, not the connection */
	/* What the server sent during login, against server_login_max_bytes and
	 * server_login_max_messages. */
	uint32_t login_bytes, login_msgs;
	/* Cancels sent to this backend whose connection the server has not
	 * closed yet: PostgreSQL may signal the backend a moment after the
	 * query ended, so until then no other client gets it (cancel.c). */
	uint16_t cancels;
	bool ready_after_cancel; /* released meanwhile: back to the pool when they end */
	/* Interned sets (params.h), NULL until login: what pgfleet believes
	 * differs from this connection's defaults (its known set: a linked
	 * client whose current set is this very set needs no SET), and those
	 * defaults, the ParameterStatus values of its login. */
	const struct param_set *params;
	const struct param_set *params_login;
	/* REQ_LEARN under way: the settings read so far (a reference), and
	 * whether the query failed. */
	const struct param_set *learning;
	bool learn_failed;
	struct wbuf login_welcome; /* its login's ParameterStatus messages, until login_complete */
	uint32_t welcome_hash;     /* ... hashed (pool's welcome_hash) */
	unsigned defaults_gen;     /* its database's defaults_gen when it started to log in */
	struct scram_client *scram;
	double connect_time, request_time, last_used;
	uint64_t stats_in_mark, stats_out_mark; /* io byte counts when last linked */
	/* Timeouts: the query now running started at the later of query_start
	 * (a request reached an idle connection) and ready_time (the last
	 * ReadyForQuery to the client: the next pipelined query starts then);
	 * timeout_cancel is when query_timeout sent a cancel for it. */
	double query_start, ready_time, timeout_cancel;
};

/* Opens a new connection for the pool (non-blocking); false when there is
 * no room (pool_reserve).  _warm: a min_pool_size one, only up to it. */
bool server_launch(struct pool *p);
bool server_launch_warm(struct pool *p);
void server_set_state(struct server *s, enum server_state st);
/* The one teardown path for a server connection. */
void server_close(struct server *s, const char *reason);
/* server_close for a connection that broke (EOF, a socket error): a read
 * linked to it that nothing was answered of yet is re-run elsewhere
 * (client_read_retry) instead of failing. */
void server_lost(struct server *s, const char *reason);
/* Called by the client side after it queued bytes for the server. */
void server_resume(struct server *s);
/* Requests: recording one in order.  A client may pipeline
 * max_pipelined_requests requests before one Sync (PostgreSQL holds its
 * replies until the Sync, so the queue must hold them all).  Past it the
 * request is not recorded and `overflow` is set: the client is then closed
 * (54000) before the message is forwarded.  So the queue costs at most
 * about max_pipelined_requests x sizeof(struct request) (24 MiB at the
 * default) per server connection, and a ring grown past SERVER_QUEUE_KEEP
 * is freed when the connection is released. */
void server_queue_push(struct server *s, enum req_kind kind, enum req_action action,
		       struct pstmt *ps);
/* The last request queued (to adjust what it expects). */
struct request *server_queue_last(struct server *s);
/* Makes sure the statement is prepared on s before a Bind/Describe uses it:
 * queues a hidden Parse (and a hidden Close of an evicted one) in s->io.out.
 * Returns its server-side name (valid until s's statements change). */
const char *server_ensure_prepared(struct server *s, struct pstmt *ps);
/* The server lost every prepared statement (DISCARD ALL, DEALLOCATE ALL). */
void server_forget_statements(struct server *s);
/* The statements on s may have been changed unseen: none is used again, and
 * all are dropped before the connection serves another client. */
void server_distrust_statements(struct server *s);
/* Answers the client itself with an ErrorResponse in turn (the server gets
 * nothing); the client's messages up to Sync are then skipped. */
/* Read-your-writes (target_session_attrs = auto): asks a standby linked to
 * c for its replay position before c's read goes out (c->ryw_probe); its
 * answer lets the read go on, or sends it elsewhere (server.c); `again`:
 * a millisecond after the last one.  False when s was closed. */
bool server_probe_replay(struct server *s, bool again);
/* The mark of a faked reply to SHOW pgfleet.route: its text is the value,
 * answered as one row of one text column. */
#define REQ_MARK_SHOW "V"
/* pgfleet's own session setting (client.c route_apply), SHOW's column. */
#define ROUTE_SETTING "pgfleet.route"
/* SET/RESET/SHOW pgfleet.route answered in turn: `text` is the command tag,
 * with a sqlstate the error's message, with REQ_MARK_SHOW the value;
 * ReadyForQuery follows. */
void server_queue_route(struct server *s, const char *sqlstate, const char *text);
/* A reply pgfleet gives in turn for a message it kept from the server:
 * REQ_PARSE, REQ_BIND, REQ_CLOSE (their Complete), REQ_DESCRIBE (NoData;
 * mark "S": of a statement, ParameterDescription first; "SV" the same of
 * SHOW pgfleet.route, its column in place of NoData; "V"/"VB" of its
 * portal, results in text/binary), REQ_EXECUTE (CommandComplete with tag
 * `text`; with REQ_MARK_SHOW the row of value `text`, then SHOW's tag). */
void server_queue_fake(struct server *s, enum req_kind kind, const char *mark, const char *text);
void server_queue_error(struct server *s, const char *sqlstate, const char *msg);
/* Tells the client msg in a NoticeResponse (NOTICE, sqlstate) once every
 * reply to what it sent before is out: it changes nothing else. */
void server_queue_notice(struct server *s, const char *sqlstate, const char *msg);
/* Answers the requests pgfleet fakes once all replies before them are out. */
void server_drain_fakes(struct server *s);
/* Bind a client to an idle server: re-apply the client's parameters. */
void server_link(struct server *s, struct client *c);
/* Sends the hidden SET/RESET that gives the linked server the client's
 * current settings (c->params), ahead of the client's next message, and
 * makes its known set the client's; false when nothing differed.  Must
 * not: be called while a client message is half forwarded (the statement
 * would land inside it).
 *
 * Contract for whoever learns a change of a client's session (a SET it
 * ran, a RESET): update c->params and, for what the linked server now
 * has, s->params; when the two then differ, the server gets the hidden
 * SET at the client's next ReadyForQuery that leaves the link in place
 * (session mode, inside a transaction), or at its next link. */
bool server_sync_params(struct server *s);
/* Login: the client's startup settings tried on the linked server, at
 * once (its ReadyForQuery comes to client_params_checked); false when
 * nothing needed a SET. */
bool server_check_params(struct server *s);
/* Queues, right after the client's last message, a hidden `sql` (a SET of
 * the client's startup values after its RESET): its ParameterStatus replies
 * reach the client. */
void server_queue_settings(struct server *s, const char *sql);
/* Back to the pool after a finished transaction (or a welcome). */
void server_release(struct server *s);
/* One of s's cancel connections ended: the last one returns a server
 * released meanwhile to the pool. */
void server_cancel_done(struct server *s);
/* The client went away while linked: reset or close the server. */
void server_unlink_client(struct server *s);
void server_free_list(void);
void server_janitor(double now);

#endif
