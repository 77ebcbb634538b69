/*
 * mailbox.c: the mailboxes of workers = N (mailbox.h).
 *
 * A mailbox is a mutex-protected FIFO of messages and an eventfd: posting
 * appends and writes the eventfd; the owner's loop wakes, takes the whole
 * queue under the lock and handles it outside it, each kind by the handler
 * registered for it.  Messages are allocated per post: they carry control
 * traffic (signals, cancels, admin commands, scrapes), never a client's
 * packets.
 *
 * Must not: touch another worker's loop state: a message is handled by
 * the worker it was posted to.
 */
#include "mailbox.h"

#include <errno.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>
#include <sys/eventfd.h>
#include <unistd.h>

#include "log.h"
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
static atomic_int clients;
/* Set before any loop runs, read-only after (mailbox_on). */
static void (*handlers[WMSG_KINDS])(const struct worker_msg *m);

int worker_count(void)
{
	return n_workers;
}

int worker_index(void)
{
	return my_index;
}

void mailbox_on(enum worker_msg_kind kind, void (*fn)(const struct worker_msg *m))
{
	if ((unsigned)kind < WMSG_KINDS)
		handlers[kind] = fn;
}

void mailbox_bind_thread(int index)
{
	my_index = index;
}

void mailbox_limit(int n)
{
	if (n >= 1 && n < n_workers)
		n_workers = n;
}

bool mailbox_setup(int n)
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
	if (m->kind == WMSG_CALL)
		m->fn(m->arg);
	else if ((unsigned)m->kind < WMSG_KINDS && handlers[m->kind])
		handlers[m->kind](m);
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

bool mailbox_attach_loop(void)
{
	if (n_workers == 1)
		return true;
	struct mailbox *b = &boxes[my_index];
	b->ev = event_new(fleet.base, b->efd, EV_READ | EV_PERSIST, on_mailbox, b);
	return b->ev && event_add(b->ev, NULL) == 0;
}

void mailbox_detach_loop(void)
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

void mailbox_done(void)
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
