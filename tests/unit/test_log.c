/*
 * test_log.c: the log line formats (log.c).  Lines are captured by pointing
 * stderr at a temporary file.  Each case is a message with values that need
 * quoting or escaping, checked byte for byte in logfmt and JSON; a value too
 * long for a line must still give a line that closes (quote, brace,
 * newline), and bytes that are not UTF-8 must never reach a JSON line.
 */
#include "harness.h"

#include "log.h"

#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#define ARRAY_LEN(a) (sizeof(a) / sizeof((a)[0]))

static FILE *capture;
static int saved_stderr = -1;

static void capture_begin(void)
{
	fflush(stderr);
	capture = tmpfile();
	if (!capture)
		abort();
	saved_stderr = dup(STDERR_FILENO);
	dup2(fileno(capture), STDERR_FILENO);
}

/* Everything logged since capture_begin(), without the "ts=..." / {"ts":...}
 * prefix of the first line (the clock is not under test). */
static char *capture_end(void)
{
	dup2(saved_stderr, STDERR_FILENO);
	close(saved_stderr);
	long n = ftell(capture);
	char *buf = calloc(1, (size_t)(n > 0 ? n : 0) + 1);
	if (!buf)
		abort();
	rewind(capture);
	size_t got = fread(buf, 1, (size_t)(n > 0 ? n : 0), capture);
	buf[got] = 0;
	fclose(capture);
	return buf;
}

/* The line without its timestamp pair, for comparison. */
static const char *after_ts(const char *line, bool json)
{
	const char *p = strstr(line, json ? "\"level\"" : "level=");
	return p ? p : line;
}

static void test_logfmt_quoting(void)
{
	static const struct {
		const char *val, *want;
	} cases[] = {
		{"plain", "level=info msg=m k=plain\n"},
		{"", "level=info msg=m k=\"\"\n"},
		{"two words", "level=info msg=m k=\"two words\"\n"},
		{"a=b", "level=info msg=m k=\"a=b\"\n"},
		{"say \"hi\"", "level=info msg=m k=\"say \\\"hi\\\"\"\n"},
		{"back\\slash", "level=info msg=m k=\"back\\\\slash\"\n"},
		{"line\nbreak", "level=info msg=m k=\"line\\nbreak\"\n"},
		{"tab\there", "level=info msg=m k=\"tab\\u0009here\"\n"},
		{"caf\xc3\xa9", "level=info msg=m k=\"caf\xc3\xa9\"\n"},
		{"bad\xff", "level=info msg=m k=\"bad\xef\xbf\xbd\"\n"},
	};
	log_setup(0, false);
	for (size_t i = 0; i < ARRAY_LEN(cases); i++) {
		capture_begin();
		log_info("m", "k", cases[i].val, NULL);
		char *out = capture_end();
		CHECK(strncmp(out, "ts=", 3) == 0);
		CHECK_STR(after_ts(out, false), cases[i].want);
		free(out);
	}
}

static void test_json_escaping(void)
{
	static const struct {
		const char *val, *want;
	} cases[] = {
		{"plain", "\"level\":\"info\",\"msg\":\"m\",\"k\":\"plain\"}\n"},
		{"say \"hi\"", "\"level\":\"info\",\"msg\":\"m\",\"k\":\"say \\\"hi\\\"\"}\n"},
		{"line\nbreak\x01", "\"level\":\"info\",\"msg\":\"m\",\"k\":\"line\\nbreak\\u0001\"}\n"},
		{"\xc0\xaf", "\"level\":\"info\",\"msg\":\"m\",\"k\":\"\xef\xbf\xbd\xef\xbf\xbd\"}\n"},
		{"\xe2\x82\xac", "\"level\":\"info\",\"msg\":\"m\",\"k\":\"\xe2\x82\xac\"}\n"},
	};
	log_setup(0, true);
	for (size_t i = 0; i < ARRAY_LEN(cases); i++) {
		capture_begin();
		log_info("m", "k", cases[i].val, NULL);
		char *out = capture_end();
		CHECK(strncmp(out, "{\"ts\":\"", 7) == 0);
		CHECK_STR(after_ts(out, true), cases[i].want);
		free(out);
	}
}

/* Quotes in a line that are not escaped: an even count means every string
 * that opened also closed. */
static int bare_quotes(const char *s)
{
	int n = 0;
	for (const char *p = s; *p; p++) {
		if (*p == '\\' && p[1])
			p++;
		else if (*p == '"')
			n++;
	}
	return n;
}

static void test_long_lines_still_close(void)
{
	/* Every length around the line size, with escapes that take 2 and 6
	 * bytes, so that the cut falls on each of them in turn. */
	char *val = malloc(4096);
	if (!val)
		abort();
	for (int json = 0; json <= 1; json++) {
		log_setup(0, json);
		for (size_t len = 1900; len < 2100; len += 7) {
			for (size_t i = 0; i < len; i++)
				val[i] = "ab\"\\\x01\xc3\xa9"[i % 7];
			val[len] = 0;
			capture_begin();
			log_warn("long", "k", val, "after", "x", NULL);
			char *out = capture_end();
			size_t n = strlen(out);
			CHECK(n < 2048);
			CHECK(n > 0 && out[n - 1] == '\n');
			CHECK(strchr(out, '\n') == out + n - 1);
			CHECK(bare_quotes(out) % 2 == 0);
			if (json)
				CHECK(n >= 3 && strcmp(out + n - 3, "\"}\n") == 0);
			/* No half of a UTF-8 character. */
			size_t i = 0, k = 1;
			while (i < n && (k = utf8_seq_len((const unsigned char *)out + i)))
				i += k;
			CHECK(i == n);
			free(out);
		}
	}
	free(val);
}

static void test_utf8_seq_len(void)
{
	static const struct {
		const char *s;
		size_t want;
	} cases[] = {
		{"a", 1},           {"\xc3\xa9", 2},     {"\xe2\x82\xac", 3}, {"\xf0\x9f\x98\x80", 4},
		{"\xc0\xaf", 0},    {"\xc1\xbf", 0},     {"\xe0\x80\xaf", 0}, {"\xed\xa0\x80", 0},
		{"\xf4\x90\x80\x80", 0}, {"\xf5\x80\x80\x80", 0}, {"\x80", 0}, {"\xc3", 0},
		{"\xe2\x82", 0},    {"\xff", 0},
	};
	for (size_t i = 0; i < ARRAY_LEN(cases); i++)
		CHECK(utf8_seq_len((const unsigned char *)cases[i].s) == cases[i].want);
}

static void test_levels(void)
{
	log_setup(-1, false); /* -q: warnings and errors only */
	capture_begin();
	log_info("hidden", NULL);
	log_debug("hidden", NULL);
	log_warn("shown", NULL);
	char *out = capture_end();
	CHECK(strstr(out, "hidden") == NULL);
	CHECK(strstr(out, "level=warn msg=shown\n") != NULL);
	free(out);
}

static char *slurp(const char *path)
{
	FILE *f = fopen(path, "r");
	if (!f)
		return strdup("");
	char *buf = calloc(1, 8192);
	size_t n = fread(buf, 1, 8191, f);
	buf[n] = 0;
	fclose(f);
	return buf;
}

/* issue 18: the logfile gets every line stderr gets; opening again (log
 * rotation) sends the next lines to the new file, the old one keeps what
 * it had; "" stops it; a file that cannot be opened keeps the old one. */
static void test_logfile(void)
{
	char dir[] = "/tmp/pgfleet-test-log-XXXXXX";
	CHECK(mkdtemp(dir) != NULL);
	char a[128], b[128], err[256];
	snprintf(a, sizeof a, "%s/a.log", dir);
	snprintf(b, sizeof b, "%s/b.log", dir);
	log_setup(0, false);
	CHECK(log_open_file(a, err, sizeof err));
	capture_begin();
	log_info("first", NULL);
	free(capture_end());
	CHECK(rename(a, b) == 0); /* rotated away */
	CHECK(log_open_file(a, err, sizeof err));
	capture_begin();
	log_info("second", NULL);
	char *out = capture_end();
	CHECK(strstr(out, "msg=second") != NULL); /* stderr too */
	free(out);
	char *old = slurp(b), *now = slurp(a);
	CHECK(strstr(old, "msg=first") && !strstr(old, "msg=second"));
	CHECK(strstr(now, "msg=second") && !strstr(now, "msg=first"));
	free(old);
	free(now);
	CHECK(!log_open_file("/nonexistent-pgfleet-dir/x.log", err, sizeof err));
	CHECK(strcmp(err, "cannot open '/nonexistent-pgfleet-dir/x.log': No such file or "
	                  "directory") == 0);
	capture_begin();
	log_info("third", NULL); /* still to a.log */
	free(capture_end());
	CHECK(log_open_file("", err, sizeof err));
	capture_begin();
	log_info("fourth", NULL);
	free(capture_end());
	now = slurp(a);
	CHECK(strstr(now, "msg=third") && !strstr(now, "msg=fourth"));
	free(now);
	unlink(a);
	unlink(b);
	rmdir(dir);
}

/* verbose: the more verbose of it and -v; -q wins. */
static void test_verbose_setting(void)
{
	log_setup(0, false);
	log_set_verbose(1);
	CHECK(log_enabled(LOG_DEBUG) && !log_enabled(LOG_TRACE));
	log_set_verbose(99);
	CHECK(log_enabled(LOG_TRACE));
	log_set_verbose(0);
	CHECK(!log_enabled(LOG_DEBUG) && log_enabled(LOG_INFO));
	log_setup(2, false);
	log_set_verbose(0);
	CHECK(log_enabled(LOG_TRACE));
	log_setup(-1, false);
	log_set_verbose(2);
	CHECK(!log_enabled(LOG_INFO) && log_enabled(LOG_WARN));
	log_setup(0, false);
}

int main(void)
{
	RUN(test_logfmt_quoting);
	RUN(test_json_escaping);
	RUN(test_long_lines_still_close);
	RUN(test_utf8_seq_len);
	RUN(test_levels);
	RUN(test_logfile);
	RUN(test_verbose_setting);
	return harness_finish();
}
