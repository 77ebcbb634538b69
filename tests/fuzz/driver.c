/*
 * driver.c: one pgfleet session per fuzz input (see driver.h).  The loop is
 * pgfleet's own (runtime.c) with the settings of a small ini file written at
 * start-up; nothing listens on TCP, no DNS is asked, no health check runs:
 * the only peers are the fuzz input on the client's socketpair and a fake
 * backend on a Unix socket in a private temporary directory.
 */
#include "driver.h"

#include <dlfcn.h>
#include <errno.h>
#include <fcntl.h>
#include <linux/sockios.h>
#include <openssl/evp.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

#include "admin.h"
#include "auth.h"
#include "batch.h"
#include "cancel.h"
#include "client.h"
#include "database.h"
#include "iobuf.h"
#include "log.h"
#include "proto.h"
#include "runtime.h"
#include "server.h"
#include "wiring.h"

/* ---- what the harness sets in place of main.c's modules ------------------- */

static void fuzz_shutdown(const char *why)
{
	fleet.shutting_down = true; /* new logins are refused; nothing else to drain */
}

/* A backend or client may name any PBKDF2 iteration count (SCRAM allows up
 * to 10 million, seconds of CPU): capped here so that an input takes
 * milliseconds.  The keys are wrong either way, the fake peer verifies
 * nothing. */
int PKCS5_PBKDF2_HMAC(const char *pass, int passlen, const unsigned char *salt, int saltlen,
		      int iter, const EVP_MD *digest, int keylen, unsigned char *out)
{
	typedef int (*fn_t)(const char *, int, const unsigned char *, int, int, const EVP_MD *,
			    int, unsigned char *);
	static fn_t real;
	if (!real)
		real = (fn_t)dlsym(RTLD_NEXT, "PKCS5_PBKDF2_HMAC");
	if (!real)
		abort();
	return real(pass, passlen, salt, saltlen, iter > 16 ? 16 : iter, digest, keylen, out);
}

/* ---- set-up, once per process --------------------------------------------- */

#define MAX_BACKENDS 8

static char dir[64];
static char ini_path[128];
static int listen_fd = -1;

static struct {
	int cli;                     /* the harness's end of the client's socketpair */
	int backends[MAX_BACKENDS];  /* accepted connections from the pool, -1 closed */
	uint32_t startup_need[MAX_BACKENDS]; /* AUTO: the StartupMessage length, 0 until read */
	bool answered[MAX_BACKENDS];
	/* AUTO, logged in: the message being read (its header, body to skip). */
	uint8_t bhdr[MAX_BACKENDS][5];
	uint32_t bhdr_have[MAX_BACKENDS], bbody_left[MAX_BACKENDS];
	int n_backends, latest;
	int backend_mode;
	/* The client's replies, scanned for its first ReadyForQuery. */
	uint8_t hdr[5];
	uint32_t hdr_have, body_left;
	bool saw_ready;
} S = {.cli = -1};

static void die(const char *what)
{
	perror(what);
	abort();
}

static void write_file(const char *path, const char *text)
{
	FILE *f = fopen(path, "w");
	if (!f || fputs(text, f) < 0 || fclose(f) != 0)
		die(path);
}

static void cleanup_dir(void)
{
	char p[160];
	snprintf(p, sizeof(p), "%s/.s.PGSQL.5432", dir);
	unlink(p);
	snprintf(p, sizeof(p), "%s/userlist.txt", dir);
	unlink(p);
	unlink(ini_path);
	rmdir(dir);
}

static void set_nonblock(int fd)
{
	int fl = fcntl(fd, F_GETFL);
	if (fl < 0 || fcntl(fd, F_SETFL, fl | O_NONBLOCK) < 0)
		die("fcntl");
}

__attribute__((constructor)) static void fuzz_global_init(void)
{
	signal(SIGPIPE, SIG_IGN);
	/* Nothing logged (millions of sessions), unless PGFLEET_FUZZ_LOG gives a
	 * verbosity (2: trace) to watch one input. */
	const char *v = getenv("PGFLEET_FUZZ_LOG");
	log_setup(v ? atoi(v) : -10, false);
	wiring_connect(); /* as main() does: the callbacks up the layers */
	fleet_on_shutdown(fuzz_shutdown);
	snprintf(dir, sizeof(dir), "/tmp/pgfleet-fuzz-XXXXXX");
	if (!mkdtemp(dir))
		die("mkdtemp");
	atexit(cleanup_dir);
	char p[160], text[1024];
	snprintf(p, sizeof(p), "%s/userlist.txt", dir);
	/* The users of the captured traffic (tests/fuzz/capture.py) and "fuzz". */
	write_file(p, "\"app\" \"app-secret\"\n\"fuzz\" \"secret\"\n\"postgres\" \"postgres-secret\"\n");
	snprintf(ini_path, sizeof(ini_path), "%s/pgfleet.ini", dir);
	snprintf(text, sizeof(text),
		 "[databases]\n"
		 "app = host=%s port=5432 dbname=app\n"
		 "* = host=%s port=5432\n"
		 "[pgfleet]\n"
		 "listen_addr = 127.0.0.1\n"
		 "auth_type = trust\n"
		 "auth_file = %s\n"
		 "health_check_period = 0\n"
		 "io_uring = 0\n"
		 "server_tls_sslmode = disable\n"
		 "client_tls_sslmode = disable\n",
		 dir, dir, p);
	write_file(ini_path, text);

	struct sockaddr_un un = {.sun_family = AF_UNIX};
	snprintf(un.sun_path, sizeof(un.sun_path), "%s/.s.PGSQL.5432", dir);
	listen_fd = socket(AF_UNIX, SOCK_STREAM, 0);
	if (listen_fd < 0 || bind(listen_fd, (struct sockaddr *)&un, sizeof(un)) < 0 ||
	    listen(listen_fd, 64) < 0)
		die("backend socket");
	set_nonblock(listen_fd);
}

size_t fuzz_split(const uint8_t *data, size_t size, struct fuzz_chunk *out, size_t max)
{
	size_t n = 0;
	while (n + 1 < max) {
		const uint8_t *sep = memmem(data, size, FUZZ_SEP, FUZZ_SEP_LEN);
		if (!sep)
			break;
		out[n].p = data;
		out[n].len = (size_t)(sep - data);
		n++;
		size -= (size_t)(sep - data) + FUZZ_SEP_LEN;
		data = sep + FUZZ_SEP_LEN;
	}
	out[n].p = data;
	out[n].len = size;
	return n + 1;
}

/* ---- one session ------------------------------------------------------------ */

static void setting(const char *key, const char *value)
{
	char err[200];
	if (!config_set(&fleet.cfg, key, value, err, sizeof(err))) {
		fprintf(stderr, "fuzz: %s = %s: %s\n", key, value, err);
		abort();
	}
}

static void report(void *arg, const char *line)
{
	fprintf(stderr, "fuzz: config: %s\n", line);
}

void fuzz_session_begin(uint8_t variant, int backend_mode)
{
	static char *const no_env[] = {NULL};
	memset(&fleet, 0, sizeof(fleet));
	if (!config_load(&fleet.cfg, ini_path, no_env, report, NULL))
		abort();
	static const char *const auth[] = {"trust", "plain", "md5", "scram-sha-256"};
	static const char *const modes[] = {"session", "transaction", "statement"};
	setting("auth_type", auth[variant & FUZZ_AUTH_MASK]);
	setting("pool_mode", modes[(variant >> FUZZ_POOL_SHIFT) % 3]);
	if (variant & FUZZ_NO_PREPARED)
		setting("max_prepared_statements", "0");
	else if (variant & FUZZ_STMT_CACHE_1)
		setting("max_prepared_statements", "1");
	if (!fleet_runtime_init())
		abort();
	(void)batch_init(fleet.cfg.io_uring);

	memset(&S, 0, sizeof(S));
	for (int i = 0; i < MAX_BACKENDS; i++)
		S.backends[i] = -1;
	S.latest = -1;
	S.backend_mode = backend_mode;
	int sv[2];
	if (socketpair(AF_UNIX, SOCK_STREAM, 0, sv) < 0)
		die("socketpair");
	set_nonblock(sv[0]);
	set_nonblock(sv[1]);
	S.cli = sv[0];
	struct sockaddr_un peer = {.sun_family = AF_UNIX};
	/* As the listener does: pgfleet owns its end from here. */
	client_accept(sv[1], (struct sockaddr *)&peer, sizeof(sa_family_t), false);
}

/* Bytes written to this end that the peer has not read yet. */
static int unread_by_peer(int fd)
{
	int n = 0;
	if (fd < 0 || ioctl(fd, SIOCOUTQ, &n) < 0)
		return 0;
	return n;
}

static void scan_client_replies(const uint8_t *p, size_t n)
{
	while (n) {
		if (S.body_left) {
			size_t take = n < S.body_left ? n : S.body_left;
			S.body_left -= (uint32_t)take;
			p += take;
			n -= take;
			continue;
		}
		S.hdr[S.hdr_have++] = *p++;
		n--;
		if (S.hdr_have < 5)
			continue;
		uint32_t len = proto_get_u32(S.hdr + 1);
		if (S.hdr[0] == 'Z')
			S.saw_ready = true;
		S.body_left = len >= 4 ? len - 4 : 0;
		S.hdr_have = 0;
	}
}

/* The canned login of FUZZ_BACKEND_AUTO, as PostgreSQL 15 sends it. */
static void backend_login(int fd)
{
	struct wbuf w = {0};
	proto_auth(&w, AUTH_REQ_OK, NULL, 0);
	static const char *const params[][2] = {
		{"application_name", ""},   {"client_encoding", "UTF8"},
		{"DateStyle", "ISO, MDY"},  {"in_hot_standby", "off"},
		{"integer_datetimes", "on"}, {"IntervalStyle", "postgres"},
		{"is_superuser", "off"},    {"server_encoding", "UTF8"},
		{"server_version", "15.8"}, {"session_authorization", "app"},
		{"standard_conforming_strings", "on"}, {"TimeZone", "UTC"},
	};
	for (size_t i = 0; i < sizeof(params) / sizeof(params[0]); i++)
		proto_parameter_status(&w, params[i][0], params[i][1]);
	proto_backend_key(&w, 4242, 0x5eed);
	proto_ready(&w, 'I');
	ssize_t r = write(fd, w.data + w.sent, w.len - w.sent);
	(void)r; /* a closed backend socket: pgfleet already gave up on it */
	wbuf_free(&w);
}

/* FUZZ_BACKEND_AUTO after the login: each request gets the reply a server
 * gives when all goes well (Parse: ParseComplete, Describe: NoData, ...), so
 * that transactions end, connections go back to the pool and come back
 * linked to the client with the statements they had. */
static void backend_reply(int fd, uint8_t type)
{
	struct wbuf w = {0};
	uint32_t m;
	switch (type) {
	case 'P':
		m = proto_begin(&w, '1');
		proto_end(&w, m);
		break;
	case 'B':
		m = proto_begin(&w, '2');
		proto_end(&w, m);
		break;
	case 'D':
		m = proto_begin(&w, 'n');
		proto_end(&w, m);
		break;
	case 'C':
		m = proto_begin(&w, '3');
		proto_end(&w, m);
		break;
	case 'E':
		m = proto_begin(&w, 'C');
		proto_put_str(&w, "SELECT 0");
		proto_end(&w, m);
		break;
	case 'F':
		m = proto_begin(&w, 'V');
		proto_put_u32(&w, 0xffffffffu);
		proto_end(&w, m);
		proto_ready(&w, 'I');
		break;
	case 'Q':
		m = proto_begin(&w, 'C');
		proto_put_str(&w, "SELECT 0");
		proto_end(&w, m);
		proto_ready(&w, 'I');
		break;
	case 'S':
		proto_ready(&w, 'I');
		break;
	default:
		break; /* Flush, Terminate, CopyData...: nothing of their own */
	}
	if (w.len) {
		ssize_t r = write(fd, w.data, w.len);
		(void)r;
	}
	wbuf_free(&w);
}

static void backend_scan(int i, const uint8_t *p, size_t n)
{
	while (n) {
		if (S.bbody_left[i]) {
			size_t take = n < S.bbody_left[i] ? n : S.bbody_left[i];
			S.bbody_left[i] -= (uint32_t)take;
			p += take;
			n -= take;
			continue;
		}
		S.bhdr[i][S.bhdr_have[i]++] = *p++;
		n--;
		if (S.bhdr_have[i] < 5)
			continue;
		uint32_t len = proto_get_u32(S.bhdr[i] + 1);
		S.bbody_left[i] = len >= 4 ? len - 4 : 0;
		S.bhdr_have[i] = 0;
		backend_reply(S.backends[i], S.bhdr[i][0]);
	}
}

static bool drain_backend(int i)
{
	uint8_t buf[16384];
	bool moved = false;
	for (;;) {
		ssize_t r = read(S.backends[i], buf, sizeof(buf));
		if (r <= 0) {
			if (r == 0 || (errno != EAGAIN && errno != EINTR)) {
				close(S.backends[i]);
				S.backends[i] = -1;
				moved = true;
			}
			return moved;
		}
		moved = true;
		if (S.backend_mode != FUZZ_BACKEND_AUTO)
			continue;
		if (S.answered[i]) {
			backend_scan(i, buf, (size_t)r);
			continue;
		}
		/* pgfleet's StartupMessage (no SSLRequest over a Unix socket), read
		 * whole in one go: it is small and written at once. */
		uint32_t have = (uint32_t)r;
		if (S.startup_need[i] == 0 && have >= 4)
			S.startup_need[i] = proto_get_u32(buf);
		if (S.startup_need[i] && have >= S.startup_need[i]) {
			backend_login(S.backends[i]);
			S.answered[i] = true;
			if (have > S.startup_need[i])
				backend_scan(i, buf + S.startup_need[i], have - S.startup_need[i]);
		}
	}
}

void fuzz_pump(void)
{
	int quiet = 0;
	for (int pass = 0; pass < 500 && quiet < 3; pass++) {
		bool moved = false;
		int fd;
		while ((fd = accept(listen_fd, NULL, NULL)) >= 0) {
			set_nonblock(fd);
			moved = true;
			int slot = -1;
			for (int i = 0; i < MAX_BACKENDS; i++)
				if (S.backends[i] < 0) {
					slot = i;
					break;
				}
			if (slot < 0) {
				close(fd); /* pgfleet sees a closed backend */
				continue;
			}
			S.backends[slot] = fd;
			S.startup_need[slot] = 0;
			S.answered[slot] = false;
			S.bhdr_have[slot] = S.bbody_left[slot] = 0;
			S.latest = slot;
		}
		event_base_loop(fleet.base, EVLOOP_NONBLOCK);
		batch_run();
		if (S.cli >= 0) {
			uint8_t buf[16384];
			ssize_t r;
			while ((r = read(S.cli, buf, sizeof(buf))) > 0) {
				moved = true;
				scan_client_replies(buf, (size_t)r);
			}
			if (r == 0 || (r < 0 && errno != EAGAIN && errno != EINTR)) {
				close(S.cli);
				S.cli = -1;
				moved = true;
			}
		}
		for (int i = 0; i < MAX_BACKENDS; i++) {
			if (S.backends[i] < 0)
				continue;
			if (drain_backend(i))
				moved = true;
			if (unread_by_peer(S.backends[i]))
				moved = true;
		}
		if (unread_by_peer(S.cli))
			moved = true;
		quiet = moved ? 0 : quiet + 1;
	}
}

/* Writes all of p to fd, running the loop whenever the socket is full;
 * gives up when pgfleet stops reading (back-pressure) or hangs up. */
static void write_all(int *fdp, const uint8_t *p, size_t n)
{
	int stuck = 0;
	while (n && *fdp >= 0 && stuck < 3) {
		ssize_t r = write(*fdp, p, n);
		if (r > 0) {
			p += r;
			n -= (size_t)r;
			stuck = 0;
			continue;
		}
		if (r < 0 && errno != EAGAIN && errno != EINTR)
			return;
		fuzz_pump();
		stuck++;
	}
	fuzz_pump();
}

void fuzz_client_write(const void *p, size_t n)
{
	write_all(&S.cli, p, n);
}

void fuzz_backend_write(const void *p, size_t n)
{
	if (S.latest < 0 || S.backends[S.latest] < 0)
		return;
	write_all(&S.backends[S.latest], p, n);
}

bool fuzz_backend_connected(void)
{
	return S.latest >= 0 && S.backends[S.latest] >= 0;
}

bool fuzz_client_login(void)
{
	struct wbuf w = {0};
	static const char *const params[] = {"user", "app", "database", "app", NULL};
	proto_startup(&w, params);
	fuzz_client_write(w.data + w.sent, w.len - w.sent);
	wbuf_free(&w);
	return S.saw_ready;
}

void fuzz_session_end(void)
{
	/* main.c's loop_teardown, minus what the harness never started. */
	fleet.shutting_down = true;
	admin_close_all();
	struct list *it, *tmp, *dit;
	list_for_each_safe(it, tmp, &fleet.login_clients.head) {
		client_close(container_of(it, struct client, node), NULL, "fuzz session over");
	}
	list_for_each(dit, &fleet.databases) {
		database_close_all(container_of(dit, struct database, node), "fuzz session over",
				   "fuzz session over");
	}
	client_free_list();
	server_free_list();
	cancel_shutdown();
	database_free_all();
	batch_done();
	fleet_runtime_done();
	auth_cache_clear();
	iobuf_free_all();
	config_free(&fleet.cfg);
	memset(&fleet, 0, sizeof(fleet));
	if (S.cli >= 0)
		close(S.cli);
	for (int i = 0; i < MAX_BACKENDS; i++)
		if (S.backends[i] >= 0)
			close(S.backends[i]);
	S.cli = -1;
	/* Connections pgfleet opened but the harness never accepted. */
	int fd;
	while ((fd = accept(listen_fd, NULL, NULL)) >= 0)
		close(fd);
}
