/*
 * Manager benchmarks: figures, never pass/fail (DEVELOPERS: speed is measured).
 *
 *   mgr_bench fsm [--n N]
 *       encode + decode + apply of endpoint updates on an in-process FSM
 *       (no Raft, no HTTP): the ceiling of the apply path.
 *   mgr_bench rest --manager URLS [--clients C] [--seconds S]
 *       endpoint updates through the REST API (PATCH /v1/endpoints/NAME) from
 *       C client threads, each waiting for its answer (= commit + apply on the
 *       leader); the daemon batches what arrives in one loop iteration into
 *       one raft_apply. Prints writes/s and latency p50/p99/max.
 *   mgr_bench failover --manager SURVIVOR_URLS --kill-pid PID
 *       kill -9 PID (the leader) and time the first successful write through
 *       the survivors.
 */
#include <errno.h>
#include <inttypes.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "api/client.h"
#include "common/util.h"
#include "dvs.h"
#include "manager/cmd.h"
#include "manager/fsm.h"

static int cmp_u64(const void *a, const void *b)
{
    uint64_t x = *(const uint64_t *)a, y = *(const uint64_t *)b;
    return x < y ? -1 : x > y;
}

static void print_latency(const char *what, uint64_t *ns, size_t n)
{
    if (n == 0) {
        printf("%s: no samples\n", what);
        return;
    }
    qsort(ns, n, sizeof(*ns), cmp_u64);
    printf("%s: p50 %.3f ms  p99 %.3f ms  max %.3f ms  (n=%zu)\n", what,
           (double)ns[n / 2] / 1e6, (double)ns[(size_t)((double)n * 0.99)] / 1e6,
           (double)ns[n - 1] / 1e6, n);
}

static const char *arg(int argc, char **argv, const char *name, const char *def)
{
    for (int i = 0; i + 1 < argc; i++)
        if (strcmp(argv[i], name) == 0)
            return argv[i + 1];
    return def;
}

/* ---- fsm ---- */

static int bench_fsm(long n)
{
    struct mgr_fsm *fsm;
    if (mgr_fsm_open(&fsm) != 0)
        return 1;
    struct mgr_fsm_result res = {0};
    struct mgr_cmd c = {.type = MGR_CMD_NODE_REGISTER, .request_id = 1, .time_ms = 1};
    c.body = json_pack("{s:s,s:s,s:f,s:I}", "id", "n1", "address", "127.0.0.1:9000", "cpu",
                       64.0, "mem", (json_int_t)1 << 40);
    mgr_fsm_apply(fsm, &c, &res);
    mgr_fsm_result_clear(&res);
    json_decref(c.body);
    c = (struct mgr_cmd){.type = MGR_CMD_ENDPOINT_CREATE, .request_id = 2, .time_ms = 2};
    c.body = json_pack("{s:s,s:s}", "name", "bench", "command", "/bin/true");
    if (mgr_fsm_apply(fsm, &c, &res) != 0) {
        fprintf(stderr, "create failed: %s\n", res.msg);
        return 1;
    }
    mgr_fsm_result_clear(&res);
    json_decref(c.body);

    uint64_t *lat = xmalloc((size_t)n * sizeof(uint64_t));
    uint64_t t0 = now_mono_ns();
    for (long i = 0; i < n; i++) {
        uint64_t s = now_mono_ns();
        char addr[32];
        snprintf(addr, sizeof(addr), "127.0.0.1:%ld", 10000 + i % 50000);
        struct mgr_cmd u = {.type = MGR_CMD_ENDPOINT_UPDATE,
                            .request_id = (uint64_t)i + 100,
                            .time_ms = 3 + i};
        u.body = json_pack("{s:s,s:s,s:s}", "name", "bench", "address", addr, "state", "running");
        void *buf;
        size_t len;
        if (mgr_cmd_encode(&u, &buf, &len) != 0)
            return 1;
        json_decref(u.body);
        struct mgr_cmd d;
        char err[256];
        if (mgr_cmd_decode(buf, len, &d, err, sizeof(err)) != 0) {
            fprintf(stderr, "decode: %s\n", err);
            return 1;
        }
        if (mgr_fsm_apply(fsm, &d, &res) != 0) {
            fprintf(stderr, "apply: %s\n", res.msg);
            return 1;
        }
        mgr_fsm_result_clear(&res);
        mgr_cmd_clear(&d);
        raft_free(buf);
        lat[i] = now_mono_ns() - s;
    }
    double secs = (double)(now_mono_ns() - t0) / 1e9;
    printf("fsm direct: %ld endpoint updates in %.2f s = %.0f commands/s\n", n, secs,
           (double)n / secs);
    print_latency("fsm direct apply latency", lat, (size_t)n);
    free(lat);
    mgr_fsm_close(fsm);
    return 0;
}

/* ---- rest ---- */

struct worker {
    pthread_t th;
    const char *urls;
    int idx;
    double seconds;
    uint64_t *lat;
    size_t n, cap;
    long errors;
};

static void *rest_worker(void *arg)
{
    struct worker *w = arg;
    char err[512];
    struct api_client *c;
    if (api_client_create(w->urls, &c, err, sizeof(err)) != 0)
        return NULL;
    char path[64];
    snprintf(path, sizeof(path), "/v1/endpoints/bench-%d", w->idx);
    uint64_t end = now_mono_ns() + (uint64_t)(w->seconds * 1e9);
    long i = 0;
    while (now_mono_ns() < end) {
        char addr[32];
        snprintf(addr, sizeof(addr), "127.0.0.1:%ld", 10000 + (i++ % 50000));
        json_t *body = json_pack("{s:s}", "address", addr);
        struct api_response r = {0};
        uint64_t s = now_mono_ns();
        int rv = api_client_request(c, "PATCH", path, body, 10000, &r, err, sizeof(err));
        uint64_t d = now_mono_ns() - s;
        json_decref(body);
        if (rv != 0 || r.status != 200) {
            w->errors++;
        } else {
            if (w->n == w->cap) {
                w->cap = w->cap ? w->cap * 2 : 4096;
                w->lat = xrealloc(w->lat, w->cap * sizeof(uint64_t));
            }
            w->lat[w->n++] = d;
        }
        api_response_clear(&r);
    }
    api_client_destroy(c);
    return NULL;
}

static int bench_rest(const char *urls, int clients, double seconds)
{
    char err[512];
    struct api_client *c;
    if (api_client_create(urls, &c, err, sizeof(err)) != 0) {
        fprintf(stderr, "%s\n", err);
        return 1;
    }
    for (int i = 0; i < clients; i++) {
        char name[32];
        snprintf(name, sizeof(name), "bench-%d", i);
        json_t *body = json_pack("{s:s,s:s,s:I}", "name", name, "command", "/bin/true", "arena",
                                 (json_int_t)(2 << 20));
        struct api_response r = {0};
        api_client_request(c, "POST", "/v1/endpoints", body, 10000, &r, err, sizeof(err));
        json_decref(body);
        api_response_clear(&r);
    }
    api_client_destroy(c);

    struct worker *ws = xcalloc((size_t)clients, sizeof(*ws));
    uint64_t t0 = now_mono_ns();
    for (int i = 0; i < clients; i++) {
        ws[i] = (struct worker){.urls = urls, .idx = i, .seconds = seconds};
        pthread_create(&ws[i].th, NULL, rest_worker, &ws[i]);
    }
    size_t total = 0;
    long errors = 0;
    for (int i = 0; i < clients; i++) {
        pthread_join(ws[i].th, NULL);
        total += ws[i].n;
        errors += ws[i].errors;
    }
    double secs = (double)(now_mono_ns() - t0) / 1e9;
    uint64_t *all = xmalloc((total ? total : 1) * sizeof(uint64_t));
    size_t k = 0;
    for (int i = 0; i < clients; i++) {
        memcpy(all + k, ws[i].lat, ws[i].n * sizeof(uint64_t));
        k += ws[i].n;
        free(ws[i].lat);
    }
    printf("rest, %d client%s: %zu endpoint updates in %.2f s = %.0f writes/s (%ld errors)\n",
           clients, clients == 1 ? "" : "s", total, secs, (double)total / secs, errors);
    char what[64];
    snprintf(what, sizeof(what), "rest, %d client%s, update latency", clients,
             clients == 1 ? "" : "s");
    print_latency(what, all, total);
    free(all);
    free(ws);
    return 0;
}

/* ---- failover ---- */

static int bench_failover(const char *urls, pid_t pid)
{
    char err[512];
    struct api_client *c;
    if (api_client_create(urls, &c, err, sizeof(err)) != 0) {
        fprintf(stderr, "%s\n", err);
        return 1;
    }
    char name[48];
    snprintf(name, sizeof(name), "failover-%d-%ld", (int)pid, (long)time(NULL));
    uint64_t t0 = now_mono_ns();
    if (kill(pid, SIGKILL) != 0) {
        perror("kill");
        return 1;
    }
    for (;;) {
        json_t *body = json_pack("{s:s,s:s,s:I}", "name", name, "command", "/bin/true", "arena",
                                 (json_int_t)(2 << 20));
        struct api_response r = {0};
        int rv = api_client_request(c, "POST", "/v1/endpoints", body, 300, &r, err, sizeof(err));
        json_decref(body);
        long st = r.status;
        api_response_clear(&r);
        if (rv == 0 && (st == 201 || st == 409))
            break;
        if (now_mono_ns() - t0 > 30ull * 1000000000ull) {
            printf("failover: no successful write within 30 s\n");
            return 1;
        }
        usleep(2000);
    }
    printf("failover_ms %.1f\n", (double)(now_mono_ns() - t0) / 1e6);
    api_client_destroy(c);
    return 0;
}

int main(int argc, char **argv)
{
    if (argc < 2) {
        fprintf(stderr, "usage: mgr_bench fsm|rest|failover [options] (see the source header)\n");
        return 2;
    }
    if (strcmp(argv[1], "fsm") == 0)
        return bench_fsm(atol(arg(argc, argv, "--n", "200000")));
    const char *urls = arg(argc, argv, "--manager", "http://127.0.0.1:7001");
    if (strcmp(argv[1], "rest") == 0)
        return bench_rest(urls, atoi(arg(argc, argv, "--clients", "1")),
                          atof(arg(argc, argv, "--seconds", "5")));
    if (strcmp(argv[1], "failover") == 0)
        return bench_failover(urls, (pid_t)atol(arg(argc, argv, "--kill-pid", "0")));
    fprintf(stderr, "mgr_bench: unknown mode %s\n", argv[1]);
    return 2;
}
