/*
 * "endpoint": the location-independent names of services (DESIGN.md §2) and
 * their directory entries. list, show, create, set, delete, and migrate (a
 * manual live migration, DESIGN.md §4), which by default follows the
 * migration to its end.
 */
#include <stddef.h>
#include <stdio.h>
#include <string.h>

#include "manager/cli_internal.h"

static const struct cli_arg endpoint_name_arg[] = {
    {"NAME", CLI_ARG_NAME, "the endpoint's name, e.g. kv"},
    {NULL},
};

/* ------------------------------------------------------------------------ */
/* endpoint list                                                              */
/* ------------------------------------------------------------------------ */

static int endpoint_list_render(struct cli_ctx *ctx, json_t *body)
{
    static const char *const headers[] = {"NAME", "NODE",    "STATE",
                                          "GEN",  "ADDRESS", "ARENA", NULL};
    json_t *list = json_object_get(body, "endpoints");
    json_t *e;
    size_t i;

    if (!json_is_array(list))
        return cli_bad_answer("no \"endpoints\" array");
    struct cli_table *t = cli_table_new(headers);
    json_array_foreach(list, i, e)
    {
        char buf[CLI_CELL];
        cli_table_add(t, cli_str(e, "name"));
        cli_table_add(t, cli_str(e, "node"));
        cli_table_add(t, cli_str(e, "state"));
        cli_table_add(t, cli_fmt_int(e, "generation", buf, sizeof(buf)));
        cli_table_add(t, cli_str(e, "address"));
        cli_table_add(t, cli_fmt_size(e, "arena_size", buf, sizeof(buf)));
    }
    cli_table_print(t, stdout);
    cli_table_free(t);
    return CLI_OK;
}

static int endpoint_list_exec(struct cli_ctx *ctx)
{
    return cli_show(ctx, endpoint_list_render, "/v1/endpoints");
}

static const struct cli_cmd endpoint_list_cmd = {
    .name = "list",
    .summary = "list endpoints: node, state, generation",
    .exec = endpoint_list_exec,
};

/* ------------------------------------------------------------------------ */
/* endpoint show                                                              */
/* ------------------------------------------------------------------------ */

static int endpoint_show_render(struct cli_ctx *ctx, json_t *e)
{
    char a[CLI_CELL], b[CLI_CELL];

    if (!json_is_object(e))
        return cli_bad_answer("the endpoint is not a JSON object");
    cli_kv("name", "%s", cli_str_or(e, "name", "-"));
    cli_kv("id", "%s", cli_fmt_int(e, "id", a, sizeof(a)));
    cli_kv("state", "%s", cli_str_or(e, "state", "-"));
    cli_kv("node", "%s", cli_str_or(e, "node", "-"));
    cli_kv("address", "%s", cli_str_or(e, "address", "-"));
    cli_kv("generation", "%s", cli_fmt_int(e, "generation", a, sizeof(a)));
    cli_kv("command", "%s", cli_str_or(e, "command", "-"));
    cli_kv("cpu", "%s cores", cli_fmt_cpu(e, "cpu", a, sizeof(a)));
    cli_kv("mem", "%s", cli_fmt_size(e, "mem", a, sizeof(a)));
    cli_kv("arena", "%s at %s", cli_fmt_size(e, "arena_size", b, sizeof(b)),
           cli_str_or(e, "arena_addr", "-"));
    /* Absent from an older manager's answer: say nothing rather than guess. */
    const json_t *am = json_object_get(e, "auto_migrate");
    if (json_is_boolean(am))
        cli_kv("auto migrate", "%s", json_is_true(am)
                                         ? "yes"
                                         : "no (overload and energy leave it; drains move it)");
    cli_kv("created", "%s", cli_fmt_ago(e, "created_at", a, sizeof(a)));
    cli_kv("modify index", "%s", cli_fmt_int(e, "modify_index", a, sizeof(a)));
    return CLI_OK;
}

static int endpoint_show_exec(struct cli_ctx *ctx)
{
    return cli_show(ctx, endpoint_show_render, "/v1/endpoints/%s", ctx->args[0]);
}

static const struct cli_cmd endpoint_show_cmd = {
    .name = "show",
    .summary = "show one endpoint's directory entry",
    .args = endpoint_name_arg,
    .exec = endpoint_show_exec,
};

/* ------------------------------------------------------------------------ */
/* endpoint create                                                            */
/* ------------------------------------------------------------------------ */

struct endpoint_create_opts {
    char *command;
    double cpu;
    uint64_t mem;
    uint64_t arena;
    char *node;
    bool no_auto_migrate;
};

#define COFF(f) offsetof(struct endpoint_create_opts, f)

static const struct opt_def endpoint_create_opts[] = {
    {"command", OPT_STRING, NULL, 0, 0, COFF(command), "\"PATH ARGS\"",
     "the service's binary and arguments, as one word", true, false},
    {"cpu", OPT_DOUBLE, NULL, 0.001, 4096, COFF(cpu), "CORES",
     "CPU it needs, in cores, e.g. 0.5 (default: the manager's)", false, false},
    {"mem", OPT_SIZE, NULL, 1, 1e15, COFF(mem), "BYTES",
     "memory it needs, e.g. 512M, 2GiB (default: the manager's)", false, false},
    {"arena", OPT_SIZE, NULL, 4096, 1e15, COFF(arena), "BYTES",
     "size of its migratable arena, e.g. 64M (default: the manager's)", false, false},
    {"node", OPT_STRING, NULL, 0, 0, COFF(node), "NODE",
     "run it on NODE rather than where the scheduler chooses", false, false},
    {"no-auto-migrate", OPT_BOOL, NULL, 0, 0, COFF(no_auto_migrate), NULL,
     "never move it for overload or energy saving (a node drain still moves it)", false,
     false},
    {NULL},
};

static int endpoint_create_exec(struct cli_ctx *ctx)
{
    const struct endpoint_create_opts *o = ctx->opts;
    const char *name = ctx->args[0];
    struct api_response r = {0};
    json_t *body = NULL;
    int rv;

    if (o->node) {
        rv = cli_check_name(ctx, "--node", o->node);
        if (rv != CLI_OK)
            return rv;
    }

    /* Only what was given: the manager owns the defaults. */
    body = json_pack("{s:s,s:s}", "name", name, "command", o->command);
    if (cli_opt_given(ctx, "cpu"))
        json_object_set_new(body, "cpu", json_real(o->cpu));
    if (cli_opt_given(ctx, "mem"))
        json_object_set_new(body, "mem", json_integer((json_int_t)o->mem));
    if (cli_opt_given(ctx, "arena"))
        json_object_set_new(body, "arena", json_integer((json_int_t)o->arena));
    if (o->node)
        json_object_set_new(body, "node", json_string(o->node));
    if (o->no_auto_migrate)
        json_object_set_new(body, "auto_migrate", json_false());

    rv = cli_call(ctx, "POST", body, &r, "/v1/endpoints");
    if (rv != CLI_OK)
        goto cleanup;
    if (ctx->json) {
        cli_print_response(&r);
        goto cleanup;
    }
    char arena[CLI_CELL], where[CLI_CELL + 8];
    const char *node = cli_str(r.body, "node");
    snprintf(where, sizeof(where), node ? "on %s" : "not placed yet", node);
    printf("endpoint %s created (%s, %s); arena %s at %s\n", name,
           cli_str_or(r.body, "state", "pending"), where,
           cli_fmt_size(r.body, "arena_size", arena, sizeof(arena)),
           cli_str_or(r.body, "arena_addr", "-"));
cleanup:
    api_response_clear(&r);
    json_decref(body);
    return rv;
}

static const struct cli_cmd endpoint_create_cmd = {
    .name = "create",
    .summary = "create an endpoint and have it started",
    .description =
        "Create endpoint NAME. The manager gives it an arena address no other\n"
        "endpoint uses, places it on a node (--node, or the scheduler's choice),\n"
        "and that node's agent starts COMMAND with libdvs. Sizes take K, M, G, T\n"
        "suffixes (powers of 1024, optionally followed by iB or B).",
    .args = endpoint_name_arg,
    .opts = endpoint_create_opts,
    .opts_size = sizeof(struct endpoint_create_opts),
    .exec = endpoint_create_exec,
};

/* ------------------------------------------------------------------------ */
/* endpoint set                                                               */
/* ------------------------------------------------------------------------ */

struct endpoint_set_opts {
    char *auto_migrate;
};

/* A value, not a flag: "--auto-migrate false" reads as it is meant. */
static const struct opt_def endpoint_set_opts[] = {
    {"auto-migrate", OPT_STRING, NULL, 0, 0, offsetof(struct endpoint_set_opts, auto_migrate),
     "true|false",
     "false: the scheduler never moves it for overload or energy saving (a node drain "
     "still moves it); true: it may again",
     true, false},
    {NULL},
};

static int endpoint_set_exec(struct cli_ctx *ctx)
{
    const struct endpoint_set_opts *o = ctx->opts;
    const char *name = ctx->args[0];
    struct api_response r = {0};
    bool on;

    if (strcmp(o->auto_migrate, "true") == 0 || strcmp(o->auto_migrate, "yes") == 0)
        on = true;
    else if (strcmp(o->auto_migrate, "false") == 0 || strcmp(o->auto_migrate, "no") == 0)
        on = false;
    else
        return cli_usage_error(ctx, "--auto-migrate: expected true or false, got \"%s\"",
                               o->auto_migrate);
    json_t *body = json_pack("{s:b}", "auto_migrate", on);

    int rv = cli_call(ctx, "PATCH", body, &r, "/v1/endpoints/%s", name);
    if (rv != CLI_OK)
        goto cleanup;
    if (ctx->json)
        cli_print_response(&r);
    else
        printf("endpoint %s: automatic moves %s\n", name,
               on ? "allowed" : "off (drains still move it)");
cleanup:
    api_response_clear(&r);
    json_decref(body);
    return rv;
}

static const struct cli_cmd endpoint_set_cmd = {
    .name = "set",
    .summary = "change an endpoint's settings (automatic moves)",
    .description =
        "Change how the scheduler treats endpoint NAME. With --auto-migrate false\n"
        "the overload and energy policies never move it (they explain that it is\n"
        "opted out); a drain of its node still moves it, as 'kubectl drain' and\n"
        "'nomad node drain' move every workload.",
    .args = endpoint_name_arg,
    .opts = endpoint_set_opts,
    .opts_size = sizeof(struct endpoint_set_opts),
    .exec = endpoint_set_exec,
};

/* ------------------------------------------------------------------------ */
/* endpoint delete                                                            */
/* ------------------------------------------------------------------------ */

static int endpoint_delete_exec(struct cli_ctx *ctx)
{
    const char *name = ctx->args[0];
    struct api_response r;

    int rv = cli_call(ctx, "DELETE", NULL, &r, "/v1/endpoints/%s", name);
    if (rv != CLI_OK)
        goto cleanup;
    if (ctx->json)
        cli_print_response(&r);
    else
        printf("endpoint %s deleted\n", name);
cleanup:
    api_response_clear(&r);
    return rv;
}

static const struct cli_cmd endpoint_delete_cmd = {
    .name = "delete",
    .summary = "delete an endpoint (its service is stopped)",
    .args = endpoint_name_arg,
    .exec = endpoint_delete_exec,
};

/* ------------------------------------------------------------------------ */
/* endpoint migrate                                                           */
/* ------------------------------------------------------------------------ */

struct endpoint_migrate_opts {
    char *to;
    bool detach;
};

#define MOFF(f) offsetof(struct endpoint_migrate_opts, f)

static const struct opt_def endpoint_migrate_opts[] = {
    {"to", OPT_STRING, NULL, 0, 0, MOFF(to), "NODE", "the destination node", true, false},
    {"detach", OPT_BOOL, NULL, 0, 0, MOFF(detach), NULL,
     "start the migration and return instead of following it", false, false},
    {NULL},
};

static int endpoint_migrate_exec(struct cli_ctx *ctx)
{
    const struct endpoint_migrate_opts *o = ctx->opts;
    const char *name = ctx->args[0];
    struct api_response r = {0};
    json_t *body = NULL;

    int rv = cli_check_name(ctx, "--to", o->to);
    if (rv != CLI_OK)
        return rv;

    body = json_pack("{s:s}", "to", o->to);
    rv = cli_call(ctx, "POST", body, &r, "/v1/endpoints/%s/migrate", name);
    if (rv != CLI_OK)
        goto cleanup;
    /* The migration record, bare or as {"migration": {...}}. */
    json_t *m = json_object_get(r.body, "migration");
    if (!json_is_object(m))
        m = r.body;
    if (o->detach) {
        if (ctx->json) {
            cli_print_response(&r);
        } else {
            char id[CLI_CELL];
            cli_fmt_int(m, "id", id, sizeof(id));
            printf("migration %s started: %s -> %s; follow it with "
                   "'dvs-manager migration show %s'\n",
                   id, name, o->to, id);
        }
        goto cleanup;
    }
    if (!json_is_object(m)) {
        rv = cli_bad_answer("the migration is not a JSON object");
        goto cleanup;
    }
    rv = cli_migration_follow(ctx, m);
cleanup:
    api_response_clear(&r);
    json_decref(body);
    return rv;
}

static const struct cli_cmd endpoint_migrate_cmd = {
    .name = "migrate",
    .summary = "live-migrate an endpoint to another node",
    .description =
        "Move endpoint NAME to node --to while it keeps serving (pre-copy live\n"
        "migration). Without --detach the command shows the migration's phases\n"
        "and returns when it is committed (exit 0) or aborted (exit 1; the\n"
        "service then keeps running where it was).",
    .args = endpoint_name_arg,
    .opts = endpoint_migrate_opts,
    .opts_size = sizeof(struct endpoint_migrate_opts),
    .exec = endpoint_migrate_exec,
};

/* ------------------------------------------------------------------------ */

static const struct cli_cmd *const endpoint_cmds[] = {
    &endpoint_list_cmd,   &endpoint_show_cmd,    &endpoint_create_cmd, &endpoint_set_cmd,
    &endpoint_delete_cmd, &endpoint_migrate_cmd, NULL,
};

const struct cli_cmd cli_endpoint_cmd = {
    .name = "endpoint",
    .summary = "endpoints: the names of services and where they run",
    .description = "Create, inspect, move and delete endpoints (services known by a\n"
                   "location-independent name).",
    .sub = endpoint_cmds,
};
