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
#include "client.h"
#include "log.h"
#include "pool.h"
#include "proto.h"
#include "runtime.h"
#include "scram.h"

#define LOGIN_MSG_MAX (64 * 1024)

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
		statlist_append(&p->idle, &s->node);
		break;
	case SERVER_ACTIVE:
		statlist_append(&p->active, &s->node);
		p->replica->active++;
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
	int fd = socket(r->addr.ss_family, SOCK_STREAM, 0);
	if (fd < 0) {
		log_error("socket failed", "error", strerror(errno), NULL);
		return false;
	}
	if (!conn_set_socket_options(fd, r->addr.ss_family != AF_UNIX)) {
		close(fd);
		return false;
	}
	struct server *s = calloc(1, sizeof(*s));
	if (!s) {
		close(fd);
		return false;
	}
	s->pool = p;
	conn_setup(&s->io, fd, server_on_read, server_on_write, s);
	s->state = SERVER_LOGIN;
	statlist_append(&p->login, &s->node);
	s->login_step = SLOGIN_CONNECTING;
	s->connect_time = fleet_now();
	s->xact_status = 'I';
	s->tail_clean = true;
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
				params[n++] = c->params.value[i];
			}
		}
	}
	params[n] = NULL;
	proto_startup(&s->io.out, params);
	s->login_step = SLOGIN_STARTUP;
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

static void note_parameter(struct server *s, const uint8_t *body, uint32_t len, bool for_client)
{
	struct pkt_reader r = pkt_reader_init(body, len);
	const char *name = pkt_get_str(&r), *value = pkt_get_str(&r);
	if (!name || !value)
		return;
	int id = param_lookup(name);
	if (id >= 0) {
		snprintf(s->params.value[id], PARAM_VALUE_MAX, "%s", value);
		if (for_client && s->link) {
			snprintf(s->link->params.value[id], PARAM_VALUE_MAX, "%s", value);
			s->link->params_set |= 1u << id;
		}
	} else if (strcmp(name, "in_hot_standby") == 0) {
		/* PostgreSQL 14+: a promotion shows up here at once. */
		struct replica *rep = s->pool->replica;
		enum replica_role role = strcmp(value, "on") == 0 ? ROLE_STANDBY : ROLE_PRIMARY;
		if (rep->role != role) {
			log_info("replica role", "db", rep->db->name, "addr", rep->addr_str, "role",
				 replica_role_name(role), NULL);
			rep->role = role;
		}
	}
}

static void login_complete(struct server *s)
{
	struct pool *p = s->pool;
	struct replica *r = p->replica;
	if (p->group->welcome_from == s) {
		p->group->have_welcome = true;
		p->group->welcome_from = NULL;
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
		if (type == 'S') {
			note_parameter(s, body, len - 4, false);
		} else if (type == 'Z' && s->hidden_rfq > 0) {
			s->hidden_rfq--;
			s->xact_status = (char)body[0];
		} else if (type == 'E') {
			struct pg_error e;
			if (proto_parse_error(body, len - 4, &e) && s->hidden_rfq > 0 &&
			    strcmp(e.severity, "FATAL") != 0 && strcmp(e.severity, "PANIC") != 0) {
				log_warn("reset query failed", "replica", s->pool->replica->addr_str,
					 "sqlstate", e.sqlstate, NULL);
				continue;
			}
			server_close(s, "server sent an error on an idle connection");
			return;
		} else if (type != 'N' && type != 'A' && type != 'C' && s->hidden_rfq == 0) {
			server_close(s, "unexpected message on idle connection");
			return;
		}
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

/* Forwards the server's replies to the linked client, watching for the
 * ReadyForQuery that ends its turn. */
static void forward_to_client(struct server *s)
{
	struct client *c = s->link;
	struct iobuf *b = s->io.in;
	bool release = false;
	int mode = c->db->pool_mode;

	while (b && !release) {
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
		uint32_t total = len + 1;
		bool hidden = s->hidden_rfq > 0;
		if (hidden || type == 'Z' || type == 'S') {
			if (iobuf_unparsed(b) < total) {
				if (total > LOGIN_MSG_MAX || !iobuf_reserve(&s->io.in, total)) {
					server_close(s, "oversized message from server");
					return;
				}
				b = s->io.in;
				break;
			}
		}
		const uint8_t *body = b->data + b->parsed + 5;
		if (hidden) {
			/* A reply to pgfleet's own SET: everything before it is sent
			 * first, then it is consumed, never forwarded. */
			if (iobuf_unsent(b)) {
				enum io_result r = conn_forward(&s->io, &c->io);
				if (r != IO_DONE) {
					if (r == IO_ERROR) {
						client_close(c, NULL, "write to client failed");
					} else {
						conn_read_enable(&s->io, false);
						conn_write_enable(&c->io, true);
					}
					return;
				}
			}
			if (type == 'S')
				note_parameter(s, body, len - 4, true);
			else if (type == 'Z')
				s->hidden_rfq--;
			else if (type == 'E')
				log_warn("parameter SET failed", "replica", s->pool->replica->addr_str,
					 NULL);
			b->parsed += total;
			b->done = b->parsed;
			continue;
		}
		if (type == 'Z' && mode == POOL_STATEMENT && body[0] != 'I' && s->expect_rfq <= 1) {
			/* A transaction block in statement mode: the client gets an
			 * error in place of this ReadyForQuery, after what came before. */
			if (conn_forward(&s->io, &c->io) == IO_DONE)
				client_close(c, "08P01",
					     "transaction blocks not allowed in statement pooling mode");
			else
				client_close(c, NULL, "transaction block in statement pooling mode");
			return;
		}
		if (type == 'Z') {
			struct replica *rep = s->pool->replica;
			s->xact_status = (char)body[0];
			s->expect_rfq--;
			rep->queries++;
			if (s->xact_status == 'I') {
				rep->xacts++;
				rep->xact_us += (uint64_t)((fleet_now() - s->request_time) * 1e6);
				s->request_time = 0;
			}
			b->parsed += total;
			if (s->expect_rfq <= 0 && s->tail_clean && c->io.pkt_remain == 0 &&
			    mode != POOL_SESSION && s->xact_status == 'I')
				release = true;
			continue;
		}
		if (type == 'S')
			note_parameter(s, body, len - 4, true);
		uint32_t avail = iobuf_unparsed(b);
		if (avail >= total) {
			b->parsed += total;
		} else {
			b->parsed += avail;
			s->io.pkt_remain = total - avail;
		}
	}
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
		/* The client took the last bytes of the transaction. */
		s->release_pending = false;
		conn_read_enable(&s->io, true);
		finish_release(s);
		return;
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
	s->expect_rfq = 0;
	s->tail_clean = true;
	s->release_pending = false;
	if (!c->welcome_pending && param_diff_sql(&c->params, &s->params, sql, sizeof(sql))) {
		/* Sent ahead of the client's own messages; its replies are hidden. */
		proto_query(&s->io.out, sql);
		s->hidden_rfq++;
	}
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
	s->expect_rfq = 0;
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
	bool clean = s->xact_status == 'I' && s->expect_rfq <= 0 && s->tail_clean &&
		     s->io.pkt_remain == 0 && (!c || c->io.pkt_remain == 0) &&
		     (!s->io.in || iobuf_empty(s->io.in));
	if (!clean || must_close(s)) {
		server_close(s, "client left in the middle of a transaction");
		return;
	}
	int mode = c ? c->db->pool_mode : POOL_TRANSACTION;
	const char *reset = fleet.cfg.server_reset_query;
	if (*reset && (mode == POOL_SESSION || fleet.cfg.server_reset_query_always)) {
		/* DISCARD ALL resets every setting to what the login set. */
		proto_query(&s->io.out, reset);
		s->hidden_rfq++;
		memcpy(&s->params, &s->params_at_login, sizeof(s->params));
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
	conn_teardown(&s->io);
	r->server_conns--;
	server_set_state(s, SERVER_JUSTFREE);
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
			}
		}
	}
}
