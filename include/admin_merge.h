/*
 * admin_merge.h: merges the answers several workers gave to one admin SHOW
 * (workers = N) into the one answer the console client gets.  Knows the
 * wire format of RowDescription/DataRow/CommandComplete, nothing of pools.
 */
#ifndef PGFLEET_ADMIN_MERGE_H
#define PGFLEET_ADMIN_MERGE_H

#include "iobuf.h"

enum admin_merge_kind {
	MERGE_FIRST,  /* the first part as it is (errors, settings, help) */
	MERGE_CONCAT, /* one row per object: every part's rows */
	MERGE_KEYED,  /* one row per key (the first nkeys columns): counts summed */
};

/* Appends to dst the merge of parts[0..n-1] (parts[0] first: its
 * RowDescription, its error if it has one, its text columns). */
void admin_merge(struct wbuf *dst, const struct wbuf *parts, int n, enum admin_merge_kind kind,
                 int nkeys);

#endif
