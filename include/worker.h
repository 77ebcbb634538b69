/*
 * worker.h: workers = N.  Each worker is a thread running the whole
 * single-loop machinery (its own fleet, pools, DNS, health checks,
 * listener); worker 0 is the main thread and owns signals and HTTP.  This
 * module starts and joins the threads; they talk through mailbox.h.
 * Nothing here runs when workers = 1.
 */
#ifndef PGFLEET_WORKER_H
#define PGFLEET_WORKER_H

#include <stdbool.h>

#include "mailbox.h"

/* Starts the other workers' threads (mailbox_setup done), each running
 * run(index) which sets up and runs a loop and returns its exit status.
 * Waits until each worker says it is listening (or failed: false). */
bool worker_start(int (*run)(int index));
/* A worker's set-up ended: ok or not (worker_start returns when all have). */
void worker_started(bool ok);
/* Waits for every other worker's thread (after worker 0's loop ended). */
void worker_join_all(void);

#endif
