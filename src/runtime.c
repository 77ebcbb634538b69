/*
 * runtime.c: the process-wide loop state and its housekeeping: the free-later
 * event (objects closed inside a callback are freed on the next pass, never
 * under the caller's feet) and the once-a-second janitor for timeouts.
 */
#include "runtime.h"

#include <pthread.h>
#include <signal.h>

#include <stdatomic.h>

#include <openssl/rand.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/time.h>
#include <time.h>

THREAD_LOCAL struct fleet fleet;

/* Process-wide, filled before any loop runs (runtime.h). */
#define HOOKS_MAX 16
struct hooks {
	int n;
	void (*fn[HOOKS_MAX])(void);
};
static struct hooks free_hooks, pass_hooks;
static int n_janitors;
static void (*janitors[HOOKS_MAX])(double now);

static void hooks_add(struct hooks *h, void (*fn)(void))
{
	if (h->n == HOOKS_MAX)
		abort(); /* a wiring mistake, found at the first start */
	h->fn[h->n++] = fn;
}

static void hooks_run(const struct hooks *h)
{
	for (int i = 0; i < h->n; i++)
		h->fn[i]();
}

void fleet_add_janitor(void (*fn)(double now))
{
	if (n_janitors == HOOKS_MAX)
		abort();
	janitors[n_janitors++] = fn;
}

void fleet_add_free_hook(void (*fn)(void))
{
	hooks_add(&free_hooks, fn);
}

void fleet_add_pass_hook(void (*fn)(void))
{
	hooks_add(&pass_hooks, fn);
}

double fleet_now(void)
{
	if (fleet.now_cached > 0)
		return fleet.now_cached;
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	double now = (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
	if (fleet.in_loop)
		fleet.now_cached = now;
	return now;
}

int fleet_run_loop(void)
{
	int rc = 0;
	fleet.in_loop = true;
	while (!event_base_got_break(fleet.base) && !event_base_got_exit(fleet.base)) {
		fleet.now_cached = 0; /* a new pass: read the clock again */
		rc = event_base_loop(fleet.base, EVLOOP_ONCE);
		/* The pass's queued reads and deferred writes (batch.c). */
		hooks_run(&pass_hooks);
		if (rc != 0)
			break; /* -1: failed; 1: no event left to wait for */
	}
	fleet.in_loop = false;
	fleet.now_cached = 0;
	return rc < 0 ? -1 : 0;
}

double fleet_wallclock(void)
{
	struct timeval tv;
	gettimeofday(&tv, NULL);
	return (double)tv.tv_sec + (double)tv.tv_usec / 1e6;
}

uint64_t fleet_next_id(void)
{
	static _Atomic uint64_t last;
	return atomic_fetch_add(&last, 1) + 1;
}

void fleet_random(void *buf, size_t len)
{
	if (RAND_bytes(buf, (int)len) != 1)
		abort(); /* no randomness: keys and nonces would be guessable */
}

/* Bound to what start-up built: listening sockets, TLS contexts, the
 * resolver's channel, the log writer, the users file (read by the loader,
 * so RELOAD re-reads it: SET cannot). */
static const char *const restart_only[] = {
	"listen_addr",		"listen_port",		"unix_socket_dir",    "so_reuseport",
	"workers",		"http_listen",		"client_tls_sslmode", "client_tls_cert_file",
	"client_tls_key_file",	"client_tls_ca_file",	"server_tls_sslmode", "server_tls_ca_file",
	"dns_servers",		"log_format",		"io_uring",		"server_tls_cert_file",
	"server_tls_key_file",	"listen_backlog",	"pidfile",		"client_tls_protocols",
	"client_tls_ciphers",	"client_tls13_ciphers", "client_tls_ecdhcurve", "client_tls_dheparams",
	"server_tls_protocols", "server_tls_ciphers",	"server_tls13_ciphers", "unix_socket_mode",
	"unix_socket_group",
	/* issue 20: the peers' socket, name and signing key (peers.c) */
	"peers", "peer_secret", "peer_port", NULL,
};

bool fleet_setting_needs_restart(const char *key)
{
	for (int i = 0; restart_only[i]; i++)
		if (strcmp(restart_only[i], key) == 0)
			return true;
	return false;
}

bool fleet_setting_changeable(const char *key)
{
	return !fleet_setting_needs_restart(key) && strcmp(key, "auth_file") != 0 &&
	       strcmp(key, "auth_hba_file") != 0 && strcmp(key, "auth_ident_file") != 0;
}

static void (*on_shutdown)(const char *why);
static bool (*on_reload)(char *err, size_t errlen);
static void (*on_settings_changed)(void);

void fleet_on_shutdown(void (*fn)(const char *why))
{
	on_shutdown = fn;
}

void fleet_on_reload(bool (*fn)(char *err, size_t errlen))
{
	on_reload = fn;
}

void fleet_on_settings_changed(void (*fn)(void))
{
	on_settings_changed = fn;
}

void fleet_shutdown(const char *why)
{
	if (on_shutdown)
		on_shutdown(why);
	else
		fleet.shutting_down = true;
}

bool fleet_reload(char *err, size_t errlen)
{
	if (on_reload)
		return on_reload(err, errlen);
	if (err && errlen)
		snprintf(err, errlen, "reload is not available");
	return false;
}

void fleet_settings_changed(void)
{
	if (on_settings_changed)
		on_settings_changed();
}

static void on_free(evutil_socket_t fd, short what, void *arg)
{
	hooks_run(&free_hooks);
}

void fleet_schedule_free(void)
{
	if (fleet.ev_free)
		event_active(fleet.ev_free, EV_TIMEOUT, 0);
}

static void on_janitor(evutil_socket_t fd, short what, void *arg)
{
	double now = fleet_now();
	for (int i = 0; i < n_janitors; i++)
		janitors[i](now);
}

bool fleet_runtime_init(void)
{
	list_init(&fleet.databases);
	statlist_init(&fleet.login_clients);
	statlist_init(&fleet.justfree_clients);
	statlist_init(&fleet.justfree_servers);
	fleet.started = fleet_now();
	fleet.base = event_base_new();
	if (!fleet.base)
		return false;
	fleet.ev_free = event_new(fleet.base, -1, 0, on_free, NULL);
	fleet.ev_janitor = event_new(fleet.base, -1, EV_PERSIST, on_janitor, NULL);
	if (!fleet.ev_free || !fleet.ev_janitor)
		return false;
	struct timeval second = {1, 0};
	event_add(fleet.ev_janitor, &second);
	return true;
}

void fleet_runtime_done(void)
{
	if (fleet.ev_free)
		event_free(fleet.ev_free);
	if (fleet.ev_janitor)
		event_free(fleet.ev_janitor);
	fleet.ev_free = fleet.ev_janitor = NULL;
	if (fleet.base)
		event_base_free(fleet.base);
	fleet.base = NULL;
}

int fleet_spawn_detached(void *(*fn)(void *), void *arg)
{
	pthread_attr_t attr;
	pthread_attr_init(&attr);
	pthread_attr_setdetachstate(&attr, PTHREAD_CREATE_DETACHED);
	sigset_t all, old;
	sigfillset(&all);
	pthread_sigmask(SIG_BLOCK, &all, &old);
	pthread_t t;
	int rc = pthread_create(&t, &attr, fn, arg);
	pthread_sigmask(SIG_SETMASK, &old, NULL);
	pthread_attr_destroy(&attr);
	return rc;
}

static atomic_int peers_live = 1, peers_rank = 0;

void fleet_set_peers(int live, int rank)
{
	if (live < 1)
		live = 1;
	if (rank < 0 || rank >= live)
		rank = 0;
	atomic_store(&peers_rank, rank);
	atomic_store(&peers_live, live);
}

void fleet_peers(int *live, int *rank)
{
	*live = atomic_load(&peers_live);
	*rank = atomic_load(&peers_rank);
	if (*rank >= *live)
		*rank = 0;
}
