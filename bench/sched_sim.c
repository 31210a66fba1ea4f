/*
 * Scheduler simulator: replays a load trace on simulated nodes, evaluating
 * the scheduler every 30 s like the manager's leader does, applying what it
 * decides (migrations that take their predicted time and sometimes abort,
 * nodes that power off and take minutes to boot, two drains at once), and
 * checking that nothing oscillates.
 *
 *   sched_sim                      the short mode `make check` runs: 100 nodes,
 *                                  one simulated day, TAP output
 *   sched_sim --hours 168 --nodes 200 --seed 7 [--verbose]
 *
 * The trace is synthetic and deterministic for a seed: each endpoint has a
 * base load that follows a day curve (20% of peak at midnight, peak at
 * noon), a smoothed random wobble (what a smoothed measurement looks like),
 * and hot spots: now and then every endpoint of one node triples its load
 * for 20 to 60 minutes, and the spike travels with an endpoint that moves.
 *
 * Checked (TAP), the symptoms users of DRS, oVirt and the descheduler report:
 *   - no ping-pong: no endpoint moved A -> B -> A by automatic policies within an hour;
 *   - no automatic move of an endpoint within its cooldown;
 *   - no power flapping: no node powered on and off (or off and on) within an hour;
 *   - the concurrency limits hold at every instant, counting every migration;
 *   - both simultaneous drains end, before their deadlines, and only empty;
 *   - no unexplained inaction: at every evaluation, a node overloaded for its
 *     window gets a move or a decision saying why not;
 *   - every overload that room allows to relieve is relieved within 15
 *     minutes of its window (one that ran out of room anywhere is reported);
 *   - no endpoint is ever placed on a powered-off node;
 *   - the energy policy did save something (powered nodes off at night);
 *   - the same seed gives the same decisions, byte for byte.
 */
#include <errno.h>
#include <inttypes.h>
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "scheduler/sched.h"

#define SEC 1000
#define MIN_MS (60 * SEC)
#define HOUR_MS (60 * MIN_MS)
#define MIB (1024.0 * 1024.0)
#define GIB (1024.0 * MIB)
#define T0 ((int64_t)1700000000000) /* a midnight, for the day curve */
#define STEP_MS (30 * SEC)
#define BOOT_MS (2 * MIN_MS)
#define ABORT_PERCENT 3
#define MAX_FLIGHTS 1024

struct flight {
    uint32_t ep, src, dst;
    int64_t end;
    bool abort;
    bool automatic_policy; /* overload or energy (not a drain) */
};

/* The last automatic move of an endpoint, for the ping-pong check. */
struct last_move {
    uint32_t from, to;
    int64_t at;
};

struct drain {
    const char *node_id;
    uint32_t node;
    int64_t start, enable_at;
    int64_t started_at, deadline; /* when the operator could start it (the node is up) */
    int64_t done_at;
    bool started, expired, done_empty;
};

struct stats {
    uint64_t evaluations, moves[3], replaces, power_off, power_on, commits, aborts;
    uint64_t ping_pongs, cooldown_violations, flaps, limit_violations, on_powered_off;
    uint64_t drain_done_not_empty, unexplained;
    int64_t worst_overload_ms; /* longest time past its window a relievable overload lasted */
    int64_t worst_no_room_ms;  /* ...and one during which some move found no room */
    uint32_t max_in_flight, min_powered;
    uint64_t hash;
    double *eval_ms;
};

struct sim {
    struct sched_config cfg;
    size_t nn, ne;
    struct sched_node *nodes;
    struct sched_endpoint *eps;
    char (*ids)[24];
    char (*names)[24];
    double *base, *wobble, *spike;
    int64_t *spike_until;
    int64_t *boot_at, *power_changed_at;
    bool *ever_off;
    bool *no_room;  /* the node's current overload episode met "no destination" */
    bool *said;     /* the node got a decision in this evaluation */
    struct last_move *last;
    struct flight flights[MAX_FLIGHTS];
    size_t n_flights;
    struct sched_migration migs[MAX_FLIGHTS];
    struct sched_cluster_hist hist;
    struct drain drains[2];
    uint64_t rng;
    bool verbose;
    struct stats st;
};

/* ------------------------------------------------------------------------ */
/* Randomness (deterministic)                                                */
/* ------------------------------------------------------------------------ */

static uint64_t rnd(struct sim *s)
{
    uint64_t z = (s->rng += 0x9e3779b97f4a7c15ull);
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
    return z ^ (z >> 31);
}

static double unif(struct sim *s, double lo, double hi)
{
    return lo + (hi - lo) * (double)(rnd(s) >> 11) / (double)(1ull << 53);
}

static void hash_bytes(uint64_t *h, const void *p, size_t n)
{
    const unsigned char *b = p;
    for (size_t i = 0; i < n; i++)
        *h = (*h ^ b[i]) * 0x100000001b3ull;
}

/* ------------------------------------------------------------------------ */
/* Setup and the load trace                                                  */
/* ------------------------------------------------------------------------ */

static void *xcalloc(size_t n, size_t size)
{
    void *p = calloc(n ? n : 1, size);
    if (p == NULL) {
        fprintf(stderr, "Bail out! out of memory\n");
        exit(1);
    }
    return p;
}

static void sim_init(struct sim *s, size_t nn, uint64_t seed, bool verbose)
{
    memset(s, 0, sizeof(*s));
    s->rng = seed;
    s->verbose = verbose;
    s->nn = nn;
    sched_config_default(&s->cfg);
    s->cfg.energy_mode = SCHED_MODE_AUTOMATIC;
    s->cfg.max_cluster = (uint32_t)(nn / 8 > 4 ? nn / 8 : 4);
    s->cfg.power_reserve_cpu = 0.08 * 16 * (double)nn; /* ~8 nodes' worth of headroom */

    s->nodes = xcalloc(nn, sizeof(*s->nodes));
    s->ids = xcalloc(nn, sizeof(*s->ids));
    s->boot_at = xcalloc(nn, sizeof(*s->boot_at));
    s->power_changed_at = xcalloc(nn, sizeof(*s->power_changed_at));
    s->ever_off = xcalloc(nn, sizeof(*s->ever_off));
    s->no_room = xcalloc(nn, sizeof(*s->no_room));
    s->said = xcalloc(nn, sizeof(*s->said));

    /* Three in four nodes have 16 cores, one in four 32; endpoints in proportion. */
    size_t ne = 0;
    for (size_t i = 0; i < nn; i++)
        ne += i % 4 == 3 ? 16 : 8;
    s->ne = ne;
    s->eps = xcalloc(ne, sizeof(*s->eps));
    s->names = xcalloc(ne, sizeof(*s->names));
    s->base = xcalloc(ne, sizeof(*s->base));
    s->wobble = xcalloc(ne, sizeof(*s->wobble));
    s->spike = xcalloc(ne, sizeof(*s->spike));
    s->spike_until = xcalloc(ne, sizeof(*s->spike_until));
    s->last = xcalloc(ne, sizeof(*s->last));

    size_t e = 0;
    for (size_t i = 0; i < nn; i++) {
        struct sched_node *n = &s->nodes[i];
        snprintf(s->ids[i], sizeof(s->ids[i]), "n%03zu", i);
        n->id = s->ids[i];
        n->state = SCHED_NODE_UP;
        n->eligible = true;
        n->power = SCHED_POWER_ON;
        n->capacity.cpu = i % 4 == 3 ? 32 : 16;
        n->capacity.mem = n->capacity.cpu * 8 * GIB;
        n->base_load.cpu = 0.2;
        n->base_load.mem = 2 * GIB;
        n->bandwidth = 1.25e9;
        for (int k = 0; k < (i % 4 == 3 ? 16 : 8); k++, e++) {
            struct sched_endpoint *ep = &s->eps[e];
            snprintf(s->names[e], sizeof(s->names[e]), "e%04zu", e);
            ep->name = s->names[e];
            ep->id = e + 1;
            ep->node = (uint32_t)i;
            ep->last_source = SCHED_NONE;
            ep->state = SCHED_EP_RUNNING;
            ep->arena_size = (uint64_t)unif(s, 32, 2048) * (uint64_t)MIB;
            ep->dirty_rate = unif(s, 0, 8) * MIB;
            ep->load.mem = (double)ep->arena_size;
            ep->opt_out = rnd(s) % 100 == 0;
            s->base[e] = unif(s, 0.4, 2.4); /* mean 1.4 cores at peak: ~70% of the cluster */
            s->spike[e] = 1;
        }
    }
    s->st.min_powered = (uint32_t)nn;

    /* Two drains at once, around the peak, with deadlines. */
    s->drains[0] = (struct drain){.node_id = "n017", .start = T0 + 10 * HOUR_MS,
                                  .enable_at = T0 + 14 * HOUR_MS};
    s->drains[1] = (struct drain){.node_id = "n051", .start = T0 + 10 * HOUR_MS + 5 * MIN_MS,
                                  .enable_at = T0 + 15 * HOUR_MS};
    for (int k = 0; k < 2; k++)
        s->drains[k].node = (uint32_t)(strtoul(s->drains[k].node_id + 1, NULL, 10) % nn);
}

static void sim_free(struct sim *s)
{
    free(s->nodes);
    free(s->ids);
    free(s->boot_at);
    free(s->power_changed_at);
    free(s->ever_off);
    free(s->no_room);
    free(s->said);
    free(s->eps);
    free(s->names);
    free(s->base);
    free(s->wobble);
    free(s->spike);
    free(s->spike_until);
    free(s->last);
    free(s->st.eval_ms);
}

/* The day curve: 0.2 at midnight, 1 at noon. */
static double day_factor(int64_t now)
{
    double h = (double)((now - T0) % (24 * HOUR_MS)) / HOUR_MS;
    const double pi = 3.14159265358979323846;
    return 0.2 + 0.8 * (1 - cos(2 * pi * h / 24)) / 2;
}

/* Advance the trace to NOW: wobble, hot spots, and each endpoint's smoothed load. */
static void trace_step(struct sim *s, int64_t now)
{
    double f = day_factor(now);
    /* About one hot spot an hour: every endpoint of one node triples for 20-60 minutes. */
    if (rnd(s) % 120 == 0) {
        uint32_t node = (uint32_t)(rnd(s) % s->nn);
        int64_t until = now + (int64_t)unif(s, 20, 60) * MIN_MS;
        for (size_t e = 0; e < s->ne; e++)
            if (s->eps[e].node == node) {
                s->spike[e] = 3;
                s->spike_until[e] = until;
            }
    }
    for (size_t e = 0; e < s->ne; e++) {
        struct sched_endpoint *ep = &s->eps[e];
        /* A smoothed random walk, as an EWMA of noisy samples looks. */
        s->wobble[e] = 0.9 * s->wobble[e] + 0.1 * unif(s, -0.6, 0.6);
        if (s->spike_until[e] != 0 && now >= s->spike_until[e]) {
            s->spike[e] = 1;
            s->spike_until[e] = 0;
        }
        double load = s->base[e] * f * (1 + s->wobble[e]) * s->spike[e];
        ep->load.cpu = ep->state == SCHED_EP_RUNNING || ep->state == SCHED_EP_MIGRATING
                           ? (load > 0.01 ? load : 0.01)
                           : 0;
    }
}

/* ------------------------------------------------------------------------ */
/* The world: migrations finishing, nodes booting, operators draining        */
/* ------------------------------------------------------------------------ */

static void world_step(struct sim *s, int64_t now)
{
    /* Migrations that reach their end commit, or abort. */
    size_t kept = 0;
    for (size_t i = 0; i < s->n_flights; i++) {
        struct flight *f = &s->flights[i];
        struct sched_endpoint *ep = &s->eps[f->ep];
        if (now < f->end) {
            s->flights[kept++] = *f;
            continue;
        }
        ep->state = SCHED_EP_RUNNING;
        if (f->abort) {
            ep->aborts++;
            ep->last_abort_at = now;
            s->st.aborts++;
            continue;
        }
        ep->last_source = ep->node;
        ep->node = f->dst;
        ep->last_move_at = now;
        ep->aborts = 0;
        s->st.commits++;
        if (f->automatic_policy) {
            struct last_move *lm = &s->last[f->ep];
            if (lm->at != 0 && lm->from == f->dst && lm->to == f->src && now - lm->at < HOUR_MS) {
                s->st.ping_pongs++;
                if (s->verbose)
                    printf("# PING-PONG %s %s -> %s -> %s\n", ep->name, s->ids[f->dst],
                           s->ids[f->src], s->ids[f->dst]);
            }
            *lm = (struct last_move){f->src, f->dst, now};
        }
    }
    s->n_flights = kept;

    for (size_t i = 0; i < s->nn; i++) {
        struct sched_node *n = &s->nodes[i];
        if (n->power == SCHED_POWER_WAKING && s->boot_at[i] != 0 && now >= s->boot_at[i]) {
            /* The agent registers: the node is up and eligible again. */
            n->state = SCHED_NODE_UP;
            n->eligible = true;
            n->power = SCHED_POWER_ON;
            n->power_since = now;
            s->boot_at[i] = 0;
        }
    }

    for (int k = 0; k < 2; k++) {
        struct drain *d = &s->drains[k];
        struct sched_node *n = &s->nodes[d->node];
        /* The operator drains a node that is up (one powered off at night is woken first). */
        if (!d->started && now >= d->start && n->state == SCHED_NODE_UP &&
            n->power == SCHED_POWER_ON) {
            d->started = true;
            d->started_at = now;
            d->deadline = now + 45 * MIN_MS;
            n->state = SCHED_NODE_DRAINING;
            n->eligible = false;
            n->drain_deadline = d->deadline;
        }
        if (d->started && now >= d->enable_at &&
            (n->state == SCHED_NODE_DRAINED || n->state == SCHED_NODE_DRAINING)) {
            /* node enable */
            n->state = SCHED_NODE_UP;
            n->eligible = true;
            n->drain_deadline = 0;
        }
    }
}

/* ------------------------------------------------------------------------ */
/* Applying a plan                                                           */
/* ------------------------------------------------------------------------ */

static void apply(struct sim *s, const struct sched_plan *plan, int64_t now)
{
    for (size_t i = 0; i < plan->n_decisions; i++) {
        const struct sched_decision *d = &plan->decisions[i];
        hash_bytes(&s->st.hash, &d->action, sizeof(d->action));
        hash_bytes(&s->st.hash, d->text, strlen(d->text));
        if (s->verbose && (d->automatic || d->action != SCHED_ACT_NOTHING) &&
            !(d->action == SCHED_ACT_NOTHING && (d->reason == SCHED_R_WINDOW ||
                                                 d->reason == SCHED_R_DRAIN_PROGRESS)))
            printf("# %5.2fh %-9s %s\n", (double)(now - T0) / HOUR_MS,
                   sched_action_name(d->action), d->text);
        if (d->node != SCHED_NONE && d->policy == SCHED_POL_OVERLOAD) {
            s->said[d->node] = true;
            if (d->reason == SCHED_R_NO_DESTINATION)
                s->no_room[d->node] = true;
        }
        if (!d->automatic)
            continue;
        switch (d->action) {
        case SCHED_ACT_MIGRATE: {
            struct sched_endpoint *ep = &s->eps[d->endpoint];
            bool automatic_policy = d->policy != SCHED_POL_MAINTENANCE;
            s->st.moves[d->policy]++;
            if (automatic_policy && ep->last_move_at != 0 &&
                now - ep->last_move_at < s->cfg.cooldown_ms)
                s->st.cooldown_violations++;
            /* The move takes its predicted time, give or take, at least one step. */
            int64_t dur = (int64_t)(d->fig.cost.duration_s * unif(s, 1.0, 1.3) * 1000);
            s->flights[s->n_flights++] = (struct flight){
                d->endpoint, d->node, d->dest, now + (dur > STEP_MS ? dur : STEP_MS),
                rnd(s) % 100 < ABORT_PERCENT, automatic_policy};
            ep->state = SCHED_EP_MIGRATING;
            break;
        }
        case SCHED_ACT_REPLACE:
            s->eps[d->endpoint].last_source = s->eps[d->endpoint].node;
            s->eps[d->endpoint].node = d->dest;
            s->eps[d->endpoint].last_move_at = now;
            s->st.replaces++;
            break;
        case SCHED_ACT_POWER_OFF: {
            struct sched_node *n = &s->nodes[d->node];
            if (s->power_changed_at[d->node] != 0 && now - s->power_changed_at[d->node] < HOUR_MS)
                s->st.flaps++;
            n->state = SCHED_NODE_STANDBY;
            n->power = SCHED_POWER_OFF;
            n->power_since = now;
            s->power_changed_at[d->node] = now;
            s->ever_off[d->node] = true;
            s->st.power_off++;
            break;
        }
        case SCHED_ACT_POWER_ON: {
            struct sched_node *n = &s->nodes[d->node];
            if (s->power_changed_at[d->node] != 0 && now - s->power_changed_at[d->node] < HOUR_MS)
                s->st.flaps++;
            n->power = SCHED_POWER_WAKING;
            n->power_since = now;
            s->boot_at[d->node] = now + BOOT_MS;
            s->power_changed_at[d->node] = now;
            s->st.power_on++;
            break;
        }
        case SCHED_ACT_DRAIN_DONE:
            for (int k = 0; k < 2; k++) {
                struct drain *dr = &s->drains[k];
                if (dr->node != d->node || dr->done_at != 0)
                    continue;
                dr->done_at = now;
                dr->done_empty = true;
                for (size_t e = 0; e < s->ne; e++)
                    if (s->eps[e].node == d->node)
                        dr->done_empty = false;
                for (size_t f = 0; f < s->n_flights; f++)
                    if (s->flights[f].src == d->node || s->flights[f].dst == d->node)
                        dr->done_empty = false;
                if (!dr->done_empty)
                    s->st.drain_done_not_empty++;
            }
            s->nodes[d->node].state = SCHED_NODE_DRAINED;
            s->nodes[d->node].eligible = false;
            break;
        case SCHED_ACT_DRAIN_EXPIRED:
            for (int k = 0; k < 2; k++)
                if (s->drains[k].node == d->node)
                    s->drains[k].expired = true;
            break;
        case SCHED_ACT_NOTHING:
            break;
        }
    }
}

/* Invariants that must hold at every instant. */
static void check_instant(struct sim *s, const struct sched_plan *plan, int64_t now)
{
    uint32_t *busy = xcalloc(s->nn, sizeof(*busy));
    for (size_t f = 0; f < s->n_flights; f++) {
        busy[s->flights[f].src]++;
        busy[s->flights[f].dst]++;
    }
    for (size_t i = 0; i < s->nn; i++)
        if (busy[i] > s->cfg.max_per_node)
            s->st.limit_violations++;
    if (s->n_flights > s->cfg.max_cluster)
        s->st.limit_violations++;
    if (s->n_flights > s->st.max_in_flight)
        s->st.max_in_flight = (uint32_t)s->n_flights;
    free(busy);

    uint32_t powered = 0;
    for (size_t i = 0; i < s->nn; i++)
        powered += s->nodes[i].power == SCHED_POWER_ON;
    if (powered < s->st.min_powered)
        s->st.min_powered = powered;
    for (size_t e = 0; e < s->ne; e++)
        if (s->nodes[s->eps[e].node].power == SCHED_POWER_OFF)
            s->st.on_powered_off++;

    /*
     * Overloads: explained at every evaluation once past the window, and
     * how long past it they last (separately for the ones that met a lack
     * of room somewhere, which no placement can fix).
     */
    for (size_t i = 0; i < s->nn; i++) {
        const struct sched_node_hist *h = &plan->node_hist[i];
        if (!h->hot) {
            s->no_room[i] = false;
            s->said[i] = false;
            continue;
        }
        int64_t over = now - h->hot_since - s->cfg.overload_window_ms;
        if (over >= 0 && !s->said[i]) {
            s->st.unexplained++;
            if (s->verbose)
                printf("# UNEXPLAINED %s hot since %.2fh\n", s->ids[i],
                       (double)(h->hot_since - T0) / HOUR_MS);
        }
        s->said[i] = false;
        int64_t *worst = s->no_room[i] ? &s->st.worst_no_room_ms : &s->st.worst_overload_ms;
        if (over > *worst)
            *worst = over;
    }
}

static double now_ms_wall(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec * 1e3 + (double)ts.tv_nsec / 1e6;
}

static int run(struct sim *s, int64_t hours)
{
    int64_t end = T0 + hours * HOUR_MS;
    size_t steps = (size_t)(hours * HOUR_MS / STEP_MS) + 1;
    s->st.eval_ms = xcalloc(steps, sizeof(double));
    s->st.hash = 0xcbf29ce484222325ull;

    for (int64_t now = T0; now < end; now += STEP_MS) {
        world_step(s, now);
        trace_step(s, now);
        for (size_t f = 0; f < s->n_flights; f++)
            s->migs[f] = (struct sched_migration){s->flights[f].ep, s->flights[f].src,
                                                  s->flights[f].dst};
        struct sched_view view = {s->nodes, s->nn, s->eps, s->ne, s->migs, s->n_flights, s->hist};
        struct sched_plan plan;
        double t0 = now_ms_wall();
        int rc = sched_evaluate(&view, &s->cfg, now, &plan);
        s->st.eval_ms[s->st.evaluations++] = now_ms_wall() - t0;
        if (rc < 0) {
            char msg[256];
            sched_view_validate(&view, msg, sizeof(msg));
            printf("Bail out! evaluation failed: %s (%s)\n", strerror(-rc), msg);
            return -1;
        }
        for (size_t i = 0; i < s->nn; i++)
            s->nodes[i].hist = plan.node_hist[i];
        s->hist = plan.cluster_hist;
        apply(s, &plan, now);
        check_instant(s, &plan, now);
        sched_plan_free(&plan);
    }
    return 0;
}

static int cmp_double(const void *a, const void *b)
{
    double x = *(const double *)a, y = *(const double *)b;
    return x < y ? -1 : x > y;
}

static int tap_n;
static int tap_failed;

static void tap(bool ok, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static void tap(bool ok, const char *fmt, ...)
{
    va_list ap;
    printf("%s %d - ", ok ? "ok" : "not ok", ++tap_n);
    va_start(ap, fmt);
    vprintf(fmt, ap);
    va_end(ap);
    printf("\n");
    tap_failed += !ok;
}

int main(int argc, char **argv)
{
    size_t nodes = 100;
    int64_t hours = 24;
    uint64_t seed = 1;
    bool verbose = false;
    for (int i = 1; i < argc; i++) {
        const char *v = i + 1 < argc ? argv[i + 1] : NULL;
        if (strcmp(argv[i], "--nodes") == 0 && v) {
            nodes = strtoul(v, NULL, 10);
            i++;
        } else if (strcmp(argv[i], "--hours") == 0 && v) {
            hours = strtoll(v, NULL, 10);
            i++;
        } else if (strcmp(argv[i], "--seed") == 0 && v) {
            seed = strtoull(v, NULL, 10);
            i++;
        } else if (strcmp(argv[i], "--verbose") == 0) {
            verbose = true;
        } else {
            fprintf(stderr, "usage: %s [--nodes N] [--hours H] [--seed S] [--verbose]\n"
                            "without arguments: the short mode (100 nodes, 24 h), as make check runs it\n",
                    argv[0]);
            return strcmp(argv[i], "--help") == 0 ? 0 : 2;
        }
    }
    if (nodes < 60 || hours < 16) {
        fprintf(stderr, "need at least 60 nodes (the drains use n017 and n051) and 16 hours\n");
        return 2;
    }

    static struct sim s, again;
    sim_init(&s, nodes, seed, verbose);
    printf("1..11\n");
    printf("# %zu nodes, %zu endpoints, %" PRId64 " h in %d s steps, seed %" PRIu64 "\n", s.nn,
           s.ne, hours, STEP_MS / SEC, seed);
    if (run(&s, hours) < 0)
        return 1;
    const struct stats *st = &s.st;

    tap(st->ping_pongs == 0, "no endpoint ping-pong within an hour (%" PRIu64 ")", st->ping_pongs);
    tap(st->cooldown_violations == 0, "no automatic move within an endpoint's cooldown (%" PRIu64 ")",
        st->cooldown_violations);
    tap(st->flaps == 0, "no node powered on and off within an hour (%" PRIu64 ")", st->flaps);
    tap(st->limit_violations == 0,
        "concurrency limits held at every step (max %" PRIu32 " in flight, limit %" PRIu32 ")",
        st->max_in_flight, s.cfg.max_cluster);
    for (int k = 0; k < 2; k++) {
        const struct drain *d = &s.drains[k];
        tap(d->done_at != 0 && d->done_at <= d->deadline && d->done_empty && !d->expired,
            "drain %d of 2 (%s) done before its 45 min deadline, only once empty (%.1f min)",
            k + 1, s.ids[d->node],
            d->done_at ? (double)(d->done_at - d->started_at) / MIN_MS : -1.0);
    }
    tap(st->unexplained == 0,
        "every overload past its window got a move or an explanation (%" PRIu64 " did not)",
        st->unexplained);
    tap(st->worst_overload_ms <= 15 * MIN_MS,
        "every overload that room allowed was relieved within 15 min of its window (worst "
        "%.1f min past it; out of room anywhere: worst %.1f min)",
        (double)st->worst_overload_ms / MIN_MS, (double)st->worst_no_room_ms / MIN_MS);
    tap(st->on_powered_off == 0, "no endpoint ever placed on a powered-off node");
    tap(st->power_off > 0 && st->min_powered < s.nn,
        "the energy policy powered nodes off at night (%" PRIu64 " off, %" PRIu64
        " on, fewest powered %" PRIu32 ")",
        st->power_off, st->power_on, st->min_powered);

    sim_init(&again, nodes, seed, false);
    if (run(&again, hours) < 0)
        return 1;
    tap(again.st.hash == st->hash && again.st.evaluations == st->evaluations,
        "the same seed gives the same decisions (hash %016" PRIx64 ")", st->hash);

    qsort(st->eval_ms, st->evaluations, sizeof(double), cmp_double);
    printf("# %" PRIu64 " evaluations: p50 %.3f ms, p99 %.3f ms\n", st->evaluations,
           st->eval_ms[st->evaluations / 2], st->eval_ms[(size_t)((double)st->evaluations * 0.99)]);
    printf("# moves: %" PRIu64 " maintenance, %" PRIu64 " overload, %" PRIu64
           " energy; %" PRIu64 " committed, %" PRIu64 " aborted (retried with backoff)\n",
           st->moves[SCHED_POL_MAINTENANCE], st->moves[SCHED_POL_OVERLOAD],
           st->moves[SCHED_POL_ENERGY], st->commits, st->aborts);
    printf("# automatic moves per endpoint per day: %.2f\n",
           (double)(st->moves[SCHED_POL_OVERLOAD] + st->moves[SCHED_POL_ENERGY]) /
               (double)s.ne / ((double)hours / 24));
    sim_free(&s);
    sim_free(&again);
    return tap_failed ? 1 : 0;
}
