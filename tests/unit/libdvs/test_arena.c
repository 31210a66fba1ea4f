/*
 * The migratable arena: mapping rules, the allocator, and restoring a copy.
 */
#include <errno.h>
#include <fcntl.h>
#include <setjmp.h>
#include <signal.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cmocka.h>

#include "arena.h"

#define ADDR ((uintptr_t)0x7e1000000000ull)
#define SIZE ((size_t)1 << 20)

static uint64_t rng_state;

static uint64_t rng(void)
{
    uint64_t x = rng_state;
    x ^= x << 13;
    x ^= x >> 7;
    x ^= x << 17;
    return rng_state = x;
}

static int setup(void **state)
{
    dvs_arena *a;
    if (dvs_arena_create(ADDR, SIZE, &a) != 0)
        return -1;
    *state = a;
    return 0;
}

static int teardown(void **state)
{
    dvs_arena_close(*state);
    return 0;
}

/* A copy of an arena's memfd contents in a new memfd (what a migration does). */
static int copy_memfd(int fd, size_t size)
{
    int out = memfd_create("copy", MFD_CLOEXEC);
    assert_true(out >= 0);
    assert_int_equal(ftruncate(out, (off_t)size), 0);
    char *buf = malloc(65536);
    assert_non_null(buf);
    for (off_t off = 0; off < (off_t)size; off += 65536) {
        assert_int_equal(pread(fd, buf, 65536, off), 65536);
        assert_int_equal(pwrite(out, buf, 65536, off), 65536);
    }
    free(buf);
    return out;
}

static void fresh_arena_is_empty_and_valid(void **state)
{
    dvs_arena *a = *state;
    struct dvs_arena_stats st;

    assert_ptr_equal(dvs_arena_base(a), (void *)ADDR);
    assert_int_equal(dvs_arena_size(a), SIZE);
    assert_null(dvs_arena_root(a));
    assert_int_equal(dvs__arena_check(a), 0);
    dvs_arena_stats(a, &st);
    assert_int_equal(st.used, 0);
    assert_int_equal(st.used_blocks, 0);
    assert_int_equal(st.free_blocks, 1);
    assert_int_equal(st.heap_size, SIZE - DVS__ARENA_HDR_SPACE - 16);
    assert_int_equal(st.largest_free, st.heap_size - 16);
}

static void allocations_are_aligned_and_inside(void **state)
{
    dvs_arena *a = *state;
    for (size_t n = 1; n < 2000; n += 7) {
        void *p = dvs_arena_alloc(a, n);
        assert_non_null(p);
        assert_int_equal((uintptr_t)p % 16, 0);
        assert_true(dvs_arena_contains(a, p, n));
        assert_true(dvs__arena_usable_size(a, p) >= n);
    }
    assert_int_equal(dvs__arena_check(a), 0);
}

struct live {
    uint8_t *p;
    size_t n;
    uint8_t tag;
};

static void fill(struct live *l)
{
    memset(l->p, l->tag, l->n);
}

static void verify(const struct live *l)
{
    for (size_t i = 0; i < l->n; i++)
        assert_int_equal(l->p[i], l->tag);
}

/*
 * Random allocations, frees and reallocations with a fixed seed. Each block
 * is filled with its own tag and checked before it is freed, so any two
 * blocks that overlap are caught; the allocator's invariants are checked
 * after every operation.
 */
static void random_patterns_never_overlap(void **state)
{
    dvs_arena *a = *state;
    enum { SLOTS = 128 };
    struct live live[SLOTS] = {{0}};
    rng_state = 0xdeadbeefcafef00dull;

    for (int iter = 0; iter < 20000; iter++) {
        struct live *l = &live[rng() % SLOTS];
        unsigned op = (unsigned)(rng() % 10);
        /* Mostly small sizes, sometimes large ones, like real services. */
        size_t n = (rng() % 8 == 0) ? 1 + rng() % 32768 : 1 + rng() % 600;
        if (l->p == NULL) {
            l->p = dvs_arena_alloc(a, n);
            if (l->p != NULL) {
                l->n = n;
                l->tag = (uint8_t)(1 + iter % 250);
                fill(l);
            }
        } else if (op < 6) {
            verify(l);
            dvs_arena_free(a, l->p);
            l->p = NULL;
        } else {
            verify(l);
            uint8_t *q = dvs_arena_realloc(a, l->p, n);
            if (q != NULL) {
                /* The common prefix survives a move. */
                size_t keep = n < l->n ? n : l->n;
                for (size_t i = 0; i < keep; i++)
                    assert_int_equal(q[i], l->tag);
                l->p = q;
                l->n = n;
                fill(l);
            }
        }
        assert_int_equal(dvs__arena_check(a), 0);
    }
    for (int i = 0; i < SLOTS; i++) {
        if (live[i].p != NULL) {
            verify(&live[i]);
            dvs_arena_free(a, live[i].p);
        }
    }
    struct dvs_arena_stats st;
    dvs_arena_stats(a, &st);
    assert_int_equal(st.used, 0);
    assert_int_equal(st.free_blocks, 1); /* everything merged back */
}

static void freeing_neighbours_merges_them(void **state)
{
    dvs_arena *a = *state;
    struct dvs_arena_stats st;

    void *x = dvs_arena_alloc(a, 100);
    void *y = dvs_arena_alloc(a, 100);
    void *z = dvs_arena_alloc(a, 100);
    void *guard = dvs_arena_alloc(a, 100);
    assert_non_null(guard);

    dvs_arena_free(a, x);
    dvs_arena_free(a, z);
    dvs_arena_stats(a, &st);
    assert_int_equal(st.free_blocks, 3); /* x, z, and the tail */

    /* Freeing y joins x, y and z into one block that fits 3 × 128 - 16. */
    dvs_arena_free(a, y);
    dvs_arena_stats(a, &st);
    assert_int_equal(st.free_blocks, 2);
    assert_int_equal(dvs__arena_check(a), 0);
    void *big = dvs_arena_alloc(a, 3 * 128 - 16);
    assert_ptr_equal(big, x);

    dvs_arena_free(a, big);
    dvs_arena_free(a, guard);
    dvs_arena_stats(a, &st);
    assert_int_equal(st.free_blocks, 1);
    assert_int_equal(st.largest_free, st.heap_size - 16);
}

static void exhaustion_returns_null_and_recovers(void **state)
{
    dvs_arena *a = *state;
    struct dvs_arena_stats st;
    void *ptrs[4096];
    int n = 0;

    assert_null(dvs_arena_alloc(a, 0));
    assert_null(dvs_arena_alloc(a, SIZE));
    assert_null(dvs_arena_alloc(a, SIZE_MAX));
    assert_null(dvs_arena_calloc(a, SIZE_MAX / 2, 4));

    while ((ptrs[n] = dvs_arena_alloc(a, 1000)) != NULL)
        n++;
    assert_true(n > 900 && n < 4096);
    assert_int_equal(dvs__arena_check(a), 0);
    dvs_arena_stats(a, &st);
    assert_true(st.largest_free < 1000);

    for (int i = 0; i < n; i++)
        dvs_arena_free(a, ptrs[i]);
    dvs_arena_stats(a, &st);
    void *all = dvs_arena_alloc(a, st.largest_free);
    assert_non_null(all);
    assert_null(dvs_arena_alloc(a, 1));
    dvs_arena_free(a, all);
    assert_int_equal(dvs__arena_check(a), 0);
}

static void realloc_grows_in_place_when_it_can(void **state)
{
    dvs_arena *a = *state;

    char *p = dvs_arena_alloc(a, 100);
    memcpy(p, "hello", 6);
    char *q = dvs_arena_realloc(a, p, 5000);
    assert_ptr_equal(q, p); /* the rest of the heap follows p */
    assert_string_equal(q, "hello");

    void *blocker = dvs_arena_alloc(a, 16);
    char *r = dvs_arena_realloc(a, q, 10000);
    assert_ptr_not_equal(r, q);
    assert_string_equal(r, "hello");

    char *s = dvs_arena_realloc(a, r, 10);
    assert_ptr_equal(s, r); /* shrinking never moves */
    assert_string_equal(s, "hello");

    assert_null(dvs_arena_realloc(a, s, SIZE)); /* no room: s is kept */
    assert_string_equal(s, "hello");
    assert_null(dvs_arena_realloc(a, s, 0));   /* frees */
    dvs_arena_free(a, blocker);
    assert_int_equal(dvs__arena_check(a), 0);
}

static void root_must_be_an_allocated_block(void **state)
{
    dvs_arena *a = *state;
    int on_stack;

    void *p = dvs_arena_alloc(a, 64);
    assert_int_equal(dvs_arena_set_root(a, &on_stack), -EINVAL);
    assert_int_equal(dvs_arena_set_root(a, (char *)p + 16), -EINVAL);
    assert_int_equal(dvs_arena_set_root(a, p), 0);
    assert_ptr_equal(dvs_arena_root(a), p);
    assert_int_equal(dvs_arena_set_root(a, NULL), 0);
    assert_null(dvs_arena_root(a));
}

/* A linked list inside the arena, found again through the root. */
struct node {
    struct node *next;
    uint64_t value;
    char text[40];
};

static void reopened_copy_has_same_data_and_allocator_state(void **state)
{
    dvs_arena *a = *state;
    rng_state = 99;

    /* Build some state with holes in the heap. */
    struct node *head = NULL;
    for (uint64_t i = 0; i < 500; i++) {
        struct node *n = dvs_arena_alloc(a, sizeof *n + rng() % 200);
        assert_non_null(n);
        n->value = i * i;
        snprintf(n->text, sizeof n->text, "node %llu", (unsigned long long)i);
        n->next = head;
        head = n;
        if (i % 3 == 0)
            dvs_arena_free(a, dvs_arena_alloc(a, 1 + rng() % 300));
    }
    assert_int_equal(dvs_arena_set_root(a, head), 0);
    struct dvs_arena_stats before;
    dvs_arena_stats(a, &before);

    /* The "migration": copy the memfd, then allocate on the original. */
    int copy = copy_memfd(dvs_arena_fd(a), SIZE);
    uintptr_t expect[50];
    for (int i = 0; i < 50; i++)
        expect[i] = (uintptr_t)dvs_arena_alloc(a, 1 + (size_t)i * 37);
    dvs_arena_close(a);
    *state = NULL;

    dvs_arena *b;
    assert_int_equal(dvs_arena_open(copy, ADDR, SIZE, 0, &b), 0);
    struct dvs_arena_stats after;
    dvs_arena_stats(b, &after);
    assert_memory_equal(&before, &after, sizeof before);

    uint64_t i = 500;
    for (struct node *n = dvs_arena_root(b); n != NULL; n = n->next) {
        i--;
        assert_int_equal(n->value, i * i);
        char want[40];
        snprintf(want, sizeof want, "node %llu", (unsigned long long)i);
        assert_string_equal(n->text, want);
    }
    assert_int_equal(i, 0);

    /* The allocator continues exactly where the original was. */
    for (int k = 0; k < 50; k++)
        assert_int_equal((uintptr_t)dvs_arena_alloc(b, 1 + (size_t)k * 37), expect[k]);
    dvs_arena_close(b);
    close(copy);
}

static void mapping_over_a_used_range_fails_with_eexist(void **state)
{
    dvs_arena *a = *state, *b;
    int copy = copy_memfd(dvs_arena_fd(a), SIZE);

    assert_int_equal(dvs_arena_open(copy, ADDR, SIZE, 0, &b), -EEXIST);
    assert_int_equal(dvs_arena_create(ADDR + SIZE / 2, SIZE, &b), -EEXIST);
    /* The original is untouched. */
    assert_int_equal(dvs__arena_check(a), 0);
    close(copy);
}

static void bad_arguments_are_refused(void **state)
{
    dvs_arena *b;
    assert_int_equal(dvs_arena_create(ADDR + 100, SIZE, &b), -EINVAL);
    assert_int_equal(dvs_arena_create(ADDR, SIZE + 100, &b), -EINVAL);
    assert_int_equal(dvs_arena_create(ADDR, 4096, &b), -EINVAL);
    assert_int_equal(dvs_arena_create(0, SIZE, &b), -EINVAL);
    assert_int_equal(dvs_arena_open(-1, ADDR, SIZE, 0, &b), -EINVAL);
}

static void restore_rejects_what_is_not_this_arena(void **state)
{
    dvs_arena *a = *state, *b;
    const uintptr_t other = ADDR + 0x100000000ull;

    /* Zeros are no arena. */
    int zeros = memfd_create("zeros", MFD_CLOEXEC);
    assert_int_equal(ftruncate(zeros, SIZE), 0);
    assert_int_equal(dvs_arena_open(zeros, other, SIZE, 0, &b), DVS_EPROTO);
    /* The size must match. */
    assert_int_equal(dvs_arena_open(zeros, other, SIZE * 2, 0, &b), -EINVAL);
    close(zeros);

    /* A valid arena at another address would have dangling pointers. */
    int copy = copy_memfd(dvs_arena_fd(a), SIZE);
    assert_int_equal(dvs_arena_open(copy, other, SIZE, 0, &b), DVS_EPROTO);

    /* A corrupt free list is found by the full check, not by NOCHECK. */
    dvs_arena_free(a, dvs_arena_alloc(a, 100));
    void *p = dvs_arena_alloc(a, 100);
    dvs_arena_alloc(a, 100);
    dvs_arena_free(a, p); /* p's block is on a small list now */
    close(copy);
    copy = copy_memfd(dvs_arena_fd(a), SIZE);
    uint64_t corrupt = 0x12345;
    off_t link = (off_t)((uintptr_t)p - ADDR); /* payload: next link */
    assert_int_equal(pwrite(copy, &corrupt, sizeof corrupt, link), sizeof corrupt);
    dvs_arena_close(a);
    *state = NULL;
    assert_int_equal(dvs_arena_open(copy, ADDR, SIZE, 0, &b), DVS_EPROTO);
    assert_int_equal(dvs_arena_open(copy, ADDR, SIZE, DVS_ARENA_NOCHECK, &b), 0);
    assert_int_equal(dvs__arena_check(b), DVS_EPROTO);
    dvs_arena_close(b);
    close(copy);
}

static void init_on_an_agent_memfd_extends_and_formats_it(void **state)
{
    int fd = memfd_create("agent", MFD_CLOEXEC);
    dvs_arena *b;
    const uintptr_t other = ADDR + 0x200000000ull;

    assert_int_equal(dvs_arena_open(fd, other, SIZE, DVS_ARENA_INIT, &b), 0);
    assert_int_equal(dvs_arena_fd(b), fd);
    assert_non_null(dvs_arena_alloc(b, 10));
    dvs_arena_close(b); /* the fd stays the caller's */
    assert_int_equal(fcntl(fd, F_GETFD) >= 0, 1);
    assert_int_equal(dvs_arena_open(fd, other, SIZE, 0, &b), 0);
    dvs_arena_close(b);
    close(fd);
}

/* Freeing a pointer the arena did not hand out must stop the process. */
static void freeing_a_foreign_pointer_aborts(void **state)
{
    pid_t pid = fork();
    assert_true(pid >= 0);
    if (pid == 0) {
        /* The parent's arena is MADV_DONTFORK: make one in the child. */
        dvs_arena *b;
        if (dvs_arena_create(ADDR + 0x300000000ull, SIZE, &b) != 0)
            _exit(2);
        char *p = dvs_arena_alloc(b, 64);
        dvs_arena_free(b, p);
        dvs_arena_free(b, p); /* double free */
        _exit(0);
    }
    int status;
    assert_int_equal(waitpid(pid, &status, 0), pid);
    assert_true(WIFSIGNALED(status));
    assert_int_equal(WTERMSIG(status), SIGABRT);
}

int main(void)
{
#define T(name) cmocka_unit_test_setup_teardown(name, setup, teardown)
    const struct CMUnitTest tests[] = {
        T(fresh_arena_is_empty_and_valid),
        T(allocations_are_aligned_and_inside),
        T(random_patterns_never_overlap),
        T(freeing_neighbours_merges_them),
        T(exhaustion_returns_null_and_recovers),
        T(realloc_grows_in_place_when_it_can),
        T(root_must_be_an_allocated_block),
        T(reopened_copy_has_same_data_and_allocator_state),
        T(mapping_over_a_used_range_fails_with_eexist),
        T(bad_arguments_are_refused),
        T(restore_rejects_what_is_not_this_arena),
        T(init_on_an_agent_memfd_extends_and_formats_it),
        cmocka_unit_test(freeing_a_foreign_pointer_aborts),
    };
    return cmocka_run_group_tests_name("libdvs/arena", tests, NULL, NULL);
}
