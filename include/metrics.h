/*
 * metrics.h: what /metrics shows, as data.  Every family is defined once,
 * in METRIC_FAMILIES (the per-replica counters come from STATS_COUNTERS in
 * stats.h).  A loop fills a snapshot of typed tables (table.h), one table
 * per family (stats_collect_metrics for the model's families, discovery's
 * owner for DNS); with workers = N the snapshots are merged by each
 * family's rule, and http.c renders the Prometheus text once from the
 * result.
 *
 * Must not: read loop state or format text (a snapshot is only data), or be
 * used on the transaction path (a snapshot allocates a row per series).
 */
#ifndef PGFLEET_METRICS_H
#define PGFLEET_METRICS_H

#include <stdbool.h>
#include <stdint.h>

#include "stats.h"
#include "table.h"

enum metric_type {
	METRIC_COUNTER,
	METRIC_GAUGE,
	METRIC_HISTOGRAM, /* a row per series: STATS_BUCKETS + 1 bucket counts (not
			     cumulative), the sum; rendered as _bucket/_sum/_count */
	METRIC_STATS,     /* the per-replica counters: a row per replica, a column per
			     STATS_COUNTERS field, one counter family per exported field */
};

#define METRIC_LABELS(...) {__VA_ARGS__}
#define METRIC_NO_LABELS {NULL}

/*
 * Every family, in /metrics order.  X(id, name, type, value, merge, keys,
 * follow, help):
 *   id      MF_<id>, what collectors name it by;
 *   name    the Prometheus family (NULL for STATS: stats_fields[] name them);
 *   type    COUNTER, GAUGE, HISTOGRAM or STATS;
 *   value   INT (rendered as an integer) or REAL (%.15g) for a counter/gauge;
 *   merge   how workers' samples of one series combine: SUM (each worker
 *           counts what it holds) or FIRST (every worker sees the same shared
 *           thing, the process, a replica's checked health, DNS: the first
 *           worker that has the series speaks for it);
 *   keys    the label names that identify a series;
 *   follow  labels that describe the series but do not identify it: they
 *           come from the worker whose value stands (a replica whose role two
 *           workers see differently is still one series);
 *   help    the HELP text.
 * Adding a family is one row here plus its collection, a metrics_add_*
 * call where the data lives (stats_collect_metrics for the model); http.c
 * renders it.
 */
#define METRIC_FAMILIES(X)                                                                         \
	X(INFO, "pgfleet_info", GAUGE, INT, FIRST, METRIC_LABELS("version"), METRIC_NO_LABELS,     \
	  "Build information.")                                                                    \
	X(UPTIME, "pgfleet_uptime_seconds", GAUGE, REAL, FIRST, METRIC_NO_LABELS,                  \
	  METRIC_NO_LABELS, "Seconds since pgfleet started.")                                      \
	X(DRAINING, "pgfleet_draining", GAUGE, INT, FIRST, METRIC_NO_LABELS, METRIC_NO_LABELS,     \
	  "1 while shutting down (no new clients).")                                               \
	X(IO_URING_ENABLED, "pgfleet_io_uring_enabled", GAUGE, INT, SUM, METRIC_NO_LABELS,         \
	  METRIC_NO_LABELS, "Event loops whose socket calls are batched through io_uring.")        \
	X(IO_URING_SUBMISSIONS, "pgfleet_io_uring_submissions_total", COUNTER, INT, SUM,           \
	  METRIC_LABELS("op"), METRIC_NO_LABELS,                                                   \
	  "io_uring submissions of a loop pass's socket reads or writes.")                         \
	X(IO_URING_OPERATIONS, "pgfleet_io_uring_operations_total", COUNTER, INT, SUM,             \
	  METRIC_LABELS("op"), METRIC_NO_LABELS,                                                   \
	  "Socket reads or writes carried by those submissions.")                                  \
	X(IO_URING_SHORT_SENDS, "pgfleet_io_uring_short_sends_total", COUNTER, INT, SUM,           \
	  METRIC_NO_LABELS, METRIC_NO_LABELS,                                                      \
	  "Deferred writes a socket did not take whole (the rest waits for it).")                  \
	X(CLIENT_CONNECTIONS, "pgfleet_client_connections", GAUGE, INT, SUM,                       \
	  METRIC_LABELS("state"), METRIC_NO_LABELS, "Client connections by state.")                \
	X(CLIENT_CONNECTIONS_LIMIT, "pgfleet_client_connections_limit", GAUGE, INT, FIRST,         \
	  METRIC_NO_LABELS, METRIC_NO_LABELS, "max_client_conn: clients beyond it are refused.")   \
	X(SERVER_CONNECTIONS, "pgfleet_server_connections", GAUGE, INT, SUM,                       \
	  METRIC_LABELS("database", "replica", "state"), METRIC_NO_LABELS,                         \
	  "Server connections by database, replica and state.")                                    \
	X(REPLICA_COUNTERS, NULL, STATS, INT, SUM, METRIC_LABELS("database", "replica"),           \
	  METRIC_NO_LABELS, NULL)                                                                  \
	X(TRANSACTION_DURATION, "pgfleet_transaction_duration_seconds", HISTOGRAM, INT, SUM,       \
	  METRIC_LABELS("database"), METRIC_NO_LABELS,                                             \
	  "Duration of transactions, from the first request to ReadyForQuery idle.")               \
	X(WAIT, "pgfleet_wait_seconds", HISTOGRAM, INT, SUM, METRIC_LABELS("database"),            \
	  METRIC_NO_LABELS, "Time a client waited for a server connection, per assignment.")       \
	X(REPLICA_UP, "pgfleet_replica_up", GAUGE, INT, FIRST, METRIC_LABELS("database", "replica"), \
	  METRIC_LABELS("role"), "1 when the replica is up (takes transactions).")                 \
	X(REPLICA_STATE, "pgfleet_replica_state", GAUGE, INT, FIRST,                               \
	  METRIC_LABELS("database", "replica", "state"), METRIC_NO_LABELS,                         \
	  "1 for the replica's life-cycle state (new, up, down, banned, draining).")               \
	X(REPLICA_LAG, "pgfleet_replica_lag_seconds", GAUGE, REAL, FIRST,                          \
	  METRIC_LABELS("database", "replica"), METRIC_NO_LABELS,                                  \
	  "Replay lag of a standby at its last check (0 for a primary).")                          \
	X(REPLICA_ELIGIBLE, "pgfleet_replica_eligible", GAUGE, INT, FIRST,                         \
	  METRIC_LABELS("database", "replica"), METRIC_NO_LABELS,                                  \
	  "1 when the replica may take new transactions for its database's "                       \
	  "target_session_attrs (health, role, lag).")                                             \
	X(DNS_RESOLUTIONS, "pgfleet_dns_resolutions_total", COUNTER, INT, FIRST,                   \
	  METRIC_LABELS("host", "result"), METRIC_NO_LABELS,                                       \
	  "DNS lookups of a database host, by result (a failure keeps the last answer).")          \
	X(DNS_ADDRESSES, "pgfleet_dns_addresses", GAUGE, INT, FIRST, METRIC_LABELS("host"),        \
	  METRIC_NO_LABELS, "Addresses in a host's last good DNS answer.")                         \
	X(ROUTE_PARSES, "pgfleet_route_parses_total", COUNTER, INT, SUM, METRIC_NO_LABELS,         \
	  METRIC_NO_LABELS,                                                                        \
	  "Statements target_session_attrs = auto had PostgreSQL's parser classify (cache misses).") \
	X(ROUTE_CACHE_HITS, "pgfleet_route_cache_hits_total", COUNTER, INT, SUM, METRIC_NO_LABELS, \
	  METRIC_NO_LABELS, "Statements classified from the cache of earlier answers.")                \
	X(DATABASE_CONNECTION_SHARE, "pgfleet_database_connection_share", GAUGE, INT, FIRST,       \
	  METRIC_LABELS("database"), METRIC_NO_LABELS,                                             \
	  "This instance's share of the database's max_db_connections among the live pgfleet "     \
	  "instances (the shares add up to the limit; no series without a limit).")    \
	X(CLIENTS, "pgfleet_clients", GAUGE, INT, SUM,                                             \
	  METRIC_LABELS("database", "user", "state"), METRIC_NO_LABELS,                            \
	  "Clients of a database and user by state (login, waiting, active, idle).")               \
	X(POOL_MAX_WAIT, "pgfleet_pool_max_wait_seconds", GAUGE, REAL, MAX,                        \
	  METRIC_LABELS("database", "user"), METRIC_NO_LABELS,                                     \
	  "How long the longest-waiting client of the pool has waited so far (0: none waits).")    \
	X(DATABASE_POOL_SIZE, "pgfleet_database_pool_size", GAUGE, INT, FIRST,                     \
	  METRIC_LABELS("database"), METRIC_NO_LABELS,                                             \
	  "Server connections a pool of the database may open to each replica.")                   \
	X(DATABASE_PAUSED, "pgfleet_database_paused", GAUGE, INT, MAX, METRIC_LABELS("database"),  \
	  METRIC_NO_LABELS, "1 while the database is paused (PAUSE).")                             \
	X(DATABASE_DISABLED, "pgfleet_database_disabled", GAUGE, INT, MAX,                         \
	  METRIC_LABELS("database"), METRIC_NO_LABELS,                                             \
	  "1 while the database is disabled (DISABLE): new clients are refused.")     \
	X(DATABASE_PRIMARIES, "pgfleet_database_primaries", GAUGE, INT, FIRST,                     \
	  METRIC_LABELS("database"), METRIC_NO_LABELS,                                             \
	  "Up primaries behind the database; more than 1 is a split brain (writes go to one).") \
	X(PEERS, "pgfleet_peers", GAUGE, INT, FIRST, METRIC_NO_LABELS, METRIC_NO_LABELS,           \
	  "Live pgfleet instances of the fleet, this one included (1 without peers).")            \
	X(PEER_UP, "pgfleet_peer_up", GAUGE, INT, FIRST, METRIC_LABELS("peer"),                    \
	  METRIC_LABELS("self"), "1 while the peer answers its pings (this instance: always).")    \
	X(PEER_CANCELS, "pgfleet_peer_cancels_total", COUNTER, INT, FIRST,                         \
	  METRIC_LABELS("peer", "direction"), METRIC_NO_LABELS,                                    \
	  "CancelRequests forwarded to a peer (sent) or from it (received).")                     \
	X(PEER_REFUSED, "pgfleet_peer_messages_refused_total", COUNTER, INT, FIRST,                \
	  METRIC_NO_LABELS, METRIC_NO_LABELS,                                                      \
	  "Peer messages refused: wrong size, bad signature, stale or replayed.")                  \
	X(READ_RETRIES, "pgfleet_read_retries_total", COUNTER, INT, SUM, METRIC_LABELS("reason"),  \
	  METRIC_NO_LABELS,                                                                        \
	  "Reads re-run elsewhere before any reply reached the client: read_only (a standby "      \
	  "refused a write, 25006: the primary), server_lost (the standby's connection broke).")

enum metric_id {
#define METRIC_ENUM(id, name, type, value, merge, keys, follow, help) MF_##id,
	METRIC_FAMILIES(METRIC_ENUM)
#undef METRIC_ENUM
	MF_COUNT
};

#define METRIC_MAX_LABELS 4

/* One family, from METRIC_FAMILIES (metric_families[MF_...]). */
struct metric_family {
	const char *name;
	enum metric_type type;
	enum table_kind value; /* TABLE_INT or TABLE_REAL (counter, gauge) */
	enum table_merge merge;
	const char *keys[METRIC_MAX_LABELS];   /* NULL-terminated */
	const char *follow[METRIC_MAX_LABELS]; /* NULL-terminated */
	const char *help;
};
extern const struct metric_family metric_families[MF_COUNT];

/*
 * The columns of a family's table: 0 is a constant key (so a family without
 * labels still merges as one series), then the labels, keys first then
 * follow ones (TABLE_TEXT, in label order), then the values from
 * metric_value_col(): one for a counter or gauge; STATS_BUCKETS + 1 bucket
 * counts and the sum (TABLE_REAL) for a histogram; STATS_NFIELDS counts
 * (stats_fields[] order) for STATS.
 */
int metric_nlabels(enum metric_id f);
static inline int metric_value_col(enum metric_id f)
{
	return 1 + metric_nlabels(f);
}
/* The label name of column 1 + i (i < metric_nlabels(f)). */
const char *metric_label(enum metric_id f, int i);

/* A loop's metrics: one table per family. */
struct metrics {
	struct table fam[MF_COUNT];
};

void metrics_init(struct metrics *m);
/* A series of a counter or gauge family: its label values (keys then follow
 * ones, NULL-terminated; a missing one renders as ""), then the value. */
void metrics_add_int(struct metrics *m, enum metric_id f, int64_t v, ...)
	__attribute__((sentinel));
void metrics_add_real(struct metrics *m, enum metric_id f, double v, ...)
	__attribute__((sentinel));
/* A series of a HISTOGRAM family / of the STATS family, labels as above. */
void metrics_add_histogram(struct metrics *m, enum metric_id f, const struct histogram *h, ...)
	__attribute__((sentinel));
void metrics_add_stats(struct metrics *m, enum metric_id f, const struct stats *st, ...)
	__attribute__((sentinel));
/* dst += src, family by family, by each family's merge rule (workers in
 * order: with FIRST the earlier worker's series stands). */
void metrics_merge(struct metrics *dst, const struct metrics *src);
/* True when an allocation failed: series are missing. */
bool metrics_incomplete(const struct metrics *m);
void metrics_free(struct metrics *m);

#endif
