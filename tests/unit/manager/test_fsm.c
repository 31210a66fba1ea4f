/*
 * Unit tests of the manager's FSM (manager/fsm.c).
 *
 * Commands are written as JSON text with single quotes for readability
 * ("{'id':'n1'}"); apply() turns them into double quotes. Each test starts
 * from an empty FSM (fixture) with the callbacks recorded.
 */
#include <errno.h>
#include <inttypes.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <cmocka.h>
#include <raft.h>
#include <sqlite3.h>

#include "dvs.h"
#include "manager/cmd.h"
#include "manager/fsm.h"

#define GiB (1ll << 30)
#define MiB (1ll << 20)

/* ======================================================================
 * Fixture and helpers
 * ====================================================================== */

struct fx {
    struct mgr_fsm *fsm;
    struct mgr_fsm_result res;
    uint64_t next_rid;
    int64_t now;

    /* What the callbacks saw. */
    unsigned results;
    uint64_t result_rid;
    int result_code;
    bool result_had_object;
    unsigned changes;
    unsigned change_mask;
    uint64_t change_index;
};

static void on_result(void *data, uint64_t request_id, struct mgr_fsm_result *res)
{
    struct fx *f = data;
    f->results++;
    f->result_rid = request_id;
    f->result_code = res->code;
    f->result_had_object = res->object != NULL;
}

static void on_change(void *data, unsigned tables, uint64_t index)
{
    struct fx *f = data;
    f->changes++;
    f->change_mask = tables & ~MGR_T_EVENTS; /* the event log changes with almost everything */
    f->change_index = index;
}

static int setup(void **state)
{
    struct fx *f = calloc(1, sizeof(*f));
    assert_non_null(f);
    assert_int_equal(mgr_fsm_open(&f->fsm), 0);
    mgr_fsm_set_callbacks(f->fsm, on_result, on_change, f);
    f->next_rid = 1000;
    f->now = 1700000000000;
    *state = f;
    return 0;
}

static int teardown(void **state)
{
    struct fx *f = *state;
    mgr_fsm_result_clear(&f->res);
    mgr_fsm_close(f->fsm);
    free(f);
    return 0;
}

static json_t *parse(const char *fmt, va_list ap)
{
    char text[16384];
    vsnprintf(text, sizeof(text), fmt, ap);
    for (char *p = text; *p; p++)
        if (*p == '\'')
            *p = '"';
    json_error_t err;
    json_t *v = json_loads(text, JSON_DECODE_ANY, &err);
    if (!v)
        print_error("test body does not parse: %s: %s\n", text, err.text);
    assert_non_null(v);
    return v;
}

static int vapply_rid(struct fx *f, unsigned type, uint64_t rid, const char *fmt, va_list ap)
{
    json_t *body = parse(fmt, ap);
    struct mgr_cmd cmd = {.type = (uint16_t)type, .request_id = rid, .time_ms = f->now,
                          .body = body};
    mgr_fsm_result_clear(&f->res);
    int rc = mgr_fsm_apply(f->fsm, &cmd, &f->res);
    json_decref(body);
    assert_int_equal(rc, f->res.code);
    return rc;
}

static int apply_rid(struct fx *f, unsigned type, uint64_t rid, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    int rc = vapply_rid(f, type, rid, fmt, ap);
    va_end(ap);
    return rc;
}

static int apply(struct fx *f, unsigned type, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    int rc = vapply_rid(f, type, ++f->next_rid, fmt, ap);
    va_end(ap);
    return rc;
}

static void check_code(struct fx *f, int rc, int code, const char *field, int line)
{
    if (rc != code) {
        print_error("line %d: expected %s, got %s: %s\n", line, dvs_err_name(code),
                    dvs_err_name(rc), f->res.msg);
        fail();
    }
    if (code != 0) {
        assert_true(f->res.msg[0] != '\0');
        assert_null(f->res.object);
        if (field && strcmp(field, f->res.field) != 0) {
            print_error("line %d: expected field \"%s\", got \"%s\" (%s)\n", line, field,
                        f->res.field, f->res.msg);
            fail();
        }
    }
}

/* OK(f, TYPE, "json", args...): the command succeeds. */
#define OK(f, ...) check_code((f), apply((f), __VA_ARGS__), 0, NULL, __LINE__)
/* FAILS(f, CODE, "field", TYPE, "json", ...): it fails with CODE naming FIELD. */
#define FAILS(f, code, field, ...) check_code((f), apply((f), __VA_ARGS__), (code), (field), __LINE__)

static void msg_mentions(struct fx *f, const char *needle)
{
    if (!strstr(f->res.msg, needle)) {
        print_error("message \"%s\" does not mention \"%s\"\n", f->res.msg, needle);
        fail();
    }
}

static const char *str(const json_t *obj, const char *key)
{
    const json_t *v = json_object_get(obj, key);
    if (!json_is_string(v))
        print_error("\"%s\" is not a string\n", key);
    assert_true(json_is_string(v));
    return json_string_value(v);
}

static int64_t num(const json_t *obj, const char *key)
{
    const json_t *v = json_object_get(obj, key);
    if (!json_is_integer(v))
        print_error("\"%s\" is not an integer\n", key);
    assert_true(json_is_integer(v));
    return json_integer_value(v);
}

static void add_node(struct fx *f, const char *id, double cpu, int64_t mem)
{
    OK(f, MGR_CMD_NODE_REGISTER, "{'id':'%s','address':'10.0.0.1:7100','cpu':%g,'mem':%" PRId64 "}",
       id, cpu, mem);
}

/* Endpoint NAME on NODE, reported running by its agent. */
static void add_running_endpoint(struct fx *f, const char *name, const char *node, double cpu,
                                 int64_t mem)
{
    OK(f, MGR_CMD_ENDPOINT_CREATE,
       "{'name':'%s','command':'/bin/svc','cpu':%g,'mem':%" PRId64 ",'node':'%s'}", name, cpu,
       mem, node);
    OK(f, MGR_CMD_ENDPOINT_UPDATE, "{'name':'%s','state':'running','address':'10.0.0.1:9000'}",
       name);
}

static json_t *endpoint(struct fx *f, const char *name)
{
    json_t *e = mgr_fsm_endpoint(f->fsm, name);
    if (!e)
        print_error("no endpoint %s\n", name);
    assert_non_null(e);
    return e;
}

static json_t *node(struct fx *f, const char *id)
{
    json_t *n = mgr_fsm_node(f->fsm, id);
    assert_non_null(n);
    return n;
}

/* The endpoint's node, or "" when unplaced. Static storage, one at a time. */
static const char *node_of(struct fx *f, const char *name)
{
    static char buf[64];
    json_t *e = endpoint(f, name);
    const json_t *n = json_object_get(e, "node");
    snprintf(buf, sizeof(buf), "%s", json_is_string(n) ? json_string_value(n) : "");
    json_decref(e);
    return buf;
}

static void expect_field_str(json_t *obj, const char *key, const char *value)
{
    if (strcmp(str(obj, key), value) != 0) {
        print_error("%s is \"%s\", expected \"%s\"\n", key, str(obj, key), value);
        fail();
    }
}

/*
 * The state without the apply bookkeeping: the index, the request sequence
 * and the request memory, which every command advances, successful or not.
 */
static json_t *state_of(struct mgr_fsm *fsm)
{
    json_t *dump = mgr_fsm_dump(fsm);
    assert_non_null(dump);
    json_t *meta = json_object_get(dump, "meta");
    assert_true(json_is_array(meta));
    for (size_t i = json_array_size(meta); i-- > 0;) {
        const char *key = str(json_array_get(meta, i), "key");
        if (!strcmp(key, "index") || !strcmp(key, "request_seq"))
            json_array_remove(meta, i);
    }
    assert_int_equal(json_object_del(dump, "requests"), 0);
    return dump;
}

static void assert_json_equal(json_t *a, json_t *b)
{
    if (!json_equal(a, b)) {
        char *ta = json_dumps(a, JSON_SORT_KEYS | JSON_INDENT(1));
        char *tb = json_dumps(b, JSON_SORT_KEYS | JSON_INDENT(1));
        print_error("JSON differs:\n%s\n---\n%s\n", ta, tb);
        free(ta);
        free(tb);
        fail();
    }
}

static int64_t count_rows(struct mgr_fsm *fsm, const char *table)
{
    json_t *dump = mgr_fsm_dump(fsm);
    assert_non_null(dump);
    int64_t n = (int64_t)json_array_size(json_object_get(dump, table));
    json_decref(dump);
    return n;
}

/* A small deterministic generator (xorshift64*), so failures reproduce. */
static uint64_t rng_state = 0x9e3779b97f4a7c15ull;

static uint64_t rng(void)
{
    rng_state ^= rng_state >> 12;
    rng_state ^= rng_state << 25;
    rng_state ^= rng_state >> 27;
    return rng_state * 0x2545f4914f6cdd1dull;
}

/* ======================================================================
 * Names
 * ====================================================================== */

static void valid_names_follow_the_api_rules(void **state)
{
    (void)state;
    char long_ok[64], too_long[65];
    memset(long_ok, 'a', 63);
    long_ok[63] = '\0';
    memset(too_long, 'a', 64);
    too_long[64] = '\0';

    const char *good[] = {"n1", "kv", "0", "a.b-c_d", "9node", long_ok};
    const char *bad[] = {"", "-n", ".n", "_n", "N1", "n 1", "n/1", "n:1", "é", too_long, NULL};
    for (size_t i = 0; i < sizeof(good) / sizeof(good[0]); i++)
        assert_true(mgr_valid_name(good[i]));
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++)
        assert_false(mgr_valid_name(bad[i]));
}

/* ======================================================================
 * Members
 * ====================================================================== */

static void member_set_adds_then_updates_a_member(void **state)
{
    struct fx *f = *state;
    OK(f, MGR_CMD_MEMBER_SET, "{'id':'m1','raft_addr':'127.0.0.1:7101','http_addr':'127.0.0.1:7001'}");
    assert_non_null(f->res.object);
    expect_field_str(f->res.object, "http_addr", "127.0.0.1:7001");
    assert_int_equal(f->change_mask, MGR_T_MEMBERS);

    OK(f, MGR_CMD_MEMBER_SET, "{'id':'m1','raft_addr':'127.0.0.1:7101','http_addr':'127.0.0.1:7002'}");
    json_t *m = mgr_fsm_member(f->fsm, "m1");
    assert_non_null(m);
    expect_field_str(m, "http_addr", "127.0.0.1:7002");
    assert_int_equal(num(m, "modify_index"), 2);
    json_decref(m);

    json_t *all = mgr_fsm_members(f->fsm);
    assert_int_equal(json_array_size(all), 1);
    json_decref(all);
}

static void member_set_with_the_same_addresses_changes_nothing(void **state)
{
    struct fx *f = *state;
    OK(f, MGR_CMD_MEMBER_SET, "{'id':'m1','raft_addr':'127.0.0.1:7101','http_addr':'127.0.0.1:7001'}");
    unsigned changes = f->changes;
    OK(f, MGR_CMD_MEMBER_SET, "{'id':'m1','raft_addr':'127.0.0.1:7101','http_addr':'127.0.0.1:7001'}");
    assert_int_equal(f->changes, changes);
    assert_int_equal(mgr_fsm_table_index(f->fsm, MGR_T_MEMBERS), 1);
    assert_int_equal(mgr_fsm_index(f->fsm), 2);
}

static void member_set_rejects_bad_addresses(void **state)
{
    struct fx *f = *state;
    /* libraft's TCP transport takes dotted quads only (RAFT.md item 11). */
    FAILS(f, DVS_EBADREQUEST, "raft_addr", MGR_CMD_MEMBER_SET,
          "{'id':'m1','raft_addr':'localhost:7101','http_addr':'127.0.0.1:7001'}");
    msg_mentions(f, "IPv4");
    FAILS(f, DVS_EBADREQUEST, "http_addr", MGR_CMD_MEMBER_SET,
          "{'id':'m1','raft_addr':'127.0.0.1:7101','http_addr':'127.0.0.1:0'}");
    FAILS(f, DVS_EBADREQUEST, "http_addr", MGR_CMD_MEMBER_SET,
          "{'id':'m1','raft_addr':'127.0.0.1:7101','http_addr':'127.0.0.1'}");
    FAILS(f, DVS_EBADREQUEST, "http_addr", MGR_CMD_MEMBER_SET,
          "{'id':'m1','raft_addr':'127.0.0.1:7101'}");
    msg_mentions(f, "required");
}

static void member_set_rejects_an_address_used_by_another_member(void **state)
{
    struct fx *f = *state;
    OK(f, MGR_CMD_MEMBER_SET, "{'id':'m1','raft_addr':'127.0.0.1:7101','http_addr':'127.0.0.1:7001'}");
    FAILS(f, DVS_ECONFLICT, "raft_addr", MGR_CMD_MEMBER_SET,
          "{'id':'m2','raft_addr':'127.0.0.1:7101','http_addr':'127.0.0.1:7002'}");
    msg_mentions(f, "m1");
    FAILS(f, DVS_ECONFLICT, "http_addr", MGR_CMD_MEMBER_SET,
          "{'id':'m2','raft_addr':'127.0.0.1:7102','http_addr':'127.0.0.1:7001'}");
}

static void member_del_removes_a_member_and_refuses_unknown_ones(void **state)
{
    struct fx *f = *state;
    OK(f, MGR_CMD_MEMBER_SET, "{'id':'m1','raft_addr':'127.0.0.1:7101','http_addr':'127.0.0.1:7001'}");
    OK(f, MGR_CMD_MEMBER_DEL, "{'id':'m1'}");
    expect_field_str(f->res.object, "deleted", "m1");
    assert_null(mgr_fsm_member(f->fsm, "m1"));
    FAILS(f, DVS_ENOTFOUND, "id", MGR_CMD_MEMBER_DEL, "{'id':'m1'}");
}

static void member_http_address_is_found_by_raft_address(void **state)
{
    struct fx *f = *state;
    OK(f, MGR_CMD_MEMBER_SET, "{'id':'m2','raft_addr':'127.0.0.1:7102','http_addr':'127.0.0.1:7002'}");
    char http[64], id[64];
    assert_true(mgr_fsm_member_http_by_raft(f->fsm, "127.0.0.1:7102", http, sizeof(http), id,
                                            sizeof(id)));
    assert_string_equal(http, "127.0.0.1:7002");
    assert_string_equal(id, "m2");
    assert_true(mgr_fsm_member_http_by_raft(f->fsm, "127.0.0.1:7102", http, sizeof(http), NULL, 0));
    /* Never a truncated address. */
    assert_false(mgr_fsm_member_http_by_raft(f->fsm, "127.0.0.1:7102", http, 5, NULL, 0));
    assert_false(mgr_fsm_member_http_by_raft(f->fsm, "127.0.0.1:7109", http, sizeof(http), NULL, 0));
}

/* ======================================================================
 * Nodes
 * ====================================================================== */

static void node_register_creates_an_up_eligible_node(void **state)
{
    struct fx *f = *state;
    OK(f, MGR_CMD_NODE_REGISTER, "{'id':'n1','address':'10.0.0.1:7100','cpu':4,'mem':8589934592}");
    json_t *n = f->res.object;
    assert_non_null(n);
    expect_field_str(n, "state", "up");
    assert_true(json_is_true(json_object_get(n, "eligible")));
    assert_true(json_is_real(json_object_get(n, "cpu")));
    assert_int_equal(num(n, "mem"), 8 * GiB);
    assert_int_equal(num(n, "registered_at"), f->now);
    assert_int_equal(num(n, "state_since"), f->now);
    assert_true(json_is_null(json_object_get(n, "load")));
    assert_int_equal(f->change_mask, MGR_T_NODES);
}

static void node_register_again_updates_address_and_capacity(void **state)
{
    struct fx *f = *state;
    add_node(f, "n1", 4, 8 * GiB);
    f->now += 5000;
    OK(f, MGR_CMD_NODE_REGISTER, "{'id':'n1','address':'10.0.0.9:7100','cpu':8,'mem':1024}");
    json_t *n = node(f, "n1");
    expect_field_str(n, "address", "10.0.0.9:7100");
    assert_int_equal(num(n, "mem"), 1024);
    assert_int_equal(num(n, "registered_at"), f->now - 5000);
    json_decref(n);

    /* The same registration again is a no-op for watchers. */
    unsigned changes = f->changes;
    OK(f, MGR_CMD_NODE_REGISTER, "{'id':'n1','address':'10.0.0.9:7100','cpu':8,'mem':1024}");
    assert_int_equal(f->changes, changes);
}

static void node_register_brings_a_down_node_back_up(void **state)
{
    struct fx *f = *state;
    add_node(f, "n1", 4, 8 * GiB);
    OK(f, MGR_CMD_NODE_STATE, "{'id':'n1','state':'down','reason':'missed heartbeats'}");
    f->now += 1000;
    add_node(f, "n1", 4, 8 * GiB);
    json_t *n = node(f, "n1");
    expect_field_str(n, "state", "up");
    assert_int_equal(num(n, "state_since"), f->now);
    json_decref(n);
}

static void node_register_keeps_draining_drained_and_standby(void **state)
{
    struct fx *f = *state;
    const char *states[] = {"draining", "drained", "standby"};
    for (size_t i = 0; i < 3; i++) {
        add_node(f, "n1", 4, 8 * GiB);
        OK(f, MGR_CMD_NODE_STATE, "{'id':'n1','state':'%s'}", states[i]);
        add_node(f, "n1", 4, 8 * GiB);
        json_t *n = node(f, "n1");
        expect_field_str(n, "state", states[i]);
        json_decref(n);
    }
}

static void node_register_validates_every_field(void **state)
{
    struct fx *f = *state;
    FAILS(f, DVS_EBADREQUEST, "id", MGR_CMD_NODE_REGISTER,
          "{'id':'N1','address':'10.0.0.1:7100','cpu':4,'mem':1}");
    msg_mentions(f, "[a-z0-9_.-]");
    FAILS(f, DVS_EBADREQUEST, "id", MGR_CMD_NODE_REGISTER,
          "{'address':'10.0.0.1:7100','cpu':4,'mem':1}");
    FAILS(f, DVS_EBADREQUEST, "cpu", MGR_CMD_NODE_REGISTER,
          "{'id':'n1','address':'10.0.0.1:7100','cpu':-1,'mem':1}");
    msg_mentions(f, "cores");
    FAILS(f, DVS_EBADREQUEST, "cpu", MGR_CMD_NODE_REGISTER,
          "{'id':'n1','address':'10.0.0.1:7100','cpu':'4','mem':1}");
    FAILS(f, DVS_EBADREQUEST, "cpu", MGR_CMD_NODE_REGISTER,
          "{'id':'n1','address':'10.0.0.1:7100','cpu':1e300,'mem':1}");
    FAILS(f, DVS_EBADREQUEST, "mem", MGR_CMD_NODE_REGISTER,
          "{'id':'n1','address':'10.0.0.1:7100','cpu':4,'mem':1.5}");
    msg_mentions(f, "integer");
    FAILS(f, DVS_EBADREQUEST, "mem", MGR_CMD_NODE_REGISTER,
          "{'id':'n1','address':'10.0.0.1:7100','cpu':4,'mem':-1}");
    FAILS(f, DVS_EBADREQUEST, "mem", MGR_CMD_NODE_REGISTER,
          "{'id':'n1','address':'10.0.0.1:7100','cpu':4,'mem':null}");
    FAILS(f, DVS_EBADREQUEST, "address", MGR_CMD_NODE_REGISTER,
          "{'id':'n1','address':'10.0.0.1','cpu':4,'mem':1}");
    FAILS(f, DVS_EBADREQUEST, "address", MGR_CMD_NODE_REGISTER,
          "{'id':'n1','address':'bad host:1','cpu':4,'mem':1}");
    FAILS(f, DVS_EBADREQUEST, "memory", MGR_CMD_NODE_REGISTER,
          "{'id':'n1','address':'10.0.0.1:7100','cpu':4,'mem':1,'memory':1}");
    msg_mentions(f, "unknown field");
    msg_mentions(f, "accepted: id, address, cpu, mem");
    assert_int_equal(count_rows(f->fsm, "nodes"), 0);
}

static void node_state_changes_state_since_and_reason(void **state)
{
    struct fx *f = *state;
    add_node(f, "n1", 4, 8 * GiB);
    f->now += 100;
    OK(f, MGR_CMD_NODE_STATE, "{'id':'n1','state':'down','reason':'no heartbeat for 10s'}");
    json_t *n = f->res.object;
    expect_field_str(n, "state", "down");
    expect_field_str(n, "state_reason", "no heartbeat for 10s");
    assert_int_equal(num(n, "state_since"), f->now);
    /* Down is not a decision about eligibility. */
    assert_true(json_is_true(json_object_get(n, "eligible")));

    /* The same state again keeps state_since. */
    f->now += 100;
    OK(f, MGR_CMD_NODE_STATE, "{'id':'n1','state':'down'}");
    assert_int_equal(num(f->res.object, "state_since"), f->now - 100);
}

static void node_state_drained_and_standby_make_a_node_ineligible(void **state)
{
    struct fx *f = *state;
    add_node(f, "n1", 4, 8 * GiB);
    OK(f, MGR_CMD_NODE_STATE, "{'id':'n1','state':'drained'}");
    assert_true(json_is_false(json_object_get(f->res.object, "eligible")));
    OK(f, MGR_CMD_NODE_STATE, "{'id':'n1','state':'up'}");
    assert_true(json_is_true(json_object_get(f->res.object, "eligible")));
    OK(f, MGR_CMD_NODE_STATE, "{'id':'n1','state':'standby'}");
    assert_true(json_is_false(json_object_get(f->res.object, "eligible")));
    OK(f, MGR_CMD_NODE_STATE, "{'id':'n1','state':'standby','eligible':true}");
    assert_true(json_is_true(json_object_get(f->res.object, "eligible")));
}

static void node_state_explicit_eligibility_wins(void **state)
{
    struct fx *f = *state;
    add_node(f, "n1", 4, 8 * GiB);
    OK(f, MGR_CMD_NODE_STATE, "{'id':'n1','state':'up','eligible':false}");
    assert_true(json_is_false(json_object_get(f->res.object, "eligible")));
    /* Down and back up keeps an operator's choice. */
    OK(f, MGR_CMD_NODE_STATE, "{'id':'n1','state':'down'}");
    OK(f, MGR_CMD_NODE_STATE, "{'id':'n1','state':'up'}");
    assert_true(json_is_false(json_object_get(f->res.object, "eligible")));
    OK(f, MGR_CMD_NODE_STATE, "{'id':'n1','state':'drained','eligible':true}");
    assert_true(json_is_true(json_object_get(f->res.object, "eligible")));
}

static void node_state_refuses_unknown_nodes_and_states(void **state)
{
    struct fx *f = *state;
    FAILS(f, DVS_ENOTFOUND, "id", MGR_CMD_NODE_STATE, "{'id':'n1','state':'up'}");
    add_node(f, "n1", 4, 8 * GiB);
    FAILS(f, DVS_EBADREQUEST, "state", MGR_CMD_NODE_STATE, "{'id':'n1','state':'sleeping'}");
    msg_mentions(f, "one of up, down, draining, drained, standby");
    FAILS(f, DVS_EBADREQUEST, "eligible", MGR_CMD_NODE_STATE,
          "{'id':'n1','state':'up','eligible':1}");
    FAILS(f, DVS_EBADREQUEST, "reason", MGR_CMD_NODE_STATE,
          "{'id':'n1','state':'up','reason':7}");
}

static void node_state_from_applies_the_change_only_in_that_state(void **state)
{
    struct fx *f = *state;
    add_node(f, "n1", 4, 8 * GiB);
    OK(f, MGR_CMD_NODE_STATE, "{'id':'n1','state':'draining'}");
    OK(f, MGR_CMD_NODE_STATE, "{'id':'n1','state':'drained','from':'draining'}");
    expect_field_str(f->res.object, "state", "drained");

    /* The operator cancelled the drain meanwhile: a late "drained" is refused. */
    OK(f, MGR_CMD_NODE_STATE, "{'id':'n1','state':'up'}");
    FAILS(f, DVS_ECONFLICT, "from", MGR_CMD_NODE_STATE,
          "{'id':'n1','state':'drained','from':'draining'}");
    msg_mentions(f, "is up, not draining");
    json_t *n = node(f, "n1");
    expect_field_str(n, "state", "up");
    json_decref(n);
    FAILS(f, DVS_EBADREQUEST, "from", MGR_CMD_NODE_STATE,
          "{'id':'n1','state':'drained','from':'busy'}");
}

static void node_drain_deadline_lasts_as_long_as_the_drain(void **state)
{
    struct fx *f = *state;
    add_node(f, "n1", 4, 8 * GiB);
    json_t *n = node(f, "n1");
    assert_null(json_object_get(n, "drain_deadline"));
    json_decref(n);

    OK(f, MGR_CMD_NODE_STATE, "{'id':'n1','state':'draining','drain_deadline':1700000600000}");
    assert_int_equal(num(f->res.object, "drain_deadline"), 1700000600000);
    /* Repeating the state keeps the deadline. */
    OK(f, MGR_CMD_NODE_STATE, "{'id':'n1','state':'draining','reason':'maintenance'}");
    assert_int_equal(num(f->res.object, "drain_deadline"), 1700000600000);
    /* Any other state ends the drain and its deadline. */
    OK(f, MGR_CMD_NODE_STATE, "{'id':'n1','state':'drained'}");
    assert_null(json_object_get(f->res.object, "drain_deadline"));

    FAILS(f, DVS_EBADREQUEST, "drain_deadline", MGR_CMD_NODE_STATE,
          "{'id':'n1','state':'up','drain_deadline':5}");
    FAILS(f, DVS_EBADREQUEST, "drain_deadline", MGR_CMD_NODE_STATE,
          "{'id':'n1','state':'draining','drain_deadline':'5m'}");
}

/* ======================================================================
 * Load summaries
 * ====================================================================== */

static void load_summary_records_load_and_skips_unknown_nodes(void **state)
{
    struct fx *f = *state;
    add_node(f, "n1", 4, 8 * GiB);
    add_node(f, "n2", 4, 8 * GiB);
    f->now += 3000;
    OK(f, MGR_CMD_LOAD_SUMMARY,
       "{'nodes':[{'id':'n1','cpu':1.5,'mem':1000,'rps':20.5},"
       "{'id':'ghost','cpu':1,'mem':1,'rps':1}]}");
    assert_int_equal(num(f->res.object, "updated"), 1);
    assert_int_equal(num(f->res.object, "skipped"), 1);
    assert_int_equal(f->change_mask, MGR_T_LOAD);

    json_t *n = node(f, "n1");
    json_t *load = json_object_get(n, "load");
    assert_true(json_is_object(load));
    assert_float_equal(json_real_value(json_object_get(load, "cpu")), 1.5, 1e-12);
    assert_int_equal(num(load, "mem"), 1000);
    assert_float_equal(json_real_value(json_object_get(load, "rps")), 20.5, 1e-12);
    assert_int_equal(num(load, "time"), f->now);
    /* Load does not count as a change of the node itself (no wake-ups). */
    assert_true(num(n, "modify_index") < (int64_t)mgr_fsm_index(f->fsm));
    json_decref(n);

    n = node(f, "n2");
    assert_true(json_is_null(json_object_get(n, "load")));
    json_decref(n);

    /* A newer summary replaces the row. */
    OK(f, MGR_CMD_LOAD_SUMMARY, "{'nodes':[{'id':'n1','cpu':0,'mem':0,'rps':0}]}");
    assert_int_equal(count_rows(f->fsm, "node_load"), 1);
}

static void load_summary_rejects_a_bad_entry_naming_its_position(void **state)
{
    struct fx *f = *state;
    add_node(f, "n1", 4, 8 * GiB);
    FAILS(f, DVS_EBADREQUEST, "nodes[1].rps", MGR_CMD_LOAD_SUMMARY,
          "{'nodes':[{'id':'n1','cpu':1,'mem':1,'rps':1},{'id':'n1','cpu':1,'mem':1,'rps':-2}]}");
    FAILS(f, DVS_EBADREQUEST, "nodes[0]", MGR_CMD_LOAD_SUMMARY, "{'nodes':[5]}");
    FAILS(f, DVS_EBADREQUEST, "nodes", MGR_CMD_LOAD_SUMMARY, "{'nodes':{}}");
    /* Nothing of the valid first entry was written. */
    assert_int_equal(count_rows(f->fsm, "node_load"), 0);
}

/* ======================================================================
 * Endpoints: creation, validation, placement
 * ====================================================================== */

static void create_endpoint_applies_the_documented_defaults(void **state)
{
    struct fx *f = *state;
    OK(f, MGR_CMD_ENDPOINT_CREATE, "{'name':'kv','command':'/usr/bin/dvs-kv --port 0'}");
    json_t *e = f->res.object;
    assert_int_equal(num(e, "id"), 1);
    expect_field_str(e, "command", "/usr/bin/dvs-kv --port 0");
    assert_float_equal(json_real_value(json_object_get(e, "cpu")), 0.1, 1e-12);
    assert_int_equal(num(e, "mem"), 64 * MiB);
    assert_int_equal(num(e, "arena_size"), (int64_t)MGR_ARENA_DEFAULT);
    expect_field_str(e, "arena_addr", "0x200000000000");
    assert_true(json_is_null(json_object_get(e, "node")));
    assert_true(json_is_null(json_object_get(e, "address")));
    assert_int_equal(num(e, "generation"), 0);
    expect_field_str(e, "state", "pending");
    assert_int_equal(num(e, "created_at"), f->now);
    assert_int_equal(num(e, "modify_index"), 1);
    assert_int_equal(f->change_mask, MGR_T_ENDPOINTS);

    OK(f, MGR_CMD_ENDPOINT_CREATE, "{'name':'kv2','command':'x'}");
    assert_int_equal(num(f->res.object, "id"), 2);
}

static void create_endpoint_rejects_duplicate_name(void **state)
{
    struct fx *f = *state;
    OK(f, MGR_CMD_ENDPOINT_CREATE, "{'name':'kv','command':'x'}");
    FAILS(f, DVS_EEXISTS, "name", MGR_CMD_ENDPOINT_CREATE, "{'name':'kv','command':'y'}");
    msg_mentions(f, "kv");
}

static void create_endpoint_validates_every_field(void **state)
{
    struct fx *f = *state;
    char long_command[4200];
    memset(long_command, 'x', 4097);
    long_command[4097] = '\0';

    FAILS(f, DVS_EBADREQUEST, "command", MGR_CMD_ENDPOINT_CREATE, "{'name':'kv'}");
    FAILS(f, DVS_EBADREQUEST, "command", MGR_CMD_ENDPOINT_CREATE, "{'name':'kv','command':''}");
    FAILS(f, DVS_EBADREQUEST, "command", MGR_CMD_ENDPOINT_CREATE,
          "{'name':'kv','command':'%s'}", long_command);
    msg_mentions(f, "4096");
    FAILS(f, DVS_EBADREQUEST, "name", MGR_CMD_ENDPOINT_CREATE, "{'name':'-kv','command':'x'}");
    FAILS(f, DVS_EBADREQUEST, "name", MGR_CMD_ENDPOINT_CREATE, "{'name':'KV','command':'x'}");
    FAILS(f, DVS_EBADREQUEST, "name", MGR_CMD_ENDPOINT_CREATE, "{'name':'','command':'x'}");
    FAILS(f, DVS_EBADREQUEST, "name", MGR_CMD_ENDPOINT_CREATE, "{'name':['kv'],'command':'x'}");
    FAILS(f, DVS_EBADREQUEST, "cpu", MGR_CMD_ENDPOINT_CREATE,
          "{'name':'kv','command':'x','cpu':-0.5}");
    FAILS(f, DVS_EBADREQUEST, "mem", MGR_CMD_ENDPOINT_CREATE,
          "{'name':'kv','command':'x','mem':'64M'}");
    FAILS(f, DVS_EBADREQUEST, "arena", MGR_CMD_ENDPOINT_CREATE,
          "{'name':'kv','command':'x','arena':%lld}", (long long)MGR_ARENA_MIN - 1);
    msg_mentions(f, "1048576");
    FAILS(f, DVS_EBADREQUEST, "arena", MGR_CMD_ENDPOINT_CREATE,
          "{'name':'kv','command':'x','arena':%lld}", (long long)MGR_ARENA_MAX + 1);
    FAILS(f, DVS_EBADREQUEST, "node", MGR_CMD_ENDPOINT_CREATE,
          "{'name':'kv','command':'x','node':''}");
    FAILS(f, DVS_EBADREQUEST, "size", MGR_CMD_ENDPOINT_CREATE,
          "{'name':'kv','command':'x','size':1}");
    FAILS(f, DVS_EBADREQUEST, "", MGR_CMD_ENDPOINT_CREATE, "[]");
    assert_int_equal(count_rows(f->fsm, "endpoints"), 0);
}

static void create_endpoint_rounds_arena_up_to_the_alignment(void **state)
{
    struct fx *f = *state;
    OK(f, MGR_CMD_ENDPOINT_CREATE, "{'name':'a','command':'x','arena':%lld}",
       (long long)MGR_ARENA_MIN);
    assert_int_equal(num(f->res.object, "arena_size"), (int64_t)MGR_ARENA_ALIGN);
    OK(f, MGR_CMD_ENDPOINT_CREATE, "{'name':'b','command':'x','arena':%lld}",
       (long long)MGR_ARENA_ALIGN + 1);
    assert_int_equal(num(f->res.object, "arena_size"), 2 * (int64_t)MGR_ARENA_ALIGN);
    /* Right after a, with a guard gap. */
    char expect[32];
    snprintf(expect, sizeof(expect), "0x%llx",
             (unsigned long long)(MGR_ARENA_BASE + MGR_ARENA_ALIGN + MGR_ARENA_GUARD));
    expect_field_str(f->res.object, "arena_addr", expect);
    OK(f, MGR_CMD_ENDPOINT_CREATE, "{'name':'c','command':'x','arena':%lld}",
       (long long)MGR_ARENA_MAX);
    assert_int_equal(num(f->res.object, "arena_size"), (int64_t)MGR_ARENA_MAX);
}

static void create_endpoint_binpacks_onto_the_best_fitting_node(void **state)
{
    struct fx *f = *state;
    add_node(f, "n1", 4, 8 * GiB);
    add_node(f, "n2", 2, 4 * GiB);
    add_node(f, "n3", 8, 16 * GiB);
    /* n2 is left with the least spare room. */
    OK(f, MGR_CMD_ENDPOINT_CREATE, "{'name':'a','command':'x','cpu':1,'mem':%lld}", GiB);
    assert_string_equal(node_of(f, "a"), "n2");
    expect_field_str(f->res.object, "state", "pending");
    /* n2 has 1 core left: a 1.5-core endpoint goes to n1, the next best. */
    OK(f, MGR_CMD_ENDPOINT_CREATE, "{'name':'b','command':'x','cpu':1.5,'mem':%lld}", GiB);
    assert_string_equal(node_of(f, "b"), "n1");
    /* Exactly what is left on n2 still fits there. */
    OK(f, MGR_CMD_ENDPOINT_CREATE, "{'name':'c','command':'x','cpu':1,'mem':%lld}", 3 * GiB);
    assert_string_equal(node_of(f, "c"), "n2");
}

static void create_endpoint_fills_a_node_to_exactly_its_capacity(void **state)
{
    struct fx *f = *state;
    add_node(f, "n1", 1, 10 * 64 * MiB);
    /* 0.1 added ten times is not exactly 1.0 in binary; it must still fit. */
    for (int i = 0; i < 10; i++)
        OK(f, MGR_CMD_ENDPOINT_CREATE, "{'name':'e%d','command':'x','cpu':0.1,'node':'n1'}", i);
    FAILS(f, DVS_ENOSPACE, "node", MGR_CMD_ENDPOINT_CREATE,
          "{'name':'e10','command':'x','cpu':0.1,'node':'n1'}");
}

static void create_endpoint_binpack_breaks_ties_by_node_id(void **state)
{
    struct fx *f = *state;
    add_node(f, "b", 4, 8 * GiB);
    add_node(f, "a", 4, 8 * GiB);
    add_node(f, "c", 4, 8 * GiB);
    OK(f, MGR_CMD_ENDPOINT_CREATE, "{'name':'e1','command':'x'}");
    assert_string_equal(node_of(f, "e1"), "a");
    /* a is now fuller, so best fit keeps packing it. */
    OK(f, MGR_CMD_ENDPOINT_CREATE, "{'name':'e2','command':'x'}");
    assert_string_equal(node_of(f, "e2"), "a");
}

static void create_endpoint_binpack_skips_nodes_that_are_not_up_and_eligible(void **state)
{
    struct fx *f = *state;
    /* Each of these would be the best fit if it could take endpoints. */
    add_node(f, "a-down", 1, GiB);
    add_node(f, "b-draining", 1, GiB);
    add_node(f, "c-ineligible", 1, GiB);
    add_node(f, "d-standby", 1, GiB);
    add_node(f, "z-big", 64, 64 * GiB);
    OK(f, MGR_CMD_NODE_STATE, "{'id':'a-down','state':'down'}");
    OK(f, MGR_CMD_NODE_STATE, "{'id':'b-draining','state':'draining'}");
    OK(f, MGR_CMD_NODE_STATE, "{'id':'c-ineligible','state':'up','eligible':false}");
    OK(f, MGR_CMD_NODE_STATE, "{'id':'d-standby','state':'standby'}");
    OK(f, MGR_CMD_ENDPOINT_CREATE, "{'name':'e','command':'x'}");
    assert_string_equal(node_of(f, "e"), "z-big");
}

static void create_endpoint_stays_pending_and_unplaced_when_no_node_fits(void **state)
{
    struct fx *f = *state;
    add_node(f, "n1", 1, GiB);
    OK(f, MGR_CMD_ENDPOINT_CREATE, "{'name':'big','command':'x','cpu':2}");
    assert_true(json_is_null(json_object_get(f->res.object, "node")));
    expect_field_str(f->res.object, "state", "pending");
    OK(f, MGR_CMD_ENDPOINT_CREATE, "{'name':'fat','command':'x','mem':%lld}", 2 * GiB);
    assert_true(json_is_null(json_object_get(f->res.object, "node")));
}

static void create_endpoint_on_a_named_node_checks_it_can_take_it(void **state)
{
    struct fx *f = *state;
    FAILS(f, DVS_ENOTFOUND, "node", MGR_CMD_ENDPOINT_CREATE,
          "{'name':'e','command':'x','node':'n1'}");
    add_node(f, "n1", 1, GiB);
    OK(f, MGR_CMD_NODE_STATE, "{'id':'n1','state':'draining'}");
    FAILS(f, DVS_ECONFLICT, "node", MGR_CMD_ENDPOINT_CREATE,
          "{'name':'e','command':'x','node':'n1'}");
    msg_mentions(f, "draining");
    OK(f, MGR_CMD_NODE_STATE, "{'id':'n1','state':'up','eligible':false}");
    FAILS(f, DVS_ECONFLICT, "node", MGR_CMD_ENDPOINT_CREATE,
          "{'name':'e','command':'x','node':'n1'}");
    msg_mentions(f, "eligible");
    OK(f, MGR_CMD_NODE_STATE, "{'id':'n1','state':'up','eligible':true}");
    FAILS(f, DVS_ENOSPACE, "node", MGR_CMD_ENDPOINT_CREATE,
          "{'name':'e','command':'x','node':'n1','cpu':1.5}");
    msg_mentions(f, "free");
    FAILS(f, DVS_ENOSPACE, "node", MGR_CMD_ENDPOINT_CREATE,
          "{'name':'e','command':'x','node':'n1','mem':%lld}", GiB + 1);
    assert_int_equal(count_rows(f->fsm, "endpoints"), 0);

    OK(f, MGR_CMD_ENDPOINT_CREATE, "{'name':'e','command':'x','node':'n1','cpu':1}");
    assert_string_equal(node_of(f, "e"), "n1");
}

static void create_endpoint_counts_room_reserved_by_incoming_migrations(void **state)
{
    struct fx *f = *state;
    add_node(f, "n1", 2, 8 * GiB);
    add_node(f, "n2", 2, 8 * GiB);
    add_running_endpoint(f, "kv", "n1", 1.5, GiB);
    OK(f, MGR_CMD_MIGRATION_CREATE, "{'endpoint':'kv','destination':'n2','reason':'manual'}");
    /* kv is on n1 and on its way to n2: both have 0.5 cores left. */
    FAILS(f, DVS_ENOSPACE, "node", MGR_CMD_ENDPOINT_CREATE,
          "{'name':'e','command':'x','node':'n2','cpu':1}");
    OK(f, MGR_CMD_ENDPOINT_CREATE, "{'name':'e','command':'x','cpu':1}");
    assert_string_equal(node_of(f, "e"), "");
}

/* ======================================================================
 * Arena placement
 * ====================================================================== */

struct range {
    uint64_t addr, size;
};

static size_t collect_ranges(struct fx *f, struct range **ret)
{
    json_t *all = mgr_fsm_endpoints(f->fsm);
    assert_non_null(all);
    size_t n = json_array_size(all);
    struct range *r = calloc(n ? n : 1, sizeof(*r));
    assert_non_null(r);
    for (size_t i = 0; i < n; i++) {
        json_t *e = json_array_get(all, i);
        const char *addr = str(e, "arena_addr");
        assert_true(strncmp(addr, "0x", 2) == 0);
        r[i].addr = strtoull(addr + 2, NULL, 16);
        r[i].size = (uint64_t)num(e, "arena_size");
    }
    json_decref(all);
    *ret = r;
    return n;
}

/* Every range aligned, inside the arena space, and GUARD away from every other. */
static void check_ranges(struct fx *f)
{
    struct range *r;
    size_t n = collect_ranges(f, &r);
    for (size_t i = 0; i < n; i++) {
        assert_int_equal(r[i].addr % MGR_ARENA_ALIGN, 0);
        assert_int_equal(r[i].size % MGR_ARENA_ALIGN, 0);
        assert_true(r[i].addr >= MGR_ARENA_BASE);
        assert_true(r[i].addr + r[i].size <= MGR_ARENA_LIMIT);
        for (size_t j = i + 1; j < n; j++) {
            bool apart = r[i].addr + r[i].size + MGR_ARENA_GUARD <= r[j].addr ||
                         r[j].addr + r[j].size + MGR_ARENA_GUARD <= r[i].addr;
            if (!apart)
                print_error("arenas [%#" PRIx64 ", +%#" PRIx64 ") and [%#" PRIx64
                            ", +%#" PRIx64 ") overlap or touch\n",
                            r[i].addr, r[i].size, r[j].addr, r[j].size);
            assert_true(apart);
        }
    }
    free(r);
}

static void arena_ranges_never_overlap_through_random_creates_and_deletes(void **state)
{
    struct fx *f = *state;
    enum { OPS = 1500, MAX_LIVE = 400 };
    char live[MAX_LIVE][16];
    size_t nlive = 0;
    unsigned serial = 0;
    rng_state = 20240601;
    for (int op = 0; op < OPS; op++) {
        bool create = nlive == 0 || (nlive < MAX_LIVE && rng() % 100 < 60);
        if (create) {
            /* Sizes from 1 MiB to 8 GiB, mostly not aligned. */
            uint64_t size = MGR_ARENA_MIN + rng() % (8ull * GiB - MGR_ARENA_MIN);
            snprintf(live[nlive], sizeof(live[nlive]), "e%u", serial++);
            OK(f, MGR_CMD_ENDPOINT_CREATE, "{'name':'%s','command':'x','arena':%" PRIu64 "}",
               live[nlive], size);
            uint64_t want = (size + MGR_ARENA_ALIGN - 1) / MGR_ARENA_ALIGN * MGR_ARENA_ALIGN;
            assert_int_equal(num(f->res.object, "arena_size"), (int64_t)want);
            nlive++;
        } else {
            size_t k = rng() % nlive;
            OK(f, MGR_CMD_ENDPOINT_DELETE, "{'name':'%s'}", live[k]);
            memcpy(live[k], live[nlive - 1], sizeof(live[k]));
            nlive--;
        }
        if (op % 100 == 99)
            check_ranges(f);
    }
    check_ranges(f);
}

static void arena_space_exhausted_is_nospace_and_a_freed_gap_is_reused(void **state)
{
    struct fx *f = *state;
    /* n maximal arenas fit when n * MAX + (n - 1) * GUARD <= LIMIT - BASE. */
    uint64_t fit = (MGR_ARENA_LIMIT - MGR_ARENA_BASE + MGR_ARENA_GUARD) /
                   (MGR_ARENA_MAX + MGR_ARENA_GUARD);
    for (uint64_t i = 0; i < fit; i++)
        OK(f, MGR_CMD_ENDPOINT_CREATE, "{'name':'e%" PRIu64 "','command':'x','arena':%lld}", i,
           (long long)MGR_ARENA_MAX);
    FAILS(f, DVS_ENOSPACE, "arena", MGR_CMD_ENDPOINT_CREATE,
          "{'name':'more','command':'x','arena':%lld}", (long long)MGR_ARENA_MAX);
    msg_mentions(f, "arena");
    check_ranges(f);

    /* What remains at the top is smaller than MAX but still usable. */
    uint64_t tail = MGR_ARENA_LIMIT - MGR_ARENA_BASE - fit * (MGR_ARENA_MAX + MGR_ARENA_GUARD);
    if (tail >= MGR_ARENA_MIN) {
        OK(f, MGR_CMD_ENDPOINT_CREATE, "{'name':'tail','command':'x','arena':%" PRIu64 "}",
           tail);
        FAILS(f, DVS_ENOSPACE, "arena", MGR_CMD_ENDPOINT_CREATE,
              "{'name':'more','command':'x','arena':%lld}", (long long)MGR_ARENA_MIN);
    }

    /* First fit: the hole left by e7 is taken by the next arena that fits in it. */
    json_t *e7 = endpoint(f, "e7");
    char addr7[32];
    snprintf(addr7, sizeof(addr7), "%s", str(e7, "arena_addr"));
    json_decref(e7);
    OK(f, MGR_CMD_ENDPOINT_DELETE, "{'name':'e7'}");
    OK(f, MGR_CMD_ENDPOINT_CREATE, "{'name':'again','command':'x','arena':%lld}",
       (long long)MGR_ARENA_MAX);
    expect_field_str(f->res.object, "arena_addr", addr7);
    check_ranges(f);
}

/* ======================================================================
 * Endpoints: updates and deletion
 * ====================================================================== */

static void endpoint_update_records_the_agent_report(void **state)
{
    struct fx *f = *state;
    add_node(f, "n1", 4, 8 * GiB);
    add_node(f, "n2", 4, 8 * GiB);
    OK(f, MGR_CMD_ENDPOINT_CREATE, "{'name':'kv','command':'x','node':'n1'}");
    OK(f, MGR_CMD_ENDPOINT_UPDATE,
       "{'name':'kv','state':'running','address':'10.0.0.1:9000','generation':3,'node':'n2'}");
    json_t *e = f->res.object;
    expect_field_str(e, "state", "running");
    expect_field_str(e, "address", "10.0.0.1:9000");
    expect_field_str(e, "node", "n2");
    assert_int_equal(num(e, "generation"), 3);
    assert_int_equal(num(e, "modify_index"), (int64_t)mgr_fsm_index(f->fsm));

    /* The same generation again is fine; null clears the address. */
    OK(f, MGR_CMD_ENDPOINT_UPDATE, "{'name':'kv','generation':3,'address':null,'state':'stopped'}");
    assert_true(json_is_null(json_object_get(f->res.object, "address")));
    expect_field_str(f->res.object, "state", "stopped");

    /* A report that changes nothing does not wake watchers. */
    unsigned changes = f->changes;
    OK(f, MGR_CMD_ENDPOINT_UPDATE, "{'name':'kv','state':'stopped'}");
    assert_int_equal(f->changes, changes);
}

static void endpoint_update_rejects_a_stale_generation(void **state)
{
    struct fx *f = *state;
    OK(f, MGR_CMD_ENDPOINT_CREATE, "{'name':'kv','command':'x'}");
    OK(f, MGR_CMD_ENDPOINT_UPDATE, "{'name':'kv','generation':5}");
    FAILS(f, DVS_ESTALEGEN, "generation", MGR_CMD_ENDPOINT_UPDATE,
          "{'name':'kv','generation':4,'state':'failed'}");
    msg_mentions(f, "5");
    json_t *e = endpoint(f, "kv");
    expect_field_str(e, "state", "pending");
    json_decref(e);
}

static void endpoint_update_rejects_unknown_objects_and_bad_values(void **state)
{
    struct fx *f = *state;
    FAILS(f, DVS_ENOTFOUND, "name", MGR_CMD_ENDPOINT_UPDATE, "{'name':'kv','state':'running'}");
    OK(f, MGR_CMD_ENDPOINT_CREATE, "{'name':'kv','command':'x'}");
    FAILS(f, DVS_ENOTFOUND, "node", MGR_CMD_ENDPOINT_UPDATE, "{'name':'kv','node':'nx'}");
    FAILS(f, DVS_EBADREQUEST, "state", MGR_CMD_ENDPOINT_UPDATE, "{'name':'kv','state':'ok'}");
    FAILS(f, DVS_EBADREQUEST, "address", MGR_CMD_ENDPOINT_UPDATE,
          "{'name':'kv','address':'nowhere'}");
    FAILS(f, DVS_EBADREQUEST, "generation", MGR_CMD_ENDPOINT_UPDATE,
          "{'name':'kv','generation':-1}");
    FAILS(f, DVS_EBADREQUEST, "command", MGR_CMD_ENDPOINT_UPDATE,
          "{'name':'kv','command':'y'}");
    /* Only a migration makes an endpoint migrating. */
    FAILS(f, DVS_ECONFLICT, "state", MGR_CMD_ENDPOINT_UPDATE,
          "{'name':'kv','state':'migrating'}");
}

static void endpoint_update_cannot_override_a_running_migration(void **state)
{
    struct fx *f = *state;
    add_node(f, "n1", 4, 8 * GiB);
    add_node(f, "n2", 4, 8 * GiB);
    add_running_endpoint(f, "kv", "n1", 1, GiB);
    OK(f, MGR_CMD_MIGRATION_CREATE, "{'endpoint':'kv','destination':'n2','reason':'manual'}");
    FAILS(f, DVS_ECONFLICT, "state", MGR_CMD_ENDPOINT_UPDATE, "{'name':'kv','state':'running'}");
    FAILS(f, DVS_ECONFLICT, "node", MGR_CMD_ENDPOINT_UPDATE, "{'name':'kv','node':'n2'}");
    /* A failure report is still taken, and survives the abort. */
    OK(f, MGR_CMD_ENDPOINT_UPDATE, "{'name':'kv','state':'failed'}");
    OK(f, MGR_CMD_MIGRATION_UPDATE, "{'id':1,'phase':'aborted','error':'source died'}");
    json_t *e = endpoint(f, "kv");
    expect_field_str(e, "state", "failed");
    json_decref(e);
}

static void endpoint_delete_removes_it_and_refuses_unknown_names(void **state)
{
    struct fx *f = *state;
    OK(f, MGR_CMD_ENDPOINT_CREATE, "{'name':'kv','command':'x'}");
    OK(f, MGR_CMD_ENDPOINT_DELETE, "{'name':'kv'}");
    expect_field_str(f->res.object, "deleted", "kv");
    assert_null(mgr_fsm_endpoint(f->fsm, "kv"));
    FAILS(f, DVS_ENOTFOUND, "name", MGR_CMD_ENDPOINT_DELETE, "{'name':'kv'}");
    /* The name is free again; the id is not reused. */
    OK(f, MGR_CMD_ENDPOINT_CREATE, "{'name':'kv','command':'x'}");
    assert_int_equal(num(f->res.object, "id"), 2);
}

static void endpoint_delete_aborts_its_active_migration(void **state)
{
    struct fx *f = *state;
    add_node(f, "n1", 4, 8 * GiB);
    add_node(f, "n2", 4, 8 * GiB);
    add_running_endpoint(f, "kv", "n1", 1, GiB);
    OK(f, MGR_CMD_MIGRATION_CREATE, "{'endpoint':'kv','destination':'n2','reason':'manual'}");
    f->now += 10;
    OK(f, MGR_CMD_ENDPOINT_DELETE, "{'name':'kv'}");
    assert_int_equal(f->change_mask, MGR_T_ENDPOINTS | MGR_T_MIGRATIONS);
    json_t *m = mgr_fsm_migration(f->fsm, 1);
    assert_non_null(m);
    expect_field_str(m, "phase", "aborted");
    assert_int_equal(num(m, "finished_at"), f->now);
    expect_field_str(m, "error", "endpoint deleted");
    json_decref(m);
}

/* ======================================================================
 * Migrations
 * ====================================================================== */

/* n1 and n2, and kv running on n1. */
static void migration_world(struct fx *f)
{
    add_node(f, "n1", 4, 8 * GiB);
    add_node(f, "n2", 4, 8 * GiB);
    add_running_endpoint(f, "kv", "n1", 1, GiB);
}

static void migration_create_plans_it_and_marks_the_endpoint_migrating(void **state)
{
    struct fx *f = *state;
    migration_world(f);
    f->now += 7;
    OK(f, MGR_CMD_MIGRATION_CREATE,
       "{'endpoint':'kv','destination':'n2','reason':'overload','explanation':'n1 at 95%%'}");
    json_t *m = f->res.object;
    assert_int_equal(num(m, "id"), 1);
    expect_field_str(m, "endpoint", "kv");
    expect_field_str(m, "source", "n1");
    expect_field_str(m, "destination", "n2");
    expect_field_str(m, "reason", "overload");
    expect_field_str(m, "phase", "planned");
    expect_field_str(m, "explanation", "n1 at 95%");
    assert_int_equal(num(m, "created_at"), f->now);
    assert_int_equal(num(m, "updated_at"), f->now);
    assert_true(json_is_null(json_object_get(m, "finished_at")));
    assert_true(json_is_null(json_object_get(m, "error")));
    assert_int_equal(num(m, "bytes"), 0);
    assert_int_equal(f->change_mask, MGR_T_ENDPOINTS | MGR_T_MIGRATIONS);

    json_t *e = endpoint(f, "kv");
    expect_field_str(e, "state", "migrating");
    expect_field_str(e, "node", "n1");
    json_decref(e);
}

/* docs/security.md: the secret the leader drew reaches the orders only, and
 * goes when the migration ends. */
#define SECRET "00112233445566778899aabbccddeeff00112233445566778899aabbccddeeff"
static void migration_transfer_secret_is_only_in_the_orders(void **state)
{
    struct fx *f = *state;
    migration_world(f);
    FAILS(f, DVS_EBADREQUEST, "transfer_secret", MGR_CMD_MIGRATION_CREATE,
          "{'endpoint':'kv','destination':'n2','reason':'manual','transfer_secret':'00'}");
    OK(f, MGR_CMD_MIGRATION_CREATE,
       "{'endpoint':'kv','destination':'n2','reason':'manual','transfer_secret':'" SECRET "'}");
    assert_null(json_object_get(f->res.object, "transfer_secret"));
    json_t *m = mgr_fsm_migration(f->fsm, 1);
    assert_null(json_object_get(m, "transfer_secret"));
    json_decref(m);
    json_t *all = mgr_fsm_migrations(f->fsm);
    char *text = json_dumps(all, 0);
    assert_null(strstr(text, SECRET));
    free(text);
    json_decref(all);
    const char *nodes[] = {"n1", "n2"};
    for (int i = 0; i < 2; i++) {
        json_t *o = mgr_fsm_orders(f->fsm, nodes[i]);
        json_t *mig = json_array_get(json_object_get(o, "migrations"), 0);
        expect_field_str(mig, "transfer_secret", SECRET);
        json_decref(o);
    }
    f->now += 5;
    OK(f, MGR_CMD_MIGRATION_UPDATE, "{'id':1,'phase':'aborted','error':'test'}");
    json_t *dump = mgr_fsm_dump(f->fsm);
    text = json_dumps(dump, 0);
    assert_null(strstr(text, SECRET)); /* dropped from the row */
    free(text);
    json_decref(dump);
}

static void migration_create_refuses_what_cannot_migrate(void **state)
{
    struct fx *f = *state;
    migration_world(f);
    add_node(f, "n3", 4, 8 * GiB);
    add_node(f, "tiny", 0.5, GiB);
    OK(f, MGR_CMD_ENDPOINT_CREATE, "{'name':'floating','command':'x','cpu':100}");
    add_running_endpoint(f, "stopped", "n1", 0.1, MiB);
    OK(f, MGR_CMD_ENDPOINT_UPDATE, "{'name':'stopped','state':'stopped'}");

    FAILS(f, DVS_ENOTFOUND, "endpoint", MGR_CMD_MIGRATION_CREATE,
          "{'endpoint':'nope','destination':'n2','reason':'manual'}");
    FAILS(f, DVS_ENOTFOUND, "destination", MGR_CMD_MIGRATION_CREATE,
          "{'endpoint':'kv','destination':'nope','reason':'manual'}");
    FAILS(f, DVS_ECONFLICT, "endpoint", MGR_CMD_MIGRATION_CREATE,
          "{'endpoint':'floating','destination':'n2','reason':'manual'}");
    msg_mentions(f, "not placed");
    FAILS(f, DVS_ECONFLICT, "endpoint", MGR_CMD_MIGRATION_CREATE,
          "{'endpoint':'stopped','destination':'n2','reason':'manual'}");
    FAILS(f, DVS_ECONFLICT, "destination", MGR_CMD_MIGRATION_CREATE,
          "{'endpoint':'kv','destination':'n1','reason':'manual'}");
    FAILS(f, DVS_EBADREQUEST, "reason", MGR_CMD_MIGRATION_CREATE,
          "{'endpoint':'kv','destination':'n2','reason':'boredom'}");
    msg_mentions(f, "overload, energy, maintenance, manual, rebalance");
    FAILS(f, DVS_ENOSPACE, "destination", MGR_CMD_MIGRATION_CREATE,
          "{'endpoint':'kv','destination':'tiny','reason':'manual'}");
    OK(f, MGR_CMD_NODE_STATE, "{'id':'n3','state':'down'}");
    FAILS(f, DVS_ECONFLICT, "destination", MGR_CMD_MIGRATION_CREATE,
          "{'endpoint':'kv','destination':'n3','reason':'manual'}");

    OK(f, MGR_CMD_MIGRATION_CREATE, "{'endpoint':'kv','destination':'n2','reason':'manual'}");
    FAILS(f, DVS_ECONFLICT, "endpoint", MGR_CMD_MIGRATION_CREATE,
          "{'endpoint':'kv','destination':'n2','reason':'manual'}");
    msg_mentions(f, "already migrating");
    assert_int_equal(count_rows(f->fsm, "migrations"), 1);
}

static void migration_commit_moves_the_endpoint_and_bumps_its_generation(void **state)
{
    struct fx *f = *state;
    migration_world(f);
    OK(f, MGR_CMD_ENDPOINT_UPDATE, "{'name':'kv','generation':4}");
    OK(f, MGR_CMD_MIGRATION_CREATE, "{'endpoint':'kv','destination':'n2','reason':'energy'}");
    OK(f, MGR_CMD_MIGRATION_UPDATE, "{'id':1,'phase':'precopy','bytes':4096,'rounds':1}");
    OK(f, MGR_CMD_MIGRATION_UPDATE, "{'id':1,'phase':'frozen','bytes':8192,'rounds':3}");
    f->now += 50;
    OK(f, MGR_CMD_MIGRATION_UPDATE,
       "{'id':1,'phase':'committed','downtime_ms':12,'address':'10.0.0.2:9001',"
       "'info':{'method':'uffd-wp','pages':[1,2]}}");
    json_t *m = f->res.object;
    expect_field_str(m, "phase", "committed");
    assert_int_equal(num(m, "finished_at"), f->now);
    assert_int_equal(num(m, "updated_at"), f->now);
    /* Figures not repeated keep their last values. */
    assert_int_equal(num(m, "bytes"), 8192);
    assert_int_equal(num(m, "rounds"), 3);
    assert_int_equal(num(m, "downtime_ms"), 12);
    expect_field_str(json_object_get(m, "info"), "method", "uffd-wp");
    assert_int_equal(f->change_mask, MGR_T_ENDPOINTS | MGR_T_MIGRATIONS);

    json_t *e = endpoint(f, "kv");
    expect_field_str(e, "node", "n2");
    expect_field_str(e, "address", "10.0.0.2:9001");
    expect_field_str(e, "state", "running");
    assert_int_equal(num(e, "generation"), 5);
    json_decref(e);

    FAILS(f, DVS_ECONFLICT, "phase", MGR_CMD_MIGRATION_UPDATE, "{'id':1,'phase':'aborted'}");
    msg_mentions(f, "already committed");
}

static void migration_abort_returns_the_endpoint_to_running_on_its_source(void **state)
{
    struct fx *f = *state;
    migration_world(f);
    OK(f, MGR_CMD_MIGRATION_CREATE, "{'endpoint':'kv','destination':'n2','reason':'manual'}");
    OK(f, MGR_CMD_MIGRATION_UPDATE, "{'id':1,'phase':'frozen'}");
    OK(f, MGR_CMD_MIGRATION_UPDATE, "{'id':1,'phase':'aborted','error':'destination died'}");
    expect_field_str(f->res.object, "error", "destination died");
    assert_int_equal(num(f->res.object, "finished_at"), f->now);
    json_t *e = endpoint(f, "kv");
    expect_field_str(e, "state", "running");
    expect_field_str(e, "node", "n1");
    assert_int_equal(num(e, "generation"), 0);
    json_decref(e);
    /* And it may migrate again. */
    OK(f, MGR_CMD_MIGRATION_CREATE, "{'endpoint':'kv','destination':'n2','reason':'manual'}");
    assert_int_equal(num(f->res.object, "id"), 2);
}

static void migration_phases_only_move_forward(void **state)
{
    struct fx *f = *state;
    migration_world(f);
    OK(f, MGR_CMD_MIGRATION_CREATE, "{'endpoint':'kv','destination':'n2','reason':'manual'}");
    /* A commit needs a freeze first. */
    FAILS(f, DVS_ECONFLICT, "phase", MGR_CMD_MIGRATION_UPDATE, "{'id':1,'phase':'committed'}");
    msg_mentions(f, "frozen");
    OK(f, MGR_CMD_MIGRATION_UPDATE, "{'id':1,'phase':'precopy'}");
    OK(f, MGR_CMD_MIGRATION_UPDATE, "{'id':1,'phase':'precopy','rounds':2}");
    FAILS(f, DVS_ECONFLICT, "phase", MGR_CMD_MIGRATION_UPDATE, "{'id':1,'phase':'planned'}");
    FAILS(f, DVS_ECONFLICT, "phase", MGR_CMD_MIGRATION_UPDATE, "{'id':1,'phase':'committed'}");
    OK(f, MGR_CMD_MIGRATION_UPDATE, "{'id':1,'phase':'frozen'}");
    FAILS(f, DVS_ECONFLICT, "phase", MGR_CMD_MIGRATION_UPDATE, "{'id':1,'phase':'precopy'}");
    FAILS(f, DVS_EBADREQUEST, "address", MGR_CMD_MIGRATION_UPDATE,
          "{'id':1,'phase':'frozen','address':'10.0.0.2:1'}");
    OK(f, MGR_CMD_MIGRATION_UPDATE, "{'id':1,'phase':'committed'}");
    /* Without an address the new instance reports its own later. */
    json_t *e = endpoint(f, "kv");
    assert_true(json_is_null(json_object_get(e, "address")));
    json_decref(e);

    /* Stop-and-copy skips pre-copy. */
    OK(f, MGR_CMD_MIGRATION_CREATE, "{'endpoint':'kv','destination':'n1','reason':'manual'}");
    OK(f, MGR_CMD_MIGRATION_UPDATE, "{'id':2,'phase':'frozen'}");
    OK(f, MGR_CMD_MIGRATION_UPDATE, "{'id':2,'phase':'committed'}");
}

static void migration_update_validates_its_fields(void **state)
{
    struct fx *f = *state;
    migration_world(f);
    FAILS(f, DVS_ENOTFOUND, "id", MGR_CMD_MIGRATION_UPDATE, "{'id':1,'phase':'precopy'}");
    OK(f, MGR_CMD_MIGRATION_CREATE, "{'endpoint':'kv','destination':'n2','reason':'manual'}");
    FAILS(f, DVS_EBADREQUEST, "id", MGR_CMD_MIGRATION_UPDATE, "{'id':0,'phase':'precopy'}");
    FAILS(f, DVS_EBADREQUEST, "phase", MGR_CMD_MIGRATION_UPDATE, "{'id':1,'phase':'done'}");
    FAILS(f, DVS_EBADREQUEST, "bytes", MGR_CMD_MIGRATION_UPDATE,
          "{'id':1,'phase':'precopy','bytes':-1}");
    FAILS(f, DVS_EBADREQUEST, "info", MGR_CMD_MIGRATION_UPDATE,
          "{'id':1,'phase':'precopy','info':[1]}");
    FAILS(f, DVS_EBADREQUEST, "error", MGR_CMD_MIGRATION_UPDATE,
          "{'id':1,'phase':'precopy','error':false}");
}

static void migrations_are_listed_newest_first(void **state)
{
    struct fx *f = *state;
    migration_world(f);
    OK(f, MGR_CMD_MIGRATION_CREATE, "{'endpoint':'kv','destination':'n2','reason':'manual'}");
    OK(f, MGR_CMD_MIGRATION_UPDATE, "{'id':1,'phase':'aborted'}");
    OK(f, MGR_CMD_MIGRATION_CREATE, "{'endpoint':'kv','destination':'n2','reason':'rebalance'}");
    json_t *all = mgr_fsm_migrations(f->fsm);
    assert_int_equal(json_array_size(all), 2);
    assert_int_equal(num(json_array_get(all, 0), "id"), 2);
    assert_int_equal(num(json_array_get(all, 1), "id"), 1);
    json_decref(all);
}

/* ======================================================================
 * Apply semantics: atomicity, index, deduplication, callbacks
 * ====================================================================== */

static void failed_commands_change_nothing_but_the_index(void **state)
{
    struct fx *f = *state;
    migration_world(f);
    OK(f, MGR_CMD_MEMBER_SET, "{'id':'m1','raft_addr':'127.0.0.1:7101','http_addr':'127.0.0.1:7001'}");
    OK(f, MGR_CMD_MIGRATION_CREATE, "{'endpoint':'kv','destination':'n2','reason':'manual'}");
    OK(f, MGR_CMD_LOAD_SUMMARY, "{'nodes':[{'id':'n1','cpu':1,'mem':1,'rps':1}]}");

    static const struct {
        unsigned type;
        const char *body;
        int code;
    } failing[] = {
        {MGR_CMD_MEMBER_SET, "{'id':'m2','raft_addr':'127.0.0.1:7101','http_addr':'127.0.0.1:7'}", DVS_ECONFLICT},
        {MGR_CMD_MEMBER_DEL, "{'id':'m9'}", DVS_ENOTFOUND},
        {MGR_CMD_NODE_REGISTER, "{'id':'n1','address':'10.0.0.1:1','cpu':1,'mem':1,'x':1}", DVS_EBADREQUEST},
        {MGR_CMD_NODE_STATE, "{'id':'n9','state':'up'}", DVS_ENOTFOUND},
        {MGR_CMD_LOAD_SUMMARY, "{'nodes':[{'id':'n1','cpu':2,'mem':2,'rps':2},{'id':'n2'}]}", DVS_EBADREQUEST},
        {MGR_CMD_ENDPOINT_CREATE, "{'name':'kv','command':'x'}", DVS_EEXISTS},
        {MGR_CMD_ENDPOINT_CREATE, "{'name':'new','command':'x','node':'n1','cpu':99}", DVS_ENOSPACE},
        {MGR_CMD_ENDPOINT_UPDATE, "{'name':'kv','generation':0,'state':'running'}", DVS_ECONFLICT},
        {MGR_CMD_ENDPOINT_DELETE, "{'name':'nope'}", DVS_ENOTFOUND},
        {MGR_CMD_MIGRATION_CREATE, "{'endpoint':'kv','destination':'n2','reason':'manual'}", DVS_ECONFLICT},
        {MGR_CMD_MIGRATION_UPDATE, "{'id':1,'phase':'committed'}", DVS_ECONFLICT},
        {MGR_CMD_MIGRATION_UPDATE, "{'id':1,'phase':'precopy','bytes':'many'}", DVS_EBADREQUEST},
        {MGR_CMD_MIGRATION_UPDATE, "{'id':1,'phase':'frozen','address':'10.0.0.1:1'}", DVS_EBADREQUEST},
    };
    for (size_t i = 0; i < sizeof(failing) / sizeof(failing[0]); i++) {
        json_t *before = state_of(f->fsm);
        uint64_t index = mgr_fsm_index(f->fsm);
        unsigned changes = f->changes;
        FAILS(f, failing[i].code, NULL, failing[i].type, failing[i].body);
        json_t *after = state_of(f->fsm);
        assert_json_equal(before, after);
        assert_int_equal(mgr_fsm_index(f->fsm), index + 1);
        assert_int_equal(f->changes, changes);
        json_decref(before);
        json_decref(after);
    }
}

static void every_command_advances_the_index_and_changes_stamp_it(void **state)
{
    struct fx *f = *state;
    assert_int_equal(mgr_fsm_index(f->fsm), 0);
    add_node(f, "n1", 4, 8 * GiB);
    assert_int_equal(mgr_fsm_index(f->fsm), 1);
    FAILS(f, DVS_ENOTFOUND, NULL, MGR_CMD_NODE_STATE, "{'id':'n2','state':'up'}");
    assert_int_equal(mgr_fsm_index(f->fsm), 2);
    OK(f, MGR_CMD_ENDPOINT_CREATE, "{'name':'kv','command':'x'}");
    assert_int_equal(mgr_fsm_index(f->fsm), 3);
    assert_int_equal(f->change_index, 3);
    assert_int_equal(mgr_fsm_table_index(f->fsm, MGR_T_NODES), 1);
    assert_int_equal(mgr_fsm_table_index(f->fsm, MGR_T_ENDPOINTS), 3);
    assert_int_equal(mgr_fsm_table_index(f->fsm, MGR_T_MIGRATIONS), 0);
    assert_int_equal(mgr_fsm_table_index(f->fsm, MGR_T_NODES | MGR_T_ENDPOINTS), 3);
    json_t *n = node(f, "n1");
    assert_int_equal(num(n, "modify_index"), 1);
    json_decref(n);
}

static void callbacks_report_results_and_touched_tables(void **state)
{
    struct fx *f = *state;
    assert_int_equal(apply_rid(f, MGR_CMD_ENDPOINT_CREATE, 77, "{'name':'kv','command':'x'}"), 0);
    assert_int_equal(f->results, 1);
    assert_int_equal(f->result_rid, 77);
    assert_int_equal(f->result_code, 0);
    assert_true(f->result_had_object);
    assert_int_equal(f->changes, 1);
    assert_int_equal(f->change_mask, MGR_T_ENDPOINTS);

    assert_int_equal(apply_rid(f, MGR_CMD_ENDPOINT_CREATE, 78, "{'name':'kv','command':'x'}"),
                     DVS_EEXISTS);
    assert_int_equal(f->results, 2);
    assert_int_equal(f->result_rid, 78);
    assert_int_equal(f->result_code, DVS_EEXISTS);
    assert_int_equal(f->changes, 1); /* nothing changed, nothing to wake */
}

static void duplicate_request_id_is_applied_once(void **state)
{
    struct fx *f = *state;
    assert_int_equal(apply_rid(f, MGR_CMD_ENDPOINT_CREATE, 555, "{'name':'kv','command':'x'}"), 0);
    OK(f, MGR_CMD_ENDPOINT_DELETE, "{'name':'kv'}");

    /* The retry of an entry whose outcome was unknown (RAFT.md item 3). */
    json_t *before = state_of(f->fsm);
    uint64_t index = mgr_fsm_index(f->fsm);
    assert_int_equal(apply_rid(f, MGR_CMD_ENDPOINT_CREATE, 555, "{'name':'kv','command':'x'}"), 0);
    assert_null(f->res.object);
    assert_false(f->result_had_object);
    assert_int_equal(f->result_rid, 555);
    assert_int_equal(mgr_fsm_index(f->fsm), index + 1);
    assert_null(mgr_fsm_endpoint(f->fsm, "kv"));
    json_t *after = mgr_fsm_dump(f->fsm);
    json_t *stripped = state_of(f->fsm);
    assert_json_equal(before, stripped);
    /* Not even the request memory grows. */
    assert_int_equal(json_array_size(json_object_get(after, "requests")), 2);
    json_decref(before);
    json_decref(after);
    json_decref(stripped);
}

static void duplicate_request_id_reports_the_first_failure(void **state)
{
    struct fx *f = *state;
    assert_int_equal(apply_rid(f, MGR_CMD_NODE_STATE, 9, "{'id':'n1','state':'up'}"),
                     DVS_ENOTFOUND);
    char msg[sizeof(f->res.msg)];
    snprintf(msg, sizeof(msg), "%s", f->res.msg);
    add_node(f, "n1", 1, GiB);
    /* The node exists now, but the retry reports what the first attempt did. */
    assert_int_equal(apply_rid(f, MGR_CMD_NODE_STATE, 9, "{'id':'n1','state':'down'}"),
                     DVS_ENOTFOUND);
    assert_string_equal(f->res.msg, msg);
    assert_string_equal(f->res.field, "id");
    json_t *n = node(f, "n1");
    expect_field_str(n, "state", "up");
    json_decref(n);
}

static void request_memory_keeps_only_the_most_recent_ids(void **state)
{
    struct fx *f = *state;
    assert_int_equal(apply_rid(f, MGR_CMD_ENDPOINT_CREATE, 1, "{'name':'kv','command':'x'}"), 0);
    OK(f, MGR_CMD_ENDPOINT_DELETE, "{'name':'kv'}");
    /* Still remembered: the retry is a no-op. */
    assert_int_equal(apply_rid(f, MGR_CMD_ENDPOINT_CREATE, 1, "{'name':'kv','command':'x'}"), 0);
    assert_null(mgr_fsm_endpoint(f->fsm, "kv"));

    for (int i = 0; i < MGR_FSM_REQUEST_MEMORY; i++)
        assert_int_equal(apply_rid(f, MGR_CMD_MEMBER_DEL, (1ull << 40) + (uint64_t)i, "{'id':'m'}"),
                         DVS_ENOTFOUND);
    assert_int_equal(count_rows(f->fsm, "requests"), MGR_FSM_REQUEST_MEMORY);

    /* Forgotten now, so applied again. */
    assert_int_equal(apply_rid(f, MGR_CMD_ENDPOINT_CREATE, 1, "{'name':'kv','command':'x'}"), 0);
    json_t *e = endpoint(f, "kv");
    json_decref(e);
    assert_int_equal(count_rows(f->fsm, "requests"), MGR_FSM_REQUEST_MEMORY);
}

static void commands_of_unknown_type_or_without_an_object_body_are_rejected(void **state)
{
    struct fx *f = *state;
    struct mgr_cmd cmd = {.type = 99, .request_id = 5, .time_ms = 1, .body = json_object()};
    assert_int_equal(mgr_fsm_apply(f->fsm, &cmd, &f->res), DVS_EBADREQUEST);
    mgr_fsm_result_clear(&f->res);
    json_decref(cmd.body);
    cmd.type = MGR_CMD_NODE_STATE;
    cmd.request_id = 6;
    cmd.body = json_string("n1");
    assert_int_equal(mgr_fsm_apply(f->fsm, &cmd, &f->res), DVS_EBADREQUEST);
    json_decref(cmd.body);
    cmd.request_id = 7;
    cmd.body = NULL;
    assert_int_equal(mgr_fsm_apply(f->fsm, &cmd, &f->res), DVS_EBADREQUEST);
    assert_int_equal(mgr_fsm_index(f->fsm), 3);
}

static void same_log_gives_the_same_state_on_every_member(void **state)
{
    (void)state;
    struct fx a = {0}, b = {0};
    struct fx *members[] = {&a, &b};
    for (int m = 0; m < 2; m++) {
        struct fx *f = members[m];
        assert_int_equal(mgr_fsm_open(&f->fsm), 0);
        f->now = 1000;
        rng_state = 7;
        for (int i = 0; i < 8; i++)
            add_node(f, (char[]){'n', (char)('0' + i), 0}, 1 + (double)(rng() % 8) / 2,
                     (int64_t)(1 + rng() % 8) * GiB);
        for (int i = 0; i < 300; i++) {
            f->now += 13;
            uint64_t r = rng() % 10;
            if (r < 5)
                apply(f, MGR_CMD_ENDPOINT_CREATE,
                      "{'name':'e%d','command':'x','cpu':%.3f,'mem':%" PRIu64 ",'arena':%" PRIu64 "}",
                      (int)(rng() % 100), (double)(rng() % 1000) / 1000,
                      (rng() % 1024) * MiB, MGR_ARENA_MIN + rng() % GiB);
            else if (r < 7)
                apply(f, MGR_CMD_ENDPOINT_DELETE, "{'name':'e%d'}", (int)(rng() % 100));
            else if (r < 8)
                apply(f, MGR_CMD_NODE_STATE, "{'id':'n%d','state':'%s'}", (int)(rng() % 8),
                      rng() % 2 ? "up" : "draining");
            else
                apply(f, MGR_CMD_MIGRATION_CREATE,
                      "{'endpoint':'e%d','destination':'n%d','reason':'rebalance'}",
                      (int)(rng() % 100), (int)(rng() % 8));
        }
        mgr_fsm_result_clear(&f->res);
    }
    json_t *da = mgr_fsm_dump(a.fsm), *db = mgr_fsm_dump(b.fsm);
    assert_json_equal(da, db);
    assert_true(json_array_size(json_object_get(da, "endpoints")) > 10);
    json_decref(da);
    json_decref(db);
    mgr_fsm_close(a.fsm);
    mgr_fsm_close(b.fsm);
}

/* ======================================================================
 * Snapshots
 * ====================================================================== */

/* A state that uses every table and every nullable column both ways. */
static void populate(struct fx *f)
{
    migration_world(f);
    OK(f, MGR_CMD_MEMBER_SET, "{'id':'m1','raft_addr':'127.0.0.1:7101','http_addr':'127.0.0.1:7001'}");
    OK(f, MGR_CMD_NODE_STATE, "{'id':'n2','state':'up','reason':'fine'}");
    OK(f, MGR_CMD_LOAD_SUMMARY, "{'nodes':[{'id':'n1','cpu':0.75,'mem':123,'rps':4.5}]}");
    OK(f, MGR_CMD_ENDPOINT_CREATE, "{'name':'pending','command':'x \\\"y\\\"','cpu':1000}");
    OK(f, MGR_CMD_MIGRATION_CREATE, "{'endpoint':'kv','destination':'n2','reason':'manual'}");
    OK(f, MGR_CMD_MIGRATION_UPDATE, "{'id':1,'phase':'aborted','error':'e','info':{'k':[1]}}");
    OK(f, MGR_CMD_MIGRATION_CREATE, "{'endpoint':'kv','destination':'n2','reason':'energy'}");
    FAILS(f, DVS_ENOTFOUND, NULL, MGR_CMD_MEMBER_DEL, "{'id':'zz'}");
}

static void snapshot_restored_into_a_fresh_fsm_equals_the_original(void **state)
{
    struct fx *f = *state;
    populate(f);
    void *data;
    size_t len;
    assert_int_equal(mgr_fsm_snapshot(f->fsm, &data, &len), 0);
    assert_true(len > 0);

    struct mgr_fsm *copy;
    assert_int_equal(mgr_fsm_open(&copy), 0);
    assert_int_equal(mgr_fsm_restore(copy, data, len), 0);
    sqlite3_free(data);

    json_t *da = mgr_fsm_dump(f->fsm), *db = mgr_fsm_dump(copy);
    assert_json_equal(da, db);
    json_decref(da);
    json_decref(db);
    assert_int_equal(mgr_fsm_index(copy), mgr_fsm_index(f->fsm));
    for (unsigned t = MGR_T_MEMBERS; t <= MGR_T_LOAD; t <<= 1)
        assert_int_equal(mgr_fsm_table_index(copy, t), mgr_fsm_table_index(f->fsm, t));

    /* Both go on identically, including failures rolled back on the copy
     * (its connection came from sqlite3_deserialize) and id counters. */
    struct mgr_fsm *fsms[] = {f->fsm, copy};
    for (int i = 0; i < 2; i++) {
        struct mgr_fsm_result res;
        struct mgr_cmd cmds[] = {
            {MGR_CMD_ENDPOINT_CREATE, 1, 5, json_pack("{s:s,s:s}", "name", "new", "command", "x")},
            {MGR_CMD_ENDPOINT_CREATE, 2, 6, json_pack("{s:s,s:s,s:s,s:f}", "name", "n2full",
                                                      "command", "x", "node", "n2", "cpu", 9.0)},
            {MGR_CMD_MIGRATION_UPDATE, 3, 7, json_pack("{s:i,s:s}", "id", 2, "phase", "frozen")},
            {MGR_CMD_ENDPOINT_CREATE, 1, 8, json_pack("{s:s,s:s}", "name", "dup", "command", "x")},
        };
        for (size_t k = 0; k < 4; k++) {
            mgr_fsm_apply(fsms[i], &cmds[k], &res);
            mgr_fsm_result_clear(&res);
            mgr_cmd_clear(&cmds[k]);
        }
    }
    da = mgr_fsm_dump(f->fsm);
    db = mgr_fsm_dump(copy);
    assert_json_equal(da, db);
    assert_int_equal(json_array_size(json_object_get(db, "endpoints")), 3);
    json_decref(da);
    json_decref(db);
    mgr_fsm_close(copy);
}

static void restore_of_garbage_fails_and_keeps_the_old_state(void **state)
{
    struct fx *f = *state;
    populate(f);
    json_t *before = mgr_fsm_dump(f->fsm);
    void *data;
    size_t len;
    assert_int_equal(mgr_fsm_snapshot(f->fsm, &data, &len), 0);

    unsigned char junk[8192];
    rng_state = 99;
    for (size_t i = 0; i < sizeof(junk); i++)
        junk[i] = (unsigned char)rng();
    assert_true(mgr_fsm_restore(f->fsm, junk, sizeof(junk)) < 0);
    assert_true(mgr_fsm_restore(f->fsm, junk, 1) < 0);
    assert_true(mgr_fsm_restore(f->fsm, NULL, 0) < 0);
    assert_true(mgr_fsm_restore(f->fsm, data, 0) < 0);
    /* A snapshot cut short, or with a page damaged. */
    assert_true(mgr_fsm_restore(f->fsm, data, len / 2) < 0);
    unsigned char *bad = malloc(len);
    memcpy(bad, data, len);
    for (size_t i = 4096 + 8; i < 4096 + 64 && i < len; i++)
        bad[i] ^= 0x5a;
    assert_true(mgr_fsm_restore(f->fsm, bad, len) < 0);
    free(bad);
    sqlite3_free(data);

    json_t *after = mgr_fsm_dump(f->fsm);
    assert_json_equal(before, after);
    json_decref(after);
    json_decref(before);
    /* And it still works. */
    OK(f, MGR_CMD_ENDPOINT_CREATE, "{'name':'after','command':'x'}");
}

/* Rewrite a snapshot with SQL, as a different version of DVS might have made it. */
static void *doctor_snapshot(struct mgr_fsm *fsm, const char *sql, size_t *ret_len)
{
    void *data;
    size_t len;
    assert_int_equal(mgr_fsm_snapshot(fsm, &data, &len), 0);
    sqlite3 *db;
    assert_int_equal(sqlite3_open(":memory:", &db), SQLITE_OK);
    assert_int_equal(sqlite3_deserialize(db, "main", data, (sqlite3_int64)len,
                                         (sqlite3_int64)len,
                                         SQLITE_DESERIALIZE_FREEONCLOSE |
                                             SQLITE_DESERIALIZE_RESIZEABLE),
                     SQLITE_OK);
    assert_int_equal(sqlite3_exec(db, sql, NULL, NULL, NULL), SQLITE_OK);
    sqlite3_int64 n;
    void *out = sqlite3_serialize(db, "main", &n, 0);
    assert_non_null(out);
    sqlite3_close(db);
    *ret_len = (size_t)n;
    return out;
}

static void restore_refuses_other_schemas_and_keeps_the_old_state(void **state)
{
    struct fx *f = *state;
    populate(f);
    json_t *before = mgr_fsm_dump(f->fsm);
    size_t len;

    char pragma[64];
    snprintf(pragma, sizeof(pragma), "PRAGMA user_version = %d", MGR_FSM_SCHEMA_VERSION + 1);
    void *newer = doctor_snapshot(f->fsm, pragma, &len);
    assert_int_equal(mgr_fsm_restore(f->fsm, newer, len), -EPROTONOSUPPORT);
    sqlite3_free(newer);

    static const char *const foreign[] = {
        "PRAGMA user_version = 0",
        "CREATE TABLE extra(x)",
        "DROP TABLE requests",
        "ALTER TABLE nodes ADD COLUMN colour TEXT",
        "CREATE INDEX nodes_state ON nodes(state)",
        "DELETE FROM meta WHERE key = 'index'",
    };
    for (size_t i = 0; i < sizeof(foreign) / sizeof(foreign[0]); i++) {
        void *data = doctor_snapshot(f->fsm, foreign[i], &len);
        int rv = mgr_fsm_restore(f->fsm, data, len);
        if (rv != DVS_EPROTO)
            print_error("\"%s\": restore returned %s\n", foreign[i], dvs_err_name(rv));
        assert_int_equal(rv, DVS_EPROTO);
        sqlite3_free(data);
    }

    json_t *after = mgr_fsm_dump(f->fsm);
    assert_json_equal(before, after);
    json_decref(after);
    json_decref(before);
}

/* A snapshot of schema version 2 (before auto_migrate and transfer_secret)
 * restores, upgraded. */
static void restore_upgrades_a_version_2_snapshot(void **state)
{
    struct fx *f = *state;
    populate(f);
    json_t *before = mgr_fsm_dump(f->fsm);
    size_t len;
    void *v1 = doctor_snapshot(f->fsm,
                               "ALTER TABLE endpoints DROP COLUMN auto_migrate; "
                               "ALTER TABLE migrations DROP COLUMN transfer_secret; "
                               "PRAGMA user_version = 2",
                               &len);
    struct mgr_fsm *copy;
    assert_int_equal(mgr_fsm_open(&copy), 0);
    assert_int_equal(mgr_fsm_restore(copy, v1, len), 0);
    json_t *after = mgr_fsm_dump(copy);
    assert_json_equal(before, after);
    json_t *kv = mgr_fsm_endpoint(copy, "kv");
    assert_true(json_is_true(json_object_get(kv, "auto_migrate")));
    json_decref(kv);
    json_decref(after);
    json_decref(before);
    mgr_fsm_close(copy);
    sqlite3_free(v1);
}

/* DESIGN.md §6: the per-endpoint opt-out of automatic moves. */
static void auto_migrate_is_set_at_creation_and_changed_by_update(void **state)
{
    struct fx *f = *state;
    add_node(f, "n1", 4, 1ll << 30);
    OK(f, MGR_CMD_ENDPOINT_CREATE, "{'name':'a','command':'/bin/svc','node':'n1'}");
    json_t *e = endpoint(f, "a");
    assert_true(json_is_true(json_object_get(e, "auto_migrate")));
    json_decref(e);
    OK(f, MGR_CMD_ENDPOINT_CREATE,
       "{'name':'b','command':'/bin/svc','node':'n1','auto_migrate':false}");
    e = endpoint(f, "b");
    assert_true(json_is_false(json_object_get(e, "auto_migrate")));
    int64_t idx = num(e, "modify_index");
    json_decref(e);
    FAILS(f, DVS_EBADREQUEST, "auto_migrate", MGR_CMD_ENDPOINT_CREATE,
          "{'name':'c','command':'/bin/svc','auto_migrate':'no'}");
    FAILS(f, DVS_EBADREQUEST, "auto_migrate", MGR_CMD_ENDPOINT_UPDATE,
          "{'name':'b','auto_migrate':0}");

    /* Set back; an update that changes nothing leaves the row alone. */
    OK(f, MGR_CMD_ENDPOINT_UPDATE, "{'name':'b','auto_migrate':true}");
    e = endpoint(f, "b");
    assert_true(json_is_true(json_object_get(e, "auto_migrate")));
    assert_true(num(e, "modify_index") > idx);
    idx = num(e, "modify_index");
    json_decref(e);
    OK(f, MGR_CMD_ENDPOINT_UPDATE, "{'name':'b','auto_migrate':true}");
    e = endpoint(f, "b");
    assert_int_equal(num(e, "modify_index"), idx);
    json_decref(e);

    /* It is the operator's, allowed while the endpoint migrates. */
    add_node(f, "n2", 4, 1ll << 30);
    OK(f, MGR_CMD_ENDPOINT_UPDATE, "{'name':'b','state':'running','address':'10.0.0.1:9000'}");
    OK(f, MGR_CMD_MIGRATION_CREATE, "{'endpoint':'b','destination':'n2','reason':'manual'}");
    OK(f, MGR_CMD_ENDPOINT_UPDATE, "{'name':'b','auto_migrate':false}");
    e = endpoint(f, "b");
    assert_true(json_is_false(json_object_get(e, "auto_migrate")));
    assert_string_equal(str(e, "state"), "migrating");
    json_decref(e);
}

static void restore_wakes_every_watcher(void **state)
{
    struct fx *f = *state;
    populate(f);
    void *data;
    size_t len;
    assert_int_equal(mgr_fsm_snapshot(f->fsm, &data, &len), 0);
    f->changes = 0;
    assert_int_equal(mgr_fsm_restore(f->fsm, data, len), 0);
    sqlite3_free(data);
    assert_int_equal(f->changes, 1);
    assert_int_equal(f->change_mask,
                     MGR_T_MEMBERS | MGR_T_NODES | MGR_T_ENDPOINTS | MGR_T_MIGRATIONS | MGR_T_LOAD);
    assert_int_equal(f->change_index, mgr_fsm_index(f->fsm));
}

/* ======================================================================
 * struct raft_fsm
 * ====================================================================== */

static void raft_fsm_applies_encoded_entries(void **state)
{
    struct fx *f = *state;
    struct raft_fsm *r = mgr_fsm_raft(f->fsm);
    assert_int_equal(r->version, 2);
    assert_non_null(r->snapshot_finalize);

    struct mgr_cmd cmd = {.type = MGR_CMD_NODE_REGISTER, .request_id = 31, .time_ms = 5,
                          .body = json_pack("{s:s,s:s,s:i,s:i}", "id", "n1", "address",
                                            "10.0.0.1:7100", "cpu", 2, "mem", 1024)};
    struct raft_buffer buf;
    assert_int_equal(mgr_cmd_encode(&cmd, &buf.base, &buf.len), 0);
    void *result = (void *)0x1;
    assert_int_equal(r->apply(r, &buf, &result), 0);
    assert_null(result);
    assert_int_equal(mgr_fsm_index(f->fsm), 1);
    assert_int_equal(f->result_rid, 31);
    assert_int_equal(f->result_code, 0);
    json_t *n = node(f, "n1");
    assert_int_equal(num(n, "registered_at"), 5);
    json_decref(n);

    /* An application error is still a successful apply for raft (RAFT.md 4). */
    assert_int_equal(r->apply(r, &buf, &result), 0); /* duplicate id */
    raft_free(buf.base);
    mgr_cmd_clear(&cmd);
    assert_int_equal(mgr_fsm_index(f->fsm), 2);
}

static void raft_fsm_counts_undecodable_entries_without_crashing(void **state)
{
    struct fx *f = *state;
    struct raft_fsm *r = mgr_fsm_raft(f->fsm);
    void *result;

    /* A sound header with a body that is not JSON: the proposer hears why. */
    unsigned char entry[40] = {'D', 'V', 'S', 'C', 1, 0, MGR_CMD_NODE_STATE, 0,
                               0x39, 0x30, 0, 0, 0, 0, 0, 0, /* request id 12345 */
                               0, 0, 0, 0, 0, 0, 0, 0, 3, 0, 0, 0, 0, 0, 0, 0,
                               'n', 'o', '!', 0, 0, 0, 0, 0};
    struct raft_buffer buf = {entry, sizeof(entry)};
    assert_int_equal(r->apply(r, &buf, &result), 0);
    assert_int_equal(mgr_fsm_index(f->fsm), 1);
    assert_int_equal(f->result_rid, 12345);
    assert_int_equal(f->result_code, DVS_EPROTO);

    unsigned char junk[3] = {1, 2, 3};
    buf = (struct raft_buffer){junk, sizeof(junk)};
    assert_int_equal(r->apply(r, &buf, &result), 0);
    assert_int_equal(f->result_rid, 0);
    buf = (struct raft_buffer){NULL, 0};
    assert_int_equal(r->apply(r, &buf, &result), 0);
    assert_int_equal(mgr_fsm_index(f->fsm), 3);
    assert_int_equal(count_rows(f->fsm, "requests"), 0);
}

static void raft_fsm_snapshot_and_restore_round_trip(void **state)
{
    struct fx *f = *state;
    populate(f);
    struct raft_fsm *r = mgr_fsm_raft(f->fsm);
    struct raft_buffer *bufs = NULL;
    unsigned n = 0;
    assert_int_equal(r->snapshot(r, &bufs, &n), 0);
    assert_int_equal(n, 1);

    /* What raft hands a follower: a copy in raft memory, ours on success. */
    struct raft_buffer copy = {raft_malloc(bufs[0].len), bufs[0].len};
    memcpy(copy.base, bufs[0].base, copy.len);
    assert_int_equal(r->snapshot_finalize(r, &bufs, &n), 0);
    assert_null(bufs);
    assert_int_equal(n, 0);

    struct mgr_fsm *other;
    assert_int_equal(mgr_fsm_open(&other), 0);
    struct raft_fsm *ro = mgr_fsm_raft(other);
    assert_int_equal(ro->restore(ro, &copy), 0);
    json_t *da = mgr_fsm_dump(f->fsm), *db = mgr_fsm_dump(other);
    assert_json_equal(da, db);
    json_decref(da);
    json_decref(db);

    /* On failure the buffer stays raft's. */
    struct raft_buffer junk = {raft_malloc(100), 100};
    memset(junk.base, 0xab, 100);
    assert_true(ro->restore(ro, &junk) != 0);
    raft_free(junk.base);
    mgr_fsm_close(other);
}

/* ======================================================================
 * Queries
 * ====================================================================== */

static void assert_keys(json_t *obj, const char *const *keys)
{
    size_t n = 0;
    for (; keys[n]; n++)
        if (!json_object_get(obj, keys[n])) {
            print_error("missing key \"%s\"\n", keys[n]);
            fail();
        }
    if (json_object_size(obj) != n) {
        char *t = json_dumps(obj, JSON_SORT_KEYS);
        print_error("unexpected keys in %s\n", t);
        free(t);
        fail();
    }
}

static void queries_return_the_shapes_of_the_api(void **state)
{
    struct fx *f = *state;
    populate(f);
    static const char *const node_keys[] = {"id", "address", "state", "eligible", "cpu", "mem",
                                            "load", "registered_at", "state_since",
                                            "state_reason", "modify_index", NULL};
    static const char *const endpoint_keys[] = {
        "name", "id", "command", "cpu", "mem", "arena_size", "arena_addr", "node", "address",
        "generation", "state", "created_at", "modify_index", "auto_migrate", NULL};
    static const char *const migration_keys[] = {
        "id", "endpoint", "source", "destination", "reason", "phase", "created_at",
        "updated_at", "finished_at", "bytes", "rounds", "downtime_ms", "explanation", "error",
        "info", "modify_index", NULL};
    static const char *const member_keys[] = {"id", "raft_addr", "http_addr", "modify_index",
                                              NULL};

    json_t *all = mgr_fsm_nodes(f->fsm);
    assert_int_equal(json_array_size(all), 2);
    for (size_t i = 0; i < json_array_size(all); i++)
        assert_keys(json_array_get(all, i), node_keys);
    json_t *n1 = json_array_get(all, 0);
    expect_field_str(n1, "id", "n1");
    assert_true(json_is_boolean(json_object_get(n1, "eligible")));
    assert_true(json_is_real(json_object_get(n1, "cpu")));
    assert_true(json_is_object(json_object_get(n1, "load")));
    assert_true(json_is_null(json_object_get(n1, "state_reason")));
    json_decref(all);

    all = mgr_fsm_endpoints(f->fsm);
    assert_int_equal(json_array_size(all), 2);
    for (size_t i = 0; i < json_array_size(all); i++)
        assert_keys(json_array_get(all, i), endpoint_keys);
    expect_field_str(json_array_get(all, 0), "name", "kv"); /* ordered by name */
    json_decref(all);

    all = mgr_fsm_migrations(f->fsm);
    for (size_t i = 0; i < json_array_size(all); i++)
        assert_keys(json_array_get(all, i), migration_keys);
    json_decref(all);

    all = mgr_fsm_members(f->fsm);
    assert_keys(json_array_get(all, 0), member_keys);
    json_decref(all);
}

static void queries_of_unknown_objects_return_null(void **state)
{
    struct fx *f = *state;
    assert_null(mgr_fsm_node(f->fsm, "n1"));
    assert_null(mgr_fsm_endpoint(f->fsm, "kv"));
    assert_null(mgr_fsm_migration(f->fsm, 1));
    assert_null(mgr_fsm_member(f->fsm, "m1"));
    assert_null(mgr_fsm_orders(f->fsm, "n1"));
    json_t *all = mgr_fsm_nodes(f->fsm);
    assert_true(json_is_array(all));
    assert_int_equal(json_array_size(all), 0);
    json_decref(all);
}

static void orders_list_the_node_endpoints_and_its_active_migrations(void **state)
{
    struct fx *f = *state;
    migration_world(f);
    add_node(f, "n3", 4, 8 * GiB);
    add_running_endpoint(f, "other", "n3", 0.1, MiB);
    add_running_endpoint(f, "web", "n2", 0.1, MiB);
    OK(f, MGR_CMD_MIGRATION_CREATE, "{'endpoint':'kv','destination':'n2','reason':'manual'}");
    OK(f, MGR_CMD_MIGRATION_CREATE, "{'endpoint':'other','destination':'n1','reason':'manual'}");
    OK(f, MGR_CMD_MIGRATION_UPDATE, "{'id':2,'phase':'aborted'}");

    json_t *o = mgr_fsm_orders(f->fsm, "n2");
    assert_non_null(o);
    expect_field_str(o, "node", "n2");
    expect_field_str(o, "state", "up");
    json_t *eps = json_object_get(o, "endpoints");
    assert_int_equal(json_array_size(eps), 1);
    expect_field_str(json_array_get(eps, 0), "name", "web");
    json_t *migs = json_object_get(o, "migrations");
    assert_int_equal(json_array_size(migs), 1); /* the aborted one is not an order */
    expect_field_str(json_array_get(migs, 0), "endpoint", "kv");
    json_decref(o);

    o = mgr_fsm_orders(f->fsm, "n1");
    assert_int_equal(json_array_size(json_object_get(o, "endpoints")), 1);
    assert_int_equal(json_array_size(json_object_get(o, "migrations")), 1);
    json_decref(o);
}

static void counts_cover_every_node_state(void **state)
{
    struct fx *f = *state;
    populate(f);
    OK(f, MGR_CMD_NODE_STATE, "{'id':'n2','state':'standby'}");
    json_t *c = mgr_fsm_counts(f->fsm);
    assert_non_null(c);
    assert_int_equal(num(c, "members"), 1);
    assert_int_equal(num(c, "endpoints"), 2);
    assert_int_equal(num(c, "migrations_active"), 1);
    json_t *nodes = json_object_get(c, "nodes");
    assert_int_equal(num(nodes, "up"), 1);
    assert_int_equal(num(nodes, "standby"), 1);
    assert_int_equal(num(nodes, "down"), 0);
    assert_int_equal(num(nodes, "draining"), 0);
    assert_int_equal(num(nodes, "drained"), 0);
    json_decref(c);
}

/* ======================================================================
 * Out of memory (SQLite's own allocator fails once, at every possible point)
 * ====================================================================== */

#define FAULT_MAX_ATTEMPTS 400

static sqlite3_mem_methods real_mem;
static int fault_countdown = -1; /* allocations left before one fails; -1 = off */
static bool fault_fired;

static bool fault_now(void)
{
    if (fault_countdown < 0)
        return false;
    if (fault_countdown-- > 0)
        return false;
    fault_fired = true;
    return true;
}

static void *fault_malloc(int n)
{
    return fault_now() ? NULL : real_mem.xMalloc(n);
}

static void *fault_realloc(void *p, int n)
{
    return fault_now() ? NULL : real_mem.xRealloc(p, n);
}

/*
 * SQLite's allocator can only be swapped while SQLite is shut down, with no
 * connection open. Setup and teardown do it, so that a failing test cannot
 * leave the faulty allocator behind for the next ones.
 */
static int fault_setup(void **state)
{
    fault_countdown = -1;
    if (sqlite3_shutdown() != SQLITE_OK ||
        sqlite3_config(SQLITE_CONFIG_GETMALLOC, &real_mem) != SQLITE_OK)
        return -1;
    sqlite3_mem_methods faulty = real_mem;
    faulty.xMalloc = fault_malloc;
    faulty.xRealloc = fault_realloc;
    if (sqlite3_config(SQLITE_CONFIG_MALLOC, &faulty) != SQLITE_OK ||
        sqlite3_initialize() != SQLITE_OK)
        return -1;
    return setup(state);
}

static int fault_teardown(void **state)
{
    fault_countdown = -1;
    teardown(state);
    if (sqlite3_shutdown() != SQLITE_OK ||
        sqlite3_config(SQLITE_CONFIG_MALLOC, &real_mem) != SQLITE_OK ||
        sqlite3_initialize() != SQLITE_OK)
        return -1;
    return 0;
}

/*
 * Apply the command built by NEXT(f, i) with the i-th allocation failing,
 * for every i until one runs without a fault. Each time the command is
 * either applied entirely or not at all, the index advances by exactly one,
 * and the FSM keeps working.
 */
static void apply_under_faults(struct fx *f, int (*next)(struct fx *f, int i),
                               const char *(*check)(struct fx *f, int i))
{
    for (int i = 0;; i++) {
        /* A bound, so that a fault that keeps firing cannot hang the suite. */
        assert_true(i < FAULT_MAX_ATTEMPTS);
        json_t *before = state_of(f->fsm);
        uint64_t index = mgr_fsm_index(f->fsm);
        fault_fired = false;
        fault_countdown = i;
        int rc = next(f, i);
        fault_countdown = -1;
        assert_int_equal(mgr_fsm_index(f->fsm), index + 1);
        if (rc == 0) {
            const char *bad = check(f, i);
            if (bad)
                print_error("fault at allocation %d: %s\n", i, bad);
            assert_null(bad);
        } else {
            assert_int_equal(rc, DVS_EINTERNAL);
            json_t *after = state_of(f->fsm);
            assert_json_equal(before, after);
            json_decref(after);
        }
        json_decref(before);
        if (!fault_fired) {
            assert_int_equal(rc, 0);
            break;
        }
    }
}

static int create_under_fault(struct fx *f, int i)
{
    return apply(f, MGR_CMD_ENDPOINT_CREATE, "{'name':'e%d','command':'x','cpu':0.01}", i);
}

static const char *created(struct fx *f, int i)
{
    char name[16];
    snprintf(name, sizeof(name), "e%d", i);
    json_t *e = mgr_fsm_endpoint(f->fsm, name);
    bool ok = e && strcmp(node_of(f, name), "n1") == 0;
    json_decref(e);
    return ok ? NULL : "the endpoint is missing or unplaced";
}

static int migrate_under_fault(struct fx *f, int i)
{
    return apply(f, MGR_CMD_MIGRATION_CREATE,
                 "{'endpoint':'m%d','destination':'n2','reason':'manual'}", i);
}

static const char *migrating(struct fx *f, int i)
{
    char name[16];
    snprintf(name, sizeof(name), "m%d", i);
    json_t *e = mgr_fsm_endpoint(f->fsm, name);
    bool ok = e && strcmp(str(e, "state"), "migrating") == 0;
    json_decref(e);
    return ok ? NULL : "the endpoint is not migrating";
}

static void out_of_memory_anywhere_in_apply_leaves_all_or_nothing(void **state)
{
    struct fx *f = *state;
    add_node(f, "n1", 64, 64 * GiB);
    add_node(f, "n2", 64, 64 * GiB);
    OK(f, MGR_CMD_NODE_STATE, "{'id':'n2','state':'up','eligible':false}");

    apply_under_faults(f, create_under_fault, created);

    /* One endpoint per attempt to migrate. */
    for (int i = 0; i < FAULT_MAX_ATTEMPTS; i++)
        OK(f, MGR_CMD_ENDPOINT_CREATE, "{'name':'m%d','command':'x','cpu':0.01,'node':'n1'}", i);
    OK(f, MGR_CMD_NODE_STATE, "{'id':'n2','state':'up','eligible':true}");
    apply_under_faults(f, migrate_under_fault, migrating);
}

static void out_of_memory_in_restore_keeps_the_old_state(void **state)
{
    struct fx *dst = *state;
    struct mgr_fsm *src_fsm;
    assert_int_equal(mgr_fsm_open(&src_fsm), 0);
    struct fx src_fx = {.fsm = src_fsm, .next_rid = 1, .now = 1};
    struct fx *src = &src_fx;
    populate(src);
    mgr_fsm_result_clear(&src->res);
    OK(dst, MGR_CMD_ENDPOINT_CREATE, "{'name':'old','command':'x'}");
    void *data;
    size_t len;
    assert_int_equal(mgr_fsm_snapshot(src->fsm, &data, &len), 0);
    json_t *want = mgr_fsm_dump(src->fsm);
    json_t *old = mgr_fsm_dump(dst->fsm);

    for (int i = 0;; i++) {
        assert_true(i < 20 * FAULT_MAX_ATTEMPTS);
        fault_fired = false;
        fault_countdown = i;
        int rv = mgr_fsm_restore(dst->fsm, data, len);
        fault_countdown = -1;
        json_t *now = mgr_fsm_dump(dst->fsm);
        if (rv == 0) {
            assert_json_equal(now, want);
        } else {
            if (rv != -ENOMEM && rv != DVS_EINTERNAL)
                print_error("fault at allocation %d: restore returned %s\n", i,
                            dvs_err_name(rv));
            assert_true(rv == -ENOMEM || rv == DVS_EINTERNAL);
            assert_json_equal(now, old);
        }
        json_decref(now);
        if (!fault_fired) {
            assert_int_equal(rv, 0);
            break;
        }
        if (rv == 0) {
            /* A fault that did no harm: start again from the old state. */
            json_decref(old);
            old = mgr_fsm_dump(dst->fsm);
        }
    }
    /* The restored FSM applies commands as the original would. */
    OK(dst, MGR_CMD_ENDPOINT_CREATE, "{'name':'after','command':'x'}");

    json_decref(want);
    json_decref(old);
    sqlite3_free(data);
    mgr_fsm_close(src_fsm);
}

/* ======================================================================
 * Speed (a figure, not a pass/fail criterion: sanitizers slow it down)
 * ====================================================================== */

static double elapsed_s(const struct timespec *a)
{
    struct timespec b;
    clock_gettime(CLOCK_MONOTONIC, &b);
    return (double)(b.tv_sec - a->tv_sec) + (double)(b.tv_nsec - a->tv_nsec) / 1e9;
}

static void apply_rate_is_reported(void **state)
{
    struct fx *f = *state;
    enum { N = 20000 };
    add_node(f, "n1", 64, 64 * GiB);
    OK(f, MGR_CMD_ENDPOINT_CREATE, "{'name':'kv','command':'x','node':'n1'}");

    /* Entries as raft hands them over: encoded, each with its own id. */
    struct raft_buffer *bufs = calloc(N, sizeof(*bufs));
    assert_non_null(bufs);
    for (int i = 0; i < N; i++) {
        struct mgr_cmd cmd = {MGR_CMD_ENDPOINT_UPDATE, 10000000 + (uint64_t)i, i,
                              json_pack("{s:s,s:s,s:i}", "name", "kv", "state",
                                        i % 2 ? "running" : "failed", "generation", i)};
        assert_int_equal(mgr_cmd_encode(&cmd, &bufs[i].base, &bufs[i].len), 0);
        mgr_cmd_clear(&cmd);
    }
    struct raft_fsm *r = mgr_fsm_raft(f->fsm);
    uint64_t index = mgr_fsm_index(f->fsm);
    struct timespec t0;
    clock_gettime(CLOCK_MONOTONIC, &t0);
    for (int i = 0; i < N; i++) {
        void *result;
        assert_int_equal(r->apply(r, &bufs[i], &result), 0);
    }
    double s = elapsed_s(&t0);
    assert_int_equal(f->result_code, 0);
    assert_int_equal(mgr_fsm_index(f->fsm), index + N);
    printf("# fsm apply: %d endpoint updates (decode + apply) in %.3f s, %.0f commands/s\n", N,
           s, N / s);
    for (int i = 0; i < N; i++)
        raft_free(bufs[i].base);
    free(bufs);
}


/* ======================================================================
 * The event log and the counters
 * ====================================================================== */

/* The events with index > AFTER, checked to be well formed and in order. */
static json_t *events_after(struct fx *f, uint64_t after)
{
    bool more = true;
    json_t *evs = mgr_fsm_events(f->fsm, after, 100000, &more);
    assert_non_null(evs);
    assert_false(more);
    int64_t last_id = 0, last_index = (int64_t)after;
    size_t i;
    json_t *ev;
    json_array_foreach(evs, i, ev)
    {
        assert_true(num(ev, "id") > last_id);
        assert_true(num(ev, "index") >= last_index);
        assert_true(num(ev, "index") > (int64_t)after);
        assert_true(str(ev, "message")[0] != '\0');
        assert_int_equal(num(ev, "time"), f->now);
        last_id = num(ev, "id");
        last_index = num(ev, "index");
    }
    return evs;
}

static void expect_event_types(json_t *evs, const char *const *types)
{
    size_t n = 0;
    for (; types[n]; n++) {
        json_t *ev = json_array_get(evs, n);
        if (!ev || strcmp(str(ev, "type"), types[n]) != 0) {
            print_error("event %zu is %s, expected %s\n", n, ev ? str(ev, "type") : "missing",
                        types[n]);
            fail();
        }
    }
    assert_int_equal(json_array_size(evs), n);
}

static void events_record_directory_node_and_migration_changes_in_order(void **state)
{
    struct fx *f = *state;
    migration_world(f);
    json_t *evs = events_after(f, 0);
    static const char *const setup_types[] = {"node.registered", "node.registered",
                                              "endpoint.created", "endpoint.state", NULL};
    expect_event_types(evs, setup_types);
    expect_field_str(json_array_get(evs, 2), "subject", "kv");
    expect_field_str(json_array_get(evs, 2), "node", "n1");
    expect_field_str(json_array_get(evs, 3), "from", "pending");
    expect_field_str(json_array_get(evs, 3), "state", "running");
    json_decref(evs);

    uint64_t mark = mgr_fsm_index(f->fsm);
    assert_int_equal(mgr_fsm_table_index(f->fsm, MGR_T_EVENTS), mark);
    OK(f, MGR_CMD_MIGRATION_CREATE,
       "{'endpoint':'kv','destination':'n2','reason':'overload','explanation':'n1 at 95%%'}");
    OK(f, MGR_CMD_MIGRATION_UPDATE, "{'id':1,'phase':'precopy','bytes':10,'rounds':1}");
    /* Progress within a phase is not an event. */
    OK(f, MGR_CMD_MIGRATION_UPDATE, "{'id':1,'phase':'precopy','bytes':20,'rounds':2}");
    OK(f, MGR_CMD_MIGRATION_UPDATE, "{'id':1,'phase':'frozen'}");
    OK(f, MGR_CMD_MIGRATION_UPDATE,
       "{'id':1,'phase':'committed','downtime_ms':7,'address':'10.0.0.2:9001'}");
    OK(f, MGR_CMD_NODE_STATE, "{'id':'n1','state':'draining','reason':'maintenance'}");
    OK(f, MGR_CMD_ENDPOINT_DELETE, "{'name':'kv'}");
    /* A failed command leaves no event. */
    FAILS(f, DVS_ENOTFOUND, "name", MGR_CMD_ENDPOINT_DELETE, "{'name':'kv'}");

    evs = events_after(f, mark);
    static const char *const types[] = {
        "migration.planned", "migration.precopy", "migration.frozen", "migration.committed",
        "endpoint.moved",    "node.state",        "endpoint.deleted", NULL};
    expect_event_types(evs, types);
    json_t *planned = json_array_get(evs, 0);
    expect_field_str(planned, "subject", "kv");
    expect_field_str(planned, "reason", "overload");
    expect_field_str(planned, "explanation", "n1 at 95%");
    assert_int_equal(num(planned, "migration"), 1);
    assert_int_equal(num(planned, "index"), (int64_t)mark + 1);
    json_t *committed = json_array_get(evs, 3);
    expect_field_str(committed, "from", "frozen");
    assert_int_equal(num(committed, "downtime_ms"), 7);
    /* The commit and the move it makes share one index. */
    assert_int_equal(num(committed, "index"), num(json_array_get(evs, 4), "index"));
    expect_field_str(json_array_get(evs, 4), "node", "n2");
    assert_int_equal(num(json_array_get(evs, 4), "generation"), 1);
    expect_field_str(json_array_get(evs, 5), "reason", "maintenance");
    expect_field_str(json_array_get(evs, 5), "from", "up");
    json_decref(evs);
    assert_int_equal(mgr_fsm_table_index(f->fsm, MGR_T_EVENTS), mgr_fsm_index(f->fsm) - 1);
}

static void events_are_pruned_to_the_retention_set_through_the_log(void **state)
{
    struct fx *f = *state;
    assert_int_equal(mgr_fsm_events_retention(f->fsm), MGR_FSM_EVENTS_RETENTION_DEFAULT);
    bool pruned = true;
    assert_int_equal(mgr_fsm_events_oldest(f->fsm, &pruned), 0);
    assert_false(pruned);
    FAILS(f, DVS_EBADREQUEST, "events_retention", MGR_CMD_SETTINGS, "{'events_retention':0}");
    FAILS(f, DVS_EBADREQUEST, "events_retention", MGR_CMD_SETTINGS,
          "{'events_retention':%d}", MGR_FSM_EVENTS_RETENTION_MAX + 1);
    FAILS(f, DVS_EBADREQUEST, NULL, MGR_CMD_SETTINGS, "{'colour':'red'}");

    for (int i = 0; i < 6; i++)
        add_node(f, (const char *[]){"a", "b", "c", "d", "e", "f"}[i], 1, GiB);
    assert_int_equal(count_rows(f->fsm, "events"), 6);
    OK(f, MGR_CMD_SETTINGS, "{'events_retention':4}");
    assert_int_equal(num(f->res.object, "events_retention"), 4);
    assert_int_equal(mgr_fsm_events_retention(f->fsm), 4);
    json_t *evs = events_after(f, 0);
    assert_int_equal(json_array_size(evs), 4);
    expect_field_str(json_array_get(evs, 0), "subject", "c");
    pruned = false;
    assert_int_equal(mgr_fsm_events_oldest(f->fsm, &pruned),
                     num(json_array_get(evs, 0), "index"));
    assert_true(pruned);
    json_decref(evs);

    add_node(f, "g", 1, GiB);
    evs = events_after(f, 0);
    assert_int_equal(json_array_size(evs), 4);
    expect_field_str(json_array_get(evs, 0), "subject", "d");
    expect_field_str(json_array_get(evs, 3), "subject", "g");
    json_decref(evs);
}

static void events_pages_never_split_the_events_of_one_index(void **state)
{
    struct fx *f = *state;
    migration_world(f); /* 4 events, indexes 1..4 */
    OK(f, MGR_CMD_MIGRATION_CREATE, "{'endpoint':'kv','destination':'n2','reason':'manual'}");
    OK(f, MGR_CMD_MIGRATION_UPDATE, "{'id':1,'phase':'frozen'}");
    OK(f, MGR_CMD_MIGRATION_UPDATE, "{'id':1,'phase':'committed'}"); /* 2 events */
    add_node(f, "n3", 1, GiB);

    bool more = false;
    json_t *page = mgr_fsm_events(f->fsm, 0, 7, &more);
    /* The 7th event is the commit; the move at the same index comes along. */
    assert_int_equal(json_array_size(page), 8);
    assert_true(more);
    int64_t last = num(json_array_get(page, 7), "index");
    json_decref(page);
    page = mgr_fsm_events(f->fsm, (uint64_t)last, 7, &more);
    assert_int_equal(json_array_size(page), 1);
    expect_field_str(json_array_get(page, 0), "subject", "n3");
    assert_false(more);
    json_decref(page);
    page = mgr_fsm_events(f->fsm, mgr_fsm_index(f->fsm), 7, &more);
    assert_int_equal(json_array_size(page), 0);
    assert_false(more);
    json_decref(page);
}

static int64_t stat(json_t *stats, const char *key)
{
    json_t *v = json_object_get(stats, key);
    return v ? json_integer_value(v) : 0;
}

static void migration_outcomes_and_histograms_are_counted_once_when_final(void **state)
{
    struct fx *f = *state;
    migration_world(f);
    int64_t t0 = f->now;
    OK(f, MGR_CMD_MIGRATION_CREATE, "{'endpoint':'kv','destination':'n2','reason':'manual'}");
    OK(f, MGR_CMD_MIGRATION_UPDATE, "{'id':1,'phase':'frozen'}");
    f->now = t0 + 300;
    OK(f, MGR_CMD_MIGRATION_UPDATE, "{'id':1,'phase':'committed','downtime_ms':20}");
    /* A late duplicate report is refused and counts nothing. */
    FAILS(f, DVS_ECONFLICT, "phase", MGR_CMD_MIGRATION_UPDATE,
          "{'id':1,'phase':'committed','downtime_ms':20}");
    OK(f, MGR_CMD_MIGRATION_CREATE, "{'endpoint':'kv','destination':'n1','reason':'energy'}");
    f->now = t0 + 5000;
    OK(f, MGR_CMD_MIGRATION_UPDATE, "{'id':2,'phase':'aborted','error':'source died'}");

    json_t *st = mgr_fsm_stats(f->fsm);
    assert_non_null(st);
    assert_int_equal(stat(st, "migrations_total|manual/committed"), 1);
    assert_int_equal(stat(st, "migrations_total|energy/aborted"), 1);
    assert_int_equal(stat(st, "migrations_total|manual/aborted"), 0);
    /* Downtime 20 ms: not in the 10 ms bucket, in the 25 ms one and above. */
    assert_int_equal(stat(st, "downtime_bucket|10"), 0);
    assert_int_equal(stat(st, "downtime_bucket|25"), 1);
    assert_int_equal(stat(st, "downtime_bucket|10000"), 1);
    assert_int_equal(stat(st, "downtime_count|"), 1);
    assert_int_equal(stat(st, "downtime_sum_ms|"), 20);
    assert_int_equal(stat(st, "duration_bucket|committed/250"), 0);
    assert_int_equal(stat(st, "duration_bucket|committed/500"), 1);
    assert_int_equal(stat(st, "duration_count|committed"), 1);
    assert_int_equal(stat(st, "duration_sum_ms|committed"), 300);
    assert_int_equal(stat(st, "duration_bucket|aborted/2500"), 0);
    assert_int_equal(stat(st, "duration_bucket|aborted/5000"), 1); /* 4700 ms after its start */
    json_decref(st);

    /* A deleted endpoint's migration is counted as aborted too. */
    OK(f, MGR_CMD_MIGRATION_CREATE, "{'endpoint':'kv','destination':'n1','reason':'manual'}");
    OK(f, MGR_CMD_ENDPOINT_DELETE, "{'name':'kv'}");
    st = mgr_fsm_stats(f->fsm);
    assert_int_equal(stat(st, "migrations_total|manual/aborted"), 1);
    assert_int_equal(stat(st, "duration_count|aborted"), 2);
    json_decref(st);
}

static void restore_upgrades_a_version_1_snapshot(void **state)
{
    struct fx *f = *state;
    populate(f);
    size_t len;
    void *v1 = doctor_snapshot(f->fsm,
                               "DROP TABLE events; DROP TABLE stats; DELETE FROM meta WHERE key "
                               "IN ('index_events', 'next_event_id', 'events_retention'); "
                               "ALTER TABLE endpoints DROP COLUMN auto_migrate; "
                               "ALTER TABLE migrations DROP COLUMN transfer_secret; "
                               "PRAGMA user_version = 1",
                               &len);
    struct fx *g = NULL;
    assert_int_equal(setup((void **)&g), 0);
    assert_int_equal(mgr_fsm_restore(g->fsm, v1, len), 0);
    sqlite3_free(v1);
    assert_int_equal(mgr_fsm_index(g->fsm), mgr_fsm_index(f->fsm));
    assert_int_equal(count_rows(g->fsm, "events"), 0);
    assert_int_equal(mgr_fsm_events_retention(g->fsm), MGR_FSM_EVENTS_RETENTION_DEFAULT);
    json_t *endpoints = mgr_fsm_endpoints(g->fsm);
    assert_int_equal(json_array_size(endpoints), 2);
    json_decref(endpoints);
    /* It carries on, with events (new request ids: the old ones are remembered). */
    g->now = f->now;
    g->next_rid = f->next_rid;
    OK(g, MGR_CMD_ENDPOINT_CREATE, "{'name':'after','command':'x'}");
    json_t *evs = mgr_fsm_events(g->fsm, 0, 10, NULL);
    assert_int_equal(json_array_size(evs), 1);
    expect_field_str(json_array_get(evs, 0), "type", "endpoint.created");
    assert_int_equal(num(json_array_get(evs, 0), "id"), 1);
    json_decref(evs);

    /* A version 1 database that lacks more than the new parts is refused. */
    v1 = doctor_snapshot(f->fsm,
                         "DROP TABLE events; DROP TABLE stats; DROP TABLE requests; "
                         "PRAGMA user_version = 1",
                         &len);
    assert_int_equal(mgr_fsm_restore(g->fsm, v1, len), DVS_EPROTO);
    sqlite3_free(v1);
    teardown((void **)&g);
}

#define T(name) cmocka_unit_test_setup_teardown(name, setup, teardown)

int main(void)
{
    const struct CMUnitTest tests[] = {
        T(valid_names_follow_the_api_rules),
        T(member_set_adds_then_updates_a_member),
        T(member_set_with_the_same_addresses_changes_nothing),
        T(member_set_rejects_bad_addresses),
        T(member_set_rejects_an_address_used_by_another_member),
        T(member_del_removes_a_member_and_refuses_unknown_ones),
        T(member_http_address_is_found_by_raft_address),
        T(node_register_creates_an_up_eligible_node),
        T(node_register_again_updates_address_and_capacity),
        T(node_register_brings_a_down_node_back_up),
        T(node_register_keeps_draining_drained_and_standby),
        T(node_register_validates_every_field),
        T(node_state_changes_state_since_and_reason),
        T(node_state_drained_and_standby_make_a_node_ineligible),
        T(node_state_explicit_eligibility_wins),
        T(node_state_refuses_unknown_nodes_and_states),
        T(node_state_from_applies_the_change_only_in_that_state),
        T(node_drain_deadline_lasts_as_long_as_the_drain),
        T(load_summary_records_load_and_skips_unknown_nodes),
        T(load_summary_rejects_a_bad_entry_naming_its_position),
        T(create_endpoint_applies_the_documented_defaults),
        T(create_endpoint_rejects_duplicate_name),
        T(create_endpoint_validates_every_field),
        T(create_endpoint_rounds_arena_up_to_the_alignment),
        T(create_endpoint_binpacks_onto_the_best_fitting_node),
        T(create_endpoint_fills_a_node_to_exactly_its_capacity),
        T(create_endpoint_binpack_breaks_ties_by_node_id),
        T(create_endpoint_binpack_skips_nodes_that_are_not_up_and_eligible),
        T(create_endpoint_stays_pending_and_unplaced_when_no_node_fits),
        T(create_endpoint_on_a_named_node_checks_it_can_take_it),
        T(create_endpoint_counts_room_reserved_by_incoming_migrations),
        T(arena_ranges_never_overlap_through_random_creates_and_deletes),
        T(arena_space_exhausted_is_nospace_and_a_freed_gap_is_reused),
        T(endpoint_update_records_the_agent_report),
        T(endpoint_update_rejects_a_stale_generation),
        T(endpoint_update_rejects_unknown_objects_and_bad_values),
        T(endpoint_update_cannot_override_a_running_migration),
        T(endpoint_delete_removes_it_and_refuses_unknown_names),
        T(endpoint_delete_aborts_its_active_migration),
        T(migration_create_plans_it_and_marks_the_endpoint_migrating),
        T(migration_transfer_secret_is_only_in_the_orders),
        T(migration_create_refuses_what_cannot_migrate),
        T(migration_commit_moves_the_endpoint_and_bumps_its_generation),
        T(migration_abort_returns_the_endpoint_to_running_on_its_source),
        T(migration_phases_only_move_forward),
        T(migration_update_validates_its_fields),
        T(migrations_are_listed_newest_first),
        T(failed_commands_change_nothing_but_the_index),
        T(every_command_advances_the_index_and_changes_stamp_it),
        T(callbacks_report_results_and_touched_tables),
        T(duplicate_request_id_is_applied_once),
        T(duplicate_request_id_reports_the_first_failure),
        T(request_memory_keeps_only_the_most_recent_ids),
        T(commands_of_unknown_type_or_without_an_object_body_are_rejected),
        cmocka_unit_test(same_log_gives_the_same_state_on_every_member),
        T(snapshot_restored_into_a_fresh_fsm_equals_the_original),
        T(restore_of_garbage_fails_and_keeps_the_old_state),
        T(restore_refuses_other_schemas_and_keeps_the_old_state),
        T(restore_upgrades_a_version_2_snapshot),
        T(auto_migrate_is_set_at_creation_and_changed_by_update),
        T(restore_wakes_every_watcher),
        T(raft_fsm_applies_encoded_entries),
        T(raft_fsm_counts_undecodable_entries_without_crashing),
        T(raft_fsm_snapshot_and_restore_round_trip),
        T(queries_return_the_shapes_of_the_api),
        T(queries_of_unknown_objects_return_null),
        T(orders_list_the_node_endpoints_and_its_active_migrations),
        T(counts_cover_every_node_state),
        cmocka_unit_test_setup_teardown(out_of_memory_anywhere_in_apply_leaves_all_or_nothing,
                                        fault_setup, fault_teardown),
        cmocka_unit_test_setup_teardown(out_of_memory_in_restore_keeps_the_old_state,
                                        fault_setup, fault_teardown),
        T(apply_rate_is_reported),
        T(events_record_directory_node_and_migration_changes_in_order),
        T(events_are_pruned_to_the_retention_set_through_the_log),
        T(events_pages_never_split_the_events_of_one_index),
        T(migration_outcomes_and_histograms_are_counted_once_when_final),
        T(restore_upgrades_a_version_1_snapshot),
    };
    return cmocka_run_group_tests_name("manager/fsm", tests, NULL, NULL);
}
