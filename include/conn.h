/*
 * conn.h: one non-blocking socket with its read/write events, its input
 * buffer and its output queue.  Both sides (client.c, server.c) embed one;
 * conn.c moves bytes and never looks inside a message beyond its header.
 */
#ifndef PGFLEET_CONN_H
#define PGFLEET_CONN_H

#include <event2/event.h>
#include <event2/event_struct.h>
#include <openssl/types.h>
#include <stdbool.h>
#include <stdint.h>

#include "iobuf.h"

struct config;

/* What a batched recv left for conn_read (conn.pre). */
enum {
	CONN_PRE_SHORT = 1, /* bytes, and the socket had no more */
	CONN_PRE_FULL,      /* bytes filled the buffer: the socket may hold more */
	CONN_PRE_EOF,       /* the peer closed */
	CONN_PRE_AGAIN,     /* nothing there after all */
};

enum io_result {
	IO_DONE,  /* everything asked for happened */
	IO_AGAIN, /* the socket would block: wait for an event */
	IO_EOF,   /* the peer closed */
	IO_ERROR, /* a socket error; errno tells */
};

struct conn {
	int fd;
	bool read_on, write_on;
	struct event ev_read, ev_write;
	/* The owner's read callback: ev_read runs conn.c's, which may leave it
	 * to the end of the loop pass (batch.c) to read many sockets at once. */
	event_callback_fn on_read;
	void *owner;
	/* batch.c's bookkeeping for this pass: the slot (index + 1, 0 = none)
	 * in its list of sockets to read and to write, and where this
	 * connection's deferred bytes are in its send arena. */
	uint16_t read_slot, write_slot;
	uint32_t later_off, later_len;
	/* A batched recv's outcome that conn_read has yet to report
	 * (CONN_PRE_*, or -errno; 0 = none). */
	int32_t pre;
	struct iobuf *in;    /* NULL while nothing is buffered */
	struct wbuf out;     /* messages pgfleet writes itself */
	uint32_t pkt_remain; /* bytes of a streamed packet still to pass through */
	uint64_t bytes_in, bytes_out;
	SSL *ssl;            /* NULL: plaintext; else every byte goes through it (tls.c) */
	struct wbuf tls_out; /* ciphertext SSL produced, not yet on the socket */
};

void conn_setup(struct conn *c, int fd, event_callback_fn on_read, event_callback_fn on_write,
		void *arg);
void conn_read_enable(struct conn *c, bool on);
void conn_write_enable(struct conn *c, bool on);
/* Reads until the socket would block or the buffer is full.  With TLS, the
 * writes below return IO_DONE only once the ciphertext is on the socket. */
enum io_result conn_read(struct conn *c);
/* Writes the output queue. */
enum io_result conn_flush(struct conn *c);
/* Writes src's parsed-not-sent bytes to dst's socket (after dst's own queue). */
enum io_result conn_forward(struct conn *src, struct conn *dst);
/* For batch.c: where a recv into c's buffer goes (false: the buffer is
 * full, read nothing), and what it returned (bytes, 0 or -errno). */
bool conn_read_room(struct conn *c, uint8_t **at, uint32_t *room);
void conn_read_done(struct conn *c, int res, uint32_t room);
/* Returns the input buffer to the free list when nothing is left in it. */
void conn_release_buffer(struct conn *c);
/* Removes events, closes the socket, returns the buffers. */
void conn_teardown(struct conn *c);

/* The next message's header, when 5 bytes are unparsed. */
static inline bool conn_peek_header(const struct conn *c, uint8_t *type, uint32_t *len)
{
	const struct iobuf *b = c->in;
	if (!b || iobuf_unparsed(b) < 5)
		return false;
	*type = b->data[b->parsed];
	*len = ((uint32_t)b->data[b->parsed + 1] << 24) | ((uint32_t)b->data[b->parsed + 2] << 16) |
	       ((uint32_t)b->data[b->parsed + 3] << 8) | b->data[b->parsed + 4];
	return true;
}

/* Text form of a socket address: "10.0.0.5:5432", "[::1]:5432" or a path. */
void conn_format_addr(const void *sa, char *buf, unsigned buflen);
bool conn_set_socket_options(int fd, bool tcp);
/* tcp_keepalive, tcp_keepidle, tcp_keepintvl, tcp_keepcnt, tcp_user_timeout
 * and tcp_socket_buffer on a TCP socket (conn_set_socket_options does it for
 * every client and server socket). */
void conn_set_tcp_options(int fd, const struct config *cfg);

#endif
