/*
 * "member": the manager's own Raft membership (DESIGN.md §3, "Membership").
 * list, add (joins as a spare, catches up, then votes) and remove (the
 * leader hands over leadership first when it is the one leaving).
 */
#include <stdio.h>
#include <string.h>

#include "manager/cli_internal.h"

static const struct cli_arg member_id_arg[] = {
    {"ID", CLI_ARG_NAME, "the member's id, e.g. m2"},
    {NULL},
};

/* ------------------------------------------------------------------------ */
/* member list                                                                */
/* ------------------------------------------------------------------------ */

static int member_list_render(struct cli_ctx *ctx, json_t *body)
{
    static const char *const headers[] = {"ID",        "ROLE",      "LEADER",
                                          "RAFT_ADDR", "HTTP_ADDR", NULL};
    json_t *members = json_object_get(body, "members");
    json_t *m;
    size_t i;

    if (!json_is_array(members))
        return cli_bad_answer("no \"members\" array");
    struct cli_table *t = cli_table_new(headers);
    json_array_foreach(members, i, m)
    {
        char leader[CLI_CELL];
        cli_table_add(t, cli_str(m, "id"));
        cli_table_add(t, cli_str(m, "role"));
        cli_table_add(t, cli_fmt_bool(m, "leader", leader, sizeof(leader)));
        cli_table_add(t, cli_str(m, "raft_addr"));
        cli_table_add(t, cli_str(m, "http_addr"));
    }
    cli_table_print(t, stdout);
    cli_table_free(t);
    return CLI_OK;
}

static int member_list_exec(struct cli_ctx *ctx)
{
    return cli_show(ctx, member_list_render, "/v1/members");
}

static const struct cli_cmd member_list_cmd = {
    .name = "list",
    .summary = "list manager members and their Raft roles",
    .exec = member_list_exec,
};

/* ------------------------------------------------------------------------ */
/* member add                                                                 */
/* ------------------------------------------------------------------------ */

static int member_add_exec(struct cli_ctx *ctx)
{
    const char *id = ctx->args[0];
    struct api_response r;
    json_t *body = json_pack("{s:s,s:s,s:s}", "id", id, "raft_addr", ctx->args[1],
                             "http_addr", ctx->args[2]);

    int rv = cli_call(ctx, "POST", body, &r, "/v1/members");
    if (rv != CLI_OK)
        goto cleanup;
    if (ctx->json) {
        cli_print_response(&r);
        goto cleanup;
    }
    const char *role = r.body ? cli_str(r.body, "role") : NULL;
    if (role && strcmp(role, "voter") == 0)
        printf("member %s added as a voter\n", id);
    else
        printf("member %s added as %s; it becomes a voter once it has caught up\n", id,
               role ? role : "a spare");
cleanup:
    api_response_clear(&r);
    json_decref(body);
    return rv;
}

static const struct cli_arg member_add_args[] = {
    {"ID", CLI_ARG_NAME, "the new member's id (its dvs-manager serve --id)"},
    {"RAFT_ADDR", CLI_ARG_RAFTADDR, "its Raft address, A.B.C.D:PORT (--raft-addr)"},
    {"HTTP_ADDR", CLI_ARG_HOSTPORT, "its REST address, HOST:PORT (--http-addr)"},
    {NULL},
};

static const struct cli_cmd member_add_cmd = {
    .name = "add",
    .summary = "add a manager member",
    .description =
        "Add a member to the manager's Raft cluster. It joins as a spare, catches\n"
        "up with the log, and is then promoted to voter. Start the new member with\n"
        "'dvs-manager serve --join URL' (or add it here first, then start it).",
    .args = member_add_args,
    .exec = member_add_exec,
};

/* ------------------------------------------------------------------------ */
/* member remove                                                              */
/* ------------------------------------------------------------------------ */

static int member_remove_exec(struct cli_ctx *ctx)
{
    const char *id = ctx->args[0];
    struct api_response r;

    int rv = cli_call(ctx, "DELETE", NULL, &r, "/v1/members/%s", id);
    if (rv != CLI_OK)
        goto cleanup;
    if (ctx->json)
        cli_print_response(&r);
    else
        printf("member %s removed\n", id);
cleanup:
    api_response_clear(&r);
    return rv;
}

static const struct cli_cmd member_remove_cmd = {
    .name = "remove",
    .summary = "remove a manager member",
    .description =
        "Remove a member from the manager's Raft cluster. When it is the leader,\n"
        "leadership is transferred to another voter first. Stop its daemon\n"
        "afterwards.",
    .args = member_id_arg,
    .exec = member_remove_exec,
};

/* ------------------------------------------------------------------------ */

static const struct cli_cmd *const member_cmds[] = {
    &member_list_cmd,
    &member_add_cmd,
    &member_remove_cmd,
    NULL,
};

const struct cli_cmd cli_member_cmd = {
    .name = "member",
    .summary = "manager members (the Raft cluster itself)",
    .description = "Inspect and change the set of dvs-manager members (Raft voters,\n"
                   "standbys and spares).",
    .sub = member_cmds,
};
