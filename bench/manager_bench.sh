#!/usr/bin/env bash
# Manager figures (issue: Foundation and the Raft-replicated manager):
#   - directory writes/s through the FSM directly, through Raft without HTTP
#     (1x1, 1x64 and 256x1 commands per apply x applies in flight), and
#     through the REST API, 1 client and 16/64 concurrent clients (the daemon
#     batches them into raft_apply);
#   - commit latency p50/p99 of one endpoint update (1 client);
#   - time from kill -9 of the leader to the first successful write through a
#     surviving member, over RUNS kills (median printed).
# Usage: bash bench/manager_bench.sh [BUILD_DIR] [RUNS]    (default build/check, 7)
set -euo pipefail
cd "$(dirname "$0")/.."
B=${1:-build/check}
RUNS=${2:-7}
make -s -C "$B" manager/dvs-manager bench/mgr_bench bench/raft_bench >/dev/null
M=$B/manager/dvs-manager
BENCH=$B/bench/mgr_bench
D=$(mktemp -d /tmp/dvs-bench.XXXXXX)
declare -A PID
cleanup() { for p in "${PID[@]}"; do kill -9 "$p" 2>/dev/null || true; done; wait 2>/dev/null || true; rm -rf "$D"; }
trap cleanup EXIT
BOOT=m1=127.0.0.1:27101,m2=127.0.0.1:27102,m3=127.0.0.1:27103
start() {
    "$M" serve --id "m$1" --data-dir "$D/m$1" --raft-addr "127.0.0.1:2710$1" \
        --http-addr "127.0.0.1:2700$1" --bootstrap "$BOOT" --log-level warn >>"$D/m$1.log" 2>&1 &
    PID[m$1]=$!
}
URLS=http://127.0.0.1:27001,http://127.0.0.1:27002,http://127.0.0.1:27003
leader() { "$M" --manager "$1" status --json 2>/dev/null | jq -er 'select(.leader_ready == true) | .id'; }
wait_leader() { # prints the leader id
    for _ in $(seq 1 400); do
        for i in 1 2 3; do
            [ -n "${PID[m$i]:-}" ] || continue
            l=$(leader "http://127.0.0.1:2700$i") && { echo "$l"; return 0; }
        done
        sleep 0.025
    done
    return 1
}

echo "== machine: $(nproc) cores, $(uname -r)"
echo "== FSM direct (no Raft, no HTTP)"
"$BENCH" fsm --n 200000
echo "== through Raft, no HTTP (3 libraft members in one process, one loop thread)"
"$B/bench/raft_bench" --seconds 5
for i in 1 2 3; do start "$i"; done
L=$(wait_leader)
echo "== REST through a 3-member cluster on loopback (leader $L)"
"$BENCH" rest --manager "$URLS" --clients 1 --seconds 5
# The leader's own view of commit latency (proposal -> applied), from /metrics.
curl -s "http://127.0.0.1:2700${L#m}/metrics" | awk -F'[{}" ]+' '
    /^dvs_commit_seconds_bucket/ { le[++n] = $3; c[n] = $NF }
    /^dvs_commit_seconds_count/ { total = $NF }
    END {
        p50 = p99 = "";
        for (i = 1; i <= n; i++) {
            if (p50 == "" && c[i] >= 0.50 * total) p50 = le[i];
            if (p99 == "" && c[i] >= 0.99 * total) p99 = le[i];
        }
        printf "leader-side commit latency (histogram bucket bounds): p50 <= %s s, p99 <= %s s over %d commits\n", p50, p99, total
    }'
"$BENCH" rest --manager "$URLS" --clients 16 --seconds 5
"$BENCH" rest --manager "$URLS" --clients 64 --seconds 5

echo "== failover: kill -9 of the leader -> first successful write ($RUNS runs)"
times=()
for r in $(seq 1 "$RUNS"); do
    L=$(wait_leader)
    survivors=""
    for i in 1 2 3; do [ "m$i" = "$L" ] || survivors+="${survivors:+,}http://127.0.0.1:2700$i"; done
    t=$("$BENCH" failover --manager "$survivors" --kill-pid "${PID[$L]}" | sed -n 's/^failover_ms //p')
    wait "${PID[$L]}" 2>/dev/null || true
    unset "PID[$L]"
    echo "run $r: killed $L, first write after $t ms"
    times+=("$t")
    start "${L#m}"
    # let the restarted member catch up before the next kill
    for _ in $(seq 1 200); do
        a=$("$M" --manager "http://127.0.0.1:2700${L#m}" status --json 2>/dev/null | jq -r .index) || a=x
        b=$("$M" --manager "$URLS" status --json 2>/dev/null | jq -r .index) || b=y
        [ "$a" = "$b" ] && break; sleep 0.05
    done
done
printf '%s\n' "${times[@]}" | sort -n | awk '{a[NR]=$1} END {printf "failover median %.1f ms, min %.1f ms, max %.1f ms over %d kills\n", a[int((NR+1)/2)], a[1], a[NR], NR}'
