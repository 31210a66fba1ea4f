/*
 * Blocking socket helpers with deadlines (see net.h).
 */
#include <errno.h>
#include <fcntl.h>
#include <netdb.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include "control.h"
#include "net.h"

int64_t dvs__now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

/* Wait for events on fd until the deadline. Returns 0, -ETIMEDOUT or -errno. */
static int wait_fd(int fd, short events, int64_t deadline)
{
    for (;;) {
        int64_t left = deadline - dvs__now_ms();
        if (left <= 0)
            return -ETIMEDOUT;
        struct pollfd p = {.fd = fd, .events = events};
        int n = poll(&p, 1, left > 60000 ? 60000 : (int)left);
        if (n > 0)
            return 0;
        if (n < 0 && errno != EINTR)
            return -errno;
    }
}

static int dial_one(const struct addrinfo *ai, int64_t deadline, int *ret_fd)
{
    int fd = socket(ai->ai_family, ai->ai_socktype | SOCK_NONBLOCK | SOCK_CLOEXEC,
                    ai->ai_protocol);
    if (fd < 0)
        return -errno;
    int one = 1;
    setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
    if (connect(fd, ai->ai_addr, ai->ai_addrlen) != 0) {
        if (errno != EINPROGRESS) {
            int err = -errno;
            close(fd);
            return err;
        }
        int rv = wait_fd(fd, POLLOUT, deadline);
        int soerr = 0;
        socklen_t len = sizeof soerr;
        if (rv == 0 && getsockopt(fd, SOL_SOCKET, SO_ERROR, &soerr, &len) != 0)
            rv = -errno;
        if (rv == 0 && soerr != 0)
            rv = -soerr;
        if (rv != 0) {
            close(fd);
            return rv;
        }
    }
    *ret_fd = fd;
    return 0;
}

int dvs__net_dial(const char *address, int64_t deadline, int *ret_fd)
{
    char host[256], port_s[8];
    uint16_t port;
    struct addrinfo hints = {.ai_socktype = SOCK_STREAM}, *res;

    if (dvs__parse_hostport(address, host, sizeof host, &port, false) != 0)
        return -EINVAL;
    snprintf(port_s, sizeof port_s, "%u", port);
    int rv = getaddrinfo(host, port_s, &hints, &res);
    if (rv != 0)
        return rv == EAI_NONAME ? -EHOSTUNREACH : -EAGAIN;
    rv = -EHOSTUNREACH;
    for (struct addrinfo *ai = res; ai != NULL; ai = ai->ai_next) {
        rv = dial_one(ai, deadline, ret_fd);
        if (rv == 0 || rv == -ETIMEDOUT)
            break;
    }
    freeaddrinfo(res);
    return rv;
}

int dvs__net_writev(int fd, struct iovec *iov, int iovcnt, int64_t deadline)
{
    while (iovcnt > 0) {
        struct msghdr mh = {.msg_iov = iov, .msg_iovlen = (size_t)iovcnt};
        ssize_t n = sendmsg(fd, &mh, MSG_NOSIGNAL);
        if (n < 0) {
            if (errno == EINTR)
                continue;
            if (errno != EAGAIN && errno != EWOULDBLOCK)
                return -errno;
            int rv = wait_fd(fd, POLLOUT, deadline);
            if (rv != 0)
                return rv;
            continue;
        }
        /* Skip what was written. */
        size_t done = (size_t)n;
        while (iovcnt > 0 && done >= iov->iov_len) {
            done -= iov->iov_len;
            iov++;
            iovcnt--;
        }
        if (iovcnt > 0) {
            iov->iov_base = (uint8_t *)iov->iov_base + done;
            iov->iov_len -= done;
        }
    }
    return 0;
}

int dvs__net_read_frame(int fd, uint8_t **buf, size_t *cap, uint32_t max_payload,
                        int64_t deadline, struct dvs__frame *ret_frame, size_t *ret_got)
{
    size_t len = 0;
    *ret_got = 0;
    for (;;) {
        size_t need;
        int rv = dvs__frame_decode(*buf, len, max_payload, ret_frame, &need);
        if (rv == 0)
            return 0;
        if (rv != -EAGAIN)
            return rv;
        /* need is bounded by the decoder (header checked first). */
        if (need > *cap) {
            uint8_t *b = realloc(*buf, need);
            if (b == NULL)
                return -ENOMEM;
            *buf = b;
            *cap = need;
        }
        /* Read no further than this frame: the connection is reused. */
        ssize_t n = recv(fd, *buf + len, need - len, 0);
        if (n > 0) {
            len += (size_t)n;
            *ret_got = len;
            continue;
        }
        if (n == 0)
            return -ECONNRESET;
        if (errno == EINTR)
            continue;
        if (errno != EAGAIN && errno != EWOULDBLOCK)
            return -errno;
        rv = wait_fd(fd, POLLIN, deadline);
        if (rv != 0)
            return rv;
    }
}
