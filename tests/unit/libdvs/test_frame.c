/*
 * Frame codec: round trips, every truncation, oversized and garbage input.
 *
 * Every decode in this file reads from a heap buffer of exactly the length
 * given to the decoder, so under ASan any read past the end is caught.
 */
#include <errno.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "frame.h"

/* A private xorshift PRNG: fixed seed, same sequence on every machine. */
static uint64_t rng_state;

static uint64_t rng(void)
{
    uint64_t x = rng_state;
    x ^= x << 13;
    x ^= x >> 7;
    x ^= x << 17;
    return rng_state = x;
}

static struct dvs__frame sample_request(const void *payload, uint32_t len)
{
    struct dvs__frame f = {
        .type = DVS__FRAME_REQUEST,
        .name_len = 2,
        .name = "kv",
        .payload_len = len,
        .payload = payload,
        .generation = 0x0102030405060708ull,
        .seq = 42,
        .ack = 41,
    };
    for (int i = 0; i < DVS__CLIENT_ID_SIZE; i++)
        f.client_id[i] = (uint8_t)(0xa0 + i);
    return f;
}

/* Decode from an exactly-sized heap copy, so ASan sees any overread. */
static int decode_exact(const void *buf, size_t len, uint32_t max,
                        struct dvs__frame *f, size_t *size)
{
    void *copy = malloc(len > 0 ? len : 1);
    assert_non_null(copy);
    memcpy(copy, buf, len);
    int rv = dvs__frame_decode(copy, len, max, f, size);
    /* Borrowed pointers into copy must not outlive it: point them into buf. */
    if (rv == 0) {
        if (f->name != NULL)
            f->name = (const char *)buf + ((const char *)f->name - (char *)copy);
        if (f->payload != NULL)
            f->payload = (const uint8_t *)buf + ((const uint8_t *)f->payload - (uint8_t *)copy);
    }
    free(copy);
    return rv;
}

static void request_round_trips(void **state)
{
    const char payload[] = "set x 1";
    struct dvs__frame in = sample_request(payload, sizeof payload);
    uint8_t buf[256];
    size_t len, size;
    struct dvs__frame out;

    assert_int_equal(dvs__frame_encode(&in, buf, sizeof buf, &len), 0);
    assert_int_equal(len, DVS__FRAME_HEADER_SIZE + 2 + sizeof payload);
    assert_int_equal(len, dvs__frame_size(&in));
    assert_int_equal(decode_exact(buf, len, DVS_MAX_PAYLOAD, &out, &size), 0);
    assert_int_equal(size, len);
    assert_int_equal(out.type, DVS__FRAME_REQUEST);
    assert_int_equal(out.status, 0);
    assert_int_equal(out.generation, in.generation);
    assert_memory_equal(out.client_id, in.client_id, DVS__CLIENT_ID_SIZE);
    assert_int_equal(out.seq, 42);
    assert_int_equal(out.ack, 41);
    assert_int_equal(out.name_len, 2);
    assert_memory_equal(out.name, "kv", 2);
    assert_int_equal(out.payload_len, sizeof payload);
    assert_memory_equal(out.payload, payload, sizeof payload);
}

static void reply_round_trips_with_every_status(void **state)
{
    static const uint8_t statuses[] = {DVS__STATUS_OK, DVS__STATUS_ERROR,
                                       DVS__STATUS_MIGRATING, DVS__STATUS_MOVED};
    for (size_t i = 0; i < sizeof statuses; i++) {
        struct dvs__frame in = {
            .type = DVS__FRAME_REPLY,
            .status = statuses[i],
            .flags = DVS__FRAME_F_REPLAYED,
            .generation = 7,
            .seq = 9,
        };
        uint8_t buf[DVS__FRAME_HEADER_SIZE];
        size_t len, size;
        struct dvs__frame out;
        assert_int_equal(dvs__frame_encode(&in, buf, sizeof buf, &len), 0);
        assert_int_equal(decode_exact(buf, len, DVS_MAX_PAYLOAD, &out, &size), 0);
        assert_int_equal(out.status, statuses[i]);
        assert_int_equal(out.flags, DVS__FRAME_F_REPLAYED);
        assert_int_equal(out.name_len, 0);
        assert_null(out.name);
        assert_null(out.payload);
    }
}

static void decoder_reports_every_truncation_as_incomplete(void **state)
{
    uint8_t payload[100];
    for (size_t i = 0; i < sizeof payload; i++)
        payload[i] = (uint8_t)i;
    struct dvs__frame in = sample_request(payload, sizeof payload);
    uint8_t buf[256];
    size_t len, size;
    struct dvs__frame out;

    assert_int_equal(dvs__frame_encode(&in, buf, sizeof buf, &len), 0);
    for (size_t cut = 0; cut < len; cut++) {
        size = 0;
        assert_int_equal(decode_exact(buf, cut, DVS_MAX_PAYLOAD, &out, &size), -EAGAIN);
        /* Before the header is complete only its size is known. */
        assert_int_equal(size, cut < DVS__FRAME_HEADER_SIZE ? DVS__FRAME_HEADER_SIZE : len);
    }
    assert_int_equal(decode_exact(buf, len, DVS_MAX_PAYLOAD, &out, &size), 0);
}

static void decoder_takes_one_frame_from_a_stream(void **state)
{
    struct dvs__frame a = sample_request("one", 3), b = sample_request("two!", 4);
    b.seq = 43;
    uint8_t buf[256];
    size_t la, lb, size;
    struct dvs__frame out;

    assert_int_equal(dvs__frame_encode(&a, buf, sizeof buf, &la), 0);
    assert_int_equal(dvs__frame_encode(&b, buf + la, sizeof buf - la, &lb), 0);
    assert_int_equal(decode_exact(buf, la + lb, DVS_MAX_PAYLOAD, &out, &size), 0);
    assert_int_equal(size, la);
    assert_memory_equal(out.payload, "one", 3);
    assert_int_equal(decode_exact(buf + la, lb, DVS_MAX_PAYLOAD, &out, &size), 0);
    assert_int_equal(out.seq, 43);
    assert_memory_equal(out.payload, "two!", 4);
}

static void oversized_payload_is_refused_from_the_header_alone(void **state)
{
    static uint8_t big[DVS_MAX_PAYLOAD + 1];
    struct dvs__frame in = sample_request(big, DVS_MAX_PAYLOAD + 1);
    uint8_t hdr[DVS__FRAME_HEADER_SIZE];
    size_t len, size;
    struct dvs__frame out;

    assert_int_equal(dvs__frame_encode_header(&in, hdr), DVS_ETOOBIG);
    assert_int_equal(dvs__frame_encode(&in, big, sizeof big, &len), DVS_ETOOBIG);

    /* A header claiming 4 GiB is refused after its 16th byte. */
    in = sample_request(NULL, 0);
    assert_int_equal(dvs__frame_encode_header(&in, hdr), 0);
    memset(hdr + 12, 0xff, 4);
    assert_int_equal(decode_exact(hdr, 16, DVS_MAX_PAYLOAD, &out, &size), DVS_ETOOBIG);
    assert_int_equal(decode_exact(hdr, 15, DVS_MAX_PAYLOAD, &out, &size), -EAGAIN);

    /* The receiver's own lower bound applies too. */
    in = sample_request("12345", 5);
    assert_int_equal(dvs__frame_encode_header(&in, hdr), 0);
    assert_int_equal(decode_exact(hdr, sizeof hdr, 4, &out, &size), DVS_ETOOBIG);
    assert_int_equal(decode_exact(hdr, sizeof hdr, 5, &out, &size), -EAGAIN);
}

static void encoder_refuses_small_buffers_and_bad_fields(void **state)
{
    struct dvs__frame f = sample_request("abc", 3);
    uint8_t buf[256];
    size_t len = 12345;

    assert_int_equal(dvs__frame_encode(&f, buf, dvs__frame_size(&f) - 1, &len), -ENOBUFS);
    assert_int_equal(len, 12345);

    struct dvs__frame bad = f;
    bad.name = "KV";
    assert_int_equal(dvs__frame_encode(&bad, buf, sizeof buf, &len), -EINVAL);
    bad = f;
    bad.name_len = 0;
    assert_int_equal(dvs__frame_encode(&bad, buf, sizeof buf, &len), -EINVAL);
    bad = f;
    bad.seq = 0;
    bad.ack = 0;
    assert_int_equal(dvs__frame_encode(&bad, buf, sizeof buf, &len), -EINVAL);
    bad = f;
    bad.ack = bad.seq;
    assert_int_equal(dvs__frame_encode(&bad, buf, sizeof buf, &len), -EINVAL);
    bad = f;
    bad.status = DVS__STATUS_MOVED; /* requests carry no status */
    assert_int_equal(dvs__frame_encode(&bad, buf, sizeof buf, &len), -EINVAL);
    bad = f;
    bad.type = 3;
    assert_int_equal(dvs__frame_encode(&bad, buf, sizeof buf, &len), -EINVAL);
    bad = f;
    bad.payload = NULL;
    assert_int_equal(dvs__frame_encode(&bad, buf, sizeof buf, &len), -EINVAL);
}

/* Corrupt one header byte of a valid frame and expect DVS_EPROTO at once. */
static void expect_garbage_at(size_t at, uint8_t value)
{
    struct dvs__frame f = sample_request("abc", 3);
    uint8_t buf[256];
    size_t len, size;
    struct dvs__frame out;

    assert_int_equal(dvs__frame_encode(&f, buf, sizeof buf, &len), 0);
    buf[at] = value;
    /* Rejected as soon as the offending byte has arrived... */
    assert_int_equal(decode_exact(buf, at + 1, DVS_MAX_PAYLOAD, &out, &size), DVS_EPROTO);
    /* ...and of course with the whole frame there. */
    assert_int_equal(decode_exact(buf, len, DVS_MAX_PAYLOAD, &out, &size), DVS_EPROTO);
}

static void garbage_is_rejected_as_soon_as_it_arrives(void **state)
{
    expect_garbage_at(0, 'G');  /* magic, first byte */
    expect_garbage_at(3, 0);    /* magic, last byte */
    expect_garbage_at(4, 2);    /* version */
    expect_garbage_at(5, 0);    /* type */
    expect_garbage_at(5, 9);
    expect_garbage_at(6, 1);    /* a request with a status */
    expect_garbage_at(7, 1);    /* a request with flags */
    expect_garbage_at(9, 64);   /* name too long */
    expect_garbage_at(9, 0);    /* request without a name */
    expect_garbage_at(10, 1);   /* reserved */
    expect_garbage_at(11, 1);
    expect_garbage_at(DVS__FRAME_HEADER_SIZE, 'K'); /* name: capitals */
    expect_garbage_at(DVS__FRAME_HEADER_SIZE, '-'); /* name: must start alnum */
    expect_garbage_at(DVS__FRAME_HEADER_SIZE + 1, '\0');
}

static void reply_status_and_flags_are_checked(void **state)
{
    struct dvs__frame f = {.type = DVS__FRAME_REPLY, .seq = 1};
    uint8_t buf[DVS__FRAME_HEADER_SIZE];
    size_t size;
    struct dvs__frame out;

    assert_int_equal(dvs__frame_encode_header(&f, buf), 0);
    buf[6] = 4; /* no such status */
    assert_int_equal(decode_exact(buf, 7, DVS_MAX_PAYLOAD, &out, &size), DVS_EPROTO);
    buf[6] = 0;
    buf[7] = 0x02; /* unknown flag */
    assert_int_equal(decode_exact(buf, 8, DVS_MAX_PAYLOAD, &out, &size), DVS_EPROTO);
    buf[7] = 0;
    buf[55] = 1; /* replies carry no ack */
    assert_int_equal(decode_exact(buf, sizeof buf, DVS_MAX_PAYLOAD, &out, &size), DVS_EPROTO);
}

/*
 * Random bytes must never crash the decoder nor make it read out of bounds,
 * and are rejected within the first few bytes (the magic).
 */
static void random_garbage_is_rejected_without_overreads(void **state)
{
    rng_state = 0x9e3779b97f4a7c15ull;
    uint8_t buf[512];

    for (int iter = 0; iter < 20000; iter++) {
        size_t len = rng() % sizeof buf;
        for (size_t i = 0; i < len; i++)
            buf[i] = (uint8_t)rng();
        struct dvs__frame out;
        size_t size;
        int rv = decode_exact(buf, len, DVS_MAX_PAYLOAD, &out, &size);
        if (len >= 4 && memcmp(buf, "DVSF", 4) != 0)
            assert_int_equal(rv, DVS_EPROTO);
        else
            assert_true(rv == -EAGAIN || rv == DVS_EPROTO || rv == DVS_ETOOBIG);
    }
}

/*
 * Mutations of a valid frame: flip random bytes and check that whatever the
 * decoder accepts still satisfies every rule of the format.
 */
static void mutated_frames_decode_only_to_valid_frames(void **state)
{
    rng_state = 12345;
    uint8_t payload[64];
    memset(payload, 'p', sizeof payload);
    struct dvs__frame f = sample_request(payload, sizeof payload);
    uint8_t orig[256], buf[256];
    size_t len;
    assert_int_equal(dvs__frame_encode(&f, orig, sizeof orig, &len), 0);

    int accepted = 0;
    for (int iter = 0; iter < 20000; iter++) {
        memcpy(buf, orig, len);
        int flips = 1 + (int)(rng() % 3);
        for (int k = 0; k < flips; k++)
            buf[rng() % len] ^= (uint8_t)(1u << (rng() % 8));
        size_t cut = len - rng() % 8;
        struct dvs__frame out;
        size_t size;
        int rv = decode_exact(buf, cut, DVS_MAX_PAYLOAD, &out, &size);
        if (rv == 0) {
            accepted++;
            assert_true(size <= cut);
            assert_int_equal(dvs__frame_check(&out, DVS_MAX_PAYLOAD), 0);
        } else {
            assert_true(rv == -EAGAIN || rv == DVS_EPROTO || rv == DVS_ETOOBIG);
            if (rv == -EAGAIN)
                assert_true(size > cut && size <= DVS__FRAME_MAX_SIZE);
        }
    }
    /* Flips in the generation, client id, payload... are undetectable by
     * design (TCP checksums the bytes); many mutants must still decode. */
    assert_true(accepted > 0);
}

static void status_payloads_round_trip_and_are_bounded(void **state)
{
    uint8_t buf[4 + DVS__FRAME_MAX_TEXT];
    char addr[DVS__FRAME_MAX_TEXT + 1];
    int code = 0;

    size_t n = dvs__error_payload_encode(DVS_ESTALEGEN, "stale", buf, sizeof buf);
    assert_int_equal(n, 9);
    assert_int_equal(dvs__error_payload_decode(buf, n, &code), 0);
    assert_int_equal(code, DVS_ESTALEGEN);
    assert_int_equal(dvs__error_payload_decode(buf, 3, &code), DVS_EPROTO);

    /* A positive code on the wire is not an error code. */
    n = dvs__error_payload_encode(5, NULL, buf, sizeof buf);
    assert_int_equal(dvs__error_payload_decode(buf, n, &code), DVS_EPROTO);

    char longtext[600];
    memset(longtext, 'x', sizeof longtext - 1);
    longtext[sizeof longtext - 1] = '\0';
    n = dvs__error_payload_encode(-EIO, longtext, buf, sizeof buf);
    assert_int_equal(n, 4 + DVS__FRAME_MAX_TEXT);

    assert_int_equal(dvs__moved_payload_decode("10.0.0.2:7000", 13, addr, sizeof addr), 0);
    assert_string_equal(addr, "10.0.0.2:7000");
    assert_int_equal(dvs__moved_payload_decode("", 0, addr, sizeof addr), DVS_EPROTO);
    assert_int_equal(dvs__moved_payload_decode("a b", 3, addr, sizeof addr), DVS_EPROTO);
    assert_int_equal(dvs__moved_payload_decode("a\nb", 3, addr, sizeof addr), DVS_EPROTO);
    assert_int_equal(dvs__moved_payload_decode(longtext, 256, addr, sizeof addr), DVS_EPROTO);
}

static void names_follow_the_api_rules(void **state)
{
    assert_true(dvs__name_valid("kv", 2));
    assert_true(dvs__name_valid("0a_b.c-d", 8));
    assert_false(dvs__name_valid("", 0));
    assert_false(dvs__name_valid("_kv", 3));
    assert_false(dvs__name_valid("k v", 3));
    char name[65];
    memset(name, 'a', sizeof name);
    assert_true(dvs__name_valid(name, 63));
    assert_false(dvs__name_valid(name, 64));
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(request_round_trips),
        cmocka_unit_test(reply_round_trips_with_every_status),
        cmocka_unit_test(decoder_reports_every_truncation_as_incomplete),
        cmocka_unit_test(decoder_takes_one_frame_from_a_stream),
        cmocka_unit_test(oversized_payload_is_refused_from_the_header_alone),
        cmocka_unit_test(encoder_refuses_small_buffers_and_bad_fields),
        cmocka_unit_test(garbage_is_rejected_as_soon_as_it_arrives),
        cmocka_unit_test(reply_status_and_flags_are_checked),
        cmocka_unit_test(random_garbage_is_rejected_without_overreads),
        cmocka_unit_test(mutated_frames_decode_only_to_valid_frames),
        cmocka_unit_test(status_payloads_round_trip_and_are_bounded),
        cmocka_unit_test(names_follow_the_api_rules),
    };
    return cmocka_run_group_tests_name("libdvs/frame", tests, NULL, NULL);
}
