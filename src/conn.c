/*
 * conn.c: byte movement for one socket.  Reads go into the connection's own
 * buffer (taken from the free list on demand); forwarding writes straight
 * from the source's buffer to the destination socket, so a packet is copied
 * once, kernel to kernel through our buffer.  Reads loop while they fill
 * the buffer, and stop at the first short read (the socket is empty then:
 * no read() just to hear EAGAIN).
 *
 * With TLS (c->ssl set) the same calls go through OpenSSL: reads decrypt into
 * the same buffer, writes encrypt one record's worth at a time into the
 * connection's ciphertext queue and put it on the socket before encrypting
 * more, so a slow peer pushes back exactly as with send().
 */
#include "conn.h"

#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <stdio.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/uio.h>
#include <sys/un.h>
#include <unistd.h>

#include "batch.h"
#include "runtime.h"
#include "tls.h"

/* Plaintext handed to SSL at once: one TLS record. */
#define TLS_CHUNK 16384

/* The socket is readable: read it now, or with the pass's other readable
 * sockets in one submission (batch.c calls on_read afterwards).  A result
 * already waiting (pre) or TLS (OpenSSL reads the socket itself) go now. */
static void on_readable(evutil_socket_t fd, short what, void *arg)
{
	struct conn *c = arg;
	if (c->pre || c->ssl || !batch_queue_read(c))
		c->on_read(fd, what, c->owner);
}

void conn_setup(struct conn *c, int fd, event_callback_fn on_read, event_callback_fn on_write,
		void *arg)
{
	c->fd = fd;
	c->on_read = on_read;
	c->owner = arg;
	c->read_slot = c->write_slot = 0;
	c->later_off = c->later_len = 0;
	c->pre = 0;
	event_assign(&c->ev_read, fleet.base, fd, EV_READ | EV_PERSIST, on_readable, c);
	event_assign(&c->ev_write, fleet.base, fd, EV_WRITE | EV_PERSIST, on_write, arg);
	c->read_on = c->write_on = false;
}

void conn_read_enable(struct conn *c, bool on)
{
	if (c->fd < 0 || on == c->read_on)
		return;
	if (on)
		event_add(&c->ev_read, NULL);
	else
		event_del(&c->ev_read);
	c->read_on = on;
	/* Bytes SSL already decrypted, or a batched recv already took, will
	 * never make the socket readable. */
	if (on && (c->pre || tls_pending(c)))
		event_active(&c->ev_read, EV_READ, 0);
}

void conn_write_enable(struct conn *c, bool on)
{
	if (c->fd < 0 || on == c->write_on)
		return;
	if (on)
		event_add(&c->ev_write, NULL);
	else
		event_del(&c->ev_write);
	c->write_on = on;
}

static enum io_result read_tls(struct conn *c, struct iobuf *b)
{
	enum io_result r;
	for (;;) {
		if (b->recv == b->size) {
			/* Full: the owner parses, then reads again.  What SSL holds
			 * decrypted will not wake us up, so come back for it. */
			if (c->read_on && tls_pending(c))
				event_active(&c->ev_read, EV_READ, 0);
			r = IO_DONE;
			break;
		}
		uint32_t n;
		r = tls_read(c, b->data + b->recv, b->size - b->recv, &n);
		if (r != IO_DONE)
			break;
		b->recv += n;
		c->bytes_in += n;
	}
	/* Reading can make SSL answer (an alert, a KeyUpdate): send that too. */
	if (wbuf_pending(&c->tls_out) && tls_drain(c) == IO_AGAIN)
		conn_write_enable(c, true);
	return r;
}

/* A buffer with room at its end: reuse it from the start when all of it
 * was consumed, compact it when the free end is short. */
static struct iobuf *read_buffer(struct conn *c)
{
	if (!c->in)
		c->in = iobuf_get();
	struct iobuf *b = c->in;
	if (b->done == b->recv)
		b->done = b->parsed = b->recv = 0;
	else if (b->size - b->recv < b->size / 4)
		iobuf_compact(b);
	return b;
}

bool conn_read_room(struct conn *c, uint8_t **at, uint32_t *room)
{
	struct iobuf *b = read_buffer(c);
	*at = b->data + b->recv;
	*room = b->size - b->recv;
	return *room > 0;
}

void conn_read_done(struct conn *c, int res, uint32_t room)
{
	if (res > 0) {
		c->in->recv += (uint32_t)res;
		c->bytes_in += (uint64_t)res;
		c->pre = (uint32_t)res < room ? CONN_PRE_SHORT : CONN_PRE_FULL;
	} else if (res == 0) {
		c->pre = CONN_PRE_EOF;
	} else if (res == -EAGAIN || res == -EWOULDBLOCK || res == -EINTR) {
		c->pre = CONN_PRE_AGAIN;
	} else {
		c->pre = res;
	}
}

/* What a batched recv found, as the recv() loop below would have said it. */
static bool take_pre(struct conn *c, enum io_result *r)
{
	int32_t pre = c->pre;
	c->pre = 0;
	switch (pre) {
	case CONN_PRE_FULL:
		return false; /* read on */
	case CONN_PRE_SHORT:
	case CONN_PRE_AGAIN:
		*r = IO_AGAIN;
		return true;
	case CONN_PRE_EOF:
		*r = IO_EOF;
		return true;
	default:
		errno = -pre;
		*r = IO_ERROR;
		return true;
	}
}

enum io_result conn_read(struct conn *c)
{
	enum io_result pre_r;
	if (c->pre && take_pre(c, &pre_r)) {
		if (!c->in)
			c->in = iobuf_get(); /* callers expect one after a read */
		return pre_r;
	}
	struct iobuf *b = read_buffer(c);
	if (c->ssl)
		return read_tls(c, b);
	for (;;) {
		if (b->recv == b->size)
			return IO_DONE; /* full: the owner parses, then reads again */
		uint32_t room = b->size - b->recv;
		/* recv(), not read(): the socket call skips the file layer's
		 * checks (vfs_read, fsnotify, position lock), about 2 % of the
		 * kernel time spent per message. */
		ssize_t n = recv(c->fd, b->data + b->recv, room, 0);
		if (n > 0) {
			b->recv += (uint32_t)n;
			c->bytes_in += (uint64_t)n;
			/* A short read took all the socket had: asking again would
			 * only return EAGAIN, one wasted syscall per message.  The
			 * read event is level-triggered, so later bytes wake us. */
			if ((uint32_t)n < room)
				return IO_AGAIN;
			continue;
		}
		if (n == 0)
			return IO_EOF;
		if (errno == EINTR)
			continue;
		if (errno == EAGAIN || errno == EWOULDBLOCK)
			return IO_AGAIN;
		return IO_ERROR;
	}
}

/* Earlier ciphertext first, then one record at a time.  Bytes SSL took are
 * counted as sent; IO_AGAIN while their ciphertext waits for the socket, with
 * the write event on, since some callers only watch their own queue. */
static enum io_result write_tls(struct conn *dst, const uint8_t *p, uint32_t len, uint32_t *sent)
{
	for (;;) {
		enum io_result r = tls_drain(dst);
		if (r == IO_AGAIN)
			conn_write_enable(dst, true);
		if (r != IO_DONE || *sent == len)
			return r;
		uint32_t n, chunk = len - *sent < TLS_CHUNK ? len - *sent : TLS_CHUNK;
		r = tls_write(dst, p + *sent, chunk, &n);
		if (r != IO_DONE)
			return r;
		*sent += n;
		dst->bytes_out += n;
	}
}

/*
 * Plain sockets: pgfleet's own queued bytes for dst (its out queue: a Parse
 * it injects, a SET, faked replies) and then the source's forwarded bytes
 * (b; either may be NULL or empty).  Both at once go in one sendmsg: one
 * syscall where two send()s would be, and one TCP segment for the peer to
 * wake up to.
 */
static enum io_result write_plain(struct conn *dst, struct iobuf *b)
{
	struct wbuf *w = &dst->out;
	/* In a loop pass with other sockets to write: copied, sent at the end
	 * of the pass with the others in one submission (batch.c). */
	if (batch_defer_write(dst, b))
		return IO_DONE;
	/* Bytes deferred earlier in this pass go first. */
	batch_take_write(dst, w);
	for (;;) {
		struct iovec iov[2];
		int n_iov = 0;
		bool own = wbuf_pending(w);
		if (own)
			iov[n_iov++] = (struct iovec){w->data + w->sent, w->len - w->sent};
		if (b && b->done < b->parsed)
			iov[n_iov++] = (struct iovec){b->data + b->done, b->parsed - b->done};
		if (!n_iov)
			return IO_DONE;
		ssize_t n;
		if (n_iov == 1) {
			n = send(dst->fd, iov[0].iov_base, iov[0].iov_len, MSG_NOSIGNAL);
		} else {
			struct msghdr msg = {.msg_iov = iov, .msg_iovlen = 2};
			n = sendmsg(dst->fd, &msg, MSG_NOSIGNAL);
		}
		if (n <= 0) {
			if (n < 0 && errno == EINTR)
				continue;
			if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK))
				return IO_AGAIN;
			return IO_ERROR;
		}
		dst->bytes_out += (uint64_t)n;
		uint32_t left = (uint32_t)n;
		if (own) {
			uint32_t mine = w->len - w->sent < left ? w->len - w->sent : left;
			w->sent += mine;
			left -= mine;
			if (!wbuf_pending(w))
				wbuf_reset(w);
		}
		if (left)
			b->done += left;
	}
}

enum io_result conn_flush(struct conn *c)
{
	if (!c->ssl)
		return write_plain(c, NULL);
	uint32_t none = 0;
	if (!wbuf_pending(&c->out))
		return write_tls(c, NULL, 0, &none);
	enum io_result r = write_tls(c, c->out.data, c->out.len, &c->out.sent);
	if (!wbuf_pending(&c->out))
		wbuf_reset(&c->out);
	return r;
}

enum io_result conn_forward(struct conn *src, struct conn *dst)
{
	struct iobuf *b = src->in;
	if (!dst->ssl)
		return write_plain(dst, b);
	enum io_result r = conn_flush(dst);
	if (r != IO_DONE || !b || b->done == b->parsed)
		return r;
	return write_tls(dst, b->data, b->parsed, &b->done);
}

void conn_release_buffer(struct conn *c)
{
	if (c->in && iobuf_empty(c->in)) {
		iobuf_put(c->in);
		c->in = NULL;
	}
}

void conn_teardown(struct conn *c)
{
	/* What this pass deferred would have been on the socket already. */
	batch_forget(c);
	c->pre = 0;
	tls_end(c); /* while the socket is still open: close_notify */
	if (c->fd >= 0) {
		conn_read_enable(c, false);
		conn_write_enable(c, false);
		close(c->fd);
		c->fd = -1;
	}
	iobuf_put(c->in);
	c->in = NULL;
	wbuf_free(&c->out);
}

void conn_format_addr(const void *sa_, char *buf, unsigned buflen)
{
	const struct sockaddr *sa = sa_;
	char host[INET6_ADDRSTRLEN];
	if (sa->sa_family == AF_INET) {
		const struct sockaddr_in *in = sa_;
		inet_ntop(AF_INET, &in->sin_addr, host, sizeof(host));
		snprintf(buf, buflen, "%s:%u", host, ntohs(in->sin_port));
	} else if (sa->sa_family == AF_INET6) {
		const struct sockaddr_in6 *in6 = sa_;
		inet_ntop(AF_INET6, &in6->sin6_addr, host, sizeof(host));
		snprintf(buf, buflen, "[%s]:%u", host, ntohs(in6->sin6_port));
	} else if (sa->sa_family == AF_UNIX) {
		const struct sockaddr_un *un = sa_;
		snprintf(buf, buflen, "%s", un->sun_path[0] ? un->sun_path : "unix");
	} else {
		snprintf(buf, buflen, "?");
	}
}

bool conn_set_socket_options(int fd, bool tcp)
{
	int fl = fcntl(fd, F_GETFL);
	if (fl < 0 || fcntl(fd, F_SETFL, fl | O_NONBLOCK) < 0)
		return false;
	if (fcntl(fd, F_SETFD, FD_CLOEXEC) < 0)
		return false;
	if (tcp) {
		int one = 1;
		/* Small protocol messages must not wait for Nagle. */
		setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
		conn_set_tcp_options(fd, &fleet.cfg);
	}
	return true;
}

/* PgBouncer's tcp_* settings: 0 leaves the kernel's value (so a setting
 * that was never written changes nothing).  Best effort, as PgBouncer: a
 * kernel that refuses one still gets a working connection. */
void conn_set_tcp_options(int fd, const struct config *cfg)
{
	int on = cfg->tcp_keepalive ? 1 : 0;
	setsockopt(fd, SOL_SOCKET, SO_KEEPALIVE, &on, sizeof(on));
	if (on) {
		int v;
		if (cfg->tcp_keepidle > 0) {
			v = (int)cfg->tcp_keepidle;
			setsockopt(fd, IPPROTO_TCP, TCP_KEEPIDLE, &v, sizeof(v));
		}
		if (cfg->tcp_keepintvl > 0) {
			v = (int)cfg->tcp_keepintvl;
			setsockopt(fd, IPPROTO_TCP, TCP_KEEPINTVL, &v, sizeof(v));
		}
		if (cfg->tcp_keepcnt > 0) {
			v = (int)cfg->tcp_keepcnt;
			setsockopt(fd, IPPROTO_TCP, TCP_KEEPCNT, &v, sizeof(v));
		}
	}
	if (cfg->tcp_user_timeout > 0) {
		unsigned int ms = (unsigned int)cfg->tcp_user_timeout;
		setsockopt(fd, IPPROTO_TCP, TCP_USER_TIMEOUT, &ms, sizeof(ms));
	}
	if (cfg->tcp_socket_buffer > 0) {
		int v = (int)cfg->tcp_socket_buffer;
		setsockopt(fd, SOL_SOCKET, SO_SNDBUF, &v, sizeof(v));
		setsockopt(fd, SOL_SOCKET, SO_RCVBUF, &v, sizeof(v));
	}
}
