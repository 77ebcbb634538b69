/*
 * listener.c: opens listen_addr:listen_port (every address it resolves to,
 * "*" meaning all) and unix_socket_dir/.s.PGSQL.<port>, and accepts until
 * the queue is empty on each readiness event.  It knows nothing of the
 * protocol beyond the one ErrorResponse that refuses a connection it has
 * no room for: a new socket goes straight to client_accept().
 */
#include "listener.h"

#include <errno.h>
#include <fcntl.h>
#include <grp.h>
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
#include "mailbox.h"
#include "runtime.h"

#define MAX_LISTENERS 16

struct listener {
	int fd;
	struct event *ev;
	bool tcp;
	char path[108];
};

static THREAD_LOCAL struct listener listeners[MAX_LISTENERS];
static THREAD_LOCAL int n_listeners;

/*
 * Accepting never spins and never leaves a client hanging.  Every accepted
 * socket counts against max_client_conn from the moment it is accepted (a
 * socket that never sends a startup packet holds a descriptor all the same,
 * until client_login_timeout).  Over the limit a connection is accepted
 * only to be told 53300: after its startup packet while one of
 * CLIENT_REFUSE_SLOTS is free (see client.h), else at once.  When the
 * process is out of descriptors (EMFILE, ENFILE), the spare one,
 * an open /dev/null, is given up for a moment to do the same; if even that
 * fails, accepting pauses for ACCEPT_PAUSE seconds, since the listening
 * socket stays readable and the loop would otherwise spin on it.  Refusals
 * and pauses are logged at most once per ACCEPT_LOG_EVERY seconds, with a
 * count, not once per connection.
 */
#define ACCEPT_PAUSE 0.25
#define ACCEPT_LOG_EVERY 1.0

static THREAD_LOCAL int spare_fd = -1;
static THREAD_LOCAL struct event *resume_ev;
static THREAD_LOCAL bool paused;
static THREAD_LOCAL double last_log;
static THREAD_LOCAL unsigned long refused, pauses;

static void spare_reserve(void)
{
	if (spare_fd < 0)
		spare_fd = open("/dev/null", O_RDONLY | O_CLOEXEC);
}

/* One line per ACCEPT_LOG_EVERY at most: the first event of a burst is
 * logged at once, the rest are counted into the next line. */
static void note_refusal(const char *why, int err)
{
	double now = fleet_now();
	if (last_log > 0 && now - last_log < ACCEPT_LOG_EVERY)
		return;
	char n_refused[24], n_pauses[24];
	snprintf(n_refused, sizeof(n_refused), "%lu", refused);
	snprintf(n_pauses, sizeof(n_pauses), "%lu", pauses);
	log_warn("refusing new clients", "reason", why, "error", err ? strerror(err) : "",
		 "refused", n_refused, "accept_pauses", n_pauses, NULL);
	refused = pauses = 0;
	last_log = now;
}

/* Tells a connection pgfleet will not serve why, and closes it.  The
 * message is small and the socket new: it fits the send buffer at once.
 * What the client already sent is read first, so that the close is a FIN
 * and not a reset that could overtake the message. */
static void refuse_socket(int fd, const char *message)
{
	uint8_t msg[160];
	size_t mlen = strlen(message), n = 5;
	static const char head[] = "SFATAL\0VFATAL\0C53300\0M";
	if (mlen > sizeof(msg) - 5 - (sizeof(head) - 1) - 2)
		mlen = sizeof(msg) - 5 - (sizeof(head) - 1) - 2;
	memcpy(msg + n, head, sizeof(head) - 1);
	n += sizeof(head) - 1;
	memcpy(msg + n, message, mlen);
	n += mlen;
	msg[n++] = 0;
	msg[n++] = 0;
	msg[0] = 'E';
	uint32_t len = (uint32_t)n - 1;
	msg[1] = (uint8_t)(len >> 24);
	msg[2] = (uint8_t)(len >> 16);
	msg[3] = (uint8_t)(len >> 8);
	msg[4] = (uint8_t)len;
	ssize_t w = send(fd, msg, n, MSG_NOSIGNAL | MSG_DONTWAIT);
	(void)w;
	uint8_t sink[1024];
	ssize_t r = recv(fd, sink, sizeof(sink), MSG_DONTWAIT);
	(void)r;
	close(fd);
	refused++;
}

void listener_note_refusal(const char *why)
{
	refused++;
	note_refusal(why, 0);
}

static void listeners_pause(bool pause)
{
	for (int i = 0; i < n_listeners; i++) {
		if (pause)
			event_del(listeners[i].ev);
		else if (event_add(listeners[i].ev, NULL) < 0)
			log_error("cannot resume accepting", NULL);
	}
	paused = pause;
}

static void on_resume(evutil_socket_t fd, short what, void *arg)
{
	spare_reserve();
	listeners_pause(false);
}

/* Out of descriptors, or another error that would repeat at once: stop
 * watching the listening sockets for a moment. */
static void accept_pause(int err)
{
	if (!resume_ev)
		resume_ev = evtimer_new(fleet.base, on_resume, NULL);
	if (!resume_ev)
		return; /* cannot happen short of memory: better busy than deaf */
	pauses++;
	listeners_pause(true);
	struct timeval tv = {0, (suseconds_t)(ACCEPT_PAUSE * 1e6)};
	evtimer_add(resume_ev, &tv);
	note_refusal("accept failed: paused", err);
}

static bool out_of_descriptors(int err)
{
	return err == EMFILE || err == ENFILE;
}

/* Errors of the connection being accepted, not of the listening socket:
 * accept(2) passes them on; the next one may be fine. */
static bool accept_retriable(int err)
{
	return err == EINTR || err == ECONNABORTED || err == EPROTO || err == ENETDOWN ||
	       err == ENOPROTOOPT || err == EHOSTDOWN || err == ENONET || err == EHOSTUNREACH ||
	       err == ENETUNREACH || err == EPERM;
}

static void on_accept(evutil_socket_t fd, short what, void *arg)
{
	struct listener *l = arg;
	for (int i = 0; i < 64 && !paused; i++) {
		struct sockaddr_storage ss;
		socklen_t len = sizeof(ss);
		int cfd = accept4(fd, (struct sockaddr *)&ss, &len, SOCK_NONBLOCK | SOCK_CLOEXEC);
		if (cfd < 0) {
			int err = errno;
			if (err == EAGAIN || err == EWOULDBLOCK)
				return;
			if (accept_retriable(err))
				continue;
			if (out_of_descriptors(err) && spare_fd >= 0) {
				/* The spare descriptor makes room to say no. */
				close(spare_fd);
				spare_fd = -1;
				cfd = accept4(fd, NULL, NULL, SOCK_NONBLOCK | SOCK_CLOEXEC);
				int again = cfd < 0 ? errno : 0;
				if (cfd >= 0)
					refuse_socket(cfd, "sorry, too many clients already");
				spare_reserve();
				if (cfd >= 0) {
					note_refusal("out of file descriptors", err);
					continue;
				}
				if (again == EAGAIN || again == EWOULDBLOCK)
					return; /* another worker took it: nothing waits */
			}
			accept_pause(err);
			return;
		}
		int clients = worker_threaded() ? worker_clients_add(0) : fleet.client_count;
		if (clients >= fleet.cfg.max_client_conn + CLIENT_REFUSE_SLOTS) {
			refuse_socket(cfd, CLIENT_REFUSE_MESSAGE);
			note_refusal("max_client_conn", 0);
			continue;
		}
		if (!conn_set_socket_options(cfd, l->tcp)) {
			close(cfd);
			continue;
		}
		client_accept(cfd, (struct sockaddr *)&ss, len, clients >= fleet.cfg.max_client_conn);
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

static bool listen_tcp_one(const char *addr)
{
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
		if (bind(fd, ai->ai_addr, ai->ai_addrlen) < 0 || listen(fd, (int)fleet.cfg.listen_backlog) < 0) {
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

/* listen_addr is a comma-separated list, as PgBouncer's: every entry must
 * bind (config.c refuses empty entries). */
static bool listen_tcp(void)
{
	const char *p = fleet.cfg.listen_addr;
	for (;;) {
		const char *comma = strchr(p, ',');
		size_t n = comma ? (size_t)(comma - p) : strlen(p);
		char one[256];
		while (n && (*p == ' ' || *p == '\t'))
			p++, n--;
		while (n && (p[n - 1] == ' ' || p[n - 1] == '\t'))
			n--;
		if (n >= sizeof(one)) {
			log_error("cannot resolve listen_addr", "listen_addr", fleet.cfg.listen_addr,
				  "error", "address too long", NULL);
			return false;
		}
		memcpy(one, p, n);
		one[n] = '\0';
		if (!listen_tcp_one(one))
			return false;
		if (!comma)
			return true;
		p = comma + 1;
	}
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
	if (bind(fd, (struct sockaddr *)&un, sizeof(un)) < 0 || listen(fd, (int)fleet.cfg.listen_backlog) < 0) {
		log_error("cannot listen", "addr", un.sun_path, "error", strerror(errno), NULL);
		close(fd);
		return false;
	}
	/* unix_socket_mode and unix_socket_group, PgBouncer's (config.c checked
	 * the mode's shape); start-up only, before the loop runs, so the group
	 * lookup may block. */
	mode_t mode = (mode_t)strtol(fleet.cfg.unix_socket_mode, NULL, 8);
	if (chmod(un.sun_path, mode) < 0) {
		log_error("cannot set unix socket mode", "addr", un.sun_path, "error",
			  strerror(errno), NULL);
		close(fd);
		return false;
	}
	if (*fleet.cfg.unix_socket_group) {
		struct group *g = getgrnam(fleet.cfg.unix_socket_group);
		if (!g || chown(un.sun_path, (uid_t)-1, g->gr_gid) < 0) {
			log_error("cannot set unix socket group", "addr", un.sun_path, "group",
				  fleet.cfg.unix_socket_group, "error",
				  g ? strerror(errno) : "no such group", NULL);
			close(fd);
			return false;
		}
	}
	if (!add_listener(fd, false, un.sun_path)) {
		close(fd);
		return false;
	}
	log_info("listening", "addr", un.sun_path, NULL);
	return true;
}

bool listener_start(void)
{
	spare_reserve();
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
	paused = false;
	if (resume_ev)
		event_free(resume_ev);
	resume_ev = NULL;
	if (spare_fd >= 0)
		close(spare_fd);
	spare_fd = -1;
}
