/*
 * test_sqlinspect.c: the look at client SQL that guards pgfleet's prepared
 * statements (sqlinspect.c).  PostgreSQL's lexer rules decide: a keyword in
 * a comment (nested ones too), a string, a dollar quote or a quoted
 * identifier is no keyword; identifiers fold to lower case unless quoted;
 * U&"" escapes spell a name without its letters; every statement of a
 * multi-statement text counts.  And the prefilter never lets the parser run
 * for the queries of the hot path (pgbench's).
 */
#include "harness.h"

#include "sqlinspect.h"

#include <string.h>

#define R SQLI_RESERVED
#define A SQLI_DROPS_ALL
#define U SQLI_UNSURE
#define D SQLI_DEALLOC
#define BIG (1024 * 1024)

static const struct {
	const char *sql;
	unsigned flags;
	const char *name; /* SQLI_DEALLOC: the name */
} cases[] = {
	/* nothing to do */
	{"SELECT 1", 0, NULL},
	{"SELECT abalance FROM pgbench_accounts WHERE aid = 42;", 0, NULL},
	{"select 'deallocate all'", 0, NULL},
	{"select $$discard all$$, $x$ DO $x$", 0, NULL},
	{"select 1 /* deallocate all */", 0, NULL},
	{"select 1 /* outer /* nested */ deallocate all */", 0, NULL},
	{"select 1 -- discard all", 0, NULL},
	{"select \"deallocate\" from t", 0, NULL},
	{"select 1 as do", 0, NULL},
	{"DISCARD PLANS", 0, NULL},
	{"discard temp; discard sequences", 0, NULL},
	{"insert into t values (1) on conflict do nothing", 0, NULL},
	{"PREPARE mine AS SELECT 1", 0, NULL},
	{"EXECUTE mine", 0, NULL},
	{"grant execute on function f() to public", 0, NULL},
	{"create function f() returns int language sql as $$ deallocate all $$", 0, NULL},
	/* everything dropped */
	{"DEALLOCATE ALL", A, NULL},
	{"deallocate prepare all", A, NULL},
	{"DISCARD ALL", A, NULL},
	{"/* app */ DEALLOCATE ALL", A, NULL},
	{"/* a /* b */ c */ discard all", A, NULL},
	{"-- comment\ndiscard all", A, NULL},
	{"SELECT 1; DEALLOCATE ALL", A, NULL},
	{"sElEcT 1;dIsCaRd AlL;select 2", A, NULL},
	/* one DEALLOCATE <name>: pgfleet may answer it */
	{"DEALLOCATE s1", D, "s1"},
	{"DEALLOCATE PREPARE S1;", D, "s1"},
	{"deallocate \"S1\"", D, "S1"},
	{"/* x */ deallocate \"a b\" -- y", D, "a b"},
	{"deallocate U&\"d\\0061ta\"", D, "data"},
	/* a reserved name, however it is spelled */
	{"DEALLOCATE pgf_0123456789abcdef", R | D, "pgf_0123456789abcdef"},
	{"deallocate PGF_1", R | D, "pgf_1"},
	{"deallocate U&\"\\0070gf_1\"", R | D, "pgf_1"},
	{"PREPARE pgf_1 AS SELECT 'balance=0'", R, NULL},
	{"DEALLOCATE pgf_1; PREPARE pgf_1 AS SELECT 'balance=0'", R | U, NULL},
	{"EXECUTE pgf_1", R, NULL},
	{"explain execute pgf_1", R, NULL},
	{"create table t as execute pgf_1", R, NULL},
	{"select 1; /* */ execute \"pgf_2\"(1)", R, NULL},
	{"deallocate \"PGF_1\"", D, "PGF_1"}, /* quoted: not folded, not reserved */
	/* unseen changes possible */
	{"DO $$ BEGIN EXECUTE 'DEALLOCATE ALL'; END $$", U, NULL},
	{"do language plpgsql 'begin null; end'", U, NULL},
	{"/* x */ Do $body$ begin end $body$", U, NULL},
	{"CALL p()", U, NULL},
	{"select 1; deallocate s1", U, NULL},
	{"deallocate s1; deallocate s2", U, NULL},
	{"deallocate all; deallocate s1", A | U, NULL},
	{"this is not sql; deallocate all", U, NULL},
	{"DEALLOCATE", U, NULL},
};

static void test_table(void)
{
	for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
		struct sql_look look;
		unsigned got = sqlinspect_look(cases[i].sql, strlen(cases[i].sql), BIG, &look);
		if (got != cases[i].flags)
			fprintf(stderr, "case %zu \"%s\": flags %#x, want %#x\n", i, cases[i].sql,
				got, cases[i].flags);
		CHECK(got == cases[i].flags);
		CHECK(look.flags == got);
		if (cases[i].name)
			CHECK_STR(look.name, cases[i].name);
	}
}

/* A query longer than any buffer-size shortcut, with the statement last. */
static void test_long_text(void)
{
	static char sql[40000];
	size_t n = 0;
	n += (size_t)snprintf(sql + n, sizeof(sql) - n, "SELECT '");
	while (n < sizeof(sql) - 100)
		sql[n++] = 'x';
	n += (size_t)snprintf(sql + n, sizeof(sql) - n, "'; DEALLOCATE ALL");
	struct sql_look look;
	CHECK(sqlinspect_look(sql, n, BIG, &look) == A);
	/* past max_inspected_query_size: not parsed, untrusted */
	unsigned long before = sqlinspect_parses();
	CHECK(sqlinspect_look(sql, n, 8192, &look) == U);
	CHECK(sqlinspect_parses() == before);
	CHECK(sqlinspect_look("SELECT 1", 8, 0, &look) == 0);
	CHECK(sqlinspect_look("DISCARD ALL", 11, 0, &look) == U);
}

/* The hot path: none of these queries may reach the parser. */
static void test_prefilter_spares_the_hot_path(void)
{
	static const char *hot[] = {
		"SELECT abalance FROM pgbench_accounts WHERE aid = 48213;",
		"UPDATE pgbench_accounts SET abalance = abalance + -4155 WHERE aid = 1;",
		"UPDATE pgbench_tellers SET tbalance = tbalance + 1 WHERE tid = 3;",
		"UPDATE pgbench_branches SET bbalance = bbalance + 1 WHERE bid = 1;",
		("INSERT INTO pgbench_history (tid, bid, aid, delta, mtime) VALUES (1, 1, 1, 1, "
		 "CURRENT_TIMESTAMP);"),
		"BEGIN;",
		"END;",
		"SELECT abalance FROM pgbench_accounts WHERE aid = $1",
		"select 1 as doubled, 'undone' as x, executed, prepared, calls",
	};
	unsigned long before = sqlinspect_parses();
	for (size_t i = 0; i < sizeof(hot) / sizeof(hot[0]); i++) {
		struct sql_look look;
		CHECK(!sqlinspect_prefilter(hot[i], strlen(hot[i])));
		CHECK(sqlinspect_look(hot[i], strlen(hot[i]), BIG, &look) == 0);
	}
	CHECK(sqlinspect_parses() == before);
	/* ... a keyword at the very end, or before a non-ASCII byte ... */
	CHECK(sqlinspect_prefilter("x; do", 5));
	CHECK(!sqlinspect_prefilter("x; do\xc3\xa9", 7));
	CHECK(sqlinspect_prefilter("x;DO(", 5));
	/* ... and a statement's first word only: elsewhere a keyword is a
	 * column, a string, or a clause that cannot reach a statement. */
	CHECK(!sqlinspect_prefilter("select 1 as do", 14));
	CHECK(!sqlinspect_prefilter("insert into t values (1) on conflict do nothing", 47));
}

/* The prefilter's statement starts: after blanks and comments, after every
 * ';' (even one in a string or comment), and never jumping past a real
 * ';' because of a comment skipped at a false start. */
static void test_prefilter_statement_starts(void)
{
	static const struct {
		const char *sql;
		bool hit;
	} starts[] = {
		{"  \t\n\r\f\vDEALLOCATE ALL", true},
		{"-- a\n-- b\ndo $$ begin end $$", true},
		{"/* a /* b */ c */ CALL p()", true},
		{"/* a /* b */ c DEALLOCATE ALL */ select 1", false},
		{"SELECT ';/*'; DEALLOCATE ALL; -- */", true},
		{"SELECT '/*;'; DISCARD ALL", true},
		{"select 1; /* x */ execute pgf_1", true},
		{"EXPLAIN ANALYZE EXECUTE pgf_1", true},
		{"create temp table t as execute pgf_1", true},
		{"prepare s as select 1", true},
		{"select 'x;y'", false},
		{"(select 1); (select 2)", false},
		{"with t as (select 1) select * from t", false},
		{"calls", false},
		{"executed; preparer; discarded; deallocated; done; created; explained", false},
		{"/* unclosed", false},
	};
	for (size_t i = 0; i < sizeof(starts) / sizeof(starts[0]); i++) {
		bool got = sqlinspect_prefilter(starts[i].sql, strlen(starts[i].sql));
		if (got != starts[i].hit)
			fprintf(stderr, "start %zu \"%s\": %d\n", i, starts[i].sql, got);
		CHECK(got == starts[i].hit);
	}
	/* A Parse's text: only its first statement after empty ones. */
	static const struct {
		const char *sql;
		bool hit;
	} ones[] = {
		{"DEALLOCATE ALL", true},
		{" ; ;/* x */; -- y\n DO $$ begin end $$", true},
		{"select 1; deallocate all", false}, /* two statements: refused whole */
		{"select 1;", false},
		{"explain execute pgf_1", true},
	};
	for (size_t i = 0; i < sizeof(ones) / sizeof(ones[0]); i++)
		CHECK(sqlinspect_prefilter_one(ones[i].sql, strlen(ones[i].sql)) == ones[i].hit);
	/* Whatever the parser finds something in, the prefilter lets through. */
	for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++)
		if (cases[i].flags)
			CHECK(sqlinspect_prefilter(cases[i].sql, strlen(cases[i].sql)));
}


/* Session state and settings (transaction and statement pooling): what the
 * parser finds, asked with SQLI_WATCH_SESSION. */
#define T SQLI_TEMP
#define P SQLI_PREPARE
#define H SQLI_HOLD
#define L SQLI_LISTEN
#define K SQLI_ADVISORY
#define O SQLI_ROLE
#define S SQLI_SET
static const struct {
	const char *sql;
	unsigned flags;
} session_cases[] = {
	/* nothing that stays */
	{"SELECT abalance FROM pgbench_accounts WHERE aid = 1", 0},
	{"create temp table x(a int) on commit drop", 0},
	{"create table t as select 1", 0},
	{"create table t(a int)", 0},
	{"select * from pg_temp.x", 0}, /* reads one: creating it was refused */
	{"declare c cursor for select 1", 0},
	{"declare c no scroll cursor without hold for select 1", 0},
	{"unlisten x", 0},
	{"select pg_advisory_xact_lock(1), pg_try_advisory_xact_lock_shared(2)", 0},
	{"select pg_advisory_unlock(1)", 0},
	{"select 'pg_advisory_lock(1)', \"pg_advisory_lock\" from t", 0},
	{"select 1 -- pg_advisory_lock(1)", 0},
	{"set local role x", 0},
	{"reset role", 0},
	{"reset session authorization", 0},
	{"set session authorization default", 0},
	{"set local search_path = a", 0},
	{"set transaction isolation level serializable", 0},
	{"select 'set_config(''a'', ''b'', false)'", 0},
	/* temporary relations */
	{"create temp table x(a int)", T},
	{"CREATE TEMPORARY TABLE x(a int) ON COMMIT DELETE ROWS", T},
	{"create table pg_temp.x(a int)", T},
	{"create local temp table x(a int)", T},
	{"create temp view v as select 1", T},
	{"create temporary sequence s", T},
	{"create temp table t as select 1", T},
	{"select 1 into temp t", T},
	{"select 1 into pg_temp.t", T},
	{"SELECT 1 INTO Pg_Temp.t FROM x", T},
	{"select pg_advisory_lock /* c */ (1)", K},
	{"update t set a = set_config('a.b', 'c', false)", S},
	{"SELECT * INTO /* c */ TEMPORARY TABLE t FROM y", T},
	{"explain analyze create temp table t as select 1", T},
	{"select 1; create temp table x(a int) on commit drop; create temp table y(a int)", T},
	/* the rest, one each */
	{"prepare p as select 1", P},
	{"PREPARE p(int) AS SELECT $1", P},
	{"declare c cursor with hold for select 1", H},
	{"DECLARE c SCROLL CURSOR WITH HOLD FOR SELECT 1", H},
	{"listen x", L},
	{"select pg_advisory_lock(1)", K},
	{"SELECT PG_TRY_ADVISORY_LOCK(1)", K},
	{"select pg_catalog.pg_advisory_lock_shared(1)", K},
	{"select coalesce(pg_try_advisory_lock_shared(1, 2), false)", K},
	{"set role x", O},
	{"SET SESSION ROLE x", O},
	{"set session authorization y", O},
	/* settings that stay */
	{"set search_path = a", S},
	{"SET SESSION statement_timeout TO 5000", S},
	{"set time zone 'UTC'", S},
	{"reset all", S | SQLI_RESET_ALL},
	{"reset search_path", S | SQLI_RESET},
	{"set datestyle to default", S | SQLI_RESET},
	{"set session characteristics as transaction isolation level serializable", S},
	{"select set_config('a.b', 'c', false)", S},
	{"select pg_catalog.set_config('a.b', 'c', true)", S},
	{"begin; set x.y = 1; commit", S},
	/* several */
	{"listen a; select pg_advisory_lock(1); set role r", L | K | O},
};

static void test_session_state(void)
{
	for (size_t i = 0; i < sizeof(session_cases) / sizeof(session_cases[0]); i++) {
		struct sql_look look;
		const char *sql = session_cases[i].sql;
		unsigned got = sqlinspect_look_watch(sql, strlen(sql), BIG, SQLI_WATCH_SESSION,
						     false, &look);
		if (got != session_cases[i].flags)
			fprintf(stderr, "session case %zu \"%s\": flags %#x, want %#x\n", i, sql,
				got, session_cases[i].flags);
		CHECK(got == session_cases[i].flags);
		CHECK(look.flags == got);
		/* the prefilter lets through whatever the parser finds */
		if (session_cases[i].flags)
			CHECK(sqlinspect_prefilter_session(sql, strlen(sql)));
		/* a statements-only look never reports session state */
		CHECK((sqlinspect_look(sql, strlen(sql), BIG, &look) & ~SQLI_STMT_FLAGS) == 0);
	}
	/* Both at once: one parse. */
	struct sql_look look;
	unsigned long before = sqlinspect_parses();
	CHECK(sqlinspect_look_watch("prepare pgf_1 as select 1", 25, BIG,
				    SQLI_WATCH_STATEMENTS | SQLI_WATCH_SESSION, false,
				    &look) == (SQLI_RESERVED | P));
	CHECK(sqlinspect_parses() == before + 1);
	/* Session only: a statement flag found on the way is not reported. */
	CHECK(sqlinspect_look_watch("discard all", 11, BIG, SQLI_WATCH_SESSION, false, &look) == 0);
	/* Too long to parse: runs unread. */
	CHECK(sqlinspect_look_watch("listen x", 8, 4, SQLI_WATCH_SESSION, false, &look) == 0);
}

/* The custom parameter names a SET text names (PostgreSQL does not list
 * custom parameters anywhere: pgfleet must learn them from the text). */
static void test_set_names(void)
{
	static const struct {
		const char *sql;
		const char *names; /* '|' between names */
	} set_cases[] = {
		{"set search_path = a", ""},
		{"SET MyApp.Tenant = 'x'", "myapp.tenant"},
		{"set \"app.A\" to 1; reset b.c", "app.a|b.c"},
		{"select set_config('App.user', 'u', false), set_config('x.y', 'z', true)",
		 "app.user|x.y"},
		{"select set_config(current_user, 'q.r', false)", "q.r"}, /* harmless extra */
		{"reset all", ""},
	};
	for (size_t i = 0; i < sizeof(set_cases) / sizeof(set_cases[0]); i++) {
		struct sql_look look;
		const char *sql = set_cases[i].sql;
		CHECK((sqlinspect_look_watch(sql, strlen(sql), BIG, SQLI_WATCH_SESSION, false,
					     &look) &
		       ~(SQLI_RESET | SQLI_RESET_ALL)) == SQLI_SET);
		char got[256] = "";
		size_t n = 0;
		for (size_t p = 0; p < look.set_names_len; p += strlen(look.set_names + p) + 1)
			n += (size_t)snprintf(got + n, sizeof(got) - n, "%s%s", n ? "|" : "",
					      look.set_names + p);
		if (strcmp(got, set_cases[i].names) != 0)
			fprintf(stderr, "set names %zu \"%s\": \"%s\"\n", i, sql, got);
		CHECK_STR(got, set_cases[i].names);
	}
}

/* The names a RESET / SET ... TO DEFAULT gives back, for the startup
 * values pgfleet sends after it; RESET ALL; SET LOCAL ... TO DEFAULT is not
 * one (nothing of it stays). */
static void test_reset_names(void)
{
	struct sql_look look;
	const char *sql = "RESET DateStyle; set \"App.X\" to default; reset a.b";
	CHECK(sqlinspect_look_watch(sql, strlen(sql), BIG, SQLI_WATCH_SESSION, false, &look) ==
	      (SQLI_SET | SQLI_RESET));
	CHECK(look.stmts == 3 && !look.reset_overflow);
	CHECK(look.reset_names_len == strlen("datestyle") + strlen("app.x") + strlen("a.b") + 3);
	CHECK_STR(look.reset_names, "datestyle");
	CHECK_STR(look.reset_names + 10, "app.x");
	sql = "reset all";
	CHECK(sqlinspect_look_watch(sql, strlen(sql), BIG, SQLI_WATCH_SESSION, false, &look) ==
	      (SQLI_SET | SQLI_RESET_ALL));
	CHECK(look.stmts == 1 && look.reset_names_len == 0);
	sql = "set local statement_timeout to default";
	CHECK(sqlinspect_look_watch(sql, strlen(sql), BIG, SQLI_WATCH_SESSION, false, &look) == 0);
	sql = "reset role";
	CHECK(sqlinspect_look_watch(sql, strlen(sql), BIG, SQLI_WATCH_SESSION, false, &look) == 0);
}

/* The hot path in transaction pooling: no parse either. */
static void test_session_prefilter_spares_the_hot_path(void)
{
	static const char *hot[] = {
		"SELECT abalance FROM pgbench_accounts WHERE aid = 48213;",
		"UPDATE pgbench_accounts SET abalance = abalance + -4155 WHERE aid = 1;",
		("INSERT INTO pgbench_history (tid, bid, aid, delta, mtime) VALUES (1, 1, 1, 1, "
		 "CURRENT_TIMESTAMP);"),
		"SELECT * INTO temperatures FROM t", /* "into" + "temp": a false hit */
		"BEGIN;",
		"END;",
		"SELECT abalance FROM pgbench_accounts WHERE aid = $1",
		"select settings, resets, listens, declared, created_at from t",
		"select pg_advisory_xact_lock(1)",
	};
	unsigned long before = sqlinspect_parses();
	for (size_t i = 0; i < sizeof(hot) / sizeof(hot[0]); i++) {
		struct sql_look look;
		bool pre = sqlinspect_prefilter_session(hot[i], strlen(hot[i]));
		if (i == 3) {
			CHECK(pre); /* a parse, finding nothing */
			CHECK(sqlinspect_look_watch(hot[i], strlen(hot[i]), BIG, SQLI_WATCH_SESSION,
						    false, &look) == 0);
			before++;
			continue;
		}
		if (pre)
			fprintf(stderr, "hot %zu \"%s\" hits the session prefilter\n", i, hot[i]);
		CHECK(!pre);
		CHECK(sqlinspect_look_watch(hot[i], strlen(hot[i]), BIG,
					    SQLI_WATCH_STATEMENTS | SQLI_WATCH_SESSION, false,
					    &look) == 0);
	}
	CHECK(sqlinspect_parses() == before);
}

/* The session prefilter reads the text sixteen bytes at a time: every
 * byte counts wherever it falls (a step's first or last byte, the text's
 * last bytes read again from the end, a text shorter than a step), and no
 * byte past the text is read (a word cut by the text's end is no hit). */
static void test_session_prefilter_every_position(void)
{
	static const char *hits[] = {
		"select 1 into temp t", "select set_config('a', 'b', false)",
		"select pg_advisory_lock(1)", "select 1; set x = 1", "x;reset all",
		"select 1 into pg_temp.t",
	};
	static const char *misses[] = {
		"select abalance from pgbench_accounts where aid = 1;",
		"select pg_advisory_xact_lock(1)", "select 1 into tem", "insert into temp_t values (1)",
	};
	char buf[128];
	for (size_t pad = 0; pad < 40; pad++) {
		for (size_t i = 0; i < sizeof(hits) / sizeof(hits[0]); i++) {
			size_t n = strlen(hits[i]);
			memset(buf, ' ', pad);
			memcpy(buf + pad, hits[i], n);
			if (!sqlinspect_prefilter_session(buf, pad + n))
				fprintf(stderr, "pad %zu: \"%s\" missed\n", pad, hits[i]);
			CHECK(sqlinspect_prefilter_session(buf, pad + n));
			CHECK(sqlinspect_prefilter_both(buf, pad + n));
		}
		for (size_t i = 0; i < sizeof(misses) / sizeof(misses[0]); i++) {
			size_t n = strlen(misses[i]);
			memset(buf, ' ', pad);
			memcpy(buf + pad, misses[i], n);
			buf[pad + n] = 'p'; /* past the end: "tem" + "p" would be "temp" */
			CHECK(!sqlinspect_prefilter_session(buf, pad + n));
		}
	}
	/* A SELECT ... INTO is a SELECT: "into temp" in a statement before the
	 * first that may select is no SELECT ... INTO. */
	const char *sql = "insert into temp_t values (1); select 1";
	CHECK(!sqlinspect_prefilter_session(sql, strlen(sql)));
	sql = "select 1; select 2 into temp t";
	CHECK(sqlinspect_prefilter_session(sql, strlen(sql)));
}

static void test_reserved(void)
{
	CHECK(sqlinspect_reserved("pgf_1"));
	CHECK(!sqlinspect_reserved("PGF_1"));
	CHECK(!sqlinspect_reserved("pgf"));
	CHECK(!sqlinspect_reserved("s1"));
}

int main(void)
{
	RUN(test_table);
	RUN(test_long_text);
	RUN(test_prefilter_spares_the_hot_path);
	RUN(test_prefilter_statement_starts);
	RUN(test_reserved);
	RUN(test_session_state);
	RUN(test_set_names);
	RUN(test_reset_names);
	RUN(test_session_prefilter_spares_the_hot_path);
	RUN(test_session_prefilter_every_position);
	return harness_finish();
}
