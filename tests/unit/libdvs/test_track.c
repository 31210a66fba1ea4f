/*
 * The mprotect dirty-tracking fallback and the throttle (DESIGN.md §4,
 * docs/control-protocol.md §5), end to end: a real service process
 * (test_service) started the way dvs-node starts it, and this test playing
 * the agent: it sends track-start / track-collect / track-stop / throttle,
 * receives the bitmap memfd, reads it as the agent would, and copies the
 * arena round by round as a pre-copy migration does.
 */
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <limits.h>
#include <poll.h>
#include <setjmp.h>
#include <signal.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cmocka.h>

#include "control.h"
#include "dvs_track.h"
#include "frame.h"
#include "net.h"
#include "track.h"

#define ARENA_ADDR 0x7e6000000000ull
#define ARENA_SIZE (4u << 20)
#define ARENA_FD_CHILD 100
#define CONTROL_FD_CHILD 101
#define REGION_PAGES 512

static char service_path[PATH_MAX];
static size_t page_size;
/* Appended to ASAN_OPTIONS for the next service started (or NULL). */
static const char *asan_extra;

#if defined(__SANITIZE_ADDRESS__)
#define UNDER_ASAN 1
#elif defined(__has_feature)
#if __has_feature(address_sanitizer)
#define UNDER_ASAN 1
#endif
#endif
#ifndef UNDER_ASAN
#define UNDER_ASAN 0
#endif

/* ---------------------------------------------------------------------------
 * The agent's side
 */

struct svc {
    pid_t pid;
    int ctl;       /* control socket */
    int conn;      /* one client connection, raw frames */
    int memfd;     /* the arena */
    uint64_t next_id, next_seq;
    char address[64];
    bool reaped;
    int status;    /* exit status, or 128 + signal */
    /* The bitmap, once tracking is on. */
    int bitmap_fd;
    const struct dvs_track_hdr *hdr;
    size_t map_size;
};

/* Receive one control message and the fds attached to it (closed unless
 * the caller asks for the first one). */
static int ctl_recv(struct svc *s, int timeout_ms, struct dvs__ctl_msg *m, int *ret_fd)
{
    char buf[DVS__CTL_MAX];
    union {
        char b[CMSG_SPACE(sizeof(int) * 3)];
        struct cmsghdr align;
    } cbuf;
    struct iovec iov = {.iov_base = buf, .iov_len = sizeof buf};
    struct msghdr mh = {.msg_iov = &iov, .msg_iovlen = 1, .msg_control = cbuf.b,
                        .msg_controllen = sizeof cbuf.b};
    struct pollfd p = {.fd = s->ctl, .events = POLLIN};
    if (poll(&p, 1, timeout_ms) != 1)
        return -ETIMEDOUT;
    ssize_t n = recvmsg(s->ctl, &mh, MSG_CMSG_CLOEXEC | MSG_DONTWAIT);
    if (n <= 0)
        return -ECONNRESET;
    if (ret_fd != NULL)
        *ret_fd = -1;
    for (struct cmsghdr *c = CMSG_FIRSTHDR(&mh); c != NULL; c = CMSG_NXTHDR(&mh, c)) {
        if (c->cmsg_level != SOL_SOCKET || c->cmsg_type != SCM_RIGHTS)
            continue;
        size_t nfds = (c->cmsg_len - CMSG_LEN(0)) / sizeof(int);
        int fds[3];
        memcpy(fds, CMSG_DATA(c), nfds * sizeof(int));
        for (size_t i = 0; i < nfds; i++) {
            if (i == 0 && ret_fd != NULL)
                *ret_fd = fds[i];
            else
                close(fds[i]);
        }
    }
    assert_int_equal(dvs__ctl_parse(buf, (size_t)n, m), 0);
    return 0;
}

/* Send "verb id=N args" and wait for its answer (events are skipped). */
static void cmd(struct svc *s, const char *verb, const char *args, struct dvs__ctl_msg *m,
                int *ret_fd)
{
    char buf[512], want[32];
    uint64_t id = ++s->next_id;
    int n = snprintf(buf, sizeof buf, "%s id=%" PRIu64 "%s%s", verb, id, args ? " " : "",
                     args ? args : "");
    assert_int_equal(send(s->ctl, buf, (size_t)n, MSG_NOSIGNAL), n);
    snprintf(want, sizeof want, "%" PRIu64, id);
    for (;;) {
        assert_int_equal(ctl_recv(s, 10000, m, ret_fd), 0);
        const char *got = dvs__ctl_get(m, "id");
        if (got != NULL && strcmp(got, want) == 0)
            return;
        if (ret_fd != NULL && *ret_fd >= 0)
            close(*ret_fd);
    }
}

static void cmd_ok(struct svc *s, const char *verb, const char *args, struct dvs__ctl_msg *m)
{
    cmd(s, verb, args, m, NULL);
    if (strcmp(m->verb, "ok") != 0)
        fail_msg("%s %s: %s %s", verb, args ? args : "", dvs__ctl_get(m, "code"),
                 dvs__ctl_get(m, "message") ? dvs__ctl_get(m, "message") : "");
}

static void cmd_err(struct svc *s, const char *verb, const char *args, const char *code)
{
    struct dvs__ctl_msg m;
    cmd(s, verb, args, &m, NULL);
    assert_string_equal(m.verb, "error");
    assert_string_equal(dvs__ctl_get(&m, "code"), code);
    assert_non_null(dvs__ctl_get(&m, "message"));
}

static uint64_t get_u64(const struct dvs__ctl_msg *m, const char *key)
{
    uint64_t v;
    if (dvs__ctl_get_u64(m, key, 0, UINT64_MAX, &v) != 0)
        fail_msg("%s: no number %s=", m->verb, key);
    return v;
}

static void svc_start(struct svc *s, const char *extra_env)
{
    int sv[2];
    memset(s, 0, sizeof *s);
    s->bitmap_fd = -1;
    s->memfd = memfd_create("test-arena", MFD_CLOEXEC);
    assert_true(s->memfd >= 0);
    assert_int_equal(ftruncate(s->memfd, ARENA_SIZE), 0);
    assert_int_equal(socketpair(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC, 0, sv), 0);

    /* Everything the child needs is built before fork. */
    char e_afd[64], e_addr[64], e_size[64], e_cfd[64];
    snprintf(e_afd, sizeof e_afd, "DVS_ARENA_FD=%d", ARENA_FD_CHILD);
    snprintf(e_addr, sizeof e_addr, "DVS_ARENA_ADDR=0x%llx", ARENA_ADDR);
    snprintf(e_size, sizeof e_size, "DVS_ARENA_SIZE=%u", ARENA_SIZE);
    snprintf(e_cfd, sizeof e_cfd, "DVS_CONTROL_FD=%d", CONTROL_FD_CHILD);
    char *envp[16] = {"DVS_ENDPOINT=kv", "DVS_LISTEN=127.0.0.1:0", "DVS_MODE=fresh",
                      "DVS_GENERATION=1", e_afd, e_addr, e_size, e_cfd};
    int n = 8;
    if (extra_env != NULL)
        envp[n++] = (char *)extra_env;
    if (getenv("DVS_TEST_VERBOSE") != NULL)
        envp[n++] = "DVS_TEST_VERBOSE=1";
    static char asan[512];
    if (getenv("ASAN_OPTIONS") != NULL) {
        snprintf(asan, sizeof asan, "ASAN_OPTIONS=%s%s%s", getenv("ASAN_OPTIONS"),
                 asan_extra != NULL ? ":" : "", asan_extra != NULL ? asan_extra : "");
        envp[n++] = asan;
    } else if (asan_extra != NULL) {
        snprintf(asan, sizeof asan, "ASAN_OPTIONS=%s", asan_extra);
        envp[n++] = asan;
    }
    envp[n] = NULL;
    char *argv[] = {service_path, NULL};

    s->pid = fork();
    assert_true(s->pid >= 0);
    if (s->pid == 0) {
        if (dup2(s->memfd, ARENA_FD_CHILD) < 0 || dup2(sv[1], CONTROL_FD_CHILD) < 0)
            _exit(126);
        execve(service_path, argv, envp);
        _exit(127);
    }
    close(sv[1]);
    s->ctl = sv[0];
    struct dvs__ctl_msg m;
    assert_int_equal(ctl_recv(s, 10000, &m, NULL), 0);
    assert_string_equal(m.verb, "hello");
    snprintf(s->address, sizeof s->address, "%s", dvs__ctl_get(&m, "address"));
    assert_int_equal(dvs__net_dial(s->address, dvs__now_ms() + 5000, &s->conn), 0);
}

/* Send a request on the raw connection (the reply is read by read_reply). */
static void send_req(struct svc *s, const char *req)
{
    static const uint8_t client_id[16] = {7, 7, 7, 7, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12};
    struct dvs__frame f = {
        .type = DVS__FRAME_REQUEST,
        .name = "kv",
        .name_len = 2,
        .generation = 1,
        .seq = ++s->next_seq,
        .payload = req,
        .payload_len = (uint32_t)strlen(req),
    };
    memcpy(f.client_id, client_id, 16);
    uint8_t buf[8192];
    size_t len;
    assert_int_equal(dvs__frame_encode(&f, buf, sizeof buf, &len), 0);
    assert_int_equal(send(s->conn, buf, len, MSG_NOSIGNAL), (ssize_t)len);
}

/* Read the next reply; returns its status and text, or a negative error. */
static int read_reply(struct svc *s, char *out, size_t outlen)
{
    uint8_t *rbuf = NULL;
    size_t cap = 0, got;
    struct dvs__frame r;
    int rv = dvs__net_read_frame(s->conn, &rbuf, &cap, DVS_MAX_PAYLOAD, dvs__now_ms() + 10000,
                                 &r, &got);
    if (rv != 0) {
        free(rbuf);
        return rv;
    }
    size_t n = r.payload_len < outlen - 1 ? r.payload_len : outlen - 1;
    if (n > 0)
        memcpy(out, r.payload, n);
    out[n] = '\0';
    int status = r.status;
    free(rbuf);
    return status;
}

static int call(struct svc *s, const char *req, char *out, size_t outlen)
{
    send_req(s, req);
    return read_reply(s, out, outlen);
}

static void call_ok(struct svc *s, const char *req, char *out, size_t outlen)
{
    int st = call(s, req, out, outlen);
    if (st != DVS__STATUS_OK)
        fail_msg("call \"%.40s\": status %d", req, st);
}

/* Wait for the process to exit; returns its status (128 + signal), or -1. */
static int svc_wait(struct svc *s, int timeout_ms)
{
    for (int waited = 0; !s->reaped && waited < timeout_ms; waited += 5) {
        int st;
        if (waitpid(s->pid, &st, WNOHANG) == s->pid) {
            s->reaped = true;
            s->status = WIFEXITED(st) ? WEXITSTATUS(st) : 128 + WTERMSIG(st);
            break;
        }
        usleep(5000);
    }
    return s->reaped ? s->status : -1;
}

static void svc_cleanup(struct svc *s)
{
    if (s->pid > 0 && !s->reaped) {
        kill(s->pid, SIGKILL);
        waitpid(s->pid, NULL, 0);
        s->reaped = true;
    }
    if (s->hdr != NULL)
        munmap((void *)s->hdr, s->map_size);
    s->hdr = NULL;
    if (s->bitmap_fd > 0)
        close(s->bitmap_fd);
    if (s->conn > 0)
        close(s->conn);
    if (s->ctl > 0)
        close(s->ctl);
    if (s->memfd > 0)
        close(s->memfd);
    s->bitmap_fd = s->conn = s->ctl = s->memfd = -1;
}

/* track-start; maps the bitmap read-only and checks its header. */
static void track_start(struct svc *s, const char *args)
{
    struct dvs__ctl_msg m;
    int fd;
    cmd(s, "track-start", args, &m, &fd);
    if (strcmp(m.verb, "ok") != 0)
        fail_msg("track-start: %s %s", dvs__ctl_get(&m, "code"), dvs__ctl_get(&m, "message"));
    assert_string_equal(dvs__ctl_get(&m, "fds"), "bitmap");
    assert_true(fd >= 0);
    uint64_t pages = ARENA_SIZE / page_size;
    assert_int_equal(get_u64(&m, "pages"), pages);

    /* Sealed: the agent can rely on its size. */
    int seals = fcntl(fd, F_GET_SEALS);
    assert_true((seals & F_SEAL_SHRINK) && (seals & F_SEAL_GROW));
    assert_int_equal(ftruncate(fd, 0), -1);

    s->map_size = (size_t)DVS_TRACK_BITMAP_OFF(pages, 2);
    void *p = mmap(NULL, s->map_size, PROT_READ, MAP_SHARED, fd, 0);
    assert_true(p != MAP_FAILED);
    s->hdr = p;
    s->bitmap_fd = fd;
    assert_int_equal(s->hdr->magic, DVS_TRACK_MAGIC);
    assert_memory_equal(&s->hdr->magic, "DVSB", 4);
    assert_int_equal(s->hdr->version, DVS_TRACK_VERSION);
    assert_int_equal(s->hdr->hdr_size, DVS_TRACK_HDR_SIZE);
    assert_int_equal(s->hdr->page_size, page_size);
    assert_int_equal(s->hdr->pages, pages);
    assert_int_equal(s->hdr->active, 0);
}

static const uint64_t *bitmap(const struct svc *s, unsigned k)
{
    return (const uint64_t *)((const char *)s->hdr + DVS_TRACK_BITMAP_OFF(s->hdr->pages, k));
}

static bool bit(const uint64_t *bm, uint64_t i)
{
    return (bm[i / 64] >> (i % 64)) & 1;
}

struct collect {
    unsigned k;
    uint64_t dirty;
    bool overflow;
    const uint64_t *bm;
};

static struct collect collect(struct svc *s)
{
    struct dvs__ctl_msg m;
    cmd_ok(s, "track-collect", NULL, &m);
    struct collect c = {
        .k = (unsigned)get_u64(&m, "bitmap"),
        .dirty = get_u64(&m, "dirty"),
        .overflow = get_u64(&m, "overflow") != 0,
    };
    assert_true(c.k <= 1);
    c.bm = bitmap(s, c.k);
    /* The header says the service now writes into the other one. */
    assert_int_equal(s->hdr->active, 1 - c.k);
    uint64_t count = 0;
    for (uint64_t w = 0; w < DVS_TRACK_WORDS(s->hdr->pages); w++)
        count += (uint64_t)__builtin_popcountll(c.bm[w]);
    assert_int_equal(count, c.dirty);
    return c;
}

/* The region the service writes to: arena page indices [first, first+n). */
static uint64_t region(struct svc *s)
{
    char out[64];
    call_ok(s, "region " /* pages: */ "512", out, sizeof out);
    unsigned long long first, n;
    assert_int_equal(sscanf(out, "%llu %llu", &first, &n), 2);
    assert_int_equal(n, REGION_PAGES);
    return first;
}

/* Whether the arena range is one read-write mapping in the service. */
static bool arena_is_one_rw_mapping(pid_t pid)
{
    char path[64], line[512];
    snprintf(path, sizeof path, "/proc/%d/maps", (int)pid);
    FILE *f = fopen(path, "r");
    assert_non_null(f);
    int inside = 0;
    bool rw = true;
    while (fgets(line, sizeof line, f) != NULL) {
        unsigned long long lo, hi;
        char perms[8];
        if (sscanf(line, "%llx-%llx %7s", &lo, &hi, perms) != 3)
            continue;
        if (hi <= ARENA_ADDR || lo >= ARENA_ADDR + ARENA_SIZE)
            continue;
        inside++;
        rw = rw && perms[0] == 'r' && perms[1] == 'w';
    }
    fclose(f);
    return inside == 1 && rw;
}

static int setup(void **state)
{
    struct svc *s = calloc(1, sizeof *s);
    if (s == NULL)
        return -1;
    s->pid = -1;
    *state = s;
    return 0;
}

static int teardown(void **state)
{
    svc_cleanup(*state);
    free(*state);
    return 0;
}

/* ---------------------------------------------------------------------------
 * Tracking
 */

static void collect_reports_exactly_the_pages_written(void **state)
{
    struct svc *s = *state;
    struct dvs__ctl_msg m;
    char out[64], req[128];
    svc_start(s, NULL);
    uint64_t first = region(s);

    track_start(s, NULL);
    cmd_ok(s, "status", NULL, &m);
    assert_string_equal(dvs__ctl_get(&m, "tracking"), "mprotect");
    assert_false(arena_is_one_rw_mapping(s->pid)); /* write-protected */

    uint64_t w[] = {first + 3, first + 4, first + 100, first + 511};
    snprintf(req, sizeof req, "write %" PRIu64 " %" PRIu64 " %" PRIu64 " %" PRIu64, w[0], w[1],
             w[2], w[3]);
    call_ok(s, req, out, sizeof out);
    assert_string_equal(out, "ok");

    struct collect c = collect(s);
    assert_false(c.overflow);
    /* In the region, exactly the pages written; outside it only the few
     * the library itself wrote (the reply cache, for this request). */
    unsigned in_region = 0;
    for (uint64_t i = first; i < first + REGION_PAGES; i++) {
        bool want = i == w[0] || i == w[1] || i == w[2] || i == w[3];
        if (bit(c.bm, i) != want)
            fail_msg("page %" PRIu64 " (region page %" PRIu64 "): bit %d, written %d", i,
                     i - first, bit(c.bm, i), want);
        in_region += want;
    }
    assert_int_equal(in_region, 4);
    assert_true(c.dirty >= 4 && c.dirty <= 4 + 8);

    /* Nothing written since: nothing dirty (a status command writes nothing). */
    cmd_ok(s, "status", NULL, &m);
    struct collect c2 = collect(s);
    assert_int_equal(c2.dirty, 0);
    assert_int_not_equal(c2.k, c.k);
    cmd_ok(s, "track-stop", NULL, &m);
}

static void writes_between_collects_go_to_the_other_bitmap(void **state)
{
    struct svc *s = *state;
    struct dvs__ctl_msg m;
    char out[64], req[64];
    svc_start(s, NULL);
    uint64_t first = region(s);
    track_start(s, NULL);

    snprintf(req, sizeof req, "write %" PRIu64, first + 10);
    call_ok(s, req, out, sizeof out);
    struct collect a = collect(s);
    assert_true(bit(a.bm, first + 10));

    /* Written after the first collect: reported by the second, in the
     * other bitmap, while the first still says what it said. */
    snprintf(req, sizeof req, "write %" PRIu64, first + 20);
    call_ok(s, req, out, sizeof out);
    struct collect b = collect(s);
    assert_int_not_equal(a.k, b.k);
    assert_true(bit(b.bm, first + 20));
    assert_false(bit(b.bm, first + 10));

    /* The same page again, after its re-protection: reported again. */
    snprintf(req, sizeof req, "write %" PRIu64, first + 20);
    call_ok(s, req, out, sizeof out);
    struct collect c = collect(s);
    assert_int_equal(c.k, a.k);
    assert_true(bit(c.bm, first + 20));
    assert_false(bit(c.bm, first + 10)); /* cleared before reuse */
    cmd_ok(s, "track-stop", NULL, &m);
}

/*
 * The property pre-copy needs: a thread writes random pages without pause
 * while the agent collects and copies, round after round; after the writer
 * stops and a last round, the agent's copy equals the arena, and every page
 * the writer touched was reported by some collect.
 */
static void writes_racing_collects_are_never_lost(void **state)
{
    struct svc *s = *state;
    struct dvs__ctl_msg m;
    char out[REGION_PAGES + 1];
    /* At least this many rounds, and until the writer has had this many
     * pages reported (it needs CPU time; bounded by a deadline). */
    enum { MIN_ROUNDS = 300, MIN_REPORTS = 1000, DEADLINE_MS = 15000 };
    svc_start(s, NULL);
    uint64_t first = region(s);

    uint8_t *replica = malloc(ARENA_SIZE), *now = malloc(ARENA_SIZE);
    uint64_t *reported = calloc(DVS_TRACK_WORDS(ARENA_SIZE / page_size), 8);
    assert_non_null(replica);
    assert_non_null(now);
    assert_non_null(reported);

    track_start(s, NULL);
    /* Round 0: the full copy, made after tracking started. */
    assert_int_equal(pread(s->memfd, replica, ARENA_SIZE, 0), (ssize_t)ARENA_SIZE);
    call_ok(s, "hammer", out, sizeof out);

    uint64_t copied = 0, overflows = 0, region_reports = 0;
    int64_t deadline = dvs__now_ms() + DEADLINE_MS;
    int rounds = 0;
    for (bool last = false; !last; rounds++) {
        if (rounds >= MIN_ROUNDS && (region_reports >= MIN_REPORTS || dvs__now_ms() > deadline)) {
            call_ok(s, "hammer-stop", out, sizeof out); /* joined: no more writes */
            last = true;
        }
        struct collect c = collect(s);
        overflows += c.overflow;
        for (uint64_t i = 0; i < s->hdr->pages; i++) {
            if (!bit(c.bm, i))
                continue;
            reported[i / 64] |= 1ull << (i % 64);
            region_reports += i >= first && i < first + REGION_PAGES;
            off_t off = (off_t)(i * page_size);
            assert_int_equal(pread(s->memfd, replica + off, page_size, off), (ssize_t)page_size);
            copied++;
        }
    }
    assert_int_equal(strlen(out), REGION_PAGES);
    unsigned written = 0;
    for (uint64_t i = 0; i < REGION_PAGES; i++) {
        if (out[i] != '1')
            continue;
        written++;
        if (!bit(reported, first + i))
            fail_msg("region page %" PRIu64 " was written but never reported", i);
    }
    /* The writer did run, and raced many rounds. */
    assert_true(written > 0);
    assert_true(region_reports >= MIN_REPORTS / 10);

    assert_int_equal(pread(s->memfd, now, ARENA_SIZE, 0), (ssize_t)ARENA_SIZE);
    for (size_t off = 0; off < ARENA_SIZE; off += page_size)
        if (memcmp(replica + off, now + off, page_size) != 0)
            fail_msg("page %zu differs from the agent's copy: a write was lost", off / page_size);
    print_message("# %d rounds, %" PRIu64 " pages copied (%" PRIu64 " of the writer's), %u region"
                  " pages written, %" PRIu64 " overflows\n", rounds, copied, region_reports, written,
                  overflows);
    cmd_ok(s, "track-stop", NULL, &m);
    free(replica);
    free(now);
    free(reported);
}

static void too_many_faults_overflow_and_the_service_keeps_working(void **state)
{
    struct svc *s = *state;
    struct dvs__ctl_msg m;
    char out[64], req[2048];
    svc_start(s, NULL);
    uint64_t first = region(s);
    track_start(s, "max_faults=8");

    /* 40 scattered pages: the 8th fault unprotects the whole arena. */
    int n = snprintf(req, sizeof req, "write");
    for (int i = 0; i < 40; i++)
        n += snprintf(req + n, sizeof req - (size_t)n, " %" PRIu64, first + (uint64_t)i * 7);
    call_ok(s, req, out, sizeof out);
    assert_int_equal(s->hdr->overflow, 1); /* live, in the header */
    assert_true(arena_is_one_rw_mapping(s->pid));

    struct collect c = collect(s);
    assert_true(c.overflow);
    assert_int_equal(c.dirty, s->hdr->pages); /* every page counts */
    assert_int_equal(s->hdr->overflow, 0);

    /* Re-protected as a whole, the next round is ordinary again. */
    assert_false(arena_is_one_rw_mapping(s->pid));
    snprintf(req, sizeof req, "write %" PRIu64, first + 1);
    call_ok(s, req, out, sizeof out);
    struct collect d = collect(s);
    assert_false(d.overflow);
    assert_true(bit(d.bm, first + 1));
    assert_false(bit(d.bm, first + 7));
    call_ok(s, "inc", out, sizeof out);
    assert_string_equal(out, "1");
    cmd_ok(s, "track-stop", NULL, &m);
}

static void track_stop_leaves_the_arena_writable(void **state)
{
    struct svc *s = *state;
    struct dvs__ctl_msg m;
    char out[64], req[64];
    svc_start(s, NULL);
    uint64_t first = region(s);
    track_start(s, NULL);
    snprintf(req, sizeof req, "write %" PRIu64, first);
    call_ok(s, req, out, sizeof out);

    cmd_ok(s, "track-stop", NULL, &m);
    cmd_ok(s, "track-stop", NULL, &m); /* idempotent */
    cmd_ok(s, "status", NULL, &m);
    assert_string_equal(dvs__ctl_get(&m, "tracking"), "none");
    /* One read-write mapping again, and writes just work. */
    assert_true(arena_is_one_rw_mapping(s->pid));
    for (int i = 0; i < 5; i++) {
        snprintf(req, sizeof req, "write %" PRIu64, first + (uint64_t)i * 50);
        call_ok(s, req, out, sizeof out);
    }
    cmd_err(s, "track-collect", NULL, "DVS_ECONFLICT");

    /* Tracking can start again, with a new bitmap. */
    munmap((void *)s->hdr, s->map_size);
    s->hdr = NULL;
    close(s->bitmap_fd);
    s->bitmap_fd = -1;
    track_start(s, NULL);
    snprintf(req, sizeof req, "write %" PRIu64, first + 2);
    call_ok(s, req, out, sizeof out);
    assert_true(bit(collect(s).bm, first + 2));
    cmd_ok(s, "track-stop", NULL, &m);
}

static void unfreeze_and_a_lost_agent_end_tracking_and_throttle(void **state)
{
    struct svc *s = *state;
    struct dvs__ctl_msg m;
    char out[64], req[64];
    svc_start(s, NULL);
    uint64_t first = region(s);

    /* An aborted migration: frozen while tracked, then unfrozen. */
    track_start(s, NULL);
    cmd_ok(s, "throttle", "delay_us=1000", &m);
    cmd_ok(s, "freeze", NULL, &m);
    collect(s); /* the final round happens while frozen */
    cmd_ok(s, "unfreeze", NULL, &m);
    cmd_ok(s, "status", NULL, &m);
    assert_string_equal(dvs__ctl_get(&m, "tracking"), "none");
    assert_string_equal(dvs__ctl_get(&m, "throttle_us"), "0");
    assert_true(arena_is_one_rw_mapping(s->pid));

    /* The agent dies mid-round: the service unprotects itself and goes on. */
    munmap((void *)s->hdr, s->map_size);
    s->hdr = NULL;
    close(s->bitmap_fd);
    s->bitmap_fd = -1;
    track_start(s, NULL);
    assert_false(arena_is_one_rw_mapping(s->pid));
    close(s->ctl);
    s->ctl = -1;
    int64_t deadline = dvs__now_ms() + 5000;
    while (!arena_is_one_rw_mapping(s->pid) && dvs__now_ms() < deadline)
        call_ok(s, "get", out, sizeof out); /* the loop notices between requests */
    assert_true(arena_is_one_rw_mapping(s->pid));
    snprintf(req, sizeof req, "write %" PRIu64, first + 9);
    call_ok(s, req, out, sizeof out);
    assert_string_equal(out, "ok");
}

static void moved_ends_tracking(void **state)
{
    struct svc *s = *state;
    struct dvs__ctl_msg m;
    svc_start(s, NULL);
    track_start(s, NULL);
    cmd_ok(s, "throttle", "delay_us=2000", &m);
    cmd_ok(s, "freeze", NULL, &m);
    collect(s);
    /* Committed: while it lingers answering "moved", nothing is tracked. */
    cmd_ok(s, "moved", "generation=2 address=127.0.0.1:1 linger_ms=300", &m);
    cmd_ok(s, "status", NULL, &m);
    assert_string_equal(dvs__ctl_get(&m, "state"), "moved");
    assert_string_equal(dvs__ctl_get(&m, "tracking"), "none");
    assert_string_equal(dvs__ctl_get(&m, "throttle_us"), "0");
    assert_true(arena_is_one_rw_mapping(s->pid));
    assert_int_equal(svc_wait(s, 5000), 3);
}

/* A real crash must still be a crash, with the same signal. */
static void real_segfault_outside_the_arena_still_kills(void **state)
{
    struct svc *s = *state;
    char out[64];
    /* Under ASan, its own SIGSEGV handler would be the previous one and
     * end the chain with its report and exit status 1; without it the
     * previous disposition is the default, as in a production build. */
    asan_extra = UNDER_ASAN ? "handle_segv=0" : NULL;
    svc_start(s, NULL);
    asan_extra = NULL;
    track_start(s, NULL);
    call(s, "crash", out, sizeof out);
    assert_int_equal(svc_wait(s, 10000), 128 + SIGSEGV);
}

static void real_segfault_goes_to_the_services_own_handler(void **state)
{
    struct svc *s = *state;
    struct dvs__ctl_msg m;
    char out[64];
    svc_start(s, "TEST_SEGV_EXIT=42");
    track_start(s, NULL);
    call_ok(s, "inc", out, sizeof out); /* tracking faults are not passed on */
    cmd_ok(s, "track-stop", NULL, &m);
    track_start(s, NULL); /* twice: the handler to chain to is still the service's */
    call(s, "crash", out, sizeof out);
    assert_int_equal(svc_wait(s, 10000), 42);
}

static void bad_tracking_commands_get_clear_errors(void **state)
{
    struct svc *s = *state;
    struct dvs__ctl_msg m;
    svc_start(s, NULL);

    cmd_err(s, "track-collect", NULL, "DVS_ECONFLICT");
    cmd_ok(s, "track-stop", NULL, &m); /* nothing to stop: fine */
    cmd_err(s, "track-start", "max_faults=0", "DVS_EBADREQUEST");
    cmd_err(s, "track-start", "max_faults=100000", "DVS_EBADREQUEST");
    cmd_err(s, "track-start", "max_faults=lots", "DVS_EBADREQUEST");
    cmd_err(s, "throttle", NULL, "DVS_EBADREQUEST");
    cmd_err(s, "throttle", "delay_us=100001", "DVS_EBADREQUEST");
    cmd_err(s, "throttle", "delay_us=-1", "DVS_EBADREQUEST");
    cmd_err(s, "throttle", "delay_us=fast", "DVS_EBADREQUEST");
    cmd_ok(s, "status", NULL, &m);
    assert_string_equal(dvs__ctl_get(&m, "tracking"), "none");
    assert_string_equal(dvs__ctl_get(&m, "throttle_us"), "0");

    track_start(s, NULL);
    cmd_err(s, "track-start", NULL, "DVS_ECONFLICT"); /* already on */
    cmd_ok(s, "track-stop", NULL, &m);
}

/* The tracker's own contract, in this process: one arena at a time. */
static void one_tracked_arena_per_process(void **state)
{
    (void)state;
    size_t size = 16 * page_size;
    int a, b, fd;
    uint8_t *mem = mmap(NULL, size, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS, -1, 0);
    assert_true(mem != MAP_FAILED);

    assert_int_equal(dvs__track_start(&a, mem + 1, size, 8, &fd), -EINVAL);
    assert_int_equal(dvs__track_start(&a, mem, size - 1, 8, &fd), -EINVAL);
    assert_int_equal(dvs__track_start(&a, mem, size, 0, &fd), -EINVAL);
    assert_int_equal(dvs__track_start(&a, mem, size, DVS__TRACK_MAX_MAX_FAULTS + 1, &fd), -EINVAL);
    assert_int_equal(dvs__track_start(&a, mem, size, 8, &fd), 0);
    assert_true(dvs__track_active(&a));
    assert_false(dvs__track_active(&b));
    int fd2;
    assert_int_equal(dvs__track_start(&a, mem, size, 8, &fd2), -EALREADY);
    assert_int_equal(dvs__track_start(&b, mem, size, 8, &fd2), -EBUSY);
    struct dvs__track_report r;
    assert_int_equal(dvs__track_collect(&b, &r), -ENOENT);
    assert_int_equal(dvs__track_stop(&b), -ENOENT);

    mem[5 * page_size] = 1; /* a fault, handled in this process */
    mem[5 * page_size + 1] = 2; /* the page is writable again: no fault */
    assert_int_equal(dvs__track_collect(&a, &r), 0);
    assert_int_equal(r.dirty, 1);
    assert_int_equal(r.faults, 1);
    assert_false(r.overflow);
    assert_int_equal(dvs__track_stop(&a), 0);
    assert_int_equal(dvs__track_stop(&a), -ENOENT);
    mem[6 * page_size] = 3;
    assert_int_equal(dvs__track_collect(&a, &r), -ENOENT);
    close(fd);
    munmap(mem, size);
}

/* ---------------------------------------------------------------------------
 * The throttle
 */

static int64_t time_calls(struct svc *s, int n)
{
    char out[64];
    int64_t t0 = dvs__now_ms();
    for (int i = 0; i < n; i++)
        call_ok(s, "inc", out, sizeof out);
    return dvs__now_ms() - t0;
}

static void throttle_spaces_requests_and_zero_lifts_it(void **state)
{
    struct svc *s = *state;
    struct dvs__ctl_msg m;
    enum { CALLS = 10, DELAY_US = 50000 };
    svc_start(s, NULL);
    time_calls(s, 1);

    cmd_ok(s, "throttle", "delay_us=50000", &m);
    assert_string_equal(dvs__ctl_get(&m, "throttle_us"), "50000");
    /* At most one request per delay: N calls need (N - 1) delays at least. */
    int64_t slow = time_calls(s, CALLS);
    assert_true(slow >= (CALLS - 1) * DELAY_US / 1000);

    /* Requests sent all at once wait their turns, and the control socket
     * is not blocked meanwhile. */
    int64_t t0 = dvs__now_ms();
    for (int i = 0; i < CALLS; i++)
        send_req(s, "inc");
    cmd_ok(s, "status", NULL, &m);
    assert_string_equal(dvs__ctl_get(&m, "throttle_us"), "50000");
    assert_true(dvs__now_ms() - t0 < DELAY_US / 1000);
    char out[64];
    for (int i = 0; i < CALLS; i++)
        assert_int_equal(read_reply(s, out, sizeof out), DVS__STATUS_OK);
    assert_true(dvs__now_ms() - t0 >= (CALLS - 1) * DELAY_US / 1000);

    cmd_ok(s, "throttle", "delay_us=0", &m);
    int64_t fast = time_calls(s, CALLS);
    assert_true(fast < (CALLS - 1) * DELAY_US / 1000);
    print_message("# %d calls: %" PRId64 " ms throttled at %d us, %" PRId64 " ms after\n", CALLS,
                  slow, DELAY_US, fast);

    call_ok(s, "get", out, sizeof out);
    assert_string_equal(out, "31");
}

int main(void)
{
    char self[PATH_MAX - 32];
    ssize_t n = readlink("/proc/self/exe", self, sizeof self - 1);
    if (n <= 0)
        return 1;
    self[n] = '\0';
    *strrchr(self, '/') = '\0';
    snprintf(service_path, sizeof service_path, "%s/test_service", self);
    page_size = (size_t)sysconf(_SC_PAGESIZE);
    signal(SIGPIPE, SIG_IGN);

#define T(name) cmocka_unit_test_setup_teardown(name, setup, teardown)
    const struct CMUnitTest tests[] = {
        T(collect_reports_exactly_the_pages_written),
        T(writes_between_collects_go_to_the_other_bitmap),
        T(writes_racing_collects_are_never_lost),
        T(too_many_faults_overflow_and_the_service_keeps_working),
        T(track_stop_leaves_the_arena_writable),
        T(unfreeze_and_a_lost_agent_end_tracking_and_throttle),
        T(moved_ends_tracking),
        T(real_segfault_outside_the_arena_still_kills),
        T(real_segfault_goes_to_the_services_own_handler),
        T(bad_tracking_commands_get_clear_errors),
        cmocka_unit_test(one_tracked_arena_per_process),
        T(throttle_spaces_requests_and_zero_lifts_it),
    };
    return cmocka_run_group_tests_name("libdvs/track", tests, NULL, NULL);
}
