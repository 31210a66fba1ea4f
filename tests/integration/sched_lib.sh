# Helpers of the scheduler's integration tests (sched_*.sh), on top of lib.sh.
#
# Nodes are simulated, no dvs-node runs: each is registered through the REST
# API and kept alive by one background loop that sends, for every file
# $T/hb/NODE, the heartbeat body that file holds (the load the test wants the
# node to report), or nothing while it holds "off" (the machine is off).
. "$(dirname "$0")/lib.sh"

mkdir -p "$T/hb"

# start_cluster FLAGS...: three members with FLAGS; sets L (leader), LU (its
# URL), F (a follower) and FU.
start_cluster() {
    local attempt boot i
    for attempt in 1 2 3; do
        plan_members 3
        boot=$(bootstrap_list 3)
        for i in 1 2 3; do
            start_member "m$i" --bootstrap "$boot" "$@"
        done
        if wait_until 15 has_leader m1 m2 m3; then
            L=$(leader_of m1 m2 m3)
            LU=$(url "$L")
            F=m1; [ "$L" = m1 ] && F=m2
            FU=$(url "$F")
            return 0
        fi
        # free_port's random ports overlap the kernel's ephemeral range: one
        # taken between the check and the bind kills a member at start. Only
        # that is worth another try, on new ports.
        grep -qE "already in use|raft_start: I/O error" "$T"/m[123].log || break
        diag "a port was taken before a member could bind it; starting again on new ports"
        for i in 1 2 3; do
            kill9 "m$i"
            rm -rf "${T:?}/m$i"
            mv "$T/m$i.log" "$T/m$i.log.try$attempt"
        done
    done
    bail "no leader"
}

# jqt FILTER: the JSON on stdin satisfies FILTER (quietly, for check).
jqt() { jq -e "$1" >/dev/null; }
# GET PATH from the leader: the JSON body (fails on a non-2xx answer).
get() { curl -sf --max-time 5 "$LU$1"; }
# jq_get PATH FILTER: one value of a GET.
jq_get() { get "$1" | jq -r "$2"; }
# send METHOD PATH [BODY]: to the leader; prints the status, then the body.
send() { http "$1" "$LU$2" "${3-}"; }
# status_of METHOD PATH [BODY]: only the HTTP status.
status_of() { send "$@" | head -1; }

# set_load NODE CPU_USED [MEM_USED]: what NODE's heartbeats report from now on.
set_load() {
    printf '{"cpu_used":%s,"mem_used":%s}\n' "$2" "${3:-1073741824}" >"$T/hb/$1.tmp"
    mv "$T/hb/$1.tmp" "$T/hb/$1"
}
# hb_off NODE: NODE stops heartbeating (as a powered-off machine would).
hb_off() { echo off >"$T/hb/$1.tmp" && mv "$T/hb/$1.tmp" "$T/hb/$1"; }

# register_node ID CPU [MEM]: register a node; it heartbeats the load set_load
# gave it beforehand, or none.
register_node() {
    local body
    body=$(printf '{"id":"%s","address":"127.0.0.1:%s","cpu":%s,"mem":%s}' \
        "$1" "$(free_port)" "$2" "${3:-8589934592}")
    [ "$(status_of POST /v1/nodes "$body")" = 200 ] || return 1
    [ -e "$T/hb/$1" ] || set_load "$1" 0
}

# The heartbeat loop: one round over $T/hb every 200 ms (the nodes' beat,
# not a wait for anything). Killed by the harness with the other PIDs.
heartbeat_loop() {
    local f body
    while :; do
        for f in "$T"/hb/*; do
            case $f in *.tmp) continue ;; esac
            [ -f "$f" ] || continue
            body=$(cat "$f")
            [ "$body" = off ] && continue
            curl -s -L --max-time 2 -o /dev/null -X POST -H 'Content-Type: application/json' \
                --data-binary "$body" "$LU/v1/nodes/${f##*/}/heartbeat"
        done
        sleep 0.2
    done
}
start_heartbeats() {
    heartbeat_loop &
    PIDS[heartbeats]=$!
}

# create_running NAME NODE CPU: an endpoint placed on NODE, reported running
# (as its agent would after starting it).
create_running() {
    [ "$(status_of POST /v1/endpoints "{\"name\":\"$1\",\"command\":\"/bin/true\",\"node\":\"$2\",\"cpu\":$3}")" = 201 ] &&
        [ "$(status_of PATCH "/v1/endpoints/$1" "{\"state\":\"running\",\"address\":\"127.0.0.1:$(free_port)\",\"generation\":1}")" = 200 ]
}

# node_is NODE STATE [ELIGIBLE]: the leader's view of NODE.
node_is() {
    local n
    n=$(get "/v1/nodes/$1?consistent") || return 1
    [ "$(jq -r .state <<<"$n")" = "$2" ] || return 1
    [ -z "${3-}" ] || [ "$(jq -r .eligible <<<"$n")" = "$3" ]
}

# metric NAME_AND_LABELS: its value in the leader's /metrics (0 when absent).
metric() {
    curl -sf --max-time 5 "$LU/metrics" | awk -v k="$1" '$1 == k { print $2; f = 1 } END { if (!f) print 0 }'
}

# log_has PATTERN: the leader's log has a line matching PATTERN (grep -E).
log_has() { grep -qE "$1" "$T/$L.log"; }
