/* The route table and the machinery every handler shares (rest.h). */
#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common/log.h"
#include "common/util.h"
#include "dvs.h"
#include "manager/rest.h"

/*
 * The access column (api/auth.h, docs/security.md): routes left at the
 * default need the management token to change anything and the read token
 * (when one is set) to read. The agent routes are what dvs-node calls
 * (node/mgr.c, node/service.c, node/migrate.c): registering, heartbeats,
 * the orders watch (which carries the migrations' transfer secrets), and the
 * reports on endpoints and migrations. The agent token opens those and the
 * reads, nothing else: it cannot create, delete, drain or move anything.
 */
#define AGENT API_ACCESS_AGENT

const struct api_route mgr_routes[] = {
    {"GET", "/v1/status", rest_get_status},
    {"GET", "/v1/members", rest_get_members},
    {"POST", "/v1/members", rest_post_members},
    {"DELETE", "/v1/members/{id}", rest_delete_member},
    {"GET", "/v1/nodes", rest_get_nodes},
    {"POST", "/v1/nodes", rest_post_nodes, AGENT},
    {"GET", "/v1/nodes/{id}", rest_get_node},
    {"POST", "/v1/nodes/{id}/heartbeat", rest_post_heartbeat, AGENT},
    {"GET", "/v1/nodes/{id}/orders", rest_get_orders, AGENT},
    {"POST", "/v1/nodes/{id}/enable", rest_post_enable},
    {"POST", "/v1/nodes/{id}/drain", rest_post_drain},
    {"DELETE", "/v1/nodes/{id}/drain", rest_delete_drain},
    {"GET", "/v1/endpoints", rest_get_endpoints},
    {"POST", "/v1/endpoints", rest_post_endpoints},
    {"GET", "/v1/endpoints/{name}", rest_get_endpoint},
    {"PATCH", "/v1/endpoints/{name}", rest_patch_endpoint, AGENT},
    {"DELETE", "/v1/endpoints/{name}", rest_delete_endpoint},
    {"POST", "/v1/endpoints/{name}/migrate", rest_post_migrate},
    {"GET", "/v1/migrations", rest_get_migrations},
    {"GET", "/v1/migrations/{id}", rest_get_migration},
    {"PATCH", "/v1/migrations/{id}", rest_patch_migration, AGENT},
    {"GET", "/v1/plan", rest_get_plan},
    {"GET", "/v1/events", rest_get_events},
    {"GET", "/metrics", rest_get_metrics},
    {NULL, NULL, NULL},
};

static void add_leader_header(struct mgr *m, struct api_req *req)
{
    char url[300], id[64];
    if (mgr_leader_http(m, url, sizeof(url), id, sizeof(id)))
        api_req_add_header(req, "X-Dvs-Leader", id);
}

void rest_reply(struct mgr *m, struct api_req *req, unsigned status, json_t *body)
{
    char idx[32];
    snprintf(idx, sizeof(idx), "%" PRIu64, mgr_fsm_index(m->fsm));
    api_req_add_header(req, "X-Dvs-Index", idx);
    add_leader_header(m, req);
    api_reply_json(req, status, body);
}

static void reply_no_leader(struct api_req *req, const char *why)
{
    api_req_add_header(req, "Retry-After", "1");
    api_reply_json(req, 503,
                   json_pack("{s:s,s:s,s:n}", "error", why, "code", "no_leader", "leader"));
}

bool rest_leader_only(struct mgr *m, struct api_req *req)
{
    if (m->stopping) {
        api_reply_err(req, DVS_ESHUTDOWN, NULL, NULL);
        return false;
    }
    if (mgr_is_leader(m)) {
        if (m->leader_ready)
            return true;
        reply_no_leader(req, "this member was just elected leader and is catching up; "
                             "retry in a moment");
        return false;
    }
    char url[300];
    if (mgr_leader_http(m, url, sizeof(url), NULL, 0)) {
        api_reply_redirect(req, url);
        return false;
    }
    reply_no_leader(req, "no leader is known right now (election in progress or no "
                         "quorum); retry in a moment");
    return false;
}

json_t *rest_write_body(struct mgr *m, struct api_req *req, const struct api_field *fields)
{
    if (!rest_leader_only(m, req))
        return NULL;
    return api_req_json(req, fields);
}

/* ---- Proposals on behalf of a request ---- */

struct rest_write {
    struct api_req *req; /* NULL once the client went away */
    unsigned ok_status;
};

static void write_req_closed(struct api_req *req, void *data)
{
    struct rest_write *w = data;
    w->req = NULL;
}

static void write_done(struct mgr *m, int status, struct mgr_fsm_result *res, void *data)
{
    struct rest_write *w = data;
    if (w->req) {
        api_req_on_close(w->req, NULL, NULL);
        if (status != 0) {
            api_reply_err(w->req, status, NULL,
                          status == DVS_EUNKNOWNOUTCOME
                              ? "leadership was lost before the change committed; it "
                                "may or may not have been applied: retry with the same "
                                "X-Dvs-Request-Id to apply it at most once"
                              : NULL);
        } else if (res->code != 0) {
            api_reply_err(w->req, res->code, res->field[0] ? res->field : NULL, res->msg);
        } else {
            json_t *obj = res->object ? res->object : json_object();
            res->object = NULL;
            rest_reply(m, w->req, w->ok_status, obj);
        }
    }
    free(w);
}

static uint64_t request_id_of(struct api_req *req, bool *ret_bad)
{
    const char *h = api_req_header(req, "X-Dvs-Request-Id");
    *ret_bad = false;
    if (!h)
        return 0;
    char *end;
    errno = 0;
    unsigned long long v = strtoull(h, &end, 0);
    if (errno || *end || end == h || v == 0) {
        *ret_bad = true;
        return 0;
    }
    return (uint64_t)v;
}

void rest_propose(struct mgr *m, struct api_req *req, unsigned type, json_t *body,
                  unsigned ok_status)
{
    bool bad;
    uint64_t rid = request_id_of(req, &bad);
    if (bad) {
        json_decref(body);
        api_reply_error(req, 400, "bad_request", "X-Dvs-Request-Id",
                        "header X-Dvs-Request-Id must be a non-zero 64-bit integer "
                        "(decimal or 0x-hex)");
        return;
    }
    struct rest_write *w = xcalloc(1, sizeof(*w));
    w->req = req;
    w->ok_status = ok_status;
    int rv = mgr_propose(m, type, body, rid, write_done, w);
    if (rv) {
        free(w);
        if (rv == DVS_ENOTLEADER)
            reply_no_leader(req, "leadership moved while the request was handled; retry");
        else if (rv == -EAGAIN)
            api_reply_error(req, 503, "busy", NULL,
                            "too many changes queued; retry in a moment");
        else
            api_reply_err(req, rv, NULL, NULL);
        return;
    }
    api_req_on_close(req, write_req_closed, w);
}

/* ---- Consistent reads ---- */

struct rest_barrier {
    struct raft_barrier b;
    struct mgr *m;
    struct api_req *req;
    api_handler_fn now;
};

static void barrier_req_closed(struct api_req *req, void *data)
{
    struct rest_barrier *rb = data;
    rb->req = NULL;
}

static void barrier_done(struct raft_barrier *b, int status)
{
    struct rest_barrier *rb = b->data;
    if (rb->req) {
        api_req_on_close(rb->req, NULL, NULL);
        if (status != 0)
            reply_no_leader(rb->req, "leadership was lost during the consistent read; retry");
        else
            rb->now(rb->req, rb->m);
    }
    free(rb);
}

bool rest_consistent(struct mgr *m, struct api_req *req, api_handler_fn now)
{
    if (!api_req_has_query(req, "consistent"))
        return false;
    if (!rest_leader_only(m, req))
        return true;
    struct rest_barrier *rb = xcalloc(1, sizeof(*rb));
    rb->b.data = rb;
    rb->m = m;
    rb->req = req;
    rb->now = now;
    int rv = raft_barrier(&m->raft, &rb->b, barrier_done);
    if (rv) {
        free(rb);
        reply_no_leader(req, "cannot run a consistent read right now; retry");
        return true;
    }
    api_req_on_close(req, barrier_req_closed, rb);
    return true;
}

/* ---- /v1/status ---- */

static const char *raft_state_name(unsigned short s)
{
    switch (s) {
    case RAFT_FOLLOWER:
        return "follower";
    case RAFT_CANDIDATE:
        return "candidate";
    case RAFT_LEADER:
        return "leader";
    default:
        return "unavailable";
    }
}

REST_READ_HANDLER(rest_get_status)
static void rest_get_status_now(struct api_req *req, void *data)
{
    struct mgr *m = data;
    json_t *leader = json_null();
    raft_id lid;
    const char *laddr;
    raft_leader(&m->raft, &lid, &laddr);
    char http[300], id[64];
    if (lid != 0 && mgr_leader_http(m, http, sizeof(http), id, sizeof(id)))
        leader = json_pack("{s:s,s:s,s:s}", "id", id, "raft_addr", laddr, "http_addr",
                           strstr(http, "://") ? strstr(http, "://") + 3 : http);
    else if (lid != 0 && laddr)
        leader = json_pack("{s:n,s:s,s:n}", "id", "raft_addr", laddr, "http_addr");
    json_t *counts = mgr_fsm_counts(m->fsm);
    json_t *body = json_pack(
        "{s:s,s:s,s:o,s:I,s:I,s:I,s:I,s:s,s:b}", "id", m->cfg.id, "state",
        raft_state_name(raft_state(&m->raft)), "leader", leader, "term",
        (json_int_t)m->raft.current_term, "commit_index", (json_int_t)m->raft.commit_index,
        "last_applied", (json_int_t)raft_last_applied(&m->raft), "index",
        (json_int_t)mgr_fsm_index(m->fsm), "version", PACKAGE_VERSION, "leader_ready",
        mgr_is_leader(m) && m->leader_ready);
    if (counts)
        json_object_update(body, counts);
    json_decref(counts);
    rest_reply(m, req, 200, body);
}
