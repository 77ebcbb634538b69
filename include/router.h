/*
 * router.h: which replica a transaction goes to.  Reads replica state, role
 * and load; never touches sockets or lists.
 */
#ifndef PGFLEET_ROUTER_H
#define PGFLEET_ROUTER_H

#include "pool.h"

/* The pool for a new transaction by load_balance: a replica eligible for
 * `need` (NULL: the database's target_session_attrs) whose pool has an idle
 * server or room for one more. */
struct pool *router_pick(struct pool_group *g, double now, const struct route_need *need);
/* A pool of g with an idle server on an eligible replica, by load_balance. */
struct pool *router_pick_idle(struct pool_group *g, double now, const struct route_need *need);
/* A pool of g on an eligible replica with room for another connection. */
struct pool *router_pick_launch(struct pool_group *g, double now, const struct route_need *need);
/* Why nothing is eligible, for the error a waiting client gets. */
void router_explain(struct pool_group *g, double now, char *buf, unsigned len);
/* Why no replica of db can take its target role (no pool needed: /readyz);
 * false, buf untouched, when one can. */
bool router_explain_db(const struct database *db, double now, char *buf, unsigned len);

/* The above as pool.c asks for them (pool_set_router, wired at start-up). */
extern const struct pool_router router_for_pools;

#endif
