/*
 * intern.h: shared, reference-counted copies of short strings (user and
 * database names of clients): ten thousand clients of one application hold
 * two copies, not twenty thousand.  One table per event loop.
 */
#ifndef PGFLEET_INTERN_H
#define PGFLEET_INTERN_H

/* A reference to the shared copy of s; "" is a constant and never counted.
 * NULL when out of memory. */
const char *str_intern(const char *s);
/* Drops a reference taken by str_intern ("" and NULL are ignored). */
void str_release(const char *s);

#endif
