/*
 * driver.h: what the libFuzzer harnesses share.  One fuzz input drives one
 * whole pgfleet session on a fresh event loop: a client on one end of a
 * socketpair handed to the real client_accept(), and a fake PostgreSQL
 * backend on a Unix socket that the real pool connects to.  Everything is
 * torn down through pgfleet's own teardown paths at the end of the input, so
 * LeakSanitizer sees any object that outlives its session.
 *
 * Inputs are a variant byte (which settings the session runs with), then
 * chunks separated by FUZZ_SEP: each chunk is one write to a peer, after
 * which the loop runs until nothing moves.
 */
#ifndef PGFLEET_FUZZ_DRIVER_H
#define PGFLEET_FUZZ_DRIVER_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

/* "\n--8<--\n": scissors, never a complete protocol message by itself. */
#define FUZZ_SEP "\n--8<--\n"
#define FUZZ_SEP_LEN 8

/* The variant byte. */
#define FUZZ_AUTH_MASK 0x03u  /* auth_type: trust, plain, md5, scram-sha-256 */
#define FUZZ_POOL_SHIFT 2     /* pool_mode: (byte >> 2) % 3: session, transaction, statement */
#define FUZZ_NO_PREPARED 0x10u /* max_prepared_statements = 0 */
#define FUZZ_STMT_CACHE_1 0x20u /* max_prepared_statements = 1: eviction on every Parse */

/* The backend answers pgfleet's StartupMessage with a canned login
 * (AuthenticationOk, ParameterStatus, BackendKeyData, ReadyForQuery). */
#define FUZZ_BACKEND_AUTO 1
/* The backend stays silent: the harness writes its bytes. */
#define FUZZ_BACKEND_SCRIPTED 0

struct fuzz_chunk {
	const uint8_t *p;
	size_t len;
};

/* Splits data at FUZZ_SEP into at most max chunks (the last one takes the
 * rest); returns how many. */
size_t fuzz_split(const uint8_t *data, size_t size, struct fuzz_chunk *out, size_t max);

/* A fresh loop with the variant's settings and one client connected. */
void fuzz_session_begin(uint8_t variant, int backend_mode);
/* Writes to pgfleet as the client, or as the backend's latest connection
 * (dropped when there is none), then runs the loop until it is idle. */
void fuzz_client_write(const void *p, size_t n);
void fuzz_backend_write(const void *p, size_t n);
/* Logs the client in as user "fuzz" to database "fuzzdb" (a trust variant
 * needs no password): true once the client has its ReadyForQuery. */
bool fuzz_client_login(void);
/* Is a backend connection open (pgfleet connected and sent its startup)? */
bool fuzz_backend_connected(void);
/* Runs the loop until nothing moves. */
void fuzz_pump(void);
/* Closes everything through pgfleet's teardown and frees the loop. */
void fuzz_session_end(void);

#endif
