#!/usr/bin/env bash
# Live migration between two agents under client load (docs/migration.md):
# the migration commits, the endpoint serves from the destination with the
# next generation, every acknowledged write is read back and no increment is
# applied twice (dvs-kv-client verify), the old instance goes away, and the
# endpoint can move straight back.
. "$(dirname "$0")/lib.sh"
. "$(dirname "$0")/node_lib.sh"

cluster_up
start_agent n1
start_agent n2
both_up() { node_up n1 && node_up n2; }
check "both agents register" wait_until 10 both_up
create_kv kv n1
check "kv runs on n1" wait_until 10 ep_is state kv running

# migrate_under_load TO ROUND: a load runs from 1.5 s before the move to
# 2.5 s after it; the history is checked afterwards.
migrate_under_load() {
    local to=$1 round=$2 out
    kv load --duration 5s --rate 400 --threads 4 --keys 50 --incr-keys 4 \
        --history "$T/history.$round" >"$T/load.$round.json" 2>"$T/load.$round.err" &
    local lp=$!
    sleep 1.5
    out=$(mgr m1 endpoint migrate kv --to "$to" 2>&1)
    MIGRATE_RC=$?
    diag "${out//$'\n'/ | }"
    wait "$lp"
    LOAD_RC=$?
}

# lin_verify HISTORY: dvs-kv-client verify (final values read from the
# service, then the linearizability checker on every key, examples/kv/
# lincheck.h) passes, and says every key was decided linearizable.
lin_verify() {
    kv verify --history "$1" >"$1.verify" 2>&1 &&
        grep -Eq '^linearizability: ([0-9]+) keys: \1 linearizable, 0 not, 0 undecided' "$1.verify"
}
LINCHECK="$DVS_BUILDDIR/tests/tools/dvs-lincheck"

last_mig() { curl -sfL "$(url m1)/v1/migrations" | jq -r '.migrations[0].id'; }
# placed NAME "NODE GEN STATE": where the directory has the endpoint.
placed() { [ "$(curl -sfL "$(url m1)/v1/endpoints/$1?consistent" | jq -r '[.node,.generation,.state]|join(" ")')" = "$2" ]; }
mig_figures() {
    curl -sfL "$(url m1)/v1/migrations/$1" |
        jq -r '"\(.finished_at - .created_at) ms total, \(.bytes) bytes, downtime \(.downtime_ms) ms (agent-measured)"'
}

# ---- n1 -> n2 ----
migrate_under_load n2 1
check "endpoint migrate kv --to n2 under load reports committed (exit 0)" test "$MIGRATE_RC" = 0
M1=$(last_mig)
check "the migration record is committed" test "$(mig phase "$M1")" = committed
check "kv now runs on n2 as generation 2" placed kv "n2 2 running"
check "the load ran to the end" test "$LOAD_RC" = 0
check "no call failed during the migration" test "$(jq -r .failed "$T/load.1.json")" = 0
check "every acknowledged write reads back, no increment applied twice, every key linearizable" \
    lin_verify "$T/history.1"
check "dvs-lincheck alone finds the history linearizable" quiet "$LINCHECK" --quiet "$T/history.1"
diag "migration 1: $(mig_figures "$M1"); client-observed longest gap $(jq -r .max_gap_ms "$T/load.1.json") ms, p99 latency $(jq -r .latency_ms.p99 "$T/load.1.json") ms"
check "the source agent logged the phases with the facts" \
    log_has n1 "migration=$M1 endpoint=kv role=source phase=committed to=n2 gen=2"
check "the destination agent logged the commit" \
    log_has n2 "migration=$M1 endpoint=kv role=destination phase=committed gen=2"
one_left() { [ "$(count_live kv)" = 1 ]; }
check "the old instance exits after answering moved: one kv process left" wait_until 15 one_left
survivor_is_n2s() { [ "$(live_pids_of kv)" = "$(svc_pids n2 kv)" ]; }
check "the survivor is the process n2 recorded" survivor_is_n2s
check "n1 keeps no record of kv" wait_until 5 bash -c "! ls $T/n1/services/kv.*.json >/dev/null 2>&1"

# ---- and straight back, n2 -> n1 ----
migrate_under_load n1 2
check "kv migrates back to n1 under load (exit 0)" test "$MIGRATE_RC" = 0
M2=$(last_mig)
check "kv runs on n1 as generation 3" placed kv "n1 3 running"
check "no call failed during the second migration" test "$(jq -r .failed "$T/load.2.json")" = 0
check "the second history verifies too" lin_verify "$T/history.2"
check "the first history still verifies against the twice-moved state" \
    lin_verify "$T/history.1"
diag "migration 2: $(mig_figures "$M2"); client-observed longest gap $(jq -r .max_gap_ms "$T/load.2.json") ms"
check "one kv process in the end" wait_until 15 one_left

# ---- a migration to a node whose agent is gone aborts; the source serves on ----
kill9 n2
n2_down() { [ "$(node_state n2)" = down ]; }
check "n2 is declared down" wait_until 10 n2_down
out=$(mgr m1 endpoint migrate kv --to n2 2>&1)
rc=$?
check "a migration to a down node is refused or aborted (exit non-zero)" test "$rc" != 0
diag "${out//$'\n'/ | }"
check "kv still runs on n1, generation 3" placed kv "n1 3 running"
check "and answers" quiet kv incr after-abort
check "agent n1 is still alive" alive n1
done_testing
