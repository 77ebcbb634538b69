/*
 * client.c: the client side.  A client logs in (startup, password check),
 * then each message it sends either goes to its linked server connection or,
 * between transactions, first asks the pool for one.  Everything a client can
 * get wrong ends in client_close(), which tells it why with an ErrorResponse.
 *
 * Must not: block, parse more of a message than pooling needs, or let one
 * client's failure touch another.
 */
#include "client.h"

#include <arpa/inet.h>
#include <ctype.h>
#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/socket.h>
#include <unistd.h>

#include "auth.h"
#include "cancel.h"
#include "hba.h"
#include "intern.h"
#include "log.h"
#include "mailbox.h"
#include "pool.h"
#include "prepared.h"
#include "proto.h"
#include "runtime.h"
#include "scram.h"
#include "server.h"
#include "sqlinspect.h"
#include "sqlroute.h"
#include "stats.h"
#include "tls.h"

static void client_on_read(evutil_socket_t fd, short what, void *arg);
static void client_on_write(evutil_socket_t fd, short what, void *arg);
static void client_process(struct client *c);

static const char *state_names[] = {"login", "waiting", "active", "justfree"};

/* Set once at start-up (client.h), process-wide, read-only after. */
static const struct client_console *console;
static void (*on_refusal)(const char *why);

void client_set_console(const struct client_console *cc)
{
	console = cc;
}

void client_on_refusal(void (*fn)(const char *why))
{
	on_refusal = fn;
}

static void note_refusal(const char *why)
{
	if (on_refusal)
		on_refusal(why);
}

void client_set_state(struct client *c, enum client_state st)
{
	/* Off the old state's list ... */
	switch (c->state) {
	case CLIENT_LOGIN:
		statlist_remove(&fleet.login_clients, &c->node);
		break;
	case CLIENT_WAITING:
		statlist_remove(&c->group->waiting, &c->node);
		c->group->waits[c->need.want]--;
		break;
	case CLIENT_ACTIVE:
		statlist_remove(&c->group->active, &c->node);
		break;
	case CLIENT_JUSTFREE:
		statlist_remove(&fleet.justfree_clients, &c->node);
		break;
	default:
		abort();
	}
	c->state = st;
	/* ... and onto the new one. */
	switch (st) {
	case CLIENT_LOGIN:
		statlist_append(&fleet.login_clients, &c->node);
		break;
	case CLIENT_WAITING:
		c->wait_start = fleet_now();
		statlist_append(&c->group->waiting, &c->node);
		c->group->waits[c->need.want]++;
		break;
	case CLIENT_ACTIVE:
		statlist_append(&c->group->active, &c->node);
		break;
	case CLIENT_JUSTFREE:
		statlist_append(&fleet.justfree_clients, &c->node);
		fleet_schedule_free();
		break;
	default:
		abort();
	}
	if (log_enabled(LOG_TRACE))
		log_kv(LOG_TRACE, "client state", "client", c->addr_str, "state", state_names[st],
		       NULL);
}

void client_accept(int fd, const struct sockaddr *sa, socklen_t salen, bool over_limit)
{
	struct client *c = calloc(1, sizeof(*c));
	if (!c) {
		close(fd);
		return;
	}
	c->user = c->dbname = "";
	c->id = fleet_next_id();
	c->params_startup = param_set_empty();
	c->params = param_set_ref(c->params_startup);
	if (!c->params) {
		param_set_release(c->params_startup);
		free(c);
		close(fd);
		return;
	}
	memcpy(&c->addr, sa, salen < sizeof(c->addr) ? salen : sizeof(c->addr));
	conn_format_addr(sa, c->addr_str, sizeof(c->addr_str));
	conn_setup(&c->io, fd, client_on_read, client_on_write, c);
	c->state = CLIENT_LOGIN;
	statlist_append(&fleet.login_clients, &c->node);
	c->connect_time = c->request_time = fleet_now();
	c->over_limit = over_limit;
	fleet.client_count++;
	if (worker_threaded())
		(void)worker_clients_add(1);
	conn_read_enable(&c->io, true);
}

static void forget_aq_secret(struct client *c)
{
	if (c->aq_secret) {
		explicit_bzero(c->aq_secret, strlen(c->aq_secret));
		free(c->aq_secret);
		c->aq_secret = NULL;
	}
}

void client_close(struct client *c, const char *sqlstate, const char *fmt, ...)
{
	if (c->state == CLIENT_JUSTFREE)
		return;
	char reason[256];
	va_list ap;
	va_start(ap, fmt);
	vsnprintf(reason, sizeof(reason), fmt, ap);
	va_end(ap);

	if (sqlstate && c->io.fd >= 0 && c->io.pkt_remain == 0) {
		/* Only between messages: a half-sent message would garble the error. */
		struct iobuf *peer_in = c->link ? c->link->io.in : NULL;
		bool peer_mid_msg = c->link && c->link->io.pkt_remain;
		if ((!peer_in || iobuf_unsent(peer_in) == 0) && !peer_mid_msg) {
			proto_error(&c->io.out, "FATAL", sqlstate, reason);
			if (conn_flush(&c->io) != IO_DONE)
				log_debug("error not delivered", "client", c->addr_str, NULL);
		}
	}
	if (c->link)
		server_unlink_client(c->link);
	c->link = NULL;
	cancel_unregister(c);
	bool logged_in = c->state != CLIENT_LOGIN;
	if (c->over_limit && sqlstate)
		note_refusal("max_client_conn"); /* counted, not a line each */
	else if ((sqlstate && c->state == CLIENT_LOGIN) || (logged_in && fleet.cfg.log_disconnections) ||
	    (sqlstate && logged_in))
		log_kv(sqlstate ? LOG_WARN : LOG_INFO,
		       sqlstate && !logged_in ? "client refused" : "client closed", "client", c->addr_str,
		       "db", c->dbname, "user", c->user, "reason", reason, NULL);
	if (c->scram) {
		memset(c->scram, 0, sizeof(*c->scram));
		free(c->scram);
		c->scram = NULL;
	}
	authquery_cancel(&c->aq_wait);
	forget_aq_secret(c);
	prepared_client_free(&c->stmts);
	client_retry_forget(c);
	if (c->admin)
		console->gone(c);
	conn_teardown(&c->io);
	client_set_state(c, CLIENT_JUSTFREE);
}

void client_free_list(void)
{
	struct list *it;
	while ((it = statlist_pop(&fleet.justfree_clients))) {
		struct client *c = container_of(it, struct client, node);
		fleet.client_count--;
		if (c->db && --c->db->clients == 0)
			c->db->idle_since = fleet_now(); /* autodb_idle_timeout counts from here */
		param_set_release(c->params);
		param_set_release(c->params_startup);
		free(c->custom_names);
		free(c->clean_parse);
		param_set_release(c->reset_stmt);
		param_set_release(c->reset_portal);
		str_release(c->user);
		str_release(c->dbname);
		if (worker_threaded())
			(void)worker_clients_add(-1);
		free(c);
	}
}

/* ---- login ---------------------------------------------------------------- */

/* Did a server of the client's group take its startup settings lately
 * (PostgreSQL refuses an unknown or bad setting at login; so does pgfleet,
 * with the server's error, by trying them before the greeting)? */
static bool params_known_good(const struct client *c)
{
	const struct param_set *st = c->params_startup;
	/* Any application_name is good (the server truncates a long one): the
	 * common case, an application's name alone, needs no round trip. */
	return st->count == 0 || (st->count == 1 && param_get(st, "application_name")) ||
	       pool_params_ok(c->group, param_set_id(st));
}

static void send_welcome(struct client *c)
{
	struct pool_group *g = c->group;
	struct wbuf *out = &c->io.out;
	/* The server's parameters as the newest login of this group reported
	 * them, with the client's own settings in place of the server's. */
	struct pkt_reader r = pkt_reader_init(g->welcome.data, g->welcome.len);
	while (r.pos + 5 <= r.len) {
		uint32_t len = proto_get_u32(r.p + r.pos + 1);
		if (len < 4 || len > r.len - r.pos - 1)
			break;
		struct pkt_reader m = pkt_reader_init(r.p + r.pos + 5, len - 4);
		r.pos += 1 + len;
		const char *name = pkt_get_str(&m), *value = pkt_get_str(&m);
		if (!name || !value)
			continue;
		const char *own = param_get(c->params, name);
		proto_parameter_status(out, name, own ? own : value);
	}
	proto_backend_key(out, c->cancel_pid, c->cancel_key);
	proto_ready(out, 'I');
	c->welcome_pending = false;
	if (fleet.cfg.log_connections)
		log_info("client login", "client", c->addr_str, "db", c->dbname, "user", c->user,
			 NULL);
}

/* The client's database: from handle_startup, or created from "*" now that
 * the client has proved who it is (false: c was refused and closed). */
static bool attach_db(struct client *c, struct database *db)
{
	if (!db)
		return false;
	c->db = db;
	db->clients++;
	return true;
}

static bool create_auto_db(struct client *c)
{
	const char *sqlstate = "53200";
	char msg[200];
	if (attach_db(c, database_create_auto(c->dbname, c->user, &sqlstate, msg, sizeof(msg))))
		return true;
	client_close(c, sqlstate, "%s", msg);
	return false;
}

/* Authentication passed: join the pool group and greet the client. */
static void login_done(struct client *c)
{
	if (!c->admin && !c->db && !create_auto_db(c))
		return;
	proto_auth(&c->io.out, AUTH_REQ_OK, NULL, 0);
	forget_aq_secret(c);
	if (c->scram) {
		memset(c->scram, 0, sizeof(*c->scram));
		free(c->scram);
		c->scram = NULL;
	}
	if (c->admin) {
		console->login_done(c);
		return;
	}
	cancel_register(c);
	c->group = pool_group_get(c->db, c->user);
	if (!c->group) {
		client_close(c, "53200", "out of memory");
		return;
	}
	if ((c->group->have_welcome || (worker_threaded() && pool_welcome_adopt(c->group))) &&
	    params_known_good(c)) {
		send_welcome(c);
		client_set_state(c, CLIENT_ACTIVE);
		return;
	}
	/* No server of this group has told us its parameters yet, or none has
	 * taken this client's startup settings lately: wait for one. */
	c->login_step = LOGIN_WELCOME;
	c->welcome_pending = true;
	client_set_state(c, CLIENT_ACTIVE);
	if (pool_checkout(c))
		client_linked(c);
}

void client_params_checked(struct client *c, const char *sqlstate, const char *message)
{
	c->params_checking = false;
	if (sqlstate) {
		/* The server's own error names the parameter ("unrecognized
		 * configuration parameter", "invalid value for parameter"). */
		client_close(c, sqlstate, "%s", message);
		return;
	}
	pool_params_ok_add(c->group, param_set_id(c->params_startup));
	client_linked(c);
}

/* What the client's password is checked against: its auth_file entry, else
 * the secret auth_query found for it (NULL: unknown, fails like a wrong
 * password). */
static const struct user_entry *client_user(struct client *c)
{
	const struct user_entry *u = config_find_user(&fleet.cfg, c->user);
	if (u || !c->aq_secret)
		return u;
	c->aq_user.name = (char *)c->user;
	c->aq_user.password = c->aq_secret;
	return &c->aq_user;
}

/*
 * auth_type = hba: the auth_type the first matching record of auth_hba_file
 * gives this client, or -1 when it was refused (and closed).  The client is
 * told what PostgreSQL tells it; the log names the record.
 */
/* cert and peer: the name the certificate or the kernel gives is the
 * user's, or the record's map= allows it. */
static bool hba_names_agree(const struct hba_decision *d, const char *system_user,
			    const char *user)
{
	return d->map ? hba_map_allows(fleet.cfg.hba, d->map, system_user, user)
		      : strcmp(system_user, user) == 0;
}

static int hba_auth_type(struct client *c)
{
	struct hba_request req = {&c->addr.sa, c->io.ssl != NULL, c->dbname, c->user};
	struct hba_decision d = hba_match(fleet.cfg.hba, &req);
	char host[INET6_ADDRSTRLEN] = "[local]", rule[300];
	const char *enc = c->io.ssl ? "SSL encryption" : "no encryption";
	if (c->addr.sa.sa_family == AF_INET)
		inet_ntop(AF_INET, &c->addr.in.sin_addr, host, sizeof(host));
	else if (c->addr.sa.sa_family == AF_INET6)
		inet_ntop(AF_INET6, &c->addr.in6.sin6_addr, host, sizeof(host));
	if (d.file)
		snprintf(rule, sizeof(rule), "%s:%d", d.file, d.line);
	else
		snprintf(rule, sizeof(rule), "none");
	switch (d.method) {
	case HBA_NO_MATCH:
	case HBA_REJECT:
		log_info("login refused by auth_hba_file", "client", c->addr_str, "user", c->user,
			 "db", c->dbname, "rule", rule, NULL);
		client_close(c, "28000",
			     d.method == HBA_REJECT
				 ? "pg_hba.conf rejects connection for host \"%s\", user \"%s\", "
				   "database \"%s\", %s"
				 : "no pg_hba.conf entry for host \"%s\", user \"%s\", database "
				   "\"%s\", %s",
			     host, c->user, c->dbname, enc);
		return -1;
	case HBA_TRUST:
		return AUTH_TRUST;
	case HBA_PASSWORD:
		return AUTH_PLAIN;
	case HBA_MD5:
		return AUTH_MD5;
	case HBA_SCRAM:
		return AUTH_SCRAM;
	case HBA_CERT: {
		/* The handshake verified the certificate (verify-ca/verify-full,
		 * checked at load); its CommonName must be the user. */
		char cn[NAME_MAX_LEN];
		if (!tls_peer_cn(&c->io, cn, sizeof(cn)) || !hba_names_agree(&d, cn, c->user)) {
			log_info("login refused by auth_hba_file", "client", c->addr_str, "user",
				 c->user, "db", c->dbname, "rule", rule, NULL);
			client_close(c, "28000", "certificate authentication failed for user \"%s\"",
				     c->user);
			return -1;
		}
		return AUTH_TRUST;
	}
	case HBA_PEER: {
		/* The kernel's word for the process at the other end of the
		 * socket; its name comes from the passwd file read at load. */
		struct ucred cred;
		socklen_t len = sizeof(cred);
		const char *name = NULL;
		if (getsockopt(c->io.fd, SOL_SOCKET, SO_PEERCRED, &cred, &len) == 0 &&
		    len == sizeof(cred))
			name = hba_peer_user(fleet.cfg.hba, (unsigned long)cred.uid);
		if (!name || !hba_names_agree(&d, name, c->user)) {
			log_info("login refused by auth_hba_file", "client", c->addr_str, "user",
				 c->user, "db", c->dbname, "rule", rule, NULL);
			client_close(c, "28000", "peer authentication failed for user \"%s\"",
				     c->user);
			return -1;
		}
		return AUTH_TRUST;
	}
	}
	return -1;
}

static void ask_password(struct client *c)
{
	const struct user_entry *u = client_user(c);
	int type = fleet.cfg.auth_type;
	if (type == AUTH_HBA && (type = hba_auth_type(c)) < 0)
		return;
	switch (auth_choose(type, u)) {
	case AUTH_METHOD_TRUST:
		login_done(c);
		return;
	case AUTH_METHOD_PLAIN:
		proto_auth(&c->io.out, AUTH_REQ_CLEARTEXT, NULL, 0);
		c->login_step = LOGIN_PASSWORD;
		return;
	case AUTH_METHOD_MD5:
		fleet_random(c->md5_salt, 4);
		proto_auth(&c->io.out, AUTH_REQ_MD5, c->md5_salt, 4);
		c->login_step = LOGIN_MD5;
		return;
	case AUTH_METHOD_SCRAM:
		proto_auth_sasl_mechs(&c->io.out);
		c->login_step = LOGIN_SASL_INIT;
		return;
	}
}

static void auth_failed(struct client *c)
{
	/* The client is told only what a wrong password tells it; the log says
	 * why, for the operator. */
	const struct user_entry *u = client_user(c);
	if (auth_password_empty(u))
		log_warn("login refused: the user's password is empty (auth_file or DB_PASSWORD)",
			 "client", c->addr_str, "user", c->user, NULL);
	client_close(c, "28P01", "password authentication failed for user \"%s\"", c->user);
}

/* Sends what a login step wrote, outside process_login (an answer that
 * came later). */
static void login_flush(struct client *c)
{
	enum io_result r = conn_flush(&c->io);
	if (r == IO_ERROR)
		client_close(c, NULL, "write failed: %s", strerror(errno));
	else if (r == IO_AGAIN)
		conn_write_enable(&c->io, true);
}

/* auth_query answered: a found secret is checked like an auth_file entry;
 * an unknown user gets the same exchange as anyone and fails as a wrong
 * password would (28P01, nothing to tell the two apart). */
static void auth_query_answer(struct client *c, enum authquery_status st, const char *secret,
			      const char *sqlstate, const char *msg)
{
	if (st == AUTHQUERY_FAILED) {
		client_close(c, sqlstate ? sqlstate : "28000", "%s", msg ? msg : "auth_query failed");
		return;
	}
	if (st == AUTHQUERY_FOUND) {
		c->aq_secret = strdup(secret);
		if (!c->aq_secret) {
			client_close(c, "53200", "out of memory");
			return;
		}
	}
	ask_password(c);
}

static void on_auth_query(struct authquery_wait *w, enum authquery_status st, const char *secret,
			  const char *sqlstate, const char *msg)
{
	struct client *c = container_of(w, struct client, aq_wait);
	if (c->state == CLIENT_JUSTFREE || c->login_step != LOGIN_AUTH_QUERY)
		return;
	auth_query_answer(c, st, secret, sqlstate, msg);
	if (c->state != CLIENT_JUSTFREE)
		login_flush(c);
}

static void start_auth_query(struct client *c, const struct db_config *dbc)
{
	char secret[AUTHQUERY_SECRET_MAX], msg[256];
	const char *sqlstate = NULL;
	c->aq_wait.done = on_auth_query;
	enum authquery_status st = authquery_lookup(c->dbname, dbc, c->user, &c->aq_wait, secret,
						    sizeof(secret), &sqlstate, msg, sizeof(msg));
	if (st == AUTHQUERY_PENDING) {
		c->login_step = LOGIN_AUTH_QUERY;
		return;
	}
	auth_query_answer(c, st, secret, sqlstate, msg);
	explicit_bzero(secret, sizeof(secret));
}

/* Handles one whole password message ('p'). */
static void handle_password(struct client *c, const uint8_t *body, uint32_t len)
{
	const struct user_entry *u = client_user(c);
	struct pkt_reader r = pkt_reader_init(body, len);
	char out[SCRAM_MAX_MSG];
	size_t outn;

	switch (c->login_step) {
	case LOGIN_PASSWORD: {
		const char *pw = pkt_get_str(&r);
		if (!pw || !auth_check_plain(u, pw))
			auth_failed(c);
		else
			login_done(c);
		return;
	}
	case LOGIN_MD5: {
		const char *resp = pkt_get_str(&r);
		if (!resp || !auth_check_md5(u, c->md5_salt, resp))
			auth_failed(c);
		else
			login_done(c);
		return;
	}
	case LOGIN_SASL_INIT: {
		const char *mech = pkt_get_str(&r);
		uint32_t n = pkt_get_u32(&r);
		if (!mech || r.bad) {
			client_close(c, "08P01", "malformed SASLInitialResponse");
			return;
		}
		if (strcmp(mech, "SCRAM-SHA-256") != 0) {
			client_close(c, "28000", "SASL mechanism not supported: %s", mech);
			return;
		}
		const uint8_t *data = pkt_get_bytes(&r, n);
		struct scram_secret secret;
		c->scram = calloc(1, sizeof(*c->scram));
		if (!data || n == 0xffffffffu || !c->scram) {
			client_close(c, "08P01", "malformed SASLInitialResponse");
			return;
		}
		if (!auth_scram_secret(c->user, u, &secret) ||
		    !scram_server_first(c->scram, &secret, data, n, out, sizeof(out), &outn)) {
			client_close(c, "08P01", "malformed SCRAM message");
			return;
		}
		proto_auth(&c->io.out, AUTH_REQ_SASL_CONTINUE, out, (uint32_t)outn);
		c->login_step = LOGIN_SASL_FINAL;
		return;
	}
	case LOGIN_SASL_FINAL:
		/* The proof is checked for an unknown user too (against a mock
		 * secret it cannot match), so it takes as long as for anyone. */
		if (!scram_server_final(c->scram, body, len, out, sizeof(out), &outn) || !u ||
		    auth_password_empty(u)) {
			auth_failed(c);
			return;
		}
		/* A SCRAM secret in auth_file: the proof just checked yields the
		 * key this user's server logins need (pass-through). */
		if (auth_password_kind(u->password) == PW_SCRAM && c->scram->have_client_key)
			auth_passthrough_remember(c->user, &c->scram->secret, c->scram->client_key);
		proto_auth(&c->io.out, AUTH_REQ_SASL_FINAL, out, (uint32_t)outn);
		login_done(c);
		return;
	default:
		client_close(c, "08P01", "unexpected password message");
	}
}

/* Is TLS offered to this client?  Never over a Unix socket: libpq does not
 * ask for it there, and PgBouncer does not require it there either. */
static bool tls_offered(const struct client *c)
{
	return fleet.cfg.client_tls_sslmode != TLS_DISABLE && c->addr.sa.sa_family != AF_UNIX;
}

/* SSLRequest answered 'S': once the 'S' is out, the handshake runs on the
 * socket's events.  It ends in LOGIN_STARTUP over TLS, or in a closed
 * connection: after a failed handshake nothing is read in plaintext. */
static bool login_tls(struct client *c)
{
	if (!c->io.ssl) {
		enum io_result r = conn_flush(&c->io);
		if (r == IO_AGAIN) {
			/* Nothing is read before the handshake starts. */
			conn_read_enable(&c->io, false);
			conn_write_enable(&c->io, true);
			return false;
		}
		if (r == IO_ERROR) {
			client_close(c, NULL, "write failed: %s", strerror(errno));
			return false;
		}
		if (!tls_accept_begin(&c->io)) {
			log_warn("client TLS set-up failed", "client", c->addr_str, "error",
				 tls_error(), NULL);
			client_close(c, NULL, "TLS set-up failed: %s", tls_error());
			return false;
		}
	}
	switch (tls_handshake(&c->io)) {
	case IO_AGAIN:
		return false;
	case IO_DONE:
		c->login_step = LOGIN_STARTUP;
		if (log_enabled(LOG_DEBUG)) {
			char how[96];
			tls_describe(&c->io, how, sizeof(how));
			log_debug("client TLS", "client", c->addr_str, "tls", how, NULL);
		}
		return true;
	default:
		log_warn("client TLS handshake failed", "client", c->addr_str, "error", tls_error(),
			 NULL);
		client_close(c, NULL, "TLS handshake failed: %s", tls_error());
		return false;
	}
}

/* Is name in ignore_startup_parameters (a list, any case)?  Such a
 * parameter is dropped, as PgBouncer does: the operator vouches for it. */
static bool startup_param_ignored(const char *name)
{
	return config_list_has_nocase(fleet.cfg.ignore_startup_parameters, name);
}

/* One of the client's startup settings, within max_client_params and
 * max_client_param_size (false: c was refused and closed). */
static bool startup_param_store(struct client *c, const char *name, const char *value)
{
	struct param_limits lim = {(unsigned)fleet.cfg.max_client_params,
				   (unsigned)fleet.cfg.max_client_param_size};
	switch (param_set_store(&c->params_startup, name, value, &lim)) {
	case PARAM_OK:
		return true;
	case PARAM_NOMEM:
		client_close(c, "53200", "out of memory");
		return false;
	case PARAM_BAD_NAME:
		client_close(c, "08P01", "invalid startup parameter name \"%.64s\"", name);
		return false;
	case PARAM_TOO_MANY:
		client_close(c, "53400",
			     "too many startup parameters: \"%.64s\" is past the limit of %lld "
			     "(max_client_params)",
			     name, fleet.cfg.max_client_params);
		return false;
	case PARAM_TOO_LONG:
		client_close(c, "54000",
			     "value of startup parameter \"%.64s\" is too long: more than %lld bytes "
			     "(max_client_param_size)",
			     name, fleet.cfg.max_client_param_size);
		return false;
	}
	return false;
}

static bool option_store(void *arg, const char *name, const char *value)
{
	struct client *c = arg;
	/* PostgreSQL applies options first, the packet's other parameters
	 * after them (they win): those are in the set already. */
	if (startup_param_ignored(name) || (param_name_valid(name) &&
					    param_get(c->params_startup, name)))
		return true;
	return startup_param_store(c, name, value);
}

/* The startup parameter `options`: each -c name=value / --name=value is one
 * of the client's settings (false: c was refused and closed). */
static bool startup_options(struct client *c, const char *value)
{
	char bad[80];
	switch (param_options_parse(value, option_store, c, bad, sizeof(bad))) {
	case PARAM_OPTIONS_OK:
		return true;
	case PARAM_OPTIONS_STOPPED:
		return false; /* option_store closed c */
	case PARAM_OPTIONS_NOMEM:
		client_close(c, "53200", "out of memory");
		return false;
	case PARAM_OPTIONS_NO_VALUE:
		client_close(c, "42601", "startup option \"%s\" requires a value (name=value)", bad);
		return false;
	case PARAM_OPTIONS_UNSUPPORTED:
		client_close(c, "0A000",
			     "unsupported startup option \"%s\": pgfleet takes only -c name=value and "
			     "--name=value in options (or list options in "
			     "ignore_startup_parameters)",
			     bad);
		return false;
	}
	return false;
}

/* Handles a whole StartupMessage (or SSLRequest, ...).  The 4-byte length is
 * included in `pkt`. */
static void handle_startup(struct client *c, const uint8_t *pkt, uint32_t len)
{
	struct pkt_reader r = pkt_reader_init(pkt + 4, len - 4);
	uint32_t code = pkt_get_u32(&r);

	if (code == PROTO_SSL_REQUEST || code == PROTO_GSSENC_REQUEST) {
		if (c->io.ssl) {
			client_close(c, "08P01", "encryption requested on an encrypted connection");
			return;
		}
		if (code == PROTO_SSL_REQUEST && tls_offered(c)) {
			/* Bytes behind the SSLRequest were sent before the handshake:
			 * they may not come from the TLS peer (CVE-2021-23214). */
			if (iobuf_unparsed(c->io.in)) {
				client_close(c, "08P01", "received unencrypted data after SSL request");
				return;
			}
			wbuf_put(&c->io.out, "S", 1);
			c->login_step = LOGIN_TLS_HANDSHAKE;
			return;
		}
		/* No TLS here, and never GSS encryption: go on in plaintext.  As
		 * PostgreSQL, one of each at most: an endless stream of them would
		 * queue an endless stream of 'N's for a client that never reads. */
		if (++c->encryption_requests > 2) {
			client_close(c, "08P01", "too many encryption requests");
			return;
		}
		wbuf_put(&c->io.out, "N", 1);
		return;
	}
	if (code == PROTO_CANCEL_REQUEST) {
		cancel_handle_request(c, pkt, len);
		return;
	}
	if (c->over_limit) {
		/* After SSLRequest (answered above) and CancelRequest: the one
		 * answer this client gets. */
		client_close(c, "53300", CLIENT_REFUSE_MESSAGE);
		return;
	}
	if (code >> 16 != 3) {
		client_close(c, "0A000", "unsupported frontend protocol %u.%u: server supports 3.0",
			     code >> 16, code & 0xffff);
		return;
	}
	if (!c->io.ssl && tls_offered(c) && fleet.cfg.client_tls_sslmode >= TLS_REQUIRE) {
		client_close(c, "28000", "SSL required");
		return;
	}
	const char *unsupported[16];
	int n_unsupported = 0;
	const char *user = NULL, *database = NULL, *options = NULL;
	for (;;) {
		const char *name = pkt_get_str(&r);
		if (!name) {
			client_close(c, "08P01", "invalid startup packet layout");
			return;
		}
		if (!*name)
			break;
		const char *value = pkt_get_str(&r);
		if (!value) {
			client_close(c, "08P01", "invalid startup packet layout");
			return;
		}
		if (strcmp(name, "user") == 0) {
			user = value;
		} else if (strcmp(name, "database") == 0) {
			database = value;
		} else if (strcmp(name, "replication") == 0) {
			if (strcasecmp(value, "false") != 0 && strcasecmp(value, "off") != 0 &&
			    strcmp(value, "0") != 0) {
				client_close(c, "08P01", "replication connections are not supported");
				return;
			}
		} else if (strncmp(name, "_pq_.", 5) == 0) {
			if (n_unsupported < 16)
				unsupported[n_unsupported++] = name;
		} else if (startup_param_ignored(name)) {
			continue; /* ignore_startup_parameters: dropped */
		} else if (strcmp(name, "options") == 0) {
			options = value; /* read after the others (option_store) */
		} else if (!startup_param_store(c, name, value)) {
			return; /* any other is a GUC: the server says so at the check */
		}
	}
	if (options && !startup_options(c, options))
		return;
	param_set_assign(&c->params, c->params_startup);
	if (!user || !*user) {
		client_close(c, "28000", "no PostgreSQL user name specified in startup packet");
		return;
	}
	if (!database || !*database)
		database = user;
	if (strlen(user) >= NAME_MAX_LEN || strlen(database) >= NAME_MAX_LEN) {
		client_close(c, "42622", "user or database name too long");
		return;
	}
	str_release(c->user);
	str_release(c->dbname);
	c->user = str_intern(user);
	c->dbname = str_intern(database);
	if (!c->user || !c->dbname) {
		str_release(c->user);
		str_release(c->dbname);
		c->user = c->dbname = "";
		client_close(c, "53200", "out of memory");
		return;
	}
	/* Refused only now, after SSLRequest got its answer, so that the client
	 * reads the reason instead of a garbled SSL negotiation. */
	if (fleet.shutting_down) {
		client_close(c, "57P01", "pgfleet is shutting down");
		return;
	}
	int clients = worker_threaded() ? worker_clients_add(0) : fleet.client_count;
	if (clients > fleet.cfg.max_client_conn) {
		client_close(c, "53300", CLIENT_REFUSE_MESSAGE);
		return;
	}
	if ((code & 0xffff) != 0 || n_unsupported) {
		/* NegotiateProtocolVersion: we speak 3.0 and none of the _pq_ options. */
		uint32_t m = proto_begin(&c->io.out, 'v');
		proto_put_u32(&c->io.out, PROTO_V3);
		proto_put_u32(&c->io.out, (uint32_t)n_unsupported);
		for (int i = 0; i < n_unsupported; i++)
			proto_put_str(&c->io.out, unsupported[i]);
		proto_end(&c->io.out, m);
	}
	if (console && console->is_console(c->dbname)) {
		/* The admin console: logs in like anyone (but for its own
		 * trusted case), admitted after. */
		if (!console->login_start(c))
			return;
		if (console->login_trusted && console->login_trusted(c))
			login_done(c);
		else
			ask_password(c);
		return;
	}
	/* A name only "*" covers gets its database after authentication
	 * (login_done): a client that cannot log in creates nothing, and no
	 * server or health check ever hears of the name it made up. */
	if (!attach_db(c, database_lookup(c->dbname))) {
		if (!database_auto_possible(c->dbname)) {
			client_close(c, "3D000", "database \"%s\" does not exist", c->dbname);
			return;
		}
	} else if (c->db->disabled) {
		client_close(c, "57P03", "database \"%s\" is disabled", c->dbname);
		return;
	}
	const struct db_config *dbc = c->db ? c->db->cfg : config_find_db(&fleet.cfg, c->dbname);
	if (fleet.cfg.auth_type != AUTH_TRUST && !config_find_user(&fleet.cfg, c->user) &&
	    authquery_enabled(dbc)) {
		start_auth_query(c, dbc);
		return;
	}
	ask_password(c);
}

/* Login messages are small and must be whole before they are handled. */
static bool process_login(struct client *c)
{
	if (c->login_step == LOGIN_TLS_HANDSHAKE)
		return login_tls(c);
	struct iobuf *b = c->io.in;
	if (!b)
		return false;
	uint32_t avail = iobuf_unparsed(b);
	const uint8_t *p = b->data + b->parsed;
	uint32_t total, hdr;

	if (c->login_step == LOGIN_STARTUP) {
		if (avail < 4)
			return false;
		total = proto_get_u32(p);
		hdr = 0;
		if (total < 8 || total > PROTO_MAX_STARTUP) {
			client_close(c, "08P01", "invalid length of startup packet");
			return false;
		}
	} else if (c->login_step == LOGIN_WELCOME || c->login_step == LOGIN_AUTH_QUERY) {
		return false; /* whatever comes next waits until the login is finished */
	} else {
		if (avail < 5)
			return false;
		if (p[0] != 'p') {
			client_close(c, "08P01", "expected password response, got message type %d",
				     p[0]);
			return false;
		}
		total = proto_get_u32(p + 1) + 1;
		hdr = 5;
		if (total < 5 || total > SCRAM_MAX_MSG + 256) {
			client_close(c, "08P01", "invalid password packet length");
			return false;
		}
	}
	if (avail < total)
		return false;
	b->parsed += total;
	b->done = b->parsed;
	if (c->login_step == LOGIN_STARTUP)
		handle_startup(c, p, total);
	else
		handle_password(c, p + hdr, total - hdr);
	if (c->state == CLIENT_JUSTFREE)
		return false;
	enum io_result r = conn_flush(&c->io);
	if (r == IO_ERROR) {
		client_close(c, NULL, "write failed: %s", strerror(errno));
		return false;
	}
	if (r == IO_AGAIN)
		conn_write_enable(&c->io, true);
	else if (c->state != CLIENT_LOGIN && !c->link)
		/* Logged in and greeted: the login's write buffer goes back now,
		 * not a second later, so a burst of logins leaves no holes. */
		wbuf_free(&c->io.out);
	return true;
}

/* ---- forwarding ------------------------------------------------------------ */

/* What a client message handler did with the message at b->parsed. */
enum fwd {
	FWD_STREAM, /* forward it unchanged (its request is queued) */
	FWD_DONE,   /* consumed: rewritten into the server's output, or answered */
	FWD_WAIT,   /* needs more bytes, or the server socket to drain first */
	FWD_CLOSED, /* the client was closed */
};

/* Sends what is parsed so far, so a rewritten message can follow in order.
 * Also the server's out queue, once pgfleet's own messages for it (hidden
 * Parses of statements the client prepared, up to 1 MB each) pass
 * max_client_output_buffer: a pipeline of Binds must not make pgfleet queue
 * a copy of every statement at once. */
static bool flush_parsed(struct client *c, struct server *s)
{
	if (!iobuf_unsent(c->io.in) &&
	    wbuf_queued(&s->io.out) < (uint64_t)fleet.cfg.max_client_output_buffer)
		return true;
	return conn_forward(&c->io, &s->io) == IO_DONE;
}

/* The whole message at b->parsed is buffered (reserving room for it). */
static enum fwd need_whole(struct client *c, uint32_t total)
{
	if (iobuf_unparsed(c->io.in) >= total)
		return FWD_STREAM;
	if (!iobuf_reserve(&c->io.in, total)) {
		client_close(c, "54000", "message too large to handle (%u bytes)", total);
		return FWD_CLOSED;
	}
	return FWD_WAIT;
}

static void consume(struct client *c, uint32_t n)
{
	c->io.in->parsed += n;
	c->io.in->done = c->io.in->parsed;
}

static bool statements_on(void)
{
	return fleet.cfg.max_prepared_statements > 0;
}

static size_t inspect_max(void)
{
	return (size_t)fleet.cfg.max_inspected_query_size;
}

/* What a client sees when its SQL or its messages name one of pgfleet's
 * statements: the server's names are pgfleet's, never a client's. */
#define RESERVED_MSG                                                                               \
	"prepared statement names starting with \"" SQLINSPECT_RESERVED_PREFIX                    \
	"\" are reserved for pgfleet"
#define RESERVED_SQLSTATE "42501"
/* A refused message is replaced by this, run by the server itself: the
 * client gets the error from the server in its usual place (a simple Query:
 * ErrorResponse, ReadyForQuery; the extended protocol: ErrorResponse, the
 * rest skipped up to Sync), and a transaction block it was in fails just as
 * if the refused statement had run and failed. */
#define RESERVED_QUERY                                                                             \
	"DO $pgfleet$BEGIN RAISE EXCEPTION USING ERRCODE = '" RESERVED_SQLSTATE                    \
	"', MESSAGE = '" RESERVED_MSG "'; END$pgfleet$"

/* An extended-protocol message naming a reserved statement: the server
 * gets, in its place, RESERVED_QUERY as the unnamed statement and portal,
 * whose ParseComplete and BindComplete pgfleet consumes; the error of its
 * Execute goes to the client, and the client's messages up to Sync are
 * skipped, as the server skips them after an error.  (The client's unnamed
 * statement and portal are replaced on the way; without PL/pgSQL in the
 * database the server's error says so instead, a refusal all the same.)
 * `whole`: the message is buffered whole and dropped here; otherwise the
 * skipping drops it. */
static enum fwd refuse_extended(struct client *c, struct server *s, uint32_t len, bool whole,
			       const char *query)
{
	if (!flush_parsed(c, s))
		return FWD_WAIT;
	if (whole)
		consume(c, len + 1);
	struct wbuf *w = &s->io.out;
	uint32_t m = proto_begin(w, 'P');
	proto_put_str(w, "");
	proto_put_str(w, query);
	proto_put_u16(w, 0);
	proto_end(w, m);
	server_queue_push(s, REQ_PARSE, REQ_HIDE, NULL);
	m = proto_begin(w, 'B');
	proto_put_str(w, ""); /* portal */
	proto_put_str(w, ""); /* statement */
	proto_put_u16(w, 0);  /* parameter formats */
	proto_put_u16(w, 0);  /* parameters */
	proto_put_u16(w, 0);  /* result formats */
	proto_end(w, m);
	server_queue_push(s, REQ_BIND, REQ_HIDE, NULL);
	m = proto_begin(w, 'E');
	proto_put_str(w, "");
	proto_put_u32(w, 0);
	proto_end(w, m);
	server_queue_push(s, REQ_EXECUTE, REQ_HIDE, NULL);
	c->skip_to_sync = true;
	return FWD_DONE;
}

static enum fwd refuse_reserved(struct client *c, struct server *s, uint32_t len, bool whole)
{
	return refuse_extended(c, s, len, whole, RESERVED_QUERY);
}

/*
 * Session state in transaction and statement pooling.  What these leave
 * stays on the server connection after the transaction, where the client's
 * next transaction is not and another client's may be: that one would find
 * the temporary table, the prepared name, the open cursor, the role; the
 * lock would stay held by whichever client holds the connection; the
 * notifications would reach it, not the listener.  With
 * transaction_session_state = error (the default) the statement is refused
 * with 0A000 before it runs (a transaction block it was in fails, as when
 * a statement fails on the server); with warn it runs and the client gets
 * one NOTICE per feature and session.  Each first occurrence per client is
 * logged once.  Not seen: a text longer than max_inspected_query_size, a
 * function or DO block doing any of it.
 *
 * PREPARE inside a transaction block is the exception: it runs, and since
 * the connection's statements are then distrusted, a hidden DEALLOCATE ALL
 * drops it when the transaction ends, before any other client (or this
 * one's next transaction) can EXECUTE it; the client is told so once.
 */
static const struct {
	unsigned flag;
	const char *what;
} session_features[] = {
	{SQLI_TEMP, "temporary tables"},
	{SQLI_PREPARE, "PREPARE"},
	{SQLI_HOLD, "cursors WITH HOLD"},
	{SQLI_LISTEN, "LISTEN"},
	{SQLI_ADVISORY, "session-level advisory locks"},
	{SQLI_ROLE, "SET ROLE and SET SESSION AUTHORIZATION"},
};
#define SESSION_STATE_SQLSTATE "0A000"
/* state_told: the client was told its PREPAREs last one transaction. */
#define TOLD_PREPARE_IN_BLOCK 0x8000u

/* What to look for in c's SQL: statements when pgfleet keeps them, session
 * state when the pool mode shares server connections. */
static unsigned inspect_watch(const struct client *c)
{
	unsigned watch = statements_on() ? SQLI_WATCH_STATEMENTS : 0;
	/* Session pooling: a RESET must return the startup values the client
	 * brought, which its server connection (logged in neutral) does not
	 * have as its own; without any there is nothing to look for. */
	if (client_pool_mode(c) != POOL_SESSION || c->params_startup->count)
		watch |= SQLI_WATCH_SESSION;
	return watch;
}

static void session_state_message(const struct client *c, const char *what, char *buf,
				  size_t len)
{
	snprintf(buf, len,
		 "%s cannot follow a client across server connections in %s pooling mode: "
		 "what they leave would stay on a connection other clients use "
		 "(use pool_mode = session for this database)",
		 what, config_pool_mode_name(c->db->pool_mode));
}

/* A statement that may change session settings (SQLI_SET) goes to the
 * server: they are read back when the turn ends (server.c), the custom
 * names it gave among them.  A name past CLIENT_CUSTOM_NAMES_MAX is not
 * followed (and logged once). */
static void note_settings(struct client *c, const struct sql_look *look)
{
	c->params_changed = true;
	for (uint32_t p = 0; p < look->set_names_len;) {
		const char *name = look->set_names + p;
		uint32_t n = (uint32_t)strlen(name) + 1;
		p += n;
		if (!param_name_valid(name))
			continue; /* PostgreSQL refuses it too */
		bool known = false;
		for (uint32_t q = 0; q < c->custom_names_len && !known;
		     q += (uint32_t)strlen(c->custom_names + q) + 1)
			known = strcmp(c->custom_names + q, name) == 0;
		if (known)
			continue;
		char *grown = c->custom_names_len + n <= CLIENT_CUSTOM_NAMES_MAX
				      ? realloc(c->custom_names, c->custom_names_len + n)
				      : NULL;
		if (!grown) {
			log_warn("custom parameter not followed", "client", c->addr_str, "param", name,
				 NULL);
			continue;
		}
		memcpy(grown + c->custom_names_len, name, n);
		c->custom_names = grown;
		c->custom_names_len += n;
	}
}

/*
 * RESET name, SET name TO DEFAULT, RESET ALL.  On a direct connection they
 * return to the session's startup value; on a pooled server connection,
 * which logged in neutral and was given the client's startup values by SET,
 * to the connection's default.  So after a Query that is one such
 * statement, pgfleet sends the startup values of the names reset (hidden;
 * their ParameterStatus reaches the client), before anything else the
 * client sends: the rest of the session sees what it would see directly.
 * In a transaction block, both are undone together if the block rolls back.
 * Not done for a RESET among other statements of one Query: there the
 * startup values come back with the next transaction (server_sync_params),
 * the rest of this one sees the defaults.  The extended protocol: below.
 */
/* The client's startup values of what the RESET (look) resets: a
 * reference, NULL when none of the names has one (or no memory). */
static const struct param_set *startup_values(const struct client *c, const struct sql_look *look)
{
	if (look->flags & SQLI_RESET_ALL)
		return c->params_startup->count ? param_set_ref(c->params_startup) : NULL;
	const struct param_set *want = param_set_empty();
	for (uint32_t p = 0; want && p < look->reset_names_len;) {
		const char *name = look->reset_names + p, *v;
		p += (uint32_t)strlen(name) + 1;
		if ((v = param_get(c->params_startup, name)) &&
		    param_set_store(&want, name, v, NULL) != PARAM_OK) {
			param_set_release(want);
			want = NULL;
		}
	}
	if (want && !want->count) {
		param_set_release(want);
		want = NULL;
	}
	return want;
}

static enum fwd reset_to_startup(struct client *c, struct server *s, const char *text,
				 uint32_t len, const struct sql_look *look)
{
	const struct param_set *want = startup_values(c, look), *none = param_set_empty();
	char stack[1024], *sql = stack;
	size_t n = want && none ? param_set_diff_sql(want, none, NULL, sql, sizeof(stack)) : 0;
	if (n >= sizeof(stack)) {
		sql = malloc(n + 1); /* many or long startup values: rare */
		if (sql)
			(void)param_set_diff_sql(want, none, NULL, sql, n + 1);
	}
	param_set_release(want);
	param_set_release(none);
	enum fwd f = FWD_STREAM;
	if (n && sql) {
		if (!flush_parsed(c, s)) {
			f = FWD_WAIT;
		} else {
			proto_query(&s->io.out, text);
			server_queue_push(s, REQ_QUERY, REQ_PASS, NULL);
			consume(c, len + 1);
			server_queue_settings(s, sql);
			f = FWD_DONE;
		}
	}
	if (sql != stack)
		free(sql);
	return f;
}

/*
 * The same over the extended protocol.  A Parse of the unnamed statement
 * that is such a RESET is remembered (on_parse), carried to the unnamed
 * portal a Bind makes of it (on_bind), and after the Execute of that
 * portal pgfleet runs, hidden, `SELECT set_config($1, $2, false), ...`
 * with the startup values as parameters (no quoting to get wrong), under
 * a reserved name that it closes again: in the same transaction as the
 * RESET (undone with it), before anything else the client sent.  What
 * keeps the defaults until the next transaction: a RESET among other
 * statements of one simple Query, and one prepared under a name.
 */
#define RESET_HIDDEN_NAME "pgf_reset_startup"

static void reset_note(const struct param_set **slot, const struct param_set *want)
{
	param_set_release(*slot);
	*slot = want;
}

static void put_reset_hidden(struct server *s, const struct param_set *want)
{
	struct wbuf *w = &s->io.out;
	uint32_t m = proto_begin(w, 'P');
	proto_put_str(w, RESET_HIDDEN_NAME);
	wbuf_put(w, "SELECT ", 7);
	for (uint32_t i = 0; i < want->count; i++) {
		char item[64];
		int n = snprintf(item, sizeof(item), "%sset_config($%u, $%u, false)", i ? ", " : "",
				 2 * i + 1, 2 * i + 2);
		wbuf_put(w, item, (size_t)n);
	}
	wbuf_put(w, "", 1);
	proto_put_u16(w, 0); /* parameter types: the server's (text) */
	proto_end(w, m);
	server_queue_push(s, REQ_PARSE, REQ_HIDE, NULL);
	m = proto_begin(w, 'B');
	proto_put_str(w, RESET_HIDDEN_NAME);
	proto_put_str(w, RESET_HIDDEN_NAME);
	proto_put_u16(w, 0); /* parameter formats: text */
	proto_put_u16(w, (uint16_t)(2 * want->count));
	uint32_t pos = 0;
	const char *name, *value;
	while (param_next(want, &pos, &name, &value)) {
		proto_put_u32(w, (uint32_t)strlen(name));
		wbuf_put(w, name, strlen(name));
		proto_put_u32(w, (uint32_t)strlen(value));
		wbuf_put(w, value, strlen(value));
	}
	proto_put_u16(w, 0); /* result formats */
	proto_end(w, m);
	server_queue_push(s, REQ_BIND, REQ_HIDE, NULL);
	m = proto_begin(w, 'E');
	proto_put_str(w, RESET_HIDDEN_NAME);
	proto_put_u32(w, 0);
	proto_end(w, m);
	server_queue_push(s, REQ_EXECUTE, REQ_HIDE, NULL);
	const char kinds[2] = {'P', 'S'};
	for (int i = 0; i < 2; i++) {
		m = proto_begin(w, 'C');
		wbuf_put(w, &kinds[i], 1);
		proto_put_str(w, RESET_HIDDEN_NAME);
		proto_end(w, m);
		server_queue_push(s, REQ_CLOSE, REQ_HIDE, NULL);
	}
}

/* Execute: of the unnamed portal of a RESET (above), followed by the hidden
 * statement that gives the startup values back. */
static enum fwd on_execute(struct client *c, struct server *s, uint32_t len)
{
	if (!c->reset_portal) {
		server_queue_push(s, REQ_EXECUTE, REQ_PASS, NULL);
		return FWD_STREAM;
	}
	enum fwd w = need_whole(c, len + 1);
	if (w != FWD_STREAM)
		return w;
	const uint8_t *msg = c->io.in->data + c->io.in->parsed;
	if (len < 5 || msg[5] != 0) { /* a named portal: not the RESET's */
		server_queue_push(s, REQ_EXECUTE, REQ_PASS, NULL);
		return FWD_STREAM;
	}
	if (!flush_parsed(c, s))
		return FWD_WAIT;
	msg = c->io.in->data + c->io.in->parsed;
	wbuf_put(&s->io.out, msg, len + 1);
	server_queue_push(s, REQ_EXECUTE, REQ_PASS, NULL);
	consume(c, len + 1);
	const struct param_set *want = c->reset_portal;
	c->reset_portal = NULL; /* run: a second Execute resets nothing */
	put_reset_hidden(s, want);
	param_set_release(want);
	return FWD_DONE;
}

/* transaction_session_state = pin (the default): the statement runs, and
 * from now on c keeps s, as in session pooling, so the state stays its own
 * and nobody else's: s goes back to the pool only after c leaves and
 * server_reset_query (DISCARD ALL) has removed the state, or is closed when
 * there is no reset query.  c is told once, naming the feature. */
static void pin_client(struct client *c, struct server *s, unsigned what)
{
	if (c->pinned)
		return;
	const char *first = "session state";
	for (size_t i = 0; i < sizeof(session_features) / sizeof(session_features[0]); i++) {
		if (what & session_features[i].flag) {
			first = session_features[i].what;
			break;
		}
	}
	c->pinned = true;
	s->pinned = true;
	log_info("client pinned to its server connection", "client", c->addr_str, "db", c->dbname,
		 "user", c->user, "feature", first, "pool_mode",
		 config_pool_mode_name(c->db->pool_mode), NULL);
	char msg[320];
	snprintf(msg, sizeof(msg),
		 "%s keep this client on its server connection until it disconnects, "
		 "as in session pooling (pool_mode = %s shares connections between "
		 "transactions; use pool_mode = session for this database to avoid the notice)",
		 first, config_pool_mode_name(c->db->pool_mode));
	server_queue_notice(s, "01000", msg); /* a warning: nothing failed */
}

/* The session state in `what` (SQLI_SESSION_FLAGS set): FWD_STREAM when
 * the text goes on to the server, else what refusing it returned.
 * parse: the text is a Parse's (refused as one); else a Query's. */
static enum fwd session_state(struct client *c, struct server *s, unsigned what, uint32_t len,
			      bool parse)
{
	if (fleet.cfg.transaction_session_state == SSTATE_PIN) {
		pin_client(c, s, what);
		return FWD_STREAM;
	}
	bool refuse = fleet.cfg.transaction_session_state == SSTATE_ERROR;
	const char *first = NULL;
	char msg[320];
	if ((what & SQLI_PREPARE) && s->xact_status != 'I') {
		/* In a transaction block (or a failed one, where the server
		 * refuses it anyway): it lasts as long as the block. */
		what &= ~SQLI_PREPARE;
		server_distrust_statements(s);
		if (!(c->state_told & TOLD_PREPARE_IN_BLOCK)) {
			c->state_told |= TOLD_PREPARE_IN_BLOCK;
			snprintf(msg, sizeof(msg),
				 "PREPARE in a transaction block lasts until the transaction ends "
				 "in %s pooling mode (use pool_mode = session to keep it longer)",
				 config_pool_mode_name(c->db->pool_mode));
			server_queue_notice(s, SESSION_STATE_SQLSTATE, msg);
		}
	}
	for (size_t i = 0; i < sizeof(session_features) / sizeof(session_features[0]); i++) {
		unsigned f = session_features[i].flag;
		if (!(what & f))
			continue;
		if (!first)
			first = session_features[i].what;
		if (c->state_told & f)
			continue;
		c->state_told |= (uint16_t)f;
		log_info(refuse ? "session state refused in a pooled session"
				: "session state kept on a pooled connection",
			 "client", c->addr_str, "db", c->dbname, "user", c->user, "feature",
			 session_features[i].what, "pool_mode",
			 config_pool_mode_name(c->db->pool_mode), NULL);
		if (!refuse) {
			session_state_message(c, session_features[i].what, msg, sizeof(msg));
			server_queue_notice(s, SESSION_STATE_SQLSTATE, msg);
		}
	}
	if (!refuse || !first)
		return FWD_STREAM;
	/* Refused by the server itself, as RESERVED_QUERY is: the error comes
	 * in its usual place and fails the transaction block it is in.  No
	 * quote in the message: it sits in a literal. */
	char text[sizeof(msg)], query[sizeof(msg) + 160];
	session_state_message(c, first, text, sizeof(text));
	snprintf(query, sizeof(query),
		 "DO $pgfleet$BEGIN RAISE EXCEPTION USING ERRCODE = '" SESSION_STATE_SQLSTATE
		 "', MESSAGE = '%s'; END$pgfleet$",
		 text);
	if (parse)
		return refuse_extended(c, s, len, true, query);
	if (!flush_parsed(c, s))
		return FWD_WAIT;
	consume(c, len + 1);
	proto_query(&s->io.out, query);
	server_queue_push(s, REQ_QUERY, REQ_PASS, NULL);
	return FWD_DONE;
}

/* What running a text does to the connection's statements. */
static void apply_look(struct client *c, struct server *s, unsigned what)
{
	if (what & SQLI_RESET_ALL)
		c->route_pref = SQLROUTE_PREF_AUTO; /* pgfleet.route is a setting too */
	if (what & SQLI_DROPS_ALL)
		prepared_client_clear(c->stmts); /* the client's are gone as well */
	if (what & (SQLI_DROPS_ALL | SQLI_UNSURE))
		server_distrust_statements(s);
}

/* A Parse pgfleet refuses itself: the ErrorResponse comes in turn (a faked
 * reply, server_queue_error) and the rest up to Sync is ignored, as
 * PostgreSQL does after an error.  The session goes on. */
static enum fwd refuse_parse(struct client *c, struct server *s, uint32_t len,
			     const char *sqlstate, const char *fmt, ...)
	__attribute__((format(printf, 5, 6)));
static enum fwd refuse_parse(struct client *c, struct server *s, uint32_t len,
			     const char *sqlstate, const char *fmt, ...)
{
	char msg[256];
	va_list ap;
	va_start(ap, fmt);
	vsnprintf(msg, sizeof(msg), fmt, ap);
	va_end(ap);
	consume(c, len + 1);
	server_queue_error(s, sqlstate, msg);
	c->skip_to_sync = true;
	return FWD_DONE;
}

/* The same text as the client's last Parse in which nothing was found,
 * looked at for the same things?  Then the look would find nothing again
 * (within max_inspected_query_size the look depends on the text alone). */
static bool clean_parse_again(const struct client *c, const char *text, size_t len,
			      unsigned watch)
{
	return c->clean_parse && len == c->clean_parse_len && watch == c->clean_parse_watch &&
	       len <= inspect_max() && memcmp(text, c->clean_parse, len) == 0;
}

static void clean_parse_note(struct client *c, const char *text, size_t len, unsigned watch)
{
	if (len > CLIENT_CLEAN_PARSE_MAX)
		return;
	if (!c->clean_parse && !(c->clean_parse = malloc(CLIENT_CLEAN_PARSE_MAX)))
		return; /* no memory: looked at every time */
	memcpy(c->clean_parse, text, len);
	c->clean_parse_len = (uint32_t)len;
	c->clean_parse_watch = (uint8_t)watch;
}

/* Parse of a named statement: remembered under the client's name, sent under
 * the shared name only when this server connection lacks it. */
static enum fwd on_parse(struct client *c, struct server *s, uint32_t len)
{
	enum fwd w = need_whole(c, len + 1);
	if (w != FWD_STREAM)
		return w;
	struct iobuf *b = c->io.in;
	struct pkt_reader r = pkt_reader_init(b->data + b->parsed + 5, len - 4);
	const char *name = pkt_get_str(&r);
	if (!name) {
		client_close(c, "08P01", "malformed Parse message");
		return FWD_CLOSED;
	}
	if (!*name && c->reset_stmt)
		reset_note(&c->reset_stmt, NULL); /* a new unnamed statement */
	unsigned watch = inspect_watch(c);
	if (!watch) {
		server_queue_push(s, REQ_PARSE, REQ_PASS, NULL);
		return FWD_STREAM;
	}
	const char *query = (const char *)r.p + r.pos;
	const char *qend = memchr(query, 0, r.len - r.pos);
	size_t qlen = qend ? (size_t)(qend - query) : 0;
	struct sql_look look;
	/* Without its NUL the server refuses the message: nothing runs.  A
	 * Parse runs one statement or none: its first is all that counts. */
	unsigned what = 0;
	if (qend && !clean_parse_again(c, query, qlen, watch)) {
		what = sqlinspect_look_watch(query, qlen, inspect_max(), watch, true, &look);
		if (!what)
			clean_parse_note(c, query, qlen, watch);
	}
	if (!*name && (what & (SQLI_RESET | SQLI_RESET_ALL)) && !look.reset_overflow)
		reset_note(&c->reset_stmt, startup_values(c, &look));
	bool shared = client_pool_mode(c) != POOL_SESSION;
	if ((what & SQLI_SESSION_FLAGS) && shared) {
		enum fwd f = session_state(c, s, what, len, true);
		if (f != FWD_STREAM)
			return f;
	}
	if ((what & SQLI_SET) && shared)
		note_settings(c, &look);
	if (!statements_on()) {
		server_queue_push(s, REQ_PARSE, REQ_PASS, NULL);
		return FWD_STREAM;
	}
	if ((what & SQLI_DEALLOC) && !*name) {
		struct pstmt *ps = prepared_client_lookup(c->stmts, look.name);
		if (ps) {
			/* DEALLOCATE <client name> over the extended protocol (psycopg
			 * does it): deallocate the shared statement on this server
			 * instead, which other clients re-prepare when they need it. */
			if (!flush_parsed(c, s))
				return FWD_WAIT;
			char sql[64];
			snprintf(sql, sizeof(sql), "DEALLOCATE %s", server_ensure_prepared(s, ps));
			prepared_server_forget(s->stmts, ps);
			prepared_client_close(c->stmts, look.name);
			uint32_t m = proto_begin(&s->io.out, 'P');
			proto_put_str(&s->io.out, "");
			proto_put_str(&s->io.out, sql);
			proto_put_u16(&s->io.out, 0);
			proto_end(&s->io.out, m);
			server_queue_push(s, REQ_PARSE, REQ_PASS, NULL);
			consume(c, len + 1);
			return FWD_DONE;
		}
	}
	if (what & SQLI_RESERVED)
		return refuse_reserved(c, s, len, true);
	if (!*name) {
		/* The unnamed statement runs right after, if at all. */
		apply_look(c, s, what);
		server_queue_push(s, REQ_PARSE, REQ_PASS, NULL);
		return FWD_STREAM;
	}
	if (!flush_parsed(c, s))
		return FWD_WAIT;
	if (prepared_client_lookup(c->stmts, name))
		/* As PostgreSQL: the name is taken until it is closed. */
		return refuse_parse(c, s, len, "42P05", "prepared statement \"%.64s\" already exists",
				    name);
	uint32_t body_len = r.len - r.pos;
	long long max_count = fleet.cfg.max_client_prepared_statements;
	if (max_count > 0 && prepared_client_count(c->stmts) >= (uint64_t)max_count)
		return refuse_parse(c, s, len, "53400",
				    "cannot prepare statement \"%.64s\": this client has %lld prepared "
				    "statements (max_client_prepared_statements)",
				    name, max_count);
	if (prepared_client_bytes(c->stmts) + prepared_client_cost(name, body_len) >
	    (uint64_t)fleet.cfg.max_client_prepared_bytes)
		return refuse_parse(c, s, len, "53400",
				    "cannot prepare statement \"%.64s\": this client's prepared "
				    "statements would take more than %lld bytes "
				    "(max_client_prepared_bytes)",
				    name, fleet.cfg.max_client_prepared_bytes);
	struct pstmt *ps = prepared_client_parse(&c->stmts, name, r.p + r.pos, r.len - r.pos);
	/* A prepared DISCARD ALL / DEALLOCATE ALL drops everything when it
	 * runs; a DO or CALL may change statements unseen when it runs. */
	ps->drops_all = (what & SQLI_DROPS_ALL) != 0;
	ps->unsure = (what & SQLI_UNSURE) != 0;
	ps->sets = ps->sets || (what & SQLI_SET); /* seen by a pooled client, at least */
	ps->resets_all = ps->resets_all || (what & SQLI_RESET_ALL);
	consume(c, len + 1);
	if (prepared_server_name(s->stmts, ps)) {
		server_queue_push(s, REQ_PARSE, REQ_FAKE, NULL);
		return FWD_DONE;
	}
	server_ensure_prepared(s, ps);
	/* ensure_prepared queued a hidden Parse: this one is the client's own
	 * (unless the queue overflowed: the client is closed right after) */
	if (!s->overflow)
		server_queue_last(s)->action = REQ_PASS;
	return FWD_DONE;
}

/* Writes the start of a Bind/Describe with the shared statement name in
 * place of the client's: type, new length, `lead` (the portal name with its
 * NUL, or the 'S' byte), the shared name.  The original's first `consumed`
 * body bytes are dropped from the client's buffer; whatever follows them
 * streams through unchanged. */
static void send_renamed(struct client *c, struct server *s, uint8_t type, uint32_t len,
			 const void *lead, uint32_t lead_len, const char *name, uint32_t consumed,
			 struct pstmt *ps)
{
	const char *sname = server_ensure_prepared(s, ps);
	uint32_t old_name = (uint32_t)strlen(name), new_name = (uint32_t)strlen(sname);
	uint32_t newlen = len - old_name + new_name;
	uint8_t head[5] = {type, (uint8_t)(newlen >> 24), (uint8_t)(newlen >> 16),
			   (uint8_t)(newlen >> 8), (uint8_t)newlen};
	struct wbuf *out = &s->io.out;
	wbuf_put(out, head, 5);
	wbuf_put(out, lead, lead_len);
	wbuf_put(out, sname, new_name + 1);
	/* With its statement: a 26000 reply means the server lost it. */
	server_queue_push(s, type == 'B' ? REQ_BIND : REQ_DESCRIBE, REQ_PASS, ps);
	consume(c, 5 + consumed);
	c->io.pkt_remain = len + 1 - 5 - consumed;
}

/* A Describe or Close, whole: what ('S' statement, 'P' portal) and name. */
static enum fwd read_target(struct client *c, uint32_t len, const char *msg, uint8_t *what,
			    const char **name)
{
	enum fwd w = need_whole(c, len + 1);
	if (w != FWD_STREAM)
		return w;
	struct iobuf *b = c->io.in;
	struct pkt_reader r = pkt_reader_init(b->data + b->parsed + 5, len - 4);
	*what = pkt_get_u8(&r);
	*name = pkt_get_str(&r);
	if (!*name) {
		client_close(c, "08P01", "malformed %s message", msg);
		return FWD_CLOSED;
	}
	return FWD_STREAM;
}

/* Describe of a named statement: prepared here first if need be. */
static enum fwd on_describe(struct client *c, struct server *s, uint32_t len)
{
	uint8_t what;
	const char *name;
	enum fwd w = read_target(c, len, "Describe", &what, &name);
	if (w != FWD_STREAM)
		return w;
	struct pstmt *ps = what == 'S' && *name && statements_on()
				   ? prepared_client_lookup(c->stmts, name)
				   : NULL;
	if (!ps) {
		if (what == 'S' && statements_on() && sqlinspect_reserved(name))
			return refuse_reserved(c, s, len, true); /* another's, maybe */
		/* A portal, the unnamed statement, or a name the server will
		 * report as unknown in its own words. */
		server_queue_push(s, REQ_DESCRIBE, REQ_PASS, NULL);
		return FWD_STREAM;
	}
	if (!flush_parsed(c, s))
		return FWD_WAIT;
	send_renamed(c, s, 'D', len, "S", 1, name, len - 4, ps);
	return FWD_DONE;
}

/* Bind of a named statement.  Its parameters may be large: only the part up
 * to the statement name must be buffered; the rest streams through. */
static enum fwd on_bind(struct client *c, struct server *s, uint32_t len)
{
	if (c->reset_stmt || c->reset_portal) {
		/* Which portal, from which statement: the first two bytes say
		 * whether both are the unnamed ones. */
		if (len < 6) {
			client_close(c, "08P01", "malformed Bind message");
			return FWD_CLOSED;
		}
		enum fwd w = need_whole(c, 7);
		if (w != FWD_STREAM)
			return w;
		const uint8_t *body = c->io.in->data + c->io.in->parsed + 5;
		if (body[0] == 0)
			reset_note(&c->reset_portal,
				   body[1] == 0 && c->reset_stmt ? param_set_ref(c->reset_stmt) : NULL);
	}
	if (!statements_on()) {
		server_queue_push(s, REQ_BIND, REQ_PASS, NULL);
		return FWD_STREAM;
	}
	struct iobuf *b = c->io.in;
	const uint8_t *body = b->data + b->parsed + 5;
	uint32_t body_len = len - 4, avail = iobuf_unparsed(b) - 5;
	if (avail > body_len)
		avail = body_len;
	const uint8_t *z1 = memchr(body, 0, avail);
	const uint8_t *z2 = z1 ? memchr(z1 + 1, 0, avail - (uint32_t)(z1 + 1 - body)) : NULL;
	if (!z2) {
		/* Names are short: if they are not within reach, it is garbage. */
		if (avail == body_len || avail > 2 * 1024) {
			client_close(c, "08P01", "malformed Bind message");
			return FWD_CLOSED;
		}
		uint32_t want = len + 1 < 4096 ? len + 1 : 4096;
		return need_whole(c, want) == FWD_CLOSED ? FWD_CLOSED : FWD_WAIT;
	}
	const char *portal = (const char *)body, *name = (const char *)z1 + 1;
	struct pstmt *ps = *name ? prepared_client_lookup(c->stmts, name) : NULL;
	if (!ps && sqlinspect_reserved(name))
		return refuse_reserved(c, s, len, false); /* the skipping drops it */
	if (!ps) {
		server_queue_push(s, REQ_BIND, REQ_PASS, NULL);
		return FWD_STREAM;
	}
	if (!flush_parsed(c, s))
		return FWD_WAIT;
	send_renamed(c, s, 'B', len, portal, (uint32_t)(z1 + 1 - body), name,
		     (uint32_t)(z2 + 1 - body), ps);
	/* Executing it drops every statement of the session, itself too, or
	 * may change them unseen. */
	apply_look(c, s,
		   (ps->drops_all ? SQLI_DROPS_ALL : 0) | (ps->unsure ? SQLI_UNSURE : 0) |
			   (ps->resets_all ? SQLI_RESET_ALL : 0));
	if (ps->sets && client_pool_mode(c) != POOL_SESSION)
		c->params_changed = true; /* read back when the turn ends */
	return FWD_DONE;
}

/* Close of a named statement: the client forgets it, pgfleet answers; the
 * shared statement stays prepared for other clients. */
static enum fwd on_close(struct client *c, struct server *s, uint32_t len)
{
	uint8_t what;
	const char *name;
	enum fwd w = read_target(c, len, "Close", &what, &name);
	if (w != FWD_STREAM)
		return w;
	if (what != 'S' || !*name || !statements_on() || !prepared_client_lookup(c->stmts, name)) {
		if (what == 'S' && statements_on() && sqlinspect_reserved(name))
			return refuse_reserved(c, s, len, true);
		server_queue_push(s, REQ_CLOSE, REQ_PASS, NULL);
		return FWD_STREAM;
	}
	prepared_client_close(c->stmts, name);
	consume(c, len + 1);
	server_queue_push(s, REQ_CLOSE, REQ_FAKE, NULL);
	return FWD_DONE;
}

/* ---- target_session_attrs = auto ------------------------------------------ */

/* Transaction and statement pooling: each transaction by its first
 * statement.  (Session pooling keeps one connection for the session:
 * auto sends it to the primary, which can run anything.) */
static bool client_routed(const struct client *c)
{
	return c->db && database_tsa(c->db) == TSA_AUTO && client_pool_mode(c) != POOL_SESSION;
}

static void classify(const char *text, size_t len, struct sqlroute_answer *a)
{
	sqlroute_classify_cached(text, len, inspect_max(), (unsigned)fleet.cfg.route_cache_size, a);
}

/* A named statement's class, worked out at its first Bind and kept with it. */
static uint8_t statement_class(struct pstmt *ps)
{
	uint8_t known = atomic_load_explicit(&ps->route, memory_order_relaxed);
	if (known)
		return (uint8_t)(known - 1);
	const char *text = (const char *)ps->body;
	const char *end = memchr(text, 0, ps->body_len);
	struct sqlroute_answer a = {0};
	if (end)
		classify(text, (size_t)(end - text), &a);
	atomic_store_explicit(&ps->route, (uint8_t)(a.cls + 1), memory_order_relaxed);
	return a.cls;
}

/*
 * The class of the statement the message at b->parsed carries: a Query's
 * or a Parse's text, a Bind's named statement; anything else (and a text
 * too big to look at) counts as one for the primary.  Query and Parse are
 * read whole first (need_whole).
 */
/* What a batch's Parses told so far (route_batch): whether the unnamed
 * statement is a read, and the names of the statements prepared as reads
 * (offsets into the client's buffer), for the Binds after them. */
#define ROUTE_SEEN_NAMES 8
struct route_seen {
	bool unnamed;
	uint8_t n;
	uint32_t name_at[ROUTE_SEEN_NAMES];
};

static enum fwd route_class(struct client *c, uint8_t type, uint32_t len, struct sqlroute_answer *a,
			    struct route_seen *seen)
{
	memset(a, 0, sizeof(*a));
	if ((type != 'Q' && type != 'P' && type != 'B') || len + 1 > IOBUF_MAX_WHOLE)
		return FWD_STREAM;
	enum fwd w = need_whole(c, len + 1);
	if (w != FWD_STREAM)
		return w;
	const uint8_t *body = c->io.in->data + c->io.in->parsed + 5;
	struct pkt_reader r = pkt_reader_init(body, len - 4);
	if (type == 'Q') {
		if (len >= 5 && body[len - 5] == 0)
			classify((const char *)body, len - 5, a);
		return FWD_STREAM; /* malformed: on_query refuses it */
	}
	const char *name = pkt_get_str(&r);
	const char *text = pkt_get_str(&r);
	if (!text)
		return FWD_STREAM;
	if (type == 'P') {
		classify(text, strlen(text), a);
		if (!*name)
			seen->unnamed = true;
		else if (seen->n < ROUTE_SEEN_NAMES)
			seen->name_at[seen->n++] = (uint32_t)((const uint8_t *)name - c->io.in->data);
		return FWD_STREAM;
	}
	/* Bind: portal `name`, statement `text`.  A statement parsed earlier in
	 * the batch has its Parse's class (`seen`: the caller stops at the
	 * first Parse that is no read); the unnamed one parsed in an earlier
	 * transaction goes to the primary, which can run anything. */
	if (!*text && seen->unnamed) {
		a->cls = SQLROUTE_READ;
		return FWD_STREAM;
	}
	for (unsigned i = 0; *text && i < seen->n; i++)
		if (strcmp((const char *)c->io.in->data + seen->name_at[i], text) == 0) {
			a->cls = SQLROUTE_READ;
			return FWD_STREAM;
		}
	struct pstmt *ps = *text && statements_on() ? prepared_client_lookup(c->stmts, text) : NULL;
	if (ps)
		a->cls = statement_class(ps);
	return FWD_STREAM;
}

/* Is a statement of class `cls` a read, pgfleet.route and hints counted? */
static bool route_is_read(const struct client *c, const struct sqlroute_answer *a)
{
	if (a->cls == SQLROUTE_SET_ROUTE)
		return false;
	if (!a->hinted && c->route_pref != SQLROUTE_PREF_AUTO)
		return c->route_pref == SQLROUTE_PREF_STANDBY;
	return a->cls == SQLROUTE_READ || a->cls == SQLROUTE_BEGIN_READ;
}

/*
 * The class of the transaction the client's buffered messages start at
 * b->parsed.  A simple Query is one transaction (its own class).  Over the
 * extended protocol every statement up to the Sync (or Flush) runs in one
 * implicit transaction: it is a read only when each Parse and Bind in it
 * is one.  The batch is read from the buffer (drivers send it at once);
 * FWD_WAIT until it is all there, unless the buffer is full: then (and for
 * any other message) the primary, which can run anything.  *single: the
 * first message is a Query (a SET pgfleet.route is answered alone).
 */
static enum fwd route_batch(struct client *c, uint8_t type, uint32_t len,
			    struct sqlroute_answer *out, bool *single)
{
	*single = type == 'Q';
	struct route_seen seen = {0}; /* the batch's Parses so far */
	if (type != 'P' && type != 'B')
		return route_class(c, type, len, out, &seen);
	enum fwd w = route_class(c, type, len, out, &seen);
	if (w != FWD_STREAM || !route_is_read(c, out))
		return w;
	const struct iobuf *b = c->io.in;
	uint32_t pos = b->parsed + len + 1;
	for (;;) {
		if (b->recv - pos < 5)
			break;
		uint8_t t = b->data[pos];
		uint32_t l = (uint32_t)b->data[pos + 1] << 24 | (uint32_t)b->data[pos + 2] << 16 |
			     (uint32_t)b->data[pos + 3] << 8 | b->data[pos + 4];
		if (l < 4 || l > (uint64_t)fleet.cfg.max_packet_size || t == 'Q' || t == 'F') {
			memset(out, 0, sizeof(*out)); /* forward_to_server deals with it */
			return FWD_STREAM;
		}
		if (t == 'S' || t == 'H')
			return FWD_STREAM; /* the batch is whole: every statement a read */
		if (b->recv - pos < l + 1)
			break;
		if (t == 'P' || t == 'B') {
			/* route_class reads the message at b->parsed: look at this
			 * one in place with the same code. */
			struct sqlroute_answer a;
			uint32_t keep = c->io.in->parsed;
			c->io.in->parsed = pos;
			w = route_class(c, t, l, &a, &seen);
			c->io.in->parsed = keep;
			if (w != FWD_STREAM)
				return w;
			if (!route_is_read(c, &a)) {
				*out = a;
				return FWD_STREAM;
			}
		}
		pos += l + 1;
	}
	if (b->recv == b->size) {
		memset(out, 0, sizeof(*out)); /* more than the buffer holds: the primary */
		return FWD_STREAM;
	}
	return FWD_WAIT;
}

static const char *const route_pref_names[] = {"auto", "primary", "standby"};

/* Whether a Bind (its body) asks for its results in binary: one result
 * format code for all columns, or the first of one per column (SHOW's
 * single column).  Text when malformed: the server would refuse it. */
static bool bind_wants_binary(const uint8_t *body, uint32_t len)
{
	struct pkt_reader r = pkt_reader_init(body, len);
	(void)pkt_get_str(&r); /* portal */
	(void)pkt_get_str(&r); /* statement */
	uint16_t nfmt = pkt_get_u16(&r);
	(void)pkt_get_bytes(&r, 2u * nfmt);
	uint16_t nparams = pkt_get_u16(&r);
	for (uint16_t i = 0; i < nparams && !r.bad; i++) {
		uint32_t n = pkt_get_u32(&r);
		if (n != UINT32_MAX) /* -1: a NULL, no bytes */
			(void)pkt_get_bytes(&r, n);
	}
	uint16_t nres = pkt_get_u16(&r);
	uint16_t first = nres ? pkt_get_u16(&r) : 0;
	return !r.bad && first == 1;
}

/* SET/RESET/SHOW pgfleet.route: pgfleet's own session setting, never sent
 * to a server.  NULL when it took (*msg: the command tag, or SHOW's value),
 * else the SQLSTATE of the refusal in the server's words (*msg: its
 * message). */
static const char *route_apply(struct client *c, const struct sqlroute_answer *a,
			       const char **msg)
{
	if (a->show) {
		*msg = route_pref_names[c->route_pref];
		return NULL;
	}
	if (a->local) {
		*msg = "SET LOCAL pgfleet.route is not supported: pgfleet.route is set for the "
		       "session";
		return "0A000";
	}
	if (a->pref >= SQLROUTE_PREF_INVALID) {
		*msg = "invalid value for parameter \"pgfleet.route\": expected primary, standby "
		       "or auto";
		return "22023";
	}
	c->route_pref = a->pref;
	log_kv(LOG_DEBUG, "route set", "client", c->addr_str, "route", route_pref_names[a->pref],
	       NULL);
	*msg = a->reset ? "RESET" : "SET";
	return NULL;
}

/* A simple Query of SET pgfleet.route while no transaction is under way:
 * answered here, ReadyForQuery 'I' after. */
static void route_answer_query(struct client *c, uint32_t len, const struct sqlroute_answer *a)
{
	const char *msg;
	const char *sqlstate = route_apply(c, a, &msg);
	if (sqlstate) {
		proto_error(&c->io.out, "ERROR", sqlstate, msg);
	} else if (a->show) {
		proto_text_column(&c->io.out, ROUTE_SETTING, 0);
		proto_show_result(&c->io.out, msg);
	} else {
		uint32_t m = proto_begin(&c->io.out, 'C');
		proto_put_str(&c->io.out, msg);
		proto_end(&c->io.out, m);
	}
	proto_ready(&c->io.out, 'I');
	consume(c, len + 1);
	enum io_result r = conn_flush(&c->io);
	if (r == IO_ERROR)
		client_close(c, NULL, "write to client failed");
	else if (r == IO_AGAIN)
		conn_write_enable(&c->io, true);
}

/* A simple Query on a link: SET pgfleet.route is answered in turn (the
 * server's transaction status after it), anything else goes on.  The
 * first Query of the link was looked at by route_first already. */
static enum fwd route_query_linked(struct client *c, struct server *s, uint32_t len)
{
	if (c->route_seen) {
		c->route_seen = false;
		return FWD_STREAM;
	}
	struct sqlroute_answer a;
	struct route_seen seen = {0};
	enum fwd w = route_class(c, 'Q', len, &a, &seen);
	if (w != FWD_STREAM || a.cls != SQLROUTE_SET_ROUTE)
		return w;
	if (!flush_parsed(c, s))
		return FWD_WAIT;
	const char *msg;
	const char *sqlstate = route_apply(c, &a, &msg);
	consume(c, len + 1);
	server_queue_route(s, a.show ? REQ_MARK_SHOW : sqlstate, msg);
	return FWD_DONE;
}

/* Bytes of a Bind or Describe route_extended reads for the names. */
#define ROUTE_NAMES_MAX 512

/* A named statement the client prepared that is SET pgfleet.route: its
 * answer (classified from the cache), or NULL. */
static bool route_statement(struct client *c, const char *name, struct sqlroute_answer *a)
{
	struct pstmt *ps = *name && statements_on() ? prepared_client_lookup(c->stmts, name) : NULL;
	if (!ps || statement_class(ps) != SQLROUTE_SET_ROUTE)
		return false;
	const char *text = (const char *)ps->body;
	classify(text, strnlen(text, ps->body_len), a);
	return a->cls == SQLROUTE_SET_ROUTE;
}

/* A named Parse of SET pgfleet.route: kept by pgfleet (the client's
 * statement table, as any statement, within the same limits) and never
 * sent to a server; psycopg prepares a text it ran five times. */
static enum fwd route_parse_named(struct client *c, struct server *s, uint32_t len,
				  const char *name, bool show)
{
	if (!statements_on())
		return refuse_parse(c, s, len, "0A000",
				    "%s pgfleet.route cannot be prepared under a name while "
				    "max_prepared_statements = 0: send it as a simple query or the "
				    "unnamed statement",
				    show ? "SHOW" : "SET");
	if (prepared_client_lookup(c->stmts, name))
		return refuse_parse(c, s, len, "42P05", "prepared statement \"%.64s\" already exists",
				    name);
	long long max_count = fleet.cfg.max_client_prepared_statements;
	uint32_t body_len = len - 4 - (uint32_t)strlen(name) - 1;
	if ((max_count > 0 && prepared_client_count(c->stmts) >= (uint64_t)max_count) ||
	    prepared_client_bytes(c->stmts) + prepared_client_cost(name, body_len) >
		(uint64_t)fleet.cfg.max_client_prepared_bytes)
		return refuse_parse(c, s, len, "53400",
				    "cannot prepare statement \"%.64s\": this client's prepared "
				    "statements are at max_client_prepared_statements or "
				    "max_client_prepared_bytes",
				    name);
	if (!flush_parsed(c, s))
		return FWD_WAIT;
	const uint8_t *body = c->io.in->data + c->io.in->parsed + 5 + strlen(name) + 1;
	(void)prepared_client_parse(&c->stmts, name, body, body_len);
	c->route_named = true;
	consume(c, len + 1);
	server_queue_fake(s, REQ_PARSE, NULL, NULL);
	return FWD_DONE;
}

/*
 * SET pgfleet.route over the extended protocol (pgjdbc, node-postgres with
 * parameters, psycopg's binary cursors and its statements prepared after
 * five runs): pgfleet answers its Parse, Bind, Describe, Execute and Close
 * itself, in turn; the Sync goes to the server as usual.  The unnamed
 * statement is followed here (c->route_ext), a named one through the
 * client's statement table; the unnamed portal bound from either carries
 * the answer (c->route_portal).  A named portal is refused (0A000).
 */
static enum fwd route_extended(struct client *c, struct server *s, uint8_t type, uint32_t len)
{
	enum fwd w;
	struct sqlroute_answer a;
	if (type == 'P') {
		struct route_seen seen = {0};
		w = route_class(c, 'P', len, &a, &seen);
		if (w != FWD_STREAM)
			return w;
		bool unnamed = seen.unnamed;
		if (unnamed)
			c->route_ext = 0; /* a new unnamed statement */
		if (a.cls != SQLROUTE_SET_ROUTE || a.hinted)
			return FWD_STREAM;
		if (!unnamed)
			return route_parse_named(c, s, len,
						 (const char *)c->io.in->data + c->io.in->parsed + 5,
						 a.show);
		if (!flush_parsed(c, s))
			return FWD_WAIT;
		c->route_ext_answer = a;
		c->route_ext = 1;
		consume(c, len + 1);
		server_queue_fake(s, REQ_PARSE, NULL, NULL);
		return FWD_DONE;
	}
	if (type == 'S')
		c->route_portal = false; /* the transaction's end drops the portal */
	if (type != 'B' && type != 'D' && type != 'E' && type != 'C')
		return FWD_STREAM;
	if (!c->route_ext && !c->route_portal && !c->route_named)
		return FWD_STREAM; /* the usual case: nothing of SET pgfleet.route about */
	/* The names lead the message: a Bind's parameters may be any size and
	 * stream through, so only its first bytes are needed. */
	uint32_t head = len + 1 < ROUTE_NAMES_MAX ? len + 1 : ROUTE_NAMES_MAX;
	w = need_whole(c, head);
	if (w != FWD_STREAM)
		return w;
	struct pkt_reader r = pkt_reader_init(c->io.in->data + c->io.in->parsed + 5, head - 5);
	uint8_t what = type == 'B' ? 'B' : pkt_get_u8(&r);
	const char *name = pkt_get_str(&r);
	const char *stmt = type == 'B' ? pkt_get_str(&r) : NULL;
	if (!name || (type == 'B' && !stmt))
		return FWD_STREAM; /* malformed, or names too long to be ours */
	bool ours;
	switch (type) {
	case 'B':
		ours = *stmt ? route_statement(c, stmt, &a) : c->route_ext != 0;
		if (!*stmt && ours)
			a = c->route_ext_answer;
		if (!*name)
			c->route_portal = false; /* the unnamed portal is this Bind's now */
		break;
	case 'D':
		if (what == 'S') {
			ours = *name ? route_statement(c, name, &a) : c->route_ext != 0;
			if (!*name && ours)
				a = c->route_ext_answer;
		} else {
			ours = !*name && c->route_portal;
			if (ours)
				a = c->route_portal_answer;
		}
		break;
	case 'E':
		ours = !*name && c->route_portal;
		break;
	default: /* 'C': a named statement is closed by on_close, as any */
		ours = what == 'S' && !*name && c->route_ext;
		break;
	}
	if (!ours)
		return FWD_STREAM;
	if (head != len + 1) {
		w = need_whole(c, len + 1); /* a Bind of ours is dropped whole */
		if (w != FWD_STREAM)
			return w;
	}
	if (!flush_parsed(c, s))
		return FWD_WAIT;
	const char *msg, *sqlstate;
	if (type == 'B' && *name) {
		consume(c, len + 1);
		server_queue_error(s, "0A000",
				   a.show ? "SHOW pgfleet.route cannot be bound to a named portal"
					  : "SET pgfleet.route cannot be bound to a named portal");
		c->skip_to_sync = true;
		return FWD_DONE;
	}
	if (type == 'B')
		c->route_portal_binary = a.show && bind_wants_binary(c->io.in->data +
								     c->io.in->parsed + 5, len - 4);
	consume(c, len + 1);
	switch (type) {
	case 'B':
		c->route_portal = true;
		c->route_portal_answer = a;
		server_queue_fake(s, REQ_BIND, NULL, NULL);
		break;
	case 'D':
		/* SET's statement and portal return no rows; SHOW's one text
		 * column (emit_fake reads the mark). */
		if (!a.show)
			server_queue_fake(s, REQ_DESCRIBE, what == 'S' ? "S" : NULL, NULL);
		else if (what == 'S')
			server_queue_fake(s, REQ_DESCRIBE, "SV", NULL);
		else
			server_queue_fake(s, REQ_DESCRIBE, c->route_portal_binary ? "VB" : "V", NULL);
		break;
	case 'E':
		sqlstate = route_apply(c, &c->route_portal_answer, &msg);
		if (sqlstate) {
			server_queue_error(s, sqlstate, msg);
			c->skip_to_sync = true; /* as the server skips after an error */
		} else {
			server_queue_fake(s, REQ_EXECUTE,
					  c->route_portal_answer.show ? REQ_MARK_SHOW : NULL, msg);
		}
		break;
	default: /* 'C' */
		c->route_ext = 0;
		server_queue_fake(s, REQ_CLOSE, NULL, NULL);
		break;
	}
	return FWD_DONE;
}

/* The need of the transaction the class starts, with pgfleet.route's say. */
static void route_need_set(struct client *c, const struct sqlroute_answer *a)
{
	bool read = route_is_read(c, a);
	c->need.want = read ? WANT_READ : WANT_WRITE;
	c->need.lsn = read && fleet.cfg.read_your_writes ? c->ryw_lsn : 0;
	c->need.avoid = NULL;
	c->lsn_wanted = !read && fleet.cfg.read_your_writes;
	c->ryw_probe = 0;
	c->probe_sent = false;
	if (c->need.lsn && !c->no_probe) {
		/* No standby is known to have replayed this client's last
		 * write: one that may have is asked first (server_probe_replay). */
		double now = fleet_now();
		if (!database_standby_for(c->db, now, &c->need)) {
			/* The probe goes to the standby known to be furthest
			 * (any of them while nothing is known). */
			uint64_t best = database_best_replay(c->db, now, &c->need);
			if (best != UINT64_MAX) {
				c->ryw_probe = c->need.lsn;
				c->need.lsn = best;
			}
		}
	}
	c->no_probe = false;
	c->xact_read = read;
	c->route_boundary = false;
	c->route_hold = false;
	c->route_seen = false;
}

/* Before a checkout: routes the transaction that starts with the message
 * at hand.  FWD_STREAM: c->need is set; FWD_DONE: answered here;
 * FWD_WAIT / FWD_CLOSED as need_whole. */
static enum fwd route_first(struct client *c, uint8_t type, uint32_t len)
{
	if (!client_routed(c)) {
		c->need.want = c->db && database_tsa(c->db) == TSA_AUTO ? WANT_WRITE : WANT_DB;
		return FWD_STREAM;
	}
	struct sqlroute_answer a;
	bool single;
	enum fwd w = route_batch(c, type, len, &a, &single);
	if (w != FWD_STREAM)
		return w;
	if (a.cls == SQLROUTE_SET_ROUTE && single) {
		route_answer_query(c, len, &a);
		return FWD_DONE;
	}
	route_need_set(c, &a);
	/* on_query need not classify this Query again.  (Only a Query: the
	 * first simple Query after an extended-protocol batch, a BEGIN sent
	 * by psycopg say, is still to be looked at.) */
	c->route_seen = single;
	return FWD_STREAM;
}

/*
 * On a link that serves a read, after a Query or Sync went out: the next
 * statement may start a transaction of its own (a pipeline), and one that
 * is no read must not reach the standby.  It waits for the replies owed;
 * then either the transaction is over and it is routed afresh, or an open
 * block goes on here (BEGIN READ ONLY: the server refuses a write in it).
 */
static enum fwd route_next(struct client *c, struct server *s, uint8_t type, uint32_t len)
{
	if (type != 'Q' && type != 'P' && type != 'B' && type != 'F')
		return FWD_STREAM;
	if (s->q_len == 0 && s->xact_status != 'I') {
		c->route_boundary = false; /* an open block: it goes on here */
		return FWD_STREAM;
	}
	struct sqlroute_answer a;
	bool single;
	enum fwd w = route_batch(c, type, len, &a, &single);
	if (w != FWD_STREAM)
		return w;
	if (route_is_read(c, &a)) {
		c->route_boundary = false;
		c->route_seen = single;
		return FWD_STREAM;
	}
	c->route_hold = true; /* forward_to_client resumes when the replies are in */
	return FWD_WAIT;
}

/* ---- read retries (issue 19 items 1 and 3) --------------------------------- */

/*
 * A classified read can be re-run elsewhere while nothing of its reply has
 * reached the client: when its standby refuses it as a write (25006: a
 * function that writes, say), on the primary; when its standby's
 * connection breaks, on another replica.  Its messages are copied as it
 * starts (one buffer from the free list, one memcpy), the server's replies
 * are held back until one commits the read (its ReadyForQuery, copy data,
 * any other error, or half a buffer of them: client_retry_holds), and a
 * re-run puts the copy back in front of
 * the client's input, which then goes through forward_to_server again as
 * if the client had just sent it.
 *
 * Only transactions safe to replay are kept: one simple Query, or one
 * extended-protocol batch up to its Sync made of Parse of the unnamed
 * statement, Bind, Describe and Execute (forward_to_server's handlers of
 * those have no effect a second pass would repeat wrongly; a named Parse
 * registers the statement and Close forgets one, so neither is kept; a
 * batch ending in Flush waits for replies that would be held).  A pipeline
 * that sends more on the link before the read is committed, a reply pgfleet
 * answers itself in the batch, or more than a buffer of held replies, ends
 * the chance.  At most READ_RETRY_MAX re-runs per transaction.
 */
#define READ_RETRY_MAX 2

static bool forward_to_server(struct client *c);
static void keep_reading_while_waiting(struct client *c);

void client_retry_forget(struct client *c)
{
	iobuf_put(c->retry_msgs);
	c->retry_msgs = NULL;
}

/* A buffer holding a copy of n bytes (a larger one-off past IOBUF_SIZE). */
static struct iobuf *retry_copy(const uint8_t *p, uint32_t n)
{
	struct iobuf *k = iobuf_get();
	if (n > k->size && !iobuf_reserve(&k, n)) {
		iobuf_put(k);
		return NULL;
	}
	memcpy(k->data, p, n);
	k->recv = n;
	return k;
}

/* Keeps a copy of the messages from b->parsed when they are a read that
 * may be re-run. */
static void read_retry_keep_here(struct client *c)
{
	uint32_t max = (uint32_t)fleet.cfg.read_retry_max_bytes;
	if (!c->xact_read || !max || !client_routed(c) || c->io.pkt_remain || !c->io.in)
		return;
	const struct iobuf *b = c->io.in;
	uint32_t pos = b->parsed;
	for (;;) {
		if (b->recv - pos < 5)
			return; /* not all here: route_batch sent it to the primary */
		uint8_t t = b->data[pos];
		uint32_t l = (uint32_t)b->data[pos + 1] << 24 | (uint32_t)b->data[pos + 2] << 16 |
			     (uint32_t)b->data[pos + 3] << 8 | b->data[pos + 4];
		if (l < 4 || l > max || b->recv - pos < l + 1 || pos + l + 1 - b->parsed > max)
			return;
		pos += l + 1;
		switch (t) {
		case 'Q':
			if (pos - l - 1 != b->parsed)
				return;
			/* fall through */
		case 'S':
			c->retry_msgs = retry_copy(b->data + b->parsed, pos - b->parsed);
			c->retry_seen = c->route_seen;
			return;
		case 'P':
			if (l == 4 || b->data[pos - l + 4] != 0)
				return; /* a named statement: registered as it passes */
			break;
		case 'B':
		case 'D':
		case 'E':
			break;
		default:
			return;
		}
	}
}

/* As a transaction starts (route_first set c->xact_read). */
static void read_retry_keep(struct client *c)
{
	c->retries = 0;
	c->retry_sent = c->retry_refused = false;
	client_retry_forget(c);
	read_retry_keep_here(c);
}

/*
 * In forward_to_server, before each message of a read's link: only the
 * kept transaction may go out while its replies are held.  A read whose
 * start could not be kept may be from a later message on: one that finds
 * every earlier request answered and forwarded, outside a transaction
 * block (drivers that prepare with Parse, Describe and Flush, then Bind,
 * Execute and Sync once they have the answer: asyncpg, pgjdbc).
 */
static void read_retry_check(struct client *c, struct server *s, uint8_t type)
{
	if (!c->retry_msgs) {
		if (c->retries || s->q_len || s->xact_status != 'I' || s->io.pkt_remain ||
		    (s->io.in && !iobuf_empty(s->io.in)))
			return;
		c->retry_sent = c->retry_refused = false;
		read_retry_keep_here(c);
		if (!c->retry_msgs)
			return;
	}
	if (c->retry_sent)
		client_retry_forget(c); /* a pipeline: more than the read */
	else if (type == 'Q' || type == 'S')
		c->retry_sent = true;
}

bool client_retry_holds(struct client *c, uint8_t type, const uint8_t *body, uint32_t len)
{
	struct pg_error e;
	switch (type) {
	case '1': /* ParseComplete */
	case '2': /* BindComplete */
	case 't': /* ParameterDescription */
	case 'T': /* RowDescription */
	case 'n': /* NoData */
	case 'N': /* NoticeResponse: the warning of an immediate shutdown too */
	case 'S': /* ParameterStatus */
	case 'A': /* NotificationResponse */
	/* The rows and the tag too, within half a buffer (forward_to_client):
	 * a backend stopped by an immediate shutdown or a terminate sends
	 * what it had built of the reply along with its last words, and the
	 * client has seen none of it while they are held. */
	case 'D': /* DataRow */
	case 'C': /* CommandComplete */
	case 'I': /* EmptyQueryResponse */
	case 's': /* PortalSuspended */
		return true;
	case 'E':
		if (!proto_parse_error(body, len, &e))
			return false;
		if (strcmp(e.sqlstate, "25006") == 0) {
			c->retry_refused = true; /* re-run at its ReadyForQuery */
			return true;
		}
		/* The server is going away (a shutdown, a crash): the close that
		 * follows re-runs the read. */
		return strcmp(e.severity, "FATAL") == 0 || strcmp(e.severity, "PANIC") == 0;
	case 'Z': /* the read is over: re-run now, or the client gets it all */
		return c->retry_refused;
	default: /* a row, a command tag, copy data, ...: the read is answered */
		return false;
	}
}

bool client_retry_lost_ok(const struct client *c, const struct replica *from)
{
	/* A read that waits for a read-your-writes probe sent none of its
	 * messages yet (route_hold): it is still all in the client's input. */
	bool waits = c->ryw_probe && c->probe_sent;
	return c->retry_msgs && (c->retry_sent || waits) && !c->retry_refused &&
	       c->retries < READ_RETRY_MAX &&
	       from->role == ROLE_STANDBY && c->state == CLIENT_ACTIVE && !c->io.pkt_remain &&
	       !c->discard_remain;
}

/* The client's input becomes the kept messages, then whatever it sent
 * after them (not forwarded yet); false when c was closed. */
static bool retry_input(struct client *c, struct iobuf *kept, const struct replica *from)
{
	uint32_t n = kept->recv;
	struct iobuf *in = c->io.in;
	uint32_t more = in ? iobuf_unparsed(in) : 0;
	if (more) {
		kept->parsed = 0;
		if (!iobuf_reserve(&kept, n + more)) {
			iobuf_put(kept);
			client_close(c, "08006", "server connection to replica %s lost: %s",
				     from->addr_str, "the read is too large to re-run");
			return false;
		}
		memcpy(kept->data + n, in->data + in->parsed, more);
	}
	kept->recv = n + more;
	kept->done = kept->parsed = 0;
	iobuf_put(in);
	c->io.in = kept;
	return true;
}

void client_read_retry(struct client *c, const struct replica *from, bool lost)
{
	struct iobuf *kept = c->retry_msgs;
	uint32_t n = kept->recv;
	c->retry_msgs = NULL;
	c->retries++;
	bool again = lost && c->retries < READ_RETRY_MAX;
	if (lost && c->ryw_probe) {
		/* Lost while the read waited for its standby's replay position:
		 * nothing of it went out (the client's input still has it all);
		 * routed again on what is known. */
		c->need.lsn = c->ryw_probe;
		c->ryw_probe = 0;
		c->probe_sent = false;
		if (again)
			c->retry_msgs = kept;
		else
			iobuf_put(kept);
	} else {
		if (!retry_input(c, kept, from))
			return;
		if (again)
			c->retry_msgs = retry_copy(c->io.in->data, n);
	}
	if (lost) {
		c->need.avoid = from; /* another standby, or the primary */
	} else {
		/* The primary runs what a standby refused; no need to keep it.
		 * It wrote: read-your-writes learns its WAL position after it. */
		c->need.want = WANT_WRITE;
		c->need.lsn = 0;
		c->need.avoid = NULL;
		c->xact_read = false;
		c->lsn_wanted = fleet.cfg.read_your_writes;
	}
	c->retry_sent = c->retry_refused = false;
	c->route_seen = c->retry_seen;
	c->route_boundary = c->route_hold = false;
	c->skip_to_sync = false;
	stats_read_retried(lost);
	log_kv(LOG_INFO, "read re-run", "client", c->addr_str, "db", c->dbname, "replica",
	       from->addr_str, "reason", lost ? "server_lost" : "read_only", NULL);
	if (!pool_checkout(c)) {
		if (c->state == CLIENT_WAITING)
			keep_reading_while_waiting(c);
		return;
	}
	forward_to_server(c);
}

/* Simple queries, looked at whole and of any length (sqlinspect.c):
 * DEALLOCATE <name> of a statement pgfleet renamed is answered by pgfleet;
 * a text naming one of pgfleet's statements is refused; DISCARD ALL,
 * DEALLOCATE ALL, DO, CALL, ... anywhere in it leave the connection's
 * statements untrusted (server_distrust_statements). */
static enum fwd on_query(struct client *c, struct server *s, uint32_t len)
{
	if (client_routed(c)) {
		enum fwd f = route_query_linked(c, s, len);
		if (f != FWD_STREAM)
			return f;
	}
	unsigned watch = inspect_watch(c);
	if (!watch) {
		server_queue_push(s, REQ_QUERY, REQ_PASS, NULL);
		return FWD_STREAM;
	}
	if (len + 1 > IOBUF_MAX_WHOLE) {
		/* Too big to look at whole: it streams through, and is taken
		 * to have done anything it could have. */
		if (watch & SQLI_WATCH_STATEMENTS)
			server_distrust_statements(s);
		server_queue_push(s, REQ_QUERY, REQ_PASS, NULL);
		return FWD_STREAM;
	}
	enum fwd w = need_whole(c, len + 1);
	if (w != FWD_STREAM)
		return w;
	struct iobuf *b = c->io.in;
	const char *body = (const char *)b->data + b->parsed + 5;
	/* The text ends with the message (PostgreSQL refuses a Query with
	 * bytes after its NUL: nothing of it runs then).  A NUL inside only
	 * makes the look longer than the text, never shorter: conservative. */
	if (len < 5 || body[len - 5] != 0) {
		client_close(c, "08P01", "malformed Query message");
		return FWD_CLOSED;
	}
	struct sql_look look;
	unsigned what = sqlinspect_look_watch(body, len - 5, inspect_max(), watch, false, &look);
	if ((what & SQLI_DEALLOC) && prepared_client_close(c->stmts, look.name)) {
		consume(c, len + 1);
		server_queue_push(s, REQ_DEALLOC, REQ_FAKE, NULL);
		return FWD_DONE;
	}
	if (what & SQLI_RESERVED) {
		/* The whole text is refused: none of it reaches the server. */
		if (!flush_parsed(c, s))
			return FWD_WAIT;
		consume(c, len + 1);
		proto_query(&s->io.out, RESERVED_QUERY);
		server_queue_push(s, REQ_QUERY, REQ_PASS, NULL);
		return FWD_DONE;
	}
	bool shared = client_pool_mode(c) != POOL_SESSION;
	if ((what & SQLI_SESSION_FLAGS) && shared) {
		enum fwd f = session_state(c, s, what, len, false);
		if (f != FWD_STREAM)
			return f;
	}
	if ((what & SQLI_SET) && shared)
		note_settings(c, &look);
	apply_look(c, s, what);
	if ((what & (SQLI_RESET | SQLI_RESET_ALL)) && look.stmts == 1 && !look.reset_overflow &&
	    s->xact_status != 'E') {
		enum fwd f = reset_to_startup(c, s, body, len, &look);
		if (f != FWD_STREAM)
			return f;
	}
	server_queue_push(s, REQ_QUERY, REQ_PASS, NULL);
	return FWD_STREAM;
}

/* Parses client messages up to what pooling must know, rewrites the few that
 * name prepared statements, and writes the rest unchanged to the linked
 * server.  Every request is queued on the server so its replies are routed. */
static bool forward_to_server(struct client *c)
{
	struct server *s = c->link;
	bool terminate = false;

	if (c->turn_finishing && client_routed(c)) {
		/* The client's turn is over; pgfleet's own query after it
		 * (settings read back, the WAL position) still runs here.  What
		 * the client sent next is a new transaction: routed afresh once
		 * this connection goes back. */
		c->route_hold = true;
		return false;
	}
	if (c->ryw_probe) {
		/* The standby's replay position first; the read waits. */
		if (!c->probe_sent) {
			c->probe_sent = true;
			c->probe_start = fleet_now();
			c->route_hold = true;
			(void)server_probe_replay(s, false);
		}
		return false;
	}

	while (c->io.in && !terminate) {
		struct iobuf *b = c->io.in;
		if (c->discard_remain) {
			/* The rest of a message dropped after an error. */
			uint32_t take = iobuf_unparsed(b);
			if (take > c->discard_remain)
				take = c->discard_remain;
			consume(c, take);
			c->discard_remain -= take;
			if (c->discard_remain)
				break;
			continue;
		}
		if (c->io.pkt_remain) {
			uint32_t take = iobuf_unparsed(b);
			if (take > c->io.pkt_remain)
				take = c->io.pkt_remain;
			b->parsed += take;
			c->io.pkt_remain -= take;
			if (c->io.pkt_remain)
				break;
			continue;
		}
		uint8_t type;
		uint32_t len;
		if (!conn_peek_header(&c->io, &type, &len))
			break;
		if (len < 4 || len > (uint64_t)fleet.cfg.max_packet_size) {
			client_close(c, "08P01", "invalid message length %u (type %d)", len, type);
			return false;
		}
		if (c->skip_to_sync && type != 'S' && type != 'X') {
			/* Ignored up to the Sync, as the server would after an error. */
			if (!flush_parsed(c, s))
				break;
			uint32_t avail = iobuf_unparsed(b), total = len + 1;
			consume(c, avail < total ? avail : total);
			c->discard_remain = avail < total ? total - avail : 0;
			continue;
		}
		if (type == 'S')
			c->skip_to_sync = false;
		enum fwd f = FWD_STREAM;
		if (c->route_boundary) {
			f = route_next(c, s, type, len);
			if (f == FWD_WAIT)
				break;
			if (f == FWD_CLOSED)
				return false;
		}
		if (c->retry_msgs || c->xact_read)
			read_retry_check(c, s, type);
		if ((type == 'P' || c->route_ext || c->route_portal || c->route_named) &&
		    client_routed(c)) {
			f = route_extended(c, s, type, len);
			if (f == FWD_WAIT)
				break;
			if (f == FWD_CLOSED)
				return false;
			if (f == FWD_DONE)
				continue;
		}
		switch (type) {
		case 'X':
			terminate = true;
			continue;
		case 'Q':
			if (!s->request_time)
				s->request_time = fleet_now();
			f = on_query(c, s, len);
			break;
		case 'F':
			server_queue_push(s, REQ_QUERY, REQ_PASS, NULL);
			break;
		case 'S':
			if (!s->request_time)
				s->request_time = fleet_now();
			server_queue_push(s, REQ_SYNC, REQ_PASS, NULL);
			break;
		case 'P':
			f = on_parse(c, s, len);
			break;
		case 'B':
			f = on_bind(c, s, len);
			break;
		case 'D':
			f = on_describe(c, s, len);
			break;
		case 'C':
			f = on_close(c, s, len);
			break;
		case 'E':
			f = on_execute(c, s, len);
			break;
		default:
			break; /* Flush, CopyData/Done/Fail: no reply of their own */
		}
		if (f == FWD_CLOSED)
			return false;
		if ((type == 'Q' || type == 'S') && f != FWD_WAIT)
			c->route_boundary = c->xact_read;
		if (s->overflow) {
			/* Its request was not recorded: never sent, its reply unroutable. */
			client_close(c, "54000",
				     "too many requests pipelined before a Sync (more than %lld: "
				     "max_pipelined_requests)",
				     fleet.cfg.max_pipelined_requests);
			return false;
		}
		if (f == FWD_WAIT)
			break;
		if (f == FWD_DONE)
			continue;
		uint32_t total = len + 1, avail = iobuf_unparsed(b);
		if (avail >= total) {
			b->parsed += total;
		} else {
			b->parsed += avail;
			c->io.pkt_remain = total - avail;
		}
	}
	enum io_result r = conn_forward(&c->io, &s->io);
	if (r == IO_AGAIN) {
		conn_read_enable(&c->io, false);
		conn_write_enable(&s->io, true);
		return false;
	}
	if (r == IO_ERROR) {
		server_lost(s, "write to server failed");
		return false;
	}
	if (terminate) {
		client_close(c, NULL, "client terminated");
		return false;
	}
	conn_release_buffer(&c->io);
	conn_read_enable(&c->io, true);
	/* Requests pgfleet answers itself may be all that is owed. */
	server_drain_fakes(s);
	/* Back-pressure (STYLE.md): a client that does not read its replies is
	 * not read either, so what pgfleet queues for it stays below
	 * max_client_output_buffer plus one pass; client_on_write resumes. */
	if (wbuf_queued(&c->io.out) >= (uint64_t)fleet.cfg.max_client_output_buffer)
		conn_read_enable(&c->io, false);
	return false;
}

/*
 * A waiting client's socket stays watched.  A client sends nothing more
 * before its answer, so no event fires (level-triggered, and its request is
 * already read), and one that hangs up is seen at once.  Only a full buffer
 * stops reading, as back-pressure.  Switching the read event off and on
 * again around every wait cost two epoll_ctl calls for each transaction
 * that had to wait (0.07 per transaction at 100 pgbench clients and 60
 * server connections).
 */
static void keep_reading_while_waiting(struct client *c)
{
	const struct iobuf *b = c->io.in;
	if (b && b->recv == b->size)
		conn_read_enable(&c->io, false);
}

static void client_process(struct client *c)
{
	for (;;) {
		switch (c->state) {
		case CLIENT_LOGIN:
			if (!process_login(c))
				return;
			continue;
		case CLIENT_WAITING:
			keep_reading_while_waiting(c);
			return;
		case CLIENT_ACTIVE:
			if (c->admin) {
				console->process(c);
				return;
			}
			if (c->welcome_pending)
				return;
			if (!c->link) {
				uint8_t type;
				uint32_t len;
				if (!conn_peek_header(&c->io, &type, &len)) {
					conn_release_buffer(&c->io);
					return;
				}
				if (type == 'X') {
					client_close(c, NULL, "client terminated");
					return;
				}
				if (len < 4 || len > (uint64_t)fleet.cfg.max_packet_size) {
					client_close(c, "08P01", "invalid message length %u (type %d)",
						     len, type);
					return;
				}
				enum fwd rf = route_first(c, type, len);
				if (rf == FWD_DONE)
					continue;
				if (rf != FWD_STREAM)
					return;
				read_retry_keep(c);
				if (!pool_checkout(c)) { /* also while PAUSEd: it waits in line */
					if (c->state == CLIENT_WAITING)
						keep_reading_while_waiting(c);
					return;
				}
			}
			forward_to_server(c);
			return;
		case CLIENT_JUSTFREE:
			return;
		}
	}
}

static void client_on_read(evutil_socket_t fd, short what, void *arg)
{
	struct client *c = arg;
	if (c->state == CLIENT_LOGIN && c->login_step == LOGIN_TLS_HANDSHAKE) {
		client_process(c); /* the handshake reads the socket itself */
		return;
	}
	enum io_result r = conn_read(&c->io);
	double now = fleet_now();
	/* For the timeouts: the client is not idle, and a request that reaches a
	 * server owing it nothing starts a query (query_timeout counts from here). */
	bool server_idle = !c->link || c->link->expect_rfq <= 0;
	c->request_time = c->idle_since = now;
	if (r == IO_EOF || r == IO_ERROR) {
		if (c->link && c->io.in && iobuf_unparsed(c->io.in))
			client_process(c); /* deliver what came before the close */
		if (c->state != CLIENT_JUSTFREE)
			client_close(c, NULL, r == IO_EOF ? "client closed the connection"
							  : "client socket error");
		return;
	}
	client_process(c);
	if (server_idle && c->state == CLIENT_ACTIVE && c->link && c->link->expect_rfq > 0)
		c->link->query_start = now;
}

/* The client's socket can take more: send our own messages, then whatever
 * the linked server had waiting for it. */
static void client_on_write(evutil_socket_t fd, short what, void *arg)
{
	struct client *c = arg;
	/* A read's replies held back for a re-run (retry_msgs) stay put. */
	enum io_result r = c->link && !c->retry_msgs ? conn_forward(&c->link->io, &c->io)
						     : conn_flush(&c->io);
	if (r == IO_AGAIN)
		return;
	conn_write_enable(&c->io, false);
	if (r == IO_ERROR) {
		client_close(c, NULL, "write to client failed");
		return;
	}
	if (!c->link) {
		client_process(c);
		return;
	}
	server_resume(c->link);
	/* Reading stopped while pgfleet's replies waited for this socket: the
	 * queue is empty now (below half the mark, as le-proxy resumes), so
	 * resume the client's messages and the replies pgfleet owes it. */
	if (!c->io.read_on)
		client_resume(c);
}

void client_linked(struct client *c)
{
	if (c->welcome_pending) {
		/* The server existed only to learn the parameters (and to try the
		 * client's startup settings): greet and release. */
		struct server *s = c->link;
		if (!params_known_good(c)) {
			if (server_check_params(s)) {
				c->params_checking = true;
				return; /* client_params_checked goes on */
			}
			/* Nothing to SET: the server's defaults are the client's. */
			pool_params_ok_add(c->group, param_set_id(c->params_startup));
		}
		send_welcome(c);
		c->login_step = LOGIN_STARTUP;
		server_release(s);
		enum io_result r = conn_flush(&c->io);
		if (r == IO_ERROR) {
			client_close(c, NULL, "write failed");
			return;
		}
		if (r == IO_AGAIN)
			conn_write_enable(&c->io, true);
	}
	conn_read_enable(&c->io, true);
	client_process(c);
}

void client_unlinked(struct client *c)
{
	c->link = NULL;
	c->turn_finishing = false;
	c->idle_since = fleet_now(); /* client_idle_timeout counts from the end of its turn */
	if (fleet.shutting_down) {
		/* Draining: its transaction is over and no new one starts here. */
		client_close(c, "57P01", FLEET_SHUTDOWN_MESSAGE);
		return;
	}
	/* Messages of the next transaction may already be buffered. */
	if (c->io.in && iobuf_unparsed(c->io.in))
		client_process(c);
	else
		conn_read_enable(&c->io, true);
}

void client_resume(struct client *c)
{
	if (c->state == CLIENT_ACTIVE && !c->io.write_on)
		client_process(c);
}

/* client_idle_timeout: a client that holds no transaction and has sent
 * nothing for that long.  idle_transaction_timeout: one that sits in an open
 * transaction ('T' or 'E') with nothing running, holding its server
 * connection and whatever locks it took; closing the client closes that
 * server connection too, since its transaction cannot be handed on. */
static void check_idle(struct client *c, double now)
{
	double idle_to = fleet.cfg.client_idle_timeout;
	double xact_to = fleet.cfg.idle_transaction_timeout;
	struct server *s = c->link;
	if (c->welcome_pending || (s && s->expect_rfq > 0))
		return; /* logging in, or a query is running: query_timeout's business */
	double since = c->idle_since;
	if (s && s->ready_time > since)
		since = s->ready_time; /* its last query ended after it last spoke */
	if (s && s->xact_status != 'I') {
		if (xact_to > 0 && now - since > xact_to)
			client_close(c, "25P03", "idle_transaction_timeout");
		return;
	}
	if (idle_to > 0 && now - since > idle_to)
		client_close(c, "08P01", "client_idle_timeout");
}

void client_janitor(double now)
{
	struct list *it, *tmp, *dit, *git;
	double login_to = fleet.cfg.client_login_timeout;
	list_for_each_safe(it, tmp, &fleet.login_clients.head) {
		struct client *c = container_of(it, struct client, node);
		if (c->over_limit && now - c->connect_time > CLIENT_REFUSE_TIMEOUT)
			client_close(c, "53300", CLIENT_REFUSE_MESSAGE);
		else if (login_to > 0 && now - c->connect_time > login_to)
			client_close(c, "08P01", "client_login_timeout");
	}
	bool timeouts = fleet.cfg.client_idle_timeout > 0 || fleet.cfg.idle_transaction_timeout > 0;
	list_for_each(dit, &fleet.databases) {
		struct database *db = container_of(dit, struct database, node);
		list_for_each(git, &db->groups) {
			struct pool_group *g = container_of(git, struct pool_group, node);
			list_for_each_safe(it, tmp, &g->active.head) {
				struct client *c = container_of(it, struct client, node);
				/* An idle client keeps no write buffer: with thousands of
				 * mostly idle clients it is most of their memory. */
				if (!c->link && c->io.out.data && !wbuf_pending(&c->io.out) &&
				    now - c->idle_since >= 1)
					wbuf_free(&c->io.out);
				if (timeouts)
					check_idle(c, now);
			}
		}
	}
}
