/*
 * The client's resend logic, driven through a scripted I/O vtable on a
 * virtual clock: each test lists what the service answers to each attempt
 * and what the directory knows when, and checks what the caller sees and
 * that every attempt carried the same sequence number.
 */
#include <errno.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "client.h"

#define MAX_STEPS 32

struct step {
    const char *address; /* where the attempt must go */
    int rv;              /* transport result; 0 = a reply as below */
    uint8_t status;
    uint64_t generation;
    const char *payload; /* NUL-terminated; for errors see code */
    int code;            /* DVS__STATUS_ERROR: the error code */
    int64_t cost_ms;     /* virtual time the attempt takes (-1: until deadline) */
};

struct fake {
    int64_t now;
    /* The directory: dir now, and next from time next_at on. */
    struct dvs__location dir, next;
    int64_t next_at;
    bool has_next;
    int dir_err;
    int resolves, blocking;
    /* The service. */
    struct step steps[MAX_STEPS];
    int n_steps, pos;
    bool repeat_last;
    uint64_t seqs[64], gens[64];
    int n_sent;
    /* What the loop told the cache. */
    struct dvs__location learnt;
    int n_learnt;
};

static struct dvs__location loc(const char *address, uint64_t gen, uint64_t index)
{
    struct dvs__location l = {.generation = gen, .index = index};
    strcpy(l.address, address);
    return l;
}

static int64_t f_now(void *ctx)
{
    return ((struct fake *)ctx)->now;
}

static void f_sleep(void *ctx, int64_t ms)
{
    assert_true(ms > 0);
    ((struct fake *)ctx)->now += ms;
}

static void dir_advance(struct fake *f)
{
    if (f->has_next && f->now >= f->next_at) {
        f->dir = f->next;
        f->has_next = false;
    }
}

static int f_resolve(void *ctx, const char *name, const struct dvs__location *known,
                     int64_t wait_ms, int64_t deadline, struct dvs__location *ret)
{
    struct fake *f = ctx;
    assert_string_equal(name, "kv");
    f->resolves++;
    f->now += 1;
    dir_advance(f);
    if (f->dir_err != 0) {
        f->now += 100;
        return f->dir_err;
    }
    if (known != NULL && !dvs__location_newer(&f->dir, known) && wait_ms > 0) {
        /* A blocking query: returns when the entry changes or wait passes. */
        f->blocking++;
        int64_t until = f->now + wait_ms;
        if (until > deadline)
            until = deadline;
        if (f->has_next && f->next_at <= until)
            f->now = f->next_at > f->now ? f->next_at : f->now;
        else
            f->now = until;
        dir_advance(f);
    }
    *ret = f->dir;
    return 0;
}

static void f_learn(void *ctx, const char *name, const struct dvs__location *l)
{
    struct fake *f = ctx;
    f->learnt = *l;
    f->n_learnt++;
}

static int f_exchange(void *ctx, const char *address, const struct dvs__frame *req,
                      int64_t deadline, struct dvs__frame *ret, void **ret_buf)
{
    struct fake *f = ctx;
    assert_true(f->pos < f->n_steps);
    const struct step *s = &f->steps[f->pos];
    if (f->pos < f->n_steps - 1 || !f->repeat_last)
        f->pos++;
    assert_string_equal(address, s->address);
    assert_true(f->n_sent < 64);
    f->seqs[f->n_sent] = req->seq;
    f->gens[f->n_sent] = req->generation;
    f->n_sent++;
    assert_int_equal(dvs__frame_check(req, DVS_MAX_PAYLOAD), 0);

    f->now = s->cost_ms < 0 ? deadline : f->now + (s->cost_ms ? s->cost_ms : 1);
    if (s->rv != 0)
        return s->rv;

    uint8_t *buf = malloc(512);
    size_t len = 0;
    if (s->status == DVS__STATUS_ERROR)
        len = dvs__error_payload_encode(s->code, NULL, buf, 512);
    else if (s->payload != NULL)
        memcpy(buf, s->payload, len = strlen(s->payload));
    *ret = (struct dvs__frame){
        .type = DVS__FRAME_REPLY,
        .status = s->status,
        .generation = s->generation,
        .seq = req->seq,
        .payload = len > 0 ? buf : NULL,
        .payload_len = (uint32_t)len,
    };
    *ret_buf = buf;
    return 0;
}

static struct dvs__call_io fake_io(struct fake *f)
{
    return (struct dvs__call_io){
        .ctx = f,
        .now_ms = f_now,
        .sleep_ms = f_sleep,
        .resolve = f_resolve,
        .learn = f_learn,
        .exchange = f_exchange,
    };
}

static int run(struct fake *f, int64_t timeout, void **reply, size_t *len)
{
    struct dvs__call call = {
        .name = "kv",
        .seq = 7,
        .ack = 6,
        .payload = "get x",
        .payload_len = 5,
        .timeout_ms = timeout,
        .attempt_timeout_ms = 2000,
    };
    memset(call.client_id, 0xab, sizeof call.client_id);
    struct dvs__call_io io = fake_io(f);
    *reply = NULL;
    *len = 0;
    return dvs__call_run(&io, &call, reply, len);
}

static void every_attempt_had_seq_7(const struct fake *f)
{
    for (int i = 0; i < f->n_sent; i++)
        assert_int_equal(f->seqs[i], 7);
}

static int setup(void **state)
{
    struct fake *f = calloc(1, sizeof *f);
    f->now = 1000;
    f->dir = loc("10.0.0.1:7000", 1, 10);
    *state = f;
    return 0;
}

static int teardown(void **state)
{
    free(*state);
    return 0;
}

#define STEP(...) f->steps[f->n_steps++] = (struct step){__VA_ARGS__}

static void first_reply_is_returned(void **state)
{
    struct fake *f = *state;
    void *r;
    size_t len;
    STEP(.address = "10.0.0.1:7000", .status = DVS__STATUS_OK, .generation = 1, .payload = "1");

    assert_int_equal(run(f, 5000, &r, &len), 0);
    assert_int_equal(len, 1);
    assert_memory_equal(r, "1", 1);
    assert_int_equal(f->n_sent, 1);
    assert_int_equal(f->gens[0], 1);
    free(r);
}

static void moved_reply_resends_same_seq_to_the_new_place(void **state)
{
    struct fake *f = *state;
    void *r;
    size_t len;
    STEP(.address = "10.0.0.1:7000", .status = DVS__STATUS_MOVED, .generation = 2,
         .payload = "10.0.0.2:7000");
    STEP(.address = "10.0.0.2:7000", .status = DVS__STATUS_OK, .generation = 2, .payload = "ok");

    assert_int_equal(run(f, 5000, &r, &len), 0);
    assert_memory_equal(r, "ok", 2);
    assert_int_equal(f->n_sent, 2);
    every_attempt_had_seq_7(f);
    assert_int_equal(f->gens[1], 2);
    /* The moved reply was enough: no directory query beyond the first. */
    assert_int_equal(f->resolves, 1);
    assert_int_equal(f->n_learnt, 1);
    assert_string_equal(f->learnt.address, "10.0.0.2:7000");
    assert_int_equal(f->learnt.generation, 2);
    free(r);
}

static void migrating_reply_backs_off_and_resends(void **state)
{
    struct fake *f = *state;
    void *r;
    size_t len;
    for (int i = 0; i < 3; i++)
        STEP(.address = "10.0.0.1:7000", .status = DVS__STATUS_MIGRATING, .generation = 1);
    STEP(.address = "10.0.0.1:7000", .status = DVS__STATUS_OK, .generation = 1, .payload = "v");

    int64_t start = f->now;
    assert_int_equal(run(f, 5000, &r, &len), 0);
    assert_int_equal(f->n_sent, 4);
    every_attempt_had_seq_7(f);
    /* 10 + 20 + 40 ms of back-off, plus the attempts and the lookup. */
    assert_true(f->now - start >= 70 && f->now - start < 100);
    free(r);
}

static void refused_connection_waits_for_the_directory(void **state)
{
    struct fake *f = *state;
    void *r;
    size_t len;
    f->next = loc("10.0.0.2:7000", 2, 11);
    f->next_at = f->now + 300;
    f->has_next = true;
    STEP(.address = "10.0.0.1:7000", .rv = -ECONNREFUSED);
    STEP(.address = "10.0.0.2:7000", .status = DVS__STATUS_OK, .generation = 2, .payload = "v");

    int64_t start = f->now;
    assert_int_equal(run(f, 5000, &r, &len), 0);
    every_attempt_had_seq_7(f);
    assert_int_equal(f->blocking, 1);
    /* It went on as soon as the directory changed, not after a full wait. */
    assert_true(f->now - start >= 300 && f->now - start < 320);
    free(r);
}

static void reset_connection_resends_to_the_same_place(void **state)
{
    struct fake *f = *state;
    void *r;
    size_t len;
    STEP(.address = "10.0.0.1:7000", .rv = -ECONNRESET);
    STEP(.address = "10.0.0.1:7000", .status = DVS__STATUS_OK, .generation = 1, .payload = "v");

    assert_int_equal(run(f, 5000, &r, &len), 0);
    assert_int_equal(f->n_sent, 2);
    every_attempt_had_seq_7(f);
    free(r);
}

static void silent_instance_times_out_with_a_clear_error(void **state)
{
    struct fake *f = *state;
    void *r;
    size_t len;
    STEP(.address = "10.0.0.1:7000", .rv = -ETIMEDOUT, .cost_ms = -1);
    f->repeat_last = true;

    int64_t start = f->now;
    assert_int_equal(run(f, 5000, &r, &len), DVS_ETIMEOUT);
    assert_null(r);
    every_attempt_had_seq_7(f);
    /* Attempts were cut at attempt_timeout_ms to look for a new location. */
    assert_true(f->n_sent >= 2);
    assert_true(f->now - start <= 5000 + 2);
}

static void stale_generation_error_relocates(void **state)
{
    struct fake *f = *state;
    void *r;
    size_t len;
    f->dir = loc("10.0.0.1:7000", 1, 10);
    f->next = loc("10.0.0.3:7000", 3, 12);
    f->next_at = f->now + 2; /* the directory is ahead of the client */
    f->has_next = true;
    STEP(.address = "10.0.0.1:7000", .status = DVS__STATUS_ERROR, .code = DVS_ESTALEGEN);
    STEP(.address = "10.0.0.3:7000", .status = DVS__STATUS_OK, .generation = 3, .payload = "v");

    assert_int_equal(run(f, 5000, &r, &len), 0);
    assert_int_equal(f->gens[1], 3);
    every_attempt_had_seq_7(f);
    free(r);
}

static void handler_error_is_returned_once(void **state)
{
    struct fake *f = *state;
    void *r;
    size_t len;
    STEP(.address = "10.0.0.1:7000", .status = DVS__STATUS_ERROR, .code = -ENOENT);

    assert_int_equal(run(f, 5000, &r, &len), -ENOENT);
    assert_int_equal(f->n_sent, 1);
}

static void unknown_outcome_is_returned_not_retried(void **state)
{
    struct fake *f = *state;
    void *r;
    size_t len;
    STEP(.address = "10.0.0.1:7000", .status = DVS__STATUS_ERROR, .code = DVS_EUNKNOWNOUTCOME);

    assert_int_equal(run(f, 5000, &r, &len), DVS_EUNKNOWNOUTCOME);
    assert_int_equal(f->n_sent, 1);
}

static void unknown_endpoint_fails_at_once(void **state)
{
    struct fake *f = *state;
    void *r;
    size_t len;
    f->dir_err = DVS_ENOTFOUND;

    assert_int_equal(run(f, 5000, &r, &len), DVS_ENOTFOUND);
    assert_int_equal(f->n_sent, 0);
}

static void unreachable_directory_is_reported_as_such(void **state)
{
    struct fake *f = *state;
    void *r;
    size_t len;
    f->dir_err = DVS_EUNAVAILABLE;

    assert_int_equal(run(f, 2000, &r, &len), DVS_EUNAVAILABLE);
    assert_int_equal(f->n_sent, 0);
    assert_true(f->resolves > 2); /* it kept trying until the deadline */
}

static void endpoint_without_instance_waits_for_one(void **state)
{
    struct fake *f = *state;
    void *r;
    size_t len;
    f->dir = loc("", 0, 5); /* pending: no node yet */
    f->next = loc("10.0.0.1:7000", 1, 6);
    f->next_at = f->now + 200;
    f->has_next = true;
    STEP(.address = "10.0.0.1:7000", .status = DVS__STATUS_OK, .generation = 1, .payload = "v");

    assert_int_equal(run(f, 5000, &r, &len), 0);
    assert_int_equal(f->n_sent, 1);
    free(r);
}

static void stale_moved_reply_does_not_loop(void **state)
{
    struct fake *f = *state;
    void *r;
    size_t len;
    f->dir = loc("10.0.0.1:7000", 5, 10);
    /* A confused old instance claims a move to an older generation. */
    STEP(.address = "10.0.0.1:7000", .status = DVS__STATUS_MOVED, .generation = 4,
         .payload = "10.0.0.9:7000");
    STEP(.address = "10.0.0.1:7000", .status = DVS__STATUS_MOVED, .generation = 5,
         .payload = "bad address with spaces");
    STEP(.address = "10.0.0.1:7000", .status = DVS__STATUS_OK, .generation = 5, .payload = "v");

    assert_int_equal(run(f, 5000, &r, &len), 0);
    assert_int_equal(f->n_sent, 3);
    assert_int_equal(f->n_learnt, 0);
    free(r);
}

static void migration_end_to_end_in_virtual_time(void **state)
{
    struct fake *f = *state;
    void *r;
    size_t len;
    /* Frozen: held then "migrating" twice; then the commit: moved; then
     * the new instance answers. */
    STEP(.address = "10.0.0.1:7000", .status = DVS__STATUS_MIGRATING, .generation = 1,
         .cost_ms = 1000);
    STEP(.address = "10.0.0.1:7000", .status = DVS__STATUS_MIGRATING, .generation = 1,
         .cost_ms = 1000);
    STEP(.address = "10.0.0.1:7000", .status = DVS__STATUS_MOVED, .generation = 2,
         .payload = "10.0.0.2:7000", .cost_ms = 50);
    STEP(.address = "10.0.0.2:7000", .status = DVS__STATUS_OK, .generation = 2, .payload = "v");

    assert_int_equal(run(f, 10000, &r, &len), 0);
    every_attempt_had_seq_7(f);
    assert_int_equal(f->gens[0], 1);
    assert_int_equal(f->gens[3], 2);
    free(r);
}

/* ---------------------------------------------------------------------------
 * The directory's answers are external input too
 */

static void directory_answer_is_parsed_and_checked(void **state)
{
    struct dvs__location l;
#define PARSE(json) dvs__dir_parse_endpoint(json, strlen(json), "kv", &l)

    assert_int_equal(PARSE("{\"name\":\"kv\",\"address\":\"10.0.0.1:7000\",\"generation\":4,"
                           "\"state\":\"running\",\"modify_index\":99,\"extra\":[1,2]}"), 0);
    assert_string_equal(l.address, "10.0.0.1:7000");
    assert_int_equal(l.generation, 4);
    assert_int_equal(l.index, 99);

    /* Still on its source while migrating: usable. */
    assert_int_equal(PARSE("{\"name\":\"kv\",\"address\":\"h:1\",\"generation\":4,\"state\":\"migrating\"}"), 0);
    assert_string_equal(l.address, "h:1");
    /* No instance serves: no address, whatever the field says. */
    assert_int_equal(PARSE("{\"name\":\"kv\",\"address\":null,\"generation\":0,\"state\":\"pending\"}"), 0);
    assert_string_equal(l.address, "");
    assert_int_equal(PARSE("{\"name\":\"kv\",\"address\":\"h:1\",\"generation\":4,\"state\":\"failed\"}"), 0);
    assert_string_equal(l.address, "");

    assert_int_equal(PARSE("{\"name\":\"other\",\"address\":\"h:1\",\"generation\":1}"), DVS_EPROTO);
    assert_int_equal(PARSE("{\"name\":\"kv\",\"address\":\"h:1\",\"generation\":-1}"), DVS_EPROTO);
    assert_int_equal(PARSE("{\"name\":\"kv\",\"address\":\"h:1\",\"generation\":\"1\"}"), DVS_EPROTO);
    assert_int_equal(PARSE("{\"name\":\"kv\",\"address\":\"no-port\",\"generation\":1}"), DVS_EPROTO);
    assert_int_equal(PARSE("{\"name\":\"kv\",\"address\":5,\"generation\":1}"), DVS_EPROTO);
    assert_int_equal(PARSE("{\"name\":\"kv\",\"generation\":1,\"generation\":2}"), DVS_EPROTO);
    assert_int_equal(PARSE("{\"name\":\"kv\",\"generation\":1,\"modify_index\":-5}"), DVS_EPROTO);
    assert_int_equal(PARSE("[1,2]"), DVS_EPROTO);
    assert_int_equal(PARSE("{\"name\":\"kv\",\"gen"), DVS_EPROTO);
    assert_int_equal(PARSE(""), DVS_EPROTO);
#undef PARSE
}

static void newer_means_later_generation_or_a_first_address(void **state)
{
    struct dvs__location a = loc("h:1", 3, 0);
    struct dvs__location b = loc("h:2", 4, 0);
    struct dvs__location none = loc("", 0, 0);
    assert_true(dvs__location_newer(&b, &a));
    assert_false(dvs__location_newer(&a, &b));
    assert_false(dvs__location_newer(&a, &a));
    assert_true(dvs__location_newer(&a, &none));
    assert_false(dvs__location_newer(&none, &a));
    struct dvs__location same_gen = loc("h:9", 3, 0);
    assert_false(dvs__location_newer(&same_gen, &a)); /* fencing: generations decide */
}

int main(void)
{
#define T(name) cmocka_unit_test_setup_teardown(name, setup, teardown)
    const struct CMUnitTest tests[] = {
        T(first_reply_is_returned),
        T(moved_reply_resends_same_seq_to_the_new_place),
        T(migrating_reply_backs_off_and_resends),
        T(refused_connection_waits_for_the_directory),
        T(reset_connection_resends_to_the_same_place),
        T(silent_instance_times_out_with_a_clear_error),
        T(stale_generation_error_relocates),
        T(handler_error_is_returned_once),
        T(unknown_outcome_is_returned_not_retried),
        T(unknown_endpoint_fails_at_once),
        T(unreachable_directory_is_reported_as_such),
        T(endpoint_without_instance_waits_for_one),
        T(stale_moved_reply_does_not_loop),
        T(migration_end_to_end_in_virtual_time),
        cmocka_unit_test(directory_answer_is_parsed_and_checked),
        cmocka_unit_test(newer_means_later_generation_or_a_first_address),
    };
    return cmocka_run_group_tests_name("libdvs/client", tests, NULL, NULL);
}
