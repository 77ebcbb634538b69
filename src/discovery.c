/*
 * discovery.c: resolves every database host with c-ares inside the libevent
 * loop (c-ares' socket-state callback becomes one persistent event per DNS
 * socket, and one timer follows ares_timeout()).  Every A and AAAA record is
 * kept; each host is re-resolved when its TTL runs out (at most dns_max_ttl
 * later), failures retried after dns_nxdomain_ttl.  A failed lookup keeps the
 * last good answer: a resolver blip is never a failover.
 */
#include "discovery.h"

#include <ares.h>
#include <arpa/inet.h>
#include <netinet/in.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "log.h"
#include "runtime.h"

/* Set once at start-up (discovery.h), process-wide. */
static void (*on_change)(const char *host);

void discovery_on_change(void (*fn)(const char *host))
{
	on_change = fn;
}

#define DNS_MAX_ADDRS 64

struct dns_host {
	struct dns_host *next;
	char name[256];
	struct dns_addr addrs[DNS_MAX_ADDRS];
	int n;
	bool have_answer, in_flight;
	struct event *timer;
	uint64_t ok_count, fail_count;
};

struct dns_sock {
	struct dns_sock *next;
	ares_socket_t fd;
	struct event *ev;
};

static THREAD_LOCAL ares_channel channel;
static THREAD_LOCAL bool channel_ok;
static THREAD_LOCAL struct event *ev_timeout;
static THREAD_LOCAL struct dns_host *hosts;
static THREAD_LOCAL struct dns_sock *socks;

static void resolve(struct dns_host *h);

static void rearm_timeout(void)
{
	struct timeval max = {1, 0}, tv;
	struct timeval *t = ares_timeout(channel, &max, &tv);
	evtimer_add(ev_timeout, t);
}

static void on_timeout(evutil_socket_t fd, short what, void *arg)
{
	ares_process_fd(channel, ARES_SOCKET_BAD, ARES_SOCKET_BAD);
	rearm_timeout();
}

static void on_sock(evutil_socket_t fd, short what, void *arg)
{
	ares_process_fd(channel, (what & EV_READ) ? fd : ARES_SOCKET_BAD,
			(what & EV_WRITE) ? fd : ARES_SOCKET_BAD);
	rearm_timeout();
}

static void sock_state(void *data, ares_socket_t fd, int readable, int writable)
{
	struct dns_sock **pp = &socks, *s;
	while ((s = *pp) && s->fd != fd)
		pp = &s->next;
	if (!readable && !writable) {
		if (s) {
			event_free(s->ev);
			*pp = s->next;
			free(s);
		}
		return;
	}
	if (!s) {
		s = calloc(1, sizeof(*s));
		if (!s)
			return;
		s->fd = fd;
		s->next = socks;
		socks = s;
	} else {
		event_free(s->ev);
	}
	short what = EV_PERSIST | (readable ? EV_READ : 0) | (writable ? EV_WRITE : 0);
	s->ev = event_new(fleet.base, fd, what, on_sock, NULL);
	event_add(s->ev, NULL);
}

bool discovery_init(void)
{
	struct ares_options opts;
	memset(&opts, 0, sizeof(opts));
	opts.sock_state_cb = sock_state;
	opts.timeout = 2000; /* ms per try */
	opts.tries = 2;
	int mask = ARES_OPT_SOCK_STATE_CB | ARES_OPT_TIMEOUTMS | ARES_OPT_TRIES;
	int rc = ares_init_options(&channel, &opts, mask);
	if (rc != ARES_SUCCESS) {
		log_error("c-ares init failed", "error", ares_strerror(rc), NULL);
		return false;
	}
	channel_ok = true;
	if (*fleet.cfg.dns_servers) {
		rc = ares_set_servers_ports_csv(channel, fleet.cfg.dns_servers);
		if (rc != ARES_SUCCESS) {
			log_error("bad dns_servers", "value", fleet.cfg.dns_servers, "error",
				  ares_strerror(rc), NULL);
			return false;
		}
	}
	ev_timeout = evtimer_new(fleet.base, on_timeout, NULL);
	return ev_timeout != NULL;
}

static void on_host_timer(evutil_socket_t fd, short what, void *arg)
{
	resolve(arg);
}

static void schedule(struct dns_host *h, double seconds)
{
	if (seconds < 0.1)
		seconds = 0.1;
	struct timeval tv = {(time_t)seconds, (suseconds_t)((seconds - (double)(time_t)seconds) * 1e6)};
	evtimer_add(h->timer, &tv);
}

static int addr_cmp(const void *a, const void *b)
{
	const struct dns_addr *x = a, *y = b;
	if (x->len != y->len)
		return x->len < y->len ? -1 : 1;
	return memcmp(&x->sa, &y->sa, x->len);
}

static void take_answer(struct dns_host *h, struct dns_addr *found, int n, int ttl,
			const char *error);

static void on_answer(void *arg, int status, int timeouts, struct ares_addrinfo *res)
{
	struct dns_host *h = arg;
	h->in_flight = false;
	if (status == ARES_EDESTRUCTION) {
		if (res)
			ares_freeaddrinfo(res);
		return;
	}
	struct dns_addr found[DNS_MAX_ADDRS];
	int n = 0;
	int ttl = -1;
	if (status == ARES_SUCCESS && res) {
		for (struct ares_addrinfo_node *ai = res->nodes; ai && n < DNS_MAX_ADDRS;
		     ai = ai->ai_next) {
			if (ai->ai_family != AF_INET && ai->ai_family != AF_INET6)
				continue;
			struct dns_addr a;
			memset(&a, 0, sizeof(a));
			memcpy(&a.sa, ai->ai_addr, ai->ai_addrlen);
			a.len = ai->ai_addrlen;
			if (ai->ai_family == AF_INET)
				((struct sockaddr_in *)&a.sa)->sin_port = 0;
			else
				((struct sockaddr_in6 *)&a.sa)->sin6_port = 0;
			bool dup = false;
			for (int i = 0; i < n; i++)
				dup = dup || addr_cmp(&found[i], &a) == 0;
			if (dup)
				continue;
			found[n++] = a;
			if (ttl < 0 || ai->ai_ttl < ttl)
				ttl = ai->ai_ttl;
		}
	}
	if (res)
		ares_freeaddrinfo(res);
	take_answer(h, found, n, ttl,
		    status == ARES_SUCCESS ? "no addresses" : ares_strerror(status));
}

/* A lookup's outcome for h: found[0..n) (port 0, no duplicates), the
 * lowest TTL among them (-1: none); n == 0 failed with `error`. */
static void take_answer(struct dns_host *h, struct dns_addr *found, int n, int ttl,
			const char *error)
{
	if (n == 0) {
		h->fail_count++;
		log_warn("dns lookup failed", "host", h->name, "error", error, "kept",
			 h->have_answer ? "last good answer" : "nothing yet", NULL);
		schedule(h, fleet.cfg.dns_nxdomain_ttl);
		return;
	}
	h->ok_count++;
	qsort(found, (size_t)n, sizeof(found[0]), addr_cmp);
	bool changed = !h->have_answer || n != h->n || memcmp(found, h->addrs, sizeof(found[0]) * (size_t)n) != 0;
	memcpy(h->addrs, found, sizeof(found[0]) * (size_t)n);
	h->n = n;
	h->have_answer = true;
	double next = fleet.cfg.dns_max_ttl;
	if (ttl >= 0 && ttl < next)
		next = ttl > 0 ? ttl : 1;
	schedule(h, next);
	if (changed) {
		char count[16];
		snprintf(count, sizeof(count), "%d", n);
		log_info("dns answer", "host", h->name, "addresses", count, NULL);
		if (on_change)
			on_change(h->name);
	}
}

static void resolve(struct dns_host *h)
{
	if (h->in_flight || !channel_ok)
		return;
	struct ares_addrinfo_hints hints;
	memset(&hints, 0, sizeof(hints));
	hints.ai_family = AF_UNSPEC;
	hints.ai_flags = ARES_AI_NOSORT;
	h->in_flight = true;
	ares_getaddrinfo(channel, h->name, NULL, &hints, on_answer, h);
	rearm_timeout();
}

void discovery_watch(const char *name)
{
	for (struct dns_host *h = hosts; h; h = h->next)
		if (strcmp(h->name, name) == 0)
			return;
	struct dns_host *h = calloc(1, sizeof(*h));
	if (!h)
		return;
	snprintf(h->name, sizeof(h->name), "%s", name);
	h->timer = evtimer_new(fleet.base, on_host_timer, h);
	h->next = hosts;
	hosts = h;
	resolve(h);
}

bool discovery_take_answer(const char *name, const struct dns_addr *addrs, int n, int ttl)
{
	struct dns_addr found[DNS_MAX_ADDRS];
	if (n < 0 || n > DNS_MAX_ADDRS)
		return false;
	for (struct dns_host *h = hosts; h; h = h->next) {
		if (strcmp(h->name, name) == 0) {
			if (n)
				memcpy(found, addrs, sizeof(found[0]) * (size_t)n);
			take_answer(h, found, n, ttl, "no addresses");
			return true;
		}
	}
	return false;
}

bool discovery_lookup(const char *name, const struct dns_addr **addrs, int *n)
{
	for (struct dns_host *h = hosts; h; h = h->next) {
		if (strcmp(h->name, name) == 0 && h->have_answer) {
			*addrs = h->addrs;
			*n = h->n;
			return true;
		}
	}
	return false;
}

void discovery_refresh(void)
{
	for (struct dns_host *h = hosts; h; h = h->next) {
		evtimer_del(h->timer);
		resolve(h);
	}
}

void discovery_foreach_host(void (*fn)(const struct dns_host_info *h, void *arg), void *arg)
{
	for (struct dns_host *h = hosts; h; h = h->next) {
		struct dns_host_info info = {h->name, h->have_answer ? h->n : 0, h->have_answer,
					     h->ok_count, h->fail_count};
		fn(&info, arg);
	}
}

void discovery_shutdown(void)
{
	if (channel_ok) {
		ares_destroy(channel); /* callbacks run with ARES_EDESTRUCTION */
		channel_ok = false;
	}
	while (hosts) {
		struct dns_host *h = hosts;
		hosts = h->next;
		event_free(h->timer);
		free(h);
	}
	while (socks) {
		struct dns_sock *s = socks;
		socks = s->next;
		event_free(s->ev);
		free(s);
	}
	if (ev_timeout) {
		event_free(ev_timeout);
		ev_timeout = NULL;
	}
}

/* Once per process, before any worker's channel (not thread-safe in c-ares). */
void discovery_library_init(void)
{
	if (ares_library_init(ARES_LIB_INIT_ALL) != ARES_SUCCESS)
		log_warn("c-ares library init failed", NULL);
}

void discovery_library_done(void)
{
	ares_library_cleanup();
}
