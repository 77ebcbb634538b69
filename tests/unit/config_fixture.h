/*
 * config_fixture.h: what the configuration's unit tests share: files written
 * to a private temp directory, messages collected from the loader, and
 * expected messages written with '@' standing for that directory, so each
 * case states the exact "file:line: key 'k': why" a user would see.
 *
 * Included by test_config.c, test_config_ini.c, test_config_env.c and
 * test_authfile.c only (one executable each: the statics are per test).
 */
#ifndef PGFLEET_CONFIG_FIXTURE_H
#define PGFLEET_CONFIG_FIXTURE_H

#include "harness.h"

#include "config.h"

#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

static char tmpdir[] __attribute__((unused)) = "/tmp/pgfleet-test-config-XXXXXX";
static char *created[64] __attribute__((unused));
static size_t n_created __attribute__((unused));

struct msgs {
	char *line[64];
	size_t n;
};

static inline void collect(void *arg, const char *line)
{
	struct msgs *m = arg;
	if (m->n < sizeof m->line / sizeof m->line[0])
		m->line[m->n++] = strdup(line);
}

static inline void msgs_clear(struct msgs *m)
{
	for (size_t i = 0; i < m->n; i++)
		free(m->line[i]);
	m->n = 0;
}

/* '@' -> the temp directory */
static char *expand(const char *pattern)
{
	size_t n = strlen(pattern) + 1;
	for (const char *p = pattern; *p; p++)
		if (*p == '@')
			n += strlen(tmpdir);
	char *out = malloc(n), *w = out;
	for (const char *p = pattern; *p; p++) {
		if (*p == '@') {
			strcpy(w, tmpdir);
			w += strlen(tmpdir);
		} else {
			*w++ = *p;
		}
	}
	*w = '\0';
	return out;
}

static inline bool msgs_has(const struct msgs *m, const char *pattern)
{
	char *want = expand(pattern);
	bool found = false;
	for (size_t i = 0; i < m->n && !found; i++)
		found = strcmp(m->line[i], want) == 0;
	if (!found) {
		fprintf(stderr, "  missing message: %s\n", want);
		for (size_t i = 0; i < m->n; i++)
			fprintf(stderr, "  got: %s\n", m->line[i]);
	}
	free(want);
	return found;
}

static inline bool msgs_contain(const struct msgs *m, const char *needle)
{
	for (size_t i = 0; i < m->n; i++)
		if (strstr(m->line[i], needle))
			return true;
	return false;
}

static inline void remember(const char *path)
{
	for (size_t i = 0; i < n_created; i++)
		if (strcmp(created[i], path) == 0)
			return;
	if (n_created < sizeof created / sizeof created[0])
		created[n_created++] = strdup(path);
}

/* Writes `text` to @/name (sub directories made as needed); returns the path,
 * owned by the created list. */
static inline const char *write_file(const char *name, const char *text)
{
	char rel[512];
	snprintf(rel, sizeof rel, "@/%s", name);
	char *path = expand(rel);
	for (char *slash = strchr(path + strlen(tmpdir) + 1, '/'); slash;
	     slash = strchr(slash + 1, '/')) {
		*slash = '\0';
		if (mkdir(path, 0700) == 0)
			remember(path);
		*slash = '/';
	}
	FILE *f = fopen(path, "w");
	if (f) {
		fputs(text, f);
		fclose(f);
	}
	remember(path);
	free(path);
	for (size_t i = 0; i < n_created; i++) {
		const char *c = created[i];
		if (strlen(c) > strlen(tmpdir) && strcmp(c + strlen(tmpdir) + 1, name) == 0)
			return c;
	}
	return NULL;
}

static inline void cleanup_files(void)
{
	/* children were remembered after their directories: remove backwards */
	for (size_t i = n_created; i-- > 0;) {
		if (unlink(created[i]) != 0)
			rmdir(created[i]);
		free(created[i]);
	}
	rmdir(tmpdir);
}

static char *users_env[] __attribute__((unused)) = {"DB_USER=u", "DB_PASSWORD=p", NULL};

static inline bool load_text(struct config *cfg, struct msgs *m, const char *text, char **env)
{
	const char *path = write_file("pgfleet.ini", text);
	msgs_clear(m);
	return config_load(cfg, path, env, collect, m);
}

static inline int setting_index(const char *name)
{
	for (size_t i = 0; i < config_setting_count(); i++)
		if (strcmp(config_setting_name(i), name) == 0)
			return (int)i;
	return -1;
}

static inline void value_of(const struct config *cfg, const char *name, char *buf, size_t len)
{
	int i = setting_index(name);
	if (i < 0)
		snprintf(buf, len, "(no such setting %s)", name);
	else
		config_setting_value(cfg, (size_t)i, buf, len);
}

/* Four lines, so that a case's own line is line 5. */
#define BASE "[databases]\napp = host=db\n[pgfleet]\nlisten_addr = 127.0.0.1\n"

/* mkdtemp, the cases, cleanup, the harness's verdict */
static inline int fixture_main(void (*run)(void))
{
	if (!mkdtemp(tmpdir)) {
		perror("mkdtemp");
		return 1;
	}
	run();
	cleanup_files();
	return harness_finish();
}

#endif
