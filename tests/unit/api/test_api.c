/*
 * Tests of api/: real api_servers on a libuv loop that runs in its own
 * thread, on 127.0.0.1 with ephemeral ports, and real HTTP requests against
 * them, through api_client and through raw libcurl where the test needs to
 * see headers or misbehave (chunked uploads, hanging up early).
 *
 * Handlers run on the loop thread. They never assert (cmocka's failures
 * longjmp on the test thread); they record what they saw in the fixture,
 * with atomics where the test thread polls for it.
 */
#include <errno.h>
#include <pthread.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <cmocka.h>
#include <curl/curl.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <sys/time.h>

#include "api/client.h"
#include "api/http.h"
#include "common/log.h"
#include "common/util.h"
#include "dvs.h"

#define MAX_BODY 1024

struct fixture {
    uv_loop_t loop;
    uv_async_t stop_async;
    pthread_t thread;
    struct api_server *srv;    /* the server under test */
    struct api_server *leader; /* where the follower routes redirect to */
    char base[64], leader_base[64];
    char dead_base[64]; /* set by a test before it asks for /v1/to-dead */

    /* Touched by the loop thread only. */
    bool srv_stopped;
    uint64_t noleader_t0;

    /* Read by the test thread. */
    atomic_int closed;       /* close callbacks run */
    atomic_int calls;        /* handler calls, for retry counting */
    atomic_int leader_calls; /* echo calls on the leader */
    atomic_int late_replies; /* replies made after the client left */
    atomic_bool srv_stop_done;
};

/* ------------------------------------------------------------------------ */
/* Handlers (loop thread)                                                    */
/* ------------------------------------------------------------------------ */

static json_t *str_or_null(const char *s)
{
    return s ? json_string(s) : json_null();
}

static void h_item(struct api_req *req, void *data)
{
    api_reply_json(req, 200,
                   json_pack("{s:o,s:o,s:b,s:s,s:s,s:s,s:s}", "id",
                             str_or_null(api_req_param(req, "id")), "q",
                             str_or_null(api_req_query(req, "q")), "flag",
                             api_req_has_query(req, "flag"), "method", api_req_method(req),
                             "path", api_req_path(req), "url", api_req_url(req), "peer",
                             api_req_peer(req)));
}

static void h_item_sub(struct api_req *req, void *data)
{
    api_reply_json(req, 200,
                   json_pack("{s:s,s:s}", "id", api_req_param(req, "id"), "sub",
                             api_req_param(req, "sub")));
}

static void h_list(struct api_req *req, void *data)
{
    api_reply_json(req, 200, json_pack("{s:[]}", "items"));
}

static const struct api_field item_fields[] = {
    {"name", API_J_STRING, true}, {"size", API_J_INT, false},    {"ratio", API_J_NUMBER, false},
    {"on", API_J_BOOL, false},    {"tags", API_J_ARRAY, false},  {"meta", API_J_OBJECT, false},
    {NULL, 0, false},
};

static void h_create(struct api_req *req, void *data)
{
    json_t *body = api_req_json(req, item_fields);
    if (!body)
        return; /* answered */
    api_reply_json(req, 201, body);
}

static const struct api_field no_required_fields[] = {
    {"note", API_J_STRING, false},
    {NULL, 0, false},
};

static void h_optional(struct api_req *req, void *data)
{
    json_t *body = api_req_json(req, no_required_fields);
    if (body)
        api_reply_json(req, 200, body);
}

static void h_size(struct api_req *req, void *data)
{
    size_t len;
    api_req_body(req, &len);
    api_reply_json(req, 200, json_pack("{s:I}", "len", (json_int_t)len));
}

static void h_headers(struct api_req *req, void *data)
{
    api_req_add_header(req, "X-A", "1");
    api_req_add_header(req, "X-Dvs-Index", "12345");
    const char *ua = api_req_header(req, "user-agent");
    api_reply_json(req, 200, json_pack("{s:o}", "ua", str_or_null(ua)));
}

static void h_text(struct api_req *req, void *data)
{
    api_reply_text(req, 200, NULL, "hello\n");
}

/* Echo on the leader. */
static void h_echo(struct api_req *req, void *data)
{
    struct fixture *f = data;
    size_t len;
    const char *body = api_req_body(req, &len);
    atomic_fetch_add(&f->leader_calls, 1);
    json_t *parsed = len ? json_loadb(body, len, 0, NULL) : json_null();
    api_reply_json(req, 200,
                   json_pack("{s:s,s:s,s:o}", "method", api_req_method(req), "url",
                             api_req_url(req), "body", parsed ? parsed : json_null()));
}

/* A follower: sends writes to the leader. */
static void h_redirect(struct api_req *req, void *data)
{
    struct fixture *f = data;
    api_reply_redirect(req, f->leader_base);
}

/* A member that believes it is not the leader and points back to itself. */
static void h_redirect_loop(struct api_req *req, void *data)
{
    struct fixture *f = data;
    api_reply_redirect(req, f->base);
}

/* -- Asynchronous replies -- */

struct later {
    uv_timer_t timer; /* first: freed through the handle */
    struct fixture *f;
    struct api_req *req; /* NULL once the client went away */
};

static void later_free(uv_handle_t *h)
{
    free(h);
}

static void later_closed(struct api_req *req, void *data)
{
    struct later *l = data;
    atomic_fetch_add(&l->f->closed, 1);
    l->req = NULL;
    uv_timer_stop(&l->timer);
    uv_close((uv_handle_t *)&l->timer, later_free);
}

static void later_fire(uv_timer_t *t)
{
    struct later *l = (struct later *)t;
    if (l->req) {
        /* Also for a request whose client left unseen (no close callback):
         * the header and the reply are dropped. */
        api_req_on_close(l->req, NULL, NULL);
        api_req_add_header(l->req, "X-Late", "1");
        api_reply_json(l->req, 200, json_pack("{s:b}", "late", 1));
        atomic_fetch_add(&l->f->late_replies, 1);
    }
    uv_close((uv_handle_t *)&l->timer, later_free);
}

static struct later *later_start(struct fixture *f, struct api_req *req, uint64_t ms,
                                 bool watch_close)
{
    struct later *l = xcalloc(1, sizeof(*l));
    l->f = f;
    l->req = req;
    uv_timer_init(&f->loop, &l->timer);
    uv_timer_start(&l->timer, later_fire, ms, 0);
    if (watch_close)
        api_req_on_close(req, later_closed, l);
    return l;
}

/* Answers 50 ms later. */
static void h_slow(struct api_req *req, void *data)
{
    later_start(data, req, 50, true);
}

/* Never answers by itself. */
static void held_closed(struct api_req *req, void *data)
{
    struct fixture *f = data;
    atomic_fetch_add(&f->closed, 1);
}

static void h_hold(struct api_req *req, void *data)
{
    api_req_on_close(req, held_closed, data);
}

/* Answers 300 ms later and sets no close callback. */
static void h_late_no_close(struct api_req *req, void *data)
{
    later_start(data, req, 300, false);
}

static void srv_stopped(void *data)
{
    struct fixture *f = data;
    atomic_store(&f->srv_stop_done, true);
}

static void stop_fire(uv_timer_t *t)
{
    struct fixture *f = t->data;
    f->srv_stopped = true;
    api_server_stop(f->srv, srv_stopped, f);
    uv_close((uv_handle_t *)t, later_free);
}

/* Holds the request and stops the server 100 ms later. */
static void h_hold_then_stop(struct api_req *req, void *data)
{
    struct fixture *f = data;
    api_req_on_close(req, held_closed, f);
    uv_timer_t *t = xcalloc(1, sizeof(*t));
    uv_timer_init(&f->loop, t);
    t->data = f;
    uv_timer_start(t, stop_fire, 100, 0);
}

/* -- Leadership -- */

/* no_leader for the first 300 ms after the first call, then an answer. */
static void h_noleader_then_ok(struct api_req *req, void *data)
{
    struct fixture *f = data;
    atomic_fetch_add(&f->calls, 1);
    uint64_t now = uv_now(&f->loop);
    if (!f->noleader_t0)
        f->noleader_t0 = now;
    if (now - f->noleader_t0 < 300) {
        api_reply_err(req, DVS_ENOLEADER, NULL, NULL);
        return;
    }
    api_req_add_header(req, "X-Dvs-Index", "42");
    api_reply_json(req, 200, json_pack("{s:b}", "ok", 1));
}

static void h_noleader(struct api_req *req, void *data)
{
    struct fixture *f = data;
    atomic_fetch_add(&f->calls, 1);
    api_reply_err(req, DVS_ENOLEADER, NULL, NULL);
}

static void h_count(struct api_req *req, void *data)
{
    struct fixture *f = data;
    atomic_fetch_add(&f->calls, 1);
    api_reply_json(req, 200, json_object());
}

static void h_huge(struct api_req *req, void *data)
{
    size_t n = (16u << 20) + 1;
    char *text = xmalloc(n + 1);
    memset(text, 'x', n);
    text[n] = '\0';
    api_reply_text(req, 200, NULL, text);
    free(text);
}

static void h_to_dead(struct api_req *req, void *data)
{
    struct fixture *f = data;
    api_reply_redirect(req, f->dead_base);
}

static void h_unknown_outcome(struct api_req *req, void *data)
{
    struct fixture *f = data;
    atomic_fetch_add(&f->calls, 1);
    api_reply_err(req, DVS_EUNKNOWNOUTCOME, NULL, "leadership was lost; retry");
}

static const struct api_route routes[] = {
    {"GET", "/v1/items", h_list},
    {"POST", "/v1/items", h_create},
    {"GET", "/v1/items/{id}", h_item},
    {"GET", "/v1/items/{id}/sub/{sub}", h_item_sub},
    {"POST", "/v1/optional", h_optional},
    {"POST", "/v1/size", h_size},
    {"GET", "/v1/headers", h_headers},
    {"GET", "/v1/text", h_text},
    {"POST", "/v1/redirect", h_redirect},
    {"PUT", "/v1/redirect", h_redirect},
    {"PATCH", "/v1/redirect", h_redirect},
    {"DELETE", "/v1/redirect", h_redirect},
    {"POST", "/v1/loop", h_redirect_loop},
    {"GET", "/v1/slow", h_slow},
    {"GET", "/v1/hold", h_hold},
    {"GET", "/v1/late-no-close", h_late_no_close},
    {"GET", "/v1/hold-then-stop", h_hold_then_stop},
    {"GET", "/v1/noleader-then-ok", h_noleader_then_ok},
    {"GET", "/v1/noleader", h_noleader},
    {"POST", "/v1/unknown-outcome", h_unknown_outcome},
    {"GET", "/v1/count", h_count},
    {"POST", "/v1/count", h_count},
    {"GET", "/v1/huge", h_huge},
    {"POST", "/v1/to-dead", h_to_dead},
    {NULL, NULL, NULL},
};

static const struct api_route leader_routes[] = {
    {"POST", "/v1/redirect", h_echo},
    {"PUT", "/v1/redirect", h_echo},
    {"PATCH", "/v1/redirect", h_echo},
    {"DELETE", "/v1/redirect", h_echo},
    {NULL, NULL, NULL},
};

/* ------------------------------------------------------------------------ */
/* Fixture                                                                   */
/* ------------------------------------------------------------------------ */

static void *loop_main(void *arg)
{
    struct fixture *f = arg;
    uv_run(&f->loop, UV_RUN_DEFAULT);
    return NULL;
}

static void on_stop_async(uv_async_t *a)
{
    struct fixture *f = a->data;
    if (!f->srv_stopped)
        api_server_stop(f->srv, NULL, NULL);
    api_server_stop(f->leader, NULL, NULL);
    uv_close((uv_handle_t *)a, NULL);
}

static int setup(void **state)
{
    struct fixture *f = xcalloc(1, sizeof(*f));
    struct api_server_config cfg = {.host = "127.0.0.1", .max_body = MAX_BODY};
    if (uv_loop_init(&f->loop) != 0)
        return -1;
    if (api_server_start(&f->loop, &cfg, routes, f, &f->srv) != 0 ||
        api_server_start(&f->loop, &cfg, leader_routes, f, &f->leader) != 0)
        return -1;
    snprintf(f->base, sizeof(f->base), "http://127.0.0.1:%u", api_server_port(f->srv));
    snprintf(f->leader_base, sizeof(f->leader_base), "http://127.0.0.1:%u",
             api_server_port(f->leader));
    uv_async_init(&f->loop, &f->stop_async, on_stop_async);
    f->stop_async.data = f;
    if (pthread_create(&f->thread, NULL, loop_main, f) != 0)
        return -1;
    *state = f;
    return 0;
}

/* The same two servers, both with tokens (api/auth.h). */
static const struct api_tokens test_tokens = {
    .management = "mgmt-token-0123456789",
    .read = "read-token-0123456789",
    .agent = "agent-token-0123456789",
};

static const struct api_route token_routes[] = {
    {"GET", "/v1/count", h_count},
    {"POST", "/v1/count", h_count},
    {"PATCH", "/v1/agent", h_count, API_ACCESS_AGENT},
    {"POST", "/v1/redirect", h_redirect},
    {NULL, NULL, NULL},
};

static int setup_tokens(void **state)
{
    struct fixture *f = xcalloc(1, sizeof(*f));
    struct api_server_config cfg = {.host = "127.0.0.1", .max_body = MAX_BODY,
                                    .tokens = &test_tokens};
    if (uv_loop_init(&f->loop) != 0)
        return -1;
    if (api_server_start(&f->loop, &cfg, token_routes, f, &f->srv) != 0 ||
        api_server_start(&f->loop, &cfg, leader_routes, f, &f->leader) != 0)
        return -1;
    snprintf(f->base, sizeof(f->base), "http://127.0.0.1:%u", api_server_port(f->srv));
    snprintf(f->leader_base, sizeof(f->leader_base), "http://127.0.0.1:%u",
             api_server_port(f->leader));
    uv_async_init(&f->loop, &f->stop_async, on_stop_async);
    f->stop_async.data = f;
    if (pthread_create(&f->thread, NULL, loop_main, f) != 0)
        return -1;
    *state = f;
    return 0;
}

static int teardown(void **state)
{
    struct fixture *f = *state;
    uv_async_send(&f->stop_async);
    pthread_join(f->thread, NULL);
    /* Every handle (servers, watches, timers) must be closed by now. */
    int rv = uv_loop_close(&f->loop);
    free(f);
    return rv == 0 ? 0 : -1;
}

/* ------------------------------------------------------------------------ */
/* Helpers (test thread)                                                     */
/* ------------------------------------------------------------------------ */

/* A request through api_client against one base URL list; asserts it got an answer. */
static void call(const char *urls, const char *method, const char *path, json_t *body,
                 struct api_response *r)
{
    struct api_client *c;
    char err[512];
    assert_int_equal(api_client_create(urls, &c, err, sizeof(err)), 0);
    int rv = api_client_request(c, method, path, body, 5000, r, err, sizeof(err));
    if (rv)
        fail_msg("%s %s: %s: %s", method, path, dvs_strerror(rv), err);
    api_client_destroy(c);
}

/* As call(), with TOKEN (NULL: none) set on the client. */
static void call_token(const char *urls, const char *token, const char *method,
                       const char *path, json_t *body, struct api_response *r)
{
    struct api_client *c;
    char err[512];
    assert_int_equal(api_client_create(urls, &c, err, sizeof(err)), 0);
    if (token)
        assert_int_equal(api_client_set_token(c, token), 0);
    int rv = api_client_request(c, method, path, body, 5000, r, err, sizeof(err));
    if (rv)
        fail_msg("%s %s: %s: %s", method, path, dvs_strerror(rv), err);
    api_client_destroy(c);
}

static const char *code_of(const struct api_response *r)
{
    const char *c = json_string_value(json_object_get(r->body, "code"));
    return c ? c : "(none)";
}

/* POST a raw body (not necessarily JSON) and return the answer. */
struct raw {
    CURLcode cc;
    long status;
    char body[8192];
    size_t len;
    json_t *json;
    char allow[128], ctype[128], retry_after[32], x_a[32];
};

static size_t raw_write(char *p, size_t size, size_t n, void *ud)
{
    struct raw *r = ud;
    size_t len = size * n;
    if (len > sizeof(r->body) - 1 - r->len)
        len = sizeof(r->body) - 1 - r->len;
    memcpy(r->body + r->len, p, len);
    r->len += len;
    r->body[r->len] = '\0';
    return size * n;
}

struct chunked_src {
    size_t left;
};

static size_t chunked_read(char *buf, size_t size, size_t n, void *ud)
{
    struct chunked_src *src = ud;
    size_t len = size * n < src->left ? size * n : src->left;
    memset(buf, 'x', len);
    src->left -= len;
    return len;
}

static void copy_header(CURL *h, const char *name, char *out, size_t outlen)
{
    struct curl_header *hd;
    out[0] = '\0';
    if (curl_easy_header(h, name, 0, CURLH_HEADER, -1, &hd) == CURLHE_OK)
        snprintf(out, outlen, "%s", hd->value);
}

/*
 * METHOD URL with BODY (LEN bytes, or a chunked upload of CHUNKED bytes when
 * BODY is NULL and CHUNKED > 0), giving up after TIMEOUT_MS.
 */
static void raw_request(struct raw *r, const char *method, const char *url, const char *body,
                        size_t len, size_t chunked, long timeout_ms)
{
    memset(r, 0, sizeof(*r));
    CURL *h = curl_easy_init();
    struct curl_slist *hdrs = curl_slist_append(NULL, "Expect:");
    struct chunked_src src = {chunked};
    curl_easy_setopt(h, CURLOPT_URL, url);
    curl_easy_setopt(h, CURLOPT_NOSIGNAL, 1L);
    curl_easy_setopt(h, CURLOPT_TIMEOUT_MS, timeout_ms);
    curl_easy_setopt(h, CURLOPT_WRITEFUNCTION, raw_write);
    curl_easy_setopt(h, CURLOPT_WRITEDATA, r);
    if (body) {
        curl_easy_setopt(h, CURLOPT_POSTFIELDS, body);
        curl_easy_setopt(h, CURLOPT_POSTFIELDSIZE_LARGE, (curl_off_t)len);
    } else if (chunked) {
        hdrs = curl_slist_append(hdrs, "Transfer-Encoding: chunked");
        curl_easy_setopt(h, CURLOPT_POST, 1L);
        curl_easy_setopt(h, CURLOPT_READFUNCTION, chunked_read);
        curl_easy_setopt(h, CURLOPT_READDATA, &src);
    }
    curl_easy_setopt(h, CURLOPT_HTTPHEADER, hdrs);
    curl_easy_setopt(h, CURLOPT_CUSTOMREQUEST, method);
    r->cc = curl_easy_perform(h);
    curl_easy_getinfo(h, CURLINFO_RESPONSE_CODE, &r->status);
    copy_header(h, "Allow", r->allow, sizeof(r->allow));
    copy_header(h, "Content-Type", r->ctype, sizeof(r->ctype));
    copy_header(h, "Retry-After", r->retry_after, sizeof(r->retry_after));
    copy_header(h, "X-A", r->x_a, sizeof(r->x_a));
    r->json = json_loadb(r->body, r->len, 0, NULL);
    curl_slist_free_all(hdrs);
    curl_easy_cleanup(h);
}

static const char *jstr(json_t *o, const char *key)
{
    return json_string_value(json_object_get(o, key));
}

/* Poll an atomic counter until it reaches WANT or 3 s pass. */
static int wait_count(atomic_int *v, int want)
{
    for (int i = 0; i < 300 && atomic_load(v) < want; i++)
        usleep(10 * 1000);
    return atomic_load(v);
}

/*
 * Send RAW on a fresh connection to PORT and read the answer until the
 * server closes or 2 s pass. Returns the HTTP status of the answer, 0 if none.
 */
static int raw_exchange(uint16_t port, const char *raw, size_t len, char *out, size_t outlen)
{
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    struct sockaddr_in in = {.sin_family = AF_INET,
                             .sin_port = htons(port),
                             .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    struct timeval tv = {.tv_sec = 2};
    setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof(tv));
    assert_int_equal(connect(fd, (struct sockaddr *)&in, sizeof(in)), 0);
    for (size_t off = 0; off < len;) {
        ssize_t n = send(fd, raw + off, len - off, MSG_NOSIGNAL);
        if (n <= 0)
            break; /* the server may close early: that is what some tests check */
        off += (size_t)n;
    }
    size_t got = 0;
    ssize_t n;
    while (got < outlen - 1 && (n = recv(fd, out + got, outlen - 1 - got, 0)) > 0)
        got += (size_t)n;
    out[got] = '\0';
    close(fd);
    int status = 0;
    sscanf(out, "HTTP/1.%*d %d", &status);
    return status;
}

/*
 * A "rude" server: accepts connections, reads the request head, and hangs up
 * without answering, as a member that crashes mid-request would.
 */
struct rude {
    int fd;
    uint16_t port;
    pthread_t thread;
    atomic_int accepted;
};

static void *rude_main(void *arg)
{
    struct rude *r = arg;
    for (;;) {
        int c = accept(r->fd, NULL, NULL);
        if (c < 0)
            return NULL; /* shut down */
        atomic_fetch_add(&r->accepted, 1);
        struct timeval tv = {.tv_usec = 200 * 1000};
        setsockopt(c, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof(tv));
        char buf[4096];
        size_t got = 0;
        ssize_t n;
        while (got < sizeof(buf) - 1 && (n = recv(c, buf + got, sizeof(buf) - 1 - got, 0)) > 0) {
            got += (size_t)n;
            buf[got] = '\0';
            if (strstr(buf, "\r\n\r\n"))
                break;
        }
        close(c);
    }
}

static void rude_start(struct rude *r)
{
    struct sockaddr_in in = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    socklen_t len = sizeof(in);
    r->fd = socket(AF_INET, SOCK_STREAM, 0);
    assert_int_equal(bind(r->fd, (struct sockaddr *)&in, sizeof(in)), 0);
    assert_int_equal(listen(r->fd, 16), 0);
    assert_int_equal(getsockname(r->fd, (struct sockaddr *)&in, &len), 0);
    r->port = ntohs(in.sin_port);
    atomic_init(&r->accepted, 0);
    assert_int_equal(pthread_create(&r->thread, NULL, rude_main, r), 0);
}

static void rude_stop(struct rude *r)
{
    shutdown(r->fd, SHUT_RDWR); /* wakes accept() */
    pthread_join(r->thread, NULL);
    close(r->fd);
}

/* A port on which nothing listens: bound, then closed. */
static uint16_t dead_port(void)
{
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    struct sockaddr_in in = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    socklen_t len = sizeof(in);
    assert_int_equal(bind(fd, (struct sockaddr *)&in, sizeof(in)), 0);
    assert_int_equal(getsockname(fd, (struct sockaddr *)&in, &len), 0);
    close(fd);
    return ntohs(in.sin_port);
}

/* ------------------------------------------------------------------------ */
/* Error table and server life cycle                                         */
/* ------------------------------------------------------------------------ */

static void err_table_maps_codes_to_http_status_and_json_code(void **state)
{
    static const struct {
        int err;
        unsigned status;
        const char *code;
    } cases[] = {
        {DVS_EBADREQUEST, 400, "bad_request"},  {-EINVAL, 400, "bad_request"},
        {DVS_ENOTFOUND, 404, "not_found"},      {-ENOENT, 404, "not_found"},
        {DVS_EEXISTS, 409, "exists"},           {DVS_ECONFLICT, 409, "conflict"},
        {DVS_ESTALEGEN, 409, "conflict"},       {DVS_ETOOBIG, 413, "too_large"},
        {DVS_ENOLEADER, 503, "no_leader"},      {DVS_ENOTLEADER, 503, "no_leader"},
        {DVS_ENOSPACE, 503, "no_space"},        {DVS_ESHUTDOWN, 503, "shutdown"},
        {DVS_EUNKNOWNOUTCOME, 503, "unknown_outcome"}, {DVS_ETIMEOUT, 504, "timeout"},
        {DVS_EINTERNAL, 500, "internal"},       {-ENOMEM, 500, "internal"},
        {DVS_EMOVED, 500, "internal"},
    };
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        assert_int_equal(api_err_status(cases[i].err), cases[i].status);
        assert_string_equal(api_err_code(cases[i].err), cases[i].code);
    }
}

static void stopped_flag(void *data)
{
    *(bool *)data = true;
}

static void server_binds_ephemeral_port_and_reports_bind_errors(void **state)
{
    uv_loop_t loop;
    struct api_server *a, *b;
    bool a_done = false, b_done = false;
    assert_int_equal(uv_loop_init(&loop), 0);

    struct api_server_config cfg = {.host = "localhost"};
    assert_int_equal(api_server_start(&loop, &cfg, routes, NULL, &a), 0);
    assert_int_not_equal(api_server_port(a), 0);

    struct api_server_config same = {.host = "127.0.0.1", .port = api_server_port(a)};
    assert_int_equal(api_server_start(&loop, &same, routes, NULL, &b), -EADDRINUSE);
    struct api_server_config bad = {.host = "not-an-address"};
    assert_int_equal(api_server_start(&loop, &bad, routes, NULL, &b), -EINVAL);
    struct api_server_config none = {.host = NULL};
    assert_int_equal(api_server_start(&loop, &none, routes, NULL, &b), -EINVAL);

    /* IPv6 loopback, where the host has it. */
    struct api_server_config v6 = {.host = "::1"};
    int rv = api_server_start(&loop, &v6, routes, NULL, &b);
    if (rv == 0)
        api_server_stop(b, stopped_flag, &b_done);
    else
        b_done = true;

    api_server_stop(a, stopped_flag, &a_done);
    api_server_stop(NULL, NULL, NULL); /* accepted */
    uv_run(&loop, UV_RUN_DEFAULT);
    assert_true(a_done);
    assert_true(b_done);
    assert_int_equal(uv_loop_close(&loop), 0);
}

/* ------------------------------------------------------------------------ */
/* Routing                                                                   */
/* ------------------------------------------------------------------------ */

static void routes_match_params_and_decode_path_and_query(void **state)
{
    struct fixture *f = *state;
    struct api_response r;
    call(f->base, "GET", "/v1/items/a%20b?q=x%2By+z&flag", NULL, &r);
    assert_int_equal(r.status, 200);
    assert_string_equal(jstr(r.body, "id"), "a b");
    assert_string_equal(jstr(r.body, "q"), "x+y z");
    assert_true(json_is_true(json_object_get(r.body, "flag")));
    assert_string_equal(jstr(r.body, "method"), "GET");
    assert_string_equal(jstr(r.body, "path"), "/v1/items/a%20b");
    assert_string_equal(jstr(r.body, "url"), "/v1/items/a%20b?q=x%2By+z&flag");
    assert_memory_equal(jstr(r.body, "peer"), "127.0.0.1:", 10);
    api_response_clear(&r);

    call(f->base, "GET", "/v1/items/n1/sub/s%C3%A9", NULL, &r);
    assert_int_equal(r.status, 200);
    assert_string_equal(jstr(r.body, "id"), "n1");
    assert_string_equal(jstr(r.body, "sub"), "s\xc3\xa9");
    api_response_clear(&r);

    /* No query at all: absent values, not empty ones. */
    call(f->base, "GET", "/v1/items/x", NULL, &r);
    assert_true(json_is_null(json_object_get(r.body, "q")));
    assert_true(json_is_false(json_object_get(r.body, "flag")));
    api_response_clear(&r);
}

static void path_param_with_encoded_slash_or_nul_is_rejected(void **state)
{
    struct fixture *f = *state;
    static const char *paths[] = {"/v1/items/a%2Fb", "/v1/items/a%00b", "/v1/items/a%zz",
                                  "/v1/items/a%2"};
    for (size_t i = 0; i < sizeof(paths) / sizeof(paths[0]); i++) {
        struct api_response r;
        call(f->base, "GET", paths[i], NULL, &r);
        assert_int_equal(r.status, 400);
        assert_string_equal(jstr(r.body, "code"), "bad_request");
        assert_string_equal(jstr(r.body, "field"), "id");
        api_response_clear(&r);
    }
    struct api_response r;
    call(f->base, "GET", "/v1/items/x?q=%00", NULL, &r);
    assert_int_equal(r.status, 400);
    assert_non_null(strstr(jstr(r.body, "error"), "q=%00"));
    api_response_clear(&r);
}

static void unknown_route_is_404_and_wrong_method_is_405_with_allow(void **state)
{
    struct fixture *f = *state;
    struct raw r;
    char url[128];

    snprintf(url, sizeof(url), "%s/v1/nothing", f->base);
    raw_request(&r, "GET", url, NULL, 0, 0, 5000);
    assert_int_equal(r.status, 404);
    assert_string_equal(jstr(r.json, "code"), "not_found");
    assert_non_null(strstr(jstr(r.json, "error"), "/v1/nothing"));
    json_decref(r.json);

    /* A trailing slash is another path. */
    snprintf(url, sizeof(url), "%s/v1/items/", f->base);
    raw_request(&r, "GET", url, NULL, 0, 0, 5000);
    assert_int_equal(r.status, 404);
    json_decref(r.json);

    snprintf(url, sizeof(url), "%s/v1/items", f->base);
    raw_request(&r, "DELETE", url, NULL, 0, 0, 5000);
    assert_int_equal(r.status, 405);
    assert_string_equal(jstr(r.json, "code"), "method_not_allowed");
    assert_string_equal(r.allow, "GET, POST");
    assert_string_equal(r.ctype, "application/json");
    json_decref(r.json);
}

static void replies_carry_added_headers_and_json_ends_with_newline(void **state)
{
    struct fixture *f = *state;
    struct raw r;
    char url[128];
    snprintf(url, sizeof(url), "%s/v1/headers", f->base);
    raw_request(&r, "GET", url, NULL, 0, 0, 5000);
    assert_int_equal(r.status, 200);
    assert_string_equal(r.x_a, "1");
    assert_string_equal(r.ctype, "application/json");
    assert_true(r.len > 1 && r.body[r.len - 1] == '\n' && r.body[0] == '{');
    assert_null(strchr(r.body, ' ')); /* compact */
    json_decref(r.json);

    snprintf(url, sizeof(url), "%s/v1/text", f->base);
    raw_request(&r, "GET", url, NULL, 0, 0, 5000);
    assert_int_equal(r.status, 200);
    assert_string_equal(r.ctype, "text/plain; charset=utf-8");
    assert_string_equal(r.body, "hello\n");
}

/* ------------------------------------------------------------------------ */
/* Bodies                                                                    */
/* ------------------------------------------------------------------------ */

static void body_over_limit_is_413_and_body_at_limit_is_accepted(void **state)
{
    struct fixture *f = *state;
    char url[128], body[MAX_BODY + 1];
    struct raw r;
    memset(body, 'x', sizeof(body));
    snprintf(url, sizeof(url), "%s/v1/size", f->base);

    raw_request(&r, "POST", url, body, MAX_BODY, 0, 5000);
    assert_int_equal(r.status, 200);
    assert_int_equal(json_integer_value(json_object_get(r.json, "len")), MAX_BODY);
    json_decref(r.json);

    raw_request(&r, "POST", url, body, MAX_BODY + 1, 0, 5000);
    assert_int_equal(r.status, 413);
    assert_string_equal(jstr(r.json, "code"), "too_large");
    json_decref(r.json);

    /* Chunked: no Content-Length to refuse early, the limit applies as it comes. */
    raw_request(&r, "POST", url, NULL, 0, 4 * MAX_BODY, 5000);
    assert_int_equal(r.status, 413);
    assert_string_equal(jstr(r.json, "code"), "too_large");
    json_decref(r.json);
    raw_request(&r, "POST", url, NULL, 0, MAX_BODY / 2, 5000);
    assert_int_equal(r.status, 200);
    assert_int_equal(json_integer_value(json_object_get(r.json, "len")), MAX_BODY / 2);
    json_decref(r.json);
}

static void body_over_limit_is_refused_before_it_is_sent(void **state)
{
    struct fixture *f = *state;
    char out[4096];
    /* Announces 100 MB and sends none of it: the answer must not wait. */
    const char *req = "POST /v1/size HTTP/1.1\r\nHost: x\r\nContent-Length: 100000000\r\n"
                      "Content-Type: application/json\r\n\r\n";
    int64_t t0 = now_mono_ms();
    assert_int_equal(raw_exchange(api_server_port(f->srv), req, strlen(req), out, sizeof(out)),
                     413);
    assert_true(now_mono_ms() - t0 < 1000);
    assert_non_null(strstr(out, "\"code\":\"too_large\""));
}

static void requests_refused_by_libmicrohttpd_are_freed(void **state)
{
    struct fixture *f = *state;
    char out[4096];
    /* Headers over MHD's per-connection memory: MHD answers on its own. */
    size_t big = 64 * 1024;
    char *req = xmalloc(big + 128);
    int n = snprintf(req, big + 128, "GET /v1/items HTTP/1.1\r\nHost: x\r\nX-Big: ");
    memset(req + n, 'a', big);
    memcpy(req + n + big, "\r\n\r\n", 4);
    int status = raw_exchange(api_server_port(f->srv), req, (size_t)n + big + 4, out, sizeof(out));
    assert_true(status == 0 || status >= 400);
    free(req);

    /* Not HTTP at all, and a request cut short. */
    raw_exchange(api_server_port(f->srv), "garbage\r\n\r\n", 11, out, sizeof(out));
    const char *cut = "POST /v1/size HTTP/1.1\r\nHost: x\r\nContent-Length: 10\r\n\r\nabc";
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    struct sockaddr_in in = {.sin_family = AF_INET,
                             .sin_port = htons(api_server_port(f->srv)),
                             .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    assert_int_equal(connect(fd, (struct sockaddr *)&in, sizeof(in)), 0);
    assert_int_equal(send(fd, cut, strlen(cut), MSG_NOSIGNAL), (ssize_t)strlen(cut));
    usleep(50 * 1000);
    close(fd);

    /* The server goes on serving; ASan's leak check covers the rest. */
    struct api_response r;
    call(f->base, "GET", "/v1/items", NULL, &r);
    assert_int_equal(r.status, 200);
    api_response_clear(&r);
}

static void endless_chunked_upload_is_cut_off(void **state)
{
    struct fixture *f = *state;
    char url[128];
    struct raw r;
    snprintf(url, sizeof(url), "%s/v1/size", f->base);
    raw_request(&r, "POST", url, NULL, 0, 64u << 20, 10000);
    assert_int_not_equal(r.status, 200);
    json_decref(r.json);

    /* The server is fine afterwards. */
    struct api_response ok;
    call(f->base, "GET", "/v1/items", NULL, &ok);
    assert_int_equal(ok.status, 200);
    api_response_clear(&ok);
}

/* POST RAW to /v1/items; returns the answer's JSON (caller decrefs). */
static json_t *post_items(struct fixture *f, const char *raw, size_t len, long *ret_status)
{
    char url[128];
    struct raw r;
    snprintf(url, sizeof(url), "%s/v1/items", f->base);
    raw_request(&r, "POST", url, raw, len, 0, 5000);
    *ret_status = r.status;
    return r.json;
}

static void json_unknown_field_is_400_naming_it_and_the_accepted_fields(void **state)
{
    long status;
    const char *b = "{\"name\":\"a\",\"colour\":\"red\"}";
    json_t *j = post_items(*state, b, strlen(b), &status);
    assert_int_equal(status, 400);
    assert_string_equal(jstr(j, "code"), "bad_request");
    assert_string_equal(jstr(j, "field"), "colour");
    assert_non_null(strstr(jstr(j, "error"), "\"colour\""));
    assert_non_null(strstr(jstr(j, "error"), "name, size, ratio, on, tags, meta"));
    json_decref(j);
}

static void json_wrong_type_is_400_naming_the_expected_type(void **state)
{
    static const struct {
        const char *body, *field, *expect;
    } cases[] = {
        {"{\"name\":1}", "name", "must be a string, not an integer"},
        {"{\"name\":\"a\",\"size\":1.5}", "size", "must be an integer, not a non-integer"},
        {"{\"name\":\"a\",\"ratio\":\"1\"}", "ratio", "must be a number, not a string"},
        {"{\"name\":\"a\",\"on\":null}", "on", "must be a boolean, not null"},
        {"{\"name\":\"a\",\"tags\":{}}", "tags", "must be an array, not an object"},
        {"{\"name\":\"a\",\"meta\":[]}", "meta", "must be an object, not an array"},
    };
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        long status;
        json_t *j = post_items(*state, cases[i].body, strlen(cases[i].body), &status);
        assert_int_equal(status, 400);
        assert_string_equal(jstr(j, "field"), cases[i].field);
        if (!strstr(jstr(j, "error"), cases[i].expect))
            fail_msg("%s: got \"%s\"", cases[i].body, jstr(j, "error"));
        json_decref(j);
    }
    /* A number field takes integers too. */
    long status;
    const char *ok = "{\"name\":\"a\",\"ratio\":2,\"size\":3,\"on\":true,\"tags\":[],\"meta\":{}}";
    json_t *j = post_items(*state, ok, strlen(ok), &status);
    assert_int_equal(status, 201);
    assert_int_equal(json_integer_value(json_object_get(j, "ratio")), 2);
    json_decref(j);
}

static void json_syntax_error_is_400_with_line_and_column(void **state)
{
    long status;
    const char *b = "{\n  \"name\": \"a\",\n  \"size\": 1,,\n}";
    json_t *j = post_items(*state, b, strlen(b), &status);
    assert_int_equal(status, 400);
    assert_string_equal(jstr(j, "code"), "bad_request");
    if (!strstr(jstr(j, "error"), "line 3, column"))
        fail_msg("got \"%s\"", jstr(j, "error"));
    json_decref(j);

    const char *arr = "[1,2]";
    j = post_items(*state, arr, strlen(arr), &status);
    assert_int_equal(status, 400);
    assert_non_null(strstr(jstr(j, "error"), "must be a JSON object"));
    json_decref(j);

    const char *trailing = "{\"name\":\"a\"} x";
    j = post_items(*state, trailing, strlen(trailing), &status);
    assert_int_equal(status, 400);
    json_decref(j);
}

static void json_duplicate_keys_bad_utf8_and_nul_are_400(void **state)
{
    long status;
    const char *dup = "{\"name\":\"a\",\"name\":\"b\"}";
    json_t *j = post_items(*state, dup, strlen(dup), &status);
    assert_int_equal(status, 400);
    assert_non_null(strstr(jstr(j, "error"), "duplicate"));
    json_decref(j);

    const char *utf8 = "{\"name\":\"\xff\xfe\"}";
    j = post_items(*state, utf8, strlen(utf8), &status);
    assert_int_equal(status, 400);
    assert_non_null(strstr(jstr(j, "error"), "UTF-8"));
    json_decref(j);

    const char *nul = "{\"name\":\"a\\u0000b\"}";
    j = post_items(*state, nul, strlen(nul), &status);
    assert_int_equal(status, 400);
    assert_non_null(strstr(jstr(j, "error"), "NUL"));
    json_decref(j);

    const char raw_nul[] = "{\"name\":\"a\"}\0";
    j = post_items(*state, raw_nul, sizeof(raw_nul) - 1, &status);
    assert_int_equal(status, 400);
    json_decref(j);
}

static void json_missing_required_field_is_400_and_empty_body_is_empty_object(void **state)
{
    struct fixture *f = *state;
    long status;
    json_t *j = post_items(f, "{}", 2, &status);
    assert_int_equal(status, 400);
    assert_string_equal(jstr(j, "field"), "name");
    assert_non_null(strstr(jstr(j, "error"), "missing required field \"name\""));
    json_decref(j);

    j = post_items(f, "", 0, &status);
    assert_int_equal(status, 400);
    assert_string_equal(jstr(j, "field"), "name");
    json_decref(j);

    struct api_response r;
    call(f->base, "POST", "/v1/optional", NULL, &r);
    assert_int_equal(r.status, 200);
    assert_true(json_is_object(r.body));
    assert_int_equal(json_object_size(r.body), 0);
    api_response_clear(&r);

    const char *ok = "{\"name\":\"n\",\"tags\":[\"x\"]}";
    j = post_items(f, ok, strlen(ok), &status);
    assert_int_equal(status, 201);
    assert_string_equal(jstr(j, "name"), "n");
    json_decref(j);
}

/* ------------------------------------------------------------------------ */
/* Asynchronous replies, hang-ups and stopping                               */
/* ------------------------------------------------------------------------ */

static void async_reply_after_a_timer_is_delivered(void **state)
{
    struct fixture *f = *state;
    int64_t t0 = now_mono_ms();
    struct api_response r;
    call(f->base, "GET", "/v1/slow", NULL, &r);
    assert_int_equal(r.status, 200);
    assert_true(json_is_true(json_object_get(r.body, "late")));
    assert_true(now_mono_ms() - t0 >= 45);
    api_response_clear(&r);
    assert_int_equal(atomic_load(&f->closed), 0);

    /* Several at once on separate connections, answered in any order. */
    struct raw rs;
    char url[128];
    snprintf(url, sizeof(url), "%s/v1/slow", f->base);
    raw_request(&rs, "GET", url, NULL, 0, 0, 5000);
    assert_int_equal(rs.status, 200);
    json_decref(rs.json);
}

static void client_hanging_up_before_async_reply_runs_close_callback(void **state)
{
    struct fixture *f = *state;
    struct raw r;
    char url[128];
    snprintf(url, sizeof(url), "%s/v1/hold", f->base);
    raw_request(&r, "GET", url, NULL, 0, 0, 200);
    assert_int_equal(r.cc, CURLE_OPERATION_TIMEDOUT);
    assert_int_equal(wait_count(&f->closed, 1), 1);

    /* The server goes on serving. */
    struct api_response ok;
    call(f->base, "GET", "/v1/items", NULL, &ok);
    assert_int_equal(ok.status, 200);
    api_response_clear(&ok);
}

static void late_reply_without_close_callback_after_hang_up_is_dropped(void **state)
{
    struct fixture *f = *state;
    struct raw r;
    char url[128];
    snprintf(url, sizeof(url), "%s/v1/late-no-close", f->base);
    raw_request(&r, "GET", url, NULL, 0, 0, 100);
    assert_int_equal(r.cc, CURLE_OPERATION_TIMEDOUT);
    /* The handler replies 300 ms in, to a request whose client is gone. */
    assert_int_equal(wait_count(&f->late_replies, 1), 1);
    struct api_response ok;
    call(f->base, "GET", "/v1/items", NULL, &ok);
    assert_int_equal(ok.status, 200);
    api_response_clear(&ok);
}

static void server_stop_answers_held_requests_503_shutdown(void **state)
{
    struct fixture *f = *state;
    struct api_response r;
    call(f->base, "GET", "/v1/hold-then-stop", NULL, &r);
    assert_int_equal(r.status, 503);
    assert_string_equal(jstr(r.body, "code"), "shutdown");
    api_response_clear(&r);
    /* The owner is told, so that it forgets the request. */
    assert_int_equal(atomic_load(&f->closed), 1);

    for (int i = 0; i < 300 && !atomic_load(&f->srv_stop_done); i++)
        usleep(10 * 1000);
    assert_true(atomic_load(&f->srv_stop_done));

    /* Nobody listens any more. */
    struct api_client *c;
    char err[512];
    assert_int_equal(api_client_create(f->base, &c, err, sizeof(err)), 0);
    assert_int_equal(api_client_request(c, "GET", "/v1/items", NULL, 2000, &r, err, sizeof(err)),
                     DVS_EUNAVAILABLE);
    assert_non_null(strstr(err, "connection refused"));
    api_client_destroy(c);
}

/* ------------------------------------------------------------------------ */
/* Client                                                                    */
/* ------------------------------------------------------------------------ */

static void client_rejects_malformed_url_lists(void **state)
{
    static const char *bad[] = {"", "127.0.0.1:7001", "http://", "http://a,,http://b",
                                "ftp://x", "http://a b"};
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        struct api_client *c = NULL;
        char err[256];
        assert_int_equal(api_client_create(bad[i], &c, err, sizeof(err)), -EINVAL);
        assert_true(err[0] != '\0');
        assert_null(c);
    }
    struct api_client *c;
    char err[256];
    assert_int_equal(api_client_create(" http://a:1/ , https://b:2", &c, err, sizeof(err)), 0);
    api_client_destroy(c);
    api_client_destroy(NULL);
}

static void client_fails_over_from_dead_url_to_live_one(void **state)
{
    struct fixture *f = *state;
    char urls[256], dead[64], err[512];
    snprintf(dead, sizeof(dead), "http://127.0.0.1:%u", dead_port());
    snprintf(urls, sizeof(urls), "%s,%s", dead, f->base);

    struct api_client *c;
    struct api_response r;
    assert_int_equal(api_client_create(urls, &c, err, sizeof(err)), 0);
    assert_int_equal(api_client_request(c, "GET", "/v1/items", NULL, 5000, &r, err, sizeof(err)),
                     0);
    assert_int_equal(r.status, 200);
    assert_string_equal(r.url, f->base);
    assert_string_equal(err, "");
    api_response_clear(&r);
    /* Reused: the connection and the knowledge of which URL works. */
    assert_int_equal(api_client_request(c, "GET", "/v1/items", NULL, 5000, &r, err, sizeof(err)),
                     0);
    assert_string_equal(r.url, f->base);
    api_response_clear(&r);
    api_client_destroy(c);

    /* Every URL dead: the error says what each one did. */
    char dead2[64];
    snprintf(dead2, sizeof(dead2), "http://127.0.0.1:%u", dead_port());
    snprintf(urls, sizeof(urls), "%s,%s", dead, dead2);
    assert_int_equal(api_client_create(urls, &c, err, sizeof(err)), 0);
    assert_int_equal(api_client_request(c, "GET", "/v1/items", NULL, 5000, &r, err, sizeof(err)),
                     DVS_EUNAVAILABLE);
    assert_int_equal(r.status, 0);
    assert_null(r.raw);
    char want[256];
    snprintf(want, sizeof(want), "%s: connection refused; %s: connection refused", dead, dead2);
    assert_string_equal(err, want);
    api_client_destroy(c);
}

static void redirect_307_is_followed_with_method_and_body(void **state)
{
    struct fixture *f = *state;
    static const char *methods[] = {"POST", "PUT", "PATCH", "DELETE"};
    for (size_t i = 0; i < sizeof(methods) / sizeof(methods[0]); i++) {
        json_t *body = json_pack("{s:s,s:i}", "name", methods[i], "n", (int)i);
        struct api_response r;
        call(f->base, methods[i], "/v1/redirect?x=1", body, &r);
        assert_int_equal(r.status, 200);
        assert_string_equal(jstr(r.body, "method"), methods[i]);
        assert_string_equal(jstr(r.body, "url"), "/v1/redirect?x=1");
        assert_true(json_equal(json_object_get(r.body, "body"), body));
        assert_string_equal(r.url, f->leader_base);
        api_response_clear(&r);
        json_decref(body);
    }
    assert_int_equal(atomic_load(&f->leader_calls), 4);
}

static void redirect_to_an_unreachable_leader_says_so(void **state)
{
    struct fixture *f = *state;
    struct api_client *c;
    struct api_response r;
    char err[512], want[256];
    snprintf(f->dead_base, sizeof(f->dead_base), "http://127.0.0.1:%u", dead_port());
    assert_int_equal(api_client_create(f->base, &c, err, sizeof(err)), 0);
    assert_int_equal(
        api_client_request(c, "POST", "/v1/to-dead", NULL, 2000, &r, err, sizeof(err)),
        DVS_EUNAVAILABLE);
    snprintf(want, sizeof(want), "%s: redirected to %s: connection refused", f->base,
             f->dead_base);
    assert_string_equal(err, want);
    api_client_destroy(c);
}

static void redirect_loop_is_retried_like_no_leader_until_the_deadline(void **state)
{
    struct fixture *f = *state;
    struct api_client *c;
    struct api_response r;
    char err[512];
    assert_int_equal(api_client_create(f->base, &c, err, sizeof(err)), 0);
    int64_t t0 = now_mono_ms();
    assert_int_equal(api_client_request(c, "POST", "/v1/loop", NULL, 500, &r, err, sizeof(err)),
                     DVS_ENOLEADER);
    assert_true(now_mono_ms() - t0 < 2000);
    assert_non_null(strstr(err, "redirects"));
    api_client_destroy(c);
}

static void no_leader_503_is_retried_until_a_leader_answers(void **state)
{
    struct fixture *f = *state;
    int64_t t0 = now_mono_ms();
    struct api_response r;
    call(f->base, "GET", "/v1/noleader-then-ok", NULL, &r);
    assert_int_equal(r.status, 200);
    assert_true(json_is_true(json_object_get(r.body, "ok")));
    assert_int_equal(r.index, 42);
    assert_true(now_mono_ms() - t0 >= 290);
    assert_true(atomic_load(&f->calls) >= 2);
    api_response_clear(&r);
}

static void no_leader_until_the_deadline_is_enoleader_with_retry_after(void **state)
{
    struct fixture *f = *state;
    struct api_client *c;
    struct api_response r;
    char err[512];
    assert_int_equal(api_client_create(f->base, &c, err, sizeof(err)), 0);
    int64_t t0 = now_mono_ms();
    assert_int_equal(api_client_request(c, "GET", "/v1/noleader", NULL, 600, &r, err, sizeof(err)),
                     DVS_ENOLEADER);
    int64_t took = now_mono_ms() - t0;
    assert_true(took >= 350 && took < 1500);
    assert_true(atomic_load(&f->calls) >= 2);
    assert_non_null(strstr(err, "no leader"));
    assert_int_equal(r.status, 0);
    api_client_destroy(c);

    /* What the client saw each time, per docs/api.md. */
    struct raw raw;
    char url[128];
    snprintf(url, sizeof(url), "%s/v1/noleader", f->base);
    raw_request(&raw, "GET", url, NULL, 0, 0, 5000);
    assert_int_equal(raw.status, 503);
    assert_string_equal(jstr(raw.json, "code"), "no_leader");
    assert_true(json_is_null(json_object_get(raw.json, "leader")));
    assert_string_equal(raw.retry_after, "1");
    json_decref(raw.json);
}

static void unknown_outcome_503_goes_back_to_the_caller_untried(void **state)
{
    struct fixture *f = *state;
    struct api_response r;
    call(f->base, "POST", "/v1/unknown-outcome", NULL, &r);
    assert_int_equal(r.status, 503);
    assert_string_equal(jstr(r.body, "code"), "unknown_outcome");
    assert_int_equal(atomic_load(&f->calls), 1);
    api_response_clear(&r);
}

static void x_dvs_index_and_raw_body_are_returned(void **state)
{
    struct fixture *f = *state;
    struct api_response r;
    call(f->base, "GET", "/v1/headers", NULL, &r);
    assert_int_equal(r.status, 200);
    assert_int_equal(r.index, 12345);
    assert_string_equal(jstr(r.body, "ua"), "dvs");
    assert_int_equal(r.raw_len, strlen(r.raw));
    assert_int_equal(r.raw[r.raw_len - 1], '\n');
    api_response_clear(&r);

    /* Not JSON: raw only. */
    call(f->base, "GET", "/v1/text", NULL, &r);
    assert_null(r.body);
    assert_string_equal(r.raw, "hello\n");
    assert_int_equal(r.index, 0);
    api_response_clear(&r);
}

static void broken_connection_fails_over_a_get_but_not_a_post(void **state)
{
    struct fixture *f = *state;
    struct rude rude;
    struct api_client *c;
    struct api_response r;
    char urls[256], err[512];
    rude_start(&rude);
    snprintf(urls, sizeof(urls), "http://127.0.0.1:%u,%s", rude.port, f->base);

    /* A GET can be repeated elsewhere. */
    assert_int_equal(api_client_create(urls, &c, err, sizeof(err)), 0);
    assert_int_equal(api_client_request(c, "GET", "/v1/count", NULL, 5000, &r, err, sizeof(err)),
                     0);
    assert_int_equal(r.status, 200);
    assert_string_equal(r.url, f->base);
    api_response_clear(&r);
    api_client_destroy(c);
    assert_int_equal(atomic_load(&f->calls), 1);

    /* A POST may have been applied by the member that hung up: not repeated. */
    json_t *body = json_pack("{s:s}", "name", "x");
    assert_int_equal(api_client_create(urls, &c, err, sizeof(err)), 0);
    assert_int_equal(api_client_request(c, "POST", "/v1/count", body, 5000, &r, err, sizeof(err)),
                     DVS_EUNKNOWNOUTCOME);
    assert_non_null(strstr(err, "may or may not have been applied"));
    assert_int_equal(r.status, 0);
    api_client_destroy(c);
    json_decref(body);
    assert_int_equal(atomic_load(&f->calls), 1);
    assert_int_equal(atomic_load(&rude.accepted), 2);
    rude_stop(&rude);
}

static void answer_over_16_mib_is_refused_by_the_client(void **state)
{
    struct fixture *f = *state;
    struct api_client *c;
    struct api_response r;
    char err[512];
    assert_int_equal(api_client_create(f->base, &c, err, sizeof(err)), 0);
    assert_int_equal(api_client_request(c, "GET", "/v1/huge", NULL, 10000, &r, err, sizeof(err)),
                     DVS_ETOOBIG);
    assert_non_null(strstr(err, "larger than 16 MiB"));
    assert_null(r.raw);
    /* The handle is still good. */
    assert_int_equal(api_client_request(c, "GET", "/v1/items", NULL, 5000, &r, err, sizeof(err)),
                     0);
    assert_int_equal(r.status, 200);
    api_response_clear(&r);
    api_client_destroy(c);
}

static void client_times_out_on_a_request_that_is_never_answered(void **state)
{
    struct fixture *f = *state;
    struct api_client *c;
    struct api_response r;
    char err[512];
    assert_int_equal(api_client_create(f->base, &c, err, sizeof(err)), 0);
    /* On a connection kept from a previous request, where nothing is "connected". */
    assert_int_equal(api_client_request(c, "GET", "/v1/items", NULL, 5000, &r, err, sizeof(err)),
                     0);
    api_response_clear(&r);
    int64_t t0 = now_mono_ms();
    assert_int_equal(api_client_request(c, "GET", "/v1/hold", NULL, 300, &r, err, sizeof(err)),
                     DVS_ETIMEOUT);
    assert_true(now_mono_ms() - t0 < 1500);
    assert_non_null(strstr(err, "timed out"));
    api_client_destroy(c);
    assert_int_equal(wait_count(&f->closed, 1), 1);
}

/* ------------------------------------------------------------------------ */
/* Tokens                                                                    */
/* ------------------------------------------------------------------------ */

static void tokens_refuse_before_the_handler_runs_401_then_403(void **state)
{
    struct fixture *f = *state;
    struct api_response r;
    json_t *body = json_pack("{s:i}", "n", 1);

    call_token(f->base, NULL, "POST", "/v1/count", body, &r);
    assert_int_equal(r.status, 401);
    assert_string_equal(code_of(&r), "unauthorized");
    api_response_clear(&r);

    call_token(f->base, "wrong-token-0123456789", "POST", "/v1/count", body, &r);
    assert_int_equal(r.status, 403);
    assert_string_equal(code_of(&r), "forbidden");
    api_response_clear(&r);

    call_token(f->base, test_tokens.read, "POST", "/v1/count", body, &r);
    assert_int_equal(r.status, 403);
    assert_non_null(strstr(json_string_value(json_object_get(r.body, "error")),
                           "management token"));
    api_response_clear(&r);

    call_token(f->base, test_tokens.agent, "POST", "/v1/count", body, &r);
    assert_int_equal(r.status, 403);
    api_response_clear(&r);
    assert_int_equal(atomic_load(&f->calls), 0); /* no handler ran */

    call_token(f->base, test_tokens.management, "POST", "/v1/count", body, &r);
    assert_int_equal(r.status, 200);
    api_response_clear(&r);
    assert_int_equal(atomic_load(&f->calls), 1);
    json_decref(body);
}

static void tokens_each_role_on_reads_and_agent_routes(void **state)
{
    struct fixture *f = *state;
    struct api_response r;
    call_token(f->base, NULL, "GET", "/v1/count", NULL, &r);
    assert_int_equal(r.status, 401); /* a read token is configured */
    api_response_clear(&r);
    const char *readers[] = {test_tokens.read, test_tokens.agent, test_tokens.management};
    for (size_t i = 0; i < 3; i++) {
        call_token(f->base, readers[i], "GET", "/v1/count", NULL, &r);
        assert_int_equal(r.status, 200);
        api_response_clear(&r);
    }
    call_token(f->base, test_tokens.agent, "PATCH", "/v1/agent", NULL, &r);
    assert_int_equal(r.status, 200);
    api_response_clear(&r);
    call_token(f->base, test_tokens.read, "PATCH", "/v1/agent", NULL, &r);
    assert_int_equal(r.status, 403);
    api_response_clear(&r);
    /* An unknown route is refused like a change, before its 404. */
    call_token(f->base, NULL, "DELETE", "/v1/nothing-here", NULL, &r);
    assert_int_equal(r.status, 401);
    api_response_clear(&r);
}

static void tokens_malformed_header_is_401_with_www_authenticate(void **state)
{
    struct fixture *f = *state;
    char url[128];
    snprintf(url, sizeof(url), "%s/v1/count", f->base);
    const char *bad[] = {"Authorization: Bearer", "Authorization: Basic eDp5",
                         "Authorization: Bearer two tokens"};
    for (size_t i = 0; i < 3; i++) {
        CURL *h = curl_easy_init();
        struct curl_slist *hdrs = curl_slist_append(NULL, bad[i]);
        struct raw r = {0};
        curl_easy_setopt(h, CURLOPT_URL, url);
        curl_easy_setopt(h, CURLOPT_HTTPHEADER, hdrs);
        curl_easy_setopt(h, CURLOPT_POSTFIELDS, "{}");
        curl_easy_setopt(h, CURLOPT_WRITEFUNCTION, raw_write);
        curl_easy_setopt(h, CURLOPT_WRITEDATA, &r);
        assert_int_equal(curl_easy_perform(h), CURLE_OK);
        curl_easy_getinfo(h, CURLINFO_RESPONSE_CODE, &r.status);
        char www[128];
        copy_header(h, "WWW-Authenticate", www, sizeof(www));
        assert_int_equal(r.status, 401);
        assert_true(strncmp(www, "Bearer", 6) == 0);
        assert_non_null(strstr(r.body, "\"unauthorized\""));
        curl_slist_free_all(hdrs);
        curl_easy_cleanup(h);
    }
}

static void tokens_client_keeps_its_token_on_a_307_to_another_port(void **state)
{
    struct fixture *f = *state;
    struct api_response r;
    json_t *body = json_pack("{s:s}", "k", "v");
    /* Both servers want the token: the leader answers only if it got it too. */
    call_token(f->base, test_tokens.management, "POST", "/v1/redirect", body, &r);
    assert_int_equal(r.status, 200);
    assert_string_equal(json_string_value(json_object_get(r.body, "method")), "POST");
    assert_int_equal(atomic_load(&f->leader_calls), 1);
    api_response_clear(&r);
    json_decref(body);
}

static void client_refuses_an_invalid_token(void **state)
{
    struct api_client *c;
    char err[256];
    assert_int_equal(api_client_create("http://127.0.0.1:1", &c, err, sizeof(err)), 0);
    assert_int_equal(api_client_set_token(c, "has space"), -EINVAL);
    assert_int_equal(api_client_set_token(c, "line\r\nX-Evil: 1"), -EINVAL);
    assert_int_equal(api_client_set_token(c, "good-token"), 0);
    assert_int_equal(api_client_set_token(c, NULL), 0);
    assert_int_equal(api_client_set_ca_file(c, "/nonexistent/ca.pem"), -ENOENT);
    api_client_destroy(c);
}

/* A member that takes connections and never answers (a stopped process,
 * or one cut off by the network after the handshake): a short request
 * spends its whole budget on it; the next one must start elsewhere. */
static void request_after_a_timeout_starts_with_the_next_member(void **state)
{
    struct fixture *f = *state;
    struct sockaddr_in in = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    socklen_t len = sizeof(in);
    int silent = socket(AF_INET, SOCK_STREAM, 0);
    assert_int_equal(bind(silent, (struct sockaddr *)&in, sizeof(in)), 0);
    assert_int_equal(listen(silent, 16), 0); /* the kernel completes handshakes; nobody reads */
    assert_int_equal(getsockname(silent, (struct sockaddr *)&in, &len), 0);

    char urls[256], err[512];
    snprintf(urls, sizeof(urls), "http://127.0.0.1:%u,%s", ntohs(in.sin_port), f->base);
    struct api_client *c;
    struct api_response r;
    assert_int_equal(api_client_create(urls, &c, err, sizeof(err)), 0);
    assert_int_equal(api_client_request(c, "GET", "/v1/items", NULL, 300, &r, err, sizeof(err)),
                     DVS_ETIMEOUT);
    api_response_clear(&r);
    for (int i = 0; i < 3; i++) {
        assert_int_equal(
            api_client_request(c, "GET", "/v1/items", NULL, 300, &r, err, sizeof(err)), 0);
        assert_int_equal(r.status, 200);
        assert_string_equal(r.url, f->base);
        api_response_clear(&r);
    }
    api_client_destroy(c);
    close(silent);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(err_table_maps_codes_to_http_status_and_json_code),
        cmocka_unit_test(server_binds_ephemeral_port_and_reports_bind_errors),
        cmocka_unit_test(client_rejects_malformed_url_lists),
#define T(name) cmocka_unit_test_setup_teardown(name, setup, teardown)
        T(routes_match_params_and_decode_path_and_query),
        T(path_param_with_encoded_slash_or_nul_is_rejected),
        T(unknown_route_is_404_and_wrong_method_is_405_with_allow),
        T(replies_carry_added_headers_and_json_ends_with_newline),
        T(body_over_limit_is_413_and_body_at_limit_is_accepted),
        T(body_over_limit_is_refused_before_it_is_sent),
        T(endless_chunked_upload_is_cut_off),
        T(requests_refused_by_libmicrohttpd_are_freed),
        T(json_unknown_field_is_400_naming_it_and_the_accepted_fields),
        T(json_wrong_type_is_400_naming_the_expected_type),
        T(json_syntax_error_is_400_with_line_and_column),
        T(json_duplicate_keys_bad_utf8_and_nul_are_400),
        T(json_missing_required_field_is_400_and_empty_body_is_empty_object),
        T(async_reply_after_a_timer_is_delivered),
        T(client_hanging_up_before_async_reply_runs_close_callback),
        T(late_reply_without_close_callback_after_hang_up_is_dropped),
        T(server_stop_answers_held_requests_503_shutdown),
        T(client_fails_over_from_dead_url_to_live_one),
        T(redirect_307_is_followed_with_method_and_body),
        T(redirect_to_an_unreachable_leader_says_so),
        T(redirect_loop_is_retried_like_no_leader_until_the_deadline),
        T(no_leader_503_is_retried_until_a_leader_answers),
        T(no_leader_until_the_deadline_is_enoleader_with_retry_after),
        T(unknown_outcome_503_goes_back_to_the_caller_untried),
        T(x_dvs_index_and_raw_body_are_returned),
        T(broken_connection_fails_over_a_get_but_not_a_post),
        T(answer_over_16_mib_is_refused_by_the_client),
        T(client_times_out_on_a_request_that_is_never_answered),
        T(request_after_a_timeout_starts_with_the_next_member),
#undef T
#define T(name) cmocka_unit_test_setup_teardown(name, setup_tokens, teardown)
        T(tokens_refuse_before_the_handler_runs_401_then_403),
        T(tokens_each_role_on_reads_and_agent_routes),
        T(tokens_malformed_header_is_401_with_www_authenticate),
        T(tokens_client_keeps_its_token_on_a_307_to_another_port),
#undef T
        cmocka_unit_test(client_refuses_an_invalid_token),
    };
    /* DVS_TEST_DEBUG=1 shows the server's debug log (one line per request). */
    if (getenv("DVS_TEST_DEBUG"))
        log_set_level(LOG_DEBUG);
    curl_global_init(CURL_GLOBAL_DEFAULT);
    int rv = cmocka_run_group_tests(tests, NULL, NULL);
    curl_global_cleanup();
    return rv;
}
