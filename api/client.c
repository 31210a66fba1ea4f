/*
 * The blocking REST client (client.h): one libcurl easy handle per client, so
 * that connections to the managers are kept and reused between requests
 * (curl_easy_reset() clears the options but keeps the connection cache).
 *
 * A request walks the URL list starting with the last one that answered
 * (or, if the last request found it failing, the one after it).
 * What happens next depends on how an attempt ended:
 *
 *   - no connection could be made (refused, unresolvable, 1 s connect
 *     timeout): the request was certainly not executed; try the next URL.
 *   - the connection broke after the request went out: an idempotent method
 *     is tried on the next URL; a POST or PATCH may have been executed, so it
 *     is not repeated and the caller gets DVS_EUNKNOWNOUTCOME.
 *   - 307 (a follower naming the leader): libcurl follows it, keeping the
 *     method (CURLOPT_CUSTOMREQUEST) and the body (CURLOPT_POSTREDIR), for at
 *     most 5 hops. A longer chain means the members disagree about who leads,
 *     which an election settles: it is handled like no_leader.
 *   - 503 "no_leader": no member can take the request now; the other URLs
 *     are tried, then the whole list again after a pause of 100-250 ms (an
 *     election takes ~0.5 s), until the deadline.
 *   - any other HTTP answer (including 503 "unknown_outcome") goes back to the
 *     caller as is.
 *
 * ERR lists the last outcome for every URL tried, so that a user can see what
 * was tried ("http://127.0.0.1:7001: connection refused; ...").
 */
#include <ctype.h>
#include <errno.h>
#include <inttypes.h>
#include <pthread.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <time.h>
#include <unistd.h>

#include <netinet/in.h>
#include <netinet/tcp.h>
#include <sys/socket.h>

#include <curl/curl.h>

#include "api/auth.h"
#include "api/client.h"
#include "common/util.h"
#include "dvs.h"

#define MAX_URLS 16
#define URL_MAX 256 /* struct api_response.url */
#define MAX_RESPONSE (16u << 20)
#define CONNECT_TIMEOUT_MS 1000
#define MAX_REDIRECTS 5
#define PAUSE_MIN_MS 100
#define PAUSE_MAX_MS 250
/* A member that stops acknowledging (cut off by the network) is given up
 * after about this long, even in the middle of a long blocking query. */
#define DEAD_PEER_MS 4000

struct api_client {
    CURL *curl;
    char urls[MAX_URLS][URL_MAX];
    char what[MAX_URLS][CURL_ERROR_SIZE + 192]; /* last outcome per URL for ERR; "" if untried */
    size_t nurls;
    size_t good; /* the URL that answered last */
    char curl_err[CURL_ERROR_SIZE];
    char auth_header[API_TOKEN_MAX + 32]; /* "Authorization: Bearer ..." or "" */
    char *ca_file;                        /* NULL: the system store */
};

/* How one attempt on one URL ended. */
enum attempt {
    ATT_ANSWER,      /* an HTTP answer for the caller */
    ATT_UNREACHABLE, /* not executed there: try the next URL */
    ATT_NO_LEADER,   /* no leader now: try the others, then again after a pause */
    ATT_TIMEOUT,     /* the deadline passed while waiting for an answer */
    ATT_MAYBE_DONE,  /* a POST/PATCH may have been executed: stop */
    ATT_TOO_BIG,     /* the answer is over MAX_RESPONSE */
    ATT_NOMEM,
};

struct rbuf {
    char *data;
    size_t len, cap;
    bool too_big, nomem;
};

static pthread_once_t curl_once = PTHREAD_ONCE_INIT;
static CURLcode curl_init_rc;

static void curl_init_once(void)
{
    curl_init_rc = curl_global_init(CURL_GLOBAL_DEFAULT);
}

/* ------------------------------------------------------------------------ */
/* Create and destroy                                                        */
/* ------------------------------------------------------------------------ */

/* One base URL of the list: "http[s]://host[:port]", trailing '/'s dropped. */
static int add_url(struct api_client *c, const char *s, size_t n, char *err, size_t errlen)
{
    while (n > 0 && isspace((unsigned char)*s)) {
        s++;
        n--;
    }
    while (n > 0 && isspace((unsigned char)s[n - 1]))
        n--;
    if (n == 0) {
        snprintf(err, errlen, "empty manager URL in the list");
        return -EINVAL;
    }
    size_t scheme = n >= 7 && memcmp(s, "http://", 7) == 0    ? 7
                    : n >= 8 && memcmp(s, "https://", 8) == 0 ? 8
                                                              : 0;
    while (scheme && n > scheme && s[n - 1] == '/')
        n--;
    if (scheme == 0 || n == scheme) {
        snprintf(err, errlen, "manager URL \"%.*s\" must be http://HOST:PORT or https://HOST:PORT",
                 (int)n, s);
        return -EINVAL;
    }
    for (size_t i = 0; i < n; i++) {
        if ((unsigned char)s[i] <= ' ' || s[i] == 0x7f || s[i] == '?' || s[i] == '#') {
            snprintf(err, errlen,
                     "manager URL \"%.*s\" has a space, control character, '?' or '#'", (int)n,
                     s);
            return -EINVAL;
        }
    }
    if (n >= URL_MAX) {
        snprintf(err, errlen, "manager URL \"%.40s...\" is longer than %d characters", s,
                 URL_MAX - 1);
        return -EINVAL;
    }
    if (c->nurls == MAX_URLS) {
        snprintf(err, errlen, "more than %d manager URLs", MAX_URLS);
        return -EINVAL;
    }
    memcpy(c->urls[c->nurls], s, n);
    c->urls[c->nurls][n] = '\0';
    c->nurls++;
    return 0;
}

int api_client_create(const char *urls, struct api_client **ret_client, char *err,
                      size_t errlen)
{
    char dummy[1];
    if (!err || errlen == 0) {
        err = dummy;
        errlen = sizeof(dummy);
    }
    err[0] = '\0';
    if (!urls || !*urls) {
        snprintf(err, errlen, "no manager URL given");
        return -EINVAL;
    }

    pthread_once(&curl_once, curl_init_once);
    if (curl_init_rc != CURLE_OK) {
        snprintf(err, errlen, "libcurl initialisation failed: %s",
                 curl_easy_strerror(curl_init_rc));
        return -ENOMEM;
    }

    struct api_client *c = calloc(1, sizeof(*c));
    if (!c)
        return -ENOMEM;
    int rv;
    for (const char *p = urls;;) {
        const char *end = strchrnul(p, ',');
        rv = add_url(c, p, (size_t)(end - p), err, errlen);
        if (rv)
            goto err_free;
        if (!*end)
            break;
        p = end + 1;
    }
    c->curl = curl_easy_init();
    if (!c->curl) {
        rv = -ENOMEM;
        goto err_free;
    }
    *ret_client = c;
    return 0;

err_free:
    free(c);
    return rv;
}

void api_client_destroy(struct api_client *c)
{
    if (!c)
        return;
    curl_easy_cleanup(c->curl);
    explicit_bzero(c->auth_header, sizeof(c->auth_header));
    free(c->ca_file);
    free(c);
}

int api_client_set_token(struct api_client *c, const char *token)
{
    if (!token || !*token) {
        c->auth_header[0] = '\0';
        return 0;
    }
    char hdr[API_TOKEN_MAX + 32], parsed[API_TOKEN_MAX + 1];
    snprintf(hdr, sizeof(hdr), "Bearer %.*s", API_TOKEN_MAX + 1, token);
    if (strlen(token) > API_TOKEN_MAX || api_bearer_parse(hdr, parsed, sizeof(parsed)) != 0)
        return -EINVAL;
    snprintf(c->auth_header, sizeof(c->auth_header), "Authorization: Bearer %s", token);
    explicit_bzero(hdr, sizeof(hdr));
    explicit_bzero(parsed, sizeof(parsed));
    return 0;
}

int api_client_set_ca_file(struct api_client *c, const char *ca_file)
{
    if (!ca_file || !*ca_file) {
        free(c->ca_file);
        c->ca_file = NULL;
        return 0;
    }
    if (access(ca_file, R_OK) != 0)
        return -errno;
    char *copy = strdup(ca_file);
    if (!copy)
        return -ENOMEM;
    free(c->ca_file);
    c->ca_file = copy;
    return 0;
}

int api_client_setup_auth(struct api_client *c, const char *token_file, const char *ca_file,
                          char *err, size_t errlen)
{
    char token[API_TOKEN_MAX + 1] = "";
    int rv;
    if (token_file && *token_file) {
        rv = api_token_load(token_file, token, NULL, err, errlen);
        if (rv)
            return rv;
    } else {
        const char *env = getenv("DVS_TOKEN");
        if (env && *env) {
            if (api_client_set_token(c, env) != 0) {
                snprintf(err, errlen,
                         "$DVS_TOKEN is not a valid token (1-%d characters of A-Z a-z 0-9 "
                         "- . _ ~ + /)",
                         API_TOKEN_MAX);
                return -EINVAL;
            }
        }
    }
    if (token[0] && api_client_set_token(c, token) != 0) {
        snprintf(err, errlen, "the token in %s is not valid", token_file);
        rv = -EINVAL;
        goto out;
    }
    const char *source = "--ca-file";
    if (!ca_file || !*ca_file) {
        ca_file = getenv("DVS_CA_FILE");
        source = "$DVS_CA_FILE";
    }
    rv = api_client_set_ca_file(c, ca_file);
    if (rv)
        snprintf(err, errlen, "cannot read the CA file %s (%s): %s", ca_file, source,
                 strerror(-rv));
out:
    explicit_bzero(token, sizeof(token));
    return rv;
}

void api_response_clear(struct api_response *r)
{
    if (!r)
        return;
    json_decref(r->body);
    free(r->raw);
    memset(r, 0, sizeof(*r));
}

/* ------------------------------------------------------------------------ */
/* One attempt                                                               */
/* ------------------------------------------------------------------------ */

static size_t on_write(char *ptr, size_t size, size_t nmemb, void *userdata)
{
    struct rbuf *b = userdata;
    size_t n = size * nmemb;
    if (n > MAX_RESPONSE - b->len) {
        b->too_big = true;
        return 0; /* aborts the transfer with CURLE_WRITE_ERROR */
    }
    if (b->len + n + 1 > b->cap) {
        size_t cap = b->cap ? b->cap : 4096;
        while (cap < b->len + n + 1)
            cap *= 2;
        char *p = realloc(b->data, cap);
        if (!p) {
            b->nomem = true;
            return 0;
        }
        b->data = p;
        b->cap = cap;
    }
    memcpy(b->data + b->len, ptr, n);
    b->len += n;
    b->data[b->len] = '\0';
    return n;
}

static bool is_idempotent(const char *method)
{
    return strcmp(method, "GET") == 0 || strcmp(method, "HEAD") == 0 ||
           strcmp(method, "PUT") == 0 || strcmp(method, "DELETE") == 0 ||
           strcmp(method, "OPTIONS") == 0;
}

/* "scheme://authority" of URL into OUT. */
static void base_of(const char *url, char *out, size_t outlen)
{
    const char *p = strstr(url, "://");
    size_t n = p ? (size_t)(p + 3 - url) + strcspn(p + 3, "/?#") : strlen(url);
    snprintf(out, outlen, "%.*s", (int)n, url);
}

/* What went wrong with URL IDX, in a few words. */
static void describe_failure(struct api_client *c, size_t idx, CURLcode cc, char *out,
                             size_t outlen)
{
    long os_errno = 0;
    const char *eff = NULL;
    char base[URL_MAX];
    size_t n = 0;
    curl_easy_getinfo(c->curl, CURLINFO_OS_ERRNO, &os_errno);
    curl_easy_getinfo(c->curl, CURLINFO_EFFECTIVE_URL, &eff);
    /* After a redirect, the trouble is with the member it named. */
    if (eff) {
        base_of(eff, base, sizeof(base));
        if (strcmp(base, c->urls[idx]) != 0)
            n = (size_t)snprintf(out, outlen, "redirected to %s: ", base);
    }
    if (n >= outlen)
        return;
    if (cc == CURLE_COULDNT_CONNECT && os_errno > 0) {
        snprintf(out + n, outlen - n, "%s", strerror((int)os_errno));
        out[n] = (char)tolower((unsigned char)out[n]); /* "connection refused" */
    } else if (cc == CURLE_COULDNT_RESOLVE_HOST) {
        snprintf(out + n, outlen - n, "host not found");
    } else if (cc == CURLE_PEER_FAILED_VERIFICATION || cc == CURLE_SSL_CACERT_BADFILE) {
        snprintf(out + n, outlen - n,
                 "TLS certificate not trusted (%s); give the CA that signed it with "
                 "--ca-file or $DVS_CA_FILE",
                 c->curl_err[0] ? c->curl_err : curl_easy_strerror(cc));
    } else if (cc == CURLE_SSL_CONNECT_ERROR) {
        snprintf(out + n, outlen - n, "TLS handshake failed (%s); is it an https:// member?",
                 c->curl_err[0] ? c->curl_err : curl_easy_strerror(cc));
    } else {
        snprintf(out + n, outlen - n, "%s",
                 c->curl_err[0] ? c->curl_err : curl_easy_strerror(cc));
    }
}

/* Is this a 503 answer whose JSON code is "no_leader"? */
static bool is_no_leader(long status, const struct rbuf *b)
{
    if (status != 503 || !b->data)
        return false;
    json_t *j = json_loadb(b->data, b->len, 0, NULL);
    const char *code = json_string_value(json_object_get(j, "code"));
    bool yes = code && strcmp(code, "no_leader") == 0;
    json_decref(j);
    return yes;
}

/*
 * Every connection to a member gets TCP keepalive probes (after 1 s idle,
 * every 1 s, 3 unanswered = dead) and a TCP user timeout: a member cut off
 * by the network is noticed within DEAD_PEER_MS and the request moves on to
 * the next URL. Without them a blocking query (the agents' orders watch)
 * sits out its whole timeout, tens of seconds, on a member that will never
 * answer, while the rest of the cluster moves on without it. A member that
 * is merely slow still acknowledges, and is waited for as before.
 */
static int on_sockopt(void *data, curl_socket_t fd, curlsocktype purpose)
{
    (void)data;
    if (purpose != CURLSOCKTYPE_IPCXN)
        return CURL_SOCKOPT_OK;
    int on = 1, idle = 1, intvl = 1, cnt = 3;
    unsigned user_timeout = DEAD_PEER_MS;
    /* Best effort: a socket without them still works, as before. */
    (void)setsockopt(fd, SOL_SOCKET, SO_KEEPALIVE, &on, sizeof(on));
    (void)setsockopt(fd, IPPROTO_TCP, TCP_KEEPIDLE, &idle, sizeof(idle));
    (void)setsockopt(fd, IPPROTO_TCP, TCP_KEEPINTVL, &intvl, sizeof(intvl));
    (void)setsockopt(fd, IPPROTO_TCP, TCP_KEEPCNT, &cnt, sizeof(cnt));
    (void)setsockopt(fd, IPPROTO_TCP, TCP_USER_TIMEOUT, &user_timeout, sizeof(user_timeout));
    return CURL_SOCKOPT_OK;
}

static enum attempt attempt(struct api_client *c, size_t idx, const char *method,
                            const char *path, const char *payload, size_t plen,
                            int64_t deadline, struct api_response *ret)
{
    CURL *h = c->curl;
    char *what = c->what[idx];
    const size_t wlen = sizeof(c->what[idx]);
    struct rbuf b = {0};
    struct curl_slist *hdrs = NULL, *tmp;
    enum attempt res;
    char url[URL_MAX + 2048];

    int64_t left = deadline - now_mono_ms();
    snprintf(url, sizeof(url), "%s%s", c->urls[idx], path);

    curl_easy_reset(h);
    c->curl_err[0] = '\0';
    curl_easy_setopt(h, CURLOPT_URL, url);
    curl_easy_setopt(h, CURLOPT_NOSIGNAL, 1L);
    curl_easy_setopt(h, CURLOPT_ERRORBUFFER, c->curl_err);
    curl_easy_setopt(h, CURLOPT_PROTOCOLS_STR, "http,https");
    curl_easy_setopt(h, CURLOPT_REDIR_PROTOCOLS_STR, "http,https");
    curl_easy_setopt(h, CURLOPT_FOLLOWLOCATION, 1L);
    curl_easy_setopt(h, CURLOPT_MAXREDIRS, (long)MAX_REDIRECTS);
    curl_easy_setopt(h, CURLOPT_POSTREDIR, (long)CURL_REDIR_POST_ALL);
    long connect_ms = left < CONNECT_TIMEOUT_MS ? (long)left : CONNECT_TIMEOUT_MS;
    curl_easy_setopt(h, CURLOPT_CONNECTTIMEOUT_MS, connect_ms);
    curl_easy_setopt(h, CURLOPT_TIMEOUT_MS, (long)left);
    curl_easy_setopt(h, CURLOPT_USERAGENT, "dvs");
    /* Certificates and host names are always checked (the defaults, made
     * explicit); the CA is ours when one was given. */
    curl_easy_setopt(h, CURLOPT_SSL_VERIFYPEER, 1L);
    curl_easy_setopt(h, CURLOPT_SSL_VERIFYHOST, 2L);
    if (c->ca_file)
        curl_easy_setopt(h, CURLOPT_CAINFO, c->ca_file);
    /* The token goes along a 307 to the leader: libcurl would drop it on a
     * hop to another host:port. Redirects come from members, which share it. */
    if (c->auth_header[0])
        curl_easy_setopt(h, CURLOPT_UNRESTRICTED_AUTH, 1L);
    curl_easy_setopt(h, CURLOPT_SOCKOPTFUNCTION, on_sockopt);
    curl_easy_setopt(h, CURLOPT_WRITEFUNCTION, on_write);
    curl_easy_setopt(h, CURLOPT_WRITEDATA, &b);

    /* "Expect:" turns off 100-continue: no extra round trip before a body. */
    const char *hv[] = {"Accept: application/json", "Expect:",
                        c->auth_header[0] ? c->auth_header : NULL,
                        payload ? "Content-Type: application/json" : NULL};
    for (size_t i = 0; i < sizeof(hv) / sizeof(hv[0]); i++) {
        if (!hv[i])
            continue;
        tmp = curl_slist_append(hdrs, hv[i]);
        if (!tmp) {
            res = ATT_NOMEM;
            goto out;
        }
        hdrs = tmp;
    }
    curl_easy_setopt(h, CURLOPT_HTTPHEADER, hdrs);

    if (strcmp(method, "GET") == 0 && !payload) {
        curl_easy_setopt(h, CURLOPT_HTTPGET, 1L);
    } else if (strcmp(method, "HEAD") == 0) {
        curl_easy_setopt(h, CURLOPT_NOBODY, 1L);
    } else {
        if (strcmp(method, "POST") == 0 || payload) {
            curl_easy_setopt(h, CURLOPT_POSTFIELDS, payload ? payload : "");
            curl_easy_setopt(h, CURLOPT_POSTFIELDSIZE_LARGE, (curl_off_t)plen);
        }
        /* Set for every method but POST: libcurl keeps a custom method on
         * every hop of a redirect, where it would otherwise send a POST. */
        if (strcmp(method, "POST") != 0)
            curl_easy_setopt(h, CURLOPT_CUSTOMREQUEST, method);
    }

    CURLcode cc = curl_easy_perform(h);
    if (cc == CURLE_OK) {
        long status = 0;
        curl_easy_getinfo(h, CURLINFO_RESPONSE_CODE, &status);
        if (is_no_leader(status, &b)) {
            snprintf(what, wlen, "no leader (503 no_leader)");
            res = ATT_NO_LEADER;
            goto out;
        }
        const char *eff = NULL, *ctype = NULL;
        curl_easy_getinfo(h, CURLINFO_EFFECTIVE_URL, &eff);
        curl_easy_getinfo(h, CURLINFO_CONTENT_TYPE, &ctype);
        ret->status = status;
        ret->raw = b.data ? b.data : strdup("");
        if (!ret->raw) {
            res = ATT_NOMEM;
            goto out;
        }
        ret->raw_len = b.len;
        b.data = NULL;
        if (ctype && strncasecmp(ctype, "application/json", 16) == 0 && ret->raw_len > 0)
            ret->body = json_loadb(ret->raw, ret->raw_len, 0, NULL);
        struct curl_header *xh;
        if (curl_easy_header(h, "X-Dvs-Index", 0, CURLH_HEADER, -1, &xh) == CURLHE_OK) {
            char *end;
            errno = 0;
            unsigned long long v = strtoull(xh->value, &end, 10);
            if (!errno && end != xh->value && *end == '\0')
                ret->index = (uint64_t)v;
        }
        base_of(eff ? eff : c->urls[idx], ret->url, sizeof(ret->url));
        snprintf(what, wlen, "answered %ld", status);
        res = ATT_ANSWER;
        goto out;
    }

    /* Did the request (or part of it) go out? A connection kept from an
     * earlier request has no connect time, hence the request size too. */
    curl_off_t connect_us = 0;
    long sent_bytes = 0;
    curl_easy_getinfo(h, CURLINFO_CONNECT_TIME_T, &connect_us);
    curl_easy_getinfo(h, CURLINFO_REQUEST_SIZE, &sent_bytes);
    bool connected = connect_us > 0 || sent_bytes > 0;
    switch (cc) {
    case CURLE_WRITE_ERROR:
        if (b.too_big) {
            snprintf(what, wlen, "the answer is larger than %u MiB", MAX_RESPONSE >> 20);
            res = ATT_TOO_BIG;
        } else {
            res = ATT_NOMEM;
        }
        break;
    case CURLE_TOO_MANY_REDIRECTS:
        snprintf(what, wlen, "more than %d redirects (members disagree about the leader)",
                 MAX_REDIRECTS);
        res = ATT_NO_LEADER;
        break;
    case CURLE_OPERATION_TIMEDOUT:
        if (!connected && now_mono_ms() < deadline) {
            snprintf(what, wlen, "no connection within %ld ms", connect_ms);
            res = ATT_UNREACHABLE;
        } else if (now_mono_ms() < deadline - 20) {
            /* Not our deadline: the connection itself timed out (keepalive
             * or user timeout, on_sockopt), the member is cut off. */
            if (is_idempotent(method)) {
                snprintf(what, wlen, "the member stopped acknowledging (connection timed out)");
                res = ATT_UNREACHABLE;
            } else {
                snprintf(what, wlen,
                         "the connection timed out after the request was sent; it may or may "
                         "not have been applied");
                res = ATT_MAYBE_DONE;
            }
        } else {
            snprintf(what, wlen, connected ? "timed out waiting for the answer" : "timed out");
            res = connected ? ATT_TIMEOUT : ATT_UNREACHABLE;
        }
        break;
    case CURLE_GOT_NOTHING:
    case CURLE_RECV_ERROR:
    case CURLE_SEND_ERROR:
    case CURLE_PARTIAL_FILE:
        if (connected && !is_idempotent(method)) {
            snprintf(what, wlen,
                     "the connection broke after the request was sent; it may or may not "
                     "have been applied");
            res = ATT_MAYBE_DONE;
            break;
        }
        /* fall through */
    default:
        describe_failure(c, idx, cc, what, wlen);
        res = ATT_UNREACHABLE;
        break;
    }

out:
    curl_slist_free_all(hdrs);
    free(b.data);
    return res;
}

/* ------------------------------------------------------------------------ */
/* Requests                                                                  */
/* ------------------------------------------------------------------------ */

/* "url: what; url: what" for every URL tried. */
static void format_tried(const struct api_client *c, const char *prefix, char *err,
                         size_t errlen)
{
    size_t n = (size_t)snprintf(err, errlen, "%s", prefix);
    for (size_t i = 0; i < c->nurls && n < errlen; i++) {
        if (!c->what[i][0])
            continue;
        n += (size_t)snprintf(err + n, errlen - n, "%s%s: %s", n > 0 ? "; " : "", c->urls[i],
                              c->what[i]);
    }
}

static void pause_ms(int64_t ms)
{
    if (ms <= 0)
        return;
    struct timespec ts = {.tv_sec = ms / 1000, .tv_nsec = (ms % 1000) * 1000000};
    while (nanosleep(&ts, &ts) != 0 && errno == EINTR)
        ;
}

int api_client_request(struct api_client *c, const char *method, const char *path,
                       json_t *body, long timeout_ms, struct api_response *ret, char *err,
                       size_t errlen)
{
    char dummy[1];
    char *payload = NULL;
    size_t plen = 0;
    int rv;

    memset(ret, 0, sizeof(*ret));
    if (!err || errlen == 0) {
        err = dummy;
        errlen = sizeof(dummy);
    }
    err[0] = '\0';
    if (!method || !*method || strspn(method, "ABCDEFGHIJKLMNOPQRSTUVWXYZ") != strlen(method)) {
        snprintf(err, errlen, "HTTP method \"%s\" is not an upper-case word",
                 method ? method : "(null)");
        return -EINVAL;
    }
    if (!path || path[0] != '/' || strlen(path) > 2000 || strpbrk(path, " \t\r\n#")) {
        snprintf(err, errlen,
                 "request path \"%.60s\" must start with '/', have no spaces or '#', and be "
                 "at most 2000 bytes",
                 path ? path : "(null)");
        return -EINVAL;
    }
    if (timeout_ms <= 0) {
        snprintf(err, errlen, "the timeout (%ld ms) must be positive", timeout_ms);
        return -EINVAL;
    }
    if (body) {
        payload = json_dumps(body, JSON_COMPACT | JSON_ENCODE_ANY);
        if (!payload) {
            snprintf(err, errlen, "the request body cannot be encoded as JSON");
            return -EINVAL;
        }
        plen = strlen(payload);
    }

    for (size_t i = 0; i < c->nurls; i++)
        c->what[i][0] = '\0';
    int64_t deadline = now_mono_ms() + timeout_ms;
    bool no_leader = false; /* some member answered: an election may fix it */
    bool waited = false;    /* the deadline passed with a request in flight */
    for (;;) {
        bool retry = false;
        size_t start = c->good;
        for (size_t k = 0; k < c->nurls; k++) {
            size_t idx = (start + k) % c->nurls;
            if (deadline - now_mono_ms() <= 0)
                goto out_of_time;
            enum attempt a = attempt(c, idx, method, path, payload, plen, deadline, ret);
            /* The member we started with failed us: the next request starts
             * with the next one. Otherwise a short request (a heartbeat) that
             * spends its whole budget on an unreachable member would try
             * that member alone, again and again, for as long as it is cut
             * off, and never reach the others. */
            if (a != ATT_ANSWER && idx == c->good)
                c->good = (idx + 1) % c->nurls;
            switch (a) {
            case ATT_ANSWER:
                /* Next time, start with the member that answered (the leader
                 * after a redirect, if it is on our list). */
                c->good = idx;
                for (size_t i = 0; i < c->nurls; i++)
                    if (strcmp(c->urls[i], ret->url) == 0)
                        c->good = i;
                err[0] = '\0';
                rv = 0;
                goto out;
            case ATT_UNREACHABLE:
                break;
            case ATT_NO_LEADER:
                no_leader = retry = true;
                break;
            case ATT_TIMEOUT:
                waited = true;
                goto out_of_time;
            case ATT_MAYBE_DONE:
                format_tried(c, "", err, errlen);
                rv = DVS_EUNKNOWNOUTCOME;
                goto out;
            case ATT_TOO_BIG:
                format_tried(c, "", err, errlen);
                rv = DVS_ETOOBIG;
                goto out;
            case ATT_NOMEM:
                rv = -ENOMEM;
                goto out;
            }
        }
        if (!retry) {
            format_tried(c, "", err, errlen);
            rv = DVS_EUNAVAILABLE;
            goto out;
        }
        /* Jittered, so that clients do not all come back at once. Near the
         * deadline, a shorter pause still leaves time for a last round. */
        int64_t left = deadline - now_mono_ms();
        int64_t pause = PAUSE_MIN_MS + (int64_t)(random_u64() % (PAUSE_MAX_MS - PAUSE_MIN_MS + 1));
        if (left <= PAUSE_MIN_MS)
            break;
        if (pause > left - PAUSE_MIN_MS / 2)
            pause = left - PAUSE_MIN_MS / 2;
        pause_ms(pause);
    }

out_of_time:
    if (no_leader) {
        format_tried(c, "no leader was elected in time: ", err, errlen);
        rv = DVS_ENOLEADER;
    } else {
        char prefix[64];
        snprintf(prefix, sizeof(prefix), "no answer within %ld ms: ", timeout_ms);
        format_tried(c, prefix, err, errlen);
        rv = waited ? DVS_ETIMEOUT : DVS_EUNAVAILABLE;
    }
out:
    free(payload);
    if (rv)
        api_response_clear(ret);
    return rv;
}
