/*
 * The reply cache: replays, acknowledgements, every bound, and migration.
 */
#include <errno.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

#include <cmocka.h>

#include "reply_cache.h"

#define ADDR ((uintptr_t)0x7e2000000000ull)
#define SIZE ((size_t)4 << 20)

struct fixture {
    dvs_arena *arena;
    struct dvs__rc *rc;
};

static uint64_t rng_state;

static uint64_t rng(void)
{
    uint64_t x = rng_state;
    x ^= x << 13;
    x ^= x >> 7;
    x ^= x << 17;
    return rng_state = x;
}

static int open_with(void **state, uint32_t clients, uint32_t entries, uint64_t bytes,
                     size_t size)
{
    struct fixture *f = calloc(1, sizeof *f);
    struct dvs__rc_limits lim = {clients, entries, bytes};
    if (f == NULL || dvs_arena_create(ADDR, size, &f->arena) != 0 ||
        dvs__rc_open(f->arena, &lim, &f->rc) != 0)
        return -1;
    *state = f;
    return 0;
}

static int setup(void **state)
{
    return open_with(state, 16, 8, 1 << 20, SIZE);
}

static int setup_small(void **state)
{
    return open_with(state, 3, 4, 100, SIZE);
}

static int teardown(void **state)
{
    struct fixture *f = *state;
    if (f != NULL) {
        dvs_arena_close(f->arena);
        free(f);
    }
    return 0;
}

static void client(uint8_t id[DVS__CLIENT_ID_SIZE], int n)
{
    memset(id, 0, DVS__CLIENT_ID_SIZE);
    id[0] = (uint8_t)n;
    id[15] = (uint8_t)(n * 7);
}

/* Look up (id, seq, ack), and if new, store reply "r<seq>". */
static int exec(struct fixture *f, const uint8_t *id, uint64_t seq, uint64_t ack,
                struct dvs__rc_reply *r)
{
    int v = dvs__rc_lookup(f->arena, f->rc, id, seq, ack, r);
    if (v == DVS__RC_NEW) {
        char buf[32];
        int n = snprintf(buf, sizeof buf, "r%llu", (unsigned long long)seq);
        assert_true(dvs__rc_store(f->arena, f->rc, id, seq, DVS__STATUS_OK, buf, (uint32_t)n) >= 0);
    }
    assert_int_equal(dvs__rc_check(f->arena, f->rc), 0);
    return v;
}

static void resent_request_gets_the_saved_reply(void **state)
{
    struct fixture *f = *state;
    uint8_t id[16];
    struct dvs__rc_reply r;
    client(id, 1);

    assert_int_equal(dvs__rc_lookup(f->arena, f->rc, id, 1, 0, &r), DVS__RC_NEW);
    assert_int_equal(dvs__rc_store(f->arena, f->rc, id, 1, DVS__STATUS_ERROR, "oops", 4), 0);
    assert_int_equal(dvs__rc_lookup(f->arena, f->rc, id, 1, 0, &r), DVS__RC_REPLAY);
    assert_int_equal(r.status, DVS__STATUS_ERROR);
    assert_int_equal(r.len, 4);
    assert_memory_equal(r.data, "oops", 4);

    /* An empty reply is saved too. */
    assert_int_equal(dvs__rc_lookup(f->arena, f->rc, id, 2, 0, &r), DVS__RC_NEW);
    assert_int_equal(dvs__rc_store(f->arena, f->rc, id, 2, DVS__STATUS_OK, NULL, 0), 0);
    assert_int_equal(dvs__rc_lookup(f->arena, f->rc, id, 2, 0, &r), DVS__RC_REPLAY);
    assert_int_equal(r.len, 0);

    struct dvs__rc_stats st;
    dvs__rc_stats(f->rc, &st);
    assert_int_equal(st.replays, 2);
    assert_int_equal(st.entries, 2);
    assert_int_equal(st.bytes, 4);
}

static void clients_are_kept_apart(void **state)
{
    struct fixture *f = *state;
    uint8_t a[16], b[16];
    struct dvs__rc_reply r;
    client(a, 1);
    client(b, 2);

    assert_int_equal(exec(f, a, 1, 0, &r), DVS__RC_NEW);
    assert_int_equal(exec(f, b, 1, 0, &r), DVS__RC_NEW);
    assert_int_equal(exec(f, a, 1, 0, &r), DVS__RC_REPLAY);
}

static void acknowledged_replies_are_freed_and_never_rerun(void **state)
{
    struct fixture *f = *state;
    uint8_t id[16];
    struct dvs__rc_reply r;
    struct dvs__rc_stats st;
    client(id, 1);

    for (uint64_t s = 1; s <= 3; s++)
        assert_int_equal(exec(f, id, s, 0, &r), DVS__RC_NEW);
    /* Request 4 acknowledges 1 and 2. */
    assert_int_equal(exec(f, id, 4, 2, &r), DVS__RC_NEW);
    dvs__rc_stats(f->rc, &st);
    assert_int_equal(st.entries, 2);
    /* A late duplicate of 1 is not executed again. */
    assert_int_equal(exec(f, id, 1, 2, &r), DVS__RC_FORGOTTEN);
    assert_int_equal(exec(f, id, 3, 2, &r), DVS__RC_REPLAY);
    assert_memory_equal(r.data, "r3", 2);
}

static void oldest_reply_gives_way_when_a_client_has_too_many(void **state)
{
    struct fixture *f = *state; /* 4 entries per client */
    uint8_t id[16];
    struct dvs__rc_reply r;
    struct dvs__rc_stats st;
    client(id, 1);

    for (uint64_t s = 1; s <= 6; s++)
        assert_int_equal(exec(f, id, s, 0, &r), DVS__RC_NEW);
    dvs__rc_stats(f->rc, &st);
    assert_int_equal(st.entries, 4);
    assert_int_equal(st.dropped_replies, 2);
    assert_int_equal(exec(f, id, 2, 0, &r), DVS__RC_FORGOTTEN);
    assert_int_equal(exec(f, id, 3, 0, &r), DVS__RC_REPLAY);
    assert_int_equal(exec(f, id, 7, 0, &r), DVS__RC_NEW);
}

/* Several threads of one client: requests arrive in any order. */
static void late_request_is_new_even_after_later_ones_overflowed(void **state)
{
    struct fixture *f = *state; /* 4 entries per client */
    uint8_t id[16];
    struct dvs__rc_reply r;
    client(id, 1);

    /* seq 1 is slow to arrive; 2..11 (ack 0: 1 is still in flight) run. */
    for (uint64_t s = 2; s <= 11; s++)
        assert_int_equal(exec(f, id, s, 0, &r), DVS__RC_NEW);
    assert_int_equal(exec(f, id, 1, 0, &r), DVS__RC_NEW);
    /* The dropped replies still count as executed. */
    assert_int_equal(exec(f, id, 3, 0, &r), DVS__RC_FORGOTTEN);
    assert_int_equal(exec(f, id, 11, 0, &r), DVS__RC_REPLAY);
    assert_int_equal(exec(f, id, 12, 11, &r), DVS__RC_NEW);
}

static void executed_window_slides_with_acks_and_bounds_a_runaway_client(void **state)
{
    struct fixture *f = *state;
    uint8_t id[16];
    struct dvs__rc_reply r;
    client(id, 1);

    /* Across word boundaries of the window, with acks trailing. */
    for (uint64_t s = 1; s <= 300; s++)
        assert_int_equal(exec(f, id, s, s > 70 ? s - 70 : 0, &r), DVS__RC_NEW);
    for (uint64_t s = 1; s <= 300; s++)
        assert_int_not_equal(exec(f, id, s, 230, &r), DVS__RC_NEW);
    assert_int_equal(exec(f, id, 302, 230, &r), DVS__RC_NEW);
    assert_int_equal(exec(f, id, 301, 230, &r), DVS__RC_NEW);

    /* Never acknowledging, 1024 ahead: the oldest count as acknowledged. */
    assert_int_equal(exec(f, id, 5000, 230, &r), DVS__RC_NEW);
    assert_int_equal(exec(f, id, 5000 - 1024, 230, &r), DVS__RC_FORGOTTEN);
    assert_int_equal(exec(f, id, 4999, 230, &r), DVS__RC_NEW);
}

static void least_recently_used_client_is_evicted(void **state)
{
    struct fixture *f = *state; /* 3 clients */
    uint8_t a[16], b[16], c[16], d[16];
    struct dvs__rc_reply r;
    struct dvs__rc_stats st;
    client(a, 1);
    client(b, 2);
    client(c, 3);
    client(d, 4);

    assert_int_equal(exec(f, a, 1, 0, &r), DVS__RC_NEW);
    assert_int_equal(exec(f, b, 1, 0, &r), DVS__RC_NEW);
    assert_int_equal(exec(f, c, 1, 0, &r), DVS__RC_NEW);
    assert_int_equal(exec(f, a, 1, 0, &r), DVS__RC_REPLAY); /* a is fresh again */
    assert_int_equal(exec(f, d, 1, 0, &r), DVS__RC_NEW);    /* evicts b */
    dvs__rc_stats(f->rc, &st);
    assert_int_equal(st.clients, 3);
    assert_int_equal(st.evicted_clients, 1);
    assert_int_equal(exec(f, a, 1, 0, &r), DVS__RC_REPLAY);
    assert_int_equal(exec(f, c, 1, 0, &r), DVS__RC_REPLAY);
}

static void byte_budget_drops_cold_clients_replies_first(void **state)
{
    struct fixture *f = *state; /* 100 bytes */
    uint8_t a[16], b[16];
    struct dvs__rc_reply r;
    char big[60];
    memset(big, 'x', sizeof big);
    client(a, 1);
    client(b, 2);

    assert_int_equal(dvs__rc_lookup(f->arena, f->rc, a, 1, 0, &r), DVS__RC_NEW);
    assert_int_equal(dvs__rc_store(f->arena, f->rc, a, 1, DVS__STATUS_OK, big, 60), 0);
    assert_int_equal(dvs__rc_lookup(f->arena, f->rc, b, 1, 0, &r), DVS__RC_NEW);
    assert_int_equal(dvs__rc_store(f->arena, f->rc, b, 1, DVS__STATUS_OK, big, 60), 0);
    /* a's reply made room, and a's floor keeps request 1 from running again. */
    assert_int_equal(dvs__rc_lookup(f->arena, f->rc, a, 1, 0, &r), DVS__RC_FORGOTTEN);
    assert_int_equal(dvs__rc_lookup(f->arena, f->rc, b, 1, 0, &r), DVS__RC_REPLAY);

    /* A reply over the whole budget is remembered as executed, bytes lost. */
    char huge[101] = {0};
    assert_int_equal(dvs__rc_lookup(f->arena, f->rc, b, 2, 0, &r), DVS__RC_NEW);
    assert_int_equal(dvs__rc_store(f->arena, f->rc, b, 2, DVS__STATUS_OK, huge, 101), 1);
    assert_int_equal(dvs__rc_lookup(f->arena, f->rc, b, 2, 0, &r), DVS__RC_FORGOTTEN);
    assert_int_equal(dvs__rc_check(f->arena, f->rc), 0);
}

/* Take every free byte of the arena, as a greedy service would. */
static int hog_all(dvs_arena *a, void **hogs, int max)
{
    struct dvs_arena_stats st;
    int n = 0;
    dvs_arena_stats(a, &st);
    while (n < max && st.largest_free > 0 && (hogs[n] = dvs_arena_alloc(a, st.largest_free)) != NULL) {
        n++;
        dvs_arena_stats(a, &st);
    }
    assert_int_equal(st.free_blocks, 0);
    return n;
}

static void full_arena_is_an_error_not_a_crash(void **state)
{
    struct fixture *f = *state;
    uint8_t a[16], b[16];
    struct dvs__rc_reply r;
    struct dvs__rc_stats st;
    void *hogs[64];
    client(a, 1);
    client(b, 2);

    /* No room for a client record, and nobody to evict: refuse. */
    int n = hog_all(f->arena, hogs, 64);
    assert_int_equal(dvs__rc_lookup(f->arena, f->rc, a, 1, 0, &r), -ENOMEM);
    for (int i = 0; i < n; i++)
        dvs_arena_free(f->arena, hogs[i]);

    assert_int_equal(exec(f, a, 1, 0, &r), DVS__RC_NEW);
    hog_all(f->arena, hogs, 64);
    /* A new client takes the room of the idle one. */
    assert_int_equal(exec(f, b, 1, 0, &r), DVS__RC_NEW);
    dvs__rc_stats(f->rc, &st);
    assert_int_equal(st.evicted_clients, 1);

    /* No room for the reply's bytes: the execution is still remembered. */
    assert_int_equal(dvs__rc_lookup(f->arena, f->rc, b, 2, 0, &r), DVS__RC_NEW);
    hog_all(f->arena, hogs, 64);
    assert_int_equal(dvs__rc_store(f->arena, f->rc, b, 2, DVS__STATUS_OK, "xyz", 3), 1);
    assert_int_equal(dvs__rc_lookup(f->arena, f->rc, b, 2, 0, &r), DVS__RC_FORGOTTEN);
    assert_int_equal(dvs__rc_check(f->arena, f->rc), 0);
}

static int copy_memfd(int fd, size_t size)
{
    int out = memfd_create("copy", MFD_CLOEXEC);
    char *buf = malloc(65536);
    assert_true(out >= 0 && buf != NULL);
    assert_int_equal(ftruncate(out, (off_t)size), 0);
    for (off_t off = 0; off < (off_t)size; off += 65536) {
        assert_int_equal(pread(fd, buf, 65536, off), 65536);
        assert_int_equal(pwrite(out, buf, 65536, off), 65536);
    }
    free(buf);
    return out;
}

/* The point of keeping the cache in the arena: it migrates. */
static void cache_survives_a_copy_of_the_arena(void **state)
{
    struct fixture *f = *state;
    uint8_t id[16];
    struct dvs__rc_reply r;
    client(id, 9);

    for (uint64_t s = 1; s <= 5; s++)
        assert_int_equal(exec(f, id, s, s - 1 > 2 ? 2 : s - 1, &r), DVS__RC_NEW);
    int copy = copy_memfd(dvs_arena_fd(f->arena), SIZE);
    dvs_arena_close(f->arena);

    struct dvs__rc_limits other = {1, 1, 1}; /* ignored: the saved limits win */
    assert_int_equal(dvs_arena_open(copy, ADDR, SIZE, 0, &f->arena), 0);
    assert_int_equal(dvs__rc_open(f->arena, &other, &f->rc), 0);
    assert_int_equal(exec(f, id, 5, 2, &r), DVS__RC_REPLAY);
    assert_memory_equal(r.data, "r5", 2);
    assert_int_equal(exec(f, id, 1, 2, &r), DVS__RC_FORGOTTEN);
    assert_int_equal(exec(f, id, 6, 5, &r), DVS__RC_NEW);
    dvs_arena_close(f->arena);
    f->arena = NULL;
    close(copy);
    free(f);
    *state = NULL;
}

static void corrupt_cache_is_detected(void **state)
{
    struct fixture *f = *state;
    uint8_t a[16], b[16];
    struct dvs__rc_reply r;
    client(a, 1);
    client(b, 2);
    assert_int_equal(exec(f, a, 1, 0, &r), DVS__RC_NEW);
    assert_int_equal(exec(f, b, 1, 0, &r), DVS__RC_NEW);

    /* struct dvs__rc: magic(8) version(4) max_clients(4) max_entries(4) n_clients(4) */
    uint32_t *n_clients = (uint32_t *)((uint8_t *)f->rc + 20);
    (*n_clients)++;
    assert_int_equal(dvs__rc_check(f->arena, f->rc), DVS_EPROTO);
    (*n_clients)--;
    assert_int_equal(dvs__rc_check(f->arena, f->rc), 0);
}

/*
 * Random clients, resends, acknowledgements and reply sizes (fixed seed).
 * With no client ever evicted, no (client, seq) may be NEW twice, and a
 * replay must return exactly what was stored.
 */
static void random_traffic_never_executes_twice(void **state)
{
    struct fixture *f = *state; /* 16 clients, 8 entries */
    enum { CLIENTS = 12 };
    uint64_t next_seq[CLIENTS], acked[CLIENTS];
    static uint8_t executed[CLIENTS][4096];
    memset(executed, 0, sizeof executed);
    rng_state = 777;
    for (int i = 0; i < CLIENTS; i++) {
        next_seq[i] = 1;
        acked[i] = 0;
    }

    for (int iter = 0; iter < 20000; iter++) {
        int ci = (int)(rng() % CLIENTS);
        uint8_t id[16];
        client(id, ci + 1);
        uint64_t seq;
        if (next_seq[ci] > 1 && rng() % 3 == 0)
            seq = 1 + rng() % (next_seq[ci] - 1); /* a resend, maybe very old */
        else if (next_seq[ci] < 4000)
            seq = next_seq[ci]++;
        else
            continue;
        /* Up to 3 requests in flight: ack what is older than that. */
        if (next_seq[ci] > 4 && next_seq[ci] - 4 > acked[ci])
            acked[ci] = next_seq[ci] - 4;
        uint64_t ack = acked[ci] < seq ? acked[ci] : seq - 1;

        struct dvs__rc_reply r;
        int v = dvs__rc_lookup(f->arena, f->rc, id, seq, ack, &r);
        if (v == DVS__RC_NEW) {
            assert_int_equal(executed[ci][seq], 0);
            executed[ci][seq] = 1;
            uint8_t buf[300];
            uint32_t len = (uint32_t)(rng() % sizeof buf);
            for (uint32_t k = 0; k < len; k++)
                buf[k] = (uint8_t)(seq + k);
            assert_int_equal(dvs__rc_store(f->arena, f->rc, id, seq, DVS__STATUS_OK, buf, len), 0);
        } else if (v == DVS__RC_REPLAY) {
            assert_int_equal(executed[ci][seq], 1);
            for (uint32_t k = 0; k < r.len; k++)
                assert_int_equal(((const uint8_t *)r.data)[k], (uint8_t)(seq + k));
        } else {
            assert_int_equal(v, DVS__RC_FORGOTTEN);
            assert_int_equal(executed[ci][seq], 1);
        }
        if (iter % 64 == 0)
            assert_int_equal(dvs__rc_check(f->arena, f->rc), 0);
    }
    struct dvs__rc_stats st;
    dvs__rc_stats(f->rc, &st);
    assert_int_equal(st.evicted_clients, 0);
    assert_true(st.entries <= (uint64_t)CLIENTS * 8);
}

static void bad_limits_are_refused(void **state)
{
    dvs_arena *a;
    struct dvs__rc *rc;
    struct dvs__rc_limits zero = {0, 8, 100}, none = {8, 0, 100};
    assert_int_equal(dvs_arena_create(ADDR + 0x100000000ull, 1 << 20, &a), 0);
    assert_int_equal(dvs__rc_open(a, &zero, &rc), -EINVAL);
    assert_int_equal(dvs__rc_open(a, &none, &rc), -EINVAL);
    dvs_arena_close(a);
}

int main(void)
{
#define T(name) cmocka_unit_test_setup_teardown(name, setup, teardown)
#define S(name) cmocka_unit_test_setup_teardown(name, setup_small, teardown)
    const struct CMUnitTest tests[] = {
        T(resent_request_gets_the_saved_reply),
        T(clients_are_kept_apart),
        T(acknowledged_replies_are_freed_and_never_rerun),
        S(oldest_reply_gives_way_when_a_client_has_too_many),
        S(late_request_is_new_even_after_later_ones_overflowed),
        T(executed_window_slides_with_acks_and_bounds_a_runaway_client),
        S(least_recently_used_client_is_evicted),
        S(byte_budget_drops_cold_clients_replies_first),
        T(full_arena_is_an_error_not_a_crash),
        T(cache_survives_a_copy_of_the_arena),
        T(corrupt_cache_is_detected),
        T(random_traffic_never_executes_twice),
        cmocka_unit_test(bad_limits_are_refused),
    };
    return cmocka_run_group_tests_name("libdvs/reply_cache", tests, NULL, NULL);
}
