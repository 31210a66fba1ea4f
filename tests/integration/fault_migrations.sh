#!/usr/bin/env bash
# Many migrations of kv under client load, each host in its own network
# namespace (netns_lib.sh): kv moves between n1 and n2 again and again, at
# random moments of a random open-loop load (the seed fixes the plan), and
#   - every migration commits;
#   - clients see no error beyond their library's transparent retries;
#   - every load's history verifies: no acknowledged write lost, no stale or
#     invented read, no increment lost or applied twice;
#   - no two instances ever served at once (the services' own logs).
# CI: 20 migrations. DVS_LONG=1: 60. DVS_SEED=N replays a plan.
. "$(dirname "$0")/lib.sh"
. "$(dirname "$0")/node_lib.sh"
. "$(dirname "$0")/netns_lib.sh"

N_MIG=20
[ "$LONG" = 1 ] && N_MIG=60

netns_up m1 m2 m3 n1 n2 c1
cluster_up
start_agent n1
start_agent n2
both_up() { node_up n1 && node_up n2; }
check "both agents register from their own hosts" wait_until 10 both_up
create_kv kv n1
check "kv runs on n1" wait_until 10 ep_is state kv running
ADDR=$(ep address kv)
check "kv listens on n1's address inside n1's namespace ($ADDR)" test "${ADDR%:*}" = "${HOST_IP[n1]}"
check "the client host reaches kv" quiet kv put hello world

# ---- the migrations, in batches, each under its own load ----
WHERE=n1
DONE=0
FAILED_MIGS=0
BATCH=0
LOADS=()
t0=$(now_ms)
while [ "$DONE" -lt "$N_MIG" ]; do
    BATCH=$((BATCH + 1))
    RATE=$((150 + $(rand 250)))
    THREADS=$((2 + $(rand 3)))
    KEYS=$((10 + $(rand 50)))
    WR="0.$((3 + $(rand 5)))"
    diag "load $BATCH: rate=$RATE threads=$THREADS keys=$KEYS incr-keys=3 write-ratio=$WR"
    start_load "b$BATCH" --duration 10s --rate "$RATE" --threads "$THREADS" --keys "$KEYS" \
        --incr-keys 3 --write-ratio "$WR"
    LOADS+=("b$BATCH")
    while [ "$DONE" -lt "$N_MIG" ] && kill -0 "${PIDS[load-b$BATCH]}" 2>/dev/null; do
        # A random pause: migrations land at any point of the load.
        sleep "0.$(printf %03d "$(rand 500)")"
        TO=n2; [ "$WHERE" = n2 ] && TO=n1
        if out=$(mgr m1 endpoint migrate kv --to "$TO" 2>&1); then
            WHERE=$TO
        else
            FAILED_MIGS=$((FAILED_MIGS + 1))
            diag "migration $((DONE + 1)) to $TO did not commit: ${out//$'\n'/ | }"
            WHERE=$(ep node kv)
        fi
        DONE=$((DONE + 1))
    done
    wait_load "b$BATCH" || diag "load $BATCH exited non-zero: $(cat "$T/b$BATCH.err")"
done
diag "$DONE migrations in $(( ($(now_ms) - t0) / 1000 )) s under $BATCH loads"
check "all $N_MIG migrations committed" test "$FAILED_MIGS" = 0
check "the directory places kv where the last migration took it ($WHERE)" ep_is node kv "$WHERE"
GEN=$(ep generation kv)
check "the generation counts every commit ($GEN = 1 + $N_MIG)" test "$GEN" = $((1 + N_MIG))

OPS=0
for l in "${LOADS[@]}"; do
    OPS=$((OPS + $(load_field "$l" ops)))
    check "load $l: no call failed (errors: $(jq -c .errors "$T/$l.json"))" test "$(load_field "$l" failed)" = 0
    if out=$(kv verify --history "$T/$l.history" 2>&1); then
        ok "load $l: the history verifies ($(load_field "$l" ops) ops, longest gap $(load_field "$l" max_gap_ms) ms)"
    else
        not_ok "load $l: the history verifies"
        grep -m 10 VIOLATION <<<"$out" | sed 's/^/# /'
    fi
done
check "the first value written is still there" kv_get_is hello world
one_left() { [ "$(count_live kv)" = 1 ]; }
check "exactly one kv process is left" wait_until 15 one_left
if out=$(serve_check kv); then
    ok "no two instances ever served at once: $out"
else
    not_ok "no two instances ever served at once"
    sed 's/^/# /' <<<"$out"
fi
DT=$(curl -sf "$(url m1)/v1/migrations" | jq -r '[.migrations[] | select(.phase=="committed") | .downtime_ms] | "downtime_ms p50 \(sort | .[length/2|floor]) max \(max)"')
diag "ops=$OPS migrations=$DONE $DT"
done_testing
