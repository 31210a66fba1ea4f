# Helpers for the dvs-node integration tests (sourced after lib.sh; not a
# test itself). A cluster here is three real manager members plus agents on
# loopback, each with its own ports and data directory under $T.
#
# Agents leave their services running when they die (by design: a restarted
# agent adopts them), so the services are not children the harness knows.
# node_cleanup finds them by what only this test's services have: a
# DVS_CONTROL_PATH inside $T, and kills exactly those.

NODE_BIN="$DVS_BUILDDIR/node/dvs-node"
KV_CLIENT="$DVS_BUILDDIR/examples/dvs-kv-client"
KV_SERVER="$DVS_BUILDDIR/examples/dvs-kv"
# The libtool wrappers in the build tree are shell scripts that exec the
# real binaries; a wrapper adds ~100 ms of bash to every service start, and
# a restore-mode start is downtime. Use the real binaries when they are
# there (an uninstalled build links libdvs from the build tree).
if [ -x "$DVS_BUILDDIR/examples/.libs/dvs-kv" ] && [ -d "$DVS_BUILDDIR/libdvs/.libs" ]; then
    KV_SERVER="$DVS_BUILDDIR/examples/.libs/dvs-kv"
    KV_CLIENT="$DVS_BUILDDIR/examples/.libs/dvs-kv-client"
    export LD_LIBRARY_PATH="$DVS_BUILDDIR/libdvs/.libs${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"
fi
# DVS_TEST_KV_SERVER runs another build's service: an AddressSanitizer build
# of the agent with a plain service, whose arena address the manager picks
# inside ASan's shadow memory (0x100000000000 is in it).
KV_SERVER=${DVS_TEST_KV_SERVER:-$KV_SERVER}
# Likewise DVS_TEST_MANAGER runs the managers of another build.
MANAGER=${DVS_TEST_MANAGER:-$MANAGER}

declare -A NODE_ADDR=() # node -> listen address

node_cleanup() {
    local p env name
    # The agents first: a live agent restarts the services killed below.
    for name in "${!PIDS[@]}"; do
        [ "${NODE_ADDR[$name]+set}" = set ] || continue
        kill -9 "${PIDS[$name]}" 2>/dev/null || true
        wait "${PIDS[$name]}" 2>/dev/null || true
    done
    for p in /proc/[0-9]*; do
        env=$({ tr '\0' '\n' <"$p/environ"; } 2>/dev/null) || continue
        if grep -q "^DVS_CONTROL_PATH=$T/" <<<"$env"; then
            kill -9 "${p#/proc/}" 2>/dev/null || true
        fi
    done
}
trap 'node_cleanup; cleanup' EXIT

# A free port below the kernel's ephemeral range: the services and every
# client connection take ephemeral ports all the time, and one of them
# taking a member's port between free_port's check and the bind fails the
# whole cluster.
EPHEMERAL_LOW=$(awk '{print $1}' /proc/sys/net/ipv4/ip_local_port_range 2>/dev/null || echo 32768)
low_port() {
    local p
    while p=$(free_port); [ "$p" -ge "$EPHEMERAL_LOW" ]; do :; done
    echo "$p"
}

# cluster_up [extra serve flags...]: three manager members, elected, and
# MGR_URLS set.
cluster_up() {
    local boot i
    for i in 1 2 3; do
        RAFT[m$i]="127.0.0.1:$(low_port)"
        HTTP[m$i]="127.0.0.1:$(low_port)"
    done
    boot=$(bootstrap_list 3)
    for i in 1 2 3; do start_member "m$i" --bootstrap "$boot" --node-ttl 3s \
        --load-summary-interval 1s --migration-timeout 20s "$@"; done
    if ! wait_until 30 has_leader m1 m2 m3; then
        TAP_FAILED=1 # so that the EXIT trap shows the members' logs
        bail "the managers elected no leader"
    fi
    MGR_URLS=$(all_urls m1 m2 m3)
    export DVS_MANAGER="$MGR_URLS"
}

# start_agent NODE [extra serve flags...]: the node's port is chosen once
# and kept across restarts (a restarted agent registers the same address).
start_agent() {
    local id=$1; shift
    [ -n "${NODE_ADDR[$id]:-}" ] || NODE_ADDR[$id]="127.0.0.1:$(low_port)"
    "$NODE_BIN" serve --id "$id" --manager "$MGR_URLS" --listen "${NODE_ADDR[$id]}" \
        --data-dir "$T/$id" --heartbeat-interval 300ms --log-level debug "$@" \
        >>"$T/$id.log" 2>&1 &
    PIDS[$id]=$!
}

# node_state NODE: the node's state in the directory.
node_state() { curl -sf --max-time 2 "$(url m1)/v1/nodes/$1" | jq -r .state; }
node_up() { [ "$(node_state "$1")" = up ]; }

# ep FIELD NAME: one field of an endpoint (consistent read through the leader).
ep() { curl -sfL --max-time 2 "$(url m1)/v1/endpoints/$2?consistent" | jq -r ".$1"; }
ep_is() { [ "$(ep "$1" "$2")" = "$3" ]; } # ep_is FIELD NAME VALUE

# mig FIELD ID: one field of a migration.
mig() { curl -sfL --max-time 2 "$(url m1)/v1/migrations/$2?consistent" | jq -r ".$1"; }

# svc_pids NODE NAME: the pids the agent's records name for an endpoint.
svc_pids() {
    local f
    for f in "$T/$1"/services/"$2".*.json; do
        [ -f "$f" ] && jq -r .pid "$f"
    done
}

# live_pids_of NAME: every live process of this test serving endpoint NAME,
# on any node, whatever the agents think.
live_pids_of() {
    local p env
    for p in /proc/[0-9]*; do
        env=$({ tr '\0' '\n' <"$p/environ"; } 2>/dev/null) || continue
        grep -q "^DVS_CONTROL_PATH=$T/" <<<"$env" || continue
        grep -qx "DVS_ENDPOINT=$1" <<<"$env" || continue
        [ "$(awk '{print $3}' "$p/stat" 2>/dev/null)" = Z ] && continue
        echo "${p#/proc/}"
    done
}
count_live() { live_pids_of "$1" | wc -l; }

kv() { "$KV_CLIENT" --manager "$MGR_URLS" --timeout 10s "$@"; }
quiet() { "$@" >/dev/null 2>&1; }

# create_kv NAME NODE [ARENA]
create_kv() {
    mgr m1 endpoint create "$1" --command "$KV_SERVER" --arena "${3:-64M}" --node "$2" >/dev/null
}

# log_has NODE REGEX: the agent's log has a matching line.
log_has() { grep -Eq "$2" "$T/$1.log"; }
kv_get_is() { [ "$(kv get "$1" 2>/dev/null)" = "$2" ]; }  # kv_get_is KEY VALUE
kv_incr_is() { [ "$(kv incr "$1" 2>/dev/null)" = "$2" ]; } # kv_incr_is KEY NEW_VALUE
