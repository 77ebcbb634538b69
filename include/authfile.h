/*
 * authfile.h: reading auth_file (PgBouncer's userlist.txt) into a load.
 *
 * Contract: every user line becomes a user of the configuration being loaded
 * (config_user_add); every other non-comment line is one "file:line: why"
 * error.  A file that cannot be read is one error naming it.
 *
 * Must not: put a password, or any part of one, in a message; keep a copy of
 * one outside the configuration.
 */
#ifndef PGFLEET_AUTHFILE_H
#define PGFLEET_AUTHFILE_H

struct config_loader;

void authfile_read(struct config_loader *l, const char *path);

#endif
