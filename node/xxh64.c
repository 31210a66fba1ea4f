/* XXH64 (see xxh64.h), written from the published specification. */
#include <string.h>

#include "node/xxh64.h"

#define P1 11400714785074694791ull
#define P2 14029467366897019727ull
#define P3 1609587929392839161ull
#define P4 9650029242287828579ull
#define P5 2870177450012600261ull

static inline uint64_t rotl(uint64_t x, int r)
{
    return (x << r) | (x >> (64 - r));
}

/* Unaligned little-endian loads; memcpy compiles to one mov on x86-64. */
static inline uint64_t load64(const uint8_t *p)
{
    uint64_t v;
    memcpy(&v, p, 8);
#if __BYTE_ORDER__ == __ORDER_BIG_ENDIAN__
    v = __builtin_bswap64(v);
#endif
    return v;
}

static inline uint32_t load32(const uint8_t *p)
{
    uint32_t v;
    memcpy(&v, p, 4);
#if __BYTE_ORDER__ == __ORDER_BIG_ENDIAN__
    v = __builtin_bswap32(v);
#endif
    return v;
}

static inline uint64_t round1(uint64_t acc, uint64_t input)
{
    acc += input * P2;
    acc = rotl(acc, 31);
    return acc * P1;
}

static inline uint64_t merge(uint64_t acc, uint64_t val)
{
    acc ^= round1(0, val);
    return acc * P1 + P4;
}

void node_xxh64_init(struct node_xxh64 *st, uint64_t seed)
{
    memset(st, 0, sizeof(*st));
    st->seed = seed;
    st->v[0] = seed + P1 + P2;
    st->v[1] = seed + P2;
    st->v[2] = seed;
    st->v[3] = seed - P1;
}

/* Consume whole 32-byte stripes of p[0..len); returns the bytes consumed. */
static size_t stripes(struct node_xxh64 *st, const uint8_t *p, size_t len)
{
    uint64_t v0 = st->v[0], v1 = st->v[1], v2 = st->v[2], v3 = st->v[3];
    size_t done = 0;
    while (len - done >= 32) {
        v0 = round1(v0, load64(p + done));
        v1 = round1(v1, load64(p + done + 8));
        v2 = round1(v2, load64(p + done + 16));
        v3 = round1(v3, load64(p + done + 24));
        done += 32;
    }
    st->v[0] = v0;
    st->v[1] = v1;
    st->v[2] = v2;
    st->v[3] = v3;
    return done;
}

void node_xxh64_update(struct node_xxh64 *st, const void *data, size_t len)
{
    const uint8_t *p = data;
    st->total_len += len;
    if (st->mem_size + len < 32) {
        memcpy(st->mem + st->mem_size, p, len);
        st->mem_size += (uint32_t)len;
        return;
    }
    if (st->mem_size > 0) {
        size_t fill = 32 - st->mem_size;
        memcpy(st->mem + st->mem_size, p, fill);
        stripes(st, st->mem, 32);
        p += fill;
        len -= fill;
        st->mem_size = 0;
    }
    size_t done = stripes(st, p, len);
    memcpy(st->mem, p + done, len - done);
    st->mem_size = (uint32_t)(len - done);
}

uint64_t node_xxh64_digest(const struct node_xxh64 *st)
{
    uint64_t h;
    if (st->total_len >= 32) {
        h = rotl(st->v[0], 1) + rotl(st->v[1], 7) + rotl(st->v[2], 12) + rotl(st->v[3], 18);
        for (int i = 0; i < 4; i++)
            h = merge(h, st->v[i]);
    } else {
        h = st->seed + P5;
    }
    h += st->total_len;

    const uint8_t *p = st->mem;
    size_t left = st->mem_size;
    while (left >= 8) {
        h ^= round1(0, load64(p));
        h = rotl(h, 27) * P1 + P4;
        p += 8;
        left -= 8;
    }
    if (left >= 4) {
        h ^= (uint64_t)load32(p) * P1;
        h = rotl(h, 23) * P2 + P3;
        p += 4;
        left -= 4;
    }
    while (left > 0) {
        h ^= (*p) * P5;
        h = rotl(h, 11) * P1;
        p++;
        left--;
    }
    h ^= h >> 33;
    h *= P2;
    h ^= h >> 29;
    h *= P3;
    h ^= h >> 32;
    return h;
}

uint64_t node_xxh64(const void *data, size_t len, uint64_t seed)
{
    struct node_xxh64 st;
    node_xxh64_init(&st, seed);
    node_xxh64_update(&st, data, len);
    return node_xxh64_digest(&st);
}
