/*
 * Unit tests of scheduler/ (DESIGN.md §6). Each test builds a small cluster
 * view by hand (or from a table of cases), runs one or a few evaluations at
 * chosen times, and checks the decisions a user would check: what moves
 * where, what is powered, what is explained, and what is not done.
 *
 * Allocation is wrapped (-Wl,--wrap=malloc...) so one test can make every
 * allocation of an evaluation fail in turn.
 */
#include <errno.h>
#include <math.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "scheduler/sched.h"

/* ------------------------------------------------------------------------ */
/* Allocation failure injection                                              */
/* ------------------------------------------------------------------------ */

void *__real_malloc(size_t n);
void *__real_calloc(size_t n, size_t size);
void *__real_realloc(void *p, size_t n);

static long alloc_fail_at = -1; /* fail the allocation with this number; -1: never */
static long alloc_count;

static bool alloc_fails(void)
{
    return alloc_fail_at >= 0 && alloc_count++ == alloc_fail_at;
}

void *__wrap_malloc(size_t n)
{
    return alloc_fails() ? NULL : __real_malloc(n);
}

void *__wrap_calloc(size_t n, size_t size)
{
    return alloc_fails() ? NULL : __real_calloc(n, size);
}

void *__wrap_realloc(void *p, size_t n)
{
    return alloc_fails() ? NULL : __real_realloc(p, n);
}

/* ------------------------------------------------------------------------ */
/* A cluster under test                                                      */
/* ------------------------------------------------------------------------ */

#define MAXN 128
#define MAXE 1024
#define MAXM 64
#define MIB (1024.0 * 1024.0)
#define GIB (1024.0 * MIB)
#define SEC 1000
#define MIN (60 * SEC)

/* Far from 0, so that "0 = never" and "ago" arithmetic stay meaningful. */
#define T0 ((int64_t)1700000000000)

struct cluster {
    struct sched_node nodes[MAXN];
    size_t nn;
    struct sched_endpoint eps[MAXE];
    size_t ne;
    struct sched_migration migs[MAXM];
    size_t nm;
    char names[MAXE][24];
    char ids[MAXN][24];
    struct sched_cluster_hist hist;
    struct sched_config cfg;
    struct sched_plan plan;
    struct sched_view view;
};

static int setup(void **state)
{
    struct cluster *c = calloc(1, sizeof(*c));
    if (c == NULL)
        return -1;
    sched_config_default(&c->cfg);
    c->cfg.energy_mode = SCHED_MODE_AUTOMATIC;
    c->cfg.max_cluster = 100;
    c->cfg.max_per_node = 10;
    *state = c;
    return 0;
}

static int teardown(void **state)
{
    struct cluster *c = *state;
    sched_plan_free(&c->plan);
    free(c);
    return 0;
}

/* A node of CPU cores (and 64 GiB) carrying BASE cores of its own. */
static uint32_t add_node(struct cluster *c, const char *id, double cpu, double base)
{
    assert_true(c->nn < MAXN);
    uint32_t i = (uint32_t)c->nn++;
    snprintf(c->ids[i], sizeof(c->ids[i]), "%s", id);
    struct sched_node *n = &c->nodes[i];
    memset(n, 0, sizeof(*n));
    n->id = c->ids[i];
    n->state = SCHED_NODE_UP;
    n->eligible = true;
    n->power = SCHED_POWER_ON;
    n->capacity.cpu = cpu;
    n->capacity.mem = 64 * GIB;
    n->base_load.cpu = base;
    return i;
}

/* A running endpoint of CPU cores with an arena of ARENA MiB dirtied at DIRTY MiB/s. */
static uint32_t add_ep(struct cluster *c, const char *name, uint32_t node, double cpu,
                       double arena_mib, double dirty_mib)
{
    assert_true(c->ne < MAXE);
    uint32_t i = (uint32_t)c->ne++;
    snprintf(c->names[i], sizeof(c->names[i]), "%s", name);
    struct sched_endpoint *e = &c->eps[i];
    memset(e, 0, sizeof(*e));
    e->name = c->names[i];
    e->id = 1000 + i;
    e->node = node;
    e->last_source = SCHED_NONE;
    e->state = SCHED_EP_RUNNING;
    e->load.cpu = cpu;
    e->load.mem = arena_mib * MIB;
    e->arena_size = (uint64_t)(arena_mib * MIB);
    e->dirty_rate = dirty_mib * MIB;
    return i;
}

static void add_mig(struct cluster *c, uint32_t ep, uint32_t dst)
{
    assert_true(c->nm < MAXM);
    c->migs[c->nm++] = (struct sched_migration){ep, c->eps[ep].node, dst};
    c->eps[ep].state = SCHED_EP_MIGRATING;
}

static uint32_t node_index(const struct cluster *c, const char *id)
{
    for (size_t i = 0; i < c->nn; i++)
        if (strcmp(c->nodes[i].id, id) == 0)
            return (uint32_t)i;
    fail_msg("no node %s", id);
    return SCHED_NONE;
}

static uint32_t ep_index(const struct cluster *c, const char *name)
{
    for (size_t i = 0; i < c->ne; i++)
        if (strcmp(c->eps[i].name, name) == 0)
            return (uint32_t)i;
    fail_msg("no endpoint %s", name);
    return SCHED_NONE;
}

static void print_plan(const struct cluster *c)
{
    for (size_t i = 0; i < c->plan.n_decisions; i++) {
        const struct sched_decision *d = &c->plan.decisions[i];
        fprintf(stderr, "#   [%s/%s/%s%s] %s\n", sched_policy_name(d->policy),
                sched_action_name(d->action), sched_reason_name(d->reason),
                d->automatic ? "" : ", recommend", d->text);
    }
}

/* Evaluate at NOW; the view's history is what the cluster keeps. */
static void evaluate(struct cluster *c, int64_t now)
{
    sched_plan_free(&c->plan);
    c->view = (struct sched_view){c->nodes, c->nn, c->eps, c->ne, c->migs, c->nm, c->hist};
    int rc = sched_evaluate(&c->view, &c->cfg, now, &c->plan);
    assert_int_equal(rc, 0);
    if (getenv("SCHED_TEST_VERBOSE") != NULL)
        print_plan(c);
}

/* Keep the history the plan returned, as the manager does. */
static void keep_history(struct cluster *c)
{
    for (size_t i = 0; i < c->nn; i++)
        c->nodes[i].hist = c->plan.node_hist[i];
    c->hist = c->plan.cluster_hist;
}

/* Commit every automatic move and power change of the plan at NOW. */
static void apply_plan(struct cluster *c, int64_t now)
{
    for (size_t i = 0; i < c->plan.n_decisions; i++) {
        const struct sched_decision *d = &c->plan.decisions[i];
        if (!d->automatic)
            continue;
        switch (d->action) {
        case SCHED_ACT_MIGRATE:
        case SCHED_ACT_REPLACE:
            c->eps[d->endpoint].last_source = c->eps[d->endpoint].node;
            c->eps[d->endpoint].node = d->dest;
            c->eps[d->endpoint].last_move_at = now;
            break;
        case SCHED_ACT_POWER_OFF:
            c->nodes[d->node].state = SCHED_NODE_STANDBY;
            c->nodes[d->node].power = SCHED_POWER_OFF;
            c->nodes[d->node].power_since = now;
            break;
        case SCHED_ACT_POWER_ON:
            c->nodes[d->node].power = SCHED_POWER_WAKING;
            c->nodes[d->node].power_since = now;
            break;
        case SCHED_ACT_DRAIN_DONE:
            c->nodes[d->node].state = SCHED_NODE_DRAINED;
            c->nodes[d->node].eligible = false;
            break;
        default:
            break;
        }
    }
}

static size_t count(const struct cluster *c, enum sched_action a)
{
    size_t n = 0;
    for (size_t i = 0; i < c->plan.n_decisions; i++)
        n += c->plan.decisions[i].action == a;
    return n;
}

/* The first decision with ACTION (and REASON unless -1), or NULL. */
static const struct sched_decision *find(const struct cluster *c, enum sched_action a, int reason)
{
    for (size_t i = 0; i < c->plan.n_decisions; i++) {
        const struct sched_decision *d = &c->plan.decisions[i];
        if (d->action == a && (reason < 0 || (int)d->reason == reason))
            return d;
    }
    return NULL;
}

/* The move of endpoint NAME in the plan, or NULL. */
static const struct sched_decision *move_of(const struct cluster *c, const char *name)
{
    uint32_t ep = ep_index(c, name);
    for (size_t i = 0; i < c->plan.n_decisions; i++) {
        const struct sched_decision *d = &c->plan.decisions[i];
        if ((d->action == SCHED_ACT_MIGRATE || d->action == SCHED_ACT_REPLACE) &&
            d->endpoint == ep)
            return d;
    }
    return NULL;
}

static void assert_text(const struct sched_decision *d, const char *needle)
{
    assert_non_null(d);
    if (strstr(d->text, needle) == NULL)
        fail_msg("\"%s\" not in \"%s\"", needle, d->text);
}

/* Mark node I hot since AGO ms before NOW (as a previous evaluation would have). */
static void hot_since(struct cluster *c, uint32_t i, int64_t since)
{
    c->nodes[i].hist.hot = true;
    c->nodes[i].hist.hot_since = since;
}

/* ------------------------------------------------------------------------ */
/* Overload: a table of crafted views                                        */
/* ------------------------------------------------------------------------ */

struct ep_spec {
    const char *name;
    double cpu, arena_mib, dirty_mib;
    int64_t moved_ago;   /* 0: never */
    bool opt_out;
};

struct overload_case {
    const char *name;
    double n1_base;           /* n1: 10 cores, carrying this plus its endpoints */
    int64_t hot_for;          /* n1 hot since this long (-1: not hot before) */
    double others[3];         /* cpu base of n2, n3, n4 (10 cores each); <0: absent */
    struct ep_spec eps[6];    /* on n1 */
    enum sched_mode mode;     /* with mode_set; otherwise automatic */
    bool mode_set;
    /* Expectations */
    const char *moved[4];     /* endpoints moved, in order */
    const char *dest[4];      /* ...to these nodes */
    enum sched_action other;  /* besides the moves, a decision with this action... */
    int other_reason;         /* ...and reason (-1: no other decision expected) */
    const char *text;         /* a fragment of that decision's (or the first move's) text */
};

static const struct overload_case overload_cases[] = {
    {
        .name = "sheds the cheapest per load relieved to the least loaded node",
        .n1_base = 1, .hot_for = 3 * MIN, .others = {3, 5, 6},
        .eps = {{"big", 4, 4096, 1}, {"kv", 2, 64, 2}, {"web", 2, 128, 1}},
        .moved = {"kv"}, .dest = {"n2"}, .other_reason = -1,
        .text = "n1 cpu 90% > high 80% for 3m; moving kv (arena 64 MiB, dirty 2 MiB/s, load 2 cores",
    },
    {
        .name = "keeps shedding until at or below target, spreading over destinations",
        .n1_base = 0.5, .hot_for = 3 * MIN, .others = {5, 5, 6},
        .eps = {{"a", 1.5, 64, 0}, {"b", 1.5, 65, 0}, {"c", 1.5, 66, 0}, {"d", 4, 8192, 0}},
        .moved = {"a", "b"}, .dest = {"n2", "n3"}, .other_reason = -1,
        .text = "to n2 (cpu 50% -> 65%, below high 80%), leaving n1 at cpu 75%",
    },
    {
        .name = "waits for the sustained window",
        .n1_base = 1, .hot_for = 1 * MIN, .others = {3, 5, 6},
        .eps = {{"kv", 8, 64, 0}},
        .other = SCHED_ACT_NOTHING, .other_reason = SCHED_R_WINDOW,
        .text = "n1 cpu 90% > high 80% for 1m; waiting for the 2m window",
    },
    {
        .name = "a node exactly at the high mark is not overloaded",
        .n1_base = 0, .hot_for = -1, .others = {3, 5, 6},
        .eps = {{"kv", 8, 64, 0}},
        .other_reason = -1,
    },
    {
        .name = "between target and high nothing moves (hysteresis)",
        .n1_base = 0, .hot_for = 10 * MIN, .others = {3, 5, 6},
        .eps = {{"kv", 7.5, 64, 0}},
        .other_reason = -1,
    },
    {
        .name = "no destination stays below high: nothing, explained",
        .n1_base = 1, .hot_for = 3 * MIN, .others = {7.5, 7.6, -1},
        .eps = {{"kv", 8, 64, 0}},
        .other = SCHED_ACT_NOTHING, .other_reason = SCHED_R_NO_DESTINATION,
        .text = "no eligible node stays below high 80% with kv (arena 64 MiB, dirty 0 B/s, "
                "load 8 cores, 64 MiB); no eligible node has 8 cores of cpu free below the mark "
                "(the most is 0.5 cores)",
    },
    {
        .name = "no destination: the closest candidate is named",
        .n1_base = 1, .hot_for = 3 * MIN, .others = {6, 7, -1},
        .eps = {{"kv", 2, 64, 0}, {"web", 6, 64, 0}},
        .other = SCHED_ACT_NOTHING, .other_reason = SCHED_R_NO_DESTINATION,
        .text = "no eligible node stays below high 80% with kv (arena 64 MiB, dirty 0 B/s, "
                "load 2 cores, 64 MiB) (nor with 1 other candidate); closest n2: cpu 60% -> 80%",
    },
    {
        .name = "an endpoint in cooldown is skipped for the next cheapest",
        .n1_base = 5, .hot_for = 3 * MIN, .others = {3, 5, 6},
        .eps = {{"kv", 2, 64, 0, 2 * MIN}, {"web", 2, 512, 0, 0}},
        .moved = {"web"}, .dest = {"n2"}, .other_reason = -1,
    },
    {
        .name = "every candidate blocked: cooldown and opt-out are counted",
        .n1_base = 1, .hot_for = 3 * MIN, .others = {3, 5, 6},
        .eps = {{"kv", 4, 64, 0, 1 * MIN}, {"web", 4, 64, 0, 0, true}},
        .other = SCHED_ACT_NOTHING, .other_reason = SCHED_R_BLOCKED,
        .text = "no endpoint can move: 1 in cooldown (next free in 9m), 1 opted out",
    },
    {
        .name = "a move over the downtime budget is not automatic",
        .n1_base = 1, .hot_for = 3 * MIN, .others = {3, 5, 6},
        .eps = {{"hot", 4, 4096, 200}, {"cold", 4, 4096, 0}},
        .moved = {"cold"}, .dest = {"n2"}, .other_reason = -1,
    },
    {
        .name = "recommend mode plans the same moves, not automatic",
        .n1_base = 1, .hot_for = 3 * MIN, .others = {3, 5, 6},
        .eps = {{"kv", 2, 64, 2}, {"web", 2, 128, 1}, {"big", 4, 4096, 1}},
        .mode = SCHED_MODE_RECOMMEND, .mode_set = true,
        .moved = {"kv"}, .dest = {"n2"}, .other_reason = -1,
    },
    {
        .name = "mode off: nothing at all",
        .n1_base = 1, .hot_for = 3 * MIN, .others = {3, 5, 6},
        .eps = {{"kv", 8, 64, 0}},
        .mode = SCHED_MODE_OFF, .mode_set = true, .other_reason = -1,
    },
};

static void overload_table(void **state)
{
    (void)state;
    for (size_t k = 0; k < sizeof(overload_cases) / sizeof(overload_cases[0]); k++) {
        const struct overload_case *tc = &overload_cases[k];
        void *st = NULL;
        assert_int_equal(setup(&st), 0);
        struct cluster *c = st;
        print_message("# case: %s\n", tc->name);

        c->cfg.energy_mode = SCHED_MODE_OFF;
        c->cfg.overload_mode = tc->mode_set ? tc->mode : SCHED_MODE_AUTOMATIC;
        uint32_t n1 = add_node(c, "n1", 10, tc->n1_base);
        for (int i = 0; i < 3; i++) {
            char id[8];
            snprintf(id, sizeof(id), "n%d", i + 2);
            if (tc->others[i] >= 0)
                add_node(c, id, 10, tc->others[i]);
        }
        for (int i = 0; i < 6 && tc->eps[i].name; i++) {
            const struct ep_spec *s = &tc->eps[i];
            uint32_t e = add_ep(c, s->name, n1, s->cpu, s->arena_mib, s->dirty_mib);
            c->eps[e].last_move_at = s->moved_ago ? T0 - s->moved_ago : 0;
            c->eps[e].opt_out = s->opt_out;
        }
        if (tc->hot_for >= 0)
            hot_since(c, n1, T0 - tc->hot_for);
        evaluate(c, T0);

        size_t n_moves = 0;
        for (int i = 0; i < 4 && tc->moved[i]; i++, n_moves++) {
            const struct sched_decision *d = move_of(c, tc->moved[i]);
            if (d == NULL) {
                print_plan(c);
                fail_msg("case \"%s\": %s not moved", tc->name, tc->moved[i]);
            }
            assert_string_equal(c->nodes[d->dest].id, tc->dest[i]);
            assert_int_equal(d->automatic, c->cfg.overload_mode == SCHED_MODE_AUTOMATIC);
            assert_int_equal(d->reason, SCHED_R_OVERLOAD);
        }
        if (count(c, SCHED_ACT_MIGRATE) != n_moves) {
            print_plan(c);
            fail_msg("case \"%s\": %zu moves, expected %zu", tc->name,
                     count(c, SCHED_ACT_MIGRATE), n_moves);
        }
        const struct sched_decision *other = NULL;
        if (tc->other_reason >= 0) {
            other = find(c, tc->other, tc->other_reason);
            if (other == NULL) {
                print_plan(c);
                fail_msg("case \"%s\": no %s/%s decision", tc->name, sched_action_name(tc->other),
                         sched_reason_name((enum sched_reason)tc->other_reason));
            }
        } else if (n_moves == 0 && c->plan.n_decisions != 0) {
            print_plan(c);
            fail_msg("case \"%s\": expected no decision at all", tc->name);
        }
        if (tc->text != NULL)
            assert_text(other ? other : move_of(c, tc->moved[0]), tc->text);
        teardown(&st);
    }
}

/* After shedding, the source is at or below target and no destination reaches high. */
static void overload_ends_within_marks(void **state)
{
    struct cluster *c = *state;
    c->cfg.energy_mode = SCHED_MODE_OFF;
    uint32_t n1 = add_node(c, "n1", 16, 1);
    for (int i = 0; i < 12; i++) {
        char name[16];
        snprintf(name, sizeof(name), "e%02d", i);
        add_ep(c, name, n1, 1.1, 64 + i, 1);
    }
    for (int i = 2; i <= 5; i++) {
        char id[8];
        snprintf(id, sizeof(id), "n%d", i);
        add_node(c, id, 8, 4);
    }
    hot_since(c, n1, T0 - 5 * MIN);
    evaluate(c, T0);

    struct sched_projection proj[MAXN];
    assert_int_equal(sched_project(&c->view, &c->plan, proj, c->nn), 0);
    assert_true(proj[n1].util_before > 0.8);
    assert_true(proj[n1].util_after <= 0.7);
    for (size_t i = 1; i < c->nn; i++)
        assert_true(proj[i].util_after < 0.8);
    /* Loads are conserved. */
    double before = 0, after = 0;
    for (size_t i = 0; i < c->nn; i++) {
        before += proj[i].before.cpu;
        after += proj[i].after.cpu;
    }
    assert_true(fabs(before - after) < 1e-9);
}

/* ------------------------------------------------------------------------ */
/* Windows, hysteresis and stability across evaluations                      */
/* ------------------------------------------------------------------------ */

static void overload_window_is_measured_across_evaluations(void **state)
{
    struct cluster *c = *state;
    c->cfg.energy_mode = SCHED_MODE_OFF;
    uint32_t n1 = add_node(c, "n1", 10, 1);
    add_node(c, "n2", 20, 1);
    add_ep(c, "kv", n1, 7.5, 64, 0);

    /* A first look: hot from now on. */
    evaluate(c, T0);
    assert_true(c->plan.node_hist[n1].hot);
    assert_int_equal(c->plan.node_hist[n1].hot_since, T0);
    assert_non_null(find(c, SCHED_ACT_NOTHING, SCHED_R_WINDOW));
    keep_history(c);

    evaluate(c, T0 + 1 * MIN);
    assert_int_equal(count(c, SCHED_ACT_MIGRATE), 0);
    assert_int_equal(c->plan.node_hist[n1].hot_since, T0);
    keep_history(c);

    /* The load dips below high once: the window starts over. */
    c->nodes[n1].base_load.cpu = 0;
    evaluate(c, T0 + 90 * SEC);
    assert_false(c->plan.node_hist[n1].hot);
    keep_history(c);
    c->nodes[n1].base_load.cpu = 1;
    evaluate(c, T0 + 2 * MIN);
    assert_int_equal(c->plan.node_hist[n1].hot_since, T0 + 2 * MIN);
    assert_int_equal(count(c, SCHED_ACT_MIGRATE), 0);
    keep_history(c);

    evaluate(c, T0 + 4 * MIN);
    assert_int_equal(count(c, SCHED_ACT_MIGRATE), 1);
    assert_string_equal(c->nodes[move_of(c, "kv")->dest].id, "n2");
}

/* Applying a plan and evaluating again undoes nothing. */
static void no_move_is_undone_by_the_next_evaluation(void **state)
{
    struct cluster *c = *state;
    c->cfg.energy_mode = SCHED_MODE_OFF;
    c->cfg.cooldown_ms = 0; /* even without cooldown: the marks alone must prevent it */
    uint32_t n1 = add_node(c, "n1", 10, 0);
    uint32_t n2 = add_node(c, "n2", 10, 0);
    add_ep(c, "a", n1, 3, 64, 0);
    add_ep(c, "b", n1, 3, 64, 0);
    add_ep(c, "c", n1, 3, 64, 0);
    add_ep(c, "d", n2, 4, 64, 0);
    hot_since(c, n1, T0 - 3 * MIN);

    int64_t now = T0;
    size_t moves = 0;
    for (int round = 0; round < 20; round++, now += 30 * SEC) {
        evaluate(c, now);
        moves += count(c, SCHED_ACT_MIGRATE);
        keep_history(c);
        apply_plan(c, now);
    }
    assert_int_equal(moves, 1);
    struct sched_projection proj[MAXN];
    evaluate(c, now);
    assert_int_equal(sched_project(&c->view, &c->plan, proj, c->nn), 0);
    assert_true(proj[n1].util_after <= 0.7);
    assert_true(proj[n2].util_after < 0.8);
}

/*
 * Ping-pong: an endpoint that just arrived is not sent back where it came
 * from, and a settled endpoint is shed before one that moved recently.
 */
static void no_ping_pong_to_the_node_an_endpoint_just_left(void **state)
{
    struct cluster *c = *state;
    c->cfg.energy_mode = SCHED_MODE_OFF;
    uint32_t b = add_node(c, "b", 10, 4.5);
    uint32_t a = add_node(c, "a", 10, 1);
    add_node(c, "z", 10, 5.5);
    uint32_t kv = add_ep(c, "kv", b, 2, 64, 0);
    uint32_t web = add_ep(c, "web", b, 2, 4096, 0); /* costlier to move than kv */
    /* kv arrived from a 20 minutes ago (past its cooldown); b is hot now. */
    c->eps[kv].last_move_at = T0 - 20 * MIN;
    c->eps[kv].last_source = a;
    hot_since(c, b, T0 - 3 * MIN);

    /* web has not moved lately: it goes first, although it costs more. */
    evaluate(c, T0);
    assert_int_equal(count(c, SCHED_ACT_MIGRATE), 1);
    assert_non_null(move_of(c, "web"));
    assert_int_equal(move_of(c, "web")->dest, a);

    /* With web pinned, kv may move, but not back to a. */
    c->eps[web].opt_out = true;
    evaluate(c, T0);
    assert_int_equal(count(c, SCHED_ACT_MIGRATE), 1);
    assert_string_equal(c->nodes[move_of(c, "kv")->dest].id, "z");

    /* An hour later the block is over and a, the least loaded, is fine again. */
    evaluate(c, T0 + 41 * MIN);
    assert_int_equal(move_of(c, "kv")->dest, a);
}

/* Destinations busy with other migrations: wait, and do not wake a standby node for it. */
static void busy_destinations_wait_rather_than_wake_a_node(void **state)
{
    struct cluster *c = *state;
    c->cfg.max_per_node = 1;
    uint32_t n1 = add_node(c, "n1", 10, 7);
    uint32_t n2 = add_node(c, "n2", 10, 1);
    uint32_t n3 = add_node(c, "n3", 10, 1);
    uint32_t sb = add_node(c, "sb", 10, 0);
    c->nodes[sb].state = SCHED_NODE_STANDBY;
    c->nodes[sb].power = SCHED_POWER_OFF;
    add_ep(c, "kv", n1, 2, 64, 0);
    /* n2 receives a manual move from n3: both are at their limit of 1. */
    add_mig(c, add_ep(c, "m", n3, 0.1, 1, 0), n2);
    hot_since(c, n1, T0 - 5 * MIN);
    evaluate(c, T0);
    assert_int_equal(count(c, SCHED_ACT_MIGRATE), 0);
    assert_int_equal(count(c, SCHED_ACT_POWER_ON), 0);
    assert_text(find(c, SCHED_ACT_NOTHING, SCHED_R_CONCURRENCY),
                "the nodes with room are at their limit (1 migrations at once each): waiting");
}

static void aborted_migrations_back_off_instead_of_looping(void **state)
{
    struct cluster *c = *state;
    c->cfg.energy_mode = SCHED_MODE_OFF;
    uint32_t n1 = add_node(c, "n1", 10, 1);
    uint32_t d = add_node(c, "d1", 10, 1);
    uint32_t kv = add_ep(c, "kv", n1, 4, 64, 0);
    c->nodes[n1].state = SCHED_NODE_DRAINING;
    c->nodes[n1].eligible = false;

    /* Two aborts, the last 40 s ago: base 30 s doubled once = 60 s. */
    c->eps[kv].aborts = 2;
    c->eps[kv].last_abort_at = T0 - 40 * SEC;
    evaluate(c, T0);
    assert_int_equal(count(c, SCHED_ACT_MIGRATE), 0);
    assert_text(find(c, SCHED_ACT_NOTHING, SCHED_R_BACKOFF),
                "kv aborted 2 times in a row; retry in 20s");
    assert_text(find(c, SCHED_ACT_NOTHING, SCHED_R_DRAIN_PROGRESS), "1 in retry backoff");

    evaluate(c, T0 + 20 * SEC);
    assert_int_equal(count(c, SCHED_ACT_MIGRATE), 1);
    assert_int_equal(move_of(c, "kv")->dest, d);

    /* The backoff is capped, and automatic policies give up after max_aborts. */
    c->nodes[n1].state = SCHED_NODE_UP;
    c->nodes[n1].eligible = true;
    c->nodes[n1].base_load.cpu = 5;
    c->eps[kv].aborts = 5;
    c->eps[kv].last_abort_at = T0 - 3 * 60 * MIN;
    hot_since(c, n1, T0 - 10 * MIN);
    evaluate(c, T0);
    assert_int_equal(count(c, SCHED_ACT_MIGRATE), 0);
    assert_text(find(c, SCHED_ACT_NOTHING, SCHED_R_BLOCKED), "1 given up after repeated aborts");
}

static void migrations_in_flight_count_before_shedding_more(void **state)
{
    struct cluster *c = *state;
    c->cfg.energy_mode = SCHED_MODE_OFF;
    uint32_t n1 = add_node(c, "n1", 10, 0);
    uint32_t n2 = add_node(c, "n2", 10, 0);
    uint32_t a = add_ep(c, "a", n1, 3, 64, 0);
    add_ep(c, "b", n1, 3, 64, 0);
    add_ep(c, "c", n1, 3, 64, 0);
    hot_since(c, n1, T0 - 5 * MIN);
    add_mig(c, a, n2);

    evaluate(c, T0);
    assert_int_equal(count(c, SCHED_ACT_MIGRATE), 0);
    assert_text(find(c, SCHED_ACT_NOTHING, SCHED_R_IN_FLIGHT),
                "1 migration in flight will bring it to cpu 60%");
    /* The node stays hot until the move commits. */
    assert_true(c->plan.node_hist[n1].hot);
}

/* ------------------------------------------------------------------------ */
/* Maintenance                                                               */
/* ------------------------------------------------------------------------ */

static void drain_moves_every_endpoint_and_is_done_only_when_committed(void **state)
{
    struct cluster *c = *state;
    c->cfg.energy_mode = SCHED_MODE_OFF;
    uint32_t n1 = add_node(c, "n1", 16, 0);
    add_node(c, "n2", 16, 2);
    add_node(c, "n3", 16, 4);
    for (int i = 0; i < 6; i++) {
        char name[8];
        snprintf(name, sizeof(name), "e%d", i);
        add_ep(c, name, n1, 1 + i * 0.25, 64, 1);
    }
    uint32_t stopped = add_ep(c, "old", n1, 0.5, 16, 0);
    c->eps[stopped].state = SCHED_EP_STOPPED;
    c->nodes[n1].state = SCHED_NODE_DRAINING;
    c->nodes[n1].eligible = false;
    c->cfg.max_per_node = 2;

    int64_t now = T0;
    size_t total = 0;
    bool done = false;
    for (int round = 0; round < 10 && !done; round++, now += 30 * SEC) {
        evaluate(c, now);
        /* Never more than the node's limit at once, and the limit holds across rounds. */
        assert_true(count(c, SCHED_ACT_MIGRATE) <= 2);
        done = find(c, SCHED_ACT_DRAIN_DONE, -1) != NULL;
        if (done)
            assert_int_equal(count(c, SCHED_ACT_MIGRATE) + count(c, SCHED_ACT_REPLACE), 0);
        /* Moves become in flight, then commit one round later. */
        for (size_t m = 0; m < c->nm; m++) {
            c->eps[c->migs[m].endpoint].node = c->migs[m].dst;
            c->eps[c->migs[m].endpoint].state = SCHED_EP_RUNNING;
        }
        c->nm = 0;
        for (size_t i = 0; i < c->plan.n_decisions; i++) {
            const struct sched_decision *d = &c->plan.decisions[i];
            if (d->action == SCHED_ACT_MIGRATE) {
                add_mig(c, d->endpoint, d->dest);
                total++;
            } else if (d->action == SCHED_ACT_REPLACE) {
                c->eps[d->endpoint].node = d->dest;
                total++;
            }
        }
        if (!done) {
            /* While anything is still placed on n1 or in flight, the drain is not done. */
            assert_null(find(c, SCHED_ACT_DRAIN_DONE, -1));
        }
    }
    assert_true(done);
    assert_int_equal(total, 7);
    for (size_t i = 0; i < c->ne; i++)
        assert_int_not_equal(c->eps[i].node, n1);
    assert_text(find(c, SCHED_ACT_DRAIN_DONE, -1), "n1 drained");
}

static void drain_not_done_while_a_migration_is_in_flight(void **state)
{
    struct cluster *c = *state;
    uint32_t n1 = add_node(c, "n1", 16, 0);
    uint32_t n2 = add_node(c, "n2", 16, 0);
    uint32_t kv = add_ep(c, "kv", n1, 1, 64, 0);
    c->nodes[n1].state = SCHED_NODE_DRAINING;
    c->nodes[n1].eligible = false;
    add_mig(c, kv, n2); /* frozen, not committed: kv is still placed on n1 */
    evaluate(c, T0);
    assert_null(find(c, SCHED_ACT_DRAIN_DONE, -1));
    assert_text(find(c, SCHED_ACT_NOTHING, SCHED_R_DRAIN_PROGRESS),
                "draining n1: 1 endpoint left: 1 in flight");

    /* Committed: now it is done. */
    c->nm = 0;
    c->eps[kv].node = n2;
    c->eps[kv].state = SCHED_EP_RUNNING;
    evaluate(c, T0 + 10 * SEC);
    assert_non_null(find(c, SCHED_ACT_DRAIN_DONE, -1));

    /* A migration still arriving at the drained node also keeps it open. */
    c->eps[kv].node = n2;
    add_mig(c, kv, n1);
    evaluate(c, T0 + 20 * SEC);
    assert_null(find(c, SCHED_ACT_DRAIN_DONE, -1));
    assert_text(find(c, SCHED_ACT_NOTHING, SCHED_R_DRAIN_PROGRESS),
                "1 migration still arriving (started before the drain)");
}

/*
 * Two drains at once share the limits: per node (source and destination)
 * and cluster-wide, counting what is already in flight.
 */
struct caps_case {
    uint32_t per_node, cluster, in_flight;
    size_t want_moves, want_each_min;
};

static const struct caps_case caps_cases[] = {
    {2, 3, 0, 3, 1}, /* the cluster cap binds: 3 moves, both drains served */
    {2, 8, 0, 4, 2}, /* the per-node cap binds on each drained node */
    {2, 3, 1, 2, 0}, /* one in flight already counts against the cluster cap */
    {1, 8, 0, 2, 1}, /* per node 1 */
};

static void concurrency_caps_hold_across_two_drains(void **state)
{
    (void)state;
    for (size_t k = 0; k < sizeof(caps_cases) / sizeof(caps_cases[0]); k++) {
        const struct caps_case *tc = &caps_cases[k];
        void *st = NULL;
        assert_int_equal(setup(&st), 0);
        struct cluster *c = st;
        c->cfg.energy_mode = SCHED_MODE_OFF;
        c->cfg.max_per_node = tc->per_node;
        c->cfg.max_cluster = tc->cluster;
        uint32_t a = add_node(c, "a", 16, 0), b = add_node(c, "b", 16, 0);
        for (int i = 0; i < 5; i++) {
            char name[8];
            snprintf(name, sizeof(name), "a%d", i);
            add_ep(c, name, a, 0.5, 64, 0);
            snprintf(name, sizeof(name), "b%d", i);
            add_ep(c, name, b, 0.5, 64, 0);
        }
        for (int i = 0; i < 6; i++) {
            char id[8];
            snprintf(id, sizeof(id), "d%d", i);
            add_node(c, id, 16, 1);
        }
        uint32_t other = add_node(c, "x", 16, 0);
        uint32_t other2 = add_node(c, "y", 16, 0);
        for (uint32_t i = 0; i < tc->in_flight; i++)
            add_mig(c, add_ep(c, "m", other, 0.1, 1, 0), other2);
        c->nodes[a].state = c->nodes[b].state = SCHED_NODE_DRAINING;
        c->nodes[a].eligible = c->nodes[b].eligible = false;
        evaluate(c, T0);

        size_t from_a = 0, from_b = 0;
        uint32_t per_dest[MAXN] = {0};
        for (size_t i = 0; i < c->plan.n_decisions; i++) {
            const struct sched_decision *d = &c->plan.decisions[i];
            if (d->action != SCHED_ACT_MIGRATE)
                continue;
            from_a += d->node == a;
            from_b += d->node == b;
            per_dest[d->dest]++;
        }
        if (from_a + from_b != tc->want_moves) {
            print_plan(c);
            fail_msg("case %zu: %zu moves, want %zu", k, from_a + from_b, tc->want_moves);
        }
        assert_true(from_a >= tc->want_each_min && from_b >= tc->want_each_min);
        assert_true(from_a <= tc->per_node && from_b <= tc->per_node);
        for (size_t i = 0; i < c->nn; i++)
            assert_true(per_dest[i] <= tc->per_node);
        assert_true(from_a + from_b + tc->in_flight <= tc->cluster);
        /* Whoever waits is told why. */
        assert_text(find(c, SCHED_ACT_NOTHING, SCHED_R_DRAIN_PROGRESS), "waiting for");
        teardown(&st);
    }
}

static void impossible_drain_is_explained(void **state)
{
    struct cluster *c = *state;
    c->cfg.energy_mode = SCHED_MODE_OFF;
    uint32_t n1 = add_node(c, "n1", 16, 0);
    add_node(c, "n2", 8, 2);
    add_node(c, "n3", 8, 3);
    add_ep(c, "huge", n1, 12, 1024, 0);
    add_ep(c, "small", n1, 1, 64, 0);

    /* Dry run on an up node: what a drain would do. */
    c->view = (struct sched_view){c->nodes, c->nn, c->eps, c->ne, c->migs, c->nm, c->hist};
    assert_int_equal(sched_drain_dry_run(&c->view, &c->cfg, n1, T0, &c->plan), 0);
    assert_int_equal(c->plan.blocked, 1);
    assert_non_null(move_of(c, "small"));
    assert_false(move_of(c, "small")->automatic);
    assert_text(find(c, SCHED_ACT_NOTHING, SCHED_R_NO_DESTINATION),
                "cannot move huge (arena 1 GiB, dirty 0 B/s, load 12 cores, 1 GiB): no eligible "
                "node stays below high 80% with it; no eligible node has 12 cores of cpu free "
                "below the mark (the most is 4.4 cores)");
    assert_text(find(c, SCHED_ACT_NOTHING, SCHED_R_DRY_RUN),
                "drain n1: 2 endpoints; 1 can move, 1 cannot (see above): the drain would not "
                "complete");
    /* A dry run keeps the history as it was. */
    assert_false(c->plan.node_hist[n1].hot);

    /* The real drain moves what it can, explains the rest, and is not done. */
    c->nodes[n1].state = SCHED_NODE_DRAINING;
    c->nodes[n1].eligible = false;
    evaluate(c, T0);
    assert_int_equal(count(c, SCHED_ACT_MIGRATE), 1);
    assert_non_null(find(c, SCHED_ACT_NOTHING, SCHED_R_NO_DESTINATION));
    assert_null(find(c, SCHED_ACT_DRAIN_DONE, -1));
    assert_text(find(c, SCHED_ACT_NOTHING, SCHED_R_DRAIN_PROGRESS), "1 without a destination");
}

static void drain_deadline_expires_with_endpoints_left(void **state)
{
    struct cluster *c = *state;
    uint32_t n1 = add_node(c, "n1", 16, 0);
    add_node(c, "n2", 4, 3);
    add_ep(c, "huge", n1, 12, 1024, 0);
    c->nodes[n1].state = SCHED_NODE_DRAINING;
    c->nodes[n1].eligible = false;
    c->nodes[n1].drain_deadline = T0 + 5 * MIN;

    evaluate(c, T0);
    assert_null(find(c, SCHED_ACT_DRAIN_EXPIRED, -1));
    assert_text(find(c, SCHED_ACT_NOTHING, SCHED_R_DRAIN_PROGRESS), "deadline in 5m");

    evaluate(c, T0 + 6 * MIN);
    assert_text(find(c, SCHED_ACT_DRAIN_EXPIRED, -1),
                "draining n1: deadline passed with 1 endpoint left");
    assert_int_equal(count(c, SCHED_ACT_MIGRATE), 0);
}

static void drain_with_no_room_wakes_a_standby_node(void **state)
{
    struct cluster *c = *state;
    uint32_t n1 = add_node(c, "n1", 16, 0);
    add_node(c, "n2", 8, 6);
    uint32_t sb = add_node(c, "sb", 16, 0);
    add_ep(c, "kv", n1, 4, 64, 0);
    c->nodes[n1].state = SCHED_NODE_DRAINING;
    c->nodes[n1].eligible = false;
    c->nodes[sb].state = SCHED_NODE_STANDBY;
    c->nodes[sb].power = SCHED_POWER_OFF;

    evaluate(c, T0);
    const struct sched_decision *d = find(c, SCHED_ACT_POWER_ON, SCHED_R_NO_DESTINATION);
    assert_non_null(d);
    assert_int_equal(d->node, sb);
    assert_text(d, "n1 cannot shed: no destination stays below high 80%: powering on sb");

    /* An endpoint no node could ever hold wakes nobody. */
    c->eps[0].load.cpu = 14;
    evaluate(c, T0);
    assert_int_equal(count(c, SCHED_ACT_POWER_ON), 0);
    assert_text(find(c, SCHED_ACT_NOTHING, SCHED_R_NO_STANDBY),
                "no standby node could hold 14 cores, 64 MiB below high 80%");
}

/* ------------------------------------------------------------------------ */
/* Energy                                                                    */
/* ------------------------------------------------------------------------ */

/* Six 16-core nodes at low load. */
static void idle_cluster(struct cluster *c)
{
    static const double base[] = {1, 0.5, 1.2, 1, 1.5, 0.8};
    for (int i = 0; i < 6; i++) {
        char id[8];
        snprintf(id, sizeof(id), "n%d", i + 1);
        uint32_t n = add_node(c, id, 16, base[i]);
        for (int k = 0; k < 2; k++) {
            char name[16];
            snprintf(name, sizeof(name), "s%d%d", i + 1, k);
            add_ep(c, name, n, 0.5, 256, 1);
        }
    }
}

static void energy_empties_the_least_loaded_node_then_powers_it_off(void **state)
{
    struct cluster *c = *state;
    idle_cluster(c);
    c->cfg.max_per_node = 1;
    uint32_t n2 = node_index(c, "n2");

    /* Underused, but not for the power-off window yet. */
    evaluate(c, T0);
    assert_text(find(c, SCHED_ACT_NOTHING, SCHED_R_WINDOW),
                "waiting for the 40m window before powering a node off");
    assert_int_equal(count(c, SCHED_ACT_MIGRATE), 0);
    keep_history(c);

    int64_t now = T0 + 41 * MIN;
    evaluate(c, now);
    /* n2 is the least loaded; one move at a time (per-node limit 1). */
    assert_int_equal(count(c, SCHED_ACT_MIGRATE), 1);
    const struct sched_decision *d = find(c, SCHED_ACT_MIGRATE, SCHED_R_UNDERUSED);
    assert_int_equal(d->node, n2);
    assert_text(d, "cluster cpu 12% < low 20% for 41m; emptying n2");
    assert_true(c->plan.node_hist[n2].evacuating);
    keep_history(c);
    apply_plan(c, now);

    /* While it is emptied, no policy sends anything to n2; the next move goes. */
    now += 30 * SEC;
    evaluate(c, now);
    assert_int_equal(count(c, SCHED_ACT_MIGRATE), 1);
    assert_text(find(c, SCHED_ACT_MIGRATE, SCHED_R_UNDERUSED), "emptying n2 for power-off");
    keep_history(c);
    apply_plan(c, now);

    now += 30 * SEC;
    evaluate(c, now);
    d = find(c, SCHED_ACT_POWER_OFF, -1);
    assert_non_null(d);
    assert_int_equal(d->node, n2);
    assert_text(d, "n2 is empty: powering it off (standby)");
    /* The next power-off needs a fresh window. */
    assert_int_equal(c->plan.cluster_hist.underused_since, now);
    assert_false(c->plan.node_hist[n2].evacuating);
    keep_history(c);
    apply_plan(c, now);

    now += 30 * SEC;
    evaluate(c, now);
    assert_int_equal(count(c, SCHED_ACT_POWER_OFF), 0);
    assert_int_equal(count(c, SCHED_ACT_MIGRATE), 0);
}

static void energy_keeps_min_powered_on_and_reserve(void **state)
{
    struct cluster *c = *state;
    idle_cluster(c);
    c->hist.underused = true;
    c->hist.underused_since = T0 - 60 * MIN;

    c->cfg.min_powered_on = 6;
    evaluate(c, T0);
    assert_text(find(c, SCHED_ACT_NOTHING, SCHED_R_BLOCKED),
                "but only 6 eligible nodes are powered on (min_powered_on 6)");
    assert_int_equal(count(c, SCHED_ACT_MIGRATE), 0);

    /* Spare now: 6 nodes x 12.8 cores minus the load; without one node it drops by 12.8. */
    c->cfg.min_powered_on = 2;
    c->cfg.power_reserve_cpu = 60;
    evaluate(c, T0);
    assert_int_equal(count(c, SCHED_ACT_MIGRATE), 0);
    assert_text(find(c, SCHED_ACT_NOTHING, SCHED_R_BLOCKED),
                "without it the spare capacity would be");
}

static void energy_skips_nodes_with_pinned_endpoints(void **state)
{
    struct cluster *c = *state;
    idle_cluster(c);
    c->hist.underused = true;
    c->hist.underused_since = T0 - 60 * MIN;
    c->eps[ep_index(c, "s20")].opt_out = true;
    evaluate(c, T0);
    const struct sched_decision *d = find(c, SCHED_ACT_MIGRATE, SCHED_R_UNDERUSED);
    assert_non_null(d);
    /* n2 is the least loaded but pinned; n6 (0.8 + 1) is next. */
    assert_string_equal(c->nodes[d->node].id, "n6");
}

static void energy_abandons_when_load_rises_and_powers_on(void **state)
{
    struct cluster *c = *state;
    idle_cluster(c);
    c->cfg.max_per_node = 1;
    /* Overload off: here the cluster-wide pressure alone must wake a node. */
    c->cfg.overload_mode = SCHED_MODE_OFF;
    c->hist.underused = true;
    c->hist.underused_since = T0 - 60 * MIN;
    uint32_t sb = add_node(c, "sb", 32, 0);
    c->nodes[sb].state = SCHED_NODE_STANDBY;
    c->nodes[sb].power = SCHED_POWER_OFF;

    evaluate(c, T0);
    assert_int_equal(count(c, SCHED_ACT_MIGRATE), 1);
    keep_history(c);
    uint32_t evac = find(c, SCHED_ACT_MIGRATE, -1)->node;

    /* Load jumps above high everywhere. */
    for (size_t i = 0; i < c->nn; i++)
        if (i != sb)
            c->nodes[i].base_load.cpu = 13.5;
    evaluate(c, T0 + 30 * SEC);
    assert_int_equal(count(c, SCHED_ACT_POWER_ON), 0); /* pressure not sustained yet */
    assert_text(find(c, SCHED_ACT_NOTHING, SCHED_R_ABANDONED), "the cluster is under pressure");
    assert_false(c->plan.node_hist[evac].evacuating);
    keep_history(c);

    evaluate(c, T0 + 30 * SEC + 5 * MIN);
    const struct sched_decision *d = find(c, SCHED_ACT_POWER_ON, SCHED_R_LOAD_HIGH);
    assert_non_null(d);
    assert_int_equal(d->node, sb);
    assert_text(d, "cluster cpu 91% > high 80% for 5m: powering on sb (32 cores)");
    keep_history(c);
    apply_plan(c, T0 + 30 * SEC + 5 * MIN);

    /* While sb is waking, no second node is woken. */
    uint32_t sb2 = add_node(c, "sb2", 32, 0);
    c->nodes[sb2].state = SCHED_NODE_STANDBY;
    c->nodes[sb2].power = SCHED_POWER_OFF;
    c->hist.pressure_since = T0; /* pressure long enough again */
    evaluate(c, T0 + 12 * MIN);
    assert_int_equal(count(c, SCHED_ACT_POWER_ON), 0);
    assert_text(find(c, SCHED_ACT_NOTHING, SCHED_R_WAKING), "sb is already powering on");

    /* A node that did not come up within the timeout is given up for another. */
    evaluate(c, T0 + 30 * MIN);
    d = find(c, SCHED_ACT_POWER_ON, -1);
    assert_non_null(d);
    assert_int_equal(d->node, sb2);
}

static void energy_recommend_mode_keeps_no_state(void **state)
{
    struct cluster *c = *state;
    idle_cluster(c);
    c->cfg.energy_mode = SCHED_MODE_RECOMMEND;
    c->hist.underused = true;
    c->hist.underused_since = T0 - 60 * MIN;
    evaluate(c, T0);
    const struct sched_decision *d = find(c, SCHED_ACT_MIGRATE, SCHED_R_UNDERUSED);
    assert_non_null(d);
    assert_false(d->automatic);
    for (size_t i = 0; i < c->nn; i++)
        assert_false(c->plan.node_hist[i].evacuating);
}

/* ------------------------------------------------------------------------ */
/* Cost model                                                                */
/* ------------------------------------------------------------------------ */

static void cost_model_follows_precopy_arithmetic(void **state)
{
    (void)state;
    struct sched_config cfg;
    struct sched_cost cost;
    sched_config_default(&cfg);

    /* 64 MiB at 125 MB/s with 2 MiB/s dirty: ~arena/bw/(1-q), a tiny downtime. */
    double a = 64 * MIB, bw = 125e6, q = 2 * MIB / bw;
    sched_predict(&cfg, (uint64_t)a, 2 * MIB, bw, &cost);
    assert_false(cost.stop_and_copy);
    assert_false(cost.over_budget);
    assert_true(fabs(cost.duration_s - (a / bw / (1 - q) + 0.01)) < 0.02);
    assert_true(cost.downtime_s < 0.02 && cost.downtime_s >= 0.01);
    assert_true(cost.rounds >= 1);

    /* Dirtying faster than the link: stop-and-copy, the whole arena frozen. */
    sched_predict(&cfg, (uint64_t)a, 200e6, bw, &cost);
    assert_true(cost.stop_and_copy);
    assert_true(cost.over_budget);
    assert_true(fabs(cost.downtime_s - (a / bw + 0.01)) < 1e-9);

    /* Slow convergence: rounds are capped and the remainder is sent frozen. */
    cfg.max_rounds = 3;
    sched_predict(&cfg, (uint64_t)(4 * GIB), 0.9 * bw, bw, &cost);
    assert_int_equal(cost.rounds, 3);
    assert_true(cost.over_budget);

    /* Zero bandwidth means "the configured default". */
    sched_config_default(&cfg);
    struct sched_cost c2;
    sched_predict(&cfg, (uint64_t)a, 2 * MIB, 0, &cost);
    sched_predict(&cfg, (uint64_t)a, 2 * MIB, cfg.bandwidth, &c2);
    assert_true(cost.duration_s == c2.duration_s);
}

/* ------------------------------------------------------------------------ */
/* Configuration and view validation                                         */
/* ------------------------------------------------------------------------ */

struct bad_config {
    const char *field;
    double value;
    const char *msg;
};

static const struct bad_config bad_configs[] = {
    {"high_mark", 1.5, "high_mark 1.5: out of range; accepted: 0.01 to 1"},
    {"target_mark", 0.9, "target_mark 0.9: must be below high_mark 0.8"},
    {"low_mark", 0.75, "low_mark 0.75: must be below target_mark 0.7"},
    {"max_cluster", 0, "max_cluster 0: out of range; accepted: 1 to 100000"},
    {"overload_window_ms", -5, "overload_window_ms -5: out of range; accepted: 0 to 86400000 ms"},
    {"bandwidth", NAN, "bandwidth nan: must be a finite number; accepted: 1000 to 1e+12 bytes/s"},
    {"max_rounds", 2.5, "max_rounds 2.5: must be a whole number; accepted: 1 to 1000"},
    {"energy_mode", 3, "energy_mode 3: out of range; accepted: 0 (off), 1 (recommend), 2 (automatic)"},
    {"backoff_base_ms", 3600000, "backoff_base_ms 3600000: must not exceed backoff_max_ms 1800000"},
};

static void config_validation_names_the_bad_field(void **state)
{
    (void)state;
    struct sched_config cfg;
    char msg[256];
    sched_config_default(&cfg);
    assert_int_equal(sched_config_validate(&cfg, msg, sizeof(msg)), 0);
    assert_true(cfg.high_mark == 0.8 && cfg.target_mark == 0.7 && cfg.low_mark == 0.2);
    assert_int_equal(cfg.overload_window_ms, 120000);
    assert_int_equal(cfg.energy_mode, SCHED_MODE_OFF);
    assert_int_equal(cfg.overload_mode, SCHED_MODE_AUTOMATIC);

    for (size_t k = 0; k < sizeof(bad_configs) / sizeof(bad_configs[0]); k++) {
        const struct bad_config *b = &bad_configs[k];
        const struct sched_option *p = sched_option_find(b->field);
        assert_non_null(p);
        sched_config_default(&cfg);
        /* Write the raw value, as a buggy caller would, bypassing the setter. */
        char *field = (char *)&cfg + p->offset;
        switch (p->type) {
        case SCHED_OPT_FRACTION:
        case SCHED_OPT_CORES:
        case SCHED_OPT_RATE:
            memcpy(field, &b->value, sizeof(double));
            break;
        case SCHED_OPT_DURATION: {
            int64_t v = (int64_t)b->value;
            memcpy(field, &v, sizeof(v));
            break;
        }
        case SCHED_OPT_COUNT:
        case SCHED_OPT_MODE:
            if (b->value == floor(b->value)) {
                uint32_t v = (uint32_t)b->value;
                memcpy(field, &v, sizeof(v));
            } else {
                /* A fraction cannot be stored in a count: the setter must refuse it. */
                assert_int_equal(sched_config_set(&cfg, b->field, b->value, msg, sizeof(msg)),
                                 -EINVAL);
                assert_string_equal(msg, b->msg);
                continue;
            }
            break;
        }
        assert_int_equal(sched_config_validate(&cfg, msg, sizeof(msg)), -EINVAL);
        assert_string_equal(msg, b->msg);
    }

    sched_config_default(&cfg);
    assert_int_equal(sched_config_set(&cfg, "no_such", 1, msg, sizeof(msg)), -ENOENT);
    assert_int_equal(sched_config_set(&cfg, "high_mark", 2, msg, sizeof(msg)), -EINVAL);
    assert_true(cfg.high_mark == 0.8); /* unchanged on failure */
    assert_int_equal(sched_config_set(&cfg, "cooldown_ms", 60000, msg, sizeof(msg)), 0);
    assert_int_equal(cfg.cooldown_ms, 60000);
    assert_true(sched_config_get(&cfg, sched_option_find("cooldown_ms")) == 60000);

    /* Every table entry's default is what sched_config_default stores. */
    sched_config_default(&cfg);
    for (size_t i = 0; i < sched_n_options; i++)
        assert_true(sched_config_get(&cfg, &sched_options[i]) == sched_options[i].def);

    enum sched_mode m;
    assert_int_equal(sched_mode_parse("recommend", &m), 0);
    assert_int_equal(m, SCHED_MODE_RECOMMEND);
    assert_int_equal(sched_mode_parse("auto", &m), -EINVAL);
}

static void bad_views_are_rejected_with_a_reason(void **state)
{
    struct cluster *c = *state;
    char msg[256];
    uint32_t n1 = add_node(c, "n1", 8, 0);
    uint32_t n2 = add_node(c, "n2", 8, 0);
    uint32_t kv = add_ep(c, "kv", n1, 1, 64, 0);
    c->view = (struct sched_view){c->nodes, c->nn, c->eps, c->ne, c->migs, c->nm, c->hist};
    assert_int_equal(sched_view_validate(&c->view, msg, sizeof(msg)), 0);

    c->nodes[n2].capacity.cpu = 0;
    assert_int_equal(sched_view_validate(&c->view, msg, sizeof(msg)), -EINVAL);
    assert_string_equal(msg, "nodes[1] (n2): capacity.cpu 0: must be a finite number > 0");
    assert_int_equal(sched_evaluate(&c->view, &c->cfg, T0, &c->plan), -EINVAL);
    assert_null(c->plan.decisions);
    c->nodes[n2].capacity.cpu = 8;

    c->nodes[n2].id = "n1";
    assert_int_equal(sched_view_validate(&c->view, msg, sizeof(msg)), -EINVAL);
    assert_string_equal(msg, "nodes[0] and nodes[1]: same id \"n1\"");
    c->nodes[n2].id = c->ids[n2];

    c->eps[kv].node = 7;
    assert_int_equal(sched_view_validate(&c->view, msg, sizeof(msg)), -EINVAL);
    assert_string_equal(msg, "endpoints[0] (kv): node 7: no such node index (2 nodes)");
    c->eps[kv].node = n1;

    c->eps[kv].load.cpu = NAN;
    assert_int_equal(sched_view_validate(&c->view, msg, sizeof(msg)), -EINVAL);
    c->eps[kv].load.cpu = 1;

    c->migs[0] = (struct sched_migration){kv, n2, n1};
    c->view.n_migrations = 1;
    assert_int_equal(sched_view_validate(&c->view, msg, sizeof(msg)), -EINVAL);
    assert_string_equal(msg, "migrations[0] (kv from n2 to n1): the endpoint is not on the source node");

    struct sched_config bad = c->cfg;
    bad.high_mark = 0.5;
    c->view.n_migrations = 0;
    assert_int_equal(sched_evaluate(&c->view, &bad, T0, &c->plan), -EINVAL);
    assert_int_equal(sched_drain_dry_run(&c->view, &c->cfg, 9, T0, &c->plan), -EINVAL);
}

/* ------------------------------------------------------------------------ */
/* Determinism                                                               */
/* ------------------------------------------------------------------------ */

static uint64_t lcg(uint64_t *s)
{
    *s = *s * 6364136223846793005ull + 1442695040888963407ull;
    return *s >> 33;
}

/* A busy cluster: hot nodes, a drain, migrations in flight, standby nodes. */
static void busy_cluster(struct cluster *c, uint64_t seed)
{
    uint64_t s = seed;
    for (int i = 0; i < 40; i++) {
        char id[8];
        snprintf(id, sizeof(id), "n%02d", i);
        uint32_t n = add_node(c, id, 8 + (double)(lcg(&s) % 3) * 8, (double)(lcg(&s) % 20) / 10);
        int k = (int)(lcg(&s) % 8);
        for (int j = 0; j < k; j++) {
            char name[16];
            snprintf(name, sizeof(name), "e%02d_%d", i, j);
            uint32_t e = add_ep(c, name, n, 0.2 + (double)(lcg(&s) % 30) / 10,
                                16 + (double)(lcg(&s) % 1024), (double)(lcg(&s) % 8));
            if (lcg(&s) % 7 == 0)
                c->eps[e].last_move_at = T0 - (int64_t)(lcg(&s) % 20) * MIN;
        }
        if (lcg(&s) % 3 == 0)
            hot_since(c, n, T0 - 5 * MIN);
    }
    c->nodes[3].state = SCHED_NODE_DRAINING;
    c->nodes[3].eligible = false;
    c->nodes[7].state = SCHED_NODE_STANDBY;
    c->nodes[7].power = SCHED_POWER_OFF;
    c->cfg.max_cluster = 12;
    c->cfg.max_per_node = 2;
}

/* The same cluster with nodes and endpoints shuffled gives the same decisions, by name. */
static void assert_same_plan_when_shuffled(struct cluster *c, uint64_t seed)
{
    struct cluster *p = calloc(1, sizeof(*p));
    assert_non_null(p);
    p->cfg = c->cfg;
    p->hist = c->hist;
    uint32_t perm_n[MAXN], inv_n[MAXN], perm_e[MAXE], inv_e[MAXE];
    uint64_t s = seed;
    for (uint32_t i = 0; i < c->nn; i++)
        perm_n[i] = i;
    for (uint32_t i = (uint32_t)c->nn - 1; i > 0; i--) {
        uint32_t j = (uint32_t)(lcg(&s) % (i + 1)), t = perm_n[i];
        perm_n[i] = perm_n[j];
        perm_n[j] = t;
    }
    for (uint32_t i = 0; i < c->ne; i++)
        perm_e[i] = i;
    for (uint32_t i = (uint32_t)c->ne - 1; i > 0; i--) {
        uint32_t j = (uint32_t)(lcg(&s) % (i + 1)), t = perm_e[i];
        perm_e[i] = perm_e[j];
        perm_e[j] = t;
    }
    p->nn = c->nn;
    p->ne = c->ne;
    for (uint32_t i = 0; i < c->nn; i++) {
        p->nodes[i] = c->nodes[perm_n[i]];
        inv_n[perm_n[i]] = i;
    }
    for (uint32_t i = 0; i < c->ne; i++) {
        p->eps[i] = c->eps[perm_e[i]];
        p->eps[i].node = inv_n[c->eps[perm_e[i]].node];
        if (p->eps[i].last_source != SCHED_NONE)
            p->eps[i].last_source = inv_n[p->eps[i].last_source];
        inv_e[perm_e[i]] = i;
    }
    p->nm = c->nm;
    for (size_t m = 0; m < c->nm; m++)
        p->migs[m] = (struct sched_migration){inv_e[c->migs[m].endpoint], inv_n[c->migs[m].src],
                                              inv_n[c->migs[m].dst]};
    evaluate(p, T0);
    assert_int_equal(p->plan.n_decisions, c->plan.n_decisions);
    for (size_t i = 0; i < c->plan.n_decisions; i++) {
        const struct sched_decision *x = &c->plan.decisions[i], *y = &p->plan.decisions[i];
        assert_int_equal(x->action, y->action);
        assert_int_equal(x->reason, y->reason);
        assert_string_equal(x->text, y->text);
        if (x->node != SCHED_NONE)
            assert_string_equal(c->nodes[x->node].id, p->nodes[y->node].id);
        if (x->dest != SCHED_NONE)
            assert_string_equal(c->nodes[x->dest].id, p->nodes[y->dest].id);
        if (x->endpoint != SCHED_NONE)
            assert_string_equal(c->eps[x->endpoint].name, p->eps[y->endpoint].name);
        assert_memory_equal(&x->fig, &y->fig, sizeof(x->fig));
    }
    for (uint32_t i = 0; i < c->nn; i++)
        assert_memory_equal(&c->plan.node_hist[i], &p->plan.node_hist[inv_n[i]],
                            sizeof(struct sched_node_hist));
    sched_plan_free(&p->plan);
    free(p);
}

static void decisions_are_deterministic_whatever_the_input_order(void **state)
{
    struct cluster *c = *state;
    busy_cluster(c, 42);
    add_mig(c, 0, 12);
    evaluate(c, T0);
    assert_true(count(c, SCHED_ACT_MIGRATE) > 0);

    /* Same input twice: byte-identical decisions. */
    struct sched_plan first = c->plan;
    memset(&c->plan, 0, sizeof(c->plan));
    evaluate(c, T0);
    assert_int_equal(first.n_decisions, c->plan.n_decisions);
    assert_memory_equal(first.decisions, c->plan.decisions,
                        first.n_decisions * sizeof(*first.decisions));

    for (uint64_t seed = 1; seed <= 5; seed++)
        assert_same_plan_when_shuffled(c, seed);
    sched_plan_free(&first);
}

/* Energy trials place and take back: still the same plan in any order. */
static void energy_plans_are_deterministic_too(void **state)
{
    struct cluster *c = *state;
    idle_cluster(c);
    c->hist.underused = true;
    c->hist.underused_since = T0 - 60 * MIN;
    c->eps[ep_index(c, "s20")].opt_out = true;
    evaluate(c, T0);
    assert_non_null(find(c, SCHED_ACT_MIGRATE, SCHED_R_UNDERUSED));
    for (uint64_t seed = 1; seed <= 5; seed++)
        assert_same_plan_when_shuffled(c, seed);
}

/* Degenerate views are valid and quiet. */
static void empty_and_unplaced_views_plan_nothing(void **state)
{
    struct cluster *c = *state;
    evaluate(c, T0);
    assert_int_equal(c->plan.n_decisions, 0);
    assert_int_equal(c->plan.n_nodes, 0);
    uint32_t pending = add_ep(c, "pending", 0, 1, 64, 0);
    c->eps[pending].node = SCHED_NONE;
    c->eps[pending].state = SCHED_EP_PENDING;
    evaluate(c, T0);
    assert_int_equal(c->plan.n_decisions, 0);
    add_node(c, "n1", 4, 0);
    evaluate(c, T0);
    assert_int_equal(c->plan.n_decisions, 0);
}

/*
 * Underuse (docs/scheduler.md): a cluster with nodes but no endpoints is
 * underused and powers idle nodes off down to min_powered_on, as DPM does;
 * a cluster with no eligible powered-on capacity is not (nothing to save),
 * nor is one where a node has not reported its load yet.
 */
static void underuse_needs_capacity_and_measurements(void **state)
{
    struct cluster *c = *state;
    c->cfg.power_off_window_ms = 10 * MIN;
    add_node(c, "n1", 4, 0.1);
    add_node(c, "n2", 4, 0.1);
    add_node(c, "n3", 4, 0.1);

    /* One node not measured yet: no window starts. */
    c->nodes[2].load_unknown = true;
    evaluate(c, T0);
    assert_false(c->plan.cluster_hist.underused);
    assert_int_equal(c->plan.n_decisions, 0);

    /* All measured, no endpoint at all: underused, and after the window one node goes. */
    c->nodes[2].load_unknown = false;
    evaluate(c, T0 + SEC);
    assert_true(c->plan.cluster_hist.underused);
    keep_history(c);
    evaluate(c, T0 + SEC + 10 * MIN);
    assert_int_equal(count(c, SCHED_ACT_POWER_OFF), 1);
    assert_text(find(c, SCHED_ACT_POWER_OFF, -1), "< low 20%");
    apply_plan(c, T0 + SEC + 10 * MIN);
    keep_history(c);
    /* Two left: min_powered_on holds them on however long the cluster idles. */
    evaluate(c, T0 + SEC + 60 * MIN);
    assert_int_equal(count(c, SCHED_ACT_POWER_OFF), 0);

    /* No eligible powered-on capacity: not underused, nothing to power off. */
    for (size_t i = 0; i < c->nn; i++)
        if (c->nodes[i].power == SCHED_POWER_ON) {
            c->nodes[i].state = SCHED_NODE_DRAINED;
            c->nodes[i].eligible = false;
        }
    evaluate(c, T0 + SEC + 61 * MIN);
    assert_false(c->plan.cluster_hist.underused);
    assert_int_equal(count(c, SCHED_ACT_POWER_OFF), 0);
}

/*
 * Each node's percentages in a text are of one resource, and named: the
 * destination below is fuller in cpu before the move but in mem after it,
 * and must not read "mem 65% -> 75%" (65% being its cpu).
 */
static void explanations_do_not_mix_resources(void **state)
{
    struct cluster *c = *state;
    uint32_t n1 = add_node(c, "n1", 4, 3.4);
    uint32_t n2 = add_node(c, "n2", 4, 2.6);
    c->nodes[n2].capacity.mem = 1 * GIB;
    c->nodes[n2].base_load.mem = 0.5 * GIB;
    add_ep(c, "web", n1, 0.2, 256, 0);
    hot_since(c, n1, T0 - 10 * MIN);
    evaluate(c, T0);
    const struct sched_decision *d = move_of(c, "web");
    assert_non_null(d);
    assert_text(d, "to n2 (mem 50% -> 75%, below high 80%), leaving n1 at cpu 85%");
    assert_int_equal(d->fig.resource, SCHED_CPU);
    assert_true(fabs(d->fig.src_before - 0.90) < 1e-9 && fabs(d->fig.src_after - 0.85) < 1e-9);
    assert_true(fabs(d->fig.dst_before - 0.50) < 1e-9 && fabs(d->fig.dst_after - 0.75) < 1e-9);
    assert_text(find(c, SCHED_ACT_NOTHING, -1), "after 1 move still at cpu 85%");
}


/* ------------------------------------------------------------------------ */
/* Projection and allocation failures                                        */
/* ------------------------------------------------------------------------ */

static void projection_applies_in_flight_and_planned_moves(void **state)
{
    struct cluster *c = *state;
    idle_cluster(c);
    c->hist.underused = true;
    c->hist.underused_since = T0 - 60 * MIN;
    uint32_t n1 = node_index(c, "n1"), n3 = node_index(c, "n3");
    add_mig(c, ep_index(c, "s10"), n3);
    evaluate(c, T0);
    struct sched_projection proj[MAXN];
    assert_int_equal(sched_project(&c->view, &c->plan, proj, c->nn), 0);
    assert_int_equal(proj[n1].endpoints_before, 2);
    assert_true(proj[n1].endpoints_after <= 1);
    assert_true(proj[n1].after.cpu < proj[n1].before.cpu);
    assert_true(proj[n3].powered_after);
    assert_int_equal(sched_project(&c->view, &c->plan, proj, c->nn + 1), -EINVAL);
}

static void every_allocation_failure_returns_enomem(void **state)
{
    struct cluster *c = *state;
    busy_cluster(c, 3);
    c->cfg.energy_mode = SCHED_MODE_AUTOMATIC;
    c->hist.underused = true;
    c->view = (struct sched_view){c->nodes, c->nn, c->eps, c->ne, c->migs, c->nm, c->hist};

    long k;
    for (k = 0; k < 1000; k++) {
        struct sched_plan plan;
        memset(&plan, 0xa5, sizeof(plan));
        alloc_count = 0;
        alloc_fail_at = k;
        int rc = sched_evaluate(&c->view, &c->cfg, T0, &plan);
        bool failed = alloc_count > k;
        alloc_fail_at = -1;
        if (!failed) {
            assert_int_equal(rc, 0);
            sched_plan_free(&plan);
            break;
        }
        assert_int_equal(rc, -ENOMEM);
        /* Untouched on failure. */
        unsigned char *bytes = (unsigned char *)&plan;
        for (size_t i = 0; i < sizeof(plan); i++)
            assert_int_equal(bytes[i], 0xa5);
    }
    assert_true(k > 3 && k < 1000);

    for (k = 0; k < 100; k++) {
        struct sched_plan plan = {0};
        alloc_count = 0;
        alloc_fail_at = k;
        int rc = sched_drain_dry_run(&c->view, &c->cfg, 3, T0, &plan);
        bool failed = alloc_count > k;
        alloc_fail_at = -1;
        sched_plan_free(&plan);
        if (!failed) {
            assert_int_equal(rc, 0);
            break;
        }
        assert_int_equal(rc, -ENOMEM);
    }
}

int main(void)
{
#define T(name) cmocka_unit_test_setup_teardown(name, setup, teardown)
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(overload_table),
        T(overload_ends_within_marks),
        T(overload_window_is_measured_across_evaluations),
        T(no_move_is_undone_by_the_next_evaluation),
        T(no_ping_pong_to_the_node_an_endpoint_just_left),
        T(busy_destinations_wait_rather_than_wake_a_node),
        T(aborted_migrations_back_off_instead_of_looping),
        T(migrations_in_flight_count_before_shedding_more),
        T(drain_moves_every_endpoint_and_is_done_only_when_committed),
        T(drain_not_done_while_a_migration_is_in_flight),
        cmocka_unit_test(concurrency_caps_hold_across_two_drains),
        T(impossible_drain_is_explained),
        T(drain_deadline_expires_with_endpoints_left),
        T(drain_with_no_room_wakes_a_standby_node),
        T(energy_empties_the_least_loaded_node_then_powers_it_off),
        T(energy_keeps_min_powered_on_and_reserve),
        T(energy_skips_nodes_with_pinned_endpoints),
        T(energy_abandons_when_load_rises_and_powers_on),
        T(energy_recommend_mode_keeps_no_state),
        cmocka_unit_test(cost_model_follows_precopy_arithmetic),
        cmocka_unit_test(config_validation_names_the_bad_field),
        T(bad_views_are_rejected_with_a_reason),
        T(decisions_are_deterministic_whatever_the_input_order),
        T(energy_plans_are_deterministic_too),
        T(empty_and_unplaced_views_plan_nothing),
        T(underuse_needs_capacity_and_measurements),
        T(explanations_do_not_mix_resources),
        T(projection_applies_in_flight_and_planned_moves),
        T(every_allocation_failure_returns_enomem),
    };
#undef T
    return cmocka_run_group_tests(tests, NULL, NULL);
}
