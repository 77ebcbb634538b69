/*
 * signals.c: the process's signals as events on worker 0's loop
 * (signals.h): shutdown.c drains, reload.c reloads.
 */
#include "signals.h"

#include <event2/event.h>
#include <signal.h>

#include "log.h"
#include "reload.h"
#include "runtime.h"
#include "shutdown.h"

static struct event *ev_signals[3];

static void on_signal(evutil_socket_t sig, short what, void *arg)
{
	if (sig == SIGHUP) {
		log_info("SIGHUP: reloading configuration and re-resolving hosts", NULL);
		reload_all_workers();
		return;
	}
	if (fleet.shutting_down) {
		log_warn("second signal: exiting now", NULL);
		shutdown_exit_now();
		return;
	}
	shutdown_request(sig == SIGTERM ? "SIGTERM" : "SIGINT");
}

void signals_start(void)
{
	int sigs[3] = {SIGTERM, SIGINT, SIGHUP};
	for (int i = 0; i < 3; i++) {
		ev_signals[i] = evsignal_new(fleet.base, sigs[i], on_signal, NULL);
		event_add(ev_signals[i], NULL);
	}
}

void signals_stop(void)
{
	for (int i = 0; i < 3; i++) {
		if (ev_signals[i])
			event_free(ev_signals[i]);
		ev_signals[i] = NULL;
	}
}
