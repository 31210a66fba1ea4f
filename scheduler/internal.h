/*
 * Internals shared by the scheduler's files (not part of the API; names use
 * the sched__ prefix). One evaluation builds a struct sched__ctx from the
 * view, the policies read and update its working figures, and the decisions
 * accumulate in the plan being built.
 */
#ifndef DVS_SCHEDULER_INTERNAL_H
#define DVS_SCHEDULER_INTERNAL_H

#include <stdarg.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "scheduler/sched.h"

/* Times are validated to lie in [0, SCHED__TIME_MAX] so sums cannot overflow. */
#define SCHED__TIME_MAX (INT64_C(1) << 53)

/* Energy: how many candidates to try emptying per evaluation (bounds the work). */
#define SCHED__ENERGY_TRIES 16

/* The marks a destination is checked against. */
enum sched__mark {
    SCHED__BELOW_HIGH,   /* after < high_mark (overload, drains) */
    SCHED__AT_MOST_TARGET, /* after <= target_mark (energy) */
    SCHED__NMARKS,
};

/* Working figures of one node during one evaluation. */
struct sched__node {
    double cap[SCHED_NRES];
    double cur[SCHED_NRES];  /* base + endpoints the directory places here */
    double proj[SCHED_NRES]; /* cur - endpoints leaving + endpoints arriving (in flight, planned) */
    double bw;               /* migration bandwidth, bytes/s */
    uint32_t rank;           /* position in id order: the tie-breaker */
    uint32_t busy;           /* migrations touching it: in flight + planned */
    uint32_t flying_out;     /* in flight as source */
    uint32_t flying_in;      /* in flight as destination */
    uint32_t n_eps;          /* endpoints the directory places here */
    bool powered;            /* power on and up or draining: can take part in migrations */
    bool dest;               /* may receive endpoints in this evaluation */
    bool shedding;           /* loses an endpoint (in flight or planned): not a destination */
};

/* Why find_dest found nothing, for the explanation and for what to do about it. */
struct sched__miss {
    uint32_t closest;  /* the candidate that came closest, or SCHED_NONE */
    double before, after; /* its dominant utilization before and after */
    enum sched_resource res;
    uint32_t n_busy;   /* candidates skipped for the per-node concurrency limit */
    bool prefiltered;  /* no destination had that much room in some resource */
    enum sched_resource short_res; /* ...in this resource */
    double need;       /* ...the amount needed */
    double most_room;  /* ...the most any destination had (in the resource's unit) */
};

struct sched__ctx {
    const struct sched_view *view;
    const struct sched_config *cfg;
    int64_t now;

    struct sched__node *nodes; /* view order */
    uint32_t *by_rank;         /* node indices in id order */
    uint32_t *ep_first;        /* endpoints of node i: ep_list[ep_first[i] .. ep_first[i+1]) */
    uint32_t *ep_list;         /* grouped by node, by id within a node */
    uint32_t *ep_mig;          /* endpoint -> index of its in-flight migration, or SCHED_NONE */
    uint32_t cluster_busy;     /* migrations in flight + planned */

    /*
     * Destination search: the nodes that may receive (rank order), and for
     * each mark the most room any of them has per resource. The room only
     * shrinks while moves are added, so a stale maximum stays a valid upper
     * bound and lets most impossible searches end without a scan; it is
     * recomputed when moves are undone (energy trials).
     */
    uint32_t *dests;
    uint32_t n_dests;
    bool room_valid;
    double room[SCHED__NMARKS][SCHED_NRES];

    /* The plan being built. */
    struct sched_plan *plan;
    size_t cap_decisions;
    struct sched_node_hist *hist_out; /* = plan->node_hist */

    /* The resource the cluster utilization (plan->cluster_util) is of. */
    enum sched_resource cluster_res;

    /*
     * Set by maintenance and overload when a move found no room anywhere:
     * the energy policy may wake a standby node, one that can hold at least
     * need_load (the smallest such load, per resource).
     */
    bool need_capacity;
    uint32_t need_node;     /* the first node that could not shed, for the text */
    double need_load[SCHED_NRES];
};

/* ---- view.c ------------------------------------------------------------ */

/*
 * Validate VIEW and build CTX's indexes and figures (CFG and VIEW are
 * borrowed for CTX's lifetime). 0, or -EINVAL with MSG (may be NULL) saying
 * what is wrong, or -ENOMEM; CTX needs no fini on failure.
 */
int sched__ctx_init(struct sched__ctx *ctx, const struct sched_view *view,
                    const struct sched_config *cfg, int64_t now, char *msg, size_t msglen);
void sched__ctx_fini(struct sched__ctx *ctx);

/* ---- place.c ------------------------------------------------------------ */

static inline void sched__ep_load(const struct sched_endpoint *e, double out[SCHED_NRES])
{
    out[SCHED_CPU] = e->load.cpu;
    out[SCHED_MEM] = e->load.mem;
}

/* Dominant utilization of N carrying LOAD; its resource in *ret_res (may be NULL). */
double sched__util(const struct sched__node *n, const double load[SCHED_NRES],
                   enum sched_resource *ret_res);
/* Dominant utilization of N with LOAD added. */
double sched__util_with(const struct sched__node *n, const double load[SCHED_NRES],
                        enum sched_resource *ret_res);
/* The share of N's capacity that LOAD is, in its dominant resource. */
double sched__share(const struct sched__node *n, const double load[SCHED_NRES]);

/* May a migration start on node N (per-node limit)? */
bool sched__node_slot(const struct sched__ctx *ctx, uint32_t n);
/* May a migration start in the cluster (cluster-wide limit)? */
bool sched__cluster_slot(const struct sched__ctx *ctx);

/*
 * The destination for LOAD leaving SRC: among the nodes that may receive,
 * other than SRC and AVOID (SCHED_NONE: none), with a free migration slot
 * when NEED_SLOT, the one whose dominant utilization after the move is
 * lowest and within MARK; ties go to the smaller id. SCHED_NONE when there
 * is none, with *ret_miss (may be NULL) saying why.
 */
uint32_t sched__find_dest(struct sched__ctx *ctx, const double load[SCHED_NRES], uint32_t src,
                          uint32_t avoid, enum sched__mark mark, bool need_slot,
                          struct sched__miss *ret_miss);

/*
 * The node an automatic move must not send endpoint E to: the one its last
 * move left, within return_block_ms. SCHED_NONE when there is none.
 */
uint32_t sched__return_blocked(const struct sched__ctx *ctx, const struct sched_endpoint *e);

/*
 * Was the miss for lack of room (more capacity would help: wake a node),
 * rather than because the nodes with room were at their migration limit
 * (waiting helps)?
 */
static inline bool sched__miss_is_room(const struct sched__miss *m)
{
    return m->prefiltered || m->n_busy == 0;
}

/*
 * Account for endpoint EP's load moving from SRC to DST in the projected
 * figures; SLOT: the move also takes a migration slot on both nodes and in
 * the cluster. Trials that need to take a move back save and restore the
 * figures themselves (floating-point subtraction does not undo an addition
 * exactly).
 */
void sched__apply_move(struct sched__ctx *ctx, uint32_t ep, uint32_t src, uint32_t dst, bool slot);
/* LOAD could not leave NODE for lack of room: record the need for capacity. */
void sched__need_room(struct sched__ctx *ctx, uint32_t node, const double load[SCHED_NRES]);
/* N loses endpoints in this evaluation: it must not receive any. */
void sched__mark_shedding(struct sched__ctx *ctx, uint32_t n);
/* The projected figures changed in a way that may have freed room. */
static inline void sched__room_changed(struct sched__ctx *ctx)
{
    ctx->room_valid = false;
}

/* Milliseconds before EP may be tried again after aborted migrations (0: now). */
int64_t sched__backoff_left(const struct sched__ctx *ctx, const struct sched_endpoint *e);
/* Milliseconds before EP may be moved automatically again (0: now). */
int64_t sched__cooldown_left(const struct sched__ctx *ctx, const struct sched_endpoint *e);
/* Migration bandwidth between two nodes: the slower side's. */
double sched__bandwidth(const struct sched__ctx *ctx, uint32_t a, uint32_t b);
/* Elapsed time since T (T in the past; 0 if T is in the future). */
int64_t sched__since(const struct sched__ctx *ctx, int64_t t);

/* ---- plan.c ------------------------------------------------------------- */

/*
 * Append a decision to the plan: zeroed, indices SCHED_NONE, text empty.
 * Returns NULL on allocation failure. The pointer is valid until the next
 * sched__decide.
 */
struct sched_decision *sched__decide(struct sched__ctx *ctx, enum sched_action action,
                                     enum sched_policy policy, enum sched_reason reason,
                                     bool automatic);

/* ---- explain.c ---------------------------------------------------------- */

/* Append formatted text to D's explanation (cut at SCHED_TEXT_MAX). */
void sched__say(struct sched_decision *d, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));

/* Small formatters into caller buffers of SCHED__FMT bytes (loads: SCHED__FMT_LOAD). */
#define SCHED__FMT 48
#define SCHED__FMT_LOAD (2 * SCHED__FMT + 4)
const char *sched__fmt_ms(char *buf, int64_t ms);      /* "2m10s", "40s", "350ms", "1h05m" */
const char *sched__fmt_secs(char *buf, double s);      /* "0.7 s", "12 ms", "3m05s" */
const char *sched__fmt_bytes(char *buf, double bytes); /* "64 MiB", "1.5 GiB", "512 B" */
const char *sched__fmt_load(char *buf, const double load[SCHED_NRES]); /* "0.6 cores, 512 MiB" */
const char *sched__fmt_amount(char *buf, enum sched_resource r, double v); /* "2 cores" / "1 GiB" */

/* "kv (arena 64 MiB, dirty 2 MiB/s, load 0.6 cores, 512 MiB)" */
void sched__say_endpoint(struct sched_decision *d, const struct sched_endpoint *e);
/* "n3 (cpu 35% -> 50%" : the node and its dominant utilization before and after. */
void sched__say_node_change(struct sched_decision *d, const struct sched_node *n,
                            enum sched_resource r, double before, double after);
/* "; predicted 0.7 s, downtime 12 ms" (+ stop-and-copy / over budget notes) */
void sched__say_cost(struct sched_decision *d, const struct sched_cost *c,
                     const struct sched_config *cfg);
/* " (closest n3: cpu 75% -> 95%)" or the room shortage, from a miss. */
void sched__say_miss(struct sched_decision *d, const struct sched__ctx *ctx,
                     const struct sched__miss *m);

/* ---- the policies (maintenance.c, overload.c, energy.c) ---------------- */

int sched__maintenance(struct sched__ctx *ctx);
int sched__overload(struct sched__ctx *ctx);
int sched__energy(struct sched__ctx *ctx);
/* The body of sched_drain_dry_run, on a context built for it. */
int sched__drain_dry_run(struct sched__ctx *ctx, uint32_t node);

/*
 * Record a MIGRATE or REPLACE decision for endpoint EP from SRC to DST and
 * account for it. The caller adds the policy's part of the text first
 * (passed as PREFIX, already formatted); this adds the endpoint, the
 * destination's figures and the cost. 0 or -ENOMEM.
 */
int sched__emit_move(struct sched__ctx *ctx, enum sched_policy policy, enum sched_reason reason,
                     bool automatic, uint32_t ep, uint32_t src, uint32_t dst,
                     enum sched__mark mark, const char *prefix);

#endif
