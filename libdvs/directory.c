/*
 * The directory client: libcurl for HTTP, jansson for JSON (directory.h).
 */
#include <errno.h>
#include <inttypes.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <curl/curl.h>
#include <jansson.h>

#include "control.h"
#include "directory.h"
#include "net.h"

#define MAX_MANAGERS 16
#define MAX_URL 512
#define MAX_BODY (64 * 1024) /* docs/api.md's limit; an endpoint is far smaller */
#define CACHE_SIZE 64
#define CONNECT_TIMEOUT_MS 1000
/* Slack over the blocking query's wait before the HTTP request gives up. */
#define WAIT_SLACK_MS 2000

struct cache_entry {
    char name[DVS_MAX_NAME + 1];
    struct dvs__location loc;
    uint64_t last_use;
};

struct dvs__dir {
    char *urls[MAX_MANAGERS];
    unsigned n_urls;
    unsigned preferred; /* the member that answered last; under lock */
    pthread_mutex_t lock;
    struct cache_entry cache[CACHE_SIZE];
    uint64_t clock;
    dvs_log_fn log;
    void *log_data;
    /* docs/security.md: "Authorization: Bearer $DVS_TOKEN" and $DVS_CA_FILE,
     * read once at creation. */
    char auth_header[320];
    char *ca_file;
};

__attribute__((format(printf, 3, 4))) static void dlog(const struct dvs__dir *d, int level,
                                                       const char *fmt, ...)
{
    if (d->log == NULL)
        return;
    char msg[512];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);
    d->log(d->log_data, level, msg);
}

bool dvs__location_newer(const struct dvs__location *b, const struct dvs__location *a)
{
    if (b->address[0] == '\0')
        return false;
    if (b->generation != a->generation)
        return b->generation > a->generation;
    return strcmp(b->address, a->address) != 0 && a->address[0] == '\0';
}

/* ---------------------------------------------------------------------------
 * Setup
 */

static pthread_once_t curl_once = PTHREAD_ONCE_INIT;
static CURLcode curl_init_result;

static void curl_init(void)
{
    /* Not thread-safe in older libcurl, hence the once. */
    curl_init_result = curl_global_init(CURL_GLOBAL_DEFAULT);
}

int dvs__dir_create(const char *managers, dvs_log_fn log, void *log_data,
                    struct dvs__dir **ret_dir)
{
    pthread_once(&curl_once, curl_init);
    if (curl_init_result != CURLE_OK)
        return -ENOMEM;

    struct dvs__dir *d = calloc(1, sizeof(*d));
    if (d == NULL)
        return -ENOMEM;
    d->log = log;
    d->log_data = log_data;
    pthread_mutex_init(&d->lock, NULL);

    int rv = 0;
    const char *p = managers;
    while (*p != '\0') {
        const char *comma = strchr(p, ',');
        size_t len = comma != NULL ? (size_t)(comma - p) : strlen(p);
        while (len > 0 && p[len - 1] == '/') /* "http://h:7001/" */
            len--;
        if (len == 0 || len >= MAX_URL - 100 || d->n_urls == MAX_MANAGERS ||
            (strncmp(p, "http://", 7) != 0 && strncmp(p, "https://", 8) != 0)) {
            rv = -EINVAL;
            goto err;
        }
        for (size_t i = 0; i < len; i++) {
            if (p[i] <= ' ' || p[i] > '~') {
                rv = -EINVAL;
                goto err;
            }
        }
        if ((d->urls[d->n_urls] = strndup(p, len)) == NULL) {
            rv = -ENOMEM;
            goto err;
        }
        d->n_urls++;
        if (comma == NULL)
            break;
        p = comma + 1;
    }
    if (d->n_urls == 0) {
        rv = -EINVAL;
        goto err;
    }
    const char *token = getenv("DVS_TOKEN");
    if (token != NULL && *token != '\0') {
        /* A header must not smuggle a second line in. */
        size_t n = strlen(token);
        if (n > 256 || strcspn(token, " \t\r\n") != n) {
            dlog(d, DVS_LOG_ERROR, "DVS_TOKEN is not a valid token (1-256 characters, no "
                                   "spaces or line breaks)");
            rv = -EINVAL;
            goto err;
        }
        snprintf(d->auth_header, sizeof d->auth_header, "Authorization: Bearer %s", token);
    }
    const char *ca = getenv("DVS_CA_FILE");
    if (ca != NULL && *ca != '\0' && (d->ca_file = strdup(ca)) == NULL) {
        rv = -ENOMEM;
        goto err;
    }
    *ret_dir = d;
    return 0;

err:
    dvs__dir_destroy(d);
    return rv;
}

void dvs__dir_destroy(struct dvs__dir *d)
{
    if (d == NULL)
        return;
    for (unsigned i = 0; i < d->n_urls; i++)
        free(d->urls[i]);
    free(d->ca_file);
    explicit_bzero(d->auth_header, sizeof d->auth_header);
    pthread_mutex_destroy(&d->lock);
    free(d);
}

/* ---------------------------------------------------------------------------
 * The cache
 */

static struct cache_entry *cache_find(struct dvs__dir *d, const char *name)
{
    for (unsigned i = 0; i < CACHE_SIZE; i++)
        if (d->cache[i].name[0] != '\0' && strcmp(d->cache[i].name, name) == 0)
            return &d->cache[i];
    return NULL;
}

static void cache_put(struct dvs__dir *d, const char *name, const struct dvs__location *loc)
{
    pthread_mutex_lock(&d->lock);
    struct cache_entry *e = cache_find(d, name);
    if (e == NULL) {
        e = &d->cache[0];
        for (unsigned i = 1; i < CACHE_SIZE; i++)
            if (d->cache[i].last_use < e->last_use)
                e = &d->cache[i];
        snprintf(e->name, sizeof e->name, "%s", name);
        e->loc = *loc;
    } else if (loc->generation >= e->loc.generation) {
        /* Keep a known index when the new fact (a moved reply) has none. */
        uint64_t index = loc->index > e->loc.index ? loc->index : e->loc.index;
        e->loc = *loc;
        e->loc.index = index;
    }
    e->last_use = ++d->clock;
    pthread_mutex_unlock(&d->lock);
}

static bool cache_get(struct dvs__dir *d, const char *name, struct dvs__location *ret)
{
    pthread_mutex_lock(&d->lock);
    struct cache_entry *e = cache_find(d, name);
    if (e != NULL) {
        *ret = e->loc;
        e->last_use = ++d->clock;
    }
    pthread_mutex_unlock(&d->lock);
    return e != NULL;
}

void dvs__dir_learn(struct dvs__dir *d, const char *name, const struct dvs__location *loc)
{
    cache_put(d, name, loc);
}

/* ---------------------------------------------------------------------------
 * HTTP
 */

struct body {
    char data[MAX_BODY + 1];
    size_t len;
    bool too_big;
};

static size_t body_write(char *ptr, size_t size, size_t nmemb, void *userdata)
{
    struct body *b = userdata;
    size_t n = size * nmemb;
    if (n > MAX_BODY - b->len) {
        b->too_big = true;
        return 0; /* aborts the transfer */
    }
    memcpy(b->data + b->len, ptr, n);
    b->len += n;
    return n;
}

int dvs__dir_parse_endpoint(const char *body, size_t len, const char *name,
                            struct dvs__location *ret)
{
    json_error_t jerr;
    json_t *root = json_loadb(body, len, JSON_REJECT_DUPLICATES, &jerr);
    int rv = DVS_EPROTO;
    if (root == NULL || !json_is_object(root))
        goto out;

    json_t *jname = json_object_get(root, "name");
    json_t *jaddr = json_object_get(root, "address");
    json_t *jgen = json_object_get(root, "generation");
    json_t *jidx = json_object_get(root, "modify_index");
    json_t *jstate = json_object_get(root, "state");
    if (!json_is_string(jname) || strcmp(json_string_value(jname), name) != 0)
        goto out;
    if (!json_is_integer(jgen) || json_integer_value(jgen) < 0)
        goto out;
    if (jidx != NULL && (!json_is_integer(jidx) || json_integer_value(jidx) < 0))
        goto out;
    if (jaddr != NULL && !json_is_null(jaddr) && !json_is_string(jaddr))
        goto out;

    struct dvs__location loc = {
        .generation = (uint64_t)json_integer_value(jgen),
        .index = jidx != NULL ? (uint64_t)json_integer_value(jidx) : 0,
    };
    /* Only a running (or migrating, still on its source) instance serves. */
    const char *state = json_is_string(jstate) ? json_string_value(jstate) : "running";
    bool serving = strcmp(state, "running") == 0 || strcmp(state, "migrating") == 0;
    if (json_is_string(jaddr) && serving) {
        const char *a = json_string_value(jaddr);
        char host[256];
        uint16_t port;
        if (strlen(a) > DVS__FRAME_MAX_TEXT ||
            dvs__parse_hostport(a, host, sizeof host, &port, false) != 0)
            goto out;
        memcpy(loc.address, a, strlen(a) + 1);
    }
    *ret = loc;
    rv = 0;
out:
    json_decref(root);
    return rv;
}

/*
 * One GET against one manager. Returns 0 (with *ret), DVS_ENOTFOUND,
 * DVS_EPROTO, or -EAGAIN: try another member.
 */
static int get_one(struct dvs__dir *d, const char *base, const char *name, uint64_t index,
                   int64_t wait_ms, int64_t deadline, struct body *b,
                   struct dvs__location *ret)
{
    char url[MAX_URL];
    if (wait_ms > 0)
        snprintf(url, sizeof url, "%s/v1/endpoints/%s?index=%" PRIu64 "&wait=%" PRId64 "ms",
                 base, name, index, wait_ms);
    else
        snprintf(url, sizeof url, "%s/v1/endpoints/%s", base, name);

    int64_t budget = deadline - dvs__now_ms();
    int64_t limit = wait_ms + WAIT_SLACK_MS;
    if (budget <= 0)
        return DVS_ETIMEOUT;
    CURL *h = curl_easy_init();
    if (h == NULL)
        return -ENOMEM;
    b->len = 0;
    b->too_big = false;
    curl_easy_setopt(h, CURLOPT_URL, url);
    curl_easy_setopt(h, CURLOPT_NOSIGNAL, 1L); /* we are in the caller's threads */
    curl_easy_setopt(h, CURLOPT_CONNECTTIMEOUT_MS, (long)(budget < CONNECT_TIMEOUT_MS ? budget : CONNECT_TIMEOUT_MS));
    curl_easy_setopt(h, CURLOPT_TIMEOUT_MS, (long)(budget < limit ? budget : limit));
    curl_easy_setopt(h, CURLOPT_FOLLOWLOCATION, 1L); /* ?consistent reads redirect */
    curl_easy_setopt(h, CURLOPT_MAXREDIRS, 3L);
    curl_easy_setopt(h, CURLOPT_PROTOCOLS_STR, "http,https");
    curl_easy_setopt(h, CURLOPT_WRITEFUNCTION, body_write);
    curl_easy_setopt(h, CURLOPT_WRITEDATA, b);
    curl_easy_setopt(h, CURLOPT_SSL_VERIFYPEER, 1L);
    curl_easy_setopt(h, CURLOPT_SSL_VERIFYHOST, 2L);
    if (d->ca_file != NULL)
        curl_easy_setopt(h, CURLOPT_CAINFO, d->ca_file);
    struct curl_slist *hdrs = NULL;
    if (d->auth_header[0] != '\0') {
        hdrs = curl_slist_append(NULL, d->auth_header);
        if (hdrs == NULL) {
            curl_easy_cleanup(h);
            return -ENOMEM;
        }
        curl_easy_setopt(h, CURLOPT_HTTPHEADER, hdrs);
        /* Kept on a redirect to the leader: members share their tokens. */
        curl_easy_setopt(h, CURLOPT_UNRESTRICTED_AUTH, 1L);
    }
    CURLcode cc = curl_easy_perform(h);
    long status = 0;
    curl_easy_getinfo(h, CURLINFO_RESPONSE_CODE, &status);
    curl_easy_cleanup(h);
    curl_slist_free_all(hdrs);

    if (cc != CURLE_OK) {
        bool tls = cc == CURLE_PEER_FAILED_VERIFICATION || cc == CURLE_SSL_CACERT_BADFILE ||
                   cc == CURLE_SSL_CONNECT_ERROR;
        dlog(d, tls ? DVS_LOG_WARN : DVS_LOG_DEBUG, "directory %s: %s%s", url,
             b->too_big ? "answer too large" : curl_easy_strerror(cc),
             tls ? " (set DVS_CA_FILE to the CA that signed the manager's certificate)" : "");
        if (cc == CURLE_OPERATION_TIMEDOUT && dvs__now_ms() >= deadline)
            return DVS_ETIMEOUT;
        return -EAGAIN;
    }
    if (status == 404)
        return DVS_ENOTFOUND;
    if (status == 401 || status == 403) {
        dlog(d, DVS_LOG_WARN,
             "directory %s: HTTP %ld: the manager wants a token (set DVS_TOKEN to its read "
             "token)",
             url, status);
        return -EACCES;
    }
    if (status != 200) {
        dlog(d, DVS_LOG_DEBUG, "directory %s: HTTP %ld", url, status);
        return -EAGAIN; /* 503 no leader, 500...: another member may do */
    }
    int rv = dvs__dir_parse_endpoint(b->data, b->len, name, ret);
    if (rv != 0)
        dlog(d, DVS_LOG_WARN, "directory %s: malformed endpoint object", url);
    return rv;
}

/* A GET against the members in turn, starting with the last that answered. */
static int get_any(struct dvs__dir *d, const char *name, uint64_t index, int64_t wait_ms,
                   int64_t deadline, struct dvs__location *ret)
{
    struct body *b = malloc(sizeof(*b));
    if (b == NULL)
        return -ENOMEM;
    pthread_mutex_lock(&d->lock);
    unsigned first = d->preferred;
    pthread_mutex_unlock(&d->lock);

    int rv = DVS_EUNAVAILABLE;
    for (unsigned i = 0; i < d->n_urls; i++) {
        unsigned k = (first + i) % d->n_urls;
        rv = get_one(d, d->urls[k], name, index, wait_ms, deadline, b, ret);
        if (rv == -EAGAIN) {
            rv = DVS_EUNAVAILABLE;
            continue;
        }
        if (rv != DVS_ETIMEOUT) {
            pthread_mutex_lock(&d->lock);
            d->preferred = k;
            pthread_mutex_unlock(&d->lock);
        }
        break;
    }
    free(b);
    return rv;
}

int dvs__dir_resolve(struct dvs__dir *d, const char *name, const struct dvs__location *known,
                     int64_t wait_ms, int64_t deadline, struct dvs__location *ret)
{
    struct dvs__location loc;
    int rv;

    if (known == NULL && cache_get(d, name, ret))
        return 0;
    rv = get_any(d, name, 0, 0, deadline, &loc);
    if (rv != 0)
        return rv;

    if (known != NULL && !dvs__location_newer(&loc, known) && wait_ms > 0) {
        /* Nothing new yet: wait for the entry to change (a commit, a restart). */
        int64_t left = deadline - dvs__now_ms() - 100;
        if (wait_ms > left)
            wait_ms = left;
        if (wait_ms > 0) {
            uint64_t index = loc.index > known->index ? loc.index : known->index;
            struct dvs__location later;
            rv = get_any(d, name, index, wait_ms, deadline, &later);
            if (rv == 0)
                loc = later;
            else if (rv != DVS_ETIMEOUT && rv != DVS_EUNAVAILABLE)
                return rv;
        }
    }
    cache_put(d, name, &loc);
    /* The cache may know better (a moved reply newer than this member). */
    if (!cache_get(d, name, ret))
        *ret = loc;
    return 0;
}
