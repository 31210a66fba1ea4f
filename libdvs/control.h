/*
 * Control messages between a service and its agent (internal).
 *
 * docs/control-protocol.md is the contract. In short: a SOCK_SEQPACKET Unix
 * socket, one message per packet, at most DVS__CTL_MAX bytes of ASCII:
 *
 *     VERB key=value key=value ... [message=free text to the end]
 *
 * Keys are [a-z_]+; values are printable ASCII without spaces, except the
 * value of "message", which runs to the end of the packet. This module only
 * parses and formats; the server does the I/O.
 */
#ifndef DVS_CONTROL_H
#define DVS_CONTROL_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#define DVS__CTL_MAX 4096
#define DVS__CTL_MAX_ARGS 24
#define DVS__CTL_VERSION 1

struct dvs__ctl_msg {
    char buf[DVS__CTL_MAX + 1]; /* NUL-terminated copy the fields point into */
    const char *verb;
    unsigned n_args;
    const char *keys[DVS__CTL_MAX_ARGS];
    const char *values[DVS__CTL_MAX_ARGS];
};

/*
 * Parse one packet. A single trailing newline is tolerated. Returns 0, or
 * -EINVAL (empty, too long, a NUL or control byte, a malformed or repeated
 * key, more than DVS__CTL_MAX_ARGS arguments) or -E2BIG (len > DVS__CTL_MAX).
 */
int dvs__ctl_parse(const void *data, size_t len, struct dvs__ctl_msg *ret_msg);

/* The value of key, or NULL. */
const char *dvs__ctl_get(const struct dvs__ctl_msg *msg, const char *key);

/*
 * The value of key as an unsigned decimal ("0x" hex also accepted). Returns
 * 0, -ENOENT (absent) or -EINVAL (not a number, or out of [min, max]).
 */
int dvs__ctl_get_u64(const struct dvs__ctl_msg *msg, const char *key,
                     uint64_t min, uint64_t max, uint64_t *ret);

/*
 * Parse "host:port" or "[v6]:port" into host (NUL-terminated, hostlen
 * bytes) and port; allow_zero permits port 0. Returns 0 or -EINVAL.
 * Shared by the server (DVS_LISTEN), the client and the moved replies.
 */
int dvs__parse_hostport(const char *s, char *host, size_t hostlen,
                        uint16_t *ret_port, bool allow_zero);

#endif /* DVS_CONTROL_H */
