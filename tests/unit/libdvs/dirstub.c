/*
 * The directory stand-in for the tests (see dirstub.h). Deliberately simple
 * HTTP/1.1: one request per connection, "Connection: close".
 */
#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <netinet/in.h>
#include <poll.h>
#include <pthread.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include "dirstub.h"

#define MAX_ENTRIES 16
#define MAX_THREADS 1024

struct entry {
    bool used;
    char name[64];
    char address[128]; /* "" = null */
    char state[16];
    uint64_t generation;
    uint64_t index;
};

struct dirstub {
    int listen_fd;
    int stop_pipe[2];
    pthread_t acceptor;
    pthread_mutex_t lock;
    pthread_cond_t changed;
    bool stopping;
    uint64_t index;
    struct entry entries[MAX_ENTRIES];
    pthread_t threads[MAX_THREADS];
    unsigned n_threads;
    unsigned gets, blocking_gets;
};

struct conn_arg {
    struct dirstub *d;
    int fd;
};

static struct entry *find(struct dirstub *d, const char *name)
{
    for (int i = 0; i < MAX_ENTRIES; i++)
        if (d->entries[i].used && strcmp(d->entries[i].name, name) == 0)
            return &d->entries[i];
    return NULL;
}

static void respond(int fd, int status, const char *body, uint64_t index)
{
    char buf[2048];
    int n = snprintf(buf, sizeof buf,
                     "HTTP/1.1 %d %s\r\nContent-Type: application/json\r\n"
                     "Content-Length: %zu\r\nX-Dvs-Index: %" PRIu64 "\r\nConnection: close\r\n\r\n%s",
                     status, status == 200 ? "OK" : status == 404 ? "Not Found" : "Bad Request",
                     strlen(body), index, body);
    ssize_t off = 0;
    while (off < n) {
        ssize_t w = send(fd, buf + off, (size_t)(n - off), MSG_NOSIGNAL);
        if (w <= 0)
            return;
        off += w;
    }
}

/* "500ms", "2s" -> ms; 0 on anything else. */
static int64_t parse_wait(const char *s)
{
    char *end;
    long long v = strtoll(s, &end, 10);
    if (strncmp(end, "ms", 2) == 0)
        return v;
    if (*end == 's')
        return v * 1000;
    return 0;
}

static void serve(struct dirstub *d, int fd)
{
    char req[8192];
    size_t len = 0;
    while (len < sizeof req - 1) {
        ssize_t n = recv(fd, req + len, sizeof req - 1 - len, 0);
        if (n <= 0)
            return;
        len += (size_t)n;
        req[len] = '\0';
        if (strstr(req, "\r\n\r\n") != NULL)
            break;
    }
    char path[1024];
    if (sscanf(req, "GET %1023s HTTP/1.", path) != 1 || strncmp(path, "/v1/endpoints/", 14) != 0) {
        respond(fd, 400, "{\"error\":\"bad request\",\"code\":\"bad_request\"}", 0);
        return;
    }
    char *name = path + 14;
    char *query = strchr(name, '?');
    uint64_t want_index = 0;
    int64_t wait_ms = 0;
    if (query != NULL) {
        *query++ = '\0';
        for (char *tok = strtok(query, "&"); tok != NULL; tok = strtok(NULL, "&")) {
            if (strncmp(tok, "index=", 6) == 0)
                want_index = strtoull(tok + 6, NULL, 10);
            else if (strncmp(tok, "wait=", 5) == 0)
                wait_ms = parse_wait(tok + 5);
        }
    }

    pthread_mutex_lock(&d->lock);
    d->gets++;
    if (wait_ms > 0) {
        d->blocking_gets++;
        struct timespec until;
        clock_gettime(CLOCK_REALTIME, &until);
        until.tv_sec += wait_ms / 1000;
        until.tv_nsec += (wait_ms % 1000) * 1000000L;
        if (until.tv_nsec >= 1000000000L) {
            until.tv_sec++;
            until.tv_nsec -= 1000000000L;
        }
        for (;;) {
            struct entry *e = find(d, name);
            if (d->stopping || e == NULL || e->index > want_index)
                break;
            if (pthread_cond_timedwait(&d->changed, &d->lock, &until) == ETIMEDOUT)
                break;
        }
    }
    struct entry *e = find(d, name);
    char body[1024];
    int status = 404;
    uint64_t index = d->index;
    if (e != NULL) {
        char addr[160];
        if (e->address[0] != '\0')
            snprintf(addr, sizeof addr, "\"%s\"", e->address);
        else
            strcpy(addr, "null");
        snprintf(body, sizeof body,
                 "{\"name\":\"%.63s\",\"id\":1,\"command\":\"svc\",\"node\":\"n1\",\"address\":%s,"
                 "\"generation\":%" PRIu64 ",\"state\":\"%s\",\"arena_size\":1048576,"
                 "\"arena_addr\":\"0x7e3000000000\",\"created_at\":1,\"modify_index\":%" PRIu64 "}",
                 e->name, addr, e->generation, e->state, e->index);
        status = 200;
        index = e->index;
    } else {
        snprintf(body, sizeof body, "{\"error\":\"no endpoint %.64s\",\"code\":\"not_found\"}", name);
    }
    pthread_mutex_unlock(&d->lock);
    respond(fd, status, body, index);
}

static void *conn_main(void *arg)
{
    struct conn_arg *a = arg;
    serve(a->d, a->fd);
    close(a->fd);
    free(a);
    return NULL;
}

static void *acceptor_main(void *arg)
{
    struct dirstub *d = arg;
    for (;;) {
        struct pollfd p[2] = {{.fd = d->listen_fd, .events = POLLIN},
                              {.fd = d->stop_pipe[0], .events = POLLIN}};
        if (poll(p, 2, -1) < 0)
            continue;
        if (p[1].revents != 0)
            return NULL;
        int fd = accept4(d->listen_fd, NULL, NULL, SOCK_CLOEXEC);
        if (fd < 0)
            continue;
        struct conn_arg *a = malloc(sizeof *a);
        a->d = d;
        a->fd = fd;
        pthread_mutex_lock(&d->lock);
        bool room = d->n_threads < MAX_THREADS;
        if (room && pthread_create(&d->threads[d->n_threads], NULL, conn_main, a) == 0)
            d->n_threads++;
        else
            room = false;
        pthread_mutex_unlock(&d->lock);
        if (!room) {
            close(fd);
            free(a);
        }
    }
}

int dirstub_start(struct dirstub **ret, char *ret_url, size_t len)
{
    struct dirstub *d = calloc(1, sizeof *d);
    struct sockaddr_in sa = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    socklen_t sl = sizeof sa;

    pthread_mutex_init(&d->lock, NULL);
    pthread_cond_init(&d->changed, NULL);
    d->listen_fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (d->listen_fd < 0 || bind(d->listen_fd, (struct sockaddr *)&sa, sizeof sa) != 0 ||
        listen(d->listen_fd, 128) != 0 || getsockname(d->listen_fd, (struct sockaddr *)&sa, &sl) != 0 ||
        pipe2(d->stop_pipe, O_CLOEXEC) != 0)
        return -errno;
    snprintf(ret_url, len, "http://127.0.0.1:%u", ntohs(sa.sin_port));
    pthread_create(&d->acceptor, NULL, acceptor_main, d);
    *ret = d;
    return 0;
}

void dirstub_stop(struct dirstub *d)
{
    pthread_mutex_lock(&d->lock);
    d->stopping = true;
    pthread_cond_broadcast(&d->changed);
    pthread_mutex_unlock(&d->lock);
    if (write(d->stop_pipe[1], "x", 1) != 1)
        abort();
    pthread_join(d->acceptor, NULL);
    for (unsigned i = 0; i < d->n_threads; i++)
        pthread_join(d->threads[i], NULL);
    close(d->listen_fd);
    close(d->stop_pipe[0]);
    close(d->stop_pipe[1]);
    pthread_cond_destroy(&d->changed);
    pthread_mutex_destroy(&d->lock);
    free(d);
}

void dirstub_set(struct dirstub *d, const char *name, const char *address, uint64_t generation,
                 const char *state)
{
    pthread_mutex_lock(&d->lock);
    struct entry *e = find(d, name);
    for (int i = 0; e == NULL && i < MAX_ENTRIES; i++)
        if (!d->entries[i].used)
            e = &d->entries[i];
    e->used = true;
    snprintf(e->name, sizeof e->name, "%s", name);
    snprintf(e->address, sizeof e->address, "%s", address != NULL ? address : "");
    snprintf(e->state, sizeof e->state, "%s", state != NULL ? state : "running");
    e->generation = generation;
    e->index = ++d->index;
    pthread_cond_broadcast(&d->changed);
    pthread_mutex_unlock(&d->lock);
}

void dirstub_delete(struct dirstub *d, const char *name)
{
    pthread_mutex_lock(&d->lock);
    struct entry *e = find(d, name);
    if (e != NULL)
        e->used = false;
    d->index++;
    pthread_cond_broadcast(&d->changed);
    pthread_mutex_unlock(&d->lock);
}

unsigned dirstub_gets(struct dirstub *d)
{
    pthread_mutex_lock(&d->lock);
    unsigned n = d->gets;
    pthread_mutex_unlock(&d->lock);
    return n;
}

unsigned dirstub_blocking_gets(struct dirstub *d)
{
    pthread_mutex_lock(&d->lock);
    unsigned n = d->blocking_gets;
    pthread_mutex_unlock(&d->lock);
    return n;
}
