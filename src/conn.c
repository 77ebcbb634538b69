/*
 * conn.c: byte movement for one socket.  Reads go into the connection's own
 * buffer (taken from the free list on demand); forwarding writes straight
 * from the source's buffer to the destination socket, so a packet is copied
 * once, kernel to kernel through our buffer.  Reads loop until EAGAIN so one
 * readiness event empties the socket.
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
#include <sys/un.h>
#include <unistd.h>

#include "runtime.h"

void conn_setup(struct conn *c, int fd, event_callback_fn on_read, event_callback_fn on_write,
		void *arg)
{
	c->fd = fd;
	event_assign(&c->ev_read, fleet.base, fd, EV_READ | EV_PERSIST, on_read, arg);
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

enum io_result conn_read(struct conn *c)
{
	if (!c->in)
		c->in = iobuf_get();
	struct iobuf *b = c->in;
	if (b->done == b->recv)
		b->done = b->parsed = b->recv = 0;
	else if (b->size - b->recv < b->size / 4)
		iobuf_compact(b);
	for (;;) {
		if (b->recv == b->size)
			return IO_DONE; /* full: the owner parses, then reads again */
		ssize_t n = read(c->fd, b->data + b->recv, b->size - b->recv);
		if (n > 0) {
			b->recv += (uint32_t)n;
			c->bytes_in += (uint64_t)n;
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

static enum io_result write_all(struct conn *dst, const uint8_t *p, uint32_t len, uint32_t *sent)
{
	while (*sent < len) {
		ssize_t n = send(dst->fd, p + *sent, len - *sent, MSG_NOSIGNAL);
		if (n > 0) {
			*sent += (uint32_t)n;
			dst->bytes_out += (uint64_t)n;
			continue;
		}
		if (n < 0 && errno == EINTR)
			continue;
		if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK))
			return IO_AGAIN;
		return IO_ERROR;
	}
	return IO_DONE;
}

enum io_result conn_flush(struct conn *c)
{
	if (!wbuf_pending(&c->out))
		return IO_DONE;
	enum io_result r = write_all(c, c->out.data, c->out.len, &c->out.sent);
	if (r == IO_DONE)
		wbuf_reset(&c->out);
	return r;
}

enum io_result conn_forward(struct conn *src, struct conn *dst)
{
	enum io_result r = conn_flush(dst);
	if (r != IO_DONE)
		return r;
	struct iobuf *b = src->in;
	if (!b || b->done == b->parsed)
		return IO_DONE;
	return write_all(dst, b->data, b->parsed, &b->done);
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
		setsockopt(fd, SOL_SOCKET, SO_KEEPALIVE, &one, sizeof(one));
	}
	return true;
}
