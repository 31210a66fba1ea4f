/*
 * A small real service for the libdvs tests: everything it knows lives in
 * its arena, and it is started exactly as dvs-node starts services (the
 * DVS_* environment, an inherited memfd and control socket).
 *
 * Requests (text):  inc -> the counter after incrementing it
 *                   get -> the counter
 *                   execs -> how many times the handler ran "inc"
 *                   sleep MS -> "slept", after sleeping
 *                   fail -> error -ENOENT
 *                   big N -> N bytes of 'b'
 *                   anything else -> echoed back
 * Exit status: 0 stopped, 3 moved, 2 dvs_server_open failed, 1 other error.
 */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "dvs.h"

struct root {
    uint64_t counter;
    uint64_t execs;
};

static void log_stderr(void *data, int level, const char *msg)
{
    (void)data;
    if (level >= DVS_LOG_WARN || getenv("DVS_TEST_VERBOSE") != NULL)
        fprintf(stderr, "test_service[%d]: %s\n", level, msg);
}

static int handle(void *data, const void *req, size_t len, void *reply, size_t *reply_len)
{
    struct root *root = data;
    char cmd[64];
    size_t n = len < sizeof cmd - 1 ? len : sizeof cmd - 1;
    memcpy(cmd, req, n);
    cmd[n] = '\0';

    if (strcmp(cmd, "inc") == 0) {
        root->counter++;
        root->execs++;
        *reply_len = (size_t)snprintf(reply, *reply_len, "%llu", (unsigned long long)root->counter);
    } else if (strcmp(cmd, "get") == 0) {
        *reply_len = (size_t)snprintf(reply, *reply_len, "%llu", (unsigned long long)root->counter);
    } else if (strcmp(cmd, "execs") == 0) {
        *reply_len = (size_t)snprintf(reply, *reply_len, "%llu", (unsigned long long)root->execs);
    } else if (strncmp(cmd, "sleep ", 6) == 0) {
        long ms = atol(cmd + 6);
        struct timespec ts = {.tv_sec = ms / 1000, .tv_nsec = (ms % 1000) * 1000000L};
        nanosleep(&ts, NULL);
        memcpy(reply, "slept", 5);
        *reply_len = 5;
    } else if (strcmp(cmd, "fail") == 0) {
        return -ENOENT;
    } else if (strncmp(cmd, "big ", 4) == 0) {
        size_t want = (size_t)atol(cmd + 4);
        if (want > *reply_len)
            return -E2BIG;
        memset(reply, 'b', want);
        *reply_len = want;
    } else {
        if (len > *reply_len)
            return -E2BIG;
        memcpy(reply, req, len);
        *reply_len = len;
    }
    return 0;
}

int main(void)
{
    struct dvs_server_options opts;
    dvs_server *srv;

    dvs_server_options_init(&opts);
    opts.log = log_stderr;
    int rv = dvs_server_open(&opts, &srv);
    if (rv != 0) {
        fprintf(stderr, "test_service: open: %s\n", dvs_strerror(rv));
        return 2;
    }
    dvs_arena *arena = dvs_server_arena(srv);
    struct root *root = dvs_arena_root(arena);
    if (root == NULL) {
        root = dvs_arena_calloc(arena, 1, sizeof *root);
        if (root == NULL || dvs_arena_set_root(arena, root) != 0)
            return 1;
    }
    rv = dvs_server_run(srv, handle, root);
    dvs_server_close(srv);
    if (rv == DVS_EMOVED)
        return 3;
    if (rv != 0) {
        fprintf(stderr, "test_service: run: %s\n", dvs_strerror(rv));
        return 1;
    }
    return 0;
}
