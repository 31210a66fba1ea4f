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
#include "examples/kv/lincheck.h"

struct kv_verify {
    dvs_client *client;
    const char *endpoint;
    int timeout_ms;
    int err;          /* the failure that stopped the check */
    char err_key[128];
    /* The final values read, appended to the history as reads for the
     * linearizability check once the first checks are done. */
    char **final_keys, **final_values;
    size_t nfinals, finals_cap;
    bool oom;
};

/* Keep a copy of (key, value) for kv_history_append_read. */
static void kv_verify_keep(struct kv_verify *v, const char *key, const char *value)
{
    if (v->nfinals == v->finals_cap) {
        size_t cap = v->finals_cap ? v->finals_cap * 2 : 64;
        char **k = realloc(v->final_keys, cap * sizeof(*k));
        if (k != NULL)
            v->final_keys = k;
        char **val = realloc(v->final_values, cap * sizeof(*val));
        if (val != NULL)
            v->final_values = val;
        if (k == NULL || val == NULL) {
            v->oom = true;
            return;
        }
        v->finals_cap = cap;
    }
    char *k = strdup(key), *val = value ? strdup(value) : NULL;
    if (k == NULL || (value != NULL && val == NULL)) {
        free(k);
        free(val);
        v->oom = true;
        return;
    }
    v->final_keys[v->nfinals] = k;
    v->final_values[v->nfinals++] = val;
}

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
    if (rv == 0 || rv == -ENOENT)
        kv_verify_keep(v, key, rv == 0 ? *ret_value : NULL);
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

    /* Then the real check: the final values become reads after everything
     * else, and every key must have a linearization (lincheck.h). */
    size_t nops = kv_history_ops(h);
    for (size_t i = 0; i < v.nfinals && !v.oom; i++)
        if (kv_history_append_read(h, v.final_keys[i], v.final_values[i]) != 0)
            v.oom = true;
    struct kv_lincheck_summary lin;
    if (v.oom || kv_lincheck(h, NULL, stdout, &lin) != 0) {
        fprintf(stderr, KV_CLIENT_PROG ": verify: out of memory\n");
        goto out;
    }
    bool lin_bad = lin.violations > 0 || lin.lost > 0 || lin.duplicates > 0;
    printf("linearizability: %zu keys: %zu linearizable, %zu not, %zu undecided; counters: "
           "%zu, %zu checked for lost or duplicated increments, %zu lost, %zu duplicated\n",
           lin.keys, lin.linearizable, lin.violations, lin.undecided, lin.counters,
           lin.counters_final, lin.lost, lin.duplicates);
    printf("%s: %zu operations, %zu keys (%zu registers, %zu counters), %zu reads checked, "
           "%zu final values read%s\n",
           sum.violations || lin_bad ? "FAILED"
           : lin.undecided           ? "UNDECIDED"
                                     : "OK",
           nops, sum.keys, sum.registers, sum.counters, sum.reads, sum.finals,
           cli->offline ? " (offline)" : "");
    if (sum.violations)
        printf("%zu violation%s\n", sum.violations, sum.violations == 1 ? "" : "s");
    /* Undecided is not a pass. */
    status = sum.violations || lin_bad || lin.undecided ? KV_EXIT_ERROR : KV_EXIT_OK;
    if (fflush(stdout) != 0)
        status = KV_EXIT_ERROR;

out:
    for (size_t i = 0; i < v.nfinals; i++) {
        free(v.final_keys[i]);
        free(v.final_values[i]);
    }
    free(v.final_keys);
    free(v.final_values);
    dvs_client_destroy(v.client);
    kv_history_free(h);
    return status;
}
