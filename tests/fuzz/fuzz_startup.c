/*
 * fuzz_startup: the client-side startup and authentication parser
 * (client.c's process_login, handle_startup, handle_password; cancel
 * requests; the SSLRequest/GSSENCRequest answers).  The input is what a
 * client sends from its first byte: a variant byte (auth_type, pool_mode,
 * driver.h) then chunks split at FUZZ_SEP, each written as one send.  The
 * backend answers pgfleet's own login, so a client that gets in goes on to
 * the pool, and whatever it sends next is forwarded.
 */
#include "driver.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	if (size < 1)
		return 0;
	struct fuzz_chunk chunks[64];
	size_t n = fuzz_split(data + 1, size - 1, chunks, 64);
	fuzz_session_begin(data[0], FUZZ_BACKEND_AUTO);
	for (size_t i = 0; i < n; i++)
		fuzz_client_write(chunks[i].p, chunks[i].len);
	fuzz_session_end();
	return 0;
}
