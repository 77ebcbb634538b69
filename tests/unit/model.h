/*
 * model.h: a minimal model of pgfleet's runtime state for the unit tests of
 * the model and policy layers (router, pool, replicas, transactions).
 *
 * It builds databases, replicas, pools, server connections and clients as
 * the real modules would, from the real structs and public functions, but
 * with no socket, no thread and no event loop: every connection's fd is -1
 * (conn.c then arms no event), and time is whatever the test puts in
 * fleet.now_cached (fleet_now() returns it when set).  Discovery has no
 * resolver (discovery_watch only records the name): answers come from
 * discovery_take_answer.  health.c's timers get an event base (an epoll
 * descriptor) that is never dispatched, so no check runs: the tests feed
 * check results through health_note_failure/health_note_answer.
 *
 * Must not: open sockets, start threads, or run the loop.  So a test never
 * lets pool.c launch a server connection (server_launch makes a socket):
 * its pools are full, paused or without an eligible replica wherever a
 * client would otherwise wait for a new one; and it never leaves bytes
 * queued for a connection (a flush would call send() on fd -1).
 */
#ifndef PGFLEET_TEST_MODEL_H
#define PGFLEET_TEST_MODEL_H

#include <event2/event.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "client.h"
#include "config.h"
#include "database.h"
#include "discovery.h"
#include "health.h"
#include "intern.h"
#include "log.h"
#include "params.h"
#include "pool.h"
#include "router.h"
#include "runtime.h"
#include "server.h"

/* A db_config per database, freed by model_done (pgfleet's own are the
 * config's). */
#define MODEL_MAX_DBS 16
static struct db_config *model_cfgs[MODEL_MAX_DBS];
static int model_n_cfgs;

static inline void model_report(void *arg, const char *line)
{
	fprintf(stderr, "config: %s\n", line);
}

/* Settings at their defaults (an environment-only configuration), the
 * runtime lists empty, the clock at t = 1000 s. */
static inline void model_init(void)
{
	char *env[] = {"DB_HOST=db", "DB_USER=u", "DB_PASSWORD=p", NULL};
	memset(&fleet, 0, sizeof(fleet));
	log_setup(-2, false); /* errors only: the tests assert, they do not read logs */
	if (!config_load(&fleet.cfg, NULL, env, model_report, NULL))
		abort();
	list_init(&fleet.databases);
	statlist_init(&fleet.login_clients);
	statlist_init(&fleet.justfree_clients);
	statlist_init(&fleet.justfree_servers);
	fleet.now_cached = 1000.0;
	fleet.base = event_base_new(); /* health.c's timers; never dispatched */
	if (!fleet.base)
		abort();
	/* What wiring.c connects for the model and policy layers, and nothing
	 * above them. */
	pool_set_router(&router_for_pools);
	database_set_health(&health_for_databases);
	discovery_on_change(database_hosts_changed);
}

/* A database as database_new() makes it, without replicas (a host list,
 * when given, is for database_sync_replicas). */
static inline struct database *model_db(const char *name, int tsa, int pool_size,
					const char *host)
{
	struct db_config *cfg = calloc(1, sizeof(*cfg));
	struct database *db = calloc(1, sizeof(*db));
	if (!cfg || !db || model_n_cfgs == MODEL_MAX_DBS)
		abort();
	model_cfgs[model_n_cfgs++] = cfg;
	cfg->name = (char *)name;
	cfg->host = (char *)host;
	cfg->port = 5432;
	cfg->pool_size = pool_size;
	cfg->pool_mode = -1;
	cfg->tsa = tsa;
	cfg->max_replica_lag = -1;
	cfg->min_pool_size = cfg->reserve_pool_size = cfg->max_db_connections = -1; /* the globals */
	snprintf(db->name, sizeof(db->name), "%s", name);
	snprintf(db->dbname, sizeof(db->dbname), "%s", name);
	db->cfg = cfg;
	db->pool_size = pool_size;
	db->pool_mode = POOL_TRANSACTION;
	list_init(&db->replicas);
	list_init(&db->groups);
	list_append(&fleet.databases, &db->node);
	return db;
}

/* A replica of db in the given state and role, with a pool for each of
 * db's groups and a health check (armed, never run), as mark_addr() adds
 * one. */
static inline struct replica *model_replica(struct database *db, const char *addr,
					    enum replica_state state, enum replica_role role)
{
	struct replica *r = calloc(1, sizeof(*r));
	if (!r)
		abort();
	r->db = db;
	snprintf(r->addr_str, sizeof(r->addr_str), "%s", addr);
	snprintf(r->host, sizeof(r->host), "%s", addr);
	r->state = state;
	r->role = role;
	list_init(&r->pools);
	list_append(&db->replicas, &r->node);
	db->replica_count++;
	pool_add_replica(r);
	health_replica_added(r);
	return r;
}

/* The pool of group g on replica r. */
static inline struct pool *model_pool(struct pool_group *g, struct replica *r)
{
	struct list *it;
	list_for_each(it, &g->pools) {
		struct pool *p = container_of(it, struct pool, group_node);
		if (p->replica == r)
			return p;
	}
	return NULL;
}

/* A server connection of p, as server_launch() starts one (room taken in
 * pool_size and the limits, login list, counted in the replica and the
 * group), without a socket.  NULL when pool.c gives no room. */
static inline struct server *model_server_login(struct pool *p)
{
	if (!pool_reserve(p, false))
		return NULL;
	struct server *s = calloc(1, sizeof(*s));
	if (!s)
		abort();
	s->pool = p;
	s->io.fd = -1;
	s->state = SERVER_LOGIN;
	s->xact_status = 'I';
	s->connect_time = fleet_now();
	statlist_append(&p->login, &s->node);
	p->replica->server_conns++;
	p->group->connecting++;
	return s;
}

/* A server connection of p that finished its login: idle, last used at
 * `last_used`. */
static inline struct server *model_server_idle(struct pool *p, double last_used)
{
	struct server *s = model_server_login(p);
	if (!s)
		abort();
	p->group->connecting--;
	s->login_step = SLOGIN_PARAMS;
	server_set_state(s, SERVER_IDLE);
	s->last_used = last_used;
	return s;
}

/* A client of g that has logged in and has no server (between
 * transactions), as after its welcome. */
static inline struct client *model_client(struct pool_group *g)
{
	struct client *c = calloc(1, sizeof(*c));
	if (!c)
		abort();
	c->io.fd = -1;
	c->group = g;
	c->db = g->db;
	c->user = str_intern(g->user);
	c->dbname = str_intern(g->db->name);
	c->params_startup = param_set_empty();
	c->params = param_set_ref(c->params_startup);
	snprintf(c->addr_str, sizeof(c->addr_str), "test");
	c->state = CLIENT_ACTIVE;
	statlist_append(&g->active, &c->node);
	g->db->clients++;
	fleet.client_count++;
	return c;
}

/* Tears everything down by pgfleet's own paths (KILL: every client and
 * server connection of each database closed, then freed as the next loop
 * pass would), then frees the databases and the settings. */
static inline void model_done(void)
{
	struct list *dit;
	list_for_each(dit, &fleet.databases) {
		database_close_all(container_of(dit, struct database, node), "test over",
				   "test over");
	}
	client_free_list();
	server_free_list();
	database_free_all();
	discovery_shutdown(); /* hosts watched, never resolved (no channel) */
	for (int i = 0; i < model_n_cfgs; i++)
		free(model_cfgs[i]);
	model_n_cfgs = 0;
	if (fleet.base)
		event_base_free(fleet.base);
	fleet.base = NULL;
	config_free(&fleet.cfg);
}

#endif
