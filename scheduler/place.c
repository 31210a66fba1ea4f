/*
 * Placement arithmetic shared by the policies: utilizations, migration
 * slots, the destination search, and the stability timers (cooldown,
 * backoff).
 */
#include <math.h>
#include <string.h>

#include "scheduler/internal.h"

/* ------------------------------------------------------------------------ */
/* Utilization                                                               */
/* ------------------------------------------------------------------------ */

/*
 * A node is as full as its fullest resource (the "dominant" one): a node at
 * 30% cpu and 95% memory cannot take a memory-hungry endpoint. A resource a
 * node does not account (capacity 0) never limits it.
 */
double sched__util(const struct sched__node *n, const double load[SCHED_NRES],
                   enum sched_resource *ret_res)
{
    double best = 0;
    enum sched_resource res = SCHED_CPU;
    for (int r = 0; r < SCHED_NRES; r++) {
        if (n->cap[r] <= 0)
            continue;
        double u = load[r] / n->cap[r];
        if (u > best) {
            best = u;
            res = (enum sched_resource)r;
        }
    }
    if (ret_res != NULL)
        *ret_res = res;
    return best;
}

double sched__util_with(const struct sched__node *n, const double load[SCHED_NRES],
                        enum sched_resource *ret_res)
{
    double sum[SCHED_NRES];
    for (int r = 0; r < SCHED_NRES; r++)
        sum[r] = n->proj[r] + load[r];
    return sched__util(n, sum, ret_res);
}

double sched__share(const struct sched__node *n, const double load[SCHED_NRES])
{
    return sched__util(n, load, NULL);
}

/* ------------------------------------------------------------------------ */
/* Concurrency                                                               */
/* ------------------------------------------------------------------------ */

bool sched__node_slot(const struct sched__ctx *ctx, uint32_t n)
{
    return ctx->nodes[n].busy < ctx->cfg->max_per_node;
}

bool sched__cluster_slot(const struct sched__ctx *ctx)
{
    return ctx->cluster_busy < ctx->cfg->max_cluster;
}

void sched__apply_move(struct sched__ctx *ctx, uint32_t ep, uint32_t src, uint32_t dst, bool slot)
{
    double load[SCHED_NRES];
    sched__ep_load(&ctx->view->endpoints[ep], load);
    for (int r = 0; r < SCHED_NRES; r++) {
        ctx->nodes[src].proj[r] -= load[r];
        ctx->nodes[dst].proj[r] += load[r];
    }
    if (slot) {
        ctx->nodes[src].busy++;
        ctx->nodes[dst].busy++;
        ctx->cluster_busy++;
    }
}

void sched__need_room(struct sched__ctx *ctx, uint32_t node, const double load[SCHED_NRES])
{
    for (int r = 0; r < SCHED_NRES; r++)
        if (!ctx->need_capacity || load[r] < ctx->need_load[r])
            ctx->need_load[r] = load[r];
    if (!ctx->need_capacity)
        ctx->need_node = node;
    ctx->need_capacity = true;
}

void sched__mark_shedding(struct sched__ctx *ctx, uint32_t n)
{
    /*
     * A node that gives endpoints away in this evaluation (or has a
     * migration out in flight) takes none: receiving while shedding is the
     * churn that makes schedulers thrash.
     */
    ctx->nodes[n].shedding = true;
    ctx->nodes[n].dest = false;
}

/* ------------------------------------------------------------------------ */
/* Destination search                                                        */
/* ------------------------------------------------------------------------ */

static double mark_value(const struct sched__ctx *ctx, enum sched__mark mark)
{
    return mark == SCHED__BELOW_HIGH ? ctx->cfg->high_mark : ctx->cfg->target_mark;
}

static bool within(double after, double m, enum sched__mark mark)
{
    return mark == SCHED__BELOW_HIGH ? after < m : after <= m;
}

/* Recompute the room maxima, dropping nodes that stopped being destinations. */
static void refresh_room(struct sched__ctx *ctx)
{
    uint32_t kept = 0;
    for (int k = 0; k < SCHED__NMARKS; k++)
        for (int r = 0; r < SCHED_NRES; r++)
            ctx->room[k][r] = -INFINITY;
    for (uint32_t i = 0; i < ctx->n_dests; i++) {
        uint32_t n = ctx->dests[i];
        const struct sched__node *w = &ctx->nodes[n];
        if (!w->dest)
            continue;
        ctx->dests[kept++] = n;
        for (int k = 0; k < SCHED__NMARKS; k++) {
            double m = mark_value(ctx, (enum sched__mark)k);
            for (int r = 0; r < SCHED_NRES; r++) {
                double room = w->cap[r] > 0 ? m * w->cap[r] - w->proj[r] : INFINITY;
                if (room > ctx->room[k][r])
                    ctx->room[k][r] = room;
            }
        }
    }
    ctx->n_dests = kept;
    ctx->room_valid = true;
}

uint32_t sched__find_dest(struct sched__ctx *ctx, const double load[SCHED_NRES], uint32_t src,
                          uint32_t avoid, enum sched__mark mark, bool need_slot,
                          struct sched__miss *ret_miss)
{
    struct sched__miss miss = {.closest = SCHED_NONE, .after = INFINITY};
    double m = mark_value(ctx, mark);
    uint32_t best = SCHED_NONE;
    double best_after = INFINITY;

    if (!ctx->room_valid)
        refresh_room(ctx);

    /*
     * If no destination has LOAD's worth of room in some resource, nothing
     * can fit: answer without the scan. The slack keeps rounding from ever
     * rejecting what the exact test below would accept.
     */
    for (int r = 0; r < SCHED_NRES; r++) {
        double room = ctx->room[mark][r];
        if (load[r] > room + 1e-9 * (fabs(room) + load[r]) + 1e-12) {
            miss.prefiltered = true;
            miss.short_res = (enum sched_resource)r;
            miss.need = load[r];
            miss.most_room = room;
            goto out_miss;
        }
    }

    for (uint32_t i = 0; i < ctx->n_dests; i++) {
        uint32_t n = ctx->dests[i];
        const struct sched__node *w = &ctx->nodes[n];
        enum sched_resource res;
        if (!w->dest || n == src || n == avoid)
            continue;
        if (need_slot && !sched__node_slot(ctx, n)) {
            miss.n_busy++;
            continue;
        }
        double after = sched__util_with(w, load, &res);
        if (!within(after, m, mark)) {
            if (after < miss.after) {
                miss.closest = n;
                miss.after = after;
                miss.before = sched__util(w, w->proj, NULL);
                miss.res = res;
            }
            continue;
        }
        /* Strictly lower: the dests are in id order, so ties keep the smaller id. */
        if (after < best_after) {
            best = n;
            best_after = after;
        }
    }
    if (best != SCHED_NONE)
        return best;

out_miss:
    if (ret_miss != NULL)
        *ret_miss = miss;
    return SCHED_NONE;
}

/* ------------------------------------------------------------------------ */
/* Timers                                                                    */
/* ------------------------------------------------------------------------ */

int64_t sched__since(const struct sched__ctx *ctx, int64_t t)
{
    return ctx->now > t ? ctx->now - t : 0;
}

int64_t sched__backoff_left(const struct sched__ctx *ctx, const struct sched_endpoint *e)
{
    const struct sched_config *cfg = ctx->cfg;
    if (e->aborts == 0)
        return 0;
    /* base * 2^(aborts-1), capped: the loop ends at the cap long before overflow. */
    int64_t wait = cfg->backoff_base_ms;
    for (uint32_t i = 1; i < e->aborts && wait > 0 && wait < cfg->backoff_max_ms; i++)
        wait *= 2;
    if (wait > cfg->backoff_max_ms)
        wait = cfg->backoff_max_ms;
    int64_t until = e->last_abort_at + wait;
    return until > ctx->now ? until - ctx->now : 0;
}

uint32_t sched__return_blocked(const struct sched__ctx *ctx, const struct sched_endpoint *e)
{
    /*
     * Cooldown alone does not stop ping-pong: at high cluster load a node
     * that received an endpoint can drift above its high mark half an hour
     * later and shed that same endpoint, the cheapest, straight back.
     */
    if (e->last_source == SCHED_NONE || e->last_move_at == 0 ||
        ctx->now - e->last_move_at >= ctx->cfg->return_block_ms)
        return SCHED_NONE;
    return e->last_source;
}

int64_t sched__cooldown_left(const struct sched__ctx *ctx, const struct sched_endpoint *e)
{
    if (e->last_move_at == 0)
        return 0;
    int64_t until = e->last_move_at + ctx->cfg->cooldown_ms;
    return until > ctx->now ? until - ctx->now : 0;
}

double sched__bandwidth(const struct sched__ctx *ctx, uint32_t a, uint32_t b)
{
    double x = ctx->nodes[a].bw, y = ctx->nodes[b].bw;
    return x < y ? x : y;
}
