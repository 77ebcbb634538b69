/*
 * worker.c: the threads and mailboxes of workers = N.
 *
 * Worker 0 is the main thread; workers 1..N-1 are threads that each load
 * the configuration and run the same single-loop machinery.  A mailbox is a
 * mutex-protected FIFO of messages and an eventfd: posting appends and
 * writes the eventfd; the owner's loop wakes, takes the whole queue under
 * the lock and handles it outside it.  Messages are allocated per post:
 * they carry control traffic (signals, cancels, admin commands, scrapes),
 * never a client's packets.
 *
 * Must not: touch another worker's loop state: a message is handled by
 * the worker it was posted to.
 */
#include "worker.h"

#include <errno.h>
#include <pthread.h>
#include <signal.h>
#include <stdlib.h>
#include <string.h>
#include <sys/eventfd.h>
#include <unistd.h>

#include "cancel.h"
#include "log.h"
#include "pool.h"
#include "runtime.h"

struct mailbox {
	pthread_mutex_t lock;
	struct worker_msg *head, *tail;
	int efd;
	bool closed;      /* the owner's loop has ended: posts are refused */
	struct event *ev; /* in the owner's base */
};

static struct mailbox boxes[WORKER_MAX];
static int n_workers = 1;
static THREAD_LOCAL int my_index;
static pthread_t threads[WORKER_MAX];
static atomic_int clients;

static pthread_mutex_t start_lock = PTHREAD_MUTEX_INITIALIZER;
static pthread_cond_t start_cond = PTHREAD_COND_INITIALIZER;
static int n_started, n_failed;

struct start_arg {
	int index;
	int (*run)(int index);
};

int worker_count(void)
{
	return n_workers;
}

int worker_index(void)
{
	return my_index;
}

bool worker_setup(int n)
{
	n_workers = n < 1 ? 1 : n > WORKER_MAX ? WORKER_MAX : n;
	if (n_workers == 1)
		return true;
	for (int i = 0; i < n_workers; i++) {
		pthread_mutex_init(&boxes[i].lock, NULL);
		boxes[i].efd = eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
		if (boxes[i].efd < 0) {
			log_error("eventfd failed", "error", strerror(errno), NULL);
			return false;
		}
	}
	return true;
}

static void handle(struct worker_msg *m)
{
	switch (m->kind) {
	case WMSG_CANCEL:
		cancel_handle_remote(m->u1, m->u2);
		break;
	case WMSG_POOL_KICK:
		pool_on_kick();
		break;
	case WMSG_CALL:
		m->fn(m->arg);
		break;
	default:
		fleet_on_message(m);
		break;
	}
}

static struct worker_msg *take_all(struct mailbox *b)
{
	pthread_mutex_lock(&b->lock);
	struct worker_msg *m = b->head;
	b->head = b->tail = NULL;
	pthread_mutex_unlock(&b->lock);
	return m;
}

static void on_mailbox(evutil_socket_t fd, short what, void *arg)
{
	struct mailbox *b = arg;
	uint64_t n;
	ssize_t r = read(b->efd, &n, sizeof(n));
	(void)r;
	struct worker_msg *m = take_all(b);
	while (m) {
		struct worker_msg *next = m->next;
		handle(m);
		free(m);
		m = next;
	}
}

bool worker_attach_loop(void)
{
	if (n_workers == 1)
		return true;
	struct mailbox *b = &boxes[my_index];
	b->ev = event_new(fleet.base, b->efd, EV_READ | EV_PERSIST, on_mailbox, b);
	return b->ev && event_add(b->ev, NULL) == 0;
}

void worker_detach_loop(void)
{
	if (n_workers == 1)
		return;
	struct mailbox *b = &boxes[my_index];
	if (b->ev)
		event_free(b->ev);
	b->ev = NULL;
	/* From here a post fails, so its sender does not wait for an answer.
	 * What is already queued is still handled (an admin command, a scrape:
	 * their senders wait for the answer); the loop state is still whole. */
	pthread_mutex_lock(&b->lock);
	b->closed = true;
	pthread_mutex_unlock(&b->lock);
	struct worker_msg *m = take_all(b);
	while (m) {
		struct worker_msg *next = m->next;
		if (m->kind != WMSG_POOL_KICK)
			handle(m);
		free(m);
		m = next;
	}
}

static void *thread_main(void *p)
{
	struct start_arg a = *(struct start_arg *)p;
	free(p);
	my_index = a.index;
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
	for (int i = 1; i < n_workers; i++) {
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
	bool ok = n_failed == 0 && created == n_workers - 1;
	pthread_mutex_unlock(&start_lock);
	if (created < n_workers - 1)
		n_workers = created + 1; /* only those running are posted to */
	return ok;
}

void worker_join_all(void)
{
	for (int i = 1; i < n_workers; i++)
		pthread_join(threads[i], NULL);
}

bool worker_post(int to, enum worker_msg_kind kind, uint32_t u1, uint32_t u2, void (*fn)(void *arg),
                 void *arg)
{
	if (to < 0 || to >= n_workers || n_workers == 1)
		return false;
	struct worker_msg *m = calloc(1, sizeof(*m));
	if (!m)
		return false;
	m->kind = kind;
	m->from = my_index;
	m->u1 = u1;
	m->u2 = u2;
	m->fn = fn;
	m->arg = arg;
	struct mailbox *b = &boxes[to];
	pthread_mutex_lock(&b->lock);
	if (b->closed) {
		pthread_mutex_unlock(&b->lock);
		free(m);
		return false;
	}
	if (b->tail)
		b->tail->next = m;
	else
		b->head = m;
	b->tail = m;
	pthread_mutex_unlock(&b->lock);
	uint64_t one = 1;
	ssize_t r = write(b->efd, &one, sizeof(one));
	(void)r;
	return true;
}

void worker_broadcast(enum worker_msg_kind kind)
{
	for (int i = 0; i < n_workers; i++)
		if (i != my_index)
			(void)worker_post(i, kind, 0, 0, NULL, NULL);
}

int worker_clients_add(int delta)
{
	return atomic_fetch_add(&clients, delta) + delta;
}

void worker_done(void)
{
	if (n_workers == 1)
		return;
	for (int i = 0; i < n_workers; i++) {
		struct worker_msg *m = take_all(&boxes[i]);
		while (m) {
			struct worker_msg *next = m->next;
			free(m);
			m = next;
		}
		close(boxes[i].efd);
		pthread_mutex_destroy(&boxes[i].lock);
	}
}
