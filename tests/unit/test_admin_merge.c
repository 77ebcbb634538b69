/*
 * test_admin_merge.c: merging the workers' answers to one SHOW
 * (admin_merge.c).  Each case builds two workers' answers on the wire
 * (RowDescription, DataRows, CommandComplete), merges them and reads the
 * merged rows back as "a|b|c" strings.
 */
#include "harness.h"

#include "admin_merge.h"
#include "proto.h"

#include <stdlib.h>
#include <string.h>

struct tcol {
	const char *name;
	uint32_t type; /* 25 text, 23 int4, 1700 numeric */
};

static void describe(struct wbuf *w, const struct tcol *cols, int n)
{
	uint32_t m = proto_begin(w, 'T');
	proto_put_u16(w, (uint16_t)n);
	for (int i = 0; i < n; i++) {
		proto_put_str(w, cols[i].name);
		proto_put_u32(w, 0);
		proto_put_u16(w, 0);
		proto_put_u32(w, cols[i].type);
		proto_put_u16(w, 0xffff);
		proto_put_u32(w, 0xffffffffu);
		proto_put_u16(w, 0);
	}
	proto_end(w, m);
}

/* One DataRow from "a|b|c" ("~" is NULL). */
static void row(struct wbuf *w, const char *spec)
{
	char buf[256], *vals[16], *save = NULL;
	int n = 0;
	snprintf(buf, sizeof(buf), "%s", spec);
	for (char *t = strtok_r(buf, "|", &save); t && n < 16; t = strtok_r(NULL, "|", &save))
		vals[n++] = t;
	uint32_t m = proto_begin(w, 'D');
	proto_put_u16(w, (uint16_t)n);
	for (int i = 0; i < n; i++) {
		if (strcmp(vals[i], "~") == 0) {
			proto_put_u32(w, 0xffffffffu);
			continue;
		}
		proto_put_u32(w, (uint32_t)strlen(vals[i]));
		proto_put_bytes(w, vals[i], (uint32_t)strlen(vals[i]));
	}
	proto_end(w, m);
}

static void complete(struct wbuf *w)
{
	uint32_t m = proto_begin(w, 'C');
	proto_put_str(w, "SHOW");
	proto_end(w, m);
}

/* The merged rows, "a|b\n" each, and the count of T and C messages. */
static char *read_rows(const struct wbuf *w, int *t_count, int *c_count)
{
	char *out = calloc(1, 4096);
	size_t len = 0;
	uint32_t pos = 0;
	*t_count = *c_count = 0;
	while (pos + 5 <= w->len) {
		uint8_t type = w->data[pos];
		uint32_t mlen = proto_get_u32(w->data + pos + 1);
		const uint8_t *body = w->data + pos + 5;
		if (type == 'T')
			(*t_count)++;
		if (type == 'C')
			(*c_count)++;
		if (type == 'D') {
			int n = proto_get_u16(body);
			uint32_t p = 2;
			for (int i = 0; i < n; i++) {
				uint32_t l = proto_get_u32(body + p);
				p += 4;
				if (l == 0xffffffffu) {
					len += (size_t)snprintf(out + len, 4096 - len, "%s~",
					                        i ? "|" : "");
					continue;
				}
				len +=
				    (size_t)snprintf(out + len, 4096 - len, "%s%.*s", i ? "|" : "",
				                     (int)l, (const char *)body + p);
				p += l;
			}
			len += (size_t)snprintf(out + len, 4096 - len, "\n");
		}
		pos += 1 + mlen;
	}
	return out;
}

static const struct tcol pool_cols[] = {
    {"database", 25}, {"user", 25}, {"cl_active", 23}, {"maxwait", 23}, {"pool_mode", 25}};

static void test_keyed_sums_counts_by_key(void)
{
	struct wbuf parts[2] = {{0}};
	describe(&parts[0], pool_cols, 5);
	row(&parts[0], "app|app|3|1|transaction");
	row(&parts[0], "other|app|1|0|session");
	complete(&parts[0]);
	describe(&parts[1], pool_cols, 5);
	row(&parts[1], "app|app|4|5|transaction");
	row(&parts[1], "third|bob|2|0|transaction");
	complete(&parts[1]);
	struct wbuf out = {0};
	admin_merge(&out, parts, 2, MERGE_KEYED, 2);
	int t, c;
	char *rows = read_rows(&out, &t, &c);
	CHECK(t == 1 && c == 1);
	/* counts summed, maxwait the largest, rows the first worker saw first */
	CHECK_STR(rows,
	          "app|app|7|5|transaction\nother|app|1|0|session\nthird|bob|2|0|transaction\n");
	free(rows);
	wbuf_free(&out);
	wbuf_free(&parts[0]);
	wbuf_free(&parts[1]);
}

static const struct tcol replica_cols[] = {{"database", 25},   {"addr", 25},    {"port", 23},
                                           {"state", 25},      {"lag_s", 1700}, {"xacts", 23},
                                           {"avg_xact_us", 23}};

static void test_keyed_keeps_settings_and_averages_times(void)
{
	struct wbuf parts[2] = {{0}};
	describe(&parts[0], replica_cols, 7);
	row(&parts[0], "app|10.0.0.5|5432|up|0.250|10|100");
	complete(&parts[0]);
	describe(&parts[1], replica_cols, 7);
	row(&parts[1], "app|10.0.0.5|5432|down|0.500|30|300");
	complete(&parts[1]);
	struct wbuf out = {0};
	admin_merge(&out, parts, 2, MERGE_KEYED, 3);
	int t, c;
	char *rows = read_rows(&out, &t, &c);
	/* port, state and lag from the first worker; counts summed; the
	 * per-transaction average averaged */
	CHECK_STR(rows, "app|10.0.0.5|5432|up|0.250|40|200\n");
	free(rows);
	wbuf_free(&out);
	wbuf_free(&parts[0]);
	wbuf_free(&parts[1]);
}

static void test_concat_and_first(void)
{
	static const struct tcol cols[] = {{"type", 25}, {"user", 25}};
	struct wbuf parts[2] = {{0}};
	describe(&parts[0], cols, 2);
	row(&parts[0], "C|a");
	complete(&parts[0]);
	describe(&parts[1], cols, 2);
	row(&parts[1], "C|b");
	row(&parts[1], "C|~");
	complete(&parts[1]);
	struct wbuf out = {0};
	admin_merge(&out, parts, 2, MERGE_CONCAT, 0);
	int t, c;
	char *rows = read_rows(&out, &t, &c);
	CHECK(t == 1 && c == 1);
	CHECK_STR(rows, "C|a\nC|b\nC|~\n");
	free(rows);
	wbuf_reset(&out);
	admin_merge(&out, parts, 2, MERGE_FIRST, 0);
	rows = read_rows(&out, &t, &c);
	CHECK_STR(rows, "C|a\n");
	free(rows);
	/* An error from the first worker is the answer, whatever the others said. */
	struct wbuf err[2] = {{0}};
	proto_error(&err[0], "ERROR", "42601", "nope");
	describe(&err[1], cols, 2);
	row(&err[1], "C|b");
	complete(&err[1]);
	wbuf_reset(&out);
	admin_merge(&out, err, 2, MERGE_CONCAT, 0);
	CHECK(out.len == err[0].len && memcmp(out.data, err[0].data, out.len) == 0);
	wbuf_free(&out);
	for (int i = 0; i < 2; i++) {
		wbuf_free(&parts[i]);
		wbuf_free(&err[i]);
	}
}

static void test_lists_objects_not_doubled(void)
{
	static const struct tcol cols[] = {{"list", 25}, {"items", 23}};
	struct wbuf parts[2] = {{0}};
	for (int i = 0; i < 2; i++) {
		describe(&parts[i], cols, 2);
		row(&parts[i], "databases|2");
		row(&parts[i], "used_clients|5");
		complete(&parts[i]);
	}
	struct wbuf out = {0};
	admin_merge(&out, parts, 2, MERGE_KEYED, 1);
	int t, c;
	char *rows = read_rows(&out, &t, &c);
	CHECK_STR(rows, "databases|2\nused_clients|10\n");
	free(rows);
	wbuf_free(&out);
	wbuf_free(&parts[0]);
	wbuf_free(&parts[1]);
}

int main(void)
{
	RUN(test_keyed_sums_counts_by_key);
	RUN(test_keyed_keeps_settings_and_averages_times);
	RUN(test_concat_and_first);
	RUN(test_lists_objects_not_doubled);
	return harness_finish();
}
