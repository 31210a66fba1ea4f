#!/usr/bin/env bash
# The agents and a manager failover (DESIGN.md §8: survive a manager member
# dying at any point): the leader is killed with SIGKILL while a migration
# runs under client load. The migration ends (committed or aborted, never
# stuck), exactly one instance serves afterwards, the agents keep
# heartbeating to the new leader, and no acknowledged write is lost.
. "$(dirname "$0")/lib.sh"
. "$(dirname "$0")/node_lib.sh"

cluster_up
start_agent n1
start_agent n2
both_up() { node_up n1 && node_up n2; }
check "both agents register" wait_until 10 both_up
create_kv kv n1
check "kv runs on n1" wait_until 10 ep_is state kv running

L=$(leader_of m1 m2 m3) || bail "no leader"
SURVIVORS=()
for i in 1 2 3; do [ "m$i" = "$L" ] || SURVIVORS+=("m$i"); done
S=${SURVIVORS[0]}
# Reads go to a survivor from here on.
on_survivor() { curl -sfL --max-time 2 "$(url "$S")$1"; }

kv load --duration 8s --rate 300 --threads 4 --keys 40 --incr-keys 4 \
    --history "$T/history" >"$T/load.json" 2>"$T/load.err" &
LOAD=$!
sleep 1
mgr "$S" endpoint migrate kv --to n2 --detach >/dev/null 2>&1
MID=$(on_survivor /v1/migrations | jq -r '.migrations[0].id')
kill9 "$L"
diag "killed leader $L right after starting migration $MID"
check "the survivors elect a new leader" wait_until 15 has_leader "${SURVIVORS[@]}"
settled() {
    local p
    p=$(on_survivor "/v1/migrations/$MID" | jq -r .phase)
    [ "$p" = committed ] || [ "$p" = aborted ]
}
check "the migration ends (committed or aborted), it does not hang" wait_until 40 settled
PHASE=$(on_survivor "/v1/migrations/$MID" | jq -r .phase)
diag "migration $MID ended $PHASE: $(on_survivor "/v1/migrations/$MID" | jq -c '{error,downtime_ms,bytes}')"
if [ "$PHASE" = committed ]; then WHERE=n2; GEN=2; else WHERE=n1; GEN=1; fi
placed() { [ "$(on_survivor "/v1/endpoints/kv" | jq -r '[.node,.generation,.state]|join(" ")')" = "$WHERE $GEN running" ]; }
check "the directory places kv where the outcome says ($WHERE, generation $GEN)" wait_until 10 placed
wait "$LOAD"
check "the load ran to the end" test $? = 0
check "every acknowledged write reads back, no increment applied twice" \
    quiet kv verify --history "$T/history"
diag "client-observed longest gap: $(jq -r .max_gap_ms "$T/load.json") ms, failed calls $(jq -r .failed "$T/load.json")"
one_left() { [ "$(count_live kv)" = 1 ]; }
check "exactly one kv process is left" wait_until 15 one_left
check "it is the one the directory names" test "$(live_pids_of kv)" = "$(svc_pids "$WHERE" kv)"
hb_to_new() {
    local nl a
    nl=$(leader_of "${SURVIVORS[@]}") || return 1
    for n in n1 n2; do
        a=$(curl -sf "$(url "$nl")/v1/nodes/$n" | jq -r '.heartbeat_age_ms // 99999')
        [ "$a" -lt 2000 ] || return 1
    done
}
check "both agents heartbeat to the new leader" wait_until 10 hb_to_new

# The old leader comes back; a migration the other way goes through.
start_member "$L" --bootstrap "$(bootstrap_list 3)" --node-ttl 3s --load-summary-interval 1s \
    --migration-timeout 20s
check "the old leader rejoins" wait_until 15 has_leader m1 m2 m3
OTHER=n2; [ "$WHERE" = n2 ] && OTHER=n1
out=$(mgr "$S" endpoint migrate kv --to "$OTHER" 2>&1)
check "a migration after the failover commits" test $? = 0
diag "${out//$'\n'/ | }"
check "kv answers from $OTHER" quiet kv incr after-failover
check "both agents are alive" bash -c "kill -0 ${PIDS[n1]} && kill -0 ${PIDS[n2]}"
done_testing
