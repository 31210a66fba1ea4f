#!/usr/bin/env bash
# Membership at run time: a 4th member joins with --join and becomes a voter;
# a follower is removed; the leader is removed (leadership is transferred
# first and the survivors carry on).
. "$(dirname "$0")/lib.sh"

plan_members 4
BOOT=$(bootstrap_list 3)
for i in 1 2 3; do start_member "m$i" --bootstrap "$BOOT"; done
wait_until 15 has_leader m1 m2 m3 || bail "no leader"
mgr m1 endpoint create before --command /bin/true --arena 2M >/dev/null 2>&1 || true

start_member m4 --join "$(all_urls m1 m2 m3)"
voters() { [ "$(curl -sf "$(url "$1")/v1/members" | jq "[.members[] | select(.role==\"voter\")] | length")" = "$2" ]; }
check "a member started with --join becomes the 4th voter" wait_until 20 voters m1 4
check "the new member has the data written before it joined" \
    wait_until 10 bash -c "curl -sf $(url m4)/v1/endpoints/before >/dev/null"
check "the new member knows the leader" wait_until 10 has_leader m1 m2 m3 m4

L=$(leader_of m1 m2 m3 m4)
VICTIM=""
for id in m1 m2 m3 m4; do [ "$id" != "$L" ] && [ "$id" != m4 ] && { VICTIM=$id; break; }; done
check "member remove $VICTIM (a follower) succeeds" quiet mgr m4 member remove "$VICTIM"
kill9 "$VICTIM"
REST=(); for id in m1 m2 m3 m4; do [ "$id" != "$VICTIM" ] && REST+=("$id"); done
check "three voters remain" wait_until 10 voters "${REST[0]}" 3
check "member list no longer shows $VICTIM" bash -c "
    ! curl -sf $(url "${REST[0]}")/v1/members | jq -e '.members[] | select(.id==\"$VICTIM\")' >/dev/null"

# Removing the leader: it transfers leadership first, the new leader removes it.
L=$(leader_of "${REST[@]}")
OTHERS=(); for id in "${REST[@]}"; do [ "$id" != "$L" ] && OTHERS+=("$id"); done
check "removing the leader $L succeeds" quiet mgr "$L" member remove "$L"
check "the two others elect a leader among themselves" wait_until 15 has_leader "${OTHERS[@]}"
check "two voters remain" wait_until 10 voters "${OTHERS[0]}" 2
check "writes still work with two voters" wait_until 10 mgr "${OTHERS[0]}" endpoint create after --command /bin/true --arena 2M
check "removing an unknown member answers not found (exit 3)" bash -c "
    $MANAGER --manager $(url "${OTHERS[0]}") member remove nosuch; [ \$? = 3 ]"
done_testing
