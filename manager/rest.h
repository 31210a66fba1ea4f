/*
 * Shared machinery of the manager's REST handlers (one file per resource:
 * rest_status.c, rest_members.c, rest_nodes.c, rest_endpoints.c,
 * rest_migrations.c; the route table is in rest.c). docs/api.md is the contract.
 */
#ifndef DVS_MANAGER_REST_H
#define DVS_MANAGER_REST_H

#include <jansson.h>
#include <stdbool.h>

#include "api/http.h"
#include "manager/daemon.h"

/*
 * Writes go to the leader. On a follower: 307 to the leader's HTTP address,
 * or 503 no_leader (with "leader": null and Retry-After) when none is known.
 * On a leader still waiting for its post-election barrier: 503 too.
 * Returns true when REQ may be handled here; false when it was answered.
 */
bool rest_leader_only(struct mgr *m, struct api_req *req);

/*
 * The start of every write handler with a body: rest_leader_only, then the
 * strict body check of api_req_json against FIELDS. Returns the body (a new
 * reference) or NULL when REQ has already been answered (redirect, 503, 400,
 * 413).
 */
json_t *rest_write_body(struct mgr *m, struct api_req *req, const struct api_field *fields);

/*
 * Propose a command on behalf of REQ and answer it when the outcome is known:
 * OK_STATUS with the FSM's object (or {}), or the error mapped through the
 * one error table. BODY is stolen. The request id comes from the
 * X-Dvs-Request-Id header when the client gave one (so a client retrying
 * after an unknown outcome is applied once), else it is random.
 */
void rest_propose(struct mgr *m, struct api_req *req, unsigned type, json_t *body,
                  unsigned ok_status);

/* Answer a read: adds X-Dvs-Index (the FSM index) and X-Dvs-Leader. BODY stolen. */
void rest_reply(struct mgr *m, struct api_req *req, unsigned status, json_t *body);

/*
 * ?consistent: only the leader answers, after a barrier (DESIGN.md §3,
 * RAFT.md item 10). Returns true when REQ was deferred or answered; NOW then
 * runs after the barrier (or never, if it failed and REQ got an error).
 */
bool rest_consistent(struct mgr *m, struct api_req *req, api_handler_fn now);

/* Declare a GET handler NAME that honours ?consistent and runs NAME##_now. */
#define REST_READ_HANDLER(name)                                   \
    static void name##_now(struct api_req *req, void *data);      \
    void name(struct api_req *req, void *data)                    \
    {                                                             \
        if (rest_consistent((struct mgr *)data, req, name##_now)) \
            return;                                               \
        name##_now(req, data);                                    \
    }

/* Handlers, by resource. */
void rest_get_status(struct api_req *req, void *data);
void rest_get_members(struct api_req *req, void *data);
void rest_post_members(struct api_req *req, void *data);
void rest_delete_member(struct api_req *req, void *data);
void rest_get_nodes(struct api_req *req, void *data);
void rest_get_node(struct api_req *req, void *data);
void rest_post_nodes(struct api_req *req, void *data);
void rest_post_heartbeat(struct api_req *req, void *data);
void rest_get_orders(struct api_req *req, void *data);
void rest_post_enable(struct api_req *req, void *data);
void rest_get_endpoints(struct api_req *req, void *data);
void rest_get_endpoint(struct api_req *req, void *data);
void rest_post_endpoints(struct api_req *req, void *data);
void rest_patch_endpoint(struct api_req *req, void *data);
void rest_delete_endpoint(struct api_req *req, void *data);
void rest_get_migrations(struct api_req *req, void *data);
void rest_get_migration(struct api_req *req, void *data);
void rest_patch_migration(struct api_req *req, void *data);
void rest_post_migrate(struct api_req *req, void *data);
void rest_get_metrics(struct api_req *req, void *data);
void rest_get_events(struct api_req *req, void *data); /* rest_events.c */
/* rest_plan.c: the scheduler's plan and node drains (DESIGN.md §6). */
void rest_get_plan(struct api_req *req, void *data);
void rest_post_drain(struct api_req *req, void *data);
void rest_delete_drain(struct api_req *req, void *data);

#endif
