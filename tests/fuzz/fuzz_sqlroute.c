/*
 * fuzz_sqlroute: the statement classifier (sqlroute.c): the hint look at
 * the leading comments, libpg_query's parse of hostile text, the scan of its
 * JSON tree (strings with escapes, deep nesting), the retry of a bare
 * "primary", and the cache.  The input is a variant byte (bits 0-1: the
 * cache size 0, 1, 3 or 64; bit 2: max_len 64 instead of 64 KiB) then texts
 * split at FUZZ_SEP.  Each text is classified without and through the
 * cache, twice: the answers must agree (a cache never changes an answer),
 * and must be one of the classes of sqlroute.h.
 */
#include <stdlib.h>
#include <string.h>

#include "driver.h"
#include "sqlroute.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static void check(const struct sqlroute_answer *a)
{
	if (a->cls > SQLROUTE_SET_ROUTE || a->pref > SQLROUTE_PREF_INVALID)
		abort();
	if (a->cls != SQLROUTE_SET_ROUTE && (a->pref || a->local || a->reset))
		abort();
	if (a->hinted && a->cls != SQLROUTE_PRIMARY && a->cls != SQLROUTE_READ)
		abort();
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	static const unsigned sizes[] = {0, 1, 3, 64};
	if (size < 1)
		return 0;
	unsigned entries = sizes[data[0] & 3];
	size_t max_len = (data[0] & 4) ? 64 : 65536;
	struct fuzz_chunk chunks[16];
	size_t n = fuzz_split(data + 1, size - 1, chunks, 16);
	for (int pass = 0; pass < 2; pass++)
		for (size_t i = 0; i < n; i++) {
			/* sqlroute's contract: sql[len] is a NUL */
			char *sql = malloc(chunks[i].len + 1);
			if (!sql)
				abort();
			memcpy(sql, chunks[i].p, chunks[i].len);
			sql[chunks[i].len] = '\0';
			struct sqlroute_answer plain, cached;
			sqlroute_classify(sql, chunks[i].len, max_len, &plain);
			sqlroute_classify_cached(sql, chunks[i].len, max_len, entries, &cached);
			check(&plain);
			if (memcmp(&plain, &cached, sizeof plain) != 0)
				abort();
			free(sql);
		}
	sqlroute_cache_free();
	return 0;
}
