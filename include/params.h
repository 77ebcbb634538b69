/*
 * params.h: the startup parameters pgfleet keeps per client and per server
 * connection, so a client never sees another client's settings.  All are
 * GUC_REPORT parameters: the server tells us each change with ParameterStatus.
 */
#ifndef PGFLEET_PARAMS_H
#define PGFLEET_PARAMS_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

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
	/* Each value zero-padded to the end (param_store), so two byte-equal
	 * sets need no SET at all: one memcmp, the common case. */
	char value[PARAM_COUNT][PARAM_VALUE_MAX];
};

/* The tracked parameter's id for a name (case-insensitive), or -1. */
int param_lookup(const char *name);
const char *param_name(int id);
/* Stores one value, truncated to PARAM_VALUE_MAX - 1 bytes, zero-padded. */
void param_store(struct param_set *ps, int id, const char *value);

/*
 * Clients share their sets: most of them carry the same few values, so each
 * holds a reference to one immutable, interned copy (per event loop) instead
 * of 384 bytes of its own.  A change makes a new set (copy on write).
 */
/* The interned empty set, referenced: every client starts with it. */
const struct param_set *param_shared_empty(void);
/* Replaces *pp (a reference) by the interned set with value `id` changed.
 * Out of memory: *pp is kept and false returned. */
bool param_shared_store(const struct param_set **pp, int id, const char *value);
/* An interned set's identity, unique for the life of its event loop (an
 * address can be reused once a set is freed; this never is). */
uint64_t param_shared_id(const struct param_set *ps);
/* Drops a reference. */
void param_shared_release(const struct param_set *ps);
/* Distinct sets interned right now (SHOW MEM). */
unsigned param_shared_count(void);
/* Builds "SET a = 'x';SET b = 'y';" for every value of `want` that differs from
 * `have` and is set in `want`; false when nothing differs. */
bool param_diff_sql(const struct param_set *want, const struct param_set *have, char *buf,
		    size_t len);

#endif
