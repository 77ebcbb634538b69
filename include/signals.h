/*
 * signals.h: SIGTERM and SIGINT shut down (a second one exits at once),
 * SIGHUP reloads the configuration and re-resolves every host.  Signals are
 * events on worker 0's loop; the other workers' threads block them.
 */
#ifndef PGFLEET_SIGNALS_H
#define PGFLEET_SIGNALS_H

/* Worker 0, once its loop is set up / after it ended. */
void signals_start(void);
void signals_stop(void);

#endif
