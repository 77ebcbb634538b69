/*
 * params.c: the tracked startup parameters and the SET that brings a server
 * connection in line with the client it is about to serve.
 */
#include "params.h"

#include <stdint.h>
#include <stdio.h>
#include <string.h>
#include <strings.h>

#include "intern.h"
#include "proto.h"

static const char *const names[PARAM_COUNT] = {
	[PARAM_CLIENT_ENCODING] = "client_encoding",
	[PARAM_DATESTYLE] = "DateStyle",
	[PARAM_TIMEZONE] = "TimeZone",
	[PARAM_INTERVALSTYLE] = "IntervalStyle",
	[PARAM_STANDARD_CONFORMING_STRINGS] = "standard_conforming_strings",
	[PARAM_APPLICATION_NAME] = "application_name",
};

int param_lookup(const char *name)
{
	for (int i = 0; i < PARAM_COUNT; i++)
		if (strcasecmp(name, names[i]) == 0)
			return i;
	return -1;
}

const char *param_name(int id)
{
	return names[id];
}

void param_store(struct param_set *ps, int id, const char *value)
{
	size_t n = strnlen(value, PARAM_VALUE_MAX - 1);
	memcpy(ps->value[id], value, n);
	memset(ps->value[id] + n, 0, PARAM_VALUE_MAX - n);
}

/* ---- interned sets -------------------------------------------------------- */

/* Each event loop its own table: clients never move between loops. */
static _Thread_local struct intern_table sets;

static const struct param_set *intern(const struct param_set *ps)
{
	uint32_t h = INTERN_HASH_SEED; /* over the values, up to each NUL */
	for (int i = 0; i < PARAM_COUNT; i++) {
		for (const char *p = ps->value[i]; *p; p++)
			h = intern_hash_byte(h, (uint8_t)*p);
		h = intern_hash_byte(h, 0xffu);
	}
	return intern_get(&sets, ps, sizeof(*ps), h);
}

const struct param_set *param_shared_empty(void)
{
	static const struct param_set empty; /* all zero: every value "" */
	return intern(&empty);
}

bool param_shared_store(const struct param_set **pp, int id, const char *value)
{
	struct param_set tmp;
	if (*pp)
		memcpy(&tmp, *pp, sizeof(tmp));
	else
		memset(&tmp, 0, sizeof(tmp));
	param_store(&tmp, id, value);
	if (*pp && memcmp(&tmp, *pp, sizeof(tmp)) == 0)
		return true; /* the same value: nothing changes */
	const struct param_set *n = intern(&tmp);
	if (!n)
		return false;
	param_shared_release(*pp);
	*pp = n;
	return true;
}

uint64_t param_shared_id(const struct param_set *ps)
{
	return intern_id(ps);
}

void param_shared_release(const struct param_set *ps)
{
	intern_put(&sets, ps);
}

unsigned param_shared_count(void)
{
	return sets.count;
}

/* PostgreSQL folds case for these values (encoding names, styles, zone
 * names), so "utf8" and "UTF8" need no SET; application_name is verbatim. */
static bool same_value(int id, const char *a, const char *b)
{
	return id == PARAM_APPLICATION_NAME ? strcmp(a, b) == 0 : strcasecmp(a, b) == 0;
}

bool param_diff_sql(const struct param_set *want, const struct param_set *have, char *buf,
		    size_t len)
{
	size_t pos = 0;
	bool any = false;
	if (!len)
		return false;
	buf[0] = 0;
	if (memcmp(want->value, have->value, sizeof(want->value)) == 0)
		return false;
	for (int i = 0; i < PARAM_COUNT; i++) {
		const char *w = want->value[i];
		if (!*w || same_value(i, w, have->value[i]))
			continue;
		size_t start = pos;
		int n = snprintf(buf + pos, len - pos, "SET %s = ", names[i]);
		bool fits = n >= 0 && (size_t)n < len - pos;
		if (fits) {
			pos += (size_t)n;
			fits = proto_quote_literal(buf, len - 1, &pos, w); /* room for ';' */
		}
		if (!fits) {
			buf[start] = 0; /* never a half statement */
			return any;
		}
		buf[pos++] = ';';
		buf[pos] = 0;
		any = true;
	}
	return any;
}
