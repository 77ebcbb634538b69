/*
 * router.c: picks the replica for a transaction.  Eligibility (health, role
 * for the database's target_session_attrs, lag) comes from database.c (its
 * inputs from health.c's checks); this file only weighs load: least_conn
 * (fewest connections busy on the replica), round_robin or random.
 */
#include "router.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "runtime.h"
#include "server.h"

typedef bool (*pool_filter)(const struct pool *p);

static bool has_idle(const struct pool *p)
{
	return p->idle.count > 0;
}

static bool has_room(const struct pool *p)
{
	return pool_has_room(p);
}

static bool usable(const struct pool *p)
{
	return has_idle(p) || has_room(p);
}

/*
 * When the pool's connection that went idle last did so, or -1 with none
 * idle.  The idle list is most recently used first, unless
 * server_round_robin cycles it (then the caller does not ask).
 */
static double freed_at(const struct pool *p)
{
	if (!has_idle(p))
		return -1;
	return container_of(list_first(&p->idle.head), struct server, node)->last_used;
}

/*
 * The policy chooses among the eligible pools that pass `ok`:
 * least_conn the replica with the fewest busy connections, round_robin the
 * next one in turn, random any.  least_conn's ties: between idle replicas
 * they go round (even one client at a time spreads); between equally busy
 * ones the replica whose connection was freed last wins, as within a pool.
 * Ten busy clients on three replicas keep the counts at 4 / 3 / 3: were
 * those ties to go round too, the 4 would wander and every replica would
 * keep four backends at work where ten in all would do, each one colder.
 * (Per worker: the pools, and so the freed times, are the worker's own.)
 */
static struct pool *pick(struct pool_group *g, double now, const struct route_need *need,
			 pool_filter ok)
{
	struct pool *cand[64];
	int n = 0;
	struct list *it;
	list_for_each(it, &g->pools) {
		struct pool *p = container_of(it, struct pool, group_node);
		if (n < 64 && ok(p) && replica_eligible_for(p->replica, now, need))
			cand[n++] = p;
	}
	if (!n)
		return NULL;
	unsigned start = g->rr++;
	if (fleet.cfg.load_balance == LB_RANDOM) {
		unsigned rnd;
		fleet_random(&rnd, sizeof(rnd));
		return cand[rnd % (unsigned)n];
	}
	if (fleet.cfg.load_balance == LB_ROUND_ROBIN)
		return cand[start % (unsigned)n];
	/* From a rotating start, so ties that go round do. */
	bool warm = !fleet.cfg.server_round_robin;
	int j = (int)(start % (unsigned)n);
	struct pool *best = cand[j];
	int best_busy = replica_busy(best->replica);
	for (int i = 1; i < n; i++) {
		if (++j == n)
			j = 0;
		int busy = replica_busy(cand[j]->replica);
		bool warmer_tie = warm && busy == best_busy && busy > 0 &&
				  freed_at(cand[j]) > freed_at(best);
		if (busy < best_busy || warmer_tie) {
			best = cand[j];
			best_busy = busy;
		}
	}
	return best;
}

struct pool *router_pick(struct pool_group *g, double now, const struct route_need *need)
{
	return pick(g, now, need, usable);
}

struct pool *router_pick_idle(struct pool_group *g, double now, const struct route_need *need)
{
	return pick(g, now, need, has_idle);
}

struct pool *router_pick_launch(struct pool_group *g, double now, const struct route_need *need)
{
	return pick(g, now, need, has_room);
}

/* Appends ", <n> <what>" (or ": <n> <what>" first) to a breakdown. */
static void count_part(char *buf, size_t len, int n, const char *what)
{
	size_t used = strlen(buf);
	if (n == 0 || used >= len)
		return;
	snprintf(buf + used, len - used, "%s%d %s", used ? ", " : "", n, what);
}

/*
 * Why no replica of db can take its target role, e.g. 'no replica of
 * database "app_rw" is up for read-write (3 known: 1 down, 2 standby)'.
 * Returns false, buf untouched, when one can.  /readyz says the same.
 */
bool router_explain_db(const struct database *db, double now, char *buf, unsigned len)
{
	struct list *it;
	int total = 0;
	int by_state[REPLICA_DRAINING + 1] = {0};
	int wrong_role[ROLE_STANDBY + 1] = {0};
	int lagging = 0;
	const char *last_error = NULL;
	list_for_each(it, &db->replicas) {
		const struct replica *r = container_of(it, struct replica, node);
		total++;
		if (replica_eligible(r, now))
			return false;
		if (r->state != REPLICA_UP)
			by_state[r->state]++;
		else if (!replica_lag_ok(r))
			lagging++;
		else
			wrong_role[r->role]++; /* up, but not what the target asks for */
		if (r->state != REPLICA_UP && r->last_error[0])
			last_error = r->last_error;
	}
	if (total == 0) {
		snprintf(buf, len, "no replica known for database \"%s\" (DNS has no answer yet)",
			 db->name);
		return true;
	}
	char parts[160] = "";
	for (int s = REPLICA_NEW; s <= REPLICA_DRAINING; s++)
		count_part(parts, sizeof(parts), by_state[s],
			   s == REPLICA_NEW ? "not checked yet"
					    : replica_state_name((enum replica_state)s));
	count_part(parts, sizeof(parts), wrong_role[ROLE_PRIMARY], "primary");
	count_part(parts, sizeof(parts), wrong_role[ROLE_STANDBY], "standby");
	count_part(parts, sizeof(parts), lagging, "standby lagging beyond max_replica_lag");
	snprintf(buf, len, "no replica of database \"%s\" is up for %s (%d known: %s%s%s)",
		 db->name, config_tsa_name(database_tsa(db)), total, parts,
		 last_error ? "; last error: " : "", last_error ? last_error : "");
	return true;
}

void router_explain(struct pool_group *g, double now, char *buf, unsigned len)
{
	struct list *it;
	int eligible = 0, full = 0;
	list_for_each(it, &g->pools) {
		struct pool *p = container_of(it, struct pool, group_node);
		if (replica_eligible(p->replica, now)) {
			eligible++;
			if (!has_room(p))
				full++;
		}
	}
	if (eligible == 0 && router_explain_db(g->db, now, buf, len))
		return;
	int max;
	const char *limit = pool_limit_reached(g, &max);
	if (limit) {
		/* In a fleet, the limit is shared: say what this instance has. */
		int live, rank;
		char share[120] = "";
		fleet_peers(&live, &rank);
		if (live > 1)
			snprintf(share, sizeof(share),
				 ", this instance's share %d of %d live pgfleet instances",
				 pool_share_of(max, live, rank), live);
		snprintf(buf, len, "%s (%d%s) reached for %s \"%s\"", limit, max, share,
			 limit[4] == 'd' ? "database" : "user",
			 limit[4] == 'd'			  ? g->db->name
			 : g->db->cfg && g->db->cfg->user ? g->db->cfg->user
							  : g->user);
		return;
	}
	snprintf(buf, len, "all %d eligible replicas of \"%s\" are busy (%d full pools)",
		 eligible, g->db->name, full);
}

const struct pool_router router_for_pools = {
	.pick = router_pick,
	.pick_idle = router_pick_idle,
	.pick_launch = router_pick_launch,
	.explain = router_explain,
};
