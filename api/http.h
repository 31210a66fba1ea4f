/*
 * The REST layer's HTTP server: libmicrohttpd driven from a libuv loop.
 *
 * MHD runs without threads of its own (external event loop, epoll mode): the
 * server polls MHD's epoll fd with a uv_poll_t and MHD's timeout with a
 * uv_timer_t, so every handler runs on the daemon's loop thread and may touch
 * Raft and the FSM directly.
 *
 * Requests may be answered later (asynchronously): a handler that returns
 * without replying keeps the request; the connection is suspended until one
 * of the api_reply_* functions is called (from any callback on the same loop).
 * Every request is answered exactly once. If the client disconnects first,
 * the close callback (if set) runs and the request must not be used after.
 */
#ifndef DVS_API_HTTP_H
#define DVS_API_HTTP_H

#include <jansson.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <uv.h>

#include "api/auth.h"

struct api_server;
struct api_req;

typedef void (*api_handler_fn)(struct api_req *req, void *data);
typedef void (*api_close_fn)(struct api_req *req, void *data);

/*
 * A route: METHOD and a PATTERN such as "/v1/nodes/{id}/heartbeat"; a {name}
 * segment matches one non-empty path segment and is available through
 * api_req_param(). The table ends with a NULL method. A path that matches a
 * pattern with another method gets 405; no pattern at all, 404.
 *
 * ACCESS says which token the route needs when the server has tokens
 * (api/auth.h); left out (0) it goes by the method: GET and HEAD read,
 * anything else manages. The check runs as soon as the headers are in,
 * before the body is read and before the handler: a refused request gets
 * 401 {"code":"unauthorized"} (no or malformed Authorization header, with
 * WWW-Authenticate: Bearer) or 403 {"code":"forbidden"} (a wrong token, or
 * one whose role may not use the route).
 */
struct api_route {
    const char *method;
    const char *pattern;
    api_handler_fn fn;
    enum api_access access;
};

struct api_server_config {
    const char *host;   /* IPv4/IPv6 literal or "localhost"; bind address */
    uint16_t port;      /* 0 = any free port (see api_server_port) */
    size_t max_body;    /* bodies over this get 413; default 64 KiB when 0 */
    unsigned max_connections; /* default 1024 when 0 */
    unsigned conn_timeout_s;  /* idle connection timeout; default 60 when 0 */

    /* Bearer tokens (borrowed; must outlive the server). NULL or none set:
     * every route is open. */
    const struct api_tokens *tokens;

    /* TLS (HTTPS) when both are set: PEM text of the certificate chain and
     * of its private key (borrowed: libmicrohttpd does not say whether it
     * keeps the pointers, so they must outlive the server). */
    const char *tls_cert_pem;
    const char *tls_key_pem;
};

/*
 * Start serving on LOOP. ROUTES and DATA are borrowed and must outlive the
 * server; DATA is passed to every handler. Returns 0, -EADDRINUSE, -EINVAL
 * (bad host), -ENOTSUP (TLS asked for but libmicrohttpd was built without
 * it), -EPROTO (MHD refused to start: with TLS, a certificate or key it
 * cannot use), or another negative errno.
 */
int api_server_start(uv_loop_t *loop, const struct api_server_config *cfg,
                     const struct api_route *routes, void *data,
                     struct api_server **ret_server);

/* The port actually bound. */
uint16_t api_server_port(const struct api_server *s);

/*
 * Stop: answer every request still held with 503 {"code":"shutdown"} and run
 * its close callback, as if the client had gone away (so no owner keeps a
 * pointer to it), stop listening, and close the uv handles; CB (may be NULL)
 * runs once everything is closed. Accepts NULL.
 */
void api_server_stop(struct api_server *s, void (*cb)(void *data), void *data);

/* ---- Request accessors (valid until the reply or the close callback). ---- */
const char *api_req_method(const struct api_req *req);
const char *api_req_path(const struct api_req *req);  /* without the query */
const char *api_req_url(const struct api_req *req);   /* path + "?" + query as received */
const char *api_req_param(const struct api_req *req, const char *name);   /* {name} */
const char *api_req_query(const struct api_req *req, const char *name);   /* NULL if absent */
bool api_req_has_query(const struct api_req *req, const char *name);     /* "?consistent" */
const char *api_req_header(const struct api_req *req, const char *name);
const char *api_req_body(const struct api_req *req, size_t *ret_len);   /* NUL-terminated */
const char *api_req_peer(const struct api_req *req);                     /* "ip:port" */

/* Per-request user pointer, and a callback if the client goes away first. */
void api_req_set_data(struct api_req *req, void *data);
void *api_req_get_data(const struct api_req *req);
void api_req_on_close(struct api_req *req, api_close_fn fn, void *data);

/* Add a response header (copied) before replying. */
void api_req_add_header(struct api_req *req, const char *name, const char *value);

/* ---- Replies: exactly one per request. ---- */

/* BODY is stolen (decref'd by the call). */
void api_reply_json(struct api_req *req, unsigned status, json_t *body);

/* {"error": formatted message, "code": CODE, "field": FIELD (if non-NULL)} */
void api_reply_error(struct api_req *req, unsigned status, const char *code,
                     const char *field, const char *fmt, ...)
    __attribute__((format(printf, 5, 6)));

/*
 * Map a DVS_E* code or a negated errno to the HTTP status and JSON code of the one
 * table (STYLE.md 9) and reply with MSG (or dvs_strerror(err) when NULL).
 */
void api_reply_err(struct api_req *req, int err, const char *field, const char *msg);
unsigned api_err_status(int err);
const char *api_err_code(int err);

void api_reply_text(struct api_req *req, unsigned status, const char *content_type,
                    const char *text);

/* 307 to BASE_URL ("http://host:port") + this request's path and query. */
void api_reply_redirect(struct api_req *req, const char *base_url);

/* ---- Bodies ---- */

enum api_jtype { API_J_STRING, API_J_INT, API_J_NUMBER, API_J_BOOL, API_J_OBJECT,
                 API_J_ARRAY };

struct api_field {
    const char *name;
    enum api_jtype type;
    bool required;
};

/*
 * Parse the body as a JSON object and check it against FIELDS (ending with a
 * NULL name): no unknown fields, right types, required ones present, strings
 * without NUL bytes. On failure replies 400 naming the field and what is
 * accepted (or 413 for an oversize body) and returns NULL; on success returns
 * a new reference. An empty body counts as {} when no field is required.
 */
json_t *api_req_json(struct api_req *req, const struct api_field *fields);

#endif
