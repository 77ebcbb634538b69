/*
 * params.c: the tracked startup parameters and the SET that brings a server
 * connection in line with the client it is about to serve.
 */
#include "params.h"

#include <stdio.h>
#include <string.h>
#include <strings.h>

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
