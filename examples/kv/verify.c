/*
 * dvs-kv-client verify --history FILE: after a load run (typically across a
 * migration), check what a user would check: no acknowledged write lost,
 * no increment lost or applied twice, no stale read. The checks themselves
 * are in history.c; this file reads the service's final values for them.
 */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "examples/kv/client.h"
#include "examples/kv/history.h"

struct kv_verify {
    dvs_client *client;
    const char *endpoint;
    int timeout_ms;
    int err;          /* the failure that stopped the check */
    char err_key[128];
};

/* kv_final_fn: GET key from the service. */
static int kv_verify_final(void *data, const char *key, char **ret_value)
{
    struct kv_verify *v = data;
    struct kv_request req = {.op = KV_OP_GET,
                             .key = (const uint8_t *)key,
                             .key_len = strlen(key)};
    struct kv_reply rep;
    void *buf = NULL;
    int rv = kv_cli_call(v->client, v->endpoint, &req, v->timeout_ms, &rep, &buf);
    if (rv == 0 && rep.status == KV_NOTFOUND) {
        rv = -ENOENT;
    } else if (rv == 0 && rep.status != KV_OK) {
        rv = DVS_EPROTO;
    } else if (rv == 0) {
        /* Values this check compares are tokens; a NUL inside one would cut
         * it short and make it compare equal to a different value. */
        char *s = malloc(rep.value_len + 1);
        if (s == NULL) {
            rv = -ENOMEM;
        } else {
            if (rep.value_len > 0)
                memcpy(s, rep.value, rep.value_len);
            s[rep.value_len] = '\0';
            if (memchr(rep.value, '\0', rep.value_len) != NULL && rep.value_len > 0)
                s[0] = '?';
            *ret_value = s;
        }
    }
    dvs_free(buf);
    if (rv != 0 && rv != -ENOENT) {
        v->err = rv;
        snprintf(v->err_key, sizeof(v->err_key), "%s", key);
    }
    return rv;
}

int kv_cmd_verify(const struct kv_cli *cli)
{
    struct kv_history *h = NULL;
    struct kv_verify v = {.timeout_ms = (int)cli->timeout_ms};
    struct kv_check_summary sum;
    char err[512];
    int status = KV_EXIT_ERROR;

    if (cli->history == NULL) {
        fprintf(stderr, KV_CLIENT_PROG ": verify needs --history FILE\n");
        return KV_EXIT_USAGE;
    }
    FILE *f = fopen(cli->history, "r");
    if (f == NULL) {
        fprintf(stderr, KV_CLIENT_PROG ": cannot open %s: %s\n", cli->history,
                strerror(errno));
        return KV_EXIT_ERROR;
    }
    int rv = kv_history_read(f, cli->history, &h, err, sizeof(err));
    fclose(f);
    if (rv != 0) {
        fprintf(stderr, KV_CLIENT_PROG ": %s\n", err);
        return KV_EXIT_ERROR;
    }

    /* --endpoint wins, then the history's own header. */
    v.endpoint = cli->endpoint ? cli->endpoint
                 : kv_history_endpoint(h) ? kv_history_endpoint(h)
                                          : "kv";
    if (!cli->offline && kv_cli_client(cli, &v.client) != 0)
        goto out;

    rv = kv_history_check(h, cli->offline ? NULL : kv_verify_final, &v, stdout, &sum);
    if (rv != 0) {
        if (v.err != 0)
            fprintf(stderr,
                    KV_CLIENT_PROG ": cannot read key %s from endpoint %s: %s (%s); "
                                   "nothing verified\n",
                    v.err_key, v.endpoint, dvs_strerror(v.err), dvs_err_name(v.err));
        else
            fprintf(stderr, KV_CLIENT_PROG ": verify: %s\n", dvs_strerror(rv));
        goto out;
    }

    printf("%s: %zu operations, %zu keys (%zu registers, %zu counters), %zu reads checked, "
           "%zu final values read%s\n",
           sum.violations ? "FAILED" : "OK", kv_history_ops(h), sum.keys, sum.registers,
           sum.counters, sum.reads, sum.finals, cli->offline ? " (offline)" : "");
    if (sum.violations)
        printf("%zu violation%s\n", sum.violations, sum.violations == 1 ? "" : "s");
    status = sum.violations ? KV_EXIT_ERROR : KV_EXIT_OK;
    if (fflush(stdout) != 0)
        status = KV_EXIT_ERROR;

out:
    dvs_client_destroy(v.client);
    kv_history_free(h);
    return status;
}
