/* Control messages between the agent and its services (ctlmsg.c). */
#ifndef DVS_NODE_CTLMSG_H
#define DVS_NODE_CTLMSG_H

#include <stddef.h>
#include <stdint.h>

#define NODE_CTL_MAX 4096
#define NODE_CTL_MAX_ARGS 24

struct node_ctl_msg {
    char buf[NODE_CTL_MAX + 1];
    const char *verb;
    unsigned n_args;
    const char *keys[NODE_CTL_MAX_ARGS];
    const char *values[NODE_CTL_MAX_ARGS];
    int fds[4]; /* descriptors that came with the message (SCM_RIGHTS), -1 unused */
    unsigned n_fds;
};

/*
 * Parse one packet of len bytes (not NUL-terminated) into *ret, whose fields
 * point into ret->buf. VERB and keys are [a-z_]{1,32}; values are printable
 * ASCII without spaces, except message=, which runs to the end. One trailing
 * newline is tolerated. Returns 0, or -EINVAL (too long, a control or
 * non-ASCII byte, a malformed or repeated key, more than NODE_CTL_MAX_ARGS
 * keys). ret->fds is left alone.
 */
int node_ctl_parse(const char *data, size_t len, struct node_ctl_msg *ret);
const char *node_ctl_get(const struct node_ctl_msg *m, const char *key);
/* 0, -ENOENT (absent), -EINVAL (not a decimal/0x number in [min, max]). */
int node_ctl_get_u64(const struct node_ctl_msg *m, const char *key, uint64_t min, uint64_t max,
                     uint64_t *ret);

#endif
