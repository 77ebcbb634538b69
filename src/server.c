/*
 * server.c: the server side.  A server connection connects without blocking,
 * logs in with whatever the server asks for, and then carries one client's
 * transactions at a time.  It goes back to the pool at a ReadyForQuery 'I'
 * that answers the client's last Query/Sync (transaction mode), never while
 * a transaction is open or a reply is still on its way.
 *
 * Must not: block, decide which replica to use (router.c), or keep a client
 * waiting on a replica that failed.
 */
#include "server.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/socket.h>
#include <unistd.h>

#include "auth.h"
#include "cancel.h"
#include "client.h"
#include "log.h"
#include "pool.h"
#include "prepared.h"
#include "proto.h"
#include "runtime.h"
#include "scram.h"
#include "stats.h"
#include "tls.h"

#define LOGIN_MSG_MAX (64 * 1024)
#define QUERY_TIMEOUT_GRACE 1.0 /* seconds a canceled query gets to end */

static void server_on_read(evutil_socket_t fd, short what, void *arg);
static void server_on_write(evutil_socket_t fd, short what, void *arg);
static void server_process(struct server *s);

static const char *state_names[] = {"login", "idle", "active", "justfree"};

void server_set_state(struct server *s, enum server_state st)
{
	struct pool *p = s->pool;
	switch (s->state) {
	case SERVER_LOGIN:
		statlist_remove(&p->login, &s->node);
		break;
	case SERVER_IDLE:
		statlist_remove(&p->idle, &s->node);
		break;
	case SERVER_ACTIVE:
		statlist_remove(&p->active, &s->node);
		p->replica->active--;
		if (p->replica->shared)
			atomic_fetch_sub(&p->replica->shared->total, 1);
		/* Bytes of the client's turn: to the server and back to the client. */
		stats_bytes(p->replica, s->io.bytes_out - s->stats_out_mark,
			    s->io.bytes_in - s->stats_in_mark);
		break;
	case SERVER_JUSTFREE:
		statlist_remove(&fleet.justfree_servers, &s->node);
		break;
	default:
		abort();
	}
	s->state = st;
	switch (st) {
	case SERVER_LOGIN:
		statlist_append(&p->login, &s->node);
		break;
	case SERVER_IDLE:
		/* Most recently used first (PgBouncer's default): a light load
		 * keeps reusing a few warm backends, and the rest age out by
		 * server_idle_timeout.  server_round_robin = 1 cycles them all. */
		if (fleet.cfg.server_round_robin)
			statlist_append(&p->idle, &s->node);
		else
			statlist_prepend(&p->idle, &s->node);
		break;
	case SERVER_ACTIVE:
		statlist_append(&p->active, &s->node);
		p->replica->active++;
		if (p->replica->shared)
			atomic_fetch_add(&p->replica->shared->total, 1);
		s->stats_in_mark = s->io.bytes_in;
		s->stats_out_mark = s->io.bytes_out;
		break;
	case SERVER_JUSTFREE:
		statlist_append(&fleet.justfree_servers, &s->node);
		fleet_schedule_free();
		break;
	default:
		abort();
	}
	if (log_enabled(LOG_TRACE))
		log_kv(LOG_TRACE, "server state", "replica", p->replica->addr_str, "state",
		       state_names[st], NULL);
}

static const char *login_user(const struct pool *p)
{
	const struct db_config *dbc = p->group->db->cfg;
	return dbc && dbc->user ? dbc->user : p->group->user;
}

bool server_launch(struct pool *p)
{
	struct replica *r = p->replica;
	if (!pool_reserve(p))
		return false; /* workers = N: the others hold pool_size already */
	int fd = socket(r->addr.ss_family, SOCK_STREAM, 0);
	if (fd < 0) {
		log_error("socket failed", "error", strerror(errno), NULL);
		pool_unreserve(p);
		return false;
	}
	if (!conn_set_socket_options(fd, r->addr.ss_family != AF_UNIX)) {
		close(fd);
		pool_unreserve(p);
		return false;
	}
	struct server *s = calloc(1, sizeof(*s));
	if (!s) {
		close(fd);
		pool_unreserve(p);
		return false;
	}
	s->pool = p;
	conn_setup(&s->io, fd, server_on_read, server_on_write, s);
	s->state = SERVER_LOGIN;
	statlist_append(&p->login, &s->node);
	s->login_step = SLOGIN_CONNECTING;
	s->connect_time = fleet_now();
	s->xact_status = 'I';
	r->server_conns++;
	p->group->connecting++;

	if (connect(fd, (struct sockaddr *)&r->addr, r->addrlen) < 0 && errno != EINPROGRESS) {
		char why[160];
		snprintf(why, sizeof(why), "connect: %s", strerror(errno));
		server_close(s, why);
		return true; /* accounted for: the failure marked the replica down */
	}
	/* Writable means connected (or failed: SO_ERROR tells). */
	conn_write_enable(&s->io, true);
	return true;
}

static void send_startup(struct server *s)
{
	struct pool *p = s->pool;
	const char *params[2 * (PARAM_COUNT + 3) + 1];
	int n = 0;
	params[n++] = "user";
	params[n++] = login_user(p);
	params[n++] = "database";
	params[n++] = p->group->db->dbname;
	/* Start with the first waiting client's settings: most links then need no SET. */
	struct list *first = list_first(&p->group->waiting.head);
	if (first) {
		struct client *c = container_of(first, struct client, node);
		for (int i = 0; i < PARAM_COUNT; i++) {
			if (c->params_set & (1u << i)) {
				params[n++] = param_name(i);
				params[n++] = c->params->value[i];
			}
		}
	}
	params[n] = NULL;
	proto_startup(&s->io.out, params);
	s->login_step = SLOGIN_STARTUP;
}

/* Is the replica asked for TLS?  Not over a Unix socket (libpq does not
 * either). */
static bool tls_wanted(const struct server *s)
{
	return fleet.cfg.server_tls_sslmode != TLS_DISABLE &&
	       s->pool->replica->addr.ss_family != AF_UNIX;
}

static void send_ssl_request(struct server *s)
{
	uint32_t m = proto_begin(&s->io.out, 0);
	proto_put_u32(&s->io.out, PROTO_SSL_REQUEST);
	proto_end(&s->io.out, m);
	s->login_step = SLOGIN_SSL_REQUEST;
}

/* The TLS handshake with the replica, one step per socket event, then the
 * StartupMessage over TLS.  A failed handshake is the replica's fault, like
 * a refused connection: server_close marks it down. */
static void login_tls(struct server *s)
{
	char why[300];
	switch (tls_handshake(&s->io)) {
	case IO_AGAIN:
		return;
	case IO_DONE: {
		if (log_enabled(LOG_DEBUG)) {
			tls_describe(&s->io, why, sizeof(why));
			log_debug("server TLS", "replica", s->pool->replica->addr_str, "tls", why,
				  NULL);
		}
		send_startup(s);
		enum io_result r = conn_flush(&s->io);
		if (r == IO_ERROR)
			server_close(s, "write failed during login");
		else if (r == IO_AGAIN)
			conn_write_enable(&s->io, true);
		return;
	}
	default:
		snprintf(why, sizeof(why), "TLS handshake failed: %s", tls_error());
		server_close(s, why);
		return;
	}
}

/* The one-byte answer to SSLRequest.  True when the login goes on in
 * plaintext (or an error is to be read); false when it stopped here. */
static bool ssl_answer(struct server *s)
{
	char why[300];
	struct iobuf *b = s->io.in;
	if (!b || iobuf_unparsed(b) < 1)
		return false;
	switch (b->data[b->parsed]) {
	case 'S':
		b->parsed++;
		b->done = b->parsed;
		/* Bytes behind the 'S' did not come through TLS (CVE-2021-23222). */
		if (iobuf_unparsed(b)) {
			server_close(s, "received unencrypted data after SSL response");
			return false;
		}
		conn_release_buffer(&s->io);
		if (!tls_connect_begin(&s->io, s->pool->replica->host)) {
			snprintf(why, sizeof(why), "TLS set-up failed: %s", tls_error());
			server_close(s, why);
			return false;
		}
		s->login_step = SLOGIN_TLS_HANDSHAKE;
		login_tls(s);
		return false;
	case 'N':
		b->parsed++;
		b->done = b->parsed;
		if (fleet.cfg.server_tls_sslmode >= TLS_REQUIRE) {
			server_close(s, "server does not support SSL, but SSL was required");
			return false;
		}
		send_startup(s); /* allow, prefer: plaintext */
		return true;
	case 'E':
		/* An error before any negotiation (the server could not fork, ...):
		 * read it as a login error. */
		s->login_step = SLOGIN_STARTUP;
		return true;
	default:
		server_close(s, "unexpected answer to SSLRequest");
		return false;
	}
}

/* Login errors that say the replica, not the user, is at fault. */
static bool replica_fault(const char *sqlstate)
{
	return strncmp(sqlstate, "57", 2) == 0 || strncmp(sqlstate, "53", 2) == 0 ||
	       strncmp(sqlstate, "08", 2) == 0 || strncmp(sqlstate, "58", 2) == 0 ||
	       strncmp(sqlstate, "XX", 2) == 0;
}

/* A login error that every client of the group would get too (bad password,
 * missing database): pass it on to them instead of retrying forever. */
static void fail_waiting_clients(struct pool_group *g, const char *sqlstate, const char *msg)
{
	struct list *it, *tmp;
	list_for_each_safe(it, tmp, &g->waiting.head) {
		struct client *c = container_of(it, struct client, node);
		client_close(c, sqlstate, "%s", msg);
	}
}

static bool login_auth(struct server *s, const uint8_t *body, uint32_t len, char *why,
		       size_t whylen)
{
	struct pool *p = s->pool;
	struct pkt_reader r = pkt_reader_init(body, len);
	uint32_t code = pkt_get_u32(&r);
	const char *user = login_user(p);
	const char *password = auth_server_password(p->group->db->cfg, user);
	char buf[SCRAM_MAX_MSG];
	size_t n;

	if (r.bad) {
		snprintf(why, whylen, "malformed authentication request");
		return false;
	}
	if (code == AUTH_REQ_OK) {
		s->login_step = SLOGIN_PARAMS;
		return true;
	}
	if (!password) {
		snprintf(why, whylen, "server asks for a password and none is configured for %s",
			 user);
		return false;
	}
	enum password_kind kind = auth_password_kind(password);
	switch (code) {
	case AUTH_REQ_CLEARTEXT:
		if (kind != PW_PLAIN) {
			snprintf(why, whylen, "server asks for a cleartext password; only a hash is known");
			return false;
		}
		proto_password(&s->io.out, password);
		return true;
	case AUTH_REQ_MD5: {
		const uint8_t *salt = pkt_get_bytes(&r, 4);
		char hash[36], resp[36];
		if (!salt || kind == PW_SCRAM) {
			snprintf(why, whylen, "cannot answer md5 authentication");
			return false;
		}
		if (kind == PW_MD5)
			memcpy(hash, password, 36);
		else
			md5_password_hash(user, password, hash);
		md5_salted_response(hash, salt, resp);
		proto_password(&s->io.out, resp);
		return true;
	}
	case AUTH_REQ_SASL: {
		if (s->scram) {
			/* A second AuthenticationSASL would orphan the exchange under way. */
			snprintf(why, whylen, "duplicate SASL authentication request");
			return false;
		}
		bool found = false;
		for (;;) {
			const char *mech = pkt_get_str(&r);
			if (!mech || !*mech)
				break;
			if (strcmp(mech, "SCRAM-SHA-256") == 0)
				found = true;
		}
		if (!found || kind != PW_PLAIN) {
			snprintf(why, whylen, found ? "SCRAM needs a plaintext password in auth_file"
						    : "no supported SASL mechanism");
			return false;
		}
		s->scram = calloc(1, sizeof(*s->scram));
		if (!s->scram || !scram_client_first(s->scram, buf, sizeof(buf), &n)) {
			snprintf(why, whylen, "SCRAM start failed");
			return false;
		}
		proto_sasl_initial(&s->io.out, "SCRAM-SHA-256", buf, (uint32_t)n);
		return true;
	}
	case AUTH_REQ_SASL_CONTINUE: {
		if (!s->scram || !scram_client_parse_first(s->scram, r.p + r.pos, r.len - r.pos)) {
			snprintf(why, whylen, "bad SCRAM server-first-message");
			return false;
		}
		struct scram_client *sc = s->scram;
		if (!p->have_keys || p->keys_iterations != sc->iterations ||
		    p->keys_salt_len != sc->salt_len ||
		    memcmp(p->keys_salt, sc->salt, sc->salt_len) != 0) {
			/* PBKDF2 once per (pool, salt): later logins reuse the keys. */
			if (!scram_keys_from_password(password, sc->salt, sc->salt_len,
						      sc->iterations, &p->keys)) {
				snprintf(why, whylen, "SCRAM key derivation failed");
				return false;
			}
			memcpy(p->keys_salt, sc->salt, sc->salt_len);
			p->keys_salt_len = sc->salt_len;
			p->keys_iterations = sc->iterations;
			p->have_keys = true;
		}
		if (!scram_client_final(sc, &p->keys, buf, sizeof(buf), &n)) {
			snprintf(why, whylen, "SCRAM client-final failed");
			return false;
		}
		proto_sasl_response(&s->io.out, buf, (uint32_t)n);
		return true;
	}
	case AUTH_REQ_SASL_FINAL:
		if (!s->scram || !scram_client_verify(s->scram, r.p + r.pos, r.len - r.pos)) {
			snprintf(why, whylen, "server's SCRAM signature does not verify");
			return false;
		}
		free(s->scram);
		s->scram = NULL;
		return true;
	default:
		snprintf(why, whylen, "unsupported authentication request %u", code);
		return false;
	}
}

static void forget_params_match(struct server *s)
{
	s->params_match = 0;
}

static void note_parameter(struct server *s, const uint8_t *body, uint32_t len, bool for_client)
{
	struct pkt_reader r = pkt_reader_init(body, len);
	const char *name = pkt_get_str(&r), *value = pkt_get_str(&r);
	if (!name || !value)
		return;
	int id = param_lookup(name);
	if (id >= 0) {
		param_store(&s->params, id, value);
		forget_params_match(s);
		if (for_client && s->link) {
			if (!param_shared_store(&s->link->params, id, value))
				log_warn("out of memory: a client's parameter not updated", NULL);
			s->link->params_set |= 1u << id;
		}
	} else if (strcmp(name, "in_hot_standby") == 0) {
		/* PostgreSQL 14+: a promotion shows up here at once. */
		struct replica *rep = s->pool->replica;
		enum replica_role role = strcmp(value, "on") == 0 ? ROLE_STANDBY : ROLE_PRIMARY;
		(void)replica_set_role(rep, role, "in_hot_standby");
	}
}

static void login_complete(struct server *s)
{
	struct pool *p = s->pool;
	struct replica *r = p->replica;
	if (p->group->welcome_from == s) {
		p->group->have_welcome = true;
		p->group->welcome_from = NULL;
		if (p->slot)
			pool_welcome_publish(p->group);
	}
	p->group->connecting--;
	r->fails = 0;
	if (r->state == REPLICA_DOWN || r->state == REPLICA_NEW)
		replica_set_state(r, REPLICA_UP, "login succeeded");
	log_debug("server login", "db", p->group->db->name, "replica", r->addr_str, "user",
		  p->group->user, NULL);
	pool_server_ready(s);
}

/* Login replies are small: each is handled whole. */
static void process_login(struct server *s)
{
	char why[200];
	if (s->login_step == SLOGIN_SSL_REQUEST && !ssl_answer(s))
		return;
	for (;;) {
		uint8_t type;
		uint32_t len;
		if (!conn_peek_header(&s->io, &type, &len))
			break;
		if (len < 4 || len > LOGIN_MSG_MAX) {
			server_close(s, "invalid message length during login");
			return;
		}
		uint32_t total = len + 1;
		struct iobuf *b = s->io.in;
		if (iobuf_unparsed(b) < total) {
			if (!iobuf_reserve(&s->io.in, total)) {
				server_close(s, "login message too large");
				return;
			}
			break;
		}
		const uint8_t *body = b->data + b->parsed + 5;
		b->parsed += total;
		b->done = b->parsed;
		switch (type) {
		case 'R':
			if (!login_auth(s, body, len - 4, why, sizeof(why))) {
				struct pool_group *g = s->pool->group;
				s->login_failed_by_user = true; /* credentials, not the replica */
				server_close(s, why);
				fail_waiting_clients(g, "28000", why);
				return;
			}
			break;
		case 'S':
			note_parameter(s, body, len - 4, false);
			if (!s->pool->group->have_welcome) {
				/* The first server to get here speaks for the group. */
				struct pool_group *g = s->pool->group;
				if (!g->welcome_from) {
					g->welcome_from = s;
					wbuf_reset(&g->welcome);
				}
				if (g->welcome_from == s)
					wbuf_put(&g->welcome, body - 5, total);
			}
			break;
		case 'K': {
			struct pkt_reader r = pkt_reader_init(body, len - 4);
			s->backend_pid = pkt_get_u32(&r);
			s->backend_key = pkt_get_u32(&r);
			break;
		}
		case 'Z':
			memcpy(&s->params_at_login, &s->params, sizeof(s->params));
			login_complete(s);
			return;
		case 'E': {
			struct pg_error e;
			struct pool_group *g = s->pool->group;
			if (!proto_parse_error(body, len - 4, &e))
				e.sqlstate = "08P01", e.message = "malformed error";
			snprintf(why, sizeof(why), "%s", e.message);
			if (replica_fault(e.sqlstate)) {
				server_close(s, why);
			} else {
				char sqlstate[6];
				snprintf(sqlstate, sizeof(sqlstate), "%s", e.sqlstate);
				s->login_failed_by_user = true;
				server_close(s, why);
				fail_waiting_clients(g, sqlstate, why);
			}
			return;
		}
		case 'N':
		case 'v':
			break;
		default:
			server_close(s, "unexpected message during login");
			return;
		}
	}
	if (wbuf_pending(&s->io.out)) {
		enum io_result r = conn_flush(&s->io);
		if (r == IO_ERROR) {
			server_close(s, "write failed during login");
			return;
		}
		if (r == IO_AGAIN)
			conn_write_enable(&s->io, true);
	}
}

/* ---- the request queue -------------------------------------------------- */

void server_queue_push(struct server *s, enum req_kind kind, enum req_action action,
		       struct pstmt *ps)
{
	if (s->q_len == s->q_cap) {
		/* Grow the ring, unwrapping it: rare, the size is kept. */
		uint32_t cap = s->q_cap ? s->q_cap * 2 : SERVER_QUEUE_MIN;
		struct request *q = cap <= SERVER_QUEUE_MAX ? calloc(cap, sizeof(*q)) : NULL;
		if (!q) {
			s->overflow = true;
			return;
		}
		for (uint32_t i = 0; i < s->q_len; i++)
			q[i] = s->queue[(s->q_head + i) & (s->q_cap - 1)];
		free(s->queue);
		s->queue = q;
		s->q_cap = cap;
		s->q_head = 0;
	}
	struct request *r = &s->queue[(s->q_head + s->q_len) & (s->q_cap - 1)];
	r->kind = (uint8_t)kind;
	r->action = (uint8_t)action;
	r->ps = ps;
	r->note = NULL;
	if (ps)
		prepared_ref(ps);
	s->q_len++;
	if (action == REQ_FAKE)
		s->q_fakes++;
	if (action == REQ_PASS && (kind == REQ_QUERY || kind == REQ_SYNC))
		s->expect_rfq++;
	if (log_enabled(LOG_TRACE)) {
		char k[4] = {"QSPBDECde"[kind], "PHF"[action], 0};
		log_kv(LOG_TRACE, "request queued", "replica", s->pool->replica->addr_str, "req", k,
		       NULL);
	}
}

struct request *server_queue_last(struct server *s)
{
	return s->q_len ? &s->queue[(s->q_head + s->q_len - 1) & (s->q_cap - 1)] : NULL;
}

static struct request *queue_head(struct server *s)
{
	return s->q_len ? &s->queue[s->q_head] : NULL;
}

static void queue_pop(struct server *s)
{
	struct request *r = &s->queue[s->q_head];
	if (log_enabled(LOG_TRACE)) {
		char k[4] = {"QSPBDECde"[r->kind], "PHF"[r->action], 0};
		log_kv(LOG_TRACE, "request answered", "replica", s->pool->replica->addr_str, "req",
		       k, NULL);
	}
	if (r->action == REQ_PASS && (r->kind == REQ_QUERY || r->kind == REQ_SYNC))
		s->expect_rfq--;
	if (r->action == REQ_FAKE)
		s->q_fakes--;
	if (r->ps)
		prepared_release(r->ps);
	r->ps = NULL;
	free(r->note);
	r->note = NULL;
	s->q_head = (s->q_head + 1) & (s->q_cap - 1);
	s->q_len--;
}

static void queue_clear(struct server *s)
{
	while (s->q_len)
		queue_pop(s);
	s->expect_rfq = 0;
}

/* Does this reply message end the request? */
static bool reply_ends(uint8_t kind, uint8_t type)
{
	switch (kind) {
	case REQ_QUERY:
	case REQ_SYNC:
		return type == 'Z';
	case REQ_PARSE:
		return type == '1';
	case REQ_BIND:
		return type == '2';
	case REQ_DESCRIBE:
		return type == 'T' || type == 'n';
	case REQ_EXECUTE:
		return type == 'C' || type == 'I' || type == 's';
	case REQ_CLOSE:
		return type == '3';
	default:
		return false;
	}
}

/* After an error in the extended protocol the server skips everything up to
 * the next Sync: those requests get no reply, and statements they would have
 * prepared do not exist. */
static void skip_to_sync(struct server *s)
{
	struct request *r;
	while ((r = queue_head(s)) && r->kind != REQ_SYNC) {
		if (r->kind == REQ_PARSE && r->action != REQ_FAKE && r->ps)
			prepared_server_forget(s->stmts, r->ps);
		queue_pop(s);
	}
}

void server_ensure_prepared(struct server *s, struct pstmt *ps)
{
	if (prepared_server_has(s->stmts, ps))
		return;
	struct pstmt *evicted;
	prepared_server_add(&s->stmts, ps, (uint32_t)fleet.cfg.max_prepared_statements, &evicted);
	if (evicted) {
		prepared_put_close(&s->io.out, evicted);
		server_queue_push(s, REQ_CLOSE, REQ_HIDE, NULL);
		prepared_release(evicted);
	}
	prepared_put_parse(&s->io.out, ps);
	server_queue_push(s, REQ_PARSE, REQ_HIDE, ps);
}

void server_forget_statements(struct server *s)
{
	prepared_server_clear(s->stmts);
}

/* Moves the parsed-not-sent replies to the client first, so what pgfleet
 * writes itself lands in order.  False when the client cannot take them. */
static bool flush_to_client(struct server *s, struct client *c)
{
	if (!s->io.in || !iobuf_unsent(s->io.in))
		return true;
	enum io_result r = conn_forward(&s->io, &c->io);
	if (r == IO_DONE)
		return true;
	if (r == IO_ERROR) {
		client_close(c, NULL, "write to client failed");
	} else {
		conn_read_enable(&s->io, false);
		conn_write_enable(&c->io, true);
	}
	return false;
}

/* Answers one faked request for the client.  The server's transaction
 * status is the one a DEALLOCATE would have left. */
static void emit_fake(struct server *s, struct client *c, const struct request *r)
{
	struct wbuf *out = &c->io.out;
	uint32_t m;
	switch (r->kind) {
	case REQ_PARSE:
		m = proto_begin(out, '1');
		proto_end(out, m);
		break;
	case REQ_CLOSE:
		m = proto_begin(out, '3');
		proto_end(out, m);
		break;
	case REQ_DEALLOC:
		m = proto_begin(out, 'C');
		proto_put_str(out, "DEALLOCATE");
		proto_end(out, m);
		proto_ready(out, s->xact_status);
		break;
	case REQ_ERROR:
		proto_error(out, "ERROR", "42P05", r->note ? r->note : "prepared statement exists");
		break;
	default:
		break;
	}
}

/* Fakes at the head of the queue: every reply before them is out.  Counts
 * the fakes answered in *n when n is given. */
static bool drain_fakes(struct server *s, struct client *c, int *n)
{
	struct request *r;
	while ((r = queue_head(s)) && r->action == REQ_FAKE) {
		if (!flush_to_client(s, c))
			return false;
		emit_fake(s, c, r);
		queue_pop(s);
		if (n)
			(*n)++;
	}
	return true;
}

static inline bool drain_head_fakes(struct server *s, struct client *c, int *n)
{
	/* The common case, inline: nothing pgfleet answers itself is queued. */
	return !s->q_fakes || drain_fakes(s, c, n);
}

/* A server with no client: only asynchronous messages and the replies to
 * pgfleet's own queries (reset, SET) can arrive; none goes to a client. */
static void process_unlinked(struct server *s)
{
	for (;;) {
		uint8_t type;
		uint32_t len;
		if (!conn_peek_header(&s->io, &type, &len))
			break;
		uint32_t total = len + 1;
		if (len < 4 || len > LOGIN_MSG_MAX) {
			server_close(s, "invalid message length on idle connection");
			return;
		}
		struct iobuf *b = s->io.in;
		if (iobuf_unparsed(b) < total) {
			if (!iobuf_reserve(&s->io.in, total))
				server_close(s, "message too large");
			return;
		}
		const uint8_t *body = b->data + b->parsed + 5;
		b->parsed += total;
		b->done = b->parsed;
		struct request *r = queue_head(s);
		if (type == 'S') {
			note_parameter(s, body, len - 4, false);
			continue;
		}
		if (type == 'N' || type == 'A')
			continue;
		if (!r || r->action != REQ_HIDE) {
			server_close(s, type == 'E' ? "server sent an error on an idle connection"
						    : "unexpected message on idle connection");
			return;
		}
		if (type == 'E') {
			struct pg_error e;
			if (!proto_parse_error(body, len - 4, &e) || strcmp(e.severity, "FATAL") == 0 ||
			    strcmp(e.severity, "PANIC") == 0) {
				server_close(s, "server error on an idle connection");
				return;
			}
			log_warn("query pgfleet sent failed", "replica", s->pool->replica->addr_str,
				 "sqlstate", e.sqlstate, NULL);
			if (r->kind != REQ_QUERY)
				skip_to_sync(s);
			continue;
		}
		if (type == 'Z')
			s->xact_status = (char)body[0];
		if (reply_ends(r->kind, type))
			queue_pop(s);
	}
	conn_release_buffer(&s->io);
}

static void finish_release(struct server *s)
{
	struct client *c = s->link;
	server_release(s);
	if (c)
		client_unlinked(c);
}

/* Forwards the server's replies to the linked client in the order of its
 * requests: replies to pgfleet's own requests are consumed, faked replies
 * inserted in turn, and the ReadyForQuery that empties the queue at 'I'
 * ends the client's turn on this connection. */
static void forward_to_client(struct server *s)
{
	struct client *c = s->link;
	bool release = false;
	int mode = c->db->pool_mode;

	while (!release) {
		struct iobuf *b = s->io.in;
		if (!b)
			break;
		if (s->io.pkt_remain) {
			uint32_t take = iobuf_unparsed(b);
			if (take > s->io.pkt_remain)
				take = s->io.pkt_remain;
			b->parsed += take;
			s->io.pkt_remain -= take;
			if (s->io.pkt_remain)
				break;
			continue;
		}
		uint8_t type;
		uint32_t len;
		if (!conn_peek_header(&s->io, &type, &len))
			break;
		if (len < 4 || len > (uint64_t)fleet.cfg.max_packet_size) {
			server_close(s, "invalid message length from server");
			return;
		}
		if (!drain_head_fakes(s, c, NULL))
			return;
		uint32_t total = len + 1;
		struct request *r = queue_head(s);
		bool async = type == 'S' || type == 'N' || type == 'A';
		bool extended_error = type == 'E' && r && r->kind != REQ_QUERY;
		bool hidden = r && r->action == REQ_HIDE && !extended_error;
		if (hidden || type == 'Z' || type == 'S') {
			if (iobuf_unparsed(b) < total) {
				if (total > LOGIN_MSG_MAX || !iobuf_reserve(&s->io.in, total)) {
					server_close(s, "oversized message from server");
					return;
				}
				break;
			}
		}
		const uint8_t *body = b->data + b->parsed + 5;
		if (type == 'S')
			note_parameter(s, body, len - 4, true);
		if (hidden) {
			/* A reply to pgfleet's own request: consumed, never forwarded. */
			if (!flush_to_client(s, c))
				return;
			if (type == 'E')
				log_warn("query pgfleet sent failed", "replica",
					 s->pool->replica->addr_str, NULL);
			if (type == 'Z')
				s->xact_status = (char)body[0];
			b->parsed += total;
			b->done = b->parsed;
			if (!async && reply_ends(r->kind, type))
				queue_pop(s);
			continue;
		}
		if (type == 'Z' && mode == POOL_STATEMENT && body[0] != 'I' && s->q_len <= 1) {
			/* A transaction block in statement mode: the client gets an
			 * error in place of this ReadyForQuery, after what came before. */
			if (flush_to_client(s, c))
				client_close(c, "08P01",
					     "transaction blocks not allowed in statement pooling mode");
			return;
		}
		if (type == 'Z') {
			struct replica *rep = s->pool->replica;
			double now = fleet_now();
			/* This query started when it reached the connection, or when
			 * the one before it in a pipeline ended. */
			double qstart = s->query_start > s->ready_time ? s->query_start : s->ready_time;
			s->xact_status = (char)body[0];
			s->ready_time = now; /* timeouts: idle, or the next query, from now */
			stats_query_done(rep, qstart > 0 ? now - qstart : 0);
			if (s->xact_status == 'I') {
				stats_xact_done(rep, s->request_time > 0 ? now - s->request_time : 0);
				s->request_time = 0;
			}
		}
		uint32_t avail = iobuf_unparsed(b);
		if (avail >= total) {
			b->parsed += total;
		} else {
			b->parsed += avail;
			s->io.pkt_remain = total - avail;
		}
		if (extended_error) {
			if (r->kind == REQ_PARSE && r->action != REQ_FAKE && r->ps)
				prepared_server_forget(s->stmts, r->ps);
			skip_to_sync(s);
		} else if (r && !async && reply_ends(r->kind, type)) {
			queue_pop(s);
		}
		if (type == 'Z' && s->q_len == 0 && s->xact_status == 'I' &&
		    c->io.pkt_remain == 0 && mode != POOL_SESSION)
			release = true;
	}
	if (!release && !drain_head_fakes(s, c, NULL))
		return;
	enum io_result r = conn_forward(&s->io, &c->io);
	if (r == IO_AGAIN) {
		/* Back-pressure: read no more from the server until the client drains. */
		s->release_pending = release;
		conn_read_enable(&s->io, false);
		conn_write_enable(&c->io, true);
		return;
	}
	if (r == IO_ERROR) {
		client_close(c, NULL, "write to client failed");
		return;
	}
	conn_read_enable(&s->io, true);
	if (release) {
		finish_release(s);
		return;
	}
	conn_release_buffer(&s->io);
}

void server_drain_fakes(struct server *s)
{
	struct client *c = s->link;
	int answered = 0;
	if (!c || s->state != SERVER_ACTIVE)
		return;
	if (!drain_head_fakes(s, c, &answered) || !answered)
		return;
	enum io_result r = conn_flush(&c->io);
	if (r == IO_ERROR) {
		client_close(c, NULL, "write to client failed");
		return;
	}
	if (r == IO_AGAIN) {
		conn_write_enable(&c->io, true);
		return;
	}
	/* Only faked replies were owed (a DEALLOCATE, say): the turn is over,
	 * unless part of the client's next message already came (it goes here). */
	if (s->q_len == 0 && s->xact_status == 'I' && c->io.pkt_remain == 0 &&
	    c->db->pool_mode != POOL_SESSION && !(c->io.in && !iobuf_empty(c->io.in)) &&
	    !(s->io.in && !iobuf_empty(s->io.in)))
		finish_release(s);
}

static void server_process(struct server *s)
{
	switch (s->state) {
	case SERVER_LOGIN:
		process_login(s);
		return;
	case SERVER_IDLE:
		process_unlinked(s);
		return;
	case SERVER_ACTIVE:
		if (s->link)
			forward_to_client(s);
		else
			process_unlinked(s);
		return;
	case SERVER_JUSTFREE:
		return;
	}
}

static void server_on_read(evutil_socket_t fd, short what, void *arg)
{
	struct server *s = arg;
	if (s->state == SERVER_LOGIN && s->login_step == SLOGIN_TLS_HANDSHAKE) {
		login_tls(s); /* the handshake reads the socket itself */
		return;
	}
	enum io_result r = conn_read(&s->io);
	if (r == IO_EOF || r == IO_ERROR) {
		/* Pass on what arrived before the close (often a FATAL error). */
		if (s->io.in && iobuf_unparsed(s->io.in))
			server_process(s);
		if (s->state != SERVER_JUSTFREE)
			server_close(s, r == IO_EOF ? "server closed the connection"
						    : "server socket error");
		return;
	}
	server_process(s);
}

static void server_on_write(evutil_socket_t fd, short what, void *arg)
{
	struct server *s = arg;
	if (s->state == SERVER_LOGIN && s->login_step == SLOGIN_TLS_HANDSHAKE) {
		login_tls(s);
		return;
	}
	if (s->state == SERVER_LOGIN && s->login_step == SLOGIN_CONNECTING) {
		int err = 0;
		socklen_t len = sizeof(err);
		if (getsockopt(s->io.fd, SOL_SOCKET, SO_ERROR, &err, &len) < 0)
			err = errno;
		if (err) {
			char why[160];
			snprintf(why, sizeof(why), "connect: %s", strerror(err));
			server_close(s, why);
			return;
		}
		if (tls_wanted(s))
			send_ssl_request(s);
		else
			send_startup(s);
		conn_read_enable(&s->io, true);
	}
	enum io_result r = s->link ? conn_forward(&s->link->io, &s->io) : conn_flush(&s->io);
	if (r == IO_AGAIN)
		return;
	conn_write_enable(&s->io, false);
	if (r == IO_ERROR) {
		server_close(s, "write to server failed");
		return;
	}
	if (s->link)
		client_resume(s->link);
}

void server_resume(struct server *s)
{
	if (s->state == SERVER_JUSTFREE)
		return;
	if (s->release_pending && s->link) {
		/* The client took the last bytes of the transaction.  Unless it
		 * pipelined more requests while those bytes waited: they went to
		 * this connection, which answers them before it goes back. */
		s->release_pending = false;
		conn_read_enable(&s->io, true);
		if (s->q_len == 0 && s->link->io.pkt_remain == 0) {
			finish_release(s);
			return;
		}
	}
	conn_read_enable(&s->io, true);
	if (s->io.in && iobuf_unparsed(s->io.in))
		server_process(s);
}

void server_link(struct server *s, struct client *c)
{
	char sql[1024];
	s->link = c;
	c->link = s;
	server_set_state(s, SERVER_ACTIVE);
	s->query_start = fleet_now(); /* the client's request is on its way */
	/* From the moment it needed a server (0: it got one at once). */
	stats_waited(s->pool->replica, c->wait_start > 0 ? s->query_start - c->wait_start : 0);
	c->wait_start = 0;
	s->release_pending = false;
	uint64_t want = param_shared_id(c->params);
	if (c->welcome_pending || want == s->params_match)
		return; /* the usual case: this set was checked on this server */
	if (param_diff_sql(c->params, &s->params, sql, sizeof(sql))) {
		/* Sent ahead of the client's own messages; its replies are hidden.
		 * The ParameterStatus answers change s->params; the next client
		 * with this set compares again, once. */
		proto_query(&s->io.out, sql);
		server_queue_push(s, REQ_QUERY, REQ_HIDE, NULL);
		return;
	}
	s->params_match = want;
}

static bool must_close(struct server *s)
{
	struct replica *r = s->pool->replica;
	if (s->close_needed || r->state == REPLICA_DRAINING)
		return true;
	if (fleet.cfg.server_lifetime > 0 &&
	    fleet_now() - s->connect_time > fleet.cfg.server_lifetime)
		return true;
	return false;
}

void server_release(struct server *s)
{
	struct client *c = s->link;
	if (c)
		c->link = NULL;
	s->link = NULL;
	s->release_pending = false;
	if (must_close(s)) {
		server_close(s, "closed after use (lifetime or draining)");
		return;
	}
	pool_server_ready(s);
}

void server_cancel_done(struct server *s)
{
	if (s->cancels > 0)
		s->cancels--;
	if (s->cancels > 0 || !s->ready_after_cancel)
		return;
	s->ready_after_cancel = false;
	if (s->state != SERVER_ACTIVE || s->link)
		return;
	if (must_close(s)) {
		server_close(s, "closed after use (lifetime or draining)");
		return;
	}
	pool_server_ready(s);
}

void server_unlink_client(struct server *s)
{
	struct client *c = s->link;
	if (c)
		c->link = NULL;
	s->link = NULL;
	if (s->state != SERVER_ACTIVE)
		return;
	bool clean = s->xact_status == 'I' && s->q_len == 0 && s->io.pkt_remain == 0 &&
		     (!c || c->io.pkt_remain == 0) && (!s->io.in || iobuf_empty(s->io.in));
	if (!clean || must_close(s)) {
		server_close(s, "client left in the middle of a transaction");
		return;
	}
	int mode = c ? c->db->pool_mode : POOL_TRANSACTION;
	const char *reset = fleet.cfg.server_reset_query;
	if (*reset && (mode == POOL_SESSION || fleet.cfg.server_reset_query_always)) {
		/* DISCARD ALL resets every setting to what the login set. */
		proto_query(&s->io.out, reset);
		server_queue_push(s, REQ_QUERY, REQ_HIDE, NULL);
		memcpy(&s->params, &s->params_at_login, sizeof(s->params));
		forget_params_match(s);
		/* DISCARD ALL (the default) drops prepared statements too; forget
		 * them whatever the reset query is, to be safe. */
		server_forget_statements(s);
		if (conn_flush(&s->io) == IO_ERROR) {
			server_close(s, "write failed");
			return;
		}
		if (wbuf_pending(&s->io.out))
			conn_write_enable(&s->io, true);
	}
	pool_server_ready(s);
}

void server_close(struct server *s, const char *reason)
{
	if (s->state == SERVER_JUSTFREE)
		return;
	struct pool *p = s->pool;
	struct replica *r = p->replica;
	struct client *c = s->link;
	if (c) {
		c->link = NULL;
		s->link = NULL;
		client_close(c, "08006", "server connection to replica %s lost: %s", r->addr_str,
			     reason);
	}
	bool was_login = s->state == SERVER_LOGIN;
	if (was_login) {
		p->group->connecting--;
		if (p->group->welcome_from == s) {
			wbuf_reset(&p->group->welcome);
			p->group->welcome_from = NULL;
		}
		if (!s->login_failed_by_user) {
			/* The replica would not take a connection: no new work for it. */
			snprintf(r->last_error, sizeof(r->last_error), "%s", reason);
			r->fails++;
			r->retry_at = fleet_now() + fleet.cfg.server_login_retry;
			if (r->state != REPLICA_DOWN && r->state != REPLICA_DRAINING)
				replica_set_state(r, REPLICA_DOWN, reason);
		}
	}
	log_kv(was_login ? LOG_WARN : LOG_DEBUG, "server closed", "db", p->group->db->name,
	       "replica", r->addr_str, "reason", reason, NULL);
	if (s->scram) {
		memset(s->scram, 0, sizeof(*s->scram));
		free(s->scram);
		s->scram = NULL;
	}
	queue_clear(s);
	free(s->queue);
	s->queue = NULL;
	s->q_cap = 0;
	prepared_server_free(&s->stmts);
	if (s->cancels) {
		cancel_forget_server(s);
		s->cancels = 0;
		s->ready_after_cancel = false;
	}
	conn_teardown(&s->io);
	r->server_conns--;
	server_set_state(s, SERVER_JUSTFREE);
	pool_unreserve(p);
	/* Clients waiting for this replica's connection may go elsewhere now. */
	if (was_login)
		pool_kick(p->group);
}

void server_free_list(void)
{
	struct list *it;
	while ((it = statlist_pop(&fleet.justfree_servers))) {
		struct server *s = container_of(it, struct server, node);
		free(s);
	}
	database_reap();
}

/* query_timeout: a query running longer is canceled on its own backend, the
 * way a client's cancel is.  If it still has not ended a grace second later
 * (a hung replica, a query deaf to cancels), its server connection is closed
 * and the client told why. */
static void check_query_timeout(struct server *s, double now)
{
	double limit = fleet.cfg.query_timeout;
	struct client *c = s->link;
	if (limit <= 0 || !c || s->expect_rfq <= 0)
		return;
	double started = s->query_start > s->ready_time ? s->query_start : s->ready_time;
	if (now - started <= limit)
		return;
	if (s->timeout_cancel < started) {
		s->timeout_cancel = now;
		(void)cancel_server_query(s, "query_timeout");
		return;
	}
	if (now - s->timeout_cancel >= QUERY_TIMEOUT_GRACE)
		client_close(c, "57014", "query_timeout");
}

void server_janitor(double now)
{
	struct list *dit, *git, *pit, *it, *tmp;
	const struct config *cfg = &fleet.cfg;
	list_for_each(dit, &fleet.databases) {
		struct database *db = container_of(dit, struct database, node);
		list_for_each(git, &db->groups) {
			struct pool_group *g = container_of(git, struct pool_group, node);
			list_for_each(pit, &g->pools) {
				struct pool *p = container_of(pit, struct pool, group_node);
				list_for_each_safe(it, tmp, &p->login.head) {
					struct server *s = container_of(it, struct server, node);
					if (cfg->server_connect_timeout > 0 &&
					    now - s->connect_time > cfg->server_connect_timeout)
						server_close(s, "server_connect_timeout");
				}
				list_for_each_safe(it, tmp, &p->idle.head) {
					struct server *s = container_of(it, struct server, node);
					bool idle_long = cfg->server_idle_timeout > 0 &&
							 now - s->last_used > cfg->server_idle_timeout &&
							 pool_total(p) > cfg->min_pool_size;
					if (idle_long)
						server_close(s, "server_idle_timeout");
					else if (must_close(s))
						server_close(s, "server_lifetime");
				}
				list_for_each_safe(it, tmp, &p->active.head) {
					check_query_timeout(container_of(it, struct server, node), now);
				}
			}
		}
	}
}
