/*
 * http.c: the HTTP endpoint on http_listen, served by libevent's evhttp on
 * the main loop: GET /metrics (Prometheus text exposition format 0.0.4),
 * GET /healthz (the loop answers) and GET /readyz (listening and not
 * draining; ?database=NAME[&role=primary|standby] for one database).
 *
 * /metrics renders a typed snapshot (metrics.h: the model's families from
 * stats.c, DNS from discovery), merged across workers when workers = N.
 * Must not: change the state it reads, block, or show a password or query
 * text.
 */
#include "http.h"

#include <errno.h>
#include <event2/buffer.h>
#include <event2/http.h>
#include <sys/queue.h>
#include <event2/keyvalq_struct.h>
#include <event2/listener.h>
#include <inttypes.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "database.h"
#include "discovery.h"
#include "listener.h"
#include "log.h"
#include "mailbox.h"
#include "metrics.h"
#include "peers.h"
#include "router.h"
#include "runtime.h"
#include "stats.h"

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

static void put_family(struct evbuffer *b, const char *name, const char *type, const char *help)
{
	evbuffer_add_printf(b, "# HELP %s %s\n# TYPE %s %s\n", name, help, name, type);
}

/* `name<suffix>{k="v",...}`: the labels are the family's label columns of
 * the row, then `le` when given (a histogram bucket). */
static void put_series(struct evbuffer *b, const char *name, const char *suffix, enum metric_id f,
		       const struct table *t, size_t row, const char *le)
{
	evbuffer_add_printf(b, "%s%s", name, suffix);
	int n = metric_nlabels(f);
	if (n == 0 && !le)
		return;
	for (int i = 0; i < n; i++) {
		const struct table_cell *x = table_at(t, row, 1 + i);
		evbuffer_add_printf(b, "%s%s=\"", i ? "," : "{", metric_label(f, i));
		put_label_value(b, x->null ? "" : x->v.s);
		evbuffer_add(b, "\"", 1);
	}
	if (le)
		evbuffer_add_printf(b, "%sle=\"%s\"", n ? "," : "{", le);
	evbuffer_add(b, "}", 1);
}

static void put_u64(struct evbuffer *b, uint64_t v)
{
	evbuffer_add_printf(b, " %" PRIu64 "\n", v);
}

static void put_real(struct evbuffer *b, double v)
{
	if (isnan(v))
		evbuffer_add(b, " NaN\n", 5);
	else if (isinf(v))
		evbuffer_add_printf(b, " %cInf\n", v > 0 ? '+' : '-');
	else
		evbuffer_add_printf(b, " %.15g\n", v);
}

static uint64_t cell_u64(const struct table *t, size_t row, int col)
{
	const struct table_cell *x = table_at(t, row, col);
	return x->null || x->v.i < 0 ? 0 : (uint64_t)x->v.i;
}

static double cell_real(const struct table *t, size_t row, int col)
{
	const struct table_cell *x = table_at(t, row, col);
	return x->null ? 0 : x->v.d;
}

/* _bucket (cumulative, le="+Inf" last), _sum and _count of each series. */
static void put_histograms(struct evbuffer *b, enum metric_id f, const struct table *t)
{
	const char *name = metric_families[f].name;
	int col = metric_value_col(f);
	char le[32];
	for (size_t r = 0; r < t->nrows; r++) {
		uint64_t cum = 0;
		for (int i = 0; i <= STATS_BUCKETS; i++) {
			cum += cell_u64(t, r, col + i);
			if (i < STATS_BUCKETS)
				snprintf(le, sizeof(le), "%g", stats_bucket_le[i]);
			else
				snprintf(le, sizeof(le), "+Inf");
			put_series(b, name, "_bucket", f, t, r, le);
			put_u64(b, cum);
		}
		put_series(b, name, "_sum", f, t, r, NULL);
		put_real(b, cell_real(t, r, col + STATS_BUCKETS + 1));
		/* The +Inf bucket by definition. */
		put_series(b, name, "_count", f, t, r, NULL);
		put_u64(b, cum);
	}
}

/* The per-replica counters: a family per exported STATS_COUNTERS field,
 * its value the field times its scale (microseconds to seconds). */
static void put_stats_families(struct evbuffer *b, enum metric_id f, const struct table *t)
{
	int col = metric_value_col(f);
	for (int k = 0; k < STATS_NFIELDS; k++) {
		const struct stats_field_info *fi = &stats_fields[k];
		if (!fi->family)
			continue;
		put_family(b, fi->family, "counter", fi->help);
		for (size_t r = 0; r < t->nrows; r++) {
			put_series(b, fi->family, "", f, t, r, NULL);
			uint64_t v = cell_u64(t, r, col + k);
			if (fi->scale == 1)
				put_u64(b, v);
			else
				put_real(b, (double)v * fi->scale);
		}
	}
}

/* The exposition of (merged) metrics, families in METRIC_FAMILIES order. */
static void put_metrics(struct evbuffer *b, const struct metrics *m)
{
	static const char *const type_names[] = {
		[METRIC_COUNTER] = "counter",
		[METRIC_GAUGE] = "gauge",
		[METRIC_HISTOGRAM] = "histogram",
	};
	/* A few kB per replica: one allocation up front, not one per chunk. */
	(void)evbuffer_expand(b, 16384);
	for (int f = 0; f < MF_COUNT; f++) {
		const struct metric_family *fam = &metric_families[f];
		const struct table *t = &m->fam[f];
		if (fam->type == METRIC_STATS) {
			put_stats_families(b, (enum metric_id)f, t);
			continue;
		}
		put_family(b, fam->name, type_names[fam->type], fam->help);
		if (fam->type == METRIC_HISTOGRAM) {
			put_histograms(b, (enum metric_id)f, t);
			continue;
		}
		int col = metric_value_col((enum metric_id)f);
		for (size_t r = 0; r < t->nrows; r++) {
			put_series(b, fam->name, "", (enum metric_id)f, t, r, NULL);
			if (fam->value == TABLE_REAL)
				put_real(b, cell_real(t, r, col));
			else
				put_u64(b, cell_u64(t, r, col));
		}
	}
}

/* ---- /metrics ------------------------------------------------------------------ */

#define DB_OF(it) container_of(it, struct database, node)

static void add_dns_resolutions(const struct dns_host_info *h, void *arg)
{
	metrics_add_int(arg, MF_DNS_RESOLUTIONS, (int64_t)h->ok_count, h->name, "success", NULL);
	metrics_add_int(arg, MF_DNS_RESOLUTIONS, (int64_t)h->fail_count, h->name, "failure", NULL);
}

static void add_dns_addresses(const struct dns_host_info *h, void *arg)
{
	metrics_add_int(arg, MF_DNS_ADDRESSES, (int64_t)h->n_addrs, h->name, NULL);
}

static void add_peer(const struct peer_info *p, void *arg)
{
	metrics_add_int(arg, MF_PEER_UP, p->live ? 1 : 0, p->addr, p->self ? "yes" : "no", NULL);
	metrics_add_int(arg, MF_PEER_CANCELS, (int64_t)p->cancels_forwarded, p->addr, "sent", NULL);
	metrics_add_int(arg, MF_PEER_CANCELS, (int64_t)p->cancels_received, p->addr, "received",
			NULL);
}

/* This loop's metrics: the model's (stats.c), DNS, which discovery
 * (a layer above the model) owns, and the fleet's peers (peers.c). */
static void metrics_snapshot(struct metrics *m)
{
	metrics_init(m);
	stats_collect_metrics(m);
	discovery_foreach_host(add_dns_resolutions, m);
	discovery_foreach_host(add_dns_addresses, m);
	int live, rank;
	fleet_peers(&live, &rank);
	metrics_add_int(m, MF_PEERS, live, NULL);
	peers_foreach(add_peer, m);
	if (peers_enabled())
		metrics_add_int(m, MF_PEER_REFUSED, (int64_t)peers_refused_count(), NULL);
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
 * Ready: listening and not draining.  Nothing about the databases: a
 * database without a primary (or with every replica down) still serves
 * whatever it can (reads on its standbys), and a readiness probe that
 * failed then would take every pgfleet pod out of the Service at once,
 * for every database.  One database's state is asked for by name.
 */
static int ready_process(char *why, size_t len)
{
	if (fleet.shutting_down) {
		snprintf(why, len, "draining");
		return 503;
	}
	if (listener_count() == 0) {
		snprintf(why, len, "not listening");
		return 503;
	}
	snprintf(why, len, "ready");
	return HTTP_OK;
}

/* Counts of db's replicas by state, "3 known: 1 up, 2 down" style, for
 * the per-role answers. */
static void role_summary(const struct database *db, char *buf, size_t len)
{
	int total = 0, up = 0, primaries = 0, standbys = 0, lagging = 0;
	struct list *it;
	list_for_each(it, &db->replicas) {
		const struct replica *r = container_of(it, struct replica, node);
		total++;
		if (r->state != REPLICA_UP)
			continue;
		up++;
		primaries += r->role == ROLE_PRIMARY;
		standbys += r->role == ROLE_STANDBY;
		lagging += r->role == ROLE_STANDBY && !replica_lag_ok(r);
	}
	snprintf(buf, len, "%d known: %d up, %d primary, %d standby, %d lagging", total, up,
		 primaries, standbys, lagging);
}

/*
 * /readyz?database=NAME[&role=primary|standby]: ready when some replica of
 * NAME can take its target's transactions now (the router's own test), or
 * for role=primary when its write primary is up, for role=standby when an
 * up standby is within max_replica_lag.  404 for a database pgfleet does
 * not know, 400 for a parameter it does not know.
 */
static int ready_database(const char *query, char *why, size_t len)
{
	struct evkeyvalq params;
	TAILQ_INIT(&params);
	if (evhttp_parse_query_str(query, &params) != 0) {
		snprintf(why, len, "bad query string");
		return 400;
	}
	const char *name = NULL, *role = NULL;
	int code = 0;
	struct evkeyval *kv;
	TAILQ_FOREACH(kv, &params, next) {
		if (strcmp(kv->key, "database") == 0 && !name) {
			name = kv->value;
		} else if (strcmp(kv->key, "role") == 0 && !role) {
			role = kv->value;
		} else {
			snprintf(why, len, "unknown parameter \"%.64s\" (database, role)", kv->key);
			code = 400;
			break;
		}
	}
	if (!code && !name) {
		snprintf(why, len, "role needs database=NAME");
		code = 400;
	}
	if (!code && role && strcmp(role, "primary") != 0 && strcmp(role, "standby") != 0) {
		snprintf(why, len, "role must be primary or standby, not \"%.64s\"", role);
		code = 400;
	}
	if (!code)
		code = ready_process(why, len);
	const struct database *db = code == HTTP_OK ? find_database(name) : NULL;
	if (code == HTTP_OK && !db) {
		const struct db_config *cfg = config_find_db(&fleet.cfg, name);
		if (cfg && strcmp(cfg->name, "*") != 0) {
			snprintf(why, len, "database \"%.64s\" is not set up", name);
			code = 503;
		} else {
			snprintf(why, len, "unknown database \"%.64s\"", name);
			code = 404;
		}
	}
	if (code == HTTP_OK) {
		double now = fleet_now();
		char summary[96];
		const struct replica *found = NULL;
		struct list *it;
		if (!role) {
			if (router_explain_db(db, now, why, (unsigned)len))
				code = 503;
			else
				snprintf(why, len, "ready");
		} else {
			bool want_primary = strcmp(role, "primary") == 0;
			list_for_each(it, &db->replicas) {
				const struct replica *r = container_of(it, struct replica, node);
				if (r->state != REPLICA_UP)
					continue;
				if (want_primary ? r->role == ROLE_PRIMARY && replica_is_write_primary(r)
						 : r->role == ROLE_STANDBY && replica_lag_ok(r)) {
					found = r;
					break;
				}
			}
			role_summary(db, summary, sizeof(summary));
			if (found) {
				snprintf(why, len, "ready: %s %s is up", role, found->addr_str);
			} else {
				snprintf(why, len, "no %s of database \"%s\" is up%s (%s)", role,
					 db->name, want_primary ? "" : " within max_replica_lag",
					 summary);
				code = 503;
			}
		}
	}
	evhttp_clear_headers(&params);
	return code;
}

static int ready(const char *query, char *why, size_t len)
{
	if (query && *query)
		return ready_database(query, why, len);
	return ready_process(why, len);
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

/* Answers a scrape from m; a snapshot that lost series to an allocation
 * failure is not shown as if it were whole. */
static void reply_metrics(struct evhttp_request *req, const struct metrics *m)
{
	if (metrics_incomplete(m)) {
		reply(req, HTTP_INTERNAL, "Internal Server Error", CONTENT_TYPE_TEXT,
		      "out of memory");
		return;
	}
	if (evhttp_request_get_command(req) == EVHTTP_REQ_GET)
		put_metrics(evhttp_request_get_output_buffer(req), m);
	reply(req, HTTP_OK, "OK", CONTENT_TYPE_METRICS, NULL);
}

/* ---- workers = N: one scrape out of every worker's --------------------------- */

/* A scrape asked of every worker; worker 0 (HTTP's) answers it.  Each
 * worker hands over its snapshot; the families' merge rules (metrics.h)
 * combine them, in worker order, and the result is rendered once. */
struct scrape {
	struct evhttp_request *req;
	int pending;
	struct metrics *parts[WORKER_MAX];
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
	struct metrics *all = NULL;
	for (int i = 0; i < worker_count(); i++) {
		if (!sc->parts[i])
			continue;
		if (!all)
			all = sc->parts[i];
		else
			metrics_merge(all, sc->parts[i]);
	}
	if (sc->req) {
		evhttp_connection_set_closecb(evhttp_request_get_connection(sc->req), NULL, NULL);
		if (all)
			reply_metrics(sc->req, all);
		else
			reply(sc->req, HTTP_INTERNAL, "Internal Server Error", CONTENT_TYPE_TEXT,
			      "out of memory");
	}
	for (int i = 0; i < worker_count(); i++) {
		if (sc->parts[i]) {
			metrics_free(sc->parts[i]);
			free(sc->parts[i]);
		}
	}
	free(sc);
}

/* On each worker: its own snapshot, for worker 0 to merge. */
static void scrape_run(void *arg)
{
	struct scrape *sc = arg;
	struct metrics *m = malloc(sizeof(*m));
	if (m)
		metrics_snapshot(m);
	sc->parts[worker_index()] = m;
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
		int code = ready(evhttp_uri_get_query(uri), why, sizeof(why));
		for (char *p = why; *p; p++)
			if (*p == '\n' || *p == '\r')
				*p = ' '; /* one line, whatever a server's error said */
		reply(req, code, code == HTTP_OK	? "OK"
				 : code == 404	? "Not Found"
				 : code == 400	? "Bad Request"
						: "Service Unavailable",
		      CONTENT_TYPE_TEXT, why);
		return;
	}
	if (cmd == EVHTTP_REQ_HEAD) {
		reply(req, HTTP_OK, "OK", CONTENT_TYPE_METRICS, NULL);
		return;
	}
	if (worker_threaded() && scrape_start(req))
		return; /* answered once every worker has sent its snapshot */
	struct metrics m;
	metrics_snapshot(&m);
	reply_metrics(req, &m);
	metrics_free(&m);
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
