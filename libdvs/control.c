/*
 * Control message parsing (see control.h and docs/control-protocol.md).
 *
 * The agent is trusted, but it is another program written by someone else,
 * so its messages are still parsed strictly: a malformed message is answered
 * with an error, never half-applied.
 */
#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "control.h"

/* Keys are [a-z_]+; verbs may also have inner hyphens ("track-start"). */
static bool word_valid(const char *k, size_t len, bool verb)
{
    if (len == 0 || len > 32 || k[0] == '-' || k[len - 1] == '-')
        return false;
    for (size_t i = 0; i < len; i++)
        if (!((k[i] >= 'a' && k[i] <= 'z') || k[i] == '_' || (verb && k[i] == '-')))
            return false;
    return true;
}

static bool key_valid(const char *k, size_t len)
{
    return word_valid(k, len, false);
}

int dvs__ctl_parse(const void *data, size_t len, struct dvs__ctl_msg *m)
{
    if (len > DVS__CTL_MAX)
        return -E2BIG;
    memcpy(m->buf, data, len);
    if (len > 0 && m->buf[len - 1] == '\n')
        len--;
    m->buf[len] = '\0';
    for (size_t i = 0; i < len; i++)
        if ((unsigned char)m->buf[i] < 0x20 || (unsigned char)m->buf[i] > 0x7e)
            return -EINVAL;

    m->n_args = 0;
    char *p = m->buf;
    char *end = m->buf + len;

    /* The verb: a key-like word. */
    char *sp = strchr(p, ' ');
    size_t vlen = sp != NULL ? (size_t)(sp - p) : (size_t)(end - p);
    if (!word_valid(p, vlen, true))
        return -EINVAL;
    m->verb = p;
    if (sp == NULL)
        return 0;
    *sp = '\0';
    p = sp + 1;

    while (p < end) {
        if (*p == ' ') { /* tolerate repeated spaces */
            p++;
            continue;
        }
        char *eq = strchr(p, '=');
        if (eq == NULL || !key_valid(p, (size_t)(eq - p)))
            return -EINVAL;
        if (m->n_args == DVS__CTL_MAX_ARGS)
            return -EINVAL;
        *eq = '\0';
        const char *key = p;
        char *value = eq + 1;
        for (unsigned i = 0; i < m->n_args; i++)
            if (strcmp(m->keys[i], key) == 0)
                return -EINVAL;
        if (strcmp(key, "message") == 0) {
            p = end; /* free text to the end of the packet */
        } else {
            sp = strchr(value, ' ');
            if (sp != NULL) {
                *sp = '\0';
                p = sp + 1;
            } else {
                p = end;
            }
        }
        m->keys[m->n_args] = key;
        m->values[m->n_args] = value;
        m->n_args++;
    }
    return 0;
}

const char *dvs__ctl_get(const struct dvs__ctl_msg *m, const char *key)
{
    for (unsigned i = 0; i < m->n_args; i++)
        if (strcmp(m->keys[i], key) == 0)
            return m->values[i];
    return NULL;
}

int dvs__ctl_get_u64(const struct dvs__ctl_msg *m, const char *key, uint64_t min,
                     uint64_t max, uint64_t *ret)
{
    const char *v = dvs__ctl_get(m, key);
    if (v == NULL)
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

int dvs__parse_hostport(const char *s, char *host, size_t hostlen, uint16_t *ret_port,
                        bool allow_zero)
{
    const char *colon, *h = s;
    size_t hlen;

    if (s[0] == '[') {
        const char *close = strchr(s, ']');
        if (close == NULL || close[1] != ':')
            return -EINVAL;
        h = s + 1;
        hlen = (size_t)(close - h);
        colon = close + 1;
    } else {
        colon = strrchr(s, ':');
        if (colon == NULL)
            return -EINVAL;
        hlen = (size_t)(colon - s);
        if (memchr(s, ':', hlen) != NULL) /* bare IPv6 needs brackets */
            return -EINVAL;
    }
    if (hlen == 0 || hlen >= hostlen)
        return -EINVAL;
    for (size_t i = 0; i < hlen; i++)
        if (h[i] <= ' ' || h[i] > '~' || h[i] == '/' || h[i] == '[' || h[i] == ']')
            return -EINVAL;

    const char *p = colon + 1;
    if (*p < '0' || *p > '9' || strlen(p) > 5)
        return -EINVAL;
    unsigned long port = 0;
    for (; *p != '\0'; p++) {
        if (*p < '0' || *p > '9')
            return -EINVAL;
        port = port * 10 + (unsigned long)(*p - '0');
    }
    if (port > 65535 || (port == 0 && !allow_zero))
        return -EINVAL;
    memcpy(host, h, hlen);
    host[hlen] = '\0';
    *ret_port = (uint16_t)port;
    return 0;
}
