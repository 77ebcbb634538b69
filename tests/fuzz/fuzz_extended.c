/*
 * fuzz_extended: the client message reader once logged in (client.c's
 * forward_to_server and its on_parse/on_bind/on_describe/on_close/on_query
 * handlers, the SQL look at DEALLOCATE/DISCARD, the prepared statement
 * maps).  The client logs in over trust and the backend answers pgfleet's
 * login; then the input is what the client sends: a variant byte (pool_mode,
 * max_prepared_statements, driver.h; its auth bits are ignored) then chunks
 * split at FUZZ_SEP, each written as one send.  The backend gives every
 * request the reply of a request that went well, so transactions end and
 * connections go back to the pool (driver.c's backend_reply).
 */
#include <stdlib.h>

#include "driver.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	if (size < 1)
		return 0;
	struct fuzz_chunk chunks[64];
	size_t n = fuzz_split(data + 1, size - 1, chunks, 64);
	fuzz_session_begin(data[0] & ~FUZZ_AUTH_MASK, FUZZ_BACKEND_AUTO);
	if (!fuzz_client_login())
		abort(); /* the harness itself is broken: nothing below would be reached */
	for (size_t i = 0; i < n; i++)
		fuzz_client_write(chunks[i].p, chunks[i].len);
	fuzz_session_end();
	return 0;
}
