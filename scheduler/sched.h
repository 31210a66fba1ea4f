/*
 * The DVS scheduler (DESIGN.md §6): a pure library. A cluster view, the
 * policy configuration and the current time go in; decisions (migrate, power
 * off, power on, nothing...) come out, each with a reason, the figures it
 * used and a sentence an operator can read.
 *
 * Pure means: no I/O, no clock, no randomness, no mutable globals, libc only.
 * The same input gives the same output, byte for byte, whatever the order of
 * the nodes and endpoints in the view (every sort breaks ties by id). The
 * only memory between two evaluations is what the caller keeps and passes
 * back: the per-node and cluster "history" structs below, which
 * sched_evaluate() returns updated (state in -> state out). This is how a
 * "sustained window" is measured without the library holding state, and why
 * a new leader that starts from zeroed history merely waits one window.
 *
 * Typical use by the manager's leader, on a timer:
 *
 *     struct sched_config cfg;  sched_config_default(&cfg);  ... validate ...
 *     build view (nodes with .hist from the previous plan, endpoints,
 *                 migrations in flight, .hist of the cluster)
 *     struct sched_plan plan;
 *     rc = sched_evaluate(&view, &cfg, now_ms, &plan);
 *     for each plan.decisions[i] with .automatic: act (create the migration,
 *         run the power hook, mark the node drained...) and log .text
 *     keep plan.node_hist[i] (for view.nodes[i]) and plan.cluster_hist
 *     sched_plan_free(&plan);
 *
 * Policies, in the order they get the shared migration budget:
 *   1. maintenance: drain NODE (operator intent, always automatic);
 *   2. overload: shed a node that stayed above the high mark for a window;
 *   3. energy: empty and power off a node when the cluster is underused,
 *      power a standby node on when load rises or capacity is missing.
 * Concurrency limits (per node and cluster-wide) count every migration in
 * flight, whoever started it, plus every migration planned in this
 * evaluation, so two drains and the automatic policies share them.
 *
 * Deciding is not doing: the library never assumes its decisions were
 * applied. The next view says what happened (a migration in flight, an
 * endpoint on its new node, a node in standby); a decision the manager did
 * not carry out is simply planned again.
 *
 * Times are int64_t milliseconds on the caller's clock (the manager uses wall
 * clock ms, like the FSM). A time of 0 means "never".
 *
 * Threading: every function is reentrant; distinct calls share nothing.
 * Memory: the view is borrowed for the duration of a call and never kept.
 * A plan owns its arrays (free with sched_plan_free).
 */
#ifndef DVS_SCHEDULER_SCHED_H
#define DVS_SCHEDULER_SCHED_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

/* "No index": an endpoint not placed on a node, a decision without endpoint... */
#define SCHED_NONE UINT32_MAX

/* Room for a decision's explanation, NUL included (longer text is cut). */
#define SCHED_TEXT_MAX 400

/* ======================================================================== */
/* Configuration                                                             */
/* ======================================================================== */

/* How far a policy may act on its own (VMware DRS automation levels). */
enum sched_mode {
    SCHED_MODE_OFF,       /* the policy does not run */
    SCHED_MODE_RECOMMEND, /* decisions are planned and explained, not applied */
    SCHED_MODE_AUTOMATIC, /* decisions are applied by the manager */
};

/*
 * The policy configuration. Fill it with sched_config_default(), change what
 * the operator set, then check it with sched_config_validate(). Units are in
 * the field names' comments; sched_options[] describes every field (name,
 * unit, default, bounds, help) so the manager can drive its option table and
 * --help from it.
 */
struct sched_config {
    /*
     * Marks, as fractions of a node's capacity, applied to each resource
     * (cpu, mem). Hysteresis: a node above `high_mark` sheds down to
     * `target_mark`, so its own moves cannot make it cross `high_mark` again;
     * destinations must stay below `high_mark` (overload, drains) or at or
     * below `target_mark` (energy). The cluster counts as underused below
     * `low_mark` on average. Need 0 < low < target < high <= 1.
     */
    double high_mark;   /* default 0.80 */
    double target_mark; /* default 0.70 */
    double low_mark;    /* default 0.20 */

    /* How long a condition must hold before a policy acts on it (ms). */
    int64_t overload_window_ms;  /* above high before shedding; default 2 min */
    int64_t power_off_window_ms; /* cluster underused before a power-off; default 40 min */
    int64_t power_on_window_ms;  /* cluster pressure before a power-on; default 5 min */
    int64_t power_on_timeout_ms; /* a woken node that is not up by then has failed; default 10 min */

    /* Stability. */
    int64_t cooldown_ms;     /* minimum time between two automatic moves of one endpoint; default 10 min */
    int64_t return_block_ms; /* an automatic move never sends an endpoint back to the node its
                                last move left within this (no ping-pong); default 1 h */
    int64_t backoff_base_ms; /* after an aborted migration wait base * 2^(aborts-1)... default 30 s */
    int64_t backoff_max_ms;  /* ...capped at this; default 30 min */
    uint32_t max_aborts;     /* automatic policies give up on an endpoint after this many
                                consecutive aborts (drains keep retrying); default 5 */

    /* Concurrency limits on migrations (in flight + planned), shared by all policies. */
    uint32_t max_per_node; /* as source or destination; default 2 */
    uint32_t max_cluster;  /* default 8 */

    /* Energy. */
    double power_reserve_cpu; /* cores of headroom below the high marks of powered-on
                                 eligible nodes to keep; default 0 */
    uint32_t min_powered_on;  /* never power off below this many eligible nodes; default 2 */

    /* Migration cost model (sched_predict). */
    double bandwidth;           /* bytes/s when a node reports none; default 125e6 (1 Gbit/s) */
    int64_t downtime_budget_ms; /* automatic moves must predict at most this; default 300 */
    int64_t commit_overhead_ms; /* fixed freeze+commit cost added to every downtime; default 10 */
    uint32_t max_rounds;        /* pre-copy rounds before the final stop-and-copy; default 30 */

    /* Automation levels. Maintenance (drains) is always automatic. */
    enum sched_mode overload_mode; /* default automatic */
    enum sched_mode energy_mode;   /* default off (powering machines off is opt-in, as DPM) */
};

/* Fill CFG with the documented defaults. */
void sched_config_default(struct sched_config *cfg);

/*
 * Check every field against its bounds and the marks against each other.
 * Returns 0, or -EINVAL with MSG (if not NULL) naming the first bad field,
 * its value and what is accepted: "high_mark 1.5: must be in (0, 1]".
 */
int sched_config_validate(const struct sched_config *cfg, char *msg, size_t msglen);

/* The kind of value a configuration field holds, to parse and print it. */
enum sched_option_type {
    SCHED_OPT_FRACTION, /* double, 0..1 ("0.8"; shown as 80%) */
    SCHED_OPT_DURATION, /* int64_t milliseconds */
    SCHED_OPT_COUNT,    /* uint32_t */
    SCHED_OPT_CORES,    /* double, cpu cores */
    SCHED_OPT_RATE,     /* double, bytes per second */
    SCHED_OPT_MODE,     /* enum sched_mode */
};

/* One configuration field: the declarative table the manager's options use. */
struct sched_option {
    const char *name; /* field name, e.g. "high_mark" */
    enum sched_option_type type;
    size_t offset;    /* offsetof(struct sched_config, field) */
    double def;       /* default, in the field's unit */
    double min, max;  /* inclusive bounds, in the field's unit */
    const char *help;
};

/* The table (read-only), and its length. */
extern const struct sched_option sched_options[];
extern const size_t sched_n_options;

/* The entry for NAME, or NULL. */
const struct sched_option *sched_option_find(const char *name);

/*
 * Set field NAME of CFG to VALUE (in the field's unit; a mode is 0/1/2).
 * Checks the field's own bounds (not the cross-field rules: validate the
 * whole struct after the last change). 0, -ENOENT (unknown name, MSG lists
 * none) or -EINVAL (MSG names the field and the bounds); CFG is unchanged on
 * failure.
 */
int sched_config_set(struct sched_config *cfg, const char *name, double value, char *msg,
                     size_t msglen);
/* The value of field P in CFG, in the field's unit. */
double sched_config_get(const struct sched_config *cfg, const struct sched_option *p);

const char *sched_mode_name(enum sched_mode mode); /* "off", "recommend", "automatic" */
/* "off" / "recommend" / "automatic" -> *ret_mode. 0 or -EINVAL. */
int sched_mode_parse(const char *s, enum sched_mode *ret_mode);

/* ======================================================================== */
/* The cluster view (input)                                                  */
/* ======================================================================== */

/* Resources the scheduler accounts for, each as a fraction of capacity. */
enum sched_resource { SCHED_CPU, SCHED_MEM, SCHED_NRES };

/* An amount of each resource: cpu in cores, mem in bytes. */
struct sched_load {
    double cpu;
    double mem;
};

/* DESIGN.md §2. */
enum sched_node_state {
    SCHED_NODE_UP,
    SCHED_NODE_DRAINING, /* maintenance: every endpoint must leave */
    SCHED_NODE_DRAINED,  /* drain finished; stays until `node enable` */
    SCHED_NODE_STANDBY,  /* powered off by the energy policy */
    SCHED_NODE_DOWN,     /* missed heartbeats */
};

enum sched_power {
    SCHED_POWER_ON,
    SCHED_POWER_OFF,
    SCHED_POWER_WAKING, /* the power-on hook ran; the node has not registered yet */
};

/*
 * Per-node memory between evaluations. Start zeroed (a zeroed struct means
 * "nothing observed yet", so a new leader is safe); afterwards pass back what
 * the previous plan returned for this node.
 */
struct sched_node_hist {
    bool hot;                  /* above the high mark at the last evaluation */
    int64_t hot_since;         /* ...since this time */
    bool evacuating;           /* the energy policy is emptying it to power it off */
    int64_t evacuating_since;
};

/* Cluster-wide memory between evaluations, same rules. */
struct sched_cluster_hist {
    bool underused;            /* average below the low mark */
    int64_t underused_since;
    bool pressure;             /* average above the high mark, or spare below the reserve */
    int64_t pressure_since;
};

struct sched_node {
    const char *id;             /* unique short name ("n1"); borrowed */
    enum sched_node_state state;
    bool eligible;              /* may receive endpoints (separate from state, §2) */
    enum sched_power power;
    int64_t power_since;        /* when `power` last changed (for the waking timeout) */
    struct sched_load capacity; /* cpu > 0; mem 0 means "memory not accounted here" */
    /*
     * Smoothed measured load of the node that is NOT due to its endpoints
     * (system, agent): the node's measured total minus the measured loads of
     * its endpoints, from the same sample. The scheduler adds the endpoints'
     * loads where the directory places them, so that a committed move shows
     * at once on both nodes; a node total smoothed over time would still
     * show the endpoint on its source for a while, and the next evaluation
     * would shed the same load twice.
     */
    struct sched_load base_load;
    /*
     * No load measurement has reached the caller yet (base_load is a guess
     * of zero). While any eligible powered-on node is unmeasured the cluster
     * does not count as underused: no power-off window starts on no data.
     */
    bool load_unknown;
    double bandwidth;           /* measured migration bandwidth, bytes/s; 0 = config default */
    int64_t drain_deadline;     /* DRAINING: when the drain must be over; 0 = none */
    struct sched_node_hist hist;
};

/* DESIGN.md §2. */
enum sched_ep_state {
    SCHED_EP_RUNNING,
    SCHED_EP_PENDING,
    SCHED_EP_MIGRATING, /* a migration is in flight (listed in the view's migrations) */
    SCHED_EP_FAILED,
    SCHED_EP_STOPPED,
};

struct sched_endpoint {
    const char *name;         /* borrowed */
    uint64_t id;              /* unique; breaks ties */
    uint32_t node;            /* index into the view's nodes, or SCHED_NONE (unplaced: ignored) */
    enum sched_ep_state state;
    struct sched_load load;   /* smoothed measured (running) or declared (otherwise) */
    uint64_t arena_size;      /* bytes */
    double dirty_rate;        /* recent dirty rate of the arena, bytes/s */
    int64_t last_move_at;     /* last committed move; 0 = never */
    uint32_t last_source;     /* the node that move left (index), or SCHED_NONE; read only
                                 when last_move_at is set */
    uint32_t aborts;          /* consecutive aborted migrations since the last commit */
    int64_t last_abort_at;    /* time of the last abort (when aborts > 0) */
    bool opt_out;             /* no automatic moves (drains still move it) */
};

/* A migration in flight (planned, precopy or frozen). */
struct sched_migration {
    uint32_t endpoint;        /* index into the view's endpoints */
    uint32_t src, dst;        /* indices into the view's nodes; src is where the endpoint is */
};

struct sched_view {
    const struct sched_node *nodes;
    size_t n_nodes;
    const struct sched_endpoint *endpoints;
    size_t n_endpoints;
    const struct sched_migration *migrations;
    size_t n_migrations;
    struct sched_cluster_hist hist;
};

/*
 * Check the view: indices in range, ids present and unique, numbers finite
 * and not negative, capacity.cpu > 0, at most one migration per endpoint and
 * its source is where the endpoint is. 0 or -EINVAL with MSG naming the
 * offending entry ("nodes[3] (n4): capacity.cpu 0: must be > 0"), or -ENOMEM.
 */
int sched_view_validate(const struct sched_view *view, char *msg, size_t msglen);

/* ======================================================================== */
/* Migration cost model                                                      */
/* ======================================================================== */

struct sched_cost {
    double duration_s;   /* from start to commit */
    double downtime_s;   /* frozen: last dirty pages + commit overhead */
    double bytes;        /* expected bytes sent */
    uint32_t rounds;     /* pre-copy rounds (0: stop-and-copy) */
    bool stop_and_copy;  /* dirty rate >= bandwidth: pre-copy cannot converge */
    bool over_budget;    /* downtime_s > the configured downtime budget */
};

/*
 * Predict a live migration of an arena of ARENA bytes dirtied at DIRTY
 * bytes/s over a link of BANDWIDTH bytes/s (DESIGN.md §4). Round 0 sends the
 * arena; each next round sends what was dirtied during the previous one, so
 * round i lasts arena/bw * q^i with q = dirty/bw, and the total tends to
 * arena/bw / (1 - q). Pre-copy stops when the remainder fits the downtime
 * budget or after max_rounds; the remainder is sent frozen. When q >= 1 the
 * rounds cannot converge and the whole arena is sent frozen (stop-and-copy).
 * BANDWIDTH <= 0 uses cfg->bandwidth.
 */
void sched_predict(const struct sched_config *cfg, uint64_t arena, double dirty,
                   double bandwidth, struct sched_cost *ret_cost);

/* ======================================================================== */
/* Decisions and plans (output)                                              */
/* ======================================================================== */

/*
 * What the manager does for an automatic decision (and shows for the others).
 */
enum sched_action {
    /*
     * An explanation only: why nothing (more) is done, where a drain stands.
     * There can be one per overloaded node waiting for its window, so log
     * these at debug level; the `plan` view shows them all.
     */
    SCHED_ACT_NOTHING,
    /* Create a migration of `endpoint` from `node` to `dest`, with reason
       sched_policy_name(policy) and `text` as its explanation. */
    SCHED_ACT_MIGRATE,
    /* A non-running endpoint (pending, failed, stopped): set its node to
       `dest` in the directory; there is no state to copy. */
    SCHED_ACT_REPLACE,
    /* Run the power-off hook for `node`, then mark it standby, power off. */
    SCHED_ACT_POWER_OFF,
    /* Run the power-on hook for standby `node`, then set its power to
       SCHED_POWER_WAKING (power_since = now) until it registers again. */
    SCHED_ACT_POWER_ON,
    /* Every endpoint left `node` and nothing touching it is in flight:
       mark it drained and ineligible, until `node enable`. */
    SCHED_ACT_DRAIN_DONE,
    /* `node`'s drain deadline passed with endpoints left: end the drain as
       failed (the node stays ineligible); the text says what is left. */
    SCHED_ACT_DRAIN_EXPIRED,
};

/* Which policy made a decision; the names match migration reasons (docs/api.md). */
enum sched_policy {
    SCHED_POL_MAINTENANCE,
    SCHED_POL_OVERLOAD,
    SCHED_POL_ENERGY,
};

enum sched_reason {
    SCHED_R_OVERLOAD,        /* node above high for the window (migrate) */
    SCHED_R_UNDERUSED,       /* cluster below low for the window (migrate off / power off) */
    SCHED_R_DRAIN,           /* drain move */
    SCHED_R_DRAIN_DONE,
    SCHED_R_DRAIN_DEADLINE,
    SCHED_R_DRAIN_PROGRESS,  /* nothing: where a drain stands */
    SCHED_R_LOAD_HIGH,       /* power on: cluster above high for the window */
    SCHED_R_RESERVE,         /* power on: spare capacity below the reserve */
    SCHED_R_NO_DESTINATION,  /* nothing fits (power on when a standby node exists) */
    SCHED_R_WINDOW,          /* nothing yet: the condition has not lasted the window */
    SCHED_R_IN_FLIGHT,       /* nothing more: migrations in flight will do it */
    SCHED_R_CONCURRENCY,     /* nothing more: a concurrency limit is reached */
    SCHED_R_BLOCKED,         /* nothing: every candidate is in cooldown, backoff, opted out
                                or over the downtime budget (counts in the text) */
    SCHED_R_BACKOFF,         /* nothing for this endpoint yet: its last migrations aborted */
    SCHED_R_WAKING,          /* nothing: a node is powering on */
    SCHED_R_NO_STANDBY,      /* nothing: capacity is missing and no node can be woken */
    SCHED_R_ABANDONED,       /* energy: the evacuation no longer fits, the node stays on */
    SCHED_R_NODE_DOWN,       /* nothing: a draining node is not reachable */
    SCHED_R_DRY_RUN,         /* the summary of a drain dry run */
};

/* The figures a decision used (the text shows the same numbers). */
struct sched_figures {
    enum sched_resource resource; /* the resource the utilizations below refer to */
    double src_before, src_after; /* utilization of `node`, fractions */
    double dst_before, dst_after; /* utilization of `dest` */
    double mark;                  /* the mark compared against */
    int64_t held_ms;              /* how long the condition has held */
    int64_t window_ms;            /* the window it had to hold */
    double cluster_util;          /* cluster average (energy) */
    uint32_t count;               /* endpoints left, candidates blocked... per reason */
    struct sched_cost cost;       /* MIGRATE: the prediction for this move */
};

struct sched_decision {
    enum sched_action action;
    enum sched_policy policy;
    enum sched_reason reason;
    bool automatic;   /* apply it; false: a recommendation (plan view, mode recommend, dry run) */
    uint32_t node;    /* the node concerned (source of a move), or SCHED_NONE */
    uint32_t endpoint;/* the endpoint moved or concerned, or SCHED_NONE */
    uint32_t dest;    /* MIGRATE/REPLACE: destination node, else SCHED_NONE */
    struct sched_figures fig;
    char text[SCHED_TEXT_MAX];
};

struct sched_plan {
    struct sched_decision *decisions; /* in priority order */
    size_t n_decisions;
    /* History to keep: node_hist[i] goes with view->nodes[i] (n_nodes entries). */
    struct sched_node_hist *node_hist;
    size_t n_nodes;
    struct sched_cluster_hist cluster_hist;
    /* Cluster figures of this evaluation. */
    double cluster_util;     /* dominant resource, load of powered-on nodes over eligible capacity */
    double spare_cpu;        /* cores below the high marks of powered-on eligible nodes */
    uint32_t in_flight;      /* migrations in flight in the view */
    uint32_t planned;        /* MIGRATE decisions in this plan */
    uint32_t blocked;        /* dry run: endpoints that cannot move */
};

/*
 * One evaluation: run the policies on VIEW with CFG at time NOW.
 * Returns 0 and fills *ret_plan (caller frees with sched_plan_free), or
 * -EINVAL (bad view or config: sched_view_validate / sched_config_validate
 * say why) or -ENOMEM; *ret_plan is untouched on failure.
 * Deterministic: the same view (in any order), config and time give the
 * same decisions and texts.
 */
int sched_evaluate(const struct sched_view *view, const struct sched_config *cfg, int64_t now,
                   struct sched_plan *ret_plan);

/*
 * What a drain of NODE (an index into the view) would do, ignoring the
 * concurrency limits (it reports how long they make it take): for every
 * endpoint on NODE, the move it would get or why it cannot move, then one
 * SCHED_R_DRY_RUN summary. NODE may be up (planning) or draining. Nothing in
 * the plan is automatic; plan->blocked counts the endpoints that cannot move
 * (0: the drain can complete). The history in the plan is the view's,
 * unchanged. Same returns as sched_evaluate.
 */
int sched_drain_dry_run(const struct sched_view *view, const struct sched_config *cfg,
                        uint32_t node, int64_t now, struct sched_plan *ret_plan);

/* Free what a plan owns and zero it. Accepts NULL and a zeroed plan. */
void sched_plan_free(struct sched_plan *plan);

/* The end state of a node after the migrations in flight and the plan. */
struct sched_projection {
    struct sched_load before;    /* load now (directory placement) */
    struct sched_load after;     /* after every in-flight and planned move commits */
    double util_before, util_after; /* dominant utilization */
    uint32_t endpoints_before, endpoints_after;
    bool powered_after;          /* false when the plan powers it off (or it is off and not woken) */
};

/*
 * The projected end state for the `plan` view: RET (n_nodes entries, caller
 * allocated, in view order) gets each node's load now and after every
 * migration in flight and every MIGRATE/REPLACE/POWER_* decision of PLAN
 * (automatic or not) took effect. 0, or -EINVAL when PLAN does not belong to
 * VIEW (index out of range) or n_nodes differs.
 */
int sched_project(const struct sched_view *view, const struct sched_plan *plan,
                  struct sched_projection *ret, size_t n_nodes);

/* Names for logs and JSON. */
const char *sched_action_name(enum sched_action a);   /* "migrate", "power_off", ... */
const char *sched_policy_name(enum sched_policy p);   /* "maintenance", "overload", "energy" */
const char *sched_reason_name(enum sched_reason r);   /* "overload", "no_destination", ... */
const char *sched_node_state_name(enum sched_node_state s); /* "up", "draining", ... */
const char *sched_resource_name(enum sched_resource r);   /* "cpu", "mem" */

#endif
