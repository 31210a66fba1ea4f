/*
 * The server: a service's side of an endpoint (DESIGN.md §4, §5).
 *
 * One private libuv loop on the thread that calls dvs_server_run does
 * everything: it accepts clients, decodes their frames, calls the handler,
 * answers, and obeys the agent's control commands. Because the handler runs
 * on the loop thread, a control command is only ever read between two
 * requests, which is exactly what "freeze: finish the request in progress,
 * hold new ones" requires, with no locks and no cooperation from the handler.
 *
 * States (docs/control-protocol.md has the agent's view):
 *
 *   restoring --start--> serving --freeze--> frozen --moved--> moved --linger--> (exit)
 *                           ^                  |
 *                           +----unfreeze------+   (only after an abort is committed)
 *
 * In "frozen", a request that arrives is held: its connection stops being
 * read, and it waits until the agent decides. Unfreeze executes held
 * requests in arrival order; moved answers them with the new location. A
 * request held longer than hold_ms is answered "migrating" so the client
 * backs off and resends instead of timing out. In "moved", every request is
 * answered with the new generation and address; the instance executes
 * nothing more and never writes to the arena again (its final copy is on
 * the destination).
 *
 * Every request goes through the reply cache in the arena first
 * (reply_cache.h), so a resend is never executed twice, even on another
 * node after a migration.
 */
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <linux/userfaultfd.h>
#include <netdb.h>
#include <poll.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <sys/ioctl.h>
#include <sys/socket.h>
#include <sys/syscall.h>
#include <sys/timerfd.h>
#include <sys/un.h>
#include <time.h>
#include <unistd.h>

#include <uv.h>

#include "arena.h"
#include "control.h"
#include "frame.h"
#include "reply_cache.h"
#include "track.h"

/* Debian 12's kernel headers predate these (Linux 6.7). */
#ifndef UFFD_USER_MODE_ONLY
#define UFFD_USER_MODE_ONLY 1
#endif
#ifndef UFFD_FEATURE_WP_HUGETLBFS_SHMEM
#define UFFD_FEATURE_WP_HUGETLBFS_SHMEM (1 << 12)
#endif
#ifndef UFFD_FEATURE_WP_UNPOPULATED
#define UFFD_FEATURE_WP_UNPOPULATED (1 << 13)
#endif
#ifndef UFFD_FEATURE_WP_ASYNC
#define UFFD_FEATURE_WP_ASYNC (1 << 15)
#endif

#define DEFAULT_HOLD_MS 1000
#define DEFAULT_LINGER_MS 5000
#define MAX_TIMER_MS 600000
#define DEFAULT_CACHE_CLIENTS 1024
#define DEFAULT_CACHE_ENTRIES 32
#define MAX_CONNS 4096
#define CONN_INITIAL_BUF 16384
/* A client that does not read its replies stops being read from. */
#define WRITE_QUEUE_HIGH (4u << 20)
#define CTL_QUEUE 64
#define CTL_RECONNECT_MS 1000
/* The throttle for auto-converge: at most one request per delay_us. */
#define MAX_THROTTLE_US 100000
/* Faster while restoring: the endpoint is down until the next agent comes. */
#define RESTORE_RECONNECT_MS 100

enum state {
    ST_RESTORING,
    ST_SERVING,
    ST_FROZEN,
    ST_MOVED,
    ST_STOPPING,
};

static const char *const state_names[] = {
    [ST_RESTORING] = "restoring",
    [ST_SERVING] = "serving",
    [ST_FROZEN] = "frozen",
    [ST_MOVED] = "moved",
    [ST_STOPPING] = "stopping",
};

struct conn {
    uv_tcp_t tcp;
    dvs_server *srv;
    struct conn *prev, *next;  /* all connections */
    struct conn *held_next;    /* the held FIFO */
    struct conn *paced_next;   /* the FIFO waiting for the throttle */
    uint8_t *buf;              /* bytes received, not yet consumed */
    size_t len, cap;
    uint64_t held_since;       /* loop time, ms */
    bool held, paced, reading, throttled, closing;
};

struct wreq {
    uv_write_t req;
    struct conn *conn;
    size_t len;
    uint8_t data[];
};

struct ctl_out {
    char data[DVS__CTL_MAX];
    size_t len;
    int fds[3];
    unsigned n_fds;
    bool own_fds; /* the queue closes them once sent or dropped */
};

struct ctl_conn {
    uv_poll_t poll;
    dvs_server *srv;
    int fd;
    int events;
};

struct dvs_server {
    /* Configuration. */
    char endpoint[DVS_MAX_NAME + 1];
    size_t endpoint_len;
    char address[300];
    uint64_t generation;
    bool restore;
    uint32_t max_payload;
    int hold_ms;
    dvs_log_fn log;
    void *log_data;

    /* State. */
    enum state state;
    uint64_t moved_generation;
    char moved_address[DVS__FRAME_MAX_TEXT + 1];
    int result;

    /* The arena and the reply cache inside it. */
    dvs_arena *arena;
    int arena_fd;
    bool own_arena_fd;
    struct dvs__rc *rc;
    struct dvs__rc_limits rc_limits;

    /* libuv. */
    uv_loop_t loop;
    bool loop_ready;
    uv_tcp_t listener;
    bool listener_ready;
    uv_async_t stop_async;
    uv_timer_t hold_timer, linger_timer, ctl_timer;
    bool handles_closed;
    bool running, ran;

    /* Connections. */
    struct conn *conns;
    unsigned n_conns;
    struct conn *held_head, *held_tail;
    unsigned n_held;
    uint8_t *reply_buf;
    dvs_handler_fn handler;
    void *handler_data;

    /* The control channel. */
    int ctl_fd; /* -1 when disconnected */
    char *ctl_path;
    struct ctl_conn *ctl;
    struct ctl_out ctl_queue[CTL_QUEUE];
    unsigned ctl_head, ctl_count;

    /* Handed to the agent for dirty tracking (DESIGN.md §4), made lazily. */
    int uffd, pagemap_fd;

    /* The throttle (auto-converge): a request is taken from a connection
     * only pace_next (uv_hrtime) or later, then pace_next moves throttle_us
     * on. Connections waiting for their turn queue in arrival order; a
     * timerfd wakes the loop with microsecond precision. */
    uint32_t throttle_us;
    uint64_t pace_next;
    int pace_fd;
    uv_poll_t *pace_poll;
    struct conn *paced_head, *paced_tail, *pace_granted;

    /* Counters for "status". */
    uint64_t n_requests, n_executed, n_replays, n_moved, n_migrating;
};

/* ---------------------------------------------------------------------------
 * Logging
 */

__attribute__((format(printf, 3, 4))) static void slog(const dvs_server *s, int level,
                                                       const char *fmt, ...)
{
    if (s->log == NULL)
        return;
    char msg[512];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);
    s->log(s->log_data, level, msg);
}

/*
 * One line each time this instance starts or stops executing requests, with
 * its pid and the wall-clock time (CLOCK_REALTIME, microseconds), so that a
 * test can rebuild from the logs of every instance of an endpoint, on every
 * node, the intervals in which each one served, and check that no two ever
 * overlapped (DESIGN.md §4: at most one instance serves). A start is logged
 * before the first request it allows runs, a stop after the last one ran.
 */
static void slog_serving(const dvs_server *s, bool start, const char *why)
{
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    slog(s, DVS_LOG_INFO,
         "endpoint=%s generation=%" PRIu64 " serve-%s pid=%ld t_us=%" PRIu64 " why=%s",
         s->endpoint, s->generation, start ? "start" : "stop", (long)getpid(),
         (uint64_t)ts.tv_sec * 1000000u + (uint64_t)ts.tv_nsec / 1000u, why);
}

/* uv_close callback for handles that are the first member of a malloc'd struct. */
static void free_handle_cb(uv_handle_t *h)
{
    free(h);
}

/* ---------------------------------------------------------------------------
 * The control channel: output
 *
 * Messages are small and the agent reads them promptly, so a send almost
 * always succeeds at once; the queue only covers a momentarily full socket.
 */

static void ctl_update_poll(dvs_server *s);
static void ctl_disconnect(dvs_server *s, const char *why);

static int ctl_send_one(dvs_server *s, const struct ctl_out *m)
{
    struct iovec iov = {.iov_base = (void *)m->data, .iov_len = m->len};
    union {
        char buf[CMSG_SPACE(sizeof(int) * 3)];
        struct cmsghdr align;
    } cbuf;
    struct msghdr mh = {.msg_iov = &iov, .msg_iovlen = 1};

    if (m->n_fds > 0) {
        memset(&cbuf, 0, sizeof cbuf);
        mh.msg_control = cbuf.buf;
        mh.msg_controllen = CMSG_SPACE(sizeof(int) * m->n_fds);
        struct cmsghdr *cm = CMSG_FIRSTHDR(&mh);
        cm->cmsg_level = SOL_SOCKET;
        cm->cmsg_type = SCM_RIGHTS;
        cm->cmsg_len = CMSG_LEN(sizeof(int) * m->n_fds);
        memcpy(CMSG_DATA(cm), m->fds, sizeof(int) * m->n_fds);
    }
    ssize_t n = sendmsg(s->ctl_fd, &mh, MSG_DONTWAIT | MSG_NOSIGNAL);
    if (n < 0)
        return -errno;
    return 0;
}

/* A message left the queue (sent, or dropped with the channel). */
static void ctl_out_done(struct ctl_out *m)
{
    if (m->own_fds)
        for (unsigned i = 0; i < m->n_fds; i++)
            close(m->fds[i]);
    m->n_fds = 0;
    m->own_fds = false;
}

/* Send what is queued; returns 0, -EAGAIN (still queued) or an error. */
static int ctl_flush(dvs_server *s)
{
    while (s->ctl_count > 0) {
        int rv = ctl_send_one(s, &s->ctl_queue[s->ctl_head]);
        if (rv == -EAGAIN || rv == -EWOULDBLOCK)
            return -EAGAIN;
        if (rv != 0)
            return rv;
        ctl_out_done(&s->ctl_queue[s->ctl_head]);
        s->ctl_head = (s->ctl_head + 1) % CTL_QUEUE;
        s->ctl_count--;
    }
    return 0;
}

/* Wait up to timeout_ms for the queue to drain (outside the loop, or at exit). */
static void ctl_flush_sync(dvs_server *s, int timeout_ms)
{
    while (s->ctl_fd >= 0 && s->ctl_count > 0) {
        int rv = ctl_flush(s);
        if (rv == 0)
            return;
        if (rv != -EAGAIN) {
            ctl_disconnect(s, "send failed");
            return;
        }
        struct pollfd p = {.fd = s->ctl_fd, .events = POLLOUT};
        if (poll(&p, 1, timeout_ms) <= 0)
            return;
    }
}

/* Queue a message and try to send it. With own_fds, the fds are the
 * queue's: closed once sent, or at once if the message cannot be queued. */
__attribute__((format(printf, 5, 0))) static void ctl_vsendf(dvs_server *s, const int *fds,
                                                             unsigned n_fds, bool own_fds,
                                                             const char *fmt, va_list ap)
{
    if (s->ctl_fd >= 0 && s->ctl_count == CTL_QUEUE) {
        /* The agent has stopped reading: it is hung. Reconnecting (with a
         * path) is the only way to get a coherent channel back. */
        ctl_disconnect(s, "agent not reading");
    }
    if (s->ctl_fd < 0) {
        for (unsigned i = 0; own_fds && i < n_fds; i++)
            close(fds[i]);
        return;
    }
    struct ctl_out *m = &s->ctl_queue[(s->ctl_head + s->ctl_count) % CTL_QUEUE];
    int n = vsnprintf(m->data, sizeof m->data, fmt, ap);
    m->len = n < 0 ? 0 : ((size_t)n < sizeof m->data ? (size_t)n : sizeof m->data - 1);
    m->n_fds = n_fds;
    m->own_fds = own_fds;
    if (n_fds > 0)
        memcpy(m->fds, fds, sizeof(int) * n_fds);
    s->ctl_count++;

    int rv = ctl_flush(s);
    if (rv != 0 && rv != -EAGAIN)
        ctl_disconnect(s, "send failed");
    else
        ctl_update_poll(s);
}

__attribute__((format(printf, 4, 5))) static void ctl_sendf(dvs_server *s, const int *fds,
                                                            unsigned n_fds, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    ctl_vsendf(s, fds, n_fds, false, fmt, ap);
    va_end(ap);
}

/* ctl_sendf for fds made for this message alone (the queue closes them). */
__attribute__((format(printf, 4, 5))) static void ctl_sendf_own(dvs_server *s, const int *fds,
                                                                unsigned n_fds, const char *fmt,
                                                                ...)
{
    va_list ap;
    va_start(ap, fmt);
    ctl_vsendf(s, fds, n_fds, true, fmt, ap);
    va_end(ap);
}

static void ctl_hello(dvs_server *s)
{
    ctl_sendf(s, NULL, 0,
              "hello version=%d endpoint=%s pid=%ld generation=%" PRIu64
              " mode=%s state=%s arena_addr=0x%" PRIxPTR " arena_size=%zu address=%s",
              DVS__CTL_VERSION, s->endpoint, (long)getpid(), s->generation,
              s->restore ? "restore" : "fresh", state_names[s->state],
              (uintptr_t)dvs_arena_base(s->arena), dvs_arena_size(s->arena), s->address);
}

/* ---------------------------------------------------------------------------
 * Connections
 */

static void process_conn(struct conn *c);
static void conn_close(struct conn *c);

static void conn_alloc_cb(uv_handle_t *h, size_t suggested, uv_buf_t *buf)
{
    struct conn *c = h->data;
    (void)suggested;
    /* Growth happens in process_conn, where the needed size is known. */
    *buf = uv_buf_init((char *)c->buf + c->len, (unsigned)(c->cap - c->len));
}

static void conn_read_cb(uv_stream_t *stream, ssize_t nread, const uv_buf_t *buf)
{
    struct conn *c = stream->data;
    (void)buf;
    if (nread < 0) {
        if (nread != UV_EOF)
            slog(c->srv, DVS_LOG_DEBUG, "connection read error: %s", uv_strerror((int)nread));
        conn_close(c);
        return;
    }
    c->len += (size_t)nread;
    process_conn(c);
}

/* Read from c exactly when it may make progress. */
static void conn_update_reading(struct conn *c)
{
    bool want = !c->closing && !c->held && !c->paced && !c->throttled && c->len < c->cap;
    if (want && !c->reading) {
        if (uv_read_start((uv_stream_t *)&c->tcp, conn_alloc_cb, conn_read_cb) == 0)
            c->reading = true;
    } else if (!want && c->reading) {
        uv_read_stop((uv_stream_t *)&c->tcp);
        c->reading = false;
    }
}

static void conn_free_cb(uv_handle_t *h)
{
    struct conn *c = h->data;
    free(c->buf);
    free(c);
}

static void held_remove(dvs_server *s, struct conn *c)
{
    struct conn **link = &s->held_head, *prev = NULL;
    while (*link != NULL && *link != c) {
        prev = *link;
        link = &(*link)->held_next;
    }
    if (*link == NULL)
        return;
    *link = c->held_next;
    if (s->held_tail == c)
        s->held_tail = prev;
    c->held_next = NULL;
    c->held = false;
    s->n_held--;
}

static void paced_remove(dvs_server *s, struct conn *c)
{
    struct conn **link = &s->paced_head, *prev = NULL;
    while (*link != NULL && *link != c) {
        prev = *link;
        link = &(*link)->paced_next;
    }
    if (*link == NULL)
        return;
    *link = c->paced_next;
    if (s->paced_tail == c)
        s->paced_tail = prev;
    c->paced_next = NULL;
    c->paced = false;
}

static void conn_close(struct conn *c)
{
    dvs_server *s = c->srv;
    if (c->closing)
        return;
    c->closing = true;
    if (c->held)
        held_remove(s, c);
    if (c->paced)
        paced_remove(s, c);
    if (s->pace_granted == c)
        s->pace_granted = NULL;
    if (c->prev != NULL)
        c->prev->next = c->next;
    else
        s->conns = c->next;
    if (c->next != NULL)
        c->next->prev = c->prev;
    s->n_conns--;
    uv_close((uv_handle_t *)&c->tcp, conn_free_cb);
}

static void write_cb(uv_write_t *req, int status)
{
    struct wreq *w = (struct wreq *)req;
    struct conn *c = w->conn;
    free(w);
    if (status == UV_ECANCELED)
        return; /* the connection is being closed */
    if (status < 0) {
        conn_close(c);
        return;
    }
    if (c->throttled && uv_stream_get_write_queue_size((uv_stream_t *)&c->tcp) < WRITE_QUEUE_HIGH / 2) {
        c->throttled = false;
        process_conn(c); /* frames may be waiting in the buffer */
    }
}

static void send_frame(struct conn *c, const struct dvs__frame *f)
{
    if (c->closing)
        return;
    size_t size = dvs__frame_size(f);
    struct wreq *w = malloc(sizeof(*w) + size);
    if (w == NULL) {
        conn_close(c); /* the client resends elsewhere or later */
        return;
    }
    if (dvs__frame_encode(f, w->data, size, &w->len) != 0) {
        /* Every reply is built here from checked parts; cannot happen. */
        free(w);
        conn_close(c);
        return;
    }
    w->conn = c;
    uv_buf_t b = uv_buf_init((char *)w->data, (unsigned)w->len);
    if (uv_write(&w->req, (uv_stream_t *)&c->tcp, &b, 1, write_cb) != 0) {
        free(w);
        conn_close(c);
        return;
    }
    if (uv_stream_get_write_queue_size((uv_stream_t *)&c->tcp) > WRITE_QUEUE_HIGH)
        c->throttled = true;
}

/* A reply to request req with the given status and payload. */
static void reply(struct conn *c, const struct dvs__frame *req, uint8_t status,
                  uint8_t flags, uint64_t generation, const void *payload, uint32_t len)
{
    struct dvs__frame f = {
        .type = DVS__FRAME_REPLY,
        .status = status,
        .flags = flags,
        .generation = generation,
        .seq = req->seq,
        .payload = len > 0 ? payload : NULL,
        .payload_len = len,
    };
    memcpy(f.client_id, req->client_id, DVS__CLIENT_ID_SIZE);
    send_frame(c, &f);
}

static void reply_error(struct conn *c, const struct dvs__frame *req, int code, const char *text)
{
    uint8_t buf[4 + DVS__FRAME_MAX_TEXT];
    size_t n = dvs__error_payload_encode(code, text, buf, sizeof buf);
    reply(c, req, DVS__STATUS_ERROR, 0, c->srv->generation, buf, (uint32_t)n);
}

static void reply_moved(struct conn *c, const struct dvs__frame *req)
{
    dvs_server *s = c->srv;
    s->n_moved++;
    reply(c, req, DVS__STATUS_MOVED, 0, s->moved_generation, s->moved_address,
          (uint32_t)strlen(s->moved_address));
}

/* ---------------------------------------------------------------------------
 * Requests
 */

static void execute(dvs_server *s, struct conn *c, const struct dvs__frame *req)
{
    struct dvs__rc_reply saved;

    /* A client that has seen a newer instance must not be served by this
     * one: the directory has moved on, so must the client. */
    if (req->generation > s->generation) {
        reply_error(c, req, DVS_ESTALEGEN, "this instance is older than the client's view");
        return;
    }

    int v = dvs__rc_lookup(s->arena, s->rc, req->client_id, req->seq, req->ack, &saved);
    if (v < 0) {
        slog(s, DVS_LOG_WARN, "endpoint=%s reply cache: no room for a client record", s->endpoint);
        reply_error(c, req, v, "no room in the arena for the reply cache");
        return;
    }
    if (v == DVS__RC_REPLAY) {
        s->n_replays++;
        reply(c, req, saved.status, DVS__FRAME_F_REPLAYED, s->generation, saved.data, saved.len);
        return;
    }
    if (v == DVS__RC_FORGOTTEN) {
        reply_error(c, req, DVS_EUNKNOWNOUTCOME, "request executed earlier; its reply is gone");
        return;
    }

    size_t rlen = s->max_payload;
    int rv = s->handler(s->handler_data, req->payload != NULL ? req->payload : (const void *)"",
                        req->payload_len, s->reply_buf, &rlen);
    s->n_executed++;

    uint8_t status = DVS__STATUS_OK;
    const void *data = s->reply_buf;
    uint32_t len = (uint32_t)rlen;
    uint8_t errbuf[4 + DVS__FRAME_MAX_TEXT];
    if (rv != 0 || rlen > s->max_payload) {
        if (rv >= 0) {
            slog(s, DVS_LOG_ERROR, "endpoint=%s handler returned %d with reply_len=%zu (max %" PRIu32 ")",
                 s->endpoint, rv, rlen, s->max_payload);
            rv = DVS_EINTERNAL;
        }
        status = DVS__STATUS_ERROR;
        data = errbuf;
        len = (uint32_t)dvs__error_payload_encode(rv, NULL, errbuf, sizeof errbuf);
    }
    int stored = dvs__rc_store(s->arena, s->rc, req->client_id, req->seq, status, data, len);
    if (stored != 0)
        slog(s, DVS_LOG_WARN, "endpoint=%s seq=%" PRIu64 " reply not kept in the cache (%s)",
             s->endpoint, req->seq, stored > 0 ? "no room" : "no client record");
    reply(c, req, status, 0, s->generation, data, len);
}

/* Answer or hold one decoded request. Returns false if it was held. */
static bool dispatch(dvs_server *s, struct conn *c, const struct dvs__frame *req)
{
    s->n_requests++;
    if (req->name_len != s->endpoint_len || memcmp(req->name, s->endpoint, s->endpoint_len) != 0) {
        /* A stale address in the client's cache now belongs to someone else. */
        reply_error(c, req, DVS_ENOTFOUND, "this instance serves another endpoint");
        return true;
    }
    switch (s->state) {
    case ST_SERVING:
        execute(s, c, req);
        return true;
    case ST_FROZEN:
        return false;
    case ST_MOVED:
        reply_moved(c, req);
        return true;
    case ST_RESTORING:
    case ST_STOPPING:
        break;
    }
    /* Going away: the client sees the connection close and looks again. */
    conn_close(c);
    return true;
}

static void hold_timer_arm(dvs_server *s);

static void hold(dvs_server *s, struct conn *c)
{
    c->held = true;
    c->held_since = uv_now(&s->loop);
    c->held_next = NULL;
    if (s->held_tail != NULL)
        s->held_tail->held_next = c;
    else
        s->held_head = c;
    s->held_tail = c;
    s->n_held++;
    hold_timer_arm(s);
}

static int conn_grow(struct conn *c, size_t need)
{
    size_t cap = c->cap * 2;
    if (cap < need)
        cap = need;
    size_t max = DVS__FRAME_HEADER_SIZE + DVS__FRAME_MAX_NAME + (size_t)c->srv->max_payload;
    if (cap > max)
        cap = max;
    if (cap < need)
        return -EINVAL; /* the decoder bounds need; cannot happen */
    uint8_t *b = realloc(c->buf, cap);
    if (b == NULL)
        return -ENOMEM;
    c->buf = b;
    c->cap = cap;
    return 0;
}

/* Give back a buffer grown for a large frame, so that idle connections
 * cost little however large their past requests were. */
static void conn_shrink(struct conn *c)
{
    if (c->cap <= CONN_INITIAL_BUF * 4 || c->len > CONN_INITIAL_BUF)
        return;
    uint8_t *b = realloc(c->buf, CONN_INITIAL_BUF);
    if (b != NULL) {
        c->buf = b;
        c->cap = CONN_INITIAL_BUF;
    }
}

/* ---------------------------------------------------------------------------
 * The throttle (auto-converge, DESIGN.md §4)
 *
 * When the agent's dirty rounds do not converge it slows the service down,
 * as QEMU's auto-converge slows a guest: the loop takes at most one new
 * request per throttle_us, from all connections together, so the rate of
 * writes to the arena falls. Nothing sleeps: a connection whose request
 * must wait is parked, and a timerfd brings the loop back when the next
 * request may be taken, so control commands are answered meanwhile.
 */

static void pace_arm(dvs_server *s)
{
    if (s->pace_fd < 0)
        return;
    struct itimerspec its = {0};
    if (s->paced_head != NULL) {
        /* uv_hrtime is CLOCK_MONOTONIC in nanoseconds; 0 would disarm. */
        uint64_t at = s->pace_next > 0 ? s->pace_next : 1;
        its.it_value.tv_sec = (time_t)(at / 1000000000u);
        its.it_value.tv_nsec = (long)(at % 1000000000u);
    }
    timerfd_settime(s->pace_fd, TFD_TIMER_ABSTIME, &its, NULL);
}

/* Whether c's next request must wait for the throttle (then c is parked). */
static bool pace_wait(dvs_server *s, struct conn *c)
{
    if (s->throttle_us == 0 || s->pace_fd < 0)
        return false;
    uint64_t now = uv_hrtime();
    if (s->pace_granted == c || (s->paced_head == NULL && now >= s->pace_next)) {
        s->pace_granted = NULL;
        s->pace_next = now + (uint64_t)s->throttle_us * 1000u;
        return false;
    }
    c->paced = true;
    c->paced_next = NULL;
    if (s->paced_tail != NULL)
        s->paced_tail->paced_next = c;
    else
        s->paced_head = c;
    s->paced_tail = c;
    pace_arm(s);
    return true;
}

/* Give parked connections their turns: all of them when the throttle is
 * off, otherwise the one at the head once its time has come. */
static void pace_release(dvs_server *s)
{
    while (s->paced_head != NULL && (s->throttle_us == 0 || uv_hrtime() >= s->pace_next)) {
        struct conn *c = s->paced_head;
        paced_remove(s, c);
        s->pace_granted = c;
        process_conn(c); /* takes one request; parks again if it has more */
        if (s->pace_granted == c)
            s->pace_granted = NULL; /* it had no complete request after all */
    }
    pace_arm(s);
}

static void pace_poll_cb(uv_poll_t *p, int status, int events)
{
    dvs_server *s = p->data;
    uint64_t expirations;
    (void)status;
    (void)events;
    if (read(s->pace_fd, &expirations, sizeof expirations) < 0 && errno != EAGAIN)
        slog(s, DVS_LOG_DEBUG, "endpoint=%s throttle timer: %s", s->endpoint, strerror(errno));
    pace_release(s);
}

/* Set the throttle; 0 turns it off and lets every parked request go. */
static int throttle_set(dvs_server *s, uint32_t delay_us)
{
    if (delay_us > 0 && s->pace_fd < 0) {
        int fd = timerfd_create(CLOCK_MONOTONIC, TFD_NONBLOCK | TFD_CLOEXEC);
        if (fd < 0)
            return -errno;
        uv_poll_t *p = malloc(sizeof(*p));
        if (p == NULL || uv_poll_init(&s->loop, p, fd) != 0) {
            free(p);
            close(fd);
            return -ENOMEM;
        }
        p->data = s;
        uv_poll_start(p, UV_READABLE, pace_poll_cb);
        s->pace_fd = fd;
        s->pace_poll = p;
    }
    if (delay_us != s->throttle_us)
        slog(s, DVS_LOG_INFO, "endpoint=%s throttle %" PRIu32 " us per request", s->endpoint,
             delay_us);
    s->throttle_us = delay_us;
    if (s->pace_fd >= 0) {
        uint64_t now = uv_hrtime();
        if (s->pace_next > now + (uint64_t)delay_us * 1000u)
            s->pace_next = now + (uint64_t)delay_us * 1000u; /* a lower delay applies now */
        pace_release(s);
    }
    return 0;
}

/* Decode and dispatch every complete frame in c's buffer. */
static void process_conn(struct conn *c)
{
    dvs_server *s = c->srv;

    while (!c->closing && !c->held && !c->paced && !c->throttled) {
        struct dvs__frame f;
        size_t size;
        int rv = dvs__frame_decode(c->buf, c->len, s->max_payload, &f, &size);
        if (rv == -EAGAIN) {
            if (size > c->cap && conn_grow(c, size) != 0) {
                conn_close(c);
                return;
            }
            break;
        }
        if (rv != 0 || f.type != DVS__FRAME_REQUEST) {
            /* The stream cannot be resynchronised: drop the peer. */
            slog(s, DVS_LOG_DEBUG, "endpoint=%s dropping a connection: %s", s->endpoint,
                 rv != 0 ? dvs_err_name(rv) : "reply frame from a client");
            conn_close(c);
            return;
        }
        if (pace_wait(s, c))
            break;
        if (!dispatch(s, c, &f)) {
            hold(s, c);
            break;
        }
        if (c->closing)
            return;
        memmove(c->buf, c->buf + size, c->len - size);
        c->len -= size;
        conn_shrink(c);
    }
    if (!c->closing)
        conn_update_reading(c);
}

/* Let held requests go (after unfreeze or moved), in arrival order. */
static void release_held(dvs_server *s)
{
    while (s->held_head != NULL) {
        struct conn *c = s->held_head;
        held_remove(s, c);
        process_conn(c);
    }
}

static void hold_timer_cb(uv_timer_t *t)
{
    dvs_server *s = t->data;
    uint64_t now = uv_now(&s->loop);

    /* The FIFO is in hold order, so the expired ones are at its head. */
    while (s->held_head != NULL && s->held_head->held_since + (uint64_t)s->hold_ms <= now) {
        struct conn *c = s->held_head;
        held_remove(s, c);
        struct dvs__frame f;
        size_t size;
        if (dvs__frame_decode(c->buf, c->len, s->max_payload, &f, &size) != 0) {
            conn_close(c); /* it decoded before; cannot happen */
            continue;
        }
        s->n_migrating++;
        reply(c, &f, DVS__STATUS_MIGRATING, 0, s->generation, NULL, 0);
        memmove(c->buf, c->buf + size, c->len - size);
        c->len -= size;
        conn_shrink(c);
        process_conn(c); /* its next request, if any, is held anew */
    }
    hold_timer_arm(s);
}

static void hold_timer_arm(dvs_server *s)
{
    if (s->held_head == NULL) {
        uv_timer_stop(&s->hold_timer);
        return;
    }
    uint64_t due = s->held_head->held_since + (uint64_t)s->hold_ms;
    uint64_t now = uv_now(&s->loop);
    uv_timer_start(&s->hold_timer, hold_timer_cb, due > now ? due - now : 0, 0);
}

static void on_connection(uv_stream_t *listener, int status)
{
    dvs_server *s = listener->data;
    if (status < 0) {
        slog(s, DVS_LOG_WARN, "endpoint=%s accept failed: %s", s->endpoint, uv_strerror(status));
        return;
    }
    struct conn *c = calloc(1, sizeof(*c));
    uint8_t *buf = malloc(CONN_INITIAL_BUF);
    if (c == NULL || buf == NULL || uv_tcp_init(&s->loop, &c->tcp) != 0) {
        free(c);
        free(buf);
        /* Accept into a throwaway handle so the backlog does not spin. */
        uv_tcp_t *tmp = malloc(sizeof(*tmp));
        if (tmp != NULL && uv_tcp_init(&s->loop, tmp) == 0) {
            uv_accept(listener, (uv_stream_t *)tmp);
            uv_close((uv_handle_t *)tmp, free_handle_cb);
        } else {
            free(tmp);
        }
        return;
    }
    c->srv = s;
    c->buf = buf;
    c->cap = CONN_INITIAL_BUF;
    c->tcp.data = c;
    if (uv_accept(listener, (uv_stream_t *)&c->tcp) != 0) {
        c->closing = true;
        uv_close((uv_handle_t *)&c->tcp, conn_free_cb);
        return;
    }
    c->next = s->conns;
    if (s->conns != NULL)
        s->conns->prev = c;
    s->conns = c;
    s->n_conns++;
    if (s->n_conns > MAX_CONNS) {
        slog(s, DVS_LOG_WARN, "endpoint=%s too many connections (%d): refusing one", s->endpoint,
             MAX_CONNS);
        conn_close(c);
        return;
    }
    uv_tcp_nodelay(&c->tcp, 1);
    conn_update_reading(c);
}

/* ---------------------------------------------------------------------------
 * Shutdown
 */

static void close_handles(dvs_server *s)
{
    if (s->handles_closed)
        return;
    s->handles_closed = true;
    while (s->conns != NULL)
        conn_close(s->conns);
    if (s->listener_ready)
        uv_close((uv_handle_t *)&s->listener, NULL);
    uv_close((uv_handle_t *)&s->stop_async, NULL);
    uv_close((uv_handle_t *)&s->hold_timer, NULL);
    uv_close((uv_handle_t *)&s->linger_timer, NULL);
    uv_close((uv_handle_t *)&s->ctl_timer, NULL);
    if (s->pace_poll != NULL) {
        uv_close((uv_handle_t *)s->pace_poll, free_handle_cb);
        s->pace_poll = NULL;
    }
    if (s->ctl != NULL) {
        uv_close((uv_handle_t *)&s->ctl->poll, free_handle_cb);
        s->ctl = NULL;
    }
}

static void shutdown_server(dvs_server *s, int result, const char *reason)
{
    if (s->state == ST_STOPPING)
        return;
    bool was_serving = s->state == ST_SERVING && s->running;
    s->state = ST_STOPPING;
    s->result = result;
    if (was_serving)
        slog_serving(s, false, reason);
    slog(s, DVS_LOG_INFO, "endpoint=%s generation=%" PRIu64 " exiting: %s", s->endpoint,
         s->generation, reason);
    if (result == 0 || result == DVS_EMOVED)
        ctl_sendf(s, NULL, 0, "exiting reason=%s", reason);
    else
        ctl_sendf(s, NULL, 0, "exiting reason=error code=%s", dvs_err_name(result));
    ctl_flush_sync(s, 100);
    close_handles(s);
}

static void stop_async_cb(uv_async_t *a)
{
    shutdown_server(a->data, 0, "stopped");
}

static void linger_timer_cb(uv_timer_t *t)
{
    shutdown_server(t->data, DVS_EMOVED, "moved");
}

/* ---------------------------------------------------------------------------
 * Dirty tracking handles for the agent (DESIGN.md §4)
 *
 * The agent drives userfaultfd write-protection itself; the service only
 * has to create the uffd (it belongs to the process whose memory it
 * watches) and open its own pagemap, and pass both over the socket.
 */

static int make_uffd(void)
{
    int fd = (int)syscall(SYS_userfaultfd, O_CLOEXEC | O_NONBLOCK | UFFD_USER_MODE_ONLY);
    if (fd < 0 && errno == EINVAL) /* kernels before 5.11 */
        fd = (int)syscall(SYS_userfaultfd, O_CLOEXEC | O_NONBLOCK);
    if (fd < 0)
        return -errno;
    struct uffdio_api api = {
        .api = UFFD_API,
        .features = UFFD_FEATURE_WP_ASYNC | UFFD_FEATURE_WP_UNPOPULATED |
                    UFFD_FEATURE_WP_HUGETLBFS_SHMEM,
    };
    if (ioctl(fd, UFFDIO_API, &api) != 0) {
        int err = -errno;
        close(fd);
        return err;
    }
    return fd;
}

/* ---------------------------------------------------------------------------
 * Control commands
 */

static void ctl_ok(dvs_server *s, uint64_t id)
{
    ctl_sendf(s, NULL, 0, "ok id=%" PRIu64 " state=%s generation=%" PRIu64, id,
              state_names[s->state], s->generation);
}

static void ctl_error(dvs_server *s, uint64_t id, int code, const char *text)
{
    ctl_sendf(s, NULL, 0, "error id=%" PRIu64 " code=%s state=%s message=%s", id, dvs_err_name(code),
              state_names[s->state], text);
}

/*
 * The migration this instance took part in is over (aborted and unfrozen,
 * moved) or its agent is gone: never leave the arena write-protected or
 * the service slowed down with nobody to undo it.
 */
static void migration_end(dvs_server *s, const char *why)
{
    if (dvs__track_stop(s) == 0)
        slog(s, DVS_LOG_INFO, "endpoint=%s dirty tracking stopped: %s", s->endpoint, why);
    if (s->throttle_us > 0) {
        slog(s, DVS_LOG_INFO, "endpoint=%s throttle off: %s", s->endpoint, why);
        s->throttle_us = 0;
    }
    /* Requests parked by the throttle go now, after any held ones the
     * caller has released (they arrived earlier). */
    pace_release(s);
}

static void cmd_freeze(dvs_server *s, uint64_t id, const struct dvs__ctl_msg *m)
{
    uint64_t hold_ms = (uint64_t)s->hold_ms;
    int rv = dvs__ctl_get_u64(m, "hold_ms", 1, MAX_TIMER_MS, &hold_ms);
    if (rv == -EINVAL) {
        ctl_error(s, id, DVS_EBADREQUEST, "hold_ms must be 1..600000");
        return;
    }
    if (s->state != ST_SERVING && s->state != ST_FROZEN) {
        ctl_error(s, id, DVS_ECONFLICT, "freeze needs state serving");
        return;
    }
    /* Nothing is executing now: commands are read between requests. */
    s->hold_ms = (int)hold_ms;
    bool was_serving = s->state == ST_SERVING;
    s->state = ST_FROZEN;
    if (was_serving) {
        slog(s, DVS_LOG_INFO, "endpoint=%s generation=%" PRIu64 " frozen", s->endpoint,
             s->generation);
        slog_serving(s, false, "frozen");
    }
    ctl_ok(s, id);
}

static void cmd_unfreeze(dvs_server *s, uint64_t id)
{
    if (s->state == ST_SERVING) {
        /* An agent that aborts during pre-copy may say so this way too. */
        migration_end(s, "unfreeze");
        ctl_ok(s, id);
        return;
    }
    if (s->state != ST_FROZEN) {
        ctl_error(s, id, DVS_ECONFLICT, "unfreeze needs state frozen");
        return;
    }
    slog_serving(s, true, "unfrozen");
    s->state = ST_SERVING;
    slog(s, DVS_LOG_INFO, "endpoint=%s generation=%" PRIu64 " unfrozen, %u held requests resume",
         s->endpoint, s->generation, s->n_held);
    s->throttle_us = 0; /* so that held requests are not paced again */
    ctl_ok(s, id);
    release_held(s);
    migration_end(s, "unfreeze");
}

static void cmd_moved(dvs_server *s, uint64_t id, const struct dvs__ctl_msg *m)
{
    uint64_t gen, linger = DEFAULT_LINGER_MS;
    const char *addr = dvs__ctl_get(m, "address");
    char host[256];
    uint16_t port;

    if (dvs__ctl_get_u64(m, "generation", 1, INT64_MAX, &gen) != 0 || gen <= s->generation) {
        ctl_error(s, id, DVS_EBADREQUEST, "generation must be a number above the current one");
        return;
    }
    if (addr == NULL || strlen(addr) > DVS__FRAME_MAX_TEXT ||
        dvs__parse_hostport(addr, host, sizeof host, &port, false) != 0) {
        ctl_error(s, id, DVS_EBADREQUEST, "address must be host:port");
        return;
    }
    if (dvs__ctl_get_u64(m, "linger_ms", 0, MAX_TIMER_MS, &linger) == -EINVAL) {
        ctl_error(s, id, DVS_EBADREQUEST, "linger_ms must be 0..600000");
        return;
    }
    if (s->state != ST_FROZEN && s->state != ST_MOVED) {
        /* Without a freeze the destination's copy could miss writes. */
        ctl_error(s, id, DVS_ECONFLICT, "moved needs state frozen");
        return;
    }
    s->moved_generation = gen;
    snprintf(s->moved_address, sizeof s->moved_address, "%s", addr);
    s->state = ST_MOVED;
    s->throttle_us = 0;
    slog(s, DVS_LOG_INFO, "endpoint=%s generation=%" PRIu64 " moved to %s generation=%" PRIu64
         ", answering moved for %" PRIu64 " ms", s->endpoint, s->generation, addr, gen, linger);
    ctl_ok(s, id);
    release_held(s);
    migration_end(s, "moved");
    uv_timer_start(&s->linger_timer, linger_timer_cb, linger, 0);
}

static void cmd_status(dvs_server *s, uint64_t id)
{
    struct dvs_arena_stats as;
    struct dvs__rc_stats rs = {0};
    dvs_arena_stats(s->arena, &as);
    if (s->rc != NULL)
        dvs__rc_stats(s->rc, &rs);
    ctl_sendf(s, NULL, 0,
              "ok id=%" PRIu64 " state=%s generation=%" PRIu64 " address=%s conns=%u held=%u"
              " requests=%" PRIu64 " executed=%" PRIu64 " replays=%" PRIu64
              " moved_replies=%" PRIu64 " migrating_replies=%" PRIu64
              " arena_used=%zu arena_size=%zu cache_clients=%" PRIu32 " cache_entries=%" PRIu64
              " cache_bytes=%" PRIu64 " tracking=%s throttle_us=%" PRIu32,
              id, state_names[s->state], s->generation, s->address, s->n_conns, s->n_held,
              s->n_requests, s->n_executed, s->n_replays, s->n_moved, s->n_migrating, as.used,
              as.size, rs.clients, rs.entries, rs.bytes,
              dvs__track_active(s) ? "mprotect" : "none", s->throttle_us);
}

static void cmd_fds(dvs_server *s, uint64_t id)
{
    if (s->uffd < 0) {
        int fd = make_uffd();
        if (fd >= 0)
            s->uffd = fd;
        else
            slog(s, DVS_LOG_INFO, "endpoint=%s no userfaultfd for dirty tracking: %s",
                 s->endpoint, dvs_err_name(fd));
    }
    if (s->pagemap_fd < 0)
        s->pagemap_fd = open("/proc/self/pagemap", O_RDONLY | O_CLOEXEC);

    int fds[3];
    unsigned n = 0;
    char names[64] = "";
    fds[n++] = s->arena_fd;
    strcat(names, "arena");
    if (s->uffd >= 0) {
        fds[n++] = s->uffd;
        strcat(names, ",uffd");
    }
    if (s->pagemap_fd >= 0) {
        fds[n++] = s->pagemap_fd;
        strcat(names, ",pagemap");
    }
    ctl_sendf(s, fds, n, "ok id=%" PRIu64 " state=%s generation=%" PRIu64 " fds=%s", id,
              state_names[s->state], s->generation, names);
}

/*
 * track-start: the mprotect fallback of DESIGN.md §4 (track.h has the
 * mechanism and why it loses no write). The bitmap memfd goes to the agent
 * with the reply.
 */
static void cmd_track_start(dvs_server *s, uint64_t id, const struct dvs__ctl_msg *m)
{
    uint64_t max_faults = DVS__TRACK_DEFAULT_MAX_FAULTS;
    if (dvs__ctl_get_u64(m, "max_faults", 1, DVS__TRACK_MAX_MAX_FAULTS, &max_faults) == -EINVAL) {
        ctl_error(s, id, DVS_EBADREQUEST, "max_faults must be 1..16384");
        return;
    }
    if (s->state != ST_SERVING && s->state != ST_FROZEN) {
        ctl_error(s, id, DVS_ECONFLICT, "track-start needs state serving or frozen");
        return;
    }
    if (dvs__track_active(s)) {
        ctl_error(s, id, DVS_ECONFLICT, "tracking is already on: track-stop first");
        return;
    }
    int fd;
    int rv = dvs__track_start(s, dvs_arena_base(s->arena), dvs_arena_size(s->arena),
                              (uint32_t)max_faults, &fd);
    if (rv == -EBUSY) {
        ctl_error(s, id, DVS_ECONFLICT, "another server in this process is being tracked");
        return;
    }
    if (rv != 0) {
        char msg[128];
        snprintf(msg, sizeof msg, "cannot write-protect the arena: %s", dvs_strerror(rv));
        ctl_error(s, id, rv, msg);
        return;
    }
    long page = sysconf(_SC_PAGESIZE);
    slog(s, DVS_LOG_INFO, "endpoint=%s dirty tracking on (mprotect, max_faults=%" PRIu64 ")",
         s->endpoint, max_faults);
    /* The tracker keeps its own mapping; the memfd is the agent's alone. */
    ctl_sendf_own(s, &fd, 1,
              "ok id=%" PRIu64 " state=%s generation=%" PRIu64 " fds=bitmap pages=%zu"
              " page_size=%ld max_faults=%" PRIu64,
              id, state_names[s->state], s->generation, dvs_arena_size(s->arena) / (size_t)page,
              page, max_faults);
}

static void cmd_track_collect(dvs_server *s, uint64_t id)
{
    struct dvs__track_report r;
    int rv = dvs__track_collect(s, &r);
    if (rv == -ENOENT) {
        ctl_error(s, id, DVS_ECONFLICT, "tracking is off: send track-start first");
        return;
    }
    if (rv != 0) {
        /* The bitmaps can no longer be trusted: the agent starts over with
         * a full copy (or stops and copies). */
        slog(s, DVS_LOG_WARN, "endpoint=%s dirty tracking failed: %s", s->endpoint,
             dvs_strerror(rv));
        ctl_error(s, id, rv == -ETIMEDOUT ? DVS_ETIMEOUT : rv,
                  "dirty tracking failed: track-stop, then copy everything");
        return;
    }
    ctl_sendf(s, NULL, 0,
              "ok id=%" PRIu64 " state=%s generation=%" PRIu64 " bitmap=%u dirty=%" PRIu64
              " overflow=%d faults=%" PRIu64,
              id, state_names[s->state], s->generation, r.bitmap, r.dirty, r.overflow ? 1 : 0,
              r.faults);
}

static void cmd_throttle(dvs_server *s, uint64_t id, const struct dvs__ctl_msg *m)
{
    uint64_t delay;
    if (dvs__ctl_get_u64(m, "delay_us", 0, MAX_THROTTLE_US, &delay) != 0) {
        ctl_error(s, id, DVS_EBADREQUEST, "delay_us must be 0..100000");
        return;
    }
    if (s->state != ST_SERVING && s->state != ST_FROZEN) {
        ctl_error(s, id, DVS_ECONFLICT, "throttle needs state serving or frozen");
        return;
    }
    int rv = throttle_set(s, (uint32_t)delay);
    if (rv != 0) {
        ctl_error(s, id, rv, "cannot create the throttle timer");
        return;
    }
    ctl_sendf(s, NULL, 0, "ok id=%" PRIu64 " state=%s generation=%" PRIu64 " throttle_us=%" PRIu32,
              id, state_names[s->state], s->generation, s->throttle_us);
}

static int restore_start(dvs_server *s, uint64_t generation);

static void ctl_handle(dvs_server *s, const void *data, size_t len)
{
    struct dvs__ctl_msg *m = malloc(sizeof(*m));
    uint64_t id = 0;
    if (m == NULL)
        return; /* the agent times out and retries */
    if (dvs__ctl_parse(data, len, m) != 0) {
        ctl_error(s, 0, DVS_EBADREQUEST, "malformed message");
        goto out;
    }
    if (dvs__ctl_get_u64(m, "id", 1, UINT64_MAX, &id) != 0) {
        ctl_error(s, 0, DVS_EBADREQUEST, "every command needs id=N (N >= 1)");
        goto out;
    }
    slog(s, DVS_LOG_DEBUG, "endpoint=%s control: %s id=%" PRIu64, s->endpoint, m->verb, id);

    if (strcmp(m->verb, "status") == 0) {
        cmd_status(s, id);
    } else if (strcmp(m->verb, "fds") == 0) {
        cmd_fds(s, id);
    } else if (strcmp(m->verb, "stop") == 0) {
        ctl_ok(s, id);
        if (s->running)
            shutdown_server(s, 0, "stopped");
        else
            s->state = ST_STOPPING; /* open() is waiting for start */
    } else if (strcmp(m->verb, "start") == 0) {
        uint64_t gen;
        if (s->state != ST_RESTORING)
            ctl_error(s, id, DVS_ECONFLICT, "start needs state restoring");
        else if (dvs__ctl_get_u64(m, "generation", 1, INT64_MAX, &gen) != 0)
            ctl_error(s, id, DVS_EBADREQUEST, "generation must be a number >= 1");
        else {
            int rv = restore_start(s, gen);
            if (rv == 0)
                ctl_ok(s, id);
            else
                ctl_error(s, id, rv,
                          rv == DVS_EPROTO ? "the restored arena is not valid"
                                           : "cannot open the reply cache in the restored arena");
        }
    } else if (strcmp(m->verb, "freeze") == 0) {
        cmd_freeze(s, id, m);
    } else if (strcmp(m->verb, "unfreeze") == 0) {
        cmd_unfreeze(s, id);
    } else if (strcmp(m->verb, "moved") == 0) {
        cmd_moved(s, id, m);
    } else if (strcmp(m->verb, "track-start") == 0) {
        cmd_track_start(s, id, m);
    } else if (strcmp(m->verb, "track-collect") == 0) {
        cmd_track_collect(s, id);
    } else if (strcmp(m->verb, "track-stop") == 0) {
        migration_end(s, "track-stop");
        ctl_ok(s, id);
    } else if (strcmp(m->verb, "throttle") == 0) {
        cmd_throttle(s, id, m);
    } else {
        ctl_error(s, id, DVS_EBADREQUEST, "unknown command");
    }
out:
    free(m);
}

/* Read and handle every packet waiting. Returns 0, or -ECONNRESET at EOF. */
static int ctl_read(dvs_server *s)
{
    char buf[DVS__CTL_MAX + 1];
    for (;;) {
        if (s->ctl_fd < 0)
            return -ECONNRESET;
        /* MSG_TRUNC: learn a packet's real size, to refuse oversized ones. */
        ssize_t n = recv(s->ctl_fd, buf, sizeof buf, MSG_DONTWAIT | MSG_TRUNC);
        if (n < 0) {
            if (errno == EAGAIN || errno == EWOULDBLOCK)
                return 0;
            if (errno == EINTR)
                continue;
            return -ECONNRESET;
        }
        if (n == 0)
            return -ECONNRESET;
        if ((size_t)n > DVS__CTL_MAX) {
            ctl_error(s, 0, DVS_ETOOBIG, "message longer than 4096 bytes");
            continue;
        }
        ctl_handle(s, buf, (size_t)n);
    }
}

/* ---------------------------------------------------------------------------
 * The control channel: connection management in the loop
 */

static void ctl_connect(dvs_server *s);

static void ctl_poll_cb(uv_poll_t *p, int status, int events)
{
    struct ctl_conn *cc = p->data;
    dvs_server *s = cc->srv;

    if (status < 0) {
        ctl_disconnect(s, uv_strerror(status));
        return;
    }
    if (events & UV_WRITABLE) {
        int rv = ctl_flush(s);
        if (rv != 0 && rv != -EAGAIN) {
            ctl_disconnect(s, "send failed");
            return;
        }
    }
    if (events & UV_READABLE) {
        if (ctl_read(s) != 0) {
            ctl_disconnect(s, "agent closed the control socket");
            return;
        }
    }
    ctl_update_poll(s);
}

static void ctl_update_poll(dvs_server *s)
{
    if (s->ctl == NULL || s->handles_closed)
        return;
    int events = UV_READABLE | (s->ctl_count > 0 ? UV_WRITABLE : 0);
    if (events != s->ctl->events) {
        uv_poll_start(&s->ctl->poll, events, ctl_poll_cb);
        s->ctl->events = events;
    }
}

/* Watch the control fd from the loop (once the loop exists). */
static void ctl_watch(dvs_server *s)
{
    if (s->ctl_fd < 0 || s->ctl != NULL || !s->loop_ready || s->handles_closed)
        return;
    struct ctl_conn *cc = calloc(1, sizeof(*cc));
    if (cc == NULL || uv_poll_init(&s->loop, &cc->poll, s->ctl_fd) != 0) {
        free(cc);
        ctl_disconnect(s, "cannot watch the control socket");
        return;
    }
    cc->srv = s;
    cc->fd = s->ctl_fd;
    cc->poll.data = cc;
    s->ctl = cc;
    ctl_update_poll(s);
}

static void ctl_timer_cb(uv_timer_t *t)
{
    ctl_connect(t->data);
}

static void ctl_disconnect(dvs_server *s, const char *why)
{
    if (s->ctl_fd < 0)
        return;
    slog(s, DVS_LOG_WARN, "endpoint=%s control channel lost: %s%s", s->endpoint, why,
         s->state == ST_FROZEN ? " (staying frozen until an agent decides)" : "");
    if (s->ctl != NULL) {
        uv_close((uv_handle_t *)&s->ctl->poll, free_handle_cb);
        s->ctl = NULL;
    }
    close(s->ctl_fd);
    s->ctl_fd = -1;
    for (; s->ctl_count > 0; s->ctl_count--, s->ctl_head = (s->ctl_head + 1) % CTL_QUEUE)
        ctl_out_done(&s->ctl_queue[s->ctl_head]);
    s->ctl_head = 0;
    /* Nobody is left to collect or to lift the throttle. */
    migration_end(s, "control channel lost");
    /* With a path, a restarted agent can take us back. */
    if (s->ctl_path != NULL && s->loop_ready && !s->handles_closed)
        uv_timer_start(&s->ctl_timer, ctl_timer_cb, CTL_RECONNECT_MS, 0);
}

static int ctl_open_path(const char *path)
{
    struct sockaddr_un sa = {.sun_family = AF_UNIX};
    if (strlen(path) >= sizeof sa.sun_path)
        return -ENAMETOOLONG;
    strcpy(sa.sun_path, path);
    int fd = socket(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC | SOCK_NONBLOCK, 0);
    if (fd < 0)
        return -errno;
    if (connect(fd, (struct sockaddr *)&sa, sizeof sa) != 0) {
        int err = -errno;
        close(fd);
        return err;
    }
    return fd;
}

static void ctl_connect(dvs_server *s)
{
    if (s->ctl_fd >= 0 || s->ctl_path == NULL)
        return;
    int fd = ctl_open_path(s->ctl_path);
    if (fd < 0) {
        if (s->loop_ready && !s->handles_closed)
            uv_timer_start(&s->ctl_timer, ctl_timer_cb, CTL_RECONNECT_MS, 0);
        return;
    }
    s->ctl_fd = fd;
    slog(s, DVS_LOG_INFO, "endpoint=%s control channel connected to %s", s->endpoint, s->ctl_path);
    ctl_hello(s);
    ctl_watch(s);
}

/* ---------------------------------------------------------------------------
 * Options
 */

DVS_API void dvs_server_options_init(struct dvs_server_options *o)
{
    memset(o, 0, sizeof(*o));
    o->restore = -1;
    o->arena_fd = -1;
    o->control_fd = -1;
}

/* The resolved configuration; strings point into opts, the env, or buf. */
struct config {
    const char *endpoint;
    const char *listen;
    uint64_t generation;
    bool restore;
    int arena_fd;
    uintptr_t arena_addr;
    size_t arena_size;
    int control_fd;
    const char *control_path;
    struct dvs__rc_limits limits;
    uint32_t max_payload;
    int hold_ms;
};

static int env_u64(const dvs_server *s, const char *name, uint64_t min, uint64_t max,
                   bool *ret_set, uint64_t *ret)
{
    const char *v = getenv(name);
    *ret_set = false;
    if (v == NULL || *v == '\0')
        return 0;
    char *end;
    errno = 0;
    unsigned long long x = strtoull(v, &end, 0);
    if (*v < '0' || *v > '9' || errno != 0 || *end != '\0' || x < min || x > max) {
        slog(s, DVS_LOG_ERROR, "%s=\"%s\": expected a number in [%" PRIu64 ", %" PRIu64 "]",
             name, v, min, max);
        return -EINVAL;
    }
    *ret_set = true;
    *ret = x;
    return 0;
}

static int env_fd(const dvs_server *s, const char *name, int *fd)
{
    bool set;
    uint64_t v;
    if (*fd >= 0)
        return 0;
    int rv = env_u64(s, name, 0, INT32_MAX, &set, &v);
    if (rv != 0 || !set)
        return rv;
    if (fcntl((int)v, F_GETFD) < 0) {
        slog(s, DVS_LOG_ERROR, "%s=%" PRIu64 ": not an open file descriptor", name, v);
        return -EINVAL;
    }
    *fd = (int)v;
    return 0;
}

static int resolve_config(const dvs_server *s, const struct dvs_server_options *o,
                          struct config *c)
{
    bool set;
    uint64_t v;
    int rv;

    memset(c, 0, sizeof(*c));
    c->endpoint = o->endpoint != NULL ? o->endpoint : getenv("DVS_ENDPOINT");
    if (c->endpoint == NULL || !dvs__name_valid(c->endpoint, strlen(c->endpoint))) {
        slog(s, DVS_LOG_ERROR, "endpoint name (DVS_ENDPOINT) \"%s\": expected 1-63 of [a-z0-9_.-]",
             c->endpoint != NULL ? c->endpoint : "");
        return -EINVAL;
    }
    c->listen = o->listen != NULL ? o->listen : getenv("DVS_LISTEN");
    if (c->listen == NULL) {
        slog(s, DVS_LOG_ERROR, "listening address (DVS_LISTEN) missing: expected host:port");
        return -EINVAL;
    }

    if (o->restore >= 0) {
        c->restore = o->restore != 0;
    } else {
        const char *mode = getenv("DVS_MODE");
        if (mode == NULL || strcmp(mode, "fresh") == 0) {
            c->restore = false;
        } else if (strcmp(mode, "restore") == 0) {
            c->restore = true;
        } else {
            slog(s, DVS_LOG_ERROR, "DVS_MODE=\"%s\": expected fresh or restore", mode);
            return -EINVAL;
        }
    }

    /* A restored instance learns its generation from "start"; until then
     * it reports 0. */
    c->generation = o->generation;
    if (c->generation == 0) {
        if ((rv = env_u64(s, "DVS_GENERATION", 1, INT64_MAX, &set, &v)) != 0)
            return rv;
        c->generation = set ? v : c->restore ? 0 : 1;
    }

    c->arena_fd = o->arena_fd;
    if ((rv = env_fd(s, "DVS_ARENA_FD", &c->arena_fd)) != 0)
        return rv;
    c->arena_addr = o->arena_addr;
    if (c->arena_addr == 0) {
        if ((rv = env_u64(s, "DVS_ARENA_ADDR", 1, UINTPTR_MAX, &set, &v)) != 0)
            return rv;
        c->arena_addr = (uintptr_t)v;
    }
    c->arena_size = o->arena_size;
    if (c->arena_size == 0) {
        if ((rv = env_u64(s, "DVS_ARENA_SIZE", DVS__ARENA_MIN_SIZE, SIZE_MAX, &set, &v)) != 0)
            return rv;
        c->arena_size = (size_t)v;
    }
    if (c->arena_addr == 0 || c->arena_size == 0) {
        slog(s, DVS_LOG_ERROR, "arena address and size (DVS_ARENA_ADDR, DVS_ARENA_SIZE) are required");
        return -EINVAL;
    }
    if (c->restore && c->arena_fd < 0) {
        slog(s, DVS_LOG_ERROR, "restore mode needs the agent's arena (DVS_ARENA_FD)");
        return -EINVAL;
    }

    c->control_fd = o->control_fd;
    if ((rv = env_fd(s, "DVS_CONTROL_FD", &c->control_fd)) != 0)
        return rv;
    c->control_path = o->control_path != NULL ? o->control_path : getenv("DVS_CONTROL_PATH");
    if (c->restore && c->control_fd < 0 && c->control_path == NULL) {
        slog(s, DVS_LOG_ERROR, "restore mode needs a control channel (DVS_CONTROL_FD or DVS_CONTROL_PATH)");
        return -EINVAL;
    }

    c->limits.max_clients = o->cache_clients;
    if (c->limits.max_clients == 0) {
        if ((rv = env_u64(s, "DVS_CACHE_CLIENTS", 1, 1u << 20, &set, &v)) != 0)
            return rv;
        c->limits.max_clients = set ? (uint32_t)v : DEFAULT_CACHE_CLIENTS;
    }
    c->limits.max_entries = o->cache_entries;
    if (c->limits.max_entries == 0) {
        if ((rv = env_u64(s, "DVS_CACHE_ENTRIES", 1, 4096, &set, &v)) != 0)
            return rv;
        c->limits.max_entries = set ? (uint32_t)v : DEFAULT_CACHE_ENTRIES;
    }
    c->limits.max_bytes = o->cache_bytes;
    if (c->limits.max_bytes == 0) {
        if ((rv = env_u64(s, "DVS_CACHE_BYTES", 1, UINT64_MAX, &set, &v)) != 0)
            return rv;
        c->limits.max_bytes = set ? v : c->arena_size / 8;
    }
    c->max_payload = o->max_payload != 0 && o->max_payload < DVS_MAX_PAYLOAD ? o->max_payload
                                                                              : DVS_MAX_PAYLOAD;
    c->hold_ms = o->hold_ms > 0 && o->hold_ms <= MAX_TIMER_MS ? o->hold_ms : DEFAULT_HOLD_MS;
    return 0;
}

/* ---------------------------------------------------------------------------
 * Opening
 */

static int bind_listener(dvs_server *s, const char *listen)
{
    char host[256], port_s[8];
    uint16_t port;
    struct addrinfo hints = {.ai_socktype = SOCK_STREAM, .ai_flags = AI_PASSIVE}, *ai;
    int rv;

    if (dvs__parse_hostport(listen, host, sizeof host, &port, true) != 0) {
        slog(s, DVS_LOG_ERROR, "listening address \"%s\": expected host:port", listen);
        return -EINVAL;
    }
    snprintf(port_s, sizeof port_s, "%u", port);
    rv = getaddrinfo(host, port_s, &hints, &ai);
    if (rv != 0) {
        slog(s, DVS_LOG_ERROR, "listening address \"%s\": %s", listen, gai_strerror(rv));
        return -EINVAL;
    }
    rv = uv_tcp_init(&s->loop, &s->listener);
    if (rv == 0) {
        s->listener_ready = true;
        s->listener.data = s;
        rv = uv_tcp_bind(&s->listener, ai->ai_addr, 0);
    }
    freeaddrinfo(ai);
    /* libuv reports some bind errors only at listen time. */
    if (rv == 0)
        rv = uv_listen((uv_stream_t *)&s->listener, 511, on_connection);
    if (rv != 0) {
        slog(s, DVS_LOG_ERROR, "cannot listen on %s: %s", listen, uv_strerror(rv));
        return rv;
    }

    struct sockaddr_storage ss;
    int len = sizeof ss;
    char ip[INET6_ADDRSTRLEN];
    uv_tcp_getsockname(&s->listener, (struct sockaddr *)&ss, &len);
    if (ss.ss_family == AF_INET6) {
        struct sockaddr_in6 *a6 = (struct sockaddr_in6 *)&ss;
        uv_ip6_name(a6, ip, sizeof ip);
        snprintf(s->address, sizeof s->address, "[%s]:%u", ip, ntohs(a6->sin6_port));
    } else {
        struct sockaddr_in *a4 = (struct sockaddr_in *)&ss;
        uv_ip4_name(a4, ip, sizeof ip);
        snprintf(s->address, sizeof s->address, "%s:%u", ip, ntohs(a4->sin_port));
    }
    return 0;
}

static int restore_start(dvs_server *s, uint64_t generation)
{
    struct timespec t0, t1, t2;
    clock_gettime(CLOCK_MONOTONIC, &t0);
    int rv = dvs_arena_check(s->arena, 0);
    if (rv != 0) {
        slog(s, DVS_LOG_ERROR, "endpoint=%s the restored arena is not valid", s->endpoint);
        return rv;
    }
    clock_gettime(CLOCK_MONOTONIC, &t1);
    rv = dvs__rc_open(s->arena, &s->rc_limits, &s->rc);
    if (rv != 0)
        return rv;
    clock_gettime(CLOCK_MONOTONIC, &t2);
    s->generation = generation;
    s->state = ST_SERVING;
    /* Both are downtime: say what they cost. */
    slog(s, DVS_LOG_INFO, "endpoint=%s restored, serving as generation=%" PRIu64
         " (arena check %ld us, reply cache %ld us)", s->endpoint, generation,
         (long)((t1.tv_sec - t0.tv_sec) * 1000000 + (t1.tv_nsec - t0.tv_nsec) / 1000),
         (long)((t2.tv_sec - t1.tv_sec) * 1000000 + (t2.tv_nsec - t1.tv_nsec) / 1000));
    return 0;
}

/*
 * Restore mode, the agent gone before "start" (it died, or is restarting):
 * connect again through the path, blocking, until the next agent listens
 * there. Exiting instead would throw away what may be the only complete
 * copy of the endpoint: the migration may have committed just before the
 * agent died, so the source has already let its instance go. The next
 * agent adopts this process and says "start" if the directory names its
 * generation, or stops it otherwise (docs/migration.md, "Agent restart").
 * Signals still end the wait.
 */
static void wait_for_agent(dvs_server *s)
{
    while (s->ctl_fd < 0) {
        int fd = ctl_open_path(s->ctl_path);
        if (fd >= 0) {
            s->ctl_fd = fd;
            slog(s, DVS_LOG_INFO, "endpoint=%s control channel connected to %s (restoring)",
                 s->endpoint, s->ctl_path);
            ctl_hello(s);
            return;
        }
        struct timespec ts = {.tv_sec = 0, .tv_nsec = (long)RESTORE_RECONNECT_MS * 1000000L};
        nanosleep(&ts, NULL);
    }
}

/*
 * Restore mode: answer the agent until it says "start" (the migration
 * committed) or gives up. Plain blocking I/O: the loop is not running yet.
 */
static int wait_for_start(dvs_server *s)
{
    char buf[DVS__CTL_MAX + 1];
    while (s->state == ST_RESTORING) {
        ctl_flush_sync(s, 1000);
        if (s->ctl_fd < 0) {
            if (s->ctl_path == NULL)
                return DVS_ESHUTDOWN;
            wait_for_agent(s);
            continue;
        }
        struct pollfd p = {.fd = s->ctl_fd, .events = POLLIN};
        if (poll(&p, 1, -1) < 0) {
            if (errno == EINTR)
                continue;
            return -errno;
        }
        ssize_t n = recv(s->ctl_fd, buf, sizeof buf, MSG_DONTWAIT | MSG_TRUNC);
        if (n < 0 && (errno == EAGAIN || errno == EINTR))
            continue;
        if (n <= 0) {
            if (s->ctl_path == NULL) {
                slog(s, DVS_LOG_WARN, "endpoint=%s agent went away before start", s->endpoint);
                return DVS_ESHUTDOWN;
            }
            ctl_disconnect(s, "agent went away before start; waiting for the next one");
            continue;
        }
        if ((size_t)n > DVS__CTL_MAX)
            ctl_error(s, 0, DVS_ETOOBIG, "message longer than 4096 bytes");
        else
            ctl_handle(s, buf, (size_t)n);
    }
    ctl_flush_sync(s, 1000);
    return s->state == ST_SERVING ? 0 : DVS_ESHUTDOWN;
}

static int open_arena(dvs_server *s, const struct config *c)
{
    int rv;
    if (c->arena_fd >= 0) {
        s->arena_fd = c->arena_fd;
        s->own_arena_fd = true;
        /* Keep the memfd out of the service's own child processes. */
        fcntl(c->arena_fd, F_SETFD, FD_CLOEXEC);
        /* Restoring, the agent may still be writing the image (it starts
         * us during the transfer): map now, check at "start". */
        rv = dvs_arena_open(c->arena_fd, c->arena_addr, c->arena_size,
                            c->restore ? DVS_ARENA_MAPONLY : DVS_ARENA_INIT, &s->arena);
    } else {
        rv = dvs_arena_create(c->arena_addr, c->arena_size, &s->arena);
        if (rv == 0)
            s->arena_fd = dvs_arena_fd(s->arena);
    }
    if (rv != 0)
        slog(s, DVS_LOG_ERROR, "endpoint=%s arena at 0x%" PRIxPTR " size %zu: %s", c->endpoint,
             c->arena_addr, c->arena_size,
             rv == -EEXIST      ? "the address range is already in use"
             : rv == DVS_EPROTO ? "the restored arena is not valid"
                                : dvs_strerror(rv));
    return rv;
}

DVS_API int dvs_server_open(const struct dvs_server_options *opts, dvs_server **ret_server)
{
    struct dvs_server_options defaults;
    struct config c;
    int rv;

    if (opts == NULL) {
        dvs_server_options_init(&defaults);
        opts = &defaults;
    }
    dvs_server *s = calloc(1, sizeof(*s));
    if (s == NULL)
        return -ENOMEM;
    s->log = opts->log;
    s->log_data = opts->log_data;
    s->ctl_fd = -1;
    s->arena_fd = -1;
    s->uffd = -1;
    s->pagemap_fd = -1;
    s->pace_fd = -1;

    rv = resolve_config(s, opts, &c);
    if (rv != 0)
        goto err;
    memcpy(s->endpoint, c.endpoint, strlen(c.endpoint) + 1);
    s->endpoint_len = strlen(c.endpoint);
    s->generation = c.generation;
    s->restore = c.restore;
    s->max_payload = c.max_payload;
    s->hold_ms = c.hold_ms;
    s->rc_limits = c.limits;
    s->state = c.restore ? ST_RESTORING : ST_SERVING;
    if (c.control_path != NULL && (s->ctl_path = strdup(c.control_path)) == NULL) {
        rv = -ENOMEM;
        goto err;
    }
    if ((s->reply_buf = malloc(s->max_payload)) == NULL) {
        rv = -ENOMEM;
        goto err;
    }

    /* The loop and its handles exist from here on; close() tears them down. */
    if ((rv = uv_loop_init(&s->loop)) != 0)
        goto err;
    s->loop_ready = true;
    uv_async_init(&s->loop, &s->stop_async, stop_async_cb);
    uv_timer_init(&s->loop, &s->hold_timer);
    uv_timer_init(&s->loop, &s->linger_timer);
    uv_timer_init(&s->loop, &s->ctl_timer);
    s->stop_async.data = s->hold_timer.data = s->linger_timer.data = s->ctl_timer.data = s;

    /* Listen first: in restore mode, clients sent here by a "moved" reply
     * queue in the backlog until the agent says start. */
    if ((rv = bind_listener(s, c.listen)) != 0)
        goto err;

    if (c.control_fd >= 0) {
        s->ctl_fd = c.control_fd;
        fcntl(s->ctl_fd, F_SETFD, FD_CLOEXEC);
        fcntl(s->ctl_fd, F_SETFL, fcntl(s->ctl_fd, F_GETFL) | O_NONBLOCK);
    } else if (s->ctl_path != NULL) {
        int fd = ctl_open_path(s->ctl_path);
        if (fd >= 0)
            s->ctl_fd = fd;
        else if (c.restore) {
            slog(s, DVS_LOG_ERROR, "control socket %s: %s", s->ctl_path, dvs_strerror(fd));
            rv = fd;
            goto err;
        }
    }

    rv = open_arena(s, &c);
    if (rv != 0) {
        ctl_sendf(s, NULL, 0, "exiting reason=error code=%s message=arena unusable", dvs_err_name(rv));
        ctl_flush_sync(s, 1000);
        goto err;
    }
    if (!c.restore) {
        rv = dvs__rc_open(s->arena, &s->rc_limits, &s->rc);
        if (rv != 0) {
            slog(s, DVS_LOG_ERROR, "endpoint=%s no room for the reply cache in the arena",
                 s->endpoint);
            goto err;
        }
    }

    ctl_hello(s);
    if (c.restore) {
        rv = wait_for_start(s);
        if (rv != 0)
            goto err;
    }
    slog(s, DVS_LOG_INFO, "endpoint=%s generation=%" PRIu64 " open on %s (%s)", s->endpoint,
         s->generation, s->address, c.restore ? "restored" : "fresh");
    *ret_server = s;
    return 0;

err:
    dvs_server_close(s);
    return rv;
}

/* ---------------------------------------------------------------------------
 * Running and closing
 */

DVS_API int dvs_server_run(dvs_server *s, dvs_handler_fn handler, void *data)
{
    if (handler == NULL || s->ran)
        return -EINVAL;
    s->ran = true;
    s->running = true;
    s->handler = handler;
    s->handler_data = data;

    if (s->ctl_fd < 0 && s->ctl_path != NULL)
        uv_timer_start(&s->ctl_timer, ctl_timer_cb, CTL_RECONNECT_MS, 0);
    ctl_watch(s);
    if (s->state == ST_SERVING) {
        slog_serving(s, true, s->restore ? "restored" : "fresh");
        ctl_sendf(s, NULL, 0, "serving generation=%" PRIu64 " address=%s", s->generation,
                  s->address);
    }
    if (s->state == ST_STOPPING) /* "stop" arrived while opening */
        shutdown_server(s, 0, "stopped");

    uv_run(&s->loop, UV_RUN_DEFAULT);
    s->running = false;
    return s->result;
}

DVS_API void dvs_server_stop(dvs_server *s)
{
    uv_async_send(&s->stop_async);
}

DVS_API dvs_arena *dvs_server_arena(dvs_server *s)
{
    return s->arena;
}

DVS_API uint64_t dvs_server_generation(const dvs_server *s)
{
    return s->generation;
}

DVS_API int dvs_server_address(const dvs_server *s, char *buf, size_t len)
{
    size_t n = strlen(s->address);
    if (n >= len)
        return -ENOBUFS;
    memcpy(buf, s->address, n + 1);
    return 0;
}

DVS_API void dvs_server_close(dvs_server *s)
{
    if (s == NULL)
        return;
    if (s->loop_ready) {
        close_handles(s);
        uv_run(&s->loop, UV_RUN_DEFAULT); /* runs the close callbacks */
        uv_loop_close(&s->loop);
    }
    if (s->ctl_fd >= 0)
        close(s->ctl_fd);
    for (; s->ctl_count > 0; s->ctl_count--, s->ctl_head = (s->ctl_head + 1) % CTL_QUEUE)
        ctl_out_done(&s->ctl_queue[s->ctl_head]);
    dvs__track_stop(s);
    if (s->pace_fd >= 0)
        close(s->pace_fd);
    dvs_arena_close(s->arena);
    if (s->own_arena_fd && s->arena_fd >= 0)
        close(s->arena_fd);
    if (s->uffd >= 0)
        close(s->uffd);
    if (s->pagemap_fd >= 0)
        close(s->pagemap_fd);
    free(s->reply_buf);
    free(s->ctl_path);
    free(s);
}
