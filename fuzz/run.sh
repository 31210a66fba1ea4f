#!/usr/bin/env bash
# Build the libFuzzer targets (configure --enable-fuzz: clang, ASan, UBSan)
# in a build directory of their own and run each for a bounded time.
#
#   fuzz/run.sh [SECONDS] [TARGET...]   run each target SECONDS (default 20)
#   fuzz/run.sh 0 [TARGET...]           only replay the committed seeds
#   fuzz/run.sh --seeds                 rewrite fuzz/corpus/ with the encoders
#
# Targets: frame control xfer cmd fsm kv history (fuzz/fuzz_<target>.c).
# The committed seeds (fuzz/corpus/<target>/) are read, never written; what
# a run discovers goes to $DVS_FUZZ_BUILD/work/<target>/, which later runs
# start from, so long runs accumulate. A crash leaves its input in
# $DVS_FUZZ_BUILD/crashes/ and fails the run; replay it with
#   $DVS_FUZZ_BUILD/fuzz/fuzz_<target> FILE
# Long mode (docs/testing.md): fuzz/run.sh 3600, or DVS_FUZZ_JOBS=2 to run
# two targets side by side.
set -euo pipefail
cd "$(dirname "$0")/.."
top=$(pwd)
build=${DVS_FUZZ_BUILD:-$top/build/fuzz}
all_targets="frame control xfer cmd fsm kv history"

secs=20
if [ "${1:-}" = --seeds ]; then
    mode=seeds
    shift
else
    mode=run
    if [ $# -gt 0 ]; then secs=$1; shift; fi
fi
case $secs in '' | *[!0-9]*) echo "fuzz/run.sh: SECONDS must be a whole number, got \"$secs\"" >&2; exit 2 ;; esac
targets=${*:-$all_targets}
for t in $targets; do
    case " $all_targets " in *" $t "*) ;; *) echo "fuzz/run.sh: unknown target \"$t\" (have: $all_targets)" >&2; exit 2 ;; esac
done

command -v clang >/dev/null || { echo "fuzz/run.sh: needs clang and libclang-rt-14-dev (tools/deps.sh installs them)" >&2; exit 2; }
[ -x configure ] || autoreconf -fi >/dev/null 2>&1 || autoreconf -fi
mkdir -p "$build"
if [ ! -f "$build/Makefile" ]; then
    echo "==> configure --enable-fuzz in $build"
    (cd "$build" && "$top/configure" -q CC=clang --enable-fuzz)
fi
echo "==> build the fuzz targets"
make -s -C "$build" -j2 fuzz-targets >/dev/null

if [ $mode = seeds ]; then
    rm -rf "$top/fuzz/corpus"
    "$build/fuzz/fuzz-gen-corpus" "$top/fuzz/corpus"
    echo "wrote $(find "$top/fuzz/corpus" -type f | wc -l) seeds to fuzz/corpus/"
    exit 0
fi

mkdir -p "$build/crashes" "$build/logs"
status=0
printf '%-8s %10s %8s %8s  %s\n' target execs exec/s corpus result
for t in $targets; do
    bin="$build/fuzz/fuzz_$t"
    log="$build/logs/$t.log"
    work="$build/work/$t"
    mkdir -p "$work"
    # The FSM target restores an SQLite snapshot per input: a small ASan
    # quarantine keeps it from spending its time in page faults.
    asan="detect_leaks=1"
    [ "$t" = fsm ] && asan="$asan:quarantine_size_mb=8"
    if [ "$secs" -eq 0 ]; then
        args=(-runs=0)
    else
        args=(-max_total_time="$secs" -timeout=10 -rss_limit_mb=2048 -max_len=8192)
    fi
    rc=0
    ASAN_OPTIONS=$asan UBSAN_OPTIONS=print_stacktrace=1 \
        timeout --kill-after=10 $((secs + 120)) \
        "$bin" "${args[@]}" -print_final_stats=1 -artifact_prefix="$build/crashes/$t-" \
        "$work" "$top/fuzz/corpus/$t" >"$log" 2>&1 || rc=$?
    execs=$(sed -n 's/^stat::number_of_executed_units: *//p' "$log" | tail -1)
    rate=$(sed -n 's/^stat::average_exec_per_sec: *//p' "$log" | tail -1)
    corpus=$(find "$work" -type f | wc -l)
    if [ $rc -eq 0 ]; then
        result=ok
    else
        result="FAILED (exit $rc; log $log)"
        status=1
    fi
    printf '%-8s %10s %8s %8s  %s\n' "$t" "${execs:-?}" "${rate:-?}" "$corpus" "$result"
    if [ $rc -ne 0 ]; then
        grep -E "property violated|ERROR: |runtime error|SUMMARY|Test unit written|changed the state" "$log" | head -n 12 | sed 's/^/    /'
    fi
done
exit $status
