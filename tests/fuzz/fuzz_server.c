/*
 * fuzz_server: the server-reply scanner (server.c's process_login with the
 * SCRAM/md5/cleartext answers, ParameterStatus, BackendKeyData and
 * ReadyForQuery; then forward_to_client and process_unlinked routing replies
 * by the request queue).  A client logs in over trust; the input is a
 * variant byte (pool_mode, max_prepared_statements, driver.h; its auth bits
 * are ignored) then chunks split at FUZZ_SEP that alternate: the backend's
 * login replies, a client's requests, the backend's replies, a client's
 * requests, ...  So a reply meets the queue that real requests built.
 */
#include "driver.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	if (size < 1)
		return 0;
	struct fuzz_chunk chunks[64];
	size_t n = fuzz_split(data + 1, size - 1, chunks, 64);
	fuzz_session_begin(data[0] & ~FUZZ_AUTH_MASK, FUZZ_BACKEND_SCRIPTED);
	(void)fuzz_client_login(); /* waits for the backend: the first chunk */
	for (size_t i = 0; i < n; i++) {
		if (i % 2 == 0)
			fuzz_backend_write(chunks[i].p, chunks[i].len);
		else
			fuzz_client_write(chunks[i].p, chunks[i].len);
	}
	fuzz_session_end();
	return 0;
}
