/*
 * scram.c: SCRAM-SHA-256 (RFC 5802, RFC 7677) as PostgreSQL speaks it, both as
 * the server (checking a client's proof) and as the client (logging in to
 * PostgreSQL), plus PostgreSQL's md5 password scheme.
 *
 * Pure computation over byte strings: no sockets, no logging, no state outside
 * the structs the caller owns.  Every message from the network is copied into
 * a bounded, NUL-terminated buffer before it is parsed, so a malformed or
 * truncated message can only make a function return false.  Keys are wiped
 * with OPENSSL_cleanse once they are no longer needed.
 *
 * PostgreSQL's dialect (protocol docs, "SASL Authentication"; auth-scram.c):
 * - the user name in client-first is ignored (libpq sends "n="): the startup
 *   packet's user is the one that counts;
 * - no authorization identity ("a=") and no extensions;
 * - channel binding (gs2 flag 'p', mechanism SCRAM-SHA-256-PLUS) is not
 *   offered by pgfleet, so 'p' is refused.  A client sending 'y' ("I could
 *   bind but think you cannot") is telling the truth about us, so 'y' is
 *   accepted; PostgreSQL refuses it only when it *does* offer -PLUS, where 'y'
 *   would mean a downgrade attack.
 */
#include "scram.h"

#include <limits.h>
#include <string.h>

#include <openssl/crypto.h>
#include <openssl/evp.h>
#include <openssl/hmac.h>
#include <openssl/rand.h>

/* Base64 of the gs2 headers we accept, as the client echoes them in c=. */
#define GS2_N_B64 "biws" /* "n,," */
#define GS2_Y_B64 "eSws" /* "y,," */

/* 3 messages of SCRAM_MAX_MSG plus two commas. */
#define AUTH_MSG_MAX (3 * SCRAM_MAX_MSG + 2)

#define B64_LEN(n) ((((n) + 2) / 3) * 4)

/* ---- bounded string building ---- */

struct sbuf {
	char *buf;
	size_t cap;
	size_t len;
	bool ok;
};

static void sb_init(struct sbuf *b, char *buf, size_t cap)
{
	b->buf = buf;
	b->cap = cap;
	b->len = 0;
	b->ok = cap > 0;
	if (b->ok)
		buf[0] = '\0';
}

static void sb_put(struct sbuf *b, const char *s, size_t n)
{
	if (!b->ok || n >= b->cap - b->len) {
		b->ok = false;
		return;
	}
	memcpy(b->buf + b->len, s, n);
	b->len += n;
	b->buf[b->len] = '\0';
}

static void sb_str(struct sbuf *b, const char *s)
{
	sb_put(b, s, strlen(s));
}

static void sb_int(struct sbuf *b, int v)
{
	char tmp[16];
	size_t n = 0;
	unsigned u = v < 0 ? 0u : (unsigned)v;

	do {
		tmp[sizeof(tmp) - 1 - n++] = (char)('0' + u % 10);
		u /= 10;
	} while (u && n < sizeof(tmp));
	sb_put(b, tmp + sizeof(tmp) - n, n);
}

/* Copies a finished message to the caller's buffer. */
static bool emit(const char *s, size_t n, char *out, size_t outlen, size_t *outn)
{
	if (!out || n >= outlen)
		return false;
	memcpy(out, s, n);
	out[n] = '\0';
	if (outn)
		*outn = n;
	return true;
}

/* ---- base64 (RFC 4648, with padding; strict: no whitespace, canonical) ---- */

static const char b64chars[] = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";

static int b64val(char c)
{
	if (c >= 'A' && c <= 'Z')
		return c - 'A';
	if (c >= 'a' && c <= 'z')
		return c - 'a' + 26;
	if (c >= '0' && c <= '9')
		return c - '0' + 52;
	if (c == '+')
		return 62;
	if (c == '/')
		return 63;
	return -1;
}

static void b64_put(struct sbuf *b, const uint8_t *src, size_t n)
{
	for (size_t i = 0; i < n; i += 3) {
		uint32_t v = (uint32_t)src[i] << 16;
		char q[4];

		if (i + 1 < n)
			v |= (uint32_t)src[i + 1] << 8;
		if (i + 2 < n)
			v |= src[i + 2];
		q[0] = b64chars[(v >> 18) & 63];
		q[1] = b64chars[(v >> 12) & 63];
		q[2] = i + 1 < n ? b64chars[(v >> 6) & 63] : '=';
		q[3] = i + 2 < n ? b64chars[v & 63] : '=';
		sb_put(b, q, 4);
	}
}

/*
 * Decodes exactly len characters into at most cap bytes.  Padding is
 * required, only at the end, and the bits it hides must be zero, so each byte
 * string has exactly one accepted spelling.
 */
static bool b64_decode(const char *src, size_t len, uint8_t *dst, size_t cap, size_t *outlen)
{
	size_t n = 0;

	if (len % 4 != 0)
		return false;
	for (size_t i = 0; i < len; i += 4) {
		int v[4];
		int pad = 0;

		for (int j = 0; j < 4; j++) {
			char ch = src[i + j];

			if (ch == '=') {
				/* only in the last group, only in positions 2 and 3 */
				if (i + 4 != len || j < 2)
					return false;
				pad++;
				v[j] = 0;
			} else {
				if (pad)
					return false;
				v[j] = b64val(ch);
				if (v[j] < 0)
					return false;
			}
		}
		if ((pad == 1 && (v[2] & 3) != 0) || (pad == 2 && (v[1] & 15) != 0))
			return false;
		if (cap - n < (size_t)(3 - pad))
			return false;
		uint32_t w = (uint32_t)v[0] << 18 | (uint32_t)v[1] << 12 | (uint32_t)v[2] << 6 |
			     (uint32_t)v[3];
		dst[n++] = (uint8_t)(w >> 16);
		if (pad < 2)
			dst[n++] = (uint8_t)(w >> 8);
		if (pad < 1)
			dst[n++] = (uint8_t)w;
	}
	*outlen = n;
	return true;
}

/* Decodes a value that must be exactly `want` bytes (keys, proofs). */
static bool b64_decode_exact(const char *src, size_t len, uint8_t *dst, size_t want)
{
	size_t n;

	return len == B64_LEN(want) && b64_decode(src, len, dst, want, &n) && n == want;
}

/* ---- message parsing ---- */

/*
 * Copies a network message into buf as a C string.  Messages longer than
 * SCRAM_MAX_MSG - 1 or with an embedded NUL are malformed: SCRAM messages are
 * printable text.
 */
static bool copy_msg(char buf[SCRAM_MAX_MSG], const uint8_t *msg, size_t len)
{
	if (!msg || len == 0 || len >= SCRAM_MAX_MSG || memchr(msg, '\0', len))
		return false;
	memcpy(buf, msg, len);
	buf[len] = '\0';
	return true;
}

/* Reads "<name>=<value>" at *p; the value runs to the next ',' or the end.
 * Leaves *p on that ',' or NUL. */
static bool read_attr(const char **p, char name, const char **val, size_t *vlen)
{
	const char *s = *p;

	/* s[0] == name is not NUL, so s[1] is inside the string */
	if (s[0] != name || s[1] != '=')
		return false;
	s += 2;
	*val = s;
	while (*s && *s != ',')
		s++;
	*vlen = (size_t)(s - *val);
	*p = s;
	return true;
}

static bool skip_comma(const char **p)
{
	if (**p != ',')
		return false;
	(*p)++;
	return true;
}

/* RFC 5802 "printable": %x21-2B / %x2D-7E, i.e. visible ASCII except ','. */
static bool nonce_ok(const char *s, size_t n)
{
	if (n == 0)
		return false;
	for (size_t i = 0; i < n; i++)
		if (s[i] < 0x21 || s[i] > 0x7e || s[i] == ',')
			return false;
	return true;
}

/* A positive decimal int up to max, digits only (no sign, no spaces). */
static bool parse_iterations(const char *s, size_t n, long long max, int *out)
{
	long long v = 0;

	if (n == 0 || n > 10)
		return false;
	for (size_t i = 0; i < n; i++) {
		if (s[i] < '0' || s[i] > '9')
			return false;
		v = v * 10 + (s[i] - '0');
	}
	if (v < 1 || v > max || v > INT_MAX)
		return false;
	*out = (int)v;
	return true;
}

/* ---- primitives ---- */

static bool sha256(const uint8_t *data, size_t len, uint8_t out[SCRAM_KEY_LEN])
{
	unsigned n = 0;

	return EVP_Digest(data, len, out, &n, EVP_sha256(), NULL) == 1 && n == SCRAM_KEY_LEN;
}

static bool hmac_sha256(const uint8_t key[SCRAM_KEY_LEN], const void *data, size_t len,
			uint8_t out[SCRAM_KEY_LEN])
{
	unsigned n = 0;

	return HMAC(EVP_sha256(), key, SCRAM_KEY_LEN, data, len, out, &n) != NULL &&
	       n == SCRAM_KEY_LEN;
}

static bool random_nonce(char out[B64_LEN(SCRAM_NONCE_LEN) + 1])
{
	uint8_t raw[SCRAM_NONCE_LEN];
	struct sbuf b;

	/* base64 of random bytes: printable, never ',' */
	if (RAND_bytes(raw, sizeof(raw)) != 1)
		return false;
	sb_init(&b, out, B64_LEN(SCRAM_NONCE_LEN) + 1);
	b64_put(&b, raw, sizeof(raw));
	return b.ok;
}

bool scram_equal(const void *a, const void *b, size_t len)
{
	return CRYPTO_memcmp(a, b, len) == 0;
}

/* ---- secrets and keys ---- */

/*
 * PostgreSQL runs the password through SASLprep (RFC 4013) first.  We do not:
 * an ASCII password is unchanged by SASLprep anyway, and anything else is used
 * as the raw bytes.  That matches PostgreSQL's own fallback for passwords that
 * are not valid UTF-8, but not for non-ASCII passwords that SASLprep would
 * normalise (NFKC, mapped spaces, removed characters); such users must store
 * a SCRAM secret rather than a plaintext password.
 */
bool scram_keys_from_password(const char *password, const uint8_t *salt, size_t salt_len,
			      int iterations, struct scram_keys *out)
{
	uint8_t salted[SCRAM_KEY_LEN];
	size_t plen;
	bool ok;

	if (!password || !salt || !out || salt_len == 0 || salt_len > INT_MAX ||
	    iterations < 1 || iterations > SCRAM_MAX_ITERATIONS)
		return false;
	plen = strlen(password);
	if (plen > INT_MAX)
		return false;
	ok = PKCS5_PBKDF2_HMAC(password, (int)plen, salt, (int)salt_len, iterations, EVP_sha256(),
			       SCRAM_KEY_LEN, salted) == 1 &&
	     hmac_sha256(salted, "Client Key", 10, out->client_key) &&
	     hmac_sha256(salted, "Server Key", 10, out->server_key);
	OPENSSL_cleanse(salted, sizeof(salted));
	if (!ok)
		OPENSSL_cleanse(out, sizeof(*out));
	return ok;
}

bool scram_secret_from_keys(const struct scram_keys *keys, const uint8_t *salt, size_t salt_len,
			    int iterations, struct scram_secret *out)
{
	if (!keys || !salt || !out || salt_len == 0 || salt_len > SCRAM_MAX_SALT || iterations < 1)
		return false;
	memset(out, 0, sizeof(*out));
	out->iterations = iterations;
	memcpy(out->salt, salt, salt_len);
	out->salt_len = salt_len;
	memcpy(out->server_key, keys->server_key, SCRAM_KEY_LEN);
	return sha256(keys->client_key, SCRAM_KEY_LEN, out->stored_key);
}

bool scram_secret_from_password(const char *password, struct scram_secret *out)
{
	uint8_t salt[SCRAM_SALT_LEN];
	struct scram_keys keys;
	bool ok;

	if (!out || RAND_bytes(salt, sizeof(salt)) != 1)
		return false;
	ok = scram_keys_from_password(password, salt, sizeof(salt), SCRAM_DEFAULT_ITERATIONS,
				      &keys) &&
	     scram_secret_from_keys(&keys, salt, sizeof(salt), SCRAM_DEFAULT_ITERATIONS, out);
	OPENSSL_cleanse(&keys, sizeof(keys));
	return ok;
}

/* "SCRAM-SHA-256$<iter>:<salt>$<StoredKey>:<ServerKey>", PostgreSQL's
 * parse_scram_secret with strict base64. */
bool scram_parse_secret(const char *text, struct scram_secret *out)
{
	static const char prefix[] = "SCRAM-SHA-256$";
	struct scram_secret sec;
	const char *p, *q;

	if (!text || !out || strncmp(text, prefix, sizeof(prefix) - 1) != 0)
		return false;
	memset(&sec, 0, sizeof(sec));
	p = text + sizeof(prefix) - 1;

	q = strchr(p, ':');
	if (!q || !parse_iterations(p, (size_t)(q - p), INT_MAX, &sec.iterations))
		return false;
	p = q + 1;

	q = strchr(p, '$');
	if (!q || !b64_decode(p, (size_t)(q - p), sec.salt, sizeof(sec.salt), &sec.salt_len) ||
	    sec.salt_len == 0)
		return false;
	p = q + 1;

	q = strchr(p, ':');
	if (!q || !b64_decode_exact(p, (size_t)(q - p), sec.stored_key, SCRAM_KEY_LEN))
		goto fail;
	p = q + 1;

	if (!b64_decode_exact(p, strlen(p), sec.server_key, SCRAM_KEY_LEN))
		goto fail;
	*out = sec;
	OPENSSL_cleanse(&sec, sizeof(sec));
	return true;
fail:
	OPENSSL_cleanse(&sec, sizeof(sec));
	return false;
}

bool scram_format_secret(const struct scram_secret *secret, char *out, size_t outlen)
{
	struct sbuf b;

	if (!secret || secret->iterations < 1 || secret->salt_len == 0 ||
	    secret->salt_len > SCRAM_MAX_SALT)
		return false;
	sb_init(&b, out, out ? outlen : 0);
	sb_str(&b, "SCRAM-SHA-256$");
	sb_int(&b, secret->iterations);
	sb_str(&b, ":");
	b64_put(&b, secret->salt, secret->salt_len);
	sb_str(&b, "$");
	b64_put(&b, secret->stored_key, SCRAM_KEY_LEN);
	sb_str(&b, ":");
	b64_put(&b, secret->server_key, SCRAM_KEY_LEN);
	return b.ok;
}

/* AuthMessage = client-first-bare "," server-first "," client-final-without-proof */
static bool auth_message(struct sbuf *b, const char *bare, const char *server_first,
			 const char *final_wo_proof, size_t final_len)
{
	sb_str(b, bare);
	sb_str(b, ",");
	sb_str(b, server_first);
	sb_str(b, ",");
	sb_put(b, final_wo_proof, final_len);
	return b->ok;
}

/* ---- pgfleet as the server ---- */

static bool server_fail(struct scram_server *s)
{
	OPENSSL_cleanse(s, sizeof(*s));
	s->state = -1;
	return false;
}

bool scram_server_first_nonce(struct scram_server *s, const struct scram_secret *secret,
			      const uint8_t *msg, size_t len, const char *server_nonce, char *out,
			      size_t outlen, size_t *outn)
{
	char buf[SCRAM_MAX_MSG];
	struct scram_secret sec;
	const char *p, *bare, *user, *cnonce;
	size_t ulen, cnlen, snlen;
	struct sbuf b;
	char flag;

	if (!s)
		return false;
	if (!secret || !server_nonce)
		return server_fail(s);
	sec = *secret; /* secret may point into *s */
	OPENSSL_cleanse(s, sizeof(*s));
	s->secret = sec;
	OPENSSL_cleanse(&sec, sizeof(sec));
	if (s->secret.iterations < 1 || s->secret.salt_len == 0 ||
	    s->secret.salt_len > SCRAM_MAX_SALT)
		return server_fail(s);
	if (!copy_msg(buf, msg, len))
		return server_fail(s);

	/* gs2-header: cbind-flag "," [authzid] "," */
	p = buf;
	flag = *p;
	if (flag != 'n' && flag != 'y') /* 'p' = channel binding: not offered */
		return server_fail(s);
	p++;
	if (!skip_comma(&p) || !skip_comma(&p)) /* an "a=" authzid is not supported */
		return server_fail(s);

	/* client-first-message-bare: ["m=" ext ","] "n=" user "," "r=" nonce ["," ext] */
	bare = p;
	if (!read_attr(&p, 'n', &user, &ulen) || !skip_comma(&p) ||
	    !read_attr(&p, 'r', &cnonce, &cnlen) || *p != '\0' || !nonce_ok(cnonce, cnlen))
		return server_fail(s);
	(void)user; /* ignored, as PostgreSQL does: the startup packet's user counts */

	snlen = strlen(server_nonce);
	if (!nonce_ok(server_nonce, snlen) || cnlen + snlen >= sizeof(s->nonce))
		return server_fail(s);
	memcpy(s->nonce, cnonce, cnlen);
	memcpy(s->nonce + cnlen, server_nonce, snlen);
	s->nonce[cnlen + snlen] = '\0';
	memcpy(s->client_first_bare, bare, strlen(bare) + 1);
	s->gs2_flag = flag;

	sb_init(&b, s->server_first, sizeof(s->server_first));
	sb_str(&b, "r=");
	sb_str(&b, s->nonce);
	sb_str(&b, ",s=");
	b64_put(&b, s->secret.salt, s->secret.salt_len);
	sb_str(&b, ",i=");
	sb_int(&b, s->secret.iterations);
	if (!b.ok || !emit(s->server_first, b.len, out, outlen, outn))
		return server_fail(s);
	s->state = 1;
	return true;
}

bool scram_server_first(struct scram_server *s, const struct scram_secret *secret,
			const uint8_t *msg, size_t len, char *out, size_t outlen, size_t *outn)
{
	char snonce[B64_LEN(SCRAM_NONCE_LEN) + 1];

	if (!random_nonce(snonce))
		return s ? server_fail(s) : false;
	return scram_server_first_nonce(s, secret, msg, len, snonce, out, outlen, outn);
}

bool scram_server_final(struct scram_server *s, const uint8_t *msg, size_t len, char *out,
			size_t outlen, size_t *outn)
{
	char buf[SCRAM_MAX_MSG];
	char am[AUTH_MSG_MAX];
	char reply[4 + B64_LEN(SCRAM_KEY_LEN)];
	uint8_t proof[SCRAM_KEY_LEN], sig[SCRAM_KEY_LEN], key[SCRAM_KEY_LEN], h[SCRAM_KEY_LEN];
	const char *p, *cb, *nonce, *pr;
	size_t cblen, nlen, prlen, wo_proof;
	struct sbuf b;
	bool ok;

	if (!s)
		return false;
	if (s->state != 1 || !copy_msg(buf, msg, len))
		return server_fail(s);

	/* "c=" cbind "," "r=" nonce "," "p=" proof, nothing else */
	p = buf;
	if (!read_attr(&p, 'c', &cb, &cblen) || !skip_comma(&p) ||
	    !read_attr(&p, 'r', &nonce, &nlen) || !skip_comma(&p))
		return server_fail(s);
	wo_proof = (size_t)(p - buf) - 1; /* up to, not including, ",p=" */
	if (!read_attr(&p, 'p', &pr, &prlen) || *p != '\0')
		return server_fail(s);

	/* c= must echo the gs2 header of client-first ("n,," or "y,,"), no cbind data */
	if (cblen != 4 || memcmp(cb, s->gs2_flag == 'y' ? GS2_Y_B64 : GS2_N_B64, 4) != 0)
		return server_fail(s);
	if (nlen != strlen(s->nonce) || memcmp(nonce, s->nonce, nlen) != 0)
		return server_fail(s);
	if (!b64_decode_exact(pr, prlen, proof, SCRAM_KEY_LEN))
		return server_fail(s);

	/* ClientKey = proof XOR HMAC(StoredKey, AuthMessage); valid if H(ClientKey) == StoredKey */
	sb_init(&b, am, sizeof(am));
	ok = auth_message(&b, s->client_first_bare, s->server_first, buf, wo_proof) &&
	     hmac_sha256(s->secret.stored_key, am, b.len, sig);
	if (ok) {
		for (size_t i = 0; i < SCRAM_KEY_LEN; i++)
			key[i] = proof[i] ^ sig[i];
		ok = sha256(key, SCRAM_KEY_LEN, h) &&
		     scram_equal(h, s->secret.stored_key, SCRAM_KEY_LEN);
	}
	/* ServerSignature = HMAC(ServerKey, AuthMessage) */
	ok = ok && hmac_sha256(s->secret.server_key, am, b.len, sig);
	if (ok) {
		sb_init(&b, reply, sizeof(reply));
		sb_str(&b, "v=");
		b64_put(&b, sig, SCRAM_KEY_LEN);
		ok = b.ok && emit(reply, b.len, out, outlen, outn);
	}
	if (ok) {
		memcpy(s->client_key, key, SCRAM_KEY_LEN);
		s->have_client_key = true;
		s->state = 2;
	}
	OPENSSL_cleanse(proof, sizeof(proof));
	OPENSSL_cleanse(sig, sizeof(sig));
	OPENSSL_cleanse(key, sizeof(key));
	OPENSSL_cleanse(h, sizeof(h));
	OPENSSL_cleanse(am, sizeof(am));
	return ok ? true : server_fail(s);
}

/* ---- pgfleet as the client ---- */

static bool client_fail(struct scram_client *c)
{
	OPENSSL_cleanse(c, sizeof(*c));
	c->state = -1;
	return false;
}

bool scram_client_first_nonce(struct scram_client *c, const char *user, const char *nonce,
			      char *out, size_t outlen, size_t *outn)
{
	char msg[SCRAM_MAX_MSG];
	struct sbuf b;
	size_t nlen;

	if (!c)
		return false;
	OPENSSL_cleanse(c, sizeof(*c));
	nlen = nonce ? strlen(nonce) : 0;
	if (!nonce_ok(nonce, nlen) || nlen >= sizeof(c->client_nonce))
		return client_fail(c);
	memcpy(c->client_nonce, nonce, nlen + 1);

	/* saslname escapes ',' and '=' (RFC 5802 5.1) */
	sb_init(&b, c->client_first_bare, sizeof(c->client_first_bare));
	sb_str(&b, "n=");
	for (const char *u = user ? user : ""; *u; u++) {
		if (*u == ',')
			sb_str(&b, "=2C");
		else if (*u == '=')
			sb_str(&b, "=3D");
		else
			sb_put(&b, u, 1);
	}
	sb_str(&b, ",r=");
	sb_str(&b, c->client_nonce);
	if (!b.ok)
		return client_fail(c);

	sb_init(&b, msg, sizeof(msg));
	sb_str(&b, "n,,"); /* no channel binding, no authzid */
	sb_str(&b, c->client_first_bare);
	if (!b.ok || !emit(msg, b.len, out, outlen, outn))
		return client_fail(c);
	c->state = 1;
	return true;
}

bool scram_client_first(struct scram_client *c, char *out, size_t outlen, size_t *outn)
{
	char nonce[B64_LEN(SCRAM_NONCE_LEN) + 1];

	if (!random_nonce(nonce))
		return c ? client_fail(c) : false;
	return scram_client_first_nonce(c, NULL, nonce, out, outlen, outn);
}

bool scram_client_parse_first(struct scram_client *c, const uint8_t *msg, size_t len)
{
	char buf[SCRAM_MAX_MSG];
	const char *p, *nonce, *salt, *iter;
	size_t nlen, slen, ilen, cnlen;

	if (!c)
		return false;
	if (c->state != 1 || c->nonce[0] != '\0' || !copy_msg(buf, msg, len))
		return client_fail(c);

	/* "r=" nonce "," "s=" salt "," "i=" iterations, nothing else ("m=" refused) */
	p = buf;
	if (!read_attr(&p, 'r', &nonce, &nlen) || !skip_comma(&p) ||
	    !read_attr(&p, 's', &salt, &slen) || !skip_comma(&p) ||
	    !read_attr(&p, 'i', &iter, &ilen) || *p != '\0')
		return client_fail(c);

	/* the server's nonce is ours with its own appended */
	cnlen = strlen(c->client_nonce);
	if (!nonce_ok(nonce, nlen) || nlen <= cnlen || nlen >= sizeof(c->nonce) ||
	    memcmp(nonce, c->client_nonce, cnlen) != 0)
		return client_fail(c);
	if (!b64_decode(salt, slen, c->salt, sizeof(c->salt), &c->salt_len) || c->salt_len == 0)
		return client_fail(c);
	if (!parse_iterations(iter, ilen, SCRAM_MAX_ITERATIONS, &c->iterations))
		return client_fail(c);

	memcpy(c->nonce, nonce, nlen);
	c->nonce[nlen] = '\0';
	memcpy(c->server_first, buf, len + 1);
	return true;
}

bool scram_client_final(struct scram_client *c, const struct scram_keys *keys, char *out,
			size_t outlen, size_t *outn)
{
	char msg[SCRAM_MAX_MSG];
	char am[AUTH_MSG_MAX];
	uint8_t stored[SCRAM_KEY_LEN], sig[SCRAM_KEY_LEN], proof[SCRAM_KEY_LEN];
	struct sbuf b, a;
	size_t wo_proof;
	bool ok;

	if (!c)
		return false;
	if (c->state != 1 || c->nonce[0] == '\0' || !keys)
		return client_fail(c);

	sb_init(&b, msg, sizeof(msg));
	sb_str(&b, "c=" GS2_N_B64 ",r=");
	sb_str(&b, c->nonce);
	wo_proof = b.len;
	if (!b.ok)
		return client_fail(c);

	/* proof = ClientKey XOR HMAC(H(ClientKey), AuthMessage) */
	sb_init(&a, am, sizeof(am));
	ok = auth_message(&a, c->client_first_bare, c->server_first, msg, wo_proof) &&
	     sha256(keys->client_key, SCRAM_KEY_LEN, stored) &&
	     hmac_sha256(stored, am, a.len, sig) &&
	     hmac_sha256(keys->server_key, am, a.len, c->server_signature);
	if (ok) {
		for (size_t i = 0; i < SCRAM_KEY_LEN; i++)
			proof[i] = keys->client_key[i] ^ sig[i];
		sb_str(&b, ",p=");
		b64_put(&b, proof, SCRAM_KEY_LEN);
		ok = b.ok && emit(msg, b.len, out, outlen, outn);
	}
	OPENSSL_cleanse(stored, sizeof(stored));
	OPENSSL_cleanse(sig, sizeof(sig));
	OPENSSL_cleanse(proof, sizeof(proof));
	OPENSSL_cleanse(msg, sizeof(msg));
	OPENSSL_cleanse(am, sizeof(am));
	if (!ok)
		return client_fail(c);
	c->state = 2;
	return true;
}

bool scram_client_verify(struct scram_client *c, const uint8_t *msg, size_t len)
{
	char buf[SCRAM_MAX_MSG];
	uint8_t sig[SCRAM_KEY_LEN];
	const char *p, *v;
	size_t vlen;
	bool ok;

	if (!c)
		return false;
	if (c->state != 2 || !copy_msg(buf, msg, len))
		return client_fail(c);

	/* "e=<error>" is the server refusing us; otherwise "v=" signature, nothing else */
	p = buf;
	ok = read_attr(&p, 'v', &v, &vlen) && *p == '\0' &&
	     b64_decode_exact(v, vlen, sig, SCRAM_KEY_LEN) &&
	     scram_equal(sig, c->server_signature, SCRAM_KEY_LEN);
	OPENSSL_cleanse(sig, sizeof(sig));
	if (!ok)
		return client_fail(c);
	OPENSSL_cleanse(c->server_signature, sizeof(c->server_signature));
	c->state = 3;
	return true;
}

/* ---- md5 ---- */

static void hex32(const uint8_t d[16], char *out)
{
	static const char hex[] = "0123456789abcdef";

	for (int i = 0; i < 16; i++) {
		out[2 * i] = hex[d[i] >> 4];
		out[2 * i + 1] = hex[d[i] & 15];
	}
}

/* "md5" + hex(md5(a || b)) into out[36]; "" on failure, which matches nothing.
 * Computed aside first, so a or b may point into out. */
static void md5_hex2(const void *a, size_t alen, const void *b, size_t blen, char out[36])
{
	EVP_MD_CTX *ctx = EVP_MD_CTX_new();
	uint8_t d[16];
	unsigned n = 0;
	bool ok;

	ok = ctx && EVP_DigestInit_ex(ctx, EVP_md5(), NULL) == 1 &&
	     EVP_DigestUpdate(ctx, a, alen) == 1 && EVP_DigestUpdate(ctx, b, blen) == 1 &&
	     EVP_DigestFinal_ex(ctx, d, &n) == 1 && n == 16;
	EVP_MD_CTX_free(ctx);
	out[0] = '\0';
	if (!ok)
		return;
	memcpy(out, "md5", 3);
	hex32(d, out + 3);
	out[35] = '\0';
	OPENSSL_cleanse(d, sizeof(d));
}

/* PostgreSQL's pg_md5_encrypt: the salt is the user name, appended. */
void md5_password_hash(const char *user, const char *password, char out[36])
{
	if (!out)
		return;
	if (!user || !password) {
		out[0] = '\0';
		return;
	}
	md5_hex2(password, strlen(password), user, strlen(user), out);
}

static bool md5_hash_ok(const char *h)
{
	if (!h || strnlen(h, 36) != 35 || strncmp(h, "md5", 3) != 0)
		return false;
	for (int i = 3; i < 35; i++)
		if (!((h[i] >= '0' && h[i] <= '9') || (h[i] >= 'a' && h[i] <= 'f')))
			return false;
	return true;
}

void md5_salted_response(const char *md5hash, const uint8_t salt[4], char out[36])
{
	if (!out)
		return;
	if (!salt || !md5_hash_ok(md5hash)) {
		out[0] = '\0';
		return;
	}
	md5_hex2(md5hash + 3, 32, salt, 4, out);
}
