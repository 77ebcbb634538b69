/*
 * admin_merge.c: one SHOW answer out of every worker's (workers = N).
 *
 * Each part is a whole answer: RowDescription, DataRows, CommandComplete,
 * or an ErrorResponse.  A keyed merge adds up counts column by column, by
 * the column's name: settings and states are taken from the first part,
 * maxima stay maxima and per-transaction averages are averaged; the rest
 * (counts, totals, per-second rates) are summed.
 *
 * Must not: trust a part to be well formed beyond what it checks (a short
 * part ends the walk over it).
 */
#include "admin_merge.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "proto.h"

enum col_rule { R_FIRST, R_SUM, R_MAX, R_MEAN };

#define MERGE_MAX_COLS 64

struct cell {
	char *s; /* NULL: SQL NULL */
	double acc;
	int n;        /* parts that added to acc (R_MEAN: non-zero ones) */
	int decimals; /* as the first value was written */
};

struct mrow {
	struct cell cells[MERGE_MAX_COLS];
};

struct msg {
	uint8_t type;
	const uint8_t *body;
	uint32_t len;
};

/* The next message of a part at *pos (false: no whole one left). */
static bool next_msg(const struct wbuf *w, uint32_t *pos, struct msg *m)
{
	if (*pos + 5 > w->len)
		return false;
	uint32_t len = proto_get_u32(w->data + *pos + 1);
	if (len < 4 || *pos + 1 + len > w->len)
		return false;
	m->type = w->data[*pos];
	m->body = w->data + *pos + 5;
	m->len = len - 4;
	*pos += 1 + len;
	return true;
}

static enum col_rule rule_of(const char *name, bool numeric, const char *row_name)
{
	if (!numeric)
		return R_FIRST;
	static const char *const first[] = {
	    "port",   "pool_size", "min_pool_size", "reserve_pool", "max_connections",
	    "paused", "disabled",  "lag_s",         "size",         NULL};
	for (int i = 0; first[i]; i++)
		if (strcmp(name, first[i]) == 0)
			return R_FIRST;
	if (strncmp(name, "maxwait", 7) == 0)
		return R_MAX;
	if (strncmp(name, "avg_", 4) == 0 && (strstr(name, "_time") || strstr(name, "_us")))
		return R_MEAN;
	/* SHOW LISTS: the configuration's objects exist in every worker. */
	if (row_name && strcmp(name, "items") == 0) {
		static const char *const objects[] = {"databases", "users",     "pools",
		                                      "dns_names", "dns_zones", NULL};
		for (int i = 0; objects[i]; i++)
			if (strcmp(row_name, objects[i]) == 0)
				return R_MAX;
	}
	return R_SUM;
}

/* Cells of a DataRow (false: malformed or too wide). */
static bool parse_row(const struct msg *m, char **vals, int *ncols)
{
	if (m->len < 2)
		return false;
	int n = (int)proto_get_u16(m->body);
	if (n > MERGE_MAX_COLS)
		return false;
	uint32_t pos = 2;
	for (int i = 0; i < n; i++) {
		uint32_t len = pos + 4 <= m->len ? proto_get_u32(m->body + pos) : 0;
		pos += 4;
		if (pos > m->len || (len != 0xffffffffu && pos + len > m->len)) {
			while (i--)
				free(vals[i]);
			return false;
		}
		vals[i] = len == 0xffffffffu ? NULL : strndup((const char *)m->body + pos, len);
		if (len != 0xffffffffu)
			pos += len;
	}
	*ncols = n;
	return true;
}

static int decimals_of(const char *s)
{
	const char *dot = s ? strchr(s, '.') : NULL;
	return dot ? (int)strlen(dot + 1) : 0;
}

static void put_row(struct wbuf *dst, const struct mrow *r, int ncols, const enum col_rule *rules)
{
	uint32_t m = proto_begin(dst, 'D');
	proto_put_u16(dst, (uint16_t)ncols);
	for (int i = 0; i < ncols; i++) {
		const struct cell *c = &r->cells[i];
		char buf[64];
		const char *s = c->s;
		if (s && rules[i] != R_FIRST) {
			double v = rules[i] == R_MEAN ? (c->n ? c->acc / c->n : 0) : c->acc;
			if (c->decimals)
				snprintf(buf, sizeof(buf), "%.*f", c->decimals, v);
			else
				snprintf(buf, sizeof(buf), "%.0f", floor(v + 0.5));
			s = buf;
		}
		if (!s) {
			proto_put_u32(dst, 0xffffffffu);
			continue;
		}
		uint32_t len = (uint32_t)strlen(s);
		proto_put_u32(dst, len);
		proto_put_bytes(dst, s, len);
	}
	proto_end(dst, m);
}

static void copy_msg(struct wbuf *dst, const struct msg *m)
{
	uint32_t start = proto_begin(dst, (char)m->type);
	proto_put_bytes(dst, m->body, m->len);
	proto_end(dst, start);
}

/* Column names and whether each is a number, from a RowDescription. */
static int describe(const struct msg *m, char names[][64], bool *numeric)
{
	if (m->len < 2)
		return 0;
	int n = (int)proto_get_u16(m->body);
	if (n > MERGE_MAX_COLS)
		return 0;
	uint32_t pos = 2;
	for (int i = 0; i < n; i++) {
		const uint8_t *end = memchr(m->body + pos, 0, m->len - pos);
		if (!end || (uint32_t)(end - m->body) + 19 > m->len)
			return 0;
		snprintf(names[i], 64, "%s", (const char *)m->body + pos);
		pos = (uint32_t)(end - m->body) + 1;
		uint32_t type = proto_get_u32(m->body + pos + 6);
		numeric[i] = type == 23 || type == 20 || type == 1700;
		pos += 18;
	}
	return n;
}

static bool has_error(const struct wbuf *w)
{
	uint32_t pos = 0;
	struct msg m;
	while (next_msg(w, &pos, &m))
		if (m.type == 'E')
			return true;
	return false;
}

void admin_merge(struct wbuf *dst, const struct wbuf *parts, int n, enum admin_merge_kind kind,
                 int nkeys)
{
	if (kind == MERGE_FIRST || has_error(&parts[0])) {
		wbuf_put(dst, parts[0].data, parts[0].len);
		return;
	}
	struct msg m, rowdesc = {0}, complete = {0};
	uint32_t pos = 0;
	while (next_msg(&parts[0], &pos, &m)) {
		if (m.type == 'T')
			rowdesc = m;
		else if (m.type == 'C')
			complete = m;
	}
	if (!rowdesc.type || !complete.type) {
		wbuf_put(dst, parts[0].data, parts[0].len);
		return;
	}
	copy_msg(dst, &rowdesc);
	if (kind == MERGE_CONCAT) {
		for (int p = 0; p < n; p++) {
			pos = 0;
			while (next_msg(&parts[p], &pos, &m))
				if (m.type == 'D')
					copy_msg(dst, &m);
		}
		copy_msg(dst, &complete);
		return;
	}

	char names[MERGE_MAX_COLS][64];
	bool numeric[MERGE_MAX_COLS];
	int ncols = describe(&rowdesc, names, numeric);
	struct mrow *rows = NULL;
	enum col_rule(*rules)[MERGE_MAX_COLS] = NULL;
	int nrows = 0, cap = 0;
	for (int p = 0; p < n; p++) {
		pos = 0;
		while (next_msg(&parts[p], &pos, &m)) {
			char *vals[MERGE_MAX_COLS];
			int nv = 0;
			if (m.type != 'D' || !parse_row(&m, vals, &nv))
				continue;
			if (nv != ncols || nkeys > nv) {
				for (int i = 0; i < nv; i++)
					free(vals[i]);
				continue;
			}
			int r;
			for (r = 0; r < nrows; r++) {
				bool same = true;
				for (int k = 0; k < nkeys && same; k++) {
					const char *a = rows[r].cells[k].s;
					same = (!a && !vals[k]) ||
					       (a && vals[k] && strcmp(a, vals[k]) == 0);
				}
				if (same)
					break;
			}
			bool fresh = r == nrows;
			if (fresh) {
				if (nrows == cap) {
					cap = cap ? cap * 2 : 16;
					rows = realloc(rows, sizeof(*rows) * (size_t)cap);
					rules = realloc(rules, sizeof(*rules) * (size_t)cap);
					if (!rows || !rules)
						abort(); /* a few rows of an admin answer */
				}
				memset(&rows[r], 0, sizeof(rows[r]));
				for (int i = 0; i < ncols; i++) {
					rows[r].cells[i].s = vals[i]; /* the row owns them now */
					rows[r].cells[i].decimals = decimals_of(vals[i]);
					rules[r][i] = i < nkeys ? R_FIRST
					                        : rule_of(names[i], numeric[i],
					                                  nkeys ? vals[0] : NULL);
				}
				nrows++;
			}
			for (int i = nkeys; i < ncols; i++) {
				struct cell *c = &rows[r].cells[i];
				if (vals[i] && rules[r][i] != R_FIRST) {
					double v = strtod(vals[i], NULL);
					if (rules[r][i] == R_MAX) {
						if (!c->n || v > c->acc)
							c->acc = v;
						c->n = 1;
					} else if (rules[r][i] != R_MEAN || v != 0) {
						c->acc += v;
						c->n++;
					}
				}
			}
			if (!fresh)
				for (int i = 0; i < ncols; i++)
					free(vals[i]);
		}
	}
	for (int r = 0; r < nrows; r++) {
		put_row(dst, &rows[r], ncols, rules[r]);
		for (int i = 0; i < ncols; i++)
			free(rows[r].cells[i].s);
	}
	free(rows);
	free(rules);
	copy_msg(dst, &complete);
}
