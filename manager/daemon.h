/*
 * The dvs-manager daemon ("dvs-manager serve"): one Raft member.
 *
 * Everything runs on one libuv loop thread: Raft (libuv backend, TCP
 * transport), the FSM (fsm.c), the HTTP server (api/http.c) and the leader's
 * duties (leader.c). Only the rare outgoing HTTP calls a member makes (joining
 * a cluster, announcing its own HTTP address to the leader) run on libuv's
 * thread pool, because libcurl's easy interface blocks.
 */
#ifndef DVS_MANAGER_DAEMON_H
#define DVS_MANAGER_DAEMON_H

#include <jansson.h>
#include <raft.h>
#include <raft/uv.h>
#include <stdbool.h>
#include <stdint.h>
#include <uv.h>

#include "api/auth.h"
#include "api/http.h"
#include "manager/fsm.h"
#include "manager/sched_glue.h"

/* ARGV holds the flags after "serve". Returns the process exit code. */
int mgr_serve_main(int argc, char **argv);

/* Settings, filled from the option table (daemon.c) by flags and config file. */
struct mgr_settings {
    char *id;
    char *data_dir;
    char *raft_addr;
    char *http_addr;
    char *bootstrap;
    char *join;
    char *config;
    int64_t election_timeout_ms;
    int64_t heartbeat_timeout_ms;
    int64_t snapshot_threshold;
    int64_t snapshot_trailing;
    int64_t node_ttl_ms;
    int64_t load_summary_ms;
    int64_t leader_tick_ms;
    int64_t migration_timeout_ms;
    uint64_t max_body;
    int64_t max_wait_ms;
    int64_t events_retention; /* events kept by the FSM (proposed by the leader) */
    bool auto_recovery;
    bool allow_wildcard;
    int log_level;

    /* Security (docs/security.md). */
    char *management_token_file;
    char *read_token_file;
    char *agent_token_file;
    bool insecure_open;
    char *tls_cert;
    char *tls_key;
    char *tls_ca;

    /* The scheduler (sched_glue.c, DESIGN.md §6). */
    int64_t sched_interval_ms;
    char *automation;
    char *power_off_cmd;
    char *power_on_cmd;
    int64_t power_hook_timeout_ms;
    int64_t drain_deadline_ms;
    struct mgr_sched_slot sched[MGR_SCHED_MAX_PARAMS]; /* --sched-*, by sched_options[] index */
};

/* Upper bounds (seconds) of the FSM apply time histogram's buckets. */
#define MGR_APPLY_BUCKETS 12
extern const double mgr_apply_bucket_le[MGR_APPLY_BUCKETS];

struct mgr;
struct mgr_proposal;
struct mgr_leader; /* leader.c */
struct mgr_sched;  /* sched_glue.c */
struct mgr_watches; /* watch.c */

/*
 * A proposal's completion: STATUS is 0 when the entry was applied (then RES
 * is the FSM's result; steal res->object by setting it to NULL), or a DVS_E*
 * code when it was not (DVS_ENOTLEADER, DVS_EUNKNOWNOUTCOME after
 * RAFT_LEADERSHIPLOST: the entry may still commit, DVS_ESHUTDOWN).
 */
typedef void (*mgr_proposal_cb)(struct mgr *m, int status, struct mgr_fsm_result *res,
                                void *data);

struct mgr {
    struct mgr_settings cfg;
    uv_loop_t loop;
    raft_id id;
    struct raft raft;
    struct raft_io io;
    struct raft_uv_transport transport;
    struct mgr_fsm *fsm;
    struct api_server *http;
    char http_base[300]; /* "http://host:port" (or https://) of this member */
    struct api_tokens tokens; /* what the REST API accepts (api/auth.h) */
    char *tls_cert_pem, *tls_key_pem; /* TLS: the files' contents, or NULL */

    /* Leadership, polled once per loop iteration (RAFT.md item 9). */
    uv_prepare_t poll;
    unsigned short last_state;
    raft_term last_term;
    bool leader_ready; /* leader and its post-election barrier has completed */
    struct raft_barrier ready_barrier;
    bool ready_barrier_pending;

    /* Proposals waiting to be batched into one raft_apply (RAFT.md figures).
     * The check handle flushes after the I/O callbacks of this iteration; the
     * idle handle keeps the loop from blocking in poll when a proposal was
     * made from a timer callback (before poll), which otherwise waits for the
     * next timer, e.g. Raft's heartbeat: a measured 30 ms tail on 5% of
     * commits. */
    uv_check_t flush;
    uv_idle_t flush_idle;
    struct mgr_proposal *queue_head, *queue_tail;
    unsigned queue_len;
    /* Proposals handed to raft, by request id, to route FSM results back. */
    struct mgr_proposal **inflight;
    unsigned inflight_cap; /* power of two */
    unsigned inflight_len;

    /* Commit latency of proposals (queued -> applied on this leader), for
     * /metrics: cumulative histogram buckets in seconds (rest_metrics.c). */
    uint64_t commit_hist[16];
    uint64_t commit_count;
    double commit_sum_s;
    uint64_t proposals_failed;

    /* Time spent applying each log entry to the FSM on this member (every
     * member, leader or not), for /metrics: the FSM's raft_fsm with its
     * apply wrapped to time it. */
    struct raft_fsm timed_fsm;
    uint64_t apply_hist[MGR_APPLY_BUCKETS];
    uint64_t apply_count;
    double apply_sum_s;

    struct mgr_leader *leader;
    struct mgr_watches *watches;
    struct mgr_sched *sched;

    /* Announcing our HTTP address to the leader / joining via --join. */
    uv_timer_t announce_timer;
    bool announce_busy;
    uv_work_t announce_work;
    char announce_target[300];
    int announce_rc;

    uv_signal_t sigterm, sigint;
    bool stopping;
    int exit_code;
};

/* A deterministic 64-bit Raft id for a member id string (FNV-1a, never 0). */
raft_id mgr_raft_id(const char *id);

/*
 * Propose a command. BODY is stolen. REQUEST_ID 0 means "pick one". CB runs
 * exactly once, on the loop thread, never from inside this call. Returns 0,
 * or DVS_ENOTLEADER / DVS_ESHUTDOWN / a codec error without calling CB.
 */
int mgr_propose(struct mgr *m, unsigned type, json_t *body, uint64_t request_id,
                mgr_proposal_cb cb, void *data);

bool mgr_is_leader(const struct mgr *m);

/*
 * The leader's HTTP base URL ("http://h:p", or "https://h:p" when this member
 * serves TLS: a cluster's members all do or all don't) and id, if known. Returns false
 * when there is no leader or its HTTP address is not in the directory yet.
 */
bool mgr_leader_http(struct mgr *m, char *buf, size_t len, char *ret_id, size_t idlen);

/* Upper bounds (seconds) of the commit latency histogram's buckets. */
#define MGR_COMMIT_BUCKETS 12
extern const double mgr_commit_bucket_le[MGR_COMMIT_BUCKETS];

/* ---- rest.c ---- */
extern const struct api_route mgr_routes[];

/* ---- watch.c: blocking queries (docs/api.md) ---- */
int mgr_watches_init(struct mgr *m);
void mgr_watches_close(struct mgr *m);
/*
 * Blocking queries. A GET handler computes CURRENT, the index of what it
 * watches (a table index, or an object's modify_index), and calls this before
 * answering. If REQ asks to block (?index=N&wait=D) and CURRENT <= N, the
 * request is parked and HANDLER runs again for it when one of TABLES changes
 * past N or when D has passed; the handler then calls mgr_watch_park again,
 * which parks it anew if its own data did not change (a change elsewhere in
 * the table) and the wait has not run out. Returns true when the request was
 * parked, or answered with 400 for a malformed index/wait: the handler must
 * then return without replying.
 */
bool mgr_watch_park(struct mgr *m, struct api_req *req, unsigned tables, uint64_t current,
                    api_handler_fn handler);
void mgr_watches_notify(struct mgr *m, unsigned tables, uint64_t index);
unsigned mgr_watches_count(const struct mgr *m);

/* ---- leader.c: duties of the leader only ---- */
int mgr_leader_init(struct mgr *m);
void mgr_leader_close(struct mgr *m);
void mgr_leader_start(struct mgr *m); /* became leader and barrier done */
void mgr_leader_stop(struct mgr *m);  /* lost leadership */
/* Record a heartbeat; fills *ret with {"state","eligible"} or returns DVS_ENOTFOUND. */
int mgr_leader_heartbeat(struct mgr *m, const char *node, json_t *load, json_t **ret);
/* Seconds since the last heartbeat of NODE seen by this leader, or -1. */
int64_t mgr_leader_last_seen_ms(struct mgr *m, const char *node);

#endif
