/*
 * Overload (DESIGN.md §6): a node above its high mark for the whole
 * overload window sheds endpoints until it is at or below the target mark.
 *
 * Which endpoints: the cheapest per unit of load relieved, where the cost is
 * the predicted migration duration (arena size and dirty rate over the
 * bandwidth, sched_predict) and the relief is the endpoint's share of the
 * node's capacity in the resources that are over target; endpoints that
 * have not moved within return_block_ms go before those that have, so load
 * is shed by settled endpoints rather than by the same one again. Endpoints
 * that moved within the cooldown, opted out, are backing off after aborts,
 * or would be frozen longer than the downtime budget are not candidates.
 *
 * Where to: the eligible node with the lowest utilization after the move,
 * which must stay below its high mark, so that the next evaluation has no
 * reason to move the endpoint again, and which is not the node the endpoint
 * left within return_block_ms. The gap between the high and target marks is
 * the hysteresis that keeps the source from triggering again as soon as its
 * load wobbles. The simulator (bench/sched_sim.c) found the return block
 * necessary: near 70% cluster load, destinations land in that gap and some
 * drift above high within the hour; without the block they sent the
 * endpoint they had just received straight back.
 */
#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "scheduler/internal.h"

struct ocand {
    bool recent;  /* moved within return_block_ms: try the settled ones first */
    double ratio; /* predicted seconds per unit of relief */
    uint64_t id;
    uint32_t ep;
};

static int cmp_ocand(const void *a, const void *b)
{
    const struct ocand *x = a, *y = b;
    if (x->recent != y->recent)
        return x->recent ? 1 : -1;
    if (x->ratio != y->ratio)
        return x->ratio < y->ratio ? -1 : 1;
    return x->id < y->id ? -1 : x->id > y->id;
}

struct source {
    double util;
    uint32_t rank;
    uint32_t node;
    enum sched_resource res;
    int64_t held;
};

static int cmp_source(const void *a, const void *b)
{
    const struct source *x = a, *y = b;
    if (x->util != y->util)
        return x->util > y->util ? -1 : 1;
    return x->rank < y->rank ? -1 : x->rank > y->rank;
}

/* Why endpoints of a source could not be candidates. */
struct blocked {
    uint32_t cooldown, opt_out, backoff, given_up, budget, no_relief, moving, idle;
    int64_t next_cooldown; /* shortest cooldown left */
};

static void say_blocked(struct sched_decision *d, const struct blocked *b)
{
    char t[SCHED__FMT];
    const char *sep = "";
#define ITEM(n, ...)                 \
    if (n) {                         \
        sched__say(d, "%s", sep);    \
        sched__say(d, __VA_ARGS__);  \
        sep = ", ";                  \
    }
    ITEM(b->cooldown, "%" PRIu32 " in cooldown (next free in %s)", b->cooldown,
         sched__fmt_ms(t, b->next_cooldown));
    ITEM(b->opt_out, "%" PRIu32 " opted out", b->opt_out);
    ITEM(b->backoff, "%" PRIu32 " in retry backoff", b->backoff);
    ITEM(b->given_up, "%" PRIu32 " given up after repeated aborts", b->given_up);
    ITEM(b->budget, "%" PRIu32 " over the downtime budget", b->budget);
    ITEM(b->moving, "%" PRIu32 " already moving", b->moving);
    ITEM(b->idle, "%" PRIu32 " not running", b->idle);
    ITEM(b->no_relief, "%" PRIu32 " relieving nothing", b->no_relief);
#undef ITEM
    if (*sep == '\0')
        sched__say(d, "it has no endpoints");
}

/* The candidates of source S, cheapest per relief first. Returns their count. */
static uint32_t candidates(struct sched__ctx *ctx, uint32_t s, struct ocand *out,
                           struct blocked *b)
{
    const struct sched_view *v = ctx->view;
    const struct sched_config *cfg = ctx->cfg;
    const struct sched__node *w = &ctx->nodes[s];
    bool over[SCHED_NRES];
    uint32_t n = 0;

    for (int r = 0; r < SCHED_NRES; r++)
        over[r] = w->cap[r] > 0 && w->proj[r] / w->cap[r] > cfg->target_mark;

    memset(b, 0, sizeof(*b));
    b->next_cooldown = INT64_MAX;
    for (uint32_t k = ctx->ep_first[s]; k < ctx->ep_first[s + 1]; k++) {
        uint32_t ep = ctx->ep_list[k];
        const struct sched_endpoint *e = &v->endpoints[ep];
        int64_t cool;
        if (ctx->ep_mig[ep] != SCHED_NONE || e->state == SCHED_EP_MIGRATING) {
            b->moving++;
            continue;
        }
        if (e->state != SCHED_EP_RUNNING) {
            /* Not running: it loads nothing, moving it relieves nothing. */
            b->idle++;
            continue;
        }
        if (e->opt_out) {
            b->opt_out++;
            continue;
        }
        if (e->aborts >= cfg->max_aborts) {
            b->given_up++;
            continue;
        }
        if (sched__backoff_left(ctx, e) > 0) {
            b->backoff++;
            continue;
        }
        if ((cool = sched__cooldown_left(ctx, e)) > 0) {
            b->cooldown++;
            if (cool < b->next_cooldown)
                b->next_cooldown = cool;
            continue;
        }
        double relief = 0;
        for (int r = 0; r < SCHED_NRES; r++) {
            double load = r == SCHED_CPU ? e->load.cpu : e->load.mem;
            if (over[r] && load / w->cap[r] > relief)
                relief = load / w->cap[r];
        }
        if (!(relief > 0)) {
            b->no_relief++;
            continue;
        }
        struct sched_cost cost;
        sched_predict(cfg, e->arena_size, e->dirty_rate, w->bw, &cost);
        if (cost.over_budget) {
            b->budget++;
            continue;
        }
        bool recent = e->last_move_at != 0 && ctx->now - e->last_move_at < cfg->return_block_ms;
        out[n++] = (struct ocand){recent, cost.duration_s / relief, e->id, ep};
    }
    qsort(out, n, sizeof(*out), cmp_ocand);
    return n;
}

/* Utilization of W in resource R after the planned moves (0: not accounted). */
static double res_util(const struct sched__node *w, enum sched_resource r)
{
    return w->cap[r] > 0 ? w->proj[r] / w->cap[r] : 0;
}

static int shed(struct sched__ctx *ctx, const struct source *src, struct ocand *cands,
                bool automatic)
{
    const struct sched_view *v = ctx->view;
    const struct sched_config *cfg = ctx->cfg;
    uint32_t s = src->node;
    const struct sched_node *n = &v->nodes[s];
    struct sched__node *w = &ctx->nodes[s];
    struct sched_decision *d;
    struct blocked b;
    struct sched__miss first_miss = {.closest = SCHED_NONE};
    uint32_t moved = 0, no_dest = 0, no_room = 0, over_budget = 0, first_miss_ep = SCHED_NONE;
    double need[SCHED_NRES] = {0}; /* the smallest load, per resource, that found no room */
    bool cluster_full = false, node_full = false;
    char prefix[SCHED_TEXT_MAX], t[SCHED__FMT];

    snprintf(prefix, sizeof(prefix), "%s %s %.0f%% > high %.0f%% for %s; ", n->id,
             sched_resource_name(src->res), src->util * 100, cfg->high_mark * 100,
             sched__fmt_ms(t, src->held));

    double util = sched__util(w, w->proj, NULL);
    if (util <= cfg->target_mark) {
        d = sched__decide(ctx, SCHED_ACT_NOTHING, SCHED_POL_OVERLOAD, SCHED_R_IN_FLIGHT, automatic);
        if (d == NULL)
            return -ENOMEM;
        /* Every resource ends within target: show the one that was over. */
        d->node = s;
        d->fig.resource = src->res;
        d->fig.src_before = src->util;
        d->fig.src_after = res_util(w, src->res);
        d->fig.mark = cfg->target_mark;
        d->fig.count = w->flying_out;
        sched__say(d, "%s%" PRIu32 " migration%s in flight will bring it to %s %.0f%%, within "
                      "target %.0f%%",
                   prefix, w->flying_out, w->flying_out == 1 ? "" : "s",
                   sched_resource_name(src->res), d->fig.src_after * 100,
                   cfg->target_mark * 100);
        return 0;
    }

    uint32_t nc = candidates(ctx, s, cands, &b);
    for (uint32_t k = 0; k < nc && sched__util(w, w->proj, NULL) > cfg->target_mark; k++) {
        uint32_t ep = cands[k].ep;
        const struct sched_endpoint *e = &v->endpoints[ep];
        struct sched__miss miss;
        double load[SCHED_NRES];

        if (!sched__cluster_slot(ctx)) {
            cluster_full = true;
            break;
        }
        if (!sched__node_slot(ctx, s)) {
            node_full = true;
            break;
        }
        sched__ep_load(e, load);
        uint32_t dst = sched__find_dest(ctx, load, s, sched__return_blocked(ctx, e),
                                        SCHED__BELOW_HIGH, true, &miss);
        if (dst == SCHED_NONE) {
            if (sched__miss_is_room(&miss)) {
                for (int r = 0; r < SCHED_NRES; r++)
                    if (no_room == 0 || load[r] < need[r])
                        need[r] = load[r];
                no_room++;
            }
            /*
             * Explain with the cheapest candidate, unless a later one came
             * closer to fitting on a named node: that one tells more.
             */
            if (no_dest++ == 0 || (first_miss.prefiltered && !miss.prefiltered)) {
                first_miss = miss;
                first_miss_ep = ep;
            }
            continue;
        }
        /* The candidate was costed at the source's bandwidth; the link may be slower. */
        struct sched_cost cost;
        sched_predict(cfg, e->arena_size, e->dirty_rate, sched__bandwidth(ctx, s, dst), &cost);
        if (cost.over_budget) {
            over_budget++;
            continue;
        }
        int rc = sched__emit_move(ctx, SCHED_POL_OVERLOAD, SCHED_R_OVERLOAD, automatic, ep, s,
                                  dst, SCHED__BELOW_HIGH, prefix);
        if (rc < 0)
            return rc;
        ctx->plan->decisions[ctx->plan->n_decisions - 1].fig.held_ms = src->held;
        ctx->plan->decisions[ctx->plan->n_decisions - 1].fig.window_ms = cfg->overload_window_ms;
        moved++;
    }

    util = sched__util(w, w->proj, NULL);
    if (util <= cfg->target_mark)
        return 0;

    /* Still above target: say why nothing (more) was done. */
    /* Waiting for slots is not lack of room: only the latter should wake a node. */
    bool dests_busy = no_dest > 0 && no_room == 0;
    enum sched_reason why = cluster_full || node_full || dests_busy ? SCHED_R_CONCURRENCY
                            : no_dest > 0                           ? SCHED_R_NO_DESTINATION
                                                                    : SCHED_R_BLOCKED;
    d = sched__decide(ctx, SCHED_ACT_NOTHING, SCHED_POL_OVERLOAD, why, automatic);
    if (d == NULL)
        return -ENOMEM;
    d->node = s;
    d->fig.resource = src->res;
    d->fig.src_before = src->util;
    d->fig.src_after = res_util(w, src->res);
    d->fig.mark = cfg->target_mark;
    d->fig.held_ms = src->held;
    d->fig.window_ms = cfg->overload_window_ms;
    sched__say(d, "%s", prefix);
    if (moved > 0) {
        /* Name the resource still over target; it may not be the one that started it. */
        enum sched_resource over;
        sched__util(w, w->proj, &over);
        if (d->fig.src_after > cfg->target_mark)
            over = src->res;
        sched__say(d, "after %" PRIu32 " move%s still at %s %.0f%%; ", moved,
                   moved == 1 ? "" : "s", sched_resource_name(over), res_util(w, over) * 100);
    }
    switch (why) {
    case SCHED_R_CONCURRENCY:
        if (cluster_full)
            sched__say(d, "more moves wait for the cluster limit (%" PRIu32 " at once)",
                       cfg->max_cluster);
        else if (node_full)
            sched__say(d, "more moves wait for %s's limit (%" PRIu32 " at once)", n->id,
                       cfg->max_per_node);
        else
            sched__say(d, "the nodes with room are at their limit (%" PRIu32 " migrations at "
                          "once each): waiting",
                       cfg->max_per_node);
        break;
    case SCHED_R_NO_DESTINATION:
        d->endpoint = first_miss_ep;
        d->fig.count = no_dest;
        sched__say(d, "no eligible node stays below high %.0f%% with ", cfg->high_mark * 100);
        sched__say_endpoint(d, &v->endpoints[first_miss_ep]);
        if (no_dest > 1)
            sched__say(d, " (nor with %" PRIu32 " other candidate%s)", no_dest - 1,
                       no_dest == 2 ? "" : "s");
        sched__say(d, "; ");
        sched__say_miss(d, ctx, &first_miss);
        sched__need_room(ctx, s, need);
        break;
    default:
        d->fig.count = b.cooldown + b.opt_out + b.backoff + b.given_up + b.budget + over_budget;
        b.budget += over_budget;
        sched__say(d, "no endpoint can move: ");
        say_blocked(d, &b);
        break;
    }
    return 0;
}

int sched__overload(struct sched__ctx *ctx)
{
    const struct sched_view *v = ctx->view;
    const struct sched_config *cfg = ctx->cfg;
    struct source *sources = NULL;
    struct ocand *cands = NULL;
    size_t n_sources = 0;
    uint32_t most_eps = 0;
    bool automatic = cfg->overload_mode == SCHED_MODE_AUTOMATIC;
    char t[SCHED__FMT], wnd[SCHED__FMT];
    int rc = 0;

    if (cfg->overload_mode == SCHED_MODE_OFF)
        return 0;

    for (size_t i = 0; i < v->n_nodes; i++)
        n_sources += ctx->hist_out[i].hot;
    if (n_sources == 0)
        return 0;
    sources = malloc(n_sources * sizeof(*sources));
    if (sources == NULL)
        return -ENOMEM;

    n_sources = 0;
    for (size_t r = 0; r < v->n_nodes; r++) {
        uint32_t i = ctx->by_rank[r];
        const struct sched_node_hist *h = &ctx->hist_out[i];
        const struct sched__node *w = &ctx->nodes[i];
        if (!h->hot)
            continue;
        enum sched_resource res;
        double util = sched__util(w, w->cur, &res);
        int64_t held = sched__since(ctx, h->hot_since);
        if (held < cfg->overload_window_ms) {
            /* Sustained means sustained: a spike shorter than the window moves nothing. */
            struct sched_decision *d = sched__decide(ctx, SCHED_ACT_NOTHING, SCHED_POL_OVERLOAD,
                                                     SCHED_R_WINDOW, automatic);
            if (d == NULL) {
                rc = -ENOMEM;
                goto out_free;
            }
            d->node = i;
            d->fig.resource = res;
            d->fig.src_before = d->fig.src_after = util;
            d->fig.mark = cfg->high_mark;
            d->fig.held_ms = held;
            d->fig.window_ms = cfg->overload_window_ms;
            sched__say(d, "%s %s %.0f%% > high %.0f%% for %s; waiting for the %s window",
                       v->nodes[i].id, sched_resource_name(res), util * 100,
                       cfg->high_mark * 100, sched__fmt_ms(t, held),
                       sched__fmt_ms(wnd, cfg->overload_window_ms));
            continue;
        }
        sources[n_sources++] = (struct source){util, w->rank, i, res, held};
        if (w->n_eps > most_eps)
            most_eps = w->n_eps;
    }
    /* The most overloaded first: they get the budget when it is short. */
    qsort(sources, n_sources, sizeof(*sources), cmp_source);

    cands = malloc((most_eps ? most_eps : 1) * sizeof(*cands));
    if (cands == NULL) {
        rc = -ENOMEM;
        goto out_free;
    }
    for (size_t k = 0; k < n_sources; k++)
        if ((rc = shed(ctx, &sources[k], cands, automatic)) < 0)
            goto out_free;

out_free:
    free(sources);
    free(cands);
    return rc;
}
