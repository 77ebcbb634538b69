/*
 * stats.h: the counters behind SHOW STATS, SHOW REPLICAS and /metrics.
 *
 * Each replica keeps monotonic totals; each database keeps the totals of
 * its replicas, including the ones already forgotten, plus two histograms
 * (transaction duration, time a client waited for a server).  Every
 * stats_period the janitor turns the totals into per-second averages
 * (PgBouncer's avg_* columns).  Recording is a few additions: no allocation,
 * no lookup.
 */
#ifndef PGFLEET_STATS_H
#define PGFLEET_STATS_H

#include <stdint.h>

struct database;
struct replica;

/* Upper bounds (seconds) of the histogram buckets; +Inf is implicit. */
#define STATS_BUCKETS 14
extern const double stats_bucket_le[STATS_BUCKETS];

struct histogram {
	uint64_t bucket[STATS_BUCKETS + 1]; /* not cumulative; last one is +Inf */
	uint64_t count;
	double sum; /* seconds */
};

struct stats {
	uint64_t xacts;      /* transactions (ReadyForQuery 'I' after work) */
	uint64_t queries;    /* ReadyForQuery answers (queries and Syncs) */
	uint64_t bytes_recv; /* from clients, to servers */
	uint64_t bytes_sent; /* from servers, to clients */
	uint64_t xact_us;    /* time in transaction */
	uint64_t query_us;   /* time in query */
	uint64_t wait_us;    /* time clients waited for a server connection */
	uint64_t assignments; /* server connections handed to clients */
};

/* Per-second averages over the last stats_period (SHOW STATS avg_*; times
 * in microseconds per transaction / query, as PgBouncer). */
struct stats_avg {
	uint64_t xacts, queries, bytes_recv, bytes_sent;
	uint64_t xact_us, query_us, wait_us, assignments;
};

/* Recording, called by server.c / pool.c / conn.c at the event. */
void stats_query_done(struct replica *r, double query_s);
void stats_xact_done(struct replica *r, double xact_s);
void stats_waited(struct replica *r, double wait_s); /* at each assignment */
void stats_bytes(struct replica *r, uint64_t recv, uint64_t sent);

/* The database's totals: its live replicas' plus the forgotten ones'. */
void stats_database_totals(const struct database *db, struct stats *out);
/* A replica is forgotten: its totals move into its database's. */
void stats_replica_forgotten(struct replica *r);
/* Called by the janitor; recomputes averages every stats_period. */
void stats_tick(double now);

void histogram_observe(struct histogram *h, double seconds);

#endif
