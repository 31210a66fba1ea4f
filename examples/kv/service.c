/*
 * The dvs-kv request handler (see service.h; the format is in proto.h).
 *
 * It runs on the server's only thread, one request at a time (dvs.h), so it
 * uses the table without locks, and everything it does delays every other
 * client and the agent's freeze: hence SPIN's bound.
 */
#include <assert.h>
#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <string.h>
#include <time.h>

#include "examples/kv/service.h"

static void kv_service_log(const struct kv_service *svc, int level, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

static void kv_service_log(const struct kv_service *svc, int level, const char *fmt, ...)
{
    if (svc->log == NULL)
        return;
    char msg[256];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof(msg), fmt, ap);
    va_end(ap);
    svc->log(svc->log_data, level, msg);
}

static uint64_t kv_cpu_ns(void)
{
    struct timespec ts;
    /* Thread CPU time, not wall time: SPIN stands for a fixed amount of
     * work, which takes longer on a contended node, as real work does. */
    if (clock_gettime(CLOCK_THREAD_CPUTIME_ID, &ts) != 0)
        clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000000000u + (uint64_t)ts.tv_nsec;
}

/* Burn ms milliseconds of CPU on this thread. The arithmetic goes through a
 * volatile so the compiler cannot drop the loop. */
static void kv_spin(uint32_t ms)
{
    uint64_t end = kv_cpu_ns() + (uint64_t)ms * 1000000u;
    volatile uint64_t x = 1;
    while (kv_cpu_ns() < end)
        for (int i = 0; i < 4096; i++)
            x = x * UINT64_C(6364136223846793005) + UINT64_C(1442695040888963407);
}

/* Reply with status and value (value may be NULL when len is 0). */
static int kv_reply(void *reply, size_t *reply_len, uint8_t status, const void *value,
                    size_t len)
{
    if (len > *reply_len - KV_REPLY_HDR)
        return DVS_ETOOBIG;
    kv_reply_header(reply, status, (uint32_t)len);
    if (len > 0)
        memcpy((uint8_t *)reply + KV_REPLY_HDR, value, len);
    *reply_len = KV_REPLY_HDR + len;
    return 0;
}

int kv_service_handle(void *data, const void *req, size_t req_len, void *reply,
                      size_t *reply_len)
{
    struct kv_service *svc = data;
    struct kv_request r;
    const char *why = NULL;
    int rv;

    /* The library's buffer is DVS_MAX_PAYLOAD, or max_payload if a server
     * was configured with a smaller one: too small even for a header is a
     * configuration error, answered as one rather than overrun. */
    if (*reply_len < KV_REPLY_HDR)
        return DVS_ETOOBIG;

    rv = kv_request_parse(req, req_len, &r, &why);
    if (rv != 0) {
        /* Debug only: a client sending garbage must not flood the log. */
        kv_service_log(svc, DVS_LOG_DEBUG, "rejected request: %s (len=%zu)", why,
                       req_len);
        return rv;
    }
    kv_count_request(svc->kv);

    switch ((enum kv_op)r.op) {
    case KV_OP_PUT:
        rv = kv_put(svc->kv, r.key, r.key_len, r.a, r.a_len);
        return rv != 0 ? rv : kv_reply(reply, reply_len, KV_OK, NULL, 0);

    case KV_OP_GET: {
        const uint8_t *v;
        size_t len;
        if (kv_get(svc->kv, r.key, r.key_len, &v, &len) != 0)
            return kv_reply(reply, reply_len, KV_NOTFOUND, NULL, 0);
        return kv_reply(reply, reply_len, KV_OK, v, len);
    }

    case KV_OP_DELETE:
        rv = kv_delete(svc->kv, r.key, r.key_len);
        return kv_reply(reply, reply_len, rv == 0 ? KV_OK : KV_NOTFOUND, NULL, 0);

    case KV_OP_INCR: {
        int64_t v;
        rv = kv_incr(svc->kv, r.key, r.key_len, r.delta, &v);
        if (rv == -EINVAL || rv == -ERANGE) {
            const uint8_t *cur = NULL;
            size_t len = 0;
            (void)kv_get(svc->kv, r.key, r.key_len, &cur, &len);
            return kv_reply(reply, reply_len, KV_NOTNUMBER, cur, len);
        }
        if (rv != 0)
            return rv;
        uint8_t out[8];
        kv_put_u64(out, (uint64_t)v);
        return kv_reply(reply, reply_len, KV_OK, out, sizeof(out));
    }

    case KV_OP_CAS:
        rv = kv_cas(svc->kv, r.key, r.key_len, r.a, r.a_len, r.b, r.b_len);
        if (rv == -ENOENT)
            return kv_reply(reply, reply_len, KV_NOTFOUND, NULL, 0);
        if (rv == DVS_ECONFLICT) {
            const uint8_t *cur = NULL;
            size_t len = 0;
            (void)kv_get(svc->kv, r.key, r.key_len, &cur, &len);
            return kv_reply(reply, reply_len, KV_MISMATCH, cur, len);
        }
        return rv != 0 ? rv : kv_reply(reply, reply_len, KV_OK, NULL, 0);

    case KV_OP_SPIN:
        kv_spin(r.ms);
        return kv_reply(reply, reply_len, KV_OK, NULL, 0);

    case KV_OP_STATS: {
        struct kv_stats st;
        uint8_t out[KV_STATS_COUNT * 8];
        kv_stats(svc->kv, &st);
        st.generation = svc->generation;
        kv_stats_encode(&st, out);
        return kv_reply(reply, reply_len, KV_OK, out, sizeof(out));
    }
    }
    /* kv_request_parse accepts only the ops above. */
    assert(!"unreachable");
    return DVS_EINTERNAL;
}
