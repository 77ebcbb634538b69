/*
 * tls.h: OpenSSL contexts and TLS handshakes, for both sides.
 *
 * Two SSL_CTX are built once at start-up: one that accepts clients
 * (client_tls_*) and one that connects to the replicas (server_tls_*).  A
 * connection's SSL reads straight from its socket but writes its ciphertext
 * into the connection's own queue (conn.tls_out), which tls_drain() sends.
 * Encrypting therefore never blocks, and bytes SSL_write accepted are as
 * good as sent: conn.c keeps send()'s meaning and its callers need not know
 * OpenSSL's "retry with the same buffer" rule.
 *
 * Must not: block, or look at what the bytes mean (client.c and server.c
 * decide when TLS starts; conn.c decides when bytes move).
 */
#ifndef PGFLEET_TLS_H
#define PGFLEET_TLS_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "config.h"
#include "conn.h"

/* Builds both contexts from the settings.  On failure logs one line naming
 * the setting and the file, and returns false (start-up exits 2). */
bool tls_init(const struct config *cfg) __attribute__((warn_unused_result));
void tls_done(void);

/* SSL for an accepted client (pgfleet is the TLS server). */
bool tls_accept_begin(struct conn *c) __attribute__((warn_unused_result));
/* SSL towards a replica; `host` is the name verify-full checks (a DNS name,
 * or a literal address checked against the certificate's IP SANs). */
bool tls_connect_begin(struct conn *c, const char *host) __attribute__((warn_unused_result));
/* One step of the handshake, driven by the socket's events: IO_AGAIN with
 * the read/write events set to what OpenSSL waits for, IO_DONE when it is
 * finished, IO_ERROR (tls_error() says why) when it failed. */
enum io_result tls_handshake(struct conn *c);

/* Byte movement for conn.c: one SSL_read into buf; one SSL_write of p into
 * the ciphertext queue (never IO_AGAIN); the queue to the socket. */
enum io_result tls_read(struct conn *c, uint8_t *buf, uint32_t len, uint32_t *n);
enum io_result tls_write(struct conn *c, const uint8_t *p, uint32_t len, uint32_t *n);
enum io_result tls_drain(struct conn *c);
/* Decrypted bytes that no socket event will announce (SSL_pending). */
bool tls_pending(const struct conn *c);
/* Sends close_notify when it can, without waiting, and frees the SSL. */
void tls_end(struct conn *c);

/* The CommonName of the certificate a TLS client showed, when there is one
 * and it verified against client_tls_ca_file (auth_hba_file's cert). */
bool tls_peer_cn(const struct conn *c, char *buf, size_t len);

/* Why the last handshake or read failed (OpenSSL's reason). */
const char *tls_error(void);
/* "TLSv1.3/TLS_AES_256_GCM_SHA384", or "" without TLS (SHOW SERVERS' tls). */
void tls_describe(const struct conn *c, char *buf, size_t len);

#endif
