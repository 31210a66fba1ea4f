#!/usr/bin/env bash
# Live (pre-copy) migration figures (issue "Live pre-copy migration").
#
# For each arena size and each client write rate, a kv endpoint filled to
# about half moves n1 <-> n2 MOVES times while dvs-kv-client drives a
# write-heavy open-loop load over many keys (so that writes dirty pages all
# over the arena). Prints, per (size, rate): the client-observed longest gap
# between successful replies (p50 / p99 over the moves: each move is its
# own load run), the agent-measured freeze-to-commit downtime, the total
# time, bytes sent / arena data, rounds, the dirty rate the source saw
# (bytes of round 1 / time of round 0), the tracking method and why
# pre-copy stopped — and the ratio of total time to data / raw loopback
# bandwidth, measured in the same run with a plain TCP copy.
#
# Usage: bash bench/precopy_bench.sh [BUILD_DIR]    (default build/check)
# Environment: SIZES="64 256" RATES="0 2000 8000" MOVES=10 TRACKING=auto
#              LOG=warn KEEP=1 (keep the data directory and logs)
#              BW=BYTES_PER_S (agents' --max-bandwidth: a slower link)
#              DATA=FILE: also append one tab-separated line per (size, rate):
#              mib rate gap_p50 gap_p99 down_p50 down_p99 total_p50 total_p99
#              bytes/data rounds_p50 ratio_total (for docs/precopy.gp)
set -euo pipefail
cd "$(dirname "$0")/.."
B=$(cd "${1:-build/check}" && pwd)
SIZES=${SIZES:-64 256}
RATES=${RATES:-0 2000 8000}
MOVES=${MOVES:-10}
TRACKING=${TRACKING:-auto}
LOG=${LOG:-warn}
make -s -C "$B" manager/dvs-manager node/dvs-node examples/dvs-kv examples/dvs-kv-client bench/tcp_bw >/dev/null
M=$B/manager/dvs-manager NODE=$B/node/dvs-node
KV=$B/examples/.libs/dvs-kv KVC=$B/examples/.libs/dvs-kv-client
[ -x "$KV" ] || KV=$B/examples/dvs-kv
[ -x "$KVC" ] || KVC=$B/examples/dvs-kv-client
export LD_LIBRARY_PATH=$B/libdvs/.libs
D=$(mktemp -d /tmp/dvs-pcbench.XXXXXX)
declare -A PID
cleanup() {
    for p in "${PID[@]}"; do kill "$p" 2>/dev/null || true; done
    for p in /proc/[0-9]*; do
        { tr '\0' '\n' <"$p/environ"; } 2>/dev/null | grep -q "^DVS_CONTROL_PATH=$D/" &&
            kill -9 "${p#/proc/}" 2>/dev/null || true
    done
    wait 2>/dev/null || true
    if [ -n "${KEEP:-}" ]; then echo "kept $D"; else rm -rf "$D"; fi
}
trap cleanup EXIT
# A benchmark's own polling: bounded, never part of a figure.
wait_for() { local s=$1; shift; for _ in $(seq 1 $((s * 20))); do "$@" >/dev/null 2>&1 && return 0; sleep 0.05; done; echo "timeout: $*" >&2; exit 1; }
P=$((20000 + RANDOM % 12000)) # below the ephemeral range (32768-)
BOOT=m1=127.0.0.1:$((P + 1)),m2=127.0.0.1:$((P + 2)),m3=127.0.0.1:$((P + 3))
export DVS_MANAGER=http://127.0.0.1:$((P + 11)),http://127.0.0.1:$((P + 12)),http://127.0.0.1:$((P + 13))
for i in 1 2 3; do
    "$M" serve --id m$i --data-dir "$D/m$i" --raft-addr 127.0.0.1:$((P + i)) --http-addr 127.0.0.1:$((P + 10 + i)) \
        --bootstrap $BOOT --log-level warn >>"$D/m$i.log" 2>&1 & PID[m$i]=$!
done
wait_for 20 bash -c "$M status --json | jq -e '.leader.id != null'"
for n in 1 2; do
    "$NODE" serve --id n$n --manager "$DVS_MANAGER" --listen 127.0.0.1:$((P + 20 + n)) --data-dir "$D/n$n" \
        --heartbeat-interval 500ms --dirty-tracking "$TRACKING" --max-bandwidth "${BW:-0}" --log-level "$LOG" >>"$D/n$n.log" 2>&1 & PID[n$n]=$!
done
wait_for 20 bash -c "[ \$($M node list --json | jq '[.nodes[]|select(.state==\"up\")]|length') = 2 ]"
echo "== machine: $(nproc) cores, load $(cut -d' ' -f1-3 /proc/loadavg); tracking: $(grep -ho 'dirty tracking: [a-z]*' "$D/n1.log" | head -1)"

# Raw loopback bandwidth, same run: 512 MiB through one TCP socket.
raw=$("$B/bench/tcp_bw" $((512 << 20)))
echo "== raw loopback TCP bandwidth: $((raw / 1048576)) MiB/s (one 512 MiB stream)"

value=$(head -c 60000 /dev/zero | tr '\0' v)
pct() { sort -n | awk -v p="$1" '{a[NR]=$1} END {if (NR==0) {print "-"; exit} i=int((NR-1)*p+0.5)+1; if (i>NR) i=NR; print a[i]}'; }
for mib in $SIZES; do
    for rate in $RATES; do
        ep=kv${mib}r$rate
        "$M" endpoint create $ep --command "$KV" --arena ${mib}M --node n1 >/dev/null
        wait_for 30 bash -c "$M endpoint show $ep --json | jq -e '.state==\"running\"'"
        # ~half the arena: 60 kB values, 8 per MiB.
        for k in $(seq 1 $((mib * 8))); do "$KVC" --endpoint $ep put "fill-$k" "$value" >/dev/null; done
        : >"$D/$ep.gaps"
        to=n2
        for i in $(seq 1 "$MOVES"); do
            if [ "$rate" -gt 0 ]; then
                "$KVC" --endpoint $ep load --duration 4s --rate "$rate" --threads 2 --keys 20000 \
                    --write-ratio 0.9 --history "$D/$ep.$i.hist" >"$D/$ep.$i.json" 2>/dev/null &
                LOAD=$!
                sleep 1.5 # let the load reach its rate (a benchmark pause, not a synchronisation)
            fi
            "$M" endpoint migrate $ep --to $to >/dev/null || echo "  move $i to $to failed"
            if [ "$rate" -gt 0 ]; then
                wait $LOAD || true
                jq -r '.max_gap_ms' "$D/$ep.$i.json" >>"$D/$ep.gaps"
                "$KVC" verify --endpoint $ep --history "$D/$ep.$i.hist" >/dev/null 2>&1 ||
                    echo "  move $i: HISTORY VIOLATION"
            fi
            [ $to = n2 ] && to=n1 || to=n2
        done
        data=$("$M" migration list --json | jq --arg ep $ep '[.migrations[]|select(.endpoint==$ep and .phase=="committed")|.info.round_stats[0].bytes]|max // 0')
        echo "== kv arena $mib MiB ($((data / 1048576)) MiB non-zero), $rate calls/s (90% writes), $MOVES moves"
        "$M" migration list --json | jq -r --arg ep $ep --argjson raw "$raw" --argjson mib "$mib" '
          [.migrations[] | select(.endpoint==$ep and .phase=="committed")] as $m
          | def med(f): ($m | map(f) | sort) as $s | if ($s|length)==0 then 0 else $s[(($s|length)-1)/2|floor] end;
            def p99(f): ($m | map(f) | sort) as $s | if ($s|length)==0 then 0 else $s[((($s|length)-1)*0.99+0.5)|floor] end;
            def total: (.finished_at - .created_at);
            def data: (.info.round_stats[0].bytes // .bytes);
            def dirty: (if (.info.round_stats|length) > 1 and .info.bandwidth_bps > 0 then (.info.round_stats[1].bytes / (.info.round_stats[0].bytes / .info.bandwidth_bps)) else 0 end);
          "  downtime (freeze->commit, agent) p50 \(med(.downtime_ms)) ms, p99 \(p99(.downtime_ms)) ms",
          "  total p50 \(med(total)) ms, p99 \(p99(total)) ms; ratio to data/raw-bandwidth+100ms: p50 \(med(total / ((data / $raw * 1000) + 100)) * 100 | floor / 100)",
          "  bytes sent / data p50 \(med(.bytes / ([data,1]|max)) * 100 | floor / 100); bytes sent / arena p50 \(med(.bytes / ($mib*1048576)) * 1000 | floor / 1000)",
          "  rounds p50 \(med(.rounds)), max \($m|map(.rounds)|max); dirty rate seen ~\(med(dirty) / 1048576 | floor) MiB/s; link \(med(.info.bandwidth_bps) / 1048576 | floor) MiB/s",
          "  method \($m|map(.info.method)|unique|join(",")); stop: \($m|map(.info.precopy_stop)|group_by(.)|map("\(.[0])×\(length)")|join(", ")); throttled: \($m|map(select(.info.throttle_us>0))|length)"'
        if [ "$rate" -gt 0 ]; then
            echo "  client-observed longest gap p50 $(pct 0.5 <"$D/$ep.gaps") ms, p99 $(pct 0.99 <"$D/$ep.gaps") ms, max $(sort -n "$D/$ep.gaps" | tail -1) ms"
        fi
        if [ -n "${DATA:-}" ]; then
            gp50=$(pct 0.5 <"$D/$ep.gaps"); gp99=$(pct 0.99 <"$D/$ep.gaps")
            "$M" migration list --json | jq -r --arg ep $ep --argjson raw "$raw" --arg g50 "${gp50:--}" --arg g99 "${gp99:--}" --argjson mib "$mib" --argjson rate "$rate" '
              [.migrations[] | select(.endpoint==$ep and .phase=="committed")] as $m
              | def pick(f; q): ($m | map(f) | sort) as $s | if ($s|length)==0 then 0 else $s[((($s|length)-1)*q+0.5)|floor] end;
                def data: (.info.round_stats[0].bytes // .bytes);
              [$mib, $rate, $g50, $g99, pick(.downtime_ms; 0.5), pick(.downtime_ms; 0.99),
               pick(.finished_at - .created_at; 0.5), pick(.finished_at - .created_at; 0.99),
               (pick(.bytes / ([data,1]|max); 0.5) * 100 | floor / 100), pick(.rounds; 0.5),
               (pick((.finished_at - .created_at) / ((data / $raw * 1000) + 100); 0.5) * 100 | floor / 100)]
              | map(tostring) | join("\t")' >>"$DATA"
        fi
        "$M" endpoint delete $ep >/dev/null
    done
done
