/*
 * Cluster-wide views: "status" (GET /v1/status, one member's view of Raft and
 * of the directory) and "plan" (GET /v1/plan, what the scheduler would do now
 * and why, DESIGN.md §6).
 */
#include <stdio.h>
#include <string.h>

#include "manager/cli_internal.h"

/* ------------------------------------------------------------------------ */
/* status                                                                     */
/* ------------------------------------------------------------------------ */

/* "3 up, 1 draining" from {"up":3,"draining":1,"down":0}; zero counts left out. */
static void status_node_counts(json_t *nodes, char *buf, size_t len)
{
    const char *state;
    json_t *count;
    size_t n = 0;

    buf[0] = '\0';
    json_object_foreach(nodes, state, count)
    {
        if (!json_is_integer(count) || json_integer_value(count) == 0)
            continue;
        cli_appendf(buf, len, &n, "%s%lld %s", n ? ", " : "",
                    (long long)json_integer_value(count), state);
    }
    if (n == 0)
        snprintf(buf, len, "none");
}

static int status_render(struct cli_ctx *ctx, json_t *st)
{
    char a[CLI_CELL], b[CLI_CELL], nodes[256];

    if (!json_is_object(st))
        return cli_bad_answer("the status is not an object");

    cli_kv("id", "%s", cli_str_or(st, "id", "-"));
    cli_kv("state", "%s", cli_str_or(st, "state", "-"));
    json_t *leader = json_object_get(st, "leader");
    if (json_is_object(leader))
        cli_kv("leader", "%s (raft %s, http %s)", cli_str_or(leader, "id", "?"),
               cli_str_or(leader, "raft_addr", "-"), cli_str_or(leader, "http_addr", "-"));
    else
        cli_kv("leader", "none");
    cli_kv("term", "%s", cli_fmt_int(st, "term", a, sizeof(a)));
    cli_kv("commit index", "%s", cli_fmt_int(st, "commit_index", a, sizeof(a)));
    cli_kv("applied index", "%s", cli_fmt_int(st, "last_applied", a, sizeof(a)));
    cli_kv("fsm index", "%s", cli_fmt_int(st, "index", a, sizeof(a)));
    cli_kv("members", "%s", cli_fmt_int(st, "members", a, sizeof(a)));
    json_t *by_state = json_object_get(st, "nodes");
    if (json_is_object(by_state)) {
        status_node_counts(by_state, nodes, sizeof(nodes));
        cli_kv("nodes", "%s", nodes);
    } else {
        cli_kv("nodes", "%s", cli_fmt_int(st, "nodes", a, sizeof(a)));
    }
    cli_kv("endpoints", "%s", cli_fmt_int(st, "endpoints", a, sizeof(a)));
    cli_kv("migrations", "%s active", cli_fmt_int(st, "migrations_active", b, sizeof(b)));
    cli_kv("version", "%s", cli_str_or(st, "version", "-"));
    return CLI_OK;
}

static int status_exec(struct cli_ctx *ctx)
{
    return cli_show(ctx, status_render, "/v1/status");
}

const struct cli_cmd cli_status_cmd = {
    .name = "status",
    .summary = "show the cluster as the member asked sees it",
    .description =
        "Show one manager member's view: its Raft state, term and indexes, the\n"
        "leader, and how many members, nodes (by state), endpoints and active\n"
        "migrations the directory holds. Followers answer from their own copy,\n"
        "which may lag the leader's by a few entries.",
    .exec = status_exec,
};

/* ------------------------------------------------------------------------ */
/* plan, and the decision lists it shares with "node drain --dry-run"        */
/* ------------------------------------------------------------------------ */

int cli_print_decisions(json_t *body, const char *empty_msg)
{
    static const char *const headers[] = {"#",    "ACTION", "ENDPOINT", "FROM",
                                          "TO",   "REASON", NULL};
    json_t *list = json_is_array(body) ? body : json_object_get(body, "decisions");
    json_t *d;
    size_t i;

    if (!json_is_array(list)) {
        /* A shape this CLI does not know yet: still show everything. */
        cli_print_json(body);
        return CLI_OK;
    }
    if (json_array_size(list) == 0) {
        printf("%s\n", empty_msg);
        cli_print_projection(body);
        return CLI_OK;
    }

    struct cli_table *t = cli_table_new(headers);
    json_array_foreach(list, i, d)
    {
        cli_table_addf(t, "%zu", i + 1);
        cli_table_add(t, cli_str(d, "action"));
        cli_table_add(t, cli_str(d, "endpoint"));
        /* Power decisions name a node rather than a move. */
        cli_table_add(t, cli_str(d, "source") ? cli_str(d, "source") : cli_str(d, "node"));
        cli_table_add(t, cli_str(d, "destination"));
        cli_table_add(t, cli_str(d, "reason"));
    }
    cli_table_print(t, stdout);
    cli_table_free(t);

    bool header = false;
    json_array_foreach(list, i, d)
    {
        const char *why = cli_str(d, "explanation");
        if (!why || !*why)
            continue;
        if (!header)
            printf("\nWhy:\n");
        header = true;
        char line[1024];
        snprintf(line, sizeof(line), "%s", why);
        for (char *c = line; *c; c++)
            if ((unsigned char)*c < 0x20)
                *c = ' ';
        printf("  %zu. %s\n", i + 1, line);
    }
    cli_print_projection(body);
    return CLI_OK;
}

/*
 * The plan's projected end state (docs/api.md, "projection"): each node's
 * load now and once every migration in flight and every move of the plan has
 * committed. Nodes the plan leaves alone are shown too: the table is the
 * cluster after the plan.
 */
void cli_print_projection(json_t *body)
{
    static const char *const headers[] = {"NODE", "STATE", "CPU NOW", "CPU AFTER", "UTIL NOW",
                                          "UTIL AFTER", "ENDPOINTS", "POWER", NULL};
    json_t *list = json_object_get(body, "projection");
    json_t *p;
    size_t i;

    if (!json_is_array(list) || json_array_size(list) == 0)
        return;
    printf("\nProjected end state (after the migrations in flight and the plan):\n");
    struct cli_table *t = cli_table_new(headers);
    json_array_foreach(list, i, p)
    {
        double cb = 0, ca = 0, ub = 0, ua = 0, eb = 0, ea = 0;
        cli_num(p, "cpu_before", &cb);
        cli_num(p, "cpu_after", &ca);
        cli_num(p, "util_before", &ub);
        cli_num(p, "util_after", &ua);
        cli_num(p, "endpoints_before", &eb);
        cli_num(p, "endpoints_after", &ea);
        cli_table_add(t, cli_str(p, "node"));
        cli_table_add(t, cli_str(p, "state"));
        cli_table_addf(t, "%.2f", cb);
        cli_table_addf(t, "%.2f", ca);
        cli_table_addf(t, "%.0f%%", ub * 100);
        cli_table_addf(t, "%.0f%%", ua * 100);
        if (eb == ea)
            cli_table_addf(t, "%.0f", eb);
        else
            cli_table_addf(t, "%.0f -> %.0f", eb, ea);
        cli_table_add(t, json_is_false(json_object_get(p, "powered_after")) ? "off" : "on");
    }
    cli_table_print(t, stdout);
    cli_table_free(t);
}

static int plan_render(struct cli_ctx *ctx, json_t *body)
{
    return cli_print_decisions(body, "The scheduler would do nothing now.");
}

static int plan_exec(struct cli_ctx *ctx)
{
    return cli_show(ctx, plan_render, "/v1/plan");
}

const struct cli_cmd cli_plan_cmd = {
    .name = "plan",
    .summary = "show what the scheduler would do now, and why",
    .description =
        "Ask the scheduler for a dry run on the current cluster view: the\n"
        "migrations and power actions it would take now, each with its reason\n"
        "and the figures it used, and the projected end state: every node's load\n"
        "now and once the migrations in flight and the plan's moves have\n"
        "committed. Nothing is changed.",
    .exec = plan_exec,
};
