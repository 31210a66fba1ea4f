#!/usr/bin/env bash
# The REST API of a 3-member manager: bad input is refused clearly and changes
# nothing, blocking queries, node heartbeats, down after the TTL and back up,
# the load summary reaching followers. Bad flags and config files.
. "$(dirname "$0")/lib.sh"

plan_members 3
BOOT=$(bootstrap_list 3)
for i in 1 2 3; do
    start_member "m$i" --bootstrap "$BOOT" --node-ttl 1500ms --load-summary-interval 300ms \
        --leader-tick 100ms --max-body 4K
done
wait_until 15 has_leader m1 m2 m3 || bail "no leader"
L=$(leader_of m1 m2 m3)
LU=$(url "$L")
F=m1; [ "$L" = m1 ] && F=m2
FU=$(url "$F")

# expect STATUS CODE FIELD METHOD PATH [BODY]: the answer has that HTTP
# status, JSON error code and (if not "-") field.
expect() {
    local st=$1 code=$2 field=$3 method=$4 path=$5 body=${6-}
    local out; out=$(http "$method" "$LU$path" "$body")
    local got; got=$(head -1 <<<"$out")
    local json; json=$(tail -n +2 <<<"$out")
    [ "$got" = "$st" ] || { diag "status $got, want $st: $json"; return 1; }
    [ "$(jq -r .code <<<"$json")" = "$code" ] || { diag "code: $json"; return 1; }
    [ "$field" = - ] || [ "$(jq -r .field <<<"$json")" = "$field" ] || { diag "field: $json"; return 1; }
    [ -n "$(jq -r .error <<<"$json")" ] || return 1
}

before=$(curl -sf "$LU/v1/endpoints" | jq -c .endpoints)
check "malformed JSON -> 400 bad_request" expect 400 bad_request - POST /v1/endpoints '{"name": "a",'
check "unknown field -> 400 naming it" expect 400 bad_request colour POST /v1/endpoints '{"name":"a","command":"/bin/true","colour":"red"}'
check "wrong type -> 400 naming the field" expect 400 bad_request arena POST /v1/endpoints '{"name":"a","command":"/bin/true","arena":"big"}'
check "missing required field -> 400 naming it" expect 400 bad_request command POST /v1/endpoints '{"name":"a"}'
check "invalid name -> 400" expect 400 bad_request name POST /v1/endpoints '{"name":"Bad Name!","command":"/bin/true"}'
check "arena out of range -> 400" expect 400 bad_request arena POST /v1/endpoints '{"name":"a","command":"/bin/true","arena":1}'
check "not an object -> 400" expect 400 bad_request - POST /v1/endpoints '[1,2,3]'
check "duplicate keys -> 400" expect 400 bad_request - POST /v1/endpoints '{"name":"a","name":"b","command":"/bin/true"}'
big=$(head -c 8000 /dev/zero | tr '\0' 'x')
check "body over --max-body -> 413 too_large" expect 413 too_large - POST /v1/endpoints "{\"name\":\"a\",\"command\":\"$big\"}"
check "unknown route -> 404" expect 404 not_found - GET /v1/nothing
check "wrong method -> 405" expect 405 method_not_allowed - PUT /v1/status
check "unknown endpoint -> 404" expect 404 not_found - GET /v1/endpoints/nope
check "pinning to an unknown node -> 404" expect 404 not_found - POST /v1/endpoints '{"name":"a","command":"/bin/true","node":"nosuch"}'
check "bad blocking index -> 400" expect 400 bad_request index GET '/v1/endpoints?index=abc'
check "bad blocking wait -> 400" expect 400 bad_request wait GET '/v1/endpoints?index=1&wait=forever'
after=$(curl -sf "$LU/v1/endpoints" | jq -c .endpoints)
check "nothing was applied by the refused requests" test "$before" = "$after"
check "duplicate name -> 409 exists" bash -c "
    [ \$(curl -s -o /dev/null -w '%{http_code}' -X POST -d '{\"name\":\"dup\",\"command\":\"/bin/true\"}' $LU/v1/endpoints) = 201 ] &&
    [ \$(curl -s -o /dev/null -w '%{http_code}' -X POST -d '{\"name\":\"dup\",\"command\":\"/bin/false\"}' $LU/v1/endpoints) = 409 ]"
check "the duplicate did not change the first endpoint" \
    test "$(curl -sf "$LU/v1/endpoints/dup" | jq -r .command)" = /bin/true
for id in m1 m2 m3; do check "member $id survived the bad input" alive "$id"; done

# Writes on a follower are redirected (307) to the leader.
check "a write on a follower answers 307 to the leader" bash -c "
    curl -s -o /dev/null -D - -X DELETE $FU/v1/endpoints/dup | grep -qi '^location: $LU/v1/endpoints/dup'"
check "the CLI follows the redirect" quiet mgr "$F" endpoint delete dup

# Blocking queries: prompt on a change, at the timeout otherwise. First let
# the follower apply the delete above, so that the query waits for the next
# change rather than waking on that one.
wait_until 10 bash -c "[ \$(curl -s -o /dev/null -w '%{http_code}' $FU/v1/endpoints/dup) = 404 ]"
idx=$(curl -sf -D "$T/h" "$FU/v1/endpoints" -o /dev/null && sed -n 's/^[Xx]-[Dd]vs-[Ii]ndex: *\([0-9]*\).*/\1/p' "$T/h")
check "reads carry X-Dvs-Index" test -n "$idx"
curl -sf --max-time 60 "$FU/v1/endpoints?index=$idx&wait=50s" -o "$T/blocked.json" &
BQ=$!
curl -sf -X POST -d '{"name":"watched","command":"/bin/true"}' "$LU/v1/endpoints" >/dev/null
check "a blocked query on a follower returns once the change is applied there" \
    wait_until 10 bash -c "! kill -0 $BQ"
wait $BQ 2>/dev/null
check "... and its answer contains the change" \
    test "$(jq -r '[.endpoints[].name] | index("watched") != null' "$T/blocked.json")" = true
idx=$(curl -sf -D "$T/h" "$LU/v1/endpoints" -o /dev/null && sed -n 's/^[Xx]-[Dd]vs-[Ii]ndex: *\([0-9]*\).*/\1/p' "$T/h")
t0=$(now_ms)
code=$(curl -s -o "$T/same.json" -w '%{http_code}' --max-time 30 "$LU/v1/endpoints?index=$idx&wait=700ms")
el=$(( $(now_ms) - t0 ))
diag "timeout query answered after $el ms"
check "a blocked query with no change answers 200 when its wait runs out" test "$code" = 200
check "... after waiting (not at once)" test "$el" -ge 600

# Nodes: register, heartbeat, down after the TTL, up again.
check "register node n1" bash -c "
    [ \$(curl -s -L -o /dev/null -w '%{http_code}' -X POST -d '{\"id\":\"n1\",\"address\":\"127.0.0.1:9999\",\"cpu\":4,\"mem\":8589934592}' $FU/v1/nodes) = 200 ]"
hb() { curl -sf -L -X POST -d '{"cpu_used":1.5,"mem_used":1048576,"rps":42}' "$FU/v1/nodes/n1/heartbeat"; }
check "heartbeat of n1 accepted (through a follower)" quiet hb
node_state() { [ "$(curl -sf "$(url "$1")/v1/nodes/n1" | jq -r .state)" = "$2" ]; }
load_seen() { [ "$(curl -sf "$(url "$1")/v1/nodes/n1" | jq -r .load.rps)" = 42 ]; }
check "the load summary reaches a follower" wait_until 10 load_seen "$F"
check "no heartbeats for the TTL -> n1 is down" wait_until 10 node_state "$F" down
check "heartbeats resume -> n1 is up again" wait_until 10 bash -c "
    curl -sf -L -X POST -d '{}' $FU/v1/nodes/n1/heartbeat >/dev/null &&
    [ \"\$(curl -sf $FU/v1/nodes/n1 | jq -r .state)\" = up ]"
check "heartbeat of an unknown node -> 404" expect 404 not_found - POST /v1/nodes/ghost/heartbeat '{}'
check "negative load -> 400" expect 400 bad_request rps POST /v1/nodes/n1/heartbeat '{"rps":-1}'

# Consistent reads go through the leader's barrier.
check "?consistent read on a follower is redirected and answered by the leader" bash -c "
    [ \"\$(curl -sf -L '$FU/v1/status?consistent' | jq -r .state)\" = leader ]"

# Bad flags and config files: exit 2 and say what is wrong.
bad_flag() {
    local want=$1; shift
    local out; out=$("$MANAGER" serve "$@" 2>&1); local rc=$?
    [ $rc = 2 ] && grep -q -- "$want" <<<"$out" || { diag "rc=$rc out=$out"; return 1; }
}
check "serve without --id exits 2 naming it" bad_flag "--id" --data-dir "$T/x" --raft-addr 127.0.0.1:1
check "a non-IPv4 raft address is refused" bad_flag "raft-addr" --id x --data-dir "$T/x" --raft-addr localhost:7101 --bootstrap x=127.0.0.1:7101
check "a duration without unit is refused" bad_flag "election-timeout" --id x --data-dir "$T/x" --raft-addr 127.0.0.1:7101 --election-timeout 300
check "an unknown flag is refused" bad_flag "unknown option --frobnicate" --frobnicate
printf 'id = x\n# comment\nelection-timeout = 300ms\nheartbeat-timeout = soon\n' >"$T/bad.conf"
check "a bad config value names the file and line" bad_flag "bad.conf:4" --config "$T/bad.conf" --data-dir "$T/x" --raft-addr 127.0.0.1:7101
printf 'id = x\nraft-addr = 127.0.0.1:7101\nid = y\n' >"$T/dup.conf"
check "a key set twice in a config file is refused" bad_flag "dup.conf:3" --config "$T/dup.conf" --data-dir "$T/x"
check "a first start without --bootstrap or --join is refused" bad_flag "bootstrap" --id x --data-dir "$T/fresh" --raft-addr 127.0.0.1:7101
check "a wildcard raft address is refused without the flag" bad_flag "wildcard" --id x --data-dir "$T/x" --raft-addr 0.0.0.0:7101 --bootstrap x=0.0.0.0:7101
done_testing
