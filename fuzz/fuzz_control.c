/*
 * The control-message parsers: libdvs's (libdvs/control.c, the service side)
 * and the agent's (node/ctlmsg.c), plus the host:port parser they share
 * callers with, fed arbitrary packets.
 *
 * Properties: the result is one of the documented codes; on success the verb
 * is a non-empty [a-z_] word, keys are unique and every key's lookup returns
 * its own value, no argument count exceeds the bound, and every field lies
 * in the message's own buffer; the two parsers agree on every packet both
 * consider well-formed; a parsed host fits its buffer.
 */
#include <errno.h>
#include <string.h>

#include "fuzz/fuzz.h"
#include "libdvs/control.h"
#include "node/ctlmsg.h"

static bool in_buf(const char *p, const char *buf, size_t cap)
{
    return p >= buf && p < buf + cap && memchr(p, '\0', (size_t)(buf + cap - p)) != NULL;
}

static bool word(const char *s)
{
    if (*s == '\0')
        return false;
    for (; *s; s++)
        if (!((*s >= 'a' && *s <= 'z') || *s == '_'))
            return false;
    return true;
}

/* libdvs's verbs may also have inner hyphens ("track-start"). */
static bool verb_word(const char *s)
{
    size_t len = strlen(s);
    if (len == 0 || s[0] == '-' || s[len - 1] == '-')
        return false;
    for (; *s; s++)
        if (!((*s >= 'a' && *s <= 'z') || *s == '_' || *s == '-'))
            return false;
    return true;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    static struct dvs__ctl_msg m;
    static struct node_ctl_msg n;

    int rv = dvs__ctl_parse(data, size, &m);
    FUZZ_CHECK(rv == 0 || rv == -EINVAL || rv == -E2BIG);
    if (rv == 0) {
        FUZZ_CHECK(in_buf(m.verb, m.buf, sizeof(m.buf)) && verb_word(m.verb));
        FUZZ_CHECK(m.n_args <= DVS__CTL_MAX_ARGS);
        for (unsigned i = 0; i < m.n_args; i++) {
            FUZZ_CHECK(in_buf(m.keys[i], m.buf, sizeof(m.buf)) && word(m.keys[i]));
            FUZZ_CHECK(in_buf(m.values[i], m.buf, sizeof(m.buf)));
            FUZZ_CHECK(dvs__ctl_get(&m, m.keys[i]) == m.values[i]);
            uint64_t v;
            int r = dvs__ctl_get_u64(&m, m.keys[i], 1, 1000000, &v);
            FUZZ_CHECK(r == 0 || r == -EINVAL);
            if (r == 0)
                FUZZ_CHECK(v >= 1 && v <= 1000000);
        }
    }

    int rn = node_ctl_parse((const char *)data, size, &n);
    FUZZ_CHECK(rn == 0 || rn == -EINVAL);
    if (rn == 0) {
        FUZZ_CHECK(in_buf(n.verb, n.buf, sizeof(n.buf)) && word(n.verb));
        FUZZ_CHECK(n.n_args <= NODE_CTL_MAX_ARGS);
        for (unsigned i = 0; i < n.n_args; i++) {
            FUZZ_CHECK(in_buf(n.keys[i], n.buf, sizeof(n.buf)) && word(n.keys[i]));
            FUZZ_CHECK(node_ctl_get(&n, n.keys[i]) == n.values[i]);
            uint64_t v;
            int r = node_ctl_get_u64(&n, n.keys[i], 0, UINT64_MAX, &v);
            FUZZ_CHECK(r == 0 || r == -EINVAL);
        }
    }
    /* Both sides read the same protocol: what both accept, they read alike. */
    if (rv == 0 && rn == 0) {
        FUZZ_CHECK(strcmp(m.verb, n.verb) == 0 && m.n_args == n.n_args);
        for (unsigned i = 0; i < m.n_args; i++)
            FUZZ_CHECK(strcmp(m.keys[i], n.keys[i]) == 0 &&
                       strcmp(m.values[i], n.values[i]) == 0);
    }

    char s[512], host[64];
    size_t len = size < sizeof(s) - 1 ? size : sizeof(s) - 1;
    memcpy(s, data, len);
    s[len] = '\0';
    uint16_t port = 0;
    rv = dvs__parse_hostport(s, host, sizeof(host), &port, size % 2 == 0);
    FUZZ_CHECK(rv == 0 || rv == -EINVAL);
    if (rv == 0) {
        FUZZ_CHECK(memchr(host, '\0', sizeof(host)) != NULL);
        FUZZ_CHECK(port != 0 || size % 2 == 0);
    }
    return 0;
}
