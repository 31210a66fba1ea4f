#!/usr/bin/env bash
# kill -9 at the worst moments of a migration, each host in its own network
# namespace (netns_lib.sh), kv under client load throughout:
#   1. the manager leader while the destination's commit is in flight;
#   2. the source agent after it froze the service;
#   3. the destination agent before its instance is ready (mid-transfer);
#   4. the destination agent after its instance is ready (commit in flight);
#   5. the service process itself during the transfer.
# The moment comes from the agents' own log lines (phase=frozen,
# phase=receiving, "-> committing"), never from a sleep. A killed agent is
# restarted at once, as a supervisor would. Each case must end committed or
# aborted, the endpoint must serve again within a bound, the directory must
# place it as the outcome says, and its load's history must verify; at the
# end the services' own logs must show that no two instances ever served
# at once. Links are shaped (tbf) so that a transfer lasts seconds.
# CI: each case once. DVS_LONG=1: each case three times. DVS_SEED=N replays.
. "$(dirname "$0")/lib.sh"
. "$(dirname "$0")/node_lib.sh"
. "$(dirname "$0")/netns_lib.sh"

T0=$(now_ms)
ROUNDS=1
[ "$LONG" = 1 ] && ROUNDS=3
SERVE_BOUND=30 # seconds from the fault until kv answers again

netns_up m1 m2 m3 n1 n2 c1
cluster_up
# Short transfer stall timeout: a stream whose source died is given up fast.
AGENT_FLAGS=(--transfer-timeout 5s --linger 2s)
start_agent n1 "${AGENT_FLAGS[@]}"
start_agent n2 "${AGENT_FLAGS[@]}"
both_up() { node_up n1 && node_up n2; }
check "both agents register" wait_until 10 both_up
create_kv kv n1 128M
check "kv runs on n1" wait_until 10 ep_is state kv running

# ~5 MB of values, and 16 Mbit/s links: a transfer takes 2-3 s.
VALUE=$(head -c 120000 /dev/zero | tr '\0' 'v')
fill() { seq 1 40 | on c1 xargs -P 4 -I{} "$KV_CLIENT" --manager "$MGR_URLS" put "big{}" "$VALUE" >/dev/null; }
check "kv takes 5 MB of values" fill
kv put marker before >/dev/null
shape n1 16mbit
shape n2 16mbit

kv_answers() { on c1 "$KV_CLIENT" --manager "$MGR_URLS" --timeout 2s get marker 2>/dev/null | grep -qx before; }
big_ok() { [ "$(kv get big37 | wc -c)" -ge 120000 ]; }
other() { if [ "$1" = n1 ]; then echo n2; else echo n1; fi; }
# mig_log NODE MID REGEX: the agent's log has REGEX on a line of migration MID.
mig_log() { grep -Eq "migration=$2 .*($3)" "$T/$1.log"; }

declare -A OUTCOMES=()
CASES=0
FAULTS=0

# run_case NAME: one migration, one fault (fault_NAME), all the checks.
run_case() {
    local name=$1 tag="$1.$2" from to gen0 t_fault phase rc out
    CASES=$((CASES + 1))
    from=$(ep node kv)
    to=$(other "$from")
    gen0=$(ep generation kv)
    start_load "$tag" --duration 8s --rate 200 --threads 3 --keys 30 --incr-keys 3
    MID=$(migrate_detached kv "$to")
    if [ -z "$MID" ]; then
        not_ok "$tag: a migration $from -> $to starts"
        wait_load "$tag"
        return
    fi
    FROM=$from TO=$to
    if "fault_$name"; then
        FAULTS=$((FAULTS + 1))
        t_fault=$(now_ms)
        ok "$tag: fault injected ($FAULT_DONE)"
    else
        not_ok "$tag: fault injected (the trigger never came: migration $MID in phase $(mig phase "$MID"))"
        t_fault=$(now_ms)
    fi
    if wait_until 45 mig_final "$MID"; then
        phase=$(mig phase "$MID")
        ok "$tag: migration $MID ends $phase ($(mig error "$MID" | sed 's/^null$//'))"
    else
        phase=$(mig phase "$MID")
        not_ok "$tag: migration $MID ends committed or aborted (still $phase)"
    fi
    OUTCOMES[$phase]=$(( ${OUTCOMES[$phase]:-0} + 1 ))
    if wait_until "$SERVE_BOUND" kv_answers; then
        ok "$tag: kv serves again $(( $(now_ms) - t_fault )) ms after the fault (bound ${SERVE_BOUND} s)"
    else
        not_ok "$tag: kv serves again within ${SERVE_BOUND} s of the fault"
    fi
    "recover_$name"
    local where="$from $gen0" ; [ "$phase" = committed ] && where="$to $((gen0 + 1))"
    placed() { [ "$(ep node kv) $(ep generation kv)" = "$1" ] && ep_is state kv running; }
    if [ "$name" = service ] && [ "$phase" = aborted ]; then
        # The killed service was restarted by its agent on the source, as a
        # new generation (a crash restart), once the abort freed it.
        placed_restarted() { placed "$from $((gen0 + 1))" || placed "$from $gen0"; }
        check "$tag: the directory places kv per the outcome ($from, gen $gen0 or restarted as $((gen0 + 1)), running)" \
            wait_until 15 placed_restarted
    else
        check "$tag: the directory places kv per the outcome ($where, running)" wait_until 15 placed "$where"
    fi
    wait_load "$tag"
    check "$tag: the load ran to the end" test $? = 0
    if out=$(kv verify --history "$T/$tag.history" 2>&1); then
        ok "$tag: the history verifies ($(load_field "$tag" ops) ops, $(load_field "$tag" failed) failed calls, longest gap $(load_field "$tag" max_gap_ms) ms)"
    else
        not_ok "$tag: the history verifies"
        grep -m 10 VIOLATION <<<"$out" | sed 's/^/# /'
        tail -n 1 <<<"$out" | sed 's/^/# /'
    fi
    one_left() { [ "$(count_live kv)" = 1 ]; }
    check "$tag: exactly one kv process is left" wait_until 15 one_left
    check "$tag: the big values are intact" big_ok
}

# 1. The leader, while the destination's commit is in flight. The leader is
# stopped as soon as the source has frozen, so that the destination's
# commit reaches a leader that cannot answer; once the destination is
# committing (or 10 s passed), it is killed for good.
fault_leader() {
    local l
    l=$(leader_of $(live_members)) || return 1
    wait_until 20 mig_log "$FROM" "$MID" "role=source phase=frozen" || return 1
    pause "$l"
    if wait_until 10 mig_log "$TO" "$MID" "-> committing|phase=committed|phase=aborted"; then
        FAULT_DONE="leader $l stopped at the freeze, killed with the commit in flight"
    else
        FAULT_DONE="leader $l stopped at the freeze, killed 10 s later (the destination never got to commit)"
    fi
    kill9 "$l"
    KILLED_MEMBER=$l
}
recover_leader() {
    restart "$KILLED_MEMBER"
    check "the killed leader $KILLED_MEMBER rejoins" wait_until 20 has_leader m1 m2 m3
}

# 2. The source agent, right after it froze the service.
fault_src_agent() {
    wait_until 20 mig_log "$FROM" "$MID" "role=source phase=frozen" || return 1
    kill9 "$FROM"
    FAULT_DONE="source agent $FROM killed after the freeze"
    restart "$FROM"
}
recover_src_agent() { check "the source agent $FROM is up again" wait_until 15 node_up "$FROM"; }

# 3. The destination agent, mid-transfer (its instance is not ready yet).
fault_dst_before() {
    wait_until 20 mig_log "$TO" "$MID" "role=destination phase=receiving" || return 1
    kill9 "$TO"
    FAULT_DONE="destination agent $TO killed while receiving"
    restart "$TO"
}
recover_dst_before() { check "the destination agent $TO is up again" wait_until 15 node_up "$TO"; }

# 4. The destination agent, once its instance is ready and the commit is
# being reported.
fault_dst_after() {
    wait_until 30 mig_log "$TO" "$MID" "-> committing" || return 1
    kill9 "$TO"
    FAULT_DONE="destination agent $TO killed with its instance ready, commit in flight"
    restart "$TO"
}
recover_dst_after() { check "the destination agent $TO is up again" wait_until 15 node_up "$TO"; }

# 5. The service process on the source, while its arena streams out.
fault_service() {
    local pid
    wait_until 20 mig_log "$TO" "$MID" "role=destination phase=receiving" || return 1
    pid=$(kill_service "$FROM" kv) || return 1
    FAULT_DONE="kv process $pid on $FROM killed during the transfer"
}
recover_service() { :; }

for r in $(seq 1 "$ROUNDS"); do
    for c in leader src_agent dst_before dst_after service; do
        diag "---- case $c, round $r (at $(( ($(now_ms) - T0) / 1000 )) s)"
        run_case "$c" "$r"
    done
done

check "kv answers with the value written before all this" kv_get_is marker before
if out=$(serve_check kv); then
    ok "no two instances ever served at once: $out"
else
    not_ok "no two instances ever served at once"
    sed 's/^/# /' <<<"$out"
fi
diag "cases=$CASES faults=$FAULTS committed=${OUTCOMES[committed]:-0} aborted=${OUTCOMES[aborted]:-0}"
done_testing
