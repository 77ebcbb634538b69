/*
 * intern.c: the string table behind intern.h, a chained hash table whose
 * entries carry their reference count in front of the characters.
 */
#include "intern.h"

#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#define BUCKETS 256 /* a power of two */

struct entry {
	struct entry *next;
	uint32_t hash, refs;
	char s[]; /* what callers hold a pointer to */
};

static _Thread_local struct entry *table[BUCKETS];

static uint32_t hash_str(const char *s)
{
	uint32_t h = 2166136261u; /* FNV-1a */
	for (; *s; s++)
		h = (h ^ (uint8_t)*s) * 16777619u;
	return h;
}

const char *str_intern(const char *s)
{
	if (!*s)
		return "";
	uint32_t h = hash_str(s);
	struct entry **b = &table[h & (BUCKETS - 1)];
	for (struct entry *e = *b; e; e = e->next) {
		if (e->hash == h && strcmp(e->s, s) == 0) {
			e->refs++;
			return e->s;
		}
	}
	size_t n = strlen(s);
	struct entry *e = malloc(sizeof(*e) + n + 1);
	if (!e)
		return NULL;
	memcpy(e->s, s, n + 1);
	e->hash = h;
	e->refs = 1;
	e->next = *b;
	*b = e;
	return e->s;
}

void str_release(const char *s)
{
	if (!s || !*s)
		return;
	struct entry *e = (struct entry *)(void *)(s - offsetof(struct entry, s));
	if (--e->refs)
		return;
	struct entry **b = &table[e->hash & (BUCKETS - 1)];
	while (*b != e)
		b = &(*b)->next;
	*b = e->next;
	free(e);
}
