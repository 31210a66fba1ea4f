/*
 * The view: validation, and the indexes and working figures one evaluation
 * runs on. Everything that depends on the order of the caller's arrays is
 * put into id order here, so that the policies, which only ever walk these
 * indexes, give the same result for any order of the same view (and add
 * floating-point numbers in the same order, so even rounding is the same).
 */
#include <errno.h>
#include <inttypes.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "scheduler/internal.h"

/* ------------------------------------------------------------------------ */
/* Field checks                                                              */
/* ------------------------------------------------------------------------ */

static bool nonneg(double v)
{
    return isfinite(v) && v >= 0;
}

static bool time_ok(int64_t t)
{
    return t >= 0 && t <= SCHED__TIME_MAX;
}

#define FAIL(...)                                   \
    do {                                            \
        if (msg != NULL && msglen > 0)              \
            snprintf(msg, msglen, __VA_ARGS__);     \
        return -EINVAL;                             \
    } while (0)

static int check_node(const struct sched_node *n, size_t i, char *msg, size_t msglen)
{
    if (n->id == NULL || n->id[0] == '\0')
        FAIL("nodes[%zu]: id is missing", i);
    if ((unsigned)n->state > SCHED_NODE_DOWN)
        FAIL("nodes[%zu] (%s): state %d: not a node state", i, n->id, (int)n->state);
    if ((unsigned)n->power > SCHED_POWER_WAKING)
        FAIL("nodes[%zu] (%s): power %d: not a power state", i, n->id, (int)n->power);
    if (!(isfinite(n->capacity.cpu) && n->capacity.cpu > 0))
        FAIL("nodes[%zu] (%s): capacity.cpu %g: must be a finite number > 0", i, n->id,
             n->capacity.cpu);
    if (!nonneg(n->capacity.mem))
        FAIL("nodes[%zu] (%s): capacity.mem %g: must be a finite number >= 0", i, n->id,
             n->capacity.mem);
    if (!nonneg(n->base_load.cpu) || !nonneg(n->base_load.mem))
        FAIL("nodes[%zu] (%s): base_load %g cores, %g bytes: must be finite numbers >= 0", i,
             n->id, n->base_load.cpu, n->base_load.mem);
    if (!nonneg(n->bandwidth))
        FAIL("nodes[%zu] (%s): bandwidth %g: must be a finite number >= 0", i, n->id,
             n->bandwidth);
    if (!time_ok(n->drain_deadline) || !time_ok(n->power_since) || !time_ok(n->hist.hot_since) ||
        !time_ok(n->hist.evacuating_since))
        FAIL("nodes[%zu] (%s): a time is out of range: must be in 0..2^53 ms", i, n->id);
    return 0;
}

static int check_endpoint(const struct sched_endpoint *e, size_t i, size_t n_nodes, char *msg,
                          size_t msglen)
{
    if (e->name == NULL || e->name[0] == '\0')
        FAIL("endpoints[%zu]: name is missing", i);
    if (e->node != SCHED_NONE && e->node >= n_nodes)
        FAIL("endpoints[%zu] (%s): node %" PRIu32 ": no such node index (%zu nodes)", i, e->name,
             e->node, n_nodes);
    if (e->last_source != SCHED_NONE && e->last_source >= n_nodes)
        FAIL("endpoints[%zu] (%s): last_source %" PRIu32 ": no such node index (%zu nodes)", i,
             e->name, e->last_source, n_nodes);
    if ((unsigned)e->state > SCHED_EP_STOPPED)
        FAIL("endpoints[%zu] (%s): state %d: not an endpoint state", i, e->name, (int)e->state);
    if (!nonneg(e->load.cpu) || !nonneg(e->load.mem))
        FAIL("endpoints[%zu] (%s): load %g cores, %g bytes: must be finite numbers >= 0", i,
             e->name, e->load.cpu, e->load.mem);
    if (!nonneg(e->dirty_rate))
        FAIL("endpoints[%zu] (%s): dirty_rate %g: must be a finite number >= 0", i, e->name,
             e->dirty_rate);
    if (!time_ok(e->last_move_at) || !time_ok(e->last_abort_at))
        FAIL("endpoints[%zu] (%s): a time is out of range: must be in 0..2^53 ms", i, e->name);
    return 0;
}

/* ------------------------------------------------------------------------ */
/* Sorting by id                                                             */
/* ------------------------------------------------------------------------ */

struct node_key {
    const char *id;
    uint32_t idx;
};

static int cmp_node_key(const void *a, const void *b)
{
    const struct node_key *x = a, *y = b;
    int c = strcmp(x->id, y->id);
    if (c != 0)
        return c;
    return x->idx < y->idx ? -1 : x->idx > y->idx; /* only for duplicates, reported below */
}

struct ep_key {
    uint64_t id;
    uint32_t idx;
    uint32_t node; /* copied here so grouping reads the keys in order, not the view at random */
};

/*
 * Sort endpoint keys by id: an LSD radix sort, 11 bits per pass, skipping
 * the digits all ids share (database ids are small: usually two passes).
 * With 100k endpoints this is the largest sort of an evaluation, and
 * qsort's comparisons made it most of the evaluation's time. Stable, so
 * equal ids (an error reported by the caller) keep index order. TMP has
 * room for N keys. The result is in KEYS.
 */
#define RADIX_BITS 11
#define RADIX (1u << RADIX_BITS)

static void sort_ep_keys(struct ep_key *keys, struct ep_key *tmp, size_t n)
{
    struct ep_key *from = keys, *to = tmp;
    for (int shift = 0; shift < 64; shift += RADIX_BITS) {
        size_t count[RADIX] = {0};
        for (size_t i = 0; i < n; i++)
            count[(from[i].id >> shift) & (RADIX - 1)]++;
        if (n == 0 || count[(from[0].id >> shift) & (RADIX - 1)] == n)
            continue; /* every id has this digit: the pass would change nothing */
        size_t pos = 0;
        for (unsigned d = 0; d < RADIX; d++) {
            size_t c = count[d];
            count[d] = pos;
            pos += c;
        }
        for (size_t i = 0; i < n; i++)
            to[count[(from[i].id >> shift) & (RADIX - 1)]++] = from[i];
        struct ep_key *t = from;
        from = to;
        to = t;
    }
    if (from != keys)
        memcpy(keys, from, n * sizeof(*keys));
}

/* ------------------------------------------------------------------------ */
/* Context                                                                   */
/* ------------------------------------------------------------------------ */

void sched__ctx_fini(struct sched__ctx *ctx)
{
    if (ctx == NULL)
        return;
    free(ctx->nodes);
    free(ctx->by_rank);
    free(ctx->ep_first);
    free(ctx->ep_list);
    free(ctx->ep_mig);
    free(ctx->dests);
    memset(ctx, 0, sizeof(*ctx));
}

static int ctx_build(struct sched__ctx *ctx, char *msg, size_t msglen)
{
    const struct sched_view *v = ctx->view;
    size_t nn = v->n_nodes, ne = v->n_endpoints;
    struct node_key *nkeys = NULL;
    struct ep_key *ekeys = NULL, *etmp = NULL;
    int rc = -ENOMEM;

    ctx->nodes = calloc(nn ? nn : 1, sizeof(*ctx->nodes));
    ctx->by_rank = malloc((nn ? nn : 1) * sizeof(*ctx->by_rank));
    ctx->dests = malloc((nn ? nn : 1) * sizeof(*ctx->dests));
    ctx->ep_first = calloc(nn + 1, sizeof(*ctx->ep_first));
    ctx->ep_list = malloc((ne ? ne : 1) * sizeof(*ctx->ep_list));
    ctx->ep_mig = malloc((ne ? ne : 1) * sizeof(*ctx->ep_mig));
    nkeys = malloc((nn ? nn : 1) * sizeof(*nkeys));
    ekeys = malloc((ne ? ne : 1) * sizeof(*ekeys));
    etmp = malloc((ne ? ne : 1) * sizeof(*etmp));
    if (ctx->nodes == NULL || ctx->by_rank == NULL || ctx->dests == NULL ||
        ctx->ep_first == NULL || ctx->ep_list == NULL || ctx->ep_mig == NULL || nkeys == NULL ||
        ekeys == NULL || etmp == NULL)
        goto out_free_keys;

    /* Nodes in id order; the rank is the tie-breaker everywhere. */
    for (size_t i = 0; i < nn; i++)
        nkeys[i] = (struct node_key){v->nodes[i].id, (uint32_t)i};
    qsort(nkeys, nn, sizeof(*nkeys), cmp_node_key);
    for (size_t r = 0; r < nn; r++) {
        if (r > 0 && strcmp(nkeys[r - 1].id, nkeys[r].id) == 0) {
            if (msg != NULL && msglen > 0)
                snprintf(msg, msglen, "nodes[%" PRIu32 "] and nodes[%" PRIu32 "]: same id \"%s\"",
                         nkeys[r - 1].idx, nkeys[r].idx, nkeys[r].id);
            rc = -EINVAL;
            goto out_free_keys;
        }
        ctx->by_rank[r] = nkeys[r].idx;
        ctx->nodes[nkeys[r].idx].rank = (uint32_t)r;
    }

    /*
     * Endpoints grouped by node (a counting sort over the id-sorted array,
     * which keeps id order inside each node).
     */
    for (size_t i = 0; i < ne; i++)
        ekeys[i] = (struct ep_key){v->endpoints[i].id, (uint32_t)i, v->endpoints[i].node};
    sort_ep_keys(ekeys, etmp, ne);
    for (size_t i = 0; i < ne; i++) {
        if (i > 0 && ekeys[i - 1].id == ekeys[i].id) {
            if (msg != NULL && msglen > 0)
                snprintf(msg, msglen,
                         "endpoints[%" PRIu32 "] (%s) and endpoints[%" PRIu32 "] (%s): same id %" PRIu64,
                         ekeys[i - 1].idx, v->endpoints[ekeys[i - 1].idx].name, ekeys[i].idx,
                         v->endpoints[ekeys[i].idx].name, ekeys[i].id);
            rc = -EINVAL;
            goto out_free_keys;
        }
        if (ekeys[i].node != SCHED_NONE)
            ctx->ep_first[ekeys[i].node + 1]++;
        ctx->ep_mig[i] = SCHED_NONE;
    }
    for (size_t i = 0; i < nn; i++)
        ctx->ep_first[i + 1] += ctx->ep_first[i];
    {
        /* Fill positions: reuse nodes[].n_eps as the per-node cursor. */
        for (size_t i = 0; i < ne; i++) {
            uint32_t node = ekeys[i].node;
            if (node == SCHED_NONE)
                continue;
            ctx->ep_list[ctx->ep_first[node] + ctx->nodes[node].n_eps++] = ekeys[i].idx;
        }
    }

    /* Migrations in flight. */
    for (size_t i = 0; i < v->n_migrations; i++) {
        const struct sched_migration *m = &v->migrations[i];
        if (m->endpoint >= ne || m->src >= nn || m->dst >= nn) {
            if (msg != NULL && msglen > 0)
                snprintf(msg, msglen,
                         "migrations[%zu]: endpoint %" PRIu32 ", src %" PRIu32 ", dst %" PRIu32
                         ": index out of range (%zu endpoints, %zu nodes)",
                         i, m->endpoint, m->src, m->dst, ne, nn);
            rc = -EINVAL;
            goto out_free_keys;
        }
        const struct sched_endpoint *e = &v->endpoints[m->endpoint];
        const char *why = NULL;
        if (m->src == m->dst)
            why = "source and destination are the same node";
        else if (e->node != m->src)
            why = "the endpoint is not on the source node";
        else if (ctx->ep_mig[m->endpoint] != SCHED_NONE)
            why = "the endpoint already has a migration in flight";
        if (why != NULL) {
            if (msg != NULL && msglen > 0)
                snprintf(msg, msglen, "migrations[%zu] (%s from %s to %s): %s", i, e->name,
                         v->nodes[m->src].id, v->nodes[m->dst].id, why);
            rc = -EINVAL;
            goto out_free_keys;
        }
        ctx->ep_mig[m->endpoint] = (uint32_t)i;
    }
    rc = 0;

out_free_keys:
    free(nkeys);
    free(ekeys);
    free(etmp);
    return rc;
}

/* Loads, flags and the in-flight migrations' effect, all in id order. */
static void ctx_figures(struct sched__ctx *ctx)
{
    const struct sched_view *v = ctx->view;
    const struct sched_config *cfg = ctx->cfg;
    bool energy_auto = cfg->energy_mode == SCHED_MODE_AUTOMATIC;

    for (size_t i = 0; i < v->n_nodes; i++) {
        const struct sched_node *n = &v->nodes[i];
        struct sched__node *w = &ctx->nodes[i];
        w->cap[SCHED_CPU] = n->capacity.cpu;
        w->cap[SCHED_MEM] = n->capacity.mem;
        w->cur[SCHED_CPU] = n->base_load.cpu;
        w->cur[SCHED_MEM] = n->base_load.mem;
        w->bw = n->bandwidth > 0 ? n->bandwidth : cfg->bandwidth;
        w->powered = n->power == SCHED_POWER_ON &&
                     (n->state == SCHED_NODE_UP || n->state == SCHED_NODE_DRAINING);
        for (uint32_t k = ctx->ep_first[i]; k < ctx->ep_first[i + 1]; k++) {
            const struct sched_endpoint *e = &v->endpoints[ctx->ep_list[k]];
            w->cur[SCHED_CPU] += e->load.cpu;
            w->cur[SCHED_MEM] += e->load.mem;
        }
        w->proj[SCHED_CPU] = w->cur[SCHED_CPU];
        w->proj[SCHED_MEM] = w->cur[SCHED_MEM];
    }

    for (size_t r = 0; r < v->n_nodes; r++) {
        uint32_t i = ctx->by_rank[r];
        for (uint32_t k = ctx->ep_first[i]; k < ctx->ep_first[i + 1]; k++) {
            uint32_t ep = ctx->ep_list[k];
            uint32_t mi = ctx->ep_mig[ep];
            if (mi == SCHED_NONE)
                continue;
            const struct sched_migration *m = &v->migrations[mi];
            sched__apply_move(ctx, ep, m->src, m->dst, true);
            sched__mark_shedding(ctx, m->src);
            ctx->nodes[m->src].flying_out++;
            ctx->nodes[m->dst].flying_in++;
        }
    }

    ctx->n_dests = 0;
    for (size_t r = 0; r < v->n_nodes; r++) {
        uint32_t i = ctx->by_rank[r];
        const struct sched_node *n = &v->nodes[i];
        struct sched__node *w = &ctx->nodes[i];
        w->dest = n->state == SCHED_NODE_UP && n->eligible && n->power == SCHED_POWER_ON &&
                  !w->shedding && !(energy_auto && n->hist.evacuating);
        if (w->dest)
            ctx->dests[ctx->n_dests++] = i;
    }
    ctx->room_valid = false;
}

int sched__ctx_init(struct sched__ctx *ctx, const struct sched_view *view,
                    const struct sched_config *cfg, int64_t now, char *msg, size_t msglen)
{
    int rc;

    memset(ctx, 0, sizeof(*ctx));
    if (view == NULL)
        FAIL("no view");
    if (view->n_nodes >= SCHED_NONE || view->n_endpoints >= SCHED_NONE ||
        view->n_migrations >= SCHED_NONE)
        FAIL("view too large: at most %" PRIu32 " nodes, endpoints and migrations",
             SCHED_NONE - 1);
    if ((view->n_nodes > 0 && view->nodes == NULL) ||
        (view->n_endpoints > 0 && view->endpoints == NULL) ||
        (view->n_migrations > 0 && view->migrations == NULL))
        FAIL("view: an array is NULL but its count is not 0");
    if (!time_ok(now))
        FAIL("now %" PRId64 ": must be in 0..2^53 ms", now);
    if (!time_ok(view->hist.underused_since) || !time_ok(view->hist.pressure_since))
        FAIL("view: a cluster history time is out of range: must be in 0..2^53 ms");
    for (size_t i = 0; i < view->n_nodes; i++)
        if ((rc = check_node(&view->nodes[i], i, msg, msglen)) < 0)
            return rc;
    for (size_t i = 0; i < view->n_endpoints; i++)
        if ((rc = check_endpoint(&view->endpoints[i], i, view->n_nodes, msg, msglen)) < 0)
            return rc;

    ctx->view = view;
    ctx->cfg = cfg;
    ctx->now = now;
    rc = ctx_build(ctx, msg, msglen);
    if (rc < 0) {
        sched__ctx_fini(ctx);
        return rc;
    }
    ctx_figures(ctx);
    return 0;
}

int sched_view_validate(const struct sched_view *view, char *msg, size_t msglen)
{
    struct sched_config cfg;
    struct sched__ctx ctx;
    int rc;

    if (msg != NULL && msglen > 0)
        msg[0] = '\0';
    sched_config_default(&cfg);
    rc = sched__ctx_init(&ctx, view, &cfg, 0, msg, msglen);
    if (rc == -ENOMEM && msg != NULL && msglen > 0)
        snprintf(msg, msglen, "out of memory");
    if (rc == 0)
        sched__ctx_fini(&ctx);
    return rc;
}
