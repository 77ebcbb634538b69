/*
 * test_table.c: typed rows (table.c): what each merge rule makes of two
 * workers' tables, and the console's bytes for a row.  Each case fills two
 * tables, merges them into a third as the admin console does (the asking
 * worker's first) and reads the merged rows back as "a|b|c" strings ("~"
 * is NULL).
 */
#include "harness.h"

#include "proto.h"
#include "table.h"

#include <stdint.h>
#include <stdlib.h>
#include <string.h>

/* Row r as "a|b|c". */
static const char *row_str(const struct table *t, size_t r)
{
	static char out[512];
	size_t n = 0;
	out[0] = 0;
	for (int c = 0; c < t->ncols; c++) {
		char buf[64];
		const char *s = "~";
		if (!table_at(t, r, c)->null)
			s = table_cell_str(t, r, c, buf, sizeof(buf));
		n += (size_t)snprintf(out + n, sizeof(out) - n, "%s%s", c ? "|" : "", s);
	}
	return out;
}

/* dst = merge of a then b, into a fresh table. */
static void merge2(struct table *dst, const struct table *a, const struct table *b)
{
	table_init(dst, a->cols, a->ncols);
	table_merge(dst, a);
	table_merge(dst, b);
}

static const struct table_col pool_cols[] = {
	{"database", TABLE_TEXT, TABLE_KEY, 0},  {"user", TABLE_TEXT, TABLE_KEY, 0},
	{"cl_active", TABLE_INT, TABLE_SUM, 0},  {"maxwait", TABLE_INT, TABLE_MAX, 0},
	{"min_wait", TABLE_INT, TABLE_MIN, 0},   {"pool_size", TABLE_INT, TABLE_FIRST, 0},
	{"pool_mode", TABLE_TEXT, TABLE_FIRST, 0},
};

static void pool_row(struct table *t, const char *db, const char *user, int64_t active,
		     int64_t maxwait, int64_t minwait, int64_t size, const char *mode)
{
	CHECK(table_add_row(t));
	table_text(t, 0, db);
	table_text(t, 1, user);
	table_int(t, 2, active);
	table_int(t, 3, maxwait);
	table_int(t, 4, minwait);
	table_int(t, 5, size);
	table_text(t, 6, mode);
}

/* Rows with equal keys (two key columns) combine; the others are appended
 * in order, the first worker's first. */
static void test_keyed_sum_max_min_first(void)
{
	struct table a, b, m;
	table_init(&a, pool_cols, 7);
	table_init(&b, pool_cols, 7);
	pool_row(&a, "app", "alice", 3, 1, 5, 20, "transaction");
	pool_row(&a, "app", "bob", 1, 0, 2, 20, "transaction");
	pool_row(&b, "app", "bob", 2, 4, 1, 10, "session");
	pool_row(&b, "app", "alice", 4, 0, 9, 30, "session");
	pool_row(&b, "other", "alice", 7, 7, 7, 7, "statement");
	merge2(&m, &a, &b);
	CHECK(m.nrows == 3);
	CHECK_STR(row_str(&m, 0), "app|alice|7|1|5|20|transaction");
	CHECK_STR(row_str(&m, 1), "app|bob|3|4|1|20|transaction");
	CHECK_STR(row_str(&m, 2), "other|alice|7|7|7|7|statement");
	CHECK(!m.oom);
	table_free(&a);
	table_free(&b);
	table_free(&m);
}

static const struct table_col conn_cols[] = {
	{"type", TABLE_TEXT, TABLE_FIRST, 0},
	{"port", TABLE_INT, TABLE_FIRST, TABLE_OID_INT4},
};

/* No key column: every worker's rows, one after the other, none combined
 * even when equal. */
static void test_concat_without_key(void)
{
	struct table a, b, m;
	table_init(&a, conn_cols, 2);
	table_init(&b, conn_cols, 2);
	for (int i = 0; i < 2; i++) {
		table_add_row(&a);
		table_text(&a, 0, "C");
		table_int(&a, 1, 5000 + i);
	}
	table_add_row(&b);
	table_text(&b, 0, "C");
	table_int(&b, 1, 5000);
	merge2(&m, &a, &b);
	CHECK(m.nrows == 3);
	CHECK_STR(row_str(&m, 0), "C|5000");
	CHECK_STR(row_str(&m, 1), "C|5001");
	CHECK_STR(row_str(&m, 2), "C|5000");
	table_free(&a);
	table_free(&b);
	table_free(&m);
}

static const struct table_col null_cols[] = {
	{"name", TABLE_TEXT, TABLE_KEY, 0},
	{"count", TABLE_INT, TABLE_SUM, 0},
	{"note", TABLE_TEXT, TABLE_FIRST, 0},
	{"lag", TABLE_REAL, TABLE_MAX, 0},
};

/* A NULL number takes no part (the other's value stands), a NULL key equals
 * only a NULL key, and text keeps the first non-NULL value. */
static void test_nulls_and_text_first_wins(void)
{
	struct table a, b, m;
	table_init(&a, null_cols, 4);
	table_init(&b, null_cols, 4);
	table_add_row(&a);
	table_text(&a, 0, "x");
	table_text(&a, 2, NULL);
	table_real(&a, 3, 0.25);
	table_add_row(&a); /* a NULL key */
	table_int(&a, 1, 1);
	table_add_row(&b);
	table_text(&b, 0, "x");
	table_int(&b, 1, 4);
	table_text(&b, 2, "second");
	table_add_row(&b);
	table_int(&b, 1, 2);
	table_text(&b, 2, "n");
	table_add_row(&b);
	table_text(&b, 0, "y");
	table_text(&b, 2, "");
	merge2(&m, &a, &b);
	CHECK(m.nrows == 3);
	CHECK_STR(row_str(&m, 0), "x|4|second|0.250");
	CHECK_STR(row_str(&m, 1), "~|3|n|~");
	CHECK_STR(row_str(&m, 2), "y|~||~");
	table_free(&a);
	table_free(&b);
	table_free(&m);

	/* Text first-wins: a non-NULL first value is never replaced. */
	table_init(&a, null_cols, 4);
	table_init(&b, null_cols, 4);
	table_add_row(&a);
	table_text(&a, 0, "k");
	table_text(&a, 2, "first");
	table_add_row(&b);
	table_text(&b, 0, "k");
	table_text(&b, 2, "second");
	merge2(&m, &a, &b);
	CHECK_STR(row_str(&m, 0), "k|~|first|~");
	table_free(&a);
	table_free(&b);
	table_free(&m);
}

static const struct table_col mean_cols[] = {
	{"name", TABLE_TEXT, TABLE_KEY, 0},
	{"avg_us", TABLE_INT, TABLE_MEAN, 0},
	{"avg_s", TABLE_REAL, TABLE_MEAN, 0},
};

static void mean_row(struct table *t, const char *name, int64_t us, double s)
{
	table_add_row(t);
	table_text(t, 0, name);
	table_int(t, 1, us);
	table_real(t, 2, s);
}

/* TABLE_MEAN: the mean of the non-zero values, an int rounded half up; a
 * merged mean merges on as the mean of all its values. */
static void test_mean(void)
{
	struct table w[3], m;
	for (int i = 0; i < 3; i++)
		table_init(&w[i], mean_cols, 3);
	mean_row(&w[0], "a", 3, 0.5);
	mean_row(&w[1], "a", 4, 0);
	mean_row(&w[0], "b", 0, 0);
	mean_row(&w[1], "b", 10, 1.0);
	mean_row(&w[0], "c", 0, 0);
	mean_row(&w[1], "c", 0, 0);
	mean_row(&w[2], "a", 5, 1.5);
	table_init(&m, mean_cols, 3);
	table_merge(&m, &w[0]);
	table_merge(&m, &w[1]);
	CHECK_STR(row_str(&m, 0), "a|4|0.500"); /* (3 + 4) / 2 = 3.5 -> 4 */
	CHECK_STR(row_str(&m, 1), "b|10|1.000"); /* a worker with 0 has no say */
	CHECK_STR(row_str(&m, 2), "c|0|0.000");
	table_merge(&m, &w[2]);
	CHECK_STR(row_str(&m, 0), "a|4|1.000"); /* (3 + 4 + 5) / 3, (0.5 + 1.5) / 2 */

	/* A merged table merged into another keeps its count of values. */
	struct table m2, more;
	table_init(&m2, mean_cols, 3);
	table_init(&more, mean_cols, 3);
	table_merge(&m2, &m);
	mean_row(&more, "b", 20, 0);
	table_merge(&m2, &more);
	table_free(&more);
	CHECK_STR(row_str(&m2, 0), "a|4|1.000");
	CHECK_STR(row_str(&m2, 1), "b|15|1.000");
	table_free(&m2);
	table_free(&m);
	for (int i = 0; i < 3; i++)
		table_free(&w[i]);
}

/* An out-of-memory part makes the merge say rows are missing. */
static void test_oom_flag(void)
{
	struct table a, b, m;
	table_init(&a, conn_cols, 2);
	table_init(&b, conn_cols, 2);
	table_add_row(&a);
	table_text(&a, 0, "C");
	b.oom = true;
	CHECK(!table_add_row(&b)); /* once set, nothing more is added */
	CHECK(b.nrows == 0);
	merge2(&m, &a, &b);
	CHECK(m.oom);
	CHECK(m.nrows == 1);
	table_free(&a);
	table_free(&b);
	table_free(&m);
}

/* The bytes of a RowDescription and DataRows: text format, int4 / int8 /
 * numeric OIDs and sizes, NULL as length -1, a real with 3 decimals. */
static void test_write_bytes(void)
{
	static const struct table_col cols[] = {
		{"n", TABLE_TEXT, TABLE_KEY, 0},
		{"i", TABLE_INT, TABLE_SUM, TABLE_OID_INT4},
		{"r", TABLE_REAL, TABLE_FIRST, 0},
	};
	struct table t;
	struct wbuf w = {0};
	table_init(&t, cols, 3);
	table_add_row(&t);
	table_text(&t, 0, "ab");
	table_int(&t, 1, -7);
	table_add_row(&t);
	table_real(&t, 2, 1.5);
	table_write_rows(&t, &w);
	static const uint8_t rows[] = {
		'D', 0, 0, 0, 22, 0, 3, 0, 0, 0, 2, 'a', 'b', 0, 0, 0, 2, '-', '7',
		0xff, 0xff, 0xff, 0xff,
		'D', 0, 0, 0, 23, 0, 3, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff,
		0, 0, 0, 5, '1', '.', '5', '0', '0',
	};
	CHECK(w.len == sizeof(rows) && memcmp(w.data, rows, sizeof(rows)) == 0);
	wbuf_reset(&w);
	table_write_header(&t, &w);
	/* 'T', length, 3 columns; the second: "i", table 0, column 0, OID 23,
	 * size 4, typmod -1, text. */
	CHECK(w.len == 1 + 4 + 2 + 3 * 18 + 2 + 2 + 2);
	CHECK(w.data[0] == 'T' && proto_get_u32(w.data + 1) == w.len - 1);
	const uint8_t *i = w.data + 7 + 2 + 18;
	CHECK(i[0] == 'i' && i[1] == 0);
	CHECK(proto_get_u32(i + 8) == 23 && i[12] == 0 && i[13] == 4);
	const uint8_t *r = i + 2 + 18;
	CHECK(r[0] == 'r' && proto_get_u32(r + 8) == 1700 && r[12] == 0xff && r[13] == 0xff);
	CHECK(proto_get_u32(w.data + 7 + 2 + 6) == 25); /* text */
	wbuf_free(&w);
	table_free(&t);
}

int main(void)
{
	RUN(test_keyed_sum_max_min_first);
	RUN(test_concat_without_key);
	RUN(test_nulls_and_text_first_wins);
	RUN(test_mean);
	RUN(test_oom_flag);
	RUN(test_write_bytes);
	return harness_finish();
}
