/*
 * worker.h: workers = N.  Each worker is a thread running the whole
 * single-loop machinery (its own fleet, pools, DNS, health checks,
 * listener); worker 0 is the main thread and owns signals and HTTP.  Workers
 * talk only through mailboxes: a mutex-protected queue plus an eventfd that
 * the receiving worker's loop watches.  Nothing here runs when workers = 1.
 *
 * Must not: block a loop on another worker, or share a pointer to loop
 * state (a client, a server, a pool) with another worker.
 */
#ifndef PGFLEET_WORKER_H
#define PGFLEET_WORKER_H

#include <stdatomic.h>
#include <stdbool.h>
#include <stdint.h>

#include "config.h"

#define WORKER_MAX 64
/* BackendKeyData pids carry their worker's index in these low bits, so a
 * CancelRequest arriving at any worker finds the owner of the key. */
#define WORKER_PID_MASK 63u

enum worker_msg_kind {
	WMSG_RELOAD,    /* SIGHUP: reload and re-resolve every host */
	WMSG_SHUTDOWN,  /* SIGTERM, SIGINT, admin SHUTDOWN: drain */
	WMSG_EXIT_NOW,  /* second signal: end the loop now */
	WMSG_DONE,      /* to worker 0: this worker's loop has ended */
	WMSG_CANCEL,    /* a CancelRequest for a key this worker handed out */
	WMSG_POOL_KICK, /* a shared pool limit changed: serve waiters, give up idle */
	WMSG_CALL,      /* run fn(arg) on the receiving worker */
};

struct worker_msg {
	struct worker_msg *next;
	enum worker_msg_kind kind;
	int from;
	uint32_t u1, u2;
	void (*fn)(void *arg);
	void *arg;
};

/* Workers configured (1 when unthreaded). */
int worker_count(void);
/* This thread's worker index, 0..worker_count()-1. */
int worker_index(void);
static inline bool worker_threaded(void)
{
	return worker_count() > 1;
}

/* Start-up from main(): the mailboxes (before any worker's loop), then the
 * other workers' threads, each running run(index) which sets up and runs a
 * loop and returns its exit status.  worker_start waits until each worker
 * says it is listening (or failed: false). */
bool worker_setup(int n);
bool worker_attach_loop(void) __attribute__((warn_unused_result));
void worker_detach_loop(void);
bool worker_start(int (*run)(int index));
/* A worker's set-up ended: ok or not (worker_start returns when all have). */
void worker_started(bool ok);
/* Waits for every other worker's thread (after worker 0's loop ended). */
void worker_join_all(void);
/* After the join: drops what is left in the mailboxes, closes them. */
void worker_done(void);

/* Posts a message to one worker (false: out of memory or no such worker). */
bool worker_post(int to, enum worker_msg_kind kind, uint32_t u1, uint32_t u2, void (*fn)(void *arg),
                 void *arg);
/* Posts kind to every worker but this one. */
void worker_broadcast(enum worker_msg_kind kind);

/* Process-wide count of logged-in and logging-in clients (max_client_conn). */
int worker_clients_add(int delta);

/* The handlers worker.c calls for messages, defined by their owners. */
void fleet_on_message(const struct worker_msg *m); /* main.c */

#endif
