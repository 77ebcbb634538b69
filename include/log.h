/*
 * log.h: one line per event on stderr (and the logfile, when set), logfmt
 * (`text`) or JSON.
 *
 * A line is a message plus key/value pairs given as a NULL-terminated list of
 * strings: log_info("replica added", "db", "app", "addr", "10.0.0.5:5432", NULL).
 * Never pass a password, a secret or query text.
 */
#ifndef PGFLEET_LOG_H
#define PGFLEET_LOG_H

#include <stdbool.h>
#include <stddef.h>

enum log_level { LOG_ERROR, LOG_WARN, LOG_INFO, LOG_DEBUG, LOG_TRACE };

/* verbosity: 0 = info (default), 1 = debug, 2 = trace, -1 = warnings only
 * (the command line's -v / -q) */
void log_setup(int verbosity, bool json);
/* The `verbose` setting: the level is the more verbose of it and the
 * command line's, unless -q asked for warnings only.  Any thread. */
void log_set_verbose(long long verbose);
/* Every line also goes to `path` (appended; "" or NULL: stderr only).  The
 * file is opened again on every call, which is what log rotation needs
 * (SIGHUP / RELOAD); lines being written meanwhile by other threads go to
 * the old file or the new one, never elsewhere.  False with the reason in
 * `err`, and the previous file kept. */
bool log_open_file(const char *path, char *err, size_t errlen);
/* The most verbose level logged (log_setup); read on hot paths, inline. */
extern _Atomic int log_level_max;
static inline bool log_enabled(enum log_level level)
{
	return (int)level <= log_level_max;
}
void log_kv(enum log_level level, const char *msg, ...) __attribute__((sentinel));

/* Length of the well-formed UTF-8 character at p (RFC 3629), 0 when the
 * bytes there are not one.  Shared with http.c's label escaping. */
size_t utf8_seq_len(const unsigned char *p);

#define log_error(...) log_kv(LOG_ERROR, __VA_ARGS__)
#define log_warn(...) log_kv(LOG_WARN, __VA_ARGS__)
#define log_info(...) log_kv(LOG_INFO, __VA_ARGS__)
#define log_debug(...)                                                                             \
	do {                                                                                       \
		if (log_enabled(LOG_DEBUG))                                                        \
			log_kv(LOG_DEBUG, __VA_ARGS__);                                            \
	} while (0)

#endif
