/*
 * The client: dvs_call with transparent relocation and resend (DESIGN.md §5).
 *
 * The first half is the resend loop (dvs__call_run), which knows nothing
 * about sockets or HTTP. The second half is the public dvs_client: sequence
 * numbers and acknowledgements, a pool of idle connections, and the real
 * I/O the loop runs on.
 *
 * Why resending is safe: every attempt carries the same (client id, seq),
 * and the service's reply cache (reply_cache.h), which migrates with its
 * arena, answers a request it has already executed with the saved reply.
 * So the loop may resend whenever it is unsure, which is whenever anything
 * goes wrong; the only thing it must never do is pick a new seq.
 */
#include <errno.h>
#include <inttypes.h>
#include <poll.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/random.h>
#include <time.h>
#include <unistd.h>

#include "client.h"
#include "net.h"

__attribute__((format(printf, 3, 4))) static void call_log(const struct dvs__call_io *io,
                                                        int level, const char *fmt, ...)
{
    if (io->log == NULL)
        return;
    char msg[512];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);
    io->log(io->log_data, level, msg);
}

/* ===========================================================================
 * The resend loop
 */

struct call_state {
    const struct dvs__call_io *io;
    const struct dvs__call *call;
    int64_t deadline;
    struct dvs__location loc;
    int64_t backoff;
    int last_err; /* what to report if the deadline passes */
};

static void back_off(struct call_state *st)
{
    int64_t left = st->deadline - st->io->now_ms(st->io->ctx);
    int64_t ms = st->backoff < left ? st->backoff : left;
    if (ms > 0)
        st->io->sleep_ms(st->io->ctx, ms);
    st->backoff *= 2;
    if (st->backoff > DVS__BACKOFF_MAX_MS)
        st->backoff = DVS__BACKOFF_MAX_MS;
}

/*
 * The current location failed (refused, reset, silent, stale): ask the
 * directory for a newer one, blocking a little for it to change. If nothing
 * newer appears, back off before the caller tries the same place again.
 * Returns 0, or an error that ends the call.
 */
static int relocate(struct call_state *st, const char *why)
{
    const struct dvs__call_io *io = st->io;
    struct dvs__location n;

    call_log(io, DVS_LOG_DEBUG, "endpoint=%s seq=%" PRIu64 " generation=%" PRIu64 " at %s: %s",
          st->call->name, st->call->seq, st->loc.generation,
          st->loc.address[0] != '\0' ? st->loc.address : "(none)", why);
    int rv = io->resolve(io->ctx, st->call->name, &st->loc, DVS__DIR_WAIT_MS, st->deadline, &n);
    if (rv == DVS_ENOTFOUND || rv == -ENOMEM)
        return rv;
    if (rv == DVS_EUNAVAILABLE)
        st->last_err = DVS_EUNAVAILABLE;
    if (rv == 0) {
        st->last_err = DVS_ETIMEOUT;
        if (dvs__location_newer(&n, &st->loc)) {
            st->loc = n;
            st->backoff = DVS__BACKOFF_MIN_MS;
            return 0;
        }
        if (n.index > st->loc.index)
            st->loc.index = n.index;
    }
    back_off(st);
    return 0;
}

static int copy_reply(const struct dvs__frame *rep, void **ret_reply, size_t *ret_len)
{
    void *p = NULL;
    if (rep->payload_len > 0) {
        p = malloc(rep->payload_len);
        if (p == NULL)
            return -ENOMEM;
        memcpy(p, rep->payload, rep->payload_len);
    }
    *ret_reply = p;
    *ret_len = rep->payload_len;
    return 0;
}

/*
 * Handle one reply. Returns 1 to go on (resend), 0 when *ret is the call's
 * result.
 */
static int on_reply(struct call_state *st, const struct dvs__frame *rep, int *ret,
                    void **ret_reply, size_t *ret_len)
{
    const struct dvs__call_io *io = st->io;
    const char *name = st->call->name;
    int code;

    switch (rep->status) {
    case DVS__STATUS_OK:
        if (rep->generation > st->loc.generation) {
            st->loc.generation = rep->generation;
            io->learn(io->ctx, name, &st->loc);
        }
        *ret = copy_reply(rep, ret_reply, ret_len);
        return 0;

    case DVS__STATUS_ERROR:
        if (dvs__error_payload_decode(rep->payload, rep->payload_len, &code) != 0) {
            *ret = DVS_EPROTO;
            return 0;
        }
        if (code == DVS_ESTALEGEN || code == DVS_ENOTFOUND) {
            /* A stale location: an old instance, or the address now belongs
             * to another endpoint. The request did not execute there. */
            *ret = relocate(st, code == DVS_ESTALEGEN ? "instance older than known"
                                                      : "address serves another endpoint");
            return *ret == 0;
        }
        *ret = code; /* the handler's own answer, or UNKNOWNOUTCOME */
        return 0;

    case DVS__STATUS_MIGRATING:
        /* Frozen for a migration: it will either unfreeze or say moved. */
        back_off(st);
        return 1;

    case DVS__STATUS_MOVED: {
        struct dvs__location n = {.generation = rep->generation, .index = st->loc.index};
        if (dvs__moved_payload_decode(rep->payload, rep->payload_len, n.address,
                                      sizeof n.address) == 0 &&
            dvs__location_newer(&n, &st->loc)) {
            call_log(io, DVS_LOG_DEBUG, "endpoint=%s seq=%" PRIu64 " moved to %s generation=%" PRIu64,
                  name, st->call->seq, n.address, n.generation);
            st->loc = n;
            st->backoff = DVS__BACKOFF_MIN_MS;
            io->learn(io->ctx, name, &n);
            return 1;
        }
        *ret = relocate(st, "malformed or stale moved reply");
        return *ret == 0;
    }
    }
    *ret = DVS_EPROTO; /* the decoder admits no other status */
    return 0;
}

int dvs__call_run(const struct dvs__call_io *io, const struct dvs__call *call,
                  void **ret_reply, size_t *ret_len)
{
    struct call_state st = {
        .io = io,
        .call = call,
        .deadline = io->now_ms(io->ctx) + call->timeout_ms,
        .backoff = DVS__BACKOFF_MIN_MS,
        .last_err = DVS_ETIMEOUT,
    };
    struct dvs__frame req = {
        .type = DVS__FRAME_REQUEST,
        .name = call->name,
        .name_len = (uint8_t)strlen(call->name),
        .seq = call->seq,
        .ack = call->ack,
        .payload = call->payload_len > 0 ? call->payload : NULL,
        .payload_len = call->payload_len,
    };
    memcpy(req.client_id, call->client_id, DVS__CLIENT_ID_SIZE);
    bool have_loc = false;
    int rv;

    for (;;) {
        int64_t now = io->now_ms(io->ctx);
        if (now >= st.deadline)
            return st.last_err;

        if (!have_loc) {
            rv = io->resolve(io->ctx, call->name, NULL, 0, st.deadline, &st.loc);
            if (rv == DVS_EUNAVAILABLE) {
                st.last_err = rv;
                back_off(&st);
                continue;
            }
            if (rv == DVS_ETIMEOUT)
                continue;
            if (rv != 0)
                return rv;
            have_loc = true;
            st.last_err = DVS_ETIMEOUT;
        }
        if (st.loc.address[0] == '\0') {
            /* Known, but no instance serves it now (pending, restarting). */
            if ((rv = relocate(&st, "no serving instance")) != 0)
                return rv;
            continue;
        }

        req.generation = st.loc.generation;
        int64_t attempt_deadline = now + call->attempt_timeout_ms;
        if (attempt_deadline > st.deadline)
            attempt_deadline = st.deadline;
        struct dvs__frame rep;
        void *buf = NULL;
        rv = io->exchange(io->ctx, st.loc.address, &req, attempt_deadline, &rep, &buf);
        if (rv == -ENOMEM || rv == DVS_ETOOBIG || rv == -EINVAL) {
            free(buf);
            return rv;
        }
        if (rv != 0) {
            free(buf);
            char why[64];
            snprintf(why, sizeof why, "%s", dvs_err_name(rv));
            if ((rv = relocate(&st, why)) != 0)
                return rv;
            continue;
        }
        int result = 0;
        int go_on = on_reply(&st, &rep, &result, ret_reply, ret_len);
        free(buf);
        if (!go_on)
            return result;
    }
}

/* ===========================================================================
 * dvs_client
 */

struct idle_conn {
    struct idle_conn *next;
    int fd;
    char address[DVS__FRAME_MAX_TEXT + 1];
};

struct dvs_client {
    struct dvs__dir *dir;
    struct dvs_client_options opts;
    uint8_t id[DVS__CLIENT_ID_SIZE];
    pthread_mutex_t lock; /* everything below */
    uint64_t next_seq;
    uint64_t *inflight; /* seqs of calls in progress, for the ack */
    size_t n_inflight, cap_inflight;
    struct idle_conn *idle;
};

DVS_API void dvs_free(void *p)
{
    free(p);
}

DVS_API void dvs_client_options_init(struct dvs_client_options *o)
{
    memset(o, 0, sizeof(*o));
    o->connect_timeout_ms = 1000;
    o->attempt_timeout_ms = 5000;
    o->max_idle_conns = 4;
}

DVS_API int dvs_client_create(const char *managers, const struct dvs_client_options *opts,
                              dvs_client **ret_client)
{
    int rv;
    if (managers == NULL)
        managers = getenv("DVS_MANAGER");
    if (managers == NULL || *managers == '\0')
        managers = "http://127.0.0.1:7001";

    dvs_client *c = calloc(1, sizeof(*c));
    if (c == NULL)
        return -ENOMEM;
    dvs_client_options_init(&c->opts);
    if (opts != NULL) {
        c->opts.log = opts->log;
        c->opts.log_data = opts->log_data;
        if (opts->connect_timeout_ms > 0)
            c->opts.connect_timeout_ms = opts->connect_timeout_ms;
        if (opts->attempt_timeout_ms > 0)
            c->opts.attempt_timeout_ms = opts->attempt_timeout_ms;
        if (opts->max_idle_conns >= 0)
            c->opts.max_idle_conns = opts->max_idle_conns;
    }
    pthread_mutex_init(&c->lock, NULL);
    c->next_seq = 1;
    if (getrandom(c->id, sizeof c->id, 0) != sizeof c->id) {
        rv = -errno;
        goto err;
    }
    rv = dvs__dir_create(managers, c->opts.log, c->opts.log_data, &c->dir);
    if (rv != 0)
        goto err;
    *ret_client = c;
    return 0;

err:
    pthread_mutex_destroy(&c->lock);
    free(c);
    return rv;
}

DVS_API void dvs_client_destroy(dvs_client *c)
{
    if (c == NULL)
        return;
    while (c->idle != NULL) {
        struct idle_conn *ic = c->idle;
        c->idle = ic->next;
        close(ic->fd);
        free(ic);
    }
    dvs__dir_destroy(c->dir);
    free(c->inflight);
    pthread_mutex_destroy(&c->lock);
    free(c);
}

/* ---------------------------------------------------------------------------
 * The connection pool
 */

/* An idle connection to address that still looks alive, or -1. */
static int pool_take(dvs_client *c, const char *address)
{
    for (;;) {
        struct idle_conn *found = NULL;
        pthread_mutex_lock(&c->lock);
        for (struct idle_conn **link = &c->idle; *link != NULL; link = &(*link)->next) {
            if (strcmp((*link)->address, address) == 0) {
                found = *link;
                *link = found->next;
                break;
            }
        }
        pthread_mutex_unlock(&c->lock);
        if (found == NULL)
            return -1;
        int fd = found->fd;
        free(found);
        /* An idle connection has nothing to read: if it is readable, the
         * server closed it (restart, linger over) or broke the protocol. */
        struct pollfd p = {.fd = fd, .events = POLLIN | POLLRDHUP};
        if (poll(&p, 1, 0) == 0)
            return fd;
        close(fd);
    }
}

static void pool_put(dvs_client *c, const char *address, int fd)
{
    struct idle_conn *ic = malloc(sizeof(*ic));
    if (ic == NULL) {
        close(fd);
        return;
    }
    ic->fd = fd;
    snprintf(ic->address, sizeof ic->address, "%s", address);

    pthread_mutex_lock(&c->lock);
    int same = 0;
    for (struct idle_conn *p = c->idle; p != NULL; p = p->next)
        if (strcmp(p->address, address) == 0)
            same++;
    if (same < c->opts.max_idle_conns) {
        ic->next = c->idle;
        c->idle = ic;
        ic = NULL;
    }
    pthread_mutex_unlock(&c->lock);
    if (ic != NULL) {
        close(ic->fd);
        free(ic);
    }
}

/* ---------------------------------------------------------------------------
 * The real I/O
 */

static int64_t io_now(void *ctx)
{
    (void)ctx;
    return dvs__now_ms();
}

static void io_sleep(void *ctx, int64_t ms)
{
    (void)ctx;
    struct timespec ts = {.tv_sec = ms / 1000, .tv_nsec = (ms % 1000) * 1000000};
    while (nanosleep(&ts, &ts) != 0 && errno == EINTR)
        ;
}

static int io_resolve(void *ctx, const char *name, const struct dvs__location *known,
                      int64_t wait_ms, int64_t deadline, struct dvs__location *ret)
{
    dvs_client *c = ctx;
    return dvs__dir_resolve(c->dir, name, known, wait_ms, deadline, ret);
}

static void io_learn(void *ctx, const char *name, const struct dvs__location *loc)
{
    dvs_client *c = ctx;
    dvs__dir_learn(c->dir, name, loc);
}

static int io_exchange(void *ctx, const char *address, const struct dvs__frame *req,
                       int64_t deadline, struct dvs__frame *ret_reply, void **ret_buf)
{
    dvs_client *c = ctx;
    uint8_t hdr[DVS__FRAME_HEADER_SIZE];
    uint8_t *buf = NULL;
    size_t cap = 0;
    int rv = dvs__frame_encode_header(req, hdr);
    if (rv != 0)
        return rv;

    /* A pooled connection may have died while idle; then one fresh try. */
    for (int attempt = 0;; attempt++) {
        int fd = attempt == 0 ? pool_take(c, address) : -1;
        bool reused = fd >= 0;
        if (fd < 0) {
            int64_t dial_deadline = dvs__now_ms() + c->opts.connect_timeout_ms;
            rv = dvs__net_dial(address, dial_deadline < deadline ? dial_deadline : deadline, &fd);
            if (rv != 0)
                break;
        }
        struct iovec iov[3] = {
            {.iov_base = hdr, .iov_len = sizeof hdr},
            {.iov_base = (void *)req->name, .iov_len = req->name_len},
            {.iov_base = (void *)req->payload, .iov_len = req->payload_len},
        };
        size_t got = 0;
        rv = dvs__net_writev(fd, iov, req->payload_len > 0 ? 3 : 2, deadline);
        if (rv == 0)
            rv = dvs__net_read_frame(fd, &buf, &cap, DVS_MAX_PAYLOAD, deadline, ret_reply, &got);
        if (rv == 0 && (ret_reply->type != DVS__FRAME_REPLY || ret_reply->seq != req->seq ||
                        memcmp(ret_reply->client_id, req->client_id, DVS__CLIENT_ID_SIZE) != 0))
            rv = DVS_EPROTO;
        if (rv == 0) {
            /* A moved instance is going away: do not keep its connection. */
            if (ret_reply->status == DVS__STATUS_MOVED)
                close(fd);
            else
                pool_put(c, address, fd);
            break;
        }
        close(fd);
        if (!(reused && got == 0 && (rv == -ECONNRESET || rv == -EPIPE)))
            break;
    }
    *ret_buf = buf;
    return rv;
}

/* ---------------------------------------------------------------------------
 * dvs_call
 */

static int inflight_add(dvs_client *c, uint64_t *ret_seq, uint64_t *ret_ack)
{
    int rv = 0;
    pthread_mutex_lock(&c->lock);
    if (c->n_inflight == c->cap_inflight) {
        size_t cap = c->cap_inflight ? c->cap_inflight * 2 : 8;
        uint64_t *p = realloc(c->inflight, cap * sizeof(*p));
        if (p == NULL) {
            rv = -ENOMEM;
            goto out;
        }
        c->inflight = p;
        c->cap_inflight = cap;
    }
    uint64_t seq = c->next_seq++;
    c->inflight[c->n_inflight++] = seq;
    /* Every seq below the oldest call in progress is finished: the caller
     * got its reply or gave up, and will never resend it. */
    uint64_t oldest = seq;
    for (size_t i = 0; i < c->n_inflight; i++)
        if (c->inflight[i] < oldest)
            oldest = c->inflight[i];
    *ret_seq = seq;
    *ret_ack = oldest - 1;
out:
    pthread_mutex_unlock(&c->lock);
    return rv;
}

static void inflight_remove(dvs_client *c, uint64_t seq)
{
    pthread_mutex_lock(&c->lock);
    for (size_t i = 0; i < c->n_inflight; i++) {
        if (c->inflight[i] == seq) {
            c->inflight[i] = c->inflight[--c->n_inflight];
            break;
        }
    }
    pthread_mutex_unlock(&c->lock);
}

DVS_API int dvs_call(dvs_client *c, const char *endpoint, const void *req, size_t req_len,
                     void **ret_reply, size_t *ret_reply_len, int timeout_ms)
{
    if (c == NULL || endpoint == NULL || ret_reply == NULL || ret_reply_len == NULL ||
        timeout_ms <= 0 || (req == NULL && req_len > 0) ||
        !dvs__name_valid(endpoint, strlen(endpoint)))
        return -EINVAL;
    if (req_len > DVS_MAX_PAYLOAD)
        return DVS_ETOOBIG;

    struct dvs__call call = {
        .name = endpoint,
        .payload = req,
        .payload_len = (uint32_t)req_len,
        .timeout_ms = timeout_ms,
        .attempt_timeout_ms = c->opts.attempt_timeout_ms,
    };
    memcpy(call.client_id, c->id, sizeof c->id);
    int rv = inflight_add(c, &call.seq, &call.ack);
    if (rv != 0)
        return rv;

    const struct dvs__call_io io = {
        .ctx = c,
        .now_ms = io_now,
        .sleep_ms = io_sleep,
        .resolve = io_resolve,
        .learn = io_learn,
        .exchange = io_exchange,
        .log = c->opts.log,
        .log_data = c->opts.log_data,
    };
    void *reply = NULL;
    size_t len = 0;
    rv = dvs__call_run(&io, &call, &reply, &len);
    inflight_remove(c, call.seq);
    if (rv == 0) {
        *ret_reply = reply;
        *ret_reply_len = len;
    }
    return rv;
}
