#!/usr/bin/env bash
# Live pre-copy migration (issue "Live pre-copy migration", DESIGN.md §4):
#  - kv under a write-heavy load moves n1 -> n2 -> n1 ... ten times with
#    userfaultfd write-protect tracking: every migration commits after
#    pre-copy rounds, the destination's checksum of the image matched the
#    source's frozen arena, every acknowledged write reads back and no
#    increment applied twice, one instance is left;
#  - a service whose writes outrun a capped link still migrates: the source
#    throttles it (auto-converge) and the record says so;
#  - the mprotect fallback, forced by --dirty-tracking mprotect, migrates
#    under load too.
. "$(dirname "$0")/lib.sh"
. "$(dirname "$0")/node_lib.sh"

# A load in the background, exec'd so that $! is the client itself: it
# stops early and cleanly on SIGTERM (history and summary written).
kv_bg() { exec "$KV_CLIENT" --manager "$MGR_URLS" --timeout 10s "$@"; }
kv_get_is_ep() { [ "$(kv --endpoint "$1" get "$2" 2>/dev/null)" = "$3" ]; } # ENDPOINT KEY VALUE

cluster_up
start_agent n1
start_agent n2
both_up() { node_up n1 && node_up n2; }
check "both agents register" wait_until 10 both_up
if ! log_has n1 "dirty tracking: userfaultfd"; then
    diag "this kernel lacks async userfaultfd write-protect: $(grep -o 'dirty tracking: .*' "$T/n1.log" | head -1)"
fi
METHOD=$(grep -q "dirty tracking: userfaultfd" "$T/n1.log" && echo uffd-wp || echo mprotect)

create_kv kv n1 32M
check "kv runs on n1" wait_until 10 ep_is state kv running
# Some data in the arena, so that round 0 has something to copy.
value=$(head -c 30000 /dev/zero | tr '\0' p)
for k in $(seq 1 200); do kv put "fill-$k" "$value" >/dev/null; done

# ---- ten moves under a write-heavy load ----
history_started() { [ -s "$T/history.ten" ]; }
kv_bg load --duration 40s --rate 1500 --threads 2 --keys 5000 --write-ratio 0.9 --incr-keys 8 \
    --history "$T/history.ten" >"$T/load.ten.json" 2>"$T/load.ten.err" &
LOAD=$!
wait_until 10 history_started
to=n2 committed=0
for i in $(seq 1 10); do
    if mgr m1 endpoint migrate kv --to $to >"$T/mig.$i.out" 2>&1; then
        committed=$((committed + 1))
    else
        diag "move $i to $to: $(tr '\n' ' ' <"$T/mig.$i.out")"
    fi
    [ $to = n2 ] && to=n1 || to=n2
done
check "ten migrations under load commit" test "$committed" = 10
kill -TERM $LOAD 2>/dev/null # the load stops early, cleanly, once the moves are done
wait $LOAD
check "kv runs on n1 as generation 11" bash -c "[ \"\$(curl -sfL '$(url m1)/v1/endpoints/kv?consistent' | jq -r '\"\(.node) \(.generation)\"')\" = 'n1 11' ]"
MIGS=$(curl -sfL "$(url m1)/v1/migrations" | jq -c '[.migrations[] | select(.endpoint=="kv")]')
n_pre=$(jq --arg m "$METHOD" '[.[] | select(.phase=="committed" and .info.method==$m and .rounds >= 2)] | length' <<<"$MIGS")
check "each record names the tracking method and has pre-copy rounds" test "$n_pre" = 10
n_sum=$(jq '[.[] | select((.info.checksum // "") | test("^[0-9a-f]{16}$"))] | length' <<<"$MIGS")
check "each record has the image checksum" test "$n_sum" = 10
oks=$(cat "$T/n1.log" "$T/n2.log" | grep -c "checksum ok")
check "the destination checked the image every time" test "$oks" -ge 10
check "no checksum mismatch was logged" bash -c "! grep -q 'checksum mismatch' '$T/n1.log' '$T/n2.log'"
check "every acknowledged write reads back, no increment applied twice" \
    quiet kv verify --history "$T/history.ten"
one_kv() { [ "$(count_live kv)" = 1 ]; }
check "one kv process left once the old one stops answering moved" wait_until 15 one_kv
diag "$(jq -r .failed "$T/load.ten.json") failed of $(jq -r .ops "$T/load.ten.json") calls; longest gap $(jq -r .max_gap_ms "$T/load.ten.json") ms"
diag "$(jq -r '.[] | "  #\(.id) \(.source)->\(.destination): \(.rounds) rounds, \(.bytes) bytes, downtime \(.downtime_ms) ms, stop \(.info.precopy_stop)"' <<<"$MIGS" | head -10 | tr '\n' ';')"

# ---- writers that outrun the link: auto-converge ----
# A 2 MiB/s link (--max-bandwidth) and a 1 ms budget, below the 2 ms the
# stop rule always counts for freeze, commit and start: no round can fit,
# whatever the machine's speed, so the source must throttle through every
# step and then stop and copy — the path of writers that outrun the link.
start_agent n3 --max-bandwidth 2097152 --precopy-max-rounds 2 --downtime-budget 1ms
start_agent n4 --max-bandwidth 2097152 --precopy-max-rounds 2 --downtime-budget 1ms
both_up2() { node_up n3 && node_up n4; }
check "two more agents with a capped link register" wait_until 10 both_up2
create_kv hot n3 16M
check "hot runs on n3" wait_until 10 ep_is state hot running
for k in $(seq 1 60); do kv --endpoint hot put "fill-$k" "$value" >/dev/null; done
hot_started() { [ -s "$T/history.hot" ]; }
kv_bg --endpoint hot load --duration 60s --rate 3000 --threads 2 --keys 20000 --write-ratio 1 \
    --history "$T/history.hot" >"$T/load.hot.json" 2>"$T/load.hot.err" &
LOAD=$!
wait_until 10 hot_started
mgr m1 endpoint migrate hot --to n4 >"$T/mig.hot.out" 2>&1
check "the migration of a service that outruns the link commits" test $? = 0
kill -TERM $LOAD 2>/dev/null
wait $LOAD
HOT=$(curl -sfL "$(url m1)/v1/migrations" | jq -c '[.migrations[] | select(.endpoint=="hot")][0]')
diag "record: $(jq -c '{rounds, bytes, downtime_ms, info: (.info | {method, precopy_stop, throttle_trigger, throttle_us, round_stats})}' <<<"$HOT")"
check "the record says why throttling started" \
    bash -c "jq -e '.info.throttle_trigger == \"round-cap\" or .info.throttle_trigger == \"not-converging\"' <<<'$HOT' >/dev/null"
check "pre-copy ended by converging under the throttle or forced after it" \
    bash -c "jq -e '.info.precopy_stop == \"fits-budget\" or .info.precopy_stop == \"forced-after-throttle\"' <<<'$HOT' >/dev/null"
check "the service confirmed a throttle" bash -c "jq -e '.info.throttle_us > 0' <<<'$HOT' >/dev/null"
check "the source logged that it throttled" log_has n3 "endpoint=hot not converging .* throttling the service"
check "the throttled service lost no write" quiet kv --endpoint hot verify --history "$T/history.hot"
check "hot serves from n4" kv_get_is_ep hot fill-1 "$value"

# ---- the mprotect fallback, forced ----
start_agent n5 --dirty-tracking mprotect
start_agent n6 --dirty-tracking mprotect
both_up3() { node_up n5 && node_up n6; }
check "two agents forced to mprotect register" wait_until 10 both_up3
check "the agent logs the forced method" log_has n5 "dirty tracking: mprotect in the service \(--dirty-tracking mprotect\)"
create_kv mp n5 16M
check "mp runs on n5" wait_until 10 ep_is state mp running
for k in $(seq 1 30); do kv --endpoint mp put "fill-$k" "$value" >/dev/null; done
mp_started() { [ -s "$T/history.mp" ]; }
kv_bg --endpoint mp load --duration 30s --rate 800 --threads 2 --keys 2000 --write-ratio 0.9 \
    --incr-keys 4 --history "$T/history.mp" >"$T/load.mp.json" 2>"$T/load.mp.err" &
LOAD=$!
wait_until 10 mp_started
ok=0
for to in n6 n5 n6; do mgr m1 endpoint migrate mp --to $to >/dev/null 2>&1 && ok=$((ok + 1)); done
kill -TERM $LOAD 2>/dev/null
wait $LOAD
check "three mprotect-tracked migrations under load commit" test "$ok" = 3
n_mp=$(curl -sfL "$(url m1)/v1/migrations" | jq '[.migrations[] | select(.endpoint=="mp" and .phase=="committed" and .info.method=="mprotect")] | length')
check "their records say mprotect" test "$n_mp" = 3
check "the mprotect-tracked service lost no write" quiet kv --endpoint mp verify --history "$T/history.mp"
done_testing
