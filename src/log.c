/*
 * log.c: formats one event per line on stderr (and the logfile), logfmt or
 * JSON with the same keys.  It only formats: callers decide what is safe to log (no passwords,
 * no query text).  Lines are built in a stack buffer and written with one
 * write(2), so lines never interleave and no allocation happens here.
 */
#include "log.h"

#include <errno.h>
#include <fcntl.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdio.h>
#include <string.h>
#include <sys/time.h>
#include <time.h>
#include <unistd.h>

_Atomic int log_level_max = LOG_INFO;
static bool log_json;
static int cli_verbosity; /* -v count, -1 for -q */
/* The logfile's descriptor, -1: none.  Once set the number never changes
 * while pgfleet runs: a new file is dup2()ed over it, so a thread that
 * read it always writes to a log file, never to a descriptor closed and
 * reused for a socket meanwhile. */
static _Atomic int log_fd = -1;
static _Atomic bool log_to_file;

static const char *level_names[] = {"error", "warn", "info", "debug", "trace"};

void log_setup(int verbosity, bool json)
{
	cli_verbosity = verbosity;
	log_level_max = (int)LOG_INFO + verbosity;
	log_json = json;
}

void log_set_verbose(long long verbose)
{
	int v = verbose > 2 ? 2 : verbose < 0 ? 0 : (int)verbose;
	if (cli_verbosity < 0)
		v = -1;
	else if (cli_verbosity > v)
		v = cli_verbosity;
	log_level_max = (int)LOG_INFO + v;
}

bool log_open_file(const char *path, char *err, size_t errlen)
{
	if (!path || !*path) {
		log_to_file = false; /* the descriptor stays, unused */
		return true;
	}
	int fd = open(path, O_WRONLY | O_APPEND | O_CREAT | O_CLOEXEC | O_NOCTTY, 0640);
	if (fd < 0) {
		snprintf(err, errlen, "cannot open '%s': %s", path, strerror(errno));
		return false;
	}
	int old = log_fd;
	if (old < 0) {
		log_fd = fd;
	} else {
		if (dup2(fd, old) < 0) {
			snprintf(err, errlen, "cannot switch to '%s': %s", path, strerror(errno));
			close(fd);
			return false;
		}
		close(fd);
	}
	log_to_file = true;
	return true;
}


size_t utf8_seq_len(const unsigned char *p)
{
	unsigned char c = p[0];
	if (c < 0x80)
		return 1;
	size_t n;
	unsigned char lo = 0x80, hi = 0xbf; /* the second byte's range */
	if (c >= 0xc2 && c <= 0xdf) {
		n = 2;
	} else if (c >= 0xe0 && c <= 0xef) {
		n = 3;
		if (c == 0xe0)
			lo = 0xa0; /* overlong */
		else if (c == 0xed)
			hi = 0x9f; /* surrogates */
	} else if (c >= 0xf0 && c <= 0xf4) {
		n = 4;
		if (c == 0xf0)
			lo = 0x90; /* overlong */
		else if (c == 0xf4)
			hi = 0x8f; /* past U+10FFFF */
	} else {
		return 0;
	}
	if (p[1] < lo || p[1] > hi)
		return 0;
	for (size_t i = 2; i < n; i++)
		if (p[i] < 0x80 || p[i] > 0xbf)
			return 0;
	return n;
}

/* Room always kept for what closes a line: a value's quote, '}', '\n'. */
#define LINE_RESERVE 4

struct line {
	char buf[2048];
	size_t len;
	bool full; /* something did not fit: the rest of the line is dropped */
};

/* Appends n bytes whole or not at all, so that a line cut short still
 * parses (never half an escape or half a UTF-8 character). */
static bool put_bytes(struct line *l, const char *s, size_t n)
{
	if (l->full || l->len + n > sizeof(l->buf) - LINE_RESERVE) {
		l->full = true;
		return false;
	}
	memcpy(l->buf + l->len, s, n);
	l->len += n;
	return true;
}

/* A closing character, written into the reserve even when the line is full. */
static void put_closer(struct line *l, char c)
{
	l->buf[l->len++] = c;
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

/* Escapes for both logfmt and JSON strings: quote, backslash, control
 * characters; a byte that is not UTF-8 (a name a client sent) becomes
 * U+FFFD, so a JSON line is always valid JSON. */
static void put_escaped(struct line *l, const char *s)
{
	const unsigned char *p = (const unsigned char *)s;
	while (*p) {
		char esc[8];
		size_t n = utf8_seq_len(p);
		bool ok;
		if (*p == '"' || *p == '\\') {
			esc[0] = '\\';
			esc[1] = (char)*p;
			ok = put_bytes(l, esc, 2);
		} else if (*p == '\n') {
			ok = put_bytes(l, "\\n", 2);
		} else if (*p < 0x20) {
			snprintf(esc, sizeof(esc), "\\u%04x", *p);
			ok = put_bytes(l, esc, 6);
		} else if (n == 0) {
			ok = put_bytes(l, "\xef\xbf\xbd", 3);
			n = 1;
		} else {
			ok = put_bytes(l, (const char *)p, n);
		}
		if (!ok)
			return;
		p += n ? n : 1;
	}
}

static void put_pair(struct line *l, const char *key, const char *val, bool first)
{
	/* Keys are names from the code: nothing in them needs escaping. */
	char head[80];
	bool quoted = log_json || needs_quotes(val);
	int n;
	if (log_json)
		n = snprintf(head, sizeof(head), "%s\"%s\":\"", first ? "" : ",", key);
	else
		n = snprintf(head, sizeof(head), "%s%s=%s", first ? "" : " ", key, quoted ? "\"" : "");
	if (n < 0 || (size_t)n >= sizeof(head) || !put_bytes(l, head, (size_t)n))
		return;
	if (quoted) {
		put_escaped(l, val);
		put_closer(l, '"');
	} else {
		(void)put_bytes(l, val, strlen(val));
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
		put_closer(&l, '{');
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
		put_closer(&l, '}');
	put_closer(&l, '\n');
	ssize_t r = write(STDERR_FILENO, l.buf, l.len);
	(void)r;
	if (log_to_file) {
		r = write(log_fd, l.buf, l.len);
		(void)r;
	}
}
