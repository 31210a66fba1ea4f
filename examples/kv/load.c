/*
 * dvs-kv-client load: drive an endpoint at a fixed rate and record what
 * happened, to measure a migration from the client's side and to check it
 * afterwards (verify.c).
 *
 * Open loop: each of the T threads sends at its own fixed schedule (thread
 * i at t0 + (i + j T) / R for j = 0, 1, ...), whatever the replies do, so a
 * stall in the service shows up as latency and as a gap, instead of
 * quietly lowering the offered load (coordinated omission). A thread that
 * falls behind its schedule sends its late requests at once, and the
 * summary reports how far behind it fell; requests still owed when the
 * duration is over are not sent, only counted (`unsent`).
 *
 * Each operation picks a key uniformly among --keys registers and
 * --incr-keys counters; with probability --write-ratio it writes (put of a
 * unique value, or incr by 1), otherwise it reads (get). Every key carries
 * a prefix fresh for the run, so every key starts absent and the history
 * alone says what the service should hold.
 *
 * The summary is JSON on stdout (README.md lists the fields); the history
 * format is in history.h.
 */
#include <errno.h>
#include <inttypes.h>
#include <math.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <jansson.h>

#include "common/util.h"
#include "examples/kv/client.h"
#include "examples/kv/history.h"

/* A pseudo error code for the one refusal a load can meet in a reply's
 * status (an incr of a value that is not a number): positive, so it never
 * collides with a negative dvs_call code. */
#define KV_LOAD_NOTNUMBER 1
#define KV_LOAD_MAX_CODES 64

/* ===========================================================================
 * State
 */

struct kv_load;

struct kv_err_count {
    int code;
    uint64_t n;
};

struct kv_worker {
    struct kv_load *load;
    unsigned id;
    pthread_t thread;
    dvs_client *client;   /* shared, or its own with --client-per-thread */
    bool own_client;
    uint64_t rng;
    uint64_t process;     /* the history's process id; see history.h */
    uint64_t seq;         /* for unique values */

    /* Results, read by the main thread after the join. */
    uint64_t ops, ok;
    struct kv_err_count errs[KV_LOAD_MAX_CODES];
    unsigned nerrs;
    uint64_t *lat_ns;     /* latencies of successful calls */
    size_t nlat, lat_cap;
    uint64_t *incr_acked; /* per counter key */
    uint64_t behind_max_ns;
    uint64_t unsent;      /* scheduled, but due when the run was over */
};

struct kv_load {
    const struct kv_cli *cli;
    const char *endpoint;
    char prefix[64];
    unsigned threads;
    uint64_t keys, incr_keys;
    uint64_t t0;         /* monotonic ns at the start */
    double interval_ns;  /* between two sends, all threads together: 1e9 / R */
    uint64_t end_ns;     /* no send is scheduled at or after t0 + end_ns */

    /* Guarded by mu: the history file and the gap between successes. Times
     * are taken under the lock so the file's order is the time order. */
    pthread_mutex_t mu;
    FILE *hist;
    int hist_errno;
    uint64_t oks;         /* successful completions so far */
    uint64_t first_ok_ns;
    uint64_t last_ok_ns;
    uint64_t max_gap_ns;  /* between successive successes */
};

/* ===========================================================================
 * Helpers
 */

/* splitmix64: a tiny, good-enough generator per thread; seeded from
 * getrandom, so two runs differ. */
static uint64_t kv_rand(uint64_t *s)
{
    uint64_t z = (*s += UINT64_C(0x9e3779b97f4a7c15));
    z = (z ^ (z >> 30)) * UINT64_C(0xbf58476d1ce4e5b9);
    z = (z ^ (z >> 27)) * UINT64_C(0x94d049bb133111eb);
    return z ^ (z >> 31);
}

static double kv_rand01(uint64_t *s)
{
    return (double)(kv_rand(s) >> 11) * 0x1.0p-53;
}

static uint64_t kv_elapsed(const struct kv_load *L)
{
    return now_mono_ns() - L->t0;
}

/* SIGINT or SIGTERM end the run early: the calls in flight complete and
 * the history and summary are written as at the end of --duration. */
static volatile sig_atomic_t kv_load_stop;

static void kv_load_on_signal(int sig)
{
    (void)sig;
    kv_load_stop = 1;
}

static void kv_sleep_until(uint64_t mono_ns)
{
    struct timespec ts = {.tv_sec = (time_t)(mono_ns / 1000000000u),
                          .tv_nsec = (long)(mono_ns % 1000000000u)};
    while (clock_nanosleep(CLOCK_MONOTONIC, TIMER_ABSTIME, &ts, NULL) == EINTR && !kv_load_stop)
        ;
}

static void kv_count_error(struct kv_worker *w, int code)
{
    for (unsigned i = 0; i < w->nerrs; i++) {
        if (w->errs[i].code == code) {
            w->errs[i].n++;
            return;
        }
    }
    /* More distinct codes than slots would take a broken library; lump the
     * rest into the last slot rather than lose the count. */
    if (w->nerrs == KV_LOAD_MAX_CODES) {
        w->errs[KV_LOAD_MAX_CODES - 1].n++;
        return;
    }
    w->errs[w->nerrs++] = (struct kv_err_count){code, 1};
}

static const char *kv_code_name(int code)
{
    return code == KV_LOAD_NOTNUMBER ? "KV_NOTNUMBER" : dvs_err_name(code);
}

/* Append one history line (if there is a history) and return its time. On
 * success of a completion, also measure the gap since the previous one. */
static uint64_t kv_event(struct kv_load *L, enum kv_hist_type type, uint64_t process,
                         enum kv_hist_op op, const char *key, const char *value,
                         const char *error)
{
    pthread_mutex_lock(&L->mu);
    uint64_t t = kv_elapsed(L);
    if (L->hist != NULL && L->hist_errno == 0) {
        int n = fprintf(L->hist, "%s %" PRIu64 " %s %s %s %" PRIu64 "%s%s\n",
                        kv_hist_type_name(type), process, kv_hist_op_name(op), key, value, t,
                        error ? " " : "", error ? error : "");
        if (n < 0)
            L->hist_errno = errno ? errno : EIO;
    }
    if (type == KV_HIST_OK) {
        if (L->oks++ == 0)
            L->first_ok_ns = t;
        else if (t - L->last_ok_ns > L->max_gap_ns)
            L->max_gap_ns = t - L->last_ok_ns;
        L->last_ok_ns = t;
    }
    pthread_mutex_unlock(&L->mu);
    return t;
}

/* ===========================================================================
 * One operation
 */

static void kv_one_op(struct kv_worker *w)
{
    struct kv_load *L = w->load;
    uint64_t total = L->keys + L->incr_keys;
    uint64_t k = kv_rand(&w->rng) % total;
    bool counter = k >= L->keys;
    bool write = kv_rand01(&w->rng) < L->cli->write_ratio;

    char key[96], value[64];
    struct kv_request req = {0};
    enum kv_hist_op op;
    if (counter)
        snprintf(key, sizeof(key), "%sc%" PRIu64, L->prefix, k - L->keys);
    else
        snprintf(key, sizeof(key), "%sk%" PRIu64, L->prefix, k);
    req.key = (const uint8_t *)key;
    req.key_len = strlen(key);
    if (write && counter) {
        op = KV_HIST_INCR;
        req.op = KV_OP_INCR;
        req.delta = 1;
        snprintf(value, sizeof(value), "1");
    } else if (write) {
        op = KV_HIST_PUT;
        req.op = KV_OP_PUT;
        /* Unique across the run, so a read says exactly which write it saw. */
        snprintf(value, sizeof(value), "t%u-%" PRIu64, w->id, ++w->seq);
        req.a = (const uint8_t *)value;
        req.a_len = strlen(value);
    } else {
        op = KV_HIST_GET;
        req.op = KV_OP_GET;
        snprintf(value, sizeof(value), KV_HISTORY_NIL);
    }

    uint64_t t_inv = kv_event(L, KV_HIST_INVOKE, w->process, op, key, value, NULL);
    struct kv_reply rep;
    void *buf = NULL;
    int rv = kv_cli_call(w->client, L->endpoint, &req, (int)L->cli->timeout_ms, &rep, &buf);
    w->ops++;

    char result[64];
    snprintf(result, sizeof(result), "%s", value);
    if (rv == 0) {
        if (rep.status == KV_OK && op == KV_HIST_GET) {
            /* Values this run wrote are short tokens; anything else (another
             * writer's value) is cut to a token so the history stays
             * parseable, and then shows up in verify as a value nobody
             * wrote, which it is. */
            size_t n = rep.value_len < sizeof(result) - 1 ? rep.value_len : sizeof(result) - 1;
            for (size_t i = 0; i < n; i++)
                result[i] = rep.value[i] > 0x20 && rep.value[i] < 0x7f ? (char)rep.value[i] : '?';
            result[n] = '\0';
            if (n == 0)
                snprintf(result, sizeof(result), "\"\"");
        } else if (rep.status == KV_NOTFOUND && op == KV_HIST_GET) {
            snprintf(result, sizeof(result), KV_HISTORY_NIL);
        } else if (rep.status == KV_OK && op == KV_HIST_INCR && rep.value_len == 8) {
            int64_t v = (int64_t)kv_get_u64(rep.value);
            snprintf(result, sizeof(result), "%" PRId64, v);
            w->incr_acked[k - L->keys]++;
        } else if (rep.status == KV_NOTNUMBER && op == KV_HIST_INCR) {
            rv = KV_LOAD_NOTNUMBER;
        } else if (rep.status != KV_OK) {
            rv = DVS_EPROTO; /* a status this op cannot have */
        } else if (op == KV_HIST_INCR) {
            rv = DVS_EPROTO; /* an incr reply without its 8 bytes */
        }
    }
    dvs_free(buf);

    if (rv == 0) {
        uint64_t t_done = kv_event(L, KV_HIST_OK, w->process, op, key, result, NULL);
        w->ok++;
        if (w->nlat == w->lat_cap) {
            w->lat_cap = w->lat_cap ? w->lat_cap * 2 : 4096;
            w->lat_ns = xrealloc(w->lat_ns, w->lat_cap * sizeof(*w->lat_ns));
        }
        w->lat_ns[w->nlat++] = t_done - t_inv;
        return;
    }

    kv_count_error(w, rv);
    /* The refusal of an incr is the handler's: nothing changed. */
    bool definite = rv == KV_LOAD_NOTNUMBER || kv_hist_error_is_definite(rv);
    kv_event(L, definite ? KV_HIST_FAIL : KV_HIST_INFO, w->process, op, key, value,
             kv_code_name(rv));
    /* An operation of unknown outcome stays pending for ever in the model;
     * this thread goes on as a new process (history.h). */
    if (!definite)
        w->process += L->threads;
}

static void *kv_worker_main(void *arg)
{
    struct kv_worker *w = arg;
    struct kv_load *L = w->load;
    /* Send number j of thread i is the (i + j T)-th of the run. Computed
     * from j each time, not accumulated, so rounding never drifts. */
    for (uint64_t j = 0;; j++) {
        double slot = (double)w->id + (double)j * (double)L->threads;
        uint64_t due = (uint64_t)(slot * L->interval_ns);
        if (due >= L->end_ns || kv_load_stop)
            break; /* the end of the run, or SIGINT/SIGTERM: stop sending, report */
        uint64_t now = kv_elapsed(L);
        if (now >= L->end_ns) {
            /* The run is over: a backlog left by a stall is not sent (a
             * dead service would otherwise keep the run going for one
             * timeout per scheduled request), only counted. */
            w->unsent++;
            continue;
        }
        if (now < due)
            kv_sleep_until(L->t0 + due);
        else if (now - due > w->behind_max_ns)
            w->behind_max_ns = now - due;
        kv_one_op(w);
    }
    return NULL;
}

/* ===========================================================================
 * The summary
 */

static int kv_cmp_u64(const void *pa, const void *pb)
{
    uint64_t a = *(const uint64_t *)pa, b = *(const uint64_t *)pb;
    return a < b ? -1 : a > b;
}

/* Nearest-rank percentile of sorted v[0..n), in ms. */
static double kv_pct_ms(const uint64_t *v, size_t n, double p)
{
    if (n == 0)
        return 0;
    size_t rank = (size_t)ceil(p * (double)n);
    if (rank == 0)
        rank = 1;
    return (double)v[rank - 1] / 1e6;
}

static json_t *kv_summary(struct kv_load *L, struct kv_worker *ws, uint64_t elapsed_ns)
{
    uint64_t ops = 0, ok = 0, behind = 0, unsent = 0;
    size_t nlat = 0;
    for (unsigned i = 0; i < L->threads; i++) {
        ops += ws[i].ops;
        unsent += ws[i].unsent;
        ok += ws[i].ok;
        nlat += ws[i].nlat;
        if (ws[i].behind_max_ns > behind)
            behind = ws[i].behind_max_ns;
    }
    uint64_t *lat = xmalloc((nlat ? nlat : 1) * sizeof(*lat));
    size_t at = 0;
    for (unsigned i = 0; i < L->threads; i++) {
        if (ws[i].nlat)
            memcpy(lat + at, ws[i].lat_ns, ws[i].nlat * sizeof(*lat));
        at += ws[i].nlat;
    }
    qsort(lat, nlat, sizeof(*lat), kv_cmp_u64);

    json_t *errors = json_object();
    for (unsigned i = 0; i < L->threads; i++) {
        for (unsigned e = 0; e < ws[i].nerrs; e++) {
            const char *name = kv_code_name(ws[i].errs[e].code);
            json_t *cur = json_object_get(errors, name);
            json_int_t n = (cur ? json_integer_value(cur) : 0) + (json_int_t)ws[i].errs[e].n;
            json_object_set_new(errors, name, json_integer(n));
        }
    }

    json_t *incr = json_object();
    for (uint64_t c = 0; c < L->incr_keys; c++) {
        uint64_t n = 0;
        for (unsigned i = 0; i < L->threads; i++)
            n += ws[i].incr_acked[c];
        char key[96];
        snprintf(key, sizeof(key), "%sc%" PRIu64, L->prefix, c);
        json_object_set_new(incr, key, json_integer((json_int_t)n));
    }

    /* The gap is measured between successes only, so that the start-up
     * (connecting, resolving the endpoint) is not mistaken for downtime;
     * first_ok_ms and since_last_ok_ms show both ends. With fewer than two
     * successes there is no gap to measure: the whole run counts as down. */
    uint64_t gap = L->oks >= 2 ? L->max_gap_ns : elapsed_ns;
    uint64_t first_ok = L->oks ? L->first_ok_ns : elapsed_ns;
    uint64_t since_last = L->oks ? elapsed_ns - L->last_ok_ns : elapsed_ns;

    json_t *s = json_object();
    json_object_set_new(s, "endpoint", json_string(L->endpoint));
    json_object_set_new(s, "key_prefix", json_string(L->prefix));
    json_object_set_new(s, "threads", json_integer(L->threads));
    json_object_set_new(s, "rate", json_real(L->cli->rate));
    json_object_set_new(s, "duration_ms", json_integer(L->cli->duration_ms));
    json_object_set_new(s, "elapsed_ms", json_real((double)elapsed_ns / 1e6));
    json_object_set_new(s, "ops", json_integer((json_int_t)ops));
    json_object_set_new(s, "ok", json_integer((json_int_t)ok));
    json_object_set_new(s, "failed", json_integer((json_int_t)(ops - ok)));
    json_object_set_new(s, "errors", errors);
    json_object_set_new(s, "latency_ms",
                        json_pack("{s:f, s:f, s:f}", "p50", kv_pct_ms(lat, nlat, 0.50), "p99",
                                  kv_pct_ms(lat, nlat, 0.99), "max",
                                  nlat ? (double)lat[nlat - 1] / 1e6 : 0.0));
    json_object_set_new(s, "max_gap_ms", json_real((double)gap / 1e6));
    json_object_set_new(s, "first_ok_ms", json_real((double)first_ok / 1e6));
    json_object_set_new(s, "since_last_ok_ms", json_real((double)since_last / 1e6));
    json_object_set_new(s, "behind_max_ms", json_real((double)behind / 1e6));
    json_object_set_new(s, "unsent", json_integer((json_int_t)unsent));
    json_object_set_new(s, "incr_acked", incr);
    json_object_set_new(s, "history", L->cli->history ? json_string(L->cli->history)
                                                      : json_null());
    free(lat);
    return s;
}

/* ===========================================================================
 * The command
 */

int kv_cmd_load(const struct kv_cli *cli)
{
    struct kv_load L;
    struct kv_worker *ws = NULL;
    dvs_client *shared = NULL;
    unsigned started = 0;
    int status = KV_EXIT_ERROR;

    memset(&L, 0, sizeof(L));
    if (cli->duration_ms <= 0 || cli->rate <= 0) {
        fprintf(stderr, KV_CLIENT_PROG ": load needs --duration D and --rate R\n");
        return KV_EXIT_USAGE;
    }
    if (cli->keys + cli->incr_keys == 0) {
        fprintf(stderr, KV_CLIENT_PROG ": load needs --keys or --incr-keys above 0\n");
        return KV_EXIT_USAGE;
    }
    if (cli->key_prefix != NULL &&
        (strlen(cli->key_prefix) > 32 || strpbrk(cli->key_prefix, " \t\r\n") != NULL)) {
        fprintf(stderr, KV_CLIENT_PROG ": --key-prefix: at most 32 characters, no spaces\n");
        return KV_EXIT_USAGE;
    }
    L.cli = cli;
    L.endpoint = kv_cli_endpoint(cli);
    L.threads = (unsigned)cli->threads;
    L.keys = (uint64_t)cli->keys;
    L.incr_keys = (uint64_t)cli->incr_keys;
    if (cli->key_prefix != NULL)
        snprintf(L.prefix, sizeof(L.prefix), "%s", cli->key_prefix);
    else
        snprintf(L.prefix, sizeof(L.prefix), "r%08" PRIx32 "-", (uint32_t)random_u64());
    /* Thread i sends at t0 + (i + j T) / R: together, evenly every 1/R. */
    L.interval_ns = 1e9 / cli->rate;
    L.end_ns = (uint64_t)cli->duration_ms * 1000000u;
    pthread_mutex_init(&L.mu, NULL);

    if (cli->history != NULL) {
        L.hist = fopen(cli->history, "w");
        if (L.hist == NULL) {
            fprintf(stderr, KV_CLIENT_PROG ": cannot create %s: %s\n", cli->history,
                    strerror(errno));
            goto out;
        }
        fprintf(L.hist,
                KV_HISTORY_MAGIC " endpoint=%s threads=%u keys=%" PRIu64 " incr_keys=%" PRIu64
                                 " prefix=%s rate=%g duration_ms=%" PRId64
                                 " start_wall_ms=%" PRId64 "\n",
                L.endpoint, L.threads, L.keys, L.incr_keys, L.prefix, cli->rate,
                cli->duration_ms, now_wall_ms());
    }

    if (!cli->client_per_thread && kv_cli_client(cli, &shared) != 0)
        goto out;
    ws = xcalloc(L.threads, sizeof(*ws));
    for (unsigned i = 0; i < L.threads; i++) {
        ws[i].load = &L;
        ws[i].id = i;
        ws[i].process = i;
        ws[i].rng = random_u64();
        ws[i].incr_acked = xcalloc(L.incr_keys ? L.incr_keys : 1, sizeof(uint64_t));
        ws[i].client = shared;
        if (cli->client_per_thread) {
            if (kv_cli_client(cli, &ws[i].client) != 0)
                goto out;
            ws[i].own_client = true;
        }
    }

    struct sigaction sa = {.sa_handler = kv_load_on_signal};
    sigemptyset(&sa.sa_mask);
    sigaction(SIGINT, &sa, NULL);
    sigaction(SIGTERM, &sa, NULL);
    L.t0 = now_mono_ns();
    for (; started < L.threads; started++) {
        int rv = pthread_create(&ws[started].thread, NULL, kv_worker_main, &ws[started]);
        if (rv != 0) {
            fprintf(stderr, KV_CLIENT_PROG ": cannot start thread %u: %s\n", started,
                    strerror(rv));
            /* Let the ones running finish their schedule, then report. */
            break;
        }
    }
    for (unsigned i = 0; i < started; i++)
        pthread_join(ws[i].thread, NULL);
    uint64_t elapsed = kv_elapsed(&L);
    if (started < L.threads)
        goto out;

    if (L.hist != NULL) {
        if (fflush(L.hist) != 0 && L.hist_errno == 0)
            L.hist_errno = errno;
        if (L.hist_errno != 0) {
            fprintf(stderr, KV_CLIENT_PROG ": writing %s: %s\n", cli->history,
                    strerror(L.hist_errno));
            goto out;
        }
    }

    json_t *s = kv_summary(&L, ws, elapsed);
    char *text = json_dumps(s, JSON_INDENT(2) | JSON_PRESERVE_ORDER | JSON_REAL_PRECISION(6));
    json_decref(s);
    if (text == NULL) {
        fprintf(stderr, KV_CLIENT_PROG ": out of memory\n");
        goto out;
    }
    printf("%s\n", text);
    free(text);
    status = fflush(stdout) == 0 ? KV_EXIT_OK : KV_EXIT_ERROR;

out:
    if (L.hist != NULL && fclose(L.hist) != 0 && status == KV_EXIT_OK) {
        fprintf(stderr, KV_CLIENT_PROG ": writing %s: %s\n", cli->history, strerror(errno));
        status = KV_EXIT_ERROR;
    }
    for (unsigned i = 0; ws != NULL && i < L.threads; i++) {
        if (ws[i].own_client)
            dvs_client_destroy(ws[i].client);
        free(ws[i].lat_ns);
        free(ws[i].incr_acked);
    }
    free(ws);
    dvs_client_destroy(shared);
    pthread_mutex_destroy(&L.mu);
    return status;
}
