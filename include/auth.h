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

#endif
