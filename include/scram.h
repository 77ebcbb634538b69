/*
 * scram.h: SCRAM-SHA-256 (RFC 5802, RFC 7677) in both directions, and
 * PostgreSQL's md5 password scheme.
 *
 * scram.c is pure computation over byte strings with OpenSSL: it never reads a
 * socket, never logs a password, and wipes keys it no longer needs.  PBKDF2 is
 * CPU work: callers compute salted keys once and cache them (see
 * scram_keys_from_password), never per login on the event loop.
 */
#ifndef PGFLEET_SCRAM_H
#define PGFLEET_SCRAM_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#define SCRAM_KEY_LEN 32
#define SCRAM_DEFAULT_ITERATIONS 4096
#define SCRAM_MAX_SALT 64
#define SCRAM_NONCE_LEN 24 /* raw bytes before base64 */
#define SCRAM_MAX_MSG 1024
#define SCRAM_SALT_LEN 16 /* fresh salts, as PostgreSQL's SCRAM_DEFAULT_SALT_LEN */
/* A server asking for more PBKDF2 rounds than this is refused: each round is
 * our CPU, and a hostile or misconfigured server could stall a login for
 * minutes.  PostgreSQL's own default is 4096; OWASP suggests ~600000. */
#define SCRAM_MAX_ITERATIONS 10000000
/* Room for the text form of any secret scram_format_secret can write. */
#define SCRAM_SECRET_TEXT_LEN 256

/* What the server side needs to check a client: PostgreSQL's pg_authid form. */
struct scram_secret {
	int iterations;
	uint8_t salt[SCRAM_MAX_SALT];
	size_t salt_len;
	uint8_t stored_key[SCRAM_KEY_LEN];
	uint8_t server_key[SCRAM_KEY_LEN];
};

/* What the client side needs to log in: from a password (PBKDF2) or recovered
 * from a client's proof (pass-through). */
struct scram_keys {
	uint8_t client_key[SCRAM_KEY_LEN];
	uint8_t server_key[SCRAM_KEY_LEN];
};

/* "SCRAM-SHA-256$<iter>:<b64 salt>$<b64 StoredKey>:<b64 ServerKey>" -> secret. */
bool scram_parse_secret(const char *text, struct scram_secret *out);
/* A secret for a plaintext password with a fresh random salt (PBKDF2, slow). */
bool scram_secret_from_password(const char *password, struct scram_secret *out);
/* Client and server keys for a password, salt and iteration count (PBKDF2, slow). */
bool scram_keys_from_password(const char *password, const uint8_t *salt, size_t salt_len,
			      int iterations, struct scram_keys *out);
/* The secret for known keys (StoredKey = H(ClientKey)), e.g. from
 * scram_keys_from_password with a chosen salt. */
bool scram_secret_from_keys(const struct scram_keys *keys, const uint8_t *salt, size_t salt_len,
			    int iterations, struct scram_secret *out);
/* The pg_authid text form of a secret, NUL-terminated; false if it does not fit. */
bool scram_format_secret(const struct scram_secret *secret, char *out, size_t outlen);

/* pgfleet as the server: authenticating a client. */
struct scram_server {
	int state; /* 0 initial, 1 sent server-first, 2 done, -1 failed */
	struct scram_secret secret;
	char client_first_bare[SCRAM_MAX_MSG];
	char server_first[SCRAM_MAX_MSG];
	char nonce[128]; /* client nonce + server nonce */
	uint8_t client_key[SCRAM_KEY_LEN]; /* recovered from a valid proof */
	bool have_client_key;
	char gs2_flag; /* 'n' or 'y' from the client's gs2 header, checked against c= */
};

/* Takes the client-first-message (the SASLInitialResponse data), writes the
 * server-first-message into out (NUL-terminated, *outn = strlen).  False on a
 * malformed message or a channel-binding request ("p=") it cannot honour. */
bool scram_server_first(struct scram_server *s, const struct scram_secret *secret,
			const uint8_t *msg, size_t len, char *out, size_t outlen, size_t *outn);
/* Takes the client-final-message, checks nonce and proof; on success writes
 * the server-final-message ("v=...") into out and fills s->client_key. */
bool scram_server_final(struct scram_server *s, const uint8_t *msg, size_t len, char *out,
			size_t outlen, size_t *outn);
/* scram_server_first with a given server nonce (printable ASCII, no ',')
 * instead of a random one: for test vectors only. */
bool scram_server_first_nonce(struct scram_server *s, const struct scram_secret *secret,
			      const uint8_t *msg, size_t len, const char *server_nonce, char *out,
			      size_t outlen, size_t *outn);

/* pgfleet as the client: logging in to PostgreSQL. */
struct scram_client {
	int state; /* 0 initial, 1 sent client-first, 2 sent client-final, 3 verified, -1 failed */
	char client_nonce[64];
	char client_first_bare[SCRAM_MAX_MSG];
	uint8_t server_signature[SCRAM_KEY_LEN];
	/* filled by scram_client_parse_first for the caller's key cache */
	uint8_t salt[SCRAM_MAX_SALT];
	size_t salt_len;
	int iterations;
	char server_first[SCRAM_MAX_MSG];
	char nonce[128]; /* client nonce + server nonce, from server-first */
};

/* Writes "n,,n=,r=<nonce>" (PostgreSQL ignores the user name in SCRAM). */
bool scram_client_first(struct scram_client *c, char *out, size_t outlen, size_t *outn);
/* Parses the server-first-message: checks the nonce extends ours, fills
 * c->salt / c->iterations so the caller can look up or compute keys. */
bool scram_client_parse_first(struct scram_client *c, const uint8_t *msg, size_t len);
/* Builds the client-final-message with the proof from `keys`. */
bool scram_client_final(struct scram_client *c, const struct scram_keys *keys, char *out,
			size_t outlen, size_t *outn);
/* Checks the server-final-message's signature. */
bool scram_client_verify(struct scram_client *c, const uint8_t *msg, size_t len);
/* scram_client_first with a given user name (escaped per RFC 5802; NULL or ""
 * gives "n=") and client nonce (printable ASCII, no ','): for test vectors only. */
bool scram_client_first_nonce(struct scram_client *c, const char *user, const char *nonce,
			      char *out, size_t outlen, size_t *outn);

/* md5: "md5" + hex(md5(password || user)), 35 chars + NUL. */
void md5_password_hash(const char *user, const char *password, char out[36]);
/* The response to AuthenticationMD5Password: "md5" + hex(md5(hash_hex || salt)),
 * where hash is a 35-char "md5..." stored hash.  A malformed hash gives "",
 * which matches no client's response. */
void md5_salted_response(const char *md5hash, const uint8_t salt[4], char out[36]);
/* Constant-time comparison of two byte strings. */
bool scram_equal(const void *a, const void *b, size_t len);

#endif
