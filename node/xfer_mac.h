/*
 * The transfer stream's authentication (docs/security.md, "Transfer MAC").
 *
 * When the leader creates a migration it draws a 32-byte secret
 * (manager/daemon.c, mgr_propose) that the FSM keeps in the migration's row
 * and shows to the agents only, as "transfer_secret" (64 hex digits) in each
 * migration of GET /v1/nodes/{id}/orders. Both ends of the migration thus
 * share a key no one else has: the source MACs every byte it sends, the
 * destination MACs every byte it receives and compares the tags before it
 * trusts the image. A stray peer that connects to the transfer port cannot
 * produce a valid tag, so its pages are refused and the migration aborts.
 *
 * The MAC is HMAC-SHA256 (GnuTLS) over
 *
 *     "dvs-xfer-v1" (11 bytes) | migration id (u64, little endian) | stream
 *
 * so that a stream recorded for one migration is worthless for any other,
 * even between the same two nodes. The tag is 32 bytes; compare tags with
 * xfer_mac_equal() (constant time), never memcmp.
 *
 * Usage (one direction of one connection):
 *
 *     struct xfer_mac mac;
 *     uint8_t key[XFER_MAC_KEY_LEN], tag[XFER_MAC_LEN];
 *     xfer_mac_key_from_hex(secret_hex, key);
 *     xfer_mac_init(&mac, key, sizeof(key), migration_id);
 *     xfer_mac_update(&mac, buf, n);   ... for every byte, in order ...
 *     xfer_mac_final(&mac, tag);       (the sender sends TAG; the receiver
 *                                       compares it with xfer_mac_equal)
 *
 * A struct xfer_mac belongs to one thread at a time. Functions return 0 or a
 * negative code: -EINVAL (bad argument), -ENOMEM, DVS_EINTERNAL (GnuTLS
 * failed). After xfer_mac_final or xfer_mac_close the struct may be
 * initialised again; both accept a struct that was never initialised if it
 * was zeroed.
 */
#ifndef DVS_NODE_XFER_MAC_H
#define DVS_NODE_XFER_MAC_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#define XFER_MAC_LEN 32     /* tag bytes (HMAC-SHA256) */
#define XFER_MAC_KEY_LEN 32 /* the manager's secret, in bytes */

struct xfer_mac {
    void *h;        /* gnutls_hmac_hd_t; NULL when not initialised */
    uint64_t bytes; /* stream bytes MAC'd so far (the context excluded) */
};

/*
 * Start the MAC of migration MIGRATION_ID's stream under KEY (KEYLEN bytes,
 * borrowed; at least 16). Returns 0, -EINVAL, -ENOMEM or DVS_EINTERNAL.
 */
int xfer_mac_init(struct xfer_mac *m, const void *key, size_t keylen, uint64_t migration_id);

/*
 * Plain HMAC-SHA256 under KEY, without the DVS context: for the RFC 4231
 * known-answer tests and nothing else.
 */
int xfer_mac_init_raw(struct xfer_mac *m, const void *key, size_t keylen);

/* Add LEN bytes at BUF (borrowed) to the MAC. LEN 0 is allowed. */
int xfer_mac_update(struct xfer_mac *m, const void *buf, size_t len);

/* Write the tag to OUT (XFER_MAC_LEN bytes) and release the state. */
int xfer_mac_final(struct xfer_mac *m, uint8_t out[XFER_MAC_LEN]);

/* Release the state without a tag (an aborted transfer). Accepts NULL. */
void xfer_mac_close(struct xfer_mac *m);

/* Finish the receiver's MAC and compare it with the TAG the sender sent:
 * true only if they are equal. Releases the state either way. */
bool xfer_mac_verify(struct xfer_mac *m, const uint8_t tag[XFER_MAC_LEN]);

/* Constant-time equality of two tags. */
bool xfer_mac_equal(const uint8_t a[XFER_MAC_LEN], const uint8_t b[XFER_MAC_LEN]);

/*
 * Decode the orders' "transfer_secret" (exactly 64 hex digits, either case)
 * into OUT. Returns 0 or -EINVAL (OUT untouched).
 */
int xfer_mac_key_from_hex(const char *hex, uint8_t out[XFER_MAC_KEY_LEN]);

#endif
