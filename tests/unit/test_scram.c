/*
 * test_scram.c: SCRAM-SHA-256 both ways and the md5 scheme, against the RFC
 * 7677 test vector, values produced by a real PostgreSQL 15, and our own
 * client talking to our own server; plus tables of malformed and tampered
 * messages that must be refused without a crash (run under valgrind/ASan).
 */
#include "harness.h"
#include "scram.h"

#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <openssl/evp.h>
#include <openssl/hmac.h>

#define U8(s) ((const uint8_t *)(s))

/* RFC 7677 section 3: user "user", password "pencil". */
#define RFC_PASSWORD "pencil"
#define RFC_CNONCE "rOprNGfwEbeRWgbNEkqO"
#define RFC_SNONCE "%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0"
#define RFC_CLIENT_FIRST "n,,n=user,r=" RFC_CNONCE
#define RFC_SERVER_FIRST "r=" RFC_CNONCE RFC_SNONCE ",s=W22ZaJ0SNY7soEsUEjb6gQ==,i=4096"
#define RFC_CLIENT_FINAL                                                                           \
	"c=biws,r=" RFC_CNONCE RFC_SNONCE ",p=dHzbZapWIk4jUhN+Ute9ytag9zjfMHgsqmmiz7AndVQ="
#define RFC_SERVER_FINAL "v=6rriTRBi23WpRR/wtup+mMhUZUn/dB5nLTJRsjl95G4="

/*
 * What PostgreSQL 15 stored for password 'secret' (password_encryption =
 * scram-sha-256, CREATE ROLE ... PASSWORD 'secret', SELECT rolpassword FROM
 * pg_authid) in a scratch cluster.  Cross-checked with Python:
 *   salt = b64decode('ugCVAS5SMVdvoWMTUQyNfw==')
 *   sp = hashlib.pbkdf2_hmac('sha256', b'secret', salt, 4096)
 *   ck = hmac.new(sp, b'Client Key', sha256).digest()
 *   sk = hmac.new(sp, b'Server Key', sha256).digest()
 *   StoredKey = sha256(ck), ServerKey = sk  (both base64)
 * which also gives the ClientKey below.
 */
#define PG_SALT "ugCVAS5SMVdvoWMTUQyNfw=="
#define PG_STORED "NmWN8FJjm+5e6kFHJJxL8RLenWw90BGIp6lcDkBIeU8="
#define PG_SERVER "CJJ2cE/zszQz9JVBBXA4NZLjB9T+qSWWMe+yDiYaMOU="
#define PG_SECRET "SCRAM-SHA-256$4096:" PG_SALT "$" PG_STORED ":" PG_SERVER
#define PG_CLIENT_KEY_B64 "n9E7zgzPtkdyiGOZNdCcLjepXFBldfJdwQrLapRLgxc="

/*
 * md5 for user "app", password "secret": PostgreSQL 15 stored
 * "md56a422f785c9e20873908ce25d1736ae2" (password_encryption = md5), and
 * Python agrees: 'md5' + hashlib.md5(b'secret' + b'app').hexdigest().
 * The response to salt 01 02 03 04, from Python:
 *   'md5' + hashlib.md5(b'6a422f785c9e20873908ce25d1736ae2' + bytes([1,2,3,4])).hexdigest()
 */
#define MD5_APP_SECRET "md56a422f785c9e20873908ce25d1736ae2"
#define MD5_APP_SECRET_SALTED "md5911f527656472583a006e7727877b33e"

/* Keys for PG_SECRET's password, computed once: PBKDF2 is slow under valgrind. */
static struct scram_secret pg_secret;
static struct scram_keys pg_keys;

static void b64(const uint8_t *in, size_t n, char *out)
{
	EVP_EncodeBlock((unsigned char *)out, in, (int)n);
}

/* Runs our client through client-final against a fixed server-first, for tests
 * of the client side that need state 2. */
static bool client_to_final(struct scram_client *c, char *final, size_t cap)
{
	char buf[SCRAM_MAX_MSG];
	size_t n = 0;
	char sfirst[SCRAM_MAX_MSG];

	if (!scram_client_first_nonce(c, NULL, "abc", buf, sizeof(buf), &n))
		return false;
	snprintf(sfirst, sizeof(sfirst), "r=abcXYZ,s=ugCVAS5SMVdvoWMTUQyNfw==,i=4096");
	return scram_client_parse_first(c, U8(sfirst), strlen(sfirst)) &&
	       scram_client_final(c, &pg_keys, final, cap, &n);
}

static void test_rfc7677_client(void)
{
	struct scram_client c;
	struct scram_keys keys;
	char out[SCRAM_MAX_MSG];
	size_t n = 0;

	CHECK(scram_client_first_nonce(&c, "user", RFC_CNONCE, out, sizeof(out), &n));
	CHECK_STR(out, RFC_CLIENT_FIRST);
	CHECK(n == strlen(RFC_CLIENT_FIRST));
	CHECK(scram_client_parse_first(&c, U8(RFC_SERVER_FIRST), strlen(RFC_SERVER_FIRST)));
	CHECK(c.iterations == 4096);
	CHECK(c.salt_len == 16);
	CHECK(scram_keys_from_password(RFC_PASSWORD, c.salt, c.salt_len, c.iterations, &keys));
	CHECK(scram_client_final(&c, &keys, out, sizeof(out), &n));
	CHECK_STR(out, RFC_CLIENT_FINAL);
	CHECK(n == strlen(RFC_CLIENT_FINAL));
	CHECK(scram_client_verify(&c, U8(RFC_SERVER_FINAL), strlen(RFC_SERVER_FINAL)));
	CHECK(c.state == 3);
}

static void test_rfc7677_server(void)
{
	static const uint8_t salt[] = {0x5b, 0x6d, 0x99, 0x68, 0x9d, 0x12, 0x35, 0x8e,
				       0xec, 0xa0, 0x4b, 0x14, 0x12, 0x36, 0xfa, 0x81};
	struct scram_keys keys;
	struct scram_secret sec;
	struct scram_server s;
	char out[SCRAM_MAX_MSG];
	size_t n = 0;

	CHECK(scram_keys_from_password(RFC_PASSWORD, salt, sizeof(salt), 4096, &keys));
	CHECK(scram_secret_from_keys(&keys, salt, sizeof(salt), 4096, &sec));
	CHECK(scram_server_first_nonce(&s, &sec, U8(RFC_CLIENT_FIRST), strlen(RFC_CLIENT_FIRST),
				       RFC_SNONCE, out, sizeof(out), &n));
	CHECK_STR(out, RFC_SERVER_FIRST);
	CHECK(n == strlen(RFC_SERVER_FIRST));
	CHECK(scram_server_final(&s, U8(RFC_CLIENT_FINAL), strlen(RFC_CLIENT_FINAL), out,
				 sizeof(out), &n));
	CHECK_STR(out, RFC_SERVER_FINAL);
	CHECK(s.state == 2);
	CHECK(s.have_client_key && memcmp(s.client_key, keys.client_key, SCRAM_KEY_LEN) == 0);
}

static void test_pg_secret(void)
{
	struct scram_secret sec;
	char text[SCRAM_SECRET_TEXT_LEN], ck[64];

	CHECK(scram_parse_secret(PG_SECRET, &pg_secret));
	CHECK(pg_secret.iterations == 4096 && pg_secret.salt_len == 16);
	CHECK(scram_keys_from_password("secret", pg_secret.salt, pg_secret.salt_len,
				       pg_secret.iterations, &pg_keys));
	b64(pg_keys.client_key, SCRAM_KEY_LEN, ck);
	CHECK_STR(ck, PG_CLIENT_KEY_B64);
	CHECK(scram_secret_from_keys(&pg_keys, pg_secret.salt, pg_secret.salt_len,
				     pg_secret.iterations, &sec));
	CHECK(memcmp(sec.stored_key, pg_secret.stored_key, SCRAM_KEY_LEN) == 0);
	CHECK(memcmp(sec.server_key, pg_secret.server_key, SCRAM_KEY_LEN) == 0);
	CHECK(scram_format_secret(&sec, text, sizeof(text)));
	CHECK_STR(text, PG_SECRET);
	CHECK(!scram_format_secret(&sec, text, strlen(PG_SECRET))); /* no room for the NUL */
}

static void test_secret_from_password(void)
{
	struct scram_secret a, b, back;
	struct scram_keys keys;
	char ta[SCRAM_SECRET_TEXT_LEN], tb[SCRAM_SECRET_TEXT_LEN];

	CHECK(scram_secret_from_password("secret", &a));
	CHECK(scram_secret_from_password("secret", &b));
	CHECK(a.iterations == SCRAM_DEFAULT_ITERATIONS && a.salt_len == SCRAM_SALT_LEN);
	CHECK(memcmp(a.salt, b.salt, SCRAM_SALT_LEN) != 0); /* fresh salt each time */
	CHECK(scram_format_secret(&a, ta, sizeof(ta)));
	CHECK(scram_format_secret(&b, tb, sizeof(tb)));
	/* "SCRAM-SHA-256$4096:" + 24 (salt) + "$" + 44 + ":" + 44 */
	CHECK(strncmp(ta, "SCRAM-SHA-256$4096:", 19) == 0 &&
	      strlen(ta) == 19 + 24 + 1 + 44 + 1 + 44);
	CHECK(ta[19 + 24] == '$' && ta[19 + 24 + 1 + 44] == ':');
	CHECK(scram_parse_secret(ta, &back) && memcmp(&back.stored_key, &a.stored_key, 32) == 0 &&
	      memcmp(&back.server_key, &a.server_key, 32) == 0 && back.salt_len == a.salt_len);
	/* the same password and salt give the same keys */
	CHECK(scram_keys_from_password("secret", a.salt, a.salt_len, a.iterations, &keys));
	CHECK(scram_secret_from_keys(&keys, a.salt, a.salt_len, a.iterations, &back) &&
	      memcmp(back.stored_key, a.stored_key, SCRAM_KEY_LEN) == 0);
}

static void test_parse_secret_malformed(void)
{
	static const char *const bad[] = {
		"",
		"SCRAM-SHA-256$",
		MD5_APP_SECRET,
		"SCRAM-SHA-1$4096:" PG_SALT "$" PG_STORED ":" PG_SERVER,
		"scram-sha-256$4096:" PG_SALT "$" PG_STORED ":" PG_SERVER,
		"SCRAM-SHA-256$0:" PG_SALT "$" PG_STORED ":" PG_SERVER,
		"SCRAM-SHA-256$-1:" PG_SALT "$" PG_STORED ":" PG_SERVER,
		"SCRAM-SHA-256$4096x:" PG_SALT "$" PG_STORED ":" PG_SERVER,
		"SCRAM-SHA-256$99999999999:" PG_SALT "$" PG_STORED ":" PG_SERVER,
		"SCRAM-SHA-256$:" PG_SALT "$" PG_STORED ":" PG_SERVER,
		"SCRAM-SHA-256$4096:$" PG_STORED ":" PG_SERVER,		 /* empty salt */
		"SCRAM-SHA-256$4096:ugCVAS5SMVdvoWMTUQyNfw=$" PG_STORED ":" PG_SERVER, /* bad b64 */
		"SCRAM-SHA-256$4096:" PG_SALT "$NmWN8FJjm+5e6kFH:" PG_SERVER,	  /* short key */
		"SCRAM-SHA-256$4096:" PG_SALT "$" PG_STORED ":" PG_SERVER "AAAA", /* long key */
		"SCRAM-SHA-256$4096:" PG_SALT "$" PG_STORED ":",
		"SCRAM-SHA-256$4096:" PG_SALT "$" PG_STORED,
		"SCRAM-SHA-256$4096:" PG_SALT,
		"SCRAM-SHA-256$4096:" PG_SALT "$" PG_STORED ":" PG_SERVER ":extra",
		"SCRAM-SHA-256$4096:" PG_SALT "$" PG_STORED ":" PG_SERVER " ",
		"SCRAM-SHA-256$4096:" PG_SALT "$" PG_SERVER ":" PG_STORED "$",
	};
	struct scram_secret sec;
	int rejected = 0;

	for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
		bool ok = scram_parse_secret(bad[i], &sec);

		if (ok)
			fprintf(stderr, "accepted bad secret %zu: %s\n", i, bad[i]);
		rejected += !ok;
	}
	CHECK(rejected == (int)(sizeof(bad) / sizeof(bad[0])));
	CHECK(!scram_parse_secret(NULL, &sec));
}

/* Our client against our server, random nonces, a fresh secret. */
static void test_round_trip(void)
{
	struct scram_secret sec;
	struct scram_keys keys, passthrough;
	struct scram_server s, s2;
	struct scram_client c;
	char m1[SCRAM_MAX_MSG], m2[SCRAM_MAX_MSG], m3[SCRAM_MAX_MSG], m4[SCRAM_MAX_MSG];
	size_t n1 = 0, n2 = 0, n3 = 0, n4 = 0;

	CHECK(scram_secret_from_password("s3cr3t pass", &sec));
	CHECK(scram_client_first(&c, m1, sizeof(m1), &n1));
	CHECK(strncmp(m1, "n,,n=,r=", 8) == 0 && n1 == 8 + 32);
	CHECK(scram_server_first(&s, &sec, U8(m1), n1, m2, sizeof(m2), &n2));
	CHECK(scram_client_parse_first(&c, U8(m2), n2));
	CHECK(scram_keys_from_password("s3cr3t pass", c.salt, c.salt_len, c.iterations, &keys));
	CHECK(scram_client_final(&c, &keys, m3, sizeof(m3), &n3));
	CHECK(scram_server_final(&s, U8(m3), n3, m4, sizeof(m4), &n4));
	CHECK(scram_client_verify(&c, U8(m4), n4));
	CHECK(s.have_client_key && memcmp(s.client_key, keys.client_key, SCRAM_KEY_LEN) == 0);

	/* pass-through: the recovered ClientKey plus the secret's ServerKey log in
	 * to a server holding the same secret, with no password */
	memcpy(passthrough.client_key, s.client_key, SCRAM_KEY_LEN);
	memcpy(passthrough.server_key, sec.server_key, SCRAM_KEY_LEN);
	CHECK(scram_client_first(&c, m1, sizeof(m1), &n1) &&
	      scram_server_first(&s2, &sec, U8(m1), n1, m2, sizeof(m2), &n2) &&
	      scram_client_parse_first(&c, U8(m2), n2) &&
	      scram_client_final(&c, &passthrough, m3, sizeof(m3), &n3) &&
	      scram_server_final(&s2, U8(m3), n3, m4, sizeof(m4), &n4) &&
	      scram_client_verify(&c, U8(m4), n4));

	/* a replayed client-final against a new exchange has the wrong nonce */
	CHECK(scram_server_first(&s2, &sec, U8(m1), n1, m2, sizeof(m2), &n2));
	CHECK(!scram_server_final(&s2, U8(m3), n3, m4, sizeof(m4), &n4));
}

static void test_wrong_password(void)
{
	struct scram_keys wrong;
	struct scram_server s;
	struct scram_client c;
	char m1[SCRAM_MAX_MSG], m2[SCRAM_MAX_MSG], m3[SCRAM_MAX_MSG], m4[SCRAM_MAX_MSG];
	size_t n1 = 0, n2 = 0, n3 = 0, n4 = 0;

	CHECK(scram_keys_from_password("Secret", pg_secret.salt, pg_secret.salt_len,
				       pg_secret.iterations, &wrong));
	CHECK(scram_client_first(&c, m1, sizeof(m1), &n1) &&
	      scram_server_first(&s, &pg_secret, U8(m1), n1, m2, sizeof(m2), &n2) &&
	      scram_client_parse_first(&c, U8(m2), n2) &&
	      scram_client_final(&c, &wrong, m3, sizeof(m3), &n3));
	CHECK(!scram_server_final(&s, U8(m3), n3, m4, sizeof(m4), &n4));
	CHECK(s.state == -1 && !s.have_client_key && n4 == 0);
	/* a failed exchange stays failed */
	CHECK(!scram_server_final(&s, U8(m3), n3, m4, sizeof(m4), &n4));
}

/* client-first messages for our server: which are accepted */
static void test_server_first_table(void)
{
	static const struct {
		const char *msg;
		bool ok;
	} cases[] = {
		{"n,,n=,r=abc", true},
		{"y,,n=,r=abc", true},
		{"n,,n=user,r=abc", true},
		{"n,,n=us=2Cer,r=abc", true},
		{"", false},
		{"n", false},
		{"n,", false},
		{"n,,", false},
		{"n,,n=", false},
		{"n,,n=,", false},
		{"n,,n=,r=", false},
		{"n,,r=abc", false},
		{"p=tls-server-end-point,,n=,r=abc", false}, /* channel binding */
		{"p,,n=,r=abc", false},
		{"x,,n=,r=abc", false},
		{"n,a=bob,n=,r=abc", false},  /* authzid */
		{"n,,m=ext,n=,r=abc", false}, /* mandatory extension */
		{"n,,n=,r=abc,x=ext", false}, /* extensions refused */
		{"n,,n=,r=abc,", false},
		{"n,,n=,r=ab c", false}, /* nonce not printable */
		{"n,,n=,r=ab\x7f", false},
		{"n,,n=,r=ab\xc3\xa9", false},
		{"N,,n=,r=abc", false},
		{"n,,n=,R=abc", false},
	};
	struct scram_server s;
	char out[SCRAM_MAX_MSG];
	size_t n = 0;

	for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
		bool ok = scram_server_first(&s, &pg_secret, U8(cases[i].msg),
					     strlen(cases[i].msg), out, sizeof(out), &n);

		if (ok != cases[i].ok)
			fprintf(stderr, "FAIL case %zu \"%s\": got %d\n", i, cases[i].msg, ok);
		CHECK(ok == cases[i].ok);
		if (ok)
			CHECK(strncmp(out, "r=abc", 5) == 0 && n == strlen(out) &&
			      strstr(out, ",s=ugCVAS5SMVdvoWMTUQyNfw==,i=4096") != NULL);
		else
			CHECK(s.state == -1);
	}

	/* embedded NUL, oversized message, NULL, no room for the reply */
	CHECK(!scram_server_first(&s, &pg_secret, U8("n,,n=\0,r=abc"), 12, out, sizeof(out), &n));
	{
		static char big[SCRAM_MAX_MSG + 16];

		memset(big, 'a', sizeof(big) - 1);
		memcpy(big, "n,,n=,r=", 8);
		CHECK(!scram_server_first(&s, &pg_secret, U8(big), strlen(big), out, sizeof(out),
					  &n));
	}
	CHECK(!scram_server_first(&s, &pg_secret, NULL, 5, out, sizeof(out), &n));
	CHECK(!scram_server_first(&s, &pg_secret, U8("n,,n=,r=abc"), 11, out, 20, &n));
	/* a nonce too long to leave room for ours */
	{
		char longn[200];

		memset(longn, 'a', sizeof(longn) - 1);
		longn[sizeof(longn) - 1] = '\0';
		memcpy(longn, "n,,n=,r=", 8);
		CHECK(!scram_server_first(&s, &pg_secret, U8(longn), strlen(longn), out,
					  sizeof(out), &n));
	}
}

/* Deterministic good exchange for the client-final tamper table. */
static bool server_to_first(struct scram_server *s, const char *cfirst)
{
	char out[SCRAM_MAX_MSG];
	size_t n = 0;

	return scram_server_first_nonce(s, &pg_secret, U8(cfirst), strlen(cfirst), "XYZ", out,
					sizeof(out), &n);
}

/* Replaces the first `from` in src by `to`. */
static void replace(const char *src, const char *from, const char *to, char *dst, size_t cap)
{
	const char *at = strstr(src, from);

	if (!at) {
		snprintf(dst, cap, "%s", src);
		return;
	}
	snprintf(dst, cap, "%.*s%s%s", (int)(at - src), src, to, at + strlen(from));
}

static void test_server_final_table(void)
{
	/* tampering with the good client-final: replace the first `from` by `to`
	 * (NULL: built in the loop) */
	static const struct {
		const char *what, *from, *to;
	} cases[] = {
		{"nonce changed", "r=abcXYZ", "r=abcXYQ"},
		{"nonce truncated", "r=abcXYZ", "r=abcXY"},
		{"nonce extended", "r=abcXYZ", "r=abcXYZW"},
		{"client nonce only", "r=abcXYZ", "r=abc"},
		{"c= says y", "c=biws", "c=eSws"},
		{"c= says p", "c=biws", "c=cD10bHMtc2VydmVyLWVuZC1wb2ludCws"},
		{"c= empty", "c=biws", "c="},
		{"c= bad base64", "c=biws", "c=bi!s"},
		{"c= missing", "c=biws,", ""},
		{"r= missing", ",r=abcXYZ", ""},
		{"p= missing", ",p=", ","},
		{"p= bad base64", ",p=", ",p=!"},
		{"p= short", ",p=", ",p=AAAA"},
		{"proof changed", NULL, NULL}, /* built below */
		{"extension", ",p=", ",x=1,p="},
		{"trailing", NULL, NULL},
		{"order", "c=biws,r=abcXYZ", "r=abcXYZ,c=biws"},
	};
	struct scram_server s;
	struct scram_client c;
	char good[SCRAM_MAX_MSG], bad[SCRAM_MAX_MSG], out[SCRAM_MAX_MSG];
	size_t n = 0;

	/* the client's exchange and the server's, with the same nonces */
	CHECK(client_to_final(&c, good, sizeof(good)));
	CHECK(server_to_first(&s, "n,,n=,r=abc"));
	CHECK(scram_server_final(&s, U8(good), strlen(good), out, sizeof(out), &n));
	CHECK(scram_client_verify(&c, U8(out), n));

	for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
		bool ok;

		if (strcmp(cases[i].what, "proof changed") == 0) {
			/* flip one bit of the proof, still valid base64 of 32 bytes */
			snprintf(bad, sizeof(bad), "%s", good);
			char *p = strstr(bad, ",p=") + 3;
			p[0] = p[0] == 'A' ? 'B' : 'A';
		} else if (strcmp(cases[i].what, "trailing") == 0) {
			snprintf(bad, sizeof(bad), "%s,", good);
		} else {
			replace(good, cases[i].from, cases[i].to, bad, sizeof(bad));
		}
		CHECK(server_to_first(&s, "n,,n=,r=abc"));
		ok = scram_server_final(&s, U8(bad), strlen(bad), out, sizeof(out), &n);
		if (ok)
			fprintf(stderr, "FAIL accepted: %s: %s\n", cases[i].what, bad);
		CHECK(!ok && !s.have_client_key);
	}

	/* every proper prefix of the good message is refused (no over-read: valgrind) */
	int accepted = 0;
	for (size_t len = 0; len < strlen(good); len++) {
		char *copy = malloc(len ? len : 1);

		memcpy(copy, good, len);
		CHECK(server_to_first(&s, "n,,n=,r=abc"));
		accepted += scram_server_final(&s, U8(copy), len, out, sizeof(out), &n);
		free(copy);
	}
	CHECK(accepted == 0);

	/* final before first, no room for the reply */
	memset(&s, 0, sizeof(s));
	CHECK(!scram_server_final(&s, U8(good), strlen(good), out, sizeof(out), &n));
	CHECK(server_to_first(&s, "n,,n=,r=abc"));
	CHECK(!scram_server_final(&s, U8(good), strlen(good), out, 10, &n));
}

/*
 * A client-final whose proof is right for its own AuthMessage, computed here
 * with OpenSSL directly: a client that knows the key but lies about c= or r=
 * must still be refused by the explicit checks, not only by the proof.
 */
static void signed_final(const char *cfirst, const char *wo_proof, char *final, size_t cap)
{
	const char *sfirst = "r=abcXYZ,s=ugCVAS5SMVdvoWMTUQyNfw==,i=4096";
	uint8_t stored[32], sig[32], proof[32];
	unsigned len = 32;
	char am[1024], p64[64];

	snprintf(am, sizeof(am), "%s,%s,%s", cfirst + 3, sfirst, wo_proof);
	EVP_Digest(pg_keys.client_key, 32, stored, &len, EVP_sha256(), NULL);
	HMAC(EVP_sha256(), stored, 32, U8(am), strlen(am), sig, &len);
	for (int i = 0; i < 32; i++)
		proof[i] = pg_keys.client_key[i] ^ sig[i];
	b64(proof, 32, p64);
	snprintf(final, cap, "%s,p=%s", wo_proof, p64);
}

static void test_server_signed_final_table(void)
{
	static const struct {
		const char *cfirst, *wo_proof;
		bool ok;
	} cases[] = {
		{"n,,n=,r=abc", "c=biws,r=abcXYZ", true},
		{"y,,n=,r=abc", "c=eSws,r=abcXYZ", true}, /* could bind, knows we cannot */
		{"n,,n=user,r=abc", "c=biws,r=abcXYZ", true},
		{"y,,n=,r=abc", "c=biws,r=abcXYZ", false}, /* c= does not echo the header */
		{"n,,n=,r=abc", "c=eSws,r=abcXYZ", false},
		{"n,,n=,r=abc", "c=cD10bHMtc2VydmVyLWVuZC1wb2ludCws,r=abcXYZ", false},
		{"n,,n=,r=abc", "c=biws,r=abcXYQ", false}, /* not the nonce we sent */
		{"n,,n=,r=abc", "c=biws,r=abc", false},
		{"n,,n=,r=abc", "c=biws,r=abcXYZW", false},
		{"n,,n=,r=abc", "c=biws,r=abcXYZ,x=ext", false},
	};
	struct scram_server s;
	char final[256], out[SCRAM_MAX_MSG];
	size_t n = 0;

	for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
		bool ok;

		signed_final(cases[i].cfirst, cases[i].wo_proof, final, sizeof(final));
		CHECK(server_to_first(&s, cases[i].cfirst));
		ok = scram_server_final(&s, U8(final), strlen(final), out, sizeof(out), &n);
		if (ok != cases[i].ok)
			fprintf(stderr, "FAIL case %zu %s / %s: got %d\n", i, cases[i].cfirst,
				cases[i].wo_proof, ok);
		CHECK(ok == cases[i].ok);
		if (ok)
			CHECK(s.have_client_key &&
			      memcmp(s.client_key, pg_keys.client_key, SCRAM_KEY_LEN) == 0);
	}
}

/* base64 of 64 and 65 'A's */
#define SALT64                                                                                     \
	"QUFBQUFBQUFBQUFBQUFBQUFBQUFBQUFBQUFBQUFBQUFBQUFBQUFBQUFBQUFBQUFBQUFBQUFBQUFBQUFBQUFBQQ=="
#define SALT65                                                                                     \
	"QUFBQUFBQUFBQUFBQUFBQUFBQUFBQUFBQUFBQUFBQUFBQUFBQUFBQUFBQUFBQUFBQUFBQUFBQUFBQUFBQUFBQUE="

/* server-first messages for our client (nonce "abc") */
static void test_client_parse_first_table(void)
{
	static const struct {
		const char *msg;
		bool ok;
	} cases[] = {
		{"r=abcXYZ,s=ugCVAS5SMVdvoWMTUQyNfw==,i=4096", true},
		{"r=abcX,s=QUJD,i=1", true},
		{"r=abcX,s=QQ==,i=10000000", true},
		{"", false},
		{"r=abcXYZ", false},
		{"r=abcXYZ,s=QUJD", false},
		{"r=abcXYZ,s=QUJD,i=", false},
		{"r=abc,s=QUJD,i=4096", false},    /* server added nothing */
		{"r=abdXYZ,s=QUJD,i=4096", false}, /* not our nonce */
		{"r=ab,s=QUJD,i=4096", false},
		{"r=,s=QUJD,i=4096", false},
		{"r=abc XY,s=QUJD,i=4096", false},
		{"r=abcXYZ,s=,i=4096", false},
		{"r=abcXYZ,s=QUJ,i=4096", false},  /* length not a multiple of 4 */
		{"r=abcXYZ,s=QU=D,i=4096", false}, /* padding inside */
		{"r=abcXYZ,s=QR==,i=4096", false}, /* non-canonical */
		{"r=abcXYZ,s=QUJD\n,i=4096", false},
		{"r=abcXYZ,s=QUJD,i=0", false},
		{"r=abcXYZ,s=QUJD,i=-1", false},
		{"r=abcXYZ,s=QUJD,i=+4096", false},
		{"r=abcXYZ,s=QUJD,i=4096x", false},
		{"r=abcXYZ,s=QUJD,i=10000001", false}, /* above SCRAM_MAX_ITERATIONS */
		{"r=abcXYZ,s=QUJD,i=2147483648", false},
		{"r=abcXYZ,s=QUJD,i=99999999999999999999", false},
		{"r=abcXYZ,s=QUJD,i=4096,x=ext", false},
		{"m=ext,r=abcXYZ,s=QUJD,i=4096", false},
		{"s=QUJD,r=abcXYZ,i=4096", false},
		{"e=other-error", false},
		/* a 64-byte salt (SCRAM_MAX_SALT) and a 65-byte one */
		{"r=abcXYZ,s=" SALT64 ",i=4096", true},
		{"r=abcXYZ,s=" SALT65 ",i=4096", false},
	};
	struct scram_client c;
	char out[SCRAM_MAX_MSG];
	size_t n = 0;
	int wrong = 0;

	for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
		bool ok = scram_client_first_nonce(&c, NULL, "abc", out, sizeof(out), &n) &&
			  scram_client_parse_first(&c, U8(cases[i].msg), strlen(cases[i].msg));

		if (ok != cases[i].ok) {
			fprintf(stderr, "FAIL case %zu \"%s\": got %d\n", i, cases[i].msg, ok);
			wrong++;
		}
	}
	CHECK(wrong == 0);

	CHECK(scram_client_first_nonce(&c, NULL, "abc", out, sizeof(out), &n));
	CHECK_STR(out, "n,,n=,r=abc");
	CHECK(scram_client_parse_first(&c, U8("r=abcX,s=QUJD,i=7"), 17));
	CHECK(c.iterations == 7 && c.salt_len == 3 && memcmp(c.salt, "ABC", 3) == 0);
	CHECK(!scram_client_parse_first(&c, U8("r=abcX,s=QUJD,i=7"), 17)); /* twice */

	/* parse before first; final before parse; no room for client-first */
	memset(&c, 0, sizeof(c));
	CHECK(!scram_client_parse_first(&c, U8("r=abcX,s=QUJD,i=7"), 17));
	CHECK(scram_client_first_nonce(&c, NULL, "abc", out, sizeof(out), &n));
	CHECK(!scram_client_final(&c, &pg_keys, out, sizeof(out), &n));
	CHECK(!scram_client_first_nonce(&c, NULL, "abc", out, 11, &n));
	CHECK(scram_client_first_nonce(&c, NULL, "abc", out, 12, &n) && n == 11);
	CHECK(!scram_client_first_nonce(&c, NULL, "a,c", out, sizeof(out), &n));
	CHECK(!scram_client_first_nonce(&c, NULL, "", out, sizeof(out), &n));
	CHECK(scram_client_first_nonce(&c, "a,b=c", "abc", out, sizeof(out), &n));
	CHECK_STR(out, "n,,n=a=2Cb=3Dc,r=abc");
}

/* server-final messages for our client */
static void test_client_verify_table(void)
{
	struct scram_server s;
	struct scram_client c;
	char final[SCRAM_MAX_MSG], good[SCRAM_MAX_MSG];
	size_t n = 0;
	const char *bad[] = {
		"",
		"e=invalid-proof",
		"e=other-error",
		"v=",
		"v=AAAA",
		"v=AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA=",
		"v=not base64!",
		"x=1",
	};

	CHECK(client_to_final(&c, final, sizeof(final)));
	CHECK(server_to_first(&s, "n,,n=,r=abc"));
	CHECK(scram_server_final(&s, U8(final), strlen(final), good, sizeof(good), &n));

	int accepted = 0;
	for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
		CHECK(client_to_final(&c, final, sizeof(final)));
		accepted += scram_client_verify(&c, U8(bad[i]), strlen(bad[i]));
		/* a failed verify stays failed, even with the right signature next */
		accepted += scram_client_verify(&c, U8(good), strlen(good));
	}
	CHECK(accepted == 0);

	/* signature with one bit flipped, trailing data, every prefix */
	char t[SCRAM_MAX_MSG];
	snprintf(t, sizeof(t), "%s", good);
	t[2] = t[2] == 'A' ? 'B' : 'A';
	CHECK(client_to_final(&c, final, sizeof(final)));
	CHECK(!scram_client_verify(&c, U8(t), strlen(t)));
	snprintf(t, sizeof(t), "%s,x=1", good);
	CHECK(client_to_final(&c, final, sizeof(final)));
	CHECK(!scram_client_verify(&c, U8(t), strlen(t)));
	accepted = 0;
	for (size_t len = 0; len < strlen(good); len++) {
		char *copy = malloc(len ? len : 1);

		memcpy(copy, good, len);
		CHECK(client_to_final(&c, final, sizeof(final)));
		accepted += scram_client_verify(&c, U8(copy), len);
		free(copy);
	}
	CHECK(accepted == 0);

	CHECK(client_to_final(&c, final, sizeof(final)));
	CHECK(scram_client_verify(&c, U8(good), strlen(good)) && c.state == 3);
	CHECK(!scram_client_verify(&c, U8(good), strlen(good))); /* only once */
}

static void test_keys_bounds(void)
{
	struct scram_keys keys;
	struct scram_secret sec;
	uint8_t salt[SCRAM_MAX_SALT + 1] = {0};

	CHECK(!scram_keys_from_password(NULL, salt, 16, 4096, &keys));
	CHECK(!scram_keys_from_password("x", salt, 0, 4096, &keys));
	CHECK(!scram_keys_from_password("x", salt, 16, 0, &keys));
	CHECK(!scram_keys_from_password("x", salt, 16, SCRAM_MAX_ITERATIONS + 1, &keys));
	CHECK(!scram_secret_from_keys(&pg_keys, salt, SCRAM_MAX_SALT + 1, 4096, &sec));
	CHECK(scram_secret_from_keys(&pg_keys, salt, SCRAM_MAX_SALT, 4096, &sec));
}

static void test_md5(void)
{
	static const uint8_t salt[4] = {1, 2, 3, 4};
	char h[36], r[36];

	md5_password_hash("app", "secret", h);
	CHECK_STR(h, MD5_APP_SECRET);
	md5_salted_response(h, salt, r);
	CHECK_STR(r, MD5_APP_SECRET_SALTED);
	md5_salted_response(h, salt, h); /* in place */
	CHECK_STR(h, MD5_APP_SECRET_SALTED);

	/* a malformed stored hash gives "", which matches no response */
	static const char *const bad[] = {"", "md5", "6a422f785c9e20873908ce25d1736ae2xyz",
					  "md56a422f785c9e20873908ce25d1736ae",
					  "md56a422f785c9e20873908ce25d1736ae2a",
					  "md56A422F785C9E20873908CE25D1736AE2",
					  "SCRAM-SHA-256$4096:abc"};
	for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
		memset(r, 'x', sizeof(r));
		md5_salted_response(bad[i], salt, r);
		CHECK_STR(r, "");
	}
}

/* One whole exchange: client c with keys ck against server s holding sec.
 * Returns whether the server accepted the proof and the client the
 * server's signature. */
static bool exchange(const struct scram_keys *ck, const struct scram_secret *sec,
		     struct scram_server *s)
{
	struct scram_client c;
	char a[SCRAM_MAX_MSG], b[SCRAM_MAX_MSG];
	size_t an, bn;

	return scram_client_first(&c, a, sizeof(a), &an) &&
	       scram_server_first(s, sec, U8(a), an, b, sizeof(b), &bn) &&
	       scram_client_parse_first(&c, U8(b), bn) &&
	       scram_client_final(&c, ck, a, sizeof(a), &an) &&
	       scram_server_final(s, U8(a), an, b, sizeof(b), &bn) &&
	       scram_client_verify(&c, U8(b), bn);
}

/*
 * Pass-through (issue 18 item 4): pgfleet holds only PostgreSQL's secret.
 * A client that knows the password proves it; ClientProof XOR
 * HMAC(StoredKey, AuthMessage) is its ClientKey, checked by
 * H(ClientKey) == StoredKey; ClientKey plus the secret's ServerKey then log
 * pgfleet in to a server holding the same secret, and pgfleet checks that
 * server's signature with ServerKey.  Against another salt they cannot.
 */
static void test_passthrough(void)
{
	struct scram_server front, back;
	struct scram_keys recovered, wrong;
	struct scram_secret other;
	uint8_t ck[48]; /* EVP_DecodeBlock writes the padding's byte too */

	/* the client's keys come from the password; pgfleet's only from the secret */
	CHECK(exchange(&pg_keys, &pg_secret, &front));
	CHECK(front.have_client_key);
	memcpy(recovered.client_key, front.client_key, SCRAM_KEY_LEN);
	memcpy(recovered.server_key, pg_secret.server_key, SCRAM_KEY_LEN);
	CHECK(memcmp(recovered.client_key, pg_keys.client_key, SCRAM_KEY_LEN) == 0);
	CHECK(EVP_DecodeBlock(ck, U8(PG_CLIENT_KEY_B64), (int)strlen(PG_CLIENT_KEY_B64)) >= 32);
	CHECK(memcmp(recovered.client_key, ck, SCRAM_KEY_LEN) == 0);

	/* the recovered keys log in to a server with the same secret, twice
	 * (fresh nonces each time) */
	CHECK(exchange(&recovered, &pg_secret, &back));
	CHECK(exchange(&recovered, &pg_secret, &back));

	/* a wrong password recovers nothing */
	CHECK(scram_keys_from_password("wrong", pg_secret.salt, pg_secret.salt_len,
				       pg_secret.iterations, &wrong));
	CHECK(!exchange(&wrong, &pg_secret, &front));
	CHECK(!front.have_client_key);

	/* the same password under another salt: the server refuses the proof */
	CHECK(scram_secret_from_password("secret", &other));
	CHECK(other.salt_len != pg_secret.salt_len ||
	      memcmp(other.salt, pg_secret.salt, other.salt_len) != 0);
	CHECK(!exchange(&recovered, &other, &back));

	/* a server that does not know the secret cannot sign: the client
	 * refuses its final message (ServerKey checks the server too) */
	struct scram_secret forged = pg_secret;
	forged.server_key[0] ^= 1;
	CHECK(!exchange(&recovered, &forged, &back));
}

static void test_equal(void)
{
	CHECK(scram_equal("abcd", "abcd", 4));
	CHECK(!scram_equal("abcd", "abce", 4));
	CHECK(scram_equal("abcd", "abce", 3));
	CHECK(scram_equal("", "", 0));
}

int main(void)
{
	RUN(test_rfc7677_client);
	RUN(test_rfc7677_server);
	RUN(test_pg_secret); /* fills pg_secret and pg_keys for the tests below */
	RUN(test_secret_from_password);
	RUN(test_parse_secret_malformed);
	RUN(test_round_trip);
	RUN(test_wrong_password);
	RUN(test_server_first_table);
	RUN(test_server_final_table);
	RUN(test_server_signed_final_table);
	RUN(test_client_parse_first_table);
	RUN(test_client_verify_table);
	RUN(test_keys_bounds);
	RUN(test_md5);
	RUN(test_passthrough);
	RUN(test_equal);
	return harness_finish();
}
