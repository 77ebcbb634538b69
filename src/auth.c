/*
 * auth.c: which password check a client gets and how its answer is judged.
 * Comparisons are constant-time; nothing here logs.  PBKDF2 for a plaintext
 * password is done once per (user, password) and cached, so a login costs
 * HMACs, not 4096 iterations on the event loop.
 *
 * An outsider must not learn which user names exist: an unknown user, and
 * a user whose password is empty (refused, as PostgreSQL and PgBouncer do),
 * go through the same exchange as anyone and fail like a wrong password.
 * Their SCRAM salt is derived from the name and a per-process key, as
 * PostgreSQL's scram_mock_salt does, and so is the salt of a known user
 * with a plaintext password: both are stable, 16 bytes, 4096 iterations.
 */
#include "auth.h"

#include <openssl/crypto.h>
#include <openssl/evp.h>
#include <openssl/hmac.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>

#include "runtime.h"

struct secret_cache {
	struct secret_cache *next;
	char *user;
	char *password;
	struct scram_secret secret;
};

static THREAD_LOCAL struct secret_cache *cache;

/* One key per process, shared by the workers so that every worker shows a
 * user the same salt. */
static uint8_t process_key[32];
static pthread_once_t process_key_once = PTHREAD_ONCE_INIT;

static void process_key_init(void)
{
	fleet_random(process_key, sizeof(process_key));
}

/* HMAC-SHA-256(HMAC-SHA-256(process key, label), text): one key per use,
 * over the whole text however long. */
static void keyed_hash(const char *label, const char *text, uint8_t out[32])
{
	pthread_once(&process_key_once, process_key_init);
	uint8_t key[32];
	unsigned n = 0, m = 0;
	if (!HMAC(EVP_sha256(), process_key, sizeof(process_key), (const uint8_t *)label,
		  strlen(label), key, &n) ||
	    !HMAC(EVP_sha256(), key, sizeof(key), (const uint8_t *)text, strlen(text), out, &m) ||
	    n != 32 || m != 32)
		abort(); /* SHA-256 is always there: a failure is a broken library */
	OPENSSL_cleanse(key, sizeof(key));
}

/* Equal strings, in time that does not depend on where they differ (the
 * lengths count only in SHA-256 blocks of 64 bytes). */
static bool equal_strings(const char *a, const char *b)
{
	uint8_t ha[32], hb[32];
	keyed_hash("compare", a, ha);
	keyed_hash("compare", b, hb);
	return CRYPTO_memcmp(ha, hb, sizeof(ha)) == 0;
}

static void user_salt(const char *user, uint8_t salt[SCRAM_SALT_LEN])
{
	uint8_t h[32];
	keyed_hash("scram salt", user, h);
	memcpy(salt, h, SCRAM_SALT_LEN);
}

bool auth_password_empty(const struct user_entry *u)
{
	if (!u)
		return false;
	switch (auth_password_kind(u->password)) {
	case PW_PLAIN:
		return u->password[0] == 0;
	case PW_MD5: {
		char h[36];
		md5_password_hash(u->name, "", h);
		return scram_equal(h, u->password, 35);
	}
	case PW_SCRAM:
		/* Telling would cost a PBKDF2 per user: PostgreSQL never stores
		 * a verifier of an empty password, so none should come from it. */
		return false;
	}
	return false;
}

enum password_kind auth_password_kind(const char *pw)
{
	if (strncmp(pw, "SCRAM-SHA-256$", 14) == 0)
		return PW_SCRAM;
	if (strlen(pw) == 35 && strncmp(pw, "md5", 3) == 0)
		return PW_MD5;
	return PW_PLAIN;
}

enum auth_method auth_choose(int auth_type, const struct user_entry *u)
{
	switch (auth_type) {
	case AUTH_TRUST:
		return AUTH_METHOD_TRUST;
	case AUTH_PLAIN:
		return AUTH_METHOD_PLAIN;
	case AUTH_MD5:
		/* A SCRAM secret cannot verify an md5 answer: ask for SCRAM. */
		if (u && auth_password_kind(u->password) == PW_SCRAM)
			return AUTH_METHOD_SCRAM;
		return AUTH_METHOD_MD5;
	default:
		/* An md5 hash cannot verify a SCRAM proof: PgBouncer falls back to md5. */
		if (u && auth_password_kind(u->password) == PW_MD5)
			return AUTH_METHOD_MD5;
		return AUTH_METHOD_SCRAM;
	}
}

bool auth_check_plain(const struct user_entry *u, const char *given)
{
	if (!u || auth_password_empty(u) || !*given) {
		(void)equal_strings(given, given); /* as long as a real comparison */
		return false;
	}
	switch (auth_password_kind(u->password)) {
	case PW_PLAIN:
		return equal_strings(u->password, given);
	case PW_MD5: {
		char h[36];
		md5_password_hash(u->name, given, h);
		return scram_equal(h, u->password, 35);
	}
	case PW_SCRAM: {
		struct scram_secret sec;
		struct scram_keys keys;
		if (!scram_parse_secret(u->password, &sec) ||
		    !scram_keys_from_password(given, sec.salt, sec.salt_len, sec.iterations, &keys))
			return false;
		/* ServerKey derives from the salted password: equal keys, equal passwords */
		bool ok = scram_equal(keys.server_key, sec.server_key, SCRAM_KEY_LEN);
		/* The password gave the keys: server logins may use them (pass-through
		 * for a client that logged in with a cleartext password). */
		if (ok)
			auth_passthrough_remember(u->name, &sec, keys.client_key);
		OPENSSL_cleanse(&keys, sizeof(keys));
		OPENSSL_cleanse(&sec, sizeof(sec));
		return ok;
	}
	}
	return false;
}

bool auth_check_md5(const struct user_entry *u, const uint8_t salt[4], const char *response)
{
	char hash[36], expect[36];
	if (!u || auth_password_empty(u))
		return false; /* the response is a hash of the empty password or a guess */
	switch (auth_password_kind(u->password)) {
	case PW_PLAIN:
		md5_password_hash(u->name, u->password, hash);
		break;
	case PW_MD5:
		memcpy(hash, u->password, 36);
		break;
	default:
		return false;
	}
	md5_salted_response(hash, salt, expect);
	return strlen(response) == 35 && scram_equal(expect, response, 35);
}

bool auth_scram_secret(const char *user, const struct user_entry *u, struct scram_secret *out)
{
	if (!u || auth_password_empty(u)) {
		/* Looks like a known user's; random keys no proof can match. */
		memset(out, 0, sizeof(*out));
		out->iterations = SCRAM_DEFAULT_ITERATIONS;
		out->salt_len = SCRAM_SALT_LEN;
		user_salt(user, out->salt);
		fleet_random(out->stored_key, SCRAM_KEY_LEN);
		fleet_random(out->server_key, SCRAM_KEY_LEN);
		return true;
	}
	if (auth_password_kind(u->password) == PW_SCRAM)
		return scram_parse_secret(u->password, out);
	for (struct secret_cache *e = cache; e; e = e->next) {
		if (strcmp(e->user, u->name) == 0 && strcmp(e->password, u->password) == 0) {
			*out = e->secret;
			return true;
		}
	}
	struct secret_cache *e = calloc(1, sizeof(*e));
	if (!e)
		return false;
	e->user = strdup(u->name);
	e->password = strdup(u->password);
	uint8_t salt[SCRAM_SALT_LEN];
	struct scram_keys keys;
	user_salt(u->name, salt);
	bool ok = e->user && e->password &&
		  scram_keys_from_password(u->password, salt, sizeof(salt),
					   SCRAM_DEFAULT_ITERATIONS, &keys) &&
		  scram_secret_from_keys(&keys, salt, sizeof(salt), SCRAM_DEFAULT_ITERATIONS,
					 &e->secret);
	OPENSSL_cleanse(&keys, sizeof(keys));
	if (!ok) {
		free(e->user);
		free(e->password);
		free(e);
		return false;
	}
	e->next = cache;
	cache = e;
	*out = e->secret;
	return true;
}

const char *auth_server_password(const struct db_config *dbc, const char *user)
{
	if (dbc && dbc->password)
		return dbc->password;
	const struct user_entry *u = config_find_user(&fleet.cfg, user);
	return u ? u->password : NULL;
}

void auth_cache_clear(void)
{
	while (cache) {
		struct secret_cache *e = cache;
		cache = e->next;
		free(e->user);
		if (e->password) {
			memset(e->password, 0, strlen(e->password));
			free(e->password);
		}
		free(e);
	}
}

/* ---- SCRAM pass-through keys (see auth.h) ---- */

struct passthrough {
	struct passthrough *next;
	struct scram_secret secret;
	uint8_t client_key[SCRAM_KEY_LEN];
	char user[]; /* NUL-terminated */
};

/* Process-wide: a client logged in on one worker gives keys to the
 * server logins of every worker. */
static pthread_mutex_t passthrough_lock = PTHREAD_MUTEX_INITIALIZER;
static struct passthrough *passthrough_head; /* newest first */
static size_t passthrough_count;

static bool same_secret(const struct scram_secret *a, const struct scram_secret *b)
{
	return a->iterations == b->iterations && a->salt_len == b->salt_len &&
	       memcmp(a->salt, b->salt, a->salt_len) == 0 &&
	       scram_equal(a->stored_key, b->stored_key, SCRAM_KEY_LEN) &&
	       scram_equal(a->server_key, b->server_key, SCRAM_KEY_LEN);
}

static void passthrough_free(struct passthrough *e)
{
	OPENSSL_cleanse(e, sizeof(*e));
	free(e);
}

void auth_passthrough_remember(const char *user, const struct scram_secret *secret,
			       const uint8_t client_key[SCRAM_KEY_LEN])
{
	size_t ulen = strlen(user);
	struct passthrough *e = malloc(sizeof(*e) + ulen + 1);
	if (!e)
		return; /* the next login tries again */
	e->secret = *secret;
	memcpy(e->client_key, client_key, SCRAM_KEY_LEN);
	memcpy(e->user, user, ulen + 1);
	pthread_mutex_lock(&passthrough_lock);
	struct passthrough **pp = &passthrough_head, *old = NULL;
	for (; *pp; pp = &(*pp)->next) {
		if (strcmp((*pp)->user, user) == 0) {
			old = *pp;
			*pp = old->next;
			passthrough_count--;
			break;
		}
	}
	e->next = passthrough_head;
	passthrough_head = e;
	passthrough_count++;
	struct passthrough *drop = NULL;
	if (passthrough_count > AUTH_PASSTHROUGH_MAX) {
		/* the oldest is last */
		for (pp = &passthrough_head; (*pp)->next; pp = &(*pp)->next)
			;
		drop = *pp;
		*pp = NULL;
		passthrough_count--;
	}
	pthread_mutex_unlock(&passthrough_lock);
	if (old)
		passthrough_free(old);
	if (drop)
		passthrough_free(drop);
}

bool auth_passthrough_keys(const char *user, const struct scram_secret *secret,
			   struct scram_keys *out)
{
	bool found = false;
	pthread_mutex_lock(&passthrough_lock);
	for (struct passthrough *e = passthrough_head; e; e = e->next) {
		if (strcmp(e->user, user) == 0) {
			if (same_secret(&e->secret, secret)) {
				memcpy(out->client_key, e->client_key, SCRAM_KEY_LEN);
				memcpy(out->server_key, e->secret.server_key, SCRAM_KEY_LEN);
				found = true;
			}
			break;
		}
	}
	pthread_mutex_unlock(&passthrough_lock);
	return found;
}

void auth_passthrough_clear(void)
{
	pthread_mutex_lock(&passthrough_lock);
	struct passthrough *e = passthrough_head;
	passthrough_head = NULL;
	passthrough_count = 0;
	pthread_mutex_unlock(&passthrough_lock);
	while (e) {
		struct passthrough *next = e->next;
		passthrough_free(e);
		e = next;
	}
}
