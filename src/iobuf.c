/*
 * iobuf.c: the buffer free list and the output queue.  Pure memory handling:
 * no sockets, no protocol.
 */
#include "iobuf.h"
#include "runtime.h"

#include <malloc.h>
#include <stdlib.h>
#include <string.h>

static THREAD_LOCAL struct iobuf *free_list;
static THREAD_LOCAL size_t free_count, used_count;

static void *xmalloc(size_t n)
{
	void *p = malloc(n);
	if (!p)
		abort(); /* out of memory: nothing sensible to do in a proxy */
	return p;
}

struct iobuf *iobuf_get(void)
{
	struct iobuf *b = free_list;
	if (b) {
		free_list = b->next_free;
		free_count--;
	} else {
		b = xmalloc(sizeof(*b) + IOBUF_SIZE);
		b->size = IOBUF_SIZE;
	}
	used_count++;
	b->done = b->parsed = b->recv = 0;
	b->next_free = NULL;
	return b;
}

void iobuf_put(struct iobuf *b)
{
	if (!b)
		return;
	used_count--;
	if (b->size != IOBUF_SIZE) {
		free(b);
		return;
	}
	b->next_free = free_list;
	free_list = b;
	free_count++;
}

void iobuf_trim(void)
{
	/* A burst (a thousand logins at once) leaves many buffers free; keep
	 * what the connections in use might ask for again soon, give the rest
	 * back to the system. */
	size_t keep = 16 + used_count / 8;
	if (free_count <= keep)
		return;
	while (free_count > keep) {
		struct iobuf *b = free_list;
		free_list = b->next_free;
		free_count--;
		free(b);
	}
	malloc_trim(0); /* freed heap pages back to the kernel, not just to malloc */
}

void iobuf_free_all(void)
{
	/* A worker thread's free list dies with the thread: hand it back. */
	while (free_list) {
		struct iobuf *b = free_list;
		free_list = b->next_free;
		free(b);
	}
	free_count = 0;
}

void iobuf_compact(struct iobuf *b)
{
	assert(iobuf_sane(b));
	if (b->done == 0)
		return;
	uint32_t keep = b->recv - b->done;
	if (keep)
		memmove(b->data, b->data + b->done, keep);
	b->parsed -= b->done;
	b->recv -= b->done;
	b->done = 0;
}

bool iobuf_reserve(struct iobuf **bp, uint32_t need)
{
	struct iobuf *b = *bp;
	/* Written as size - parsed (parsed <= size) so a huge need cannot wrap. */
	if (need <= b->size - b->parsed)
		return true;
	iobuf_compact(b);
	if (need <= b->size - b->parsed)
		return true;
	if (need > IOBUF_MAX_WHOLE)
		return false;
	/* A one-off buffer for a big message; returned to malloc when done. */
	uint32_t size = b->parsed + need;
	struct iobuf *nb = xmalloc(sizeof(*nb) + size);
	nb->size = size;
	nb->done = 0;
	nb->parsed = b->parsed;
	nb->recv = b->recv;
	nb->next_free = NULL;
	memcpy(nb->data, b->data, b->recv);
	used_count++;
	iobuf_put(b);
	*bp = nb;
	return true;
}

void iobuf_stats(size_t *fc, size_t *uc)
{
	*fc = free_count;
	*uc = used_count;
}

void wbuf_need(struct wbuf *w, uint32_t n)
{
	if (w->sent == w->len)
		w->sent = w->len = 0;
	if ((uint64_t)w->len + n > UINT32_MAX / 2)
		abort(); /* callers bound every message far below this */
	if (w->len + n <= w->cap)
		return;
	uint32_t cap = w->cap ? w->cap : 512;
	while (cap < w->len + n)
		cap *= 2;
	uint8_t *p = realloc(w->data, cap);
	if (!p)
		abort();
	w->data = p;
	w->cap = cap;
}

void wbuf_put(struct wbuf *w, const void *p, uint32_t n)
{
	if (!n)
		return;
	wbuf_need(w, n);
	memcpy(w->data + w->len, p, n);
	w->len += n;
}

void wbuf_prepend(struct wbuf *w, const void *p, uint32_t n)
{
	if (!n)
		return;
	if (w->sent >= n) { /* room in the part already sent */
		w->sent -= n;
		memcpy(w->data + w->sent, p, n);
		return;
	}
	uint32_t pending = w->len - w->sent;
	wbuf_need(w, n); /* may reset an empty queue; keeps pending bytes */
	memmove(w->data + n, w->data + w->sent, w->len - w->sent);
	memcpy(w->data, p, n);
	w->sent = 0;
	w->len = n + pending;
}

void wbuf_reset(struct wbuf *w)
{
	w->len = w->sent = 0;
}

void wbuf_free(struct wbuf *w)
{
	free(w->data);
	w->data = NULL;
	w->len = w->cap = w->sent = 0;
}
