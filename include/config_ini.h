/*
 * config_ini.h: reading pgfleet.ini (PgBouncer's ini dialect) into a load.
 *
 * Contract: every line of the file and of what it %includes is either handed
 * to the loader (config.h's config_loader_* and config_db_*) or reported as
 * one "file:line: ..." error; nothing is skipped in silence.  Values are
 * judged by config.c, not here.
 *
 * Must not: keep state between calls, log, or read anything but the file
 * named and the files it includes.
 */
#ifndef PGFLEET_CONFIG_INI_H
#define PGFLEET_CONFIG_INI_H

struct config_loader;

/* Reads `path` (its [databases] and [pgfleet]/[pgbouncer] sections). */
void config_ini_read(struct config_loader *l, const char *path);

/* Text helpers of the dialect, shared with authfile.c (userlist.txt quotes
 * names the same way).  In place. */
char *config_ini_skip_ws(const char *s);
char *config_ini_trim(char *s);
/* `"text"` -> text, with "" standing for one quote.  *pp points at the
 * opening quote; on return after the closing one.  NULL when not closed. */
char *config_ini_unquote(char **pp);

#endif
