#!/usr/bin/env bash
# Faults around a migration (DESIGN.md §8, docs/migration.md step 6):
#   - the destination agent is killed with SIGKILL in the middle of the
#     transfer: the migration aborts, the source unfreezes (only once the
#     abort is committed) and serves again, and no acknowledged write is lost;
#   - garbage on the transfer port (random bytes, a forged magic, a flood of
#     connections) closes those connections and leaves the agent alive and
#     able to migrate.
. "$(dirname "$0")/lib.sh"
. "$(dirname "$0")/node_lib.sh"

cluster_up
start_agent n1
start_agent n2
both_up() { node_up n1 && node_up n2; }
check "both agents register" wait_until 10 both_up
placed() { [ "$(curl -sfL "$(url m1)/v1/endpoints/$1?consistent" | jq -r '[.node,.generation,.state]|join(" ")')" = "$2" ]; }

# A big arena with ~100 MiB of data, so that the transfer takes long enough
# to be interrupted (tens of milliseconds at loopback speed).
create_kv kv n1 256M
check "kv runs on n1" wait_until 10 ep_is state kv running
VALUE=$(head -c 120000 /dev/zero | tr '\0' 'v')
fill() { seq 1 "$1" | xargs -P 4 -I{} "$KV_CLIENT" --manager "$MGR_URLS" put "big{}" "$VALUE" >/dev/null; }
check "kv takes 100 MiB of values" fill 850
kv put marker before >/dev/null

# ---- SIGKILL of the destination agent mid-transfer ----
# The load runs throughout; its history is checked at the end.
kv load --duration 8s --rate 300 --threads 4 --keys 40 --incr-keys 4 \
    --history "$T/history.kill" >"$T/load.kill.json" 2>"$T/load.kill.err" &
LOAD=$!
sleep 1
mgr m1 endpoint migrate kv --to n2 --detach >"$T/mig1.out" 2>&1
MID=$(curl -sfL "$(url m1)/v1/migrations" | jq -r '.migrations[0].id')
# Stop the destination agent as soon as the transfer may start (it has
# published its port): a stopped process does not read, so the stream stalls
# with the source frozen mid-way; then kill it for good.
transfer_open() { [ "$(mig phase "$MID")" != planned ]; }
wait_until 10 transfer_open
kill -STOP "${PIDS[n2]}"
PHASE_AT_KILL=$(mig phase "$MID")
sleep 0.3
kill9 n2
diag "destination agent killed in phase $PHASE_AT_KILL"
check "the destination agent was killed before the commit" \
    test "$PHASE_AT_KILL" = precopy -o "$PHASE_AT_KILL" = frozen
aborted() { [ "$(mig phase "$MID")" = aborted ]; }
check "the migration is aborted" wait_until 15 aborted
diag "abort reason: $(mig error "$MID")"
check "the endpoint stays on n1 with its generation, running" placed kv "n1 1 running"
# With pre-copy the source may still have been serving (rounds) when the
# destination died: then it never froze, and it must have stopped tracking.
# If it had frozen, it unfreezes only once the abort is committed.
abort_line=$(grep -n "migration=$MID .*phase=aborted" "$T/n1.log" | head -1 | cut -d: -f1)
if grep -q "migration=$MID endpoint=kv .*-> freezing" "$T/n1.log"; then
    unfrozen() { log_has n1 "endpoint=kv gen=1 unfrozen"; }
    check "the source unfroze its service" wait_until 10 unfrozen
    unfreeze_line=$(grep -n "endpoint=kv gen=1 unfrozen" "$T/n1.log" | head -1 | cut -d: -f1)
    check "the source unfroze only after the abort was committed" \
        test -n "$abort_line" -a -n "$unfreeze_line" -a "${unfreeze_line:-0}" -gt "${abort_line:-0}"
else
    diag "the source was still in pre-copy: it never froze"
    check "the source logged the abort" test -n "$abort_line"
    check "the source did not unfreeze what it never froze" \
        bash -c "! grep -q 'endpoint=kv gen=1 unfrozen' '$T/n1.log'"
fi
check "the source serves again" kv_get_is marker before
wait "$LOAD"
check "the load ran to the end" test $? = 0
check "every acknowledged write reads back, no increment applied twice" \
    quiet kv verify --history "$T/history.kill"
diag "client-observed longest gap across the aborted migration: $(jq -r .max_gap_ms "$T/load.kill.json") ms, failed calls $(jq -r .failed "$T/load.kill.json")"
# (The destination's restore instance, started during the transfer, waits
# for the next agent, which kills it: its migration did not commit.)
big_ok() { [ "$(kv get big777 | wc -c)" -ge 120000 ]; }
check "the big values are intact" big_ok

# The destination comes back; a migration now goes through, with the data.
start_agent n2
check "n2 registers again" wait_until 10 node_up n2
only_source() { [ "$(live_pids_of kv)" = "$(svc_pids n1 kv)" ]; }
check "one kv process, the source's (n2 killed its orphaned restore instance)" \
    wait_until 15 only_source
kv load --duration 6s --rate 300 --threads 4 --keys 40 --incr-keys 4 \
    --history "$T/history.big" >"$T/load.big.json" 2>"$T/load.big.err" &
LOAD=$!
sleep 1
out=$(mgr m1 endpoint migrate kv --to n2 2>&1)
check "a migration of the 100 MiB arena commits (exit 0)" test $? = 0
diag "${out//$'\n'/ | }"
wait "$LOAD"
check "kv runs on n2 as generation 2" placed kv "n2 2 running"
check "the big values moved" big_ok
check "the marker moved" kv_get_is marker before
check "the load across the big migration verifies" quiet kv verify --history "$T/history.big"
MB=$(curl -sfL "$(url m1)/v1/migrations" | jq -r '.migrations[0] | "\(.finished_at - .created_at) ms total, \(.bytes) bytes, downtime \(.downtime_ms) ms"')
diag "100 MiB migration: $MB; client-observed longest gap $(jq -r .max_gap_ms "$T/load.big.json") ms"

# ---- garbage on the transfer port ----
TP=${NODE_ADDR[n2]##*:}
send_garbage() {
    # random bytes
    head -c 200000 /dev/urandom >"/dev/tcp/127.0.0.1/$TP" 2>/dev/null
    # the magic and version, then junk: looks like a hello, is not one
    printf 'DVSX\001\000\100\000%s' "$(head -c 200 /dev/zero | tr '\0' 'A')" \
        >"/dev/tcp/127.0.0.1/$TP" 2>/dev/null
    # a short write and a close
    printf 'GET / HTTP/1.1\r\n\r\n' >"/dev/tcp/127.0.0.1/$TP" 2>/dev/null
    # a flood of connections that say nothing, closed at once
    local i
    for i in $(seq 1 150); do (exec 3<>"/dev/tcp/127.0.0.1/$TP") 2>/dev/null; done
    return 0
}
send_garbage
# and a few that stay open and silent past the hello deadline
for i in 1 2 3; do (exec 3<>"/dev/tcp/127.0.0.1/$TP"; sleep 7) 2>/dev/null & done
sleep 0.5
check "garbage on the transfer port leaves the agent alive" alive n2
check "the agent logged the rejected connections" log_has n2 "transfer connection from .* closed: bad magic"
hello_timeout() { log_has n2 "closed: no valid hello in time"; }
check "silent connections are closed at the hello deadline" wait_until 10 hello_timeout
check "n2 is still up" node_up n2
out=$(mgr m1 endpoint migrate kv --to n1 2>&1)
check "after the garbage a migration through the port still commits" test $? = 0
check "kv runs on n1 as generation 3" placed kv "n1 3 running"
check "the data moved back" kv_get_is marker before
check "both agents are alive" bash -c "kill -0 ${PIDS[n1]} && kill -0 ${PIDS[n2]}"

# ---- SIGTERM of the source agent in the middle of a migration ----
# The agent aborts what it can before it exits (bounded by --stop-timeout);
# whatever the outcome, exactly one instance serves and a new agent adopts it.
mgr m1 endpoint migrate kv --to n2 --detach >/dev/null 2>&1
MID=$(curl -sfL "$(url m1)/v1/migrations" | jq -r '.migrations[0].id')
wait_until 10 transfer_open
kill -TERM "${PIDS[n1]}"
t0=$(now_ms)
wait "${PIDS[n1]}"
RC=$?
unset "PIDS[n1]"
diag "source agent exited $RC after $(( $(now_ms) - t0 )) ms, migration $MID in phase $(mig phase "$MID")"
check "SIGTERM mid-migration: the source agent exits 0" test "$RC" = 0
final() { local p; p=$(mig phase "$MID"); [ "$p" = committed ] || [ "$p" = aborted ]; }
check "the migration ends" wait_until 30 final
if [ "$(mig phase "$MID")" = committed ]; then WHERE="n2 4 running"; else WHERE="n1 3 running"; fi
check "the directory places kv per the outcome ($WHERE)" wait_until 10 placed kv "$WHERE"
start_agent n1
check "n1's agent is back" wait_until 10 node_up n1
one_left() { [ "$(count_live kv)" = 1 ]; }
check "exactly one kv process is left" wait_until 15 one_left
check "kv answers, with its data" kv_get_is marker before
check "the big values are intact" big_ok
done_testing
