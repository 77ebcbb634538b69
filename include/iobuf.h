/*
 * iobuf.h: a connection's input buffer and its output queue.
 *
 * Input buffer regions, in order (checked by iobuf_sane):
 *
 *     0 ........ done ......... parsed ........... recv ......... size
 *     | consumed  | parsed, to be  | received, not   |    free     |
 *     |           | sent to peer   | parsed yet      |             |
 *
 * Bytes are forwarded straight from [done, parsed) to the peer's socket, so a
 * packet is never copied on its way through.  A packet larger than the buffer
 * is streamed: its header is parsed, and the rest passes through as it comes.
 *
 * Buffers of the standard size come from a free list and go back to it when a
 * connection has nothing buffered, so idle connections hold no buffer and the
 * hot path never calls malloc.  Messages that must be seen whole (login,
 * ParameterStatus, ...) and are larger than the standard size get a one-off
 * larger buffer, up to IOBUF_MAX_WHOLE.
 *
 * The output queue (struct wbuf) holds messages pgfleet writes itself (errors,
 * login replies, hidden SETs); it is always sent before forwarded bytes.
 */
#ifndef PGFLEET_IOBUF_H
#define PGFLEET_IOBUF_H

#include <assert.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#define IOBUF_SIZE (16 * 1024)
#define IOBUF_MAX_WHOLE (1024 * 1024)

struct iobuf {
	uint32_t done, parsed, recv, size;
	struct iobuf *next_free;
	uint8_t data[];
};

static inline bool iobuf_sane(const struct iobuf *b)
{
	return b->done <= b->parsed && b->parsed <= b->recv && b->recv <= b->size;
}

static inline uint32_t iobuf_unparsed(const struct iobuf *b)
{
	return b->recv - b->parsed;
}

static inline uint32_t iobuf_unsent(const struct iobuf *b)
{
	return b->parsed - b->done;
}

static inline bool iobuf_empty(const struct iobuf *b)
{
	return b->done == b->recv;
}

/* A standard-size buffer from the free list (malloc only when it is empty). */
struct iobuf *iobuf_get(void);
/* Back to the free list (standard size) or freed (larger). */
void iobuf_put(struct iobuf *b);
/* Frees free-list buffers beyond what the buffers in use suggest (janitor). */
void iobuf_trim(void);
/* Frees the free list (a worker thread that ends). */
void iobuf_free_all(void);
/* Moves the unconsumed bytes to the front so there is room to read. */
void iobuf_compact(struct iobuf *b);
/* Makes room for a whole message of `need` bytes from `parsed`: compacts, or
 * moves the contents into a larger buffer.  False when need > IOBUF_MAX_WHOLE. */
bool iobuf_reserve(struct iobuf **bp, uint32_t need) __attribute__((warn_unused_result));
/* Buffers on the free list and in use, for SHOW MEM. */
void iobuf_stats(size_t *free_count, size_t *used_count);

struct wbuf {
	uint8_t *data;
	uint32_t len, cap, sent;
};

static inline bool wbuf_pending(const struct wbuf *w)
{
	return w->sent < w->len;
}

/* Bytes queued and not sent yet. */
static inline uint32_t wbuf_queued(const struct wbuf *w)
{
	return w->len - w->sent;
}

/* Room for n more bytes (amortised growth). */
void wbuf_need(struct wbuf *w, uint32_t n);
void wbuf_put(struct wbuf *w, const void *p, uint32_t n);
/* Puts n bytes in front of what is still to be sent. */
void wbuf_prepend(struct wbuf *w, const void *p, uint32_t n);
void wbuf_reset(struct wbuf *w);
void wbuf_free(struct wbuf *w);

#endif
