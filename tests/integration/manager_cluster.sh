#!/usr/bin/env bash
# Three real manager members on loopback: election, writes through any
# member, kill -9 of the leader, catch-up of a restarted member.
. "$(dirname "$0")/lib.sh"

plan_members 3
BOOT=$(bootstrap_list 3)
for i in 1 2 3; do start_member "m$i" --bootstrap "$BOOT"; done

check "three members elect one leader they all agree on" wait_until 15 has_leader m1 m2 m3
L=$(leader_of m1 m2 m3) || bail "no leader"
diag "leader is $L"
FOLLOWERS=()
for i in 1 2 3; do [ "m$i" = "$L" ] || FOLLOWERS+=("m$i"); done

check "every member lists three voters" \
    wait_until 10 bash -c "for u in $(url m1) $(url m2) $(url m3); do
        [ \"\$(curl -sf \$u/v1/members | jq '[.members[] | select(.role==\"voter\" and .http_addr!=null)] | length')\" = 3 ] || exit 1; done"

# Writes through the CLI, through a follower (which redirects to the leader).
F=${FOLLOWERS[0]}
out=$(mgr "$F" endpoint create ep1 --command "/bin/true" --arena 4M 2>&1)
check "endpoint create through follower $F succeeds (${out//$'\n'/ })" \
    mgr "$F" endpoint show ep1
for i in 2 3 4 5; do
    mgr "${FOLLOWERS[$((i % 2))]}" endpoint create "ep$i" --command "/bin/true" --arena 4M >/dev/null 2>&1 ||
        not_ok "create ep$i"
done
ACKED="ep1 ep2 ep3 ep4 ep5"

has_all() { # member, endpoints...
    local id=$1; shift
    local names; names=$(curl -sf --max-time 2 "$(url "$id")/v1/endpoints" | jq -r '.endpoints[].name') || return 1
    local e; for e in "$@"; do grep -qx "$e" <<<"$names" || return 1; done
}
for id in m1 m2 m3; do
    check "member $id has every acknowledged endpoint" wait_until 5 has_all "$id" $ACKED
done

# Arena ranges never overlap (the FSM allocates them deterministically).
check "arena addresses differ and are the same on every member" bash -c "
    a=\$(curl -sf $(url m1)/v1/endpoints | jq -c '[.endpoints[] | [.name,.arena_addr]] | sort')
    b=\$(curl -sf $(url m2)/v1/endpoints | jq -c '[.endpoints[] | [.name,.arena_addr]] | sort')
    n=\$(curl -sf $(url m1)/v1/endpoints | jq '[.endpoints[].arena_addr] | unique | length')
    [ \"\$a\" = \"\$b\" ] && [ \"\$n\" = 5 ]"

# kill -9 the leader: the others elect a new one and accept writes.
t0=$(now_ms)
kill9 "$L"
check "after kill -9 of leader $L the survivors elect a new leader" \
    wait_until 15 has_leader "${FOLLOWERS[@]}"
NL=$(leader_of "${FOLLOWERS[@]}")
diag "new leader $NL after $(( $(now_ms) - t0 )) ms"
check "the new leader is not the killed member" test "$NL" != "$L"
wrote() { mgr "${FOLLOWERS[1]}" endpoint create ep6 --command "/bin/true" --arena 4M; }
check "a write through a survivor succeeds after the failover" wait_until 10 wrote
ACKED="$ACKED ep6"
for id in "${FOLLOWERS[@]}"; do
    check "survivor $id still has every acknowledged endpoint" wait_until 5 has_all "$id" $ACKED
done

# The killed member restarts from its data dir and catches up.
start_member "$L" --bootstrap "$BOOT"
check "the restarted member $L catches up with every acknowledged write" \
    wait_until 15 has_all "$L" $ACKED
same_index() { [ "$(status_field "$L" index)" = "$(status_field "$NL" index)" ]; }
check "the restarted member reaches the leader's FSM index" wait_until 10 same_index
check "the restarted member follows the new leader" \
    wait_until 10 bash -c "[ \"\$(curl -sf $(url "$L")/v1/status | jq -r .leader.id)\" = $NL ]"

# Graceful stop: SIGTERM ends the daemon with status 0.
check "SIGTERM stops a member cleanly (exit 0)" stop_term "${FOLLOWERS[0]}"
done_testing
