/*
 * The scheduler's configuration: one declarative table (STYLE.md 15) that
 * gives every field its name, unit, default, bounds and help, and drives the
 * defaults, the setter and the validation. Cross-field rules (the order of
 * the marks, backoff base below its cap) are checked after the table.
 */
#include <errno.h>
#include <inttypes.h>
#include <math.h>
#include <stddef.h>
#include <stdio.h>
#include <string.h>

#include "scheduler/sched.h"

#define MIN_MS (60 * 1000.0)
#define HOUR_MS (60 * MIN_MS)
#define DAY_MS (24 * HOUR_MS)

#define P(field, type, def, min, max, help) \
    { #field, type, offsetof(struct sched_config, field), def, min, max, help }

/*
 * Defaults and their sources: marks and the 2-minute window from the issue
 * (DRS uses similar bands); DPM's 40-minute power-off and 5-minute power-on
 * histories; QEMU's 300 ms default maximum downtime; the 1 Gbit/s bandwidth
 * a node reports before its first migration was measured.
 */
const struct sched_option sched_options[] = {
    P(high_mark, SCHED_OPT_FRACTION, 0.80, 0.01, 1.0,
      "utilization above which a node is overloaded; destinations stay below it"),
    P(target_mark, SCHED_OPT_FRACTION, 0.70, 0.01, 1.0,
      "an overloaded node sheds down to this; energy destinations stay at or below it"),
    P(low_mark, SCHED_OPT_FRACTION, 0.20, 0.0, 1.0,
      "average utilization below which the cluster is underused (energy policy)"),
    P(overload_window_ms, SCHED_OPT_DURATION, 2 * MIN_MS, 0, DAY_MS,
      "how long a node must stay above high_mark before it sheds"),
    P(power_off_window_ms, SCHED_OPT_DURATION, 40 * MIN_MS, 0, 7 * DAY_MS,
      "how long the cluster must stay underused before a node is emptied and powered off"),
    P(power_on_window_ms, SCHED_OPT_DURATION, 5 * MIN_MS, 0, DAY_MS,
      "how long the cluster must stay above high_mark (or below the reserve) before a standby node is woken"),
    P(power_on_timeout_ms, SCHED_OPT_DURATION, 10 * MIN_MS, 1000, DAY_MS,
      "a woken node that has not come up within this is given up and another one is woken"),
    P(cooldown_ms, SCHED_OPT_DURATION, 10 * MIN_MS, 0, DAY_MS,
      "minimum time between two automatic moves of one endpoint"),
    P(return_block_ms, SCHED_OPT_DURATION, 60 * MIN_MS, 0, 7 * DAY_MS,
      "an automatic move never sends an endpoint back to the node its last move left within this"),
    P(backoff_base_ms, SCHED_OPT_DURATION, 30 * 1000.0, 0, DAY_MS,
      "after an aborted migration, wait this, doubled at each further abort, before retrying"),
    P(backoff_max_ms, SCHED_OPT_DURATION, 30 * MIN_MS, 0, 7 * DAY_MS,
      "cap of the retry backoff"),
    P(max_aborts, SCHED_OPT_COUNT, 5, 1, 1000,
      "automatic policies give up on an endpoint after this many consecutive aborts"),
    P(max_per_node, SCHED_OPT_COUNT, 2, 1, 1000,
      "migrations at once per node, as source or destination (all policies and manual moves)"),
    P(max_cluster, SCHED_OPT_COUNT, 8, 1, 100000,
      "migrations at once in the whole cluster (all policies and manual moves)"),
    P(power_reserve_cpu, SCHED_OPT_CORES, 0, 0, 1e9,
      "cores of headroom below the high marks of powered-on nodes that the energy policy keeps"),
    P(min_powered_on, SCHED_OPT_COUNT, 2, 1, 1000000,
      "the energy policy never leaves fewer eligible powered-on nodes than this"),
    P(bandwidth, SCHED_OPT_RATE, 125e6, 1e3, 1e12,
      "migration bandwidth (bytes/s) assumed for a node that reports none"),
    P(downtime_budget_ms, SCHED_OPT_DURATION, 300, 1, HOUR_MS,
      "automatic moves must predict a downtime within this"),
    P(commit_overhead_ms, SCHED_OPT_DURATION, 10, 0, MIN_MS,
      "fixed cost of freeze, metadata and commit, added to every predicted downtime"),
    P(max_rounds, SCHED_OPT_COUNT, 30, 1, 1000,
      "pre-copy rounds before the final frozen copy"),
    P(overload_mode, SCHED_OPT_MODE, SCHED_MODE_AUTOMATIC, 0, 2,
      "overload policy: off, recommend or automatic"),
    P(energy_mode, SCHED_OPT_MODE, SCHED_MODE_OFF, 0, 2,
      "energy policy (power off/on): off, recommend or automatic"),
};

const size_t sched_n_options = sizeof(sched_options) / sizeof(sched_options[0]);

const struct sched_option *sched_option_find(const char *name)
{
    if (name == NULL)
        return NULL;
    for (size_t i = 0; i < sched_n_options; i++)
        if (strcmp(sched_options[i].name, name) == 0)
            return &sched_options[i];
    return NULL;
}

double sched_config_get(const struct sched_config *cfg, const struct sched_option *p)
{
    const char *base = (const char *)cfg + p->offset;
    switch (p->type) {
    case SCHED_OPT_FRACTION:
    case SCHED_OPT_CORES:
    case SCHED_OPT_RATE: {
        double v;
        memcpy(&v, base, sizeof(v));
        return v;
    }
    case SCHED_OPT_DURATION: {
        int64_t v;
        memcpy(&v, base, sizeof(v));
        return (double)v;
    }
    case SCHED_OPT_COUNT: {
        uint32_t v;
        memcpy(&v, base, sizeof(v));
        return (double)v;
    }
    case SCHED_OPT_MODE: {
        enum sched_mode v;
        memcpy(&v, base, sizeof(v));
        return (double)v;
    }
    }
    return NAN;
}

/* Store VALUE, already checked against P's bounds. */
static void param_store(struct sched_config *cfg, const struct sched_option *p, double value)
{
    char *base = (char *)cfg + p->offset;
    switch (p->type) {
    case SCHED_OPT_FRACTION:
    case SCHED_OPT_CORES:
    case SCHED_OPT_RATE:
        memcpy(base, &value, sizeof(value));
        break;
    case SCHED_OPT_DURATION: {
        int64_t v = (int64_t)value;
        memcpy(base, &v, sizeof(v));
        break;
    }
    case SCHED_OPT_COUNT: {
        uint32_t v = (uint32_t)value;
        memcpy(base, &v, sizeof(v));
        break;
    }
    case SCHED_OPT_MODE: {
        enum sched_mode v = (enum sched_mode)(int)value;
        memcpy(base, &v, sizeof(v));
        break;
    }
    }
}

static bool param_integral(const struct sched_option *p)
{
    return p->type == SCHED_OPT_DURATION || p->type == SCHED_OPT_COUNT ||
           p->type == SCHED_OPT_MODE;
}

/* Is VALUE acceptable for P on its own? Fills MSG when not. */
static bool param_check(const struct sched_option *p, double value, char *msg, size_t msglen)
{
    const char *what = NULL;
    if (!isfinite(value))
        what = "must be a finite number";
    else if (value < p->min || value > p->max)
        what = "out of range";
    else if (param_integral(p) && value != floor(value))
        what = "must be a whole number";
    if (what == NULL)
        return true;
    if (msg != NULL && msglen > 0) {
        if (p->type == SCHED_OPT_MODE)
            snprintf(msg, msglen, "%s %.10g: %s; accepted: 0 (off), 1 (recommend), 2 (automatic)",
                     p->name, value, what);
        else
            snprintf(msg, msglen, "%s %.10g: %s; accepted: %.10g to %.10g%s", p->name, value, what,
                     p->min, p->max,
                     p->type == SCHED_OPT_DURATION ? " ms"
                     : p->type == SCHED_OPT_RATE   ? " bytes/s"
                     : p->type == SCHED_OPT_CORES  ? " cores"
                                                     : "");
    }
    return false;
}

void sched_config_default(struct sched_config *cfg)
{
    memset(cfg, 0, sizeof(*cfg));
    for (size_t i = 0; i < sched_n_options; i++)
        param_store(cfg, &sched_options[i], sched_options[i].def);
}

int sched_config_set(struct sched_config *cfg, const char *name, double value, char *msg,
                     size_t msglen)
{
    const struct sched_option *p = sched_option_find(name);
    if (p == NULL) {
        if (msg != NULL && msglen > 0)
            snprintf(msg, msglen, "unknown scheduler setting \"%s\"", name ? name : "(null)");
        return -ENOENT;
    }
    if (!param_check(p, value, msg, msglen))
        return -EINVAL;
    param_store(cfg, p, value);
    return 0;
}

int sched_config_validate(const struct sched_config *cfg, char *msg, size_t msglen)
{
    if (msg != NULL && msglen > 0)
        msg[0] = '\0';
    for (size_t i = 0; i < sched_n_options; i++) {
        const struct sched_option *p = &sched_options[i];
        if (!param_check(p, sched_config_get(cfg, p), msg, msglen))
            return -EINVAL;
    }
    /*
     * The hysteresis only works when the marks are ordered: shedding to a
     * target at or above the high mark would re-trigger at once, and an
     * underuse threshold at or above the target would empty nodes into
     * destinations that are themselves "underused".
     */
    if (!(cfg->target_mark < cfg->high_mark)) {
        if (msg != NULL && msglen > 0)
            snprintf(msg, msglen, "target_mark %g: must be below high_mark %g", cfg->target_mark,
                     cfg->high_mark);
        return -EINVAL;
    }
    if (!(cfg->low_mark < cfg->target_mark)) {
        if (msg != NULL && msglen > 0)
            snprintf(msg, msglen, "low_mark %g: must be below target_mark %g", cfg->low_mark,
                     cfg->target_mark);
        return -EINVAL;
    }
    if (cfg->backoff_base_ms > cfg->backoff_max_ms) {
        if (msg != NULL && msglen > 0)
            snprintf(msg, msglen,
                     "backoff_base_ms %" PRId64 ": must not exceed backoff_max_ms %" PRId64,
                     cfg->backoff_base_ms, cfg->backoff_max_ms);
        return -EINVAL;
    }
    return 0;
}

const char *sched_mode_name(enum sched_mode mode)
{
    switch (mode) {
    case SCHED_MODE_OFF:
        return "off";
    case SCHED_MODE_RECOMMEND:
        return "recommend";
    case SCHED_MODE_AUTOMATIC:
        return "automatic";
    }
    return "unknown";
}

int sched_mode_parse(const char *s, enum sched_mode *ret_mode)
{
    static const enum sched_mode modes[] = {SCHED_MODE_OFF, SCHED_MODE_RECOMMEND,
                                            SCHED_MODE_AUTOMATIC};
    if (s == NULL)
        return -EINVAL;
    for (size_t i = 0; i < sizeof(modes) / sizeof(modes[0]); i++) {
        if (strcmp(s, sched_mode_name(modes[i])) == 0) {
            *ret_mode = modes[i];
            return 0;
        }
    }
    return -EINVAL;
}
