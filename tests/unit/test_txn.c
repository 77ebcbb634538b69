/*
 * test_txn.c: where a client's turn on a server connection ends (txn.h),
 * and the request queue that feeds those decisions (server_queue_push).
 *
 * The conversations below are what PostgreSQL answers to what a client
 * sends.  Each one is replayed on a queue of request kinds the way
 * server.c's forward_to_client applies txn.h's decisions to its ring
 * (TXN_POP takes the head request, TXN_SKIP_TO_SYNC drops the requests
 * before the next Sync, and after a ReadyForQuery txn_turn_over says
 * whether the connection goes back to the pool); the test asserts at
 * which reply the turn ends, and that it ends nowhere else.
 */
#include "harness.h"
#include "model.h"

#include "txn.h"

struct replay {
	uint8_t kind[64];
	int head, len;
	int mode;            /* pool_mode */
	uint32_t client_rem; /* bytes of a client message still to come */
};

static void replay_init(struct replay *q, int mode, const char *requests)
{
	memset(q, 0, sizeof(*q));
	q->mode = mode;
	/* Q Query, P Parse, B Bind, D Describe, E Execute, C Close, S Sync */
	for (const char *p = requests; *p; p++) {
		uint8_t k = *p == 'Q'	? REQ_QUERY
			    : *p == 'P' ? REQ_PARSE
			    : *p == 'B' ? REQ_BIND
			    : *p == 'D' ? REQ_DESCRIBE
			    : *p == 'E' ? REQ_EXECUTE
			    : *p == 'C' ? REQ_CLOSE
					: REQ_SYNC;
		q->kind[q->len++] = k;
	}
}

/*
 * Feeds the server's replies, one letter each (a ReadyForQuery is 'Z'
 * followed by its status letter, e.g. "ZI"), and returns the index in
 * `replies` of the reply that ended the turn, -1 if none did.  A turn that
 * ends before the last reply is reported too (the index shows where).
 */
static int feed(struct replay *q, const char *replies)
{
	int over_at = -1;
	for (int i = 0; replies[i]; i++) {
		uint8_t type = (uint8_t)replies[i];
		char status = 0;
		int at = i;
		if (type == 'Z')
			status = replies[++i];
		bool has_head = q->len > q->head;
		switch (txn_reply_effect(has_head, has_head ? q->kind[q->head] : 0, type)) {
		case TXN_POP:
			q->head++;
			break;
		case TXN_SKIP_TO_SYNC:
			while (q->head < q->len && q->kind[q->head] != REQ_SYNC)
				q->head++;
			break;
		case TXN_NONE:
			break;
		}
		if (type == 'Z' &&
		    txn_turn_over(status, (uint32_t)(q->len - q->head), q->client_rem, q->mode) &&
		    over_at < 0)
			over_at = at;
	}
	return over_at;
}

static int pending(const struct replay *q)
{
	return q->len - q->head;
}

/* The simple protocol: a Query ends at its ReadyForQuery, and the turn
 * ends there only outside a transaction block. */
static void test_simple_query(void)
{
	struct replay q;
	replay_init(&q, POOL_TRANSACTION, "Q");
	/* RowDescription, DataRow x2, CommandComplete, ReadyForQuery 'I' */
	CHECK(feed(&q, "TDDCZI") == 4);
	CHECK(pending(&q) == 0);

	/* several statements in one Query: one ReadyForQuery at the end */
	replay_init(&q, POOL_TRANSACTION, "Q");
	CHECK(feed(&q, "CTDCCZI") == 5);

	/* an error outside a block: the ReadyForQuery after it says 'I' */
	replay_init(&q, POOL_TRANSACTION, "Q");
	CHECK(feed(&q, "EZI") == 1);
	CHECK(pending(&q) == 0);

	/* an empty query */
	replay_init(&q, POOL_TRANSACTION, "Q");
	CHECK(feed(&q, "IZI") == 1);
}

/* BEGIN ... COMMIT: the connection stays with the client through 'T'
 * and through a failed block ('E') until it ends in 'I'. */
static void test_transaction_block(void)
{
	struct replay q;
	replay_init(&q, POOL_TRANSACTION, "Q");
	CHECK(feed(&q, "CZT") == -1); /* BEGIN */
	CHECK(pending(&q) == 0);
	replay_init(&q, POOL_TRANSACTION, "Q");
	CHECK(feed(&q, "TDCZT") == -1); /* SELECT in the block */
	replay_init(&q, POOL_TRANSACTION, "Q");
	CHECK(feed(&q, "EZE") == -1); /* an error: the block is failed */
	replay_init(&q, POOL_TRANSACTION, "Q");
	CHECK(feed(&q, "EZE") == -1); /* still failed: every query errs */
	replay_init(&q, POOL_TRANSACTION, "Q");
	CHECK(feed(&q, "CZI") == 1); /* ROLLBACK */

	/* BEGIN; SELECT; COMMIT in one Query string */
	replay_init(&q, POOL_TRANSACTION, "Q");
	CHECK(feed(&q, "CTDCCZI") == 5);
	/* BEGIN; SELECT 1/0 in one string: an error, then 'E' */
	replay_init(&q, POOL_TRANSACTION, "Q");
	CHECK(feed(&q, "CEZE") == -1);
}

/* The extended protocol: each message answered in turn, the Sync's
 * ReadyForQuery ends the turn. */
static void test_extended(void)
{
	struct replay q;
	replay_init(&q, POOL_TRANSACTION, "PBDES");
	/* ParseComplete, BindComplete, RowDescription, DataRow, CommandComplete */
	CHECK(feed(&q, "12TDC") == -1);
	CHECK(pending(&q) == 1); /* the Sync */
	CHECK(feed(&q, "ZI") == 0);
	CHECK(pending(&q) == 0);

	/* Describe of a statement: ParameterDescription then NoData */
	replay_init(&q, POOL_TRANSACTION, "PDS");
	CHECK(feed(&q, "1tnZI") == 3);

	/* Close, and an Execute with a row limit (PortalSuspended) */
	replay_init(&q, POOL_TRANSACTION, "BEES");
	CHECK(feed(&q, "2DsDCZI") == 5);
	replay_init(&q, POOL_TRANSACTION, "CS");
	CHECK(feed(&q, "3ZI") == 1);

	/* an empty query by Execute */
	replay_init(&q, POOL_TRANSACTION, "PBES");
	CHECK(feed(&q, "12IZI") == 3);

	/* Sync inside a block opened by the extended protocol */
	replay_init(&q, POOL_TRANSACTION, "PBES");
	CHECK(feed(&q, "12CZT") == -1);
}

/* Pipelined requests: the turn ends at the last Sync's ReadyForQuery, not
 * at an earlier one that leaves requests unanswered. */
static void test_pipeline(void)
{
	struct replay q;
	replay_init(&q, POOL_TRANSACTION, "PBESPBESPBES");
	CHECK(feed(&q, "12CZI") == -1);
	CHECK(pending(&q) == 8);
	CHECK(feed(&q, "12CZI") == -1);
	CHECK(pending(&q) == 4);
	CHECK(feed(&q, "12CZI") == 3);
	CHECK(pending(&q) == 0);

	/* simple queries pipelined (libpq pipeline of Query messages) */
	replay_init(&q, POOL_TRANSACTION, "QQ");
	CHECK(feed(&q, "CZICZI") == 4);
}

/* An error in the extended protocol: the server skips every request up to
 * the Sync and answers the Sync; a pipeline after it goes on. */
static void test_extended_error(void)
{
	struct replay q;
	/* the Bind fails: no BindComplete, no Execute reply */
	replay_init(&q, POOL_TRANSACTION, "PBESPBES");
	CHECK(feed(&q, "1E") == -1);
	CHECK(pending(&q) == 5); /* the Sync and the second batch */
	CHECK(feed(&q, "ZI") == -1);
	CHECK(pending(&q) == 4);
	CHECK(feed(&q, "12CZI") == 3);

	/* the Parse fails */
	replay_init(&q, POOL_TRANSACTION, "PBDES");
	CHECK(feed(&q, "EZI") == 1);

	/* the Execute fails inside a block: the Sync says 'E', the turn goes on */
	replay_init(&q, POOL_TRANSACTION, "PBES");
	CHECK(feed(&q, "12EZE") == -1);
	CHECK(pending(&q) == 0);

	/* an error while no request waits (a FATAL on its way): nothing to pop */
	replay_init(&q, POOL_TRANSACTION, "");
	CHECK(feed(&q, "E") == -1);
	CHECK(pending(&q) == 0);
}

/* COPY: the request ends at its CommandComplete (Execute) or
 * ReadyForQuery (Query), whatever came between. */
static void test_copy(void)
{
	struct replay q;
	/* COPY ... FROM STDIN: CopyInResponse, (client: CopyData, CopyDone) */
	replay_init(&q, POOL_TRANSACTION, "Q");
	CHECK(feed(&q, "G") == -1);
	CHECK(pending(&q) == 1);
	CHECK(feed(&q, "CZI") == 1);

	/* COPY ... TO STDOUT: CopyOutResponse, CopyData..., CopyDone */
	replay_init(&q, POOL_TRANSACTION, "Q");
	CHECK(feed(&q, "HdddcCZI") == 6);

	/* CopyFail from the client: the server errs, then 'I' */
	replay_init(&q, POOL_TRANSACTION, "Q");
	CHECK(feed(&q, "GEZI") == 2);

	/* an error mid-copy in a block: the block is failed */
	replay_init(&q, POOL_TRANSACTION, "Q");
	CHECK(feed(&q, "GEZE") == -1);

	/* COPY by the extended protocol */
	replay_init(&q, POOL_TRANSACTION, "PBES");
	CHECK(feed(&q, "12G") == -1);
	CHECK(pending(&q) == 2); /* the Execute runs the copy */
	CHECK(feed(&q, "CZI") == 1);
}

/* ParameterStatus, NoticeResponse and NotificationResponse answer no
 * request: they end nothing, wherever they come. */
static void test_async(void)
{
	struct replay q;
	replay_init(&q, POOL_TRANSACTION, "Q");
	CHECK(feed(&q, "NSA") == -1);
	CHECK(pending(&q) == 1);
	CHECK(feed(&q, "CNZI") == 2);
	CHECK(txn_reply_async('S') && txn_reply_async('N') && txn_reply_async('A'));
	CHECK(!txn_reply_async('Z') && !txn_reply_async('E') && !txn_reply_async('C'));
}

/* The turn does not end while part of the client's next message is still
 * to come, nor ever in session mode. */
static void test_turn_over_conditions(void)
{
	struct replay q;
	replay_init(&q, POOL_TRANSACTION, "Q");
	q.client_rem = 100;
	CHECK(feed(&q, "CZI") == -1);
	replay_init(&q, POOL_SESSION, "Q");
	CHECK(feed(&q, "CZI") == -1);
	replay_init(&q, POOL_STATEMENT, "Q");
	CHECK(feed(&q, "CZI") == 1);

	CHECK(txn_turn_over('I', 0, 0, POOL_TRANSACTION));
	CHECK(!txn_turn_over('T', 0, 0, POOL_TRANSACTION));
	CHECK(!txn_turn_over('E', 0, 0, POOL_TRANSACTION));
	CHECK(!txn_turn_over('I', 1, 0, POOL_TRANSACTION));
	CHECK(!txn_turn_over('I', 0, 1, POOL_TRANSACTION));
	CHECK(!txn_turn_over('I', 0, 0, POOL_SESSION));
}

/* Which reply ends which request, message by message. */
static void test_reply_ends_table(void)
{
	static const struct {
		uint8_t kind;
		const char *ends;
	} table[] = {
		{REQ_QUERY, "Z"}, {REQ_SYNC, "Z"},    {REQ_PARSE, "1"}, {REQ_BIND, "2"},
		{REQ_DESCRIBE, "Tn"}, {REQ_EXECUTE, "CIs"}, {REQ_CLOSE, "3"},
		{REQ_DEALLOC, ""}, {REQ_ERROR, ""}, {REQ_NOTICE, ""}, {REQ_LEARN, "Z"}, {REQ_LSN, "Z"}, {REQ_ROUTE, ""},
	};
	const char *all = "123ACDEGHIKNSTZcdnst";
	for (size_t i = 0; i < sizeof(table) / sizeof(table[0]); i++) {
		for (const char *t = all; *t; t++) {
			bool want = strchr(table[i].ends, *t) != NULL;
			if (txn_reply_ends(table[i].kind, (uint8_t)*t) != want) {
				fprintf(stderr, "kind %d reply %c\n", table[i].kind, *t);
				CHECK(!"txn_reply_ends");
			} else {
				CHECK(true);
			}
		}
	}
	/* An ErrorResponse: a Query waits for its ReadyForQuery, anything else
	 * (pgfleet's own answers included) skips to the Sync. */
	CHECK(txn_reply_effect(true, REQ_QUERY, 'E') == TXN_NONE);
	CHECK(txn_reply_effect(true, REQ_LEARN, 'E') == TXN_NONE);
	CHECK(txn_reply_effect(true, REQ_SYNC, 'E') == TXN_SKIP_TO_SYNC);
	CHECK(txn_reply_effect(true, REQ_PARSE, 'E') == TXN_SKIP_TO_SYNC);
	CHECK(txn_reply_effect(true, REQ_ERROR, 'E') == TXN_SKIP_TO_SYNC);
	CHECK(txn_reply_effect(false, REQ_PARSE, 'E') == TXN_NONE);
	CHECK(txn_reply_effect(false, REQ_QUERY, 'Z') == TXN_NONE);
	CHECK(txn_reply_effect(true, REQ_PARSE, 'S') == TXN_NONE);
}

/* server_queue_push: what a ReadyForQuery the client sees is owed for
 * (expect_rfq), and the max_pipelined_requests limit. */
static void test_queue_push(void)
{
	model_init();
	fleet.cfg.max_pipelined_requests = 40;
	struct database *db = model_db("app", TSA_ANY, 2, NULL);
	struct replica *r = model_replica(db, "10.0.0.1:5432", REPLICA_UP, ROLE_PRIMARY);
	struct pool *p = model_pool(pool_group_get(db, "app"), r);
	struct server *s = model_server_idle(p, 990);

	server_queue_push(s, REQ_QUERY, REQ_HIDE, NULL); /* a SET pgfleet sends */
	CHECK(s->q_len == 1 && s->expect_rfq == 0);
	server_queue_push(s, REQ_PARSE, REQ_PASS, NULL);
	server_queue_push(s, REQ_BIND, REQ_PASS, NULL);
	server_queue_push(s, REQ_EXECUTE, REQ_PASS, NULL);
	CHECK(s->expect_rfq == 0);
	server_queue_push(s, REQ_SYNC, REQ_PASS, NULL);
	CHECK(s->expect_rfq == 1);
	server_queue_push(s, REQ_QUERY, REQ_PASS, NULL);
	CHECK(s->expect_rfq == 2);
	server_queue_push(s, REQ_CLOSE, REQ_FAKE, NULL);
	CHECK(s->q_fakes == 1 && s->expect_rfq == 2);
	CHECK(s->q_len == 7);
	CHECK(server_queue_last(s)->kind == REQ_CLOSE && server_queue_last(s)->action == REQ_FAKE);

	/* past SERVER_QUEUE_MIN the ring grows, order kept */
	for (int i = 7; i < 40; i++)
		server_queue_push(s, i % 2 ? REQ_SYNC : REQ_PARSE, REQ_PASS, NULL);
	CHECK(s->q_len == 40 && !s->overflow);
	CHECK(s->q_cap >= 40);
	CHECK(s->queue[(s->q_head + 4) & (s->q_cap - 1)].kind == REQ_SYNC);
	CHECK(server_queue_last(s)->kind == REQ_SYNC);
	/* the 41st is refused: the client is then closed (54000) */
	server_queue_push(s, REQ_SYNC, REQ_PASS, NULL);
	CHECK(s->overflow && s->q_len == 40);
	model_done();
}

int main(void)
{
	RUN(test_simple_query);
	RUN(test_transaction_block);
	RUN(test_extended);
	RUN(test_pipeline);
	RUN(test_extended_error);
	RUN(test_copy);
	RUN(test_async);
	RUN(test_turn_over_conditions);
	RUN(test_reply_ends_table);
	RUN(test_queue_push);
	return harness_finish();
}
