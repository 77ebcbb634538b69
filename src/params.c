/*
 * params.c: interned sets of session settings and the hidden SET/RESET that
 * brings a server connection in line with the client it is about to serve.
 */
#include "params.h"

#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "intern.h"

const char *param_result_text(enum param_result r)
{
	switch (r) {
	case PARAM_OK:
		return "ok";
	case PARAM_NOMEM:
		return "out of memory";
	case PARAM_BAD_NAME:
		return "invalid parameter name";
	case PARAM_TOO_MANY:
		return "too many parameters";
	case PARAM_TOO_LONG:
		return "parameter value too long";
	}
	return "?";
}

static bool is_alpha(char c)
{
	return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || c == '_' ||
	       (unsigned char)c >= 0x80;
}

bool param_name_valid(const char *name)
{
	size_t n = 0;
	bool part_start = true;
	for (const char *p = name; *p; p++, n++) {
		char c = *p;
		if (n >= PARAM_NAME_MAX)
			return false;
		if ((unsigned char)c >= 0x80)
			return false; /* written unquoted-safe only: ASCII */
		if (part_start) {
			if (!is_alpha(c))
				return false;
			part_start = false;
		} else if (c == '.') {
			part_start = true;
		} else if (!is_alpha(c) && !(c >= '0' && c <= '9') && c != '$') {
			return false;
		}
	}
	return n > 0 && !part_start;
}

const char *param_get(const struct param_set *ps, const char *name)
{
	if (!ps)
		return NULL;
	uint32_t pos = 0;
	const char *n, *v;
	while (param_next(ps, &pos, &n, &v))
		if (strcasecmp(n, name) == 0)
			return v;
	return NULL;
}

bool param_next(const struct param_set *ps, uint32_t *pos, const char **name, const char **value)
{
	if (!ps || *pos >= ps->size)
		return false;
	*name = ps->data + *pos;
	*pos += (uint32_t)strlen(*name) + 1;
	*value = ps->data + *pos;
	*pos += (uint32_t)strlen(*value) + 1;
	return true;
}

bool param_value_same(const char *name, const char *a, const char *b)
{
	static const char *const folded[] = {"client_encoding", "datestyle", "timezone",
					     "intervalstyle", "standard_conforming_strings"};
	for (size_t i = 0; i < sizeof(folded) / sizeof(folded[0]); i++)
		if (strcasecmp(name, folded[i]) == 0)
			return strcasecmp(a, b) == 0;
	return strcmp(a, b) == 0;
}

/* ---- interned sets -------------------------------------------------------- */

/* Each event loop its own table: clients never move between loops. */
static _Thread_local struct intern_table sets;
static _Thread_local size_t sets_bytes;

static size_t set_len(const struct param_set *ps)
{
	return sizeof(*ps) + ps->size;
}

static const struct param_set *intern(const struct param_set *ps)
{
	size_t len = set_len(ps);
	uint32_t h = INTERN_HASH_SEED;
	const uint8_t *b = (const uint8_t *)ps;
	for (size_t i = 0; i < len; i++)
		h = intern_hash_byte(h, b[i]);
	unsigned before = sets.count;
	const struct param_set *r = intern_get(&sets, ps, len, h);
	if (r && sets.count != before)
		sets_bytes += len;
	return r;
}

const struct param_set *param_set_empty(void)
{
	static const struct param_set empty;
	return intern(&empty);
}

const struct param_set *param_set_ref(const struct param_set *ps)
{
	return ps ? intern(ps) : NULL; /* finds itself: one more reference */
}

void param_set_release(const struct param_set *ps)
{
	if (!ps)
		return;
	unsigned before = sets.count;
	size_t len = set_len(ps);
	intern_put(&sets, ps);
	if (sets.count != before)
		sets_bytes -= len;
}

void param_set_assign(const struct param_set **dst, const struct param_set *src)
{
	if (*dst == src)
		return;
	const struct param_set *n = param_set_ref(src);
	param_set_release(*dst);
	*dst = n;
}

uint64_t param_set_id(const struct param_set *ps)
{
	return intern_id(ps);
}

unsigned param_set_count(void)
{
	return sets.count;
}

size_t param_set_bytes(void)
{
	return sets_bytes;
}

/* Copies ps into a new set with `name` (lower-case) set to value (NULL:
 * removed) and interns it.  Sets are small: a stack buffer nearly always. */
static enum param_result rebuild(const struct param_set **pp, const char *lname, const char *value)
{
	const struct param_set *old = *pp;
	size_t nlen = strlen(lname), vlen = value ? strlen(value) : 0;
	size_t cap = sizeof(struct param_set) + (old ? old->size : 0) + nlen + vlen + 2;
	_Alignas(struct param_set) char stack[2048];
	struct param_set *ns = cap <= sizeof(stack) ? (struct param_set *)(void *)stack : malloc(cap);
	if (!ns)
		return PARAM_NOMEM;
	ns->count = 0;
	ns->size = 0;
	bool done = false;
	uint32_t pos = 0;
	const char *n, *v;
	for (;;) {
		bool more = param_next(old, &pos, &n, &v);
		int cmp = more ? strcmp(n, lname) : 1;
		if (cmp >= 0 && !done) {
			done = true;
			if (value) {
				memcpy(ns->data + ns->size, lname, nlen + 1);
				ns->size += (uint32_t)nlen + 1;
				memcpy(ns->data + ns->size, value, vlen + 1);
				ns->size += (uint32_t)vlen + 1;
				ns->count++;
			}
			if (cmp == 0)
				continue; /* the old entry of this name is replaced */
		}
		if (!more)
			break;
		size_t a = strlen(n) + 1, bl = strlen(v) + 1;
		memcpy(ns->data + ns->size, n, a);
		ns->size += (uint32_t)a;
		memcpy(ns->data + ns->size, v, bl);
		ns->size += (uint32_t)bl;
		ns->count++;
	}
	const struct param_set *r = intern(ns);
	if ((char *)ns != stack)
		free(ns);
	if (!r)
		return PARAM_NOMEM;
	param_set_release(old);
	*pp = r;
	return PARAM_OK;
}

static bool lower_name(const char *name, char out[PARAM_NAME_MAX + 1])
{
	if (!param_name_valid(name))
		return false;
	size_t i = 0;
	for (; name[i]; i++)
		out[i] = (name[i] >= 'A' && name[i] <= 'Z') ? (char)(name[i] - 'A' + 'a') : name[i];
	out[i] = 0;
	return true;
}

enum param_result param_set_store(const struct param_set **pp, const char *name,
				  const char *value, const struct param_limits *lim)
{
	char lname[PARAM_NAME_MAX + 1];
	if (!lower_name(name, lname))
		return PARAM_BAD_NAME;
	size_t vlen = strlen(value);
	if (vlen > PARAM_HARD_VALUE_MAX || (lim && vlen > lim->max_value))
		return PARAM_TOO_LONG;
	const char *old = param_get(*pp, lname);
	if (old && strcmp(old, value) == 0 && *pp)
		return PARAM_OK; /* the same value: nothing changes */
	uint32_t count = (*pp ? (*pp)->count : 0) + (old ? 0 : 1);
	if (count > PARAM_HARD_COUNT_MAX || (lim && count > lim->max_count))
		return PARAM_TOO_MANY;
	return rebuild(pp, lname, value);
}

enum param_result param_set_remove(const struct param_set **pp, const char *name)
{
	char lname[PARAM_NAME_MAX + 1];
	if (!lower_name(name, lname))
		return PARAM_BAD_NAME;
	if (!param_get(*pp, lname))
		return PARAM_OK;
	return rebuild(pp, lname, NULL);
}

enum param_result param_set_reset(const struct param_set **current,
				  const struct param_set *startup, const char *name)
{
	const char *v = param_get(startup, name);
	return v ? param_set_store(current, name, v, NULL) : param_set_remove(current, name);
}

/* ---- startup options ------------------------------------------------------ */

static bool is_space(char c);

/* The next word of options into w (room for all of it), backslash escapes
 * undone; NULL at the end. */
static const char *next_word(const char *p, char *w)
{
	while (is_space(*p))
		p++;
	if (!*p)
		return NULL;
	size_t n = 0;
	while (*p && !is_space(*p)) {
		if (*p == '\\') {
			p++;
			if (!*p)
				break;
		}
		w[n++] = *p++;
	}
	w[n] = 0;
	return p;
}

static void copy_bad(char *bad, size_t badlen, const char *word)
{
	if (badlen) {
		size_t n = strlen(word);
		if (n >= badlen)
			n = badlen - 1;
		memcpy(bad, word, n);
		bad[n] = 0;
	}
}

/* "name=value" of a -c or --: fn with '-' in the name as '_'. */
static enum param_options_result one_setting(char *nv, bool (*fn)(void *, const char *,
								  const char *),
					     void *arg)
{
	char *eq = strchr(nv, '=');
	if (!eq || eq == nv)
		return PARAM_OPTIONS_NO_VALUE;
	*eq = 0;
	for (char *q = nv; *q; q++)
		if (*q == '-')
			*q = '_';
	bool ok = fn(arg, nv, eq + 1);
	*eq = '=';
	return ok ? PARAM_OPTIONS_OK : PARAM_OPTIONS_STOPPED;
}

enum param_options_result param_options_parse(const char *options,
					      bool (*fn)(void *arg, const char *name,
							 const char *value),
					      void *arg, char *bad, size_t badlen)
{
	size_t len = strlen(options);
	char *w = malloc(len + 1), *w2 = malloc(len + 1);
	enum param_options_result r = PARAM_OPTIONS_OK;
	if (!w || !w2) {
		free(w);
		free(w2);
		return PARAM_OPTIONS_NOMEM;
	}
	if (badlen)
		bad[0] = 0;
	const char *p = options;
	while (r == PARAM_OPTIONS_OK && (p = next_word(p, w)) != NULL) {
		if (w[0] == '-' && w[1] == 'c') {
			char *nv = w + 2;
			if (!*nv) { /* "-c name=value": the value is the next word */
				const char *q = next_word(p, w2);
				if (!q) {
					copy_bad(bad, badlen, w);
					r = PARAM_OPTIONS_NO_VALUE;
					break;
				}
				p = q;
				nv = w2;
			}
			r = one_setting(nv, fn, arg);
			if (r == PARAM_OPTIONS_NO_VALUE)
				copy_bad(bad, badlen, nv);
		} else if (w[0] == '-' && w[1] == '-' && w[2]) {
			r = one_setting(w + 2, fn, arg);
			if (r == PARAM_OPTIONS_NO_VALUE)
				copy_bad(bad, badlen, w);
		} else {
			copy_bad(bad, badlen, w);
			r = PARAM_OPTIONS_UNSUPPORTED;
		}
	}
	free(w);
	free(w2);
	return r;
}

/* ---- the hidden SET ------------------------------------------------------- */

struct out {
	char *buf;
	size_t len, need; /* need: the bytes the whole text takes, so far */
};

static void put(struct out *o, const char *s, size_t n)
{
	if (o->need < o->len && o->len - o->need > n)
		memcpy(o->buf + o->need, s, n);
	o->need += n;
}

static void put_str(struct out *o, const char *s)
{
	put(o, s, strlen(s));
}

/* '...' with quotes doubled; with a backslash, E'...' with backslashes
 * doubled too, so the literal means the same whatever
 * standard_conforming_strings is.  n bytes of s. */
static void put_literal(struct out *o, const char *s, size_t n)
{
	if (memchr(s, '\\', n))
		put(o, "E", 1);
	put(o, "'", 1);
	for (size_t i = 0; i < n; i++) {
		if (s[i] == '\'' || s[i] == '\\')
			put(o, s + i, 1);
		put(o, s + i, 1);
	}
	put(o, "'", 1);
}

/* "part"."part": names are validated identifiers, quoted so that a keyword
 * ("user.x") is still a name. */
static void put_name(struct out *o, const char *name)
{
	put(o, "\"", 1);
	for (const char *p = name; *p; p++) {
		if (*p == '.')
			put(o, "\".\"", 3);
		else
			put(o, p, 1);
	}
	put(o, "\"", 1);
}

/* Parameters whose SET quotes each literal as an identifier (GUC_LIST_QUOTE;
 * pg_dump's list); fold: unquoted elements are identifiers PostgreSQL
 * downcases when it reads the value. */
static bool list_quoted(const char *name, bool *fold)
{
	static const struct {
		const char *name;
		bool fold;
	} lists[] = {
	    {"search_path", true},
	    {"temp_tablespaces", true},
	    {"local_preload_libraries", false},
	    {"session_preload_libraries", false},
	    {"shared_preload_libraries", false},
	    {"unix_socket_directories", false},
	};
	for (size_t i = 0; i < sizeof(lists) / sizeof(lists[0]); i++)
		if (strcmp(name, lists[i].name) == 0) {
			*fold = lists[i].fold;
			return true;
		}
	return false;
}

static bool is_space(char c)
{
	return c == ' ' || c == '\t' || c == '\n' || c == '\r' || c == '\f' || c == '\v';
}

/* One literal per element of a list value, split as PostgreSQL's
 * SplitGUCList does; false (nothing written) when the value is not a
 * well-formed list. */
static bool put_list(struct out *o, const char *v, bool fold)
{
	size_t mark = o->need;
	const char *p = v;
	bool first = true;
	while (is_space(*p))
		p++;
	if (!*p) {
		put(o, "''", 2);
		return true;
	}
	char elem[1024];
	for (;;) {
		size_t n = 0;
		if (*p == '"') {
			for (p++;; p++) {
				if (!*p)
					goto bad;
				if (*p == '"') {
					if (p[1] != '"')
						break;
					p++;
				}
				if (n >= sizeof(elem))
					goto bad;
				elem[n++] = *p;
			}
			p++;
		} else {
			while (*p && *p != ',' && !is_space(*p)) {
				if (n >= sizeof(elem))
					goto bad;
				char c = *p++;
				elem[n++] = fold && c >= 'A' && c <= 'Z' ? (char)(c - 'A' + 'a') : c;
			}
			if (!n)
				goto bad;
		}
		if (!first)
			put(o, ", ", 2);
		first = false;
		put_literal(o, elem, n);
		while (is_space(*p))
			p++;
		if (!*p)
			return true;
		if (*p != ',')
			goto bad;
		p++;
		while (is_space(*p))
			p++;
	}
bad:
	o->need = mark; /* the bytes past mark are overwritten by the caller */
	return false;
}

static void put_set(struct out *o, const char *name, const char *value)
{
	bool fold;
	put_str(o, "SET ");
	put_name(o, name);
	put_str(o, " = ");
	if (!list_quoted(name, &fold) || !put_list(o, value, fold))
		put_literal(o, value, strlen(value));
	put(o, ";", 1);
}

size_t param_set_diff_sql(const struct param_set *want, const struct param_set *have,
			  const struct param_set *defaults, char *buf, size_t len)
{
	struct out o = {buf, len, 0};
	if (len)
		buf[0] = 0;
	if (want == have)
		return 0;
	/* Both lists are sorted: one merge pass. */
	uint32_t wp = 0, hp = 0;
	const char *wn = NULL, *wv = NULL, *hn = NULL, *hv = NULL;
	bool wm = param_next(want, &wp, &wn, &wv), hm = param_next(have, &hp, &hn, &hv);
	while (wm || hm) {
		int cmp = !wm ? 1 : !hm ? -1 : strcmp(wn, hn);
		if (cmp < 0) { /* only the client has it */
			const char *d = param_get(defaults, wn);
			if (!d || !param_value_same(wn, wv, d))
				put_set(&o, wn, wv);
			wm = param_next(want, &wp, &wn, &wv);
		} else if (cmp > 0) { /* only the server has it */
			put_str(&o, "RESET ");
			put_name(&o, hn);
			put(&o, ";", 1);
			hm = param_next(have, &hp, &hn, &hv);
		} else {
			if (!param_value_same(wn, wv, hv))
				put_set(&o, wn, wv);
			wm = param_next(want, &wp, &wn, &wv);
			hm = param_next(have, &hp, &hn, &hv);
		}
	}
	if (o.need < len)
		buf[o.need] = 0;
	else if (len)
		buf[0] = 0;
	return o.need;
}

/* A name of startup that current has at the connection's default while the
 * startup value is another. */
static bool reset_candidate(const char *name, const char *startup_value,
			    const struct param_set *current, const struct param_set *defaults)
{
	const char *cur = param_get(current, name), *d = param_get(defaults, name);
	return cur && d && param_value_same(name, cur, d) &&
	       !param_value_same(name, cur, startup_value);
}

size_t param_set_restore_sql(const struct param_set *startup, const struct param_set *current,
			     const struct param_set *defaults, char *buf, size_t len)
{
	struct out o = {buf, len, 0};
	if (len)
		buf[0] = 0;
	uint32_t pos = 0;
	const char *n, *v;
	bool any = false;
	while (param_next(startup, &pos, &n, &v)) {
		if (!reset_candidate(n, v, current, defaults))
			continue;
		if (!any)
			put_str(&o, "SELECT pg_catalog.set_config(name, CASE lower(name)");
		any = true;
		put_str(&o, " WHEN ");
		put_literal(&o, n, strlen(n));
		put_str(&o, " THEN ");
		put_literal(&o, v, strlen(v));
	}
	if (!any)
		return 0;
	put_str(&o, " END, false) FROM pg_catalog.pg_settings WHERE source <> 'session' AND "
		    "lower(name) IN (");
	pos = 0;
	bool first = true;
	while (param_next(startup, &pos, &n, &v)) {
		if (!reset_candidate(n, v, current, defaults))
			continue;
		if (!first)
			put(&o, ", ", 2);
		first = false;
		put_literal(&o, n, strlen(n));
	}
	put(&o, ")", 1);
	if (o.need < len)
		buf[o.need] = 0;
	else if (len)
		buf[0] = 0;
	return o.need;
}
