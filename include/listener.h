/*
 * listener.h: the listening sockets (TCP and the optional Unix socket) and
 * the accept loop that hands new sockets to client.c.
 */
#ifndef PGFLEET_LISTENER_H
#define PGFLEET_LISTENER_H

#include <stdbool.h>

bool listener_start(void) __attribute__((warn_unused_result));
/* Stops accepting (graceful shutdown); sockets closed. */
void listener_stop(void);
/* How many sockets are listening now (0 before start and once stopped). */
int listener_count(void);
/* A connection refused past max_client_conn (or out of descriptors): counted
 * and logged at most once a second with the count, never a line each. */
void listener_note_refusal(const char *why);

#endif
