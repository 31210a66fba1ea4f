/*
 * GET /metrics: Prometheus text exposition format (version 0.0.4) of this
 * member: Raft state, term and indexes, commit latency of the proposals this
 * member made as leader, and the directory's contents by state.
 */
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common/util.h"
#include "dvs.h"
#include "manager/rest.h"

struct buf {
    char *p;
    size_t len, cap;
};

static void put(struct buf *b, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static void put(struct buf *b, const char *fmt, ...)
{
    for (;;) {
        va_list ap;
        va_start(ap, fmt);
        int n = vsnprintf(b->p + b->len, b->cap - b->len, fmt, ap);
        va_end(ap);
        if (n >= 0 && (size_t)n < b->cap - b->len) {
            b->len += (size_t)n;
            return;
        }
        b->cap = b->cap * 2 + (size_t)(n > 0 ? n : 64);
        b->p = xrealloc(b->p, b->cap);
    }
}

/* Count the elements of ARR by their string field FIELD, and print one sample
 * per value seen (plus zero samples for the values in ALWAYS). */
static void count_by(struct buf *b, const char *metric, json_t *arr, const char *field,
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
        put(b, "%s{%s=\"%s\"} %lld\n", metric, field, k, (long long)json_integer_value(v));
    json_decref(counts);
}

void rest_get_metrics(struct api_req *req, void *data)
{
    struct mgr *m = data;
    struct buf b = {.p = xmalloc(4096), .cap = 4096};
    unsigned short st = raft_state(&m->raft);

    put(&b, "# HELP dvs_raft_state 1 for the state this member is in.\n"
            "# TYPE dvs_raft_state gauge\n");
    static const char *const states[] = {"unavailable", "follower", "candidate", "leader"};
    for (unsigned i = 0; i < 4; i++)
        put(&b, "dvs_raft_state{state=\"%s\"} %d\n", states[i], st == i);
    put(&b, "# HELP dvs_raft_term Current Raft term.\n# TYPE dvs_raft_term gauge\n"
            "dvs_raft_term %llu\n",
        (unsigned long long)m->raft.current_term);
    put(&b, "# HELP dvs_raft_commit_index Raft commit index.\n"
            "# TYPE dvs_raft_commit_index gauge\ndvs_raft_commit_index %llu\n",
        (unsigned long long)m->raft.commit_index);
    put(&b, "# HELP dvs_raft_last_applied Last Raft index applied to the FSM.\n"
            "# TYPE dvs_raft_last_applied gauge\ndvs_raft_last_applied %llu\n",
        (unsigned long long)raft_last_applied(&m->raft));
    put(&b, "# HELP dvs_fsm_index Commands applied to the FSM (X-Dvs-Index).\n"
            "# TYPE dvs_fsm_index gauge\ndvs_fsm_index %llu\n",
        (unsigned long long)mgr_fsm_index(m->fsm));
    put(&b, "# HELP dvs_raft_members Members in the Raft configuration.\n"
            "# TYPE dvs_raft_members gauge\ndvs_raft_members %u\n",
        m->raft.configuration.n);

    put(&b, "# HELP dvs_commit_seconds Time from a proposal to its application on the "
            "leader.\n# TYPE dvs_commit_seconds histogram\n");
    for (unsigned i = 0; i < MGR_COMMIT_BUCKETS; i++)
        put(&b, "dvs_commit_seconds_bucket{le=\"%g\"} %llu\n", mgr_commit_bucket_le[i],
            (unsigned long long)m->commit_hist[i]);
    put(&b, "dvs_commit_seconds_bucket{le=\"+Inf\"} %llu\n",
        (unsigned long long)m->commit_count);
    put(&b, "dvs_commit_seconds_sum %.9f\ndvs_commit_seconds_count %llu\n", m->commit_sum_s,
        (unsigned long long)m->commit_count);
    put(&b, "# HELP dvs_proposals_failed_total Proposals that did not commit (lost "
            "leadership, shutdown).\n# TYPE dvs_proposals_failed_total counter\n"
            "dvs_proposals_failed_total %llu\n",
        (unsigned long long)m->proposals_failed);

    json_t *nodes = mgr_fsm_nodes(m->fsm);
    static const char *const node_states[] = {"up", "down", "draining", "drained", "standby",
                                              NULL};
    put(&b, "# HELP dvs_nodes Nodes by state.\n# TYPE dvs_nodes gauge\n");
    count_by(&b, "dvs_nodes", nodes, "state", node_states);
    json_decref(nodes);

    json_t *eps = mgr_fsm_endpoints(m->fsm);
    static const char *const ep_states[] = {"pending", "running", "migrating", "failed",
                                            "stopped", NULL};
    put(&b, "# HELP dvs_endpoints Endpoints by state.\n# TYPE dvs_endpoints gauge\n");
    count_by(&b, "dvs_endpoints", eps, "state", ep_states);
    json_decref(eps);

    json_t *migs = mgr_fsm_migrations(m->fsm);
    put(&b, "# HELP dvs_migrations Migration records by phase.\n"
            "# TYPE dvs_migrations gauge\n");
    static const char *const phases[] = {"planned", "precopy", "frozen", "committed",
                                         "aborted", NULL};
    count_by(&b, "dvs_migrations", migs, "phase", phases);
    put(&b, "# HELP dvs_migrations_by_reason Migration records by reason.\n"
            "# TYPE dvs_migrations_by_reason gauge\n");
    static const char *const reasons[] = {"overload", "energy", "maintenance", "manual",
                                          "rebalance", NULL};
    count_by(&b, "dvs_migrations_by_reason", migs, "reason", reasons);
    json_decref(migs);

    char *sched = mgr_sched_metrics(m);
    put(&b, "%s", sched);
    free(sched);

    put(&b, "# HELP dvs_blocking_queries_parked Blocking queries waiting on this member.\n"
            "# TYPE dvs_blocking_queries_parked gauge\ndvs_blocking_queries_parked %u\n",
        mgr_watches_count(m));
    api_reply_text(req, 200, "text/plain; version=0.0.4", b.p);
    free(b.p);
}
