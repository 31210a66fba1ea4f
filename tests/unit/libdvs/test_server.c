/*
 * The server and the client end to end, with no mocks: a real service
 * process (test_service, started the way dvs-node starts services: the
 * DVS_* environment, an inherited memfd and SOCK_SEQPACKET control socket),
 * a real HTTP directory (dirstub), the real client, and this test playing
 * the agent's part of docs/control-protocol.md.
 */
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <limits.h>
#include <poll.h>
#include <pthread.h>
#include <setjmp.h>
#include <signal.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include <cmocka.h>

#include "control.h"
#include "dirstub.h"
#include "frame.h"
#include "net.h"

#define ARENA_ADDR 0x7e3000000000ull
#define ARENA_SIZE (1u << 20)
#define ARENA_FD_CHILD 100
#define CONTROL_FD_CHILD 101

static char service_path[PATH_MAX];

/* ---------------------------------------------------------------------------
 * The agent's side: spawning services and talking the control protocol
 */

struct svc {
    pid_t pid;
    int ctl;
    char address[64];
    uint64_t next_id;
    bool reaped;
    int status;
};

static int new_memfd(void)
{
    int fd = memfd_create("test-arena", MFD_CLOEXEC);
    assert_true(fd >= 0);
    assert_int_equal(ftruncate(fd, ARENA_SIZE), 0);
    return fd;
}

/* What a migration's transfer does: the same bytes in a new memfd. */
static int copy_memfd(int from)
{
    int to = new_memfd();
    char *buf = malloc(65536);
    for (off_t off = 0; off < ARENA_SIZE; off += 65536) {
        assert_int_equal(pread(from, buf, 65536, off), 65536);
        assert_int_equal(pwrite(to, buf, 65536, off), 65536);
    }
    free(buf);
    return to;
}

static int svc_recv(struct svc *s, int timeout_ms, struct dvs__ctl_msg *m)
{
    char buf[DVS__CTL_MAX];
    struct pollfd p = {.fd = s->ctl, .events = POLLIN};
    int n = poll(&p, 1, timeout_ms);
    if (n == 0)
        return -ETIMEDOUT;
    ssize_t len = recv(s->ctl, buf, sizeof buf, MSG_DONTWAIT);
    if (len <= 0)
        return -ECONNRESET;
    assert_int_equal(dvs__ctl_parse(buf, (size_t)len, m), 0);
    return 0;
}

/*
 * Start test_service with the agent's environment. Returns the first control
 * message in *first (normally "hello").
 */
static void svc_start(struct svc *s, const char *mode, int arena_fd, uint64_t generation,
                      const char *extra_env, struct dvs__ctl_msg *first)
{
    int sv[2];
    assert_int_equal(socketpair(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC, 0, sv), 0);

    /* Everything the child needs is built before fork: the test is
     * multi-threaded, so the child may only call async-signal-safe code. */
    char e_gen[64], e_mode[64], e_afd[64], e_addr[64], e_size[64], e_cfd[64];
    snprintf(e_gen, sizeof e_gen, "DVS_GENERATION=%" PRIu64, generation);
    snprintf(e_mode, sizeof e_mode, "DVS_MODE=%s", mode);
    snprintf(e_afd, sizeof e_afd, "DVS_ARENA_FD=%d", ARENA_FD_CHILD);
    snprintf(e_addr, sizeof e_addr, "DVS_ARENA_ADDR=0x%llx", ARENA_ADDR);
    snprintf(e_size, sizeof e_size, "DVS_ARENA_SIZE=%u", ARENA_SIZE);
    snprintf(e_cfd, sizeof e_cfd, "DVS_CONTROL_FD=%d", CONTROL_FD_CHILD);
    char *envp[16] = {"DVS_ENDPOINT=kv", "DVS_LISTEN=127.0.0.1:0", e_mode, e_afd,
                      e_addr, e_size, e_cfd};
    int n = 7;
    if (generation > 0) /* a restored instance learns it from "start" */
        envp[n++] = e_gen;
    if (extra_env != NULL)
        envp[n++] = (char *)extra_env;
    if (getenv("DVS_TEST_VERBOSE") != NULL)
        envp[n++] = "DVS_TEST_VERBOSE=1";
    if (getenv("ASAN_OPTIONS") != NULL) {
        static char asan[512];
        snprintf(asan, sizeof asan, "ASAN_OPTIONS=%s", getenv("ASAN_OPTIONS"));
        envp[n++] = asan;
    }
    envp[n] = NULL;
    char *argv[] = {service_path, NULL};

    pid_t pid = fork();
    assert_true(pid >= 0);
    if (pid == 0) {
        /* dup2 clears close-on-exec on the copies, which the service inherits. */
        if (dup2(arena_fd, ARENA_FD_CHILD) < 0 || dup2(sv[1], CONTROL_FD_CHILD) < 0)
            _exit(126);
        execve(service_path, argv, envp);
        _exit(127);
    }
    close(sv[1]);
    memset(s, 0, sizeof *s);
    s->pid = pid;
    s->ctl = sv[0];
    assert_int_equal(svc_recv(s, 10000, first), 0);
    const char *addr = dvs__ctl_get(first, "address");
    if (addr != NULL)
        snprintf(s->address, sizeof s->address, "%s", addr);
}

static void svc_start_ok(struct svc *s, const char *mode, int arena_fd, uint64_t generation,
                         const char *extra_env)
{
    struct dvs__ctl_msg m;
    svc_start(s, mode, arena_fd, generation, extra_env, &m);
    assert_string_equal(m.verb, "hello");
    assert_string_equal(dvs__ctl_get(&m, "endpoint"), "kv");
    assert_string_equal(dvs__ctl_get(&m, "mode"), mode);
    assert_true(strncmp(s->address, "127.0.0.1:", 10) == 0);
}

/* Send "verb id=N args" and wait for the answer with that id. */
static void svc_cmd(struct svc *s, const char *verb, const char *args, struct dvs__ctl_msg *m)
{
    char buf[512];
    uint64_t id = ++s->next_id;
    int n = snprintf(buf, sizeof buf, "%s id=%" PRIu64 "%s%s", verb, id, args ? " " : "",
                     args ? args : "");
    assert_int_equal(send(s->ctl, buf, (size_t)n, MSG_NOSIGNAL), n);
    char want[32];
    snprintf(want, sizeof want, "%" PRIu64, id);
    for (;;) {
        assert_int_equal(svc_recv(s, 10000, m), 0);
        const char *got = dvs__ctl_get(m, "id");
        if (got != NULL && strcmp(got, want) == 0)
            return;
        /* Events (serving, exiting) and other answers are skipped. */
    }
}

static void svc_cmd_ok(struct svc *s, const char *verb, const char *args)
{
    struct dvs__ctl_msg m;
    svc_cmd(s, verb, args, &m);
    if (strcmp(m.verb, "ok") != 0)
        fail_msg("%s %s: %s %s", verb, args ? args : "", m.verb,
                 dvs__ctl_get(&m, "message") ? dvs__ctl_get(&m, "message") : "");
}

/* Wait for the process to exit; returns its exit status, or -1 on timeout. */
static int svc_wait(struct svc *s, int timeout_ms)
{
    for (int waited = 0; !s->reaped && waited < timeout_ms; waited += 10) {
        int st;
        if (waitpid(s->pid, &st, WNOHANG) == s->pid) {
            s->reaped = true;
            s->status = WIFEXITED(st) ? WEXITSTATUS(st) : 128 + WTERMSIG(st);
            break;
        }
        usleep(10000);
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
    if (s->ctl > 0)
        close(s->ctl);
    s->ctl = 0;
}

/* ---------------------------------------------------------------------------
 * Fixture: a directory, a client, and room for two instances
 */

struct bg_call;

struct env {
    struct bg_call *bgs[8]; /* joined by teardown if a test fails early */
    unsigned n_bgs;
    struct dirstub *dir;
    char url[64];
    dvs_client *client;
    struct svc a, b;
    int memfd_a, memfd_b;
};

static int setup(void **state)
{
    struct env *e = calloc(1, sizeof *e);
    if (e == NULL || dirstub_start(&e->dir, e->url, sizeof e->url) != 0)
        return -1;
    struct dvs_client_options o;
    dvs_client_options_init(&o);
    o.attempt_timeout_ms = 1000;
    if (dvs_client_create(e->url, &o, &e->client) != 0)
        return -1;
    e->memfd_a = e->memfd_b = -1;
    *state = e;
    return 0;
}

static void bg_join(struct bg_call *b);

static int teardown(void **state)
{
    struct env *e = *state;
    svc_cleanup(&e->a);
    svc_cleanup(&e->b);
    /* With the services gone, calls still running end within their timeout. */
    for (unsigned i = 0; i < e->n_bgs; i++) {
        bg_join(e->bgs[i]);
        free(e->bgs[i]);
    }
    dvs_client_destroy(e->client);
    dirstub_stop(e->dir);
    if (e->memfd_a >= 0)
        close(e->memfd_a);
    if (e->memfd_b >= 0)
        close(e->memfd_b);
    free(e);
    return 0;
}

/* Start instance A (fresh, generation 1) and publish it in the directory. */
static void start_a(struct env *e, const char *extra_env)
{
    e->memfd_a = new_memfd();
    svc_start_ok(&e->a, "fresh", e->memfd_a, 1, extra_env);
    dirstub_set(e->dir, "kv", e->a.address, 1, "running");
}

static int call(dvs_client *c, const char *req, char *out, size_t outlen, int timeout_ms)
{
    void *reply = NULL;
    size_t len = 0;
    int rv = dvs_call(c, "kv", req, strlen(req), &reply, &len, timeout_ms);
    if (rv == 0) {
        assert_true(len < outlen);
        memcpy(out, reply, len);
        out[len] = '\0';
        dvs_free(reply);
    }
    return rv;
}

static void call_expect(dvs_client *c, const char *req, const char *want)
{
    char out[256];
    int rv = call(c, req, out, sizeof out, 10000);
    if (rv != 0)
        fail_msg("call \"%s\": %s", req, dvs_err_name(rv));
    assert_string_equal(out, want);
}

/* A call on another thread, for requests that must wait. */
struct bg_call {
    pthread_t thread;
    dvs_client *client;
    const char *req;
    int rv;
    char out[256];
    atomic_bool done;
    bool joined;
};

static void *bg_main(void *arg)
{
    struct bg_call *b = arg;
    b->rv = call(b->client, b->req, b->out, sizeof b->out, 15000);
    atomic_store(&b->done, true);
    return NULL;
}

/* The call's state lives on the heap, owned by the fixture: a failing test
 * leaves its frame while the thread may still write to it. */
static struct bg_call *bg_start(struct env *e, const char *req)
{
    struct bg_call *b = calloc(1, sizeof *b);
    assert_non_null(b);
    b->client = e->client;
    b->req = req;
    assert_true(e->n_bgs < 8);
    e->bgs[e->n_bgs++] = b;
    assert_int_equal(pthread_create(&b->thread, NULL, bg_main, b), 0);
    return b;
}

static void bg_join(struct bg_call *b)
{
    if (!b->joined)
        pthread_join(b->thread, NULL);
    b->joined = true;
}

/* Hand-made frames, to look at what the client library hides. */
static const uint8_t raw_id[16] = {1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15, 16};

static int raw_connect(const char *address)
{
    int fd;
    assert_int_equal(dvs__net_dial(address, dvs__now_ms() + 2000, &fd), 0);
    return fd;
}

static void raw_send(int fd, const char *name, uint64_t gen, uint64_t seq, const char *payload)
{
    struct dvs__frame f = {
        .type = DVS__FRAME_REQUEST,
        .name = name,
        .name_len = (uint8_t)strlen(name),
        .generation = gen,
        .seq = seq,
        .payload = payload,
        .payload_len = (uint32_t)strlen(payload),
    };
    memcpy(f.client_id, raw_id, 16);
    uint8_t buf[512];
    size_t len;
    assert_int_equal(dvs__frame_encode(&f, buf, sizeof buf, &len), 0);
    assert_int_equal(send(fd, buf, len, MSG_NOSIGNAL), (ssize_t)len);
}

/* Read one reply; its payload is copied to text (NUL-terminated). */
static int raw_recv(int fd, int timeout_ms, struct dvs__frame *f, char *text, size_t textlen)
{
    uint8_t *buf = NULL;
    size_t cap = 0, got;
    int rv = dvs__net_read_frame(fd, &buf, &cap, DVS_MAX_PAYLOAD, dvs__now_ms() + timeout_ms, f, &got);
    if (rv == 0) {
        size_t n = f->payload_len < textlen - 1 ? f->payload_len : textlen - 1;
        if (n > 0)
            memcpy(text, f->payload, n);
        text[n] = '\0';
        f->payload = NULL; /* buf is freed below */
    }
    free(buf);
    return rv;
}

/* ---------------------------------------------------------------------------
 * Serving
 */

static void calls_reach_the_service_through_the_directory(void **state)
{
    struct env *e = *state;
    start_a(e, NULL);

    for (int i = 1; i <= 10; i++) {
        char want[16];
        snprintf(want, sizeof want, "%d", i);
        call_expect(e->client, "inc", want);
    }
    call_expect(e->client, "hello world", "hello world");
    /* The location is cached: one directory lookup for eleven calls. */
    assert_int_equal(dirstub_gets(e->dir), 1);

    char out[16];
    assert_int_equal(call(e->client, "fail", out, sizeof out, 5000), -ENOENT);

    /* Replies up to the bound get through. */
    void *reply;
    size_t len;
    char req[32];
    snprintf(req, sizeof req, "big %u", DVS_MAX_PAYLOAD);
    assert_int_equal(dvs_call(e->client, "kv", req, strlen(req), &reply, &len, 10000), 0);
    assert_int_equal(len, DVS_MAX_PAYLOAD);
    dvs_free(reply);
}

static void bad_calls_are_refused_before_sending(void **state)
{
    struct env *e = *state;
    void *reply;
    size_t len;
    static char big[DVS_MAX_PAYLOAD + 1];

    assert_int_equal(dvs_call(e->client, "kv", big, sizeof big, &reply, &len, 1000), DVS_ETOOBIG);
    assert_int_equal(dvs_call(e->client, "KV", "x", 1, &reply, &len, 1000), -EINVAL);
    assert_int_equal(dvs_call(e->client, "kv", "x", 1, &reply, &len, 0), -EINVAL);
    assert_int_equal(dvs_call(e->client, "kv", NULL, 1, &reply, &len, 1000), -EINVAL);
    assert_int_equal(dirstub_gets(e->dir), 0);
}

static void resent_request_is_answered_from_the_cache(void **state)
{
    struct env *e = *state;
    struct dvs__frame f;
    char text[64];
    start_a(e, NULL);

    int fd = raw_connect(e->a.address);
    raw_send(fd, "kv", 1, 1, "inc");
    assert_int_equal(raw_recv(fd, 5000, &f, text, sizeof text), 0);
    assert_int_equal(f.status, DVS__STATUS_OK);
    assert_int_equal(f.flags, 0);
    assert_string_equal(text, "1");

    /* The same (client, seq) again, on another connection: not executed. */
    int fd2 = raw_connect(e->a.address);
    raw_send(fd2, "kv", 1, 1, "inc");
    assert_int_equal(raw_recv(fd2, 5000, &f, text, sizeof text), 0);
    assert_int_equal(f.status, DVS__STATUS_OK);
    assert_int_equal(f.flags, DVS__FRAME_F_REPLAYED);
    assert_string_equal(text, "1");
    call_expect(e->client, "execs", "1");

    /* A newer generation than the instance's is refused: stale instance. */
    raw_send(fd, "kv", 9, 2, "inc");
    assert_int_equal(raw_recv(fd, 5000, &f, text, sizeof text), 0);
    assert_int_equal(f.status, DVS__STATUS_ERROR);
    int code;
    assert_int_equal(dvs__error_payload_decode(text, 4, &code), 0);
    assert_int_equal(code, DVS_ESTALEGEN);

    /* Another endpoint's name: this address is not where it lives. */
    raw_send(fd, "other", 1, 3, "inc");
    assert_int_equal(raw_recv(fd, 5000, &f, text, sizeof text), 0);
    assert_int_equal(f.status, DVS__STATUS_ERROR);
    assert_int_equal(dvs__error_payload_decode(text, 4, &code), 0);
    assert_int_equal(code, DVS_ENOTFOUND);
    call_expect(e->client, "execs", "1");
    close(fd);
    close(fd2);
}

static void garbage_closes_only_that_connection(void **state)
{
    struct env *e = *state;
    start_a(e, NULL);
    call_expect(e->client, "inc", "1");

    int fd = raw_connect(e->a.address);
    const char junk[] = "GET / HTTP/1.0\r\n\r\n";
    assert_int_equal(send(fd, junk, sizeof junk - 1, MSG_NOSIGNAL), (ssize_t)sizeof junk - 1);
    char c;
    struct pollfd p = {.fd = fd, .events = POLLIN};
    assert_int_equal(poll(&p, 1, 5000), 1);
    assert_int_equal(recv(fd, &c, 1, 0), 0); /* closed, no answer */
    close(fd);

    /* A header announcing 4 GiB is refused from the header alone. */
    fd = raw_connect(e->a.address);
    uint8_t hdr[DVS__FRAME_HEADER_SIZE];
    struct dvs__frame f = {.type = DVS__FRAME_REQUEST, .name = "kv", .name_len = 2, .seq = 1};
    assert_int_equal(dvs__frame_encode_header(&f, hdr), 0);
    memset(hdr + 12, 0xff, 4);
    assert_int_equal(send(fd, hdr, sizeof hdr, MSG_NOSIGNAL), (ssize_t)sizeof hdr);
    p.fd = fd;
    assert_int_equal(poll(&p, 1, 5000), 1);
    assert_int_equal(recv(fd, &c, 1, 0), 0);
    close(fd);

    call_expect(e->client, "inc", "2");
}

struct worker {
    pthread_t thread;
    dvs_client *client;
    int calls;
    int failures;
};

static void *worker_main(void *arg)
{
    struct worker *w = arg;
    for (int i = 0; i < w->calls; i++) {
        char out[32];
        if (call(w->client, "inc", out, sizeof out, 10000) != 0)
            w->failures++;
    }
    return NULL;
}

static void many_threads_share_one_client(void **state)
{
    struct env *e = *state;
    enum { THREADS = 4, CALLS = 100 };
    struct worker w[THREADS];
    start_a(e, NULL);

    for (int i = 0; i < THREADS; i++) {
        w[i] = (struct worker){.client = e->client, .calls = CALLS};
        assert_int_equal(pthread_create(&w[i].thread, NULL, worker_main, &w[i]), 0);
    }
    for (int i = 0; i < THREADS; i++) {
        pthread_join(w[i].thread, NULL);
        assert_int_equal(w[i].failures, 0);
    }
    call_expect(e->client, "get", "400");
    call_expect(e->client, "execs", "400");
}

/* ---------------------------------------------------------------------------
 * Control commands
 */

static void freeze_holds_requests_until_unfreeze(void **state)
{
    struct env *e = *state;
    struct dvs__ctl_msg m;
    start_a(e, NULL);
    call_expect(e->client, "inc", "1");

    svc_cmd(&e->a, "freeze", "hold_ms=10000", &m);
    assert_string_equal(m.verb, "ok");
    assert_string_equal(dvs__ctl_get(&m, "state"), "frozen");

    struct bg_call *bg = bg_start(e, "inc");
    usleep(300000);
    assert_false(atomic_load(&bg->done));
    svc_cmd(&e->a, "status", NULL, &m);
    assert_string_equal(dvs__ctl_get(&m, "held"), "1");
    assert_string_equal(dvs__ctl_get(&m, "executed"), "1");

    svc_cmd_ok(&e->a, "unfreeze", NULL);
    bg_join(bg);
    assert_int_equal(bg->rv, 0);
    assert_string_equal(bg->out, "2");
}

static void held_request_is_answered_migrating_after_hold_time(void **state)
{
    struct env *e = *state;
    struct dvs__frame f;
    char text[64];
    start_a(e, NULL);

    svc_cmd_ok(&e->a, "freeze", "hold_ms=200");
    int fd = raw_connect(e->a.address);
    int64_t t0 = dvs__now_ms();
    raw_send(fd, "kv", 1, 1, "inc");
    assert_int_equal(raw_recv(fd, 5000, &f, text, sizeof text), 0);
    int64_t held = dvs__now_ms() - t0;
    assert_int_equal(f.status, DVS__STATUS_MIGRATING);
    assert_true(held >= 180 && held < 2000);

    /* After an unfreeze the resend executes once. */
    svc_cmd_ok(&e->a, "unfreeze", NULL);
    raw_send(fd, "kv", 1, 1, "inc");
    assert_int_equal(raw_recv(fd, 5000, &f, text, sizeof text), 0);
    assert_int_equal(f.status, DVS__STATUS_OK);
    assert_string_equal(text, "1");
    close(fd);
}

static void freeze_waits_for_the_request_in_progress(void **state)
{
    struct env *e = *state;
    start_a(e, NULL);
    call_expect(e->client, "inc", "1"); /* warm the cache and pool */

    struct bg_call *bg = bg_start(e, "sleep 600");
    usleep(150000);
    int64_t t0 = dvs__now_ms();
    svc_cmd_ok(&e->a, "freeze", NULL);
    int64_t waited = dvs__now_ms() - t0;
    /* The freeze was acknowledged only after the handler returned. */
    assert_true(waited >= 300);
    bg_join(bg);
    assert_int_equal(bg->rv, 0);
    assert_string_equal(bg->out, "slept");
    svc_cmd_ok(&e->a, "unfreeze", NULL);
}

static void control_refuses_what_it_must_not_do(void **state)
{
    struct env *e = *state;
    struct dvs__ctl_msg m;
    start_a(e, NULL);

    /* Moving an instance that was not frozen would lose writes. */
    svc_cmd(&e->a, "moved", "generation=2 address=127.0.0.1:1", &m);
    assert_string_equal(m.verb, "error");
    assert_string_equal(dvs__ctl_get(&m, "code"), "DVS_ECONFLICT");
    svc_cmd(&e->a, "start", "generation=5", &m);
    assert_string_equal(dvs__ctl_get(&m, "code"), "DVS_ECONFLICT");
    svc_cmd(&e->a, "reboot", NULL, &m);
    assert_string_equal(dvs__ctl_get(&m, "code"), "DVS_EBADREQUEST");
    svc_cmd(&e->a, "freeze", "hold_ms=0", &m);
    assert_string_equal(dvs__ctl_get(&m, "code"), "DVS_EBADREQUEST");

    svc_cmd_ok(&e->a, "freeze", NULL);
    svc_cmd(&e->a, "moved", "generation=1 address=127.0.0.1:1", &m); /* not newer */
    assert_string_equal(dvs__ctl_get(&m, "code"), "DVS_EBADREQUEST");
    svc_cmd(&e->a, "moved", "generation=2 address=nowhere", &m);
    assert_string_equal(dvs__ctl_get(&m, "code"), "DVS_EBADREQUEST");
    svc_cmd_ok(&e->a, "unfreeze", NULL);
    svc_cmd_ok(&e->a, "unfreeze", NULL); /* idempotent */

    /* Without an id there is nothing to answer to but id=0. */
    assert_int_equal(send(e->a.ctl, "status", 6, 0), 6);
    assert_int_equal(svc_recv(&e->a, 5000, &m), 0);
    assert_string_equal(m.verb, "error");
    assert_string_equal(dvs__ctl_get(&m, "id"), "0");

    call_expect(e->client, "inc", "1"); /* still serving */
}

static void fds_command_passes_arena_and_tracking_fds(void **state)
{
    struct env *e = *state;
    start_a(e, NULL);

    const char cmd[] = "fds id=42";
    assert_int_equal(send(e->a.ctl, cmd, sizeof cmd - 1, 0), (ssize_t)sizeof cmd - 1);
    char buf[DVS__CTL_MAX];
    union {
        char b[CMSG_SPACE(sizeof(int) * 3)];
        struct cmsghdr align;
    } cbuf;
    struct iovec iov = {.iov_base = buf, .iov_len = sizeof buf};
    struct msghdr mh = {.msg_iov = &iov, .msg_iovlen = 1, .msg_control = cbuf.b,
                        .msg_controllen = sizeof cbuf.b};
    struct pollfd p = {.fd = e->a.ctl, .events = POLLIN};
    struct dvs__ctl_msg m;
    int fds[3], n_fds = 0;
    for (;;) { /* skip the "serving" event */
        assert_int_equal(poll(&p, 1, 5000), 1);
        mh.msg_controllen = sizeof cbuf.b;
        ssize_t n = recvmsg(e->a.ctl, &mh, MSG_CMSG_CLOEXEC);
        assert_true(n > 0);
        assert_int_equal(dvs__ctl_parse(buf, (size_t)n, &m), 0);
        if (strcmp(m.verb, "ok") == 0)
            break;
    }
    assert_string_equal(dvs__ctl_get(&m, "id"), "42");
    struct cmsghdr *cm = CMSG_FIRSTHDR(&mh);
    assert_non_null(cm);
    assert_int_equal(cm->cmsg_type, SCM_RIGHTS);
    n_fds = (int)((cm->cmsg_len - CMSG_LEN(0)) / sizeof(int));
    memcpy(fds, CMSG_DATA(cm), sizeof(int) * (size_t)n_fds);

    /* The names say what came, in order; the arena always comes first. */
    const char *names = dvs__ctl_get(&m, "fds");
    assert_true(strncmp(names, "arena", 5) == 0);
    int commas = 0;
    for (const char *c = names; *c; c++)
        commas += *c == ',';
    assert_int_equal(n_fds, commas + 1);
    struct stat st;
    assert_int_equal(fstat(fds[0], &st), 0);
    assert_int_equal(st.st_size, ARENA_SIZE);
    for (int i = 0; i < n_fds; i++)
        close(fds[i]);
}

static void stop_command_ends_the_service(void **state)
{
    struct env *e = *state;
    struct dvs__ctl_msg m;
    start_a(e, NULL);
    svc_cmd_ok(&e->a, "stop", NULL);
    do
        assert_int_equal(svc_recv(&e->a, 5000, &m), 0);
    while (strcmp(m.verb, "exiting") != 0);
    assert_string_equal(dvs__ctl_get(&m, "reason"), "stopped");
    assert_int_equal(svc_wait(&e->a, 5000), 0);
}

/* ---------------------------------------------------------------------------
 * Migration (DESIGN.md §4), with this test as both agents
 */

static void live_migration_keeps_state_and_executes_each_request_once(void **state)
{
    struct env *e = *state;
    struct dvs__frame f;
    struct dvs__ctl_msg m;
    char text[64];

    start_a(e, NULL);
    for (int i = 1; i <= 5; i++) {
        char want[8];
        snprintf(want, sizeof want, "%d", i);
        call_expect(e->client, "inc", want);
    }
    /* A request whose reply the client "loses": it will resend it later. */
    int fd = raw_connect(e->a.address);
    raw_send(fd, "kv", 1, 1, "inc");
    assert_int_equal(raw_recv(fd, 5000, &f, text, sizeof text), 0);
    assert_string_equal(text, "6");
    close(fd);

    /* Freeze the source; a call arriving now is held. */
    svc_cmd_ok(&e->a, "freeze", "hold_ms=10000");
    dirstub_set(e->dir, "kv", e->a.address, 1, "migrating");
    struct bg_call *bg = bg_start(e, "inc");

    /* Copy the arena; start the destination instance on the copy. */
    e->memfd_b = copy_memfd(e->memfd_a);
    svc_start(&e->b, "restore", e->memfd_b, 0, NULL, &m);
    assert_string_equal(m.verb, "hello");
    assert_string_equal(dvs__ctl_get(&m, "state"), "restoring");
    svc_cmd(&e->b, "status", NULL, &m);
    assert_string_equal(dvs__ctl_get(&m, "state"), "restoring");

    /* Commit: the directory moves, then the destination starts, then the
     * source answers moved (docs/migration.md steps 4-5). */
    dirstub_set(e->dir, "kv", e->b.address, 2, "running");
    svc_cmd_ok(&e->b, "start", "generation=2");
    char args[128];
    snprintf(args, sizeof args, "generation=2 address=%s linger_ms=300", e->b.address);
    svc_cmd_ok(&e->a, "moved", args);

    bg_join(bg);
    assert_int_equal(bg->rv, 0);
    assert_string_equal(bg->out, "7");

    /* The lost reply, resent to the destination: replayed, not re-run. */
    fd = raw_connect(e->b.address);
    raw_send(fd, "kv", 1, 1, "inc");
    assert_int_equal(raw_recv(fd, 5000, &f, text, sizeof text), 0);
    assert_int_equal(f.status, DVS__STATUS_OK);
    assert_int_equal(f.flags, DVS__FRAME_F_REPLAYED);
    assert_int_equal(f.generation, 2);
    assert_string_equal(text, "6");
    close(fd);

    call_expect(e->client, "inc", "8");
    call_expect(e->client, "execs", "8");

    /* The source lingers, answering moved, then exits. */
    fd = raw_connect(e->a.address);
    raw_send(fd, "kv", 1, 2, "inc");
    assert_int_equal(raw_recv(fd, 5000, &f, text, sizeof text), 0);
    assert_int_equal(f.status, DVS__STATUS_MOVED);
    assert_int_equal(f.generation, 2);
    assert_string_equal(text, e->b.address);
    close(fd);
    assert_int_equal(svc_wait(&e->a, 5000), 3);

    svc_cmd_ok(&e->b, "stop", NULL);
    assert_int_equal(svc_wait(&e->b, 5000), 0);
}

static void aborted_migration_resumes_on_the_source(void **state)
{
    struct env *e = *state;
    struct dvs__ctl_msg m;
    start_a(e, NULL);
    call_expect(e->client, "inc", "1");

    svc_cmd_ok(&e->a, "freeze", "hold_ms=10000");
    struct bg_call *bg = bg_start(e, "inc");
    e->memfd_b = copy_memfd(e->memfd_a);
    svc_start(&e->b, "restore", e->memfd_b, 0, NULL, &m);

    /* Abort: the destination is told to stop (or killed) before start... */
    svc_cmd_ok(&e->b, "stop", NULL);
    assert_int_equal(svc_wait(&e->b, 5000), 2);
    /* ...and only then does the source unfreeze. */
    svc_cmd_ok(&e->a, "unfreeze", NULL);
    bg_join(bg);
    assert_int_equal(bg->rv, 0);
    assert_string_equal(bg->out, "2");
}

static void restore_refuses_an_invalid_arena(void **state)
{
    struct env *e = *state;
    struct dvs__ctl_msg m;
    e->memfd_b = new_memfd(); /* zeros: no arena */
    /* A restore instance opens before the image is complete (the agent
     * starts it during the transfer) and checks the arena at "start". */
    svc_start(&e->b, "restore", e->memfd_b, 0, NULL, &m);
    assert_string_equal(m.verb, "hello");
    svc_cmd(&e->b, "start", "generation=2", &m);
    assert_string_equal(m.verb, "error");
    assert_string_equal(dvs__ctl_get(&m, "code"), "DVS_EPROTO");
    assert_string_equal(dvs__ctl_get(&m, "message"), "the restored arena is not valid");
}

static void restore_ends_when_the_agent_goes_away(void **state)
{
    struct env *e = *state;
    struct dvs__ctl_msg m;
    start_a(e, NULL);
    /* Only a frozen source gives a consistent copy (the validation of the
     * restored arena does catch a torn one). */
    svc_cmd_ok(&e->a, "freeze", NULL);
    e->memfd_b = copy_memfd(e->memfd_a);
    svc_start(&e->b, "restore", e->memfd_b, 0, NULL, &m);
    assert_string_equal(m.verb, "hello");
    close(e->b.ctl);
    e->b.ctl = 0;
    assert_int_equal(svc_wait(&e->b, 5000), 2);
}

/* ---------------------------------------------------------------------------
 * Relocation and errors, seen by the client
 */

static void refused_connection_finds_the_restarted_instance(void **state)
{
    struct env *e = *state;
    start_a(e, NULL);
    call_expect(e->client, "inc", "1");

    /* The instance dies; 300 ms later the agent has restarted it elsewhere
     * (generation 2) and the directory says so. */
    kill(e->a.pid, SIGKILL);
    svc_wait(&e->a, 5000);
    struct bg_call *bg = bg_start(e, "inc");
    usleep(300000);
    e->memfd_b = new_memfd();
    svc_start_ok(&e->b, "fresh", e->memfd_b, 2, NULL);
    int64_t t0 = dvs__now_ms();
    dirstub_set(e->dir, "kv", e->b.address, 2, "running");
    bg_join(bg);
    assert_int_equal(bg->rv, 0);
    assert_string_equal(bg->out, "1"); /* a restart, not a migration: fresh state */
    /* It was waiting on a blocking query, not sleeping out a timeout. */
    assert_true(dvs__now_ms() - t0 < 700);
    assert_true(dirstub_blocking_gets(e->dir) >= 1);
}

static void nothing_serving_times_out_with_a_clear_error(void **state)
{
    struct env *e = *state;
    char out[16];
    /* Port 1 on loopback refuses, and the directory never changes. */
    dirstub_set(e->dir, "kv", "127.0.0.1:1", 1, "running");
    int64_t t0 = dvs__now_ms();
    assert_int_equal(call(e->client, "inc", out, sizeof out, 1500), DVS_ETIMEOUT);
    int64_t took = dvs__now_ms() - t0;
    assert_true(took >= 1400 && took < 3000);
}

static void unknown_endpoint_and_unreachable_manager_are_reported(void **state)
{
    struct env *e = *state;
    void *reply;
    size_t len;
    assert_int_equal(dvs_call(e->client, "nosuch", "x", 1, &reply, &len, 2000), DVS_ENOTFOUND);

    /* Managers that do not answer at all. */
    dvs_client *c;
    assert_int_equal(dvs_client_create("http://127.0.0.1:1,http://127.0.0.1:2/", NULL, &c), 0);
    int64_t t0 = dvs__now_ms();
    assert_int_equal(dvs_call(c, "kv", "x", 1, &reply, &len, 1000), DVS_EUNAVAILABLE);
    assert_true(dvs__now_ms() - t0 < 2500);
    dvs_client_destroy(c);

    assert_int_equal(dvs_client_create("ftp://x", NULL, &c), -EINVAL);
    assert_int_equal(dvs_client_create("http://a,,http://b", NULL, &c), -EINVAL);
}

static void endpoint_without_instance_is_waited_for(void **state)
{
    struct env *e = *state;
    dirstub_set(e->dir, "kv", NULL, 0, "pending");
    struct bg_call *bg = bg_start(e, "inc");
    usleep(200000);
    assert_false(atomic_load(&bg->done));
    start_a(e, NULL); /* publishes the address */
    bg_join(bg);
    assert_int_equal(bg->rv, 0);
    assert_string_equal(bg->out, "1");
}

/* ---------------------------------------------------------------------------
 * A server in this process, configured by options rather than environment
 */

struct inproc {
    pthread_t thread;
    dvs_server *srv;
    int rv;
};

static int count_handler(void *data, const void *req, size_t len, void *reply, size_t *reply_len)
{
    uint64_t *counter = data;
    (void)req;
    (void)len;
    (*counter)++;
    *reply_len = (size_t)snprintf(reply, *reply_len, "%llu", (unsigned long long)*counter);
    return 0;
}

static void *inproc_main(void *arg)
{
    struct inproc *p = arg;
    uint64_t *counter = dvs_arena_root(dvs_server_arena(p->srv));
    p->rv = dvs_server_run(p->srv, count_handler, counter);
    return NULL;
}

static void inproc_options(struct dvs_server_options *o, uintptr_t addr)
{
    dvs_server_options_init(o);
    o->endpoint = "kv";
    o->listen = "127.0.0.1:0";
    o->generation = 1;
    o->restore = 0;
    o->arena_addr = addr;
    o->arena_size = ARENA_SIZE;
}

static void in_process_server_serves_until_stopped(void **state)
{
    struct env *e = *state;
    struct dvs_server_options o;
    struct inproc p = {0};
    char addr[64];

    inproc_options(&o, 0x7e4000000000ull);
    assert_int_equal(dvs_server_open(&o, &p.srv), 0);
    assert_int_equal(dvs_server_generation(p.srv), 1);
    assert_int_equal(dvs_server_address(p.srv, addr, sizeof addr), 0);
    assert_int_equal(dvs_server_address(p.srv, addr, 5), -ENOBUFS);
    dvs_arena *arena = dvs_server_arena(p.srv);
    assert_int_equal(dvs_arena_set_root(arena, dvs_arena_calloc(arena, 1, sizeof(uint64_t))), 0);

    /* The same arena range cannot be mapped twice in one process. */
    dvs_server *other;
    o.listen = "127.0.0.1:0";
    assert_int_equal(dvs_server_open(&o, &other), -EEXIST);
    /* Nor can the same port be bound twice. */
    inproc_options(&o, 0x7e5000000000ull);
    o.listen = addr;
    assert_int_equal(dvs_server_open(&o, &other), -EADDRINUSE);
    inproc_options(&o, 0x7e5000000000ull);
    o.listen = "localhost";
    assert_int_equal(dvs_server_open(&o, &other), -EINVAL);
    inproc_options(&o, 0x7e5000000000ull);
    o.endpoint = "Bad Name";
    assert_int_equal(dvs_server_open(&o, &other), -EINVAL);
    inproc_options(&o, 0x7e5000000000ull);
    o.arena_size = 1000;
    assert_int_equal(dvs_server_open(&o, &other), -EINVAL);

    assert_int_equal(pthread_create(&p.thread, NULL, inproc_main, &p), 0);
    dirstub_set(e->dir, "kv", addr, 1, "running");
    call_expect(e->client, "x", "1");
    call_expect(e->client, "x", "2");

    dvs_server_stop(p.srv); /* from another thread */
    pthread_join(p.thread, NULL);
    assert_int_equal(p.rv, 0);
    assert_int_equal(dvs_server_run(p.srv, count_handler, NULL), -EINVAL); /* once only */
    dvs_server_close(p.srv);
}

/* ---------------------------------------------------------------------------
 * An agent that restarts (DVS_CONTROL_PATH)
 */

static int accept_timeout(int lfd, int timeout_ms)
{
    struct pollfd p = {.fd = lfd, .events = POLLIN};
    if (poll(&p, 1, timeout_ms) != 1)
        return -1;
    return accept4(lfd, NULL, NULL, SOCK_CLOEXEC);
}

static void restarted_agent_takes_back_a_frozen_service(void **state)
{
    struct env *e = *state;
    struct dvs__ctl_msg m;
    char path[108];
    snprintf(path, sizeof path, "/tmp/dvs-test-ctl-%d.sock", (int)getpid());
    unlink(path);
    struct sockaddr_un sa = {.sun_family = AF_UNIX};
    strcpy(sa.sun_path, path);
    int lfd = socket(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC, 0);
    assert_int_equal(bind(lfd, (struct sockaddr *)&sa, sizeof sa), 0);
    assert_int_equal(listen(lfd, 4), 0);

    /* Like svc_start, but the service connects to the agent's path. */
    char e_path[160], e_afd[64], e_addr[64], e_size[64];
    snprintf(e_path, sizeof e_path, "DVS_CONTROL_PATH=%s", path);
    snprintf(e_afd, sizeof e_afd, "DVS_ARENA_FD=%d", ARENA_FD_CHILD);
    snprintf(e_addr, sizeof e_addr, "DVS_ARENA_ADDR=0x%llx", ARENA_ADDR);
    snprintf(e_size, sizeof e_size, "DVS_ARENA_SIZE=%u", ARENA_SIZE);
    char *envp[] = {"DVS_ENDPOINT=kv", "DVS_LISTEN=127.0.0.1:0", e_path, e_afd, e_addr, e_size, NULL};
    char *argv[] = {service_path, NULL};
    e->memfd_a = new_memfd();
    memset(&e->a, 0, sizeof e->a);
    e->a.pid = fork();
    assert_true(e->a.pid >= 0);
    if (e->a.pid == 0) {
        if (dup2(e->memfd_a, ARENA_FD_CHILD) < 0)
            _exit(126);
        execve(service_path, argv, envp);
        _exit(127);
    }
    e->a.ctl = accept_timeout(lfd, 10000);
    assert_true(e->a.ctl >= 0);
    assert_int_equal(svc_recv(&e->a, 5000, &m), 0);
    assert_string_equal(m.verb, "hello");
    snprintf(e->a.address, sizeof e->a.address, "%s", dvs__ctl_get(&m, "address"));
    dirstub_set(e->dir, "kv", e->a.address, 1, "running");
    call_expect(e->client, "inc", "1");

    /* The agent freezes the service, then dies. */
    svc_cmd_ok(&e->a, "freeze", "hold_ms=300");
    close(e->a.ctl);
    struct bg_call *bg = bg_start(e, "inc");

    /* The new agent: the service reconnects and says it is frozen. */
    e->a.ctl = accept_timeout(lfd, 5000);
    assert_true(e->a.ctl >= 0);
    assert_int_equal(svc_recv(&e->a, 5000, &m), 0);
    assert_string_equal(m.verb, "hello");
    assert_string_equal(dvs__ctl_get(&m, "state"), "frozen");
    assert_false(atomic_load(&bg->done)); /* answered "migrating", retrying */

    /* The migration it was part of was aborted and the abort committed. */
    svc_cmd_ok(&e->a, "unfreeze", NULL);
    bg_join(bg);
    assert_int_equal(bg->rv, 0);
    assert_string_equal(bg->out, "2");
    close(lfd);
    unlink(path);
}

/* The agent's listening control socket at a per-test path. */
static int listen_ctl_path(char *path, size_t len, const char *tag)
{
    snprintf(path, len, "/tmp/dvs-test-ctl-%d-%s.sock", (int)getpid(), tag);
    unlink(path);
    struct sockaddr_un sa = {.sun_family = AF_UNIX};
    strcpy(sa.sun_path, path);
    int lfd = socket(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC, 0);
    assert_true(lfd >= 0);
    assert_int_equal(bind(lfd, (struct sockaddr *)&sa, sizeof sa), 0);
    assert_int_equal(listen(lfd, 4), 0);
    return lfd;
}

/*
 * The destination agent dies after the commit and before "start": the
 * restore instance holds the only complete copy of the state (the source
 * is already told it moved), so it must wait for the next agent on the
 * path, not exit; the next agent adopts it and says "start".
 */
static void restore_waits_for_the_next_agent_on_its_path(void **state)
{
    struct env *e = *state;
    struct dvs__ctl_msg m;
    char path[108], env_path[160];
    int lfd = listen_ctl_path(path, sizeof path, "restore");
    snprintf(env_path, sizeof env_path, "DVS_CONTROL_PATH=%s", path);

    start_a(e, NULL);
    call_expect(e->client, "inc", "1");
    call_expect(e->client, "inc", "2");
    svc_cmd_ok(&e->a, "freeze", NULL);
    e->memfd_b = copy_memfd(e->memfd_a);
    svc_start(&e->b, "restore", e->memfd_b, 0, env_path, &m);
    assert_string_equal(m.verb, "hello");
    assert_string_equal(dvs__ctl_get(&m, "state"), "restoring");

    /* The commit is in the directory; then the destination agent dies. */
    dirstub_set(e->dir, "kv", e->b.address, 2, "running");
    close(e->b.ctl);
    e->b.ctl = 0;

    /* The next agent: the instance, still restoring, connects to it. */
    e->b.ctl = accept_timeout(lfd, 5000);
    assert_true(e->b.ctl >= 0);
    assert_int_equal(svc_recv(&e->b, 5000, &m), 0);
    assert_string_equal(m.verb, "hello");
    assert_string_equal(dvs__ctl_get(&m, "state"), "restoring");
    assert_int_equal(svc_wait(&e->b, 0), -1);

    svc_cmd_ok(&e->b, "start", "generation=2");
    char args[128];
    snprintf(args, sizeof args, "generation=2 address=%s linger_ms=300", e->b.address);
    svc_cmd_ok(&e->a, "moved", args);
    /* Nothing lost: the counter goes on from the copy. */
    call_expect(e->client, "inc", "3");
    close(lfd);
    unlink(path);
}

int main(int argc, char **argv)
{
    (void)argc;
    /* test_service sits next to this binary. */
    char self[PATH_MAX - 32];
    ssize_t n = readlink("/proc/self/exe", self, sizeof self - 1);
    if (n <= 0)
        return 1;
    self[n] = '\0';
    char *slash = strrchr(self, '/');
    *slash = '\0';
    snprintf(service_path, sizeof service_path, "%s/test_service", self);
    (void)argv;
    signal(SIGPIPE, SIG_IGN);

#define T(name) cmocka_unit_test_setup_teardown(name, setup, teardown)
    const struct CMUnitTest tests[] = {
        T(calls_reach_the_service_through_the_directory),
        T(bad_calls_are_refused_before_sending),
        T(resent_request_is_answered_from_the_cache),
        T(garbage_closes_only_that_connection),
        T(many_threads_share_one_client),
        T(freeze_holds_requests_until_unfreeze),
        T(held_request_is_answered_migrating_after_hold_time),
        T(freeze_waits_for_the_request_in_progress),
        T(control_refuses_what_it_must_not_do),
        T(fds_command_passes_arena_and_tracking_fds),
        T(stop_command_ends_the_service),
        T(live_migration_keeps_state_and_executes_each_request_once),
        T(aborted_migration_resumes_on_the_source),
        T(restore_refuses_an_invalid_arena),
        T(restore_ends_when_the_agent_goes_away),
        T(refused_connection_finds_the_restarted_instance),
        T(nothing_serving_times_out_with_a_clear_error),
        T(unknown_endpoint_and_unreachable_manager_are_reported),
        T(endpoint_without_instance_is_waited_for),
        T(in_process_server_serves_until_stopped),
        T(restarted_agent_takes_back_a_frozen_service),
        T(restore_waits_for_the_next_agent_on_its_path),
    };
    return cmocka_run_group_tests_name("libdvs/server", tests, NULL, NULL);
}
