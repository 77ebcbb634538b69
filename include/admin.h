/*
 * admin.h: the PgBouncer-compatible admin console (database `pgfleet` or
 * `pgbouncer`): SHOW commands with PgBouncer's columns, SET, RELOAD,
 * PAUSE/RESUME, DISABLE/ENABLE, RECONNECT, KILL, WAIT_CLOSE, SHUTDOWN and
 * REFRESH DNS over the simple query protocol.
 */
#ifndef PGFLEET_ADMIN_H
#define PGFLEET_ADMIN_H

#include <stdbool.h>

struct client;

/* Is `dbname` the admin console's name? */
bool admin_is_console(const char *dbname);
/* The client asked for the console: give it a session (false: closed). */
bool admin_login_start(struct client *c) __attribute__((warn_unused_result));
/* PgBouncer's rule: the user "pgbouncer" on the Unix socket, from a process
 * of the OS user pgfleet runs as (SO_PEERCRED), logs in without a password,
 * with admin access. */
bool admin_login_trusted(struct client *c);
/* Authentication passed: admit it (admin_users, stats_users) or refuse it. */
void admin_login_done(struct client *c);
/* Handles what the admin client sent (client.c calls it for CLIENT_ACTIVE). */
void admin_process(struct client *c);
/* The client is being closed: its session goes. */
void admin_client_gone(struct client *c);
/* At exit: closes every admin client. */
void admin_close_all(void);

#endif
