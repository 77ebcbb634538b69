/*
 * intern.h: shared, reference-counted copies of values many connections
 * hold alike: ten thousand clients of one application hold one copy of
 * their user name and one of their startup parameters, not ten thousand.
 * A table belongs to one event loop (clients never move between loops).
 */
#ifndef PGFLEET_INTERN_H
#define PGFLEET_INTERN_H

#include <stddef.h>
#include <stdint.h>

#define INTERN_BUCKETS 1024 /* a power of two */

struct interned;

struct intern_table {
	struct interned *bucket[INTERN_BUCKETS];
	unsigned count;   /* distinct values held */
	uint64_t last_id; /* ids are never reused, unlike addresses */
};

/* FNV-1a, for callers' own hashes of their keys. */
#define INTERN_HASH_SEED 2166136261u
static inline uint32_t intern_hash_byte(uint32_t h, uint8_t c)
{
	return (h ^ c) * 16777619u;
}

/* A reference to the table's copy of the len bytes at key (hash: the
 * caller's hash of them; equal keys must hash alike).  The copy is aligned
 * like any malloc'd block.  NULL when out of memory. */
const void *intern_get(struct intern_table *t, const void *key, size_t len, uint32_t hash);
/* Drops a reference taken by intern_get (NULL is ignored). */
void intern_put(struct intern_table *t, const void *p);
/* The id given to the value when it entered the table. */
uint64_t intern_id(const void *p);

/* Strings: a reference to the shared copy of s; "" is a constant and never
 * counted.  NULL when out of memory. */
const char *str_intern(const char *s);
/* Drops a reference taken by str_intern ("" and NULL are ignored). */
void str_release(const char *s);

#endif
