/*
 * harness.h: the unit-test harness.  A test file is a table of cases run by
 * main(); CHECK records a failure with file:line and carries on, so one run
 * shows every broken case.  The closing line "N passed, N failed" is what CI
 * reads; the exit status is non-zero when anything failed.
 */
#ifndef PGFLEET_HARNESS_H
#define PGFLEET_HARNESS_H

#include <stdio.h>
#include <string.h>

static int harness_passed, harness_failed;

#define CHECK(cond)                                                                                \
	do {                                                                                       \
		if (cond) {                                                                        \
			harness_passed++;                                                          \
		} else {                                                                           \
			harness_failed++;                                                          \
			fprintf(stderr, "FAIL %s:%d: %s\n", __FILE__, __LINE__, #cond);            \
		}                                                                                  \
	} while (0)

#define CHECK_STR(a, b)                                                                            \
	do {                                                                                       \
		const char *ha_ = (a), *hb_ = (b);                                                 \
		if (ha_ && hb_ && strcmp(ha_, hb_) == 0) {                                         \
			harness_passed++;                                                          \
		} else {                                                                           \
			harness_failed++;                                                          \
			fprintf(stderr, "FAIL %s:%d: %s == \"%s\", got \"%s\"\n", __FILE__,        \
				__LINE__, #a, hb_ ? hb_ : "(null)", ha_ ? ha_ : "(null)");         \
		}                                                                                  \
	} while (0)

#define RUN(fn)                                                                                    \
	do {                                                                                       \
		fprintf(stderr, "-- %s\n", #fn);                                                   \
		fn();                                                                              \
	} while (0)

static inline int harness_finish(void)
{
	printf("%d passed, %d failed\n", harness_passed, harness_failed);
	return harness_failed ? 1 : 0;
}

#endif
