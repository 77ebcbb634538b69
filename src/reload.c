/*
 * reload.c: a new configuration takes effect in the running process.
 *
 * RELOAD and SIGHUP load the file (or the environment) into a new struct
 * config; one with errors is refused whole and the old one stays.  A good one
 * replaces the old: databases point at their new entries (pool sizes, modes
 * and timeouts apply from the next checkout, without dropping anyone), a
 * changed host is resolved again, a removed database keeps a private copy of
 * its old entry for the clients it still has and takes no new ones.  The
 * settings bound to sockets or contexts built at start-up keep their value
 * until a restart, and the log says so.
 *
 * Each changed setting is logged once (by worker 0) with its old and new
 * value, except secrets (reload_is_secret), which are named only.
 *
 * Must not: drop a client, log a secret's value.
 */
#include "reload.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "config.h"
#include "database.h"
#include "discovery.h"
#include "hba.h"
#include "log.h"
#include "mailbox.h"
#include "pool.h"
#include "runtime.h"
#include "server.h"

extern char **environ;

/* Applies pool sizes and modes to one database from its entry. */
static void database_apply(struct database *db)
{
	const struct db_config *cfg = db->cfg;
	if (!cfg)
		return;
	int size = cfg->pool_size >= 0 ? cfg->pool_size : (int)fleet.cfg.default_pool_size;
	db->pool_mode = cfg->pool_mode >= 0 ? cfg->pool_mode : fleet.cfg.pool_mode;
	if (size < db->pool_size) {
		/* Smaller: idle connections above the new size go now, busy
		 * ones are never taken from a client. */
		struct list *rit, *pit;
		list_for_each(rit, &db->replicas) {
			struct replica *r = container_of(rit, struct replica, node);
			list_for_each(pit, &r->pools) {
				struct pool *p = container_of(pit, struct pool, replica_node);
				struct list *it;
				while (pool_total(p) > size && (it = list_first(&p->idle.head)))
					server_close(container_of(it, struct server, node),
						     "pool size reduced");
			}
		}
	}
	db->pool_size = size;
	struct list *git;
	list_for_each(git, &db->groups) {
		pool_kick(container_of(git, struct pool_group, node));
	}
}

/* verbose and logfile: the process's one log, set by worker 0 alone (a
 * RELOAD or SET runs on every worker).  The file is opened again even when
 * its name did not change: that is how a rotated log is let go. */
static void apply_logging(void)
{
	if (worker_index() != 0)
		return;
	log_set_verbose(fleet.cfg.verbose);
	char err[512];
	if (!log_open_file(fleet.cfg.logfile, err, sizeof(err)))
		log_error("logfile not reopened, the old one is kept", "key", "logfile", "error", err,
			  NULL);
}

void reload_settings_changed(void)
{
	apply_logging();
	struct list *it;
	list_for_each(it, &fleet.databases) {
		database_apply(container_of(it, struct database, node));
	}
}

static bool str_eq(const char *a, const char *b)
{
	return (!a && !b) || (a && b && strcmp(a, b) == 0);
}

/* Would a server connection opened under `a` be different under `b`? */
static bool login_changed(const struct db_config *a, const struct db_config *b)
{
	return !str_eq(a->dbname, b->dbname) || !str_eq(a->user, b->user) ||
	       !str_eq(a->password, b->password);
}

static bool entry_changed(const struct db_config *a, const struct db_config *b)
{
	return !str_eq(a->host, b->host) || a->port != b->port || login_changed(a, b) ||
	       a->pool_size != b->pool_size || a->pool_mode != b->pool_mode || a->tsa != b->tsa ||
	       a->max_replica_lag != b->max_replica_lag || a->min_pool_size != b->min_pool_size ||
	       a->reserve_pool_size != b->reserve_pool_size ||
	       a->max_db_connections != b->max_db_connections || a->server_lifetime != b->server_lifetime ||
	       !str_eq(a->auth_user, b->auth_user) ||
	       !str_eq(a->auth_query, b->auth_query) || !str_eq(a->auth_dbname, b->auth_dbname);
}

/* A removed entry's private copy: one block, the strings behind the struct,
 * so database.c frees it with one free(). */
static struct db_config *entry_copy(const struct db_config *d)
{
	const char *strs[] = {d->name,	    d->host,	   d->dbname,	   d->user, d->password,
			      d->auth_user, d->auth_query, d->auth_dbname, d->file};
	size_t n = sizeof(*d);
	for (size_t i = 0; i < 9; i++)
		n += strs[i] ? strlen(strs[i]) + 1 : 0;
	struct db_config *c = malloc(n);
	if (!c)
		return NULL;
	*c = *d;
	char *p = (char *)(c + 1);
	char **fields[] = {&c->name,	  &c->host,	  &c->dbname,	   &c->user, &c->password,
			   &c->auth_user, &c->auth_query, &c->auth_dbname, &c->file};
	for (size_t i = 0; i < 9; i++) {
		if (!strs[i]) {
			*fields[i] = NULL;
			continue;
		}
		size_t len = strlen(strs[i]) + 1;
		memcpy(p, strs[i], len);
		*fields[i] = p;
		p += len;
	}
	return c;
}

/* A comma-separated list that stays one log value. */
struct names {
	char buf[1024];
	size_t len;
};

static void names_add(struct names *n, const char *name, const char *suffix)
{
	int w = snprintf(n->buf + n->len, sizeof(n->buf) - n->len, "%s%s%s", n->len ? "," : "",
			 name, suffix);
	if (w > 0 && (size_t)w < sizeof(n->buf) - n->len)
		n->len += (size_t)w;
}

struct load_report {
	int count;
	char first[256];
};

static void report_error(void *arg, const char *line)
{
	struct load_report *r = arg;
	if (!r->count++)
		snprintf(r->first, sizeof(r->first), "%s", line);
	/* The loader's line names file, line and key; values of secrets never
	 * appear in it. */
	log_error("config error", "error", line, NULL);
}

/* Settings whose values never reach the log: passwords, secrets, and the
 * auth settings (a query or a user name says how logins are checked). */
static bool reload_is_secret(const char *name)
{
	return strstr(name, "password") || strstr(name, "secret") || strncmp(name, "auth_", 5) == 0;
}

/* One line per changed setting, from one worker (every worker reloads). */
static void log_setting_change(const char *name, const char *before, const char *after,
			       bool restart)
{
	if (worker_index() != 0)
		return;
	const char *applied = restart ? "no, restart needed" : "yes";
	if (reload_is_secret(name))
		log_info("config setting changed", "key", name, "old", "(not shown)", "new",
			 "(not shown)", "applied", applied, NULL);
	else
		log_info("config setting changed", "key", name, "old", before, "new", after,
			 "applied", applied, NULL);
}

static bool users_changed(const struct config *a, const struct config *b)
{
	if (a->n_users != b->n_users)
		return true;
	for (size_t i = 0; i < a->n_users; i++) {
		const struct user_entry *u = config_find_user(b, a->users[i].name);
		if (!u || strcmp(u->password, a->users[i].password) != 0)
			return true;
	}
	return false;
}

bool reload_config(char *err, size_t errlen)
{
	struct config nc;
	struct load_report rep = {0, ""};
	const char *path = fleet.cfg.path; /* NULL: started from the environment */
	if (!config_load(&nc, path, environ, report_error, &rep)) {
		char count[16];
		snprintf(count, sizeof(count), "%d", rep.count);
		log_warn("config reload refused", "errors", count, "kept", "old configuration",
			 NULL);
		if (err && errlen)
			snprintf(err, errlen,
				 "configuration has %d error%s, kept the old one (first: %s)",
				 rep.count, rep.count == 1 ? "" : "s", rep.first);
		return false;
	}

	for (size_t i = 0; i < nc.n_warnings; i++)
		log_warn("config warning", "detail", nc.warnings[i], NULL);

	/* Settings: what changed, and the ones that wait for a restart. */
	struct names changed = {.len = 0}, restart = {.len = 0}, dbs = {.len = 0};
	size_t n = config_setting_count();
	for (size_t i = 0; i < n; i++) {
		char before[512], after[512];
		const char *name = config_setting_name(i);
		config_setting_value(&fleet.cfg, i, before, sizeof(before));
		config_setting_value(&nc, i, after, sizeof(after));
		if (strcmp(before, after) == 0)
			continue;
		log_setting_change(name, before, after, fleet_setting_needs_restart(name));
		if (fleet_setting_needs_restart(name)) {
			names_add(&restart, name, "");
			char why[256];
			if (!config_set(&nc, name, before, why, sizeof(why)))
				log_warn("config reload: could not keep setting", "key", name, NULL);
			continue;
		}
		names_add(&changed, name, "");
	}
	if (users_changed(&fleet.cfg, &nc))
		names_add(&changed, "users", "");
	/* The file's content (a new path is listed with the settings). */
	if (strcmp(fleet.cfg.auth_hba_file, nc.auth_hba_file) == 0 &&
	    !hba_same(fleet.cfg.hba, nc.hba))
		names_add(&changed, "auth_hba_file", "");

	/* Databases: each live one to its new entry, or removed. */
	struct config old = fleet.cfg;
	fleet.cfg = nc;
	struct list *it;
	list_for_each(it, &fleet.databases) {
		struct database *db = container_of(it, struct database, node);
		const struct db_config *was = db->cfg;
		const struct db_config *now = config_find_db(&fleet.cfg, db->name);
		if (!now) {
			if (db->cfg_own)
				continue; /* removed before */
			db->cfg_own = entry_copy(was);
			if (!db->cfg_own) {
				log_error("out of memory: removed database kept its entry", "db",
					  db->name, NULL);
				db->cfg = NULL; /* no dangling pointer; its servers keep going */
				continue;
			}
			db->cfg = db->cfg_own;
			names_add(&dbs, db->name, "(removed)");
			log_info("database removed", "db", db->name, "clients", "kept, no new ones",
				 NULL);
			continue;
		}
		bool host_changed = !was || !str_eq(was->host, now->host) || was->port != now->port;
		bool relogin = was && login_changed(was, now);
		bool any = !was || entry_changed(was, now) || db->cfg_own;
		db->cfg = now;
		/* An exact entry for a name "*" served (or its removal): the
		 * database stays, counted in max_auto_databases only while it
		 * comes from "*". */
		database_set_auto(db, strcmp(now->name, "*") == 0);
		if (db->cfg_own) {
			free(db->cfg_own);
			db->cfg_own = NULL;
			names_add(&dbs, db->name, "(back)");
		} else if (any) {
			names_add(&dbs, db->name, "(changed)");
		}
		if (relogin)
			database_reconnect(db, "configuration changed");
		else
			database_refresh_defaults(db);
		if (host_changed)
			database_sync_replicas(db); /* new names are resolved, old ones drain */
		database_apply(db);
	}
	/* New named entries start now, as at start-up; "*" ones on first use. */
	for (size_t i = 0; i < fleet.cfg.n_dbs; i++) {
		const struct db_config *d = &fleet.cfg.dbs[i];
		bool known = false;
		list_for_each(it, &fleet.databases) {
			known = known || strcmp(container_of(it, struct database, node)->name,
						d->name) == 0;
		}
		if (strcmp(d->name, "*") == 0) {
			if (d->host && d->host[0] != '/')
				discovery_watch(d->host);
			continue;
		}
		if (!known && database_lookup(d->name))
			names_add(&dbs, d->name, "(added)");
	}
	config_free(&old);
	apply_logging();

	if (restart.len)
		log_warn("config reload: restart needed for", "settings", restart.buf, NULL);
	log_info("config reloaded", "config", fleet.cfg.path ? fleet.cfg.path : "environment",
		 "changed",
		 changed.len ? changed.buf : "none", "databases", dbs.len ? dbs.buf : "none",
		 NULL);
	return true;
}

void reload_all_workers(void)
{
	/* A bad file is refused with its errors logged, the old configuration
	 * kept; then every host is resolved again. */
	worker_broadcast(WMSG_RELOAD);
	reload_config(NULL, 0);
	discovery_refresh();
}

void reload_on_message(const struct worker_msg *m)
{
	reload_config(NULL, 0);
	discovery_refresh();
}
