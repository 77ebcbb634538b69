/*
 * stats.c: the counters behind SHOW STATS, SHOW REPLICAS and /metrics.
 *
 * A replica owns monotonic totals; its database owns the totals of the
 * replicas already forgotten (`retired`), the two histograms, and the
 * per-second averages the janitor recomputes every stats_period.  Recording
 * is arithmetic on fields that already exist: no allocation, no lookup.
 *
 * Must not: read sockets, format output (admin.c and http.c do).
 */
#include "stats.h"

#include <string.h>

#include "database.h"
#include "runtime.h"

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
