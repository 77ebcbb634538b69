/*
 * test_intern.c: the shared-copy tables (intern.c); the parameter sets built
 * on them are in test_params.c.  Equal values share one copy
 * until the last reference goes; a value that comes back after that is a
 * new entry with a new id, so an id remembered for the old one never
 * matches it by accident.
 */
#include "harness.h"

#include "intern.h"

#include <stdint.h>
#include <string.h>

static uint32_t hash_of(const char *s)
{
	uint32_t h = INTERN_HASH_SEED;
	for (; *s; s++)
		h = intern_hash_byte(h, (uint8_t)*s);
	return h;
}

static void test_equal_keys_share_one_copy(void)
{
	static struct intern_table t;
	const char *a = intern_get(&t, "alpha", 6, hash_of("alpha"));
	const char *b = intern_get(&t, "alpha", 6, hash_of("alpha"));
	const char *c = intern_get(&t, "beta", 5, hash_of("beta"));
	CHECK(a && a == b);
	CHECK_STR(a, "alpha");
	CHECK(c && c != a);
	CHECK(t.count == 2);
	CHECK(intern_id(a) != intern_id(c));
	intern_put(&t, a);
	CHECK(t.count == 2); /* b still holds it */
	intern_put(&t, b);
	intern_put(&t, c);
	CHECK(t.count == 0);
	intern_put(&t, NULL); /* ignored */
}

static void test_keys_that_collide_stay_apart(void)
{
	static struct intern_table t;
	/* One hash for all: only the bytes tell them apart. */
	const char *x = intern_get(&t, "x", 2, 7);
	const char *y = intern_get(&t, "y", 2, 7);
	const char *xy = intern_get(&t, "xy", 3, 7);
	CHECK(x && y && xy && x != y && x != xy && y != xy);
	CHECK_STR(x, "x");
	CHECK_STR(y, "y");
	CHECK(intern_get(&t, "y", 2, 7) == y);
	CHECK(t.count == 3);
	intern_put(&t, y); /* the second reference */
	intern_put(&t, y); /* removed from the middle of its chain */
	CHECK(intern_get(&t, "x", 2, 7) == x);
	CHECK(intern_get(&t, "xy", 3, 7) == xy);
	intern_put(&t, x);
	intern_put(&t, x);
	intern_put(&t, xy);
	intern_put(&t, xy);
	CHECK(t.count == 0);
}

static void test_a_value_that_returns_gets_a_new_id(void)
{
	static struct intern_table t;
	const void *a = intern_get(&t, "gone", 5, hash_of("gone"));
	uint64_t id = intern_id(a);
	intern_put(&t, a);
	const void *b = intern_get(&t, "gone", 5, hash_of("gone"));
	CHECK(b && intern_id(b) != id);
	intern_put(&t, b);
}

static void test_strings(void)
{
	const char *e = str_intern("");
	CHECK(e && *e == 0);
	str_release(e); /* "" is a constant: never counted, never freed */
	str_release(NULL);
	char buf[16];
	strcpy(buf, "appuser");
	const char *a = str_intern(buf);
	strcpy(buf, "other");
	const char *b = str_intern("appuser");
	CHECK(a == b);
	CHECK_STR(a, "appuser"); /* a copy, not the caller's buffer */
	str_release(a);
	str_release(b);
}

int main(void)
{
	RUN(test_equal_keys_share_one_copy);
	RUN(test_keys_that_collide_stay_apart);
	RUN(test_a_value_that_returns_gets_a_new_id);
	RUN(test_strings);
	return harness_finish();
}
