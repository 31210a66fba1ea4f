/*
 * The agent's link to the manager (docs/api.md, docs/migration.md).
 *
 * Three kinds of traffic, none of them on the loop thread because
 * api/client.h is blocking libcurl (and one client per thread):
 *
 *   - the heartbeat thread registers the node (POST /v1/nodes), then posts
 *     a heartbeat every --heartbeat-interval with the load the loop last
 *     sampled. A 404 (the manager lost or never had the node) or a "down"
 *     answer registers again: registration is idempotent and brings a down
 *     node back up;
 *   - the orders thread runs the blocking query GET
 *     /v1/nodes/{id}/orders?index=N&wait=30s in a loop. N is the X-Dvs-Index
 *     of the last answer, so the query returns as soon as anything this node
 *     must act on changes. An answer older than one already seen (a lagging
 *     member that timed out its wait) is dropped, so the loop's view of the
 *     directory never goes backwards. Each new answer replaces the previous
 *     unread one and wakes the loop through a uv_async: the loop always
 *     reconciles with the newest view, however far behind it fell;
 *   - reports (PATCH of endpoints and migrations, and the GETs that settle a
 *     migration's outcome) run on the libuv thread pool with node_call(); a
 *     small pool of idle clients keeps their connections warm.
 */
#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "api/client.h"
#include "common/log.h"
#include "common/util.h"
#include "node/agent.h"

#define COMP NODE_COMP_MGR
#define BACKOFF_MIN_MS 200
#define BACKOFF_MAX_MS 5000

/* ------------------------------------------------------------------------ */
/* Helpers for the threads                                                   */
/* ------------------------------------------------------------------------ */

/* Wait ms on the condition variable, or less if the agent stops.
 * Call with mu held. Returns true if the threads must stop. */
static bool wait_ms_locked(struct node *n, int64_t ms)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    ts.tv_sec += ms / 1000;
    ts.tv_nsec += (ms % 1000) * 1000000;
    if (ts.tv_nsec >= 1000000000) {
        ts.tv_sec++;
        ts.tv_nsec -= 1000000000;
    }
    while (!n->stop_threads) {
        if (pthread_cond_timedwait(&n->cond, &n->mu, &ts) == ETIMEDOUT)
            break;
    }
    return n->stop_threads;
}

static bool wait_ms(struct node *n, int64_t ms)
{
    pthread_mutex_lock(&n->mu);
    bool stop = wait_ms_locked(n, ms);
    pthread_mutex_unlock(&n->mu);
    return stop;
}

static bool should_stop(struct node *n)
{
    pthread_mutex_lock(&n->mu);
    bool stop = n->stop_threads;
    pthread_mutex_unlock(&n->mu);
    return stop;
}

static int64_t next_backoff(int64_t b)
{
    b *= 2;
    return b > BACKOFF_MAX_MS ? BACKOFF_MAX_MS : b;
}

const char *node_call_error(const struct node_call_result *res)
{
    if (res->rv != 0)
        return res->err && *res->err ? res->err : dvs_strerror(res->rv);
    const char *e = json_string_value(json_object_get(res->body, "error"));
    return e ? e : "(no error message)";
}

/*
 * A client for the manager with this agent's token and CA (docs/security.md).
 * Returns 0 or a negative code with ERR filled.
 */
static int mgr_client_create(struct node *n, struct api_client **ret, char *err, size_t errlen)
{
    struct api_client *c = NULL;
    int rv = api_client_create(n->cfg.manager, &c, err, errlen);
    if (rv)
        return rv;
    if ((rv = api_client_set_token(c, n->mgr_token)) != 0 ||
        (rv = api_client_set_ca_file(c, n->cfg.ca_file)) != 0) {
        snprintf(err, errlen, "cannot set up the manager client's token or CA file: %s",
                 dvs_strerror(rv));
        api_client_destroy(c);
        return rv;
    }
    *ret = c;
    return 0;
}

static const char *answer_error(const struct api_response *r)
{
    const char *e = json_string_value(json_object_get(r->body, "error"));
    return e ? e : "(no error message)";
}

/* ------------------------------------------------------------------------ */
/* The heartbeat thread                                                      */
/* ------------------------------------------------------------------------ */

static bool do_register(struct node *n, struct api_client *c, unsigned attempt)
{
    char err[1024];
    struct api_response r;
    json_t *body = json_pack("{s:s,s:s,s:f,s:I}", "id", n->cfg.id, "address", n->cfg.listen,
                             "cpu", n->cpu_capacity, "mem", (json_int_t)n->mem_capacity);
    int rv = api_client_request(c, "POST", "/v1/nodes", body, (long)n->cfg.request_timeout_ms,
                                &r, err, sizeof(err));
    json_decref(body);
    bool ok = rv == 0 && (r.status == 200 || r.status == 201);
    if (ok) {
        log_info(COMP, "node=%s registered address=%s cpu=%.2f mem=%" PRIu64 " via=%s",
                 n->cfg.id, n->cfg.listen, n->cpu_capacity, n->mem_capacity, r.url);
    } else if (attempt == 0 || attempt % 10 == 0) {
        /* The first failure and then every tenth: a manager that is down for
         * a while must not flood the log. */
        if (rv != 0)
            log_warn(COMP, "node=%s registration failed (attempt %u): %s", n->cfg.id,
                     attempt + 1, err);
        else
            log_warn(COMP, "node=%s registration refused (attempt %u): HTTP %ld: %s",
                     n->cfg.id, attempt + 1, r.status, answer_error(&r));
    }
    api_response_clear(&r);
    return ok;
}

static void *hb_main(void *arg)
{
    struct node *n = arg;
    struct api_client *c = NULL;
    char err[1024];
    char path[256];
    unsigned attempt = 0;
    int64_t backoff = BACKOFF_MIN_MS;
    char last_state[32] = "";
    unsigned failures = 0;

    if (mgr_client_create(n, &c, err, sizeof(err)) != 0) {
        log_error(COMP, "cannot create a manager client: %s", err);
        return NULL;
    }
    snprintf(path, sizeof(path), "/v1/nodes/%s/heartbeat", n->cfg.id);

    while (!should_stop(n)) {
        pthread_mutex_lock(&n->mu);
        bool registered = n->registered;
        pthread_mutex_unlock(&n->mu);

        if (!registered) {
            if (do_register(n, c, attempt++)) {
                pthread_mutex_lock(&n->mu);
                n->registered = true;
                pthread_cond_broadcast(&n->cond);
                pthread_mutex_unlock(&n->mu);
                attempt = 0;
                backoff = BACKOFF_MIN_MS;
                last_state[0] = '\0';
                continue; /* first heartbeat at once */
            }
            if (wait_ms(n, backoff))
                break;
            backoff = next_backoff(backoff);
            continue;
        }

        pthread_mutex_lock(&n->mu);
        struct node_load_figures load = n->load;
        pthread_mutex_unlock(&n->mu);
        json_t *body = json_object();
        if (load.valid) {
            json_object_set_new(body, "cpu_used", json_real(load.cpu_used));
            json_object_set_new(body, "mem_used", json_real(load.mem_used));
            json_object_set_new(body, "rps", json_real(load.rps));
        }
        struct api_response r;
        int64_t t0 = now_mono_ms();
        /* A heartbeat older than a few intervals is worthless: give up on
         * it early (this also bounds how long a shut-down waits for it). */
        int64_t hb_timeout = 3 * n->cfg.heartbeat_interval_ms;
        if (hb_timeout < 1000)
            hb_timeout = 1000;
        if (hb_timeout > n->cfg.request_timeout_ms)
            hb_timeout = n->cfg.request_timeout_ms;
        int rv = api_client_request(c, "POST", path, body, (long)hb_timeout, &r, err,
                                    sizeof(err));
        json_decref(body);
        if (rv == 0 && r.status == 200) {
            const char *st = json_string_value(json_object_get(r.body, "state"));
            if (st && strcmp(st, last_state) != 0) {
                log_info(COMP, "node=%s state=%s eligible=%s", n->cfg.id, st,
                         json_is_true(json_object_get(r.body, "eligible")) ? "yes" : "no");
                snprintf(last_state, sizeof(last_state), "%s", st);
            }
            if (failures > 0)
                log_info(COMP, "node=%s heartbeats resumed after %u failures", n->cfg.id,
                         failures);
            failures = 0;
            node_metrics_heartbeat(n, true);
            if (st && strcmp(st, "down") == 0) {
                /* Declared down while we could not reach it: say we are back. */
                pthread_mutex_lock(&n->mu);
                n->registered = false;
                pthread_mutex_unlock(&n->mu);
            }
        } else if (rv == 0 && r.status == 404) {
            log_warn(COMP, "node=%s unknown to the manager; registering again", n->cfg.id);
            pthread_mutex_lock(&n->mu);
            n->registered = false;
            pthread_mutex_unlock(&n->mu);
        } else {
            if (failures == 0 || failures % 10 == 0) {
                if (rv != 0)
                    log_warn(COMP, "node=%s heartbeat failed: %s", n->cfg.id, err);
                else
                    log_warn(COMP, "node=%s heartbeat refused: HTTP %ld: %s", n->cfg.id,
                             r.status, answer_error(&r));
            }
            failures++;
            node_metrics_heartbeat(n, false);
        }
        api_response_clear(&r);
        int64_t left = n->cfg.heartbeat_interval_ms - (now_mono_ms() - t0);
        if (wait_ms(n, left > 0 ? left : 0))
            break;
    }
    api_client_destroy(c);
    return NULL;
}

/* ------------------------------------------------------------------------ */
/* The orders thread                                                         */
/* ------------------------------------------------------------------------ */

static void *orders_main(void *arg)
{
    struct node *n = arg;
    struct api_client *c = NULL;
    char err[1024];
    char path[256];
    uint64_t index = 0;
    int64_t backoff = BACKOFF_MIN_MS;
    unsigned failures = 0;

    if (mgr_client_create(n, &c, err, sizeof(err)) != 0) {
        log_error(COMP, "cannot create a manager client: %s", err);
        goto out;
    }
    for (;;) {
        /* Orders of an unregistered node are a 404: wait for registration. */
        pthread_mutex_lock(&n->mu);
        while (!n->registered && !n->stop_threads)
            pthread_cond_wait(&n->cond, &n->mu);
        bool stop = n->stop_threads;
        pthread_mutex_unlock(&n->mu);
        if (stop)
            break;

        long timeout = (long)n->cfg.request_timeout_ms;
        if (index == 0) {
            /* The first read goes through the leader: a member that has
             * not applied our registration yet would answer 404. */
            snprintf(path, sizeof(path), "/v1/nodes/%s/orders?consistent", n->cfg.id);
        } else {
            snprintf(path, sizeof(path), "/v1/nodes/%s/orders?index=%" PRIu64 "&wait=%" PRId64 "ms",
                     n->cfg.id, index, n->cfg.orders_wait_ms);
            timeout += (long)n->cfg.orders_wait_ms;
        }
        struct api_response r;
        int rv = api_client_request(c, "GET", path, NULL, timeout, &r, err, sizeof(err));
        if (rv == 0 && r.status == 200 && json_is_object(r.body)) {
            if (failures > 0)
                log_info(COMP, "node=%s orders watch resumed after %u failures", n->cfg.id,
                         failures);
            failures = 0;
            backoff = BACKOFF_MIN_MS;
            if (r.index >= index) {
                bool changed = r.index > index || index == 0;
                index = r.index;
                if (changed) {
                    /* Under the lock, and only while running: the loop
                     * closes the async handle once stop_threads is set. */
                    pthread_mutex_lock(&n->mu);
                    if (!n->stop_threads) {
                        json_decref(n->orders_new);
                        n->orders_new = r.body;
                        n->orders_new_index = r.index;
                        r.body = NULL;
                        uv_async_send(&n->orders_async);
                    }
                    pthread_mutex_unlock(&n->mu);
                }
            }
            api_response_clear(&r);
            continue;
        }
        /* A 404 here may be a lagging member; the heartbeat (answered by the
         * leader alone) is what decides that the node must register again. */
        if (failures == 0 || failures % 10 == 0) {
            if (rv != 0)
                log_warn(COMP, "node=%s orders watch failed: %s", n->cfg.id, err);
            else
                log_warn(COMP, "node=%s orders watch: HTTP %ld: %s", n->cfg.id, r.status,
                         answer_error(&r));
        }
        failures++;
        api_response_clear(&r);
        if (wait_ms(n, backoff))
            break;
        backoff = next_backoff(backoff);
    }
out:
    api_client_destroy(c);
    return NULL;
}

/* ------------------------------------------------------------------------ */
/* Calls on the thread pool                                                  */
/* ------------------------------------------------------------------------ */

struct call {
    uv_work_t work;
    struct node *n;
    char method[8];
    char path[512];
    json_t *body;
    node_call_cb cb;
    uint64_t cookie;
    int rv;
    struct api_response resp;
    char err[1024];
};

static void call_work(uv_work_t *w)
{
    struct call *k = w->data;
    struct node *n = k->n;
    struct api_client *c = NULL;

    pthread_mutex_lock(&n->mu);
    if (n->pool_len > 0)
        c = n->pool[--n->pool_len];
    pthread_mutex_unlock(&n->mu);
    if (!c && mgr_client_create(n, &c, k->err, sizeof(k->err)) != 0) {
        k->rv = DVS_EINTERNAL;
        return;
    }
    k->rv = api_client_request(c, k->method, k->path, k->body, (long)n->cfg.request_timeout_ms,
                               &k->resp, k->err, sizeof(k->err));
    pthread_mutex_lock(&n->mu);
    if (n->pool_len < sizeof(n->pool) / sizeof(n->pool[0])) {
        n->pool[n->pool_len++] = c;
        c = NULL;
    }
    pthread_mutex_unlock(&n->mu);
    api_client_destroy(c);
}

static void call_done(uv_work_t *w, int status)
{
    struct call *k = w->data;
    struct node *n = k->n;
    struct node_call_result res = {
        .rv = status == UV_ECANCELED ? DVS_ESHUTDOWN : k->rv,
        .status = k->resp.status,
        .body = k->resp.body,
        .index = k->resp.index,
        .err = k->err,
    };
    if (k->cb)
        k->cb(n, &res, k->cookie);
    api_response_clear(&k->resp);
    json_decref(k->body);
    free(k);
    if (n->stopping)
        node_maybe_finish_stop(n);
}

void node_call(struct node *n, const char *method, const char *path, json_t *body,
               node_call_cb cb, uint64_t cookie)
{
    struct call *k = xcalloc(1, sizeof(*k));
    k->n = n;
    snprintf(k->method, sizeof(k->method), "%s", method);
    snprintf(k->path, sizeof(k->path), "%s", path);
    k->body = body;
    k->cb = cb;
    k->cookie = cookie;
    k->work.data = k;
    int rv = uv_queue_work(&n->loop, &k->work, call_work, call_done);
    if (rv != 0) {
        /* Only with an invalid loop or callback: a bug. */
        log_error(COMP, "uv_queue_work: %s", uv_strerror(rv));
        abort();
    }
}

/* ------------------------------------------------------------------------ */
/* Start and stop                                                            */
/* ------------------------------------------------------------------------ */

int node_mgr_start(struct node *n)
{
    int rv = pthread_create(&n->hb_thread, NULL, hb_main, n);
    if (rv != 0)
        return -rv;
    n->hb_started = true;
    rv = pthread_create(&n->orders_thread, NULL, orders_main, n);
    if (rv != 0)
        return -rv;
    n->orders_started = true;
    return 0;
}

void node_mgr_stop(struct node *n)
{
    pthread_mutex_lock(&n->mu);
    n->stop_threads = true;
    pthread_cond_broadcast(&n->cond);
    pthread_mutex_unlock(&n->mu);
    if (n->hb_started) {
        pthread_join(n->hb_thread, NULL);
        n->hb_started = false;
    }
    if (n->orders_started) {
        /* The blocking query cannot be interrupted; it ends by its wait. Do
         * not hold the shut-down for it more than a moment: the process
         * exits under it, which is harmless for a GET. */
        struct timespec ts;
        clock_gettime(CLOCK_REALTIME, &ts);
        ts.tv_nsec += 100 * 1000000;
        if (ts.tv_nsec >= 1000000000) {
            ts.tv_sec++;
            ts.tv_nsec -= 1000000000;
        }
        if (pthread_timedjoin_np(n->orders_thread, NULL, &ts) == 0) {
            n->orders_started = false;
        } else {
            pthread_detach(n->orders_thread);
            n->orders_detached = true; /* it still uses *n: never free it */
        }
    }
    pthread_mutex_lock(&n->mu);
    while (n->pool_len > 0)
        api_client_destroy(n->pool[--n->pool_len]);
    pthread_mutex_unlock(&n->mu);
}
