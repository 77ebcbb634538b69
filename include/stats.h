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

#include <stdbool.h>
#include <stdint.h>

struct database;
struct metrics;
struct replica;

/* Upper bounds (seconds) of the histogram buckets; +Inf is implicit. */
#define STATS_BUCKETS 14
extern const double stats_bucket_le[STATS_BUCKETS];

struct histogram {
	uint64_t bucket[STATS_BUCKETS + 1]; /* not cumulative; last one is +Inf */
	uint64_t count;
	double sum; /* seconds */
};

/*
 * Every counter is defined here once.  X(field, per, total_col, avg_col,
 * view_col, family, scale, help):
 *   field      struct stats member: a monotonic uint64_t total;
 *   per        what its SHOW STATS average divides by: `second` (a rate) or
 *              another field (a time per transaction, query, assignment);
 *   total_col  SHOW STATS column of the total (PgBouncer's name; NULL: none),
 *   avg_col    SHOW STATS column of the average,
 *   view_col   column in SHOW STATS_TOTALS / SHOW STATS_AVERAGES;
 *   family     the Prometheus counter family, by database and replica (NULL:
 *              not exported), its value = field * scale (microseconds to
 *              seconds), and its help text.
 * Adding a counter is one line here plus the increment where it happens;
 * the struct, the sums, the averages, the SHOW STATS columns and the
 * /metrics family all follow from this list.
 */
#define STATS_COUNTERS(X)                                                                          \
	X(xacts, second, "total_xact_count", "avg_xact_count", "xact_count",                       \
	  "pgfleet_transactions_total", 1, "Transactions finished, by replica.")                   \
	X(queries, second, "total_query_count", "avg_query_count", "query_count",                  \
	  "pgfleet_queries_total", 1, "Queries (and Syncs) answered, by replica.")                 \
	X(bytes_recv, second, "total_received", "avg_recv", "bytes_received",                      \
	  "pgfleet_received_bytes_total", 1, "Bytes from clients passed to the replica.")          \
	X(bytes_sent, second, "total_sent", "avg_sent", "bytes_sent", "pgfleet_sent_bytes_total",  \
	  1, "Bytes from the replica passed to clients.")                                          \
	X(xact_us, xacts, "total_xact_time", "avg_xact_time", "xact_time",                         \
	  "pgfleet_transaction_seconds_total", 1e-6, "Time spent in transactions.")                \
	X(query_us, queries, "total_query_time", "avg_query_time", "query_time",                   \
	  "pgfleet_query_seconds_total", 1e-6, "Time spent in queries.")                           \
	X(wait_us, assignments, "total_wait_time", "avg_wait_time", "wait_time",                   \
	  "pgfleet_client_wait_seconds_total", 1e-6,                                               \
	  "Time clients waited for a server connection of the replica.")                           \
	X(assignments, second, NULL, NULL, NULL, NULL, 1, "Server connections handed to clients.") \
	X(reads, second, NULL, NULL, NULL, "pgfleet_routed_reads_total", 1,                        \
	  "Transactions target_session_attrs = auto routed as reads, by replica (a standby, or "  \
	  "the primary when no standby could take them).")                                        \
	X(writes, second, NULL, NULL, NULL, "pgfleet_routed_writes_total", 1,                      \
	  "Transactions target_session_attrs = auto routed to the primary as writes.")              \
	X(ryw_probes, second, NULL, NULL, NULL, "pgfleet_read_your_writes_probes_total", 1,        \
	  "Replay positions asked of the standby before a read after the client's write.")

/* STATS_F_xacts, ...: each counter's index; STATS_F_second = "per second". */
enum stats_field {
	STATS_F_second = -1,
#define STATS_ENUM(field, per, tc, ac, vc, fam, scale, help) STATS_F_##field,
	STATS_COUNTERS(STATS_ENUM)
#undef STATS_ENUM
	STATS_NFIELDS
};

/* Monotonic totals; fields in STATS_COUNTERS order. */
struct stats {
#define STATS_MEMBER(field, per, tc, ac, vc, fam, scale, help) uint64_t field;
	STATS_COUNTERS(STATS_MEMBER)
#undef STATS_MEMBER
};

/* Per-second averages over the last stats_period (SHOW STATS avg_*; times
 * in microseconds per transaction / query / assignment, as PgBouncer). */
struct stats_avg {
#define STATS_MEMBER(field, per, tc, ac, vc, fam, scale, help) uint64_t field;
	STATS_COUNTERS(STATS_MEMBER)
#undef STATS_MEMBER
};
_Static_assert(sizeof(struct stats) == STATS_NFIELDS * sizeof(uint64_t), "struct stats is its counters");
_Static_assert(sizeof(struct stats_avg) == STATS_NFIELDS * sizeof(uint64_t), "one average per counter");

/* The description of one counter, from STATS_COUNTERS (stats_fields[i] for
 * STATS_F_ i), for code that walks them all (SHOW STATS, /metrics). */
struct stats_field_info {
	const char *name;       /* the struct member's name */
	int per;                /* STATS_F_second or the divisor's index */
	const char *total_col, *avg_col, *view_col;
	const char *family;
	double scale;
	const char *help;
};
extern const struct stats_field_info stats_fields[STATS_NFIELDS];

/* Reads counter i of a struct stats / stats_avg (i = STATS_F_...). */
static inline uint64_t stats_get(const struct stats *s, int i)
{
	return ((const uint64_t *)(const void *)s)[i];
}
static inline uint64_t stats_avg_get(const struct stats_avg *a, int i)
{
	return ((const uint64_t *)(const void *)a)[i];
}
/* to += from, counter by counter (merging replicas, workers). */
void stats_add(struct stats *to, const struct stats *from);

/* Recording, called by server.c / pool.c / conn.c at the event. */
void stats_query_done(struct replica *r, double query_s);
void stats_xact_done(struct replica *r, double xact_s);
void stats_waited(struct replica *r, double wait_s); /* at each assignment */
void stats_bytes(struct replica *r, uint64_t recv, uint64_t sent);
/* A read re-run elsewhere (client.c): lost, its standby's connection broke;
 * else the standby refused it as a write (25006).  Per worker. */
void stats_read_retried(bool lost);

/* The database's totals: its live replicas' plus the forgotten ones'. */
void stats_database_totals(const struct database *db, struct stats *out);
/* A replica is forgotten: its totals move into its database's. */
void stats_replica_forgotten(struct replica *r);
/* Called by the janitor; recomputes averages every stats_period. */
void stats_tick(double now);

void histogram_observe(struct histogram *h, double seconds);

/* Adds this loop's families of the model to a /metrics snapshot: process,
 * I/O batching, clients, servers, per-replica counters, histograms,
 * replicas (everything but DNS, which discovery owns).  Per scrape. */
void stats_collect_metrics(struct metrics *m);

#endif
