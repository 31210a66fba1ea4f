/*
 * tcp_bw: the raw loopback TCP bandwidth baseline of bench/precopy_bench.sh.
 * One process sends BYTES (default 512 MiB) over one TCP connection on
 * 127.0.0.1 to a child that reads and discards them; prints bytes per
 * second, measured by the receiver from the first to the last byte.
 * Usage: tcp_bw [BYTES]
 */
#include <arpa/inet.h>
#include <netinet/in.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

static double now_s(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

int main(int argc, char **argv)
{
    uint64_t total = argc > 1 ? strtoull(argv[1], NULL, 10) : 512ull << 20;
    static char buf[4 << 20];
    int ls = socket(AF_INET, SOCK_STREAM, 0);
    struct sockaddr_in sa = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    socklen_t len = sizeof(sa);
    if (ls < 0 || bind(ls, (struct sockaddr *)&sa, sizeof(sa)) != 0 || listen(ls, 1) != 0 ||
        getsockname(ls, (struct sockaddr *)&sa, &len) != 0) {
        perror("tcp_bw: listen");
        return 1;
    }
    pid_t pid = fork();
    if (pid == 0) {
        int s = socket(AF_INET, SOCK_STREAM, 0);
        if (connect(s, (struct sockaddr *)&sa, sizeof(sa)) != 0)
            _exit(1);
        for (uint64_t sent = 0; sent < total;) {
            ssize_t w = write(s, buf, total - sent < sizeof(buf) ? total - sent : sizeof(buf));
            if (w <= 0)
                _exit(1);
            sent += (uint64_t)w;
        }
        close(s);
        _exit(0);
    }
    int c = accept(ls, NULL, NULL);
    if (c < 0) {
        perror("tcp_bw: accept");
        return 1;
    }
    double t0 = 0;
    uint64_t got = 0;
    for (;;) {
        ssize_t r = read(c, buf, sizeof(buf));
        if (r <= 0)
            break;
        if (got == 0)
            t0 = now_s();
        got += (uint64_t)r;
    }
    double dt = now_s() - t0;
    waitpid(pid, NULL, 0);
    if (got != total || dt <= 0) {
        fprintf(stderr, "tcp_bw: received %llu of %llu bytes\n", (unsigned long long)got,
                (unsigned long long)total);
        return 1;
    }
    printf("%.0f\n", (double)got / dt);
    return 0;
}
