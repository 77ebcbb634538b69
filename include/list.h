/*
 * list.h: intrusive doubly-linked lists, the way PgBouncer keeps its state
 * lists.  An object embeds a `struct list` node per list it can be on; a
 * `struct statlist` keeps a count, so SHOW-style counts are list lengths.
 */
#ifndef PGFLEET_LIST_H
#define PGFLEET_LIST_H

#include <stdbool.h>
#include <stddef.h>

struct list {
	struct list *next, *prev;
};

struct statlist {
	struct list head;
	int count;
};

#define container_of(ptr, type, member) ((type *)(void *)((char *)(ptr) - offsetof(type, member)))

static inline void list_init(struct list *l)
{
	l->next = l->prev = l;
}

static inline bool list_empty(const struct list *l)
{
	return l->next == l;
}

static inline void list_append(struct list *head, struct list *item)
{
	item->prev = head->prev;
	item->next = head;
	head->prev->next = item;
	head->prev = item;
}

/* Unlinks and re-initialises, so deleting twice is harmless. */
static inline void list_del(struct list *item)
{
	item->prev->next = item->next;
	item->next->prev = item->prev;
	list_init(item);
}

static inline struct list *list_first(const struct list *head)
{
	return list_empty(head) ? NULL : head->next;
}

#define list_for_each(it, head) for ((it) = (head)->next; (it) != (head); (it) = (it)->next)
#define list_for_each_safe(it, tmp, head)                                                          \
	for ((it) = (head)->next, (tmp) = (it)->next; (it) != (head); (it) = (tmp), (tmp) = (it)->next)

static inline void statlist_init(struct statlist *s)
{
	list_init(&s->head);
	s->count = 0;
}

static inline void statlist_append(struct statlist *s, struct list *item)
{
	list_append(&s->head, item);
	s->count++;
}

static inline void statlist_prepend(struct statlist *s, struct list *item)
{
	list_append(s->head.next, item); /* before the first: at the front */
	s->count++;
}

static inline void statlist_remove(struct statlist *s, struct list *item)
{
	list_del(item);
	s->count--;
}

static inline struct list *statlist_pop(struct statlist *s)
{
	struct list *it = list_first(&s->head);
	if (it)
		statlist_remove(s, it);
	return it;
}

#endif
