/*
 * router.c: picks the replica for a transaction.  Eligibility (health, role
 * for the database's target_session_attrs, lag) comes from database.c; this
 * file only weighs load: least_conn (fewest connections busy on the replica),
 * round_robin or random.
 */
#include "router.h"

#include <stdio.h>
#include <stdlib.h>

#include "runtime.h"

typedef bool (*pool_filter)(const struct pool *p);

static bool has_idle(const struct pool *p)
{
	return p->idle.count > 0;
}

static bool has_room(const struct pool *p)
{
	return pool_total(p) < p->group->db->pool_size;
}

static struct pool *pick(struct pool_group *g, double now, pool_filter ok, bool launching)
{
	struct list *it;
	struct pool *best = NULL;
	long best_load = 0;
	int n = 0;
	int policy = fleet.cfg.load_balance;
	unsigned nth = 0, target = 0;

	if (policy != LB_LEAST_CONN) {
		/* Count the candidates first, then take the chosen one. */
		list_for_each(it, &g->pools) {
			struct pool *p = container_of(it, struct pool, group_node);
			if (ok(p) && replica_eligible(p->replica, now))
				n++;
		}
		if (!n)
			return NULL;
		if (policy == LB_ROUND_ROBIN) {
			target = g->rr++ % (unsigned)n;
		} else {
			unsigned rnd;
			fleet_random(&rnd, sizeof(rnd));
			target = rnd % (unsigned)n;
		}
	}
	list_for_each(it, &g->pools) {
		struct pool *p = container_of(it, struct pool, group_node);
		if (!ok(p) || !replica_eligible(p->replica, now))
			continue;
		if (policy != LB_LEAST_CONN) {
			if (nth++ == target)
				return p;
			continue;
		}
		/* Busy connections on the replica; when opening, this pool's size too,
		 * so new connections spread over the replicas. */
		long load = launching ? (long)pool_total(p) * 1000 + p->replica->active
				      : (long)p->replica->active;
		if (!best || load < best_load) {
			best = p;
			best_load = load;
		}
	}
	return best;
}

struct pool *router_pick_idle(struct pool_group *g, double now)
{
	return pick(g, now, has_idle, false);
}

struct pool *router_pick_launch(struct pool_group *g, double now)
{
	return pick(g, now, has_room, true);
}

void router_explain(struct pool_group *g, double now, char *buf, unsigned len)
{
	struct list *it;
	int total = 0, eligible = 0, full = 0;
	const char *last_error = NULL;
	list_for_each(it, &g->pools) {
		struct pool *p = container_of(it, struct pool, group_node);
		total++;
		if (replica_eligible(p->replica, now)) {
			eligible++;
			if (!has_room(p))
				full++;
		} else if (p->replica->last_error[0]) {
			last_error = p->replica->last_error;
		}
	}
	if (total == 0)
		snprintf(buf, len, "no replica known for database \"%s\" (DNS has no answer yet)",
			 g->db->name);
	else if (eligible == 0)
		snprintf(buf, len, "no replica of database \"%s\" is up for %s (%d known%s%s)",
			 g->db->name, config_tsa_name(g->db->cfg ? g->db->cfg->tsa : TSA_ANY),
			 total, last_error ? ", last error: " : "", last_error ? last_error : "");
	else
		snprintf(buf, len, "all %d eligible replicas of \"%s\" are busy (%d full pools)",
			 eligible, g->db->name, full);
}
