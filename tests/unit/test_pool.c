/*
 * test_pool.c: pool.c's accounting, on pools, server connections and
 * clients built in memory (model.h).  Server connections never get a
 * socket: a test puts them in the state a login would (model_server_login)
 * and finishes the login as server.c does (connecting--, then
 * pool_server_ready).  Every test keeps pools full, paused or without an
 * eligible replica where pool.c would otherwise launch a connection, since
 * a launch is a socket.
 *
 * What is counted: per pool (database, user, replica) the idle, active and
 * login lists; per group (database, user) the waiting and active clients and
 * the logins in flight; per replica the busy (`active`) and total
 * (`server_conns`) connections.
 */
#include "harness.h"
#include "model.h"

#include "router.h"

/* server.c's login_complete, minus the welcome and the log line. */
static void login_done(struct server *s)
{
	s->pool->group->connecting--;
	s->login_step = SLOGIN_PARAMS;
	pool_server_ready(s);
}

struct counts {
	int idle, active, login;         /* the pool */
	int waiting, clients, connecting; /* the group */
	int busy, conns;                 /* the replica */
};

static struct counts counts_of(const struct pool *p)
{
	struct counts k = {
		p->idle.count,		  p->active.count,	     p->login.count,
		p->group->waiting.count,  p->group->active.count,    p->group->connecting,
		p->replica->active,	  p->replica->server_conns,
	};
	return k;
}

#define CHECK_COUNTS(p, i, a, l, w, c, cn, b, sc)                                                  \
	do {                                                                                       \
		struct counts k_ = counts_of(p);                                                   \
		CHECK(k_.idle == (i));                                                             \
		CHECK(k_.active == (a));                                                           \
		CHECK(k_.login == (l));                                                            \
		CHECK(k_.waiting == (w));                                                          \
		CHECK(k_.clients == (c));                                                          \
		CHECK(k_.connecting == (cn));                                                      \
		CHECK(k_.busy == (b));                                                             \
		CHECK(k_.conns == (sc));                                                           \
	} while (0)

/* One database of one up primary, pool_size `size`, user "app". */
static struct pool *one_pool(int size, struct replica **rp)
{
	struct database *db = model_db("app", TSA_ANY, size, NULL);
	struct replica *r = model_replica(db, "10.0.0.1:5432", REPLICA_UP, ROLE_PRIMARY);
	struct pool_group *g = pool_group_get(db, "app");
	if (rp)
		*rp = r;
	return model_pool(g, r);
}

/* Check out an idle connection, release it: idle → active → idle, the
 * client stays logged in between transactions. */
static void test_checkout_release(void)
{
	model_init();
	struct pool *p = one_pool(2, NULL);
	struct server *s = model_server_idle(p, 990);
	struct client *c = model_client(p->group);
	CHECK_COUNTS(p, 1, 0, 0, 0, 1, 0, 0, 1);

	CHECK(pool_checkout(c));
	CHECK(c->link == s && s->link == c);
	CHECK(s->state == SERVER_ACTIVE && c->state == CLIENT_ACTIVE);
	CHECK_COUNTS(p, 0, 1, 0, 0, 1, 0, 1, 1);

	fleet.now_cached = 1001;
	server_release(s);
	CHECK(c->link == NULL && s->link == NULL);
	CHECK(s->state == SERVER_IDLE);
	CHECK(s->last_used == 1001);
	CHECK_COUNTS(p, 1, 0, 0, 0, 1, 0, 0, 1);
	model_done();
}

/* Most recently used idle connection first (README: "Within a pool the
 * most recently used idle connection goes first"); server_round_robin = 1
 * takes the one idle longest, so all of them cycle. */
static void test_idle_order(void)
{
	for (int rr = 0; rr <= 1; rr++) {
		model_init();
		fleet.cfg.server_round_robin = rr;
		struct pool *p = one_pool(3, NULL);
		struct server *a = model_server_login(p);
		struct server *b = model_server_login(p);
		CHECK_COUNTS(p, 0, 0, 2, 0, 0, 2, 0, 2);
		fleet.now_cached = 1001;
		login_done(a);
		fleet.now_cached = 1002;
		login_done(b);
		CHECK_COUNTS(p, 2, 0, 0, 0, 0, 0, 0, 2);
		CHECK(a->last_used == 1001 && b->last_used == 1002);

		struct client *c1 = model_client(p->group), *c2 = model_client(p->group);
		CHECK(pool_checkout(c1));
		CHECK(c1->link == (rr ? a : b));
		CHECK(pool_checkout(c2));
		CHECK(c2->link == (rr ? b : a));
		CHECK_COUNTS(p, 0, 2, 0, 0, 2, 0, 2, 2);

		/* Released a, then b: b is the most recently used. */
		fleet.now_cached = 1003;
		server_release(a);
		fleet.now_cached = 1004;
		server_release(b);
		CHECK_COUNTS(p, 2, 0, 0, 0, 2, 0, 0, 2);
		struct client *c3 = model_client(p->group);
		CHECK(pool_checkout(c3));
		CHECK(c3->link == (rr ? a : b));
		model_done();
	}
}

/* The wait queue is FIFO; a full pool opens nothing more; a released
 * connection goes straight to the head of the queue, never idle beside a
 * waiting client; a waiting client that leaves is out of the queue. */
static void test_wait_queue_fifo(void)
{
	model_init();
	struct pool *p = one_pool(1, NULL);
	struct server *s = model_server_idle(p, 990);
	struct client *c[5];
	for (int i = 0; i < 5; i++)
		c[i] = model_client(p->group);
	CHECK(pool_checkout(c[0]));
	CHECK(!pool_has_room(p));
	for (int i = 1; i < 5; i++) {
		fleet.now_cached = 1000 + i;
		CHECK(!pool_checkout(c[i]));
		CHECK(c[i]->state == CLIENT_WAITING);
		CHECK(c[i]->wait_start == 1000 + i);
	}
	/* pool_size 1 holds: no login started for the four who wait */
	CHECK_COUNTS(p, 0, 1, 0, 4, 1, 0, 1, 1);

	for (int i = 1; i <= 2; i++) {
		server_release(s);
		CHECK(s->state == SERVER_ACTIVE);
		CHECK(s->link == c[i] && c[i]->link == s);
		CHECK(c[i]->state == CLIENT_ACTIVE && c[i]->wait_start == 0);
		CHECK(c[i - 1]->link == NULL);
		CHECK_COUNTS(p, 0, 1, 0, 4 - i, 1 + i, 0, 1, 1);
	}
	/* c[3] hangs up while waiting: c[4] is next */
	client_close(c[3], NULL, "client closed");
	CHECK(c[3]->state == CLIENT_JUSTFREE);
	CHECK_COUNTS(p, 0, 1, 0, 1, 3, 0, 1, 1);
	server_release(s);
	CHECK(s->link == c[4]);
	CHECK_COUNTS(p, 0, 1, 0, 0, 4, 0, 1, 1);
	server_release(s);
	CHECK_COUNTS(p, 1, 0, 0, 0, 4, 0, 0, 1);
	client_free_list();
	model_done();
}

/* A client that arrives while a connection is logging in waits for it
 * (no second login: the one in flight is counted against the queue), and
 * that login, done, serves it. */
static void test_login_serves_waiter(void)
{
	model_init();
	struct pool *p = one_pool(1, NULL);
	struct server *s = model_server_login(p);
	struct client *c = model_client(p->group);
	CHECK(!pool_checkout(c));
	CHECK_COUNTS(p, 0, 0, 1, 1, 0, 1, 0, 1);
	login_done(s);
	CHECK(s->link == c && c->state == CLIENT_ACTIVE);
	CHECK_COUNTS(p, 0, 1, 0, 0, 1, 0, 1, 1);
	model_done();
}

/* Closing: a busy connection takes its client with it; a login that fails
 * marks the replica down; closed connections leave every count at once and
 * are freed at the next loop pass. */
static void test_close(void)
{
	model_init();
	struct replica *r;
	struct pool *p = one_pool(3, &r);
	struct server *older = model_server_idle(p, 990);
	struct server *newer = model_server_idle(p, 991);
	struct server *login = model_server_login(p);
	struct client *c = model_client(p->group);
	CHECK(pool_checkout(c));
	CHECK(c->link == newer); /* the most recently used */
	CHECK_COUNTS(p, 1, 1, 1, 0, 1, 1, 1, 3);

	server_close(newer, "server closed the connection");
	CHECK(newer->state == SERVER_JUSTFREE);
	CHECK(c->state == CLIENT_JUSTFREE); /* told 08006, closed */
	CHECK(c->link == NULL);
	CHECK(r->state == REPLICA_UP);      /* a routine close is no failure */
	CHECK_COUNTS(p, 1, 0, 1, 0, 0, 1, 0, 2);

	server_close(login, "connect: Connection refused");
	CHECK(r->state == REPLICA_DOWN);
	CHECK(r->fails == 1);
	CHECK(r->retry_at == fleet_now() + fleet.cfg.server_login_retry);
	CHECK_STR(r->last_error, "connect: Connection refused");
	/* down: its idle connection was closed too */
	CHECK(older->state == SERVER_JUSTFREE);
	CHECK_COUNTS(p, 0, 0, 0, 0, 0, 0, 0, 0);
	CHECK(fleet.justfree_servers.count == 3);
	CHECK(fleet.justfree_clients.count == 1);
	client_free_list();
	server_free_list();
	CHECK(fleet.justfree_servers.count == 0);
	CHECK(fleet.client_count == 0);
	model_done();
}

/* Two users of one database: a pool each on the shared replica, each with
 * its own pool_size and queue; the replica counts both. */
static void test_groups_apart(void)
{
	model_init();
	struct database *db = model_db("app", TSA_ANY, 1, NULL);
	struct replica *r = model_replica(db, "10.0.0.1:5432", REPLICA_UP, ROLE_PRIMARY);
	struct pool_group *g1 = pool_group_get(db, "alice");
	struct pool_group *g2 = pool_group_get(db, "bob");
	CHECK(pool_group_get(db, "alice") == g1);
	struct pool *p1 = model_pool(g1, r), *p2 = model_pool(g2, r);
	CHECK(p1 && p2 && p1 != p2);
	struct server *s1 = model_server_idle(p1, 990), *s2 = model_server_idle(p2, 990);
	struct client *a1 = model_client(g1), *a2 = model_client(g1), *b1 = model_client(g2);
	CHECK(pool_checkout(a1));
	CHECK(!pool_checkout(a2)); /* alice's pool is full ... */
	CHECK(pool_checkout(b1));  /* ... bob's is not */
	CHECK(a1->link == s1 && b1->link == s2);
	CHECK_COUNTS(p1, 0, 1, 0, 1, 1, 0, 2, 2);
	CHECK_COUNTS(p2, 0, 1, 0, 0, 1, 0, 2, 2);
	/* bob's release does not serve alice's queue */
	server_release(s2);
	CHECK(a2->state == CLIENT_WAITING);
	CHECK_COUNTS(p2, 1, 0, 0, 0, 1, 0, 1, 2);
	server_release(s1);
	CHECK(a2->link == s1);
	CHECK_COUNTS(p1, 0, 1, 0, 0, 2, 0, 1, 2);
	model_done();
}

/* PAUSE: clients queue even beside an idle connection, a released one
 * goes idle; RESUME (pool_kick) serves the queue in order. */
static void test_pause(void)
{
	model_init();
	struct pool *p = one_pool(2, NULL);
	struct server *s1 = model_server_idle(p, 990);
	struct client *c1 = model_client(p->group), *c2 = model_client(p->group);
	CHECK(pool_checkout(c1));
	p->group->db->paused = true;
	struct server *s2 = model_server_idle(p, 991);
	CHECK(!pool_checkout(c2));
	CHECK_COUNTS(p, 1, 1, 0, 1, 1, 0, 1, 2);
	server_release(s1);
	CHECK(c2->state == CLIENT_WAITING);
	CHECK_COUNTS(p, 2, 0, 0, 1, 1, 0, 0, 2);
	p->group->db->paused = false;
	pool_kick(p->group);
	CHECK(c2->state == CLIENT_ACTIVE);
	CHECK(c2->link == s1); /* released last: the most recently used */
	CHECK(s2->state == SERVER_IDLE);
	CHECK_COUNTS(p, 1, 1, 0, 0, 2, 0, 1, 2);
	model_done();
}

/* query_wait_timeout: the janitor closes a client that waited longer,
 * not one that waited less; a connection of a replica that is not
 * eligible serves nobody. */
static void test_query_wait_timeout(void)
{
	model_init();
	fleet.cfg.query_wait_timeout = 5;
	struct replica *r;
	struct pool *p = one_pool(1, &r);
	struct client *c1 = model_client(p->group), *c2 = model_client(p->group);
	r->state = REPLICA_DOWN; /* checks on: nothing is eligible */
	fleet.now_cached = 1000;
	CHECK(!pool_checkout(c1));
	fleet.now_cached = 1003;
	CHECK(!pool_checkout(c2));
	CHECK_COUNTS(p, 0, 0, 0, 2, 0, 0, 0, 0);
	pool_janitor(1005);
	CHECK(c1->state == CLIENT_WAITING && c2->state == CLIENT_WAITING);
	pool_janitor(1005.5);
	CHECK(c1->state == CLIENT_JUSTFREE && c2->state == CLIENT_WAITING);
	CHECK_COUNTS(p, 0, 0, 0, 1, 0, 0, 0, 0);
	/* A login that completes on a replica no longer eligible: idle, the
	 * client keeps waiting. */
	struct server *s = model_server_login(p);
	login_done(s);
	CHECK(s->state == SERVER_IDLE && c2->state == CLIENT_WAITING);
	pool_janitor(1008.5);
	CHECK(c2->state == CLIENT_JUSTFREE);
	CHECK_COUNTS(p, 1, 0, 0, 0, 0, 0, 0, 1);
	model_done();
}

/* max_db_connections: every user's connections of a database count, on
 * every replica; at the limit nothing more may open (the waiting client
 * opens nothing), and a connection released by a pool nobody waits for is
 * closed so that another user's waiting client gets the room. */
static void test_max_db_connections(void)
{
	model_init();
	fleet.cfg.max_db_connections = 2;
	struct database *db = model_db("app", TSA_ANY, 5, NULL);
	struct replica *r1 = model_replica(db, "10.0.0.1:5432", REPLICA_UP, ROLE_PRIMARY);
	struct replica *r2 = model_replica(db, "10.0.0.2:5432", REPLICA_UP, ROLE_PRIMARY);
	struct pool_group *ga = pool_group_get(db, "a"), *gb = pool_group_get(db, "b");
	struct pool *a1 = model_pool(ga, r1), *a2 = model_pool(ga, r2);
	struct pool *b1 = model_pool(gb, r1);
	CHECK(pool_db_max_connections(db) == 2);
	struct server *s1 = model_server_idle(a1, 990);
	CHECK(pool_has_room(a2) && pool_has_room(b1));
	struct server *s2 = model_server_idle(a2, 990);
	CHECK(pool_db_connections("app") == 2);
	/* full: no pool of the database may open one, whatever its pool_size */
	CHECK(!pool_has_room(a1) && !pool_has_room(a2) && !pool_has_room(b1));
	CHECK(model_server_login(b1) == NULL);
	int max = 0;
	CHECK(pool_limit_reached(gb, &max) && max == 2);
	CHECK(strcmp(pool_limit_reached(gb, &max), "max_db_connections") == 0);

	/* a's clients take both; b's client waits, opening nothing */
	struct client *ca1 = model_client(ga), *ca2 = model_client(ga);
	CHECK(pool_checkout(ca1) && pool_checkout(ca2));
	struct client *cb = model_client(gb);
	CHECK(!pool_checkout(cb) && cb->state == CLIENT_WAITING);
	CHECK(gb->connecting == 0 && pool_db_connections("app") == 2);

	/* the replica b would use goes down, so the room made below is
	 * counted but not used (a launch would be a socket) */
	r1->state = REPLICA_DOWN;
	r1->retry_at = 1e9;
	r2->state = REPLICA_DOWN;
	r2->retry_at = 1e9;
	server_release(ca1->link);
	CHECK(s1->state == SERVER_JUSTFREE || s2->state == SERVER_JUSTFREE);
	CHECK(pool_db_connections("app") == 1);
	CHECK(pool_limit_reached(gb, &max) == NULL);
	/* with b's client served (gone), a release keeps its connection */
	client_close(cb, NULL, "client closed");
	server_release(ca2->link);
	CHECK(pool_db_connections("app") == 1);
	CHECK(a1->idle.count + a2->idle.count == 1);

	/* an entry's own value wins over the global one, 0 there = no limit */
	((struct db_config *)db->cfg)->max_db_connections = 0;
	CHECK(pool_db_max_connections(db) == 0 && pool_limit_reached(gb, &max) == NULL);
	client_free_list();
	model_done();
}

/* max_user_connections: one login user's connections over databases. */
static void test_max_user_connections(void)
{
	model_init();
	fleet.cfg.max_user_connections = 1;
	struct database *d1 = model_db("one", TSA_ANY, 5, NULL);
	struct database *d2 = model_db("two", TSA_ANY, 5, NULL);
	struct replica *r1 = model_replica(d1, "10.0.0.1:5432", REPLICA_UP, ROLE_PRIMARY);
	struct replica *r2 = model_replica(d2, "10.0.0.1:5432", REPLICA_UP, ROLE_PRIMARY);
	struct pool_group *g1 = pool_group_get(d1, "app"), *g2 = pool_group_get(d2, "app");
	struct pool_group *other = pool_group_get(d2, "other");
	struct pool *p1 = model_pool(g1, r1), *p2 = model_pool(g2, r2);
	struct pool *po = model_pool(other, r2);
	(void)model_server_idle(p1, 990);
	CHECK(g1->user_slot == g2->user_slot && other->user_slot != g1->user_slot);
	CHECK(!pool_has_room(p2) && pool_has_room(po));
	int max = 0;
	CHECK(strcmp(pool_limit_reached(g2, &max), "max_user_connections") == 0 && max == 1);
	/* a forced user= counts as that user */
	struct database *d3 = model_db("three", TSA_ANY, 5, NULL);
	((struct db_config *)d3->cfg)->user = "app";
	struct pool_group *g3 = pool_group_get(d3, "someone");
	CHECK(g3->user_slot == g1->user_slot);
	model_done();
}

/* The reserve pool: reserve_pool_size more once the head of the queue has
 * waited reserve_pool_timeout, not before. */
static void test_reserve_pool(void)
{
	model_init();
	fleet.cfg.reserve_pool_size = 1;
	fleet.cfg.reserve_pool_timeout = 5;
	struct pool *p = one_pool(1, NULL);
	(void)model_server_idle(p, 990);
	struct client *c1 = model_client(p->group), *c2 = model_client(p->group);
	CHECK(pool_checkout(c1));
	CHECK(!pool_has_room(p));
	/* c2 waits: the database is paused so that pool.c opens nothing itself */
	p->group->db->paused = true;
	CHECK(!pool_checkout(c2));
	CHECK(c2->wait_start == 1000);
	fleet.now_cached = 1004.9;
	CHECK(!pool_has_room(p));
	fleet.now_cached = 1005;
	CHECK(pool_has_room(p));
	struct server *extra = model_server_login(p);
	CHECK(extra != NULL);
	CHECK(!pool_has_room(p)); /* one reserve connection, no more */
	CHECK(model_server_login(p) == NULL);
	model_done();
}

/* min_pool_size: capped at the pool size, the entry's value first; a warm
 * launch never goes beyond it. */
static void test_min_pool_size(void)
{
	model_init();
	fleet.cfg.min_pool_size = 3;
	struct pool *p = one_pool(2, NULL);
	struct database *db = p->group->db;
	CHECK(pool_min_size(db) == 2);
	((struct db_config *)db->cfg)->min_pool_size = 1;
	CHECK(pool_min_size(db) == 1);
	CHECK(pool_reserve(p, true));
	pool_unreserve(p);
	(void)model_server_idle(p, 990);
	CHECK(!pool_reserve(p, true)); /* it has min_pool_size already */
	CHECK(pool_has_room(p));
	model_done();
}

/* ---- the fleet-wide budget (issue 20 item 3) -------------------------------------- */

/* Each instance's share of a limit among the live ones: the shares differ
 * by one at most and add up to the limit exactly, for every fleet size;
 * alone, the whole limit; 0 stays "no limit". */
static void test_share_arithmetic(void)
{
	CHECK(pool_share_of(0, 4, 0) == POOL_NO_LIMIT);
	CHECK(pool_share_of(10, 1, 0) == 10);
	CHECK(pool_share_of(10, 4, 0) == 3 && pool_share_of(10, 4, 1) == 3);
	CHECK(pool_share_of(10, 4, 2) == 2 && pool_share_of(10, 4, 3) == 2);
	CHECK(pool_share_of(2, 4, 0) == 1 && pool_share_of(2, 4, 1) == 1);
	CHECK(pool_share_of(2, 4, 2) == 0 && pool_share_of(2, 4, 3) == 0);
	/* what fleet_set_peers would not store: read as alone / rank 0 */
	CHECK(pool_share_of(10, 0, 0) == 10 && pool_share_of(10, 4, 9) == 3);
	for (int limit = 1; limit <= 40; limit++) {
		for (int live = 1; live <= 12; live++) {
			int sum = 0, lo = limit, hi = 0;
			for (int rank = 0; rank < live; rank++) {
				int s = pool_share_of(limit, live, rank);
				sum += s;
				lo = s < lo ? s : lo;
				hi = s > hi ? s : hi;
			}
			CHECK(sum == limit);
			CHECK(hi - lo <= 1);
		}
	}
	/* pool_share reads the live set fleet_set_peers stored */
	fleet_set_peers(3, 2);
	CHECK(pool_share(100) == 33);
	fleet_set_peers(3, 0);
	CHECK(pool_share(100) == 34);
	fleet_set_peers(1, 0);
	CHECK(pool_share(100) == 100);
}

/* Within the share: no connection beyond it, the wait error names the
 * limit, the share and the fleet; alone, the old text. */
static void test_share_caps_connections(void)
{
	model_init();
	fleet.cfg.max_db_connections = 10;
	struct database *db = model_db("app", TSA_ANY, 20, NULL);
	struct replica *r1 = model_replica(db, "10.0.0.1:5432", REPLICA_UP, ROLE_PRIMARY);
	struct replica *r2 = model_replica(db, "10.0.0.2:5432", REPLICA_UP, ROLE_PRIMARY);
	struct pool_group *g = pool_group_get(db, "app");
	struct pool *p1 = model_pool(g, r1), *p2 = model_pool(g, r2);
	fleet_set_peers(4, 1); /* 10 over 4: 3, 3, 2, 2 */
	CHECK(pool_db_share(db) == 3 && pool_db_max_connections(db) == 10);
	(void)model_server_idle(p1, 990);
	(void)model_server_idle(p2, 990);
	(void)model_server_idle(p1, 990);
	CHECK(!pool_has_room(p1) && !pool_has_room(p2));
	CHECK(model_server_login(p2) == NULL);
	int max = 0;
	CHECK(strcmp(pool_limit_reached(g, &max), "max_db_connections") == 0 && max == 10);
	char why[200];
	router_explain(g, fleet_now(), why, sizeof(why));
	CHECK(strcmp(why, "max_db_connections (10, this instance's share 3 of 4 live pgfleet "
			  "instances) reached for database \"app\"") == 0);
	/* the share caps min_pool_size's warm connections too */
	fleet.cfg.min_pool_size = 5;
	CHECK(!pool_reserve(p2, true));
	/* alone: the whole limit, and the error as before fleets */
	fleet_set_peers(1, 0);
	CHECK(pool_db_share(db) == 10 && pool_has_room(p2));
	CHECK(pool_reserve(p2, true));
	pool_unreserve(p2);
	(void)model_server_idle(p2, 990);
	for (int i = 0; i < 6; i++)
		(void)model_server_idle(p1, 990);
	CHECK(pool_db_connections("app") == 10 && !pool_has_room(p1));
	router_explain(g, fleet_now(), why, sizeof(why));
	CHECK(strcmp(why, "max_db_connections (10) reached for database \"app\"") == 0);
	model_done();
	fleet_set_peers(1, 0);
}

/* A limit smaller than the fleet: some instances get 0, and their clients
 * wait (no error, no connection). */
static void test_share_zero_waits(void)
{
	model_init();
	fleet.cfg.max_db_connections = 2;
	struct pool *p = one_pool(5, NULL);
	fleet_set_peers(4, 3);
	CHECK(pool_db_share(p->group->db) == 0);
	CHECK(!pool_has_room(p) && model_server_login(p) == NULL);
	struct client *c = model_client(p->group);
	CHECK(!pool_checkout(c) && c->state == CLIENT_WAITING);
	CHECK(p->group->connecting == 0 && pool_db_connections("app") == 0);
	char why[200];
	router_explain(p->group, fleet_now(), why, sizeof(why));
	CHECK(strcmp(why, "max_db_connections (2, this instance's share 0 of 4 live pgfleet "
			  "instances) reached for database \"app\"") == 0);
	/* the waiting client is not closed for it, only query_wait_timeout */
	fleet.cfg.query_wait_timeout = 0;
	fleet.now_cached = 2000;
	p->group->db->paused = true; /* the janitor's kick must not launch a socket */
	pool_janitor(fleet_now());
	CHECK(c->state == CLIENT_WAITING);
	model_done();
	fleet_set_peers(1, 0);
}

/* The share shrinks (a peer came): idle connections above it close at the
 * next janitor pass, least recently used first; a busy one above it closes
 * when its transaction ends instead of going back to idle; at the share,
 * released connections stay.  It grows again (the peer left): room again. */
static void test_share_rebalance(void)
{
	model_init();
	fleet.cfg.max_db_connections = 6;
	struct database *db = model_db("app", TSA_ANY, 10, NULL);
	struct replica *r = model_replica(db, "10.0.0.1:5432", REPLICA_UP, ROLE_PRIMARY);
	struct pool_group *g = pool_group_get(db, "app");
	struct pool *p = model_pool(g, r);
	struct server *s[6];
	for (int i = 0; i < 6; i++)
		s[i] = model_server_idle(p, 990 + i);
	struct client *c[3];
	for (int i = 0; i < 3; i++) {
		c[i] = model_client(g);
		CHECK(pool_checkout(c[i]));
	}
	CHECK(p->active.count == 3 && p->idle.count == 3);
	/* a second instance: 3 each; then a third: 2 each */
	fleet_set_peers(3, 2);
	CHECK(pool_db_share(db) == 2);
	db->paused = true; /* the janitor's kick must not launch a socket */
	pool_janitor(fleet_now());
	CHECK(p->idle.count == 0 && p->active.count == 3);
	CHECK(pool_db_connections("app") == 3);
	for (int i = 0; i < 6; i++) /* the busy ones are left to finish */
		CHECK(s[i]->state == SERVER_ACTIVE || s[i]->state == SERVER_JUSTFREE);
	/* busy ones above the share close as their transaction ends */
	server_release(c[0]->link);
	CHECK(pool_db_connections("app") == 2 && p->idle.count == 0);
	/* at the share: kept */
	server_release(c[1]->link);
	CHECK(pool_db_connections("app") == 2 && p->idle.count == 1);
	CHECK(!pool_has_room(p));
	pool_janitor(fleet_now());
	CHECK(p->idle.count == 1 && p->active.count == 1);
	/* the peers left: the whole budget again */
	fleet_set_peers(1, 0);
	CHECK(pool_db_share(db) == 6 && pool_has_room(p));
	server_release(c[2]->link);
	CHECK(p->idle.count == 2);
	model_done();
	fleet_set_peers(1, 0);
}

/* max_user_connections is shared the same way. */
static void test_user_share(void)
{
	model_init();
	fleet.cfg.max_user_connections = 3;
	struct pool *p = one_pool(5, NULL);
	fleet_set_peers(2, 1); /* 3 over 2: 2, 1 */
	CHECK(pool_user_share(p->group) == 1);
	(void)model_server_idle(p, 990);
	CHECK(!pool_has_room(p));
	int max = 0;
	CHECK(strcmp(pool_limit_reached(p->group, &max), "max_user_connections") == 0 && max == 3);
	char why[200];
	router_explain(p->group, fleet_now(), why, sizeof(why));
	CHECK(strcmp(why, "max_user_connections (3, this instance's share 1 of 2 live pgfleet "
			  "instances) reached for user \"app\"") == 0);
	fleet_set_peers(2, 0);
	CHECK(pool_user_share(p->group) == 2 && pool_has_room(p));
	model_done();
	fleet_set_peers(1, 0);
}

int main(void)
{
	RUN(test_checkout_release);
	RUN(test_idle_order);
	RUN(test_wait_queue_fifo);
	RUN(test_login_serves_waiter);
	RUN(test_close);
	RUN(test_groups_apart);
	RUN(test_pause);
	RUN(test_query_wait_timeout);
	RUN(test_max_db_connections);
	RUN(test_max_user_connections);
	RUN(test_reserve_pool);
	RUN(test_min_pool_size);
	RUN(test_share_arithmetic);
	RUN(test_share_caps_connections);
	RUN(test_share_zero_waits);
	RUN(test_share_rebalance);
	RUN(test_user_share);
	return harness_finish();
}
