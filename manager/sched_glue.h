/*
 * The manager's side of the scheduler (DESIGN.md §6): the pure library in
 * scheduler/ decides, this module feeds it and carries its decisions out.
 *
 *   - Configuration: one --sched-* option per entry of sched_options[] (the
 *     library's own table gives names, defaults, bounds and help), plus
 *     --automation, --sched-interval, the power hooks and the default drain
 *     deadline in daemon.c's table.
 *   - The leader evaluates on a timer (--sched-interval) and soon after a
 *     relevant change of the FSM (at most once a second), on a view built
 *     from the FSM and the history the previous evaluation returned.
 *   - Automatic decisions become Raft commands (migration records, node
 *     states) or power hook runs; every decision is logged with its reason.
 *   - The REST API (rest_plan.c) asks for the plan and drain dry runs.
 *
 * Everything runs on the daemon's loop thread.
 */
#ifndef DVS_MANAGER_SCHED_GLUE_H
#define DVS_MANAGER_SCHED_GLUE_H

#include <jansson.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "common/opts.h"

struct mgr;
struct mgr_settings;

/* Room for the generated --sched-* options (sched_n_options must not exceed it). */
#define MGR_SCHED_MAX_PARAMS 32

/* Where one generated --sched-* option stores its value: the member its type uses. */
struct mgr_sched_slot {
    double num;  /* OPT_DOUBLE: fractions, cores, bytes/s */
    int64_t i64; /* OPT_DURATION (ms), OPT_INT (counts) */
    char *str;   /* OPT_STRING: modes ("off", "recommend", "automatic") */
};

/*
 * The daemon's option table: BASE (borrowed, must live as long as the
 * process) followed by one option per scheduler parameter, named after it
 * ("high_mark" -> --sched-high-mark, "overload_window_ms" ->
 * --sched-overload-window) and storing into mgr_settings.sched[]. Built on
 * the first call; the same table is returned afterwards. Never NULL.
 */
const struct opt_def *mgr_sched_options(const struct opt_def *base);

/*
 * Check the scheduler's settings in CFG as a whole: modes, the marks against
 * each other, hooks required by an automatic energy policy. 0, or -EINVAL
 * with ERR naming the option and what is accepted.
 */
int mgr_sched_check_settings(const struct mgr_settings *cfg, char *err, size_t errlen);

/* Create m->sched (settings already checked). Call once the loop exists. */
int mgr_sched_init(struct mgr *m);
/* Stop everything, kill running hooks, free m->sched once its handles closed. Accepts none. */
void mgr_sched_close(struct mgr *m);

/* Leader duties (leader.c): start when leadership is ready, stop when it is lost. */
void mgr_sched_start(struct mgr *m);
void mgr_sched_stop(struct mgr *m);

/* The FSM changed TABLES (enum mgr_table): evaluate again soon, if leader. */
void mgr_sched_notify(struct mgr *m, unsigned tables);

/*
 * A heartbeat came from NODE, which the FSM has in standby since
 * STANDBY_SINCE (wall ms). Returns why it should now be up (the power-on
 * hook woke it, or it kept running long after its power-off), or NULL when
 * the heartbeat is a straggler from before the power-off.
 */
const char *mgr_sched_wake_reason(struct mgr *m, const char *node, int64_t standby_since);

/*
 * The plan for GET /v1/plan: what the scheduler would do now and why, and
 * the projected load of every node after it (docs/api.md). With NODE and
 * DRAIN, a dry run of draining NODE; with NODE alone, only the decisions
 * and projection concerning NODE. Nothing is applied and no history is
 * changed. 0 with *RET set (caller owns it), DVS_ENOTFOUND (no such node),
 * -EINVAL (a bad view, ERR says why) or -ENOMEM.
 */
int mgr_sched_plan(struct mgr *m, const char *node, bool drain, json_t **ret, char *err,
                   size_t errlen);

/* The scheduler's /metrics lines (Prometheus text). Caller frees. */
char *mgr_sched_metrics(struct mgr *m);

#endif
