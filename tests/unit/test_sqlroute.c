/*
 * test_sqlroute.c: where a statement may run (sqlroute.c), one row per
 * statement form of issue 19 item 1: reads, every function that is not safe,
 * locking clauses at any depth, data-modifying CTEs, SELECT INTO, EXPLAIN
 * with and without ANALYZE, BEGIN READ ONLY in any position, SET/RESET
 * pgfleet.route, hints, several statements, parse errors, empty and too
 * long texts.  Then the cache: hits, collisions, eviction, entries = 0.
 */
#include "harness.h"

#include "sqlroute.h"

#include <stdlib.h>
#include <string.h>
#include <time.h>

#define P SQLROUTE_PRIMARY
#define R SQLROUTE_READ
#define B SQLROUTE_BEGIN_READ
#define S SQLROUTE_SET_ROUTE
#define AUTO SQLROUTE_PREF_AUTO
#define PRI SQLROUTE_PREF_PRIMARY
#define STB SQLROUTE_PREF_STANDBY
#define INV SQLROUTE_PREF_INVALID
#define MAX 4096

static const struct {
	const char *sql;
	enum sqlroute_class cls;
	enum sqlroute_pref pref; /* SQLROUTE_SET_ROUTE */
	bool local;              /* SQLROUTE_SET_ROUTE */
	bool hinted;
} cases[] = {
    /* reads */
    {"SELECT 1", R, 0, false, false},
    {"select 1;", R, 0, false, false},
    {";; select 1 ;;", R, 0, false, false},
    {"SELECT abalance FROM pgbench_accounts WHERE aid = $1;", R, 0, false, false},
    {"SELECT abalance FROM pgbench_accounts WHERE aid = 12345;", R, 0, false, false},
    {"VALUES (1), (2)", R, 0, false, false},
    {"TABLE t", R, 0, false, false},
    {"SHOW search_path", R, 0, false, false},
    {"SHOW ALL", R, 0, false, false},
    {"(SELECT 1) UNION ALL (SELECT 2) ORDER BY 1", R, 0, false, false},
    {"WITH x AS (SELECT * FROM t) SELECT * FROM x", R, 0, false, false},
    {"WITH RECURSIVE r(n) AS (SELECT 1 UNION ALL SELECT n + 1 FROM r WHERE n < 9) SELECT n FROM r",
     R, 0, false, false},
    {"SELECT count(*), sum(x), avg(x), min(x), max(x), array_agg(x), string_agg(y, ',') FROM t", R,
     0, false, false},
    {"SELECT row_number() OVER (), rank() OVER w, lag(x) OVER w, first_value(x) OVER w FROM t "
     "WINDOW w AS (ORDER BY x)",
     R, 0, false, false},
    {"SELECT lower(a), upper(b), length(c), substr(c, 1, 2), concat_ws(',', a, b), "
     "regexp_replace(a, 'x', 'y'), to_char(now(), 'YYYY')",
     R, 0, false, false},
    {"SELECT trim(' a '), substring('abc' from 2), position('b' in 'abc'), extract(year from "
     "now()), x AT TIME ZONE 'UTC' FROM t",
     R, 0, false, false},
    {"SELECT abs(-1), round(2.5), random(), greatest(1, 2), coalesce(null, 1), nullif(1, 2)", R, 0,
     false, false},
    {"SELECT jsonb_build_object('a', 1), json_agg(t), row_to_json(t) FROM t", R, 0, false, false},
    {"SELECT * FROM jsonb_array_elements('[1]'), generate_series(1, 3), unnest(ARRAY[1])", R, 0,
     false, false},
    {"SELECT pg_catalog.now(), pg_catalog.lower('A')", R, 0, false, false},
    {"SELECT version(), current_setting('work_mem'), pg_is_in_recovery(), pg_last_wal_replay_lsn()",
     R, 0, false, false},
    {"SELECT pg_size_pretty(pg_relation_size('t')), pg_typeof(1), has_table_privilege('t', "
     "'SELECT')",
     R, 0, false, false},
    {"SELECT gen_random_uuid(), md5('x'), sha256('x'::bytea), encode('x', 'hex')", R, 0, false,
     false},
    {"SELECT pg_sleep(0.1)", R, 0, false, false},
    {"SELECT host(inet_server_addr()), inet_server_port(), masklen('10.0.0.0/8'::cidr)", R, 0,
     false, false},
    {"SELECT pg_wal_lsn_diff(pg_last_wal_receive_lsn(), pg_last_wal_replay_lsn())", R, 0, false,
     false},
    {"SELECT * FROM t WHERE id IN (SELECT id FROM u WHERE lower(n) = 'x')", R, 0, false, false},
    {"SELECT 1 FOR READ ONLY", R, 0, false, false},
    {"SELECT CURRENT_DATE, CURRENT_USER, LOCALTIMESTAMP", R, 0, false, false},
    {"SELECT 'nextval(1)', \"setval\" FROM t -- nextval('s')", R, 0, false, false},
    {"/* app=shop */ SELECT 1", R, 0, false, false},
    {"/* pgfleet:replica */ SELECT 1", R, 0, false, false},
    /* functions that are not safe */
    {"SELECT nextval('s')", P, 0, false, false},
    {"SELECT setval('s', 1)", P, 0, false, false},
    {"SELECT currval('s')", P, 0, false, false},
    {"SELECT lastval()", P, 0, false, false},
    {"SELECT pg_advisory_lock(1)", P, 0, false, false},
    {"SELECT pg_advisory_xact_lock_shared(1)", P, 0, false, false},
    {"SELECT pg_try_advisory_lock(1)", P, 0, false, false},
    {"SELECT pg_advisory_unlock_all()", P, 0, false, false},
    {"SELECT set_config('work_mem', '1MB', false)", P, 0, false, false},
    {"SELECT lo_import('/etc/passwd')", P, 0, false, false},
    {"SELECT lo_create(0)", P, 0, false, false},
    {"SELECT lo_unlink(1)", P, 0, false, false},
    {"SELECT pg_notify('c', 'x')", P, 0, false, false},
    {"SELECT txid_current()", P, 0, false, false},
    {"SELECT pg_current_xact_id()", P, 0, false, false},
    {"SELECT pg_current_wal_lsn()", P, 0, false, false},
    {"SELECT setseed(0.5)", P, 0, false, false},
    {"SELECT pg_catalog.nextval('s')", P, 0, false, false},
    {"SELECT pg_catalog.pg_advisory_lock(1)", P, 0, false, false},
    {"SELECT my_function(1)", P, 0, false, false},
    {"SELECT public.lower('x')", P, 0, false, false},
    {"SELECT myschema.now()", P, 0, false, false},
    {"SELECT db.pg_catalog.now()", P, 0, false, false},
    {"SELECT \"NOW\"()", P, 0, false, false},
    {"SELECT * FROM my_srf()", P, 0, false, false},
    {"SELECT lower(nextval('s')::text)", P, 0, false, false},
    {"SELECT * FROM t WHERE x = (SELECT max(f(y)) FROM u)", P, 0, false, false},
    {"SELECT count(*) FILTER (WHERE g(x)) FROM t", P, 0, false, false},
    /* locking clauses, at any depth */
    {"SELECT * FROM t FOR UPDATE", P, 0, false, false},
    {"SELECT * FROM t FOR SHARE", P, 0, false, false},
    {"SELECT * FROM t FOR NO KEY UPDATE SKIP LOCKED", P, 0, false, false},
    {"SELECT * FROM t FOR KEY SHARE NOWAIT", P, 0, false, false},
    {"SELECT * FROM (SELECT * FROM t FOR UPDATE) s", P, 0, false, false},
    {"SELECT * FROM t WHERE id IN (SELECT id FROM u FOR SHARE)", P, 0, false, false},
    {"WITH x AS (SELECT * FROM t FOR UPDATE) SELECT * FROM x", P, 0, false, false},
    /* data-modifying CTEs, SELECT INTO */
    {"WITH x AS (INSERT INTO t VALUES (1) RETURNING *) SELECT * FROM x", P, 0, false, false},
    {"WITH x AS (UPDATE t SET a = 1 RETURNING *) SELECT * FROM x", P, 0, false, false},
    {"WITH x AS (DELETE FROM t RETURNING *) SELECT * FROM x", P, 0, false, false},
    {"WITH a AS (SELECT 1), b AS (WITH c AS (DELETE FROM t RETURNING 1) SELECT * FROM c) SELECT * "
     "FROM b",
     P, 0, false, false},
    {"SELECT 1 INTO t", P, 0, false, false},
    {"SELECT * INTO TEMP t2 FROM t", P, 0, false, false},
    /* EXPLAIN */
    {"EXPLAIN SELECT 1", R, 0, false, false},
    {"EXPLAIN ANALYZE SELECT 1", R, 0, false, false},
    {"EXPLAIN (FORMAT JSON, COSTS off) SELECT * FROM t WHERE lower(a) = 'x'", R, 0, false, false},
    {"EXPLAIN (ANALYZE, ANALYZE off) DELETE FROM t", R, 0, false, false},
    {"EXPLAIN (ANALYZE, BUFFERS) SELECT * FROM t", R, 0, false, false},
    {"EXPLAIN INSERT INTO t VALUES (1)", R, 0, false, false},
    {"EXPLAIN SELECT nextval('s')", R, 0, false, false},
    {"EXPLAIN (ANALYZE off) DELETE FROM t", R, 0, false, false},
    {"EXPLAIN (ANALYZE false) UPDATE t SET a = 1", R, 0, false, false},
    {"EXPLAIN (ANALYZE 0) UPDATE t SET a = 1", R, 0, false, false},
    {"EXPLAIN ANALYZE INSERT INTO t VALUES (1)", P, 0, false, false},
    {"EXPLAIN ANALYZE VERBOSE DELETE FROM t", P, 0, false, false},
    {"EXPLAIN (ANALYZE true) UPDATE t SET a = 1", P, 0, false, false},
    {"EXPLAIN (ANALYZE on) UPDATE t SET a = 1", P, 0, false, false},
    {"EXPLAIN (ANALYZE 1) UPDATE t SET a = 1", P, 0, false, false},
    {"EXPLAIN (ANALYZE off, ANALYZE on) DELETE FROM t", P, 0, false, false},
    {"EXPLAIN (ANALYZE maybe) SELECT 1 FOR UPDATE", P, 0, false, false},
    {"EXPLAIN ANALYZE SELECT nextval('s')", P, 0, false, false},
    {"EXPLAIN ANALYZE SELECT * FROM t FOR UPDATE", P, 0, false, false},
    {"EXPLAIN ANALYZE WITH x AS (DELETE FROM t RETURNING 1) SELECT * FROM x", P, 0, false, false},
    {"EXPLAIN ANALYZE CREATE TABLE t2 AS SELECT 1", P, 0, false, false},
    {"EXPLAIN ANALYZE SELECT 1 INTO t2", P, 0, false, false},
    {"EXPLAIN EXECUTE s1(1)", P, 0, false, false},
    /* BEGIN */
    {"BEGIN READ ONLY", B, 0, false, false},
    {"begin transaction read only", B, 0, false, false},
    {"START TRANSACTION READ ONLY", B, 0, false, false},
    {"BEGIN ISOLATION LEVEL REPEATABLE READ, READ ONLY", B, 0, false, false},
    {"BEGIN READ ONLY ISOLATION LEVEL SERIALIZABLE DEFERRABLE", B, 0, false, false},
    {"START TRANSACTION ISOLATION LEVEL SERIALIZABLE, READ ONLY, DEFERRABLE;", B, 0, false, false},
    {"BEGIN READ WRITE, READ ONLY", B, 0, false, false},
    {"BEGIN", P, 0, false, false},
    {"START TRANSACTION", P, 0, false, false},
    {"BEGIN READ WRITE", P, 0, false, false},
    {"BEGIN READ ONLY, READ WRITE", P, 0, false, false},
    {"BEGIN ISOLATION LEVEL SERIALIZABLE", P, 0, false, false},
    {"BEGIN READ ONLY; SELECT 1", P, 0, false, false},
    {"SET TRANSACTION READ ONLY", P, 0, false, false},
    {"COMMIT", P, 0, false, false},
    /* SET pgfleet.route */
    {"SET pgfleet.route = primary", S, PRI, false, false},
    {"SET pgfleet.route TO PRIMARY", S, PRI, false, false},
    {"set pgfleet.route = 'primary'", S, PRI, false, false},
    {"SET pgfleet.route TO standby", S, STB, false, false},
    {"SET pgfleet.route = 'STANDBY';", S, STB, false, false},
    {"SET pgfleet.route TO auto", S, AUTO, false, false},
    {"SET SESSION pgfleet.route = 'auto'", S, AUTO, false, false},
    {"SET PgFleet.Route = standby", S, STB, false, false},
    {"SET \"PGFLEET\".\"ROUTE\" = standby", S, STB, false, false},
    {"RESET pgfleet.route", S, AUTO, false, false},
    {"SET pgfleet.route TO DEFAULT", S, AUTO, false, false},
    {"SET pgfleet.route = replica", S, INV, false, false},
    {"SET pgfleet.route = ''", S, INV, false, false},
    {"SET pgfleet.route = 1", S, INV, false, false},
    {"SET pgfleet.route = primary, standby", S, INV, false, false},
    {"SET pgfleet.route FROM CURRENT", S, INV, false, false},
    {"/* \u00e9t\u00e9 \u65e5\u672c */ SET pgfleet.route = primary;", S, PRI, false, false},
    {"SET pgfleet.route TO primary -- the primary", S, PRI, false, false},
    {"SET pgfleet.route = primaryx", S, INV, false, false},
    {"SET LOCAL pgfleet.route = standby", S, STB, true, false},
    {"SET LOCAL pgfleet.route = primary", S, PRI, true, false},
    {"SET LOCAL pgfleet.route TO DEFAULT", S, AUTO, true, false},
    {"SET pgfleet.route = primary; SELECT 1", P, 0, false, false},
    {"SELECT 1; SET pgfleet.route = 'standby'", P, 0, false, false},
    {"SET pgfleet.routes = standby", P, 0, false, false},
    /* SHOW pgfleet.route: answered by pgfleet with the session's value */
    {"SHOW pgfleet.route", S, AUTO, false, false},
    {"show PGFLEET.ROUTE;", S, AUTO, false, false},
    {"/* what now? */ SHOW pgfleet.route", S, AUTO, false, false},
    {"SHOW pgfleet.routes", R, 0, false, false},
    {"SHOW pgfleet.route; SELECT 1", P, 0, false, false},
    {"SET pgfleet.route = primary x", P, 0, false, false},
    {"SELECT primary", P, 0, false, false},
    {"SET search_path = primary", P, 0, false, false},
    {"RESET ALL", P, 0, false, false},
    {"SET work_mem = '1MB'", P, 0, false, false},
    /* hints */
    {"/* pgfleet:standby */ SELECT nextval('s')", R, 0, false, true},
    {"/* pgfleet:primary */ SELECT 1", P, 0, false, true},
    {"  /*  PGFLEET:Standby  */INSERT INTO t VALUES (1)", R, 0, false, true},
    {"/* pgfleet : primary */ SELECT 1", P, 0, false, true},
    {"-- pgfleet:standby\nSELECT * FROM t FOR UPDATE", R, 0, false, true},
    {"-- pgfleet:primary\nSELECT 1", P, 0, false, true},
    {"/* app */ /* pgfleet:standby */ SELECT nextval('s')", R, 0, false, true},
    {"/* pgfleet:standby */", R, 0, false, true},
    {"/* pgfleet:master */ SELECT 1", R, 0, false, false},
    {"/* pgfleet:standbys */ SELECT nextval('s')", P, 0, false, false},
    {"/* pgfleet:replica */ SELECT nextval('s')", P, 0, false, false},
    {"/* route:standby */ SELECT nextval('s')", P, 0, false, false},
    {"/* pgfleet: /* nested */ standby */ SELECT nextval('s')", P, 0, false, false},
    {"SELECT 1 /* pgfleet:primary */", R, 0, false, false},
    {"SELECT nextval('s') /* pgfleet:standby */", P, 0, false, false},
    {"/* pgfleet:standby", P, 0, false, false},
    /* several statements */
    {"SELECT 1; SELECT 2", P, 0, false, false},
    {"SELECT 1; INSERT INTO t VALUES (1)", P, 0, false, false},
    {"SHOW a; SHOW b", P, 0, false, false},
    /* everything else */
    {"", P, 0, false, false},
    {"   ", P, 0, false, false},
    {";", P, 0, false, false},
    {"-- only a comment", P, 0, false, false},
    {"SELEC 1", P, 0, false, false},
    {"SELECT 'unterminated", P, 0, false, false},
    {"SELECT (1", P, 0, false, false},
    {"INSERT INTO t VALUES (1)", P, 0, false, false},
    {"UPDATE t SET a = 1", P, 0, false, false},
    {"DELETE FROM t", P, 0, false, false},
    {"MERGE INTO t USING u ON t.id = u.id WHEN MATCHED THEN DELETE", P, 0, false, false},
    {"DECLARE c CURSOR FOR SELECT 1", P, 0, false, false},
    {"COPY t TO STDOUT", P, 0, false, false},
    {"COPY (SELECT 1) TO STDOUT", P, 0, false, false},
    {"CALL p()", P, 0, false, false},
    {"DO $$ BEGIN PERFORM 1; END $$", P, 0, false, false},
    {"PREPARE s1 AS SELECT 1", P, 0, false, false},
    {"EXECUTE s1", P, 0, false, false},
    {"LISTEN c", P, 0, false, false},
    {"NOTIFY c", P, 0, false, false},
    {"CREATE TABLE t2 AS SELECT 1", P, 0, false, false},
    {"LOCK TABLE t", P, 0, false, false},
    {"VACUUM t", P, 0, false, false},
    {"FETCH 1 FROM c", P, 0, false, false},
};

static void test_table(void)
{
	for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
		struct sqlroute_answer a;
		sqlroute_classify(cases[i].sql, strlen(cases[i].sql), MAX, &a);
		bool ok = a.cls == cases[i].cls && a.hinted == cases[i].hinted &&
		          (a.cls != SQLROUTE_SET_ROUTE ||
		           (a.pref == cases[i].pref && a.local == cases[i].local));
		if (!ok)
			fprintf(stderr, "case %zu \"%s\": cls %u pref %u local %d hinted %d\n", i,
			        cases[i].sql, a.cls, a.pref, a.local, a.hinted);
		CHECK(ok);
		/* the command tag pgfleet answers with: RESET only for RESET */
		CHECK(a.reset ==
		      (a.cls == SQLROUTE_SET_ROUTE && strncmp(cases[i].sql, "RESET", 5) == 0));
		/* SHOW is answered with the value, not a tag */
		CHECK(a.show == (a.cls == SQLROUTE_SET_ROUTE &&
		                  (strstr(cases[i].sql, "SHOW") || strstr(cases[i].sql, "show"))));
	}
	fprintf(stderr, "%zu rows\n", sizeof cases / sizeof cases[0]);
}

static void test_safe_list(void)
{
	CHECK(sqlroute_safe_list_ok());
	CHECK(sqlroute_function_safe("now", 3));
	CHECK(sqlroute_function_safe("width_bucket", 12));
	CHECK(sqlroute_function_safe("abs", 3));
	CHECK(!sqlroute_function_safe("nextval", 7));
	CHECK(!sqlroute_function_safe("no", 2));
	CHECK(!sqlroute_function_safe("nowx", 4));
	CHECK(!sqlroute_function_safe("", 0));
}

/* A text over max_len is not parsed, not even looked at (but a hint is). */
static void test_lengths(void)
{
	struct sqlroute_answer a;
	const char *sql = "SELECT 1";
	sqlroute_classify(sql, 8, 8, &a);
	CHECK(a.cls == SQLROUTE_READ);
	uint64_t before = sqlroute_parses();
	sqlroute_classify(sql, 8, 7, &a);
	CHECK(a.cls == SQLROUTE_PRIMARY && !a.hinted);
	CHECK(sqlroute_parses() == before);
	sqlroute_classify("/* pgfleet:standby */ SELECT 1", 30, 7, &a);
	CHECK(a.cls == SQLROUTE_READ && a.hinted);
	/* a NUL inside the text: not parsed */
	sqlroute_classify("SELECT 1\0; DELETE FROM t", 24, MAX, &a);
	CHECK(a.cls == SQLROUTE_PRIMARY);
	/* a long read, parsed */
	size_t n = 100000;
	char *big = malloc(n + 1);
	strcpy(big, "SELECT 1");
	memset(big + 8, ' ', n - 8);
	big[n] = '\0';
	sqlroute_classify(big, n, n, &a);
	CHECK(a.cls == SQLROUTE_READ);
	sqlroute_classify_cached(big, n, n - 1, 16, &a);
	CHECK(a.cls == SQLROUTE_PRIMARY);
	free(big);
	/* deeply nested: the parser's own limit, no crash */
	n = 200000;
	big = malloc(n * 2 + 16);
	size_t k = 0;
	k += (size_t)sprintf(big, "SELECT ");
	for (size_t i = 0; i < n / 2; i++)
		big[k++] = '(';
	big[k++] = '1';
	for (size_t i = 0; i < n / 2; i++)
		big[k++] = ')';
	big[k] = '\0';
	sqlroute_classify(big, k, k, &a);
	CHECK(a.cls == SQLROUTE_PRIMARY || a.cls == SQLROUTE_READ);
	free(big);
}

static void test_cache(void)
{
	struct sqlroute_answer a;
	sqlroute_cache_free();
	const char *q = "SELECT abalance FROM pgbench_accounts WHERE aid = $1;";
	uint64_t p0 = sqlroute_parses(), h0 = sqlroute_cache_hits();
	for (int i = 0; i < 10; i++) {
		sqlroute_classify_cached(q, strlen(q), MAX, 64, &a);
		CHECK(a.cls == SQLROUTE_READ);
	}
	CHECK(sqlroute_parses() - p0 == 1);
	CHECK(sqlroute_cache_hits() - h0 == 9);

	/* entries = 0: every call parses, nothing is kept */
	p0 = sqlroute_parses();
	h0 = sqlroute_cache_hits();
	for (int i = 0; i < 5; i++)
		sqlroute_classify_cached(q, strlen(q), MAX, 0, &a);
	CHECK(sqlroute_parses() - p0 == 5);
	CHECK(sqlroute_cache_hits() == h0);

	/* a one-entry cache: every other text replaces the last, and no text
	 * ever gets another's answer */
	const char *texts[] = {"SELECT 1",
	                       "SELECT nextval('s')",
	                       "BEGIN READ ONLY",
	                       "SET pgfleet.route = standby",
	                       "SELECT 1 FOR UPDATE",
	                       "SET LOCAL pgfleet.route = x"};
	size_t nt = sizeof texts / sizeof texts[0];
	struct sqlroute_answer want[6];
	for (size_t i = 0; i < nt; i++)
		sqlroute_classify(texts[i], strlen(texts[i]), MAX, &want[i]);
	for (unsigned entries = 1; entries <= 8; entries++) {
		for (int round = 0; round < 20; round++)
			for (size_t i = 0; i < nt; i++) {
				size_t j = (i * 7 + (size_t)round) % nt;
				sqlroute_classify_cached(texts[j], strlen(texts[j]), MAX, entries,
				                         &a);
				CHECK(memcmp(&a, &want[j], sizeof a) == 0);
			}
	}

	/* one entry, one text: the second call hits */
	sqlroute_cache_free();
	sqlroute_classify_cached("SELECT 1", 8, MAX, 1, &a);
	h0 = sqlroute_cache_hits();
	sqlroute_classify_cached("SELECT 1", 8, MAX, 1, &a);
	CHECK(sqlroute_cache_hits() == h0 + 1);
	/* a text of the same length, same prefix: a miss, its own answer
	 * ("SELECT 2" would hit: only its literal differs, see test_skeleton) */
	sqlroute_classify_cached("SELECT x", 8, MAX, 1, &a);
	CHECK(sqlroute_cache_hits() == h0 + 1 && a.cls == SQLROUTE_READ);
	/* a prefix of a cached text is a different text */
	char text[] = "SELECT 1 FOR UPDATE";
	sqlroute_classify_cached(text, 19, MAX, 1, &a);
	CHECK(a.cls == SQLROUTE_PRIMARY);
	text[8] = '\0';
	sqlroute_classify_cached(text, 8, MAX, 1, &a);
	CHECK(a.cls == SQLROUTE_READ);

	/* eviction: 1000 texts through 16 entries, then the hit count of a
	 * second pass is at most 16; a working set that fits stays */
	sqlroute_cache_free();
	char buf[64];
	for (int i = 0; i < 1000; i++) {
		int n = snprintf(buf, sizeof buf, "SELECT c%d", i);
		sqlroute_classify_cached(buf, (size_t)n, MAX, 16, &a);
		CHECK(a.cls == SQLROUTE_READ);
	}
	h0 = sqlroute_cache_hits();
	for (int i = 0; i < 1000; i++) {
		int n = snprintf(buf, sizeof buf, "SELECT c%d", i);
		sqlroute_classify_cached(buf, (size_t)n, MAX, 16, &a);
	}
	CHECK(sqlroute_cache_hits() - h0 <= 16);
	sqlroute_cache_free();
	for (int pass = 0; pass < 3; pass++)
		for (int i = 0; i < 4; i++) {
			int n = snprintf(buf, sizeof buf, "SELECT c%d", i);
			sqlroute_classify_cached(buf, (size_t)n, MAX, 1024, &a);
		}
	h0 = sqlroute_cache_hits();
	p0 = sqlroute_parses();
	for (int i = 0; i < 4; i++) {
		int n = snprintf(buf, sizeof buf, "SELECT c%d", i);
		sqlroute_classify_cached(buf, (size_t)n, MAX, 1024, &a);
	}
	CHECK(sqlroute_cache_hits() - h0 == 4 && sqlroute_parses() == p0);

	/* a size over the cap (2^20 entries) is capped, and still hits */
	sqlroute_classify_cached("SELECT 1", 8, MAX, 5000000, &a);
	h0 = sqlroute_cache_hits();
	sqlroute_classify_cached("SELECT 1", 8, MAX, 5000000, &a);
	CHECK(sqlroute_cache_hits() == h0 + 1 && a.cls == SQLROUTE_READ);

	/* a change of the size empties the cache, and it works on */
	sqlroute_classify_cached("SELECT 1", 8, MAX, 32, &a);
	sqlroute_classify_cached("SELECT 1", 8, MAX, 32, &a);
	CHECK(a.cls == SQLROUTE_READ);
	sqlroute_cache_free();
	sqlroute_cache_free(); /* twice is fine */
}

/* This thread's CPU time: the machine running the tests is shared. */
static double now_ns(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_THREAD_CPUTIME_ID, &ts);
	return (double)ts.tv_sec * 1e9 + (double)ts.tv_nsec;
}

/* Not a check: the numbers for the report (PGFLEET_BENCH=1). */
static void bench(void)
{
	if (!getenv("PGFLEET_BENCH"))
		return;
	const char *qs[] = {"SELECT abalance FROM pgbench_accounts WHERE aid = $1;",
	                    "SELECT abalance FROM pgbench_accounts WHERE aid = 12345;"};
	struct sqlroute_answer a;
	for (size_t k = 0; k < 2; k++) {
		size_t n = strlen(qs[k]);
		int iters = 10000000;
		for (int i = 0; i < 1000000; i++) /* warm up */
			sqlroute_classify_cached(qs[k], n, MAX, 1024, &a);
		double t0 = now_ns();
		for (int i = 0; i < iters; i++)
			sqlroute_classify_cached(qs[k], n, MAX, 1024, &a);
		double hit = (now_ns() - t0) / iters;
		int piters = 20000;
		t0 = now_ns();
		for (int i = 0; i < piters; i++)
			sqlroute_classify(qs[k], n, MAX, &a);
		double parse = (now_ns() - t0) / piters;
		printf("bench \"%s\": cached %.1f ns, parsed %.0f ns\n", qs[k], hit, parse);
	}
	sqlroute_cache_free();
}

/* Texts that differ only in their literals share one cached answer (one
 * parse), never across anything the skeleton scan cannot read for sure,
 * and never where the class depends on a value. */
static void skel_parses(const char *const *texts, size_t n, uint64_t want_parses,
			const uint8_t *classes)
{
	struct sqlroute_answer a[64], plain;
	sqlroute_cache_free();
	uint64_t p0 = sqlroute_parses();
	for (size_t i = 0; i < n && i < 64; i++)
		sqlroute_classify_cached(texts[i], strlen(texts[i]), MAX, 64, &a[i]);
	uint64_t got = sqlroute_parses() - p0;
	for (size_t i = 0; i < n && i < 64; i++) {
		sqlroute_classify(texts[i], strlen(texts[i]), MAX, &plain);
		if (memcmp(&a[i], &plain, sizeof plain) != 0 || (classes && a[i].cls != classes[i])) {
			fprintf(stderr, "  text: %s: cached %d plain %d\n", texts[i], a[i].cls,
				plain.cls);
			CHECK(!"skeleton answer");
		}
	}
	if (got != want_parses)
		fprintf(stderr, "  parses through the cache: %llu, expected %llu (first: %s)\n",
			(unsigned long long)got, (unsigned long long)want_parses, texts[0]);
	CHECK(got == want_parses);
}

static void test_skeleton(void)
{
	/* literals of the same length share a skeleton; another length is
	 * another skeleton (one more parse) */
	static const char *const pgbench[] = {
	    "SELECT abalance FROM pgbench_accounts WHERE aid = 12345;",
	    "SELECT abalance FROM pgbench_accounts WHERE aid = 54321;",
	    "SELECT abalance FROM pgbench_accounts WHERE aid = 99999;",
	    "SELECT abalance FROM pgbench_accounts WHERE aid = 7;",
	    "SELECT abalance FROM pgbench_accounts WHERE aid = 0;",
	};
	skel_parses(pgbench, 5, 2, NULL);
	static const char *const strings[] = {
	    "select * from users where email = 'a@b.c' and id = 1",
	    "select * from users where email = 'it''s' and id = 2",
	    "select * from users where email = '--not' and id = 3",
	    "select * from users where email = '/*no*' and id = 4",
	};
	skel_parses(strings, 4, 1, NULL);
	static const char *const writes[] = {
	    "INSERT INTO t VALUES (1, 'x')", "INSERT INTO t VALUES (2, 'y')",
	    "UPDATE t SET v = 'z' WHERE id = 3", "UPDATE t SET v = 'w' WHERE id = 4",
	};
	static const uint8_t writes_cls[] = {SQLROUTE_PRIMARY, SQLROUTE_PRIMARY,
					     SQLROUTE_PRIMARY, SQLROUTE_PRIMARY};
	skel_parses(writes, 4, 2, writes_cls);
	/* each of these is parsed: a comment (may hold a hint), a backslash, a
	 * dollar quote, E'' / B'' strings and numbers glued to words are kept
	 * as written, SET and EXPLAIN are not skeleton statements */
	static const char *const exact[] = {
	    "SELECT 1 -- one", "SELECT 2 -- one", "SELECT 1 /* c */", "SELECT 2 /* c */",
	    "SELECT 'a\\b'", "SELECT 'a\\c'", "SELECT $$1$$", "SELECT $$2$$",
	    "SELECT E'1'", "SELECT E'2'", "SELECT B'1'", "SELECT B'0'",
	    "SELECT 1e5", "SELECT 2e5", "SELECT 0x1F", "SELECT 0x2F",
	    "SELECT t1.a FROM t1", "SELECT t2.a FROM t2",
	    "SET pgfleet.route = 'primary'", "SET pgfleet.route = 'standby'",
	    "EXPLAIN (ANALYZE 1) DELETE FROM t WHERE id = 1",
	    "EXPLAIN (ANALYZE 0) DELETE FROM t WHERE id = 1",
	    "/* pgfleet:standby */ SELECT 1", "/* pgfleet:primary */ SELECT 1",
	};
	/* (the two hints are decided without a parse) */
	skel_parses(exact, sizeof exact / sizeof exact[0], sizeof exact / sizeof exact[0] - 2, NULL);
	/* values never make a read a write: the function, not its argument */
	static const char *const funcs[] = {
	    "SELECT nextval('s1')", "SELECT nextval('s2')", "SELECT lower('A')",
	    "SELECT lower('B')", "SELECT 'nextval'", "SELECT 'xxxxxxx'",
	};
	static const uint8_t funcs_cls[] = {SQLROUTE_PRIMARY, SQLROUTE_PRIMARY, SQLROUTE_READ,
					    SQLROUTE_READ, SQLROUTE_READ, SQLROUTE_READ};
	skel_parses(funcs, 6, 3, funcs_cls);
	/* an unterminated quote: not a skeleton (and the parser refuses it) */
	static const char *const broken[] = {"SELECT 'abc", "SELECT 'abd"};
	skel_parses(broken, 2, 2, NULL);
	sqlroute_cache_free();
}

int main(void)
{
	RUN(test_table);
	RUN(test_safe_list);
	RUN(test_lengths);
	RUN(test_cache);
	RUN(test_skeleton);
	bench();
	return harness_finish();
}
