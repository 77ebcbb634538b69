/*
 * auth.h: password policy.  Which method a client is asked for, checking
 * what it answers, and which password pgfleet uses towards the servers.
 * The SCRAM and md5 arithmetic itself lives in scram.c.
 */
#ifndef PGFLEET_AUTH_H
#define PGFLEET_AUTH_H

#include <stdbool.h>
#include <stdint.h>

#include "config.h"
#include "scram.h"

enum auth_method { AUTH_METHOD_TRUST, AUTH_METHOD_PLAIN, AUTH_METHOD_MD5, AUTH_METHOD_SCRAM };

enum password_kind { PW_PLAIN, PW_MD5, PW_SCRAM };

enum password_kind auth_password_kind(const char *password);
/* The method to ask a client for, given auth_type and what is stored for it
 * (an md5 hash cannot answer SCRAM, a SCRAM secret cannot answer md5). */
enum auth_method auth_choose(int auth_type, const struct user_entry *u);
/* A user pgfleet refuses whatever the client answers: its stored password is
 * empty ("" or the md5 hash of ""), which PostgreSQL and PgBouncer refuse. */
bool auth_password_empty(const struct user_entry *u);
bool auth_check_plain(const struct user_entry *u, const char *given);
bool auth_check_md5(const struct user_entry *u, const uint8_t salt[4], const char *response);
/* The SCRAM secret for u (parsed, or derived once from a plaintext password
 * and cached, its salt derived from the name); for an unknown user (u NULL)
 * or one with an empty password, a mock one whose salt is derived from
 * `user` as a known user's is, and whose keys match no proof, so the
 * exchange runs and fails like a wrong password. */
bool auth_scram_secret(const char *user, const struct user_entry *u, struct scram_secret *out);
/* The password pgfleet logs in to servers with for (database entry, user). */
const char *auth_server_password(const struct db_config *dbc, const char *user);
void auth_cache_clear(void);

/*
 * SCRAM pass-through (as PgBouncer's): when the secret pgfleet holds for a
 * user is a SCRAM secret (auth_file, or auth_query's answer), a client's
 * valid proof yields its ClientKey (scram_server_final); with the secret's
 * ServerKey that is all pgfleet needs to log in to a server whose stored
 * secret is the same one (same salt and iterations).  The keys are kept
 * per user, process-wide (any worker, pool or replica may log in with
 * them), in memory only, wiped when replaced or cleared.  At most
 * AUTH_PASSTHROUGH_MAX users: beyond that the least recently remembered
 * is forgotten (its next server login waits for its next client login).
 *
 * Must not: log or copy a key outside this store; hand out keys for a
 * secret other than the one they were recovered under.
 */
#define AUTH_PASSTHROUGH_MAX 10000
void auth_passthrough_remember(const char *user, const struct scram_secret *secret,
			       const uint8_t client_key[SCRAM_KEY_LEN]);
/* The keys recovered for user under exactly this secret (same salt,
 * iterations, StoredKey and ServerKey); false if no client of user has
 * logged in with it yet. */
bool auth_passthrough_keys(const char *user, const struct scram_secret *secret,
			   struct scram_keys *out);
void auth_passthrough_clear(void);

#endif
