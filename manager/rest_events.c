/*
 * GET /v1/events: the replicated event log (fsm.h, docs/api.md "Events").
 *
 * A blocking list like the others (watch.c): ?index=N returns the events
 * with index > N, and with &wait=D holds the request until there is one or
 * D has passed. Any member answers from its own FSM; since the log, and the
 * pruning of old events, is applied the same way everywhere, a client that
 * moves to another member (failover) continues where it was with the same
 * index.
 */
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>

#include "common/util.h"
#include "dvs.h"
#include "manager/rest.h"

#define EVENTS_LIMIT_DEFAULT 1000
#define EVENTS_LIMIT_MAX 10000

REST_READ_HANDLER(rest_get_events)
static void rest_get_events_now(struct api_req *req, void *data)
{
    struct mgr *m = data;

    /* Check limit before parking, so that a bad one is refused at once. */
    int64_t limit = EVENTS_LIMIT_DEFAULT;
    const char *ql = api_req_query(req, "limit");
    if (ql && (parse_int64(ql, &limit) != 0 || limit < 1 || limit > EVENTS_LIMIT_MAX)) {
        api_reply_error(req, 400, "bad_request", "limit",
                        "query parameter limit=\"%s\" must be an integer from 1 to %d", ql,
                        EVENTS_LIMIT_MAX);
        return;
    }
    if (mgr_watch_park(m, req, MGR_T_EVENTS, mgr_fsm_table_index(m->fsm, MGR_T_EVENTS),
                       rest_get_events_now))
        return;

    /* mgr_watch_park has validated index when present. */
    int64_t after = 0;
    const char *qi = api_req_query(req, "index");
    if (qi && (parse_int64(qi, &after) != 0 || after < 0))
        after = 0;

    bool more = false;
    json_t *events = mgr_fsm_events(m->fsm, (uint64_t)after, (unsigned)limit, &more);
    if (!events) {
        api_reply_err(req, DVS_EINTERNAL, NULL, "cannot read the event log");
        return;
    }
    /*
     * Where the client continues: past the last event it got when the page
     * was cut short, past everything this member has applied otherwise.
     * Events it can no longer get were pruned (retention): "missed" says so.
     */
    size_t n = json_array_size(events);
    uint64_t next = mgr_fsm_index(m->fsm);
    if (more && n > 0)
        next = (uint64_t)json_integer_value(json_object_get(json_array_get(events, n - 1),
                                                            "index"));
    if (next < (uint64_t)after)
        next = (uint64_t)after; /* a member behind the client: don't go back */
    bool pruned = false;
    uint64_t oldest = mgr_fsm_events_oldest(m->fsm, &pruned);
    /* Events of index > N may have been dropped: N is older than the oldest
     * kept event (which may share its index with dropped ones). */
    bool missed = pruned && (uint64_t)after < (oldest ? oldest : next);
    rest_reply(m, req, 200,
               json_pack("{s:o, s:I, s:b, s:I, s:b, s:I}", "events", events, "next_index",
                         (json_int_t)next, "more", (int)more, "oldest_index",
                         (json_int_t)oldest, "missed", (int)missed, "retention",
                         (json_int_t)mgr_fsm_events_retention(m->fsm)));
}
