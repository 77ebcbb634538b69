/*
 * batch.h: one loop pass's socket reads and writes, each kind in one
 * io_uring submission instead of one system call per socket.
 *
 * conn.c asks here before it reads or writes a plain socket; everything
 * answers "no" when io_uring is off (io_uring = 0, an old kernel, a seccomp
 * profile that refuses it), and conn.c then does the system call itself.
 */
#ifndef PGFLEET_BATCH_H
#define PGFLEET_BATCH_H

#include <stdbool.h>
#include <stdint.h>

#include "conn.h"

/* This loop's ring (each worker has its own).  False is not an error:
 * batching is off and every socket call is made at once. */
bool batch_init(bool want);
void batch_done(void);
bool batch_enabled(void);

/* The socket is readable: true if the recv and the owner's read callback
 * are left to the end of the pass, false to run the callback now. */
bool batch_queue_read(struct conn *c);
/* Copies dst's out queue and b's parsed-not-sent bytes to this pass's send
 * arena, to go out at the end of the pass: true if they were taken (the
 * queue is then empty and b->done == b->parsed).  False: the caller sends
 * them itself, after batch_take_write's. */
bool batch_defer_write(struct conn *dst, struct iobuf *b);
/* Moves dst's deferred bytes to the front of `into`: its out queue, or its
 * ciphertext queue when TLS starts (the SSLRequest's answer goes raw). */
void batch_take_write(struct conn *dst, struct wbuf *into);
/* c is being closed: its deferred bytes are sent at once, as far as the
 * socket takes them, and it leaves both lists. */
void batch_forget(struct conn *c);
/* The end of a loop pass: reads the queued sockets, runs their owners'
 * read callbacks, then sends what the pass deferred. */
void batch_run(void);

/* Submissions and the operations they carried, and deferred writes a
 * socket did not take whole (left to its write event), for /metrics. */
struct batch_stats {
	uint64_t recv_submits, recv_ops, send_submits, send_ops, short_sends;
};
void batch_get_stats(struct batch_stats *st);

#endif
