/*
 * log.c: formats one event per line on stderr, logfmt or JSON with the same
 * keys.  It only formats: callers decide what is safe to log (no passwords,
 * no query text).  Lines are built in a stack buffer and written with one
 * write(2), so lines never interleave and no allocation happens here.
 */
#include "log.h"

#include <stdarg.h>
#include <stdio.h>
#include <string.h>
#include <sys/time.h>
#include <time.h>
#include <unistd.h>

static int log_verbosity;
static bool log_json;

static const char *level_names[] = {"error", "warn", "info", "debug", "trace"};

void log_setup(int verbosity, bool json)
{
	log_verbosity = verbosity;
	log_json = json;
}

bool log_enabled(enum log_level level)
{
	return (int)level <= (int)LOG_INFO + log_verbosity;
}

struct line {
	char buf[2048];
	size_t len;
};

static void put_char(struct line *l, char c)
{
	if (l->len < sizeof(l->buf) - 2)
		l->buf[l->len++] = c;
}

static void put_raw(struct line *l, const char *s)
{
	while (*s)
		put_char(l, *s++);
}

static bool needs_quotes(const char *s)
{
	if (!*s)
		return true;
	for (; *s; s++)
		if (*s <= ' ' || *s == '"' || *s == '=' || *s == '\\' || (unsigned char)*s >= 0x7f)
			return true;
	return false;
}

/* Escapes for both logfmt and JSON strings: quote, backslash, control chars. */
static void put_escaped(struct line *l, const char *s)
{
	for (; *s; s++) {
		unsigned char c = (unsigned char)*s;
		if (c == '"' || c == '\\') {
			put_char(l, '\\');
			put_char(l, (char)c);
		} else if (c == '\n') {
			put_raw(l, "\\n");
		} else if (c < 0x20) {
			char hex[8];
			snprintf(hex, sizeof(hex), "\\u%04x", c);
			put_raw(l, hex);
		} else {
			put_char(l, (char)c);
		}
	}
}

static void put_pair(struct line *l, const char *key, const char *val, bool first)
{
	if (log_json) {
		if (!first)
			put_char(l, ',');
		put_char(l, '"');
		put_escaped(l, key);
		put_raw(l, "\":\"");
		put_escaped(l, val);
		put_char(l, '"');
	} else {
		if (!first)
			put_char(l, ' ');
		put_raw(l, key);
		put_char(l, '=');
		if (needs_quotes(val)) {
			put_char(l, '"');
			put_escaped(l, val);
			put_char(l, '"');
		} else {
			put_raw(l, val);
		}
	}
}

void log_kv(enum log_level level, const char *msg, ...)
{
	if (!log_enabled(level))
		return;
	struct line l = {.len = 0};
	struct timeval tv;
	struct tm tm;
	char ts[64];
	gettimeofday(&tv, NULL);
	gmtime_r(&tv.tv_sec, &tm);
	snprintf(ts, sizeof(ts), "%04d-%02d-%02dT%02d:%02d:%02d.%03dZ", tm.tm_year + 1900,
		 tm.tm_mon + 1, tm.tm_mday, tm.tm_hour, tm.tm_min, tm.tm_sec,
		 (int)(tv.tv_usec / 1000));

	if (log_json)
		put_char(&l, '{');
	put_pair(&l, "ts", ts, true);
	put_pair(&l, "level", level_names[level], false);
	put_pair(&l, "msg", msg, false);

	va_list ap;
	va_start(ap, msg);
	for (;;) {
		const char *key = va_arg(ap, const char *);
		if (!key)
			break;
		const char *val = va_arg(ap, const char *);
		put_pair(&l, key, val ? val : "", false);
	}
	va_end(ap);
	if (log_json)
		put_char(&l, '}');
	l.buf[l.len++] = '\n';
	ssize_t r = write(STDERR_FILENO, l.buf, l.len);
	(void)r;
}
