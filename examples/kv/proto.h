/*
 * The dvs-kv wire format: one request and one reply per dvs_call.
 *
 * libdvs already frames each payload and gives it a length, so this format
 * only has to say what is inside. It is binary, so that keys and values may
 * hold any byte, and it is checked completely before anything is touched:
 * requests come from the network (STYLE.md 12).
 *
 * Every integer is little-endian. A request is a 12-byte header followed by
 * three byte strings, back to back, with nothing after them:
 *
 *   offset size  field
 *   0      1     version   KV_PROTO_VERSION (1)
 *   1      1     op        enum kv_op
 *   2      2     key_len   K
 *   4      4     a_len     A   first argument
 *   8      4     b_len     B   second argument
 *   12     K     key
 *   12+K   A     a
 *   12+K+A B     b         the payload is exactly 12+K+A+B bytes
 *
 * What each operation takes (anything else is rejected):
 *
 *   op          key          a                          b
 *   PUT    1    1..MAX_KEY   the value, 0..MAX_VALUE    -
 *   GET    2    1..MAX_KEY   -                          -
 *   DELETE 3    1..MAX_KEY   -                          -
 *   INCR   4    1..MAX_KEY   8 bytes: int64 delta       -
 *   CAS    5    1..MAX_KEY   expected value             new value
 *   SPIN   6    -            4 bytes: u32 milliseconds  -
 *                            (0..KV_MAX_SPIN_MS)
 *   STATS  7    -            -                          -
 *
 * A reply is an 8-byte header and a value:
 *
 *   0      1     version   KV_PROTO_VERSION
 *   1      1     status    enum kv_status
 *   2      2     reserved  0
 *   4      4     value_len V
 *   8      V     value     the payload is exactly 8+V bytes
 *
 *   op      status      value
 *   PUT     OK          -
 *   GET     OK          the value
 *           NOTFOUND    -
 *   DELETE  OK          -
 *           NOTFOUND    -
 *   INCR    OK          8 bytes: int64, the new value
 *           NOTNUMBER   the current value (not a decimal int64, or the sum
 *                       would overflow)
 *   CAS     OK          -          (the value was the expected one; swapped)
 *           NOTFOUND    -
 *           MISMATCH    the current value
 *   SPIN    OK          -
 *   STATS   OK          KV_STATS_COUNT u64s, in the order of kv_stats_fields
 *
 * A counter is stored as its decimal text, so GET shows "42" and PUT "42"
 * makes a counter; INCR on a missing key starts from 0.
 *
 * Failures that are not answers about the data travel as libdvs error codes
 * (the handler's return value, which dvs_call hands back unchanged):
 * DVS_EBADREQUEST for a request this file rejects, DVS_ENOSPACE when the
 * arena is full. Neither changes anything.
 */
#ifndef DVS_EXAMPLES_KV_PROTO_H
#define DVS_EXAMPLES_KV_PROTO_H

#include <stddef.h>
#include <stdint.h>

#include "dvs.h"

#define KV_PROTO_VERSION 1
#define KV_REQ_HDR 12
#define KV_REPLY_HDR 8

/* Keys are short names; 1 KiB leaves room for composite keys without
 * letting one request make the hash table hash megabytes. */
#define KV_MAX_KEY 1024u
/* A PUT with the longest key still fits in one payload. */
#define KV_MAX_VALUE (DVS_MAX_PAYLOAD - KV_REQ_HDR - KV_MAX_KEY)
/* SPIN holds the server's only thread (and so every other client and the
 * agent's freeze command) for this long at most. */
#define KV_MAX_SPIN_MS 10000u

enum kv_op {
    KV_OP_PUT = 1,
    KV_OP_GET = 2,
    KV_OP_DELETE = 3,
    KV_OP_INCR = 4,
    KV_OP_CAS = 5,
    KV_OP_SPIN = 6,
    KV_OP_STATS = 7,
};

enum kv_status {
    KV_OK = 0,
    KV_NOTFOUND = 1,
    KV_MISMATCH = 2,
    KV_NOTNUMBER = 3,
};

/* "put", "get", ... or NULL for an unknown op. */
const char *kv_op_name(unsigned op);

/* "OK", "NOTFOUND", ... or "UNKNOWN". */
const char *kv_status_name(unsigned status);

/*
 * A request, decoded or to be encoded. The pointers are borrowed: into the
 * payload after kv_request_parse, the caller's buffers for the encoder.
 * delta and ms are the decoded arguments of INCR and SPIN (a then points at
 * their raw bytes).
 */
struct kv_request {
    uint8_t op;
    const uint8_t *key;
    size_t key_len;
    const uint8_t *a;
    size_t a_len;
    const uint8_t *b;
    size_t b_len;
    int64_t delta;
    uint32_t ms;
};

/*
 * Decode and check a request payload. Returns 0 and fills *ret_req (whose
 * pointers point into buf), or DVS_EBADREQUEST with *ret_why set to a static
 * phrase naming what is wrong ("key length 0", "trailing bytes"), for the
 * server's debug log. *ret_req is untouched on failure.
 */
int kv_request_parse(const void *buf, size_t len, struct kv_request *ret_req,
                     const char **ret_why);

/*
 * The encoded size of req, or 0 if req breaks the rules above (then
 * kv_request_encode would fail with -EINVAL). For INCR and SPIN the encoder
 * takes delta and ms, not a/a_len.
 */
size_t kv_request_size(const struct kv_request *req);

/*
 * Encode req into buf[0..cap). Returns 0 and *ret_len, -EINVAL (req breaks
 * the rules) or -ENOBUFS (cap too small).
 */
int kv_request_encode(const struct kv_request *req, void *buf, size_t cap,
                      size_t *ret_len);

/* A decoded reply; value points into the payload. */
struct kv_reply {
    uint8_t status;
    const uint8_t *value;
    size_t value_len;
};

/*
 * Decode a reply. Returns 0, or DVS_EPROTO when the payload is not a
 * well-formed reply (short, bad version, lengths that do not add up).
 */
int kv_reply_parse(const void *buf, size_t len, struct kv_reply *ret_reply);

/*
 * Write a reply header for a value of value_len bytes into buf (at least
 * KV_REPLY_HDR bytes); the caller puts the value at buf + KV_REPLY_HDR.
 */
void kv_reply_header(void *buf, uint8_t status, uint32_t value_len);

/* ---------------------------------------------------------------------------
 * STATS
 *
 * One table names the fields, so the server fills them, the client prints
 * them as JSON and the README lists them from one place. New fields go at
 * the end; a client ignores fields it does not know and leaves missing ones 0.
 */
struct kv_stats {
    uint64_t keys;         /* entries in the table */
    uint64_t key_bytes;    /* sum of key lengths */
    uint64_t value_bytes;  /* sum of value lengths */
    uint64_t buckets;      /* hash table buckets (both tables while rehashing) */
    uint64_t rehashing;    /* 1 while an incremental rehash is under way */
    uint64_t requests;     /* requests executed by this table, across moves */
    uint64_t generation;   /* the serving instance's generation */
    uint64_t arena_size;   /* struct dvs_arena_stats, verbatim */
    uint64_t heap_size;
    uint64_t arena_used;
    uint64_t arena_free;
    uint64_t largest_free;
    uint64_t used_blocks;
    uint64_t free_blocks;
};

struct kv_stats_field {
    const char *name;
    size_t offset;
};

/* The fields in wire order, ending with {NULL, 0}. */
extern const struct kv_stats_field kv_stats_fields[];
#define KV_STATS_COUNT 14u

/* Encode into buf (KV_STATS_COUNT * 8 bytes). */
void kv_stats_encode(const struct kv_stats *st, void *buf);

/* Decode a STATS value. 0, or DVS_EPROTO if len is not a multiple of 8. */
int kv_stats_decode(const void *buf, size_t len, struct kv_stats *ret_stats);

/* Little-endian helpers, shared with the history and the tests. */
static inline void kv_put_u16(uint8_t *p, uint16_t v)
{
    p[0] = (uint8_t)v;
    p[1] = (uint8_t)(v >> 8);
}

static inline void kv_put_u32(uint8_t *p, uint32_t v)
{
    for (int i = 0; i < 4; i++)
        p[i] = (uint8_t)(v >> (8 * i));
}

static inline void kv_put_u64(uint8_t *p, uint64_t v)
{
    for (int i = 0; i < 8; i++)
        p[i] = (uint8_t)(v >> (8 * i));
}

static inline uint16_t kv_get_u16(const uint8_t *p)
{
    return (uint16_t)(p[0] | (p[1] << 8));
}

static inline uint32_t kv_get_u32(const uint8_t *p)
{
    uint32_t v = 0;
    for (int i = 3; i >= 0; i--)
        v = (v << 8) | p[i];
    return v;
}

static inline uint64_t kv_get_u64(const uint8_t *p)
{
    uint64_t v = 0;
    for (int i = 7; i >= 0; i--)
        v = (v << 8) | p[i];
    return v;
}

#endif
