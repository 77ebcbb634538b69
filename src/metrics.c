/*
 * metrics.c: a loop's /metrics families as typed tables, and their merge.
 *
 * Each family's table columns follow from its METRIC_FAMILIES row (built
 * once per process); collecting reads the loop's own state and copies it
 * into rows, so a snapshot can cross to another worker and outlive the
 * objects it describes.  It runs per scrape, never per transaction.
 *
 * Must not: format text, or change the state it reads.
 */
#include "metrics.h"

#include <pthread.h>
#include <stdarg.h>
#include <stddef.h>

#include "batch.h"
#include "client.h"
#include "database.h"
#include "pool.h"
#include "runtime.h"
#include "version.h"

const struct metric_family metric_families[MF_COUNT] = {
#define METRIC_ROW(id, name_, type_, value_, merge_, keys_, follow_, help_)                        \
	[MF_##id] = {.name = name_,                                                                \
		     .type = METRIC_##type_,                                                       \
		     .value = TABLE_##value_,                                                      \
		     .merge = TABLE_##merge_,                                                      \
		     .keys = keys_,                                                                \
		     .follow = follow_,                                                            \
		     .help = help_},
	METRIC_FAMILIES(METRIC_ROW)
#undef METRIC_ROW
};

#define MAX_VALUES (STATS_NFIELDS > STATS_BUCKETS + 2 ? STATS_NFIELDS : STATS_BUCKETS + 2)
#define MAX_COLS (1 + 2 * METRIC_MAX_LABELS + MAX_VALUES)

static struct table_col cols[MF_COUNT][MAX_COLS];
static int ncols[MF_COUNT];
static int nlabels[MF_COUNT];
static pthread_once_t cols_once = PTHREAD_ONCE_INIT;

static void cols_build(void)
{
	for (int f = 0; f < MF_COUNT; f++) {
		const struct metric_family *fam = &metric_families[f];
		struct table_col *c = cols[f];
		int n = 0;
		c[n++] = (struct table_col){"series", TABLE_INT, TABLE_KEY, 0};
		for (int i = 0; i < METRIC_MAX_LABELS && fam->keys[i]; i++)
			c[n++] = (struct table_col){fam->keys[i], TABLE_TEXT, TABLE_KEY, 0};
		/* Text cells merge as "the first worker's": the one whose value stands. */
		for (int i = 0; i < METRIC_MAX_LABELS && fam->follow[i]; i++)
			c[n++] = (struct table_col){fam->follow[i], TABLE_TEXT, TABLE_FIRST, 0};
		nlabels[f] = n - 1;
		switch (fam->type) {
		case METRIC_COUNTER:
		case METRIC_GAUGE:
			c[n++] = (struct table_col){"value", fam->value, fam->merge, 0};
			break;
		case METRIC_HISTOGRAM:
			for (int i = 0; i <= STATS_BUCKETS; i++)
				c[n++] = (struct table_col){"bucket", TABLE_INT, fam->merge, 0};
			c[n++] = (struct table_col){"sum", TABLE_REAL, fam->merge, 0};
			break;
		case METRIC_STATS:
			for (int i = 0; i < STATS_NFIELDS; i++)
				c[n++] = (struct table_col){stats_fields[i].name, TABLE_INT, fam->merge,
							    0};
			break;
		}
		ncols[f] = n;
	}
}

int metric_nlabels(enum metric_id f)
{
	pthread_once(&cols_once, cols_build);
	return nlabels[f];
}

const char *metric_label(enum metric_id f, int i)
{
	pthread_once(&cols_once, cols_build);
	return cols[f][1 + i].name;
}

void metrics_init(struct metrics *m)
{
	pthread_once(&cols_once, cols_build);
	for (int f = 0; f < MF_COUNT; f++)
		table_init(&m->fam[f], cols[f], ncols[f]);
}

void metrics_free(struct metrics *m)
{
	for (int f = 0; f < MF_COUNT; f++)
		table_free(&m->fam[f]);
}

void metrics_merge(struct metrics *dst, const struct metrics *src)
{
	for (int f = 0; f < MF_COUNT; f++)
		table_merge(&dst->fam[f], &src->fam[f]);
}

bool metrics_incomplete(const struct metrics *m)
{
	for (int f = 0; f < MF_COUNT; f++)
		if (m->fam[f].oom)
			return true;
	return false;
}

/* Starts a series of family f: its row, the constant key, the label values
 * (NULL-terminated; fewer leave the rest NULL).  False: out of memory. */
static bool series_start(struct metrics *m, enum metric_id f, va_list ap)
{
	struct table *t = &m->fam[f];
	if (!table_add_row(t))
		return false;
	table_int(t, 0, 0);
	for (int i = 0; i < nlabels[f]; i++) {
		const char *v = va_arg(ap, const char *);
		if (!v)
			break;
		table_text(t, 1 + i, v);
	}
	return true;
}

void metrics_add_int(struct metrics *m, enum metric_id f, int64_t v, ...)
{
	va_list ap;
	va_start(ap, v);
	bool ok = series_start(m, f, ap);
	va_end(ap);
	if (ok)
		table_int(&m->fam[f], metric_value_col(f), v);
}

void metrics_add_real(struct metrics *m, enum metric_id f, double v, ...)
{
	va_list ap;
	va_start(ap, v);
	bool ok = series_start(m, f, ap);
	va_end(ap);
	if (ok)
		table_real(&m->fam[f], metric_value_col(f), v);
}

/* ---- collection -------------------------------------------------------------- */

#define DB_OF(it) container_of(it, struct database, node)
#define REPLICA_OF(it) container_of(it, struct replica, node)

static void add_histogram(struct metrics *m, enum metric_id f, const struct histogram *h,
			  const char *db)
{
	struct table *t = &m->fam[f];
	if (!table_add_row(t))
		return;
	table_int(t, 0, 0);
	table_text(t, 1, db);
	int col = metric_value_col(f);
	for (int i = 0; i <= STATS_BUCKETS; i++)
		table_int(t, col++, (int64_t)h->bucket[i]);
	table_real(t, col, h->sum);
}

static void add_replica_counters(struct metrics *m, const struct stats *st, const char *db,
				 const char *replica)
{
	struct table *t = &m->fam[MF_REPLICA_COUNTERS];
	if (!table_add_row(t))
		return;
	table_int(t, 0, 0);
	table_text(t, 1, db);
	table_text(t, 2, replica);
	int col = metric_value_col(MF_REPLICA_COUNTERS);
	for (int i = 0; i < STATS_NFIELDS; i++)
		table_int(t, col + i, (int64_t)stats_get(st, i));
}

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
		list_for_each(git, &DB_OF(dit)->groups) {
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
	add_replica_counters(m, &r->st, db->name, r->addr_str);
	metrics_add_int(m, MF_REPLICA_UP, r->state == REPLICA_UP, db->name, r->addr_str,
			replica_role_name(r->role), NULL);
	for (int s = REPLICA_NEW; s <= REPLICA_DRAINING; s++)
		metrics_add_int(m, MF_REPLICA_STATE, r->state == (enum replica_state)s, db->name,
				r->addr_str, replica_state_name((enum replica_state)s), NULL);
	metrics_add_real(m, MF_REPLICA_LAG, r->lag_s, db->name, r->addr_str, NULL);
	metrics_add_int(m, MF_REPLICA_ELIGIBLE, replica_eligible(r, now), db->name, r->addr_str,
			NULL);
}

void metrics_collect(struct metrics *m)
{
	collect_process(m);
	collect_io_batches(m);
	collect_clients(m);
	double now = fleet_now();
	struct list *dit, *rit;
	list_for_each(dit, &fleet.databases) {
		const struct database *db = DB_OF(dit);
		list_for_each(rit, &db->replicas) {
			collect_replica(m, db, REPLICA_OF(rit), now);
		}
		add_histogram(m, MF_TRANSACTION_DURATION, &db->xact_hist, db->name);
		add_histogram(m, MF_WAIT, &db->wait_hist, db->name);
	}
}
