/*
 * dvs-kv-client's parts: the command line (client.c), the load generator
 * (load.c) and the post-migration checker (verify.c).
 */
#ifndef DVS_EXAMPLES_KV_CLIENT_H
#define DVS_EXAMPLES_KV_CLIENT_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "dvs.h"
#include "examples/kv/proto.h"

#define KV_CLIENT_PROG "dvs-kv-client"

/* Exit codes (the README lists them). */
enum {
    KV_EXIT_OK = 0,
    KV_EXIT_ERROR = 1,    /* the call failed, or the answer was a refusal */
    KV_EXIT_USAGE = 2,    /* bad command line */
    KV_EXIT_NOTFOUND = 3, /* get, delete or cas of a missing key */
};

/* Every flag of every command; client.c says which command takes which. */
struct kv_cli {
    char *manager;
    char *endpoint;     /* NULL: "kv" (verify: the history's, then "kv") */
    int64_t timeout_ms; /* per call */
    int log_level;
    bool help;
    /* load */
    int64_t duration_ms;
    double rate;
    int64_t threads;
    int64_t keys;
    double write_ratio;
    char *history;      /* load: written; verify: read */
    int64_t incr_keys;
    char *key_prefix;   /* NULL: a fresh random one */
    bool client_per_thread;
    /* verify */
    bool offline;

    /* The command's name, and the positional arguments after it. */
    const char *command;
    int argc;
    char **argv;
};

/* The endpoint to call: --endpoint, else "kv". */
const char *kv_cli_endpoint(const struct kv_cli *cli);

/*
 * Create a dvs_client from --manager (NULL: $DVS_MANAGER, else the
 * default), with libdvs's messages on stderr. Prints the error and returns
 * it on failure.
 */
int kv_cli_client(const struct kv_cli *cli, dvs_client **ret_client);

/*
 * Encode req, call the endpoint and decode the reply. Returns 0 with
 * *ret_reply and *ret_buf (the reply's storage: dvs_free it), or the
 * dvs_call error, or DVS_EPROTO if the reply is malformed.
 */
int kv_cli_call(dvs_client *client, const char *endpoint, const struct kv_request *req,
                int timeout_ms, struct kv_reply *ret_reply, void **ret_buf);

/* The commands that are more than one call. Return an exit code. */
int kv_cmd_load(const struct kv_cli *cli);
int kv_cmd_verify(const struct kv_cli *cli);

#endif
