/*
 * peers.h: the fleet of pgfleet instances this one belongs to (issue 20).
 * `peers` names a headless Service of the pgfleet pods; its DNS answer is
 * the candidate set, and a candidate is live while it answers the signed
 * pings sent to it every second over UDP on peer_port.  The live set gives
 * the share of fleet-wide limits (fleet_set_peers), and a CancelRequest for
 * a key another instance handed out goes to that instance alone.
 *
 * Every peer message is one datagram, signed with HMAC-SHA256 under
 * peer_secret and carrying a wall-clock timestamp and a random nonce: an
 * unsigned, wrongly signed, stale or replayed message is refused and logged.
 *
 * The module runs on worker 0's loop (its socket, its timer, the DNS
 * name); its table is process-wide behind a mutex, so any worker can
 * forward a cancel or read the table (SHOW PEERS, /metrics).
 *
 * Must not: forward a cancel a peer sent (no loops), trust a message it
 * cannot verify, log the secret, or block (the socket is non-blocking).
 */
#ifndef PGFLEET_PEERS_H
#define PGFLEET_PEERS_H

#include <stdbool.h>
#include <stdint.h>

#define PEERS_MAX 64 /* candidates kept from one DNS answer */

/* Start-up, before any loop (main): with `peers` set, picks this
 * instance's id (cancel_set_instance), finds its own address (POD_IP, else
 * later among the host's interfaces) and binds the UDP socket.  False (and
 * logged) when it cannot; true with peers off. */
bool peers_setup(void) __attribute__((warn_unused_result));
/* Worker 0's loop: watches the DNS name, pings every second, reads the
 * socket.  Nothing with peers off. */
bool peers_start(void) __attribute__((warn_unused_result));
/* Worker 0's loop teardown, once the other workers are joined. */
void peers_stop(void);

/* A CancelRequest whose pid names another instance (cancel.h): sent to the
 * live peers with that instance id (one, unless two picked the same id).
 * Any worker.  False: no live peer has it. */
bool peers_forward_cancel(uint32_t pid, uint32_t key);

/* One row of SHOW PEERS / the peer metrics. */
struct peer_info {
	char addr[64];
	uint16_t instance; /* 0: not heard from yet */
	bool self, live, in_dns;
	double last_seen; /* fleet_now() seconds of its last verified message, 0: never */
	uint64_t cancels_forwarded, cancels_received;
};
/* Calls fn once per peer (this instance included), sorted by address, on a
 * copy of the table.  Nothing with peers off. */
void peers_foreach(void (*fn)(const struct peer_info *p, void *arg), void *arg);
/* Is `peers` set (this process takes part in a fleet)? */
bool peers_enabled(void);
/* Peer messages refused since start (bad size, signature, time, replay). */
uint64_t peers_refused_count(void);

#endif
