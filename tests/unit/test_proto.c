/*
 * test_proto.c: the wire-protocol builders and body reader (proto.c), the
 * input buffers and output queue (iobuf.c); parameter sets are in
 * test_params.c.
 *
 * Builders are compared byte for byte with messages written out by hand from
 * the PostgreSQL "Message Formats" section.  Bodies handed to the reader and
 * the error parser are heap copies of their exact size, so under valgrind any
 * read past the end is reported.  Fixed-size outputs (quoted literals) sit
 * in front of a canary that must survive.
 */
#include "harness.h"

#include "iobuf.h"
#include "proto.h"

#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define ARRAY_LEN(a) (sizeof(a) / sizeof((a)[0]))
/* A string literal with embedded NULs as (pointer, byte count). */
#define BYTES(lit) lit, sizeof(lit) - 1

/* A heap copy of exactly n bytes (one byte for n == 0, so never NULL). */
static uint8_t *heap_copy(const void *p, size_t n)
{
	uint8_t *b = malloc(n ? n : 1);
	if (!b)
		abort();
	if (n)
		memcpy(b, p, n);
	return b;
}

static void dump_diff(const char *name, const uint8_t *got, size_t got_len, const char *want,
                      size_t want_len)
{
	fprintf(stderr, "  %s: want %zu bytes, got %zu\n  want:", name, want_len, got_len);
	for (size_t i = 0; i < want_len; i++)
		fprintf(stderr, " %02x", (unsigned char)want[i]);
	fprintf(stderr, "\n  got: ");
	for (size_t i = 0; i < got_len; i++)
		fprintf(stderr, " %02x", got[i]);
	fprintf(stderr, "\n");
}

/* ---- builders ------------------------------------------------------------ */

static void b_error(struct wbuf *w)
{
	proto_error(w, "FATAL", "28P01", "bad");
}

static void b_error_empty(struct wbuf *w)
{
	proto_error(w, "ERROR", "", "");
}

static void b_notice(struct wbuf *w)
{
	proto_notice(w, "01000", "hi");
}

static void b_auth_ok(struct wbuf *w)
{
	proto_auth(w, AUTH_REQ_OK, NULL, 0);
}

static void b_auth_cleartext(struct wbuf *w)
{
	proto_auth(w, AUTH_REQ_CLEARTEXT, NULL, 0);
}

static void b_auth_md5(struct wbuf *w)
{
	static const uint8_t salt[4] = {1, 2, 3, 4};
	proto_auth(w, AUTH_REQ_MD5, salt, sizeof salt);
}

static void b_auth_sasl_continue(struct wbuf *w)
{
	proto_auth(w, AUTH_REQ_SASL_CONTINUE, "r=abc", 5);
}

static void b_auth_sasl_final(struct wbuf *w)
{
	proto_auth(w, AUTH_REQ_SASL_FINAL, "v=xy", 4);
}

static void b_sasl_mechs(struct wbuf *w)
{
	proto_auth_sasl_mechs(w);
}

static void b_parameter_status(struct wbuf *w)
{
	proto_parameter_status(w, "TimeZone", "UTC");
}

static void b_parameter_status_empty(struct wbuf *w)
{
	proto_parameter_status(w, "application_name", "");
}

static void b_backend_key(struct wbuf *w)
{
	proto_backend_key(w, 0x01020304u, 0xdeadbeefu);
}

static void b_ready_idle(struct wbuf *w)
{
	proto_ready(w, 'I');
}

static void b_ready_xact(struct wbuf *w)
{
	proto_ready(w, 'T');
}

static void b_ready_failed(struct wbuf *w)
{
	proto_ready(w, 'E');
}

static void b_query(struct wbuf *w)
{
	proto_query(w, "SELECT 1");
}

static void b_query_empty(struct wbuf *w)
{
	proto_query(w, "");
}

static void b_password(struct wbuf *w)
{
	proto_password(w, "secret");
}

static void b_sasl_initial(struct wbuf *w)
{
	proto_sasl_initial(w, "SCRAM-SHA-256", "n,,n=,r=x", 9);
}

static void b_sasl_response(struct wbuf *w)
{
	proto_sasl_response(w, "c=biws", 6);
}

static void b_terminate(struct wbuf *w)
{
	proto_terminate(w);
}

static void b_startup(struct wbuf *w)
{
	static const char *const params[] = {"user", "bob", "database", "db", NULL};
	proto_startup(w, params);
}

static void b_startup_empty(struct wbuf *w)
{
	static const char *const params[] = {NULL};
	proto_startup(w, params);
}

/* DataRow by hand: Int16 column count, then Int32 length + bytes. */
static void b_low_level(struct wbuf *w)
{
	uint32_t m = proto_begin(w, 'D');
	proto_put_u16(w, 1);
	proto_put_u32(w, 2);
	proto_put_bytes(w, "hi", 2);
	proto_end(w, m);
}

static const struct build_case {
	const char *name;
	void (*build)(struct wbuf *w);
	char type; /* 0: no type byte (StartupMessage) */
	const char *expect;
	size_t len;
} build_cases[] = {
    {"ErrorResponse", b_error, 'E',
     BYTES("E\000\000\000\037"
           "SFATAL\0"
           "VFATAL\0"
           "C28P01\0"
           "Mbad\0"
           "\0")},
    {"ErrorResponse, empty code and message", b_error_empty, 'E',
     BYTES("E\000\000\000\027"
           "SERROR\0"
           "VERROR\0"
           "C\0"
           "M\0"
           "\0")},
    {"NoticeResponse", b_notice, 'N',
     BYTES("N\000\000\000\040"
           "SNOTICE\0"
           "VNOTICE\0"
           "C01000\0"
           "Mhi\0"
           "\0")},
    {"AuthenticationOk", b_auth_ok, 'R', BYTES("R\000\000\000\010\000\000\000\000")},
    {"AuthenticationCleartextPassword", b_auth_cleartext, 'R',
     BYTES("R\000\000\000\010\000\000\000\003")},
    {"AuthenticationMD5Password", b_auth_md5, 'R',
     BYTES("R\000\000\000\014\000\000\000\005\001\002\003\004")},
    {"AuthenticationSASLContinue", b_auth_sasl_continue, 'R',
     BYTES("R\000\000\000\015\000\000\000\013"
           "r=abc")},
    {"AuthenticationSASLFinal", b_auth_sasl_final, 'R',
     BYTES("R\000\000\000\014\000\000\000\014"
           "v=xy")},
    {"AuthenticationSASL", b_sasl_mechs, 'R',
     BYTES("R\000\000\000\027\000\000\000\012"
           "SCRAM-SHA-256\0"
           "\0")},
    {"ParameterStatus", b_parameter_status, 'S',
     BYTES("S\000\000\000\021"
           "TimeZone\0"
           "UTC\0")},
    {"ParameterStatus, empty value", b_parameter_status_empty, 'S',
     BYTES("S\000\000\000\026"
           "application_name\0"
           "\0")},
    {"BackendKeyData", b_backend_key, 'K',
     BYTES("K\000\000\000\014\001\002\003\004\336\255\276\357")},
    {"ReadyForQuery idle", b_ready_idle, 'Z', BYTES("Z\000\000\000\005I")},
    {"ReadyForQuery in transaction", b_ready_xact, 'Z', BYTES("Z\000\000\000\005T")},
    {"ReadyForQuery failed transaction", b_ready_failed, 'Z', BYTES("Z\000\000\000\005E")},
    {"Query", b_query, 'Q',
     BYTES("Q\000\000\000\015"
           "SELECT 1\0")},
    {"Query, empty", b_query_empty, 'Q', BYTES("Q\000\000\000\005\0")},
    {"PasswordMessage", b_password, 'p',
     BYTES("p\000\000\000\013"
           "secret\0")},
    {"SASLInitialResponse", b_sasl_initial, 'p',
     BYTES("p\000\000\000\037"
           "SCRAM-SHA-256\0"
           "\000\000\000\011"
           "n,,n=,r=x")},
    {"SASLResponse", b_sasl_response, 'p',
     BYTES("p\000\000\000\012"
           "c=biws")},
    {"Terminate", b_terminate, 'X', BYTES("X\000\000\000\004")},
    {"StartupMessage", b_startup, 0,
     BYTES("\000\000\000\036"
           "\000\003\000\000"
           "user\0bob\0"
           "database\0db\0"
           "\0")},
    {"StartupMessage, no parameters", b_startup_empty, 0,
     BYTES("\000\000\000\011"
           "\000\003\000\000"
           "\0")},
    {"DataRow via proto_begin/put/end", b_low_level, 'D',
     BYTES("D\000\000\000\014"
           "\000\001"
           "\000\000\000\002"
           "hi")},
};

static void test_builders_table(void)
{
	for (size_t i = 0; i < ARRAY_LEN(build_cases); i++) {
		const struct build_case *c = &build_cases[i];
		struct wbuf w = {0};
		c->build(&w);
		bool same = w.len == c->len && memcmp(w.data, c->expect, c->len) == 0;
		if (!same)
			dump_diff(c->name, w.data, w.len, c->expect, c->len);
		CHECK(same);
		/* The length field counts itself and the body, not the type byte. */
		size_t hdr = c->type ? 1 : 0;
		CHECK(w.len >= hdr + 4 && proto_get_u32(w.data + hdr) == w.len - hdr);
		CHECK(w.sent == 0);
		wbuf_free(&w);
	}
}

/* Every case appended to one queue, twice over with a large Query in between
 * (forcing the queue to grow): walking by the length fields must land on each
 * message's first byte and on the very end. */
static void test_builders_framing(void)
{
	enum { BIG = 3000 };
	char *big = malloc(BIG + 1);
	if (!big)
		abort();
	memset(big, 'x', BIG);
	big[BIG] = 0;

	struct wbuf w = {0};
	for (int round = 0; round < 2; round++) {
		for (size_t i = 0; i < ARRAY_LEN(build_cases); i++)
			build_cases[i].build(&w);
		if (round == 0)
			proto_query(&w, big);
	}
	CHECK(w.cap >= w.len);

	size_t pos = 0, walked = 0, mismatched = 0;
	bool big_ok = false;
	for (int round = 0; round < 2; round++) {
		for (size_t i = 0; i < ARRAY_LEN(build_cases) && pos < w.len; i++) {
			const struct build_case *c = &build_cases[i];
			size_t hdr = c->type ? 1 : 0;
			if (pos + hdr + 4 > w.len)
				break;
			if (c->type && w.data[pos] != (uint8_t)c->type)
				mismatched++;
			uint32_t len = proto_get_u32(w.data + pos + hdr);
			if (len != c->len - hdr || memcmp(w.data + pos, c->expect, c->len) != 0)
				mismatched++;
			pos += hdr + len;
			walked++;
		}
		if (round == 0 && pos + 5 <= w.len) {
			uint32_t len = proto_get_u32(w.data + pos + 1);
			big_ok = w.data[pos] == 'Q' && len == 4 + BIG + 1 &&
			         memcmp(w.data + pos + 5, big, BIG) == 0 && w.data[pos + len] == 0;
			pos += 1 + len;
		}
	}
	CHECK(walked == 2 * ARRAY_LEN(build_cases));
	CHECK(mismatched == 0);
	CHECK(big_ok);
	CHECK(pos == w.len);
	wbuf_free(&w);
	free(big);
}

/* A builder after everything queued was sent starts over at offset 0; with
 * bytes still unsent, it appends behind them. */
static void test_builders_after_send(void)
{
	struct wbuf w = {0};
	proto_query(&w, "SELECT 1");
	w.sent = w.len; /* all written to the socket */
	proto_ready(&w, 'I');
	CHECK(w.len == 6 && w.sent == 0);
	CHECK(memcmp(w.data, "Z\000\000\000\005I", 6) == 0);

	w.sent = 2; /* partly written */
	proto_terminate(&w);
	CHECK(w.len == 11 && w.sent == 2);
	CHECK(memcmp(w.data, "Z\000\000\000\005IX\000\000\000\004", 11) == 0);
	CHECK(wbuf_pending(&w));
	wbuf_free(&w);
}

/* ---- pkt_reader ---------------------------------------------------------- */

enum { RD_END, RD_U8, RD_U16, RD_U32, RD_STR, RD_BYTES };

struct rd_op {
	int op;
	uint32_t n;      /* RD_BYTES: count */
	uint32_t val;    /* RD_U8/16/32: expected value */
	const char *str; /* RD_STR/RD_BYTES: expected contents, NULL: expect NULL */
	bool bad;        /* r.bad afterwards */
	uint32_t pos;    /* r.pos afterwards */
};

static const struct rd_case {
	const char *name;
	const char *body;
	uint32_t len;
	struct rd_op ops[6];
} rd_cases[] = {
    {"every kind in bounds, then one byte too many",
     BYTES("\001\002\003\004\005\006\007"
           "ab\0"
           "xyz"),
     {{RD_U8, 0, 1, NULL, false, 1},
      {RD_U16, 0, 0x0203, NULL, false, 3},
      {RD_U32, 0, 0x04050607, NULL, false, 7},
      {RD_STR, 0, 0, "ab", false, 10},
      {RD_BYTES, 3, 0, "xyz", false, 13},
      {RD_U8, 0, 0, NULL, true, 13}}},
    {"high bit values",
     BYTES("\377\200\001\376\375\374\373"),
     {{RD_U8, 0, 0xff, NULL, false, 1},
      {RD_U16, 0, 0x8001, NULL, false, 3},
      {RD_U32, 0, 0xfefdfcfbu, NULL, false, 7}}},
    {"u8 on an empty body", BYTES(""), {{RD_U8, 0, 0, NULL, true, 0}}},
    {"u16 on an empty body", BYTES(""), {{RD_U16, 0, 0, NULL, true, 0}}},
    {"u32 on an empty body", BYTES(""), {{RD_U32, 0, 0, NULL, true, 0}}},
    {"str on an empty body", BYTES(""), {{RD_STR, 0, 0, NULL, true, 0}}},
    {"bytes(1) on an empty body", BYTES(""), {{RD_BYTES, 1, 0, NULL, true, 0}}},
    {"bytes(0) on an empty body", BYTES(""), {{RD_BYTES, 0, 0, "", false, 0}}},
    {"u16 with one byte left", BYTES("\001"), {{RD_U16, 0, 0, NULL, true, 0}}},
    {"u32 with three bytes left", BYTES("\001\002\003"), {{RD_U32, 0, 0, NULL, true, 0}}},
    {"u32 after a u8 leaves three",
     BYTES("\011\001\002\003"),
     {{RD_U8, 0, 9, NULL, false, 1}, {RD_U32, 0, 0, NULL, true, 1}}},
    {"unterminated string", BYTES("abc"), {{RD_STR, 0, 0, NULL, true, 0}}},
    {"string, then an unterminated one",
     BYTES("a\0bc"),
     {{RD_STR, 0, 0, "a", false, 2}, {RD_STR, 0, 0, NULL, true, 2}}},
    {"empty string at the end, then nothing left",
     BYTES("\0"),
     {{RD_STR, 0, 0, "", false, 1}, {RD_STR, 0, 0, NULL, true, 1}}},
    {"u32 exactly to the end",
     BYTES("\001\002\003\004"),
     {{RD_U32, 0, 0x01020304, NULL, false, 4},
      {RD_BYTES, 0, 0, "", false, 4},
      {RD_U8, 0, 0, NULL, true, 4}}},
    {"u16 exactly to the end",
     BYTES("\000\000\001\002"),
     {{RD_U16, 0, 0, NULL, false, 2},
      {RD_U16, 0, 0x0102, NULL, false, 4},
      {RD_U16, 0, 0, NULL, true, 4}}},
    {"bytes exactly to the end",
     BYTES("abcd"),
     {{RD_BYTES, 4, 0, "abcd", false, 4}, {RD_BYTES, 1, 0, NULL, true, 4}}},
    {"bytes one too many", BYTES("abcd"), {{RD_BYTES, 5, 0, NULL, true, 0}}},
    {"bytes with a huge count",
     BYTES("abcd"),
     {{RD_U8, 0, 'a', NULL, false, 1}, {RD_BYTES, 0xffffffffu, 0, NULL, true, 1}}},
    {"bad is sticky",
     BYTES("a\0b"),
     {{RD_U32, 0, 0, NULL, true, 0},
      {RD_U8, 0, 0, NULL, true, 0},
      {RD_U16, 0, 0, NULL, true, 0},
      {RD_STR, 0, 0, NULL, true, 0},
      {RD_BYTES, 0, 0, NULL, true, 0}}},
};

static void test_reader_table(void)
{
	for (size_t i = 0; i < ARRAY_LEN(rd_cases); i++) {
		const struct rd_case *c = &rd_cases[i];
		uint8_t *body = heap_copy(c->body, c->len);
		struct pkt_reader r = pkt_reader_init(body, c->len);
		CHECK(r.pos == 0 && r.len == c->len && !r.bad);
		for (size_t k = 0; k < ARRAY_LEN(c->ops) && c->ops[k].op != RD_END; k++) {
			const struct rd_op *op = &c->ops[k];
			uint32_t before = r.pos;
			bool ok = true;
			switch (op->op) {
			case RD_U8:
				ok = pkt_get_u8(&r) == op->val;
				break;
			case RD_U16:
				ok = pkt_get_u16(&r) == op->val;
				break;
			case RD_U32:
				ok = pkt_get_u32(&r) == op->val;
				break;
			case RD_STR: {
				const char *s = pkt_get_str(&r);
				if (op->str)
					ok = s == (const char *)body + before &&
					     strcmp(s, op->str) == 0;
				else
					ok = s == NULL;
				break;
			}
			case RD_BYTES: {
				const uint8_t *p = pkt_get_bytes(&r, op->n);
				if (op->str)
					ok = p == body + before && memcmp(p, op->str, op->n) == 0;
				else
					ok = p == NULL;
				break;
			}
			}
			if (!ok || r.bad != op->bad || r.pos != op->pos)
				fprintf(stderr, "  case \"%s\", op %zu: bad=%d pos=%u\n", c->name,
				        k, r.bad, r.pos);
			CHECK(ok);
			CHECK(r.bad == op->bad);
			CHECK(r.pos == op->pos);
		}
		free(body);
	}
}

/* ---- proto_parse_error --------------------------------------------------- */

static const struct perr_case {
	const char *name;
	const char *body;
	uint32_t len;
	bool ok;
	const char *severity, *sqlstate, *message; /* when ok */
} perr_cases[] = {
    {"well-formed",
     BYTES("SERROR\0VERROR\0C42P01\0Mrelation \"t\" does not exist\0"
           "P15\0Fparse_relation.c\0L1392\0Rparserok\0\0"),
     true, "ERROR", "42P01", "relation \"t\" does not exist"},
    {"V after a localized S wins", BYTES("SERREUR\0VERROR\0C23505\0Mdup\0\0"), true, "ERROR",
     "23505", "dup"},
    {"V before a localized S wins", BYTES("VFATAL\0SFATALE\0C28P01\0Mno\0\0"), true, "FATAL",
     "28P01", "no"},
    {"S alone", BYTES("SWARNING\0\0"), true, "WARNING", "", ""},
    {"no fields at all", BYTES("\0"), true, "", "", ""},
    {"only unknown fields", BYTES("Ddetail\0Hhint\0\0"), true, "", "", ""},
    {"message only", BYTES("Mjust this\0\0"), true, "", "", "just this"},
    {"fields after the terminator are not read", BYTES("Mfirst\0\0Msecond\0"), true, "", "",
     "first"},
    {"empty body", BYTES(""), false, NULL, NULL, NULL},
    {"no final terminator", BYTES("SERROR\0C42000\0Mx\0"), false, NULL, NULL, NULL},
    {"unterminated last value", BYTES("SERROR\0Mabc"), false, NULL, NULL, NULL},
    {"code with no value", BYTES("SERROR\0M"), false, NULL, NULL, NULL},
    {"unterminated first value", BYTES("SERR"), false, NULL, NULL, NULL},
};

static bool points_into(const char *s, const uint8_t *body, uint32_t len)
{
	return !*s || ((const uint8_t *)s >= body && (const uint8_t *)s < body + len);
}

static void test_parse_error_table(void)
{
	for (size_t i = 0; i < ARRAY_LEN(perr_cases); i++) {
		const struct perr_case *c = &perr_cases[i];
		uint8_t *body = heap_copy(c->body, c->len);
		struct pg_error e = {NULL, NULL, NULL};
		bool ok = proto_parse_error(body, c->len, &e);
		if (ok != c->ok)
			fprintf(stderr, "  case \"%s\": returned %d\n", c->name, ok);
		CHECK(ok == c->ok);
		if (c->ok) {
			CHECK_STR(e.severity, c->severity);
			CHECK_STR(e.sqlstate, c->sqlstate);
			CHECK_STR(e.message, c->message);
			CHECK(points_into(e.severity, body, c->len) &&
			      points_into(e.sqlstate, body, c->len) &&
			      points_into(e.message, body, c->len));
		}
		free(body);
	}
}

/* What proto_error and proto_notice write, proto_parse_error reads back. */
static void test_parse_error_round_trip(void)
{
	struct wbuf w = {0};
	proto_error(&w, "FATAL", "57P01", "terminating connection due to administrator command");
	uint8_t *body = heap_copy(w.data + 5, w.len - 5);
	struct pg_error e;
	CHECK(proto_parse_error(body, w.len - 5, &e));
	CHECK_STR(e.severity, "FATAL");
	CHECK_STR(e.sqlstate, "57P01");
	CHECK_STR(e.message, "terminating connection due to administrator command");
	/* One byte short of the body: the terminator is missing. */
	CHECK(!proto_parse_error(body, w.len - 6, &e));
	free(body);

	wbuf_reset(&w);
	proto_notice(&w, "00000", "note");
	body = heap_copy(w.data + 5, w.len - 5);
	CHECK(proto_parse_error(body, w.len - 5, &e));
	CHECK_STR(e.severity, "NOTICE");
	CHECK_STR(e.sqlstate, "00000");
	CHECK_STR(e.message, "note");
	free(body);
	wbuf_free(&w);
}

/* ---- proto_quote_literal ------------------------------------------------- */

#define CANARY 0x5a
#define SLACK 16

static const struct quote_case {
	const char *in, *out;
} quote_cases[] = {
    {"abc", "'abc'"}, {"it's", "'it''s'"}, {"'", "''''"}, {"''", "''''''"},
    {"a'", "'a'''"},  {"'a", "'''a'"},     {"", "''"},    {"Europe/Berlin", "'Europe/Berlin'"},
};

static void test_quote_literal_table(void)
{
	char area[64 + SLACK];
	for (size_t i = 0; i < ARRAY_LEN(quote_cases); i++) {
		const struct quote_case *c = &quote_cases[i];
		size_t out_len = strlen(c->out);

		/* Plenty of room. */
		size_t pos = 0;
		memset(area, CANARY, sizeof area);
		CHECK(proto_quote_literal(area, 64, &pos, c->in));
		CHECK_STR(area, c->out);
		CHECK(pos == out_len);

		/* Every size from 0 up: never a byte past buflen; when it succeeds
		 * the result is right and NUL-terminated inside the buffer; it must
		 * fail when the result cannot fit, and succeed with a byte to spare. */
		size_t overflow = 0, wrong = 0, refused = 0, accepted = 0, moved = 0;
		for (size_t buflen = 0; buflen <= out_len + 3; buflen++) {
			memset(area, CANARY, sizeof area);
			pos = 0;
			bool ok = proto_quote_literal(area, buflen, &pos, c->in);
			for (size_t k = buflen; k < sizeof area; k++)
				if ((unsigned char)area[k] != CANARY) {
					overflow++;
					fprintf(stderr, "  \"%s\": buflen %zu: wrote byte %zu\n",
					        c->in, buflen, k);
					break;
				}
			if (ok && (pos != out_len || memcmp(area, c->out, out_len + 1) != 0))
				wrong++;
			if (ok && buflen < out_len + 1)
				accepted++;
			if (!ok && buflen >= out_len + 2)
				refused++;
			if (!ok && pos != 0)
				moved++;
		}
		CHECK(overflow == 0);
		CHECK(wrong == 0);
		CHECK(accepted == 0);
		CHECK(refused == 0);
		CHECK(moved == 0);
	}
}

/* Appending behind text already in the buffer, and positions at or past the
 * end of the buffer. */
static void test_quote_literal_pos(void)
{
	char area[32 + SLACK];
	memset(area, CANARY, sizeof area);
	memcpy(area, "SET x = ", 8);
	size_t pos = 8;
	CHECK(proto_quote_literal(area, 32, &pos, "o'k"));
	CHECK(pos == 14);
	CHECK_STR(area, "SET x = 'o''k'");

	static const size_t starts[] = {31, 32, 33, 100};
	for (size_t i = 0; i < ARRAY_LEN(starts); i++) {
		memset(area, CANARY, sizeof area);
		pos = starts[i];
		CHECK(!proto_quote_literal(area, 32, &pos, "v"));
		CHECK(pos == starts[i]);
		bool intact = true;
		for (size_t k = 0; k < sizeof area; k++)
			intact = intact && (unsigned char)area[k] == CANARY;
		CHECK(intact);
	}
}

/* ---- iobuf --------------------------------------------------------------- */

static uint8_t pattern(uint32_t i)
{
	return (uint8_t)(i * 31u + 7u);
}

static void fill(struct iobuf *b, uint32_t n)
{
	for (uint32_t i = 0; i < n; i++)
		b->data[i] = pattern(i);
}

/* data[0, n) holds what was at [shift, shift + n) when filled. */
static bool holds(const struct iobuf *b, uint32_t n, uint32_t shift)
{
	for (uint32_t i = 0; i < n; i++)
		if (b->data[i] != pattern(i + shift))
			return false;
	return true;
}

static void test_iobuf_get_put(void)
{
	size_t f0, u0, f, u;
	iobuf_stats(&f0, &u0);

	struct iobuf *a = iobuf_get();
	struct iobuf *b = iobuf_get();
	CHECK(a && b && a != b);
	CHECK(a->size == IOBUF_SIZE && b->size == IOBUF_SIZE);
	CHECK(a->done == 0 && a->parsed == 0 && a->recv == 0 && a->next_free == NULL);
	CHECK(iobuf_sane(a) && iobuf_empty(a) && iobuf_unparsed(a) == 0 && iobuf_unsent(a) == 0);
	memset(a->data, 0xab, IOBUF_SIZE); /* the whole data area is ours */
	iobuf_stats(&f, &u);
	CHECK(u == u0 + 2);
	CHECK(f == f0 - (f0 < 2 ? f0 : 2));

	/* A standard buffer goes back on the free list and comes back out
	 * with its regions cleared. */
	a->done = 10;
	a->parsed = 20;
	a->recv = 30;
	size_t f1;
	iobuf_stats(&f1, &u);
	iobuf_put(a);
	iobuf_stats(&f, &u);
	CHECK(f == f1 + 1 && u == u0 + 1);
	struct iobuf *c = iobuf_get();
	CHECK(c == a);
	CHECK(c->done == 0 && c->parsed == 0 && c->recv == 0 && c->next_free == NULL);
	CHECK(c->size == IOBUF_SIZE);
	iobuf_stats(&f, &u);
	CHECK(f == f1 && u == u0 + 2);

	iobuf_put(NULL);
	size_t f2, u2;
	iobuf_stats(&f2, &u2);
	CHECK(f2 == f && u2 == u);

	iobuf_put(c);
	iobuf_put(b);
	iobuf_stats(&f, &u);
	CHECK(u == u0 && f == f1 + 2);
}

static const struct compact_case {
	const char *name;
	uint32_t done, parsed, recv;
} compact_cases[] = {
    {"empty", 0, 0, 0},
    {"nothing consumed", 0, 5, 10},
    {"all consumed", 10, 10, 10},
    {"consumed, unsent and unparsed", 3, 7, 12},
    {"nothing parsed beyond done", 50, 50, 90},
    {"full buffer", 100, 200, IOBUF_SIZE},
    {"everything consumed in a full buffer", IOBUF_SIZE, IOBUF_SIZE, IOBUF_SIZE},
};

static void test_iobuf_compact_table(void)
{
	for (size_t i = 0; i < ARRAY_LEN(compact_cases); i++) {
		const struct compact_case *c = &compact_cases[i];
		struct iobuf *b = iobuf_get();
		fill(b, c->recv);
		b->done = c->done;
		b->parsed = c->parsed;
		b->recv = c->recv;
		iobuf_compact(b);
		bool ok = b->done == 0 && b->parsed == c->parsed - c->done &&
		          b->recv == c->recv - c->done && b->size == IOBUF_SIZE;
		if (!ok)
			fprintf(stderr, "  case \"%s\": %u/%u/%u\n", c->name, b->done, b->parsed,
			        b->recv);
		CHECK(ok);
		CHECK(iobuf_sane(b));
		CHECK(holds(b, b->recv, c->done));
		iobuf_put(b);
	}
}

static const struct reserve_case {
	const char *name;
	uint32_t done, parsed, recv, need;
	bool ok, moved;
	uint32_t size, e_done, e_parsed, e_recv;
	size_t d_free; /* buffers added to the free list */
} reserve_cases[] = {
    {"fits as it is", 0, 100, 200, 1000, true, false, IOBUF_SIZE, 0, 100, 200, 0},
    {"fits exactly, no compaction", 50, 100, 200, IOBUF_SIZE - 100, true, false, IOBUF_SIZE, 50,
     100, 200, 0},
    {"need zero", 0, 0, 0, 0, true, false, IOBUF_SIZE, 0, 0, 0, 0},
    {"compaction makes room", 8000, 9000, 12000, 10000, true, false, IOBUF_SIZE, 0, 1000, 4000, 0},
    {"compaction makes exactly enough room", 4000, 4384, 5000, 16000, true, false, IOBUF_SIZE, 0,
     384, 1000, 0},
    {"everything consumed", IOBUF_SIZE, IOBUF_SIZE, IOBUF_SIZE, 5, true, false, IOBUF_SIZE, 0, 0, 0,
     0},
    {"grows into a larger buffer", 100, 200, IOBUF_SIZE, 20000, true, true, 20100, 0, 100,
     IOBUF_SIZE - 100, 1},
    {"grows one byte past standard", 0, 0, 10, IOBUF_SIZE + 1, true, true, IOBUF_SIZE + 1, 0, 0, 10,
     1},
    {"grows to the largest whole message", 0, 0, 10, IOBUF_MAX_WHOLE, true, true, IOBUF_MAX_WHOLE,
     0, 0, 10, 1},
    {"largest whole message behind parsed bytes", 10, 30, 40, IOBUF_MAX_WHOLE, true, true,
     20 + IOBUF_MAX_WHOLE, 0, 20, 30, 1},
    {"refuses more than the largest", 100, 200, 300, IOBUF_MAX_WHOLE + 1, false, false, IOBUF_SIZE,
     0, 100, 200, 0},
    {"refuses a huge need", 0, 0, 0, UINT32_MAX, false, false, IOBUF_SIZE, 0, 0, 0, 0},
    {"refuses a huge need behind parsed bytes", 0, 1, 1, UINT32_MAX, false, false, IOBUF_SIZE, 0, 1,
     1, 0},
};

static void test_iobuf_reserve_table(void)
{
	for (size_t i = 0; i < ARRAY_LEN(reserve_cases); i++) {
		const struct reserve_case *c = &reserve_cases[i];
		struct iobuf *b = iobuf_get();
		fill(b, c->recv);
		b->done = c->done;
		b->parsed = c->parsed;
		b->recv = c->recv;
		size_t f0, u0, f1, u1;
		iobuf_stats(&f0, &u0);

		struct iobuf *nb = b;
		bool ok = iobuf_reserve(&nb, c->need);
		iobuf_stats(&f1, &u1);
		bool regions = nb->size == c->size && nb->done == c->e_done &&
		               nb->parsed == c->e_parsed && nb->recv == c->e_recv;
		if (ok != c->ok || (nb != b) != c->moved || !regions)
			fprintf(stderr, "  case \"%s\": ok=%d moved=%d size=%u %u/%u/%u\n", c->name,
			        ok, nb != b, nb->size, nb->done, nb->parsed, nb->recv);
		CHECK(ok == c->ok);
		CHECK((nb != b) == c->moved);
		CHECK(regions);
		CHECK(iobuf_sane(nb));
		CHECK(holds(nb, nb->recv, c->done - c->e_done));
		if (ok)
			CHECK((uint64_t)nb->parsed + c->need <= nb->size);
		CHECK(u1 == u0 && f1 == f0 + c->d_free);
		if (c->moved)
			CHECK(nb->next_free == NULL);
		memset(nb->data, 0, nb->size); /* the whole data area is ours */
		bool standard = nb->size == IOBUF_SIZE;
		iobuf_put(nb);
		size_t f2, u2;
		iobuf_stats(&f2, &u2);
		/* A larger buffer is freed, a standard one recycled. */
		CHECK(u2 == u0 - 1 && f2 == f1 + (standard ? 1 : 0));
	}
}

/* A larger buffer that must grow again: the old one is freed (valgrind
 * reports it otherwise), not put on the free list. */
static void test_iobuf_regrow(void)
{
	struct iobuf *b = iobuf_get();
	fill(b, IOBUF_SIZE);
	b->done = 0;
	b->parsed = 0;
	b->recv = IOBUF_SIZE;
	CHECK(iobuf_reserve(&b, 20000));
	CHECK(b->size == 20000);
	fill(b, 20000);
	b->done = 1000;
	b->parsed = 5000;
	b->recv = 20000;
	size_t f0, u0, f1, u1;
	iobuf_stats(&f0, &u0);
	struct iobuf *old = b;
	CHECK(iobuf_reserve(&b, 16000)); /* exactly enough room after compaction */
	CHECK(b == old && b->parsed == 4000 && b->recv == 19000);
	CHECK(iobuf_reserve(&b, 100000));
	CHECK(b != old && b->size == 104000 && b->parsed == 4000 && b->recv == 19000);
	CHECK(holds(b, b->recv, 1000));
	iobuf_stats(&f1, &u1);
	CHECK(f1 == f0 && u1 == u0);
	iobuf_put(b);
	iobuf_stats(&f1, &u1);
	CHECK(f1 == f0 && u1 == u0 - 1);
}

/* ---- wbuf ---------------------------------------------------------------- */

static void test_wbuf(void)
{
	uint8_t src[1200];
	for (size_t i = 0; i < sizeof src; i++)
		src[i] = (uint8_t)(i * 13 + 1);

	struct wbuf w = {0};
	CHECK(!wbuf_pending(&w));
	wbuf_need(&w, 1);
	CHECK(w.data != NULL && w.cap == 512 && w.len == 0 && w.sent == 0);

	wbuf_put(&w, src, 300);
	CHECK(w.len == 300 && w.cap == 512);
	wbuf_put(&w, src + 300, 300);
	CHECK(w.len == 600 && w.cap == 1024);
	CHECK(memcmp(w.data, src, 600) == 0);

	wbuf_need(&w, 0);
	CHECK(w.len == 600 && w.cap == 1024);
	wbuf_need(&w, 5000); /* 5600 -> 8192 */
	CHECK(w.len == 600 && w.cap == 8192);
	CHECK(memcmp(w.data, src, 600) == 0);
	CHECK(wbuf_pending(&w));

	/* Partly sent: new bytes go behind the unsent ones. */
	w.sent = 100;
	wbuf_put(&w, src + 600, 600);
	CHECK(w.len == 1200 && w.sent == 100 && memcmp(w.data, src, 1200) == 0);

	/* All sent: the queue starts over at the front. */
	w.sent = w.len;
	CHECK(!wbuf_pending(&w));
	wbuf_put(&w, "ab", 2);
	CHECK(w.len == 2 && w.sent == 0 && w.cap == 8192 && memcmp(w.data, "ab", 2) == 0);

	uint8_t *data = w.data;
	wbuf_reset(&w);
	CHECK(w.len == 0 && w.sent == 0 && w.cap == 8192 && w.data == data);

	wbuf_free(&w);
	CHECK(w.data == NULL && w.len == 0 && w.cap == 0 && w.sent == 0);
	wbuf_free(&w); /* twice is harmless */
	CHECK(w.data == NULL);

	/* Reusable after free; a large put grows by doubling in one go. */
	uint8_t *large = malloc(100000);
	if (!large)
		abort();
	for (size_t i = 0; i < 100000; i++)
		large[i] = (uint8_t)(i * 7);
	wbuf_put(&w, large, 100000);
	CHECK(w.len == 100000 && w.cap == 131072 && memcmp(w.data, large, 100000) == 0);
	wbuf_free(&w);
	free(large);
}

/* wbuf_prepend: bytes a socket did not take go back in front of the queue
 * (batch.c), in the sent part when it has room, else by moving the rest. */
static void test_wbuf_prepend(void)
{
	struct wbuf w = {0};
	wbuf_prepend(&w, "x", 0); /* nothing: stays unallocated */
	CHECK(w.data == NULL && w.len == 0);

	wbuf_prepend(&w, "abc", 3); /* empty queue */
	CHECK(w.len == 3 && w.sent == 0 && memcmp(w.data, "abc", 3) == 0);

	wbuf_put(&w, "defgh", 5);
	w.sent = 5; /* "abcde" sent, "fgh" pending */
	wbuf_prepend(&w, "XY", 2); /* fits in the sent part */
	CHECK(w.sent == 3 && w.len == 8 && memcmp(w.data + w.sent, "XYfgh", 5) == 0);

	wbuf_prepend(&w, "0123456789", 10); /* more than the sent part */
	CHECK(w.sent == 0 && w.len == 15 && memcmp(w.data, "0123456789XYfgh", 15) == 0);

	w.sent = w.len; /* all sent */
	wbuf_prepend(&w, "Q", 1);
	CHECK(wbuf_pending(&w) && w.len - w.sent == 1 && w.data[w.sent] == 'Q');

	/* Growth: a prepend larger than the capacity keeps the pending bytes. */
	wbuf_reset(&w);
	wbuf_put(&w, "tail", 4);
	uint8_t big[3000];
	for (size_t i = 0; i < sizeof big; i++)
		big[i] = (uint8_t)(i * 11 + 3);
	wbuf_prepend(&w, big, sizeof big);
	CHECK(w.sent == 0 && w.len == 3004 && w.cap >= 3004);
	CHECK(memcmp(w.data, big, sizeof big) == 0 && memcmp(w.data + 3000, "tail", 4) == 0);
	wbuf_free(&w);
}

/* Server messages whose body the protocol fixes (issue 15, item 7). */
static const struct {
	uint8_t type;
	uint32_t len;
	bool ok;
} server_len_cases[] = {
    {'Z', 5, true},  {'Z', 4, false}, {'Z', 6, false}, {'K', 12, true}, {'K', 8, false},
    {'K', 13, false}, {'1', 4, true},  {'1', 5, false}, {'2', 5, false}, {'3', 5, false},
    {'n', 5, false}, {'I', 5, false}, {'s', 5, false}, {'c', 5, false}, {'D', 4, true},
    {'S', 100, true}, {'E', 3, false},
};

static void test_server_len_ok(void)
{
	for (size_t i = 0; i < ARRAY_LEN(server_len_cases); i++)
		CHECK(proto_server_len_ok(server_len_cases[i].type, server_len_cases[i].len) ==
		      server_len_cases[i].ok);
	char st = 0;
	CHECK(proto_ready_status((const uint8_t *)"I", 1, &st) && st == 'I');
	CHECK(proto_ready_status((const uint8_t *)"T", 1, &st) && st == 'T');
	CHECK(proto_ready_status((const uint8_t *)"E", 1, &st) && st == 'E');
	CHECK(!proto_ready_status((const uint8_t *)"X", 1, &st));
	CHECK(!proto_ready_status((const uint8_t *)"II", 2, &st));
	CHECK(!proto_ready_status((const uint8_t *)"", 0, &st));
}

int main(void)
{
	RUN(test_server_len_ok);
	RUN(test_builders_table);
	RUN(test_builders_framing);
	RUN(test_builders_after_send);
	RUN(test_reader_table);
	RUN(test_parse_error_table);
	RUN(test_parse_error_round_trip);
	RUN(test_quote_literal_table);
	RUN(test_quote_literal_pos);
	RUN(test_iobuf_get_put);
	RUN(test_iobuf_compact_table);
	RUN(test_iobuf_reserve_table);
	RUN(test_iobuf_regrow);
	RUN(test_wbuf);
	RUN(test_wbuf_prepend);
	return harness_finish();
}
