/*
 * cancel.c: query cancellation (protocol section "Canceling Requests in
 * Progress").  Clients get pgfleet's own BackendKeyData, never a server's:
 * their transactions move between server connections and replicas, so the
 * key that stops a query must follow the client.  A hash table keyed by
 * (pid, key) finds the client a CancelRequest names; the request goes on to
 * the backend linked to that client, over a fresh connection to that
 * backend's replica, carrying that backend's key.
 *
 * PostgreSQL signals the backend from the process that read the request,
 * which then closes the connection; it may signal twice (the backend and
 * its process group), and the second signal can come after the canceled
 * query ended.  So the backend stays out of the pool until the server has
 * closed the cancel connection (server->cancels): were it given to another
 * client meanwhile, that client's query could be the one canceled.
 *
 * Must not: block (the cancel connection is as non-blocking as any other),
 * send a cancel anywhere but the replica running the query, or keep a
 * pointer to a client across loop passes: a cancel connection remembers
 * keys, and looks its client up again once it is connected.  Its pointer
 * to the server is cleared when that server is closed.
 */
#include "cancel.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/time.h>
#include <unistd.h>

#include "client.h"
#include "log.h"
#include "mailbox.h"
#include "pool.h"
#include "proto.h"
#include "runtime.h"
#include "server.h"

#define CANCEL_PKT_LEN 16u
#define CANCEL_MIN_BUCKETS 256u
#define CANCEL_DEFAULT_TIMEOUT 15.0

/* ---- clients by BackendKeyData ------------------------------------------------ */

static THREAD_LOCAL struct list *buckets; /* nbuckets chains of client->cancel_node */
static THREAD_LOCAL uint32_t nbuckets;    /* a power of two, 0 before the first client */
static THREAD_LOCAL uint32_t nclients;

/* issue 20: set once before any loop runs, read by every worker. */
static uint16_t instance_id;
static bool (*forward_foreign)(uint32_t pid, uint32_t key);

_Static_assert(WORKER_PID_MASK == (1u << CANCEL_INSTANCE_SHIFT) - 1,
	       "the instance id sits right above the worker index");

void cancel_set_instance(uint16_t id)
{
	instance_id = id;
}

void cancel_on_foreign(bool (*fn)(uint32_t pid, uint32_t key))
{
	forward_foreign = fn;
}

static uint32_t bucket_of(uint32_t pid, uint32_t key, uint32_t n)
{
	/* The key is random, but it is also what a stranger sends: mix it. */
	uint32_t h = (key ^ (pid * 0x9e3779b1u)) * 0x85ebca6bu;
	h ^= h >> 16;
	return h & (n - 1);
}

static bool grow(void)
{
	uint32_t n = nbuckets ? nbuckets * 2 : CANCEL_MIN_BUCKETS;
	struct list *nb = malloc(n * sizeof(*nb));
	if (!nb)
		return false;
	for (uint32_t i = 0; i < n; i++)
		list_init(&nb[i]);
	for (uint32_t i = 0; i < nbuckets; i++) {
		struct list *it, *tmp;
		list_for_each_safe(it, tmp, &buckets[i]) {
			struct client *c = container_of(it, struct client, cancel_node);
			list_del(it);
			list_append(&nb[bucket_of(c->cancel_pid, c->cancel_key, n)], it);
		}
	}
	free(buckets);
	buckets = nb;
	nbuckets = n;
	return true;
}

struct client *cancel_find_client(uint32_t pid, uint32_t key)
{
	struct list *it;
	if (!nbuckets)
		return NULL;
	list_for_each(it, &buckets[bucket_of(pid, key, nbuckets)]) {
		struct client *c = container_of(it, struct client, cancel_node);
		if (c->cancel_pid == pid && c->cancel_key == key)
			return c;
	}
	return NULL;
}

void cancel_register(struct client *c)
{
	cancel_unregister(c);
	do {
		fleet_random(&c->cancel_pid, sizeof(c->cancel_pid));
		fleet_random(&c->cancel_key, sizeof(c->cancel_key));
		c->cancel_pid &= 0x7fffffff; /* a pid is a positive int32 */
		/* workers = N: the low bits name this worker, so a CancelRequest
		 * landing on another worker is forwarded here. */
		if (worker_threaded())
			c->cancel_pid = (c->cancel_pid & ~WORKER_PID_MASK) | (uint32_t)worker_index();
		/* peers: the bits above name this instance (never 0, so the pid
		 * is never 0 either). */
		if (instance_id)
			c->cancel_pid = (c->cancel_pid &
					 ~(CANCEL_INSTANCE_MASK << CANCEL_INSTANCE_SHIFT)) |
					((uint32_t)instance_id << CANCEL_INSTANCE_SHIFT);
	} while (c->cancel_pid == 0 || cancel_find_client(c->cancel_pid, c->cancel_key));
	if (nclients >= 2 * nbuckets && !grow() && !nbuckets) {
		/* No table at all: the client works, its queries just cannot be canceled. */
		log_warn("out of memory for the cancel key table", "client", c->addr_str, NULL);
		return;
	}
	list_append(&buckets[bucket_of(c->cancel_pid, c->cancel_key, nbuckets)], &c->cancel_node);
	nclients++;
}

void cancel_unregister(struct client *c)
{
	/* A zeroed node was never registered; a deleted one points to itself. */
	if (!c->cancel_node.next || list_empty(&c->cancel_node))
		return;
	list_del(&c->cancel_node);
	nclients--;
}

/* ---- cancel connections ------------------------------------------------------- */

struct cancel_conn {
	struct list node; /* inflight */
	int fd;
	bool connected;
	bool awaiting_close; /* sent: waiting for the server to close */
	struct server *server; /* the backend's connection; NULL once it is closed */
	struct event ev;
	double deadline;
	uint8_t pkt[CANCEL_PKT_LEN];
	uint32_t sent;
	/* Whose query, checked again once connected: by then the query may
	 * have ended and the backend may serve another client. */
	uint32_t client_pid, client_key, backend_pid, backend_key;
	char client_addr[64];
	char replica_addr[128];
	char why[32];
};

/* Thread-local, so it cannot be initialised with its own address: the first
 * cancel connection of a worker initialises it. */
static THREAD_LOCAL struct list inflight;

/* Is s running something for its client?  A ReadyForQuery is owed to it (a
 * cancel of pgfleet's own hidden queries would only break the session). */
static bool query_running(const struct server *s)
{
	return s && s->state == SERVER_ACTIVE && s->link && s->expect_rfq > 0;
}

static void cancel_free(struct cancel_conn *cc)
{
	struct server *s = cc->server;
	cc->server = NULL;
	event_del(&cc->ev);
	if (cc->fd >= 0)
		close(cc->fd);
	list_del(&cc->node);
	free(cc);
	if (s)
		server_cancel_done(s); /* last: it may hand s to a waiting client */
}

/* One log line per cancel connection, then it is gone.  Freed inside its own
 * callback: nothing else points to it but the inflight list. */
static void cancel_finish(struct cancel_conn *cc, enum log_level level, const char *msg,
			  const char *detail)
{
	char pid[16];
	snprintf(pid, sizeof(pid), "%u", cc->backend_pid);
	log_kv(level, msg, "client", cc->client_addr, "replica", cc->replica_addr, "backend_pid",
	       pid, "reason", cc->why, detail ? "detail" : NULL, detail, NULL);
	cancel_free(cc);
}

static bool still_running(const struct cancel_conn *cc)
{
	struct client *c = cancel_find_client(cc->client_pid, cc->client_key);
	struct server *s = c ? c->link : NULL;
	return query_running(s) && s->backend_pid == cc->backend_pid &&
	       s->backend_key == cc->backend_key &&
	       strcmp(s->pool->replica->addr_str, cc->replica_addr) == 0;
}

/* The deadline passed: before the request was written, or after it while
 * waiting for the server to close. */
static void cancel_timed_out(struct cancel_conn *cc)
{
	if (cc->awaiting_close)
		cancel_finish(cc, LOG_WARN, "cancel sent",
			      "the server kept the cancel connection open");
	else
		cancel_finish(cc, LOG_WARN, "cancel not sent", "server_connect_timeout");
}

static bool rearm(struct cancel_conn *cc)
{
	double left = cc->deadline - fleet_now();
	if (left <= 0)
		return false;
	struct timeval tv = {(time_t)left, (suseconds_t)((left - (double)(time_t)left) * 1e6)};
	return event_add(&cc->ev, &tv) == 0;
}

static void on_cancel_event(evutil_socket_t fd, short what, void *arg)
{
	struct cancel_conn *cc = arg;
	if (what & EV_TIMEOUT) {
		cancel_timed_out(cc);
		return;
	}
	if (!cc->connected) {
		int err = 0;
		socklen_t len = sizeof(err);
		if (getsockopt(cc->fd, SOL_SOCKET, SO_ERROR, &err, &len) < 0)
			err = errno;
		if (err) {
			cancel_finish(cc, LOG_WARN, "cancel not sent", strerror(err));
			return;
		}
		cc->connected = true;
		if (!still_running(cc)) {
			cancel_finish(cc, LOG_INFO, "cancel dropped",
				      "the query ended before the cancel connection was up");
			return;
		}
	}
	while (cc->sent < CANCEL_PKT_LEN) {
		ssize_t n = send(cc->fd, cc->pkt + cc->sent, CANCEL_PKT_LEN - cc->sent, MSG_NOSIGNAL);
		if (n > 0) {
			cc->sent += (uint32_t)n;
			continue;
		}
		if (n < 0 && errno == EINTR)
			continue;
		if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)) {
			if (!rearm(cc))
				cancel_timed_out(cc);
			return;
		}
		cancel_finish(cc, LOG_WARN, "cancel not sent", n < 0 ? strerror(errno) : "short write");
		return;
	}
	/* The server answers a CancelRequest with nothing but closing, once it
	 * has signalled the backend: wait for that (bounded by the deadline). */
	uint8_t junk[64];
	for (;;) {
		ssize_t n = recv(cc->fd, junk, sizeof(junk), 0);
		if (n > 0)
			continue;
		if (n < 0 && errno == EINTR)
			continue;
		if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)) {
			if (!cc->awaiting_close) {
				cc->awaiting_close = true;
				event_del(&cc->ev);
				event_assign(&cc->ev, fleet.base, cc->fd, EV_READ, on_cancel_event, cc);
			}
			if (!rearm(cc))
				cancel_timed_out(cc);
			return;
		}
		break; /* closed (or reset): the backend has been signalled */
	}
	cancel_finish(cc, LOG_INFO, "cancel sent", NULL);
}

static void put_u32(uint8_t *p, uint32_t v)
{
	p[0] = (uint8_t)(v >> 24);
	p[1] = (uint8_t)(v >> 16);
	p[2] = (uint8_t)(v >> 8);
	p[3] = (uint8_t)v;
}

bool cancel_server_query(struct server *s, const char *why)
{
	struct client *c = s->link;
	struct replica *r = s->pool->replica;
	if (!c)
		return false;
	struct cancel_conn *cc = calloc(1, sizeof(*cc));
	if (!cc) {
		log_warn("cancel not sent", "client", c->addr_str, "reason", why, "detail",
			 "out of memory", NULL);
		return false;
	}
	list_init(&cc->node);
	cc->server = s;
	s->cancels++;
	cc->client_pid = c->cancel_pid;
	cc->client_key = c->cancel_key;
	cc->backend_pid = s->backend_pid;
	cc->backend_key = s->backend_key;
	snprintf(cc->client_addr, sizeof(cc->client_addr), "%s", c->addr_str);
	snprintf(cc->replica_addr, sizeof(cc->replica_addr), "%s", r->addr_str);
	snprintf(cc->why, sizeof(cc->why), "%s", why);
	put_u32(cc->pkt, CANCEL_PKT_LEN);
	put_u32(cc->pkt + 4, PROTO_CANCEL_REQUEST);
	put_u32(cc->pkt + 8, s->backend_pid);
	put_u32(cc->pkt + 12, s->backend_key);
	double timeout = fleet.cfg.server_connect_timeout > 0 ? fleet.cfg.server_connect_timeout
							      : CANCEL_DEFAULT_TIMEOUT;
	cc->deadline = fleet_now() + timeout;

	/* From here on cancel_finish() undoes everything: the event is assigned
	 * (to fd -1 if socket() failed) before anything can go wrong. */
	cc->fd = socket(r->addr.ss_family, SOCK_STREAM, 0);
	int err = errno;
	if (!inflight.next)
		list_init(&inflight);
	list_append(&inflight, &cc->node);
	event_assign(&cc->ev, fleet.base, cc->fd, EV_WRITE, on_cancel_event, cc);
	if (cc->fd < 0) {
		cancel_finish(cc, LOG_WARN, "cancel not sent", strerror(err));
		return false;
	}
	if (!conn_set_socket_options(cc->fd, r->addr.ss_family != AF_UNIX)) {
		cancel_finish(cc, LOG_WARN, "cancel not sent", "socket options");
		return false;
	}
	/* Writable means connected, or failed: SO_ERROR tells which. */
	if (connect(cc->fd, (struct sockaddr *)&r->addr, r->addrlen) < 0 && errno != EINPROGRESS) {
		cancel_finish(cc, LOG_WARN, "cancel not sent", strerror(errno));
		return false;
	}
	if (!rearm(cc)) {
		cancel_finish(cc, LOG_WARN, "cancel not sent", "event_add failed");
		return false;
	}
	return true;
}

static void cancel_by_key(uint32_t pid, uint32_t key, const char *from)
{
	struct client *target = cancel_find_client(pid, key);
	if (!target)
		log_info("cancel dropped", "from", from, "reason", "no client has this key", NULL);
	else if (!query_running(target->link))
		log_info("cancel dropped", "from", from, "client", target->addr_str, "reason",
			 "nothing running", NULL);
	else
		(void)cancel_server_query(target->link, "cancel request");
}

void cancel_handle_request(struct client *c, const uint8_t *pkt, uint32_t len)
{
	if (len != CANCEL_PKT_LEN) {
		client_close(c, NULL, "invalid length of cancel request");
		return;
	}
	uint32_t pid = proto_get_u32(pkt + 8), key = proto_get_u32(pkt + 12);
	int owner = (int)(pid & WORKER_PID_MASK);
	if (instance_id && cancel_pid_instance(pid) != instance_id) {
		/* Another pgfleet instance handed this key out: its peer, and only
		 * it, gets the request (a key no live peer has is dropped). */
		if (!forward_foreign || !forward_foreign(pid, key))
			log_info("cancel dropped", "from", c->addr_str, "reason",
				 "no live peer has this key", NULL);
	} else if (worker_threaded() && owner != worker_index() && owner < worker_count()) {
		/* Another worker handed this key out: it alone may look it up. */
		if (!worker_post(owner, WMSG_CANCEL, pid, key, NULL, NULL))
			log_warn("cancel not sent", "from", c->addr_str, "detail",
				 "cannot reach the worker", NULL);
	} else {
		cancel_by_key(pid, key, c->addr_str);
	}
	client_close(c, NULL, "cancel request");
}

void cancel_handle_remote(uint32_t pid, uint32_t key)
{
	cancel_by_key(pid, key, "another worker");
}

void cancel_handle_forwarded(uint32_t pid, uint32_t key, const char *from)
{
	int owner = (int)(pid & WORKER_PID_MASK);
	if (worker_threaded() && owner != worker_index() && owner < worker_count()) {
		if (!worker_post(owner, WMSG_CANCEL, pid, key, NULL, NULL))
			log_warn("cancel not sent", "from", from, "detail",
				 "cannot reach the worker", NULL);
	} else {
		cancel_by_key(pid, key, from);
	}
}

void cancel_forget_server(struct server *s)
{
	struct list *it;
	if (!inflight.next)
		return;
	list_for_each(it, &inflight) {
		struct cancel_conn *cc = container_of(it, struct cancel_conn, node);
		if (cc->server == s)
			cc->server = NULL;
	}
}

void cancel_shutdown(void)
{
	struct list *it, *tmp;
	if (!inflight.next)
		list_init(&inflight);
	list_for_each_safe(it, tmp, &inflight) {
		struct cancel_conn *cc = container_of(it, struct cancel_conn, node);
		if (cc->server)
			cc->server->cancels = 0; /* going away with the rest */
		cc->server = NULL;
		cancel_free(cc);
	}
	/* Clients still registered are being freed by the caller. */
	for (uint32_t i = 0; i < nbuckets; i++) {
		list_for_each_safe(it, tmp, &buckets[i]) {
			list_del(it);
		}
	}
	free(buckets);
	buckets = NULL;
	nbuckets = nclients = 0;
}
