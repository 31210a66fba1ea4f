/*
 * dvs-manager serve: one member of the Raft-replicated manager (DESIGN.md §3).
 *
 * Start-up and shutdown follow the order RAFT.md gives. The daemon's moving
 * parts, all on one libuv loop:
 *
 *   - Raft (libuv backend, TCP transport) with the FSM of fsm.c;
 *   - proposals: REST handlers call mgr_propose(); proposals made during one
 *     loop iteration are batched into a single raft_apply (RAFT.md figures:
 *     64 buffers per apply commit ~3x more per second than 64 applies);
 *   - a leadership poll once per loop iteration (libraft 0.15 has no
 *     state-change callback, RAFT.md item 9) that issues the post-election
 *     barrier (item 10) and starts or stops the leader's duties;
 *   - the HTTP server (api/http.c) with the routes of rest.c;
 *   - an announce timer: a member makes sure the directory knows its HTTP
 *     address (so followers can redirect writes to the leader), and a member
 *     started with --join asks the cluster to add it.
 */
#include <errno.h>
#include <fcntl.h>
#include <gnutls/gnutls.h>
#include <signal.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "api/auth.h"
#include "api/client.h"
#include "common/log.h"
#include "common/opts.h"
#include "common/util.h"
#include "dvs.h"
#include "manager/daemon.h"

#define COMP "manager"

/* At most this many commands go into one raft_apply. */
#define MGR_BATCH_MAX 256
/* Proposals queued but not yet handed to raft; beyond this, 503. */
#define MGR_QUEUE_MAX 65536

/* ------------------------------------------------------------------------ */
/* Options (STYLE.md 15: one table drives flags, config file, --help).       */
/* ------------------------------------------------------------------------ */

#define OFF(f) offsetof(struct mgr_settings, f)

static const struct opt_def serve_opts[] = {
    {"id", OPT_STRING, NULL, 0, 0, OFF(id), "ID",
     "this member's id, e.g. m1 ([a-z0-9_.-], 1-63 chars)", true, false},
    {"data-dir", OPT_STRING, NULL, 0, 0, OFF(data_dir), "DIR",
     "directory for the Raft log and snapshots (created if missing)", true, false},
    {"raft-addr", OPT_RAFTADDR, NULL, 0, 0, OFF(raft_addr), "A.B.C.D:PORT",
     "address for Raft traffic (IPv4; keep it on a private network: Raft has no auth)",
     true, false},
    {"http-addr", OPT_HOSTPORT, "127.0.0.1:7001", 0, 0, OFF(http_addr), "HOST:PORT",
     "address of the REST API", false, false},
    {"bootstrap", OPT_STRING, NULL, 0, 0, OFF(bootstrap), "ID=A.B.C.D:PORT,...",
     "the initial members (used on the first start only; must include this member)",
     false, false},
    {"join", OPT_STRING, NULL, 0, 0, OFF(join), "URL[,URL]",
     "join a running cluster through one of its members' REST API", false, false},
    {"config", OPT_STRING, NULL, 0, 0, OFF(config), "FILE",
     "read options from FILE (name = value lines); flags override it", false, true},
    {"election-timeout", OPT_DURATION, "300ms", 50, 60000, OFF(election_timeout_ms),
     "DURATION", "Raft election timeout (pre-vote is always on)", false, false},
    {"heartbeat-timeout", OPT_DURATION, "30ms", 5, 10000, OFF(heartbeat_timeout_ms),
     "DURATION", "Raft heartbeat interval; keep well below the election timeout",
     false, false},
    {"snapshot-threshold", OPT_INT, "16384", 16, 100000000, OFF(snapshot_threshold), "N",
     "take a snapshot every N log entries (RAFT.md item 7)", false, false},
    {"snapshot-trailing", OPT_INT, "4096", 0, 100000000, OFF(snapshot_trailing), "N",
     "log entries kept behind a snapshot", false, false},
    {"node-ttl", OPT_DURATION, "10s", 500, 3600000, OFF(node_ttl_ms), "DURATION",
     "a node without heartbeats for this long is marked down", false, false},
    {"load-summary-interval", OPT_DURATION, "5s", 100, 3600000, OFF(load_summary_ms),
     "DURATION", "how often the leader writes the compact load summary to the log",
     false, false},
    {"leader-tick", OPT_DURATION, "500ms", 10, 60000, OFF(leader_tick_ms), "DURATION",
     "how often the leader checks heartbeat deadlines", false, false},
    {"migration-timeout", OPT_DURATION, "60s", 1000, 86400000, OFF(migration_timeout_ms),
     "DURATION", "a migration that reports no progress for this long is aborted",
     false, false},
    {"max-body", OPT_SIZE, "64K", 1024, 16777216, OFF(max_body), "SIZE",
     "largest accepted HTTP request body", false, false},
    {"max-wait", OPT_DURATION, "10m", 1000, 3600000, OFF(max_wait_ms), "DURATION",
     "upper bound on a blocking query's wait", false, false},
    {"events-retention", OPT_INT, "10000", 1, 1000000, OFF(events_retention), "N",
     "events kept in the replicated event log (GET /v1/events); the leader writes its "
     "value into the log, so the leader's setting wins",
     false, false},
    {"auto-recovery", OPT_BOOL, "false", 0, 0, OFF(auto_recovery), NULL,
     "let libraft drop corrupt log tail segments at start (RAFT.md item 13); off "
     "means refuse to start and say why",
     false, false},
    {"allow-wildcard-raft", OPT_BOOL, "false", 0, 0, OFF(allow_wildcard), NULL,
     "allow --raft-addr 0.0.0.0 (Raft traffic is not authenticated)", false, false},
    /* Security (docs/security.md): tokens come from files, never from flags,
     * so that they do not show in ps(1). */
    {"management-token-file", OPT_STRING, NULL, 0, 0, OFF(management_token_file), "FILE",
     "file holding the management token, which every change needs; this member also "
     "sends it to the others (--join, announcing its address)",
     false, false},
    {"read-token-file", OPT_STRING, NULL, 0, 0, OFF(read_token_file), "FILE",
     "file holding the read token: when set, reads need it (or the management or agent "
     "token)",
     false, false},
    {"agent-token-file", OPT_STRING, NULL, 0, 0, OFF(agent_token_file), "FILE",
     "file holding the agent token: node registration, heartbeats, orders and reports",
     false, false},
    {"insecure-open", OPT_BOOL, "false", 0, 0, OFF(insecure_open), NULL,
     "serve the REST API without tokens on a non-loopback --http-addr (anyone who can "
     "reach it can change the cluster)",
     false, false},
    {"tls-cert", OPT_STRING, NULL, 0, 0, OFF(tls_cert), "FILE",
     "serve the REST API over HTTPS with this PEM certificate (chain); needs --tls-key",
     false, false},
    {"tls-key", OPT_STRING, NULL, 0, 0, OFF(tls_key), "FILE",
     "the PEM private key of --tls-cert", false, false},
    {"tls-ca", OPT_STRING, NULL, 0, 0, OFF(tls_ca), "FILE",
     "PEM CA certificates to verify the other members' HTTPS certificates with "
     "(default: the system's CA store)",
     false, false},
    {"log-level", OPT_LOGLEVEL, "info", 0, 0, OFF(log_level), "LEVEL",
     "debug, info, warn or error", false, false},
    /* The scheduler (DESIGN.md §6); its policy settings follow as --sched-* options
     * generated from the scheduler's own table (sched_glue.c). */
    {"sched-interval", OPT_DURATION, "10s", 100, 3600000, OFF(sched_interval_ms), "DURATION",
     "how often the leader runs the scheduler (and at most once a second after changes)",
     false, false},
    {"automation", OPT_STRING, "automatic", 0, 0, OFF(automation), "LEVEL",
     "cluster-wide cap on the automatic policies: off, recommend (plan only) or automatic; "
     "drains always run",
     false, false},
    {"power-off-cmd", OPT_STRING, NULL, 0, 0, OFF(power_off_cmd), "COMMAND",
     "run by the leader (/bin/sh -c) to power a node off; %n = node id, %a = its address, "
     "%h = its host",
     false, false},
    {"power-on-cmd", OPT_STRING, NULL, 0, 0, OFF(power_on_cmd), "COMMAND",
     "run by the leader (/bin/sh -c) to power a standby node on; same substitutions",
     false, false},
    {"power-hook-timeout", OPT_DURATION, "30s", 1000, 3600000, OFF(power_hook_timeout_ms),
     "DURATION", "a power hook still running after this is killed and counts as failed",
     false, false},
    {"drain-deadline", OPT_DURATION, "1h", 0, 604800000, OFF(drain_deadline_ms), "DURATION",
     "default deadline of a node drain (0 = none)", false, false},
    {NULL},
};

static void serve_usage(FILE *out)
{
    fprintf(out,
            "Usage: dvs-manager serve --id ID --data-dir DIR --raft-addr A.B.C.D:PORT\n"
            "                         [--http-addr HOST:PORT]\n"
            "                         (--bootstrap ID=A.B.C.D:PORT,... | --join URL)\n"
            "                         [--config FILE] [options]\n\n"
            "Run one member of the Raft-replicated DVS manager.\n\n"
            "On the first start a member needs --bootstrap (all initial members) or\n"
            "--join (an existing member's REST URL). Later starts reuse the state in\n"
            "--data-dir; --bootstrap is then ignored.\n\n"
            "'dvs-manager serve --print-config [options]' prints a commented config\n"
            "file with every option's default (and the given options set).\n\n"
            "Options (also accepted in the --config file as \"name = value\"):\n");
    opts_usage(mgr_sched_options(serve_opts), out);
}

raft_id mgr_raft_id(const char *id)
{
    uint64_t h = 1469598103934665603ull;
    for (const unsigned char *p = (const unsigned char *)id; *p; p++) {
        h ^= *p;
        h *= 1099511628211ull;
    }
    return h ? h : 1;
}

/* ------------------------------------------------------------------------ */
/* Proposals                                                                  */
/* ------------------------------------------------------------------------ */

const double mgr_commit_bucket_le[MGR_COMMIT_BUCKETS] = {
    0.0005, 0.001, 0.002, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 5.0,
};

const double mgr_apply_bucket_le[MGR_APPLY_BUCKETS] = {
    0.00001, 0.000025, 0.00005, 0.0001, 0.00025, 0.0005,
    0.001,   0.0025,   0.005,   0.01,   0.025,   0.1,
};

/* The FSM's apply, timed (the histogram dvs_fsm_apply_seconds). */
static int timed_apply(struct raft_fsm *rfsm, const struct raft_buffer *buf, void **result)
{
    struct mgr *m = (struct mgr *)((char *)rfsm - offsetof(struct mgr, timed_fsm));
    struct raft_fsm *inner = mgr_fsm_raft(m->fsm);
    uint64_t t0 = uv_hrtime();
    int rv = inner->apply(inner, buf, result);
    double secs = (double)(uv_hrtime() - t0) / 1e9;
    for (unsigned i = 0; i < MGR_APPLY_BUCKETS; i++)
        if (secs <= mgr_apply_bucket_le[i])
            m->apply_hist[i]++;
    m->apply_count++;
    m->apply_sum_s += secs;
    return rv;
}

struct mgr_proposal {
    uint64_t request_id;
    uint64_t queued_ns;
    void *buf; /* raft_malloc'd encoded command, until handed to raft */
    size_t len;
    mgr_proposal_cb cb;
    void *data;
    struct mgr_proposal *next;  /* queue link */
    struct mgr_proposal *hnext; /* inflight hash chain */
    struct mgr_proposal_batch *batch;
    bool done;
};

struct mgr_proposal_batch {
    struct raft_apply req;
    struct mgr *m;
    unsigned n;
    unsigned pending; /* proposals not yet completed */
    bool raft_done;   /* raft's callback has run */
    struct mgr_proposal *props[];
};

static unsigned inflight_slot(const struct mgr *m, uint64_t id)
{
    return (unsigned)((id * 0x9E3779B97F4A7C15ull) >> 40) & (m->inflight_cap - 1);
}

static void inflight_add(struct mgr *m, struct mgr_proposal *p)
{
    unsigned s = inflight_slot(m, p->request_id);
    p->hnext = m->inflight[s];
    m->inflight[s] = p;
    m->inflight_len++;
}

static struct mgr_proposal *inflight_take(struct mgr *m, uint64_t id)
{
    struct mgr_proposal **pp = &m->inflight[inflight_slot(m, id)];
    for (; *pp; pp = &(*pp)->hnext) {
        if ((*pp)->request_id == id) {
            struct mgr_proposal *p = *pp;
            *pp = p->hnext;
            p->hnext = NULL;
            m->inflight_len--;
            return p;
        }
    }
    return NULL;
}

static void batch_release(struct mgr_proposal_batch *b)
{
    if (b->raft_done && b->pending == 0) {
        for (unsigned i = 0; i < b->n; i++)
            free(b->props[i]);
        free(b);
    }
}

/* Complete a proposal exactly once. */
static void proposal_finish(struct mgr *m, struct mgr_proposal *p, int status,
                            struct mgr_fsm_result *res)
{
    if (p->done)
        return;
    p->done = true;
    if (status == 0) {
        double secs = (double)(now_mono_ns() - p->queued_ns) / 1e9;
        for (unsigned i = 0; i < MGR_COMMIT_BUCKETS; i++)
            if (secs <= mgr_commit_bucket_le[i])
                m->commit_hist[i]++;
        m->commit_count++;
        m->commit_sum_s += secs;
    } else {
        m->proposals_failed++;
    }
    struct mgr_fsm_result none = {0};
    if (!res) {
        none.code = status;
        snprintf(none.msg, sizeof(none.msg), "%s", dvs_strerror(status));
        res = &none;
    }
    p->cb(m, status, res, p->data);
    if (p->batch) {
        p->batch->pending--;
        batch_release(p->batch);
    } else {
        raft_free(p->buf);
        free(p);
    }
}

/* FSM result callback: route the result to the proposal that asked for it. */
static void on_fsm_result(void *data, uint64_t request_id, struct mgr_fsm_result *res)
{
    struct mgr *m = data;
    if (m->inflight_len == 0)
        return;
    struct mgr_proposal *p = inflight_take(m, request_id);
    if (p)
        proposal_finish(m, p, 0, res);
}

static void on_fsm_change(void *data, unsigned tables, uint64_t index)
{
    struct mgr *m = data;
    mgr_watches_notify(m, tables, index);
    mgr_sched_notify(m, tables);
}

static int raft_status_to_dvs(int status)
{
    switch (status) {
    case 0:
        return 0;
    case RAFT_NOTLEADER:
        return DVS_ENOTLEADER;
    case RAFT_LEADERSHIPLOST:
        return DVS_EUNKNOWNOUTCOME;
    case RAFT_SHUTDOWN:
        return DVS_ESHUTDOWN;
    case RAFT_NOMEM:
        return -ENOMEM;
    case RAFT_TOOBIG:
        return DVS_ETOOBIG;
    default:
        return DVS_EINTERNAL;
    }
}

/*
 * raft's callback for a batch. libraft 0.15 fires it when the batch's first
 * entry is applied, so proposals complete individually through the FSM result
 * callback instead; here only failures matter: the entries of a failed batch
 * that have no result yet get the failure (for RAFT_LEADERSHIPLOST the
 * outcome is unknown: they may still commit, RAFT.md item 3).
 */
static void batch_applied(struct raft_apply *req, int status, void *result)
{
    struct mgr_proposal_batch *b = req->data;
    struct mgr *m = b->m;
    (void)result;
    if (status == 0 && b->pending > 0)
        log_debug(COMP, "raft completed a batch of %u with %u entries not yet applied", b->n,
                  b->pending);
    if (status != 0) {
        int err = raft_status_to_dvs(status);
        log_warn(COMP, "batch of %u commands failed: %s", b->n, raft_strerror(status));
        for (unsigned i = 0; i < b->n; i++) {
            struct mgr_proposal *p = b->props[i];
            if (!p->done && inflight_take(m, p->request_id) == p)
                proposal_finish(m, p, err, NULL);
        }
    }
    /* Only now: with raft_done set, the proposal_finish() above that
     * completes the last pending proposal would free the batch under this
     * loop, and the batch_release() below would free it a second time. */
    b->raft_done = true;
    batch_release(b);
}

static void fail_queue(struct mgr *m, int err)
{
    while (m->queue_head) {
        struct mgr_proposal *p = m->queue_head;
        m->queue_head = p->next;
        m->queue_len--;
        proposal_finish(m, p, err, NULL);
    }
    m->queue_tail = NULL;
}

/* When leadership is lost, nothing in flight will get a result from us. */
static void fail_inflight(struct mgr *m, int err)
{
    for (unsigned s = 0; s < m->inflight_cap && m->inflight_len > 0; s++) {
        while (m->inflight[s]) {
            struct mgr_proposal *p = m->inflight[s];
            inflight_take(m, p->request_id);
            proposal_finish(m, p, err, NULL);
        }
    }
}

/* Hand everything queued during this iteration to raft. */
static void flush_queue(struct mgr *m)
{
    while (m->queue_head) {
        if (raft_state(&m->raft) != RAFT_LEADER) {
            fail_queue(m, DVS_ENOTLEADER);
            break;
        }
        unsigned n = m->queue_len < MGR_BATCH_MAX ? m->queue_len : MGR_BATCH_MAX;
        struct mgr_proposal_batch *b =
            xmalloc(sizeof(*b) + n * sizeof(struct mgr_proposal *));
        struct raft_buffer bufs[MGR_BATCH_MAX];
        b->m = m;
        b->n = n;
        b->pending = n;
        b->raft_done = false;
        b->req.data = b;
        struct mgr_proposal *p = m->queue_head;
        for (unsigned i = 0; i < n; i++, p = p->next) {
            b->props[i] = p;
            bufs[i].base = p->buf;
            bufs[i].len = p->len;
        }
        int rv = raft_apply(&m->raft, &b->req, bufs, n, batch_applied);
        if (rv != 0) {
            /* The buffers are still ours (RAFT.md item 2): fail the proposals. */
            log_warn(COMP, "raft_apply of %u commands failed: %s", n, raft_strerror(rv));
            free(b);
            for (unsigned i = 0; i < n; i++) {
                struct mgr_proposal *q = m->queue_head;
                m->queue_head = q->next;
                m->queue_len--;
                proposal_finish(m, q, raft_status_to_dvs(rv), NULL);
            }
            if (!m->queue_head)
                m->queue_tail = NULL;
            continue;
        }
        /* Raft owns the buffers now. */
        for (unsigned i = 0; i < n; i++) {
            struct mgr_proposal *q = m->queue_head;
            m->queue_head = q->next;
            m->queue_len--;
            q->next = NULL;
            q->buf = NULL;
            q->batch = b;
            inflight_add(m, q);
        }
        if (!m->queue_head)
            m->queue_tail = NULL;
    }
    uv_check_stop(&m->flush);
    uv_idle_stop(&m->flush_idle);
}

static void flush_on_check(uv_check_t *h)
{
    flush_queue(h->data);
}

static void flush_on_idle(uv_idle_t *h)
{
    flush_queue(h->data);
}

int mgr_propose(struct mgr *m, unsigned type, json_t *body, uint64_t request_id,
                mgr_proposal_cb cb, void *data)
{
    if (m->stopping) {
        json_decref(body);
        return DVS_ESHUTDOWN;
    }
    if (raft_state(&m->raft) != RAFT_LEADER) {
        json_decref(body);
        return DVS_ENOTLEADER;
    }
    if (m->queue_len >= MGR_QUEUE_MAX) {
        json_decref(body);
        return -EAGAIN;
    }
    while (request_id == 0)
        request_id = random_u64();
    if (type == MGR_CMD_MIGRATION_CREATE) {
        /* The per-migration transfer secret (docs/security.md): drawn here,
         * by the leader, before the command enters the log, so that every
         * member's FSM stores the same one. Whoever asked for the migration
         * (a REST client, the scheduler) cannot choose it. */
        unsigned char key[32];
        char hex[65];
        random_bytes(key, sizeof(key));
        for (size_t i = 0; i < sizeof(key); i++)
            snprintf(hex + 2 * i, 3, "%02x", key[i]);
        json_object_set_new(body, "transfer_secret", json_string(hex));
        explicit_bzero(key, sizeof(key));
        explicit_bzero(hex, sizeof(hex));
    }
    struct mgr_cmd cmd = {
        .type = (uint16_t)type,
        .request_id = request_id,
        .time_ms = now_wall_ms(),
        .body = body,
    };
    void *buf;
    size_t len;
    int rv = mgr_cmd_encode(&cmd, &buf, &len);
    json_decref(body);
    if (rv != 0)
        return rv;
    /* A retry of a request id still in flight would be routed ambiguously. */
    struct mgr_proposal *dup = inflight_take(m, request_id);
    if (dup) {
        inflight_add(m, dup);
        raft_free(buf);
        return DVS_ECONFLICT;
    }

    struct mgr_proposal *p = xcalloc(1, sizeof(*p));
    p->request_id = request_id;
    p->queued_ns = now_mono_ns();
    p->buf = buf;
    p->len = len;
    p->cb = cb;
    p->data = data;
    if (m->queue_tail)
        m->queue_tail->next = p;
    else
        m->queue_head = p;
    m->queue_tail = p;
    m->queue_len++;
    if (!uv_is_active((uv_handle_t *)&m->flush)) {
        uv_check_start(&m->flush, flush_on_check);
        uv_idle_start(&m->flush_idle, flush_on_idle);
    }
    return 0;
}

/* ------------------------------------------------------------------------ */
/* Leadership                                                                 */
/* ------------------------------------------------------------------------ */

bool mgr_is_leader(const struct mgr *m)
{
    return raft_state((struct raft *)&m->raft) == RAFT_LEADER;
}

bool mgr_leader_http(struct mgr *m, char *buf, size_t len, char *ret_id, size_t idlen)
{
    raft_id id;
    const char *addr;
    raft_leader(&m->raft, &id, &addr);
    if (id == 0 || !addr)
        return false;
    char tmp_id[64];
    char http[256];
    if (!mgr_fsm_member_http_by_raft(m->fsm, addr, http, sizeof(http),
                                     ret_id ? ret_id : tmp_id, ret_id ? idlen : sizeof(tmp_id)))
        return false;
    snprintf(buf, len, "%s://%s", m->tls_cert_pem ? "https" : "http", http);
    return true;
}

static void own_member_row_cb(struct mgr *m, int status, struct mgr_fsm_result *res,
                              void *data)
{
    if (status != 0 || res->code != 0)
        log_warn(COMP, "could not record this member's addresses: %s",
                 status ? dvs_strerror(status) : res->msg);
}

/* Is the FSM's row for this member missing or out of date? */
static bool own_row_stale(struct mgr *m)
{
    json_t *me = mgr_fsm_member(m->fsm, m->cfg.id);
    bool stale = true;
    if (me) {
        const char *ra = json_string_value(json_object_get(me, "raft_addr"));
        const char *ha = json_string_value(json_object_get(me, "http_addr"));
        stale = !ra || !ha || strcmp(ra, m->cfg.raft_addr) || strcmp(ha, m->cfg.http_addr);
        json_decref(me);
    }
    return stale;
}

static void ready_barrier_cb(struct raft_barrier *req, int status)
{
    struct mgr *m = req->data;
    m->ready_barrier_pending = false;
    if (status != 0 || raft_state(&m->raft) != RAFT_LEADER || m->stopping)
        return;
    m->leader_ready = true;
    log_info(COMP, "leader ready term=%llu index=%llu", (unsigned long long)m->raft.current_term,
             (unsigned long long)mgr_fsm_index(m->fsm));
    if (own_row_stale(m)) {
        json_t *body = json_pack("{s:s,s:s,s:s}", "id", m->cfg.id, "raft_addr",
                                 m->cfg.raft_addr, "http_addr", m->cfg.http_addr);
        int rv = mgr_propose(m, MGR_CMD_MEMBER_SET, body, 0, own_member_row_cb, NULL);
        if (rv)
            log_warn(COMP, "could not propose own member row: %s", dvs_strerror(rv));
    }
    mgr_leader_start(m);
}

static const char *state_name(unsigned short s)
{
    switch (s) {
    case RAFT_FOLLOWER:
        return "follower";
    case RAFT_CANDIDATE:
        return "candidate";
    case RAFT_LEADER:
        return "leader";
    default:
        return "unavailable";
    }
}

/* Commit a barrier as a new leader before serving anything that depends on
 * the log (0.15 appends no no-op on election, RAFT.md item 10). Retried on
 * every poll until one succeeds in the current leadership. */
static void ensure_ready_barrier(struct mgr *m)
{
    if (m->leader_ready || m->ready_barrier_pending || m->stopping)
        return;
    m->ready_barrier.data = m;
    int rv = raft_barrier(&m->raft, &m->ready_barrier, ready_barrier_cb);
    if (rv == 0)
        m->ready_barrier_pending = true;
    else
        log_warn(COMP, "post-election barrier failed: %s", raft_strerror(rv));
}

static void poll_state(uv_prepare_t *h)
{
    struct mgr *m = h->data;
    unsigned short st = raft_state(&m->raft);
    if (st == RAFT_LEADER)
        ensure_ready_barrier(m);
    if (st == m->last_state && m->raft.current_term == m->last_term)
        return;
    unsigned short was = m->last_state;
    m->last_state = st;
    m->last_term = m->raft.current_term;
    if (st != was)
        log_info(COMP, "raft state %s -> %s term=%llu", state_name(was), state_name(st),
                 (unsigned long long)m->raft.current_term);
    if (was == RAFT_LEADER && st != RAFT_LEADER) {
        m->leader_ready = false;
        mgr_leader_stop(m);
        fail_queue(m, DVS_ENOTLEADER);
        fail_inflight(m, DVS_EUNKNOWNOUTCOME);
    }
}

/* ------------------------------------------------------------------------ */
/* Announce / join: runs api_client (blocking libcurl) on the thread pool.   */
/* ------------------------------------------------------------------------ */

static void announce_work(uv_work_t *w)
{
    struct mgr *m = w->data;
    char err[512];
    struct api_client *c = NULL;
    m->announce_rc = api_client_create(m->announce_target, &c, err, sizeof(err));
    if (m->announce_rc) {
        log_warn(COMP, "announcing this member to %s: %s", m->announce_target, err);
        return;
    }
    /* Adding a member is a change: it needs the management token. */
    if ((m->announce_rc = api_client_set_token(c, m->tokens.management)) != 0 ||
        (m->announce_rc = api_client_set_ca_file(c, m->cfg.tls_ca)) != 0) {
        log_warn(COMP, "announcing this member: cannot set up the client: %s",
                 dvs_strerror(m->announce_rc));
        api_client_destroy(c);
        return;
    }
    json_t *body = json_pack("{s:s,s:s,s:s}", "id", m->cfg.id, "raft_addr",
                             m->cfg.raft_addr, "http_addr", m->cfg.http_addr);
    struct api_response r = {0};
    m->announce_rc = api_client_request(c, "POST", "/v1/members", body, 5000, &r, err,
                                        sizeof(err));
    if (m->announce_rc == 0 && (r.status < 200 || r.status >= 300)) {
        const char *e = r.body ? json_string_value(json_object_get(r.body, "error")) : NULL;
        snprintf(err, sizeof(err), "HTTP %ld: %s", r.status, e ? e : "(no message)");
        m->announce_rc = DVS_ECONFLICT;
    }
    if (m->announce_rc)
        log_warn(COMP, "announcing this member to %s failed: %s", m->announce_target, err);
    api_response_clear(&r);
    json_decref(body);
    api_client_destroy(c);
}

static void announce_done(uv_work_t *w, int status)
{
    struct mgr *m = w->data;
    m->announce_busy = false;
    if (status == 0 && m->announce_rc == 0) {
        log_info(COMP, "announced this member to %s", m->announce_target);
        if (m->cfg.join) {
            free(m->cfg.join);
            m->cfg.join = NULL; /* joined: from now on only keep the row fresh */
        }
    }
}

static void announce_tick(uv_timer_t *t)
{
    struct mgr *m = t->data;
    if (m->announce_busy || m->stopping || mgr_is_leader(m))
        return;
    if (m->cfg.join) {
        /* Not yet in a configuration (or not yet heard from a leader). */
        snprintf(m->announce_target, sizeof(m->announce_target), "%s", m->cfg.join);
    } else {
        if (!own_row_stale(m))
            return;
        if (!mgr_leader_http(m, m->announce_target, sizeof(m->announce_target), NULL, 0))
            return;
    }
    m->announce_busy = true;
    m->announce_work.data = m;
    if (uv_queue_work(&m->loop, &m->announce_work, announce_work, announce_done) != 0)
        m->announce_busy = false;
}

/* ------------------------------------------------------------------------ */
/* Start-up and shutdown                                                     */
/* ------------------------------------------------------------------------ */

static int parse_bootstrap(struct mgr *m, struct raft_configuration *conf, char *err,
                           size_t errlen)
{
    char *list = xstrdup(m->cfg.bootstrap);
    char *save = NULL;
    bool found_self = false;
    int rv = 0;
    for (char *item = strtok_r(list, ",", &save); item; item = strtok_r(NULL, ",", &save)) {
        char *eq = strchr(item, '=');
        char host[64];
        uint16_t port;
        if (!eq) {
            snprintf(err, errlen, "--bootstrap: \"%s\" is not ID=A.B.C.D:PORT", item);
            rv = -EINVAL;
            break;
        }
        *eq = '\0';
        if (!mgr_valid_name(item) ||
            parse_hostport(eq + 1, true, host, sizeof(host), &port) != 0) {
            snprintf(err, errlen,
                     "--bootstrap: \"%s=%s\" is not ID=A.B.C.D:PORT (ids: [a-z0-9_.-], "
                     "addresses: IPv4 dotted quad)",
                     item, eq + 1);
            rv = -EINVAL;
            break;
        }
        if (strcmp(item, m->cfg.id) == 0) {
            found_self = true;
            if (strcmp(eq + 1, m->cfg.raft_addr) != 0) {
                snprintf(err, errlen,
                         "--bootstrap gives %s the address %s but --raft-addr is %s", item,
                         eq + 1, m->cfg.raft_addr);
                rv = -EINVAL;
                break;
            }
        }
        rv = raft_configuration_add(conf, mgr_raft_id(item), eq + 1, RAFT_VOTER);
        if (rv != 0) {
            snprintf(err, errlen, "--bootstrap: %s: %s (duplicate id or address?)", item,
                     raft_strerror(rv));
            rv = -EINVAL;
            break;
        }
    }
    free(list);
    if (rv == 0 && !found_self) {
        snprintf(err, errlen, "--bootstrap does not include this member (%s)", m->cfg.id);
        rv = -EINVAL;
    }
    return rv;
}

static bool has_raft_state(const char *dir)
{
    char path[4096];
    struct stat st;
    snprintf(path, sizeof(path), "%s/metadata1", dir);
    if (stat(path, &st) == 0)
        return true;
    snprintf(path, sizeof(path), "%s/metadata2", dir);
    return stat(path, &st) == 0;
}

static void close_cb_noop(uv_handle_t *h)
{
    (void)h;
}

static void raft_closed(struct raft *r)
{
    struct mgr *m = r->data;
    raft_uv_close(&m->io);
    raft_uv_tcp_close(&m->transport);
    uv_close((uv_handle_t *)&m->poll, close_cb_noop);
    uv_close((uv_handle_t *)&m->flush, close_cb_noop);
    uv_close((uv_handle_t *)&m->flush_idle, close_cb_noop);
    uv_close((uv_handle_t *)&m->announce_timer, close_cb_noop);
    uv_close((uv_handle_t *)&m->sigterm, close_cb_noop);
    uv_close((uv_handle_t *)&m->sigint, close_cb_noop);
    log_info(COMP, "raft closed");
}

/* Start-up failed after raft_init: release raft's I/O, no other handle exists. */
static void raft_closed_early(struct raft *r)
{
    struct mgr *m = r->data;
    raft_uv_close(&m->io);
    raft_uv_tcp_close(&m->transport);
}

static void http_stopped(void *data)
{
    struct mgr *m = data;
    m->http = NULL;
    mgr_leader_close(m);
    mgr_sched_close(m);
    fail_queue(m, DVS_ESHUTDOWN);
    raft_close(&m->raft, raft_closed);
}

static void begin_shutdown(struct mgr *m, const char *why)
{
    if (m->stopping)
        return;
    m->stopping = true;
    log_info(COMP, "shutting down (%s)", why);
    uv_timer_stop(&m->announce_timer);
    /* Parked blocking queries get the current data rather than a 503. */
    mgr_watches_close(m);
    if (m->http)
        api_server_stop(m->http, http_stopped, m);
    else
        http_stopped(m);
}

static void on_signal(uv_signal_t *h, int signum)
{
    struct mgr *m = h->data;
    begin_shutdown(m, signum == SIGTERM ? "SIGTERM" : "SIGINT");
}

/* ------------------------------------------------------------------------ */
/* Security settings (docs/security.md)                                      */
/* ------------------------------------------------------------------------ */

/* Read a whole PEM file (at most 1 MiB) into a new NUL-terminated string. */
static int read_pem(const char *path, const char *flag, char **ret, char *err, size_t errlen)
{
    FILE *f = fopen(path, "re");
    if (!f) {
        snprintf(err, errlen, "%s %s: %s", flag, path, strerror(errno));
        return -EINVAL;
    }
    size_t cap = 1 << 20, n;
    char *buf = xmalloc(cap + 1);
    n = fread(buf, 1, cap + 1, f);
    bool bad = ferror(f) != 0;
    fclose(f);
    if (bad || n == 0 || n > cap) {
        snprintf(err, errlen, "%s %s: %s", flag, path,
                 bad ? "read error" : n == 0 ? "the file is empty" : "larger than 1 MiB");
        free(buf);
        return -EINVAL;
    }
    buf[n] = '\0';
    if (!strstr(buf, "-----BEGIN ")) {
        snprintf(err, errlen, "%s %s: not a PEM file (no \"-----BEGIN\" line)", flag, path);
        explicit_bzero(buf, n);
        free(buf);
        return -EINVAL;
    }
    *ret = buf;
    return 0;
}

/*
 * Load the certificate and key and check that GnuTLS (which libmicrohttpd
 * uses) accepts them as a pair, so that a bad file is a clear error at start
 * rather than a server that fails every handshake.
 */
static int load_tls(struct mgr *m, char *err, size_t errlen)
{
    if (!m->cfg.tls_cert && !m->cfg.tls_key)
        return 0;
    if (!m->cfg.tls_cert || !m->cfg.tls_key) {
        snprintf(err, errlen, "--tls-cert and --tls-key go together");
        return -EINVAL;
    }
    if (read_pem(m->cfg.tls_cert, "--tls-cert", &m->tls_cert_pem, err, errlen) != 0 ||
        read_pem(m->cfg.tls_key, "--tls-key", &m->tls_key_pem, err, errlen) != 0)
        return -EINVAL;
    gnutls_certificate_credentials_t cred;
    if (gnutls_certificate_allocate_credentials(&cred) != GNUTLS_E_SUCCESS) {
        snprintf(err, errlen, "out of memory checking the TLS certificate");
        return -ENOMEM;
    }
    gnutls_datum_t cert = {(unsigned char *)m->tls_cert_pem,
                           (unsigned int)strlen(m->tls_cert_pem)};
    gnutls_datum_t key = {(unsigned char *)m->tls_key_pem, (unsigned int)strlen(m->tls_key_pem)};
    int rc = gnutls_certificate_set_x509_key_mem2(cred, &cert, &key, GNUTLS_X509_FMT_PEM,
                                                  NULL, 0);
    gnutls_certificate_free_credentials(cred);
    if (rc < 0) {
        snprintf(err, errlen,
                 "--tls-cert %s / --tls-key %s: %s (both must be PEM, the key unencrypted "
                 "and matching the certificate)",
                 m->cfg.tls_cert, m->cfg.tls_key, gnutls_strerror(rc));
        return -EINVAL;
    }
    if (m->cfg.tls_ca && access(m->cfg.tls_ca, R_OK) != 0) {
        snprintf(err, errlen, "--tls-ca %s: %s", m->cfg.tls_ca, strerror(errno));
        return -EINVAL;
    }
    return 0;
}

static int load_token(const char *path, const char *flag, char *ret, char *err, size_t errlen)
{
    if (!path)
        return 0;
    char why[512];
    bool loose = false;
    if (api_token_load(path, ret, &loose, why, sizeof(why)) != 0) {
        snprintf(err, errlen, "--%s: %s", flag, why);
        return -EINVAL;
    }
    if (loose)
        log_warn(COMP, "token file %s is readable by every user; chmod 600 it", path);
    return 0;
}

static bool is_loopback_host(const char *host)
{
    return strncmp(host, "127.", 4) == 0 || strcmp(host, "localhost") == 0 ||
           strcmp(host, "::1") == 0 || strcmp(host, "[::1]") == 0;
}

/* Tokens, TLS, and the rule that an open API stays on loopback. */
static int load_security(struct mgr *m, const char *http_host, char *err, size_t errlen)
{
    struct api_tokens *t = &m->tokens;
    if (load_token(m->cfg.management_token_file, "management-token-file", t->management, err,
                   errlen) != 0 ||
        load_token(m->cfg.read_token_file, "read-token-file", t->read, err, errlen) != 0 ||
        load_token(m->cfg.agent_token_file, "agent-token-file", t->agent, err, errlen) != 0)
        return -EINVAL;
    if ((t->read[0] || t->agent[0]) && !t->management[0]) {
        snprintf(err, errlen,
                 "--read-token-file and --agent-token-file need --management-token-file "
                 "(otherwise nobody could change anything)");
        return -EINVAL;
    }
    if ((t->read[0] && api_token_equal(t->read, t->management)) ||
        (t->agent[0] && api_token_equal(t->agent, t->management)) ||
        (t->agent[0] && t->read[0] && api_token_equal(t->agent, t->read))) {
        snprintf(err, errlen, "the management, read and agent tokens must differ");
        return -EINVAL;
    }
    if (!api_tokens_enabled(t) && !is_loopback_host(http_host) && !m->cfg.insecure_open) {
        snprintf(err, errlen,
                 "refusing --http-addr %s without tokens: anyone who reaches it could "
                 "change the cluster. Give --management-token-file FILE (see "
                 "docs/security.md), bind 127.0.0.1, or pass --insecure-open",
                 m->cfg.http_addr);
        return -EINVAL;
    }
    return load_tls(m, err, errlen);
}

static int make_dir(const char *path, char *err, size_t errlen)
{
    char tmp[4096];
    snprintf(tmp, sizeof(tmp), "%s", path);
    for (char *p = tmp + 1; *p; p++) {
        if (*p == '/') {
            *p = '\0';
            if (mkdir(tmp, 0750) != 0 && errno != EEXIST)
                goto fail;
            *p = '/';
        }
    }
    if (mkdir(tmp, 0750) != 0 && errno != EEXIST)
        goto fail;
    return 0;
fail:
    snprintf(err, errlen, "cannot create data directory %.900s: %s", tmp, strerror(errno));
    return -errno;
}

int mgr_serve_main(int argc, char **argv)
{
    struct mgr *m = xcalloc(1, sizeof(*m));
    const struct opt_def *opts = mgr_sched_options(serve_opts);
    char err[1024];
    bool help;
    int rv;
    int code = 1;

    if (argc >= 1 && strcmp(argv[0], "--print-config") == 0) { /* packaging/README.md */
        rv = opts_print_config(opts, &m->cfg, argc - 1, argv + 1,
                               "Configuration of dvs-manager serve --config FILE "
                               "(dvs-manager(1))", stdout, err, sizeof(err));
        if (rv)
            fprintf(stderr, "dvs-manager serve --print-config: %s\n", err);
        code = rv ? 2 : 0;
        goto out_opts;
    }
    rv = opts_parse_argv(opts, &m->cfg, argc, argv, &help, err, sizeof(err));
    if (help) {
        serve_usage(stdout);
        code = 0;
        goto out_opts;
    }
    if (rv) {
        fprintf(stderr, "dvs-manager serve: %s\n", err);
        fprintf(stderr, "Try 'dvs-manager serve --help'.\n");
        code = 2;
        goto out_opts;
    }
    if (!mgr_valid_name(m->cfg.id)) {
        fprintf(stderr,
                "dvs-manager serve: invalid --id \"%s\": 1-63 characters of [a-z0-9_.-], "
                "starting with a letter or digit\n",
                m->cfg.id);
        code = 2;
        goto out_opts;
    }
    if (m->cfg.bootstrap && m->cfg.join) {
        fprintf(stderr, "dvs-manager serve: --bootstrap and --join exclude each other\n");
        code = 2;
        goto out_opts;
    }
    if (!m->cfg.allow_wildcard && strncmp(m->cfg.raft_addr, "0.0.0.0:", 8) == 0) {
        fprintf(stderr,
                "dvs-manager serve: refusing --raft-addr %s: Raft traffic is not "
                "authenticated; bind a private address or pass --allow-wildcard-raft\n",
                m->cfg.raft_addr);
        code = 2;
        goto out_opts;
    }
    if (mgr_sched_check_settings(&m->cfg, err, sizeof(err)) != 0) {
        fprintf(stderr, "dvs-manager serve: %s\n", err);
        code = 2;
        goto out_opts;
    }
    if (m->cfg.heartbeat_timeout_ms * 2 > m->cfg.election_timeout_ms) {
        fprintf(stderr,
                "dvs-manager serve: --heartbeat-timeout (%lldms) must be at most half of "
                "--election-timeout (%lldms)\n",
                (long long)m->cfg.heartbeat_timeout_ms, (long long)m->cfg.election_timeout_ms);
        code = 2;
        goto out_opts;
    }
    log_set_level((enum log_level)m->cfg.log_level);
    log_set_ident(m->cfg.id);
    /* libuv writes to sockets with write(2): a peer that died (a killed
     * member, a client gone) must be an EPIPE error, not a fatal signal. */
    signal(SIGPIPE, SIG_IGN);

    if (make_dir(m->cfg.data_dir, err, sizeof(err)) != 0) {
        log_error(COMP, "%s", err);
        goto out_opts;
    }
    bool restart = has_raft_state(m->cfg.data_dir);
    if (!restart && !m->cfg.bootstrap && !m->cfg.join) {
        fprintf(stderr,
                "dvs-manager serve: %s holds no Raft state: the first start needs "
                "--bootstrap ID=A.B.C.D:PORT,... or --join URL\n",
                m->cfg.data_dir);
        code = 2;
        goto out_opts;
    }
    if (restart && m->cfg.join) {
        free(m->cfg.join);
        m->cfg.join = NULL; /* already a member: the log knows the configuration */
    }

    char host[256];
    uint16_t port;
    if (parse_hostport(m->cfg.http_addr, false, host, sizeof(host), &port) != 0) {
        fprintf(stderr, "dvs-manager serve: bad --http-addr %s\n", m->cfg.http_addr);
        code = 2;
        goto out_opts;
    }
    if (load_security(m, host, err, sizeof(err)) != 0) {
        fprintf(stderr, "dvs-manager serve: %s\n", err);
        code = 2;
        goto out_opts;
    }
    snprintf(m->http_base, sizeof(m->http_base), "%s://%s", m->tls_cert_pem ? "https" : "http",
             m->cfg.http_addr);

    m->id = mgr_raft_id(m->cfg.id);
    m->inflight_cap = 4096;
    m->inflight = xcalloc(m->inflight_cap, sizeof(*m->inflight));
    if (uv_loop_init(&m->loop) != 0) {
        log_error(COMP, "uv_loop_init failed");
        goto out_inflight;
    }
    rv = mgr_fsm_open(&m->fsm);
    if (rv) {
        log_error(COMP, "cannot open the FSM database: %s", dvs_strerror(rv));
        goto out_loop;
    }
    mgr_fsm_set_callbacks(m->fsm, on_fsm_result, on_fsm_change, m);

    rv = raft_uv_tcp_init(&m->transport, &m->loop);
    if (rv) {
        log_error(COMP, "raft_uv_tcp_init: %s", raft_strerror(rv));
        goto out_fsm;
    }
    rv = raft_uv_init(&m->io, &m->loop, m->cfg.data_dir, &m->transport);
    if (rv) {
        log_error(COMP, "raft_uv_init(%s): %s (the directory must be on a filesystem "
                        "with O_DIRECT support, e.g. ext4, or tmpfs)",
                  m->cfg.data_dir, m->io.errmsg);
        goto out_tcp;
    }
    raft_uv_set_auto_recovery(&m->io, m->cfg.auto_recovery);
    /* Snapshot and restore find the FSM through data, which stays the FSM's. */
    m->timed_fsm = *mgr_fsm_raft(m->fsm);
    m->timed_fsm.apply = timed_apply;
    rv = raft_init(&m->raft, &m->io, &m->timed_fsm, m->id, m->cfg.raft_addr);
    if (rv) {
        log_error(COMP, "raft_init: %s", raft_errmsg(&m->raft));
        goto out_io;
    }
    m->raft.data = m;

    if (m->cfg.bootstrap && !restart) {
        struct raft_configuration conf;
        raft_configuration_init(&conf);
        rv = parse_bootstrap(m, &conf, err, sizeof(err));
        if (rv == 0) {
            rv = raft_bootstrap(&m->raft, &conf);
            if (rv == RAFT_CANTBOOTSTRAP)
                rv = 0;
            else if (rv)
                snprintf(err, sizeof(err), "raft_bootstrap: %s", raft_errmsg(&m->raft));
        }
        raft_configuration_close(&conf);
        if (rv) {
            fprintf(stderr, "dvs-manager serve: %s\n", err);
            code = 2;
            goto out_raft;
        }
    }
    raft_set_election_timeout(&m->raft, (unsigned)m->cfg.election_timeout_ms);
    raft_set_heartbeat_timeout(&m->raft, (unsigned)m->cfg.heartbeat_timeout_ms);
    raft_set_pre_vote(&m->raft, true);
    raft_set_snapshot_threshold(&m->raft, (unsigned)m->cfg.snapshot_threshold);
    raft_set_snapshot_trailing(&m->raft, (unsigned)m->cfg.snapshot_trailing);

    rv = raft_start(&m->raft);
    if (rv) {
        log_error(COMP, "raft_start: %s (%s)", raft_strerror(rv), raft_errmsg(&m->raft));
        goto out_raft;
    }

    struct api_server_config hc = {
        .host = host,
        .port = port,
        .max_body = (size_t)m->cfg.max_body,
        .tokens = &m->tokens,
        .tls_cert_pem = m->tls_cert_pem,
        .tls_key_pem = m->tls_key_pem,
    };
    rv = api_server_start(&m->loop, &hc, mgr_routes, m, &m->http);
    if (rv) {
        log_error(COMP, "cannot serve %s on %s: %s", m->tls_cert_pem ? "HTTPS" : "HTTP",
                  m->cfg.http_addr,
                  rv == -ENOTSUP ? "this libmicrohttpd has no TLS support"
                  : rv == -EPROTO ? "libmicrohttpd refused the TLS certificate or key"
                                  : dvs_strerror(rv));
        code = 1;
        m->stopping = true;
        raft_close(&m->raft, raft_closed_early);
        uv_run(&m->loop, UV_RUN_DEFAULT);
        goto out_fsm_only;
    }

    uv_prepare_init(&m->loop, &m->poll);
    m->poll.data = m;
    uv_prepare_start(&m->poll, poll_state);
    uv_check_init(&m->loop, &m->flush);
    m->flush.data = m;
    uv_idle_init(&m->loop, &m->flush_idle);
    m->flush_idle.data = m;
    uv_timer_init(&m->loop, &m->announce_timer);
    m->announce_timer.data = m;
    uv_timer_start(&m->announce_timer, announce_tick, 200, 1000);
    uv_signal_init(&m->loop, &m->sigterm);
    m->sigterm.data = m;
    uv_signal_start(&m->sigterm, on_signal, SIGTERM);
    uv_signal_init(&m->loop, &m->sigint);
    m->sigint.data = m;
    uv_signal_start(&m->sigint, on_signal, SIGINT);
    mgr_watches_init(m);
    mgr_leader_init(m);
    mgr_sched_init(m);

    log_info(COMP, "member %s raft=%s http=%s data=%s (%s) tls=%s tokens=%s", m->cfg.id,
             m->cfg.raft_addr, m->http_base, m->cfg.data_dir,
             restart ? "restart" : (m->cfg.join ? "joining" : "bootstrap"),
             m->tls_cert_pem ? "on" : "off",
             !api_tokens_enabled(&m->tokens) ? "none (open API)"
             : m->tokens.read[0] && m->tokens.agent[0] ? "management,read,agent"
             : m->tokens.read[0]                       ? "management,read"
             : m->tokens.agent[0]                      ? "management,agent"
                                                       : "management");
    uv_run(&m->loop, UV_RUN_DEFAULT);
    code = m->exit_code;
    goto out_fsm_only;

out_raft:
    raft_close(&m->raft, raft_closed_early);
    uv_run(&m->loop, UV_RUN_DEFAULT);
    goto out_fsm_only;
out_io:
    raft_uv_close(&m->io);
out_tcp:
    raft_uv_tcp_close(&m->transport);
    uv_run(&m->loop, UV_RUN_DEFAULT);
out_fsm_only:
out_fsm:
    mgr_fsm_close(m->fsm);
out_loop:
    uv_loop_close(&m->loop);
out_inflight:
    free(m->inflight);
out_opts:
    opts_free(opts, &m->cfg);
    explicit_bzero(&m->tokens, sizeof(m->tokens));
    if (m->tls_key_pem)
        explicit_bzero(m->tls_key_pem, strlen(m->tls_key_pem));
    free(m->tls_cert_pem);
    free(m->tls_key_pem);
    free(m);
    return code;
}
