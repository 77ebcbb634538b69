/*
 * table.c: typed rows, their merge by key, and their console rendering.
 *
 * A merge finds each row's key by a linear search: answers and metric
 * families hold a few thousand rows at most and are built on request (an
 * admin command, a scrape), never on the transaction path.
 */
#include "table.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "proto.h"

void table_init(struct table *t, const struct table_col *cols, int ncols)
{
	memset(t, 0, sizeof(*t));
	t->cols = cols;
	t->ncols = ncols;
}

bool table_add_row(struct table *t)
{
	if (t->oom)
		return false;
	if (t->nrows == t->cap) {
		size_t cap = t->cap ? t->cap * 2 : 16;
		struct table_cell *cells = realloc(t->cells, cap * (size_t)t->ncols * sizeof(*cells));
		if (!cells) {
			t->oom = true;
			return false;
		}
		t->cells = cells;
		t->cap = cap;
	}
	struct table_cell *row = &t->cells[t->nrows * (size_t)t->ncols];
	for (int c = 0; c < t->ncols; c++) {
		row[c].null = true;
		row[c].n = 0;
		row[c].sum = 0;
		row[c].v.s = NULL;
	}
	t->nrows++;
	return true;
}

static struct table_cell *last_cell(struct table *t, int col)
{
	if (t->oom || t->nrows == 0 || col < 0 || col >= t->ncols)
		return NULL;
	return &t->cells[(t->nrows - 1) * (size_t)t->ncols + (size_t)col];
}

static void cell_clear(const struct table *t, struct table_cell *x, int col)
{
	if (t->cols[col].kind == TABLE_TEXT)
		free(x->v.s);
	x->v.s = NULL;
	x->null = true;
}

void table_text(struct table *t, int col, const char *s)
{
	struct table_cell *x = last_cell(t, col);
	if (!x || t->cols[col].kind != TABLE_TEXT)
		return;
	cell_clear(t, x, col);
	if (!s)
		return;
	x->v.s = strdup(s);
	if (!x->v.s) {
		t->oom = true;
		return;
	}
	x->null = false;
}

void table_int(struct table *t, int col, int64_t v)
{
	struct table_cell *x = last_cell(t, col);
	if (!x || t->cols[col].kind != TABLE_INT)
		return;
	x->v.i = v;
	x->n = 0;
	x->null = false;
}

void table_real(struct table *t, int col, double v)
{
	struct table_cell *x = last_cell(t, col);
	if (!x || t->cols[col].kind != TABLE_REAL)
		return;
	x->v.d = v;
	x->n = 0;
	x->null = false;
}

static bool cell_equal(enum table_kind kind, const struct table_cell *a, const struct table_cell *b)
{
	if (a->null || b->null)
		return a->null && b->null;
	switch (kind) {
	case TABLE_TEXT:
		return strcmp(a->v.s, b->v.s) == 0;
	case TABLE_INT:
		return a->v.i == b->v.i;
	case TABLE_REAL:
		return a->v.d == b->v.d;
	}
	return false;
}

static bool has_key(const struct table *t)
{
	for (int c = 0; c < t->ncols; c++)
		if (t->cols[c].merge == TABLE_KEY)
			return true;
	return false;
}

static bool same_key(const struct table *t, const struct table_cell *a, const struct table_cell *b)
{
	for (int c = 0; c < t->ncols; c++)
		if (t->cols[c].merge == TABLE_KEY && !cell_equal(t->cols[c].kind, &a[c], &b[c]))
			return false;
	return true;
}

/* What a TABLE_MEAN cell adds to a mean: the values merged into it, or
 * itself when it is one non-zero value. */
static void mean_parts(bool real, const struct table_cell *x, double *sum, uint32_t *n)
{
	if (x->n) {
		*sum += x->sum;
		*n += x->n;
		return;
	}
	double v = real ? x->v.d : (double)x->v.i;
	if (v != 0) {
		*sum += v;
		(*n)++;
	}
}

static void mean_add(bool real, struct table_cell *dst, const struct table_cell *src)
{
	double sum = 0;
	uint32_t n = 0;
	mean_parts(real, dst, &sum, &n);
	mean_parts(real, src, &sum, &n);
	dst->sum = sum;
	dst->n = n;
	if (n == 0)
		return; /* every value was 0 */
	if (real)
		dst->v.d = sum / n;
	else
		dst->v.i = (int64_t)floor(sum / n + 0.5);
}

/* Combines src's number into dst's by the column's rule. */
static void combine(const struct table_col *col, struct table_cell *dst, const struct table_cell *src)
{
	if (src->null || col->merge == TABLE_KEY)
		return;
	if (dst->null) {
		*dst = *src;
		return;
	}
	bool real = col->kind == TABLE_REAL;
	switch (col->merge) {
	case TABLE_SUM:
		if (real)
			dst->v.d += src->v.d;
		else
			dst->v.i += src->v.i;
		break;
	case TABLE_MAX:
		if (real ? src->v.d > dst->v.d : src->v.i > dst->v.i)
			dst->v = src->v;
		break;
	case TABLE_MIN:
		if (real ? src->v.d < dst->v.d : src->v.i < dst->v.i)
			dst->v = src->v;
		break;
	case TABLE_MEAN:
		mean_add(real, dst, src);
		break;
	case TABLE_KEY:
	case TABLE_FIRST:
		break;
	}
}

/* Appends a copy of src's row r to dst. */
static void copy_row(struct table *dst, const struct table *src, size_t r)
{
	if (!table_add_row(dst))
		return;
	for (int c = 0; c < src->ncols; c++) {
		const struct table_cell *x = table_at(src, r, c);
		if (x->null)
			continue;
		switch (src->cols[c].kind) {
		case TABLE_TEXT:
			table_text(dst, c, x->v.s);
			break;
		case TABLE_INT:
			table_int(dst, c, x->v.i);
			break;
		case TABLE_REAL:
			table_real(dst, c, x->v.d);
			break;
		}
		struct table_cell *y = last_cell(dst, c);
		if (y) { /* a merged mean stays mergeable */
			y->n = x->n;
			y->sum = x->sum;
		}
	}
}

void table_merge(struct table *dst, const struct table *src)
{
	if (src->oom)
		dst->oom = true;
	bool keyed = has_key(dst);
	for (size_t r = 0; r < src->nrows; r++) {
		const struct table_cell *row = table_at(src, r, 0);
		size_t found = dst->nrows;
		for (size_t d = 0; keyed && d < dst->nrows; d++) {
			if (same_key(dst, table_at(dst, d, 0), row)) {
				found = d;
				break;
			}
		}
		if (found == dst->nrows) {
			copy_row(dst, src, r);
			continue;
		}
		struct table_cell *drow = &dst->cells[found * (size_t)dst->ncols];
		for (int c = 0; c < dst->ncols; c++) {
			if (dst->cols[c].kind != TABLE_TEXT) {
				combine(&dst->cols[c], &drow[c], &row[c]);
				continue;
			}
			/* Text has no sum: the first non-NULL value stands. */
			if (drow[c].null && !row[c].null) {
				drow[c].v.s = strdup(row[c].v.s);
				if (drow[c].v.s)
					drow[c].null = false;
				else
					dst->oom = true;
			}
		}
	}
}

void table_free(struct table *t)
{
	for (size_t r = 0; r < t->nrows; r++)
		for (int c = 0; c < t->ncols; c++)
			if (t->cols[c].kind == TABLE_TEXT)
				free(t->cells[r * (size_t)t->ncols + (size_t)c].v.s);
	free(t->cells);
	t->cells = NULL;
	t->nrows = t->cap = 0;
}

static enum table_oid col_oid(const struct table_col *col)
{
	if (col->oid)
		return col->oid;
	switch (col->kind) {
	case TABLE_TEXT:
		return TABLE_OID_TEXT;
	case TABLE_INT:
		return TABLE_OID_INT8;
	case TABLE_REAL:
		return TABLE_OID_NUMERIC;
	}
	return TABLE_OID_TEXT;
}

void table_write_header(const struct table *t, struct wbuf *w)
{
	uint32_t m = proto_begin(w, 'T');
	proto_put_u16(w, (uint16_t)t->ncols);
	for (int i = 0; i < t->ncols; i++) {
		enum table_oid oid = col_oid(&t->cols[i]);
		proto_put_str(w, t->cols[i].name);
		proto_put_u32(w, 0); /* table */
		proto_put_u16(w, 0); /* column */
		proto_put_u32(w, (uint32_t)oid);
		int16_t size = oid == TABLE_OID_INT4 ? 4 : oid == TABLE_OID_INT8 ? 8 : -1;
		proto_put_u16(w, (uint16_t)size);
		proto_put_u32(w, 0xffffffffu); /* typmod -1 */
		proto_put_u16(w, 0);           /* text format */
	}
	proto_end(w, m);
}

const char *table_cell_str(const struct table *t, size_t row, int col, char *buf, size_t len)
{
	const struct table_cell *x = table_at(t, row, col);
	if (len == 0)
		return "";
	buf[0] = '\0';
	if (x->null)
		return buf;
	switch (t->cols[col].kind) {
	case TABLE_TEXT:
		return x->v.s;
	case TABLE_INT:
		snprintf(buf, len, "%lld", (long long)x->v.i);
		break;
	case TABLE_REAL:
		snprintf(buf, len, "%.3f", x->v.d);
		break;
	}
	return buf;
}

void table_write_rows(const struct table *t, struct wbuf *w)
{
	char buf[64];
	for (size_t r = 0; r < t->nrows; r++) {
		uint32_t m = proto_begin(w, 'D');
		proto_put_u16(w, (uint16_t)t->ncols);
		for (int c = 0; c < t->ncols; c++) {
			if (table_at(t, r, c)->null) {
				proto_put_u32(w, 0xffffffffu);
				continue;
			}
			const char *s = table_cell_str(t, r, c, buf, sizeof(buf));
			uint32_t n = (uint32_t)strlen(s);
			proto_put_u32(w, n);
			proto_put_bytes(w, s, n);
		}
		proto_end(w, m);
	}
}
