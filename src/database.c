/*
 * database.c: databases as clients name them, and their replicas: one per
 * address the host resolves to.  Follows the replica set as DNS changes it:
 * a new address is a new replica with its own pools; a vanished one drains
 * (no new transactions, idle connections closed, busy ones at their end) and
 * is forgotten once its last connection is gone.
 */
#include "database.h"

#include <arpa/inet.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/un.h>
#include <time.h>

#include "client.h"
#include "discovery.h"
#include "log.h"
#include "mailbox.h"
#include "pool.h"
#include "runtime.h"
#include "server.h"

static const char *state_names[] = {"new", "up", "down", "banned", "draining"};
static const char *role_names[] = {"unknown", "primary", "standby"};

/* Set once at start-up (database.h), process-wide, read-only after. */
static const struct database_health *health;

void database_set_health(const struct database_health *h)
{
	health = h;
}

static bool checks_enabled(void)
{
	return health && health->enabled();
}

const char *replica_state_name(enum replica_state s)
{
	return state_names[s];
}

const char *replica_role_name(enum replica_role r)
{
	return role_names[r];
}

/* Idle connections go now; busy ones finish their transaction. */
static void close_idle(struct replica *r, const char *reason)
{
	struct list *pit, *it, *tmp;
	list_for_each(pit, &r->pools) {
		struct pool *p = container_of(pit, struct pool, replica_node);
		list_for_each_safe(it, tmp, &p->idle.head) {
			server_close(container_of(it, struct server, node), reason);
		}
	}
}

void replica_set_state(struct replica *r, enum replica_state state, const char *why)
{
	if (r->state == state)
		return;
	enum replica_state old = r->state;
	r->state = state;
	log_kv(state == REPLICA_UP ? LOG_INFO : LOG_WARN,
	       state == REPLICA_UP	   ? "replica up"
	       : state == REPLICA_DRAINING ? "replica draining"
	       : state == REPLICA_BANNED   ? "replica banned"
					   : "replica down",
	       "db", r->db->name, "addr", r->addr_str, "from", state_names[old], "reason", why,
	       NULL);
	if (state == REPLICA_DRAINING || state == REPLICA_DOWN || state == REPLICA_BANNED)
		close_idle(r, state == REPLICA_DRAINING ? "replica draining" : "replica down");
	database_update_write_primary(r->db);
}

bool replica_set_role(struct replica *r, enum replica_role role, const char *why)
{
	if (r->role == role)
		return false;
	enum replica_role old = r->role;
	r->role = role;
	log_info("replica role changed", "db", r->db->name, "addr", r->addr_str, "role",
		 role_names[role], "from", role_names[old], "reason", why, NULL);
	/* A promoted standby's sessions were opened read-only, a demoted
	 * primary's for writes: neither may carry the other kind of work. */
	if (old != ROLE_UNKNOWN)
		close_idle(r, "replica role changed");
	database_update_write_primary(r->db);
	return true;
}

bool replica_lag_ok(const struct replica *r)
{
	const struct db_config *cfg = r->db->cfg;
	double max = cfg && cfg->max_replica_lag >= 0 ? cfg->max_replica_lag
						      : fleet.cfg.max_replica_lag;
	return r->role != ROLE_STANDBY || max <= 0 || r->lag_s <= max;
}

/*
 * May r take new work as far as health goes?  With health checks running,
 * only a check brings a replica up (a new one included).  Without them the
 * first login is the check, and a down replica gets one retry login after
 * server_login_retry.
 */
static bool replica_healthy(const struct replica *r, double now)
{
	bool checked = r->health && checks_enabled();
	switch (r->state) {
	case REPLICA_UP:
		return true;
	case REPLICA_NEW:
		return !checked;
	case REPLICA_DOWN:
	case REPLICA_BANNED:
		return !checked && now >= r->retry_at; /* a retry: one connection finds out */
	case REPLICA_DRAINING:
		return false;
	}
	return false;
}

/* Does any replica of db serve as a standby right now? (prefer-standby) */
static bool standby_available(const struct database *db, double now)
{
	struct list *it;
	list_for_each(it, &db->replicas) {
		const struct replica *r = container_of(it, struct replica, node);
		if (r->role == ROLE_STANDBY && replica_healthy(r, now) && replica_lag_ok(r))
			return true;
	}
	return false;
}

int database_tsa(const struct database *db)
{
	int tsa = db->cfg ? db->cfg->tsa : -1;
	return tsa >= 0 ? tsa : (int)fleet.cfg.target_session_attrs;
}

/* Forward: the write-primary registry is below. */
static bool no_write_primary(const struct replica *r);

bool replica_eligible(const struct replica *r, double now)
{
	int tsa = database_tsa(r->db);
	/* The hot case first: an up primary takes anything but standby work;
	 * writes only when it is the write primary (several primaries: one
	 * takes them all).  `any` spreads over every primary, as before. */
	if (r->state == REPLICA_UP && r->role == ROLE_PRIMARY)
		return tsa == TSA_ANY ||
		       ((tsa == TSA_READ_WRITE || tsa == TSA_PRIMARY || tsa == TSA_AUTO ||
			 (tsa == TSA_PREFER_STANDBY && !standby_available(r->db, now))) &&
			replica_is_write_primary(r));
	/* A standby too far behind gets no reads, whatever the target. */
	if (!replica_healthy(r, now) || !replica_lag_ok(r))
		return false;
	/* Not up but healthy enough: no health checks, a new replica or a
	 * retry login.  A known primary gets writes only while no other one
	 * is chosen (else its retry could never happen). */
	bool writable = r->role != ROLE_STANDBY && (r->role != ROLE_PRIMARY || no_write_primary(r));
	switch (tsa) {
	case TSA_READ_WRITE:
	case TSA_PRIMARY:
		return writable;
	case TSA_READ_ONLY:
	case TSA_STANDBY:
		return r->role != ROLE_PRIMARY;
	case TSA_PREFER_STANDBY:
		return r->role != ROLE_PRIMARY || (writable && !standby_available(r->db, now));
	default:
		return true;
	}
}

/* May standby r take a read that needs `need`? */
static bool standby_fits(const struct replica *r, double now, const struct route_need *need)
{
	return r->role == ROLE_STANDBY && r != need->avoid && replica_healthy(r, now) &&
	       replica_lag_ok(r) && (!need->lsn || r->replay_lsn >= need->lsn);
}

bool database_standby_for(const struct database *db, double now, const struct route_need *need)
{
	struct list *it;
	list_for_each(it, &db->replicas) {
		const struct replica *r = container_of(it, struct replica, node);
		if (standby_fits(r, now, need))
			return true;
	}
	return false;
}

uint64_t database_best_replay(const struct database *db, double now, const struct route_need *need)
{
	struct route_need any = *need;
	any.lsn = 0;
	uint64_t best = 0;
	bool found = false;
	struct list *it;
	list_for_each(it, &db->replicas) {
		const struct replica *r = container_of(it, struct replica, node);
		if (standby_fits(r, now, &any) && (!found || r->replay_lsn > best)) {
			best = r->replay_lsn;
			found = true;
		}
	}
	return found ? best : UINT64_MAX;
}

bool replica_eligible_for(const struct replica *r, double now, const struct route_need *need)
{
	if (!need || need->want == WANT_DB)
		return replica_eligible(r, now);
	if (r->role == ROLE_STANDBY)
		return need->want == WANT_READ && standby_fits(r, now, need);
	/* The write primary (or, before one is chosen, a replica whose role no
	 * check has told yet): writes, and reads that no standby can take. */
	if (r->state == REPLICA_UP && r->role == ROLE_PRIMARY) {
		if (!replica_is_write_primary(r))
			return false;
	} else if (!replica_healthy(r, now) || (r->role == ROLE_PRIMARY && !no_write_primary(r))) {
		return false;
	}
	return need->want == WANT_WRITE || !database_standby_for(r->db, now, need);
}

/* ---- one write primary per database (split brain) ------------------------------ */

/*
 * The choice is process-wide: with workers = N each worker has its own
 * struct database and runs its own health checks, so the workers' views
 * can differ for a moment; a choice made per worker could send writes to
 * two primaries.  One registry entry per database name holds the chosen
 * address; a worker re-decides under the lock from its own view, and the
 * rules favour the entry's current choice (it is left only when this
 * worker knows it is not an up primary, or for a newer timeline), so two
 * workers that see things a moment apart do not flip it back and forth.
 * Readers (the router, per transaction) compare one atomic generation.
 */
struct write_choice {
	struct write_choice *next;
	int refs; /* workers holding a database of this name */
	char name[NAME_MAX_LEN];
	char addr[128];    /* the write primary's addr_str, "" = none */
	uint32_t timeline; /* its timeline when chosen (or since seen) */
	int primaries[POOL_MAX_WORKERS]; /* up primaries, as each worker sees them */
	bool split_said;   /* "several primaries" logged, its end not yet */
};

static pthread_mutex_t wp_lock = PTHREAD_MUTEX_INITIALIZER;
static struct write_choice *wp_list;
static atomic_uint wp_gen = 1; /* moves whenever any entry's addr does */

static struct write_choice *wp_claim(const char *name)
{
	pthread_mutex_lock(&wp_lock);
	struct write_choice *e;
	for (e = wp_list; e; e = e->next)
		if (strcmp(e->name, name) == 0)
			break;
	if (!e && (e = calloc(1, sizeof(*e)))) {
		snprintf(e->name, sizeof(e->name), "%s", name);
		e->next = wp_list;
		wp_list = e;
	}
	if (e)
		e->refs++;
	pthread_mutex_unlock(&wp_lock);
	return e;
}

static void wp_release(struct write_choice *e)
{
	if (!e)
		return;
	pthread_mutex_lock(&wp_lock);
	if (--e->refs == 0) {
		for (struct write_choice **pp = &wp_list; *pp; pp = &(*pp)->next) {
			if (*pp == e) {
				*pp = e->next;
				break;
			}
		}
		free(e);
	}
	pthread_mutex_unlock(&wp_lock);
}

static struct replica *find_by_addr_str(struct database *db, const char *addr)
{
	struct list *it;
	list_for_each(it, &db->replicas) {
		struct replica *r = container_of(it, struct replica, node);
		if (r->state != REPLICA_DRAINING && strcmp(r->addr_str, addr) == 0)
			return r;
	}
	return NULL;
}

/* Orders replicas by address (family, bytes, port): the tie-break. */
static int addr_cmp(const struct replica *a, const struct replica *b)
{
	if (a->addr.ss_family != b->addr.ss_family)
		return a->addr.ss_family < b->addr.ss_family ? -1 : 1;
	if (a->addr.ss_family == AF_INET) {
		const struct sockaddr_in *x = (const struct sockaddr_in *)&a->addr;
		const struct sockaddr_in *y = (const struct sockaddr_in *)&b->addr;
		uint32_t ha = ntohl(x->sin_addr.s_addr), hb = ntohl(y->sin_addr.s_addr);
		if (ha != hb)
			return ha < hb ? -1 : 1;
		return ntohs(x->sin_port) < ntohs(y->sin_port)	 ? -1
		       : ntohs(x->sin_port) > ntohs(y->sin_port) ? 1
								 : 0;
	}
	if (a->addr.ss_family == AF_INET6) {
		const struct sockaddr_in6 *x = (const struct sockaddr_in6 *)&a->addr;
		const struct sockaddr_in6 *y = (const struct sockaddr_in6 *)&b->addr;
		int c = memcmp(&x->sin6_addr, &y->sin6_addr, sizeof(x->sin6_addr));
		if (c)
			return c;
		return ntohs(x->sin6_port) < ntohs(y->sin6_port)   ? -1
		       : ntohs(x->sin6_port) > ntohs(y->sin6_port) ? 1
								   : 0;
	}
	return strcmp(a->addr_str, b->addr_str);
}

static bool is_up_primary(const struct replica *r)
{
	return r->state == REPLICA_UP && r->role == ROLE_PRIMARY;
}

/* This worker's copy of db's choice, looked up again when any choice
 * moved (one atomic load when none did).  NULL: none chosen. */
static const struct replica *wp_current(struct database *db)
{
	unsigned g = atomic_load_explicit(&wp_gen, memory_order_acquire);
	if (g != db->wp_gen) {
		char addr[sizeof(db->wp->addr)];
		pthread_mutex_lock(&wp_lock);
		memcpy(addr, db->wp->addr, sizeof(addr));
		pthread_mutex_unlock(&wp_lock);
		db->wp_replica = addr[0] ? find_by_addr_str(db, addr) : NULL;
		db->wp_gen = g;
	}
	return db->wp_replica;
}

bool replica_is_write_primary(const struct replica *r)
{
	if (r->role != ROLE_PRIMARY || r->state != REPLICA_UP)
		return false;
	/* no registry entry (out of memory): every primary, as before */
	return !r->db->wp || wp_current(r->db) == r;
}

static bool no_write_primary(const struct replica *r)
{
	return !r->db->wp || !wp_current(r->db);
}

int database_primaries(const struct database *db)
{
	if (!db->wp)
		return db->primaries;
	int n = 0;
	pthread_mutex_lock(&wp_lock);
	for (int i = 0; i < POOL_MAX_WORKERS; i++)
		if (db->wp->primaries[i] > n)
			n = db->wp->primaries[i];
	pthread_mutex_unlock(&wp_lock);
	return n;
}

/* "127.0.0.3:5432 (timeline 1), ..." : the up primaries other than `w`. */
static void others_list(struct database *db, const struct replica *w, char *buf, size_t len)
{
	size_t n = 0;
	buf[0] = 0;
	struct list *it;
	list_for_each(it, &db->replicas) {
		const struct replica *r = container_of(it, struct replica, node);
		if (r == w || !is_up_primary(r) || n + 1 >= len)
			continue;
		int k = snprintf(buf + n, len - n, "%s%s (timeline %u)", n ? ", " : "", r->addr_str,
				 (unsigned)r->timeline);
		n = k < 0 ? n : n + (size_t)k >= len ? len - 1 : n + (size_t)k;
	}
}

void database_update_write_primary(struct database *db)
{
	struct write_choice *e = db->wp;
	bool checks = checks_enabled();
	bool pending = false; /* a replica's first check is still out */
	int n = 0;
	struct replica *best = NULL;
	struct list *it;
	list_for_each(it, &db->replicas) {
		struct replica *r = container_of(it, struct replica, node);
		if (r->state == REPLICA_NEW && checks)
			pending = true;
		if (!is_up_primary(r))
			continue;
		n++;
		if (!best || r->timeline > best->timeline ||
		    (r->timeline == best->timeline && addr_cmp(r, best) < 0))
			best = r;
	}
	db->primaries = n;
	if (!e)
		e = db->wp = wp_claim(db->name); /* out of memory before: try again */
	if (!e)
		return;
	int w = worker_index();
	/* What to log, said after the lock. */
	enum { SAY_NONE, SAY_SPLIT, SAY_CHANGED, SAY_OVER } say = SAY_NONE;
	char addr[sizeof(e->addr)], tl[16], count[16], others[256] = "";
	pthread_mutex_lock(&wp_lock);
	if (w >= 0 && w < POOL_MAX_WORKERS)
		e->primaries[w] = n;
	struct replica *cur = e->addr[0] ? find_by_addr_str(db, e->addr) : NULL;
	struct replica *next = cur;
	bool change = false;
	if (!e->addr[0]) {
		next = pending ? NULL : best;
		change = next != NULL;
	} else if (cur && is_up_primary(cur)) {
		uint32_t cur_tl = cur->timeline > e->timeline ? cur->timeline : e->timeline;
		e->timeline = cur_tl;
		if (best && best->timeline > cur_tl) {
			next = best; /* a newer timeline: a failover happened */
			change = true;
		}
	} else if (!cur || cur->state != REPLICA_NEW) {
		/* Not an up primary here.  Failed here (down, banned, gone from
		 * DNS) or demoted here (seen as a primary on the chosen
		 * timeline, now a standby): the best other one takes over.  Up
		 * but a standby (or role unknown) here and never seen as a
		 * primary on that timeline: this worker has not seen its
		 * promotion yet, so only a primary at least as new takes over,
		 * never an older timeline (that would send writes back to the
		 * old primary for a moment).  With no other primary it is
		 * kept: it takes no writes while it is not an up primary. */
		bool failed_here = !cur || cur->state != REPLICA_UP ||
				   (cur->primary_tl && cur->primary_tl >= e->timeline);
		if (best && (failed_here || best->timeline >= e->timeline)) {
			next = best;
			change = true;
		}
	} /* else not checked yet by this worker (back in DNS): kept */
	char from[sizeof(e->addr)];
	snprintf(from, sizeof(from), "%s", e->addr);
	if (change) {
		snprintf(e->addr, sizeof(e->addr), "%s", next ? next->addr_str : "");
		e->timeline = next ? next->timeline : 0;
		atomic_fetch_add_explicit(&wp_gen, 1, memory_order_release);
	}
	int most = 0;
	for (int i = 0; i < POOL_MAX_WORKERS; i++)
		if (e->primaries[i] > most)
			most = e->primaries[i];
	bool split = most > 1 && e->addr[0];
	if (split && !e->split_said) {
		say = SAY_SPLIT;
		e->split_said = true;
	} else if (split && change) {
		say = SAY_CHANGED;
	} else if (most <= 1 && e->split_said) {
		say = SAY_OVER;
		e->split_said = false;
	}
	snprintf(addr, sizeof(addr), "%s", e->addr[0] ? e->addr : "none");
	snprintf(tl, sizeof(tl), "%u", (unsigned)e->timeline);
	snprintf(count, sizeof(count), "%d", most);
	pthread_mutex_unlock(&wp_lock);
	switch (say) {
	case SAY_SPLIT:
		others_list(db, next, others, sizeof(others));
		log_warn("several primaries (split brain)", "db", db->name, "primaries", count,
			 "write_primary", addr, "timeline", tl, "others", others, NULL);
		break;
	case SAY_CHANGED:
		log_warn("write primary changed", "db", db->name, "write_primary", addr, "timeline",
			 tl, "from", from[0] ? from : "none", NULL);
		break;
	case SAY_OVER:
		log_info("split brain over", "db", db->name, "primaries", count, "write_primary",
			 addr, NULL);
		break;
	case SAY_NONE:
		break;
	}
}

/* ---- host lists -------------------------------------------------------------- */

typedef void (*addr_fn)(struct database *db, const char *host, const struct sockaddr *sa,
			socklen_t len);

/* Calls fn for every address db's host list stands for right now. */
static void for_each_addr(struct database *db, addr_fn fn)
{
	const struct db_config *cfg = db->cfg;
	char hosts[1024];
	snprintf(hosts, sizeof(hosts), "%s", cfg->host ? cfg->host : "");
	char *save = NULL;
	for (char *h = strtok_r(hosts, ",", &save); h; h = strtok_r(NULL, ",", &save)) {
		while (*h == ' ')
			h++;
		char *end = h + strlen(h);
		while (end > h && end[-1] == ' ')
			*--end = 0;
		if (!*h)
			continue;
		struct sockaddr_storage ss;
		memset(&ss, 0, sizeof(ss));
		struct sockaddr_in *in4 = (struct sockaddr_in *)&ss;
		struct sockaddr_in6 *in6 = (struct sockaddr_in6 *)&ss;
		if (h[0] == '/') {
			struct sockaddr_un *un = (struct sockaddr_un *)&ss;
			un->sun_family = AF_UNIX;
			snprintf(un->sun_path, sizeof(un->sun_path), "%s/.s.PGSQL.%d", h, cfg->port);
			fn(db, h, (struct sockaddr *)un, sizeof(*un));
		} else if (inet_pton(AF_INET, h, &in4->sin_addr) == 1) {
			in4->sin_family = AF_INET;
			in4->sin_port = htons((uint16_t)cfg->port);
			fn(db, h, (struct sockaddr *)in4, sizeof(*in4));
		} else if (inet_pton(AF_INET6, h, &in6->sin6_addr) == 1) {
			in6->sin6_family = AF_INET6;
			in6->sin6_port = htons((uint16_t)cfg->port);
			fn(db, h, (struct sockaddr *)in6, sizeof(*in6));
		} else {
			const struct dns_addr *addrs;
			int n;
			discovery_watch(h);
			if (!discovery_lookup(h, &addrs, &n))
				continue;
			for (int i = 0; i < n; i++) {
				struct sockaddr_storage a = addrs[i].sa;
				if (a.ss_family == AF_INET)
					((struct sockaddr_in *)&a)->sin_port = htons((uint16_t)cfg->port);
				else
					((struct sockaddr_in6 *)&a)->sin6_port =
						htons((uint16_t)cfg->port);
				fn(db, h, (struct sockaddr *)&a, addrs[i].len);
			}
		}
	}
}

static struct replica *find_replica(struct database *db, const struct sockaddr *sa, socklen_t len)
{
	struct list *it;
	list_for_each(it, &db->replicas) {
		struct replica *r = container_of(it, struct replica, node);
		if (r->addrlen == len && memcmp(&r->addr, sa, len) == 0)
			return r;
	}
	return NULL;
}

static void mark_addr(struct database *db, const char *host, const struct sockaddr *sa,
		      socklen_t len)
{
	struct replica *r = find_replica(db, sa, len);
	if (r) {
		r->seen = true;
		if (r->state == REPLICA_DRAINING) {
			/* Checked again before it takes work: it may have changed. */
			r->state = checks_enabled() ? REPLICA_NEW : REPLICA_UP;
			pool_add_replica(r);
			log_info("replica back in DNS", "db", db->name, "addr", r->addr_str, NULL);
			if (health)
				health->check_now(r);
		}
		return;
	}
	r = calloc(1, sizeof(*r));
	if (!r)
		return;
	r->db = db;
	memcpy(&r->addr, sa, len);
	r->addrlen = len;
	conn_format_addr(&r->addr, r->addr_str, sizeof(r->addr_str));
	if (worker_threaded() && !(r->shared = pool_slot_get(db->name, "", r->addr_str))) {
		free(r);
		return;
	}
	snprintf(r->host, sizeof(r->host), "%s", host);
	/* No traffic until a health check passes (checked at once); without
	 * checks the first successful login is the check. */
	r->state = checks_enabled() ? REPLICA_NEW : REPLICA_UP;
	r->role = ROLE_UNKNOWN;
	r->seen = true;
	list_init(&r->pools);
	list_append(&db->replicas, &r->node);
	db->replica_count++;
	pool_add_replica(r);
	log_info("replica added", "db", db->name, "addr", r->addr_str, "host", host, NULL);
	if (health)
		health->replica_added(r);
}

void database_sync_replicas(struct database *db)
{
	struct list *it;
	list_for_each(it, &db->replicas) {
		container_of(it, struct replica, node)->seen = false;
	}
	for_each_addr(db, mark_addr);
	list_for_each(it, &db->replicas) {
		struct replica *r = container_of(it, struct replica, node);
		if (!r->seen && r->state != REPLICA_DRAINING) {
			replica_set_state(r, REPLICA_DRAINING, "gone from DNS");
			/* Its pools stay until the busy connections end; no new ones. */
		}
	}
	struct list *git;
	list_for_each(git, &db->groups) {
		pool_kick(container_of(git, struct pool_group, node));
	}
}

static bool host_list_has(const char *list, const char *host)
{
	size_t n = strlen(host);
	for (const char *p = list; (p = strstr(p, host)); p += n) {
		bool start = p == list || p[-1] == ',' || p[-1] == ' ';
		bool end = p[n] == 0 || p[n] == ',' || p[n] == ' ';
		if (start && end)
			return true;
	}
	return false;
}

void database_hosts_changed(const char *host)
{
	struct list *it;
	list_for_each(it, &fleet.databases) {
		struct database *db = container_of(it, struct database, node);
		if (db->cfg && db->cfg->host && host_list_has(db->cfg->host, host))
			database_sync_replicas(db);
	}
}

static struct database *find_db(const char *name)
{
	struct list *it;
	list_for_each(it, &fleet.databases) {
		struct database *db = container_of(it, struct database, node);
		if (strcmp(db->name, name) == 0)
			return db;
	}
	return NULL;
}

static bool is_wildcard(const struct db_config *cfg)
{
	return cfg && strcmp(cfg->name, "*") == 0;
}

static struct database *database_new(const char *name, const struct db_config *cfg,
				     const char *user)
{
	struct database *db = calloc(1, sizeof(*db));
	if (!db)
		return NULL;
	snprintf(db->name, sizeof(db->name), "%s", name);
	snprintf(db->dbname, sizeof(db->dbname), "%s", cfg->dbname ? cfg->dbname : name);
	db->cfg = cfg;
	db->pool_size = cfg->pool_size >= 0 ? cfg->pool_size : (int)fleet.cfg.default_pool_size;
	db->pool_mode = cfg->pool_mode >= 0 ? cfg->pool_mode : fleet.cfg.pool_mode;
	db->is_auto = user != NULL;
	if (user)
		snprintf(db->auto_user, sizeof(db->auto_user), "%s", user);
	db->idle_since = fleet_now();
	list_init(&db->replicas);
	list_init(&db->groups);
	db->wp = wp_claim(name); /* NULL (out of memory): every primary takes writes */
	list_append(&fleet.databases, &db->node);
	/* Replicas (and their health checks) last: auto_user is set. */
	database_sync_replicas(db);
	return db;
}

struct database *database_lookup(const char *name)
{
	struct database *db = find_db(name);
	if (db)
		return db->cfg_own ? NULL : db; /* removed by a reload */
	const struct db_config *cfg = config_find_db(&fleet.cfg, name);
	if (!cfg || is_wildcard(cfg))
		return NULL;
	return database_new(name, cfg, NULL);
}

bool database_auto_possible(const char *name)
{
	return !find_db(name) && is_wildcard(config_find_db(&fleet.cfg, name));
}

/* ---- databases from "*" ------------------------------------------------------ */

/*
 * max_auto_databases holds for the process: with workers = N each worker
 * has its own struct database for a name its clients use, so the names
 * are counted here, each once however many workers hold it.  Touched only
 * when a database is created or removed, never per query.
 */
struct auto_name {
	struct auto_name *next;
	int refs; /* workers holding a database of this name */
	char name[NAME_MAX_LEN];
};

static pthread_mutex_t auto_lock = PTHREAD_MUTEX_INITIALIZER;
static struct auto_name *auto_names;
static int auto_count;

/* Counts `name` for this worker; a new name only below `limit` (< 0: any). */
static bool auto_name_claim(const char *name, long long limit)
{
	bool ok = true;
	pthread_mutex_lock(&auto_lock);
	struct auto_name *a;
	for (a = auto_names; a; a = a->next)
		if (strcmp(a->name, name) == 0)
			break;
	if (a) {
		a->refs++;
	} else if ((limit >= 0 && auto_count >= limit) || !(a = calloc(1, sizeof(*a)))) {
		ok = false;
	} else {
		snprintf(a->name, sizeof(a->name), "%s", name);
		a->refs = 1;
		a->next = auto_names;
		auto_names = a;
		auto_count++;
	}
	pthread_mutex_unlock(&auto_lock);
	return ok;
}

static void auto_name_release(const char *name)
{
	bool gone = false;
	pthread_mutex_lock(&auto_lock);
	for (struct auto_name **pp = &auto_names; *pp; pp = &(*pp)->next) {
		struct auto_name *a = *pp;
		if (strcmp(a->name, name) != 0)
			continue;
		if (--a->refs == 0) {
			*pp = a->next;
			free(a);
			auto_count--;
			gone = true;
		}
		break;
	}
	pthread_mutex_unlock(&auto_lock);
	if (gone)
		pool_welcome_forget(name); /* no worker has it any more */
}

int database_auto_count(void)
{
	pthread_mutex_lock(&auto_lock);
	int n = auto_count;
	pthread_mutex_unlock(&auto_lock);
	return n;
}

struct database *database_create_auto(const char *name, const char *user, const char **sqlstate,
				      char *msg, size_t msglen)
{
	struct database *db = find_db(name);
	if (db && !db->cfg_own)
		return db; /* another client of this worker got there first */
	const struct db_config *cfg = config_find_db(&fleet.cfg, name);
	if (db || !cfg) {
		*sqlstate = "3D000";
		snprintf(msg, msglen, "database \"%s\" does not exist", name);
		return NULL;
	}
	if (!is_wildcard(cfg))
		return database_lookup(name); /* a reload named it meanwhile */
	if (!auto_name_claim(name, fleet.cfg.max_auto_databases)) {
		*sqlstate = "53400";
		snprintf(msg, msglen,
			 "database \"%s\" not created: max_auto_databases (%lld) databases from "
			 "\"*\" exist",
			 name, (long long)fleet.cfg.max_auto_databases);
		return NULL;
	}
	db = database_new(name, cfg, user);
	if (!db) {
		auto_name_release(name);
		*sqlstate = "53200";
		snprintf(msg, msglen, "out of memory");
		return NULL;
	}
	log_info("database created", "db", name, "from", "*", "user", user, NULL);
	return db;
}

void database_set_auto(struct database *db, bool is_auto)
{
	if (db->is_auto == is_auto)
		return;
	/* A name a reload moves to "*" was already in use: counted, never
	 * refused; it goes when idle like any other. */
	if (is_auto && !auto_name_claim(db->name, -1))
		return;
	if (!is_auto)
		auto_name_release(db->name);
	else if (!db->auto_user[0] && !list_empty(&db->groups))
		snprintf(db->auto_user, sizeof(db->auto_user), "%s",
			 container_of(db->groups.next, struct pool_group, node)->user);
	db->is_auto = is_auto;
}

static void replica_free(struct replica *r)
{
	stats_replica_forgotten(r);
	if (health)
		health->replica_removed(r);
	pool_remove_replica(r);
	list_del(&r->node);
	r->db->replica_count--;
	if (r->db->wp_replica == r) {
		r->db->wp_replica = NULL;
		r->db->wp_gen = atomic_load(&wp_gen) - 1; /* look it up again */
	}
	if (r->shared)
		pool_slot_put(r->shared);
	free(r);
}

void database_reap(void)
{
	struct list *dit, *it, *tmp;
	list_for_each(dit, &fleet.databases) {
		struct database *db = container_of(dit, struct database, node);
		list_for_each_safe(it, tmp, &db->replicas) {
			struct replica *r = container_of(it, struct replica, node);
			if (r->state == REPLICA_DRAINING && r->server_conns == 0) {
				log_info("replica removed", "db", db->name, "addr", r->addr_str, NULL);
				replica_free(r);
			}
		}
	}
}

/* Frees db, whose servers are all closed (or were never opened). */
static void database_free(struct database *db)
{
	struct list *it, *tmp;
	list_for_each_safe(it, tmp, &db->groups) {
		pool_free_group(container_of(it, struct pool_group, node));
	}
	list_for_each_safe(it, tmp, &db->replicas) {
		replica_free(container_of(it, struct replica, node));
	}
	list_del(&db->node);
	wp_release(db->wp);
	if (db->is_auto)
		auto_name_release(db->name);
	free(db->cfg_own); /* one block: a removed entry with its strings */
	free(db);
}

void database_reap_auto(double now)
{
	double idle = fleet.cfg.autodb_idle_timeout;
	if (idle <= 0)
		return;
	struct list *dit, *dtmp;
	list_for_each_safe(dit, dtmp, &fleet.databases) {
		struct database *db = container_of(dit, struct database, node);
		if (!db->is_auto || db->clients > 0 || now - db->idle_since < idle)
			continue;
		log_info("database removed", "db", db->name, "reason", "autodb_idle_timeout", NULL);
		/* No client: whatever server is left is idle, logging in, or
		 * running the reset query.  Closed now; freed at the next loop
		 * pass, and nothing of a closed server reaches its pool again. */
		database_close_all(db, "database removed (autodb_idle_timeout)", "autodb_idle_timeout");
		database_free(db);
	}
}

void database_free_all(void)
{
	struct list *dit, *dtmp;
	list_for_each_safe(dit, dtmp, &fleet.databases) {
		database_free(container_of(dit, struct database, node));
	}
}

void database_foreach_replica_row(void (*fn)(const struct replica_row *row, void *arg), void *arg)
{
	struct list *dit, *it;
	list_for_each(dit, &fleet.databases) {
		struct database *db = container_of(dit, struct database, node);
		list_for_each(it, &db->replicas) {
			struct replica *r = container_of(it, struct replica, node);
			struct replica_row row;
			memset(&row, 0, sizeof(row));
			row.database = db->name;
			row.host = r->host;
			if (r->addr.ss_family == AF_INET) {
				const struct sockaddr_in *in4 = (const struct sockaddr_in *)&r->addr;
				inet_ntop(AF_INET, &in4->sin_addr, row.addr, sizeof(row.addr));
				row.port = ntohs(in4->sin_port);
			} else if (r->addr.ss_family == AF_INET6) {
				const struct sockaddr_in6 *in6 = (const struct sockaddr_in6 *)&r->addr;
				inet_ntop(AF_INET6, &in6->sin6_addr, row.addr, sizeof(row.addr));
				row.port = ntohs(in6->sin6_port);
			} else {
				snprintf(row.addr, sizeof(row.addr), "%s", r->host);
				row.port = db->cfg ? db->cfg->port : 5432;
			}
			row.role = role_names[r->role];
			row.state = state_names[r->state];
			row.lag_s = r->lag_s;
			row.timeline = r->timeline;
			row.write_primary = replica_is_write_primary(r);
			row.server_conns = r->server_conns;
			row.active = r->active;
			row.xacts = r->st.xacts;
			row.queries = r->st.queries;
			row.avg_xact_us = r->st.xacts ? r->st.xact_us / r->st.xacts : 0;
			row.last_check = r->last_check;
			if (r->last_check > 0) {
				time_t t = (time_t)r->last_check;
				struct tm tm;
				gmtime_r(&t, &tm);
				strftime(row.last_check_str, sizeof(row.last_check_str),
					 "%Y-%m-%d %H:%M:%S UTC", &tm);
			}
			row.last_error = r->last_error;
			fn(&row, arg);
		}
	}
}

void database_reconnect(struct database *db, const char *why)
{
	struct list *rit, *pit, *it, *tmp;
	/* New clients wait for a new login's parameters (role and database
	 * defaults may have changed: that is often why one reconnects). */
	list_for_each(it, &db->groups) {
		container_of(it, struct pool_group, node)->have_welcome = false;
	}
	pool_welcome_forget(db->name);
	list_for_each(rit, &db->replicas) {
		struct replica *r = container_of(rit, struct replica, node);
		list_for_each(pit, &r->pools) {
			struct pool *p = container_of(pit, struct pool, replica_node);
			list_for_each(it, &p->active.head) {
				container_of(it, struct server, node)->close_needed = true;
			}
			list_for_each(it, &p->login.head) {
				container_of(it, struct server, node)->close_needed = true;
			}
			list_for_each_safe(it, tmp, &p->idle.head) {
				server_close(container_of(it, struct server, node), why);
			}
		}
	}
}

void database_refresh_defaults(struct database *db)
{
	struct list *rit, *pit, *git;
	db->defaults_gen++;
	/* workers = N: another worker's greeting may be the old one; a group
	 * with no connection here (nothing to probe) learns from its next
	 * login, or from a greeting published after this. */
	pool_welcome_forget(db->name);
	list_for_each(git, &db->groups) {
		struct pool_group *g = container_of(git, struct pool_group, node);
		bool any = false;
		list_for_each(pit, &g->pools) {
			struct pool *p = container_of(pit, struct pool, group_node);
			any = any || p->idle.count + p->active.count > 0;
		}
		if (!any)
			g->have_welcome = false;
	}
	list_for_each(rit, &db->replicas) {
		struct replica *r = container_of(rit, struct replica, node);
		list_for_each(pit, &r->pools) {
			struct pool *p = container_of(pit, struct pool, replica_node);
			if (r->state == REPLICA_UP && p->idle.count + p->active.count > 0)
				(void)pool_probe_defaults(p, NULL);
		}
	}
}

void database_close_all(struct database *db, const char *message, const char *why)
{
	struct list *git, *rit, *pit, *it, *tmp;
	list_for_each(git, &db->groups) {
		struct pool_group *g = container_of(git, struct pool_group, node);
		struct statlist *lists[] = {&g->waiting, &g->active};
		for (int i = 0; i < 2; i++) {
			list_for_each_safe(it, tmp, &lists[i]->head) {
				client_close(container_of(it, struct client, node), "57P01", "%s",
					     message);
			}
		}
	}
	list_for_each(rit, &db->replicas) {
		struct replica *r = container_of(rit, struct replica, node);
		list_for_each(pit, &r->pools) {
			struct pool *p = container_of(pit, struct pool, replica_node);
			struct statlist *lists[] = {&p->active, &p->idle, &p->login};
			for (int i = 0; i < 3; i++) {
				list_for_each_safe(it, tmp, &lists[i]->head) {
					server_close(container_of(it, struct server, node), why);
				}
			}
		}
	}
}

void replica_libpq_params(const struct replica *r, struct replica_libpq *p)
{
	static const char *sslmodes[] = {"disable", "allow",     "prefer",
					 "require", "verify-ca", "verify-full"};
	const struct database *db = r->db;
	const char **kw = p->kw, **val = p->val;
	int n = 0;
	p->addr[0] = 0;
	if (r->addr.ss_family == AF_UNIX) {
		kw[n] = "host", val[n++] = r->host; /* the socket directory */
		snprintf(p->port, sizeof(p->port), "%d", db->cfg ? db->cfg->port : 5432);
	} else {
		const struct sockaddr_in *in4 = (const struct sockaddr_in *)&r->addr;
		const struct sockaddr_in6 *in6 = (const struct sockaddr_in6 *)&r->addr;
		if (r->addr.ss_family == AF_INET) {
			inet_ntop(AF_INET, &in4->sin_addr, p->addr, sizeof(p->addr));
			snprintf(p->port, sizeof(p->port), "%u", ntohs(in4->sin_port));
		} else {
			inet_ntop(AF_INET6, &in6->sin6_addr, p->addr, sizeof(p->addr));
			snprintf(p->port, sizeof(p->port), "%u", ntohs(in6->sin6_port));
		}
		/* hostaddr connects without a lookup; host names the server for
		 * verify-full. */
		kw[n] = "hostaddr", val[n++] = p->addr;
		kw[n] = "host", val[n++] = r->host;
	}
	kw[n] = "port", val[n++] = p->port;
	kw[n] = "dbname", val[n++] = db->dbname;
	kw[n] = "sslmode", val[n++] = sslmodes[fleet.cfg.server_tls_sslmode];
	if (*fleet.cfg.server_tls_ca_file)
		kw[n] = "sslrootcert", val[n++] = fleet.cfg.server_tls_ca_file;
	/* server_tls_protocols, as on the pooled connections (tls.c) */
	const char *protos = fleet.cfg.server_tls_protocols;
	if (!strcasestr(protos, "secure") && !strcasestr(protos, "tlsv1.2"))
		kw[n] = "ssl_min_protocol_version", val[n++] = "TLSv1.3";
	if (!strcasestr(protos, "secure") && !strcasestr(protos, "tlsv1.3"))
		kw[n] = "ssl_max_protocol_version", val[n++] = "TLSv1.2";
	/* the same client certificate as the pooled connections (tls.c) */
	if (*fleet.cfg.server_tls_cert_file) {
		kw[n] = "sslcert", val[n++] = fleet.cfg.server_tls_cert_file;
		kw[n] = "sslkey", val[n++] = fleet.cfg.server_tls_key_file;
	}
	kw[n] = "gssencmode", val[n++] = "disable";
	/* the tcp_* settings, as on pooled connections (conn.c); 0: libpq's default */
	kw[n] = "keepalives", val[n++] = fleet.cfg.tcp_keepalive ? "1" : "0";
	if (fleet.cfg.tcp_keepidle > 0) {
		snprintf(p->ka_idle, sizeof(p->ka_idle), "%lld", fleet.cfg.tcp_keepidle);
		kw[n] = "keepalives_idle", val[n++] = p->ka_idle;
	}
	if (fleet.cfg.tcp_keepintvl > 0) {
		snprintf(p->ka_intvl, sizeof(p->ka_intvl), "%lld", fleet.cfg.tcp_keepintvl);
		kw[n] = "keepalives_interval", val[n++] = p->ka_intvl;
	}
	if (fleet.cfg.tcp_keepcnt > 0) {
		snprintf(p->ka_cnt, sizeof(p->ka_cnt), "%lld", fleet.cfg.tcp_keepcnt);
		kw[n] = "keepalives_count", val[n++] = p->ka_cnt;
	}
	if (fleet.cfg.tcp_user_timeout > 0) {
		snprintf(p->user_timeout, sizeof(p->user_timeout), "%lld",
			 fleet.cfg.tcp_user_timeout);
		kw[n] = "tcp_user_timeout", val[n++] = p->user_timeout;
	}
	p->n = n;
}
