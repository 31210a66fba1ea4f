#!/usr/bin/env bash
# A stray peer cannot inject pages (issue "Ship it", docs/security.md): it
# learns a migration's transfer address and token (both are in the public
# migration record) and sends a well-formed stream with a made-up MAC tag
# while the real source is stopped. The destination refuses the stream, the
# migration aborts, and the endpoint keeps serving on the source with its
# data; the real source, resumed, leaves it so.
. "$(dirname "$0")/lib.sh"
. "$(dirname "$0")/node_lib.sh"
FORGE="$DVS_BUILDDIR/tests/tools/xfer_forge"

cluster_up
start_agent n1
start_agent n2
both_up() { node_up n1 && node_up n2; }
check "both agents register" wait_until 10 both_up
create_kv kv n1 16M
check "kv runs on n1" wait_until 10 ep_is state kv running
kv put marker genuine >/dev/null

kill -STOP "${PIDS[n1]}" # the real source says nothing now
mgr m1 endpoint migrate kv --to n2 --detach >/dev/null 2>&1
MID=$(curl -sfL "$(url m1)/v1/migrations" | jq -r '.migrations[0].id')
published() { [ "$(mig phase "$MID")" = precopy ]; }
check "the destination publishes its transfer port" wait_until 10 published
REC=$(curl -sfL "$(url m1)/v1/migrations/$MID")
EP=$(curl -sfL "$(url m1)/v1/endpoints/kv")
"$FORGE" "$(jq -r .info.transfer <<<"$REC")" "$MID" "$(jq -r .info.token <<<"$REC")" \
    "$(jq -r .arena_addr <<<"$EP")" "$(jq -r .arena_size <<<"$EP")" "$(jq -r .generation <<<"$EP")"
check "the forger's stream was sent" test $? = 0
refused() { log_has n2 "migration=$MID .*authentication failed"; }
check "the destination refuses the stream: its MAC is not the migration's" wait_until 10 refused
aborted() { [ "$(mig phase "$MID")" = aborted ]; }
check "the migration is aborted" wait_until 10 aborted
diag "abort reason: $(mig error "$MID")"
check "the destination committed nothing" bash -c "! grep -q 'migration=$MID .*phase=committed' '$T/n2.log'"
kill -CONT "${PIDS[n1]}"
check "kv still runs on n1" wait_until 10 ep_is node kv n1
check "with its data" kv_get_is marker genuine
check "no kv instance on n2" bash -c "[ -z \"\$(svc_pids n2 kv)\" ] || ! kill -0 \$(svc_pids n2 kv) 2>/dev/null"
check "both agents are alive" bash -c "kill -0 ${PIDS[n1]} && kill -0 ${PIDS[n2]}"
done_testing
