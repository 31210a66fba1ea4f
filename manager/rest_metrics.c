/*
 * GET /metrics: Prometheus text exposition format (version 0.0.4) of this
 * member: Raft state, term and indexes, commit latency of the proposals this
 * member made as leader, FSM apply time, the directory's contents by state,
 * the scheduler's counters (sched_glue.c), and the migration outcome counters
 * and histograms.
 *
 * Two kinds of figures (docs/operator-guide.md, "Metrics"): those of this
 * member's process (dvs_commit_seconds, dvs_fsm_apply_seconds, the
 * scheduler's, which only the leader moves), and those read from the FSM
 * (dvs_nodes, dvs_endpoints, dvs_migrations*, dvs_migration_*_seconds,
 * dvs_events_*), which are the same on every member for the same applied
 * index, survive restarts and leader changes, and so can be scraped from
 * any one member.
 */
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common/util.h"
#include "common/promtext.h"
#include "dvs.h"
#include "manager/rest.h"

/* Count the elements of ARR by their string field FIELD, and print one sample
 * per value seen (plus zero samples for the values in ALWAYS). */
static void count_by(struct prom_buf *b, const char *metric, json_t *arr, const char *field,
                     const char *const *always)
{
    json_t *counts = json_object();
    for (const char *const *a = always; a && *a; a++)
        json_object_set_new(counts, *a, json_integer(0));
    size_t i;
    json_t *o;
    json_array_foreach(arr, i, o)
    {
        const char *v = json_string_value(json_object_get(o, field));
        if (!v)
            continue;
        json_int_t c = json_integer_value(json_object_get(counts, v));
        json_object_set_new(counts, v, json_integer(c + 1));
    }
    const char *k;
    json_t *v;
    json_object_foreach(counts, k, v)
    {
        prom_put(b, "%s{%s=\"", metric, field);
        prom_label(b, k);
        prom_put(b, "\"} %lld\n", (long long)json_integer_value(v));
    }
    json_decref(counts);
}

static long long stat_of(json_t *stats, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static long long stat_of(json_t *stats, const char *fmt, ...)
{
    char key[160];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(key, sizeof(key), fmt, ap);
    va_end(ap);
    return (long long)json_integer_value(json_object_get(stats, key));
}

/* One histogram from the FSM's counters (fsm.h: NAME_bucket|PREFIX LE_MS ...). */
static void fsm_histogram(struct prom_buf *b, json_t *stats, const char *metric, const char *name,
                          const char *label, const char *value, const int64_t *le,
                          unsigned n)
{
    char lab[96] = "", prefix[64] = "", sel[96] = "";
    if (label) {
        snprintf(lab, sizeof(lab), "%s=\"%s\",", label, value);
        snprintf(sel, sizeof(sel), "{%s=\"%s\"}", label, value);
        snprintf(prefix, sizeof(prefix), "%s/", value);
    }
    for (unsigned i = 0; i < n; i++)
        prom_put(b, "%s_bucket{%sle=\"%g\"} %lld\n", metric, lab, (double)le[i] / 1000.0,
            stat_of(stats, "%s_bucket|%s%lld", name, prefix, (long long)le[i]));
    long long count = stat_of(stats, "%s_count|%s", name, label ? value : "");
    prom_put(b, "%s_bucket{%sle=\"+Inf\"} %lld\n", metric, lab, count);
    prom_put(b, "%s_sum%s %.3f\n", metric, sel,
        (double)stat_of(stats, "%s_sum_ms|%s", name, label ? value : "") / 1000.0);
    prom_put(b, "%s_count%s %lld\n", metric, sel, count);
}

/* The counters apply keeps (fsm.h), and the event log's size. */
static void migration_stats(struct prom_buf *b, struct mgr *m)
{
    static const char *const reasons[] = {"overload", "energy", "maintenance", "manual",
                                          "rebalance"};
    static const char *const outcomes[] = {"committed", "aborted"};
    json_t *stats = mgr_fsm_stats(m->fsm);
    if (!stats)
        return; /* out of memory: leave them out rather than show zeros */

    prom_put(b, "# HELP dvs_migrations_total Migrations finished, by reason and outcome (from the "
           "replicated log: the same on every member).\n"
           "# TYPE dvs_migrations_total counter\n");
    for (unsigned r = 0; r < 5; r++)
        for (unsigned o = 0; o < 2; o++)
            prom_put(b, "dvs_migrations_total{reason=\"%s\",outcome=\"%s\"} %lld\n", reasons[r],
                outcomes[o], stat_of(stats, "migrations_total|%s/%s", reasons[r], outcomes[o]));

    prom_put(b, "# HELP dvs_migration_downtime_seconds Downtime of committed migrations, as "
           "reported by the source agent.\n"
           "# TYPE dvs_migration_downtime_seconds histogram\n");
    fsm_histogram(b, stats, "dvs_migration_downtime_seconds", "downtime", NULL, NULL,
                  mgr_fsm_downtime_le_ms, MGR_FSM_DOWNTIME_BUCKETS);

    prom_put(b, "# HELP dvs_migration_duration_seconds Time from a migration's record to its "
           "commit or abort, by outcome.\n"
           "# TYPE dvs_migration_duration_seconds histogram\n");
    for (unsigned o = 0; o < 2; o++)
        fsm_histogram(b, stats, "dvs_migration_duration_seconds", "duration", "outcome",
                      outcomes[o], mgr_fsm_duration_le_ms, MGR_FSM_DURATION_BUCKETS);
    json_decref(stats);

    prom_put(b, "# HELP dvs_events_retention Events the replicated event log keeps.\n"
           "# TYPE dvs_events_retention gauge\ndvs_events_retention %lld\n",
        (long long)mgr_fsm_events_retention(m->fsm));
    prom_put(b, "# HELP dvs_events_index FSM index of the newest event (X-Dvs-Index of "
           "/v1/events).\n# TYPE dvs_events_index gauge\ndvs_events_index %llu\n",
        (unsigned long long)mgr_fsm_table_index(m->fsm, MGR_T_EVENTS));
}

void rest_get_metrics(struct api_req *req, void *data)
{
    struct mgr *m = data;
    struct prom_buf b = {.p = xmalloc(4096), .cap = 4096};
    unsigned short st = raft_state(&m->raft);

    prom_put(&b, "# HELP dvs_raft_state 1 for the state this member is in.\n"
            "# TYPE dvs_raft_state gauge\n");
    static const char *const states[] = {"unavailable", "follower", "candidate", "leader"};
    for (unsigned i = 0; i < 4; i++)
        prom_put(&b, "dvs_raft_state{state=\"%s\"} %d\n", states[i], st == i);
    prom_put(&b, "# HELP dvs_raft_term Current Raft term.\n# TYPE dvs_raft_term gauge\n"
            "dvs_raft_term %llu\n",
        (unsigned long long)m->raft.current_term);
    prom_put(&b, "# HELP dvs_raft_commit_index Raft commit index.\n"
            "# TYPE dvs_raft_commit_index gauge\ndvs_raft_commit_index %llu\n",
        (unsigned long long)m->raft.commit_index);
    prom_put(&b, "# HELP dvs_raft_last_applied Last Raft index applied to the FSM.\n"
            "# TYPE dvs_raft_last_applied gauge\ndvs_raft_last_applied %llu\n",
        (unsigned long long)raft_last_applied(&m->raft));
    prom_put(&b, "# HELP dvs_fsm_index Commands applied to the FSM (X-Dvs-Index).\n"
            "# TYPE dvs_fsm_index gauge\ndvs_fsm_index %llu\n",
        (unsigned long long)mgr_fsm_index(m->fsm));
    prom_put(&b, "# HELP dvs_raft_members Members in the Raft configuration.\n"
            "# TYPE dvs_raft_members gauge\ndvs_raft_members %u\n",
        m->raft.configuration.n);

    prom_put(&b, "# HELP dvs_commit_seconds Time from a proposal to its application on the "
            "leader.\n# TYPE dvs_commit_seconds histogram\n");
    for (unsigned i = 0; i < MGR_COMMIT_BUCKETS; i++)
        prom_put(&b, "dvs_commit_seconds_bucket{le=\"%g\"} %llu\n", mgr_commit_bucket_le[i],
            (unsigned long long)m->commit_hist[i]);
    prom_put(&b, "dvs_commit_seconds_bucket{le=\"+Inf\"} %llu\n",
        (unsigned long long)m->commit_count);
    prom_put(&b, "dvs_commit_seconds_sum %.9f\ndvs_commit_seconds_count %llu\n", m->commit_sum_s,
        (unsigned long long)m->commit_count);
    prom_put(&b, "# HELP dvs_proposals_failed_total Proposals that did not commit (lost "
            "leadership, shutdown).\n# TYPE dvs_proposals_failed_total counter\n"
            "dvs_proposals_failed_total %llu\n",
        (unsigned long long)m->proposals_failed);

    json_t *nodes = mgr_fsm_nodes(m->fsm);
    static const char *const node_states[] = {"up", "down", "draining", "drained", "standby",
                                              NULL};
    prom_put(&b, "# HELP dvs_nodes Nodes by state.\n# TYPE dvs_nodes gauge\n");
    count_by(&b, "dvs_nodes", nodes, "state", node_states);
    json_decref(nodes);

    json_t *eps = mgr_fsm_endpoints(m->fsm);
    static const char *const ep_states[] = {"pending", "running", "migrating", "failed",
                                            "stopped", NULL};
    prom_put(&b, "# HELP dvs_endpoints Endpoints by state.\n# TYPE dvs_endpoints gauge\n");
    count_by(&b, "dvs_endpoints", eps, "state", ep_states);
    json_decref(eps);

    json_t *migs = mgr_fsm_migrations(m->fsm);
    prom_put(&b, "# HELP dvs_migrations Migration records by phase.\n"
            "# TYPE dvs_migrations gauge\n");
    static const char *const phases[] = {"planned", "precopy", "frozen", "committed",
                                         "aborted", NULL};
    count_by(&b, "dvs_migrations", migs, "phase", phases);
    prom_put(&b, "# HELP dvs_migrations_by_reason Migration records by reason.\n"
            "# TYPE dvs_migrations_by_reason gauge\n");
    static const char *const reasons[] = {"overload", "energy", "maintenance", "manual",
                                          "rebalance", NULL};
    count_by(&b, "dvs_migrations_by_reason", migs, "reason", reasons);
    json_decref(migs);

    prom_put(&b, "# HELP dvs_fsm_apply_seconds Time this member took to apply each log entry to "
            "its FSM.\n# TYPE dvs_fsm_apply_seconds histogram\n");
    for (unsigned i = 0; i < MGR_APPLY_BUCKETS; i++)
        prom_put(&b, "dvs_fsm_apply_seconds_bucket{le=\"%g\"} %llu\n", mgr_apply_bucket_le[i],
            (unsigned long long)m->apply_hist[i]);
    prom_put(&b, "dvs_fsm_apply_seconds_bucket{le=\"+Inf\"} %llu\n",
        (unsigned long long)m->apply_count);
    prom_put(&b, "dvs_fsm_apply_seconds_sum %.9f\ndvs_fsm_apply_seconds_count %llu\n",
        m->apply_sum_s, (unsigned long long)m->apply_count);

    migration_stats(&b, m);

    char *sched = mgr_sched_metrics(m);
    prom_put(&b, "%s", sched);
    free(sched);

    prom_put(&b, "# HELP dvs_blocking_queries_parked Blocking queries waiting on this member.\n"
            "# TYPE dvs_blocking_queries_parked gauge\ndvs_blocking_queries_parked %u\n",
        mgr_watches_count(m));
    api_reply_text(req, 200, "text/plain; version=0.0.4", b.p);
    free(b.p);
}
