/*
 * shutdown.c: the drain and the end of every loop (shutdown.h).
 *
 * A shutdown stops accepting (/readyz turns 503), closes idle clients with
 * 57P01 and lets open transactions finish (up to shutdown_timeout); client.c
 * closes each client as its transaction ends.  Every worker drains its own
 * loop; worker 0 ends its loop last.
 */
#include "shutdown.h"

#include <event2/event.h>
#include <stdbool.h>

#include "client.h"
#include "database.h"
#include "iobuf.h"
#include "listener.h"
#include "log.h"
#include "pool.h"
#include "runtime.h"
#include "server.h"

static THREAD_LOCAL struct event *ev_drain;
static THREAD_LOCAL double drain_deadline;
/* workers = N, worker 0 only: its own drain is over / other loops still running. */
static bool self_done;
static int others_running;

/* Nothing left mid-transaction: the drain is over. */
static bool drained(void)
{
	struct list *dit, *git, *pit;
	list_for_each(dit, &fleet.databases) {
		struct database *db = container_of(dit, struct database, node);
		list_for_each(git, &db->groups) {
			struct pool_group *g = container_of(git, struct pool_group, node);
			if (g->waiting.count)
				return false;
			list_for_each(pit, &g->pools) {
				struct pool *p = container_of(pit, struct pool, group_node);
				struct list *sit;
				/* Busy: a reply is owed or a transaction is open.  A client
				 * merely holding a connection (Flush, no Sync yet) is not. */
				list_for_each(sit, &p->active.head) {
					struct server *s = container_of(sit, struct server, node);
					if (s->q_len || s->xact_status != 'I')
						return false;
				}
			}
		}
	}
	return true;
}

/* No transaction open and nothing running or owed: closing loses nothing. */
static bool idle_for_drain(const struct client *c)
{
	const struct server *s = c->link;
	if (c->io.pkt_remain)
		return false; /* half of a message has reached a server */
	if (!s)
		return true;
	return s->xact_status == 'I' && s->q_len == 0 && s->expect_rfq <= 0 &&
	       !s->release_pending && s->io.pkt_remain == 0 && (!s->io.in || iobuf_empty(s->io.in));
}

/* Draining: every client between transactions is told and closed now; the
 * others are closed by client.c as their transaction ends.  Waiting clients
 * have no transaction open yet: theirs never starts. */
static void drain_idle_clients(void)
{
	struct list *dit, *git, *it, *tmp;
	list_for_each(dit, &fleet.databases) {
		struct database *db = container_of(dit, struct database, node);
		list_for_each(git, &db->groups) {
			struct pool_group *g = container_of(git, struct pool_group, node);
			list_for_each_safe(it, tmp, &g->waiting.head) {
				client_close(container_of(it, struct client, node), "57P01",
					     FLEET_SHUTDOWN_MESSAGE);
			}
			list_for_each_safe(it, tmp, &g->active.head) {
				struct client *c = container_of(it, struct client, node);
				if (idle_for_drain(c))
					client_close(c, "57P01", FLEET_SHUTDOWN_MESSAGE);
			}
		}
	}
}

/* This loop's drain is over.  Worker 0 keeps its loop (HTTP, signals)
 * until every other worker's has ended too. */
static void loop_finished(void)
{
	if (worker_index() != 0 || others_running == 0) {
		event_base_loopbreak(fleet.base);
		return;
	}
	self_done = true;
	if (ev_drain)
		event_del(ev_drain);
}

static void on_drain_tick(evutil_socket_t fd, short what, void *arg)
{
	drain_idle_clients();
	if (drained()) {
		log_info("drained: no transaction left open", NULL);
		loop_finished();
	} else if (fleet_now() >= drain_deadline) {
		log_warn("shutdown_timeout reached: closing open transactions", NULL);
		loop_finished();
	}
}

static void shutdown_local(const char *why);

void shutdown_wait_for(int others)
{
	others_running = others;
}

void shutdown_on_message(const struct worker_msg *m)
{
	switch (m->kind) {
	case WMSG_SHUTDOWN:
		shutdown_local("another worker shut down");
		break;
	case WMSG_EXIT_NOW:
		event_base_loopbreak(fleet.base);
		break;
	case WMSG_DONE:
		if (--others_running == 0 && self_done)
			event_base_loopbreak(fleet.base);
		break;
	default:
		break;
	}
}

void shutdown_exit_now(void)
{
	worker_broadcast(WMSG_EXIT_NOW);
	event_base_loopbreak(fleet.base);
}

void shutdown_request(const char *why)
{
	if (fleet.shutting_down)
		return;
	/* Every worker drains (SIGTERM lands on worker 0, admin SHUTDOWN on
	 * any). */
	worker_broadcast(WMSG_SHUTDOWN);
	shutdown_local(why);
}

static void shutdown_local(const char *why)
{
	if (fleet.shutting_down)
		return;
	log_info("shutting down", "reason", why, NULL);
	/* From here /readyz answers 503 "draining" (the HTTP endpoint stays up),
	 * new logins are refused, and client.c closes each client as its
	 * transaction ends. */
	fleet.shutting_down = true;
	listener_stop();
	drain_deadline = fleet_now() + fleet.cfg.shutdown_timeout;
	struct timeval tick = {0, 100000};
	ev_drain = event_new(fleet.base, -1, EV_PERSIST, on_drain_tick, NULL);
	event_add(ev_drain, &tick);
	/* The first tick (idle clients closed) runs at the next loop pass, not
	 * under the caller: admin SHUTDOWN calls this from a client's callback. */
	event_active(ev_drain, EV_TIMEOUT, 0);
}

/* Every client still connected is told why the connection ends. */
void shutdown_close_all(void)
{
	struct list *it, *tmp, *dit;
	list_for_each_safe(it, tmp, &fleet.login_clients.head) {
		client_close(container_of(it, struct client, node), "57P01",
			     FLEET_SHUTDOWN_MESSAGE);
	}
	list_for_each(dit, &fleet.databases) {
		database_close_all(container_of(dit, struct database, node), FLEET_SHUTDOWN_MESSAGE,
				   "pgfleet shutdown");
	}
	client_free_list();
	server_free_list();
	if (ev_drain)
		event_free(ev_drain);
	ev_drain = NULL;
}
