/*
 * confwatch.c: config_watch (confwatch.h).  A timer on worker 0 computes a
 * fingerprint of every watched file (path as given, the path it resolves
 * to, device, inode, size, mtime) and reloads through reload.c when it
 * changed and then stayed the same for one tick.
 */
#include "confwatch.h"

#include <event2/event.h>
#include <limits.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "config.h"
#include "log.h"
#include "reload.h"
#include "runtime.h"

static struct event *ev_tick;
static uint64_t seen;    /* last tick's fingerprint */
static uint64_t applied; /* the fingerprint the running configuration was read at */
static bool baseline;    /* applied is valid (false while config_watch = off) */

static uint64_t fnv(uint64_t h, const void *p, size_t n)
{
	const unsigned char *b = p;
	for (size_t i = 0; i < n; i++)
		h = (h ^ b[i]) * 1099511628211ULL;
	return h;
}

/* One file: a missing one counts too (its appearing is a change).  With
 * names_only, only which files are watched. */
static uint64_t fingerprint_file(uint64_t h, const char *path, bool names_only)
{
	if (!path || !*path)
		return h;
	h = fnv(h, path, strlen(path) + 1);
	if (names_only)
		return h;
	char real[PATH_MAX];
	if (realpath(path, real))
		h = fnv(h, real, strlen(real) + 1);
	struct stat sb;
	if (stat(path, &sb) != 0) {
		static const char missing[] = "(missing)";
		return fnv(h, missing, sizeof missing);
	}
	uint64_t f[6] = {(uint64_t)sb.st_dev,
			 (uint64_t)sb.st_ino,
			 (uint64_t)sb.st_size,
			 (uint64_t)sb.st_mtim.tv_sec,
			 (uint64_t)sb.st_mtim.tv_nsec,
			 (uint64_t)sb.st_ctim.tv_nsec};
	return fnv(h, f, sizeof f);
}

static uint64_t fingerprint_of(bool names_only)
{
	uint64_t h = 14695981039346656037ULL;
	const struct config *c = &fleet.cfg;
	for (size_t i = 0; i < c->n_files; i++)
		h = fingerprint_file(h, c->files[i], names_only);
	h = fingerprint_file(h, c->auth_file, names_only);
	if (c->hba) { /* read only for auth_type = hba */
		h = fingerprint_file(h, c->auth_hba_file, names_only);
		h = fingerprint_file(h, c->auth_ident_file, names_only);
	}
	return h;
}

static uint64_t fingerprint(void)
{
	return fingerprint_of(false);
}

static void on_tick(evutil_socket_t fd, short what, void *arg)
{
	if (!fleet.cfg.config_watch || fleet.shutting_down) {
		baseline = false;
		return;
	}
	uint64_t now = fingerprint();
	if (!baseline) { /* just turned on: what is there now is what runs */
		seen = applied = now;
		baseline = true;
		return;
	}
	if (now != seen) { /* still changing: wait for a quiet tick */
		seen = now;
		return;
	}
	if (now == applied)
		return;
	log_info("config file changed: reloading", "config", fleet.cfg.path, NULL);
	/* A broken file is refused (its errors logged, the old configuration
	 * kept) and not tried again until it changes once more. */
	uint64_t names = fingerprint_of(true);
	reload_all_workers();
	/* What was read is what `now` saw, or newer: a change landing while
	 * the reload read the files is not taken for applied, and the next
	 * quiet tick reloads again.  When the reload named other files
	 * (%include, auth_file) `now` covers the old ones: what is there now
	 * is taken as read. */
	seen = fingerprint();
	applied = fingerprint_of(true) == names ? now : seen;
}

void confwatch_start(void)
{
	if (!fleet.cfg.path || ev_tick)
		return;
	ev_tick = event_new(fleet.base, -1, EV_PERSIST, on_tick, NULL);
	if (!ev_tick) {
		log_error("config_watch not started", "error", "out of memory", NULL);
		return;
	}
	baseline = false;
	on_tick(-1, 0, NULL);
	struct timeval one = {1, 0};
	event_add(ev_tick, &one);
}

void confwatch_stop(void)
{
	if (ev_tick)
		event_free(ev_tick);
	ev_tick = NULL;
}
