/*
 * auth.c: which password check a client gets and how its answer is judged.
 * Comparisons are constant-time; nothing here logs.  PBKDF2 for a plaintext
 * password is done once per (user, password) and cached, so a login costs
 * HMACs, not 4096 iterations on the event loop.
 */
#include "auth.h"

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
	if (!u)
		return false;
	switch (auth_password_kind(u->password)) {
	case PW_PLAIN: {
		size_t a = strlen(u->password), b = strlen(given);
		return a == b && scram_equal(u->password, given, a);
	}
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
		return scram_equal(keys.server_key, sec.server_key, SCRAM_KEY_LEN);
	}
	}
	return false;
}

bool auth_check_md5(const struct user_entry *u, const uint8_t salt[4], const char *response)
{
	char hash[36], expect[36];
	if (!u)
		return false;
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

bool auth_scram_secret(const struct user_entry *u, struct scram_secret *out)
{
	if (!u) {
		memset(out, 0, sizeof(*out));
		out->iterations = SCRAM_DEFAULT_ITERATIONS;
		out->salt_len = 16;
		fleet_random(out->salt, out->salt_len);
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
	if (!e->user || !e->password || !scram_secret_from_password(u->password, &e->secret)) {
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
