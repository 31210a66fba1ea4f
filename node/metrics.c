/*
 * The agent's /metrics (Prometheus text format 0.0.4), served with
 * --metrics-addr H:P (off by default) by the REST layer's HTTP server
 * (api/http.c) on the agent's own libuv loop, so the handler reads the
 * loop's state (instances, load samples) without locks.
 *
 * What it shows: the load the agent last sampled from /proc (node totals and
 * per service), instances by state, service restarts, heartbeat failures,
 * and the migrations this agent took part in, as source or destination, by
 * outcome, with bytes sent and received and the downtime histogram. The
 * migration figures come from node_metrics_migration_done(), which the
 * migration code (migrate.c) calls once per migration when it ends.
 *
 * Counters live from the agent's start: a restarted agent starts from zero,
 * as Prometheus expects of a process's counters.
 */
#include <errno.h>
#include <inttypes.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "api/http.h"
#include "common/log.h"
#include "common/util.h"
#include "common/promtext.h"
#include "node/agent.h"

#define COMP NODE_COMP_AGENT

/* Upper bounds (ms) of the downtime histogram; the manager uses the same. */
static const int64_t downtime_le_ms[] = {1, 5, 10, 25, 50, 100, 250, 500, 1000, 2500, 5000, 10000};
#define DOWNTIME_BUCKETS (sizeof(downtime_le_ms) / sizeof(downtime_le_ms[0]))
/* And of the duration histogram. */
static const int64_t duration_le_ms[] = {100,   250,   500,    1000,   2500,   5000,
                                         10000, 30000, 60000, 120000, 300000, 600000};
#define DURATION_BUCKETS (sizeof(duration_le_ms) / sizeof(duration_le_ms[0]))

enum { ROLE_SOURCE, ROLE_DESTINATION, ROLES };
enum { OUT_COMMITTED, OUT_ABORTED, OUTCOMES };
static const char *const role_names[ROLES] = {"source", "destination"};
static const char *const outcome_names[OUTCOMES] = {"committed", "aborted"};

struct node_metrics {
    struct api_server *server;

    /* Loop thread. */
    uint64_t restarts;
    uint64_t migrations[ROLES][OUTCOMES];
    uint64_t bytes_sent, bytes_received;
    uint64_t downtime_hist[DOWNTIME_BUCKETS];
    uint64_t downtime_count;
    int64_t downtime_sum_ms;
    uint64_t duration_hist[ROLES][DURATION_BUCKETS];
    uint64_t duration_count[ROLES];
    int64_t duration_sum_ms[ROLES];

    /* The heartbeat thread's. */
    atomic_uint_fast64_t heartbeats_ok, heartbeats_failed;
};

/* ------------------------------------------------------------------------ */
/* Hooks                                                                      */
/* ------------------------------------------------------------------------ */

void node_metrics_migration_done(struct node *n, const struct node_mig_stats *st)
{
    struct node_metrics *mx = n->metrics;
    if (!mx || !st)
        return;
    int role = st->role == NODE_MIG_DESTINATION ? ROLE_DESTINATION : ROLE_SOURCE;
    int out = st->committed ? OUT_COMMITTED : OUT_ABORTED;
    mx->migrations[role][out]++;
    mx->bytes_sent += st->bytes_sent;
    mx->bytes_received += st->bytes_received;
    /* Downtime is the source's to measure (freeze to release), and only
     * means something for a migration that committed. */
    if (role == ROLE_SOURCE && st->committed && st->downtime_ms >= 0) {
        for (size_t i = 0; i < DOWNTIME_BUCKETS; i++)
            if (st->downtime_ms <= downtime_le_ms[i])
                mx->downtime_hist[i]++;
        mx->downtime_count++;
        mx->downtime_sum_ms += st->downtime_ms;
    }
    if (st->duration_ms >= 0) {
        for (size_t i = 0; i < DURATION_BUCKETS; i++)
            if (st->duration_ms <= duration_le_ms[i])
                mx->duration_hist[role][i]++;
        mx->duration_count[role]++;
        mx->duration_sum_ms[role] += st->duration_ms;
    }
}

void node_metrics_restart(struct node *n)
{
    if (n->metrics)
        n->metrics->restarts++;
}

void node_metrics_heartbeat(struct node *n, bool ok)
{
    if (!n->metrics)
        return;
    if (ok)
        atomic_fetch_add(&n->metrics->heartbeats_ok, 1);
    else
        atomic_fetch_add(&n->metrics->heartbeats_failed, 1);
}

/* ------------------------------------------------------------------------ */
/* The exposition                                                             */
/* ------------------------------------------------------------------------ */

static void family(struct prom_buf *b, const char *name, const char *type, const char *help)
{
    prom_put(b, "# HELP %s %s\n# TYPE %s %s\n", name, help, name, type);
}

static const char *const inst_state_names[] = {
    [INST_UNDECIDED] = "undecided", [INST_STARTING] = "starting", [INST_RESTORING] = "restoring",
    [INST_SERVING] = "serving",     [INST_FROZEN] = "frozen",     [INST_MOVED] = "moved",
    [INST_STOPPING] = "stopping",   [INST_DOWN] = "down",         [INST_FAILED] = "failed",
};
#define INST_STATES (sizeof(inst_state_names) / sizeof(inst_state_names[0]))

static void on_get_metrics(struct api_req *req, void *data)
{
    struct node *n = data;
    struct node_metrics *mx = n->metrics;
    struct prom_buf b = {.p = xmalloc(4096), .cap = 4096};

    pthread_mutex_lock(&n->mu);
    struct node_load_figures load = n->load;
    bool registered = n->registered;
    pthread_mutex_unlock(&n->mu);

    family(&b, "dvs_node_info", "gauge", "The agent's identity (always 1).");
    prom_put(&b, "dvs_node_info{node=\"");
    prom_label(&b, n->cfg.id);
    unsigned v = dvs_version();
    prom_put(&b, "\",version=\"%u.%u.%u\"} 1\n", (v >> 16) & 0xff, (v >> 8) & 0xff, v & 0xff);
    family(&b, "dvs_node_registered", "gauge",
           "1 when the agent is registered with the manager.");
    prom_put(&b, "dvs_node_registered %d\n", registered ? 1 : 0);
    family(&b, "dvs_node_cpu_capacity_cores", "gauge", "CPU capacity declared to the manager.");
    prom_put(&b, "dvs_node_cpu_capacity_cores %g\n", n->cpu_capacity);
    family(&b, "dvs_node_memory_capacity_bytes", "gauge",
           "Memory capacity declared to the manager.");
    prom_put(&b, "dvs_node_memory_capacity_bytes %" PRIu64 "\n", n->mem_capacity);
    family(&b, "dvs_node_cpu_used_cores", "gauge",
           "CPU in use at the last load sample (/proc/stat; the services' own when --cpu "
           "is set), as sent in heartbeats.");
    prom_put(&b, "dvs_node_cpu_used_cores %g\n", load.valid ? load.cpu_used : 0.0);
    family(&b, "dvs_node_memory_used_bytes", "gauge",
           "Memory in use at the last load sample (/proc/meminfo; the services' RSS when "
           "--mem is set), as sent in heartbeats.");
    prom_put(&b, "dvs_node_memory_used_bytes %.0f\n", load.valid ? load.mem_used : 0.0);
    family(&b, "dvs_node_requests_per_second", "gauge",
           "Requests per second the services reported at the last load sample.");
    prom_put(&b, "dvs_node_requests_per_second %g\n", load.valid ? load.rps : 0.0);

    uint64_t by_state[INST_STATES] = {0};
    for (struct node_instance *i = n->instances; i; i = i->next)
        if ((size_t)i->state < INST_STATES)
            by_state[i->state]++;
    family(&b, "dvs_node_instances", "gauge", "Service instances on this agent, by state.");
    for (size_t s = 0; s < INST_STATES; s++)
        prom_put(&b, "dvs_node_instances{state=\"%s\"} %" PRIu64 "\n", inst_state_names[s],
            by_state[s]);

    family(&b, "dvs_node_service_cpu_cores", "gauge",
           "CPU each running service used at the last sample (/proc/PID/stat).");
    for (struct node_instance *i = n->instances; i; i = i->next) {
        if (!i->have_sample || i->pid == 0)
            continue;
        prom_put(&b, "dvs_node_service_cpu_cores{endpoint=\"");
        prom_label(&b, i->endpoint);
        prom_put(&b, "\"} %g\n", i->cpu_cores);
    }
    family(&b, "dvs_node_service_memory_bytes", "gauge",
           "Resident memory of each running service at the last sample.");
    for (struct node_instance *i = n->instances; i; i = i->next) {
        if (!i->have_sample || i->pid == 0)
            continue;
        prom_put(&b, "dvs_node_service_memory_bytes{endpoint=\"");
        prom_label(&b, i->endpoint);
        prom_put(&b, "\"} %" PRIu64 "\n", i->rss);
    }

    family(&b, "dvs_node_service_restarts_total", "counter",
           "Services restarted after a crash.");
    prom_put(&b, "dvs_node_service_restarts_total %" PRIu64 "\n", mx->restarts);
    family(&b, "dvs_node_heartbeats_total", "counter", "Heartbeats the manager accepted.");
    prom_put(&b, "dvs_node_heartbeats_total %" PRIuFAST64 "\n", atomic_load(&mx->heartbeats_ok));
    family(&b, "dvs_node_heartbeat_failures_total", "counter",
           "Heartbeats that failed (no member reachable, refused, timed out).");
    prom_put(&b, "dvs_node_heartbeat_failures_total %" PRIuFAST64 "\n",
        atomic_load(&mx->heartbeats_failed));

    family(&b, "dvs_node_migrations_total", "counter",
           "Migrations this agent took part in, by role and outcome.");
    for (int r = 0; r < ROLES; r++)
        for (int o = 0; o < OUTCOMES; o++)
            prom_put(&b, "dvs_node_migrations_total{role=\"%s\",outcome=\"%s\"} %" PRIu64 "\n",
                role_names[r], outcome_names[o], mx->migrations[r][o]);
    family(&b, "dvs_node_migration_bytes_sent_total", "counter",
           "Arena bytes sent to destinations.");
    prom_put(&b, "dvs_node_migration_bytes_sent_total %" PRIu64 "\n", mx->bytes_sent);
    family(&b, "dvs_node_migration_bytes_received_total", "counter",
           "Arena bytes received from sources.");
    prom_put(&b, "dvs_node_migration_bytes_received_total %" PRIu64 "\n", mx->bytes_received);

    family(&b, "dvs_node_migration_downtime_seconds", "histogram",
           "Downtime of the migrations this agent committed as source.");
    for (size_t i = 0; i < DOWNTIME_BUCKETS; i++)
        prom_put(&b, "dvs_node_migration_downtime_seconds_bucket{le=\"%g\"} %" PRIu64 "\n",
            (double)downtime_le_ms[i] / 1000.0, mx->downtime_hist[i]);
    prom_put(&b, "dvs_node_migration_downtime_seconds_bucket{le=\"+Inf\"} %" PRIu64 "\n",
        mx->downtime_count);
    prom_put(&b, "dvs_node_migration_downtime_seconds_sum %.3f\n",
        (double)mx->downtime_sum_ms / 1000.0);
    prom_put(&b, "dvs_node_migration_downtime_seconds_count %" PRIu64 "\n", mx->downtime_count);

    family(&b, "dvs_node_migration_duration_seconds", "histogram",
           "How long the migrations this agent took part in ran, by role.");
    for (int r = 0; r < ROLES; r++) {
        for (size_t i = 0; i < DURATION_BUCKETS; i++)
            prom_put(&b, "dvs_node_migration_duration_seconds_bucket{role=\"%s\",le=\"%g\"} %" PRIu64
                    "\n",
                role_names[r], (double)duration_le_ms[i] / 1000.0, mx->duration_hist[r][i]);
        prom_put(&b, "dvs_node_migration_duration_seconds_bucket{role=\"%s\",le=\"+Inf\"} %" PRIu64
                "\n",
            role_names[r], mx->duration_count[r]);
        prom_put(&b, "dvs_node_migration_duration_seconds_sum{role=\"%s\"} %.3f\n", role_names[r],
            (double)mx->duration_sum_ms[r] / 1000.0);
        prom_put(&b, "dvs_node_migration_duration_seconds_count{role=\"%s\"} %" PRIu64 "\n",
            role_names[r], mx->duration_count[r]);
    }

    api_reply_text(req, 200, "text/plain; version=0.0.4", b.p);
    free(b.p);
}

static const struct api_route metrics_routes[] = {
    {"GET", "/metrics", on_get_metrics},
    {NULL},
};

/* ------------------------------------------------------------------------ */
/* Life cycle                                                                 */
/* ------------------------------------------------------------------------ */

int node_metrics_init(struct node *n)
{
    n->metrics = calloc(1, sizeof(*n->metrics));
    if (!n->metrics)
        return -ENOMEM;
    atomic_init(&n->metrics->heartbeats_ok, 0);
    atomic_init(&n->metrics->heartbeats_failed, 0);
    return 0;
}

int node_metrics_start(struct node *n)
{
    if (!n->cfg.metrics_addr || !n->metrics)
        return 0;
    char host[256];
    uint16_t port;
    int rv = node_split_hostport(n->cfg.metrics_addr, host, sizeof(host), &port);
    if (rv != 0) {
        log_error(COMP, "invalid --metrics-addr \"%s\": expected HOST:PORT",
                  n->cfg.metrics_addr);
        return -EINVAL;
    }
    struct api_server_config cfg = {.host = host, .port = port, .max_connections = 64};
    rv = api_server_start(&n->loop, &cfg, metrics_routes, n, &n->metrics->server);
    if (rv != 0) {
        log_error(COMP, "cannot serve metrics on %s: %s", n->cfg.metrics_addr, strerror(-rv));
        return rv;
    }
    log_info(COMP, "node=%s metrics on http://%s/metrics", n->cfg.id, n->cfg.metrics_addr);
    return 0;
}

void node_metrics_stop(struct node *n)
{
    if (n->metrics && n->metrics->server) {
        api_server_stop(n->metrics->server, NULL, NULL);
        n->metrics->server = NULL;
    }
}

void node_metrics_free(struct node *n)
{
    free(n->metrics);
    n->metrics = NULL;
}
