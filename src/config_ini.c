/*
 * config_ini.c: the ini dialect of pgfleet.ini (PgBouncer's).
 *
 * Owns the syntax: sections ([databases], [pgfleet] or [pgbouncer], [users]
 * with PgBouncer's per-user keys; [peers] loads empty, an entry in it is
 * refused because pgfleet would ignore it), `key = value` lines with inline comments and double-quoted
 * values, %include (relative to the including file, loops and depth
 * refused), the libpq keyword=value syntax of a [databases] entry, and the
 * "file:line: key 'k': why" form of every message about them.
 *
 * Must not: judge a value (config.c parses, validates and stores it, and
 * decides what is refused or warned about), keep state between loads, or
 * echo a [databases] word that could be a piece of a password.
 */
#include "config_ini.h"

#include <ctype.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/stat.h>

#include "config.h"

/* PgBouncer has no limit; ten levels is more than any real layout needs and
 * stops a runaway chain long before the stack or the fd table suffers. */
#define INCLUDE_DEPTH_MAX 10
/* Values echoed in messages are cut here: a 100 kB line should not become
 * a 100 kB error line. */
#define ECHO "%.100s"

enum section { SEC_NONE, SEC_DATABASES, SEC_PGFLEET, SEC_USERS, SEC_PEERS, SEC_UNKNOWN };

/* One config_ini_read: the files being read and the section we are in. */
struct ini_reader {
	struct config_loader *loader;
	char *open[INCLUDE_DEPTH_MAX + 1]; /* real paths of the files being read, main first */
	int depth;
	enum section section;
};

char *config_ini_skip_ws(const char *s)
{
	while (isspace((unsigned char)*s))
		s++;
	return (char *)s;
}

static void rtrim(char *s)
{
	size_t n = strlen(s);
	while (n > 0 && isspace((unsigned char)s[n - 1]))
		s[--n] = '\0';
}

char *config_ini_trim(char *s)
{
	s = config_ini_skip_ws(s);
	rtrim(s);
	return s;
}

/*
 * Cuts an inline comment: ';' or '#' after whitespace, outside quotes.  In a
 * [databases] value the quotes are libpq's ('...' with backslash escapes);
 * elsewhere they are the ini's double quotes.
 */
static void cut_comment(char *s, bool libpq)
{
	bool quoted = false;
	for (char *p = s; *p; p++) {
		if (quoted) {
			if (libpq && *p == '\\' && p[1])
				p++;
			else if (*p == (libpq ? '\'' : '"'))
				quoted = false;
			continue;
		}
		if (*p == (libpq ? '\'' : '"'))
			quoted = true;
		else if ((*p == ';' || *p == '#') && (p == s || isspace((unsigned char)p[-1]))) {
			*p = '\0';
			return;
		}
	}
}

/* In place: `"text"` -> text, with "" standing for one quote.  On return
 * *pp points after the closing quote; NULL when the quote is not closed. */
char *config_ini_unquote(char **pp)
{
	char *s = *pp, *r = s + 1, *w = s;
	for (;;) {
		if (!*r)
			return NULL;
		if (*r == '"') {
			if (r[1] == '"') {
				*w++ = '"';
				r += 2;
				continue;
			}
			r++;
			break;
		}
		*w++ = *r++;
	}
	*w = '\0'; /* w < r: the rest of the line is untouched */
	*pp = r;
	return s;
}

/* The value part of `key = value`: comment cut, trimmed, unquoted. */
static char *clean_value(char *raw, bool libpq, const char **why)
{
	cut_comment(raw, libpq);
	char *v = config_ini_trim(raw);
	if (*v != '"')
		return v;
	char *p = v;
	if (!config_ini_unquote(&p)) {
		*why = "unterminated quoted value";
		return NULL;
	}
	if (*config_ini_skip_ws(p)) {
		*why = "unexpected text after the closing quote";
		return NULL;
	}
	return v;
}

static void file_setting(struct ini_reader *l, const char *file, int lineno, const char *key,
                         char *raw)
{
	const char *why = NULL;

	if (!config_setting_known(key)) {
		config_loader_report(l->loader, "%s:%d: key '%s': unknown setting", file, lineno,
		                     key);
		return;
	}
	char *text = clean_value(raw, false, &why);
	if (!text) {
		config_loader_report(l->loader, "%s:%d: key '%s': %s", file, lineno, key, why);
		return;
	}
	config_loader_set_file(l->loader, key, text, file, lineno);
}

static void file_database(struct ini_reader *l, const char *file, int lineno, const char *name,
                          char *raw)
{
	const char *why = NULL;
	struct config *cfg = config_loader_config(l->loader);

	for (size_t i = 0; i < cfg->n_dbs; i++) {
		if (strcmp(cfg->dbs[i].name, name) == 0) {
			config_loader_report(
			    l->loader,
			    "%s:%d: key '%s': duplicate database (first defined at %s:%d)", file,
			    lineno, name, cfg->dbs[i].file, cfg->dbs[i].line);
			return;
		}
	}
	char *p = clean_value(raw, true, &why);
	if (!p) {
		config_loader_report(l->loader, "%s:%d: key '%s': %s", file, lineno, name, why);
		return;
	}
	struct db_config *db = config_db_add(cfg, name, file, lineno);
	const char *prev = NULL; /* the last parameter name, never its value */
	bool saw_host = false;   /* a bad host= was reported already */

	for (;;) {
		p = config_ini_skip_ws(p);
		if (!*p)
			break;
		char *key = p;
		while (*p && *p != '=' && !isspace((unsigned char)*p))
			p++;
		char *kend = p;
		p = config_ini_skip_ws(p);
		if (*p != '=') {
			/* echo a word only when it cannot be a piece of a password */
			if (prev)
				config_loader_report(
				    l->loader,
				    "%s:%d: key '%s': text without '=' after parameter '%s' (quote "
				    "values that contain spaces)",
				    file, lineno, name, prev);
			else
				config_loader_report(
				    l->loader,
				    "%s:%d: key '%s': expected key=value, got '" ECHO "'", file,
				    lineno, name, key);
			return;
		}
		*kend = '\0';
		p = config_ini_skip_ws(p + 1);
		if (!*key) {
			config_loader_report(l->loader,
			                     "%s:%d: key '%s': missing parameter name before '='",
			                     file, lineno, name);
			return;
		}

		char *w = p, *val = p;
		if (*p == '\'') {
			val = w = ++p;
			for (;;) {
				if (!*p) {
					config_loader_report(
					    l->loader,
					    "%s:%d: key '%s': unterminated quoted value for '" ECHO
					    "'",
					    file, lineno, name, key);
					return;
				}
				if (*p == '\\' && p[1])
					p++;
				else if (*p == '\'') {
					p++;
					break;
				}
				*w++ = *p++;
			}
		} else {
			while (*p && !isspace((unsigned char)*p)) {
				if (*p == '\\' && p[1])
					p++;
				*w++ = *p++;
			}
		}
		if (w == p && *p) /* the terminator lands on the separator */
			p++;
		*w = '\0';

		config_db_set_param(l->loader, db, key, val, file, lineno);
		saw_host |= strcasecmp(key, "host") == 0;
		prev = key;
	}
	if (!saw_host)
		config_loader_report(l->loader, "%s:%d: key '%s': host is required", file, lineno,
		                     name);
}

/* A [users] entry: `name = key=value ...` (PgBouncer's per-user settings;
 * values are plain words). */
static void file_user(struct ini_reader *l, const char *file, int lineno, const char *name,
                      char *raw)
{
	const char *why = NULL;
	char *p = clean_value(raw, true, &why);
	if (!p) {
		config_loader_report(l->loader, "%s:%d: key '%s': %s", file, lineno, name, why);
		return;
	}
	struct user_config *u = config_user_cfg_add(l->loader, name, file, lineno);
	if (!u)
		return;
	for (;;) {
		p = config_ini_skip_ws(p);
		if (!*p)
			break;
		char *key = p;
		while (*p && *p != '=' && !isspace((unsigned char)*p))
			p++;
		char *kend = p;
		p = config_ini_skip_ws(p);
		if (*p != '=' || kend == key) {
			config_loader_report(l->loader,
			                     "%s:%d: key '%s': expected key=value, got '" ECHO "'", file,
			                     lineno, name, key);
			return;
		}
		*kend = '\0';
		char *val = p = config_ini_skip_ws(p + 1);
		while (*p && !isspace((unsigned char)*p))
			p++;
		if (*p)
			*p++ = '\0';
		config_user_set_param(l->loader, u, key, val, file, lineno);
	}
}

static void read_file(struct ini_reader *l, const char *path, const char *from, int from_line);

static void include_file(struct ini_reader *l, const char *file, int lineno, char *arg)
{
	const char *why = NULL;
	char *rel = clean_value(arg, false, &why);
	if (!rel) {
		config_loader_report(l->loader, "%s:%d: %%include: %s", file, lineno, why);
		return;
	}
	if (!*rel) {
		config_loader_report(l->loader, "%s:%d: %%include needs a file name", file, lineno);
		return;
	}
	if (l->depth > INCLUDE_DEPTH_MAX) { /* the main file plus ten levels */
		config_loader_report(l->loader, "%s:%d: %%include '%s': nested more than %d deep",
		                     file, lineno, rel, INCLUDE_DEPTH_MAX);
		return;
	}
	/* relative to the including file's directory, as in PgBouncer */
	const char *slash = strrchr(file, '/');
	if (*rel == '/' || !slash) {
		read_file(l, rel, file, lineno);
		return;
	}
	size_t dirlen = (size_t)(slash - file) + 1;
	char *full = config_xrealloc(NULL, dirlen + strlen(rel) + 1);
	memcpy(full, file, dirlen);
	strcpy(full + dirlen, rel);
	read_file(l, full, file, lineno);
	free(full);
}

static void parse_line(struct ini_reader *l, const char *file, int lineno, char *line)
{
	char *p = config_ini_trim(line);

	if (!*p || *p == ';' || *p == '#')
		return;

	if (*p == '[') {
		char *close = strchr(p, ']');
		if (!close) {
			config_loader_report(l->loader, "%s:%d: unterminated section header", file,
			                     lineno);
			l->section = SEC_UNKNOWN;
			return;
		}
		char *rest = config_ini_skip_ws(close + 1);
		if (*rest && *rest != ';' && *rest != '#')
			config_loader_report(
			    l->loader, "%s:%d: unexpected text after section header", file, lineno);
		*close = '\0';
		char *name = config_ini_trim(p + 1);
		if (strcasecmp(name, "databases") == 0)
			l->section = SEC_DATABASES;
		else if (strcasecmp(name, "pgfleet") == 0 || strcasecmp(name, "pgbouncer") == 0)
			l->section = SEC_PGFLEET;
		else if (strcasecmp(name, "users") == 0)
			l->section = SEC_USERS;
		else if (strcasecmp(name, "peers") == 0)
			l->section = SEC_PEERS;
		else {
			config_loader_report(l->loader, "%s:%d: unknown section [" ECHO "]", file,
			                     lineno, name);
			l->section = SEC_UNKNOWN;
		}
		return;
	}

	if (*p == '%') {
		if (strncasecmp(p, "%include", 8) == 0 && (!p[8] || isspace((unsigned char)p[8]))) {
			include_file(l, file, lineno, p + 8);
			return;
		}
		char *end = p;
		while (*end && !isspace((unsigned char)*end))
			end++;
		*end = '\0';
		config_loader_report(l->loader, "%s:%d: unknown directive '" ECHO "'", file, lineno,
		                     p);
		return;
	}

	char *key, *raw;
	if (*p == '"') { /* a quoted name: [databases] allows any characters */
		char *q = p;
		key = config_ini_unquote(&q);
		if (!key) {
			config_loader_report(l->loader, "%s:%d: unterminated quoted key", file,
			                     lineno);
			return;
		}
		q = config_ini_skip_ws(q);
		if (*q != '=') {
			config_loader_report(l->loader,
			                     "%s:%d: key '" ECHO "': expected '=' after the name",
			                     file, lineno, key);
			return;
		}
		raw = q + 1;
	} else {
		char *eq = strchr(p, '=');
		if (!eq) {
			config_loader_report(
			    l->loader, "%s:%d: syntax error: expected 'key = value'", file, lineno);
			return;
		}
		*eq = '\0';
		key = config_ini_trim(p);
		raw = eq + 1;
	}
	if (!*key) {
		config_loader_report(l->loader, "%s:%d: missing key before '='", file, lineno);
		return;
	}

	switch (l->section) {
	case SEC_NONE:
		config_loader_report(l->loader, "%s:%d: key '" ECHO "': not inside a section", file,
		                     lineno, key);
		break;
	case SEC_DATABASES:
		file_database(l, file, lineno, key, raw);
		break;
	case SEC_PGFLEET:
		file_setting(l, file, lineno, key, raw);
		break;
	case SEC_USERS:
		file_user(l, file, lineno, key, raw);
		break;
	case SEC_PEERS:
		/* PgBouncer's static peering: an empty section loads, an entry
		 * would be ignored (pgfleet's peers come from DNS), so it is refused */
		config_loader_report(l->loader,
		                     "%s:%d: key '" ECHO "': [peers] entries are not supported: "
		                     "pgfleet finds its peers in DNS (the peers setting); remove the entry",
		                     file, lineno, key);
		break;
	case SEC_UNKNOWN: /* already reported once at the header */
		break;
	}
}

/* Reads one file; `from` is the including file (NULL for the main one). */
static void read_file(struct ini_reader *l, const char *path, const char *from, int from_line)
{
	FILE *f = fopen(path, "r");
	struct stat sb;

	if (f && fstat(fileno(f), &sb) == 0 && S_ISDIR(sb.st_mode)) {
		fclose(f);
		f = NULL;
		errno = EISDIR;
	}
	if (!f) {
		int e = errno;
		if (from)
			config_loader_report(l->loader, "%s:%d: %%include '%s': cannot read: %s",
			                     from, from_line, path, strerror(e));
		else {
			config_loader_report(l->loader, "%s: cannot read: %s", path, strerror(e));
			config_loader_set_unreadable(l->loader);
		}
		return;
	}

	char *real = realpath(path, NULL);
	if (!real)
		real = config_xstrdup(path);
	for (int i = 0; i < l->depth; i++) {
		if (strcmp(l->open[i], real) == 0) {
			config_loader_report(
			    l->loader,
			    "%s:%d: %%include '%s': include loop (the file is already being read)",
			    from, from_line, path);
			free(real);
			fclose(f);
			return;
		}
	}
	l->open[l->depth++] = real;
	config_loader_note_file(l->loader, path);

	const char *name = config_loader_keep_name(l->loader, path);
	enum section saved = l->section;
	if (!from)
		l->section = SEC_NONE;
	char *line = NULL;
	size_t cap = 0;
	int lineno = 0;
	while (getline(&line, &cap, f) >= 0) {
		lineno++;
		parse_line(l, name, lineno, line);
	}
	if (ferror(f))
		config_loader_report(l->loader, "%s: cannot read: %s", name, strerror(errno));
	free(line);
	fclose(f);
	/* an included file's sections end with it */
	l->section = saved;
	free(l->open[--l->depth]);
}

void config_ini_read(struct config_loader *loader, const char *path)
{
	struct ini_reader r = {.loader = loader, .depth = 0, .section = SEC_NONE};
	read_file(&r, path, NULL, 0);
}
