/* /v1/migrations: migration records (DESIGN.md §2 and §4). */
#include <stdlib.h>

#include "common/util.h"
#include "dvs.h"
#include "manager/rest.h"

REST_READ_HANDLER(rest_get_migrations)
static void rest_get_migrations_now(struct api_req *req, void *data)
{
    struct mgr *m = data;
    if (mgr_watch_park(m, req, MGR_T_MIGRATIONS,
                       mgr_fsm_table_index(m->fsm, MGR_T_MIGRATIONS), rest_get_migrations_now))
        return;
    rest_reply(m, req, 200, json_pack("{s:o}", "migrations", mgr_fsm_migrations(m->fsm)));
}

REST_READ_HANDLER(rest_get_migration)
static void rest_get_migration_now(struct api_req *req, void *data)
{
    struct mgr *m = data;
    const char *ids = api_req_param(req, "id");
    int64_t id;
    if (parse_int64(ids, &id) != 0 || id <= 0) {
        api_reply_error(req, 400, "bad_request", "id",
                        "migration id \"%s\" must be a positive integer", ids);
        return;
    }
    json_t *mig = mgr_fsm_migration(m->fsm, id);
    uint64_t cur = mig ? (uint64_t)json_integer_value(json_object_get(mig, "modify_index"))
                       : mgr_fsm_table_index(m->fsm, MGR_T_MIGRATIONS);
    if (mgr_watch_park(m, req, MGR_T_MIGRATIONS, cur, rest_get_migration_now)) {
        json_decref(mig);
        return;
    }
    if (!mig) {
        api_reply_error(req, 404, "not_found", "id", "no migration %s", ids);
        return;
    }
    rest_reply(m, req, 200, mig);
}

/*
 * PATCH /v1/migrations/{id}: an agent reports a phase (DESIGN.md §4). The FSM
 * enforces that phases only move forward and that a final phase is final, so
 * a late or duplicated report is refused with 409 rather than applied twice.
 */
void rest_patch_migration(struct api_req *req, void *data)
{
    struct mgr *m = data;
    static const struct api_field fields[] = {
        {"phase", API_J_STRING, true},
        {"bytes", API_J_INT, false},
        {"rounds", API_J_INT, false},
        {"downtime_ms", API_J_NUMBER, false},
        {"error", API_J_STRING, false},
        {"info", API_J_OBJECT, false},
        {"address", API_J_STRING, false},
        {NULL},
    };
    if (!rest_leader_only(m, req))
        return;
    const char *ids = api_req_param(req, "id");
    int64_t id;
    if (parse_int64(ids, &id) != 0 || id <= 0) {
        api_reply_error(req, 400, "bad_request", "id",
                        "migration id \"%s\" must be a positive integer", ids);
        return;
    }
    json_t *body = api_req_json(req, fields);
    if (!body)
        return;
    json_object_set_new(body, "id", json_integer(id));
    rest_propose(m, req, MGR_CMD_MIGRATION_UPDATE, body, 200);
}
