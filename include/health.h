/*
 * health.h: a libpq check of every replica every health_check_period,
 * driven by the event loop (never a blocking libpq call).  A check says
 * whether the replica answers, its role (pg_is_in_recovery()) and, on a
 * standby, its replay lag.  Health (new/up/down/banned) and role are kept
 * apart, HAProxy style: a failure makes a replica down, HEALTH_FALL failures
 * in a row ban it for ban_time, one passing check brings it back up.
 */
#ifndef PGFLEET_HEALTH_H
#define PGFLEET_HEALTH_H

#include <stdbool.h>

#include "database.h"

/* Failures in a row that turn down into banned. */
#define HEALTH_FALL 3

/* Are checks running (health_check_period > 0)?  Without them a new replica
 * takes traffic at once and the first login is its check. */
bool health_enabled(void);
/* A replica appeared (or came back to DNS): check it at the next loop pass. */
void health_replica_added(struct replica *r);
/* Check r now, unless a check is already running. */
void health_check_now(struct replica *r);
/* A replica is forgotten: its check state and connection go with it. */
void health_replica_removed(struct replica *r);
/* Once a second: restarts checks that are not scheduled (health_check_period
 * turned on by SET or RELOAD). */
void health_janitor(void);

/*
 * What a finished check does to r's health and role (HAProxy-style
 * hysteresis), apart from the libpq connection that ran it, so the state
 * machine can be tested without a server.  A failure: `why` becomes
 * last_error, an up or new replica goes down (retry_at = now +
 * server_login_retry), the HEALTH_FALL-th failure in a row bans it
 * (retry_at = now + ban_time); a banned one stays banned.  An answer: the
 * role from pg_is_in_recovery() and the lag are taken whatever the health,
 * the failure count is reset, a new or down replica comes up, a banned one
 * only once ban_time has passed.  A primary's timeline (0 = unknown) is
 * kept and may move the database's write primary
 * (database_update_write_primary).  A draining replica keeps its state and
 * role.  The caller kicks the database's queues.
 * Must not: touch the check's connection or timers.
 */
void health_note_failure(struct replica *r, const char *why);
void health_note_answer(struct replica *r, bool in_recovery, double lag_s, uint32_t timeline);

/* The above as database.c asks for them (database_set_health, wired at
 * start-up). */
extern const struct database_health health_for_databases;

#endif
