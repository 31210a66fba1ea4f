/*
 * SipHash-2-4 (Aumasson and Bernstein, "SipHash: a fast short-input PRF",
 * 2012): the hash of the kv table.
 *
 * Keyed, so that a client who picks keys cannot make them all collide and
 * turn the table into a list (hash flooding); and deterministic for a given
 * key, so the table can keep its key (the seed) in the arena and hash the
 * same way on every node it migrates to.
 */
#ifndef DVS_EXAMPLES_KV_SIPHASH_H
#define DVS_EXAMPLES_KV_SIPHASH_H

#include <stddef.h>
#include <stdint.h>

/* k[0] and k[1] are the key's bytes 0..7 and 8..15 read little-endian. */
uint64_t kv_siphash(const void *data, size_t len, const uint64_t k[2]);

#endif
