/*
 * Scheduler benchmark: the time of one evaluation (sched_evaluate) on a
 * large cluster view, 10k nodes and 100k endpoints by default. Prints
 * median, p99 and max over several evaluations per scenario; figures only,
 * never pass/fail (the target is <= 100 ms per evaluation).
 *
 *   sched_bench [--nodes N] [--endpoints E] [--runs R] [--seed S]
 *
 * Scenarios (each on a freshly generated view, same seed):
 *   steady     every node between 20% and 70%: nothing to do
 *   overload   2% of the nodes above high for longer than the window
 *   drains     two drains plus the overload, migrations in flight
 *   energy     the cluster underused for an hour: choosing a node to empty
 *   saturated  30% of the nodes hot and every other node nearly full:
 *              the worst case for the destination search
 *   dry-run    sched_drain_dry_run of one node
 * The time covers the whole call (validation, indexes, policies, texts);
 * building the view is the caller's and is not counted. Wall time and the
 * thread's CPU time are both shown: on a shared machine the CPU time is the
 * steadier figure.
 */
#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "scheduler/sched.h"

#define MIN_MS (60 * 1000)
#define T0 ((int64_t)1700000000000)

struct bench {
    size_t nn, ne;
    struct sched_node *nodes;
    struct sched_endpoint *eps;
    struct sched_migration migs[64];
    size_t nm;
    char (*ids)[24];
    char (*names)[24];
    struct sched_cluster_hist hist;
    uint64_t rng;
};

static uint64_t rnd(struct bench *b)
{
    /* splitmix64: deterministic, so every run benchmarks the same views. */
    uint64_t z = (b->rng += 0x9e3779b97f4a7c15ull);
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
    return z ^ (z >> 31);
}

static double unif(struct bench *b, double lo, double hi)
{
    return lo + (hi - lo) * (double)(rnd(b) >> 11) / (double)(1ull << 53);
}

static uint64_t clock_ns(clockid_t id)
{
    struct timespec ts;
    clock_gettime(id, &ts);
    return (uint64_t)ts.tv_sec * 1000000000ull + (uint64_t)ts.tv_nsec;
}

enum scenario { STEADY, OVERLOAD, DRAINS, ENERGY, SATURATED, DRY_RUN, N_SCENARIOS };
static const char *const scenario_names[] = {"steady", "overload", "drains", "energy",
                                             "saturated", "dry-run"};

/*
 * Fill the view: nodes of 16/32/64 cores, endpoints spread evenly, each
 * node's utilization drawn in [lo, hi] (scaled through its endpoints).
 */
static void generate(struct bench *b, enum scenario sc, uint64_t seed)
{
    b->rng = seed;
    b->nm = 0;
    memset(&b->hist, 0, sizeof(b->hist));
    static const double cores[] = {16, 32, 64};
    for (size_t i = 0; i < b->nn; i++) {
        struct sched_node *n = &b->nodes[i];
        snprintf(b->ids[i], sizeof(b->ids[i]), "n%05zu", i);
        memset(n, 0, sizeof(*n));
        n->id = b->ids[i];
        n->state = SCHED_NODE_UP;
        n->eligible = true;
        n->power = SCHED_POWER_ON;
        n->capacity.cpu = cores[rnd(b) % 3];
        n->capacity.mem = n->capacity.cpu * 4.0 * (1 << 30);
        n->base_load.cpu = 0.02 * n->capacity.cpu;
        n->bandwidth = unif(b, 0.5e9, 1.25e9);
    }
    double lo = 0.2, hi = 0.7;
    if (sc == ENERGY) {
        lo = 0.05;
        hi = 0.2;
    } else if (sc == SATURATED) {
        lo = 0.75;
        hi = 0.79;
    }
    /* Target utilization per node, then endpoints share it. */
    double *target = malloc(b->nn * sizeof(*target));
    size_t *count = calloc(b->nn, sizeof(*count));
    if (target == NULL || count == NULL) {
        fprintf(stderr, "out of memory\n");
        exit(1);
    }
    for (size_t i = 0; i < b->nn; i++)
        target[i] = unif(b, lo, hi);
    uint64_t *ids = malloc(b->ne * sizeof(*ids));
    if (ids == NULL) {
        fprintf(stderr, "out of memory\n");
        exit(1);
    }
    for (size_t i = 0; i < b->ne; i++)
        ids[i] = i + 1;
    for (size_t i = b->ne - 1; i > 0; i--) {
        size_t j = rnd(b) % (i + 1);
        uint64_t t = ids[i];
        ids[i] = ids[j];
        ids[j] = t;
    }
    for (size_t i = 0; i < b->ne; i++)
        count[(i * 7919) % b->nn]++;
    for (size_t i = 0; i < b->ne; i++) {
        struct sched_endpoint *e = &b->eps[i];
        size_t node = (i * 7919) % b->nn;
        const struct sched_node *n = &b->nodes[node];
        snprintf(b->names[i], sizeof(b->names[i]), "e%06zu", i);
        memset(e, 0, sizeof(*e));
        e->name = b->names[i];
        e->id = ids[i]; /* unique, like database ids, but not in index order */
        e->node = (uint32_t)node;
        e->last_source = (uint32_t)((node + 1) % b->nn);
        e->state = SCHED_EP_RUNNING;
        double share = target[node] * n->capacity.cpu / (double)count[node];
        e->load.cpu = share * unif(b, 0.5, 1.5);
        e->arena_size = (uint64_t)unif(b, 16, 2048) << 20;
        e->load.mem = (double)e->arena_size * 1.2;
        e->dirty_rate = unif(b, 0, 20) * (1 << 20);
        if (rnd(b) % 10 == 0)
            e->last_move_at = T0 - (int64_t)(rnd(b) % 30) * MIN_MS;
        e->opt_out = rnd(b) % 200 == 0;
    }

    if (sc == OVERLOAD || sc == DRAINS || sc == SATURATED) {
        double frac = sc == SATURATED ? 0.30 : 0.02;
        for (size_t i = 0; i < b->nn; i++) {
            if (unif(b, 0, 1) >= frac)
                continue;
            b->nodes[i].base_load.cpu += 0.3 * b->nodes[i].capacity.cpu;
            b->nodes[i].hist.hot = true;
            b->nodes[i].hist.hot_since = T0 - 5 * MIN_MS;
        }
    }
    if (sc == DRAINS) {
        for (size_t k = 0; k < 2; k++) {
            struct sched_node *n = &b->nodes[(k + 1) * b->nn / 3];
            n->state = SCHED_NODE_DRAINING;
            n->eligible = false;
            n->drain_deadline = T0 + 30 * MIN_MS;
        }
        /* A few migrations in flight, started earlier. */
        for (size_t k = 0; k < 6 && k < b->ne; k++) {
            size_t ep = k * 13 + 5;
            uint32_t src = b->eps[ep].node, dst = (src + 1) % (uint32_t)b->nn;
            b->migs[b->nm++] = (struct sched_migration){(uint32_t)ep, src, dst};
            b->eps[ep].state = SCHED_EP_MIGRATING;
        }
    }
    if (sc == ENERGY) {
        b->hist.underused = true;
        b->hist.underused_since = T0 - 60 * MIN_MS;
        for (size_t i = 0; i < b->nn / 100; i++) {
            b->nodes[i * 100 + 50].state = SCHED_NODE_STANDBY;
            b->nodes[i * 100 + 50].power = SCHED_POWER_OFF;
        }
    }
    free(target);
    free(count);
    free(ids);
}

static int cmp_u64(const void *a, const void *b)
{
    uint64_t x = *(const uint64_t *)a, y = *(const uint64_t *)b;
    return x < y ? -1 : x > y;
}

int main(int argc, char **argv)
{
    struct bench b = {.nn = 10000, .ne = 100000};
    size_t runs = 25;
    uint64_t seed = 1;
    for (int i = 1; i < argc; i++) {
        const char *v = i + 1 < argc ? argv[i + 1] : NULL;
        if (strcmp(argv[i], "--nodes") == 0 && v) {
            b.nn = strtoul(v, NULL, 10);
            i++;
        } else if (strcmp(argv[i], "--endpoints") == 0 && v) {
            b.ne = strtoul(v, NULL, 10);
            i++;
        } else if (strcmp(argv[i], "--runs") == 0 && v) {
            runs = strtoul(v, NULL, 10);
            i++;
        } else if (strcmp(argv[i], "--seed") == 0 && v) {
            seed = strtoull(v, NULL, 10);
            i++;
        } else {
            fprintf(stderr, "usage: %s [--nodes N] [--endpoints E] [--runs R] [--seed S]\n",
                    argv[0]);
            return strcmp(argv[i], "--help") == 0 ? 0 : 2;
        }
    }
    if (b.nn < 10 || b.ne < 1 || runs < 1) {
        fprintf(stderr, "need at least 10 nodes, 1 endpoint and 1 run\n");
        return 2;
    }

    b.nodes = calloc(b.nn, sizeof(*b.nodes));
    b.eps = calloc(b.ne, sizeof(*b.eps));
    b.ids = calloc(b.nn, sizeof(*b.ids));
    b.names = calloc(b.ne, sizeof(*b.names));
    uint64_t *ns = calloc(runs, sizeof(*ns)), *cpu = calloc(runs, sizeof(*cpu));
    if (b.nodes == NULL || b.eps == NULL || b.ids == NULL || b.names == NULL || ns == NULL ||
        cpu == NULL) {
        fprintf(stderr, "out of memory\n");
        return 1;
    }
    struct sched_config cfg;
    sched_config_default(&cfg);
    cfg.energy_mode = SCHED_MODE_AUTOMATIC;
    cfg.max_cluster = 64;

    printf("scheduler decision time: %zu nodes, %zu endpoints, %zu evaluations per scenario\n",
           b.nn, b.ne, runs);
    printf("%-10s %9s %9s %9s %9s %9s  %s\n", "scenario", "p50 ms", "p99 ms", "max ms",
           "cpu p50", "decisions", "moves");
    for (int sc = 0; sc < N_SCENARIOS; sc++) {
        generate(&b, (enum scenario)sc, seed);
        struct sched_view view = {b.nodes, b.nn, b.eps, b.ne, b.migs, b.nm, b.hist};
        size_t decisions = 0, moves = 0;
        for (size_t r = 0; r < runs; r++) {
            struct sched_plan plan;
            int64_t now = T0 + (int64_t)r * 1000;
            uint64_t t0 = clock_ns(CLOCK_MONOTONIC), c0 = clock_ns(CLOCK_THREAD_CPUTIME_ID);
            int rc = sc == DRY_RUN ? sched_drain_dry_run(&view, &cfg, (uint32_t)(b.nn / 2), now, &plan)
                                   : sched_evaluate(&view, &cfg, now, &plan);
            ns[r] = clock_ns(CLOCK_MONOTONIC) - t0;
            cpu[r] = clock_ns(CLOCK_THREAD_CPUTIME_ID) - c0;
            if (rc < 0) {
                char msg[256];
                sched_view_validate(&view, msg, sizeof(msg));
                fprintf(stderr, "%s: evaluation failed: %s (%s)\n", scenario_names[sc],
                        strerror(-rc), msg);
                return 1;
            }
            decisions = plan.n_decisions;
            moves = plan.planned;
            sched_plan_free(&plan);
        }
        qsort(ns, runs, sizeof(*ns), cmp_u64);
        qsort(cpu, runs, sizeof(*cpu), cmp_u64);
        size_t p99 = (size_t)((double)(runs - 1) * 0.99 + 0.5);
        printf("%-10s %9.2f %9.2f %9.2f %9.2f %9zu  %zu\n", scenario_names[sc],
               (double)ns[runs / 2] / 1e6, (double)ns[p99] / 1e6, (double)ns[runs - 1] / 1e6,
               (double)cpu[runs / 2] / 1e6, decisions, moves);
    }
    free(ns);
    free(cpu);
    free(b.nodes);
    free(b.eps);
    free(b.ids);
    free(b.names);
    return 0;
}
