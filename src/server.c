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

#include <openssl/crypto.h>

#include "auth.h"
#include "authquery.h"
#include "cancel.h"
#include "client.h"
#include "intern.h"
#include "log.h"
#include "pool.h"
#include "prepared.h"
#include "proto.h"
#include "runtime.h"
#include "scram.h"
#include "stats.h"
#include "tls.h"
#include "txn.h"

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

static bool launch(struct pool *p, bool warm)
{
	struct replica *r = p->replica;
	if (!pool_reserve(p, warm))
		return false; /* no room: pool_size (every worker's) or a limit */
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
	s->id = fleet_next_id();
	s->pool = p;
	conn_setup(&s->io, fd, server_on_read, server_on_write, s);
	s->state = SERVER_LOGIN;
	statlist_append(&p->login, &s->node);
	s->login_step = SLOGIN_CONNECTING;
	s->connect_time = fleet_now();
	s->xact_status = 'I';
	s->defaults_gen = p->group->db->defaults_gen;
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

bool server_launch(struct pool *p)
{
	return launch(p, false);
}

bool server_launch_warm(struct pool *p)
{
	return launch(p, true);
}

static void send_startup(struct server *s)
{
	struct pool *p = s->pool;
	const char *params[5];
	int n = 0;
	/* Neutral: never a client's settings, so that this connection's
	 * defaults (what RESET returns to) are the role's and the database's,
	 * the same for every client, and its known set means what it says. */
	params[n++] = "user";
	params[n++] = login_user(p);
	params[n++] = "database";
	params[n++] = p->group->db->dbname;
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

/* What a login step made of the server's authentication request. */
enum auth_step {
	AUTH_STEP_OK,      /* answered (or authenticated): the login goes on */
	AUTH_STEP_REFUSED, /* pgfleet cannot or will not log in this way: the user's problem */
	AUTH_STEP_BROKEN,  /* the server broke the protocol: the replica's problem */
};

/*
 * SCRAM pass-through: the password known for user is a SCRAM secret, so the
 * keys are the ones recovered from a client's own proof (auth.h), usable
 * only if the server holds that same secret: its salt and iteration count
 * say so.  False with the reason in why.
 */
static bool passthrough_keys(const char *user, const char *secret_text,
			     const struct scram_client *sc, struct scram_keys *keys, char *why,
			     size_t whylen)
{
	struct scram_secret sec;
	bool ok = false;
	if (!scram_parse_secret(secret_text, &sec)) {
		snprintf(why, whylen, "the SCRAM secret known for user \"%s\" is malformed", user);
	} else if (sec.iterations != sc->iterations || sec.salt_len != sc->salt_len ||
		   memcmp(sec.salt, sc->salt, sc->salt_len) != 0) {
		snprintf(why, whylen,
			 "SCRAM pass-through for user \"%.63s\" impossible: the server's secret "
			 "has another salt or iteration count than the one pgfleet holds",
			 user);
	} else if (!auth_passthrough_keys(user, &sec, keys)) {
		snprintf(why, whylen,
			 "no SCRAM keys for user \"%.63s\" yet: only its SCRAM secret is known, "
			 "and a client of that user must log in first",
			 user);
	} else {
		ok = true;
	}
	OPENSSL_cleanse(&sec, sizeof(sec));
	return ok;
}

static enum auth_step login_auth_as(struct server *s, const uint8_t *body, uint32_t len,
				    const char *user, const char *password, char *why,
				    size_t whylen);

/* The password for the login: the entry's, auth_file's, else the secret
 * auth_query last gave for this user (pass-through or md5 hash). */
static enum auth_step login_auth(struct server *s, const uint8_t *body, uint32_t len, char *why,
				 size_t whylen)
{
	struct pool *p = s->pool;
	const char *user = login_user(p);
	const char *password = auth_server_password(p->group->db->cfg, user);
	char aq[AUTHQUERY_SECRET_MAX];
	if (!password && authquery_secret(p->group->db->name, user, aq, sizeof(aq)))
		password = aq;
	enum auth_step st = login_auth_as(s, body, len, user, password, why, whylen);
	explicit_bzero(aq, sizeof(aq));
	return st;
}

static enum auth_step login_auth_as(struct server *s, const uint8_t *body, uint32_t len,
				    const char *user, const char *password, char *why,
				    size_t whylen)
{
	struct pool *p = s->pool;
	struct pkt_reader r = pkt_reader_init(body, len);
	uint32_t code = pkt_get_u32(&r);
	char buf[SCRAM_MAX_MSG];
	size_t n;

	if (r.bad) {
		snprintf(why, whylen, "protocol violation: malformed authentication request");
		return AUTH_STEP_BROKEN;
	}
	if (code == AUTH_REQ_OK) {
		if (s->scram) {
			/* libpq refuses this too: the server never proved it knows
			 * the password (its SCRAM signature). */
			snprintf(why, whylen,
				 "protocol violation: AuthenticationOk before the SCRAM exchange ended");
			return AUTH_STEP_BROKEN;
		}
		s->login_step = SLOGIN_PARAMS;
		return AUTH_STEP_OK;
	}
	if (!password) {
		snprintf(why, whylen, "server asks for a password and none is configured for %s",
			 user);
		return AUTH_STEP_REFUSED;
	}
	enum password_kind kind = auth_password_kind(password);
	switch (code) {
	case AUTH_REQ_CLEARTEXT:
		if (kind != PW_PLAIN) {
			snprintf(why, whylen, "server asks for a cleartext password; only a hash is known");
			return AUTH_STEP_REFUSED;
		}
		proto_password(&s->io.out, password);
		return AUTH_STEP_OK;
	case AUTH_REQ_MD5: {
		const uint8_t *salt = pkt_get_bytes(&r, 4);
		char hash[36], resp[36];
		if (!salt) {
			snprintf(why, whylen, "protocol violation: md5 request without a salt");
			return AUTH_STEP_BROKEN;
		}
		if (kind == PW_SCRAM) {
			snprintf(why, whylen,
				 "server asks for md5 and the password known for user \"%s\" is a "
				 "SCRAM secret, which cannot answer md5",
				 user);
			return AUTH_STEP_REFUSED;
		}
		if (kind == PW_MD5)
			memcpy(hash, password, 36);
		else
			md5_password_hash(user, password, hash);
		md5_salted_response(hash, salt, resp);
		proto_password(&s->io.out, resp);
		return AUTH_STEP_OK;
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
		if (!found) {
			snprintf(why, whylen, "no supported SASL mechanism");
			return AUTH_STEP_REFUSED;
		}
		if (kind == PW_MD5) {
			snprintf(why, whylen,
				 "server asks for SCRAM and the password known for user \"%s\" is an "
				 "md5 hash, which cannot answer SCRAM",
				 user);
			return AUTH_STEP_REFUSED;
		}
		if (s->scram) {
			/* It would orphan the exchange under way (libpq refuses it too). */
			snprintf(why, whylen, "protocol violation: a second SASL authentication request");
			return AUTH_STEP_BROKEN;
		}
		s->scram = calloc(1, sizeof(*s->scram));
		if (!s->scram || !scram_client_first(s->scram, buf, sizeof(buf), &n)) {
			snprintf(why, whylen, "SCRAM start failed");
			return AUTH_STEP_REFUSED;
		}
		proto_sasl_initial(&s->io.out, "SCRAM-SHA-256", buf, (uint32_t)n);
		return AUTH_STEP_OK;
	}
	case AUTH_REQ_SASL_CONTINUE: {
		if (!s->scram || !scram_client_parse_first(s->scram, r.p + r.pos, r.len - r.pos)) {
			snprintf(why, whylen, "protocol violation: %s",
				 s->scram ? "bad SCRAM server-first-message"
					  : "SASL continue without a SASL start");
			return AUTH_STEP_BROKEN;
		}
		struct scram_client *sc = s->scram;
		/* Checked before the key cache: a server that changes its salt
		 * at every login would otherwise get a PBKDF2 run each time,
		 * inline on the event loop. */
		if (sc->iterations > fleet.cfg.server_scram_max_iterations) {
			char it[16], max[24];
			snprintf(it, sizeof(it), "%d", sc->iterations);
			snprintf(max, sizeof(max), "%lld", fleet.cfg.server_scram_max_iterations);
			log_warn("server SCRAM iteration count refused", "db", p->group->db->name,
				 "replica", p->replica->addr_str, "iterations", it,
				 "server_scram_max_iterations", max, NULL);
			snprintf(why, whylen,
				 "server asks for SCRAM with %d iterations, more than "
				 "server_scram_max_iterations (%lld)",
				 sc->iterations, fleet.cfg.server_scram_max_iterations);
			return AUTH_STEP_REFUSED;
		}
		if (kind == PW_SCRAM) {
			if (!passthrough_keys(user, password, sc, &p->keys, why, whylen))
				return AUTH_STEP_REFUSED;
			p->have_keys = false; /* not a password's: never reused by salt */
		} else if (!p->have_keys || p->keys_iterations != sc->iterations ||
		    p->keys_salt_len != sc->salt_len ||
		    memcmp(p->keys_salt, sc->salt, sc->salt_len) != 0) {
			/* PBKDF2 once per (pool, salt): later logins reuse the keys. */
			if (!scram_keys_from_password(password, sc->salt, sc->salt_len,
						      sc->iterations, &p->keys)) {
				snprintf(why, whylen, "SCRAM key derivation failed");
				return AUTH_STEP_REFUSED;
			}
			memcpy(p->keys_salt, sc->salt, sc->salt_len);
			p->keys_salt_len = sc->salt_len;
			p->keys_iterations = sc->iterations;
			p->have_keys = true;
		}
		bool ok = scram_client_final(sc, &p->keys, buf, sizeof(buf), &n);
		if (kind == PW_SCRAM)
			OPENSSL_cleanse(&p->keys, sizeof(p->keys));
		if (!ok) {
			snprintf(why, whylen, "SCRAM client-final failed");
			return AUTH_STEP_REFUSED;
		}
		proto_sasl_response(&s->io.out, buf, (uint32_t)n);
		return AUTH_STEP_OK;
	}
	case AUTH_REQ_SASL_FINAL:
		if (!s->scram) {
			snprintf(why, whylen, "protocol violation: SASL final without a SASL start");
			return AUTH_STEP_BROKEN;
		}
		if (!scram_client_verify(s->scram, r.p + r.pos, r.len - r.pos)) {
			snprintf(why, whylen, "server's SCRAM signature does not verify");
			return AUTH_STEP_REFUSED;
		}
		free(s->scram);
		s->scram = NULL;
		return AUTH_STEP_OK;
	default:
		snprintf(why, whylen, "unsupported authentication request %u", code);
		return AUTH_STEP_REFUSED;
	}
}

/* The connection's settings are its defaults (after login, after the
 * reset query): nothing known to differ. */
static void params_neutral(struct server *s)
{
	const struct param_set *e = param_set_empty();
	param_set_release(s->params);
	s->params = e;
}

/* Reported parameters no client sets with SET: not tracked. */
static bool param_untracked(const char *name)
{
	static const char *const fixed[] = {"server_version", "server_encoding",
					    "integer_datetimes", "in_hot_standby", "is_superuser",
					    "session_authorization"};
	for (size_t i = 0; i < sizeof(fixed) / sizeof(fixed[0]); i++)
		if (strcasecmp(name, fixed[i]) == 0)
			return true;
	return false;
}

/* A ParameterStatus: at login (login) one of the connection's defaults; in
 * a reply to a client's own statement (for_client) a change of its session
 * that the client and the connection's known set both learn (they are the
 * same set while linked, so they stay the same set); in a reply to
 * pgfleet's hidden SET nothing new (the known set was set with it). */
static void note_parameter(struct server *s, const uint8_t *body, uint32_t len, bool for_client,
			   bool login)
{
	struct pkt_reader r = pkt_reader_init(body, len);
	const char *name = pkt_get_str(&r), *value = pkt_get_str(&r);
	if (!name || !value)
		return;
	if (strcmp(name, "in_hot_standby") == 0) {
		/* PostgreSQL 14+: a promotion shows up here at once. */
		struct replica *rep = s->pool->replica;
		enum replica_role role = strcmp(value, "on") == 0 ? ROLE_STANDBY : ROLE_PRIMARY;
		(void)replica_set_role(rep, role, "in_hot_standby");
	}
	if (param_untracked(name) || !param_name_valid(name))
		return;
	if (login) {
		if (param_set_store(&s->params_login, name, value, NULL) != PARAM_OK)
			log_warn("a server parameter not recorded", "replica",
				 s->pool->replica->addr_str, "param", name, NULL);
		return;
	}
	if (!for_client || !s->link)
		return;
	struct client *c = s->link;
	/* Back to the connection's default while the client started with
	 * another value: a RESET (which on a direct connection returns the
	 * startup value) or a SET to just that value?  Asked at the next
	 * ReadyForQuery (param_set_restore_sql). */
	const char *dflt = param_get(s->params_login, name);
	const char *own = param_get(c->params_startup, name);
	if (dflt && own && param_value_same(name, value, dflt) && !param_value_same(name, value, own))
		s->reset_check = true;
	if (param_set_store(&c->params, name, value, NULL) != PARAM_OK)
		log_warn("out of memory: a client's parameter not updated", NULL);
	/* The session has it now; equal sets stay one interned set. */
	if (param_set_store(&s->params, name, value, NULL) != PARAM_OK)
		log_warn("out of memory: a server's parameter not updated", NULL);
}

/* A login's parameters against the pool's previous login's: other values
 * mean role or database defaults changed (ALTER ROLE/DATABASE ... SET), so
 * the pool's older connections, whose sessions started with the old ones,
 * are retired; the same values after a RELOAD make them current again. */
static void defaults_seen(struct server *s, uint32_t hash)
{
	struct pool *p = s->pool;
	unsigned gen = p->group->db->defaults_gen;
	struct list *it, *tmp;
	s->welcome_hash = hash;
	bool changed = p->welcome_hash && p->welcome_hash != hash;
	p->welcome_hash = hash;
	list_for_each(it, &p->active.head) {
		struct server *o = container_of(it, struct server, node);
		if (o->welcome_hash != hash)
			o->close_needed = true;
		else if (s->defaults_gen == gen)
			o->defaults_gen = gen;
	}
	list_for_each_safe(it, tmp, &p->idle.head) {
		struct server *o = container_of(it, struct server, node);
		if (o->welcome_hash != hash)
			server_close(o, "role or database defaults changed");
		else if (s->defaults_gen == gen)
			o->defaults_gen = gen;
	}
	if (changed)
		log_info("role or database defaults changed", "db", p->group->db->name, "user",
			 p->group->user, "replica", p->replica->addr_str, NULL);
}

static void login_complete(struct server *s)
{
	struct pool *p = s->pool;
	struct replica *r = p->replica;
	/* New clients are greeted with the newest login's parameters, so that
	 * an ALTER ROLE/DATABASE ... SET reaches them with the next connection. */
	struct pool_group *g = p->group;
	wbuf_reset(&g->welcome);
	uint32_t hash = INTERN_HASH_SEED;
	for (size_t i = 0; i < s->login_welcome.len; i++)
		hash = intern_hash_byte(hash, s->login_welcome.data[i]);
	if (s->login_welcome.len)
		wbuf_put(&g->welcome, s->login_welcome.data, s->login_welcome.len);
	wbuf_free(&s->login_welcome);
	defaults_seen(s, hash ? hash : 1);
	g->have_welcome = true;
	if (p->slot)
		pool_welcome_publish(g);
	p->group->connecting--;
	r->fails = 0;
	if (r->state == REPLICA_DOWN || r->state == REPLICA_NEW)
		replica_set_state(r, REPLICA_UP, "login succeeded");
	log_debug("server login", "db", p->group->db->name, "replica", r->addr_str, "user",
		  p->group->user, NULL);
	pool_server_ready(s);
}

/* A message type for a log line: the letter, or its code when unprintable. */
static const char *type_text(uint8_t type, char buf[8])
{
	if (type >= 0x21 && type < 0x7f)
		snprintf(buf, 8, "'%c'", type);
	else
		snprintf(buf, 8, "0x%02x", type);
	return buf;
}

/* A login the server broke (bad message, wrong order, over a bound): its
 * fault, like a refused connection, so server_close marks the replica down
 * and counts the failed attempt; clients waiting keep waiting for another. */
static void login_broken(struct server *s, const char *why)
{
	server_close(s, why);
}

/* Login replies are small: each is handled whole.  Everything a server sends
 * until its ReadyForQuery counts against server_login_max_bytes and
 * server_login_max_messages (the group's welcome data is part of it, so it
 * is bounded too), and must come in the protocol's order: authentication
 * requests, then AuthenticationOk, then ParameterStatus / BackendKeyData,
 * then ReadyForQuery (protocol.html, "Start-up").  Notices and errors may
 * come at any point. */
static void process_login(struct server *s)
{
	char why[300], t[8];
	const struct config *cfg = &fleet.cfg;
	if (s->login_step == SLOGIN_SSL_REQUEST && !ssl_answer(s))
		return;
	for (;;) {
		uint8_t type;
		uint32_t len;
		if (!conn_peek_header(&s->io, &type, &len))
			break;
		if (len < 4 || len > LOGIN_MSG_MAX || !proto_server_len_ok(type, len)) {
			snprintf(why, sizeof(why),
				 "protocol violation: message %s of length %u during login",
				 type_text(type, t), len);
			login_broken(s, why);
			return;
		}
		uint32_t total = len + 1;
		if (s->login_msgs >= cfg->server_login_max_messages) {
			snprintf(why, sizeof(why),
				 "login exceeded server_login_max_messages (%lld messages)",
				 cfg->server_login_max_messages);
			login_broken(s, why);
			return;
		}
		if ((long long)s->login_bytes + total > cfg->server_login_max_bytes) {
			snprintf(why, sizeof(why),
				 "login exceeded server_login_max_bytes (%lld bytes)",
				 cfg->server_login_max_bytes);
			login_broken(s, why);
			return;
		}
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
		s->login_msgs++;
		s->login_bytes += total;
		bool authed = s->login_step == SLOGIN_PARAMS;
		if (!authed && (type == 'S' || type == 'K' || type == 'Z')) {
			snprintf(why, sizeof(why),
				 "protocol violation: message %s before AuthenticationOk",
				 type_text(type, t));
			login_broken(s, why);
			return;
		}
		switch (type) {
		case 'R':
			if (authed) {
				login_broken(s, "protocol violation: authentication request after "
						"AuthenticationOk");
				return;
			}
			switch (login_auth(s, body, len - 4, why, sizeof(why))) {
			case AUTH_STEP_OK:
				break;
			case AUTH_STEP_BROKEN:
				login_broken(s, why);
				return;
			case AUTH_STEP_REFUSED: {
				struct pool_group *g = s->pool->group;
				s->login_failed_by_user = true; /* credentials, not the replica */
				server_close(s, why);
				fail_waiting_clients(g, "28000", why);
				return;
			}
			}
			break;
		case 'S':
			note_parameter(s, body, len - 4, false, true);
			/* Every login's: the newest speaks for the group (login_complete). */
			wbuf_put(&s->login_welcome, body - 5, total);
			break;
		case 'K': {
			struct pkt_reader r = pkt_reader_init(body, len - 4);
			s->backend_pid = pkt_get_u32(&r);
			s->backend_key = pkt_get_u32(&r);
			break;
		}
		case 'Z': {
			char status;
			/* A new session is never in a transaction. */
			if (!proto_ready_status(body, len - 4, &status) || status != 'I') {
				login_broken(s, "protocol violation: ReadyForQuery at login not idle");
				return;
			}
			if (!s->params_login)
				s->params_login = param_set_empty();
			params_neutral(s);
			if (!s->params || !s->params_login) {
				server_close(s, "out of memory");
				return;
			}
			login_complete(s);
			return;
		}
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
			break;
		case 'v':
			/* Only an answer to a newer minor version or _pq_ options,
			 * and pgfleet asks for 3.0 with none. */
			login_broken(s, "protocol violation: NegotiateProtocolVersion, but pgfleet "
					"asked for protocol 3.0 without options");
			return;
		default:
			snprintf(why, sizeof(why), "protocol violation: unexpected message %s during login",
				 type_text(type, t));
			login_broken(s, why);
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
	if (s->q_len >= fleet.cfg.max_pipelined_requests) {
		s->overflow = true;
		return;
	}
	if (s->q_len == s->q_cap) {
		/* Grow the ring, unwrapping it: rare, the size is kept. */
		uint32_t cap = s->q_cap ? s->q_cap * 2 : SERVER_QUEUE_MIN;
		struct request *q = calloc(cap, sizeof(*q));
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
	r->sqlstate[0] = 0;
	if (ps)
		prepared_ref(ps);
	s->q_len++;
	if (action == REQ_FAKE)
		s->q_fakes++;
	if (action == REQ_PASS && (kind == REQ_QUERY || kind == REQ_SYNC))
		s->expect_rfq++;
	if (log_enabled(LOG_TRACE)) {
		char k[4] = {"QSPBDECdenL"[kind], "PHF"[action], 0};
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
		char k[4] = {"QSPBDECdenL"[r->kind], "PHF"[r->action], 0};
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

/* Back to the pool: a ring a long pipeline grew goes back to malloc. */
static void queue_trim(struct server *s)
{
	if (s->q_len == 0 && s->q_cap > SERVER_QUEUE_KEEP) {
		free(s->queue);
		s->queue = NULL;
		s->q_cap = s->q_head = 0;
	}
	s->overflow = false;
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

const char *server_ensure_prepared(struct server *s, struct pstmt *ps)
{
	const char *name = prepared_server_name(s->stmts, ps);
	if (name)
		return name;
	char evicted[PREPARED_NAME_LEN];
	name = prepared_server_add(&s->stmts, ps, (uint32_t)fleet.cfg.max_prepared_statements,
				   evicted);
	if (evicted[0]) {
		prepared_put_close(&s->io.out, evicted);
		server_queue_push(s, REQ_CLOSE, REQ_HIDE, NULL);
	}
	prepared_put_parse(&s->io.out, ps, name);
	server_queue_push(s, REQ_PARSE, REQ_HIDE, ps);
	return name;
}

void server_forget_statements(struct server *s)
{
	prepared_server_clear(s->stmts);
}

void server_distrust_statements(struct server *s)
{
	/* Forgotten now: a Bind from here on prepares afresh under a new
	 * random name, which nothing that ran before can have replaced. */
	prepared_server_clear(s->stmts);
	s->stmts_untrusted = true;
}

void server_queue_fake(struct server *s, enum req_kind kind, const char *mark, const char *text)
{
	server_queue_push(s, kind, REQ_FAKE, NULL);
	struct request *r = server_queue_last(s);
	if (!r)
		return; /* overflow: the client is closed */
	r->note = text ? strdup(text) : NULL; /* NULL: left out (a notice) or "out of memory" */
	snprintf(r->sqlstate, sizeof(r->sqlstate), "%s", mark ? mark : "");
}

void server_queue_notice(struct server *s, const char *sqlstate, const char *msg)
{
	server_queue_fake(s, REQ_NOTICE, sqlstate, msg);
}

void server_queue_route(struct server *s, const char *sqlstate, const char *text)
{
	server_queue_fake(s, REQ_ROUTE, sqlstate, text);
}

void server_queue_error(struct server *s, const char *sqlstate, const char *msg)
{
	server_queue_fake(s, REQ_ERROR, sqlstate, msg);
}

/* One of pgfleet's own simple Queries (its replies consumed), sent at once.
 * False when s was closed. */
static bool hidden_query(struct server *s, const char *sql, enum req_kind kind)
{
	proto_query(&s->io.out, sql);
	server_queue_push(s, kind, REQ_HIDE, NULL);
	if (conn_flush(&s->io) == IO_ERROR) {
		server_close(s, "write failed");
		return false;
	}
	if (wbuf_pending(&s->io.out))
		conn_write_enable(&s->io, true);
	return true;
}

/* Before a connection whose statements are untrusted serves another
 * client: DEALLOCATE ALL, its replies consumed.  Cheaper than a new
 * connection, and it runs ahead of whatever the next client sends.
 * False when the connection had to be closed. */
static bool drop_untrusted_statements(struct server *s)
{
	if (!s->stmts_untrusted)
		return true;
	s->stmts_untrusted = false;
	prepared_server_clear(s->stmts);
	return hidden_query(s, "DEALLOCATE ALL", REQ_QUERY);
}

/* 26000 (invalid_sql_statement_name) to a Bind/Describe of a statement
 * pgfleet prepared: something the SQL look cannot see (a function running
 * dynamic SQL) deallocated it.  None of the connection's statements is
 * trusted any more: the client's next try prepares afresh, and the rest
 * are dropped before another client gets the connection. */
static void check_statement_lost(struct server *s, const uint8_t *body, uint32_t len)
{
	struct pg_error e;
	if (!proto_parse_error(body, len, &e) || strcmp(e.sqlstate, "26000") != 0)
		return;
	log_warn("server lost a prepared statement; its statements are prepared again",
		 "replica", s->pool->replica->addr_str, NULL);
	server_distrust_statements(s);
}

/* What a write to the client left: done, or the client is closed (an
 * error), or its socket is full and the server is not read until it
 * drains (client_on_write resumes both).  False unless done. */
static bool client_wrote(struct server *s, struct client *c, enum io_result r)
{
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

/* Moves the parsed-not-sent replies to the client first, so what pgfleet
 * writes itself lands in order.  False when the client cannot take them. */
static bool flush_to_client(struct server *s, struct client *c)
{
	if (!s->io.in || !iobuf_unsent(s->io.in) || c->retry_msgs)
		return true; /* nothing to send, or a read's replies held back */
	return client_wrote(s, c, conn_forward(&s->io, &c->io));
}

/* SHOW pgfleet.route's answer of value `value` (NULL: its strdup failed),
 * its column first when `column` (a simple Query's). */
static void emit_show(struct wbuf *out, const char *value, bool column)
{
	if (!value) {
		proto_error(out, "ERROR", "53200", "out of memory");
		return;
	}
	if (column)
		proto_text_column(out, ROUTE_SETTING, 0);
	proto_show_result(out, value);
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
	/* Bind, Describe and Execute of SET pgfleet.route over the extended
	 * protocol (client.c route_extended). */
	case REQ_BIND:
		m = proto_begin(out, '2');
		proto_end(out, m);
		break;
	case REQ_DESCRIBE:
		if (r->sqlstate[0] == 'S') { /* of the statement: no parameters */
			m = proto_begin(out, 't');
			proto_put_u16(out, 0);
			proto_end(out, m);
		}
		if (strchr(r->sqlstate, 'V')) { /* SHOW pgfleet.route: its column */
			proto_text_column(out, ROUTE_SETTING, strchr(r->sqlstate, 'B') ? 1 : 0);
		} else {
			m = proto_begin(out, 'n');
			proto_end(out, m);
		}
		break;
	case REQ_EXECUTE:
		if (strcmp(r->sqlstate, REQ_MARK_SHOW) == 0) {
			emit_show(out, r->note, false);
			break;
		}
		m = proto_begin(out, 'C');
		proto_put_str(out, r->note ? r->note : "SET");
		proto_end(out, m);
		break;
	case REQ_DEALLOC:
		m = proto_begin(out, 'C');
		proto_put_str(out, "DEALLOCATE");
		proto_end(out, m);
		proto_ready(out, s->xact_status);
		break;
	case REQ_ERROR:
		if (r->note)
			proto_error(out, "ERROR", r->sqlstate, r->note);
		else /* the note's strdup failed */
			proto_error(out, "ERROR", "53200", "out of memory");
		break;
	case REQ_NOTICE:
		if (r->note)
			proto_notice(out, r->sqlstate, r->note);
		break;
	case REQ_ROUTE:
		if (strcmp(r->sqlstate, REQ_MARK_SHOW) == 0) {
			emit_show(out, r->note, true);
		} else if (r->sqlstate[0]) {
			proto_error(out, "ERROR", r->sqlstate, r->note ? r->note : "out of memory");
		} else {
			m = proto_begin(out, 'C');
			proto_put_str(out, r->note ? r->note : "SET");
			proto_end(out, m);
		}
		proto_ready(out, s->xact_status);
		break;
	default:
		break;
	}
}

/* Back-pressure on pgfleet's own replies: past max_client_output_buffer
 * queued for the client, they wait until its socket takes what is queued.
 * False when it cannot: this server is not read meanwhile (its replies come
 * after the fakes) and the client is not read either (forward_to_server);
 * client_on_write resumes both once the queue is empty. */
static bool client_out_room(struct server *s, struct client *c)
{
	if (wbuf_queued(&c->io.out) < (uint64_t)fleet.cfg.max_client_output_buffer)
		return true;
	return client_wrote(s, c, conn_flush(&c->io));
}

/* Fakes at the head of the queue: every reply before them is out.  Counts
 * the fakes answered in *n when n is given. */
static bool drain_fakes(struct server *s, struct client *c, int *n)
{
	struct request *r;
	while ((r = queue_head(s)) && r->action == REQ_FAKE) {
		if (c->retry_msgs)
			client_retry_forget(c); /* pgfleet answers: the read is answered */
		if (!flush_to_client(s, c) || !client_out_room(s, c))
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
		if (len < 4 || len > LOGIN_MSG_MAX || !proto_server_len_ok(type, len)) {
			char why[120], t[8];
			snprintf(why, sizeof(why),
				 "protocol violation: message %s of length %u on an idle connection",
				 type_text(type, t), len);
			server_close(s, why);
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
			note_parameter(s, body, len - 4, false, false);
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
			if (r->kind != REQ_QUERY && r->kind != REQ_LEARN)
				skip_to_sync(s);
			continue;
		}
		if (type == 'Z' && !proto_ready_status(body, len - 4, &s->xact_status)) {
			server_close(s, "protocol violation: ReadyForQuery with an unknown status");
			return;
		}
		if (txn_reply_ends(r->kind, type))
			queue_pop(s);
	}
	conn_release_buffer(&s->io);
}

/*
 * SET tracking in transaction and statement pooling (issue 17).  When a
 * client's turn ends after a statement that may have changed a session
 * setting (SET, SET SESSION, RESET, RESET ALL, set_config(): the client
 * marked it, client.c), pgfleet asks the server, before the connection goes
 * back to the pool, which settings the session now has: every built-in one
 * whose source is 'session' (set by SET, by set_config(..., false), or by
 * pgfleet's own hidden SET of the client's values), plus the custom
 * (dotted) ones the client named, which PostgreSQL lists nowhere.  Read
 * after the transaction, the answer is exact whatever happened in it:
 * SET LOCAL, a block that rolled back, a savepoint rolled back to, a
 * set_config() whose arguments are expressions.  The client's current set
 * becomes that answer, plus, for each name it had that the session no
 * longer sets (RESET, RESET ALL, SET ... TO DEFAULT), its startup value
 * when it has one: as RESET on a direct connection returns to it.  The
 * connection's known set becomes the answer.  A custom parameter whose
 * value is "" is taken as not set (PostgreSQL leaves an empty placeholder
 * behind a RESET or a rollback).
 */
#define LEARN_SQL                                                                                  \
	"SELECT name, current_setting(name) FROM pg_catalog.pg_settings "                         \
	"WHERE source = 'session' AND name <> 'session_authorization'"

/* Sends the learn query (its replies are consumed by learn_reply).  False
 * when the connection had to be closed. */
static bool learn_send(struct server *s, struct client *c)
{
	char sql[sizeof(LEARN_SQL) + 128 + CLIENT_CUSTOM_NAMES_MAX * 3];
	size_t pos = (size_t)snprintf(sql, sizeof(sql), "%s", LEARN_SQL);
	if (c->custom_names_len) {
		pos += (size_t)snprintf(sql + pos, sizeof(sql) - pos,
					" UNION ALL SELECT n, v FROM (SELECT n, "
					"pg_catalog.current_setting(n, true) AS v FROM "
					"unnest(ARRAY[");
		for (uint32_t p = 0; p < c->custom_names_len;
		     p += (uint32_t)strlen(c->custom_names + p) + 1)
			/* Names were checked by param_name_valid: no quote in them. */
			pos += (size_t)snprintf(sql + pos, sizeof(sql) - pos, "%s'%s'",
						p ? "," : "", c->custom_names + p);
		pos += (size_t)snprintf(sql + pos, sizeof(sql) - pos,
					"]::text[]) AS n) AS custom WHERE v <> ''");
	}
	if (pos >= sizeof(sql)) {
		server_close(s, "settings query too long");
		return false;
	}
	param_set_release(s->learning);
	s->learning = param_set_empty();
	s->learn_failed = !s->learning;
	return hidden_query(s, sql, REQ_LEARN);
}

void server_queue_settings(struct server *s, const char *sql)
{
	proto_query(&s->io.out, sql);
	server_queue_push(s, REQ_LEARN, REQ_HIDE, NULL);
}

/* A DataRow of the learn query: (name, value). */
static void learn_row(struct server *s, const uint8_t *body, uint32_t len)
{
	struct pkt_reader r = pkt_reader_init(body, len);
	if (pkt_get_u16(&r) != 2) {
		s->learn_failed = true;
		return;
	}
	char name[PARAM_NAME_MAX + 1];
	const char *value = NULL;
	for (int col = 0; col < 2; col++) {
		uint32_t n = pkt_get_u32(&r);
		if (n == 0xffffffffu) {
			s->learn_failed = true; /* no NULL is asked for */
			return;
		}
		const uint8_t *p = pkt_get_bytes(&r, n);
		if (!p) {
			s->learn_failed = true;
			return;
		}
		if (col == 0) {
			if (n > PARAM_NAME_MAX)
				return; /* not a name pgfleet can SET: left to the connection */
			memcpy(name, p, n);
			name[n] = 0;
		} else {
			if (memchr(p, 0, n))
				return;
			/* The row is whole in the buffer, followed by bytes of the
			 * next message: the value is copied to end it. */
			char *v = malloc(n + 1);
			if (!v) {
				s->learn_failed = true;
				return;
			}
			memcpy(v, p, n);
			v[n] = 0;
			value = v;
		}
	}
	if (param_name_valid(name) && !param_untracked(name) &&
	    param_set_store(&s->learning, name, value, NULL) != PARAM_OK)
		s->learn_failed = true;
	free((char *)value);
}

/* The learn query answered (its ReadyForQuery): the client's current set
 * and the connection's known set become what the session has. */
static void learn_done(struct server *s, struct client *c)
{
	const struct param_set *have = s->learning;
	bool failed = s->learn_failed || !have;
	s->learning = NULL;
	s->learn_failed = false;
	if (failed) {
		/* What the session has is unknown: it serves no one else. */
		param_set_release(have);
		s->close_needed = true;
		log_warn("session settings not read back; the connection will be closed",
			 "replica", s->pool->replica->addr_str, NULL);
		return;
	}
	const struct param_set *cur = param_set_ref(have);
	uint32_t pos = 0;
	const char *name, *value;
	bool ok = cur != NULL;
	while (ok && param_next(c->params, &pos, &name, &value)) {
		const char *start;
		if (param_get(have, name) || !(start = param_get(c->params_startup, name)))
			continue;
		ok = param_set_store(&cur, name, start, NULL) == PARAM_OK;
	}
	if (ok)
		param_set_assign(&c->params, cur);
	else
		s->close_needed = true; /* out of memory: the client keeps its set */
	param_set_release(cur);
	param_set_assign(&s->params, have);
	param_set_release(have);
}

/* pgfleet's own statement, with nothing of the client's behind it: sent now. */
static void flush_hidden(struct server *s)
{
	if (conn_flush(&s->io) == IO_ERROR) {
		s->close_needed = true; /* the read side sees the broken socket */
		return;
	}
	if (wbuf_pending(&s->io.out))
		conn_write_enable(&s->io, true);
}

/* After a ParameterStatus that may mean a RESET of one of the client's
 * startup settings (note_parameter): the hidden question, sent now, ahead
 * of the client's next statement; false when there is nothing to ask. */
static bool ask_reset(struct server *s, struct client *c)
{
	s->reset_check = false;
	if (s->xact_status == 'E')
		return false; /* a failed transaction: its RESET is undone anyway */
	char stack[1024];
	char *sql = stack;
	size_t n = param_set_restore_sql(c->params_startup, c->params, s->params_login, sql,
					 sizeof(stack));
	if (!n)
		return false;
	if (n >= sizeof(stack)) {
		sql = malloc(n + 1);
		if (!sql)
			return false;
		(void)param_set_restore_sql(c->params_startup, c->params, s->params_login, sql,
					    n + 1);
	}
	proto_query(&s->io.out, sql);
	server_queue_push(s, REQ_QUERY, REQ_HIDE, NULL);
	if (sql != stack)
		free(sql);
	s->reset_asking = true;
	flush_hidden(s);
	return true;
}

bool server_probe_replay(struct server *s, bool again)
{
	s->pool->replica->st.ryw_probes++;
	/* Asked again: a millisecond later, on the server's side (no timer
	 * here, and no flood of probes while the standby catches up). */
	return hidden_query(s,
			    again ? "SELECT pg_catalog.pg_last_wal_replay_lsn() FROM "
				    "pg_catalog.pg_sleep(0.001)"
				  : "SELECT pg_catalog.pg_last_wal_replay_lsn()",
			    REQ_LSN);
}

/* "16/B374D848", the one column of an LSN query's DataRow; 0 when NULL
 * (a server not in recovery has no replay position) or malformed. */
static uint64_t lsn_row(const uint8_t *body, uint32_t len)
{
	struct pkt_reader r = pkt_reader_init(body, len);
	if (pkt_get_u16(&r) != 1)
		return 0;
	uint32_t n = pkt_get_u32(&r);
	const uint8_t *v = n <= 17 ? pkt_get_bytes(&r, n) : NULL;
	if (!v || r.bad)
		return 0;
	char text[18];
	memcpy(text, v, n);
	text[n] = 0;
	unsigned hi, lo;
	char end;
	if (sscanf(text, "%8X/%8X%c", &hi, &lo, &end) != 2)
		return 0;
	return (uint64_t)hi << 32 | lo;
}

/* The client's turn on s is over: the connection goes back (*release),
 * unless the client's settings are to be read back first (learn_send; the
 * turn then ends at its answer), or, after a transaction that may have
 * written, the primary's WAL position is to be learnt (read-your-writes).
 * False when s was closed. */
static bool turn_end(struct server *s, struct client *c, bool *release)
{
	if (c->params_changed) {
		c->params_changed = false;
		c->turn_finishing = true;
		return learn_send(s, c);
	}
	if (c->lsn_wanted && s->pool->replica->role != ROLE_STANDBY) {
		c->lsn_wanted = false;
		c->turn_finishing = true;
		/* Past the commit record: a standby that replayed this far
		 * has the client's writes. */
		return hidden_query(s, "SELECT pg_catalog.pg_current_wal_insert_lsn()", REQ_LSN);
	}
	*release = true;
	return true;
}

static void finish_release(struct server *s)
{
	struct client *c = s->link;
	server_release(s);
	if (c)
		client_unlinked(c);
}

/* An LSN query's answer: after a write on the primary, the position c's
 * next reads need; from a standby, how far it has replayed (for every
 * client of this worker). */
static void lsn_answer(struct server *s, struct client *c, uint64_t lsn)
{
	struct replica *r = s->pool->replica;
	if (c->probe_sent && c->ryw_probe) {
		if (lsn > r->replay_lsn)
			r->replay_lsn = lsn;
	} else if (lsn > c->ryw_lsn) {
		c->ryw_lsn = lsn;
	}
}

/* A reply to pgfleet's own request at b->parsed, consumed.  Replies of
 * the client's held back before it (read retries) stay: it is cut out. */
static void drop_reply(struct server *s, struct client *c, uint32_t total)
{
	struct iobuf *b = s->io.in;
	uint32_t held = c->retry_msgs ? iobuf_unsent(b) : 0;
	if (held)
		memmove(b->data + b->done + total, b->data + b->done, held);
	b->parsed += total;
	b->done = b->parsed - held;
}

/* The ReadyForQuery after a standby refused a read as a write (25006),
 * nothing of it forwarded: the standby's transaction is over, so the
 * connection goes back and the read runs again on the primary.  False
 * when it cannot be (the client then gets the error). */
static bool retry_refused_read(struct server *s, struct client *c)
{
	if (!c->retry_refused)
		return false;
	if (s->q_len || s->xact_status != 'I' || s->io.pkt_remain || c->io.pkt_remain ||
	    c->state != CLIENT_ACTIVE) {
		client_retry_forget(c);
		return false;
	}
	s->io.in->done = s->io.in->parsed; /* the held replies: dropped */
	const struct replica *from = s->pool->replica;
	server_release(s);
	client_read_retry(c, from, false);
	return true;
}

/* Forwards the server's replies to the linked client in the order of its
 * requests: replies to pgfleet's own requests are consumed, faked replies
 * inserted in turn, and the ReadyForQuery that empties the queue at 'I'
 * ends the client's turn on this connection. */
static void forward_to_client(struct server *s)
{
	struct client *c = s->link;
	bool release = false;
	int mode = client_pool_mode(c);

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
		if (len < 4 || len > (uint64_t)fleet.cfg.max_packet_size ||
		    !proto_server_len_ok(type, len)) {
			char why[120], t[8];
			snprintf(why, sizeof(why), "protocol violation: message %s of length %u",
				 type_text(type, t), len);
			server_close(s, why);
			return;
		}
		if (!drain_head_fakes(s, c, NULL))
			return;
		uint32_t total = len + 1;
		/* A read's held replies stay within half a buffer (read retries). */
		if (c->retry_msgs && iobuf_unsent(b) + total > IOBUF_SIZE / 2)
			client_retry_forget(c);
		struct request *r = queue_head(s);
		enum txn_effect effect = txn_reply_effect(r != NULL, r ? r->kind : 0, type);
		bool extended_error = effect == TXN_SKIP_TO_SYNC;
		bool hidden = r && r->action == REQ_HIDE && !extended_error;
		/* An error to a Bind/Describe of one of pgfleet's names: read
		 * whole, to see whether the server lost the statement.  Such
		 * an error is short; a long one (a huge bad parameter quoted
		 * back) is something else, and streams. */
		bool named_error = extended_error && r->ps &&
				   (r->kind == REQ_BIND || r->kind == REQ_DESCRIBE) &&
				   total <= LOGIN_MSG_MAX;
		if (hidden || type == 'Z' || type == 'S' || named_error ||
		    (type == 'E' && c->retry_msgs)) {
			if (iobuf_unparsed(b) < total) {
				if (total > LOGIN_MSG_MAX || !iobuf_reserve(&s->io.in, total)) {
					server_close(s, "oversized message from server");
					return;
				}
				break;
			}
		}
		const uint8_t *body = b->data + b->parsed + 5;
		char status = 0; /* a ReadyForQuery's, whole in the buffer (above) */
		if (type == 'Z' && !proto_ready_status(body, len - 4, &status)) {
			server_close(s, "protocol violation: ReadyForQuery with an unknown status");
			return;
		}
		if (c->retry_msgs && !hidden && !client_retry_holds(c, type, body, len - 4))
			client_retry_forget(c); /* the reply commits the read */
		if (type == 'S')
			note_parameter(s, body, len - 4, !hidden || s->reset_asking, false);
		if (hidden && type == 'S' && s->reset_asking) {
			/* The startup value back after a RESET: the client is told, as
			 * a direct connection tells it. */
			if (c->retry_msgs)
				client_retry_forget(c);
			if (!flush_to_client(s, c))
				return;
			wbuf_put(&c->io.out, body - 5, total);
			b->parsed += total;
			b->done = b->parsed;
			continue;
		}
		if (hidden) {
			/* A reply to pgfleet's own request: consumed, never forwarded. */
			if (!flush_to_client(s, c))
				return;
			if (type == 'E' && s->params_check && !s->check_message[0]) {
				struct pg_error e;
				if (!proto_parse_error(body, len - 4, &e))
					e.sqlstate = "08P01", e.message = "malformed error";
				snprintf(s->check_sqlstate, sizeof(s->check_sqlstate), "%s",
					 e.sqlstate);
				snprintf(s->check_message, sizeof(s->check_message), "%s",
					 e.message);
			} else if (type == 'E') {
				log_warn("query pgfleet sent failed", "replica",
					 s->pool->replica->addr_str, NULL);
				/* Its settings may not be what pgfleet believes (a SET
				 * refused here though another server took it): not
				 * trusted with another client. */
				s->close_needed = true;
			}
			if (type == 'Z')
				s->xact_status = status;
			bool learned = false; /* a REQ_LEARN's ReadyForQuery */
			bool lsn_done = false; /* a REQ_LSN's */
			if (r->kind == REQ_LSN) {
				if (type == 'D')
					lsn_answer(s, c, lsn_row(body, len - 4));
				else if (type == 'Z')
					lsn_done = true;
			}
			if (r->kind == REQ_LEARN) {
				if (type == 'D')
					learn_row(s, body, len - 4);
				else if (type == 'E')
					s->learn_failed = true;
				else if (type == 'Z')
					learned = true;
			}
			/* A ParameterStatus tells the client a value its own
			 * session now has (pgfleet's SETs are of the client's
			 * values): it goes to the client, once greeted; the rest
			 * is consumed. */
			if (type != 'S' || c->welcome_pending || s->params_check)
				drop_reply(s, c, total);
			else
				b->parsed += total;
			if (effect == TXN_POP)
				queue_pop(s);
			if (lsn_done && c->probe_sent && c->ryw_probe) {
				/* A standby's replay position, before c's read: far
				 * enough, and the read goes on here (forwarded once
				 * the loop ends: route_hold); else the turn is over,
				 * nothing of c's was sent, and the read is routed by
				 * what is known now (the primary, or a standby that
				 * has replayed enough). */
				bool far_enough = s->pool->replica->replay_lsn >= c->ryw_probe;
				if (far_enough) {
					c->ryw_probe = 0;
					continue;
				}
				if (fleet_now() - c->probe_start < fleet.cfg.read_your_writes_wait &&
				    s->q_len == 0) {
					/* Replication lag is usually below a millisecond:
					 * ask again (one round trip each) for a while. */
					if (!server_probe_replay(s, true))
						return;
					continue;
				}
				c->ryw_probe = 0;
				c->no_probe = true;
				c->route_hold = false;
				if (txn_turn_over(s->xact_status, s->q_len, c->io.pkt_remain, mode))
					release = true;
				continue;
			}
			if (lsn_done) {
				if (txn_turn_over(s->xact_status, s->q_len, c->io.pkt_remain, mode) &&
				    !turn_end(s, c, &release))
					return;
				continue;
			}
			if (learned) {
				if (s->learning || s->learn_failed)
					learn_done(s, c);
				/* The client's turn was over but for this. */
				if (txn_turn_over(s->xact_status, s->q_len, c->io.pkt_remain, mode) &&
				    !turn_end(s, c, &release))
					return;
				continue;
			}
			if (type == 'Z' && s->reset_asking && effect == TXN_POP) {
				s->reset_asking = false;
				if (txn_turn_over(s->xact_status, s->q_len, c->io.pkt_remain, mode) &&
				    !turn_end(s, c, &release))
					return;
				continue;
			}
			if (type == 'Z' && s->params_check && s->q_len == 0) {
				s->params_check = false;
				bool failed = s->check_message[0] != 0;
				if (failed)
					s->close_needed = true; /* its settings are unknown now */
				client_params_checked(c, failed ? s->check_sqlstate : NULL,
						      s->check_message);
				return;
			}
			continue;
		}
		if (type == 'Z' && mode == POOL_STATEMENT && status != 'I' && s->q_len <= 1) {
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
			s->xact_status = status;
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
			if (named_error)
				check_statement_lost(s, body, len - 4);
			skip_to_sync(s);
			/* The client's Sync is still to come: the server ignores
			 * what it sends until then, and so does pgfleet (no hidden
			 * Parse, no answer of its own, no statement believed
			 * prepared that the server never saw). */
			if (s->q_len == 0)
				c->skip_to_sync = true;
		} else if (effect == TXN_POP) {
			queue_pop(s);
		}
		if (type == 'Z' && c->retry_msgs && retry_refused_read(s, c))
			return;
		if (type == 'Z' && s->reset_check && s->q_len == 0 && c->io.pkt_remain == 0 &&
		    ask_reset(s, c))
			continue; /* the turn ends at the answer's ReadyForQuery */
		if (type == 'Z' && txn_turn_over(s->xact_status, s->q_len, c->io.pkt_remain, mode)) {
			if (!turn_end(s, c, &release))
				return;
		} else if (type == 'Z' && c->params != s->params && s->q_len == 0 &&
			   c->io.pkt_remain == 0 && !c->welcome_pending) {
			/* The session lost one of the client's settings (a RESET)
			 * and keeps this connection: back before its next statement. */
			if (server_sync_params(s))
				flush_hidden(s);
		}
	}
	if (!release && !drain_head_fakes(s, c, NULL))
		return;
	/* A read's replies held back for a re-run stay in the buffer. */
	enum io_result r = c->retry_msgs ? conn_flush(&c->io) : conn_forward(&s->io, &c->io);
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
	if (c->route_hold && s->q_len == 0) {
		/* A statement that is no read waited for this read's replies:
		 * the transaction is still open, so it goes on here. */
		c->route_hold = false;
		client_resume(c);
	}
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
	if (txn_turn_over(s->xact_status, s->q_len, c->io.pkt_remain, client_pool_mode(c)) &&
	    !(c->io.in && !iobuf_empty(c->io.in)) && !(s->io.in && !iobuf_empty(s->io.in)))
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
			server_lost(s, r == IO_EOF ? "server closed the connection"
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
		server_lost(s, "write to server failed");
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
	s->link = c;
	c->link = s;
	server_set_state(s, SERVER_ACTIVE);
	s->query_start = fleet_now(); /* the client's request is on its way */
	/* From the moment it needed a server (0: it got one at once). */
	stats_waited(s->pool->replica, c->wait_start > 0 ? s->query_start - c->wait_start : 0);
	if (c->need.want == WANT_READ)
		s->pool->replica->st.reads++;
	else if (c->need.want == WANT_WRITE)
		s->pool->replica->st.writes++;
	c->wait_start = 0;
	s->release_pending = false;
	if (c->welcome_pending || c->params == s->params)
		return; /* the usual case: one comparison of interned sets */
	server_sync_params(s);
}

bool server_sync_params(struct server *s)
{
	struct client *c = s->link;
	char stack[1024];
	char *sql = stack;
	size_t n = param_set_diff_sql(c->params, s->params, s->params_login, sql, sizeof(stack));
	if (n >= sizeof(stack)) {
		sql = malloc(n + 1); /* many or long settings: rare, and bounded */
		if (!sql) {
			s->close_needed = true; /* its settings are not the client's */
			log_warn("out of memory: a client's settings not applied", NULL);
			return false;
		}
		(void)param_set_diff_sql(c->params, s->params, s->params_login, sql, n + 1);
	}
	if (n) {
		/* Sent ahead of the client's own messages; its replies are hidden. */
		proto_query(&s->io.out, sql);
		server_queue_push(s, REQ_QUERY, REQ_HIDE, NULL);
	}
	if (sql != stack)
		free(sql);
	param_set_assign(&s->params, c->params);
	return n > 0;
}

bool server_check_params(struct server *s)
{
	if (!server_sync_params(s))
		return false;
	s->params_check = true;
	s->check_message[0] = 0;
	flush_hidden(s);
	return true;
}

static bool must_close(struct server *s)
{
	struct replica *r = s->pool->replica;
	if (s->close_needed || r->state == REPLICA_DRAINING)
		return true;
	/* the database's server_lifetime, else the global one (0: none) */
	const struct db_config *dbc = s->pool->group->db->cfg;
	double lifetime = dbc && dbc->server_lifetime >= 0 ? dbc->server_lifetime
							   : fleet.cfg.server_lifetime;
	if (lifetime > 0 && fleet_now() - s->connect_time > lifetime)
		return true;
	return false;
}

/* server_reset_query on its way (its reply hidden) before s serves another
 * client: the connection is back at its login defaults, so are pgfleet's
 * notes about it.  False when s was closed. */
static bool send_reset(struct server *s, const char *reset)
{
	s->pinned = false;
	/* DISCARD ALL resets every setting to what the login set. */
	params_neutral(s); /* back to its defaults */
	/* DISCARD ALL (the default) drops prepared statements too; forget
	 * them whatever the reset query is, to be safe. */
	server_forget_statements(s);
	return hidden_query(s, reset, REQ_QUERY);
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
	/* Transaction and statement mode: PgBouncer's server_reset_query_always. */
	if (fleet.cfg.server_reset_query_always && *fleet.cfg.server_reset_query &&
	    !send_reset(s, fleet.cfg.server_reset_query))
		return;
	queue_trim(s);
	if (!drop_untrusted_statements(s))
		return;
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
	int mode = c ? client_pool_mode(c) : POOL_TRANSACTION;
	const char *reset = fleet.cfg.server_reset_query;
	if (s->pinned && !*reset) {
		/* Its temporary tables, locks, ...: nothing would remove them. */
		server_close(s, "pinned session not reset (server_reset_query is empty)");
		return;
	}
	if (*reset && (s->pinned || mode == POOL_SESSION || fleet.cfg.server_reset_query_always) &&
	    !send_reset(s, reset))
		return;
	queue_trim(s);
	if (!drop_untrusted_statements(s))
		return;
	pool_server_ready(s);
}

void server_close(struct server *s, const char *reason)
{
	if (s->state == SERVER_JUSTFREE)
		return;
	struct pool *p = s->pool;
	struct replica *r = p->replica;
	struct client *c = s->link;
	bool rerun = false; /* a read that survives: client_read_retry below */
	if (c) {
		c->link = NULL;
		s->link = NULL;
		rerun = s->lost && client_retry_lost_ok(c, r);
		if (!rerun && c->retry_msgs) {
			/* Its held replies first, as they would have gone. */
			client_retry_forget(c);
			(void)conn_forward(&s->io, &c->io);
		}
		if (!rerun)
			client_close(c, "08006", "server connection to replica %s lost: %s",
				     r->addr_str, reason);
	}
	bool was_login = s->state == SERVER_LOGIN;
	if (was_login) {
		p->group->connecting--;
		wbuf_free(&s->login_welcome);
		if (!s->login_failed_by_user) {
			/* The replica would not take a connection: no new work for it. */
			snprintf(r->last_error, sizeof(r->last_error), "%s", reason);
			r->fails++;
			r->retry_at = fleet_now() + fleet.cfg.server_login_retry;
			if (r->state != REPLICA_DOWN && r->state != REPLICA_DRAINING)
				replica_set_state(r, REPLICA_DOWN, reason);
		}
	}
	/* A failed login or a broken protocol is news; a routine close is not. */
	bool news = was_login || strncmp(reason, "protocol violation", 18) == 0;
	log_kv(news ? LOG_WARN : LOG_DEBUG, "server closed", "db", p->group->db->name,
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
	if (rerun)
		client_read_retry(c, r, true);
}

void server_lost(struct server *s, const char *reason)
{
	s->lost = true;
	server_close(s, reason);
}

void server_free_list(void)
{
	struct list *it;
	while ((it = statlist_pop(&fleet.justfree_servers))) {
		struct server *s = container_of(it, struct server, node);
		param_set_release(s->params);
		param_set_release(s->params_login);
		param_set_release(s->learning);
		wbuf_free(&s->login_welcome);
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

/* server_connect_timeout counts from the connect() to the ReadyForQuery that
 * ends the login: a server that stalls at any step is closed by it. */
static const char *login_timeout_reason(const struct server *s)
{
	switch (s->login_step) {
	case SLOGIN_CONNECTING:
		return "server_connect_timeout: no connection";
	case SLOGIN_SSL_REQUEST:
		return "server_connect_timeout: no answer to SSLRequest";
	case SLOGIN_TLS_HANDSHAKE:
		return "server_connect_timeout: TLS handshake not finished";
	case SLOGIN_STARTUP:
		return "server_connect_timeout: authentication not finished";
	case SLOGIN_PARAMS:
		return "server_connect_timeout: no ReadyForQuery after AuthenticationOk";
	}
	return "server_connect_timeout";
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
						server_close(s, login_timeout_reason(s));
				}
				list_for_each_safe(it, tmp, &p->idle.head) {
					struct server *s = container_of(it, struct server, node);
					/* min_pool_size counts every worker's */
					bool idle_long = cfg->server_idle_timeout > 0 &&
							 now - s->last_used > cfg->server_idle_timeout &&
							 pool_count(p) > pool_min_size(db);
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
