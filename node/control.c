/*
 * The agent's end of the control channel (docs/control-protocol.md).
 *
 * Every service the agent starts is given DVS_CONTROL_PATH, the agent's
 * SOCK_SEQPACKET Unix socket in its data directory, and connects there when
 * it opens. The path rather than an inherited socket pair, because a path
 * outlives the agent: a service whose agent restarted reconnects to the new
 * one within a second (libdvs retries), says hello again, and is adopted
 * (docs/migration.md, "Agent restart").
 *
 * A connection is tied to an instance by the kernel's word, SO_PEERCRED,
 * not by the pid the hello claims: another process of the same user that
 * connects cannot pass for a service. The messages themselves are one
 * packet each, "VERB key=value ... [message=free text]", at most 4096
 * bytes; the agent sends commands carrying id=N and the service answers
 * "ok id=N ..." or "error id=N code=NAME ...", and sends hello, serving and
 * exiting on its own.
 *
 * A service is trusted to be the program the operator asked for, but not to
 * be bug-free: everything it sends is parsed strictly and bounded, and a
 * malformed message closes the channel (the instance is then supervised by
 * its process alone).
 */
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>

#include "common/log.h"
#include "common/util.h"
#include "node/agent.h"

#define COMP "control"
/* Connections that have not said hello yet, or belong to no instance, are
 * bounded: a runaway local process cannot exhaust the agent's descriptors. */
#define CTL_MAX_CONNS 1024
#define CTL_HELLO_TIMEOUT_MS 5000
/* Messages waiting for the socket to drain; a service that does not read
 * its control socket is broken. */
#define CTL_MAX_QUEUE 64

struct ctl_out {
    struct ctl_out *next;
    size_t len;
    char data[];
};

struct ctl_req {
    struct ctl_req *next;
    struct node_ctl *c;
    uint64_t id;
    node_ctl_cb cb;
    uint64_t cookie;
    uv_timer_t timer;
    bool done;
};

struct node_ctl {
    struct node_ctl *prev, *next;
    struct node *n;
    int fd;
    pid_t pid;
    uv_poll_t poll;
    uv_timer_t hello_timer;
    int events;
    struct node_instance *inst; /* once the hello matched an instance */
    struct ctl_req *reqs;
    struct ctl_out *out_head, *out_tail;
    unsigned out_len;
    uint64_t next_id;
    unsigned handles;
    bool closing;
};

/* "DVS_EMOVED" / "EINVAL" back to a code, for error replies. */
static int code_from_name(const char *name)
{
    if (!name)
        return DVS_EINTERNAL;
    static const int dvs_codes[] = {
#define XX(n, v, msg) v,
        DVS_ERRNO_MAP(XX)
#undef XX
    };
    for (size_t i = 0; i < sizeof(dvs_codes) / sizeof(dvs_codes[0]); i++)
        if (strcmp(dvs_err_name(dvs_codes[i]), name) == 0)
            return dvs_codes[i];
    for (int e = 1; e < 200; e++)
        if (strcmp(dvs_err_name(-e), name) == 0)
            return -e;
    return DVS_EINTERNAL;
}

/* ------------------------------------------------------------------------ */
/* Connections                                                               */
/* ------------------------------------------------------------------------ */

static void ctl_free_if_done(struct node_ctl *c)
{
    if (c->closing && c->handles == 0 && c->reqs == NULL) {
        struct ctl_out *o = c->out_head;
        while (o) {
            struct ctl_out *next = o->next;
            free(o);
            o = next;
        }
        free(c);
    }
}

static void ctl_handle_closed(uv_handle_t *h)
{
    struct node_ctl *c = h->data;
    c->handles--;
    ctl_free_if_done(c);
}

static void req_timer_closed(uv_handle_t *h)
{
    struct ctl_req *r = h->data;
    struct node_ctl *c = r->c;
    struct ctl_req **pp = &c->reqs;
    while (*pp && *pp != r)
        pp = &(*pp)->next;
    if (*pp)
        *pp = r->next;
    free(r);
    ctl_free_if_done(c);
}

/* Complete a request once: its callback, then its timer's close. */
static void req_finish(struct ctl_req *r, int err, struct node_ctl_msg *reply)
{
    if (r->done)
        return;
    r->done = true;
    uv_timer_stop(&r->timer);
    uv_close((uv_handle_t *)&r->timer, req_timer_closed);
    struct node *n = r->c->n;
    if (r->cb)
        r->cb(n, err, reply, r->cookie);
    if (n->stopping)
        node_maybe_finish_stop(n); /* it may have waited for this answer */
}

void node_ctl_detach(struct node_ctl *c)
{
    if (!c || c->closing)
        return;
    struct node *n = c->n;
    c->closing = true;
    if (c->prev)
        c->prev->next = c->next;
    else
        n->ctls = c->next;
    if (c->next)
        c->next->prev = c->prev;
    uv_close((uv_handle_t *)&c->poll, ctl_handle_closed);
    uv_close((uv_handle_t *)&c->hello_timer, ctl_handle_closed);
    close(c->fd);
    c->fd = -1;
    struct node_instance *inst = c->inst;
    c->inst = NULL;
    if (inst && inst->ctl == c) {
        inst->ctl = NULL;
        node_inst_on_ctl_closed(n, inst);
    }
    /* Callbacks may start new requests on other channels; this one is done. */
    for (struct ctl_req *r = c->reqs; r; r = r->next)
        if (!r->done)
            req_finish(r, -ECONNRESET, NULL);
    ctl_free_if_done(c);
}

static void ctl_poll_cb(uv_poll_t *p, int status, int events);

static void ctl_update_poll(struct node_ctl *c)
{
    if (c->closing)
        return;
    int ev = UV_READABLE | (c->out_head ? UV_WRITABLE : 0);
    if (ev != c->events) {
        uv_poll_start(&c->poll, ev, ctl_poll_cb);
        c->events = ev;
    }
}

/* Send queued packets; 0, -EAGAIN (socket full), or a fatal error. */
static int ctl_flush(struct node_ctl *c)
{
    while (c->out_head) {
        struct ctl_out *o = c->out_head;
        ssize_t r = send(c->fd, o->data, o->len, MSG_DONTWAIT | MSG_NOSIGNAL);
        if (r < 0) {
            if (errno == EINTR)
                continue;
            return errno == EAGAIN || errno == EWOULDBLOCK ? -EAGAIN : -errno;
        }
        c->out_head = o->next;
        if (!c->out_head)
            c->out_tail = NULL;
        c->out_len--;
        free(o);
    }
    return 0;
}

static int ctl_send(struct node_ctl *c, const char *text)
{
    size_t len = strlen(text);
    if (len > NODE_CTL_MAX)
        return -E2BIG;
    if (c->out_len >= CTL_MAX_QUEUE)
        return -ENOBUFS;
    struct ctl_out *o = xmalloc(sizeof(*o) + len);
    o->next = NULL;
    o->len = len;
    memcpy(o->data, text, len);
    if (c->out_tail)
        c->out_tail->next = o;
    else
        c->out_head = o;
    c->out_tail = o;
    c->out_len++;
    int rv = ctl_flush(c);
    if (rv != 0 && rv != -EAGAIN)
        return rv;
    ctl_update_poll(c);
    return 0;
}

static void req_timeout(uv_timer_t *t)
{
    struct ctl_req *r = t->data;
    req_finish(r, DVS_ETIMEOUT, NULL);
}

int node_ctl_request(struct node_ctl *c, const char *verb, const char *args, int64_t timeout_ms,
                     node_ctl_cb cb, uint64_t cookie)
{
    if (!c || c->closing)
        return -ENOTCONN;
    char text[NODE_CTL_MAX + 1];
    uint64_t id = ++c->next_id;
    int len = snprintf(text, sizeof(text), "%s id=%" PRIu64 "%s%s", verb, id,
                       args && *args ? " " : "", args ? args : "");
    if (len < 0 || (size_t)len > NODE_CTL_MAX)
        return -E2BIG;
    int rv = ctl_send(c, text);
    if (rv != 0)
        return rv;
    struct ctl_req *r = xcalloc(1, sizeof(*r));
    r->c = c;
    r->id = id;
    r->cb = cb;
    r->cookie = cookie;
    uv_timer_init(&c->n->loop, &r->timer);
    r->timer.data = r;
    uv_timer_start(&r->timer, req_timeout, (uint64_t)timeout_ms, 0);
    r->next = c->reqs;
    c->reqs = r;
    log_debug(COMP, "pid=%d -> %s", (int)c->pid, text);
    return 0;
}

static void hello_timeout(uv_timer_t *t);

static void ctl_dispatch(struct node_ctl *c, struct node_ctl_msg *m)
{
    struct node *n = c->n;
    if (strcmp(m->verb, "ok") == 0 || strcmp(m->verb, "error") == 0) {
        uint64_t id;
        if (node_ctl_get_u64(m, "id", 0, UINT64_MAX, &id) != 0) {
            log_warn(COMP, "pid=%d answer without id: %s", (int)c->pid, m->buf);
            return;
        }
        for (struct ctl_req *r = c->reqs; r; r = r->next) {
            if (r->id == id && !r->done) {
                int err = 0;
                if (strcmp(m->verb, "error") == 0)
                    err = code_from_name(node_ctl_get(m, "code"));
                req_finish(r, err, m);
                return;
            }
        }
        /* An answer after its timeout, or to a request of an earlier agent. */
        if (strcmp(m->verb, "error") == 0)
            log_warn(COMP, "pid=%d unmatched error id=%" PRIu64 ": %s", (int)c->pid, id,
                     node_ctl_get(m, "message") ? node_ctl_get(m, "message") : m->buf);
        return;
    }
    if (strcmp(m->verb, "hello") == 0) {
        uv_timer_stop(&c->hello_timer);
        node_inst_on_hello(n, c, c->pid, m);
        /* Not one of ours (told to stop): the channel goes after the
         * deadline whatever the process does. */
        if (!c->closing && !c->inst)
            uv_timer_start(&c->hello_timer, hello_timeout, CTL_HELLO_TIMEOUT_MS, 0);
        return;
    }
    /* A restore that finds its arena invalid says "exiting" without a
     * hello (docs/control-protocol.md §1): find its instance by pid. */
    struct node_instance *inst = c->inst ? c->inst : node_inst_by_pid(n, c->pid);
    if (inst) {
        node_inst_on_event(n, inst, m);
        return;
    }
    log_debug(COMP, "pid=%d message before hello ignored: %s", (int)c->pid, m->verb);
}

/* Read every waiting packet. Returns 0, or a negative code to close. */
static int ctl_read(struct node_ctl *c)
{
    for (;;) {
        char buf[NODE_CTL_MAX + 1];
        union {
            struct cmsghdr align;
            char buf[CMSG_SPACE(sizeof(int) * 4)];
        } cbuf;
        struct iovec iov = {.iov_base = buf, .iov_len = sizeof(buf)};
        struct msghdr mh = {
            .msg_iov = &iov,
            .msg_iovlen = 1,
            .msg_control = cbuf.buf,
            .msg_controllen = sizeof(cbuf.buf),
        };
        ssize_t r = recvmsg(c->fd, &mh, MSG_DONTWAIT | MSG_CMSG_CLOEXEC);
        if (r < 0) {
            if (errno == EINTR)
                continue;
            if (errno == EAGAIN || errno == EWOULDBLOCK)
                return 0;
            return -errno;
        }
        if (r == 0)
            return -ECONNRESET;

        struct node_ctl_msg *m = xmalloc(sizeof(*m));
        m->n_fds = 0;
        for (struct cmsghdr *cm = CMSG_FIRSTHDR(&mh); cm; cm = CMSG_NXTHDR(&mh, cm)) {
            if (cm->cmsg_level != SOL_SOCKET || cm->cmsg_type != SCM_RIGHTS)
                continue;
            size_t nfd = (cm->cmsg_len - CMSG_LEN(0)) / sizeof(int);
            for (size_t i = 0; i < nfd; i++) {
                int fd;
                memcpy(&fd, CMSG_DATA(cm) + i * sizeof(int), sizeof(int));
                if (m->n_fds < 4)
                    m->fds[m->n_fds++] = fd;
                else
                    close(fd);
            }
        }
        int rv = 0;
        if ((mh.msg_flags & (MSG_TRUNC | MSG_CTRUNC)) != 0) {
            log_warn(COMP, "pid=%d control message over %d bytes or with too many descriptors",
                     (int)c->pid, NODE_CTL_MAX);
            rv = -EMSGSIZE;
        } else if (node_ctl_parse(buf, (size_t)r, m) != 0) {
            log_warn(COMP, "pid=%d malformed control message (%zd bytes)", (int)c->pid, r);
            rv = -EINVAL;
        } else {
            ctl_dispatch(c, m);
        }
        /* Descriptors nobody took. */
        for (unsigned i = 0; i < m->n_fds; i++)
            if (m->fds[i] >= 0)
                close(m->fds[i]);
        free(m);
        if (rv != 0)
            return rv;
        if (c->closing)
            return 0;
    }
}

static void ctl_poll_cb(uv_poll_t *p, int status, int events)
{
    struct node_ctl *c = p->data;
    if (status < 0) {
        node_ctl_detach(c);
        return;
    }
    if (events & UV_WRITABLE) {
        int rv = ctl_flush(c);
        if (rv != 0 && rv != -EAGAIN) {
            node_ctl_detach(c);
            return;
        }
    }
    if (events & (UV_READABLE | UV_DISCONNECT)) {
        int rv = ctl_read(c);
        if (rv != 0) {
            if (rv != -ECONNRESET)
                log_debug(COMP, "pid=%d control channel closed: %s", (int)c->pid,
                          dvs_strerror(rv));
            node_ctl_detach(c);
            return;
        }
    }
    ctl_update_poll(c);
}

static void hello_timeout(uv_timer_t *t)
{
    struct node_ctl *c = t->data;
    if (!c->inst) {
        log_warn(COMP, "pid=%d control channel closed: no hello from a service of this agent "
                       "within %d ms",
                 (int)c->pid, CTL_HELLO_TIMEOUT_MS);
        node_ctl_detach(c);
    }
}

static unsigned count_conns(struct node *n)
{
    unsigned k = 0;
    for (struct node_ctl *c = n->ctls; c; c = c->next)
        k++;
    return k;
}

static void on_accept(uv_poll_t *p, int status, int events)
{
    struct node *n = p->data;
    if (status < 0 || !(events & UV_READABLE))
        return;
    for (;;) {
        int fd = accept4(n->ctl_fd, NULL, NULL, SOCK_NONBLOCK | SOCK_CLOEXEC);
        if (fd < 0) {
            if (errno != EAGAIN && errno != EWOULDBLOCK && errno != EINTR)
                log_warn(COMP, "accept on %s: %s", n->ctl_path, strerror(errno));
            return;
        }
        struct ucred cred;
        socklen_t clen = sizeof(cred);
        if (getsockopt(fd, SOL_SOCKET, SO_PEERCRED, &cred, &clen) != 0 ||
            count_conns(n) >= CTL_MAX_CONNS || n->stopping) {
            close(fd);
            continue;
        }
        struct node_ctl *c = xcalloc(1, sizeof(*c));
        c->n = n;
        c->fd = fd;
        c->pid = cred.pid;
        if (uv_poll_init(&n->loop, &c->poll, fd) != 0) {
            close(fd);
            free(c);
            continue;
        }
        c->poll.data = c;
        c->handles++;
        uv_timer_init(&n->loop, &c->hello_timer);
        c->hello_timer.data = c;
        c->handles++;
        uv_timer_start(&c->hello_timer, hello_timeout, CTL_HELLO_TIMEOUT_MS, 0);
        c->events = UV_READABLE;
        uv_poll_start(&c->poll, UV_READABLE, ctl_poll_cb);
        c->next = n->ctls;
        if (n->ctls)
            n->ctls->prev = c;
        n->ctls = c;
        log_debug(COMP, "pid=%d connected", (int)c->pid);
    }
}

int node_ctl_listen(struct node *n)
{
    struct sockaddr_un sa = {.sun_family = AF_UNIX};
    if (strlen(n->ctl_path) >= sizeof(sa.sun_path)) {
        log_error(COMP, "control socket path %s is longer than %zu bytes; use a shorter "
                        "--data-dir",
                  n->ctl_path, sizeof(sa.sun_path) - 1);
        return -ENAMETOOLONG;
    }
    strcpy(sa.sun_path, n->ctl_path);
    int fd = socket(AF_UNIX, SOCK_SEQPACKET | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    if (fd < 0)
        return -errno;
    /* A stale socket from a previous run: the data-dir lock says it is ours. */
    unlink(n->ctl_path);
    mode_t old = umask(0077);
    int rv = bind(fd, (struct sockaddr *)&sa, sizeof(sa));
    umask(old);
    if (rv != 0 || listen(fd, 128) != 0) {
        rv = -errno;
        log_error(COMP, "cannot listen on %s: %s", n->ctl_path, strerror(-rv));
        close(fd);
        return rv;
    }
    n->ctl_fd = fd;
    uv_poll_init(&n->loop, &n->ctl_poll, fd);
    n->ctl_poll.data = n;
    n->ctl_poll_open = true;
    uv_poll_start(&n->ctl_poll, UV_READABLE, on_accept);
    return 0;
}

static void noop_close(uv_handle_t *h)
{
    (void)h;
}

void node_ctl_close_all(struct node *n)
{
    while (n->ctls)
        node_ctl_detach(n->ctls);
    if (n->ctl_poll_open) {
        uv_close((uv_handle_t *)&n->ctl_poll, noop_close);
        n->ctl_poll_open = false;
        close(n->ctl_fd);
        n->ctl_fd = -1;
        /* Services of a stopped agent reconnect to the next one's socket;
         * leave no stale one behind for them to find meanwhile. */
        unlink(n->ctl_path);
    }
}

bool node_ctl_idle(struct node *n)
{
    for (struct node_ctl *c = n->ctls; c; c = c->next)
        for (struct ctl_req *r = c->reqs; r; r = r->next)
            if (!r->done)
                return false;
    return true;
}

void node_ctl_bind(struct node_ctl *c, struct node_instance *inst)
{
    if (c->inst && c->inst != inst && c->inst->ctl == c)
        c->inst->ctl = NULL;
    c->inst = inst;
    if (inst) {
        if (inst->ctl && inst->ctl != c)
            node_ctl_detach(inst->ctl); /* an older channel of the same process */
        inst->ctl = c;
    }
}
