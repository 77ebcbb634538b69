/*
 * authquery.h: auth_user / auth_query / auth_dbname, as PgBouncer has them.
 * A client whose user is not in auth_file is checked against the secret
 * the server itself holds for it: pgfleet logs in as auth_user (its
 * password from auth_file) to auth_dbname (default: the client's database)
 * and runs auth_query with the user name bound to $1, on the database's
 * primary (else any replica that answers).
 *
 * Lookups never block a loop: each runs on a detached helper thread with
 * libpq (login and query, bounded by auth_query_timeout), at most
 * auth_query_max_lookups in the whole process; the loop hears of the
 * answer through a pipe.  Clients asking for the same (database, user) on
 * one worker wait for the same lookup.  Answers (the secret, or "no such
 * user") are cached process-wide for auth_query_cache_ttl, at most
 * auth_query_cache_size entries (oldest forgotten first); server logins use
 * the last answer for their user whatever its age.
 *
 * Must not: log a secret or the query text; let a waiting client's close
 * leave a dangling waiter (authquery_cancel); tell a client whether a user
 * exists (NOT_FOUND is answered like a wrong password by the caller).
 */
#ifndef PGFLEET_AUTHQUERY_H
#define PGFLEET_AUTHQUERY_H

#include <stdbool.h>
#include <stddef.h>

#include "config.h"
#include "list.h"

/* Room for any secret auth_query may answer with (a longer one is an error). */
#define AUTHQUERY_SECRET_MAX 512

enum authquery_status {
	AUTHQUERY_FOUND,     /* secret filled */
	AUTHQUERY_NOT_FOUND, /* no row, or a NULL password */
	AUTHQUERY_FAILED,    /* sqlstate and msg filled */
	AUTHQUERY_PENDING,   /* the waiter's done runs later, on this loop */
};

struct authquery_wait;
typedef void (*authquery_done_fn)(struct authquery_wait *w, enum authquery_status st,
				  const char *secret, const char *sqlstate, const char *msg);

/* Embedded in whoever waits (a client); lookup NULL when not waiting. */
struct authquery_wait {
	struct list node;
	struct authquery_lookup *lookup;
	authquery_done_fn done;
};

/* Does auth_user (the entry's, else the global one) apply to this entry? */
bool authquery_enabled(const struct db_config *dbc);
/*
 * The secret for `user` of the client's database `dbname` (its entry dbc,
 * or "*"'s).  A fresh cached answer, or an immediate failure, is returned
 * at once (secret / sqlstate+msg filled); otherwise PENDING and w->done
 * runs later with the answer, never from inside this call.
 */
enum authquery_status authquery_lookup(const char *dbname, const struct db_config *dbc,
				       const char *user, struct authquery_wait *w, char *secret,
				       size_t secretlen, const char **sqlstate, char *msg,
				       size_t msglen);
/* w stops waiting (its client is closed); safe when it is not waiting. */
void authquery_cancel(struct authquery_wait *w);
/* The last secret auth_query gave for (dbname, user), any age: what server
 * logins of that user use.  False if none is cached. */
bool authquery_secret(const char *dbname, const char *user, char *out, size_t outlen);
/* This worker's lookups end (their threads finish on their own). */
void authquery_shutdown(void);
/* The process-wide cache, wiped (at exit, after the workers). */
void authquery_cache_clear(void);

#endif
