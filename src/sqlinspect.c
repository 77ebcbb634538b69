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
 * look at its first word and a memchr for ';'.
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
#include <string.h>

static THREAD_LOCAL unsigned long parses;

unsigned long sqlinspect_parses(void)
{
	return parses;
}


/* Does the keyword kw (lower case, its first letter already matched) start
 * at p, not followed by a byte that would continue an identifier?  Only 'x'
 * and 'X' give 'x' under | 0x20, so the comparison is exact for letters. */
static inline bool keyword_at(const char *p, const char *end, const char *kw, size_t n)
{
	if ((size_t)(end - p) < n)
		return false;
	for (size_t i = 1; i < n; i++)
		if ((p[i] | 0x20) != kw[i])
			return false;
	if (p + n == end)
		return true;
	unsigned char after = (unsigned char)p[n];
	return !((after >= 'a' && after <= 'z') || (after >= 'A' && after <= 'Z') ||
		 (after >= '0' && after <= '9') || after == '_' || after == '$' || after >= 0x80);
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
static bool starts_watched(const char *p, const char *end)
{
	p = skip_blank(p, end);
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

/* ---- reading libpg_query's JSON tree -------------------------------------- */

enum node {
	N_OTHER,
	N_DEALLOCATE,
	N_DISCARD,
	N_PREPARE,
	N_EXECUTE,
};

/* An open node whose own keys matter, and how deep its object is. */
struct open_node {
	enum node kind;
	int depth;
	bool named;
};

#define OPEN_MAX 32

struct walk {
	const char *p, *end;
	struct sql_look *look;
	unsigned stmts;
	struct open_node open[OPEN_MAX];
	int n_open;
	bool broken; /* not what the scanner expects: be conservative */
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

/* A key of an open node of interest, with its string value when it has one. */
static void node_key(struct walk *w, struct open_node *o, const char *key, const char *val,
		     bool full)
{
	struct sql_look *look = w->look;
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

/* An open node of interest closes: a DEALLOCATE without a name is ALL. */
static void node_close(struct walk *w, const struct open_node *o)
{
	if (o->kind == N_DEALLOCATE && !o->named)
		w->look->flags |= SQLI_DROPS_ALL;
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
		/* Root object 1, "stmts" array 2, each RawStmt 3. */
		if (depth == 3 && strcmp(key, "stmt") == 0)
			w->stmts++;
		if (strcmp(key, "DoStmt") == 0 || strcmp(key, "CallStmt") == 0) {
			w->look->flags |= SQLI_UNSURE;
			continue;
		}
		enum node k = node_kind(key);
		if (k != N_OTHER) {
			if (w->p >= w->end || *w->p != '{' || w->n_open == OPEN_MAX) {
				w->broken = true;
				continue;
			}
			w->open[w->n_open++] = (struct open_node){k, depth + 1, false};
			continue;
		}
		struct open_node *o = w->n_open ? &w->open[w->n_open - 1] : NULL;
		if (!o || o->depth != depth)
			continue;
		if (w->p < w->end && *w->p == '"') {
			read_string(w, val, sizeof(val), &full);
			if (!w->broken)
				node_key(w, o, key, val, full);
		} else {
			node_key(w, o, key, NULL, true);
		}
	}
	if (depth != 0)
		w->broken = true;
}

unsigned sqlinspect_look_hit(const char *sql, size_t len, size_t max_parse, struct sql_look *look)
{
	look->flags = 0;
	look->name[0] = 0;
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
	if ((look->flags & SQLI_DEALLOC) && w.stmts != 1) {
		/* A DEALLOCATE among other statements: pgfleet cannot answer
		 * it alone, nor know whether it ran. */
		look->flags &= ~SQLI_DEALLOC;
		look->flags |= SQLI_UNSURE;
	}
	return look->flags;
}
