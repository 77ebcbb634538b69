/*
 * shutdown.h: stopping pgfleet.  A shutdown (SIGTERM, SIGINT, admin
 * SHUTDOWN) stops accepting (/readyz turns 503), closes idle clients with
 * 57P01 and lets open transactions finish (up to shutdown_timeout), on every
 * worker; a second signal ends every loop at once.  Worker 0 keeps its loop
 * (HTTP, signals) until every other worker's has ended.
 *
 * Must not: free anything under its caller: admin SHUTDOWN asks from a
 * client's callback, so the drain starts at the next loop pass.
 */
#ifndef PGFLEET_SHUTDOWN_H
#define PGFLEET_SHUTDOWN_H

#include "mailbox.h"

/* Every worker drains (runtime.h's fleet_shutdown comes here). */
void shutdown_request(const char *why);
/* Every loop ends now (a second signal). */
void shutdown_exit_now(void);
/* Worker 0, before its loop: how many other workers' loops to wait for. */
void shutdown_wait_for(int others);
/* WMSG_SHUTDOWN, WMSG_EXIT_NOW, WMSG_DONE from other workers. */
void shutdown_on_message(const struct worker_msg *m);
/* This loop's teardown: every client still connected is told why the
 * connection ends, every server connection closed, the drain timer freed. */
void shutdown_close_all(void);

#endif
