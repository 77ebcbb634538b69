/*
 * reload.h: applying a new configuration to the running process (RELOAD,
 * SIGHUP) and settings changed one at a time (the admin console's SET).
 * The admin console asks through runtime.h (fleet_reload,
 * fleet_settings_changed), which wiring.c points here.
 */
#ifndef PGFLEET_RELOAD_H
#define PGFLEET_RELOAD_H

#include <stdbool.h>
#include <stddef.h>

#include "mailbox.h"

/* fleet_reload's work on this worker (runtime.h states the contract). */
bool reload_config(char *err, size_t errlen);
/* fleet_settings_changed's work on this worker: pool sizes and modes follow. */
void reload_settings_changed(void);
/* SIGHUP: every worker reloads and re-resolves every host. */
void reload_all_workers(void);
/* WMSG_RELOAD from the worker that took the SIGHUP. */
void reload_on_message(const struct worker_msg *m);

#endif
