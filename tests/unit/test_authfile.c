/*
 * test_authfile.c: authfile.c, auth_file (PgBouncer's userlist.txt): its
 * syntax, its messages, and that no password reaches a message.
 */
#include "config_fixture.h"

/* Four lines, so that a case's own line is line 5. */
#define BASE "[databases]\napp = host=db\n[pgfleet]\nlisten_addr = 127.0.0.1\n"

static void test_auth_file(void)
{
	struct config cfg;
	struct msgs m = {0};

	write_file("users.txt", "; comment\n# comment\n\n"
	                        "\"alice\" \"md5abc\"\n"
	                        "  \"bob\"  \"pa\"\"ss word\"  \n"
	                        "\"carol\"   \"SCRAM-SHA-256$4096:c2FsdA==$a:b\"  extra ignored\n");
	char *env[] = {"DB_USER=alice", "DB_PASSWORD=envpw", NULL};
	char *line = expand(BASE "auth_file = @/users.txt\n");
	CHECK(load_text(&cfg, &m, line, env));
	CHECK(cfg.n_users == 3);
	const struct user_entry *u = config_find_user(&cfg, "bob");
	CHECK(u && strcmp(u->password, "pa\"ss word") == 0);
	u = config_find_user(&cfg, "carol");
	CHECK(u && strcmp(u->password, "SCRAM-SHA-256$4096:c2FsdA==$a:b") == 0);
	u = config_find_user(&cfg, "alice");
	CHECK(u && strcmp(u->password, "envpw") == 0); /* the environment wins */
	config_free(&cfg);
	free(line);

	/* a relative auth_file is next to the file that names it (issue 18) */
	CHECK(load_text(&cfg, &m, BASE "auth_file = users.txt\n", env));
	CHECK(cfg.n_users == 3);
	char *abs = expand("@/users.txt");
	CHECK_STR(cfg.auth_file, abs);
	free(abs);
	config_free(&cfg);

	/* PGFLEET_AUTH_FILE is read after the environment is applied */
	char *penv = expand("PGFLEET_AUTH_FILE=@/users.txt");
	char *env2[] = {penv, NULL};
	CHECK(load_text(&cfg, &m, "[databases]\napp = host=db\n", env2));
	CHECK(cfg.n_users == 3 && config_find_user(&cfg, "alice") != NULL);
	config_free(&cfg);
	free(penv);

	write_file("bad-users.txt", "\"dave\" \"x\"\n"
	                            "eve \"pw\"\n"
	                            "\"frank\" topsecret\n"
	                            "\"gina\" \"unterminated-secret\n"
	                            "\"\" \"x\"\n"
	                            "\"hank\n");
	line = expand("[databases]\napp = host=db\n[pgfleet]\nauth_file = @/bad-users.txt\n");
	CHECK(!load_text(&cfg, &m, line, NULL));
	free(line);
	CHECK(m.n == 5);
	CHECK(msgs_has(&m, "@/bad-users.txt:2: expected a quoted user name (\"user\" "
	                   "\"password\")"));
	CHECK(msgs_has(&m, "@/bad-users.txt:3: user 'frank': expected a quoted password after the "
	                   "name"));
	CHECK(msgs_has(&m, "@/bad-users.txt:4: user 'gina': unterminated quoted password"));
	CHECK(msgs_has(&m, "@/bad-users.txt:5: empty user name"));
	CHECK(msgs_has(&m, "@/bad-users.txt:6: unterminated quoted user name"));
	CHECK(!msgs_contain(&m, "secret"));

	line = expand("[databases]\napp = host=db\n[pgfleet]\nauth_file = @/nope.txt\n");
	CHECK(!load_text(&cfg, &m, line, NULL));
	free(line);
	CHECK(msgs_has(&m, "@/nope.txt: cannot read: No such file or directory"));

	/* not trust, and no users from anywhere */
	CHECK(
	    !load_text(&cfg, &m, "[databases]\napp = host=db\n[pgfleet]\nauth_type = md5\n", NULL));
	CHECK(m.n == 1);
	CHECK(msgs_has(&m, "@/pgfleet.ini:4: key 'auth_type': 'md5' needs users: set auth_file, or "
	                   "DB_USER with DB_PASSWORD"));
	msgs_clear(&m);
}

static void run_all(void)
{
	RUN(test_auth_file);
}

int main(void)
{
	return fixture_main(run_all);
}
