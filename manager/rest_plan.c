/*
 * The scheduler's REST resources (DESIGN.md §6, docs/api.md):
 *
 *   GET    /v1/plan[?node=N[&drain=1]]  what the scheduler would do now, and why
 *   POST   /v1/nodes/{id}/drain          start a drain (or a dry run of one)
 *   DELETE /v1/nodes/{id}/drain          cancel it
 *
 * Plans are answered by the leader only (followers redirect): the windows of
 * the policies ("above the high mark for 2 minutes") live in the leader's
 * memory, and a plan computed without them would not be what will happen.
 * A drain is a node state; the maintenance policy of the leader's scheduler
 * does the moving (sched_glue.c).
 */
#include <inttypes.h>
#include <stdlib.h>
#include <string.h>

#include "common/log.h"
#include "common/util.h"
#include "dvs.h"
#include "manager/rest.h"

#define COMP "rest"

/* Deadlines a drain accepts, besides 0 (none): as the CLI's --deadline. */
#define DRAIN_DEADLINE_MIN_MS 1000
#define DRAIN_DEADLINE_MAX_MS (7 * 24 * 3600 * 1000LL)

/* ?drain=1: "1", "true" or no value mean yes; "0", "false" no. */
static bool parse_flag(const char *v, bool *ret)
{
    if (!v || !*v || !strcmp(v, "1") || !strcmp(v, "true")) {
        *ret = true;
        return true;
    }
    if (!strcmp(v, "0") || !strcmp(v, "false")) {
        *ret = false;
        return true;
    }
    return false;
}

static void reply_plan(struct mgr *m, struct api_req *req, const char *node, bool drain)
{
    char err[512] = "";
    json_t *plan = NULL;
    int rc = mgr_sched_plan(m, node, drain, &plan, err, sizeof(err));
    if (rc == DVS_ENOTFOUND) {
        api_reply_error(req, 404, "not_found", "node", "%s", err);
        return;
    }
    if (rc == DVS_ECONFLICT) {
        api_reply_error(req, 409, "conflict", "node", "%s", err);
        return;
    }
    if (rc != 0) {
        /* The view comes from our own FSM: a refusal is a bug worth a log line. */
        log_error(COMP, "plan%s%s: %s", node ? " node=" : "", node ? node : "",
                  err[0] ? err : dvs_strerror(rc));
        api_reply_err(req, rc == -ENOMEM ? -ENOMEM : DVS_EINTERNAL, NULL,
                      err[0] ? err : NULL);
        return;
    }
    rest_reply(m, req, 200, plan);
}

void rest_get_plan(struct api_req *req, void *data)
{
    struct mgr *m = data;
    const char *node = api_req_query(req, "node");
    bool drain = false;

    if (!rest_leader_only(m, req))
        return;
    if (api_req_has_query(req, "drain") && !parse_flag(api_req_query(req, "drain"), &drain)) {
        api_reply_error(req, 400, "bad_request", "drain",
                        "drain=%s: expected 1 or true (a drain dry run), 0 or false",
                        api_req_query(req, "drain"));
        return;
    }
    if (node && !mgr_valid_name(node)) {
        api_reply_error(req, 400, "bad_request", "node",
                        "node=%s: not a node id (1-63 characters of [a-z0-9_.-])", node);
        return;
    }
    if (drain && !node) {
        api_reply_error(req, 400, "bad_request", "drain",
                        "drain=1 needs node=NODE: the node whose drain to plan");
        return;
    }
    reply_plan(m, req, node, drain);
}

/*
 * POST /v1/nodes/{id}/drain {"deadline_ms"?, "dry_run"?}. The node becomes
 * draining and ineligible at once; the maintenance policy then moves its
 * endpoints a few at a time and marks it drained when none is left and no
 * migration touching it is in flight. Starting a drain of a draining node
 * changes its deadline (when one is given); of a drained node, nothing.
 */
void rest_post_drain(struct api_req *req, void *data)
{
    struct mgr *m = data;
    static const struct api_field fields[] = {
        {"deadline_ms", API_J_INT, false},
        {"dry_run", API_J_BOOL, false},
        {NULL},
    };
    json_t *body = rest_write_body(m, req, fields);
    if (!body)
        return;
    const char *id = api_req_param(req, "id");
    json_t *deadline = json_object_get(body, "deadline_ms");
    bool dry_run = json_is_true(json_object_get(body, "dry_run"));
    int64_t deadline_ms = deadline ? (int64_t)json_integer_value(deadline)
                                   : m->cfg.drain_deadline_ms;
    json_t *n = NULL;

    if (deadline && deadline_ms != 0 &&
        (deadline_ms < DRAIN_DEADLINE_MIN_MS || deadline_ms > DRAIN_DEADLINE_MAX_MS)) {
        api_reply_error(req, 400, "bad_request", "deadline_ms",
                        "deadline_ms %" PRId64 ": expected 0 (no deadline) or %d to %lld ms",
                        deadline_ms, DRAIN_DEADLINE_MIN_MS, DRAIN_DEADLINE_MAX_MS);
        goto out;
    }
    n = mgr_fsm_node(m->fsm, id);
    if (!n) {
        api_reply_error(req, 404, "not_found", "id", "no node %s (see GET /v1/nodes)", id);
        goto out;
    }
    if (dry_run) {
        reply_plan(m, req, id, true);
        goto out;
    }

    const char *state = json_string_value(json_object_get(n, "state"));
    if (!state || (strcmp(state, "up") && strcmp(state, "draining") && strcmp(state, "drained"))) {
        api_reply_error(req, 409, "conflict", "id",
                        "node %s is %s: only an up node can be drained (its endpoints are "
                        "live-migrated, which needs its agent running)",
                        id, state ? state : "in an unknown state");
        goto out;
    }
    if (!strcmp(state, "drained") || (!strcmp(state, "draining") && !deadline)) {
        rest_reply(m, req, 200, n); /* already done, or under way */
        n = NULL;
        goto out;
    }

    char when[32], reason[160];
    if (deadline_ms > 0)
        format_duration(deadline_ms, when, sizeof(when));
    snprintf(reason, sizeof(reason), "drain requested by an operator (%s%s)",
             deadline_ms > 0 ? "deadline " : "no deadline", deadline_ms > 0 ? when : "");
    log_info(COMP, "node=%s drain requested deadline=%s", id, deadline_ms > 0 ? when : "none");
    /* "from": the state checked above, so that a change meanwhile is refused, not overrun. */
    rest_propose(m, req, MGR_CMD_NODE_STATE,
                 json_pack("{s:s,s:s,s:s,s:b,s:s,s:I}", "id", id, "state", "draining", "from",
                           state, "eligible", 0, "reason", reason, "drain_deadline",
                           (json_int_t)(deadline_ms > 0 ? now_wall_ms() + deadline_ms : 0)),
                 200);
out:
    json_decref(n);
    json_decref(body);
}

/* ---- DELETE /v1/nodes/{id}/drain ---- */

struct cancel {
    struct api_req *req; /* NULL once the client went away */
    char node[64];
};

static void cancel_req_closed(struct api_req *req, void *data)
{
    struct cancel *c = data;
    (void)req;
    c->req = NULL;
}

static void abort_done(struct mgr *m, int status, struct mgr_fsm_result *res, void *data)
{
    (void)m;
    int64_t id = (int64_t)(intptr_t)data;
    if (status != 0 || res->code != 0)
        log_info(COMP, "migration=%" PRId64 " not aborted: %s", id,
                 status ? dvs_strerror(status) : res->msg);
}

/*
 * The drain is cancelled: its moves that have not started yet (planned: no
 * agent has copied anything) are aborted, so the node keeps its endpoints.
 * Moves under way are left to finish: they are live migrations, and
 * aborting one halfway costs more than letting it commit.
 */
static void abort_planned_moves(struct mgr *m, const char *node)
{
    json_t *orders = mgr_fsm_orders(m->fsm, node);
    json_t *migs = json_object_get(orders, "migrations");
    size_t i;
    json_t *g;
    char why[128];
    snprintf(why, sizeof(why), "the drain of %s was cancelled before this move started", node);
    json_array_foreach(migs, i, g)
    {
        const char *src = json_string_value(json_object_get(g, "source"));
        const char *reason = json_string_value(json_object_get(g, "reason"));
        const char *phase = json_string_value(json_object_get(g, "phase"));
        if (!src || strcmp(src, node) || !reason || strcmp(reason, "maintenance") || !phase ||
            strcmp(phase, "planned"))
            continue;
        json_int_t id = json_integer_value(json_object_get(g, "id"));
        log_info(COMP, "migration=%lld endpoint=%s aborting: %s", (long long)id,
                 json_string_value(json_object_get(g, "endpoint")), why);
        int rv = mgr_propose(m, MGR_CMD_MIGRATION_UPDATE,
                             json_pack("{s:I,s:s,s:s}", "id", id, "phase", "aborted", "error",
                                       why),
                             0, abort_done, (void *)(intptr_t)id);
        if (rv)
            log_warn(COMP, "migration=%lld not aborted: %s", (long long)id, dvs_strerror(rv));
    }
    json_decref(orders);
}

static void cancel_done(struct mgr *m, int status, struct mgr_fsm_result *res, void *data)
{
    struct cancel *c = data;
    bool ok = status == 0 && res->code == 0;
    if (ok) {
        log_info(COMP, "node=%s drain cancelled", c->node);
        abort_planned_moves(m, c->node);
    }
    if (c->req) {
        api_req_on_close(c->req, NULL, NULL);
        if (status != 0)
            api_reply_err(c->req, status, NULL, NULL);
        else if (res->code != 0)
            api_reply_err(c->req, res->code, res->field[0] ? res->field : NULL, res->msg);
        else {
            json_t *obj = res->object ? res->object : json_object();
            res->object = NULL;
            rest_reply(m, c->req, 200, obj);
        }
    }
    free(c);
}

void rest_delete_drain(struct api_req *req, void *data)
{
    struct mgr *m = data;
    if (!rest_leader_only(m, req))
        return;
    const char *id = api_req_param(req, "id");
    json_t *n = mgr_fsm_node(m->fsm, id);
    if (!n) {
        api_reply_error(req, 404, "not_found", "id", "no node %s (see GET /v1/nodes)", id);
        return;
    }
    const char *state = json_string_value(json_object_get(n, "state"));
    if (!state || (strcmp(state, "draining") && strcmp(state, "drained"))) {
        api_reply_error(req, 409, "conflict", "id",
                        "node %s is %s: there is no drain to cancel (POST /v1/nodes/%s/enable "
                        "makes an ineligible node eligible again)",
                        id, state ? state : "in an unknown state", id);
        json_decref(n);
        return;
    }
    json_t *body = json_pack("{s:s,s:s,s:s,s:b,s:s}", "id", id, "state", "up", "from", state,
                             "eligible", 1, "reason", "drain cancelled by an operator");
    json_decref(n);

    struct cancel *c = xcalloc(1, sizeof(*c));
    c->req = req;
    snprintf(c->node, sizeof(c->node), "%s", id);
    int rv = mgr_propose(m, MGR_CMD_NODE_STATE, body, 0, cancel_done, c);
    if (rv) {
        free(c);
        api_reply_err(req, rv, NULL, NULL);
        return;
    }
    api_req_on_close(req, cancel_req_closed, c);
}
