/*
 * The migration cost model (DESIGN.md §4): how long a pre-copy live
 * migration of an arena takes and how long the service is frozen, from the
 * arena size, its dirty rate and the link bandwidth. The policies use it to
 * prefer cheap moves and to keep automatic moves within the downtime budget.
 */
#include <math.h>
#include <string.h>

#include "scheduler/sched.h"

void sched_predict(const struct sched_config *cfg, uint64_t arena, double dirty,
                   double bandwidth, struct sched_cost *ret_cost)
{
    struct sched_cost c;
    double bw = bandwidth > 0 ? bandwidth : cfg->bandwidth;
    double a = (double)arena;
    double overhead = (double)cfg->commit_overhead_ms / 1000.0;
    double budget = (double)cfg->downtime_budget_ms / 1000.0;

    memset(&c, 0, sizeof(c));
    if (!(dirty >= 0))
        dirty = 0;
    double q = dirty / bw;

    if (a <= 0) {
        /* Nothing to copy: only the freeze and the commit. */
        c.duration_s = c.downtime_s = overhead;
    } else if (q >= 1) {
        /*
         * Pages are dirtied at least as fast as they can be sent: rounds
         * never shrink, so the agent copies the whole arena frozen (§4).
         */
        c.stop_and_copy = true;
        c.bytes = a;
        c.downtime_s = a / bw + overhead;
        c.duration_s = c.downtime_s;
    } else {
        /*
         * Round 0 sends the arena while the service runs. Each next round
         * sends what was dirtied during the previous one (never more than
         * the arena), so the rounds shrink by q. Stop when the remainder
         * can be sent within the budget, or after max_rounds, and send it
         * frozen.
         */
        double round_s = a / bw;
        double elapsed = round_s;
        double sent = a;
        double remain = fmin(a, dirty * round_s);
        uint32_t rounds = 1;
        while (remain / bw + overhead > budget && rounds < cfg->max_rounds && remain > 0) {
            round_s = remain / bw;
            elapsed += round_s;
            sent += remain;
            remain = fmin(a, dirty * round_s);
            rounds++;
        }
        c.rounds = rounds;
        c.downtime_s = remain / bw + overhead;
        c.duration_s = elapsed + c.downtime_s;
        c.bytes = sent + remain;
    }
    c.over_budget = c.downtime_s > budget;
    *ret_cost = c;
}
