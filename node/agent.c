/*
 * dvs-node serve: start-up, the orders, and shut-down (agent.h has the map).
 *
 * Start-up order matters for "an agent restart must not orphan or duplicate
 * services" (docs/migration.md, "Agent restart"):
 *
 *   1. the data-dir lock: two agents on one directory would each adopt the
 *      other's services;
 *   2. the records of the previous run: services still alive become
 *      undecided instances, watched from now on;
 *   3. the control socket: those services reconnect to it within a second
 *      and say hello (their state, their address);
 *   4. the transfer port, then the manager threads: registration, then the
 *      orders. The first orders decide every undecided instance; until then
 *      the agent starts nothing and kills nothing.
 *
 * Shut-down (SIGTERM, SIGINT): migrations in flight are aborted (bounded by
 * --stop-timeout; a frozen source waits for the committed abort to unfreeze
 * its service), then the agent exits and leaves its services running for
 * the next agent to adopt, unless --stop-services-on-exit.
 */
#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <limits.h>
#include <signal.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <unistd.h>

#include "common/log.h"
#include "common/opts.h"
#include "common/util.h"
#include "node/agent.h"
#include "node/dirty.h"

#define COMP NODE_COMP_AGENT
#define DEFAULT_MANAGER "http://127.0.0.1:7001"

/* ------------------------------------------------------------------------ */
/* Options (STYLE.md 15: one table drives flags, config file, --help).       */
/* ------------------------------------------------------------------------ */

#define OFF(f) offsetof(struct node_settings, f)

static const struct opt_def serve_opts[] = {
    {"id", OPT_STRING, NULL, 0, 0, OFF(id), "NODE",
     "this node's id, e.g. n1 ([a-z0-9_.-], 1-63 chars)", true, false},
    {"manager", OPT_STRING, NULL, 0, 0, OFF(manager), "URL[,URL]",
     "manager members' REST URLs (default: $DVS_MANAGER, else " DEFAULT_MANAGER ")", false,
     false},
    {"listen", OPT_HOSTPORT, NULL, 0, 0, OFF(listen), "IP:PORT",
     "this node's address: registered with the manager, the transfer port listens there "
     "(unless --transfer-addr) and services listen on its IP",
     true, false},
    {"data-dir", OPT_STRING, NULL, 0, 0, OFF(data_dir), "DIR",
     "directory for the service records, logs and the control socket (created if missing)",
     true, false},
    {"cpu", OPT_DOUBLE, "0", 0, 4096, OFF(cpu), "CORES",
     "capacity declared to the manager, in cores; 0 measures (online CPUs)", false, false},
    {"mem", OPT_SIZE, "0", 0, 1.0 * (1ull << 50), OFF(mem), "BYTES",
     "capacity declared to the manager; 0 measures (MemTotal)", false, false},
    {"transfer-addr", OPT_HOSTPORT, NULL, 0, 0, OFF(transfer_addr), "IP:PORT",
     "where other agents connect to send an arena (default: --listen)", false, false},
    {"heartbeat-interval", OPT_DURATION, "1s", 100, 60000, OFF(heartbeat_interval_ms),
     "DURATION", "time between heartbeats (keep well below the manager's --node-ttl)", false,
     false},
    {"orders-wait", OPT_DURATION, "30s", 1000, 600000, OFF(orders_wait_ms), "DURATION",
     "how long one blocking query on the orders may wait", false, false},
    {"request-timeout", OPT_DURATION, "10s", 500, 300000, OFF(request_timeout_ms), "DURATION",
     "bound on one call to the manager, retries and failover included", false, false},
    {"start-timeout", OPT_DURATION, "30s", 500, 600000, OFF(start_timeout_ms), "DURATION",
     "a service that has not opened its endpoint by then is killed", false, false},
    {"stop-timeout", OPT_DURATION, "5s", 100, 600000, OFF(stop_timeout_ms), "DURATION",
     "a service told to stop is killed after this; also bounds the agent's own shut-down",
     false, false},
    {"freeze-timeout", OPT_DURATION, "15s", 100, 600000, OFF(freeze_timeout_ms), "DURATION",
     "how long a service may take to finish its request in progress and freeze", false,
     false},
    {"transfer-timeout", OPT_DURATION, "30s", 1000, 3600000, OFF(transfer_timeout_ms),
     "DURATION",
     "a migration whose transfer makes no progress for this long is aborted", false, false},
    {"hold", OPT_DURATION, "1s", 1, 600000, OFF(hold_ms), "DURATION",
     "a frozen service holds a request this long before answering \"migrating\"", false,
     false},
    {"linger", OPT_DURATION, "5s", 0, 600000, OFF(linger_ms), "DURATION",
     "a moved service keeps answering \"moved\" this long before it exits", false, false},
    {"restart-backoff", OPT_DURATION, "200ms", 10, 600000, OFF(restart_backoff_ms),
     "DURATION", "delay before restarting a crashed service; doubles with each crash",
     false, false},
    {"restart-backoff-max", OPT_DURATION, "10s", 10, 3600000, OFF(restart_backoff_max_ms),
     "DURATION", "upper bound of the restart delay", false, false},
    {"restart-limit", OPT_INT, "5", 1, 1000, OFF(restart_limit), "N",
     "more crashes than this within --restart-window: reported failed, not restarted", false,
     false},
    {"restart-window", OPT_DURATION, "60s", 1000, 86400000, OFF(restart_window_ms), "DURATION",
     "the window --restart-limit counts crashes in", false, false},
    {"stop-services-on-exit", OPT_BOOL, "false", 0, 0, OFF(stop_services_on_exit), NULL,
     "stop the services when the agent exits (default: leave them running for the next "
     "agent to adopt)",
     false, false},
    {"dirty-tracking", OPT_STRING, "auto", 0, 0, OFF(dirty_tracking), "METHOD",
     "how pre-copy finds the pages a service wrote: auto (uffd where the kernel has async "
     "write-protect, else mprotect), uffd, mprotect, or none (stop-and-copy)",
     false, false},
    {"downtime-budget", OPT_DURATION, "20ms", 1, 60000, OFF(downtime_budget_ms), "DURATION",
     "pre-copy rounds continue until the rest is estimated to copy within this", false,
     false},
    {"precopy-max-rounds", OPT_INT, "5", 1, 100, OFF(precopy_max_rounds), "N",
     "after this many rounds without fitting the budget, throttle the service "
     "(auto-converge), then stop and copy",
     false, false},
    {"max-bandwidth", OPT_SIZE, "0", 0, 1.0 * (1ull << 40), OFF(max_bandwidth), "BYTES",
     "cap on one migration's transfer rate, bytes per second; 0 = unlimited", false, false},
    {"token-file", OPT_STRING, NULL, 0, 0, OFF(token_file), "FILE",
     "file holding the agent token the manager was given (--agent-token-file), sent with "
     "every call to it",
     false, false},
    {"ca-file", OPT_STRING, NULL, 0, 0, OFF(ca_file), "FILE",
     "PEM CA certificates to verify https:// managers with (default: $DVS_CA_FILE, else "
     "the system's)",
     false, false},
    {"config", OPT_STRING, NULL, 0, 0, OFF(config), "FILE",
     "read options from FILE (name = value lines); flags override it", false, true},
    {"log-level", OPT_LOGLEVEL, "info", 0, 0, OFF(log_level), "LEVEL",
     "debug, info, warn or error", false, false},
    {"metrics-addr", OPT_HOSTPORT, NULL, 0, 0, OFF(metrics_addr), "HOST:PORT",
     "serve Prometheus metrics at http://HOST:PORT/metrics (default: off)", false, false},
    {NULL},
};

static void serve_usage(FILE *out)
{
    fprintf(out,
            "Usage: dvs-node serve --id NODE --manager URL[,URL] --listen IP:PORT\n"
            "                      --data-dir DIR [--cpu CORES] [--mem BYTES]\n"
            "                      [--config FILE] [options]\n\n"
            "Run the DVS node agent: register this node with the manager, report its\n"
            "load, run the services placed on it, and migrate them to and from other\n"
            "nodes (see dvs-node(8)).\n\n"
            "'dvs-node serve --print-config [options]' prints a commented config\n"
            "file with every option's default (and the given options set).\n\n"
            "Options (also accepted in the --config file as \"name = value\"):\n");
    opts_usage(serve_opts, out);
}

static bool valid_name(const char *s)
{
    size_t n = strlen(s);
    if (n == 0 || n > DVS_MAX_NAME)
        return false;
    for (size_t i = 0; i < n; i++) {
        char c = s[i];
        bool ok = (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') ||
                  (i > 0 && (c == '_' || c == '.' || c == '-'));
        if (!ok)
            return false;
    }
    return true;
}

int node_split_hostport(const char *s, char *host, size_t hostlen, uint16_t *ret_port)
{
    const char *h = s, *colon;
    size_t hl;
    if (s[0] == '[') {
        const char *close = strchr(s, ']');
        if (!close || close[1] != ':')
            return -EINVAL;
        h = s + 1;
        hl = (size_t)(close - h);
        colon = close + 1;
    } else {
        colon = strrchr(s, ':');
        if (!colon)
            return -EINVAL;
        hl = (size_t)(colon - s);
    }
    if (hl == 0 || hl >= hostlen)
        return -EINVAL;
    int64_t port;
    if (parse_int64(colon + 1, &port) != 0 || port < 0 || port > 65535)
        return -EINVAL;
    memcpy(host, h, hl);
    host[hl] = '\0';
    *ret_port = (uint16_t)port;
    return 0;
}

uint64_t node_next_serial(struct node *n)
{
    return ++n->next_serial;
}

/* ------------------------------------------------------------------------ */
/* The orders                                                                */
/* ------------------------------------------------------------------------ */

static void on_orders(uv_async_t *a)
{
    struct node *n = a->data;
    pthread_mutex_lock(&n->mu);
    json_t *o = n->orders_new;
    uint64_t index = n->orders_new_index;
    n->orders_new = NULL;
    pthread_mutex_unlock(&n->mu);
    if (!o)
        return;
    if (n->stopping) {
        json_decref(o);
        return;
    }
    const char *state = json_string_value(json_object_get(o, "state"));
    log_debug(COMP, "orders index=%" PRIu64 " state=%s endpoints=%zu migrations=%zu", index,
              state ? state : "?", json_array_size(json_object_get(o, "endpoints")),
              json_array_size(json_object_get(o, "migrations")));
    json_decref(n->orders);
    n->orders = o;
    n->orders_index = index;
    /* Migrations first: they claim their endpoints, which the services'
     * reconciliation then leaves alone. */
    node_mig_reconcile(n, o);
    node_inst_reconcile(n, o);
}

static void on_load_timer(uv_timer_t *t)
{
    struct node *n = t->data;
    int64_t now = now_mono_ms();
    double interval = n->load_prev_ms ? (double)(now - n->load_prev_ms) / 1000.0 : 0;
    n->load_prev_ms = now;
    node_inst_sample_load(n, interval);
}

/* ------------------------------------------------------------------------ */
/* Shut-down                                                                 */
/* ------------------------------------------------------------------------ */

static void noop_close(uv_handle_t *h)
{
    (void)h;
}

static void finish_stop(struct node *n)
{
    if (n->finished)
        return;
    n->finished = true;
    /* The threads first: the orders thread must not wake a closed async. */
    node_mgr_stop(n);
    node_metrics_stop(n);
    node_mig_close_all(n);
    node_inst_close_all(n);
    node_ctl_close_all(n);
    uv_close((uv_handle_t *)&n->orders_async, noop_close);
    uv_close((uv_handle_t *)&n->load_timer, noop_close);
    uv_close((uv_handle_t *)&n->stop_timer, noop_close);
    uv_close((uv_handle_t *)&n->sigterm, noop_close);
    uv_close((uv_handle_t *)&n->sigint, noop_close);
    log_info(COMP, "node=%s agent stopped%s", n->cfg.id,
             n->cfg.stop_services_on_exit ? " with its services"
                                          : "; its services keep running");
}

void node_maybe_finish_stop(struct node *n)
{
    if (!n->stopping || n->finished)
        return;
    /* Migrations settled, and their last words to the services (unfreeze,
     * moved) answered: a channel closed under them could lose them. */
    if ((!node_mig_idle(n) || !node_ctl_idle(n)) && !n->stop_deadline_passed)
        return;
    finish_stop(n);
}

static void stop_deadline(uv_timer_t *t)
{
    struct node *n = t->data;
    if (!node_mig_idle(n))
        log_warn(COMP, "node=%s migrations still unresolved at the shut-down deadline; a "
                       "frozen service stays frozen until the next agent settles it",
                 n->cfg.id);
    n->stop_deadline_passed = true;
    finish_stop(n);
}

static void begin_stop(struct node *n, const char *why)
{
    if (n->stopping)
        return;
    n->stopping = true;
    log_info(COMP, "node=%s shutting down (%s)", n->cfg.id, why);
    uv_timer_stop(&n->load_timer);
    node_mig_shutdown(n);
    uv_timer_start(&n->stop_timer, stop_deadline, (uint64_t)n->cfg.stop_timeout_ms, 0);
    node_maybe_finish_stop(n);
}

static void on_signal(uv_signal_t *h, int signum)
{
    begin_stop(h->data, signum == SIGTERM ? "SIGTERM" : "SIGINT");
}

/* ------------------------------------------------------------------------ */
/* Start-up                                                                  */
/* ------------------------------------------------------------------------ */

static int make_dirs(const char *path, char *err, size_t errlen)
{
    char tmp[PATH_MAX];
    if (strlen(path) >= sizeof(tmp)) {
        snprintf(err, errlen, "data directory path is too long");
        return -ENAMETOOLONG;
    }
    snprintf(tmp, sizeof(tmp), "%s", path);
    for (char *p = tmp + 1; *p; p++) {
        if (*p != '/')
            continue;
        *p = '\0';
        if (mkdir(tmp, 0750) != 0 && errno != EEXIST)
            goto fail;
        *p = '/';
    }
    if (mkdir(tmp, 0750) != 0 && errno != EEXIST)
        goto fail;
    return 0;
fail:
    snprintf(err, errlen, "cannot create directory %.900s: %s", tmp, strerror(errno));
    return -errno;
}

static int prepare_data_dir(struct node *n, char *err, size_t errlen)
{
    int rv = make_dirs(n->cfg.data_dir, err, errlen);
    if (rv)
        return rv;
    char real[PATH_MAX];
    if (!realpath(n->cfg.data_dir, real)) {
        snprintf(err, errlen, "data directory %s: %s", n->cfg.data_dir, strerror(errno));
        return -errno;
    }
    snprintf(n->data_dir, sizeof(n->data_dir), "%s", real);
    char sub[PATH_MAX + 32];
    snprintf(sub, sizeof(sub), "%s/services", real);
    if ((rv = make_dirs(sub, err, errlen)) != 0)
        return rv;
    snprintf(sub, sizeof(sub), "%s/log", real);
    if ((rv = make_dirs(sub, err, errlen)) != 0)
        return rv;
    snprintf(n->ctl_path, sizeof(n->ctl_path), "%s/control.sock", real);

    /* One agent per directory: two would adopt each other's services. The
     * lock dies with the process, so a kill -9 never leaves it stale. */
    snprintf(sub, sizeof(sub), "%s/lock", real);
    n->lock_fd = open(sub, O_RDWR | O_CREAT | O_CLOEXEC, 0600);
    if (n->lock_fd < 0) {
        snprintf(err, errlen, "cannot open %.900s: %s", sub, strerror(errno));
        return -errno;
    }
    if (flock(n->lock_fd, LOCK_EX | LOCK_NB) != 0) {
        snprintf(err, errlen, "another dvs-node already runs with --data-dir %.900s", real);
        return -EBUSY;
    }
    char pid[32];
    int len = snprintf(pid, sizeof(pid), "%d\n", (int)getpid());
    if (ftruncate(n->lock_fd, 0) != 0 || pwrite(n->lock_fd, pid, (size_t)len, 0) != len)
        log_warn(COMP, "cannot write the agent's pid to %s", sub);
    return 0;
}

/* A concrete IP address: it is registered, so it must mean one machine. */
static bool concrete_ip(const char *host)
{
    struct in_addr a4;
    struct in6_addr a6;
    if (inet_pton(AF_INET, host, &a4) == 1)
        return a4.s_addr != htonl(INADDR_ANY);
    if (inet_pton(AF_INET6, host, &a6) == 1)
        return !IN6_IS_ADDR_UNSPECIFIED(&a6);
    return false;
}

/* DESIGN.md §4: async uffd write-protect where the kernel has it, else
 * mprotect in the service, else stop-and-copy. */
static void choose_dirty_method(struct node *n)
{
    const char *want = n->cfg.dirty_tracking;
    char why[200] = "";
    bool uffd_ok = strcmp(want, "none") != 0 && strcmp(want, "mprotect") != 0 &&
                   node_dirty_probe_uffd(why, sizeof(why));
    n->dirty_forced = strcmp(want, "auto") != 0;
    if (strcmp(want, "none") == 0) {
        n->dirty_method = NODE_XFER_M_NONE;
        log_info(COMP, "dirty tracking: none (--dirty-tracking none): migrations stop and copy");
    } else if (strcmp(want, "mprotect") == 0) {
        n->dirty_method = NODE_XFER_M_MPROTECT;
        log_info(COMP, "dirty tracking: mprotect in the service (--dirty-tracking mprotect)");
    } else if (uffd_ok) {
        n->dirty_method = NODE_XFER_M_UFFD;
        log_info(COMP, "dirty tracking: userfaultfd write-protect (async) + PAGEMAP_SCAN");
    } else if (strcmp(want, "uffd") == 0) {
        n->dirty_method = NODE_XFER_M_NONE;
        log_warn(COMP, "dirty tracking: uffd asked for but unavailable (%s): migrations stop "
                       "and copy",
                 why);
    } else {
        n->dirty_method = NODE_XFER_M_MPROTECT;
        log_info(COMP, "dirty tracking: mprotect in the service; userfaultfd unavailable: %s",
                 why);
    }
}

static int check_settings(struct node *n, char *err, size_t errlen)
{
    struct node_settings *c = &n->cfg;
    uint16_t port;
    if (!valid_name(c->id)) {
        snprintf(err, errlen,
                 "invalid --id \"%s\": 1-63 characters of [a-z0-9_.-], starting with a "
                 "letter or digit",
                 c->id);
        return -EINVAL;
    }
    if (strcmp(c->dirty_tracking, "auto") != 0 && strcmp(c->dirty_tracking, "uffd") != 0 &&
        strcmp(c->dirty_tracking, "mprotect") != 0 && strcmp(c->dirty_tracking, "none") != 0) {
        snprintf(err, errlen,
                 "invalid --dirty-tracking \"%s\": expected auto, uffd, mprotect or none",
                 c->dirty_tracking);
        return -EINVAL;
    }
    if (!c->manager) {
        const char *env = getenv("DVS_MANAGER");
        c->manager = xstrdup(env && *env ? env : DEFAULT_MANAGER);
    }
    if (c->token_file) {
        char why[512];
        bool loose = false;
        if (api_token_load(c->token_file, n->mgr_token, &loose, why, sizeof(why)) != 0) {
            snprintf(err, errlen, "--token-file: %s", why);
            return -EINVAL;
        }
        if (loose)
            log_warn(NODE_COMP_AGENT, "token file %s is readable by every user; chmod 600 it",
                     c->token_file);
    }
    if (!c->ca_file) {
        const char *env = getenv("DVS_CA_FILE");
        if (env && *env)
            c->ca_file = xstrdup(env);
    }
    if (c->ca_file && access(c->ca_file, R_OK) != 0) {
        snprintf(err, errlen, "--ca-file %s: %s", c->ca_file, strerror(errno));
        return -EINVAL;
    }
    if (node_split_hostport(c->listen, n->host, sizeof(n->host), &port) != 0 || port == 0 ||
        !concrete_ip(n->host)) {
        snprintf(err, errlen,
                 "invalid --listen \"%s\": expected IP:PORT (IPv6 as [IP]:PORT) with a concrete "
                 "address, not a name or 0.0.0.0 (it is registered with the manager, and "
                 "clients reach the services there)",
                 c->listen);
        return -EINVAL;
    }
    snprintf(n->transfer_addr, sizeof(n->transfer_addr), "%s",
             c->transfer_addr ? c->transfer_addr : c->listen);
    char thost[256];
    if (node_split_hostport(n->transfer_addr, thost, sizeof(thost), &port) != 0 || port == 0 ||
        !concrete_ip(thost)) {
        snprintf(err, errlen,
                 "invalid --transfer-addr \"%s\": expected IP:PORT with a concrete address "
                 "(other agents connect there)",
                 n->transfer_addr);
        return -EINVAL;
    }
    if (c->restart_backoff_max_ms < c->restart_backoff_ms) {
        snprintf(err, errlen, "--restart-backoff-max must not be below --restart-backoff");
        return -EINVAL;
    }
    return 0;
}

static void measure_capacity(struct node *n)
{
    n->cpu_capacity = n->cfg.cpu;
    if (n->cpu_capacity <= 0) {
        long cpus = sysconf(_SC_NPROCESSORS_ONLN);
        n->cpu_capacity = cpus > 0 ? (double)cpus : 1;
    }
    n->mem_capacity = n->cfg.mem;
    if (n->mem_capacity == 0) {
        uint64_t used, total;
        n->mem_capacity = node_mem_read(&used, &total) == 0 ? total : 1ull << 30;
    }
}

static struct node *node_new(void)
{
    struct node *n = xcalloc(1, sizeof(*n));
    n->lock_fd = -1;
    n->ctl_fd = -1;
    pthread_mutex_init(&n->mu, NULL);
    /* Timed waits on the monotonic clock: a wall-clock step must not turn
     * a heartbeat pause into an hour. */
    pthread_condattr_t ca;
    pthread_condattr_init(&ca);
    pthread_condattr_setclock(&ca, CLOCK_MONOTONIC);
    pthread_cond_init(&n->cond, &ca);
    pthread_condattr_destroy(&ca);
    return n;
}

static void node_free(struct node *n)
{
    json_decref(n->orders);
    json_decref(n->orders_new);
    if (n->lock_fd >= 0)
        close(n->lock_fd);
    opts_free(serve_opts, &n->cfg);
    if (n->orders_detached)
        return; /* a thread still holds n (see node_mgr_stop); the exit frees it */
    node_metrics_free(n);
    pthread_cond_destroy(&n->cond);
    pthread_mutex_destroy(&n->mu);
    free(n);
}

int node_serve_main(int argc, char **argv)
{
    struct node *n = node_new();
    char err[1024];
    bool help;
    int code = 1;
    if (argc >= 1 && strcmp(argv[0], "--print-config") == 0) { /* packaging/README.md */
        int prv = opts_print_config(serve_opts, &n->cfg, argc - 1, argv + 1,
                                    "Configuration of dvs-node serve --config FILE "
                                    "(dvs-node(8))", stdout, err, sizeof(err));
        if (prv)
            fprintf(stderr, "dvs-node serve --print-config: %s\n", err);
        code = prv ? 2 : 0;
        goto out;
    }
    int rv = opts_parse_argv(serve_opts, &n->cfg, argc, argv, &help, err, sizeof(err));
    if (help) {
        serve_usage(stdout);
        code = 0;
        goto out;
    }
    if (rv == 0)
        rv = check_settings(n, err, sizeof(err));
    if (rv) {
        fprintf(stderr, "dvs-node serve: %s\n", err);
        fprintf(stderr, "Try 'dvs-node serve --help'.\n");
        code = 2;
        goto out;
    }
    log_set_level((enum log_level)n->cfg.log_level);
    log_set_ident(n->cfg.id);
    if (prepare_data_dir(n, err, sizeof(err)) != 0) {
        log_error(COMP, "%s", err);
        goto out;
    }
    measure_capacity(n);

    /* Reports, GETs and image scans share the thread pool; blocking manager
     * calls must not starve a migration's checksum. Read at first use. */
    setenv("UV_THREADPOOL_SIZE", "8", 0);
    signal(SIGPIPE, SIG_IGN);
    if (uv_loop_init(&n->loop) != 0) {
        log_error(COMP, "uv_loop_init failed");
        goto out;
    }
    uv_async_init(&n->loop, &n->orders_async, on_orders);
    n->orders_async.data = n;
    uv_timer_init(&n->loop, &n->load_timer);
    n->load_timer.data = n;
    uv_timer_init(&n->loop, &n->stop_timer);
    n->stop_timer.data = n;
    uv_signal_init(&n->loop, &n->sigterm);
    n->sigterm.data = n;
    uv_signal_start(&n->sigterm, on_signal, SIGTERM);
    uv_signal_init(&n->loop, &n->sigint);
    n->sigint.data = n;
    uv_signal_start(&n->sigint, on_signal, SIGINT);

    node_inst_load_records(n);
    if (node_metrics_init(n) != 0 || node_ctl_listen(n) != 0 || node_mig_listen(n) != 0 ||
        node_metrics_start(n) != 0) {
        begin_stop(n, "start-up failed");
        n->stop_deadline_passed = true;
        finish_stop(n);
        uv_run(&n->loop, UV_RUN_DEFAULT);
        goto out_loop;
    }
    choose_dirty_method(n);
    on_load_timer(&n->load_timer); /* a first sample, so the first heartbeat has figures */
    uv_timer_start(&n->load_timer, on_load_timer, (uint64_t)n->cfg.heartbeat_interval_ms,
                   (uint64_t)n->cfg.heartbeat_interval_ms);
    if ((rv = node_mgr_start(n)) != 0) {
        log_error(COMP, "cannot start the manager threads: %s", strerror(-rv));
        begin_stop(n, "start-up failed");
        n->stop_deadline_passed = true;
        finish_stop(n);
        uv_run(&n->loop, UV_RUN_DEFAULT);
        goto out_loop;
    }
    log_info(COMP, "node=%s agent started listen=%s transfer=%s manager=%s data=%s cpu=%.2f "
                   "mem=%" PRIu64,
             n->cfg.id, n->cfg.listen, n->transfer_addr, n->cfg.manager, n->data_dir,
             n->cpu_capacity, n->mem_capacity);
    uv_run(&n->loop, UV_RUN_DEFAULT);
    code = n->exit_code;
out_loop:
    if (uv_loop_close(&n->loop) != 0)
        log_warn(COMP, "the loop still had handles at exit");
out:
    node_free(n);
    return code;
}
