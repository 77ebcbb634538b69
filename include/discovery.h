/*
 * discovery.h: c-ares resolution of every database host, inside the libevent
 * loop.  A host is re-resolved on a timer (its TTL capped by dns_max_ttl,
 * failures by dns_nxdomain_ttl); a failure keeps the last good answer.
 */
#ifndef PGFLEET_DISCOVERY_H
#define PGFLEET_DISCOVERY_H

#include <stdbool.h>
#include <stdint.h>
#include <sys/socket.h>

struct dns_addr {
	struct sockaddr_storage sa; /* port 0: the database supplies it */
	socklen_t len;
};

void discovery_library_init(void);
void discovery_library_done(void);
bool discovery_init(void) __attribute__((warn_unused_result));
void discovery_shutdown(void);
/* Starts resolving `name` if it is not known yet. */
void discovery_watch(const char *name);
/* The last good answer for `name`; false when none yet. */
bool discovery_lookup(const char *name, const struct dns_addr **addrs, int *n);
/* Re-resolve every host now (REFRESH DNS, SIGHUP). */
void discovery_refresh(void);
/* An answer for a watched `name`, as c-ares' callback hands it over:
 * addresses with port 0 and no duplicates (at most DNS_MAX_ADDRS), their
 * lowest TTL (-1: unknown); n == 0 is a failed lookup (the last good answer
 * stays).  Kept, the next lookup scheduled, and, when it differs from the
 * last one, every database naming the host follows it
 * (the callback given to discovery_on_change).  For tests: no resolver needed.  False when
 * `name` is not watched or n is out of range. */
bool discovery_take_answer(const char *name, const struct dns_addr *addrs, int n, int ttl);
/* Called when a watched host's addresses change (the databases follow:
 * database_hosts_changed), registered once at start-up (wiring.c). */
void discovery_on_change(void (*fn)(const char *host));

/* One watched host as /metrics and SHOW DNS_HOSTS see it. */
struct dns_host_info {
	const char *name;
	int n_addrs;      /* addresses in the last good answer */
	bool have_answer; /* a lookup has succeeded at least once */
	uint64_t ok_count, fail_count; /* lookups answered / failed since start */
};
/* Calls fn once per watched host. */
void discovery_foreach_host(void (*fn)(const struct dns_host_info *h, void *arg), void *arg);

#endif
