/*
 * admin.c: the admin console, PgBouncer's (`psql -U admin pgfleet`).
 *
 * A client that names the database `pgfleet` or `pgbouncer` logs in like any
 * other, then is admitted only if admin_users (everything) or stats_users
 * (SHOW only) lists it.  It speaks the simple query protocol; every command
 * is answered whole into the client's output queue, PgBouncer's columns in
 * PgBouncer's order, then ReadyForQuery.  Anything else gets an
 * ErrorResponse and the session goes on.
 *
 * Must not: reach into sockets other than its own client's (it asks
 * server.c, pool.c, database.c, reload.c), block, or show a secret.
 */
#include "admin.h"

#include <arpa/inet.h>
#include <ctype.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <time.h>

#include "client.h"
#include "config.h"
#include "database.h"
#include "discovery.h"
#include "log.h"
#include "pool.h"
#include "proto.h"
#include "runtime.h"
#include "server.h"
#include "stats.h"
#include "tls.h"
#include "version.h"
#include "admin_merge.h"
#include "mailbox.h"

#define ADMIN_MAX_QUERY 8192 /* bytes of one admin command */

/* A command that answers once connections are gone. */
enum admin_wait {
	WAIT_NONE,
	WAIT_PAUSE, /* PAUSE: until no server connection is busy */
	WAIT_CLOSE, /* WAIT_CLOSE: until the connections marked to close are gone */
	WAIT_WORKERS, /* workers = N: until every worker has answered */
};

/*
 * workers = N: a command runs on every worker, each on a shadow session in
 * its own thread writing its answer into out[its index]; the asking worker
 * merges them once all have answered.  Only the asking worker touches c and
 * pending; out[i] is written by worker i before it posts its reply (the
 * mailbox's lock orders the two).
 */
struct fanout {
	int origin;
	struct client *c; /* NULL once the client has left */
	int pending;
	bool full;
	enum admin_merge_kind kind;
	int nkeys;
	char user[NAME_MAX_LEN];
	char cmd[ADMIN_MAX_QUERY];
	struct wbuf out[WORKER_MAX];
};

struct admin_session {
	bool full;         /* admin_users: everything; stats_users: SHOW only */
	bool skip_to_sync; /* extended protocol refused: drop messages up to Sync */
	enum admin_wait wait;
	char wait_db[NAME_MAX_LEN]; /* "" = every database */
	struct fanout *fan; /* WAIT_WORKERS, or a shadow's request */
	bool shadow;        /* runs a command for another worker's client */
};

/* Admin clients are CLIENT_ACTIVE on this group's list; it has no database
 * and no pools, so pooling code never sees them. */
static THREAD_LOCAL struct pool_group console;
static THREAD_LOCAL struct event *ev_wait; /* polls the pending PAUSE / WAIT_CLOSE */
static THREAD_LOCAL struct list shadows;      /* waiting shadow sessions (client->node) */

static void console_init(void)
{
	if (console.active.head.next)
		return;
	statlist_init(&console.waiting);
	statlist_init(&console.active);
	list_init(&console.pools);
	list_init(&console.node);
	snprintf(console.user, sizeof(console.user), "pgfleet");
}

bool admin_is_console(const char *dbname)
{
	return strcmp(dbname, "pgfleet") == 0 || strcmp(dbname, "pgbouncer") == 0;
}

bool admin_login_start(struct client *c)
{
	c->admin = calloc(1, sizeof(*c->admin));
	if (!c->admin) {
		client_close(c, "53200", "out of memory");
		return false;
	}
	return true;
}

void admin_login_done(struct client *c)
{
	bool full = config_list_has(fleet.cfg.admin_users, c->user);
	if (!full && !config_list_has(fleet.cfg.stats_users, c->user)) {
		client_close(c, "28000",
			     "user \"%s\" may not use the admin console (not in admin_users or "
			     "stats_users)",
			     c->user);
		return;
	}
	console_init();
	c->admin->full = full;
	c->group = &console;
	struct wbuf *out = &c->io.out;
	const char *enc = param_get(c->params, "client_encoding");
	const char *app = param_get(c->params, "application_name");
	proto_parameter_status(out, "server_version", PGFLEET_VERSION "/pgfleet");
	proto_parameter_status(out, "server_encoding", "UTF8");
	proto_parameter_status(out, "client_encoding", enc && *enc ? enc : "UTF8");
	proto_parameter_status(out, "DateStyle", "ISO, MDY");
	proto_parameter_status(out, "TimeZone", "UTC");
	proto_parameter_status(out, "integer_datetimes", "on");
	proto_parameter_status(out, "standard_conforming_strings", "on");
	proto_parameter_status(out, "application_name", app ? app : "");
	uint32_t key[2];
	fleet_random(key, sizeof(key));
	proto_backend_key(out, key[0] & 0x7fffffff, key[1]);
	proto_ready(out, 'I');
	client_set_state(c, CLIENT_ACTIVE);
	log_info("admin login", "client", c->addr_str, "user", c->user, "access",
		 full ? "admin" : "stats", NULL);
}

void admin_client_gone(struct client *c)
{
	if (c->admin->fan)
		c->admin->fan->c = NULL; /* its answers are dropped when they come */
	free(c->admin);
	c->admin = NULL;
}

static void shadow_done(struct client *sh);
static void command_complete(struct wbuf *w, const char *tag);

void admin_close_all(void)
{
	struct list *it, *tmp;
	if (console.active.head.next) {
		list_for_each_safe(it, tmp, &console.active.head) {
			client_close(container_of(it, struct client, node), "57P01",
				     FLEET_SHUTDOWN_MESSAGE);
		}
	}
	/* Commands other workers wait on (PAUSE, WAIT_CLOSE) answer now. */
	if (shadows.next) {
		list_for_each_safe(it, tmp, &shadows) {
			struct client *sh = container_of(it, struct client, node);
			command_complete(&sh->io.out,
					 sh->admin->wait == WAIT_PAUSE ? "PAUSE" : "WAIT_CLOSE");
			list_del(&sh->node);
			shadow_done(sh);
		}
	}
	if (ev_wait) {
		event_free(ev_wait);
		ev_wait = NULL;
	}
}

/* ---- building results ------------------------------------------------------ */

/* Column types as PgBouncer sends them: text, int4, int8, numeric. */
enum coltype { T_TEXT = 25, T_INT4 = 23, T_INT8 = 20, T_NUMERIC = 1700 };

struct col {
	const char *name;
	enum coltype type;
};

#define NCOLS(a) ((int)(sizeof(a) / sizeof((a)[0])))

static void row_description(struct wbuf *w, const struct col *cols, int n)
{
	uint32_t m = proto_begin(w, 'T');
	proto_put_u16(w, (uint16_t)n);
	for (int i = 0; i < n; i++) {
		proto_put_str(w, cols[i].name);
		proto_put_u32(w, 0); /* table */
		proto_put_u16(w, 0); /* column */
		proto_put_u32(w, (uint32_t)cols[i].type);
		int16_t size = cols[i].type == T_INT4 ? 4 : cols[i].type == T_INT8 ? 8 : -1;
		proto_put_u16(w, (uint16_t)size);
		proto_put_u32(w, 0xffffffffu); /* typmod -1 */
		proto_put_u16(w, 0);           /* text format */
	}
	proto_end(w, m);
}

static uint32_t row_begin(struct wbuf *w, int n)
{
	uint32_t m = proto_begin(w, 'D');
	proto_put_u16(w, (uint16_t)n);
	return m;
}

static void put_text(struct wbuf *w, const char *s)
{
	if (!s) {
		proto_put_u32(w, 0xffffffffu); /* NULL */
		return;
	}
	uint32_t n = (uint32_t)strlen(s);
	proto_put_u32(w, n);
	proto_put_bytes(w, s, n);
}

static void put_fmt(struct wbuf *w, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

static void put_fmt(struct wbuf *w, const char *fmt, ...)
{
	char buf[256];
	va_list ap;
	va_start(ap, fmt);
	int n = vsnprintf(buf, sizeof(buf), fmt, ap);
	va_end(ap);
	if (n < 0)
		n = 0;
	if ((size_t)n >= sizeof(buf))
		n = sizeof(buf) - 1;
	proto_put_u32(w, (uint32_t)n);
	proto_put_bytes(w, buf, (uint32_t)n);
}

static void put_int(struct wbuf *w, long long v)
{
	put_fmt(w, "%lld", v);
}

static void put_u64(struct wbuf *w, uint64_t v)
{
	put_fmt(w, "%llu", (unsigned long long)v);
}

static void command_complete(struct wbuf *w, const char *tag)
{
	uint32_t m = proto_begin(w, 'C');
	proto_put_str(w, tag);
	proto_end(w, m);
}

static void admin_error(struct client *c, const char *sqlstate, const char *fmt, ...)
	__attribute__((format(printf, 3, 4)));

static void admin_error(struct client *c, const char *sqlstate, const char *fmt, ...)
{
	char msg[512];
	va_list ap;
	va_start(ap, fmt);
	vsnprintf(msg, sizeof(msg), fmt, ap);
	va_end(ap);
	proto_error(&c->io.out, "ERROR", sqlstate, msg);
}

/* "2026-11-23 10:00:00 UTC" for a monotonic time (fleet_now()). */
static void fmt_time(double mono, char *buf, size_t len)
{
	if (mono <= 0) {
		snprintf(buf, len, "%s", "");
		return;
	}
	time_t t = (time_t)(fleet_wallclock() - (fleet_now() - mono));
	struct tm tm;
	gmtime_r(&t, &tm);
	strftime(buf, len, "%Y-%m-%d %H:%M:%S UTC", &tm);
}

/* Address without port, and the port; a Unix socket is "unix". */
static int split_addr(const void *sa, char *buf, size_t len)
{
	const struct sockaddr *s = sa; /* only the family's own bytes are read */
	if (s->sa_family == AF_INET) {
		const struct sockaddr_in *in4 = sa;
		inet_ntop(AF_INET, &in4->sin_addr, buf, (socklen_t)len);
		return ntohs(in4->sin_port);
	}
	if (s->sa_family == AF_INET6) {
		const struct sockaddr_in6 *in6 = sa;
		inet_ntop(AF_INET6, &in6->sin6_addr, buf, (socklen_t)len);
		return ntohs(in6->sin6_port);
	}
	snprintf(buf, len, "unix");
	return (int)fleet.cfg.listen_port;
}

static int local_addr(int fd, char *buf, size_t len)
{
	struct sockaddr_storage ss;
	socklen_t sl = sizeof(ss);
	memset(&ss, 0, sizeof(ss));
	if (fd < 0 || getsockname(fd, (struct sockaddr *)&ss, &sl) != 0) {
		snprintf(buf, len, "%s", "");
		return 0;
	}
	return split_addr(&ss, buf, len);
}

/* ---- SHOW ------------------------------------------------------------------ */

static const char *server_login_user(const struct pool *p)
{
	const struct db_config *dbc = p->group->db->cfg;
	return dbc && dbc->user ? dbc->user : p->group->user;
}

/* Calls fn for every logged-in client: pooled ones database by database,
 * then the console's own. */
static void foreach_client(void (*fn)(struct client *c, const char *state, void *arg), void *arg,
			   bool with_login)
{
	struct list *dit, *git, *it;
	if (with_login) {
		list_for_each(it, &fleet.login_clients.head) {
			fn(container_of(it, struct client, node), "login", arg);
		}
	}
	list_for_each(dit, &fleet.databases) {
		struct database *db = container_of(dit, struct database, node);
		list_for_each(git, &db->groups) {
			struct pool_group *g = container_of(git, struct pool_group, node);
			list_for_each(it, &g->active.head) {
				fn(container_of(it, struct client, node), "active", arg);
			}
			list_for_each(it, &g->waiting.head) {
				fn(container_of(it, struct client, node), "waiting", arg);
			}
		}
	}
	if (console.active.head.next) {
		list_for_each(it, &console.active.head) {
			fn(container_of(it, struct client, node), "active", arg);
		}
	}
}

static void foreach_server(void (*fn)(struct server *s, const char *state, void *arg), void *arg)
{
	struct list *dit, *rit, *pit, *it;
	list_for_each(dit, &fleet.databases) {
		struct database *db = container_of(dit, struct database, node);
		list_for_each(rit, &db->replicas) {
			struct replica *r = container_of(rit, struct replica, node);
			list_for_each(pit, &r->pools) {
				struct pool *p = container_of(pit, struct pool, replica_node);
				list_for_each(it, &p->active.head) {
					fn(container_of(it, struct server, node), "active", arg);
				}
				list_for_each(it, &p->idle.head) {
					fn(container_of(it, struct server, node), "idle", arg);
				}
				list_for_each(it, &p->login.head) {
					fn(container_of(it, struct server, node), "new", arg);
				}
			}
		}
	}
}

/* The columns SHOW CLIENTS, SHOW SERVERS and SHOW SOCKETS share. */
static const struct col socket_cols[] = {
	{"type", T_TEXT},	  {"user", T_TEXT},	     {"database", T_TEXT},
	{"state", T_TEXT},	  {"addr", T_TEXT},	     {"port", T_INT4},
	{"local_addr", T_TEXT},	  {"local_port", T_INT4},    {"connect_time", T_TEXT},
	{"request_time", T_TEXT}, {"wait", T_INT4},	     {"wait_us", T_INT4},
	{"close_needed", T_INT4}, {"ptr", T_TEXT},	     {"link", T_TEXT},
	{"remote_pid", T_INT4},	  {"tls", T_TEXT},	     {"application_name", T_TEXT},
};
#define SOCKET_COLS_CLIENTS 18 /* PgBouncer 1.18's SHOW CLIENTS */
#define SOCKET_COLS_SERVERS 17 /* SPEC: through tls, then pgfleet's own */

static const struct col server_extra_cols[] = {{"replica", T_TEXT}, {"role", T_TEXT}};

static const struct col buffer_cols[] = {
	{"recv_pos", T_INT4},	 {"pkt_pos", T_INT4},	{"pkt_remain", T_INT4}, {"send_pos", T_INT4},
	{"send_remain", T_INT4}, {"pkt_avail", T_INT4}, {"send_avail", T_INT4},
};

struct show_ctx {
	struct wbuf *w;
	bool sockets; /* SHOW SOCKETS: raw state names and buffer columns */
};

static void put_buffers(struct wbuf *w, const struct conn *io)
{
	const struct iobuf *b = io->in;
	put_int(w, b ? b->recv : 0);
	put_int(w, b ? b->parsed : 0);
	put_int(w, io->pkt_remain);
	put_int(w, b ? b->done : 0);
	put_int(w, io->out.len - io->out.sent);
	put_int(w, b ? b->recv - b->parsed : 0);
	put_int(w, b ? b->parsed - b->done : 0);
}

static const char *app_name(const struct client *c)
{
	const char *v = param_get(c->params, "application_name");
	return v ? v : "";
}

static void client_row(struct client *c, const char *state, void *arg)
{
	struct show_ctx *x = arg;
	struct wbuf *w = x->w;
	char addr[64], laddr[64], ct[32], rt[32], tls[96], st[24];
	int port = split_addr(&c->addr, addr, sizeof(addr));
	int lport = local_addr(c->io.fd, laddr, sizeof(laddr));
	fmt_time(c->connect_time, ct, sizeof(ct));
	fmt_time(c->request_time, rt, sizeof(rt));
	tls_describe(&c->io, tls, sizeof(tls));
	double waited = c->state == CLIENT_WAITING ? fleet_now() - c->wait_start : 0;
	if (waited < 0)
		waited = 0;
	snprintf(st, sizeof(st), "%s%s", x->sockets ? "cl_" : "", state);
	uint32_t m = row_begin(w, SOCKET_COLS_CLIENTS + (x->sockets ? NCOLS(buffer_cols) : 0));
	put_text(w, "C");
	put_text(w, c->user);
	put_text(w, c->dbname);
	put_text(w, st);
	put_text(w, addr);
	put_int(w, port);
	put_text(w, laddr);
	put_int(w, lport);
	put_text(w, ct);
	put_text(w, rt);
	put_int(w, (long long)waited);
	put_int(w, (long long)((waited - (double)(long long)waited) * 1e6));
	put_int(w, 0);
	put_fmt(w, "%p", (void *)c);
	if (c->link)
		put_fmt(w, "%p", (void *)c->link);
	else
		put_text(w, "");
	put_int(w, 0);
	put_text(w, tls);
	put_text(w, app_name(c));
	if (x->sockets)
		put_buffers(w, &c->io);
	proto_end(w, m);
}

static void server_row(struct server *s, const char *state, void *arg)
{
	struct show_ctx *x = arg;
	struct wbuf *w = x->w;
	struct pool *p = s->pool;
	struct replica *r = p->replica;
	char addr[256], laddr[64], ct[32], rt[32], tls[96], st[24];
	int port = split_addr(&r->addr, addr, sizeof(addr));
	if (r->addr.ss_family == AF_UNIX) {
		snprintf(addr, sizeof(addr), "%s", r->host);
		port = p->group->db->cfg ? p->group->db->cfg->port : 5432;
	}
	int lport = local_addr(s->io.fd, laddr, sizeof(laddr));
	fmt_time(s->connect_time, ct, sizeof(ct));
	fmt_time(s->request_time > 0 ? s->request_time : s->last_used > 0 ? s->last_used
									   : s->connect_time,
		 rt, sizeof(rt));
	tls_describe(&s->io, tls, sizeof(tls));
	snprintf(st, sizeof(st), "%s%s", x->sockets ? "sv_" : "",
		 x->sockets && strcmp(state, "new") == 0 ? "login" : state);
	int n = x->sockets ? SOCKET_COLS_CLIENTS + NCOLS(buffer_cols)
			   : SOCKET_COLS_SERVERS + NCOLS(server_extra_cols);
	uint32_t m = row_begin(w, n);
	put_text(w, "S");
	put_text(w, server_login_user(p));
	put_text(w, p->group->db->name);
	put_text(w, st);
	put_text(w, addr);
	put_int(w, port);
	put_text(w, laddr);
	put_int(w, lport);
	put_text(w, ct);
	put_text(w, rt);
	put_int(w, 0);
	put_int(w, 0);
	put_int(w, s->close_needed ? 1 : 0);
	put_fmt(w, "%p", (void *)s);
	if (s->link)
		put_fmt(w, "%p", (void *)s->link);
	else
		put_text(w, "");
	put_int(w, s->backend_pid);
	put_text(w, tls);
	if (x->sockets) {
		put_text(w, s->link ? app_name(s->link) : "");
		put_buffers(w, &s->io);
	} else {
		put_text(w, r->addr_str);
		put_text(w, replica_role_name(r->role));
	}
	proto_end(w, m);
}

static void show_clients(struct client *c)
{
	struct show_ctx x = {&c->io.out, false};
	row_description(x.w, socket_cols, SOCKET_COLS_CLIENTS);
	foreach_client(client_row, &x, false);
}

static void show_servers(struct client *c)
{
	struct show_ctx x = {&c->io.out, false};
	struct col cols[SOCKET_COLS_SERVERS + 2];
	memcpy(cols, socket_cols, sizeof(struct col) * SOCKET_COLS_SERVERS);
	memcpy(cols + SOCKET_COLS_SERVERS, server_extra_cols, sizeof(server_extra_cols));
	row_description(x.w, cols, NCOLS(cols));
	foreach_server(server_row, &x);
}

static void show_sockets(struct client *c)
{
	struct show_ctx x = {&c->io.out, true};
	struct col cols[SOCKET_COLS_CLIENTS + NCOLS(buffer_cols)];
	memcpy(cols, socket_cols, sizeof(struct col) * SOCKET_COLS_CLIENTS);
	memcpy(cols + SOCKET_COLS_CLIENTS, buffer_cols, sizeof(buffer_cols));
	row_description(x.w, cols, NCOLS(cols));
	foreach_client(client_row, &x, true);
	foreach_server(server_row, &x);
}

static void show_databases(struct client *c)
{
	static const struct col cols[] = {
		{"name", T_TEXT},	       {"host", T_TEXT},	   {"port", T_INT4},
		{"database", T_TEXT},	       {"force_user", T_TEXT},	   {"pool_size", T_INT4},
		{"min_pool_size", T_INT4},     {"reserve_pool", T_INT4},   {"pool_mode", T_TEXT},
		{"max_connections", T_INT4},   {"current_connections", T_INT4},
		{"paused", T_INT4},	       {"disabled", T_INT4},
	};
	struct wbuf *w = &c->io.out;
	row_description(w, cols, NCOLS(cols));
	struct list *it, *rit;
	list_for_each(it, &fleet.databases) {
		struct database *db = container_of(it, struct database, node);
		const struct db_config *cfg = db->cfg;
		int conns = 0;
		list_for_each(rit, &db->replicas) {
			conns += container_of(rit, struct replica, node)->server_conns;
		}
		uint32_t m = row_begin(w, NCOLS(cols));
		put_text(w, db->name);
		put_text(w, cfg && cfg->host ? cfg->host : "");
		put_int(w, cfg ? cfg->port : 5432);
		put_text(w, db->dbname);
		put_text(w, cfg && cfg->user ? cfg->user : "");
		put_int(w, db->pool_size);
		put_int(w, fleet.cfg.min_pool_size);
		put_int(w, fleet.cfg.reserve_pool_size);
		put_text(w, config_pool_mode_name(db->pool_mode));
		put_int(w, fleet.cfg.max_db_connections);
		put_int(w, conns);
		put_int(w, db->paused ? 1 : 0);
		put_int(w, db->disabled || db->cfg_own ? 1 : 0);
		proto_end(w, m);
	}
}

static void show_pools(struct client *c)
{
	static const struct col cols[] = {
		{"database", T_TEXT},		 {"user", T_TEXT},
		{"cl_active", T_INT4},		 {"cl_waiting", T_INT4},
		{"cl_active_cancel_req", T_INT4}, {"cl_waiting_cancel_req", T_INT4},
		{"sv_active", T_INT4},		 {"sv_active_cancel", T_INT4},
		{"sv_being_canceled", T_INT4},	 {"sv_idle", T_INT4},
		{"sv_used", T_INT4},		 {"sv_tested", T_INT4},
		{"sv_login", T_INT4},		 {"maxwait", T_INT4},
		{"maxwait_us", T_INT4},		 {"pool_mode", T_TEXT},
	};
	struct wbuf *w = &c->io.out;
	double now = fleet_now();
	row_description(w, cols, NCOLS(cols));
	struct list *dit, *git, *pit;
	list_for_each(dit, &fleet.databases) {
		struct database *db = container_of(dit, struct database, node);
		list_for_each(git, &db->groups) {
			struct pool_group *g = container_of(git, struct pool_group, node);
			int active = 0, idle = 0, login = 0;
			list_for_each(pit, &g->pools) {
				struct pool *p = container_of(pit, struct pool, group_node);
				active += p->active.count;
				idle += p->idle.count;
				login += p->login.count;
			}
			double maxwait = 0;
			struct list *first = list_first(&g->waiting.head);
			if (first) {
				maxwait = now - container_of(first, struct client, node)->wait_start;
				if (maxwait < 0)
					maxwait = 0;
			}
			uint32_t m = row_begin(w, NCOLS(cols));
			put_text(w, db->name);
			put_text(w, g->user);
			put_int(w, g->active.count);
			put_int(w, g->waiting.count);
			put_int(w, 0);
			put_int(w, 0);
			put_int(w, active);
			put_int(w, 0);
			put_int(w, 0);
			put_int(w, idle);
			put_int(w, 0);
			put_int(w, 0);
			put_int(w, login);
			put_int(w, (long long)maxwait);
			put_int(w, (long long)((maxwait - (double)(long long)maxwait) * 1e6));
			put_text(w, config_pool_mode_name(db->pool_mode));
			proto_end(w, m);
		}
	}
}

enum stats_view { VIEW_BOTH, VIEW_TOTALS, VIEW_AVERAGES };

static void show_stats(struct client *c, enum stats_view view)
{
	static const struct col both[] = {
		{"database", T_TEXT},	       {"total_xact_count", T_NUMERIC},
		{"total_query_count", T_NUMERIC}, {"total_received", T_NUMERIC},
		{"total_sent", T_NUMERIC},     {"total_xact_time", T_NUMERIC},
		{"total_query_time", T_NUMERIC}, {"total_wait_time", T_NUMERIC},
		{"avg_xact_count", T_NUMERIC}, {"avg_query_count", T_NUMERIC},
		{"avg_recv", T_NUMERIC},       {"avg_sent", T_NUMERIC},
		{"avg_xact_time", T_NUMERIC},  {"avg_query_time", T_NUMERIC},
		{"avg_wait_time", T_NUMERIC},
	};
	static const struct col one[] = {
		{"database", T_TEXT},	   {"xact_count", T_NUMERIC}, {"query_count", T_NUMERIC},
		{"bytes_received", T_NUMERIC}, {"bytes_sent", T_NUMERIC}, {"xact_time", T_NUMERIC},
		{"query_time", T_NUMERIC}, {"wait_time", T_NUMERIC},
	};
	struct wbuf *w = &c->io.out;
	if (view == VIEW_BOTH)
		row_description(w, both, NCOLS(both));
	else
		row_description(w, one, NCOLS(one));
	struct list *it;
	list_for_each(it, &fleet.databases) {
		struct database *db = container_of(it, struct database, node);
		struct stats t;
		stats_database_totals(db, &t);
		const struct stats_avg *a = &db->avg;
		uint32_t m = row_begin(w, view == VIEW_BOTH ? NCOLS(both) : NCOLS(one));
		put_text(w, db->name);
		if (view != VIEW_AVERAGES) {
			put_u64(w, t.xacts);
			put_u64(w, t.queries);
			put_u64(w, t.bytes_recv);
			put_u64(w, t.bytes_sent);
			put_u64(w, t.xact_us);
			put_u64(w, t.query_us);
			put_u64(w, t.wait_us);
		}
		if (view != VIEW_TOTALS) {
			put_u64(w, a->xacts);
			put_u64(w, a->queries);
			put_u64(w, a->bytes_recv);
			put_u64(w, a->bytes_sent);
			put_u64(w, a->xact_us);
			put_u64(w, a->query_us);
			put_u64(w, a->wait_us);
		}
		proto_end(w, m);
	}
}

static void show_users(struct client *c)
{
	static const struct col cols[] = {{"name", T_TEXT}, {"pool_mode", T_TEXT}};
	struct wbuf *w = &c->io.out;
	row_description(w, cols, NCOLS(cols));
	for (size_t i = 0; i < fleet.cfg.n_users; i++) {
		uint32_t m = row_begin(w, NCOLS(cols));
		put_text(w, fleet.cfg.users[i].name);
		put_text(w, "");
		proto_end(w, m);
	}
	/* Users of pools that no auth_file line names (trust). */
	struct list *dit, *git;
	list_for_each(dit, &fleet.databases) {
		struct database *db = container_of(dit, struct database, node);
		list_for_each(git, &db->groups) {
			struct pool_group *g = container_of(git, struct pool_group, node);
			if (config_find_user(&fleet.cfg, g->user))
				continue;
			bool seen = false;
			struct list *d2, *g2;
			list_for_each(d2, &fleet.databases) {
				struct database *db2 = container_of(d2, struct database, node);
				list_for_each(g2, &db2->groups) {
					if (g2 == git)
						goto done;
					seen = seen || strcmp(container_of(g2, struct pool_group,
									   node)->user,
							      g->user) == 0;
				}
			}
done:
			if (seen)
				continue;
			uint32_t m = row_begin(w, NCOLS(cols));
			put_text(w, g->user);
			put_text(w, "");
			proto_end(w, m);
		}
	}
}

static void show_config(struct client *c)
{
	static const struct col cols[] = {
		{"key", T_TEXT}, {"value", T_TEXT}, {"default", T_TEXT}, {"changeable", T_TEXT}};
	struct wbuf *w = &c->io.out;
	row_description(w, cols, NCOLS(cols));
	size_t n = config_setting_count();
	for (size_t i = 0; i < n; i++) {
		const char *name = config_setting_name(i);
		char value[1024];
		config_setting_value(&fleet.cfg, i, value, sizeof(value));
		if (strstr(name, "password") && *value)
			snprintf(value, sizeof(value), "%s", "********");
		uint32_t m = row_begin(w, NCOLS(cols));
		put_text(w, name);
		put_text(w, value);
		put_text(w, config_setting_default(i));
		put_text(w, fleet_setting_changeable(name) ? "yes" : "no");
		proto_end(w, m);
	}
}

static void dns_host_row(const struct dns_host_info *h, void *arg)
{
	struct wbuf *w = arg;
	char addrs[1024];
	size_t len = 0;
	addrs[0] = 0;
	const struct dns_addr *a;
	int n;
	if (discovery_lookup(h->name, &a, &n)) {
		for (int i = 0; i < n; i++) {
			char one[64];
			split_addr(&a[i].sa, one, sizeof(one));
			int k = snprintf(addrs + len, sizeof(addrs) - len, "%s%s", len ? "," : "", one);
			if (k < 0 || (size_t)k >= sizeof(addrs) - len)
				break;
			len += (size_t)k;
		}
	}
	uint32_t m = row_begin(w, 3);
	put_text(w, h->name);
	/* The answer is re-resolved at most dns_max_ttl after it came. */
	put_int(w, (long long)fleet.cfg.dns_max_ttl);
	put_text(w, addrs);
	proto_end(w, m);
}

static void show_dns_hosts(struct client *c)
{
	static const struct col cols[] = {
		{"hostname", T_TEXT}, {"ttl", T_INT8}, {"addrs", T_TEXT}};
	row_description(&c->io.out, cols, NCOLS(cols));
	discovery_foreach_host(dns_host_row, &c->io.out);
}

static void show_dns_zones(struct client *c)
{
	/* c-ares has no zone (SOA serial) tracking: no rows, like PgBouncer
	 * built with c-ares. */
	static const struct col cols[] = {
		{"zonename", T_TEXT}, {"serial", T_INT8}, {"count", T_INT4}};
	row_description(&c->io.out, cols, NCOLS(cols));
}

static void count_host(const struct dns_host_info *h, void *arg)
{
	int *n = arg;
	(*n)++;
}

struct counts {
	int clients, servers, pools, groups, login_clients;
};

static void count_all(struct counts *k)
{
	struct list *dit, *git, *pit;
	memset(k, 0, sizeof(*k));
	k->login_clients = fleet.login_clients.count;
	k->clients = k->login_clients;
	list_for_each(dit, &fleet.databases) {
		struct database *db = container_of(dit, struct database, node);
		list_for_each(git, &db->groups) {
			struct pool_group *g = container_of(git, struct pool_group, node);
			k->groups++;
			k->clients += g->active.count + g->waiting.count;
			list_for_each(pit, &g->pools) {
				k->pools++;
				k->servers += pool_total(container_of(pit, struct pool, group_node));
			}
		}
	}
	if (console.active.head.next)
		k->clients += console.active.count;
}

static void list_row(struct wbuf *w, const char *name, long long n)
{
	uint32_t m = row_begin(w, 2);
	put_text(w, name);
	put_int(w, n);
	proto_end(w, m);
}

static void show_lists(struct client *c)
{
	static const struct col cols[] = {{"list", T_TEXT}, {"items", T_INT4}};
	struct wbuf *w = &c->io.out;
	struct counts k;
	count_all(&k);
	int dbs = 0, hosts = 0;
	struct list *it;
	list_for_each(it, &fleet.databases) {
		dbs++;
	}
	discovery_foreach_host(count_host, &hosts);
	row_description(w, cols, NCOLS(cols));
	list_row(w, "databases", dbs);
	list_row(w, "users", (long long)fleet.cfg.n_users);
	list_row(w, "pools", k.pools);
	list_row(w, "free_clients", 0);
	list_row(w, "used_clients", k.clients);
	list_row(w, "login_clients", k.login_clients);
	list_row(w, "free_servers", 0);
	list_row(w, "used_servers", k.servers);
	list_row(w, "dns_names", hosts);
	list_row(w, "dns_zones", 0);
	list_row(w, "dns_queries", 0);
	list_row(w, "dns_pending", 0);
}

static void mem_row(struct wbuf *w, const char *name, size_t size, size_t used, size_t nfree)
{
	uint32_t m = row_begin(w, 5);
	put_text(w, name);
	put_int(w, (long long)size);
	put_int(w, (long long)used);
	put_int(w, (long long)nfree);
	put_int(w, (long long)(size * (used + nfree)));
	proto_end(w, m);
}

static void show_mem(struct client *c)
{
	static const struct col cols[] = {{"name", T_TEXT},	{"size", T_INT4}, {"used", T_INT4},
					  {"free", T_INT4},	{"memtotal", T_INT4}};
	struct wbuf *w = &c->io.out;
	struct counts k;
	count_all(&k);
	int dbs = 0, replicas = 0;
	struct list *it;
	list_for_each(it, &fleet.databases) {
		dbs++;
		replicas += container_of(it, struct database, node)->replica_count;
	}
	size_t bfree, bused;
	iobuf_stats(&bfree, &bused);
	row_description(w, cols, NCOLS(cols));
	mem_row(w, "user_cache", sizeof(struct user_entry), fleet.cfg.n_users, 0);
	mem_row(w, "db_cache", sizeof(struct database), (size_t)dbs, 0);
	mem_row(w, "replica_cache", sizeof(struct replica), (size_t)replicas, 0);
	mem_row(w, "pool_cache", sizeof(struct pool), (size_t)k.pools, 0);
	mem_row(w, "server_cache", sizeof(struct server), (size_t)k.servers, 0);
	mem_row(w, "client_cache", sizeof(struct client), (size_t)fleet.client_count, 0);
	mem_row(w, "iobuf_cache", sizeof(struct iobuf) + IOBUF_SIZE, bused, bfree);
	unsigned sets = param_set_count(); /* sets vary in size: the mean */
	mem_row(w, "param_sets", sets ? param_set_bytes() / sets : sizeof(struct param_set), sets, 0);
}

static void replica_row(const struct replica_row *r, void *arg)
{
	struct wbuf *w = arg;
	uint32_t m = row_begin(w, 14);
	put_text(w, r->database);
	put_text(w, r->host);
	put_text(w, r->addr);
	put_int(w, r->port);
	put_text(w, r->role);
	put_text(w, r->state);
	put_fmt(w, "%.3f", r->lag_s);
	put_int(w, r->server_conns);
	put_int(w, r->active);
	put_u64(w, r->xacts);
	put_u64(w, r->queries);
	put_u64(w, r->avg_xact_us);
	put_text(w, r->last_check_str);
	put_text(w, r->last_error);
	proto_end(w, m);
}

static void show_replicas(struct client *c)
{
	static const struct col cols[] = {
		{"database", T_TEXT},	  {"host", T_TEXT},	  {"addr", T_TEXT},
		{"port", T_INT4},	  {"role", T_TEXT},	  {"state", T_TEXT},
		{"lag_s", T_NUMERIC},	  {"server_conns", T_INT4}, {"active", T_INT4},
		{"xacts", T_INT8},	  {"queries", T_INT8},	  {"avg_xact_us", T_INT8},
		{"last_check", T_TEXT},	  {"last_error", T_TEXT},
	};
	row_description(&c->io.out, cols, NCOLS(cols));
	database_foreach_replica_row(replica_row, &c->io.out);
}

static void show_version(struct client *c)
{
	static const struct col cols[] = {{"version", T_TEXT}};
	struct wbuf *w = &c->io.out;
	row_description(w, cols, 1);
	uint32_t m = row_begin(w, 1);
	/* pgbouncer_exporter reads a PgBouncer version out of this line. */
	put_text(w, "pgfleet " PGFLEET_VERSION " (PgBouncer 1.18.0 compatible)");
	proto_end(w, m);
}

static const char help_text[] =
	"\n\tSHOW HELP|CONFIG|DATABASES|POOLS|CLIENTS|SERVERS|USERS|VERSION"
	"\n\tSHOW SOCKETS|LISTS|MEM"
	"\n\tSHOW DNS_HOSTS|DNS_ZONES"
	"\n\tSHOW STATS|STATS_TOTALS|STATS_AVERAGES"
	"\n\tSHOW REPLICAS"
	"\n\tSET key = arg"
	"\n\tRELOAD"
	"\n\tPAUSE [<db>]"
	"\n\tRESUME [<db>]"
	"\n\tDISABLE <db>"
	"\n\tENABLE <db>"
	"\n\tRECONNECT [<db>]"
	"\n\tKILL <db>"
	"\n\tWAIT_CLOSE [<db>]"
	"\n\tSHUTDOWN"
	"\n\tREFRESH DNS";

static void show_help(struct client *c)
{
	struct wbuf *w = &c->io.out;
	uint32_t m = proto_begin(w, 'N');
	proto_put_u8(w, 'S');
	proto_put_str(w, "NOTICE");
	proto_put_u8(w, 'V');
	proto_put_str(w, "NOTICE");
	proto_put_u8(w, 'C');
	proto_put_str(w, "00000");
	proto_put_u8(w, 'M');
	proto_put_str(w, "Console usage");
	proto_put_u8(w, 'D');
	proto_put_str(w, help_text);
	proto_put_u8(w, 0);
	proto_end(w, m);
}

/* ---- parsing ----------------------------------------------------------------- */

/* The next word (letters, digits, '_', '*', '.', '-'), lower-cased into
 * buf; NULL when there is none or it does not fit. */
static const char *next_word(const char *p, char *buf, size_t len)
{
	while (isspace((unsigned char)*p))
		p++;
	size_t n = 0;
	while (*p && (isalnum((unsigned char)*p) || *p == '_' || *p == '*' || *p == '.' ||
		      *p == '-')) {
		if (n + 1 >= len)
			return NULL;
		buf[n++] = (char)tolower((unsigned char)*p++);
	}
	buf[n] = 0;
	return n ? p : NULL;
}

/* A database argument: a word (as written) or a "quoted" name. */
static const char *next_name(const char *p, char *buf, size_t len)
{
	while (isspace((unsigned char)*p))
		p++;
	size_t n = 0;
	if (*p == '"') {
		for (p++; *p && *p != '"'; p++) {
			if (n + 1 >= len)
				return NULL;
			buf[n++] = *p;
		}
		if (*p != '"')
			return NULL;
		p++;
	} else {
		while (*p && !isspace((unsigned char)*p)) {
			if (n + 1 >= len)
				return NULL;
			buf[n++] = *p++;
		}
	}
	buf[n] = 0;
	return n ? p : NULL;
}

static bool at_end(const char *p)
{
	while (isspace((unsigned char)*p))
		p++;
	return *p == 0;
}

/* ---- commands ---------------------------------------------------------------- */

static struct database *find_db(const char *name)
{
	struct list *it;
	list_for_each(it, &fleet.databases) {
		struct database *db = container_of(it, struct database, node);
		if (strcmp(db->name, name) == 0 && !db->cfg_own)
			return db;
	}
	/* A configured name not used yet.  Never a name only "*" covers: such
	 * a database exists once a client logged in to it (database.c). */
	return database_lookup(name);
}

/* Busy server connections of db (NULL: every database). */
static int busy_servers(const struct database *only)
{
	int n = 0;
	struct list *it, *rit;
	list_for_each(it, &fleet.databases) {
		struct database *db = container_of(it, struct database, node);
		if (only && db != only)
			continue;
		list_for_each(rit, &db->replicas) {
			n += container_of(rit, struct replica, node)->active;
		}
	}
	return n;
}

/* Connections of db still to close (RECONNECT, reload, draining). */
static int closing_servers(const struct database *only)
{
	int n = 0;
	struct list *it, *rit, *pit, *sit;
	list_for_each(it, &fleet.databases) {
		struct database *db = container_of(it, struct database, node);
		if (only && db != only)
			continue;
		list_for_each(rit, &db->replicas) {
			struct replica *r = container_of(rit, struct replica, node);
			if (r->state == REPLICA_DRAINING) {
				n += r->server_conns;
				continue;
			}
			list_for_each(pit, &r->pools) {
				struct pool *p = container_of(pit, struct pool, replica_node);
				struct statlist *lists[] = {&p->active, &p->idle, &p->login};
				for (int i = 0; i < 3; i++) {
					list_for_each(sit, &lists[i]->head) {
						n += container_of(sit, struct server, node)
							     ->close_needed;
					}
				}
			}
		}
	}
	return n;
}

static void kill_db(struct database *db)
{
	char message[NAME_MAX_LEN + 80];
	db->paused = true; /* as PgBouncer: new work waits for RESUME */
	snprintf(message, sizeof(message),
		 "terminating connection due to administrator command (KILL %s)", db->name);
	database_close_all(db, message, "KILL");
}

static void resume_db(struct database *db)
{
	db->paused = false;
	struct list *git;
	list_for_each(git, &db->groups) {
		struct pool_group *g = container_of(git, struct pool_group, node);
		pool_kick(g); /* the clients that waited in line get servers */
	}
}

static bool wait_done(struct admin_session *a)
{
	struct database *db = a->wait_db[0] ? find_db(a->wait_db) : NULL;
	if (a->wait_db[0] && !db)
		return true;
	if (a->wait == WAIT_PAUSE)
		return busy_servers(db) == 0;
	return closing_servers(db) == 0;
}

static void finish_wait(struct client *c);

static void shadow_done(struct client *sh);

static void on_wait_tick(evutil_socket_t fd, short what, void *arg)
{
	struct list *it, *tmp;
	bool more = false;
	if (console.active.head.next) {
		list_for_each_safe(it, tmp, &console.active.head) {
			struct client *c = container_of(it, struct client, node);
			if (!c->admin || c->admin->wait == WAIT_NONE ||
			    c->admin->wait == WAIT_WORKERS)
				continue;
			if (wait_done(c->admin))
				finish_wait(c);
			else
				more = true;
		}
	}
	if (shadows.next) {
		list_for_each_safe(it, tmp, &shadows) {
			struct client *sh = container_of(it, struct client, node);
			if (!wait_done(sh->admin)) {
				more = true;
				continue;
			}
			command_complete(&sh->io.out,
					 sh->admin->wait == WAIT_PAUSE ? "PAUSE" : "WAIT_CLOSE");
			list_del(&sh->node);
			shadow_done(sh);
		}
	}
	if (more) {
		struct timeval tv = {0, 50000};
		evtimer_add(ev_wait, &tv);
	}
}

static void start_wait(struct client *c, enum admin_wait kind, const char *db)
{
	c->admin->wait = kind;
	snprintf(c->admin->wait_db, sizeof(c->admin->wait_db), "%s", db ? db : "");
	if (!ev_wait)
		ev_wait = evtimer_new(fleet.base, on_wait_tick, NULL);
	struct timeval tv = {0, 50000};
	if (ev_wait)
		evtimer_add(ev_wait, &tv);
}

/* Runs one command.  False when it waits (PAUSE, WAIT_CLOSE): the reply is
 * sent when the connections are gone. */
static bool run_command(struct client *c, const char *cmd)
{
	struct wbuf *w = &c->io.out;
	char verb[32], arg[NAME_MAX_LEN + 2];
	const char *p = next_word(cmd, verb, sizeof(verb));
	if (!p) {
		admin_error(c, "42601", "invalid command, use SHOW HELP;");
		return true;
	}
	if (strcmp(verb, "show") == 0) {
		char what[32];
		const char *q = next_word(p, what, sizeof(what));
		if (!q || !at_end(q)) {
			admin_error(c, "42601", "SHOW needs one of: SHOW HELP;");
			return true;
		}
		static const struct {
			const char *name;
			void (*fn)(struct client *c);
		} shows[] = {
			{"help", show_help},		 {"version", show_version},
			{"config", show_config},	 {"databases", show_databases},
			{"pools", show_pools},		 {"clients", show_clients},
			{"servers", show_servers},	 {"users", show_users},
			{"dns_hosts", show_dns_hosts},	 {"dns_zones", show_dns_zones},
			{"lists", show_lists},		 {"mem", show_mem},
			{"sockets", show_sockets},	 {"replicas", show_replicas},
		};
		for (size_t i = 0; i < sizeof(shows) / sizeof(shows[0]); i++) {
			if (strcmp(what, shows[i].name) == 0) {
				shows[i].fn(c);
				command_complete(w, "SHOW");
				return true;
			}
		}
		enum stats_view view = strcmp(what, "stats") == 0	     ? VIEW_BOTH
				       : strcmp(what, "stats_totals") == 0   ? VIEW_TOTALS
				       : strcmp(what, "stats_averages") == 0 ? VIEW_AVERAGES
									     : (enum stats_view)-1;
		if ((int)view < 0) {
			admin_error(c, "42601", "unknown SHOW item \"%s\", use SHOW HELP;", what);
			return true;
		}
		show_stats(c, view);
		command_complete(w, "SHOW");
		return true;
	}

	static const char *const known[] = {"set",     "reload",     "pause",	 "resume",
					    "disable", "enable",     "reconnect", "kill",
					    "wait_close", "shutdown", "refresh",   NULL};
	bool is_known = false;
	for (int i = 0; known[i]; i++)
		is_known = is_known || strcmp(verb, known[i]) == 0;
	if (!is_known) {
		admin_error(c, "42601", "invalid command \"%s\", use SHOW HELP;", verb);
		return true;
	}
	if (!c->admin->full) {
		admin_error(c, "42501",
			    "admin access needed: user \"%s\" is in stats_users, which may only "
			    "run SHOW",
			    c->user);
		return true;
	}

	if (strcmp(verb, "set") == 0) {
		char key[64];
		const char *q = next_word(p, key, sizeof(key));
		if (!q) {
			admin_error(c, "42601", "syntax: SET key = value");
			return true;
		}
		while (isspace((unsigned char)*q))
			q++;
		if (*q == '=') {
			q++;
		} else if (strncasecmp(q, "to", 2) == 0 && isspace((unsigned char)q[2])) {
			q += 2;
		} else {
			admin_error(c, "42601", "syntax: SET key = value");
			return true;
		}
		while (isspace((unsigned char)*q))
			q++;
		char value[1024];
		size_t n = 0;
		if (*q == '\'' || *q == '"') {
			char quote = *q++;
			for (;; q++) {
				if (!*q) {
					admin_error(c, "42601", "unterminated quoted value");
					return true;
				}
				if (*q == quote) {
					if (q[1] != quote)
						break;
					q++; /* a doubled quote stands for one */
				}
				if (n + 1 >= sizeof(value)) {
					admin_error(c, "22023", "value for \"%s\" is too long", key);
					return true;
				}
				value[n++] = *q;
			}
			q++;
			if (!at_end(q)) {
				admin_error(c, "42601", "syntax: SET key = value");
				return true;
			}
		} else {
			n = strlen(q);
			while (n && isspace((unsigned char)q[n - 1]))
				n--;
			if (n >= sizeof(value)) {
				admin_error(c, "22023", "value for \"%s\" is too long", key);
				return true;
			}
			memcpy(value, q, n);
		}
		value[n] = 0;
		bool exists = false;
		for (size_t i = 0; i < config_setting_count(); i++)
			exists = exists || strcmp(config_setting_name(i), key) == 0;
		if (!exists) {
			admin_error(c, "42704", "unrecognized setting \"%s\", see SHOW CONFIG;", key);
			return true;
		}
		if (!fleet_setting_changeable(key)) {
			admin_error(c, "55P02",
				    "setting \"%s\" cannot be changed while pgfleet runs (restart "
				    "needed)",
				    key);
			return true;
		}
		char err[256];
		if (!config_set(&fleet.cfg, key, value, err, sizeof(err))) {
			admin_error(c, "22023", "invalid value for \"%s\": %s", key, err);
			return true;
		}
		fleet_settings_changed();
		log_info("setting changed", "key", key, "by", c->user, NULL);
		command_complete(w, "SET");
		return true;
	}
	if (strcmp(verb, "refresh") == 0) {
		char what[16];
		const char *q = next_word(p, what, sizeof(what));
		if (!q || strcmp(what, "dns") != 0 || !at_end(q)) {
			admin_error(c, "42601", "syntax: REFRESH DNS");
			return true;
		}
		discovery_refresh();
		command_complete(w, "REFRESH");
		return true;
	}
	if (strcmp(verb, "reload") == 0 || strcmp(verb, "shutdown") == 0) {
		if (!at_end(p)) {
			admin_error(c, "42601", "%s takes no argument", verb);
			return true;
		}
		if (verb[0] == 'r') {
			char err[400];
			if (!fleet_reload(err, sizeof(err))) {
				admin_error(c, "F0000", "RELOAD failed: %s", err);
				return true;
			}
			command_complete(w, "RELOAD");
			return true;
		}
		log_info("admin SHUTDOWN", "by", c->user, NULL);
		command_complete(w, "SHUTDOWN");
		fleet_shutdown("admin SHUTDOWN");
		return true;
	}

	/* The commands that name a database (optional for some). */
	bool need_db = strcmp(verb, "disable") == 0 || strcmp(verb, "enable") == 0 ||
		       strcmp(verb, "kill") == 0;
	const char *q = next_name(p, arg, sizeof(arg));
	if (q && !at_end(q)) {
		admin_error(c, "42601", "%s takes one database name", verb);
		return true;
	}
	if (!q && !at_end(p)) {
		admin_error(c, "42601", "invalid database name");
		return true;
	}
	if (!q && need_db) {
		admin_error(c, "42601", "%s needs a database name", verb);
		return true;
	}
	struct database *db = NULL;
	if (q) {
		db = find_db(arg);
		if (!db) {
			admin_error(c, "3D000", "no such database: %s", arg);
			return true;
		}
	}
	char tag[32];
	snprintf(tag, sizeof(tag), "%s", verb);
	for (char *t = tag; *t; t++)
		*t = (char)toupper((unsigned char)*t);
	log_info("admin command", "command", tag, "db", db ? db->name : "*", "by", c->user, NULL);

	struct list *it;
	if (strcmp(verb, "disable") == 0 || strcmp(verb, "enable") == 0) {
		db->disabled = verb[0] == 'd';
	} else if (strcmp(verb, "kill") == 0) {
		kill_db(db);
	} else if (strcmp(verb, "pause") == 0 || strcmp(verb, "resume") == 0) {
		bool pause = verb[0] == 'p';
		list_for_each(it, &fleet.databases) {
			struct database *d = container_of(it, struct database, node);
			if (db && d != db)
				continue;
			if (pause)
				d->paused = true;
			else
				resume_db(d);
		}
		if (pause && busy_servers(db)) {
			start_wait(c, WAIT_PAUSE, db ? db->name : NULL);
			return false;
		}
	} else if (strcmp(verb, "reconnect") == 0 || strcmp(verb, "wait_close") == 0) {
		if (verb[0] == 'r') {
			list_for_each(it, &fleet.databases) {
				struct database *d = container_of(it, struct database, node);
				if (!db || d == db)
					database_reconnect(d, "RECONNECT");
			}
		} else if (closing_servers(db)) {
			start_wait(c, WAIT_CLOSE, db ? db->name : NULL);
			return false;
		}
	}
	command_complete(w, tag);
	return true;
}

/* ---- the session --------------------------------------------------------------- */

static void flush_client(struct client *c)
{
	enum io_result r = conn_flush(&c->io);
	if (r == IO_ERROR) {
		client_close(c, NULL, "write to client failed");
		return;
	}
	if (r == IO_AGAIN)
		conn_write_enable(&c->io, true);
}

static void finish_wait(struct client *c)
{
	const char *tag = c->admin->wait == WAIT_PAUSE ? "PAUSE" : "WAIT_CLOSE";
	c->admin->wait = WAIT_NONE;
	command_complete(&c->io.out, tag);
	proto_ready(&c->io.out, 'I');
	flush_client(c);
	if (c->state == CLIENT_ACTIVE) {
		conn_read_enable(&c->io, true);
		if (!c->io.write_on)
			admin_process(c);
	}
}

/* ---- workers = N: one command, every worker ---------------------------------- */

/* How the workers' answers to cmd combine; false: this worker's own
 * answer is the answer (no fan-out). */
static bool fanout_kind(const char *cmd, enum admin_merge_kind *kind, int *nkeys)
{
	char verb[32], what[32];
	const char *p = next_word(cmd, verb, sizeof(verb));
	*kind = MERGE_FIRST;
	*nkeys = 0;
	if (!p)
		return false;
	if (strcmp(verb, "shutdown") == 0)
		return false; /* fleet_shutdown() tells every worker itself */
	if (strcmp(verb, "show") != 0)
		return true; /* every worker acts; the asking one's answer stands */
	if (!next_word(p, what, sizeof(what)))
		return false;
	static const struct {
		const char *what;
		enum admin_merge_kind kind;
		int nkeys;
	} shows[] = {
		{"clients", MERGE_CONCAT, 0},	  {"servers", MERGE_CONCAT, 0},
		{"sockets", MERGE_CONCAT, 0},	  {"pools", MERGE_KEYED, 2},
		{"stats", MERGE_KEYED, 1},	  {"stats_totals", MERGE_KEYED, 1},
		{"stats_averages", MERGE_KEYED, 1}, {"databases", MERGE_KEYED, 1},
		{"replicas", MERGE_KEYED, 4},	  {"lists", MERGE_KEYED, 1},
		{"mem", MERGE_KEYED, 1},
	};
	for (size_t i = 0; i < sizeof(shows) / sizeof(shows[0]); i++) {
		if (strcmp(what, shows[i].what) == 0) {
			*kind = shows[i].kind;
			*nkeys = shows[i].nkeys;
			return true;
		}
	}
	return false; /* HELP, VERSION, CONFIG, USERS, DNS_*: the same everywhere */
}

static void fanout_reply(void *arg);

/* A shadow session's answer is complete: hand it to the asking worker. */
static void shadow_done(struct client *sh)
{
	struct fanout *f = sh->admin->fan;
	f->out[worker_index()] = sh->io.out; /* the buffer moves to the request */
	memset(&sh->io.out, 0, sizeof(sh->io.out));
	param_set_release(sh->params);
	free(sh->admin);
	free(sh);
	if (!worker_post(f->origin, WMSG_CALL, 0, 0, fanout_reply, f))
		log_error("admin answer lost: cannot reach the asking worker", NULL);
}

/* On each worker: run the command for another worker's client. */
static void fanout_run(void *arg)
{
	struct fanout *f = arg;
	struct client *sh = calloc(1, sizeof(*sh));
	struct admin_session *a = sh ? calloc(1, sizeof(*a)) : NULL;
	const struct param_set *params = a ? param_set_empty() : NULL;
	if (!params) {
		free(a);
		free(sh);
		struct wbuf *w = &f->out[worker_index()];
		proto_error(w, "ERROR", "53200", "out of memory");
		(void)worker_post(f->origin, WMSG_CALL, 0, 0, fanout_reply, f);
		return;
	}
	console_init();
	a->full = f->full;
	a->shadow = true;
	a->fan = f;
	sh->admin = a;
	sh->io.fd = -1;
	sh->state = CLIENT_ACTIVE;
	sh->group = &console;
	sh->params = params;
	sh->user = f->user; /* lives until the answer is complete */
	sh->dbname = "pgfleet";
	snprintf(sh->addr_str, sizeof(sh->addr_str), "%s", "admin (another worker)");
	if (run_command(sh, f->cmd)) {
		shadow_done(sh);
		return;
	}
	/* PAUSE, WAIT_CLOSE: on_wait_tick finishes it. */
	if (!shadows.next)
		list_init(&shadows);
	list_append(&shadows, &sh->node);
}

/* On the asking worker: one more answer; the last one completes the reply. */
static void fanout_reply(void *arg)
{
	struct fanout *f = arg;
	if (--f->pending > 0)
		return;
	struct client *c = f->c;
	if (c) {
		/* The asking worker's answer first: its row description, its
		 * error, its settings and states. */
		struct wbuf parts[WORKER_MAX];
		int n = 0;
		parts[n++] = f->out[f->origin];
		for (int i = 0; i < worker_count(); i++)
			if (i != f->origin)
				parts[n++] = f->out[i];
		admin_merge(&c->io.out, parts, n, f->kind, f->nkeys);
		proto_ready(&c->io.out, 'I');
		c->admin->wait = WAIT_NONE;
		c->admin->fan = NULL;
	}
	for (int i = 0; i < worker_count(); i++)
		wbuf_free(&f->out[i]);
	free(f);
	if (c) {
		flush_client(c);
		if (c->state == CLIENT_ACTIVE) {
			conn_read_enable(&c->io, true);
			if (!c->io.write_on)
				admin_process(c);
		}
	}
}

/* Starts cmd on every worker (false: run it here alone). */
static bool fanout_start(struct client *c, const char *cmd)
{
	enum admin_merge_kind kind;
	int nkeys;
	if (!worker_threaded() || !fanout_kind(cmd, &kind, &nkeys))
		return false;
	struct fanout *f = calloc(1, sizeof(*f));
	if (!f)
		return false;
	f->origin = worker_index();
	f->c = c;
	f->full = c->admin->full;
	f->kind = kind;
	f->nkeys = nkeys;
	snprintf(f->user, sizeof(f->user), "%s", c->user);
	snprintf(f->cmd, sizeof(f->cmd), "%s", cmd);
	f->pending = worker_count();
	c->admin->wait = WAIT_WORKERS;
	c->admin->fan = f;
	/* Every worker, this one too, through its mailbox: the answer never
	 * comes back under this call. */
	for (int i = 0; i < worker_count(); i++) {
		if (!worker_post(i, WMSG_CALL, 0, 0, fanout_run, f)) {
			proto_error(&f->out[i], "ERROR", "53200", "cannot reach a worker");
			f->pending--;
		}
	}
	if (f->pending == 0)
		fanout_reply(f); /* nobody reached: not even this worker's mailbox */
	return true;
}

/* One Query message: one command, with or without a trailing ';'. */
static void handle_query(struct client *c, const uint8_t *body, uint32_t len)
{
	const char *end = memchr(body, 0, len);
	if (!end) {
		client_close(c, "08P01", "malformed Query message");
		return;
	}
	size_t n = (size_t)(end - (const char *)body);
	if (n >= ADMIN_MAX_QUERY) {
		admin_error(c, "54000", "admin command too long (%zu bytes)", n);
		proto_ready(&c->io.out, 'I');
		return;
	}
	char cmd[ADMIN_MAX_QUERY];
	memcpy(cmd, body, n);
	cmd[n] = 0;
	/* Trailing semicolons and space go; one left inside means several
	 * statements, which the console does not run. */
	while (n && (isspace((unsigned char)cmd[n - 1]) || cmd[n - 1] == ';'))
		cmd[--n] = 0;
	bool quoted = false;
	char quote = 0;
	bool several = false;
	for (size_t i = 0; i < n; i++) {
		if (quoted) {
			quoted = cmd[i] != quote;
		} else if (cmd[i] == '\'' || cmd[i] == '"') {
			quoted = true;
			quote = cmd[i];
		} else if (cmd[i] == ';') {
			several = true;
		}
	}
	if (at_end(cmd)) {
		admin_error(c, "42601", "empty query: the admin console takes commands, use SHOW HELP;");
	} else if (several) {
		admin_error(c, "0A000", "the admin console runs one command per query");
	} else if (fanout_start(c, cmd)) {
		return; /* answered when every worker has */
	} else if (!run_command(c, cmd)) {
		return; /* answered when its wait is over */
	}
	proto_ready(&c->io.out, 'I');
}

/* One whole message from the admin client. */
static void handle_message(struct client *c, uint8_t type, const uint8_t *body, uint32_t len)
{
	struct admin_session *a = c->admin;
	switch (type) {
	case 'X':
		client_close(c, NULL, "client terminated");
		return;
	case 'Q':
		if (!a->skip_to_sync)
			handle_query(c, body, len);
		return;
	case 'S':
		a->skip_to_sync = false;
		proto_ready(&c->io.out, 'I');
		return;
	case 'H':
		return;
	case 'P':
	case 'B':
	case 'D':
	case 'E':
	case 'C':
	case 'F':
		/* Refused once; the rest of the batch is dropped up to its Sync, as
		 * PostgreSQL does after an error. */
		if (!a->skip_to_sync)
			admin_error(c, "0A000",
				    "the admin console supports the simple query protocol only");
		if (type == 'F')
			proto_ready(&c->io.out, 'I'); /* a FunctionCall ends itself */
		else
			a->skip_to_sync = true;
		return;
	default:
		client_close(c, "08P01", "unexpected message type %d", type);
		return;
	}
}

void admin_process(struct client *c)
{
	struct admin_session *a = c->admin;
	for (;;) {
		while (c->state == CLIENT_ACTIVE && a->wait == WAIT_NONE &&
		       !wbuf_pending(&c->io.out)) {
			uint8_t type;
			uint32_t len;
			if (!conn_peek_header(&c->io, &type, &len))
				break;
			if (len < 4 || len > ADMIN_MAX_QUERY + 64) {
				client_close(c, "08P01", "invalid message length %u (type %d)", len,
					     type);
				return;
			}
			struct iobuf *b = c->io.in;
			if (iobuf_unparsed(b) < len + 1) {
				if (!iobuf_reserve(&c->io.in, len + 1)) {
					client_close(c, "54000", "message too large");
					return;
				}
				break;
			}
			const uint8_t *body = b->data + b->parsed + 5;
			b->parsed += len + 1;
			b->done = b->parsed;
			handle_message(c, type, body, len - 4);
		}
		if (c->state != CLIENT_ACTIVE)
			return;
		if (!wbuf_pending(&c->io.out))
			break;
		enum io_result r = conn_flush(&c->io);
		if (r == IO_ERROR) {
			client_close(c, NULL, "write to client failed");
			return;
		}
		if (r == IO_AGAIN) {
			conn_write_enable(&c->io, true); /* client_on_write comes back here */
			break;
		}
	}
	/* Back-pressure: read no more while a reply waits to go out or a
	 * command waits for connections. */
	conn_read_enable(&c->io, a->wait == WAIT_NONE && !wbuf_pending(&c->io.out));
	if (c->io.in && iobuf_empty(c->io.in))
		conn_release_buffer(&c->io);
}
