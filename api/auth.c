/* Bearer tokens: parsing, constant-time comparison, the access rule (auth.h). */
#include <errno.h>
#include <fcntl.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>
#include <strings.h>
#include <sys/stat.h>
#include <unistd.h>

#include "api/auth.h"

bool api_tokens_enabled(const struct api_tokens *t)
{
    return t && (t->management[0] || t->read[0] || t->agent[0]);
}

/*
 * Both strings are walked to a fixed bound whatever their contents, and the
 * differences are OR-ed together, so no branch depends on where (or whether)
 * they differ. The lengths are compared the same way: a token's length is
 * not secret enough to matter, but there is no reason to give it away either.
 */
bool api_token_equal(const char *a, const char *b)
{
    size_t la = strnlen(a, API_TOKEN_MAX + 1), lb = strnlen(b, API_TOKEN_MAX + 1);
    volatile unsigned char diff = (unsigned char)((la != lb) | (la > API_TOKEN_MAX));
    for (size_t i = 0; i < API_TOKEN_MAX; i++) {
        unsigned char ca = i < la ? (unsigned char)a[i] : 0;
        unsigned char cb = i < lb ? (unsigned char)b[i] : 0;
        diff |= (unsigned char)(ca ^ cb);
    }
    return diff == 0 && la > 0;
}

/* RFC 6750 b64token: ALPHA / DIGIT / "-" / "." / "_" / "~" / "+" / "/", then "="s. */
static bool b64token_char(unsigned char c)
{
    return (c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') ||
           c == '-' || c == '.' || c == '_' || c == '~' || c == '+' || c == '/';
}

static bool valid_token(const char *s, size_t n)
{
    size_t i = 0;
    while (i < n && b64token_char((unsigned char)s[i]))
        i++;
    if (i == 0)
        return false;
    while (i < n && s[i] == '=')
        i++;
    return i == n;
}

int api_bearer_parse(const char *header, char *ret_token, size_t len)
{
    if (!header || strncasecmp(header, "Bearer", 6) != 0)
        return -EINVAL;
    const char *p = header + 6;
    if (*p != ' ' && *p != '\t')
        return -EINVAL;
    while (*p == ' ' || *p == '\t')
        p++;
    size_t n = strcspn(p, " \t");
    const char *rest = p + n;
    while (*rest == ' ' || *rest == '\t')
        rest++;
    if (*rest != '\0' || n == 0 || n > API_TOKEN_MAX || n >= len || !valid_token(p, n))
        return -EINVAL;
    memcpy(ret_token, p, n);
    ret_token[n] = '\0';
    return 0;
}

static bool is_read_method(const char *method)
{
    return strcmp(method, "GET") == 0 || strcmp(method, "HEAD") == 0;
}

enum api_auth_result api_authorize(const struct api_tokens *t, const char *method,
                                   enum api_access access, const char *header,
                                   const char **ret_role)
{
    const char *dummy;
    if (!ret_role)
        ret_role = &dummy;
    *ret_role = "none";
    if (!api_tokens_enabled(t) || access == API_ACCESS_PUBLIC)
        return API_AUTH_OK;
    if (access == API_ACCESS_DEFAULT)
        access = is_read_method(method) ? API_ACCESS_READ : API_ACCESS_MANAGE;
    /* Reads stay open unless a read token is configured. */
    if (access == API_ACCESS_READ && !t->read[0])
        return API_AUTH_OK;
    if (!header)
        return API_AUTH_MISSING;

    char token[API_TOKEN_MAX + 1];
    if (api_bearer_parse(header, token, sizeof(token)) != 0)
        return API_AUTH_MALFORMED;
    /* Every configured token is compared, whichever matches. */
    bool is_mgmt = t->management[0] && api_token_equal(token, t->management);
    bool is_read = t->read[0] && api_token_equal(token, t->read);
    bool is_agent = t->agent[0] && api_token_equal(token, t->agent);
    explicit_bzero(token, sizeof(token));
    if (!is_mgmt && !is_read && !is_agent)
        return API_AUTH_WRONG;
    *ret_role = is_mgmt ? "management" : is_agent ? "agent" : "read";

    switch (access) {
    case API_ACCESS_READ:
        return API_AUTH_OK; /* any of our tokens may read */
    case API_ACCESS_AGENT:
        return is_mgmt || is_agent ? API_AUTH_OK : API_AUTH_DENIED;
    case API_ACCESS_MANAGE:
    default:
        return is_mgmt ? API_AUTH_OK : API_AUTH_DENIED;
    }
}

int api_token_load(const char *path, char *ret_token, bool *ret_loose, char *err,
                   size_t errlen)
{
    char buf[API_TOKEN_MAX + 4];
    int fd = open(path, O_RDONLY | O_CLOEXEC | O_NOCTTY);
    if (fd < 0) {
        int e = errno;
        snprintf(err, errlen, "cannot read token file %s: %s", path, strerror(e));
        return -e;
    }
    struct stat st;
    if (fstat(fd, &st) != 0 || !S_ISREG(st.st_mode)) {
        snprintf(err, errlen, "token file %s is not a regular file", path);
        close(fd);
        return -EINVAL;
    }
    size_t n = 0;
    for (;;) {
        ssize_t r = read(fd, buf + n, sizeof(buf) - 1 - n);
        if (r < 0 && errno == EINTR)
            continue;
        if (r < 0) {
            int e = errno;
            snprintf(err, errlen, "cannot read token file %s: %s", path, strerror(e));
            close(fd);
            return -e;
        }
        if (r == 0)
            break;
        n += (size_t)r;
        if (n == sizeof(buf) - 1)
            break;
    }
    close(fd);
    if (n > 0 && buf[n - 1] == '\n')
        n--;
    if (n > 0 && buf[n - 1] == '\r')
        n--;
    int rv = 0;
    if (n == 0) {
        snprintf(err, errlen, "token file %s is empty", path);
        rv = -EINVAL;
    } else if (n > API_TOKEN_MAX) {
        snprintf(err, errlen, "the token in %s is longer than %d bytes", path, API_TOKEN_MAX);
        rv = -EINVAL;
    } else if (n < API_TOKEN_MIN) {
        snprintf(err, errlen,
                 "the token in %s is %zu bytes; at least %d are needed (e.g. "
                 "'openssl rand -hex 32 > %s')",
                 path, n, API_TOKEN_MIN, path);
        rv = -EINVAL;
    } else if (!valid_token(buf, n)) {
        snprintf(err, errlen,
                 "the token in %s has characters outside A-Z a-z 0-9 - . _ ~ + / "
                 "(and trailing '='), or more than one line",
                 path);
        rv = -EINVAL;
    }
    if (rv == 0) {
        memcpy(ret_token, buf, n);
        ret_token[n] = '\0';
        if (ret_loose)
            *ret_loose = (st.st_mode & 0004) != 0; /* world-readable */
    }
    explicit_bzero(buf, sizeof(buf));
    return rv;
}
