/*
 * pool.c: pools per (database, user, replica) and the wait queue per
 * (database, user).  A server that becomes ready goes to the first waiting
 * client, else onto its pool's idle list, so no idle server sits beside a
 * waiting client.  New connections are opened only for clients that wait,
 * on replicas the router names, so one slow replica holds no one up: the
 * queue is shared, and any replica's server can serve its head.
 */
#include "pool.h"

#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "client.h"
#include "log.h"
#include "mailbox.h"
#include "runtime.h"
#include "server.h"

/* ---- the process-wide limit (workers = N) -------------------------------------- */

/* Set once at start-up (pool.h), process-wide, read-only after. */
static const struct pool_router *router;

void pool_set_router(const struct pool_router *r)
{
	router = r;
}

static pthread_mutex_t slots_lock = PTHREAD_MUTEX_INITIALIZER;
static struct pool_slot *slots;

struct pool_slot *pool_slot_get(const char *db, const char *user, const char *addr)
{
	char key[sizeof(((struct pool_slot *)0)->key)];
	snprintf(key, sizeof(key), "%s/%s/%s", db, user, addr);
	pthread_mutex_lock(&slots_lock);
	struct pool_slot *sl;
	for (sl = slots; sl; sl = sl->next)
		if (strcmp(sl->key, key) == 0)
			break;
	if (!sl && (sl = calloc(1, sizeof(*sl)))) {
		snprintf(sl->key, sizeof(sl->key), "%s", key);
		sl->next = slots;
		slots = sl;
	}
	if (sl)
		sl->refs++;
	pthread_mutex_unlock(&slots_lock);
	return sl;
}

void pool_slot_put(struct pool_slot *sl)
{
	pthread_mutex_lock(&slots_lock);
	if (--sl->refs == 0) {
		struct pool_slot **pp = &slots;
		while (*pp != sl)
			pp = &(*pp)->next;
		*pp = sl->next;
		free(sl);
	}
	pthread_mutex_unlock(&slots_lock);
}

struct shared_welcome {
	struct shared_welcome *next;
	char key[2 * NAME_MAX_LEN + 2];
	uint8_t *data;
	uint32_t len;
};

static struct shared_welcome *welcomes; /* under slots_lock */

static void welcome_key(const struct pool_group *g, char *key, size_t len)
{
	snprintf(key, len, "%s/%s", g->db->name, g->user);
}

void pool_welcome_publish(const struct pool_group *g)
{
	char key[sizeof(((struct shared_welcome *)0)->key)];
	welcome_key(g, key, sizeof(key));
	uint8_t *copy = malloc(g->welcome.len ? g->welcome.len : 1);
	if (!copy)
		return;
	memcpy(copy, g->welcome.data, g->welcome.len);
	pthread_mutex_lock(&slots_lock);
	struct shared_welcome *w;
	for (w = welcomes; w; w = w->next)
		if (strcmp(w->key, key) == 0)
			break;
	if (!w && (w = calloc(1, sizeof(*w)))) {
		snprintf(w->key, sizeof(w->key), "%s", key);
		w->next = welcomes;
		welcomes = w;
	}
	if (w) {
		free(w->data);
		w->data = copy;
		w->len = g->welcome.len;
		copy = NULL;
	}
	pthread_mutex_unlock(&slots_lock);
	free(copy);
}

bool pool_params_ok(const struct pool_group *g, uint64_t set_id)
{
	for (unsigned i = 0; i < POOL_PARAMS_OK; i++)
		if (g->params_ok[i] == set_id)
			return true;
	return false;
}

void pool_params_ok_add(struct pool_group *g, uint64_t set_id)
{
	if (pool_params_ok(g, set_id))
		return;
	g->params_ok[g->params_ok_next] = set_id;
	g->params_ok_next = (g->params_ok_next + 1) % POOL_PARAMS_OK;
}

bool pool_welcome_adopt(struct pool_group *g)
{
	char key[sizeof(((struct shared_welcome *)0)->key)];
	welcome_key(g, key, sizeof(key));
	bool found = false;
	pthread_mutex_lock(&slots_lock);
	for (struct shared_welcome *w = welcomes; w; w = w->next) {
		if (strcmp(w->key, key) == 0) {
			wbuf_reset(&g->welcome);
			wbuf_put(&g->welcome, w->data, w->len);
			found = true;
			break;
		}
	}
	pthread_mutex_unlock(&slots_lock);
	if (found)
		g->have_welcome = true;
	return found;
}

void pool_welcome_forget(const char *db)
{
	size_t n = strlen(db);
	pthread_mutex_lock(&slots_lock);
	for (struct shared_welcome **pp = &welcomes; *pp;) {
		struct shared_welcome *w = *pp;
		if (strncmp(w->key, db, n) == 0 && w->key[n] == '/') {
			*pp = w->next;
			free(w->data);
			free(w);
		} else {
			pp = &w->next;
		}
	}
	pthread_mutex_unlock(&slots_lock);
}

void pool_shared_free(void)
{
	pthread_mutex_lock(&slots_lock);
	while (welcomes) {
		struct shared_welcome *w = welcomes;
		welcomes = w->next;
		free(w->data);
		free(w);
	}
	pthread_mutex_unlock(&slots_lock);
}

static uint64_t my_bit(void)
{
	return (uint64_t)1 << worker_index();
}

static int fair_share(const struct pool *p);

/* ---- limits: max_db_connections, max_user_connections, reserve, min ---------- */

int pool_db_max_connections(const struct database *db)
{
	const struct db_config *c = db->cfg;
	return c && c->max_db_connections >= 0 ? c->max_db_connections
					       : (int)fleet.cfg.max_db_connections;
}

int pool_user_max_connections(const struct pool_group *g)
{
	if (fleet.cfg.n_user_cfgs) {
		/* the user that logs in to the server (as the slot is keyed) */
		const struct db_config *c = g->db->cfg;
		const struct user_config *u =
		    config_find_user_cfg(&fleet.cfg, c && c->user ? c->user : g->user);
		if (u && u->max_user_connections >= 0)
			return u->max_user_connections;
	}
	return (int)fleet.cfg.max_user_connections;
}

int pool_min_size(const struct database *db)
{
	const struct db_config *c = db->cfg;
	int n = c && c->min_pool_size >= 0 ? c->min_pool_size : (int)fleet.cfg.min_pool_size;
	return n < db->pool_size ? n : db->pool_size; /* PgBouncer caps it too */
}

int pool_reserve_size(const struct database *db)
{
	const struct db_config *c = db->cfg;
	return c && c->reserve_pool_size >= 0 ? c->reserve_pool_size
					      : (int)fleet.cfg.reserve_pool_size;
}

/* ---- the fleet-wide budget (issue 20): this instance's share of a limit ------ */

int pool_share_of(int limit, int live, int rank)
{
	if (limit <= 0)
		return POOL_NO_LIMIT;
	if (live < 1)
		live = 1;
	if (rank < 0 || rank >= live)
		rank = 0;
	/* The first (limit % live) ranks take one more: the shares add up to
	 * the limit exactly, and every instance computes its own alike. */
	return limit / live + (rank < limit % live ? 1 : 0);
}

int pool_share(int limit)
{
	if (limit <= 0)
		return POOL_NO_LIMIT; /* the usual case: no atomics on each release */
	int live, rank;
	fleet_peers(&live, &rank);
	return pool_share_of(limit, live, rank);
}

int pool_db_share(const struct database *db)
{
	return pool_share(pool_db_max_connections(db));
}

int pool_user_share(const struct pool_group *g)
{
	return pool_share(pool_user_max_connections(g));
}

/* The registry keys of the limit slots: a "\x01" no replica key starts with. */
static struct pool_slot *db_slot_get(const char *db)
{
	return pool_slot_get("\x01" "db", db, "");
}

static struct pool_slot *user_slot_get(const char *user)
{
	return pool_slot_get("\x01" "user", user, "");
}

static int slot_count(struct pool_slot *sl)
{
	if (!sl)
		return 0;
	int n = atomic_load(&sl->total);
	pool_slot_put(sl);
	return n;
}

int pool_db_connections(const char *db)
{
	return slot_count(db_slot_get(db));
}

int pool_user_connections(const char *user)
{
	return slot_count(user_slot_get(user));
}

/* share: this instance's share of the limit (pool_share), POOL_NO_LIMIT
 * for none; a share of 0 is full from the start. */
static bool limit_full(const struct pool_slot *sl, int share)
{
	return share != POOL_NO_LIMIT &&
	       atomic_load_explicit(&sl->total, memory_order_relaxed) >= share;
}

/* More connections than this instance's share: the share shrank (a peer
 * came) and the ones above it are closed once idle. */
static bool limit_over(const struct pool_slot *sl, int share)
{
	return share != POOL_NO_LIMIT &&
	       atomic_load_explicit(&sl->total, memory_order_relaxed) > share;
}

/* Why a connection above the share is closed (server_close). */
#define SHARE_SHRANK                                                                               \
	"this instance's share of max_db_connections or max_user_connections shrank"

static bool limits_full(const struct pool_group *g)
{
	return limit_full(g->db_slot, pool_db_share(g->db)) ||
	       limit_full(g->user_slot, pool_user_share(g));
}

static bool limits_over(const struct pool_group *g)
{
	return limit_over(g->db_slot, pool_db_share(g->db)) ||
	       limit_over(g->user_slot, pool_user_share(g));
}

const char *pool_limit_reached(const struct pool_group *g, int *max)
{
	if (limit_full(g->db_slot, pool_db_share(g->db))) {
		*max = pool_db_max_connections(g->db);
		return "max_db_connections";
	}
	if (limit_full(g->user_slot, pool_user_share(g))) {
		*max = pool_user_max_connections(g);
		return "max_user_connections";
	}
	return NULL;
}

static bool limit_take(struct pool_slot *sl, int share)
{
	int cur = atomic_load(&sl->total);
	do {
		if (share != POOL_NO_LIMIT && cur >= share)
			return false;
	} while (!atomic_compare_exchange_weak(&sl->total, &cur, cur + 1));
	atomic_fetch_add_explicit(&sl->by_worker[worker_index()], 1, memory_order_relaxed);
	return true;
}

static void kick_workers(uint64_t mask);

static void limit_give(struct pool_slot *sl)
{
	atomic_fetch_sub_explicit(&sl->by_worker[worker_index()], 1, memory_order_relaxed);
	atomic_fetch_sub(&sl->total, 1);
	uint64_t others = atomic_load(&sl->wanted) & ~my_bit();
	if (others)
		kick_workers(others); /* room: a worker whose clients wait may open one */
}

/* workers = N: does this worker hold its share of a limit or more while
 * another worker's clients wait for its room?  Then it opens no more (or
 * the room it gives back on release comes straight back here). */
static bool over_share(const struct pool_slot *sl, int max)
{
	uint64_t others = atomic_load(&sl->wanted) & ~my_bit();
	if (!others || max == POOL_NO_LIMIT)
		return false;
	int share = max / __builtin_popcountll(others | my_bit());
	int mine = atomic_load_explicit(&sl->by_worker[worker_index()], memory_order_relaxed);
	return mine >= (share > 0 ? share : 1);
}

/* pool_size, plus reserve_pool_size once the head of the group's queue has
 * waited reserve_pool_timeout (PgBouncer's reserve pool). */
static int pool_cap(const struct pool *p)
{
	const struct pool_group *g = p->group;
	int cap = g->db->pool_size;
	int extra = pool_reserve_size(g->db);
	if (extra > 0 && g->waiting.count) {
		const struct client *c =
		    container_of(list_first(&g->waiting.head), struct client, node);
		if (fleet_now() - c->wait_start >= fleet.cfg.reserve_pool_timeout)
			cap += extra;
	}
	return cap;
}

bool pool_has_room(const struct pool *p)
{
	return pool_count(p) < pool_cap(p) && !limits_full(p->group);
}

static void slot_give(struct pool *p);

bool pool_reserve(struct pool *p, bool warm)
{
	int cap = warm ? pool_min_size(p->group->db) : pool_cap(p);
	bool reserve;
	if (!p->slot) {
		if (pool_total(p) >= cap)
			return false;
		reserve = !warm && pool_total(p) >= p->group->db->pool_size;
	} else {
		if (!warm && (atomic_load(&p->slot->wanted) & ~my_bit())) {
			/* Another worker's clients wait for room too: open no
			 * more than this worker's share, or the room it just
			 * gave back (on release, above its share) comes straight
			 * back here and both workers close and reopen
			 * connections on every transaction. */
			int share = fair_share(p);
			if (pool_total(p) >= (share > 0 ? share : 1))
				return false;
		}
		int cur = atomic_load(&p->slot->total);
		do {
			if (cur >= cap)
				return false;
		} while (!atomic_compare_exchange_weak(&p->slot->total, &cur, cur + 1));
		reserve = !warm && cur >= p->group->db->pool_size;
	}
	struct pool_group *g = p->group;
	int db_share = pool_db_share(g->db), user_share = pool_user_share(g);
	if (!warm && (over_share(g->db_slot, db_share) || over_share(g->user_slot, user_share))) {
		slot_give(p);
		return false;
	}
	/* The share caps min_pool_size and reserve_pool_size connections too. */
	if (!limit_take(g->db_slot, db_share)) {
		slot_give(p);
		return false;
	}
	if (!limit_take(g->user_slot, user_share)) {
		limit_give(g->db_slot);
		slot_give(p);
		return false;
	}
	if (reserve) /* as PgBouncer says so: the pool size is too small for the load */
		log_info("reserve pool used", "db", g->db->name, "user", g->user, "replica",
			 p->replica->addr_str, NULL);
	return true;
}

/* Tells the workers in `mask` to look at their pools again. */
static void kick_workers(uint64_t mask)
{
	for (int i = 0; i < worker_count(); i++)
		if (i != worker_index() && (mask & ((uint64_t)1 << i)))
			(void)worker_post(i, WMSG_POOL_KICK, 0, 0, NULL, NULL);
}

static void slot_give(struct pool *p)
{
	if (!p->slot)
		return;
	atomic_fetch_sub(&p->slot->total, 1);
	uint64_t others = atomic_load(&p->slot->wanted) & ~my_bit();
	if (others)
		kick_workers(others); /* room: a starved worker may open one now */
}

void pool_unreserve(struct pool *p)
{
	slot_give(p);
	limit_give(p->group->db_slot);
	limit_give(p->group->user_slot);
}

bool pool_yield_server(const struct pool *p)
{
	return p->slot && (atomic_load(&p->slot->wanted) & ~my_bit()) &&
	       atomic_load(&p->slot->total) >= p->group->db->pool_size;
}

/* The part of pool_size this worker keeps while others' clients wait too. */
static int fair_share(const struct pool *p)
{
	int n = __builtin_popcountll(atomic_load(&p->slot->wanted) | my_bit());
	return p->group->db->pool_size / n;
}

/* Our clients wait and no pool has room: say so, once, to the others. */
static void want_room(struct pool_group *g, bool want)
{
	struct list *it;
	list_for_each(it, &g->pools) {
		struct pool *p = container_of(it, struct pool, group_node);
		if (!p->slot)
			continue;
		if (!want) {
			if (atomic_load(&p->slot->wanted) & my_bit())
				atomic_fetch_and(&p->slot->wanted, ~my_bit());
			continue;
		}
		if (pool_has_room(p))
			continue;
		uint64_t before = atomic_fetch_or(&p->slot->wanted, my_bit());
		if (!(before & my_bit()))
			kick_workers(~my_bit());
	}
}

/* Idle connections another worker's waiting clients could use: closed,
 * which gives the room back (pool_unreserve tells the waiting worker).
 * Beyond this worker's fair share at once; within it only those unused for
 * a second: a busy worker's queue is empty for moments between
 * transactions, and giving its share away then would make both workers
 * log in anew on every few transactions. */
#define YIELD_IDLE_AFTER 1.0
static void give_up_idle(struct pool_group *g)
{
	struct list *it;
	if (g->waiting.count)
		return;
	double now = fleet_now();
	list_for_each(it, &g->pools) {
		struct pool *p = container_of(it, struct pool, group_node);
		while (p->idle.count && pool_yield_server(p)) {
			/* Most recently used first: the tail has waited longest. */
			struct server *s = container_of(p->idle.head.prev, struct server, node);
			if (pool_total(p) <= fair_share(p) && now - s->last_used < YIELD_IDLE_AFTER)
				break;
			server_close(s, "another worker needs the room");
		}
	}
}

/* workers = N: idle connections of g (none of whose clients waits) that
 * count against a full limit another worker's clients wait for: closed,
 * which gives the room back (limit_give tells that worker). */
static void give_up_idle_limits(struct pool_group *g)
{
	if (g->waiting.count)
		return;
	struct pool_slot *sls[2] = {g->db_slot, g->user_slot};
	int max[2] = {pool_db_share(g->db), pool_user_share(g)};
	for (int i = 0; i < 2; i++) {
		if (!limit_full(sls[i], max[i]) || !(atomic_load(&sls[i]->wanted) & ~my_bit()))
			continue;
		struct list *it;
		list_for_each(it, &g->pools) {
			struct pool *p = container_of(it, struct pool, group_node);
			while (p->idle.count)
				server_close(container_of(p->idle.head.prev, struct server, node),
					     "another worker needs the room (max_db_connections or "
					     "max_user_connections)");
		}
	}
}

void pool_on_kick(void)
{
	struct list *dit, *git;
	list_for_each(dit, &fleet.databases) {
		struct database *db = container_of(dit, struct database, node);
		list_for_each(git, &db->groups) {
			struct pool_group *g = container_of(git, struct pool_group, node);
			give_up_idle(g);
			give_up_idle_limits(g);
			pool_kick(g);
		}
	}
}

static struct pool *pool_new(struct pool_group *g, struct replica *r)
{
	struct pool *p = calloc(1, sizeof(*p));
	if (!p)
		return NULL;
	p->group = g;
	p->replica = r;
	if (worker_threaded() && !(p->slot = pool_slot_get(g->db->name, g->user, r->addr_str))) {
		free(p);
		return NULL;
	}
	statlist_init(&p->idle);
	statlist_init(&p->active);
	statlist_init(&p->login);
	list_append(&g->pools, &p->group_node);
	list_append(&r->pools, &p->replica_node);
	return p;
}

static void pool_free(struct pool *p)
{
	list_del(&p->group_node);
	list_del(&p->replica_node);
	memset(&p->keys, 0, sizeof(p->keys));
	if (p->slot)
		pool_slot_put(p->slot);
	free(p);
}

struct pool_group *pool_group_get(struct database *db, const char *user)
{
	struct list *it;
	list_for_each(it, &db->groups) {
		struct pool_group *g = container_of(it, struct pool_group, node);
		if (strcmp(g->user, user) == 0)
			return g;
	}
	struct pool_group *g = calloc(1, sizeof(*g));
	if (!g)
		return NULL;
	g->db = db;
	snprintf(g->user, sizeof(g->user), "%s", user);
	statlist_init(&g->waiting);
	statlist_init(&g->active);
	list_init(&g->pools);
	list_append(&db->groups, &g->node);
	/* max_user_connections counts the user that logs in to the server:
	 * the entry's user= when it forces one (PgBouncer's rule). */
	const char *login = db->cfg && db->cfg->user ? db->cfg->user : user;
	if (!(g->db_slot = db_slot_get(db->name)) || !(g->user_slot = user_slot_get(login))) {
		pool_free_group(g);
		return NULL;
	}
	list_for_each(it, &db->replicas) {
		struct replica *r = container_of(it, struct replica, node);
		if (r->state != REPLICA_DRAINING && !pool_new(g, r)) {
			pool_free_group(g);
			return NULL;
		}
	}
	return g;
}

/* Has g a pool on r already?  A draining replica keeps its pools until its
 * last connection ends; back in DNS meanwhile, it must not get a second one
 * (that would double its pool_size). */
static bool group_has_pool(const struct pool_group *g, const struct replica *r)
{
	struct list *it;
	list_for_each(it, &r->pools) {
		if (container_of(it, struct pool, replica_node)->group == g)
			return true;
	}
	return false;
}

void pool_add_replica(struct replica *r)
{
	struct list *it;
	list_for_each(it, &r->db->groups) {
		struct pool_group *g = container_of(it, struct pool_group, node);
		if (!group_has_pool(g, r) && !pool_new(g, r))
			log_error("out of memory creating a pool", NULL);
	}
}

void pool_remove_replica(struct replica *r)
{
	struct list *it, *tmp;
	list_for_each_safe(it, tmp, &r->pools) {
		struct pool *p = container_of(it, struct pool, replica_node);
		pool_free(p);
	}
}

void pool_free_group(struct pool_group *g)
{
	struct list *it, *tmp;
	list_for_each_safe(it, tmp, &g->pools) {
		struct pool *p = container_of(it, struct pool, group_node);
		pool_free(p);
	}
	list_del(&g->node);
	wbuf_free(&g->welcome);
	/* No client of it waits any more: another group of this worker that
	 * still does sets its bit again at its next launch. */
	struct pool_slot *sls[2] = {g->db_slot, g->user_slot};
	for (int i = 0; i < 2; i++) {
		if (!sls[i])
			continue;
		if (atomic_load(&sls[i]->wanted) & my_bit())
			atomic_fetch_and(&sls[i]->wanted, ~my_bit());
		pool_slot_put(sls[i]);
	}
	free(g);
}

/* Does another pool of this worker hold an idle connection that counts
 * against a limit g is stopped by?  Then it is closed to make room, as
 * PgBouncer evicts one (its least recently used). */
static bool evict_idle(struct pool_group *g)
{
	bool db_full = limit_full(g->db_slot, pool_db_share(g->db));
	bool user_full = limit_full(g->user_slot, pool_user_share(g));
	struct list *dit, *git, *pit;
	list_for_each(dit, &fleet.databases) {
		struct database *d = container_of(dit, struct database, node);
		list_for_each(git, &d->groups) {
			struct pool_group *o = container_of(git, struct pool_group, node);
			if (o == g || !((db_full && o->db_slot == g->db_slot) ||
					(user_full && o->user_slot == g->user_slot)))
				continue;
			list_for_each(pit, &o->pools) {
				struct pool *q = container_of(pit, struct pool, group_node);
				if (!q->idle.count)
					continue;
				server_close(container_of(q->idle.head.prev, struct server, node),
					     db_full ? "max_db_connections: another pool needs the room"
						     : "max_user_connections: another pool needs the room");
				return true;
			}
		}
	}
	return false;
}

/* Could g open a connection but for max_db_connections or
 * max_user_connections (an eligible replica with pool_size room)? */
static bool stopped_by_limit(struct pool_group *g, double now)
{
	if (!limits_full(g))
		return false;
	struct list *it;
	list_for_each(it, &g->pools) {
		struct pool *p = container_of(it, struct pool, group_node);
		if (pool_count(p) < pool_cap(p) && replica_eligible(p->replica, now))
			return true;
	}
	return false;
}

/* workers = N: this worker's clients wait for a limit's room (want), or no
 * more; the others give up idle connections for it (give_up_idle_limits)
 * and release busy ones (pool_server_ready). */
static void want_limit_room(struct pool_group *g, bool want)
{
	struct pool_slot *sls[2] = {g->db_slot, g->user_slot};
	int max[2] = {pool_db_share(g->db), pool_user_share(g)};
	for (int i = 0; i < 2; i++) {
		if (!want || !limit_full(sls[i], max[i])) {
			if (atomic_load(&sls[i]->wanted) & my_bit())
				atomic_fetch_and(&sls[i]->wanted, ~my_bit());
			continue;
		}
		uint64_t before = atomic_fetch_or(&sls[i]->wanted, my_bit());
		if (!(before & my_bit()))
			kick_workers(~my_bit());
	}
}

/* target_session_attrs = auto: waiting clients need different replicas
 * (a write the primary, a read a standby), so each is served by the first
 * connection that suits it, in the order they came. */
static bool routed(const struct pool_group *g)
{
	return database_tsa(g->db) == TSA_AUTO;
}

/* How far down the queue a routed group looks for a client a server
 * suits: bounded, so a long queue of writes costs a freed standby
 * connection at most this many checks. */
#define WAIT_SCAN_MAX 256

static void want_room_after(struct pool_group *g, bool blocked, double now)
{
	if (!worker_threaded())
		return;
	want_room(g, blocked);
	want_limit_room(g, blocked && stopped_by_limit(g, now));
}

/* Opens a connection for one waiting client's need; false when none may
 * be opened now. */
static bool launch_for(struct pool_group *g, double now, const struct route_need *need)
{
	struct pool *p = router->pick_launch(g, now, need);
	if (p && server_launch(p))
		return true;
	if (stopped_by_limit(g, now) && evict_idle(g)) {
		p = router->pick_launch(g, now, need);
		return p && server_launch(p);
	}
	return false;
}

/* Routed groups: walks the queue; a client that a connection in login on
 * a suitable replica will serve is counted as served, for the others a
 * connection is opened where their need allows.  The needs are copied
 * first: a launch that fails at once may close waiting clients. */
static void launch_routed(struct pool_group *g, double now)
{
	struct route_need needs[WAIT_SCAN_MAX];
	int n = 0;
	struct list *it;
	list_for_each(it, &g->waiting.head) {
		if (n == WAIT_SCAN_MAX)
			break;
		needs[n++] = container_of(it, struct client, node)->need;
	}
	struct pool *pools[64];
	int spare[64], np = 0;
	list_for_each(it, &g->pools) {
		if (np == 64)
			break;
		pools[np] = container_of(it, struct pool, group_node);
		spare[np] = pools[np]->login.count;
		np++;
	}
	bool blocked = false;
	for (int i = 0; i < n; i++) {
		bool covered = false;
		for (int j = 0; j < np && !covered; j++) {
			if (spare[j] > 0 && replica_eligible_for(pools[j]->replica, now, &needs[i])) {
				spare[j]--;
				covered = true;
			}
		}
		if (!covered && !launch_for(g, now, &needs[i]))
			blocked = true;
	}
	want_room_after(g, blocked, now);
}

/* Opens connections while more clients wait than connections are coming. */
static void launch_for_waiters(struct pool_group *g)
{
	double now = fleet_now();
	if (g->db->paused)
		return; /* PAUSE: waiting clients stay in line until RESUME */
	if (routed(g)) {
		launch_routed(g, now);
		return;
	}
	while (g->connecting < g->waiting.count) {
		if (launch_for(g, now, NULL))
			continue;
		want_room_after(g, true, now);
		return;
	}
	want_room_after(g, false, now);
}

/* The first waiting client (of the first WAIT_SCAN_MAX) that a server on r
 * suits, or NULL. */
static struct client *waiting_for(struct pool_group *g, const struct replica *r, double now)
{
	if (!routed(g)) {
		if (!replica_eligible(r, now))
			return NULL;
		return container_of(list_first(&g->waiting.head), struct client, node);
	}
	int scanned = 0;
	struct list *it;
	list_for_each(it, &g->waiting.head) {
		struct client *c = container_of(it, struct client, node);
		if (replica_eligible_for(r, now, &c->need))
			return c;
		if (++scanned == WAIT_SCAN_MAX)
			break;
	}
	return NULL;
}

bool pool_checkout(struct client *c)
{
	struct pool_group *g = c->group;
	struct pool *p = NULL;
	/* First come, first served: a client goes ahead of none that waits
	 * for the same kind of replica. */
	bool first = g->waiting.count == 0 || (routed(g) && g->waits[c->need.want] == 0);
	if (first && !g->db->paused) {
		p = router->pick(g, fleet_now(), &c->need);
		if (p && p->idle.count) {
			struct list *it = list_first(&p->idle.head);
			server_link(container_of(it, struct server, node), c);
			return true;
		}
	}
	/* Wait in line.  The chosen replica gets the new connection, so even one
	 * client at a time spreads over the replicas; whichever server is ready
	 * first serves the head of the queue.  (c may be served, or closed,
	 * before this returns: callers look at its state.) */
	client_set_state(c, CLIENT_WAITING);
	if (p && g->connecting < g->waiting.count && !g->db->paused)
		(void)server_launch(p);
	launch_for_waiters(g);
	return false;
}

bool pool_probe_defaults(struct pool *p, struct server *spare)
{
	unsigned gen = p->group->db->defaults_gen;
	if (pool_has_room(p)) {
		p->probe_gen = gen;
		(void)server_launch(p);
		return false;
	}
	if (!spare && p->idle.count)
		spare = container_of(list_first(&p->idle.head), struct server, node);
	if (!spare)
		return false; /* the first connection to come back makes room */
	p->probe_gen = gen;
	server_close(spare, "role and database defaults refresh");
	(void)server_launch(p);
	return true;
}

/* A group of this worker other than g whose clients wait for room under
 * the limit counted by sl. */
static struct pool_group *limit_waiter(const struct pool_group *g, const struct pool_slot *sl)
{
	struct list *dit, *git;
	list_for_each(dit, &fleet.databases) {
		struct database *d = container_of(dit, struct database, node);
		list_for_each(git, &d->groups) {
			struct pool_group *o = container_of(git, struct pool_group, node);
			if (o != g && o->waiting.count && !d->paused &&
			    (o->db_slot == sl || o->user_slot == sl) && o->connecting < o->waiting.count)
				return o;
		}
	}
	return NULL;
}

/*
 * Should a connection of g that a client just released be closed, so that
 * clients waiting at a full limit (max_db_connections,
 * max_user_connections) get its room?  Those of another pool of this
 * worker when none of g's waits (*local names that pool); another worker's
 * when none of g's waits or this worker holds more than its share.
 */
static bool limit_yield(struct pool_group *g, struct pool_group **local)
{
	struct pool_slot *sls[2] = {g->db_slot, g->user_slot};
	int max[2] = {pool_db_share(g->db), pool_user_share(g)};
	for (int i = 0; i < 2; i++) {
		if (!limit_full(sls[i], max[i]))
			continue;
		uint64_t others = atomic_load(&sls[i]->wanted) & ~my_bit();
		if (others) {
			int share = max[i] / __builtin_popcountll(others | my_bit());
			int mine = atomic_load_explicit(&sls[i]->by_worker[worker_index()],
							memory_order_relaxed);
			if (!g->waiting.count || mine > share)
				return true;
		}
		if (!g->waiting.count && (*local = limit_waiter(g, sls[i])))
			return true;
	}
	return false;
}

void pool_server_ready(struct server *s)
{
	struct pool *p = s->pool;
	struct pool_group *g = p->group;
	s->last_used = fleet_now();
	if (s->cancels) {
		/* A cancel is on its way to this backend: it stays out of the
		 * pool until PostgreSQL has signalled it (server_cancel_done). */
		s->ready_after_cancel = true;
		return;
	}
	if (s->defaults_gen != g->db->defaults_gen && s->state != SERVER_LOGIN &&
	    p->probe_gen != g->db->defaults_gen && p->replica->state == REPLICA_UP &&
	    pool_probe_defaults(p, s))
		return; /* s was closed to make room for the fresh login */
	if (s->state != SERVER_LOGIN && pool_yield_server(p) && pool_total(p) > fair_share(p)) {
		/* workers = N: another worker's clients wait for room this one
		 * holds beyond its share: give it back rather than keep it.
		 * (Never a login just done: closing it would count as a failed
		 * login.)  Below its share it keeps the connection; one idle for
		 * a second goes back by give_up_idle. */
		server_close(s, "another worker needs the room");
		return;
	}
	if (s->state != SERVER_LOGIN && limits_over(g)) {
		/* This instance's share of a fleet-wide limit shrank below what
		 * it holds (a peer came): the connection is done with its
		 * transaction and goes, rather than back to idle or to a
		 * waiting client, so the fleet's sum comes back to the limit.
		 * (A login just done stays: the janitor closes it once idle.) */
		server_close(s, SHARE_SHRANK);
		return;
	}
	struct pool_group *other = NULL;
	if (s->state != SERVER_LOGIN && limit_yield(g, &other)) {
		/* max_db_connections / max_user_connections: clients of another
		 * pool (or worker) wait for the room this connection holds. */
		server_close(s, "another pool needs the room (max_db_connections or "
				"max_user_connections)");
		if (other)
			pool_kick(other);
		return;
	}
	struct client *c;
	if (g->waiting.count && !g->db->paused && (c = waiting_for(g, p->replica, s->last_used))) {
		client_set_state(c, CLIENT_ACTIVE);
		server_link(s, c);
		client_linked(c);
		return;
	}
	server_set_state(s, SERVER_IDLE);
	conn_read_enable(&s->io, true);
	conn_release_buffer(&s->io);
}

void pool_kick(struct pool_group *g)
{
	double now = fleet_now();
	while (g->waiting.count && !g->db->paused) {
		struct client *c = NULL;
		struct pool *p = NULL;
		int scanned = 0;
		struct list *it;
		list_for_each(it, &g->waiting.head) {
			c = container_of(it, struct client, node);
			p = router->pick_idle(g, now, routed(g) ? &c->need : NULL);
			if (p || !routed(g) || ++scanned == WAIT_SCAN_MAX)
				break;
		}
		if (!p)
			break;
		struct server *s = container_of(list_first(&p->idle.head), struct server, node);
		client_set_state(c, CLIENT_ACTIVE);
		server_link(s, c);
		client_linked(c);
	}
	launch_for_waiters(g);
}

void pool_kick_all(void)
{
	struct list *dit, *git;
	list_for_each(dit, &fleet.databases) {
		struct database *db = container_of(dit, struct database, node);
		list_for_each(git, &db->groups) {
			pool_kick(container_of(git, struct pool_group, node));
		}
	}
}

/*
 * min_pool_size: per replica, idle connections kept ready (counted over
 * every worker), opened here in the background within pool_size and the
 * limits.  Only on a replica that takes work (so never before its first
 * passing health check), and only for a group whose login has worked once
 * (a login pgfleet cannot do would fail every second otherwise).
 */
static void warm_pools(struct pool_group *g, double now)
{
	int min = pool_min_size(g->db);
	if (min <= 0 || g->db->paused || !g->have_welcome || fleet.shutting_down)
		return;
	struct list *it;
	list_for_each(it, &g->pools) {
		struct pool *p = container_of(it, struct pool, group_node);
		if (!replica_eligible(p->replica, now))
			continue;
		for (int n = pool_count(p); n < min; n++)
			if (!server_launch_warm(p))
				break;
	}
}

/* Idle connections of g above this instance's share of a limit (the share
 * shrank when a peer came): closed, least recently used first.  Each
 * worker closes its own; two workers at once may close one too many
 * between them, which the next launch opens again. */
static void shed_over_share(struct pool_group *g)
{
	struct list *it;
	list_for_each(it, &g->pools) {
		struct pool *p = container_of(it, struct pool, group_node);
		while (p->idle.count && limits_over(g))
			server_close(container_of(p->idle.head.prev, struct server, node),
				     SHARE_SHRANK);
	}
}

void pool_janitor(double now)
{
	struct list *dit, *git, *it, *tmp;
	double limit = fleet.cfg.query_wait_timeout;
	list_for_each(dit, &fleet.databases) {
		struct database *db = container_of(dit, struct database, node);
		list_for_each(git, &db->groups) {
			struct pool_group *g = container_of(git, struct pool_group, node);
			if (limit > 0) {
				list_for_each_safe(it, tmp, &g->waiting.head) {
					struct client *c = container_of(it, struct client, node);
					if (now - c->wait_start <= limit)
						continue;
					char why[200];
					router->explain(g, now, why, sizeof(why));
					client_close(c, "08P01", "query_wait_timeout: %s", why);
				}
			}
			shed_over_share(g);
			/* Replicas whose retry time passed may take connections again. */
			if (worker_threaded()) {
				give_up_idle(g);
				give_up_idle_limits(g);
			}
			pool_kick(g);
			warm_pools(g, now);
		}
	}
}
