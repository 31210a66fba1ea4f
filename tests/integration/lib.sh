# Harness for the integration tests: real daemons on loopback, TAP output.
#
# Every test gets its own temporary directory and its own ports, starts its
# processes through the helpers below (which remember their PIDs), and the
# EXIT trap kills exactly those PIDs. Every wait is bounded; bounds scale with
# DVS_TEST_TIMEOUT_SCALE (default 1) for slow machines.
set -u

DVS_BUILDDIR=${DVS_BUILDDIR:-$(cd "$(dirname "$0")/../.." && pwd)}
DVS_SRCDIR=${DVS_SRCDIR:-$DVS_BUILDDIR}
MANAGER="$DVS_BUILDDIR/manager/dvs-manager"
SCALE=${DVS_TEST_TIMEOUT_SCALE:-1}

T=$(mktemp -d "${TMPDIR:-/tmp}/dvs-test.XXXXXX")
declare -A PIDS=()     # name -> pid
declare -A RAFT=()     # member -> raft addr
declare -A HTTP=()     # member -> http addr
TAP_N=0
TAP_FAILED=0

cleanup() {
    local name
    for name in "${!PIDS[@]}"; do
        kill -9 "${PIDS[$name]}" 2>/dev/null || true
    done
    for name in "${!PIDS[@]}"; do
        wait "${PIDS[$name]}" 2>/dev/null || true
    done
    if [ "$TAP_FAILED" -ne 0 ] || [ -n "${DVS_KEEP_TEST_DIR:-}" ]; then
        echo "# logs kept in $T"
        for f in "$T"/*.log; do
            [ -f "$f" ] || continue
            echo "# ---- $f (last 25 lines)"
            tail -n 25 "$f" | sed 's/^/# /'
        done
    else
        rm -rf "$T"
    fi
}
trap cleanup EXIT

ok() { TAP_N=$((TAP_N + 1)); echo "ok $TAP_N - $*"; }
not_ok() { TAP_N=$((TAP_N + 1)); TAP_FAILED=$((TAP_FAILED + 1)); echo "not ok $TAP_N - $*"; }
# check DESCRIPTION COMMAND...: one TAP line from a command's exit status.
check() {
    local desc=$1; shift
    if "$@"; then ok "$desc"; else not_ok "$desc"; fi
}
diag() { echo "# $*"; }
# quiet COMMAND...: run COMMAND with its output discarded (inside check, so
# that the TAP line itself is still printed).
quiet() { "$@" >/dev/null; }
bail() { echo "Bail out! $*"; exit 1; }
done_testing() { echo "1..$TAP_N"; [ "$TAP_FAILED" -eq 0 ]; }

# A port nobody listens on. Ports are random in 20000-59999 so that tests
# running side by side do not collide; a taken port is skipped.
declare -A USED_PORTS=()
free_port() {
    local p
    while :; do
        p=$((20000 + (RANDOM * 32768 + RANDOM) % 40000))
        [ -n "${USED_PORTS[$p]:-}" ] && continue
        if ! (exec 3<>"/dev/tcp/127.0.0.1/$p") 2>/dev/null; then
            USED_PORTS[$p]=1
            echo "$p"
            return
        fi
    done
}

# wait_until SECONDS COMMAND...: poll COMMAND (every 50 ms) until it succeeds
# or the (scaled) bound passes. This waits for a condition, it does not
# stand in for one.
wait_until() {
    local secs=$1; shift
    local deadline=$(( $(date +%s%N) / 1000000 + secs * SCALE * 1000 ))
    while :; do
        "$@" >/dev/null 2>&1 && return 0
        [ $(( $(date +%s%N) / 1000000 )) -ge "$deadline" ] && return 1
        sleep 0.05
    done
}

now_ms() { echo $(( $(date +%s%N) / 1000000 )); }

# ---- manager members ----

# plan_members N: choose ids m1..mN and their ports.
plan_members() {
    local i
    for i in $(seq 1 "$1"); do
        RAFT[m$i]="127.0.0.1:$(free_port)"
        HTTP[m$i]="127.0.0.1:$(free_port)"
    done
}

bootstrap_list() {
    local out="" i
    for i in $(seq 1 "$1"); do out+="${out:+,}m$i=${RAFT[m$i]}"; done
    echo "$out"
}

# start_member ID [extra serve flags...]
start_member() {
    local id=$1; shift
    mkdir -p "$T/$id"
    "$MANAGER" serve --id "$id" --data-dir "$T/$id" --raft-addr "${RAFT[$id]}" \
        --http-addr "${HTTP[$id]}" "$@" >>"$T/$id.log" 2>&1 &
    PIDS[$id]=$!
}

kill9() { kill -9 "${PIDS[$1]}" 2>/dev/null; wait "${PIDS[$1]}" 2>/dev/null; unset "PIDS[$1]"; }
stop_term() { kill -TERM "${PIDS[$1]}" 2>/dev/null; wait "${PIDS[$1]}" 2>/dev/null; local rc=$?; unset "PIDS[$1]"; return $rc; }
alive() { kill -0 "${PIDS[$1]}" 2>/dev/null; }

url() { echo "http://${HTTP[$1]}"; }
all_urls() { local out="" id; for id in "$@"; do out+="${out:+,}$(url "$id")"; done; echo "$out"; }

# mgr ID ARGS...: the CLI against member ID only.
mgr() { local id=$1; shift; "$MANAGER" --manager "$(url "$id")" "$@"; }

# status_field ID FIELD: one field of /v1/status of member ID.
status_field() { curl -sf --max-time 2 "$(url "$1")/v1/status" | jq -r ".$2"; }

# leader_of MEMBERS...: the id that the given members agree is the leader.
leader_of() {
    local id lid="" l
    for id in "$@"; do
        l=$(status_field "$id" leader.id 2>/dev/null) || return 1
        [ -n "$l" ] && [ "$l" != null ] || return 1
        [ -z "$lid" ] || [ "$lid" = "$l" ] || return 1
        lid=$l
    done
    [ "$(status_field "$lid" leader_ready)" = true ] || return 1
    echo "$lid"
}

has_leader() { leader_of "$@" >/dev/null; }

# http METHOD URL [BODY]: prints "STATUS BODY" (one line for the status).
http() {
    local method=$1 u=$2 body=${3-}
    if [ -n "$body" ]; then
        curl -s -L --post301 --post302 --post303 --max-time 10 -X "$method" -H 'Content-Type: application/json' \
            -o "$T/http.body" -w '%{http_code}' --data-binary "$body" "$u"
    else
        curl -s -L --max-time 10 -X "$method" -o "$T/http.body" -w '%{http_code}' "$u"
    fi
    echo
    cat "$T/http.body"
}
