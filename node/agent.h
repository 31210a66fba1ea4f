/*
 * dvs-node, the node agent (DESIGN.md §1, docs/migration.md).
 *
 * One process per node. Its moving parts, and the thread each runs on:
 *
 *   loop thread (libuv)   services (uv_spawn, exit callbacks, pidfds of
 *                         adopted ones), their control sockets (control.c),
 *                         the transfer port and the migrations (migrate.c),
 *                         the reconciliation of the orders (agent.c);
 *   heartbeat thread      registration, then one heartbeat per interval
 *                         with the load the loop sampled (mgr.c);
 *   orders thread         the blocking query on this node's orders; hands
 *                         each new answer to the loop through a uv_async;
 *   libuv thread pool     reports to the manager (PATCH, GET) and the image
 *                         scans of migrations, each handing its result back
 *                         to the loop in its after-work callback.
 *
 * Manager calls are blocking libcurl (api/client.h), which is why they never
 * run on the loop thread. Everything else, and every piece of state below,
 * belongs to the loop thread unless a field says otherwise.
 *
 * Objects that asynchronous work refers to (instances, migrations) are found
 * again by serial number when the work completes, never through a pointer
 * kept across the wait: the object may have gone in the meantime.
 */
#ifndef DVS_NODE_AGENT_H
#define DVS_NODE_AGENT_H

#include <jansson.h>
#include <pthread.h>
#include <stdbool.h>
#include <stdint.h>
#include <sys/types.h>
#include <uv.h>

#include "api/auth.h"
#include "dvs.h"
#include "node/ctlmsg.h"
#include "node/load.h"

struct node;
struct node_instance;
struct node_migration;
struct node_xfer_conn;

#define NODE_COMP_AGENT "agent"
#define NODE_COMP_SVC "service"
#define NODE_COMP_MIG "migration"
#define NODE_COMP_MGR "manager"

/* ------------------------------------------------------------------------ */
/* Settings (the option table is in agent.c)                                 */
/* ------------------------------------------------------------------------ */

struct node_settings {
    char *id;
    char *manager;
    char *listen;
    char *data_dir;
    char *transfer_addr;
    char *config;
    double cpu;   /* cores; 0 = measure */
    uint64_t mem; /* bytes; 0 = measure */
    int64_t heartbeat_interval_ms;
    int64_t orders_wait_ms;
    int64_t request_timeout_ms;
    int64_t start_timeout_ms;
    int64_t stop_timeout_ms;
    int64_t freeze_timeout_ms;
    int64_t transfer_timeout_ms;
    int64_t hold_ms;
    int64_t linger_ms;
    int64_t restart_backoff_ms;
    int64_t restart_backoff_max_ms;
    int64_t restart_limit;
    int64_t restart_window_ms;
    bool stop_services_on_exit;
    int log_level;
    /* Pre-copy (DESIGN.md §4, docs/migration.md). */
    char *dirty_tracking; /* auto, uffd, mprotect, none */
    int64_t downtime_budget_ms;
    int64_t precopy_max_rounds;
    uint64_t max_bandwidth; /* bytes per second; 0 = unlimited */
    char *metrics_addr; /* --metrics-addr: serve /metrics there; NULL = off */
    char *token_file; /* --token-file: the agent token (docs/security.md) */
    char *ca_file;    /* --ca-file (else $DVS_CA_FILE): CA of https:// managers */
};

/* ------------------------------------------------------------------------ */
/* Control messages (control.c; docs/control-protocol.md)                    */
/* ------------------------------------------------------------------------ */

struct node_ctl;
struct node;

/*
 * The answer to a command: err is 0 with reply the service's "ok" message,
 * a DVS_E* code or negated errno from its "error" message (reply set too),
 * DVS_ETIMEOUT, or -ECONNRESET (the channel closed first; reply NULL).
 * Descriptors in reply->fds belong to the callback (close what you keep
 * not). cookie is the caller's.
 */
typedef void (*node_ctl_cb)(struct node *n, int err, struct node_ctl_msg *reply, uint64_t cookie);

int node_ctl_listen(struct node *n);
void node_ctl_close_all(struct node *n);
/* Send "VERB id=N ARGS". Returns 0 (cb runs exactly once, later) or a
 * negative code (cb never runs). */
int node_ctl_request(struct node_ctl *c, const char *verb, const char *args, int64_t timeout_ms,
                     node_ctl_cb cb, uint64_t cookie);
void node_ctl_detach(struct node_ctl *c); /* close the connection, fail its requests */
/* Whether no command on any channel awaits its answer (shut-down waits). */
bool node_ctl_idle(struct node *n);
/* Tie a connection to the instance whose process it is (on hello); an older
 * channel of the same instance is closed. */
void node_ctl_bind(struct node_ctl *c, struct node_instance *inst);

/* ------------------------------------------------------------------------ */
/* Service instances (service.c)                                             */
/* ------------------------------------------------------------------------ */

enum node_inst_state {
    INST_UNDECIDED, /* found alive at start-up; the directory decides */
    INST_STARTING,  /* spawned; waiting for the service to open */
    INST_RESTORING, /* restore mode, opened; waiting for "start" */
    INST_SERVING,
    INST_FROZEN,    /* frozen for a migration */
    INST_MOVED,     /* released as moved; will exit after the linger */
    INST_STOPPING,  /* told to stop; exit expected */
    INST_DOWN,      /* no process (crashed, restart pending) */
    INST_FAILED,    /* no process; gave up after repeated crashes */
};

struct node_instance {
    struct node_instance *prev, *next;
    struct node *n;
    uint64_t serial;
    char endpoint[DVS_MAX_NAME + 1];
    char *command;
    uint64_t generation;     /* the generation this process serves (or will) */
    uint64_t dir_generation; /* the directory's, from the last orders */
    uint64_t arena_addr;
    uint64_t arena_size;
    int memfd;               /* the arena, kept across crashes; -1 if not held */
    bool arena_formatted;    /* memfd holds an arena a restore can open */
    enum node_inst_state state;
    char svc_state[16];      /* the service's own word (hello): serving, frozen... */
    bool restore;            /* the process was started in restore mode */
    int64_t migration_id;    /* a destination's restore instance: its migration */
    pid_t pid;               /* 0 when no process */
    pid_t record_pid;        /* the process the record on disk names, or 0 */
    uint64_t start_time;     /* /proc/PID/stat starttime, against PID reuse */
    struct node_ctl *ctl;    /* the control channel, once the service connected */
    char address[128];       /* where it accepts requests, from its hello */
    json_t *decided_ep;      /* undecided: the directory's verdict, until hello */

    /* Supervision. */
    unsigned crashes;        /* in the current window */
    int64_t window_start_ms;
    int64_t started_ms;
    const char *kill_reason; /* why the agent killed it, for the crash log */
    bool keep_record;        /* shut-down: the process outlives the agent */
    bool unfreezing;         /* an unfreeze is on its way */
    bool seen;               /* reconcile scratch */

    /* Reports to the directory. */
    bool report_busy;        /* a call about this instance is in flight */
    bool report_failed_state;
    bool failed_reported;
    uint64_t report_gen;     /* the generation in flight */
    uint64_t reported_gen;   /* the generation the directory accepted */

    /* Load (loop thread). */
    uint64_t cpu_ticks;
    uint64_t rss;
    uint64_t requests;
    int64_t req_sample_ms;
    double cpu_cores;
    double rps;
    bool have_sample;

    /* libuv. */
    uv_process_t proc;
    bool proc_open;
    uv_poll_t pidpoll;
    bool pidpoll_open;
    int pidfd;
    uv_timer_t timer;        /* start deadline, restart backoff, stop escalation */
    uv_timer_t report_timer; /* report retries */
    unsigned handles;        /* open handles; the struct is freed when 0 and dead */
    bool dead;
};

struct node_instance *node_inst_find(struct node *n, const char *endpoint);
struct node_instance *node_inst_by_serial(struct node *n, uint64_t serial);
struct node_instance *node_inst_by_pid(struct node *n, pid_t pid);
/* Called by control.c when a service connects (hello) and for its events. */
void node_inst_on_hello(struct node *n, struct node_ctl *c, pid_t pid, struct node_ctl_msg *m);
void node_inst_on_event(struct node *n, struct node_instance *inst, struct node_ctl_msg *m);
void node_inst_on_ctl_closed(struct node *n, struct node_instance *inst);
/* Reconcile the running services with the endpoints placed on this node. */
void node_inst_reconcile(struct node *n, json_t *orders);
/* Start-up: load the records of the previous run (adopt later, or clean). */
int node_inst_load_records(struct node *n);
/* Spawn a restore-mode instance on memfd (taken) for a migration. */
int node_inst_spawn_restore(struct node *n, const char *endpoint, const char *command,
                            uint64_t generation, uint64_t arena_addr, uint64_t arena_size,
                            int memfd, int64_t migration_id, struct node_instance **ret);
/* Stop an instance (graceful, then SIGKILL after the stop timeout) and
 * forget it: drop its record and its arena. */
void node_inst_stop(struct node_instance *inst, const char *why);
/* The instance is now the endpoint's serving instance: report it. */
void node_inst_report_running(struct node_instance *inst);
/* A destination's restore instance became the endpoint's (after the commit). */
void node_inst_promote(struct node_instance *inst);
/* A sealed memfd of size bytes for an arena. fd or a negated errno. */
int node_make_arena_memfd(const char *endpoint, uint64_t size);
/* Shut-down: close every handle; kill the services if the settings say so. */
void node_inst_close_all(struct node *n);
/* Sample CPU, memory and requests of every service; sets the node totals. */
void node_inst_sample_load(struct node *n, double interval_s);

/* ------------------------------------------------------------------------ */
/* Migrations (migrate.c)                                                    */
/* ------------------------------------------------------------------------ */

int node_mig_listen(struct node *n);
void node_mig_reconcile(struct node *n, json_t *orders);
/* An instance event a migration waits for. */
void node_mig_on_restore_ready(struct node *n, struct node_instance *inst);
/* A destination's restore instance exited. Returns true when the instance
 * was promoted (the commit may be in): the caller treats it as a crash of the
 * endpoint's instance, keeping its arena. */
bool node_mig_on_instance_gone(struct node *n, struct node_instance *inst);
/* Whether the endpoint is part of a migration this agent is running. */
bool node_mig_busy(struct node *n, const char *endpoint);
/* Shut-down: abort what can be aborted, bounded; then close the handles. */
void node_mig_shutdown(struct node *n);
void node_mig_close_all(struct node *n);
bool node_mig_idle(struct node *n);

/* ------------------------------------------------------------------------ */
/* The manager link (mgr.c)                                                  */
/* ------------------------------------------------------------------------ */

/*
 * The result of a manager call, on the loop thread. rv is 0 when an HTTP
 * answer came (status, body: borrowed for the call), else a DVS_E* code
 * with err saying why. cookie is the caller's.
 */
struct node_call_result {
    int rv;
    long status;
    json_t *body;
    uint64_t index;
    const char *err;
};
typedef void (*node_call_cb)(struct node *n, const struct node_call_result *res,
                             uint64_t cookie);

/* Queue METHOD PATH with BODY (taken; NULL for none) on the thread pool. */
void node_call(struct node *n, const char *method, const char *path, json_t *body,
               node_call_cb cb, uint64_t cookie);

int node_mgr_start(struct node *n);
void node_mgr_stop(struct node *n);
/* The error message of a manager answer ("error" field), or a fallback. */
const char *node_call_error(const struct node_call_result *res);

/* ------------------------------------------------------------------------ */
/* Metrics (metrics.c): GET /metrics on --metrics-addr                        */
/* ------------------------------------------------------------------------ */

enum node_mig_role { NODE_MIG_SOURCE, NODE_MIG_DESTINATION };

/* What one migration this agent took part in came to. */
struct node_mig_stats {
    enum node_mig_role role;
    bool committed;          /* false: aborted */
    uint64_t bytes_sent;     /* arena bytes this agent sent (source) */
    uint64_t bytes_received; /* arena bytes this agent received (destination) */
    int64_t downtime_ms;     /* source, committed: freeze to release; -1 unknown */
    int64_t duration_ms;     /* from the start of this agent's part to its end; -1 unknown */
};

/* Allocate the counters (before any hook may run). 0 or -ENOMEM. */
int node_metrics_init(struct node *n);
/* Serve /metrics when --metrics-addr is set. 0 or a negative errno. */
int node_metrics_start(struct node *n);
void node_metrics_stop(struct node *n);  /* shut-down: close the server */
void node_metrics_free(struct node *n);  /* after the loop has ended */
/*
 * Hooks. node_metrics_migration_done: once per migration, when this agent's
 * part of it is over (committed or aborted), on the loop thread; ST is
 * borrowed. node_metrics_restart: a crashed service is restarted (loop).
 * node_metrics_heartbeat: one heartbeat's outcome (heartbeat thread).
 */
void node_metrics_migration_done(struct node *n, const struct node_mig_stats *st);
void node_metrics_restart(struct node *n);
void node_metrics_heartbeat(struct node *n, bool ok);

/* ------------------------------------------------------------------------ */
/* The agent                                                                  */
/* ------------------------------------------------------------------------ */

struct node_load_figures {
    double cpu_used;
    double mem_used;
    double rps;
    bool valid;
};

struct node_metrics; /* metrics.c */

struct node {
    struct node_settings cfg;
    struct node_metrics *metrics;
    char mgr_token[API_TOKEN_MAX + 1]; /* from --token-file, or "" (read-only after start) */
    uv_loop_t loop;
    char host[256];              /* from --listen: services listen there */
    char transfer_addr[300];     /* what the destination reports */
    char data_dir[4096];         /* absolute */
    char ctl_path[4096 + 16];
    double cpu_capacity;
    uint64_t mem_capacity;
    int dirty_method;      /* enum node_xfer_method: what migrations try first */
    bool dirty_forced;     /* --dirty-tracking named it: no fallback to another */
    int lock_fd;

    /* Services and their control channels. */
    struct node_instance *instances;
    struct node_ctl *ctls;
    int ctl_fd;
    uv_poll_t ctl_poll;
    bool ctl_poll_open;
    uint64_t next_serial;

    /* Migrations and the transfer port. */
    struct node_migration *migrations;
    struct node_xfer_conn *xfer_conns;
    unsigned n_xfer_conns;
    uv_tcp_t xfer_listener;
    bool xfer_open;

    /* Orders: the latest answer, handed over by the orders thread. */
    uv_async_t orders_async;
    json_t *orders;          /* the last applied (loop) */
    uint64_t orders_index;   /* its X-Dvs-Index (loop) */

    /* Load sampling (loop) and the figures the heartbeat sends. */
    uv_timer_t load_timer;
    struct node_cpu_sample cpu_prev;
    bool cpu_prev_ok;
    int64_t load_prev_ms;

    /* Shared with the manager threads; guarded by mu. */
    pthread_mutex_t mu;
    pthread_cond_t cond;
    bool stop_threads;
    bool registered;
    json_t *orders_new;        /* the orders thread's latest answer, not yet taken */
    uint64_t orders_new_index;
    struct node_load_figures load;
    pthread_t hb_thread, orders_thread;
    bool hb_started, orders_started, orders_detached;
    struct api_client *pool[16]; /* idle clients for the thread pool */
    unsigned pool_len;

    /* Shut-down. */
    uv_signal_t sigterm, sigint;
    uv_timer_t stop_timer;
    bool stopping;
    bool stop_deadline_passed;
    bool finished;
    int exit_code;
};

/* dvs-node serve ARGS (argv[0] is the first option). Returns the exit code. */
int node_serve_main(int argc, char **argv);

uint64_t node_next_serial(struct node *n);
/* The host part of an "H:P" address, copied. */
int node_split_hostport(const char *s, char *host, size_t hostlen, uint16_t *ret_port);
/* Called when a shutdown step finishes: closes the loop once all are done. */
void node_maybe_finish_stop(struct node *n);

#endif
