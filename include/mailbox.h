/*
 * mailbox.h: how workers (workers = N) talk: each worker's loop watches its
 * mailbox, a mutex-protected queue plus an eventfd.  Every module that
 * answers for several workers posts here; the threads themselves are started
 * by worker.c (process layer).  The worker_* names are the worker this
 * thread is and the ones it posts to.
 *
 * Must not: block a loop on another worker, or share a pointer to loop
 * state (a client, a server, a pool) with another worker.
 */
#ifndef PGFLEET_MAILBOX_H
#define PGFLEET_MAILBOX_H

#include <stdatomic.h>
#include <stdbool.h>
#include <stdint.h>

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
	WMSG_KINDS
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

/* Who handles a kind of message, on the worker it was posted to.  Set once
 * at start-up (wiring.c), before any loop runs; WMSG_CALL needs none (it
 * runs its fn).  A kind nobody handles is dropped. */
void mailbox_on(enum worker_msg_kind kind, void (*fn)(const struct worker_msg *m));

/* Start-up: the mailboxes of n workers (before any worker's loop). */
bool mailbox_setup(int n);
/* This thread is worker `index` (worker.c, as a thread starts). */
void mailbox_bind_thread(int index);
/* Only the first n workers started: no post goes to the others. */
void mailbox_limit(int n);
/* This worker's loop starts / stops watching its mailbox.  Detaching
 * handles what is queued and refuses later posts. */
bool mailbox_attach_loop(void) __attribute__((warn_unused_result));
void mailbox_detach_loop(void);
/* After every thread is joined: drops what is left, closes the mailboxes. */
void mailbox_done(void);

/* Posts a message to one worker (false: out of memory or no such worker). */
bool worker_post(int to, enum worker_msg_kind kind, uint32_t u1, uint32_t u2, void (*fn)(void *arg),
                 void *arg);
/* Posts kind to every worker but this one. */
void worker_broadcast(enum worker_msg_kind kind);

/* Process-wide count of logged-in and logging-in clients (max_client_conn). */
int worker_clients_add(int delta);

#endif
