#!/usr/bin/env bash
# The main job, end to end on this machine:
#   sudo bash tools/demo.sh
# installs what is missing, builds, starts a 3-member manager cluster and two
# node agents on loopback, runs the kv example service under client load,
# moves it from n1 to n2 while the clients keep calling, checks that no
# acknowledged write was lost and no increment applied twice, shows the
# migration record, then kills the manager leader with SIGKILL and shows the
# cluster carrying on.
set -euo pipefail
cd "$(dirname "$0")/.."
. tools/deps.sh
dvs_install_deps
echo "==> building (build/demo)"
dvs_build build/demo
B=$PWD/build/demo
M=$B/manager/dvs-manager
NODE=$B/node/dvs-node
KV=$B/examples/dvs-kv
KVC=$B/examples/dvs-kv-client
D=$(mktemp -d /tmp/dvs-demo.XXXXXX)
declare -A PID
cleanup() {
    for p in "${PID[@]}"; do kill "$p" 2>/dev/null || true; done
    # services started by the agents, found by their control sockets in $D
    for p in /proc/[0-9]*; do
        { tr '\0' '\n' <"$p/environ"; } 2>/dev/null | grep -q "^DVS_CONTROL_PATH=$D/" &&
            kill -9 "${p#/proc/}" 2>/dev/null || true
    done
    wait 2>/dev/null || true
    rm -rf "$D"
}
trap cleanup EXIT
wait_for() { # SECONDS DESCRIPTION COMMAND...
    local secs=$1 what=$2; shift 2
    for _ in $(seq 1 $((secs * 20))); do "$@" >/dev/null 2>&1 && return 0; sleep 0.05; done
    echo "timed out waiting for $what (logs in $D)" >&2; tail -n 20 "$D"/*.log >&2; exit 1
}

BOOT=m1=127.0.0.1:17101,m2=127.0.0.1:17102,m3=127.0.0.1:17103
export DVS_MANAGER=http://127.0.0.1:17001,http://127.0.0.1:17002,http://127.0.0.1:17003
start_member() {
    "$M" serve --id "m$1" --data-dir "$D/m$1" --raft-addr "127.0.0.1:1710$1" \
        --http-addr "127.0.0.1:1700$1" --bootstrap "$BOOT" >>"$D/m$1.log" 2>&1 &
    PID[m$1]=$!
}
echo "==> starting 3 manager members and 2 node agents (logs in $D)"
for i in 1 2 3; do start_member "$i"; done
ready() { "$M" status --json | jq -e '.leader != null and .leader.id != null' ; }
wait_for 20 "a leader" ready
for n in 1 2; do
    "$NODE" serve --id "n$n" --manager "$DVS_MANAGER" --listen "127.0.0.1:1720$n" \
        --data-dir "$D/n$n" --heartbeat-interval 500ms >>"$D/n$n.log" 2>&1 &
    PID[n$n]=$!
done
nodes_up() { [ "$("$M" node list --json | jq '[.nodes[] | select(.state=="up")] | length')" = 2 ]; }
wait_for 20 "both nodes up" nodes_up
"$M" status
echo
"$M" node list
echo
echo "==> creating endpoint kv (64 MiB arena) on n1"
"$M" endpoint create kv --command "$KV" --arena 64M --node n1
running() { "$M" endpoint show kv --json | jq -e '.state == "running" and .address != null'; }
wait_for 20 "kv running" running
"$M" endpoint list
echo
echo "==> client load: 8 s at 400 calls/s (puts, gets, increments), history in $D/history"
"$KVC" load --endpoint kv --duration 8s --rate 400 --threads 4 --keys 200 --incr-keys 8 \
    --history "$D/history" >"$D/load.json" 2>"$D/load.log" &
LOAD=$!
sleep 2 # let the load run for a while before the move (a demo pause, not a synchronisation)
echo "==> moving kv from n1 to n2 while the clients call it"
"$M" endpoint migrate kv --to n2
wait "$LOAD" || true
echo
echo "==> what the clients saw"
jq . "$D/load.json"
echo
echo "==> checking the history: every acknowledged write readable, no increment lost or applied twice"
"$KVC" verify --endpoint kv --history "$D/history"
echo
MID=$("$M" migration list --json | jq -r '.migrations[0].id')
"$M" migration show "$MID"
echo
"$M" endpoint show kv
echo
L=$("$M" status --json | jq -r .leader.id)
echo "==> kill -9 the manager leader ($L)"
kill -9 "${PID[$L]}"; wait "${PID[$L]}" 2>/dev/null || true; unset "PID[$L]"
t0=$(date +%s%N)
for _ in $(seq 1 400); do
    "$M" endpoint create after-failover --command /bin/true --arena 4M >/dev/null 2>&1 && break
    sleep 0.02
done
echo "first successful directory write $(( ($(date +%s%N) - t0) / 1000000 )) ms after the kill"
"$KVC" get demo-after-failover >/dev/null 2>&1 || true
"$KVC" put after-failover yes && "$KVC" get after-failover
"$M" status
echo
echo "Done."
