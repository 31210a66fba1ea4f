#!/usr/bin/env bash
# Maintenance drains in a real 3-member manager (DESIGN.md §6): a dry run
# plans a move for every endpoint of the node and says which cannot move,
# changing nothing; an empty node drains at once and `node enable` brings it
# back; a real drain makes the node ineligible and creates maintenance
# migrations within the concurrency limit; cancelling it aborts the moves not
# yet started; a drain that overruns its deadline stops; bad input is refused.
. "$(dirname "$0")/sched_lib.sh"

start_cluster --node-ttl 3s --load-summary-interval 200ms --leader-tick 100ms \
    --sched-interval 200ms
start_heartbeats

# n1 (8 cores) runs a (1), b (0.5) and big (3.5): big fits nowhere else below
# the high mark (n2: 3.7 of 4 cores, n3 has 2).
set_load n1 5.5
set_load n2 0.2
set_load n3 0.1
check "node n1 (8 cores) registers" register_node n1 8
check "node n2 (4 cores) registers" register_node n2 4
check "node n3 (2 cores) registers" register_node n3 2
for e in a:1.0 b:0.5 big:3.5; do
    check "endpoint ${e%%:*} runs on n1" create_running "${e%%:*}" n1 "${e#*:}"
done

# ---- dry run ----
out=$(send POST /v1/nodes/n1/drain '{"dry_run":true}')
dry=$(tail -n +2 <<<"$out")
check "a dry run answers 200" test "$(head -1 <<<"$out")" = 200
check "it plans a move off n1 for a and b" jqt '
    [.decisions[] | select(.action == "migrate") | .endpoint] | sort == ["a", "b"]' <<<"$dry"
check "... to other nodes, as recommendations" jqt '
    [.decisions[] | select(.action == "migrate")] |
    all(.source == "n1" and .destination != "n1" and .destination != null and .automatic == false)' <<<"$dry"
check "it says big cannot move, and why" jqt '
    .decisions[] | select(.endpoint == "big" and .reason == "no_destination") |
    .explanation | test("cannot move big")' <<<"$dry"
check "... and that the drain cannot complete" jqt '.blocked == 1 and .can_complete == false' <<<"$dry"
check "the dry run changed nothing: n1 is up and eligible" node_is n1 up true
check "... and no migration was created" test "$(jq_get /v1/migrations '.migrations | length')" = 0
check "GET /v1/plan?node=n1&drain=1 answers the same plan" \
    bash -c "curl -sf '$LU/v1/plan?node=n1&drain=1' | jq -e '.blocked == 1 and ([.decisions[] | select(.action == \"migrate\")] | length == 2)' >/dev/null"
check "the CLI's dry run shows the moves and the blocked endpoint" \
    bash -c "'$MANAGER' --manager $FU node drain n1 --dry-run >$T/dry.txt && grep -q big $T/dry.txt && grep -q migrate $T/dry.txt"

# ---- an empty node ----
check "draining the empty n3 with the CLI ends drained at once" \
    bash -c "timeout $((20 * SCALE)) '$MANAGER' --manager $FU node drain n3 >$T/drain-n3.txt && grep -qx 'n3 is drained' $T/drain-n3.txt"
check "n3 is drained and ineligible" node_is n3 drained false
check "node enable returns n3 to up and eligible" \
    bash -c "'$MANAGER' --manager $FU node enable n3 >/dev/null"
check "... as the leader sees it" node_is n3 up true

# ---- a real drain, cancelled ----
check "a drain of n1 without deadline starts (200)" \
    test "$(status_of POST /v1/nodes/n1/drain '{"deadline_ms":0}')" = 200
check "n1 is draining and ineligible" node_is n1 draining false
check "... without a deadline" test "$(jq_get /v1/nodes/n1 '.drain_deadline // "none"')" = none
maint() { jq_get /v1/migrations "[.migrations[] | select(.reason == \"maintenance\" and .source == \"n1\" $1)] | length"; }
check "maintenance migrations are created for a and b (2 at once per node)" \
    wait_until 10 bash -c "[ \"\$(curl -sf $LU/v1/migrations | jq '[.migrations[] | select(.reason == \"maintenance\")] | length')\" = 2 ]"
check "... and none for big, which fits nowhere" test "$(maint 'and .endpoint == "big"')" = 0
check "their explanation says it is the drain of n1" \
    test "$(jq_get /v1/migrations '[.migrations[] | select(.explanation | test("^draining n1: moving"))] | length')" = 2
check "the plan shows where the drain stands" \
    bash -c "curl -sf $LU/v1/plan | jq -e '.decisions[] | select(.reason == \"drain_progress\" and .node == \"n1\")' >/dev/null"
check "n1 stays draining while endpoints are left" node_is n1 draining false
check "DELETE cancels the drain: n1 is up and eligible" \
    bash -c "[ \"\$(curl -s -o /dev/null -w '%{http_code}' -X DELETE $LU/v1/nodes/n1/drain)\" = 200 ]"
check "... as the leader sees it" node_is n1 up true
check "the moves not yet started are aborted" \
    wait_until 10 bash -c "[ \"\$(curl -sf $LU/v1/migrations | jq '[.migrations[] | select(.reason == \"maintenance\" and .phase == \"aborted\" and (.error | test(\"cancelled\")))] | length')\" = 2 ]"

# ---- a drain that overruns its deadline ----
check "a drain of n1 with a 2s deadline starts" \
    test "$(status_of POST /v1/nodes/n1/drain '{"deadline_ms":2000}')" = 200
check "the node carries its deadline" test "$(jq_get /v1/nodes/n1 '.drain_deadline | type')" = number
check "past the deadline the drain stops: n1 is up but stays ineligible" wait_until 15 node_is n1 up false
check "... and its state_reason says why" \
    bash -c "curl -sf $LU/v1/nodes/n1 | jq -r .state_reason | grep -q 'drain failed: draining n1: deadline passed'"
check "node enable makes n1 eligible again" \
    bash -c "'$MANAGER' --manager $LU node enable n1 >/dev/null"
check "... as the leader sees it" node_is n1 up true
check "the leader logged the drain's decisions with their reasons" \
    bash -c "grep -qE 'decision=drain_done policy=maintenance reason=drain_done node=n3 auto=yes' $T/$L.log &&
             grep -qE 'decision=drain_expired policy=maintenance reason=drain_deadline node=n1 auto=yes' $T/$L.log &&
             grep -qE 'decision=migrate policy=maintenance reason=drain endpoint=(a|b) from=n1' $T/$L.log"

# ---- bad input ----
# expect STATUS CODE FIELD METHOD PATH [BODY]
expect() {
    local out json
    out=$(send "$4" "$5" "${6-}")
    json=$(tail -n +2 <<<"$out")
    [ "$(head -1 <<<"$out")" = "$1" ] || { diag "status $(head -1 <<<"$out"), want $1: $json"; return 1; }
    [ "$(jq -r .code <<<"$json")" = "$2" ] || { diag "code: $json"; return 1; }
    [ "$3" = - ] || [ "$(jq -r .field <<<"$json")" = "$3" ] || { diag "field: $json"; return 1; }
}
check "drain of an unknown node -> 404" expect 404 not_found id POST /v1/nodes/nosuch/drain '{}'
check "deadline_ms out of range -> 400 naming it" expect 400 bad_request deadline_ms POST /v1/nodes/n2/drain '{"deadline_ms":5}'
check "deadline_ms of the wrong type -> 400" expect 400 bad_request deadline_ms POST /v1/nodes/n2/drain '{"deadline_ms":"soon"}'
check "an unknown field -> 400" expect 400 bad_request colour POST /v1/nodes/n2/drain '{"colour":1}'
check "cancelling a drain of an up node -> 409" expect 409 conflict id DELETE /v1/nodes/n2/drain
check "plan with drain=1 but no node -> 400" expect 400 bad_request drain GET '/v1/plan?drain=1'
check "plan of an unknown node -> 404" expect 404 not_found node GET '/v1/plan?node=nosuch&drain=1'
check "plan with a bad drain flag -> 400" expect 400 bad_request drain GET '/v1/plan?node=n1&drain=maybe'
check "nothing was drained by the refused requests" node_is n2 up true
hb_off n4
check "node n4 registers and never heartbeats" register_node n4 4
check "... so it goes down after the node ttl" wait_until 15 node_is n4 down
check "a down node cannot be drained -> 409" expect 409 conflict id POST /v1/nodes/n4/drain '{}'
check "a drain on a follower is redirected to the leader (307)" \
    bash -c "[ \"\$(curl -s -o /dev/null -w '%{http_code}' -X POST -d '{}' $FU/v1/nodes/n2/drain)\" = 307 ]"

for id in m1 m2 m3; do check "member $id is alive" alive "$id"; done
for id in m1 m2 m3; do check "member $id exits cleanly on SIGTERM" stop_term "$id"; done
check "no sanitizer report in the members' logs" bash -c "! grep -q Sanitizer $T/m[123].log"
done_testing
