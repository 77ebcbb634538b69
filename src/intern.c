/*
 * intern.c: the tables behind intern.h, chained hash tables whose entries
 * carry their reference count and id in front of the bytes callers hold.
 */
#include "intern.h"

#include <stdalign.h>
#include <stdlib.h>
#include <string.h>

struct interned {
	struct interned *next;
	size_t len;
	uint64_t id;
	uint32_t hash, refs;
	alignas(max_align_t) unsigned char data[]; /* what callers point to */
};

static struct interned *entry_of(const void *p)
{
	return (struct interned *)(void *)((unsigned char *)(uintptr_t)p -
	                                   offsetof(struct interned, data));
}

const void *intern_get(struct intern_table *t, const void *key, size_t len, uint32_t hash)
{
	struct interned **b = &t->bucket[hash & (INTERN_BUCKETS - 1)];
	for (struct interned *e = *b; e; e = e->next) {
		if (e->hash == hash && e->len == len && memcmp(e->data, key, len) == 0) {
			e->refs++;
			return e->data;
		}
	}
	struct interned *e = malloc(sizeof(*e) + len);
	if (!e)
		return NULL;
	memcpy(e->data, key, len);
	e->len = len;
	e->hash = hash;
	e->refs = 1;
	e->id = ++t->last_id;
	e->next = *b;
	*b = e;
	t->count++;
	return e->data;
}

void intern_put(struct intern_table *t, const void *p)
{
	if (!p)
		return;
	struct interned *e = entry_of(p);
	if (--e->refs)
		return;
	struct interned **b = &t->bucket[e->hash & (INTERN_BUCKETS - 1)];
	while (*b != e)
		b = &(*b)->next;
	*b = e->next;
	t->count--;
	free(e);
}

uint64_t intern_id(const void *p)
{
	return entry_of(p)->id;
}

/* ---- strings -------------------------------------------------------------- */

static _Thread_local struct intern_table strings;

const char *str_intern(const char *s)
{
	if (!*s)
		return "";
	uint32_t h = INTERN_HASH_SEED;
	size_t n = 0;
	for (; s[n]; n++)
		h = intern_hash_byte(h, (uint8_t)s[n]);
	return intern_get(&strings, s, n + 1, h);
}

void str_release(const char *s)
{
	if (s && *s)
		intern_put(&strings, s);
}
