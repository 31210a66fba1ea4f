/*
 * The leader's duties (DESIGN.md §3): heartbeats and fine-grained load stay
 * in the leader's memory; the log only sees what must survive a failover:
 *
 *   - a node's state change (down after --node-ttl without heartbeats, up
 *     again when they resume), one entry when it happens;
 *   - a compact load summary of all nodes every --load-summary-interval,
 *     and only if some load changed (never one entry per heartbeat).
 *
 * A new leader knows no heartbeat yet: every node gets a full TTL of grace
 * from the moment this member became ready as leader.
 */
#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "common/log.h"
#include "common/util.h"
#include "dvs.h"
#include "manager/daemon.h"

#define COMP "leader"

struct hb {
    char node[64];
    int64_t last_seen_ms; /* monotonic */
    double cpu, rps;
    int64_t mem;
    bool have_load;
    bool load_dirty;     /* changed since the last summary */
    bool state_proposed; /* a NODE_STATE for this node is in flight */
    struct hb *next;
};

struct mgr_leader {
    bool active;
    int64_t since_ms; /* monotonic time leadership became ready */
    uv_timer_t tick;
    uv_timer_t summary;
    struct hb *hbs;
};

static struct hb *find_hb(struct mgr_leader *l, const char *node, bool create)
{
    for (struct hb *h = l->hbs; h; h = h->next)
        if (strcmp(h->node, node) == 0)
            return h;
    if (!create)
        return NULL;
    struct hb *h = xcalloc(1, sizeof(*h));
    snprintf(h->node, sizeof(h->node), "%s", node);
    h->next = l->hbs;
    l->hbs = h;
    return h;
}

struct state_ctx {
    struct mgr *m;
    char node[64];
};

static void state_done(struct mgr *m, int status, struct mgr_fsm_result *res, void *data)
{
    struct state_ctx *c = data;
    if (m->leader) {
        struct hb *h = find_hb(m->leader, c->node, false);
        if (h)
            h->state_proposed = false;
    }
    if (status != 0 || res->code != 0)
        log_warn(COMP, "node=%s state change failed: %s", c->node,
                 status ? dvs_strerror(status) : res->msg);
    free(c);
}

static void propose_state(struct mgr *m, struct hb *h, const char *state, const char *reason)
{
    if (h->state_proposed)
        return;
    struct state_ctx *c = xcalloc(1, sizeof(*c));
    c->m = m;
    snprintf(c->node, sizeof(c->node), "%s", h->node);
    json_t *body = json_pack("{s:s,s:s,s:s}", "id", h->node, "state", state, "reason", reason);
    int rv = mgr_propose(m, MGR_CMD_NODE_STATE, body, 0, state_done, c);
    if (rv) {
        log_warn(COMP, "node=%s cannot propose state %s: %s", h->node, state, dvs_strerror(rv));
        free(c);
        return;
    }
    h->state_proposed = true;
    log_info(COMP, "node=%s state -> %s: %s", h->node, state, reason);
}

static void abort_done(struct mgr *m, int status, struct mgr_fsm_result *res, void *data)
{
    (void)data;
    if (status != 0 || res->code != 0)
        log_warn(COMP, "could not abort a stalled migration: %s",
                 status ? dvs_strerror(status) : res->msg);
}

/*
 * A migration that makes no progress (no phase report) for
 * --migration-timeout is aborted (DESIGN.md §4 phase 5): its agents may have
 * died. The source unfreezes only once it sees this abort committed.
 */
static void abort_stalled(struct mgr *m)
{
    int64_t now = now_wall_ms();
    json_t *migs = mgr_fsm_migrations(m->fsm);
    size_t i;
    json_t *g;
    json_array_foreach(migs, i, g)
    {
        const char *phase = json_string_value(json_object_get(g, "phase"));
        if (!phase || !strcmp(phase, "committed") || !strcmp(phase, "aborted"))
            continue;
        int64_t updated = json_integer_value(json_object_get(g, "updated_at"));
        if (now - updated <= m->cfg.migration_timeout_ms)
            continue;
        json_int_t id = json_integer_value(json_object_get(g, "id"));
        char why[160], ago[32];
        format_duration(now - updated, ago, sizeof(ago));
        snprintf(why, sizeof(why), "no progress in phase %s for %s (timeout)", phase, ago);
        log_warn(COMP, "migration=%lld endpoint=%s aborting: %s", (long long)id,
                 json_string_value(json_object_get(g, "endpoint")), why);
        json_t *body = json_pack("{s:I,s:s,s:s}", "id", id, "phase", "aborted", "error", why);
        mgr_propose(m, MGR_CMD_MIGRATION_UPDATE, body, 0, abort_done, NULL);
    }
    json_decref(migs);
}

/* Mark down every up node whose heartbeats stopped; abort stalled migrations. */
static void on_tick(uv_timer_t *t)
{
    struct mgr *m = t->data;
    struct mgr_leader *l = m->leader;
    if (!l->active || !m->leader_ready)
        return;
    int64_t now = now_mono_ms();
    json_t *nodes = mgr_fsm_nodes(m->fsm);
    size_t i;
    json_t *n;
    json_array_foreach(nodes, i, n)
    {
        const char *id = json_string_value(json_object_get(n, "id"));
        const char *state = json_string_value(json_object_get(n, "state"));
        if (!id || !state || strcmp(state, "down") == 0 || strcmp(state, "standby") == 0)
            continue;
        struct hb *h = find_hb(l, id, true);
        int64_t seen = h->last_seen_ms > l->since_ms ? h->last_seen_ms : l->since_ms;
        if (now - seen > m->cfg.node_ttl_ms) {
            char why[128], ago[32], ttl[32];
            format_duration(now - seen, ago, sizeof(ago));
            format_duration(m->cfg.node_ttl_ms, ttl, sizeof(ttl));
            snprintf(why, sizeof(why), "no heartbeat for %s (ttl %s)", ago, ttl);
            propose_state(m, h, "down", why);
        }
    }
    json_decref(nodes);
    abort_stalled(m);
}

static void summary_done(struct mgr *m, int status, struct mgr_fsm_result *res, void *data)
{
    if (status != 0 || res->code != 0)
        log_debug(COMP, "load summary not recorded: %s",
                  status ? dvs_strerror(status) : res->msg);
}

/* The compact load summary: one entry for all nodes whose load changed. */
static void on_summary(uv_timer_t *t)
{
    struct mgr *m = t->data;
    struct mgr_leader *l = m->leader;
    if (!l->active || !m->leader_ready)
        return;
    json_t *arr = json_array();
    for (struct hb *h = l->hbs; h; h = h->next) {
        if (!h->have_load || !h->load_dirty)
            continue;
        json_array_append_new(arr, json_pack("{s:s,s:f,s:I,s:f}", "id", h->node, "cpu", h->cpu,
                                             "mem", (json_int_t)h->mem, "rps", h->rps));
        h->load_dirty = false;
    }
    if (json_array_size(arr) == 0) {
        json_decref(arr);
        return;
    }
    json_t *body = json_pack("{s:o}", "nodes", arr);
    int rv = mgr_propose(m, MGR_CMD_LOAD_SUMMARY, body, 0, summary_done, NULL);
    if (rv)
        log_debug(COMP, "load summary not proposed: %s", dvs_strerror(rv));
}

static double num_or(json_t *o, const char *k, double def)
{
    json_t *v = json_object_get(o, k);
    return json_is_number(v) ? json_number_value(v) : def;
}

int mgr_leader_heartbeat(struct mgr *m, const char *node, json_t *load, json_t **ret)
{
    struct mgr_leader *l = m->leader;
    json_t *n = mgr_fsm_node(m->fsm, node);
    if (!n)
        return DVS_ENOTFOUND;
    struct hb *h = find_hb(l, node, true);
    h->last_seen_ms = now_mono_ms();
    if (load) {
        double cpu = num_or(load, "cpu_used", 0), rps = num_or(load, "rps", 0);
        int64_t mem = (int64_t)num_or(load, "mem_used", 0);
        /* Only a real change makes the next summary worth an entry. */
        if (!h->have_load || cpu != h->cpu || rps != h->rps || mem != h->mem)
            h->load_dirty = true;
        h->cpu = cpu;
        h->rps = rps;
        h->mem = mem;
        h->have_load = true;
    }
    const char *state = json_string_value(json_object_get(n, "state"));
    if (state && strcmp(state, "down") == 0 && l->active && m->leader_ready)
        propose_state(m, h, "up", "heartbeats resumed");
    /* A standby node that heartbeats has been woken (DESIGN.md §6); the
     * scheduler tells a woken node from a straggling beat before power-off. */
    if (state && strcmp(state, "standby") == 0 && l->active && m->leader_ready) {
        const char *why = mgr_sched_wake_reason(
            m, node, (int64_t)json_integer_value(json_object_get(n, "state_since")));
        if (why)
            propose_state(m, h, "up", why);
    }
    *ret = json_pack("{s:O,s:O}", "state", json_object_get(n, "state"), "eligible",
                     json_object_get(n, "eligible"));
    json_decref(n);
    return 0;
}

int64_t mgr_leader_last_seen_ms(struct mgr *m, const char *node)
{
    if (!m->leader || !m->leader->active)
        return -1;
    struct hb *h = find_hb(m->leader, node, false);
    if (!h || h->last_seen_ms == 0)
        return -1;
    return now_mono_ms() - h->last_seen_ms;
}

int mgr_leader_init(struct mgr *m)
{
    struct mgr_leader *l = xcalloc(1, sizeof(*l));
    uv_timer_init(&m->loop, &l->tick);
    l->tick.data = m;
    uv_timer_init(&m->loop, &l->summary);
    l->summary.data = m;
    m->leader = l;
    return 0;
}

static void free_hbs(struct mgr_leader *l)
{
    while (l->hbs) {
        struct hb *h = l->hbs;
        l->hbs = h->next;
        free(h);
    }
}

static void settings_done(struct mgr *m, int status, struct mgr_fsm_result *res, void *data)
{
    (void)m;
    (void)data;
    if (status != 0 || res->code != 0)
        log_warn(COMP, "settings not applied: %s (the next leader tries again)",
                 status != 0 ? dvs_strerror(status) : res->msg);
}

void mgr_leader_start(struct mgr *m)
{
    struct mgr_leader *l = m->leader;
    if (!l || l->active)
        return;
    l->active = true;
    l->since_ms = now_mono_ms();
    free_hbs(l);
    uv_timer_start(&l->tick, on_tick, (uint64_t)m->cfg.leader_tick_ms,
                   (uint64_t)m->cfg.leader_tick_ms);
    uv_timer_start(&l->summary, on_summary, (uint64_t)m->cfg.load_summary_ms,
                   (uint64_t)m->cfg.load_summary_ms);
    log_info(COMP, "leader duties started (node ttl %lldms, load summary every %lldms)",
             (long long)m->cfg.node_ttl_ms, (long long)m->cfg.load_summary_ms);
    mgr_sched_start(m);

    /* Settings apply needs travel through the log (fsm.c, cmd_settings). */
    if (m->cfg.events_retention > 0 &&
        m->cfg.events_retention != mgr_fsm_events_retention(m->fsm)) {
        json_t *body = json_pack("{s:I}", "events_retention",
                                 (json_int_t)m->cfg.events_retention);
        if (mgr_propose(m, MGR_CMD_SETTINGS, body, 0, settings_done, NULL) == 0)
            log_info(COMP, "proposing events_retention=%lld (was %lld)",
                     (long long)m->cfg.events_retention,
                     (long long)mgr_fsm_events_retention(m->fsm));
    }
}

void mgr_leader_stop(struct mgr *m)
{
    struct mgr_leader *l = m->leader;
    if (!l || !l->active)
        return;
    l->active = false;
    mgr_sched_stop(m);
    uv_timer_stop(&l->tick);
    uv_timer_stop(&l->summary);
    free_hbs(l);
    log_info(COMP, "leader duties stopped");
}

static void free_leader_cb(uv_handle_t *h)
{
    struct mgr_leader *l = h->data;
    free(l);
}

void mgr_leader_close(struct mgr *m)
{
    struct mgr_leader *l = m->leader;
    if (!l)
        return;
    mgr_leader_stop(m);
    m->leader = NULL;
    uv_close((uv_handle_t *)&l->tick, NULL);
    l->summary.data = l;
    uv_close((uv_handle_t *)&l->summary, free_leader_cb);
}
