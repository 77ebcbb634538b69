/*
 * txn.h: where a client's turn on a server connection ends, as pure
 * decisions over the request queue (server.h's struct request) and the
 * server's replies, so that they can be tested without sockets.
 *
 * server.c records every request it forwards (Query, Parse, Bind, Describe,
 * Execute, Close, Sync, and those pgfleet sends or answers itself) in order;
 * the server answers in that order.  Each reply either ends the request at
 * the head of the queue, is asynchronous (ParameterStatus, Notice,
 * Notification), belongs to a request still running (rows, CopyIn/Out,
 * CopyData) or, for an ErrorResponse in the extended protocol, makes the
 * server skip everything up to the next Sync.  The connection goes back to
 * the pool at the ReadyForQuery that leaves the queue empty with status
 * 'I': never inside a transaction ('T') or a failed one ('E'), never with a
 * pipelined request still unanswered, never while part of a client message
 * is still to come, never in session mode.  COPY needs nothing of its own:
 * its request ends only at its CommandComplete (Execute) or ReadyForQuery
 * (Query), whatever CopyData, CopyDone or CopyFail passed meanwhile.
 *
 * Static inline: on the hot path, as cheap as the expressions they name.
 * Must not: touch a connection, a buffer or the queue itself (server.c
 * does, with what these say).
 */
#ifndef PGFLEET_TXN_H
#define PGFLEET_TXN_H

#include <stdbool.h>
#include <stdint.h>

#include "config.h"
#include "server.h"

/* Replies that answer no request: ParameterStatus, NoticeResponse,
 * NotificationResponse. */
static inline bool txn_reply_async(uint8_t type)
{
	return type == 'S' || type == 'N' || type == 'A';
}

/* Does a reply of `type` end a request of `kind`? */
static inline bool txn_reply_ends(uint8_t kind, uint8_t type)
{
	switch (kind) {
	case REQ_QUERY:
	case REQ_SYNC:
	case REQ_LEARN:
	case REQ_LSN:
		return type == 'Z';
	case REQ_PARSE:
		return type == '1';
	case REQ_BIND:
		return type == '2';
	case REQ_DESCRIBE:
		return type == 'T' || type == 'n';
	case REQ_EXECUTE:
		return type == 'C' || type == 'I' || type == 's';
	case REQ_CLOSE:
		return type == '3';
	default:
		return false;
	}
}

enum txn_effect {
	TXN_NONE,         /* the head request goes on (or there is none) */
	TXN_POP,          /* the head request is answered */
	TXN_SKIP_TO_SYNC, /* an extended-protocol error: the server drops every
			     request up to the next Sync, which it still answers */
};

/* What a reply of `type` does to the queue whose head request is of `kind`
 * (has_head false: the queue is empty).  An error to a simple Query ends
 * nothing: its ReadyForQuery follows. */
static inline enum txn_effect txn_reply_effect(bool has_head, uint8_t kind, uint8_t type)
{
	if (!has_head || txn_reply_async(type))
		return TXN_NONE;
	if (type == 'E' && kind != REQ_QUERY && kind != REQ_LEARN && kind != REQ_LSN)
		return TXN_SKIP_TO_SYNC;
	return txn_reply_ends(kind, type) ? TXN_POP : TXN_NONE;
}

/* After a ReadyForQuery with `status` ('I', 'T' or 'E') was handled: is the
 * client's turn over, so the connection may go back to the pool?
 * requests_left: requests still unanswered (pipelined after this one);
 * client_msg_remain: bytes of a client message forwarded only in part. */
static inline bool txn_turn_over(char status, uint32_t requests_left, uint32_t client_msg_remain,
				 int pool_mode)
{
	return requests_left == 0 && status == 'I' && client_msg_remain == 0 &&
	       pool_mode != POOL_SESSION;
}

#endif
