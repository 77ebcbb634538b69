/*
 * sqlroute.h: where a statement may run, for target_session_attrs = auto.
 *
 * A read may run on a standby; anything else needs the primary.  The
 * classification is PostgreSQL's own parser's (libpg_query), never a guess
 * from keywords: a text the parser refuses, several statements in one text,
 * and every statement not proven read-only go to the primary.  Answers are
 * cached by the text's hash (bounded: route_cache_size entries per
 * worker), so a repeated text costs a lookup, not a parse.
 *
 * Layer 0: no I/O, no configuration read (the caller passes the limits).
 */
#ifndef PGFLEET_SQLROUTE_H
#define PGFLEET_SQLROUTE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

enum sqlroute_class {
	SQLROUTE_PRIMARY = 0, /* may write, or not provably a read: the primary */
	SQLROUTE_READ,        /* one read-only statement: a standby may run it */
	SQLROUTE_BEGIN_READ,  /* BEGIN/START TRANSACTION READ ONLY: opens a read transaction */
	SQLROUTE_SET_ROUTE,   /* SET/RESET/SHOW pgfleet.route: pgfleet's own setting, never sent */
};

/* The value SET pgfleet.route names (SQLROUTE_SET_ROUTE). */
enum sqlroute_pref {
	SQLROUTE_PREF_AUTO = 0, /* RESET, SET ... TO DEFAULT, 'auto': the parser decides */
	SQLROUTE_PREF_PRIMARY,
	SQLROUTE_PREF_STANDBY,
	SQLROUTE_PREF_INVALID, /* any other value: refused (22023) */
};

struct sqlroute_answer {
	uint8_t cls;    /* enum sqlroute_class */
	uint8_t pref;   /* SQLROUTE_SET_ROUTE: enum sqlroute_pref */
	bool hinted;    /* a leading pgfleet:primary / pgfleet:standby comment decided */
	bool local;     /* SQLROUTE_SET_ROUTE: SET LOCAL (refused: pgfleet.route is per session) */
	bool reset;     /* SQLROUTE_SET_ROUTE: RESET (the command tag is RESET) */
	bool show;      /* SQLROUTE_SET_ROUTE: SHOW (answered with the session's value) */
};

/*
 * The class of the text sql[0..len) (sql[len] is a NUL).  A leading comment
 * `/ * pgfleet:primary * /` or `/ * pgfleet:standby * /` (spaces inside the
 * comment allowed, case-insensitive; `-- pgfleet:standby` too; the first
 * hint among the comments before the first token counts) decides without
 * the parser, whatever the text's length: PRIMARY or READ, hinted = true.
 * Otherwise texts longer than max_len, empty ones and ones with a NUL
 * inside are not parsed: SQLROUTE_PRIMARY.  The rules (a read, BEGIN READ
 * ONLY, SET pgfleet.route) are in docs/routing.md.
 * Must not: be given a text whose sql[len] is not a NUL.
 */
void sqlroute_classify(const char *sql, size_t len, size_t max_len, struct sqlroute_answer *out);

/* The same, through this thread's cache of up to `entries` answers (0: no
 * cache, and a cache left from a non-zero setting is freed; at most 2^20).
 * Collisions are resolved by comparing the whole text.  A hit allocates
 * nothing; a miss stores a copy of the text (texts over max_len are never
 * stored).  A change of `entries` empties the cache. */
void sqlroute_classify_cached(const char *sql, size_t len, size_t max_len, unsigned entries,
			      struct sqlroute_answer *out);

/* Frees this thread's cache (a worker's exit). */
void sqlroute_cache_free(void);

/* Is name[0..len) on the safe list (a function a read may call, bare or
 * qualified with pg_catalog)?  For the unit test and the docs. */
bool sqlroute_function_safe(const char *name, size_t len);

/* Is the safe list sorted (its binary search's premise)?  The unit test's. */
bool sqlroute_safe_list_ok(void);

/* Parses done and cache hits in this thread, for the unit test and the bench
 * (the "parser never called with auto off" check). */
uint64_t sqlroute_parses(void);
uint64_t sqlroute_cache_hits(void);

#endif
