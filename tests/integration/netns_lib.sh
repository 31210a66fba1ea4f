# Multi-host harness: every manager member, node agent and client in its own
# network namespace (sourced after lib.sh and node_lib.sh; not a test itself).
#
#   netns_up m1 m2 m3 n1 n2 c1     one namespace per host, each with a veth
#                                  to a bridge in a namespace of its own;
#                                  addresses 10.X.Y.i/24 (X, Y random per
#                                  test) exist only inside those namespaces
#   cluster_up, start_agent NODE   as in node_lib.sh, but each daemon runs
#                                  inside its host (ip netns exec) on the
#                                  host's address; services bind to it too
#   curl, kv, mgr                  run inside the client host c1, so every
#                                  helper of lib.sh/node_lib.sh that reads
#                                  the managers works unchanged
#   on HOST CMD...                 run CMD inside HOST
#   pause NAME / resume NAME       SIGSTOP / SIGCONT a daemon by PID
#   kill9 NAME (lib.sh), restart NAME   kill -9 and start again, same flags
#   kill_service NODE ENDPOINT     kill -9 the endpoint's process on NODE,
#                                  recording the time for serve_check
#   net_cut HOST                   drop everything in and out of HOST but lo
#   net_split "A B" "C D"          each side drops traffic to/from the other
#   net_heal                       remove every rule of the above
#   shape HOST RATE / unshape HOST tbf on HOST's link (the kernel has no netem)
#   serve_check ENDPOINT           from the services' own serve-start and
#                                  serve-stop lines: no two instances ever
#                                  served ENDPOINT at the same time
#
# Everything is undone at exit: the daemons killed by PID (lib.sh, node_lib.sh),
# then the namespaces deleted. The rules live inside the test's namespaces,
# so nothing outside the test is ever touched.

netns_skip() {
    echo "1..0 # SKIP $*"
    exit 0
}
[ "$(id -u)" = 0 ] || netns_skip "network namespaces need root (CI runs these as root)"
ip netns list >/dev/null 2>&1 || netns_skip "ip netns is unavailable (iproute2 missing or no netns support)"
if ! command -v nft >/dev/null 2>&1; then
    # The issue asks the test to install what it lacks; tools/deps.sh lists it.
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends nftables \
        >/dev/null 2>&1 || true
    command -v nft >/dev/null 2>&1 || netns_skip "nft (nftables) is missing and could not be installed"
fi

# The seed: printed first, taken from DVS_SEED to replay a run. bash's RANDOM
# is seeded with it, so every random choice a test makes follows from it
# (timing still differs from run to run; the seed fixes the plan).
SEED=${DVS_SEED:-$(( $(date +%s%N) % 1000000007 ))}
RANDOM=$SEED
diag "seed=$SEED (replay with DVS_SEED=$SEED${DVS_LONG:+ DVS_LONG=$DVS_LONG})"
LONG=${DVS_LONG:-0}
# rand N: a number in [0, N).
rand() { echo $(( RANDOM % $1 )); }

declare -A NS=()      # host -> namespace name
declare -A HOST_IP=() # host -> its address
NETNS_HOSTS=()
NETNS_BR=""
NETNS_PREFIX=""
declare -A RESTART=() # daemon name -> the command that starts it again

netns_cleanup() {
    local h
    for h in "${NETNS_HOSTS[@]}"; do
        ip netns del "${NS[$h]}" 2>/dev/null || true
    done
    [ -n "$NETNS_BR" ] && ip netns del "$NETNS_BR" 2>/dev/null
    return 0
}
trap 'node_cleanup; cleanup; netns_cleanup' EXIT
trap 'exit 130' INT TERM

# on HOST CMD...: run CMD in HOST's network namespace. nsenter only switches
# the network namespace (ip netns exec also remounts /sys, which costs tens
# of milliseconds, too much for the polling helpers); daemons get ip netns
# exec, the short commands this.
on() {
    local h=$1; shift
    nsenter --net="/run/netns/${NS[$h]}" -- "$@"
}

# netns_up HOST...: the hosts, the bridge, the addresses.
netns_up() {
    local h i=1 try
    for try in 1 2 3 4 5; do
        NETNS_PREFIX="dvst$(printf %05d "$(( (RANDOM * 32768 + RANDOM) % 100000 ))")"
        ip netns add "$NETNS_PREFIX-br" 2>/dev/null && break
        NETNS_PREFIX=""
    done
    [ -n "$NETNS_PREFIX" ] || bail "cannot create a network namespace"
    NETNS_BR="$NETNS_PREFIX-br"
    NETNS_SUBNET="10.$(( 16 + $(rand 200) )).$(rand 256)"
    ip -n "$NETNS_BR" link set lo up
    ip -n "$NETNS_BR" link add name br0 type bridge || bail "cannot create a bridge"
    ip -n "$NETNS_BR" link set br0 up
    for h in "$@"; do
        NS[$h]="$NETNS_PREFIX-$h"
        HOST_IP[$h]="$NETNS_SUBNET.$i"
        i=$((i + 1))
        NETNS_HOSTS+=("$h")
        ip netns add "${NS[$h]}" || bail "cannot create namespace ${NS[$h]}"
        # The bridge side is named after the host (the bridge's namespace is
        # private to this test, so names cannot collide).
        ip -n "$NETNS_BR" link add name "v$h" type veth peer name eth0 netns "${NS[$h]}" ||
            bail "cannot create the veth pair of $h"
        ip -n "$NETNS_BR" link set "v$h" master br0
        ip -n "$NETNS_BR" link set "v$h" up
        ip -n "${NS[$h]}" link set lo up
        ip -n "${NS[$h]}" addr add "${HOST_IP[$h]}/24" dev eth0
        ip -n "${NS[$h]}" link set eth0 up
    done
    # A bridge port forwards only once it is up and the bridge learned it;
    # wait until the first and the last host see each other.
    reach() { on "$1" bash -c "exec 3<>/dev/tcp/${HOST_IP[$2]}/9" 2>&1 | grep -q refused; }
    wait_until 10 reach "$1" "${!#}" || bail "the hosts cannot reach each other over the bridge"
    diag "hosts: $(for h in "$@"; do printf '%s=%s ' "$h" "${HOST_IP[$h]}"; done)(namespaces $NETNS_PREFIX-*)"
}

# ---- daemons inside the hosts (these replace lib.sh's and node_lib.sh's) ----

MGR_FLAGS=(--node-ttl 3s --load-summary-interval 1s --migration-timeout 20s --automation off)

# start_member ID [extra serve flags...]: on host ID, raft port 7001, REST 7002
# (each host has its own ports, so fixed ports cannot collide).
start_member() {
    local id=$1; shift
    mkdir -p "$T/$id"
    RESTART[$id]="start_member $id $(printf '%q ' "$@")"
    # --insecure-open: the API listens on a namespace address, reachable only
    # from the test's own namespaces; this harness tests faults, not tokens.
    ip netns exec "${NS[$id]}" "$MANAGER" serve --id "$id" --data-dir "$T/$id" \
        --raft-addr "${RAFT[$id]}" --http-addr "${HTTP[$id]}" --insecure-open "$@" >>"$T/$id.log" 2>&1 &
    PIDS[$id]=$!
}

# cluster_up: m1..m3 elected, MGR_URLS and DVS_MANAGER set.
cluster_up() {
    local i boot
    for i in 1 2 3; do
        RAFT[m$i]="${HOST_IP[m$i]}:7001"
        HTTP[m$i]="${HOST_IP[m$i]}:7002"
    done
    boot=$(bootstrap_list 3)
    for i in 1 2 3; do start_member "m$i" --bootstrap "$boot" "${MGR_FLAGS[@]}"; done
    if ! wait_until 30 has_leader m1 m2 m3; then
        TAP_FAILED=1
        bail "the managers elected no leader"
    fi
    MGR_URLS=$(all_urls m1 m2 m3)
    export DVS_MANAGER="$MGR_URLS"
}

# start_agent NODE [extra serve flags...]: on host NODE, port 7100; its
# services listen on the host's address.
start_agent() {
    local id=$1; shift
    NODE_ADDR[$id]="${HOST_IP[$id]}:7100"
    RESTART[$id]="start_agent $id $(printf '%q ' "$@")"
    ip netns exec "${NS[$id]}" "$NODE_BIN" serve --id "$id" --manager "$MGR_URLS" \
        --listen "${NODE_ADDR[$id]}" --data-dir "$T/$id" --heartbeat-interval 300ms \
        --log-level debug "$@" >>"$T/$id.log" 2>&1 &
    PIDS[$id]=$!
}

# restart NAME: kill -9 (if alive) and start again with the same flags.
restart() {
    alive "$1" && kill9 "$1"
    eval "${RESTART[$1]}"
}
# alive NAME: as lib.sh's, but false (not an error under set -u) for a
# daemon that kill9 already forgot.
alive() { [ -n "${PIDS[$1]:-}" ] && kill -0 "${PIDS[$1]}" 2>/dev/null; }
pause() { kill -STOP "${PIDS[$1]}"; }
resume() { kill -CONT "${PIDS[$1]}"; }

# The operator's and the clients' commands run on the client host.
NETNS_CLIENT=c1
curl() { on "$NETNS_CLIENT" curl "$@"; }
kv() { on "$NETNS_CLIENT" "$KV_CLIENT" --manager "$MGR_URLS" --timeout 10s "$@"; }
mgr() { local id=$1; shift; on "$NETNS_CLIENT" "$MANAGER" --manager "$(url "$id")" "$@"; }

# start_load NAME ARGS...: `dvs-kv-client load` in the background on the
# client host, its history in $T/NAME.history, its summary in $T/NAME.json.
start_load() {
    local name=$1; shift
    kv load --history "$T/$name.history" "$@" >"$T/$name.json" 2>"$T/$name.err" &
    PIDS[load-$name]=$!
}
# wait_load NAME: wait for it; fails if it did not exit 0.
wait_load() {
    local rc
    wait "${PIDS[load-$1]}"; rc=$?
    unset "PIDS[load-$1]"
    return $rc
}
load_field() { jq -r ".$2" "$T/$1.json"; }

# Reads that survive a dead member: node_lib.sh's ep, mig and node_state
# ask m1 only; these ask each live member in turn (consistent reads, so the
# answer is the leader's whichever member forwards it).
mread() {
    local id
    for id in m1 m2 m3; do
        alive "$id" || continue
        curl -sfL --max-time 3 "$(url "$id")$1" && return 0
    done
    return 1
}
ep() { mread "/v1/endpoints/$2?consistent" | jq -r ".$1"; }
mig() { mread "/v1/migrations/$2?consistent" | jq -r ".$1"; }
node_state() { mread "/v1/nodes/$1" | jq -r .state; }
# mgr_any ARGS...: the CLI against every member (it fails over).
mgr_any() { on "$NETNS_CLIENT" "$MANAGER" --manager "$MGR_URLS" "$@"; }
# migrate_detached NAME NODE: start a migration; prints its id.
migrate_detached() { mgr_any endpoint migrate "$1" --to "$2" --detach | awk '/^migration [0-9]+ started/ {print $2}'; }
mig_final() { local p; p=$(mig phase "$1"); [ "$p" = committed ] || [ "$p" = aborted ]; }
# live_members: the members whose process runs.
live_members() { local id; for id in m1 m2 m3; do alive "$id" && echo "$id"; done; }

# ---- processes ----

# ns_pids [HOST...]: every process inside the hosts' namespaces (all hosts
# by default): daemons, the services the agents started, clients. All of
# them belong to this test, so these replace node_lib.sh's scans of every
# environment in /proc (which take seconds on a busy machine).
ns_pids() {
    local h
    for h in "${@:-${NETNS_HOSTS[@]}}"; do ip netns pids "${NS[$h]}" 2>/dev/null; done
}
live_pids_of() {
    local p
    for p in $(ns_pids); do
        [ "$(awk '{print $3}' "/proc/$p/stat" 2>/dev/null)" = Z ] && continue
        { tr '\0' '\n' <"/proc/$p/environ"; } 2>/dev/null | grep -qx "DVS_ENDPOINT=$1" && echo "$p"
    done
}
node_cleanup() {
    local name p
    # The agents first: a live agent restarts the services killed below.
    for name in "${!PIDS[@]}"; do
        [ "${NODE_ADDR[$name]+set}" = set ] || continue
        kill -9 "${PIDS[$name]}" 2>/dev/null || true
    done
    for p in $(ns_pids); do kill -9 "$p" 2>/dev/null || true; done
}

# ep_pid NAME: the pid of the endpoint's process on the node the directory
# names (the agent's record of it).
ep_pid() { svc_pids "$(ep node "$1")" "$1" | head -1; }

# kill_service NODE ENDPOINT: kill -9 its process there; the time it was
# certainly dead by goes to $T/killed for serve_check.
kill_service() {
    local pid
    pid=$(svc_pids "$1" "$2" | head -1)
    [ -n "$pid" ] || return 1
    kill -9 "$pid" 2>/dev/null
    gone() { [ ! -d "/proc/$1" ] || [ "$(awk '{print $3}' "/proc/$1/stat" 2>/dev/null)" = Z ]; }
    wait_until 5 gone "$pid"
    echo "killed $pid $(date +%s%6N)" >>"$T/killed"
    echo "$pid"
}

# ---- the network ----

# nft_on HOST: apply an nft script (stdin) inside HOST.
nft_on() { on "$1" nft -f -; }
NFT_HEAD='add table inet dvsfault
flush table inet dvsfault
add chain inet dvsfault in { type filter hook input priority 0; policy accept; }
add chain inet dvsfault out { type filter hook output priority 0; policy accept; }'

# net_cut HOST...: each HOST hears and says nothing but to itself (lo).
net_cut() {
    local h
    for h in "$@"; do
        printf '%s\nadd rule inet dvsfault in iifname != "lo" drop\nadd rule inet dvsfault out oifname != "lo" drop\n' \
            "$NFT_HEAD" | nft_on "$h" || return 1
    done
    echo "$(date +%s%6N) cut $*" >>"$T/faults"
}

# net_split "HOSTS A" "HOSTS B": every host of A drops what comes from or
# goes to B, and the other way round. Hosts in neither (the client) still
# reach both sides: the hardest case for split brain.
net_split() {
    local a=($1) b=($2) h ips_a ips_b
    ips_a=$(for h in "${a[@]}"; do printf '%s, ' "${HOST_IP[$h]}"; done)
    ips_b=$(for h in "${b[@]}"; do printf '%s, ' "${HOST_IP[$h]}"; done)
    for h in "${a[@]}"; do
        printf '%s\nadd rule inet dvsfault in ip saddr { %s } drop\nadd rule inet dvsfault out ip daddr { %s } drop\n' \
            "$NFT_HEAD" "${ips_b%, }" "${ips_b%, }" | nft_on "$h" || return 1
    done
    for h in "${b[@]}"; do
        printf '%s\nadd rule inet dvsfault in ip saddr { %s } drop\nadd rule inet dvsfault out ip daddr { %s } drop\n' \
            "$NFT_HEAD" "${ips_a%, }" "${ips_a%, }" | nft_on "$h" || return 1
    done
    echo "$(date +%s%6N) split $1 | $2" >>"$T/faults"
}

# net_heal: every host back to no rules.
net_heal() {
    local h
    for h in "${NETNS_HOSTS[@]}"; do
        on "$h" nft delete table inet dvsfault 2>/dev/null || true
    done
    echo "$(date +%s%6N) heal" >>"$T/faults"
}

# net_rules HOST: the rules in force inside HOST (for diagnostics).
net_rules() { on "$1" nft list ruleset; }

# shape HOST RATE: limit what HOST sends (tbf; e.g. 200mbit), so that a
# transfer takes long enough for a fault to land inside it.
shape() { on "$1" tc qdisc replace dev eth0 root tbf rate "$2" burst 256kb latency 50ms; }
unshape() { on "$1" tc qdisc del dev eth0 root 2>/dev/null || true; }

# ---- the single-server invariant (DESIGN.md §4) ----

# serve_check ENDPOINT: rebuild, from every node's log of ENDPOINT (libdvs
# logs "serve-start ... pid=P t_us=T" and "serve-stop ..."), the intervals
# in which each instance served, and fail if two instances' intervals
# overlap. An instance still serving ends now if it is alive, at its kill
# time if the test killed it (kill_service); an instance that vanished
# while serving without either is itself a violation (nothing would bound
# its interval). Prints one line per problem and a summary on stdout.
serve_check() {
    local ep=$1 logs=() alive_pids="" pid
    for f in "$T"/*/log/"$ep".log; do [ -f "$f" ] && logs+=("$f"); done
    [ ${#logs[@]} -gt 0 ] || { echo "no service log of $ep"; return 1; }
    for pid in $(grep -ho 'serve-start .*pid=[0-9]*' "${logs[@]}" | sed 's/.*pid=//' | sort -u); do
        [ -d "/proc/$pid" ] && [ "$(awk '{print $3}' "/proc/$pid/stat" 2>/dev/null)" != Z ] &&
            alive_pids+=" $pid"
    done
    { cat "${logs[@]}"; [ -f "$T/killed" ] && cat "$T/killed"; } |
        awk -v ep="$ep" -v alive="$alive_pids" -v now="$(date +%s%6N)" '
        function field(name,   i) {
            for (i = 1; i <= NF; i++) if (index($i, name "=") == 1) return substr($i, length(name) + 2)
            return ""
        }
        BEGIN { n = split(alive, a, " "); for (i = 1; i <= n; i++) is_alive[a[i]] = 1 }
        $1 == "killed" { killed[$2] = $3; next }
        / serve-(start|stop) / && field("endpoint") == ep {
            pid = field("pid"); t = field("t_us") + 0; gen = field("generation")
            if ($0 ~ / serve-start /) {
                if (pid in open) { print "pid " pid " started serving twice without a stop"; bad++ }
                open[pid] = t; ogen[pid] = gen
            } else if (pid in open) {
                m++; s[m] = open[pid]; e[m] = t; p[m] = pid; g[m] = gen; delete open[pid]
            } else { print "pid " pid " stopped serving without a start"; bad++ }
        }
        END {
            for (pid in open) {
                if (pid in is_alive) end = now
                else if (pid in killed) end = killed[pid]
                else { print "pid " pid " (generation " ogen[pid] ") vanished while serving, with no serve-stop line"; bad++; end = now }
                m++; s[m] = open[pid]; e[m] = end; p[m] = pid; g[m] = ogen[pid]
            }
            # Sort by start (insertion sort: a few hundred intervals at most),
            # then sweep keeping the interval that reaches furthest.
            for (i = 2; i <= m; i++) {
                ks = s[i]; ke = e[i]; kp = p[i]; kg = g[i]
                for (j = i - 1; j >= 1 && s[j] > ks; j--) { s[j+1] = s[j]; e[j+1] = e[j]; p[j+1] = p[j]; g[j+1] = g[j] }
                s[j+1] = ks; e[j+1] = ke; p[j+1] = kp; g[j+1] = kg
            }
            far = 0
            for (i = 1; i <= m; i++) {
                if (far > 0 && s[i] < e[far] && p[i] != p[far]) {
                    printf "OVERLAP: pid %s generation %s served [%.0f, %.0f] while pid %s generation %s served [%.0f, %.0f] (%.0f us together)\n", \
                        p[i], g[i], s[i], e[i], p[far], g[far], s[far], e[far], (e[i] < e[far] ? e[i] : e[far]) - s[i]
                    bad++
                }
                if (far == 0 || e[i] > e[far]) far = i
                pids[p[i]] = 1; gens[g[i]] = 1
            }
            np = 0; for (x in pids) np++; ng = 0; for (x in gens) ng++
            printf "%d serving intervals of %d instances (%d generations), %d problems\n", m, np, ng, bad + 0
            exit(bad > 0 || m == 0)
        }'
}
