/*
 * pool.h: server connections held per (database, user, replica), and the
 * queue of clients waiting for one.
 *
 * A pool_group is (database, user): its clients and its FIFO wait queue, and
 * one pool per replica.  A pool is (database, user, replica): its server
 * connections on the idle, active and login lists.  pool.c holds; router.c
 * decides which replica; server.c and client.c drive the sockets.
 */
#ifndef PGFLEET_POOL_H
#define PGFLEET_POOL_H

#include <stdbool.h>

#include "database.h"
#include "iobuf.h"
#include "list.h"
#include "scram.h"

struct client;
struct server;

struct pool_group {
	struct list node; /* database->groups */
	struct database *db;
	char user[NAME_MAX_LEN];
	struct statlist waiting; /* CLIENT_WAITING, FIFO */
	struct statlist active;  /* CLIENT_ACTIVE */
	struct list pools;       /* struct pool, one per replica */
	struct wbuf welcome;     /* ParameterStatus messages a new client gets */
	bool have_welcome;
	struct server *welcome_from; /* the login collecting the welcome */
	unsigned rr;             /* round_robin position */
	int connecting;          /* servers in login across the group's pools */
};

struct pool {
	struct list group_node;   /* group->pools */
	struct list replica_node; /* replica->pools */
	struct pool_group *group;
	struct replica *replica;
	struct statlist idle;   /* SERVER_IDLE */
	struct statlist active; /* SERVER_ACTIVE */
	struct statlist login;  /* SERVER_LOGIN */
	/* SCRAM keys for this replica's salt: PBKDF2 once, not per login. */
	bool have_keys;
	struct scram_keys keys;
	uint8_t keys_salt[SCRAM_MAX_SALT];
	size_t keys_salt_len;
	int keys_iterations;
};

struct pool_group *pool_group_get(struct database *db, const char *user);
void pool_add_replica(struct replica *r);
void pool_remove_replica(struct replica *r);
static inline int pool_total(const struct pool *p)
{
	return p->idle.count + p->active.count + p->login.count;
}

/* Gives c a server connection now (true), or queues it and starts
 * connections where there is room (false: c is CLIENT_WAITING). */
bool pool_checkout(struct client *c);
/* A server finished its work for a client (or its login): hand it to the
 * first waiting client, or put it on the idle list. */
void pool_server_ready(struct server *s);
/* Serve waiting clients: hand idle servers, start new connections. */
void pool_kick(struct pool_group *g);
void pool_kick_all(void);
/* Timeouts: query_wait_timeout for waiting clients, idle/lifetime for servers. */
void pool_janitor(double now);
void pool_free_group(struct pool_group *g);

#endif
