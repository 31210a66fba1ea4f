#!/usr/bin/env bash
# Stop-and-copy migration figures (issue: libdvs, the node agent, the kv
# example and the first migration), and dvs_call vs a raw TCP echo.
# For kv arenas of 16, 64 and 256 MiB, each filled to about half with data:
# clients call at 200/s while the endpoint moves n1 -> n2 -> n1 -> n2; prints
# each move's total time and agent-measured downtime (from the migration
# record) and the client-observed longest gap between successful replies.
# Usage: bash bench/migrate_bench.sh [BUILD_DIR]      (default build/check)
set -euo pipefail
cd "$(dirname "$0")/.."
B=$(cd "${1:-build/check}" && pwd)
make -s -C "$B" manager/dvs-manager node/dvs-node examples/dvs-kv examples/dvs-kv-client bench/call_bench >/dev/null
M=$B/manager/dvs-manager NODE=$B/node/dvs-node
KV=$B/examples/.libs/dvs-kv KVC=$B/examples/.libs/dvs-kv-client CALL=$B/bench/.libs/call_bench
[ -x "$KV" ] || KV=$B/examples/dvs-kv
[ -x "$KVC" ] || KVC=$B/examples/dvs-kv-client
[ -x "$CALL" ] || CALL=$B/bench/call_bench
export LD_LIBRARY_PATH=$B/libdvs/.libs
D=$(mktemp -d /tmp/dvs-mbench.XXXXXX)
declare -A PID
cleanup() {
    for p in "${PID[@]}"; do kill "$p" 2>/dev/null || true; done
    for p in /proc/[0-9]*; do
        { tr '\0' '\n' <"$p/environ"; } 2>/dev/null | grep -q "^DVS_CONTROL_PATH=$D/" &&
            kill -9 "${p#/proc/}" 2>/dev/null || true
    done
    wait 2>/dev/null || true; rm -rf "$D"
}
trap cleanup EXIT
wait_for() { local s=$1; shift; for _ in $(seq 1 $((s * 20))); do "$@" >/dev/null 2>&1 && return 0; sleep 0.05; done; echo "timeout: $*" >&2; exit 1; }
BOOT=m1=127.0.0.1:37101,m2=127.0.0.1:37102,m3=127.0.0.1:37103
export DVS_MANAGER=http://127.0.0.1:37001,http://127.0.0.1:37002,http://127.0.0.1:37003
for i in 1 2 3; do
    "$M" serve --id m$i --data-dir "$D/m$i" --raft-addr 127.0.0.1:3710$i --http-addr 127.0.0.1:3700$i \
        --bootstrap $BOOT --log-level warn >>"$D/m$i.log" 2>&1 & PID[m$i]=$!
done
wait_for 20 bash -c "$M status --json | jq -e '.leader.id != null'"
for n in 1 2; do
    "$NODE" serve --id n$n --manager "$DVS_MANAGER" --listen 127.0.0.1:3720$n --data-dir "$D/n$n" \
        --heartbeat-interval 500ms --log-level warn >>"$D/n$n.log" 2>&1 & PID[n$n]=$!
done
wait_for 20 bash -c "[ \$($M node list --json | jq '[.nodes[]|select(.state==\"up\")]|length') = 2 ]"
echo "== machine: $(nproc) cores, load $(cut -d' ' -f1-3 /proc/loadavg)"
echo "== dvs_call vs raw TCP echo (one at a time, loopback)"
"$M" endpoint create echo --command "$KV" --arena 16M --node n1 >/dev/null
wait_for 20 bash -c "$M endpoint show echo --json | jq -e '.state==\"running\"'"
"$CALL" --manager "$DVS_MANAGER" --endpoint echo --n 20000

value=$(head -c 100000 /dev/zero | tr '\0' v) # 100 kB: one argv string must stay under 128 KiB
for mib in 16 64 256; do
    ep=kv$mib
    "$M" endpoint create $ep --command "$KV" --arena ${mib}M --node n1 >/dev/null
    wait_for 20 bash -c "$M endpoint show $ep --json | jq -e '.state==\"running\"'"
    for k in $(seq 1 $((mib * 5))); do "$KVC" --endpoint $ep put "fill-$k" "$value" >/dev/null; done
    "$KVC" --endpoint $ep load --duration 12s --rate 200 --threads 2 --keys 100 --incr-keys 4 \
        --history "$D/$ep.hist" >"$D/$ep.json" 2>/dev/null &
    LOAD=$!
    sleep 2 # let the load start (a benchmark pause, not a synchronisation)
    for to in n2 n1 n2; do "$M" endpoint migrate $ep --to $to >/dev/null; done
    wait $LOAD || true
    "$KVC" verify --endpoint $ep --history "$D/$ep.hist" >/dev/null && ok=verified || ok=VIOLATION
    echo "== kv arena ${mib} MiB, ~$((mib / 2)) MiB of data, 3 moves under 200 calls/s ($ok)"
    "$M" migration list --json | jq -r --arg ep $ep '.migrations[] | select(.endpoint==$ep) |
        "  move \(.source)->\(.destination): total \((.finished_at - .created_at)) ms, downtime \(.downtime_ms) ms, copied \(.bytes / 1048576 | floor) MiB, \(.phase)"'
    jq -r '"  clients: \(.ok)/\(.ops) ok, \(.failed) failed, longest gap between replies \(.max_gap_ms|floor) ms, p99 \(.latency_ms.p99) ms"' "$D/$ep.json"
    "$M" endpoint delete $ep >/dev/null
done
