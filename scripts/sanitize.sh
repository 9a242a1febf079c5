#!/usr/bin/env bash
# Runs the whole test suite once under a sanitizer (README, "Fuzzing"); not part of CI.
#
#   scripts/sanitize.sh address     AddressSanitizer (and LeakSanitizer), build in .build-asan
#   scripts/sanitize.sh thread      ThreadSanitizer, build in .build-tsan
#
# Everything Swift is instrumented (the host, the plugins, csop, the tests, the Swift
# dependencies); C code (SQLite, JavaScriptCore, BoringSSL, the C fixtures) is not. Like
# scripts/test.sh it installs the system packages and starts PostgreSQL, so the JavaScriptCore
# and PostgreSQL tests run too. Any sanitizer report fails the run (ThreadSanitizer reports
# them all first, then exits 66). Tests/Fuzz/lsan-suppressions.txt and tsan-suppressions.txt
# hold what is known not to be CSOP's.
set -euo pipefail
cd "$(dirname "$0")/.."

case "${1:-}" in
    address) scratch=.build-asan ;;
    thread) scratch=.build-tsan ;;
    *) echo "usage: scripts/sanitize.sh address|thread" >&2; exit 2 ;;
esac
sanitizer="$1"

scripts/install-deps.sh
source scripts/test-env.sh
# Reports go to stderr and stop the process that made them; the backtracer would only slow that down.
export SWIFT_BACKTRACE=enable=no
export ASAN_OPTIONS="${ASAN_OPTIONS:-detect_leaks=1:abort_on_error=0}"
export LSAN_OPTIONS="${LSAN_OPTIONS:-suppressions=$PWD/Tests/Fuzz/lsan-suppressions.txt}"
export TSAN_OPTIONS="${TSAN_OPTIONS:-suppressions=$PWD/Tests/Fuzz/tsan-suppressions.txt:second_deadlock_stack=1}"

flags=(-Xswiftc "-sanitize=$sanitizer" --scratch-path "$scratch")
# The plugins are shared libraries the host dlopens; they call into the sanitizer runtime that
# is linked, statically, into each executable. ASan's runtime is exported from there; TSan's is
# not unless the executable exports its symbols (else: "undefined symbol: __tsan_external_write").
if [ "$sanitizer" = thread ]; then flags+=(-Xlinker --export-dynamic); fi
start=$(date +%s)
swift build --build-tests "${flags[@]}" 2>&1 | { grep -v "warning: Cannot export local symbol" >&2 || true; }
built=$(date +%s)
echo "sanitize: built with -sanitize=$sanitizer in $((built - start)) s" >&2
status=0
swift test --skip-build "${flags[@]}" || status=$?
echo "sanitize: tests under -sanitize=$sanitizer took $(($(date +%s) - built)) s (exit $status)" >&2
exit "$status"
