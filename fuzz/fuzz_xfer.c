/*
 * The migration transfer stream's decoders (node/transfer.h): the hello and
 * the 32-byte record headers, as a destination agent reads them from a
 * socket anyone could connect to.
 *
 * The input is a hello followed by records. Each is decoded twice: as is
 * (mostly refused by the check sums, which is what a desynchronised or
 * hostile stream looks like), and with its fields re-encoded by the
 * encoder, so the check sums are right and the semantic checks get
 * exercised. Properties: decode accepts exactly what transfer.h specifies
 * (the expected verdict is computed here from the header's rules); what it
 * accepts re-encodes to the same bytes; an accepted page range lies inside
 * the arena; a refusal always names its reason.
 */
#include <string.h>

#include "dvs.h"
#include "fuzz/fuzz.h"
#include "node/transfer.h"

static uint64_t le(const uint8_t *p, int n)
{
    uint64_t v = 0;
    for (int i = n - 1; i >= 0; i--)
        v = v << 8 | p[i];
    return v;
}

static bool hello_valid(const struct node_xfer_hello *h)
{
    return h->migration_id >= 1 && h->migration_id <= INT64_MAX &&
           h->page_size == NODE_XFER_PAGE && h->flags == 0 &&
           h->arena_size >= NODE_XFER_MIN_ARENA && h->arena_size <= NODE_XFER_MAX_ARENA &&
           h->arena_size % NODE_XFER_PAGE == 0 && h->arena_addr != 0 &&
           h->arena_addr % NODE_XFER_PAGE == 0 && h->generation >= 1 &&
           h->generation <= INT64_MAX;
}

static bool rec_valid(uint16_t type, uint64_t a, uint64_t b, uint64_t arena)
{
    switch (type) {
    case NODE_XFER_PAGES:
    case NODE_XFER_RESERVE:
        return a % NODE_XFER_PAGE == 0 && b % NODE_XFER_PAGE == 0 && b > 0 &&
               (type != NODE_XFER_PAGES || b <= NODE_XFER_MAX_RUN) && a <= arena &&
               b <= arena - a;
    case NODE_XFER_FREEZE: /* a known method and stop reason */
        return a <= NODE_XFER_M_MAX && b <= NODE_XFER_S_MAX;
    case NODE_XFER_THROTTLE: /* at most 10 s per request, a known reason */
        return a <= 10000000 && b <= NODE_XFER_S_MAX;
    case NODE_XFER_ROUND:
    case NODE_XFER_END:
    case NODE_XFER_SYNC:
    case NODE_XFER_RESULT:
    case NODE_XFER_READY:
        return true;
    default:
        return false;
    }
}

static void check_rec(const uint8_t *in, uint64_t arena)
{
    struct node_xfer_rec r;
    const char *why = NULL;
    int rv = node_xfer_rec_decode(in, arena, &r, &why);
    FUZZ_CHECK(rv == 0 || (rv == DVS_EPROTO && why != NULL));
    if (rv == 0) {
        FUZZ_CHECK(rec_valid(r.type, r.a, r.b, arena));
        uint8_t again[NODE_XFER_REC_SIZE];
        node_xfer_rec_encode(r.type, r.a, r.b, r.c, again);
        FUZZ_CHECK(memcmp(again, in, NODE_XFER_REC_SIZE) == 0);
    }

    /* The same fields with a right check sum. */
    uint16_t type = (uint16_t)le(in, 2);
    uint64_t a = le(in + 8, 8), b = le(in + 16, 8), c = le(in + 24, 8);
    uint8_t enc[NODE_XFER_REC_SIZE];
    node_xfer_rec_encode(type, a, b, c, enc);
    why = NULL;
    rv = node_xfer_rec_decode(enc, arena, &r, &why);
    FUZZ_CHECK((rv == 0) == rec_valid(type, a, b, arena));
    if (rv == 0)
        FUZZ_CHECK(r.type == type && r.a == a && r.b == b && r.c == c);
    else
        FUZZ_CHECK(rv == DVS_EPROTO && why != NULL);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    uint8_t hello[NODE_XFER_HELLO_SIZE] = {0};
    memcpy(hello, data, size < sizeof(hello) ? size : sizeof(hello));
    uint64_t arena = 64u << 20;

    struct node_xfer_hello h;
    const char *why = NULL;
    int rv = node_xfer_hello_decode(hello, &h, &why);
    FUZZ_CHECK(rv == 0 || (rv == DVS_EPROTO && why != NULL));
    if (rv == 0) {
        FUZZ_CHECK(hello_valid(&h));
        uint8_t again[NODE_XFER_HELLO_SIZE];
        node_xfer_hello_encode(&h, again);
        FUZZ_CHECK(memcmp(again, hello, sizeof(hello)) == 0);
        arena = h.arena_size;
    }

    /* The same fields, encoded with a right check sum. */
    struct node_xfer_hello f = {
        .migration_id = le(hello + 8, 8),
        .token = le(hello + 16, 8),
        .arena_addr = le(hello + 24, 8),
        .arena_size = le(hello + 32, 8),
        .generation = le(hello + 40, 8),
        .page_size = (uint32_t)le(hello + 48, 4),
        .flags = (uint32_t)le(hello + 52, 4),
    };
    uint8_t enc[NODE_XFER_HELLO_SIZE];
    node_xfer_hello_encode(&f, enc);
    struct node_xfer_hello g;
    why = NULL;
    rv = node_xfer_hello_decode(enc, &g, &why);
    FUZZ_CHECK((rv == 0) == hello_valid(&f));
    if (rv == 0) {
        FUZZ_CHECK(memcmp(&g, &f, sizeof(g)) == 0);
        arena = g.arena_size;
    } else {
        FUZZ_CHECK(rv == DVS_EPROTO && why != NULL);
    }

    /* The records that follow, against the arena the hello announced. */
    for (size_t off = NODE_XFER_HELLO_SIZE, n = 0;
         off + NODE_XFER_REC_SIZE <= size && n < 64; off += NODE_XFER_REC_SIZE, n++)
        check_rec(data + off, arena);
    return 0;
}
