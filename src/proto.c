/*
 * proto.c: message builders and the body reader.  Lengths are big-endian
 * int32 and count themselves but not the type byte (protocol docs, "Message
 * Data Types").  Nothing here allocates except through the wbuf.
 */
#include "proto.h"

#include <string.h>

uint8_t pkt_get_u8(struct pkt_reader *r)
{
	if (r->bad || r->len - r->pos < 1) {
		r->bad = true;
		return 0;
	}
	return r->p[r->pos++];
}

uint16_t pkt_get_u16(struct pkt_reader *r)
{
	if (r->bad || r->len - r->pos < 2) {
		r->bad = true;
		return 0;
	}
	uint16_t v = proto_get_u16(r->p + r->pos);
	r->pos += 2;
	return v;
}

uint32_t pkt_get_u32(struct pkt_reader *r)
{
	if (r->bad || r->len - r->pos < 4) {
		r->bad = true;
		return 0;
	}
	uint32_t v = proto_get_u32(r->p + r->pos);
	r->pos += 4;
	return v;
}

const char *pkt_get_str(struct pkt_reader *r)
{
	if (r->bad)
		return NULL;
	const uint8_t *start = r->p + r->pos;
	const uint8_t *nul = memchr(start, 0, r->len - r->pos);
	if (!nul) {
		r->bad = true;
		return NULL;
	}
	r->pos += (uint32_t)(nul - start) + 1;
	return (const char *)start;
}

const uint8_t *pkt_get_bytes(struct pkt_reader *r, uint32_t n)
{
	if (r->bad || r->len - r->pos < n) {
		r->bad = true;
		return NULL;
	}
	const uint8_t *p = r->p + r->pos;
	r->pos += n;
	return p;
}

uint32_t proto_begin(struct wbuf *w, char type)
{
	wbuf_need(w, 5);
	if (type)
		w->data[w->len++] = (uint8_t)type;
	uint32_t start = w->len;
	w->len += 4; /* length, patched by proto_end */
	return start;
}

void proto_put_u8(struct wbuf *w, uint8_t v)
{
	wbuf_put(w, &v, 1);
}

void proto_put_u16(struct wbuf *w, uint16_t v)
{
	uint8_t b[2] = {(uint8_t)(v >> 8), (uint8_t)v};
	wbuf_put(w, b, 2);
}

void proto_put_u32(struct wbuf *w, uint32_t v)
{
	uint8_t b[4] = {(uint8_t)(v >> 24), (uint8_t)(v >> 16), (uint8_t)(v >> 8), (uint8_t)v};
	wbuf_put(w, b, 4);
}

void proto_put_str(struct wbuf *w, const char *s)
{
	wbuf_put(w, s, (uint32_t)strlen(s) + 1);
}

void proto_put_bytes(struct wbuf *w, const void *p, uint32_t n)
{
	wbuf_put(w, p, n);
}

void proto_end(struct wbuf *w, uint32_t start)
{
	uint32_t len = w->len - start;
	w->data[start] = (uint8_t)(len >> 24);
	w->data[start + 1] = (uint8_t)(len >> 16);
	w->data[start + 2] = (uint8_t)(len >> 8);
	w->data[start + 3] = (uint8_t)len;
}

static void error_like(struct wbuf *w, char type, const char *severity, const char *sqlstate,
		       const char *msg)
{
	uint32_t m = proto_begin(w, type);
	proto_put_u8(w, 'S');
	proto_put_str(w, severity);
	proto_put_u8(w, 'V');
	proto_put_str(w, severity);
	proto_put_u8(w, 'C');
	proto_put_str(w, sqlstate);
	proto_put_u8(w, 'M');
	proto_put_str(w, msg);
	proto_put_u8(w, 0);
	proto_end(w, m);
}

void proto_error(struct wbuf *w, const char *severity, const char *sqlstate, const char *msg)
{
	error_like(w, 'E', severity, sqlstate, msg);
}

void proto_notice(struct wbuf *w, const char *sqlstate, const char *msg)
{
	error_like(w, 'N', "NOTICE", sqlstate, msg);
}

void proto_auth(struct wbuf *w, uint32_t code, const void *data, uint32_t len)
{
	uint32_t m = proto_begin(w, 'R');
	proto_put_u32(w, code);
	if (len)
		proto_put_bytes(w, data, len);
	proto_end(w, m);
}

void proto_auth_sasl_mechs(struct wbuf *w)
{
	uint32_t m = proto_begin(w, 'R');
	proto_put_u32(w, AUTH_REQ_SASL);
	proto_put_str(w, "SCRAM-SHA-256");
	proto_put_u8(w, 0);
	proto_end(w, m);
}

void proto_parameter_status(struct wbuf *w, const char *name, const char *value)
{
	uint32_t m = proto_begin(w, 'S');
	proto_put_str(w, name);
	proto_put_str(w, value);
	proto_end(w, m);
}

void proto_backend_key(struct wbuf *w, uint32_t pid, uint32_t key)
{
	uint32_t m = proto_begin(w, 'K');
	proto_put_u32(w, pid);
	proto_put_u32(w, key);
	proto_end(w, m);
}

void proto_ready(struct wbuf *w, char status)
{
	uint32_t m = proto_begin(w, 'Z');
	proto_put_u8(w, (uint8_t)status);
	proto_end(w, m);
}

void proto_text_column(struct wbuf *w, const char *name, uint16_t format)
{
	uint32_t m = proto_begin(w, 'T');
	proto_put_u16(w, 1);
	proto_put_str(w, name);
	proto_put_u32(w, 0);          /* no table */
	proto_put_u16(w, 0);          /* no column of one */
	proto_put_u32(w, PG_TEXTOID); /* text */
	proto_put_u16(w, 0xffff);     /* typlen -1: variable */
	proto_put_u32(w, 0xffffffff); /* typmod -1 */
	proto_put_u16(w, format);
	proto_end(w, m);
}

void proto_show_result(struct wbuf *w, const char *value)
{
	uint32_t m = proto_begin(w, 'D');
	uint32_t n = (uint32_t)strlen(value);
	proto_put_u16(w, 1);
	proto_put_u32(w, n);
	proto_put_bytes(w, value, n);
	proto_end(w, m);
	m = proto_begin(w, 'C');
	proto_put_str(w, "SHOW");
	proto_end(w, m);
}

void proto_query(struct wbuf *w, const char *sql)
{
	uint32_t m = proto_begin(w, 'Q');
	proto_put_str(w, sql);
	proto_end(w, m);
}

void proto_password(struct wbuf *w, const char *password)
{
	uint32_t m = proto_begin(w, 'p');
	proto_put_str(w, password);
	proto_end(w, m);
}

void proto_sasl_initial(struct wbuf *w, const char *mech, const void *data, uint32_t len)
{
	uint32_t m = proto_begin(w, 'p');
	proto_put_str(w, mech);
	proto_put_u32(w, len);
	if (len)
		proto_put_bytes(w, data, len);
	proto_end(w, m);
}

void proto_sasl_response(struct wbuf *w, const void *data, uint32_t len)
{
	uint32_t m = proto_begin(w, 'p');
	if (len)
		proto_put_bytes(w, data, len);
	proto_end(w, m);
}

void proto_terminate(struct wbuf *w)
{
	uint32_t m = proto_begin(w, 'X');
	proto_end(w, m);
}

void proto_startup(struct wbuf *w, const char *const *params)
{
	uint32_t m = proto_begin(w, 0);
	proto_put_u32(w, PROTO_V3);
	for (; params[0]; params += 2) {
		proto_put_str(w, params[0]);
		proto_put_str(w, params[1]);
	}
	proto_put_u8(w, 0);
	proto_end(w, m);
}

bool proto_parse_error(const uint8_t *body, uint32_t len, struct pg_error *out)
{
	struct pkt_reader r = pkt_reader_init(body, len);
	out->severity = out->sqlstate = out->message = "";
	for (;;) {
		uint8_t code = pkt_get_u8(&r);
		if (r.bad)
			return false;
		if (code == 0)
			return true;
		const char *val = pkt_get_str(&r);
		if (!val)
			return false;
		if (code == 'V' || (code == 'S' && !*out->severity))
			out->severity = val;
		else if (code == 'C')
			out->sqlstate = val;
		else if (code == 'M')
			out->message = val;
	}
}

const uint8_t proto_server_fixed_len[256] = {
	['Z'] = 4 + 1, /* ReadyForQuery: the status byte */
	['K'] = 4 + 8, /* BackendKeyData: pid, key (protocol 3.0, which pgfleet asks for) */
	['1'] = 4,     /* ParseComplete */
	['2'] = 4,     /* BindComplete */
	['3'] = 4,     /* CloseComplete */
	['n'] = 4,     /* NoData */
	['I'] = 4,     /* EmptyQueryResponse */
	['s'] = 4,     /* PortalSuspended */
	['c'] = 4,     /* CopyDone */
};

bool proto_quote_literal(char *buf, size_t buflen, size_t *pos, const char *s)
{
	/* '...' with quotes doubled; with a backslash, E'...' with backslashes
	 * doubled too, so the literal means the same whatever
	 * standard_conforming_strings is. */
	bool backslash = strchr(s, '\\') != NULL;
	size_t need = (backslash ? 1 : 0) + 2 + 1; /* E, quotes, NUL */
	for (const char *q = s; *q; q++)
		need += (*q == '\'' || *q == '\\') ? 2 : 1;
	if (*pos > buflen || buflen - *pos < need)
		return false;
	size_t p = *pos;
	if (backslash)
		buf[p++] = 'E';
	buf[p++] = '\'';
	for (; *s; s++) {
		if (*s == '\'' || *s == '\\')
			buf[p++] = *s;
		buf[p++] = *s;
	}
	buf[p++] = '\'';
	buf[p] = 0;
	*pos = p;
	return true;
}
