/*
 * test_replica.c: a replica's life (database.c, health.c, discovery.c),
 * fed through their public functions with no server, resolver or loop
 * (model.h): DNS answers add replicas, drain the vanished ones and forget
 * them once their last connection is gone; check results move health
 * (new/up/down/banned, HEALTH_FALL failures in a row, ban_time) and, apart
 * from it, the role and the lag.
 */
#include "harness.h"
#include "model.h"

#include <arpa/inet.h>

#include "router.h"

static struct dns_addr v4(const char *ip)
{
	struct dns_addr a;
	memset(&a, 0, sizeof(a));
	struct sockaddr_in *in = (struct sockaddr_in *)&a.sa;
	in->sin_family = AF_INET;
	if (inet_pton(AF_INET, ip, &in->sin_addr) != 1)
		abort();
	a.len = sizeof(*in);
	return a;
}

static struct replica *find(struct database *db, const char *addr_str)
{
	struct list *it;
	list_for_each(it, &db->replicas) {
		struct replica *r = container_of(it, struct replica, node);
		if (strcmp(r->addr_str, addr_str) == 0)
			return r;
	}
	return NULL;
}

static int pools_of(const struct pool_group *g, const struct replica *r)
{
	int n = 0;
	struct list *it;
	list_for_each(it, &g->pools) {
		n += container_of(it, struct pool, group_node)->replica == r;
	}
	return n;
}

/* The replica set follows DNS: one replica per address; a vanished one
 * drains (no new work, idle connections closed, busy ones at their end)
 * and is forgotten when its last connection is gone; a failed lookup
 * keeps the last good answer. */
static void test_dns_follows(void)
{
	model_init();
	struct database *db = model_db("app", TSA_ANY, 2, "pg-svc");
	struct pool_group *g = pool_group_get(db, "app");
	database_sync_replicas(db); /* watches the name; no answer yet */
	CHECK(db->replica_count == 0);
	CHECK(router_pick(g, fleet_now(), NULL) == NULL);

	struct dns_addr three[] = {v4("10.0.0.1"), v4("10.0.0.2"), v4("10.0.0.3")};
	CHECK(discovery_take_answer("pg-svc", three, 3, 30));
	CHECK(!discovery_take_answer("other-svc", three, 3, 30)); /* not watched */
	CHECK(db->replica_count == 3);
	struct replica *r1 = find(db, "10.0.0.1:5432"), *r2 = find(db, "10.0.0.2:5432"),
		       *r3 = find(db, "10.0.0.3:5432");
	CHECK(r1 && r2 && r3);
	if (!r1 || !r2 || !r3) {
		model_done();
		return;
	}
	CHECK_STR(r3->host, "pg-svc");
	CHECK(r1->state == REPLICA_NEW && r1->role == ROLE_UNKNOWN);
	CHECK(pools_of(g, r1) == 1 && pools_of(g, r2) == 1 && pools_of(g, r3) == 1);
	/* new: no traffic until a check passes */
	CHECK(router_pick(g, fleet_now(), NULL) == NULL);
	health_note_answer(r1, false, 0, 0);
	health_note_answer(r2, true, 0, 0);
	health_note_answer(r3, true, 0, 0);
	CHECK(r1->state == REPLICA_UP && r1->role == ROLE_PRIMARY);
	CHECK(r3->state == REPLICA_UP && r3->role == ROLE_STANDBY);

	/* r3 holds one idle and one busy connection when it leaves DNS */
	struct pool *p3 = model_pool(g, r3);
	struct server *idle = model_server_idle(p3, 990);
	struct server *busy = model_server_idle(p3, 991);
	server_set_state(busy, SERVER_ACTIVE);
	CHECK(r3->server_conns == 2 && r3->active == 1);

	CHECK(discovery_take_answer("pg-svc", three, 2, 30));
	CHECK(r3->state == REPLICA_DRAINING);
	CHECK(r1->state == REPLICA_UP && r2->state == REPLICA_UP);
	CHECK(!replica_eligible(r3, fleet_now()));
	CHECK(idle->state == SERVER_JUSTFREE);
	CHECK(busy->state == SERVER_ACTIVE); /* finishes its transaction */
	CHECK(db->replica_count == 3);	     /* still known while it has connections */
	server_free_list();		     /* the next loop pass: still a connection */
	CHECK(db->replica_count == 3 && find(db, "10.0.0.3:5432") == r3);

	/* a failed lookup, and the same answer again, change nothing */
	CHECK(discovery_take_answer("pg-svc", NULL, 0, -1));
	CHECK(discovery_take_answer("pg-svc", three, 2, 30));
	CHECK(db->replica_count == 3);
	CHECK(r1->state == REPLICA_UP && r3->state == REPLICA_DRAINING);

	/* the transaction ends: its connection closes instead of going back */
	server_release(busy);
	CHECK(busy->state == SERVER_JUSTFREE);
	CHECK(r3->server_conns == 0 && r3->active == 0);
	server_free_list(); /* ... and the replica is forgotten, pools and all */
	CHECK(db->replica_count == 2);
	CHECK(find(db, "10.0.0.3:5432") == NULL);
	int n = 0;
	struct list *it;
	list_for_each(it, &g->pools) {
		n++;
	}
	CHECK(n == 2);

	/* it comes back: a new replica, checked before it takes work */
	CHECK(discovery_take_answer("pg-svc", three, 3, 30));
	r3 = find(db, "10.0.0.3:5432");
	CHECK(r3 && r3->state == REPLICA_NEW && r3->role == ROLE_UNKNOWN);
	CHECK(r3 && pools_of(g, r3) == 1);
	model_done();
}

/* A draining replica that reappears in DNS before it is forgotten is the
 * same replica, with one pool per user, checked again before it takes
 * work. */
static void test_dns_back_while_draining(void)
{
	model_init();
	struct database *db = model_db("app", TSA_ANY, 2, "pg-svc");
	struct pool_group *g = pool_group_get(db, "app");
	database_sync_replicas(db);
	struct dns_addr two[] = {v4("10.0.0.1"), v4("10.0.0.2")};
	CHECK(discovery_take_answer("pg-svc", two, 2, 30));
	struct replica *r2 = find(db, "10.0.0.2:5432");
	CHECK(r2 != NULL);
	if (!r2) {
		model_done();
		return;
	}
	health_note_answer(r2, true, 0, 0);
	struct server *busy = model_server_idle(model_pool(g, r2), 990);
	server_set_state(busy, SERVER_ACTIVE);
	CHECK(discovery_take_answer("pg-svc", two, 1, 30));
	CHECK(r2->state == REPLICA_DRAINING);
	/* a user that logs in meanwhile gets no pool on it */
	struct pool_group *g2 = pool_group_get(db, "late");
	CHECK(pools_of(g2, r2) == 0);
	CHECK(discovery_take_answer("pg-svc", two, 2, 30));
	CHECK(find(db, "10.0.0.2:5432") == r2); /* the same replica, not a second */
	CHECK(db->replica_count == 2);
	/* one pool per user, the draining one kept (with its busy connection,
	 * so pool_size still holds), one made for the late user */
	CHECK(pools_of(g, r2) == 1);
	CHECK(model_pool(g, r2) && model_pool(g, r2)->active.count == 1);
	CHECK(pools_of(g2, r2) == 1);
	CHECK(r2->state == REPLICA_NEW);
	CHECK(!replica_eligible(r2, fleet_now()));
	health_note_answer(r2, true, 0, 0);
	CHECK(r2->state == REPLICA_UP);
	model_done();
}

/* Without health checks a new replica takes traffic at once. */
static void test_dns_unchecked(void)
{
	model_init();
	fleet.cfg.health_check_period = 0;
	struct database *db = model_db("app", TSA_ANY, 2, "pg-svc, 10.1.0.9");
	database_sync_replicas(db); /* the literal address needs no DNS */
	CHECK(db->replica_count == 1);
	struct dns_addr one[] = {v4("10.0.0.1")};
	CHECK(discovery_take_answer("pg-svc", one, 1, 30));
	CHECK(db->replica_count == 2);
	struct replica *r = find(db, "10.0.0.1:5432");
	CHECK(r && r->state == REPLICA_UP);
	CHECK(find(db, "10.1.0.9:5432") != NULL);
	model_done();
}

/* Health hysteresis: one failure makes a replica down, HEALTH_FALL in a
 * row ban it for ban_time; one passing check brings a down one back up, a
 * banned one only after ban_time. */
static void test_hysteresis(void)
{
	model_init();
	struct database *db = model_db("app", TSA_ANY, 2, NULL);
	struct replica *r = model_replica(db, "10.0.0.1:5432", REPLICA_NEW, ROLE_UNKNOWN);
	double t0 = fleet_now();
	CHECK(HEALTH_FALL == 3);
	CHECK(!replica_eligible(r, t0));

	health_note_answer(r, false, 0, 0);
	CHECK(r->state == REPLICA_UP && r->role == ROLE_PRIMARY && r->fails == 0);
	CHECK(r->last_check > 0);
	CHECK(replica_eligible(r, t0));

	health_note_failure(r, "health check timed out after 3s");
	CHECK(r->state == REPLICA_DOWN && r->fails == 1);
	CHECK(r->retry_at == t0 + fleet.cfg.server_login_retry);
	CHECK_STR(r->last_error, "health check timed out after 3s");
	CHECK(!replica_eligible(r, t0));
	CHECK(!replica_eligible(r, r->retry_at + 1)); /* checks on: only a check helps */

	fleet.now_cached = t0 + 1;
	health_note_failure(r, "connection refused");
	CHECK(r->state == REPLICA_DOWN && r->fails == 2);
	CHECK(r->retry_at == t0 + fleet.cfg.server_login_retry); /* unchanged */

	fleet.now_cached = t0 + 2;
	health_note_failure(r, "connection refused");
	CHECK(r->state == REPLICA_BANNED && r->fails == 3);
	double ban_end = t0 + 2 + fleet.cfg.ban_time;
	CHECK(r->retry_at == ban_end);

	fleet.now_cached = t0 + 3;
	health_note_failure(r, "connection refused");
	CHECK(r->state == REPLICA_BANNED && r->fails == 4 && r->retry_at == ban_end);

	/* answering during the ban: still banned, the count starts over */
	fleet.now_cached = ban_end - 1;
	health_note_answer(r, false, 0, 0);
	CHECK(r->state == REPLICA_BANNED && r->fails == 0);
	CHECK(!replica_eligible(r, fleet_now()));
	fleet.now_cached = ban_end;
	health_note_answer(r, false, 0, 0);
	CHECK(r->state == REPLICA_UP);

	/* down and back with one check each */
	health_note_failure(r, "x");
	CHECK(r->state == REPLICA_DOWN);
	health_note_answer(r, false, 0, 0);
	CHECK(r->state == REPLICA_UP && r->fails == 0);

	/* failures not in a row do not ban: each pass resets the count */
	for (int i = 0; i < 5; i++) {
		health_note_failure(r, "x");
		health_note_answer(r, false, 0, 0);
	}
	CHECK(r->state == REPLICA_UP);
	model_done();
}

/* Role and lag come from every answer, whatever the health; a role change
 * closes the idle connections (opened for the old role), not the busy
 * ones; the first role learned closes nothing. */
static void test_role_apart_from_health(void)
{
	model_init();
	struct database *db = model_db("app", TSA_READ_WRITE, 4, NULL);
	struct replica *r = model_replica(db, "10.0.0.1:5432", REPLICA_NEW, ROLE_UNKNOWN);
	struct pool_group *g = pool_group_get(db, "app");
	struct pool *p = model_pool(g, r);
	struct server *s0 = model_server_idle(p, 990);
	health_note_answer(r, false, 0, 0); /* unknown -> primary */
	CHECK(r->role == ROLE_PRIMARY && s0->state == SERVER_IDLE);
	CHECK(replica_eligible(r, fleet_now()));

	struct server *busy = model_server_idle(p, 991);
	server_set_state(busy, SERVER_ACTIVE);
	health_note_answer(r, true, 0, 0); /* demoted */
	CHECK(r->role == ROLE_STANDBY && r->state == REPLICA_UP);
	CHECK(s0->state == SERVER_JUSTFREE);
	CHECK(busy->state == SERVER_ACTIVE);
	CHECK(!replica_eligible(r, fleet_now())); /* read-write: not a standby */

	/* a failure leaves the role alone */
	health_note_failure(r, "x");
	CHECK(r->state == REPLICA_DOWN && r->role == ROLE_STANDBY);
	/* banned, and promoted meanwhile: the role is learned, the ban holds */
	health_note_failure(r, "x");
	health_note_failure(r, "x");
	CHECK(r->state == REPLICA_BANNED);
	health_note_answer(r, false, 0, 0);
	CHECK(r->state == REPLICA_BANNED && r->role == ROLE_PRIMARY);

	/* lag: taken from each answer, and max_replica_lag judges it */
	fleet.now_cached = r->retry_at;
	((struct db_config *)db->cfg)->tsa = TSA_READ_ONLY;
	((struct db_config *)db->cfg)->max_replica_lag = 10;
	health_note_answer(r, true, 12.5, 0);
	CHECK(r->state == REPLICA_UP && r->role == ROLE_STANDBY);
	CHECK(r->lag_s == 12.5);
	CHECK(!replica_lag_ok(r) && !replica_eligible(r, fleet_now()));
	health_note_answer(r, true, 1, 0);
	CHECK(replica_lag_ok(r) && replica_eligible(r, fleet_now()));

	/* replica_set_role says whether anything changed */
	CHECK(!replica_set_role(r, ROLE_STANDBY, "in_hot_standby"));
	CHECK(replica_set_role(r, ROLE_PRIMARY, "in_hot_standby"));
	model_done();
}

/* A draining replica is past health: checks change neither its state,
 * nor its role, nor its failure count. */
static void test_draining_ignores_checks(void)
{
	model_init();
	struct database *db = model_db("app", TSA_ANY, 2, NULL);
	struct replica *r = model_replica(db, "10.0.0.1:5432", REPLICA_UP, ROLE_STANDBY);
	replica_set_state(r, REPLICA_DRAINING, "gone from DNS");
	health_note_failure(r, "connection refused");
	CHECK(r->state == REPLICA_DRAINING && r->fails == 0);
	CHECK_STR(r->last_error, "connection refused");
	health_note_answer(r, false, 0, 0);
	CHECK(r->state == REPLICA_DRAINING && r->role == ROLE_STANDBY);
	CHECK(!replica_eligible(r, fleet_now()));
	/* forgotten at the next pass: no connection left */
	server_free_list();
	CHECK(db->replica_count == 0 && list_empty(&db->replicas));
	model_done();
}

/* Several primaries behind one database: one takes the writes, chosen
 * once every replica has had its first check (newest timeline, then the
 * lowest address), kept while it stays an up primary, left for a newer
 * timeline or when it goes down; `any` still spreads. */
static void test_split_brain_choice(void)
{
	model_init();
	struct database *db = model_db("app", TSA_READ_WRITE, 2, NULL);
	struct replica *r1 = model_replica(db, "10.0.0.1:5432", REPLICA_NEW, ROLE_UNKNOWN);
	struct replica *r2 = model_replica(db, "10.0.0.2:5432", REPLICA_NEW, ROLE_UNKNOWN);
	struct replica *r3 = model_replica(db, "10.0.0.3:5432", REPLICA_NEW, ROLE_UNKNOWN);
	double now = fleet_now();
	/* the highest address answers first: nothing chosen while r1 is unchecked */
	health_note_answer(r3, false, 0, 1);
	health_note_answer(r2, false, 0, 1);
	CHECK(!replica_is_write_primary(r2) && !replica_is_write_primary(r3));
	CHECK(!replica_eligible(r2, now) && !replica_eligible(r3, now));
	health_note_answer(r1, false, 0, 1);
	CHECK(replica_is_write_primary(r1));
	CHECK(replica_eligible(r1, now) && !replica_eligible(r2, now) &&
	      !replica_eligible(r3, now));
	CHECK(db->primaries == 3 && database_primaries(db) == 3);
	CHECK(r1->timeline == 1 && r3->timeline == 1);

	/* a lower address with an equal timeline appears later: r1 keeps it */
	struct replica *r0 = model_replica(db, "10.0.0.0:5432", REPLICA_NEW, ROLE_UNKNOWN);
	health_note_answer(r0, false, 0, 1);
	CHECK(replica_is_write_primary(r1) && !replica_is_write_primary(r0));
	CHECK(database_primaries(db) == 4);
	/* checks again, nothing changed: still r1 */
	health_note_answer(r1, false, 0, 1);
	health_note_answer(r0, false, 0, 1);
	CHECK(replica_is_write_primary(r1));

	/* a newer timeline takes over (a promoted standby) */
	health_note_answer(r3, false, 0, 2);
	CHECK(replica_is_write_primary(r3) && !replica_is_write_primary(r1));
	CHECK(replica_eligible(r3, now) && !replica_eligible(r1, now));
	/* an older timeline never does */
	health_note_answer(r1, false, 0, 1);
	CHECK(replica_is_write_primary(r3));

	/* r3 goes down: the best of the others (timeline 1, lowest address) */
	health_note_failure(r3, "connection refused");
	CHECK(r3->state == REPLICA_DOWN);
	CHECK(replica_is_write_primary(r0) && !replica_is_write_primary(r3));
	/* r3 back with its timeline 2: a newer one than r0's, so it takes over */
	fleet.now_cached += 100;
	health_note_answer(r3, false, 0, 2);
	CHECK(replica_is_write_primary(r3));
	/* r3 demoted to a standby: r0 again */
	health_note_answer(r3, true, 0, 0);
	CHECK(r3->timeline == 0 && replica_is_write_primary(r0));
	CHECK(database_primaries(db) == 3);

	/* `any` spreads over every up primary; read-only takes none of them */
	struct database *any = model_db("any", TSA_ANY, 2, NULL);
	struct replica *a1 = model_replica(any, "10.0.0.1:5432", REPLICA_NEW, ROLE_UNKNOWN);
	struct replica *a2 = model_replica(any, "10.0.0.2:5432", REPLICA_NEW, ROLE_UNKNOWN);
	health_note_answer(a1, false, 0, 1);
	health_note_answer(a2, false, 0, 1);
	CHECK(replica_eligible(a1, now) && replica_eligible(a2, now));
	CHECK(replica_is_write_primary(a1) && !replica_is_write_primary(a2));
	model_done();
}

/* workers = N: each worker holds its own struct database of a name (two
 * here, in one list) and checks on its own; the choice is one for both,
 * and a worker that sees the write primary go down moves it for both. */
static void test_split_brain_workers_agree(void)
{
	model_init();
	struct database *w0 = model_db("app", TSA_READ_WRITE, 2, NULL);
	struct database *w1 = model_db("app", TSA_READ_WRITE, 2, NULL);
	struct replica *a1 = model_replica(w0, "10.0.0.1:5432", REPLICA_NEW, ROLE_UNKNOWN);
	struct replica *a2 = model_replica(w0, "10.0.0.2:5432", REPLICA_NEW, ROLE_UNKNOWN);
	struct replica *b1 = model_replica(w1, "10.0.0.1:5432", REPLICA_NEW, ROLE_UNKNOWN);
	struct replica *b2 = model_replica(w1, "10.0.0.2:5432", REPLICA_NEW, ROLE_UNKNOWN);
	/* worker 1 sees only 10.0.0.2 checked, worker 0 both */
	health_note_answer(b2, false, 0, 1);
	health_note_answer(a2, false, 0, 1);
	health_note_answer(a1, false, 0, 1);
	CHECK(replica_is_write_primary(a1));
	/* worker 1's copy follows the registry, even before its own check of .1 */
	CHECK(!replica_is_write_primary(b2));
	health_note_answer(b1, false, 0, 1);
	CHECK(replica_is_write_primary(b1) && !replica_is_write_primary(b2));
	/* worker 1 sees .1 fail: both move to .2; worker 0 still sees .1 up
	 * and keeps the (new) choice rather than flip it back */
	health_note_failure(b1, "connection refused");
	CHECK(replica_is_write_primary(b2) && replica_is_write_primary(a2));
	health_note_answer(a1, false, 0, 1);
	health_note_answer(a2, false, 0, 1);
	CHECK(replica_is_write_primary(a2) && !replica_is_write_primary(a1));
	model_done();
}

/* A promotion seen by one worker before the other: the worker that still
 * sees the promoted one as a standby must not send the writes back to the
 * old primary (an older timeline); a demotion it saw itself does. */
static void test_split_brain_stale_worker(void)
{
	model_init();
	struct database *w0 = model_db("app", TSA_READ_WRITE, 2, NULL);
	struct database *w1 = model_db("app", TSA_READ_WRITE, 2, NULL);
	struct replica *a1 = model_replica(w0, "10.0.0.1:5432", REPLICA_NEW, ROLE_UNKNOWN);
	struct replica *a2 = model_replica(w0, "10.0.0.2:5432", REPLICA_NEW, ROLE_UNKNOWN);
	struct replica *b1 = model_replica(w1, "10.0.0.1:5432", REPLICA_NEW, ROLE_UNKNOWN);
	struct replica *b2 = model_replica(w1, "10.0.0.2:5432", REPLICA_NEW, ROLE_UNKNOWN);
	health_note_answer(a1, false, 0, 1);
	health_note_answer(a2, true, 0, 0);
	health_note_answer(b1, false, 0, 1);
	health_note_answer(b2, true, 0, 0);
	CHECK(replica_is_write_primary(a1) && replica_is_write_primary(b1));
	/* .2 promoted (timeline 2); worker 0 sees it first */
	health_note_answer(a2, false, 0, 2);
	CHECK(replica_is_write_primary(a2));
	/* worker 1 checks .1 (still up, timeline 1) and .2 not yet */
	health_note_answer(b1, false, 0, 1);
	CHECK(!replica_is_write_primary(b1) && replica_is_write_primary(a2));
	health_note_answer(b2, false, 0, 2);
	CHECK(replica_is_write_primary(b2));
	/* .2 demoted, seen by worker 1: back to .1 */
	health_note_answer(b2, true, 0, 0);
	CHECK(replica_is_write_primary(b1) && replica_is_write_primary(a1));
	model_done();
}

int main(void)
{
	RUN(test_dns_follows);
	RUN(test_dns_back_while_draining);
	RUN(test_dns_unchecked);
	RUN(test_hysteresis);
	RUN(test_role_apart_from_health);
	RUN(test_draining_ignores_checks);
	RUN(test_split_brain_choice);
	RUN(test_split_brain_workers_agree);
	RUN(test_split_brain_stale_worker);
	return harness_finish();
}
