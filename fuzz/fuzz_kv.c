/*
 * dvs-kv's request and reply decoders (examples/kv/proto.h): the service
 * parses whatever a client sends it.
 *
 * Properties: a request is accepted or refused with a reason; an accepted
 * request has in-bounds lengths and pointers inside the input, and encodes
 * back to exactly the input (the format has one encoding per request); a
 * reply or a stats value is accepted or refused, and an accepted reply's
 * value lies inside the input.
 */
#include <string.h>

#include "dvs.h"
#include "examples/kv/proto.h"
#include "fuzz/fuzz.h"

static bool inside(const void *p, size_t n, const uint8_t *data, size_t size)
{
    return n == 0 || ((const uint8_t *)p >= data && (const uint8_t *)p + n <= data + size);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    struct kv_request req;
    const char *why = NULL;
    int rv = kv_request_parse(data, size, &req, &why);
    FUZZ_CHECK(rv == 0 || (rv == DVS_EBADREQUEST && why != NULL));
    if (rv == 0) {
        FUZZ_CHECK(inside(req.key, req.key_len, data, size));
        FUZZ_CHECK(inside(req.a, req.a_len, data, size));
        FUZZ_CHECK(inside(req.b, req.b_len, data, size));
        size_t n = kv_request_size(&req);
        FUZZ_CHECK(n == size);
        uint8_t *again = malloc(n ? n : 1);
        FUZZ_CHECK(again != NULL);
        size_t len = 0;
        FUZZ_CHECK(kv_request_encode(&req, again, n, &len) == 0);
        FUZZ_CHECK(len == size && memcmp(again, data, size) == 0);
        free(again);
    }

    struct kv_reply rep;
    rv = kv_reply_parse(data, size, &rep);
    FUZZ_CHECK(rv == 0 || rv == DVS_EPROTO);
    if (rv == 0)
        FUZZ_CHECK(inside(rep.value, rep.value_len, data, size));

    struct kv_stats st;
    rv = kv_stats_decode(data, size, &st);
    FUZZ_CHECK(rv == 0 || rv == DVS_EPROTO);
    return 0;
}
