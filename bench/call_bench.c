/*
 * dvs_call round trip against a raw TCP echo on the same machine (figures
 * only). The echo server runs in a thread of this process on loopback; the
 * dvs_call target is a running endpoint (e.g. dvs-kv under dvs-node) found
 * through the manager's directory. Both send a small request and wait for
 * its reply, one at a time.
 *
 *   call_bench --manager URLS --endpoint kv [--n N]
 *
 * The dvs request is a dvs-kv "get" of an absent key (12-byte header + key),
 * so the service does a hash lookup and answers "not found".
 */
#include <arpa/inet.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "common/util.h"
#include "dvs.h"

static int listen_fd;

static void *echo_thread(void *arg)
{
    (void)arg;
    int c = accept(listen_fd, NULL, NULL);
    int one = 1;
    setsockopt(c, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
    char buf[4096];
    ssize_t n;
    while ((n = read(c, buf, sizeof(buf))) > 0)
        if (write(c, buf, (size_t)n) != n)
            break;
    close(c);
    return NULL;
}

static int cmp_u64(const void *a, const void *b)
{
    uint64_t x = *(const uint64_t *)a, y = *(const uint64_t *)b;
    return x < y ? -1 : x > y;
}

static double pct(uint64_t *v, size_t n, double p)
{
    return (double)v[(size_t)((double)(n - 1) * p)] / 1e3;
}

int main(int argc, char **argv)
{
    const char *urls = NULL, *endpoint = "kv";
    long n = 20000;
    for (int i = 1; i + 1 < argc; i += 2) {
        if (!strcmp(argv[i], "--manager"))
            urls = argv[i + 1];
        else if (!strcmp(argv[i], "--endpoint"))
            endpoint = argv[i + 1];
        else if (!strcmp(argv[i], "--n"))
            n = atol(argv[i + 1]);
    }
    uint64_t *raw = xmalloc((size_t)n * sizeof(*raw)), *dvs = xmalloc((size_t)n * sizeof(*dvs));

    /* Raw TCP echo: 64-byte messages. */
    listen_fd = socket(AF_INET, SOCK_STREAM, 0);
    struct sockaddr_in a = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    socklen_t al = sizeof(a);
    if (bind(listen_fd, (struct sockaddr *)&a, sizeof(a)) || listen(listen_fd, 1) ||
        getsockname(listen_fd, (struct sockaddr *)&a, &al)) {
        perror("echo server");
        return 1;
    }
    pthread_t th;
    pthread_create(&th, NULL, echo_thread, NULL);
    int s = socket(AF_INET, SOCK_STREAM, 0);
    int one = 1;
    setsockopt(s, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
    if (connect(s, (struct sockaddr *)&a, sizeof(a))) {
        perror("connect");
        return 1;
    }
    char msg[64] = {0}, in[64];
    for (long i = 0; i < n; i++) {
        uint64_t t = now_mono_ns();
        if (write(s, msg, sizeof(msg)) != (ssize_t)sizeof(msg))
            return 1;
        size_t got = 0;
        while (got < sizeof(in)) {
            ssize_t r = read(s, in + got, sizeof(in) - got);
            if (r <= 0)
                return 1;
            got += (size_t)r;
        }
        raw[i] = now_mono_ns() - t;
    }
    close(s);
    pthread_join(th, NULL);

    /* dvs_call: a kv get of an absent key. */
    dvs_client *c;
    int rv = dvs_client_create(urls, NULL, &c);
    if (rv) {
        fprintf(stderr, "dvs_client_create: %s\n", dvs_strerror(rv));
        return 1;
    }
    unsigned char req[12 + 8] = {1, 2, 8, 0};
    memcpy(req + 12, "nokey-00", 8);
    long errors = 0;
    for (long i = -100; i < n; i++) { /* 100 warm-up calls: directory, connection */
        void *reply = NULL;
        size_t len = 0;
        uint64_t t = now_mono_ns();
        rv = dvs_call(c, endpoint, req, sizeof(req), &reply, &len, 5000);
        uint64_t d = now_mono_ns() - t;
        dvs_free(reply);
        if (rv != 0) {
            errors++;
            if (errors < 3)
                fprintf(stderr, "dvs_call: %s\n", dvs_strerror(rv));
        }
        if (i >= 0)
            dvs[i] = d;
    }
    dvs_client_destroy(c);
    qsort(raw, (size_t)n, sizeof(*raw), cmp_u64);
    qsort(dvs, (size_t)n, sizeof(*dvs), cmp_u64);
    printf("raw TCP echo (64 B):      p50 %.1f us  p99 %.1f us  (n=%ld)\n", pct(raw, n, 0.5),
           pct(raw, n, 0.99), n);
    printf("dvs_call (kv get, 20 B):  p50 %.1f us  p99 %.1f us  (n=%ld, %ld errors)\n",
           pct(dvs, n, 0.5), pct(dvs, n, 0.99), n, errors);
    printf("ratio dvs_call / raw echo: p50 %.2fx  p99 %.2fx\n", pct(dvs, n, 0.5) / pct(raw, n, 0.5),
           pct(dvs, n, 0.99) / pct(raw, n, 0.99));
    free(raw);
    free(dvs);
    return 0;
}
