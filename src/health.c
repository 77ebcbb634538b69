/*
 * health.c: checks every replica every health_check_period.  A check learns
 * whether the replica answers, its role and its replay lag, and moves the
 * replica between new/up/down/banned (database.c keeps the states; this file
 * decides them).  One libpq connection per replica is kept between checks,
 * so a check is usually one round trip (PQsendQuery/PQconsumeInput on the
 * loop).
 *
 * Logging in is done on a helper thread, not on the loop (issue 15 item 8):
 * libpq computes SCRAM's PBKDF2 inside PQconnectPoll with whatever iteration
 * count the server names (10,000,000 is seconds of CPU), and libpq 15 has no
 * option to cap it or to refuse SCRAM (require_auth came in 16, and refusing
 * SCRAM would stop checks against ordinary PostgreSQL anyway).  So a fresh
 * connection is a "login job": its connection parameters copied by value, a
 * detached thread that runs PQconnectStartParams/PQconnectPoll with poll()
 * until health_check_timeout, and a pipe whose byte tells the loop the
 * PGconn is ready; the loop then owns the PGconn and goes on as before.
 * The thread touches nothing but its job (fleet is thread-local, the replica
 * may be forgotten meanwhile); the job is reference-counted between the loop
 * and the thread, and whoever lets go last frees it.  At most one job per
 * replica is in flight (a check that finds its previous login still stuck
 * fails at once rather than start another), and at most
 * health_check_max_logins in the whole process (a replica forgotten while
 * its login is stuck leaves its thread running until the login ends); a
 * check that finds them all busy is retried shortly, its replica's state
 * left alone.  Shutdown, reload and a forgotten replica never wait for a
 * thread: they let go of the job and the thread frees it when libpq returns
 * (main.c keeps OpenSSL from being torn down at exit under such a thread).
 * What a stuck thread still costs is one core for as long as the server's
 * count makes libpq compute: CPU, not latency.
 *
 * Must not: call a blocking libpq function on the loop (PQconnectdb, PQexec,
 * PQgetResult while PQisBusy), touch pgfleet's own server connections, or
 * route; a login thread must not touch fleet or any loop state.
 */
#include "health.h"

#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <libpq-fe.h>
#include <poll.h>
#include <pthread.h>
#include <signal.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/un.h>
#include <time.h>
#include <unistd.h>

#include "auth.h"
#include "log.h"
#include "pool.h"
#include "runtime.h"

/*
 * Lag: on an idle primary pg_last_xact_replay_timestamp() stops moving, so
 * "now - last replayed commit" grows on a standby that is fully caught up.
 * A standby that has replayed everything it received is 0 behind; only one
 * with received-but-unreplayed WAL is measured by the timestamp.  (Standbys
 * fed from an archive have no receive LSN and are always measured.)
 *
 * Timeline (a primary's, to choose among several primaries: newest first):
 * the first 8 hex digits of the WAL file name of the current WAL position.
 * pg_walfile_name() and pg_current_wal_lsn() are callable by any user on a
 * primary (pg_control_checkpoint() is not, and its timeline is the last
 * checkpoint's, which lags a promotion); NULL on a standby.
 */
#define CHECK_SQL                                                                                  \
	"SELECT pg_is_in_recovery(), CASE WHEN NOT pg_is_in_recovery() THEN 0 "                    \
	"WHEN pg_last_wal_receive_lsn() IS NOT NULL "                                              \
	"AND pg_last_wal_receive_lsn() <= pg_last_wal_replay_lsn() THEN 0 "                        \
	"ELSE COALESCE(EXTRACT(EPOCH FROM now() - pg_last_xact_replay_timestamp()), 0) END::float8, " \
	"CASE WHEN pg_is_in_recovery() THEN NULL "                                                 \
	"ELSE substr(pg_walfile_name(pg_current_wal_lsn()), 1, 8) END"

enum hc_step {
	HC_IDLE,       /* between checks; the timer is the next check */
	HC_CONNECTING, /* a login job is running; the timer is the deadline */
	HC_QUERYING,   /* CHECK_SQL sent; the timer is the deadline */
};

#define LOGIN_MAX_PARAMS 24

/* One fresh connection being made on a helper thread (see the top). */
struct login_job {
	atomic_int refs;       /* the loop's and the thread's */
	atomic_bool abandoned; /* the loop has let go: stop early */
	atomic_bool done;      /* conn is set (release) before the byte is written */
	int pipe_rd, pipe_wr;
	double timeout;        /* the thread's own deadline, seconds */
	PGconn *conn;          /* the thread's until done, then whoever takes it */
	const char *kw[LOGIN_MAX_PARAMS + 1], *val[LOGIN_MAX_PARAMS + 1];
	size_t strings_len;
	char strings[];        /* the values, copied (a password among them) */
};

/* Process-wide, not per worker: every worker's login threads count. */
static atomic_int logins_in_flight;

struct health_check {
	struct replica *r;
	PGconn *conn;         /* kept between checks while it works */
	struct login_job *job; /* in flight; held until its thread is done */
	struct event *ev_job; /* the job's pipe */
	unsigned seq, job_seq; /* which check the job logs in for */
	struct event *ev_io;  /* one-shot, on the libpq socket, for the current step */
	struct event *ev_timer;
	enum hc_step step;
	double started;
	bool reused;          /* this check began on a kept connection */
	bool have_row, recovery;
	double lag;
	uint32_t timeline;
	char query_error[160];
	bool warned_auth;     /* "cannot log in" said once per replica */
	bool warned_cap;      /* "health_check_max_logins reached" likewise */
};

static void start_check(struct health_check *hc);
static void start_connect(struct health_check *hc);
static void send_query(struct health_check *hc);
static void connect_failed(struct health_check *hc);
static void check_failed(struct health_check *hc, const char *fmt, ...)
	__attribute__((format(printf, 2, 3)));

bool health_enabled(void)
{
	return fleet.cfg.health_check_period > 0;
}

static void arm(struct event *ev, double seconds)
{
	if (seconds < 0)
		seconds = 0;
	struct timeval tv = {(time_t)seconds,
			     (suseconds_t)((seconds - (double)(time_t)seconds) * 1e6)};
	evtimer_add(ev, &tv);
}

static void drop_conn(struct health_check *hc)
{
	/* The event goes before the socket: never leave libevent watching a
	 * descriptor libpq is about to close. */
	if (hc->ev_io) {
		event_free(hc->ev_io);
		hc->ev_io = NULL;
	}
	if (hc->conn) {
		PQfinish(hc->conn);
		hc->conn = NULL;
	}
}

/* libpq's messages span lines ("...failed: Connection refused\n\tIs the
 * server running...?\n"): the first line says it, with runs of spaces
 * ("FATAL:  ") squeezed. */
static void one_line(char *dst, size_t len, const char *src)
{
	if (!src || !*src)
		src = "unknown error";
	size_t n = 0;
	for (const char *p = src; *p && *p != '\n' && *p != '\r' && n + 1 < len; p++) {
		char ch = *p == '\t' ? ' ' : *p;
		if (ch == ' ' && (n == 0 || dst[n - 1] == ' '))
			continue;
		dst[n++] = ch;
	}
	while (n && dst[n - 1] == ' ')
		n--;
	dst[n] = 0;
}

/* Server notices (a WARNING as a pod shuts down) would go to stderr
 * unformatted: they say nothing a failed check does not. */
static void quiet_notice(void *arg, const char *message)
{
}

/* ---- login jobs (see the top): the thread's side ---------------------- */

static double mono_now(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

static void job_put(struct login_job *j)
{
	if (atomic_fetch_sub(&j->refs, 1) != 1)
		return;
	if (j->conn)
		PQfinish(j->conn);
	close(j->pipe_rd);
	close(j->pipe_wr);
	explicit_bzero(j->strings, j->strings_len);
	free(j);
}

/* Runs on its own detached thread: libpq may block here as long as it
 * likes (a PBKDF2 of any length included) without stalling a loop. */
static void *login_thread(void *arg)
{
	struct login_job *j = arg;
	double deadline = mono_now() + j->timeout;
	PGconn *conn = PQconnectStartParams(j->kw, j->val, 0);
	if (conn && PQstatus(conn) != CONNECTION_BAD) {
		PQsetNoticeProcessor(conn, quiet_notice, NULL);
		/* libpq's rule: poll as though PQconnectPoll had said WRITING. */
		PostgresPollingStatusType st = PGRES_POLLING_WRITING;
		while ((st == PGRES_POLLING_READING || st == PGRES_POLLING_WRITING) &&
		       !atomic_load(&j->abandoned)) {
			struct pollfd p = {.fd = PQsocket(conn),
					   .events = st == PGRES_POLLING_READING ? POLLIN : POLLOUT};
			double left = deadline - mono_now();
			if (p.fd < 0 || left <= 0)
				break;
			int rc = poll(&p, 1, (int)(left * 1000) + 1);
			if (rc < 0 && errno == EINTR)
				continue;
			if (rc <= 0)
				break;
			st = PQconnectPoll(conn);
		}
	}
	j->conn = conn;
	atomic_store_explicit(&j->done, true, memory_order_release);
	ssize_t w;
	do
		w = write(j->pipe_wr, "", 1);
	while (w < 0 && errno == EINTR);
	job_put(j);
	atomic_fetch_sub(&logins_in_flight, 1);
	return NULL;
}

/* The loop lets go of its job: finished, or no longer wanted (the replica
 * is forgotten, pgfleet stops).  Never waits for the thread. */
static void job_let_go(struct health_check *hc)
{
	if (!hc->job)
		return;
	event_free(hc->ev_job);
	hc->ev_job = NULL;
	atomic_store(&hc->job->abandoned, true);
	job_put(hc->job);
	hc->job = NULL;
}

/* The loop's side: the thread is done; the PGconn is the loop's now. */
static void on_login_done(evutil_socket_t fd, short what, void *arg)
{
	struct health_check *hc = arg;
	struct login_job *j = hc->job;
	char byte;
	if (read(fd, &byte, 1) != 1 || !atomic_load_explicit(&j->done, memory_order_acquire)) {
		event_add(hc->ev_job, NULL); /* not yet */
		return;
	}
	PGconn *conn = j->conn;
	j->conn = NULL;
	job_let_go(hc);
	if (hc->step != HC_CONNECTING || hc->job_seq != hc->seq) {
		/* Its check already ended (timed out): the late login is dropped. */
		if (conn)
			PQfinish(conn);
		return;
	}
	hc->conn = conn;
	if (conn && PQstatus(conn) == CONNECTION_OK)
		send_query(hc);
	else if (conn && PQstatus(conn) != CONNECTION_BAD)
		check_failed(hc, "health check timed out after %gs",
			     fleet.cfg.health_check_timeout > 0 ? fleet.cfg.health_check_timeout : 3);
	else
		connect_failed(hc);
}

static struct login_job *job_new(const char **kw, const char **val, int n,
				 double timeout)
{
	size_t len = 0;
	for (int i = 0; i < n; i++)
		len += strlen(val[i]) + 1;
	struct login_job *j = calloc(1, sizeof(*j) + len);
	if (!j)
		return NULL;
	int fds[2];
	if (pipe2(fds, O_CLOEXEC | O_NONBLOCK) != 0) {
		free(j);
		return NULL;
	}
	j->pipe_rd = fds[0], j->pipe_wr = fds[1];
	j->timeout = timeout;
	j->strings_len = len;
	char *p = j->strings;
	for (int i = 0; i < n; i++) {
		size_t l = strlen(val[i]) + 1;
		memcpy(p, val[i], l);
		j->kw[i] = kw[i]; /* keywords are string literals */
		j->val[i] = p;
		p += l;
	}
	j->kw[n] = NULL, j->val[n] = NULL;
	atomic_init(&j->refs, 2);
	atomic_init(&j->abandoned, false);
	atomic_init(&j->done, false);
	return j;
}

/* Starts the thread; false (and nothing left behind) if it cannot. */
static bool job_start(struct health_check *hc, struct login_job *j, char *why, size_t why_len)
{
	hc->ev_job = event_new(fleet.base, j->pipe_rd, EV_READ, on_login_done, hc);
	if (!hc->ev_job || event_add(hc->ev_job, NULL) != 0) {
		snprintf(why, why_len, "out of memory");
		goto fail;
	}
	int rc = fleet_spawn_detached(login_thread, j);
	if (rc != 0) {
		snprintf(why, why_len, "cannot start a login thread: %s", strerror(rc));
		goto fail;
	}
	hc->job = j;
	hc->job_seq = hc->seq;
	return true;
fail:
	if (hc->ev_job)
		event_free(hc->ev_job);
	hc->ev_job = NULL;
	atomic_store(&j->refs, 1);
	job_put(j);
	return false;
}

/* Waiting clients may go elsewhere, or now find a replica. */
static void kick_db(struct database *db)
{
	struct list *it;
	list_for_each(it, &db->groups) {
		pool_kick(container_of(it, struct pool_group, node));
	}
}

static void schedule_next(struct health_check *hc)
{
	hc->step = HC_IDLE;
	if (!health_enabled())
		return; /* switched off with SET: health_check_now() restarts */
	double wait = hc->started + fleet.cfg.health_check_period - fleet_now();
	arm(hc->ev_timer, wait < 0.05 ? 0.05 : wait);
}

void health_note_failure(struct replica *r, const char *why)
{
	r->last_check = fleet_wallclock();
	snprintf(r->last_error, sizeof(r->last_error), "%s", why);
	if (r->state != REPLICA_DRAINING) {
		double now = fleet_now();
		r->fails++;
		if (r->state == REPLICA_BANNED) {
			/* stays banned; a passing check after ban_time lifts it */
		} else if (r->fails >= HEALTH_FALL) {
			r->retry_at = now + fleet.cfg.ban_time;
			replica_set_state(r, REPLICA_BANNED, why);
		} else if (r->state != REPLICA_DOWN) {
			r->retry_at = now + fleet.cfg.server_login_retry;
			replica_set_state(r, REPLICA_DOWN, why);
		}
	}
}

static void check_failed(struct health_check *hc, const char *fmt, ...)
	__attribute__((format(printf, 2, 3)));

static void check_failed(struct health_check *hc, const char *fmt, ...)
{
	struct replica *r = hc->r;
	char why[160];
	va_list ap;
	va_start(ap, fmt);
	vsnprintf(why, sizeof(why), fmt, ap);
	va_end(ap);
	drop_conn(hc);
	health_note_failure(r, why);
	schedule_next(hc);
	kick_db(r->db);
}

/* The replica answered; bring it (back) up if it may come. */
static void mark_answering(struct replica *r)
{
	r->fails = 0;
	switch (r->state) {
	case REPLICA_NEW:
	case REPLICA_DOWN:
		replica_set_state(r, REPLICA_UP, "health check passed");
		break;
	case REPLICA_BANNED:
		if (fleet_now() >= r->retry_at)
			replica_set_state(r, REPLICA_UP, "health check passed after ban_time");
		break;
	case REPLICA_UP:
	case REPLICA_DRAINING:
		break;
	}
}

void health_note_answer(struct replica *r, bool in_recovery, double lag_s, uint32_t timeline)
{
	r->last_check = fleet_wallclock();
	if (r->state != REPLICA_DRAINING) {
		bool lag_was_ok = replica_lag_ok(r);
		bool tl_changed = r->timeline != (in_recovery ? 0 : timeline);
		r->lag_s = lag_s;
		r->timeline = in_recovery ? 0 : timeline;
		if (!in_recovery && timeline)
			r->primary_tl = timeline;
		(void)replica_set_role(r, in_recovery ? ROLE_STANDBY : ROLE_PRIMARY,
				       "health check");
		if (lag_was_ok != replica_lag_ok(r)) {
			char lag[32];
			snprintf(lag, sizeof(lag), "%.1f", r->lag_s);
			log_kv(lag_was_ok ? LOG_WARN : LOG_INFO,
			       lag_was_ok ? "replica lagging" : "replica caught up", "db",
			       r->db->name, "addr", r->addr_str, "lag_s", lag, NULL);
		}
		mark_answering(r);
		/* A new timeline on a primary that stayed up changes nothing else
		 * here, but may decide which primary takes writes. */
		if (tl_changed)
			database_update_write_primary(r->db);
	}
}

static void check_passed(struct health_check *hc)
{
	struct replica *r = hc->r;
	if (hc->ev_io) {
		event_free(hc->ev_io);
		hc->ev_io = NULL;
	}
	health_note_answer(r, hc->recovery, hc->lag, hc->timeline);
	schedule_next(hc);
	kick_db(r->db);
}

/*
 * The server answered but would not let the health check in (no or wrong
 * health_check_password, pg_hba).  The replica is alive, so it is not held
 * against it: it serves as though unchecked, its role learned from the
 * server connections' in_hot_standby.  Said once, loudly.
 */
static bool auth_problem(PGconn *conn, const char *msg)
{
	return PQconnectionNeedsPassword(conn) || strstr(msg, "authentication failed") ||
	       strstr(msg, "no password supplied") || strstr(msg, "no pg_hba.conf entry") ||
	       (strstr(msg, "role \"") && strstr(msg, "does not exist"));
}

static void connect_failed(struct health_check *hc)
{
	struct replica *r = hc->r;
	char msg[160];
	one_line(msg, sizeof(msg), hc->conn ? PQerrorMessage(hc->conn) : NULL);
	/* The database is not on the server (a "*" entry and a name the
	 * servers lack): the replica is alive, and a server login will tell
	 * the client 3D000 itself rather than leave it waiting. */
	bool no_database = strstr(msg, "database \"") && strstr(msg, "does not exist");
	if (hc->conn && (no_database || auth_problem(hc->conn, msg))) {
		if (!hc->warned_auth)
			log_warn(no_database ? "health check: the database does not exist on the server"
					     : "health check cannot log in: set health_check_user and "
					       "health_check_password",
				 "db", r->db->name, "addr", r->addr_str, "error", msg, NULL);
		hc->warned_auth = true;
		drop_conn(hc);
		r->last_check = fleet_wallclock();
		snprintf(r->last_error, sizeof(r->last_error), "health check: %.140s", msg);
		mark_answering(r);
		schedule_next(hc);
		kick_db(r->db);
		return;
	}
	check_failed(hc, "health check: %s", msg);
}

/*
 * Every login thread the process may have is busy (health_check_max_logins;
 * stuck logins of hostile replicas, say): this replica is not to blame, so
 * its state stays as it is and the check is tried again soon.  The retry is
 * jittered: checks due together come due together again, and the same one
 * would take the freed slot every time.  Said once per replica until one of
 * its logins starts.
 */
static void check_deferred(struct health_check *hc)
{
	struct replica *r = hc->r;
	char max[24];
	snprintf(max, sizeof(max), "%lld", fleet.cfg.health_check_max_logins);
	if (!hc->warned_cap)
		log_warn("health check deferred: health_check_max_logins reached", "db",
			 r->db->name, "addr", r->addr_str, "health_check_max_logins", max, NULL);
	hc->warned_cap = true;
	snprintf(r->last_error, sizeof(r->last_error),
		 "health check deferred: health_check_max_logins (%s) logins in flight", max);
	hc->step = HC_IDLE;
	arm(hc->ev_timer, 0.05 + (double)(random() % 250) / 1000);
}

/* A kept connection can die quietly between checks (server restart,
 * idle_session_timeout): one fresh connection within the same deadline
 * decides, not the stale one. */
static void conn_lost(struct health_check *hc, const char *why)
{
	if (hc->reused) {
		hc->reused = false;
		drop_conn(hc);
		start_connect(hc);
		return;
	}
	char msg[160];
	one_line(msg, sizeof(msg), why);
	check_failed(hc, "health check: %s", msg);
}

static void on_io(evutil_socket_t fd, short what, void *arg);

static void wait_io(struct health_check *hc, short what)
{
	int fd = PQsocket(hc->conn);
	if (hc->ev_io) {
		event_free(hc->ev_io);
		hc->ev_io = NULL;
	}
	if (fd < 0) {
		conn_lost(hc, "no socket");
		return;
	}
	/* One-shot and re-made each step (cheap, and a check is rare). */
	hc->ev_io = event_new(fleet.base, fd, what, on_io, hc);
	if (!hc->ev_io) {
		check_failed(hc, "health check: out of memory");
		return;
	}
	event_add(hc->ev_io, NULL);
}

static void send_query(struct health_check *hc)
{
	hc->step = HC_QUERYING;
	hc->have_row = false;
	hc->query_error[0] = 0;
	if (PQsetnonblocking(hc->conn, 1) != 0 || !PQsendQuery(hc->conn, CHECK_SQL)) {
		conn_lost(hc, PQerrorMessage(hc->conn));
		return;
	}
	int rc = PQflush(hc->conn);
	if (rc < 0)
		conn_lost(hc, PQerrorMessage(hc->conn));
	else
		wait_io(hc, rc == 1 ? EV_READ | EV_WRITE : EV_READ);
}

static void take_result(struct health_check *hc, PGresult *res)
{
	int nf = PQnfields(res);
	if (PQresultStatus(res) == PGRES_TUPLES_OK && PQntuples(res) == 1 && (nf == 2 || nf == 3) &&
	    !PQgetisnull(res, 0, 0)) {
		hc->have_row = true;
		hc->timeline = 0;
		if (nf == 3 && !PQgetisnull(res, 0, 2)) {
			/* 8 hex digits; anything else leaves it unknown */
			const char *v = PQgetvalue(res, 0, 2);
			char *end = NULL;
			unsigned long tl = strtoul(v, &end, 16);
			if (end == v + 8 && tl <= UINT32_MAX)
				hc->timeline = (uint32_t)tl;
		}
		hc->recovery = PQgetvalue(res, 0, 0)[0] == 't';
		hc->lag = PQgetisnull(res, 0, 1) ? 0 : strtod(PQgetvalue(res, 0, 1), NULL);
		if (!(hc->lag >= 0)) /* also NaN */
			hc->lag = 0;
	} else if (!hc->query_error[0]) {
		const char *e = PQresultErrorMessage(res);
		one_line(hc->query_error, sizeof(hc->query_error),
			 e && *e ? e : "unexpected answer to the health query");
	}
}

static void read_results(struct health_check *hc)
{
	if (!PQconsumeInput(hc->conn)) {
		conn_lost(hc, PQerrorMessage(hc->conn));
		return;
	}
	while (!PQisBusy(hc->conn)) {
		PGresult *res = PQgetResult(hc->conn);
		if (!res) {
			if (hc->have_row)
				check_passed(hc);
			else if (PQstatus(hc->conn) == CONNECTION_BAD)
				conn_lost(hc, hc->query_error);
			else
				check_failed(hc, "health query failed: %s", hc->query_error);
			return;
		}
		take_result(hc, res);
		PQclear(res);
	}
	wait_io(hc, EV_READ);
}

static void on_io(evutil_socket_t fd, short what, void *arg)
{
	struct health_check *hc = arg;
	if (hc->step != HC_QUERYING)
		return;
	if (what & EV_WRITE) {
		int rc = PQflush(hc->conn);
		if (rc < 0) {
			conn_lost(hc, PQerrorMessage(hc->conn));
			return;
		}
		if (rc == 1 && !(what & EV_READ)) {
			wait_io(hc, EV_READ | EV_WRITE);
			return;
		}
	}
	read_results(hc);
}

/* The user a check logs in as: health_check_user, else the one pgfleet logs
 * in to servers with for this database: its entry's user; for a database
 * from "*", the user whose login created it (it has just proved its
 * password, and its server logins use that user anyway), never DB_USER or
 * an auth_file user unrelated to the name; else DB_USER. */
static const char *check_user(const struct database *db)
{
	if (*fleet.cfg.health_check_user)
		return fleet.cfg.health_check_user;
	if (db->cfg && db->cfg->user)
		return db->cfg->user;
	if (db->is_auto && db->auto_user[0])
		return db->auto_user;
	if (!list_empty(&db->groups))
		return container_of(db->groups.next, struct pool_group, node)->user;
	const char *env = getenv("DB_USER");
	if (env && *env)
		return env;
	return fleet.cfg.n_users ? fleet.cfg.users[0].name : NULL;
}

static void start_connect(struct health_check *hc)
{
	struct replica *r = hc->r;
	struct database *db = r->db;
	struct replica_libpq lp;
	replica_libpq_params(r, &lp);
	const char **kw = lp.kw, **val = lp.val;
	int n = lp.n;
	char timeout[16];
	const char *user = check_user(db);
	if (user) {
		const char *pw = *fleet.cfg.health_check_user && *fleet.cfg.health_check_password
					 ? fleet.cfg.health_check_password
					 : auth_server_password(db->cfg, user);
		/* A user known only by a hash or a SCRAM secret (auth_file, or
		 * auth_query's answer) cannot log libpq in; auth_user, whose
		 * plaintext password auth_query needs anyway, can. */
		const char *au = db->cfg && db->cfg->auth_user ? db->cfg->auth_user
							       : fleet.cfg.auth_user;
		const struct user_entry *aue =
			*au && !*fleet.cfg.health_check_user ? config_find_user(&fleet.cfg, au) : NULL;
		if ((!pw || auth_password_kind(pw) != PW_PLAIN) && aue &&
		    auth_password_kind(aue->password) == PW_PLAIN)
			user = au, pw = aue->password;
		kw[n] = "user", val[n++] = user;
		/* An md5 hash or a SCRAM secret is no use to libpq. */
		if (pw && auth_password_kind(pw) == PW_PLAIN)
			kw[n] = "password", val[n++] = pw;
	}
	double t = fleet.cfg.health_check_timeout > 0 ? fleet.cfg.health_check_timeout : 3;
	snprintf(timeout, sizeof(timeout), "%d", t < 2 ? 2 : (int)t);
	kw[n] = "connect_timeout", val[n++] = timeout;
	kw[n] = "application_name", val[n++] = "pgfleet-health";
	kw[n] = NULL, val[n] = NULL;

	hc->step = HC_CONNECTING;
	if (hc->job) {
		/* Its thread is still in libpq (a huge SCRAM iteration count, say):
		 * one stuck login per replica is enough. */
		check_failed(hc, "health check: the previous login is still running after %gs", t);
		return;
	}
	if (atomic_fetch_add(&logins_in_flight, 1) >= fleet.cfg.health_check_max_logins) {
		atomic_fetch_sub(&logins_in_flight, 1);
		check_deferred(hc);
		return;
	}
	hc->warned_cap = false;
	char why[96];
	struct login_job *j = job_new(kw, val, n, t);
	if (!j) {
		snprintf(why, sizeof(why), "out of memory");
	} else if (job_start(hc, j, why, sizeof(why))) {
		return; /* on_login_done goes on */
	}
	atomic_fetch_sub(&logins_in_flight, 1);
	check_failed(hc, "health check: %s", why);
}

static void start_check(struct health_check *hc)
{
	struct replica *r = hc->r;
	if (r->state == REPLICA_DRAINING || !health_enabled()) {
		drop_conn(hc); /* no more checks; health_check_now() restarts them */
		hc->step = HC_IDLE;
		return;
	}
	hc->started = fleet_now();
	hc->seq++;
	double t = fleet.cfg.health_check_timeout > 0 ? fleet.cfg.health_check_timeout : 3;
	arm(hc->ev_timer, t);
	if (hc->conn && PQstatus(hc->conn) == CONNECTION_OK) {
		hc->reused = true;
		send_query(hc);
	} else {
		hc->reused = false;
		drop_conn(hc);
		start_connect(hc);
	}
}

static void on_timer(evutil_socket_t fd, short what, void *arg)
{
	struct health_check *hc = arg;
	if (hc->step == HC_IDLE) {
		start_check(hc);
		return;
	}
	/* A hung replica (SIGSTOP, a dead network path) accepts and never
	 * answers: the deadline is what notices. */
	check_failed(hc, "health check timed out after %gs",
		     fleet.cfg.health_check_timeout > 0 ? fleet.cfg.health_check_timeout : 3);
}

void health_replica_added(struct replica *r)
{
	if (!r->health) {
		struct health_check *hc = calloc(1, sizeof(*hc));
		if (!hc)
			return;
		hc->r = r;
		hc->ev_timer = evtimer_new(fleet.base, on_timer, hc);
		if (!hc->ev_timer) {
			free(hc);
			return;
		}
		r->health = hc;
	}
	health_check_now(r);
}

void health_check_now(struct replica *r)
{
	struct health_check *hc = r->health;
	if (!hc) {
		health_replica_added(r);
		return;
	}
	if (hc->step != HC_IDLE || !health_enabled())
		return;
	/* At the next loop pass, not inside the caller: a "*" database gets
	 * its first client's user before the check picks one. */
	arm(hc->ev_timer, 0);
}

void health_janitor(void)
{
	if (!health_enabled())
		return;
	struct list *dit, *it;
	list_for_each(dit, &fleet.databases) {
		struct database *db = container_of(dit, struct database, node);
		list_for_each(it, &db->replicas) {
			struct replica *r = container_of(it, struct replica, node);
			struct health_check *hc = r->health;
			if (r->state == REPLICA_DRAINING)
				continue;
			if (!hc || (hc->step == HC_IDLE && !evtimer_pending(hc->ev_timer, NULL)))
				health_check_now(r);
		}
	}
}

void health_replica_removed(struct replica *r)
{
	struct health_check *hc = r->health;
	if (!hc)
		return;
	drop_conn(hc);
	job_let_go(hc);
	event_free(hc->ev_timer);
	free(hc);
	r->health = NULL;
}

const struct database_health health_for_databases = {
	.enabled = health_enabled,
	.replica_added = health_replica_added,
	.replica_removed = health_replica_removed,
	.check_now = health_check_now,
};
