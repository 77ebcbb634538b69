/*
 * sqlroute.c: may a statement run on a standby (see sqlroute.h)?
 *
 * PostgreSQL's own parser (libpg_query) reads the text; its JSON tree is
 * then read with one linear scan (no DOM, no recursion: a deeply nested
 * expression costs no stack).  Every node is written {"NodeType":{fields}},
 * node types start with an upper-case letter and fields with a lower-case
 * one, and the depth of a key says where it sits:
 *   depth 1  "version", "stmts"
 *   depth 3  "stmt" (one per statement of the text)
 *   depth 4  the statement's node type (SelectStmt, ExplainStmt ...)
 *   depth 5  its fields ("query", "options", "kind", "name", "args" ...)
 * The keys looked at below depth 5 are those of EXPLAIN's and BEGIN's
 * option list (DefElem: depths 7 to 11) and SET's value list (depths 7 to
 * 9).  Anywhere in the tree, a key that makes a read a write is noted: a
 * locking clause (FOR UPDATE/SHARE/...), an INTO, a data-modifying
 * statement (a WITH (INSERT/UPDATE/DELETE/MERGE ...)), and every FuncCall's
 * "funcname", checked against the safe list.  Strings are compared as
 * libpg_query escapes them (only quotes, backslashes and control bytes): a
 * name with an escape in it is never on the list, so no unescaping is needed.
 *
 * What no look at the text can see, and the 25006 fallback (a standby's
 * "read-only transaction" refusal, re-run on the primary) covers: a view,
 * rule, policy, default, operator or cast whose function writes; a user
 * function that shadows a listed name through search_path (pg_catalog comes
 * first unless search_path names it later); a function that writes through
 * dblink or a foreign table.
 */
#include "sqlroute.h"
#include "runtime.h"

#include <pg_query.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

static THREAD_LOCAL uint64_t parses, hits;

uint64_t sqlroute_parses(void)
{
	return parses;
}

uint64_t sqlroute_cache_hits(void)
{
	return hits;
}

/* ---- the safe list -------------------------------------------------------- */

/*
 * Functions a read may call: built-ins that change no data, take no lock
 * beyond a read's, assign no transaction id (a standby cannot), and depend
 * on no state of the session that a standby's connection would not have.
 * By family:
 *   AGG     aggregates (count, sum, array_agg, json_agg ...): read rows only
 *   WINDOW  window functions (row_number, rank, lag ...): the same
 *   TEXT    string functions, including the ones the grammar calls for SQL
 *           syntax (TRIM -> btrim, SUBSTRING ... FROM, POSITION ... IN,
 *           OVERLAY, SIMILAR TO -> similar_to_escape); md5/sha*: pure
 *   MATH    arithmetic; random() is volatile but writes nothing (setseed
 *           is not listed: it changes the session's generator)
 *   TIME    date/time (now, date_trunc, AT TIME ZONE -> timezone, EXTRACT)
 *   JSON    json/jsonb builders, accessors and set-returning expanders
 *           (jsonb_set/jsonb_insert return a new value, they write nothing)
 *   ARRAY   array functions; SRF generate_series, unnest
 *   FTS     text search (to_tsvector, ts_rank ...): pure functions
 *   INFO    session and server information a standby answers too
 *           (version, current_setting, pg_is_in_recovery, replay LSNs)
 *   CATALOG catalog readers (pg_get_*def, format_type, obj_description,
 *           to_reg*, pg_*_is_visible)
 *   PRIV    has_*_privilege: catalog reads
 *   SIZE    pg_*_size, pg_size_pretty: file sizes, read on any server
 *   SLEEP   pg_sleep*: waits, writes nothing
 *   UUID    gen_random_uuid, uuid-ossp's generators: no state
 *   NET     inet/cidr functions (host, masklen ...), inet_server_addr and
 *           the like: values of the connection, read anywhere
 * Not listed, on purpose (each checked by the unit test): nextval, setval,
 * lastval, currval (read-only, but it answers from this session's last
 * nextval: on a standby's connection it fails with 55000), pg_advisory_*
 * and pg_try_advisory_* (locks the primary's sessions must see), set_config
 * (changes a setting of the server connection, which is shared), lo_*
 * (large objects: most write), pg_notify, txid_current/pg_current_xact_id
 * (assign a transaction id: a standby refuses), pg_current_wal_lsn (fails
 * in recovery), and every other name: any user or extension function.
 * Kept sorted (strcmp order, checked by sqlroute_safe_list_ok): binary search.
 */
enum family {
	F_AGG,
	F_WINDOW,
	F_TEXT,
	F_MATH,
	F_TIME,
	F_JSON,
	F_ARRAY,
	F_SRF,
	F_FTS,
	F_INFO,
	F_CATALOG,
	F_PRIV,
	F_SIZE,
	F_SLEEP,
	F_UUID,
	F_NET
};

static const struct safe_function {
	const char *name;
	enum family family; /* documentation: why it is safe (above) */
} safe_functions[] = {
    {"abbrev", F_NET},
    {"abs", F_MATH},
    {"acos", F_MATH},
    {"age", F_TIME},
    {"array_agg", F_AGG},
    {"array_append", F_ARRAY},
    {"array_cat", F_ARRAY},
    {"array_dims", F_ARRAY},
    {"array_fill", F_ARRAY},
    {"array_length", F_ARRAY},
    {"array_lower", F_ARRAY},
    {"array_position", F_ARRAY},
    {"array_positions", F_ARRAY},
    {"array_prepend", F_ARRAY},
    {"array_remove", F_ARRAY},
    {"array_replace", F_ARRAY},
    {"array_to_json", F_JSON},
    {"array_to_string", F_ARRAY},
    {"array_upper", F_ARRAY},
    {"ascii", F_TEXT},
    {"asin", F_MATH},
    {"atan", F_MATH},
    {"atan2", F_MATH},
    {"avg", F_AGG},
    {"bit_and", F_AGG},
    {"bit_length", F_TEXT},
    {"bit_or", F_AGG},
    {"bool_and", F_AGG},
    {"bool_or", F_AGG},
    {"broadcast", F_NET},
    {"btrim", F_TEXT},
    {"cardinality", F_ARRAY},
    {"cbrt", F_MATH},
    {"ceil", F_MATH},
    {"ceiling", F_MATH},
    {"char_length", F_TEXT},
    {"character_length", F_TEXT},
    {"chr", F_TEXT},
    {"clock_timestamp", F_TIME},
    {"col_description", F_CATALOG},
    {"concat", F_TEXT},
    {"concat_ws", F_TEXT},
    {"corr", F_AGG},
    {"cos", F_MATH},
    {"count", F_AGG},
    {"covar_pop", F_AGG},
    {"covar_samp", F_AGG},
    {"cume_dist", F_WINDOW},
    {"current_database", F_INFO},
    {"current_schema", F_INFO},
    {"current_schemas", F_INFO},
    {"current_setting", F_INFO},
    {"date_bin", F_TIME},
    {"date_part", F_TIME},
    {"date_trunc", F_TIME},
    {"decode", F_TEXT},
    {"degrees", F_MATH},
    {"dense_rank", F_WINDOW},
    {"div", F_MATH},
    {"encode", F_TEXT},
    {"every", F_AGG},
    {"exp", F_MATH},
    {"extract", F_TIME},
    {"family", F_NET},
    {"first_value", F_WINDOW},
    {"floor", F_MATH},
    {"format", F_TEXT},
    {"format_type", F_CATALOG},
    {"gcd", F_MATH},
    {"gen_random_uuid", F_UUID},
    {"generate_series", F_SRF},
    {"generate_subscripts", F_SRF},
    {"greatest", F_MATH},
    {"has_any_column_privilege", F_PRIV},
    {"has_column_privilege", F_PRIV},
    {"has_database_privilege", F_PRIV},
    {"has_foreign_data_wrapper_privilege", F_PRIV},
    {"has_function_privilege", F_PRIV},
    {"has_language_privilege", F_PRIV},
    {"has_parameter_privilege", F_PRIV},
    {"has_schema_privilege", F_PRIV},
    {"has_sequence_privilege", F_PRIV},
    {"has_server_privilege", F_PRIV},
    {"has_table_privilege", F_PRIV},
    {"has_tablespace_privilege", F_PRIV},
    {"has_type_privilege", F_PRIV},
    {"host", F_NET},
    {"hostmask", F_NET},
    {"inet_client_addr", F_NET},
    {"inet_client_port", F_NET},
    {"inet_server_addr", F_NET},
    {"inet_server_port", F_NET},
    {"initcap", F_TEXT},
    {"is_normalized", F_TEXT},
    {"isfinite", F_TIME},
    {"json_agg", F_AGG},
    {"json_array_elements", F_JSON},
    {"json_array_elements_text", F_JSON},
    {"json_array_length", F_JSON},
    {"json_build_array", F_JSON},
    {"json_build_object", F_JSON},
    {"json_each", F_JSON},
    {"json_each_text", F_JSON},
    {"json_extract_path", F_JSON},
    {"json_extract_path_text", F_JSON},
    {"json_object", F_JSON},
    {"json_object_agg", F_AGG},
    {"json_object_keys", F_JSON},
    {"json_populate_record", F_JSON},
    {"json_populate_recordset", F_JSON},
    {"json_strip_nulls", F_JSON},
    {"json_to_record", F_JSON},
    {"json_to_recordset", F_JSON},
    {"json_typeof", F_JSON},
    {"jsonb_agg", F_AGG},
    {"jsonb_array_elements", F_JSON},
    {"jsonb_array_elements_text", F_JSON},
    {"jsonb_array_length", F_JSON},
    {"jsonb_build_array", F_JSON},
    {"jsonb_build_object", F_JSON},
    {"jsonb_each", F_JSON},
    {"jsonb_each_text", F_JSON},
    {"jsonb_extract_path", F_JSON},
    {"jsonb_extract_path_text", F_JSON},
    {"jsonb_insert", F_JSON},
    {"jsonb_object", F_JSON},
    {"jsonb_object_agg", F_AGG},
    {"jsonb_object_keys", F_JSON},
    {"jsonb_path_exists", F_JSON},
    {"jsonb_path_match", F_JSON},
    {"jsonb_path_query", F_JSON},
    {"jsonb_path_query_array", F_JSON},
    {"jsonb_path_query_first", F_JSON},
    {"jsonb_populate_record", F_JSON},
    {"jsonb_populate_recordset", F_JSON},
    {"jsonb_pretty", F_JSON},
    {"jsonb_set", F_JSON},
    {"jsonb_strip_nulls", F_JSON},
    {"jsonb_to_record", F_JSON},
    {"jsonb_to_recordset", F_JSON},
    {"jsonb_typeof", F_JSON},
    {"justify_days", F_TIME},
    {"justify_hours", F_TIME},
    {"justify_interval", F_TIME},
    {"lag", F_WINDOW},
    {"last_value", F_WINDOW},
    {"lcm", F_MATH},
    {"lead", F_WINDOW},
    {"least", F_MATH},
    {"left", F_TEXT},
    {"length", F_TEXT},
    {"ln", F_MATH},
    {"log", F_MATH},
    {"log10", F_MATH},
    {"lower", F_TEXT},
    {"lpad", F_TEXT},
    {"ltrim", F_TEXT},
    {"make_date", F_TIME},
    {"make_interval", F_TIME},
    {"make_time", F_TIME},
    {"make_timestamp", F_TIME},
    {"make_timestamptz", F_TIME},
    {"masklen", F_NET},
    {"max", F_AGG},
    {"md5", F_TEXT},
    {"min", F_AGG},
    {"mod", F_MATH},
    {"mode", F_AGG},
    {"netmask", F_NET},
    {"network", F_NET},
    {"normalize", F_TEXT},
    {"now", F_TIME},
    {"nth_value", F_WINDOW},
    {"ntile", F_WINDOW},
    {"num_nonnulls", F_MATH},
    {"num_nulls", F_MATH},
    {"obj_description", F_CATALOG},
    {"octet_length", F_TEXT},
    {"overlaps", F_TIME},
    {"overlay", F_TEXT},
    {"percent_rank", F_WINDOW},
    {"percentile_cont", F_AGG},
    {"percentile_disc", F_AGG},
    {"pg_backend_pid", F_INFO},
    {"pg_client_encoding", F_INFO},
    {"pg_collation_for", F_CATALOG},
    {"pg_column_size", F_SIZE},
    {"pg_conf_load_time", F_INFO},
    {"pg_database_size", F_SIZE},
    {"pg_encoding_to_char", F_CATALOG},
    {"pg_function_is_visible", F_CATALOG},
    {"pg_get_constraintdef", F_CATALOG},
    {"pg_get_expr", F_CATALOG},
    {"pg_get_function_arguments", F_CATALOG},
    {"pg_get_function_result", F_CATALOG},
    {"pg_get_functiondef", F_CATALOG},
    {"pg_get_indexdef", F_CATALOG},
    {"pg_get_ruledef", F_CATALOG},
    {"pg_get_serial_sequence", F_CATALOG},
    {"pg_get_triggerdef", F_CATALOG},
    {"pg_get_userbyid", F_CATALOG},
    {"pg_get_viewdef", F_CATALOG},
    {"pg_get_wal_replay_pause_state", F_INFO},
    {"pg_indexes_size", F_SIZE},
    {"pg_is_in_recovery", F_INFO},
    {"pg_is_wal_replay_paused", F_INFO},
    {"pg_last_wal_receive_lsn", F_INFO},
    {"pg_last_wal_replay_lsn", F_INFO},
    {"pg_last_xact_replay_timestamp", F_INFO},
    {"pg_postmaster_start_time", F_INFO},
    {"pg_relation_size", F_SIZE},
    {"pg_size_bytes", F_SIZE},
    {"pg_size_pretty", F_SIZE},
    {"pg_sleep", F_SLEEP},
    {"pg_sleep_for", F_SLEEP},
    {"pg_sleep_until", F_SLEEP},
    {"pg_table_is_visible", F_CATALOG},
    {"pg_table_size", F_SIZE},
    {"pg_tablespace_size", F_SIZE},
    {"pg_total_relation_size", F_SIZE},
    {"pg_type_is_visible", F_CATALOG},
    {"pg_typeof", F_CATALOG},
    {"pg_wal_lsn_diff", F_INFO},
    {"phraseto_tsquery", F_FTS},
    {"pi", F_MATH},
    {"plainto_tsquery", F_FTS},
    {"position", F_TEXT},
    {"pow", F_MATH},
    {"power", F_MATH},
    {"quote_ident", F_TEXT},
    {"quote_literal", F_TEXT},
    {"quote_nullable", F_TEXT},
    {"radians", F_MATH},
    {"random", F_MATH},
    {"rank", F_WINDOW},
    {"regexp_count", F_TEXT},
    {"regexp_instr", F_TEXT},
    {"regexp_like", F_TEXT},
    {"regexp_match", F_TEXT},
    {"regexp_matches", F_TEXT},
    {"regexp_replace", F_TEXT},
    {"regexp_split_to_array", F_TEXT},
    {"regexp_split_to_table", F_TEXT},
    {"regexp_substr", F_TEXT},
    {"repeat", F_TEXT},
    {"replace", F_TEXT},
    {"reverse", F_TEXT},
    {"right", F_TEXT},
    {"round", F_MATH},
    {"row_number", F_WINDOW},
    {"row_to_json", F_JSON},
    {"rpad", F_TEXT},
    {"rtrim", F_TEXT},
    {"scale", F_MATH},
    {"setweight", F_FTS},
    {"sha224", F_TEXT},
    {"sha256", F_TEXT},
    {"sha384", F_TEXT},
    {"sha512", F_TEXT},
    {"shobj_description", F_CATALOG},
    {"sign", F_MATH},
    {"similar_to_escape", F_TEXT},
    {"sin", F_MATH},
    {"split_part", F_TEXT},
    {"sqrt", F_MATH},
    {"starts_with", F_TEXT},
    {"statement_timestamp", F_TIME},
    {"stddev", F_AGG},
    {"stddev_pop", F_AGG},
    {"stddev_samp", F_AGG},
    {"string_agg", F_AGG},
    {"string_to_array", F_ARRAY},
    {"strpos", F_TEXT},
    {"substr", F_TEXT},
    {"substring", F_TEXT},
    {"sum", F_AGG},
    {"tan", F_MATH},
    {"timeofday", F_TIME},
    {"timezone", F_TIME},
    {"to_char", F_TEXT},
    {"to_date", F_TEXT},
    {"to_hex", F_TEXT},
    {"to_json", F_JSON},
    {"to_jsonb", F_JSON},
    {"to_number", F_TEXT},
    {"to_regclass", F_CATALOG},
    {"to_regnamespace", F_CATALOG},
    {"to_regproc", F_CATALOG},
    {"to_regprocedure", F_CATALOG},
    {"to_regrole", F_CATALOG},
    {"to_regtype", F_CATALOG},
    {"to_timestamp", F_TEXT},
    {"to_tsquery", F_FTS},
    {"to_tsvector", F_FTS},
    {"transaction_timestamp", F_TIME},
    {"translate", F_TEXT},
    {"trim", F_TEXT},
    {"trunc", F_MATH},
    {"ts_headline", F_FTS},
    {"ts_rank", F_FTS},
    {"ts_rank_cd", F_FTS},
    {"unnest", F_SRF},
    {"upper", F_TEXT},
    {"uuid_generate_v1", F_UUID},
    {"uuid_generate_v1mc", F_UUID},
    {"uuid_generate_v3", F_UUID},
    {"uuid_generate_v4", F_UUID},
    {"uuid_generate_v5", F_UUID},
    {"var_pop", F_AGG},
    {"var_samp", F_AGG},
    {"variance", F_AGG},
    {"version", F_INFO},
    {"websearch_to_tsquery", F_FTS},
    {"width_bucket", F_MATH},
};

#define N_SAFE (sizeof safe_functions / sizeof safe_functions[0])

/* Does name[0..n) (not NUL-terminated) sort before (<0), equal (0) or
 * after (>0) the C string s? */
static int name_cmp(const char *name, size_t n, const char *s)
{
	size_t sn = strlen(s);
	int c = memcmp(name, s, n < sn ? n : sn);
	if (c)
		return c;
	return n < sn ? -1 : n > sn;
}

bool sqlroute_function_safe(const char *name, size_t len)
{
	size_t lo = 0, hi = N_SAFE;
	while (lo < hi) {
		size_t mid = lo + (hi - lo) / 2;
		int c = name_cmp(name, len, safe_functions[mid].name);
		if (c == 0)
			return true;
		if (c < 0)
			hi = mid;
		else
			lo = mid + 1;
	}
	return false;
}

bool sqlroute_safe_list_ok(void)
{
	for (size_t i = 1; i < N_SAFE; i++)
		if (strcmp(safe_functions[i - 1].name, safe_functions[i].name) >= 0)
			return false;
	return true;
}

/* ---- the hint ------------------------------------------------------------- */

static bool is_space(char c)
{
	return c == ' ' || c == '\t' || c == '\n' || c == '\r' || c == '\f' || c == '\v';
}

/* Does [p, end) start with word (lower case), in any case (ASCII)? */
static bool ci_prefix(const char *p, const char *end, const char *word)
{
	size_t n = strlen(word);
	if ((size_t)(end - p) < n)
		return false;
	for (size_t i = 0; i < n; i++) {
		char c = p[i];
		if (c >= 'A' && c <= 'Z')
			c = (char)(c + ('a' - 'A'));
		if (c != word[i])
			return false;
	}
	return true;
}

/* The hint a comment's text [p, end) spells: "pgfleet:primary" or
 * "pgfleet:standby", any case, blanks allowed around each word and the
 * colon.  Returns 1 (primary), 2 (standby) or 0. */
static int hint_word(const char *p, const char *end)
{
	while (p < end && is_space(*p))
		p++;
	while (end > p && is_space(end[-1]))
		end--;
	if (!ci_prefix(p, end, "pgfleet"))
		return 0;
	p += 7;
	while (p < end && is_space(*p))
		p++;
	if (p == end || *p != ':')
		return 0;
	p++;
	while (p < end && is_space(*p))
		p++;
	if ((size_t)(end - p) != 7)
		return 0;
	if (ci_prefix(p, end, "primary"))
		return 1;
	if (ci_prefix(p, end, "standby"))
		return 2;
	return 0;
}

/* The hint of the text's leading comments (before its first token): the
 * first comment that is a hint decides; other comments are skipped (nested
 * slash-star comments as PostgreSQL's lexer nests them).  This is the only
 * look at the text outside the parser, and it reads no further than the
 * leading blanks and comments. */
static int hint_of(const char *sql, size_t len)
{
	const char *p = sql, *end = sql + len;
	for (;;) {
		while (p < end && is_space(*p))
			p++;
		if (end - p < 2)
			return 0;
		if (p[0] == '-' && p[1] == '-') {
			const char *s = p + 2, *e = memchr(s, '\n', (size_t)(end - s));
			if (!e)
				e = end;
			int h = hint_word(s, e);
			if (h)
				return h;
			p = e;
		} else if (p[0] == '/' && p[1] == '*') {
			const char *s = p + 2, *q = s;
			unsigned depth = 1;
			while (q < end && depth) {
				if (q[0] == '/' && q + 1 < end && q[1] == '*') {
					depth++;
					q += 2;
				} else if (q[0] == '*' && q + 1 < end && q[1] == '/') {
					depth--;
					q += 2;
				} else {
					q++;
				}
			}
			if (depth)
				return 0; /* unclosed: the parser refuses the text */
			int h = hint_word(s, q - 2);
			if (h)
				return h;
			p = q;
		} else {
			return 0;
		}
	}
}

/* ---- reading the tree ----------------------------------------------------- */

enum stype {
	ST_NONE,
	ST_OTHER,
	ST_SELECT,
	ST_SHOW,
	ST_EXPLAIN,
	ST_TRANSACTION,
	ST_VARSET,
	ST_EXECUTE
};
enum field { FLD_OTHER, FLD_QUERY, FLD_OPTIONS, FLD_ARGS };
enum defname { DEF_OTHER, DEF_ANALYZE, DEF_READ_ONLY };
enum argval { ARG_NONE, ARG_FALSE, ARG_TRUE, ARG_OTHER };
enum vkind { VK_UNKNOWN, VK_VALUE, VK_DEFAULT, VK_RESET, VK_OTHER };

struct facts {
	unsigned nstmts;
	enum stype top, inner; /* the statement; EXPLAIN's statement */
	bool writes;           /* locking clause, INTO, data-modifying statement, unsafe call */
	enum field field;      /* the statement's field being read (depth 5) */
	bool in_def;           /* a DefElem of "options" is open */
	enum defname defname;
	enum argval arg;
	bool analyze;          /* EXPLAIN: ANALYZE (the last one given) */
	enum argval read_only; /* BEGIN: transaction_read_only (the last one given) */
	bool tx_begin;         /* TransactionStmt: BEGIN or START TRANSACTION */
	enum vkind vkind;      /* VariableSetStmt */
	bool route_name, is_local;
	unsigned nargs;
	bool arg_nonstring;
	const char *argv; /* the first argument's string (escaped as JSON) */
	size_t argn;
};

#define KEY(lit) (n == sizeof(lit) - 1 && memcmp(key, lit, sizeof(lit) - 1) == 0)

static bool ci_equal(const char *s, size_t n, const char *lit)
{
	return strlen(lit) == n && ci_prefix(s, s + n, lit);
}

static bool str_equal(const char *s, size_t n, const char *lit)
{
	return strlen(lit) == n && memcmp(s, lit, n) == 0;
}

/* Reads the JSON string that starts at *pp (at its '"'): its contents
 * [*s, *s + *n), *pp moved past it.  False when unterminated. */
static bool read_string(const char **pp, const char **s, size_t *n)
{
	const char *q = *pp + 1;
	*s = q;
	while (*q && *q != '"') {
		if (*q == '\\' && q[1])
			q++;
		q++;
	}
	if (!*q)
		return false;
	*n = (size_t)(q - *s);
	*pp = q + 1;
	return true;
}

/* The string value at val (just past a key's ':'), or false. */
static bool string_value(const char *val, const char **s, size_t *n)
{
	return *val == '"' && read_string(&val, s, n);
}

/* Is the "funcname" array at val ('[') a call of a safe function: one
 * listed name, bare or qualified with pg_catalog? */
static bool funcname_safe(const char *p)
{
	int depth = 0;
	unsigned parts = 0;
	const char *first = NULL, *last = NULL;
	size_t fn = 0, ln = 0;
	do {
		char c = *p;
		if (c == '[' || c == '{') {
			depth++;
			p++;
		} else if (c == ']' || c == '}') {
			depth--;
			p++;
		} else if (c == '"') {
			const char *s, *v;
			size_t n, vn;
			if (!read_string(&p, &s, &n))
				return false;
			if (*p == ':' && n == 4 && memcmp(s, "sval", 4) == 0 &&
			    string_value(p + 1, &v, &vn)) {
				if (++parts == 1) {
					first = v;
					fn = vn;
				}
				last = v;
				ln = vn;
			}
		} else if (c == '\0') {
			return false;
		} else {
			p++;
		}
	} while (depth > 0);
	if (parts == 1)
		return sqlroute_function_safe(last, ln);
	return parts == 2 && fn == 10 && memcmp(first, "pg_catalog", 10) == 0 &&
	       sqlroute_function_safe(last, ln);
}

static enum stype stype_of(const char *key, size_t n)
{
	if (KEY("SelectStmt"))
		return ST_SELECT;
	if (KEY("VariableShowStmt"))
		return ST_SHOW;
	if (KEY("ExplainStmt"))
		return ST_EXPLAIN;
	if (KEY("TransactionStmt"))
		return ST_TRANSACTION;
	if (KEY("VariableSetStmt"))
		return ST_VARSET;
	if (KEY("ExecuteStmt"))
		return ST_EXECUTE;
	return ST_OTHER;
}

/* The value of a DefElem's argument: EXPLAIN (ANALYZE off), BEGIN READ ONLY
 * (an A_Const 1).  As PostgreSQL's defGetBoolean reads it: no argument is
 * true, an integer is its value, a string "true"/"on"/"false"/"off". */
static void def_finish(struct facts *f)
{
	if (!f->in_def)
		return;
	if (f->defname == DEF_ANALYZE)
		f->analyze = f->arg != ARG_FALSE;
	else if (f->defname == DEF_READ_ONLY)
		f->read_only = f->arg;
	f->in_def = false;
}

static void on_def_key(struct facts *f, const char *key, size_t n, int depth, const char *val)
{
	const char *s;
	size_t sn;
	if (depth == 7) {
		def_finish(f);
		f->in_def = KEY("DefElem");
		f->defname = DEF_OTHER;
		f->arg = ARG_NONE;
		return;
	}
	if (!f->in_def)
		return;
	if (depth == 8 && KEY("defname") && string_value(val, &s, &sn)) {
		f->defname = ci_equal(s, sn, "analyze")                 ? DEF_ANALYZE
		             : ci_equal(s, sn, "transaction_read_only") ? DEF_READ_ONLY
		                                                        : DEF_OTHER;
	} else if (depth == 9) {
		/* the argument's node: Integer/Boolean with a zero value omitted */
		f->arg = KEY("Integer") || KEY("Boolean") ? ARG_FALSE : ARG_OTHER;
	} else if (depth >= 10 && (KEY("ival") || KEY("boolval"))) {
		if (*val == '{')
			f->arg = ARG_FALSE; /* A_Const's {"ival":{}}: zero */
		else if (*val == 't' || (*val >= '1' && *val <= '9') || *val == '-')
			f->arg = ARG_TRUE;
		else
			f->arg = ARG_FALSE;
	} else if (depth >= 10 && KEY("sval") && string_value(val, &s, &sn)) {
		f->arg = ci_equal(s, sn, "true") || ci_equal(s, sn, "on")     ? ARG_TRUE
		         : ci_equal(s, sn, "false") || ci_equal(s, sn, "off") ? ARG_FALSE
		                                                              : ARG_OTHER;
	}
}

static void on_set_key(struct facts *f, const char *key, size_t n, int depth, const char *val)
{
	const char *s;
	size_t sn;
	if (depth == 7) {
		f->nargs++;
		if (!KEY("A_Const"))
			f->arg_nonstring = true;
	} else if (depth == 8 && !KEY("sval") && !KEY("location")) {
		f->arg_nonstring = true; /* ival, fval, boolval, bsval, isnull */
	} else if (depth == 9 && KEY("sval") && f->nargs == 1 && string_value(val, &s, &sn)) {
		f->argv = s;
		f->argn = sn;
	}
}

static void on_key(struct facts *f, const char *key, size_t n, int depth, const char *val)
{
	bool upper = *key >= 'A' && *key <= 'Z';
	const char *s;
	size_t sn;

	if (depth == 3) {
		if (KEY("stmt"))
			f->nstmts++;
		return;
	}
	if (f->nstmts != 1)
		return; /* none yet, or several: the primary anyway */
	if (depth == 4) {
		if (upper)
			f->top = stype_of(key, n);
		return;
	}
	if (depth == 5) {
		def_finish(f);
		f->field = KEY("query")     ? FLD_QUERY
		           : KEY("options") ? FLD_OPTIONS
		           : KEY("args")    ? FLD_ARGS
		                            : FLD_OTHER;
		if (f->top == ST_TRANSACTION && KEY("kind") && string_value(val, &s, &sn)) {
			f->tx_begin = str_equal(s, sn, "TRANS_STMT_BEGIN") ||
			              str_equal(s, sn, "TRANS_STMT_START");
		} else if (f->top == ST_SHOW && KEY("name") && string_value(val, &s, &sn)) {
			f->route_name = ci_equal(s, sn, "pgfleet.route");
		} else if (f->top == ST_VARSET) {
			if (KEY("kind") && string_value(val, &s, &sn))
				f->vkind = str_equal(s, sn, "VAR_SET_VALUE")     ? VK_VALUE
				           : str_equal(s, sn, "VAR_SET_DEFAULT") ? VK_DEFAULT
				           : str_equal(s, sn, "VAR_RESET")       ? VK_RESET
				                                                 : VK_OTHER;
			else if (KEY("name") && string_value(val, &s, &sn))
				f->route_name = ci_equal(s, sn, "pgfleet.route");
			else if (KEY("is_local"))
				f->is_local = *val == 't';
		}
		/* no return: a field name can be one of the keys below */
	}
	if (f->field == FLD_OPTIONS && depth > 5 &&
	    (f->top == ST_EXPLAIN || f->top == ST_TRANSACTION))
		on_def_key(f, key, n, depth, val);
	else if (f->field == FLD_ARGS && depth > 5 && f->top == ST_VARSET)
		on_set_key(f, key, n, depth, val);
	if (depth == 6 && upper && f->field == FLD_QUERY && f->top == ST_EXPLAIN &&
	    f->inner == ST_NONE)
		f->inner = stype_of(key, n);
	if (KEY("lockingClause") || KEY("LockingClause") || KEY("intoClause") ||
	    KEY("IntoClause") || KEY("InsertStmt") || KEY("UpdateStmt") || KEY("DeleteStmt") ||
	    KEY("MergeStmt"))
		f->writes = true;
	else if (KEY("funcname") && (*val != '[' || !funcname_safe(val)))
		f->writes = true;
}

/* One pass over the tree.  False when the JSON is not what libpg_query
 * writes (unbalanced, unterminated): the caller then says PRIMARY. */
static bool scan_tree(const char *p, struct facts *f)
{
	int depth = 0;
	while (*p) {
		char c = *p;
		if (c == '{' || c == '[') {
			depth++;
			p++;
		} else if (c == '}' || c == ']') {
			if (--depth < 0)
				return false;
			p++;
		} else if (c == '"') {
			const char *s;
			size_t n;
			if (!read_string(&p, &s, &n))
				return false;
			if (*p == ':')
				on_key(f, s, n, depth, p + 1);
		} else {
			p++;
		}
	}
	def_finish(f);
	return depth == 0;
}

static enum sqlroute_pref pref_of(const struct facts *f)
{
	switch (f->vkind) {
	case VK_DEFAULT:
	case VK_RESET:
		return SQLROUTE_PREF_AUTO;
	case VK_VALUE:
		if (f->nargs != 1 || f->arg_nonstring || !f->argv)
			return SQLROUTE_PREF_INVALID;
		if (ci_equal(f->argv, f->argn, "auto"))
			return SQLROUTE_PREF_AUTO;
		if (ci_equal(f->argv, f->argn, "primary"))
			return SQLROUTE_PREF_PRIMARY;
		if (ci_equal(f->argv, f->argn, "standby"))
			return SQLROUTE_PREF_STANDBY;
		return SQLROUTE_PREF_INVALID;
	default:
		return SQLROUTE_PREF_INVALID; /* SET ... FROM CURRENT */
	}
}

static void decide(const char *tree, struct sqlroute_answer *out)
{
	struct facts f = {0};
	if (!scan_tree(tree, &f) || f.nstmts != 1)
		return;
	switch (f.top) {
	case ST_SELECT:
		if (!f.writes)
			out->cls = SQLROUTE_READ;
		break;
	case ST_SHOW:
		out->cls = f.route_name ? SQLROUTE_SET_ROUTE : SQLROUTE_READ;
		out->show = f.route_name;
		break;
	case ST_EXPLAIN:
		/* Without ANALYZE nothing runs: a standby plans anything.  EXPLAIN
		 * EXECUTE names a prepared statement of the session: the primary's
		 * connection is where the client's statements are. */
		if (f.inner == ST_EXECUTE)
			break;
		if (!f.analyze || (f.inner == ST_SELECT && !f.writes))
			out->cls = SQLROUTE_READ;
		break;
	case ST_TRANSACTION:
		if (f.tx_begin && f.read_only == ARG_TRUE)
			out->cls = SQLROUTE_BEGIN_READ;
		break;
	case ST_VARSET:
		if (f.route_name) {
			out->cls = SQLROUTE_SET_ROUTE;
			out->pref = (uint8_t)pref_of(&f);
			out->local = f.is_local;
			out->reset = f.vkind == VK_RESET;
		}
		break;
	default:
		break;
	}
}

/* PRIMARY is a reserved word: `SET pgfleet.route = primary` is a syntax
 * error to PostgreSQL, at the word.  When the parser stops at a bare
 * "primary", the text is parsed again with the word quoted, and taken only
 * if it then is a SET of pgfleet.route.  cursorpos counts characters
 * (UTF-8) from 1. */
static void retry_primary(const char *sql, size_t len, int cursorpos, struct sqlroute_answer *out)
{
	if (cursorpos < 1)
		return;
	size_t at = 0;
	for (int chars = 1; at < len && chars < cursorpos; chars++)
		for (at++; at < len && ((unsigned char)sql[at] & 0xC0) == 0x80; at++)
			;
	if (len - at < 7 || !ci_prefix(sql + at, sql + len, "primary"))
		return;
	if (at + 7 < len) {
		unsigned char c = (unsigned char)sql[at + 7];
		if ((unsigned)((c | 0x20) - 'a') < 26u || (unsigned)(c - '0') < 10u || c == '_' ||
		    c == '$' || c >= 0x80)
			return;
	}
	char *copy = malloc(len + 3);
	if (!copy)
		return;
	memcpy(copy, sql, at);
	copy[at] = '\'';
	memcpy(copy + at + 1, sql + at, 7);
	copy[at + 8] = '\'';
	memcpy(copy + at + 9, sql + at + 7, len - at - 7);
	copy[len + 2] = '\0';
	parses++;
	PgQueryParseResult r = pg_query_parse(copy);
	struct sqlroute_answer again = {0};
	if (!r.error && r.parse_tree)
		decide(r.parse_tree, &again);
	pg_query_free_parse_result(r);
	free(copy);
	if (again.cls == SQLROUTE_SET_ROUTE)
		*out = again;
}

void sqlroute_classify(const char *sql, size_t len, size_t max_len, struct sqlroute_answer *out)
{
	memset(out, 0, sizeof *out);
	int hint = hint_of(sql, len);
	if (hint) {
		out->cls = hint == 1 ? SQLROUTE_PRIMARY : SQLROUTE_READ;
		out->hinted = true;
		return;
	}
	/* The parser reads a C string: a NUL inside would hide the rest. */
	if (len == 0 || len > max_len || memchr(sql, '\0', len))
		return;
	parses++;
	PgQueryParseResult r = pg_query_parse(sql);
	if (r.error)
		retry_primary(sql, len, r.error->cursorpos, out);
	else if (r.parse_tree)
		decide(r.parse_tree, out);
	pg_query_free_parse_result(r);
}

/* ---- the cache ------------------------------------------------------------ */

/*
 * Set-associative: a text's hash picks a set of up to CACHE_WAYS entries;
 * a hit is the hash, then one length and memcmp compare (a collision never
 * answers for another text).  A full set evicts by CLOCK (a hit sets the
 * entry's bit; the hand clears bits until it finds one clear).  The text
 * buffer of an evicted entry is reused when big enough: memory is only
 * allocated on a miss, never more than max_len (rounded up) per entry.
 */
#define CACHE_WAYS 4
#define CACHE_MAX_ENTRIES (1u << 20)

struct route_entry {
	uint64_t hash;
	char *text;
	uint32_t len, cap;
	struct sqlroute_answer answer;
	bool used, ref;
	bool skeleton; /* keyed by a skeleton: never answers an exact key */
};

struct route_cache {
	struct route_entry *slots;
	uint8_t *hands;
	unsigned entries; /* as asked for (the key of a change) */
	unsigned ways, sets;
	uint64_t seed;
};

static THREAD_LOCAL struct route_cache cache;
/* The skeleton being built (see skeleton()): max_len bytes, per thread. */
static THREAD_LOCAL char *sk_buf;
static THREAD_LOCAL size_t sk_cap;

/* A word-at-a-time multiply-xorshift hash: about a cycle a byte less than
 * FNV-1a's byte loop on pgbench's texts.  Seeded per thread at the cache's
 * creation, so colliding texts cannot be computed ahead of time. */
static inline uint64_t text_hash(const char *s, size_t n, uint64_t seed)
{
	uint64_t h = seed ^ ((uint64_t)n * 0x9E3779B97F4A7C15ull);
	const char *end = s + n;
	bool short_text = n < 8;
	while (n >= 8) {
		uint64_t w;
		memcpy(&w, s, 8);
		h = (h ^ w) * 0xff51afd7ed558ccdull;
		h ^= h >> 32;
		s += 8;
		n -= 8;
	}
	if (n) {
		/* the tail: the text's last eight bytes (a fixed-size load; they
		 * overlap the last word), or its few bytes one by one */
		uint64_t w = 0;
		if (!short_text)
			memcpy(&w, end - 8, 8);
		else
			for (size_t i = 0; i < n; i++)
				w |= (uint64_t)(unsigned char)s[i] << (8 * i);
		h = (h ^ w) * 0xc4ceb9fe1a85ec53ull;
		h ^= h >> 29;
	}
	h ^= h >> 33;
	h *= 0xff51afd7ed558ccdull;
	h ^= h >> 33;
	return h;
}

void sqlroute_cache_free(void)
{
	if (cache.slots)
		for (size_t i = 0; i < (size_t)cache.sets * cache.ways; i++)
			free(cache.slots[i].text);
	free(cache.slots);
	free(cache.hands);
	memset(&cache, 0, sizeof cache);
	free(sk_buf);
	sk_buf = NULL;
	sk_cap = 0;
}

static bool cache_create(unsigned entries)
{
	sqlroute_cache_free();
	unsigned size = entries > CACHE_MAX_ENTRIES ? CACHE_MAX_ENTRIES : entries;
	unsigned ways = size < CACHE_WAYS ? size : CACHE_WAYS;
	unsigned sets = size / ways;
	cache.slots = calloc((size_t)sets * ways, sizeof *cache.slots);
	cache.hands = calloc(sets, 1);
	if (!cache.slots || !cache.hands) {
		sqlroute_cache_free();
		return false;
	}
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	cache.seed = text_hash((const char *)&ts, sizeof ts, (uint64_t)(uintptr_t)&cache);
	cache.entries = entries; /* as asked: the next call compares it */
	cache.ways = ways;
	cache.sets = sets;
	return true;
}

/*
 * The cache's key for texts that differ only in their literals.  Drivers
 * and ORMs that do not bind parameters (pgbench -S, for one) send a new
 * text per value: keyed by the exact text, every statement would be a
 * parse.  The skeleton is the text with each digit of a number (a digit
 * run that is not part of a word) written as 0 and each byte of a plain
 * string's contents as x, so texts whose literals differ only in value (not
 * in length) share it.  The class never depends on those values in a statement that
 * starts with SELECT, WITH, VALUES, TABLE, INSERT, UPDATE, DELETE or MERGE
 * (the classifier reads function names, clauses and statement kinds; the
 * values it reads, EXPLAIN's and BEGIN's options and SET pgfleet.route's,
 * are in other statements), so one parse answers for all.  The scan knows
 * just enough of PostgreSQL's lexer to be exact or give up: anything it
 * does not read with certainty (a comment, which may hold a hint, a
 * backslash, a dollar quote or a '$' in a word, an unterminated quote)
 * leaves the text to the exact key.  An entry says which kind of key it
 * has: a skeleton never answers for an exact text that happens to look the
 * same (a text may hold any byte but NUL), nor the other way round.
 */
enum { SK_PLAIN, SK_WORD, SK_DIGIT, SK_QUOTE, SK_DQUOTE, SK_STOP, SK_DASH, SK_SLASH };

/* Each byte's SK_ class, as digits in enum order: letters, '_' and bytes
 * from 0x80 (PostgreSQL's identifier characters) SK_WORD; digits; the two
 * quotes; '\\', '$' and NUL stop the scan; '-' and '/' may open a
 * comment.  (Generated; test_sqlroute.c checks it against that rule.) */
static const char sk_table[257] =
    "5000000000000000000000000000000000405003000006072222222222000000"
    "0111111111111111111111111110500101111111111111111111111111100000"
    "1111111111111111111111111111111111111111111111111111111111111111"
    "1111111111111111111111111111111111111111111111111111111111111111";
#define sk_class(c) ((uint8_t)(sk_table[(unsigned char)(c)] - '0'))



static bool sk_leading_keyword(const char *s, size_t n)
{
	size_t i = 0;
	while (i < n && (s[i] == ' ' || s[i] == '\t' || s[i] == '\n' || s[i] == '\r'))
		i++;
	size_t w = i;
	while (w < n && sk_class(s[w]) == SK_WORD)
		w++;
	const char *k;
	switch (s[i] | 0x20) { /* the first letter picks the one candidate */
	case 's':
		k = "select";
		break;
	case 'w':
		k = "with";
		break;
	case 'v':
		k = "values";
		break;
	case 't':
		k = "table";
		break;
	case 'i':
		k = "insert";
		break;
	case 'u':
		k = "update";
		break;
	case 'd':
		k = "delete";
		break;
	case 'm':
		k = "merge";
		break;
	default:
		return false;
	}
	size_t kn = strlen(k);
	if (kn != w - i)
		return false;
	for (size_t j = 1; j < kn; j++) /* ASCII letters: case folds with 0x20 */
		if ((s[i + j] | 0x20) != k[j])
			return false;
	return true;
}

/* The bytes the skeleton scan stops at: digits, both quotes, '\\', '$',
 * NUL, '-' and '/' (bit i for the byte p[i]); sixteen at a time with SSE2. */
#if defined(__SSE2__)
#include <emmintrin.h>
static inline uint32_t sk_marks_at(const char *p)
{
	__m128i v = _mm_loadu_si128((const __m128i *)(const void *)p);
	__m128i digit = _mm_and_si128(_mm_cmpgt_epi8(v, _mm_set1_epi8('0' - 1)),
				      _mm_cmplt_epi8(v, _mm_set1_epi8('9' + 1)));
	__m128i q = _mm_or_si128(_mm_cmpeq_epi8(v, _mm_set1_epi8('\'')),
				 _mm_cmpeq_epi8(v, _mm_set1_epi8('"')));
	__m128i stop = _mm_or_si128(_mm_or_si128(_mm_cmpeq_epi8(v, _mm_set1_epi8('\\')),
						 _mm_cmpeq_epi8(v, _mm_set1_epi8('$'))),
				    _mm_cmpeq_epi8(v, _mm_setzero_si128()));
	__m128i comment = _mm_or_si128(_mm_cmpeq_epi8(v, _mm_set1_epi8('-')),
				       _mm_cmpeq_epi8(v, _mm_set1_epi8('/')));
	return (uint32_t)_mm_movemask_epi8(
	    _mm_or_si128(_mm_or_si128(digit, q), _mm_or_si128(stop, comment)));
}
#else
static inline uint32_t sk_marks_at(const char *p)
{
	uint32_t bits = 0;
	for (unsigned i = 0; i < 16; i++)
		if (sk_class(p[i]) > SK_WORD)
			bits |= 1u << i;
	return bits;
}
#endif

/* The marks of sql[base .. min(base + 16, n)), reading nothing past n. */
static inline uint32_t sk_marks_from(const char *sql, size_t n, size_t base)
{
	if (n - base >= 16)
		return sk_marks_at(sql + base);
	size_t rem = n - base;
	if (n >= 16)
		return sk_marks_at(sql + n - 16) >> (16 - rem);
	char tail[16];
	memset(tail, 'x', sizeof tail);
	memcpy(tail, sql + base, rem);
	return sk_marks_at(tail) & ((1u << rem) - 1);
}

static inline bool sk_wordish(unsigned char c)
{
	return sk_class(c) == SK_WORD || sk_class(c) == SK_DIGIT || c == '$';
}

/*
 * The skeleton of sql[0..n) in sk_buf: the text with each
 * digit of a number written 0 and each byte inside a plain string written
 * x (lengths kept: a copy, then a few bytes changed).  Its length, or 0:
 * not one of the statements above, or a text the scan does not read with
 * certainty.
 */
static size_t skeleton(const char *sql, size_t n, size_t max_len)
{
	if (!sk_leading_keyword(sql, n))
		return 0;
	if (sk_cap < n + 1) {
		size_t cap = max_len + 1;
		char *b = cap >= n + 1 ? malloc(cap) : NULL;
		if (!b)
			return 0;
		free(sk_buf);
		sk_buf = b;
		sk_cap = cap;
	}
	char *out = sk_buf;
	memcpy(out, sql, n);
	size_t i = 0;
	while (i < n) {
		uint32_t m = sk_marks_from(sql, n, i);
		if (!m) {
			i += 16;
			continue;
		}
		i += (size_t)__builtin_ctz(m);
		unsigned char c = (unsigned char)sql[i];
		unsigned char prev = i ? (unsigned char)sql[i - 1] : ' ';
		size_t e = i + 1;
		switch (sk_class(c)) {
		case SK_DIGIT:
			while (e < n && sk_class(sql[e]) == SK_DIGIT)
				e++;
			if (!sk_wordish(prev) && (e == n || !sk_wordish((unsigned char)sql[e])))
				memset(out + i, '0', e - i);
			break;
		case SK_QUOTE:
		case SK_DQUOTE:
			/* to the closing quote; a doubled one is inside */
			for (;;) {
				const char *q = memchr(sql + e, c, n - e);
				if (!q || memchr(sql + e, '\\', (size_t)(q - (sql + e))))
					return 0; /* unterminated, or a backslash: E'' rules */
				e = (size_t)(q - sql) + 1;
				if (e < n && (unsigned char)sql[e] == c) {
					e++;
					continue;
				}
				break;
			}
			if (c == '\'' && !sk_wordish(prev)) /* not E'', B'', X'', N'', U&'' */
				memset(out + i + 1, 'x', e - i - 2);
			break;
		case SK_DASH:
		case SK_SLASH:
			if (e < n && sql[e] == (c == '-' ? '-' : '*'))
				return 0; /* a comment */
			break;
		default: /* SK_STOP */
			return 0;
		}
		i = e;
	}
	return n;
}

static bool cache_lookup(const char *key, size_t klen, uint64_t h, bool skel,
			 struct sqlroute_answer *out)
{
	struct route_entry *set =
	    &cache.slots[(size_t)(((h >> 32) * (uint64_t)cache.sets) >> 32) * cache.ways];
	for (unsigned w = 0; w < cache.ways; w++) {
		struct route_entry *e = &set[w];
		if (e->hash == h && e->len == klen && e->used && e->skeleton == skel &&
		    memcmp(e->text, key, klen) == 0) {
			if (!e->ref)
				e->ref = true;
			hits++;
			*out = e->answer;
			return true;
		}
	}
	return false;
}

static void cache_store(const char *key, size_t klen, uint64_t h, bool skel, size_t max_len,
			const struct sqlroute_answer *answer)
{
	size_t si = (size_t)(((h >> 32) * (uint64_t)cache.sets) >> 32);
	struct route_entry *set = &cache.slots[si * cache.ways], *victim = NULL;
	for (unsigned w = 0; w < cache.ways && !victim; w++)
		if (!set[w].used)
			victim = &set[w];
	while (!victim) {
		struct route_entry *e = &set[cache.hands[si]];
		cache.hands[si] = (uint8_t)((cache.hands[si] + 1) % cache.ways);
		if (e->ref)
			e->ref = false;
		else
			victim = e;
	}
	if (victim->cap < klen) {
		size_t cap = (klen + 31) & ~(size_t)31;
		if (cap > max_len + 1 || cap > UINT32_MAX)
			cap = klen;
		char *text = malloc(cap);
		if (!text)
			return; /* not cached: the answer stands */
		free(victim->text);
		victim->text = text;
		victim->cap = (uint32_t)cap;
	}
	memcpy(victim->text, key, klen);
	victim->len = (uint32_t)klen;
	victim->hash = h;
	victim->answer = *answer;
	victim->used = true;
	victim->ref = false;
	victim->skeleton = skel;
}

void sqlroute_classify_cached(const char *sql, size_t len, size_t max_len, unsigned entries,
                              struct sqlroute_answer *out)
{
	if (entries == 0 || len == 0 || len > max_len || len > UINT32_MAX) {
		if (entries == 0 && cache.slots)
			sqlroute_cache_free(); /* the setting went to 0: give the memory back */
		sqlroute_classify(sql, len, max_len, out);
		return;
	}
	if (cache.entries != entries && !cache_create(entries)) {
		sqlroute_classify(sql, len, max_len, out);
		return;
	}
	size_t sk = skeleton(sql, len, max_len);
	const char *key = sk ? sk_buf : sql;
	size_t klen = sk ? sk : len;
	uint64_t h = text_hash(key, klen, cache.seed);
	if (cache_lookup(key, klen, h, sk != 0, out))
		return;
	sqlroute_classify(sql, len, max_len, out);
	/* A skeleton answers for every text it stands for: only a class that
	 * cannot depend on the values (SET pgfleet.route's does; a hint is
	 * in a comment, which has no skeleton anyway). */
	if (sk && ((out->cls != SQLROUTE_READ && out->cls != SQLROUTE_PRIMARY) || out->hinted))
		return;
	cache_store(key, klen, h, sk != 0, max_len, out);
}
