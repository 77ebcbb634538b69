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

#include <stdatomic.h>
#include <stdbool.h>
#include <stdint.h>

#include "database.h"
#include "iobuf.h"
#include "list.h"
#include "scram.h"

struct client;
struct server;

#define POOL_PARAMS_OK 16

struct pool_group {
	struct list node; /* database->groups */
	struct database *db;
	char user[NAME_MAX_LEN];
	struct statlist waiting; /* CLIENT_WAITING, FIFO */
	struct statlist active;  /* CLIENT_ACTIVE */
	int waits[3];            /* waiting clients by their need's enum route_want */
	struct list pools;       /* struct pool, one per replica */
	struct wbuf welcome;     /* ParameterStatus messages a new client gets: the newest login's */
	bool have_welcome;
	unsigned rr;             /* round_robin position */
	int connecting;          /* servers in login across the group's pools */
	/* Startup sets (param_set_id) a server of this group took without an
	 * error lately: a client with one of them logs in without a check. */
	uint64_t params_ok[POOL_PARAMS_OK];
	unsigned params_ok_next;
	/* The limits this group's server connections count against, process-
	 * wide (every replica, worker and, for the user, database): its
	 * database's (max_db_connections) and its login user's
	 * (max_user_connections).  Counted even when unlimited, so that a
	 * limit SET at run time starts from the truth. */
	struct pool_slot *db_slot;
	struct pool_slot *user_slot;
};

/* workers = N: one per (database, user, replica address) for the whole
 * process, so that pool_size holds across workers.  A worker opens a server
 * connection only after reserving room in total; `wanted` has a bit for
 * each worker whose clients wait for lack of room, and asks the others to
 * give up their idle (and, on release, their reused) connections. */
#define POOL_MAX_WORKERS 64 /* config.c's range for workers */
struct pool_slot {
	struct pool_slot *next; /* the registry, under its lock */
	int refs;               /* pools pointing here, under the lock */
	atomic_int total;       /* server connections, every worker */
	_Atomic uint64_t wanted;
	/* Limit slots (pool_group's db_slot, user_slot): each worker's part
	 * of total, for a fair share while several wait for room. */
	atomic_int by_worker[POOL_MAX_WORKERS];
	char key[3 * NAME_MAX_LEN + 64];
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
	struct pool_slot *slot; /* NULL when workers = 1 */
	/* The newest login's ParameterStatus, hashed: a login whose hash
	 * differs saw other role/database defaults (server.c login_complete). */
	uint32_t welcome_hash;
	unsigned probe_gen; /* database defaults_gen a fresh login was started for */
};

struct pool_group *pool_group_get(struct database *db, const char *user);
void pool_add_replica(struct replica *r);
void pool_remove_replica(struct replica *r);
static inline int pool_total(const struct pool *p)
{
	return p->idle.count + p->active.count + p->login.count;
}
/* May another server connection be opened (pool_size, counted process-wide
 * when workers > 1)? */
/* Server connections of p's (database, user, replica), every worker's. */
static inline int pool_count(const struct pool *p)
{
	return p->slot ? atomic_load_explicit(&p->slot->total, memory_order_relaxed) : pool_total(p);
}
/* The effective per-database values (the entry's, else the global
 * setting's; 0 = no limit / none). */
int pool_db_max_connections(const struct database *db);
int pool_user_max_connections(const struct pool_group *g);
int pool_min_size(const struct database *db);
/*
 * The fleet-wide budget (issue 20): max_db_connections and
 * max_user_connections are limits for every pgfleet instance of the fleet
 * together; each instance holds its share of the live ones (fleet_peers):
 * limit / live, plus one for the first (limit % live) ranks, so the shares
 * add up to the limit exactly.  A lone instance's share is the limit; with
 * fewer connections than instances some shares are 0 (their clients wait).
 * The share caps every connection this instance opens, min_pool_size and
 * reserve_pool_size ones too; when it shrinks, connections above it close
 * once idle or as their transaction ends.  POOL_NO_LIMIT: no limit (0).
 * (SHOW PEERS' "holds", if shown, is each instance's count against its
 * share: pool_db_connections next to pool_db_share.)
 */
#define POOL_NO_LIMIT (-1)
int pool_share_of(int limit, int live, int rank);
int pool_share(int limit); /* this instance's, by fleet_peers() now */
int pool_db_share(const struct database *db);
int pool_user_share(const struct pool_group *g);
int pool_reserve_size(const struct database *db);
/* Server connections of a database, of a login user: every replica and
 * worker (SHOW DATABASES, SHOW USERS). */
int pool_db_connections(const char *db);
int pool_user_connections(const char *user);
/* May another server connection be opened: pool_size (plus
 * reserve_pool_size once the head of the queue has waited
 * reserve_pool_timeout), counted process-wide, and room under
 * max_db_connections and max_user_connections? */
bool pool_has_room(const struct pool *p);
/* The limit g's clients wait for ("max_db_connections" or
 * "max_user_connections", its configured, fleet-wide value in *max), or NULL
 * when this instance's share of neither is full. */
const char *pool_limit_reached(const struct pool_group *g, int *max);
/* Takes room for one connection in every count it belongs to (false: none
 * left, nothing taken), gives it back when the connection is gone.  warm:
 * a min_pool_size connection, only up to min_pool_size. */
bool pool_reserve(struct pool *p, bool warm) __attribute__((warn_unused_result));
void pool_unreserve(struct pool *p);
/* The registry itself: one slot per key for the whole process, counted
 * references (a replica's busy count uses user "" ). */
struct pool_slot *pool_slot_get(const char *db, const char *user, const char *addr);
void pool_slot_put(struct pool_slot *sl);
/* Busy server connections of r, every worker's (least_conn). */
static inline int replica_busy(const struct replica *r)
{
	return r->shared ? atomic_load_explicit(&r->shared->total, memory_order_relaxed)
			 : r->active;
}
/* workers = N: the first worker whose server reported a group's
 * parameters shares them, so a client of another worker logs in without
 * waiting for a server connection of its own (as with one worker). */
void pool_welcome_publish(const struct pool_group *g);
bool pool_welcome_adopt(struct pool_group *g);
/* Has a server of g taken this startup set (param_set_id) lately without
 * an error? */
bool pool_params_ok(const struct pool_group *g, uint64_t set_id);
void pool_params_ok_add(struct pool_group *g, uint64_t set_id);
/* A database name no worker has any more (an auto-created one removed):
 * its shared parameters go too. */
void pool_welcome_forget(const char *db);
/* At exit, after every worker has stopped. */
void pool_shared_free(void);
/* WMSG_POOL_KICK: another worker wants room or made some. */
void pool_on_kick(void);
/* On release: should this server be closed so a starved worker gets room? */
bool pool_yield_server(const struct pool *p);

/*
 * Which pool (replica) of a group takes work is the router's choice (policy
 * layer, above this one; router.h states each function's contract),
 * registered once at start-up (wiring.c).
 * Must not: check out before a router is set.
 */
struct pool_router {
	struct pool *(*pick)(struct pool_group *g, double now, const struct route_need *need);
	struct pool *(*pick_idle)(struct pool_group *g, double now, const struct route_need *need);
	struct pool *(*pick_launch)(struct pool_group *g, double now,
				    const struct route_need *need);
	void (*explain)(struct pool_group *g, double now, char *buf, unsigned len);
};
void pool_set_router(const struct pool_router *r);

/* Gives c a server connection now (true), or queues it and starts
 * connections where there is room (false: c is CLIENT_WAITING). */
bool pool_checkout(struct client *c);
/* RELOAD (database_refresh_defaults): starts the fresh login that tells
 * whether role/database defaults changed, in room the pool has or by
 * closing `spare` (a connection back from a client) or an idle one; true
 * when `spare` was closed.  With neither, waits for a connection to come
 * back (pool_server_ready calls it again). */
bool pool_probe_defaults(struct pool *p, struct server *spare);
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
