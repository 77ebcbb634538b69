/*
 * prepared.c: the maps behind named prepared statements in transaction
 * mode: shared statements deduplicated by (query, parameter types), each
 * client's names for them, and each server connection's LRU set of the
 * statements it has prepared.  Allocation happens once per distinct
 * statement and once per client name, never per message.
 */
#include "prepared.h"
#include "runtime.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "proto.h"

#define SHARED_BUCKETS 1024
#define CLIENT_BUCKETS 64

static THREAD_LOCAL struct pstmt *shared[SHARED_BUCKETS];
static THREAD_LOCAL uint32_t shared_count;
static THREAD_LOCAL uint64_t next_id = 1;

struct client_stmt {
	struct client_stmt *next;
	struct pstmt *ps;
	char name[];
};

struct client_stmts {
	uint32_t count;
	uint64_t bytes; /* prepared_client_cost of each statement */
	struct client_stmt *bucket[CLIENT_BUCKETS];
};

struct server_entry {
	struct pstmt *ps;
	uint64_t used; /* LRU clock */
	char name[PREPARED_NAME_LEN];
};

struct server_stmts {
	uint32_t count, cap;
	uint64_t clock;
	struct server_entry e[];
};

static void *xcalloc(size_t n, size_t size)
{
	void *p = calloc(n, size);
	if (!p)
		abort(); /* out of memory */
	return p;
}

/* FNV-1a: fast, good enough to spread statement texts over buckets. */
static uint32_t hash_bytes(const void *p, size_t n)
{
	const uint8_t *b = p;
	uint32_t h = 2166136261u;
	for (size_t i = 0; i < n; i++) {
		h ^= b[i];
		h *= 16777619u;
	}
	return h;
}

void prepared_ref(struct pstmt *ps)
{
	ps->refs++;
}

void prepared_release(struct pstmt *ps)
{
	if (--ps->refs)
		return;
	struct pstmt **pp = &shared[ps->hash % SHARED_BUCKETS];
	while (*pp != ps)
		pp = &(*pp)->next;
	*pp = ps->next;
	shared_count--;
	free(ps);
}

static struct pstmt *shared_get(const uint8_t *body, uint32_t len)
{
	uint32_t h = hash_bytes(body, len);
	for (struct pstmt *ps = shared[h % SHARED_BUCKETS]; ps; ps = ps->next) {
		if (ps->hash == h && ps->body_len == len && memcmp(ps->body, body, len) == 0) {
			ps->refs++;
			return ps;
		}
	}
	struct pstmt *ps = xcalloc(1, sizeof(*ps) + len);
	ps->id = next_id++;
	ps->hash = h;
	ps->refs = 1;
	ps->body_len = len;
	memcpy(ps->body, body, len);
	ps->next = shared[h % SHARED_BUCKETS];
	shared[h % SHARED_BUCKETS] = ps;
	shared_count++;
	return ps;
}

uint32_t prepared_shared_count(void)
{
	return shared_count;
}

/* ---- per client --------------------------------------------------------- */

static struct client_stmt **client_find(struct client_stmts *cs, const char *name)
{
	struct client_stmt **pp = &cs->bucket[hash_bytes(name, strlen(name)) % CLIENT_BUCKETS];
	while (*pp && strcmp((*pp)->name, name) != 0)
		pp = &(*pp)->next;
	return pp;
}

struct pstmt *prepared_client_parse(struct client_stmts **csp, const char *name,
				    const uint8_t *body, uint32_t body_len)
{
	if (!*csp)
		*csp = xcalloc(1, sizeof(**csp));
	struct client_stmts *cs = *csp;
	struct pstmt *ps = shared_get(body, body_len);
	struct client_stmt **pp = client_find(cs, name);
	if (*pp) {
		/* PostgreSQL would refuse to reuse a name; drivers never do it
		 * without a Close, so the new definition simply wins. */
		cs->bytes -= prepared_client_cost(name, (*pp)->ps->body_len);
		cs->bytes += prepared_client_cost(name, body_len);
		prepared_release((*pp)->ps);
		(*pp)->ps = ps;
		return ps;
	}
	size_t n = strlen(name) + 1;
	struct client_stmt *st = xcalloc(1, sizeof(*st) + n);
	memcpy(st->name, name, n);
	st->ps = ps;
	*pp = st;
	cs->count++;
	cs->bytes += prepared_client_cost(name, body_len);
	return ps;
}

struct pstmt *prepared_client_lookup(struct client_stmts *cs, const char *name)
{
	if (!cs)
		return NULL;
	struct client_stmt **pp = client_find(cs, name);
	return *pp ? (*pp)->ps : NULL;
}

bool prepared_client_close(struct client_stmts *cs, const char *name)
{
	if (!cs)
		return false;
	struct client_stmt **pp = client_find(cs, name);
	struct client_stmt *st = *pp;
	if (!st)
		return false;
	*pp = st->next;
	cs->bytes -= prepared_client_cost(st->name, st->ps->body_len);
	prepared_release(st->ps);
	free(st);
	cs->count--;
	return true;
}

void prepared_client_clear(struct client_stmts *cs)
{
	if (!cs)
		return;
	for (int i = 0; i < CLIENT_BUCKETS; i++) {
		while (cs->bucket[i]) {
			struct client_stmt *st = cs->bucket[i];
			cs->bucket[i] = st->next;
			prepared_release(st->ps);
			free(st);
		}
	}
	cs->count = 0;
	cs->bytes = 0;
}

void prepared_client_free(struct client_stmts **cs)
{
	prepared_client_clear(*cs);
	free(*cs);
	*cs = NULL;
}

uint32_t prepared_client_count(const struct client_stmts *cs)
{
	return cs ? cs->count : 0;
}

uint64_t prepared_client_cost(const char *name, uint32_t body_len)
{
	return sizeof(struct client_stmt) + strlen(name) + 1 + sizeof(struct pstmt) + body_len;
}

uint64_t prepared_client_bytes(const struct client_stmts *cs)
{
	return cs ? cs->bytes : 0;
}

/* ---- per server --------------------------------------------------------- */

static int server_index(const struct server_stmts *ss, const struct pstmt *ps)
{
	if (!ss)
		return -1;
	for (uint32_t i = 0; i < ss->count; i++)
		if (ss->e[i].ps == ps)
			return (int)i;
	return -1;
}

const char *prepared_server_name(struct server_stmts *ss, const struct pstmt *ps)
{
	int i = server_index(ss, ps);
	if (i < 0)
		return NULL;
	ss->e[i].used = ++ss->clock;
	return ss->e[i].name;
}

/* A name no client can guess: pgfleet's own names come from the
 * process's random source, never from a counter. */
static void random_name(char name[PREPARED_NAME_LEN])
{
	static const char hex[] = "0123456789abcdef";
	uint8_t r[8];
	fleet_random(r, sizeof(r));
	memcpy(name, "pgf_", 4);
	for (int i = 0; i < 8; i++) {
		name[4 + 2 * i] = hex[r[i] >> 4];
		name[5 + 2 * i] = hex[r[i] & 15];
	}
	name[PREPARED_NAME_LEN - 1] = 0;
}

const char *prepared_server_add(struct server_stmts **ssp, struct pstmt *ps, uint32_t max,
				char evicted[PREPARED_NAME_LEN])
{
	evicted[0] = 0;
	if (max < 1)
		max = 1;
	struct server_stmts *ss = *ssp;
	if (!ss || ss->cap < max) {
		struct server_stmts *n = xcalloc(1, sizeof(*n) + max * sizeof(n->e[0]));
		n->cap = max;
		if (ss) {
			n->count = ss->count;
			n->clock = ss->clock;
			memcpy(n->e, ss->e, ss->count * sizeof(ss->e[0]));
			free(ss);
		}
		*ssp = ss = n;
	}
	if (ss->count >= max) {
		uint32_t lru = 0;
		for (uint32_t i = 1; i < ss->count; i++)
			if (ss->e[i].used < ss->e[lru].used)
				lru = i;
		memcpy(evicted, ss->e[lru].name, PREPARED_NAME_LEN);
		prepared_release(ss->e[lru].ps);
		ss->e[lru] = ss->e[--ss->count];
	}
	prepared_ref(ps);
	struct server_entry *e = &ss->e[ss->count++];
	e->ps = ps;
	e->used = ++ss->clock;
	random_name(e->name);
	return e->name;
}

void prepared_server_forget(struct server_stmts *ss, const struct pstmt *ps)
{
	int i = server_index(ss, ps);
	if (i < 0)
		return;
	struct pstmt *gone = ss->e[i].ps;
	ss->e[i] = ss->e[--ss->count];
	prepared_release(gone);
}

void prepared_server_clear(struct server_stmts *ss)
{
	if (!ss)
		return;
	while (ss->count)
		prepared_release(ss->e[--ss->count].ps);
}

void prepared_server_free(struct server_stmts **ss)
{
	prepared_server_clear(*ss);
	free(*ss);
	*ss = NULL;
}

uint32_t prepared_server_count(const struct server_stmts *ss)
{
	return ss ? ss->count : 0;
}

/* ---- messages ------------------------------------------------------------- */

void prepared_put_parse(struct wbuf *w, const struct pstmt *ps, const char *name)
{
	uint32_t m = proto_begin(w, 'P');
	proto_put_str(w, name);
	proto_put_bytes(w, ps->body, ps->body_len);
	proto_end(w, m);
}

void prepared_put_close(struct wbuf *w, const char *name)
{
	uint32_t m = proto_begin(w, 'C');
	proto_put_u8(w, 'S');
	proto_put_str(w, name);
	proto_end(w, m);
}

void prepared_free_all(void)
{
	for (int i = 0; i < SHARED_BUCKETS; i++) {
		while (shared[i]) {
			struct pstmt *ps = shared[i];
			shared[i] = ps->next;
			free(ps);
		}
	}
	shared_count = 0;
}
