/*
 * sqlinspect.c: finds, in a client's SQL, what can reach the prepared
 * statements pgfleet keeps on a server connection (see sqlinspect.h).
 *
 * The prefilter looks only at the first word of each statement.  Every
 * statement that can reach a prepared statement, or run code that can,
 * starts with one of these words (PostgreSQL 15's gram.y):
 *   DEALLOCATE  drops one statement or all of them
 *   DISCARD     DISCARD ALL drops them all
 *   PREPARE     defines a statement under a name of its choosing
 *   EXECUTE     runs a statement by name
 *   EXPLAIN     EXPLAIN [ANALYZE] EXECUTE name (ExplainableStmt)
 *   CREATE      CREATE TABLE ... AS EXECUTE name (the only other nesting
 *               of ExecuteStmt; PrepareStmt, DeallocateStmt, DiscardStmt,
 *               DoStmt and CallStmt are never nested)
 *   DO          runs PL/pgSQL, whose dynamic SQL can do any of the above
 *   CALL        runs a procedure, the usual home of such code
 * A keyword is only ever written literally (no escapes in keywords; a
 * quoted or U&"" identifier is never a keyword).  A statement starts at the
 * text's start or after a ';', then white space and comments.  Every ';' of
 * the text is taken as a possible statement end, even one inside a string
 * or a comment: a false start costs at most a parse, and the search for the
 * next ';' goes on from the ';' itself, never from past a comment skipped
 * at a false start, so no real statement start is ever jumped over.  The
 * word must not continue as an identifier ("double", "executed"): a letter,
 * digit, '_', '$' or a byte >= 0x80 continues one in PostgreSQL's lexer.
 * The reserved prefix needs no search of its own: only PREPARE, EXECUTE and
 * DEALLOCATE can name a statement in SQL.
 *
 * A query of the hot path (SELECT, INSERT, UPDATE, BEGIN ...) costs one
 * look at its first word and a memchr for ';' (the session prefilter's
 * one pass over the text: scan_session).
 *
 * The parser's JSON tree is then read with a small scanner: a key is a
 * string followed by ':' outside any string (inside a JSON string every '"'
 * is escaped), and only the keys that matter are looked at.
 *
 * Out of reach of any look at the text: a function (called from a SELECT,
 * a trigger, a rule, a default) whose dynamic SQL deallocates or prepares
 * statements.  When it deallocates one of pgfleet's, the next Bind gets
 * 26000 and the connection's statements are forgotten (server.c): the
 * client sees that one error, its retry prepares afresh.  When it reads a
 * name from pg_prepared_statements and prepares it again with the same
 * parameter types, pgfleet cannot tell: whoever next binds that statement
 * on that connection runs the replacement.  Writing such a function takes
 * the same database role (pools are per user), and a schema it may create
 * functions in.
 */
#include "sqlinspect.h"
#include "runtime.h"

#include <pg_query.h>
#include <stdint.h>
#include <string.h>

static THREAD_LOCAL unsigned long parses;

unsigned long sqlinspect_parses(void)
{
	return parses;
}


/* Does the keyword kw (lower case, its first letter already matched) start
 * at p, not followed by a byte that would continue an identifier?  Only 'x'
 * and 'X' give 'x' under | 0x20, so the comparison is exact for letters.
 * With eight bytes to read, a keyword of up to seven letters is one
 * comparison (kw and n are constants: the compiler folds the mask). */
static inline bool keyword_at(const char *p, const char *end, const char *kw, size_t n)
{
	if ((size_t)(end - p) < n)
		return false;
#if defined(__BYTE_ORDER__) && __BYTE_ORDER__ == __ORDER_LITTLE_ENDIAN__
	if (n < 8 && end - p >= 8) {
		uint64_t w, k = 0;
		memcpy(&w, p, 8);
		memcpy(&k, kw, n);
		if (((w | 0x2020202020202020ull) & ((1ull << (8 * n)) - 1)) != k)
			return false;
	} else
#endif
		for (size_t i = 1; i < n; i++)
			if ((p[i] | 0x20) != kw[i])
				return false;
	if (p + n == end)
		return true;
	unsigned char after = (unsigned char)p[n];
	return !((unsigned)((after | 0x20) - 'a') <= 25u || (unsigned)(after - '0') <= 9u || after == '_' ||
		 after == '$' || after >= 0x80);
}

/* Past white space and comments (-- to the end of the line; nested slash-star
 * comments, as PostgreSQL's lexer nests them).  An unclosed comment runs to
 * the end. */
static const char *skip_blank(const char *p, const char *end)
{
	while (p < end) {
		char ch = *p;
		if (ch == ' ' || ch == '\t' || ch == '\n' || ch == '\r' || ch == '\f' || ch == '\v') {
			p++;
		} else if (ch == '-' && p + 1 < end && p[1] == '-') {
			while (p < end && *p != '\n')
				p++;
		} else if (ch == '/' && p + 1 < end && p[1] == '*') {
			unsigned depth = 1;
			p += 2;
			while (p < end && depth) {
				if (p[0] == '/' && p + 1 < end && p[1] == '*') {
					depth++;
					p += 2;
				} else if (p[0] == '*' && p + 1 < end && p[1] == '/') {
					depth--;
					p += 2;
				} else {
					p++;
				}
			}
		} else {
			break;
		}
	}
	return p;
}

/* Does a statement that starts at p (after blanks) start with one of the
 * prefilter's words? */
static bool watched_at(const char *p, const char *end)
{
	if (p >= end)
		return false;
	switch (*p | 0x20) {
	case 'c':
		return keyword_at(p, end, "call", 4) || keyword_at(p, end, "create", 6);
	case 'd':
		return keyword_at(p, end, "do", 2) || keyword_at(p, end, "deallocate", 10) ||
		       keyword_at(p, end, "discard", 7);
	case 'e':
		return keyword_at(p, end, "execute", 7) || keyword_at(p, end, "explain", 7);
	case 'p':
		return keyword_at(p, end, "prepare", 7);
	default:
		return false;
	}
}

static bool starts_watched(const char *p, const char *end)
{
	return watched_at(skip_blank(p, end), end);
}

bool sqlinspect_prefilter(const char *sql, size_t len)
{
	const char *end = sql + len;
	const char *p = sql;
	for (;;) {
		if (starts_watched(p, end))
			return true;
		const char *semi = memchr(p, ';', (size_t)(end - p));
		if (!semi)
			return false;
		p = semi + 1;
	}
}

bool sqlinspect_prefilter_one(const char *sql, size_t len)
{
	const char *end = sql + len, *p = sql;
	for (;;) {
		p = skip_blank(p, end);
		if (p < end && *p == ';') {
			p++; /* an empty statement: the grammar drops it */
			continue;
		}
		return starts_watched(p, end);
	}
}

/* ---- the session-state prefilter ------------------------------------------ */

/* Does a statement that starts at p (after blanks) start with a word that
 * can leave session state or change a setting?  CREATE (TEMP relations),
 * PREPARE, DECLARE (WITH HOLD), LISTEN, SET, RESET, and EXPLAIN (EXPLAIN
 * ANALYZE CREATE TEMP TABLE ... AS runs it). */
/* What a statement starting at p (after blanks) is to the session
 * prefilter: SESSION_WORD, one of the words above; SESSION_SELECTS, one
 * that may be a SELECT ... INTO (SELECT, WITH, a parenthesis); or 0. */
enum { SESSION_WORD = 1, SESSION_SELECTS = 2 };
static int session_at(const char *p, const char *end)
{
	if (p >= end)
		return 0;
	switch (*p | 0x20) {
	case '(':
		return SESSION_SELECTS;
	case 'c':
		return keyword_at(p, end, "create", 6);
	case 'd':
		return keyword_at(p, end, "declare", 7);
	case 'e':
		return keyword_at(p, end, "explain", 7);
	case 'l':
		return keyword_at(p, end, "listen", 6);
	case 'p':
		return keyword_at(p, end, "prepare", 7);
	case 'r':
		return keyword_at(p, end, "reset", 5);
	case 's':
		return keyword_at(p, end, "select", 6) ? SESSION_SELECTS
		       : keyword_at(p, end, "set", 3)	 ? SESSION_WORD
							 : 0;
	case 'w':
		return keyword_at(p, end, "with", 4) ? SESSION_SELECTS : 0;
	default:
		return 0;
	}
}

/* Do the n bytes before p (n > 0: at or after start) spell the lower-case
 * letters of kw, in any case? */
static inline bool word_before(const char *start, const char *p, const char *kw, size_t n)
{
	if ((size_t)(p - start) < n)
		return false;
	for (size_t i = 0; i < n; i++)
		if ((p[(ptrdiff_t)i - (ptrdiff_t)n] | 0x20) != kw[i])
			return false;
	return true;
}

static inline bool word_after(const char *p, const char *end, const char *kw, size_t n)
{
	if ((size_t)(end - p) < n)
		return false;
	for (size_t i = 0; i < n; i++)
		if ((p[i] | 0x20) != kw[i])
			return false;
	return true;
}

/* At p, a '_' or an 'm' (any case): the middle of what matters anywhere
 * in a statement?  Around a '_': set_config, pg_advisory_lock and
 * pg_try_advisory_lock (_shared too: all contain "advisory_lock"; the
 * _xact_ ones do not), pg_temp.  An 'm' in "temp" after "into" and blanks:
 * SELECT ... INTO [TEMP | TEMPORARY] name (a comment between the two is
 * not read backwards: "temp" after the end of any comment is a hit).  An
 * identifier is written with its letters (in any case), unless quoted with
 * U& escapes, which only a deliberate client writes (it then keeps what it
 * asked for). */
static __attribute__((noinline)) bool session_word_at(const char *sql, const char *p,
						    const char *end)
{
	if (*p == '_')
		return (word_before(sql, p, "set", 3) && word_after(p + 1, end, "config", 6)) ||
		       (word_before(sql, p, "advisory", 8) && word_after(p + 1, end, "lock", 4)) ||
		       (word_before(sql, p, "pg", 2) && word_after(p + 1, end, "temp", 4));
	if (!word_before(sql, p, "te", 2) || !word_after(p + 1, end, "p", 1))
		return false;
	const char *q = p - 2; /* "temp" starts here */
	if (q - sql >= 3 && q[-1] == '_' && word_before(sql, q - 1, "pg", 2))
		return true; /* SELECT ... INTO pg_temp.name */
	/* blanks before it: */
	while (q > sql && (q[-1] == ' ' || q[-1] == '\t' || q[-1] == '\n' || q[-1] == '\r' ||
			   q[-1] == '\f' || q[-1] == '\v'))
		q--;
	if (q > sql && q[-1] == '/' && q < p - 2)
		return true; /* after a comment, which may follow an INTO */
	return q < p - 2 && word_before(sql, q, "into", 4);
}

/* One pass over the text finds every byte that matters to the session
 * prefilter (and the statement starts the prepared-statement one needs):
 * ';' (a statement may start after it), '(' (a call: set_config() and the
 * advisory locks need one), '_' (their names, pg_temp) and 'm' in either
 * case ("temp" after INTO, looked at once a statement so far may be a
 * SELECT ... INTO: its start comes before its INTO).  With SSE2, sixteen
 * bytes per step; pgbench -S's text costs four steps and two looks. */
#if defined(__SSE2__)
#include <emmintrin.h>
static inline uint32_t marks_at(const char *p)
{
	__m128i v = _mm_loadu_si128((const __m128i *)(const void *)p);
	__m128i semi = _mm_cmpeq_epi8(v, _mm_set1_epi8(';'));
	__m128i paren = _mm_cmpeq_epi8(v, _mm_set1_epi8('('));
	__m128i under = _mm_cmpeq_epi8(v, _mm_set1_epi8('_'));
	__m128i em = _mm_cmpeq_epi8(_mm_or_si128(v, _mm_set1_epi8(0x20)), _mm_set1_epi8('m'));
	return (uint32_t)_mm_movemask_epi8(
		_mm_or_si128(_mm_or_si128(semi, paren), _mm_or_si128(under, em)));
}
#else
static inline uint32_t marks_at(const char *p)
{
	uint32_t bits = 0;
	for (unsigned i = 0; i < 16; i++) {
		char ch = p[i];
		if (ch == ';' || ch == '(' || ch == '_' || (ch | 0x20) == 'm')
			bits |= 1u << i;
	}
	return bits;
}
#endif

/* The marks of the bytes [base, min(base + 16, len)) of sql (base < len),
 * bit i for the byte base + i, reading no byte outside the text. */
static inline uint32_t marks_from(const char *sql, size_t len, size_t base)
{
	if (len - base >= 16)
		return marks_at(sql + base);
	size_t rem = len - base;
	if (len >= 16)
		return marks_at(sql + len - 16) >> (16 - rem); /* the last 16 bytes */
	char tail[16] = {0};
	memcpy(tail, sql + base, rem);
	return marks_at(tail);
}

static inline int start_kind(const char *w, const char *end, bool prepared_too)
{
	int at = session_at(w, end);
	if (at != SESSION_WORD && prepared_too && watched_at(w, end))
		return SESSION_WORD;
	return at;
}

static inline __attribute__((always_inline)) bool scan_session(const char *sql, size_t len,
								 bool prepared_too)
{
	const char *end = sql + len;
	int at = start_kind(skip_blank(sql, end), end, prepared_too);
	if (at == SESSION_WORD)
		return true;
	bool selects = at == SESSION_SELECTS, paren = false, under = false;
	for (size_t base = 0; base < len; base += 16) {
		for (uint32_t bits = marks_from(sql, len, base); bits; bits &= bits - 1) {
			const char *p = sql + base + (unsigned)__builtin_ctz(bits);
			switch (*p) {
			case ';':
				if (p + 1 == end)
					break; /* the text's last byte: no statement after it */
				at = start_kind(skip_blank(p + 1, end), end, prepared_too);
				if (at == SESSION_WORD)
					return true;
				selects = selects || at == SESSION_SELECTS;
				break;
			case '(':
				paren = true;
				break;
			case '_':
				under = true;
				break;
			default: /* 'm' or 'M' */
				if (selects && session_word_at(sql, p, end))
					return true;
				break;
			}
		}
	}
	/* A call, and a name with a '_': are they set_config, an advisory lock? */
	if (paren && under)
		for (const char *p = sql; (p = memchr(p, '_', (size_t)(end - p))) != NULL; p++)
			if (session_word_at(sql, p, end))
				return true;
	return false;
}

bool sqlinspect_prefilter_session(const char *sql, size_t len)
{
	return scan_session(sql, len, false);
}

bool sqlinspect_prefilter_both(const char *sql, size_t len)
{
	return scan_session(sql, len, true);
}

/* ---- reading libpg_query's JSON tree -------------------------------------- */

enum node {
	N_OTHER,
	N_DEALLOCATE,
	N_DISCARD,
	N_PREPARE,
	N_EXECUTE,
	N_DECLARE,  /* DeclareCursorStmt: "options" has CURSOR_OPT_HOLD? */
	N_FUNCCALL, /* FuncCall: "funcname" names a session-level one? */
	N_VARSET,   /* VariableSetStmt: "kind", "name", "is_local" */
};

/* VariableSetStmt kinds, as libpg_query spells them. */
enum varset_kind { VS_OTHER, VS_SET_VALUE, VS_RESET, VS_RESET_ALL };

/* Room for a GUC name in a SET being read (NAMEDATALEN). */
#define PARAM_NAME_BUF 64

/* PostgreSQL's CURSOR_OPT_HOLD (parsenodes.h). */
#define CURSOR_OPT_HOLD 0x20

/* An open node whose own keys matter, and how deep its object is. */
struct open_node {
	enum node kind;
	int depth;
	bool named;
	/* N_VARSET */
	bool local;
	bool role;          /* name is role or session_authorization */
	enum varset_kind vs;
	char vs_name[PARAM_NAME_BUF];
	/* N_FUNCCALL: the depth of its "funcname" list while in it, else 0;
	 * set_config: it calls set_config(); args: in its "args" list;
	 * name_seen: its first argument's string was looked at */
	int funcname_depth;
	bool set_config, args, name_seen;
};

#define OPEN_MAX 32

struct walk {
	const char *p, *end;
	struct sql_look *look;
	unsigned stmts;
	struct open_node open[OPEN_MAX];
	int n_open;
	bool broken; /* not what the scanner expects: be conservative */
	/* The statement being read: a temporary relation it creates, whether
	 * that goes at commit, and whether it creates relations at all (only
	 * then does a pg_temp schema name create a temporary one). */
	bool temp, temp_drop, creates;
};

static int hexval(char c)
{
	if (c >= '0' && c <= '9')
		return c - '0';
	if (c >= 'a' && c <= 'f')
		return c - 'a' + 10;
	if (c >= 'A' && c <= 'F')
		return c - 'A' + 10;
	return -1;
}

/* Reads a JSON string at w->p (on its opening quote) into buf (truncated to
 * cap - 1 bytes; *full false then).  \uXXXX escapes of ASCII decode; any
 * other one becomes '?', which no name of interest contains. */
static void read_string(struct walk *w, char *buf, size_t cap, bool *full)
{
	size_t n = 0;
	*full = true;
	w->p++;
	while (w->p < w->end && *w->p != '"') {
		char ch = *w->p++;
		if (ch == '\\' && w->p < w->end) {
			char e = *w->p++;
			switch (e) {
			case 'n': ch = '\n'; break;
			case 't': ch = '\t'; break;
			case 'r': ch = '\r'; break;
			case 'b': ch = '\b'; break;
			case 'f': ch = '\f'; break;
			case 'u': {
				int v = 0;
				for (int i = 0; i < 4; i++) {
					int h = w->p < w->end ? hexval(*w->p) : -1;
					if (h < 0) {
						w->broken = true;
						return;
					}
					v = v * 16 + h;
					w->p++;
				}
				ch = v > 0 && v < 0x80 ? (char)v : '?';
				break;
			}
			default: ch = e; break; /* \" \\ \/ */
			}
		}
		if (n + 1 < cap)
			buf[n++] = ch;
		else
			*full = false;
	}
	if (w->p >= w->end) {
		w->broken = true;
		return;
	}
	w->p++; /* the closing quote */
	if (cap)
		buf[n] = 0;
}

static void skip_space(struct walk *w)
{
	while (w->p < w->end && (*w->p == ' ' || *w->p == '\n' || *w->p == '\t' || *w->p == '\r'))
		w->p++;
}

static enum node node_kind(const char *key)
{
	if (strcmp(key, "DeclareCursorStmt") == 0)
		return N_DECLARE;
	if (strcmp(key, "FuncCall") == 0)
		return N_FUNCCALL;
	if (strcmp(key, "VariableSetStmt") == 0)
		return N_VARSET;
	if (strcmp(key, "DeallocateStmt") == 0)
		return N_DEALLOCATE;
	if (strcmp(key, "DiscardStmt") == 0)
		return N_DISCARD;
	if (strcmp(key, "PrepareStmt") == 0)
		return N_PREPARE;
	if (strcmp(key, "ExecuteStmt") == 0)
		return N_EXECUTE;
	return N_OTHER;
}

/* A JSON value that is not a string, object or array: a number or true. */
struct scalar {
	bool is_true;
	long long number;
};

/* Does the name of a called function (one element of "funcname") make a
 * session-level change? */
static unsigned function_flags(const char *name)
{
	static const char *const advisory[] = {
		"pg_advisory_lock",
		"pg_advisory_lock_shared",
		"pg_try_advisory_lock",
		"pg_try_advisory_lock_shared",
	};
	for (size_t i = 0; i < sizeof(advisory) / sizeof(advisory[0]); i++)
		if (strcmp(name, advisory[i]) == 0)
			return SQLI_ADVISORY;
	if (strcmp(name, "set_config") == 0)
		return SQLI_SET;
	return 0;
}

/* Remembers a custom parameter name (one with a '.'), lower-case. */
static void note_set_name(struct sql_look *look, const char *name)
{
	if (!strchr(name, '.'))
		return;
	size_t n = strlen(name);
	if (look->set_names_len + n + 1 > sizeof(look->set_names))
		return;
	for (size_t i = 0; i <= n; i++) {
		char ch = name[i];
		look->set_names[look->set_names_len + i] =
			ch >= 'A' && ch <= 'Z' ? (char)(ch - 'A' + 'a') : ch;
	}
	look->set_names_len = (uint16_t)(look->set_names_len + n + 1);
}

/* Remembers a name RESET (or SET TO DEFAULT), lower-case. */
static void note_reset_name(struct sql_look *look, const char *name)
{
	size_t n = strlen(name);
	look->flags |= SQLI_RESET;
	if (!n || name[0] == '\x01' || look->reset_names_len + n + 1 > sizeof(look->reset_names)) {
		look->reset_overflow = true;
		return;
	}
	for (size_t i = 0; i <= n; i++) {
		char ch = name[i];
		look->reset_names[look->reset_names_len + i] =
			ch >= 'A' && ch <= 'Z' ? (char)(ch - 'A' + 'a') : ch;
	}
	look->reset_names_len = (uint16_t)(look->reset_names_len + n + 1);
}

/* A key of an open node of interest, with its string value (val) or its
 * scalar (sc) when it has one. */
static void node_key(struct walk *w, struct open_node *o, const char *key, const char *val,
		     bool full, const struct scalar *sc)
{
	struct sql_look *look = w->look;
	switch (o->kind) {
	case N_DECLARE:
		if (strcmp(key, "options") == 0 && sc && (sc->number & CURSOR_OPT_HOLD))
			look->flags |= SQLI_HOLD;
		return;
	case N_FUNCCALL:
		o->funcname_depth = strcmp(key, "funcname") == 0 ? o->depth : 0;
		o->args = strcmp(key, "args") == 0;
		return;
	case N_VARSET:
		if (strcmp(key, "kind") == 0 && val)
			o->vs = strcmp(val, "VAR_SET_VALUE") == 0     ? VS_SET_VALUE
				: strcmp(val, "VAR_RESET") == 0	      ? VS_RESET
				: strcmp(val, "VAR_SET_DEFAULT") == 0 ? VS_RESET
				: strcmp(val, "VAR_RESET_ALL") == 0   ? VS_RESET_ALL
								      : VS_OTHER;
		else if (strcmp(key, "name") == 0 && val) {
			if (full && strlen(val) < sizeof(o->vs_name))
				strcpy(o->vs_name, val);
			else
				o->vs_name[0] = '\x01'; /* too long for a GUC name */
			o->role = strcmp(val, "role") == 0 ||
				  strcmp(val, "session_authorization") == 0;
			note_set_name(look, val);
		}
		else if (strcmp(key, "is_local") == 0)
			o->local = sc && sc->is_true;
		if (strcmp(key, "name") == 0 && val && strncmp(val, "TRANSACTION", 11) == 0)
			o->local = true; /* the transaction's own: nothing stays */
		return;
	default:
		break;
	}
	if (o->kind == N_DISCARD && strcmp(key, "target") == 0 && val &&
	    strcmp(val, "DISCARD_ALL") == 0) {
		look->flags |= SQLI_DROPS_ALL;
		return;
	}
	if (strcmp(key, "name") != 0 || o->kind == N_DISCARD)
		return;
	if (!val) {
		w->broken = true;
		return;
	}
	o->named = true;
	if (sqlinspect_reserved(val))
		look->flags |= SQLI_RESERVED;
	if (o->kind == N_DEALLOCATE) {
		if (full && look->name[0] == 0 && !(look->flags & SQLI_DEALLOC)) {
			strcpy(look->name, val);
			look->flags |= SQLI_DEALLOC;
		} else {
			look->flags |= SQLI_UNSURE; /* a second one, or too long to match */
		}
	}
}

/* An open node of interest closes: a DEALLOCATE without a name is ALL; a
 * SET is read whole. */
static void node_close(struct walk *w, const struct open_node *o)
{
	if (o->kind == N_DEALLOCATE && !o->named)
		w->look->flags |= SQLI_DROPS_ALL;
	if (o->kind == N_VARSET && !o->local)
		w->look->flags |= o->vs == VS_SET_VALUE && o->role ? SQLI_ROLE
				  : o->role		      ? 0
							      : SQLI_SET;
	if (o->kind == N_VARSET && !o->local && !o->role) {
		if (o->vs == VS_RESET_ALL)
			w->look->flags |= SQLI_RESET_ALL;
		else if (o->vs == VS_RESET)
			note_reset_name(w->look, o->vs_name);
	}
}

/* A statement ends (the next starts, or the text ends). */
static void statement_end(struct walk *w)
{
	if (w->temp && !w->temp_drop)
		w->look->flags |= SQLI_TEMP;
	w->temp = w->temp_drop = w->creates = false;
}

/* Keys that matter at any depth of a statement: where a relation is made
 * temporary, and whether it is dropped at commit. */
static void any_key(struct walk *w, const char *key, const char *val)
{
	if (strcmp(key, "relpersistence") == 0) {
		if (strcmp(val, "t") == 0)
			w->temp = true;
	} else if (strcmp(key, "schemaname") == 0) {
		if (w->creates && strncmp(val, "pg_temp", 7) == 0)
			w->temp = true;
	} else if (strcmp(key, "oncommit") == 0 || strcmp(key, "onCommit") == 0) {
		if (strcmp(val, "ONCOMMIT_DROP") == 0)
			w->temp_drop = true;
	}
}

/* A scalar at w->p: a number (digits, a sign) or true/false/null. */
static bool read_scalar(struct walk *w, struct scalar *sc)
{
	sc->is_true = false;
	sc->number = 0;
	if (w->p >= w->end)
		return false;
	if (*w->p == 't') {
		sc->is_true = true;
		return true;
	}
	bool neg = *w->p == '-';
	const char *q = w->p + neg;
	if (q >= w->end || *q < '0' || *q > '9')
		return *w->p == 'f' || *w->p == 'n';
	while (q < w->end && *q >= '0' && *q <= '9') {
		if (sc->number < (1LL << 48))
			sc->number = sc->number * 10 + (*q - '0');
		q++;
	}
	if (neg)
		sc->number = -sc->number;
	return true;
}

static void walk_json(struct walk *w)
{
	int depth = 0;
	char key[64], val[sizeof(w->look->name)];
	while (w->p < w->end && !w->broken) {
		char ch = *w->p;
		if (ch == '{' || ch == '[') {
			depth++;
			w->p++;
			continue;
		}
		if (ch == '}' || ch == ']') {
			while (w->n_open && w->open[w->n_open - 1].depth >= depth)
				node_close(w, &w->open[--w->n_open]);
			depth--;
			w->p++;
			continue;
		}
		if (ch != '"') {
			w->p++; /* numbers, true/false/null, ',', ':' */
			continue;
		}
		bool full;
		read_string(w, key, sizeof(key), &full);
		skip_space(w);
		if (w->broken || w->p >= w->end || *w->p != ':')
			continue; /* a string value of no interest */
		w->p++;
		skip_space(w);
		/* Root object 1, "stmts" array 2, each RawStmt 3, its "stmt" 4. */
		if (depth == 3 && strcmp(key, "stmt") == 0) {
			if (w->stmts)
				statement_end(w);
			w->stmts++;
		}
		if (strcmp(key, "intoClause") == 0)
			w->creates = true; /* SELECT ... INTO creates a table */
		else if (depth == 4)
			w->creates = strcmp(key, "CreateStmt") == 0 ||
				     strcmp(key, "CreateTableAsStmt") == 0 ||
				     strcmp(key, "ViewStmt") == 0 || strcmp(key, "CreateSeqStmt") == 0;
		if (strcmp(key, "DoStmt") == 0 || strcmp(key, "CallStmt") == 0) {
			w->look->flags |= SQLI_UNSURE;
			continue;
		}
		if (strcmp(key, "PrepareStmt") == 0)
			w->look->flags |= SQLI_PREPARE;
		else if (strcmp(key, "ListenStmt") == 0)
			w->look->flags |= SQLI_LISTEN;
		enum node k = node_kind(key);
		if (k != N_OTHER) {
			if (w->p >= w->end || *w->p != '{' || w->n_open == OPEN_MAX) {
				w->broken = true;
				continue;
			}
			w->open[w->n_open++] = (struct open_node){.kind = k, .depth = depth + 1};
			continue;
		}
		struct open_node *o = w->n_open ? &w->open[w->n_open - 1] : NULL;
		bool is_str = w->p < w->end && *w->p == '"';
		if (is_str) {
			read_string(w, val, sizeof(val), &full);
			if (w->broken)
				continue;
			any_key(w, key, val);
			/* An element of the innermost call's "funcname" list:
			 * {"String": {"sval": ...}}, two levels in. */
			if (o && o->kind == N_FUNCCALL && o->funcname_depth &&
			    depth == o->funcname_depth + 3 && strcmp(key, "sval") == 0 && full) {
				unsigned f = function_flags(val);
				w->look->flags |= f;
				if (f & SQLI_SET)
					o->set_config = true;
			}
			/* set_config('name', ...): the first argument, a string
			 * constant {"A_Const": {"sval": {"sval": ...}}}. */
			if (o && o->kind == N_FUNCCALL && o->set_config && o->args && !o->name_seen &&
			    depth == o->depth + 4 && strcmp(key, "sval") == 0) {
				o->name_seen = true;
				if (full)
					note_set_name(w->look, val);
			}
		}
		if (!o || o->depth != depth)
			continue;
		if (is_str) {
			node_key(w, o, key, val, full, NULL);
		} else {
			struct scalar sc;
			node_key(w, o, key, NULL, true, read_scalar(w, &sc) ? &sc : NULL);
		}
	}
	if (depth != 0)
		w->broken = true;
	else if (w->stmts)
		statement_end(w);
}

unsigned sqlinspect_look_hit(const char *sql, size_t len, size_t max_parse, struct sql_look *look)
{
	look->flags = 0;
	look->name[0] = 0;
	look->set_names_len = 0;
	look->reset_names_len = 0;
	look->reset_overflow = false;
	look->stmts = 0;
	if (len > max_parse) {
		/* The parser and its JSON cost about 1 us a byte on dense SQL,
		 * on the event loop; past the limit the text runs unread and
		 * nothing on the connection is trusted afterwards, which is
		 * safe (statements are prepared afresh) if not free. */
		look->flags = SQLI_UNSURE;
		return look->flags;
	}
	parses++;
	PgQueryParseResult r = pg_query_parse(sql);
	if (r.error || !r.parse_tree) {
		/* The server may know syntax this parser does not (a newer
		 * version): it runs unseen, so nothing on the connection is
		 * trusted afterwards. */
		pg_query_free_parse_result(r);
		look->flags = SQLI_UNSURE;
		return look->flags;
	}
	struct walk w = {.p = r.parse_tree, .end = r.parse_tree + strlen(r.parse_tree), .look = look};
	walk_json(&w);
	pg_query_free_parse_result(r);
	if (w.broken)
		look->flags |= SQLI_UNSURE;
	look->stmts = (uint16_t)(w.stmts > 0xffff ? 0xffff : w.stmts);
	if ((look->flags & SQLI_DEALLOC) && w.stmts != 1) {
		/* A DEALLOCATE among other statements: pgfleet cannot answer
		 * it alone, nor know whether it ran. */
		look->flags &= ~SQLI_DEALLOC;
		look->flags |= SQLI_UNSURE;
	}
	return look->flags;
}
