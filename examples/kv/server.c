/*
 * dvs-kv: a key-value service whose whole state lives in the migratable
 * arena, so the node agents can move it between nodes while it serves
 * (DESIGN.md §4). The table is in table.c, the request format in proto.h.
 *
 * Two ways to run it:
 *   - under dvs-node (the normal case): no flags needed. The agent's
 *     environment gives the endpoint, the listening address, the arena (a
 *     fresh one, or in restore mode the one it copied from the source) and
 *     the control channel; dvs_server_open reads it all;
 *   - standalone, for development: `dvs-kv --listen 127.0.0.1:PORT` serves
 *     from a private arena with no agent and no manager. It cannot migrate.
 *
 * Either way: find the table at the arena's root or create it, serve until
 * stopped (SIGTERM, SIGINT, the agent's "stop") or released as moved, and
 * exit 0. Every event is one log line on stderr; libdvs's own messages come
 * through the log callback.
 */
#include <errno.h>
#include <inttypes.h>
#include <signal.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common/log.h"
#include "common/opts.h"
#include "common/util.h"
#include "dvs.h"
#include "examples/kv/service.h"
#include "examples/kv/table.h"

#define KV_PROG "dvs-kv"

/* ===========================================================================
 * Options
 */

struct kv_settings {
    char *listen;
    char *endpoint;
    char *arena_addr;
    uint64_t arena_size;
    int log_level;
};

#define OFF(f) offsetof(struct kv_settings, f)

static const struct opt_def kv_opts[] = {
    {"listen", OPT_STRING, NULL, 0, 0, OFF(listen), "HOST:PORT",
     "run standalone (no agent, private arena) and serve on HOST:PORT; port 0 picks one",
     false, false},
    {"endpoint", OPT_STRING, "kv", 0, 0, OFF(endpoint), "NAME",
     "standalone only: the endpoint name to serve as", false, false},
    {"arena-addr", OPT_STRING, "0x7e0000000000", 0, 0, OFF(arena_addr), "ADDR",
     "standalone only: where to map the private arena (page-aligned, hex)", false, false},
    {"arena-size", OPT_SIZE, "64M", 64.0 * 1024, 1024.0 * 1024 * 1024 * 1024,
     OFF(arena_size), "SIZE", "standalone only: the private arena's size", false, false},
    {"log-level", OPT_LOGLEVEL, "info", 0, 0, OFF(log_level), "LEVEL",
     "debug, info, warn or error", false, false},
    {NULL},
};

static void kv_usage(FILE *out)
{
    fprintf(out,
            "usage: " KV_PROG " [OPTIONS]\n"
            "\n"
            "A key-value service whose state lives in a DVS migratable arena.\n"
            "Started by dvs-node, it takes everything from the agent's environment;\n"
            "with --listen it runs standalone for development.\n"
            "\n"
            "Options:\n");
    opts_usage(kv_opts, out);
}

/* The flags that only mean something standalone, so that passing them to an
 * agent-run instance is an error rather than silently ignored. */
static const char *kv_standalone_flag(int argc, char **argv)
{
    static const char *const names[] = {"--endpoint", "--arena-addr", "--arena-size"};
    for (int i = 0; i < argc; i++)
        for (size_t k = 0; k < sizeof(names) / sizeof(names[0]); k++)
            if (strncmp(argv[i], names[k], strlen(names[k])) == 0 &&
                (argv[i][strlen(names[k])] == '\0' || argv[i][strlen(names[k])] == '='))
                return names[k];
    return NULL;
}

static int kv_parse_addr(const char *s, uintptr_t *ret)
{
    if (strncmp(s, "0x", 2) != 0 || s[2] == '\0')
        return -EINVAL;
    char *end;
    errno = 0;
    unsigned long long v = strtoull(s + 2, &end, 16);
    if (errno != 0 || *end != '\0' || v == 0 || v > UINTPTR_MAX)
        return -EINVAL;
    *ret = (uintptr_t)v;
    return 0;
}

/* ===========================================================================
 * Logging and signals
 */

/* libdvs's messages, on whichever thread it runs (log_msg is thread-safe:
 * it writes each line with one fwrite). */
static void kv_lib_log(void *data, int level, const char *msg)
{
    (void)data;
    enum log_level l = level <= DVS_LOG_DEBUG  ? LOG_DEBUG
                       : level == DVS_LOG_INFO ? LOG_INFO
                       : level == DVS_LOG_WARN ? LOG_WARN
                                               : LOG_ERROR;
    log_msg(l, "libdvs", "%s", msg);
}

/* The handler's own messages (rejected requests, at debug level). */
static void kv_handler_log(void *data, int level, const char *msg)
{
    (void)data;
    log_msg(level <= DVS_LOG_DEBUG ? LOG_DEBUG : LOG_INFO, "kv", "%s", msg);
}

/* The server to stop on SIGTERM/SIGINT. dvs_server_stop only writes to an
 * eventfd, so it is safe in a signal handler. */
static dvs_server *volatile kv_stop_target;

static void kv_on_signal(int sig)
{
    (void)sig;
    dvs_server *srv = kv_stop_target;
    if (srv != NULL)
        dvs_server_stop(srv);
}

static int kv_install_signals(void)
{
    struct sigaction sa;
    memset(&sa, 0, sizeof(sa));
    sa.sa_handler = kv_on_signal;
    sigemptyset(&sa.sa_mask);
    sa.sa_flags = SA_RESTART;
    if (sigaction(SIGTERM, &sa, NULL) != 0 || sigaction(SIGINT, &sa, NULL) != 0)
        return -errno;
    /* A client that hangs up must cost an EPIPE, not the process. */
    signal(SIGPIPE, SIG_IGN);
    return 0;
}

/* ===========================================================================
 * main
 */

/* The server options: standalone ones set everything an agent would
 * otherwise give; under an agent only the log callback is ours and every
 * other field stays unset, so dvs_server_open takes it from the
 * environment, exactly as dvs_server_open(NULL, ...) would. */
static int kv_server_options(const struct kv_settings *set, struct dvs_server_options *o)
{
    dvs_server_options_init(o);
    o->log = kv_lib_log;
    o->log_data = NULL;
    if (set->listen == NULL)
        return 0;

    uintptr_t addr;
    if (kv_parse_addr(set->arena_addr, &addr) != 0) {
        log_error("kv", "invalid --arena-addr \"%s\": expected a hex address like "
                        "0x7e0000000000",
                  set->arena_addr);
        return -EINVAL;
    }
    /* An agent's variables left in the environment (a shell inside a
     * service's session, say) must not make a standalone instance try to
     * restore an arena or talk to an agent. */
    static const char *const agent_vars[] = {"DVS_CONTROL_FD", "DVS_CONTROL_PATH",
                                             "DVS_ARENA_FD", "DVS_MODE", "DVS_GENERATION"};
    for (size_t i = 0; i < sizeof(agent_vars) / sizeof(agent_vars[0]); i++)
        unsetenv(agent_vars[i]);
    o->endpoint = set->endpoint;
    o->listen = set->listen;
    o->generation = 1;
    o->restore = 0;
    o->arena_addr = addr;
    o->arena_size = (size_t)set->arena_size;
    return 0;
}

int main(int argc, char **argv)
{
    struct kv_settings set;
    struct dvs_server_options o;
    struct kv_service svc = {.log = kv_handler_log};
    struct kv *kv = NULL;
    dvs_server *srv = NULL;
    char err[512];
    bool help;
    int rv;
    int status = 1;

    memset(&set, 0, sizeof(set));
    log_set_ident(KV_PROG);
    if (opts_parse_argv(kv_opts, &set, argc - 1, argv + 1, &help, err, sizeof(err)) != 0) {
        fprintf(stderr, KV_PROG ": %s\n", err);
        kv_usage(stderr);
        status = 2;
        goto out;
    }
    if (help) {
        kv_usage(stdout);
        status = 0;
        goto out;
    }
    const char *flag = kv_standalone_flag(argc - 1, argv + 1);
    if (set.listen == NULL && flag != NULL) {
        fprintf(stderr, KV_PROG ": %s applies only to a standalone instance (--listen)\n",
                flag);
        status = 2;
        goto out;
    }
    log_set_level((enum log_level)set.log_level);
    if (kv_server_options(&set, &o) != 0) {
        status = 2;
        goto out;
    }

    /* In restore mode this blocks until the migration commits (DESIGN.md §4
     * phase 4); DVS_ESHUTDOWN means it aborted and this instance is not
     * needed: not an error. */
    rv = dvs_server_open(&o, &srv);
    if (rv == DVS_ESHUTDOWN) {
        log_info("kv", "migration aborted before start; exiting");
        status = 0;
        goto out;
    }
    if (rv != 0) {
        log_error("kv", "cannot open the endpoint: %s (%s)", dvs_strerror(rv),
                  dvs_err_name(rv));
        goto out;
    }

    /* The seed only matters for a new table; a restored one keeps its own. */
    uint64_t seed[2] = {random_u64(), random_u64()};
    bool created = false;
    rv = kv_open(dvs_server_arena(srv), seed, &kv, &created);
    if (rv != 0) {
        log_error("kv", "%s: %s",
                  rv == DVS_EPROTO ? "the arena's root is not a kv table of this version"
                                   : "cannot create the table",
                  dvs_strerror(rv));
        goto out;
    }
    svc.kv = kv;
    svc.generation = dvs_server_generation(srv);

    rv = kv_install_signals();
    if (rv != 0) {
        log_error("kv", "cannot install signal handlers: %s", strerror(-rv));
        goto out;
    }
    kv_stop_target = srv;

    char addr[128];
    if (dvs_server_address(srv, addr, sizeof(addr)) != 0)
        snprintf(addr, sizeof(addr), "?");
    dvs_arena *arena = dvs_server_arena(srv);
    struct kv_stats st;
    kv_stats(kv, &st);
    log_info("kv",
             "serving address=%s generation=%" PRIu64 " table=%s keys=%" PRIu64
             " arena=%p+%zu mode=%s",
             addr, svc.generation, created ? "new" : "restored", st.keys,
             dvs_arena_base(arena), dvs_arena_size(arena),
             set.listen ? "standalone" : "agent");

    rv = dvs_server_run(srv, kv_service_handle, &svc);
    kv_stop_target = NULL;
    if (rv == 0) {
        log_info("kv", "stopped; exiting");
        status = 0;
    } else if (rv == DVS_EMOVED) {
        log_info("kv", "released as moved; exiting");
        status = 0;
    } else {
        log_error("kv", "serving failed: %s (%s)", dvs_strerror(rv), dvs_err_name(rv));
    }

out:
    kv_stop_target = NULL;
    dvs_server_close(srv);
    kv_close(kv);
    opts_free(kv_opts, &set);
    return status;
}
