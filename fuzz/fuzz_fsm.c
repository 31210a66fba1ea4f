/*
 * The manager FSM's command bodies (manager/fsm.c): the JSON each command
 * type carries is what the REST handlers build from user input, and apply
 * must validate it all, since a log entry is applied on every member.
 *
 * Input: up to 8 lines "TYPE JSON" (TYPE a decimal command type; a line
 * starting with '=' reuses the previous request id, a retry). Each is
 * applied to an in-memory FSM restored from a fixed starting state (members,
 * two nodes, two running endpoints, a migration in progress), so there is
 * something to update, move and delete.
 *
 * Properties (fsm.h): apply returns res.code; a failed command names what
 * was wrong and changes nothing at all (the state is compared before and
 * after, all tables but the request memory and the modify index); every
 * command advances the index by exactly one; the queries the REST API
 * serves work on whatever state results; and a snapshot of it restores to
 * the same state.
 */
#include <errno.h>
#include <string.h>

#include "dvs.h"
#include "fuzz/fuzz.h"
#include "manager/cmd.h"
#include "manager/fsm.h"

#include <sqlite3.h>

#define FUZZ_FSM_MAX_CMDS 8

static void *base_snap;
static size_t base_len;
/* Opened once: restoring a snapshot into an open FSM is much cheaper than
 * opening one, and leaves nothing of the previous input behind. */
static struct mgr_fsm *fsm, *copy;

/* The state a command may change: everything but the index, the request
 * sequence and the request memory, which every command advances. */
static json_t *state_of(struct mgr_fsm *f)
{
    json_t *dump = mgr_fsm_dump(f);
    FUZZ_CHECK(dump != NULL);
    json_t *meta = json_object_get(dump, "meta");
    FUZZ_CHECK(json_is_array(meta));
    for (size_t i = json_array_size(meta); i-- > 0;) {
        const char *key = json_string_value(json_object_get(json_array_get(meta, i), "key"));
        if (key && (!strcmp(key, "index") || !strcmp(key, "request_seq")))
            json_array_remove(meta, i);
    }
    json_object_del(dump, "requests");
    return dump;
}

static int apply_text(struct mgr_fsm *f, unsigned type, uint64_t rid, int64_t now,
                      const char *json)
{
    json_error_t jerr;
    json_t *body = json_loads(json, 0, &jerr);
    FUZZ_CHECK(body != NULL);
    struct mgr_cmd cmd = {.type = (uint16_t)type, .request_id = rid, .time_ms = now,
                          .body = body};
    struct mgr_fsm_result res = {0};
    int rc = mgr_fsm_apply(f, &cmd, &res);
    mgr_fsm_result_clear(&res);
    json_decref(body);
    return rc;
}

static void base_state(void)
{
    static const struct {
        unsigned type;
        const char *json;
    } setup[] = {
        {MGR_CMD_MEMBER_SET, "{\"id\":\"m1\",\"raft_addr\":\"127.0.0.1:7101\",\"http_addr\":\"127.0.0.1:7001\"}"},
        {MGR_CMD_NODE_REGISTER, "{\"id\":\"n1\",\"address\":\"10.0.0.1:7100\",\"cpu\":4,\"mem\":8589934592}"},
        {MGR_CMD_NODE_REGISTER, "{\"id\":\"n2\",\"address\":\"10.0.0.2:7100\",\"cpu\":4,\"mem\":8589934592}"},
        {MGR_CMD_ENDPOINT_CREATE, "{\"name\":\"kv\",\"command\":\"/bin/svc\",\"cpu\":1,\"mem\":1048576,\"node\":\"n1\"}"},
        {MGR_CMD_ENDPOINT_UPDATE, "{\"name\":\"kv\",\"state\":\"running\",\"address\":\"10.0.0.1:9000\"}"},
        {MGR_CMD_ENDPOINT_CREATE, "{\"name\":\"db\",\"command\":\"/bin/svc\",\"cpu\":1,\"mem\":1048576,\"node\":\"n2\"}"},
        {MGR_CMD_ENDPOINT_UPDATE, "{\"name\":\"db\",\"state\":\"running\",\"address\":\"10.0.0.2:9000\"}"},
        {MGR_CMD_MIGRATION_CREATE, "{\"endpoint\":\"kv\",\"destination\":\"n2\",\"reason\":\"manual\"}"},
        {MGR_CMD_LOAD_SUMMARY, "{\"nodes\":[{\"id\":\"n1\",\"cpu\":1.5,\"mem\":1000,\"rps\":20.5}]}"},
    };
    FUZZ_CHECK(mgr_fsm_open(&fsm) == 0);
    for (size_t i = 0; i < sizeof(setup) / sizeof(setup[0]); i++)
        FUZZ_CHECK(apply_text(fsm, setup[i].type, i + 1, 1700000000000 + (int64_t)i,
                              setup[i].json) == 0);
    FUZZ_CHECK(mgr_fsm_snapshot(fsm, &base_snap, &base_len) == 0);
    FUZZ_CHECK(mgr_fsm_open(&copy) == 0);
}

static void queries_work(void)
{
    json_t *all[] = {mgr_fsm_members(fsm), mgr_fsm_nodes(fsm), mgr_fsm_endpoints(fsm),
                     mgr_fsm_migrations(fsm), mgr_fsm_counts(fsm)};
    for (size_t i = 0; i < sizeof(all) / sizeof(all[0]); i++) {
        FUZZ_CHECK(all[i] != NULL);
        json_decref(all[i]);
    }
    json_t *eps = mgr_fsm_endpoints(fsm);
    size_t i;
    json_t *ep;
    json_array_foreach(eps, i, ep) {
        const char *name = json_string_value(json_object_get(ep, "name"));
        FUZZ_CHECK(name != NULL);
        json_t *one = mgr_fsm_endpoint(fsm, name);
        FUZZ_CHECK(one != NULL);
        json_decref(one);
    }
    json_decref(eps);
    json_t *orders = mgr_fsm_orders(fsm, "n1");
    json_decref(orders);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (base_snap == NULL)
        base_state();
    if (size > 64 * 1024)
        return 0;

    FUZZ_CHECK(mgr_fsm_restore(fsm, base_snap, base_len) == 0);

    char *text = malloc(size + 1);
    FUZZ_CHECK(text != NULL);
    memcpy(text, data, size);
    text[size] = '\0';

    uint64_t rid = 1000;
    int64_t now = 1700000100000;
    char *save = NULL;
    int n = 0;
    for (char *line = strtok_r(text, "\n", &save); line && n < FUZZ_FSM_MAX_CMDS;
         line = strtok_r(NULL, "\n", &save)) {
        bool retry = line[0] == '=';
        char *p = line + retry, *end;
        unsigned long type = strtoul(p, &end, 10);
        if (end == p || *end != ' ')
            continue;
        json_error_t jerr;
        /* Without JSON_ALLOW_NUL, as the REST layer parses bodies. */
        json_t *body = json_loads(end + 1, JSON_REJECT_DUPLICATES, &jerr);
        if (body == NULL)
            continue;
        n++;
        if (!retry)
            rid++;
        now += 100;
        struct mgr_cmd cmd = {.type = (uint16_t)type, .request_id = rid, .time_ms = now,
                              .body = body};

        json_t *before = state_of(fsm);
        uint64_t index = mgr_fsm_index(fsm);
        struct mgr_fsm_result res = {0};
        int rc = mgr_fsm_apply(fsm, &cmd, &res);
        FUZZ_CHECK(rc == res.code);
        FUZZ_CHECK(rc <= 0);
        FUZZ_CHECK(mgr_fsm_index(fsm) == index + 1);
        if (rc != 0) {
            FUZZ_CHECK(res.msg[0] != '\0' && memchr(res.msg, '\0', sizeof(res.msg)));
            json_t *after = state_of(fsm);
            if (!json_equal(before, after)) {
                char *b = json_dumps(before, JSON_SORT_KEYS), *a = json_dumps(after, JSON_SORT_KEYS);
                fprintf(stderr, "failed command (%s) changed the state:\n%s\n---\n%s\n",
                        res.msg, b, a);
                FUZZ_CHECK(!"a failed command left a change behind");
            }
            json_decref(after);
        }
        json_decref(before);
        mgr_fsm_result_clear(&res);
        json_decref(body);
        queries_work();
    }
    free(text);

    /* The state, whatever it is, survives a snapshot. */
    void *snap = NULL;
    size_t len = 0;
    FUZZ_CHECK(mgr_fsm_snapshot(fsm, &snap, &len) == 0);
    FUZZ_CHECK(mgr_fsm_restore(copy, snap, len) == 0);
    json_t *a = mgr_fsm_dump(fsm), *b = mgr_fsm_dump(copy);
    FUZZ_CHECK(json_equal(a, b));
    json_decref(a);
    json_decref(b);
    sqlite3_free(snap);
    return 0;
}
