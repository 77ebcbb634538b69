/*
 * stats.c: the counters behind SHOW STATS, SHOW REPLICAS and /metrics.
 *
 * A replica owns monotonic totals; its database owns the totals of the
 * replicas already forgotten (`retired`), the two histograms, and the
 * per-second averages the janitor recomputes every stats_period.  Recording
 * is arithmetic on fields that already exist: no allocation, no lookup.
 *
 * stats_collect_metrics copies the model's part of /metrics (these
 * counters, and the connections, replicas and process they describe) into
 * a snapshot (metrics.h).
 *
 * Must not: read sockets, format output (admin.c and http.c do).
 */
#include "stats.h"
#include "sqlroute.h"

#include <string.h>

#include "batch.h"
#include "client.h"
#include "database.h"
#include "metrics.h"
#include "pool.h"
#include "runtime.h"
#include "version.h"

/* Upper bounds in seconds: sub-millisecond pooled queries up to long
 * reports, roughly 1-2.5-5 per decade like Prometheus' defaults. */
const double stats_bucket_le[STATS_BUCKETS] = {
	0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10,
};

static uint64_t to_us(double seconds)
{
	return seconds > 0 ? (uint64_t)(seconds * 1e6) : 0;
}

void histogram_observe(struct histogram *h, double seconds)
{
	if (seconds < 0)
		seconds = 0;
	int i = 0;
	while (i < STATS_BUCKETS && seconds > stats_bucket_le[i])
		i++;
	h->bucket[i]++;
	h->count++;
	h->sum += seconds;
}

void stats_query_done(struct replica *r, double query_s)
{
	r->st.queries++;
	r->st.query_us += to_us(query_s);
}

void stats_xact_done(struct replica *r, double xact_s)
{
	r->st.xacts++;
	r->st.xact_us += to_us(xact_s);
	histogram_observe(&r->db->xact_hist, xact_s);
}

void stats_waited(struct replica *r, double wait_s)
{
	r->st.assignments++;
	r->st.wait_us += to_us(wait_s);
	histogram_observe(&r->db->wait_hist, wait_s);
}

void stats_bytes(struct replica *r, uint64_t recv, uint64_t sent)
{
	r->st.bytes_recv += recv;
	r->st.bytes_sent += sent;
}

const struct stats_field_info stats_fields[STATS_NFIELDS] = {
#define STATS_INFO(field, per, tc, ac, vc, fam, scale, help)                                       \
	[STATS_F_##field] = {#field, STATS_F_##per, tc, ac, vc, fam, scale, help},
	STATS_COUNTERS(STATS_INFO)
#undef STATS_INFO
};

void stats_add(struct stats *to, const struct stats *from)
{
	uint64_t *t = (uint64_t *)(void *)to;
	const uint64_t *f = (const uint64_t *)(const void *)from;
	for (int i = 0; i < STATS_NFIELDS; i++)
		t[i] += f[i];
}

void stats_database_totals(const struct database *db, struct stats *out)
{
	*out = db->retired;
	struct list *it;
	list_for_each(it, &db->replicas) {
		stats_add(out, &container_of(it, struct replica, node)->st);
	}
}

void stats_replica_forgotten(struct replica *r)
{
	stats_add(&r->db->retired, &r->st);
	memset(&r->st, 0, sizeof(r->st));
}

/* The difference of two monotonic counters (a reset never goes negative). */
static uint64_t delta(uint64_t now, uint64_t before)
{
	return now > before ? now - before : 0;
}

/*
 * PgBouncer's averages: counts and bytes per second over the period, times
 * per transaction / query / assignment in the period (microseconds).
 */
static void database_average(struct database *db, double elapsed)
{
	struct stats tot;
	stats_database_totals(db, &tot);
	uint64_t d[STATS_NFIELDS];
	for (int i = 0; i < STATS_NFIELDS; i++)
		d[i] = delta(stats_get(&tot, i), stats_get(&db->avg_prev, i));
	uint64_t *a = (uint64_t *)(void *)&db->avg;
	for (int i = 0; i < STATS_NFIELDS; i++) {
		int per = stats_fields[i].per;
		if (per == STATS_F_second)
			a[i] = (uint64_t)((double)d[i] / elapsed);
		else
			a[i] = d[per] ? d[i] / d[per] : 0;
	}
	db->avg_prev = tot;
}

void stats_tick(double now)
{
	static THREAD_LOCAL double last;
	double period = fleet.cfg.stats_period > 0 ? fleet.cfg.stats_period : 60;
	if (last == 0) {
		last = now;
		return;
	}
	double elapsed = now - last;
	if (elapsed < period)
		return;
	last = now;
	struct list *it;
	list_for_each(it, &fleet.databases) {
		database_average(container_of(it, struct database, node), elapsed);
	}
}

/* ---- /metrics -------------------------------------------------------------------- */

static void collect_process(struct metrics *m)
{
	metrics_add_int(m, MF_INFO, 1, PGFLEET_VERSION, NULL);
	metrics_add_real(m, MF_UPTIME, fleet_now() - fleet.started, NULL);
	metrics_add_int(m, MF_DRAINING, fleet.shutting_down, NULL);
}

/* Socket calls batched into io_uring submissions (batch.c): operations per
 * submission is how many system calls batching saved, plus one. */
static void collect_io_batches(struct metrics *m)
{
	struct batch_stats st;
	batch_get_stats(&st);
	metrics_add_int(m, MF_IO_URING_ENABLED, batch_enabled(), NULL);
	metrics_add_int(m, MF_IO_URING_SUBMISSIONS, (int64_t)st.recv_submits, "recv", NULL);
	metrics_add_int(m, MF_IO_URING_SUBMISSIONS, (int64_t)st.send_submits, "send", NULL);
	metrics_add_int(m, MF_IO_URING_OPERATIONS, (int64_t)st.recv_ops, "recv", NULL);
	metrics_add_int(m, MF_IO_URING_OPERATIONS, (int64_t)st.send_ops, "send", NULL);
	metrics_add_int(m, MF_IO_URING_SHORT_SENDS, (int64_t)st.short_sends, NULL);
	/* target_session_attrs = auto's classifications (this worker's). */
	metrics_add_int(m, MF_ROUTE_PARSES, (int64_t)sqlroute_parses(), NULL);
	metrics_add_int(m, MF_ROUTE_CACHE_HITS, (int64_t)sqlroute_cache_hits(), NULL);
}

static void collect_clients(struct metrics *m)
{
	/* Logged in and holding a server connection (active), logged in
	 * between transactions (idle), queued for a server (waiting), and
	 * still logging in (login, including those waiting for the first
	 * server parameters of their pool). */
	int64_t login = fleet.login_clients.count, waiting = 0, active = 0, idle = 0;
	struct list *dit, *git, *cit;
	list_for_each(dit, &fleet.databases) {
		const struct database *db = container_of(dit, struct database, node);
		list_for_each(git, &db->groups) {
			struct pool_group *g = container_of(git, struct pool_group, node);
			waiting += g->waiting.count;
			list_for_each(cit, &g->active.head) {
				const struct client *c = container_of(cit, struct client, node);
				if (c->welcome_pending)
					login++;
				else if (c->link)
					active++;
				else
					idle++;
			}
		}
	}
	metrics_add_int(m, MF_CLIENT_CONNECTIONS, login, "login", NULL);
	metrics_add_int(m, MF_CLIENT_CONNECTIONS, waiting, "waiting", NULL);
	metrics_add_int(m, MF_CLIENT_CONNECTIONS, active, "active", NULL);
	metrics_add_int(m, MF_CLIENT_CONNECTIONS, idle, "idle", NULL);
	metrics_add_int(m, MF_CLIENT_CONNECTIONS_LIMIT, fleet.cfg.max_client_conn, NULL);
}

/* Server connections, counters and health of one replica. */
static void collect_replica(struct metrics *m, const struct database *db,
			    const struct replica *r, double now)
{
	int64_t n[3] = {0, 0, 0};
	struct list *pit;
	list_for_each(pit, &r->pools) {
		const struct pool *p = container_of(pit, struct pool, replica_node);
		n[0] += p->login.count;
		n[1] += p->idle.count;
		n[2] += p->active.count;
	}
	static const char *const states[3] = {"login", "idle", "active"};
	for (int i = 0; i < 3; i++)
		metrics_add_int(m, MF_SERVER_CONNECTIONS, n[i], db->name, r->addr_str, states[i],
				NULL);
	metrics_add_stats(m, MF_REPLICA_COUNTERS, &r->st, db->name, r->addr_str, NULL);
	metrics_add_int(m, MF_REPLICA_UP, r->state == REPLICA_UP, db->name, r->addr_str,
			replica_role_name(r->role), NULL);
	for (int s = REPLICA_NEW; s <= REPLICA_DRAINING; s++)
		metrics_add_int(m, MF_REPLICA_STATE, r->state == (enum replica_state)s, db->name,
				r->addr_str, replica_state_name((enum replica_state)s), NULL);
	metrics_add_real(m, MF_REPLICA_LAG, r->lag_s, db->name, r->addr_str, NULL);
	metrics_add_int(m, MF_REPLICA_ELIGIBLE, replica_eligible(r, now), db->name, r->addr_str,
			NULL);
}

/* Reads re-run elsewhere, this worker's: [0] read_only, [1] server_lost. */
static _Thread_local uint64_t read_retries[2];

void stats_read_retried(bool lost)
{
	read_retries[lost]++;
}

static void collect_read_retries(struct metrics *m)
{
	metrics_add_int(m, MF_READ_RETRIES, (int64_t)read_retries[0], "read_only", NULL);
	metrics_add_int(m, MF_READ_RETRIES, (int64_t)read_retries[1], "server_lost", NULL);
}

/* Per database and user: clients by state and the longest wait so far
 * (PgBouncer's maxwait); per database: pool size, paused, disabled. */
static void collect_groups(struct metrics *m, const struct database *db, double now)
{
	metrics_add_int(m, MF_DATABASE_POOL_SIZE, db->pool_size, db->name, NULL);
	metrics_add_int(m, MF_DATABASE_PAUSED, db->paused, db->name, NULL);
	metrics_add_int(m, MF_DATABASE_DISABLED, db->disabled, db->name, NULL);
	struct list *git, *cit;
	list_for_each(git, &db->groups) {
		const struct pool_group *g = container_of(git, struct pool_group, node);
		int64_t login = 0, active = 0, idle = 0;
		list_for_each(cit, &g->active.head) {
			const struct client *c = container_of(cit, struct client, node);
			if (c->welcome_pending)
				login++;
			else if (c->link)
				active++;
			else
				idle++;
		}
		metrics_add_int(m, MF_CLIENTS, login, db->name, g->user, "login", NULL);
		metrics_add_int(m, MF_CLIENTS, (int64_t)g->waiting.count, db->name, g->user,
				"waiting", NULL);
		metrics_add_int(m, MF_CLIENTS, active, db->name, g->user, "active", NULL);
		metrics_add_int(m, MF_CLIENTS, idle, db->name, g->user, "idle", NULL);
		/* The queue is FIFO: its first client has waited longest. */
		double maxwait = 0;
		struct list *first = list_first(&g->waiting.head);
		if (first) {
			maxwait = now - container_of(first, struct client, node)->wait_start;
			if (maxwait < 0)
				maxwait = 0;
		}
		metrics_add_real(m, MF_POOL_MAX_WAIT, maxwait, db->name, g->user, NULL);
	}
}

void stats_collect_metrics(struct metrics *m)
{
	collect_process(m);
	collect_io_batches(m);
	collect_read_retries(m);
	collect_clients(m);
	double now = fleet_now();
	struct list *dit, *rit;
	list_for_each(dit, &fleet.databases) {
		const struct database *db = container_of(dit, struct database, node);
		list_for_each(rit, &db->replicas) {
			collect_replica(m, db, container_of(rit, struct replica, node), now);
		}
		metrics_add_histogram(m, MF_TRANSACTION_DURATION, &db->xact_hist, db->name, NULL);
		metrics_add_histogram(m, MF_WAIT, &db->wait_hist, db->name, NULL);
		int share = pool_db_share(db);
		if (share != POOL_NO_LIMIT)
			metrics_add_int(m, MF_DATABASE_CONNECTION_SHARE, share, db->name, NULL);
		collect_groups(m, db, now);
		metrics_add_int(m, MF_DATABASE_PRIMARIES, database_primaries(db), db->name, NULL);
	}
}
