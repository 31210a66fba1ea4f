#!/usr/bin/env bash
# The node agent on its own: registration and heartbeats, running an
# endpoint's service, restarting it after a crash (generation + 1, data
# kept), surviving its own kill -9 without orphaning or duplicating the
# service, and stopping the service when the endpoint is deleted.
. "$(dirname "$0")/lib.sh"
. "$(dirname "$0")/node_lib.sh"

cluster_up
start_agent n1 --cpu 2 --mem 1G

check "the agent registers its node, which is up" wait_until 10 node_up n1
check "the node has the declared capacity" \
    bash -c "[ \"\$(curl -sf $(url m1)/v1/nodes/n1 | jq -c '[.cpu,.mem,.address]')\" = '[2,1073741824,\"${NODE_ADDR[n1]}\"]' ]"
has_load() { [ "$(curl -sf "$(url m1)/v1/nodes/n1" | jq -r '.load.time // empty')" != "" ]; }
check "heartbeats carry load figures to the manager" wait_until 10 has_load
# Heartbeats live in the leader's memory (DESIGN.md §3): ask the leader.
hb_recent() {
    local l a
    l=$(leader_of m1 m2 m3) || return 1
    a=$(curl -sf "$(url "$l")/v1/nodes/n1" | jq -r '.heartbeat_age_ms // 99999')
    [ "$a" -lt 2000 ]
}
check "the leader heard a heartbeat within the last 2 s" wait_until 5 hb_recent

# ---- an endpoint runs and answers ----
create_kv kv n1
running_gen() { ep_is state "$1" running && ep_is generation "$1" "$2"; }
check "endpoint kv runs on n1 (state running, generation 1)" wait_until 10 running_gen kv 1
check "kv answers a put" quiet kv put greeting hello
check "kv answers a get with the value put" kv_get_is greeting hello
kv incr hits 5 >/dev/null
PID1=$(svc_pids n1 kv)
check "the agent recorded the service's pid in its data dir" test -n "$PID1"
check "exactly one kv process runs" test "$(count_live kv)" = 1

# ---- kill -9 the service: restarted with generation + 1, arena kept ----
kill -9 "$PID1"
check "after kill -9 of the service the agent restarts it as generation 2" \
    wait_until 10 ep_is generation kv 2
check "the directory says running again" wait_until 5 ep_is state kv running
PID2=$(svc_pids n1 kv)
check "the restarted service is a new process" test -n "$PID2" -a "$PID2" != "$PID1"
check "the data survived the crash (the agent kept the arena)" kv_get_is greeting hello
check "no increment was lost or repeated across the crash" kv_incr_is hits 6
check "the agent logged the crash with the facts" log_has n1 "endpoint=kv gen=1 crashed \\(signal 9\\)"

# ---- kill -9 the agent: the service keeps serving, the new agent adopts it ----
kill9 n1
check "with the agent dead, the service still answers" kv_get_is greeting hello
start_agent n1 --cpu 2 --mem 1G
adopted() { log_has n1 "endpoint=kv gen=2 pid=$PID2 adopted"; }
check "the restarted agent adopts the running service (same pid, same generation)" \
    wait_until 10 adopted
check "still exactly one kv process (nothing orphaned, nothing duplicated)" \
    test "$(count_live kv)" = 1
check "the generation did not change across the agent restart" ep_is generation kv 2
check "kv still answers after the agent restart" kv_incr_is hits 7
# The adopted service is still supervised: a crash now is restarted too.
kill -9 "$PID2"
check "a crash of the adopted service is restarted as generation 3" \
    wait_until 10 ep_is generation kv 3
check "and its data is still there" kv_incr_is hits 8

# ---- a process the directory does not want is killed at agent start ----
PID3=$(svc_pids n1 kv)
kill9 n1
mgr m1 endpoint delete kv >/dev/null
start_agent n1 --cpu 2 --mem 1G
gone() { ! kill -0 "$PID3" 2>/dev/null || [ "$(awk '{print $3}' /proc/$PID3/stat 2>/dev/null)" = Z ]; }
check "an agent restarted after the endpoint's deletion kills the leftover service" \
    wait_until 10 gone
check "and drops its record" wait_until 5 bash -c "! ls $T/n1/services/kv.*.json >/dev/null 2>&1"

# ---- deleting a running endpoint stops its service ----
create_kv kv2 n1
check "a second endpoint starts" wait_until 10 ep_is state kv2 running
P=$(svc_pids n1 kv2)
mgr m1 endpoint delete kv2 >/dev/null
stopped() { ! kill -0 "$P" 2>/dev/null || [ "$(awk '{print $3}' /proc/$P/stat 2>/dev/null)" = Z ]; }
check "deleting the endpoint stops its service" wait_until 10 stopped

# ---- a second agent on the same data dir is refused ----
"$NODE_BIN" serve --id n1 --manager "$MGR_URLS" --listen "127.0.0.1:$(low_port)" \
    --data-dir "$T/n1" >"$T/dup.out" 2>&1 &
dup=$!
check "a second agent on the same data dir exits at once" wait_until 5 bash -c "! kill -0 $dup"
check "and says why" grep -q "another dvs-node already runs" "$T/dup.out"

check "the agent is still alive" alive n1
check "SIGTERM stops the agent cleanly (exit 0)" stop_term n1
done_testing
