/*
 * proto.h: PostgreSQL v3 wire protocol framing (protocol chapter, "Message
 * Formats"): builders that append whole messages to an output queue, and a
 * bounds-checked reader for message bodies.  proto.c knows bytes, not pools.
 */
#ifndef PGFLEET_PROTO_H
#define PGFLEET_PROTO_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "iobuf.h"

#define PROTO_V3 196608u           /* 3.0 */
#define PROTO_SSL_REQUEST 80877103u
#define PROTO_GSSENC_REQUEST 80877104u
#define PROTO_CANCEL_REQUEST 80877102u
#define PROTO_MAX_STARTUP 10000u   /* PostgreSQL's MAX_STARTUP_PACKET_LENGTH */

/* Authentication request codes ('R' messages). */
enum {
	AUTH_REQ_OK = 0,
	AUTH_REQ_CLEARTEXT = 3,
	AUTH_REQ_MD5 = 5,
	AUTH_REQ_SASL = 10,
	AUTH_REQ_SASL_CONTINUE = 11,
	AUTH_REQ_SASL_FINAL = 12,
};

static inline uint32_t proto_get_u32(const uint8_t *p)
{
	return ((uint32_t)p[0] << 24) | ((uint32_t)p[1] << 16) | ((uint32_t)p[2] << 8) | p[3];
}

static inline uint16_t proto_get_u16(const uint8_t *p)
{
	return (uint16_t)(((unsigned)p[0] << 8) | p[1]);
}

/* A cursor over one message body; any read past the end sets `bad`. */
struct pkt_reader {
	const uint8_t *p;
	uint32_t len, pos;
	bool bad;
};

static inline struct pkt_reader pkt_reader_init(const uint8_t *p, uint32_t len)
{
	struct pkt_reader r = {p, len, 0, false};
	return r;
}

uint8_t pkt_get_u8(struct pkt_reader *r);
uint16_t pkt_get_u16(struct pkt_reader *r);
uint32_t pkt_get_u32(struct pkt_reader *r);
/* A NUL-terminated string inside the body; NULL (and bad) when unterminated. */
const char *pkt_get_str(struct pkt_reader *r);
/* n raw bytes; NULL (and bad) when fewer remain. */
const uint8_t *pkt_get_bytes(struct pkt_reader *r, uint32_t n);

/* Building messages into an output queue. */
uint32_t proto_begin(struct wbuf *w, char type); /* type 0: no type byte (startup) */
void proto_put_u8(struct wbuf *w, uint8_t v);
void proto_put_u16(struct wbuf *w, uint16_t v);
void proto_put_u32(struct wbuf *w, uint32_t v);
void proto_put_str(struct wbuf *w, const char *s); /* with its NUL */
void proto_put_bytes(struct wbuf *w, const void *p, uint32_t n);
void proto_end(struct wbuf *w, uint32_t start);

/* Whole messages. */
void proto_error(struct wbuf *w, const char *severity, const char *sqlstate, const char *msg);
void proto_notice(struct wbuf *w, const char *sqlstate, const char *msg);
void proto_auth(struct wbuf *w, uint32_t code, const void *data, uint32_t len);
void proto_auth_sasl_mechs(struct wbuf *w);
void proto_parameter_status(struct wbuf *w, const char *name, const char *value);
void proto_backend_key(struct wbuf *w, uint32_t pid, uint32_t key);
void proto_ready(struct wbuf *w, char status);
/* The type of text (pg_type.oid), the only type pgfleet answers rows in. */
#define PG_TEXTOID 25
/* pgfleet's answer to SHOW of its own setting: a RowDescription of one
 * text column `name`, results in `format` (0 text, 1 binary: a text's bytes
 * are the same either way); then the result, a DataRow of `value` and the
 * command tag SHOW. */
void proto_text_column(struct wbuf *w, const char *name, uint16_t format);
void proto_show_result(struct wbuf *w, const char *value);
void proto_query(struct wbuf *w, const char *sql);
void proto_password(struct wbuf *w, const char *password);
void proto_sasl_initial(struct wbuf *w, const char *mech, const void *data, uint32_t len);
void proto_sasl_response(struct wbuf *w, const void *data, uint32_t len);
void proto_terminate(struct wbuf *w);
/* StartupMessage: params is a NULL-terminated list of name, value pairs. */
void proto_startup(struct wbuf *w, const char *const *params);

/* Fields of an ErrorResponse/NoticeResponse body ('S'/'V' severity, 'C'
 * SQLSTATE, 'M' message).  Pointers into the body; "" when absent. */
struct pg_error {
	const char *severity, *sqlstate, *message;
};
bool proto_parse_error(const uint8_t *body, uint32_t len, struct pg_error *out);

/* The length (counting itself) protocol 3.0 fixes for a server message of
 * each type; 0 where it varies (then it is at least 4). */
extern const uint8_t proto_server_fixed_len[256];

/* Does a server message of this type have the body length the protocol (3.0)
 * fixes for it?  True for types whose length varies.  A message that fails
 * this is a protocol violation: its body is never read.  Inline: every
 * message from a server passes here. */
static inline bool proto_server_len_ok(uint8_t type, uint32_t len)
{
	uint8_t fixed = proto_server_fixed_len[type];
	return fixed ? len == fixed : len >= 4;
}

/* A ReadyForQuery's transaction status, when its body is one of 'I', 'T', 'E'. */
static inline bool proto_ready_status(const uint8_t *body, uint32_t len, char *status)
{
	if (len != 1 || (body[0] != 'I' && body[0] != 'T' && body[0] != 'E'))
		return false;
	*status = (char)body[0];
	return true;
}

/* Appends a SQL string literal ('...' with quotes doubled) to buf. */
bool proto_quote_literal(char *buf, size_t buflen, size_t *pos, const char *s);

#endif
