/*
 * Energy saving (DESIGN.md §6, after VMware DPM and oVirt power_saving).
 *
 * Power off: when the cluster has been underused (average below the low
 * mark) for the power-off window, pick the least loaded node whose every
 * endpoint fits on the other nodes at or below their target marks, with the
 * spare-capacity reserve and the minimum number of powered-on nodes still
 * kept; mark it "evacuating" in its history (so that no policy sends it
 * anything), move its endpoints off over as many evaluations as the
 * concurrency limits need, and once it is empty power it off. The
 * evacuation is re-checked at every evaluation and abandoned, with a reason,
 * as soon as it stops fitting or load rises.
 *
 * Power on: when a move found no destination (overload or drain), or when
 * the cluster has been under pressure (average above the high mark, or spare
 * capacity below the reserve) for the power-on window, wake one standby
 * node, the largest; never a second one while the first is still waking.
 *
 * Stability: the power-off window is much longer than the power-on window
 * (DPM: 40 min against 5), each power-off or power-on restarts its window,
 * and the target mark bounds every destination, so that powering a node off
 * cannot by itself push the cluster into a power-on.
 */
#include <errno.h>
#include <inttypes.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "scheduler/internal.h"

struct ecand {
    double share;
    uint64_t id;
    uint32_t ep;
};

static int cmp_ecand(const void *a, const void *b)
{
    const struct ecand *x = a, *y = b;
    if (x->share != y->share)
        return x->share > y->share ? -1 : 1;
    return x->id < y->id ? -1 : x->id > y->id;
}

struct enode {
    double util;
    uint32_t rank;
    uint32_t node;
};

static int cmp_enode(const void *a, const void *b)
{
    const struct enode *x = a, *y = b;
    if (x->util != y->util)
        return x->util < y->util ? -1 : 1;
    return x->rank < y->rank ? -1 : x->rank > y->rank;
}

/* Figures saved before a trial move, to restore them exactly afterwards. */
struct saved {
    uint32_t node;
    double proj[SCHED_NRES];
};

struct energy {
    struct sched__ctx *ctx;
    bool automatic;
    struct ecand *cands; /* room for the largest node's endpoints */
    struct saved *log;   /* twice that */
    char why[160];       /* why the last trial failed */
};

static bool is_eligible_on(const struct sched_node *n)
{
    return n->state == SCHED_NODE_UP && n->eligible && n->power == SCHED_POWER_ON;
}

/* Cores below the high marks of the eligible powered-on nodes, without node SKIP. */
static double spare_without(const struct sched__ctx *ctx, uint32_t skip)
{
    const struct sched_view *v = ctx->view;
    double spare = 0;
    for (size_t r = 0; r < v->n_nodes; r++) {
        uint32_t i = ctx->by_rank[r];
        if (i == skip || !is_eligible_on(&v->nodes[i]) || ctx->hist_out[i].evacuating)
            continue;
        double room = ctx->cfg->high_mark * ctx->nodes[i].cap[SCHED_CPU] -
                      ctx->nodes[i].proj[SCHED_CPU];
        spare += room > 0 ? room : 0;
    }
    return spare;
}

static size_t count_eligible_on(const struct sched__ctx *ctx)
{
    size_t n = 0;
    for (size_t i = 0; i < ctx->view->n_nodes; i++)
        n += is_eligible_on(&ctx->view->nodes[i]);
    return n;
}

/*
 * Would powering C off keep the minimum of powered-on nodes and the spare
 * reserve? Checked when C is chosen and again just before the power-off,
 * since nodes may have gone down in between. Fills E->why when not.
 */
static bool keeps_reserve(struct energy *E, uint32_t c)
{
    const struct sched__ctx *ctx = E->ctx;
    const struct sched_config *cfg = ctx->cfg;
    char a[SCHED__FMT], b[SCHED__FMT];
    size_t on = count_eligible_on(ctx);
    if (on <= cfg->min_powered_on) {
        snprintf(E->why, sizeof(E->why),
                 "only %zu eligible node%s powered on (min_powered_on %" PRIu32 ")", on,
                 on == 1 ? " is" : "s are", cfg->min_powered_on);
        return false;
    }
    if (cfg->power_reserve_cpu > 0) {
        double spare = spare_without(ctx, c);
        if (spare < cfg->power_reserve_cpu) {
            snprintf(E->why, sizeof(E->why),
                     "%s: without it the spare capacity would be %s < reserve %s",
                     ctx->view->nodes[c].id, sched__fmt_amount(a, SCHED_CPU, spare),
                     sched__fmt_amount(b, SCHED_CPU, cfg->power_reserve_cpu));
            return false;
        }
    }
    return true;
}

/*
 * The endpoints of C still to move (not in flight), largest first. With
 * STRICT (choosing a node to empty), any endpoint that cannot be moved
 * automatically now rules C out: *ret_ok false and E->why says which.
 */
static uint32_t evac_candidates(struct energy *E, uint32_t c, bool strict, bool *ret_ok)
{
    struct sched__ctx *ctx = E->ctx;
    const struct sched_view *v = ctx->view;
    const struct sched_config *cfg = ctx->cfg;
    const struct sched__node *w = &ctx->nodes[c];
    char t[SCHED__FMT];
    uint32_t n = 0;

    *ret_ok = true;
    for (uint32_t k = ctx->ep_first[c]; k < ctx->ep_first[c + 1]; k++) {
        uint32_t ep = ctx->ep_list[k];
        const struct sched_endpoint *e = &v->endpoints[ep];
        const char *why = NULL;
        int64_t left;
        if (ctx->ep_mig[ep] != SCHED_NONE)
            continue; /* already leaving (only while evacuating: candidates have none) */
        if (e->state == SCHED_EP_MIGRATING)
            why = "is migrating";
        else if (e->opt_out)
            why = "opted out of automatic moves";
        else if (e->aborts >= cfg->max_aborts)
            why = "was given up after repeated aborts";
        if (why == NULL && strict && e->state == SCHED_EP_RUNNING) {
            if ((left = sched__backoff_left(ctx, e)) > 0) {
                snprintf(E->why, sizeof(E->why), "%s: %s is in retry backoff (%s left)",
                         v->nodes[c].id, e->name, sched__fmt_ms(t, left));
                *ret_ok = false;
                return 0;
            }
            if ((left = sched__cooldown_left(ctx, e)) > 0) {
                snprintf(E->why, sizeof(E->why), "%s: %s moved recently (cooldown, %s left)",
                         v->nodes[c].id, e->name, sched__fmt_ms(t, left));
                *ret_ok = false;
                return 0;
            }
            struct sched_cost cost;
            sched_predict(cfg, e->arena_size, e->dirty_rate, w->bw, &cost);
            if (cost.over_budget)
                why = "would exceed the downtime budget";
        }
        if (why != NULL) {
            snprintf(E->why, sizeof(E->why), "%s: %s %s", v->nodes[c].id, e->name, why);
            *ret_ok = false;
            return 0;
        }
        double load[SCHED_NRES];
        sched__ep_load(e, load);
        E->cands[n++] = (struct ecand){sched__share(w, load), e->id, ep};
    }
    qsort(E->cands, n, sizeof(*E->cands), cmp_ecand);
    return n;
}

/*
 * Would the N candidates of C all fit elsewhere at or below target, with
 * the reserve kept? Places them tentatively (ignoring migration slots: the
 * moves may take several evaluations) and takes every placement back.
 */
static bool evac_fits(struct energy *E, uint32_t c, uint32_t n)
{
    struct sched__ctx *ctx = E->ctx;
    const struct sched_view *v = ctx->view;
    const struct sched_config *cfg = ctx->cfg;
    size_t n_log = 0;
    bool ok = true;
    char a[SCHED__FMT_LOAD];

    for (uint32_t k = 0; k < n && ok; k++) {
        uint32_t ep = E->cands[k].ep;
        struct sched__miss miss;
        double load[SCHED_NRES];
        sched__ep_load(&v->endpoints[ep], load);
        uint32_t dst = sched__find_dest(ctx, load, c, sched__return_blocked(ctx, &v->endpoints[ep]),
                                        SCHED__AT_MOST_TARGET, false, &miss);
        if (dst == SCHED_NONE) {
            snprintf(E->why, sizeof(E->why), "%s: %s (%s) fits on no other node within target %.0f%%",
                     v->nodes[c].id, v->endpoints[ep].name, sched__fmt_load(a, load),
                     cfg->target_mark * 100);
            ok = false;
            break;
        }
        E->log[n_log].node = c;
        memcpy(E->log[n_log++].proj, ctx->nodes[c].proj, sizeof(ctx->nodes[c].proj));
        E->log[n_log].node = dst;
        memcpy(E->log[n_log++].proj, ctx->nodes[dst].proj, sizeof(ctx->nodes[dst].proj));
        sched__apply_move(ctx, ep, c, dst, false);
    }
    if (ok)
        ok = keeps_reserve(E, c); /* with C's endpoints placed elsewhere */
    while (n_log > 0) {
        n_log--;
        memcpy(ctx->nodes[E->log[n_log].node].proj, E->log[n_log].proj,
               sizeof(E->log[n_log].proj));
    }
    sched__room_changed(ctx);
    return ok;
}

/* Move what slots allow of C's N candidates (already checked to fit). */
static int evac_moves(struct energy *E, uint32_t c, uint32_t n, const char *prefix)
{
    struct sched__ctx *ctx = E->ctx;
    const struct sched_view *v = ctx->view;
    for (uint32_t k = 0; k < n; k++) {
        uint32_t ep = E->cands[k].ep;
        const struct sched_endpoint *e = &v->endpoints[ep];
        bool live = e->state == SCHED_EP_RUNNING;
        double load[SCHED_NRES];
        if (live && (!sched__cluster_slot(ctx) || !sched__node_slot(ctx, c)))
            continue; /* the rest go in later evaluations */
        if (live && sched__backoff_left(ctx, e) > 0)
            continue;
        sched__ep_load(e, load);
        uint32_t dst = sched__find_dest(ctx, load, c, sched__return_blocked(ctx, e),
                                        SCHED__AT_MOST_TARGET, live, NULL);
        if (dst == SCHED_NONE)
            continue; /* every node with room is at its limit: later */
        int rc = sched__emit_move(ctx, SCHED_POL_ENERGY, SCHED_R_UNDERUSED, E->automatic, ep, c,
                                  dst, SCHED__AT_MOST_TARGET, prefix);
        if (rc < 0)
            return rc;
    }
    return 0;
}

static int power_off(struct energy *E, uint32_t c, const char *intro)
{
    struct sched__ctx *ctx = E->ctx;
    const struct sched_config *cfg = ctx->cfg;
    char a[SCHED__FMT];
    struct sched_decision *d = sched__decide(ctx, SCHED_ACT_POWER_OFF, SCHED_POL_ENERGY,
                                             SCHED_R_UNDERUSED, E->automatic);
    if (d == NULL)
        return -ENOMEM;
    d->node = c;
    d->fig.cluster_util = ctx->plan->cluster_util;
    d->fig.mark = cfg->low_mark;
    double spare = spare_without(ctx, c);
    sched__say(d, "%s%s is empty: powering it off (standby); spare capacity then %s",
               intro, ctx->view->nodes[c].id, sched__fmt_amount(a, SCHED_CPU, spare));
    if (cfg->power_reserve_cpu > 0)
        sched__say(d, " (reserve %s)", sched__fmt_amount(a, SCHED_CPU, cfg->power_reserve_cpu));
    if (E->automatic) {
        ctx->hist_out[c].evacuating = false;
        ctx->hist_out[c].evacuating_since = 0;
        /* Every power-off needs a fresh window of underuse before the next one. */
        ctx->plan->cluster_hist.underused_since = ctx->now;
    }
    return 0;
}

static int abandon(struct energy *E, uint32_t c, const char *why)
{
    struct sched__ctx *ctx = E->ctx;
    struct sched_decision *d = sched__decide(ctx, SCHED_ACT_NOTHING, SCHED_POL_ENERGY,
                                             SCHED_R_ABANDONED, E->automatic);
    if (d == NULL)
        return -ENOMEM;
    d->node = c;
    d->fig.cluster_util = ctx->plan->cluster_util;
    sched__say(d, "stopped emptying %s for power-off: %s; it stays on and eligible",
               ctx->view->nodes[c].id, why);
    ctx->hist_out[c].evacuating = false;
    ctx->hist_out[c].evacuating_since = 0;
    ctx->nodes[c].dest = !ctx->nodes[c].shedding && is_eligible_on(&ctx->view->nodes[c]);
    sched__room_changed(ctx);
    return 0;
}

/* ------------------------------------------------------------------------ */
/* Power on                                                                  */
/* ------------------------------------------------------------------------ */

/* A node whose power-on hook ran recently and that has not come up yet. */
static uint32_t waking_node(const struct sched__ctx *ctx)
{
    const struct sched_view *v = ctx->view;
    for (size_t r = 0; r < v->n_nodes; r++) {
        uint32_t i = ctx->by_rank[r];
        const struct sched_node *n = &v->nodes[i];
        if (n->power == SCHED_POWER_WAKING &&
            sched__since(ctx, n->power_since) < ctx->cfg->power_on_timeout_ms)
            return i;
    }
    return SCHED_NONE;
}

/* Could node N, once up and empty, take LOAD below its high mark? */
static bool could_hold(const struct sched__ctx *ctx, const struct sched_node *n,
                       const double load[SCHED_NRES])
{
    double cap[SCHED_NRES] = {n->capacity.cpu, n->capacity.mem};
    double base[SCHED_NRES] = {n->base_load.cpu, n->base_load.mem};
    for (int r = 0; r < SCHED_NRES; r++)
        if (cap[r] > 0 && !((base[r] + load[r]) / cap[r] < ctx->cfg->high_mark))
            return false;
    return true;
}

/*
 * The standby node to wake: one that is off (before one that failed to
 * come up in time), the largest, then the smallest id. NEED (may be NULL):
 * only a node that could hold it, so that an endpoint too large for any
 * node does not wake them all one after the other.
 */
static uint32_t standby_node(const struct sched__ctx *ctx, const double *need)
{
    const struct sched_view *v = ctx->view;
    uint32_t best = SCHED_NONE;
    for (size_t r = 0; r < v->n_nodes; r++) {
        uint32_t i = ctx->by_rank[r];
        const struct sched_node *n = &v->nodes[i];
        if (n->state != SCHED_NODE_STANDBY || n->power == SCHED_POWER_ON)
            continue;
        if (need != NULL && !could_hold(ctx, n, need))
            continue;
        if (best == SCHED_NONE) {
            best = i;
            continue;
        }
        const struct sched_node *b = &v->nodes[best];
        bool off = n->power == SCHED_POWER_OFF, boff = b->power == SCHED_POWER_OFF;
        if (off != boff ? off : n->capacity.cpu > b->capacity.cpu)
            best = i;
    }
    return best;
}

static int power_on(struct energy *E, enum sched_reason reason)
{
    struct sched__ctx *ctx = E->ctx;
    const struct sched_view *v = ctx->view;
    const struct sched_config *cfg = ctx->cfg;
    const struct sched_plan *plan = ctx->plan;
    char a[SCHED__FMT], b[SCHED__FMT], t[SCHED__FMT], l[SCHED__FMT_LOAD], why[200];
    int64_t held = sched__since(ctx, plan->cluster_hist.pressure_since);

    if (reason == SCHED_R_NO_DESTINATION)
        snprintf(why, sizeof(why), "%s cannot shed: no destination stays below high %.0f%%",
                 v->nodes[ctx->need_node].id, cfg->high_mark * 100);
    else if (reason == SCHED_R_LOAD_HIGH)
        snprintf(why, sizeof(why), "cluster %s %.0f%% > high %.0f%% for %s",
                 sched_resource_name(ctx->cluster_res), plan->cluster_util * 100,
                 cfg->high_mark * 100, sched__fmt_ms(t, held));
    else
        snprintf(why, sizeof(why), "spare capacity %s < reserve %s for %s",
                 sched__fmt_amount(a, SCHED_CPU, plan->spare_cpu),
                 sched__fmt_amount(b, SCHED_CPU, cfg->power_reserve_cpu),
                 sched__fmt_ms(t, held));

    uint32_t waking = waking_node(ctx);
    if (waking != SCHED_NONE) {
        struct sched_decision *d = sched__decide(ctx, SCHED_ACT_NOTHING, SCHED_POL_ENERGY,
                                                 SCHED_R_WAKING, E->automatic);
        if (d == NULL)
            return -ENOMEM;
        d->node = waking;
        d->fig.held_ms = sched__since(ctx, v->nodes[waking].power_since);
        sched__say(d, "%s; %s is already powering on (for %s): waiting for it", why,
                   v->nodes[waking].id, sched__fmt_ms(t, d->fig.held_ms));
        return 0;
    }
    bool for_room = reason == SCHED_R_NO_DESTINATION;
    uint32_t node = standby_node(ctx, for_room ? ctx->need_load : NULL);
    struct sched_decision *d = sched__decide(ctx,
                                             node == SCHED_NONE ? SCHED_ACT_NOTHING
                                                                : SCHED_ACT_POWER_ON,
                                             SCHED_POL_ENERGY,
                                             node == SCHED_NONE ? SCHED_R_NO_STANDBY : reason,
                                             E->automatic);
    if (d == NULL)
        return -ENOMEM;
    d->fig.cluster_util = plan->cluster_util;
    d->fig.held_ms = reason == SCHED_R_NO_DESTINATION ? 0 : held;
    d->fig.window_ms = reason == SCHED_R_NO_DESTINATION ? 0 : cfg->power_on_window_ms;
    d->fig.mark = cfg->high_mark;
    if (node == SCHED_NONE) {
        if (for_room && standby_node(ctx, NULL) != SCHED_NONE)
            sched__say(d, "%s; no standby node could hold %s below high %.0f%%", why,
                       sched__fmt_load(l, ctx->need_load), cfg->high_mark * 100);
        else
            sched__say(d, "%s; no standby node is left to power on", why);
        return 0;
    }
    d->node = node;
    sched__say(d, "%s: powering on %s (%s)", why, v->nodes[node].id,
               sched__fmt_amount(a, SCHED_CPU, v->nodes[node].capacity.cpu));
    if (v->nodes[node].power == SCHED_POWER_WAKING)
        sched__say(d, "; it did not come up after the last power-on, trying again");
    if (E->automatic && ctx->plan->cluster_hist.pressure)
        ctx->plan->cluster_hist.pressure_since = ctx->now; /* one wake per window */
    return 0;
}

/* ------------------------------------------------------------------------ */
/* The policy                                                                */
/* ------------------------------------------------------------------------ */

static int continue_evacuation(struct energy *E, uint32_t c, bool pressure)
{
    struct sched__ctx *ctx = E->ctx;
    const struct sched__node *w = &ctx->nodes[c];
    char t[SCHED__FMT], prefix[SCHED_TEXT_MAX], intro[128];
    bool ok;

    if (w->n_eps == 0 && w->flying_in == 0 && w->flying_out == 0) {
        if (!keeps_reserve(E, c))
            return abandon(E, c, E->why);
        snprintf(intro, sizeof(intro), "cluster %s %.0f%% (low %.0f%%); ",
                 sched_resource_name(ctx->cluster_res), ctx->plan->cluster_util * 100,
                 ctx->cfg->low_mark * 100);
        return power_off(E, c, intro);
    }
    if (pressure || ctx->need_capacity)
        return abandon(E, c, ctx->need_capacity ? "another node needs capacity"
                                                : "the cluster is under pressure again");
    uint32_t n = evac_candidates(E, c, false, &ok);
    if (!ok || !evac_fits(E, c, n))
        return abandon(E, c, E->why);
    snprintf(prefix, sizeof(prefix), "emptying %s for power-off (for %s): ",
             ctx->view->nodes[c].id,
             sched__fmt_ms(t, sched__since(ctx, ctx->hist_out[c].evacuating_since)));
    return evac_moves(E, c, n, prefix);
}

static int start_evacuation(struct energy *E)
{
    struct sched__ctx *ctx = E->ctx;
    const struct sched_view *v = ctx->view;
    const struct sched_config *cfg = ctx->cfg;
    const struct sched_plan *plan = ctx->plan;
    struct enode *order = NULL;
    size_t n_order = 0, eligible_on = 0;
    char t[SCHED__FMT], wnd[SCHED__FMT], intro[128], reasons[3][160];
    int n_reasons = 0, rc = 0;
    struct sched_decision *d;

    int64_t held = sched__since(ctx, plan->cluster_hist.underused_since);
    snprintf(intro, sizeof(intro), "cluster %s %.0f%% < low %.0f%% for %s; ",
             sched_resource_name(ctx->cluster_res), plan->cluster_util * 100, cfg->low_mark * 100,
             sched__fmt_ms(t, held));
    eligible_on = count_eligible_on(ctx);
    if (held < cfg->power_off_window_ms) {
        /* Nothing to announce when no node could be powered off anyway. */
        if (eligible_on <= cfg->min_powered_on)
            return 0;
        d = sched__decide(ctx, SCHED_ACT_NOTHING, SCHED_POL_ENERGY, SCHED_R_WINDOW, E->automatic);
        if (d == NULL)
            return -ENOMEM;
        d->fig.cluster_util = plan->cluster_util;
        d->fig.mark = cfg->low_mark;
        d->fig.held_ms = held;
        d->fig.window_ms = cfg->power_off_window_ms;
        sched__say(d, "%swaiting for the %s window before powering a node off", intro,
                   sched__fmt_ms(wnd, cfg->power_off_window_ms));
        return 0;
    }

    for (size_t r = 0; r < v->n_nodes; r++) {
        uint32_t i = ctx->by_rank[r];
        if (!ctx->hist_out[i].hot)
            continue;
        /* Underused on average yet one node is hot: fix that before saving power. */
        d = sched__decide(ctx, SCHED_ACT_NOTHING, SCHED_POL_ENERGY, SCHED_R_BLOCKED, E->automatic);
        if (d == NULL)
            return -ENOMEM;
        d->node = i;
        d->fig.cluster_util = plan->cluster_util;
        sched__say(d, "%sbut %s is above high %.0f%%: no power-off for now", intro, v->nodes[i].id,
                   cfg->high_mark * 100);
        return 0;
    }

    order = malloc((v->n_nodes ? v->n_nodes : 1) * sizeof(*order));
    if (order == NULL)
        return -ENOMEM;
    for (size_t r = 0; r < v->n_nodes; r++) {
        uint32_t i = ctx->by_rank[r];
        const struct sched__node *w = &ctx->nodes[i];
        if (!is_eligible_on(&v->nodes[i]))
            continue;
        /* A node with migrations in flight either way is busy, not idle. */
        if (w->shedding || w->flying_in > 0 || ctx->hist_out[i].hot)
            continue;
        order[n_order++] = (struct enode){sched__util(w, w->proj, NULL), w->rank, i};
    }
    if (eligible_on <= cfg->min_powered_on) {
        d = sched__decide(ctx, SCHED_ACT_NOTHING, SCHED_POL_ENERGY, SCHED_R_BLOCKED, E->automatic);
        if (d == NULL) {
            rc = -ENOMEM;
            goto out_free;
        }
        d->fig.cluster_util = plan->cluster_util;
        d->fig.count = (uint32_t)eligible_on;
        sched__say(d, "%sbut only %zu eligible node%s powered on (min_powered_on %" PRIu32 ")",
                   intro, eligible_on, eligible_on == 1 ? " is" : "s are", cfg->min_powered_on);
        goto out_free;
    }
    qsort(order, n_order, sizeof(*order), cmp_enode);

    for (size_t k = 0; k < n_order && k < SCHED__ENERGY_TRIES; k++) {
        uint32_t c = order[k].node;
        bool ok;
        uint32_t n = evac_candidates(E, c, true, &ok);
        if (ok && evac_fits(E, c, n)) {
            char prefix[SCHED_TEXT_MAX];
            if (E->automatic) {
                ctx->hist_out[c].evacuating = true;
                ctx->hist_out[c].evacuating_since = ctx->now;
                ctx->nodes[c].dest = false;
                sched__room_changed(ctx);
            }
            if (ctx->nodes[c].n_eps == 0) {
                rc = power_off(E, c, intro);
                goto out_free;
            }
            snprintf(prefix, sizeof(prefix), "%semptying %s (%.0f%%, the least loaded that "
                                             "fits elsewhere) to power it off: ",
                     intro, v->nodes[c].id, order[k].util * 100);
            rc = evac_moves(E, c, n, prefix);
            goto out_free;
        }
        if (n_reasons < 3)
            snprintf(reasons[n_reasons++], sizeof(reasons[0]), "%s", E->why);
    }

    d = sched__decide(ctx, SCHED_ACT_NOTHING, SCHED_POL_ENERGY, SCHED_R_BLOCKED, E->automatic);
    if (d == NULL) {
        rc = -ENOMEM;
        goto out_free;
    }
    d->fig.cluster_util = plan->cluster_util;
    d->fig.count = (uint32_t)(n_order < SCHED__ENERGY_TRIES ? n_order : SCHED__ENERGY_TRIES);
    sched__say(d, "%sbut no node can be emptied", intro);
    for (int k = 0; k < n_reasons; k++)
        sched__say(d, "%s%s", k == 0 ? ": " : "; ", reasons[k]);
    if (n_order == 0)
        sched__say(d, ": every node is busy with migrations or overloaded");

out_free:
    free(order);
    return rc;
}

int sched__energy(struct sched__ctx *ctx)
{
    const struct sched_view *v = ctx->view;
    const struct sched_config *cfg = ctx->cfg;
    const struct sched_plan *plan = ctx->plan;
    struct energy E = {.ctx = ctx, .automatic = cfg->energy_mode == SCHED_MODE_AUTOMATIC};
    uint32_t most_eps = 0, evac = SCHED_NONE;
    int rc = 0;

    if (cfg->energy_mode == SCHED_MODE_OFF)
        return 0;

    for (size_t i = 0; i < v->n_nodes; i++)
        if (ctx->nodes[i].n_eps > most_eps)
            most_eps = ctx->nodes[i].n_eps;
    E.cands = malloc((most_eps ? most_eps : 1) * sizeof(*E.cands));
    E.log = malloc((most_eps ? most_eps : 1) * 2 * sizeof(*E.log));
    if (E.cands == NULL || E.log == NULL) {
        rc = -ENOMEM;
        goto out_free;
    }

    /* At most one evacuation at a time: keep the first (by id), drop strays. */
    for (size_t r = 0; r < v->n_nodes; r++) {
        uint32_t i = ctx->by_rank[r];
        if (!ctx->hist_out[i].evacuating)
            continue;
        if (evac == SCHED_NONE)
            evac = i;
        else
            ctx->hist_out[i].evacuating = false;
    }

    const struct sched_cluster_hist *h = &plan->cluster_hist;
    bool pressure_held = h->pressure &&
                         sched__since(ctx, h->pressure_since) >= cfg->power_on_window_ms;
    if (ctx->need_capacity || pressure_held) {
        if (evac != SCHED_NONE &&
            (rc = abandon(&E, evac, ctx->need_capacity ? "another node needs capacity"
                                                       : "the cluster is under pressure")) < 0)
            goto out_free;
        rc = power_on(&E, ctx->need_capacity ? SCHED_R_NO_DESTINATION
                          : plan->cluster_util > cfg->high_mark ? SCHED_R_LOAD_HIGH
                                                                 : SCHED_R_RESERVE);
        goto out_free;
    }
    if (evac != SCHED_NONE) {
        rc = continue_evacuation(&E, evac, h->pressure);
        goto out_free;
    }
    if (h->underused && !h->pressure && waking_node(ctx) == SCHED_NONE)
        rc = start_evacuation(&E);

out_free:
    free(E.cands);
    free(E.log);
    return rc;
}
