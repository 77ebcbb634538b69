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
 * Each command is one row of commands[] (words, who may run it, where it
 * runs with workers = N, its handler, its help).  A SHOW fills a struct
 * table (typed rows, a merge rule per column) from its worker's state; with
 * workers = N every worker fills one, table_merge combines them, and the
 * answer is rendered once.
 *
 * Must not: reach into sockets other than its own client's (it asks
 * server.c, pool.c, database.c, reload.c), block, or show a secret.
 */
#include "admin.h"

#include <arpa/inet.h>
#include <ctype.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <time.h>
#include <unistd.h>

#include "client.h"
#include "config.h"
#include "database.h"
#include "discovery.h"
#include "log.h"
#include "peers.h"
#include "pool.h"
#include "prepared.h"
#include "proto.h"
#include "runtime.h"
#include "server.h"
#include "stats.h"
#include "table.h"
#include "tls.h"
#include "version.h"
#include "mailbox.h"

#define ADMIN_MAX_QUERY 8192 /* bytes of one admin command */

/* SHOW VERSION: the PgBouncer release whose console pgfleet's answers (the
 * columns of every SHOW), first, so that tools which read a PgBouncer
 * version out of the line (monitoring agents choose their queries by it)
 * find that one; pgfleet's own after. */
#define ADMIN_PGBOUNCER_VERSION "1.25.0"
#define ADMIN_VERSION_STRING "PgBouncer " ADMIN_PGBOUNCER_VERSION " (pgfleet " PGFLEET_VERSION ")"

/* A command that answers once connections are gone. */
enum admin_wait {
	WAIT_NONE,
	WAIT_PAUSE, /* PAUSE: until no server connection is busy */
	WAIT_CLOSE, /* WAIT_CLOSE: until the connections marked to close are gone */
	WAIT_WORKERS, /* workers = N: until every worker has answered */
};

/*
 * workers = N: a command runs on every worker, in its own thread.  A SHOW
 * fills part[its index] with its rows; any other command runs on a shadow
 * session writing its answer into out[its index].  The asking worker
 * merges the parts (or takes its own answer) once all have answered.  Only
 * the asking worker touches c and pending; part[i] and out[i] are written
 * by worker i before it posts its reply (the mailbox's lock orders the
 * two).
 */
struct fanout {
	int origin;
	struct client *c; /* NULL once the client has left */
	int pending;
	bool full;
	const struct admin_cmd *command;
	uint64_t client_id; /* the asking client's id (KILL_CLIENT may not end it) */
	char user[NAME_MAX_LEN];
	char cmd[ADMIN_MAX_QUERY];
	struct wbuf out[WORKER_MAX];
	struct table part[WORKER_MAX];
};

struct admin_session {
	bool full;         /* admin_users: everything; stats_users: SHOW only */
	bool trusted;      /* "pgbouncer" on the Unix socket, same OS user (admin_login_trusted) */
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

bool admin_login_trusted(struct client *c)
{
	if (strcmp(c->user, "pgbouncer") != 0 || c->addr.sa.sa_family != AF_UNIX)
		return false;
	struct ucred cred;
	socklen_t len = sizeof(cred);
	if (getsockopt(c->io.fd, SOL_SOCKET, SO_PEERCRED, &cred, &len) != 0 ||
	    len != sizeof(cred) || cred.uid != geteuid())
		return false;
	c->admin->trusted = true;
	return true;
}

void admin_login_done(struct client *c)
{
	bool full = c->admin->trusted || config_list_has(fleet.cfg.admin_users, c->user);
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
		 full ? "admin" : "stats", "auth", c->admin->trusted ? "unix-socket-peer" : "password",
		 NULL);
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

/* A SHOW's columns: PgBouncer's names and types (text, int4, int8,
 * numeric) and how the rows of several workers combine (table.h). */
#define COL_TEXT(name, merge) {name, TABLE_TEXT, merge, TABLE_OID_TEXT}
#define COL_INT4(name, merge) {name, TABLE_INT, merge, TABLE_OID_INT4}
#define COL_INT8(name, merge) {name, TABLE_INT, merge, TABLE_OID_INT8}
/* An integer that PgBouncer types numeric (SHOW STATS). */
#define COL_NUMERIC(name, merge) {name, TABLE_INT, merge, TABLE_OID_NUMERIC}
#define COL_REAL(name, merge) {name, TABLE_REAL, merge, TABLE_OID_NUMERIC}

#define NCOLS(a) ((int)(sizeof(a) / sizeof((a)[0])))

/* The row being filled, cell by cell in column order. */
struct row {
	struct table *t;
	int col;
};

static struct row row_begin(struct table *t)
{
	(void)table_add_row(t); /* out of memory: t->oom, and the puts do nothing */
	return (struct row){t, 0};
}

static void put_text(struct row *r, const char *s)
{
	table_text(r->t, r->col++, s); /* NULL: SQL NULL */
}

static void put_int(struct row *r, long long v)
{
	table_int(r->t, r->col++, v);
}

/* This instance's share of a fleet-wide limit (pool_share): NULL for none. */
static void put_share(struct row *r, int share)
{
	if (share == POOL_NO_LIMIT)
		r->col++; /* the cell stays NULL */
	else
		put_int(r, share);
}

static void put_real(struct row *r, double v)
{
	table_real(r->t, r->col++, v);
}

static void put_fmt(struct row *r, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

static void put_fmt(struct row *r, const char *fmt, ...)
{
	char buf[256];
	va_list ap;
	va_start(ap, fmt);
	vsnprintf(buf, sizeof(buf), fmt, ap);
	va_end(ap);
	put_text(r, buf);
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

/* The columns SHOW CLIENTS, SHOW SERVERS and SHOW SOCKETS share: PgBouncer
 * 1.25's, in its order.  A connection lives on one worker: no key, the
 * workers' rows are listed one after the other. */
#define SOCKET_COLS                                                                                \
	COL_TEXT("type", TABLE_FIRST), COL_TEXT("user", TABLE_FIRST),                              \
		COL_TEXT("database", TABLE_FIRST), COL_TEXT("replication", TABLE_FIRST),           \
		COL_TEXT("state", TABLE_FIRST), COL_TEXT("addr", TABLE_FIRST),                     \
		COL_INT4("port", TABLE_FIRST), COL_TEXT("local_addr", TABLE_FIRST),                \
		COL_INT4("local_port", TABLE_FIRST), COL_TEXT("connect_time", TABLE_FIRST),        \
		COL_TEXT("request_time", TABLE_FIRST), COL_INT4("wait", TABLE_FIRST),              \
		COL_INT4("wait_us", TABLE_FIRST), COL_INT4("close_needed", TABLE_FIRST),           \
		COL_TEXT("ptr", TABLE_FIRST), COL_TEXT("link", TABLE_FIRST),                       \
		COL_INT4("remote_pid", TABLE_FIRST), COL_TEXT("tls", TABLE_FIRST),                 \
		COL_TEXT("application_name", TABLE_FIRST),                                         \
		COL_INT4("prepared_statements", TABLE_FIRST), COL_INT8("id", TABLE_FIRST)

/* PgBouncer 1.25's SHOW CLIENTS. */
static const struct table_col clients_cols[] = {
	SOCKET_COLS,
};

/* PgBouncer's, then pgfleet's own. */
static const struct table_col servers_cols[] = {
	SOCKET_COLS,
	COL_TEXT("replica", TABLE_FIRST),
	COL_TEXT("role", TABLE_FIRST),
};

/* SHOW SOCKETS and SHOW ACTIVE_SOCKETS: PgBouncer's debug columns follow. */
static const struct table_col sockets_cols[] = {
	SOCKET_COLS,
	COL_INT4("recv_pos", TABLE_FIRST),
	COL_INT4("pkt_pos", TABLE_FIRST),
	COL_INT4("pkt_remain", TABLE_FIRST),
	COL_INT4("send_pos", TABLE_FIRST),
	COL_INT4("send_remain", TABLE_FIRST),
	COL_INT4("pkt_avail", TABLE_FIRST),
	COL_INT4("send_avail", TABLE_FIRST),
};

struct show_ctx {
	struct table *t;
	bool sockets; /* SHOW SOCKETS: raw state names and buffer columns */
	bool active_only; /* SHOW ACTIVE_SOCKETS: only those with bytes buffered */
};

/* Has the connection bytes in its buffers (SHOW ACTIVE_SOCKETS)? */
static bool conn_busy(const struct conn *io)
{
	const struct iobuf *b = io->in;
	return (b && b->recv != b->done) || io->out.len != io->out.sent || io->pkt_remain;
}

static void put_buffers(struct row *w, const struct conn *io)
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
	if (x->active_only && !conn_busy(&c->io))
		return;
	char addr[64], laddr[64], ct[32], rt[32], tls[96], st[24];
	int port = split_addr(&c->addr, addr, sizeof(addr));
	int lport = local_addr(c->io.fd, laddr, sizeof(laddr));
	fmt_time(c->connect_time, ct, sizeof(ct));
	fmt_time(c->request_time, rt, sizeof(rt));
	tls_describe(&c->io, tls, sizeof(tls));
	double waited = c->state == CLIENT_WAITING ? fleet_now() - c->wait_start : 0;
	if (waited < 0)
		waited = 0;
	/* PgBouncer: an active client without a server connection is idle. */
	if (!x->sockets && strcmp(state, "active") == 0 && !c->link)
		state = "idle";
	snprintf(st, sizeof(st), "%s%s", x->sockets ? "cl_" : "", state);
	struct row r = row_begin(x->t);
	struct row *w = &r;
	put_text(w, "C");
	put_text(w, c->user);
	put_text(w, c->dbname);
	put_text(w, "none"); /* replication connections are refused at login */
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
	put_int(w, c->stmts ? prepared_client_count(c->stmts) : 0);
	put_int(w, (long long)c->id);
	if (x->sockets)
		put_buffers(w, &c->io);
}

static void server_row(struct server *s, const char *state, void *arg)
{
	struct show_ctx *x = arg;
	if (x->active_only && !conn_busy(&s->io))
		return;
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
	struct row row = row_begin(x->t);
	struct row *w = &row;
	put_text(w, "S");
	put_text(w, server_login_user(p));
	put_text(w, p->group->db->name);
	put_text(w, "none");
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
	put_text(w, s->link ? app_name(s->link) : "");
	put_int(w, s->stmts ? prepared_server_count(s->stmts) : 0);
	put_int(w, (long long)s->id);
	if (x->sockets) {
		put_buffers(w, &s->io);
	} else {
		put_text(w, r->addr_str);
		put_text(w, replica_role_name(r->role));
	}
}

static void show_clients(struct table *t)
{
	struct show_ctx x = {t, false, false};
	foreach_client(client_row, &x, false);
}

static void show_servers(struct table *t)
{
	struct show_ctx x = {t, false, false};
	foreach_server(server_row, &x);
}

static void show_sockets(struct table *t)
{
	struct show_ctx x = {t, true, false};
	foreach_client(client_row, &x, true);
	foreach_server(server_row, &x);
}

static void show_active_sockets(struct table *t)
{
	struct show_ctx x = {t, true, true};
	foreach_client(client_row, &x, true);
	foreach_server(server_row, &x);
}

/* One row per database, each worker has them all: the configuration from
 * the first worker, connections summed.  PgBouncer 1.25's columns, then
 * pgfleet's `reserve_pool` (PgBouncer's name before 1.24, which
 * pgbouncer_exporter still reads). */
static const struct table_col databases_cols[] = {
	COL_TEXT("name", TABLE_KEY),
	COL_TEXT("host", TABLE_FIRST),
	COL_INT4("port", TABLE_FIRST),
	COL_TEXT("database", TABLE_FIRST),
	COL_TEXT("force_user", TABLE_FIRST),
	COL_INT4("pool_size", TABLE_FIRST),
	COL_INT4("min_pool_size", TABLE_FIRST),
	COL_INT4("reserve_pool_size", TABLE_FIRST),
	COL_INT4("server_lifetime", TABLE_FIRST),
	COL_TEXT("pool_mode", TABLE_FIRST),
	COL_TEXT("load_balance_hosts", TABLE_FIRST),
	COL_INT4("max_connections", TABLE_FIRST),
	COL_INT4("current_connections", TABLE_SUM),
	COL_INT4("max_client_connections", TABLE_FIRST),
	COL_INT4("current_client_connections", TABLE_SUM),
	COL_INT4("paused", TABLE_FIRST),
	COL_INT4("disabled", TABLE_FIRST),
	COL_INT4("reserve_pool", TABLE_FIRST),
	COL_INT4("fleet_share", TABLE_FIRST),
	COL_INT4("primaries", TABLE_FIRST),
};

/* Logged-in clients of a database (its pool groups' lists). */
static int db_clients(const struct database *db)
{
	int n = 0;
	struct list *git;
	list_for_each(git, &db->groups) {
		const struct pool_group *g = container_of(git, struct pool_group, node);
		n += g->active.count + g->waiting.count;
	}
	return n;
}

static void show_databases(struct table *t)
{
	struct list *it, *rit;
	list_for_each(it, &fleet.databases) {
		struct database *db = container_of(it, struct database, node);
		const struct db_config *cfg = db->cfg;
		int conns = 0;
		list_for_each(rit, &db->replicas) {
			conns += container_of(rit, struct replica, node)->server_conns;
		}
		struct row r = row_begin(t);
		struct row *w = &r;
		put_text(w, db->name);
		put_text(w, cfg && cfg->host ? cfg->host : "");
		put_int(w, cfg ? cfg->port : 5432);
		put_text(w, db->dbname);
		put_text(w, cfg && cfg->user ? cfg->user : "");
		put_int(w, db->pool_size);
		put_int(w, pool_min_size(db));
		put_int(w, pool_reserve_size(db));
		put_int(w, (long long)(db->cfg && db->cfg->server_lifetime >= 0
					       ? db->cfg->server_lifetime
					       : fleet.cfg.server_lifetime));
		put_text(w, config_pool_mode_name(db->pool_mode));
		/* pgfleet balances over a host list by load_balance, not
		 * PgBouncer's load_balance_hosts: NULL, as PgBouncer shows
		 * for a single host. */
		put_text(w, NULL);
		put_int(w, pool_db_max_connections(db));
		put_int(w, conns);
		put_int(w, 0); /* max_db_client_connections: no such limit */
		put_int(w, db_clients(db));
		put_int(w, db->paused ? 1 : 0);
		put_int(w, db->disabled || db->cfg_own ? 1 : 0);
		put_int(w, pool_reserve_size(db));
		put_share(w, pool_db_share(db));
		put_int(w, database_primaries(db));
	}
}

/* One row per (database, user): counts summed, the longest wait kept. */
static const struct table_col pools_cols[] = {
	COL_TEXT("database", TABLE_KEY),
	COL_TEXT("user", TABLE_KEY),
	COL_INT4("cl_active", TABLE_SUM),
	COL_INT4("cl_waiting", TABLE_SUM),
	COL_INT4("cl_active_cancel_req", TABLE_SUM),
	COL_INT4("cl_waiting_cancel_req", TABLE_SUM),
	COL_INT4("sv_active", TABLE_SUM),
	COL_INT4("sv_active_cancel", TABLE_SUM),
	COL_INT4("sv_being_canceled", TABLE_SUM),
	COL_INT4("sv_idle", TABLE_SUM),
	COL_INT4("sv_used", TABLE_SUM),
	COL_INT4("sv_tested", TABLE_SUM),
	COL_INT4("sv_login", TABLE_SUM),
	COL_INT4("maxwait", TABLE_MAX),
	COL_INT4("maxwait_us", TABLE_MAX),
	COL_TEXT("pool_mode", TABLE_FIRST),
	COL_TEXT("load_balance_hosts", TABLE_FIRST),
};

static void pool_row(struct table *t, struct database *db, struct pool_group *g, double now)
{
	int active = 0, idle = 0, login = 0;
	struct list *pit;
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
	struct row r = row_begin(t);
	struct row *w = &r;
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
	put_text(w, NULL); /* as in SHOW DATABASES */
}

static void show_pools(struct table *t)
{
	double now = fleet_now();
	struct list *dit, *git;
	list_for_each(dit, &fleet.databases) {
		struct database *db = container_of(dit, struct database, node);
		list_for_each(git, &db->groups) {
			pool_row(t, db, container_of(git, struct pool_group, node), now);
		}
	}
}

/*
 * SHOW STATS, STATS_TOTALS, STATS_AVERAGES, TOTALS: PgBouncer 1.25's
 * columns in its order, each read from a counter of STATS_COUNTERS
 * (stats.h), or 0 for what pgfleet does not count (prepared statement
 * Parse/Bind messages, client logins).  Totals and rates add up over
 * workers; a time per transaction (query, assignment) is the mean of the
 * workers that had any.
 */
#define STATS_NONE (-2) /* not counted by pgfleet: always 0 */

struct stats_col {
	const char *total;      /* SHOW STATS: the total's column */
	const char *avg;        /* SHOW STATS: the average's column */
	const char *view_total; /* SHOW STATS_TOTALS */
	const char *view_avg;   /* SHOW STATS_AVERAGES (PgBouncer keeps avg_ on three) */
	int field;              /* STATS_F_..., or STATS_NONE */
};

static const struct stats_col stats_map[] = {
	{"total_server_assignment_count", "avg_server_assignment_count", "server_assignment_count",
	 "server_assignment_count", STATS_F_assignments},
	{"total_xact_count", "avg_xact_count", "xact_count", "xact_count", STATS_F_xacts},
	{"total_query_count", "avg_query_count", "query_count", "query_count", STATS_F_queries},
	{"total_received", "avg_recv", "bytes_received", "bytes_received", STATS_F_bytes_recv},
	{"total_sent", "avg_sent", "bytes_sent", "bytes_sent", STATS_F_bytes_sent},
	{"total_xact_time", "avg_xact_time", "xact_time", "xact_time", STATS_F_xact_us},
	{"total_query_time", "avg_query_time", "query_time", "query_time", STATS_F_query_us},
	{"total_wait_time", "avg_wait_time", "wait_time", "wait_time", STATS_F_wait_us},
	{"total_client_parse_count", "avg_client_parse_count", "client_parse_count",
	 "avg_client_parse_count", STATS_NONE},
	{"total_server_parse_count", "avg_server_parse_count", "server_parse_count",
	 "avg_server_parse_count", STATS_NONE},
	{"total_bind_count", "avg_bind_count", "bind_count", "avg_bind_count", STATS_NONE},
	{"total_client_connect_count", "avg_client_connect_count", "client_connect_count",
	 "client_connect_count", STATS_NONE},
};

#define STATS_NMAP NCOLS(stats_map)

enum stats_view { VIEW_BOTH, VIEW_TOTALS, VIEW_AVERAGES };

/* Rates add up over workers; a time per transaction (query, assignment)
 * is a mean, in SHOW STATS and STATS_AVERAGES alike. */
static enum table_merge stats_avg_merge(int field)
{
	return field >= 0 && stats_fields[field].per != STATS_F_second ? TABLE_MEAN : TABLE_SUM;
}

/* Built once (stats_cols_build), then only read. */
static struct table_col stats_cols[1 + 2 * STATS_NMAP];
static struct table_col stats_totals_cols[1 + STATS_NMAP];
static struct table_col stats_averages_cols[1 + STATS_NMAP];
static pthread_once_t stats_cols_once = PTHREAD_ONCE_INIT;

static void stats_cols_build(void)
{
	stats_cols[0] = (struct table_col)COL_TEXT("database", TABLE_KEY);
	stats_totals_cols[0] = stats_cols[0];
	stats_averages_cols[0] = stats_cols[0];
	for (int i = 0; i < STATS_NMAP; i++) {
		const struct stats_col *m = &stats_map[i];
		enum table_merge am = stats_avg_merge(m->field);
		stats_cols[1 + i] = (struct table_col)COL_NUMERIC(m->total, TABLE_SUM);
		stats_cols[1 + STATS_NMAP + i] = (struct table_col)COL_NUMERIC(m->avg, am);
		stats_totals_cols[1 + i] = (struct table_col)COL_NUMERIC(m->view_total, TABLE_SUM);
		stats_averages_cols[1 + i] = (struct table_col)COL_NUMERIC(m->view_avg, am);
	}
}

static long long stats_total_of(const struct stats *s, int field)
{
	return field >= 0 ? (long long)stats_get(s, field) : 0;
}

static long long stats_avg_of(const struct stats_avg *a, int field)
{
	return field >= 0 ? (long long)stats_avg_get(a, field) : 0;
}

static void show_stats_view(struct table *t, enum stats_view view)
{
	struct list *it;
	list_for_each(it, &fleet.databases) {
		struct database *db = container_of(it, struct database, node);
		struct stats s;
		stats_database_totals(db, &s);
		struct row r = row_begin(t);
		put_text(&r, db->name);
		if (view != VIEW_AVERAGES)
			for (int i = 0; i < STATS_NMAP; i++)
				put_int(&r, stats_total_of(&s, stats_map[i].field));
		if (view != VIEW_TOTALS)
			for (int i = 0; i < STATS_NMAP; i++)
				put_int(&r, stats_avg_of(&db->avg, stats_map[i].field));
	}
}

static void show_stats(struct table *t)
{
	show_stats_view(t, VIEW_BOTH);
}

static void show_stats_totals(struct table *t)
{
	show_stats_view(t, VIEW_TOTALS);
}

static void show_stats_averages(struct table *t)
{
	show_stats_view(t, VIEW_AVERAGES);
}

/* SHOW TOTALS: SHOW STATS over every database, one row per column.  Each
 * worker adds its databases up; rows merge by name (a time per
 * transaction as the mean of the workers that had any). */
static const struct table_col totals_cols[] = {
	COL_TEXT("name", TABLE_KEY),
	COL_NUMERIC("value", TABLE_SUM),
};

static void show_totals(struct table *t)
{
	struct stats sum;
	uint64_t avg[STATS_NFIELDS];
	int n_avg[STATS_NFIELDS];
	memset(&sum, 0, sizeof(sum));
	memset(avg, 0, sizeof(avg));
	memset(n_avg, 0, sizeof(n_avg));
	struct list *it;
	list_for_each(it, &fleet.databases) {
		struct database *db = container_of(it, struct database, node);
		struct stats s;
		stats_database_totals(db, &s);
		stats_add(&sum, &s);
		for (int f = 0; f < STATS_NFIELDS; f++) {
			uint64_t v = stats_avg_get(&db->avg, f);
			avg[f] += v;
			n_avg[f] += v != 0;
		}
	}
	for (int i = 0; i < STATS_NMAP; i++) {
		struct row r = row_begin(t);
		put_text(&r, stats_map[i].total);
		put_int(&r, stats_total_of(&sum, stats_map[i].field));
	}
	for (int i = 0; i < STATS_NMAP; i++) {
		int f = stats_map[i].field;
		long long v = 0;
		if (f >= 0) {
			/* A time per transaction: the mean over the databases. */
			bool mean = stats_avg_merge(f) == TABLE_MEAN;
			v = (long long)(mean && n_avg[f] ? avg[f] / (uint64_t)n_avg[f] : avg[f]);
		}
		struct row r = row_begin(t);
		put_text(&r, stats_map[i].avg);
		put_int(&r, v);
	}
}

/* SHOW TOTALS over workers: by row name, sums except the times per
 * transaction, which are the mean of the workers that had any. */
static void totals_merge(struct table *dst, const struct table *src)
{
	if (src->oom)
		dst->oom = true;
	for (size_t r = 0; r < src->nrows; r++) {
		const char *name = table_at(src, r, 0)->v.s;
		int64_t v = table_at(src, r, 1)->v.i;
		size_t d = 0;
		while (d < dst->nrows && strcmp(table_at(dst, d, 0)->v.s, name) != 0)
			d++;
		bool mean = false;
		for (int i = 0; i < STATS_NMAP; i++)
			if (strcmp(stats_map[i].avg, name) == 0)
				mean = stats_avg_merge(stats_map[i].field) == TABLE_MEAN;
		if (d == dst->nrows) {
			struct row row = row_begin(dst);
			put_text(&row, name);
			put_int(&row, v);
			if (dst->oom)
				return;
			d = dst->nrows - 1;
			/* A mean's running sum and count, as TABLE_MEAN keeps them. */
			struct table_cell *cell = &dst->cells[d * (size_t)dst->ncols + 1];
			cell->n = v != 0;
			cell->sum = (double)v;
			continue;
		}
		struct table_cell *cell = &dst->cells[d * (size_t)dst->ncols + 1];
		if (!mean) {
			cell->v.i += v;
		} else if (v) {
			cell->n++;
			cell->sum += (double)v;
			cell->v.i = (int64_t)(cell->sum / cell->n + 0.5);
		}
	}
}

/* PgBouncer 1.25's SHOW USERS.  pgfleet has no per-user overrides
 * (pool_size, reserve_pool_size, pool_mode: NULL, as PgBouncer shows an
 * override not set) and no client limit per user (0). */
static const struct table_col users_cols[] = {
	COL_TEXT("name", TABLE_KEY),
	COL_TEXT("pool_size", TABLE_FIRST),
	COL_TEXT("reserve_pool_size", TABLE_FIRST),
	COL_TEXT("pool_mode", TABLE_FIRST),
	COL_INT4("max_user_connections", TABLE_FIRST),
	COL_INT4("current_connections", TABLE_SUM),
	COL_INT4("max_user_client_connections", TABLE_FIRST),
	COL_INT4("current_client_connections", TABLE_SUM),
	COL_INT4("fleet_share", TABLE_FIRST),
};

/* Is g the first group (of any database) with its user? */
static bool first_with_user(const struct list *git, const char *user)
{
	struct list *d2, *g2;
	list_for_each(d2, &fleet.databases) {
		struct database *db2 = container_of(d2, struct database, node);
		list_for_each(g2, &db2->groups) {
			if (g2 == git)
				return true;
			if (strcmp(container_of(g2, struct pool_group, node)->user, user) == 0)
				return false;
		}
	}
	return true;
}

/* A user's server and client connections, over every database. */
static void user_counts(const char *user, int *servers, int *clients)
{
	struct list *dit, *git, *pit;
	*servers = *clients = 0;
	list_for_each(dit, &fleet.databases) {
		struct database *db = container_of(dit, struct database, node);
		list_for_each(git, &db->groups) {
			struct pool_group *g = container_of(git, struct pool_group, node);
			if (strcmp(g->user, user) != 0)
				continue;
			*clients += g->active.count + g->waiting.count;
			list_for_each(pit, &g->pools) {
				*servers += pool_total(container_of(pit, struct pool, group_node));
			}
		}
	}
}

static void user_row(struct table *t, const char *name)
{
	int servers, clients;
	user_counts(name, &servers, &clients);
	struct row r = row_begin(t);
	put_text(&r, name);
	put_text(&r, NULL);
	put_text(&r, NULL);
	put_text(&r, NULL);
	/* its [users] limit, else the global one (0: none) */
	const struct user_config *uc = config_find_user_cfg(&fleet.cfg, name);
	int max = uc && uc->max_user_connections >= 0 ? uc->max_user_connections
						      : (int)fleet.cfg.max_user_connections;
	put_int(&r, max);
	put_int(&r, servers);
	put_int(&r, 0);
	put_int(&r, clients);
	put_share(&r, pool_share(max));
}

static void show_users(struct table *t)
{
	for (size_t i = 0; i < fleet.cfg.n_users; i++)
		user_row(t, fleet.cfg.users[i].name);
	/* Users of pools that no auth_file line names (trust). */
	struct list *dit, *git;
	list_for_each(dit, &fleet.databases) {
		struct database *db = container_of(dit, struct database, node);
		list_for_each(git, &db->groups) {
			struct pool_group *g = container_of(git, struct pool_group, node);
			if (config_find_user(&fleet.cfg, g->user) || !first_with_user(git, g->user))
				continue;
			user_row(t, g->user);
		}
	}
}

static const struct table_col config_cols[] = {
	COL_TEXT("key", TABLE_KEY),
	COL_TEXT("value", TABLE_FIRST),
	COL_TEXT("default", TABLE_FIRST),
	COL_TEXT("changeable", TABLE_FIRST),
};

static void show_config(struct table *t)
{
	size_t n = config_setting_count();
	for (size_t i = 0; i < n; i++) {
		const char *name = config_setting_name(i);
		char value[1024];
		config_setting_value(&fleet.cfg, i, value, sizeof(value));
		if ((strstr(name, "password") || strstr(name, "secret")) && *value)
			snprintf(value, sizeof(value), "%s", "********");
		struct row r = row_begin(t);
		put_text(&r, name);
		put_text(&r, value);
		put_text(&r, config_setting_default(i));
		put_text(&r, fleet_setting_changeable(name) ? "yes" : "no");
	}
}

static const struct table_col dns_hosts_cols[] = {
	COL_TEXT("hostname", TABLE_KEY),
	COL_INT8("ttl", TABLE_FIRST),
	COL_TEXT("addrs", TABLE_FIRST),
};

static void dns_host_row(const struct dns_host_info *h, void *arg)
{
	struct table *t = arg;
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
	struct row r = row_begin(t);
	put_text(&r, h->name);
	/* The answer is re-resolved at most dns_max_ttl after it came. */
	put_int(&r, (long long)fleet.cfg.dns_max_ttl);
	put_text(&r, addrs);
}

static void show_dns_hosts(struct table *t)
{
	discovery_foreach_host(dns_host_row, t);
}

/* c-ares has no zone (SOA serial) tracking: no rows, like PgBouncer built
 * with c-ares. */
static const struct table_col dns_zones_cols[] = {
	COL_TEXT("zonename", TABLE_KEY),
	COL_INT8("serial", TABLE_FIRST),
	COL_INT4("count", TABLE_SUM),
};

static void show_dns_zones(struct table *t)
{
	(void)t;
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

/* "items" merges by the row (lists_merge): no column rule says it. */
static const struct table_col lists_cols[] = {
	COL_TEXT("list", TABLE_KEY),
	COL_INT4("items", TABLE_SUM),
};

static void list_row(struct table *t, const char *name, long long n)
{
	struct row r = row_begin(t);
	put_text(&r, name);
	put_int(&r, n);
}

static void show_lists(struct table *t)
{
	struct counts k;
	count_all(&k);
	int dbs = 0, hosts = 0;
	struct list *it;
	list_for_each(it, &fleet.databases) {
		dbs++;
	}
	discovery_foreach_host(count_host, &hosts);
	list_row(t, "databases", dbs);
	list_row(t, "users", (long long)fleet.cfg.n_users);
	list_row(t, "peers", 0);
	list_row(t, "pools", k.pools);
	list_row(t, "peer_pools", 0);
	list_row(t, "free_clients", 0);
	list_row(t, "used_clients", k.clients);
	list_row(t, "login_clients", k.login_clients);
	list_row(t, "free_servers", 0);
	list_row(t, "used_servers", k.servers);
	list_row(t, "dns_names", hosts);
	list_row(t, "dns_zones", 0);
	list_row(t, "dns_queries", 0);
	list_row(t, "dns_pending", 0);
}

/* SHOW LISTS over workers: the configuration's objects exist in every
 * worker (the largest count), clients and servers each in one (the sum). */
static void lists_merge(struct table *dst, const struct table *src)
{
	static const char *const everywhere[] = {"databases", "users", "peers", "pools",
						 "peer_pools", "dns_names", "dns_zones"};
	if (src->oom)
		dst->oom = true;
	for (size_t r = 0; r < src->nrows; r++) {
		const char *name = table_at(src, r, 0)->v.s;
		int64_t n = table_at(src, r, 1)->v.i;
		size_t d = 0;
		while (d < dst->nrows && strcmp(table_at(dst, d, 0)->v.s, name) != 0)
			d++;
		if (d == dst->nrows) {
			list_row(dst, name, n);
			continue;
		}
		int64_t *items = &dst->cells[d * (size_t)dst->ncols + 1].v.i;
		bool max = false;
		for (size_t i = 0; i < sizeof(everywhere) / sizeof(everywhere[0]); i++)
			max = max || strcmp(name, everywhere[i]) == 0;
		*items = !max ? *items + n : n > *items ? n : *items;
	}
}

static const struct table_col mem_cols[] = {
	COL_TEXT("name", TABLE_KEY),
	COL_INT4("size", TABLE_FIRST),
	COL_INT4("used", TABLE_SUM),
	COL_INT4("free", TABLE_SUM),
	COL_INT4("memtotal", TABLE_SUM),
};

static void mem_row(struct table *t, const char *name, size_t size, size_t used, size_t nfree)
{
	struct row r = row_begin(t);
	put_text(&r, name);
	put_int(&r, (long long)size);
	put_int(&r, (long long)used);
	put_int(&r, (long long)nfree);
	put_int(&r, (long long)(size * (used + nfree)));
}

static void show_mem(struct table *t)
{
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
	mem_row(t, "user_cache", sizeof(struct user_entry), fleet.cfg.n_users, 0);
	mem_row(t, "db_cache", sizeof(struct database), (size_t)dbs, 0);
	mem_row(t, "replica_cache", sizeof(struct replica), (size_t)replicas, 0);
	mem_row(t, "pool_cache", sizeof(struct pool), (size_t)k.pools, 0);
	mem_row(t, "server_cache", sizeof(struct server), (size_t)k.servers, 0);
	mem_row(t, "client_cache", sizeof(struct client), (size_t)fleet.client_count, 0);
	mem_row(t, "iobuf_cache", sizeof(struct iobuf) + IOBUF_SIZE, bused, bfree);
	unsigned sets = param_set_count(); /* sets vary in size: the mean */
	mem_row(t, "param_sets", sets ? param_set_bytes() / sets : sizeof(struct param_set), sets, 0);
}

/* One row per replica, by (database, host, addr, port): every worker checks
 * and uses each replica; its traffic adds up. */
static const struct table_col replicas_cols[] = {
	COL_TEXT("database", TABLE_KEY),
	COL_TEXT("host", TABLE_KEY),
	COL_TEXT("addr", TABLE_KEY),
	COL_INT4("port", TABLE_KEY),
	COL_TEXT("role", TABLE_FIRST),
	COL_TEXT("state", TABLE_FIRST),
	COL_REAL("lag_s", TABLE_FIRST),
	COL_INT4("server_conns", TABLE_SUM),
	COL_INT4("active", TABLE_SUM),
	COL_INT8("xacts", TABLE_SUM),
	COL_INT8("queries", TABLE_SUM),
	COL_INT8("avg_xact_us", TABLE_MEAN),
	COL_TEXT("last_check", TABLE_FIRST),
	COL_TEXT("last_error", TABLE_FIRST),
	COL_INT8("timeline", TABLE_FIRST),
	COL_TEXT("write_primary", TABLE_FIRST),
};

static void replica_row(const struct replica_row *rr, void *arg)
{
	struct row r = row_begin(arg);
	struct row *w = &r;
	put_text(w, rr->database);
	put_text(w, rr->host);
	put_text(w, rr->addr);
	put_int(w, rr->port);
	put_text(w, rr->role);
	put_text(w, rr->state);
	put_real(w, rr->lag_s);
	put_int(w, rr->server_conns);
	put_int(w, rr->active);
	put_int(w, (long long)rr->xacts);
	put_int(w, (long long)rr->queries);
	put_int(w, (long long)rr->avg_xact_us);
	put_text(w, rr->last_check_str);
	put_text(w, rr->last_error);
	put_int(w, (long long)rr->timeline); /* 0: not known (a standby) */
	put_text(w, rr->write_primary ? "yes" : "no");
}

static void show_replicas(struct table *t)
{
	database_foreach_replica_row(replica_row, t);
}

static const struct table_col version_cols[] = {COL_TEXT("version", TABLE_FIRST)};

static void show_version(struct table *t)
{
	struct row r = row_begin(t);
	put_text(&r, ADMIN_VERSION_STRING);
}

/* PgBouncer's SHOW STATE.  pgfleet pauses databases, never the whole
 * process (PAUSE without a name pauses each database): "paused" when every
 * database is; it never suspends. */
static const struct table_col state_cols[] = {
	COL_TEXT("key", TABLE_KEY),
	COL_TEXT("value", TABLE_FIRST),
};

static void show_state(struct table *t)
{
	int dbs = 0, paused = 0;
	struct list *it;
	list_for_each(it, &fleet.databases) {
		dbs++;
		paused += container_of(it, struct database, node)->paused;
	}
	bool all = dbs > 0 && paused == dbs;
	static const char *const keys[] = {"active", "paused", "suspended"};
	const bool vals[] = {!all, all, false};
	for (int i = 0; i < 3; i++) {
		struct row r = row_begin(t);
		put_text(&r, keys[i]);
		put_text(&r, vals[i] ? "yes" : "no");
	}
}

/* PgBouncer's peering (peer_id, [peers]) is refused by the configuration:
 * its SHOWs answer with their columns and no rows. */
/* PgBouncer's four columns, then pgfleet's (issue 20, peers.c).  What each
 * instance holds of a fleet-wide limit is SHOW DATABASES / SHOW USERS'
 * fleet_share (the budget part of issue 20, pool.c): a per-peer share
 * column, if ever wanted, goes after these. */
static const struct table_col peers_cols[] = {
	COL_INT4("peer_id", TABLE_KEY),
	COL_TEXT("host", TABLE_FIRST),
	COL_INT4("port", TABLE_FIRST),
	COL_INT4("pool_size", TABLE_FIRST),
	COL_TEXT("self", TABLE_FIRST),
	COL_TEXT("state", TABLE_FIRST),
	COL_TEXT("last_seen", TABLE_FIRST),
	COL_INT8("cancels_forwarded", TABLE_FIRST),
	COL_INT8("cancels_received", TABLE_FIRST),
};

static void peer_row(const struct peer_info *p, void *arg)
{
	struct table *t = arg;
	char seen[64] = "";
	if (p->last_seen > 0)
		fmt_time(p->last_seen, seen, sizeof(seen));
	struct row r = row_begin(t);
	put_int(&r, p->instance);
	put_text(&r, p->addr);
	put_int(&r, fleet.cfg.peer_port);
	put_int(&r, 0); /* no pool: a peer message is one datagram */
	put_text(&r, p->self ? "yes" : "no");
	put_text(&r, p->live ? "live" : "down");
	put_text(&r, seen);
	put_int(&r, (long long)p->cancels_forwarded);
	put_int(&r, (long long)p->cancels_received);
}

/* The peers table is process-wide: the asking worker shows it all. */
static void show_peers(struct table *t)
{
	peers_foreach(peer_row, t);
}

static const struct table_col peer_pools_cols[] = {
	COL_INT4("peer_id", TABLE_KEY),
	COL_INT4("cl_active_cancel_req", TABLE_SUM),
	COL_INT4("cl_waiting_cancel_req", TABLE_SUM),
	COL_INT4("sv_active_cancel", TABLE_SUM),
	COL_INT4("sv_login", TABLE_SUM),
};

static void show_nothing(struct table *t)
{
	(void)t;
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

/* ---- the command table ------------------------------------------------------- */

/* Who may run a command. */
enum admin_access {
	ACCESS_ADMIN, /* admin_users only */
	ACCESS_STATS, /* stats_users too */
};

/* Where a command runs when workers = N. */
enum admin_spread {
	SPREAD_HERE,   /* the asking worker only: the answer is the same on every
			* worker, or the command tells the others itself */
	SPREAD_EVERY,  /* every worker acts; the asking worker's answer stands */
	SPREAD_MERGED, /* a SHOW: every worker fills its table from its own
			* state; table_merge (or .merge) combines them */
	SPREAD_ANY,    /* every worker tries; the first answer that is not an
			* error stands (KILL_CLIENT: the client is on one worker) */
};

/* What follows a command's words (run_command reads all but ARGS_OWN). */
enum admin_args {
	ARGS_NONE,        /* nothing */
	ARGS_DB,          /* one database name: "<db>" */
	ARGS_DB_OPTIONAL, /* "[<db>]": none means every database */
	ARGS_OWN,         /* the handler reads them; .usage says what they are */
};

struct admin_call;

/*
 * One admin command: a row of commands[].  A SHOW has .fill and its
 * columns (names, types, merge rules): it fills a table with this worker's
 * rows, and the console renders it (workers = N: merges every worker's
 * first).  Any other command has .run, which writes its own answer.
 */
struct admin_cmd {
	const char *words; /* "SHOW POOLS": what the client types, any case */
	const char *usage; /* SHOW HELP's text after the words (ARGS_OWN) */
	bool help_join;    /* listed as "|POOLS" on the help line above */
	bool help_hidden;  /* not in SHOW HELP: a PgBouncer command pgfleet refuses */
	enum admin_access access;
	enum admin_spread spread;
	enum admin_args args;
	bool (*run)(const struct admin_call *a); /* false: answered later (PAUSE) */
	void (*fill)(struct table *t);
	const struct table_col *cols;
	int ncols;
	void (*merge)(struct table *dst, const struct table *src); /* NULL: table_merge */
};

/* One command being run. */
struct admin_call {
	struct client *c;
	const struct admin_cmd *cmd;
	const char *verb;    /* its first word as typed, lower-cased */
	const char *args;    /* what follows its words */
	struct database *db; /* ARGS_DB*: the one named; NULL: every database */
};

static bool command_done(const struct admin_call *a)
{
	command_complete(&a->c->io.out, a->cmd->words);
	return true;
}

/* SET's value: 'quoted' (a doubled quote stands for one), "quoted", or the
 * rest of the line (false: an error was sent). */
static bool set_value(struct client *c, const char *key, const char *q, char *value, size_t len)
{
	size_t n = 0;
	if (*q == '\'' || *q == '"') {
		char quote = *q++;
		for (;; q++) {
			if (!*q) {
				admin_error(c, "42601", "unterminated quoted value");
				return false;
			}
			if (*q == quote) {
				if (q[1] != quote)
					break;
				q++;
			}
			if (n + 1 >= len) {
				admin_error(c, "22023", "value for \"%s\" is too long", key);
				return false;
			}
			value[n++] = *q;
		}
		if (!at_end(q + 1)) {
			admin_error(c, "42601", "syntax: SET key = value");
			return false;
		}
	} else {
		n = strlen(q);
		while (n && isspace((unsigned char)q[n - 1]))
			n--;
		if (n >= len) {
			admin_error(c, "22023", "value for \"%s\" is too long", key);
			return false;
		}
		memcpy(value, q, n);
	}
	value[n] = 0;
	return true;
}

/* SET key = value, SET key TO value. */
static bool cmd_set(const struct admin_call *a)
{
	struct client *c = a->c;
	char key[64], value[1024], err[256];
	const char *q = next_word(a->args, key, sizeof(key));
	if (q) {
		while (isspace((unsigned char)*q))
			q++;
		q = *q == '=' ? q + 1
		    : strncasecmp(q, "to", 2) == 0 && isspace((unsigned char)q[2]) ? q + 2
										     : NULL;
	}
	if (!q) {
		admin_error(c, "42601", "syntax: SET key = value");
		return true;
	}
	while (isspace((unsigned char)*q))
		q++;
	if (!set_value(c, key, q, value, sizeof(value)))
		return true;
	if (config_setting_find(key) < 0) {
		if (!config_setting_known(key)) {
			admin_error(c, "42704", "unrecognized setting \"%s\", see SHOW CONFIG;", key);
			return true;
		}
		/* PgBouncer's, not pgfleet's: its default is a no-op. */
		if (!config_set(&fleet.cfg, key, value, err, sizeof(err))) {
			admin_error(c, "0A000", "setting \"%s\": %s", key, err);
			return true;
		}
		return command_done(a);
	}
	if (!fleet_setting_changeable(key)) {
		admin_error(c, "55P02",
			    "setting \"%s\" cannot be changed while pgfleet runs (restart "
			    "needed)",
			    key);
		return true;
	}
	if (!config_set(&fleet.cfg, key, value, err, sizeof(err))) {
		admin_error(c, "22023", "invalid value for \"%s\": %s", key, err);
		return true;
	}
	fleet_settings_changed();
	log_info("setting changed", "key", key, "by", c->user, NULL);
	return command_done(a);
}

static bool cmd_refresh(const struct admin_call *a)
{
	char what[16];
	const char *q = next_word(a->args, what, sizeof(what));
	if (!q || strcmp(what, "dns") != 0 || !at_end(q)) {
		admin_error(a->c, "42601", "syntax: REFRESH DNS");
		return true;
	}
	discovery_refresh();
	return command_done(a);
}

static bool cmd_reload(const struct admin_call *a)
{
	char err[400];
	if (!fleet_reload(err, sizeof(err))) {
		admin_error(a->c, "F0000", "RELOAD failed: %s", err);
		return true;
	}
	return command_done(a);
}

/* SHUTDOWN [WAIT_FOR_SERVERS]: pgfleet's one shutdown, the drain of SIGTERM
 * (new logins refused, open transactions finish, up to shutdown_timeout),
 * which is PgBouncer's WAIT_FOR_SERVERS.  PgBouncer's WAIT_FOR_CLIENTS
 * (wait, without a bound, until every client has left) is refused. */
static bool cmd_shutdown(const struct admin_call *a)
{
	char mode[32];
	const char *q = next_word(a->args, mode, sizeof(mode));
	if (q && at_end(q) && strcmp(mode, "wait_for_clients") == 0) {
		admin_error(a->c, "0A000",
			    "SHUTDOWN WAIT_FOR_CLIENTS is not supported: pgfleet's SHUTDOWN lets "
			    "open transactions finish (up to shutdown_timeout), then closes every "
			    "client; use SHUTDOWN or SHUTDOWN WAIT_FOR_SERVERS");
		return true;
	}
	if (!at_end(a->args) && !(q && at_end(q) && strcmp(mode, "wait_for_servers") == 0)) {
		admin_error(a->c, "42601", "syntax: SHUTDOWN [WAIT_FOR_SERVERS]");
		return true;
	}
	log_info("admin SHUTDOWN", "by", a->c->user, NULL);
	command_done(a);
	fleet_shutdown("admin SHUTDOWN");
	return true;
}

static bool cmd_pause(const struct admin_call *a)
{
	struct list *it;
	list_for_each(it, &fleet.databases) {
		struct database *d = container_of(it, struct database, node);
		if (!a->db || d == a->db)
			d->paused = true;
	}
	if (busy_servers(a->db)) {
		start_wait(a->c, WAIT_PAUSE, a->db ? a->db->name : NULL);
		return false;
	}
	return command_done(a);
}

static bool cmd_resume(const struct admin_call *a)
{
	struct list *it;
	list_for_each(it, &fleet.databases) {
		struct database *d = container_of(it, struct database, node);
		if (!a->db || d == a->db)
			resume_db(d);
	}
	return command_done(a);
}

static bool cmd_disable(const struct admin_call *a)
{
	a->db->disabled = true;
	return command_done(a);
}

static bool cmd_enable(const struct admin_call *a)
{
	a->db->disabled = false;
	return command_done(a);
}

static bool cmd_reconnect(const struct admin_call *a)
{
	struct list *it;
	list_for_each(it, &fleet.databases) {
		struct database *d = container_of(it, struct database, node);
		if (!a->db || d == a->db)
			database_reconnect(d, "RECONNECT");
	}
	return command_done(a);
}

/* KILL [db]: without a name every database (never the console). */
static bool cmd_kill(const struct admin_call *a)
{
	struct list *it;
	list_for_each(it, &fleet.databases) {
		struct database *d = container_of(it, struct database, node);
		if (!a->db || d == a->db)
			kill_db(d);
	}
	return command_done(a);
}

struct find_id {
	uint64_t id;
	struct client *found;
};

static void match_client(struct client *c, const char *state, void *arg)
{
	struct find_id *f = arg;
	(void)state;
	if (c->id == f->id && !f->found)
		f->found = c;
}

/* KILL_CLIENT id: the client SHOW CLIENTS lists with that id, and its
 * server connection (a client in mid-transaction leaves the server
 * connection's state unknown, so it is closed with it). */
static bool cmd_kill_client(const struct admin_call *a)
{
	char arg[32];
	const char *q = next_word(a->args, arg, sizeof(arg));
	char *end = NULL;
	unsigned long long id = q ? strtoull(arg, &end, 10) : 0;
	if (!q || !at_end(q) || !isdigit((unsigned char)arg[0]) || !end || *end) {
		admin_error(a->c, "08P01", "invalid client pointer supplied"); /* PgBouncer's */
		return true;
	}
	struct find_id f = {(uint64_t)id, NULL};
	foreach_client(match_client, &f, true);
	if (!f.found) {
		admin_error(a->c, "08P01", "client not found");
		return true;
	}
	const struct admin_session *s0 = a->c->admin;
	uint64_t self = s0->shadow && s0->fan ? s0->fan->client_id : a->c->id;
	if (f.found->id == self) {
		/* The answer would have nobody to go to: PgBouncer closes the
		 * asking session too; pgfleet says why instead. */
		admin_error(a->c, "42601", "KILL_CLIENT cannot end the session that runs it");
		return true;
	}
	log_info("admin KILL_CLIENT", "client", f.found->addr_str, "user", f.found->user, "by",
		 a->c->user, NULL);
	struct client *victim = f.found;
	struct server *s = victim->link;
	if (s) {
		/* Unlinked first (as server_close does), so that each side
		 * closes with its own reason. */
		victim->link = NULL;
		s->link = NULL;
	}
	client_close(victim, "57P01", "admin forced disconnect");
	if (s)
		server_close(s, "KILL_CLIENT");
	return command_done(a);
}

static bool cmd_wait_close(const struct admin_call *a)
{
	if (closing_servers(a->db)) {
		start_wait(a->c, WAIT_CLOSE, a->db ? a->db->name : NULL);
		return false;
	}
	return command_done(a);
}

static bool show_help(const struct admin_call *a);

/* PgBouncer's SHOW FDS and SUSPEND serve its online restart (-R: a new
 * process takes the sockets over), which pgfleet does not do: refused,
 * naming what to use instead. */
static bool no_online_restart(const struct admin_call *a)
{
	admin_error(a->c, "0A000",
		    "%s is not supported: pgfleet has no online restart (use so_reuseport "
		    "and a rolling restart)",
		    a->cmd->words);
	return true;
}

#define COLUMNS(a) .cols = (a), .ncols = NCOLS(a)

/*
 * Every admin command, in SHOW HELP's order.  Adding one is adding its row
 * (and its handler, or its fill function and columns): the lookup, the
 * access check, SHOW HELP and the fan-out to workers all read this.
 */
static const struct admin_cmd commands[] = {
	{"SHOW HELP", .access = ACCESS_STATS, .run = show_help},
	{"SHOW CONFIG", .help_join = true, .access = ACCESS_STATS, .fill = show_config,
	 COLUMNS(config_cols)},
	{"SHOW DATABASES", .help_join = true, .access = ACCESS_STATS, .spread = SPREAD_MERGED,
	 .fill = show_databases, COLUMNS(databases_cols)},
	{"SHOW POOLS", .help_join = true, .access = ACCESS_STATS, .spread = SPREAD_MERGED,
	 .fill = show_pools, COLUMNS(pools_cols)},
	{"SHOW CLIENTS", .help_join = true, .access = ACCESS_STATS, .spread = SPREAD_MERGED,
	 .fill = show_clients, COLUMNS(clients_cols)},
	{"SHOW SERVERS", .help_join = true, .access = ACCESS_STATS, .spread = SPREAD_MERGED,
	 .fill = show_servers, COLUMNS(servers_cols)},
	{"SHOW USERS", .help_join = true, .access = ACCESS_STATS, .spread = SPREAD_MERGED,
	 .fill = show_users, COLUMNS(users_cols)},
	{"SHOW VERSION", .help_join = true, .access = ACCESS_STATS, .fill = show_version,
	 COLUMNS(version_cols)},
	{"SHOW PEERS", .access = ACCESS_STATS, .fill = show_peers, COLUMNS(peers_cols)},
	{"SHOW PEER_POOLS", .help_join = true, .access = ACCESS_STATS, .fill = show_nothing,
	 COLUMNS(peer_pools_cols)},
	{"SHOW FDS", .help_hidden = true, .access = ACCESS_ADMIN, .run = no_online_restart},
	{"SHOW SOCKETS", .access = ACCESS_STATS, .spread = SPREAD_MERGED,
	 .fill = show_sockets, COLUMNS(sockets_cols)},
	{"SHOW ACTIVE_SOCKETS", .help_join = true, .access = ACCESS_STATS, .spread = SPREAD_MERGED,
	 .fill = show_active_sockets, COLUMNS(sockets_cols)},
	{"SHOW LISTS", .help_join = true, .access = ACCESS_STATS, .spread = SPREAD_MERGED,
	 .fill = show_lists, COLUMNS(lists_cols), .merge = lists_merge},
	{"SHOW MEM", .help_join = true, .access = ACCESS_STATS, .spread = SPREAD_MERGED,
	 .fill = show_mem, COLUMNS(mem_cols)},
	{"SHOW STATE", .help_join = true, .access = ACCESS_STATS, .spread = SPREAD_MERGED,
	 .fill = show_state, COLUMNS(state_cols)},
	{"SHOW DNS_HOSTS", .access = ACCESS_STATS, .fill = show_dns_hosts, COLUMNS(dns_hosts_cols)},
	{"SHOW DNS_ZONES", .help_join = true, .access = ACCESS_STATS, .fill = show_dns_zones,
	 COLUMNS(dns_zones_cols)},
	{"SHOW STATS", .access = ACCESS_STATS, .spread = SPREAD_MERGED, .fill = show_stats,
	 COLUMNS(stats_cols)},
	{"SHOW STATS_TOTALS", .help_join = true, .access = ACCESS_STATS, .spread = SPREAD_MERGED,
	 .fill = show_stats_totals, COLUMNS(stats_totals_cols)},
	{"SHOW STATS_AVERAGES", .help_join = true, .access = ACCESS_STATS, .spread = SPREAD_MERGED,
	 .fill = show_stats_averages, COLUMNS(stats_averages_cols)},
	{"SHOW TOTALS", .help_join = true, .access = ACCESS_STATS, .spread = SPREAD_MERGED,
	 .fill = show_totals, COLUMNS(totals_cols), .merge = totals_merge},
	{"SHOW REPLICAS", .access = ACCESS_STATS, .spread = SPREAD_MERGED, .fill = show_replicas,
	 COLUMNS(replicas_cols)},
	{"SET", "key = arg", .access = ACCESS_ADMIN, .spread = SPREAD_EVERY, .args = ARGS_OWN,
	 .run = cmd_set},
	{"RELOAD", .access = ACCESS_ADMIN, .spread = SPREAD_EVERY, .run = cmd_reload},
	{"PAUSE", .access = ACCESS_ADMIN, .spread = SPREAD_EVERY, .args = ARGS_DB_OPTIONAL,
	 .run = cmd_pause},
	{"RESUME", .access = ACCESS_ADMIN, .spread = SPREAD_EVERY, .args = ARGS_DB_OPTIONAL,
	 .run = cmd_resume},
	{"DISABLE", .access = ACCESS_ADMIN, .spread = SPREAD_EVERY, .args = ARGS_DB,
	 .run = cmd_disable},
	{"ENABLE", .access = ACCESS_ADMIN, .spread = SPREAD_EVERY, .args = ARGS_DB,
	 .run = cmd_enable},
	{"RECONNECT", .access = ACCESS_ADMIN, .spread = SPREAD_EVERY, .args = ARGS_DB_OPTIONAL,
	 .run = cmd_reconnect},
	{"KILL", .access = ACCESS_ADMIN, .spread = SPREAD_EVERY, .args = ARGS_DB_OPTIONAL,
	 .run = cmd_kill},
	{"KILL_CLIENT", "<client_id>", .access = ACCESS_ADMIN, .spread = SPREAD_ANY,
	 .args = ARGS_OWN, .run = cmd_kill_client},
	{"WAIT_CLOSE", .access = ACCESS_ADMIN, .spread = SPREAD_EVERY, .args = ARGS_DB_OPTIONAL,
	 .run = cmd_wait_close},
	{"SUSPEND", .help_hidden = true, .access = ACCESS_ADMIN, .run = no_online_restart},
	/* fleet_shutdown() tells every worker itself. */
	{"SHUTDOWN", "[WAIT_FOR_SERVERS]", .access = ACCESS_ADMIN, .args = ARGS_OWN,
	 .run = cmd_shutdown},
	{"REFRESH", "DNS", .access = ACCESS_ADMIN, .spread = SPREAD_EVERY, .args = ARGS_OWN,
	 .run = cmd_refresh},
};

#define NCOMMANDS (sizeof(commands) / sizeof(commands[0]))

/* SHOW HELP's text: a line per command, a SHOW with help_join joined to the
 * line above. */
static void help_text(char *buf, size_t len)
{
	size_t n = 0;
	buf[0] = 0;
	for (size_t i = 0; i < NCOMMANDS; i++) {
		const struct admin_cmd *cmd = &commands[i];
		if (cmd->help_hidden)
			continue;
		const char *usage = cmd->args == ARGS_DB	    ? "<db>"
				    : cmd->args == ARGS_DB_OPTIONAL ? "[<db>]"
								    : cmd->usage;
		const char *second = strchr(cmd->words, ' ');
		int k = cmd->help_join && second
				? snprintf(buf + n, len - n, "|%s", second + 1)
				: snprintf(buf + n, len - n, "\n\t%s%s%s", cmd->words,
					   usage ? " " : "", usage ? usage : "");
		if (k < 0 || (size_t)k >= len - n)
			break;
		n += (size_t)k;
	}
}

static bool show_help(const struct admin_call *a)
{
	char text[2048];
	help_text(text, sizeof(text));
	struct wbuf *w = &a->c->io.out;
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
	proto_put_str(w, text);
	proto_put_u8(w, 0);
	proto_end(w, m);
	command_complete(w, "SHOW");
	return true;
}

/* The command named w1 [w2], case-insensitively (w2 NULL: one word). */
static const struct admin_cmd *find_cmd(const char *w1, const char *w2)
{
	size_t n = strlen(w1);
	for (size_t i = 0; i < NCOMMANDS; i++) {
		const char *w = commands[i].words;
		if (strncasecmp(w, w1, n) != 0)
			continue;
		if (w2 ? w[n] == ' ' && strcasecmp(w + n + 1, w2) == 0 : w[n] == 0)
			return &commands[i];
	}
	return NULL;
}

/* Does a second word follow w1 (SHOW)? */
static bool has_second_word(const char *w1)
{
	size_t n = strlen(w1);
	for (size_t i = 0; i < NCOMMANDS; i++)
		if (strncasecmp(commands[i].words, w1, n) == 0 && commands[i].words[n] == ' ')
			return true;
	return false;
}

/* Finds the command a line names; sets a->cmd, a->args (false: an error
 * was sent). */
static bool lookup(struct admin_call *a, char *verb, size_t len, const char *line)
{
	const char *p = next_word(line, verb, len);
	if (!p) {
		admin_error(a->c, "42601", "invalid command, use SHOW HELP;");
		return false;
	}
	if (!has_second_word(verb)) {
		a->cmd = find_cmd(verb, NULL);
		a->args = p;
		if (!a->cmd)
			admin_error(a->c, "42601", "invalid command '%s', use SHOW HELP;", line);
		return a->cmd != NULL;
	}
	/* SHOW is the only verb with a second word, and no argument. */
	char what[32];
	const char *q = next_word(p, what, sizeof(what));
	if (!q || !at_end(q)) {
		admin_error(a->c, "42601", "SHOW needs one of: SHOW HELP;");
		return false;
	}
	a->cmd = find_cmd(verb, what);
	a->args = q;
	if (!a->cmd)
		admin_error(a->c, "42601", "invalid command '%s', use SHOW HELP;", line);
	return a->cmd != NULL;
}

/* The database argument of ARGS_DB / ARGS_DB_OPTIONAL into a->db (false: an
 * error was sent). */
static bool read_db(struct admin_call *a)
{
	struct client *c = a->c;
	char arg[NAME_MAX_LEN + 2];
	const char *q = next_name(a->args, arg, sizeof(arg));
	if (q && !at_end(q)) {
		admin_error(c, "42601", "%s takes one database name", a->verb);
		return false;
	}
	if (!q && !at_end(a->args)) {
		admin_error(c, "42601", "invalid database name");
		return false;
	}
	if (!q && a->cmd->args == ARGS_DB) {
		admin_error(c, "42601", "%s needs a database name", a->verb);
		return false;
	}
	if (q) {
		a->db = find_db(arg);
		if (!a->db) {
			/* PgBouncer's words and SQLSTATE: a script written for it
			 * catches the same exception class (08: OperationalError). */
			admin_error(c, "08P01", "no such database: %s", arg);
			return false;
		}
	}
	log_info("admin command", "command", a->cmd->words, "db", a->db ? a->db->name : "*", "by",
		 c->user, NULL);
	return true;
}

static bool read_args(struct admin_call *a)
{
	switch (a->cmd->args) {
	case ARGS_NONE:
		if (at_end(a->args))
			return true;
		admin_error(a->c, "42601", "%s takes no argument", a->verb);
		return false;
	case ARGS_DB:
	case ARGS_DB_OPTIONAL:
		return read_db(a);
	case ARGS_OWN:
		break;
	}
	return true;
}

/* A SHOW's answer: its rows, or an error when some could not be held. */
static void answer_table(struct client *c, const struct table *t)
{
	if (t->oom) {
		admin_error(c, "53200", "out of memory");
		return;
	}
	table_write_header(t, &c->io.out);
	table_write_rows(t, &c->io.out);
	command_complete(&c->io.out, "SHOW");
}

static bool fanout_start(struct client *c, const struct admin_cmd *cmd, const char *line);

/* Runs one command line: its row of commands[], the access check, then here
 * or on every worker (spread, with may_spread).  False when it waits (PAUSE,
 * WAIT_CLOSE, the other workers): the reply is sent when that is over. */
/*
 * Drivers that set or read session parameters on every connection (as on
 * PostgreSQL) get, as PgBouncer gives them: SHOW of one of these answers
 * the value the console's ParameterStatus said, SET is ignored with a
 * NOTICE, for stats_users too.  True when the line was one of them.
 */
static bool fake_session_param(struct client *c, const char *line)
{
	static const char *const names[] = {"client_encoding", "datestyle", "timezone",
					    "standard_conforming_strings",
					    "default_transaction_isolation", "extra_float_digits"};
	char verb[8], name[40];
	const char *p = next_word(line, verb, sizeof(verb));
	if (!p || (strcmp(verb, "show") != 0 && strcmp(verb, "set") != 0))
		return false;
	const char *q = next_word(p, name, sizeof(name));
	int i = 0, n = (int)(sizeof(names) / sizeof(names[0]));
	while (q && i < n && strcmp(names[i], name) != 0)
		i++;
	if (!q || i == n)
		return false;
	struct wbuf *w = &c->io.out;
	if (verb[1] == 'e') { /* set */
		uint32_t m = proto_begin(w, 'N');
		proto_put_u8(w, 'S');
		proto_put_str(w, "NOTICE");
		proto_put_u8(w, 'V');
		proto_put_str(w, "NOTICE");
		proto_put_u8(w, 'C');
		proto_put_str(w, "00000");
		proto_put_u8(w, 'M');
		proto_put_str(w, "SET ignored");
		proto_put_u8(w, 0);
		proto_end(w, m);
		command_complete(w, "SET");
		return true;
	}
	if (!at_end(q))
		return false;
	const char *enc = param_get(c->params, "client_encoding");
	const char *const values[] = {enc && *enc ? enc : "UTF8", "ISO, MDY", "UTC", "on",
				      "read committed", "1"};
	const struct table_col col = {names[i], TABLE_TEXT, TABLE_FIRST, TABLE_OID_TEXT};
	struct table t;
	table_init(&t, &col, 1);
	struct row r = row_begin(&t);
	put_text(&r, values[i]);
	answer_table(c, &t);
	table_free(&t);
	return true;
}

static bool run_command(struct client *c, const char *line, bool may_spread)
{
	char verb[32];
	struct admin_call a = {.c = c, .verb = verb};
	(void)pthread_once(&stats_cols_once, stats_cols_build);
	if (fake_session_param(c, line))
		return true;
	if (!lookup(&a, verb, sizeof(verb), line))
		return true;
	if (a.cmd->access == ACCESS_ADMIN && !c->admin->full) {
		admin_error(c, "42501",
			    "admin access needed: user \"%s\" is in stats_users, which may only "
			    "run SHOW",
			    c->user);
		return true;
	}
	/* Spread before the arguments are read: each worker reads them against
	 * its own databases. */
	if (may_spread && a.cmd->spread != SPREAD_HERE && worker_threaded() &&
	    fanout_start(c, a.cmd, line))
		return false;
	if (!read_args(&a))
		return true;
	if (a.cmd->run)
		return a.cmd->run(&a);
	struct table t;
	table_init(&t, a.cmd->cols, a.cmd->ncols);
	a.cmd->fill(&t);
	answer_table(c, &t);
	table_free(&t);
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
	if (f->command->fill) {
		/* A SHOW: this worker's rows, as data, for the asking worker. */
		f->command->fill(&f->part[worker_index()]);
		if (!worker_post(f->origin, WMSG_CALL, 0, 0, fanout_reply, f))
			log_error("admin answer lost: cannot reach the asking worker", NULL);
		return;
	}
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
	if (run_command(sh, f->cmd, false)) {
		shadow_done(sh);
		return;
	}
	/* PAUSE, WAIT_CLOSE: on_wait_tick finishes it. */
	if (!shadows.next)
		list_init(&shadows);
	list_append(&shadows, &sh->node);
}

/* A SHOW's tables merged, the asking worker's first (its settings and
 * states stand), and rendered once. */
static void answer_merged(struct client *c, const struct fanout *f)
{
	const struct admin_cmd *cmd = f->command;
	void (*merge)(struct table *, const struct table *) = cmd->merge ? cmd->merge : table_merge;
	struct table t;
	table_init(&t, cmd->cols, cmd->ncols);
	merge(&t, &f->part[f->origin]);
	for (int i = 0; i < worker_count(); i++)
		if (i != f->origin)
			merge(&t, &f->part[i]);
	answer_table(c, &t);
	table_free(&t);
}

/* On the asking worker: one more answer; the last one completes the reply. */
static void fanout_reply(void *arg)
{
	struct fanout *f = arg;
	if (--f->pending > 0)
		return;
	struct client *c = f->c;
	if (c) {
		/* A command's answer is the asking worker's (also a SHOW's
		 * when that worker could not be reached: its error). */
		const struct wbuf *own = &f->out[f->origin];
		if (f->command->spread == SPREAD_ANY)
			for (int i = 0; i < worker_count(); i++)
				if (f->out[i].len && f->out[i].data[0] != 'E')
					own = &f->out[i];
		if (f->command->fill && own->len == 0)
			answer_merged(c, f);
		else
			wbuf_put(&c->io.out, own->data, own->len);
		proto_ready(&c->io.out, 'I');
		c->admin->wait = WAIT_NONE;
		c->admin->fan = NULL;
	}
	for (int i = 0; i < worker_count(); i++) {
		wbuf_free(&f->out[i]);
		table_free(&f->part[i]);
	}
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

/* Starts a command line on every worker (false: run it here alone). */
static bool fanout_start(struct client *c, const struct admin_cmd *cmd, const char *line)
{
	struct fanout *f = calloc(1, sizeof(*f));
	if (!f)
		return false;
	f->origin = worker_index();
	f->c = c;
	f->full = c->admin->full;
	f->command = cmd;
	f->client_id = c->id;
	for (int i = 0; i < worker_count(); i++)
		table_init(&f->part[i], cmd->cols, cmd->ncols);
	snprintf(f->user, sizeof(f->user), "%s", c->user);
	snprintf(f->cmd, sizeof(f->cmd), "%s", line);
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
	} else if (!run_command(c, cmd, true)) {
		return; /* answered when its wait is over, or every worker has */
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
