#!/usr/bin/env bash
# Fuzzes the parsers with libFuzzer and AddressSanitizer (README, "Fuzzing").
#
#   scripts/fuzz.sh [SECONDS] [TARGET...]      default: 60 seconds for each target in Tests/Fuzz/corpus
#
# Builds csop-fuzz with -sanitize=fuzzer,address into .build-fuzz, then runs each target for
# SECONDS on a temporary copy of its seed corpus and fixed crashers (the repository's corpus is
# never written to). Fails on any crash, failed property, leak, timeout, out-of-memory or
# sanitizer report: the input is kept in the temporary directory, whose path is printed.
# Prints the executions of each target and the total.
set -euo pipefail
cd "$(dirname "$0")/.."

seconds="${1:-60}"
shift || true
case "$seconds" in '' | *[!0-9]*) echo "usage: scripts/fuzz.sh [SECONDS] [TARGET...]" >&2; exit 2 ;; esac
if [ "$#" -gt 0 ]; then
    targets=("$@")
else
    mapfile -t targets < <(ls Tests/Fuzz/corpus)
fi
for target in "${targets[@]}"; do
    [ -d "Tests/Fuzz/corpus/$target" ] || { echo "fuzz: no corpus for target '$target' (Tests/Fuzz/corpus/$target)" >&2; exit 2; }
done

flags=(-c debug --product csop-fuzz -Xswiftc -sanitize=fuzzer,address -Xswiftc -DCSOP_FUZZ --scratch-path .build-fuzz)
start=$(date +%s)
swift build "${flags[@]}" 2>&1 | { grep -v "warning: Cannot export local symbol" >&2 || true; }
echo "fuzz: built csop-fuzz in $(($(date +%s) - start)) s" >&2
binary="$(swift build "${flags[@]}" --show-bin-path)/csop-fuzz"

work="$(mktemp -d "${TMPDIR:-/tmp}/csop-fuzz.XXXXXX")"
failed=()
total=0
summary=""
for target in "${targets[@]}"; do
    dir="$work/$target"
    mkdir -p "$dir/corpus" "$dir/crashes"
    cp Tests/Fuzz/corpus/"$target"/* "$dir/corpus/"
    if [ -d "Tests/Fuzz/regressions/$target" ]; then cp Tests/Fuzz/regressions/"$target"/* "$dir/corpus/" 2>/dev/null || true; fi
    echo "fuzz: $target for ${seconds} s" >&2
    extra=()
    # TOMLKit leaks on every parse (Tests/Fuzz/lsan-suppressions.txt), so libFuzzer would run a
    # full leak check after each input: 30 inputs/s instead of 2,000. scripts/sanitize.sh address
    # still checks CSOP's plugins.d code for leaks.
    if [ "$target" = pluginsd ]; then extra=(-detect_leaks=0); fi
    status=0
    # A failed property is a fatalError: libFuzzer's handler reports it, Swift's backtracer need not.
    SWIFT_BACKTRACE=enable=no ASAN_OPTIONS="${ASAN_OPTIONS:-detect_leaks=1}" LSAN_OPTIONS="suppressions=$PWD/Tests/Fuzz/lsan-suppressions.txt" \
        "$binary" "$target" -max_total_time="$seconds" -rss_limit_mb=2048 -timeout=10 -print_final_stats=1 \
        -artifact_prefix="$dir/crashes/" "${extra[@]}" "$dir/corpus" >"$dir/log" 2>&1 || status=$?
    executions=$(awk '/stat::number_of_executed_units/ {print $2}' "$dir/log" | tail -1)
    executions="${executions:-0}"
    total=$((total + executions))
    artifacts=$(ls "$dir/crashes")
    if [ "$status" -ne 0 ] || [ -n "$artifacts" ]; then
        failed+=("$target")
        summary+=$(printf '%-10s %12s executions  FAILED (exit %s)' "$target" "$executions" "$status")$'\n'
        echo "fuzz: $target FAILED (exit $status); the end of its log ($dir/log):" >&2
        grep -v "^#[0-9]*[[:space:]]\|^INFO:" "$dir/log" | tail -60 >&2 || true
        for artifact in $artifacts; do echo "fuzz: $target: input saved as $dir/crashes/$artifact" >&2; done
        echo "fuzz: replay it: $binary $target <input>  (or, without the sanitizer, .build/debug/csop-fuzz $target <input>)" >&2
    else
        summary+=$(printf '%-10s %12s executions  ok' "$target" "$executions")$'\n'
    fi
done

printf '%s' "$summary"
printf '%-10s %12s executions in %s s per target\n' "total" "$total" "$seconds"
if [ "${#failed[@]}" -gt 0 ]; then
    echo "fuzz: FAILED: ${failed[*]}; inputs and logs are in $work" >&2
    exit 1
fi
rm -rf "$work"
