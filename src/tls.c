/*
 * tls.c: the OpenSSL contexts (built once at start-up) and the non-blocking
 * handshakes of both sides.
 *
 * Each SSL reads from its socket through a plain socket BIO, so a handshake
 * waiting for the peer is just SSL_ERROR_WANT_READ and a read event.  Writes
 * go to a BIO of our own that appends to the connection's ciphertext queue
 * (conn.tls_out); tls_drain() puts that queue on the socket.  SSL_write then
 * never blocks and never has to be retried with "the same buffer", a rule the
 * callers of conn.c, which write from several buffers, could not keep.
 *
 * Must not: block, keep state outside the SSL objects and the two contexts,
 * or parse the protocol.
 */
#include "tls.h"
#include "runtime.h"

#include <arpa/inet.h>
#include <errno.h>
#include <openssl/err.h>
#include <openssl/ssl.h>
#include <openssl/x509v3.h>
#include <stdarg.h>
#include <stdio.h>
#include <string.h>
#include <strings.h>
#include <sys/socket.h>
#include <unistd.h>

#include "batch.h"
#include "log.h"

/* A drained ciphertext queue larger than this is freed: idle connections
 * hold no record-sized buffer (OpenSSL's own: SSL_MODE_RELEASE_BUFFERS). */
#define TLS_QUEUE_KEEP 4096

static SSL_CTX *accept_ctx;  /* clients -> pgfleet (client_tls_*) */
static SSL_CTX *connect_ctx; /* pgfleet -> replicas (server_tls_*) */
static int server_mode;      /* server_tls_sslmode */
static BIO_METHOD *queue_method;
static THREAD_LOCAL char last_error[256];

/* ---- the ciphertext queue BIO --------------------------------------------- */

static int queue_write(BIO *b, const char *data, size_t len, size_t *written)
{
	struct conn *c = BIO_get_data(b);
	if (!c || len > UINT32_MAX / 4)
		return 0;
	wbuf_put(&c->tls_out, data, (uint32_t)len);
	*written = len;
	return 1;
}

static long queue_ctrl(BIO *b, int cmd, long num, void *ptr)
{
	/* The record layer flushes after each flight: the queue is drained by
	 * the caller, so there is nothing to do.  Everything else is unsupported. */
	return cmd == BIO_CTRL_FLUSH ? 1 : 0;
}

static int queue_create(BIO *b)
{
	BIO_set_init(b, 1);
	return 1;
}

/* ---- errors ------------------------------------------------------------------ */

static void set_error(const char *fmt, ...) __attribute__((format(printf, 1, 2)));

static void set_error(const char *fmt, ...)
{
	va_list ap;
	va_start(ap, fmt);
	vsnprintf(last_error, sizeof(last_error), fmt, ap);
	va_end(ap);
}

/* The reason OpenSSL queued last, then the queue is cleared. */
static const char *openssl_reason(char *buf, size_t len)
{
	unsigned long e = ERR_peek_last_error();
	const char *r = e ? ERR_reason_error_string(e) : NULL;
	if (r)
		snprintf(buf, len, "%s", r);
	else if (e)
		ERR_error_string_n(e, buf, len);
	else
		snprintf(buf, len, "unknown OpenSSL error");
	ERR_clear_error();
	return buf;
}

/* After a failed handshake or read: why, in words, and no close_notify
 * (OpenSSL forbids SSL_shutdown after a fatal error). */
static void note_failure(struct conn *c, int err)
{
	char reason[160];
	if (err == SSL_ERROR_SYSCALL && ERR_peek_error() == 0) {
		set_error("%s", errno ? strerror(errno) : "connection closed by peer");
	} else if (err == SSL_ERROR_ZERO_RETURN) {
		set_error("%s", "connection closed by peer");
	} else {
		openssl_reason(reason, sizeof(reason));
		long v = SSL_get_verify_result(c->ssl);
		if (v != X509_V_OK)
			set_error("%s: %s", reason, X509_verify_cert_error_string(v));
		else
			set_error("%s", reason);
	}
	SSL_set_quiet_shutdown(c->ssl, 1);
	errno = EPROTO;
}

const char *tls_error(void)
{
	return last_error[0] ? last_error : "unknown TLS error";
}

/* ---- contexts ------------------------------------------------------------------ */

static void log_file_error(const char *setting, const char *file, const char *why)
{
	log_error("cannot load TLS file", "setting", setting, "file", file, "error", why, NULL);
}

/* What PostgreSQL's own be-secure-openssl.c does, and TLS 1.2 at least. */
static SSL_CTX *new_ctx(const SSL_METHOD *method)
{
	SSL_CTX *ctx = SSL_CTX_new(method);
	if (!ctx)
		return NULL;
	if (!SSL_CTX_set_min_proto_version(ctx, TLS1_2_VERSION)) {
		SSL_CTX_free(ctx);
		return NULL;
	}
	SSL_CTX_set_options(ctx, SSL_OP_NO_COMPRESSION | SSL_OP_NO_RENEGOTIATION |
					 SSL_OP_NO_TICKET | SSL_OP_IGNORE_UNEXPECTED_EOF |
					 SSL_OP_CIPHER_SERVER_PREFERENCE);
	SSL_CTX_set_mode(ctx, SSL_MODE_RELEASE_BUFFERS);
	/* No session resumption: PostgreSQL clients do not use it. */
	SSL_CTX_set_session_cache_mode(ctx, SSL_SESS_CACHE_OFF);
	SSL_CTX_set_num_tickets(ctx, 0);
	return ctx;
}

/* PgBouncer's TLS knobs on one context (config.c has checked each value:
 * a failure here is OpenSSL's own, logged naming the setting). */
static bool apply_option(bool ok, const char *setting, const char *value)
{
	char why[160];
	if (!ok)
		log_error("cannot set TLS option", "setting", setting, "value", value, "error",
			  openssl_reason(why, sizeof(why)), NULL);
	return ok;
}

static bool apply_knobs(SSL_CTX *ctx, bool client_side, const char *protocols, const char *ciphers,
			const char *suites)
{
	const char *side = client_side ? "client" : "server";
	char name[32];
	/* secure = TLS 1.2 and 1.3; a list names the versions to allow */
	bool v12 = strcasestr(protocols, "secure") || strcasestr(protocols, "tlsv1.2");
	bool v13 = strcasestr(protocols, "secure") || strcasestr(protocols, "tlsv1.3");
	snprintf(name, sizeof(name), "%s_tls_protocols", side);
	if (!apply_option(SSL_CTX_set_min_proto_version(ctx, v12 ? TLS1_2_VERSION : TLS1_3_VERSION) &&
				  SSL_CTX_set_max_proto_version(ctx, v13 ? TLS1_3_VERSION : TLS1_2_VERSION),
			  name, protocols))
		return false;
	/* default, secure, fast, normal: OpenSSL's defaults, as PgBouncer 1.25 */
	static const char *const defaults[] = {"default", "secure", "fast", "normal", NULL};
	bool is_default = false;
	for (int i = 0; defaults[i]; i++)
		is_default |= strcasecmp(ciphers, defaults[i]) == 0;
	snprintf(name, sizeof(name), "%s_tls_ciphers", side);
	if (!is_default &&
	    !apply_option(SSL_CTX_set_cipher_list(ctx, strcasecmp(ciphers, "all") == 0 ? "ALL"
										     : ciphers) == 1,
			  name, ciphers))
		return false;
	snprintf(name, sizeof(name), "%s_tls13_ciphers", side);
	if (*suites && !apply_option(SSL_CTX_set_ciphersuites(ctx, suites) == 1, name, suites))
		return false;
	return true;
}

/* A file OpenSSL is about to read: a missing or unreadable one is reported
 * with the system's words, clearer than OpenSSL's. */
static bool readable(const char *setting, const char *file)
{
	if (access(file, R_OK) == 0)
		return true;
	log_file_error(setting, file, strerror(errno));
	return false;
}

static bool build_accept_ctx(const struct config *cfg)
{
	char why[160];
	const char *cert = cfg->client_tls_cert_file, *key = cfg->client_tls_key_file;
	const char *ca = cfg->client_tls_ca_file;
	accept_ctx = new_ctx(TLS_server_method());
	if (!accept_ctx) {
		log_error("cannot create the client TLS context", "error",
			  openssl_reason(why, sizeof(why)), NULL);
		return false;
	}
	SSL_CTX_set_session_id_context(accept_ctx, (const unsigned char *)"pgfleet", 7);
	if (!apply_knobs(accept_ctx, true, cfg->client_tls_protocols, cfg->client_tls_ciphers,
			 cfg->client_tls13_ciphers))
		return false;
	if (strcasecmp(cfg->client_tls_ecdhcurve, "auto") != 0 &&
	    !apply_option(SSL_CTX_set1_groups_list(accept_ctx, cfg->client_tls_ecdhcurve) == 1,
			  "client_tls_ecdhcurve", cfg->client_tls_ecdhcurve))
		return false;
	/* auto: 2048-bit (or larger) DH for the DHE suites, as PgBouncer's auto */
	if (strcasecmp(cfg->client_tls_dheparams, "auto") == 0 &&
	    !apply_option(SSL_CTX_set_dh_auto(accept_ctx, 1) == 1, "client_tls_dheparams", "auto"))
		return false;
	if (!readable("client_tls_cert_file", cert))
		return false;
	if (SSL_CTX_use_certificate_chain_file(accept_ctx, cert) != 1) {
		log_file_error("client_tls_cert_file", cert, openssl_reason(why, sizeof(why)));
		return false;
	}
	if (!readable("client_tls_key_file", key))
		return false;
	if (SSL_CTX_use_PrivateKey_file(accept_ctx, key, SSL_FILETYPE_PEM) != 1) {
		log_file_error("client_tls_key_file", key, openssl_reason(why, sizeof(why)));
		return false;
	}
	if (SSL_CTX_check_private_key(accept_ctx) != 1) {
		log_file_error("client_tls_key_file", key, "does not match client_tls_cert_file");
		ERR_clear_error();
		return false;
	}
	if (*ca) {
		STACK_OF(X509_NAME) *names = NULL;
		if (!readable("client_tls_ca_file", ca))
			return false;
		if (SSL_CTX_load_verify_locations(accept_ctx, ca, NULL) != 1 ||
		    !(names = SSL_load_client_CA_file(ca))) {
			log_file_error("client_tls_ca_file", ca, openssl_reason(why, sizeof(why)));
			return false;
		}
		SSL_CTX_set_client_CA_list(accept_ctx, names);
	}
	if (cfg->client_tls_sslmode >= TLS_VERIFY_CA) {
		/* PgBouncer's meaning: the client must show a certificate that
		 * client_tls_ca_file vouches for. */
		if (!*ca) {
			log_error("client_tls_sslmode verify-ca and verify-full need client_tls_ca_file",
				  NULL);
			return false;
		}
		SSL_CTX_set_verify(accept_ctx, SSL_VERIFY_PEER | SSL_VERIFY_FAIL_IF_NO_PEER_CERT,
				   NULL);
	}
	return true;
}

static bool build_connect_ctx(const struct config *cfg)
{
	char why[160];
	const char *ca = cfg->server_tls_ca_file;
	connect_ctx = new_ctx(TLS_client_method());
	if (!connect_ctx) {
		log_error("cannot create the server TLS context", "error",
			  openssl_reason(why, sizeof(why)), NULL);
		return false;
	}
	if (!apply_knobs(connect_ctx, false, cfg->server_tls_protocols, cfg->server_tls_ciphers,
			 cfg->server_tls13_ciphers))
		return false;
	if (*ca) {
		if (!readable("server_tls_ca_file", ca))
			return false;
		if (SSL_CTX_load_verify_locations(connect_ctx, ca, NULL) != 1) {
			log_file_error("server_tls_ca_file", ca, openssl_reason(why, sizeof(why)));
			return false;
		}
	} else if (cfg->server_tls_sslmode >= TLS_VERIFY_CA) {
		/* No CA named: the system's trust store, as libpq's sslrootcert=system. */
		if (SSL_CTX_set_default_verify_paths(connect_ctx) != 1)
			ERR_clear_error();
	}
	SSL_CTX_set_verify(connect_ctx,
			   cfg->server_tls_sslmode >= TLS_VERIFY_CA ? SSL_VERIFY_PEER : SSL_VERIFY_NONE,
			   NULL);
	/* A client certificate for servers that ask for one (pg_hba "cert",
	 * clientcert=verify-ca/verify-full); config.c makes sure both are set. */
	const char *cert = cfg->server_tls_cert_file, *key = cfg->server_tls_key_file;
	if (*cert) {
		if (!readable("server_tls_cert_file", cert))
			return false;
		if (SSL_CTX_use_certificate_chain_file(connect_ctx, cert) != 1) {
			log_file_error("server_tls_cert_file", cert, openssl_reason(why, sizeof(why)));
			return false;
		}
		if (!readable("server_tls_key_file", key))
			return false;
		if (SSL_CTX_use_PrivateKey_file(connect_ctx, key, SSL_FILETYPE_PEM) != 1) {
			log_file_error("server_tls_key_file", key, openssl_reason(why, sizeof(why)));
			return false;
		}
		if (SSL_CTX_check_private_key(connect_ctx) != 1) {
			log_file_error("server_tls_key_file", key, "does not match server_tls_cert_file");
			ERR_clear_error();
			return false;
		}
	}
	return true;
}

bool tls_init(const struct config *cfg)
{
	int idx = BIO_get_new_index();
	queue_method = idx > 0 ? BIO_meth_new(idx | BIO_TYPE_SOURCE_SINK, "pgfleet tls_out") : NULL;
	if (!queue_method || !BIO_meth_set_write_ex(queue_method, queue_write) ||
	    !BIO_meth_set_ctrl(queue_method, queue_ctrl) ||
	    !BIO_meth_set_create(queue_method, queue_create)) {
		log_error("cannot set up TLS", "error", "BIO_meth_new failed", NULL);
		tls_done();
		return false;
	}
	server_mode = cfg->server_tls_sslmode;
	if ((cfg->client_tls_sslmode != TLS_DISABLE && !build_accept_ctx(cfg)) ||
	    (cfg->server_tls_sslmode != TLS_DISABLE && !build_connect_ctx(cfg))) {
		tls_done();
		return false;
	}
	return true;
}

void tls_done(void)
{
	SSL_CTX_free(accept_ctx);
	SSL_CTX_free(connect_ctx);
	BIO_meth_free(queue_method);
	accept_ctx = connect_ctx = NULL;
	queue_method = NULL;
}

/* ---- connections ------------------------------------------------------------- */

static bool attach(struct conn *c, SSL_CTX *ctx)
{
	if (!ctx || !queue_method || c->ssl) {
		set_error("%s", "TLS is not configured");
		return false;
	}
	SSL *ssl = SSL_new(ctx);
	BIO *rb = BIO_new_socket(c->fd, BIO_NOCLOSE);
	BIO *wb = BIO_new(queue_method);
	if (!ssl || !rb || !wb) {
		char why[160];
		set_error("%s", openssl_reason(why, sizeof(why)));
		SSL_free(ssl);
		BIO_free(rb);
		BIO_free(wb);
		return false;
	}
	BIO_set_data(wb, c);
	SSL_set_bio(ssl, rb, wb);
	c->ssl = ssl;
	/* A plaintext answer still deferred in this pass (the 'S' to an
	 * SSLRequest) must precede the handshake, unencrypted. */
	batch_take_write(c, &c->tls_out);
	return true;
}

bool tls_accept_begin(struct conn *c)
{
	if (!attach(c, accept_ctx))
		return false;
	SSL_set_accept_state(c->ssl);
	return true;
}

bool tls_connect_begin(struct conn *c, const char *host)
{
	if (!attach(c, connect_ctx))
		return false;
	SSL_set_connect_state(c->ssl);
	if (host && *host) {
		unsigned char ip[16];
		bool literal = inet_pton(AF_INET, host, ip) == 1 || inet_pton(AF_INET6, host, ip) == 1;
		bool ok = true;
		/* SNI takes names only (RFC 6066 section 3). */
		if (!literal)
			ok = SSL_set_tlsext_host_name(c->ssl, host) == 1;
		if (ok && server_mode == TLS_VERIFY_FULL) {
			/* libpq's verify-full: the DNS name asked for, or the literal
			 * address against the certificate's IP SANs. */
			X509_VERIFY_PARAM *param = SSL_get0_param(c->ssl);
			X509_VERIFY_PARAM_set_hostflags(param, X509_CHECK_FLAG_NO_PARTIAL_WILDCARDS);
			ok = literal ? X509_VERIFY_PARAM_set1_ip_asc(param, host) == 1
				     : X509_VERIFY_PARAM_set1_host(param, host, 0) == 1;
		}
		if (!ok) {
			char why[160];
			set_error("%s", openssl_reason(why, sizeof(why)));
			tls_end(c);
			return false;
		}
	}
	return true;
}

enum io_result tls_handshake(struct conn *c)
{
	ERR_clear_error();
	errno = 0;
	int rc = SSL_do_handshake(c->ssl);
	int err = rc == 1 ? SSL_ERROR_NONE : SSL_get_error(c->ssl, rc);
	if (err != SSL_ERROR_NONE && err != SSL_ERROR_WANT_READ && err != SSL_ERROR_WANT_WRITE) {
		note_failure(c, err);
		(void)tls_drain(c); /* the alert, so the peer learns why */
		return IO_ERROR;
	}
	/* Whatever the handshake produced (a flight, session tickets) goes now. */
	enum io_result d = tls_drain(c);
	if (d == IO_ERROR) {
		set_error("%s", strerror(errno));
		SSL_set_quiet_shutdown(c->ssl, 1);
		return IO_ERROR;
	}
	conn_read_enable(c, true);
	conn_write_enable(c, d == IO_AGAIN || err == SSL_ERROR_WANT_WRITE);
	if (rc != 1)
		return IO_AGAIN;
	if (tls_pending(c))
		event_active(&c->ev_read, EV_READ, 0);
	return IO_DONE;
}

/* ---- byte movement ------------------------------------------------------------- */

enum io_result tls_read(struct conn *c, uint8_t *buf, uint32_t len, uint32_t *n)
{
	size_t got = 0;
	ERR_clear_error();
	errno = 0;
	if (SSL_read_ex(c->ssl, buf, len, &got) == 1) {
		*n = (uint32_t)got;
		return IO_DONE;
	}
	int err = SSL_get_error(c->ssl, 0);
	switch (err) {
	case SSL_ERROR_WANT_READ:
	case SSL_ERROR_WANT_WRITE:
		return IO_AGAIN;
	case SSL_ERROR_ZERO_RETURN:
		return IO_EOF; /* close_notify, or EOF (SSL_OP_IGNORE_UNEXPECTED_EOF) */
	case SSL_ERROR_SYSCALL:
		if (ERR_peek_error() == 0 && errno == 0) {
			SSL_set_quiet_shutdown(c->ssl, 1);
			return IO_EOF;
		}
		/* fall through */
	default:
		note_failure(c, err);
		return IO_ERROR;
	}
}

enum io_result tls_write(struct conn *c, const uint8_t *p, uint32_t len, uint32_t *n)
{
	size_t put = 0;
	ERR_clear_error();
	if (SSL_write_ex(c->ssl, p, len, &put) == 1) {
		*n = (uint32_t)put;
		return IO_DONE;
	}
	/* The queue BIO never refuses, and renegotiation is off: any failure
	 * is fatal for this connection. */
	note_failure(c, SSL_get_error(c->ssl, 0));
	return IO_ERROR;
}

enum io_result tls_drain(struct conn *c)
{
	struct wbuf *w = &c->tls_out;
	while (w->sent < w->len) {
		ssize_t k = send(c->fd, w->data + w->sent, w->len - w->sent, MSG_NOSIGNAL);
		if (k > 0) {
			w->sent += (uint32_t)k;
			continue;
		}
		if (k < 0 && errno == EINTR)
			continue;
		if (k < 0 && (errno == EAGAIN || errno == EWOULDBLOCK))
			return IO_AGAIN;
		return IO_ERROR;
	}
	if (w->cap > TLS_QUEUE_KEEP)
		wbuf_free(w);
	else
		wbuf_reset(w);
	return IO_DONE;
}

bool tls_pending(const struct conn *c)
{
	return c->ssl && SSL_pending(c->ssl) > 0;
}

void tls_end(struct conn *c)
{
	if (c->ssl) {
		/* close_notify, best effort: never wait for the peer's. */
		if (c->fd >= 0 && !SSL_in_init(c->ssl) && !SSL_get_quiet_shutdown(c->ssl)) {
			ERR_clear_error();
			(void)SSL_shutdown(c->ssl);
		}
		if (c->fd >= 0)
			(void)tls_drain(c);
		SSL_free(c->ssl);
		c->ssl = NULL;
		ERR_clear_error();
	}
	wbuf_free(&c->tls_out);
}

void tls_describe(const struct conn *c, char *buf, size_t len)
{
	if (!c->ssl || SSL_in_init(c->ssl)) {
		if (len)
			buf[0] = 0;
		return;
	}
	snprintf(buf, len, "%s/%s", SSL_get_version(c->ssl), SSL_get_cipher_name(c->ssl));
}

bool tls_peer_cn(const struct conn *c, char *buf, size_t len)
{
	if (!c->ssl || SSL_in_init(c->ssl) || SSL_get_verify_result(c->ssl) != X509_V_OK ||
	    len == 0)
		return false;
	X509 *cert = SSL_get1_peer_certificate(c->ssl);
	if (!cert)
		return false;
	bool ok = false;
	X509_NAME *name = X509_get_subject_name(cert);
	int i = name ? X509_NAME_get_index_by_NID(name, NID_commonName, -1) : -1;
	X509_NAME_ENTRY *e = i >= 0 ? X509_NAME_get_entry(name, i) : NULL;
	unsigned char *utf8 = NULL;
	int n = e ? ASN1_STRING_to_UTF8(&utf8, X509_NAME_ENTRY_get_data(e)) : -1;
	/* a NUL inside the name would make it compare equal to a shorter one */
	if (n >= 0 && (size_t)n < len && memchr(utf8, 0, (size_t)n) == NULL) {
		memcpy(buf, utf8, (size_t)n);
		buf[n] = 0;
		ok = true;
	}
	OPENSSL_free(utf8);
	X509_free(cert);
	return ok;
}
