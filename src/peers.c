/*
 * peers.c: the fleet of pgfleet instances (peers.h).  Worker 0 owns the
 * UDP socket, the once-a-second tick and the DNS name; the table of peers
 * is process-wide behind `lock`, because a CancelRequest for another
 * instance's key can land on any worker.
 *
 * A peer message is one fixed-size datagram (struct layout below), signed
 * with HMAC-SHA256 under peer_secret.  Replays are refused by time (a
 * message more than PEERS_MAX_SKEW seconds off this clock) and, inside
 * that window, by nonce (a bounded ring of the nonces seen).  UDP because
 * a message is a few dozen bytes and needs no session: no connection
 * state, no buffers a peer can grow.
 */
#include "peers.h"

#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <ifaddrs.h>
#include <netinet/in.h>
#include <openssl/crypto.h>
#include <openssl/evp.h>
#include <openssl/hmac.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "cancel.h"
#include "discovery.h"
#include "log.h"
#include "runtime.h"

#define PEERS_TICK 1.0       /* seconds between pings */
#define PEERS_DOWN_AFTER 3.5 /* silent this long: down (three pings missed) */
#define PEERS_MAX_SKEW 15.0  /* seconds a message's timestamp may be off */
#define PEERS_REPLAY_SLOTS 8192
#define PEERS_READS_PER_EVENT 64

/* The datagram, big-endian fields:
 *   0 magic "PGFP"   4 version (1)   5 type   6 sender's instance id (u16)
 *   8 wall-clock ms (u64)   16 nonce (u64)   24 sender's boot id (u64)
 *  32 cancel pid (u32)   36 cancel key (u32)   40 HMAC-SHA256 of bytes 0..39 */
#define MSG_SIGNED 40
#define MSG_LEN (MSG_SIGNED + 32)
#define MSG_VERSION 1

enum msg_type { MSG_PING = 1, MSG_PONG = 2, MSG_CANCEL = 3 };

struct peer {
	struct sockaddr_storage sa; /* port 0 */
	socklen_t len;
	char addr[64];
	uint16_t instance;
	bool self, in_dns, live, warned_same_id;
	double last_seen;
	uint64_t cancels_forwarded, cancels_received;
};

struct replay_slot {
	uint64_t nonce;
	double expires; /* wall clock */
};

static pthread_mutex_t lock = PTHREAD_MUTEX_INITIALIZER;
/* Under lock (set once by peers_setup, before the workers start: enabled,
 * instance, boot, secret, own address, fd). */
static bool enabled;
static uint16_t instance;
static uint64_t boot_id;
static char *secret;
static size_t secret_len;
static struct sockaddr_storage own;
static socklen_t own_len; /* 0: not known yet */
static int sock = -1;
static uint16_t peer_port; /* fleet.cfg.peer_port */
static struct peer table[PEERS_MAX + 1]; /* + this instance when DNS lacks it */
static int npeers;
static int last_live = -1, last_rank = -1;
static struct replay_slot replay[PEERS_REPLAY_SLOTS];
static size_t replay_next;
static uint64_t refused, refused_unlogged;
static double refused_logged_at;

/* Worker 0's loop. */
static struct event *ev_read, *ev_tick;

/* ---- addresses ------------------------------------------------------------ */

static bool same_ip(const struct sockaddr_storage *a, const struct sockaddr_storage *b)
{
	if (a->ss_family != b->ss_family)
		return false;
	if (a->ss_family == AF_INET)
		return ((const struct sockaddr_in *)a)->sin_addr.s_addr ==
		       ((const struct sockaddr_in *)b)->sin_addr.s_addr;
	if (a->ss_family == AF_INET6)
		return memcmp(&((const struct sockaddr_in6 *)a)->sin6_addr,
			      &((const struct sockaddr_in6 *)b)->sin6_addr, 16) == 0;
	return false;
}

/* Orders addresses as the rank does: family, then the address bytes. */
static int ip_cmp(const struct sockaddr_storage *a, const struct sockaddr_storage *b)
{
	if (a->ss_family != b->ss_family)
		return a->ss_family < b->ss_family ? -1 : 1;
	if (a->ss_family == AF_INET)
		return memcmp(&((const struct sockaddr_in *)a)->sin_addr,
			      &((const struct sockaddr_in *)b)->sin_addr, 4);
	return memcmp(&((const struct sockaddr_in6 *)a)->sin6_addr,
		      &((const struct sockaddr_in6 *)b)->sin6_addr, 16);
}

static void ip_text(const struct sockaddr_storage *sa, char *buf, size_t len)
{
	const void *src = sa->ss_family == AF_INET
				  ? (const void *)&((const struct sockaddr_in *)sa)->sin_addr
				  : (const void *)&((const struct sockaddr_in6 *)sa)->sin6_addr;
	if (!inet_ntop(sa->ss_family, src, buf, (socklen_t)len))
		snprintf(buf, len, "?");
}

static void set_port(struct sockaddr_storage *sa, uint16_t port)
{
	if (sa->ss_family == AF_INET)
		((struct sockaddr_in *)sa)->sin_port = htons(port);
	else
		((struct sockaddr_in6 *)sa)->sin6_port = htons(port);
}

static bool parse_ip(const char *text, struct sockaddr_storage *sa, socklen_t *len)
{
	memset(sa, 0, sizeof(*sa));
	struct sockaddr_in *v4 = (struct sockaddr_in *)sa;
	struct sockaddr_in6 *v6 = (struct sockaddr_in6 *)sa;
	if (inet_pton(AF_INET, text, &v4->sin_addr) == 1) {
		v4->sin_family = AF_INET;
		*len = sizeof(*v4);
		return true;
	}
	if (inet_pton(AF_INET6, text, &v6->sin6_addr) == 1) {
		v6->sin6_family = AF_INET6;
		*len = sizeof(*v6);
		return true;
	}
	return false;
}

/* Without POD_IP: is this address one of the host's interfaces? */
static bool is_local_interface(const struct sockaddr_storage *sa)
{
	struct ifaddrs *ifs, *i;
	bool found = false;
	if (getifaddrs(&ifs) < 0)
		return false;
	for (i = ifs; i && !found; i = i->ifa_next) {
		if (!i->ifa_addr || (i->ifa_addr->sa_family != AF_INET &&
				     i->ifa_addr->sa_family != AF_INET6))
			continue;
		struct sockaddr_storage x;
		memset(&x, 0, sizeof(x));
		memcpy(&x, i->ifa_addr, i->ifa_addr->sa_family == AF_INET
						? sizeof(struct sockaddr_in)
						: sizeof(struct sockaddr_in6));
		found = same_ip(&x, sa);
	}
	freeifaddrs(ifs);
	return found;
}

/* ---- messages ------------------------------------------------------------- */

static void put_u16(uint8_t *p, uint16_t v)
{
	p[0] = (uint8_t)(v >> 8);
	p[1] = (uint8_t)v;
}

static void put_u32(uint8_t *p, uint32_t v)
{
	put_u16(p, (uint16_t)(v >> 16));
	put_u16(p + 2, (uint16_t)v);
}

static void put_u64(uint8_t *p, uint64_t v)
{
	put_u32(p, (uint32_t)(v >> 32));
	put_u32(p + 4, (uint32_t)v);
}

static uint32_t get_u32(const uint8_t *p)
{
	return (uint32_t)p[0] << 24 | (uint32_t)p[1] << 16 | (uint32_t)p[2] << 8 | p[3];
}

static uint64_t get_u64(const uint8_t *p)
{
	return (uint64_t)get_u32(p) << 32 | get_u32(p + 4);
}

static bool sign(const uint8_t *msg, uint8_t mac[32])
{
	unsigned int n = 0;
	return HMAC(EVP_sha256(), secret, (int)secret_len, msg, MSG_SIGNED, mac, &n) && n == 32;
}

/* Sends one signed message to `to` (port 0: peer_port).  Under lock. */
static void send_msg(const struct sockaddr_storage *to, socklen_t len, enum msg_type type,
		     uint32_t pid, uint32_t key)
{
	uint8_t m[MSG_LEN];
	uint64_t nonce;
	memcpy(m, "PGFP", 4);
	m[4] = MSG_VERSION;
	m[5] = (uint8_t)type;
	put_u16(m + 6, instance);
	put_u64(m + 8, (uint64_t)(fleet_wallclock() * 1000.0));
	fleet_random(&nonce, sizeof(nonce));
	put_u64(m + 16, nonce);
	put_u64(m + 24, boot_id);
	put_u32(m + 32, pid);
	put_u32(m + 36, key);
	if (!sign(m, m + MSG_SIGNED))
		return;
	struct sockaddr_storage dst = *to;
	in_port_t *p = dst.ss_family == AF_INET ? &((struct sockaddr_in *)&dst)->sin_port
						: &((struct sockaddr_in6 *)&dst)->sin6_port;
	if (!*p) /* a table entry; an answer goes where the question came from */
		*p = htons(peer_port);
	/* Non-blocking: a full socket buffer loses a ping (the next one
	 * follows) or a cancel (as a lost packet would). */
	(void)sendto(sock, m, MSG_LEN, MSG_DONTWAIT | MSG_NOSIGNAL, (struct sockaddr *)&dst, len);
}

/* One refusal, logged at most once a second (a flood of forged datagrams
 * must not flood the log); the lines in between are counted.  Under lock. */
static void refuse(const char *from, const char *reason)
{
	refused++;
	double now = fleet_now();
	if (refused_logged_at > 0 && now - refused_logged_at < 1.0) {
		refused_unlogged++;
		return;
	}
	char skipped[24];
	snprintf(skipped, sizeof(skipped), "%llu", (unsigned long long)refused_unlogged);
	log_warn("peer message refused", "from", from, "reason", reason, "suppressed", skipped,
		 NULL);
	refused_logged_at = now;
	refused_unlogged = 0;
}

/* Verifies a datagram: NULL when it is to be believed, else why not. */
static const char *verify(const uint8_t *m, ssize_t n)
{
	if (n != MSG_LEN)
		return "wrong size";
	if (memcmp(m, "PGFP", 4) != 0 || m[4] != MSG_VERSION)
		return "not a pgfleet peer message";
	uint8_t mac[32];
	if (!sign(m, mac) || CRYPTO_memcmp(mac, m + MSG_SIGNED, 32) != 0)
		return "bad signature";
	double now = fleet_wallclock(), ts = (double)get_u64(m + 8) / 1000.0;
	if (ts < now - PEERS_MAX_SKEW || ts > now + PEERS_MAX_SKEW)
		return "timestamp out of window";
	uint64_t nonce = get_u64(m + 16);
	for (size_t i = 0; i < PEERS_REPLAY_SLOTS; i++)
		if (replay[i].expires > now && replay[i].nonce == nonce)
			return "replayed";
	struct replay_slot *slot = &replay[replay_next];
	if (slot->expires > now)
		return "replay cache full";
	slot->nonce = nonce;
	slot->expires = ts + PEERS_MAX_SKEW;
	replay_next = (replay_next + 1) % PEERS_REPLAY_SLOTS;
	return NULL;
}

/* ---- the table ------------------------------------------------------------- */

static struct peer *find_peer(const struct sockaddr_storage *sa)
{
	for (int i = 0; i < npeers; i++)
		if (same_ip(&table[i].sa, sa))
			return &table[i];
	return NULL;
}

static int peer_cmp(const void *a, const void *b)
{
	const struct peer *x = a, *y = b;
	return ip_cmp(&x->sa, &y->sa);
}

static struct peer *add_peer(const struct sockaddr_storage *sa, socklen_t len)
{
	if (npeers >= PEERS_MAX + 1)
		return NULL;
	struct peer *p = &table[npeers++];
	memset(p, 0, sizeof(*p));
	p->sa = *sa;
	p->len = len;
	set_port(&p->sa, 0);
	ip_text(&p->sa, p->addr, sizeof(p->addr));
	return p;
}

/* The DNS answer in force: candidates come and go with it.  Under lock. */
static void follow_dns(void)
{
	const struct dns_addr *addrs = NULL;
	int n = 0;
	(void)discovery_lookup(fleet.cfg.peers, &addrs, &n);
	for (int i = 0; i < npeers; i++)
		table[i].in_dns = false;
	for (int i = 0; i < n && i < PEERS_MAX; i++) {
		struct peer *p = find_peer(&addrs[i].sa);
		if (!p) {
			p = add_peer(&addrs[i].sa, addrs[i].len);
			if (!p)
				break;
			/* Without POD_IP, our own address is the one on an interface. */
			if (!own_len && is_local_interface(&p->sa)) {
				own = p->sa;
				own_len = p->len;
			}
		}
		p->in_dns = true;
	}
	/* Gone from DNS: forgotten (this instance stays, in DNS or not). */
	int k = 0;
	for (int i = 0; i < npeers; i++) {
		if (own_len && same_ip(&table[i].sa, &own))
			table[i].self = true;
		if (table[i].in_dns || table[i].self)
			table[k++] = table[i];
		else
			log_info("peer gone", "peer", table[i].addr, "reason", "not in DNS any more",
				 NULL);
	}
	npeers = k;
	if (own_len && !find_peer(&own)) {
		struct peer *p = add_peer(&own, own_len);
		if (p)
			p->self = true;
	}
	qsort(table, (size_t)npeers, sizeof(table[0]), peer_cmp);
}

/* Live: this instance, and each peer heard from lately.  Publishes the
 * count and this instance's rank on any change.  Under lock. */
static void update_liveness(double now)
{
	int live = 0, rank = -1;
	for (int i = 0; i < npeers; i++) {
		struct peer *p = &table[i];
		bool was = p->live;
		p->live = p->self || (p->last_seen > 0 && now - p->last_seen <= PEERS_DOWN_AFTER);
		if (p->live && !p->self && !was)
			log_info("peer up", "peer", p->addr, NULL);
		else if (!p->live && was && !p->self)
			log_info("peer down", "peer", p->addr, "reason", "no answer", NULL);
		if (p->self)
			rank = live;
		if (p->live)
			live++;
	}
	if (rank < 0) { /* our own address is unknown yet: count us first */
		rank = 0;
		live++;
	}
	if (live != last_live || rank != last_rank) {
		char l[16], r[16];
		snprintf(l, sizeof(l), "%d", live);
		snprintf(r, sizeof(r), "%d", rank);
		log_info("fleet changed", "live", l, "rank", r, NULL);
		last_live = live;
		last_rank = rank;
		fleet_set_peers(live, rank);
	}
}

static void on_tick(evutil_socket_t fd, short what, void *arg)
{
	double now = fleet_now();
	pthread_mutex_lock(&lock);
	follow_dns();
	for (int i = 0; i < npeers; i++)
		if (!table[i].self)
			send_msg(&table[i].sa, table[i].len, MSG_PING, 0, 0);
	update_liveness(now);
	pthread_mutex_unlock(&lock);
}

/* One verified message from `from`.  Under lock; a cancel to do is
 * returned in *pid and *key (run once the lock is released). */
static bool take_msg(const uint8_t *m, const struct sockaddr_storage *from, socklen_t fromlen,
		     const char *addr, uint32_t *pid, uint32_t *key)
{
	uint16_t id = (uint16_t)(m[6] << 8 | m[7]);
	if (get_u64(m + 24) == boot_id) {
		/* Our own ping came back: that address is ours. */
		if (!own_len) {
			own = *from;
			set_port(&own, 0);
			own_len = fromlen;
			struct peer *p = find_peer(&own);
			if (p)
				p->self = true;
		}
		return false;
	}
	struct peer *p = find_peer(from);
	if (p && !p->self) {
		p->last_seen = fleet_now();
		p->instance = id;
		if (id == instance && !p->warned_same_id) {
			p->warned_same_id = true;
			log_warn("peer has this instance's id", "peer", addr, "detail",
				 "cancels of keys with this id reach only this instance", NULL);
		}
		if (!p->live)
			update_liveness(fleet_now());
	}
	switch (m[5]) {
	case MSG_PING:
		send_msg(from, fromlen, MSG_PONG, 0, 0);
		return false;
	case MSG_PONG:
		return false;
	case MSG_CANCEL:
		*pid = get_u32(m + 32);
		*key = get_u32(m + 36);
		if (cancel_pid_instance(*pid) != instance) {
			log_info("cancel dropped", "from", addr, "reason",
				 "a peer forwarded another instance's key", NULL);
			return false;
		}
		if (p)
			p->cancels_received++;
		return true;
	default:
		refuse(addr, "unknown message type");
		return false;
	}
}

static void on_read(evutil_socket_t fd, short what, void *arg)
{
	for (int i = 0; i < PEERS_READS_PER_EVENT; i++) {
		uint8_t m[MSG_LEN + 1];
		struct sockaddr_storage from;
		socklen_t fromlen = sizeof(from);
		ssize_t n = recvfrom(sock, m, sizeof(m), MSG_DONTWAIT | MSG_TRUNC,
				     (struct sockaddr *)&from, &fromlen);
		if (n < 0)
			return; /* EAGAIN: all read; anything else: the next event */
		if (from.ss_family != AF_INET && from.ss_family != AF_INET6)
			continue;
		char addr[64];
		ip_text(&from, addr, sizeof(addr));
		uint32_t pid = 0, key = 0;
		pthread_mutex_lock(&lock);
		const char *why = verify(m, n);
		bool cancel = false;
		if (why)
			refuse(addr, why);
		else
			cancel = take_msg(m, &from, fromlen, addr, &pid, &key);
		pthread_mutex_unlock(&lock);
		if (cancel)
			cancel_handle_forwarded(pid, key, addr); /* never forwarded again */
	}
}

/* ---- the interface ---------------------------------------------------------- */

bool peers_setup(void)
{
	if (!*fleet.cfg.peers)
		return true;
	const char *pod_ip = getenv("POD_IP");
	own_len = 0;
	if (pod_ip && *pod_ip && !parse_ip(pod_ip, &own, &own_len)) {
		log_error("start-up failed", "stage", "peers", "detail",
			  "POD_IP is not an IP address", NULL);
		return false;
	}
	do
		fleet_random(&instance, sizeof(instance));
	while (instance == 0);
	fleet_random(&boot_id, sizeof(boot_id));
	peer_port = (uint16_t)fleet.cfg.peer_port;
	secret_len = strlen(fleet.cfg.peer_secret);
	secret = config_xstrdup(fleet.cfg.peer_secret);

	/* With POD_IP: that address alone (several instances may share a host);
	 * otherwise every IPv4 address of the pod. */
	struct sockaddr_storage bind_sa;
	socklen_t bind_len = own_len;
	if (own_len) {
		bind_sa = own;
	} else {
		memset(&bind_sa, 0, sizeof(bind_sa));
		bind_sa.ss_family = AF_INET;
		bind_len = sizeof(struct sockaddr_in);
	}
	set_port(&bind_sa, peer_port);
	sock = socket(bind_sa.ss_family, SOCK_DGRAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
	if (sock < 0 || bind(sock, (struct sockaddr *)&bind_sa, bind_len) < 0) {
		char port[16];
		snprintf(port, sizeof(port), "%lld", fleet.cfg.peer_port);
		log_error("cannot listen", "peer_port", port, "error", strerror(errno), NULL);
		if (sock >= 0)
			close(sock);
		sock = -1;
		return false;
	}
	cancel_set_instance(instance);
	enabled = true;
	char id[16];
	snprintf(id, sizeof(id), "%u", instance);
	log_info("peers", "name", fleet.cfg.peers, "instance", id, "address",
		 own_len ? pod_ip : "from the host's interfaces", NULL);
	return true;
}

bool peers_start(void)
{
	if (!enabled)
		return true;
	ev_read = event_new(fleet.base, sock, EV_READ | EV_PERSIST, on_read, NULL);
	ev_tick = event_new(fleet.base, -1, EV_PERSIST, on_tick, NULL);
	struct timeval tv = {(time_t)PEERS_TICK, 0};
	if (!ev_read || !ev_tick || event_add(ev_read, NULL) < 0 || event_add(ev_tick, &tv) < 0) {
		log_error("start-up failed", "stage", "peers", NULL);
		return false;
	}
	discovery_watch(fleet.cfg.peers);
	pthread_mutex_lock(&lock);
	follow_dns(); /* this instance's own row, before any answer */
	update_liveness(fleet_now()); /* alone until a peer answers */
	pthread_mutex_unlock(&lock);
	return true;
}

void peers_stop(void)
{
	if (ev_read)
		event_free(ev_read);
	if (ev_tick)
		event_free(ev_tick);
	ev_read = ev_tick = NULL;
	pthread_mutex_lock(&lock);
	if (sock >= 0)
		close(sock);
	sock = -1;
	enabled = false;
	npeers = 0;
	cancel_set_instance(0);
	if (secret)
		config_free_secret(secret);
	secret = NULL;
	pthread_mutex_unlock(&lock);
}

bool peers_forward_cancel(uint32_t pid, uint32_t key)
{
	bool sent = false;
	uint16_t id = cancel_pid_instance(pid);
	pthread_mutex_lock(&lock);
	for (int i = 0; enabled && i < npeers; i++) {
		struct peer *p = &table[i];
		if (p->self || !p->live || p->instance != id)
			continue;
		send_msg(&p->sa, p->len, MSG_CANCEL, pid, key);
		p->cancels_forwarded++;
		sent = true;
	}
	pthread_mutex_unlock(&lock);
	return sent;
}

void peers_foreach(void (*fn)(const struct peer_info *p, void *arg), void *arg)
{
	struct peer_info rows[PEERS_MAX + 1];
	int n = 0;
	pthread_mutex_lock(&lock);
	for (int i = 0; enabled && i < npeers; i++) {
		const struct peer *p = &table[i];
		struct peer_info *r = &rows[n++];
		memcpy(r->addr, p->addr, sizeof(r->addr));
		r->instance = p->self ? instance : p->instance;
		r->self = p->self;
		r->live = p->live;
		r->in_dns = p->in_dns;
		r->last_seen = p->self ? fleet_now() : p->last_seen;
		r->cancels_forwarded = p->cancels_forwarded;
		r->cancels_received = p->cancels_received;
	}
	pthread_mutex_unlock(&lock);
	for (int i = 0; i < n; i++)
		fn(&rows[i], arg);
}

bool peers_enabled(void)
{
	pthread_mutex_lock(&lock);
	bool on = enabled;
	pthread_mutex_unlock(&lock);
	return on;
}

uint64_t peers_refused_count(void)
{
	pthread_mutex_lock(&lock);
	uint64_t n = refused;
	pthread_mutex_unlock(&lock);
	return n;
}
