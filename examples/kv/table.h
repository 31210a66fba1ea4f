/*
 * The kv table: a hash table whose every byte lives in a migratable arena.
 *
 * The table header, the bucket arrays, the entries (with their keys) and
 * the values are all arena blocks linked by plain pointers into the same
 * arena, and the header is the arena's root object, so a fresh instance
 * that maps a copy of the arena at the same address finds the whole table
 * through dvs_arena_root (DESIGN.md §4, and THE RULE in dvs.h: nothing in
 * the arena points anywhere else).
 *
 * What this costs, and why it is still the simple design:
 *   - the arena handle (a process-local heap object) cannot be stored in the
 *     arena, so callers hold a small process-local struct kv that pairs the
 *     handle with the table;
 *   - the hash must be the same on every node, so its SipHash key is drawn
 *     once when the table is created and kept in the table;
 *   - growing the table rehashes incrementally (two bucket arrays, a few
 *     buckets moved per write, as Redis' dict does), because a rehash of
 *     everything at once would stall the single server thread for as long
 *     as it takes, and would dirty every entry's page in one go, which is
 *     the worst case for a pre-copy round.
 *
 * Every write either completes or changes nothing: everything a write needs
 * is allocated before anything is modified, so a full arena gives
 * DVS_ENOSPACE and an intact table, never a half-applied change.
 *
 * Not thread-safe: the server calls it from its one handler thread.
 */
#ifndef DVS_EXAMPLES_KV_TABLE_H
#define DVS_EXAMPLES_KV_TABLE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "dvs.h"
#include "examples/kv/proto.h"

/* The process-local handle: the arena handle plus the table found in it. */
struct kv;

/*
 * Find the table at the arena's root, or create an empty one and make it
 * the root when the arena has none (a fresh arena). seed is the SipHash key
 * for a new table (ignored for an existing one, which keeps its own);
 * callers draw it at random, tests pass a constant.
 *
 * Returns 0, *ret_kv (free with kv_close) and *ret_created (may be NULL),
 * or: DVS_EPROTO (the root is not a kv table of this version, or its header
 * is inconsistent: a different service's arena, or corruption),
 * DVS_ENOSPACE (no room for a new table), -ENOMEM. Outputs untouched on
 * failure.
 */
int kv_open(dvs_arena *arena, const uint64_t seed[2], struct kv **ret_kv,
            bool *ret_created);

/* Free the handle. The table stays in the arena. NULL ok. */
void kv_close(struct kv *kv);

/*
 * Look key up. Returns 0 with *ret_value and *ret_len pointing at the value in
 * the arena (borrowed: valid until the next write to the table; NULL when
 * the value is empty), or -ENOENT.
 */
int kv_get(struct kv *kv, const void *key, size_t key_len, const uint8_t **ret_value,
           size_t *ret_len);

/*
 * Set key to value (copied into the arena; it must not point into the
 * table itself). Returns 0, -EINVAL (key or value length out of the
 * protocol's bounds) or DVS_ENOSPACE.
 */
int kv_put(struct kv *kv, const void *key, size_t key_len, const void *value,
           size_t value_len);

/* Remove key. Returns 0 or -ENOENT. */
int kv_delete(struct kv *kv, const void *key, size_t key_len);

/*
 * Add delta to the counter at key, kept as decimal text (a missing key
 * counts as 0). Returns 0 and *ret_value (the new value), or: -EINVAL (the
 * current value is not a decimal int64), -ERANGE (the sum overflows),
 * DVS_ENOSPACE. The value is unchanged on failure.
 */
int kv_incr(struct kv *kv, const void *key, size_t key_len, int64_t delta,
            int64_t *ret_value);

/*
 * Compare-and-swap: if key's value equals expected, set it to value.
 * Returns 0 (swapped), -ENOENT (no such key), DVS_ECONFLICT (the value
 * differs; kv_get shows it), -EINVAL (lengths) or DVS_ENOSPACE.
 */
int kv_cas(struct kv *kv, const void *key, size_t key_len, const void *expected,
           size_t expected_len, const void *value, size_t value_len);

/* Count one executed request (the counter travels with the table). */
void kv_count_request(struct kv *kv);

/* The table's figures and the arena's; generation is left 0. */
void kv_stats(const struct kv *kv, struct kv_stats *ret_stats);

/*
 * Walk every bucket and entry and check the invariants: each entry is
 * inside the arena, in the bucket its hash selects, with the right hash,
 * lengths in bounds, value pointer set iff the length is non-zero, buckets
 * already moved by a rehash empty, and the counters equal to the sums.
 * O(entries). Returns 0 or DVS_EPROTO. The tests run it after every step.
 */
int kv_check(const struct kv *kv);

#endif
