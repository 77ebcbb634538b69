/* TEMPORARY STUB (not committed): replaced by the classify branch. */
#include "sqlroute.h"
#include <string.h>
#include <strings.h>
static _Thread_local uint64_t parses;
void sqlroute_classify(const char *sql, size_t len, size_t max_len, struct sqlroute_answer *out)
{
	memset(out, 0, sizeof(*out));
	parses++;
	while (*sql == ' ') sql++;
	if (strstr(sql, "pgfleet:primary")) { out->hinted = true; return; }
	if (strstr(sql, "pgfleet:standby")) { out->hinted = true; out->cls = SQLROUTE_READ; return; }
	if (strncasecmp(sql, "set pgfleet.route", 17) == 0) {
		out->cls = SQLROUTE_SET_ROUTE;
		out->pref = strstr(sql, "primary") ? 1 : strstr(sql, "standby") ? 2 : strstr(sql, "auto") ? 0 : 3;
		return;
	}
	if (strncasecmp(sql, "reset pgfleet.route", 19) == 0) { out->cls = SQLROUTE_SET_ROUTE; out->reset = true; return; }
	if (strncasecmp(sql, "begin read only", 15) == 0) { out->cls = SQLROUTE_BEGIN_READ; return; }
	if (strncasecmp(sql, "select", 6) == 0 && !strchr(sql, ';') && !strstr(sql, "nextval") && !strstr(sql, "f_write")) out->cls = SQLROUTE_READ;
	(void)len; (void)max_len;
}
void sqlroute_classify_cached(const char *sql, size_t len, size_t max_len, unsigned entries, struct sqlroute_answer *out)
{ (void)entries; sqlroute_classify(sql, len, max_len, out); }
void sqlroute_cache_free(void) {}
uint64_t sqlroute_parses(void) { return parses; }
uint64_t sqlroute_cache_hits(void) { return 0; }
