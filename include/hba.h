/*
 * hba.h: auth_hba_file, PostgreSQL's pg_hba.conf syntax as PgBouncer reads
 * it: which authentication method a client gets, by how it connected
 * (Unix socket, TCP, TLS), its address, the database and the user it asks
 * for.  The first matching record decides; no match means refused.
 *
 * Supported: record types local, host, hostssl, hostnossl; database lists
 * of names, `all`, `sameuser`, `replication` (never matches: pgfleet takes
 * no replication connections) and `@file`; user lists of names, `all` and
 * `@file`; addresses `all`, CIDR (v4/v6) and address + mask; methods trust,
 * reject, md5, scram-sha-256, password, cert (hostssl only) and peer (local
 * only; the user names of uids are read from hba_passwd_file when the
 * rules are loaded, never looked up at login); quoted names, comments,
 * backslash line continuation.
 *
 * Contract: hba_load() reads the whole file (and its @files) or refuses it:
 * every problem is one "file:line: why" report, and then it returns NULL.
 * What pgfleet cannot honour is such a problem, never a record that
 * silently never matches: hostgssenc/hostnogssenc, `samerole`/`samegroup`,
 * `+group`, host names, `samehost`/`samenet`, methods other than the ones
 * above, options other than `map=` (peer and cert only, with
 * auth_ident_file: `MAP SYSTEM-USER DATABASE-USER` lines, the last `all`
 * or a name; no regular expressions, groups or includes, as PgBouncer).
 *
 * Must not: touch sockets, log, or look anything up at login (no DNS, no
 * NSS): matching is string and address comparison only, so it may run on
 * the event loop at every login.
 */
#ifndef PGFLEET_HBA_H
#define PGFLEET_HBA_H

#include <stdbool.h>
#include <sys/socket.h>

enum hba_method {
	HBA_NO_MATCH, /* no record matched: refused as PostgreSQL does */
	HBA_TRUST,
	HBA_REJECT,
	HBA_PASSWORD,
	HBA_MD5,
	HBA_SCRAM,
	HBA_CERT,
	HBA_PEER,
};

/* Where peer finds user names by uid: "/etc/passwd" (tests point it at
 * their own file).  Read by hba_load() when a record uses peer, so a user
 * added later needs a RELOAD; users only NSS knows (LDAP, sssd) are not
 * found, and their peer logins fail. */
extern const char *hba_passwd_file;

struct hba; /* the rules of one file, read-only once loaded */

/* Called once per problem with a complete line "file:line: why". */
typedef void (*hba_report_fn)(void *arg, const char *line);

/* The rules of `path` (and the user name maps of `ident_path`, NULL or ""
 * for none), or NULL after reporting every problem. */
struct hba *hba_load(const char *path, const char *ident_path, hba_report_fn report, void *arg)
    __attribute__((warn_unused_result));
void hba_free(struct hba *h);

/* What a client shows.  addr's family is AF_UNIX for a Unix socket
 * (record type local), AF_INET or AF_INET6 otherwise. */
struct hba_request {
	const struct sockaddr *addr;
	bool tls;
	const char *database;
	const char *user;
};

struct hba_decision {
	enum hba_method method;
	const char *file; /* the matching record's place; NULL for HBA_NO_MATCH */
	int line;
	const char *map; /* its map= (peer, cert), or NULL: the names must be equal */
};

struct hba_decision hba_match(const struct hba *h, const struct hba_request *r);

/* The first record using `m` (for checks against other settings): false
 * when none does. */
bool hba_find_method(const struct hba *h, enum hba_method m, const char **file, int *line);
/* The same for the first hostssl record. */
bool hba_find_hostssl(const struct hba *h, const char **file, int *line);
/* Were both read from the same text (the file and its @files)?  For the
 * reload's "changed" list; two NULLs are the same. */
bool hba_same(const struct hba *a, const struct hba *b);

const char *hba_method_name(enum hba_method m);

/* The user name of `uid` from hba_passwd_file as read at load (peer), or
 * NULL when it has none there. */
const char *hba_peer_user(const struct hba *h, unsigned long uid);

/* May `system_user` (peer: the OS user; cert: the CommonName) log in as
 * `user` under user name map `map`? */
bool hba_map_allows(const struct hba *h, const char *map, const char *system_user,
                    const char *user);

#endif
