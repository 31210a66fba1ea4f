/*
 * The kv table (the design and the contract are in table.h).
 */
#include <assert.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "examples/kv/siphash.h"
#include "examples/kv/table.h"

/* ===========================================================================
 * The arena-resident structures
 *
 * Only integers, byte arrays and pointers to other blocks of the same
 * arena. Their layout is part of the arena's format: an instance restoring
 * an arena written by another build must agree on it, hence the version.
 */

#define KV_TABLE_MAGIC UINT64_C(0x3176656c62617456) /* "Vtablev1" */
#define KV_TABLE_VERSION 1u
#define KV_MIN_BUCKETS 16u
/* Buckets moved per write while rehashing; see kv_rehash_step. */
#define KV_REHASH_STEP 4u

struct kv_entry {
    struct kv_entry *next; /* the bucket's chain */
    uint64_t hash;
    uint8_t *value;        /* its own block; NULL iff value_len == 0 */
    uint32_t value_len;
    uint16_t key_len;
    uint16_t reserved;
    uint8_t key[];
};

struct kv_table {
    uint64_t magic;
    uint32_t version;
    uint32_t self_size;      /* sizeof(struct kv_table) of the writer */
    uint64_t seed[2];        /* the SipHash key, fixed for the table's life */
    /* ht[0] is the table; ht[1] is non-NULL only during a rehash, which
     * moves ht[0]'s buckets [rehash_idx, size[0]) into it, then replaces
     * ht[0]. Sizes are powers of two. */
    struct kv_entry **ht[2];
    uint64_t size[2];
    uint64_t rehash_idx;
    uint64_t count;
    uint64_t key_bytes;
    uint64_t value_bytes;
    uint64_t requests;
};

/* The process-local side. Deliberately not in the arena: see table.h. */
struct kv {
    dvs_arena *arena;
    struct kv_table *t;
};

/* ===========================================================================
 * Helpers
 */

static bool kv_is_pow2(uint64_t n)
{
    return n != 0 && (n & (n - 1)) == 0;
}

static bool kv_rehashing(const struct kv_table *t)
{
    return t->ht[1] != NULL;
}

static uint64_t kv_hash(const struct kv_table *t, const void *key, size_t key_len)
{
    return kv_siphash(key, key_len, t->seed);
}

static bool kv_key_ok(size_t key_len)
{
    return key_len >= 1 && key_len <= KV_MAX_KEY;
}

static bool kv_entry_is(const struct kv_entry *e, uint64_t h, const void *key,
                        size_t key_len)
{
    return e->hash == h && e->key_len == key_len && memcmp(e->key, key, key_len) == 0;
}

/*
 * The link that points at key's entry (a bucket slot or the previous
 * entry's next field), so that callers can unlink it; NULL if absent. Both
 * arrays are searched while rehashing: an entry is in exactly one of them.
 */
static struct kv_entry **kv_find_link(const struct kv_table *t, uint64_t h,
                                      const void *key, size_t key_len)
{
    for (int i = 0; i < 2 && t->ht[i] != NULL; i++) {
        struct kv_entry **link = &t->ht[i][h & (t->size[i] - 1)];
        for (; *link != NULL; link = &(*link)->next)
            if (kv_entry_is(*link, h, key, key_len))
                return link;
    }
    return NULL;
}

static struct kv_entry *kv_find(const struct kv_table *t, const void *key, size_t key_len)
{
    struct kv_entry **link = kv_find_link(t, kv_hash(t, key, key_len), key, key_len);
    return link ? *link : NULL;
}

/* ===========================================================================
 * Growth: incremental rehashing
 */

/*
 * Move up to n non-empty buckets of ht[0] into ht[1], and finish the rehash
 * when ht[0] is empty. Visiting empty buckets is cheap but not free, so at
 * most 10 n of them are skipped per call. Every write calls this, so a
 * rehash started at a load factor of 1 finishes long before the new array
 * reaches that load factor in turn.
 */
static void kv_rehash_step(struct kv *kv, unsigned n)
{
    struct kv_table *t = kv->t;
    if (!kv_rehashing(t))
        return;

    unsigned empty_visits = 10 * n;
    uint64_t mask1 = t->size[1] - 1;
    while (n > 0 && t->rehash_idx < t->size[0]) {
        struct kv_entry *e = t->ht[0][t->rehash_idx];
        if (e == NULL) {
            t->rehash_idx++;
            if (--empty_visits == 0)
                break;
            continue;
        }
        while (e != NULL) {
            struct kv_entry *next = e->next;
            struct kv_entry **slot = &t->ht[1][e->hash & mask1];
            e->next = *slot;
            *slot = e;
            e = next;
        }
        t->ht[0][t->rehash_idx++] = NULL;
        n--;
    }

    if (t->rehash_idx == t->size[0]) {
        dvs_arena_free(kv->arena, t->ht[0]);
        t->ht[0] = t->ht[1];
        t->size[0] = t->size[1];
        t->ht[1] = NULL;
        t->size[1] = 0;
        t->rehash_idx = 0;
    }
}

/*
 * Start doubling the table once it holds more entries than buckets. When
 * the arena has no room for the bigger array the table simply stays as it
 * is: chains get longer and slower, but every operation still works, and
 * the next insert tries again.
 */
static void kv_maybe_grow(struct kv *kv)
{
    struct kv_table *t = kv->t;
    if (kv_rehashing(t) || t->count <= t->size[0] || t->size[0] > UINT64_MAX / 4)
        return;
    uint64_t n = t->size[0] * 2;
    if (n > SIZE_MAX / sizeof(struct kv_entry *))
        return;
    struct kv_entry **ht = dvs_arena_calloc(kv->arena, (size_t)n, sizeof(*ht));
    if (ht == NULL)
        return;
    t->ht[1] = ht;
    t->size[1] = n;
    t->rehash_idx = 0;
}

/* ===========================================================================
 * Opening
 */

/* The cheap checks of a restored table: the header, not the entries (an
 * O(entries) walk would add to the downtime of every migration; kv_check
 * does it for the tests). */
static int kv_validate_header(const dvs_arena *arena, const struct kv_table *t)
{
    if (!dvs_arena_contains(arena, t, sizeof(*t)) || t->magic != KV_TABLE_MAGIC ||
        t->version != KV_TABLE_VERSION || t->self_size != sizeof(*t))
        return DVS_EPROTO;
    for (int i = 0; i < 2; i++) {
        if (t->ht[i] == NULL) {
            if (i == 0 || t->size[i] != 0)
                return DVS_EPROTO;
            continue;
        }
        if (!kv_is_pow2(t->size[i]) || t->size[i] < KV_MIN_BUCKETS ||
            t->size[i] > dvs_arena_size(arena) / sizeof(struct kv_entry *) ||
            !dvs_arena_contains(arena, t->ht[i], t->size[i] * sizeof(struct kv_entry *)))
            return DVS_EPROTO;
    }
    if (t->ht[1] != NULL && (t->size[1] <= t->size[0] || t->rehash_idx > t->size[0]))
        return DVS_EPROTO;
    return 0;
}

static int kv_table_create(dvs_arena *arena, const uint64_t seed[2],
                           struct kv_table **ret_t)
{
    struct kv_table *t = dvs_arena_calloc(arena, 1, sizeof(*t));
    if (t == NULL)
        return DVS_ENOSPACE;
    t->ht[0] = dvs_arena_calloc(arena, KV_MIN_BUCKETS, sizeof(struct kv_entry *));
    if (t->ht[0] == NULL) {
        dvs_arena_free(arena, t);
        return DVS_ENOSPACE;
    }
    t->magic = KV_TABLE_MAGIC;
    t->version = KV_TABLE_VERSION;
    t->self_size = sizeof(*t);
    t->seed[0] = seed[0];
    t->seed[1] = seed[1];
    t->size[0] = KV_MIN_BUCKETS;
    int rv = dvs_arena_set_root(arena, t);
    assert(rv == 0); /* t is an allocated block of this arena */
    (void)rv;
    *ret_t = t;
    return 0;
}

int kv_open(dvs_arena *arena, const uint64_t seed[2], struct kv **ret_kv,
            bool *ret_created)
{
    struct kv *kv = calloc(1, sizeof(*kv));
    if (kv == NULL)
        return -ENOMEM;
    kv->arena = arena;

    bool created = false;
    struct kv_table *t = dvs_arena_root(arena);
    int rv;
    if (t == NULL) {
        rv = kv_table_create(arena, seed, &t);
        if (rv != 0)
            goto err_free;
        created = true;
    } else {
        rv = kv_validate_header(arena, t);
        if (rv != 0)
            goto err_free;
    }
    kv->t = t;
    *ret_kv = kv;
    if (ret_created != NULL)
        *ret_created = created;
    return 0;

err_free:
    free(kv);
    return rv;
}

void kv_close(struct kv *kv)
{
    free(kv);
}

/* ===========================================================================
 * Operations
 */

int kv_get(struct kv *kv, const void *key, size_t key_len, const uint8_t **ret_value,
           size_t *ret_len)
{
    if (!kv_key_ok(key_len))
        return -ENOENT;
    const struct kv_entry *e = kv_find(kv->t, key, key_len);
    if (e == NULL)
        return -ENOENT;
    *ret_value = e->value;
    *ret_len = e->value_len;
    return 0;
}

/* Replace e's value. On DVS_ENOSPACE the old value is intact: realloc
 * leaves its block untouched when it cannot make room. */
static int kv_set_value(struct kv *kv, struct kv_entry *e, const void *value,
                        size_t value_len)
{
    if (value_len == 0) {
        dvs_arena_free(kv->arena, e->value);
        e->value = NULL;
    } else {
        uint8_t *v = dvs_arena_realloc(kv->arena, e->value, value_len);
        if (v == NULL)
            return DVS_ENOSPACE;
        memcpy(v, value, value_len);
        e->value = v;
    }
    kv->t->value_bytes = kv->t->value_bytes - e->value_len + value_len;
    e->value_len = (uint32_t)value_len;
    return 0;
}

/* Insert a new entry; the caller made sure key is absent. */
static int kv_insert(struct kv *kv, uint64_t h, const void *key, size_t key_len,
                     const void *value, size_t value_len)
{
    struct kv_table *t = kv->t;
    struct kv_entry *e = dvs_arena_alloc(kv->arena, sizeof(*e) + key_len);
    if (e == NULL)
        return DVS_ENOSPACE;
    uint8_t *v = NULL;
    if (value_len > 0) {
        v = dvs_arena_alloc(kv->arena, value_len);
        if (v == NULL) {
            dvs_arena_free(kv->arena, e);
            return DVS_ENOSPACE;
        }
        memcpy(v, value, value_len);
    }
    e->hash = h;
    e->value = v;
    e->value_len = (uint32_t)value_len;
    e->key_len = (uint16_t)key_len;
    e->reserved = 0;
    memcpy(e->key, key, key_len);

    /* During a rehash new entries go straight to the new array. */
    int i = kv_rehashing(t) ? 1 : 0;
    struct kv_entry **slot = &t->ht[i][h & (t->size[i] - 1)];
    e->next = *slot;
    *slot = e;
    t->count++;
    t->key_bytes += key_len;
    t->value_bytes += value_len;
    kv_maybe_grow(kv);
    return 0;
}

int kv_put(struct kv *kv, const void *key, size_t key_len, const void *value,
           size_t value_len)
{
    if (!kv_key_ok(key_len) || value_len > KV_MAX_VALUE)
        return -EINVAL;
    kv_rehash_step(kv, KV_REHASH_STEP);
    uint64_t h = kv_hash(kv->t, key, key_len);
    struct kv_entry **link = kv_find_link(kv->t, h, key, key_len);
    if (link != NULL)
        return kv_set_value(kv, *link, value, value_len);
    return kv_insert(kv, h, key, key_len, value, value_len);
}

int kv_delete(struct kv *kv, const void *key, size_t key_len)
{
    if (!kv_key_ok(key_len))
        return -ENOENT;
    kv_rehash_step(kv, KV_REHASH_STEP);
    struct kv_table *t = kv->t;
    struct kv_entry **link = kv_find_link(t, kv_hash(t, key, key_len), key, key_len);
    if (link == NULL)
        return -ENOENT;
    struct kv_entry *e = *link;
    *link = e->next;
    t->count--;
    t->key_bytes -= e->key_len;
    t->value_bytes -= e->value_len;
    dvs_arena_free(kv->arena, e->value);
    dvs_arena_free(kv->arena, e);
    return 0;
}

/* Parse a counter: an optional '-' and 1..19 digits, nothing else (so "",
 * "+1", " 1" and "1x" are not numbers). -EINVAL or -ERANGE. */
static int kv_parse_counter(const uint8_t *s, size_t len, int64_t *ret)
{
    size_t i = 0;
    bool neg = false;
    if (len > 0 && s[0] == '-') {
        neg = true;
        i = 1;
    }
    if (i == len || len - i > 19)
        return -EINVAL;
    /* Accumulate as a negative number, whose range includes INT64_MIN. */
    int64_t v = 0;
    for (; i < len; i++) {
        if (s[i] < '0' || s[i] > '9')
            return -EINVAL;
        int d = s[i] - '0';
        if (v < (INT64_MIN + d) / 10)
            return -ERANGE;
        v = v * 10 - d;
    }
    if (!neg) {
        if (v == INT64_MIN)
            return -ERANGE;
        v = -v;
    }
    *ret = v;
    return 0;
}

int kv_incr(struct kv *kv, const void *key, size_t key_len, int64_t delta,
            int64_t *ret_value)
{
    if (!kv_key_ok(key_len))
        return -EINVAL;
    kv_rehash_step(kv, KV_REHASH_STEP);
    uint64_t h = kv_hash(kv->t, key, key_len);
    struct kv_entry **link = kv_find_link(kv->t, h, key, key_len);

    int64_t cur = 0;
    if (link != NULL) {
        int rv = kv_parse_counter((*link)->value, (*link)->value_len, &cur);
        if (rv != 0)
            return rv;
    }
    int64_t next;
    if (__builtin_add_overflow(cur, delta, &next))
        return -ERANGE;

    char text[24];
    int n = snprintf(text, sizeof(text), "%lld", (long long)next);
    assert(n > 0 && (size_t)n < sizeof(text));
    int rv = link ? kv_set_value(kv, *link, text, (size_t)n)
                  : kv_insert(kv, h, key, key_len, text, (size_t)n);
    if (rv != 0)
        return rv;
    *ret_value = next;
    return 0;
}

int kv_cas(struct kv *kv, const void *key, size_t key_len, const void *expected,
           size_t expected_len, const void *value, size_t value_len)
{
    if (!kv_key_ok(key_len) || value_len > KV_MAX_VALUE)
        return -EINVAL;
    kv_rehash_step(kv, KV_REHASH_STEP);
    struct kv_table *t = kv->t;
    struct kv_entry **link = kv_find_link(t, kv_hash(t, key, key_len), key, key_len);
    if (link == NULL)
        return -ENOENT;
    struct kv_entry *e = *link;
    if (e->value_len != expected_len ||
        (expected_len > 0 && memcmp(e->value, expected, expected_len) != 0))
        return DVS_ECONFLICT;
    return kv_set_value(kv, e, value, value_len);
}

void kv_count_request(struct kv *kv)
{
    kv->t->requests++;
}

void kv_stats(const struct kv *kv, struct kv_stats *ret_stats)
{
    const struct kv_table *t = kv->t;
    struct dvs_arena_stats as;
    dvs_arena_stats(kv->arena, &as);
    *ret_stats = (struct kv_stats){
        .keys = t->count,
        .key_bytes = t->key_bytes,
        .value_bytes = t->value_bytes,
        .buckets = t->size[0] + t->size[1],
        .rehashing = kv_rehashing(t),
        .requests = t->requests,
        .arena_size = as.size,
        .heap_size = as.heap_size,
        .arena_used = as.used,
        .arena_free = as.free,
        .largest_free = as.largest_free,
        .used_blocks = as.used_blocks,
        .free_blocks = as.free_blocks,
    };
}

/* ===========================================================================
 * Deep check
 */

int kv_check(const struct kv *kv)
{
    const struct kv_table *t = kv->t;
    if (kv_validate_header(kv->arena, t) != 0)
        return DVS_EPROTO;

    uint64_t count = 0, key_bytes = 0, value_bytes = 0;
    for (int i = 0; i < 2 && t->ht[i] != NULL; i++) {
        for (uint64_t b = 0; b < t->size[i]; b++) {
            const struct kv_entry *e = t->ht[i][b];
            /* ht[0]'s buckets below rehash_idx were moved and must be empty. */
            if (i == 0 && kv_rehashing(t) && b < t->rehash_idx && e != NULL)
                return DVS_EPROTO;
            for (; e != NULL; e = e->next) {
                /* A cycle would make count exceed the recorded one. */
                if (++count > t->count)
                    return DVS_EPROTO;
                if (!dvs_arena_contains(kv->arena, e, sizeof(*e)) ||
                    !kv_key_ok(e->key_len) ||
                    !dvs_arena_contains(kv->arena, e, sizeof(*e) + e->key_len) ||
                    e->value_len > KV_MAX_VALUE ||
                    (e->value_len == 0) != (e->value == NULL) ||
                    (e->value != NULL &&
                     !dvs_arena_contains(kv->arena, e->value, e->value_len)) ||
                    e->hash != kv_hash(t, e->key, e->key_len) ||
                    (e->hash & (t->size[i] - 1)) != b)
                    return DVS_EPROTO;
                key_bytes += e->key_len;
                value_bytes += e->value_len;
            }
        }
    }
    if (count != t->count || key_bytes != t->key_bytes || value_bytes != t->value_bytes)
        return DVS_EPROTO;
    return 0;
}
