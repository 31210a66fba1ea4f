/*
 * Parsing what crosses the agent/service boundary: control messages and
 * host:port addresses (docs/control-protocol.md §2).
 */
#include <errno.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>

#include <cmocka.h>

#include "control.h"

static int parse(const char *s, struct dvs__ctl_msg *m)
{
    return dvs__ctl_parse(s, strlen(s), m);
}

static void command_with_arguments_parses(void **state)
{
    struct dvs__ctl_msg m;
    uint64_t v;

    assert_int_equal(parse("moved id=7 generation=3 address=10.0.0.2:7000 linger_ms=0\n", &m), 0);
    assert_string_equal(m.verb, "moved");
    assert_int_equal(m.n_args, 4);
    assert_string_equal(dvs__ctl_get(&m, "address"), "10.0.0.2:7000");
    assert_null(dvs__ctl_get(&m, "nope"));
    assert_int_equal(dvs__ctl_get_u64(&m, "id", 1, UINT64_MAX, &v), 0);
    assert_int_equal(v, 7);
    assert_int_equal(dvs__ctl_get_u64(&m, "linger_ms", 0, 10, &v), 0);
    assert_int_equal(v, 0);
    assert_int_equal(dvs__ctl_get_u64(&m, "generation", 4, 10, &v), -EINVAL);
    assert_int_equal(dvs__ctl_get_u64(&m, "address", 0, 10, &v), -EINVAL);
    assert_int_equal(dvs__ctl_get_u64(&m, "absent", 0, 10, &v), -ENOENT);

    assert_int_equal(parse("status", &m), 0);
    assert_string_equal(m.verb, "status");
    assert_int_equal(m.n_args, 0);
}

static void verbs_may_have_inner_hyphens_keys_may_not(void **state)
{
    struct dvs__ctl_msg m;
    assert_int_equal(parse("track-start id=1 max_faults=8", &m), 0);
    assert_string_equal(m.verb, "track-start");
    assert_string_equal(dvs__ctl_get(&m, "max_faults"), "8");
    assert_int_equal(parse("-track id=1", &m), -EINVAL);
    assert_int_equal(parse("track- id=1", &m), -EINVAL);
    assert_int_equal(parse("track id=1 max-faults=8", &m), -EINVAL);
}

static void message_runs_to_the_end(void **state)
{
    struct dvs__ctl_msg m;
    assert_int_equal(parse("error id=1 code=DVS_ECONFLICT message=moved needs state=frozen", &m), 0);
    assert_string_equal(dvs__ctl_get(&m, "message"), "moved needs state=frozen");
    assert_string_equal(dvs__ctl_get(&m, "code"), "DVS_ECONFLICT");
}

static void malformed_messages_are_refused(void **state)
{
    struct dvs__ctl_msg m;
    char big[DVS__CTL_MAX + 2];
    memset(big, 'a', sizeof big);

    assert_int_equal(parse("", &m), -EINVAL);
    assert_int_equal(parse("Freeze id=1", &m), -EINVAL);
    assert_int_equal(parse("freeze id", &m), -EINVAL);
    assert_int_equal(parse("freeze =1", &m), -EINVAL);
    assert_int_equal(parse("freeze id=1 id=2", &m), -EINVAL);
    assert_int_equal(parse("freeze id=1\tx=2", &m), -EINVAL);
    assert_int_equal(dvs__ctl_parse("freeze\0id=1", 11, &m), -EINVAL);
    /* One argument more than DVS__CTL_MAX_ARGS. */
    char many[256] = "freeze";
    for (int i = 0; i <= DVS__CTL_MAX_ARGS; i++)
        snprintf(many + strlen(many), sizeof many - strlen(many), " %c%c=1", 'a' + i / 26, 'a' + i % 26);
    assert_int_equal(parse(many, &m), -EINVAL);
    many[strrchr(many, ' ') - many] = '\0';
    assert_int_equal(parse(many, &m), 0);
    assert_int_equal(dvs__ctl_parse(big, sizeof big, &m), -E2BIG);
    /* Exactly the maximum is fine. */
    memcpy(big, "status message=", 15);
    assert_int_equal(dvs__ctl_parse(big, DVS__CTL_MAX, &m), 0);
    assert_int_equal(strlen(dvs__ctl_get(&m, "message")), DVS__CTL_MAX - 15);
}

static void host_port_forms(void **state)
{
    char host[64];
    uint16_t port;

    assert_int_equal(dvs__parse_hostport("127.0.0.1:7000", host, sizeof host, &port, false), 0);
    assert_string_equal(host, "127.0.0.1");
    assert_int_equal(port, 7000);
    assert_int_equal(dvs__parse_hostport("[::1]:80", host, sizeof host, &port, false), 0);
    assert_string_equal(host, "::1");
    assert_int_equal(dvs__parse_hostport("node-1.example:65535", host, sizeof host, &port, false), 0);
    assert_int_equal(dvs__parse_hostport("h:0", host, sizeof host, &port, true), 0);

    assert_int_equal(dvs__parse_hostport("h:0", host, sizeof host, &port, false), -EINVAL);
    assert_int_equal(dvs__parse_hostport("h:65536", host, sizeof host, &port, false), -EINVAL);
    assert_int_equal(dvs__parse_hostport("h:123456", host, sizeof host, &port, false), -EINVAL);
    assert_int_equal(dvs__parse_hostport("h:-1", host, sizeof host, &port, false), -EINVAL);
    assert_int_equal(dvs__parse_hostport("h:", host, sizeof host, &port, false), -EINVAL);
    assert_int_equal(dvs__parse_hostport(":80", host, sizeof host, &port, false), -EINVAL);
    assert_int_equal(dvs__parse_hostport("h", host, sizeof host, &port, false), -EINVAL);
    assert_int_equal(dvs__parse_hostport("::1:80", host, sizeof host, &port, false), -EINVAL);
    assert_int_equal(dvs__parse_hostport("[::1]80", host, sizeof host, &port, false), -EINVAL);
    assert_int_equal(dvs__parse_hostport("a b:80", host, sizeof host, &port, false), -EINVAL);
    assert_int_equal(dvs__parse_hostport("h:80x", host, sizeof host, &port, false), -EINVAL);
    char longhost[100];
    memset(longhost, 'h', sizeof longhost);
    strcpy(longhost + 90, ":80");
    assert_int_equal(dvs__parse_hostport(longhost, host, sizeof host, &port, false), -EINVAL);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(command_with_arguments_parses),
        cmocka_unit_test(verbs_may_have_inner_hyphens_keys_may_not),
        cmocka_unit_test(message_runs_to_the_end),
        cmocka_unit_test(malformed_messages_are_refused),
        cmocka_unit_test(host_port_forms),
    };
    return cmocka_run_group_tests_name("libdvs/control", tests, NULL, NULL);
}
