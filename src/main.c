/*
 * main.c: the command line, and the start-up and teardown order of each
 * worker's loop.  What each part does lives in its module: wiring.c connects
 * the callbacks that go up the layers, shutdown.c drains, signals.c turns
 * SIGTERM/SIGINT/SIGHUP into a drain or a reload, reload.c applies a new
 * configuration, worker.c starts the other workers' threads.
 */
#include <errno.h>
#include <fcntl.h>
#include <getopt.h>
#include <openssl/crypto.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "admin.h"
#include "auth.h"
#include "authquery.h"
#include "batch.h"
#include "cancel.h"
#include "config.h"
#include "confwatch.h"
#include "database.h"
#include "discovery.h"
#include "http.h"
#include "iobuf.h"
#include "listener.h"
#include "log.h"
#include "peers.h"
#include "pool.h"
#include "runtime.h"
#include "shutdown.h"
#include "signals.h"
#include "sqlroute.h"
#include "tls.h"
#include "version.h"
#include "wiring.h"
#include "worker.h"

extern char **environ;

static int exit_code;
static const char *config_path; /* the command line's, for every worker */

/* pidfile (PgBouncer's): written once the configuration is good, removed
 * at exit; a file naming a live process stops start-up, a stale one is
 * replaced. */
static char *pidfile_path;

static bool pidfile_write(const char *path)
{
	char buf[32];
	if (!*path)
		return true;
	for (int attempt = 0; attempt < 2; attempt++) {
		int fd = open(path, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0644);
		if (fd >= 0) {
			int n = snprintf(buf, sizeof(buf), "%ld\n", (long)getpid());
			bool ok = write(fd, buf, (size_t)n) == n;
			if (close(fd) != 0 || !ok) {
				log_error("cannot write pidfile", "path", path, "error",
					  strerror(errno), NULL);
				unlink(path);
				return false;
			}
			pidfile_path = strdup(path);
			return pidfile_path != NULL;
		}
		if (errno != EEXIST)
			break;
		/* there already: another pgfleet (or PgBouncer) still running? */
		FILE *f = fopen(path, "r");
		long pid = 0;
		if (f) {
			if (fscanf(f, "%ld", &pid) != 1)
				pid = 0;
			fclose(f);
		}
		if (pid > 0 && (kill((pid_t)pid, 0) == 0 || errno == EPERM)) {
			snprintf(buf, sizeof(buf), "%ld", pid);
			log_error("pidfile names a running process", "path", path, "pid", buf, NULL);
			return false;
		}
		unlink(path); /* stale: its process is gone */
	}
	log_error("cannot write pidfile", "path", path, "error", strerror(errno), NULL);
	return false;
}

static void pidfile_remove(void)
{
	if (pidfile_path)
		unlink(pidfile_path);
	free(pidfile_path);
	pidfile_path = NULL;
}

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
		"  -d, --daemon    refused: pgfleet runs in the foreground (a supervisor runs it)\n"
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
	if (worker_index() == 0 && !peers_start())
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
	shutdown_close_all();
	authquery_shutdown();
	if (worker_index() == 0)
		peers_stop();
	cancel_shutdown();
	database_free_all();
	discovery_shutdown();
	batch_done();
	fleet_runtime_done();
	auth_cache_clear();
	sqlroute_cache_free(); /* this loop's thread's classifications */
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
			/* PgBouncer forks into the background; a script that relies
			 * on that would hang on pgfleet: say so rather than pretend. */
			fprintf(stderr, "pgfleet: -d/--daemon is not supported: pgfleet runs in the "
					"foreground; start it from a supervisor (systemd, Kubernetes)\n");
			return 1;
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
		for (size_t i = 0; i < fleet.cfg.n_warnings; i++)
			fprintf(stderr, "warning: %s\n", fleet.cfg.warnings[i]);
		printf("configuration is valid: %s\n", path ? path : "(environment)");
		config_free(&fleet.cfg);
		return 0;
	}
	log_setup(verbosity, fleet.cfg.log_format == LOGFMT_JSON);
	log_set_verbose(fleet.cfg.verbose);
	{
		/* The loader opened it already: this fails only if the file
		 * went away since. */
		char err[512];
		if (!log_open_file(fleet.cfg.logfile, err, sizeof(err))) {
			fprintf(stderr, "pgfleet: %s: key 'logfile': %s\n",
				path ? path : "environment", err);
			config_free(&fleet.cfg);
			return 1;
		}
	}
	/* Settings accepted but not implemented (config.h, CONFIG_UNIMPLEMENTED). */
	for (size_t i = 0; i < fleet.cfg.n_warnings; i++)
		log_warn("config warning", "detail", fleet.cfg.warnings[i], NULL);
	signal(SIGPIPE, SIG_IGN);
	/* Certificates and keys are read once, here: a bad file stops start-up. */
	if (!tls_init(&fleet.cfg)) {
		config_free(&fleet.cfg);
		return 2;
	}
	if (!pidfile_write(fleet.cfg.pidfile)) {
		tls_done();
		config_free(&fleet.cfg);
		return 2;
	}
	atexit(pidfile_remove); /* a later start-up failure exits too */

	wiring_connect();
	discovery_library_init();
	if (!peers_setup())
		return 2;
	if (!mailbox_setup((int)fleet.cfg.workers) || !loop_setup())
		return 2;
	int others = worker_count() - 1;
	shutdown_wait_for(others);
	if (others && !worker_start(worker_run)) {
		log_error("start-up failed", "stage", "workers", NULL);
		exit(2);
	}
	signals_start();
	confwatch_start();
	log_info("pgfleet started", "version", PGFLEET_VERSION, "config",
		 path ? path : "environment", NULL);

	if (fleet_run_loop() < 0) {
		log_error("event loop failed", NULL);
		exit_code = 2;
	}

	confwatch_stop();
	signals_stop();
	/* Whatever ended this loop, the others end theirs (already done after a
	 * drain), before what they share goes away. */
	worker_broadcast(WMSG_EXIT_NOW);
	worker_join_all();
	loop_teardown();
	mailbox_done();
	pool_shared_free();
	discovery_library_done();
	auth_cache_clear();
	auth_passthrough_clear();
	authquery_cache_clear();
	tls_done();
	pidfile_remove();
	config_free(&fleet.cfg);
	log_info("pgfleet stopped", NULL);
	return exit_code;
}
