/*
 * test_metrics.c: the /metrics families as data (metrics.c): their table
 * columns, and how two workers' snapshots merge by each family's rule
 * (what the text merger of old did with name lists and label surgery).
 */
#include "harness.h"

#include "metrics.h"

#include <string.h>

static const struct table_cell *cell(const struct metrics *m, enum metric_id f, size_t row,
				     int col)
{
	return table_at(&m->fam[f], row, col);
}

static const char *label(const struct metrics *m, enum metric_id f, size_t row, int i)
{
	const struct table_cell *x = cell(m, f, row, 1 + i);
	return x->null ? NULL : x->v.s;
}

static int64_t value(const struct metrics *m, enum metric_id f, size_t row)
{
	return cell(m, f, row, metric_value_col(f))->v.i;
}

static void test_every_family_is_described(void)
{
	for (int f = 0; f < MF_COUNT; f++) {
		const struct metric_family *fam = &metric_families[f];
		if (fam->type == METRIC_STATS) {
			CHECK(fam->name == NULL);
			continue;
		}
		CHECK(fam->name && strncmp(fam->name, "pgfleet_", 8) == 0);
		CHECK(fam->help && *fam->help);
		CHECK(fam->merge == TABLE_SUM || fam->merge == TABLE_FIRST ||
		      fam->merge == TABLE_MAX);
	}
	CHECK(metric_nlabels(MF_UPTIME) == 0);
	CHECK(metric_nlabels(MF_REPLICA_UP) == 3);
	CHECK_STR(metric_label(MF_REPLICA_UP, 2), "role");
	CHECK_STR(metric_label(MF_SERVER_CONNECTIONS, 2), "state");
}

/* Counts of what each worker holds add up, series by series; a series only
 * one worker has comes after the first worker's. */
static void test_counts_sum(void)
{
	struct metrics a, b;
	metrics_init(&a);
	metrics_init(&b);
	metrics_add_int(&a, MF_SERVER_CONNECTIONS, 2, "app", "10.0.0.1:5432", "idle", NULL);
	metrics_add_int(&b, MF_SERVER_CONNECTIONS, 3, "app", "10.0.0.2:5432", "idle", NULL);
	metrics_add_int(&b, MF_SERVER_CONNECTIONS, 5, "app", "10.0.0.1:5432", "idle", NULL);
	metrics_add_int(&a, MF_IO_URING_ENABLED, 1, NULL);
	metrics_add_int(&b, MF_IO_URING_ENABLED, 1, NULL);
	metrics_merge(&a, &b);
	CHECK(a.fam[MF_SERVER_CONNECTIONS].nrows == 2);
	CHECK_STR(label(&a, MF_SERVER_CONNECTIONS, 0, 1), "10.0.0.1:5432");
	CHECK(value(&a, MF_SERVER_CONNECTIONS, 0) == 7);
	CHECK_STR(label(&a, MF_SERVER_CONNECTIONS, 1, 1), "10.0.0.2:5432");
	CHECK(value(&a, MF_SERVER_CONNECTIONS, 1) == 3);
	/* A family without labels is still one series. */
	CHECK(a.fam[MF_IO_URING_ENABLED].nrows == 1);
	CHECK(value(&a, MF_IO_URING_ENABLED, 0) == 2);
	CHECK(!metrics_incomplete(&a));
	metrics_free(&a);
	metrics_free(&b);
}

/* What every worker sees the same: the first worker's series stands, and
 * a replica's role (a follow label) comes with it rather than making a
 * second series. */
static void test_shared_things_from_the_first_worker(void)
{
	struct metrics a, b;
	metrics_init(&a);
	metrics_init(&b);
	metrics_add_real(&a, MF_UPTIME, 5.5, NULL);
	metrics_add_real(&b, MF_UPTIME, 5.75, NULL);
	metrics_add_int(&a, MF_REPLICA_UP, 1, "app", "10.0.0.1:5432", "primary", NULL);
	metrics_add_int(&b, MF_REPLICA_UP, 0, "app", "10.0.0.1:5432", "unknown", NULL);
	metrics_add_int(&b, MF_REPLICA_UP, 1, "app", "10.0.0.2:5432", "standby", NULL);
	metrics_merge(&a, &b);
	CHECK(a.fam[MF_UPTIME].nrows == 1);
	CHECK(cell(&a, MF_UPTIME, 0, metric_value_col(MF_UPTIME))->v.d == 5.5);
	CHECK(a.fam[MF_REPLICA_UP].nrows == 2);
	CHECK_STR(label(&a, MF_REPLICA_UP, 0, 2), "primary");
	CHECK(value(&a, MF_REPLICA_UP, 0) == 1);
	CHECK_STR(label(&a, MF_REPLICA_UP, 1, 2), "standby");
	CHECK(value(&a, MF_REPLICA_UP, 1) == 1);
	metrics_free(&a);
	metrics_free(&b);
}

/* A histogram's buckets and sum, and a replica's counters, add up. */
static void test_histograms_and_counters_sum(void)
{
	struct metrics a, b;
	metrics_init(&a);
	metrics_init(&b);
	struct histogram h = {0};
	h.bucket[0] = 2;
	h.bucket[STATS_BUCKETS] = 1;
	h.sum = 0.5;
	metrics_add_histogram(&a, MF_WAIT, &h, "app", NULL);
	metrics_add_histogram(&b, MF_WAIT, &h, "app", NULL);
	struct stats st = {0};
	st.xacts = 3;
	st.wait_us = 1500;
	metrics_add_stats(&a, MF_REPLICA_COUNTERS, &st, "app", "10.0.0.1:5432", NULL);
	metrics_add_stats(&b, MF_REPLICA_COUNTERS, &st, "app", "10.0.0.1:5432", NULL);
	metrics_merge(&a, &b);
	int col = metric_value_col(MF_WAIT);
	CHECK(a.fam[MF_WAIT].nrows == 1);
	CHECK(cell(&a, MF_WAIT, 0, col)->v.i == 4);
	CHECK(cell(&a, MF_WAIT, 0, col + 1)->v.i == 0);
	CHECK(cell(&a, MF_WAIT, 0, col + STATS_BUCKETS)->v.i == 2);
	CHECK(cell(&a, MF_WAIT, 0, col + STATS_BUCKETS + 1)->v.d == 1.0);
	col = metric_value_col(MF_REPLICA_COUNTERS);
	CHECK(a.fam[MF_REPLICA_COUNTERS].nrows == 1);
	CHECK(cell(&a, MF_REPLICA_COUNTERS, 0, col + STATS_F_xacts)->v.i == 6);
	CHECK(cell(&a, MF_REPLICA_COUNTERS, 0, col + STATS_F_wait_us)->v.i == 3000);
	metrics_free(&a);
	metrics_free(&b);
}

/* Fewer label values than labels leave the rest NULL (rendered ""). */
static void test_missing_label_is_null(void)
{
	struct metrics a;
	metrics_init(&a);
	metrics_add_int(&a, MF_DNS_RESOLUTIONS, 4, "db.example", NULL);
	CHECK(a.fam[MF_DNS_RESOLUTIONS].nrows == 1);
	CHECK_STR(label(&a, MF_DNS_RESOLUTIONS, 0, 0), "db.example");
	CHECK(label(&a, MF_DNS_RESOLUTIONS, 0, 1) == NULL);
	CHECK(value(&a, MF_DNS_RESOLUTIONS, 0) == 4);
	metrics_free(&a);
}

/* The longest wait and the paused flag: the largest any worker reports. */
static void test_longest_wait_and_paused_are_the_largest(void)
{
	struct metrics a, b;
	metrics_init(&a);
	metrics_init(&b);
	metrics_add_real(&a, MF_POOL_MAX_WAIT, 0.25, "app", "u", NULL);
	metrics_add_real(&b, MF_POOL_MAX_WAIT, 1.5, "app", "u", NULL);
	metrics_add_int(&a, MF_DATABASE_PAUSED, 0, "app", NULL);
	metrics_add_int(&b, MF_DATABASE_PAUSED, 1, "app", NULL);
	metrics_add_int(&a, MF_CLIENTS, 2, "app", "u", "waiting", NULL);
	metrics_add_int(&b, MF_CLIENTS, 3, "app", "u", "waiting", NULL);
	metrics_merge(&a, &b);
	CHECK(a.fam[MF_POOL_MAX_WAIT].nrows == 1);
	CHECK(cell(&a, MF_POOL_MAX_WAIT, 0, metric_value_col(MF_POOL_MAX_WAIT))->v.d == 1.5);
	CHECK(value(&a, MF_DATABASE_PAUSED, 0) == 1);
	CHECK(value(&a, MF_CLIENTS, 0) == 5);
	metrics_free(&a);
	metrics_free(&b);
}

int main(void)
{
	RUN(test_every_family_is_described);
	RUN(test_counts_sum);
	RUN(test_shared_things_from_the_first_worker);
	RUN(test_histograms_and_counters_sum);
	RUN(test_missing_label_is_null);
	RUN(test_longest_wait_and_paused_are_the_largest);
	return harness_finish();
}
