/*
 * listener.c: opens listen_addr:listen_port (every address it resolves to,
 * "*" meaning all) and unix_socket_dir/.s.PGSQL.<port>, and accepts until
 * the queue is empty on each readiness event.  It knows nothing of the
 * protocol: a new socket goes straight to client_accept().
 */
#include "listener.h"

#include <errno.h>
#include <fcntl.h>
#include <netdb.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>

#include "client.h"
#include "conn.h"
#include "log.h"
#include "runtime.h"
#include "worker.h"

#define MAX_LISTENERS 16

struct listener {
	int fd;
	struct event *ev;
	bool tcp;
	char path[108];
};

static THREAD_LOCAL struct listener listeners[MAX_LISTENERS];
static THREAD_LOCAL int n_listeners;

static void on_accept(evutil_socket_t fd, short what, void *arg)
{
	struct listener *l = arg;
	for (int i = 0; i < 64; i++) {
		struct sockaddr_storage ss;
		socklen_t len = sizeof(ss);
		int cfd = accept4(fd, (struct sockaddr *)&ss, &len, SOCK_NONBLOCK | SOCK_CLOEXEC);
		if (cfd < 0) {
			if (errno == EINTR)
				continue;
			if (errno != EAGAIN && errno != EWOULDBLOCK)
				log_warn("accept failed", "error", strerror(errno), NULL);
			return;
		}
		if (!conn_set_socket_options(cfd, l->tcp)) {
			close(cfd);
			continue;
		}
		client_accept(cfd, (struct sockaddr *)&ss, len);
	}
}

static bool add_listener(int fd, bool tcp, const char *path)
{
	struct listener *l = &listeners[n_listeners];
	l->fd = fd;
	l->tcp = tcp;
	snprintf(l->path, sizeof(l->path), "%s", path ? path : "");
	l->ev = event_new(fleet.base, fd, EV_READ | EV_PERSIST, on_accept, l);
	if (!l->ev || event_add(l->ev, NULL) < 0)
		return false;
	n_listeners++;
	return true;
}

static bool listen_tcp(void)
{
	const char *addr = fleet.cfg.listen_addr;
	char port[16];
	snprintf(port, sizeof(port), "%lld", fleet.cfg.listen_port);
	struct addrinfo hints, *res, *ai;
	memset(&hints, 0, sizeof(hints));
	hints.ai_family = AF_UNSPEC;
	hints.ai_socktype = SOCK_STREAM;
	hints.ai_flags = AI_PASSIVE | AI_NUMERICSERV;
	/* Resolving listen_addr happens once at start-up, before the loop runs. */
	int rc = getaddrinfo(strcmp(addr, "*") == 0 ? NULL : addr, port, &hints, &res);
	if (rc != 0) {
		log_error("cannot resolve listen_addr", "listen_addr", addr, "error",
			  gai_strerror(rc), NULL);
		return false;
	}
	bool ok = false;
	for (ai = res; ai && n_listeners < MAX_LISTENERS - 1; ai = ai->ai_next) {
		int fd = socket(ai->ai_family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
		if (fd < 0)
			continue;
		int one = 1;
		setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one));
		/* workers = N: every worker listens on the same port; the kernel
		 * spreads the connections over them. */
		if (fleet.cfg.so_reuseport || worker_threaded())
			setsockopt(fd, SOL_SOCKET, SO_REUSEPORT, &one, sizeof(one));
		if (ai->ai_family == AF_INET6)
			setsockopt(fd, IPPROTO_IPV6, IPV6_V6ONLY, &one, sizeof(one));
		if (bind(fd, ai->ai_addr, ai->ai_addrlen) < 0 || listen(fd, 1024) < 0) {
			char where[128];
			conn_format_addr(ai->ai_addr, where, sizeof(where));
			log_error("cannot listen", "addr", where, "error", strerror(errno), NULL);
			close(fd);
			ok = false;
			break;
		}
		if (!add_listener(fd, true, NULL)) {
			close(fd);
			break;
		}
		char where[128];
		conn_format_addr(ai->ai_addr, where, sizeof(where));
		log_info("listening", "addr", where, NULL);
		ok = true;
	}
	freeaddrinfo(res);
	return ok;
}

static bool listen_unix(void)
{
	struct sockaddr_un un;
	memset(&un, 0, sizeof(un));
	un.sun_family = AF_UNIX;
	int n = snprintf(un.sun_path, sizeof(un.sun_path), "%s/.s.PGSQL.%lld",
			 fleet.cfg.unix_socket_dir, fleet.cfg.listen_port);
	if (n < 0 || (size_t)n >= sizeof(un.sun_path)) {
		log_error("unix_socket_dir too long", NULL);
		return false;
	}
	unlink(un.sun_path);
	int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
	if (fd < 0)
		return false;
	if (bind(fd, (struct sockaddr *)&un, sizeof(un)) < 0 || listen(fd, 1024) < 0) {
		log_error("cannot listen", "addr", un.sun_path, "error", strerror(errno), NULL);
		close(fd);
		return false;
	}
	chmod(un.sun_path, 0777);
	if (!add_listener(fd, false, un.sun_path)) {
		close(fd);
		return false;
	}
	log_info("listening", "addr", un.sun_path, NULL);
	return true;
}

bool listener_start(void)
{
	if (!listen_tcp())
		return false;
	/* One Unix socket, worker 0's: a path cannot be bound twice, and
	 * local connections are few. */
	if (*fleet.cfg.unix_socket_dir && worker_index() == 0 && !listen_unix())
		return false;
	return true;
}

int listener_count(void)
{
	return n_listeners;
}

void listener_stop(void)
{
	for (int i = 0; i < n_listeners; i++) {
		event_free(listeners[i].ev);
		close(listeners[i].fd);
		if (listeners[i].path[0])
			unlink(listeners[i].path);
	}
	n_listeners = 0;
}
