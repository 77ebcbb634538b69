/*
 * cancel.h: query cancellation.  Each logged-in client has its own
 * BackendKeyData (pid, key), kept in a hash table so that a CancelRequest
 * finds its client at once.  A cancel is sent to the one backend running
 * that client's query right now, over a new non-blocking connection to that
 * backend's replica (never another one); when the client has nothing
 * running, the request is dropped, as PostgreSQL does with a stale key.
 */
#ifndef PGFLEET_CANCEL_H
#define PGFLEET_CANCEL_H

#include <stdbool.h>
#include <stdint.h>

struct client;
struct server;

/* Gives c a fresh random (cancel_pid, cancel_key), unique among the
 * registered clients, and registers it.  Called once c has logged in. */
void cancel_register(struct client *c);
/* Forgets c's key (idempotent; safe for a client never registered). */
void cancel_unregister(struct client *c);
/* The registered client with this BackendKeyData, or NULL. */
struct client *cancel_find_client(uint32_t pid, uint32_t key);

/* A CancelRequest packet (`len` bytes, its length word included) came on the
 * fresh connection c: forward it if it names a client with a query running,
 * then close c (PostgreSQL answers a CancelRequest with nothing).  This is
 * the one entry point, plaintext or after an SSLRequest. */
void cancel_handle_request(struct client *c, const uint8_t *pkt, uint32_t len);
/* workers = N: a CancelRequest another worker received for one of our keys. */
void cancel_handle_remote(uint32_t pid, uint32_t key);

/*
 * issue 20, a fleet of pgfleet instances (peers.c): with peers, a key's pid
 * also names the instance that handed it out (bits 6..21, above the worker
 * index), so a CancelRequest reaching another instance goes to exactly one
 * peer.  The rest of the pid and the whole key stay random (41 bits).
 */
#define CANCEL_INSTANCE_SHIFT 6
#define CANCEL_INSTANCE_MASK 0xffffu
/* This process's instance id (nonzero), before any loop runs; 0: no peers. */
void cancel_set_instance(uint16_t id);
/* The instance named by a key's pid. */
static inline uint16_t cancel_pid_instance(uint32_t pid)
{
	return (uint16_t)((pid >> CANCEL_INSTANCE_SHIFT) & CANCEL_INSTANCE_MASK);
}
/* Who forwards a CancelRequest whose key another instance handed out
 * (peers_forward_cancel), registered once at start-up (wiring.c); callable
 * from any worker.  False: no live peer has that instance id. */
void cancel_on_foreign(bool (*fn)(uint32_t pid, uint32_t key));
/* A CancelRequest a peer forwarded (authenticated by peers.c), for one of
 * this instance's keys: handled here or by the owning worker, never
 * forwarded again.  `from` goes to the log. */
void cancel_handle_forwarded(uint32_t pid, uint32_t key, const char *from);

/* Cancels what s (linked to a client) is running now: a new connection to
 * s's replica carries a CancelRequest with s's backend key.  Bounded by
 * server_connect_timeout; never blocks.  `why` goes to the log. */
bool cancel_server_query(struct server *s, const char *why);

/* s is being closed: its cancel connections forget it (they go on). */
void cancel_forget_server(struct server *s);

/* Closes and frees every cancel connection still in flight, and the table. */
void cancel_shutdown(void);

#endif
