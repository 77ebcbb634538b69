/*
 * params.h: the startup parameters pgfleet keeps per client and per server
 * connection, so a client never sees another client's settings.  All are
 * GUC_REPORT parameters: the server tells us each change with ParameterStatus.
 */
#ifndef PGFLEET_PARAMS_H
#define PGFLEET_PARAMS_H

#include <stdbool.h>
#include <stddef.h>

#define PARAM_VALUE_MAX 64

enum param_id {
	PARAM_CLIENT_ENCODING,
	PARAM_DATESTYLE,
	PARAM_TIMEZONE,
	PARAM_INTERVALSTYLE,
	PARAM_STANDARD_CONFORMING_STRINGS,
	PARAM_APPLICATION_NAME,
	PARAM_COUNT,
};

struct param_set {
	char value[PARAM_COUNT][PARAM_VALUE_MAX];
};

/* The tracked parameter's id for a name (case-insensitive), or -1. */
int param_lookup(const char *name);
const char *param_name(int id);
/* Builds "SET a = 'x';SET b = 'y';" for every value of `want` that differs from
 * `have` and is set in `want`; false when nothing differs. */
bool param_diff_sql(const struct param_set *want, const struct param_set *have, char *buf,
		    size_t len);

#endif
