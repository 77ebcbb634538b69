/*
 * http.h: the HTTP endpoint on http_listen (libevent's evhttp, on the main
 * loop): GET /metrics (Prometheus text format), /healthz and /readyz.
 */
#ifndef PGFLEET_HTTP_H
#define PGFLEET_HTTP_H

#include <stdbool.h>

/* Starts listening on http_listen; true without doing anything when it is
 * empty (off).  False, with the reason logged, when it cannot listen. */
bool http_start(void) __attribute__((warn_unused_result));
/* Closes the listener and every HTTP connection. */
void http_stop(void);

#endif
