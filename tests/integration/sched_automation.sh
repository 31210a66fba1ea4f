#!/usr/bin/env bash
# Automation levels (DESIGN.md §6): with --automation recommend the leader
# plans and explains what it would do, logs and counts the recommendation
# once, and changes nothing; drains, an operator's request, still run.
. "$(dirname "$0")/sched_lib.sh"

start_cluster --node-ttl 5s --load-summary-interval 200ms --leader-tick 100ms \
    --sched-interval 200ms --sched-overload-window 1s --automation recommend
start_heartbeats

set_load n1 3.8
set_load n2 0.2
check "node n1 (4 cores) registers" register_node n1 4
check "node n2 (4 cores) registers" register_node n2 4
check "endpoint web (2 cores) runs on n1" create_running web n1 2.0

recommended() {
    get /v1/plan | jq -e '.automation == "recommend" and .modes.overload == "recommend" and
        any(.decisions[]; .action == "migrate" and .policy == "overload" and
            .endpoint == "web" and .destination == "n2" and .automatic == false)' >/dev/null
}
check "the plan recommends moving web off the overloaded n1" wait_until 15 recommended
evaluations_past() {
    [ "$(curl -sf "$LU/metrics" | awk '$1 == "dvs_scheduler_evaluations_total" {print $2}')" -ge "$1" ]
}
check "the leader keeps evaluating" wait_until 10 evaluations_past $(($(metric dvs_scheduler_evaluations_total) + 5))
check "... and creates no migration" test "$(jq_get /v1/migrations '.migrations | length')" = 0
check "web stays on n1, running" test "$(jq_get /v1/endpoints/web '"\(.node) \(.state)"')" = "n1 running"
check "the recommendation is logged once at info" \
    test "$(grep -c 'decision=migrate policy=overload reason=overload endpoint=web from=n1 to=n2 auto=no' "$T/$L.log")" = 1
check "... and counted once" \
    test "$(metric 'dvs_scheduler_decisions_total{action="migrate",policy="overload",automatic="false"}')" = 1

check "a drain still runs: the empty n2 ends drained" \
    bash -c "timeout $((20 * SCALE)) '$MANAGER' --manager $LU node drain n2 >/dev/null"
check "... as the leader sees it" node_is n2 drained false

for id in m1 m2 m3; do check "member $id is alive" alive "$id"; done
for id in m1 m2 m3; do check "member $id exits cleanly on SIGTERM" stop_term "$id"; done
check "no sanitizer report in the members' logs" bash -c "! grep -q Sanitizer $T/m[123].log"
done_testing
