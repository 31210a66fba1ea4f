/*
 * libdvs's frame decoder (libdvs/frame.h), fed arbitrary bytes as a stream.
 *
 * Properties, from frame.h's contract:
 *   - the result is 0, -EAGAIN, DVS_EPROTO or DVS_ETOOBIG, and -EAGAIN asks
 *     for more bytes than there are;
 *   - a decoded frame passes dvs__frame_check, its name and payload lie
 *     inside the input, and encoding it again gives back the same bytes;
 *   - garbage is detected as soon as it arrives: every strict prefix of a
 *     valid frame is -EAGAIN, asking for no more than the whole frame;
 *   - the error and moved payload decoders accept or refuse, nothing else.
 * A second frame after the first is decoded too (streams carry several).
 */
#include <errno.h>
#include <string.h>

#include "fuzz/fuzz.h"
#include "libdvs/frame.h"

static void payload_decoders(const void *p, size_t len)
{
    int code = 0;
    int rv = dvs__error_payload_decode(p, len, &code);
    FUZZ_CHECK(rv == 0 || rv == DVS_EPROTO);
    if (rv == 0)
        FUZZ_CHECK(code < 0);
    char addr[DVS__FRAME_MAX_TEXT + 1];
    rv = dvs__moved_payload_decode(p, len, addr, sizeof(addr));
    FUZZ_CHECK(rv == 0 || rv == DVS_EPROTO);
    if (rv == 0)
        FUZZ_CHECK(strlen(addr) == len && len > 0);
}

/* Decode one frame at data; returns its size, or 0 if none. */
static size_t one_frame(const uint8_t *data, size_t size, uint32_t max_payload)
{
    struct dvs__frame f;
    size_t need = 0;
    int rv = dvs__frame_decode(data, size, max_payload, &f, &need);
    FUZZ_CHECK(rv == 0 || rv == -EAGAIN || rv == DVS_EPROTO || rv == DVS_ETOOBIG);
    if (rv == -EAGAIN)
        FUZZ_CHECK(need > size && need <= DVS__FRAME_MAX_SIZE);
    if (rv != 0)
        return 0;

    FUZZ_CHECK(need >= DVS__FRAME_HEADER_SIZE && need <= size);
    FUZZ_CHECK(need == dvs__frame_size(&f));
    FUZZ_CHECK(dvs__frame_check(&f, max_payload) == 0);
    FUZZ_CHECK(f.payload_len <= max_payload);
    FUZZ_CHECK(f.name_len == 0 || ((const uint8_t *)f.name >= data &&
                                   (const uint8_t *)f.name + f.name_len <= data + need));
    FUZZ_CHECK(f.payload_len == 0 || ((const uint8_t *)f.payload >= data &&
                                      (const uint8_t *)f.payload + f.payload_len <= data + need));
    if (f.name_len > 0)
        FUZZ_CHECK(dvs__name_valid(f.name, f.name_len));

    uint8_t *again = malloc(need);
    FUZZ_CHECK(again != NULL);
    size_t len = 0;
    FUZZ_CHECK(dvs__frame_encode(&f, again, need, &len) == 0);
    FUZZ_CHECK(len == need && memcmp(again, data, need) == 0);
    free(again);

    /* Prefixes: a frame that decodes never looked like garbage on the way. */
    size_t step = need > 4096 ? need / 512 : 1;
    for (size_t p = 0; p < need; p += step) {
        struct dvs__frame g;
        size_t more = 0;
        FUZZ_CHECK(dvs__frame_decode(data, p, max_payload, &g, &more) == -EAGAIN);
        FUZZ_CHECK(more > p && more <= need);
    }

    if (f.status == DVS__STATUS_ERROR || f.status == DVS__STATUS_MOVED)
        payload_decoders(f.payload, f.payload_len);
    return need;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    payload_decoders(data, size);
    size_t n = one_frame(data, size, DVS_MAX_PAYLOAD);
    if (n > 0 && n < size)
        one_frame(data + n, size - n, DVS_MAX_PAYLOAD);
    /* A receiver with a lower bound refuses big payloads cleanly. */
    one_frame(data, size, 64);
    return 0;
}
