/*
 * http.c: the HTTP endpoint on http_listen, served by libevent's evhttp on
 * the main loop: GET /metrics (Prometheus text exposition format 0.0.4),
 * GET /healthz (the loop answers) and GET /readyz (listening, not draining,
 * and every configured database has a replica for its target role).
 *
 * It reads state (databases, replicas, pools, clients, stats, DNS) and
 * formats it.  Must not: change that state, block, allocate per series (a
 * scrape is written into the request's one output evbuffer), or show a
 * password or query text.
 */
#include "http.h"

#include <errno.h>
#include <event2/buffer.h>
#include <event2/http.h>
#include <event2/listener.h>
#include <inttypes.h>
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "batch.h"
#include "client.h"
#include "database.h"
#include "discovery.h"
#include "listener.h"
#include "log.h"
#include "mailbox.h"
#include "pool.h"
#include "router.h"
#include "runtime.h"
#include "stats.h"
#include "version.h"

#define CONTENT_TYPE_METRICS "text/plain; version=0.0.4; charset=utf-8"
#define CONTENT_TYPE_TEXT "text/plain; charset=utf-8"

static THREAD_LOCAL struct evhttp *http;
static THREAD_LOCAL struct evconnlistener *http_listener;
static THREAD_LOCAL struct event *http_resume_ev;
static THREAD_LOCAL double http_last_log;

/* ---- the exposition format --------------------------------------------------- */

/* A label value, escaped as the format requires (backslash, double quote,
 * newline).  A byte that is not UTF-8 (a database name a client made up)
 * becomes U+FFFD: Prometheus rejects the whole scrape otherwise. */
static void put_label_value(struct evbuffer *b, const char *s)
{
	const unsigned char *p = (const unsigned char *)s, *run = p;
	while (*p) {
		size_t n = utf8_seq_len(p);
		if (n && *p != '\\' && *p != '"' && *p != '\n') {
			p += n;
			continue;
		}
		evbuffer_add(b, run, (size_t)(p - run));
		if (!n)
			evbuffer_add(b, "\xef\xbf\xbd", 3);
		else if (*p == '\n')
			evbuffer_add(b, "\\n", 2);
		else
			evbuffer_add_printf(b, "\\%c", *p);
		p++;
		run = p;
	}
	evbuffer_add(b, run, (size_t)(p - run));
}

static void family(struct evbuffer *b, const char *name, const char *type, const char *help)
{
	evbuffer_add_printf(b, "# HELP %s %s\n# TYPE %s %s\n", name, help, name, type);
}

/* `name{k="v",...}`: the labels are NULL-terminated key, value pairs. */
static void put_series(struct evbuffer *b, const char *name, va_list ap)
{
	evbuffer_add(b, name, strlen(name));
	const char *key = va_arg(ap, const char *);
	if (!key)
		return;
	evbuffer_add(b, "{", 1);
	for (bool first = true; key; key = va_arg(ap, const char *), first = false) {
		const char *val = va_arg(ap, const char *);
		evbuffer_add_printf(b, "%s%s=\"", first ? "" : ",", key);
		put_label_value(b, val ? val : "");
		evbuffer_add(b, "\"", 1);
	}
	evbuffer_add(b, "}", 1);
}

static void sample_u64(struct evbuffer *b, const char *name, uint64_t v, ...)
	__attribute__((sentinel));
static void sample_u64(struct evbuffer *b, const char *name, uint64_t v, ...)
{
	va_list ap;
	va_start(ap, v);
	put_series(b, name, ap);
	va_end(ap);
	evbuffer_add_printf(b, " %" PRIu64 "\n", v);
}

static void sample_f(struct evbuffer *b, const char *name, double v, ...) __attribute__((sentinel));
static void sample_f(struct evbuffer *b, const char *name, double v, ...)
{
	va_list ap;
	va_start(ap, v);
	put_series(b, name, ap);
	va_end(ap);
	if (isnan(v))
		evbuffer_add(b, " NaN\n", 5);
	else if (isinf(v))
		evbuffer_add_printf(b, " %cInf\n", v > 0 ? '+' : '-');
	else
		evbuffer_add_printf(b, " %.15g\n", v);
}

/* _bucket (cumulative, le="+Inf" last), _sum and _count of one database. */
static void put_histogram(struct evbuffer *b, const char *name, const struct histogram *h,
			  const char *db)
{
	char bucket[64], sum[64], count[64], le[32];
	snprintf(bucket, sizeof(bucket), "%s_bucket", name);
	snprintf(sum, sizeof(sum), "%s_sum", name);
	snprintf(count, sizeof(count), "%s_count", name);
	uint64_t cum = 0;
	for (int i = 0; i <= STATS_BUCKETS; i++) {
		cum += h->bucket[i];
		if (i < STATS_BUCKETS)
			snprintf(le, sizeof(le), "%g", stats_bucket_le[i]);
		else
			snprintf(le, sizeof(le), "+Inf");
		sample_u64(b, bucket, cum, "database", db, "le", le, NULL);
	}
	sample_f(b, sum, h->sum, "database", db, NULL);
	/* The +Inf bucket by definition, whatever h->count says. */
	sample_u64(b, count, cum, "database", db, NULL);
}

/* ---- /metrics ------------------------------------------------------------------ */

#define DB_OF(it) container_of(it, struct database, node)
#define REPLICA_OF(it) container_of(it, struct replica, node)

static void put_clients(struct evbuffer *b)
{
	/* Logged in and holding a server connection (active), logged in
	 * between transactions (idle), queued for a server (waiting), and
	 * still logging in (login, including those waiting for the first
	 * server parameters of their pool). */
	uint64_t login = (uint64_t)fleet.login_clients.count, waiting = 0, active = 0, idle = 0;
	struct database *db;
	struct list *dit, *git, *cit;
	list_for_each(dit, &fleet.databases) {
		db = DB_OF(dit);
		list_for_each(git, &db->groups) {
			struct pool_group *g = container_of(git, struct pool_group, node);
			waiting += (uint64_t)g->waiting.count;
			list_for_each(cit, &g->active.head) {
				const struct client *c = container_of(cit, struct client, node);
				if (c->welcome_pending)
					login++;
				else if (c->link)
					active++;
				else
					idle++;
			}
		}
	}
	family(b, "pgfleet_client_connections", "gauge", "Client connections by state.");
	sample_u64(b, "pgfleet_client_connections", login, "state", "login", NULL);
	sample_u64(b, "pgfleet_client_connections", waiting, "state", "waiting", NULL);
	sample_u64(b, "pgfleet_client_connections", active, "state", "active", NULL);
	sample_u64(b, "pgfleet_client_connections", idle, "state", "idle", NULL);
	family(b, "pgfleet_client_connections_limit", "gauge",
	       "max_client_conn: clients beyond it are refused.");
	sample_u64(b, "pgfleet_client_connections_limit", (uint64_t)fleet.cfg.max_client_conn,
		   NULL);
}

static void put_servers(struct evbuffer *b)
{
	struct database *db;
	struct replica *r;
	struct list *dit, *rit, *pit;
	family(b, "pgfleet_server_connections", "gauge",
	       "Server connections by database, replica and state.");
	list_for_each(dit, &fleet.databases) {
		db = DB_OF(dit);
		list_for_each(rit, &db->replicas) {
			r = REPLICA_OF(rit);
			uint64_t n[3] = {0, 0, 0};
			list_for_each(pit, &r->pools) {
				const struct pool *p = container_of(pit, struct pool, replica_node);
				n[0] += (uint64_t)p->login.count;
				n[1] += (uint64_t)p->idle.count;
				n[2] += (uint64_t)p->active.count;
			}
			static const char *states[3] = {"login", "idle", "active"};
			for (int i = 0; i < 3; i++)
				sample_u64(b, "pgfleet_server_connections", n[i], "database", db->name,
					   "replica", r->addr_str, "state", states[i], NULL);
		}
	}
}

/* The per-replica counters, one family each. */
enum counter { C_XACTS, C_QUERIES, C_RECV, C_SENT, C_XACT_TIME, C_QUERY_TIME, C_WAIT_TIME };

static const struct {
	const char *name, *help;
} counters[] = {
	[C_XACTS] = {"pgfleet_transactions_total", "Transactions finished, by replica."},
	[C_QUERIES] = {"pgfleet_queries_total", "Queries (and Syncs) answered, by replica."},
	[C_RECV] = {"pgfleet_received_bytes_total", "Bytes from clients passed to the replica."},
	[C_SENT] = {"pgfleet_sent_bytes_total", "Bytes from the replica passed to clients."},
	[C_XACT_TIME] = {"pgfleet_transaction_seconds_total", "Time spent in transactions."},
	[C_QUERY_TIME] = {"pgfleet_query_seconds_total", "Time spent in queries."},
	[C_WAIT_TIME] = {"pgfleet_client_wait_seconds_total",
			 "Time clients waited for a server connection of the replica."},
};

static void put_counter_sample(struct evbuffer *b, enum counter k, const struct stats *st,
			       const char *db, const char *replica)
{
	const char *name = counters[k].name;
	switch (k) {
	case C_XACTS:
		sample_u64(b, name, st->xacts, "database", db, "replica", replica, NULL);
		break;
	case C_QUERIES:
		sample_u64(b, name, st->queries, "database", db, "replica", replica, NULL);
		break;
	case C_RECV:
		sample_u64(b, name, st->bytes_recv, "database", db, "replica", replica, NULL);
		break;
	case C_SENT:
		sample_u64(b, name, st->bytes_sent, "database", db, "replica", replica, NULL);
		break;
	case C_XACT_TIME:
		sample_f(b, name, (double)st->xact_us / 1e6, "database", db, "replica", replica,
			 NULL);
		break;
	case C_QUERY_TIME:
		sample_f(b, name, (double)st->query_us / 1e6, "database", db, "replica", replica,
			 NULL);
		break;
	case C_WAIT_TIME:
		sample_f(b, name, (double)st->wait_us / 1e6, "database", db, "replica", replica,
			 NULL);
		break;
	}
}

static void put_counters(struct evbuffer *b)
{
	struct database *db;
	struct replica *r;
	struct list *dit, *rit;
	for (size_t k = 0; k < sizeof(counters) / sizeof(counters[0]); k++) {
		family(b, counters[k].name, "counter", counters[k].help);
		list_for_each(dit, &fleet.databases) {
			db = DB_OF(dit);
			list_for_each(rit, &db->replicas) {
				r = REPLICA_OF(rit);
				put_counter_sample(b, (enum counter)k, &r->st, db->name, r->addr_str);
			}
		}
	}
}

static void put_histograms(struct evbuffer *b)
{
	struct database *db;
	struct list *dit;
	family(b, "pgfleet_transaction_duration_seconds", "histogram",
	       "Duration of transactions, from the first request to ReadyForQuery idle.");
	list_for_each(dit, &fleet.databases) {
		db = DB_OF(dit);
		put_histogram(b, "pgfleet_transaction_duration_seconds", &db->xact_hist, db->name);
	}
	family(b, "pgfleet_wait_seconds", "histogram",
	       "Time a client waited for a server connection, per assignment.");
	list_for_each(dit, &fleet.databases) {
		db = DB_OF(dit);
		put_histogram(b, "pgfleet_wait_seconds", &db->wait_hist, db->name);
	}
}

static void put_replicas(struct evbuffer *b)
{
	struct database *db;
	struct replica *r;
	struct list *dit, *rit;
	family(b, "pgfleet_replica_up", "gauge", "1 when the replica is up (takes transactions).");
	list_for_each(dit, &fleet.databases) {
		db = DB_OF(dit);
		list_for_each(rit, &db->replicas) {
			r = REPLICA_OF(rit);
			sample_u64(b, "pgfleet_replica_up", r->state == REPLICA_UP, "database",
				   db->name, "replica", r->addr_str, "role", replica_role_name(r->role),
				   NULL);
		}
	}
	family(b, "pgfleet_replica_state", "gauge",
	       "1 for the replica's life-cycle state (new, up, down, banned, draining).");
	list_for_each(dit, &fleet.databases) {
		db = DB_OF(dit);
		list_for_each(rit, &db->replicas) {
			r = REPLICA_OF(rit);
			for (int s = REPLICA_NEW; s <= REPLICA_DRAINING; s++)
				sample_u64(b, "pgfleet_replica_state", r->state == (enum replica_state)s,
					   "database", db->name, "replica", r->addr_str, "state",
					   replica_state_name((enum replica_state)s), NULL);
		}
	}
	family(b, "pgfleet_replica_lag_seconds", "gauge",
	       "Replay lag of a standby at its last check (0 for a primary).");
	list_for_each(dit, &fleet.databases) {
		db = DB_OF(dit);
		list_for_each(rit, &db->replicas) {
			r = REPLICA_OF(rit);
			sample_f(b, "pgfleet_replica_lag_seconds", r->lag_s, "database", db->name,
				 "replica", r->addr_str, NULL);
		}
	}
	family(b, "pgfleet_replica_eligible", "gauge",
	       "1 when the replica may take new transactions for its database's "
	       "target_session_attrs (health, role, lag).");
	double now = fleet_now();
	list_for_each(dit, &fleet.databases) {
		db = DB_OF(dit);
		list_for_each(rit, &db->replicas) {
			r = REPLICA_OF(rit);
			sample_u64(b, "pgfleet_replica_eligible", replica_eligible(r, now),
				   "database", db->name, "replica", r->addr_str, NULL);
		}
	}
}

static void put_dns_resolutions(const struct dns_host_info *h, void *arg)
{
	struct evbuffer *b = arg;
	sample_u64(b, "pgfleet_dns_resolutions_total", h->ok_count, "host", h->name, "result",
		   "success", NULL);
	sample_u64(b, "pgfleet_dns_resolutions_total", h->fail_count, "host", h->name, "result",
		   "failure", NULL);
}

static void put_dns_addresses(const struct dns_host_info *h, void *arg)
{
	sample_u64(arg, "pgfleet_dns_addresses", (uint64_t)h->n_addrs, "host", h->name, NULL);
}

static void put_process(struct evbuffer *b)
{
	family(b, "pgfleet_info", "gauge", "Build information.");
	sample_u64(b, "pgfleet_info", 1, "version", PGFLEET_VERSION, NULL);
	family(b, "pgfleet_uptime_seconds", "gauge", "Seconds since pgfleet started.");
	sample_f(b, "pgfleet_uptime_seconds", fleet_now() - fleet.started, NULL);
	family(b, "pgfleet_draining", "gauge", "1 while shutting down (no new clients).");
	sample_u64(b, "pgfleet_draining", fleet.shutting_down, NULL);
}

/* Socket calls batched into io_uring submissions (batch.c): operations per
 * submission is how many system calls batching saved, plus one. */
static void put_io_batches(struct evbuffer *b)
{
	struct batch_stats st;
	batch_get_stats(&st);
	family(b, "pgfleet_io_uring_enabled", "gauge",
	       "Event loops whose socket calls are batched through io_uring.");
	sample_u64(b, "pgfleet_io_uring_enabled", batch_enabled(), NULL);
	family(b, "pgfleet_io_uring_submissions_total", "counter",
	       "io_uring submissions of a loop pass's socket reads or writes.");
	sample_u64(b, "pgfleet_io_uring_submissions_total", st.recv_submits, "op", "recv", NULL);
	sample_u64(b, "pgfleet_io_uring_submissions_total", st.send_submits, "op", "send", NULL);
	family(b, "pgfleet_io_uring_operations_total", "counter",
	       "Socket reads or writes carried by those submissions.");
	sample_u64(b, "pgfleet_io_uring_operations_total", st.recv_ops, "op", "recv", NULL);
	sample_u64(b, "pgfleet_io_uring_operations_total", st.send_ops, "op", "send", NULL);
	family(b, "pgfleet_io_uring_short_sends_total", "counter",
	       "Deferred writes a socket did not take whole (the rest waits for it).");
	sample_u64(b, "pgfleet_io_uring_short_sends_total", st.short_sends, NULL);
}

static void metrics(struct evbuffer *b)
{
	/* A few kB per replica: one allocation up front, not one per chunk. */
	(void)evbuffer_expand(b, 16384);
	put_process(b);
	put_io_batches(b);
	put_clients(b);
	put_servers(b);
	put_counters(b);
	put_histograms(b);
	put_replicas(b);
	family(b, "pgfleet_dns_resolutions_total", "counter",
	       "DNS lookups of a database host, by result (a failure keeps the last answer).");
	discovery_foreach_host(put_dns_resolutions, b);
	family(b, "pgfleet_dns_addresses", "gauge", "Addresses in a host's last good DNS answer.");
	discovery_foreach_host(put_dns_addresses, b);
}

/* ---- /readyz ---------------------------------------------------------------------- */

static const struct database *find_database(const char *name)
{
	struct database *db;
	struct list *it;
	list_for_each(it, &fleet.databases) {
		db = DB_OF(it);
		if (strcmp(db->name, name) == 0)
			return db;
	}
	return NULL;
}

/*
 * Ready: listening, not draining, and every database named in [databases]
 * has a replica that may take its target role now (the router's own test).
 * A "*" entry names no database until a client does, and a name a client
 * made up must not make the pod unready, so it is not checked.
 */
static bool ready(char *why, size_t len)
{
	if (fleet.shutting_down) {
		snprintf(why, len, "draining");
		return false;
	}
	if (listener_count() == 0) {
		snprintf(why, len, "not listening");
		return false;
	}
	double now = fleet_now();
	for (size_t i = 0; i < fleet.cfg.n_dbs; i++) {
		const char *name = fleet.cfg.dbs[i].name;
		if (strcmp(name, "*") == 0)
			continue;
		const struct database *db = find_database(name);
		if (!db) {
			snprintf(why, len, "database \"%s\" is not set up", name);
			return false;
		}
		if (router_explain_db(db, now, why, (unsigned)len))
			return false;
	}
	snprintf(why, len, "ready");
	return true;
}


/* ---- requests ----------------------------------------------------------------------- */

static void reply(struct evhttp_request *req, int code, const char *reason, const char *type,
		  const char *body)
{
	struct evkeyvalq *h = evhttp_request_get_output_headers(req);
	evhttp_add_header(h, "Content-Type", type);
	evhttp_add_header(h, "Cache-Control", "no-store");
	if (body && evhttp_request_get_command(req) != EVHTTP_REQ_HEAD)
		evbuffer_add_printf(evhttp_request_get_output_buffer(req), "%s\n", body);
	evhttp_send_reply(req, code, reason, NULL);
}

/* ---- workers = N: one scrape out of every worker's --------------------------- */

/* Families whose samples describe one shared thing (a replica's health as
 * checked, the process, DNS): worker 0's samples stand.  The rest are counts
 * of what each worker holds and are summed, series by series. */
static bool take_one(const char *family_name)
{
	static const char *const names[] = {
		"pgfleet_replica_up",	    "pgfleet_replica_state",	  "pgfleet_replica_eligible",
		"pgfleet_replica_lag_seconds", "pgfleet_info",		  "pgfleet_uptime_seconds",
		"pgfleet_draining",	    "pgfleet_client_connections_limit",
		"pgfleet_dns_resolutions_total", "pgfleet_dns_addresses", NULL,
	};
	for (int i = 0; names[i]; i++)
		if (strcmp(family_name, names[i]) == 0)
			return true;
	return false;
}

struct msample {
	char *series; /* name{labels} */
	char *text;   /* the first value as written */
	double sum;
};

/* take_one families: which worker speaks for each object (a replica, a
 * host): the first one that has it. */
struct mowner {
	char *object; /* the series without its role and state labels */
	int part;
};

struct mfamily {
	char name[128];
	char *help, *type; /* whole lines */
	bool first_only;
	struct msample *samples;
	int n, cap;
	struct mowner *owners;
	int n_owners, cap_owners;
};

struct mset {
	struct mfamily *fams;
	int n, cap;
};

static struct mfamily *mfamily_get(struct mset *m, const char *name, size_t len, int part)
{
	for (int i = 0; i < m->n; i++)
		if (strlen(m->fams[i].name) == len && strncmp(m->fams[i].name, name, len) == 0)
			return &m->fams[i];
	if (m->n == m->cap) {
		m->cap = m->cap ? m->cap * 2 : 32;
		m->fams = realloc(m->fams, sizeof(*m->fams) * (size_t)m->cap);
		if (!m->fams)
			abort(); /* a scrape's few dozen families */
	}
	struct mfamily *f = &m->fams[m->n++];
	memset(f, 0, sizeof(*f));
	snprintf(f->name, sizeof(f->name), "%.*s", (int)(len < 127 ? len : 127), name);
	f->first_only = take_one(f->name);
	return f;
}

/* The series key without role="..." and state="..." (a replica whose role
 * two workers see differently is still one replica). */
static char *object_of(const char *series, size_t len)
{
	char *obj = strndup(series, len);
	if (!obj)
		abort();
	static const char *const drop[] = {"role=\"", "state=\"", NULL};
	for (int i = 0; drop[i]; i++) {
		char *p = strstr(obj, drop[i]);
		if (!p)
			continue;
		char *end = strchr(p + strlen(drop[i]), '"');
		if (!end)
			continue;
		end++;
		if (*end == ',')
			end++;
		memmove(p, end, strlen(end) + 1);
	}
	return obj;
}

/* For a take_one family: does this part speak for the sample's object? */
static bool owns(struct mfamily *f, const char *series, size_t len, int part)
{
	char *obj = object_of(series, len);
	for (int i = 0; i < f->n_owners; i++) {
		if (strcmp(f->owners[i].object, obj) == 0) {
			free(obj);
			return f->owners[i].part == part;
		}
	}
	if (f->n_owners == f->cap_owners) {
		f->cap_owners = f->cap_owners ? f->cap_owners * 2 : 16;
		f->owners = realloc(f->owners, sizeof(*f->owners) * (size_t)f->cap_owners);
		if (!f->owners)
			abort();
	}
	f->owners[f->n_owners].object = obj;
	f->owners[f->n_owners++].part = part;
	return true;
}

static void mfamily_add(struct mfamily *f, const char *line, size_t len, int part)
{
	const char *sp = memrchr(line, ' ', len);
	if (!sp)
		return;
	if (f->first_only && !owns(f, line, (size_t)(sp - line), part))
		return;
	size_t klen = (size_t)(sp - line);
	double v = strtod(sp + 1, NULL);
	for (int i = 0; i < f->n; i++) {
		if (strlen(f->samples[i].series) == klen &&
		    strncmp(f->samples[i].series, line, klen) == 0) {
			f->samples[i].sum += v;
			return;
		}
	}
	if (f->n == f->cap) {
		f->cap = f->cap ? f->cap * 2 : 16;
		f->samples = realloc(f->samples, sizeof(*f->samples) * (size_t)f->cap);
		if (!f->samples)
			abort();
	}
	struct msample *s = &f->samples[f->n++];
	s->series = strndup(line, klen);
	s->text = strndup(sp + 1, len - klen - 1);
	s->sum = v;
}

static void mset_add_part(struct mset *m, struct evbuffer *b, int part)
{
	size_t len = evbuffer_get_length(b);
	const char *text = (const char *)evbuffer_pullup(b, -1);
	const char *p = text, *end = text + len;
	struct mfamily *cur = NULL;
	while (p < end) {
		const char *nl = memchr(p, '\n', (size_t)(end - p));
		size_t n = nl ? (size_t)(nl - p) : (size_t)(end - p);
		if (n > 7 && (strncmp(p, "# HELP ", 7) == 0 || strncmp(p, "# TYPE ", 7) == 0)) {
			const char *name = p + 7, *sp = memchr(name, ' ', n - 7);
			size_t nlen = sp ? (size_t)(sp - name) : n - 7;
			cur = mfamily_get(m, name, nlen, part);
			char **slot = p[2] == 'H' ? &cur->help : &cur->type;
			if (!*slot)
				*slot = strndup(p, n);
		} else if (n && p[0] != '#') {
			if (!cur) {
				const char *br = strpbrk(p, "{ ");
				cur = mfamily_get(m, p, br && br < p + n ? (size_t)(br - p) : n, part);
			}
			mfamily_add(cur, p, n, part);
		}
		p += n + 1;
	}
}

static void mset_write(struct mset *m, struct evbuffer *out)
{
	for (int i = 0; i < m->n; i++) {
		struct mfamily *f = &m->fams[i];
		if (f->help)
			evbuffer_add_printf(out, "%s\n", f->help);
		if (f->type)
			evbuffer_add_printf(out, "%s\n", f->type);
		for (int j = 0; j < f->n; j++) {
			struct msample *s = &f->samples[j];
			if (f->first_only || strchr(s->text, 'N') || strchr(s->text, 'I'))
				evbuffer_add_printf(out, "%s %s\n", s->series, s->text);
			else
				evbuffer_add_printf(out, "%s %.15g\n", s->series, s->sum);
			free(s->series);
			free(s->text);
		}
		free(f->samples);
		for (int j = 0; j < f->n_owners; j++)
			free(f->owners[j].object);
		free(f->owners);
		free(f->help);
		free(f->type);
	}
	free(m->fams);
}

/* A scrape asked of every worker; worker 0 (HTTP's) answers it. */
struct scrape {
	struct evhttp_request *req;
	int pending;
	struct evbuffer *parts[WORKER_MAX];
};

/* The scraper hung up before the answer: the request is libevent's to free. */
static void scrape_conn_closed(struct evhttp_connection *conn, void *arg)
{
	struct scrape *sc = arg;
	sc->req = NULL;
}

static void scrape_reply(void *arg)
{
	struct scrape *sc = arg;
	if (--sc->pending > 0)
		return;
	if (sc->req) {
		evhttp_connection_set_closecb(evhttp_request_get_connection(sc->req), NULL, NULL);
		struct mset m = {0};
		for (int i = 0; i < worker_count(); i++)
			if (sc->parts[i])
				mset_add_part(&m, sc->parts[i], i);
		mset_write(&m, evhttp_request_get_output_buffer(sc->req));
		reply(sc->req, HTTP_OK, "OK", CONTENT_TYPE_METRICS, NULL);
	}
	for (int i = 0; i < worker_count(); i++)
		if (sc->parts[i])
			evbuffer_free(sc->parts[i]);
	free(sc);
}

/* On each worker: its own samples, for worker 0 to merge. */
static void scrape_run(void *arg)
{
	struct scrape *sc = arg;
	struct evbuffer *b = evbuffer_new();
	if (b)
		metrics(b);
	sc->parts[worker_index()] = b;
	if (!worker_post(0, WMSG_CALL, 0, 0, scrape_reply, sc))
		log_error("scrape lost: cannot reach worker 0", NULL);
}

static bool scrape_start(struct evhttp_request *req)
{
	struct scrape *sc = calloc(1, sizeof(*sc));
	if (!sc)
		return false;
	sc->req = req;
	sc->pending = worker_count();
	evhttp_connection_set_closecb(evhttp_request_get_connection(req), scrape_conn_closed, sc);
	for (int i = 0; i < worker_count(); i++)
		if (!worker_post(i, WMSG_CALL, 0, 0, scrape_run, sc))
			sc->pending--;
	if (sc->pending == 0) {
		evhttp_connection_set_closecb(evhttp_request_get_connection(req), NULL, NULL);
		free(sc);
		return false;
	}
	return true;
}

static void on_request(struct evhttp_request *req, void *arg)
{
	enum evhttp_cmd_type cmd = evhttp_request_get_command(req);
	const struct evhttp_uri *uri = evhttp_request_get_evhttp_uri(req);
	const char *path = uri ? evhttp_uri_get_path(uri) : NULL;
	if (!path || !*path)
		path = "/";

	bool metrics_path = strcmp(path, "/metrics") == 0;
	bool healthz = strcmp(path, "/healthz") == 0, readyz = strcmp(path, "/readyz") == 0;
	if (!metrics_path && !healthz && !readyz) {
		reply(req, HTTP_NOTFOUND, "Not Found", CONTENT_TYPE_TEXT, "not found");
		return;
	}
	if (cmd != EVHTTP_REQ_GET && cmd != EVHTTP_REQ_HEAD) {
		evhttp_add_header(evhttp_request_get_output_headers(req), "Allow", "GET, HEAD");
		reply(req, 405, "Method Not Allowed", CONTENT_TYPE_TEXT, "method not allowed");
		return;
	}
	if (healthz) {
		/* Answering at all is the proof: this runs on the loop that serves clients. */
		reply(req, HTTP_OK, "OK", CONTENT_TYPE_TEXT, "ok");
		return;
	}
	if (readyz) {
		char why[512];
		bool ok = ready(why, sizeof(why));
		for (char *p = why; *p; p++)
			if (*p == '\n' || *p == '\r')
				*p = ' '; /* one line, whatever a server's error said */
		reply(req, ok ? HTTP_OK : 503, ok ? "OK" : "Service Unavailable", CONTENT_TYPE_TEXT,
		      why);
		return;
	}
	if (cmd == EVHTTP_REQ_GET && worker_threaded() && scrape_start(req))
		return; /* answered once every worker has sent its samples */
	if (cmd == EVHTTP_REQ_GET)
		metrics(evhttp_request_get_output_buffer(req));
	reply(req, HTTP_OK, "OK", CONTENT_TYPE_METRICS, NULL);
}

/* http_listen is "host:port" (checked by config.c); the host may be empty,
 * "*" or a [v6] literal. */
static bool parse_listen(const char *spec, char *host, size_t hlen, ev_uint16_t *port)
{
	const char *colon = strrchr(spec, ':');
	if (!colon)
		return false;
	long p = strtol(colon + 1, NULL, 10);
	if (p <= 0 || p > 65535)
		return false;
	*port = (ev_uint16_t)p;
	const char *h = spec;
	size_t n = (size_t)(colon - spec);
	if (n >= 2 && h[0] == '[' && h[n - 1] == ']') {
		h++;
		n -= 2;
	}
	if (n == 0 || (n == 1 && h[0] == '*')) {
		h = "0.0.0.0";
		n = 7;
	}
	if (n >= hlen)
		return false;
	memcpy(host, h, n);
	host[n] = 0;
	return true;
}

static void http_on_resume(evutil_socket_t fd, short what, void *arg)
{
	if (http_listener)
		evconnlistener_enable(http_listener);
}

/*
 * accept() failed on the HTTP port for a reason other than the connection
 * itself (libevent has already skipped those): out of descriptors, most
 * likely.  libevent would log and try again on the next readiness, which
 * comes at once: the loop would spin.  Instead the port rests for a quarter
 * of a second (a probe retries; pgfleet's clients are not starved), and
 * that is logged once a second at most.
 */
static void http_on_accept_error(struct evconnlistener *l, void *arg)
{
	int err = EVUTIL_SOCKET_ERROR();
	evconnlistener_disable(l);
	if (!http_resume_ev)
		http_resume_ev = evtimer_new(fleet.base, http_on_resume, NULL);
	struct timeval tv = {0, 250000};
	if (!http_resume_ev || evtimer_add(http_resume_ev, &tv) < 0)
		evconnlistener_enable(l); /* no timer: better busy than deaf */
	double now = fleet_now();
	if (http_last_log == 0 || now - http_last_log >= 1.0) {
		log_warn("http accept failed: paused", "error", strerror(err), NULL);
		http_last_log = now;
	}
}

bool http_start(void)
{
	const char *spec = fleet.cfg.http_listen;
	if (!*spec)
		return true;
	char host[256];
	ev_uint16_t port;
	if (!parse_listen(spec, host, sizeof(host), &port)) {
		log_error("cannot listen", "http_listen", spec, "error", "expected host:port", NULL);
		return false;
	}
	http = evhttp_new(fleet.base);
	if (!http)
		return false;
	/* Every method reaches on_request, which answers 405 (evhttp itself
	 * would say 501 for the ones it is not told to allow). */
	evhttp_set_allowed_methods(http, EVHTTP_REQ_GET | EVHTTP_REQ_POST | EVHTTP_REQ_HEAD |
						 EVHTTP_REQ_PUT | EVHTTP_REQ_DELETE |
						 EVHTTP_REQ_OPTIONS | EVHTTP_REQ_TRACE |
						 EVHTTP_REQ_CONNECT | EVHTTP_REQ_PATCH);
	evhttp_set_timeout(http, 10); /* a scraper that stalls is dropped */
	evhttp_set_max_headers_size(http, 16384);
	evhttp_set_max_body_size(http, 4096);
	evhttp_set_gencb(http, on_request, NULL);
	/* Resolving the host happens once, before the loop runs. */
	errno = 0;
	struct evhttp_bound_socket *bound = evhttp_bind_socket_with_handle(http, host, port);
	if (!bound) {
		log_error("cannot listen", "http_listen", spec, "error",
			  errno ? strerror(errno) : "bind failed", NULL);
		evhttp_free(http);
		http = NULL;
		return false;
	}
	http_listener = evhttp_bound_socket_get_listener(bound);
	evconnlistener_set_error_cb(http_listener, http_on_accept_error);
	log_info("http listening", "addr", spec, NULL);
	return true;
}

void http_stop(void)
{
	if (http_resume_ev)
		event_free(http_resume_ev);
	http_resume_ev = NULL;
	http_listener = NULL;
	if (http)
		evhttp_free(http);
	http = NULL;
}
