/* /v1/nodes: the node registry, heartbeats and per-node orders (docs/api.md). */
#include <stdlib.h>
#include <string.h>

#include "common/util.h"
#include "dvs.h"
#include "manager/rest.h"

static uint64_t max3(uint64_t a, uint64_t b, uint64_t c)
{
    uint64_t x = a > b ? a : b;
    return x > c ? x : c;
}

/* On the leader, add how long ago each node was last heard from. */
static void add_heartbeat_age(struct mgr *m, json_t *node)
{
    const char *id = json_string_value(json_object_get(node, "id"));
    int64_t age = id ? mgr_leader_last_seen_ms(m, id) : -1;
    if (age >= 0)
        json_object_set_new(node, "heartbeat_age_ms", json_integer(age));
}

REST_READ_HANDLER(rest_get_nodes)
static void rest_get_nodes_now(struct api_req *req, void *data)
{
    struct mgr *m = data;
    uint64_t cur = max3(mgr_fsm_table_index(m->fsm, MGR_T_NODES),
                        mgr_fsm_table_index(m->fsm, MGR_T_LOAD), 0);
    if (mgr_watch_park(m, req, MGR_T_NODES | MGR_T_LOAD, cur, rest_get_nodes_now))
        return;
    json_t *nodes = mgr_fsm_nodes(m->fsm);
    size_t i;
    json_t *n;
    json_array_foreach(nodes, i, n) add_heartbeat_age(m, n);
    rest_reply(m, req, 200, json_pack("{s:o}", "nodes", nodes));
}

REST_READ_HANDLER(rest_get_node)
static void rest_get_node_now(struct api_req *req, void *data)
{
    struct mgr *m = data;
    const char *id = api_req_param(req, "id");
    json_t *n = mgr_fsm_node(m->fsm, id);
    uint64_t cur = n ? (uint64_t)json_integer_value(json_object_get(n, "modify_index")) : 0;
    /* A node's load changes without touching its row: watch the load too. */
    uint64_t load = mgr_fsm_table_index(m->fsm, MGR_T_LOAD);
    if (mgr_watch_park(m, req, MGR_T_NODES | MGR_T_LOAD, cur > load ? cur : load,
                       rest_get_node_now)) {
        json_decref(n);
        return;
    }
    if (!n) {
        api_reply_error(req, 404, "not_found", "id", "no node %s (see GET /v1/nodes)", id);
        return;
    }
    add_heartbeat_age(m, n);
    rest_reply(m, req, 200, n);
}

void rest_post_nodes(struct api_req *req, void *data)
{
    struct mgr *m = data;
    static const struct api_field fields[] = {
        {"id", API_J_STRING, true},
        {"address", API_J_STRING, true},
        {"cpu", API_J_NUMBER, true},
        {"mem", API_J_INT, true},
        {NULL},
    };
    json_t *body = rest_write_body(m, req, fields);
    if (!body)
        return;
    /* The FSM validates every field again, deterministically, on apply. */
    rest_propose(m, req, MGR_CMD_NODE_REGISTER, body, 200);
}

void rest_post_heartbeat(struct api_req *req, void *data)
{
    struct mgr *m = data;
    static const struct api_field fields[] = {
        {"cpu_used", API_J_NUMBER, false},
        {"mem_used", API_J_NUMBER, false},
        {"rps", API_J_NUMBER, false},
        {NULL},
    };
    json_t *body = rest_write_body(m, req, fields);
    if (!body)
        return;
    const char *k;
    json_t *v;
    json_object_foreach(body, k, v)
    {
        if (json_number_value(v) < 0) {
            api_reply_error(req, 400, "bad_request", k,
                            "%s must be a non-negative number", k);
            json_decref(body);
            return;
        }
    }
    json_t *out = NULL;
    int rv = mgr_leader_heartbeat(m, api_req_param(req, "id"), body, &out);
    json_decref(body);
    if (rv) {
        api_reply_error(req, 404, "not_found", "id",
                        "node %s is not registered (POST /v1/nodes first)",
                        api_req_param(req, "id"));
        return;
    }
    rest_reply(m, req, 200, out);
}

REST_READ_HANDLER(rest_get_orders)
static void rest_get_orders_now(struct api_req *req, void *data)
{
    struct mgr *m = data;
    const char *id = api_req_param(req, "id");
    uint64_t cur = max3(mgr_fsm_table_index(m->fsm, MGR_T_ENDPOINTS),
                        mgr_fsm_table_index(m->fsm, MGR_T_MIGRATIONS),
                        mgr_fsm_table_index(m->fsm, MGR_T_NODES));
    if (mgr_watch_park(m, req, MGR_T_ENDPOINTS | MGR_T_MIGRATIONS | MGR_T_NODES, cur,
                       rest_get_orders_now))
        return;
    json_t *o = mgr_fsm_orders(m->fsm, id);
    if (!o) {
        api_reply_error(req, 404, "not_found", "id", "no node %s", id);
        return;
    }
    rest_reply(m, req, 200, o);
}

void rest_post_enable(struct api_req *req, void *data)
{
    struct mgr *m = data;
    if (!rest_leader_only(m, req))
        return;
    const char *id = api_req_param(req, "id");
    json_t *n = mgr_fsm_node(m->fsm, id);
    if (!n) {
        api_reply_error(req, 404, "not_found", "id", "no node %s", id);
        return;
    }
    json_decref(n);
    rest_propose(m, req, MGR_CMD_NODE_STATE,
                 json_pack("{s:s,s:s,s:b,s:s}", "id", id, "state", "up", "eligible", 1,
                           "reason", "enabled by operator"),
                 200);
}
