/*
 * Migrations, as source and as destination (docs/migration.md; DESIGN.md §4).
 *
 * Stop-and-copy: the source freezes its service, sends every non-zero page
 * of the arena over TCP in the format of transfer.h, and the destination
 * verifies the image, starts the service binary in restore mode on it, and
 * commits. The order of events is the contract's, and two rules in it carry
 * the safety of the whole system ("at most one instance serves"):
 *
 *   - the destination tells its instance to start ONLY after its PATCH
 *     {"phase":"committed"} returned 200, or a read of the migration shows
 *     it committed;
 *   - the source unfreezes ONLY after the abort is committed: its own PATCH
 *     {"phase":"aborted"} returned 200, or a consistent read shows the
 *     migration aborted. Absence from the orders is never enough (a member
 *     can lag), so a migration that vanishes from the orders is settled by
 *     a consistent read of the migration (GET ...?consistent).
 *
 * Everything else is about failing safely. Every phase has a deadline. The
 * FSM makes final phases final, so when source and destination race (one
 * reports aborted while the other commits) one of them gets 409 and reads
 * the migration to learn the outcome; nobody decides alone. A destination
 * that learns nothing kills its instance; a source that learns nothing stays
 * frozen, which costs availability but never correctness, and keeps asking.
 *
 * The transfer port accepts anyone: a connection becomes a migration's
 * stream only when its hello names a migration this agent is waiting for,
 * with the token the destination published in its precopy report. Before
 * that, any garbage just closes the connection; after it, garbage aborts
 * that one migration. Every length in the stream is checked (transfer.c)
 * before a byte is written to the arena.
 *
 * Data path. The source maps the memfd read-only and hands uv_write
 * (header, pages) pairs pointing into the mapping: no copy in user space.
 * The destination reads the pages straight into its mapping of the new
 * memfd (the read buffer IS the arena), and reads headers into a small
 * buffer of exactly their size, so nothing is ever copied twice either.
 * Image checksums (transfer.h) run on the thread pool.
 */
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

/* Debian 12's headers predate it (Linux 5.14). */
#ifndef MADV_POPULATE_WRITE
#define MADV_POPULATE_WRITE 23
#endif

#include "common/log.h"
#include "common/util.h"
#include "node/agent.h"
#include "node/dirty.h"
#include "node/transfer.h"
#include "node/xfer_mac.h"

#define COMP NODE_COMP_MIG
/* Unbound connections (no valid hello yet) at once, and how long they get. */
#define XFER_MAX_CONNS 64
#define XFER_HELLO_TIMEOUT_MS 5000
#define XFER_CONNECT_TIMEOUT_MS 5000
#define RETRY_MS 500
#define CTL_TIMEOUT_MS 5000
/* At most this many (header, pages) pairs, and about this many bytes, per
 * uv_write; at most PUMP_WINDOW bytes queued on the socket during a round
 * that the service runs through (so that the round's pages are read from
 * the arena when they go out, not long before). */
#define WRITE_BATCH 512
#define PUMP_BATCH_BYTES (4u << 20)
#define PUMP_WINDOW (16u << 20)
/* The copies of pages sent while the service runs go through a few
 * pre-faulted buffers, reused: a fresh malloc per batch faults in every
 * page, which on this machine kind cost more than the copy itself. A
 * buffer holds a batch: PUMP_BATCH_BYTES plus one longest run. */
#define PUMP_BUF_BYTES (PUMP_BATCH_BYTES + NODE_XFER_MAX_RUN)
#define PUMP_BUFS 4
/* Auto-converge: the service waits this long before taking each request,
 * one step more per round once rounds stop converging (QEMU raises its
 * vCPU throttle the same way); after the last step, stop and copy. */
static const uint32_t throttle_steps_us[] = {100, 300, 1000, 3000, 10000};
#define N_THROTTLE_STEPS (sizeof(throttle_steps_us) / sizeof(throttle_steps_us[0]))
/* Fixed part of the stop-and-copy estimate: freeze, commit, start. */
#define STOP_OVERHEAD_MS 2.0
/* Rounds kept in the migration record. */
#define MAX_ROUND_STATS 32

enum mig_state {
    /* destination */
    D_PREPARING,  /* arena made, precopy report in flight */
    D_WAITING,    /* precopy reported; waiting for the source to connect */
    D_RECEIVING,  /* the source is streaming */
    D_SPAWNING,   /* image verified; waiting for the restore instance to open */
    D_COMMITTING, /* PATCH committed in flight */
    D_STARTING,   /* committed; "start" sent */
    /* source */
    S_PLANNED,    /* waiting for the destination's precopy */
    S_CONNECTING,
    S_PREPARING,  /* ranges reserved; waiting for the destination's READY */
    S_TRACKING,   /* READY; dirty tracking being set up with the service */
    S_PRECOPY,    /* rounds while the service serves */
    S_FREEZING,   /* "freeze" sent */
    S_SENDING,    /* frozen; scanning and writing pages */
    S_SENT,       /* END written; waiting for the outcome */
    /* either */
    M_ABORTING,   /* PATCH aborted in flight (retried until answered) */
    M_RESOLVING,  /* reading the migration back to learn its outcome */
    M_DONE,
};

static const char *const state_names[] = {
    [D_PREPARING] = "preparing", [D_WAITING] = "waiting",     [D_RECEIVING] = "receiving",
    [D_SPAWNING] = "spawning",   [D_COMMITTING] = "committing",
    [D_STARTING] = "starting",   [S_PLANNED] = "planned",     [S_CONNECTING] = "connecting",
    [S_PREPARING] = "preparing-destination", [S_TRACKING] = "tracking",
    [S_PRECOPY] = "precopy",     [S_FREEZING] = "freezing",   [S_SENDING] = "sending",     [S_SENT] = "sent",
    [M_ABORTING] = "aborting",   [M_RESOLVING] = "resolving", [M_DONE] = "done",
};

struct node_xfer_conn;

struct node_migration {
    struct node_migration *prev, *next;
    struct node *n;
    uint64_t serial;
    int64_t id;
    char endpoint[DVS_MAX_NAME + 1];
    char peer[DVS_MAX_NAME + 1]; /* the other node */
    bool is_source;
    enum mig_state state;
    uint64_t token;
    uint64_t generation; /* the source instance's */
    uint64_t arena_addr, arena_size;
    char *command;
    char transfer[300];
    uint64_t inst_serial; /* source: the frozen instance; dest: the restore one */
    int memfd;            /* our own descriptor of the arena (dup), or -1 */
    uint8_t *map;
    struct node_xfer_conn *conn;

    /* Progress. */
    bool freeze_sent;
    bool frozen;
    bool frozen_reported;
    bool frozen_report_busy;
    bool scan_done;
    bool final_queued; /* the last round's pages are all queued */
    bool restore_spawned, restore_ready; /* destination: the restore instance */
    bool end_sent;
    bool start_sent;
    bool seen;     /* reconcile scratch */
    bool vanished; /* no longer in the orders */
    bool call_busy;
    bool abort_wanted;
    enum mig_state before_resolve; /* the state a resolve interrupted */
    unsigned commit_attempts;
    unsigned moved_attempts;
    char error[256];
    struct node_xfer_scan scan;
    uint64_t bytes;
    uint64_t rounds;
    uint64_t src_frozen_us; /* destination: from END */
    int64_t t_freeze_rx_ms; /* destination: when FREEZE arrived */
    struct node_xfer_run *reserves; /* destination: RESERVE ranges */
    size_t n_reserves;
    int64_t t_start_ms, t_frozen_ms, t_end_ms;
    uint64_t new_generation;
    char new_address[128];

    /* Source: pre-copy (DESIGN.md §4). */
    int method;      /* enum node_xfer_method in use */
    int stop_reason; /* enum node_xfer_stop */
    int throttle_trigger; /* the stop reason that started throttling, or 0 */
    struct node_dirty_uffd uffd;
    bool uffd_on;
    uint8_t *bitmap; /* mprotect mode: the service's shared bitmap */
    uint64_t bitmap_size;
    bool mprotect_on;
    bool full_final;            /* tracking lost: the last round is everything */
    struct node_runs send;      /* the round being sent */
    size_t send_idx;            /* its next run to queue */
    bool sending, round_closed, final_round;
    struct node_runs pending;   /* collected when the freeze was decided: sent after it */
    uint64_t round_no;          /* the round being sent or next (0 = everything) */
    uint64_t prev_dirty;        /* bytes collected at the previous collect */
    int64_t round_t0_us, precopy_t0_us, precopy_us;
    uint64_t round_queued;      /* payload bytes queued in this round */
    double bw;                  /* measured bytes per second */
    unsigned throttle_step;     /* steps asked for */
    uint32_t throttle_asked_us, throttle_us; /* last asked; last the service confirmed */
    unsigned scan_parts;        /* checksum workers outstanding */
    uint64_t scan_sum, scan_pages;
    int scan_rv;
    uv_timer_t pace_timer;      /* --max-bandwidth */
    uint8_t *bufs[PUMP_BUFS];   /* idle copy buffers (NULL: none there) */
    unsigned bufs_made;

    /* The stream's MAC (docs/security.md): keyed with the manager's
     * per-migration secret, over every byte the source sends after the
     * hello's first byte up to END; a 32-byte tag follows END. */
    uint8_t secret[XFER_MAC_KEY_LEN];
    bool has_secret;
    struct xfer_mac mac;
    bool mac_on;

    /* Destination: what the stream said, for the record. */
    uint64_t d_method, d_stop, d_bw, d_throttle_us, d_trigger, d_precopy_us;
    uint64_t d_rounds[MAX_ROUND_STATS][2]; /* pages, bytes */
    unsigned d_nrounds;

    uv_timer_t timer;       /* the current phase's deadline */
    uv_timer_t retry_timer; /* retries of reports */
    unsigned handles;
    unsigned works;
    bool dead;
};

enum xc_state { XC_HELLO, XC_REC, XC_DATA, XC_TAG, XC_DONE };

struct node_xfer_conn {
    struct node_xfer_conn *prev, *next;
    struct node *n;
    uv_tcp_t tcp;
    uv_timer_t timer;
    uv_connect_t connect_req;
    uint64_t mig_serial; /* 0 until bound */
    bool outgoing;
    enum xc_state rs; /* XC_TAG: the MAC tag after END */
    uint8_t hdr[NODE_XFER_HELLO_SIZE];
    size_t hdr_len, hdr_need;
    uint8_t *map; /* the bound migration's arena (destination) */
    uint64_t arena_size;
    uint64_t data_off, data_left;
    uint64_t payload_bytes, round_pages, round_bytes, next_round;
    uint8_t *out;  /* record headers being written (source) */
    uint8_t *pre;  /* RESERVE and SYNC records being written (source) */
    unsigned writes_pending;
    uint8_t freeze_rec[2 * NODE_XFER_REC_SIZE]; /* FREEZE, THROTTLE */
    uint8_t end_rec[NODE_XFER_REC_SIZE + XFER_MAC_LEN]; /* END, then the tag */
    uint64_t inflight;   /* source: payload bytes queued and not yet written */
    unsigned batches;    /* source: page batches queued and not yet written */
    uint8_t scratch[64];
    /* Destination: the image checksum, kept as pages arrive: each page's
     * term, and their sum (transfer.h). */
    uint64_t *phash;
    uint64_t hsum, hash_off;
    bool synced;
    char peer[64];
    unsigned handles;
    bool closing;
};

static void mig_abort(struct node_migration *m, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));
static void mig_resolve(struct node_migration *m);
static void mig_destroy(struct node_migration *m);
static void xc_close(struct node_xfer_conn *c);
static void src_maybe_end(struct node_migration *m);

/* ------------------------------------------------------------------------ */
/* Objects                                                                   */
/* ------------------------------------------------------------------------ */

static struct node_migration *mig_find(struct node *n, int64_t id)
{
    for (struct node_migration *m = n->migrations; m; m = m->next)
        if (!m->dead && m->id == id)
            return m;
    return NULL;
}

static struct node_migration *mig_by_serial(struct node *n, uint64_t serial)
{
    for (struct node_migration *m = n->migrations; m; m = m->next)
        if (!m->dead && m->serial == serial)
            return m;
    return NULL;
}

bool node_mig_busy(struct node *n, const char *endpoint)
{
    for (struct node_migration *m = n->migrations; m; m = m->next)
        if (!m->dead && strcmp(m->endpoint, endpoint) == 0)
            return true;
    return false;
}

bool node_mig_idle(struct node *n)
{
    for (struct node_migration *m = n->migrations; m; m = m->next)
        if (!m->dead)
            return false;
    return true;
}

static void mig_set_state(struct node_migration *m, enum mig_state s)
{
    if (m->state == s)
        return;
    log_debug(COMP, "migration=%" PRId64 " endpoint=%s %s -> %s", m->id, m->endpoint,
              state_names[m->state], state_names[s]);
    m->state = s;
}

static void mig_free_if_done(struct node_migration *m)
{
    if (!m->dead || m->handles > 0 || m->works > 0)
        return;
    if (m->map)
        munmap(m->map, m->arena_size);
    if (m->memfd >= 0)
        close(m->memfd);
    free(m->scan.runs);
    if (m->mac_on)
        xfer_mac_close(&m->mac);
    explicit_bzero(m->secret, sizeof(m->secret));
    node_runs_free(&m->send);
    node_runs_free(&m->pending);
    for (unsigned i = 0; i < PUMP_BUFS; i++)
        if (m->bufs[i])
            munmap(m->bufs[i], PUMP_BUF_BYTES);
    if (m->uffd_on)
        node_dirty_uffd_stop(&m->uffd);
    if (m->bitmap)
        munmap(m->bitmap, m->bitmap_size);
    free(m->reserves);
    free(m->command);
    free(m);
}

static void mig_handle_closed(uv_handle_t *h)
{
    struct node_migration *m = h->data;
    m->handles--;
    mig_free_if_done(m);
}

/* A new migration, as the orders entry mj describes it (its transfer
 * secret is taken from there). */
static struct node_migration *mig_new(struct node *n, int64_t id, json_t *mj,
                                      const char *endpoint, const char *peer, bool is_source)
{
    struct node_migration *m = xcalloc(1, sizeof(*m));
    m->n = n;
    m->serial = node_next_serial(n);
    m->id = id;
    snprintf(m->endpoint, sizeof(m->endpoint), "%s", endpoint);
    snprintf(m->peer, sizeof(m->peer), "%s", peer ? peer : "?");
    m->is_source = is_source;
    m->memfd = -1;
    const char *secret = json_string_value(json_object_get(mj, "transfer_secret"));
    m->has_secret = secret && xfer_mac_key_from_hex(secret, m->secret) == 0;
    m->t_start_ms = now_mono_ms();
    uv_timer_init(&n->loop, &m->timer);
    m->timer.data = m;
    uv_timer_init(&n->loop, &m->retry_timer);
    m->retry_timer.data = m;
    uv_timer_init(&n->loop, &m->pace_timer);
    m->pace_timer.data = m;
    m->handles = 3;
    m->next = n->migrations;
    if (n->migrations)
        n->migrations->prev = m;
    n->migrations = m;
    return m;
}

static void mig_destroy(struct node_migration *m)
{
    struct node *n = m->n;
    if (m->dead)
        return;
    m->dead = true;
    mig_set_state(m, M_DONE);
    if (m->prev)
        m->prev->next = m->next;
    else
        n->migrations = m->next;
    if (m->next)
        m->next->prev = m->prev;
    if (m->conn) {
        /* Closing stops reads into and writes from the mapping at once;
         * only then may it be unmapped (mig_free_if_done). */
        struct node_xfer_conn *c = m->conn;
        m->conn = NULL;
        xc_close(c);
    }
    uv_close((uv_handle_t *)&m->timer, mig_handle_closed);
    uv_close((uv_handle_t *)&m->retry_timer, mig_handle_closed);
    uv_close((uv_handle_t *)&m->pace_timer, mig_handle_closed);
    mig_free_if_done(m);
    if (n->stopping)
        node_maybe_finish_stop(n);
}

static void deadline_cb(uv_timer_t *t)
{
    struct node_migration *m = t->data;
    switch (m->state) {
    case D_PREPARING:
    case D_WAITING:
        mig_abort(m, "no transfer connection from %s within %" PRId64 " ms", m->peer,
                  m->n->cfg.transfer_timeout_ms);
        break;
    case D_RECEIVING:
        mig_abort(m, "the transfer from %s stalled for %" PRId64 " ms", m->peer,
                  m->n->cfg.transfer_timeout_ms);
        break;
    case S_CONNECTING:
        mig_abort(m, "cannot connect to the destination's transfer port %s within %d ms",
                  m->transfer, XFER_CONNECT_TIMEOUT_MS);
        break;
    case S_PREPARING:
        mig_abort(m, "the destination did not prepare its arena within %" PRId64 " ms",
                  m->n->cfg.transfer_timeout_ms);
        break;
    case S_TRACKING:
        mig_abort(m, "the service did not set up dirty tracking in time");
        break;
    case S_PRECOPY:
        mig_abort(m, "pre-copy round %" PRIu64 " made no progress for %" PRId64 " ms",
                  m->round_no, m->n->cfg.transfer_timeout_ms);
        break;
    case S_SENDING:
    case S_SENT:
        mig_abort(m, "no outcome within %" PRId64 " ms of the transfer",
                  m->n->cfg.transfer_timeout_ms);
        break;
    default:
        break;
    }
}

static void arm_deadline(struct node_migration *m, int64_t ms)
{
    uv_timer_start(&m->timer, deadline_cb, (uint64_t)ms, 0);
}

/* ------------------------------------------------------------------------ */
/* Transfer connections                                                      */
/* ------------------------------------------------------------------------ */

static void xc_handle_closed(uv_handle_t *h)
{
    struct node_xfer_conn *c = h->data;
    if (--c->handles == 0) {
        free(c->phash);
        free(c->out);
        free(c->pre);
        free(c);
    }
}

static void xc_close(struct node_xfer_conn *c)
{
    if (c->closing)
        return;
    struct node *n = c->n;
    c->closing = true;
    if (c->prev)
        c->prev->next = c->next;
    else
        n->xfer_conns = c->next;
    if (c->next)
        c->next->prev = c->prev;
    n->n_xfer_conns--;
    struct node_migration *m = c->mig_serial ? mig_by_serial(n, c->mig_serial) : NULL;
    if (m && m->conn == c)
        m->conn = NULL;
    uv_close((uv_handle_t *)&c->tcp, xc_handle_closed);
    uv_close((uv_handle_t *)&c->timer, xc_handle_closed);
}

static struct node_xfer_conn *xc_new(struct node *n)
{
    struct node_xfer_conn *c = xcalloc(1, sizeof(*c));
    c->n = n;
    uv_tcp_init(&n->loop, &c->tcp);
    c->tcp.data = c;
    uv_timer_init(&n->loop, &c->timer);
    c->timer.data = c;
    c->handles = 2;
    c->next = n->xfer_conns;
    if (n->xfer_conns)
        n->xfer_conns->prev = c;
    n->xfer_conns = c;
    n->n_xfer_conns++;
    return c;
}

/* A connection's problem: before binding it is only the connection's. */
static void xc_fail(struct node_xfer_conn *c, const char *why)
{
    struct node_migration *m = c->mig_serial ? mig_by_serial(c->n, c->mig_serial) : NULL;
    if (m && m->conn == c) {
        m->conn = NULL;
        xc_close(c);
        mig_abort(m, "transfer stream from %s: %s", c->peer, why);
        return;
    }
    log_warn(COMP, "transfer connection from %s closed: %s", c->peer, why);
    xc_close(c);
}

static void xc_hello_timeout(uv_timer_t *t)
{
    struct node_xfer_conn *c = t->data;
    if (c->mig_serial == 0)
        xc_fail(c, "no valid hello in time");
}

static void xc_idle_timeout(uv_timer_t *t)
{
    struct node_xfer_conn *c = t->data;
    xc_fail(c, "stalled");
}

static void peer_name(uv_tcp_t *t, char *buf, size_t len)
{
    struct sockaddr_storage ss;
    int sl = sizeof(ss);
    char ip[64] = "?";
    unsigned port = 0;
    if (uv_tcp_getpeername(t, (struct sockaddr *)&ss, &sl) == 0) {
        if (ss.ss_family == AF_INET) {
            uv_ip4_name((struct sockaddr_in *)&ss, ip, sizeof(ip));
            port = ntohs(((struct sockaddr_in *)&ss)->sin_port);
        } else if (ss.ss_family == AF_INET6) {
            uv_ip6_name((struct sockaddr_in6 *)&ss, ip, sizeof(ip));
            port = ntohs(((struct sockaddr_in6 *)&ss)->sin6_port);
        }
    }
    snprintf(buf, len, "%s:%u", ip, port);
}

/* ---- destination: reading ---- */

static void dst_received(struct node_migration *m, uint64_t sum);
static int mac_start(struct node_migration *m);
static void dst_reserve(struct node_migration *m);

static void ready_written(uv_write_t *w, int status)
{
    struct node_xfer_conn *c = w->data;
    free(w);
    if (status < 0 && status != UV_ECANCELED && !c->closing)
        xc_fail(c, uv_strerror(status));
}

static void xc_alloc(uv_handle_t *h, size_t suggested, uv_buf_t *buf)
{
    struct node_xfer_conn *c = h->data;
    (void)suggested;
    switch (c->rs) {
    case XC_DATA: {
        /* Straight into the arena: this read is the copy. */
        uint64_t n = c->data_left < (4u << 20) ? c->data_left : (4u << 20);
        *buf = uv_buf_init((char *)c->map + c->data_off, (unsigned)n);
        break;
    }
    case XC_HELLO:
    case XC_REC:
    case XC_TAG:
        *buf = uv_buf_init((char *)c->hdr + c->hdr_len, (unsigned)(c->hdr_need - c->hdr_len));
        break;
    case XC_DONE:
        /* Nothing may follow END; read only to notice the close. */
        *buf = uv_buf_init((char *)c->scratch, sizeof(c->scratch));
        break;
    }
}

static bool dst_bind(struct node_xfer_conn *c)
{
    struct node *n = c->n;
    struct node_xfer_hello h;
    const char *why = "?";
    if (node_xfer_hello_decode(c->hdr, &h, &why) != 0) {
        xc_fail(c, why);
        return false;
    }
    struct node_migration *m = mig_find(n, (int64_t)h.migration_id);
    if (!m || m->is_source || (m->state != D_WAITING && m->state != D_PREPARING) ||
        !m->map || m->token == 0) {
        xc_fail(c, "hello names no migration this node is waiting for");
        return false;
    }
    if (h.token != m->token) {
        xc_fail(c, "wrong token for the migration");
        return false;
    }
    if (m->conn) {
        xc_fail(c, "the migration already has a transfer connection");
        return false;
    }
    /* From here on, the peer is the expected one: its faults abort. */
    c->mig_serial = m->serial;
    m->conn = c;
    if (h.arena_size != m->arena_size || h.arena_addr != m->arena_addr) {
        xc_fail(c, "arena address or size differ from the endpoint's");
        return false;
    }
    if (h.generation != m->generation) {
        xc_fail(c, "the source serves another generation than the directory's");
        return false;
    }
    if (mac_start(m) != 0) {
        xc_fail(c, "no transfer secret for the migration from the manager: the stream cannot "
                   "be authenticated");
        return false;
    }
    xfer_mac_update(&m->mac, c->hdr, NODE_XFER_HELLO_SIZE);
    c->map = m->map;
    c->arena_size = m->arena_size;
    /* One term per page; calloc'd, so the pages never sent cost nothing. */
    c->phash = calloc(m->arena_size / NODE_XFER_PAGE, sizeof(uint64_t));
    if (!c->phash) {
        xc_fail(c, "out of memory for the page checksums");
        return false;
    }
    c->hsum = 0;
    mig_set_state(m, D_RECEIVING);
    /* A repeating timer, so that uv_timer_again on every read pushes the
     * stall deadline back. */
    uv_timer_stop(&c->timer);
    uv_timer_start(&c->timer, xc_idle_timeout, (uint64_t)n->cfg.transfer_timeout_ms,
                   (uint64_t)n->cfg.transfer_timeout_ms);
    uv_timer_stop(&m->timer);
    log_info(COMP, "migration=%" PRId64 " endpoint=%s role=destination phase=receiving "
                   "from=%s peer=%s",
             m->id, m->endpoint, m->peer, c->peer);
    return true;
}

/* One record header is complete in c->hdr. */
static void dst_record(struct node_xfer_conn *c)
{
    struct node_xfer_rec r;
    const char *why = "?";
    if (node_xfer_rec_decode(c->hdr, c->arena_size, &r, &why) != 0) {
        xc_fail(c, why);
        return;
    }
    struct node_migration *m = mig_by_serial(c->n, c->mig_serial);
    if (!m) {
        xc_close(c);
        return;
    }
    xfer_mac_update(&m->mac, c->hdr, NODE_XFER_REC_SIZE);
    switch (r.type) {
    case NODE_XFER_RESERVE:
        /* Not after SYNC: the pre-fault worker reads the list then. */
        if (m->n_reserves >= NODE_XFER_MAX_RESERVES || c->synced) {
            xc_fail(c, "too many or late reservations");
            return;
        }
        if (m->n_reserves % 64 == 0)
            m->reserves = xrealloc(m->reserves, (m->n_reserves + 64) * sizeof(*m->reserves));
        m->reserves[m->n_reserves].offset = r.a;
        m->reserves[m->n_reserves].len = r.b;
        m->n_reserves++;
        break;
    case NODE_XFER_SYNC:
        if (r.a != m->n_reserves || c->synced) {
            xc_fail(c, "sync does not match the reservations, or came twice");
            return;
        }
        c->synced = true;
        dst_reserve(m);
        break;
    case NODE_XFER_FREEZE:
        if (m->t_freeze_rx_ms > 0) {
            xc_fail(c, "a second FREEZE record");
            return;
        }
        m->t_freeze_rx_ms = now_mono_ms();
        m->d_method = r.a;
        m->d_stop = r.b;
        m->d_bw = r.c;
        break;
    case NODE_XFER_THROTTLE:
        m->d_throttle_us = r.a;
        m->d_trigger = r.b;
        m->d_precopy_us = r.c;
        break;
    case NODE_XFER_PAGES:
        c->hash_off = r.a;
        c->rs = XC_DATA;
        c->data_off = r.a;
        c->data_left = r.b;
        c->round_pages += r.b / NODE_XFER_PAGE;
        c->round_bytes += r.b;
        return;
    case NODE_XFER_ROUND:
        if (r.a != c->next_round || r.b != c->round_pages || r.c != c->round_bytes) {
            xc_fail(c, "round record does not match the pages received");
            return;
        }
        log_debug(COMP, "migration=%" PRId64 " round=%" PRIu64 " pages=%" PRIu64, m->id, r.a,
                  r.b);
        if (m->d_nrounds < MAX_ROUND_STATS) {
            m->d_rounds[m->d_nrounds][0] = r.b;
            m->d_rounds[m->d_nrounds][1] = r.c;
            m->d_nrounds++;
        }
        c->next_round++;
        c->round_pages = c->round_bytes = 0;
        break;
    case NODE_XFER_END:
        if (r.a != c->payload_bytes || c->round_pages != 0 || c->next_round == 0 ||
            m->t_freeze_rx_ms == 0) {
            xc_fail(c, "end record does not match the stream (length or rounds)");
            return;
        }
        /* The MAC tag follows: nothing counts until it is checked. */
        c->rs = XC_TAG;
        c->hdr_len = 0;
        c->hdr_need = XFER_MAC_LEN;
        m->bytes = c->payload_bytes;
        m->rounds = c->next_round;
        m->scan.checksum = r.b; /* what the source computed from its frozen arena */
        m->src_frozen_us = r.c;
        m->t_end_ms = now_mono_ms();
        return;
    default:
        xc_fail(c, "unexpected record type from the source");
        return;
    }
    c->rs = XC_REC;
    c->hdr_len = 0;
    c->hdr_need = NODE_XFER_REC_SIZE;
}

static void xc_read(uv_stream_t *s, ssize_t nread, const uv_buf_t *buf)
{
    struct node_xfer_conn *c = s->data;
    (void)buf;
    if (nread == 0)
        return;
    if (nread < 0) {
        if (c->rs == XC_DONE) {
            xc_close(c); /* the source hung up after END: fine */
            return;
        }
        xc_fail(c, nread == UV_EOF ? "closed before the end of the stream"
                                   : uv_strerror((int)nread));
        return;
    }
    if (c->mig_serial) {
        /* Progress: push the stall deadline back. */
        uv_timer_again(&c->timer);
    }
    switch (c->rs) {
    case XC_DATA: {
        struct node_migration *m = mig_by_serial(c->n, c->mig_serial);
        if (m && m->mac_on)
            xfer_mac_update(&m->mac, c->map + c->data_off, (size_t)nread);
        c->data_off += (uint64_t)nread;
        c->data_left -= (uint64_t)nread;
        c->payload_bytes += (uint64_t)nread;
        /* Checksum the pages completed by this read while they are hot in
         * the cache: no pass over the arena after END. A page sent again
         * replaces its term. */
        for (; c->hash_off + NODE_XFER_PAGE <= c->data_off; c->hash_off += NODE_XFER_PAGE) {
            uint64_t p = c->hash_off / NODE_XFER_PAGE;
            uint64_t h = node_xfer_page_hash(c->hash_off, c->map + c->hash_off);
            c->hsum += h - c->phash[p];
            c->phash[p] = h;
        }
        if (c->data_left == 0) {
            c->rs = XC_REC;
            c->hdr_len = 0;
            c->hdr_need = NODE_XFER_REC_SIZE;
        }
        return;
    }
    case XC_TAG: {
        c->hdr_len += (size_t)nread;
        if (c->hdr_len < c->hdr_need)
            return;
        struct node_migration *m = mig_by_serial(c->n, c->mig_serial);
        if (!m) {
            xc_close(c);
            return;
        }
        bool ok = m->mac_on && xfer_mac_verify(&m->mac, c->hdr);
        xfer_mac_close(&m->mac);
        m->mac_on = false;
        if (!ok) {
            xc_fail(c, "authentication failed: the stream's MAC does not match the migration's "
                       "secret (forged or corrupted stream)");
            return;
        }
        c->rs = XC_DONE;
        uv_timer_stop(&c->timer);
        dst_received(m, c->hsum);
        return;
    }
    case XC_HELLO:
        c->hdr_len += (size_t)nread;
        if (c->hdr_len < c->hdr_need)
            return;
        if (!dst_bind(c))
            return;
        c->rs = XC_REC;
        c->hdr_len = 0;
        c->hdr_need = NODE_XFER_REC_SIZE;
        return;
    case XC_REC:
        c->hdr_len += (size_t)nread;
        if (c->hdr_len == c->hdr_need)
            dst_record(c);
        return;
    case XC_DONE:
        xc_fail(c, "bytes after the end record");
        return;
    }
}

static void on_xfer_connection(uv_stream_t *server, int status)
{
    struct node *n = server->data;
    if (status < 0)
        return;
    struct node_xfer_conn *c = xc_new(n);
    if (uv_accept(server, (uv_stream_t *)&c->tcp) != 0) {
        xc_close(c);
        return;
    }
    peer_name(&c->tcp, c->peer, sizeof(c->peer));
    if (n->n_xfer_conns > XFER_MAX_CONNS || n->stopping) {
        log_warn(COMP, "transfer connection from %s refused: %u connections open", c->peer,
                 n->n_xfer_conns - 1);
        xc_close(c);
        return;
    }
    uv_tcp_nodelay(&c->tcp, 1);
    c->rs = XC_HELLO;
    c->hdr_need = NODE_XFER_HELLO_SIZE;
    uv_timer_start(&c->timer, xc_hello_timeout, XFER_HELLO_TIMEOUT_MS, 0);
    uv_read_start((uv_stream_t *)&c->tcp, xc_alloc, xc_read);
}

int node_mig_listen(struct node *n)
{
    char host[256];
    uint16_t port;
    struct sockaddr_storage ss;
    int rv = node_split_hostport(n->transfer_addr, host, sizeof(host), &port);
    if (rv == 0)
        rv = uv_ip4_addr(host, port, (struct sockaddr_in *)&ss);
    if (rv != 0)
        rv = uv_ip6_addr(host, port, (struct sockaddr_in6 *)&ss);
    if (rv != 0) {
        log_error(COMP, "transfer address %s: expected IP:PORT", n->transfer_addr);
        return -EINVAL;
    }
    uv_tcp_init(&n->loop, &n->xfer_listener);
    n->xfer_listener.data = n;
    n->xfer_open = true;
    rv = uv_tcp_bind(&n->xfer_listener, (struct sockaddr *)&ss, 0);
    if (rv == 0)
        rv = uv_listen((uv_stream_t *)&n->xfer_listener, 64, on_xfer_connection);
    if (rv != 0) {
        log_error(COMP, "cannot listen for transfers on %s: %s", n->transfer_addr,
                  uv_strerror(rv));
        return rv;
    }
    return 0;
}

/* ------------------------------------------------------------------------ */
/* Reports                                                                   */
/* ------------------------------------------------------------------------ */

static void mig_patch(struct node_migration *m, json_t *body, node_call_cb cb)
{
    char path[128];
    snprintf(path, sizeof(path), "/v1/migrations/%" PRId64, m->id);
    m->call_busy = true;
    node_call(m->n, "PATCH", path, body, cb, m->serial);
}

/* ---- settling the outcome ---- */

static void finish_aborted(struct node_migration *m);
static void src_untrack(struct node_migration *m);
static void src_finish_committed(struct node_migration *m);
static void dst_start(struct node_migration *m);

static void retry_resolve_cb(uv_timer_t *t)
{
    struct node_migration *m = t->data;
    if (m->dead)
        return;
    if (m->call_busy) {
        /* A report is in flight; its answer may settle it. Look again. */
        uv_timer_start(&m->retry_timer, retry_resolve_cb, RETRY_MS, 0);
        return;
    }
    mig_resolve(m);
}

static void retry_abort_cb(uv_timer_t *t);

static void send_commit(struct node_migration *m);
static void send_precopy(struct node_migration *m);

/*
 * The read says the migration is still active although a report of ours was
 * refused or lost. Pick up where we were if the manager is where we thought
 * (an earlier attempt of the same report went through); otherwise this agent
 * and the manager disagree, and the only safe move is out.
 */
static void resolve_active(struct node_migration *m, const char *phase)
{
    enum mig_state was = m->before_resolve;
    if (m->is_source && was == S_SENDING && strcmp(phase, "frozen") == 0) {
        mig_set_state(m, S_SENDING);
        m->frozen_reported = true;
        src_maybe_end(m);
        return;
    }
    if (!m->is_source && was == D_PREPARING && strcmp(phase, "precopy") == 0) {
        mig_set_state(m, m->conn ? D_RECEIVING : D_WAITING);
        return;
    }
    if (!m->is_source && was == D_COMMITTING && m->commit_attempts < 5) {
        /* Not committed (yet): the commit report may be tried again; the
         * FSM refuses a second commit, so this cannot apply twice. */
        mig_set_state(m, D_COMMITTING);
        m->commit_attempts++;
        send_commit(m);
        return;
    }
    if (m->vanished) {
        /* Left the orders yet active in a consistent read: a view went
         * backwards somewhere. Ask again shortly rather than act on it. */
        mig_set_state(m, was);
        uv_timer_start(&m->retry_timer, retry_resolve_cb, RETRY_MS * 2, 0);
        return;
    }
    mig_set_state(m, was);
    mig_abort(m, "the manager refused a phase change (the migration is %s)", phase);
}

/*
 * The migration record is gone, so its outcome is read from the endpoint
 * (consistent read): a committed migration moved it to the destination
 * with generation + 1; otherwise it is still on the source with the
 * generation it had.
 */
static void by_endpoint_done(struct node *n, const struct node_call_result *res,
                             uint64_t cookie)
{
    struct node_migration *m = mig_by_serial(n, cookie);
    if (!m)
        return;
    m->call_busy = false;
    if (res->rv == DVS_ESHUTDOWN)
        return;
    if (res->rv != 0 || (res->status != 200 && res->status != 404)) {
        uv_timer_start(&m->retry_timer, retry_resolve_cb, RETRY_MS * 2, 0);
        return;
    }
    const char *node = json_string_value(json_object_get(res->body, "node"));
    json_int_t gen = json_integer_value(json_object_get(res->body, "generation"));
    bool gone = res->status == 404;
    bool here_unmoved = !gone && node && strcmp(node, m->is_source ? n->cfg.id : m->peer) == 0 &&
                        (uint64_t)gen == m->generation;
    bool moved = !gone && node && strcmp(node, m->is_source ? m->peer : n->cfg.id) == 0 &&
                 (uint64_t)gen == m->generation + 1;
    if (here_unmoved) {
        finish_aborted(m);
    } else if (moved) {
        if (m->is_source)
            src_finish_committed(m);
        else
            dst_start(m);
    } else if (m->is_source) {
        /* Deleted, or moved on since: the old instance is not wanted. */
        struct node_instance *inst = node_inst_by_serial(n, m->inst_serial);
        if (inst && inst->state != INST_STOPPING) {
            inst->state = INST_SERVING;
            node_inst_stop(inst, "its endpoint moved on while a migration was unsettled");
        }
        mig_destroy(m);
    } else {
        finish_aborted(m);
    }
}

static void resolve_by_endpoint(struct node_migration *m)
{
    char path[128];
    snprintf(path, sizeof(path), "/v1/endpoints/%s?consistent", m->endpoint);
    m->call_busy = true;
    node_call(m->n, "GET", path, NULL, by_endpoint_done, m->serial);
}

static void resolve_done(struct node *n, const struct node_call_result *res, uint64_t cookie)
{
    struct node_migration *m = mig_by_serial(n, cookie);
    if (!m)
        return;
    m->call_busy = false;
    if (res->rv != 0 || res->status != 200) {
        if (res->rv == 0 && res->status == 404) {
            /* The record is gone (final migrations are pruned after a
             * while): the endpoint itself says how it ended. */
            log_warn(COMP, "migration=%" PRId64 " endpoint=%s no longer exists in the manager; "
                           "reading the endpoint",
                     m->id, m->endpoint);
            resolve_by_endpoint(m);
            return;
        }
        if (res->rv == DVS_ESHUTDOWN)
            return;
        log_warn(COMP, "migration=%" PRId64 " endpoint=%s cannot read the outcome: %s; "
                       "retrying",
                 m->id, m->endpoint, node_call_error(res));
        uv_timer_start(&m->retry_timer, retry_resolve_cb, RETRY_MS * 2, 0);
        return;
    }
    const char *phase = json_string_value(json_object_get(res->body, "phase"));
    if (!phase) {
        uv_timer_start(&m->retry_timer, retry_resolve_cb, RETRY_MS * 2, 0);
        return;
    }
    if (strcmp(phase, "aborted") == 0) {
        const char *e = json_string_value(json_object_get(res->body, "error"));
        if (e && !m->error[0])
            snprintf(m->error, sizeof(m->error), "%s", e);
        finish_aborted(m);
    } else if (strcmp(phase, "committed") == 0) {
        if (m->is_source)
            src_finish_committed(m);
        else
            dst_start(m);
    } else if (m->abort_wanted) {
        /* Still active and we want out: report the abort again. */
        uv_timer_start(&m->retry_timer, retry_abort_cb, RETRY_MS, 0);
    } else {
        resolve_active(m, phase);
    }
}

/* Learn the outcome from the manager: a consistent read, so that a lagging
 * member cannot make us act on an old state. */
static void mig_resolve(struct node_migration *m)
{
    if (m->dead || m->call_busy)
        return;
    if (m->state != M_ABORTING && m->state != M_RESOLVING) {
        m->before_resolve = m->state;
        mig_set_state(m, M_RESOLVING);
    }
    char path[128];
    snprintf(path, sizeof(path), "/v1/migrations/%" PRId64 "?consistent", m->id);
    m->call_busy = true;
    node_call(m->n, "GET", path, NULL, resolve_done, m->serial);
}

/* ---- aborting ---- */

static void abort_done(struct node *n, const struct node_call_result *res, uint64_t cookie);

static void send_abort(struct node_migration *m)
{
    if (m->call_busy)
        return;
    mig_patch(m, json_pack("{s:s,s:s}", "phase", "aborted", "error", m->error), abort_done);
}

static void retry_abort_cb(uv_timer_t *t)
{
    struct node_migration *m = t->data;
    if (!m->dead)
        send_abort(m);
}

static void abort_done(struct node *n, const struct node_call_result *res, uint64_t cookie)
{
    struct node_migration *m = mig_by_serial(n, cookie);
    if (!m)
        return;
    m->call_busy = false;
    if (res->rv == 0 && res->status == 200) {
        /* The abort is committed: now, and only now, may the source serve. */
        finish_aborted(m);
        return;
    }
    if (res->rv == 0 && (res->status == 409 || res->status == 404)) {
        /* Final already (committed or aborted by someone else): read it. */
        mig_resolve(m);
        return;
    }
    if (res->rv == DVS_ESHUTDOWN)
        return;
    log_warn(COMP, "migration=%" PRId64 " endpoint=%s abort report failed: %s; retrying", m->id,
             m->endpoint, node_call_error(res));
    if (res->rv == DVS_EUNKNOWNOUTCOME)
        mig_resolve(m); /* it may have been applied: read before retrying */
    else
        uv_timer_start(&m->retry_timer, retry_abort_cb, RETRY_MS * 2, 0);
}

static void mig_abort(struct node_migration *m, const char *fmt, ...)
{
    if (m->dead || m->abort_wanted)
        return;
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(m->error, sizeof(m->error), fmt, ap);
    va_end(ap);
    m->abort_wanted = true;
    log_warn(COMP, "migration=%" PRId64 " endpoint=%s role=%s aborting: %s", m->id, m->endpoint,
             m->is_source ? "source" : "destination", m->error);
    uv_timer_stop(&m->timer);
    if (m->conn) {
        struct node_xfer_conn *c = m->conn;
        m->conn = NULL;
        xc_close(c);
    }
    /* A destination's restore instance stays until the abort is committed:
     * the commit may still win the race (then it is the only copy of the
     * data), and unstarted it serves nothing meanwhile. */
    mig_set_state(m, M_ABORTING);
    if (!m->call_busy)
        send_abort(m);
    /* else: the call in flight completes first; its callback sees
     * abort_wanted (resolve) or we retry from the timer. */
    else
        uv_timer_start(&m->retry_timer, retry_abort_cb, RETRY_MS, 0);
}

static void unfreeze_answered(struct node *n, int err, struct node_ctl_msg *reply,
                              uint64_t cookie)
{
    (void)reply;
    struct node_instance *inst = node_inst_by_serial(n, cookie);
    if (!inst)
        return;
    inst->unfreezing = false;
    if (err == 0) {
        if (inst->state == INST_FROZEN)
            inst->state = INST_SERVING;
        log_info(COMP, "endpoint=%s gen=%" PRIu64 " unfrozen: serving again after the abort",
                 inst->endpoint, inst->generation);
    } else {
        log_error(COMP, "endpoint=%s gen=%" PRIu64 " unfreeze failed: %s", inst->endpoint,
                  inst->generation, dvs_err_name(err));
    }
}

/* This agent's part is over: the agent's /metrics counts it. */
static void mig_metrics(struct node_migration *m, bool committed, int64_t downtime_ms)
{
    struct node_mig_stats st = {
        .role = m->is_source ? NODE_MIG_SOURCE : NODE_MIG_DESTINATION,
        .committed = committed,
        .bytes_sent = m->is_source ? m->bytes : 0,
        .bytes_received = m->is_source ? 0 : m->bytes,
        .downtime_ms = downtime_ms,
        .duration_ms = now_mono_ms() - m->t_start_ms,
    };
    node_metrics_migration_done(m->n, &st);
}

/* The abort is committed (docs/migration.md step 6). */
static void finish_aborted(struct node_migration *m)
{
    struct node *n = m->n;
    int64_t took = now_mono_ms() - m->t_start_ms;
    mig_metrics(m, false, -1);
    log_info(COMP, "migration=%" PRId64 " endpoint=%s role=%s phase=aborted total_ms=%" PRId64
                   " error=\"%s\"",
             m->id, m->endpoint, m->is_source ? "source" : "destination", took,
             m->error[0] ? m->error : "(aborted by the manager)");
    if (m->is_source) {
        /* Full speed again before it serves again. */
        src_untrack(m);
        struct node_instance *inst = node_inst_by_serial(n, m->inst_serial);
        if (inst && m->freeze_sent && inst->ctl) {
            /* Sent even if the freeze was never confirmed: it may have
             * arrived late, and unfreeze of a serving instance is a no-op. */
            if (node_ctl_request(inst->ctl, "unfreeze", NULL, CTL_TIMEOUT_MS, unfreeze_answered,
                                 inst->serial) != 0)
                log_error(COMP, "endpoint=%s cannot send unfreeze", m->endpoint);
            else
                inst->unfreezing = true;
        } else if (inst && m->freeze_sent) {
            log_warn(COMP, "endpoint=%s frozen instance has no control channel; it is "
                           "unfrozen when it reconnects",
                     m->endpoint);
        }
    } else {
        /* The restore instance (started or not, promoted or not) must never
         * serve: the source serves again. */
        struct node_instance *inst = node_inst_by_serial(n, m->inst_serial);
        if (inst) {
            if (inst->state == INST_SERVING)
                log_error(COMP, "endpoint=%s restore instance serving after an abort: stopping "
                                "it",
                          m->endpoint); /* cannot happen: start follows a commit only */
            node_inst_stop(inst, "its migration aborted");
        }
    }
    mig_destroy(m);
}

/* ------------------------------------------------------------------------ */
/* Destination                                                               */
/* ------------------------------------------------------------------------ */

static void precopy_done(struct node *n, const struct node_call_result *res, uint64_t cookie);

static void send_precopy(struct node_migration *m)
{
    char token[24];
    snprintf(token, sizeof(token), "%016" PRIx64, m->token);
    mig_patch(m,
              json_pack("{s:s,s:{s:s,s:s}}", "phase", "precopy", "info", "transfer",
                        m->n->transfer_addr, "token", token),
              precopy_done);
}

static void retry_precopy_cb(uv_timer_t *t)
{
    struct node_migration *m = t->data;
    if (!m->dead && m->state == D_PREPARING && !m->call_busy)
        send_precopy(m);
}

static void precopy_done(struct node *n, const struct node_call_result *res, uint64_t cookie)
{
    struct node_migration *m = mig_by_serial(n, cookie);
    if (!m)
        return;
    m->call_busy = false;
    if (m->abort_wanted)
        return; /* mig_abort's timer reports it */
    if (res->rv == 0 && res->status == 200) {
        if (m->state == D_PREPARING)
            mig_set_state(m, D_WAITING);
        log_info(COMP, "migration=%" PRId64 " endpoint=%s role=destination phase=precopy "
                       "transfer=%s from=%s",
                 m->id, m->endpoint, n->transfer_addr, m->peer);
        return;
    }
    if (res->rv == 0 && (res->status == 409 || res->status == 404)) {
        mig_resolve(m);
        return;
    }
    if (res->rv == DVS_ESHUTDOWN)
        return;
    log_warn(COMP, "migration=%" PRId64 " precopy report failed: %s; retrying", m->id,
             node_call_error(res));
    uv_timer_start(&m->retry_timer, retry_precopy_cb, RETRY_MS * 2, 0);
}

/* Set up the destination's side: an empty arena and a published token. */
static void dst_prepare(struct node_migration *m)
{
    int fd = node_make_arena_memfd(m->endpoint, m->arena_size);
    if (fd < 0) {
        mig_abort(m, "cannot create an arena of %" PRIu64 " bytes: %s", m->arena_size,
                  strerror(-fd));
        return;
    }
    void *map = mmap(NULL, m->arena_size, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
    if (map == MAP_FAILED) {
        int e = errno;
        close(fd);
        mig_abort(m, "cannot map the new arena: %s", strerror(e));
        return;
    }
    m->memfd = fd;
    m->map = map;
    m->token = random_u64() | 1;
    mig_set_state(m, D_PREPARING);
    arm_deadline(m, m->n->cfg.transfer_timeout_ms);
    send_precopy(m);
}

/* What the destination needs of the endpoint: the migration record's
 * fields when it carries them, else the endpoint itself. */
static bool take_endpoint_fields(struct node_migration *m, json_t *e)
{
    const char *cmd = json_string_value(json_object_get(e, "command"));
    const char *addr = json_string_value(json_object_get(e, "arena_addr"));
    json_int_t size = json_integer_value(json_object_get(e, "arena_size"));
    json_int_t gen = json_integer_value(json_object_get(e, "generation"));
    if (!cmd || !addr || size <= 0 || gen <= 0 || strncmp(addr, "0x", 2) != 0)
        return false;
    char *end;
    errno = 0;
    unsigned long long a = strtoull(addr + 2, &end, 16);
    if (errno || *end || a == 0 || a % 4096 || (uint64_t)size % 4096 ||
        (uint64_t)size < NODE_XFER_MIN_ARENA || (uint64_t)size > NODE_XFER_MAX_ARENA)
        return false;
    free(m->command);
    m->command = xstrdup(cmd);
    m->arena_addr = a;
    m->arena_size = (uint64_t)size;
    m->generation = (uint64_t)gen;
    return true;
}

static void endpoint_read(struct node *n, const struct node_call_result *res, uint64_t cookie)
{
    struct node_migration *m = mig_by_serial(n, cookie);
    if (!m)
        return;
    m->call_busy = false;
    if (m->abort_wanted)
        return;
    if (res->rv != 0 || res->status != 200 || !take_endpoint_fields(m, res->body)) {
        mig_abort(m, "cannot read endpoint %s: %s", m->endpoint,
                  res->rv == 0 && res->status == 200 ? "malformed answer"
                                                     : node_call_error(res));
        return;
    }
    dst_prepare(m);
}

static void dst_new(struct node *n, int64_t id, json_t *mj, const char *endpoint,
                    const char *source)
{
    struct node_migration *m = mig_new(n, id, mj, endpoint, source, false);
    log_info(COMP, "migration=%" PRId64 " endpoint=%s role=destination phase=planned from=%s",
             id, endpoint, source);
    if (node_inst_find(n, endpoint) && node_inst_find(n, endpoint)->pid > 0) {
        mig_abort(m, "an instance of %s already runs on the destination", endpoint);
        return;
    }
    mig_set_state(m, D_PREPARING);
    if (take_endpoint_fields(m, mj)) {
        dst_prepare(m);
        return;
    }
    char path[128];
    snprintf(path, sizeof(path), "/v1/endpoints/%s?consistent", endpoint);
    m->call_busy = true;
    node_call(n, "GET", path, NULL, endpoint_read, m->serial);
}

/* ---- after the stream ---- */

/* Reads of the arena on the thread pool: round 0's list of non-zero pages
 * (the service still runs), the checksum of the frozen image (in parallel
 * parts), and a re-check after END. */
enum scan_kind { SCAN_ROUND0, SCAN_FROZEN_PART, SCAN_RECHECK };

struct scan_work {
    uv_work_t work;
    struct node *n;
    uint64_t mig_serial;
    struct node_migration *m; /* kept alive by m->works */
    enum scan_kind kind;
    uint64_t from, to;
    int rv;
    struct node_xfer_scan res;
    int64_t ms;
};

static void scan_run(uv_work_t *w)
{
    struct scan_work *s = w->data;
    int64_t t0 = now_mono_ms();
    s->rv = node_xfer_scan_range(s->m->memfd, s->m->map, s->from, s->to,
                                 s->kind == SCAN_ROUND0, &s->res);
    s->ms = now_mono_ms() - t0;
}

static void src_round0_scanned(struct node_migration *m, struct scan_work *s);
static void dst_spawn(struct node_migration *m);
static void src_part_hashed(struct node_migration *m, struct scan_work *s);
static void src_rechecked(struct node_migration *m, struct scan_work *s);

static void scan_after(uv_work_t *w, int status)
{
    struct scan_work *s = w->data;
    struct node_migration *m = s->m;
    m->works--;
    if (status == UV_ECANCELED)
        s->rv = -ECANCELED;
    if (!m->dead) {
        switch (s->kind) {
        case SCAN_ROUND0: src_round0_scanned(m, s); break;
        case SCAN_FROZEN_PART: src_part_hashed(m, s); break;
        case SCAN_RECHECK: src_rechecked(m, s); break;
        }
    }
    free(s->res.runs);
    free(s);
    mig_free_if_done(m);
}

static void queue_scan(struct node_migration *m, enum scan_kind kind, uint64_t from, uint64_t to)
{
    struct scan_work *s = xcalloc(1, sizeof(*s));
    s->work.data = s;
    s->n = m->n;
    s->m = m;
    s->mig_serial = m->serial;
    s->kind = kind;
    s->from = from;
    s->to = to;
    m->works++;
    uv_queue_work(&m->n->loop, &s->work, scan_run, scan_after);
}

/*
 * END and the MAC tag are in: the image checksum the destination kept as
 * pages arrived must be the source's, computed from its frozen arena. Then
 * commit, once the restore instance (started during the transfer) is up.
 */
static void dst_received(struct node_migration *m, uint64_t sum)
{
    log_info(COMP, "migration=%" PRId64 " endpoint=%s role=destination received bytes=%" PRIu64
                   " rounds=%" PRIu64 " method=%s in %" PRId64 " ms",
             m->id, m->endpoint, m->bytes, m->rounds, node_xfer_method_name(m->d_method),
             m->t_end_ms - m->t_start_ms);
    if (sum != m->scan.checksum) {
        mig_abort(m, "image checksum mismatch: received %016" PRIx64 ", source sent %016" PRIx64,
                  sum, m->scan.checksum);
        return;
    }
    log_debug(COMP, "migration=%" PRId64 " checksum ok", m->id);
    if (m->conn)
        m->conn->map = NULL;
    mig_set_state(m, D_SPAWNING);
    if (m->restore_ready) {
        mig_set_state(m, D_COMMITTING);
        send_commit(m);
    }
    /* else node_mig_on_restore_ready commits. The service module enforces
     * the start deadline (it kills a service that does not open in time,
     * which aborts us). */
}

/* ---- the reservation (DESIGN.md §4: pre-fault before the freeze) ---- */

struct reserve_work {
    uv_work_t work;
    struct node_migration *m; /* kept alive by m->works */
    int64_t ms;
    int rv;
};

static void reserve_run(uv_work_t *w)
{
    struct reserve_work *r = w->data;
    struct node_migration *m = r->m;
    int64_t t0 = now_mono_ms();
    r->rv = 0;
    for (size_t i = 0; i < m->n_reserves; i++) {
        /* Allocate and map in one call; far cheaper than a fault per page
         * when the pages arrive, and paid while the service still serves. */
        if (madvise(m->map + m->reserves[i].offset, m->reserves[i].len,
                    MADV_POPULATE_WRITE) != 0) {
            r->rv = -errno; /* older kernels: EINVAL; then pages fault in */
            break;
        }
    }
    r->ms = now_mono_ms() - t0;
}

static void reserve_after(uv_work_t *w, int status)
{
    struct reserve_work *r = w->data;
    struct node_migration *m = r->m;
    m->works--;
    if (!m->dead && m->conn && !m->abort_wanted && status == 0) {
        uint64_t bytes = 0;
        for (size_t i = 0; i < m->n_reserves; i++)
            bytes += m->reserves[i].len;
        if (r->rv != 0)
            log_info(COMP, "migration=%" PRId64 " cannot pre-fault the arena (%s); pages fault "
                           "in as they arrive",
                     m->id, strerror(-r->rv));
        else
            log_debug(COMP, "migration=%" PRId64 " pre-faulted %" PRIu64 " bytes in %zu ranges "
                            "in %" PRId64 " ms",
                      m->id, bytes, m->n_reserves, r->ms);
        struct node_xfer_conn *c = m->conn;
        uv_write_t *wr = xmalloc(sizeof(*wr) + NODE_XFER_REC_SIZE);
        uint8_t *rec = (uint8_t *)(wr + 1);
        node_xfer_rec_encode(NODE_XFER_READY, m->n_reserves, 0, 0, rec);
        uv_buf_t b = uv_buf_init((char *)rec, NODE_XFER_REC_SIZE);
        wr->data = c;
        if (uv_write(wr, (uv_stream_t *)&c->tcp, &b, 1, ready_written) != 0)
            free(wr);
        if (!m->restore_spawned)
            dst_spawn(m);
    }
    free(r);
    mig_free_if_done(m);
}

static void dst_reserve(struct node_migration *m)
{
    struct reserve_work *r = xcalloc(1, sizeof(*r));
    r->work.data = r;
    r->m = m;
    m->works++;
    uv_queue_work(&m->n->loop, &r->work, reserve_run, reserve_after);
}

/*
 * Start the service binary in restore mode on the arena now, while pages
 * still arrive: it maps the memfd (shared: it sees every page we write),
 * opens its port and waits for "start", which comes only after the commit
 * (docs/migration.md). Process start-up is then no part of the downtime.
 * libdvs checks the arena only at "start".
 */
static void dst_spawn(struct node_migration *m)
{
    struct node *n = m->n;
    int fd = dup(m->memfd);
    if (fd < 0) {
        mig_abort(m, "dup: %s", strerror(errno));
        return;
    }
    fcntl(fd, F_SETFD, FD_CLOEXEC);
    struct node_instance *inst = NULL;
    int rv = node_inst_spawn_restore(n, m->endpoint, m->command, m->generation + 1,
                                     m->arena_addr, m->arena_size, fd, m->id, &inst);
    if (rv != 0) {
        mig_abort(m, "cannot start the service in restore mode: %s", dvs_strerror(rv));
        return;
    }
    m->inst_serial = inst->serial;
    m->restore_spawned = true;
}

static void commit_done(struct node *n, const struct node_call_result *res, uint64_t cookie);

/* Frozen since: the source's own count at END (its clock started at the
 * freeze) plus our time since END. FREEZE's arrival would under-count when
 * it waited in socket buffers behind the previous round's pages; the
 * later of the two is taken. */
static int64_t mig_downtime_ms(const struct node_migration *m)
{
    int64_t now = now_mono_ms();
    int64_t by_end = (int64_t)(m->src_frozen_us / 1000) + (now - m->t_end_ms);
    int64_t by_freeze = m->t_freeze_rx_ms > 0 ? now - m->t_freeze_rx_ms : 0;
    return by_end > by_freeze ? by_end : by_freeze;
}

/* What the migration record keeps of the transfer (docs/migration.md,
 * "The record"): the source's method and stop reason as the stream said,
 * each round's pages and bytes, and the figures. */
static json_t *dst_stats(const struct node_migration *m)
{
    json_t *rounds = json_array();
    for (unsigned i = 0; i < m->d_nrounds; i++)
        json_array_append_new(rounds, json_pack("{s:I,s:I}", "pages", (json_int_t)m->d_rounds[i][0],
                                                "bytes", (json_int_t)m->d_rounds[i][1]));
    char sum[24];
    snprintf(sum, sizeof(sum), "%016" PRIx64, m->scan.checksum);
    json_t *o = json_pack("{s:s,s:s,s:o,s:I,s:I,s:I,s:I,s:I,s:s,s:s}", "method",
                          node_xfer_method_name(m->d_method), "precopy_stop",
                          node_xfer_stop_name(m->d_stop), "round_stats", rounds,
                          "bandwidth_bps", (json_int_t)m->d_bw, "precopy_ms",
                          (json_int_t)(m->d_precopy_us / 1000), "throttle_us",
                          (json_int_t)m->d_throttle_us, "receive_ms",
                          (json_int_t)(m->t_end_ms - m->t_start_ms), "arena_bytes",
                          (json_int_t)m->arena_size, "checksum", sum, "throttle_trigger",
                          m->d_trigger ? node_xfer_stop_name(m->d_trigger) : "none");
    return o;
}

static void send_commit(struct node_migration *m)
{
    struct node_instance *inst = node_inst_by_serial(m->n, m->inst_serial);
    if (!inst) {
        mig_abort(m, "the restore instance is gone");
        return;
    }
    int64_t downtime = mig_downtime_ms(m);
    mig_patch(m,
              json_pack("{s:s,s:s,s:I,s:I,s:I,s:o}", "phase", "committed", "address",
                        inst->address, "bytes", (json_int_t)m->bytes, "downtime_ms",
                        (json_int_t)downtime, "rounds", (json_int_t)m->rounds, "info",
                        dst_stats(m)),
              commit_done);
}

void node_mig_on_restore_ready(struct node *n, struct node_instance *inst)
{
    struct node_migration *m = mig_find(n, inst->migration_id);
    if (!m || m->is_source || m->inst_serial != inst->serial || m->restore_ready)
        return;
    m->restore_ready = true;
    if (m->state != D_SPAWNING)
        return; /* the image is not complete yet: dst_received commits */
    mig_set_state(m, D_COMMITTING);
    send_commit(m);
}

static void commit_done(struct node *n, const struct node_call_result *res, uint64_t cookie)
{
    struct node_migration *m = mig_by_serial(n, cookie);
    if (!m)
        return;
    m->call_busy = false;
    if (res->rv == 0 && res->status == 200) {
        dst_start(m);
        return;
    }
    if (m->abort_wanted)
        return;
    if (res->rv == 0 && (res->status == 409 || res->status == 404)) {
        /* Aborted meanwhile (or our earlier attempt went through): read. */
        mig_resolve(m);
        return;
    }
    if (res->rv == DVS_ESHUTDOWN)
        return;
    /* Unknown outcome or no manager: the commit may or may not be in. The
     * instance stays unstarted until a read says which. */
    log_warn(COMP, "migration=%" PRId64 " commit report failed: %s; reading the outcome", m->id,
             node_call_error(res));
    mig_resolve(m);
}

static void result_written(uv_write_t *w, int status)
{
    struct node_xfer_conn *c = w->data;
    (void)status;
    free(w);
    xc_close(c);
}

static void result_timeout(uv_timer_t *t)
{
    xc_close(t->data);
}

/* Send the outcome to the source, then close: the connection no longer
 * belongs to the migration, which may go away at once. */
static void xc_send_result(struct node_xfer_conn *c, uint64_t outcome, uint64_t generation)
{
    c->mig_serial = 0;
    c->map = NULL;
    if (c->closing)
        return;
    uv_read_stop((uv_stream_t *)&c->tcp);
    uv_write_t *w = xmalloc(sizeof(*w) + NODE_XFER_REC_SIZE);
    uint8_t *rec = (uint8_t *)(w + 1);
    node_xfer_rec_encode(NODE_XFER_RESULT, outcome, generation, 0, rec);
    uv_buf_t b = uv_buf_init((char *)rec, NODE_XFER_REC_SIZE);
    w->data = c;
    if (uv_write(w, (uv_stream_t *)&c->tcp, &b, 1, result_written) != 0) {
        free(w);
        xc_close(c);
        return;
    }
    uv_timer_stop(&c->timer);
    uv_timer_start(&c->timer, result_timeout, XFER_HELLO_TIMEOUT_MS, 0);
}

static void start_answered(struct node *n, int err, struct node_ctl_msg *reply, uint64_t cookie)
{
    (void)reply;
    struct node_migration *m = mig_by_serial(n, cookie);
    if (!m)
        return;
    struct node_instance *inst = node_inst_by_serial(n, m->inst_serial);
    if (err != 0 || !inst) {
        /* Committed but it will not start: the crash path restarts it on the
         * same arena with a new generation. */
        log_error(COMP, "migration=%" PRId64 " endpoint=%s committed but start failed: %s",
                  m->id, m->endpoint, dvs_err_name(err));
        if (inst) {
            node_inst_promote(inst);
            kill(inst->pid, SIGKILL);
        }
        mig_destroy(m);
        return;
    }
    node_inst_promote(inst);
    int64_t total = now_mono_ms() - m->t_start_ms;
    int64_t downtime = mig_downtime_ms(m);
    mig_metrics(m, true, -1);
    log_info(COMP, "migration=%" PRId64 " endpoint=%s role=destination phase=committed gen=%" PRIu64
                   " address=%s bytes=%" PRIu64 " downtime_ms=%" PRId64 " total_ms=%" PRId64,
             m->id, m->endpoint, inst->generation, inst->address, m->bytes, downtime, total);
    /* Tell the source at once (a hint: it checks with the manager). */
    if (m->conn) {
        struct node_xfer_conn *c = m->conn;
        m->conn = NULL;
        xc_send_result(c, NODE_XFER_COMMITTED, inst->generation);
    }
    mig_destroy(m);
}

/* The commit is in the directory: only now may the instance serve. */
static void dst_start(struct node_migration *m)
{
    if (m->start_sent)
        return;
    struct node_instance *inst = node_inst_by_serial(m->n, m->inst_serial);
    if (!inst || !inst->ctl || inst->state != INST_RESTORING) {
        log_error(COMP, "migration=%" PRId64 " endpoint=%s committed, but the restore instance "
                        "is not ready; the service restarts from the directory",
                  m->id, m->endpoint);
        if (inst)
            node_inst_promote(inst);
        mig_destroy(m);
        return;
    }
    mig_set_state(m, D_STARTING);
    m->start_sent = true;
    char args[64];
    snprintf(args, sizeof(args), "generation=%" PRIu64, inst->generation);
    if (node_ctl_request(inst->ctl, "start", args, CTL_TIMEOUT_MS, start_answered, m->serial) !=
        0)
        start_answered(m->n, -ECONNRESET, NULL, m->serial);
}

bool node_mig_on_instance_gone(struct node *n, struct node_instance *inst)
{
    struct node_migration *m = mig_find(n, inst->migration_id);
    if (!m || m->is_source)
        return false;
    if (m->state == D_STARTING) {
        /* Committed: the instance is the endpoint's now, crash or not. */
        node_inst_promote(inst);
        mig_destroy(m);
        return true;
    }
    if (m->state == D_COMMITTING || m->state == M_RESOLVING) {
        /* The commit may be in: keep the arena (promote) so that a restart
         * on it serves the data if it is. The restart waits while this
         * migration is unresolved (node_mig_busy); an abort stops it for
         * good (finish_aborted). */
        node_inst_promote(inst);
        mig_resolve(m);
        return true;
    }
    m->inst_serial = 0;
    mig_abort(m, "the restore instance exited before it could start");
    return false;
}

/* ------------------------------------------------------------------------ */
/* Source                                                                    */
/* ------------------------------------------------------------------------ */

static void src_write_done(uv_write_t *w, int status)
{
    struct node_xfer_conn *c = w->data;
    free(w);
    c->writes_pending--;
    if (status < 0 && status != UV_ECANCELED && !c->closing)
        xc_fail(c, uv_strerror(status));
}

/* Queue n_bufs buffers on the source's connection. */
static int src_write(struct node_migration *m, uv_buf_t *bufs, unsigned n_bufs)
{
    struct node_xfer_conn *c = m->conn;
    if (!c || c->closing)
        return -ENOTCONN;
    for (unsigned i = 0; i < n_bufs && m->mac_on; i++)
        xfer_mac_update(&m->mac, bufs[i].base, bufs[i].len);
    uv_write_t *w = xmalloc(sizeof(*w));
    w->data = c;
    int rv = uv_write(w, (uv_stream_t *)&c->tcp, bufs, n_bufs, src_write_done);
    if (rv != 0)
        free(w);
    else
        c->writes_pending++;
    return rv;
}

static void src_ready(struct node_migration *m);

/* Key the stream's MAC with the migration's secret (either side). */
static int mac_start(struct node_migration *m)
{
    if (!m->has_secret)
        return -ENOKEY;
    int rv = xfer_mac_init(&m->mac, m->secret, sizeof(m->secret), (uint64_t)m->id);
    if (rv == 0)
        m->mac_on = true;
    return rv;
}

static void src_read(uv_stream_t *s, ssize_t nread, const uv_buf_t *buf)
{
    struct node_xfer_conn *c = s->data;
    (void)buf;
    struct node_migration *m = mig_by_serial(c->n, c->mig_serial);
    if (nread == 0)
        return;
    if (nread < 0) {
        if (!m || m->conn != c) {
            xc_close(c);
            return;
        }
        bool all_out = m->end_sent && c->writes_pending == 0;
        m->conn = NULL;
        xc_close(c);
        if (m->vanished || m->state == M_RESOLVING) {
            /* The outcome is final and a read of it is under way. */
        } else if (all_out) {
            /* The destination may have committed before it went away: an
             * abort report races with its commit and the FSM picks one; a
             * 409 sends us to read which. */
            mig_abort(m, "the destination closed the transfer connection after the whole "
                         "stream was sent");
        } else {
            mig_abort(m, "the transfer connection to %s broke: %s", m->peer,
                      nread == UV_EOF ? "closed by the destination" : uv_strerror((int)nread));
        }
        return;
    }
    c->hdr_len += (size_t)nread;
    if (c->hdr_len < NODE_XFER_REC_SIZE)
        return;
    c->hdr_len = 0;
    struct node_xfer_rec r;
    const char *why = "unexpected record from the destination";
    if (node_xfer_rec_decode(c->hdr, 0, &r, &why) != 0 ||
        (r.type != NODE_XFER_RESULT && r.type != NODE_XFER_READY)) {
        xc_fail(c, why);
        return;
    }
    if (r.type == NODE_XFER_READY) {
        if (m && m->state == S_PREPARING)
            src_ready(m);
        return;
    }
    if (m && m->state == S_SENT) {
        log_debug(COMP, "migration=%" PRId64 " destination says %s", m->id,
                  r.a == NODE_XFER_COMMITTED ? "committed" : "aborted");
        /* Only a hint: the manager's word decides. */
        uv_timer_stop(&m->timer);
        mig_resolve(m);
    }
}

static void src_alloc(uv_handle_t *h, size_t suggested, uv_buf_t *buf)
{
    struct node_xfer_conn *c = h->data;
    (void)suggested;
    *buf = uv_buf_init((char *)c->hdr + c->hdr_len, (unsigned)(NODE_XFER_REC_SIZE - c->hdr_len));
}

static void frozen_done(struct node *n, const struct node_call_result *res, uint64_t cookie);

static void send_frozen(struct node_migration *m)
{
    m->frozen_report_busy = true;
    mig_patch(m, json_pack("{s:s}", "phase", "frozen"), frozen_done);
}

static void retry_frozen_cb(uv_timer_t *t)
{
    struct node_migration *m = t->data;
    if (!m->dead && !m->abort_wanted && !m->frozen_reported && !m->call_busy)
        send_frozen(m);
}

static void src_maybe_end(struct node_migration *m);

static void frozen_done(struct node *n, const struct node_call_result *res, uint64_t cookie)
{
    struct node_migration *m = mig_by_serial(n, cookie);
    if (!m)
        return;
    m->call_busy = false;
    m->frozen_report_busy = false;
    if (m->abort_wanted)
        return;
    if (res->rv == 0 && res->status == 200) {
        m->frozen_reported = true;
        log_info(COMP, "migration=%" PRId64 " endpoint=%s role=source phase=frozen", m->id,
                 m->endpoint);
        src_maybe_end(m);
        return;
    }
    if (res->rv == 0 && (res->status == 409 || res->status == 404)) {
        /* Most likely aborted meanwhile (the destination or the leader). */
        mig_resolve(m);
        return;
    }
    if (res->rv == DVS_ESHUTDOWN)
        return;
    log_warn(COMP, "migration=%" PRId64 " frozen report failed: %s; retrying", m->id,
             node_call_error(res));
    if (res->rv == DVS_EUNKNOWNOUTCOME)
        mig_resolve(m); /* maybe applied: a retry would be refused */
    else
        uv_timer_start(&m->retry_timer, retry_frozen_cb, RETRY_MS, 0);
}

/* END goes once the last round is queued, the frozen image is checksummed,
 * AND the manager has the freeze. The last condition keeps the phases in
 * order in the FSM: the destination's commit can only come after END, so
 * after "frozen". */
static void src_maybe_end(struct node_migration *m)
{
    if (m->end_sent || !m->final_queued || !m->scan_done || !m->frozen_reported ||
        m->abort_wanted)
        return;
    struct node_xfer_conn *c = m->conn;
    if (!c)
        return;
    uint64_t frozen_us = (uint64_t)(now_mono_ms() - m->t_frozen_ms) * 1000;
    node_xfer_rec_encode(NODE_XFER_END, m->bytes, m->scan.checksum, frozen_us, c->end_rec);
    xfer_mac_update(&m->mac, c->end_rec, NODE_XFER_REC_SIZE);
    if (xfer_mac_final(&m->mac, c->end_rec + NODE_XFER_REC_SIZE) != 0) {
        mig_abort(m, "cannot compute the transfer stream's MAC");
        return;
    }
    xfer_mac_close(&m->mac);
    m->mac_on = false; /* src_write must not MAC the tag */
    uv_buf_t b = uv_buf_init((char *)c->end_rec, NODE_XFER_REC_SIZE + XFER_MAC_LEN);
    if (src_write(m, &b, 1) != 0) {
        mig_abort(m, "cannot write to the transfer connection");
        return;
    }
    m->end_sent = true;
    mig_set_state(m, S_SENT);
    arm_deadline(m, m->n->cfg.transfer_timeout_ms);
    log_info(COMP, "migration=%" PRId64 " endpoint=%s role=source sent bytes=%" PRIu64
                   " pages=%" PRIu64 " rounds=%" PRIu64 " method=%s stop=%s frozen_ms=%" PRIu64,
             m->id, m->endpoint, m->bytes, m->scan.pages, m->round_no + 1,
             node_xfer_method_name((uint64_t)m->method),
             node_xfer_stop_name((uint64_t)m->stop_reason), frozen_us / 1000);
    /* Off the critical path (the destination is verifying and starting its
     * instance meanwhile): check that the frozen service really left its
     * arena alone after the checksum. A write before it already fails the
     * destination's check; this one would otherwise be lost silently. */
    queue_scan(m, SCAN_RECHECK, 0, m->arena_size);
}

static void src_rechecked(struct node_migration *m, struct scan_work *s)
{
    if (s->rv != 0 || m->abort_wanted)
        return;
    if (s->res.checksum == m->scan.checksum) {
        log_debug(COMP, "migration=%" PRId64 " arena unchanged since the freeze (%" PRId64 " ms)",
                  m->id, s->ms);
        return;
    }
    log_error(COMP, "migration=%" PRId64 " endpoint=%s the service wrote to its arena while "
                    "frozen (image checksum %016" PRIx64 " -> %016" PRIx64 "): a bug in the "
                    "service or libdvs; the copy may miss that write",
              m->id, m->endpoint, m->scan.checksum, s->res.checksum);
    if (m->state == S_SENT)
        mig_abort(m, "the service modified its arena while frozen; copy refused");
}

/* ---- the frozen image's checksum, in parallel parts ---- */

/* Two parts: this machine kind has two cores, and the loop thread sends
 * the last round meanwhile. The checksum is a sum, so parts add up. */
#define FROZEN_SCAN_PARTS 2

static void src_checksum_frozen(struct node_migration *m)
{
    uint64_t pages = m->arena_size / NODE_XFER_PAGE;
    uint64_t per = (pages + FROZEN_SCAN_PARTS - 1) / FROZEN_SCAN_PARTS;
    m->scan_sum = m->scan_pages = 0;
    m->scan_rv = 0;
    m->scan_parts = 0;
    for (uint64_t p = 0; p < pages; p += per) {
        uint64_t to = p + per < pages ? p + per : pages;
        m->scan_parts++;
        queue_scan(m, SCAN_FROZEN_PART, p * NODE_XFER_PAGE, to * NODE_XFER_PAGE);
    }
}

static void src_part_hashed(struct node_migration *m, struct scan_work *s)
{
    if (s->rv != 0 && m->scan_rv == 0)
        m->scan_rv = s->rv;
    m->scan_sum += s->res.checksum;
    m->scan_pages += s->res.pages;
    if (--m->scan_parts > 0 || m->abort_wanted || m->scan_done)
        return;
    if (m->scan_rv != 0) {
        mig_abort(m, "cannot read the arena: %s", strerror(-m->scan_rv));
        return;
    }
    m->scan.checksum = m->scan_sum;
    m->scan.pages = m->scan_pages;
    m->scan_done = true;
    log_debug(COMP, "migration=%" PRId64 " checksummed the frozen arena: pages=%" PRIu64
                    " in %" PRId64 " ms",
              m->id, m->scan.pages, s->ms);
    src_maybe_end(m);
}

/* ---- sending a round: the pump ---- */

struct src_batch {
    uv_write_t w;
    struct node_xfer_conn *c;
    uint8_t *copy; /* a PUMP_BUF_BYTES buffer with the pages, or NULL (frozen:
                    * sent straight from the mapping) */
    uint64_t bytes;
    unsigned nbufs;
    uv_buf_t bufs[2 * WRITE_BATCH + 1];
    uint8_t recs[(WRITE_BATCH + 1) * NODE_XFER_REC_SIZE];
};

static int64_t now_us(void)
{
    return (int64_t)(now_mono_ns() / 1000);
}

static void src_pump(struct node_migration *m);
static void src_round_done(struct node_migration *m);

/* An idle copy buffer: a pooled one, or a new one (pre-faulted), or NULL
 * when PUMP_BUFS are all in flight. */
static uint8_t *buf_get(struct node_migration *m, unsigned *made)
{
    for (unsigned i = 0; i < PUMP_BUFS; i++) {
        if (m->bufs[i]) {
            uint8_t *b = m->bufs[i];
            m->bufs[i] = NULL;
            return b;
        }
    }
    if (*made >= PUMP_BUFS)
        return NULL;
    void *p = mmap(NULL, PUMP_BUF_BYTES, PROT_READ | PROT_WRITE,
                   MAP_PRIVATE | MAP_ANONYMOUS | MAP_POPULATE, -1, 0);
    if (p == MAP_FAILED)
        return NULL;
    (*made)++;
    return p;
}

static bool buf_put(struct node_migration *m, uint8_t *b)
{
    if (!m || m->dead)
        return false;
    for (unsigned i = 0; i < PUMP_BUFS; i++) {
        if (!m->bufs[i]) {
            m->bufs[i] = b;
            return true;
        }
    }
    return false;
}

static void batch_done(uv_write_t *w, int status)
{
    struct src_batch *b = w->data;
    struct node_xfer_conn *c = b->c;
    c->inflight -= b->bytes;
    c->batches--;
    struct node_migration *owner = c->closing ? NULL : mig_by_serial(c->n, c->mig_serial);
    if (b->copy && !buf_put(owner, b->copy))
        munmap(b->copy, PUMP_BUF_BYTES);
    free(b);
    if (status < 0) {
        if (status != UV_ECANCELED && !c->closing)
            xc_fail(c, uv_strerror(status));
        return;
    }
    if (c->closing)
        return;
    struct node_migration *m = mig_by_serial(c->n, c->mig_serial);
    if (!m || m->conn != c || !m->sending || m->final_round)
        return; /* the last round ends with END (src_maybe_end) */
    if (m->round_closed && c->batches == 0)
        src_round_done(m);
    else
        src_pump(m);
}

static void pace_cb(uv_timer_t *t)
{
    src_pump(t->data);
}

/*
 * Queue the round's pages on the socket, straight from the read-only
 * mapping of the memfd (no copy in user space), in batches of (header,
 * pages) pairs, keeping at most PUMP_WINDOW bytes queued while the service
 * runs: a page is read when the kernel copies it into the socket, so the
 * later, the fresher. The last round, with the service frozen, goes out
 * all at once. --max-bandwidth paces the batches.
 */
static void src_pump(struct node_migration *m)
{
    struct node_xfer_conn *c = m->conn;
    uint64_t cap = m->n->cfg.max_bandwidth;
    if (!c || c->closing || !m->sending || m->round_closed)
        return;
    while (!m->round_closed && (m->final_round || c->inflight < PUMP_WINDOW)) {
        if (cap > 0) {
            /* Ahead of the cap: wait until the round's bytes are due. */
            int64_t due_us = (int64_t)((double)m->round_queued * 1e6 / (double)cap);
            int64_t ahead_us = due_us - (now_us() - m->round_t0_us);
            if (ahead_us > 1000) {
                uv_timer_start(&m->pace_timer, pace_cb, (uint64_t)(ahead_us / 1000), 0);
                return;
            }
        }
        uint64_t limit = cap > 0 && cap / 4 < PUMP_BATCH_BYTES ? cap / 4 + NODE_XFER_PAGE
                                                               : PUMP_BATCH_BYTES;
        /* While the service runs, the batch's pages are copied first: it may
         * write a page while the page waits in the socket, and the MAC must
         * cover exactly the bytes sent (the write marks the page for the
         * next round anyway). Frozen, the pages hold still: no copy. */
        uint8_t *copy = NULL;
        if (!m->frozen && m->send_idx < m->send.n &&
            (copy = buf_get(m, &m->bufs_made)) == NULL)
            return; /* all buffers in flight: batch_done pumps again */
        struct src_batch *b = xmalloc(sizeof(*b));
        unsigned nb = 0, k = 0;
        b->c = c;
        b->w.data = b;
        b->copy = copy;
        uint64_t bytes = 0;
        for (; m->send_idx < m->send.n && k < WRITE_BATCH && bytes < limit; m->send_idx++) {
            const struct node_xfer_run *r = &m->send.v[m->send_idx];
            if (copy && bytes + r->len > PUMP_BUF_BYTES)
                break;
            uint8_t *rec = b->recs + k++ * NODE_XFER_REC_SIZE;
            node_xfer_rec_encode(NODE_XFER_PAGES, r->offset, r->len, 0, rec);
            const uint8_t *src = m->map + r->offset;
            if (copy) {
                memcpy(copy + bytes, src, r->len);
                src = copy + bytes;
            }
            xfer_mac_update(&m->mac, rec, NODE_XFER_REC_SIZE);
            xfer_mac_update(&m->mac, src, r->len);
            b->bufs[nb++] = uv_buf_init((char *)rec, NODE_XFER_REC_SIZE);
            b->bufs[nb++] = uv_buf_init((char *)src, (unsigned)r->len);
            bytes += r->len;
        }
        b->bytes = bytes;
        if (m->send_idx == m->send.n) {
            uint8_t *rec = b->recs + k * NODE_XFER_REC_SIZE;
            node_xfer_rec_encode(NODE_XFER_ROUND, m->round_no, m->send.bytes / NODE_XFER_PAGE,
                                 m->send.bytes, rec);
            xfer_mac_update(&m->mac, rec, NODE_XFER_REC_SIZE);
            b->bufs[nb++] = uv_buf_init((char *)rec, NODE_XFER_REC_SIZE);
            m->round_closed = true;
        }
        b->nbufs = nb;
        if (uv_write(&b->w, (uv_stream_t *)&c->tcp, b->bufs, nb, batch_done) != 0) {
            if (b->copy && !buf_put(m, b->copy))
                munmap(b->copy, PUMP_BUF_BYTES);
            free(b);
            mig_abort(m, "cannot write to the transfer connection");
            return;
        }
        c->inflight += b->bytes;
        c->batches++;
        m->round_queued += b->bytes;
        m->bytes += b->bytes;
    }
    if (m->round_closed && m->final_round) {
        /* Everything of the last round is queued: END may follow it. */
        m->final_queued = true;
        src_maybe_end(m);
    }
}

/* Send `runs` as round m->round_no. */
static void src_send(struct node_migration *m, struct node_runs *runs, bool final)
{
    node_runs_free(&m->send);
    m->send = *runs;
    memset(runs, 0, sizeof(*runs));
    m->send_idx = 0;
    m->sending = true;
    m->round_closed = false;
    m->final_round = final;
    m->round_queued = 0;
    m->round_t0_us = now_us();
    if (!final)
        arm_deadline(m, m->n->cfg.transfer_timeout_ms);
    src_pump(m);
}

/* ---- tracking: set up, collect, stop ---- */

static void src_collected(struct node_migration *m, int err, struct node_runs *dirty);

/* Every allocated page of the arena, as if all were written: what is sent
 * when tracking cannot say (overflow, failure) or there is none. Returns 0
 * or a negated errno from lseek. */
static int all_allocated(struct node_migration *m, struct node_runs *out)
{
    struct node_xfer_run *ext = NULL;
    size_t next = 0;
    int rv = node_xfer_extents(m->memfd, m->arena_size, 0, SIZE_MAX, &ext, &next);
    if (rv != 0)
        return rv;
    for (size_t i = 0; i < next; i++)
        node_runs_add(out, ext[i].offset, ext[i].len);
    free(ext);
    return 0;
}

static void track_collect_answered(struct node *n, int err, struct node_ctl_msg *reply,
                                   uint64_t cookie)
{
    struct node_migration *m = mig_by_serial(n, cookie);
    if (!m || m->dead || m->abort_wanted || !m->mprotect_on)
        return;
    struct node_runs dirty = {0};
    uint64_t which = 0, overflow = 0;
    const char *ks = reply ? node_ctl_get(reply, "bitmap") : NULL;
    const char *os = reply ? node_ctl_get(reply, "overflow") : NULL;
    if (err != 0 || !ks || !os || (strcmp(ks, "0") != 0 && strcmp(ks, "1") != 0)) {
        src_collected(m, err ? -EIO : -EPROTO, &dirty);
        return;
    }
    which = ks[0] == '1';
    overflow = os[0] == '1';
    if (overflow) {
        /* The service stopped tracking page by page (too many faults for
         * vm.max_map_count): every allocated page counts as written. */
        if (all_allocated(m, &dirty) != 0) {
            src_collected(m, -EIO, &dirty);
            return;
        }
    } else {
        node_dirty_bitmap_runs(m->bitmap, m->arena_size / NODE_XFER_PAGE, (unsigned)which,
                               &dirty);
    }
    src_collected(m, 0, &dirty);
}

/* Ask for the pages written since the last collect; src_collected gets them. */
static void src_collect(struct node_migration *m)
{
    struct node_runs dirty = {0};
    if (m->uffd_on) {
        int rv = node_dirty_uffd_collect(&m->uffd, &dirty);
        src_collected(m, rv, &dirty);
        return;
    }
    struct node_instance *inst = node_inst_by_serial(m->n, m->inst_serial);
    if (!inst || !inst->ctl ||
        node_ctl_request(inst->ctl, "track-collect", NULL, CTL_TIMEOUT_MS,
                         track_collect_answered, m->serial) != 0)
        src_collected(m, -ENOTCONN, &dirty);
}

static void ctl_ignore(struct node *n, int err, struct node_ctl_msg *reply, uint64_t cookie)
{
    (void)n, (void)err, (void)reply, (void)cookie;
}

/* The service writes at full speed again: tracking off, throttle off. */
static void src_untrack(struct node_migration *m)
{
    if (m->uffd_on) {
        node_dirty_uffd_stop(&m->uffd);
        m->uffd_on = false;
    }
    struct node_instance *inst = node_inst_by_serial(m->n, m->inst_serial);
    if (inst && inst->ctl && m->mprotect_on)
        node_ctl_request(inst->ctl, "track-stop", NULL, CTL_TIMEOUT_MS, ctl_ignore, 0);
    if (inst && inst->ctl && m->throttle_step > 0)
        node_ctl_request(inst->ctl, "throttle", "delay_us=0", CTL_TIMEOUT_MS, ctl_ignore, 0);
    m->mprotect_on = false;
    m->throttle_step = 0;
    if (m->bitmap) {
        munmap(m->bitmap, m->bitmap_size);
        m->bitmap = NULL;
    }
}

static void src_start_rounds(struct node_migration *m)
{
    mig_set_state(m, S_PRECOPY);
    m->precopy_t0_us = now_us();
    m->round_no = 0;
    arm_deadline(m, m->n->cfg.transfer_timeout_ms);
    /* Round 0 is every non-zero page: find them on the pool. */
    queue_scan(m, SCAN_ROUND0, 0, m->arena_size);
}

static void src_freeze(struct node_migration *m);

/* Tracking could not start: stop-and-copy, unless the operator insisted. */
static void src_no_tracking(struct node_migration *m, const char *why)
{
    log_warn(COMP, "migration=%" PRId64 " endpoint=%s cannot track dirty pages with %s: %s; "
                   "falling back to stop-and-copy",
             m->id, m->endpoint, node_xfer_method_name((uint64_t)m->method), why);
    src_untrack(m);
    m->method = NODE_XFER_M_NONE;
    m->stop_reason = NODE_XFER_S_NONE;
    src_freeze(m);
}

static void track_start_answered(struct node *n, int err, struct node_ctl_msg *reply,
                                 uint64_t cookie)
{
    struct node_migration *m = mig_by_serial(n, cookie);
    if (!m || m->dead || m->abort_wanted || m->state != S_TRACKING)
        return;
    const char *names = reply ? node_ctl_get(reply, "fds") : NULL;
    if (err != 0 || !names || strcmp(names, "bitmap") != 0 || reply->n_fds < 1) {
        const char *msg = reply ? node_ctl_get(reply, "message") : NULL;
        m->mprotect_on = err == 0; /* started without a usable bitmap: stop it */
        src_no_tracking(m, msg ? msg : err ? dvs_err_name(err) : "no bitmap in the answer");
        return;
    }
    m->mprotect_on = true;
    int fd = reply->fds[0];
    struct stat st;
    const char *why = "cannot map the bitmap";
    if (fstat(fd, &st) == 0 && st.st_size > 0) {
        void *p = mmap(NULL, (size_t)st.st_size, PROT_READ, MAP_SHARED, fd, 0);
        if (p != MAP_FAILED) {
            m->bitmap = p;
            m->bitmap_size = (uint64_t)st.st_size;
            if (node_dirty_bitmap_check(m->bitmap, m->bitmap_size,
                                        m->arena_size / NODE_XFER_PAGE, &why) == 0)
                why = NULL;
        }
    }
    if (why) {
        src_no_tracking(m, why);
        return;
    }
    log_info(COMP, "migration=%" PRId64 " endpoint=%s tracking dirty pages with mprotect in the "
                   "service",
             m->id, m->endpoint);
    src_start_rounds(m);
}

static void fds_answered(struct node *n, int err, struct node_ctl_msg *reply, uint64_t cookie)
{
    struct node_migration *m = mig_by_serial(n, cookie);
    if (!m || m->dead || m->abort_wanted || m->state != S_TRACKING)
        return;
    /* "fds=arena,uffd,pagemap", in that order; uffd or pagemap may lack. */
    const char *names = reply ? node_ctl_get(reply, "fds") : NULL;
    int uffd = -1, pagemap = -1;
    if (err == 0 && names && strcmp(names, "arena,uffd,pagemap") == 0 && reply->n_fds == 3) {
        uffd = reply->fds[1];
        pagemap = reply->fds[2];
        reply->fds[1] = reply->fds[2] = -1; /* taken */
    }
    if (uffd < 0) {
        char why[128];
        snprintf(why, sizeof(why), "the service handed over %s", names ? names : "nothing");
        if (!n->dirty_forced) {
            /* mprotect in the service may still work. */
            m->method = NODE_XFER_M_MPROTECT;
            struct node_instance *inst = node_inst_by_serial(n, m->inst_serial);
            if (inst && inst->ctl &&
                node_ctl_request(inst->ctl, "track-start", NULL, CTL_TIMEOUT_MS,
                                 track_start_answered, m->serial) == 0)
                return;
        }
        src_no_tracking(m, why);
        return;
    }
    int rv = node_dirty_uffd_start(&m->uffd, uffd, pagemap, m->arena_addr, m->arena_size);
    if (rv != 0) {
        src_no_tracking(m, strerror(-rv));
        return;
    }
    m->uffd_on = true;
    log_info(COMP, "migration=%" PRId64 " endpoint=%s tracking dirty pages with userfaultfd "
                   "write-protect",
             m->id, m->endpoint);
    src_start_rounds(m);
}

/* The destination has reserved its arena: start tracking, then round 0 —
 * or, without tracking, freeze at once (stop-and-copy). */
static void src_ready(struct node_migration *m)
{
    struct node *n = m->n;
    uv_timer_stop(&m->timer);
    m->method = n->dirty_method;
    if (m->method == NODE_XFER_M_NONE) {
        m->stop_reason = NODE_XFER_S_NONE;
        src_freeze(m);
        return;
    }
    struct node_instance *inst = node_inst_by_serial(n, m->inst_serial);
    if (!inst || !inst->ctl) {
        mig_abort(m, "cannot reach the service's control channel");
        return;
    }
    mig_set_state(m, S_TRACKING);
    arm_deadline(m, CTL_TIMEOUT_MS * 2);
    int rv = m->method == NODE_XFER_M_UFFD
                 ? node_ctl_request(inst->ctl, "fds", NULL, CTL_TIMEOUT_MS, fds_answered,
                                    m->serial)
                 : node_ctl_request(inst->ctl, "track-start", NULL, CTL_TIMEOUT_MS,
                                    track_start_answered, m->serial);
    if (rv != 0)
        mig_abort(m, "cannot reach the service's control channel");
}

static void src_round0_scanned(struct node_migration *m, struct scan_work *s)
{
    if (m->abort_wanted || m->state != S_PRECOPY)
        return;
    if (s->rv != 0) {
        mig_abort(m, "cannot read the arena: %s", strerror(-s->rv));
        return;
    }
    struct node_runs runs = {0};
    for (size_t i = 0; i < s->res.nruns; i++)
        node_runs_add(&runs, s->res.runs[i].offset, s->res.runs[i].len);
    log_debug(COMP, "migration=%" PRId64 " round 0: %" PRIu64 " non-zero pages found in %" PRId64
                    " ms",
              m->id, s->res.pages, s->ms);
    src_send(m, &runs, false);
}

static void throttle_answered(struct node *n, int err, struct node_ctl_msg *reply,
                              uint64_t cookie)
{
    (void)reply;
    struct node_migration *m = mig_by_serial(n, cookie);
    if (m && err == 0)
        m->throttle_us = m->throttle_asked_us;
    if (m && err != 0) {
        /* The service cannot slow down: the next round decides to stop. */
        log_warn(COMP, "migration=%" PRId64 " the service refused to throttle: %s", m->id,
                 dvs_err_name(err));
        m->throttle_step = N_THROTTLE_STEPS;
    }
}

/* A round is on the wire: measure, then collect what was written meanwhile. */
static void src_round_done(struct node_migration *m)
{
    m->sending = false;
    int64_t dt = now_us() - m->round_t0_us;
    /* Small rounds time the latency, not the link. */
    if (m->send.bytes >= (1u << 20) && dt > 0) {
        double bw = (double)m->send.bytes * 1e6 / (double)dt;
        m->bw = m->bw > 0 ? 0.5 * m->bw + 0.5 * bw : bw;
    }
    log_debug(COMP, "migration=%" PRId64 " round=%" PRIu64 " pages=%" PRIu64 " in %" PRId64
                    " us (%.0f MB/s)",
              m->id, m->round_no, m->send.bytes / NODE_XFER_PAGE, dt, m->bw / 1e6);
    m->round_no++;
    src_collect(m);
}

/*
 * The pages written during the last round (or, once frozen, since the
 * last collect). While serving, decide (DESIGN.md §4): the rest fits the
 * downtime budget -> freeze; rounds stopped shrinking or hit the cap ->
 * throttle the service a step more per round (auto-converge); throttled to
 * the last step and still too much -> freeze anyway. It always ends.
 */
static void src_collected(struct node_migration *m, int err, struct node_runs *dirty)
{
    struct node *n = m->n;
    if (m->dead || m->abort_wanted) {
        node_runs_free(dirty);
        return;
    }
    if (m->frozen) {
        /* The last round: what was decided before the freeze plus what was
         * written since, or everything if tracking broke. */
        struct node_runs last = m->pending;
        memset(&m->pending, 0, sizeof(m->pending));
        if (err != 0 || m->full_final) {
            if (err != 0)
                log_warn(COMP, "migration=%" PRId64 " last collect failed (%s): sending every "
                               "allocated page",
                         m->id, strerror(-err));
            node_runs_free(&last);
            int rv = all_allocated(m, &last);
            if (rv != 0) {
                node_runs_free(&last);
                node_runs_free(dirty);
                mig_abort(m, "cannot read the arena's extents: %s", strerror(-rv));
                return;
            }
            if (m->method != NODE_XFER_M_NONE)
                m->stop_reason = NODE_XFER_S_TRACKING_LOST;
        } else {
            node_runs_union(&last, dirty);
        }
        node_runs_free(dirty);
        src_send(m, &last, true);
        return;
    }
    if (err != 0) {
        /* PAGEMAP_SCAN refused (-EPERM: a page lost its protection) or the
         * service did not answer: what was written is unknown; freeze and
         * send every allocated page. */
        log_warn(COMP, "migration=%" PRId64 " dirty tracking failed: %s; stopping and copying "
                       "everything",
                 m->id, strerror(-err));
        node_runs_free(dirty);
        m->full_final = true;
        m->stop_reason = NODE_XFER_S_TRACKING_LOST;
        src_freeze(m);
        return;
    }
    uint64_t d = dirty->bytes;
    const struct node_precopy_rule rule = {
        .budget_ms = (double)n->cfg.downtime_budget_ms,
        .max_rounds = (uint64_t)n->cfg.precopy_max_rounds,
        .throttle_steps = N_THROTTLE_STEPS,
        .overhead_ms = STOP_OVERHEAD_MS,
    };
    const struct node_precopy_state st = {
        .rounds = m->round_no,
        .prev_dirty = m->prev_dirty,
        .throttle_step = m->throttle_step,
        .bw = m->bw,
    };
    int reason = 0;
    double est_ms = 0;
    enum node_precopy_next next = node_precopy_decide(&rule, &st, d, &reason, &est_ms);
    log_debug(COMP, "migration=%" PRId64 " after round %" PRIu64 ": dirty=%" PRIu64
                    " bytes, estimated stop-and-copy %.1f ms (budget %" PRId64 " ms): %s",
              m->id, m->round_no - 1, d, est_ms, n->cfg.downtime_budget_ms,
              next == NODE_PC_FREEZE ? "freeze" : next == NODE_PC_THROTTLE ? "throttle" : "round");
    if (next == NODE_PC_FREEZE) {
        m->stop_reason = reason;
    } else if (next == NODE_PC_THROTTLE) {
        if (m->throttle_trigger == 0)
            m->throttle_trigger = reason;
        uint32_t us = throttle_steps_us[m->throttle_step++];
        m->throttle_asked_us = us;
        char args[48];
        snprintf(args, sizeof(args), "delay_us=%" PRIu32, us);
        struct node_instance *inst = node_inst_by_serial(n, m->inst_serial);
        log_info(COMP, "migration=%" PRId64 " endpoint=%s not converging (%" PRIu64
                       " bytes written during round %" PRIu64 ", %.0f MB/s link): throttling the "
                       "service to %" PRIu32 " us per request",
                 m->id, m->endpoint, d, m->round_no - 1, m->bw / 1e6, us);
        if (!inst || !inst->ctl ||
            node_ctl_request(inst->ctl, "throttle", args, CTL_TIMEOUT_MS, throttle_answered,
                             m->serial) != 0)
            m->throttle_step = N_THROTTLE_STEPS;
    }
    if (m->stop_reason != NODE_XFER_S_NONE) {
        /* Freeze; these pages go in the last round with what is written
         * until the freeze. */
        node_runs_free(&m->pending);
        m->pending = *dirty;
        memset(dirty, 0, sizeof(*dirty));
        src_freeze(m);
        return;
    }
    m->prev_dirty = d;
    src_send(m, dirty, false);
}

/* ---- freezing ---- */

static void freeze_answered(struct node *n, int err, struct node_ctl_msg *reply, uint64_t cookie)
{
    (void)reply;
    struct node_migration *m = mig_by_serial(n, cookie);
    if (!m || m->state != S_FREEZING)
        return;
    struct node_instance *inst = node_inst_by_serial(n, m->inst_serial);
    if (err != 0 || !inst || !m->conn) {
        mig_abort(m, "the service did not freeze: %s",
                  !m->conn ? "the transfer connection is gone"
                  : inst   ? dvs_err_name(err)
                           : "it is gone");
        return;
    }
    m->frozen = true;
    m->t_frozen_ms = now_mono_ms();
    if (m->precopy_t0_us > 0)
        m->precopy_us = now_us() - m->precopy_t0_us;
    if (inst->state == INST_SERVING)
        inst->state = INST_FROZEN;
    mig_set_state(m, S_SENDING);
    arm_deadline(m, n->cfg.transfer_timeout_ms);
    /* FREEZE starts the last round; the destination times downtime from it. */
    struct node_xfer_conn *c = m->conn;
    node_xfer_rec_encode(NODE_XFER_FREEZE, (uint64_t)m->method, (uint64_t)m->stop_reason,
                         (uint64_t)m->bw, c->freeze_rec);
    node_xfer_rec_encode(NODE_XFER_THROTTLE, m->throttle_us,
                         (uint64_t)m->throttle_trigger, (uint64_t)m->precopy_us,
                         c->freeze_rec + NODE_XFER_REC_SIZE);
    uv_buf_t b = uv_buf_init((char *)c->freeze_rec, 2 * NODE_XFER_REC_SIZE);
    if (src_write(m, &b, 1) != 0) {
        mig_abort(m, "cannot write to the transfer connection");
        return;
    }
    /* Frozen, the service takes no request: the throttle has done its job
     * and must not slow the replies of what comes next (moved, or serving
     * again after an abort). */
    if (m->throttle_step > 0 && inst->ctl)
        node_ctl_request(inst->ctl, "throttle", "delay_us=0", CTL_TIMEOUT_MS, ctl_ignore, 0);
    /* All at once: the report to the manager, the checksum of the frozen
     * image on the pool, and the last round on the loop. */
    send_frozen(m);
    src_checksum_frozen(m);
    if (m->method == NODE_XFER_M_NONE)
        m->full_final = true; /* stop-and-copy: the last round is everything */
    if (m->uffd_on || m->mprotect_on) {
        src_collect(m);
    } else {
        struct node_runs none = {0};
        src_collected(m, 0, &none);
    }
}

/* Freeze the service: it finishes the request in progress and holds new
 * ones (DESIGN.md §4 phase 3). */
static void src_freeze(struct node_migration *m)
{
    struct node *n = m->n;
    uv_timer_stop(&m->timer);
    struct node_instance *inst = node_inst_by_serial(n, m->inst_serial);
    char args[64];
    snprintf(args, sizeof(args), "hold_ms=%" PRId64, n->cfg.hold_ms);
    mig_set_state(m, S_FREEZING);
    m->freeze_sent = true;
    if (!inst || node_ctl_request(inst->ctl, "freeze", args, n->cfg.freeze_timeout_ms,
                                  freeze_answered, m->serial) != 0) {
        m->freeze_sent = false;
        mig_abort(m, "cannot reach the service's control channel");
    }
}

static void src_connected(uv_connect_t *req, int status)
{
    struct node_xfer_conn *c = req->data;
    struct node_migration *m = mig_by_serial(c->n, c->mig_serial);
    if (c->closing)
        return;
    if (!m || m->conn != c) {
        xc_close(c);
        return;
    }
    if (status < 0) {
        m->conn = NULL;
        xc_close(c);
        mig_abort(m, "cannot connect to the destination's transfer port %s: %s", m->transfer,
                  uv_strerror(status));
        return;
    }
    peer_name(&c->tcp, c->peer, sizeof(c->peer));
    uv_tcp_nodelay(&c->tcp, 1);
    uv_timer_stop(&m->timer);

    struct node_xfer_hello h = {
        .migration_id = (uint64_t)m->id,
        .token = m->token,
        .arena_addr = m->arena_addr,
        .arena_size = m->arena_size,
        .generation = m->generation,
        .page_size = NODE_XFER_PAGE,
    };
    node_xfer_hello_encode(&h, c->hdr);
    if (mac_start(m) != 0) {
        mig_abort(m, "no transfer secret for the migration from the manager: the stream "
                     "cannot be authenticated");
        return;
    }
    uv_buf_t b = uv_buf_init((char *)c->hdr, NODE_XFER_HELLO_SIZE);
    if (src_write(m, &b, 1) != 0) {
        mig_abort(m, "cannot write to the transfer connection");
        return;
    }
    c->hdr_len = 0;
    uv_read_start((uv_stream_t *)&c->tcp, src_alloc, src_read);

    /* Tell the destination where the data is (the memfd's allocated
     * extents; no page is read), so that it allocates those pages before
     * the first byte arrives: first touch of fresh memory is the slow part
     * of a copy (DESIGN.md §4). */
    struct node_xfer_run *ext = NULL;
    size_t next = 0;
    int rv = node_xfer_extents(m->memfd, m->arena_size, 64u << 10, NODE_XFER_MAX_RESERVES, &ext,
                               &next);
    if (rv != 0) {
        mig_abort(m, "cannot read the arena's extents: %s", strerror(-rv));
        return;
    }
    c->pre = xmalloc((next + 1) * NODE_XFER_REC_SIZE);
    uint64_t reserved = 0;
    for (size_t i = 0; i < next; i++) {
        node_xfer_rec_encode(NODE_XFER_RESERVE, ext[i].offset, ext[i].len, 0,
                             c->pre + i * NODE_XFER_REC_SIZE);
        reserved += ext[i].len;
    }
    node_xfer_rec_encode(NODE_XFER_SYNC, next, 0, 0, c->pre + next * NODE_XFER_REC_SIZE);
    free(ext);
    b = uv_buf_init((char *)c->pre, (unsigned)((next + 1) * NODE_XFER_REC_SIZE));
    if (src_write(m, &b, 1) != 0) {
        mig_abort(m, "cannot write to the transfer connection");
        return;
    }
    mig_set_state(m, S_PREPARING);
    arm_deadline(m, c->n->cfg.transfer_timeout_ms);
    log_debug(COMP, "migration=%" PRId64 " reserving %" PRIu64 " bytes in %zu ranges", m->id,
              reserved, next);
}

static int parse_token(const char *s, uint64_t *ret)
{
    if (!s || strlen(s) != 16)
        return -EINVAL;
    char *end;
    errno = 0;
    unsigned long long v = strtoull(s, &end, 16);
    if (errno || *end)
        return -EINVAL;
    *ret = v;
    return 0;
}

/* precopy is committed: connect to the destination and run the transfer. */
static void src_start(struct node_migration *m, json_t *info)
{
    struct node *n = m->n;
    const char *transfer = json_string_value(json_object_get(info, "transfer"));
    const char *token = json_string_value(json_object_get(info, "token"));
    char host[256];
    uint16_t port;
    struct sockaddr_storage ss;
    if (!transfer || strlen(transfer) >= sizeof(m->transfer) ||
        node_split_hostport(transfer, host, sizeof(host), &port) != 0 ||
        (uv_ip4_addr(host, port, (struct sockaddr_in *)&ss) != 0 &&
         uv_ip6_addr(host, port, (struct sockaddr_in6 *)&ss) != 0)) {
        mig_abort(m, "the destination published no usable transfer address");
        return;
    }
    if (parse_token(token, &m->token) != 0) {
        mig_abort(m, "the destination published no usable token");
        return;
    }
    snprintf(m->transfer, sizeof(m->transfer), "%s", transfer);

    struct node_instance *inst = node_inst_find(n, m->endpoint);
    if (!inst || inst->state != INST_SERVING || !inst->ctl || inst->memfd < 0) {
        mig_abort(m, "no serving instance of %s on this node%s", m->endpoint,
                  inst && inst->memfd < 0 ? " with a readable arena" : "");
        return;
    }
    if (inst->reported_gen != inst->generation) {
        mig_abort(m, "the instance's generation %" PRIu64 " is not yet in the directory",
                  inst->generation);
        return;
    }
    m->inst_serial = inst->serial;
    m->generation = inst->generation;
    m->arena_addr = inst->arena_addr;
    m->arena_size = inst->arena_size;
    m->memfd = dup(inst->memfd);
    if (m->memfd < 0) {
        mig_abort(m, "dup: %s", strerror(errno));
        return;
    }
    fcntl(m->memfd, F_SETFD, FD_CLOEXEC);
    /* Not MAP_POPULATE: reading a hole of a memfd through a mapping
     * allocates it. Round 0's scan faults in the data pages (on the pool). */
    void *map = mmap(NULL, m->arena_size, PROT_READ, MAP_SHARED, m->memfd, 0);
    if (map == MAP_FAILED) {
        mig_abort(m, "cannot map the arena: %s", strerror(errno));
        return;
    }
    m->map = map;

    struct node_xfer_conn *c = xc_new(n);
    c->outgoing = true;
    c->mig_serial = m->serial;
    snprintf(c->peer, sizeof(c->peer), "%s", transfer);
    m->conn = c;
    c->connect_req.data = c;
    mig_set_state(m, S_CONNECTING);
    arm_deadline(m, XFER_CONNECT_TIMEOUT_MS);
    int rv = uv_tcp_connect(&c->connect_req, &c->tcp, (struct sockaddr *)&ss, src_connected);
    if (rv != 0) {
        m->conn = NULL;
        xc_close(c);
        mig_abort(m, "cannot connect to %s: %s", transfer, uv_strerror(rv));
        return;
    }
    log_info(COMP, "migration=%" PRId64 " endpoint=%s role=source phase=precopy to=%s "
                   "transfer=%s gen=%" PRIu64,
             m->id, m->endpoint, m->peer, transfer, m->generation);
}

static void moved_answered(struct node *n, int err, struct node_ctl_msg *reply, uint64_t cookie)
{
    (void)reply;
    struct node_instance *inst = node_inst_by_serial(n, cookie);
    if (!inst)
        return;
    if (err != 0) {
        /* It cannot redirect its clients; the directory does. Stop it. */
        log_warn(COMP, "endpoint=%s moved refused: %s; stopping the old instance",
                 inst->endpoint, dvs_err_name(err));
        inst->state = INST_SERVING; /* so that stop applies */
        node_inst_stop(inst, "moved away");
    }
}

static void retry_committed_cb(uv_timer_t *t)
{
    struct node_migration *m = t->data;
    if (!m->dead && !m->call_busy)
        src_finish_committed(m);
}

static void src_endpoint_read(struct node *n, const struct node_call_result *res,
                              uint64_t cookie)
{
    struct node_migration *m = mig_by_serial(n, cookie);
    if (!m)
        return;
    m->call_busy = false;
    struct node_instance *inst = node_inst_by_serial(n, m->inst_serial);
    const char *addr = res->rv == 0 && res->status == 200
                           ? json_string_value(json_object_get(res->body, "address"))
                           : NULL;
    json_int_t gen = res->rv == 0 && res->status == 200
                         ? json_integer_value(json_object_get(res->body, "generation"))
                         : 0;
    if (!addr || gen <= 0 || (uint64_t)gen <= m->generation) {
        if (res->rv == DVS_ESHUTDOWN)
            return;
        /* Try again: the old instance should redirect its clients. */
        if (++m->moved_attempts < 10) {
            uv_timer_start(&m->retry_timer, retry_committed_cb, RETRY_MS, 0);
            return;
        }
        addr = NULL;
    }
    int64_t total = now_mono_ms() - m->t_start_ms;
    if (inst && inst->ctl && addr) {
        char args[300];
        snprintf(args, sizeof(args), "generation=%" PRIu64 " address=%s linger_ms=%" PRId64,
                 (uint64_t)gen, addr, n->cfg.linger_ms);
        inst->state = INST_MOVED;
        if (node_ctl_request(inst->ctl, "moved", args, CTL_TIMEOUT_MS, moved_answered,
                             inst->serial) != 0)
            node_inst_stop(inst, "moved away");
    } else if (inst) {
        inst->state = INST_SERVING;
        node_inst_stop(inst, "moved away");
    }
    mig_metrics(m, true, m->t_frozen_ms > 0 ? now_mono_ms() - m->t_frozen_ms : -1);
    log_info(COMP, "migration=%" PRId64 " endpoint=%s role=source phase=committed to=%s "
                   "gen=%" PRId64 " address=%s total_ms=%" PRId64 " frozen_ms=%" PRId64,
             m->id, m->endpoint, m->peer, (int64_t)gen, addr ? addr : "?", total,
             now_mono_ms() - m->t_frozen_ms);
    mig_destroy(m);
}

/* The commit is in the directory (docs/migration.md step 5): release the
 * old instance as moved, with the new generation and address. */
static void src_finish_committed(struct node_migration *m)
{
    if (m->dead)
        return;
    src_untrack(m);
    if (m->conn) {
        struct node_xfer_conn *c = m->conn;
        m->conn = NULL;
        xc_close(c);
    }
    uv_timer_stop(&m->timer);
    mig_set_state(m, M_RESOLVING);
    char path[128];
    snprintf(path, sizeof(path), "/v1/endpoints/%s?consistent", m->endpoint);
    m->call_busy = true;
    node_call(m->n, "GET", path, NULL, src_endpoint_read, m->serial);
}

/* ------------------------------------------------------------------------ */
/* Orders                                                                    */
/* ------------------------------------------------------------------------ */

static void reconcile_one(struct node *n, json_t *mj)
{
    int64_t id = (int64_t)json_integer_value(json_object_get(mj, "id"));
    const char *ep = json_string_value(json_object_get(mj, "endpoint"));
    const char *src = json_string_value(json_object_get(mj, "source"));
    const char *dst = json_string_value(json_object_get(mj, "destination"));
    const char *phase = json_string_value(json_object_get(mj, "phase"));
    if (id <= 0 || !ep || !src || !dst || !phase || strlen(ep) > DVS_MAX_NAME) {
        log_warn(COMP, "orders hold a malformed migration; ignored");
        return;
    }
    bool me_src = strcmp(src, n->cfg.id) == 0;
    bool me_dst = strcmp(dst, n->cfg.id) == 0;
    if (!me_src && !me_dst)
        return;
    struct node_migration *m = mig_find(n, id);
    if (m) {
        m->seen = true;
        if (m->is_source && m->state == S_PLANNED && strcmp(phase, "planned") != 0 &&
            !m->abort_wanted) {
            if (strcmp(phase, "precopy") == 0)
                src_start(m, json_object_get(mj, "info"));
            else
                mig_abort(m, "the migration went to %s without this source", phase);
        }
        return;
    }
    if (n->stopping)
        return;
    if (me_dst) {
        if (strcmp(phase, "planned") == 0) {
            dst_new(n, id, mj, ep, src);
        } else {
            /* Active but unknown here: this agent restarted mid-migration and
             * lost the stream. Only an abort can end it cleanly. */
            m = mig_new(n, id, mj, ep, src, false);
            m->seen = true;
            mig_abort(m, "the destination agent restarted during the migration");
        }
        if ((m = mig_find(n, id)) != NULL)
            m->seen = true;
        return;
    }
    m = mig_new(n, id, mj, ep, dst, true);
    m->seen = true;
    struct node_instance *inst = node_inst_find(n, ep);
    if (inst)
        m->inst_serial = inst->serial;
    if (strcmp(phase, "planned") == 0) {
        mig_set_state(m, S_PLANNED);
        log_info(COMP, "migration=%" PRId64 " endpoint=%s role=source phase=planned to=%s", id,
                 ep, dst);
    } else if (strcmp(phase, "precopy") == 0) {
        src_start(m, json_object_get(mj, "info"));
    } else {
        /* frozen, unknown here: restarted mid-migration. The instance (if
         * adopted frozen) is unfrozen once the abort is committed. */
        if (inst && inst->state == INST_FROZEN)
            m->freeze_sent = true;
        mig_abort(m, "the source agent restarted during the migration");
    }
}

void node_mig_reconcile(struct node *n, json_t *orders)
{
    for (struct node_migration *m = n->migrations; m; m = m->next)
        m->seen = false;
    json_t *migs = json_object_get(orders, "migrations");
    size_t i;
    json_t *mj;
    json_array_foreach(migs, i, mj) reconcile_one(n, mj);

    /* Migrations that left the orders are final: learn how they ended. */
    struct node_migration *next;
    for (struct node_migration *m = n->migrations; m; m = next) {
        next = m->next;
        if (m->seen || m->dead || m->vanished)
            continue;
        m->vanished = true;
        log_debug(COMP, "migration=%" PRId64 " left the orders (state %s)", m->id,
                  state_names[m->state]);
        if (m->state == D_STARTING)
            continue; /* committed, and we know it: "start" is on its way */
        if (!m->call_busy)
            mig_resolve(m);
        else
            uv_timer_start(&m->retry_timer, retry_resolve_cb, RETRY_MS, 0);
    }
}

/* ------------------------------------------------------------------------ */
/* Shut-down                                                                 */
/* ------------------------------------------------------------------------ */

void node_mig_shutdown(struct node *n)
{
    struct node_migration *next;
    for (struct node_migration *m = n->migrations; m; m = next) {
        next = m->next;
        if (m->state == D_STARTING || m->state == M_RESOLVING || m->abort_wanted)
            continue;
        mig_abort(m, "the agent on %s is shutting down", n->cfg.id);
    }
    if (n->xfer_open) {
        uv_close((uv_handle_t *)&n->xfer_listener, NULL);
        n->xfer_open = false;
    }
}

void node_mig_close_all(struct node *n)
{
    while (n->migrations)
        mig_destroy(n->migrations);
    while (n->xfer_conns)
        xc_close(n->xfer_conns);
    if (n->xfer_open) {
        uv_close((uv_handle_t *)&n->xfer_listener, NULL);
        n->xfer_open = false;
    }
}
