/*
 * test_params.c: sets of session settings (params.c): names, interning
 * (equal sets are one object, so the hot path's check is one comparison),
 * limits, RESET to the startup value, and the hidden SET/RESET text, byte
 * for byte, in every buffer size.
 */
#include "harness.h"

#include "params.h"

#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define ARRAY_LEN(a) (sizeof(a) / sizeof((a)[0]))
#define SLACK 16

static const struct {
	const char *name;
	bool ok;
} name_cases[] = {
    {"timezone", true},
    {"TimeZone", true},
    {"search_path", true},
    {"_x9$", true},
    {"myext.some_setting", true},
    {"a.b.c", true},
    {"", false},
    {"9lives", false},
    {"time zone", false},
    {"a;b", false},
    {"a\"b", false},
    {"a'b", false},
    {".a", false},
    {"a.", false},
    {"a..b", false},
    {"a.9", false},
    {"caf\xc3\xa9", false},
    {"abcdefghijabcdefghijabcdefghijabcdefghijabcdefghijabcdefghij123", true}, /* 63 */
    {"abcdefghijabcdefghijabcdefghijabcdefghijabcdefghijabcdefghij1234", false},
};

static void test_name_valid(void)
{
	for (size_t i = 0; i < ARRAY_LEN(name_cases); i++) {
		bool ok = param_name_valid(name_cases[i].name);
		if (ok != name_cases[i].ok)
			fprintf(stderr, "  \"%s\": %d\n", name_cases[i].name, ok);
		CHECK(ok == name_cases[i].ok);
	}
}

/* A set from "name=value" strings (NULL-terminated), a reference. */
static const struct param_set *make(const char *const *kv)
{
	const struct param_set *ps = param_set_empty();
	for (; kv && *kv; kv++) {
		char name[128];
		const char *eq = strchr(*kv, '=');
		snprintf(name, sizeof name, "%.*s", (int)(eq - *kv), *kv);
		if (param_set_store(&ps, name, eq + 1, NULL) != PARAM_OK)
			abort();
	}
	return ps;
}

static void test_store_get_iterate(void)
{
	unsigned base = param_set_count();
	size_t base_bytes = param_set_bytes();
	const struct param_set *a = param_set_empty();
	CHECK(a && a->count == 0 && param_get(a, "timezone") == NULL);
	CHECK(param_set_store(&a, "TimeZone", "UTC", NULL) == PARAM_OK);
	CHECK(param_set_store(&a, "application_name", "app", NULL) == PARAM_OK);
	CHECK(param_set_store(&a, "DateStyle", "ISO, MDY", NULL) == PARAM_OK);
	CHECK(a->count == 3);
	CHECK_STR(param_get(a, "timezone"), "UTC");
	CHECK_STR(param_get(a, "TIMEZONE"), "UTC");
	CHECK_STR(param_get(a, "datestyle"), "ISO, MDY");
	/* In name order, lower-case. */
	const char *want[] = {"application_name", "app", "datestyle", "ISO, MDY", "timezone", "UTC"};
	uint32_t pos = 0;
	const char *n, *v;
	size_t k = 0;
	while (param_next(a, &pos, &n, &v)) {
		CHECK(k + 1 < ARRAY_LEN(want));
		if (k + 1 >= ARRAY_LEN(want))
			break;
		CHECK_STR(n, want[k]);
		CHECK_STR(v, want[k + 1]);
		k += 2;
	}
	CHECK(k == ARRAY_LEN(want));

	/* The same settings stored in another order: the same object. */
	const char *kv[] = {"datestyle=ISO, MDY", "TIMEZONE=UTC", "Application_Name=app", NULL};
	const struct param_set *b = make(kv);
	CHECK(b == a);
	uint64_t id = param_set_id(a);
	CHECK(param_set_store(&b, "timezone", "UTC", NULL) == PARAM_OK); /* no change */
	CHECK(b == a && param_set_id(b) == id);

	/* Replace a value, remove a name; a and b no longer meet. */
	CHECK(param_set_store(&b, "timezone", "Europe/Berlin", NULL) == PARAM_OK);
	CHECK(b != a && b->count == 3);
	CHECK_STR(param_get(b, "timezone"), "Europe/Berlin");
	CHECK_STR(param_get(a, "timezone"), "UTC"); /* a is never written */
	CHECK(param_set_remove(&b, "DATESTYLE") == PARAM_OK);
	CHECK(b->count == 2 && param_get(b, "datestyle") == NULL);
	CHECK(param_set_remove(&b, "datestyle") == PARAM_OK && b->count == 2);
	CHECK(param_set_remove(&b, "no such") == PARAM_BAD_NAME);

	/* An empty value is a value (set to ''), not an absence. */
	CHECK(param_set_store(&b, "search_path", "", NULL) == PARAM_OK);
	CHECK_STR(param_get(b, "search_path"), "");

	const struct param_set *c = param_set_ref(b);
	CHECK(c == b);
	param_set_assign(&c, a);
	CHECK(c == a);
	param_set_release(a);
	param_set_release(b);
	param_set_release(c);
	CHECK(param_set_count() == base);
	CHECK(param_set_bytes() == base_bytes);
}

static void test_limits(void)
{
	unsigned base = param_set_count();
	struct param_limits lim = {2, 8};
	const struct param_set *a = param_set_empty();
	const struct param_set *start = a;
	CHECK(param_set_store(&a, "a", "12345678", &lim) == PARAM_OK);
	CHECK(param_set_store(&a, "b", "123456789", &lim) == PARAM_TOO_LONG);
	CHECK(param_set_store(&a, "b", "x", &lim) == PARAM_OK);
	const struct param_set *two = a;
	CHECK(param_set_store(&a, "c", "x", &lim) == PARAM_TOO_MANY);
	CHECK(a == two); /* unchanged on error */
	CHECK(param_set_store(&a, "b", "y", &lim) == PARAM_OK); /* replacing: not one more */
	CHECK(param_set_store(&a, "bad name", "x", &lim) == PARAM_BAD_NAME);
	CHECK(param_set_store(&a, "x;drop", "x", NULL) == PARAM_BAD_NAME);
	(void)start;
	param_set_release(a);

	/* Many settings: beyond the stack buffer the copy is made on the heap. */
	const struct param_set *big = param_set_empty();
	char name[32], value[600];
	memset(value, 'v', sizeof value - 1);
	value[sizeof value - 1] = 0;
	for (int i = 0; i < 50; i++) {
		snprintf(name, sizeof name, "ext.p%03d", i);
		CHECK(param_set_store(&big, name, value, NULL) == PARAM_OK);
	}
	CHECK(big->count == 50);
	CHECK_STR(param_get(big, "ext.p049"), value);
	param_set_release(big);
	CHECK(param_set_count() == base);
}

/* RESET returns the startup value, or the connection's default (absent). */
static void test_reset(void)
{
	const char *s_kv[] = {"datestyle=Postgres, DMY", "search_path=app", NULL};
	const char *c_kv[] = {"datestyle=ISO, MDY", "search_path=other", "timezone=UTC", NULL};
	const struct param_set *startup = make(s_kv);
	const struct param_set *cur = make(c_kv);
	CHECK(param_set_reset(&cur, startup, "DateStyle") == PARAM_OK);
	CHECK_STR(param_get(cur, "datestyle"), "Postgres, DMY");
	CHECK(param_set_reset(&cur, startup, "timezone") == PARAM_OK);
	CHECK(param_get(cur, "timezone") == NULL);
	CHECK(param_set_reset(&cur, startup, "search_path") == PARAM_OK);
	CHECK(cur == startup); /* everything back: the startup set itself */
	param_set_release(cur);
	param_set_release(startup);
}

static const struct diff_case {
	const char *name;
	const char *want[8], *have[8], *defaults[8];
	const char *sql;
} diff_cases[] = {
    {"both empty", {0}, {0}, {0}, ""},
    {"equal",
     {"client_encoding=UTF8", "timezone=UTC", "application_name=app"},
     {"client_encoding=UTF8", "timezone=UTC", "application_name=app"},
     {0},
     ""},
    {"equal but for case",
     {"client_encoding=utf8", "datestyle=iso, mdy", "timezone=utc", "intervalstyle=Postgres",
      "standard_conforming_strings=ON"},
     {"client_encoding=UTF8", "datestyle=ISO, MDY", "timezone=UTC", "intervalstyle=postgres",
      "standard_conforming_strings=on"},
     {0},
     ""},
    {"timezone differs", {"timezone=Europe/Berlin"}, {"timezone=UTC"}, {0},
     "SET \"timezone\" = 'Europe/Berlin';"},
    {"the client's, not on the server", {"datestyle=ISO, DMY"}, {0}, {0},
     "SET \"datestyle\" = 'ISO, DMY';"},
    {"the client's, the server's default already", {"client_encoding=utf8"}, {0},
     {"client_encoding=UTF8"}, ""},
    {"the server's, not the client's: RESET", {0}, {"intervalstyle=iso_8601", "x.y=1"}, {0},
     "RESET \"intervalstyle\";RESET \"x\".\"y\";"},
    {"a default does not hide a difference", {"timezone=UTC"}, {"timezone=Asia/Tokyo"},
     {"timezone=UTC"}, "SET \"timezone\" = 'UTC';"},
    {"application_name is compared exactly", {"application_name=App"},
     {"application_name=app"}, {0}, "SET \"application_name\" = 'App';"},
    {"quotes are doubled", {"application_name=o'brien's"}, {0}, {0},
     "SET \"application_name\" = 'o''brien''s';"},
    {"a backslash makes an E'' literal", {"application_name=a\\b'c"}, {0}, {0},
     "SET \"application_name\" = E'a\\\\b''c';"},
    {"search_path: one literal per element, unquoted ones folded",
     {"search_path=\"$user\", Public,\"My \"\"S\"\"\""}, {0}, {0},
     "SET \"search_path\" = '$user', 'public', 'My \"S\"';"},
    {"search_path empty", {"search_path="}, {0}, {0}, "SET \"search_path\" = '';"},
    {"search_path malformed: one literal", {"search_path=a,,b"}, {0}, {0},
     "SET \"search_path\" = 'a,,b';"},
    {"search_path unterminated quote: one literal", {"search_path=\"a"}, {0}, {0},
     "SET \"search_path\" = '\"a';"},
    {"datestyle is a list the server does not quote", {"datestyle=SQL, DMY"}, {0}, {0},
     "SET \"datestyle\" = 'SQL, DMY';"},
    {"a mix, in name order",
     {"application_name=a", "search_path=s", "statement_timeout=5s", "timezone=UTC"},
     {"extra_float_digits=3", "search_path=s", "timezone=Asia/Tokyo"},
     {"timezone=Asia/Tokyo"},
     "SET \"application_name\" = 'a';RESET \"extra_float_digits\";"
     "SET \"statement_timeout\" = '5s';SET \"timezone\" = 'UTC';"},
};

static void test_diff_table(void)
{
	for (size_t i = 0; i < ARRAY_LEN(diff_cases); i++) {
		const struct diff_case *c = &diff_cases[i];
		const struct param_set *want = make(c->want), *have = make(c->have),
				       *def = make(c->defaults);
		char buf[1024];
		memset(buf, '#', sizeof buf);
		size_t n = param_set_diff_sql(want, have, def, buf, sizeof buf);
		if (n != strlen(c->sql))
			fprintf(stderr, "  case \"%s\": returned %zu\n", c->name, n);
		CHECK(n == strlen(c->sql));
		CHECK_STR(buf, c->sql);
		CHECK(param_set_diff_sql(want, want, def, buf, sizeof buf) == 0 && !*buf);
		param_set_release(want);
		param_set_release(have);
		param_set_release(def);
	}
}

/* Every buffer size: nothing is written past len; the whole statement or
 * "" (never half a statement), and always the full length returned. */
static void test_diff_small_buffers(void)
{
	char area[1024 + SLACK];
	for (size_t i = 0; i < ARRAY_LEN(diff_cases); i++) {
		const struct diff_case *c = &diff_cases[i];
		const struct param_set *want = make(c->want), *have = make(c->have),
				       *def = make(c->defaults);
		size_t full = strlen(c->sql);
		size_t bad = 0;
		for (size_t len = 0; len <= full + 4; len++) {
			memset(area, '#', sizeof area);
			size_t n = param_set_diff_sql(want, have, def, area, len);
			for (size_t k = len; k < sizeof area; k++)
				if (area[k] != '#')
					bad++;
			if (n != full)
				bad++;
			if (len && strcmp(area, n < len ? c->sql : "") != 0)
				bad++;
		}
		if (bad)
			fprintf(stderr, "  case \"%s\": %zu bad\n", c->name, bad);
		CHECK(bad == 0);
		param_set_release(want);
		param_set_release(have);
		param_set_release(def);
	}
}

/* A statement longer than any fixed buffer: the length says how much to
 * allocate, and the second call fills it. */
static void test_diff_large(void)
{
	const struct param_set *want = param_set_empty(), *have = param_set_empty();
	char name[32], value[300];
	memset(value, '\'', sizeof value - 1);
	value[sizeof value - 1] = 0;
	for (int i = 0; i < 20; i++) {
		snprintf(name, sizeof name, "ext.p%02d", i);
		CHECK(param_set_store(&want, name, value, NULL) == PARAM_OK);
	}
	char small[1024];
	size_t n = param_set_diff_sql(want, have, NULL, small, sizeof small);
	CHECK(n > sizeof small && !*small);
	char *big = malloc(n + 1);
	CHECK(big && param_set_diff_sql(want, have, NULL, big, n + 1) == n);
	if (big) {
		CHECK(strlen(big) == n && big[n - 1] == ';');
		size_t sets = 0;
		for (const char *p = big; (p = strstr(p, "SET ")) != NULL; p++)
			sets++;
		CHECK(sets == 20);
	}
	free(big);
	param_set_release(want);
	param_set_release(have);
}

/* The question after a setting went back to its default (a RESET?). */
static void test_restore_sql(void)
{
	const char *st_kv[] = {"datestyle=SQL, DMY", "intervalstyle=iso_8601", "timezone=UTC",
			       "application_name=o'b", NULL};
	const char *cur_kv[] = {"datestyle=iso, mdy", "intervalstyle=iso_8601", "timezone=UTC",
				"application_name=", NULL};
	const char *def_kv[] = {"datestyle=ISO, MDY", "intervalstyle=postgres", "timezone=UTC",
				"application_name=", NULL};
	const struct param_set *st = make(st_kv), *cur = make(cur_kv), *def = make(def_kv);
	char buf[1024];
	size_t n = param_set_restore_sql(st, cur, def, buf, sizeof buf);
	const char *want =
	    "SELECT pg_catalog.set_config(name, CASE lower(name) WHEN 'application_name' THEN "
	    "'o''b' WHEN 'datestyle' THEN 'SQL, DMY' END, false) FROM pg_catalog.pg_settings "
	    "WHERE source <> 'session' AND lower(name) IN ('application_name', 'datestyle')";
	CHECK(n == strlen(want));
	CHECK_STR(buf, want);
	char small[20];
	CHECK(param_set_restore_sql(st, cur, def, small, sizeof small) == n && !*small);
	/* Nothing back at the default: nothing to ask. */
	CHECK(param_set_restore_sql(st, st, def, buf, sizeof buf) == 0 && !*buf);
	CHECK(param_set_restore_sql(def, cur, def, buf, sizeof buf) == 0);
	param_set_release(st);
	param_set_release(cur);
	param_set_release(def);
}

static const struct {
	const char *options;
	enum param_options_result r;
	const char *got; /* "name=value;" each, or the bad word */
} options_cases[] = {
    {"", PARAM_OPTIONS_OK, ""},
    {"   ", PARAM_OPTIONS_OK, ""},
    {"-c intervalstyle=postgres_verbose", PARAM_OPTIONS_OK, "intervalstyle=postgres_verbose;"},
    {"-cgeqo=off  --lock-timeout=2s\t-c search_path=a,b", PARAM_OPTIONS_OK,
     "geqo=off;lock_timeout=2s;search_path=a,b;"},
    {"-c application_name=a\\ b\\\\c", PARAM_OPTIONS_OK, "application_name=a b\\c;"},
    {"-c x=", PARAM_OPTIONS_OK, "x=;"},
    {"-c a=1 -B 100", PARAM_OPTIONS_UNSUPPORTED, "-B"},
    {"word", PARAM_OPTIONS_UNSUPPORTED, "word"},
    {"-c", PARAM_OPTIONS_NO_VALUE, "-c"},
    {"-c name", PARAM_OPTIONS_NO_VALUE, "name"},
    {"--name", PARAM_OPTIONS_NO_VALUE, "--name"},
    {"-c =v", PARAM_OPTIONS_NO_VALUE, "=v"},
    {"-c a=1 -c stop=1 -c b=2", PARAM_OPTIONS_STOPPED, "a=1;"},
};

static bool collect(void *arg, const char *name, const char *value)
{
	if (strcmp(name, "stop") == 0)
		return false;
	char *out = arg;
	size_t n = strlen(out);
	snprintf(out + n, 256 - n, "%s=%s;", name, value);
	return true;
}

static void test_options_parse(void)
{
	for (size_t i = 0; i < ARRAY_LEN(options_cases); i++) {
		char got[256] = "", bad[16];
		enum param_options_result r =
		    param_options_parse(options_cases[i].options, collect, got, bad, sizeof bad);
		const char *what = r == PARAM_OPTIONS_OK || r == PARAM_OPTIONS_STOPPED ? got : bad;
		if (r != options_cases[i].r || strcmp(what, options_cases[i].got) != 0)
			fprintf(stderr, "  \"%s\": %d \"%s\"\n", options_cases[i].options, (int)r,
				what);
		CHECK(r == options_cases[i].r);
		CHECK_STR(what, options_cases[i].got);
	}
}

static void test_value_same(void)
{
	CHECK(param_value_same("TimeZone", "utc", "UTC"));
	CHECK(param_value_same("client_encoding", "utf8", "UTF8"));
	CHECK(!param_value_same("application_name", "App", "app"));
	CHECK(!param_value_same("search_path", "A", "a"));
	CHECK(param_value_same("search_path", "a", "a"));
}

int main(void)
{
	RUN(test_name_valid);
	RUN(test_store_get_iterate);
	RUN(test_limits);
	RUN(test_reset);
	RUN(test_diff_table);
	RUN(test_diff_small_buffers);
	RUN(test_diff_large);
	RUN(test_value_same);
	RUN(test_restore_sql);
	RUN(test_options_parse);
	return harness_finish();
}
