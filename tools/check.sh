#!/usr/bin/env bash
# The test command: installs what is missing, builds with -Werror, runs every
# test (unit and integration: real daemons on loopback), then builds again
# with AddressSanitizer + UBSan and runs the unit tests there, and runs each
# fuzz target for a bounded time (DVS_FUZZ_SECONDS, default 20; 0 replays
# the committed seeds only).
#   sudo bash tools/check.sh
set -euo pipefail
cd "$(dirname "$0")/.."
. tools/deps.sh
dvs_install_deps

echo "==> autoreconf"
autoreconf -fi >/dev/null 2>&1 || autoreconf -fi
passed=0 failed=0 skipped=0
summarize() { # $1 = build dir; add its test-suite.log counts
    local log="$1/test-suite.log"
    [ -f "$log" ] || return 0
    local p f s e
    p=$(sed -n 's/^# PASS: *//p' "$log" | head -1)
    f=$(sed -n 's/^# FAIL: *//p' "$log" | head -1)
    e=$(sed -n 's/^# ERROR: *//p' "$log" | head -1)
    s=$(sed -n 's/^# SKIP: *//p' "$log" | head -1)
    passed=$((passed + ${p:-0})); failed=$((failed + ${f:-0} + ${e:-0})); skipped=$((skipped + ${s:-0}))
}
status=0
echo "==> build (warnings are errors) and test"
rm -rf build/check && dvs_build build/check --enable-werror
if ! make -C build/check -j2 check; then
    status=1
    grep -l -E "^(not ok|Bail out)" build/check/tests/*/*.log build/check/tests/*/*/*.log 2>/dev/null |
        while read -r l; do echo "---- $l"; tail -n 60 "$l"; done
fi
summarize build/check

echo "==> AddressSanitizer + UBSan build, unit tests"
rm -rf build/asan && dvs_build build/asan --enable-werror --enable-sanitize
unit_tests=$(make -s -C build/asan print-unit-tests)
if ! ASAN_OPTIONS=detect_leaks=1 make -C build/asan -j2 check TESTS="$unit_tests"; then
    status=1
    for t in $unit_tests; do [ -f "build/asan/$t.log" ] && grep -q -E "^not ok|ERROR: AddressSanitizer|runtime error" "build/asan/$t.log" && { echo "---- $t"; tail -n 80 "build/asan/$t.log"; }; done
fi
summarize build/asan

echo "==> fuzz: each libFuzzer target for ${DVS_FUZZ_SECONDS:-20} s (fuzz/run.sh)"
if DVS_FUZZ_BUILD="$(pwd)/build/fuzz" bash fuzz/run.sh "${DVS_FUZZ_SECONDS:-20}"; then
    passed=$((passed + 1))
else
    failed=$((failed + 1))
    status=1
fi

echo
echo "$passed passed, $failed failed, $skipped skipped"
exit $status
