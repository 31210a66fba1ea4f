#!/usr/bin/env bash
# The energy policy in a real 3-member manager (DESIGN.md §6): an underused
# cluster powers its least loaded (empty) node off through the power-off hook,
# which runs with the node's id and address; a failing hook is recorded and
# retried; the node ends in standby; when the load rises the power-on hook
# wakes it, and it is up again once its agent heartbeats.
. "$(dirname "$0")/sched_lib.sh"

# The hooks log their arguments. Powering off stops the node's heartbeats
# (the first attempt fails, as an unreachable BMC would); powering on resumes
# them, as the node's agent would after boot (the first attempt hangs, with a
# child, past the hook timeout).
cat >"$T/power-off.sh" <<EOF
#!/bin/sh
echo "off \$1 \$2" >>"$T/power.log"
if [ ! -e "$T/failed-once" ]; then
    touch "$T/failed-once"
    echo "BMC of \$1 unreachable" >&2
    exit 3
fi
echo off >"$T/hb/\$1.tmp" && mv "$T/hb/\$1.tmp" "$T/hb/\$1"
echo "chassis power off"
EOF
cat >"$T/power-on.sh" <<EOF
#!/bin/sh
echo "on \$1 \$2" >>"$T/power.log"
if [ ! -e "$T/hung-once" ]; then
    touch "$T/hung-once"
    echo \$\$ >"$T/hook.pid"
    sleep 60 &
    echo \$! >"$T/child.pid"
    wait
fi
echo '{"cpu_used":0.1}' >"$T/hb/\$1.tmp" && mv "$T/hb/\$1.tmp" "$T/hb/\$1"
EOF
chmod +x "$T/power-off.sh" "$T/power-on.sh"
: >"$T/power.log"

start_cluster --node-ttl 3s --load-summary-interval 200ms --leader-tick 100ms \
    --sched-interval 200ms --sched-energy-mode automatic --sched-power-off-window 1s \
    --sched-power-on-window 1s --sched-min-powered-on 2 --sched-backoff-base 1s \
    --power-off-cmd "$T/power-off.sh %n %a" --power-on-cmd "$T/power-on.sh %n %a" \
    --power-hook-timeout 1s
start_heartbeats

# The cluster is busy until every node's load has reached the leader, so that
# the underuse window starts on a complete view: n2 and n3 first, then n1.
load_known() { [ "$(jq_get /v1/nodes "[.nodes[] | select(.load != null and .load.cpu == $1)] | length")" = "$2" ]; }
set_load n2 3.0
set_load n3 3.0
check "node n2 (4 cores) registers" register_node n2 4
check "node n3 (4 cores) registers" register_node n3 4
check "their load reaches the leader" wait_until 10 load_known 3 2
set_load n1 0.1 268435456
check "node n1 (4 cores) registers" register_node n1 4
check "its load reaches the leader" wait_until 10 load_known 0.1 1
n1_addr=$(jq_get /v1/nodes/n1 .address)
# 0.9 of 12 cores: 7.5% < low 20%; n1 is the least loaded.
set_load n2 0.4
set_load n3 0.4
check "the first power-off of n1 runs the hook with its id and address" \
    wait_until 15 grep -q "^off n1 $n1_addr\$" "$T/power.log"
check "its failure is logged with the exit status and the output" \
    wait_until 5 log_has 'node=n1 power-off hook exited 3 after [^;]*; output: BMC of n1 unreachable'
check "... and counted" \
    wait_until 5 bash -c "[ \"\$(curl -sf $LU/metrics | grep -F 'dvs_scheduler_power_hooks_total{hook=\"power_off\",result=\"failed\"}')\" = 'dvs_scheduler_power_hooks_total{hook=\"power_off\",result=\"failed\"} 1' ]"
check "after its backoff the hook runs again, and n1 is in standby" wait_until 15 node_is n1 standby false
check "the hook ran twice for n1, never for another node" \
    bash -c "[ \$(grep -c '^off n1 ' $T/power.log) = 2 ] && ! grep -q '^off n[23] ' $T/power.log"
reason=$(jq_get /v1/nodes/n1 .state_reason)
diag "n1: $reason"
check "its state_reason records the hook's outcome and output" \
    bash -c "grep -q 'powered off by the energy policy: hook exited 0' <<<'$reason' && grep -q 'chassis power off' <<<'$reason'"
check "the leader logged the power-off decision with its reason" \
    log_has 'decision=power_off policy=energy reason=underused node=n1 auto=yes: cluster (cpu|mem) [0-9]+% < low 20%'
check "n2 stays up (at least 2 nodes stay powered on)" node_is n2 up true
check "n3 stays up" node_is n3 up true
check "the plan projects n1 off" \
    bash -c "curl -sf $LU/v1/plan | jq -e '.projection[] | select(.node == \"n1\") | .powered_after == false' >/dev/null"

# 7.6 of the 8 powered-on cores: 95% > high 80% for the window.
set_load n2 3.8
set_load n3 3.8
check "when the load rises, the power-on hook runs for n1" \
    wait_until 15 grep -q "^on n1 $n1_addr\$" "$T/power.log"
check "a hook that hangs is killed after --power-hook-timeout" \
    wait_until 10 log_has 'node=n1 power-on hook timed out after 1.*s and was killed'
check "... with everything it started" \
    wait_until 5 bash -c "! kill -0 \$(cat $T/hook.pid) 2>/dev/null && ! kill -0 \$(cat $T/child.pid) 2>/dev/null"
check "the next attempt runs the hook again" \
    wait_until 15 bash -c "[ \$(grep -c '^on n1 ' $T/power.log) = 2 ]"
check "n1 is up and eligible again once it heartbeats" wait_until 10 node_is n1 up true
check "... for the reason that it was woken" \
    bash -c "curl -sf $LU/v1/nodes/n1 | jq -r .state_reason | grep -q 'powered on by the energy policy'"
check "the leader logged the power-on decision with its reason" \
    log_has 'decision=power_on policy=energy reason=load_high node=n1 auto=yes'
check "/metrics counts the hooks" bash -c "
    m=\$(curl -sf $LU/metrics)
    grep -qx 'dvs_scheduler_power_hooks_total{hook=\"power_off\",result=\"ok\"} 1' <<<\"\$m\" &&
    grep -qx 'dvs_scheduler_power_hooks_total{hook=\"power_on\",result=\"ok\"} 1' <<<\"\$m\" &&
    grep -qx 'dvs_scheduler_power_hooks_total{hook=\"power_on\",result=\"timeout\"} 1' <<<\"\$m\" &&
    grep -qx 'dvs_scheduler_decisions_total{action=\"power_on\",policy=\"energy\",automatic=\"true\"} 2' <<<\"\$m\""

for id in m1 m2 m3; do check "member $id is alive" alive "$id"; done
for id in m1 m2 m3; do check "member $id exits cleanly on SIGTERM" stop_term "$id"; done
check "no sanitizer report in the members' logs" bash -c "! grep -q Sanitizer $T/m[123].log"
done_testing
