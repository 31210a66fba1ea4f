#include <errno.h>
#include <string.h>
#include <time.h>

#include "common/log.h"

static enum log_level log_min = LOG_INFO;
static FILE *log_stream;
static char log_ident[32];

static const char *const level_names[] = {"debug", "info", "warn", "error"};

void log_set_level(enum log_level level)
{
    log_min = level;
}

int log_parse_level(const char *s, enum log_level *ret_level)
{
    for (unsigned i = 0; i < sizeof(level_names) / sizeof(level_names[0]); i++) {
        if (strcmp(s, level_names[i]) == 0) {
            *ret_level = (enum log_level)i;
            return 0;
        }
    }
    return -EINVAL;
}

void log_set_stream(FILE *f)
{
    log_stream = f;
}

void log_set_ident(const char *ident)
{
    snprintf(log_ident, sizeof(log_ident), "%s", ident ? ident : "");
}

void log_msg(enum log_level level, const char *component, const char *fmt, ...)
{
    if (level < log_min)
        return;
    FILE *out = log_stream ? log_stream : stderr;

    struct timespec ts;
    struct tm tm;
    char when[32];
    clock_gettime(CLOCK_REALTIME, &ts);
    gmtime_r(&ts.tv_sec, &tm);
    strftime(when, sizeof(when), "%Y-%m-%dT%H:%M:%S", &tm);

    /* Build the whole line first so concurrent writers never interleave. */
    char line[2048];
    int n = snprintf(line, sizeof(line), "%s.%03ldZ %-5s %s%s%s: ", when,
                     ts.tv_nsec / 1000000, level_names[level], log_ident,
                     log_ident[0] ? " " : "", component);
    if (n < 0 || (size_t)n >= sizeof(line))
        n = 0;
    va_list ap;
    va_start(ap, fmt);
    int m = vsnprintf(line + n, sizeof(line) - (size_t)n - 1, fmt, ap);
    va_end(ap);
    size_t len = (size_t)n + (m < 0 ? 0 : (size_t)m);
    if (len > sizeof(line) - 2)
        len = sizeof(line) - 2;
    line[len++] = '\n';
    fwrite(line, 1, len, out);
    fflush(out);
}
