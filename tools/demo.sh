#!/usr/bin/env bash
# The main job, end to end on this machine:
#   sudo bash tools/demo.sh
# installs what is missing, builds, starts a 3-member manager cluster on
# loopback, writes to the directory, kills the leader with SIGKILL, and shows
# the new leader and that every acknowledged write survived.
set -euo pipefail
cd "$(dirname "$0")/.."
. tools/deps.sh
dvs_install_deps
echo "==> building"
dvs_build build/demo
M=build/demo/manager/dvs-manager
D=$(mktemp -d /tmp/dvs-demo.XXXXXX)
declare -A PID
cleanup() { for p in "${PID[@]}"; do kill "$p" 2>/dev/null || true; done; wait 2>/dev/null || true; rm -rf "$D"; }
trap cleanup EXIT

BOOT=m1=127.0.0.1:17101,m2=127.0.0.1:17102,m3=127.0.0.1:17103
URLS=http://127.0.0.1:17001,http://127.0.0.1:17002,http://127.0.0.1:17003
start() {
    local i=$1
    "$M" serve --id "m$i" --data-dir "$D/m$i" --raft-addr "127.0.0.1:1710$i" \
        --http-addr "127.0.0.1:1700$i" --bootstrap "$BOOT" >>"$D/m$i.log" 2>&1 &
    PID[m$i]=$!
}
echo "==> starting 3 manager members (logs in $D)"
for i in 1 2 3; do start "$i"; done
export DVS_MANAGER=$URLS
leader() { "$M" status --json 2>/dev/null | jq -er 'select(.leader_ready or .state != "leader") | .leader.id // empty'; }
for _ in $(seq 1 200); do L=$(leader) && [ -n "$L" ] && break; sleep 0.05; done
[ -n "${L:-}" ] || { echo "no leader elected" >&2; tail "$D"/*.log; exit 1; }
echo
"$M" status
echo
echo "==> writing three endpoints to the directory"
for e in kv web cache; do "$M" endpoint create "$e" --command "/usr/bin/dvs-kv" --arena 64M --cpu 0.5; done
"$M" endpoint list
echo
echo "==> kill -9 the leader ($L)"
t0=$(date +%s%N)
kill -9 "${PID[$L]}"; wait "${PID[$L]}" 2>/dev/null || true; unset "PID[$L]"
for _ in $(seq 1 200); do
    "$M" endpoint create after-failover --command /bin/true --arena 4M >/dev/null 2>&1 && break
    sleep 0.02
done
t1=$(date +%s%N)
echo "first successful write through a survivor $(( (t1 - t0) / 1000000 )) ms after the kill"
echo
"$M" status
echo
echo "==> every acknowledged write survived:"
"$M" endpoint list
echo
echo "==> restarting ${L}: it catches up from its log and the new leader"
start "${L#m}"
for _ in $(seq 1 100); do
    n=$("$M" --manager "http://127.0.0.1:1700${L#m}" endpoint list --json 2>/dev/null | jq '.endpoints | length') || n=0
    [ "$n" = 4 ] && break; sleep 0.05
done
"$M" --manager "http://127.0.0.1:1700${L#m}" member list
echo
echo "$L has $n endpoints again. Done."
