/*
 * /v1/members: the Raft membership (DESIGN.md §3, RAFT.md item 15).
 *
 * The configuration lives in Raft; the members table of the FSM adds each
 * member's string id and HTTP address (raft_leader() only gives the Raft
 * address, and followers need the leader's HTTP address to redirect).
 * Adding is raft_add (as spare), then raft_assign to voter (libraft catches
 * the new member up first), then the MEMBER_SET entry. Removing the leader
 * itself first transfers leadership and redirects the request to the new
 * leader, which performs it.
 */
#include <stdlib.h>
#include <string.h>

#include "common/log.h"
#include "common/util.h"
#include "dvs.h"
#include "manager/rest.h"

#define COMP "members"

static const char *role_name(int role)
{
    switch (role) {
    case RAFT_VOTER:
        return "voter";
    case RAFT_STANDBY:
        return "standby";
    case RAFT_SPARE:
        return "spare";
    default:
        return "unknown";
    }
}

static const struct raft_server *config_find(struct mgr *m, raft_id id)
{
    const struct raft_configuration *c = &m->raft.configuration;
    for (unsigned i = 0; i < c->n; i++)
        if (c->servers[i].id == id)
            return &c->servers[i];
    return NULL;
}

REST_READ_HANDLER(rest_get_members)
static void rest_get_members_now(struct api_req *req, void *data)
{
    struct mgr *m = data;
    json_t *rows = mgr_fsm_members(m->fsm);
    json_t *out = json_array();
    raft_id lid;
    const char *laddr;
    raft_leader(&m->raft, &lid, &laddr);
    const struct raft_configuration *c = &m->raft.configuration;
    bool *listed = xcalloc(c->n ? c->n : 1, sizeof(bool));
    size_t i;
    json_t *row;
    json_array_foreach(rows, i, row)
    {
        const char *id = json_string_value(json_object_get(row, "id"));
        raft_id rid = mgr_raft_id(id ? id : "");
        const struct raft_server *s = config_find(m, rid);
        if (s)
            listed[s - c->servers] = true;
        json_t *o = json_deep_copy(row);
        json_object_set_new(o, "role", json_string(s ? role_name(s->role) : "removed"));
        json_object_set_new(o, "leader", json_boolean(s && rid == lid));
        json_array_append_new(out, o);
    }
    /* Members Raft knows but that have not announced their HTTP address yet. */
    for (unsigned k = 0; k < c->n; k++) {
        if (listed[k])
            continue;
        json_array_append_new(
            out, json_pack("{s:n,s:s,s:n,s:s,s:b}", "id", "raft_addr", c->servers[k].address,
                           "http_addr", "role", role_name(c->servers[k].role), "leader",
                           c->servers[k].id == lid));
    }
    free(listed);
    json_decref(rows);
    rest_reply(m, req, 200, json_pack("{s:o}", "members", out));
}

/* ---- POST /v1/members ---- */

struct member_change {
    struct raft_change change;
    struct mgr *m;
    struct api_req *req;
    char id[64];
    char raft_addr[64];
    char http_addr[256];
    bool remove;
};

static void change_req_closed(struct api_req *req, void *data)
{
    struct member_change *mc = data;
    mc->req = NULL;
}

static void change_fail(struct member_change *mc, int raft_rv, const char *what)
{
    if (mc->req) {
        api_req_on_close(mc->req, NULL, NULL);
        if (raft_rv == RAFT_CANTCHANGE)
            api_reply_error(mc->req, 409, "conflict", NULL,
                            "another membership change is in progress; retry when it is "
                            "done");
        else if (raft_rv == RAFT_NOTLEADER || raft_rv == RAFT_LEADERSHIPLOST)
            api_reply_error(mc->req, 503, "no_leader", NULL,
                            "leadership was lost during %s of member %s; retry", what,
                            mc->id);
        else
            api_reply_error(mc->req, 500, "internal", NULL, "%s of member %s failed: %s",
                            what, mc->id, raft_strerror(raft_rv));
    }
    log_warn(COMP, "%s of member %s failed: %s", what, mc->id, raft_strerror(raft_rv));
    free(mc);
}

/* Last step of both add and remove: record the change in the directory. */
static void record_member(struct member_change *mc)
{
    struct mgr *m = mc->m;
    json_t *body = mc->remove
                       ? json_pack("{s:s}", "id", mc->id)
                       : json_pack("{s:s,s:s,s:s}", "id", mc->id, "raft_addr", mc->raft_addr,
                                   "http_addr", mc->http_addr);
    log_info(COMP, "member %s %s", mc->id, mc->remove ? "removed" : "is a voter");
    if (mc->req) {
        api_req_on_close(mc->req, NULL, NULL);
        json_t *row = mc->remove ? mgr_fsm_member(m->fsm, mc->id) : NULL;
        bool no_row = mc->remove && !row;
        json_decref(row);
        if (no_row) {
            json_decref(body);
            rest_reply(m, mc->req, 200, json_pack("{s:s}", "removed", mc->id));
        } else {
            rest_propose(m, mc->req, mc->remove ? MGR_CMD_MEMBER_DEL : MGR_CMD_MEMBER_SET,
                         body, mc->remove ? 200 : 201);
        }
    } else {
        json_decref(body);
    }
    free(mc);
}

static void assigned(struct raft_change *req, int status)
{
    struct member_change *mc = req->data;
    if (status != 0)
        return change_fail(mc, status, mc->remove ? "removal" : "promotion to voter");
    record_member(mc);
}

static void added(struct raft_change *req, int status)
{
    struct member_change *mc = req->data;
    if (status != 0)
        return change_fail(mc, status, "addition");
    int rv = raft_assign(&mc->m->raft, &mc->change, mgr_raft_id(mc->id), RAFT_VOTER, assigned);
    if (rv != 0)
        change_fail(mc, rv, "promotion to voter");
}

void rest_post_members(struct api_req *req, void *data)
{
    struct mgr *m = data;
    static const struct api_field fields[] = {
        {"id", API_J_STRING, true},
        {"raft_addr", API_J_STRING, true},
        {"http_addr", API_J_STRING, true},
        {NULL},
    };
    json_t *body = rest_write_body(m, req, fields);
    if (!body)
        return;
    const char *id = json_string_value(json_object_get(body, "id"));
    const char *ra = json_string_value(json_object_get(body, "raft_addr"));
    const char *ha = json_string_value(json_object_get(body, "http_addr"));
    char host[256];
    uint16_t port;
    if (!mgr_valid_name(id)) {
        api_reply_error(req, 400, "bad_request", "id",
                        "member id \"%s\" is invalid: 1-63 characters of [a-z0-9_.-], "
                        "starting with a letter or digit",
                        id);
        goto out;
    }
    if (parse_hostport(ra, true, host, sizeof(host), &port) != 0) {
        api_reply_error(req, 400, "bad_request", "raft_addr",
                        "raft_addr \"%s\" must be an IPv4 address and port (A.B.C.D:PORT)",
                        ra);
        goto out;
    }
    if (parse_hostport(ha, false, host, sizeof(host), &port) != 0) {
        api_reply_error(req, 400, "bad_request", "http_addr",
                        "http_addr \"%s\" must be HOST:PORT", ha);
        goto out;
    }
    raft_id rid = mgr_raft_id(id);
    const struct raft_configuration *c = &m->raft.configuration;
    for (unsigned i = 0; i < c->n; i++) {
        if (c->servers[i].id != rid && strcmp(c->servers[i].address, ra) == 0) {
            api_reply_error(req, 409, "conflict", "raft_addr",
                            "raft_addr %s already belongs to another member", ra);
            goto out;
        }
    }
    struct member_change *mc = xcalloc(1, sizeof(*mc));
    mc->m = m;
    mc->req = req;
    mc->change.data = mc;
    snprintf(mc->id, sizeof(mc->id), "%s", id);
    snprintf(mc->raft_addr, sizeof(mc->raft_addr), "%s", ra);
    snprintf(mc->http_addr, sizeof(mc->http_addr), "%s", ha);
    api_req_on_close(req, change_req_closed, mc);

    const struct raft_server *s = config_find(m, rid);
    int rv = 0;
    if (s && strcmp(s->address, ra) != 0) {
        api_req_on_close(req, NULL, NULL);
        free(mc);
        api_reply_error(req, 409, "conflict", "raft_addr",
                        "member %s exists with raft_addr %s; remove it first to change "
                        "its address",
                        id, s->address);
        goto out;
    } else if (s && s->role == RAFT_VOTER) {
        record_member(mc); /* known already: just (re)record its addresses */
    } else if (s) {
        log_info(COMP, "promoting member %s (%s) to voter", id, ra);
        rv = raft_assign(&m->raft, &mc->change, rid, RAFT_VOTER, assigned);
    } else {
        log_info(COMP, "adding member %s raft=%s http=%s", id, ra, ha);
        rv = raft_add(&m->raft, &mc->change, rid, ra, added);
    }
    if (rv != 0)
        change_fail(mc, rv, s ? "promotion to voter" : "addition");
out:
    json_decref(body);
}

/* ---- DELETE /v1/members/{id} ---- */

struct member_transfer {
    struct raft_transfer t;
    struct mgr *m;
    struct api_req *req;
};

static void transfer_req_closed(struct api_req *req, void *data)
{
    struct member_transfer *mt = data;
    mt->req = NULL;
}

static void transferred(struct raft_transfer *t)
{
    struct member_transfer *mt = t->data;
    struct mgr *m = mt->m;
    if (mt->req) {
        api_req_on_close(mt->req, NULL, NULL);
        char url[300];
        /* The new leader performs the removal: send the client there. */
        if (!mgr_is_leader(m) && mgr_leader_http(m, url, sizeof(url), NULL, 0)) {
            api_reply_redirect(mt->req, url);
        } else {
            api_req_add_header(mt->req, "Retry-After", "1");
            api_reply_error(mt->req, 503, "no_leader", NULL,
                            "leadership is being transferred away from this member before "
                            "it is removed; retry");
        }
    }
    free(mt);
}

void rest_delete_member(struct api_req *req, void *data)
{
    struct mgr *m = data;
    if (!rest_leader_only(m, req))
        return;
    const char *id = api_req_param(req, "id");
    raft_id rid = mgr_raft_id(id);
    const struct raft_server *s = config_find(m, rid);
    if (!s) {
        api_reply_error(req, 404, "not_found", "id", "no member %s in the configuration", id);
        return;
    }
    if (rid == m->id) {
        unsigned voters = 0;
        for (unsigned i = 0; i < m->raft.configuration.n; i++)
            voters += m->raft.configuration.servers[i].role == RAFT_VOTER;
        if (voters < 2) {
            api_reply_error(req, 409, "conflict", "id",
                            "member %s is the only voter; it cannot be removed", id);
            return;
        }
        struct member_transfer *mt = xcalloc(1, sizeof(*mt));
        mt->m = m;
        mt->req = req;
        mt->t.data = mt;
        log_info(COMP, "transferring leadership before removing this member (%s)", id);
        int rv = raft_transfer(&m->raft, &mt->t, 0, transferred);
        if (rv) {
            free(mt);
            api_reply_error(req, 409, "conflict", NULL,
                            "cannot transfer leadership before removing %s: %s", id,
                            raft_strerror(rv));
            return;
        }
        api_req_on_close(req, transfer_req_closed, mt);
        return;
    }
    struct member_change *mc = xcalloc(1, sizeof(*mc));
    mc->m = m;
    mc->req = req;
    mc->remove = true;
    mc->change.data = mc;
    snprintf(mc->id, sizeof(mc->id), "%s", id);
    api_req_on_close(req, change_req_closed, mc);
    log_info(COMP, "removing member %s", id);
    int rv = raft_remove(&m->raft, &mc->change, rid, assigned);
    if (rv)
        change_fail(mc, rv, "removal");
}
