/*
 * batch.c: one loop pass's socket reads and writes in two io_uring
 * submissions.
 *
 * A pooled transaction costs the pooler four socket calls: read the query,
 * write it to the server, read the reply, write it to the client.  Each is
 * a kernel entry, and on machines where entries are dear (page-table
 * isolation without PCID flushes the TLB on every one: a null system call
 * takes 1.2 us on the VMs pgfleet is benchmarked on) those entries cost as
 * much as the TCP work behind them.  A loop pass usually has several
 * sockets ready, so the pass
 *   1. collects the readable sockets: conn.c queues them here instead of
 *      running their owners' read callbacks;
 *   2. at its end reads all of them in one submission, then runs each
 *      owner's callback, whose conn_read finds the bytes already there;
 *   3. copies what the pass writes (small writes to sockets that are not
 *      backed up) into one arena, sent in one more submission.
 * A pass then costs epoll_wait and two io_uring_enter calls however many
 * sockets it served.  A pass with one socket to read or to write makes the
 * plain system call: a submission of one costs more than the call.
 *
 * Every operation carries MSG_DONTWAIT, so io_uring completes it within the
 * submission (with -EAGAIN rather than waiting); bytes a socket did not take
 * go to the front of the connection's own out queue, with its write event
 * on, exactly where a short send() leaves them.  Back-pressure is kept: a
 * socket whose write event is on (backed up) is written at once, as before.
 *
 * Must not: keep bytes or callbacks across passes (both lists and the arena
 * are empty when batch_run returns), or run a queued callback for a
 * connection that was closed or stopped reading meanwhile.  Without
 * io_uring (io_uring = 0, an old kernel, a seccomp profile that refuses it)
 * every entry point says no and conn.c makes each call itself.
 */
#include "batch.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>

#include "log.h"
#include "runtime.h"

#ifdef HAVE_LIBURING
#include <liburing.h>
#ifdef HAVE_VALGRIND_MEMCHECK_H
#include <valgrind/memcheck.h>
#else
#define VALGRIND_MAKE_MEM_DEFINED(p, n) ((void)(p), (void)(n))
#endif

/* Sockets per list and pass (more are served the plain way), ring size. */
#define BATCH_SLOTS 256
/* A pass's deferred bytes; a write that does not fit goes out at once. */
#define ARENA_SIZE (256 * 1024)
/* Larger writes go out at once: result sets, COPY.  Their copy would cost
 * more than the call it saves, and they are what back-pressure is for. */
#define DEFER_MAX 8192

struct batch {
	struct io_uring ring;
	bool ready; /* the ring and the arena exist */
	bool on;    /* and are used: false after a failed submission */
	struct conn *readers[BATCH_SLOTS]; /* NULL: closed since it was queued */
	uint32_t rooms[BATCH_SLOTS];       /* the recv's size, per reader */
	unsigned n_readers;
	struct conn *writers[BATCH_SLOTS]; /* NULL: sent, taken back or closed */
	unsigned n_writers;
	uint8_t *arena;
	uint32_t arena_used;
	struct batch_stats st;
};

static THREAD_LOCAL struct batch bt;

bool batch_init(bool want)
{
	if (bt.ready || !want)
		return bt.on;
	/* One thread submits (each worker has its own ring), and completions
	 * are reaped only when it asks: the kernel's cheapest mode (6.1+).
	 * No fallback to an older kernel's plain ring: the batches rely on an
	 * operation with MSG_DONTWAIT completing with -EAGAIN rather than
	 * waiting for its socket, which every kernel with these flags does. */
	struct io_uring_params p = {
		.flags = IORING_SETUP_SINGLE_ISSUER | IORING_SETUP_DEFER_TASKRUN,
	};
	int r = io_uring_queue_init_params(BATCH_SLOTS, &bt.ring, &p);
	if (r < 0) {
		log_info("io_uring unavailable: one system call per socket operation", "error",
			 strerror(-r), NULL);
		return false;
	}
	bt.arena = malloc(ARENA_SIZE);
	if (!bt.arena) {
		io_uring_queue_exit(&bt.ring);
		return false;
	}
	bt.ready = bt.on = true;
	return true;
}

void batch_done(void)
{
	if (!bt.ready)
		return;
	io_uring_queue_exit(&bt.ring);
	free(bt.arena);
	bt = (struct batch){0};
}

bool batch_enabled(void)
{
	return bt.on;
}

void batch_get_stats(struct batch_stats *st)
{
	*st = bt.st;
}

bool batch_queue_read(struct conn *c)
{
	if (c->read_slot)
		return true; /* already queued in this pass */
	if (!bt.on || !fleet.in_loop || bt.n_readers == BATCH_SLOTS)
		return false;
	bt.readers[bt.n_readers++] = c;
	c->read_slot = (uint16_t)bt.n_readers;
	return true;
}

bool batch_defer_write(struct conn *dst, struct iobuf *b)
{
	if (!bt.on || !fleet.in_loop || dst->ssl || dst->write_on || dst->fd < 0)
		return false;
	struct wbuf *w = &dst->out;
	uint32_t own = w->len - w->sent, fwd = b ? b->parsed - b->done : 0, n = own + fwd;
	if (n == 0)
		return true; /* nothing new; what was deferred goes at the end */
	if (n > DEFER_MAX || ARENA_SIZE - bt.arena_used < n)
		return false;
	if (dst->write_slot) {
		/* Only appended while its bytes are the arena's last. */
		if (dst->later_off + dst->later_len != bt.arena_used)
			return false;
	} else {
		if (bt.n_writers == BATCH_SLOTS)
			return false;
		bt.writers[bt.n_writers++] = dst;
		dst->write_slot = (uint16_t)bt.n_writers;
		dst->later_off = bt.arena_used;
		dst->later_len = 0;
	}
	uint8_t *at = bt.arena + bt.arena_used;
	if (own) {
		memcpy(at, w->data + w->sent, own);
		wbuf_reset(w);
	}
	if (fwd) {
		memcpy(at + own, b->data + b->done, fwd);
		b->done = b->parsed;
	}
	bt.arena_used += n;
	dst->later_len += n;
	return true;
}

void batch_take_write(struct conn *dst, struct wbuf *into)
{
	if (!dst->write_slot)
		return;
	wbuf_prepend(into, bt.arena + dst->later_off, dst->later_len);
	bt.writers[dst->write_slot - 1] = NULL;
	dst->write_slot = 0;
	dst->later_len = 0;
}

/* c's deferred bytes with one plain send(): bytes sent, or -errno. */
static int send_later(const struct conn *c)
{
	ssize_t r;
	do
		r = send(c->fd, bt.arena + c->later_off, c->later_len, MSG_DONTWAIT | MSG_NOSIGNAL);
	while (r < 0 && errno == EINTR);
	return r < 0 ? -errno : (int)r;
}

void batch_forget(struct conn *c)
{
	if (c->read_slot) {
		bt.readers[c->read_slot - 1] = NULL;
		c->read_slot = 0;
	}
	if (c->write_slot) {
		if (c->fd >= 0)
			(void)send_later(c);
		bt.writers[c->write_slot - 1] = NULL;
		c->write_slot = 0;
		c->later_len = 0;
	}
}

/*
 * Submits `queued` prepared operations and hands each completion to
 * done(slot, result).  All are MSG_DONTWAIT, so they complete within the
 * submission; the waits below only ride out a signal.  If the ring fails
 * the rest of the pass goes the plain way: batching is switched off (an
 * operation without a completion is then the caller's to redo).
 */
static void submit(unsigned queued, void (*done)(unsigned slot, int res))
{
	int r;
	do
		r = io_uring_submit_and_wait(&bt.ring, queued);
	while (r == -EINTR);
	unsigned seen = 0;
	while (r >= 0 && seen < queued) {
		struct io_uring_cqe *cqe;
		unsigned head, n = 0;
		io_uring_for_each_cqe(&bt.ring, head, cqe)
		{
			done((unsigned)io_uring_cqe_get_data64(cqe), cqe->res);
			n++;
		}
		io_uring_cq_advance(&bt.ring, n);
		seen += n;
		if (seen < queued) {
			do
				r = io_uring_wait_cqe(&bt.ring, &cqe);
			while (r == -EINTR);
		}
	}
	if (r < 0) {
		log_warn("io_uring submission failed: batching off", "error", strerror(-r), NULL);
		bt.on = false; /* the ring stays until batch_done */
	}
}

static void read_done(unsigned slot, int res)
{
	struct conn *c = bt.readers[slot];
	if (!c)
		return;
	/* Memcheck cannot see the kernel fill the buffer through the ring. */
	if (res > 0)
		VALGRIND_MAKE_MEM_DEFINED(c->in->data + c->in->recv, (size_t)res);
	conn_read_done(c, res, bt.rooms[slot]);
}

/* A queued socket still to be read here: not closed, still reading, no
 * earlier result waiting, not TLS. */
static bool wants_recv(const struct conn *c)
{
	return c && c->read_on && !c->pre && !c->ssl;
}

static void run_reads(void)
{
	unsigned n = bt.n_readers, live = 0;
	for (unsigned i = 0; i < n; i++) {
		const struct conn *c = bt.readers[i];
		if (wants_recv(c))
			live++;
	}
	if (live >= 2) {
		unsigned queued = 0;
		for (unsigned i = 0; i < n; i++) {
			struct conn *c = bt.readers[i];
			uint8_t *at;
			if (!wants_recv(c) || !conn_read_room(c, &at, &bt.rooms[i]))
				continue;
			struct io_uring_sqe *sqe = io_uring_get_sqe(&bt.ring);
			io_uring_prep_recv(sqe, c->fd, at, bt.rooms[i], MSG_DONTWAIT);
			io_uring_sqe_set_data64(sqe, i);
			queued++;
		}
		if (queued) {
			bt.st.recv_submits++;
			bt.st.recv_ops += queued;
			submit(queued, read_done);
		}
	}
	/* The owners' callbacks, in the order epoll reported the sockets.  A
	 * callback may close another queued connection (its slot is then
	 * NULL) or stop its reading (its result waits: conn_read_enable
	 * brings the callback back when reading resumes). */
	for (unsigned i = 0; i < n; i++) {
		struct conn *c = bt.readers[i];
		if (!c)
			continue;
		bt.readers[i] = NULL;
		c->read_slot = 0;
		if (c->read_on)
			c->on_read(c->fd, EV_READ, c->owner);
	}
	bt.n_readers = 0;
}

static void write_done(unsigned slot, int res)
{
	struct conn *c = bt.writers[slot];
	if (!c)
		return;
	uint32_t sent = res > 0 ? (uint32_t)res : 0;
	c->bytes_out += sent;
	if (sent >= c->later_len) {
		bt.writers[slot] = NULL;
		c->write_slot = 0;
		c->later_len = 0;
		return;
	}
	/* The socket is backed up, or failed: the rest waits in the out queue
	 * and the owner's write callback sends it (or meets the error). */
	bt.st.short_sends++;
	c->later_off += sent;
	c->later_len -= sent;
	batch_take_write(c, &c->out);
	conn_write_enable(c, true);
}

static void run_writes(void)
{
	unsigned n = bt.n_writers, live = 0, last = 0;
	for (unsigned i = 0; i < n; i++) {
		if (bt.writers[i]) {
			live++;
			last = i;
		}
	}
	if (live == 1) {
		write_done(last, send_later(bt.writers[last]));
	} else if (live > 1) {
		for (unsigned i = 0; i < n; i++) {
			const struct conn *c = bt.writers[i];
			if (!c)
				continue;
			struct io_uring_sqe *sqe = io_uring_get_sqe(&bt.ring);
			io_uring_prep_send(sqe, c->fd, bt.arena + c->later_off, c->later_len,
					   MSG_DONTWAIT | MSG_NOSIGNAL);
			io_uring_sqe_set_data64(sqe, i);
		}
		bt.st.send_submits++;
		bt.st.send_ops += live;
		submit(live, write_done);
	}
	/* No completion (the ring failed): as if the socket were backed up. */
	for (unsigned i = 0; i < n; i++) {
		struct conn *c = bt.writers[i];
		if (c) {
			batch_take_write(c, &c->out);
			conn_write_enable(c, true);
		}
	}
	bt.n_writers = 0;
	bt.arena_used = 0;
}

void batch_run(void)
{
	if (bt.n_readers)
		run_reads();
	if (bt.n_writers)
		run_writes();
}

#else /* no liburing at build time: every call is made at once */

bool batch_init(bool want)
{
	return false;
}
void batch_done(void)
{
}
bool batch_enabled(void)
{
	return false;
}
void batch_get_stats(struct batch_stats *st)
{
	*st = (struct batch_stats){0};
}
bool batch_queue_read(struct conn *c)
{
	return false;
}
bool batch_defer_write(struct conn *dst, struct iobuf *b)
{
	return false;
}
void batch_take_write(struct conn *dst, struct wbuf *into)
{
}
void batch_forget(struct conn *c)
{
}
void batch_run(void)
{
}

#endif
