#include <arpa/inet.h>
#include <ctype.h>
#include <errno.h>
#include <limits.h>
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/random.h>
#include <time.h>

#include "common/util.h"

static void oom(size_t n)
{
    fprintf(stderr, "fatal: out of memory allocating %zu bytes\n", n);
    abort();
}

void *xmalloc(size_t n)
{
    void *p = malloc(n ? n : 1);
    if (!p)
        oom(n);
    return p;
}

void *xcalloc(size_t n, size_t size)
{
    void *p = calloc(n ? n : 1, size ? size : 1);
    if (!p)
        oom(n * size);
    return p;
}

void *xrealloc(void *p, size_t n)
{
    void *q = realloc(p, n ? n : 1);
    if (!q)
        oom(n);
    return q;
}

char *xstrdup(const char *s)
{
    char *p = strdup(s);
    if (!p)
        oom(strlen(s));
    return p;
}

char *xasprintf(const char *fmt, ...)
{
    va_list ap;
    char *p;
    va_start(ap, fmt);
    int n = vasprintf(&p, fmt, ap);
    va_end(ap);
    if (n < 0)
        oom(0);
    return p;
}

int64_t now_wall_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

int64_t now_mono_ms(void)
{
    return (int64_t)(now_mono_ns() / 1000000u);
}

uint64_t now_mono_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000000000u + (uint64_t)ts.tv_nsec;
}

int parse_int64(const char *s, int64_t *ret)
{
    if (!s || !*s || isspace((unsigned char)*s))
        return -EINVAL;
    char *end;
    errno = 0;
    long long v = strtoll(s, &end, 10);
    if (errno == ERANGE)
        return -ERANGE;
    if (*end != '\0' || end == s)
        return -EINVAL;
    *ret = v;
    return 0;
}

int parse_double(const char *s, double *ret)
{
    if (!s || !*s || isspace((unsigned char)*s))
        return -EINVAL;
    char *end;
    errno = 0;
    double v = strtod(s, &end);
    if (errno == ERANGE || !isfinite(v))
        return -ERANGE;
    if (*end != '\0' || end == s || v < 0)
        return -EINVAL;
    *ret = v;
    return 0;
}

/*
 * A plain decimal number at *P: digits with at most one '.', nothing else
 * (strtod alone would take hex, exponents, "inf" and "nan", so "0x10s" would
 * mean 16 s). Advances *P past it.
 */
static int scan_decimal(const char **p, double *ret)
{
    const char *q = *p;
    size_t n = 0;
    bool dot = false, digit = false;
    char buf[64];
    while (isdigit((unsigned char)q[n]) || (q[n] == '.' && !dot)) {
        if (q[n] == '.')
            dot = true;
        else
            digit = true;
        if (n + 1 >= sizeof(buf))
            return -ERANGE;
        buf[n] = q[n];
        n++;
    }
    if (!digit)
        return -EINVAL;
    buf[n] = '\0';
    errno = 0;
    double v = strtod(buf, NULL);
    if (errno == ERANGE || !isfinite(v))
        return -ERANGE;
    *ret = v;
    *p = q + n;
    return 0;
}

int parse_duration_ms(const char *s, int64_t *ret_ms)
{
    if (!s || !*s)
        return -EINVAL;
    double total = 0;
    const char *p = s;
    while (*p) {
        double v;
        int rv = scan_decimal(&p, &v);
        if (rv)
            return rv;
        double unit;
        if (strncmp(p, "ms", 2) == 0) {
            unit = 1;
            p += 2;
        } else if (strncmp(p, "us", 2) == 0) {
            unit = 0.001;
            p += 2;
        } else if (*p == 's') {
            unit = 1000;
            p++;
        } else if (*p == 'm') {
            unit = 60000;
            p++;
        } else if (*p == 'h') {
            unit = 3600000;
            p++;
        } else {
            return -EINVAL; /* a unit is mandatory */
        }
        total += v * unit;
        if (total > (double)INT64_MAX / 2)
            return -ERANGE;
    }
    *ret_ms = (int64_t)llround(total);
    return 0;
}

int parse_size(const char *s, uint64_t *ret_bytes)
{
    if (!s || !*s || !isdigit((unsigned char)*s))
        return -EINVAL;
    const char *u = s;
    double v;
    int rv = scan_decimal(&u, &v);
    if (rv)
        return rv;
    double mult = 1;
    switch (toupper((unsigned char)*u)) {
    case '\0':
        break;
    case 'K':
        mult = 1024.0;
        u++;
        break;
    case 'M':
        mult = 1024.0 * 1024;
        u++;
        break;
    case 'G':
        mult = 1024.0 * 1024 * 1024;
        u++;
        break;
    case 'T':
        mult = 1024.0 * 1024 * 1024 * 1024;
        u++;
        break;
    case 'B':
        u++;
        if (*u)
            return -EINVAL;
        break;
    default:
        return -EINVAL;
    }
    if (mult > 1 && *u) {
        if (strcmp(u, "iB") == 0 || strcmp(u, "B") == 0 || strcmp(u, "ib") == 0)
            u += strlen(u);
        else
            return -EINVAL;
    }
    if (*u)
        return -EINVAL;
    double bytes = v * mult;
    if (bytes >= 18446744073709551615.0)
        return -ERANGE;
    if (bytes != floor(bytes))
        return -EINVAL; /* fractional bytes */
    *ret_bytes = (uint64_t)bytes;
    return 0;
}

int parse_hostport(const char *s, bool ipv4_only, char *ret_host, size_t hostlen,
                   uint16_t *ret_port)
{
    if (!s)
        return -EINVAL;
    const char *colon = strrchr(s, ':');
    if (!colon || colon == s)
        return -EINVAL;
    size_t hl = (size_t)(colon - s);
    if (hl >= hostlen || hl >= 256)
        return -EINVAL;
    char host[256];
    memcpy(host, s, hl);
    host[hl] = '\0';
    int64_t port;
    if (parse_int64(colon + 1, &port) != 0 || port < 1 || port > 65535)
        return -EINVAL;
    if (ipv4_only) {
        struct in_addr a;
        if (inet_pton(AF_INET, host, &a) != 1)
            return -EINVAL;
    } else {
        for (size_t i = 0; i < hl; i++) {
            unsigned char c = (unsigned char)host[i];
            if (!isalnum(c) && c != '.' && c != '-' && c != '_' && c != '[' &&
                c != ']' && c != ':')
                return -EINVAL;
        }
    }
    memcpy(ret_host, host, hl + 1);
    *ret_port = (uint16_t)port;
    return 0;
}

void format_duration(int64_t ms, char *buf, size_t len)
{
    if (ms < 0)
        snprintf(buf, len, "-");
    else if (ms < 1000)
        snprintf(buf, len, "%lldms", (long long)ms);
    else if (ms < 60000)
        snprintf(buf, len, "%.1fs", (double)ms / 1000.0);
    else if (ms < 3600000)
        snprintf(buf, len, "%lldm%02llds", (long long)(ms / 60000),
                 (long long)(ms / 1000 % 60));
    else
        snprintf(buf, len, "%lldh%02lldm", (long long)(ms / 3600000),
                 (long long)(ms / 60000 % 60));
}

void format_size(uint64_t bytes, char *buf, size_t len)
{
    static const char *const units[] = {"B", "KiB", "MiB", "GiB", "TiB"};
    double v = (double)bytes;
    unsigned u = 0;
    while (v >= 1024 && u < 4) {
        v /= 1024;
        u++;
    }
    if (u == 0)
        snprintf(buf, len, "%llu B", (unsigned long long)bytes);
    else
        snprintf(buf, len, "%.1f %s", v, units[u]);
}

void random_bytes(void *buf, size_t n)
{
    unsigned char *p = buf;
    while (n > 0) {
        ssize_t r = getrandom(p, n, 0);
        if (r < 0) {
            if (errno == EINTR)
                continue;
            perror("getrandom");
            abort();
        }
        p += r;
        n -= (size_t)r;
    }
}

uint64_t random_u64(void)
{
    uint64_t v;
    random_bytes(&v, sizeof(v));
    return v;
}
