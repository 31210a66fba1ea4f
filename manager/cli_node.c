/*
 * "node": the machines running dvs-node (DESIGN.md §2). list, show, enable,
 * and drain (DESIGN.md §6, "maintenance"), which by default stays to show
 * the drain's progress until the node is drained.
 */
#include <stddef.h>
#include <stdio.h>
#include <string.h>

#include "common/util.h"
#include "manager/cli_internal.h"

static const struct cli_arg node_arg[] = {
    {"NODE", CLI_ARG_NAME, "the node's id, e.g. n1"},
    {NULL},
};

/* "cpu 1.2/4 (30%) mem 2.0 GiB (12%)"-style figures, compact for a table cell. */
static const char *node_fmt_load(json_t *node, bool verbose, char *buf, size_t len)
{
    json_t *load = json_object_get(node, "load");
    double cap_cpu = 0, cap_mem = 0, cpu = 0, mem = 0, rps = 0;

    if (!json_is_object(load)) {
        snprintf(buf, len, "-");
        return buf;
    }
    cli_num(node, "cpu", &cap_cpu);
    cli_num(node, "mem", &cap_mem);
    bool has_cpu = cli_num(load, "cpu", &cpu);
    bool has_mem = cli_num(load, "mem", &mem);
    cli_num(load, "rps", &rps);

    char cpu_s[32] = "-", mem_s[32] = "-";
    if (has_cpu && cap_cpu > 0)
        snprintf(cpu_s, sizeof(cpu_s), "%.0f%%", 100.0 * cpu / cap_cpu);
    else if (has_cpu)
        snprintf(cpu_s, sizeof(cpu_s), "%.2f", cpu);
    if (has_mem && cap_mem > 0)
        snprintf(mem_s, sizeof(mem_s), "%.0f%%", 100.0 * mem / cap_mem);
    else if (has_mem)
        format_size((uint64_t)mem, mem_s, sizeof(mem_s));

    if (!verbose) {
        snprintf(buf, len, "cpu %s mem %s", cpu_s, mem_s);
        return buf;
    }
    char used_mem[32], ago[CLI_CELL];
    format_size(has_mem ? (uint64_t)mem : 0, used_mem, sizeof(used_mem));
    snprintf(buf, len, "cpu %.2f cores (%s), mem %s (%s), %.1f req/s, reported %s", cpu,
             cpu_s, used_mem, mem_s, rps, cli_fmt_ago(load, "time", ago, sizeof(ago)));
    return buf;
}

/* ------------------------------------------------------------------------ */
/* node list                                                                  */
/* ------------------------------------------------------------------------ */

static int node_list_render(struct cli_ctx *ctx, json_t *body)
{
    static const char *const headers[] = {"ID",  "STATE", "ELIGIBLE", "CPU",
                                          "MEM", "LOAD",  "ADDRESS",  NULL};
    json_t *nodes = json_object_get(body, "nodes");
    json_t *n;
    size_t i;

    if (!json_is_array(nodes))
        return cli_bad_answer("no \"nodes\" array");
    struct cli_table *t = cli_table_new(headers);
    json_array_foreach(nodes, i, n)
    {
        char buf[CLI_CELL], load[128];
        cli_table_add(t, cli_str(n, "id"));
        cli_table_add(t, cli_str(n, "state"));
        cli_table_add(t, cli_fmt_bool(n, "eligible", buf, sizeof(buf)));
        cli_table_add(t, cli_fmt_cpu(n, "cpu", buf, sizeof(buf)));
        cli_table_add(t, cli_fmt_size(n, "mem", buf, sizeof(buf)));
        cli_table_add(t, node_fmt_load(n, false, load, sizeof(load)));
        cli_table_add(t, cli_str(n, "address"));
    }
    cli_table_print(t, stdout);
    cli_table_free(t);
    return CLI_OK;
}

static int node_list_exec(struct cli_ctx *ctx)
{
    return cli_show(ctx, node_list_render, "/v1/nodes");
}

static const struct cli_cmd node_list_cmd = {
    .name = "list",
    .summary = "list nodes: state, capacity, load",
    .exec = node_list_exec,
};

/* ------------------------------------------------------------------------ */
/* node show                                                                  */
/* ------------------------------------------------------------------------ */

static void node_print(json_t *n, json_t *endpoints)
{
    char a[CLI_CELL], b[CLI_CELL], load[256];
    const char *id = cli_str_or(n, "id", "-");

    cli_kv("id", "%s", id);
    cli_kv("address", "%s", cli_str_or(n, "address", "-"));
    cli_kv("state", "%s (changed %s)", cli_str_or(n, "state", "-"),
           cli_fmt_ago(n, "state_since", a, sizeof(a)));
    cli_kv("eligible", "%s", cli_fmt_bool(n, "eligible", a, sizeof(a)));
    cli_kv("cpu", "%s cores", cli_fmt_cpu(n, "cpu", a, sizeof(a)));
    cli_kv("mem", "%s", cli_fmt_size(n, "mem", a, sizeof(a)));
    cli_kv("load", "%s", node_fmt_load(n, true, load, sizeof(load)));
    cli_kv("registered", "%s", cli_fmt_ago(n, "registered_at", a, sizeof(a)));
    cli_kv("modify index", "%s", cli_fmt_int(n, "modify_index", b, sizeof(b)));

    if (!json_is_array(endpoints))
        return;
    char names[768] = "";
    size_t len = 0, count = 0, i;
    json_t *e;
    json_array_foreach(endpoints, i, e)
    {
        const char *on = cli_str(e, "node");
        if (!on || strcmp(on, id) != 0)
            continue;
        count++;
        cli_appendf(names, sizeof(names), &len, "%s%s", len ? ", " : "",
                    cli_str_or(e, "name", "?"));
    }
    if (count == 0)
        cli_kv("endpoints", "none");
    else
        cli_kv("endpoints", "%zu: %s", count, names);
}

static int node_show_exec(struct cli_ctx *ctx)
{
    struct api_response nr = {0}, er = {0};
    const char *id = ctx->args[0];
    int rv;

    if (ctx->json) {
        rv = cli_call(ctx, "GET", NULL, &nr, "/v1/nodes/%s", id);
        if (rv == CLI_OK)
            cli_print_response(&nr);
        goto cleanup;
    }
    /* Both answers first, so that a failure does not leave half a page. */
    rv = cli_call(ctx, "GET", NULL, &nr, "/v1/nodes/%s", id);
    if (rv != CLI_OK)
        goto cleanup;
    rv = cli_call(ctx, "GET", NULL, &er, "/v1/endpoints");
    if (rv != CLI_OK)
        goto cleanup;
    if (!json_is_object(nr.body)) {
        rv = cli_bad_answer("the node is not a JSON object");
        goto cleanup;
    }
    node_print(nr.body, json_object_get(er.body, "endpoints"));
cleanup:
    api_response_clear(&er);
    api_response_clear(&nr);
    return rv;
}

static const struct cli_cmd node_show_cmd = {
    .name = "show",
    .summary = "show a node and the endpoints it serves",
    .args = node_arg,
    .exec = node_show_exec,
};

/* ------------------------------------------------------------------------ */
/* node enable                                                                */
/* ------------------------------------------------------------------------ */

static int node_enable_exec(struct cli_ctx *ctx)
{
    struct api_response r;
    const char *id = ctx->args[0];

    int rv = cli_call(ctx, "POST", NULL, &r, "/v1/nodes/%s/enable", id);
    if (rv != CLI_OK)
        goto cleanup;
    if (ctx->json)
        cli_print_response(&r);
    else
        printf("node %s enabled (state %s)\n", id,
               r.body ? cli_str_or(r.body, "state", "up") : "up");
cleanup:
    api_response_clear(&r);
    return rv;
}

static const struct cli_cmd node_enable_cmd = {
    .name = "enable",
    .summary = "undo a drain: the node takes endpoints again",
    .args = node_arg,
    .exec = node_enable_exec,
};

/* ------------------------------------------------------------------------ */
/* node drain                                                                 */
/* ------------------------------------------------------------------------ */

struct node_drain_opts {
    int64_t deadline_ms;
    bool detach;
    bool dry_run;
};

#define DOFF(f) offsetof(struct node_drain_opts, f)

static const struct opt_def node_drain_opts[] = {
    {"deadline", OPT_DURATION, NULL, 1000, 7 * 24 * 3600000.0, DOFF(deadline_ms), "DURATION",
     "give the drain DURATION to finish (default: the manager's)", false, false},
    {"detach", OPT_BOOL, NULL, 0, 0, DOFF(detach), NULL,
     "start the drain and return instead of showing its progress", false, false},
    {"dry-run", OPT_BOOL, NULL, 0, 0, DOFF(dry_run), NULL,
     "show the moves the drain would make; change nothing", false, false},
    {NULL},
};

/*
 * One progress line: "  n1: draining, 2 moved, 2 left; moving kv3 -> n2
 * (precopy), kv4 -> n3 (planned)". TOTAL is the count at the first look.
 */
static void drain_line(const char *node, const char *state, long total, long left,
                       json_t *migs, char *buf, size_t len)
{
    json_t *m;
    size_t i, n = 0;
    int k = snprintf(buf, len, "  %s: %s, %ld moved, %ld left", node, state,
                     total > left ? total - left : 0, left);
    json_array_foreach(migs, i, m)
    {
        const char *src = cli_str(m, "source");
        if (!src || strcmp(src, node) != 0 || k < 0 || (size_t)k >= len)
            continue;
        k += snprintf(buf + k, len - (size_t)k, "%s%s -> %s (%s)", n++ ? ", " : "; moving ",
                      cli_str_or(m, "endpoint", "?"), cli_str_or(m, "destination", "?"),
                      cli_str_or(m, "phase", "?"));
    }
}

/*
 * Follow a drain until NODE is drained. Each round is one blocking query on
 * the node's orders (its state, the endpoints still on it and the migrations
 * touching it: what changes while it drains), read through the leader
 * (?consistent: a follower may not have applied the drain yet). A line is
 * printed whenever it changes. GIVE_UP_AT (monotonic ms, or 0) ends the wait
 * when the drain overruns its deadline.
 */
static int node_drain_watch(struct cli_ctx *ctx, const char *node, int64_t give_up_at)
{
    struct api_response r = {0}, nr = {0};
    long long wait = (long long)cli_watch_wait_ms(ctx);
    unsigned long long index = 0;
    long total = -1;
    char line[1024], shown[1024] = "";
    int rv;

    if (!ctx->json) {
        printf("draining %s (Ctrl-C stops watching; the drain goes on)\n", node);
        fflush(stdout);
    }
    for (;;) {
        unsigned long long prev_index = index;
        int64_t started = now_mono_ms();
        if (index > 0)
            rv = cli_call(ctx, "GET", NULL, &r,
                          "/v1/nodes/%s/orders?consistent&index=%llu&wait=%lldms", node, index,
                          wait);
        else
            rv = cli_call(ctx, "GET", NULL, &r, "/v1/nodes/%s/orders?consistent", node);
        if (rv != CLI_OK)
            goto cleanup;
        index = (unsigned long long)r.index;
        const char *state = cli_str(r.body, "state");
        json_t *eps = json_object_get(r.body, "endpoints");
        json_t *migs = json_object_get(r.body, "migrations");
        if (!state || !json_is_array(eps) || !json_is_array(migs)) {
            rv = cli_bad_answer("the node's orders lack \"state\", \"endpoints\" or "
                                "\"migrations\"");
            goto cleanup;
        }
        long left = (long)json_array_size(eps);
        if (total < 0)
            total = left;

        drain_line(node, state, total, left, migs, line, sizeof(line));
        if (!ctx->json && strcmp(line, shown) != 0) {
            printf("%s\n", line);
            fflush(stdout);
            snprintf(shown, sizeof(shown), "%s", line);
        }
        if (strcmp(state, "drained") == 0) {
            if (ctx->json) {
                rv = cli_call(ctx, "GET", NULL, &nr, "/v1/nodes/%s?consistent", node);
                if (rv == CLI_OK)
                    cli_print_response(&nr);
            } else {
                printf("%s is drained\n", node);
                rv = CLI_OK;
            }
            goto cleanup;
        }
        if (strcmp(state, "draining") != 0) {
            cli_error("the drain of %s stopped: the node is %s with %ld endpoint%s left", node,
                      state, left, left == 1 ? "" : "s");
            rv = CLI_EFAIL;
            goto cleanup;
        }
        if (give_up_at && now_mono_ms() > give_up_at) {
            cli_error("%s is still draining after its deadline, with %ld endpoint%s left; "
                      "see 'dvs-manager node show %s'",
                      node, left, left == 1 ? "" : "s", node);
            rv = CLI_EFAIL;
            goto cleanup;
        }
        /* Without an index to block on, or answered at once with nothing new: pause. */
        if ((index == 0 || index == prev_index) && cli_watch_too_fast(ctx, started))
            cli_pause_ms(CLI_POLL_MS);
        api_response_clear(&r);
        memset(&r, 0, sizeof(r));
    }
cleanup:
    api_response_clear(&r);
    api_response_clear(&nr);
    return rv;
}

static int node_drain_exec(struct cli_ctx *ctx)
{
    const struct node_drain_opts *o = ctx->opts;
    const char *id = ctx->args[0];
    struct api_response r;
    json_t *body = json_object();
    int rv;

    if (cli_opt_given(ctx, "deadline"))
        json_object_set_new(body, "deadline_ms", json_integer(o->deadline_ms));
    if (o->dry_run)
        json_object_set_new(body, "dry_run", json_true());

    rv = cli_call(ctx, "POST", body, &r, "/v1/nodes/%s/drain", id);
    if (rv != CLI_OK)
        goto cleanup;
    if (o->dry_run) {
        if (ctx->json)
            cli_print_response(&r);
        else if (r.body)
            rv = cli_print_decisions(r.body, "Nothing would move: no endpoint runs there.");
        else
            rv = cli_bad_answer("the body is not JSON");
        goto cleanup;
    }
    if (o->detach) {
        if (ctx->json)
            cli_print_response(&r);
        else
            printf("drain of %s started; follow it with 'dvs-manager node show %s'\n", id, id);
        goto cleanup;
    }
    int64_t give_up_at = 0;
    if (cli_opt_given(ctx, "deadline"))
        give_up_at = now_mono_ms() + o->deadline_ms + 2 * ctx->timeout_ms;
    rv = node_drain_watch(ctx, id, give_up_at);
cleanup:
    api_response_clear(&r);
    json_decref(body);
    return rv;
}

static const struct cli_cmd node_drain_cmd = {
    .name = "drain",
    .summary = "move every endpoint off a node (maintenance)",
    .description =
        "Make NODE ineligible and move every endpoint it serves to other nodes by\n"
        "live migration, a few at a time, within the deadline; endpoints opted out\n"
        "of automatic moves are moved too. The node ends up 'drained'. Without\n"
        "--detach the command shows progress (moved, left, migrations under way)\n"
        "and returns when the node is drained (exit 0) or the drain stopped\n"
        "(exit 1). Undo with 'dvs-manager node enable NODE'.",
    .args = node_arg,
    .opts = node_drain_opts,
    .opts_size = sizeof(struct node_drain_opts),
    .exec = node_drain_exec,
};

/* ------------------------------------------------------------------------ */

static const struct cli_cmd *const node_cmds[] = {
    &node_list_cmd, &node_show_cmd, &node_enable_cmd, &node_drain_cmd, NULL,
};

const struct cli_cmd cli_node_cmd = {
    .name = "node",
    .summary = "cluster nodes (machines running dvs-node)",
    .description = "Inspect the nodes that run services, and take them out of service\n"
                   "for maintenance (drain) and back (enable).",
    .sub = node_cmds,
};
