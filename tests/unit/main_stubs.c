/*
 * main_stubs.c: the two functions the core library calls in main.c
 * (issue 16: admin.c calls fleet_shutdown, worker.c fleet_on_message).
 * The model and policy tests link the core, so they need them; none of
 * those tests reaches either, so reaching one is a failure.  Weak: once
 * the layers are cut apart (issue 16 item 1) and the core defines them
 * itself, or no longer calls them, the core's win and this file can go.
 */
#include <stdio.h>
#include <stdlib.h>

#include "runtime.h"
#include "worker.h"

__attribute__((weak)) void fleet_shutdown(const char *why)
{
	fprintf(stderr, "unit test reached fleet_shutdown (%s)\n", why);
	abort();
}

__attribute__((weak)) void fleet_on_message(const struct worker_msg *m)
{
	fprintf(stderr, "unit test reached fleet_on_message\n");
	abort();
}
