#!/usr/bin/env bash
# Network partitions (nftables rules inside the hosts' namespaces,
# netns_lib.sh), kv under client load throughout; the client host c1 always
# reaches both sides, the hardest case for split brain:
#   1. the source node cut off from the managers in the middle of a
#      migration (it can still reach the destination), long enough to be
#      declared down, then healed;
#   2. the manager leader isolated (a minority of one): writes go on through
#      the majority, the isolated member accepts none, and it catches up
#      after the heal;
#   3. the node serving kv cut off from the managers until it is declared
#      down, then healed.
# Every case ends with: one kv process, placed where the directory says,
# the load's history verified (no acknowledged write lost), and at the end
# the services' own logs show no two instances ever served at once.
# CI: each case once. DVS_LONG=1: three times. DVS_SEED=N replays.
. "$(dirname "$0")/lib.sh"
. "$(dirname "$0")/node_lib.sh"
. "$(dirname "$0")/netns_lib.sh"

ROUNDS=1
[ "$LONG" = 1 ] && ROUNDS=3
T0=$(now_ms)

netns_up m1 m2 m3 n1 n2 c1
cluster_up
start_agent n1 --transfer-timeout 5s --linger 2s
start_agent n2 --transfer-timeout 5s --linger 2s
both_up() { node_up n1 && node_up n2; }
check "both agents register" wait_until 10 both_up
create_kv kv n1 128M
check "kv runs on n1" wait_until 10 ep_is state kv running
# ~5 MB of values and 16 Mbit/s links: a transfer lasts 2-3 s, long enough
# to partition the source in the middle of it.
VALUE=$(head -c 120000 /dev/zero | tr '\0' 'v')
fill() { seq 1 40 | on c1 xargs -P 4 -I{} "$KV_CLIENT" --manager "$MGR_URLS" put "big{}" "$VALUE" >/dev/null; }
check "kv takes 5 MB of values" fill
kv put marker before >/dev/null
shape n1 16mbit
shape n2 16mbit

other() { if [ "$1" = n1 ]; then echo n2; else echo n1; fi; }
mig_log() { grep -Eq "migration=$2 .*($3)" "$T/$1.log"; }
kv_answers() { on c1 "$KV_CLIENT" --manager "$MGR_URLS" --timeout 2s get marker 2>/dev/null | grep -qx before; }
big_ok() { [ "$(kv get big37 | wc -c)" -ge 120000 ]; }
one_left() { [ "$(count_live kv)" = 1 ]; }
placed() { [ "$(ep node kv) $(ep generation kv)" = "$1" ] && ep_is state kv running; }
node_is() { [ "$(node_state "$1")" = "$2" ]; }
declare -A OUTCOMES=()
PARTITIONS=0

# end_case TAG: the checks every case ends with.
end_case() {
    local tag=$1 out
    check "$tag: kv answers" wait_until 30 kv_answers
    wait_load "$tag"
    check "$tag: the load ran to the end" test $? = 0
    if out=$(kv verify --history "$T/$tag.history" 2>&1); then
        ok "$tag: the history verifies ($(load_field "$tag" ops) ops, $(load_field "$tag" failed) failed calls, longest gap $(load_field "$tag" max_gap_ms) ms)"
    else
        not_ok "$tag: the history verifies"
        grep -m 10 VIOLATION <<<"$out" | sed 's/^/# /'
        tail -n 1 <<<"$out" | sed 's/^/# /'
    fi
    check "$tag: exactly one kv process is left" wait_until 15 one_left
    check "$tag: it is the one the directory names" test "$(live_pids_of kv)" = "$(svc_pids "$(ep node kv)" kv)"
    check "$tag: the big values are intact" big_ok
}

# ---- 1. the source cut off from the managers mid-migration ----
case_source() {
    local tag="source.$1" from to gen0 mid phase where
    from=$(ep node kv); to=$(other "$from"); gen0=$(ep generation kv)
    start_load "$tag" --duration 12s --rate 200 --threads 3 --keys 30 --incr-keys 3
    mid=$(migrate_detached kv "$to")
    if wait_until 20 mig_log "$to" "$mid" "role=destination phase=receiving"; then
        net_split "$from" "m1 m2 m3"
        PARTITIONS=$((PARTITIONS + 1))
        ok "$tag: $from cut off from the managers while migration $mid streams to $to"
    else
        not_ok "$tag: migration $mid reaches the transfer (phase $(mig phase "$mid"))"
    fi
    check "$tag: the migration ends (seen by the managers)" wait_until 30 mig_final "$mid"
    phase=$(mig phase "$mid")
    OUTCOMES[$phase]=$(( ${OUTCOMES[$phase]:-0} + 1 ))
    diag "migration $mid ended $phase $(mig error "$mid" | sed 's/^null$//')"
    check "$tag: the managers declare $from down" wait_until 15 node_is "$from" down
    # While cut off, the source can have at most a frozen or moved instance.
    check "$tag: while $from is cut off, at most one instance of kv serves" serve_check kv
    net_heal
    check "$tag: $from is up again after the heal" wait_until 15 node_is "$from" up
    where="$from $gen0"; [ "$phase" = committed ] && where="$to $((gen0 + 1))"
    check "$tag: the directory places kv per the outcome ($where)" wait_until 15 placed "$where"
    end_case "$tag"
}

# ---- 2. the leader isolated: a minority of one ----
case_leader() {
    local tag="leader.$1" l majority=() id nl from to gen0 idx out t0
    l=$(leader_of m1 m2 m3) || { not_ok "$tag: a leader"; return; }
    for id in m1 m2 m3; do [ "$id" = "$l" ] || majority+=("$id"); done
    from=$(ep node kv); to=$(other "$from"); gen0=$(ep generation kv)
    start_load "$tag" --duration 12s --rate 200 --threads 3 --keys 30 --incr-keys 3
    net_cut "$l"
    PARTITIONS=$((PARTITIONS + 1))
    t0=$(now_ms)
    check "$tag: the majority (${majority[*]}) elects a new leader" wait_until 15 has_leader "${majority[@]}"
    nl=$(leader_of "${majority[@]}")
    diag "isolated $l; new leader $nl after $(( $(now_ms) - t0 )) ms"
    # A write through the majority: a migration commits.
    if out=$(on c1 "$MANAGER" --manager "$(all_urls "${majority[@]}")" endpoint migrate kv --to "$to" 2>&1); then
        ok "$tag: a migration commits through the majority while $l is isolated"
    else
        not_ok "$tag: a migration commits through the majority while $l is isolated"
        diag "${out//$'\n'/ | }"
    fi
    # The isolated member takes no write (asked from inside its own host).
    if on "$l" "$MANAGER" --manager "$(url "$l")" --timeout 5s endpoint create isolated-write \
        --command /bin/true >"$T/iso.out" 2>&1; then
        not_ok "$tag: the isolated $l refuses a write"
        diag "$(cat "$T/iso.out")"
    else
        ok "$tag: the isolated $l refuses a write ($(head -c 150 "$T/iso.out" | tr '\n' ' '))"
    fi
    iso_not_leader() { [ "$(on "$l" curl -sf --max-time 2 "$(url "$l")/v1/status" | jq -r .leader_ready)" != true ]; }
    check "$tag: the isolated $l does not act as a ready leader" wait_until 10 iso_not_leader
    idx=$(curl -sf "$(url "$nl")/v1/status" | jq -r .commit_index)
    net_heal
    caught_up() {
        local st
        st=$(curl -sf --max-time 2 "$(url "$l")/v1/status") || return 1
        [ "$(jq -r .last_applied <<<"$st")" -ge "$idx" ] &&
            [ "$(curl -sf --max-time 2 "$(url "$l")/v1/endpoints/kv" | jq -r .generation)" = $((gen0 + 1)) ]
    }
    check "$tag: after the heal $l catches up (applied >= $idx, sees kv at generation $((gen0 + 1)))" \
        wait_until 20 caught_up
    check "$tag: all three agree on a leader" wait_until 15 has_leader m1 m2 m3
    absent() { [ "$(http GET "$(url "$nl")/v1/endpoints/isolated-write?consistent" | head -1)" = 404 ]; }
    check "$tag: the write the isolated member refused exists nowhere" absent
    OUTCOMES[committed]=$(( ${OUTCOMES[committed]:-0} + 1 ))
    check "$tag: kv is on $to as generation $((gen0 + 1))" wait_until 15 placed "$to $((gen0 + 1))"
    end_case "$tag"
}

# ---- 3. the serving node cut off from the managers until declared down ----
case_agent() {
    local tag="agent.$1" k gen0 t0
    k=$(ep node kv); gen0=$(ep generation kv)
    start_load "$tag" --duration 12s --rate 200 --threads 3 --keys 30 --incr-keys 3
    net_split "$k" "m1 m2 m3"
    PARTITIONS=$((PARTITIONS + 1))
    t0=$(now_ms)
    check "$tag: the managers declare $k down" wait_until 15 node_is "$k" down
    diag "$k declared down $(( $(now_ms) - t0 )) ms after the split"
    # Clients still reach kv on $k directly; nothing may start another one.
    check "$tag: kv still answers the clients from $k" wait_until 10 kv_answers
    check "$tag: while $k is down, one kv process in the whole cluster" test "$(count_live kv)" = 1
    net_heal
    check "$tag: $k is up again after the heal" wait_until 15 node_is "$k" up
    check "$tag: kv stays on $k as generation $gen0" wait_until 15 placed "$k $gen0"
    end_case "$tag"
}

for r in $(seq 1 "$ROUNDS"); do
    for c in source leader agent; do
        diag "---- case $c, round $r (at $(( ($(now_ms) - T0) / 1000 )) s)"
        "case_$c" "$r"
    done
done

check "kv answers with the value written before all this" kv_get_is marker before
if out=$(serve_check kv); then
    ok "no two instances ever served at once: $out"
else
    not_ok "no two instances ever served at once"
    sed 's/^/# /' <<<"$out"
fi
diag "partitions=$PARTITIONS committed=${OUTCOMES[committed]:-0} aborted=${OUTCOMES[aborted]:-0} in $(( ($(now_ms) - T0) / 1000 )) s"
done_testing
