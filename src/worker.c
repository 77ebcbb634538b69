/*
 * worker.c: the threads of workers = N (worker.h).
 *
 * Worker 0 is the main thread; workers 1..N-1 are threads that each load
 * the configuration and run the same single-loop machinery, and talk
 * through their mailboxes (mailbox.c).
 */
#include "worker.h"

#include <errno.h>
#include <pthread.h>
#include <signal.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "log.h"

static pthread_t threads[WORKER_MAX];

static pthread_mutex_t start_lock = PTHREAD_MUTEX_INITIALIZER;
static pthread_cond_t start_cond = PTHREAD_COND_INITIALIZER;
static int n_started, n_failed;

struct start_arg {
	int index;
	int (*run)(int index);
};

static void *thread_main(void *p)
{
	struct start_arg a = *(struct start_arg *)p;
	free(p);
	mailbox_bind_thread(a.index);
	intptr_t rc = a.run(a.index);
	return (void *)rc;
}

void worker_started(bool ok)
{
	pthread_mutex_lock(&start_lock);
	n_started++;
	if (!ok)
		n_failed++;
	pthread_cond_broadcast(&start_cond);
	pthread_mutex_unlock(&start_lock);
}

bool worker_start(int (*run)(int index))
{
	/* Signals go to worker 0's loop only: the threads block them all. */
	sigset_t all, old;
	sigfillset(&all);
	pthread_sigmask(SIG_BLOCK, &all, &old);
	int created = 0;
	for (int i = 1; i < worker_count(); i++) {
		struct start_arg *a = malloc(sizeof(*a));
		if (!a)
			break;
		a->index = i;
		a->run = run;
		if (pthread_create(&threads[i], NULL, thread_main, a) != 0) {
			free(a);
			log_error("cannot start a worker thread", "error", strerror(errno), NULL);
			break;
		}
		created++;
	}
	pthread_sigmask(SIG_SETMASK, &old, NULL);
	/* Start-up, before worker 0's loop runs: waiting here blocks no client. */
	pthread_mutex_lock(&start_lock);
	while (n_started < created)
		pthread_cond_wait(&start_cond, &start_lock);
	bool ok = n_failed == 0 && created == worker_count() - 1;
	pthread_mutex_unlock(&start_lock);
	if (created < worker_count() - 1)
		mailbox_limit(created + 1); /* only those running are posted to */
	return ok;
}

void worker_join_all(void)
{
	for (int i = 1; i < worker_count(); i++)
		pthread_join(threads[i], NULL);
}

