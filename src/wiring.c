/*
 * wiring.c: every upward callback, connected once (wiring.h).
 *
 * The lower layers never name a higher module: runtime runs the janitors,
 * free lists and per-pass work it was given, the mailbox hands each kind of
 * message to its handler, pool asks the router it was given, database the
 * health checks, discovery tells whoever registered, client hands console
 * clients to the admin console, and the admin console's SHUTDOWN, RELOAD
 * and SET reach shutdown.c and reload.c through runtime.  Reading this file
 * tells everything that calls up, and in which order (the janitors run in
 * the order they are added here).
 */
#include "wiring.h"

#include <stdbool.h>

#include "admin.h"
#include "batch.h"
#include "cancel.h"
#include "client.h"
#include "database.h"
#include "discovery.h"
#include "health.h"
#include "iobuf.h"
#include "listener.h"
#include "mailbox.h"
#include "peers.h"
#include "pool.h"
#include "reload.h"
#include "router.h"
#include "runtime.h"
#include "server.h"
#include "shutdown.h"
#include "stats.h"

static void health_tick(double now)
{
	health_janitor();
}

static void iobuf_tick(double now)
{
	iobuf_trim();
}

static void on_cancel(const struct worker_msg *m)
{
	cancel_handle_remote(m->u1, m->u2);
}

static void on_pool_kick(const struct worker_msg *m)
{
	pool_on_kick();
}

/* The admin console takes the clients that name its databases. */
static const struct client_console admin_console = {
	.is_console = admin_is_console,
	.login_start = admin_login_start,
	.login_trusted = admin_login_trusted,
	.login_done = admin_login_done,
	.process = admin_process,
	.gone = admin_client_gone,
};

void wiring_connect(void)
{
	static bool done;
	if (done)
		return;
	done = true;

	/* The loop's housekeeping (runtime.c), in the order it always ran. */
	fleet_add_pass_hook(batch_run);
	fleet_add_free_hook(client_free_list);
	fleet_add_free_hook(server_free_list);
	fleet_add_janitor(client_janitor);
	fleet_add_janitor(server_janitor);
	fleet_add_janitor(health_tick);
	fleet_add_janitor(pool_janitor);
	fleet_add_janitor(database_reap_auto);
	fleet_add_janitor(stats_tick);
	fleet_add_janitor(iobuf_tick);

	/* Messages from other workers (mailbox.c), by kind. */
	mailbox_on(WMSG_CANCEL, on_cancel);
	mailbox_on(WMSG_POOL_KICK, on_pool_kick);
	mailbox_on(WMSG_RELOAD, reload_on_message);
	mailbox_on(WMSG_SHUTDOWN, shutdown_on_message);
	mailbox_on(WMSG_EXIT_NOW, shutdown_on_message);
	mailbox_on(WMSG_DONE, shutdown_on_message);

	/* Cancels of keys another pgfleet instance handed out (issue 20). */
	cancel_on_foreign(peers_forward_cancel);

	/* Pools: the router's choice of replica. */
	pool_set_router(&router_for_pools);

	/* Databases: their replicas follow DNS answers and health checks. */
	discovery_on_change(database_hosts_changed);
	database_set_health(&health_for_databases);

	/* Clients: the console's, and logins refused at max_client_conn. */
	client_set_console(&admin_console);
	client_on_refusal(listener_note_refusal);

	/* What the admin console asks of the process (runtime.h). */
	fleet_on_shutdown(shutdown_request);
	fleet_on_reload(reload_config);
	fleet_on_settings_changed(reload_settings_changed);
}
