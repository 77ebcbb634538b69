/*
 * test_hba.c: hba.c, auth_hba_file: every record type, the list forms and
 * keywords, addresses v4/v6 with CIDR and masks, @file includes, quoting,
 * comments and continuation lines; and every refusal, each one line naming
 * file and line.  Then auth_type = hba through config_load.
 */
#include "harness.h"

#include <arpa/inet.h>
#include <dirent.h>
#include <netinet/in.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/un.h>
#include <unistd.h>

#include "config.h"
#include "hba.h"

static char dir[] = "/tmp/pgfleet-test-hba-XXXXXX";
static char path_buf[512];

struct msgs {
	char line[32][512];
	size_t n;
};

static void collect(void *arg, const char *line)
{
	struct msgs *m = arg;
	if (m->n < 32)
		snprintf(m->line[m->n++], sizeof m->line[0], "%s", line);
}

/* `name` in the temp directory */
static const char *at(const char *name)
{
	snprintf(path_buf, sizeof path_buf, "%s/%s", dir, name);
	return path_buf;
}

static void write_file(const char *name, const char *text)
{
	FILE *f = fopen(at(name), "w");
	if (!f) {
		perror(name);
		exit(2);
	}
	fputs(text, f);
	fclose(f);
}

/* auth_ident_file for load(), or NULL */
static char ident_buf[512];
static const char *ident_path;

static struct hba *load(const char *text, struct msgs *m)
{
	write_file("hba.conf", text);
	m->n = 0;
	return hba_load(at("hba.conf"), ident_path, collect, m);
}

/* Does the message "<dir>/<file>:<rest>" appear? */
static bool has(const struct msgs *m, const char *file, const char *rest)
{
	char want[700];
	snprintf(want, sizeof want, "%s/%s%s", dir, file, rest);
	for (size_t i = 0; i < m->n; i++)
		if (strcmp(m->line[i], want) == 0)
			return true;
	fprintf(stderr, "  missing: %s\n", want);
	for (size_t i = 0; i < m->n; i++)
		fprintf(stderr, "  got: %s\n", m->line[i]);
	return false;
}

/* A client: "local", or an address, with TLS or not. */
struct who {
	const char *from;
	bool tls;
	const char *db, *user;
};

static struct hba_decision decide(const struct hba *h, struct who w)
{
	struct sockaddr_storage ss;
	memset(&ss, 0, sizeof ss);
	if (strcmp(w.from, "local") == 0) {
		ss.ss_family = AF_UNIX;
	} else if (strchr(w.from, ':')) {
		struct sockaddr_in6 *s6 = (struct sockaddr_in6 *)&ss;
		s6->sin6_family = AF_INET6;
		if (inet_pton(AF_INET6, w.from, &s6->sin6_addr) != 1)
			abort();
	} else {
		struct sockaddr_in *s4 = (struct sockaddr_in *)&ss;
		s4->sin_family = AF_INET;
		if (inet_pton(AF_INET, w.from, &s4->sin_addr) != 1)
			abort();
	}
	struct hba_request r = {(struct sockaddr *)&ss, w.tls, w.db, w.user};
	return hba_match(h, &r);
}

static enum hba_method method(const struct hba *h, struct who w)
{
	return decide(h, w).method;
}

static void test_record_types(void)
{
	struct msgs m;
	struct hba *h = load("local     all all               trust\n"
	                     "hostssl   all all 10.0.0.0/8    scram-sha-256\n"
	                     "hostnossl all all 10.0.0.0/8    md5\n"
	                     "host      all all 0.0.0.0/0     password\n"
	                     "host      all all ::/0          reject\n",
	                     &m);
	CHECK(h != NULL);
	CHECK(method(h, (struct who){"local", false, "app", "u"}) == HBA_TRUST);
	CHECK(method(h, (struct who){"10.1.2.3", true, "app", "u"}) == HBA_SCRAM);
	CHECK(method(h, (struct who){"10.1.2.3", false, "app", "u"}) == HBA_MD5);
	CHECK(method(h, (struct who){"192.168.0.1", true, "app", "u"}) == HBA_PASSWORD);
	CHECK(method(h, (struct who){"192.168.0.1", false, "app", "u"}) == HBA_PASSWORD);
	CHECK(method(h, (struct who){"2001:db8::1", false, "app", "u"}) == HBA_REJECT);
	struct hba_decision d = decide(h, (struct who){"10.1.2.3", false, "app", "u"});
	CHECK(d.line == 3 && d.file && strcmp(d.file, at("hba.conf")) == 0);
	hba_free(h);

	/* local records never match TCP, host records never match local */
	h = load("host all all all trust\n", &m);
	CHECK(h && method(h, (struct who){"local", false, "app", "u"}) == HBA_NO_MATCH);
	CHECK(method(h, (struct who){"127.0.0.1", false, "app", "u"}) == HBA_TRUST);
	CHECK(method(h, (struct who){"::1", true, "app", "u"}) == HBA_TRUST);
	hba_free(h);
	h = load("local all all md5\n", &m);
	CHECK(h && method(h, (struct who){"127.0.0.1", false, "app", "u"}) == HBA_NO_MATCH);
	CHECK(decide(h, (struct who){"127.0.0.1", false, "app", "u"}).file == NULL);
	hba_free(h);
	h = load("hostssl all all all cert\n", &m);
	CHECK(h && method(h, (struct who){"127.0.0.1", true, "app", "u"}) == HBA_CERT);
	CHECK(method(h, (struct who){"127.0.0.1", false, "app", "u"}) == HBA_NO_MATCH);
	const char *file;
	int line;
	CHECK(hba_find_method(h, HBA_CERT, &file, &line) && line == 1);
	CHECK(!hba_find_method(h, HBA_MD5, &file, &line));
	hba_free(h);
}

static void test_lists(void)
{
	struct msgs m;
	write_file("dbs.txt", "# databases\nsales, \"big db\"\n  crm # comment\n");
	write_file("users.txt", "alice bob\n@more.txt\n");
	write_file("more.txt", "carol\n");
	struct hba *h = load("host  app,other   alice,\"Bob Smith\"  all  md5\n"
	                     "host  sameuser    all                 all  scram-sha-256\n"
	                     "host  \"all\"       all                 all  password\n"
	                     "host  @dbs.txt    @users.txt          all  trust\n"
	                     "host  replication all                 all  trust\n"
	                     "host  app         \"all\"               all  trust\n"
	                     "host  all, x      dave                all  password\n",
	                     &m);
	CHECK(h != NULL);
	CHECK(method(h, (struct who){"1.2.3.4", false, "app", "alice"}) == HBA_MD5);
	CHECK(method(h, (struct who){"1.2.3.4", false, "other", "Bob Smith"}) == HBA_MD5);
	CHECK(method(h, (struct who){"1.2.3.4", false, "app", "bob smith"}) == HBA_NO_MATCH);
	CHECK(method(h, (struct who){"1.2.3.4", false, "eve", "eve"}) == HBA_SCRAM);
	CHECK(method(h, (struct who){"1.2.3.4", false, "all", "x"}) == HBA_PASSWORD);
	CHECK(method(h, (struct who){"1.2.3.4", false, "sales", "bob"}) == HBA_TRUST);
	CHECK(method(h, (struct who){"1.2.3.4", false, "big db", "carol"}) == HBA_TRUST);
	CHECK(method(h, (struct who){"1.2.3.4", false, "crm", "alice"}) == HBA_TRUST);
	CHECK(method(h, (struct who){"1.2.3.4", false, "crm", "dave"}) == HBA_PASSWORD);
	/* "replication" matches no ordinary database; quoted "all" is a name */
	CHECK(method(h, (struct who){"1.2.3.4", false, "replication", "zed"}) == HBA_NO_MATCH);
	CHECK(method(h, (struct who){"1.2.3.4", false, "app", "all"}) == HBA_TRUST);
	CHECK(method(h, (struct who){"1.2.3.4", false, "app", "zed"}) == HBA_NO_MATCH);
	/* the line of an @file rule is the rule's own */
	CHECK(decide(h, (struct who){"1.2.3.4", false, "sales", "bob"}).line == 4);
	hba_free(h);
}

static void test_addresses(void)
{
	struct msgs m;
	struct hba *h = load("host all a 192.168.1.0/24          trust\n"
	                     "host all b 192.168.1.7 255.255.255.255 trust\n"
	                     "host all c 10.0.0.0 255.0.0.0       trust\n"
	                     "host all d 2001:db8::/32           trust\n"
	                     "host all e fe80::1 ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff trust\n"
	                     "host all f 0.0.0.0/0               trust\n"
	                     "host all g ::/0                    trust\n"
	                     "host all h 127.0.0.1/32            trust\n",
	                     &m);
	CHECK(h != NULL);
	CHECK(method(h, (struct who){"192.168.1.200", false, "x", "a"}) == HBA_TRUST);
	CHECK(method(h, (struct who){"192.168.2.1", false, "x", "a"}) == HBA_NO_MATCH);
	CHECK(method(h, (struct who){"192.168.1.7", false, "x", "b"}) == HBA_TRUST);
	CHECK(method(h, (struct who){"192.168.1.8", false, "x", "b"}) == HBA_NO_MATCH);
	CHECK(method(h, (struct who){"10.255.0.1", false, "x", "c"}) == HBA_TRUST);
	CHECK(method(h, (struct who){"11.0.0.1", false, "x", "c"}) == HBA_NO_MATCH);
	CHECK(method(h, (struct who){"2001:db8:ffff::9", false, "x", "d"}) == HBA_TRUST);
	CHECK(method(h, (struct who){"2001:db9::1", false, "x", "d"}) == HBA_NO_MATCH);
	CHECK(method(h, (struct who){"10.0.0.1", false, "x", "d"}) == HBA_NO_MATCH);
	CHECK(method(h, (struct who){"fe80::1", false, "x", "e"}) == HBA_TRUST);
	CHECK(method(h, (struct who){"fe80::2", false, "x", "e"}) == HBA_NO_MATCH);
	/* an IPv4 rule does not match IPv6 clients, and the other way round */
	CHECK(method(h, (struct who){"::1", false, "x", "f"}) == HBA_NO_MATCH);
	CHECK(method(h, (struct who){"8.8.8.8", false, "x", "f"}) == HBA_TRUST);
	CHECK(method(h, (struct who){"8.8.8.8", false, "x", "g"}) == HBA_NO_MATCH);
	CHECK(method(h, (struct who){"::1", false, "x", "g"}) == HBA_TRUST);
	/* ... except an IPv4-mapped IPv6 client, which is the IPv4 one */
	CHECK(method(h, (struct who){"::ffff:127.0.0.1", false, "x", "h"}) == HBA_TRUST);
	CHECK(method(h, (struct who){"::ffff:127.0.0.2", false, "x", "h"}) == HBA_NO_MATCH);
	hba_free(h);
}

static void test_same(void)
{
	struct msgs m;
	write_file("inc.txt", "alice\n");
	struct hba *a = load("host all @inc.txt all trust\n", &m);
	struct hba *b = load("host all @inc.txt all trust\n", &m);
	write_file("inc.txt", "bob\n");
	struct hba *c = load("host all @inc.txt all trust\n", &m);
	struct hba *d = load("host all @inc.txt all  trust\n", &m);
	CHECK(a && b && c && d);
	CHECK(hba_same(a, b));
	CHECK(!hba_same(a, c)); /* an @file changed */
	CHECK(!hba_same(c, d)); /* a blank changed: read again, said changed */
	CHECK(hba_same(NULL, NULL) && !hba_same(a, NULL));
	hba_free(a);
	hba_free(b);
	hba_free(c);
	hba_free(d);
}

static void test_syntax(void)
{
	struct msgs m;
	/* comments, blank lines, continuation (inside a comment too), tabs,
	 * quotes with a doubled quote, blanks after a list's comma */
	struct hba *h = load("# TYPE DATABASE USER ADDRESS METHOD\n"
	                     "\n"
	                     "   \t\n"
	                     "host\tapp, \\\n"
	                     "  \"we\"\"ird\" \\\n"
	                     "  all 127.0.0.1/32 md5   # trailing comment \\\n"
	                     "  still the comment\n"
	                     "host all all 127.0.0.1/32 trust#comment right after\n",
	                     &m);
	CHECK(h != NULL);
	CHECK(method(h, (struct who){"127.0.0.1", false, "we\"ird", "u"}) == HBA_MD5);
	CHECK(decide(h, (struct who){"127.0.0.1", false, "app", "u"}).line == 4);
	CHECK(method(h, (struct who){"127.0.0.1", false, "other", "u"}) == HBA_TRUST);
	CHECK(decide(h, (struct who){"127.0.0.1", false, "other", "u"}).line == 8);
	hba_free(h);
	/* a continuation at the end of the file ends the record */
	h = load("local all all trust \\", &m);
	CHECK(h && method(h, (struct who){"local", false, "a", "b"}) == HBA_TRUST);
	hba_free(h);
}

static const struct {
	const char *text;
	const char *message; /* after "<dir>/hba.conf" */
} bad_cases[] = {
    {"hostgssenc all all all trust",
     ":1: record type 'hostgssenc' is not supported (pgfleet has no GSSAPI encryption)"},
    {"hostnogssenc all all all trust",
     ":1: record type 'hostnogssenc' is not supported (pgfleet has no GSSAPI encryption)"},
    {"hosts all all all trust",
     ":1: unknown record type 'hosts' (local, host, hostssl, hostnossl)"},
    {"include other.conf", ":1: 'include' is not supported (as PgBouncer)"},
    {"\"host\" all all all trust", ":1: the record type is one unquoted word"},
    {"host all", ":1: end of line before the user field"},
    {"host", ":1: end of line before the database field"},
    {"host all all", ":1: end of line before the address field"},
    {"host all all all", ":1: end of line before the authentication method"},
    {"local all all", ":1: end of line before the authentication method"},
    {"host samerole all all trust",
     ":1: database 'samerole' is not supported (pgfleet does not know role membership)"},
    {"host samegroup all all trust",
     ":1: database 'samegroup' is not supported (pgfleet does not know role membership)"},
    {"host all +admins all trust",
     ":1: user group '+admins' is not supported (pgfleet does not know role membership): "
     "list the users"},
    {"host all all samehost trust",
     ":1: address 'samehost' is not supported (as PgBouncer): use an address or CIDR"},
    {"host all all samenet trust",
     ":1: address 'samenet' is not supported (as PgBouncer): use an address or CIDR"},
    {"host all all db.example.com trust",
     ":1: address 'db.example.com': host names are not supported (pgfleet does not look up "
     "client names): use an address or CIDR"},
    {"host all all .example.com trust",
     ":1: address '.example.com': host names are not supported (pgfleet does not look up "
     "client names): use an address or CIDR"},
    {"host all all 10.0.0.0/33 trust", ":1: address '10.0.0.0/33': invalid CIDR mask length"},
    {"host all all ::/129 trust", ":1: address '::/129': invalid CIDR mask length"},
    {"host all all 10.0.0.0/ trust", ":1: address '10.0.0.0/': invalid CIDR mask length"},
    {"host all all 10.0.0.0/-1 trust", ":1: address '10.0.0.0/-1': invalid CIDR mask length"},
    {"host all all 10.0.0.0 ffff:: trust", ":1: invalid IP mask 'ffff::' for address '10.0.0.0'"},
    {"host all all 10.0.0.0 trust", ":1: invalid IP mask 'trust' for address '10.0.0.0'"},
    {"host all all 10.0.0.0",
     ":1: address '10.0.0.0' needs a mask: write it in CIDR form (addr/bits) or follow it "
     "with a mask"},
    {"host all all 10.0.0.0/8,10.1.0.0/16 trust",
     ":1: an address field holds one address, not a list"},
    {"host all all all peer", ":1: method 'peer' is only for local records"},
    {"hostssl all all 127.0.0.1/32 peer", ":1: method 'peer' is only for local records"},
    {"local all all ident",
     ":1: authentication method 'ident' is not supported by pgfleet (trust, reject, md5, "
     "scram-sha-256, password, cert, peer)"},
    {"local all all peer map=omicron", ":1: option 'map' needs auth_ident_file"},
    {"host all all all ldap ldapserver=x",
     ":1: authentication method 'ldap' is not supported by pgfleet (trust, reject, md5, "
     "scram-sha-256, password, cert, peer)"},
    {"host all all all magic", ":1: unknown authentication method 'magic'"},
    {"host all all all md5,trust", ":1: the authentication method is one unquoted word"},
    {"host all all all cert", ":1: method 'cert' is only for hostssl records"},
    {"local all all cert", ":1: method 'cert' is only for hostssl records"},
    {"hostssl all all all cert map=m", ":1: option 'map' needs auth_ident_file"},
    {"host all all all md5 map=m", ":1: option 'map' is only for peer and cert"},
    {"local all all peer map=", ":1: option 'map' needs one map name (map=NAME)"},
    {"local all all peer map=a map=b", ":1: option 'map' given twice"},
    {"hostssl all all all md5 clientcert=verify-full", ":1: option 'clientcert' is not supported"},
    {"host \"unterminated all all trust", ":1: unterminated quoted string"},
    {"host a,,b all all trust", ":1: empty element in a comma-separated list"},
    {"host all a,", ":1: comma-separated list ends with a comma"},
    {"host a, # comment", ":1: comma-separated list ends with a comma"},
    {"host \"\" all all trust", ":1: empty database name"},
    {"host all \"\" all trust", ":1: empty user name"},
    {"host @ all all trust", ":1: '@' without a file name"},
    {"", ": no records: every client would be refused"},
    {"# only a comment\n\n", ": no records: every client would be refused"},
};

/* peer: user names by uid from the passwd file, read at load */
static void test_peer(void)
{
	struct msgs m;
	write_file("passwd", "root:x:0:0:root:/root:/bin/bash\n"
	                     "+nis-compat::::::\n"
	                     "broken line\n"
	                     "alice:x:1000:1000::/home/alice:/bin/sh\n"
	                     "alias:x:1000:1000::/home/alice:/bin/sh\n"
	                     "bob:x:notanumber:1::/:/bin/sh\n");
	static char passwd[512];
	snprintf(passwd, sizeof passwd, "%s", at("passwd"));
	hba_passwd_file = passwd;
	struct hba *h = load("local all all peer\n", &m);
	CHECK(h != NULL);
	CHECK(method(h, (struct who){"local", false, "app", "alice"}) == HBA_PEER);
	CHECK(method(h, (struct who){"127.0.0.1", false, "app", "alice"}) == HBA_NO_MATCH);
	CHECK(hba_peer_user(h, 0) && strcmp(hba_peer_user(h, 0), "root") == 0);
	CHECK(hba_peer_user(h, 1000) && strcmp(hba_peer_user(h, 1000), "alice") == 0);
	CHECK(hba_peer_user(h, 1) == NULL);
	CHECK(hba_peer_user(h, 4242) == NULL);
	hba_free(h);
	/* without peer records the file is not read */
	hba_passwd_file = "/nonexistent/passwd";
	h = load("local all all trust\n", &m);
	CHECK(h != NULL && hba_peer_user(h, 0) == NULL);
	hba_free(h);
	h = load("local all all trust\nlocal all all peer\n", &m);
	CHECK(h == NULL && m.n == 1);
	CHECK(has(&m, "hba.conf",
	          ":2: method 'peer' needs /nonexistent/passwd: cannot read: No such file or "
	          "directory"));
	hba_passwd_file = "/etc/passwd";
}

/* auth_ident_file: user name maps for peer and cert */
static void test_ident(void)
{
	struct msgs m;
	write_file("ident.conf", "# MAP  SYSTEM   DATABASE\n"
	                         "ops    root     admin\n"
	                         "ops    root     app\n"
	                         "ops    \"deploy bot\" all\n"
	                         "other  alice    alice\n");
	snprintf(ident_buf, sizeof ident_buf, "%s", at("ident.conf"));
	ident_path = ident_buf;
	struct hba *h = load("hostssl all all all cert map=ops\n"
	                     "local all all peer map=\"other\"\n"
	                     "local all all trust\n",
	                     &m);
	CHECK(h != NULL);
	struct hba_decision d = decide(h, (struct who){"10.0.0.1", true, "app", "admin"});
	CHECK(d.method == HBA_CERT && d.map && strcmp(d.map, "ops") == 0);
	CHECK(hba_map_allows(h, "ops", "root", "admin"));
	CHECK(hba_map_allows(h, "ops", "root", "app"));
	CHECK(!hba_map_allows(h, "ops", "root", "alice"));
	CHECK(hba_map_allows(h, "ops", "deploy bot", "anyone"));
	CHECK(!hba_map_allows(h, "ops", "alice", "alice"));
	CHECK(hba_map_allows(h, "other", "alice", "alice"));
	CHECK(!hba_map_allows(h, "nomap", "alice", "alice"));
	d = decide(h, (struct who){"local", false, "app", "x"});
	CHECK(d.method == HBA_PEER && d.map && strcmp(d.map, "other") == 0);
	CHECK(decide(h, (struct who){"10.0.0.1", false, "app", "x"}).method == HBA_NO_MATCH);
	hba_free(h);

	/* a map the file does not have */
	h = load("local all all peer map=nope\n", &m);
	CHECK(h == NULL && m.n == 1);
	char want[700];
	snprintf(want, sizeof want, ":1: map 'nope' is not in %s", ident_buf);
	CHECK(has(&m, "hba.conf", want));

	/* what the ident file cannot say, each with its line */
	write_file("ident.conf", "ops root admin\n"
	                         "ops /^(.*)$ \\1\n"
	                         "ops root +admins\n"
	                         "ops root\n"
	                         "ops root admin extra\n"
	                         "include other.conf\n"
	                         "ops a,b admin\n"
	                         "ops \"\" admin\n"
	                         "ops root /^x$\n");
	h = load("local all all trust\n", &m);
	CHECK(h == NULL && m.n == 8);
	CHECK(has(&m, "ident.conf", ":2: regular expressions are not supported (as PgBouncer)"));
	CHECK(has(&m, "ident.conf",
	          ":3: user group '+admins' is not supported (pgfleet does not know role "
	          "membership): list the users"));
	CHECK(has(&m, "ident.conf",
	          ":4: expected one map name, one system user name and one database user name"));
	CHECK(has(&m, "ident.conf",
	          ":5: expected one map name, one system user name and one database user name"));
	CHECK(has(&m, "ident.conf", ":6: 'include' is not supported (as PgBouncer)"));
	CHECK(has(&m, "ident.conf",
	          ":7: expected one map name, one system user name and one database user name"));
	CHECK(has(&m, "ident.conf", ":8: empty name"));
	CHECK(has(&m, "ident.conf", ":9: regular expressions are not supported (as PgBouncer)"));

	/* an ident file that cannot be read */
	snprintf(ident_buf, sizeof ident_buf, "%s", at("no-ident.conf"));
	h = load("local all all trust\n", &m);
	CHECK(h == NULL && m.n == 1);
	CHECK(has(&m, "no-ident.conf", ": cannot read: No such file or directory"));
	ident_path = NULL;
}

static void test_errors(void)
{
	struct msgs m;
	for (size_t i = 0; i < sizeof bad_cases / sizeof bad_cases[0]; i++) {
		struct hba *h = load(bad_cases[i].text, &m);
		CHECK(h == NULL);
		CHECK(m.n == 1);
		if (!has(&m, "hba.conf", bad_cases[i].message))
			fprintf(stderr, "  case: %s\n", bad_cases[i].text);
		CHECK(has(&m, "hba.conf", bad_cases[i].message));
		hba_free(h);
	}

	/* every bad line is reported, with its own number; good lines do not
	 * save the file */
	struct hba *h = load("local all all trust\n"
	                     "host all all nowhere.example trust\n"
	                     "# fine\n"
	                     "host all all all \\\n"
	                     "   gss\n"
	                     "hostssl all +g all md5\n",
	                     &m);
	CHECK(h == NULL);
	CHECK(m.n == 3);
	CHECK(has(&m, "hba.conf",
	          ":2: address 'nowhere.example': host names are not supported (pgfleet does not "
	          "look up client names): use an address or CIDR"));
	CHECK(has(&m, "hba.conf",
	          ":4: authentication method 'gss' is not supported by pgfleet (trust, reject, "
	          "md5, scram-sha-256, password, cert, peer)"));
	CHECK(has(&m, "hba.conf",
	          ":6: user group '+g' is not supported (pgfleet does not know role membership): "
	          "list the users"));

	/* @files: a missing one names itself; a problem inside one names that
	 * file and line */
	h = load("host @missing.txt all all trust\n", &m);
	CHECK(h == NULL && m.n == 1);
	char want[700];
	snprintf(want, sizeof want,
	         ":1: cannot read @missing.txt (%s/missing.txt): No such file or directory", dir);
	CHECK(has(&m, "hba.conf", want));
	write_file("groups.txt", "alice\n+staff\n");
	h = load("host all @groups.txt all trust\n", &m);
	CHECK(h == NULL && m.n == 1);
	CHECK(has(&m, "groups.txt",
	          ":2: user group '+staff' is not supported (pgfleet does not know role "
	          "membership): list the users"));
	write_file("loop.txt", "@loop.txt\n");
	h = load("host all @loop.txt all trust\n", &m);
	CHECK(h == NULL && m.n == 1);
	CHECK(has(&m, "loop.txt", ":1: @loop.txt: @file includes nested deeper than 10"));

	/* a file that cannot be read */
	m.n = 0;
	h = hba_load(at("nope.conf"), NULL, collect, &m);
	CHECK(h == NULL && m.n == 1);
	CHECK(has(&m, "nope.conf", ": cannot read: No such file or directory"));
	m.n = 0;
	h = hba_load(dir, NULL, collect, &m);
	CHECK(h == NULL && m.n == 1);
	snprintf(want, sizeof want, "%s: cannot read: Is a directory", dir);
	CHECK(m.n == 1 && strcmp(m.line[0], want) == 0);
}

/* auth_type = hba through the loader: the rules are read, problems are the
 * load's, cert needs client certificates. */
static void config_collect(void *arg, const char *line)
{
	collect(arg, line);
}

static void test_config(void)
{
	struct config cfg;
	struct msgs m = {.n = 0};
	char ini[2048];

	write_file("hba.conf", "host all all 127.0.0.1/32 trust\n");
	snprintf(ini, sizeof ini,
	         "[databases]\napp = host=db\n[pgfleet]\nauth_type = hba\nauth_hba_file = %s\n",
	         at("hba.conf"));
	write_file("a.ini", ini);
	CHECK(config_load(&cfg, at("a.ini"), NULL, config_collect, &m));
	CHECK(cfg.hba != NULL && cfg.auth_type == AUTH_HBA);
	struct sockaddr_in sin = {.sin_family = AF_INET};
	inet_pton(AF_INET, "127.0.0.1", &sin.sin_addr);
	struct hba_request r = {(struct sockaddr *)&sin, false, "app", "nobody"};
	CHECK(hba_match(cfg.hba, &r).method == HBA_TRUST);
	/* SET cannot switch to hba or change the file (a load reads it) */
	char err[256];
	CHECK(config_set(&cfg, "auth_type", "trust", err, sizeof err));
	CHECK(config_set(&cfg, "auth_type", "hba", err, sizeof err));
	config_free(&cfg);

	/* not hba: the file is not read, as PgBouncer */
	snprintf(ini, sizeof ini,
	         "[databases]\napp = host=db\n[pgfleet]\nauth_type = trust\nauth_hba_file = %s\n",
	         at("missing.conf"));
	write_file("b.ini", ini);
	CHECK(config_load(&cfg, at("b.ini"), NULL, config_collect, &m));
	CHECK(cfg.hba == NULL);
	CHECK(!config_set(&cfg, "auth_type", "hba", err, sizeof err));
	CHECK(strcmp(err, "auth_type 'hba': set it and auth_hba_file in the file, then RELOAD "
	                  "(the rules are read by a load)") == 0);
	config_free(&cfg);

	/* hba with a broken file: the load fails with the file's lines */
	write_file("bad.conf", "host all all all trust\nhost all all all gss\n");
	snprintf(ini, sizeof ini,
	         "[databases]\napp = host=db\n[pgfleet]\nauth_type = hba\nauth_hba_file = %s\n",
	         at("bad.conf"));
	write_file("c.ini", ini);
	m.n = 0;
	CHECK(!config_load(&cfg, at("c.ini"), NULL, config_collect, &m));
	CHECK(m.n == 1);
	CHECK(has(&m, "bad.conf",
	          ":2: authentication method 'gss' is not supported by pgfleet (trust, reject, "
	          "md5, scram-sha-256, password, cert, peer)"));

	/* hba without a file */
	write_file("d.ini", "[databases]\napp = host=db\n[pgfleet]\nauth_type = hba\n");
	m.n = 0;
	CHECK(!config_load(&cfg, at("d.ini"), NULL, config_collect, &m));
	CHECK(m.n == 1);
	CHECK(has(&m, "d.ini", ":4: key 'auth_type': 'hba' needs auth_hba_file"));

	/* cert without client certificates */
	write_file("cert.conf", "hostssl all all all cert\n");
	snprintf(ini, sizeof ini,
	         "[databases]\napp = host=db\n[pgfleet]\nauth_type = hba\nauth_hba_file = %s\n"
	         "client_tls_sslmode = require\nclient_tls_cert_file = /x.crt\n"
	         "client_tls_key_file = /x.key\n",
	         at("cert.conf"));
	write_file("e.ini", ini);
	m.n = 0;
	CHECK(!config_load(&cfg, at("e.ini"), NULL, config_collect, &m));
	CHECK(m.n == 1);
	CHECK(has(&m, "cert.conf",
	          ":1: method 'cert' needs client_tls_sslmode verify-ca or verify-full (client "
	          "certificates are not asked for otherwise)"));

	/* hostssl without client TLS could never match */
	write_file("ssl.conf", "local all all trust\nhostssl all all all md5\n");
	snprintf(ini, sizeof ini,
	         "[databases]\napp = host=db\n[pgfleet]\nauth_type = hba\nauth_hba_file = %s\n",
	         at("ssl.conf"));
	write_file("g.ini", ini);
	m.n = 0;
	CHECK(!config_load(&cfg, at("g.ini"), NULL, config_collect, &m));
	CHECK(m.n == 1);
	CHECK(has(&m, "ssl.conf",
	          ":2: hostssl record cannot match because client_tls_sslmode is disable"));

	/* auth_ident_file is read with auth_hba_file */
	char ident[600];
	snprintf(ident, sizeof ident, "%s/nope-ident.conf", dir);
	snprintf(ini, sizeof ini,
	         "[databases]\napp = host=db\n[pgfleet]\nauth_type = hba\nauth_hba_file = %s\n"
	         "auth_ident_file = %s\n",
	         at("hba.conf"), ident);
	write_file("f.ini", ini);
	m.n = 0;
	CHECK(!config_load(&cfg, at("f.ini"), NULL, config_collect, &m));
	CHECK(m.n == 1);
	CHECK(has(&m, "nope-ident.conf", ": cannot read: No such file or directory"));
}

int main(void)
{
	if (!mkdtemp(dir)) {
		perror("mkdtemp");
		return 2;
	}
	RUN(test_record_types);
	RUN(test_lists);
	RUN(test_addresses);
	RUN(test_syntax);
	RUN(test_same);
	RUN(test_peer);
	RUN(test_ident);
	RUN(test_errors);
	RUN(test_config);
	DIR *d = opendir(dir);
	struct dirent *e;
	while (d && (e = readdir(d)))
		if (e->d_name[0] != '.' || strlen(e->d_name) > 2)
			unlink(at(e->d_name));
	if (d)
		closedir(d);
	rmdir(dir);
	return harness_finish();
}
