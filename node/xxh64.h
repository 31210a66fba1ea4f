/*
 * XXH64, the 64-bit xxHash (Yann Collet's specification, "xxhash_spec.md"),
 * streaming form. The transfer stream's end record carries the XXH64 of the
 * arena image (transfer.h) so that the destination can tell a complete,
 * correct copy from a short or corrupted one before it commits.
 *
 * Chosen over a CRC because it runs at memory speed on one core (~10 GB/s),
 * and the checksum is computed while the service is frozen: it is downtime.
 * It is not a cryptographic hash; the transfer port is not authenticated by it.
 */
#ifndef DVS_NODE_XXH64_H
#define DVS_NODE_XXH64_H

#include <stddef.h>
#include <stdint.h>

struct node_xxh64 {
    uint64_t total_len;
    uint64_t v[4];
    uint8_t mem[32]; /* input not yet consumed, mem_size bytes */
    uint32_t mem_size;
    uint64_t seed;
};

void node_xxh64_init(struct node_xxh64 *st, uint64_t seed);
void node_xxh64_update(struct node_xxh64 *st, const void *data, size_t len);
uint64_t node_xxh64_digest(const struct node_xxh64 *st);

/* One-shot: the same value as init + update + digest. */
uint64_t node_xxh64(const void *data, size_t len, uint64_t seed);

#endif
