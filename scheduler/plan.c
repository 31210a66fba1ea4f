/*
 * Plans: building the list of decisions, recording a move with its
 * explanation, the projected end state for the `plan` view, and the names
 * of the enums for logs and JSON.
 */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "scheduler/internal.h"

/* ------------------------------------------------------------------------ */
/* Building                                                                  */
/* ------------------------------------------------------------------------ */

struct sched_decision *sched__decide(struct sched__ctx *ctx, enum sched_action action,
                                     enum sched_policy policy, enum sched_reason reason,
                                     bool automatic)
{
    struct sched_plan *plan = ctx->plan;
    if (plan->n_decisions == ctx->cap_decisions) {
        size_t cap = ctx->cap_decisions ? ctx->cap_decisions * 2 : 16;
        struct sched_decision *d = realloc(plan->decisions, cap * sizeof(*d));
        if (d == NULL)
            return NULL;
        plan->decisions = d;
        ctx->cap_decisions = cap;
    }
    struct sched_decision *d = &plan->decisions[plan->n_decisions++];
    memset(d, 0, sizeof(*d));
    d->action = action;
    d->policy = policy;
    d->reason = reason;
    d->automatic = automatic;
    d->node = d->endpoint = d->dest = SCHED_NONE;
    return d;
}

int sched__emit_move(struct sched__ctx *ctx, enum sched_policy policy, enum sched_reason reason,
                     bool automatic, uint32_t ep, uint32_t src, uint32_t dst,
                     enum sched__mark mark, const char *prefix)
{
    const struct sched_view *v = ctx->view;
    const struct sched_config *cfg = ctx->cfg;
    const struct sched_endpoint *e = &v->endpoints[ep];
    struct sched__node *s = &ctx->nodes[src], *t = &ctx->nodes[dst];
    bool live = e->state == SCHED_EP_RUNNING;
    enum sched_resource sres, dres;

    struct sched_decision *d = sched__decide(ctx, live ? SCHED_ACT_MIGRATE : SCHED_ACT_REPLACE,
                                             policy, reason, automatic);
    if (d == NULL)
        return -ENOMEM;
    d->node = src;
    d->endpoint = ep;
    d->dest = dst;
    /*
     * Each node's figures are of one resource, named in the text: the
     * source's dominant one before the move (what it is relieved of), the
     * destination's dominant one after it (what it is checked on). A
     * "before" of one resource next to an "after" of another read as a
     * change that never happened.
     */
    double dst_proj[SCHED_NRES];
    memcpy(dst_proj, t->proj, sizeof(dst_proj));
    d->fig.src_before = sched__util(s, s->proj, &sres);
    d->fig.mark = mark == SCHED__BELOW_HIGH ? cfg->high_mark : cfg->target_mark;

    sched__apply_move(ctx, ep, src, dst, live);
    sched__mark_shedding(ctx, src);

    d->fig.resource = sres;
    d->fig.src_after = s->cap[sres] > 0 ? s->proj[sres] / s->cap[sres] : 0;
    d->fig.dst_after = sched__util(t, t->proj, &dres);
    d->fig.dst_before = t->cap[dres] > 0 ? dst_proj[dres] / t->cap[dres] : 0;
    if (live) {
        sched_predict(cfg, e->arena_size, e->dirty_rate, sched__bandwidth(ctx, src, dst),
                      &d->fig.cost);
        ctx->plan->planned++;
    }

    sched__say(d, "%s%s ", prefix, live ? "moving" : "re-placing");
    sched__say_endpoint(d, e);
    if (!live)
        sched__say(d, " [%s: nothing to copy]",
                   e->state == SCHED_EP_PENDING  ? "pending"
                   : e->state == SCHED_EP_FAILED ? "failed"
                                                 : "stopped");
    sched__say(d, " to ");
    sched__say_node_change(d, &v->nodes[dst], dres, d->fig.dst_before, d->fig.dst_after);
    sched__say(d, ", %s %.0f%%), leaving %s at %s %.0f%%",
               mark == SCHED__BELOW_HIGH ? "below high" : "within target", d->fig.mark * 100,
               v->nodes[src].id, sched_resource_name(sres), d->fig.src_after * 100);
    if (live)
        sched__say_cost(d, &d->fig.cost, cfg);
    return 0;
}

void sched_plan_free(struct sched_plan *plan)
{
    if (plan == NULL)
        return;
    free(plan->decisions);
    free(plan->node_hist);
    memset(plan, 0, sizeof(*plan));
}

/* ------------------------------------------------------------------------ */
/* Projection                                                                */
/* ------------------------------------------------------------------------ */

int sched_project(const struct sched_view *view, const struct sched_plan *plan,
                  struct sched_projection *ret, size_t n_nodes)
{
    struct sched_config cfg;
    struct sched__ctx ctx;
    int rc;

    if (view == NULL || plan == NULL || ret == NULL || n_nodes != view->n_nodes)
        return -EINVAL;
    for (size_t i = 0; i < plan->n_decisions; i++) {
        const struct sched_decision *d = &plan->decisions[i];
        bool move = d->action == SCHED_ACT_MIGRATE || d->action == SCHED_ACT_REPLACE;
        if ((d->node != SCHED_NONE && d->node >= n_nodes) ||
            (d->dest != SCHED_NONE && d->dest >= n_nodes) ||
            (d->endpoint != SCHED_NONE && d->endpoint >= view->n_endpoints))
            return -EINVAL;
        if (move && (d->node == SCHED_NONE || d->dest == SCHED_NONE || d->endpoint == SCHED_NONE))
            return -EINVAL;
    }

    sched_config_default(&cfg);
    rc = sched__ctx_init(&ctx, view, &cfg, 0, NULL, 0);
    if (rc < 0)
        return rc;

    for (size_t i = 0; i < n_nodes; i++) {
        const struct sched_node *n = &view->nodes[i];
        struct sched_projection *p = &ret[i];
        memset(p, 0, sizeof(*p));
        p->before.cpu = ctx.nodes[i].cur[SCHED_CPU];
        p->before.mem = ctx.nodes[i].cur[SCHED_MEM];
        p->util_before = sched__util(&ctx.nodes[i], ctx.nodes[i].cur, NULL);
        p->endpoints_before = ctx.nodes[i].n_eps;
        p->endpoints_after = ctx.nodes[i].n_eps;
        p->powered_after = n->power != SCHED_POWER_OFF;
    }
    for (size_t i = 0; i < view->n_migrations; i++) {
        ret[view->migrations[i].src].endpoints_after--;
        ret[view->migrations[i].dst].endpoints_after++;
    }
    for (size_t i = 0; i < plan->n_decisions; i++) {
        const struct sched_decision *d = &plan->decisions[i];
        switch (d->action) {
        case SCHED_ACT_MIGRATE:
        case SCHED_ACT_REPLACE:
            sched__apply_move(&ctx, d->endpoint, d->node, d->dest, false);
            ret[d->node].endpoints_after--;
            ret[d->dest].endpoints_after++;
            break;
        case SCHED_ACT_POWER_OFF:
            ret[d->node].powered_after = false;
            break;
        case SCHED_ACT_POWER_ON:
            ret[d->node].powered_after = true;
            break;
        default:
            break;
        }
    }
    for (size_t i = 0; i < n_nodes; i++) {
        struct sched__node *w = &ctx.nodes[i];
        /* Clamp rounding residue: a node that gave everything away carries 0, not -1e-17. */
        for (int r = 0; r < SCHED_NRES; r++)
            if (w->proj[r] < 0)
                w->proj[r] = 0;
        ret[i].after.cpu = w->proj[SCHED_CPU];
        ret[i].after.mem = w->proj[SCHED_MEM];
        ret[i].util_after = sched__util(w, w->proj, NULL);
    }
    sched__ctx_fini(&ctx);
    return 0;
}

/* ------------------------------------------------------------------------ */
/* Names                                                                     */
/* ------------------------------------------------------------------------ */

const char *sched_action_name(enum sched_action a)
{
    switch (a) {
    case SCHED_ACT_NOTHING:
        return "nothing";
    case SCHED_ACT_MIGRATE:
        return "migrate";
    case SCHED_ACT_REPLACE:
        return "replace";
    case SCHED_ACT_POWER_OFF:
        return "power_off";
    case SCHED_ACT_POWER_ON:
        return "power_on";
    case SCHED_ACT_DRAIN_DONE:
        return "drain_done";
    case SCHED_ACT_DRAIN_EXPIRED:
        return "drain_expired";
    }
    return "unknown";
}

const char *sched_policy_name(enum sched_policy p)
{
    switch (p) {
    case SCHED_POL_MAINTENANCE:
        return "maintenance";
    case SCHED_POL_OVERLOAD:
        return "overload";
    case SCHED_POL_ENERGY:
        return "energy";
    }
    return "unknown";
}

const char *sched_reason_name(enum sched_reason r)
{
    switch (r) {
    case SCHED_R_OVERLOAD:
        return "overload";
    case SCHED_R_UNDERUSED:
        return "underused";
    case SCHED_R_DRAIN:
        return "drain";
    case SCHED_R_DRAIN_DONE:
        return "drain_done";
    case SCHED_R_DRAIN_DEADLINE:
        return "drain_deadline";
    case SCHED_R_DRAIN_PROGRESS:
        return "drain_progress";
    case SCHED_R_LOAD_HIGH:
        return "load_high";
    case SCHED_R_RESERVE:
        return "reserve";
    case SCHED_R_NO_DESTINATION:
        return "no_destination";
    case SCHED_R_WINDOW:
        return "window";
    case SCHED_R_IN_FLIGHT:
        return "in_flight";
    case SCHED_R_CONCURRENCY:
        return "concurrency";
    case SCHED_R_BLOCKED:
        return "blocked";
    case SCHED_R_BACKOFF:
        return "backoff";
    case SCHED_R_WAKING:
        return "waking";
    case SCHED_R_NO_STANDBY:
        return "no_standby";
    case SCHED_R_ABANDONED:
        return "abandoned";
    case SCHED_R_NODE_DOWN:
        return "node_down";
    case SCHED_R_DRY_RUN:
        return "dry_run";
    }
    return "unknown";
}

const char *sched_node_state_name(enum sched_node_state s)
{
    switch (s) {
    case SCHED_NODE_UP:
        return "up";
    case SCHED_NODE_DRAINING:
        return "draining";
    case SCHED_NODE_DRAINED:
        return "drained";
    case SCHED_NODE_STANDBY:
        return "standby";
    case SCHED_NODE_DOWN:
        return "down";
    }
    return "unknown";
}

const char *sched_resource_name(enum sched_resource r)
{
    switch (r) {
    case SCHED_CPU:
        return "cpu";
    case SCHED_MEM:
        return "mem";
    case SCHED_NRES:
        break;
    }
    return "unknown";
}
