/* /v1/endpoints: the endpoint directory (docs/api.md, DESIGN.md §2). */
#include <stdlib.h>
#include <string.h>

#include "common/util.h"
#include "dvs.h"
#include "manager/rest.h"

REST_READ_HANDLER(rest_get_endpoints)
static void rest_get_endpoints_now(struct api_req *req, void *data)
{
    struct mgr *m = data;
    if (mgr_watch_park(m, req, MGR_T_ENDPOINTS, mgr_fsm_table_index(m->fsm, MGR_T_ENDPOINTS),
                       rest_get_endpoints_now))
        return;
    rest_reply(m, req, 200, json_pack("{s:o}", "endpoints", mgr_fsm_endpoints(m->fsm)));
}

REST_READ_HANDLER(rest_get_endpoint)
static void rest_get_endpoint_now(struct api_req *req, void *data)
{
    struct mgr *m = data;
    const char *name = api_req_param(req, "name");
    json_t *e = mgr_fsm_endpoint(m->fsm, name);
    /*
     * A client waiting for a newer generation watches the row; a deleted
     * endpoint has no row, so watch the table index then.
     */
    uint64_t cur = e ? (uint64_t)json_integer_value(json_object_get(e, "modify_index"))
                     : mgr_fsm_table_index(m->fsm, MGR_T_ENDPOINTS);
    if (mgr_watch_park(m, req, MGR_T_ENDPOINTS, cur, rest_get_endpoint_now)) {
        json_decref(e);
        return;
    }
    if (!e) {
        api_reply_error(req, 404, "not_found", "name", "no endpoint %s", name);
        return;
    }
    rest_reply(m, req, 200, e);
}

void rest_post_endpoints(struct api_req *req, void *data)
{
    struct mgr *m = data;
    static const struct api_field fields[] = {
        {"name", API_J_STRING, true},
        {"command", API_J_STRING, true},
        {"cpu", API_J_NUMBER, false},
        {"mem", API_J_INT, false},
        {"arena", API_J_INT, false},
        {"node", API_J_STRING, false},
        {"auto_migrate", API_J_BOOL, false},
        {NULL},
    };
    json_t *body = rest_write_body(m, req, fields);
    if (!body)
        return;
    rest_propose(m, req, MGR_CMD_ENDPOINT_CREATE, body, 201);
}

void rest_patch_endpoint(struct api_req *req, void *data)
{
    struct mgr *m = data;
    static const struct api_field fields[] = {
        {"state", API_J_STRING, false},
        {"address", API_J_STRING, false},
        {"node", API_J_STRING, false},
        {"generation", API_J_INT, false},
        {"auto_migrate", API_J_BOOL, false},
        {NULL},
    };
    json_t *body = rest_write_body(m, req, fields);
    if (!body)
        return;
    if (json_object_size(body) == 0) {
        json_decref(body);
        api_reply_error(req, 400, "bad_request", NULL,
                        "nothing to change: give one or more of state, address, node, "
                        "generation, auto_migrate");
        return;
    }
    json_object_set_new(body, "name", json_string(api_req_param(req, "name")));
    rest_propose(m, req, MGR_CMD_ENDPOINT_UPDATE, body, 200);
}

void rest_delete_endpoint(struct api_req *req, void *data)
{
    struct mgr *m = data;
    if (!rest_leader_only(m, req))
        return;
    const char *name = api_req_param(req, "name");
    rest_propose(m, req, MGR_CMD_ENDPOINT_DELETE, json_pack("{s:s}", "name", name), 200);
}

/* POST /v1/endpoints/{name}/migrate {"to": NODE}: an operator's move. */
void rest_post_migrate(struct api_req *req, void *data)
{
    struct mgr *m = data;
    static const struct api_field fields[] = {
        {"to", API_J_STRING, true},
        {"reason", API_J_STRING, false},
        {NULL},
    };
    json_t *body = rest_write_body(m, req, fields);
    if (!body)
        return;
    const char *reason = json_string_value(json_object_get(body, "reason"));
    json_t *cmd = json_pack("{s:s,s:O,s:s,s:s}", "endpoint", api_req_param(req, "name"),
                            "destination", json_object_get(body, "to"), "reason",
                            reason ? reason : "manual", "explanation",
                            "requested by an operator");
    json_decref(body);
    rest_propose(m, req, MGR_CMD_MIGRATION_CREATE, cmd, 201);
}
