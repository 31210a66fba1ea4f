#!/usr/bin/env bash
# A maintenance drain with real agents and real services (DESIGN.md §6): n1
# runs four dvs-kv endpoints, each under its own client load; `dvs-manager
# node drain n1` shows its progress and returns only once n1 is drained; every
# endpoint was live-migrated off n1 (never more than --sched-max-per-node at
# once; the one opted out of automatic moves too), the clients saw no failed call, and each client's history verifies
# against the moved service (no acknowledged write lost, no increment twice).
. "$(dirname "$0")/lib.sh"
. "$(dirname "$0")/node_lib.sh"

cluster_up --leader-tick 100ms --sched-interval 200ms --sched-max-per-node 2
# Declared capacities: each node offers 2 cores, and its load is what its
# services use, whatever else the test machine runs.
for n in n1 n2 n3; do start_agent "$n" --cpu 2; done
all_up() { node_up n1 && node_up n2 && node_up n3; }
check "three agents register" wait_until 15 all_up

EPS="kv1 kv2 kv3 kv4"
for e in kv1 kv2 kv3; do create_kv "$e" n1 16M; done
# kv4 is opted out of automatic moves: a drain moves it all the same.
mgr m1 endpoint create kv4 --command "$KV_SERVER" --arena 16M --node n1 --no-auto-migrate >/dev/null
check "endpoint show kv4 says it is opted out of automatic moves" \
    bash -c "'$MANAGER' --manager $MGR_URLS endpoint show kv4 | grep -q '^auto migrate: *no (overload and energy leave it; drains move it)'"
all_running() { local e; for e in $EPS; do ep_is state "$e" running || return 1; done; }
check "four kv endpoints run on n1" wait_until 20 all_running

# One open-loop client per endpoint, for 12 s; the drain starts 1.5 s in,
# so the clients run before, during and after every move.
for e in $EPS; do
    kv --endpoint "$e" load --duration 12s --rate 100 --threads 2 --keys 20 --incr-keys 2 \
        --history "$T/history.$e" >"$T/load.$e.json" 2>"$T/load.$e.err" &
    PIDS[load_$e]=$!
done
sleep 1.5 # pacing: the load is under way before the drain (not a synchronization)

t0=$(now_ms)
timeout $((60 * SCALE)) "$MANAGER" --manager "$MGR_URLS" node drain n1 >"$T/drain.out" 2>&1
DRAIN_RC=$?
t1=$(now_ms)
# What the directory says the moment the command returned.
after_state=$(curl -sfL --max-time 2 "$(url m1)/v1/nodes/n1?consistent" | jq -r '"\(.state) \(.eligible)"')
after_left=$(curl -sfL --max-time 2 "$(url m1)/v1/endpoints?consistent" |
    jq '[.endpoints[] | select(.node == "n1")] | length')
while IFS= read -r l; do diag "drain: $l"; done <"$T/drain.out"
diag "drain of 4 endpoints took $((t1 - t0)) ms (command start to return)"

check "node drain n1 exits 0" test "$DRAIN_RC" = 0
check "... saying n1 is drained" grep -qx 'n1 is drained' "$T/drain.out"
check "... after showing progress: moved and left counts" \
    grep -qE '^  n1: draining, [1-3] moved, [1-3] left' "$T/drain.out"
check "... and the migrations under way" \
    grep -qE '^  n1: draining, .*; moving kv[1-4] -> n[23] \((planned|precopy|frozen)\)' "$T/drain.out"
check "when it returned, n1 was drained and ineligible" test "$after_state" = "drained false"
check "... with no endpoint left on it" test "$after_left" = 0

for e in $EPS; do
    wait "${PIDS[load_$e]}"
    rc=$?
    unset "PIDS[load_$e]"
    check "the load on $e ran to the end" test "$rc" = 0
done

migs=$(curl -sfL --max-time 2 "$(url m1)/v1/migrations")
for e in $EPS; do
    check "$e was moved by one committed maintenance migration off n1" quiet jq -e --arg e "$e" '
        [.migrations[] | select(.endpoint == $e)] |
        length == 1 and .[0].reason == "maintenance" and .[0].phase == "committed" and
        .[0].source == "n1" and (.[0].destination == "n2" or .[0].destination == "n3") and
        (.[0].explanation | startswith("draining n1: moving " + $e))' <<<"$migs"
    check "$e runs on n2 or n3 as generation 2" \
        bash -c "[[ \"\$(curl -sfL $(url m1)/v1/endpoints/$e?consistent | jq -r '\"\(.node) \(.generation) \(.state)\"')\" =~ ^n[23]\ 2\ running$ ]]"
    check "no call to $e failed during the drain" test "$(jq -r .failed "$T/load.$e.json")" = 0
    check "the history of $e verifies: no write lost, no increment twice" \
        quiet kv --endpoint "$e" verify --history "$T/history.$e"
    one_left() { [ "$(count_live "$1")" = 1 ]; }
    check "one $e process is left" wait_until 15 one_left "$e"
    diag "$e: $(jq -r --arg e "$e" '.migrations[] | select(.endpoint == $e) |
        "\(.destination), \(.finished_at - .created_at) ms from record to commit, downtime \(.downtime_ms) ms"' <<<"$migs");" \
        "client: longest gap $(jq -r .max_gap_ms "$T/load.$e.json") ms, p99 $(jq -r .latency_ms.p99 "$T/load.$e.json") ms, $(jq -r .ok "$T/load.$e.json") calls ok"
done

# The concurrency limit, from the records: at no instant were more than two
# migrations off n1 between creation and commit.
check "never more than 2 migrations off n1 at once (--sched-max-per-node 2)" quiet jq -e '
    [.migrations[] | select(.source == "n1")] as $m |
    [$m[] | .created_at as $t | [$m[] | select(.created_at <= $t and .finished_at > $t)] | length] |
    max <= 2' <<<"$migs"

check "four migrations in all, none to n1" quiet jq -e '
    [.migrations[] | .destination] | length == 4 and all(. != "n1")' <<<"$migs"
check "n1's agent is still alive" alive n1
check "node enable brings n1 back" quiet mgr m1 node enable n1
check "... up and eligible" wait_until 5 bash -c "[ \"\$(curl -sfL $(url m1)/v1/nodes/n1?consistent | jq -r '\"\(.state) \(.eligible)\"')\" = 'up true' ]"
check "no sanitizer report in the members' or agents' logs" bash -c "! grep -qs Sanitizer $T/m[123].log $T/n[123].log"
done_testing
