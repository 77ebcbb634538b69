/*
 * sqlinspect.h: what a client's SQL text can do to the protocol-level
 * prepared statements pgfleet keeps on a server connection.
 *
 * Two steps.  A prefilter, run on every simple Query and every Parse, looks
 * at the first word of each statement for the few that can drop, define or
 * run a prepared statement or run dynamic SQL; almost every query has none
 * of them and costs a look at its first word and a memchr for ';'.  Only on a hit does PostgreSQL's own parser (libpg_query)
 * read the text, so comments, dollar quotes, quoted identifiers, U&""
 * escapes and multi-statement strings follow the server's lexer rules.
 */
#ifndef PGFLEET_SQLINSPECT_H
#define PGFLEET_SQLINSPECT_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

/* Server-side names of pgfleet's statements start with this; no client may
 * PREPARE, EXECUTE or DEALLOCATE such a name, nor Bind/Describe/Close one it
 * did not Parse itself. */
#define SQLINSPECT_RESERVED_PREFIX "pgf_"

/* What a text does, as flags. */
#define SQLI_RESERVED 0x1u  /* PREPARE/EXECUTE/DEALLOCATE of a reserved name */
#define SQLI_DROPS_ALL 0x2u /* DISCARD ALL or DEALLOCATE ALL somewhere */
#define SQLI_UNSURE 0x4u    /* may change statements unseen: DO, CALL, a DEALLOCATE
			     * among other statements, text the parser refuses */
#define SQLI_DEALLOC 0x8u   /* the whole text is one DEALLOCATE <name>: name set */
#define SQLI_STMT_FLAGS 0xfu /* the four above: prepared statements */

/* Session state that stays on the server connection after the statement,
 * where, in transaction and statement pooling, the client's next
 * transaction is not (client.c refuses or notes it): */
#define SQLI_TEMP 0x10u     /* creates a temporary relation that outlives the
			     * transaction: TEMP/TEMPORARY/pg_temp.x, CREATE TABLE,
			     * VIEW, SEQUENCE, TABLE AS, SELECT INTO; not ON COMMIT DROP */
#define SQLI_PREPARE 0x20u  /* PREPARE by SQL */
#define SQLI_HOLD 0x40u     /* DECLARE ... WITH HOLD */
#define SQLI_LISTEN 0x80u   /* LISTEN */
#define SQLI_ADVISORY 0x100u /* pg_[try_]advisory_lock[_shared](): a session-level lock */
#define SQLI_ROLE 0x200u    /* SET [SESSION] ROLE / SET SESSION AUTHORIZATION, not LOCAL */
#define SQLI_SESSION_FLAGS 0x3f0u
/* A session-level setting change: SET / SET SESSION / RESET / RESET ALL
 * (not SET LOCAL, not of role or session authorization, which are
 * SQLI_ROLE) or a set_config() call. */
#define SQLI_SET 0x400u
/* Among those: RESET name / SET name TO DEFAULT (the names in reset_names),
 * RESET ALL.  Set with SQLI_SET only. */
#define SQLI_RESET 0x800u
#define SQLI_RESET_ALL 0x1000u

/* What a look watches for (sqlinspect_look_watch). */
#define SQLI_WATCH_STATEMENTS 0x1u /* SQLI_STMT_FLAGS */
#define SQLI_WATCH_SESSION 0x2u    /* SQLI_SESSION_FLAGS, SQLI_SET, SQLI_RESET(_ALL) */

struct sql_look {
	unsigned flags;
	char name[128]; /* SQLI_DEALLOC: the name, folded as PostgreSQL folds it */
	/* SQLI_SET: the custom (dotted) parameter names the text SETs, RESETs
	 * or passes to set_config() as a constant, lower-case, each with its
	 * NUL, set_names_len bytes; what does not fit is left out (PostgreSQL
	 * lists built-in parameters, never custom ones: these must be named). */
	char set_names[192];
	uint16_t set_names_len;
	/* SQLI_RESET: the names reset (lower-case, each with its NUL),
	 * reset_names_len bytes; reset_overflow: some did not fit. */
	char reset_names[128];
	uint16_t reset_names_len;
	bool reset_overflow;
	uint16_t stmts; /* statements in the text, when parsed */
};

/* Can the text do anything of the above?  False means certainly not.
 * sql[len] must be a NUL; one before it only shortens what the parser reads
 * (PostgreSQL refuses a message with bytes after its text's NUL). */
bool sqlinspect_prefilter(const char *sql, size_t len);
/* The prefilter for a text the server runs only if it holds one statement:
 * a Parse (PostgreSQL refuses a Parse of several statements, and nothing of
 * it runs).  Only the first statement after empty ones can run, so only its
 * first word is looked at: no search for ';'. */
bool sqlinspect_prefilter_one(const char *sql, size_t len);
/* The prefilter for session state (SQLI_WATCH_SESSION), over the whole
 * text: a statement's first word CREATE, PREPARE, DECLARE, LISTEN, SET,
 * RESET or EXPLAIN, or, anywhere, the names set_config, *advisory_lock*,
 * pg_temp, or INTO TEMP.  False means certainly none of the above; a hit
 * costs a parse.  sql[len] must be a NUL. */
bool sqlinspect_prefilter_session(const char *sql, size_t len);
/* sqlinspect_prefilter || sqlinspect_prefilter_session, in one walk. */
bool sqlinspect_prefilter_both(const char *sql, size_t len);
/* The parser's part of sqlinspect_look, for a text the prefilter let
 * through: every flag above (the caller masks what it did not ask for). */
unsigned sqlinspect_look_hit(const char *sql, size_t len, size_t max_parse,
			     struct sql_look *look);
/* Looks at a NUL-terminated text of len bytes: the prefilter, then, on a
 * hit, the parser; a text longer than max_parse (max_inspected_query_size)
 * is not parsed but taken as SQLI_UNSURE.  Returns look->flags (0: nothing
 * to do; look->name is then untouched).  Inline: every Query and Parse of
 * the hot path comes here, and nearly all of them leave at once. */
static inline unsigned sqlinspect_look(const char *sql, size_t len, size_t max_parse,
				       struct sql_look *look)
{
	if (!sqlinspect_prefilter(sql, len)) {
		look->flags = 0;
		return 0;
	}
	return look->flags = sqlinspect_look_hit(sql, len, max_parse, look) & SQLI_STMT_FLAGS;
}
/* Does a statement name start with the reserved prefix?  Byte by byte (a
 * name may be shorter than the prefix), inline: every Bind, Describe and
 * Close of a name the client did not prepare passes here. */
static inline bool sqlinspect_reserved(const char *name)
{
	const char *prefix = SQLINSPECT_RESERVED_PREFIX;
	for (int i = 0; prefix[i]; i++)
		if (name[i] != prefix[i])
			return false;
	return true;
}
/* Times the parser ran in this thread (tests, benchmarks). */
unsigned long sqlinspect_parses(void);

/* sqlinspect_look for a Parse's text (sqlinspect_prefilter_one). */
static inline unsigned sqlinspect_look_one(const char *sql, size_t len, size_t max_parse,
					   struct sql_look *look)
{
	if (!sqlinspect_prefilter_one(sql, len)) {
		look->flags = 0;
		return 0;
	}
	return look->flags = sqlinspect_look_hit(sql, len, max_parse, look) & SQLI_STMT_FLAGS;
}

/* The look of a Query (one = false) or a Parse (one = true) for what
 * `watch` asks: one parse at most, whichever prefilter hits.  A text longer
 * than max_parse is SQLI_UNSURE for statements and unread for session
 * state (it runs as it is).  Returns look->flags, masked to `watch`. */
static inline unsigned sqlinspect_look_watch(const char *sql, size_t len, size_t max_parse,
					     unsigned watch, bool one, struct sql_look *look)
{
	unsigned mask = ((watch & SQLI_WATCH_STATEMENTS) ? SQLI_STMT_FLAGS : 0) |
			((watch & SQLI_WATCH_SESSION)
				 ? SQLI_SESSION_FLAGS | SQLI_SET | SQLI_RESET | SQLI_RESET_ALL
				 : 0);
	bool hit;
	if (!(watch & SQLI_WATCH_SESSION))
		hit = one ? sqlinspect_prefilter_one(sql, len) : sqlinspect_prefilter(sql, len);
	else if (!(watch & SQLI_WATCH_STATEMENTS))
		hit = sqlinspect_prefilter_session(sql, len);
	else /* a Parse's text too: each of its statements is looked at */
		hit = sqlinspect_prefilter_both(sql, len);
	if (!hit) {
		look->flags = 0;
		return 0;
	}
	return look->flags = sqlinspect_look_hit(sql, len, max_parse, look) & mask;
}

#endif
