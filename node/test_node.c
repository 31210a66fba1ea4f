/*
 * Unit tests of the agent's parsers and formats: everything in dvs-node that
 * reads bytes another process wrote (DESIGN.md §8, STYLE.md 12).
 *
 *   - the transfer stream (transfer.h): hello and records round-trip, and
 *     every malformed, out-of-bounds or corrupted one is refused;
 *   - the image scan and checksum: holes are skipped, zero pages do not
 *     count, runs and extents are right, a receiver that sums page hashes
 *     as pages arrive (and overwrite earlier ones) gets the sender's value,
 *     and the sums of disjoint ranges add up to the whole;
 *   - control messages (ctlmsg.h) and command lines (argv.h).
 *
 * Kept beside the code it tests (node/ is the agent's one folder).
 */
#include <errno.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <fcntl.h>
#include <linux/userfaultfd.h>
#include <sys/ioctl.h>
#include <sys/mman.h>
#include <sys/syscall.h>
#include <unistd.h>

#include <cmocka.h>

#include "dvs.h"
#include "node/argv.h"
#include "node/ctlmsg.h"
#include "node/dirty.h"
#include "node/transfer.h"

/* ------------------------------------------------------------------------ */
/* Transfer stream                                                           */
/* ------------------------------------------------------------------------ */

static struct node_xfer_hello good_hello(void)
{
    struct node_xfer_hello h = {
        .migration_id = 7,
        .token = 0x1234567890abcdefull,
        .arena_addr = 0x100000000000ull,
        .arena_size = 64u << 20,
        .generation = 3,
        .page_size = NODE_XFER_PAGE,
    };
    return h;
}

static void test_hello_round_trip(void **state)
{
    (void)state;
    uint8_t buf[NODE_XFER_HELLO_SIZE];
    struct node_xfer_hello h = good_hello(), got;
    node_xfer_hello_encode(&h, buf);
    assert_int_equal(node_xfer_hello_decode(buf, &got, NULL), 0);
    assert_memory_equal(&h, &got, sizeof(h));
}

static void test_hello_any_flipped_bit_is_refused(void **state)
{
    (void)state;
    uint8_t buf[NODE_XFER_HELLO_SIZE];
    struct node_xfer_hello h = good_hello(), got;
    node_xfer_hello_encode(&h, buf);
    for (size_t bit = 0; bit < sizeof(buf) * 8; bit++) {
        buf[bit / 8] ^= (uint8_t)(1u << (bit % 8));
        const char *why = NULL;
        assert_int_equal(node_xfer_hello_decode(buf, &got, &why), DVS_EPROTO);
        assert_non_null(why);
        buf[bit / 8] ^= (uint8_t)(1u << (bit % 8));
    }
}

/* Fields that are well-formed on the wire but not acceptable. */
static void test_hello_bad_values(void **state)
{
    (void)state;
    uint8_t buf[NODE_XFER_HELLO_SIZE];
    struct node_xfer_hello h, got;

    h = good_hello();
    h.migration_id = 0;
    node_xfer_hello_encode(&h, buf);
    assert_int_equal(node_xfer_hello_decode(buf, &got, NULL), DVS_EPROTO);

    h = good_hello();
    h.arena_size = (64ull << 30) + 4096; /* above the manager's maximum */
    node_xfer_hello_encode(&h, buf);
    assert_int_equal(node_xfer_hello_decode(buf, &got, NULL), DVS_EPROTO);

    h = good_hello();
    h.arena_size = 12345; /* not a page multiple */
    node_xfer_hello_encode(&h, buf);
    assert_int_equal(node_xfer_hello_decode(buf, &got, NULL), DVS_EPROTO);

    h = good_hello();
    h.page_size = 65536;
    node_xfer_hello_encode(&h, buf);
    assert_int_equal(node_xfer_hello_decode(buf, &got, NULL), DVS_EPROTO);

    h = good_hello();
    h.flags = 1;
    node_xfer_hello_encode(&h, buf);
    assert_int_equal(node_xfer_hello_decode(buf, &got, NULL), DVS_EPROTO);

    h = good_hello();
    h.generation = 0;
    node_xfer_hello_encode(&h, buf);
    assert_int_equal(node_xfer_hello_decode(buf, &got, NULL), DVS_EPROTO);

    /* Garbage: text, zeros. */
    memset(buf, 0, sizeof(buf));
    assert_int_equal(node_xfer_hello_decode(buf, &got, NULL), DVS_EPROTO);
    memcpy(buf, "GET / HTTP/1.1\r\nHost: x\r\n\r\nGET / HTTP/1.1\r\nHost: x\r\n\r\n0123456789", 64);
    assert_int_equal(node_xfer_hello_decode(buf, &got, NULL), DVS_EPROTO);
}

static int decode(uint16_t type, uint64_t a, uint64_t b, uint64_t c, uint64_t size,
                  struct node_xfer_rec *r)
{
    uint8_t buf[NODE_XFER_REC_SIZE];
    node_xfer_rec_encode(type, a, b, c, buf);
    return node_xfer_rec_decode(buf, size, r, NULL);
}

static void test_records(void **state)
{
    (void)state;
    const uint64_t size = 64u << 20;
    struct node_xfer_rec r;

    assert_int_equal(decode(NODE_XFER_PAGES, 4096, 8192, 0, size, &r), 0);
    assert_int_equal(r.type, NODE_XFER_PAGES);
    assert_true(r.a == 4096 && r.b == 8192);
    assert_int_equal(decode(NODE_XFER_PAGES, size - 4096, 4096, 0, size, &r), 0);
    assert_int_equal(decode(NODE_XFER_END, 1, 2, 3, size, &r), 0);
    assert_true(r.a == 1 && r.b == 2 && r.c == 3);
    assert_int_equal(decode(NODE_XFER_RESERVE, 0, size, 0, size, &r), 0);
    assert_int_equal(decode(NODE_XFER_RESULT, 1, 9, 0, 0, &r), 0);

    /* Ranges: unaligned, empty, too long, outside, overflowing. */
    assert_int_equal(decode(NODE_XFER_PAGES, 100, 4096, 0, size, &r), DVS_EPROTO);
    assert_int_equal(decode(NODE_XFER_PAGES, 0, 100, 0, size, &r), DVS_EPROTO);
    assert_int_equal(decode(NODE_XFER_PAGES, 0, 0, 0, size, &r), DVS_EPROTO);
    assert_int_equal(decode(NODE_XFER_PAGES, 0, NODE_XFER_MAX_RUN + 4096, 0, size, &r),
                     DVS_EPROTO);
    assert_int_equal(decode(NODE_XFER_PAGES, size, 4096, 0, size, &r), DVS_EPROTO);
    assert_int_equal(decode(NODE_XFER_PAGES, size - 4096, 8192, 0, size, &r), DVS_EPROTO);
    assert_int_equal(decode(NODE_XFER_PAGES, UINT64_MAX - 4095, 8192, 0, size, &r),
                     DVS_EPROTO);
    assert_int_equal(decode(NODE_XFER_RESERVE, 4096, size, 0, size, &r), DVS_EPROTO);
    /* FREEZE names a known method and stop reason. */
    assert_int_equal(decode(NODE_XFER_FREEZE, NODE_XFER_M_UFFD, NODE_XFER_S_BUDGET, 1u << 30,
                            size, &r), 0);
    assert_int_equal(decode(NODE_XFER_FREEZE, NODE_XFER_M_MAX + 1, 0, 0, size, &r), DVS_EPROTO);
    assert_int_equal(decode(NODE_XFER_FREEZE, 0, NODE_XFER_S_MAX + 1, 0, size, &r), DVS_EPROTO);
    /* Unknown types. */
    assert_int_equal(decode(0, 0, 0, 0, size, &r), DVS_EPROTO);
    assert_int_equal(decode(99, 0, 0, 0, size, &r), DVS_EPROTO);

    /* A corrupted header (a stream out of step) fails its check sum. */
    uint8_t buf[NODE_XFER_REC_SIZE];
    node_xfer_rec_encode(NODE_XFER_PAGES, 4096, 4096, 0, buf);
    for (size_t i = 0; i < sizeof(buf); i++) {
        buf[i] ^= 0x40;
        assert_int_equal(node_xfer_rec_decode(buf, size, &r, NULL), DVS_EPROTO);
        buf[i] ^= 0x40;
    }
}

/* ------------------------------------------------------------------------ */
/* Scanning                                                                  */
/* ------------------------------------------------------------------------ */

struct arena {
    int fd;
    uint8_t *w; /* writable view */
    uint8_t *r; /* read-only view, as the agent maps it */
    size_t size;
};

static void arena_make(struct arena *a, size_t pages)
{
    a->size = pages * NODE_XFER_PAGE;
    a->fd = memfd_create("test-arena", MFD_CLOEXEC);
    assert_true(a->fd >= 0);
    assert_int_equal(ftruncate(a->fd, (off_t)a->size), 0);
    a->w = mmap(NULL, a->size, PROT_READ | PROT_WRITE, MAP_SHARED, a->fd, 0);
    a->r = mmap(NULL, a->size, PROT_READ, MAP_SHARED, a->fd, 0);
    assert_true(a->w != MAP_FAILED && a->r != MAP_FAILED);
}

static void arena_free(struct arena *a)
{
    munmap(a->w, a->size);
    munmap(a->r, a->size);
    close(a->fd);
}

static void test_scan_skips_holes_and_zero_pages(void **state)
{
    (void)state;
    struct arena a;
    arena_make(&a, 64);
    /* Data on pages 1, 2, 3 and 10; page 5 allocated but zero. */
    memset(a.w + 1 * 4096, 1, 3 * 4096);
    a.w[10 * 4096 + 17] = 9;
    a.w[5 * 4096] = 1;
    a.w[5 * 4096] = 0;

    struct node_xfer_scan s;
    assert_int_equal(node_xfer_scan(a.fd, a.r, a.size, true, &s), 0);
    assert_int_equal(s.pages, 4);
    assert_int_equal(s.nruns, 2);
    assert_true(s.runs[0].offset == 4096 && s.runs[0].len == 3 * 4096);
    assert_true(s.runs[1].offset == 10 * 4096 && s.runs[1].len == 4096);

    /* A receiver summing page hashes as pages come, in any order and with
     * pages overwritten by later rounds, agrees. */
    uint64_t sum = 0, seen[64] = {0};
    for (size_t p = 64; p-- > 0;) {
        seen[p] = node_xfer_page_hash(p * 4096, a.r + p * 4096);
        sum += seen[p];
    }
    /* A later round resends page 2 and page 10 with new content... */
    uint8_t saved = a.w[2 * 4096];
    a.w[2 * 4096] = 0x77;
    a.w[10 * 4096 + 17] = 0;
    for (size_t p = 2; p <= 10; p += 8) {
        sum -= seen[p];
        seen[p] = node_xfer_page_hash(p * 4096, a.r + p * 4096);
        sum += seen[p];
    }
    struct node_xfer_scan s2;
    assert_int_equal(node_xfer_scan(a.fd, a.r, a.size, false, &s2), 0);
    assert_true(sum == s2.checksum);
    assert_int_equal(s2.pages, 3); /* page 10 is zero again */
    /* ...and the sums over disjoint ranges add up to the whole. */
    struct node_xfer_scan lo, hi;
    assert_int_equal(node_xfer_scan_range(a.fd, a.r, 0, 8 * 4096, false, &lo), 0);
    assert_int_equal(node_xfer_scan_range(a.fd, a.r, 8 * 4096, a.size, false, &hi), 0);
    assert_true(lo.checksum + hi.checksum == s2.checksum);
    assert_int_equal(lo.pages + hi.pages, s2.pages);
    a.w[2 * 4096] = saved;
    a.w[10 * 4096 + 17] = 9;

    /* Any change to a data page changes the checksum. */
    uint64_t before = s.checksum;
    free(s.runs);
    a.w[2 * 4096 + 100] ^= 1;
    assert_int_equal(node_xfer_scan(a.fd, a.r, a.size, false, &s), 0);
    assert_true(s.checksum != before);
    assert_null(s.runs);
    arena_free(&a);
}

static void test_scan_swapped_pages_differ(void **state)
{
    (void)state;
    struct arena a, b;
    arena_make(&a, 8);
    arena_make(&b, 8);
    /* Same pages, different places: the offset seeds each page's hash. */
    memset(a.w + 1 * 4096, 1, 4096);
    memset(a.w + 3 * 4096, 2, 4096);
    memset(b.w + 1 * 4096, 2, 4096);
    memset(b.w + 3 * 4096, 1, 4096);
    struct node_xfer_scan sa, sb;
    assert_int_equal(node_xfer_scan(a.fd, a.r, a.size, false, &sa), 0);
    assert_int_equal(node_xfer_scan(b.fd, b.r, b.size, false, &sb), 0);
    assert_true(sa.checksum != sb.checksum);
    arena_free(&a);
    arena_free(&b);
}

static void test_scan_same_content_same_checksum(void **state)
{
    (void)state;
    struct arena a, b;
    arena_make(&a, 32);
    arena_make(&b, 32);
    /* Same content; b also has an allocated zero page that a lacks. */
    memset(a.w + 4 * 4096, 7, 4096);
    memset(b.w + 4 * 4096, 7, 4096);
    memset(b.w + 20 * 4096, 0, 4096);
    b.w[20 * 4096] = 0;
    struct node_xfer_scan sa, sb;
    assert_int_equal(node_xfer_scan(a.fd, a.r, a.size, false, &sa), 0);
    assert_int_equal(node_xfer_scan(b.fd, b.r, b.size, false, &sb), 0);
    assert_true(sa.checksum == sb.checksum);
    arena_free(&a);
    arena_free(&b);
}

static void test_scan_splits_long_runs(void **state)
{
    (void)state;
    size_t pages = NODE_XFER_MAX_RUN / 4096 * 2 + 3;
    struct arena a;
    arena_make(&a, pages);
    memset(a.w, 0x5a, a.size);
    struct node_xfer_scan s;
    assert_int_equal(node_xfer_scan(a.fd, a.r, a.size, true, &s), 0);
    assert_int_equal(s.pages, pages);
    assert_int_equal(s.nruns, 3);
    uint64_t total = 0;
    for (size_t i = 0; i < s.nruns; i++) {
        assert_true(s.runs[i].len <= NODE_XFER_MAX_RUN);
        assert_true(s.runs[i].offset == total);
        total += s.runs[i].len;
    }
    assert_true(total == a.size);
    free(s.runs);
    arena_free(&a);
}

static void test_extents(void **state)
{
    (void)state;
    struct arena a;
    arena_make(&a, 256);
    a.w[0] = 1;               /* page 0 */
    a.w[2 * 4096] = 1;        /* page 2: gap of one page */
    a.w[100 * 4096] = 1;      /* far away */
    struct node_xfer_run *r;
    size_t n;
    assert_int_equal(node_xfer_extents(a.fd, a.size, 0, 1000, &r, &n), 0);
    assert_int_equal(n, 3);
    free(r);
    /* A small gap is merged over. */
    assert_int_equal(node_xfer_extents(a.fd, a.size, 4096, 1000, &r, &n), 0);
    assert_int_equal(n, 2);
    assert_true(r[0].offset == 0 && r[0].len == 3 * 4096);
    free(r);
    /* And the count is bounded whatever the layout. */
    assert_int_equal(node_xfer_extents(a.fd, a.size, 0, 1, &r, &n), 0);
    assert_int_equal(n, 1);
    assert_true(r[0].offset == 0 && r[0].len == 101 * 4096);
    free(r);
    arena_free(&a);

    /* An empty memfd has no extents. */
    arena_make(&a, 16);
    assert_int_equal(node_xfer_extents(a.fd, a.size, 0, 10, &r, &n), 0);
    assert_int_equal(n, 0);
    free(r);
    arena_free(&a);
}

/* ------------------------------------------------------------------------ */
/* Control messages                                                          */
/* ------------------------------------------------------------------------ */

static int parse(const char *s, struct node_ctl_msg *m)
{
    return node_ctl_parse(s, strlen(s), m);
}

static void test_ctl_parse(void **state)
{
    (void)state;
    struct node_ctl_msg m;
    uint64_t v;
    assert_int_equal(parse("ok id=3 state=frozen generation=2\n", &m), 0);
    assert_string_equal(m.verb, "ok");
    assert_string_equal(node_ctl_get(&m, "state"), "frozen");
    assert_int_equal(node_ctl_get_u64(&m, "id", 1, 10, &v), 0);
    assert_int_equal(v, 3);
    assert_int_equal(node_ctl_get_u64(&m, "id", 4, 10, &v), -EINVAL);
    assert_int_equal(node_ctl_get_u64(&m, "nope", 0, 10, &v), -ENOENT);
    assert_int_equal(node_ctl_get_u64(&m, "state", 0, 10, &v), -EINVAL);

    assert_int_equal(parse("error id=1 code=DVS_ECONFLICT message=freeze needs state serving", &m),
                     0);
    assert_string_equal(node_ctl_get(&m, "message"), "freeze needs state serving");

    assert_int_equal(parse("hello", &m), 0);
    assert_int_equal(m.n_args, 0);

    /* Refused: empty, bad verb, bad key, repeated key, control bytes,
     * missing '=', too long, too many keys. */
    assert_int_equal(parse("", &m), -EINVAL);
    assert_int_equal(parse("Hello id=1", &m), -EINVAL);
    assert_int_equal(parse("ok ID=1", &m), -EINVAL);
    assert_int_equal(parse("ok id=1 id=2", &m), -EINVAL);
    assert_int_equal(parse("ok id=1\tx=2", &m), -EINVAL);
    assert_int_equal(parse("ok id", &m), -EINVAL);
    assert_int_equal(node_ctl_parse("ok id=1\0x=2", 10, &m), -EINVAL);
    char big[NODE_CTL_MAX + 2];
    memset(big, 'a', sizeof(big));
    assert_int_equal(node_ctl_parse(big, sizeof(big), &m), -EINVAL);
    char many[1024] = "ok";
    for (int i = 0; i < NODE_CTL_MAX_ARGS + 1; i++) {
        char kv[16];
        snprintf(kv, sizeof(kv), " k%c=1", 'a' + i);
        strcat(many, kv);
    }
    assert_int_equal(parse(many, &m), -EINVAL);
}

/* ------------------------------------------------------------------------ */
/* Command lines                                                             */
/* ------------------------------------------------------------------------ */

static void test_split_command(void **state)
{
    (void)state;
    char **argv;
    const char *why;
    assert_int_equal(node_split_command("/bin/kv --a 1  --b\t2", &argv, &why), 0);
    assert_string_equal(argv[0], "/bin/kv");
    assert_string_equal(argv[3], "--b");
    assert_string_equal(argv[4], "2");
    assert_null(argv[5]);
    free(argv);

    /* Quotes group and nothing is expanded. */
    assert_int_equal(node_split_command("kv 'a b' \"c \\\"d\\\"\" e\\ f $HOME *", &argv, &why), 0);
    assert_string_equal(argv[1], "a b");
    assert_string_equal(argv[2], "c \"d\"");
    assert_string_equal(argv[3], "e f");
    assert_string_equal(argv[4], "$HOME");
    assert_string_equal(argv[5], "*");
    assert_null(argv[6]);
    free(argv);

    assert_int_equal(node_split_command("", &argv, &why), -EINVAL);
    assert_int_equal(node_split_command("   ", &argv, &why), -EINVAL);
    assert_int_equal(node_split_command("kv 'open", &argv, &why), -EINVAL);
    assert_int_equal(node_split_command("kv \"open", &argv, &why), -EINVAL);
    assert_int_equal(node_split_command("kv\nrm -rf /", &argv, &why), -EINVAL);
    char many[NODE_MAX_ARGS * 2 + 8] = "";
    for (int i = 0; i <= NODE_MAX_ARGS; i++)
        strcat(many, "a ");
    assert_int_equal(node_split_command(many, &argv, &why), -EINVAL);
    char *huge = malloc(NODE_MAX_COMMAND + 2);
    memset(huge, 'x', NODE_MAX_COMMAND + 1);
    huge[NODE_MAX_COMMAND + 1] = '\0';
    assert_int_equal(node_split_command(huge, &argv, &why), -EINVAL);
    free(huge);
}

/* ------------------------------------------------------------------------ */
/* Pre-copy: run lists, the stop rule, dirty tracking                        */
/* ------------------------------------------------------------------------ */

static void test_runs_merge_and_union(void **state)
{
    (void)state;
    struct node_runs a = {0}, b = {0};
    node_runs_add(&a, 0, 4096);
    node_runs_add(&a, 4096, 8192); /* adjacent: merged */
    node_runs_add(&a, 40960, 4096);
    assert_int_equal(a.n, 2);
    assert_true(a.v[0].offset == 0 && a.v[0].len == 12288);
    assert_true(a.bytes == 16384);
    /* Long runs are split at NODE_XFER_MAX_RUN. */
    struct node_runs l = {0};
    node_runs_add(&l, 0, 2ull * NODE_XFER_MAX_RUN + 4096);
    assert_int_equal(l.n, 3);
    assert_true(l.v[2].len == 4096 && l.bytes == 2ull * NODE_XFER_MAX_RUN + 4096);
    node_runs_free(&l);
    /* The union has each page once. */
    node_runs_add(&b, 8192, 8192);  /* overlaps a's first run, extends it */
    node_runs_add(&b, 40960, 4096); /* same page */
    node_runs_add(&b, 81920, 4096); /* new */
    node_runs_union(&a, &b);
    assert_true(a.bytes == 16384 + 4096 + 4096);
    assert_int_equal(a.n, 3);
    assert_true(a.v[0].offset == 0 && a.v[0].len == 16384);
    assert_true(a.v[1].offset == 40960 && a.v[2].offset == 81920);
    /* Union with an empty list changes nothing; into an empty one copies. */
    struct node_runs e = {0};
    node_runs_union(&a, &e);
    assert_true(a.bytes == 24576);
    node_runs_union(&e, &a);
    assert_true(e.bytes == 24576 && e.n == 3);
    node_runs_free(&a);
    node_runs_free(&b);
    node_runs_free(&e);
}

static void test_precopy_rule(void **state)
{
    (void)state;
    const struct node_precopy_rule rule = {
        .budget_ms = 20, .max_rounds = 5, .throttle_steps = 3, .overhead_ms = 2};
    int reason = -1;
    double est = 0;
    /* 1 MB/s measured: 10 KB fits (10 ms + 2), 100 KB does not. */
    struct node_precopy_state st = {.rounds = 1, .bw = 1e6};
    assert_int_equal(node_precopy_decide(&rule, &st, 10000, &reason, &est), NODE_PC_FREEZE);
    assert_int_equal(reason, NODE_XFER_S_BUDGET);
    assert_true(est > 11.9 && est < 12.1);
    assert_int_equal(node_precopy_decide(&rule, &st, 100000, &reason, &est), NODE_PC_SEND);
    /* Rounds that stop shrinking (by less than 10%) start throttling... */
    st = (struct node_precopy_state){.rounds = 2, .prev_dirty = 100000, .bw = 1e6};
    assert_int_equal(node_precopy_decide(&rule, &st, 95000, &reason, &est), NODE_PC_THROTTLE);
    assert_int_equal(reason, NODE_XFER_S_NO_PROGRESS);
    /* ...but not in round 1 (round 0 sent everything: no trend yet). */
    st.rounds = 1;
    assert_int_equal(node_precopy_decide(&rule, &st, 95000, &reason, &est), NODE_PC_SEND);
    /* A shrinking round goes on. */
    st.rounds = 3;
    assert_int_equal(node_precopy_decide(&rule, &st, 50000, &reason, &est), NODE_PC_SEND);
    /* The round cap throttles even when shrinking. */
    st.rounds = 5;
    assert_int_equal(node_precopy_decide(&rule, &st, 50000, &reason, &est), NODE_PC_THROTTLE);
    assert_int_equal(reason, NODE_XFER_S_ROUND_CAP);
    /* Once throttling, each round adds a step, until the last: then freeze. */
    st = (struct node_precopy_state){.rounds = 3, .prev_dirty = 900000, .throttle_step = 1,
                                     .bw = 1e6};
    assert_int_equal(node_precopy_decide(&rule, &st, 100000, &reason, &est), NODE_PC_THROTTLE);
    st.throttle_step = 3;
    assert_int_equal(node_precopy_decide(&rule, &st, 100000, &reason, &est), NODE_PC_FREEZE);
    assert_int_equal(reason, NODE_XFER_S_THROTTLE_CAP);
    /* And it always ends: a service that dirties more each round, any rule. */
    for (uint64_t cap = 1; cap <= 8; cap++) {
        struct node_precopy_rule r = rule;
        r.max_rounds = cap;
        struct node_precopy_state s2 = {.rounds = 1, .bw = 1e6};
        uint64_t d = 1000000;
        unsigned steps = 0;
        for (;;) {
            enum node_precopy_next nx = node_precopy_decide(&r, &s2, d, &reason, &est);
            if (nx == NODE_PC_FREEZE)
                break;
            if (nx == NODE_PC_THROTTLE)
                s2.throttle_step++;
            s2.prev_dirty = d;
            s2.rounds++;
            d += 1000;
            assert_true(++steps < 100);
        }
        assert_true(s2.rounds <= cap + r.throttle_steps + 2);
    }
    /* No measure yet: a modest guess, not a division by zero. */
    st = (struct node_precopy_state){.rounds = 1};
    node_precopy_decide(&rule, &st, 1000, &reason, &est);
    assert_true(est > 0 && est < 20);
}

static void test_bitmap(void **state)
{
    (void)state;
    const uint64_t pages = 130; /* three words per bitmap */
    uint8_t map[64 + 2 * 3 * 8] = {0};
    uint32_t v32;
    uint64_t v64;
    const char *why = NULL;
    v32 = NODE_DIRTY_BITMAP_MAGIC; memcpy(map, &v32, 4);
    v32 = 1u | (64u << 16); memcpy(map + 4, &v32, 4);
    v32 = 4096; memcpy(map + 8, &v32, 4);
    v64 = pages; memcpy(map + 16, &v64, 8);
    assert_int_equal(node_dirty_bitmap_check(map, sizeof(map), pages, &why), 0);
    assert_int_equal(node_dirty_bitmap_check(map, sizeof(map) - 1, pages, &why), DVS_EPROTO);
    assert_int_equal(node_dirty_bitmap_check(map, sizeof(map), pages + 1, &why), DVS_EPROTO);
    assert_non_null(why);
    map[0] ^= 1;
    assert_int_equal(node_dirty_bitmap_check(map, sizeof(map), pages, &why), DVS_EPROTO);
    map[0] ^= 1;
    /* Bitmap 1: pages 0, 1, 64, 129. Bitmap 0: page 5. */
    uint8_t *b0 = map + 64, *b1 = map + 64 + 24;
    b0[0] = 1 << 5;
    b1[0] = 3;
    b1[8] = 1;
    b1[16] = 2;
    struct node_runs r = {0};
    node_dirty_bitmap_runs(map, pages, 1, &r);
    assert_int_equal(r.n, 3);
    assert_true(r.v[0].offset == 0 && r.v[0].len == 8192);
    assert_true(r.v[1].offset == 64 * 4096ull && r.v[2].offset == 129 * 4096ull);
    node_runs_clear(&r);
    node_dirty_bitmap_runs(map, pages, 0, &r);
    assert_true(r.n == 1 && r.v[0].offset == 5 * 4096ull);
    node_runs_free(&r);
}

/* The real mechanism on this process's own memory: what the agent does to
 * a service's (the uffd and pagemap are this process's here). */
static void test_uffd_tracking(void **state)
{
    (void)state;
    char why[200];
    if (!node_dirty_probe_uffd(why, sizeof(why))) {
        print_message("# skipped: no async userfaultfd write-protect here (%s)\n", why);
        skip();
    }
    struct arena a;
    arena_make(&a, 256);
    memset(a.w, 1, 16 * 4096); /* populated pages and never-touched ones */
    int uffd = (int)syscall(SYS_userfaultfd, O_CLOEXEC | O_NONBLOCK | 1 /* user mode only */);
    if (uffd < 0)
        uffd = (int)syscall(SYS_userfaultfd, O_CLOEXEC | O_NONBLOCK);
    assert_true(uffd >= 0);
    struct uffdio_api api = {.api = UFFD_API, .features = (1 << 15) | (1 << 13) | (1 << 12)};
    assert_int_equal(ioctl(uffd, UFFDIO_API, &api), 0);
    int pagemap = open("/proc/self/pagemap", O_RDONLY | O_CLOEXEC);
    struct node_dirty_uffd t;
    assert_int_equal(node_dirty_uffd_start(&t, uffd, pagemap, (uint64_t)(uintptr_t)a.w, a.size),
                     0);
    struct node_runs r = {0};
    assert_int_equal(node_dirty_uffd_collect(&t, &r), 0);
    assert_int_equal(r.n, 0);
    /* Writes to populated and fresh pages, and one through a syscall. */
    a.w[3 * 4096] = 7;
    a.w[100 * 4096 + 5] = 7;
    a.w[101 * 4096] = 7;
    assert_int_equal(pread(a.fd, a.w + 200 * 4096, 16, 0), 16);
    assert_int_equal(node_dirty_uffd_collect(&t, &r), 0);
    assert_int_equal(r.n, 3);
    assert_true(r.v[0].offset == 3 * 4096ull && r.v[0].len == 4096);
    assert_true(r.v[1].offset == 100 * 4096ull && r.v[1].len == 8192);
    assert_true(r.v[2].offset == 200 * 4096ull);
    /* Re-protected by the collect: nothing new, then only the new write. */
    node_runs_clear(&r);
    assert_int_equal(node_dirty_uffd_collect(&t, &r), 0);
    assert_int_equal(r.n, 0);
    a.w[3 * 4096] = 8;
    assert_int_equal(node_dirty_uffd_collect(&t, &r), 0);
    assert_true(r.n == 1 && r.bytes == 4096);
    node_runs_free(&r);
    node_dirty_uffd_stop(&t);
    node_dirty_uffd_stop(&t); /* idempotent */
    a.w[50 * 4096] = 1; /* plain memory again */
    arena_free(&a);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_hello_round_trip),
        cmocka_unit_test(test_hello_any_flipped_bit_is_refused),
        cmocka_unit_test(test_hello_bad_values),
        cmocka_unit_test(test_records),
        cmocka_unit_test(test_scan_skips_holes_and_zero_pages),
        cmocka_unit_test(test_scan_same_content_same_checksum),
        cmocka_unit_test(test_scan_swapped_pages_differ),
        cmocka_unit_test(test_runs_merge_and_union),
        cmocka_unit_test(test_precopy_rule),
        cmocka_unit_test(test_bitmap),
        cmocka_unit_test(test_uffd_tracking),
        cmocka_unit_test(test_scan_splits_long_runs),
        cmocka_unit_test(test_extents),
        cmocka_unit_test(test_ctl_parse),
        cmocka_unit_test(test_split_command),
    };
    return cmocka_run_group_tests_name("node", tests, NULL, NULL);
}
