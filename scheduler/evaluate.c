/*
 * One evaluation: observe the view (sustained windows, cluster figures),
 * then let the policies plan in priority order on the shared migration
 * budget: maintenance first (the operator asked for it), then overload
 * (a node is hurting its services), then energy (savings can wait).
 */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "scheduler/internal.h"

/*
 * Update the windows. A window is the time of the first evaluation that saw
 * the condition, kept while every later evaluation sees it too, and cleared
 * by the first that does not: the caller's evaluation period is therefore
 * the resolution of every window.
 */
static void observe(struct sched__ctx *ctx)
{
    const struct sched_view *v = ctx->view;
    const struct sched_config *cfg = ctx->cfg;
    struct sched_plan *plan = ctx->plan;
    double load[SCHED_NRES] = {0}, cap[SCHED_NRES] = {0};
    double spare = 0;
    bool unmeasured = false; /* an eligible powered-on node has not reported its load yet */

    for (size_t r = 0; r < v->n_nodes; r++) {
        uint32_t i = ctx->by_rank[r];
        const struct sched_node *n = &v->nodes[i];
        const struct sched__node *w = &ctx->nodes[i];
        struct sched_node_hist *h = &ctx->hist_out[i];

        *h = n->hist;
        /* The directory's placement, not the projection: the node is hot until moves commit. */
        bool hot = w->powered && n->state == SCHED_NODE_UP &&
                   sched__util(w, w->cur, NULL) > cfg->high_mark;
        h->hot_since = hot ? (n->hist.hot ? n->hist.hot_since : ctx->now) : 0;
        h->hot = hot;
        if (!(n->state == SCHED_NODE_UP && n->power == SCHED_POWER_ON) ||
            cfg->energy_mode != SCHED_MODE_AUTOMATIC) {
            /* Only an up node can be emptied for power-off, and only in automatic mode. */
            h->evacuating = false;
            h->evacuating_since = 0;
        }

        if (w->powered)
            for (int k = 0; k < SCHED_NRES; k++)
                if (w->cap[k] > 0) /* a resource the node does not account counts nowhere */
                    load[k] += w->cur[k];
        if (n->state == SCHED_NODE_UP && n->eligible && n->power == SCHED_POWER_ON) {
            for (int k = 0; k < SCHED_NRES; k++)
                cap[k] += w->cap[k];
            unmeasured |= n->load_unknown;
            if (!h->evacuating) {
                double room = cfg->high_mark * w->cap[SCHED_CPU] - w->proj[SCHED_CPU];
                spare += room > 0 ? room : 0;
            }
        }
    }

    /*
     * Cluster utilization: everything running on powered nodes (draining
     * ones included, their load is about to land elsewhere) over what the
     * eligible nodes can hold, in the fullest resource.
     */
    double util = 0;
    ctx->cluster_res = SCHED_CPU;
    for (int k = 0; k < SCHED_NRES; k++) {
        double u = cap[k] > 0 ? load[k] / cap[k] : (load[k] > 0 && k == SCHED_CPU ? 1.0 : 0.0);
        if (u > util) {
            util = u;
            ctx->cluster_res = (enum sched_resource)k;
        }
    }
    plan->cluster_util = util;
    plan->spare_cpu = spare;

    const struct sched_cluster_hist *in = &v->hist;
    struct sched_cluster_hist *out = &plan->cluster_hist;
    /*
     * Underused needs something to save and figures to judge by: a cluster
     * without eligible powered-on capacity is not underused (there is no
     * node to power off), nor is one whose nodes have not all reported a
     * load yet (a node that just registered, or a new leader's first look,
     * would otherwise start the power-off window on figures of zero).
     * A cluster with capacity but no endpoints is underused, as VMware DPM
     * has it: idle hosts beyond min_powered_on and the reserve are powered
     * off (docs/scheduler.md).
     */
    bool underused = cap[SCHED_CPU] > 0 && !unmeasured && util < cfg->low_mark;
    bool pressure = util > cfg->high_mark ||
                    (cfg->power_reserve_cpu > 0 && spare < cfg->power_reserve_cpu);
    out->underused = underused;
    out->underused_since = underused ? (in->underused ? in->underused_since : ctx->now) : 0;
    out->pressure = pressure;
    out->pressure_since = pressure ? (in->pressure ? in->pressure_since : ctx->now) : 0;
}

static int evaluate(const struct sched_view *view, const struct sched_config *cfg, int64_t now,
                    bool dry_run, uint32_t drain_node, struct sched_plan *ret_plan)
{
    struct sched_plan plan;
    struct sched__ctx ctx;
    int rc;

    if (cfg == NULL || ret_plan == NULL || sched_config_validate(cfg, NULL, 0) < 0)
        return -EINVAL;
    rc = sched__ctx_init(&ctx, view, cfg, now, NULL, 0);
    if (rc < 0)
        return rc;
    if (dry_run && drain_node >= view->n_nodes) {
        rc = -EINVAL;
        goto out_fini;
    }

    memset(&plan, 0, sizeof(plan));
    plan.n_nodes = view->n_nodes;
    plan.in_flight = (uint32_t)view->n_migrations;
    plan.node_hist = calloc(view->n_nodes ? view->n_nodes : 1, sizeof(*plan.node_hist));
    if (plan.node_hist == NULL) {
        rc = -ENOMEM;
        goto out_fini;
    }
    ctx.plan = &plan;
    ctx.hist_out = plan.node_hist;

    observe(&ctx);
    if (dry_run) {
        /* A dry run changes no memory: hand the caller's history back. */
        for (size_t i = 0; i < view->n_nodes; i++)
            plan.node_hist[i] = view->nodes[i].hist;
        plan.cluster_hist = view->hist;
        rc = sched__drain_dry_run(&ctx, drain_node);
    } else {
        rc = sched__maintenance(&ctx);
        if (rc == 0)
            rc = sched__overload(&ctx);
        if (rc == 0)
            rc = sched__energy(&ctx);
    }
    if (rc < 0) {
        sched_plan_free(&plan);
        goto out_fini;
    }
    *ret_plan = plan;

out_fini:
    sched__ctx_fini(&ctx);
    return rc;
}

int sched_evaluate(const struct sched_view *view, const struct sched_config *cfg, int64_t now,
                   struct sched_plan *ret_plan)
{
    return evaluate(view, cfg, now, false, SCHED_NONE, ret_plan);
}

int sched_drain_dry_run(const struct sched_view *view, const struct sched_config *cfg,
                        uint32_t node, int64_t now, struct sched_plan *ret_plan)
{
    return evaluate(view, cfg, now, true, node, ret_plan);
}
