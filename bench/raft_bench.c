/*
 * Directory writes through Raft, without HTTP: three real libraft members
 * (libuv backend, TCP transport on loopback, data directories on disk) in one
 * process and one loop, each with the manager's FSM (manager/fsm.c) and
 * command codec. Measures endpoint updates per second and commit latency
 * (raft_apply -> the FSM's result on the leader) for:
 *
 *   1 x 1     one command per raft_apply, one apply in flight (unbatched)
 *   1 x 64    one command per apply, 64 applies in flight (concurrent)
 *   256 x 1   256 commands per apply, one apply in flight (batched, as the
 *             daemon's proposal queue does under load)
 *
 * Usage: raft_bench [--seconds S] [--dir DIR]   (figures only, never pass/fail)
 */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <raft.h>
#include <raft/uv.h>
#include <uv.h>

#include "common/util.h"
#include "dvs.h"
#include "manager/cmd.h"
#include "manager/fsm.h"

#define N_MEMBERS 3
#define MAX_SAMPLES 2000000

struct member {
    struct raft raft;
    struct raft_io io;
    struct raft_uv_transport transport;
    struct mgr_fsm *fsm;
    char dir[256];
    char addr[32];
};

static uv_loop_t loop;
static struct member members[N_MEMBERS];
static struct member *leader;

/* What the current phase is measuring. */
static unsigned per_apply = 1, in_flight_max = 1;
static unsigned in_flight;
static uint64_t phase_end_ns;
static uint64_t *lat;
static size_t n_lat;
static uint64_t next_rid = 1000;
static bool phase_running;

/* request ids -> submit time: ids are dense and increasing, so a ring works. */
#define RING 65536
static uint64_t submit_ns[RING];

struct batch {
    struct raft_apply req;
    unsigned remaining;
};

static void submit(void);

static void on_result(void *data, uint64_t rid, struct mgr_fsm_result *res)
{
    struct member *mb = data;
    if (mb != leader || !phase_running)
        return;
    if (res->code != 0) {
        fprintf(stderr, "apply failed: %s\n", res->msg);
        exit(1);
    }
    if (n_lat < MAX_SAMPLES)
        lat[n_lat++] = now_mono_ns() - submit_ns[rid % RING];
}

static void applied(struct raft_apply *req, int status, void *result)
{
    (void)result;
    struct batch *b = req->data;
    if (status != 0) {
        fprintf(stderr, "raft_apply: %s\n", raft_strerror(status));
        exit(1);
    }
    free(b);
    in_flight--;
    submit();
}

static void submit(void)
{
    while (phase_running && in_flight < in_flight_max) {
        if (now_mono_ns() >= phase_end_ns) {
            if (in_flight == 0) {
                phase_running = false;
                uv_stop(&loop);
            }
            return;
        }
        struct raft_buffer bufs[256];
        for (unsigned i = 0; i < per_apply; i++) {
            uint64_t rid = next_rid++;
            char addr[32];
            snprintf(addr, sizeof(addr), "127.0.0.1:%u", (unsigned)(10000 + rid % 50000));
            struct mgr_cmd c = {.type = MGR_CMD_ENDPOINT_UPDATE,
                                .request_id = rid,
                                .time_ms = now_wall_ms()};
            c.body = json_pack("{s:s,s:s}", "name", "bench", "address", addr);
            void *buf;
            size_t len;
            if (mgr_cmd_encode(&c, &buf, &len) != 0)
                exit(1);
            json_decref(c.body);
            bufs[i].base = buf;
            bufs[i].len = len;
            submit_ns[rid % RING] = now_mono_ns();
        }
        struct batch *b = xcalloc(1, sizeof(*b));
        b->req.data = b;
        int rv = raft_apply(&leader->raft, &b->req, bufs, per_apply, applied);
        if (rv != 0) {
            fprintf(stderr, "raft_apply: %s\n", raft_strerror(rv));
            exit(1);
        }
        in_flight++;
    }
}

static int cmp_u64(const void *a, const void *b)
{
    uint64_t x = *(const uint64_t *)a, y = *(const uint64_t *)b;
    return x < y ? -1 : x > y;
}

static void run_phase(const char *name, unsigned per, unsigned inflight, double seconds)
{
    per_apply = per;
    in_flight_max = inflight;
    n_lat = 0;
    phase_running = true;
    uint64_t t0 = now_mono_ns();
    phase_end_ns = t0 + (uint64_t)(seconds * 1e9);
    submit();
    uv_run(&loop, UV_RUN_DEFAULT);
    /* Let the last results arrive. */
    double secs = (double)(now_mono_ns() - t0) / 1e9;
    qsort(lat, n_lat, sizeof(*lat), cmp_u64);
    printf("raft %-8s %8.0f commands/s   commit p50 %.3f ms  p99 %.3f ms  (n=%zu)\n", name,
           (double)n_lat / secs, n_lat ? (double)lat[n_lat / 2] / 1e6 : 0,
           n_lat ? (double)lat[(size_t)((double)n_lat * 0.99)] / 1e6 : 0, n_lat);
}

static void wait_leader_cb(uv_timer_t *t)
{
    for (int i = 0; i < N_MEMBERS; i++) {
        if (raft_state(&members[i].raft) == RAFT_LEADER) {
            leader = &members[i];
            uv_timer_stop(t);
            uv_stop(&loop);
            return;
        }
    }
}

struct create_ctx {
    struct raft_barrier b;
    bool done;
};

static void barrier_cb(struct raft_barrier *req, int status)
{
    struct create_ctx *c = req->data;
    c->done = status == 0;
    uv_stop(&loop);
}

static void apply_one(struct mgr_cmd *c)
{
    void *buf;
    size_t len;
    if (mgr_cmd_encode(c, &buf, &len) != 0)
        exit(1);
    struct raft_buffer rb = {.base = buf, .len = len};
    struct batch *b = xcalloc(1, sizeof(*b));
    b->req.data = b;
    in_flight_max = 0; /* applied() must not submit more */
    in_flight = 1;
    if (raft_apply(&leader->raft, &b->req, &rb, 1, applied) != 0)
        exit(1);
    struct create_ctx cc = {.b.data = &cc};
    raft_barrier(&leader->raft, &cc.b, barrier_cb);
    uv_run(&loop, UV_RUN_DEFAULT);
}

static void closed(struct raft *r)
{
    struct member *mb = r->data;
    raft_uv_close(&mb->io);
    raft_uv_tcp_close(&mb->transport);
}

int main(int argc, char **argv)
{
    double seconds = 5;
    const char *base = NULL;
    for (int i = 1; i + 1 < argc; i += 2) {
        if (!strcmp(argv[i], "--seconds"))
            seconds = atof(argv[i + 1]);
        else if (!strcmp(argv[i], "--dir"))
            base = argv[i + 1];
    }
    char tmpl[] = "/tmp/dvs-raft-bench.XXXXXX";
    if (!base && !(base = mkdtemp(tmpl))) {
        perror("mkdtemp");
        return 1;
    }
    lat = xmalloc(MAX_SAMPLES * sizeof(*lat));
    uv_loop_init(&loop);
    unsigned port0 = 30000 + (unsigned)(getpid() % 20000);
    struct raft_configuration conf;
    raft_configuration_init(&conf);
    for (int i = 0; i < N_MEMBERS; i++) {
        snprintf(members[i].addr, sizeof(members[i].addr), "127.0.0.1:%u", port0 + i);
        raft_configuration_add(&conf, (raft_id)(i + 1), members[i].addr, RAFT_VOTER);
    }
    for (int i = 0; i < N_MEMBERS; i++) {
        struct member *mb = &members[i];
        snprintf(mb->dir, sizeof(mb->dir), "%s/m%d", base, i + 1);
        if (mkdir(mb->dir, 0700) != 0 && errno != EEXIST) {
            perror(mb->dir);
            return 1;
        }
        if (mgr_fsm_open(&mb->fsm) != 0)
            return 1;
        mgr_fsm_set_callbacks(mb->fsm, on_result, NULL, mb);
        raft_uv_tcp_init(&mb->transport, &loop);
        if (raft_uv_init(&mb->io, &loop, mb->dir, &mb->transport) != 0) {
            fprintf(stderr, "raft_uv_init %s: %s\n", mb->dir, mb->io.errmsg);
            return 1;
        }
        raft_init(&mb->raft, &mb->io, mgr_fsm_raft(mb->fsm), (raft_id)(i + 1), mb->addr);
        mb->raft.data = mb;
        raft_bootstrap(&mb->raft, &conf);
        /* The manager's defaults (RAFT.md items 7 and 8). */
        raft_set_election_timeout(&mb->raft, 300);
        raft_set_heartbeat_timeout(&mb->raft, 30);
        raft_set_pre_vote(&mb->raft, true);
        raft_set_snapshot_threshold(&mb->raft, 16384);
        raft_set_snapshot_trailing(&mb->raft, 4096);
        if (raft_start(&mb->raft) != 0)
            return 1;
    }
    raft_configuration_close(&conf);

    uv_timer_t t;
    uv_timer_init(&loop, &t);
    uv_timer_start(&t, wait_leader_cb, 10, 10);
    uv_run(&loop, UV_RUN_DEFAULT);
    uv_close((uv_handle_t *)&t, NULL);
    printf("leader elected; data in %s (3 members, loopback TCP, one process)\n", base);

    /* One node and one endpoint to update. */
    struct mgr_cmd c = {.type = MGR_CMD_NODE_REGISTER, .request_id = 1, .time_ms = 1};
    c.body = json_pack("{s:s,s:s,s:f,s:I}", "id", "n1", "address", "127.0.0.1:9000", "cpu", 64.0,
                       "mem", (json_int_t)1 << 40);
    apply_one(&c);
    json_decref(c.body);
    c = (struct mgr_cmd){.type = MGR_CMD_ENDPOINT_CREATE, .request_id = 2, .time_ms = 2};
    c.body = json_pack("{s:s,s:s}", "name", "bench", "command", "/bin/true");
    apply_one(&c);
    json_decref(c.body);

    run_phase("1x1", 1, 1, seconds);
    run_phase("1x64", 1, 64, seconds);
    run_phase("256x1", 256, 1, seconds);

    for (int i = 0; i < N_MEMBERS; i++)
        raft_close(&members[i].raft, closed);
    uv_run(&loop, UV_RUN_DEFAULT);
    uv_loop_close(&loop);
    for (int i = 0; i < N_MEMBERS; i++)
        mgr_fsm_close(members[i].fsm);
    char cmd[512];
    snprintf(cmd, sizeof(cmd), "rm -rf '%s'", base);
    if (base == tmpl && system(cmd) != 0)
        fprintf(stderr, "could not remove %s\n", base);
    free(lat);
    return 0;
}
