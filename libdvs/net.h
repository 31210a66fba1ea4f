/*
 * Blocking socket helpers with deadlines, for the client (internal).
 *
 * Every function takes an absolute deadline on the monotonic clock
 * (dvs__now_ms) rather than a timeout, so that a call made of several steps
 * (dial, write, read) can never exceed the caller's budget.
 */
#ifndef DVS_NET_H
#define DVS_NET_H

#include <stddef.h>
#include <stdint.h>
#include <sys/uio.h>

#include "frame.h"

/* Milliseconds on CLOCK_MONOTONIC. */
int64_t dvs__now_ms(void);

/*
 * Connect to "host:port" (a name is resolved with getaddrinfo). Returns 0
 * and a connected, non-blocking, close-on-exec socket with TCP_NODELAY in
 * *ret_fd, or -EINVAL (bad address), -ETIMEDOUT, -ECONNREFUSED or another
 * negated errno of connect(2).
 */
int dvs__net_dial(const char *address, int64_t deadline, int *ret_fd);

/* Write all of iov. Returns 0, -ETIMEDOUT, or a negated errno (-EPIPE...). */
int dvs__net_writev(int fd, struct iovec *iov, int iovcnt, int64_t deadline);

/*
 * Read one frame into *buf (malloc'd, grown as needed up to the frame's
 * size; *cap is its size). Returns 0 with *ret_frame pointing into *buf,
 * -ETIMEDOUT, -ECONNRESET (the peer closed; *ret_got says whether any byte
 * had arrived), DVS_EPROTO / DVS_ETOOBIG (garbage), -ENOMEM, or a negated
 * errno of recv(2).
 */
int dvs__net_read_frame(int fd, uint8_t **buf, size_t *cap, uint32_t max_payload,
                        int64_t deadline, struct dvs__frame *ret_frame, size_t *ret_got);

#endif /* DVS_NET_H */
