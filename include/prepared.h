/*
 * prepared.h: protocol-level named prepared statements in transaction mode.
 *
 * A client's Parse of a named statement is remembered by the client under its
 * own name, and points at a shared statement: one per distinct (query text,
 * parameter types).  Each server connection knows which shared statements
 * it has prepared (at most max_prepared_statements, least recently used
 * evicted) and under which name: "pgf_" and 16 random hex digits, drawn
 * afresh each time a statement is prepared on a connection, so no client can
 * guess a name from one connection (or pgfleet run) to the next.  A Bind or
 * Describe on a server that lacks the statement first gets a hidden Parse.
 *
 * prepared.c keeps these maps; it never reads sockets.  The rewriting of
 * messages and the response bookkeeping live in client.c and server.c.
 */
#ifndef PGFLEET_PREPARED_H
#define PGFLEET_PREPARED_H

#include <stdatomic.h>
#include <stdbool.h>
#include <stdint.h>

#include "iobuf.h"

/* A distinct (query, parameter types), shared by every client using it. */
struct pstmt {
	struct pstmt *next; /* hash chain */
	uint64_t id;
	uint32_t hash;
	uint32_t refs;      /* client statements and server entries using it */
	uint32_t body_len;
	bool drops_all;     /* DISCARD ALL / DEALLOCATE ALL: running it drops every statement */
	bool unsure;        /* DO, CALL, ...: running it may change statements unseen */
	bool sets;          /* SET, RESET, set_config(): running it may change settings */
	bool resets_all;    /* RESET ALL: running it resets pgfleet.route too */
	/* target_session_attrs = auto: the text's enum sqlroute_class plus 1,
	 * once a Bind needed it (0: not classified yet).  Shared by every
	 * worker: written and read relaxed; every writer writes the same. */
	_Atomic uint8_t route;
	uint8_t body[];     /* Parse body after the name: query\0, int16 n, n x int32 */
};

/* The statements one client prepared, by the client's names. */
struct client_stmts;
/* The shared statements one server connection has prepared. */
struct server_stmts;

/* Registers the client's Parse of `name` (body = the rest of the Parse
 * message after the name) and returns its shared statement. */
struct pstmt *prepared_client_parse(struct client_stmts **cs, const char *name,
				    const uint8_t *body, uint32_t body_len);
/* The shared statement the client knows as `name`, or NULL. */
struct pstmt *prepared_client_lookup(struct client_stmts *cs, const char *name);
/* Close / DEALLOCATE of one name; false when the client had no such name. */
bool prepared_client_close(struct client_stmts *cs, const char *name);
/* DEALLOCATE ALL / DISCARD ALL, and the client's end. */
void prepared_client_clear(struct client_stmts *cs);
void prepared_client_free(struct client_stmts **cs);
uint32_t prepared_client_count(const struct client_stmts *cs);
/* What one more statement would cost the client, and what its statements
 * cost now, in bytes: the name, the body (counted in full even when shared:
 * the client chose it) and the bookkeeping, so that a byte budget bounds the
 * client's whole footprint whatever the count limit is
 * (max_client_prepared_bytes). */
uint64_t prepared_client_cost(const char *name, uint32_t body_len);
uint64_t prepared_client_bytes(const struct client_stmts *cs);

/* "pgf_" + 16 hex digits + NUL */
#define PREPARED_NAME_LEN 21

/* The name ps has on the server, or NULL when the server lacks it.  Marks it
 * most recently used.  Valid until the server's set changes. */
const char *prepared_server_name(struct server_stmts *ss, const struct pstmt *ps);
/* Records ps as prepared on the server under a fresh random name, returned
 * (valid until the set changes).  When that exceeds `max`, the least
 * recently used statement leaves the set and its name is copied to
 * `evicted` (the caller must Close it on the server); else evicted[0] = 0. */
const char *prepared_server_add(struct server_stmts **ss, struct pstmt *ps, uint32_t max,
				char evicted[PREPARED_NAME_LEN]);
/* Forgets ps on the server (its Parse failed or was skipped). */
void prepared_server_forget(struct server_stmts *ss, const struct pstmt *ps);
/* The server dropped everything (DISCARD ALL, DEALLOCATE ALL) or closed. */
void prepared_server_clear(struct server_stmts *ss);
void prepared_server_free(struct server_stmts **ss);
uint32_t prepared_server_count(const struct server_stmts *ss);

void prepared_ref(struct pstmt *ps);
void prepared_release(struct pstmt *ps);

/* Appends a Parse message for ps under the server-side name. */
void prepared_put_parse(struct wbuf *w, const struct pstmt *ps, const char *name);
/* Appends a Close (statement) message for a server-side name. */
void prepared_put_close(struct wbuf *w, const char *name);
/* Shared statements alive, for SHOW MEM / tests. */
uint32_t prepared_shared_count(void);
void prepared_free_all(void);

#endif
