/*
 * Explanations: every decision carries one sentence with the figures it was
 * made from, so that an operator reading `dvs-manager plan` or the leader's
 * log can check the arithmetic ("unexplained decisions" is the first thing
 * users of DRS and the Kubernetes descheduler complain about).
 *
 * Formatting is locale-free in practice (the daemons never call setlocale),
 * and only uses the input figures, so texts are deterministic too.
 */
#include <inttypes.h>
#include <math.h>
#include <stdio.h>
#include <string.h>

#include "scheduler/internal.h"

void sched__say(struct sched_decision *d, const char *fmt, ...)
{
    size_t len = strnlen(d->text, sizeof(d->text));
    va_list ap;

    if (len + 1 >= sizeof(d->text))
        return;
    va_start(ap, fmt);
    vsnprintf(d->text + len, sizeof(d->text) - len, fmt, ap);
    va_end(ap);
}

/* Room for a formatted number (longer ones are cut: only absurd inputs are that long). */
#define NUM 24

/* A number with at most DIGITS decimals and no trailing zeros: "2", "0.6", "1.25". */
static const char *fmt_num(char *buf, double v, int digits)
{
    snprintf(buf, NUM, "%.*f", digits, v);
    char *dot = strchr(buf, '.');
    if (dot != NULL) {
        char *end = buf + strlen(buf) - 1;
        while (end > dot && *end == '0')
            *end-- = '\0';
        if (end == dot)
            *end = '\0';
    }
    if (strcmp(buf, "-0") == 0)
        strcpy(buf, "0");
    return buf;
}

const char *sched__fmt_ms(char *buf, int64_t ms)
{
    if (ms < 0)
        ms = 0;
    if (ms == 0) {
        snprintf(buf, SCHED__FMT, "0s");
    } else if (ms < 1000) {
        snprintf(buf, SCHED__FMT, "%" PRId64 "ms", ms);
    } else if (ms < 60 * 1000) {
        char n[NUM];
        snprintf(buf, SCHED__FMT, "%ss", fmt_num(n, (double)ms / 1000.0, 1));
    } else if (ms < 3600 * 1000) {
        int64_t m = ms / 60000, s = ms % 60000 / 1000;
        if (s == 0)
            snprintf(buf, SCHED__FMT, "%" PRId64 "m", m);
        else
            snprintf(buf, SCHED__FMT, "%" PRId64 "m%02" PRId64 "s", m, s);
    } else if (ms < INT64_C(86400) * 1000) {
        int64_t h = ms / 3600000, m = ms % 3600000 / 60000;
        if (m == 0)
            snprintf(buf, SCHED__FMT, "%" PRId64 "h", h);
        else
            snprintf(buf, SCHED__FMT, "%" PRId64 "h%02" PRId64 "m", h, m);
    } else {
        int64_t dd = ms / 86400000, h = ms % 86400000 / 3600000;
        snprintf(buf, SCHED__FMT, "%" PRId64 "d%02" PRId64 "h", dd, h);
    }
    return buf;
}

const char *sched__fmt_secs(char *buf, double s)
{
    char n[NUM];
    if (!(s >= 0))
        s = 0;
    if (s < 1.0)
        snprintf(buf, SCHED__FMT, "%.0f ms", s * 1000.0);
    else if (s < 60.0)
        snprintf(buf, SCHED__FMT, "%s s", fmt_num(n, s, 1));
    else if (s < 1e12)
        sched__fmt_ms(buf, (int64_t)(s * 1000.0));
    else
        snprintf(buf, SCHED__FMT, "%.3g s", s);
    return buf;
}

const char *sched__fmt_bytes(char *buf, double bytes)
{
    static const char *const units[] = {"B", "KiB", "MiB", "GiB", "TiB", "PiB"};
    char n[NUM];
    size_t u = 0;
    double v = bytes > 0 ? bytes : 0;
    while (v >= 1024 && u + 1 < sizeof(units) / sizeof(units[0])) {
        v /= 1024;
        u++;
    }
    snprintf(buf, SCHED__FMT, "%s %s", fmt_num(n, v, v >= 100 || u == 0 ? 0 : v >= 10 ? 1 : 2),
             units[u]);
    return buf;
}

const char *sched__fmt_amount(char *buf, enum sched_resource r, double v)
{
    char n[NUM];
    if (r == SCHED_CPU) {
        fmt_num(n, v, v >= 10 ? 1 : 2);
        snprintf(buf, SCHED__FMT, "%s %s", n, strcmp(n, "1") == 0 ? "core" : "cores");
        return buf;
    }
    return sched__fmt_bytes(buf, v);
}

const char *sched__fmt_load(char *buf, const double load[SCHED_NRES])
{
    char c[SCHED__FMT], m[SCHED__FMT];
    sched__fmt_amount(c, SCHED_CPU, load[SCHED_CPU]);
    if (load[SCHED_MEM] > 0)
        snprintf(buf, SCHED__FMT_LOAD, "%s, %s", c, sched__fmt_bytes(m, load[SCHED_MEM]));
    else
        snprintf(buf, SCHED__FMT_LOAD, "%s", c);
    return buf;
}

void sched__say_endpoint(struct sched_decision *d, const struct sched_endpoint *e)
{
    char a[SCHED__FMT], r[SCHED__FMT], l[SCHED__FMT_LOAD];
    double load[SCHED_NRES];
    sched__ep_load(e, load);
    sched__say(d, "%s (arena %s, dirty %s/s, load %s)", e->name,
               sched__fmt_bytes(a, (double)e->arena_size), sched__fmt_bytes(r, e->dirty_rate),
               sched__fmt_load(l, load));
}

void sched__say_node_change(struct sched_decision *d, const struct sched_node *n,
                            enum sched_resource r, double before, double after)
{
    sched__say(d, "%s (%s %.0f%% -> %.0f%%", n->id, sched_resource_name(r), before * 100,
               after * 100);
}

void sched__say_cost(struct sched_decision *d, const struct sched_cost *c,
                     const struct sched_config *cfg)
{
    char t[SCHED__FMT], dt[SCHED__FMT], b[SCHED__FMT];
    sched__say(d, "; predicted %s, downtime %s", sched__fmt_secs(t, c->duration_s),
               sched__fmt_secs(dt, c->downtime_s));
    if (c->stop_and_copy)
        sched__say(d, " (stop-and-copy: dirty rate >= bandwidth)");
    if (c->over_budget)
        sched__say(d, ", over the %s budget",
                   sched__fmt_secs(b, (double)cfg->downtime_budget_ms / 1000.0));
}

void sched__say_miss(struct sched_decision *d, const struct sched__ctx *ctx,
                     const struct sched__miss *m)
{
    char a[SCHED__FMT], b[SCHED__FMT];
    if (m->prefiltered) {
        if (m->most_room == -INFINITY)
            sched__say(d, "no node may receive endpoints (none is up, eligible, powered on "
                          "and free of outgoing moves)");
        else
            sched__say(d, "no eligible node has %s of %s free below the mark (the most is %s)",
                       sched__fmt_amount(a, m->short_res, m->need),
                       sched_resource_name(m->short_res),
                       sched__fmt_amount(b, m->short_res, m->most_room > 0 ? m->most_room : 0));
        return;
    }
    if (m->closest != SCHED_NONE) {
        sched__say(d, "closest %s: %s %.0f%% -> %.0f%%", ctx->view->nodes[m->closest].id,
                   sched_resource_name(m->res), m->before * 100, m->after * 100);
        if (m->n_busy > 0)
            sched__say(d, "; %" PRIu32 " more at their migration limit", m->n_busy);
        return;
    }
    if (m->n_busy > 0)
        sched__say(d, "every eligible node with room is at its migration limit (%" PRIu32 ")",
                   m->n_busy);
    else
        sched__say(d, "no other node may receive endpoints");
}
