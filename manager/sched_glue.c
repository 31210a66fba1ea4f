/*
 * The scheduler in the manager (DESIGN.md §6): the leader feeds the pure
 * library of scheduler/ a view of the cluster and carries its decisions out.
 *
 * The library keeps no state and reads no clock, so this file owns three
 * kinds of memory between evaluations, all of it leader-only and rebuilt
 * from nothing by a new leader (the library is designed for that: zeroed
 * history merely restarts the windows):
 *
 *   - the history each evaluation returns (per node: above the high mark
 *     since when, being emptied for power-off since when; cluster-wide:
 *     underused or under pressure since when), passed back the next time;
 *   - the power state the FSM cannot express: a standby node whose power-on
 *     hook ran is "waking" until its agent heartbeats again;
 *   - the power operations under way (a hook runs for up to
 *     --power-hook-timeout): a node being powered off receives nothing.
 *
 * What the FSM records is the truth the next view starts from: a migration
 * record, an endpoint on its new node, a node drained or in standby. A
 * decision that was not carried out (the proposal lost a race, leadership
 * moved) is simply decided again by a later evaluation.
 *
 * The parts of this file, in order: options, the view, plans as JSON,
 * decisions (logging and acting), power hooks, the evaluation loop, and the
 * entry points of sched_glue.h.
 */
#include <assert.h>
#include <errno.h>
#include <inttypes.h>
#include <math.h>
#include <signal.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "common/log.h"
#include "common/util.h"
#include "dvs.h"
#include "manager/daemon.h"
#include "scheduler/sched.h"

#define COMP "sched"

extern char **environ;

/* Evaluations triggered by FSM changes are at least this far apart (ms). */
#define SCHED_MIN_GAP_MS 1000
/* Bytes of a hook's output kept (its tail) for the log. */
#define HOOK_TAIL_MAX 2048
/* ...and how much of it fits in a node's state_reason (the FSM allows 256). */
#define REASON_TAIL_MAX 96
#define REASON_MAX 250
/* After a hook exits, how long its output may still trickle in (ms). */
#define HOOK_EOF_GRACE_MS 500

/* ======================================================================== */
/* Options: one --sched-* flag per entry of sched_options[] (STYLE.md 15)     */
/* ======================================================================== */

/* "overload_window_ms" -> "sched-overload-window". */
static char *option_name(const struct sched_option *p)
{
    char *name = xasprintf("sched-%s", p->name);
    size_t n = strlen(name);
    if (p->type == SCHED_OPT_DURATION && n > 3 && strcmp(name + n - 3, "_ms") == 0)
        name[n - 3] = '\0';
    for (char *c = name; *c; c++)
        if (*c == '_')
            *c = '-';
    return name;
}

/* A default in the flag's own syntax: "2m" rather than "120000ms". */
static char *duration_text(double ms)
{
    long long v = (long long)ms;
    if (v > 0 && v % 3600000 == 0)
        return xasprintf("%lldh", v / 3600000);
    if (v > 0 && v % 60000 == 0)
        return xasprintf("%lldm", v / 60000);
    if (v > 0 && v % 1000 == 0)
        return xasprintf("%llds", v / 1000);
    return xasprintf("%lldms", v);
}

const struct opt_def *mgr_sched_options(const struct opt_def *base)
{
    /* Built once and kept for the life of the process (help, parsing, free). */
    static struct opt_def *table;
    if (table)
        return table;

    size_t nb = 0;
    while (base[nb].name)
        nb++;
    assert(sched_n_options <= MGR_SCHED_MAX_PARAMS);
    table = xcalloc(nb + sched_n_options + 1, sizeof(*table));
    memcpy(table, base, nb * sizeof(*table));

    for (size_t i = 0; i < sched_n_options; i++) {
        const struct sched_option *p = &sched_options[i];
        struct opt_def *d = &table[nb + i];
        size_t slot = offsetof(struct mgr_settings, sched) + i * sizeof(struct mgr_sched_slot);
        d->name = option_name(p);
        d->min = p->min;
        d->max = p->max;
        switch (p->type) {
        case SCHED_OPT_FRACTION:
        case SCHED_OPT_CORES:
        case SCHED_OPT_RATE:
            d->type = OPT_DOUBLE;
            d->def = xasprintf("%.10g", p->def);
            d->offset = slot + offsetof(struct mgr_sched_slot, num);
            d->metavar = p->type == SCHED_OPT_FRACTION ? "FRACTION"
                         : p->type == SCHED_OPT_CORES  ? "CORES"
                                                         : "BYTES/S";
            break;
        case SCHED_OPT_DURATION:
            d->type = OPT_DURATION;
            d->def = duration_text(p->def);
            d->offset = slot + offsetof(struct mgr_sched_slot, i64);
            d->metavar = "DURATION";
            break;
        case SCHED_OPT_COUNT:
            d->type = OPT_INT;
            d->def = xasprintf("%.0f", p->def);
            d->offset = slot + offsetof(struct mgr_sched_slot, i64);
            d->metavar = "N";
            break;
        case SCHED_OPT_MODE:
            d->type = OPT_STRING;
            d->def = sched_mode_name((enum sched_mode)(int)p->def);
            d->min = d->max = 0;
            d->offset = slot + offsetof(struct mgr_sched_slot, str);
            d->metavar = "MODE";
            break;
        }
        d->help = p->help;
    }
    return table;
}

/* Hook templates know %n (node id), %a (its address), %h (its host) and %%. */
static bool template_ok(const char *t, char *bad)
{
    for (const char *c = t; *c; c++) {
        if (*c != '%')
            continue;
        c++;
        if (*c != 'n' && *c != 'a' && *c != 'h' && *c != '%') {
            *bad = *c;
            return false;
        }
    }
    return true;
}

static bool set_text(const char *s)
{
    return s && *s;
}

/*
 * The effective configuration from the options: the library's table checks
 * each value and the whole; the automation level caps every automatic policy
 * (maintenance is the operator's own request and always runs).
 */
static int settings_to_config(const struct mgr_settings *cfg, struct sched_config *ret,
                              enum sched_mode *ret_automation, char *err, size_t errlen)
{
    struct sched_config c;
    enum sched_mode automation;
    char msg[256];

    sched_config_default(&c);
    for (size_t i = 0; i < sched_n_options; i++) {
        const struct sched_option *p = &sched_options[i];
        const struct mgr_sched_slot *slot = &cfg->sched[i];
        char *opt = option_name(p);
        double v = 0;
        int rc = 0;
        switch (p->type) {
        case SCHED_OPT_FRACTION:
        case SCHED_OPT_CORES:
        case SCHED_OPT_RATE:
            v = slot->num;
            break;
        case SCHED_OPT_DURATION:
        case SCHED_OPT_COUNT:
            v = (double)slot->i64;
            break;
        case SCHED_OPT_MODE: {
            enum sched_mode mode = SCHED_MODE_OFF;
            if (!slot->str || sched_mode_parse(slot->str, &mode) != 0) {
                snprintf(err, errlen, "--%s \"%s\": expected off, recommend or automatic", opt,
                         slot->str ? slot->str : "");
                rc = -EINVAL;
            }
            v = (double)mode;
            break;
        }
        }
        if (rc == 0 && sched_config_set(&c, p->name, v, msg, sizeof(msg)) != 0) {
            snprintf(err, errlen, "--%s: %s", opt, msg);
            rc = -EINVAL;
        }
        free(opt);
        if (rc)
            return rc;
    }
    if (sched_config_validate(&c, msg, sizeof(msg)) != 0) {
        snprintf(err, errlen, "scheduler settings (--sched-*): %s", msg);
        return -EINVAL;
    }
    if (!cfg->automation || sched_mode_parse(cfg->automation, &automation) != 0) {
        snprintf(err, errlen, "--automation \"%s\": expected off, recommend or automatic",
                 cfg->automation ? cfg->automation : "");
        return -EINVAL;
    }
    if (c.overload_mode > automation)
        c.overload_mode = automation;
    if (c.energy_mode > automation)
        c.energy_mode = automation;

    char bad = 0;
    if (set_text(cfg->power_off_cmd) && !template_ok(cfg->power_off_cmd, &bad)) {
        snprintf(err, errlen, "--power-off-cmd: unknown substitution %%%c; accepted: %%n (node "
                              "id), %%a (address), %%h (host), %%%% (a %%)",
                 bad ? bad : '?');
        return -EINVAL;
    }
    if (set_text(cfg->power_on_cmd) && !template_ok(cfg->power_on_cmd, &bad)) {
        snprintf(err, errlen, "--power-on-cmd: unknown substitution %%%c; accepted: %%n (node "
                              "id), %%a (address), %%h (host), %%%% (a %%)",
                 bad ? bad : '?');
        return -EINVAL;
    }
    /* Powering machines off with no way to power them on again is refused. */
    if (c.energy_mode == SCHED_MODE_AUTOMATIC &&
        (!set_text(cfg->power_off_cmd) || !set_text(cfg->power_on_cmd))) {
        snprintf(err, errlen, "--sched-energy-mode automatic needs both --power-off-cmd and "
                              "--power-on-cmd (the energy policy powers nodes off and on "
                              "through them); use recommend to only see its plan");
        return -EINVAL;
    }
    *ret = c;
    *ret_automation = automation;
    return 0;
}

int mgr_sched_check_settings(const struct mgr_settings *cfg, char *err, size_t errlen)
{
    struct sched_config c;
    enum sched_mode automation;
    return settings_to_config(cfg, &c, &automation, err, errlen);
}

/* ======================================================================== */
/* State                                                                     */
/* ======================================================================== */

/* What the leader remembers about one node between evaluations. */
struct gnode {
    char id[64];
    struct sched_node_hist hist;
    enum sched_power power; /* WAKING after a successful power-on hook, until up */
    int64_t power_since;    /* wall ms */
    unsigned hook_failures; /* consecutive */
    int64_t retry_at;       /* wall ms: no power operation before this */
};

struct power_op;

struct mgr_sched {
    struct mgr *m;
    struct sched_config cfg; /* effective: the automation level applied */
    enum sched_mode automation;
    const char *power_cmd[2]; /* [0] off, [1] on; NULL when not configured */
    bool active;              /* leader duties running */
    uv_timer_t timer;
    int64_t last_eval_mono;
    unsigned ops_pending; /* our proposals not yet applied */
    bool rerun;           /* an evaluation was skipped for them */

    struct gnode *nodes; /* sorted by id */
    size_t n_nodes;
    struct sched_cluster_hist cluster_hist;
    struct power_op *ops; /* power operations under way */

    /* The previous evaluation's repeating lines (hashes, sorted): what is
     * not among them is new and logged at info (log_decision). */
    uint64_t *seen;
    size_t n_seen;
    char last_error[256];

    /* /metrics */
    uint64_t evaluations, eval_errors;
    uint64_t decided[SCHED_ACT_DRAIN_EXPIRED + 1][SCHED_POL_ENERGY + 1][2];
    uint64_t hooks[2][3]; /* [off, on][ok, failed, timeout] */
    double last_eval_s;
};

static struct gnode *gnode_find(struct mgr_sched *s, const char *id)
{
    size_t lo = 0, hi = s->n_nodes;
    while (lo < hi) {
        size_t mid = (lo + hi) / 2;
        int c = strcmp(s->nodes[mid].id, id);
        if (c == 0)
            return &s->nodes[mid];
        if (c < 0)
            lo = mid + 1;
        else
            hi = mid;
    }
    return NULL;
}

/* Is a power operation under way for node ID? (A handful at most.) */
static bool power_busy(const struct mgr_sched *s, const char *id);

static void forget(struct mgr_sched *s)
{
    free(s->nodes);
    s->nodes = NULL;
    s->n_nodes = 0;
    memset(&s->cluster_hist, 0, sizeof(s->cluster_hist));
    free(s->seen);
    s->seen = NULL;
    s->n_seen = 0;
    s->last_error[0] = '\0';
}

/* ======================================================================== */
/* The view: the FSM's nodes, endpoints and migrations, as the library wants */
/* ======================================================================== */

struct view {
    json_t *jnodes, *jeps, *jmigs; /* the FSM's answers; the view borrows their strings */
    struct sched_view v;
    struct sched_node *nodes;      /* sorted by id */
    const char **addr;             /* each node's address */
    const char **state_name;       /* each node's FSM state */
    int64_t *sampled_at;           /* when each node's load was measured (wall ms, 0: never) */
    uint32_t *moved_to;            /* the node each endpoint's last committed move went to */
    struct sched_endpoint *eps;    /* sorted by name */
    struct sched_migration *migs;
};

static void view_free(struct view *w)
{
    json_decref(w->jnodes);
    json_decref(w->jeps);
    json_decref(w->jmigs);
    free(w->nodes);
    free(w->addr);
    free(w->state_name);
    free(w->sampled_at);
    free(w->moved_to);
    free(w->eps);
    free(w->migs);
    memset(w, 0, sizeof(*w));
}

static double num(const json_t *o, const char *key)
{
    const json_t *v = json_object_get(o, key);
    double d = json_is_number(v) ? json_number_value(v) : 0;
    return isfinite(d) && d > 0 ? d : 0;
}

static int64_t int_of(const json_t *o, const char *key)
{
    const json_t *v = json_object_get(o, key);
    return json_is_integer(v) && json_integer_value(v) > 0 ? (int64_t)json_integer_value(v) : 0;
}

static const char *str_of(const json_t *o, const char *key)
{
    return json_string_value(json_object_get(o, key));
}

static bool node_state_of(const char *s, enum sched_node_state *ret)
{
    static const struct {
        const char *name;
        enum sched_node_state st;
    } map[] = {{"up", SCHED_NODE_UP},
               {"draining", SCHED_NODE_DRAINING},
               {"drained", SCHED_NODE_DRAINED},
               {"standby", SCHED_NODE_STANDBY},
               {"down", SCHED_NODE_DOWN}};
    for (size_t i = 0; s && i < sizeof(map) / sizeof(map[0]); i++)
        if (strcmp(s, map[i].name) == 0) {
            *ret = map[i].st;
            return true;
        }
    return false;
}

static bool ep_state_of(const char *s, enum sched_ep_state *ret)
{
    static const struct {
        const char *name;
        enum sched_ep_state st;
    } map[] = {{"running", SCHED_EP_RUNNING},
               {"pending", SCHED_EP_PENDING},
               {"migrating", SCHED_EP_MIGRATING},
               {"failed", SCHED_EP_FAILED},
               {"stopped", SCHED_EP_STOPPED}};
    for (size_t i = 0; s && i < sizeof(map) / sizeof(map[0]); i++)
        if (strcmp(s, map[i].name) == 0) {
            *ret = map[i].st;
            return true;
        }
    return false;
}

static int cmp_by_id(const void *a, const void *b)
{
    return strcmp(str_of(*(json_t *const *)a, "id"), str_of(*(json_t *const *)b, "id"));
}

static int cmp_by_name(const void *a, const void *b)
{
    return strcmp(str_of(*(json_t *const *)a, "name"), str_of(*(json_t *const *)b, "name"));
}

static uint32_t node_index(const struct view *w, const char *id)
{
    size_t lo = 0, hi = w->v.n_nodes;
    while (id && lo < hi) {
        size_t mid = (lo + hi) / 2;
        int c = strcmp(w->nodes[mid].id, id);
        if (c == 0)
            return (uint32_t)mid;
        if (c < 0)
            lo = mid + 1;
        else
            hi = mid;
    }
    return SCHED_NONE;
}

static uint32_t ep_index(const struct view *w, const char *name)
{
    size_t lo = 0, hi = w->v.n_endpoints;
    while (name && lo < hi) {
        size_t mid = (lo + hi) / 2;
        int c = strcmp(w->eps[mid].name, name);
        if (c == 0)
            return (uint32_t)mid;
        if (c < 0)
            lo = mid + 1;
        else
            hi = mid;
    }
    return SCHED_NONE;
}

static bool is_active_phase(const char *phase)
{
    return phase && (!strcmp(phase, "planned") || !strcmp(phase, "precopy") ||
                     !strcmp(phase, "frozen"));
}

/* The nodes of the view, sorted by id, with what the leader remembers of them. */
static void view_nodes(struct mgr_sched *s, struct view *w)
{
    size_t n = json_array_size(w->jnodes), k = 0;
    json_t **jn = xcalloc(n ? n : 1, sizeof(*jn));
    for (size_t i = 0; i < n; i++) {
        json_t *o = json_array_get(w->jnodes, i);
        enum sched_node_state st;
        /* A node that declares no cpu cannot hold anything: the library
         * refuses such a view, so it is left out (its endpoints with it). */
        if (!str_of(o, "id") || !node_state_of(str_of(o, "state"), &st) || !(num(o, "cpu") > 0))
            continue;
        jn[k++] = o;
    }
    qsort(jn, k, sizeof(*jn), cmp_by_id);

    w->nodes = xcalloc(k ? k : 1, sizeof(*w->nodes));
    w->addr = xcalloc(k ? k : 1, sizeof(*w->addr));
    w->state_name = xcalloc(k ? k : 1, sizeof(*w->state_name));
    w->sampled_at = xcalloc(k ? k : 1, sizeof(*w->sampled_at));
    for (size_t i = 0; i < k; i++) {
        const json_t *o = jn[i];
        struct sched_node *sn = &w->nodes[i];
        const struct gnode *g = s ? gnode_find(s, str_of(o, "id")) : NULL;
        const json_t *load = json_object_get(o, "load");

        sn->id = str_of(o, "id");
        node_state_of(str_of(o, "state"), &sn->state);
        sn->eligible = json_is_true(json_object_get(o, "eligible"));
        sn->capacity.cpu = num(o, "cpu");
        sn->capacity.mem = num(o, "mem");
        /* The measured total for now; view_base_loads() takes the endpoints' share out. */
        sn->base_load.cpu = num(load, "cpu");
        sn->base_load.mem = num(load, "mem");
        w->sampled_at[i] = int_of(load, "time");
        sn->load_unknown = !json_is_object(load);
        sn->drain_deadline = int_of(o, "drain_deadline");
        if (sn->state == SCHED_NODE_STANDBY) {
            bool waking = g && g->power == SCHED_POWER_WAKING;
            sn->power = waking ? SCHED_POWER_WAKING : SCHED_POWER_OFF;
            sn->power_since = waking ? g->power_since : int_of(o, "state_since");
        } else {
            sn->power = SCHED_POWER_ON;
        }
        if (g)
            sn->hist = g->hist;
        /* A node on its way to power-off takes nothing in meanwhile. */
        if (s && power_busy(s, sn->id))
            sn->eligible = false;
        w->addr[i] = str_of(o, "address");
        w->state_name[i] = str_of(o, "state");
    }
    w->v.nodes = w->nodes;
    w->v.n_nodes = k;
    free(jn);
}

/* The endpoints, sorted by name; base loads lose what their endpoints use. */
static void view_endpoints(struct view *w)
{
    size_t n = json_array_size(w->jeps), k = 0;
    json_t **je = xcalloc(n ? n : 1, sizeof(*je));
    for (size_t i = 0; i < n; i++) {
        json_t *o = json_array_get(w->jeps, i);
        enum sched_ep_state st;
        if (!str_of(o, "name") || !ep_state_of(str_of(o, "state"), &st))
            continue;
        je[k++] = o;
    }
    qsort(je, k, sizeof(*je), cmp_by_name);

    w->eps = xcalloc(k ? k : 1, sizeof(*w->eps));
    for (size_t i = 0; i < k; i++) {
        const json_t *o = je[i];
        struct sched_endpoint *e = &w->eps[i];
        const json_t *load = json_object_get(o, "load");

        e->name = str_of(o, "name");
        e->id = (uint64_t)int_of(o, "id");
        e->node = node_index(w, str_of(o, "node"));
        ep_state_of(str_of(o, "state"), &e->state);
        /*
         * The FSM records no per-endpoint measurements yet: an endpoint
         * counts with what it declared at creation, unless a "load" object
         * appears (the agents' future reports).
         */
        if (json_is_object(load)) {
            e->load.cpu = num(load, "cpu");
            e->load.mem = num(load, "mem");
            e->dirty_rate = num(load, "dirty_rate");
        } else {
            e->load.cpu = num(o, "cpu");
            e->load.mem = num(o, "mem");
        }
        e->arena_size = (uint64_t)int_of(o, "arena_size");
        e->last_source = SCHED_NONE;
        /* DESIGN.md §6: no automatic moves (drains still move it). */
        e->opt_out = json_is_false(json_object_get(o, "auto_migrate"));
    }
    w->v.endpoints = w->eps;
    w->v.n_endpoints = k;
    free(je);
}

/*
 * Migrations in flight, and from the history (newest first) each endpoint's
 * last committed move and the aborts since it: the inputs of the stability
 * rules (cooldown, no return, backoff).
 */
static void view_migrations(struct view *w)
{
    size_t n = json_array_size(w->jmigs), k = 0;
    size_t ne = w->v.n_endpoints;
    bool *committed = xcalloc(ne ? ne : 1, sizeof(*committed));
    bool *active = xcalloc(ne ? ne : 1, sizeof(*active));
    w->migs = xcalloc(n ? n : 1, sizeof(*w->migs));
    w->moved_to = xcalloc(ne ? ne : 1, sizeof(*w->moved_to));
    for (size_t i = 0; i < ne; i++)
        w->moved_to[i] = SCHED_NONE;

    for (size_t i = 0; i < n; i++) {
        const json_t *g = json_array_get(w->jmigs, i);
        const char *phase = str_of(g, "phase");
        uint32_t e = ep_index(w, str_of(g, "endpoint"));
        if (e == SCHED_NONE || !phase)
            continue;
        struct sched_endpoint *ep = &w->eps[e];
        if (is_active_phase(phase)) {
            uint32_t src = node_index(w, str_of(g, "source"));
            uint32_t dst = node_index(w, str_of(g, "destination"));
            /* The FSM keeps one active migration per endpoint, from where it is. */
            if (src == SCHED_NONE || dst == SCHED_NONE || ep->node != src || active[e])
                continue;
            active[e] = true;
            w->migs[k++] = (struct sched_migration){e, src, dst};
        } else if (!committed[e] && !strcmp(phase, "committed")) {
            committed[e] = true;
            ep->last_move_at = int_of(g, "finished_at");
            ep->last_source = node_index(w, str_of(g, "source"));
            w->moved_to[e] = node_index(w, str_of(g, "destination"));
        } else if (!committed[e] && !strcmp(phase, "aborted")) {
            if (ep->aborts == 0)
                ep->last_abort_at = int_of(g, "finished_at");
            ep->aborts++;
        }
    }
    w->v.migrations = w->migs;
    w->v.n_migrations = k;
    free(committed);
    free(active);
}

static void take_out(struct sched_load *base, const struct sched_load *load)
{
    base->cpu = base->cpu > load->cpu ? base->cpu - load->cpu : 0;
    base->mem = base->mem > load->mem ? base->mem - load->mem : 0;
}

/*
 * sched.h: a node's base load is its measured total minus the load of the
 * endpoints it ran *when that total was measured*, so that a move shows on
 * both nodes at once. Only instances that run count (a pending endpoint is
 * not there yet). An endpoint whose move committed after its old node's last
 * sample is still in that sample; one that arrived after its new node's
 * sample is not in that one yet. Without this, the source of a move would
 * look as loaded as before until its next load summary, and the overload
 * policy would shed it twice.
 */
static void view_base_loads(struct view *w)
{
    for (size_t i = 0; i < w->v.n_endpoints; i++) {
        const struct sched_endpoint *e = &w->eps[i];
        if (e->state != SCHED_EP_RUNNING && e->state != SCHED_EP_MIGRATING)
            continue;
        bool moved = e->last_move_at > 0;
        if (e->node != SCHED_NONE &&
            !(moved && w->moved_to[i] == e->node && e->last_move_at > w->sampled_at[e->node]))
            take_out(&w->nodes[e->node].base_load, &e->load);
        if (moved && e->last_source != SCHED_NONE && e->last_source != e->node &&
            e->last_move_at > w->sampled_at[e->last_source])
            take_out(&w->nodes[e->last_source].base_load, &e->load);
    }
}

/* The view of the cluster now, with the leader's memory (S may be NULL: none). */
static int view_build(struct mgr_sched *s, struct mgr_fsm *fsm, struct view *ret)
{
    struct view w;
    memset(&w, 0, sizeof(w));
    w.jnodes = mgr_fsm_nodes(fsm);
    w.jeps = mgr_fsm_endpoints(fsm);
    w.jmigs = mgr_fsm_migrations(fsm);
    if (!w.jnodes || !w.jeps || !w.jmigs) {
        view_free(&w);
        return -ENOMEM;
    }
    view_nodes(s, &w);
    view_endpoints(&w);
    view_migrations(&w);
    view_base_loads(&w);
    if (s)
        w.v.hist = s->cluster_hist;
    *ret = w;
    return 0;
}

/* ======================================================================== */
/* Plans as JSON (docs/api.md, GET /v1/plan)                                 */
/* ======================================================================== */

static json_t *jreal(double v)
{
    return isfinite(v) ? json_real(v) : json_null();
}

static json_t *jname(const char *s)
{
    return s ? json_string(s) : json_null();
}

static const char *node_id_of(const struct view *w, uint32_t i)
{
    return i != SCHED_NONE && i < w->v.n_nodes ? w->nodes[i].id : NULL;
}

static const char *ep_name_of(const struct view *w, uint32_t i)
{
    return i != SCHED_NONE && i < w->v.n_endpoints ? w->eps[i].name : NULL;
}

static bool is_move(enum sched_action a)
{
    return a == SCHED_ACT_MIGRATE || a == SCHED_ACT_REPLACE;
}

static json_t *decision_json(const struct view *w, const struct sched_decision *d)
{
    const struct sched_figures *f = &d->fig;
    json_t *fig = json_pack("{s:s,s:o,s:o,s:o,s:o,s:o,s:I,s:I,s:o,s:I}", "resource",
                            sched_resource_name(f->resource), "src_before", jreal(f->src_before),
                            "src_after", jreal(f->src_after), "dst_before", jreal(f->dst_before),
                            "dst_after", jreal(f->dst_after), "mark", jreal(f->mark), "held_ms",
                            (json_int_t)f->held_ms, "window_ms", (json_int_t)f->window_ms,
                            "cluster_util", jreal(f->cluster_util), "count",
                            (json_int_t)f->count);
    if (fig && d->action == SCHED_ACT_MIGRATE)
        json_object_set_new(
            fig, "cost",
            json_pack("{s:o,s:o,s:o,s:I,s:b,s:b}", "duration_s", jreal(f->cost.duration_s),
                      "downtime_s", jreal(f->cost.downtime_s), "bytes", jreal(f->cost.bytes),
                      "rounds", (json_int_t)f->cost.rounds, "stop_and_copy",
                      f->cost.stop_and_copy, "over_budget", f->cost.over_budget));
    const char *node = node_id_of(w, d->node);
    return json_pack("{s:s,s:s,s:s,s:b,s:o,s:o,s:o,s:o,s:s,s:o*}", "action",
                     sched_action_name(d->action), "policy", sched_policy_name(d->policy),
                     "reason", sched_reason_name(d->reason), "automatic", d->automatic,
                     "endpoint", jname(ep_name_of(w, d->endpoint)), "node", jname(node),
                     "source", jname(is_move(d->action) ? node : NULL), "destination",
                     jname(node_id_of(w, d->dest)), "explanation", d->text, "figures", fig);
}

static json_t *projection_json(const struct view *w, uint32_t i, const struct sched_projection *p)
{
    return json_pack("{s:s,s:s,s:o,s:o,s:o,s:o,s:o,s:o,s:I,s:I,s:b}", "node", w->nodes[i].id,
                     "state", w->state_name[i], "cpu_before", jreal(p->before.cpu), "cpu_after",
                     jreal(p->after.cpu), "mem_before", jreal(p->before.mem), "mem_after",
                     jreal(p->after.mem), "util_before", jreal(p->util_before), "util_after",
                     jreal(p->util_after), "endpoints_before", (json_int_t)p->endpoints_before,
                     "endpoints_after", (json_int_t)p->endpoints_after, "powered_after",
                     p->powered_after);
}

static bool concerns(const struct sched_decision *d, uint32_t node)
{
    return d->node == node || d->dest == node;
}

/* ======================================================================== */
/* Decisions: logging and metrics                                            */
/* ======================================================================== */

static void appendf(char *buf, size_t len, size_t *pos, const char *fmt, ...)
    __attribute__((format(printf, 4, 5)));
static void appendf(char *buf, size_t len, size_t *pos, const char *fmt, ...)
{
    if (*pos >= len)
        return;
    va_list ap;
    va_start(ap, fmt);
    int n = vsnprintf(buf + *pos, len - *pos, fmt, ap);
    va_end(ap);
    if (n > 0)
        *pos = *pos + (size_t)n < len ? *pos + (size_t)n : len;
}

/* "decision=migrate policy=overload reason=overload endpoint=kv from=n1 to=n2 auto=yes" */
static void decision_facts(const struct view *w, const struct sched_decision *d, char *buf,
                           size_t len)
{
    size_t pos = 0;
    buf[0] = '\0';
    appendf(buf, len, &pos, "decision=%s policy=%s reason=%s", sched_action_name(d->action),
            sched_policy_name(d->policy), sched_reason_name(d->reason));
    if (ep_name_of(w, d->endpoint))
        appendf(buf, len, &pos, " endpoint=%s", ep_name_of(w, d->endpoint));
    if (node_id_of(w, d->node))
        appendf(buf, len, &pos, " %s=%s", is_move(d->action) ? "from" : "node",
                node_id_of(w, d->node));
    if (node_id_of(w, d->dest))
        appendf(buf, len, &pos, " to=%s", node_id_of(w, d->dest));
    appendf(buf, len, &pos, " auto=%s", d->automatic ? "yes" : "no");
}

static uint64_t fnv1a(const char *s)
{
    uint64_t h = 1469598103934665603ull;
    for (; *s; s++) {
        h ^= (unsigned char)*s;
        h *= 1099511628211ull;
    }
    return h;
}

static int cmp_u64(const void *a, const void *b)
{
    uint64_t x = *(const uint64_t *)a, y = *(const uint64_t *)b;
    return x < y ? -1 : x > y;
}

/*
 * Log one decision of an evaluation (STYLE.md 14) and count it for /metrics.
 * What the manager carries out (ACTING) is logged at info each time.
 * Explanations and recommendations repeat at every evaluation while their
 * situation lasts, so they are logged at info when they first appear and at
 * debug afterwards; so is an automatic decision that waits (WAITING says
 * why: its power operation is under way or backing off). SEEN collects this
 * evaluation's repeating lines, to compare with the next one.
 */
static void log_decision(struct mgr_sched *s, const struct view *w,
                         const struct sched_decision *d, bool acting, const char *waiting,
                         uint64_t *seen, size_t *n_seen)
{
    char facts[512];
    bool fresh = false;
    decision_facts(w, d, facts, sizeof(facts));
    if (!acting) {
        uint64_t h = fnv1a(facts);
        seen[(*n_seen)++] = h;
        fresh = s->n_seen == 0 ||
                !bsearch(&h, s->seen, s->n_seen, sizeof(*s->seen), cmp_u64);
    }
    if (acting || (fresh && !waiting && d->action != SCHED_ACT_NOTHING))
        s->decided[d->action][d->policy][d->automatic]++;
    log_msg(acting || fresh ? LOG_INFO : LOG_DEBUG, COMP, "%s: %s%s%s%s", facts, d->text,
            waiting ? " [waiting: " : "", waiting ? waiting : "", waiting ? "]" : "");
}

/* ======================================================================== */
/* Acting on decisions: Raft commands                                        */
/* ======================================================================== */

/* A proposal made for a decision, and what to say when its outcome is known. */
struct op {
    enum sched_action action;
    char node[64], endpoint[64], dest[64];
};

static void kick(struct mgr_sched *s);

/* One of our proposals is done: an evaluation that waited for it may run. */
static void op_settled(struct mgr *m)
{
    struct mgr_sched *s = m->sched;
    if (!s)
        return;
    assert(s->ops_pending > 0);
    s->ops_pending--;
    if (s->ops_pending == 0 && s->rerun) {
        s->rerun = false;
        kick(s);
    }
}

static void op_done(struct mgr *m, int status, struct mgr_fsm_result *res, void *data)
{
    struct op *op = data;
    const char *err = status ? dvs_strerror(status) : res->code ? res->msg : NULL;
    switch (op->action) {
    case SCHED_ACT_MIGRATE:
        if (err)
            log_warn(COMP, "endpoint=%s from=%s to=%s: migration not created: %s", op->endpoint,
                     op->node, op->dest, err);
        else
            log_info(COMP, "migration=%lld endpoint=%s from=%s to=%s created",
                     (long long)json_integer_value(json_object_get(res->object, "id")),
                     op->endpoint, op->node, op->dest);
        break;
    case SCHED_ACT_REPLACE:
        if (err)
            log_warn(COMP, "endpoint=%s to=%s: not re-placed: %s", op->endpoint, op->dest, err);
        else
            log_info(COMP, "endpoint=%s re-placed from=%s to=%s", op->endpoint, op->node,
                     op->dest);
        break;
    default:
        /* A "from" mismatch means the operator changed the node meanwhile. */
        if (err)
            log_info(COMP, "node=%s: %s not recorded: %s", op->node,
                     sched_action_name(op->action), err);
        else
            log_info(COMP, "node=%s: %s recorded (state %s)", op->node,
                     sched_action_name(op->action),
                     str_of(res->object, "state") ? str_of(res->object, "state") : "?");
        break;
    }
    free(op);
    op_settled(m);
}

static void propose(struct mgr_sched *s, unsigned type, json_t *body, struct op *op)
{
    if (!body) {
        log_warn(COMP, "node=%s endpoint=%s: out of memory building a command", op->node,
                 op->endpoint);
        free(op);
        return;
    }
    int rv = mgr_propose(s->m, type, body, 0, op_done, op);
    if (rv) {
        log_warn(COMP, "node=%s endpoint=%s: %s not proposed: %s", op->node, op->endpoint,
                 sched_action_name(op->action), dvs_strerror(rv));
        free(op);
        return;
    }
    s->ops_pending++;
}

static struct op *op_new(const struct view *w, const struct sched_decision *d)
{
    struct op *op = xcalloc(1, sizeof(*op));
    op->action = d->action;
    snprintf(op->node, sizeof(op->node), "%s",
             node_id_of(w, d->node) ? node_id_of(w, d->node) : "-");
    snprintf(op->endpoint, sizeof(op->endpoint), "%s",
             ep_name_of(w, d->endpoint) ? ep_name_of(w, d->endpoint) : "-");
    snprintf(op->dest, sizeof(op->dest), "%s",
             node_id_of(w, d->dest) ? node_id_of(w, d->dest) : "-");
    return op;
}

/* A node's state_reason from the scheduler's text (the FSM keeps 256 bytes). */
static void reason_text(char *buf, size_t len, const char *prefix, const char *text)
{
    size_t pos = 0;
    buf[0] = '\0';
    appendf(buf, len < REASON_MAX ? len : REASON_MAX, &pos, "%s%s", prefix, text);
}

static void power_start(struct mgr_sched *s, const struct view *w, const struct sched_decision *d);

/*
 * Can the manager carry out automatic decision D now? Every Raft command can
 * be proposed; a power decision waits while a power operation on its node is
 * under way, or after a failed hook until its backoff has passed (failed
 * hooks back off as aborted migrations do: --sched-backoff-base doubling up
 * to --sched-backoff-max). WHY says what it waits for.
 */
static bool can_act(struct mgr_sched *s, const struct view *w, const struct sched_decision *d,
                    char *why, size_t len)
{
    if (d->action != SCHED_ACT_POWER_OFF && d->action != SCHED_ACT_POWER_ON)
        return true;
    bool on = d->action == SCHED_ACT_POWER_ON;
    const char *node = node_id_of(w, d->node);
    struct gnode *g = node ? gnode_find(s, node) : NULL;
    int64_t now = now_wall_ms();
    if (!g) {
        snprintf(why, len, "the node is not known yet");
        return false;
    }
    if (power_busy(s, node)) {
        snprintf(why, len, "a power operation on %s is under way", node);
        return false;
    }
    if (g->retry_at > now) {
        char in[32];
        format_duration(g->retry_at - now, in, sizeof(in));
        snprintf(why, len, "the last power hook failed; next try in %s", in);
        return false;
    }
    if (!s->power_cmd[on]) {
        snprintf(why, len, "--power-%s-cmd is not set", on ? "on" : "off");
        return false;
    }
    return true;
}

/*
 * Carry out one automatic decision (sched.h says what each action means for
 * the manager). Moves go through the FSM as migration records, which the
 * agents then execute (docs/migration.md); node states carry a "from" so
 * that a decision made on a state the operator has since changed is refused.
 */
static void act(struct mgr_sched *s, const struct view *w, const struct sched_decision *d)
{
    char reason[REASON_MAX + 1];
    const char *node = node_id_of(w, d->node);

    switch (d->action) {
    case SCHED_ACT_NOTHING:
        return;
    case SCHED_ACT_MIGRATE:
        propose(s, MGR_CMD_MIGRATION_CREATE,
                json_pack("{s:s,s:s,s:s,s:s}", "endpoint", ep_name_of(w, d->endpoint),
                          "destination", node_id_of(w, d->dest), "reason",
                          sched_policy_name(d->policy), "explanation", d->text),
                op_new(w, d));
        return;
    case SCHED_ACT_REPLACE:
        /* Nothing runs, so nothing to copy: the directory just changes. */
        propose(s, MGR_CMD_ENDPOINT_UPDATE,
                json_pack("{s:s,s:s}", "name", ep_name_of(w, d->endpoint), "node",
                          node_id_of(w, d->dest)),
                op_new(w, d));
        return;
    case SCHED_ACT_DRAIN_DONE:
        reason_text(reason, sizeof(reason), "", d->text);
        propose(s, MGR_CMD_NODE_STATE,
                json_pack("{s:s,s:s,s:s,s:b,s:s}", "id", node, "state", "drained", "from",
                          "draining", "eligible", 0, "reason", reason),
                op_new(w, d));
        return;
    case SCHED_ACT_DRAIN_EXPIRED:
        /* The drain ends as failed: back up, but it stays ineligible (sched.h). */
        reason_text(reason, sizeof(reason), "drain failed: ", d->text);
        propose(s, MGR_CMD_NODE_STATE,
                json_pack("{s:s,s:s,s:s,s:b,s:s}", "id", node, "state", "up", "from",
                          "draining", "eligible", 0, "reason", reason),
                op_new(w, d));
        return;
    case SCHED_ACT_POWER_OFF:
    case SCHED_ACT_POWER_ON:
        power_start(s, w, d);
        return;
    }
}

/* ======================================================================== */
/* Power hooks (DESIGN.md §6): commands from the configuration, run by the   */
/* leader through /bin/sh with a timeout                                     */
/* ======================================================================== */

/*
 * One power operation, from decision to recorded outcome:
 *
 *   power off: fence (the node, still up, becomes ineligible, so nothing is
 *   placed on it while the hook runs) -> check it is still empty -> hook ->
 *   record standby (or, on failure, eligible again);
 *
 *   power on: hook -> remember the node is waking -> record the outcome in
 *   its state_reason. It becomes up when its agent heartbeats (leader.c).
 *
 * The struct lives until its flow has ended, its proposal (if any) has
 * completed and every uv handle it opened has closed, whichever is last.
 */
struct power_op {
    struct mgr *m;
    struct power_op *next;
    bool on;
    bool detached;     /* the scheduler was closed: finish quietly */
    bool flow_done;
    bool proposing;    /* a proposal of ours awaits its callback */
    int handles_open;
    enum { PW_FENCE, PW_HOOK, PW_RECORD } stage;
    char node[64];
    char addr[300];
    char text[SCHED_TEXT_MAX];

    uv_process_t proc;
    uv_pipe_t out;
    uv_timer_t timer;
    bool spawned, exited, eof, timed_out, finished;
    int64_t exit_status;
    int term_signal;
    int64_t started_ms; /* monotonic */
    int64_t took_ms;
    char spawn_error[128];
    char tail[HOOK_TAIL_MAX];
    size_t tail_len;
};

static bool power_busy(const struct mgr_sched *s, const char *id)
{
    for (const struct power_op *op = s->ops; op; op = op->next)
        if (strcmp(op->node, id) == 0)
            return true;
    return false;
}

static void power_maybe_free(struct power_op *op)
{
    if (op->flow_done && !op->proposing && op->handles_open == 0)
        free(op);
}

/* The flow is over: the node may take new power decisions. */
static void power_end(struct power_op *op)
{
    struct mgr_sched *s = op->m->sched;
    if (!op->detached && s) {
        for (struct power_op **pp = &s->ops; *pp; pp = &(*pp)->next)
            if (*pp == op) {
                *pp = op->next;
                break;
            }
    }
    op->flow_done = true;
    power_maybe_free(op);
}

static void power_step_done(struct mgr *m, int status, struct mgr_fsm_result *res, void *data);

/* Propose a node state for OP's flow; false when it could not be proposed. */
static bool power_propose(struct power_op *op, json_t *body)
{
    struct mgr_sched *s = op->m->sched;
    if (!body || !s || op->detached) {
        json_decref(body);
        return false;
    }
    int rv = mgr_propose(op->m, MGR_CMD_NODE_STATE, body, 0, power_step_done, op);
    if (rv) {
        log_warn(COMP, "node=%s: power %s step not proposed: %s", op->node,
                 op->on ? "on" : "off", dvs_strerror(rv));
        return false;
    }
    op->proposing = true;
    s->ops_pending++;
    return true;
}

/* Keep the last HOOK_TAIL_MAX bytes of the hook's output. */
static void tail_append(struct power_op *op, const char *p, size_t n)
{
    if (n >= sizeof(op->tail)) {
        p += n - sizeof(op->tail);
        n = sizeof(op->tail);
    }
    if (op->tail_len + n > sizeof(op->tail)) {
        size_t drop = op->tail_len + n - sizeof(op->tail);
        memmove(op->tail, op->tail + drop, op->tail_len - drop);
        op->tail_len -= drop;
    }
    memcpy(op->tail + op->tail_len, p, n);
    op->tail_len += n;
}

/*
 * The last MAX bytes of the output on one line, printable ASCII only: it
 * goes into logs and JSON strings, and a hook may print anything.
 */
static void tail_text(const struct power_op *op, char *buf, size_t max)
{
    size_t n = op->tail_len;
    while (n > 0 && (op->tail[n - 1] == '\n' || op->tail[n - 1] == '\r' || op->tail[n - 1] == ' '))
        n--;
    size_t from = n > max - 1 ? n - (max - 1) : 0;
    size_t k = 0;
    for (size_t i = from; i < n; i++) {
        unsigned char c = (unsigned char)op->tail[i];
        buf[k++] = c == '\n' ? '|' : (c < 0x20 || c >= 0x7f) ? '?' : (char)c;
    }
    buf[k] = '\0';
}

/* "exited 0 after 120ms", "exited 3 after 2.0s", "killed by signal 9", "timed out after 30s" */
static bool hook_outcome(const struct power_op *op, char *buf, size_t len)
{
    char took[32];
    format_duration(op->took_ms, took, sizeof(took));
    if (op->spawn_error[0]) {
        snprintf(buf, len, "could not start: %s", op->spawn_error);
        return false;
    }
    if (op->timed_out) {
        snprintf(buf, len, "timed out after %s and was killed", took);
        return false;
    }
    if (op->term_signal) {
        snprintf(buf, len, "killed by signal %d after %s", op->term_signal, took);
        return false;
    }
    snprintf(buf, len, "exited %lld after %s", (long long)op->exit_status, took);
    return op->exit_status == 0;
}

static void power_hook_finished(struct power_op *op);

static void hook_handle_closed(uv_handle_t *h)
{
    struct power_op *op = h->data;
    op->handles_open--;
    power_maybe_free(op);
}

/* Exit seen and output drained (or given up on): close everything, go on. */
static void hook_finish(struct power_op *op)
{
    if (op->finished)
        return;
    op->finished = true;
    if (!op->exited)
        op->took_ms = now_mono_ms() - op->started_ms;
    uv_close((uv_handle_t *)&op->proc, hook_handle_closed);
    uv_close((uv_handle_t *)&op->out, hook_handle_closed);
    uv_close((uv_handle_t *)&op->timer, hook_handle_closed);
    power_hook_finished(op);
}

static void hook_alloc(uv_handle_t *h, size_t suggested, uv_buf_t *buf)
{
    static char scratch[4096];
    (void)h;
    (void)suggested;
    /* Copied into the op's tail at once, so one static buffer serves every hook. */
    buf->base = scratch;
    buf->len = sizeof(scratch);
}

static void hook_read(uv_stream_t *stream, ssize_t nread, const uv_buf_t *buf)
{
    struct power_op *op = stream->data;
    if (nread > 0) {
        tail_append(op, buf->base, (size_t)nread);
        return;
    }
    if (nread == 0)
        return;
    /* EOF (or a read error): every writer, the hook's children too, is gone. */
    uv_read_stop(stream);
    op->eof = true;
    if (op->exited)
        hook_finish(op);
}

static void hook_timer(uv_timer_t *t)
{
    struct power_op *op = t->data;
    if (op->exited) {
        hook_finish(op); /* the output grace is over */
        return;
    }
    /* The hook ran past --power-hook-timeout: kill its whole process group
     * (UV_PROCESS_DETACHED made it a session leader). The exit follows. */
    op->timed_out = true;
    if (kill(-op->proc.pid, SIGKILL) != 0)
        uv_process_kill(&op->proc, SIGKILL);
}

static void hook_exit(uv_process_t *proc, int64_t status, int signal)
{
    struct power_op *op = proc->data;
    op->exited = true;
    op->exit_status = status;
    op->term_signal = signal;
    op->took_ms = now_mono_ms() - op->started_ms;
    if (op->eof) {
        hook_finish(op);
        return;
    }
    /* A child the hook left behind may still hold the output open. */
    uv_timer_stop(&op->timer);
    uv_timer_start(&op->timer, hook_timer, HOOK_EOF_GRACE_MS, 0);
}

/*
 * Values substituted into a hook's command line go to /bin/sh: only
 * characters that mean nothing to the shell are accepted. Node ids and
 * addresses are validated long before (names, HOST:PORT), so this refuses
 * nothing real; it keeps a mistake elsewhere from becoming a shell injection.
 */
static bool shell_safe(const char *v)
{
    if (!v || !*v)
        return false;
    for (const char *c = v; *c; c++)
        if (!(('a' <= *c && *c <= 'z') || ('A' <= *c && *c <= 'Z') || ('0' <= *c && *c <= '9') ||
              strchr("._-:[]", *c)))
            return false;
    return true;
}

/* TEMPLATE with %n, %a, %h and %% replaced; NULL (ERR says why) when a value is unsafe. */
static char *hook_command(const char *tmpl, const char *node, const char *addr, char *err,
                          size_t errlen)
{
    char host[300];
    snprintf(host, sizeof(host), "%s", addr ? addr : "");
    char *colon = strrchr(host, ':');
    if (colon)
        *colon = '\0';
    if (host[0] == '[' && host[strlen(host) - 1] == ']') {
        memmove(host, host + 1, strlen(host));
        host[strlen(host) - 1] = '\0';
    }
    if (!shell_safe(node) || !shell_safe(addr) || !shell_safe(host)) {
        snprintf(err, errlen, "node id \"%s\" or address \"%s\" has characters unsafe for a shell",
                 node ? node : "", addr ? addr : "");
        return NULL;
    }
    size_t cap = strlen(tmpl) + 1;
    for (const char *c = tmpl; *c; c++)
        if (*c == '%')
            cap += sizeof(host) + 64;
    char *out = xmalloc(cap);
    size_t k = 0;
    for (const char *c = tmpl; *c; c++) {
        const char *v = NULL;
        if (*c == '%' && c[1]) {
            c++;
            v = *c == 'n' ? node : *c == 'a' ? addr : *c == 'h' ? host : "%";
        }
        if (v) {
            memcpy(out + k, v, strlen(v));
            k += strlen(v);
        } else {
            out[k++] = *c;
        }
    }
    out[k] = '\0';
    return out;
}

/* The daemon's environment plus the facts, for hooks that prefer variables. */
static char **hook_env(const struct power_op *op)
{
    size_t n = 0;
    while (environ && environ[n])
        n++;
    char **env = xcalloc(n + 4, sizeof(*env));
    size_t k = 0;
    for (size_t i = 0; i < n; i++)
        if (strncmp(environ[i], "DVS_NODE_ID=", 12) != 0 &&
            strncmp(environ[i], "DVS_NODE_ADDRESS=", 17) != 0 &&
            strncmp(environ[i], "DVS_POWER_ACTION=", 17) != 0)
            env[k++] = xstrdup(environ[i]);
    env[k++] = xasprintf("DVS_NODE_ID=%s", op->node);
    env[k++] = xasprintf("DVS_NODE_ADDRESS=%s", op->addr);
    env[k++] = xasprintf("DVS_POWER_ACTION=%s", op->on ? "on" : "off");
    env[k] = NULL;
    return env;
}

static void free_strv(char **v)
{
    for (size_t i = 0; v && v[i]; i++)
        free(v[i]);
    free(v);
}

/*
 * Start OP's hook: /bin/sh -c COMMAND in a session of its own (so that a
 * timeout kills everything it started), stdin from /dev/null, stdout and
 * stderr into one pipe whose tail is kept. On failure the outcome is
 * recorded as "could not start" and the flow goes on from there.
 */
static void hook_start(struct power_op *op)
{
    struct mgr *m = op->m;
    struct mgr_sched *s = m->sched;
    const char *tmpl = s->power_cmd[op->on];
    uv_file fds[2] = {-1, -1};
    char **env = NULL;
    int rv;

    op->stage = PW_HOOK;
    op->started_ms = now_mono_ms();
    char *cmd = hook_command(tmpl, op->node, op->addr, op->spawn_error, sizeof(op->spawn_error));
    if (!cmd)
        goto fail;

    rv = uv_pipe(fds, UV_NONBLOCK_PIPE, 0);
    if (rv) {
        snprintf(op->spawn_error, sizeof(op->spawn_error), "pipe: %s", uv_strerror(rv));
        goto fail;
    }
    uv_pipe_init(&m->loop, &op->out, 0);
    op->out.data = op;
    op->handles_open++;
    uv_pipe_open(&op->out, fds[0]);
    uv_timer_init(&m->loop, &op->timer);
    op->timer.data = op;
    op->handles_open++;

    env = hook_env(op);
    char *args[] = {"/bin/sh", "-c", cmd, NULL};
    uv_stdio_container_t stdio[3] = {
        {.flags = UV_IGNORE},
        {.flags = UV_INHERIT_FD, .data.fd = fds[1]},
        {.flags = UV_INHERIT_FD, .data.fd = fds[1]},
    };
    uv_process_options_t po = {
        .exit_cb = hook_exit,
        .file = "/bin/sh",
        .args = args,
        .env = env,
        .flags = UV_PROCESS_DETACHED,
        .stdio_count = 3,
        .stdio = stdio,
    };
    op->proc.data = op;
    rv = uv_spawn(&m->loop, &op->proc, &po);
    op->handles_open++; /* initialized even when the spawn failed: it must be closed */
    close(fds[1]);      /* the hook holds the write end now */
    fds[1] = -1;
    free_strv(env);
    if (rv) {
        snprintf(op->spawn_error, sizeof(op->spawn_error), "/bin/sh: %s", uv_strerror(rv));
        free(cmd);
        op->exited = op->eof = true;
        hook_finish(op);
        return;
    }
    op->spawned = true;
    log_info(COMP, "node=%s power-%s hook started pid=%d: %s", op->node, op->on ? "on" : "off",
             op->proc.pid, cmd);
    free(cmd);
    uv_read_start((uv_stream_t *)&op->out, hook_alloc, hook_read);
    uv_timer_start(&op->timer, hook_timer, (uint64_t)m->cfg.power_hook_timeout_ms, 0);
    return;

fail:
    if (fds[1] >= 0)
        close(fds[1]);
    free(cmd);
    op->finished = true;
    power_hook_finished(op);
}

static int64_t hook_backoff(const struct sched_config *cfg, unsigned failures)
{
    int64_t d = cfg->backoff_base_ms;
    for (unsigned i = 1; i < failures && d < cfg->backoff_max_ms; i++)
        d *= 2;
    return d < cfg->backoff_max_ms ? d : cfg->backoff_max_ms;
}

/*
 * The hook is over: log its outcome with the tail of its output, count it,
 * and record it in the node's state (the "from" of each command keeps a
 * stale outcome off a node that an operator or a heartbeat changed since).
 */
static void power_hook_finished(struct power_op *op)
{
    struct mgr_sched *s = op->m->sched;
    char outcome[160], tail[HOOK_TAIL_MAX + 1], short_tail[REASON_TAIL_MAX + 1];
    char reason[REASON_MAX + 1];
    bool ok = hook_outcome(op, outcome, sizeof(outcome));
    const char *what = op->on ? "power-on" : "power-off";

    tail_text(op, tail, sizeof(tail));
    tail_text(op, short_tail, sizeof(short_tail));
    log_msg(ok ? LOG_INFO : LOG_WARN, COMP, "node=%s %s hook %s%s%s", op->node, what, outcome,
            tail[0] ? "; output: " : "", tail);
    if (op->detached || !s) {
        power_end(op);
        return;
    }
    s->hooks[op->on][ok ? 0 : op->timed_out ? 2 : 1]++;

    struct gnode *g = gnode_find(s, op->node);
    if (g && ok) {
        g->hook_failures = 0;
        g->retry_at = 0;
    } else if (g) {
        g->hook_failures++;
        g->retry_at = now_wall_ms() + hook_backoff(&s->cfg, g->hook_failures);
    }

    size_t pos = 0;
    reason[0] = '\0';
    json_t *body;
    if (!op->on && ok) {
        appendf(reason, sizeof(reason), &pos, "powered off by the energy policy: hook %s",
                outcome);
        body = json_pack("{s:s,s:s,s:s}", "id", op->node, "state", "standby", "from", "up");
    } else if (!op->on) {
        appendf(reason, sizeof(reason), &pos, "power-off hook %s; the node stays on", outcome);
        body = json_pack("{s:s,s:s,s:s,s:b}", "id", op->node, "state", "up", "from", "up",
                         "eligible", 1);
    } else if (ok) {
        /* Until its agent heartbeats again (leader.c asks mgr_sched_wake_reason). */
        if (g) {
            g->power = SCHED_POWER_WAKING;
            g->power_since = now_wall_ms();
        }
        appendf(reason, sizeof(reason), &pos, "waking: power-on hook %s; up when it heartbeats",
                outcome);
        body = json_pack("{s:s,s:s,s:s}", "id", op->node, "state", "standby", "from", "standby");
    } else {
        appendf(reason, sizeof(reason), &pos, "power-on hook %s", outcome);
        body = json_pack("{s:s,s:s,s:s}", "id", op->node, "state", "standby", "from", "standby");
    }
    if (short_tail[0])
        appendf(reason, sizeof(reason), &pos, "; output: %s", short_tail);
    if (body)
        json_object_set_new(body, "reason", json_string(reason));
    op->stage = PW_RECORD;
    if (!power_propose(op, body))
        power_end(op);
}

/* The fence is in place: is the node still empty? Then run the hook. */
static void power_fenced(struct power_op *op)
{
    struct mgr *m = op->m;
    json_t *orders = mgr_fsm_orders(m->fsm, op->node);
    size_t eps = json_array_size(json_object_get(orders, "endpoints"));
    size_t migs = json_array_size(json_object_get(orders, "migrations"));
    json_decref(orders);
    if (!orders || eps > 0 || migs > 0) {
        /* Something was placed on it between the decision and the fence. */
        log_info(COMP, "node=%s power-off abandoned: %zu endpoint(s) and %zu migration(s) "
                       "arrived meanwhile",
                 op->node, eps, migs);
        op->stage = PW_RECORD;
        json_t *body = json_pack("{s:s,s:s,s:s,s:b,s:s}", "id", op->node, "state", "up",
                                 "from", "up", "eligible", 1, "reason",
                                 "power-off abandoned: endpoints were placed on it meanwhile");
        if (!power_propose(op, body))
            power_end(op);
        return;
    }
    hook_start(op);
}

static void power_step_done(struct mgr *m, int status, struct mgr_fsm_result *res, void *data)
{
    struct power_op *op = data;
    const char *err = status ? dvs_strerror(status) : res->code ? res->msg : NULL;
    op->proposing = false;
    op_settled(m);
    if (op->detached || !m->sched) {
        power_end(op);
        return;
    }
    switch (op->stage) {
    case PW_FENCE:
        if (err || !m->sched->active) {
            log_info(COMP, "node=%s power-off not started: %s", op->node,
                     err ? err : "leadership was lost");
            power_end(op);
            return;
        }
        power_fenced(op);
        return;
    case PW_HOOK:
        assert(!"no proposal while the hook runs");
        return;
    case PW_RECORD:
        if (err)
            log_warn(COMP, "node=%s power-%s outcome not recorded: %s", op->node,
                     op->on ? "on" : "off", err);
        else
            log_info(COMP, "node=%s state=%s: %s", op->node,
                     str_of(res->object, "state") ? str_of(res->object, "state") : "?",
                     str_of(res->object, "state_reason") ? str_of(res->object, "state_reason")
                                                         : "");
        power_end(op);
        return;
    }
}

/* An automatic POWER_OFF or POWER_ON decision. */
static void power_start(struct mgr_sched *s, const struct view *w, const struct sched_decision *d)
{
    const char *node = node_id_of(w, d->node);
    bool on = d->action == SCHED_ACT_POWER_ON;
    /* can_act() has checked the node is known, idle, not backing off, and has a hook. */
    assert(node && !power_busy(s, node) && s->power_cmd[on]);
    struct power_op *op = xcalloc(1, sizeof(*op));
    op->m = s->m;
    op->on = on;
    snprintf(op->node, sizeof(op->node), "%s", node);
    snprintf(op->addr, sizeof(op->addr), "%s", w->addr[d->node] ? w->addr[d->node] : "");
    snprintf(op->text, sizeof(op->text), "%s", d->text);
    op->next = s->ops;
    s->ops = op;

    if (on) {
        hook_start(op);
        return;
    }
    char reason[REASON_MAX + 1];
    reason_text(reason, sizeof(reason), "powering off (energy policy): ", d->text);
    op->stage = PW_FENCE;
    json_t *body = json_pack("{s:s,s:s,s:s,s:b,s:s}", "id", node, "state", "up", "from", "up",
                             "eligible", 0, "reason", reason);
    if (!power_propose(op, body))
        power_end(op);
}

/* ======================================================================== */
/* The evaluation loop (leader only)                                         */
/* ======================================================================== */

/* Keep what this evaluation returned for the next one (sched.h: state in -> state out). */
static void remember(struct mgr_sched *s, const struct view *w, const struct sched_plan *plan)
{
    struct gnode *nodes = xcalloc(w->v.n_nodes ? w->v.n_nodes : 1, sizeof(*nodes));
    for (size_t i = 0; i < w->v.n_nodes; i++) {
        const struct sched_node *n = &w->nodes[i];
        const struct gnode *old = gnode_find(s, n->id);
        if (old)
            nodes[i] = *old;
        snprintf(nodes[i].id, sizeof(nodes[i].id), "%s", n->id);
        nodes[i].hist = plan->node_hist[i];
        /* Waking ends when the node is up again (or is anything but standby). */
        if (n->state != SCHED_NODE_STANDBY) {
            nodes[i].power = SCHED_POWER_ON;
            nodes[i].power_since = 0;
        } else if (nodes[i].power != SCHED_POWER_WAKING) {
            nodes[i].power = SCHED_POWER_OFF;
        }
    }
    free(s->nodes);
    s->nodes = nodes;
    s->n_nodes = w->v.n_nodes;
    s->cluster_hist = plan->cluster_hist;
}

static void evaluate(struct mgr_sched *s)
{
    struct mgr *m = s->m;
    struct view w;
    struct sched_plan plan;
    char msg[256];

    if (!s->active || !m->leader_ready || !mgr_is_leader(m))
        return;
    /* Decide on a view that includes our last decisions, not one that lacks them. */
    if (s->ops_pending > 0) {
        s->rerun = true;
        return;
    }
    uint64_t t0 = now_mono_ns();
    s->last_eval_mono = now_mono_ms();
    if (view_build(s, m->fsm, &w) != 0) {
        s->eval_errors++;
        log_warn(COMP, "evaluation skipped: out of memory reading the FSM");
        return;
    }
    int64_t now = now_wall_ms();
    int rc = sched_evaluate(&w.v, &s->cfg, now, &plan);
    if (rc != 0) {
        s->eval_errors++;
        if (rc != -EINVAL || sched_view_validate(&w.v, msg, sizeof(msg)) == 0)
            snprintf(msg, sizeof(msg), "%s", strerror(-rc));
        /* Once per distinct problem, not at every tick. */
        if (strcmp(msg, s->last_error) != 0)
            log_error(COMP, "evaluation failed: %s", msg);
        snprintf(s->last_error, sizeof(s->last_error), "%s", msg);
        view_free(&w);
        return;
    }
    s->last_error[0] = '\0';
    s->evaluations++;
    remember(s, &w, &plan);
    uint64_t *seen = xcalloc(plan.n_decisions ? plan.n_decisions : 1, sizeof(*seen));
    size_t n_seen = 0;
    for (size_t i = 0; i < plan.n_decisions; i++) {
        const struct sched_decision *d = &plan.decisions[i];
        bool acting = false;
        if (d->automatic && d->action != SCHED_ACT_NOTHING)
            acting = can_act(s, &w, d, msg, sizeof(msg));
        log_decision(s, &w, d, acting,
                     d->automatic && d->action != SCHED_ACT_NOTHING && !acting ? msg : NULL,
                     seen, &n_seen);
        if (acting)
            act(s, &w, d);
    }
    qsort(seen, n_seen, sizeof(*seen), cmp_u64);
    free(s->seen);
    s->seen = seen;
    s->n_seen = n_seen;
    sched_plan_free(&plan);
    view_free(&w);
    s->last_eval_s = (double)(now_mono_ns() - t0) / 1e9;
}

static void on_timer(uv_timer_t *t)
{
    evaluate(t->data);
}

/* Evaluate soon: after a relevant change, but at most once a second. */
static void kick(struct mgr_sched *s)
{
    if (!s->active)
        return;
    int64_t gap = s->m->cfg.sched_interval_ms < SCHED_MIN_GAP_MS ? s->m->cfg.sched_interval_ms
                                                                  : SCHED_MIN_GAP_MS;
    int64_t delay = s->last_eval_mono + gap - now_mono_ms();
    if (delay < 0)
        delay = 0;
    if (uv_timer_get_due_in(&s->timer) <= (uint64_t)delay)
        return; /* due sooner anyway */
    uv_timer_start(&s->timer, on_timer, (uint64_t)delay, (uint64_t)s->m->cfg.sched_interval_ms);
}

/* ======================================================================== */
/* Entry points (sched_glue.h)                                               */
/* ======================================================================== */

int mgr_sched_init(struct mgr *m)
{
    struct mgr_sched *s = xcalloc(1, sizeof(*s));
    char err[512];
    s->m = m;
    if (settings_to_config(&m->cfg, &s->cfg, &s->automation, err, sizeof(err)) != 0) {
        /* mgr_sched_check_settings() passed on the same settings. */
        log_error(COMP, "%s", err);
        free(s);
        return -EINVAL;
    }
    s->power_cmd[0] = set_text(m->cfg.power_off_cmd) ? m->cfg.power_off_cmd : NULL;
    s->power_cmd[1] = set_text(m->cfg.power_on_cmd) ? m->cfg.power_on_cmd : NULL;
    uv_timer_init(&m->loop, &s->timer);
    s->timer.data = s;
    m->sched = s;
    log_info(COMP, "scheduler every %lldms, automation %s (overload %s, energy %s, maintenance "
                   "automatic), power hooks %s/%s",
             (long long)m->cfg.sched_interval_ms, sched_mode_name(s->automation),
             sched_mode_name(s->cfg.overload_mode), sched_mode_name(s->cfg.energy_mode),
             s->power_cmd[0] ? "off" : "-", s->power_cmd[1] ? "on" : "-");
    return 0;
}

void mgr_sched_start(struct mgr *m)
{
    struct mgr_sched *s = m->sched;
    if (!s || s->active)
        return;
    /* A new leader starts from zeroed history: windows restart (sched.h). */
    forget(s);
    s->active = true;
    s->last_eval_mono = now_mono_ms();
    uv_timer_start(&s->timer, on_timer, (uint64_t)m->cfg.sched_interval_ms,
                   (uint64_t)m->cfg.sched_interval_ms);
}

void mgr_sched_stop(struct mgr *m)
{
    struct mgr_sched *s = m->sched;
    if (!s || !s->active)
        return;
    s->active = false;
    uv_timer_stop(&s->timer);
    /* Hooks under way finish; what they would record fails without leadership. */
    forget(s);
}

static void sched_closed(uv_handle_t *h)
{
    free(h->data);
}

void mgr_sched_close(struct mgr *m)
{
    struct mgr_sched *s = m->sched;
    if (!s)
        return;
    mgr_sched_stop(m);
    m->sched = NULL;
    /* Power operations finish on their own without us; a running hook is killed. */
    for (struct power_op *op = s->ops, *next; op; op = next) {
        next = op->next;
        op->detached = true;
        if (op->spawned && !op->exited) {
            op->timed_out = true;
            kill(-op->proc.pid, SIGKILL);
        }
    }
    s->ops = NULL;
    uv_close((uv_handle_t *)&s->timer, sched_closed);
}

void mgr_sched_notify(struct mgr *m, unsigned tables)
{
    struct mgr_sched *s = m->sched;
    if (s && s->active &&
        (tables & (MGR_T_NODES | MGR_T_ENDPOINTS | MGR_T_MIGRATIONS | MGR_T_LOAD)))
        kick(s);
}

const char *mgr_sched_wake_reason(struct mgr *m, const char *node, int64_t standby_since)
{
    struct mgr_sched *s = m->sched;
    struct gnode *g = s ? gnode_find(s, node) : NULL;
    if (g && g->power == SCHED_POWER_WAKING)
        return "powered on by the energy policy: heartbeats resumed";
    /*
     * A beat soon after the power-off is a straggler from before it. A node
     * that still beats a whole TTL later is evidently running (the hook
     * failed silently, or someone powered it on): the directory follows.
     */
    if (s && power_busy(s, node))
        return NULL;
    if (now_wall_ms() - standby_since > m->cfg.node_ttl_ms)
        return "heartbeats while in standby: the node is running";
    return NULL;
}

int mgr_sched_plan(struct mgr *m, const char *node, bool drain, json_t **ret, char *err,
                   size_t errlen)
{
    struct mgr_sched *s = m->sched;
    struct view w;
    struct sched_plan plan;
    struct sched_projection *proj = NULL;
    json_t *decisions = NULL, *projection = NULL;
    int rc;

    if (!s)
        return DVS_ESHUTDOWN;
    if ((rc = view_build(s->active ? s : NULL, m->fsm, &w)) != 0)
        return rc;
    uint32_t idx = node ? node_index(&w, node) : SCHED_NONE;
    if (node && idx == SCHED_NONE) {
        json_t *n = mgr_fsm_node(m->fsm, node);
        snprintf(err, errlen, n ? "node %s declares no cpu: the scheduler leaves it out"
                                : "no node %s (see GET /v1/nodes)",
                 node);
        rc = n ? DVS_ECONFLICT : DVS_ENOTFOUND;
        json_decref(n);
        goto out_view;
    }
    int64_t now = now_wall_ms();
    rc = drain ? sched_drain_dry_run(&w.v, &s->cfg, idx, now, &plan)
               : sched_evaluate(&w.v, &s->cfg, now, &plan);
    if (rc != 0) {
        if (rc != -EINVAL || sched_view_validate(&w.v, err, errlen) == 0)
            snprintf(err, errlen, "the scheduler failed: %s", strerror(-rc));
        goto out_view;
    }
    proj = xcalloc(w.v.n_nodes ? w.v.n_nodes : 1, sizeof(*proj));
    rc = sched_project(&w.v, &plan, proj, w.v.n_nodes);
    if (rc != 0) {
        snprintf(err, errlen, "the projection failed: %s", strerror(-rc));
        goto out_plan;
    }

    decisions = json_array();
    projection = json_array();
    for (size_t i = 0; i < plan.n_decisions; i++)
        if (!node || drain || concerns(&plan.decisions[i], idx))
            json_array_append_new(decisions, decision_json(&w, &plan.decisions[i]));
    for (uint32_t i = 0; i < w.v.n_nodes; i++)
        if (!node || drain || i == idx)
            json_array_append_new(projection, projection_json(&w, i, &proj[i]));
    json_t *out = json_pack(
        "{s:I,s:s,s:{s:s,s:s,s:s},s:o,s:o,s:I,s:I,s:o,s:o}", "time", (json_int_t)now,
        "automation", sched_mode_name(s->automation), "modes", "maintenance", "automatic",
        "overload", sched_mode_name(s->cfg.overload_mode), "energy",
        sched_mode_name(s->cfg.energy_mode), "cluster_util", jreal(plan.cluster_util),
        "spare_cpu", jreal(plan.spare_cpu), "in_flight", (json_int_t)plan.in_flight, "planned",
        (json_int_t)plan.planned, "decisions", decisions, "projection", projection);
    decisions = projection = NULL;
    if (!out) {
        rc = -ENOMEM;
        goto out_plan;
    }
    if (drain) {
        json_object_set_new(out, "node", json_string(node));
        json_object_set_new(out, "blocked", json_integer(plan.blocked));
        json_object_set_new(out, "can_complete", json_boolean(plan.blocked == 0));
    }
    *ret = out;
out_plan:
    json_decref(decisions);
    json_decref(projection);
    free(proj);
    sched_plan_free(&plan);
out_view:
    view_free(&w);
    return rc;
}

char *mgr_sched_metrics(struct mgr *m)
{
    struct mgr_sched *s = m->sched;
    static const char *const results[] = {"ok", "failed", "timeout"};
    char *out = xmalloc(8192);
    size_t len = 8192, pos = 0;

#define PUT(...)                                                                   \
    do {                                                                           \
        for (;;) {                                                                 \
            int n_ = snprintf(out + pos, len - pos, __VA_ARGS__);                  \
            if (n_ >= 0 && (size_t)n_ < len - pos) {                               \
                pos += (size_t)n_;                                                 \
                break;                                                             \
            }                                                                      \
            len = len * 2 + (size_t)(n_ > 0 ? n_ : 0);                             \
            out = xrealloc(out, len);                                              \
        }                                                                          \
    } while (0)

    PUT("# HELP dvs_scheduler_evaluations_total Scheduler evaluations run by this member as "
        "leader.\n# TYPE dvs_scheduler_evaluations_total counter\n"
        "dvs_scheduler_evaluations_total %llu\n",
        (unsigned long long)(s ? s->evaluations : 0));
    PUT("# HELP dvs_scheduler_evaluation_errors_total Evaluations that failed (bad view, out of "
        "memory).\n# TYPE dvs_scheduler_evaluation_errors_total counter\n"
        "dvs_scheduler_evaluation_errors_total %llu\n",
        (unsigned long long)(s ? s->eval_errors : 0));
    PUT("# HELP dvs_scheduler_evaluation_seconds Duration of the last evaluation.\n"
        "# TYPE dvs_scheduler_evaluation_seconds gauge\n"
        "dvs_scheduler_evaluation_seconds %.6f\n",
        s ? s->last_eval_s : 0.0);
    PUT("# HELP dvs_scheduler_decisions_total Decisions carried out (automatic=\"true\") or "
        "first recommended (automatic=\"false\"), by action and policy.\n"
        "# TYPE dvs_scheduler_decisions_total counter\n");
    for (int a = SCHED_ACT_MIGRATE; a <= SCHED_ACT_DRAIN_EXPIRED; a++)
        for (int p = SCHED_POL_MAINTENANCE; p <= SCHED_POL_ENERGY; p++)
            for (int au = 1; au >= 0; au--) {
                uint64_t v = s ? s->decided[a][p][au] : 0;
                /* The series a policy can produce appear from the start. */
                bool possible = (p == SCHED_POL_MAINTENANCE && a != SCHED_ACT_POWER_OFF &&
                                 a != SCHED_ACT_POWER_ON) ||
                                (p != SCHED_POL_MAINTENANCE && a != SCHED_ACT_DRAIN_DONE &&
                                 a != SCHED_ACT_DRAIN_EXPIRED);
                if (v == 0 && !possible)
                    continue;
                PUT("dvs_scheduler_decisions_total{action=\"%s\",policy=\"%s\",automatic=\"%s\"}"
                    " %llu\n",
                    sched_action_name((enum sched_action)a),
                    sched_policy_name((enum sched_policy)p), au ? "true" : "false",
                    (unsigned long long)v);
            }
    PUT("# HELP dvs_scheduler_power_hooks_total Power hook runs by hook and outcome.\n"
        "# TYPE dvs_scheduler_power_hooks_total counter\n");
    for (int on = 0; on < 2; on++)
        for (int r = 0; r < 3; r++)
            PUT("dvs_scheduler_power_hooks_total{hook=\"%s\",result=\"%s\"} %llu\n",
                on ? "power_on" : "power_off", results[r],
                (unsigned long long)(s ? s->hooks[on][r] : 0));
#undef PUT
    return out;
}
