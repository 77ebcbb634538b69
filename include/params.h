/*
 * params.h: sets of session settings (GUCs) by name, so that a client never
 * sees another client's settings.
 *
 * A set maps GUC names (any GUC: case-insensitive, kept lower-case) to text
 * values.  Sets are interned per event loop and immutable: clients and
 * server connections hold references, and two equal sets are the same
 * object, so "nothing to SET" is one pointer comparison.  A change makes a
 * new set (copy on write): param_set_store / param_set_remove replace the
 * caller's reference.
 *
 * Each client holds its startup set (what its StartupMessage asked for,
 * `options` included; never changes) and its current set (what its session
 * should have now); each server connection holds its known set (what
 * pgfleet believes differs from that connection's defaults) and its
 * defaults (the ParameterStatus values of its login).  A name absent from
 * a set means "the connection's default".
 *
 * Must not: be shared between event loops (the tables are per thread);
 * be written through (the structure is read-only once interned).
 */
#ifndef PGFLEET_PARAMS_H
#define PGFLEET_PARAMS_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

/* The longest GUC name (PostgreSQL truncates identifiers to NAMEDATALEN-1). */
#define PARAM_NAME_MAX 63
/* Hard ceilings whatever the settings say (the settings are checked first). */
#define PARAM_HARD_COUNT_MAX 4096
#define PARAM_HARD_VALUE_MAX (1u << 20)

struct param_set {
	uint32_t count; /* entries */
	uint32_t size;  /* bytes used in data */
	/* `count` entries "name\0value\0", sorted by name (bytewise, names
	 * lower-case), nothing after them: equal sets are equal bytes. */
	char data[];
};

/* Limits for a store; NULL: the hard ceilings only. */
struct param_limits {
	unsigned max_count; /* entries in the set after the store */
	unsigned max_value; /* bytes of one value */
};

enum param_result {
	PARAM_OK,
	PARAM_NOMEM,     /* nothing changed */
	PARAM_BAD_NAME,  /* not a GUC name pgfleet can write in SET */
	PARAM_TOO_MANY,  /* over max_count */
	PARAM_TOO_LONG,  /* value over max_value */
};

/* A message for a result ("too many parameters", ...), for errors. */
const char *param_result_text(enum param_result r);

/* Is `name` a GUC name pgfleet can store and write in SET: letters, digits,
 * '_' and '$', parts joined by '.', each part starting with a letter or '_',
 * at most PARAM_NAME_MAX bytes (any case). */
bool param_name_valid(const char *name);

/* The value of `name` (any case) or NULL when the set does not have it. */
const char *param_get(const struct param_set *ps, const char *name);

/* Iteration in name order: pos starts at 0; false at the end.
 *	uint32_t pos = 0; const char *n, *v;
 *	while (param_next(ps, &pos, &n, &v)) ... */
bool param_next(const struct param_set *ps, uint32_t *pos, const char **name, const char **value);

/* Do PostgreSQL's values for this parameter compare case-insensitively
 * (encoding names, styles, zone names)?  Others are compared exactly. */
bool param_value_same(const char *name, const char *a, const char *b);

/* The interned empty set, referenced: every client starts with it.  NULL
 * when out of memory. */
const struct param_set *param_set_empty(void);
/* One more reference to an interned set (NULL is returned as NULL). */
const struct param_set *param_set_ref(const struct param_set *ps);
/* Drops a reference (NULL is ignored). */
void param_set_release(const struct param_set *ps);
/* Replaces *pp (a reference, or NULL for the empty set) by the interned set
 * with name = value.  On any error *pp is unchanged. */
enum param_result param_set_store(const struct param_set **pp, const char *name,
				  const char *value, const struct param_limits *lim);
/* Replaces *pp by the interned set without name (no change when absent). */
enum param_result param_set_remove(const struct param_set **pp, const char *name);
/* *dst (a reference) becomes another reference to src. */
void param_set_assign(const struct param_set **dst, const struct param_set *src);
/* An interned set's identity, unique for the life of its event loop (an
 * address can be reused once a set is freed; this never is). */
uint64_t param_set_id(const struct param_set *ps);
/* Distinct sets interned right now, and their bytes (SHOW MEM). */
unsigned param_set_count(void);
size_t param_set_bytes(void);

/*
 * RESET name on a direct connection returns the session's startup value:
 * *current (a reference) gets startup's value of name, or loses name when
 * startup has none.  RESET ALL: param_set_assign(current, startup).
 */
enum param_result param_set_reset(const struct param_set **current,
				  const struct param_set *startup, const char *name);

/*
 * A startup packet's `options` value, split as PostgreSQL does
 * (whitespace-separated words, a backslash takes the next character as it
 * is), its switches read as PostgreSQL's backend reads them: `-c name=value`,
 * `-cname=value` and `--name=value` call fn(arg, name, value), with '-' in
 * the name read as '_'.  Any other switch, or one without "=value", stops
 * the reading: its word is copied to bad (truncated to badlen).
 */
enum param_options_result {
	PARAM_OPTIONS_OK,
	PARAM_OPTIONS_STOPPED,     /* fn returned false */
	PARAM_OPTIONS_UNSUPPORTED, /* a switch other than -c / --name=value: bad */
	PARAM_OPTIONS_NO_VALUE,    /* -c or -- without name=value: bad */
	PARAM_OPTIONS_NOMEM,
};
enum param_options_result param_options_parse(const char *options,
					      bool (*fn)(void *arg, const char *name,
							 const char *value),
					      void *arg, char *bad, size_t badlen);

/*
 * The hidden statement that turns a server connection whose settings are
 * `have` (its known set) into one with `want` (a client's current set):
 * `SET "name" = 'value';` for each name of want whose value differs (or
 * that have lacks, unless `defaults`, the connection's login values, has
 * the same value already), `RESET "name";` for each name have has and want
 * lacks.  Values are quoted so that they mean the same whatever
 * standard_conforming_strings is; list parameters whose elements the
 * server quotes as identifiers (search_path, temp_tablespaces, ...) are
 * written as one literal per element, as pg_dump does.
 * Writes at most len bytes, NUL-terminated when len > 0, and returns the
 * length of the whole statement (0: nothing differs); when the result is
 * >= len the statement did not fit and buf holds no part of it ("").
 * defaults may be NULL.
 */
size_t param_set_diff_sql(const struct param_set *want, const struct param_set *have,
			  const struct param_set *defaults, char *buf, size_t len);

/*
 * After a ParameterStatus put a reported setting back to the connection's
 * default while the client started with another value: was it the
 * client's RESET (or SET ... TO DEFAULT, RESET ALL, DISCARD ALL), which on
 * a direct connection returns the startup value, or a SET to exactly the
 * default?  Only the server knows (pg_settings.source is 'session' after a
 * SET); this builds the hidden query that asks and, for a RESET, sets the
 * startup value (its ParameterStatus tells the rest):
 * SELECT pg_catalog.set_config(name, CASE lower(name) WHEN 'n' THEN 'v' ...
 * END, false) FROM pg_catalog.pg_settings WHERE source <> 'session' AND
 * lower(name) IN ('n', ...)
 * for each name of startup whose value in current equals its value in
 * defaults and differs from startup's.  Length and buffer as
 * param_set_diff_sql; 0: no such name.
 */
size_t param_set_restore_sql(const struct param_set *startup, const struct param_set *current,
			     const struct param_set *defaults, char *buf, size_t len);

#endif
