/*
 * api/auth: bearer header parsing, constant-time token comparison, the
 * access rule of each role, and token files (docs/security.md).
 */
#include <errno.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cmocka.h>

#include "api/auth.h"

#define MGMT "mgmt-0123456789abcdef"
#define READ "read-0123456789abcdef"
#define AGENT "agent-0123456789abcdef"

static void bearer_scheme_is_case_insensitive_and_spaces_are_tolerated(void **state)
{
    char t[API_TOKEN_MAX + 1];
    assert_int_equal(api_bearer_parse("Bearer abc", t, sizeof(t)), 0);
    assert_string_equal(t, "abc");
    assert_int_equal(api_bearer_parse("bearer abc", t, sizeof(t)), 0);
    assert_int_equal(api_bearer_parse("BEARER   abc  ", t, sizeof(t)), 0);
    assert_string_equal(t, "abc");
    assert_int_equal(api_bearer_parse("Bearer\tA-b.c_d~e+f/g==", t, sizeof(t)), 0);
    assert_string_equal(t, "A-b.c_d~e+f/g==");
}

static void malformed_bearer_headers_are_refused(void **state)
{
    char t[API_TOKEN_MAX + 1];
    const char *bad[] = {
        "",                /* empty */
        "Bearer",          /* no token */
        "Bearer ",         /* empty token */
        "Bearer    ",      /* only spaces */
        "Bearerabc",       /* no separator */
        "Basic YWxhZGRpbjpvcGVu", /* another scheme */
        "Bearer abc def",  /* two tokens */
        "Bearer ab\"c",    /* outside the b64token set */
        "Bearer a=b",      /* '=' only at the end */
        "Bearer =abc",
        "Token abc",
    };
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        strcpy(t, "untouched");
        assert_int_equal(api_bearer_parse(bad[i], t, sizeof(t)), -EINVAL);
        assert_string_equal(t, "untouched");
    }
    assert_int_equal(api_bearer_parse(NULL, t, sizeof(t)), -EINVAL);
    /* Over-long tokens. */
    char big[API_TOKEN_MAX + 16];
    strcpy(big, "Bearer ");
    memset(big + 7, 'x', API_TOKEN_MAX + 1);
    big[7 + API_TOKEN_MAX + 1] = '\0';
    assert_int_equal(api_bearer_parse(big, t, sizeof(t)), -EINVAL);
    big[7 + API_TOKEN_MAX] = '\0';
    assert_int_equal(api_bearer_parse(big, t, sizeof(t)), 0);
    assert_int_equal(strlen(t), API_TOKEN_MAX);
}

static void token_comparison_is_exact(void **state)
{
    assert_true(api_token_equal(MGMT, MGMT));
    assert_false(api_token_equal(MGMT, READ));
    assert_false(api_token_equal(MGMT, MGMT "x"));  /* longer */
    assert_false(api_token_equal(MGMT "x", MGMT));
    assert_false(api_token_equal("mgmt", MGMT));    /* prefix */
    assert_false(api_token_equal("", ""));          /* an empty token never matches */
    assert_false(api_token_equal("A", "a"));
    char a[API_TOKEN_MAX + 1], b[API_TOKEN_MAX + 1];
    memset(a, 'q', API_TOKEN_MAX);
    a[API_TOKEN_MAX] = '\0';
    memcpy(b, a, sizeof(b));
    assert_true(api_token_equal(a, b));
    b[API_TOKEN_MAX - 1] = 'r'; /* differs in the very last byte */
    assert_false(api_token_equal(a, b));
}

static struct api_tokens all_tokens(bool with_read)
{
    struct api_tokens t = {{0}};
    strcpy(t.management, MGMT);
    strcpy(t.agent, AGENT);
    if (with_read)
        strcpy(t.read, READ);
    return t;
}

static void no_tokens_means_open(void **state)
{
    struct api_tokens t = {{0}};
    assert_false(api_tokens_enabled(&t));
    assert_false(api_tokens_enabled(NULL));
    assert_int_equal(api_authorize(&t, "POST", API_ACCESS_DEFAULT, NULL, NULL), API_AUTH_OK);
    assert_int_equal(api_authorize(NULL, "DELETE", API_ACCESS_MANAGE, "junk", NULL), API_AUTH_OK);
}

static void each_role_gets_what_it_may_and_no_more(void **state)
{
    struct api_tokens t = all_tokens(true);
    const char *role;
    const char *m = "Bearer " MGMT, *r = "Bearer " READ, *a = "Bearer " AGENT;

    /* Mutations: management only. */
    assert_int_equal(api_authorize(&t, "POST", API_ACCESS_DEFAULT, m, &role), API_AUTH_OK);
    assert_string_equal(role, "management");
    assert_int_equal(api_authorize(&t, "POST", API_ACCESS_DEFAULT, r, &role), API_AUTH_DENIED);
    assert_string_equal(role, "read");
    assert_int_equal(api_authorize(&t, "DELETE", API_ACCESS_DEFAULT, a, &role),
                     API_AUTH_DENIED);
    assert_string_equal(role, "agent");
    assert_int_equal(api_authorize(&t, "POST", API_ACCESS_DEFAULT, NULL, NULL),
                     API_AUTH_MISSING);
    assert_int_equal(api_authorize(&t, "POST", API_ACCESS_DEFAULT, "Bearer nope-nope-nope",
                                   &role),
                     API_AUTH_WRONG);
    assert_string_equal(role, "none");
    assert_int_equal(api_authorize(&t, "POST", API_ACCESS_DEFAULT, "Bearer", NULL),
                     API_AUTH_MALFORMED);

    /* Agent routes: agent or management. */
    assert_int_equal(api_authorize(&t, "POST", API_ACCESS_AGENT, a, NULL), API_AUTH_OK);
    assert_int_equal(api_authorize(&t, "GET", API_ACCESS_AGENT, m, NULL), API_AUTH_OK);
    assert_int_equal(api_authorize(&t, "GET", API_ACCESS_AGENT, r, NULL), API_AUTH_DENIED);
    assert_int_equal(api_authorize(&t, "GET", API_ACCESS_AGENT, NULL, NULL), API_AUTH_MISSING);

    /* Reads with a read token configured: any of the three, none without. */
    assert_int_equal(api_authorize(&t, "GET", API_ACCESS_DEFAULT, r, NULL), API_AUTH_OK);
    assert_int_equal(api_authorize(&t, "GET", API_ACCESS_DEFAULT, m, NULL), API_AUTH_OK);
    assert_int_equal(api_authorize(&t, "HEAD", API_ACCESS_DEFAULT, a, NULL), API_AUTH_OK);
    assert_int_equal(api_authorize(&t, "GET", API_ACCESS_DEFAULT, NULL, NULL),
                     API_AUTH_MISSING);
    assert_int_equal(api_authorize(&t, "GET", API_ACCESS_PUBLIC, NULL, NULL), API_AUTH_OK);
}

static void reads_are_open_without_a_read_token(void **state)
{
    struct api_tokens t = all_tokens(false);
    assert_int_equal(api_authorize(&t, "GET", API_ACCESS_DEFAULT, NULL, NULL), API_AUTH_OK);
    assert_int_equal(api_authorize(&t, "GET", API_ACCESS_READ, "garbage", NULL), API_AUTH_OK);
    /* ... but the agent routes are not, GET or not. */
    assert_int_equal(api_authorize(&t, "GET", API_ACCESS_AGENT, NULL, NULL), API_AUTH_MISSING);
    assert_int_equal(api_authorize(&t, "PATCH", API_ACCESS_MANAGE, NULL, NULL),
                     API_AUTH_MISSING);
}

static char *write_tmp(const char *content, mode_t mode)
{
    char *path = strdup("/tmp/dvs-test-token-XXXXXX");
    int fd = mkstemp(path);
    assert_true(fd >= 0);
    assert_int_equal(write(fd, content, strlen(content)), (ssize_t)strlen(content));
    fchmod(fd, mode);
    close(fd);
    return path;
}

static void token_files_are_read_and_checked(void **state)
{
    char t[API_TOKEN_MAX + 1], err[512];
    bool loose = true;
    char *p = write_tmp(MGMT "\n", 0600);
    assert_int_equal(api_token_load(p, t, &loose, err, sizeof(err)), 0);
    assert_string_equal(t, MGMT);
    assert_false(loose);
    unlink(p);
    free(p);

    p = write_tmp(MGMT "\r\n", 0644);
    assert_int_equal(api_token_load(p, t, &loose, err, sizeof(err)), 0);
    assert_string_equal(t, MGMT);
    assert_true(loose); /* world-readable: the daemon warns */
    unlink(p);
    free(p);

    const char *bad[] = {"", "\n", "short\n", MGMT "\n" MGMT "\n", "has space inside 123456"};
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        p = write_tmp(bad[i], 0600);
        strcpy(t, "untouched");
        err[0] = '\0';
        assert_int_equal(api_token_load(p, t, NULL, err, sizeof(err)), -EINVAL);
        assert_string_equal(t, "untouched");
        assert_non_null(strstr(err, p)); /* the message names the file */
        unlink(p);
        free(p);
    }
    assert_int_equal(api_token_load("/nonexistent/token", t, NULL, err, sizeof(err)), -ENOENT);
    assert_non_null(strstr(err, "/nonexistent/token"));
    assert_int_equal(api_token_load("/tmp", t, NULL, err, sizeof(err)), -EINVAL);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(bearer_scheme_is_case_insensitive_and_spaces_are_tolerated),
        cmocka_unit_test(malformed_bearer_headers_are_refused),
        cmocka_unit_test(token_comparison_is_exact),
        cmocka_unit_test(no_tokens_means_open),
        cmocka_unit_test(each_role_gets_what_it_may_and_no_more),
        cmocka_unit_test(reads_are_open_without_a_read_token),
        cmocka_unit_test(token_files_are_read_and_checked),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
