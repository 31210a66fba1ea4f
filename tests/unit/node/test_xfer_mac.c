/*
 * node/xfer_mac: the transfer stream's HMAC-SHA256 (docs/security.md).
 * Known answers from RFC 4231, then the properties the transfer relies on:
 * the tag depends on the key, the migration id and every byte in order, and
 * the verification refuses a truncated or altered stream.
 */
#include <errno.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>

#include <cmocka.h>

#include "node/xfer_mac.h"

static void unhex(const char *hex, uint8_t *out, size_t n)
{
    assert_int_equal(strlen(hex), 2 * n);
    for (size_t i = 0; i < n; i++) {
        unsigned v;
        assert_int_equal(sscanf(hex + 2 * i, "%2x", &v), 1);
        out[i] = (uint8_t)v;
    }
}

static void raw_tag(const void *key, size_t klen, const void *data, size_t dlen,
                    uint8_t tag[XFER_MAC_LEN])
{
    struct xfer_mac m = {0};
    assert_int_equal(xfer_mac_init_raw(&m, key, klen), 0);
    assert_int_equal(xfer_mac_update(&m, data, dlen), 0);
    assert_int_equal(xfer_mac_final(&m, tag), 0);
}

/* RFC 4231 test cases 1, 2, 4 and 6 (HMAC-SHA-256). */
static void rfc4231_known_answers(void **state)
{
    struct {
        const char *key_hex;
        const char *data;
        const char *data_hex;
        const char *tag_hex;
    } cases[] = {
        {"0b0b0b0b0b0b0b0b0b0b0b0b0b0b0b0b0b0b0b0b", "Hi There", NULL,
         "b0344c61d8db38535ca8afceaf0bf12b881dc200c9833da726e9376c2e32cff7"},
        {"4a656665", "what do ya want for nothing?", NULL,
         "5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843"},
        {"0102030405060708090a0b0c0d0e0f10111213141516171819", NULL,
         /* 50 x 0xcd */
         "cdcdcdcdcdcdcdcdcdcdcdcdcdcdcdcdcdcdcdcdcdcdcdcdcdcdcdcdcdcdcdcdcdcdcdcdcdcdcdcd"
         "cdcdcdcdcdcdcdcdcdcd",
         "82558a389a443c0ea4cc819899f2083a85f0faa3e578f8077a2e3ff46729665b"},
        {NULL /* 131 x 0xaa */, "Test Using Larger Than Block-Size Key - Hash Key First", NULL,
         "60e431591ee0b67f0d8a26aacbf5b77f8e0bc6213728c5140546040f0ee37f54"},
    };
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        uint8_t key[131], data[128], want[32], got[32];
        size_t klen, dlen;
        if (cases[i].key_hex) {
            klen = strlen(cases[i].key_hex) / 2;
            unhex(cases[i].key_hex, key, klen);
        } else {
            klen = 131;
            memset(key, 0xaa, klen);
        }
        if (cases[i].data) {
            dlen = strlen(cases[i].data);
            assert_true(dlen <= sizeof(data));
            memcpy(data, cases[i].data, dlen);
        } else {
            dlen = strlen(cases[i].data_hex) / 2;
            assert_true(dlen <= sizeof(data));
            unhex(cases[i].data_hex, data, dlen);
        }
        unhex(cases[i].tag_hex, want, 32);
        raw_tag(key, klen, data, dlen, got);
        assert_memory_equal(got, want, 32);
    }
}

/* Split updates give the tag of the whole, whatever the chunking. */
static void chunked_updates_equal_one_update(void **state)
{
    uint8_t key[32], buf[10000], a[32], b[32];
    for (size_t i = 0; i < sizeof(key); i++)
        key[i] = (uint8_t)(i * 7 + 1);
    for (size_t i = 0; i < sizeof(buf); i++)
        buf[i] = (uint8_t)(i * 31);
    struct xfer_mac m = {0};
    assert_int_equal(xfer_mac_init(&m, key, sizeof(key), 42), 0);
    assert_int_equal(xfer_mac_update(&m, buf, sizeof(buf)), 0);
    assert_int_equal(xfer_mac_final(&m, a), 0);
    assert_int_equal(xfer_mac_init(&m, key, sizeof(key), 42), 0);
    for (size_t off = 0, step = 1; off < sizeof(buf); off += step, step = step * 3 % 1021 + 1) {
        size_t n = step < sizeof(buf) - off ? step : sizeof(buf) - off;
        assert_int_equal(xfer_mac_update(&m, buf + off, n), 0);
    }
    assert_int_equal(xfer_mac_update(&m, NULL, 0), 0);
    assert_int_equal(m.bytes, sizeof(buf));
    assert_true(xfer_mac_verify(&m, a));
    /* And the same bytes under another migration id do not. */
    assert_int_equal(xfer_mac_init(&m, key, sizeof(key), 43), 0);
    assert_int_equal(xfer_mac_update(&m, buf, sizeof(buf)), 0);
    assert_int_equal(xfer_mac_final(&m, b), 0);
    assert_false(xfer_mac_equal(a, b));
}

static void tag_of(const uint8_t *key, uint64_t mig, const void *data, size_t n, uint8_t *tag)
{
    struct xfer_mac m = {0};
    assert_int_equal(xfer_mac_init(&m, key, XFER_MAC_KEY_LEN, mig), 0);
    assert_int_equal(xfer_mac_update(&m, data, n), 0);
    assert_int_equal(xfer_mac_final(&m, tag), 0);
}

static void different_key_or_migration_gives_a_different_tag(void **state)
{
    uint8_t k1[32], k2[32], t1[32], t2[32], t3[32], t4[32];
    memset(k1, 0x11, sizeof(k1));
    memcpy(k2, k1, sizeof(k2));
    k2[31] ^= 1; /* one bit */
    const char page[] = "a page of the arena";
    tag_of(k1, 7, page, sizeof(page), t1);
    tag_of(k2, 7, page, sizeof(page), t2);
    tag_of(k1, 8, page, sizeof(page), t3);
    tag_of(k1, 7, page, sizeof(page), t4);
    assert_false(xfer_mac_equal(t1, t2));
    assert_false(xfer_mac_equal(t1, t3));
    assert_true(xfer_mac_equal(t1, t4));
    /* The context is there: the raw HMAC of the same bytes differs. */
    uint8_t raw[32];
    raw_tag(k1, 32, page, sizeof(page), raw);
    assert_false(xfer_mac_equal(t1, raw));
}

static void truncated_or_altered_stream_does_not_verify(void **state)
{
    uint8_t key[32], sent[32];
    memset(key, 0x5a, sizeof(key));
    uint8_t stream[4096];
    for (size_t i = 0; i < sizeof(stream); i++)
        stream[i] = (uint8_t)i;
    tag_of(key, 99, stream, sizeof(stream), sent);

    struct xfer_mac m = {0};
    assert_int_equal(xfer_mac_init(&m, key, sizeof(key), 99), 0);
    assert_int_equal(xfer_mac_update(&m, stream, sizeof(stream) - 1), 0);
    assert_false(xfer_mac_verify(&m, sent)); /* one byte short */

    stream[100] ^= 0x80;
    assert_int_equal(xfer_mac_init(&m, key, sizeof(key), 99), 0);
    assert_int_equal(xfer_mac_update(&m, stream, sizeof(stream)), 0);
    assert_false(xfer_mac_verify(&m, sent)); /* one bit flipped */
    stream[100] ^= 0x80;

    assert_int_equal(xfer_mac_init(&m, key, sizeof(key), 99), 0);
    assert_int_equal(xfer_mac_update(&m, stream, sizeof(stream)), 0);
    assert_true(xfer_mac_verify(&m, sent));
}

static void bad_arguments_are_refused(void **state)
{
    struct xfer_mac m = {0};
    uint8_t key[32] = {0}, out[32];
    assert_int_equal(xfer_mac_init(&m, key, 8, 1), -EINVAL); /* short key */
    assert_int_equal(xfer_mac_init(&m, NULL, 32, 1), -EINVAL);
    assert_int_equal(xfer_mac_update(&m, key, 1), -EINVAL); /* not initialised */
    assert_int_equal(xfer_mac_final(&m, out), -EINVAL);
    assert_false(xfer_mac_verify(&m, out));
    xfer_mac_close(&m);
    xfer_mac_close(NULL);
    assert_int_equal(xfer_mac_init(&m, key, 32, 1), 0);
    assert_int_equal(xfer_mac_update(&m, NULL, 5), -EINVAL);
    xfer_mac_close(&m); /* an aborted transfer: no leak (ASan) */
    assert_null(m.h);
}

static void secret_hex_is_decoded_strictly(void **state)
{
    uint8_t k[32], keep[32];
    const char *good = "00112233445566778899AABBCCDDEEFF00112233445566778899aabbccddeeff";
    assert_int_equal(xfer_mac_key_from_hex(good, k), 0);
    assert_int_equal(k[0], 0x00);
    assert_int_equal(k[10], 0xaa);
    assert_int_equal(k[31], 0xff);
    memcpy(keep, k, sizeof(k));
    assert_int_equal(xfer_mac_key_from_hex("00", k), -EINVAL);
    assert_int_equal(xfer_mac_key_from_hex(NULL, k), -EINVAL);
    char bad[65];
    memcpy(bad, good, sizeof(bad));
    bad[63] = 'g';
    assert_int_equal(xfer_mac_key_from_hex(bad, k), -EINVAL);
    assert_memory_equal(k, keep, sizeof(k)); /* untouched on failure */
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(rfc4231_known_answers),
        cmocka_unit_test(chunked_updates_equal_one_update),
        cmocka_unit_test(different_key_or_migration_gives_a_different_tag),
        cmocka_unit_test(truncated_or_altered_stream_does_not_verify),
        cmocka_unit_test(bad_arguments_are_refused),
        cmocka_unit_test(secret_hex_is_decoded_strictly),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
