/*
 * reload.h: applying a new configuration to the running process (RELOAD,
 * SIGHUP) and settings changed one at a time (the admin console's SET).
 */
#ifndef PGFLEET_RELOAD_H
#define PGFLEET_RELOAD_H

#include <stdbool.h>
#include <stddef.h>

/*
 * Re-reads the configuration file (or the environment when pgfleet started
 * without one).  A configuration with errors is refused: each error is
 * logged, the old one stays, and `err` (when given) says how many there
 * were.  Otherwise the new one takes effect without dropping clients.
 */
bool fleet_reload(char *err, size_t errlen);
/* Can `key` change while pgfleet runs (SET, RELOAD)?  The others need a
 * restart: listening sockets, TLS contexts, the resolver, the log format. */
bool fleet_setting_changeable(const char *key);
/* After SET changed a setting: pool sizes and modes follow. */
void fleet_settings_changed(void);

#endif
