/*
 * table.h: typed rows: what an admin SHOW or a /metrics family is before it
 * is rendered.  With workers = N each worker fills a table from its own loop
 * state and hands it over (it holds no pointer into that state); one place,
 * table_merge, combines them by each column's rule, and the merged table is
 * rendered once (table_write_rows for the console; http.c for /metrics).
 *
 * Must not: know what the rows are about (pools, replicas): columns say
 * everything a merge or a renderer needs.
 */
#ifndef PGFLEET_TABLE_H
#define PGFLEET_TABLE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "iobuf.h"

enum table_kind {
	TABLE_TEXT, /* a string (copied in), or NULL */
	TABLE_INT,  /* int64_t */
	TABLE_REAL, /* double, rendered with 3 decimals */
};

/* How the rows of several workers combine. */
enum table_merge {
	TABLE_KEY,   /* identifies the row: rows with equal key cells are one */
	TABLE_SUM,   /* counts: added */
	TABLE_MAX,   /* ages, longest waits, "any worker says so" flags */
	TABLE_MIN,
	TABLE_FIRST, /* the same on every worker (settings, names): the first one */
	TABLE_MEAN,  /* times per transaction: the mean of the non-zero values (a
	              * worker that saw no transaction has no say); an int is
	              * rounded half up */
};

/* PostgreSQL type OIDs a console column can be described with. */
enum table_oid {
	TABLE_OID_TEXT = 25,
	TABLE_OID_INT4 = 23,
	TABLE_OID_INT8 = 20,
	TABLE_OID_NUMERIC = 1700,
};

struct table_col {
	const char *name;
	enum table_kind kind;
	enum table_merge merge;
	enum table_oid oid; /* 0: text for TABLE_TEXT, int8 for TABLE_INT, numeric for TABLE_REAL */
};

struct table_cell {
	bool null;
	uint32_t n; /* TABLE_MEAN after a merge: how many values sum adds up (0: v alone) */
	double sum;
	union {
		int64_t i;
		double d;
		char *s; /* owned */
	} v;
};

/* A table with no TABLE_KEY column merges by concatenation (one row per
 * object, each object on one worker: clients, servers). */
struct table {
	const struct table_col *cols; /* static, not owned */
	int ncols;
	size_t nrows, cap; /* rows */
	struct table_cell *cells; /* nrows * ncols; row r's cell c at r * ncols + c */
	bool oom; /* an allocation failed: rows are missing */
};

void table_init(struct table *t, const struct table_col *cols, int ncols);
/* Starts a new row, every cell NULL (false: out of memory, t->oom set; the
 * setters then do nothing). */
bool table_add_row(struct table *t);
/* Set a cell of the last row. */
void table_text(struct table *t, int col, const char *s); /* NULL: SQL NULL */
void table_int(struct table *t, int col, int64_t v);
void table_real(struct table *t, int col, double v);
/* The cell at (row, col). */
static inline const struct table_cell *table_at(const struct table *t, size_t row, int col)
{
	return &t->cells[row * (size_t)t->ncols + (size_t)col];
}
/* Adds src's rows into dst (same columns): a row whose key cells equal a row
 * of dst combines with it by each column's rule, any other is appended in
 * src's order.  dst's rows keep their order. */
void table_merge(struct table *dst, const struct table *src);
void table_free(struct table *t);

/* The console's RowDescription and one DataRow per row (text format). */
void table_write_header(const struct table *t, struct wbuf *w);
void table_write_rows(const struct table *t, struct wbuf *w);
/* Formats one cell as the console shows it (for renderers that are not the
 * console, e.g. Prometheus labels).  Returns buf, "" for NULL. */
const char *table_cell_str(const struct table *t, size_t row, int col, char *buf, size_t len);

#endif
