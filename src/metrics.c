/*
 * metrics.c: the /metrics families as typed tables, and their merge.
 *
 * Each family's table columns follow from its METRIC_FAMILIES row (built
 * once per process).  A snapshot's rows are copies (label text included),
 * so it can cross to another worker and outlive the objects it describes.
 * It is built per scrape, never per transaction.
 *
 * Must not: read loop state (its owners fill the rows: stats.c collects
 * the model's), or format text (http.c renders).
 */
#include "metrics.h"

#include <pthread.h>
#include <stdarg.h>
#include <stddef.h>

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
		/* Always 0: a family without labels is still keyed, so two
		 * workers' samples merge into one series, not two rows. */
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
#define STATS_COL(field, per, tc, ac, vc, family, scale, help)                                     \
	c[n++] = (struct table_col){#field, TABLE_INT, fam->merge, 0};
			STATS_COUNTERS(STATS_COL)
#undef STATS_COL
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

void metrics_add_histogram(struct metrics *m, enum metric_id f, const struct histogram *h, ...)
{
	va_list ap;
	va_start(ap, h);
	bool ok = series_start(m, f, ap);
	va_end(ap);
	if (!ok)
		return;
	struct table *t = &m->fam[f];
	int col = metric_value_col(f);
	for (int i = 0; i <= STATS_BUCKETS; i++)
		table_int(t, col++, (int64_t)h->bucket[i]);
	table_real(t, col, h->sum);
}

void metrics_add_stats(struct metrics *m, enum metric_id f, const struct stats *st, ...)
{
	va_list ap;
	va_start(ap, st);
	bool ok = series_start(m, f, ap);
	va_end(ap);
	if (!ok)
		return;
	int col = metric_value_col(f);
	for (int i = 0; i < STATS_NFIELDS; i++)
		table_int(&m->fam[f], col + i, (int64_t)stats_get(st, i));
}
