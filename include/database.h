/*
 * database.h: the databases clients connect to and the replicas behind them.
 *
 * A database is one [databases] entry as a client names it (a "*" entry
 * yields one database per name asked for).  Its replicas are the addresses
 * its host resolves to: one per A/AAAA record of the headless service, one
 * per literal address or socket directory.  A replica's health (state) is
 * kept apart from its role (primary/standby).
 */
#ifndef PGFLEET_DATABASE_H
#define PGFLEET_DATABASE_H

#include <netinet/in.h>
#include <stdbool.h>
#include <stdint.h>
#include <sys/socket.h>

#include "config.h"
#include "list.h"
#include "stats.h"

#define NAME_MAX_LEN 64

struct health_check;
struct write_choice;

enum replica_state {
	REPLICA_NEW,      /* seen in DNS, no check passed yet: no traffic */
	REPLICA_UP,       /* takes transactions */
	REPLICA_DOWN,     /* a connect or check failed: no new transactions */
	REPLICA_BANNED,   /* failed repeatedly: no traffic for ban_time */
	REPLICA_DRAINING, /* gone from DNS: finishes its transactions, then is forgotten */
};

enum replica_role { ROLE_UNKNOWN, ROLE_PRIMARY, ROLE_STANDBY };

struct pool_slot;

struct replica {
	struct list node; /* database->replicas */
	struct database *db;
	struct sockaddr_storage addr;
	socklen_t addrlen;
	char addr_str[128]; /* "10.0.0.5:5432" or a socket path */
	char host[256];     /* the name (or address) it came from */
	enum replica_state state;
	enum replica_role role;
	double lag_s;
	/* Standby: the WAL position it has replayed, as last seen (health
	 * checks, read-your-writes probes); 0 = not known.  Primary: 0. */
	uint64_t replay_lsn;
	/* A primary's timeline, from its health check (0 = not known: a
	 * standby, no checks, or a check that could not say). */
	uint32_t timeline;
	/* The timeline it last had as a primary in this worker, kept after a
	 * demotion: a worker tells "demoted" from "promotion not seen yet". */
	uint32_t primary_tl;
	double retry_at; /* DOWN: when a login may be retried (no health checks);
			    BANNED: when the ban ends */
	int fails;       /* failures in a row (checks and logins) */
	double last_check; /* wall clock of the last finished check, 0 = none */
	char last_error[160];
	struct health_check *health; /* health.c's state, NULL when checks are off */
	bool seen; /* marked during a replica-set update */
	struct list pools; /* struct pool, one per user */
	int server_conns;  /* every server connection, any state */
	int active;        /* linked to a client */
	/* workers = N: `active` summed over every worker, for least_conn
	 * (pool.h's registry; NULL when workers = 1). */
	struct pool_slot *shared;
	struct stats st;   /* monotonic totals (stats.c) */
};

struct database {
	struct list node; /* fleet.databases */
	char name[NAME_MAX_LEN];   /* the name clients use */
	char dbname[NAME_MAX_LEN]; /* the name on the servers */
	const struct db_config *cfg;
	struct list replicas; /* struct replica */
	struct list groups;   /* struct pool_group, one per user */
	int replica_count;
	int pool_size;
	int pool_mode; /* enum pool_mode */
	bool paused, disabled;
	/* Removed from the configuration by a reload: its own copy of the old
	 * entry (reload.c); it takes no new clients. NULL while configured. */
	struct db_config *cfg_own;
	struct stats retired;   /* totals of the replicas already forgotten */
	struct stats_avg avg;   /* per-second averages over the last stats_period */
	struct stats avg_prev;  /* the totals when avg was computed */
	struct histogram xact_hist, wait_hist;
	/* Created from the "*" entry after a client authenticated: counted in
	 * max_auto_databases (process-wide), removed by database_reap_auto()
	 * after autodb_idle_timeout without a client. */
	bool is_auto;
	/* The authenticated user whose login created it: the user its health
	 * check logs in as when neither health_check_user nor the entry's
	 * user= says otherwise. */
	char auto_user[NAME_MAX_LEN];
	int clients;       /* clients whose c->db is this one, until freed */
	double idle_since; /* when `clients` last fell to 0 (or creation) */
	/* Bumped by RELOAD: server connections logged in before it may carry
	 * role/database defaults an ALTER ROLE/DATABASE ... SET has changed
	 * since (database_refresh_defaults). */
	unsigned defaults_gen;
	/* Several primaries (split brain): the process-wide choice of the one
	 * that takes writes (database.c's registry, shared by every worker),
	 * and this worker's copy of it, refreshed when the registry's
	 * generation moves.  `primaries`: up primaries as this worker sees
	 * them. */
	struct write_choice *wp;
	unsigned wp_gen;
	const struct replica *wp_replica; /* NULL: none chosen (yet) */
	int primaries;
};

/* The database for a client's name: existing, or created from its exact
 * [databases] entry.  NULL when there is none, when the name is removed by
 * a reload, and for a name only "*" covers: such a database is created by
 * database_create_auto(), once its client has authenticated. */
struct database *database_lookup(const char *name);
/* Would a client that authenticates get a database for `name` from "*"?
 * (No database of that name exists yet, and "*" is configured.) */
bool database_auto_possible(const char *name);
/* Creates the database `name` from the "*" entry for `user`, who has just
 * authenticated (or returns the one of that name that exists by now).
 * NULL with *sqlstate and msg set when it may not be created:
 * max_auto_databases reached (53400), "*" gone (3D000), out of memory. */
struct database *database_create_auto(const char *name, const char *user, const char **sqlstate,
				      char *msg, size_t msglen);
/* Once a second: removes the auto-created databases that have had no
 * client for autodb_idle_timeout, with their pools, server connections,
 * health checks, replicas and statistics. */
void database_reap_auto(double now);
/* A reload moved db between an exact entry and "*": (un)counts it. */
void database_set_auto(struct database *db, bool is_auto);
/* Auto-created databases in the whole process (every worker). */
int database_auto_count(void);
/* Replaces the replica set of every database whose host list names `host`
 * with the addresses now known for it (called by discovery). */
void database_hosts_changed(const char *host);

/*
 * Health checks (policy layer, above this one) follow the replicas: a new
 * replica is checked before it takes work when checks are enabled, one back
 * in DNS is checked again, a freed one's check stops.  Registered once at
 * start-up (wiring.c); without them no replica is checked.
 */
struct database_health {
	bool (*enabled)(void);
	void (*replica_added)(struct replica *r);
	void (*replica_removed)(struct replica *r);
	void (*check_now)(struct replica *r);
};
void database_set_health(const struct database_health *h);
/* Recomputes one database's replicas from its host list. */
void database_sync_replicas(struct database *db);
void replica_set_state(struct replica *r, enum replica_state state, const char *why);
/* A new role (from a health check or in_hot_standby): logged, and the idle
 * server connections close, since they were opened for the old role (busy
 * ones finish their transaction).  Returns whether the role changed. */
bool replica_set_role(struct replica *r, enum replica_role role, const char *why);
/* Is r's lag within its database's max_replica_lag (always, for a primary)? */
bool replica_lag_ok(const struct replica *r);
/*
 * Two or more primaries behind one database (independent servers, or a
 * promoted standby next to the old primary: split brain): writes go to one
 * of them only.  The choice is made once for the process (every worker
 * agrees) and kept: newest timeline first, ties to the lowest address;
 * once chosen a primary keeps the writes while it stays an up primary,
 * even when another primary with an equal timeline appears; a newer
 * timeline takes over (a failover).  Before the first choice, while a
 * replica's first health check is still out, nothing is chosen (writes
 * wait at most health_check_timeout) so the choice does not depend on
 * which check answered first.
 * replica_is_write_primary: r is an up primary and the chosen one (the
 * only primary, when there is one).  Cheap: one atomic load unless the
 * choice changed.
 * database_update_write_primary: re-decides after a replica's health, role
 * or timeline changed (health checks, logins); logs the start and end of a
 * split brain once per process, and a change of the write primary.
 */
bool replica_is_write_primary(const struct replica *r);
void database_update_write_primary(struct database *db);
/* The process-wide count of up primaries of db (the highest any worker
 * sees), for SHOW DATABASES and /metrics. */
int database_primaries(const struct database *db);
/* Is r able to take a new transaction for db's target_session_attrs? */
bool replica_eligible(const struct replica *r, double now);
/* db's target_session_attrs: its entry's, else the global setting's. */
int database_tsa(const struct database *db);

/*
 * target_session_attrs = auto routes each transaction by its first
 * statement (client.c classifies, sqlroute.h): what it needs of a replica.
 */
enum route_want {
	WANT_DB = 0, /* whatever the database's target_session_attrs takes */
	WANT_WRITE,  /* the (one) primary that takes writes */
	WANT_READ,   /* a standby within max_replica_lag that has replayed
		      * `lsn`; the primary when no standby can */
};
struct route_need {
	uint8_t want;                /* enum route_want */
	uint64_t lsn;                /* WANT_READ: replayed at least this (0: any) */
	const struct replica *avoid; /* WANT_READ: not this one (a retry elsewhere) */
};
/* Is r able to take a new transaction that needs `need` (NULL: WANT_DB)? */
bool replica_eligible_for(const struct replica *r, double now, const struct route_need *need);
/* Could any standby of db take a read that needs `need`? */
bool database_standby_for(const struct database *db, double now, const struct route_need *need);
/* The highest replay position known of the standbys that could take a read
 * needing `need` but for its lsn (0 when none is known yet); UINT64_MAX
 * when no standby could. */
uint64_t database_best_replay(const struct database *db, double now, const struct route_need *need);
/* libpq's keywords for a connection of pgfleet's own to r (health checks,
 * auth_query lookups), reaching it as the pooled connections do: hostaddr
 * and host (the name verify-full checks), port, dbname, the server_tls_*
 * settings (mode, CA, protocol range, client certificate), no GSS, the
 * tcp_* keepalives.  The caller appends user, password, its timeouts and
 * application_name (room for REPLICA_LIBPQ_SPARE more), then the NULL
 * that ends both lists.  Valid while p and r are. */
#define REPLICA_LIBPQ_SPARE 8
struct replica_libpq {
	const char *kw[24], *val[24];
	int n;
	char addr[64], port[16], ka_idle[24], ka_intvl[24], ka_cnt[24], user_timeout[24];
};
void replica_libpq_params(const struct replica *r, struct replica_libpq *p);
const char *replica_state_name(enum replica_state s);
const char *replica_role_name(enum replica_role r);
/* Idle server connections of db close now, busy ones when their client is
 * done with them (RECONNECT, a changed login on reload). */
void database_reconnect(struct database *db, const char *why);
/* RELOAD: role and database defaults may have changed without a change of
 * db's entry.  Each pool of an up replica starts one fresh login now (in
 * room it has, else in place of an idle connection, else of the first one
 * a client gives back); when that login's parameters differ from the
 * pool's previous login's, the pool's older connections are retired (idle
 * ones closed, busy ones when released), else they count as current.
 * Costs one login per pool per RELOAD; closes nothing a client is using.
 * Until the fresh login is done, new clients get the defaults known before;
 * a group with no connection in this worker greets its next client from a
 * login of its own (the process-wide greeting is forgotten). */
void database_refresh_defaults(struct database *db);
/* Every client of db (waiting or logged in) is told `message` with SQLSTATE
 * 57P01 (admin_shutdown) and closed, then every server connection of its
 * pools is closed with `why` (KILL, the end of a shutdown). */
void database_close_all(struct database *db, const char *message, const char *why);
/* Forgets draining replicas that have no connection left. */
void database_reap(void);
void database_free_all(void);

/* One SHOW REPLICAS row (docs/admin.md): a (database, resolved address).  The
 * strings point into pgfleet's state and are valid during the callback. */
struct replica_row {
	const char *database;
	const char *host; /* the name it was resolved from */
	char addr[256];   /* address without port, or the socket directory */
	int port;
	const char *role;  /* primary | standby | unknown */
	const char *state; /* new | up | down | banned | draining */
	double lag_s;
	int server_conns, active;
	uint32_t timeline;  /* 0 = not known */
	bool write_primary; /* replica_is_write_primary() */
	uint64_t xacts, queries, avg_xact_us;
	double last_check;     /* wall clock, seconds since the epoch; 0 = never */
	char last_check_str[32]; /* "2026-11-23 10:00:00 UTC", "" = never */
	const char *last_error;  /* "" when none */
};
/* Calls fn once per (database, replica), databases in creation order. */
void database_foreach_replica_row(void (*fn)(const struct replica_row *row, void *arg),
				  void *arg);

#endif
