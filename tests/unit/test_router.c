/*
 * test_router.c: router.c's choice of replica, on replicas, pools and idle
 * server connections built in memory (model.h): load_balance, the
 * target_session_attrs roles, max_replica_lag, health states, least_conn's
 * tie rules as the README states them, and what a client is told when no
 * replica fits.
 */
#include "harness.h"
#include "model.h"

#include "router.h"

/* Three replicas of one database, one user: the usual test bed. */
struct bed {
	struct database *db;
	struct replica *r[3];
	struct pool_group *g;
};

static void bed_make(struct bed *b, const char *name, int tsa, enum replica_role r0,
		     enum replica_role r1, enum replica_role r2)
{
	enum replica_role roles[3] = {r0, r1, r2};
	static const char *addrs[3] = {"10.0.0.1:5432", "10.0.0.2:5432", "10.0.0.3:5432"};
	b->db = model_db(name, tsa, 4, NULL);
	for (int i = 0; i < 3; i++)
		b->r[i] = model_replica(b->db, addrs[i], REPLICA_UP, roles[i]);
	b->g = pool_group_get(b->db, "app");
}

/* Which replica (0..2) router_pick chose, -1 for none. */
static int pick(struct bed *b)
{
	struct pool *p = router_pick(b->g, fleet_now(), NULL);
	for (int i = 0; p && i < 3; i++)
		if (p->replica == b->r[i])
			return i;
	return -1;
}

/* How often each replica was picked in n picks. */
static void pick_counts(struct bed *b, int n, int counts[3])
{
	counts[0] = counts[1] = counts[2] = 0;
	for (int i = 0; i < n; i++) {
		int k = pick(b);
		if (k >= 0)
			counts[k]++;
	}
}

static void test_least_conn_fewest_busy(void)
{
	model_init();
	struct bed b;
	bed_make(&b, "app", TSA_ANY, ROLE_PRIMARY, ROLE_STANDBY, ROLE_STANDBY);
	b.r[0]->active = 2;
	b.r[1]->active = 0;
	b.r[2]->active = 1;
	int c[3];
	pick_counts(&b, 9, c);
	CHECK(c[1] == 9); /* the least busy, whatever the rotating start */
	b.r[1]->active = 3;
	pick_counts(&b, 9, c);
	CHECK(c[2] == 9);
	model_done();
}

/* README: "Ties between idle replicas rotate, so even one client spreads". */
static void test_least_conn_idle_ties_rotate(void)
{
	model_init();
	struct bed b;
	bed_make(&b, "app", TSA_ANY, ROLE_PRIMARY, ROLE_STANDBY, ROLE_STANDBY);
	int c[3];
	pick_counts(&b, 3, c);
	CHECK(c[0] == 1 && c[1] == 1 && c[2] == 1);
	pick_counts(&b, 30, c);
	CHECK(c[0] == 10 && c[1] == 10 && c[2] == 10);
	model_done();
}

/* README: "between equally busy ones the replica whose connection was
 * freed last wins (as within a pool)"; server_round_robin = 1 rotates
 * those ties too. */
static void test_least_conn_busy_ties_stay_warm(void)
{
	model_init();
	struct bed b;
	bed_make(&b, "app", TSA_ANY, ROLE_PRIMARY, ROLE_STANDBY, ROLE_STANDBY);
	for (int i = 0; i < 3; i++)
		b.r[i]->active = 1;
	(void)model_server_idle(model_pool(b.g, b.r[0]), 990.0);
	(void)model_server_idle(model_pool(b.g, b.r[1]), 995.0); /* freed last */
	/* b.r[2] has no idle connection (room only): never the warmer one */
	int c[3];
	pick_counts(&b, 9, c);
	CHECK(c[1] == 9);

	/* A less busy replica still beats a warmer one. */
	b.r[2]->active = 0;
	pick_counts(&b, 6, c);
	CHECK(c[2] == 6);
	b.r[2]->active = 1;

	fleet.cfg.server_round_robin = true;
	pick_counts(&b, 9, c);
	CHECK(c[0] == 3 && c[1] == 3 && c[2] == 3);
	model_done();
}

static void test_round_robin_ignores_load(void)
{
	model_init();
	fleet.cfg.load_balance = LB_ROUND_ROBIN;
	struct bed b;
	bed_make(&b, "app", TSA_ANY, ROLE_PRIMARY, ROLE_STANDBY, ROLE_STANDBY);
	b.r[0]->active = 3; /* least_conn would never pick it */
	int seq[6];
	for (int i = 0; i < 6; i++)
		seq[i] = pick(&b);
	/* each in turn, in the same order twice */
	CHECK(seq[0] != seq[1] && seq[1] != seq[2] && seq[0] != seq[2]);
	CHECK(seq[3] == seq[0] && seq[4] == seq[1] && seq[5] == seq[2]);
	/* an ineligible replica leaves the turn to the others */
	b.r[1]->state = REPLICA_DOWN;
	int c[3];
	pick_counts(&b, 10, c);
	CHECK(c[1] == 0 && c[0] == 5 && c[2] == 5);
	model_done();
}

static void test_random_among_eligible(void)
{
	model_init();
	fleet.cfg.load_balance = LB_RANDOM;
	struct bed b;
	bed_make(&b, "app", TSA_ANY, ROLE_PRIMARY, ROLE_STANDBY, ROLE_STANDBY);
	b.r[2]->state = REPLICA_DRAINING;
	int c[3];
	pick_counts(&b, 400, c);
	CHECK(c[2] == 0);
	CHECK(c[0] + c[1] == 400);
	CHECK(c[0] > 100 && c[1] > 100); /* both used (a miss here is ~1e-20) */
	model_done();
}

/* target_session_attrs: which roles each target takes. */
static void test_target_roles(void)
{
	static const struct {
		int tsa;
		bool primary, standby, unknown; /* eligible? */
	} cases[] = {
		{TSA_ANY, true, true, true},
		{TSA_READ_WRITE, true, false, true},
		{TSA_PRIMARY, true, false, true},
		{TSA_READ_ONLY, false, true, true},
		{TSA_STANDBY, false, true, true},
		/* a standby is up: the primary gets none */
		{TSA_PREFER_STANDBY, false, true, true},
	};
	for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
		model_init();
		struct bed b;
		bed_make(&b, "app", cases[i].tsa, ROLE_PRIMARY, ROLE_STANDBY, ROLE_UNKNOWN);
		double now = fleet_now();
		CHECK(replica_eligible(b.r[0], now) == cases[i].primary);
		CHECK(replica_eligible(b.r[1], now) == cases[i].standby);
		CHECK(replica_eligible(b.r[2], now) == cases[i].unknown);
		int c[3];
		pick_counts(&b, 12, c);
		CHECK((c[0] > 0) == cases[i].primary);
		CHECK((c[1] > 0) == cases[i].standby);
		CHECK((c[2] > 0) == cases[i].unknown);
		model_done();
	}
}

/* prefer-standby: standbys while one is up (and within lag), else the
 * primary. */
static void test_prefer_standby_falls_back(void)
{
	model_init();
	struct bed b;
	bed_make(&b, "app", TSA_PREFER_STANDBY, ROLE_PRIMARY, ROLE_STANDBY, ROLE_STANDBY);
	int c[3];
	pick_counts(&b, 10, c);
	CHECK(c[0] == 0 && c[1] == 5 && c[2] == 5);

	b.r[1]->state = REPLICA_DOWN;
	pick_counts(&b, 10, c);
	CHECK(c[0] == 0 && c[1] == 0 && c[2] == 10);

	b.r[2]->state = REPLICA_BANNED;
	pick_counts(&b, 10, c);
	CHECK(c[0] == 10);

	/* a standby back up but lagging beyond max_replica_lag counts as none */
	b.r[2]->state = REPLICA_UP;
	b.r[2]->lag_s = 60;
	((struct db_config *)b.db->cfg)->max_replica_lag = 10;
	pick_counts(&b, 10, c);
	CHECK(c[0] == 10 && c[2] == 0);
	b.r[2]->lag_s = 2;
	pick_counts(&b, 10, c);
	CHECK(c[0] == 0 && c[2] == 10);
	model_done();
}

static void test_max_replica_lag(void)
{
	model_init();
	struct bed b;
	bed_make(&b, "app", TSA_ANY, ROLE_PRIMARY, ROLE_STANDBY, ROLE_STANDBY);
	double now = fleet_now();
	b.r[0]->lag_s = 100; /* a primary's lag never excludes it */
	b.r[1]->lag_s = 30;
	b.r[2]->lag_s = 5;
	/* default max_replica_lag = 0: no limit */
	CHECK(fleet.cfg.max_replica_lag == 0);
	CHECK(replica_eligible(b.r[1], now));
	/* the global setting */
	fleet.cfg.max_replica_lag = 10;
	CHECK(replica_eligible(b.r[0], now));
	CHECK(!replica_eligible(b.r[1], now));
	CHECK(replica_eligible(b.r[2], now));
	CHECK(!replica_lag_ok(b.r[1]));
	int c[3];
	pick_counts(&b, 10, c);
	CHECK(c[1] == 0 && c[0] == 5 && c[2] == 5);
	/* the entry's own max_replica_lag wins over the global one */
	((struct db_config *)b.db->cfg)->max_replica_lag = 60;
	CHECK(replica_eligible(b.r[1], now));
	((struct db_config *)b.db->cfg)->max_replica_lag = 1;
	CHECK(!replica_eligible(b.r[2], now));
	/* exactly at the limit is within it */
	((struct db_config *)b.db->cfg)->max_replica_lag = 5;
	CHECK(replica_eligible(b.r[2], now));
	model_done();
}

/* Health: only up replicas take work while checks run; without checks a
 * new replica takes traffic and a down one gets a retry after retry_at. */
static void test_health_states(void)
{
	model_init();
	struct bed b;
	bed_make(&b, "app", TSA_ANY, ROLE_PRIMARY, ROLE_STANDBY, ROLE_STANDBY);
	double now = fleet_now();
	CHECK(fleet.cfg.health_check_period > 0);
	enum replica_state off[] = {REPLICA_NEW, REPLICA_DOWN, REPLICA_BANNED, REPLICA_DRAINING};
	for (size_t i = 0; i < 4; i++) {
		b.r[1]->state = off[i];
		b.r[1]->retry_at = now - 1; /* a passed retry time brings nothing back */
		CHECK(!replica_eligible(b.r[1], now));
		int c[3];
		pick_counts(&b, 6, c);
		CHECK(c[1] == 0 && c[0] == 3 && c[2] == 3);
	}

	fleet.cfg.health_check_period = 0; /* checks off */
	b.r[1]->state = REPLICA_NEW;
	CHECK(replica_eligible(b.r[1], now));
	b.r[1]->state = REPLICA_DOWN;
	b.r[1]->retry_at = now + 5;
	CHECK(!replica_eligible(b.r[1], now));
	CHECK(replica_eligible(b.r[1], now + 5));
	b.r[1]->state = REPLICA_BANNED;
	CHECK(!replica_eligible(b.r[1], now));
	CHECK(replica_eligible(b.r[1], now + 6));
	b.r[1]->state = REPLICA_DRAINING;
	CHECK(!replica_eligible(b.r[1], now + 100));
	model_done();
}

/* router_pick_idle: only pools with an idle connection; router_pick_launch:
 * only pools with room under pool_size; router_pick: either. */
static void test_idle_and_room(void)
{
	model_init();
	struct bed b;
	bed_make(&b, "app", TSA_ANY, ROLE_PRIMARY, ROLE_STANDBY, ROLE_STANDBY);
	double now = fleet_now();
	CHECK(router_pick_idle(b.g, now, NULL) == NULL);
	struct pool *p1 = model_pool(b.g, b.r[1]);
	(void)model_server_idle(p1, 999.0);
	for (int i = 0; i < 5; i++)
		CHECK(router_pick_idle(b.g, now, NULL) == p1);

	/* replica 0 full: 4 = pool_size connections logging in */
	struct pool *p0 = model_pool(b.g, b.r[0]);
	for (int i = 0; i < 4; i++)
		(void)model_server_login(p0);
	CHECK(!pool_has_room(p0));
	CHECK(pool_total(p0) == 4);
	for (int i = 0; i < 6; i++) {
		CHECK(router_pick_launch(b.g, now, NULL) != p0);
		CHECK(router_pick(b.g, now, NULL) != p0);
	}
	/* full and idle: still picked for its idle connection */
	p1 = model_pool(b.g, b.r[1]);
	for (int i = 0; i < 3; i++)
		(void)model_server_login(p1);
	CHECK(!pool_has_room(p1));
	int c[3];
	pick_counts(&b, 6, c);
	CHECK(c[0] == 0 && c[1] > 0 && c[2] > 0);
	for (int i = 0; i < 4; i++)
		CHECK(router_pick_launch(b.g, now, NULL) == model_pool(b.g, b.r[2]));
	model_done();
}

/* Nothing eligible: no pool, and the reason the README quotes. */
static void test_nothing_eligible(void)
{
	model_init();
	struct bed b;
	bed_make(&b, "app_rw", TSA_READ_WRITE, ROLE_PRIMARY, ROLE_STANDBY, ROLE_STANDBY);
	b.r[0]->state = REPLICA_DOWN;
	double now = fleet_now();
	CHECK(router_pick(b.g, now, NULL) == NULL);
	CHECK(router_pick_idle(b.g, now, NULL) == NULL);
	CHECK(router_pick_launch(b.g, now, NULL) == NULL);
	char why[256];
	router_explain(b.g, now, why, sizeof(why));
	CHECK_STR(why, "no replica of database \"app_rw\" is up for read-write "
		       "(3 known: 1 down, 2 standby)");
	/* the replica's last error comes along */
	snprintf(b.r[0]->last_error, sizeof(b.r[0]->last_error), "connect: Connection refused");
	router_explain(b.g, now, why, sizeof(why));
	CHECK_STR(why, "no replica of database \"app_rw\" is up for read-write "
		       "(3 known: 1 down, 2 standby; last error: connect: Connection refused)");
	CHECK(router_explain_db(b.db, now, why, sizeof(why)));

	/* lagging standbys and unchecked ones are told apart */
	struct bed ro;
	bed_make(&ro, "app_ro", TSA_READ_ONLY, ROLE_PRIMARY, ROLE_STANDBY, ROLE_STANDBY);
	((struct db_config *)ro.db->cfg)->max_replica_lag = 1;
	ro.r[1]->lag_s = 9;
	ro.r[2]->state = REPLICA_NEW;
	CHECK(router_pick(ro.g, now, NULL) == NULL);
	router_explain(ro.g, now, why, sizeof(why));
	CHECK_STR(why, "no replica of database \"app_ro\" is up for read-only (3 known: 1 not "
		       "checked yet, 1 primary, 1 standby lagging beyond max_replica_lag)");

	/* one can: router_explain_db says nothing and leaves buf alone */
	b.r[0]->state = REPLICA_UP;
	snprintf(why, sizeof(why), "untouched");
	CHECK(!router_explain_db(b.db, now, why, sizeof(why)));
	CHECK_STR(why, "untouched");

	/* eligible but every pool full */
	for (int i = 0; i < 4; i++)
		(void)model_server_login(model_pool(b.g, b.r[0]));
	CHECK(router_pick(b.g, now, NULL) == NULL);
	router_explain(b.g, now, why, sizeof(why));
	CHECK_STR(why, "all 1 eligible replicas of \"app_rw\" are busy (1 full pools)");

	/* no replica at all yet */
	struct database *empty = model_db("nodns", TSA_ANY, 4, NULL);
	struct pool_group *g = pool_group_get(empty, "app");
	CHECK(router_pick(g, now, NULL) == NULL);
	router_explain(g, now, why, sizeof(why));
	CHECK_STR(why, "no replica known for database \"nodns\" (DNS has no answer yet)");
	model_done();
}

int main(void)
{
	RUN(test_least_conn_fewest_busy);
	RUN(test_least_conn_idle_ties_rotate);
	RUN(test_least_conn_busy_ties_stay_warm);
	RUN(test_round_robin_ignores_load);
	RUN(test_random_among_eligible);
	RUN(test_target_roles);
	RUN(test_prefer_standby_falls_back);
	RUN(test_max_replica_lag);
	RUN(test_health_states);
	RUN(test_idle_and_room);
	RUN(test_nothing_eligible);
	return harness_finish();
}
