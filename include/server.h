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

enum server_state {
	SERVER_LOGIN,    /* pool->login: connecting and logging in */
	SERVER_IDLE,     /* pool->idle: ready for a client */
	SERVER_ACTIVE,   /* pool->active: linked to a client */
	SERVER_JUSTFREE, /* fleet.justfree_servers: closed, freed next pass [transient] */
};

enum server_login_step {
	SLOGIN_CONNECTING, /* TCP connect in progress */
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
	int expect_rfq;   /* ReadyForQuery messages owed to the linked client */
	int hidden_rfq;   /* ReadyForQuery messages of queries pgfleet sent itself */
	char xact_status; /* from the last ReadyForQuery: 'I', 'T' or 'E' */
	bool release_pending; /* back to the pool once the client has every byte */
	bool close_needed;    /* close instead of going back to the pool */
	bool tail_clean;      /* nothing forwarded since the last Query/Sync */
	bool login_failed_by_user; /* the server refused the user, not the connection */
	struct param_set params;
	struct param_set params_at_login; /* what a reset query returns to */
	struct scram_client *scram;
	double connect_time, request_time, last_used;
};

/* Opens a new connection for the pool (non-blocking). */
bool server_launch(struct pool *p);
void server_set_state(struct server *s, enum server_state st);
/* The one teardown path for a server connection. */
void server_close(struct server *s, const char *reason);
/* Called by the client side after it queued bytes for the server. */
void server_resume(struct server *s);
/* Bind a client to an idle server: re-apply the client's parameters. */
void server_link(struct server *s, struct client *c);
/* Back to the pool after a finished transaction (or a welcome). */
void server_release(struct server *s);
/* The client went away while linked: reset or close the server. */
void server_unlink_client(struct server *s);
void server_free_list(void);
void server_janitor(double now);

#endif
