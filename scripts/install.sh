#!/usr/bin/env bash
# Installs CSOP into PREFIX (default /usr/local) as a self-contained tree that runs without
# the Swift toolchain:
#   PREFIX/bin/csop, csop-bench, csop-serve           RUNPATH $ORIGIN/../lib/csop
#   PREFIX/lib/csop/libcsop-{diag,storage,compute,sync}.so
#   PREFIX/lib/csop/<Swift runtime libraries>          RUNPATH $ORIGIN
#   PREFIX/etc/csop/plugins.d/*.conf                   existing, edited files are kept
#   PREFIX/share/man/man1/csop.1
#   PREFIX/share/{bash-completion/completions/csop,zsh/site-functions/_csop,fish/vendor_completions.d/csop.fish}
# Builds in release mode first unless CSOP_SKIP_BUILD=1 (CSOP_CONFIGURATION=debug installs the
# debug build instead: the tests use it to check the tree). Idempotent: unchanged files are left
# alone. Needs patchelf (installed with apt-get when missing and running as root).
# The system libraries the plugins link (SQLite, JavaScriptCore, zlib) are not copied: the
# target machine needs the Debian packages libsqlite3-0, libjavascriptcoregtk-4.1-0 and zlib1g.
#
# Usage: scripts/install.sh [PREFIX]
# shellcheck disable=SC2016  # $ORIGIN is literal on purpose
set -euo pipefail
umask 022
cd "$(dirname "$0")/.."
REPO=$(pwd -P)

PREFIX=${1:-/usr/local}
mkdir -p "$PREFIX"
PREFIX=$(cd "$PREFIX" && pwd -P)

BIN_NAMES=(csop csop-bench csop-serve)
PLUGIN_LIBS=(libcsop-diag.so libcsop-storage.so libcsop-compute.so libcsop-sync.so)

say() { printf '%s\n' "$*"; }
die() { printf 'install.sh: %s\n' "$*" >&2; exit 1; }

# --- the toolchain ---------------------------------------------------------------------------
SWIFT=$(command -v swift || true)
if [ -z "$SWIFT" ] && [ -x /opt/swift/usr/bin/swift ]; then SWIFT=/opt/swift/usr/bin/swift; fi
[ -n "$SWIFT" ] || die "swift is not on PATH (needed to build and to find the Swift runtime libraries)"
SWIFT_BIN_DIR=$(dirname "$(readlink -f "$SWIFT")")
TOOLCHAIN_LIB=$(readlink -f "$SWIFT_BIN_DIR/../lib/swift/linux")
[ -d "$TOOLCHAIN_LIB" ] || die "no Swift runtime directory at $SWIFT_BIN_DIR/../lib/swift/linux"

# --- tools -------------------------------------------------------------------------------
if ! command -v patchelf >/dev/null 2>&1; then
    if [ "$(id -u)" -eq 0 ] && command -v apt-get >/dev/null 2>&1; then
        say "installing patchelf (apt-get)" >&2
        apt-get update -qq >&2
        DEBIAN_FRONTEND=noninteractive apt-get install -y -qq patchelf >&2 </dev/null
    else
        die "patchelf is required: sudo apt-get install patchelf"
    fi
fi
for tool in readelf ldd install cmp strip; do
    command -v "$tool" >/dev/null 2>&1 || die "$tool is required"
done

# --- build ---------------------------------------------------------------------------------
CONFIGURATION="${CSOP_CONFIGURATION:-release}"
case "$CONFIGURATION" in release|debug) ;; *) die "CSOP_CONFIGURATION must be release or debug, got $CONFIGURATION" ;; esac
BUILD_DIR="$REPO/.build/$CONFIGURATION"
if [ "${CSOP_SKIP_BUILD:-0}" != "1" ]; then
    say "building (swift build -c $CONFIGURATION)..." >&2
    "$SWIFT" build -c "$CONFIGURATION" >&2 </dev/null
fi
for f in "${BIN_NAMES[@]}" "${PLUGIN_LIBS[@]}"; do
    [ -f "$BUILD_DIR/$f" ] || die "$BUILD_DIR/$f is missing: run swift build -c $CONFIGURATION (or unset CSOP_SKIP_BUILD)"
done

# --- the manual page ---------------------------------------------------------------------
# swift-argument-parser's generate-manual tool (what `swift package generate-manual` runs), run
# directly on the built csop: the plugin would rebuild every product first and fail on any
# target that does not compile, and cannot pin the date. Tool and page are cached in .build.
MANUAL_DIR="$REPO/.build/csop-manual"
MANUAL="$MANUAL_DIR/csop.1"
GENERATE_MANUAL="$BUILD_DIR/generate-manual"
if [ ! -x "$GENERATE_MANUAL" ] || [ "${CSOP_SKIP_BUILD:-0}" != "1" ]; then
    say "building swift-argument-parser's generate-manual..." >&2
    "$SWIFT" build -c "$CONFIGURATION" --product generate-manual >&2 </dev/null || true
fi
if [ -x "$GENERATE_MANUAL" ] && { [ ! -f "$MANUAL" ] || [ "$BUILD_DIR/csop" -nt "$MANUAL" ] || [ "$GENERATE_MANUAL" -nt "$MANUAL" ]; }; then
    # The date of the last commit, so that reinstalling the same build changes nothing.
    manual_date=$(git -C "$REPO" log -1 --format=%cs 2>/dev/null || date -r "$BUILD_DIR/csop" +%F)
    mkdir -p "$MANUAL_DIR"
    "$GENERATE_MANUAL" "$BUILD_DIR/csop" --date "$manual_date" --output-directory "$MANUAL_DIR" >&2 </dev/null \
        || say "warning: generate-manual failed" >&2
fi
[ -f "$MANUAL" ] || die "no manual page: $GENERATE_MANUAL could not be built or run"

# --- staging -------------------------------------------------------------------------------
STAGE=$(mktemp -d "${TMPDIR:-/tmp}/csop-install.XXXXXX")
trap 'rm -rf "$STAGE"' EXIT
mkdir -p "$STAGE/bin" "$STAGE/lib"

# Swift runtime libraries: every dependency (ldd is transitive) that resolves into the toolchain.
declare -A RUNTIME=()
for f in "${BIN_NAMES[@]}" "${PLUGIN_LIBS[@]}"; do
    out=$(ldd "$BUILD_DIR/$f") || die "ldd $BUILD_DIR/$f failed"
    if grep -q 'not found' <<<"$out"; then
        die "$f has unresolved libraries:"$'\n'"$(grep 'not found' <<<"$out")"
    fi
    while read -r name _ path _; do
        [ -n "$path" ] && [ -e "$path" ] || continue
        real=$(readlink -f "$path")
        case "$real" in "$TOOLCHAIN_LIB"/*) RUNTIME[$name]=$real ;; esac
    done < <(awk '$2 == "=>" && $3 ~ /^\// {print $1, $2, $3}' <<<"$out")
done
[ "${#RUNTIME[@]}" -gt 0 ] || die "found no Swift runtime libraries under $TOOLCHAIN_LIB (is the build linked against another toolchain?)"

set_runpath() { # file runpath
    local current
    current=$(patchelf --print-rpath "$1")
    if [ "$current" != "$2" ]; then patchelf --set-rpath "$2" "$1"; fi
    readelf -d "$1" | grep -q "(RUNPATH).*\[$2\]" || die "$1: RUNPATH is not $2 after patchelf"
    if readelf -d "$1" | grep -q '(RPATH)'; then die "$1: has a DT_RPATH as well"; fi
}

# Debug information is dropped from the copies (a plugin library shrinks from ~70 MB to a few);
# symbols and Swift's runtime metadata stay.
for f in "${BIN_NAMES[@]}"; do
    cp "$BUILD_DIR/$f" "$STAGE/bin/$f"
    strip --strip-debug "$STAGE/bin/$f"
    set_runpath "$STAGE/bin/$f" '$ORIGIN/../lib/csop'
done
for f in "${PLUGIN_LIBS[@]}"; do
    cp "$BUILD_DIR/$f" "$STAGE/lib/$f"
    strip --strip-debug "$STAGE/lib/$f"
    set_runpath "$STAGE/lib/$f" '$ORIGIN'
done
for name in "${!RUNTIME[@]}"; do
    cp "${RUNTIME[$name]}" "$STAGE/lib/$name"
    chmod u+w "$STAGE/lib/$name"
    set_runpath "$STAGE/lib/$name" '$ORIGIN'
done

# --- install -------------------------------------------------------------------------------
INSTALLED=0
UNCHANGED=0
# install_file SRC DEST MODE: replaces DEST (unlinked first, so a running csop is unaffected)
# only when its content or mode differ.
install_file() {
    local src=$1 dest=$2 mode=$3
    if [ -f "$dest" ] && [ ! -L "$dest" ] && cmp -s "$src" "$dest" \
        && [ "$(stat -c '%a %u' "$dest")" = "${mode#0} $(id -u)" ]; then
        UNCHANGED=$((UNCHANGED + 1))
        return
    fi
    install -m "$mode" "$src" "$dest"
    INSTALLED=$((INSTALLED + 1))
}
# own_dir DIR: a directory only CSOP uses, created if needed and made 0755.
own_dir() { mkdir -p "$1"; chmod 0755 "$1"; }

mkdir -p "$PREFIX/bin" "$PREFIX/share/man/man1" "$PREFIX/share/bash-completion/completions" \
    "$PREFIX/share/zsh/site-functions" "$PREFIX/share/fish/vendor_completions.d"
own_dir "$PREFIX/lib/csop"
own_dir "$PREFIX/etc/csop"
own_dir "$PREFIX/etc/csop/plugins.d"

for f in "${BIN_NAMES[@]}"; do install_file "$STAGE/bin/$f" "$PREFIX/bin/$f" 0755; done
for f in "${PLUGIN_LIBS[@]}"; do install_file "$STAGE/lib/$f" "$PREFIX/lib/csop/$f" 0644; done
RUNTIME_NAMES=$(printf '%s\n' "${!RUNTIME[@]}" | sort)
for name in $RUNTIME_NAMES; do install_file "$STAGE/lib/$name" "$PREFIX/lib/csop/$name" 0644; done

CONF_NOTES=()
for conf in "$REPO"/plugins.d/*.conf; do
    dest="$PREFIX/etc/csop/plugins.d/$(basename "$conf")"
    if [ -e "$dest" ] && ! cmp -s "$conf" "$dest"; then
        CONF_NOTES+=("note: kept $dest (it differs from the repository's; compare: diff $conf $dest)")
        if [ "$(stat -c '%u' "$dest")" != "$(id -u)" ] && [ "$(stat -c '%u' "$dest")" != 0 ] \
            || [ $(( 8#$(stat -c '%a' "$dest") & 8#022 )) -ne 0 ]; then
            CONF_NOTES+=("warning: csop refuses $dest as it is (owner or group/world-writable mode): chmod go-w it")
        fi
        continue
    fi
    install_file "$conf" "$dest" 0644
done

install_file "$MANUAL" "$PREFIX/share/man/man1/csop.1" 0644

# Completions come from the installed binary (which must therefore run).
for shell in bash zsh fish; do
    "$PREFIX/bin/csop" --generate-completion-script "$shell" >"$STAGE/completion.$shell" </dev/null \
        || die "$PREFIX/bin/csop --generate-completion-script $shell failed"
done
install_file "$STAGE/completion.bash" "$PREFIX/share/bash-completion/completions/csop" 0644
install_file "$STAGE/completion.zsh" "$PREFIX/share/zsh/site-functions/_csop" 0644
install_file "$STAGE/completion.fish" "$PREFIX/share/fish/vendor_completions.d/csop.fish" 0644

# --- summary ---------------------------------------------------------------------------------
runtime_bytes=0
for name in $RUNTIME_NAMES; do runtime_bytes=$((runtime_bytes + $(stat -c %s "$PREFIX/lib/csop/$name"))); done
say "installed CSOP into $PREFIX ($INSTALLED files written, $UNCHANGED unchanged):"
say "  bin/csop, bin/csop-bench, bin/csop-serve RUNPATH \$ORIGIN/../lib/csop"
say "  lib/csop/ ${PLUGIN_LIBS[*]}"
say "  lib/csop/ ${#RUNTIME[@]} Swift runtime libraries from $TOOLCHAIN_LIB ($((runtime_bytes / 1024 / 1024)) MiB):"
say "            $(tr '\n' ' ' <<<"$RUNTIME_NAMES")"
say "  etc/csop/plugins.d/ $(cd "$REPO/plugins.d" && printf '%s ' *.conf)"
say "  share/man/man1/csop.1"
say "  share/bash-completion/completions/csop, share/zsh/site-functions/_csop, share/fish/vendor_completions.d/csop.fish"
for note in ${CONF_NOTES[@]+"${CONF_NOTES[@]}"}; do say "$note"; done
say "system libraries needed at run time: libsqlite3-0, libjavascriptcoregtk-4.1-0, zlib1g (Debian packages)"
