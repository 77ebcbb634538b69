/*
 * runtime.h: the process-wide state of one event loop: the libevent base, the
 * configuration in force, the lists every object lives on, and the two
 * housekeeping mechanisms: freeing closed objects at the top of the next loop
 * pass (never inside the callback that closed them) and the once-a-second
 * janitor that enforces timeouts.
 *
 * runtime is a foundation: it calls no module above it.  What the loop runs
 * for other modules (their janitors, their free lists, the end of each loop
 * pass) and what a front end asks of the process (shutdown, reload) go
 * through hooks registered once at start-up (wiring.c).
 */
#ifndef PGFLEET_RUNTIME_H
#define PGFLEET_RUNTIME_H

#include <event2/event.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "config.h"
#include "list.h"

struct fleet {
	struct event_base *base;
	struct config cfg;
	char *config_path;
	struct list databases;          /* struct database */
	struct statlist login_clients;  /* CLIENT_LOGIN */
	struct statlist justfree_clients;
	struct statlist justfree_servers;
	struct event *ev_free;          /* frees the justfree lists */
	struct event *ev_janitor;       /* timeouts, once a second */
	int client_count;               /* every client not yet freed */
	bool shutting_down;
	double started;
	/* fleet_now() read once per loop pass (fleet_run_loop), as PgBouncer
	 * caches its time per loop: 0 = not read yet in this pass. */
	double now_cached;
	bool in_loop;
};

/* Each worker thread has its own loop and everything on it (workers = N):
 * the loop state, and every module's mutable statics, are THREAD_LOCAL. */
#define THREAD_LOCAL _Thread_local

extern THREAD_LOCAL struct fleet fleet;

/* Monotonic seconds; inside fleet_run_loop the same value for every
 * callback of one loop pass (timeouts and durations need no finer clock). */
double fleet_now(void);
/* Runs the event loop until event_base_loopbreak/loopexit or no events are
 * left: -1 when the loop failed. */
int fleet_run_loop(void);
/* Wall-clock seconds since the epoch (for SHOW columns). */
double fleet_wallclock(void);
/* Schedules the justfree lists to be freed at the next loop pass. */
void fleet_schedule_free(void);

/* Hooks, called in the order they were added.  Registered by wiring.c
 * before any worker's loop starts; the lists are process-wide and read-only
 * from then on.  Must not: be added to once loops run (no lock).
 * janitor: once a second, with fleet_now().  free: the free-later pass
 * (objects closed inside a callback).  pass: after each loop pass (the
 * pass's batched socket calls). */
void fleet_add_janitor(void (*fn)(double now));
void fleet_add_free_hook(void (*fn)(void));
void fleet_add_pass_hook(void (*fn)(void));

bool fleet_runtime_init(void) __attribute__((warn_unused_result));
void fleet_runtime_done(void);
/*
 * What a front end (the admin console) asks of the process.  The process
 * layer does it (shutdown.c, reload.c) and registers itself here once at
 * start-up (wiring.c); runtime only passes the request on.
 */
/* Stops accepting and drains: open transactions finish (up to
 * shutdown_timeout), then the loop ends (SIGTERM, SIGINT, admin SHUTDOWN).
 * Returns at once; the drain runs from the next loop pass.  With no
 * handler registered: only marks the loop as shutting down. */
void fleet_shutdown(const char *why);
/* Re-reads the configuration file (or the environment when pgfleet started
 * without one).  A configuration with errors is refused: each error is
 * logged, the old one stays, and `err` (when given) says how many there
 * were.  Otherwise the new one takes effect without dropping clients.
 * False with no handler registered. */
bool fleet_reload(char *err, size_t errlen);
/* After SET changed a setting: pool sizes and modes follow. */
void fleet_settings_changed(void);
void fleet_on_shutdown(void (*fn)(const char *why));
void fleet_on_reload(bool (*fn)(char *err, size_t errlen));
void fleet_on_settings_changed(void (*fn)(void));
/* Can `key` change while pgfleet runs (SET, RELOAD)?  The others need a
 * restart: listening sockets, TLS contexts, the resolver, the log format
 * (fleet_setting_needs_restart), and auth_file, which only RELOAD re-reads. */
bool fleet_setting_changeable(const char *key);
bool fleet_setting_needs_restart(const char *key);
/* What a client closed by the shutdown is told, with SQLSTATE 57P01
 * (admin_shutdown), in PostgreSQL's own words. */
#define FLEET_SHUTDOWN_MESSAGE "terminating connection due to administrator command"
/* Random bytes for keys and nonces (OpenSSL's RAND_bytes). */
void fleet_random(void *buf, size_t len);
/* A new connection id, unique over the process's life and every worker
 * (SHOW CLIENTS / SERVERS `id`, KILL_CLIENT); the first is 1. */
uint64_t fleet_next_id(void);

/* Starts fn(arg) on a detached thread with every signal blocked (signals
 * are the main thread's business: evsignal).  0, or pthread_create's error. */
int fleet_spawn_detached(void *(*fn)(void *), void *arg);

/* The fleet of pgfleet instances this one belongs to (peers setting, issue
 * 20): how many are live, this one included (1 when alone or without
 * peers), and this one's place among them (0-based, by address), for the
 * share of a fleet-wide limit each takes.  Set by the peers module, read by
 * any worker. */
void fleet_set_peers(int live, int rank);
void fleet_peers(int *live, int *rank);

#endif
