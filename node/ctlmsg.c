/*
 * Parsing control messages (docs/control-protocol.md §2): one packet,
 * "VERB key=value ... [message=free text]". Kept apart from the socket code
 * (control.c) so that the unit tests reach it alone.
 */
#include <errno.h>
#include <stdbool.h>
#include <stdlib.h>
#include <string.h>

#include "node/ctlmsg.h"

static bool word_valid(const char *k, size_t len)
{
    if (len == 0 || len > 32)
        return false;
    for (size_t i = 0; i < len; i++)
        if (!((k[i] >= 'a' && k[i] <= 'z') || k[i] == '_'))
            return false;
    return true;
}

int node_ctl_parse(const char *data, size_t len, struct node_ctl_msg *m)
{
    if (len > NODE_CTL_MAX)
        return -EINVAL;
    memcpy(m->buf, data, len);
    if (len > 0 && m->buf[len - 1] == '\n')
        len--;
    m->buf[len] = '\0';
    m->n_args = 0;
    m->verb = NULL;
    for (size_t i = 0; i < len; i++)
        if ((unsigned char)m->buf[i] < 0x20 || (unsigned char)m->buf[i] > 0x7e)
            return -EINVAL;

    char *p = m->buf, *end = m->buf + len;
    char *sp = strchr(p, ' ');
    size_t vlen = sp ? (size_t)(sp - p) : (size_t)(end - p);
    if (!word_valid(p, vlen))
        return -EINVAL;
    m->verb = p;
    if (!sp)
        return 0;
    *sp = '\0';
    p = sp + 1;
    while (p < end) {
        if (*p == ' ') {
            p++;
            continue;
        }
        char *eq = strchr(p, '=');
        if (!eq || !word_valid(p, (size_t)(eq - p)) || m->n_args == NODE_CTL_MAX_ARGS)
            return -EINVAL;
        *eq = '\0';
        const char *key = p;
        char *value = eq + 1;
        for (unsigned i = 0; i < m->n_args; i++)
            if (strcmp(m->keys[i], key) == 0)
                return -EINVAL;
        if (strcmp(key, "message") == 0) {
            p = end; /* free text to the end of the packet */
        } else if ((sp = strchr(value, ' ')) != NULL) {
            *sp = '\0';
            p = sp + 1;
        } else {
            p = end;
        }
        m->keys[m->n_args] = key;
        m->values[m->n_args] = value;
        m->n_args++;
    }
    return 0;
}

const char *node_ctl_get(const struct node_ctl_msg *m, const char *key)
{
    for (unsigned i = 0; i < m->n_args; i++)
        if (strcmp(m->keys[i], key) == 0)
            return m->values[i];
    return NULL;
}

int node_ctl_get_u64(const struct node_ctl_msg *m, const char *key, uint64_t min, uint64_t max,
                     uint64_t *ret)
{
    const char *v = node_ctl_get(m, key);
    if (!v)
        return -ENOENT;
    if (*v < '0' || *v > '9')
        return -EINVAL;
    char *endp;
    errno = 0;
    unsigned long long x = strtoull(v, &endp, 0);
    if (errno != 0 || *endp != '\0' || x < min || x > max)
        return -EINVAL;
    *ret = x;
    return 0;
}

