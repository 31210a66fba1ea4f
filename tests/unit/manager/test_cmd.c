/*
 * Unit tests of the Raft log command codec (manager/cmd.c).
 *
 * Entries written by one member are decoded by every other member, possibly
 * of another version, so besides round trips these tests feed the decoder
 * every kind of damaged entry and check that it refuses each one clearly,
 * without touching the output (DESIGN.md §8).
 */
#include <errno.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>
#include <raft.h>

#include "dvs.h"
#include "manager/cmd.h"

/* ---- helpers ---- */

static void put_le(unsigned char *p, uint64_t v, unsigned n)
{
    for (unsigned i = 0; i < n; i++)
        p[i] = (unsigned char)(v >> (8 * i));
}

/*
 * Build an entry by hand, so that tests can produce what the encoder never
 * would. BODY_LEN is the value written in the header; the buffer holds BODY
 * (strlen bytes), then zeros up to TOTAL bytes. Returns a malloc'd buffer.
 */
struct raw {
    uint32_t magic;
    uint16_t version;
    uint16_t type;
    uint64_t request_id;
    int64_t time_ms;
    uint32_t body_len;
    uint32_t reserved;
    const char *body;
};

static struct raw raw_default(const char *body)
{
    struct raw r = {
        .magic = MGR_CMD_MAGIC,
        .version = MGR_CMD_VERSION,
        .type = MGR_CMD_NODE_STATE,
        .request_id = 42,
        .time_ms = 1700000000000,
        .body_len = (uint32_t)strlen(body),
        .reserved = 0,
        .body = body,
    };
    return r;
}

static size_t padded(size_t body_len)
{
    return (MGR_CMD_HEADER_SIZE + body_len + 7) & ~(size_t)7;
}

static unsigned char *raw_build(const struct raw *r, size_t total)
{
    unsigned char *buf = calloc(1, total ? total : 1);
    assert_non_null(buf);
    unsigned char hdr[MGR_CMD_HEADER_SIZE];
    put_le(hdr + 0, r->magic, 4);
    put_le(hdr + 4, r->version, 2);
    put_le(hdr + 6, r->type, 2);
    put_le(hdr + 8, r->request_id, 8);
    put_le(hdr + 16, (uint64_t)r->time_ms, 8);
    put_le(hdr + 24, r->body_len, 4);
    put_le(hdr + 28, r->reserved, 4);
    memcpy(buf, hdr, total < sizeof(hdr) ? total : sizeof(hdr));
    size_t blen = strlen(r->body);
    if (total > MGR_CMD_HEADER_SIZE)
        memcpy(buf + MGR_CMD_HEADER_SIZE, r->body,
               blen < total - MGR_CMD_HEADER_SIZE ? blen : total - MGR_CMD_HEADER_SIZE);
    return buf;
}

/* A decode that must fail: checks the code, that the message mentions
 * NEEDLE, and that the output struct is untouched. */
static void expect_decode_error(const void *buf, size_t len, int code, const char *needle)
{
    struct mgr_cmd cmd = {.type = 0x7777, .request_id = 7, .time_ms = 7, .body = NULL};
    char err[256] = "";
    int rv = mgr_cmd_decode(buf, len, &cmd, err, sizeof(err));
    if (rv != code)
        print_error("expected %s, got %s (%s)\n", dvs_err_name(code), dvs_err_name(rv), err);
    assert_int_equal(rv, code);
    assert_true(err[0] != '\0');
    if (needle && !strstr(err, needle)) {
        print_error("message \"%s\" does not mention \"%s\"\n", err, needle);
        fail();
    }
    assert_int_equal(cmd.type, 0x7777);
    assert_int_equal(cmd.request_id, 7);
    assert_int_equal(cmd.time_ms, 7);
    assert_null(cmd.body);
}

static json_t *sample_body(unsigned type)
{
    /* Representative bodies; the codec does not interpret them. */
    switch (type) {
    case MGR_CMD_MEMBER_SET:
        return json_pack("{s:s, s:s, s:s}", "id", "m1", "raft_addr", "127.0.0.1:7101",
                         "http_addr", "127.0.0.1:7001");
    case MGR_CMD_LOAD_SUMMARY:
        return json_pack("{s:[{s:s, s:f, s:I, s:f}]}", "nodes", "id", "n1", "cpu", 0.25, "mem",
                         (json_int_t)123456789, "rps", 1500.5);
    case MGR_CMD_ENDPOINT_CREATE:
        return json_pack("{s:s, s:s, s:f, s:I}", "name", "kv", "command",
                         "/usr/bin/dvs-kv --port 0 \"quoted\" \xc3\xa9", "cpu", 0.5, "arena",
                         (json_int_t)(64 << 20));
    case MGR_CMD_MIGRATION_UPDATE:
        return json_pack("{s:I, s:s, s:{s:[i,i,i], s:n}}", "id", (json_int_t)3, "phase",
                         "precopy", "info", "rounds", 1, 2, 3, "note");
    default:
        return json_pack("{s:s, s:i, s:b}", "name", "x", "n", (int)type, "flag", 1);
    }
}

/* ---- round trips ---- */

static void type_names_cover_every_type(void **state)
{
    (void)state;
    assert_string_equal(mgr_cmd_type_name(MGR_CMD_MEMBER_SET), "member_set");
    assert_string_equal(mgr_cmd_type_name(MGR_CMD_MIGRATION_UPDATE), "migration_update");
    for (unsigned t = 1; t <= MGR_CMD_TYPE_MAX; t++)
        assert_string_not_equal(mgr_cmd_type_name(t), "unknown");
    assert_string_equal(mgr_cmd_type_name(0), "unknown");
    assert_string_equal(mgr_cmd_type_name(MGR_CMD_TYPE_MAX + 1), "unknown");
}

static void every_type_round_trips(void **state)
{
    (void)state;
    for (unsigned t = 1; t <= MGR_CMD_TYPE_MAX; t++) {
        struct mgr_cmd in = {.type = (uint16_t)t,
                             .request_id = 0x0123456789abcdefull + t,
                             .time_ms = -5 + (int64_t)t * 1000000000000,
                             .body = sample_body(t)};
        assert_non_null(in.body);
        void *buf = NULL;
        size_t len = 0;
        assert_int_equal(mgr_cmd_encode(&in, &buf, &len), 0);
        assert_int_equal(len % 8, 0);
        assert_true(len >= MGR_CMD_HEADER_SIZE + 2);

        struct mgr_cmd out = {0};
        char err[200];
        assert_int_equal(mgr_cmd_decode(buf, len, &out, err, sizeof(err)), 0);
        assert_int_equal(out.type, t);
        assert_int_equal(out.request_id, in.request_id);
        assert_true(out.time_ms == in.time_ms);
        assert_true(json_equal(out.body, in.body));

        /* Encoding is deterministic: the decoded command encodes to the same bytes. */
        void *buf2 = NULL;
        size_t len2 = 0;
        assert_int_equal(mgr_cmd_encode(&out, &buf2, &len2), 0);
        assert_int_equal(len2, len);
        assert_memory_equal(buf2, buf, len);

        raft_free(buf);
        raft_free(buf2);
        mgr_cmd_clear(&out);
        mgr_cmd_clear(&in);
    }
}

static void encode_writes_little_endian_header_sorted_compact_body_and_zero_padding(
    void **state)
{
    (void)state;
    struct mgr_cmd cmd = {.type = MGR_CMD_ENDPOINT_DELETE,
                          .request_id = 0x1122334455667788ull,
                          .time_ms = 0x0102030405060708ll,
                          .body = json_pack("{s:i, s:i}", "b", 1, "a", 2)};
    void *buf;
    size_t len;
    assert_int_equal(mgr_cmd_encode(&cmd, &buf, &len), 0);
    const unsigned char *p = buf;
    static const char body[] = "{\"a\":2,\"b\":1}";
    const unsigned char expect_hdr[MGR_CMD_HEADER_SIZE] = {
        'D', 'V', 'S', 'C',                             /* magic */
        1, 0,                                           /* version */
        MGR_CMD_ENDPOINT_DELETE, 0,                     /* type */
        0x88, 0x77, 0x66, 0x55, 0x44, 0x33, 0x22, 0x11, /* request id */
        0x08, 0x07, 0x06, 0x05, 0x04, 0x03, 0x02, 0x01, /* time */
        sizeof(body) - 1, 0, 0, 0,                      /* body length */
        0, 0, 0, 0,                                     /* reserved */
    };
    assert_memory_equal(p, expect_hdr, sizeof(expect_hdr));
    assert_memory_equal(p + MGR_CMD_HEADER_SIZE, body, sizeof(body) - 1);
    assert_int_equal(len, padded(sizeof(body) - 1));
    for (size_t i = MGR_CMD_HEADER_SIZE + sizeof(body) - 1; i < len; i++)
        assert_int_equal(p[i], 0);
    raft_free(buf);
    mgr_cmd_clear(&cmd);
}

static void encode_rejects_invalid_commands(void **state)
{
    (void)state;
    json_t *obj = json_object();
    json_t *arr = json_array();
    void *buf = (void *)0x1;
    size_t len = 99;
    struct mgr_cmd bad[] = {
        {.type = 0, .request_id = 1, .body = obj},
        {.type = MGR_CMD_TYPE_MAX + 1, .request_id = 1, .body = obj},
        {.type = MGR_CMD_MEMBER_SET, .request_id = 0, .body = obj},
        {.type = MGR_CMD_MEMBER_SET, .request_id = 1, .body = NULL},
        {.type = MGR_CMD_MEMBER_SET, .request_id = 1, .body = arr},
    };
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        assert_int_equal(mgr_cmd_encode(&bad[i], &buf, &len), -EINVAL);
        /* Nothing was handed out. */
        assert_ptr_equal(buf, (void *)0x1);
        assert_int_equal(len, 99);
    }
    assert_int_equal(mgr_cmd_encode(NULL, &buf, &len), -EINVAL);
    json_decref(obj);
    json_decref(arr);
}

/* A body whose compact encoding is exactly N bytes: {"a":"xxx..."}. */
static json_t *body_of_size(size_t n)
{
    size_t fill = n - strlen("{\"a\":\"\"}");
    char *s = malloc(fill + 1);
    assert_non_null(s);
    memset(s, 'x', fill);
    s[fill] = '\0';
    json_t *body = json_pack("{s:s}", "a", s);
    free(s);
    assert_non_null(body);
    return body;
}

static void encode_and_decode_accept_body_at_the_limit_and_refuse_one_byte_more(void **state)
{
    (void)state;
    struct mgr_cmd cmd = {.type = MGR_CMD_ENDPOINT_CREATE,
                          .request_id = 9,
                          .body = body_of_size(MGR_CMD_MAX_BODY)};
    void *buf;
    size_t len;
    assert_int_equal(mgr_cmd_encode(&cmd, &buf, &len), 0);
    assert_int_equal(len, padded(MGR_CMD_MAX_BODY));
    struct mgr_cmd out = {0};
    assert_int_equal(mgr_cmd_decode(buf, len, &out, NULL, 0), 0);
    assert_true(json_equal(out.body, cmd.body));
    mgr_cmd_clear(&out);
    raft_free(buf);
    mgr_cmd_clear(&cmd);

    cmd.body = body_of_size(MGR_CMD_MAX_BODY + 1);
    buf = NULL;
    assert_int_equal(mgr_cmd_encode(&cmd, &buf, &len), DVS_ETOOBIG);
    assert_null(buf);
    mgr_cmd_clear(&cmd);
}

/* ---- damaged entries ---- */

static void decode_rejects_every_truncation(void **state)
{
    (void)state;
    struct mgr_cmd cmd = {.type = MGR_CMD_NODE_STATE,
                          .request_id = 5,
                          .body = json_pack("{s:s, s:s}", "id", "n1", "state", "draining")};
    void *buf;
    size_t len;
    assert_int_equal(mgr_cmd_encode(&cmd, &buf, &len), 0);
    for (size_t n = 0; n < len; n++) {
        /* A copy of exactly N bytes, so that ASan sees any read past it. */
        unsigned char *copy = malloc(n ? n : 1);
        memcpy(copy, buf, n);
        expect_decode_error(n ? copy : NULL, n, DVS_EPROTO, NULL);
        free(copy);
    }
    expect_decode_error(buf, 0, DVS_EPROTO, "truncated");
    expect_decode_error(buf, MGR_CMD_HEADER_SIZE - 1, DVS_EPROTO, "truncated");
    raft_free(buf);
    mgr_cmd_clear(&cmd);
}

static void decode_rejects_trailing_bytes(void **state)
{
    (void)state;
    struct raw r = raw_default("{}");
    size_t len = padded(2);
    unsigned char *buf = raw_build(&r, len + 8);
    expect_decode_error(buf, len + 8, DVS_EPROTO, "header says");
    free(buf);
}

static void decode_rejects_flipped_header_bits(void **state)
{
    (void)state;
    struct raw r = raw_default("{\"id\":\"n1\",\"state\":\"up\"}");
    size_t len = padded(r.body_len);
    unsigned char *good = raw_build(&r, len);
    struct mgr_cmd out = {0};
    assert_int_equal(mgr_cmd_decode(good, len, &out, NULL, 0), 0);
    mgr_cmd_clear(&out);

    /* Magic, version, body length and reserved: any single flipped bit is caught. */
    static const struct {
        size_t off, n;
    } ranges[] = {{0, 4}, {4, 2}, {24, 4}, {28, 4}};
    for (size_t k = 0; k < sizeof(ranges) / sizeof(ranges[0]); k++) {
        for (size_t off = ranges[k].off; off < ranges[k].off + ranges[k].n; off++) {
            for (int bit = 0; bit < 8; bit++) {
                unsigned char *bad = malloc(len);
                memcpy(bad, good, len);
                bad[off] ^= (unsigned char)(1u << bit);
                struct mgr_cmd cmd = {0};
                char err[256];
                int rv = mgr_cmd_decode(bad, len, &cmd, err, sizeof(err));
                if (rv == 0)
                    print_error("flipping bit %d of byte %zu went unnoticed\n", bit, off);
                assert_true(rv == DVS_EPROTO || rv == DVS_ETOOBIG || rv == -EPROTONOSUPPORT);
                assert_null(cmd.body);
                free(bad);
            }
        }
    }
    free(good);
}

static void decode_rejects_bad_magic(void **state)
{
    (void)state;
    struct raw r = raw_default("{}");
    r.magic = 0x43535645; /* "ESVC"-ish */
    unsigned char *buf = raw_build(&r, padded(2));
    expect_decode_error(buf, padded(2), DVS_EPROTO, "magic");
    free(buf);
}

static void decode_refuses_newer_version_with_a_clear_error(void **state)
{
    (void)state;
    struct raw r = raw_default("{}");
    r.version = MGR_CMD_VERSION + 1;
    unsigned char *buf = raw_build(&r, padded(2));
    expect_decode_error(buf, padded(2), -EPROTONOSUPPORT, "newer");
    free(buf);

    r.version = 0;
    buf = raw_build(&r, padded(2));
    expect_decode_error(buf, padded(2), DVS_EPROTO, "version 0");
    free(buf);
}

static void decode_rejects_unknown_types(void **state)
{
    (void)state;
    const uint16_t types[] = {0, MGR_CMD_TYPE_MAX + 1, 0xffff};
    for (size_t i = 0; i < sizeof(types) / sizeof(types[0]); i++) {
        struct raw r = raw_default("{}");
        r.type = types[i];
        unsigned char *buf = raw_build(&r, padded(2));
        expect_decode_error(buf, padded(2), DVS_EPROTO, "type");
        free(buf);
    }
}

static void decode_rejects_nonzero_reserved_field(void **state)
{
    (void)state;
    struct raw r = raw_default("{}");
    r.reserved = 1;
    unsigned char *buf = raw_build(&r, padded(2));
    expect_decode_error(buf, padded(2), DVS_EPROTO, "reserved");
    free(buf);
}

static void decode_rejects_request_id_zero(void **state)
{
    (void)state;
    struct raw r = raw_default("{}");
    r.request_id = 0;
    unsigned char *buf = raw_build(&r, padded(2));
    expect_decode_error(buf, padded(2), DVS_EPROTO, "request id");
    free(buf);
}

static void decode_rejects_nonzero_padding(void **state)
{
    (void)state;
    struct raw r = raw_default("{}"); /* 34 bytes, padded to 40 */
    size_t len = padded(2);
    for (size_t off = MGR_CMD_HEADER_SIZE + 2; off < len; off++) {
        unsigned char *buf = raw_build(&r, len);
        buf[off] = ' '; /* even whitespace that JSON would accept */
        expect_decode_error(buf, len, DVS_EPROTO, "padding");
        free(buf);
    }
}

static void decode_rejects_oversized_body_length_before_reading_it(void **state)
{
    (void)state;
    struct raw r = raw_default("{}");
    r.body_len = MGR_CMD_MAX_BODY + 1;
    unsigned char *buf = raw_build(&r, padded(2));
    expect_decode_error(buf, padded(2), DVS_ETOOBIG, "limit");
    free(buf);

    r.body_len = UINT32_MAX;
    buf = raw_build(&r, padded(2));
    expect_decode_error(buf, padded(2), DVS_ETOOBIG, NULL);
    free(buf);
}

static void decode_rejects_bodies_that_are_not_one_json_object(void **state)
{
    (void)state;
    static const struct {
        const char *body;
        const char *needle;
    } cases[] = {
        {"[]", "array"},
        {"[{}]", "array"},
        {"1", "number"},
        {"\"kv\"", "string"},
        {"null", "null"},
        {"true", "boolean"},
        {"", "JSON"},
        {"{", "JSON"},
        {"{}x", "JSON"},
        {"{} {}", "JSON"},
        {"{\"a\":1,\"a\":2}", "JSON"},     /* duplicate key */
        {"{\"a\":\"\\u0000\"}", "JSON"}, /* NUL inside a string */
        {"{\"a\":\"\xff\"}", "JSON"},     /* invalid UTF-8 */
        {"{'a':1}", "JSON"},
    };
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        struct raw r = raw_default(cases[i].body);
        size_t len = padded(r.body_len);
        unsigned char *buf = raw_build(&r, len);
        expect_decode_error(buf, len, DVS_EPROTO, cases[i].needle);
        free(buf);
    }
}

static void decode_writes_no_message_when_no_buffer_is_given(void **state)
{
    (void)state;
    struct raw r = raw_default("[]");
    unsigned char *buf = raw_build(&r, padded(2));
    struct mgr_cmd cmd = {0};
    assert_int_equal(mgr_cmd_decode(buf, padded(2), &cmd, NULL, 0), DVS_EPROTO);
    char err[4] = "abc";
    assert_int_equal(mgr_cmd_decode(buf, padded(2), &cmd, err, 0), DVS_EPROTO);
    assert_string_equal(err, "abc");
    free(buf);
}

static void clear_accepts_zeroed_and_null_commands(void **state)
{
    (void)state;
    struct mgr_cmd cmd = {0};
    mgr_cmd_clear(&cmd);
    mgr_cmd_clear(&cmd);
    mgr_cmd_clear(NULL);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(type_names_cover_every_type),
        cmocka_unit_test(every_type_round_trips),
        cmocka_unit_test(encode_writes_little_endian_header_sorted_compact_body_and_zero_padding),
        cmocka_unit_test(encode_rejects_invalid_commands),
        cmocka_unit_test(encode_and_decode_accept_body_at_the_limit_and_refuse_one_byte_more),
        cmocka_unit_test(decode_rejects_every_truncation),
        cmocka_unit_test(decode_rejects_trailing_bytes),
        cmocka_unit_test(decode_rejects_flipped_header_bits),
        cmocka_unit_test(decode_rejects_bad_magic),
        cmocka_unit_test(decode_refuses_newer_version_with_a_clear_error),
        cmocka_unit_test(decode_rejects_unknown_types),
        cmocka_unit_test(decode_rejects_nonzero_reserved_field),
        cmocka_unit_test(decode_rejects_request_id_zero),
        cmocka_unit_test(decode_rejects_nonzero_padding),
        cmocka_unit_test(decode_rejects_oversized_body_length_before_reading_it),
        cmocka_unit_test(decode_rejects_bodies_that_are_not_one_json_object),
        cmocka_unit_test(decode_writes_no_message_when_no_buffer_is_given),
        cmocka_unit_test(clear_accepts_zeroed_and_null_commands),
    };
    return cmocka_run_group_tests_name("manager/cmd", tests, NULL, NULL);
}
