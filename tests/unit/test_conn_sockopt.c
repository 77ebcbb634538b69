/*
 * test_conn_sockopt.c: PgBouncer's tcp_* settings as conn.c puts them on a
 * socket (issue 18), read back with getsockopt: 0 leaves the kernel's value,
 * anything else is set, tcp_keepalive = 0 turns keepalive off.
 */
#include "harness.h"

#include "config.h"
#include "conn.h"

#include <netinet/in.h>
#include <netinet/tcp.h>
#include <stdio.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

static int opt(int fd, int level, int name)
{
	int v = -1;
	socklen_t len = sizeof v;
	if (getsockopt(fd, level, name, &v, &len) != 0)
		return -2;
	return v;
}

static void test_set(void)
{
	struct config cfg;
	memset(&cfg, 0, sizeof cfg);
	cfg.tcp_keepalive = true;
	cfg.tcp_keepidle = 44;
	cfg.tcp_keepintvl = 7;
	cfg.tcp_keepcnt = 3;
	cfg.tcp_user_timeout = 2500;
	cfg.tcp_socket_buffer = 65536;

	int fd = socket(AF_INET, SOCK_STREAM, 0);
	CHECK(fd >= 0);
	conn_set_tcp_options(fd, &cfg);
	CHECK(opt(fd, SOL_SOCKET, SO_KEEPALIVE) == 1);
	CHECK(opt(fd, IPPROTO_TCP, TCP_KEEPIDLE) == 44);
	CHECK(opt(fd, IPPROTO_TCP, TCP_KEEPINTVL) == 7);
	CHECK(opt(fd, IPPROTO_TCP, TCP_KEEPCNT) == 3);
	CHECK(opt(fd, IPPROTO_TCP, TCP_USER_TIMEOUT) == 2500);
	/* Linux doubles the value asked for (socket(7)) */
	CHECK(opt(fd, SOL_SOCKET, SO_SNDBUF) >= 65536);
	CHECK(opt(fd, SOL_SOCKET, SO_RCVBUF) >= 65536);
	close(fd);
}

static void test_defaults_leave_the_kernel(void)
{
	int ref = socket(AF_INET, SOCK_STREAM, 0), fd = socket(AF_INET, SOCK_STREAM, 0);
	CHECK(ref >= 0 && fd >= 0);
	struct config cfg;
	memset(&cfg, 0, sizeof cfg);
	cfg.tcp_keepalive = true; /* PgBouncer's defaults: on, the rest 0 */
	conn_set_tcp_options(fd, &cfg);
	CHECK(opt(fd, SOL_SOCKET, SO_KEEPALIVE) == 1);
	CHECK(opt(fd, IPPROTO_TCP, TCP_KEEPIDLE) == opt(ref, IPPROTO_TCP, TCP_KEEPIDLE));
	CHECK(opt(fd, IPPROTO_TCP, TCP_KEEPINTVL) == opt(ref, IPPROTO_TCP, TCP_KEEPINTVL));
	CHECK(opt(fd, IPPROTO_TCP, TCP_KEEPCNT) == opt(ref, IPPROTO_TCP, TCP_KEEPCNT));
	CHECK(opt(fd, IPPROTO_TCP, TCP_USER_TIMEOUT) == opt(ref, IPPROTO_TCP, TCP_USER_TIMEOUT));
	CHECK(opt(fd, SOL_SOCKET, SO_RCVBUF) == opt(ref, SOL_SOCKET, SO_RCVBUF));

	/* off: no keepalive, and the timings are not touched */
	cfg.tcp_keepalive = false;
	cfg.tcp_keepidle = 44;
	conn_set_tcp_options(ref, &cfg);
	CHECK(opt(ref, SOL_SOCKET, SO_KEEPALIVE) == 0);
	CHECK(opt(ref, IPPROTO_TCP, TCP_KEEPIDLE) != 44);
	close(fd);
	close(ref);
}

int main(void)
{
	RUN(test_set);
	RUN(test_defaults_leave_the_kernel);
	return harness_finish();
}
