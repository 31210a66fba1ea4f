/*
 * Maintenance: `dvs-manager node drain NODE` (DESIGN.md §6). Every endpoint
 * leaves NODE for nodes that stay below their high marks; moves share the
 * per-node and cluster-wide concurrency limits with everything else; the
 * drain is done only when no endpoint is placed on NODE any more and no
 * migration touching it is in flight (a drain reported done while a move
 * is still frozen is what nomad and Kubernetes users complain about).
 *
 * Several drains at once share the budget fairly: they take one move each in
 * turn (earliest deadline first), so one large drain cannot starve another.
 * Inside one drain the largest endpoints go first, first-fit-decreasing
 * style: the big ones are the ones that stop fitting once the cluster fills.
 */
#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "scheduler/internal.h"

struct cand {
    double share; /* of the drained node's capacity, dominant resource */
    uint64_t id;
    uint32_t ep;
};

static int cmp_cand(const void *a, const void *b)
{
    const struct cand *x = a, *y = b;
    if (x->share != y->share)
        return x->share > y->share ? -1 : 1;
    return x->id < y->id ? -1 : x->id > y->id;
}

struct drain {
    uint32_t node;
    int64_t deadline; /* INT64_MAX: none */
    struct cand *cands;
    uint32_t n_cands, next;
    uint32_t left;     /* endpoints the directory still places on the node */
    uint32_t moving;   /* ...of which in flight (or migrating without a record) */
    uint32_t planned, no_dest, backoff;
    bool node_full;    /* the node's own limit stopped it */
    bool dests_full;   /* the nodes with room were at their limits */
    bool active;       /* not done, not expired, node reachable */
};

static int cmp_drain(const void *a, const void *b, const struct sched__ctx *ctx)
{
    const struct drain *x = a, *y = b;
    if (x->deadline != y->deadline)
        return x->deadline < y->deadline ? -1 : 1;
    uint32_t rx = ctx->nodes[x->node].rank, ry = ctx->nodes[y->node].rank;
    return rx < ry ? -1 : rx > ry;
}

/* Insertion sort: a handful of drains, and qsort has no context argument. */
static void sort_drains(struct drain *d, size_t n, const struct sched__ctx *ctx)
{
    for (size_t i = 1; i < n; i++) {
        struct drain x = d[i];
        size_t j = i;
        while (j > 0 && cmp_drain(&d[j - 1], &x, ctx) > 0) {
            d[j] = d[j - 1];
            j--;
        }
        d[j] = x;
    }
}

/*
 * The endpoints of NODE that can be moved now (not in flight), largest first,
 * into CANDS (room for n_eps); counts the others as moving.
 */
static uint32_t collect(struct sched__ctx *ctx, uint32_t node, struct cand *cands,
                        uint32_t *ret_moving)
{
    const struct sched_view *v = ctx->view;
    const struct sched__node *w = &ctx->nodes[node];
    uint32_t n = 0, moving = 0;
    for (uint32_t k = ctx->ep_first[node]; k < ctx->ep_first[node + 1]; k++) {
        uint32_t ep = ctx->ep_list[k];
        const struct sched_endpoint *e = &v->endpoints[ep];
        if (ctx->ep_mig[ep] != SCHED_NONE || e->state == SCHED_EP_MIGRATING) {
            moving++;
            continue;
        }
        double load[SCHED_NRES];
        sched__ep_load(e, load);
        cands[n++] = (struct cand){sched__share(w, load), e->id, ep};
    }
    qsort(cands, n, sizeof(*cands), cmp_cand);
    *ret_moving = moving;
    return n;
}

static void say_deadline(struct sched_decision *d, const struct sched__ctx *ctx, int64_t deadline)
{
    char t[SCHED__FMT];
    if (deadline == INT64_MAX)
        return;
    if (deadline > ctx->now)
        sched__say(d, "; deadline in %s", sched__fmt_ms(t, deadline - ctx->now));
    else
        sched__say(d, "; deadline passed %s ago", sched__fmt_ms(t, ctx->now - deadline));
}

/* The endpoint could not be placed: say why, and ask energy for capacity. */
static int explain_no_dest(struct sched__ctx *ctx, uint32_t node, uint32_t ep,
                           const struct sched__miss *miss, bool automatic)
{
    const struct sched_view *v = ctx->view;
    struct sched_decision *d = sched__decide(ctx, SCHED_ACT_NOTHING, SCHED_POL_MAINTENANCE,
                                             SCHED_R_NO_DESTINATION, automatic);
    if (d == NULL)
        return -ENOMEM;
    d->node = node;
    d->endpoint = ep;
    d->fig.mark = ctx->cfg->high_mark;
    if (miss->closest != SCHED_NONE) {
        d->fig.dst_before = miss->before;
        d->fig.dst_after = miss->after;
        d->fig.resource = miss->res;
    }
    sched__say(d, "draining %s: cannot move ", v->nodes[node].id);
    sched__say_endpoint(d, &v->endpoints[ep]);
    sched__say(d, ": no eligible node stays below high %.0f%% with it; ",
               ctx->cfg->high_mark * 100);
    sched__say_miss(d, ctx, miss);
    return 0;
}

/*
 * Try to move DR's next candidate. Moves on to the following candidate,
 * unless a concurrency limit stopped it: then sets *ret_cluster_full or
 * DR's flags and leaves the candidate for the next evaluation. 0 or -ENOMEM.
 */
static int drain_step(struct sched__ctx *ctx, struct drain *dr, bool *ret_cluster_full)
{
    const struct sched_view *v = ctx->view;
    uint32_t ep = dr->cands[dr->next].ep;
    const struct sched_endpoint *e = &v->endpoints[ep];
    bool live = e->state == SCHED_EP_RUNNING;
    struct sched__miss miss;
    double load[SCHED_NRES];
    char t[SCHED__FMT], prefix[SCHED_TEXT_MAX];

    if (live) {
        if (!sched__cluster_slot(ctx)) {
            *ret_cluster_full = true;
            return 0;
        }
        if (!sched__node_slot(ctx, dr->node)) {
            dr->node_full = true;
            return 0;
        }
        int64_t wait = sched__backoff_left(ctx, e);
        if (wait > 0) {
            /* Retry later, not in a loop: an abort usually has a cause that takes time. */
            dr->next++;
            dr->backoff++;
            struct sched_decision *d = sched__decide(ctx, SCHED_ACT_NOTHING,
                                                     SCHED_POL_MAINTENANCE, SCHED_R_BACKOFF, true);
            if (d == NULL)
                return -ENOMEM;
            d->node = dr->node;
            d->endpoint = ep;
            d->fig.count = e->aborts;
            d->fig.held_ms = wait;
            sched__say(d, "draining %s: %s aborted %" PRIu32 " time%s in a row; retry in %s",
                       v->nodes[dr->node].id, e->name, e->aborts, e->aborts == 1 ? "" : "s",
                       sched__fmt_ms(t, wait));
            return 0;
        }
    }

    sched__ep_load(e, load);
    uint32_t dst = sched__find_dest(ctx, load, dr->node, SCHED_NONE, SCHED__BELOW_HIGH, live, &miss);
    if (dst == SCHED_NONE && !sched__miss_is_room(&miss)) {
        /* Room exists but its nodes are busy: wait for them, as for any limit. */
        dr->dests_full = true;
        return 0;
    }
    dr->next++;
    if (dst == SCHED_NONE) {
        dr->no_dest++;
        sched__need_room(ctx, dr->node, load);
        return explain_no_dest(ctx, dr->node, ep, &miss, true);
    }
    snprintf(prefix, sizeof(prefix), "draining %s: ", v->nodes[dr->node].id);
    dr->planned++;
    return sched__emit_move(ctx, SCHED_POL_MAINTENANCE, SCHED_R_DRAIN, true, ep, dr->node, dst,
                            SCHED__BELOW_HIGH, prefix);
}

/* Decisions for the drains' ends: done, expired, unreachable. Marks the others active. */
static int drain_ends(struct sched__ctx *ctx, struct drain *dr)
{
    const struct sched_view *v = ctx->view;
    const struct sched_node *n = &v->nodes[dr->node];
    const struct sched__node *w = &ctx->nodes[dr->node];
    struct sched_decision *d;

    if (dr->left == 0 && w->flying_in == 0) {
        d = sched__decide(ctx, SCHED_ACT_DRAIN_DONE, SCHED_POL_MAINTENANCE, SCHED_R_DRAIN_DONE,
                          true);
        if (d == NULL)
            return -ENOMEM;
        d->node = dr->node;
        sched__say(d, "%s drained: no endpoint is placed on it and no migration touching it "
                      "is in flight; it stays ineligible until node enable", n->id);
        return 0;
    }
    if (dr->deadline != INT64_MAX && ctx->now >= dr->deadline) {
        d = sched__decide(ctx, SCHED_ACT_DRAIN_EXPIRED, SCHED_POL_MAINTENANCE,
                          SCHED_R_DRAIN_DEADLINE, true);
        if (d == NULL)
            return -ENOMEM;
        d->node = dr->node;
        d->fig.count = dr->left;
        sched__say(d, "draining %s: deadline passed with %" PRIu32 " endpoint%s left (%" PRIu32
                      " in flight%s); no new moves",
                   n->id, dr->left, dr->left == 1 ? "" : "s", dr->moving,
                   w->flying_in ? ", and migrations still arriving" : "");
        say_deadline(d, ctx, dr->deadline);
        return 0;
    }
    if (!w->powered) {
        d = sched__decide(ctx, SCHED_ACT_NOTHING, SCHED_POL_MAINTENANCE, SCHED_R_NODE_DOWN, true);
        if (d == NULL)
            return -ENOMEM;
        d->node = dr->node;
        d->fig.count = dr->left;
        sched__say(d, "draining %s: the node is not reachable (%s); %" PRIu32
                      " endpoint%s cannot be live-migrated until it is back",
                   n->id, sched_node_state_name(n->state), dr->left, dr->left == 1 ? "" : "s");
        return 0;
    }
    dr->active = true;
    return 0;
}

static int drain_progress(struct sched__ctx *ctx, const struct drain *dr, bool cluster_full)
{
    const struct sched_view *v = ctx->view;
    uint32_t waiting = dr->n_cands - dr->next;
    struct sched_decision *d = sched__decide(ctx, SCHED_ACT_NOTHING, SCHED_POL_MAINTENANCE,
                                             SCHED_R_DRAIN_PROGRESS, true);
    if (d == NULL)
        return -ENOMEM;
    d->node = dr->node;
    d->fig.count = dr->left;
    sched__say(d, "draining %s: %" PRIu32 " endpoint%s left: %" PRIu32 " in flight, %" PRIu32
                  " planned now",
               v->nodes[dr->node].id, dr->left, dr->left == 1 ? "" : "s", dr->moving,
               dr->planned);
    if (waiting > 0) {
        if (cluster_full)
            sched__say(d, ", %" PRIu32 " waiting for the cluster limit (%" PRIu32 " at once)",
                       waiting, ctx->cfg->max_cluster);
        else if (dr->node_full)
            sched__say(d, ", %" PRIu32 " waiting for %s's limit (%" PRIu32 " at once)", waiting,
                       v->nodes[dr->node].id, ctx->cfg->max_per_node);
        else
            sched__say(d, ", %" PRIu32 " waiting for destinations at their limit (%" PRIu32
                          " at once)",
                       waiting, ctx->cfg->max_per_node);
    }
    if (ctx->nodes[dr->node].flying_in > 0)
        sched__say(d, ", %" PRIu32 " migration%s still arriving (started before the drain)",
                   ctx->nodes[dr->node].flying_in, ctx->nodes[dr->node].flying_in == 1 ? "" : "s");
    if (dr->backoff > 0)
        sched__say(d, ", %" PRIu32 " in retry backoff", dr->backoff);
    if (dr->no_dest > 0)
        sched__say(d, ", %" PRIu32 " without a destination", dr->no_dest);
    say_deadline(d, ctx, dr->deadline);
    return 0;
}

int sched__maintenance(struct sched__ctx *ctx)
{
    const struct sched_view *v = ctx->view;
    struct drain *drains = NULL;
    struct cand *pool = NULL;
    size_t n_drains = 0, pool_len = 0;
    int rc = 0;

    for (size_t i = 0; i < v->n_nodes; i++) {
        if (v->nodes[i].state == SCHED_NODE_DRAINING) {
            n_drains++;
            pool_len += ctx->nodes[i].n_eps;
        }
    }
    if (n_drains == 0)
        return 0;
    drains = calloc(n_drains, sizeof(*drains));
    pool = malloc((pool_len ? pool_len : 1) * sizeof(*pool));
    if (drains == NULL || pool == NULL) {
        rc = -ENOMEM;
        goto out_free;
    }

    n_drains = 0;
    for (size_t r = 0; r < v->n_nodes; r++) {
        uint32_t i = ctx->by_rank[r];
        const struct sched_node *n = &v->nodes[i];
        if (n->state != SCHED_NODE_DRAINING)
            continue;
        struct drain *dr = &drains[n_drains++];
        dr->node = i;
        dr->deadline = n->drain_deadline ? n->drain_deadline : INT64_MAX;
        dr->left = ctx->nodes[i].n_eps;
    }
    sort_drains(drains, n_drains, ctx);

    size_t used = 0;
    for (size_t k = 0; k < n_drains; k++) {
        struct drain *dr = &drains[k];
        if ((rc = drain_ends(ctx, dr)) < 0)
            goto out_free;
        if (!dr->active)
            continue;
        dr->cands = pool + used;
        dr->n_cands = collect(ctx, dr->node, dr->cands, &dr->moving);
        used += dr->n_cands;
    }

    /* Round robin: each active drain takes one move in turn until none can. */
    bool cluster_full = false, progress = true;
    while (progress && !cluster_full) {
        progress = false;
        for (size_t k = 0; k < n_drains && !cluster_full; k++) {
            struct drain *dr = &drains[k];
            if (!dr->active || dr->node_full || dr->dests_full || dr->next == dr->n_cands)
                continue;
            uint32_t before = dr->next;
            if ((rc = drain_step(ctx, dr, &cluster_full)) < 0)
                goto out_free;
            progress |= dr->next != before;
        }
    }

    for (size_t k = 0; k < n_drains; k++)
        if (drains[k].active && (rc = drain_progress(ctx, &drains[k], cluster_full)) < 0)
            goto out_free;

out_free:
    free(drains);
    free(pool);
    return rc;
}

/* ------------------------------------------------------------------------ */
/* Dry run                                                                   */
/* ------------------------------------------------------------------------ */

int sched__drain_dry_run(struct sched__ctx *ctx, uint32_t node)
{
    const struct sched_view *v = ctx->view;
    const struct sched_config *cfg = ctx->cfg;
    const struct sched_node *n = &v->nodes[node];
    const struct sched__node *w = &ctx->nodes[node];
    struct cand *cands = NULL;
    uint32_t moving = 0, movable = 0, backoff = 0;
    double bytes = 0, total_s = 0, longest_s = 0;
    char prefix[SCHED_TEXT_MAX], t[SCHED__FMT], b[SCHED__FMT];
    int rc = 0;

    cands = malloc((w->n_eps ? w->n_eps : 1) * sizeof(*cands));
    if (cands == NULL)
        return -ENOMEM;
    uint32_t n_cands = collect(ctx, node, cands, &moving);

    /* The drained node receives nothing while it drains. */
    ctx->nodes[node].dest = false;
    sched__room_changed(ctx);
    snprintf(prefix, sizeof(prefix), "drain %s would: ", n->id);

    for (uint32_t k = 0; k < n_cands; k++) {
        uint32_t ep = cands[k].ep;
        const struct sched_endpoint *e = &v->endpoints[ep];
        struct sched__miss miss;
        double load[SCHED_NRES];
        sched__ep_load(e, load);
        uint32_t dst = w->powered
                           ? sched__find_dest(ctx, load, node, SCHED_NONE, SCHED__BELOW_HIGH, false,
                                              &miss)
                           : SCHED_NONE;
        if (dst == SCHED_NONE) {
            ctx->plan->blocked++;
            if (!w->powered) {
                struct sched_decision *d = sched__decide(ctx, SCHED_ACT_NOTHING,
                                                         SCHED_POL_MAINTENANCE,
                                                         SCHED_R_NODE_DOWN, false);
                if (d == NULL) {
                    rc = -ENOMEM;
                    goto out_free;
                }
                d->node = node;
                d->endpoint = ep;
                sched__say(d, "drain %s: %s cannot be live-migrated: the node is %s", n->id,
                           e->name, sched_node_state_name(n->state));
                continue;
            }
            if ((rc = explain_no_dest(ctx, node, ep, &miss, false)) < 0)
                goto out_free;
            continue;
        }
        if ((rc = sched__emit_move(ctx, SCHED_POL_MAINTENANCE, SCHED_R_DRAIN, false, ep, node,
                                   dst, SCHED__BELOW_HIGH, prefix)) < 0)
            goto out_free;
        const struct sched_decision *d = &ctx->plan->decisions[ctx->plan->n_decisions - 1];
        movable++;
        if (d->action == SCHED_ACT_MIGRATE) {
            bytes += d->fig.cost.bytes;
            total_s += d->fig.cost.duration_s;
            if (d->fig.cost.duration_s > longest_s)
                longest_s = d->fig.cost.duration_s;
        }
        if (sched__backoff_left(ctx, e) > 0)
            backoff++;
    }

    /*
     * The summary. The drained node is the source of every move, so its own
     * limit bounds the parallelism: the estimate is the work spread over
     * that many lanes, and never less than the longest single move.
     */
    uint32_t lanes = cfg->max_per_node < cfg->max_cluster ? cfg->max_per_node : cfg->max_cluster;
    double est_s = total_s / lanes;
    if (est_s < longest_s)
        est_s = longest_s;
    struct sched_decision *d = sched__decide(ctx, SCHED_ACT_NOTHING, SCHED_POL_MAINTENANCE,
                                             SCHED_R_DRY_RUN, false);
    if (d == NULL) {
        rc = -ENOMEM;
        goto out_free;
    }
    d->node = node;
    d->fig.count = ctx->plan->blocked;
    d->fig.cost.duration_s = est_s;
    d->fig.cost.bytes = bytes;
    sched__say(d, "drain %s: %" PRIu32 " endpoint%s", n->id, w->n_eps, w->n_eps == 1 ? "" : "s");
    if (moving > 0)
        sched__say(d, " (%" PRIu32 " already moving)", moving);
    if (ctx->plan->blocked == 0)
        sched__say(d, "; all can move");
    else
        sched__say(d, "; %" PRIu32 " can move, %" PRIu32 " cannot (see above): the drain "
                      "would not complete",
                   movable, ctx->plan->blocked);
    sched__say(d, "; %s to copy, about %s at %" PRIu32 " migration%s at a time",
               sched__fmt_bytes(b, bytes), sched__fmt_secs(t, est_s), lanes,
               lanes == 1 ? "" : "s");
    if (backoff > 0)
        sched__say(d, "; %" PRIu32 " would first wait for their retry backoff", backoff);

out_free:
    free(cands);
    return rc;
}
