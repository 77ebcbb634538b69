/*
 * main.c: command line, start-up order, signals and the shutdown order.
 *
 * Start-up: configuration (file + environment), logging, the event loop,
 * DNS, the configured databases, then the listeners and the HTTP endpoint.
 * SIGTERM/SIGINT stop accepting (/readyz turns 503), close idle clients with
 * 57P01 and let open transactions finish (up to shutdown_timeout); a second
 * one exits at once.  SIGHUP reloads the configuration and
 * re-resolves every host.
 */
#include <errno.h>
#include <getopt.h>
#include <openssl/crypto.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "admin.h"
#include "auth.h"
#include "batch.h"
#include "cancel.h"
#include "client.h"
#include "config.h"
#include "database.h"
#include "discovery.h"
#include "http.h"
#include "listener.h"
#include "log.h"
#include "pool.h"
#include "reload.h"
#include "runtime.h"
#include "server.h"
#include "tls.h"
#include "version.h"
#include "wiring.h"
#include "worker.h"

extern char **environ;

static struct event *ev_signals[3];
static THREAD_LOCAL struct event *ev_drain;
static THREAD_LOCAL double drain_deadline;
static int exit_code;
static const char *config_path; /* the command line's, for every worker */
/* workers = N, worker 0 only: its own drain is over / other loops still running. */
static bool self_done;
static int others_running;

static void usage(FILE *f)
{
	fprintf(f,
		"pgfleet %s: a replica-aware PostgreSQL connection pooler\n"
		"\n"
		"Usage: pgfleet [OPTIONS] [CONFIG_FILE]\n"
		"\n"
		"Without CONFIG_FILE the configuration comes from the environment\n"
		"(DB_HOST, DB_USER, DB_PASSWORD, PGFLEET_<SETTING>, ...).\n"
		"\n"
		"Options:\n"
		"  -t, --check     validate the configuration and exit (0 valid, 1 not)\n"
		"  -v, --verbose   more logging (repeat for more)\n"
		"  -q, --quiet     log warnings and errors only\n"
		"  -d, --daemon    accepted for PgBouncer compatibility; runs in the foreground\n"
		"  -V, --version   print the version and exit\n"
		"  -h, --help      print this help and exit\n",
		PGFLEET_VERSION);
}

static void report_to_stderr(void *arg, const char *line)
{
	int *count = arg;
	(*count)++;
	fprintf(stderr, "%s\n", line);
}

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

static void on_message(const struct worker_msg *m)
{
	switch (m->kind) {
	case WMSG_RELOAD:
		fleet_reload(NULL, 0);
		discovery_refresh();
		break;
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

static void on_signal(evutil_socket_t sig, short what, void *arg)
{
	if (sig == SIGHUP) {
		/* Reload (a bad file is refused with its errors logged, the old
		 * configuration kept), then re-resolve every host. */
		log_info("SIGHUP: reloading configuration and re-resolving hosts", NULL);
		worker_broadcast(WMSG_RELOAD);
		fleet_reload(NULL, 0);
		discovery_refresh();
		return;
	}
	if (fleet.shutting_down) {
		log_warn("second signal: exiting now", NULL);
		worker_broadcast(WMSG_EXIT_NOW);
		event_base_loopbreak(fleet.base);
		return;
	}
	fleet_shutdown(sig == SIGTERM ? "SIGTERM" : "SIGINT");
}

void fleet_shutdown(const char *why)
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
static void close_everything(void)
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
}

/* The loop of this worker, the configuration already in fleet.cfg: DNS,
 * the configured databases, the HTTP endpoint (worker 0), the listeners. */
static bool loop_setup(void)
{
	if (!fleet_runtime_init() || !discovery_init() || !mailbox_attach_loop()) {
		log_error("start-up failed", "stage", "event loop or DNS", NULL);
		return false;
	}
	(void)batch_init(fleet.cfg.io_uring); /* off: every socket call is made at once */
	/* Named databases resolve now; "*" entries when a client names one. */
	for (size_t i = 0; i < fleet.cfg.n_dbs; i++) {
		const struct db_config *d = &fleet.cfg.dbs[i];
		if (strcmp(d->name, "*") != 0)
			(void)database_lookup(d->name);
		else if (d->host && d->host[0] != '/')
			discovery_watch(d->host);
	}
	/* HTTP first: once the client port accepts, start-up has succeeded
	 * (a busy http_listen must fail before anyone can connect). */
	if (worker_index() == 0 && !http_start())
		return false;
	return listener_start();
}

static void loop_teardown(void)
{
	/* First: what other workers asked of this one is answered or refused. */
	mailbox_detach_loop();
	fleet.shutting_down = true;
	listener_stop();
	if (worker_index() == 0)
		http_stop();
	admin_close_all();
	close_everything();
	cancel_shutdown();
	database_free_all();
	discovery_shutdown();
	if (ev_drain)
		event_free(ev_drain);
	ev_drain = NULL;
	batch_done();
	fleet_runtime_done();
	auth_cache_clear();
	iobuf_free_all();
}

static void report_to_log(void *arg, const char *line)
{
	log_error("config error", "detail", line, NULL);
}

/* Workers 1..N-1: their own copy of the configuration and their own loop. */
static int worker_run(int index)
{
	if (!config_load(&fleet.cfg, config_path, environ, report_to_log, NULL) ||
	    !loop_setup()) {
		worker_started(false);
		return 2;
	}
	worker_started(true);
	int rc = fleet_run_loop() < 0 ? 2 : 0;
	/* Worker 0 ends its loop once every worker has said so. */
	(void)worker_post(0, WMSG_DONE, 0, 0, NULL, NULL);
	loop_teardown();
	config_free(&fleet.cfg);
	return rc;
}

int main(int argc, char **argv)
{
	static const struct option longopts[] = {
		{"check", no_argument, NULL, 't'},   {"verbose", no_argument, NULL, 'v'},
		{"quiet", no_argument, NULL, 'q'},   {"daemon", no_argument, NULL, 'd'},
		{"version", no_argument, NULL, 'V'}, {"help", no_argument, NULL, 'h'},
		{NULL, 0, NULL, 0},
	};
	/* Before anything else touches OpenSSL: no OPENSSL_cleanup at exit.  A
	 * health check's login thread (health.c) may still be inside libpq's
	 * PBKDF2 when pgfleet exits, and must not find OpenSSL torn down under
	 * it; the process ends right after, so nothing is lost. */
	OPENSSL_init_crypto(OPENSSL_INIT_NO_ATEXIT, NULL);
	bool check = false;
	int verbosity = 0, opt;
	while ((opt = getopt_long(argc, argv, "tvqdVh", longopts, NULL)) != -1) {
		switch (opt) {
		case 't':
			check = true;
			break;
		case 'v':
			verbosity++;
			break;
		case 'q':
			verbosity = -1;
			break;
		case 'd':
			break;
		case 'V':
			printf("pgfleet %s\n", PGFLEET_VERSION);
			return 0;
		case 'h':
			usage(stdout);
			return 0;
		default:
			usage(stderr);
			return 1;
		}
	}
	if (argc - optind > 1) {
		fprintf(stderr, "pgfleet: too many arguments (one CONFIG_FILE at most)\n");
		return 1;
	}
	const char *path = optind < argc ? argv[optind] : NULL;
	config_path = path;

	int problems = 0;
	if (!config_load(&fleet.cfg, path, environ, report_to_stderr, &problems)) {
		if (!problems)
			fprintf(stderr, "pgfleet: invalid configuration\n");
		return 1;
	}
	if (check) {
		printf("configuration is valid: %s\n", path ? path : "(environment)");
		config_free(&fleet.cfg);
		return 0;
	}
	log_setup(verbosity, fleet.cfg.log_format == LOGFMT_JSON);
	signal(SIGPIPE, SIG_IGN);
	/* Certificates and keys are read once, here: a bad file stops start-up. */
	if (!tls_init(&fleet.cfg)) {
		config_free(&fleet.cfg);
		return 2;
	}

	wiring_connect();
	for (int k = WMSG_RELOAD; k <= WMSG_DONE; k++)
		mailbox_on(k, on_message);
	discovery_library_init();
	if (!mailbox_setup((int)fleet.cfg.workers) || !loop_setup())
		return 2;
	others_running = worker_count() - 1;
	if (others_running && !worker_start(worker_run)) {
		log_error("start-up failed", "stage", "workers", NULL);
		exit(2);
	}
	int sigs[3] = {SIGTERM, SIGINT, SIGHUP};
	for (int i = 0; i < 3; i++) {
		ev_signals[i] = evsignal_new(fleet.base, sigs[i], on_signal, NULL);
		event_add(ev_signals[i], NULL);
	}
	log_info("pgfleet started", "version", PGFLEET_VERSION, "config",
		 path ? path : "environment", NULL);

	if (fleet_run_loop() < 0) {
		log_error("event loop failed", NULL);
		exit_code = 2;
	}

	for (int i = 0; i < 3; i++)
		event_free(ev_signals[i]);
	/* Whatever ended this loop, the others end theirs (already done after a
	 * drain), before what they share goes away. */
	worker_broadcast(WMSG_EXIT_NOW);
	worker_join_all();
	loop_teardown();
	mailbox_done();
	pool_shared_free();
	discovery_library_done();
	auth_cache_clear();
	tls_done();
	config_free(&fleet.cfg);
	log_info("pgfleet stopped", NULL);
	return exit_code;
}
