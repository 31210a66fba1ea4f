/*
 * The dvs-kv wire format (the layout and the rules are in proto.h).
 *
 * The parser and the encoder share one table of per-operation rules, so the
 * client can never build a request the server would refuse, and a new
 * operation is one row.
 */
#include <errno.h>
#include <stdbool.h>
#include <string.h>

#include "examples/kv/proto.h"

/* ---------------------------------------------------------------------------
 * The rules
 */

/* How an operation uses the key and the two arguments. */
struct kv_op_rule {
    const char *name;
    bool key;         /* takes a key of 1..KV_MAX_KEY bytes (else none) */
    int a_fixed;      /* -1: a is a value of 0..KV_MAX_VALUE bytes;
                         0: no a; n > 0: exactly n bytes */
    bool b;           /* takes b, a value of 0..KV_MAX_VALUE bytes */
};

static const struct kv_op_rule kv_rules[] = {
    [KV_OP_PUT] = {"put", true, -1, false},
    [KV_OP_GET] = {"get", true, 0, false},
    [KV_OP_DELETE] = {"delete", true, 0, false},
    [KV_OP_INCR] = {"incr", true, 8, false},
    [KV_OP_CAS] = {"cas", true, -1, true},
    [KV_OP_SPIN] = {"spin", false, 4, false},
    [KV_OP_STATS] = {"stats", false, 0, false},
};

#define KV_NRULES (sizeof(kv_rules) / sizeof(kv_rules[0]))

static const struct kv_op_rule *kv_rule(unsigned op)
{
    if (op >= KV_NRULES || kv_rules[op].name == NULL)
        return NULL;
    return &kv_rules[op];
}

const char *kv_op_name(unsigned op)
{
    const struct kv_op_rule *r = kv_rule(op);
    return r ? r->name : NULL;
}

const char *kv_status_name(unsigned status)
{
    switch (status) {
    case KV_OK:
        return "OK";
    case KV_NOTFOUND:
        return "NOTFOUND";
    case KV_MISMATCH:
        return "MISMATCH";
    case KV_NOTNUMBER:
        return "NOTNUMBER";
    }
    return "UNKNOWN";
}

/*
 * Check the three lengths against op's rule. Returns NULL if they conform,
 * else a phrase saying what is wrong. The lengths are size_t here, so an
 * encoder's oversized argument is caught before it is truncated into the
 * header's narrower fields.
 */
static const char *kv_check_shape(unsigned op, size_t key_len, size_t a_len, size_t b_len)
{
    const struct kv_op_rule *r = kv_rule(op);
    if (r == NULL)
        return "unknown op";
    if (r->key) {
        if (key_len == 0)
            return "empty key";
        if (key_len > KV_MAX_KEY)
            return "key longer than KV_MAX_KEY";
    } else if (key_len != 0) {
        return "op takes no key";
    }
    if (r->a_fixed < 0) {
        if (a_len > KV_MAX_VALUE)
            return "value longer than KV_MAX_VALUE";
    } else if (a_len != (size_t)r->a_fixed) {
        return r->a_fixed == 0 ? "op takes no argument" : "argument has the wrong size";
    }
    if (r->b) {
        if (b_len > KV_MAX_VALUE)
            return "second value longer than KV_MAX_VALUE";
    } else if (b_len != 0) {
        return "op takes no second argument";
    }
    return NULL;
}

/* ---------------------------------------------------------------------------
 * Requests
 */

int kv_request_parse(const void *buf, size_t len, struct kv_request *ret_req,
                     const char **ret_why)
{
    const uint8_t *p = buf;
    const char *why;

    if (len < KV_REQ_HDR) {
        why = "shorter than the header";
        goto bad;
    }
    if (p[0] != KV_PROTO_VERSION) {
        why = "unknown protocol version";
        goto bad;
    }
    unsigned op = p[1];
    size_t key_len = kv_get_u16(p + 2);
    size_t a_len = kv_get_u32(p + 4);
    size_t b_len = kv_get_u32(p + 8);

    why = kv_check_shape(op, key_len, a_len, b_len);
    if (why != NULL)
        goto bad;
    /* Each length is bounded by now (KV_MAX_KEY, KV_MAX_VALUE), so the sum
     * cannot overflow; compare it with what actually arrived. */
    size_t want = KV_REQ_HDR + key_len + a_len + b_len;
    if (len < want) {
        why = "truncated: lengths exceed the payload";
        goto bad;
    }
    if (len > want) {
        why = "trailing bytes after the arguments";
        goto bad;
    }

    struct kv_request r = {
        .op = (uint8_t)op,
        .key = key_len ? p + KV_REQ_HDR : NULL,
        .key_len = key_len,
        .a = a_len ? p + KV_REQ_HDR + key_len : NULL,
        .a_len = a_len,
        .b = b_len ? p + KV_REQ_HDR + key_len + a_len : NULL,
        .b_len = b_len,
    };
    if (op == KV_OP_INCR)
        r.delta = (int64_t)kv_get_u64(r.a);
    if (op == KV_OP_SPIN) {
        r.ms = kv_get_u32(r.a);
        if (r.ms > KV_MAX_SPIN_MS) {
            why = "spin longer than KV_MAX_SPIN_MS";
            goto bad;
        }
    }
    *ret_req = r;
    return 0;

bad:
    if (ret_why != NULL)
        *ret_why = why;
    return DVS_EBADREQUEST;
}

/* The argument lengths the encoder will write: INCR and SPIN encode their
 * decoded fields, not a/a_len. */
static size_t kv_encoded_a_len(const struct kv_request *req)
{
    if (req->op == KV_OP_INCR)
        return 8;
    if (req->op == KV_OP_SPIN)
        return 4;
    return req->a_len;
}

size_t kv_request_size(const struct kv_request *req)
{
    size_t a_len = kv_encoded_a_len(req);
    if (kv_check_shape(req->op, req->key_len, a_len, req->b_len) != NULL)
        return 0;
    if (req->op == KV_OP_SPIN && req->ms > KV_MAX_SPIN_MS)
        return 0;
    return KV_REQ_HDR + req->key_len + a_len + req->b_len;
}

int kv_request_encode(const struct kv_request *req, void *buf, size_t cap,
                      size_t *ret_len)
{
    size_t n = kv_request_size(req);
    if (n == 0)
        return -EINVAL;
    if (n > cap)
        return -ENOBUFS;

    uint8_t *p = buf;
    size_t a_len = kv_encoded_a_len(req);
    p[0] = KV_PROTO_VERSION;
    p[1] = req->op;
    kv_put_u16(p + 2, (uint16_t)req->key_len);
    kv_put_u32(p + 4, (uint32_t)a_len);
    kv_put_u32(p + 8, (uint32_t)req->b_len);
    uint8_t *q = p + KV_REQ_HDR;
    if (req->key_len)
        memcpy(q, req->key, req->key_len);
    q += req->key_len;
    if (req->op == KV_OP_INCR)
        kv_put_u64(q, (uint64_t)req->delta);
    else if (req->op == KV_OP_SPIN)
        kv_put_u32(q, req->ms);
    else if (a_len)
        memcpy(q, req->a, a_len);
    q += a_len;
    if (req->b_len)
        memcpy(q, req->b, req->b_len);
    *ret_len = n;
    return 0;
}

/* ---------------------------------------------------------------------------
 * Replies
 */

int kv_reply_parse(const void *buf, size_t len, struct kv_reply *ret_reply)
{
    const uint8_t *p = buf;
    if (buf == NULL || len < KV_REPLY_HDR || p[0] != KV_PROTO_VERSION)
        return DVS_EPROTO;
    size_t value_len = kv_get_u32(p + 4);
    if (value_len != len - KV_REPLY_HDR)
        return DVS_EPROTO;
    ret_reply->status = p[1];
    ret_reply->value = value_len ? p + KV_REPLY_HDR : NULL;
    ret_reply->value_len = value_len;
    return 0;
}

void kv_reply_header(void *buf, uint8_t status, uint32_t value_len)
{
    uint8_t *p = buf;
    p[0] = KV_PROTO_VERSION;
    p[1] = status;
    kv_put_u16(p + 2, 0);
    kv_put_u32(p + 4, value_len);
}

/* ---------------------------------------------------------------------------
 * STATS
 */

#define KV_STAT(f) {#f, offsetof(struct kv_stats, f)}

const struct kv_stats_field kv_stats_fields[] = {
    KV_STAT(keys),         KV_STAT(key_bytes),   KV_STAT(value_bytes),
    KV_STAT(buckets),      KV_STAT(rehashing),   KV_STAT(requests),
    KV_STAT(generation),   KV_STAT(arena_size),  KV_STAT(heap_size),
    KV_STAT(arena_used),   KV_STAT(arena_free),  KV_STAT(largest_free),
    KV_STAT(used_blocks),  KV_STAT(free_blocks), {NULL, 0},
};

_Static_assert(sizeof(struct kv_stats) == KV_STATS_COUNT * sizeof(uint64_t),
               "every kv_stats field is a u64 listed in kv_stats_fields");

void kv_stats_encode(const struct kv_stats *st, void *buf)
{
    uint8_t *p = buf;
    for (const struct kv_stats_field *f = kv_stats_fields; f->name; f++, p += 8) {
        uint64_t v;
        memcpy(&v, (const char *)st + f->offset, sizeof(v));
        kv_put_u64(p, v);
    }
}

int kv_stats_decode(const void *buf, size_t len, struct kv_stats *ret_stats)
{
    if (len % 8 != 0)
        return DVS_EPROTO;
    struct kv_stats st;
    memset(&st, 0, sizeof(st));
    const uint8_t *p = buf;
    size_t n = len / 8;
    size_t i = 0;
    for (const struct kv_stats_field *f = kv_stats_fields; f->name && i < n;
         f++, i++, p += 8) {
        uint64_t v = kv_get_u64(p);
        memcpy((char *)&st + f->offset, &v, sizeof(v));
    }
    *ret_stats = st;
    return 0;
}
