#!/usr/bin/env bash
# Proves that an installed CSOP tree runs on a machine without the Swift toolchain, with no
# container: installs into a fresh temporary PREFIX with scripts/install.sh, then runs the
# installed binaries in a private mount namespace (unshare --mount) where an empty directory
# is bind-mounted over the toolchain, with a clean environment (no CSOP_* variables, no
# database URL) and from a working directory without plugins.d, so csop has to find
# PREFIX/etc/csop/plugins.d and PREFIX/lib/csop on its own.
#
# Prints one `ok - ...` / `not ok - ...` line per check and then `N passed, M failed`; exits 1
# when a check failed, 2 when the checks could not run at all (unshare not permitted).
#
# Build: CSOP_SKIP_BUILD=1 installs what .build/release holds, CSOP_SKIP_BUILD=0 rebuilds;
# unset, it rebuilds only when .build/release lacks a product. CSOP_KEEP_TMP=1 keeps the
# temporary directory. Needs root, or unprivileged user namespaces (unshare --map-root-user).
# shellcheck disable=SC2016  # $ORIGIN and the namespace scripts are literal on purpose
set -euo pipefail
umask 022
cd "$(dirname "$0")/.."

PASSED=0
FAILED=0
pass() { PASSED=$((PASSED + 1)); printf 'ok - %s\n' "$1"; }
fail() { # description [details]
    FAILED=$((FAILED + 1))
    printf 'not ok - %s\n' "$1"
    if [ -n "${2:-}" ]; then printf '%s\n' "$2" | head -n 40 | sed 's/^/#   /'; fi
}
finish() {
    printf '%d passed, %d failed\n' "$PASSED" "$FAILED"
    [ "$FAILED" -eq 0 ]
}

TMP=$(mktemp -d "${TMPDIR:-/tmp}/csop-check.XXXXXX")
cleanup() { if [ "${CSOP_KEEP_TMP:-0}" = "1" ]; then echo "# kept $TMP" >&2; else rm -rf "$TMP"; fi; }
trap cleanup EXIT
PREFIX="$TMP/prefix"
EMPTY="$TMP/empty"     # mounted over the toolchain
WORK="$TMP/cwd"        # the working directory: no plugins.d here
mkdir -p "$PREFIX" "$EMPTY" "$WORK" "$TMP/data"

# --- the toolchain directory to hide ----------------------------------------------------------
SWIFT=$(command -v swift || true)
if [ -z "$SWIFT" ] && [ -x /opt/swift/usr/bin/swift ]; then SWIFT=/opt/swift/usr/bin/swift; fi
if [ -z "$SWIFT" ]; then
    fail "find the Swift toolchain" "swift is not on PATH: this check installs from a build and hides that toolchain"
    finish || exit 1
fi
SWIFT_BIN_DIR=$(dirname "$(readlink -f "$SWIFT")")
TOOLCHAIN_LIB=$(readlink -f "$SWIFT_BIN_DIR/../lib/swift/linux")
SWIFT_USR=$(dirname "$SWIFT_BIN_DIR")
# /opt/swift/usr/bin/swift hides /opt/swift; a toolchain installed into /usr hides only its
# runtime directory (hiding /usr would hide the system).
if [ "$(basename "$SWIFT_USR")" = usr ] && [ "$(dirname "$SWIFT_USR")" != / ]; then
    HIDE=$(dirname "$SWIFT_USR")
elif [ "$SWIFT_USR" != /usr ] && [ "$SWIFT_USR" != / ]; then
    HIDE=$SWIFT_USR
else
    HIDE=$TOOLCHAIN_LIB
fi

UNSHARE=(unshare --mount)
if [ "$(id -u)" -ne 0 ]; then UNSHARE+=(--map-root-user); fi

# in_ns COMMAND...: runs COMMAND in a new mount namespace with $EMPTY over $HIDE, in $WORK,
# with a clean environment. Exit status 97 means the namespace could not be set up.
in_ns() {
    "${UNSHARE[@]}" -- /bin/bash -c '
        mount --bind "$1" "$2" || exit 97
        cd "$3" || exit 97
        shift 3
        exec env -i PATH=/usr/bin:/bin HOME="$TMP_HOME" XDG_DATA_HOME="$TMP_HOME/data" LANG=C.UTF-8 "$@"
    ' in_ns "$EMPTY" "$HIDE" "$WORK" "$@"
}
export TMP_HOME="$TMP"   # the namespace's HOME; nothing else of this environment gets through

# --- 1. install --------------------------------------------------------------------------
if [ -z "${CSOP_SKIP_BUILD:-}" ]; then
    CSOP_SKIP_BUILD=1
    for f in csop csop-bench csop-serve libcsop-diag.so libcsop-storage.so libcsop-compute.so libcsop-sync.so; do
        [ -f ".build/${CSOP_CONFIGURATION:-release}/$f" ] || CSOP_SKIP_BUILD=0
    done
fi
export CSOP_SKIP_BUILD
start=$(date +%s%N)
if scripts/install.sh "$PREFIX" >"$TMP/install.log" 2>&1 </dev/null; then
    ms=$((($(date +%s%N) - start) / 1000000))
    pass "scripts/install.sh $PREFIX (CSOP_SKIP_BUILD=$CSOP_SKIP_BUILD, $((ms / 1000)).$((ms % 1000 / 100))s)"
else
    fail "scripts/install.sh $PREFIX" "$(tail -n 40 "$TMP/install.log")"
    finish || exit 1
fi
if CSOP_SKIP_BUILD=1 scripts/install.sh "$PREFIX" >"$TMP/install2.log" 2>&1 </dev/null \
    && grep -q '(0 files written' "$TMP/install2.log"; then
    pass "scripts/install.sh again is idempotent (0 files written)"
else
    fail "scripts/install.sh again is idempotent" "$(grep -E 'installed CSOP|install.sh' "$TMP/install2.log")"
fi

# --- 2. the namespace hides the toolchain ----------------------------------------------------
# (swift itself stays on PATH only for a toolchain in /usr, whose runtime directory is hidden.)
ns_out=$(in_ns /bin/sh -c 'ls -A "$1" && test ! -e "$2/libswiftCore.so" && { [ "$1" = "$2" ] || ! command -v swift; }' \
    sh "$HIDE" "$TOOLCHAIN_LIB" 2>&1) && ns_rc=0 || ns_rc=$?
if [ "$ns_rc" -eq 0 ] && [ -z "$ns_out" ]; then
    pass "toolchain hidden: $HIDE is empty in an unshare --mount namespace, no swift on PATH"
else
    fail "toolchain hidden with ${UNSHARE[*]} and a bind mount over $HIDE (exit $ns_rc)" "$ns_out"
    echo "check-installed.sh: cannot hide the toolchain (unshare/mount not permitted?); nothing else was checked" >&2
    finish || exit 2
fi

# --- 3. the files ---------------------------------------------------------------------------
ELF_FILES=()
while IFS= read -r f; do
    if [ "$(head -c 4 "$f" | od -An -c | tr -d ' \n')" = '177ELF' ]; then ELF_FILES+=("$f"); fi
done < <(find "$PREFIX" -type f | sort)

runpath_bad=""
for f in "${ELF_FILES[@]}"; do
    case "$f" in
        "$PREFIX"/bin/*) want='$ORIGIN/../lib/csop' ;;
        *) want='$ORIGIN' ;;
    esac
    dyn=$(readelf -d "$f")
    grep -q "(RUNPATH).*\[$want\]" <<<"$dyn" || runpath_bad+="${f#"$PREFIX"/}: $(grep -E 'R(UN)?PATH' <<<"$dyn" || echo 'no RUNPATH')"$'\n'
    if grep -q '(RPATH)' <<<"$dyn"; then runpath_bad+="${f#"$PREFIX"/}: has DT_RPATH"$'\n'; fi
done
if [ -z "$runpath_bad" ] && [ "${#ELF_FILES[@]}" -ge 6 ]; then
    pass "RUNPATH of ${#ELF_FILES[@]} ELF files: bin/* \$ORIGIN/../lib/csop, lib/csop/* \$ORIGIN"
else
    fail "RUNPATH of ${#ELF_FILES[@]} ELF files" "$runpath_bad"
fi

ldd_bad=""
for f in "${ELF_FILES[@]}"; do
    out=$(in_ns /usr/bin/ldd "$f" 2>&1) || { ldd_bad+="${f#"$PREFIX"/}: ldd failed: $out"$'\n'; continue; }
    bad=$(grep -E "not found|=> $HIDE/|=> $TOOLCHAIN_LIB/" <<<"$out" || true)
    if [ -n "$bad" ]; then ldd_bad+="${f#"$PREFIX"/}:"$'\n'"$bad"$'\n'; fi
done
if [ -z "$ldd_bad" ]; then
    pass "ldd (toolchain hidden) of ${#ELF_FILES[@]} ELF files: nothing missing, nothing under $HIDE"
else
    fail "ldd (toolchain hidden) of the installed ELF files" "$ldd_bad"
fi

perm_bad=""
while IFS= read -r line; do
    mode=${line%% *}
    path=${line#* }
    case "$path" in
        "$PREFIX"/bin/*) want=755 ;;
        *) want=644 ;;
    esac
    [ "$mode" = "$want" ] || perm_bad+="$mode ${path#"$PREFIX"/} (want $want)"$'\n'
done < <(find "$PREFIX" -type f -printf '%m %p\n')
writable=$(find "$PREFIX" \( -perm -g+w -o -perm -o+w \) -printf '%m %p\n')
owners=$(find "$PREFIX" ! -uid "$(id -u)" -printf '%u %p\n')
if [ -z "$perm_bad$writable$owners" ]; then
    pass "permissions: bin/* 0755, other files 0644, nothing group/world-writable, all owned by $(id -un)"
else
    fail "permissions" "$perm_bad$writable$owners"
fi

# --- 4. the installed csop, toolchain hidden ----------------------------------------------------
CSOP="$PREFIX/bin/csop"
# run_csop ARGS...: sets OUT (stdout and stderr) and RC.
run_csop() { OUT=$(in_ns "$CSOP" "$@" 2>&1 </dev/null) && RC=0 || RC=$?; }

run_csop --version
if [ "$RC" -eq 0 ] && grep -q 'plugin ABI' <<<"$OUT"; then
    pass "csop --version: $OUT"
else
    fail "csop --version (exit $RC)" "$OUT"
fi

run_csop plugins
missing=""
for domain in diag storage compute sync; do
    grep -qE "^$domain [^ ]+ +$PREFIX/lib/csop/libcsop-$domain\.so" <<<"$OUT" || missing+=" $domain"
done
if [ "$RC" -eq 0 ] && [ -z "$missing" ]; then
    pass "csop plugins: diag, storage, compute, sync from $PREFIX/lib/csop"
else
    fail "csop plugins (exit $RC; missing:${missing:- none})" "$OUT"
fi

run_csop check
if [ "$RC" -eq 0 ] && grep -q "$PREFIX/etc/csop/plugins.d/10-storage.conf" <<<"$OUT"; then
    pass "csop check: $PREFIX/etc/csop/plugins.d"
else
    fail "csop check (exit $RC)" "$OUT"
fi

# dispatch ACTION PAYLOAD [PATTERN]: status ok, and PATTERN (a fixed string) in the response.
dispatch() {
    local action=$1 payload=$2 pattern=${3:-}
    run_csop dispatch "$action" ${payload:+"$payload"}
    if [ "$RC" -eq 0 ] && grep -qF '"status":"ok"' <<<"$OUT" && { [ -z "$pattern" ] || grep -qF "$pattern" <<<"$OUT"; }; then
        pass "csop dispatch $action ${payload:+$payload }→ $(head -c 160 <<<"$OUT")"
    else
        fail "csop dispatch $action ${payload:+$payload }(exit $RC${pattern:+, want $pattern})" "$OUT"
    fi
}
dispatch diag.noop ''
dispatch storage.save '{"key":"k","data":{"x":1}}'
dispatch storage.get '{"key":"k"}' '"data":{"x":1}'
dispatch compute.execute '{"task":"fibonacci","data":{"n":90}}' '"result":"2880067194370816120"'
dispatch compute.execute '{"task":"custom","data":{"fn":"return data.a+data.b","args":{"a":1,"b":2}}}' '"result":3'
dispatch sync.broadcast '{"event":"e"}'

# csop bench execs csop-bench from csop's directory; the host suite loads libcsop-diag.so
# through a plugins.d of its own and runs `csop run` (no database involved).
run_csop bench --quick --only host
if [ "$RC" -eq 0 ] && grep -q '^host |' <<<"$OUT"; then
    pass "csop bench --quick --only host (runs bin/csop-bench)"
else
    fail "csop bench --quick --only host (exit $RC)" "$OUT"
fi

# csop token and csop serve exec csop-serve from csop's directory.
printf '%s\n' "installed-check-secret-0123456789-abcdefghijklmnop" >"$TMP/secret"
chmod 600 "$TMP/secret"
run_csop token --secret-file "$TMP/secret" --sub alice --actions 'storage.*,sync.*' --ttl 10m
if [ "$RC" -eq 0 ] && grep -qE '^[A-Za-z0-9_-]+\.[A-Za-z0-9_-]+\.[A-Za-z0-9_-]+$' <<<"$OUT"; then
    pass "csop token (runs bin/csop-serve): a signed JWT"
else
    fail "csop token (exit $RC)" "$OUT"
fi
run_csop serve --listen 0.0.0.0:0
if [ "$RC" -ne 0 ] && grep -q 'without auth' <<<"$OUT"; then
    pass "csop serve refuses a non-loopback address without auth"
else
    fail "csop serve --listen 0.0.0.0:0 without auth (exit $RC, want a refusal)" "$OUT"
fi

# --- 5. completions and the manual page -----------------------------------------------------
comp_bad=""
for c in share/bash-completion/completions/csop share/zsh/site-functions/_csop share/fish/vendor_completions.d/csop.fish; do
    [ -s "$PREFIX/$c" ] || comp_bad+="$c is missing or empty"$'\n'
done
if [ -s "$PREFIX/share/bash-completion/completions/csop" ]; then
    bash -n "$PREFIX/share/bash-completion/completions/csop" 2>&1 || comp_bad+="bash -n fails on the bash completion"$'\n'
fi
if [ -z "$comp_bad" ]; then
    pass "shell completions: bash (parses), zsh, fish"
else
    fail "shell completions" "$comp_bad"
fi

MAN_PAGE="$PREFIX/share/man/man1/csop.1"
if [ ! -s "$MAN_PAGE" ]; then
    fail "man page $MAN_PAGE exists"
elif command -v man >/dev/null 2>&1; then
    man_err="$TMP/man.err"
    if rendered=$(LC_ALL=C.UTF-8 MANWIDTH=80 MANPAGER=cat PAGER=cat man -l "$MAN_PAGE" 2>"$man_err" </dev/null) \
        && [ ! -s "$man_err" ] && grep -q 'csop' <<<"$rendered" && grep -q 'dispatch' <<<"$rendered"; then
        pass "man -l share/man/man1/csop.1 renders ($(wc -l <<<"$rendered") lines, no warnings)"
    else
        fail "man -l share/man/man1/csop.1" "$(cat "$man_err")"
    fi
elif command -v groff >/dev/null 2>&1; then
    if groff_err=$(groff -mandoc -Tutf8 -ww -z "$MAN_PAGE" 2>&1) && [ -z "$groff_err" ]; then
        pass "groff -mandoc parses share/man/man1/csop.1 (man is not installed)"
    else
        fail "groff -mandoc share/man/man1/csop.1" "$groff_err"
    fi
fi

finish || exit 1
