/*
 * authfile.c: auth_file, PgBouncer's userlist.txt: one `"user" "password"`
 * per line, the password plaintext, "md5..." or a SCRAM secret.
 *
 * Owns that file's syntax and its messages ("file:line: why").  Users go to
 * the configuration being loaded (config_user_add: the last line for a name
 * wins, and DB_USER from the environment comes after the file).
 *
 * Must not: echo a password or any part of one, leave one in a buffer it
 * frees (lines are wiped after parsing), or judge the password's format (the
 * login does).
 */
#include "authfile.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/types.h>

#include "config.h"
#include "config_ini.h"

/* Names echoed in messages are cut here. */
#define ECHO "%.100s"

/* `"user" "password"`, PgBouncer's userlist.txt; anything after the
 * password is ignored as PgBouncer does.  Passwords never reach a message. */
static void parse_user_line(struct config_loader *l, const char *file, int lineno, char *line)
{
	char *p = config_ini_trim(line);

	if (!*p || *p == ';' || *p == '#')
		return;
	if (*p != '"') {
		config_loader_report(
		    l, "%s:%d: expected a quoted user name (\"user\" \"password\")", file, lineno);
		return;
	}
	char *name = config_ini_unquote(&p);
	if (!name) {
		config_loader_report(l, "%s:%d: unterminated quoted user name", file, lineno);
		return;
	}
	if (!*name) {
		config_loader_report(l, "%s:%d: empty user name", file, lineno);
		return;
	}
	p = config_ini_skip_ws(p);
	if (*p != '"') {
		config_loader_report(
		    l, "%s:%d: user '" ECHO "': expected a quoted password after the name", file,
		    lineno, name);
		return;
	}
	char *password = config_ini_unquote(&p);
	if (!password) {
		config_loader_report(l, "%s:%d: user '" ECHO "': unterminated quoted password",
		                     file, lineno, name);
		return;
	}
	config_user_add(config_loader_config(l), name, password);
}

void authfile_read(struct config_loader *l, const char *path)
{
	FILE *f = fopen(path, "r");
	struct stat sb;

	if (f && fstat(fileno(f), &sb) == 0 && S_ISDIR(sb.st_mode)) {
		fclose(f);
		f = NULL;
		errno = EISDIR;
	}
	if (!f) {
		config_loader_report(l, "%s: cannot read: %s", path, strerror(errno));
		return;
	}
	char *line = NULL;
	size_t cap = 0;
	int lineno = 0;
	ssize_t n;
	while ((n = getline(&line, &cap, f)) >= 0) {
		lineno++;
		parse_user_line(l, path, lineno, line);
		explicit_bzero(line, (size_t)n);
	}
	if (ferror(f))
		config_loader_report(l, "%s: cannot read: %s", path, strerror(errno));
	free(line);
	fclose(f);
}
