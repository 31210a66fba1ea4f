/*
 * Tests of dvs-kv's parts (examples/kv): the table in a real arena, the wire
 * format, the request handler, and the history checker behind
 * `dvs-kv-client verify`.
 *
 * The arena is mapped at a fixed address, as a service's would be. It is
 * above the manager's range for endpoint arenas (manager/fsm.h: 16..96 TiB)
 * and the sanitizers' fixed regions, and far below where the kernel puts
 * shared libraries and stacks; dvs_arena_create maps with
 * MAP_FIXED_NOREPLACE, so a collision would fail the setup, loudly, instead
 * of corrupting anything.
 */
#include <errno.h>
#include <inttypes.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <time.h>
#include <unistd.h>

#include <cmocka.h>

#include "dvs.h"
#include "examples/kv/history.h"
#include "examples/kv/proto.h"
#include "examples/kv/service.h"
#include "examples/kv/siphash.h"
#include "examples/kv/table.h"

#define TEST_ARENA_ADDR ((uintptr_t)0x7e0000000000ull)
#define TEST_ARENA_SIZE ((size_t)16 << 20)
#define TEST_SMALL_ARENA ((size_t)64 << 10)

static const uint64_t test_seed[2] = {UINT64_C(0x0123456789abcdef),
                                      UINT64_C(0xfedcba9876543210)};

/* ===========================================================================
 * Fixture: a table in a fresh arena, and a reply buffer for the handler
 */

struct fx {
    dvs_arena *arena;
    int copy_fd; /* the memfd of a "migrated" copy, once there is one */
    struct kv *kv;
    struct kv_service svc;
    uint8_t *req;
    uint8_t *reply;
};

static int fx_setup_size(void **state, size_t size)
{
    struct fx *f = calloc(1, sizeof(*f));
    assert_non_null(f);
    f->copy_fd = -1;
    int rv = dvs_arena_create(TEST_ARENA_ADDR, size, &f->arena);
    if (rv != 0) {
        fprintf(stderr, "cannot map the test arena at %#" PRIxPTR ": %s\n",
                TEST_ARENA_ADDR, dvs_strerror(rv));
        free(f);
        return -1;
    }
    bool created = false;
    assert_int_equal(kv_open(f->arena, test_seed, &f->kv, &created), 0);
    assert_true(created);
    f->svc.kv = f->kv;
    f->svc.generation = 7;
    f->req = malloc(DVS_MAX_PAYLOAD);
    f->reply = malloc(DVS_MAX_PAYLOAD);
    assert_non_null(f->req);
    assert_non_null(f->reply);
    *state = f;
    return 0;
}

static int fx_setup(void **state)
{
    return fx_setup_size(state, TEST_ARENA_SIZE);
}

static int fx_setup_small(void **state)
{
    return fx_setup_size(state, TEST_SMALL_ARENA);
}

static int fx_teardown(void **state)
{
    struct fx *f = *state;
    kv_close(f->kv);
    dvs_arena_close(f->arena);
    if (f->copy_fd >= 0)
        close(f->copy_fd);
    free(f->req);
    free(f->reply);
    free(f);
    return 0;
}

/* Helpers over C strings, for readable tests. */
static int put(struct fx *f, const char *k, const char *v)
{
    return kv_put(f->kv, k, strlen(k), v, strlen(v));
}

/* The value of k as a fresh string, or NULL if absent. */
static char *get(struct fx *f, const char *k)
{
    const uint8_t *v;
    size_t len;
    if (kv_get(f->kv, k, strlen(k), &v, &len) != 0)
        return NULL;
    char *s = malloc(len + 1);
    assert_non_null(s);
    if (len)
        memcpy(s, v, len);
    s[len] = '\0';
    return s;
}

static void assert_value(struct fx *f, const char *k, const char *want)
{
    char *got = get(f, k);
    if (want == NULL) {
        assert_null(got);
        return;
    }
    assert_non_null(got);
    assert_string_equal(got, want);
    free(got);
}

/*
 * "Migrate" the arena: copy the memfd's bytes into a new memfd, unmap the
 * original, and map the copy at the same address as a restoring instance
 * does; then find the table again through the root.
 */
static void migrate(struct fx *f)
{
    size_t size = dvs_arena_size(f->arena);
    uint8_t *bytes = malloc(size);
    assert_non_null(bytes);
    assert_int_equal(pread(dvs_arena_fd(f->arena), bytes, size, 0), (ssize_t)size);

    kv_close(f->kv);
    f->kv = NULL;
    dvs_arena_close(f->arena);
    f->arena = NULL;
    if (f->copy_fd >= 0)
        close(f->copy_fd);

    int fd = memfd_create("kv-test-copy", MFD_CLOEXEC);
    assert_true(fd >= 0);
    assert_int_equal(write(fd, bytes, size), (ssize_t)size);
    free(bytes);
    f->copy_fd = fd;
    assert_int_equal(dvs_arena_open(fd, TEST_ARENA_ADDR, size, 0, &f->arena), 0);

    bool created = true;
    uint64_t other_seed[2] = {1, 2}; /* must be ignored: the table keeps its own */
    assert_int_equal(kv_open(f->arena, other_seed, &f->kv, &created), 0);
    assert_false(created);
    f->svc.kv = f->kv;
}

/* ===========================================================================
 * SipHash
 */

/* The reference vectors of the SipHash paper (key 00..0f, message 00..). */
static void siphash_matches_reference_vectors(void **state)
{
    (void)state;
    uint64_t k[2] = {UINT64_C(0x0706050403020100), UINT64_C(0x0f0e0d0c0b0a0908)};
    uint8_t msg[15];
    for (int i = 0; i < 15; i++)
        msg[i] = (uint8_t)i;
    assert_int_equal(kv_siphash(msg, 0, k), UINT64_C(0x726fdb47dd0e0e31));
    assert_int_equal(kv_siphash(msg, 15, k), UINT64_C(0xa129ca6149be45e5));
}

/* ===========================================================================
 * The table
 */

static void table_put_get_delete_roundtrip(void **state)
{
    struct fx *f = *state;
    assert_value(f, "a", NULL);
    assert_int_equal(put(f, "a", "1"), 0);
    assert_int_equal(put(f, "b", "two"), 0);
    assert_value(f, "a", "1");
    assert_value(f, "b", "two");
    assert_int_equal(kv_delete(f->kv, "a", 1), 0);
    assert_value(f, "a", NULL);
    assert_value(f, "b", "two");
    assert_int_equal(kv_delete(f->kv, "a", 1), -ENOENT);
    assert_int_equal(kv_check(f->kv), 0);

    struct kv_stats st;
    kv_stats(f->kv, &st);
    assert_int_equal(st.keys, 1);
    assert_int_equal(st.key_bytes, 1);
    assert_int_equal(st.value_bytes, 3);
}

static void table_overwrite_replaces_value_and_accounts_bytes(void **state)
{
    struct fx *f = *state;
    assert_int_equal(put(f, "k", "short"), 0);
    assert_int_equal(put(f, "k", "a much longer value than before"), 0);
    assert_value(f, "k", "a much longer value than before");
    assert_int_equal(put(f, "k", ""), 0);
    assert_value(f, "k", "");
    assert_int_equal(put(f, "k", "x"), 0);
    assert_value(f, "k", "x");

    /* Binary keys and values, with NULs inside, are fine. */
    const char key[3] = {'a', 0, 'b'}, val[4] = {0, 1, 0, 2};
    assert_int_equal(kv_put(f->kv, key, 3, val, 4), 0);
    const uint8_t *v;
    size_t len;
    assert_int_equal(kv_get(f->kv, key, 3, &v, &len), 0);
    assert_int_equal(len, 4);
    assert_memory_equal(v, val, 4);
    assert_int_equal(kv_get(f->kv, key, 1, &v, &len), -ENOENT);

    struct kv_stats st;
    kv_stats(f->kv, &st);
    assert_int_equal(st.keys, 2);
    assert_int_equal(st.value_bytes, 1 + 4);
    assert_int_equal(kv_check(f->kv), 0);
}

static void table_refuses_keys_and_values_out_of_bounds(void **state)
{
    struct fx *f = *state;
    char *big = calloc(1, KV_MAX_KEY + 1);
    assert_non_null(big);
    memset(big, 'k', KV_MAX_KEY + 1);
    assert_int_equal(kv_put(f->kv, big, 0, "v", 1), -EINVAL);
    assert_int_equal(kv_put(f->kv, big, KV_MAX_KEY + 1, "v", 1), -EINVAL);
    assert_int_equal(kv_put(f->kv, big, KV_MAX_KEY, "v", 1), 0);
    assert_int_equal(kv_put(f->kv, "k", 1, big, (size_t)KV_MAX_VALUE + 1), -EINVAL);
    free(big);
    assert_int_equal(kv_check(f->kv), 0);
}

static void table_incr_keeps_decimal_counters(void **state)
{
    struct fx *f = *state;
    int64_t v;
    assert_int_equal(kv_incr(f->kv, "c", 1, 1, &v), 0);
    assert_int_equal(v, 1);
    assert_int_equal(kv_incr(f->kv, "c", 1, 41, &v), 0);
    assert_int_equal(v, 42);
    assert_value(f, "c", "42");
    assert_int_equal(kv_incr(f->kv, "c", 1, -50, &v), 0);
    assert_int_equal(v, -8);
    assert_value(f, "c", "-8");

    /* A put of a decimal makes a counter; INT64_MIN's text parses. */
    assert_int_equal(put(f, "m", "-9223372036854775808"), 0);
    assert_int_equal(kv_incr(f->kv, "m", 1, 1, &v), 0);
    assert_int_equal(v, INT64_MIN + 1);
    assert_int_equal(kv_check(f->kv), 0);
}

static void table_incr_refuses_non_numbers_and_overflow(void **state)
{
    struct fx *f = *state;
    static const char *const not_numbers[] = {"", "abc", "+1", " 1", "1 ", "1x", "-",
                                              "--1", "12345678901234567890"};
    int64_t v = 12345;
    for (size_t i = 0; i < sizeof(not_numbers) / sizeof(not_numbers[0]); i++) {
        assert_int_equal(put(f, "n", not_numbers[i]), 0);
        int rv = kv_incr(f->kv, "n", 1, 1, &v);
        assert_true(rv == -EINVAL || rv == -ERANGE);
        assert_value(f, "n", not_numbers[i]); /* unchanged */
    }
    assert_int_equal(put(f, "n", "9223372036854775807"), 0);
    assert_int_equal(kv_incr(f->kv, "n", 1, 1, &v), -ERANGE);
    assert_value(f, "n", "9223372036854775807");
    assert_int_equal(put(f, "n", "9223372036854775808"), 0);
    assert_int_equal(kv_incr(f->kv, "n", 1, 0, &v), -ERANGE);
    assert_int_equal(put(f, "n", "-9223372036854775808"), 0);
    assert_int_equal(kv_incr(f->kv, "n", 1, -1, &v), -ERANGE);
    assert_int_equal(v, 12345); /* never written on failure */
    assert_int_equal(kv_check(f->kv), 0);
}

static void table_cas_swaps_only_on_match(void **state)
{
    struct fx *f = *state;
    assert_int_equal(kv_cas(f->kv, "k", 1, "a", 1, "b", 1), -ENOENT);
    assert_value(f, "k", NULL);
    assert_int_equal(put(f, "k", "a"), 0);
    assert_int_equal(kv_cas(f->kv, "k", 1, "x", 1, "b", 1), DVS_ECONFLICT);
    assert_int_equal(kv_cas(f->kv, "k", 1, "aa", 2, "b", 1), DVS_ECONFLICT);
    assert_int_equal(kv_cas(f->kv, "k", 1, "", 0, "b", 1), DVS_ECONFLICT);
    assert_value(f, "k", "a");
    assert_int_equal(kv_cas(f->kv, "k", 1, "a", 1, "bee", 3), 0);
    assert_value(f, "k", "bee");
    assert_int_equal(kv_cas(f->kv, "k", 1, "bee", 3, "", 0), 0);
    assert_value(f, "k", "");
    assert_int_equal(kv_cas(f->kv, "k", 1, "", 0, "again", 5), 0);
    assert_value(f, "k", "again");
    assert_int_equal(kv_check(f->kv), 0);
}

/* Growth: enough keys for several doublings; the invariants hold at every
 * step, including in the middle of a rehash, and every key stays found. */
static void table_grows_incrementally_and_keeps_every_key(void **state)
{
    struct fx *f = *state;
    enum { N = 20000 };
    char k[32], v[32];
    bool saw_rehash = false;
    for (int i = 0; i < N; i++) {
        snprintf(k, sizeof(k), "key-%d", i);
        snprintf(v, sizeof(v), "value-%d", i);
        assert_int_equal(put(f, k, v), 0);
        struct kv_stats st;
        kv_stats(f->kv, &st);
        saw_rehash |= st.rehashing != 0;
        if (i % 997 == 0 || (st.rehashing && i % 31 == 0))
            assert_int_equal(kv_check(f->kv), 0);
    }
    assert_true(saw_rehash);
    struct kv_stats st;
    kv_stats(f->kv, &st);
    assert_int_equal(st.keys, N);
    assert_true(st.buckets >= N / 2); /* it grew from 16 */
    for (int i = 0; i < N; i++) {
        snprintf(k, sizeof(k), "key-%d", i);
        snprintf(v, sizeof(v), "value-%d", i);
        assert_value(f, k, v);
    }
    /* Deleting half (writes also advance any rehash in progress). */
    for (int i = 0; i < N; i += 2) {
        snprintf(k, sizeof(k), "key-%d", i);
        assert_int_equal(kv_delete(f->kv, k, strlen(k)), 0);
    }
    assert_int_equal(kv_check(f->kv), 0);
    for (int i = 0; i < N; i++) {
        snprintf(k, sizeof(k), "key-%d", i);
        snprintf(v, sizeof(v), "value-%d", i);
        assert_value(f, k, i % 2 ? v : NULL);
    }
}

/* A full arena is an error the client sees, never a crash, and it leaves
 * the table exactly as it was. */
static void table_full_arena_returns_enospace_and_stays_intact(void **state)
{
    struct fx *f = *state;
    char k[32], v[101];
    memset(v, 'v', 100);
    v[100] = '\0';
    int n = 0, rv;
    for (;; n++) {
        snprintf(k, sizeof(k), "key-%d", n);
        rv = put(f, k, v);
        if (rv != 0)
            break;
        assert_true(n < 100000);
    }
    assert_int_equal(rv, DVS_ENOSPACE);
    assert_true(n > 50);
    assert_int_equal(kv_check(f->kv), 0);
    assert_value(f, k, NULL); /* the failed insert left nothing behind */

    /* Every earlier key is intact; growing a value fails, keeping the old. */
    for (int i = 0; i < n; i++) {
        snprintf(k, sizeof(k), "key-%d", i);
        assert_value(f, k, v);
    }
    char *huge = malloc(32 << 10);
    assert_non_null(huge);
    memset(huge, 'h', 32 << 10);
    assert_int_equal(kv_put(f->kv, "key-0", 5, huge, 32 << 10), DVS_ENOSPACE);
    assert_value(f, "key-0", v);
    assert_int_equal(kv_cas(f->kv, "key-0", 5, v, 100, huge, 32 << 10), DVS_ENOSPACE);
    assert_value(f, "key-0", v);
    free(huge);

    /* Fill the last crumbs with counters until even those fail. */
    int64_t c;
    for (int i = 0;; i++) {
        snprintf(k, sizeof(k), "c%d", i);
        rv = kv_incr(f->kv, k, strlen(k), 1, &c);
        if (rv != 0)
            break;
    }
    assert_int_equal(rv, DVS_ENOSPACE);
    assert_int_equal(kv_check(f->kv), 0);

    /* Room made is room usable. */
    for (int i = 0; i < 10; i++) {
        snprintf(k, sizeof(k), "key-%d", i);
        assert_int_equal(kv_delete(f->kv, k, strlen(k)), 0);
    }
    assert_int_equal(put(f, "fresh", "value"), 0);
    assert_value(f, "fresh", "value");
    assert_int_equal(kv_check(f->kv), 0);
}

/* The heart of the example: a copy of the arena's bytes, mapped at the
 * same address by someone else, holds the same table, found via the root,
 * and goes on working. Copied in the middle of a rehash, the hardest case. */
static void table_survives_copy_to_new_arena_via_root(void **state)
{
    struct fx *f = *state;
    char k[32], v[32];
    int n = 0;
    struct kv_stats st;
    do {
        snprintf(k, sizeof(k), "key-%d", n);
        snprintf(v, sizeof(v), "value-%d", n);
        assert_int_equal(put(f, k, v), 0);
        n++;
        kv_stats(f->kv, &st);
    } while (!(st.rehashing && n > 1000));
    int64_t c;
    for (int i = 0; i < 5; i++)
        assert_int_equal(kv_incr(f->kv, "counter", 7, 1, &c), 0);
    kv_count_request(f->kv);
    struct kv_stats before;
    kv_stats(f->kv, &before);

    migrate(f);

    assert_int_equal(kv_check(f->kv), 0);
    struct kv_stats after;
    kv_stats(f->kv, &after);
    assert_int_equal(after.keys, before.keys);
    assert_int_equal(after.key_bytes, before.key_bytes);
    assert_int_equal(after.value_bytes, before.value_bytes);
    assert_int_equal(after.buckets, before.buckets);
    assert_int_equal(after.rehashing, 1);
    assert_int_equal(after.requests, before.requests);
    assert_int_equal(after.arena_used, before.arena_used);
    for (int i = 0; i < n; i++) {
        snprintf(k, sizeof(k), "key-%d", i);
        snprintf(v, sizeof(v), "value-%d", i);
        assert_value(f, k, v);
    }
    assert_value(f, "counter", "5");

    /* It keeps working on the new side, rehash included. */
    assert_int_equal(kv_incr(f->kv, "counter", 7, 1, &c), 0);
    assert_int_equal(c, 6);
    for (int i = n; i < n + 3000; i++) {
        snprintf(k, sizeof(k), "key-%d", i);
        assert_int_equal(put(f, k, "after"), 0);
    }
    assert_int_equal(kv_check(f->kv), 0);
    assert_value(f, "key-0", "value-0");
    assert_value(f, "key-1000", "value-1000");

    /* And a second hop. */
    migrate(f);
    assert_int_equal(kv_check(f->kv), 0);
    snprintf(k, sizeof(k), "key-%d", n + 2999);
    assert_value(f, k, "after");
    assert_value(f, "counter", "6");
}

/* Another service's arena (or garbage at the root) is refused, not used. */
static void table_refuses_a_root_that_is_not_a_kv_table(void **state)
{
    struct fx *f = *state;
    uint64_t *other = dvs_arena_calloc(f->arena, 1, 256);
    assert_non_null(other);
    other[0] = 0x1234;
    assert_int_equal(dvs_arena_set_root(f->arena, other), 0);
    struct kv *kv2 = NULL;
    assert_int_equal(kv_open(f->arena, test_seed, &kv2, NULL), DVS_EPROTO);
    assert_null(kv2);
}

/* ===========================================================================
 * The wire format
 */

static size_t enc(const struct kv_request *r, uint8_t *buf, size_t cap)
{
    size_t len = 0;
    assert_int_equal(kv_request_encode(r, buf, cap, &len), 0);
    return len;
}

static void request_roundtrip_every_op(void **state)
{
    (void)state;
    uint8_t buf[256];
    struct kv_request in, out;
    const char *why = NULL;

    in = (struct kv_request){.op = KV_OP_PUT, .key = (const uint8_t *)"key", .key_len = 3,
                             .a = (const uint8_t *)"value", .a_len = 5};
    size_t n = enc(&in, buf, sizeof(buf));
    assert_int_equal(n, KV_REQ_HDR + 8);
    assert_int_equal(kv_request_parse(buf, n, &out, &why), 0);
    assert_int_equal(out.op, KV_OP_PUT);
    assert_int_equal(out.key_len, 3);
    assert_memory_equal(out.key, "key", 3);
    assert_int_equal(out.a_len, 5);
    assert_memory_equal(out.a, "value", 5);
    assert_int_equal(out.b_len, 0);

    in = (struct kv_request){.op = KV_OP_INCR, .key = (const uint8_t *)"c", .key_len = 1,
                             .delta = -42};
    n = enc(&in, buf, sizeof(buf));
    assert_int_equal(kv_request_parse(buf, n, &out, &why), 0);
    assert_int_equal(out.delta, -42);

    in = (struct kv_request){.op = KV_OP_CAS, .key = (const uint8_t *)"k", .key_len = 1,
                             .a = (const uint8_t *)"old", .a_len = 3,
                             .b = (const uint8_t *)"new!", .b_len = 4};
    n = enc(&in, buf, sizeof(buf));
    assert_int_equal(kv_request_parse(buf, n, &out, &why), 0);
    assert_memory_equal(out.a, "old", 3);
    assert_int_equal(out.b_len, 4);
    assert_memory_equal(out.b, "new!", 4);

    in = (struct kv_request){.op = KV_OP_SPIN, .ms = 250};
    n = enc(&in, buf, sizeof(buf));
    assert_int_equal(kv_request_parse(buf, n, &out, &why), 0);
    assert_int_equal(out.ms, 250);
    assert_null(out.key);

    static const uint8_t ops[] = {KV_OP_GET, KV_OP_DELETE};
    for (size_t i = 0; i < sizeof(ops); i++) {
        in = (struct kv_request){.op = ops[i], .key = (const uint8_t *)"k", .key_len = 1};
        n = enc(&in, buf, sizeof(buf));
        assert_int_equal(n, KV_REQ_HDR + 1);
        assert_int_equal(kv_request_parse(buf, n, &out, &why), 0);
        assert_int_equal(out.op, ops[i]);
    }
    in = (struct kv_request){.op = KV_OP_STATS};
    n = enc(&in, buf, sizeof(buf));
    assert_int_equal(n, KV_REQ_HDR);
    assert_int_equal(kv_request_parse(buf, n, &out, &why), 0);

    /* The layout is the documented one, byte for byte. */
    in = (struct kv_request){.op = KV_OP_PUT, .key = (const uint8_t *)"k", .key_len = 1,
                             .a = (const uint8_t *)"vv", .a_len = 2};
    n = enc(&in, buf, sizeof(buf));
    static const uint8_t want[] = {1, 1, 1, 0, 2, 0, 0, 0, 0, 0, 0, 0, 'k', 'v', 'v'};
    assert_int_equal(n, sizeof(want));
    assert_memory_equal(buf, want, sizeof(want));
}

static void expect_bad(const void *buf, size_t len)
{
    struct kv_request out;
    memset(&out, 0xAB, sizeof(out));
    struct kv_request untouched = out;
    const char *why = NULL;
    assert_int_equal(kv_request_parse(buf, len, &out, &why), DVS_EBADREQUEST);
    assert_non_null(why);
    assert_memory_equal(&out, &untouched, sizeof(out));
}

static void request_truncated_is_rejected(void **state)
{
    (void)state;
    uint8_t buf[64];
    struct kv_request in = {.op = KV_OP_CAS, .key = (const uint8_t *)"key", .key_len = 3,
                            .a = (const uint8_t *)"a", .a_len = 1,
                            .b = (const uint8_t *)"bb", .b_len = 2};
    size_t n = enc(&in, buf, sizeof(buf));
    for (size_t len = 0; len < n; len++)
        expect_bad(buf, len);
    expect_bad(NULL, 0);
    struct kv_request out;
    assert_int_equal(kv_request_parse(buf, n, &out, NULL), 0);
}

static void request_oversized_is_rejected(void **state)
{
    (void)state;
    uint8_t *buf = calloc(1, DVS_MAX_PAYLOAD + 64);
    assert_non_null(buf);
    struct kv_request in = {.op = KV_OP_PUT, .key = (const uint8_t *)"k", .key_len = 1,
                            .a = (const uint8_t *)"v", .a_len = 1};
    size_t n = enc(&in, buf, 64);

    /* Trailing bytes after the declared lengths. */
    expect_bad(buf, n + 1);

    /* Lengths that promise more than arrived, up to the field's maximum. */
    uint8_t h[KV_REQ_HDR + 4];
    memcpy(h, buf, sizeof(h));
    kv_put_u32(h + 4, UINT32_MAX);
    expect_bad(h, sizeof(h));
    memcpy(h, buf, sizeof(h));
    kv_put_u32(h + 8, UINT32_MAX);
    expect_bad(h, sizeof(h));
    memcpy(h, buf, sizeof(h));
    kv_put_u16(h + 2, UINT16_MAX);
    expect_bad(h, sizeof(h));

    /* A key over KV_MAX_KEY, even when all its bytes are there. */
    buf[0] = KV_PROTO_VERSION;
    buf[1] = KV_OP_GET;
    kv_put_u16(buf + 2, KV_MAX_KEY + 1);
    kv_put_u32(buf + 4, 0);
    kv_put_u32(buf + 8, 0);
    memset(buf + KV_REQ_HDR, 'k', KV_MAX_KEY + 1);
    expect_bad(buf, KV_REQ_HDR + KV_MAX_KEY + 1);
    kv_put_u16(buf + 2, KV_MAX_KEY);
    struct kv_request out;
    assert_int_equal(kv_request_parse(buf, KV_REQ_HDR + KV_MAX_KEY, &out, NULL), 0);

    /* A value over KV_MAX_VALUE, all there. */
    buf[1] = KV_OP_PUT;
    kv_put_u16(buf + 2, 1);
    kv_put_u32(buf + 4, KV_MAX_VALUE + 1);
    expect_bad(buf, KV_REQ_HDR + 1 + KV_MAX_VALUE + 1);
    kv_put_u32(buf + 4, KV_MAX_VALUE);
    assert_int_equal(kv_request_parse(buf, KV_REQ_HDR + 1 + KV_MAX_VALUE, &out, NULL), 0);

    /* A spin beyond its bound. */
    in = (struct kv_request){.op = KV_OP_SPIN, .ms = 1};
    n = enc(&in, buf, 64);
    kv_put_u32(buf + KV_REQ_HDR, KV_MAX_SPIN_MS + 1);
    expect_bad(buf, n);
    free(buf);

    /* And the encoder will not build any of these. */
    in = (struct kv_request){.op = KV_OP_SPIN, .ms = KV_MAX_SPIN_MS + 1};
    assert_int_equal(kv_request_size(&in), 0);
    in = (struct kv_request){.op = KV_OP_GET, .key = (const uint8_t *)"k", .key_len = 0};
    assert_int_equal(kv_request_size(&in), 0);
    in.key_len = KV_MAX_KEY + 1;
    assert_int_equal(kv_request_size(&in), 0);
    in = (struct kv_request){.op = KV_OP_PUT, .key = (const uint8_t *)"k", .key_len = 1,
                             .a_len = (size_t)KV_MAX_VALUE + 1};
    assert_int_equal(kv_request_size(&in), 0);
    uint8_t small[8];
    in = (struct kv_request){.op = KV_OP_GET, .key = (const uint8_t *)"k", .key_len = 1};
    size_t len;
    assert_int_equal(kv_request_encode(&in, small, sizeof(small), &len), -ENOBUFS);
}

static void request_with_wrong_shape_is_rejected(void **state)
{
    (void)state;
    uint8_t b[KV_REQ_HDR + 16];
    memset(b, 'x', sizeof(b));
    b[0] = KV_PROTO_VERSION;
    struct {
        uint8_t version, op;
        uint16_t key;
        uint32_t a, b;
    } cases[] = {
        {KV_PROTO_VERSION, 0, 1, 0, 0},             /* unknown ops */
        {KV_PROTO_VERSION, 8, 1, 0, 0},
        {KV_PROTO_VERSION, 255, 1, 0, 0},
        {2, KV_OP_GET, 1, 0, 0},                    /* unknown version */
        {0, KV_OP_GET, 1, 0, 0},
        {KV_PROTO_VERSION, KV_OP_GET, 0, 0, 0},     /* empty key */
        {KV_PROTO_VERSION, KV_OP_PUT, 0, 1, 0},
        {KV_PROTO_VERSION, KV_OP_GET, 1, 1, 0},     /* get with a value */
        {KV_PROTO_VERSION, KV_OP_DELETE, 1, 0, 1},
        {KV_PROTO_VERSION, KV_OP_PUT, 1, 1, 1},     /* put with two values */
        {KV_PROTO_VERSION, KV_OP_INCR, 1, 4, 0},    /* delta not 8 bytes */
        {KV_PROTO_VERSION, KV_OP_INCR, 1, 0, 0},
        {KV_PROTO_VERSION, KV_OP_SPIN, 1, 4, 0},    /* spin with a key */
        {KV_PROTO_VERSION, KV_OP_SPIN, 0, 8, 0},
        {KV_PROTO_VERSION, KV_OP_STATS, 1, 0, 0},   /* stats with a key */
        {KV_PROTO_VERSION, KV_OP_STATS, 0, 1, 0},
    };
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        b[0] = cases[i].version;
        b[1] = cases[i].op;
        kv_put_u16(b + 2, cases[i].key);
        kv_put_u32(b + 4, cases[i].a);
        kv_put_u32(b + 8, cases[i].b);
        expect_bad(b, KV_REQ_HDR + cases[i].key + cases[i].a + cases[i].b);
    }
}

/* Random bytes and random mutations of valid requests: the parser never
 * reads out of bounds (ASan watches), and whatever it accepts is canonical:
 * encoding the result gives back exactly the input. */
static void request_garbage_is_rejected_or_canonical(void **state)
{
    (void)state;
    uint64_t s = 42;
    uint8_t seedreq[64], buf[96], again[96];
    struct kv_request in = {.op = KV_OP_CAS, .key = (const uint8_t *)"key", .key_len = 3,
                            .a = (const uint8_t *)"aa", .a_len = 2,
                            .b = (const uint8_t *)"b", .b_len = 1};
    size_t seedlen = enc(&in, seedreq, sizeof(seedreq));
    size_t accepted = 0;
    for (int iter = 0; iter < 200000; iter++) {
        s = s * UINT64_C(6364136223846793005) + UINT64_C(1442695040888963407);
        size_t len;
        if (iter % 2) {
            len = (size_t)(s >> 33) % sizeof(buf);
            for (size_t i = 0; i < len; i++) {
                s = s * UINT64_C(6364136223846793005) + 1;
                buf[i] = (uint8_t)(s >> 56);
            }
            if (len > 0 && iter % 4 == 1)
                buf[0] = KV_PROTO_VERSION; /* get past the first check */
        } else {
            memcpy(buf, seedreq, seedlen);
            len = seedlen;
            int flips = 1 + (int)((s >> 40) % 3);
            for (int k = 0; k < flips; k++) {
                s = s * UINT64_C(6364136223846793005) + 1;
                buf[(s >> 33) % seedlen] = (uint8_t)(s >> 56);
            }
            if ((s >> 20) % 4 == 0)
                len = (size_t)((s >> 24) % (seedlen + 8));
        }
        struct kv_request out;
        if (kv_request_parse(buf, len, &out, NULL) != 0)
            continue;
        accepted++;
        size_t n;
        assert_int_equal(kv_request_encode(&out, again, sizeof(again), &n), 0);
        assert_int_equal(n, len);
        assert_memory_equal(again, buf, len);
    }
    assert_true(accepted > 0);
}

static void reply_parse_rejects_malformed(void **state)
{
    (void)state;
    uint8_t b[16];
    struct kv_reply r;
    kv_reply_header(b, KV_OK, 3);
    memcpy(b + KV_REPLY_HDR, "abc", 3);
    assert_int_equal(kv_reply_parse(b, KV_REPLY_HDR + 3, &r), 0);
    assert_int_equal(r.status, KV_OK);
    assert_int_equal(r.value_len, 3);
    assert_memory_equal(r.value, "abc", 3);
    assert_int_equal(kv_reply_parse(b, KV_REPLY_HDR + 2, &r), DVS_EPROTO);
    assert_int_equal(kv_reply_parse(b, KV_REPLY_HDR + 4, &r), DVS_EPROTO);
    assert_int_equal(kv_reply_parse(b, 4, &r), DVS_EPROTO);
    assert_int_equal(kv_reply_parse(NULL, 0, &r), DVS_EPROTO);
    b[0] = 9;
    assert_int_equal(kv_reply_parse(b, KV_REPLY_HDR + 3, &r), DVS_EPROTO);
}

static void stats_roundtrip_and_tolerate_other_versions(void **state)
{
    (void)state;
    struct kv_stats in, out;
    uint64_t *p = (uint64_t *)&in;
    for (size_t i = 0; i < KV_STATS_COUNT; i++)
        p[i] = (uint64_t)i * 1000 + 1;
    uint8_t buf[KV_STATS_COUNT * 8 + 8];
    kv_stats_encode(&in, buf);
    assert_int_equal(kv_stats_decode(buf, KV_STATS_COUNT * 8, &out), 0);
    assert_memory_equal(&in, &out, sizeof(in));
    /* A newer server's extra field is ignored; an older one's missing are 0. */
    assert_int_equal(kv_stats_decode(buf, KV_STATS_COUNT * 8 + 8, &out), 0);
    assert_memory_equal(&in, &out, sizeof(in));
    assert_int_equal(kv_stats_decode(buf, 16, &out), 0);
    assert_int_equal(out.keys, in.keys);
    assert_int_equal(out.key_bytes, in.key_bytes);
    assert_int_equal(out.free_blocks, 0);
    assert_int_equal(kv_stats_decode(buf, 12, &out), DVS_EPROTO);
}

/* ===========================================================================
 * The handler, called as dvs_server_run calls it
 */

static int call(struct fx *f, const struct kv_request *req, struct kv_reply *rep)
{
    size_t len;
    assert_int_equal(kv_request_encode(req, f->req, DVS_MAX_PAYLOAD, &len), 0);
    size_t reply_len = DVS_MAX_PAYLOAD;
    int rv = kv_service_handle(&f->svc, f->req, len, f->reply, &reply_len);
    if (rv == 0)
        assert_int_equal(kv_reply_parse(f->reply, reply_len, rep), 0);
    return rv;
}

#define KEY(s) .key = (const uint8_t *)(s), .key_len = strlen(s)
#define VAL_A(s) .a = (const uint8_t *)(s), .a_len = strlen(s)
#define VAL_B(s) .b = (const uint8_t *)(s), .b_len = strlen(s)

static void handler_executes_each_op(void **state)
{
    struct fx *f = *state;
    struct kv_reply r;

    assert_int_equal(call(f, &(struct kv_request){.op = KV_OP_GET, KEY("k")}, &r), 0);
    assert_int_equal(r.status, KV_NOTFOUND);
    assert_int_equal(call(f, &(struct kv_request){.op = KV_OP_PUT, KEY("k"), VAL_A("v1")}, &r),
                     0);
    assert_int_equal(r.status, KV_OK);
    assert_int_equal(r.value_len, 0);
    assert_int_equal(call(f, &(struct kv_request){.op = KV_OP_GET, KEY("k")}, &r), 0);
    assert_int_equal(r.status, KV_OK);
    assert_int_equal(r.value_len, 2);
    assert_memory_equal(r.value, "v1", 2);

    assert_int_equal(
        call(f, &(struct kv_request){.op = KV_OP_CAS, KEY("k"), VAL_A("zz"), VAL_B("v2")}, &r),
        0);
    assert_int_equal(r.status, KV_MISMATCH);
    assert_int_equal(r.value_len, 2);
    assert_memory_equal(r.value, "v1", 2);
    assert_int_equal(
        call(f, &(struct kv_request){.op = KV_OP_CAS, KEY("k"), VAL_A("v1"), VAL_B("v2")}, &r),
        0);
    assert_int_equal(r.status, KV_OK);
    assert_int_equal(
        call(f, &(struct kv_request){.op = KV_OP_CAS, KEY("nope"), VAL_A("a"), VAL_B("b")}, &r),
        0);
    assert_int_equal(r.status, KV_NOTFOUND);

    assert_int_equal(call(f, &(struct kv_request){.op = KV_OP_INCR, KEY("c"), .delta = 5}, &r),
                     0);
    assert_int_equal(r.status, KV_OK);
    assert_int_equal(r.value_len, 8);
    assert_int_equal((int64_t)kv_get_u64(r.value), 5);
    assert_int_equal(call(f, &(struct kv_request){.op = KV_OP_INCR, KEY("k"), .delta = 1}, &r),
                     0);
    assert_int_equal(r.status, KV_NOTNUMBER);
    assert_memory_equal(r.value, "v2", 2);

    assert_int_equal(call(f, &(struct kv_request){.op = KV_OP_DELETE, KEY("k")}, &r), 0);
    assert_int_equal(r.status, KV_OK);
    assert_int_equal(call(f, &(struct kv_request){.op = KV_OP_DELETE, KEY("k")}, &r), 0);
    assert_int_equal(r.status, KV_NOTFOUND);

    assert_int_equal(call(f, &(struct kv_request){.op = KV_OP_SPIN, .ms = 0}, &r), 0);
    assert_int_equal(r.status, KV_OK);

    assert_int_equal(call(f, &(struct kv_request){.op = KV_OP_STATS}, &r), 0);
    assert_int_equal(r.status, KV_OK);
    struct kv_stats st;
    assert_int_equal(kv_stats_decode(r.value, r.value_len, &st), 0);
    assert_int_equal(st.keys, 1);
    assert_int_equal(st.generation, 7);
    assert_int_equal(st.requests, 12); /* every request above, this one included */
    assert_int_equal(st.arena_size, TEST_ARENA_SIZE);
    assert_true(st.arena_used > 0 && st.arena_free > 0);
}

static void handler_rejects_malformed_without_touching_the_table(void **state)
{
    struct fx *f = *state;
    struct kv_reply r;
    assert_int_equal(call(f, &(struct kv_request){.op = KV_OP_PUT, KEY("k"), VAL_A("v")}, &r),
                     0);
    struct kv_stats before, after;
    kv_stats(f->kv, &before);

    static const uint8_t garbage[][16] = {
        {0},
        {KV_PROTO_VERSION, KV_OP_DELETE, 1, 0, 0, 0, 0, 0, 0, 0, 0, 0}, /* key missing */
        {KV_PROTO_VERSION, KV_OP_PUT, 1, 0, 255, 255, 255, 255, 0, 0, 0, 0, 'k'},
        {'G', 'E', 'T', ' ', 'k', '\n'},
    };
    for (size_t i = 0; i < sizeof(garbage) / sizeof(garbage[0]); i++) {
        size_t reply_len = DVS_MAX_PAYLOAD;
        assert_int_equal(kv_service_handle(&f->svc, garbage[i], KV_REQ_HDR, f->reply,
                                           &reply_len),
                         DVS_EBADREQUEST);
    }
    size_t reply_len = DVS_MAX_PAYLOAD;
    assert_int_equal(kv_service_handle(&f->svc, "", 0, f->reply, &reply_len), DVS_EBADREQUEST);

    kv_stats(f->kv, &after);
    assert_int_equal(after.requests, before.requests);
    assert_int_equal(after.keys, 1);
    assert_value(f, "k", "v");
}

static uint64_t thread_cpu_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_THREAD_CPUTIME_ID, &ts);
    return (uint64_t)ts.tv_sec * 1000000000u + (uint64_t)ts.tv_nsec;
}

static void handler_spin_burns_the_cpu_it_is_asked_for(void **state)
{
    struct fx *f = *state;
    struct kv_reply r;
    uint64_t t0 = thread_cpu_ns();
    assert_int_equal(call(f, &(struct kv_request){.op = KV_OP_SPIN, .ms = 30}, &r), 0);
    uint64_t burnt = thread_cpu_ns() - t0;
    assert_int_equal(r.status, KV_OK);
    assert_true(burnt >= 30000000u);
    assert_true(burnt < 2000000000u);
}

static void handler_full_arena_answers_enospace(void **state)
{
    struct fx *f = *state;
    struct kv_reply r;
    char *big = malloc(TEST_SMALL_ARENA);
    assert_non_null(big);
    memset(big, 'b', TEST_SMALL_ARENA);
    struct kv_request req = {.op = KV_OP_PUT, KEY("big"), .a = (const uint8_t *)big,
                             .a_len = TEST_SMALL_ARENA};
    assert_int_equal(call(f, &req, &r), DVS_ENOSPACE);
    assert_value(f, "big", NULL);
    req.a_len = 100;
    assert_int_equal(call(f, &req, &r), 0);
    assert_int_equal(r.status, KV_OK);
    free(big);
    assert_int_equal(kv_check(f->kv), 0);
}

/* ===========================================================================
 * Histories and the checker
 */

struct finals {
    const char *const *kv; /* key, value (NULL: absent), ..., NULL */
    int calls;
};

static int final_from_table(void *data, const char *key, char **ret_value)
{
    struct finals *fs = data;
    fs->calls++;
    for (const char *const *p = fs->kv; *p; p += 2) {
        if (strcmp(p[0], key) == 0) {
            if (p[1] == NULL)
                return -ENOENT;
            *ret_value = strdup(p[1]);
            return 0;
        }
    }
    return -ENOENT;
}

static struct kv_history *read_history(const char *text)
{
    FILE *f = fmemopen((void *)text, strlen(text), "r");
    assert_non_null(f);
    struct kv_history *h = NULL;
    char err[256];
    int rv = kv_history_read(f, "test", &h, err, sizeof(err));
    fclose(f);
    if (rv != 0)
        fail_msg("history rejected: %s", err);
    return h;
}

/* Check text against finals; return the number of violations. */
static size_t check(const char *text, const char *const *finals_kv,
                    struct kv_check_summary *ret)
{
    struct kv_history *h = read_history(text);
    struct finals fs = {finals_kv, 0};
    struct kv_check_summary sum;
    char *report = NULL;
    size_t report_len = 0;
    FILE *out = open_memstream(&report, &report_len);
    assert_non_null(out);
    assert_int_equal(kv_history_check(h, finals_kv ? final_from_table : NULL, &fs, out, &sum),
                     0);
    fclose(out);
    /* The report names what was wrong; the test only counts. */
    if (getenv("KV_TEST_VERBOSE") != NULL && sum.violations > 0)
        fprintf(stderr, "# report:\n%s", report);
    free(report);
    kv_history_free(h);
    if (ret)
        *ret = sum;
    return sum.violations;
}

static const char clean_history[] =
    "# dvs-kv history v1 endpoint=kv2 threads=2\n"
    "invoke 0 put k1 a 100\n"
    "invoke 1 get k1 nil 110\n"
    "ok 0 put k1 a 200\n"
    "ok 1 get k1 nil 210\n" /* concurrent with the put: may miss it */
    "invoke 0 put k1 b 300\n"
    "ok 0 put k1 b 400\n"
    "invoke 1 get k1 nil 500\n"
    "ok 1 get k1 b 600\n"
    "invoke 0 incr c1 1 700\n"
    "ok 0 incr c1 1 800\n"
    "invoke 1 incr c1 1 810\n"
    "invoke 0 get c1 nil 820\n"
    "ok 0 get c1 1 830\n"
    "ok 1 incr c1 2 900\n"
    "invoke 0 put k2 x 950\n"
    "fail 0 put k2 x 960 DVS_ENOSPACE\n";

static void history_clean_run_passes(void **state)
{
    (void)state;
    static const char *const finals[] = {"k1", "b", "c1", "2", "k2", NULL, NULL};
    struct kv_check_summary sum;
    assert_int_equal(check(clean_history, finals, &sum), 0);
    assert_int_equal(sum.keys, 3);
    assert_int_equal(sum.registers, 2);
    assert_int_equal(sum.counters, 1);
    assert_int_equal(sum.reads, 3);
    assert_int_equal(sum.finals, 2); /* k2's only write failed: nothing to look up */

    struct kv_history *h = read_history(clean_history);
    assert_string_equal(kv_history_endpoint(h), "kv2");
    assert_int_equal(kv_history_ops(h), 8);
    kv_history_free(h);
}

static void history_detects_a_lost_write(void **state)
{
    (void)state;
    static const char *const older[] = {"k1", "a", "c1", "2", NULL};
    static const char *const absent[] = {"k1", NULL, "c1", "2", NULL};
    static const char *const never[] = {"k1", "zzz", "c1", "2", NULL};
    assert_int_equal(check(clean_history, older, NULL), 1);
    assert_int_equal(check(clean_history, absent, NULL), 1);
    assert_int_equal(check(clean_history, never, NULL), 1);
}

static void history_detects_a_stale_read(void **state)
{
    (void)state;
    static const char h[] = "invoke 0 put k a 1\n"
                            "ok 0 put k a 2\n"
                            "invoke 0 put k b 3\n"
                            "ok 0 put k b 4\n"
                            "invoke 1 get k nil 5\n"
                            "ok 1 get k a 6\n"   /* b was acknowledged before: stale */
                            "invoke 1 get k nil 7\n"
                            "ok 1 get k nil 8\n" /* absent after acknowledged writes */
                            "invoke 1 get k nil 9\n"
                            "ok 1 get k q 10\n"; /* never written */
    static const char *const finals[] = {"k", "b", NULL};
    assert_int_equal(check(h, finals, NULL), 3);

    /* A read that returns a put that began only after it ended. */
    static const char future[] = "invoke 1 get k nil 1\n"
                                 "ok 1 get k a 2\n"
                                 "invoke 0 put k a 3\n"
                                 "ok 0 put k a 4\n";
    assert_int_equal(check(future, NULL, NULL), 1);
}

static void history_detects_lost_and_duplicated_increments(void **state)
{
    (void)state;
    static const char h[] = "invoke 0 incr c 1 1\n"
                            "ok 0 incr c 1 2\n"
                            "invoke 0 incr c 1 3\n"
                            "ok 0 incr c 2 4\n"
                            "invoke 0 incr c 1 5\n"
                            "ok 0 incr c 3 6\n";
    static const char *const exact[] = {"c", "3", NULL};
    static const char *const lost[] = {"c", "2", NULL};
    static const char *const dup[] = {"c", "4", NULL};
    static const char *const gone[] = {"c", NULL, NULL};
    assert_int_equal(check(h, exact, NULL), 0);
    assert_int_equal(check(h, lost, NULL), 1);
    assert_int_equal(check(h, dup, NULL), 1);
    assert_int_equal(check(h, gone, NULL), 1);

    /* Two acknowledged increments with one result: one was lost. */
    static const char same[] = "invoke 0 incr c 1 1\n"
                               "invoke 1 incr c 1 2\n"
                               "ok 0 incr c 1 3\n"
                               "ok 1 incr c 1 4\n";
    static const char *const two[] = {"c", "2", NULL};
    assert_int_equal(check(same, two, NULL), 1);

    /* Reads of a counter: stale, and ahead of what was sent. */
    static const char reads[] = "invoke 0 incr c 1 1\n"
                                "ok 0 incr c 1 2\n"
                                "invoke 1 get c nil 3\n"
                                "ok 1 get c nil 4\n"  /* 0 < 1 acknowledged */
                                "invoke 1 get c nil 5\n"
                                "ok 1 get c 2 6\n";   /* 2 > 1 sent */
    static const char *const one[] = {"c", "1", NULL};
    assert_int_equal(check(reads, one, NULL), 2);
}

/* An operation of unknown outcome may or may not have happened: both are
 * accepted, but nothing beyond. */
static void history_indeterminate_operations_widen_what_is_allowed(void **state)
{
    (void)state;
    static const char h[] = "invoke 0 put k a 1\n"
                            "ok 0 put k a 2\n"
                            "invoke 0 put k b 3\n"
                            "info 0 put k b 4 DVS_ETIMEOUT\n"
                            "invoke 2 incr c 1 5\n"
                            "ok 2 incr c 1 6\n"
                            "invoke 2 incr c 1 7\n"
                            "info 2 incr c 1 8 DVS_EUNKNOWNOUTCOME\n"
                            "invoke 4 incr c 1 9\n"; /* never completed */
    static const char *const took[] = {"k", "b", "c", "3", NULL};
    static const char *const did_not[] = {"k", "a", "c", "1", NULL};
    static const char *const too_many[] = {"k", "a", "c", "4", NULL};
    assert_int_equal(check(h, took, NULL), 0);
    assert_int_equal(check(h, did_not, NULL), 0);
    assert_int_equal(check(h, too_many, NULL), 1);
}

static void history_offline_check_reads_no_finals(void **state)
{
    (void)state;
    struct kv_check_summary sum;
    assert_int_equal(check(clean_history, NULL, &sum), 0);
    assert_int_equal(sum.finals, 0);
    assert_int_equal(sum.reads, 3);
}

static void expect_history_error(const char *text, const char *needle)
{
    FILE *f = fmemopen((void *)text, strlen(text), "r");
    assert_non_null(f);
    struct kv_history *h = NULL;
    char err[256] = "";
    assert_int_equal(kv_history_read(f, "h.txt", &h, err, sizeof(err)), -EINVAL);
    fclose(f);
    assert_null(h);
    if (strstr(err, needle) == NULL)
        fail_msg("error \"%s\" does not mention \"%s\"", err, needle);
}

static void history_malformed_is_rejected_with_the_line(void **state)
{
    (void)state;
    expect_history_error("ok 0 put k a 1\n", "h.txt:1: ok for process 0");
    expect_history_error("invoke 0 put k a 1\ninvoke 0 get k nil 2\n", "h.txt:2:");
    expect_history_error("invoke 0 put k a 1\nok 0 get k a 2\n", "does not match");
    expect_history_error("invoke 0 put k a 1\nok 0 put j a 2\n", "does not match");
    expect_history_error("invoke 0 put k a 5\nok 0 put k a 4\n", "goes back");
    expect_history_error("begin 0 put k a 1\n", "unknown event type");
    expect_history_error("invoke 0 swap k a 1\n", "unknown op");
    expect_history_error("invoke x put k a 1\n", "bad process");
    expect_history_error("invoke 0 put k a\n", "fields");
    expect_history_error("invoke 0 put k a 1 2 3\n", "fields");
    expect_history_error("invoke 0 put k a 1 ERR\n", "error field");
    expect_history_error("invoke 0 incr k one 1\n", "not an integer");
    expect_history_error("invoke 0 incr k 1 1\nok 0 incr k two 2\n", "not an integer");
    expect_history_error("invoke 0 put k nil 1\n", "put of nil");
    expect_history_error("invoke 0 put k a 1\nok 0 put k b 2\n", "differs");

    char *long_line = malloc(KV_HISTORY_MAX_LINE + 100);
    assert_non_null(long_line);
    memset(long_line, 'x', KV_HISTORY_MAX_LINE + 98);
    long_line[KV_HISTORY_MAX_LINE + 98] = '\n';
    long_line[KV_HISTORY_MAX_LINE + 99] = '\0';
    expect_history_error(long_line, "longer than");
    free(long_line);
}

static void history_error_classes(void **state)
{
    (void)state;
    assert_true(kv_hist_error_is_definite(DVS_ENOSPACE));
    assert_true(kv_hist_error_is_definite(DVS_EBADREQUEST));
    assert_false(kv_hist_error_is_definite(DVS_ETIMEOUT));
    assert_false(kv_hist_error_is_definite(DVS_EUNKNOWNOUTCOME));
    assert_false(kv_hist_error_is_definite(-ECONNRESET));
    assert_false(kv_hist_error_is_definite(DVS_EPROTO));
}

int main(void)
{
#define T(name) cmocka_unit_test(name)
#define TF(name) cmocka_unit_test_setup_teardown(name, fx_setup, fx_teardown)
#define TS(name) cmocka_unit_test_setup_teardown(name, fx_setup_small, fx_teardown)
    const struct CMUnitTest tests[] = {
        T(siphash_matches_reference_vectors),
        TF(table_put_get_delete_roundtrip),
        TF(table_overwrite_replaces_value_and_accounts_bytes),
        TF(table_refuses_keys_and_values_out_of_bounds),
        TF(table_incr_keeps_decimal_counters),
        TF(table_incr_refuses_non_numbers_and_overflow),
        TF(table_cas_swaps_only_on_match),
        TF(table_grows_incrementally_and_keeps_every_key),
        TS(table_full_arena_returns_enospace_and_stays_intact),
        TF(table_survives_copy_to_new_arena_via_root),
        TF(table_refuses_a_root_that_is_not_a_kv_table),
        T(request_roundtrip_every_op),
        T(request_truncated_is_rejected),
        T(request_oversized_is_rejected),
        T(request_with_wrong_shape_is_rejected),
        T(request_garbage_is_rejected_or_canonical),
        T(reply_parse_rejects_malformed),
        T(stats_roundtrip_and_tolerate_other_versions),
        TF(handler_executes_each_op),
        TF(handler_rejects_malformed_without_touching_the_table),
        TF(handler_spin_burns_the_cpu_it_is_asked_for),
        TS(handler_full_arena_answers_enospace),
        T(history_clean_run_passes),
        T(history_detects_a_lost_write),
        T(history_detects_a_stale_read),
        T(history_detects_lost_and_duplicated_increments),
        T(history_indeterminate_operations_widen_what_is_allowed),
        T(history_offline_check_reads_no_finals),
        T(history_malformed_is_rejected_with_the_line),
        T(history_error_classes),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
