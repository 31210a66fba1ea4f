/*
 * The REST layer's HTTP server (http.h): libmicrohttpd driven from a libuv
 * loop, routing, request bodies, JSON replies and the error table.
 *
 * MHD runs in "external event loop" epoll mode with no thread of its own.
 * MHD keeps its sockets in an epoll set of its own; that set's fd becomes
 * readable whenever any of them is ready, so one uv_poll_t on it tells us when
 * to call MHD_run(). A uv_timer_t covers MHD_get_timeout() (idle connection
 * timeouts) and doubles as the "run MHD soon" kick needed after
 * MHD_resume_connection(), which MHD's documentation requires in external
 * polling mode.
 *
 * Life of a request (struct api_req), and the MHD quirks it works around:
 *
 *   - MHD_OPTION_URI_LOG_CALLBACK creates it, with the request target exactly
 *     as received (MHD hands the access handler an unescaped path and keeps
 *     the query apart; we want both raw, to decode path parameters ourselves
 *     and to rebuild redirects).
 *   - The access handler is called several times per request: once when the
 *     headers are in, once per chunk of body, and once more when the request
 *     is complete. Bodies are collected under cfg->max_body; a Content-Length
 *     over the limit is answered 413 at the first call (MHD then discards the
 *     body and closes the connection).
 *   - On the last call the route's handler runs. If it replied, the reply is
 *     queued at once. If not, the connection is suspended and the request is
 *     "held". MHD only lets us queue a response from within the access
 *     handler of a connection that is not suspended, so a later api_reply_*
 *     stores the reply and resumes the connection; MHD then calls the access
 *     handler again and the stored reply is queued there.
 *   - While a connection is suspended MHD does not notice the client going
 *     away, so each held request watches its socket for a hang-up with a
 *     uv_poll_t of its own (UV_DISCONNECT). When it fires the owner's close
 *     callback runs and the connection is resumed so that MHD closes it.
 *   - MHD_OPTION_NOTIFY_COMPLETED frees the request when MHD is done with it.
 *
 * This is daemon glue: allocation failures abort (common/util.h x*()), and the
 * code logs at debug level only, except for answers that are real server
 * errors (500).
 */
#include <arpa/inet.h>
#include <assert.h>
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <microhttpd.h>
#include <netinet/in.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "api/http.h"
#include "common/log.h"
#include "common/util.h"
#include "dvs.h"

#define COMP "api"

#define DEFAULT_MAX_BODY (64 * 1024)
#define DEFAULT_MAX_CONNECTIONS 1024
#define DEFAULT_CONN_TIMEOUT_S 60
#define LISTEN_BACKLOG 511

/* How long api_server_stop lets the answers it forced reach their clients. */
#define STOP_DRAIN_MS 1000

/*
 * A chunked upload that passes max_body is still read (and thrown away) for
 * this many more bytes so the client can be told 413; a client that keeps
 * sending after that is cut off instead.
 */
#define DISCARD_MAX (1024 * 1024)

/* ------------------------------------------------------------------------ */
/* Types                                                                     */
/* ------------------------------------------------------------------------ */

enum req_state {
    REQ_HEADERS,  /* created by the URI callback, headers not yet seen */
    REQ_BODY,     /* headers seen; receiving the body */
    REQ_HANDLING, /* the route's handler is running */
    REQ_HELD,     /* handler returned without replying: connection suspended */
    REQ_REPLIED,  /* a reply is stored, waiting for the access handler */
    REQ_QUEUED,   /* the reply was handed to MHD */
    REQ_GONE,     /* the client went away while the request was held */
};

struct api_kv {
    char *name;
    char *value;
};

struct api_hdr {
    char *name;
    char *value;
    struct api_hdr *next;
};

/* Watches a held request's socket for the client hanging up. */
struct api_watch {
    uv_poll_t poll;      /* first: the close callback frees the watch through it */
    struct api_req *req; /* NULL once the request stopped watching */
};

struct api_req {
    struct api_server *s;
    struct MHD_Connection *conn; /* NULL once detached (an orphan, see req_disown) */
    enum req_state state;
    struct api_req *prev, *next; /* on s->held or s->orphans */

    char *url;    /* request target as received */
    char *path;   /* url up to the '?' */
    char *method;
    char peer[INET6_ADDRSTRLEN + 8];
    uint64_t start_ms;

    struct api_kv *params; /* {name} segments, decoded */
    size_t nparams;
    struct api_kv *query; /* decoded */
    size_t nquery;

    char *body; /* NUL-terminated; NULL while empty */
    size_t body_len, body_cap;
    bool too_large;
    size_t discarded;

    void *user_data;
    api_close_fn close_fn;
    void *close_data;
    struct api_watch *watch;

    struct api_hdr *hdrs, **hdrs_tail; /* extra response headers, in order */
    unsigned status;
    char *reply_ctype;
    char *reply_body;
    size_t reply_len;
    bool replied; /* a reply is stored or sent */
    bool counted; /* counted in s->nreplying */
    bool orphan;  /* ended for an owner that cannot know: see req_disown */
};

struct api_server {
    uv_loop_t *loop;
    struct MHD_Daemon *mhd;
    uv_poll_t poll;   /* MHD's epoll fd */
    uv_timer_t timer; /* MHD_get_timeout(), and "run MHD soon" */
    const struct api_route *routes;
    void *data;
    const struct api_tokens *tokens; /* NULL: open */
    size_t max_body;
    uint16_t port;

    struct api_req *held;    /* requests waiting for their handler's reply */
    struct api_req *orphans; /* see req_disown */
    unsigned nreplying;      /* replies made but not yet fully sent */

    bool in_run; /* inside MHD_run(): MHD callbacks may be on the stack */
    bool kick;   /* MHD must run again soon */
    bool stopping, quiesced, finished;
    uint64_t stop_deadline;
    int closing; /* uv handles still closing */
    void (*stop_cb)(void *data);
    void *stop_data;
};

static void reply_store(struct api_req *req, unsigned status, const char *ctype, char *body,
                        size_t len);
static void reply_error_msg(struct api_req *req, unsigned status, const char *code,
                            const char *field, const char *msg);
static void server_kick(struct api_server *s);

/* ------------------------------------------------------------------------ */
/* Small helpers                                                             */
/* ------------------------------------------------------------------------ */

static char *xstrndup(const char *s, size_t n)
{
    char *p = xmalloc(n + 1);
    memcpy(p, s, n);
    p[n] = '\0';
    return p;
}

__attribute__((format(printf, 1, 0))) static char *xvasprintf(const char *fmt, va_list ap)
{
    char *p;
    if (vasprintf(&p, fmt, ap) < 0)
        return xstrdup("(out of memory formatting a message)");
    return p;
}

static int hexval(char c)
{
    if (c >= '0' && c <= '9')
        return c - '0';
    if (c >= 'a' && c <= 'f')
        return c - 'a' + 10;
    if (c >= 'A' && c <= 'F')
        return c - 'A' + 10;
    return -1;
}

/*
 * Percent-decode N bytes of S into a new string ('+' means a space when PLUS,
 * as in query strings). Returns NULL for a malformed escape or an encoded NUL,
 * which no parameter may contain.
 */
static char *pct_decode(const char *s, size_t n, bool plus)
{
    char *out = xmalloc(n + 1), *o = out;
    for (size_t i = 0; i < n; i++) {
        if (s[i] == '%') {
            if (n - i < 3)
                goto fail;
            int h = hexval(s[i + 1]), l = hexval(s[i + 2]);
            if (h < 0 || l < 0 || (h == 0 && l == 0))
                goto fail;
            *o++ = (char)(h << 4 | l);
            i += 2;
        } else if (plus && s[i] == '+') {
            *o++ = ' ';
        } else {
            *o++ = s[i];
        }
    }
    *o = '\0';
    return out;
fail:
    free(out);
    return NULL;
}

/* A JSON string of S; bytes that are not valid UTF-8 become '?'. */
static json_t *json_string_lossy(const char *s)
{
    json_t *j = json_string(s);
    if (j)
        return j;
    char *copy = xstrdup(s);
    for (char *p = copy; *p; p++)
        if ((unsigned char)*p >= 0x80)
            *p = '?';
    j = json_string(copy);
    free(copy);
    return j;
}

static void format_peer(const struct sockaddr *sa, char *buf, size_t len)
{
    char ip[INET6_ADDRSTRLEN] = "?";
    if (!sa) {
        snprintf(buf, len, "?");
    } else if (sa->sa_family == AF_INET) {
        const struct sockaddr_in *in = (const struct sockaddr_in *)sa;
        inet_ntop(AF_INET, &in->sin_addr, ip, sizeof(ip));
        snprintf(buf, len, "%s:%u", ip, ntohs(in->sin_port));
    } else if (sa->sa_family == AF_INET6) {
        const struct sockaddr_in6 *in6 = (const struct sockaddr_in6 *)sa;
        inet_ntop(AF_INET6, &in6->sin6_addr, ip, sizeof(ip));
        snprintf(buf, len, "[%s]:%u", ip, ntohs(in6->sin6_port));
    } else {
        snprintf(buf, len, "?");
    }
}

/* ------------------------------------------------------------------------ */
/* Request bookkeeping                                                       */
/* ------------------------------------------------------------------------ */

static void list_link(struct api_req **head, struct api_req *req)
{
    req->prev = NULL;
    req->next = *head;
    if (*head)
        (*head)->prev = req;
    *head = req;
}

static void list_unlink(struct api_req **head, struct api_req *req)
{
    if (req->prev)
        req->prev->next = req->next;
    else
        *head = req->next;
    if (req->next)
        req->next->prev = req->prev;
    req->prev = req->next = NULL;
}

static void free_kvs(struct api_kv *kv, size_t n)
{
    for (size_t i = 0; i < n; i++) {
        free(kv[i].name);
        free(kv[i].value);
    }
    free(kv);
}

static void req_free(struct api_req *req)
{
    if (!req)
        return;
    assert(!req->watch);
    free(req->url);
    free(req->path);
    free(req->method);
    free_kvs(req->params, req->nparams);
    free_kvs(req->query, req->nquery);
    free(req->body);
    for (struct api_hdr *h = req->hdrs, *next; h; h = next) {
        next = h->next;
        free(h->name);
        free(h->value);
        free(h);
    }
    free(req->reply_ctype);
    free(req->reply_body);
    free(req);
}

static void watch_closed(uv_handle_t *h)
{
    free(h); /* the uv_poll_t is the first member of struct api_watch */
}

/* Stop watching the socket; must happen before MHD may close it. */
static void watch_stop(struct api_req *req)
{
    struct api_watch *w = req->watch;
    if (!w)
        return;
    w->req = NULL;
    req->watch = NULL;
    uv_close((uv_handle_t *)&w->poll, watch_closed);
}

/*
 * A held request was ended without its owner: the client went away, or the
 * server stopped and answered it. The owner learns it through its close
 * callback and must forget the request. An owner that set no close callback
 * cannot know and will reply some day: the request then becomes an "orphan"
 * that outlives its connection (detached from MHD in on_completed) until that
 * late reply, which is dropped, or until the server is finished. A late reply
 * is thus harmless rather than a use after free.
 */
static void req_disown(struct api_req *req)
{
    api_close_fn fn = req->close_fn;
    req->close_fn = NULL;
    if (fn)
        fn(req, req->close_data);
    else
        req->orphan = true;
}

/* The client of a held request went away. */
static void req_gone(struct api_req *req)
{
    assert(req->state == REQ_HELD);
    list_unlink(&req->s->held, req);
    watch_stop(req);
    req->state = REQ_GONE;
    req_disown(req);
}

static void on_watch(uv_poll_t *p, int status, int events)
{
    struct api_watch *w = (struct api_watch *)p;
    struct api_req *req = w->req;
    if (!req || (status == 0 && !(events & UV_DISCONNECT)))
        return;
    log_debug(COMP, "client %s went away before the answer to %s %s", req->peer, req->method,
              req->url);
    struct MHD_Connection *conn = req->conn;
    struct api_server *s = req->s;
    req_gone(req);
    /* MHD closes the connection once resumed: the access handler refuses it. */
    MHD_resume_connection(conn);
    server_kick(s);
}

/* Watch a held request's socket: a suspended connection is invisible to MHD. */
static void watch_start(struct api_req *req)
{
    const union MHD_ConnectionInfo *ci =
        MHD_get_connection_info(req->conn, MHD_CONNECTION_INFO_CONNECTION_FD);
    if (!ci)
        return;
    struct api_watch *w = xcalloc(1, sizeof(*w));
    int rv = uv_poll_init_socket(req->s->loop, &w->poll, ci->connect_fd);
    if (rv) {
        log_debug(COMP, "cannot watch %s for hang-ups: %s", req->peer, uv_strerror(rv));
        free(w);
        return;
    }
    w->req = req;
    req->watch = w;
    rv = uv_poll_start(&w->poll, UV_DISCONNECT, on_watch);
    if (rv) {
        log_debug(COMP, "cannot watch %s for hang-ups: %s", req->peer, uv_strerror(rv));
        watch_stop(req);
    }
}

/* ------------------------------------------------------------------------ */
/* Routing and the request target                                            */
/* ------------------------------------------------------------------------ */

/*
 * Does PATH match PATTERN segment by segment? A {name} pattern segment
 * matches any one non-empty segment (route_params decodes it); others match
 * byte for byte, so "/v1/nodes/" (an empty last segment) matches nothing.
 */
static bool route_match(const char *pattern, const char *path)
{
    const char *p = pattern, *q = path;
    if (*p != '/' || *q != '/')
        return false;
    for (;;) {
        p++;
        q++;
        const char *pe = strchrnul(p, '/'), *qe = strchrnul(q, '/');
        size_t pl = (size_t)(pe - p), ql = (size_t)(qe - q);
        if (pl >= 2 && p[0] == '{' && p[pl - 1] == '}') {
            if (ql == 0)
                return false;
        } else if (pl != ql || memcmp(p, q, pl) != 0) {
            return false;
        }
        if (!*pe || !*qe)
            return !*pe && !*qe;
        p = pe;
        q = qe;
    }
}

/*
 * Decode the {name} segments of a path that route_match accepted. Returns
 * false (and replies 400) when one is not valid percent-encoding or decodes
 * to something that contains '/': a parameter is always a single segment.
 */
static bool route_params(struct api_req *req, const char *pattern)
{
    const char *p = pattern, *q = req->path;
    for (;;) {
        p++;
        q++;
        const char *pe = strchrnul(p, '/'), *qe = strchrnul(q, '/');
        size_t pl = (size_t)(pe - p), ql = (size_t)(qe - q);
        if (pl >= 2 && p[0] == '{' && p[pl - 1] == '}') {
            char *name = xstrndup(p + 1, pl - 2);
            char *value = pct_decode(q, ql, false);
            if (!value || strchr(value, '/')) {
                reply_error_msg(req, 400, "bad_request", name,
                                value ? "a path parameter must not contain '/' (%2F)"
                                      : "a path parameter is not valid percent-encoding "
                                        "(a '%' must be followed by two hex digits, not 00)");
                free(name);
                free(value);
                return false;
            }
            req->params = xrealloc(req->params, (req->nparams + 1) * sizeof(*req->params));
            req->params[req->nparams++] = (struct api_kv){name, value};
        }
        if (!*pe || !*qe)
            return true;
        p = pe;
        q = qe;
    }
}

/* Split and decode the query string. Returns false (and replies 400) if malformed. */
static bool parse_query(struct api_req *req)
{
    const char *q = strchr(req->url, '?');
    if (!q)
        return true;
    for (q++; *q;) {
        const char *end = strchrnul(q, '&');
        if (end > q) {
            const char *eq = memchr(q, '=', (size_t)(end - q));
            const char *kend = eq ? eq : end;
            char *name = pct_decode(q, (size_t)(kend - q), true);
            char *value = eq ? pct_decode(eq + 1, (size_t)(end - eq - 1), true) : xstrdup("");
            if (!name || !value) {
                char *raw = xstrndup(q, (size_t)(end - q));
                free(name);
                free(value);
                api_reply_error(req, 400, "bad_request", NULL,
                                "query parameter \"%s\" is not valid percent-encoding (a '%%' "
                                "must be followed by two hex digits, not 00)",
                                raw);
                free(raw);
                return false;
            }
            req->query = xrealloc(req->query, (req->nquery + 1) * sizeof(*req->query));
            req->query[req->nquery++] = (struct api_kv){name, value};
        }
        q = *end ? end + 1 : end;
    }
    return true;
}

/*
 * Find the route for the request. Returns it, or NULL after replying 404 (no
 * pattern matches the path), 405 (patterns match, with other methods; the
 * Allow header lists them) or 400 (bad parameter or query).
 */
static const struct api_route *route_find(struct api_req *req)
{
    const struct api_route *found = NULL;
    char allow[256] = "";
    size_t alen = 0;

    if (req->path[0] != '/') {
        api_reply_error(req, 400, "bad_request", NULL,
                        "the request target \"%s\" is not an absolute path", req->url);
        return NULL;
    }
    for (const struct api_route *r = req->s->routes; r->method; r++) {
        if (!route_match(r->pattern, req->path))
            continue;
        if (strcmp(r->method, req->method) == 0) {
            found = r;
            break;
        }
        if (!strstr(allow, r->method)) {
            int n = snprintf(allow + alen, sizeof(allow) - alen, "%s%s", alen ? ", " : "",
                             r->method);
            if (n > 0 && (size_t)n < sizeof(allow) - alen)
                alen += (size_t)n;
        }
    }
    if (!found) {
        if (alen) {
            api_req_add_header(req, "Allow", allow);
            api_reply_error(req, 405, "method_not_allowed", NULL,
                            "method %s is not allowed on %s; allowed: %s", req->method,
                            req->path, allow);
        } else {
            api_reply_error(req, 404, "not_found", NULL, "no such resource: %s %s",
                            req->method, req->path);
        }
        return NULL;
    }
    if (!route_params(req, found->pattern) || !parse_query(req))
        return NULL;
    return found;
}

/* ------------------------------------------------------------------------ */
/* MHD callbacks                                                             */
/* ------------------------------------------------------------------------ */

__attribute__((format(printf, 2, 0))) static void on_mhd_log(void *cls, const char *fmt,
                                                             va_list ap)
{
    char buf[512];
    vsnprintf(buf, sizeof(buf), fmt, ap);
    size_t n = strlen(buf);
    while (n > 0 && (buf[n - 1] == '\n' || buf[n - 1] == '\r'))
        buf[--n] = '\0';
    log_debug(COMP, "libmicrohttpd: %s", buf);
}

/* Called once per request, before the headers: creates the request. */
static void *on_uri(void *cls, const char *uri, struct MHD_Connection *conn)
{
    struct api_server *s = cls;
    struct api_req *req = xcalloc(1, sizeof(*req));
    req->s = s;
    req->conn = conn;
    req->state = REQ_HEADERS;
    req->url = xstrdup(uri);
    req->path = xstrndup(uri, strcspn(uri, "?"));
    req->hdrs_tail = &req->hdrs;
    req->start_ms = uv_now(s->loop);
    const union MHD_ConnectionInfo *ci =
        MHD_get_connection_info(conn, MHD_CONNECTION_INFO_CLIENT_ADDRESS);
    format_peer(ci ? ci->client_addr : NULL, req->peer, sizeof(req->peer));
    return req;
}

/* Hand the stored reply to MHD. Only valid inside the access handler. */
static enum MHD_Result req_queue(struct api_req *req)
{
    assert(req->state == REQ_REPLIED);
    req->state = REQ_QUEUED;
    struct MHD_Response *r = MHD_create_response_from_buffer(req->reply_len, req->reply_body,
                                                             MHD_RESPMEM_MUST_FREE);
    if (!r)
        return MHD_NO; /* out of memory: drop the connection */
    req->reply_body = NULL; /* MHD frees it now */
    MHD_add_response_header(r, MHD_HTTP_HEADER_CONTENT_TYPE, req->reply_ctype);
    for (struct api_hdr *h = req->hdrs; h; h = h->next)
        if (MHD_add_response_header(r, h->name, h->value) != MHD_YES)
            log_debug(COMP, "response header %s dropped (invalid name or value)", h->name);
    if (req->s->stopping)
        MHD_add_response_header(r, MHD_HTTP_HEADER_CONNECTION, "close");
    enum MHD_Result rv = MHD_queue_response(req->conn, req->status, r);
    MHD_destroy_response(r);
    return rv;
}

/*
 * The access a request needs: that of the route it will reach, or by method
 * when no route matches (its 404 or 405 then waits for a valid token, so that
 * an anonymous client learns nothing about the routes).
 */
static enum api_access route_access(const struct api_server *s, const struct api_req *req)
{
    for (const struct api_route *r = s->routes; r->method; r++)
        if (strcmp(r->method, req->method) == 0 && route_match(r->pattern, req->path))
            return r->access;
    return API_ACCESS_DEFAULT;
}

/*
 * Check the Authorization header against the route (auth.h). Returns true
 * when the request may go on; else replies 401 or 403 and returns false.
 * Runs before the body is read: a refused body is never stored.
 */
static bool req_authorize(struct api_req *req)
{
    struct api_server *s = req->s;
    if (!api_tokens_enabled(s->tokens))
        return true;
    const char *role;
    const char *hdr = MHD_lookup_connection_value(req->conn, MHD_HEADER_KIND,
                                                  MHD_HTTP_HEADER_AUTHORIZATION);
    enum api_access access = route_access(s, req);
    switch (api_authorize(s->tokens, req->method, access, hdr, &role)) {
    case API_AUTH_OK:
        return true;
    case API_AUTH_MISSING:
        api_req_add_header(req, MHD_HTTP_HEADER_WWW_AUTHENTICATE, "Bearer realm=\"dvs\"");
        api_reply_error(req, 401, "unauthorized", NULL,
                        "%s %s needs a token: send \"Authorization: Bearer TOKEN\" (the "
                        "CLI: --token-file FILE or $DVS_TOKEN)",
                        req->method, req->path);
        break;
    case API_AUTH_MALFORMED:
        api_req_add_header(req, MHD_HTTP_HEADER_WWW_AUTHENTICATE,
                           "Bearer realm=\"dvs\", error=\"invalid_request\"");
        api_reply_error(req, 401, "unauthorized", NULL,
                        "malformed Authorization header: expected \"Bearer TOKEN\" with a "
                        "non-empty token of A-Z a-z 0-9 - . _ ~ + /");
        break;
    case API_AUTH_WRONG:
        api_req_add_header(req, MHD_HTTP_HEADER_WWW_AUTHENTICATE,
                           "Bearer realm=\"dvs\", error=\"invalid_token\"");
        api_reply_error(req, 403, "forbidden", NULL,
                        "the token is not valid for this manager");
        break;
    case API_AUTH_DENIED:
        api_req_add_header(req, MHD_HTTP_HEADER_WWW_AUTHENTICATE,
                           "Bearer realm=\"dvs\", error=\"insufficient_scope\"");
        api_reply_error(req, 403, "forbidden", NULL,
                        "the %s token may not %s %s; it needs the %s token", role,
                        req->method, req->path,
                        access == API_ACCESS_AGENT ? "agent or management" : "management");
        break;
    }
    log_info(COMP, "refused %s %s from %s: %u (role=%s)", req->method, req->path, req->peer,
             req->status, role);
    return false;
}

/* First call: the headers are in. Refuse early what need not be read. */
static enum MHD_Result req_begin(struct api_req *req, struct MHD_Connection *conn,
                                 const char *method)
{
    struct api_server *s = req->s;
    req->conn = conn;
    req->method = xstrdup(method);
    req->state = REQ_BODY;

    if (s->stopping) {
        api_reply_err(req, DVS_ESHUTDOWN, NULL, NULL);
        return req_queue(req);
    }
    if (!req_authorize(req)) {
        req->too_large = true; /* throw away whatever body follows */
        return req_queue(req);
    }
    const char *cl = MHD_lookup_connection_value(conn, MHD_HEADER_KIND,
                                                 MHD_HTTP_HEADER_CONTENT_LENGTH);
    if (cl) {
        /* MHD has checked the syntax already; a value that overflows is too large. */
        errno = 0;
        unsigned long long n = strtoull(cl, NULL, 10);
        if (errno || n > s->max_body) {
            req->too_large = true;
            api_reply_error(req, 413, "too_large", NULL,
                            "the request body (%s bytes) is over the limit of %zu bytes", cl,
                            s->max_body);
            /* Queued before the body: MHD discards it and closes the connection. */
            return req_queue(req);
        }
        if (n > 0) {
            req->body_cap = (size_t)n + 1;
            req->body = xmalloc(req->body_cap);
        }
    }
    return MHD_YES;
}

/* A chunk of body. */
static enum MHD_Result req_upload(struct api_req *req, const char *data, size_t *size)
{
    size_t n = *size;
    *size = 0; /* consumed: stored or thrown away */
    if (req->too_large) {
        req->discarded += n;
        return req->discarded > DISCARD_MAX ? MHD_NO : MHD_YES;
    }
    if (n > req->s->max_body - req->body_len) {
        /* Over the limit (a chunked upload: Content-Length was checked). MHD
         * accepts no response while a body is coming in, so the 413 goes out
         * when the request is complete; what is left is not kept. */
        req->too_large = true;
        req->discarded = req->body_len + n;
        free(req->body);
        req->body = NULL;
        req->body_len = req->body_cap = 0;
        return MHD_YES;
    }
    if (req->body_len + n + 1 > req->body_cap) {
        size_t cap = req->body_cap ? req->body_cap : 1024;
        while (cap < req->body_len + n + 1)
            cap *= 2;
        if (cap > req->s->max_body + 1)
            cap = req->s->max_body + 1;
        req->body = xrealloc(req->body, cap);
        req->body_cap = cap;
    }
    memcpy(req->body + req->body_len, data, n);
    req->body_len += n;
    req->body[req->body_len] = '\0';
    return MHD_YES;
}

/* The request is complete: route it and run its handler. */
static enum MHD_Result req_dispatch(struct api_req *req)
{
    struct api_server *s = req->s;
    if (req->too_large) {
        api_reply_error(req, 413, "too_large", NULL,
                        "the request body is over the limit of %zu bytes", s->max_body);
        return req_queue(req);
    }
    if (s->stopping) {
        api_reply_err(req, DVS_ESHUTDOWN, NULL, NULL);
        return req_queue(req);
    }
    const struct api_route *route = route_find(req);
    if (!route)
        return req_queue(req);

    req->state = REQ_HANDLING;
    route->fn(req, s->data);
    if (req->state == REQ_HANDLING) {
        if (s->stopping) {
            /* The handler stopped the server and kept its request. */
            api_reply_err(req, DVS_ESHUTDOWN, NULL, NULL);
        } else {
            req->state = REQ_HELD;
            list_link(&s->held, req);
            MHD_suspend_connection(req->conn);
            watch_start(req);
            return MHD_YES;
        }
    }
    return req_queue(req);
}

static enum MHD_Result on_access(void *cls, struct MHD_Connection *conn, const char *url,
                                 const char *method, const char *version,
                                 const char *upload_data, size_t *upload_size, void **con_cls)
{
    struct api_req *req = *con_cls;
    if (!req)
        return MHD_NO; /* never: on_uri runs first for every request */

    switch (req->state) {
    case REQ_HEADERS:
        return req_begin(req, conn, method);
    case REQ_BODY:
        if (*upload_size > 0)
            return req_upload(req, upload_data, upload_size);
        return req_dispatch(req);
    case REQ_REPLIED:
        /* Resumed (or early-replied): queue the stored reply. */
        return req_queue(req);
    case REQ_GONE:
        /* Resumed after the client hung up: let MHD close the connection. */
        return MHD_NO;
    case REQ_HANDLING:
    case REQ_HELD:
    case REQ_QUEUED:
        break;
    }
    /* Never: a held connection is suspended, a queued one is answered. */
    return MHD_NO;
}

/* MHD is done with the request: sent, failed, timed out, or shut down. */
static void on_completed(void *cls, struct MHD_Connection *conn, void **con_cls,
                         enum MHD_RequestTerminationCode toe)
{
    struct api_server *s = cls;
    struct api_req *req = *con_cls;
    if (!req)
        return;
    *con_cls = NULL;
    if (req->state == REQ_HELD)
        req_gone(req); /* never in practice: MHD does not close suspended connections */
    if (req->counted) {
        assert(s->nreplying > 0);
        s->nreplying--;
    }
    log_debug(COMP, "%s %s %s -> %u%s ms=%" PRIu64, req->peer, req->method ? req->method : "?",
              req->url, req->status,
              toe == MHD_REQUEST_TERMINATED_COMPLETED_OK ? "" : " (not completed)",
              (uint64_t)(uv_now(s->loop) - req->start_ms));
    if (req->orphan) {
        /* Detach and keep it for the owner's late reply (req_disown). */
        req->conn = NULL;
        list_link(&s->orphans, req);
        return;
    }
    req_free(req);
}

/* ------------------------------------------------------------------------ */
/* Driving MHD from the loop                                                 */
/* ------------------------------------------------------------------------ */

static void on_timer(uv_timer_t *t);

/* Arm the timer for MHD's next deadline (or at once after a kick). */
static void server_arm(struct api_server *s)
{
    uint64_t ms = UINT64_MAX;
    MHD_UNSIGNED_LONG_LONG t;
    if (s->kick)
        ms = 0;
    else if (MHD_get_timeout(s->mhd, &t) == MHD_YES)
        ms = (uint64_t)t;
    if (s->stopping) {
        uint64_t now = uv_now(s->loop);
        uint64_t left = s->stop_deadline > now ? s->stop_deadline - now : 0;
        if (left < ms)
            ms = left;
    }
    if (ms == UINT64_MAX)
        uv_timer_stop(&s->timer);
    else
        uv_timer_start(&s->timer, on_timer, ms, 0);
}

/* MHD must run again soon (a connection was resumed, or the server stops). */
static void server_kick(struct api_server *s)
{
    s->kick = true;
    if (!s->in_run && !s->finished)
        uv_timer_start(&s->timer, on_timer, 0, 0);
    /* else server_run re-arms the timer when MHD_run returns */
}

static void server_handle_closed(uv_handle_t *h)
{
    struct api_server *s = h->data;
    if (--s->closing > 0)
        return;
    void (*cb)(void *) = s->stop_cb;
    void *data = s->stop_data;
    free(s);
    if (cb)
        cb(data);
}

static void server_finish(struct api_server *s)
{
    s->finished = true;
    /* MHD panics when stopped with suspended connections. Stopping answered
     * every held request and none is held once stopping; this only guards. */
    while (s->held) {
        struct api_req *req = s->held;
        api_reply_err(req, DVS_ESHUTDOWN, NULL, NULL);
        req_disown(req);
    }
    uv_poll_stop(&s->poll); /* before MHD closes the epoll fd */
    uv_timer_stop(&s->timer);
    MHD_stop_daemon(s->mhd); /* completes (and frees) the requests left */
    s->mhd = NULL;
    while (s->orphans) {
        struct api_req *req = s->orphans;
        list_unlink(&s->orphans, req);
        req_free(req);
    }
    s->closing = 2;
    uv_close((uv_handle_t *)&s->poll, server_handle_closed);
    uv_close((uv_handle_t *)&s->timer, server_handle_closed);
}

/*
 * One step of stopping, after MHD_run. Stop listening at once (clients fail
 * over to another member at once rather than time out), give the answers
 * forced by api_server_stop STOP_DRAIN_MS to go out, then close everything.
 * Returns true when the server is finished.
 */
static bool server_stop_step(struct api_server *s)
{
    if (!s->quiesced) {
        MHD_socket fd = MHD_quiesce_daemon(s->mhd);
        if (fd != MHD_INVALID_SOCKET)
            close(fd);
        s->quiesced = true;
    }
    if (s->nreplying > 0 && uv_now(s->loop) < s->stop_deadline)
        return false;
    server_finish(s);
    return true;
}

static void server_run(struct api_server *s)
{
    assert(!s->in_run && !s->finished);
    s->kick = false;
    s->in_run = true;
    MHD_run(s->mhd);
    s->in_run = false;
    if (s->stopping && server_stop_step(s))
        return;
    server_arm(s);
}

static void on_poll(uv_poll_t *p, int status, int events)
{
    struct api_server *s = p->data;
    if (status < 0)
        log_error(COMP, "polling the HTTP server's epoll fd failed: %s", uv_strerror(status));
    server_run(s);
}

static void on_timer(uv_timer_t *t)
{
    server_run(t->data);
}

/* ------------------------------------------------------------------------ */
/* Server start and stop                                                     */
/* ------------------------------------------------------------------------ */

static int resolve_host(const char *host, uint16_t port, struct sockaddr_storage *ss,
                        socklen_t *len)
{
    memset(ss, 0, sizeof(*ss));
    if (!host || !*host)
        return -EINVAL;
    if (strcmp(host, "localhost") == 0)
        host = "127.0.0.1";
    struct sockaddr_in *in = (struct sockaddr_in *)ss;
    struct sockaddr_in6 *in6 = (struct sockaddr_in6 *)ss;
    if (inet_pton(AF_INET, host, &in->sin_addr) == 1) {
        in->sin_family = AF_INET;
        in->sin_port = htons(port);
        *len = sizeof(*in);
        return 0;
    }
    /* IPv6 literals come bare ("::1") or bracketed as in URLs ("[::1]"). */
    char buf[INET6_ADDRSTRLEN + 2];
    size_t n = strlen(host);
    if (n >= 2 && host[0] == '[' && host[n - 1] == ']' && n - 2 < sizeof(buf)) {
        memcpy(buf, host + 1, n - 2);
        buf[n - 2] = '\0';
        host = buf;
    }
    if (inet_pton(AF_INET6, host, &in6->sin6_addr) == 1) {
        in6->sin6_family = AF_INET6;
        in6->sin6_port = htons(port);
        *len = sizeof(*in6);
        return 0;
    }
    return -EINVAL;
}

/*
 * Our own listening socket rather than MHD's: MHD_start_daemon says nothing
 * about why it failed, and the caller wants -EADDRINUSE.
 */
static int listen_on(const struct sockaddr_storage *ss, socklen_t len, int *ret_fd,
                     uint16_t *ret_port)
{
    int fd = socket(ss->ss_family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    if (fd < 0)
        return -errno;
    int one = 1, rv;
    (void)setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one));
    struct sockaddr_storage bound;
    socklen_t blen = sizeof(bound);
    if (bind(fd, (const struct sockaddr *)ss, len) != 0 || listen(fd, LISTEN_BACKLOG) != 0 ||
        getsockname(fd, (struct sockaddr *)&bound, &blen) != 0) {
        rv = -errno;
        goto err_close;
    }
    *ret_port = ntohs(bound.ss_family == AF_INET6 ? ((struct sockaddr_in6 *)&bound)->sin6_port
                                                  : ((struct sockaddr_in *)&bound)->sin_port);
    *ret_fd = fd;
    return 0;

err_close:
    close(fd);
    return rv;
}

int api_server_start(uv_loop_t *loop, const struct api_server_config *cfg,
                     const struct api_route *routes, void *data,
                     struct api_server **ret_server)
{
    struct sockaddr_storage ss;
    socklen_t sslen;
    int fd = -1, mhd_fd, rv;
    uint16_t port = 0;

    if ((cfg->tls_cert_pem != NULL) != (cfg->tls_key_pem != NULL))
        return -EINVAL;
    if (cfg->tls_cert_pem && MHD_is_feature_supported(MHD_FEATURE_TLS) != MHD_YES)
        return -ENOTSUP;
    rv = resolve_host(cfg->host, cfg->port, &ss, &sslen);
    if (rv)
        return rv;
    rv = listen_on(&ss, sslen, &fd, &port);
    if (rv)
        return rv;
    /* MHD owns a duplicate: whether it closes a listening socket it was given
     * when it fails to start is not documented, and closing one twice could
     * close someone else's fd in this multi-threaded daemon. */
    mhd_fd = fcntl(fd, F_DUPFD_CLOEXEC, 0);
    rv = mhd_fd < 0 ? -errno : 0;
    close(fd);
    if (rv)
        return rv;

    struct api_server *s = xcalloc(1, sizeof(*s));
    s->loop = loop;
    s->routes = routes;
    s->data = data;
    s->port = port;
    s->max_body = cfg->max_body ? cfg->max_body : DEFAULT_MAX_BODY;
    s->tokens = cfg->tokens;

    unsigned flags = MHD_USE_EPOLL | MHD_ALLOW_SUSPEND_RESUME | MHD_USE_ERROR_LOG;
    if (ss.ss_family == AF_INET6)
        flags |= MHD_USE_IPv6;
    /* TLS (GnuTLS inside MHD) takes the PEM text itself (kept by the caller). */
    struct MHD_OptionItem tls[3] = {{MHD_OPTION_END, 0, NULL}};
    if (cfg->tls_cert_pem && cfg->tls_key_pem) {
        flags |= MHD_USE_TLS;
        tls[0] = (struct MHD_OptionItem){MHD_OPTION_HTTPS_MEM_CERT, 0, (void *)cfg->tls_cert_pem};
        tls[1] = (struct MHD_OptionItem){MHD_OPTION_HTTPS_MEM_KEY, 0, (void *)cfg->tls_key_pem};
        tls[2] = (struct MHD_OptionItem){MHD_OPTION_END, 0, NULL};
    }
    s->mhd = MHD_start_daemon(
        flags, 0, NULL, NULL, on_access, s,
        /* The logger goes first, or MHD may print to stderr during start-up. */
        MHD_OPTION_EXTERNAL_LOGGER, on_mhd_log, s,
        MHD_OPTION_LISTEN_SOCKET, (MHD_socket)mhd_fd,
        MHD_OPTION_CONNECTION_LIMIT,
        (unsigned)(cfg->max_connections ? cfg->max_connections : DEFAULT_MAX_CONNECTIONS),
        MHD_OPTION_CONNECTION_TIMEOUT,
        (unsigned)(cfg->conn_timeout_s ? cfg->conn_timeout_s : DEFAULT_CONN_TIMEOUT_S),
        MHD_OPTION_URI_LOG_CALLBACK, on_uri, s,
        MHD_OPTION_NOTIFY_COMPLETED, on_completed, s,
        MHD_OPTION_ARRAY, tls,
        MHD_OPTION_END);
    if (!s->mhd) {
        /* With TLS, MHD says why only through the logger (at debug). */
        rv = (flags & MHD_USE_TLS) ? -EPROTO : -EIO;
        goto err_free;
    }
    const union MHD_DaemonInfo *di = MHD_get_daemon_info(s->mhd, MHD_DAEMON_INFO_EPOLL_FD);
    if (!di) {
        rv = -EIO;
        goto err_stop;
    }
    rv = uv_poll_init(loop, &s->poll, di->epoll_fd);
    if (rv)
        goto err_stop;
    s->poll.data = s;
    uv_timer_init(loop, &s->timer);
    s->timer.data = s;
    rv = uv_poll_start(&s->poll, UV_READABLE, on_poll);
    if (rv)
        goto err_close_handles;
    server_kick(s); /* let MHD compute its first timeout */
    *ret_server = s;
    return 0;

err_close_handles:
    /* The handles close asynchronously: hand them over to the normal stop. */
    MHD_stop_daemon(s->mhd);
    s->mhd = NULL;
    s->finished = true;
    s->closing = 2;
    uv_close((uv_handle_t *)&s->poll, server_handle_closed);
    uv_close((uv_handle_t *)&s->timer, server_handle_closed);
    return rv;
err_stop:
    MHD_stop_daemon(s->mhd);
err_free:
    free(s);
    return rv;
}

uint16_t api_server_port(const struct api_server *s)
{
    return s->port;
}

void api_server_stop(struct api_server *s, void (*cb)(void *data), void *data)
{
    if (!s)
        return;
    assert(!s->stopping);
    s->stopping = true;
    s->stop_cb = cb;
    s->stop_data = data;
    s->stop_deadline = uv_now(s->loop) + STOP_DRAIN_MS;
    /* Each reply takes its request off the list. The owners are told through
     * their close callbacks, as when a client goes away: they hold pointers
     * to requests that are answered now and freed soon. */
    while (s->held) {
        struct api_req *req = s->held;
        api_reply_err(req, DVS_ESHUTDOWN, NULL, NULL);
        req_disown(req);
    }
    server_kick(s); /* MHD_quiesce_daemon and the rest run outside MHD_run */
}

/* ------------------------------------------------------------------------ */
/* Request accessors                                                         */
/* ------------------------------------------------------------------------ */

const char *api_req_method(const struct api_req *req)
{
    return req->method;
}

const char *api_req_path(const struct api_req *req)
{
    return req->path;
}

const char *api_req_url(const struct api_req *req)
{
    return req->url;
}

static const char *kv_find(const struct api_kv *kv, size_t n, const char *name)
{
    for (size_t i = 0; i < n; i++)
        if (strcmp(kv[i].name, name) == 0)
            return kv[i].value;
    return NULL;
}

const char *api_req_param(const struct api_req *req, const char *name)
{
    return kv_find(req->params, req->nparams, name);
}

const char *api_req_query(const struct api_req *req, const char *name)
{
    return kv_find(req->query, req->nquery, name);
}

bool api_req_has_query(const struct api_req *req, const char *name)
{
    return api_req_query(req, name) != NULL;
}

const char *api_req_header(const struct api_req *req, const char *name)
{
    if (!req->conn)
        return NULL;
    return MHD_lookup_connection_value(req->conn, MHD_HEADER_KIND, name);
}

const char *api_req_body(const struct api_req *req, size_t *ret_len)
{
    if (ret_len)
        *ret_len = req->body_len;
    return req->body ? req->body : "";
}

const char *api_req_peer(const struct api_req *req)
{
    return req->peer;
}

void api_req_set_data(struct api_req *req, void *data)
{
    req->user_data = data;
}

void *api_req_get_data(const struct api_req *req)
{
    return req->user_data;
}

void api_req_on_close(struct api_req *req, api_close_fn fn, void *data)
{
    req->close_fn = fn;
    req->close_data = data;
}

void api_req_add_header(struct api_req *req, const char *name, const char *value)
{
    if (req->orphan)
        return; /* its late reply is dropped (req_disown) */
    assert(req->state < REQ_REPLIED && "header added after the reply");
    struct api_hdr *h = xcalloc(1, sizeof(*h));
    h->name = xstrdup(name);
    h->value = xstrdup(value);
    *req->hdrs_tail = h;
    req->hdrs_tail = &h->next;
}

static bool req_has_header(const struct api_req *req, const char *name)
{
    for (const struct api_hdr *h = req->hdrs; h; h = h->next)
        if (strcasecmp(h->name, name) == 0)
            return true;
    return false;
}

/* ------------------------------------------------------------------------ */
/* Replies                                                                   */
/* ------------------------------------------------------------------------ */

/*
 * Every reply ends here. BODY (LEN bytes, malloc'd) is taken. Inside the
 * access handler the caller queues it; for a held request the connection is
 * resumed and MHD calls the access handler again, which queues it.
 */
static void reply_store(struct api_req *req, unsigned status, const char *ctype, char *body,
                        size_t len)
{
    assert(status >= 100 && status <= 599);
    if (req->orphan) {
        /* The owner's late reply to a request ended without it (req_disown):
         * drop it, and the request if MHD is done with it. */
        req->orphan = false;
        free(body);
        if (!req->conn) {
            list_unlink(&req->s->orphans, req);
            req_free(req);
        }
        return;
    }
    assert(req->state != REQ_GONE && "reply to a request after its close callback");
    assert(!req->replied && "a request is answered exactly once");
    assert(req->state <= REQ_HELD);
    req->replied = true;
    bool was_held = req->state == REQ_HELD;
    req->state = REQ_REPLIED;
    req->status = status;
    req->reply_ctype = xstrdup(ctype);
    req->reply_body = body;
    req->reply_len = len;
    req->counted = true;
    req->s->nreplying++;
    if (was_held) {
        list_unlink(&req->s->held, req);
        watch_stop(req);
        MHD_resume_connection(req->conn);
        server_kick(req->s);
    }
}

void api_reply_json(struct api_req *req, unsigned status, json_t *body)
{
    char *text = body ? json_dumps(body, JSON_COMPACT | JSON_ENCODE_ANY) : NULL;
    json_decref(body);
    if (!text) {
        /* json_pack() returns NULL on a bad format or invalid UTF-8. */
        log_error(COMP, "%s %s: the %u answer could not be encoded as JSON", req->method,
                  req->path, status);
        static const char fallback[] =
            "{\"error\":\"the answer could not be encoded as JSON\",\"code\":\"internal\"}\n";
        reply_store(req, 500, "application/json", xstrdup(fallback), sizeof(fallback) - 1);
        return;
    }
    size_t n = strlen(text);
    char *buf = xmalloc(n + 2);
    memcpy(buf, text, n);
    buf[n] = '\n';
    buf[n + 1] = '\0';
    free(text);
    reply_store(req, status, "application/json", buf, n + 1);
}

static void reply_error_msg(struct api_req *req, unsigned status, const char *code,
                            const char *field, const char *msg)
{
    json_t *o = json_object();
    json_object_set_new(o, "error", json_string_lossy(msg));
    json_object_set_new(o, "code", json_string_lossy(code));
    if (field)
        json_object_set_new(o, "field", json_string_lossy(field));
    if (strcmp(code, "no_leader") == 0) {
        /* docs/api.md: a no_leader answer says so and when to retry. */
        json_object_set_new(o, "leader", json_null());
        if (req->state < REQ_REPLIED && !req_has_header(req, "Retry-After"))
            api_req_add_header(req, "Retry-After", "1");
    }
    api_reply_json(req, status, o);
}

void api_reply_error(struct api_req *req, unsigned status, const char *code, const char *field,
                     const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    char *msg = xvasprintf(fmt, ap);
    va_end(ap);
    reply_error_msg(req, status, code, field, msg);
    free(msg);
}

/*
 * The one table from error codes to HTTP statuses and JSON codes (STYLE.md
 * 9, docs/api.md "Errors"). Anything else is a bug: 500 "internal".
 */
static const struct {
    int err;
    unsigned status;
    const char *code;
} err_table[] = {
    {DVS_EBADREQUEST, 400, "bad_request"},
    {-EINVAL, 400, "bad_request"},
    {DVS_ENOTFOUND, 404, "not_found"},
    {-ENOENT, 404, "not_found"},
    {DVS_EEXISTS, 409, "exists"},
    {-EEXIST, 409, "exists"},
    {DVS_ECONFLICT, 409, "conflict"},
    {DVS_ESTALEGEN, 409, "conflict"},
    {DVS_ETOOBIG, 413, "too_large"},
    {DVS_ENOLEADER, 503, "no_leader"},
    {DVS_ENOTLEADER, 503, "no_leader"},
    {DVS_ENOSPACE, 503, "no_space"},
    {DVS_ESHUTDOWN, 503, "shutdown"},
    {DVS_EUNKNOWNOUTCOME, 503, "unknown_outcome"},
    {DVS_ETIMEOUT, 504, "timeout"},
    {-ETIMEDOUT, 504, "timeout"},
};

static int err_index(int err)
{
    for (size_t i = 0; i < sizeof(err_table) / sizeof(err_table[0]); i++)
        if (err_table[i].err == err)
            return (int)i;
    return -1;
}

unsigned api_err_status(int err)
{
    int i = err_index(err);
    return i < 0 ? 500 : err_table[i].status;
}

const char *api_err_code(int err)
{
    int i = err_index(err);
    return i < 0 ? "internal" : err_table[i].code;
}

void api_reply_err(struct api_req *req, int err, const char *field, const char *msg)
{
    unsigned status = api_err_status(err);
    if (!msg)
        msg = dvs_strerror(err);
    if (status == 500)
        log_error(COMP, "%s %s from %s: internal error %s: %s", req->method, req->path,
                  req->peer, dvs_err_name(err), msg);
    reply_error_msg(req, status, api_err_code(err), field, msg);
}

void api_reply_text(struct api_req *req, unsigned status, const char *content_type,
                    const char *text)
{
    size_t n = strlen(text);
    reply_store(req, status, content_type ? content_type : "text/plain; charset=utf-8",
                xstrndup(text, n), n);
}

void api_reply_redirect(struct api_req *req, const char *base_url)
{
    size_t n = strlen(base_url);
    while (n > 0 && base_url[n - 1] == '/')
        n--;
    char *location = xasprintf("%.*s%s", (int)n, base_url, req->url);
    api_req_add_header(req, "Location", location);
    json_t *body = json_object();
    json_object_set_new(body, "location", json_string_lossy(location));
    free(location);
    api_reply_json(req, 307, body);
}

/* ------------------------------------------------------------------------ */
/* JSON bodies                                                               */
/* ------------------------------------------------------------------------ */

static const char *jtype_name(enum api_jtype t)
{
    switch (t) {
    case API_J_STRING:
        return "a string";
    case API_J_INT:
        return "an integer";
    case API_J_NUMBER:
        return "a number";
    case API_J_BOOL:
        return "a boolean";
    case API_J_OBJECT:
        return "an object";
    case API_J_ARRAY:
        return "an array";
    }
    return "?";
}

static const char *json_kind(const json_t *v)
{
    switch (json_typeof(v)) {
    case JSON_OBJECT:
        return "an object";
    case JSON_ARRAY:
        return "an array";
    case JSON_STRING:
        return "a string";
    case JSON_INTEGER:
        return "an integer";
    case JSON_REAL:
        return "a non-integer number";
    case JSON_TRUE:
    case JSON_FALSE:
        return "a boolean";
    case JSON_NULL:
        return "null";
    }
    return "?";
}

static bool jtype_ok(enum api_jtype t, const json_t *v)
{
    switch (t) {
    case API_J_STRING:
        return json_is_string(v);
    case API_J_INT:
        return json_is_integer(v);
    case API_J_NUMBER:
        return json_is_number(v);
    case API_J_BOOL:
        return json_is_boolean(v);
    case API_J_OBJECT:
        return json_is_object(v);
    case API_J_ARRAY:
        return json_is_array(v);
    }
    return false;
}

/* "a, b, c" (or "none"), for messages that say what is accepted. */
static char *field_list(const struct api_field *fields)
{
    size_t len = 1;
    for (const struct api_field *f = fields; f->name; f++)
        len += strlen(f->name) + 2;
    char *s = xmalloc(len + 4);
    s[0] = '\0';
    for (const struct api_field *f = fields; f->name; f++) {
        if (f != fields)
            strcat(s, ", ");
        strcat(s, f->name);
    }
    if (!fields->name)
        strcpy(s, "none");
    return s;
}

json_t *api_req_json(struct api_req *req, const struct api_field *fields)
{
    if (req->too_large) {
        api_reply_error(req, 413, "too_large", NULL,
                        "the request body is over the limit of %zu bytes", req->s->max_body);
        return NULL;
    }

    json_t *obj;
    if (req->body_len == 0) {
        obj = json_object();
    } else {
        /* Without JSON_ALLOW_NUL jansson refuses "\u0000" in strings. */
        json_error_t jerr;
        obj = json_loadb(req->body, req->body_len, JSON_REJECT_DUPLICATES, &jerr);
        if (!obj) {
            switch (json_error_code(&jerr)) {
            case json_error_invalid_utf8:
                api_reply_error(req, 400, "bad_request", NULL,
                                "the body is not valid UTF-8 (at byte %d)", jerr.position);
                break;
            case json_error_null_character:
                api_reply_error(req, 400, "bad_request", NULL,
                                "malformed JSON body at line %d, column %d: strings must not "
                                "contain NUL (\\u0000)",
                                jerr.line, jerr.column);
                break;
            default:
                api_reply_error(req, 400, "bad_request", NULL,
                                "malformed JSON body at line %d, column %d: %s", jerr.line,
                                jerr.column, jerr.text);
                break;
            }
            return NULL;
        }
        if (!json_is_object(obj)) {
            api_reply_error(req, 400, "bad_request", NULL,
                            "the body must be a JSON object, not %s", json_kind(obj));
            json_decref(obj);
            return NULL;
        }
    }

    const char *key;
    json_t *value;
    json_object_foreach(obj, key, value) {
        const struct api_field *f = fields;
        while (f->name && strcmp(f->name, key) != 0)
            f++;
        if (!f->name) {
            char *accepted = field_list(fields);
            api_reply_error(req, 400, "bad_request", key,
                            "unknown field \"%s\"; accepted fields: %s", key, accepted);
            free(accepted);
            goto err_put;
        }
        if (!jtype_ok(f->type, value)) {
            api_reply_error(req, 400, "bad_request", key, "field \"%s\" must be %s, not %s", key,
                            jtype_name(f->type), json_kind(value));
            goto err_put;
        }
    }
    for (const struct api_field *f = fields; f->name; f++) {
        if (f->required && !json_object_get(obj, f->name)) {
            api_reply_error(req, 400, "bad_request", f->name,
                            "missing required field \"%s\" (%s)", f->name, jtype_name(f->type));
            goto err_put;
        }
    }
    return obj;

err_put:
    json_decref(obj);
    return NULL;
}
