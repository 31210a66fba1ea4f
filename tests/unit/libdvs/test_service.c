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
 *                   region N -> "FIRST N": N whole pages allocated in the
 *                               arena (once); FIRST is the arena page index
 *                   write I J ... -> "ok": a byte written in each listed
 *                               arena page (indices inside the region)
 *                   hammer -> "started": a thread writes random region
 *                               pages without pause (for the dirty-tracking
 *                               race test; it breaks the one-writer rule of
 *                               dvs.h on purpose)
 *                   hammer-stop -> the pages the thread wrote, as a string
 *                               of '0'/'1' per region page, after joining it
 *                   crash -> a write to a read-only page outside the arena
 *                   anything else -> echoed back
 * With TEST_SEGV_EXIT=N in the environment, the service installs its own
 * SIGSEGV handler first, which exits with status N (to test chaining).
 * Exit status: 0 stopped, 3 moved, 2 dvs_server_open failed, 1 other error.
 */
#include <errno.h>
#include <pthread.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <time.h>
#include <unistd.h>

#include "dvs.h"

struct root {
    uint64_t counter;
    uint64_t execs;
    uint64_t region_off; /* from the arena base; 0 = none yet */
    uint64_t region_pages;
};

#define MAX_REGION 4096

static dvs_arena *g_arena;
static size_t g_page;

/* The hammer thread and its shadow log (private memory, not the arena). */
static pthread_t hammer_thread;
static atomic_bool hammer_run, hammer_started;
static atomic_uchar hammer_wrote[MAX_REGION];

static uint8_t *region_page(const struct root *root, uint64_t i)
{
    return (uint8_t *)dvs_arena_base(g_arena) + root->region_off + i * g_page;
}

static void *hammer_main(void *arg)
{
    struct root *root = arg;
    uint64_t x = 88172645463325252ull;
    while (atomic_load_explicit(&hammer_run, memory_order_relaxed)) {
        x ^= x << 13, x ^= x >> 7, x ^= x << 17; /* xorshift */
        uint64_t i = x % root->region_pages;
        volatile uint8_t *p = region_page(root, i) + (x >> 32) % g_page;
        *p = (uint8_t)(*p + 1);
        atomic_store_explicit(&hammer_wrote[i], 1, memory_order_relaxed);
    }
    return NULL;
}

static int handle_tracking(struct root *root, const char *cmd, void *reply, size_t *reply_len)
{
    if (strncmp(cmd, "region ", 7) == 0) {
        uint64_t n = (uint64_t)atol(cmd + 7);
        if (root->region_off == 0) {
            if (n == 0 || n > MAX_REGION)
                return -EINVAL;
            uint8_t *p = dvs_arena_alloc(g_arena, (n + 1) * g_page);
            if (p == NULL)
                return -ENOMEM;
            uintptr_t first = ((uintptr_t)p + g_page - 1) / g_page * g_page;
            root->region_off = first - (uintptr_t)dvs_arena_base(g_arena);
            root->region_pages = n;
        }
        *reply_len = (size_t)snprintf(reply, *reply_len, "%llu %llu",
                                      (unsigned long long)(root->region_off / g_page),
                                      (unsigned long long)root->region_pages);
        return 0;
    }
    if (strncmp(cmd, "write ", 6) == 0) {
        uint64_t first = root->region_off / g_page;
        for (const char *p = cmd + 6; *p != '\0';) {
            char *end;
            unsigned long long i = strtoull(p, &end, 10);
            if (end == p || root->region_off == 0 || i < first || i >= first + root->region_pages)
                return -EINVAL;
            region_page(root, i - first)[i % 64]++;
            p = *end == ' ' ? end + 1 : end;
        }
        memcpy(reply, "ok", 2);
        *reply_len = 2;
        return 0;
    }
    if (strcmp(cmd, "hammer") == 0) {
        if (root->region_off == 0 || atomic_load(&hammer_started))
            return -EINVAL;
        atomic_store(&hammer_run, true);
        if (pthread_create(&hammer_thread, NULL, hammer_main, root) != 0)
            return -EAGAIN;
        atomic_store(&hammer_started, true);
        memcpy(reply, "started", 7);
        *reply_len = 7;
        return 0;
    }
    if (strcmp(cmd, "hammer-stop") == 0) {
        if (!atomic_load(&hammer_started) || root->region_pages > *reply_len)
            return -EINVAL;
        atomic_store(&hammer_run, false);
        pthread_join(hammer_thread, NULL);
        atomic_store(&hammer_started, false);
        for (uint64_t i = 0; i < root->region_pages; i++)
            ((char *)reply)[i] = atomic_load(&hammer_wrote[i]) ? '1' : '0';
        *reply_len = root->region_pages;
        return 0;
    }
    if (strcmp(cmd, "crash") == 0) {
        volatile uint8_t *ro = mmap(NULL, g_page, PROT_READ, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
        if (ro == MAP_FAILED)
            return -errno;
        ro[0] = 1; /* SIGSEGV, SEGV_ACCERR, outside the arena */
        return -EFAULT;
    }
    return 1; /* not a tracking command */
}

static void own_segv_handler(int sig)
{
    (void)sig;
    _exit(atoi(getenv("TEST_SEGV_EXIT")));
}

static void log_stderr(void *data, int level, const char *msg)
{
    (void)data;
    if (level >= DVS_LOG_WARN || getenv("DVS_TEST_VERBOSE") != NULL)
        fprintf(stderr, "test_service[%d]: %s\n", level, msg);
}

static int handle(void *data, const void *req, size_t len, void *reply, size_t *reply_len)
{
    struct root *root = data;
    char cmd[4096];
    size_t n = len < sizeof cmd - 1 ? len : sizeof cmd - 1;
    int tracking;
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
    } else if ((tracking = handle_tracking(root, cmd, reply, reply_len)) != 1) {
        return tracking;
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

    if (getenv("TEST_SEGV_EXIT") != NULL) {
        struct sigaction sa = {.sa_handler = own_segv_handler};
        sigaction(SIGSEGV, &sa, NULL);
    }
    g_page = (size_t)sysconf(_SC_PAGESIZE);
    dvs_server_options_init(&opts);
    opts.log = log_stderr;
    int rv = dvs_server_open(&opts, &srv);
    if (rv != 0) {
        fprintf(stderr, "test_service: open: %s\n", dvs_strerror(rv));
        return 2;
    }
    dvs_arena *arena = dvs_server_arena(srv);
    g_arena = arena;
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
