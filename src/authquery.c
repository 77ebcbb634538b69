/*
 * authquery.c: auth_user / auth_query / auth_dbname (see authquery.h).
 *
 * One lookup per (database, user) in flight per worker, its waiters on a
 * list.  The lookup picks a server of the auth database (its primary, else
 * an up replica, else one not yet checked; none known yet, e.g. DNS still
 * resolving: tried again every 100 ms until auth_query_timeout), copies the
 * libpq parameters into a job and starts a detached thread that logs in,
 * runs the query with $1 bound (PQexecParams: the extended protocol, as
 * PgBouncer does) and writes one byte to a pipe.  The job is shared by the
 * loop and the thread (reference count): a lookup that times out lets go
 * of it and the thread frees it when libpq returns (connect_timeout and
 * statement_timeout bound that).
 *
 * The same arrangement as health.c's login jobs, kept apart: health checks
 * are policy (layer 3) and keep their connection; a lookup is one login and
 * one query.
 */
#include "authquery.h"

#include <arpa/inet.h>
#include <errno.h>
#include <event2/event.h>
#include <fcntl.h>
#include <libpq-fe.h>
#include <pthread.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "auth.h"
#include "database.h"
#include "log.h"
#include "runtime.h"

#define JOB_MAX_PARAMS 24
#define RETRY_SECONDS 0.1

struct job {
	atomic_int refs; /* the loop's and the thread's */
	atomic_bool done;
	int pipe_rd, pipe_wr;
	const char *kw[JOB_MAX_PARAMS + 1], *val[JOB_MAX_PARAMS + 1];
	const char *query, *user;
	/* the thread's answer */
	enum authquery_status status;
	bool query_ran; /* a failure's message may quote the query: not logged */
	char sqlstate[6];
	char secret[AUTHQUERY_SECRET_MAX];
	char msg[256];
	size_t strings_len;
	char strings[]; /* the values, copied (a password among them) */
};

struct authquery_lookup {
	struct list node;    /* this worker's lookups */
	struct list waiters; /* struct authquery_wait */
	char dbname[NAME_MAX_LEN];
	char user[NAME_MAX_LEN];
	char auth_dbname[NAME_MAX_LEN];
	char auth_user[NAME_MAX_LEN];
	char *query; /* copied: a reload may free the configuration meanwhile */
	struct job *job;
	struct event *ev_pipe, *ev_timer;
	double deadline;
};

static THREAD_LOCAL struct list lookups; /* initialised on first use */

/* Process-wide: every worker's threads count. */
static atomic_int in_flight;

/* ---- the cache (process-wide) ---- */

struct cached {
	struct cached *next; /* newest first */
	double at;           /* monotonic */
	bool found;
	char dbname[NAME_MAX_LEN];
	char user[NAME_MAX_LEN];
	char secret[AUTHQUERY_SECRET_MAX];
};

static pthread_mutex_t cache_lock = PTHREAD_MUTEX_INITIALIZER;
static struct cached *cache_head;
static size_t cache_count;

static double mono_now(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

static void cached_free(struct cached *e)
{
	explicit_bzero(e, sizeof(*e));
	free(e);
}

/* Unlinks the entry for (dbname, user); the caller holds the lock. */
static struct cached *cache_take(const char *dbname, const char *user)
{
	for (struct cached **pp = &cache_head; *pp; pp = &(*pp)->next) {
		struct cached *e = *pp;
		if (strcmp(e->dbname, dbname) == 0 && strcmp(e->user, user) == 0) {
			*pp = e->next;
			cache_count--;
			return e;
		}
	}
	return NULL;
}

static void cache_put(const char *dbname, const char *user, bool found, const char *secret)
{
	struct cached *e = calloc(1, sizeof(*e));
	if (!e)
		return; /* uncached: the next login asks again */
	e->at = mono_now();
	e->found = found;
	snprintf(e->dbname, sizeof(e->dbname), "%s", dbname);
	snprintf(e->user, sizeof(e->user), "%s", user);
	if (found)
		snprintf(e->secret, sizeof(e->secret), "%s", secret);
	size_t max = (size_t)fleet.cfg.auth_query_cache_size;
	struct cached *old, *drop = NULL;
	pthread_mutex_lock(&cache_lock);
	old = cache_take(dbname, user);
	e->next = cache_head;
	cache_head = e;
	cache_count++;
	while (cache_count > max) {
		/* the oldest is last */
		struct cached **pp = &cache_head;
		while ((*pp)->next)
			pp = &(*pp)->next;
		struct cached *last = *pp;
		*pp = NULL;
		cache_count--;
		last->next = drop;
		drop = last;
	}
	pthread_mutex_unlock(&cache_lock);
	if (old)
		cached_free(old);
	while (drop) {
		struct cached *n = drop->next;
		cached_free(drop);
		drop = n;
	}
}

/* A cached answer younger than max_age (< 0: any age). */
static bool cache_get(const char *dbname, const char *user, double max_age, bool *found,
		      char *secret, size_t secretlen)
{
	bool hit = false;
	double now = mono_now();
	pthread_mutex_lock(&cache_lock);
	for (struct cached *e = cache_head; e; e = e->next) {
		if (strcmp(e->dbname, dbname) == 0 && strcmp(e->user, user) == 0) {
			if (max_age < 0 || now - e->at < max_age) {
				*found = e->found;
				if (e->found)
					snprintf(secret, secretlen, "%s", e->secret);
				hit = !e->found || strlen(e->secret) < secretlen;
			}
			break;
		}
	}
	pthread_mutex_unlock(&cache_lock);
	return hit;
}

bool authquery_secret(const char *dbname, const char *user, char *out, size_t outlen)
{
	bool found = false;
	return cache_get(dbname, user, -1, &found, out, outlen) && found;
}

void authquery_cache_clear(void)
{
	pthread_mutex_lock(&cache_lock);
	struct cached *e = cache_head;
	cache_head = NULL;
	cache_count = 0;
	pthread_mutex_unlock(&cache_lock);
	while (e) {
		struct cached *n = e->next;
		cached_free(e);
		e = n;
	}
}

/* ---- settings ---- */

static const char *eff_auth_user(const struct db_config *dbc)
{
	if (dbc && dbc->auth_user)
		return dbc->auth_user;
	return *fleet.cfg.auth_user ? fleet.cfg.auth_user : NULL;
}

bool authquery_enabled(const struct db_config *dbc)
{
	return eff_auth_user(dbc) != NULL;
}

/* ---- the helper thread ---- */

static void job_put(struct job *j)
{
	if (atomic_fetch_sub(&j->refs, 1) != 1)
		return;
	close(j->pipe_rd);
	close(j->pipe_wr);
	explicit_bzero(j->strings, j->strings_len);
	explicit_bzero(j->secret, sizeof(j->secret));
	free(j);
}

static void quiet_notice(void *arg, const char *message)
{
	(void)arg;
	(void)message;
}

/* First line of a libpq message, "PgBouncer-short". */
static void one_line(char *dst, size_t len, const char *src)
{
	snprintf(dst, len, "%s", src && *src ? src : "unknown error");
	for (char *p = dst; *p; p++)
		if (*p == '\n' || *p == '\r') {
			*p = 0;
			break;
		}
}

static void run_job(struct job *j)
{
	PGconn *conn = PQconnectdbParams(j->kw, j->val, 0);
	if (!conn || PQstatus(conn) != CONNECTION_OK) {
		j->status = AUTHQUERY_FAILED;
		char m[200];
		one_line(m, sizeof(m), conn ? PQerrorMessage(conn) : "out of memory");
		snprintf(j->msg, sizeof(j->msg), "cannot log in as auth_user: %s", m);
		if (conn)
			PQfinish(conn);
		return;
	}
	PQsetNoticeProcessor(conn, quiet_notice, NULL);
	j->query_ran = true;
	const char *params[1] = {j->user};
	PGresult *res = PQexecParams(conn, j->query, 1, NULL, params, NULL, NULL, 0);
	ExecStatusType st = res ? PQresultStatus(res) : PGRES_FATAL_ERROR;
	if (st != PGRES_TUPLES_OK) {
		char m[200];
		const char *code = res ? PQresultErrorField(res, PG_DIAG_SQLSTATE) : NULL;
		one_line(m, sizeof(m), res ? PQresultErrorMessage(res) : PQerrorMessage(conn));
		j->status = AUTHQUERY_FAILED;
		snprintf(j->sqlstate, sizeof(j->sqlstate), "%s", code ? code : "");
		snprintf(j->msg, sizeof(j->msg), "auth_query failed: %s", m);
	} else if (PQnfields(res) < 2) {
		j->status = AUTHQUERY_FAILED;
		snprintf(j->msg, sizeof(j->msg),
			 "auth_query must return two columns (user name, password), not %d",
			 PQnfields(res));
	} else if (PQntuples(res) == 0 || (PQntuples(res) == 1 && PQgetisnull(res, 0, 1))) {
		j->status = AUTHQUERY_NOT_FOUND;
	} else if (PQntuples(res) > 1) {
		j->status = AUTHQUERY_FAILED;
		snprintf(j->msg, sizeof(j->msg), "auth_query returned %d rows for one user",
			 PQntuples(res));
	} else if ((size_t)PQgetlength(res, 0, 1) >= sizeof(j->secret)) {
		j->status = AUTHQUERY_FAILED;
		snprintf(j->msg, sizeof(j->msg),
			 "auth_query returned a password longer than %d bytes",
			 AUTHQUERY_SECRET_MAX - 1);
	} else {
		j->status = AUTHQUERY_FOUND;
		memcpy(j->secret, PQgetvalue(res, 0, 1), (size_t)PQgetlength(res, 0, 1) + 1);
		if (!*j->secret)
			j->status = AUTHQUERY_NOT_FOUND; /* an empty password never logs in */
	}
	if (res) {
		/* the secret is in res too */
		if (st == PGRES_TUPLES_OK && PQntuples(res) > 0 && PQnfields(res) >= 2)
			for (int i = 0; i < PQntuples(res); i++)
				if (!PQgetisnull(res, i, 1))
					explicit_bzero(PQgetvalue(res, i, 1),
						       (size_t)PQgetlength(res, i, 1));
		PQclear(res);
	}
	PQfinish(conn);
}

static void *job_thread(void *arg)
{
	struct job *j = arg;
	run_job(j);
	atomic_store_explicit(&j->done, true, memory_order_release);
	ssize_t w;
	do
		w = write(j->pipe_wr, "", 1);
	while (w < 0 && errno == EINTR);
	atomic_fetch_sub(&in_flight, 1);
	job_put(j);
	return NULL;
}

static struct job *job_new(const char **kw, const char **val, int n, const char *query,
			   const char *user)
{
	size_t len = strlen(query) + 1 + strlen(user) + 1;
	for (int i = 0; i < n; i++)
		len += strlen(val[i]) + 1;
	struct job *j = calloc(1, sizeof(*j) + len);
	if (!j)
		return NULL;
	int fds[2];
	if (pipe2(fds, O_CLOEXEC | O_NONBLOCK) != 0) {
		free(j);
		return NULL;
	}
	j->pipe_rd = fds[0], j->pipe_wr = fds[1];
	j->strings_len = len;
	char *p = j->strings;
	for (int i = 0; i <= n + 1; i++) {
		const char *v = i < n ? val[i] : i == n ? query : user;
		size_t l = strlen(v) + 1;
		memcpy(p, v, l);
		if (i < n) {
			j->kw[i] = kw[i]; /* keywords are string literals */
			j->val[i] = p;
		} else if (i == n) {
			j->query = p;
		} else {
			j->user = p;
		}
		p += l;
	}
	j->kw[n] = NULL, j->val[n] = NULL;
	atomic_init(&j->refs, 2);
	atomic_init(&j->done, false);
	return j;
}

/* ---- lookups (per worker) ---- */

static void lookup_finish(struct authquery_lookup *lk, enum authquery_status st,
			  const char *secret, const char *sqlstate, const char *msg)
{
	list_del(&lk->node);
	if (lk->ev_pipe)
		event_free(lk->ev_pipe);
	if (lk->ev_timer)
		event_free(lk->ev_timer);
	free(lk->query);
	/* Each waiter is off the list before its callback runs: a callback
	 * may close its client, which cancels nothing twice. */
	while (!list_empty(&lk->waiters)) {
		struct authquery_wait *w =
			container_of(list_first(&lk->waiters), struct authquery_wait, node);
		list_del(&w->node);
		w->lookup = NULL;
		w->done(w, st, secret, sqlstate, msg);
	}
	if (lk->job)
		job_put(lk->job); /* after the callbacks: secret and msg may be the job's */
	explicit_bzero(lk, sizeof(*lk));
	free(lk);
}

static void lookup_failed(struct authquery_lookup *lk, const char *sqlstate, const char *msg)
{
	log_warn("auth_query lookup failed", "db", lk->auth_dbname, "user", lk->user, "sqlstate",
		 "-", "error", msg, NULL);
	lookup_finish(lk, AUTHQUERY_FAILED, NULL, sqlstate, msg);
}

static void on_job_done(evutil_socket_t fd, short what, void *arg)
{
	struct authquery_lookup *lk = arg;
	char byte;
	(void)what;
	if (read(fd, &byte, 1) != 1 ||
	    !atomic_load_explicit(&lk->job->done, memory_order_acquire)) {
		event_add(lk->ev_pipe, NULL); /* not yet */
		return;
	}
	struct job *j = lk->job;
	switch (j->status) {
	case AUTHQUERY_FOUND:
	case AUTHQUERY_NOT_FOUND:
		cache_put(lk->dbname, lk->user, j->status == AUTHQUERY_FOUND, j->secret);
		lookup_finish(lk, j->status, j->secret, NULL, NULL);
		return;
	default: {
		/* Said once per lookup, without the message: it may quote the
		 * query.  The waiting clients read it. */
		char msg[sizeof(j->msg)];
		memcpy(msg, j->msg, sizeof(msg));
		log_warn("auth_query lookup failed", "db", lk->auth_dbname, "user", lk->user,
			 "sqlstate", *j->sqlstate ? j->sqlstate : "-", "error",
			 j->query_ran ? "the query failed" : msg, NULL);
		lookup_finish(lk, AUTHQUERY_FAILED, NULL, "28000", msg);
		return;
	}
	}
}

/* The server to ask: the primary, else an up replica, else an unchecked one. */
static const struct replica *pick_replica(struct database *db)
{
	const struct replica *up = NULL, *fresh = NULL;
	struct list *it;
	list_for_each(it, &db->replicas) {
		const struct replica *r = container_of(it, struct replica, node);
		if (r->state == REPLICA_UP && r->role == ROLE_PRIMARY)
			return r;
		if (r->state == REPLICA_UP && !up)
			up = r;
		if (r->state == REPLICA_NEW && !fresh)
			fresh = r;
	}
	return up ? up : fresh;
}

static bool lookup_start(struct authquery_lookup *lk, char *why, size_t whylen);

static void on_timer(evutil_socket_t fd, short what, void *arg)
{
	struct authquery_lookup *lk = arg;
	char why[200];
	(void)fd;
	(void)what;
	if (lk->job) {
		char msg[200];
		snprintf(msg, sizeof(msg), "auth_query lookup timed out after %gs (auth_query_timeout)",
			 fleet.cfg.auth_query_timeout);
		lookup_failed(lk, "28000", msg);
		return;
	}
	if (!lookup_start(lk, why, sizeof(why)))
		lookup_failed(lk, "28000", why);
}

static void arm(struct event *ev, double seconds)
{
	struct timeval tv = {(time_t)seconds, (suseconds_t)((seconds - (time_t)seconds) * 1e6)};
	event_add(ev, &tv);
}

/*
 * Starts the thread, or arms the retry timer while the auth database has no
 * server yet.  False with why when it cannot (the lookup is then failed by
 * the caller).
 */
static bool lookup_start(struct authquery_lookup *lk, char *why, size_t whylen)
{
	struct database *db = database_lookup(lk->auth_dbname);
	if (!db) {
		snprintf(why, whylen,
			 "auth_query: database \"%s\" is not in [databases] (set auth_dbname)",
			 lk->auth_dbname);
		return false;
	}
	const struct replica *r = pick_replica(db);
	double now = fleet_now();
	if (!r) {
		if (now >= lk->deadline) {
			snprintf(why, whylen, "auth_query: no server of database \"%s\" answers",
				 lk->auth_dbname);
			return false;
		}
		arm(lk->ev_timer, RETRY_SECONDS);
		return true;
	}
	const char *auth_user = lk->auth_user;
	const struct user_entry *au = config_find_user(&fleet.cfg, auth_user);
	/* where and how, as the health checks reach r (TLS, keepalives) */
	struct replica_libpq lp;
	replica_libpq_params(r, &lp);
	const char **kw = lp.kw, **val = lp.val;
	int n = lp.n;
	char timeout[16], options[64];
	kw[n] = "user", val[n++] = auth_user;
	if (au) {
		/* libpq needs the password itself: a hash or SCRAM secret cannot log in */
		if (auth_password_kind(au->password) == PW_PLAIN)
			kw[n] = "password", val[n++] = au->password;
	}
	double t = fleet.cfg.auth_query_timeout;
	snprintf(timeout, sizeof(timeout), "%d", t < 2 ? 2 : (int)(t + 0.999));
	kw[n] = "connect_timeout", val[n++] = timeout;
	snprintf(options, sizeof(options), "-c statement_timeout=%d",
		 (int)(t * 1000) > 0 ? (int)(t * 1000) : 1);
	kw[n] = "options", val[n++] = options;
	kw[n] = "application_name", val[n++] = "pgfleet-auth_query";
	kw[n] = NULL, val[n] = NULL;

	const char *query = lk->query;
	if (atomic_fetch_add(&in_flight, 1) >= fleet.cfg.auth_query_max_lookups) {
		atomic_fetch_sub(&in_flight, 1);
		snprintf(why, whylen, "auth_query: %lld lookups in flight (auth_query_max_lookups)",
			 fleet.cfg.auth_query_max_lookups);
		return false;
	}
	struct job *j = job_new(kw, val, n, query, lk->user);
	if (!j) {
		atomic_fetch_sub(&in_flight, 1);
		snprintf(why, whylen, "auth_query: out of memory");
		return false;
	}
	lk->ev_pipe = event_new(fleet.base, j->pipe_rd, EV_READ, on_job_done, lk);
	if (!lk->ev_pipe || event_add(lk->ev_pipe, NULL) != 0) {
		atomic_fetch_sub(&in_flight, 1);
		atomic_store(&j->refs, 1);
		job_put(j);
		snprintf(why, whylen, "auth_query: out of memory");
		return false;
	}
	int rc = fleet_spawn_detached(job_thread, j);
	if (rc != 0) {
		atomic_fetch_sub(&in_flight, 1);
		atomic_store(&j->refs, 1);
		job_put(j);
		snprintf(why, whylen, "auth_query: cannot start a thread: %s", strerror(rc));
		return false;
	}
	lk->job = j;
	arm(lk->ev_timer, lk->deadline - now > 0 ? lk->deadline - now : 0);
	return true;
}

static enum authquery_status fail_now(const char **sqlstate, char *msg, size_t msglen,
				      const char *state, const char *why)
{
	*sqlstate = state;
	snprintf(msg, msglen, "%s", why);
	return AUTHQUERY_FAILED;
}

enum authquery_status authquery_lookup(const char *dbname, const struct db_config *dbc,
				       const char *user, struct authquery_wait *w, char *secret,
				       size_t secretlen, const char **sqlstate, char *msg,
				       size_t msglen)
{
	bool found = false;
	if (!lookups.next)
		list_init(&lookups);
	if (cache_get(dbname, user, fleet.cfg.auth_query_cache_ttl, &found, secret, secretlen))
		return found ? AUTHQUERY_FOUND : AUTHQUERY_NOT_FOUND;
	if (strlen(dbname) >= NAME_MAX_LEN || strlen(user) >= NAME_MAX_LEN)
		return AUTHQUERY_NOT_FOUND; /* no PostgreSQL name is that long */
	struct list *it;
	list_for_each(it, &lookups) {
		struct authquery_lookup *lk = container_of(it, struct authquery_lookup, node);
		if (strcmp(lk->dbname, dbname) == 0 && strcmp(lk->user, user) == 0) {
			list_append(&lk->waiters, &w->node);
			w->lookup = lk;
			return AUTHQUERY_PENDING;
		}
	}
	const char *adb = dbc && dbc->auth_dbname ? dbc->auth_dbname
			  : *fleet.cfg.auth_dbname ? fleet.cfg.auth_dbname
						   : dbname;
	const char *au = eff_auth_user(dbc);
	const char *query = dbc && dbc->auth_query ? dbc->auth_query : fleet.cfg.auth_query;
	if (!au)
		return fail_now(sqlstate, msg, msglen, "28000", "auth_query: no auth_user");
	if (strlen(adb) >= NAME_MAX_LEN || strlen(au) >= NAME_MAX_LEN)
		return fail_now(sqlstate, msg, msglen, "28000",
				"auth_dbname or auth_user is too long");
	struct authquery_lookup *lk = calloc(1, sizeof(*lk));
	if (!lk)
		return fail_now(sqlstate, msg, msglen, "53200", "out of memory");
	list_init(&lk->waiters);
	snprintf(lk->dbname, sizeof(lk->dbname), "%s", dbname);
	snprintf(lk->user, sizeof(lk->user), "%s", user);
	snprintf(lk->auth_dbname, sizeof(lk->auth_dbname), "%s", adb);
	snprintf(lk->auth_user, sizeof(lk->auth_user), "%s", au);
	lk->query = strdup(query);
	lk->deadline = fleet_now() + fleet.cfg.auth_query_timeout;
	list_append(&lookups, &lk->node);
	lk->ev_timer = evtimer_new(fleet.base, on_timer, lk);
	char why[200];
	if (!lk->ev_timer || !lk->query) {
		snprintf(why, sizeof(why), "out of memory");
	} else if (lookup_start(lk, why, sizeof(why))) {
		list_append(&lk->waiters, &w->node);
		w->lookup = lk;
		return AUTHQUERY_PENDING;
	}
	log_warn("auth_query lookup failed", "db", adb, "user", user, "sqlstate", "-", "error", why,
		 NULL);
	lookup_finish(lk, AUTHQUERY_FAILED, NULL, NULL, NULL); /* no waiter yet */
	return fail_now(sqlstate, msg, msglen, "28000", why);
}

void authquery_cancel(struct authquery_wait *w)
{
	if (!w->lookup)
		return;
	list_del(&w->node);
	w->lookup = NULL;
	/* the lookup goes on: its answer fills the cache for the next login */
}

void authquery_shutdown(void)
{
	if (!lookups.next)
		return;
	while (!list_empty(&lookups)) {
		struct authquery_lookup *lk =
			container_of(list_first(&lookups), struct authquery_lookup, node);
		lookup_finish(lk, AUTHQUERY_FAILED, NULL, "57P01", "pgfleet is shutting down");
	}
}
